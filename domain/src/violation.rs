//! One failed rule, named by its SPEC id (`PW-1.digit`), as the HTTP layer lists it in a
//! problem's `errors`.

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// SPEC rule id, optionally with a sub-rule after a dot: `PW-1.length`, `RI-2`.
    pub rule: &'static str,
    /// The request field the rule is about, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<&'static str>,
    /// A sentence for the person reading the form.
    pub message: String,
}

impl Violation {
    pub fn new(
        rule: &'static str,
        field: Option<&'static str>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            rule,
            field,
            message: message.into(),
        }
    }
}

/// A character that would make a text written in mails and pages show one thing and hold
/// another: control characters, direction marks and overrides, invisible format characters
/// (zero-width, soft hyphen, byte-order mark, tags), line and paragraph separators, and the
/// blank Hangul fillers.
pub fn hidden_char(ch: char) -> bool {
    ch.is_control()
        || matches!(
            ch,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{061C}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{17B4}'
                | '\u{17B5}'
                | '\u{180B}'..='\u{180F}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{E0000}'..='\u{E0FFF}'
        )
}
