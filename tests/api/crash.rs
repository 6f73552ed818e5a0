//! Issue 22, crash safety: concurrent commands through HTTP against the real binary, a SIGKILL
//! at a random point in each round, a restart; then every acknowledged command is in the log,
//! the hash chain verifies, the read models equal a replay of the log, and every notice went out
//! exactly once. Beside the openings, reported accesses (AH-1, each durable before its `202`)
//! keep the access history's lane of the projector busy, and the log starts with a backlog of
//! them the read models have not applied: the first kills find the two lanes at different
//! positions (checked), and each restart resumes each lane from its own checkpoint. The test command runs a few rounds; `CUSTODE_CRASH_ROUNDS=50 cargo nextest run
//! -E 'test(crash::)'` runs the long version (the seed is printed; `CUSTODE_CRASH_SEED` replays
//! one).

use crate::helpers::OPERATOR_KEY;
use crate::processes::{eventually, maildir, metric_value, metrics_text, run_custode_ok, serve};
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const WRITERS: usize = 4;
/// Tasks reporting accesses beside the writers.
const REPORTERS: usize = 2;
/// The account whose accesses are reported.
const REPORTED: &str = "crash.storico@pec.example.it";
/// Reported accesses in the log before the first start.
const BACKLOG: usize = 60_000;

/// Whether the access history trails the other read models, from `/metrics`.
async fn lanes_apart(metrics: &str) -> bool {
    let text = metrics_text(metrics).await;
    matches!(
        (
            metric_value::<u64>(&text, "custode_read_models_applied_position"),
            metric_value::<u64>(&text, "custode_access_history_applied_position")
        ),
        (Some(core), Some(history)) if history < core
    )
}

fn rounds() -> usize {
    std::env::var("CUSTODE_CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(4)
}

/// The mails in the Maildir sink, by recipient.
fn mails_by_recipient(data_dir: &Path) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for path in maildir(data_dir) {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(to) = text.lines().find_map(|l| l.strip_prefix("To: ")) {
            *counts.entry(to.to_string()).or_insert(0) += 1;
        }
    }
    counts
}

pub fn replayed_read_models(data_dir: &Path, head: u64) -> Vec<String> {
    let into = tempfile::tempdir().unwrap();
    let target = into.path().to_str().unwrap();
    run_custode_ok(
        data_dir,
        &["replay", "--until", &head.to_string(), "--into", target],
    );
    custode::scenario::read_models(into.path()).unwrap()
}

