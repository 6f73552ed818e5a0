//! `custode`: serves the HTTP API (`serve`), runs one worker apart (`worker`), rebuilds read
//! models (`replay`) and checks the log's hash chain (`audit verify`).

use anyhow::Context;
use clap::{Parser, Subcommand};
use custode::app::{self, App};
use custode::config::{Config, Overrides};
use custode_commands::clock::SystemClock;
use custode_commands::delivery::DeliveryKeys;
use custode_commands::{EventLog, LogOptions};
use custode_workers::consumer::Feed;
use custode_workers::notifier::Reporter;
use custode_workers::runtime::{self, WorkerContext, WorkerName};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

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
    /// Where the event log and read models live (default ./var).
    #[arg(long, global = true, env = "CUSTODE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
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
    /// projector. Its store (and the projector's read models) live in --data-dir, whose keys/
    /// must hold the service's delivery keys.
    Worker {
        /// mailer, sms, scheduler or projector.
        name: String,
        /// The NATS URL the service relays to.
        #[arg(long, env = "CUSTODE_NATS_URL")]
        nats: String,
    },
    /// Rebuild every read model from the log (AU-3). The service must be stopped.
    Replay,
    /// Audit the log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Walk the hash chain and name the first event that does not match (AU-1).
    Verify,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CUSTODE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
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
        Command::Worker { name, .. } => {
            let name = WorkerName::parse(&name).map_err(anyhow::Error::msg)?;
            worker(config, name)
        }
        Command::Replay => {
            let mut last_percent = None;
            let position = app::replay(&config.data_dir, &mut |done, total| {
                let percent = (done * 100).checked_div(total).unwrap_or(100);
                if last_percent != Some(percent) {
                    eprint!("\rreplaying: {done}/{total} events ({percent}%)");
                    last_percent = Some(percent);
                }
            })?;
            eprintln!();
            println!("read models rebuilt up to position {position}");
            Ok(())
        }
        Command::Audit {
            command: AuditCommand::Verify,
        } => {
            let path = config.data_dir.join(app::LOG_FILE);
            anyhow::ensure!(path.exists(), "no event log at {}", path.display());
            let log = EventLog::open(&path, &LogOptions::default())?;
            let report = log.verify_chain_blocking()?;
            match report.first_mismatch {
                None => {
                    println!("chain intact: {} events verified", report.checked);
                    Ok(())
                }
                Some(m) => {
                    println!(
                        "chain broken at position {} (event {}): {}; {} events before it verified",
                        m.position, m.event_id, m.reason, report.checked
                    );
                    std::process::exit(1);
                }
            }
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
fn worker(config: Config, name: WorkerName) -> anyhow::Result<()> {
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
        let keys = DeliveryKeys::open(&config.data_dir.join(app::KEYS_DIR))?;
        keys.publish(chrono::Utc::now())?;
        let ctx = WorkerContext {
            data_dir: config.data_dir.clone(),
            keys,
            settings: config.workers.clone(),
            clock: Arc::new(SystemClock),
            reporter: Reporter::JetStream(Box::new(js.clone())),
        };
        let mut tasks = runtime::Tasks::default();
        runtime::spawn_worker(name, Feed::JetStream(Box::new(js)), &ctx, &mut tasks)?;
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
