//! The projector: tails the log from the read models' checkpoints and applies each batch to
//! the projections. It runs on its own thread (SQLite work is blocking) and publishes the
//! positions it has applied, which commands and read endpoints wait on for read-your-writes.
//!
//! Two lanes (see [`custode_projections::Lane`]): the core read models are kept at the log's
//! head first; the access history, which takes a row for every check and reported access,
//! follows when they are, a batch at a time. While it keeps up, both are applied together.

use custode_commands::clock::Clock;
use custode_commands::EventLog;
use custode_projections::cache::Forget;
use custode_projections::{Lane, ReadModels};
use std::sync::Arc;
use tokio::sync::watch;

const BATCH: usize = 512;

pub struct ProjectorHandle {
    applied: watch::Receiver<u64>,
    history_applied: watch::Receiver<u64>,
}

impl ProjectorHandle {
    /// The position the core read models (all but the access history) have applied: what a
    /// command waits for before it answers.
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.applied.clone()
    }

    /// The position every read model, the access history included, has applied.
    pub fn history_applied(&self) -> watch::Receiver<u64> {
        self.history_applied.clone()
    }
}

/// What the projector does next, from its lanes' checkpoints and the log's durable head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Everything is applied.
    Wait,
    /// A batch from `from` to every read model: the history is level with the rest and the
    /// log is less than a batch ahead (it keeps up).
    Both { from: u64 },
    /// A batch from `from` to the core read models alone: they come first.
    Core { from: u64 },
    /// Up to `limit` events from `from` to the access history, which trails the core.
    History { from: u64, limit: usize },
}

/// `history_turn`: see [`history_turn`]. When both lanes have work they take turns, so the core
/// waits at most one history batch; the history waits while the core itself is more than a
/// batch behind. `history_ready`: false while the history backs off after a failure (see
/// [`Backoff`]): the core goes on alone meanwhile.
fn step(core: u64, history: u64, head: u64, history_turn: bool, history_ready: bool) -> Step {
    // The history never goes past the head: the core's checkpoint may (read models kept
    // through a power cut that took the end of a log written with `synchronous = normal`).
    let reachable = core.min(head);
    if history_ready && history < reachable && (history_turn || core >= head) {
        Step::History {
            from: history,
            limit: usize::try_from(reachable - history).map_or(BATCH, |behind| behind.min(BATCH)),
        }
    } else if core < head {
        if history_ready && history == core && head - core <= BATCH as u64 {
            Step::Both { from: core }
        } else {
            Step::Core { from: core }
        }
    } else {
        Step::Wait
    }
}

/// Whether the access history has the next turn: after a step of the core alone that reached
/// the head it saw (it read less than a batch). A core more than a batch behind goes on first,
/// so after a start or a stall it catches up before the history, and under a steady load it
/// stays within one history batch of the head.
fn history_turn(step: Step, read: usize) -> bool {
    matches!(step, Step::Core { .. }) && read < BATCH
}

/// When a lane may try again after failures to apply its events: 200 ms doubling to 6.4 s.
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
    until: Option<std::time::Instant>,
}

impl Backoff {
    fn failed(&mut self) -> std::time::Duration {
        self.failures = self.failures.saturating_add(1);
        let wait = std::time::Duration::from_millis(100u64 << self.failures.min(6));
        self.until = Some(std::time::Instant::now() + wait);
        wait
    }

    fn succeeded(&mut self) {
        *self = Self::default();
    }

    fn ready(&self) -> bool {
        self.until
            .is_none_or(|until| std::time::Instant::now() >= until)
    }
}

/// AH-3: how long the access history keeps its rows, by whose clock.
#[derive(Clone)]
pub struct HistoryExpiry {
    pub clock: Arc<dyn Clock>,
    pub retention: chrono::Duration,
}

impl HistoryExpiry {
    /// How often the projector looks for rows past retention (by the expiry's clock).
    const EVERY: chrono::Duration = chrono::Duration::minutes(1);

