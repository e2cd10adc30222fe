//! The journal records the bank as it is under the lock: a transfer that reads the balances for
//! its journal before it takes the lock saves values another holder may change meanwhile, and a
//! repair after its death then puts those stale values back. Nothing changes the bank while a
//! worker runs alone, so the grader makes the change itself, holding the mutex.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rand::RngExt;

use super::ACCOUNTS;
use super::messages::index_of;
use super::probe::{self, Place};
use super::robust::STEP;
use super::segment::Journal;
use super::session::Session;
use super::totals::verify;
use crate::engine::{Fail, Run};

/// What the grader moves while it holds the mutex: 1 to 7 from account 7 to accounts 0 to 6, so
/// that every account changes, whichever two the transfer names.
fn moved() -> Vec<i64> {
    let mut moved: Vec<i64> = (1..ACCOUNTS as i64).collect();
    moved.push(-moved.iter().sum::<i64>());
    moved
}

/// A worker (`--crash-after 0`) sent off while the grader holds the mutex sleeps on it; the grader
/// changes every balance, lets go, and stops the worker in `midway()`: its journal must hold the
/// balances and count as they were when it took the lock. Then it is killed, and the totals,
/// the grader's move counted, must add up. `false` when the grader cannot hold the mutex or
/// the worker was never seen asleep on it (other checks judge that).
pub(super) fn journal_at_the_lock(run: &mut Run) -> Result<bool, Fail> {
    let crasher = run.rng().random_range(0..2usize);
    let extra = [
        "--crash-worker".to_string(),
        crasher.to_string(),
        "--crash-after".into(),
        "0".into(),
    ];
    let mut session = Session::start(run, &[1, 1], &extra)?;
    if !probe::can_hold(&session.segment) {
        return Ok(false);
    }
    let victim = session.workers[crasher];
    let segment = session.segment.handle()?;
    let (name, layout) = (session.name.clone(), segment.layout);
    let held = probe::hold(&segment, STEP)?;
    session.go()?;
    // The other worker starts only once the crasher is in midway(): until then the crasher's
    // lock is the only one a worker makes.
    let until = Instant::now() + STEP;
    let asleep = loop {
        if matches!(probe::sleeping(victim), probe::Sleep::Futex { address }
            if probe::place(victim, &name, &layout, address) == Place::Mutex)
        {
            break true;
        }
        if Instant::now() > until {
            break false;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let (count, before) = segment.bank()?;
    let moved = moved();
    for (account, change) in moved.iter().enumerate() {
        let balance = before[account] + change;
        segment.write_at(layout.accounts_at + 8 * account, &balance.to_ne_bytes())?;
    }
    drop(held);
    let outcome = session.finish(1, |message| {
        if index_of(message)? != crasher {
            return Err(Fail::Grader(
                "an unexpected worker stopped mid-transfer".into(),
            ));
        }
        if asleep {
            judge(
                &segment.journal()?,
                (crasher, victim),
                (count, &before),
                &moved,
            )?;
        }
        kill(Pid::from_raw(victim), Signal::SIGKILL).map_err(|e| Fail::Grader(format!("kill: {e}")))
    })?;
    // The crasher's transfer was undone; the grader's move stays.
    verify(&session, &outcome, &[(0, moved)], 1)?;
    Ok(asleep)
}

/// At the crasher's stop in `midway()`: an active journal must hold the balances and count
/// the bank held when it took the lock (`before` plus the grader's `moved`).
fn judge(
    journal: &Journal,
    (crasher, victim): (usize, i32),
    (count, before): (u64, &[i64]),
    moved: &[i64],
) -> Result<(), Fail> {
    let (from, to) = (journal.from as usize, journal.to as usize);
    if journal.active == 1 && from < ACCOUNTS && to < ACCOUNTS && from != to {
        let saved = (journal.from_balance, journal.to_balance, journal.transfers);
        let at_lock = (before[from] + moved[from], before[to] + moved[to], count);
        if saved != at_lock {
            let stale = if saved == (before[from], before[to], count) {
                ", what they held before the grader's change: the journal was written \
                 from balances read before the lock"
            } else {
                ""
            };
            return Err(Fail::failed(format!(
                "worker {crasher} (pid {victim}) waited for the bank's mutex while the \
                 grader held it and changed every balance (accounts 0 to 6 got 1 to 7 from \
                 account 7); once it let go, the worker took the mutex and stopped in \
                 midway() of its transfer from account {from} to account {to} with a \
                 journal saving balances {} and {} and count {}, but when it took the lock \
                 the bank held {} and {} and count {}{stale}; a repair after its death puts \
                 the journal's values back, so money would appear or vanish: every access \
                 is under the lock, from a transfer's first read to its last write (read \
                 the balances and the count for the journal after lock())",
                saved.0, saved.1, saved.2, at_lock.0, at_lock.1, at_lock.2
            )));
        }
    }
    Ok(())
}
