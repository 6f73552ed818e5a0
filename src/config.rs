//! Configuration's one home. Flags beat environment (clap reads both), which beats the TOML
//! file (`--config`, or `custode.toml` in the working directory when present), which beats the
//! defaults. An unknown key or a bad value stops startup with a message naming it. `Debug` of
//! the resolved [`Config`] prints no key, password or token (SEC-5: no secret in a log line).

use custode_commands::hashing::Argon2Settings;
use custode_commands::Synchronous;
use custode_domain::settings::{
    HistorySettings, IdentitySettings, LimitSettings, PolicySettings, RecoverySettings,
    SessionSettings,
};
use custode_domain::Secret;
use custode_domain::Settings;
use custode_workers::runtime::WorkerName;
use custode_workers::settings::{
    DeliverySettings, MailSettings, NatsSettings, SmsSettings, WorkerSettings,
};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

pub const DEFAULT_DATA_DIR: &str = "./var";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// SEC-8: `/metrics` is served on this operator listener only, never on the public one.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";
pub const DEFAULT_CONFIG_FILE: &str = "custode.toml";

/// The settings file as written by an operator.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    /// SEC-8: where `/metrics` is served (an operator listener).
    pub metrics_listen: Option<SocketAddr>,
    /// The JetStream fan-out and how long it keeps messages (SEC-9). Settings files written
    /// before the `[nats]` section said `nats = "<url>"`; that still reads as `[nats] url`.
    #[serde(deserialize_with = "nats_section")]
    pub nats: NatsSettings,
    /// Base of links sent to people; default `http://<listen>`.
    pub public_url: Option<String>,
    /// Proxies whose `X-Forwarded-For` is believed (SEC-2).
    pub trusted_proxies: Vec<IpAddr>,
    pub policy: PolicySettings,
    pub sessions: SessionSettings,
    /// RC-1..7.
    pub recovery: RecoverySettings,
    /// SEC-2's rate limits.
    pub limits: LimitSettings,
    /// AH-3: the access history's retention.
    pub history: HistorySettings,
    /// SC-8: an unused identity's revocation.
    pub identity: IdentitySettings,
    /// RC-1: the captcha verifier (unset: any non-empty token passes).
    pub captcha: CaptchaConfig,
    pub argon2: Argon2Settings,
    pub log: LogConfig,
    pub http: HttpConfig,
    /// AU-5: signed checkpoints.
    pub audit: AuditConfig,
    /// WEB-1: the holder's pages.
    pub web: WebConfig,
    /// NT-1: the SMTP relay (unset: the Maildir sink).
    pub mail: MailSettings,
    /// NT-1: the SMS gateway (unset: the JSON-lines sink).
    pub sms: SmsSettings,
    /// NT-3: retries and dead letters.
    pub delivery: DeliverySettings,
}

/// RC-1: a captcha verifier in the style of hCaptcha and Friendly Captcha: a form POST of
/// `secret`, `response` (and `remoteip`) to `verify_url`, answering JSON with `success`.
#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CaptchaConfig {
    pub verify_url: Option<String>,
    pub secret: Option<String>,
    /// How long a verification may take before the start is refused as unverified.
    pub timeout_ms: Option<u64>,
    /// WEB-1: the widget the `/recover` page shows (the provider's public site key and its
    /// script, e.g. `https://js.hcaptcha.com/1/api.js`); unset, the page asks for a tick.
    pub site_key: Option<String>,
    pub widget_url: Option<String>,
}

impl std::fmt::Debug for CaptchaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptchaConfig")
            .field("verify_url", &self.verify_url)
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .field("site_key", &self.site_key)
            .field("widget_url", &self.widget_url)
            .finish()
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `full` (default: every commit is fsynced) or `normal`.
    pub synchronous: Synchronous,
}

/// WEB-1: whether custode serves the holder's pages (a provider with its own front end turns
/// them off; the API stays).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    pub enabled: bool,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// AU-5: how often the service appends a signed checkpoint of the log's head to
    /// `<data-dir>/checkpoints.jsonl` (when the head moved); 0 turns it off.
    pub checkpoint_minutes: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            checkpoint_minutes: 60,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// How long a read with `?after=` waits for its read model before answering 503.
    pub read_wait_ms: u64,
    /// SEC-9: how long a request may take before it is answered `503`.
    pub request_timeout_ms: u64,
    /// SEC-9: how long a client may take to send a request's headers before its connection
    /// is closed.
    pub header_timeout_ms: u64,
    /// SEC-9: requests served at once; more are answered `503` with `Retry-After` at once.
    pub max_concurrent_requests: usize,
    /// SEC-9: of those, at most this many from one client address (an IPv6 /64), so that one
    /// client (slow bodies, a burst) cannot take every place.
    pub max_concurrent_per_address: usize,
    /// SEC-9: open connections from one peer (trusted proxies excepted); more are closed at
    /// once.
    pub max_connections_per_peer: usize,
    /// SEC-9: hashing jobs (logins, password changes, answers) that may wait for the pool's
    /// threads; more are answered `503` with `Retry-After` at once.
    pub hashing_queue: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            read_wait_ms: 5_000,
            request_timeout_ms: 10_000,
            header_timeout_ms: 10_000,
            max_concurrent_requests: 512,
            max_concurrent_per_address: 32,
            max_connections_per_peer: 256,
            hashing_queue: 32,
        }
    }
}

