//! The scheduler: durable timers derived from events (the pure policy in
//! `custode_domain::schedule`), kept in the worker store's `deadlines` table, fired at most once
//! each when the one injectable clock passes them, cancelled by later events, surviving
//! restarts. It does not rely on the broker for time: the table is the truth.
//!
//! ```text
//!   (event sets it) ──► waiting ──clock ≥ due──► fired (final)
//!                          └──(later event cancels)──► cancelled (final)
//! ```

use crate::notifier::{Outcome, Reporter};
use crate::store::Handler;
use crate::WorkerError;
use chrono::{DateTime, Utc};
use custode_commands::clock::Clock;
use custode_commands::delivery::DeliveryKeys;
use custode_domain::envelope::EventGroup;
use custode_domain::schedule::{schedule_for, Deadline, Schedule, ScheduleEvent, Timer};
use custode_domain::RecordedEvent;
use rusqlite::{params, Connection, Transaction};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

pub const CONSUMER: &str = "scheduler";

/// Writes what an event does to the timers.
pub fn apply_schedule(tx: &Transaction<'_>, schedule: &Schedule) -> Result<(), WorkerError> {
    for Deadline { key, timer, due_at } in &schedule.set {
        tx.execute(
            "INSERT INTO deadlines (key, timer, due_ms, state) VALUES (?1, ?2, ?3, 'waiting')
             ON CONFLICT (key) DO NOTHING",
            params![
                key,
                serde_json::to_string(timer)?,
                due_at.timestamp_millis()
            ],
        )?;
    }
    for key in &schedule.cancel {
        tx.execute(
            "UPDATE deadlines SET state = 'cancelled' WHERE key = ?1 AND state = 'waiting'",
            [key],
        )?;
    }
    Ok(())
}

pub struct SchedulerHandler {
    wake: Arc<Notify>,
}

impl Handler for SchedulerHandler {
    fn wants(&self, event: &RecordedEvent) -> bool {
        use custode_domain::envelope::EventGroup;
        ScheduleEvent::TYPES.contains(&event.event_type.as_str())
    }

    fn handle(&mut self, tx: &Transaction<'_>, event: &RecordedEvent) -> Result<(), WorkerError> {
        match ScheduleEvent::from_recorded(event)? {
            Some(typed) => apply_schedule(tx, &schedule_for(&event.stream, &typed)),
            None => Ok(()),
        }
    }

    fn committed(&mut self) {
        self.wake.notify_one();
    }
}

/// The firing side.
pub struct Timers {
    conn: Connection,
    keys: DeliveryKeys,
    clock: Arc<dyn Clock>,
    wake: Arc<Notify>,
    /// Where a command timer's command goes: the handler beside the log, or JetStream.
    reporter: Reporter,
}

pub fn scheduler(
    store_dir: &Path,
    keys: DeliveryKeys,
    clock: Arc<dyn Clock>,
    reporter: Reporter,
) -> Result<(SchedulerHandler, Timers), WorkerError> {
    let wake = Arc::new(Notify::new());
    Ok((
        SchedulerHandler { wake: wake.clone() },
        Timers {
            conn: crate::store::open(store_dir)?,
            keys,
            clock,
            wake,
            reporter,
        },
    ))
}

