//! Issue 22, crash safety: concurrent commands through HTTP against the real binary, a SIGKILL
//! at a random point in each round, a restart; then every acknowledged command is in the log,
//! the hash chain verifies, the read models equal a replay of the log, and every notice went out
//! exactly once. The test command runs a few rounds; `CUSTODE_CRASH_ROUNDS=50 cargo nextest run
//! -E 'test(crash::)'` runs the long version (the seed is printed; `CUSTODE_CRASH_SEED` replays
//! one).

use crate::helpers::OPERATOR_KEY;
use crate::processes::{eventually, maildir, run_custode_ok, serve};
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const WRITERS: usize = 4;

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

fn replayed_read_models(data_dir: &Path, head: u64) -> Vec<String> {
    let into = tempfile::tempdir().unwrap();
    let target = into.path().to_str().unwrap();
    run_custode_ok(
        data_dir,
        &["replay", "--until", &head.to_string(), "--into", target],
    );
    custode::scenario::read_models(into.path()).unwrap()
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
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let rounds = rounds();
    for round in 0..rounds {
        let served = serve(dir.path(), &args).await;
        let mut writers = Vec::new();
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
    let mut last = (0, Vec::new(), Vec::new());
    let mut equal = false;
    for _ in 0..40 {
        let head = log_head(dir.path());
        let live = custode::scenario::read_models(dir.path()).unwrap();
        let replayed = replayed_read_models(dir.path(), head);
        if live == replayed && log_head(dir.path()) == head {
            equal = true;
            break;
        }
        last = (head, live, replayed);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        equal,
        "the read models differ from a replay at {}: {} rows live, {} replayed",
        last.0,
        last.1.len(),
        last.2.len()
    );
    drop(served);

    // The chain verifies, from the first event to the head.
    run_custode_ok(dir.path(), &["audit", "verify"]);
    println!(
        "{rounds} rounds, {} acknowledged openings, head {}",
        acked.len(),
        log_head(dir.path())
    );
}