/// Everything the process runs with, resolved.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    /// `url` unset: the embedded mode.
    pub nats: NatsSettings,
    pub public_url: String,
    pub trusted_proxies: Vec<IpAddr>,
    pub settings: Settings,
    pub captcha: CaptchaConfig,
    pub argon2: Argon2Settings,
    pub log: LogConfig,
    pub http: HttpConfig,
    pub audit: AuditConfig,
    pub web: WebConfig,
    /// Transports, retries and the public URL, as the workers see them.
    pub workers: WorkerSettings,
    /// The workers `serve` runs in-process (`--workers`; default mailer, sms, scheduler).
    pub run_workers: Vec<WorkerName>,
    /// `CUSTODE_OPERATOR_KEY`; unset, operator endpoints answer 503.
    pub operator_key: Option<Secret>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the settings file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the settings file {path} is not valid: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{0}")]
    Value(String),
}

/// What flags and environment gave (clap fills these; `None` means not given). No `Debug`: it
/// holds the operator key and the NATS URL as given.
#[derive(Clone, Default)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub metrics_listen: Option<SocketAddr>,
    pub nats: Option<String>,
    /// `--workers mailer,sms` or `--workers none`.
    pub workers: Option<String>,
    pub operator_key: Option<String>,
}

impl Config {
    pub fn load(overrides: Overrides) -> Result<Self, ConfigError> {
        let file = match &overrides.config {
            Some(path) => read_file(path)?,
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => {
                read_file(Path::new(DEFAULT_CONFIG_FILE))?
            }
            None => FileConfig::default(),
        };
        Self::resolve(file, overrides)
    }

