//! Breakpoints at the C library's lock functions in one process, telling which of them it
//! calls on the bank's mutex (by the mutex's address there: the C library locks mutexes of its
//! own too): a lock that meets `ENOTRECOVERABLE` calls `pthread_mutex_lock()` once, and a
//! waiter calls it at once, with no try or timed lock before it.

use std::time::{Duration, Instant};

use ipc_labs_driver::Message;

use crate::engine::tracer::{Breakpoint, Tracer};
use crate::engine::{Fail, Proc};

/// The lock functions, in the order of [`LockCalls::next`]'s answers.
const FUNCTIONS: [&std::ffi::CStr; 4] = [
    c"pthread_mutex_lock",
    c"pthread_mutex_trylock",
    c"pthread_mutex_timedlock",
    c"pthread_mutex_clocklock",
];
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

    /// Counts the calls on the mutex until the program's next message (`None`: none before
    /// `until`, or the tracer lost the program).
    pub(super) fn until_message(
        mut self,
        proc: &mut Proc,
        until: Instant,
    ) -> Result<(u32, Option<Message>), Fail> {
        let mut calls = 0;
        loop {
            match self.next(Instant::now() + Duration::from_millis(5))? {
                LockEvent::Call(_) => {
                    // A message already sent came before this call (the program is stopped
                    // at it): the call is not the one counted.
                    let said = proc.recv_before(Instant::now())?;
                    if said.is_none() {
                        calls += 1;
                    }
                    self.go_on();
                    if said.is_some() {
                        return Ok((calls, said));
                    }
                    continue;
                }
                LockEvent::Lost => return Ok((calls, None)),
                LockEvent::Nothing => {}
            }
            if let Some(message) = proc.recv_before(Instant::now())? {
                return Ok((calls, Some(message)));
            }
            if Instant::now() > until {
                return Ok((calls, None));
            }
        }
    }
}
