//! Breakpoints at the C library's lock functions in one process, telling which of them it
//! calls on the bank's mutex (by the mutex's address there: the C library locks mutexes of its
//! own too): a lock that meets `ENOTRECOVERABLE` calls `pthread_mutex_lock()` once, and a
//! waiter calls it at once, with no try or timed lock before it.

use std::time::Instant;

use crate::engine::Fail;
use crate::engine::tracer::{Breakpoint, Tracer};

/// The lock functions, in the order of [`LockCalls::next`]'s answers.
const FUNCTIONS: [&std::ffi::CStr; 4] = [
    c"pthread_mutex_lock",
    c"pthread_mutex_trylock",
    c"pthread_mutex_timedlock",
    c"pthread_mutex_clocklock",
];
/// As [`FUNCTIONS`] with `fork()` in the place of the rarest lock, `pthread_mutex_clocklock()`:
/// the coordinator forks its workers right after its tried transfers, which ends the count.
const UNTIL_FORK: [&std::ffi::CStr; 4] = [
    c"pthread_mutex_lock",
    c"pthread_mutex_trylock",
    c"pthread_mutex_timedlock",
    c"fork",
];
/// [`UNTIL_FORK`]'s index of `fork()`.
const FORK: usize = 3;
/// [`FUNCTIONS`]' index of `pthread_mutex_lock()`.
pub(super) const LOCK: usize = 0;

/// The name of [`FUNCTIONS`]`[which]`, for messages.
pub(super) fn function_name(which: usize) -> &'static str {
    FUNCTIONS
        .get(which)
        .and_then(|f| f.to_str().ok())
        .unwrap_or("?")
}

pub(super) struct LockCalls {
    breaking: Tracer,
    mutex: u64,
}

/// What came next from a process whose lock calls are watched.
pub(super) enum LockEvent {
    /// It is stopped at a call of [`FUNCTIONS`]`[which]` on the mutex, until
    /// [`LockCalls::go_on`].
    Call(usize),
    /// Nothing before the time given.
    Nothing,
    /// The breakpoints could not be set, or the tracer lost the process.
    Lost,
}

impl LockCalls {
    /// `None` where the grader cannot set the breakpoints.
    pub(super) fn start(pid: i32, mutex: u64) -> Result<Option<LockCalls>, Fail> {
        Ok(Tracer::break_at_functions(pid, &FUNCTIONS)?
            .map(|breaking| LockCalls { breaking, mutex }))
    }

    /// The next call on the mutex before `until`; calls on other mutexes are let go.
    pub(super) fn next(&mut self, until: Instant) -> Result<LockEvent, Fail> {
        loop {
            match self.breaking.next_break(until)? {
                Some(Breakpoint::At([first, _])) if first == self.mutex => {
                    return Ok(LockEvent::Call(self.breaking.last_break()));
                }
                Some(Breakpoint::At(_)) => self.breaking.go_on(),
                Some(Breakpoint::Armed) => {}
                None => return Ok(LockEvent::Nothing),
                Some(Breakpoint::Lost | Breakpoint::Unavailable) => return Ok(LockEvent::Lost),
            }
        }
    }

    /// Lets the process stopped at a call go on.
    pub(super) fn go_on(&mut self) {
        self.breaking.go_on();
    }

    /// Breakpoints at the lock functions but `pthread_mutex_clocklock()`, and at `fork()`, for
    /// [`LockCalls::until_fork`].
    pub(super) fn start_until_fork(pid: i32, mutex: u64) -> Result<Option<LockCalls>, Fail> {
        Ok(Tracer::break_at_functions(pid, &UNTIL_FORK)?
            .map(|breaking| LockCalls { breaking, mutex }))
    }

    /// Counts the lock calls on the mutex until the program's first `fork()` (`None`: no fork
    /// before `until`, or the tracer lost the program). The program's messages are left to be
    /// read afterwards.
    pub(super) fn until_fork(mut self, until: Instant) -> Result<Option<u32>, Fail> {
        let mut calls = 0;
        loop {
            match self.breaking.next_break(until)? {
                Some(Breakpoint::At(_)) if self.breaking.last_break() == FORK => {
                    self.breaking.go_on();
                    return Ok(Some(calls));
                }
                Some(Breakpoint::At([first, _])) => {
                    calls += u32::from(first == self.mutex);
                    self.breaking.go_on();
                }
                Some(Breakpoint::Armed) => {}
                None | Some(Breakpoint::Lost | Breakpoint::Unavailable) => return Ok(None),
            }
        }
    }
}