    /// Drops a chunk of what is past retention: a pass starts when `EVERY` has gone by since
    /// the last one started, and takes one chunk each time it is tended, so that the core
    /// read models never wait for more than a chunk (a day's rows of a large history are
    /// many chunks).
    fn tend(&self, models: &mut ReadModels, pass: &mut ExpiryPass) {
        let now = self.clock.now();
        let cutoff = match pass.cutoff {
            Some(cutoff) => cutoff,
            None if pass.started.is_some_and(|at| now - at < Self::EVERY) => return,
            None => {
                *pass = ExpiryPass {
                    started: Some(now),
                    cutoff: Some(now - self.retention),
                    dropped: 0,
                };
                now - self.retention
            }
        };
        match models.expire_history_chunk(cutoff) {
            Ok(n) => {
                pass.dropped += n;
                if n < custode_projections::EXPIRY_CHUNK {
                    pass.cutoff = None;
                    // Only `access_history` rows go, which no cache holds (an account's last
                    // access is kept apart, in `access_accounts`).
                    if pass.dropped > 0 {
                        tracing::info!(
                            dropped = pass.dropped,
                            "access history: rows past history.retention_days dropped"
                        );
                    }
                }
            }
            Err(error) => {
                pass.cutoff = None;
                tracing::error!(%error, "access history: cannot drop rows past retention");
            }
        }
    }
}

/// The expiry pass under way, if one is.
#[derive(Debug, Default)]
struct ExpiryPass {
    /// When the last pass started, by the expiry's clock.
    started: Option<chrono::DateTime<chrono::Utc>>,
    /// The pass's cutoff while it has rows left to drop.
    cutoff: Option<chrono::DateTime<chrono::Utc>>,
    dropped: usize,
}

