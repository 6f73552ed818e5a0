//! Prometheus `/metrics` in the text exposition format: requests by route, method and status
//! with their total time, the log's head and group-commit counters, and how far the read
//! models of this process have got. Written by hand: a handful of series needs no library.

use crate::app::AppState;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// (route, method, status).
type RequestKey = (String, String, u16);
/// Requests answered and the seconds spent on them.
type RequestTotals = (u64, f64);

/// Request counters, keyed by route, method and status.
#[derive(Default)]
pub struct HttpMetrics {
    requests: Mutex<BTreeMap<RequestKey, RequestTotals>>,
    turned_away: [AtomicU64; 3],
    /// Operator routes called with an `Authorization` that is not the operator key.
    operator_key_refused: AtomicU64,
    /// The second (Unix time) of the last such refusal logged.
    operator_key_refused_logged: AtomicU64,
}

/// Why SEC-9's bounds answered a request `503` before (or instead of) its handler: they all
/// share one status and one problem type, and an operator tells them apart here.
#[derive(Debug, Clone, Copy)]
pub enum TurnedAway {
    /// Past the requests one address may have in flight at once.
    Address = 0,
    /// Past `http.max_concurrent_requests` of the whole service.
    Capacity = 1,
    /// Past `http.request_timeout_ms`.
    Timeout = 2,
}

impl TurnedAway {
    const ALL: [TurnedAway; 3] = [
        TurnedAway::Address,
        TurnedAway::Capacity,
        TurnedAway::Timeout,
    ];

    fn label(self) -> &'static str {
        match self {
            TurnedAway::Address => "address",
            TurnedAway::Capacity => "capacity",
            TurnedAway::Timeout => "timeout",
        }
    }
}

