//! `locks-after-recovery`: once a process has met a dead holder (`EOWNERDEAD`) and repaired
//! the bank, its locks are still `pthread_mutex_lock()`: a timed or try lock "in case another
//! holder dies" wakes up by itself, a poll; a holder that dies again is reported by the robust
//! mutex, with `EOWNERDEAD`.

use std::time::{Duration, Instant};

use super::LIGHT_WORK;
use super::counting::lock_word_address;
use super::probe::DyingHolder;
use super::session::Session;
use crate::engine::tracer::{Breakpoint, Tracer};
use crate::engine::{Fail, Run};

/// The C library's locks that do not sleep until the mutex is free: a try, and two timed ones.
const POLLING_LOCKS: [&std::ffi::CStr; 3] = [
    c"pthread_mutex_trylock",
    c"pthread_mutex_timedlock",
    c"pthread_mutex_clocklock",
];

/// A worker's call of one of [`POLLING_LOCKS`] on the bank's mutex.
struct PollingLock {
    pid: i32,
    function: usize,
}

pub(super) fn locks_after_recovery(run: &mut Run) -> Result<String, Fail> {
    let mut session = Session::start(run, &[LIGHT_WORK; 2], &[])?;
    // A holder that dies before the workers start: the first of them to lock meets EOWNERDEAD
    // and repairs, and then goes on with its transfers.
    session.coordinator_settled();
    DyingHolder::start(&session.segment, false)?.die();
    let mut watched = Vec::new();
    for &pid in &session.workers {
        if let Some(mutex) = lock_word_address(&session, pid)
            && let Some(tracer) = Tracer::break_at_functions(pid, &POLLING_LOCKS)?
        {
            watched.push((pid, mutex, tracer));
        }
    }
    session.go()?;
    let until = Instant::now() + Duration::from_secs(8);
    let mut polled = None;
    let mut closed = false;
    let mut said = Vec::new();
    while polled.is_none() && !closed && Instant::now() < until {
        for (pid, mutex, tracer) in &mut watched {
            if let Some(Breakpoint::At([first, _])) =
                tracer.next_break(Instant::now() + Duration::from_millis(1))?
            {
                if first == *mutex && polled.is_none() {
                    polled = Some(PollingLock {
                        pid: *pid,
                        function: tracer.last_break(),
                    });
                }
                tracer.go_on();
            }
        }
        if let Some(message) = session.next_before(Instant::now() + Duration::from_millis(1))? {
            closed = message.kind == "closed" || message.kind == "failed";
            said.push(message);
        }
    }
    for message in said {
        session.set_aside(message);
    }
    let traced = watched.len();
    drop(watched);
    let outcome = session.finish(0, |_| Ok(()));
    if let Some(polled) = polled {
        if outcome.is_err() {
            session.proc.kill_tree();
        }
        let function = POLLING_LOCKS[polled.function].to_str().unwrap_or("?");
        return Err(Fail::failed(format!(
            "a holder (a thread of the grader) died with the bank's mutex locked before the \
             workers started, so the first of them to lock met EOWNERDEAD and repaired; then \
             worker {} called {function}() on the bank's mutex: lock() takes the lock with \
             pthread_mutex_lock() at every call, after a recovery as before; a timed or try \
             lock wakes up by itself, a poll whatever its period (and a holder that dies again \
             is reported by the robust mutex, with EOWNERDEAD, not by a timeout)",
            polled.pid
        )));
    }
    let outcome = outcome?;
    if traced == 0 {
        return Ok(
            "the grader may not trace the workers here: their locks were not watched".into(),
        );
    }
    let recovered: u64 = outcome.workers.values().map(|w| w.recovered).sum();
    Ok(format!(
        "after a holder died with the lock, {recovered} transfer(s) said they recovered it, and \
         every lock of the bank's mutex, before and after, was pthread_mutex_lock() (no try or \
         timed lock, in {traced} worker(s))"
    ))
}