    pub fn resolve(file: FileConfig, overrides: Overrides) -> Result<Self, ConfigError> {
        let listen = match overrides.listen.or(file.listen) {
            Some(listen) => listen,
            None => DEFAULT_LISTEN
                .parse()
                .map_err(|e| ConfigError::Value(format!("default listen address: {e}")))?,
        };
        let metrics_listen = match overrides.metrics_listen.or(file.metrics_listen) {
            Some(address) => address,
            None => DEFAULT_METRICS_LISTEN
                .parse()
                .map_err(|e| ConfigError::Value(format!("default metrics address: {e}")))?,
        };
        if metrics_listen == listen {
            return Err(ConfigError::Value(
                "metrics_listen must differ from listen: /metrics is for operators only (SEC-8)"
                    .into(),
            ));
        }
        if file.policy.min_score > 4 {
            return Err(ConfigError::Value(
                "policy.min_score must be between 0 and 4".into(),
            ));
        }
        if file.policy.min_length > file.policy.max_length {
            return Err(ConfigError::Value(
                "policy.min_length must not exceed policy.max_length".into(),
            ));
        }
        let s = &file.sessions;
        if s.lifetime_secs <= 0 || s.idle_secs <= 0 || s.step_up_secs <= 0 {
            return Err(ConfigError::Value(
                "sessions.* durations must be positive".into(),
            ));
        }
        let r = &file.recovery;
        if r.link_hours <= 0
            || r.code_minutes <= 0
            || r.question_lock_minutes <= 0
            || r.reset_token_minutes <= 0
            || r.code_attempts == 0
            || r.codes_per_recovery == 0
            || r.question_attempts == 0
        {
            return Err(ConfigError::Value(
                "recovery.* durations and counts must be positive".into(),
            ));
        }
        let h = &file.http;
        if h.request_timeout_ms == 0
            || h.header_timeout_ms == 0
            || h.max_concurrent_requests == 0
            || h.max_concurrent_per_address == 0
            || h.max_connections_per_peer == 0
            || h.hashing_queue == 0
        {
            return Err(ConfigError::Value(
                "http.request_timeout_ms, http.max_concurrent_requests and http.hashing_queue must be positive".into(),
            ));
        }
        // Bounded queues stay bounded: past these, a setting is a mistake.
        for (name, value, max) in [
            ("http.request_timeout_ms", h.request_timeout_ms, 600_000),
            ("http.header_timeout_ms", h.header_timeout_ms, 600_000),
            (
                "http.max_concurrent_requests",
                h.max_concurrent_requests as u64,
                100_000,
            ),
            (
                "http.max_concurrent_per_address",
                h.max_concurrent_per_address as u64,
                100_000,
            ),
            (
                "http.max_connections_per_peer",
                h.max_connections_per_peer as u64,
                100_000,
            ),
            ("http.hashing_queue", h.hashing_queue as u64, 10_000),
        ] {
            if value > max {
                return Err(ConfigError::Value(format!("{name} may be at most {max}")));
            }
        }
        let l = &file.limits;
        if l.login_per_address_per_minute == 0
            || l.login_failures_per_user == 0
            || l.login_lockout_minutes <= 0
            || l.recovery_starts_per_address_per_minute == 0
            || l.recovery_messages_per_user_per_hour == 0
            || l.checks_per_address_per_minute == 0
            || l.check_failures_per_user == 0
            || l.anonymous_writes_per_minute == 0
            || l.strength_per_address_per_minute == 0
            || l.check_lockout_minutes <= 0
        {
            return Err(ConfigError::Value("limits.* must be positive".into()));
        }
        // Upper bounds keep time arithmetic far from overflow and settings sane.
        let bounded = [
            ("recovery.link_hours", r.link_hours, 24 * 30),
            ("recovery.code_minutes", r.code_minutes, 60 * 24),
            (
                "recovery.question_lock_minutes",
                r.question_lock_minutes,
                60 * 24 * 30,
            ),
            (
                "recovery.reset_token_minutes",
                r.reset_token_minutes,
                60 * 24,
            ),
            (
                "limits.login_lockout_minutes",
                l.login_lockout_minutes,
                60 * 24 * 30,
            ),
            (
                "limits.check_lockout_minutes",
                l.check_lockout_minutes,
                60 * 24 * 30,
            ),
        ];
        for (name, value, max) in bounded {
            if value > max {
                return Err(ConfigError::Value(format!("{name} may be at most {max}")));
            }
        }
        if r.answer_floor_ms > 10_000 {
            return Err(ConfigError::Value(
                "recovery.answer_floor_ms may be at most 10000".into(),
            ));
        }
        if let Some(url) = &file.captcha.verify_url {
            let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
                .iter()
                .any(|p| url.starts_with(p));
            if !url.starts_with("https://") && !loopback {
                return Err(ConfigError::Value(
                    "captcha.verify_url must be https (the secret travels with each check)".into(),
                ));
            }
        }
        if file.captcha.verify_url.is_some() != file.captcha.secret.is_some() {
            return Err(ConfigError::Value(
                "captcha.verify_url and captcha.secret go together".into(),
            ));
        }
        if file.captcha.site_key.is_some() != file.captcha.widget_url.is_some() {
            return Err(ConfigError::Value(
                "captcha.site_key and captcha.widget_url go together".into(),
            ));
        }
        if let Some(url) = &file.captcha.widget_url {
            let origin_ok = url
                .strip_prefix("https://")
                .and_then(|rest| rest.split('/').next())
                .is_some_and(|host| {
                    !host.is_empty()
                        && host
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b))
                });
            if !origin_ok {
                return Err(ConfigError::Value(
                    "captcha.widget_url must be an https address (its origin joins the page's CSP)"
                        .into(),
                ));
            }
        }
        if !(1..=365).contains(&file.nats.retention_days) {
            return Err(ConfigError::Value(
                "nats.retention_days must be between 1 and 365 (SEC-9: the bus keeps messages a bounded time)".into(),
            ));
        }
        if file.identity.inactivity_months > 1200 {
            return Err(ConfigError::Value(
                "identity.inactivity_months must be between 0 (off) and 1200".into(),
            ));
        }
        if file.policy.identity_max_age_days > 36_500 || file.policy.mailbox_max_age_days > 36_500 {
            return Err(ConfigError::Value(
                "policy.identity_max_age_days and policy.mailbox_max_age_days must be between 0 (off) and 36500".into(),
            ));
        }
        if !(1..=36_500).contains(&file.history.retention_days) {
            return Err(ConfigError::Value(
                "history.retention_days must be between 1 and 36500".into(),
            ));
        }
        if file.audit.checkpoint_minutes > 525_600 {
            return Err(ConfigError::Value(
                "audit.checkpoint_minutes must be between 0 (off) and 525600 (a year)".into(),
            ));
        }
        if file.delivery.max_attempts == 0 {
            return Err(ConfigError::Value(
                "delivery.max_attempts must be at least 1".into(),
            ));
        }
        let run_workers = match overrides.workers.as_deref() {
            None => WorkerName::SERVED.to_vec(),
            Some("none") => Vec::new(),
            Some(list) => {
                let mut names = Vec::new();
                for name in list.split(',').filter(|n| !n.trim().is_empty()) {
                    let name = WorkerName::parse(name).map_err(ConfigError::Value)?;
                    if name == WorkerName::Projector {
                        return Err(ConfigError::Value(
                            "--workers: serve always runs the projector in-process; `custode worker projector` runs one apart".into(),
                        ));
                    }
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
                names
            }
        };
        let public_url = file
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{listen}"))
            .trim_end_matches('/')
            .to_string();
        Ok(Self {
            data_dir: overrides
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            listen,
            metrics_listen,
            nats: NatsSettings {
                url: overrides.nats.or(file.nats.url),
                ..file.nats
            },
            public_url: public_url.clone(),
            trusted_proxies: file.trusted_proxies,
            settings: Settings {
                policy: file.policy,
                sessions: file.sessions,
                recovery: file.recovery,
                limits: file.limits,
                history: file.history,
                identity: file.identity,
            },
            captcha: file.captcha,
            argon2: file.argon2,
            log: file.log,
            http: file.http,
            audit: file.audit,
            web: file.web,
            workers: WorkerSettings {
                mail: file.mail,
                sms: file.sms,
                delivery: file.delivery,
                public_url,
            },
            run_workers,
            operator_key: overrides
                .operator_key
                .filter(|k| !k.is_empty())
                .map(Secret::new),
        })
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Invalid {
        path: path.to_path_buf(),
        message: e.message().to_string(),
    })
}