/// Waits (10 s at most) until the read models of `data_dir` equal a replay of its log up to
/// its head, the projector having applied the whole of it.
async fn assert_read_models_equal_a_replay(data_dir: &Path) {
    let mut last = (0, Vec::new(), Vec::new());
    for _ in 0..40 {
        let head = log_head(data_dir);
        let live = custode::scenario::read_models(data_dir).unwrap();
        let replayed = replayed_read_models(data_dir, head);
        if live == replayed && log_head(data_dir) == head {
            return;
        }
        last = (head, live, replayed);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!(
        "the read models differ from a replay at {}: {} rows live, {} replayed",
        last.0,
        last.1.len(),
        last.2.len()
    );
}

fn log_head(data_dir: &Path) -> u64 {
    custode_commands::log::LogReader::open(&data_dir.join("events.db"))
        .unwrap()
        .head()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_commands_survive_sigkill_at_random_points() {
    let seed: u64 = std::env::var("CUSTODE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    println!("crash test seed {seed} (CUSTODE_CRASH_SEED replays it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join("custode.toml");
    std::fs::write(
        &settings,
        "[limits]\nlogin_per_address_per_minute = 100000\n",
    )
    .unwrap();
    let args = ["--config", settings.to_str().unwrap()];
    crate::helpers::seed_access_records(dir.path(), BACKLOG).await;
    let mut kills_with_lanes_apart = 0;
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let reports = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let rounds = rounds();
    for round in 0..rounds {
        let served = serve(dir.path(), &args).await;
        if round == 0 {
            let res = reqwest::Client::new()
                .post(format!("{}/v1/admin/accounts", served.base))
                .bearer_auth(OPERATOR_KEY)
                .json(&serde_json::json!({ "kind": "mailbox", "user_id": REPORTED }))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 201);
        }
        let mut writers = Vec::new();
        for r in 0..REPORTERS {
            let (base, reports) = (served.base.clone(), reports.clone());
            writers.push(tokio::spawn(async move {
                let http = reqwest::Client::new();
                for n in 0usize.. {
                    let sent = http
                        .post(format!("{base}/v1/admin/access-events"))
                        .bearer_auth(OPERATOR_KEY)
                        .json(&serde_json::json!({
                            "user_id": REPORTED,
                            "service": format!("servizio-{r}"),
                            "outcome": if n % 5 == 0 { "failure" } else { "success" },
                            "client_ip": "203.0.113.9",
                            "at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                        }))
                        .send()
                        .await;
                    match sent {
                        Ok(res) if res.status() == 202 => {
                            reports.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        Ok(res) => assert!(
                            res.status().is_server_error(),
                            "a report refused: {}",
                            res.status()
                        ),
                        Err(_) => break,
                    }
                }
            }));
        }
        for _ in 0..WRITERS {
            let (base, acked, next) = (served.base.clone(), acked.clone(), next.clone());
            writers.push(tokio::spawn(async move {
                let http = reqwest::Client::new();
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let user = format!("crash{n}@pec.example.it");
                    let sent = http
                        .post(format!("{base}/v1/admin/accounts"))
                        .bearer_auth(OPERATOR_KEY)
                        .json(&serde_json::json!({
                            "kind": "mailbox",
                            "user_id": user,
                            "contact_email": format!("crash{n}@example.org"),
                        }))
                        .send()
                        .await;
                    match sent {
                        Ok(res) if res.status() == 201 => acked.lock().unwrap().push(user),
                        Ok(res) => assert!(
                            res.status().is_server_error(),
                            "an opening refused: {}",
                            res.status()
                        ),
                        // The service is gone: this round is over.
                        Err(_) => break,
                    }
                }
            }));
        }
        let wait = rng.gen_range(150..900);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        if lanes_apart(&served.metrics).await {
            kills_with_lanes_apart += 1;
        }
        served.kill_9();
        for writer in writers {
            writer.await.unwrap();
        }
        println!(
            "round {round}: killed after {wait} ms, {} acknowledged so far",
            acked.lock().unwrap().len()
        );
    }
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty(), "no command was acknowledged");
    let reports = reports.load(std::sync::atomic::Ordering::SeqCst);
    assert!(reports > 0, "no access was reported");
    assert!(
        kills_with_lanes_apart > 0,
        "no kill found the access history behind the other read models"
    );

    // A last start: it resumes where each part stopped.
    let served = serve(dir.path(), &args).await;
    let http = reqwest::Client::new();
    for user in &acked {
        let res = http
            .get(format!("{}/v1/admin/accounts/{user}", served.base))
            .bearer_auth(OPERATOR_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "acknowledged, then lost: {user}");
    }
    // Every acknowledged opening mailed its temporary password, once; nothing went twice.
    eventually(Duration::from_secs(30), "every acknowledged notice", || {
        let counts = mails_by_recipient(dir.path());
        acked.iter().all(|user| {
            let to = user.replace("@pec.example.it", "@example.org");
            counts.get(&to).is_some_and(|n| *n >= 1)
        })
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let twice: Vec<_> = mails_by_recipient(dir.path())
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .collect();
    assert!(twice.is_empty(), "notices sent more than once: {twice:?}");

    // The read models equal a replay of the log (once the projector has the whole of it).
    assert_read_models_equal_a_replay(dir.path()).await;
    drop(served);

    // Every acknowledged report is in the log (a report cut off by the kill may be there too).
    let recorded = custode_commands::log::LogReader::open(&dir.path().join("events.db"))
        .unwrap()
        .read_from(0, 10_000_000)
        .unwrap()
        .iter()
        .filter(|e| e.event_type == "ServiceAccessReported")
        .count();
    assert!(
        recorded >= BACKLOG + reports,
        "{reports} reports acknowledged, {} in the log beside the backlog",
        recorded.saturating_sub(BACKLOG)
    );

    // The chain verifies, from the first event to the head.
    run_custode_ok(dir.path(), &["audit", "verify"]);
    println!(
        "{rounds} rounds ({kills_with_lanes_apart} killed with the lanes apart), {} acknowledged openings, {reports} acknowledged reports, head {}",
        acked.len(),
        log_head(dir.path())
    );
}

/// The log loses its end after the read models and the workers had it: a power cut with
/// `log.synchronous = normal` (the last commits never synced, the read models written after
/// them did), or an older copy of the log put back beside newer derived state. Here: a copy of
/// the log taken after the first opening is put back after the second. At the next start the
/// read models and the mailer stand past the log's head; new events take those positions again
/// and must not be passed over as applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_models_and_workers_past_a_lost_end_of_the_log_are_mended_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let open = |base: String, name: &'static str| {
        let http = http.clone();
        async move {
            let res = http
                .post(format!("{base}/v1/admin/accounts"))
                .bearer_auth(OPERATOR_KEY)
                .json(&serde_json::json!({
                    "kind": "mailbox",
                    "user_id": format!("{name}@pec.example.it"),
                    "contact_email": format!("{name}@example.org"),
                }))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 201, "opening {name}");
        }
    };
    let status = |base: String, name: &'static str| {
        let http = http.clone();
        async move {
            http.get(format!("{base}/v1/admin/accounts/{name}@pec.example.it"))
                .bearer_auth(OPERATOR_KEY)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let mailed =
        |name: &str| mails_by_recipient(dir.path()).contains_key(&format!("{name}@example.org"));

    let served = serve(dir.path(), &[]).await;
    open(served.base.clone(), "prima").await;
    eventually(Duration::from_secs(30), "the first opening's mail", || {
        mailed("prima")
    })
    .await;
    served.kill_9();
    let kept = dir.path().join("kept");
    std::fs::create_dir(&kept).unwrap();
    for file in ["events.db", "events.db-wal"] {
        if dir.path().join(file).exists() {
            std::fs::copy(dir.path().join(file), kept.join(file)).unwrap();
        }
    }
    let cut_head = log_head(dir.path());

    let served = serve(dir.path(), &[]).await;
    open(served.base.clone(), "seconda").await;
    eventually(Duration::from_secs(30), "the second opening's mail", || {
        mailed("seconda")
    })
    .await;
    served.kill_9();
    assert!(log_head(dir.path()) > cut_head);
    // The log goes back to the copy: the second opening is gone from it, not from the rest.
    for file in ["events.db", "events.db-wal", "events.db-shm"] {
        let _ = std::fs::remove_file(dir.path().join(file));
        if kept.join(file).exists() {
            std::fs::copy(kept.join(file), dir.path().join(file)).unwrap();
        }
    }
    assert_eq!(log_head(dir.path()), cut_head);

    let served = serve(dir.path(), &[]).await;
    // The second opening is not in the log, so not on the pages either; the third, which takes
    // its positions, is on both, and its notice goes out.
    open(served.base.clone(), "terza").await;
    assert_eq!(status(served.base.clone(), "terza").await, 200);
    assert_eq!(status(served.base.clone(), "prima").await, 200);
    assert_eq!(status(served.base.clone(), "seconda").await, 404);
    eventually(Duration::from_secs(30), "the third opening's mail", || {
        mailed("terza")
    })
    .await;
    // The user id the log lost is free again.
    open(served.base.clone(), "seconda").await;
    assert_read_models_equal_a_replay(dir.path()).await;
    drop(served);
    run_custode_ok(dir.path(), &["audit", "verify"]);
}
