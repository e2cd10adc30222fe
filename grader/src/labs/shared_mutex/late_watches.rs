//! Watches begun late in a run, on a worker that was not traced before: a worker keeps to the
//! lock rules all through its run, not only in its first transfers or while it is watched.

use std::time::{Duration, Instant};

use rand::RngExt;

use super::bank_view::ordinal;
use super::counting::{Relocks, lock_word_address};
use super::lock_calls::{self, LockCalls, LockEvent};
use super::session::Session;
use crate::engine::{Fail, Run, force};

/// How many of the worker's lock calls on the bank's mutex are judged, late in its run.
const LATE_LOCK_CALLS: u32 = 4;

/// A worker of a contending run, watched on the count and the mutex's lock word from a point
/// in the middle of the run.
pub(super) struct Midway {
    relocks: Relocks,
    pid: i32,
    count: u64,
}

/// Once the bank's count reaches a random point between `from` and `to`, stops one worker
/// (picked at random among those that have made a transfer, never traced before) and watches its next transfers for an unlock and a
/// lock between each two. `None` if the run ended first or the worker cannot be watched.
pub(super) fn watch_midway(
    run: &mut Run,
    session: &Session,
    from: u64,
    to: u64,
) -> Result<Option<Midway>, Fail> {
    let at = run.rng().random_range(from..to);
    // Only a worker seen holding the mutex and then seen without it has made a transfer, and
    // so has looked around (for a tracer, say) before the watch: one of those is watched.
    let mut held = Vec::new();
    let mut done_one = Vec::new();
    let until = Instant::now() + Duration::from_secs(3);
    let mut count = session.segment.bank()?.0;
    // Looked at without sleeping: a run is short, and a grader slept past it watches nothing.
    while (count < at || done_one.is_empty()) && Instant::now() < until {
        let owner = session.segment.mutex_owner()?;
        for &worker in &held {
            if worker != owner && !done_one.contains(&worker) {
                done_one.push(worker);
            }
        }
        if session.workers.contains(&owner) && !held.contains(&owner) {
            held.push(owner);
        }
        std::thread::yield_now();
        count = session.segment.bank()?.0;
    }
    if done_one.is_empty() {
        return Ok(None);
    }
    let pid = done_one[run.rng().random_range(0..done_one.len())];
    // Gone already (its run over): nothing to watch.
    if force::hold(pid).is_err() {
        return Ok(None);
    }
    let count = session.segment.bank()?.0.max(count);
    // The tracer lets the stopped worker go on once it has seized it.
    let relocks = Relocks::watch(session, pid);
    force::resume(pid)?;
    Ok(relocks.map(|relocks| Midway {
        relocks,
        pid,
        count,
    }))
}

impl Midway {
    pub(super) fn judge(self) -> Result<(), Fail> {
        let Some((at, kept_stores)) = self.relocks.kept_at() else {
            return Ok(());
        };
        Err(Fail::failed(format!(
            "a worker (pid {}) first watched in the middle of a run of contending workers (the \
             bank's count at {}, the worker not traced before) made two transfers in a row, \
             the {} and {} of the watch (two stores to Bank::transfers, seen with a hardware \
             watchpoint on the count), without {}: it kept the bank's mutex from one transfer to \
             the next, whether always, once warmed up, or only while it saw no tracer (a \
             TracerPid of 0 in /proc/self/status when it looked): a lock kept while nobody \
             watches is kept all the same; each transfer is a critical section of its own: \
             lock, journal, debit, midway(), credit, count, clear the journal, unlock \
             (transfer() returns with the mutex released)",
            self.pid,
            self.count,
            ordinal(at as usize - 1),
            ordinal(at as usize),
            super::relock_values::no_release(kept_stores),
        )))
    }
}

/// Worker `pid`, which has made `made` transfers, alone on the mutex: its next lock calls on
/// the bank's mutex (breakpoints at the C library's lock functions) must all be
/// `pthread_mutex_lock()`, late in its run as at its first call. The worker is stopped, and let
/// go here.
pub(super) fn late_lock_calls(session: &Session, pid: i32, made: u64) -> Result<(), Fail> {
    let calls = match lock_word_address(session, pid) {
        Some(address) => LockCalls::start(pid, address),
        None => Ok(None),
    };
    // Held since its last watch ended.
    force::resume(pid)?;
    let Some(mut calls) = calls? else {
        return Ok(());
    };
    let until = Instant::now() + Duration::from_secs(1);
    for _ in 0..LATE_LOCK_CALLS {
        let which = match calls.next(until)? {
            LockEvent::Call(which) => which,
            LockEvent::Nothing | LockEvent::Lost => break,
        };
        calls.go_on();
        if which == lock_calls::LOCK {
            continue;
        }
        drop(calls);
        let what = if which == 1 {
            "it tries the lock before it takes it: a spin before sleeping, however short, even \
             one turned on only once the worker has warmed up"
        } else {
            "it takes the lock with a timeout: a poll, whatever the period"
        };
        return Err(Fail::failed(format!(
            "a worker (pid {pid}) that had made at least {made} transfers, alone on the mutex, \
             called {}() on the bank's mutex (a breakpoint at each of the C library's lock \
             functions, set that late in its run), not pthread_mutex_lock(): {what}; lock() \
             calls pthread_mutex_lock() at once, every time, from a worker's first transfer to \
             its last, and sleeps in it until the holder unlocks",
            lock_calls::function_name(which)
        )));
    }
    Ok(())
}
