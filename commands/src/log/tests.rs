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
async fn a_job_appending_twice_to_one_stream_is_checked_in_order_and_spoils_no_neighbour() {
    let (_dir, log) = open_temp();
    log.append(one("neighbour-1", 0, 0), meta()).await.unwrap();
    // Neighbours keep appending while the jobs below are in the writer's groups.
    let neighbour = {
        let log = log.clone();
        tokio::spawn(async move {
            for i in 1..=100u64 {
                log.append(one("neighbour-1", i, i), meta()).await.unwrap();
            }
        })
    };
    for round in 0..20u64 {
        let stream = format!("twice-{round}");
        // The second append expects the version the first leaves: both are written.
        let mut twice = one(&stream, 0, 1);
        twice.extend(one(&stream, 1, 2));
        let written = log.append(twice, meta()).await.unwrap();
        assert_eq!(
            written.iter().map(|e| e.version).collect::<Vec<_>>(),
            vec![1, 2]
        );
        // Both expecting the stream's start: the job is refused whole, and alone.
        let stale = format!("stale-{round}");
        let mut both_at_start = one(&stale, 0, 1);
        both_at_start.extend(one(&stale, 0, 2));
        assert_eq!(
            log.append(both_at_start, meta()).await.unwrap_err(),
            LogError::Conflict {
                stream: stale.clone(),
                expected: 0,
                actual: 1
            }
        );
        assert!(log.read_stream(&stale).await.unwrap().is_empty());
        let again = log.append(one(&stream, 2, 3), meta()).await.unwrap();
        assert_eq!(again[0].version, 3);
    }
    neighbour.await.unwrap();
    assert_eq!(log.read_stream("neighbour-1").await.unwrap().len(), 101);
    assert_eq!(log.verify_chain_blocking().unwrap().first_mismatch, None);
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

    // A column stored as another type than the writer's (the same bytes as a blob) is named
    // too, rather than stopping the walk with a storage error.
    raw.execute(
        "UPDATE events SET payload = CAST(payload AS BLOB) WHERE position = 1",
        [],
    )
    .unwrap();
    let report = log.verify_chain_blocking().unwrap();
    let mismatch = report.first_mismatch.unwrap();
    assert_eq!((report.checked, mismatch.position), (0, 1));
    assert!(
        mismatch.reason.contains("not stored as the log writes"),
        "{}",
        mismatch.reason
    );
}

