//! The account's state, folded from its events by [`evolve`]. It holds only what `decide` needs.

use super::events::*;
use crate::secret::PasswordHash;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, VecDeque};
use uuid::Uuid;

/// How many past password hashes the state keeps: enough for any sane `policy.history`.
const HISTORY_KEPT: usize = 24;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Account {
    /// `None` until `AccountOpened`.
    pub profile: Option<AccountOpened>,
    pub status: AccountStatus,
    /// The current password first, then earlier ones (PW-2 history).
    pub passwords: VecDeque<PasswordHash>,
    pub must_change_password: bool,
    pub must_set_recovery_info: bool,
    pub recovery: RecoveryInfo,
    pub sessions: BTreeMap<Uuid, Session>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecoveryInfo {
    pub email: Option<String>,
    pub mobile: Option<String>,
    pub security_question: Option<String>,
    pub security_answer_hash: Option<PasswordHash>,
}

impl RecoveryInfo {
    pub fn is_empty(&self) -> bool {
        self.email.is_none() && self.mobile.is_none() && self.security_question.is_none()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub expires_at: DateTime<Utc>,
    pub fresh_until: DateTime<Utc>,
}

impl Account {
    pub fn is_open(&self) -> bool {
        self.profile.is_some()
    }

    pub fn current_password(&self) -> Option<&PasswordHash> {
        self.passwords.front()
    }

    pub fn required_actions(&self) -> Vec<RequiredAction> {
        let mut actions = Vec::new();
        if self.must_change_password {
            actions.push(RequiredAction::ChangePassword);
        }
        if self.must_set_recovery_info {
            actions.push(RequiredAction::SetRecoveryInfo);
        }
        actions
    }

    /// A session that has not ended and has not passed its absolute expiry.
    pub fn live_session(&self, session_id: Uuid, now: DateTime<Utc>) -> Option<&Session> {
        self.sessions
            .get(&session_id)
            .filter(|s| s.expires_at > now)
    }

    fn push_password(&mut self, hash: &PasswordHash) {
        self.passwords.push_front(hash.clone());
        self.passwords.truncate(HISTORY_KEPT);
    }
}

pub fn evolve(mut state: Account, event: &AccountEvent) -> Account {
    match event {
        AccountEvent::AccountOpened(e) => {
            state.profile = Some(e.clone());
            state.status = AccountStatus::Active;
            state.must_set_recovery_info = true;
        }
        AccountEvent::TemporaryPasswordIssued(e) => {
            state.push_password(&e.password_hash);
            state.must_change_password = true;
        }
        AccountEvent::PasswordImported(e) => {
            state.push_password(&e.password_hash);
            state.must_change_password = false;
        }
        AccountEvent::PasswordChanged(e) => {
            state.push_password(&e.password_hash);
            state.must_change_password = false;
        }
        AccountEvent::RecoveryInfoSet(e) => {
            state.recovery = RecoveryInfo {
                email: e.email.clone(),
                mobile: e.mobile.clone(),
                security_question: e.security_question.clone(),
                security_answer_hash: e.security_answer_hash.clone(),
            };
            state.must_set_recovery_info = false;
        }
        AccountEvent::SessionStarted(e) => {
            // Sessions past their expiry can never be used again: forget them as time moves on.
            state.sessions.retain(|_, s| s.expires_at > e.started_at);
            state.sessions.insert(
                e.session_id,
                Session {
                    expires_at: e.expires_at,
                    fresh_until: e.fresh_until,
                },
            );
        }
        AccountEvent::LoginFailed(_) => {}
        AccountEvent::SessionReauthenticated(e) => {
            if let Some(s) = state.sessions.get_mut(&e.session_id) {
                s.fresh_until = e.fresh_until;
            }
        }
        AccountEvent::SessionsEnded(e) => {
            for id in &e.session_ids {
                state.sessions.remove(id);
            }
        }
    }
    state
}
