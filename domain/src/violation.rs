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
/// another: control characters and direction marks or overrides.
pub fn hidden_char(ch: char) -> bool {
    ch.is_control()
        || matches!(ch, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}