#[tokio::test]
async fn nothing_past_the_head_its_disk_has_confirmed_is_read_or_decided_on() {
    let (dir, log) = open_temp();
    for n in 0..3 {
        log.append(one("a-1", n, n), meta()).await.unwrap();
    }
    assert_eq!(log.head(), 3);
    // A commit whose sync is still under way: in the file, past the head.
    let raw = rusqlite::Connection::open(dir.path().join("events.db")).unwrap();
    raw.execute(
        "INSERT INTO events SELECT position + 1, ?1, stream, version + 1, type, \
         schema_version, occurred_at, actor_kind, actor_id, correlation_id, causation_id, payload, \
         hash FROM events WHERE position = 3",
        [Uuid::now_v7().to_string()],
    )
    .unwrap();
    assert_eq!(log.head(), 3);
    assert_eq!(log.durable_limit(0, 10), 3);
    assert_eq!(log.durable_limit(1, 1), 1);
    assert_eq!(log.durable_limit(3, 10), 0);
    // The tailing readers (projector, relay, workers) stop at the head, from memory or file.
    assert_eq!(log.read_from_blocking(0, 100).unwrap().len(), 3);
    assert!(log.read_from_blocking(3, 100).unwrap().is_empty());
    assert_eq!(log.read_wire_from_blocking(1, 100).unwrap().len(), 2);
    assert!(log.read_wire_from_blocking(3, 100).unwrap().is_empty());
    // A handler's reads wait for the sync rather than decide on what it may lose.
    let wait = std::time::Duration::from_millis(300);
    assert!(tokio::time::timeout(wait, log.read_stream("a-1"))
        .await
        .is_err());
    assert!(tokio::time::timeout(wait, log.read_stream_tail("a-1", 10))
        .await
        .is_err());
    // What is on disk is read at once.
    let before = tokio::time::timeout(wait, log.read_stream_tail_before("a-1", 4, 10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(before.len(), 3);
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
    let origin = |actor_kind, actor_id| Origin {
        event_id: "e-1",
        occurred_at: "2026-01-01T00:00:00.000000Z",
        actor_kind,
        actor_id,
        correlation_id: "c-1",
        causation_id: "k-1",
    };
    let direct = canonical_envelope(
        &origin("holder", Some("h\"1")),
        &payload,
        7,
        1,
        "account-1",
        "Tested",
        3,
    );
    let via_value = to_canonical_string(&json!({
        "position": 7, "event_id": "e-1", "stream": "account-1", "version": 3, "type": "Tested",
        "schema_version": 1, "occurred_at": "2026-01-01T00:00:00.000000Z",
        "actor": { "kind": "holder", "id": "h\"1" }, "correlation_id": "c-1", "causation_id": "k-1",
        "payload": { "b": [1, "x\"y"], "a": null },
    }));
    assert_eq!(direct, via_value);
    let anonymous = canonical_envelope(&origin("system", None), "{}", 1, 1, "s", "T", 1);
    assert!(anonymous.starts_with(r#"{"actor":{"id":null,"kind":"system"}"#));
}

mod prepared {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The writer hashes an event's envelope in pieces around its position and version,
        /// never building it: the hash is the chain hash of the whole envelope, whatever the
        /// stream, type, actor or payload hold (quotes, backslashes, control characters).
        #[test]
        fn the_hash_in_pieces_is_the_hash_of_the_whole_envelope(
            stream in "\\PC{0,20}",
            event_type in "[A-Za-z\"\\\u{1}]{0,12}",
            actor_id in prop::option::of("\\PC{0,12}"),
            text in "\\PC{0,30}",
            position in any::<u64>(),
            version in any::<u64>(),
            schema_version in any::<u32>(),
        ) {
            let meta = Metadata {
                actor: Actor { kind: custode_domain::ActorKind::Holder, id: actor_id },
                ..meta()
            };
            let described = Described::of(&meta);
            let event = NewEvent {
                event_id: Uuid::now_v7(),
                event_type,
                schema_version,
                payload: json!({ "text": text, "n": position }),
            };
            let prepared = Prepared::of(&stream, &event, &meta, &described);
            // Canonical JSON of the whole envelope, made another way: through a JSON value.
            let whole = to_canonical_string(&json!({
                "position": position, "event_id": event.event_id, "stream": stream,
                "version": version, "type": event.event_type, "schema_version": schema_version,
                "occurred_at": described.occurred_at,
                "actor": { "kind": meta.actor.kind.as_str(), "id": meta.actor.id },
                "correlation_id": meta.correlation_id, "causation_id": meta.causation_id,
                "payload": event.payload,
            }));
            prop_assert_eq!(prepared.payload(), to_canonical_string(&event.payload));
            prop_assert_eq!(
                prepared.chain_hash(GENESIS_HASH, position, version),
                chain_hash(GENESIS_HASH, &whole)
            );
        }
    }
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

fn typed(event_type: &str, payload: serde_json::Value) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: event_type.into(),
        schema_version: 1,
        payload,
    }
}

#[tokio::test]
async fn the_wire_form_has_no_password_or_answer_hash_and_keeps_the_chain_hash_sec_9() {
    let (_dir, log) = open_temp();
    let phc = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";
    log.append(
        vec![StreamAppend {
            stream: "account-1".into(),
            expected_version: 0,
            events: vec![
                typed("PasswordChanged", json!({ "password_hash": phc })),
                typed(
                    "RecoveryInfoSet",
                    json!({ "email": "r@example.it", "security_answer_hash": phc }),
                ),
                typed(
                    "SessionStarted",
                    json!({ "token_hash": "ab12", "note": "password_hash" }),
                ),
                typed(
                    "TwoFactorEnabled",
                    json!({ "channel": "app", "sealed_secret": { "key_id": "service-1", "nonce": "bm9uY2U=", "ciphertext": "c2VjcmV0" } }),
                ),
            ],
        }],
        meta(),
    )
    .await
    .unwrap();
    let recorded = log.read_from_blocking(0, 10).unwrap();
    let wire = log.read_wire_from_blocking(0, 10).unwrap();
    let text: Vec<&str> = wire
        .iter()
        .map(|w| std::str::from_utf8(&w.json).unwrap())
        .collect();
    assert!(text.iter().all(|t| !t.contains("$argon2")), "{text:?}");
    let parsed: Vec<RecordedEvent> = wire
        .iter()
        .map(|w| serde_json::from_slice(&w.json).unwrap())
        .collect();
    let removed = custode_domain::secret::REMOVED;
    assert_eq!(parsed[0].payload, json!({ "password_hash": removed }));
    assert_eq!(
        parsed[1].payload,
        json!({ "email": "r@example.it", "security_answer_hash": removed })
    );
    for (p, r) in parsed.iter().zip(&recorded) {
        assert_eq!(p.hash, r.hash, "the log's chain hash of the stored event");
        assert_eq!(
            (p.event_id, p.position, &p.event_type),
            (r.event_id, r.position, &r.event_type)
        );
    }
    assert_eq!(
        parsed[2], recorded[2],
        "an event with no verification data goes out as stored"
    );
    // AP-8: a second factor's sealed secret stays on the log host.
    assert_eq!(
        parsed[3].payload,
        json!({ "channel": "app", "sealed_secret": null })
    );
    assert_eq!(
        log.verify_chain_blocking().unwrap().first_mismatch,
        None,
        "the log itself is untouched"
    );
}

mod wire_properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever a payload holds, its wire form is the stored payload with each verification
        /// field's string replaced, and a payload with none is not re-encoded at all.
        #[test]
        fn the_wire_payload_is_the_stored_one_without_its_verification_data(
            fields in prop::collection::btree_map(
                prop_oneof![
                    Just("password_hash".to_string()),
                    Just("security_answer_hash".to_string()),
                    Just("token_hash".to_string()),
                    "[a-z_]{1,14}",
                ],
                prop_oneof![
                    "\\$argon2id\\$[a-zA-Z0-9+/=$,]{0,20}".prop_map(serde_json::Value::from),
                    "\\PC{0,12}".prop_map(serde_json::Value::from),
                    Just(serde_json::Value::Null),
                    any::<i64>().prop_map(serde_json::Value::from),
                ],
                0..6,
            )
        ) {
            let stored_value = serde_json::Value::Object(fields.into_iter().collect());
            let stored = to_canonical_string(&stored_value);
            let mut expected = stored_value.clone();
            let changed = custode_domain::secret::remove_verification_data(&mut expected);
            match wire_payload(&stored).unwrap() {
                None => prop_assert!(!changed),
                Some(wire) => {
                    prop_assert_eq!(serde_json::from_str::<serde_json::Value>(&wire).unwrap(), expected.clone());
                    prop_assert!(changed);
                    prop_assert_eq!(wire, to_canonical_string(&expected));
                }
            }
        }
    }
}

