//! Issue 22, outages: the disk fills up under the log. The service runs with a file-size limit
//! (`ulimit -f`, SIGXFSZ ignored, so a write past it fails with EFBIG as on a full disk); commands
//! past it are refused with a clear problem and nothing acknowledged is lost; once the limit is
//! lifted (`prlimit`, as an operator frees space) the same service takes commands again by
//! itself, and its log verifies.

use crate::helpers::OPERATOR_KEY;
use crate::processes::{free_port, run_custode_ok, BIN};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

async fn open(client: &reqwest::Client, base: &str, n: usize) -> Option<reqwest::StatusCode> {
    client
        .post(format!("{base}/v1/admin/accounts"))
        .bearer_auth(OPERATOR_KEY)
        .json(&serde_json::json!({
            "kind": "mailbox",
            "user_id": format!("pieno{n}@pec.example.it"),
            "contact_email": format!("pieno{n}@example.org"),
            "name": "x".repeat(150),
        }))
        .send()
        .await
        .ok()
        .map(|r| r.status())
}

/// The service's process, killed however the test ends (a failed assertion included).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_commands_clearly_and_recovers_by_itself() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        panic!("prlimit (util-linux) is needed for the disk-full test");
    }
    let dir = tempfile::tempdir().unwrap();
    // Commands wait little for read models that cannot be written (the default is 5 s each).
    std::fs::write(
        dir.path().join("custode.toml"),
        "[http]\nread_wait_ms = 100\n",
    )
    .unwrap();
    let port = free_port();
    // 3 MiB per file: the fresh data dir fits, a few hundred accounts do not.
    let script = format!(
        "trap '' XFSZ; ulimit -S -f 6144; exec {BIN} serve --listen 127.0.0.1:{port} --metrics-listen 127.0.0.1:0"
    );
    let child = Command::new("sh")
        .args(["-c", &script])
        .env("CUSTODE_DATA_DIR", dir.path())
        .env("CUSTODE_OPERATOR_KEY", OPERATOR_KEY)
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let child = Killed(child);
    let base = format!("http://127.0.0.1:{port}");
    crate::processes::wait_until_up(&base).await;
    let client = reqwest::Client::new();
    let mut acked = Vec::new();
    let mut refused = None;
    for n in 0..20_000 {
        match open(&client, &base, n).await {
            Some(s) if s == 201 => acked.push(n),
            Some(s) => {
                refused = Some((n, s));
                break;
            }
            None => panic!(
                "the service fell over when the disk filled (after {} openings)",
                acked.len()
            ),
        }
    }
    let (first_refused, status) = refused.expect("the file-size limit was never reached");
    assert_eq!(
        status, 503,
        "a full disk is the service's trouble, to retry later"
    );
    // It goes on refusing clearly, and answering health checks.
    let res = client
        .post(format!("{base}/v1/admin/accounts"))
        .bearer_auth(OPERATOR_KEY)
        .json(&serde_json::json!({ "kind": "mailbox", "user_id": "ancora@pec.example.it", "name": "x".repeat(150) }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    assert_eq!(
        reqwest::get(format!("{base}/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );

    // Space comes back: the same process takes commands again.
    crate::processes::succeeded(
        "prlimit",
        Command::new("prlimit")
            .args(["--pid", &child.0.id().to_string(), "--fsize=unlimited:"])
            .output()
            .unwrap(),
    );
    let recovered = Instant::now();
    let mut n = first_refused + 1_000_000;
    loop {
        if open(&client, &base, n).await == Some(reqwest::StatusCode::CREATED) {
            break;
        }
        assert!(
            recovered.elapsed() < Duration::from_secs(30),
            "the service did not recover once space came back"
        );
        n += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The read models catch up by themselves (the projector retried meanwhile): every
    // acknowledged account is there.
    for n in &acked {
        let found = Instant::now();
        loop {
            let res = client
                .get(format!("{base}/v1/admin/accounts/pieno{n}@pec.example.it"))
                .bearer_auth(OPERATOR_KEY)
                .send()
                .await
                .unwrap();
            if res.status() == 200 {
                break;
            }
            assert!(
                found.elapsed() < Duration::from_secs(30),
                "pieno{n} was acknowledged, then lost"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    drop(child);
    run_custode_ok(dir.path(), &["audit", "verify"]);
    println!(
        "{} openings before the disk filled; refused at {first_refused} with {status}",
        acked.len()
    );
}
