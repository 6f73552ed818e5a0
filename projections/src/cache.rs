//! Read-model rows kept in memory, each under the accounts it was read from, and dropped by
//! the projector when events touch those accounts.
//!
//! The projector, once it has committed a batch and before it publishes the position it
//! applied, calls [`Forget::forget`] on every cache: a read that follows a command's answer
//! (read-your-writes) never finds what the command changed. A read that overlaps a drop is
//! not kept (the epoch, taken before the read and checked under the lock that drops take,
//! says so), so an entry never outlives the rows it was read from.

use custode_domain::RecordedEvent;
use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use uuid::Uuid;

/// What the projector tells a cache after each batch it applied.
pub trait Forget: Send + Sync {
    /// Drops what `events` (just committed to the read models) may have changed.
    fn forget(&self, events: &[RecordedEvent]);
    /// Drops what `events`, just committed to the read models of `lane` alone, may have
    /// changed (see [`crate::Lane`]): a batch goes to each lane in turn, and a cache that
    /// forgot it twice would be read again for nothing. By default, all [`Forget::forget`]
    /// drops.
    fn forget_lane(&self, events: &[RecordedEvent], _lane: crate::Lane) {
        self.forget(events)
    }
}

/// Values under keys, each kept with the accounts it depends on.
pub struct ByAccount<K, V> {
    inner: Mutex<Entries<K, V>>,
    epoch: AtomicU64,
    capacity: usize,
}

struct Entries<K, V> {
    entries: HashMap<K, (V, Vec<Uuid>)>,
    /// account id → the keys that depend on it.
    keys: HashMap<Uuid, HashSet<K>>,
}

impl<K, V> Default for Entries<K, V> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
            keys: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> ByAccount<K, V> {
    /// A cache that starts afresh once it holds `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Entries::default()),
            epoch: AtomicU64::new(0),
            capacity,
        }
    }

    fn entries(&self) -> MutexGuard<'_, Entries<K, V>> {
        // A panic while holding the lock leaves only a cache: take it as it is.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Where a read starts: pass it to [`ByAccount::keep`] with what was read.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries().entries.get(key).map(|(v, _)| v.clone())
    }

    /// Keeps `value`, read from the read models after `epoch` was taken and depending on the
    /// rows of `accounts`, unless a drop has happened since (the read may predate it).
    pub fn keep(&self, epoch: u64, key: K, value: V, mut accounts: Vec<Uuid>) {
        // An entry under no account would go only with the whole cache.
        debug_assert!(!accounts.is_empty(), "a kept value depends on some account");
        let mut kept = self.entries();
        // Checked under the lock that drops take too: no drop can slip in between.
        if self.epoch() != epoch {
            return;
        }
        let mut full = None;
        if kept.entries.len() >= self.capacity {
            // Freed once the lock is given back: every request takes it.
            full = Some(std::mem::take(&mut *kept));
        }
        accounts.sort_unstable();
        accounts.dedup();
        if let Some((_, before)) = kept.entries.remove(&key) {
            unindex(&mut kept.keys, &key, &before);
        }
        for id in &accounts {
            kept.keys.entry(*id).or_default().insert(key.clone());
        }
        kept.entries.insert(key, (value, accounts));
        drop(kept);
        drop(full);
    }

    /// Drops every entry that depends on one of `accounts`.
    pub fn forget_accounts(&self, accounts: &[Uuid]) {
        if accounts.is_empty() {
            return;
        }
        let mut kept = self.entries();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        for id in accounts {
            for key in kept.keys.remove(id).unwrap_or_default() {
                if let Some((_, ids)) = kept.entries.remove(&key) {
                    // Out of the other accounts' keys too: no index outlives its entry.
                    unindex(&mut kept.keys, &key, &ids);
                }
            }
        }
    }

    /// Drops what `touched` names: the entries of those accounts, or everything for `None`
    /// (what [`page_accounts_of`] says of a batch it cannot tell apart by account).
    pub fn forget_touched(&self, touched: Option<Vec<Uuid>>) {
        match touched {
            Some(accounts) => self.forget_accounts(&accounts),
            None => self.forget_all(),
        }
    }

    /// Drops everything.
    pub fn forget_all(&self) {
        let mut kept = self.entries();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        let all = std::mem::take(&mut *kept);
        drop(kept);
        // Freed once the lock is given back: every request takes it.
        drop(all);
    }

    pub fn len(&self) -> usize {
        self.entries().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many accounts have keys listed (for tests: none outlives its entries).
    pub fn indexed(&self) -> usize {
        self.entries().keys.len()
    }
}

