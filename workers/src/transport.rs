//! NT-1's transports. Mail: SMTP (STARTTLS or TLS, with authentication) through `lettre`, or,
//! with no relay configured, a Maildir under `<data-dir>/mail/`. SMS: an HTTP gateway (JSON POST
//! with a bearer token; any 2xx is success), or, with none configured, JSON lines in
//! `<data-dir>/sms.jsonl`.
//!
//! Sinks are written so that sending the same notice twice leaves one trace: a Maildir file is
//! named after the notice id, and an SMS line already in the file is not appended again.

use lettre::message::header::{ContentTransferEncoding, ContentType, HeaderName, HeaderValue};
use lettre::message::{Body, Mailbox, SinglePart};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::AsyncSmtpTransport;
use lettre::{AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use uuid::Uuid;

/// A mail ready to go.
pub struct Mail<'a> {
    pub notice_id: Uuid,
    pub from: &'a str,
    pub to: &'a str,
    pub subject: &'a str,
    pub language: &'a str,
    pub body: &'a str,
}

pub enum MailTransport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Maildir(PathBuf),
}

impl MailTransport {
    /// `smtp_url` as lettre reads it: `smtp://user:pass@host:587?tls=required` (STARTTLS),
    /// `smtps://user:pass@host:465` (TLS), `smtp://host:25` (plain, for a local relay).
    ///
    /// `ca_pem`: certificates (PEM) of a private CA to trust besides the public roots, for a
    /// relay whose certificate a public CA did not sign.
    pub fn smtp(smtp_url: &str, timeout: Duration, ca_pem: Option<&[u8]>) -> Result<Self, String> {
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(smtp_url)
            .map_err(|e| format!("smtp_url is not usable: {e}"))?
            .timeout(Some(timeout));
        if let Some(pem) = ca_pem {
            let host = url_host(smtp_url).ok_or("smtp_url has no host")?;
            let certificate = Certificate::from_pem(pem)
                .map_err(|e| format!("mail.ca_file is not a PEM certificate: {e}"))?;
            let parameters = TlsParameters::builder(host.to_string())
                .add_root_certificate(certificate)
                .build()
                .map_err(|e| format!("cannot set up TLS for the SMTP relay: {e}"))?;
            // The URL says how TLS is used; the file only says whom to trust.
            let tls = if smtp_url.starts_with("smtps://") {
                Tls::Wrapper(parameters)
            } else if smtp_url.contains("tls=required") {
                Tls::Required(parameters)
            } else if smtp_url.contains("tls=opportunistic") {
                Tls::Opportunistic(parameters)
            } else {
                return Err(
                    "mail.ca_file is set but smtp_url uses no TLS (smtps://, or ?tls=required)"
                        .into(),
                );
            };
            builder = builder.tls(tls);
        }
        Ok(MailTransport::Smtp(builder.build()))
    }

    /// The developer's sink: its messages hold links and codes in clear, so the Maildir is its
    /// owner's alone (directories 0700, messages 0600), whatever the umask.
    pub fn maildir(data_dir: &Path) -> Result<Self, String> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let root = data_dir.join("mail");
        for sub in ["tmp", "new", "cur"] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(root.join(sub))
                .map_err(|e| format!("cannot create {}: {e}", root.join(sub).display()))?;
        }
        // A Maildir an earlier version made under the umask is closed too.
        for dir in [
            root.clone(),
            root.join("tmp"),
            root.join("new"),
            root.join("cur"),
        ] {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| format!("cannot restrict {}: {e}", dir.display()))?;
        }
        Ok(MailTransport::Maildir(root))
    }

    pub fn describe(&self) -> String {
        match self {
            MailTransport::Smtp(_) => "SMTP relay".into(),
            MailTransport::Maildir(root) => format!("Maildir {}", root.join("new").display()),
        }
    }

    pub async fn send(&self, mail: &Mail<'_>) -> Result<(), String> {
        let message = build(mail)?;
        match self {
            MailTransport::Smtp(transport) => transport
                .send(message)
                .await
                .map(|_| ())
                .map_err(|e| format!("SMTP: {e}")),
            MailTransport::Maildir(root) => {
                let name = format!("{}.custode", mail.notice_id);
                let bytes = message.formatted();
                let root = root.clone();
                tokio::task::spawn_blocking(move || write_maildir(&root, &name, &bytes))
                    .await
                    .map_err(|e| e.to_string())?
            }
        }
    }
}

/// The host of `scheme://user:pass@host:port/...?query`.
fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = host_port.split(':').next()?;
    (!host.is_empty()).then_some(host)
}

fn build(mail: &Mail<'_>) -> Result<Message, String> {
    let from: Mailbox = mail.from.parse().map_err(|e| format!("bad sender: {e}"))?;
    let to: Mailbox = mail.to.parse().map_err(|e| format!("bad recipient: {e}"))?;
    let domain = from.email.domain().to_string();
    let body = eight_bit(mail.body);
    Message::builder()
        .from(from)
        .to(to)
        .subject(mail.subject)
        .message_id(Some(format!("<{}@{domain}>", mail.notice_id)))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("Content-Language"),
            mail.language.to_string(),
        ))
        .singlepart(
            SinglePart::builder()
                .header(ContentType::TEXT_PLAIN)
                .body(body),
        )
        .map_err(|e| format!("cannot build the mail: {e}"))
}

