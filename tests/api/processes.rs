//! The real peers the end-to-end tests start: the `custode` binary, a `nats-server -js` on a
//! free port with its own store (stoppable and restartable), an SMTP server process (aiosmtpd,
//! `tests/support/smtp_sink.py`) and an HTTP receiver standing in for an SMS gateway. Each says
//! at once which program it could not find; `./scripts/test` installs them.

use crate::helpers::{repo_path, OPERATOR_KEY};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_custode");

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `check` every 20 ms until it holds, failing the test after `limit`.
pub async fn eventually<F: FnMut() -> bool>(limit: Duration, what: &str, mut check: F) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// A program on the PATH (or in /usr/sbin, where Debian puts servers), or a clear failure.
fn program(name: &str, env_override: &str) -> PathBuf {
    if let Ok(path) = std::env::var(env_override) {
        return PathBuf::from(path);
    }
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("`{name}` is not installed (nor given in {env_override}): run ./scripts/test, which installs it")
        })
}

/// `custode serve` (or any subcommand) as a child process; killed (SIGKILL) when dropped.
pub struct Served {
    pub child: Child,
    pub base: String,
    /// The operator listener, where `/metrics` is (SEC-8).
    pub metrics: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    /// SIGKILL, at once: what a crash looks like.
    pub fn kill_9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (20 s at most) until a `custode serve` at `base` answers `/healthz`.
pub async fn wait_until_up(base: &str) {
    let started = Instant::now();
    while reqwest::get(format!("{base}/healthz")).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "custode serve did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `custode serve` on a free port over `data_dir`, with `args` added; waits for `/healthz`.
pub async fn serve(data_dir: &Path, args: &[&str]) -> Served {
    let port = free_port();
    let metrics_port = loop {
        let other = free_port();
        if other != port {
            break other;
        }
    };
    let child = Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
        .args(args)
        .env("CUSTODE_DATA_DIR", data_dir)
        .env("CUSTODE_OPERATOR_KEY", OPERATOR_KEY)
        .current_dir(data_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("custode binary starts");
    let base = format!("http://127.0.0.1:{port}");
    wait_until_up(&base).await;
    Served {
        child,
        base,
        metrics: format!("http://127.0.0.1:{metrics_port}"),
    }
}

/// A `nats-server -js` child with its own store, on its own port.
pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    store: tempfile::TempDir,
}

impl NatsServer {
    pub fn start() -> Self {
        let mut server = Self {
            child: None,
            port: free_port(),
            store: tempfile::tempdir().unwrap(),
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts it again on the same port and store (after [`NatsServer::stop`]).
    pub fn restart(&mut self) {
        let child = Command::new(program("nats-server", "CUSTODE_TEST_NATS_SERVER"))
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        let started = Instant::now();
        while !port_open(self.port) {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "nats-server did not come up"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub async fn jetstream(&self) -> async_nats::jetstream::Context {
        let client = async_nats::connect(self.url())
            .await
            .expect("connect to NATS");
        async_nats::jetstream::new(client)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A real SMTP server process that writes each accepted message to a file, and refuses
/// everything (451) while told to.
pub struct SmtpSink {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
    _certs: Option<tempfile::TempDir>,
}

impl SmtpSink {
    pub fn start() -> Self {
        Self::spawn(&[])
    }

    /// A server that takes mail only after SMTP AUTH with `user` and `password`.
    pub fn start_with_auth(user: &str, password: &str) -> Self {
        Self::spawn(&[user, password])
    }

    /// A server that takes mail only over STARTTLS, with a certificate for `localhost` that
    /// a CA of its own signed (returned as PEM), and then only after SMTP AUTH.
    pub fn start_with_tls(user: &str, password: &str) -> (Self, PathBuf) {
        let certs_dir = tempfile::tempdir().unwrap();
        let certs = certs_dir.path();
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let cert = certs.join("cert.pem");
        let key = certs.join("key.pem");
        std::fs::write(&cert, generated.cert.pem()).unwrap();
        std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
        let mut sink = Self::spawn(&[
            user,
            password,
            cert.to_str().unwrap(),
            key.to_str().unwrap(),
        ]);
        sink._certs = Some(certs_dir);
        (sink, cert)
    }

    fn spawn(auth: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let python = std::env::var("CUSTODE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let child = Command::new(&python)
            .arg(repo_path("tests/support/smtp_sink.py"))
            .arg(port.to_string())
            .arg(dir.path())
            .args(auth)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{python} (with aiosmtpd) does not start: {e}; run ./scripts/test")
            });
        let mut sink = Self {
            child,
            port,
            dir,
            _certs: None,
        };
        let started = Instant::now();
        while !port_open(port) {
            if let Ok(Some(status)) = sink.child.try_wait() {
                panic!(
                    "the SMTP sink exited ({status}): is aiosmtpd installed? run ./scripts/test"
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "the SMTP sink did not come up"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        sink
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// While refusing, every message gets a transient 451.
    pub fn refuse(&self, refuse: bool) {
        let flag = self.dir.path().join("refuse");
        if refuse {
            std::fs::write(flag, b"").unwrap();
        } else {
            let _ = std::fs::remove_file(flag);
        }
    }

    /// Every message accepted so far, whole.
    pub fn messages(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap())
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Each request the SMS receiver got: its `Authorization` header and its JSON body.
pub type Requests = Arc<Mutex<Vec<(Option<String>, serde_json::Value)>>>;

/// What the SMS receiver does with the next request.
#[derive(Debug, Clone, Copy)]
pub enum Reply {
    Status(u16),
    /// Answers only after this long (past the client's timeout).
    Hang(Duration),
}

/// A local HTTP server standing in for an SMS gateway: plays `script` (then answers 200 to
/// everything) and keeps every request body with its `Authorization` header.
pub struct SmsReceiver {
    pub url: String,
    pub received: Requests,
    /// Only the requests answered 2xx.
    pub accepted: Arc<Mutex<Vec<serde_json::Value>>>,
    server: tokio::task::JoinHandle<()>,
}

impl SmsReceiver {
    pub async fn start(script: Vec<Reply>) -> Self {
        use axum::http::{HeaderMap, StatusCode};
        let received: Requests = Arc::default();
        let accepted: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        let script = Arc::new(Mutex::new(std::collections::VecDeque::from(script)));
        let (r, a) = (received.clone(), accepted.clone());
        let router = axum::Router::new().route(
            "/sms",
            axum::routing::post(
                move |headers: HeaderMap, body: axum::Json<serde_json::Value>| {
                    let (r, a, script) = (r.clone(), a.clone(), script.clone());
                    async move {
                        let auth = headers
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .map(String::from);
                        r.lock().unwrap().push((auth, body.0.clone()));
                        let reply = script.lock().unwrap().pop_front();
                        match reply {
                            Some(Reply::Status(code)) if !(200..300).contains(&code) => {
                                StatusCode::from_u16(code).unwrap()
                            }
                            Some(Reply::Hang(wait)) => {
                                tokio::time::sleep(wait).await;
                                StatusCode::OK
                            }
                            _ => {
                                a.lock().unwrap().push(body.0);
                                StatusCode::ACCEPTED
                            }
                        }
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            url: format!("http://{addr}/sms"),
            received,
            accepted,
            server,
        }
    }
}

impl Drop for SmsReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The files in a Maildir's `new/`.
pub fn maildir(data_dir: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(data_dir.join("mail/new")) {
        Ok(entries) => entries.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
        Err(_) => Vec::new(),
    }
}

/// `custode <args>` over `data_dir` (without a settings file), run to its end.
pub fn run_custode(data_dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env("CUSTODE_DATA_DIR", data_dir)
        .env_remove("CUSTODE_CONFIG")
        .output()
        .expect("the binary runs")
}

/// As [`run_custode`], and it must succeed (its stderr says why not).
pub fn run_custode_ok(data_dir: &Path, args: &[&str]) -> std::process::Output {
    succeeded(&format!("custode {args:?}"), run_custode(data_dir, args))
}

/// `out` of `what`, which must have succeeded (its stderr says why not).
pub fn succeeded(what: &str, out: std::process::Output) -> std::process::Output {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The text of the operator listener's `/metrics` at `metrics` (empty when it cannot be read).
pub async fn metrics_text(metrics: &str) -> String {
    match reqwest::get(format!("{metrics}/metrics")).await {
        Ok(res) => res.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// The value of the unlabelled series `name` in a `/metrics` text (a count or position as
/// `u64`, seconds as `f64`).
pub fn metric_value<T: std::str::FromStr>(text: &str, name: &str) -> Option<T> {
    text.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}