fn unindex<K: Hash + Eq>(keys: &mut HashMap<Uuid, HashSet<K>>, key: &K, ids: &[Uuid]) {
    for id in ids {
        if let Some(set) = keys.get_mut(id) {
            set.remove(key);
            if set.is_empty() {
                keys.remove(id);
            }
        }
    }
}

/// The accounts whose `account-<uuid>` streams `events` touch, with the owner a collaborator
/// is opened under (its row shows on the owner's page).
pub fn accounts_of(events: &[RecordedEvent]) -> Vec<Uuid> {
    let mut touched = Vec::new();
    for event in events.iter().filter(|e| e.category() == "account") {
        if let Ok(id) = Uuid::parse_str(event.stream.trim_start_matches("account-")) {
            touched.push(id);
        }
        if event.event_type == "AccountOpened" {
            if let Some(owner) = payload_uuid(event, &["owner_id"]) {
                touched.push(owner);
            }
        }
    }
    touched
}

/// What `events` touch in the read models an account's page is read from (accounts,
/// sessions, notices, access history): the accounts, or `None` when one of them changes rows
/// that cannot be told apart by account (then everything goes).
pub fn page_accounts_of(events: &[RecordedEvent]) -> Option<Vec<Uuid>> {
    page_accounts_in(events, None)
}

/// [`page_accounts_of`] for the read models of `lane` alone (all of them for `None`): the core
/// lane's changes come from the account and notice streams, the access history's from the
/// access streams and the logins in account streams.
pub fn page_accounts_in(events: &[RecordedEvent], lane: Option<crate::Lane>) -> Option<Vec<Uuid>> {
    use crate::Lane;
    let history = lane != Some(Lane::Core);
    let core = lane != Some(Lane::History);
    let mut touched = if core {
        accounts_of(events)
    } else {
        Vec::new()
    };
    for event in events {
        match event.category() {
            "access" if history => {
                touched.push(Uuid::parse_str(event.stream.trim_start_matches("access-")).ok()?)
            }
            // A login, in the account's own stream, is a row of the history too.
            "account"
                if !core
                    && matches!(event.event_type.as_str(), "SessionStarted" | "LoginFailed") =>
            {
                touched.push(Uuid::parse_str(event.stream.trim_start_matches("account-")).ok()?)
            }
            // NotificationSent and NotificationFailed carry the notice flattened, its account
            // id among its fields; NotificationRetryRequested names only the notice.
            "notice" if core => touched.push(payload_uuid(event, &["account_id"])?),
            // The other streams (user-id claims, recoveries, subjects, hardware tokens, …)
            // feed none of those read models, only the audit index.
            _ => {}
        }
    }
    Some(touched)
}

