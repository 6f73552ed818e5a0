#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! Password commands through the whole write path (HTTP-less: the account handler, the
//! hashing pool, the log) against bare Argon2id with the same parameters on as many threads
//! as the pool has. Run with `cargo bench --bench password_commands`.

use custode_commands::accounts::{AccountHandler, Caller, LoginOutcome};
use custode_commands::clock::SystemClock;
use custode_commands::delivery::DeliveryKeys;
use custode_commands::hashing::{Argon2Hasher, Argon2Settings, HashPool};
use custode_commands::tokens::temporary_password;
use custode_commands::{EventLog, LogOptions};
use custode_domain::account::{
    AccessChannel, AccountCommand, ChangePassword, InitialPassword, OpenAccount,
};
use custode_domain::{Actor, Secret, SecretHasher, Settings};
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

const ACCOUNTS: usize = 96;

fn caller() -> Caller {
    Caller {
        actor: Actor::operator(),
        correlation_id: Uuid::now_v7(),
    }
}

fn bare_hashes_per_second(hasher: &Arc<Argon2Hasher>, threads: usize, per_thread: usize) -> f64 {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let hasher = hasher.clone();
            scope.spawn(move || {
                for i in 0..per_thread {
                    let _ = hasher.hash(&Secret::new(format!("Bare#Hash-{t}-{i}")));
                }
            });
        }
    });
    (threads * per_thread) as f64 / started.elapsed().as_secs_f64()
}

fn bare_verifies_per_second(hasher: &Arc<Argon2Hasher>, threads: usize, per_thread: usize) -> f64 {
    let secret = Secret::new("Bare#Verify-1");
    let stored = hasher.hash(&secret);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let (hasher, secret, stored) = (hasher.clone(), secret.clone(), stored.clone());
            scope.spawn(move || {
                for _ in 0..per_thread {
                    assert!(hasher.verify(&secret, &stored));
                }
            });
        }
    });
    (threads * per_thread) as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("password_commands: bench");
        return;
    }
    let threads = std::thread::available_parallelism().map_or(2, usize::from);
    let hasher = Arc::new(Argon2Hasher::new(Argon2Settings::default()).expect("argon2"));
    let bare_before = bare_hashes_per_second(&hasher, threads, ACCOUNTS / threads);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("dir");
    let (logins_per_s, changes_per_s) = runtime.block_on(async {
        let log =
            EventLog::open(&dir.path().join("events.db"), &LogOptions::default()).expect("log");
        let handler = AccountHandler::new(
            log,
            HashPool::new(threads),
            hasher.clone(),
            Arc::new(Settings::default()),
            Arc::new(SystemClock),
            DeliveryKeys::open(dir.path()).expect("keys"),
            custode_commands::service_key::ServiceKey::from_bytes([7; 32]),
        );
        let mut accounts = Vec::new();
        for n in 0..ACCOUNTS {
            let account_id = Uuid::now_v7();
            let initial = handler.temporary_password(account_id).expect("seal");
            let InitialPassword::Temporary { password, .. } = &initial else {
                unreachable!("a temporary password")
            };
            let password = password.clone();
            let cmd = OpenAccount::mailbox(account_id, format!("bench{n}@pec.example.it"), initial);
            handler.open(cmd, &caller()).await.expect("open");
            accounts.push((account_id, format!("bench{n}@pec.example.it"), password));
        }

        // Steady state: the runtime's blocking threads (log reads) exist, as in a server that
        // has been up for a while.
        let warm: Vec<_> = accounts
            .iter()
            .map(|(_, user_id, _)| {
                let handler = handler.clone();
                let user_id = user_id.clone();
                tokio::spawn(async move { handler.account_id_of(&user_id).await })
            })
            .collect();
        for w in warm {
            w.await.expect("task").expect("lookup");
        }

        // Logins: one Argon2id verification each. A first round warms the pool up; the
        // second is measured.
        let mut logins_per_s = 0.0;
        let mut sessions = Vec::new();
        for _round in 0..2 {
            let started = Instant::now();
            let mut tasks = Vec::new();
            for (account_id, user_id, password) in accounts.clone() {
                let handler = handler.clone();
                tasks.push(tokio::spawn(async move {
                    match handler
                        .login(
                            &user_id,
                            password.clone(),
                            None,
                            None,
                            AccessChannel::Api,
                            &caller(),
                        )
                        .await
                        .expect("login")
                    {
                        LoginOutcome::Started { outcome, .. } => {
                            let Some(custode_domain::account::AccountEvent::SessionStarted(s)) =
                                outcome.events.first()
                            else {
                                panic!("no session")
                            };
                            (account_id, s.session_id, password)
                        }
                        LoginOutcome::Refused { .. } => panic!("login refused"),
                    }
                }));
            }
            sessions.clear();
            for t in tasks {
                sessions.push(t.await.expect("task"));
            }
            logins_per_s = ACCOUNTS as f64 / started.elapsed().as_secs_f64();
        }

        // First password change after opening: verify current + hash new (the history holds
        // only the current password, compared in the clear), so two Argon2id runs each.
        let started = Instant::now();
        let mut tasks = Vec::new();
        for (account_id, session_id, current) in sessions {
            let handler = handler.clone();
            tasks.push(tokio::spawn(async move {
                let new = temporary_password();
                let cmd = AccountCommand::ChangePassword(ChangePassword {
                    session_id,
                    current_password: current,
                    new_password: new.clone(),
                    new_password_repeat: new,
                    otp: None,
                    client_ip: None,
                    channel: AccessChannel::Api,
                });
                handler
                    .execute(account_id, cmd, &caller())
                    .await
                    .expect("change");
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        let changes_per_s = ACCOUNTS as f64 / started.elapsed().as_secs_f64();
        (logins_per_s, changes_per_s)
    });
    // Bare Argon2 before and after the commands; the mean is the baseline (the machine wanders).
    let bare = (bare_before + bare_hashes_per_second(&hasher, threads, ACCOUNTS / threads)) / 2.0;
    let verify = bare_verifies_per_second(&hasher, threads, ACCOUNTS / threads);
    println!(
        "password commands vs bare Argon2id (m=19456 KiB, t=2, p=1), {threads} threads, one run:"
    );
    println!("  bare Argon2id:                        {bare:>7.1} hashes/s");
    println!("  bare Argon2id verification:           {verify:>7.1} verifications/s");
    println!(
        "  Login (1 Argon2id verification each): {logins_per_s:>7.1} commands/s  ratio {:.2}x to hashes, {:.2}x to verifications (target >= 0.9x)",
        logins_per_s / bare,
        logins_per_s / verify
    );
    println!(
        "  ChangePassword (2 Argon2id each):     {changes_per_s:>7.1} commands/s  ratio {:.2}x raw, {:.2}x per Argon2id run (target >= 0.9x)",
        changes_per_s / bare,
        changes_per_s * 2.0 / bare
    );
}