/// The body as 8bit, not quoted-printable, so that a link or a code stays whole and greppable
/// in the message, as every relay since RFC 6152 accepts: CRLF line ends, no NUL, lines under
/// RFC 5322's 998 bytes. A body that cannot travel so gets lettre's own choice of encoding.
fn eight_bit(text: &str) -> Body {
    let crlf = text.replace("\r\n", "\n").replace('\n', "\r\n");
    let fits = !crlf.contains('\0')
        && crlf
            .split("\r\n")
            .all(|l| l.len() < 998 && !l.contains('\r'));
    if fits {
        Body::dangerous_pre_encoded(crlf.into_bytes(), ContentTransferEncoding::EightBit)
    } else {
        Body::new(text.to_string())
    }
}

/// Maildir delivery: write under `tmp/`, fsync, rename into `new/`. Renaming onto an existing
/// name replaces the same message, so a repeated delivery leaves one file.
fn write_maildir(root: &Path, name: &str, bytes: &[u8]) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = root.join("tmp").join(name);
    let new = root.join("new").join(name);
    let io = |e: std::io::Error| format!("Maildir {}: {e}", root.display());
    if new.exists() {
        return Ok(());
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, &new).map_err(io)?;
    Ok(())
}

/// One SMS as the file sink writes it and the gateway receives it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Sms {
    pub at: String,
    pub to: String,
    pub text: String,
    pub notice_id: Uuid,
}

pub enum SmsTransport {
    Gateway {
        client: reqwest::Client,
        url: String,
        token: Option<String>,
    },
    File(PathBuf),
}

impl SmsTransport {
    pub fn gateway(url: &str, token: Option<String>, timeout: Duration) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| format!("cannot build the SMS gateway client: {e}"))?;
        Ok(SmsTransport::Gateway {
            client,
            url: url.to_string(),
            token,
        })
    }

    pub fn file(data_dir: &Path) -> Self {
        let path = data_dir.join("sms.jsonl");
        // A file an earlier version made under the umask is closed too (found from outside).
        if path.exists() {
            use std::os::unix::fs::PermissionsExt;
            if let Err(e) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            {
                tracing::warn!(file = %path.display(), error = %e, "cannot make the SMS file private");
            }
        }
        SmsTransport::File(path)
    }

    pub fn describe(&self) -> String {
        match self {
            SmsTransport::Gateway { .. } => "SMS gateway".into(),
            SmsTransport::File(path) => format!("file {}", path.display()),
        }
    }

    pub async fn send(&self, sms: &Sms) -> Result<(), String> {
        match self {
            SmsTransport::Gateway { client, url, token } => {
                let mut request = client.post(url).json(sms);
                if let Some(token) = token {
                    request = request.bearer_auth(token);
                }
                let response = request.send().await.map_err(|e| {
                    if e.is_timeout() {
                        "SMS gateway: timed out".to_string()
                    } else {
                        // Without the URL: it may carry credentials.
                        format!("SMS gateway: {}", e.without_url())
                    }
                })?;
                let status = response.status();
                if status.is_success() {
                    Ok(())
                } else {
                    Err(format!("SMS gateway answered {status}"))
                }
            }
            SmsTransport::File(path) => {
                let path = path.clone();
                let sms = sms.clone();
                tokio::task::spawn_blocking(move || append_sms(&path, &sms))
                    .await
                    .map_err(|e| e.to_string())?
            }
        }
    }
}

/// The developer's SMS file: its codes are in clear, so it is its owner's alone (0600).
fn append_sms(path: &Path, sms: &Sms) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |e: std::io::Error| format!("SMS file {}: {e}", path.display());
    let marker = format!("\"notice_id\":\"{}\"", sms.notice_id);
    match std::fs::read_to_string(path) {
        Ok(existing) if existing.contains(&marker) => return Ok(()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let mut line = serde_json::to_string(sms).map_err(|e| e.to_string())?;
    line.push('\n');
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    file.write_all(line.as_bytes()).map_err(io)?;
    file.sync_data().map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{append_sms, url_host, write_maildir, MailTransport, Sms};
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &std::path::Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_developers_sinks_are_their_owners_alone() {
        let dir = tempfile::tempdir().unwrap();
        // An earlier version's Maildir, made under the usual umask.
        std::fs::create_dir_all(dir.path().join("mail/new")).unwrap();
        std::fs::set_permissions(
            dir.path().join("mail"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let MailTransport::Maildir(root) = MailTransport::maildir(dir.path()).unwrap() else {
            panic!("a Maildir");
        };
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&root.join("tmp")), 0o700);
        assert_eq!(mode(&root.join("new")), 0o700, "the earlier one, closed");
        write_maildir(&root, "m1", b"Subject: code 123456\r\n\r\n").unwrap();
        assert_eq!(mode(&root.join("new/m1")), 0o600);
        let sms = dir.path().join("sms.jsonl");
        // An earlier version's file, made under the usual umask.
        std::fs::write(&sms, "").unwrap();
        std::fs::set_permissions(&sms, std::fs::Permissions::from_mode(0o644)).unwrap();
        let super::SmsTransport::File(sms) = super::SmsTransport::file(dir.path()) else {
            panic!("a file");
        };
        assert_eq!(mode(&sms), 0o600);
        append_sms(
            &sms,
            &Sms {
                at: "2026-12-04T10:00:00Z".into(),
                to: "+393331234567".into(),
                text: "codice 123456".into(),
                notice_id: uuid::Uuid::nil(),
            },
        )
        .unwrap();
        assert_eq!(mode(&sms), 0o600);
    }

    #[test]
    fn the_relays_host_is_read_from_its_url() {
        assert_eq!(
            url_host("smtp://u:p@relay.example.it:587?tls=required"),
            Some("relay.example.it")
        );
        assert_eq!(
            url_host("smtps://relay.example.it"),
            Some("relay.example.it")
        );
        assert_eq!(url_host("smtp://localhost:2525/"), Some("localhost"));
        assert_eq!(url_host("smtp://"), None);
    }
}
