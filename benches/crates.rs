#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! Issue 22, item 7: the parts custode writes by hand against the maintained crates that do
//! the same job, on the same work, in one run (release build, the service's allocator):
//!
//! 1. SEC-2's per-address limiter (`http::limits::Limiter`) against governor's keyed limiter:
//!    one request counted under one of 10,000 addresses, from two threads.
//! 2. The request counters behind `/metrics` (`http::metrics::HttpMetrics::observe`) against
//!    the `metrics` crate's counter and gauge with the same labels, recorded by
//!    metrics-exporter-prometheus, from two threads; then rendering those series.
//! 3. The request deadline (the `bounded` middleware's `tokio::time::timeout`) against
//!    tower-http's `TimeoutLayer` (answering 503, as SEC-9 asks), around the same trivial
//!    route, called in process.
//!
//! `cargo bench --bench crates`. Prints ns per operation and the ratio crate / ours (below
//! 1.0 the crate is faster).

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use chrono::Utc;
use custode::http::limits::Limiter;
use custode::http::metrics::HttpMetrics;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;

const THREADS: usize = 2;
const ADDRESSES: usize = 10_000;
const HITS: usize = 1_000_000;
const OBSERVATIONS: usize = 1_000_000;
const REQUESTS: usize = 200_000;
/// Rounds of the deadline comparison.
const ROUNDS: usize = 5;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The routes, methods and statuses a busy node reports (a few dozen series).
const ROUTES: [&str; 12] = [
    "/v1/account",
    "/v1/sessions",
    "/v1/auth/app-password",
    "/v1/recovery",
    "/v1/account/password",
    "/v1/account/recovery-info",
    "/v1/account/app-passwords",
    "/v1/account/history",
    "/v1/admin/accounts",
    "/v1/admin/access-events",
    "/healthz",
    "/readyz",
];
const STATUSES: [u16; 4] = [200, 201, 401, 429];

/// Nanoseconds per call of `each(thread, i)`, `total` calls split over [`THREADS`] threads.
fn per_call(total: usize, each: impl Fn(usize, usize) + Sync) -> f64 {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let each = &each;
            scope.spawn(move || {
                for i in 0..total / THREADS {
                    each(t, i);
                }
            });
        }
    });
    started.elapsed().as_nanos() as f64 / total as f64
}

fn addresses() -> Vec<std::net::IpAddr> {
    (0..ADDRESSES)
        .map(|n| std::net::IpAddr::V4(std::net::Ipv4Addr::from(0xC000_0200 + n as u32)))
        .collect()
}

fn limiter() -> (f64, f64) {
    let addresses = addresses();
    // Far above any count reached here: both count every hit and refuse none.
    let limit = 1_000_000;
    let ours = Limiter::default();
    let ours_ns = per_call(HITS, |t, i| {
        let ip = addresses[(i * 7 + t * 13) % ADDRESSES];
        // The clock read per request, as the service does (governor reads its own per check).
        ours.per_address_minute("login", Some(ip), limit, Utc::now())
            .unwrap();
    });
    let governor =
        governor::RateLimiter::keyed(governor::Quota::per_minute(NonZeroU32::new(limit).unwrap()));
    let theirs_ns = per_call(HITS, |t, i| {
        let ip = addresses[(i * 7 + t * 13) % ADDRESSES];
        // The same key as ours: what the request is, and the address's group.
        let key = format!("login:{}", custode::http::limits::address_group(ip));
        assert!(governor.check_key(&key).is_ok());
    });
    (ours_ns, theirs_ns)
}

