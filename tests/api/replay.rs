//! AU-3: read models rebuilt from the log equal the live ones; replay refuses a data directory
//! that a running service holds.

use crate::helpers::TestApp;
use custode::app::{replay, StartError, READ_MODELS_FILE};
use serde_json::json;

pub fn dump(data_dir: &std::path::Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(data_dir.join(READ_MODELS_FILE)).unwrap();
    custode_projections::dump(&conn).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuilt_read_models_equal_the_live_ones() {
    let app = TestApp::spawn().await;
    let (token, _) = app.ready_mailbox("replay@pec.example.it").await;
    app.open_mailbox("secondo@pec.example.it").await;
    let res = app
        .request(
            reqwest::Method::PUT,
            "/v1/account/recovery-info",
            Some(&token),
            Some(json!({ "mobile": "+393331112222" })),
        )
        .await;
    assert!(res.status().is_success());
    let held = app.data_dir.clone();
    let refused =
        tokio::task::spawn_blocking(move || replay(&held, &Default::default(), &mut |_, _| {}))
            .await
            .unwrap();
    assert!(matches!(refused, Err(StartError::Locked(_))));

    let (data_dir, dir, _) = app.stop().await;
    let live = dump(&data_dir);
    assert!(live.iter().any(|row| row.contains("replay@pec.example.it")));
    let dir_for_replay = data_dir.clone();
    let (position, progress) = tokio::task::spawn_blocking(move || {
        let mut progress = Vec::new();
        let position = replay(&dir_for_replay, &Default::default(), &mut |done, total| {
            progress.push((done, total))
        })
        .unwrap();
        (position, progress)
    })
    .await
    .unwrap();
    assert!(position > 0);
    assert_eq!(progress.last(), Some(&(position, position)));
    assert_eq!(dump(&data_dir), live);
    drop(dir);
}
