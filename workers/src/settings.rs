//! The workers' settings, as the `[mail]`, `[sms]`, `[delivery]` and `[nats]` sections of
//! `custode.toml` give them (NT-1, NT-3, SEC-9). With no SMTP relay or SMS gateway configured,
//! mail and SMS land in the embedded sinks under the data directory, whichever mode the workers
//! run in. `Debug` prints no password or token these settings hold.

use crate::nats::redacted;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailSettings {
    /// `smtp://user:pass@host:587?tls=required` (STARTTLS), `smtps://user:pass@host:465` (TLS),
    /// `smtp://host:25` (plain, a local relay). Unset: the Maildir under `<data-dir>/mail/`.
    pub smtp_url: Option<String>,
    /// The sender of every notice.
    pub from: String,
    pub timeout_secs: u64,
    /// PEM certificates of a private CA that signed the relay's certificate (trusted besides
    /// the public roots).
    pub ca_file: Option<std::path::PathBuf>,
}

impl Default for MailSettings {
    fn default() -> Self {
        Self {
            smtp_url: None,
            from: "custode <noreply@custode.localhost>".into(),
            timeout_secs: 10,
            ca_file: None,
        }
    }
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmsSettings {
    /// The gateway's URL: every SMS is a JSON POST `{at, to, text, notice_id}`; any 2xx is
    /// success. Unset: JSON lines in `<data-dir>/sms.jsonl`.
    pub gateway_url: Option<String>,
    /// Sent as `Authorization: Bearer <token>`.
    pub gateway_token: Option<String>,
    pub timeout_secs: u64,
}

impl Default for SmsSettings {
    fn default() -> Self {
        Self {
            gateway_url: None,
            gateway_token: None,
            timeout_secs: 10,
        }
    }
}

impl fmt::Debug for MailSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MailSettings")
            .field("smtp_url", &self.smtp_url.as_deref().map(redacted))
            .field("from", &self.from)
            .field("timeout_secs", &self.timeout_secs)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl fmt::Debug for SmsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmsSettings")
            .field("gateway_url", &self.gateway_url.as_deref().map(redacted))
            .field(
                "gateway_token",
                &self.gateway_token.as_ref().map(|_| "[redacted]"),
            )
            .field("timeout_secs", &self.timeout_secs)
            .finish()
    }
}

/// The JetStream fan-out (`--nats`), and SEC-9's bound on what the bus keeps.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsSettings {
    /// `nats://host:4222`; `--nats` and `CUSTODE_NATS_URL` beat it. Unset: the embedded mode.
    pub url: Option<String>,
    /// How long `CUSTODE_EVENTS` and `CUSTODE_OUTCOMES` keep a message; a worker run apart
    /// that is down longer misses what aged out.
    pub retention_days: u32,
}

impl Default for NatsSettings {
    fn default() -> Self {
        Self {
            url: None,
            retention_days: 7,
        }
    }
}

impl NatsSettings {
    pub fn retention(&self) -> Duration {
        Duration::from_secs(u64::from(self.retention_days) * 24 * 60 * 60)
    }
}

impl fmt::Debug for NatsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsSettings")
            .field("url", &self.url.as_deref().map(redacted))
            .field("retention_days", &self.retention_days)
            .finish()
    }
}

/// NT-3: per-notice retries with exponential backoff, then a dead letter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliverySettings {
    /// Attempts before a notice becomes a dead letter (the first try included).
    pub max_attempts: u32,
    /// The wait after the first failure; it doubles after each further one.
    pub backoff_base_ms: u64,
    /// The longest wait between two attempts.
    pub backoff_max_ms: u64,
    /// Events older than this (by the time a worker handles them) get no notice: a worker whose
    /// store is new on an old log, or a stream replayed from its start, does not mail the past.
    pub max_event_age_hours: u64,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            backoff_base_ms: 2_000,
            backoff_max_ms: 10 * 60 * 1_000,
            max_event_age_hours: 48,
        }
    }
}

impl DeliverySettings {
    /// The wait after the `failures`-th failure (1-based).
    pub fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        let wait = self.backoff_base_ms.saturating_mul(1u64 << doublings);
        Duration::from_millis(wait.min(self.backoff_max_ms))
    }
}

/// Everything the workers of one process run with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerSettings {
    pub mail: MailSettings,
    pub sms: SmsSettings,
    pub delivery: DeliverySettings,
    /// Base of links sent to people.
    pub public_url: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_ceiling() {
        let d = DeliverySettings {
            max_attempts: 5,
            backoff_base_ms: 100,
            backoff_max_ms: 350,
            max_event_age_hours: 48,
        };
        let waits: Vec<u128> = (1..=4).map(|n| d.backoff(n).as_millis()).collect();
        assert_eq!(waits, vec![100, 200, 350, 350]);
    }

    #[test]
    fn debug_prints_no_password_or_token() {
        let mail = MailSettings {
            smtp_url: Some("smtp://custode:mail-pass-1@relay.example.it:587".into()),
            ..MailSettings::default()
        };
        let sms = SmsSettings {
            gateway_url: Some("https://gw:gw-pass-2@sms.example.it/send".into()),
            gateway_token: Some("sms-token-3".into()),
            ..SmsSettings::default()
        };
        let nats = NatsSettings {
            url: Some("nats://user:nats-pass-4@nats.example.it:4222".into()),
            ..NatsSettings::default()
        };
        let printed = format!("{mail:?} {sms:?} {nats:?}");
        for secret in ["mail-pass-1", "gw-pass-2", "sms-token-3", "nats-pass-4"] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
        assert!(printed.contains("relay.example.it:587"), "{printed}");
    }
}