impl HttpMetrics {
    pub fn turned_away(&self, why: TurnedAway) {
        if let Some(counter) = self.turned_away.get(why as usize) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// An operator route refused a credential that is not the operator key: the count so far,
    /// and whether this one is the first of its second (the one to log: a mail server with a
    /// stale key refused thousands of times a second must not flood the log).
    pub fn operator_key_refused(&self) -> (u64, bool) {
        let count = self.operator_key_refused.fetch_add(1, Ordering::Relaxed) + 1;
        let second = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self
            .operator_key_refused_logged
            .swap(second, Ordering::Relaxed);
        (count, last != second)
    }

    pub fn observe(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        if let Ok(mut requests) = self.requests.lock() {
            let entry = requests
                .entry((route.to_string(), method.to_string(), status))
                .or_insert((0, 0.0));
            entry.0 += 1;
            entry.1 += elapsed.as_secs_f64();
        }
    }

    /// The request series in the text exposition format: a count and the seconds spent, per
    /// route, method and status.
    pub fn render_requests(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP custode_http_requests_total HTTP requests answered.\n# TYPE custode_http_requests_total counter");
        let requests = self.requests.lock().map(|r| r.clone()).unwrap_or_default();
        for ((route, method, status), (count, _)) in &requests {
            let _ = writeln!(out, "custode_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {count}");
        }
        let _ = writeln!(
            out,
            "# HELP custode_http_request_seconds_total Time spent answering HTTP requests.\n# TYPE custode_http_request_seconds_total counter"
        );
        for ((route, method, status), (_, seconds)) in &requests {
            let _ = writeln!(out, "custode_http_request_seconds_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {seconds}");
        }
        let _ = writeln!(
            out,
            "# HELP custode_http_turned_away_total Requests answered 503 by SEC-9's bounds, by why: too many in flight from one address, for the whole service, or past the request timeout.\n# TYPE custode_http_turned_away_total counter"
        );
        for why in TurnedAway::ALL {
            let count = self
                .turned_away
                .get(why as usize)
                .map_or(0, |c| c.load(Ordering::Relaxed));
            let _ = writeln!(
                out,
                "custode_http_turned_away_total{{reason=\"{}\"}} {count}",
                why.label()
            );
        }
        let _ = writeln!(
            out,
            "# HELP custode_operator_key_refused_total Operator routes called with a credential that is not the operator key (someone guessing it, or a client with a stale key).\n# TYPE custode_operator_key_refused_total counter\ncustode_operator_key_refused_total {}",
            self.operator_key_refused.load(Ordering::Relaxed)
        );
        out
    }
}

/// (channel, state) → notices, pending and dead, when this process delivers notices.
async fn notice_counts(state: &AppState) -> Vec<((&'static str, &'static str), u64)> {
    let running: Vec<String> = state.workers.iter().map(|w| w.name.clone()).collect();
    let store = state
        .config
        .data_dir
        .join(custode_workers::store::STORE_FILE);
    count_notices(store, running).await
}

/// (channel, state) → notices pending and dead in the worker store `store`, for the notifiers
/// among `running` (consumer names): what `custode_notices` shows, in `serve` and in a worker
/// run apart.
pub async fn count_notices(
    store: std::path::PathBuf,
    running: Vec<String>,
) -> Vec<((&'static str, &'static str), u64)> {
    use custode_domain::notice::Channel;
    use custode_workers::notifier::consumer_name;
    // The notifiers this process runs, by the consumer names they keep their outbox under.
    let channels: Vec<(&'static str, &'static str)> = [Channel::Email, Channel::Sms]
        .into_iter()
        .map(|channel| (consumer_name(channel), channel.as_str()))
        .filter(|(consumer, _)| running.iter().any(|name| name == consumer))
        .collect();
    if channels.is_empty() {
        return Vec::new();
    }
    let counted = tokio::task::spawn_blocking(move || {
        let conn = custode_commands::sqlite::open_reader(&store)?;
        let mut counts = Vec::new();
        for (consumer, channel) in channels {
            for notice_state in ["pending", "dead"] {
                let count: i64 = conn
                    .prepare_cached(
                        "SELECT count(*) FROM outbox WHERE consumer = ?1 AND state = ?2",
                    )?
                    .query_row([consumer, notice_state], |r| r.get(0))?;
                counts.push(((channel, notice_state), u64::try_from(count).unwrap_or(0)));
            }
        }
        Ok::<_, rusqlite::Error>(counts)
    })
    .await;
    match counted {
        Ok(Ok(counts)) => counts,
        Ok(Err(error)) => {
            tracing::warn!(%error, "metrics: cannot count the outbox");
            Vec::new()
        }
        Err(_) => Vec::new(),
    }
}

/// The worker series of the text exposition: each worker's handled position, and the
/// notices pending and dead.
pub fn render_workers(
    out: &mut String,
    workers: &[(String, u64)],
    notices: &[((&'static str, &'static str), u64)],
) {
    let _ = writeln!(out, "# HELP custode_worker_handled_position Position each worker of this process has handled.\n# TYPE custode_worker_handled_position gauge");
    for (name, position) in workers {
        let _ = writeln!(
            out,
            "custode_worker_handled_position{{worker=\"{name}\"}} {position}"
        );
    }
    if !notices.is_empty() {
        let _ = writeln!(out, "# HELP custode_notices Notices waiting to be delivered (pending) and those that exhausted their attempts (dead), per channel.\n# TYPE custode_notices gauge");
        for ((channel, notice_state), count) in notices {
            let _ = writeln!(
                out,
                "custode_notices{{channel=\"{channel}\",state=\"{notice_state}\"}} {count}"
            );
        }
    }
}

/// The exposition's answer: its text with its content type.
pub fn exposition(out: String) -> Response {
    let mut response = out.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    let mut out = String::new();
    let times = state.log.times();
    let series: [(&str, &str, &str, u64); 6] = [
        (
            "custode_log_head_position",
            "gauge",
            "Position of the last event in the log.",
            state.log.head(),
        ),
        (
            "custode_read_models_applied_position",
            "gauge",
            "Position the read models of this process have applied (all but the access history, which may trail them).",
            *state.applied.borrow(),
        ),
        (
            "custode_access_history_applied_position",
            "gauge",
            "Position every read model of this process, the access history included, has applied.",
            *state.history_applied.borrow(),
        ),
        (
            "custode_log_commits_total",
            "counter",
            "Transactions the log writer committed.",
            times.commits,
        ),
        (
            "custode_log_commands_total",
            "counter",
            "Commands the log writer appended (group commit puts many in one transaction).",
            times.commands,
        ),
        (
            "custode_log_syncs_total",
            "counter",
            "Syncs of the log's write-ahead file: one for every group of commits synced together.",
            times.syncs,
        ),
    ];
    for (name, kind, help, value) in series {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
    for (name, help, value) in [
        (
            "custode_log_sync_seconds_total",
            "Time the syncs of the log's write-ahead file took: the disk's share of every command's wait.",
            times.sync,
        ),
        (
            "custode_log_commit_seconds_total",
            "Time the log writer spent in SQLite's commits: page writes to the write-ahead file, and its checkpoints into the database file.",
            times.commit,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {:.6}",
            value.as_secs_f64()
        );
    }
    let workers: Vec<(String, u64)> = state
        .workers
        .iter()
        .map(|w| (w.name.clone(), *w.applied().borrow()))
        .collect();
    // NT-3: notices waiting for their transport (an SMTP server that refuses, an SMS gateway
    // that times out) and dead letters, per channel, from this process's worker store.
    let notices = notice_counts(&state).await;
    render_workers(&mut out, &workers, &notices);
    if let Some(relayed) = &state.relayed {
        let _ = writeln!(
            out,
            "# HELP custode_relay_published_position Position the relay has published to JetStream.\n# TYPE custode_relay_published_position gauge\ncustode_relay_published_position {}",
            *relayed.borrow()
        );
    }
    out.push_str(&state.metrics.render_requests());
    exposition(out)
}