fn payload_uuid(event: &RecordedEvent, path: &[&str]) -> Option<Uuid> {
    let mut value = &event.payload;
    for field in path {
        value = value.get(field)?;
    }
    Uuid::parse_str(value.as_str()?).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use custode_domain::Actor;

    pub(crate) fn on(
        stream: String,
        event_type: &str,
        payload: serde_json::Value,
    ) -> RecordedEvent {
        RecordedEvent {
            event_id: Uuid::now_v7(),
            stream,
            version: 1,
            position: 1,
            event_type: event_type.into(),
            schema_version: 1,
            occurred_at: chrono::Utc::now(),
            actor: Actor::system(),
            correlation_id: Uuid::nil(),
            causation_id: Uuid::nil(),
            payload,
            hash: String::new(),
        }
    }

    /// A NotificationSent's payload for a notice of `account`, as the notifier records it.
    fn notice_payload(account: Uuid) -> serde_json::Value {
        use custode_domain::notice::{Channel, NoticeEvent, NoticeRef, NotificationSent};
        let sent = NoticeEvent::NotificationSent(NotificationSent {
            notice: NoticeRef {
                notice_id: Uuid::now_v7(),
                account_id: account,
                source_event_id: Uuid::now_v7(),
                channel: Channel::Email,
                template: "password_changed".into(),
                to: "m*****@example.it".into(),
            },
            attempts: 1,
        });
        let (event_type, payload) = custode_domain::envelope::encode(&sent).unwrap();
        assert_eq!(event_type, "NotificationSent");
        payload
    }

    #[test]
    fn each_lane_names_the_pages_its_own_read_models_change() {
        use crate::Lane;
        let (a, b, c, d) = (
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
        );
        let none = serde_json::json!({});
        let events = [
            on(format!("account-{a}"), "MailProtocolsSet", none.clone()),
            on(format!("account-{b}"), "SessionStarted", none.clone()),
            on(format!("access-{c}"), "AppPasswordChecked", none.clone()),
            on(format!("notice-{d}"), "NotificationSent", notice_payload(d)),
        ];
        let sorted = |mut ids: Vec<Uuid>| {
            ids.sort();
            ids.dedup();
            ids
        };
        let core = sorted(page_accounts_in(&events, Some(Lane::Core)).unwrap());
        let history = sorted(page_accounts_in(&events, Some(Lane::History)).unwrap());
        assert_eq!(core, sorted(vec![a, b, d]));
        assert_eq!(history, sorted(vec![b, c]));
        // Together they name what one batch to both names.
        let mut both = core;
        both.extend(history);
        assert_eq!(sorted(both), sorted(page_accounts_of(&events).unwrap()));
    }

    #[test]
    fn a_view_goes_with_its_account_its_access_history_its_notices_and_a_new_collaborator() {
        let (mailbox, collaborator, other) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let views: ByAccount<Uuid, &str> = ByAccount::new(10);
        let forget = |events: &[RecordedEvent]| views.forget_touched(page_accounts_of(events));
        let fill = || views.keep(views.epoch(), mailbox, "page", vec![mailbox, collaborator]);
        let none = serde_json::json!({});
        fill();
        // Another account's events, a recovery's, a user id's claim leave it.
        forget(&[
            on(format!("account-{other}"), "LoginSucceeded", none.clone()),
            on(format!("recovery-{other}"), "RecoveryStarted", none.clone()),
            on("userid-x".into(), "UserIdClaimed", none.clone()),
        ]);
        assert_eq!(views.get(&mailbox), Some("page"));
        let dropped_by = [
            on(
                format!("account-{mailbox}"),
                "MailProtocolsSet",
                none.clone(),
            ),
            on(
                format!("account-{collaborator}"),
                "CollaboratorReset",
                none.clone(),
            ),
            on(
                format!("access-{mailbox}"),
                "AppPasswordChecked",
                none.clone(),
            ),
            on(
                format!("notice-{other}"),
                "NotificationSent",
                notice_payload(mailbox),
            ),
            // A collaborator opened under the mailbox shows on its page.
            on(
                format!("account-{other}"),
                "AccountOpened",
                serde_json::json!({ "owner_id": mailbox.to_string() }),
            ),
            // A notice event that names no account drops everything.
            on(
                format!("notice-{other}"),
                "NotificationRetryRequested",
                none.clone(),
            ),
        ];
        for event in dropped_by {
            fill();
            assert_eq!(views.len(), 1);
            forget(std::slice::from_ref(&event));
            assert!(views.is_empty(), "{} on {}", event.event_type, event.stream);
            assert_eq!(views.indexed(), 0, "no index outlives its entry");
        }
        // A read that began before a drop is not kept.
        let before = views.epoch();
        forget(&[on(format!("account-{other}"), "LoginSucceeded", none)]);
        views.keep(before, mailbox, "stale", vec![mailbox]);
        assert!(views.is_empty());
        // Full, it starts afresh.
        for i in 0..11u128 {
            views.keep(
                views.epoch(),
                Uuid::from_u128(i),
                "p",
                vec![Uuid::from_u128(i)],
            );
        }
        assert_eq!(views.len(), 1);
    }
}