/// Starts the projector on `models`; it stops when the log's writer is gone. With `expiry`,
/// it also drops the access history's rows past retention (AH-3), at start and then every
/// minute of the expiry's clock. Each applied batch drops from `caches` what it changed before
/// its position is published (AP-7's checks and the account pages read through them).
pub fn spawn(
    log: EventLog,
    mut models: ReadModels,
    runtime: tokio::runtime::Handle,
    expiry: Option<HistoryExpiry>,
    caches: Vec<Arc<dyn Forget>>,
) -> std::io::Result<ProjectorHandle> {
    let (core, history) = models.lanes();
    let (applied_tx, applied_rx) = watch::channel(core);
    let (history_tx, history_rx) = watch::channel(core.min(history));
    // Each second a tick wakes the projector to tend the history (tests move clocks). The
    // tick runs on the runtime, so this thread never arms a timer of its own: it stops with
    // the runtime, and the projector then waits for events alone.
    let (tick_tx, mut tick) = watch::channel(());
    if expiry.is_some() {
        runtime.spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
            while !tick_tx.is_closed() {
                every.tick().await;
                tick_tx.send_replace(());
            }
        });
    }
    std::thread::Builder::new().name("custode-projector".into()).spawn(move || {
        let mut head = log.subscribe();
        // The core lane's failures (or both lanes', applied together) hold the thread; the
        // history's only hold the history, and the core goes on meanwhile.
        let mut core_backoff = Backoff::default();
        let mut history_backoff = Backoff::default();
        let mut expiry_pass = ExpiryPass::default();
        let mut ticking = expiry.is_some();
        let mut history_turn = false;
        // Where a batch to both lanes last failed (see the core's failure below).
        let mut both_failed_at = None;
        loop {
            if let Some(expiry) = &expiry {
                expiry.tend(&mut models, &mut expiry_pass);
            }
            let (core, history) = models.lanes();
            let next = step(core, history, *head.borrow(), history_turn, history_backoff.ready());
            let (from, limit, lane) = match next {
                Step::Both { from } => (from, BATCH, None),
                Step::Core { from } => (from, BATCH, Some(Lane::Core)),
                Step::History { from, limit } => (from, limit, Some(Lane::History)),
                // An expiry pass under way goes on, a chunk a turn.
                Step::Wait if expiry_pass.cutoff.is_some() => continue,
                Step::Wait => {
                    // Woken by the log past what a lane can take (the history, ready, takes
                    // what lies below a core checkpoint the log has not reached again), at
                    // the end of the history's backoff, or every second by the tick.
                    let above = if history_backoff.ready() {
                        core.min(history)
                    } else {
                        core
                    };
                    // Armed only while the backoff runs: one already over would wake at once.
                    let backoff_ends = history_backoff.until.filter(|_| !history_backoff.ready());
                    let woken = runtime.block_on(async {
                        // Inside the runtime: its timer drives this sleep.
                        let backoff = async {
                            match backoff_ends {
                                Some(until) => {
                                    tokio::time::sleep_until(tokio::time::Instant::from_std(until)).await
                                }
                                None => std::future::pending().await,
                            }
                        };
                        tokio::select! {
                            moved = head.wait_for(|h| *h > above) => Some(moved.is_ok()),
                            () = backoff => None,
                            ticked = tick.changed(), if ticking => {
                                if ticked.is_err() {
                                    ticking = false;
                                }
                                None
                            }
                        }
                    });
                    if woken == Some(false) {
                        return;
                    }
                    continue;
                }
            };
            let applied = log
                .read_from_blocking(from, limit)
                .map_err(|e| e.to_string())
                .and_then(|events| {
                    history_turn = self::history_turn(next, events.len());
                    match lane {
                        None => models.apply(&events),
                        Some(lane) => models.apply_lane(&events, lane),
                    }
                    .map_err(|e| e.to_string())?;
                    for cache in &caches {
                        match lane {
                            None => cache.forget(&events),
                            Some(lane) => cache.forget_lane(&events, lane),
                        }
                    }
                    Ok(())
                });
            match applied {
                Ok(()) => {
                    if lane != Some(Lane::History) {
                        core_backoff.succeeded();
                    }
                    if lane != Some(Lane::Core) {
                        history_backoff.succeeded();
                    }
                    let (core, history) = models.lanes();
                    let all = core.min(history);
                    applied_tx.send_if_modified(|p| std::mem::replace(p, core) != core);
                    history_tx.send_if_modified(|p| std::mem::replace(p, all) != all);
                }
                // A read model that cannot apply an event must not skip it: it waits and tries
                // again, loudly; /readyz and the metrics show the lag meanwhile. When both lanes
                // failed together, the history is suspected first: it backs off, and the core
                // tries alone (if the core fails alone, the fault is its own).
                Err(error) if lane != Some(Lane::Core) => {
                    let backoff = history_backoff.failed();
                    if lane.is_none() {
                        both_failed_at = Some(from);
                    }
                    tracing::error!(%error, from, ?lane, failures = history_backoff.failures, ?backoff, "projector cannot apply events (the access history is suspected first)");
                }
                Err(error) => {
                    // The core failing alone where both failed together: the history was not
                    // to blame, and need not wait out a backoff once the core recovers.
                    if both_failed_at.take() == Some(from) {
                        history_backoff.succeeded();
                    }
                    let backoff = core_backoff.failed();
                    tracing::error!(%error, from, ?lane, failures = core_backoff.failures, ?backoff, "projector cannot apply events");
                    // This thread is not the runtime's: a tokio timer made here has no reactor
                    // (it panicked, and the read models stopped for good after a full disk).
                    std::thread::sleep(backoff);
                }
            }
        }
    })?;
    Ok(ProjectorHandle {
        applied: applied_rx,
        history_applied: history_rx,
    })
}

/// The read models as a consumer of any feed: what `custode worker projector --nats URL` runs
/// to keep a read-model file of its own up to date.
impl crate::consumer::Sink for ReadModels {
    fn apply(
        &mut self,
        events: &[custode_domain::RecordedEvent],
    ) -> Result<u64, crate::WorkerError> {
        ReadModels::apply(self, events).map_err(|e| crate::WorkerError::Other(e.to_string()))
    }

    fn checkpoint(&self) -> u64 {
        ReadModels::checkpoint(self)
    }
}

#[cfg(test)]
mod tests {
    use super::{history_turn, step, Backoff, Step, BATCH};

