//! `custode`: serves the HTTP API (`serve`), runs one worker apart (`worker`), rebuilds read
//! models (`replay`, also as of a past point), audits the log (`audit verify`, `export`,
//! `checkpoint`) and writes or loads log fixtures (`log dump`, `log load`).

use anyhow::Context;
use clap::{Parser, Subcommand};
use custode::app::{self, App};
use custode::audit;
use custode::config::{Config, Overrides};
use custode_commands::checkpoint::CheckpointSigner;
use custode_commands::clock::SystemClock;
use custode_commands::delivery::DeliveryKeys;
use custode_commands::LogReader;
use custode_workers::consumer::Feed;
use custode_workers::notifier::Reporter;
use custode_workers::runtime::{self, WorkerContext, WorkerName};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// mimalloc instead of the system allocator: custode allocates many small, short-lived values
/// (events, their payloads, rows), often freed on another thread than the one that made them,
/// where glibc's allocator spends a third of a replay consolidating and unlinking chunks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "custode",
    version,
    about = "Account-security backend for PEC mailboxes and SPID identities"
)]
struct Cli {
    /// The TOML settings file (default: custode.toml in the working directory, when present).
    #[arg(long, global = true, env = "CUSTODE_CONFIG")]
    config: Option<PathBuf>,
    /// The data directory (default ./var): the event log and read models for `serve`; a
    /// worker's store and keys for `worker`.
    #[arg(long, global = true, env = "CUSTODE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The process's log lines (on stderr): `text` for people (coloured only on a terminal,
    /// and never with NO_COLOR set) or `json`, one object a line, for log collectors.
    #[arg(
        long,
        global = true,
        env = "CUSTODE_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Log lines on stderr, filtered by `CUSTODE_LOG` (default `info`). Terminal colour codes only
/// when stderr is a terminal: a file, a pipe or a journal gets plain text.
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("CUSTODE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .init(),
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API, with the projector in-process.
    Serve {
        /// Address to listen on (default 127.0.0.1:8080).
        #[arg(long, env = "CUSTODE_LISTEN")]
        listen: Option<SocketAddr>,
        /// Address of the operator listener that serves /metrics (default 127.0.0.1:9464).
        #[arg(long, env = "CUSTODE_METRICS_LISTEN")]
        metrics_listen: Option<SocketAddr>,
        /// NATS URL for fan-out (default: none, the embedded mode).
        #[arg(long, env = "CUSTODE_NATS_URL")]
        nats: Option<String>,
        /// Workers to run in this process: a comma-separated subset of mailer, sms, scheduler,
        /// or `none` for a pure API node (default: all three).
        #[arg(long, env = "CUSTODE_WORKERS")]
        workers: Option<String>,
    },
    /// Run one worker apart, as a durable JetStream consumer: mailer, sms, scheduler or
    /// projector. Its store (and the projector's read models) live in --data-dir; the mailer
    /// and the SMS sender create the delivery keys in its keys/delivery/, which they must
    /// share, and whose *.pub files the API nodes seal with.
    Worker {
        /// mailer, sms, scheduler or projector.
        name: String,
        /// The NATS URL the service relays to.
        #[arg(long, env = "CUSTODE_NATS_URL")]
        nats: String,
        /// Serve `/metrics` here (the worker's handled position, and a notifier's notices
        /// pending and dead), for the operators' scraper; none by default.
        #[arg(long, env = "CUSTODE_WORKER_METRICS_LISTEN")]
        metrics_listen: Option<SocketAddr>,
    },
    /// Rebuild the read models from the log (AU-3). In place the service must be stopped; with
    /// --into it may run.
    Replay {
        /// Only this read model: accounts, sessions, notices, access_history or audit_index.
        #[arg(long)]
        projection: Option<String>,
        /// Stop at this position, or at this RFC 3339 time (the log as it stood then).
        #[arg(long)]
        until: Option<String>,
        /// Build into DIR/read.db instead of the data dir's read models (reads the log
        /// read-only, beside a running service).
        #[arg(long, value_name = "DIR")]
        into: Option<PathBuf>,
    },
    /// A consistent copy of the data directory (the log, the read models, the workers' store,
    /// the keys and the signed checkpoints) into a new directory, while the service runs.
    /// Restore by starting custode on the copy.
    Backup {
        /// The new directory to write (it must not exist).
        #[arg(long, value_name = "DIR")]
        into: PathBuf,
    },
    /// Audit the log: read-only, beside a running service.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Log fixtures for tests and bug reports.
    Log {
        #[command(subcommand)]
        command: LogCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Walk the hash chain and name the first event that does not match (AU-1); with
    /// --checkpoint, also check each signed checkpoint in FILE against the log (AU-5).
    Verify {
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<PathBuf>,
        /// The service's checkpoint key (base64, as each checkpoint line shows it) to trust;
        /// default: the data dir's own. A checkpoint signed by any other key fails.
        #[arg(long, value_name = "KEY", requires = "checkpoint")]
        public_key: Option<String>,
    },
    /// Every event that concerns one account (or, without --account, every event between
    /// --from and --to), as JSON lines, secrets redacted and contacts masked (AU-2).
    Export {
        /// The account's user id or account id.
        #[arg(long)]
        account: Option<String>,
        /// From this RFC 3339 time or day (inclusive).
        #[arg(long)]
        from: Option<String>,
        /// Up to this RFC 3339 time or day (inclusive).
        #[arg(long)]
        to: Option<String>,
        /// Write here instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Print the log's head signed with the service's key, as one JSON line to keep elsewhere
    /// (AU-5).
    Checkpoint,
}

#[derive(Debug, Subcommand)]
enum LogCommand {
    /// Write every event as stored (with verification hashes: for test data, not production
    /// data) as JSON lines: a fixture `log load` turns back into the same log.
    Dump {
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Create the data dir's log from a fixture, checking every hash; the data dir must hold
    /// no log yet.
    Load {
        #[arg(value_name = "FILE")]
        fixture: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let (listen, metrics_listen, nats, workers) = match &cli.command {
        Command::Serve {
            listen,
            metrics_listen,
            nats,
            workers,
        } => (*listen, *metrics_listen, nats.clone(), workers.clone()),
        Command::Worker { nats, .. } => (None, None, Some(nats.clone()), Some("none".into())),
        _ => (None, None, None, None),
    };
    let config = Config::load(Overrides {
        config: cli.config,
        data_dir: cli.data_dir,
        listen,
        metrics_listen,
        nats,
        workers,
        operator_key: std::env::var("CUSTODE_OPERATOR_KEY").ok(),
    })?;
    match cli.command {
        Command::Serve { .. } => serve(config),
        Command::Worker {
            name,
            metrics_listen,
            ..
        } => {
            let name = WorkerName::parse(&name).map_err(anyhow::Error::msg)?;
            worker(config, name, metrics_listen)
        }
        Command::Replay {
            projection,
            until,
            into,
        } => {
            let until = match until {
                None => None,
                Some(text) => Some(app::Until::parse(&text).with_context(|| {
                    format!("--until {text:?} is neither a position nor an RFC 3339 time")
                })?),
            };
            let options = app::ReplayOptions {
                projection,
                until,
                into,
            };
            let mut progress = Progress::new();
            let position = app::replay(&config.data_dir, &options, &mut |done, total| {
                progress.update(done, total)
            })?;
            progress.finish();
            let target = options.into.as_deref().unwrap_or(&config.data_dir);
            println!(
                "read models rebuilt up to position {position} in {}",
                target.join(app::READ_MODELS_FILE).display()
            );
            Ok(())
        }
        Command::Backup { into } => {
            let report = custode::backup::backup(&config.data_dir, &into)?;
            for (name, size) in &report.files {
                println!("{name}\t{size} bytes");
            }
            println!(
                "backed up {} into {}: log head {}, chain verified",
                config.data_dir.display(),
                into.display(),
                report.head
            );
            Ok(())
        }
        Command::Audit { command } => audit(&config, command),
        Command::Log { command } => log_fixture(&config, command),
    }
}

/// Where `--out` says, else standard output, buffered.
fn output(
    out: Option<&std::path::Path>,
    data_dir: &std::path::Path,
) -> anyhow::Result<Box<dyn std::io::Write>> {
    Ok(match out {
        Some(file) => Box::new(std::io::BufWriter::new(new_output(file, data_dir)?)),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    })
}

/// A new file for `--out`: never one that exists (an export must not replace anything, least
/// of all the log), never inside the data dir, readable by its owner only (an export holds
/// personal data; a dump, verification hashes).
fn new_output(path: &std::path::Path, data_dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    if let (Ok(parent), Ok(data_dir)) = (
        std::fs::canonicalize(&parent),
        std::fs::canonicalize(data_dir),
    ) {
        anyhow::ensure!(
            !parent.starts_with(&data_dir),
            "--out {} is inside the data directory: write it elsewhere",
            path.display()
        );
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {} (it must not exist yet)", path.display()))
}

fn log_reader(config: &Config) -> anyhow::Result<LogReader> {
    Ok(LogReader::open(&config.data_dir.join(app::LOG_FILE))?)
}

fn audit(config: &Config, command: AuditCommand) -> anyhow::Result<()> {
    let keys_dir = config.data_dir.join(app::KEYS_DIR);
    match command {
        AuditCommand::Verify {
            checkpoint,
            public_key,
        } => {
            let log = log_reader(config)?;
            let checkpoints = match &checkpoint {
                Some(file) => Some(
                    std::fs::read_to_string(file)
                        .with_context(|| format!("cannot read {}", file.display()))?,
                ),
                None => None,
            };
            if let Some(key) = &public_key {
                anyhow::ensure!(
                    custode_commands::checkpoint::verifying_key(key).is_some(),
                    "--public-key is not an Ed25519 public key (32 bytes in base64, as each checkpoint line shows the service's)"
                );
            }
            let service_key = public_key
                .map(|key| key.trim().to_string())
                .or_else(|| CheckpointSigner::existing(&keys_dir).map(|s| s.public_key()));
            anyhow::ensure!(
                checkpoints.is_none() || service_key.is_some(),
                "no key to check the checkpoints against: this data dir has no {}; give the service's --public-key",
                custode_commands::checkpoint::SIGNING_KEY_FILE
            );
            let report = audit::verify(&log, checkpoints.as_deref(), service_key.as_deref())?;
            match report.failure {
                None => {
                    println!(
                        "chain intact: {} events verified; {} checkpoints hold",
                        report.checked, report.checkpoints
                    );
                    Ok(())
                }
                Some(failure) => {
                    println!("{failure}");
                    std::process::exit(1);
                }
            }
        }
        AuditCommand::Export {
            account,
            from,
            to,
            out,
        } => {
            let parse = |text: Option<String>, end: bool, flag: &str| -> anyhow::Result<_> {
                text.map(|t| {
                    audit::parse_time(&t, end).with_context(|| {
                        format!("{flag} {t:?} is neither an RFC 3339 time nor a day (YYYY-MM-DD)")
                    })
                })
                .transpose()
            };
            let window = audit::Window {
                from: parse(from, false, "--from")?,
                to: parse(to, true, "--to")?,
            };
            anyhow::ensure!(
                account.is_some() || window.from.is_some() || window.to.is_some(),
                "say whose events (--account) or when (--from, --to)"
            );
            anyhow::ensure!(!window.reversed(), "--from is after --to");
            let log = log_reader(config)?;
            let account_id = match &account {
                Some(reference) => Some(audit::resolve_account(&log, reference)?),
                None => None,
            };
            let mut sink = output(out.as_deref(), &config.data_dir)?;
            // The service key, when this data dir has it, keys the lines' digests and finds the
            // decoys tried on an account's user ids; it is never created here.
            let key = keys_dir
                .join(custode_commands::service_key::SERVICE_KEY_FILE)
                .exists()
                .then(|| custode_commands::service_key::ServiceKey::open(&keys_dir))
                .transpose()
                .map_err(anyhow::Error::msg)?
                .map(|(key, _)| key);
            if key.is_none() {
                eprintln!("no service key in {}: the lines carry no hash, and attempts on an account's user ids that opened no recovery of it are left out", keys_dir.display());
            }
            match account_id {
                Some(account_id) => {
                    let models =
                        audit::open_read_models(&config.data_dir.join(app::READ_MODELS_FILE));
                    let written = audit::export(
                        &log,
                        models.as_ref(),
                        account_id,
                        key.as_ref(),
                        window,
                        &mut sink,
                    )?;
                    eprintln!("exported {written} events of account {account_id}");
                }
                None => {
                    let written = audit::export_window(&log, key.as_ref(), window, &mut sink)?;
                    eprintln!("exported {written} events");
                }
            }
            Ok(())
        }
        AuditCommand::Checkpoint => {
            let log = log_reader(config)?;
            let signer = CheckpointSigner::existing(&keys_dir).with_context(|| {
                format!(
                    "no signing key in {}: the service creates it at its first start",
                    keys_dir.display()
                )
            })?;
            // Never sign a broken chain.
            let chain = log.verify_chain()?;
            if let Some(m) = chain.first_mismatch {
                anyhow::bail!(
                    "not signing: the chain is broken at position {} (event {}): {}",
                    m.position,
                    m.event_id,
                    m.reason
                );
            }
            let checkpoint = signer.checkpoint(&log, chrono::Utc::now())?;
            println!("{}", serde_json::to_string(&checkpoint)?);
            Ok(())
        }
    }
}

fn log_fixture(config: &Config, command: LogCommand) -> anyhow::Result<()> {
    match command {
        LogCommand::Dump { out } => {
            let log = log_reader(config)?;
            let mut sink = output(out.as_deref(), &config.data_dir)?;
            let written = log.dump(&mut sink)?;
            sink.flush()?;
            eprintln!("dumped {written} events");
            Ok(())
        }
        LogCommand::Load { fixture } => {
            let _lock = app::DataDirLock::acquire(&config.data_dir)?;
            let file = std::fs::File::open(&fixture)
                .with_context(|| format!("cannot read {}", fixture.display()))?;
            let head = custode_commands::log::load(
                &config.data_dir.join(app::LOG_FILE),
                std::io::BufReader::new(file),
            )?;
            println!(
                "loaded {head} events into {}; read models are built at the next start",
                config.data_dir.join(app::LOG_FILE).display()
            );
            Ok(())
        }
    }
}

/// `custode replay`'s progress: a bar with the rate and the time left on a terminal, a plain
/// line every few seconds otherwise (a log file, a pipe).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    started: std::time::Instant,
    last_line: std::time::Instant,
}

impl Progress {
    fn new() -> Self {
        use std::io::IsTerminal;
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(0);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "replaying {wide_bar} {human_pos}/{human_len} events, {per_sec}, {eta} left",
            ) {
                bar.set_style(style);
            }
            bar
        });
        let now = std::time::Instant::now();
        Self {
            bar,
            started: now,
            last_line: now,
        }
    }

    fn update(&mut self, done: u64, total: u64) {
        if let Some(bar) = &self.bar {
            bar.set_length(total);
            bar.set_position(done);
            return;
        }
        if self.last_line.elapsed() < std::time::Duration::from_secs(2) && done < total {
            return;
        }
        self.last_line = std::time::Instant::now();
        let seconds = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = done as f64 / seconds;
        let left = if rate > 0.0 {
            (total.saturating_sub(done)) as f64 / rate
        } else {
            0.0
        };
        let percent = (done * 100).checked_div(total).unwrap_or(100);
        eprintln!(
            "replaying: {done}/{total} events ({percent}%), {rate:.0} events/s, {left:.0} s left"
        );
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listen = config.listen;
        let metrics_listen = config.metrics_listen;
        let app = App::start(config, Arc::new(SystemClock))
            .await
            .context("starting custode")?;
        app.log_security_defaults();
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let operator = tokio::net::TcpListener::bind(metrics_listen)
            .await
            .with_context(|| {
                format!("cannot listen on {metrics_listen} for /metrics (--metrics-listen)")
            })?;
        tracing::info!(%listen, %metrics_listen, data_dir = %app.state.config.data_dir.display(), "custode is serving");
        let metrics = custode::http::metrics_app(app.state.clone());
        tokio::spawn(async move {
            if let Err(error) = axum::serve(operator, metrics).await {
                tracing::error!(%error, "the metrics listener stopped");
            }
        });
        let router = custode::http::app(app.state.clone());
        let drain = std::time::Duration::from_millis(app.state.config.http.request_timeout_ms);
        let config = &app.state.config;
        let bounds = custode::http::serve::Bounds {
            header_timeout: std::time::Duration::from_millis(config.http.header_timeout_ms),
            connections_per_peer: config.http.max_connections_per_peer,
            unbounded_peers: config.trusted_proxies.clone(),
            drain,
        };
        custode::http::serve::serve(listener, router, shutdown_signal(), bounds).await;
        app.flush().await;
        drop(app);
        Ok(())
    })
}

/// `custode worker <name> --nats URL`: one worker, fed by its durable consumer, reporting
/// outcomes on JetStream for `custode serve` to record.
fn worker(
    config: Config,
    name: WorkerName,
    metrics_listen: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let _lock = app::DataDirLock::acquire(&config.data_dir)?;
        let url = config
            .nats
            .url
            .clone()
            .context("custode worker needs --nats URL")?;
        let js = custode_workers::nats::connect(&url)
            .await
            .map_err(anyhow::Error::msg)?;
        // SEC-7: only a delivering worker (mailer, SMS sender) makes delivery key pairs; a
        // scheduler apart making its own would publish public halves nobody can open (found
        // from outside).
        let keys_dir = config.data_dir.join(app::KEYS_DIR);
        let keys = if name.delivers() {
            let keys = DeliveryKeys::open(&keys_dir)?;
            keys.publish(chrono::Utc::now())?;
            keys
        } else {
            DeliveryKeys::sealing_only(&keys_dir)?
        };
        let ctx = WorkerContext {
            data_dir: config.data_dir.clone(),
            keys,
            settings: config.workers.clone(),
            clock: Arc::new(SystemClock),
            reporter: Reporter::JetStream(Box::new(js.clone())),
        };
        let mut tasks = runtime::Tasks::default();
        let handle =
            runtime::spawn_worker(name, Feed::JetStream(Box::new(js)), &ctx, &mut tasks)?;
        if let Some(addr) = metrics_listen {
            // A worker apart has its own series: the API node cannot see its store.
            let store = config.data_dir.join(custode_workers::store::STORE_FILE);
            let metrics = axum::Router::new().route(
                "/metrics",
                axum::routing::get(move || {
                    let (handle, store) = (handle.clone(), store.clone());
                    async move {
                        use custode::http::metrics::{count_notices, exposition, render_workers};
                        let position = *handle.applied().borrow();
                        let notices = count_notices(store, vec![handle.name.clone()]).await;
                        let mut out = String::new();
                        render_workers(&mut out, &[(handle.name.clone(), position)], &notices);
                        exposition(out)
                    }
                }),
            );
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} for metrics"))?;
            tracing::info!(%addr, "worker metrics listening");
            tokio::spawn(async move {
                if let Err(error) = axum::serve(listener, metrics).await {
                    tracing::error!(%error, "the worker's metrics listener stopped");
                }
            });
        }
        tracing::info!(worker = name.as_str(), url = %custode_workers::nats::redacted(&url), data_dir = %config.data_dir.display(), "worker running");
        shutdown_signal().await;
        Ok(())
    })
}

/// Ctrl-C or SIGTERM (what service managers send): stop accepting, finish what is in flight.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down");
}