fn metrics() -> (f64, f64, f64, f64) {
    let series = |i: usize| {
        (
            ROUTES[i % ROUTES.len()],
            if i.is_multiple_of(3) { "POST" } else { "GET" },
            STATUSES[(i / ROUTES.len()) % STATUSES.len()],
        )
    };
    let ours = HttpMetrics::default();
    let ours_ns = per_call(OBSERVATIONS, |t, i| {
        let (route, method, status) = series(i + t);
        ours.observe(route, method, status, Duration::from_micros(350));
    });
    let started = Instant::now();
    let ours_text = ours.render_requests();
    let ours_render = started.elapsed().as_nanos() as f64;

    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).expect("the only recorder");
    let theirs_ns = per_call(OBSERVATIONS, |t, i| {
        let (route, method, status) = series(i + t);
        let labels = [
            ("route", route.to_string()),
            ("method", method.to_string()),
            ("status", status.to_string()),
        ];
        metrics::counter!("custode_http_requests_total", &labels).increment(1);
        metrics::gauge!("custode_http_request_seconds_total", &labels)
            .increment(Duration::from_micros(350).as_secs_f64());
    });
    let started = Instant::now();
    let theirs_text = handle.render();
    let theirs_render = started.elapsed().as_nanos() as f64;
    // Both counted every observation under the same series.
    let count = |text: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with("custode_http_requests_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    assert_eq!(count(&ours_text), OBSERVATIONS as u64);
    assert_eq!(count(&theirs_text), OBSERVATIONS as u64);
    (ours_ns, theirs_ns, ours_render, theirs_render)
}

fn busy() -> axum::response::Response {
    custode::http::problem::Problem::busy("the request took too long; try again shortly")
        .into_response()
}

fn timeouts() -> (f64, f64) {
    let rt = common::runtime();
    let limit = Duration::from_secs(10);
    let route = || Router::new().route("/healthz", get(|| async { "ok" }));
    let ours = route().layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| async move {
            match tokio::time::timeout(limit, next.run(request)).await {
                Ok(response) => response,
                Err(_) => busy(),
            }
        },
    ));
    let theirs = route()
        .layer(axum::middleware::map_response(
            |response: axum::response::Response| async move {
                if response.status() == StatusCode::SERVICE_UNAVAILABLE {
                    busy()
                } else {
                    response
                }
            },
        ))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            limit,
        ));
    let run = |router: Router| {
        let router = Arc::new(router);
        rt.block_on(async move {
            let started = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..THREADS * 4 {
                let router = router.clone();
                tasks.push(tokio::spawn(async move {
                    for _ in 0..REQUESTS / (THREADS * 4) {
                        let request = Request::get("/healthz").body(Body::empty()).unwrap();
                        let response = (*router).clone().oneshot(request).await.unwrap();
                        assert_eq!(response.status(), StatusCode::OK);
                    }
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
            started.elapsed().as_nanos() as f64 / REQUESTS as f64
        })
    };
    // Rounds alternate the three, after a warm-up; each side's cost is its median excess over
    // the bare route's run of the same round.
    run(route());
    let (mut ours_ns, mut theirs_ns) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let bare = run(route());
        ours_ns.push(run(ours.clone()) - bare);
        theirs_ns.push(run(theirs.clone()) - bare);
    }
    (median(ours_ns), median(theirs_ns))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("crates: bench");
        return;
    }
    println!("hand-written parts against maintained crates, {THREADS} threads, one run:");
    let (ours, theirs) = limiter();
    println!(
        "  per-address limiter, one hit among {ADDRESSES} addresses: ours {ours:.0} ns, governor {theirs:.0} ns ({:.2}x)",
        theirs / ours
    );
    let (ours, theirs, ours_render, theirs_render) = metrics();
    println!(
        "  request counters, one observation: ours {ours:.0} ns, metrics + metrics-exporter-prometheus {theirs:.0} ns ({:.2}x)",
        theirs / ours
    );
    println!(
        "  rendering those series: ours {:.1} µs, metrics-exporter-prometheus {:.1} µs ({:.2}x)",
        ours_render / 1000.0,
        theirs_render / 1000.0,
        theirs_render / ours_render
    );
    let (ours, theirs) = timeouts();
    println!(
        "  request deadline, added to a request (median of {ROUNDS} rounds over the bare route): ours {ours:.0} ns, tower-http TimeoutLayer (503 mapped to the problem) {theirs:.0} ns"
    );
}