    #[test]
    fn lanes_keep_up_together_and_take_turns_when_the_history_trails() {
        let batch = BATCH as u64;
        // Level and keeping up: one batch to both.
        assert_eq!(step(10, 10, 20, false, true), Step::Both { from: 10 });
        assert_eq!(
            step(10, 10, 10 + batch, false, true),
            Step::Both { from: 10 }
        );
        // More than a batch behind: the core goes first, alone.
        assert_eq!(
            step(10, 10, 11 + batch, false, true),
            Step::Core { from: 10 }
        );
        // The history trails: after a core step it has its turn, never past the core.
        assert_eq!(
            step(100, 10, 200, true, true),
            Step::History {
                from: 10,
                limit: 90
            }
        );
        assert_eq!(step(100, 10, 200, false, true), Step::Core { from: 100 });
        assert_eq!(
            step(10 * batch, 0, 20 * batch, true, true),
            Step::History {
                from: 0,
                limit: BATCH
            }
        );
        // The core at the head: the history catches up, whoever's turn it is.
        assert_eq!(
            step(100, 10, 100, false, true),
            Step::History {
                from: 10,
                limit: 90
            }
        );
        // Everything applied.
        assert_eq!(step(100, 100, 100, false, true), Step::Wait);
        assert_eq!(step(100, 100, 100, true, true), Step::Wait);
        // The history ahead of the core (a core read model being rebuilt): the core alone.
        assert_eq!(step(0, 50, 100, true, true), Step::Core { from: 0 });
        // The core past the head (read models that outlived the end of an unsynced log): the
        // history goes as far as the head, then the projector waits for the log.
        assert_eq!(
            step(120, 90, 100, false, true),
            Step::History {
                from: 90,
                limit: 10
            }
        );
        assert_eq!(step(120, 100, 100, false, true), Step::Wait);
    }

    #[test]
    fn a_failing_history_backs_off_and_the_core_goes_on_alone() {
        // Backing off: never both together, never the history, the core as usual.
        assert_eq!(step(10, 10, 20, false, false), Step::Core { from: 10 });
        assert_eq!(step(100, 10, 200, true, false), Step::Core { from: 100 });
        assert_eq!(step(100, 10, 100, false, false), Step::Wait);
        let mut backoff = Backoff::default();
        assert!(backoff.ready());
        assert_eq!(backoff.failed(), std::time::Duration::from_millis(200));
        assert!(!backoff.ready());
        assert_eq!(backoff.failed(), std::time::Duration::from_millis(400));
        for _ in 0..10 {
            backoff.failed();
        }
        assert_eq!(backoff.failed(), std::time::Duration::from_millis(6_400));
        backoff.succeeded();
        assert!(backoff.ready());
        assert_eq!(backoff.failed(), std::time::Duration::from_millis(200));
    }

    #[test]
    fn the_core_runs_to_the_head_before_the_history_has_its_turn() {
        let core = Step::Core { from: 0 };
        // A full batch: the core is still behind, and goes on.
        assert!(!history_turn(core, BATCH));
        // Less than a batch: it reached the head it saw.
        assert!(history_turn(core, BATCH - 1));
        assert!(history_turn(core, 0));
        // After the history's own step, or both together, the core comes first again.
        assert!(!history_turn(Step::History { from: 0, limit: 10 }, 3));
        assert!(!history_turn(Step::Both { from: 0 }, 3));
        // Driven through `step`: a start 10 batches behind on both lanes runs the core to
        // the head before the history moves.
        let head = 10 * BATCH as u64;
        let (mut core_at, mut history_at, mut turn) = (0u64, 0u64, false);
        let mut order = Vec::new();
        while core_at < head || history_at < head {
            let next = step(core_at, history_at, head, turn, true);
            let read = match next {
                Step::Both { from } | Step::Core { from } => {
                    let read = (head - from).min(BATCH as u64);
                    core_at = from + read;
                    if matches!(next, Step::Both { .. }) {
                        history_at = core_at;
                    }
                    read
                }
                Step::History { from, limit } => {
                    history_at = from + limit as u64;
                    limit as u64
                }
                Step::Wait => unreachable!("work is left"),
            };
            order.push(matches!(next, Step::History { .. }));
            turn = history_turn(next, read as usize);
        }
        let first_history = order.iter().position(|h| *h).unwrap();
        assert_eq!(first_history, 10, "{order:?}");
        assert!(order[first_history..].iter().all(|h| *h));
    }
}