/// `[nats]` as a table, or the URL alone as earlier settings files gave it.
fn nats_section<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<NatsSettings, D::Error> {
    match toml::Value::deserialize(deserializer)? {
        toml::Value::String(url) => Ok(NatsSettings {
            url: Some(url),
            ..NatsSettings::default()
        }),
        // A table keeps its own errors, which name the key.
        table => NatsSettings::deserialize(table).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's settings block names every section with its real defaults.
    #[test]
    fn the_readme_settings_block_is_the_defaults() {
        let readme = include_str!("../README.md");
        let block = readme
            .split("```toml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .unwrap_or_default();
        let file: FileConfig = toml::from_str(block).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(file, FileConfig::default());
        for section in [
            "[recovery]",
            "[limits]",
            "[captcha]",
            "[policy]",
            "[delivery]",
            "[nats]",
        ] {
            assert!(
                block.contains(section),
                "{section} is missing from the README"
            );
        }
    }

    #[test]
    fn a_captcha_url_needs_its_secret() {
        let mut file = FileConfig::default();
        file.captcha.verify_url = Some("https://captcha.example/verify".into());
        let err = Config::resolve(file, Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("captcha"), "{err}");
    }

    #[test]
    fn an_unknown_key_is_named_in_the_error() {
        let err = toml::from_str::<FileConfig>("[policy]\nmin_lenght = 9\n").unwrap_err();
        assert!(err.message().contains("min_lenght"), "{}", err.message());
    }

    #[test]
    fn flags_beat_the_file_which_beats_the_defaults() {
        let file: FileConfig = toml::from_str(
            "listen = \"127.0.0.1:9000\"\ndata_dir = \"/srv/custode\"\n[policy]\nmin_score = 3\n",
        )
        .unwrap();
        let config = Config::resolve(
            file,
            Overrides {
                data_dir: Some("/tmp/x".into()),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.settings.policy.min_score, 3);
        assert_eq!(config.public_url, "http://127.0.0.1:9000");
        assert_eq!(config.settings.sessions.idle_secs, 3600);
    }

    #[test]
    fn a_bad_value_stops_startup() {
        let file: FileConfig = toml::from_str("[policy]\nmin_score = 7\n").unwrap();
        assert!(Config::resolve(file, Overrides::default()).is_err());
        assert!(toml::from_str::<FileConfig>("[log]\nsynchronous = \"sometimes\"\n").is_err());
    }

    #[test]
    fn workers_default_to_all_three_and_can_be_picked_or_refused_by_name() {
        let resolve = |workers: Option<&str>| {
            Config::resolve(
                FileConfig::default(),
                Overrides {
                    workers: workers.map(String::from),
                    ..Overrides::default()
                },
            )
        };
        assert_eq!(
            resolve(None).unwrap().run_workers,
            WorkerName::SERVED.to_vec()
        );
        assert!(resolve(Some("none")).unwrap().run_workers.is_empty());
        assert_eq!(
            resolve(Some("sms, mailer,sms")).unwrap().run_workers,
            vec![WorkerName::Sms, WorkerName::Mailer]
        );
        let err = resolve(Some("mailer,fax")).unwrap_err().to_string();
        assert!(err.contains("fax"), "{err}");
        assert!(
            resolve(Some("projector")).is_err(),
            "serve projects in-process"
        );
    }

    #[test]
    fn notification_settings_come_from_the_file_and_bad_ones_stop_startup() {
        let file: FileConfig = toml::from_str(
            "[mail]\nsmtp_url = \"smtp://relay:25\"\n[sms]\ngateway_url = \"http://gw/send\"\n[delivery]\nmax_attempts = 3\n",
        )
        .unwrap();
        let config = Config::resolve(file, Overrides::default()).unwrap();
        assert_eq!(
            config.workers.mail.smtp_url.as_deref(),
            Some("smtp://relay:25")
        );
        assert_eq!(
            config.workers.sms.gateway_url.as_deref(),
            Some("http://gw/send")
        );
        assert_eq!(config.workers.delivery.max_attempts, 3);
        assert_eq!(config.workers.public_url, "http://127.0.0.1:8080");
        let zero: FileConfig = toml::from_str("[delivery]\nmax_attempts = 0\n").unwrap();
        assert!(Config::resolve(zero, Overrides::default()).is_err());
        let err = toml::from_str::<FileConfig>("[mail]\nsmtp = \"x\"\n").unwrap_err();
        assert!(err.message().contains("smtp"), "{}", err.message());
    }

    #[test]
    fn debug_prints_no_key_password_token_or_secret_sec_8() {
        let file: FileConfig = toml::from_str(
            r#"
            [captcha]
            verify_url = "https://captcha.example/verify"
            secret = "captcha-secret-1"
            [mail]
            smtp_url = "smtp://custode:smtp-password-2@relay.example.it:587?tls=required"
            [sms]
            gateway_url = "https://sms.example.it/send"
            gateway_token = "sms-token-3"
            [nats]
            url = "nats://custode:nats-password-4@nats.example.it:4222"
            "#,
        )
        .unwrap();
        let config = Config::resolve(
            file,
            Overrides {
                operator_key: Some("operator-key-5".into()),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert!(config.operator_key.is_some());
        let printed = format!("{config:?}");
        for secret in [
            "captcha-secret-1",
            "smtp-password-2",
            "sms-token-3",
            "nats-password-4",
            "operator-key-5",
        ] {
            assert!(!printed.contains(secret), "{secret} is in {printed}");
        }
        assert!(
            printed.contains("relay.example.it:587"),
            "the rest still shows: {printed}"
        );
    }

    #[test]
    fn the_bus_keeps_messages_7_days_unless_told_and_never_unbounded_sec_9() {
        let config = Config::resolve(FileConfig::default(), Overrides::default()).unwrap();
        assert_eq!(
            config.nats.retention(),
            std::time::Duration::from_secs(7 * 24 * 60 * 60)
        );
        assert_eq!(config.nats.url, None);
        let file: FileConfig =
            toml::from_str("[nats]\nurl = \"nats://a:4222\"\nretention_days = 2\n").unwrap();
        let config = Config::resolve(
            file.clone(),
            Overrides {
                nats: Some("nats://b:4222".into()),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(
            config.nats.url.as_deref(),
            Some("nats://b:4222"),
            "the flag wins"
        );
        assert_eq!(config.nats.retention_days, 2);
        let unbounded: FileConfig = toml::from_str("[nats]\nretention_days = 0\n").unwrap();
        let err = Config::resolve(unbounded, Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("retention_days"), "{err}");
    }

    #[test]
    fn a_settings_file_from_before_the_nats_section_still_reads() {
        let file: FileConfig = toml::from_str("nats = \"nats://127.0.0.1:4222\"\n").unwrap();
        assert_eq!(file.nats.url.as_deref(), Some("nats://127.0.0.1:4222"));
        assert_eq!(file.nats.retention_days, 7);
        let file: FileConfig =
            toml::from_str("[nats]\nurl = \"nats://h:4222\"\nretention_days = 3\n").unwrap();
        assert_eq!(file.nats.retention_days, 3);
        let unknown = toml::from_str::<FileConfig>("[nats]\nretention = 3\n").unwrap_err();
        assert!(unknown.to_string().contains("retention"), "{unknown}");
    }
}
