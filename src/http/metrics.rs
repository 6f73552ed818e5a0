//! Prometheus `/metrics` in the text exposition format: requests by route, method and status
//! with their total time, the log's head and group-commit counters, and how far the read
//! models of this process have got. Written by hand: a handful of series needs no library.

use crate::app::AppState;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;
use std::fmt::Write;
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
}

impl HttpMetrics {
    pub fn observe(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        if let Ok(mut requests) = self.requests.lock() {
            let entry = requests
                .entry((route.to_string(), method.to_string(), status))
                .or_insert((0, 0.0));
            entry.0 += 1;
            entry.1 += elapsed.as_secs_f64();
        }
    }
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    let mut out = String::new();
    let (commits, commands) = state.log.stats();
    let series: [(&str, &str, &str, u64); 4] = [
        (
            "custode_log_head_position",
            "gauge",
            "Position of the last event in the log.",
            state.log.head(),
        ),
        (
            "custode_read_models_applied_position",
            "gauge",
            "Position the read models of this process have applied.",
            *state.applied.borrow(),
        ),
        (
            "custode_log_commits_total",
            "counter",
            "Transactions the log writer committed.",
            commits,
        ),
        (
            "custode_log_commands_total",
            "counter",
            "Commands the log writer appended (group commit puts many in one transaction).",
            commands,
        ),
    ];
    for (name, kind, help, value) in series {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
    let _ = writeln!(out, "# HELP custode_worker_handled_position Position each worker of this process has handled.\n# TYPE custode_worker_handled_position gauge");
    for worker in &state.workers {
        let _ = writeln!(
            out,
            "custode_worker_handled_position{{worker=\"{}\"}} {}",
            worker.name,
            *worker.applied().borrow()
        );
    }
    if let Some(relayed) = &state.relayed {
        let _ = writeln!(
            out,
            "# HELP custode_relay_published_position Position the relay has published to JetStream.\n# TYPE custode_relay_published_position gauge\ncustode_relay_published_position {}",
            *relayed.borrow()
        );
    }
    let _ = writeln!(out, "# HELP custode_http_requests_total HTTP requests answered.\n# TYPE custode_http_requests_total counter");
    let requests = state
        .metrics
        .requests
        .lock()
        .map(|r| r.clone())
        .unwrap_or_default();
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
    let mut response = out.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}
