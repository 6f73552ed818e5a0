use super::*;
use serde_json::json;

fn meta() -> Metadata {
    Metadata {
        actor: Actor::system(),
        correlation_id: Uuid::now_v7(),
        causation_id: Uuid::now_v7(),
        occurred_at: Utc::now(),
    }
}

fn event(n: u64) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "Tested".into(),
        schema_version: 1,
        payload: json!({ "n": n, "text": "è" }),
    }
}

fn one(stream: &str, expected: u64, n: u64) -> Vec<StreamAppend> {
    vec![StreamAppend {
        stream: stream.into(),
        expected_version: expected,
        events: vec![event(n)],
    }]
}

fn open_temp() -> (tempfile::TempDir, EventLog) {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(&dir.path().join("events.db"), &LogOptions::default()).unwrap();
    (dir, log)
}

#[tokio::test]
async fn appends_get_gap_free_positions_and_per_stream_versions() {
    let (_dir, log) = open_temp();
    log.append(one("a-1", 0, 1), meta()).await.unwrap();
    log.append(one("b-1", 0, 2), meta()).await.unwrap();
    let third = log.append(one("a-1", 1, 3), meta()).await.unwrap();
    assert_eq!((third[0].position, third[0].version), (3, 2));
    assert_eq!(log.head(), 3);
    let a = log.read_stream("a-1").await.unwrap();
    assert_eq!(a.iter().map(|e| e.version).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(a[1].payload, json!({ "n": 3, "text": "è" }));
}

#[tokio::test]
async fn a_stale_expected_version_conflicts_and_appends_nothing() {
    let (_dir, log) = open_temp();
    log.append(one("a-1", 0, 1), meta()).await.unwrap();
    let err = log.append(one("a-1", 0, 2), meta()).await.unwrap_err();
    assert_eq!(
        err,
        LogError::Conflict {
            stream: "a-1".into(),
            expected: 0,
            actual: 1
        }
    );
    assert_eq!(log.head(), 1);
    // The next append takes the next position: the failed one left no gap.
    let next = log.append(one("b-1", 0, 3), meta()).await.unwrap();
    assert_eq!(next[0].position, 2);
}

#[tokio::test]
async fn a_multi_stream_append_is_all_or_nothing() {
    let (_dir, log) = open_temp();
    log.append(one("taken-1", 0, 1), meta()).await.unwrap();
    let mut both = one("fresh-1", 0, 2);
    both.extend(one("taken-1", 0, 3));
    assert!(matches!(
        log.append(both, meta()).await,
        Err(LogError::Conflict { .. })
    ));
    assert!(log.read_stream("fresh-1").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_are_grouped_and_a_conflict_spoils_no_neighbour() {
    let (_dir, log) = open_temp();
    let mut tasks = Vec::new();
    for w in 0..8u64 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50u64 {
                log.append(one(&format!("w-{w}"), i, i), meta())
                    .await
                    .unwrap();
                // Every writer also tries a stale append now and then; it must fail alone.
                if i % 10 == 0 {
                    assert!(log
                        .append(one(&format!("w-{w}"), 0, 99), meta())
                        .await
                        .is_err());
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(log.head(), 400);
    let all = log.read_from_blocking(0, 1000).unwrap();
    assert_eq!(
        all.iter().map(|e| e.position).collect::<Vec<_>>(),
        (1..=400).collect::<Vec<_>>()
    );
    assert_eq!(log.verify_chain_blocking().unwrap().first_mismatch, None);
}

#[tokio::test]
async fn the_chain_survives_a_reopen_and_names_the_first_tampered_event() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    {
        let log = EventLog::open(&path, &LogOptions::default()).unwrap();
        for n in 0..3 {
            log.append(one(&format!("s-{n}"), 0, n), meta())
                .await
                .unwrap();
        }
    }
    let log = EventLog::open(&path, &LogOptions::default()).unwrap();
    assert_eq!(log.head(), 3);
    log.append(one("s-9", 0, 9), meta()).await.unwrap();
    let report = log.verify_chain_blocking().unwrap();
    assert_eq!((report.checked, report.first_mismatch), (4, None));

    // Someone with write access to the file edits event 2 behind the log's back.
    let raw = Connection::open(&path).unwrap();
    raw.execute_batch("DROP TRIGGER events_are_immutable")
        .unwrap();
    raw.execute(
        "UPDATE events SET payload = '{\"n\":42}' WHERE position = 2",
        [],
    )
    .unwrap();
    let report = log.verify_chain_blocking().unwrap();
    assert_eq!(report.checked, 1);
    assert_eq!(report.first_mismatch.unwrap().position, 2);
}

#[tokio::test]
async fn events_cannot_be_updated_or_deleted() {
    let (dir, log) = open_temp();
    log.append(one("a-1", 0, 1), meta()).await.unwrap();
    let raw = Connection::open(dir.path().join("events.db")).unwrap();
    assert!(raw.execute("UPDATE events SET type = 'X'", []).is_err());
    assert!(raw.execute("DELETE FROM events", []).is_err());
}

#[tokio::test]
async fn reading_from_a_position_pages_in_order_and_tailers_are_woken() {
    let (_dir, log) = open_temp();
    let mut head = log.subscribe();
    for n in 0..5 {
        log.append(one(&format!("p-{n}"), 0, n), meta())
            .await
            .unwrap();
    }
    head.wait_for(|h| *h >= 5).await.unwrap();
    let page = log.read_from(2, 2).await.unwrap();
    assert_eq!(
        page.iter().map(|e| e.position).collect::<Vec<_>>(),
        vec![3, 4]
    );
    assert!(log.read_from(5, 10).await.unwrap().is_empty());
}

#[test]
fn the_canonical_envelope_is_canonical_json_of_the_envelope() {
    let payload = to_canonical_string(&json!({ "b": [1, "x\"y"], "a": null }));
    let direct = canonical_envelope(
        7,
        "e-1",
        "account-1",
        3,
        "Tested",
        1,
        "2026-01-01T00:00:00.000000Z",
        "holder",
        Some("h\"1"),
        "c-1",
        "k-1",
        &payload,
    );
    let via_value = to_canonical_string(&json!({
        "position": 7, "event_id": "e-1", "stream": "account-1", "version": 3, "type": "Tested",
        "schema_version": 1, "occurred_at": "2026-01-01T00:00:00.000000Z",
        "actor": { "kind": "holder", "id": "h\"1" }, "correlation_id": "c-1", "causation_id": "k-1",
        "payload": { "b": [1, "x\"y"], "a": null },
    }));
    assert_eq!(direct, via_value);
    let anonymous = canonical_envelope(1, "e", "s", 1, "T", 1, "t", "system", None, "c", "k", "{}");
    assert!(anonymous.starts_with(r#"{"actor":{"id":null,"kind":"system"}"#));
}

#[tokio::test]
async fn the_wire_form_is_the_recorded_event_with_its_hash() {
    let (_dir, log) = open_temp();
    log.append(one("account-1", 0, 1), meta()).await.unwrap();
    let mut with_actor = meta();
    with_actor.actor = Actor::holder(Uuid::now_v7());
    log.append(one("account-1", 1, 2), with_actor)
        .await
        .unwrap();
    let recorded = log.read_from_blocking(0, 10).unwrap();
    let wire = log.read_wire_from_blocking(0, 10).unwrap();
    assert_eq!(wire.len(), 2);
    for (w, r) in wire.iter().zip(&recorded) {
        let parsed: RecordedEvent = serde_json::from_slice(&w.json).unwrap();
        assert_eq!(&parsed, r);
        assert_eq!(
            (w.position, w.category(), w.event_type.as_str()),
            (r.position, "account", "Tested")
        );
        assert_eq!(w.event_id, r.event_id.to_string());
    }
}

proptest::proptest! {
    #[test]
    fn canonical_strings_are_escaped_as_serde_json_escapes_them(s in "\\PC*|[\\x00-\\x7f]*") {
        proptest::prop_assert_eq!(json_string(&s), serde_json::Value::from(s.as_str()).to_string());
    }
}