impl Timers {
    /// Fires every waiting deadline due at `now`, each once; returns the keys fired.
    pub async fn fire_due(&mut self, now: DateTime<Utc>) -> Result<Vec<String>, WorkerError> {
        let due: Vec<(String, String)> = {
            let mut stmt = self.conn.prepare_cached(
                "SELECT key, timer FROM deadlines WHERE state = 'waiting' AND due_ms <= ?1
                 ORDER BY due_ms LIMIT 256",
            )?;
            let rows = stmt.query_map([now.timestamp_millis()], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut fired = Vec::with_capacity(due.len());
        let mut failed = None;
        for (key, timer) in due {
            // Each action is idempotent, so a crash between it and the mark repeats it
            // harmlessly (a command decides from the state it finds, not from the timer); the
            // mark makes the timer final.
            match serde_json::from_str::<Timer>(&timer)? {
                Timer::DestroyDeliveryKey { .. } => {
                    let destroyed = self
                        .keys
                        .destroy_expired(now)
                        .map_err(|e| WorkerError::Other(e.to_string()))?;
                    if !destroyed.is_empty() {
                        tracing::info!(keys = ?destroyed, "delivery keys destroyed: their secrets have expired");
                    }
                }
                command @ (Timer::EndLocks { .. }
                | Timer::MirrorNotice { .. }
                | Timer::AppPasswordExpiry { .. }
                | Timer::DocumentExpiry { .. }
                | Timer::PasswordExpiry { .. }
                | Timer::Inactivity { .. }) => {
                    // A command that cannot run now waits for the next round; the others go on.
                    if let Err(error) = self.reporter.report(&Outcome::timer(&key, &command)).await
                    {
                        tracing::warn!(%error, key, "a timer's command failed; it stays due");
                        failed = Some(error);
                        continue;
                    }
                }
            }
            self.conn.execute(
                "UPDATE deadlines SET state = 'fired', fired_ms = ?2 WHERE key = ?1 AND state = 'waiting'",
                params![key, now.timestamp_millis()],
            )?;
            fired.push(key);
        }
        match failed {
            Some(error) => Err(WorkerError::Other(error)),
            None => Ok(fired),
        }
    }

    fn next_due_ms(&self) -> Result<Option<i64>, WorkerError> {
        Ok(self.conn.query_row(
            "SELECT min(due_ms) FROM deadlines WHERE state = 'waiting'",
            [],
            |r| r.get(0),
        )?)
    }

    /// Fires timers until the task is dropped: at the earliest deadline, when an event set a
    /// new one, and at least every second (tests move the clock instead of waiting).
    pub async fn run(mut self) {
        let wake = self.wake.clone();
        let clock = self.clock.clone();
        let mut failures = 0u32;
        loop {
            // The store's queries are small and local; a command timer awaits its append.
            let failed = match self.fire_due(clock.now()).await {
                Ok(_) => false,
                Err(error) => {
                    tracing::error!(%error, "scheduler cannot fire its timers; retrying");
                    true
                }
            };
            let next = self.next_due_ms().ok().flatten();
            failures = if failed {
                failures.saturating_add(1)
            } else {
                0
            };
            let wait = if failed {
                // A fault that persists (a key file that cannot be removed) must not spin.
                100i64 << failures.min(6)
            } else {
                next.map_or(1_000, |due| {
                    (due - clock.now().timestamp_millis()).clamp(0, 1_000)
                })
            };
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(u64::try_from(wait).unwrap_or(0))) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::notifier::Recorder;
    use chrono::TimeZone;
    use custode_commands::accounts::{AccountHandler, Caller};
    use custode_commands::clock::ManualClock;
    use custode_commands::hashing::{Argon2Hasher, Argon2Settings, HashPool};
    use custode_commands::service_key::ServiceKey;
    use custode_domain::account::{AccessChannel, OpenAccount};
    use custode_domain::{Actor, Secret};

    fn at(day: u32, hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, day, hour, 0, 0).unwrap()
    }

    /// The account handler a scheduler beside the log runs its commands through.
    fn reporter(
        dir: &Path,
        clock: &ManualClock,
    ) -> (custode_commands::EventLog, AccountHandler, Reporter) {
        let log =
            custode_commands::EventLog::open(&dir.join("events.db"), &Default::default()).unwrap();
        let accounts = AccountHandler::new(
            log.clone(),
            HashPool::new(1),
            Arc::new(Argon2Hasher::new(Argon2Settings::default()).unwrap()),
            Arc::default(),
            Arc::new(clock.clone()),
            DeliveryKeys::open(&dir.join("keys")).unwrap(),
            ServiceKey::open(&dir.join("keys")).unwrap().0,
        );
        let reporter = Reporter::Log(Box::new(Recorder::new(accounts.clone())));
        (log, accounts, reporter)
    }

    fn state(conn: &Connection, key: &str) -> String {
        conn.query_row("SELECT state FROM deadlines WHERE key = ?1", [key], |r| {
            r.get(0)
        })
        .unwrap()
    }

    #[tokio::test]
    async fn a_timer_fires_once_when_the_clock_passes_it_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let keys = DeliveryKeys::open(dir.path()).unwrap();
        let sealed = keys.seal(&Secret::new("Tmp-1"), "c", at(2, 10)).unwrap();
        let clock = ManualClock::new(at(2, 10));
        let (_, _, reporter) = reporter(dir.path(), &clock);
        let (_, mut timers) = scheduler(
            dir.path(),
            keys.clone(),
            Arc::new(clock.clone()),
            reporter.clone(),
        )
        .unwrap();
        let tx = timers.conn.transaction().unwrap();
        let schedule = Schedule {
            set: vec![Deadline {
                key: "delivery-key/20261102".into(),
                timer: Timer::DestroyDeliveryKey {
                    key_id: sealed.key_id.clone(),
                },
                due_at: at(5, 0),
            }],
            cancel: vec![],
        };
        apply_schedule(&tx, &schedule).unwrap();
        tx.commit().unwrap();
        assert!(timers.fire_due(at(4, 23)).await.unwrap().is_empty());
        drop(timers);

        let (_, mut timers) =
            scheduler(dir.path(), keys.clone(), Arc::new(clock), reporter).unwrap();
        assert_eq!(
            timers.fire_due(at(5, 0)).await.unwrap(),
            vec!["delivery-key/20261102"]
        );
        assert!(
            keys.open_sealed(&sealed, "c").is_err(),
            "the key is destroyed"
        );
        assert!(
            timers.fire_due(at(6, 0)).await.unwrap().is_empty(),
            "fired at most once"
        );
        assert_eq!(state(&timers.conn, "delivery-key/20261102"), "fired");
    }

    #[tokio::test]
    async fn a_cancelled_timer_never_fires_and_a_second_setting_keeps_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let keys = DeliveryKeys::open(dir.path()).unwrap();
        let clock = ManualClock::new(at(1, 0));
        let (_, _, reporter) = reporter(dir.path(), &clock);
        let (_, mut timers) = scheduler(dir.path(), keys, Arc::new(clock), reporter).unwrap();
        let deadline = |due_at| Deadline {
            key: "k".into(),
            timer: Timer::DestroyDeliveryKey {
                key_id: "20261101".into(),
            },
            due_at,
        };
        let tx = timers.conn.transaction().unwrap();
        apply_schedule(
            &tx,
            &Schedule {
                set: vec![deadline(at(2, 0))],
                cancel: vec![],
            },
        )
        .unwrap();
        apply_schedule(
            &tx,
            &Schedule {
                set: vec![deadline(at(9, 0))],
                cancel: vec![],
            },
        )
        .unwrap();
        tx.commit().unwrap();
        let due: i64 = timers
            .conn
            .query_row("SELECT due_ms FROM deadlines WHERE key = 'k'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(due, at(2, 0).timestamp_millis());
        let tx = timers.conn.transaction().unwrap();
        apply_schedule(
            &tx,
            &Schedule {
                set: vec![],
                cancel: vec!["k".into()],
            },
        )
        .unwrap();
        tx.commit().unwrap();
        assert!(timers.fire_due(at(10, 0)).await.unwrap().is_empty());
        assert_eq!(state(&timers.conn, "k"), "cancelled");
    }

    /// SEC-6 through the scheduler: a lockout's end is a command timer. Fired, then fired again
    /// as after a crash that lost the timer's mark, it appends `LoginUnlocked` once.
    #[tokio::test]
    async fn a_timer_fired_twice_across_a_crash_appends_its_command_once() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(at(3, 9));
        let (log, accounts, reporter) = reporter(dir.path(), &clock);
        let caller = Caller {
            actor: Actor::operator(),
            correlation_id: uuid::Uuid::now_v7(),
        };
        let account_id = uuid::Uuid::now_v7();
        let password = accounts.temporary_password(account_id).unwrap();
        let open = OpenAccount::mailbox(account_id, "mario.rossi@pec.example.it", password);
        accounts.open(open, &caller).await.unwrap();
        for _ in 0..10 {
            let wrong = Secret::new("not-the-password");
            accounts
                .login(
                    "mario.rossi@pec.example.it",
                    wrong,
                    None,
                    None,
                    AccessChannel::Api,
                    &caller,
                )
                .await
                .unwrap();
        }
        let (handler, mut timers) = scheduler(
            dir.path(),
            DeliveryKeys::open(&dir.path().join("keys")).unwrap(),
            Arc::new(clock.clone()),
            reporter,
        )
        .unwrap();
        let mut handler = handler;
        let tx = timers.conn.transaction().unwrap();
        for event in log.read_from(0, 1000).await.unwrap() {
            handler.handle(&tx, &event).unwrap();
        }
        tx.commit().unwrap();
        let unlocked = || async {
            log.read_from(0, 1000)
                .await
                .unwrap()
                .iter()
                .filter(|e| e.event_type == "LoginUnlocked")
                .count()
        };
        assert!(
            timers.fire_due(clock.now()).await.unwrap().is_empty(),
            "not yet due"
        );
        clock.advance(chrono::Duration::minutes(15));
        let fired = timers.fire_due(clock.now()).await.unwrap();
        assert_eq!(fired.len(), 1, "{fired:?}");
        assert_eq!(unlocked().await, 1);
        // The crash: the command was appended, the mark was lost.
        timers
            .conn
            .execute(
                "UPDATE deadlines SET state = 'waiting' WHERE key = ?1",
                [&fired[0]],
            )
            .unwrap();
        assert_eq!(timers.fire_due(clock.now()).await.unwrap(), fired);
        assert_eq!(unlocked().await, 1, "fired twice, appended once");
        // And the account logs in again without a 429.
        let (state, _) = accounts.load(account_id).await.unwrap();
        assert_eq!(state.login_locked_until, None);
    }
}
