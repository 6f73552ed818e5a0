//! WEB-4: the pages in a real browser. `custode serve` (the binary) runs on a fresh data dir;
//! `tests/browser/pages.py` drives headless Chromium through Playwright: the mailed recovery
//! link → a new password → the next login, with and without JavaScript, by keyboard, at 360
//! pixels, an axe-core audit of each page, and a form from another origin refused.
//! `./scripts/test` installs Chromium, Playwright and axe-core when missing.

use crate::helpers::{repo_path, OPERATOR_KEY};
use crate::processes::serve;

fn tool(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run ./scripts/test, which installs the browser tools")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mailed_link_journey_works_in_a_real_browser() {
    let python = tool("CUSTODE_TEST_PYTHON");
    let chromium = tool("CUSTODE_TEST_CHROMIUM");
    let axe = tool("CUSTODE_TEST_AXE");
    let dir = tempfile::tempdir().unwrap();
    // Many logins and recoveries from one address in a minute: SEC-2's per-address windows are
    // widened (the rules themselves are the API's, tested there).
    let settings = dir.path().join("custode.toml");
    std::fs::write(
        &settings,
        "[limits]\nlogin_per_address_per_minute = 1000\nrecovery_starts_per_address_per_minute = 1000\nchecks_per_address_per_minute = 1000\n",
    )
    .unwrap();
    let served = serve(dir.path(), &["--config", settings.to_str().unwrap()]).await;
    let (base, data_dir) = (served.base.clone(), dir.path().to_path_buf());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&python)
            .arg(repo_path("tests/browser/pages.py"))
            .env("CUSTODE_BASE", base)
            .env("CUSTODE_DATA_DIR", data_dir)
            .env("CUSTODE_OPERATOR_KEY", OPERATOR_KEY)
            .env("CUSTODE_CHROMIUM", chromium)
            .env("CUSTODE_AXE", axe)
            .output()
            .expect("python runs")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "the browser journeys failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    drop(served);
}