#[tokio::test]
async fn a_tailing_reader_gets_from_memory_exactly_what_the_file_holds() {
    let (_dir, log) = open_temp();
    for n in 0..(RECENT_KEPT as u64 + 50) {
        log.append(one(&format!("s-{}", n % 7), ANY_VERSION, n), meta())
            .await
            .unwrap();
    }
    // A conflict in a group leaves no gap in memory either.
    assert!(log.append(one("s-0", 1, 0), meta()).await.is_err());
    log.append(one("s-x", 0, 1), meta()).await.unwrap();
    let from_file = |position: u64, limit: usize| -> Vec<RecordedEvent> {
        log.stored_from(position, limit)
            .unwrap()
            .into_iter()
            .map(|s| s.into_event().unwrap())
            .collect()
    };
    let head = log.head();
    // Recent positions come from memory, older ones from the file; both read alike.
    for position in [head - 1, head - 10, head - 600, 10, 0] {
        assert_eq!(
            log.read_from_blocking(position, 512).unwrap(),
            from_file(position, 512),
            "after {position}"
        );
        assert_eq!(
            log.read_from(position, 512).await.unwrap(),
            from_file(position, 512)
        );
    }
    assert!(log.inner.recent.after(head - 5, 10).is_some());
    assert!(log.inner.recent.after(10, 10).is_none());
    assert!(log.read_from_blocking(head, 10).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_that_may_wait_share_commits_and_keep_versions_and_conflicts_exact() {
    let (dir, log) = open_temp();
    // Many records at once, as AP-7's recorder sends them, with plain commands among them.
    let mut tasks = Vec::new();
    for n in 0..200u64 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            if n % 50 == 0 {
                log.append(one(&format!("cmd-{n}"), 0, n), meta())
                    .await
                    .map(drop)
            } else {
                let mut appends = one("access-1", ANY_VERSION, n);
                appends[0].stream = format!("access-{}", n % 3);
                let ready = EventLog::ready(appends.remove(0), meta());
                log.append_ready_soon(vec![ready]).await
            }
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let (commits, jobs) = log.stats();
    assert_eq!(jobs, 200);
    assert!(commits < 200, "{commits} commits for 200 appends");
    // Versions stay gap-free per stream though the writer no longer reads them back.
    for s in 0..3 {
        let stream = log.read_stream(&format!("access-{s}")).await.unwrap();
        let versions: Vec<u64> = stream.iter().map(|e| e.version).collect();
        assert_eq!(versions, (1..=stream.len() as u64).collect::<Vec<_>>());
    }
    // An expected version is still checked against what was committed.
    let head = log.read_stream("access-0").await.unwrap().len() as u64;
    let err = log
        .append(one("access-0", head - 1, 1), meta())
        .await
        .unwrap_err();
    assert!(matches!(err, LogError::Conflict { actual, .. } if actual == head));
    log.append(one("access-0", head, 1), meta()).await.unwrap();
    // And a reopened log (nothing remembered) agrees with the file.
    drop(log);
    let log = EventLog::open(&dir.path().join("events.db"), &LogOptions::default()).unwrap();
    let err = log
        .append(one("access-0", head, 2), meta())
        .await
        .unwrap_err();
    assert!(matches!(err, LogError::Conflict { actual, .. } if actual == head + 1));
    assert_eq!(log.verify_chain_blocking().unwrap().first_mismatch, None);
}

#[test]
fn a_full_or_failing_disk_is_told_apart_from_other_storage_failures() {
    let failure = |code| {
        LogError::from(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(code),
            None,
        ))
    };
    assert!(matches!(
        failure(rusqlite::ffi::SQLITE_FULL),
        LogError::DiskUnavailable(_)
    ));
    assert!(matches!(
        failure(rusqlite::ffi::SQLITE_IOERR),
        LogError::DiskUnavailable(_)
    ));
    assert!(matches!(
        failure(rusqlite::ffi::SQLITE_CORRUPT),
        LogError::Store(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_appends_go_in_one_job_each_with_its_own_metadata() {
    let (_dir, log) = open_temp();
    log.append(one("cmd-1", 0, 0), meta()).await.unwrap();
    let start = Utc::now() - chrono::Duration::minutes(5);
    let metas: Vec<Metadata> = (0..6i64)
        .map(|n| Metadata {
            occurred_at: start + chrono::Duration::seconds(n),
            ..meta()
        })
        .collect();
    let ready = (0..6u64)
        .flat_map(|n| one(&format!("access-{}", n % 2), ANY_VERSION, n))
        .zip(metas.iter().cloned())
        .map(|(append, m)| EventLog::ready(append, m))
        .collect();
    let (_, jobs_before) = log.stats();
    log.append_ready_soon(ready).await.unwrap();
    let (_, jobs_after) = log.stats();
    assert_eq!(
        jobs_after - jobs_before,
        1,
        "one job for every ready append"
    );
    log.append_ready_soon(Vec::new()).await.unwrap();
    // One that expects a version is refused before anything is sent.
    let versioned = EventLog::ready(one("access-0", 3, 9).remove(0), meta());
    assert!(matches!(
        log.append_ready_soon(vec![versioned]).await,
        Err(LogError::Store(_))
    ));
    assert_eq!(log.head(), 7);
    // What a reader sees in the file: each event with its own time and correlation, versions
    // counting up per stream, the chain whole.
    let stored = log.reader().read_from(1, 100).unwrap();
    assert_eq!(stored.len(), 6);
    // The tailing readers get them from memory, the same as from the file.
    assert_eq!(log.read_from(1, 100).await.unwrap(), stored);
    for (n, (event, m)) in stored.iter().zip(&metas).enumerate() {
        assert_eq!(event.occurred_at, m.occurred_at.trunc_subsecs(6));
        assert_eq!(event.correlation_id, m.correlation_id);
        assert_eq!(event.causation_id, m.causation_id);
        assert_eq!(event.stream, format!("access-{}", n % 2));
        assert_eq!(event.version, n as u64 / 2 + 1);
        assert_eq!(event.payload["n"], json!(n));
    }
    let report = log.verify_chain_blocking().unwrap();
    assert_eq!((report.checked, report.first_mismatch), (7, None));
}

mod stored_times {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The reader's own parse of a stored time gives what chrono's RFC 3339 parser gives, for
        /// every time the writer can store (its one shape) and for near misses of that shape.
        #[test]
        fn a_stored_time_reads_as_chrono_reads_it(
            micros in -62_135_596_800_000_000i64..253_402_300_799_999_999i64,
            offset in prop_oneof![Just(None), (0usize..27).prop_map(Some)],
            byte in any::<u8>(),
        ) {
            let at = DateTime::from_timestamp_micros(micros).unwrap();
            let stored = at.to_rfc3339_opts(SecondsFormat::Micros, true);
            prop_assert_eq!(stored_time(&stored), Some(at));
            let mut bent = stored.into_bytes();
            if let Some(i) = offset {
                bent[i] = byte;
            }
            if let Ok(bent) = String::from_utf8(bent) {
                let chrono = DateTime::parse_from_rfc3339(&bent).ok().map(|t| t.with_timezone(&Utc));
                prop_assert_eq!(stored_time(&bent), chrono);
            }
        }
    }
}

#[test]
fn stored_times_outside_the_writers_shape_go_to_chrono() {
    for text in [
        "2026-11-23T10:00:00Z",
        "2026-11-23T10:00:00.5+01:00",
        "2026-12-31T23:59:60.500000Z",
        "2028-02-29T00:00:00.000000Z",
        "2027-02-29T00:00:00.000000Z",
        "2026-13-01T00:00:00.000000Z",
        "2026-11-23t10:00:00.000000z",
        "",
    ] {
        let chrono = DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| t.with_timezone(&Utc));
        assert_eq!(stored_time(text), chrono, "{text}");
    }
}
