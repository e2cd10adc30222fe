//! Signals the coordinator may be sent while it waits: none of them wakes its wait. A worker's
//! exit sends it `SIGCHLD`; a handler that broadcasts `all_done` there (or on a timer's
//! signal) is a second way of being woken, besides the workers' broadcasts.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::probe::{self, Place, Sleep};
use super::session::Session;
use crate::engine::Fail;
use crate::engine::inspect::{self, SignalMask};

/// The signals sent: `SIGCHLD` always (ignored unless caught, as a worker's exit sends it),
/// the others only when the coordinator catches them (their default would end it).
const SENT: &[Signal] = &[
    Signal::SIGCHLD,
    Signal::SIGALRM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGURG,
    Signal::SIGIO,
];

fn asleep_on_cond(session: &Session) -> bool {
    match probe::sleeping(session.coordinator) {
        Sleep::Futex { address } => {
            probe::place(
                session.coordinator,
                &session.name,
                &session.segment.layout,
                address,
            ) == Place::Cond
        }
        _ => false,
    }
}

/// With no worker started and the coordinator asleep on `all_done`, the grader sends it each
/// signal above in turn; the condition variable's bytes must be the same once it is asleep
/// there again: a broadcast or signal of `all_done` (or a new wait after a wake-up) changes
/// them.
pub(super) fn no_wakeup_by_signals(session: &Session) -> Result<(), Fail> {
    let coordinator = session.coordinator;
    let cond_at = session.segment.layout.cond_at;
    let handlers = inspect::signal_mask(coordinator, coordinator, SignalMask::Caught).unwrap_or(0);
    for &signal in SENT {
        let handled = handlers & (1 << (signal as i32 - 1)) != 0;
        if signal != Signal::SIGCHLD && !handled {
            continue;
        }
        if !asleep_on_cond(session) {
            return Ok(());
        }
        let before = session.segment.read::<48>(cond_at)?;
        kill(Pid::from_raw(coordinator), signal)
            .map_err(|e| Fail::Grader(format!("kill({signal}): {e}")))?;
        std::thread::sleep(Duration::from_millis(20));
        let until = Instant::now() + Duration::from_millis(500);
        while !asleep_on_cond(session) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
        if session.segment.read::<48>(cond_at)? == before {
            continue;
        }
        let how = if handled {
            format!(
                "it catches {signal} (a handler: SigCgt in /proc/{coordinator}/status), and \
                 the handler woke the wait"
            )
        } else {
            format!("something in it answered {signal} by waking the wait")
        };
        return Err(Fail::failed(format!(
            "while no worker had started, the coordinator slept on the condition variable; \
             the grader sent it {signal}{} and the condition variable all_done in the segment \
             changed (a broadcast or signal of it, or the coordinator woken and waiting \
             anew), with no worker finished: {how}, a second way of being woken besides the \
             workers' broadcasts (and pthread_cond_broadcast() is not async-signal-safe); \
             only finish()'s broadcast (finished += 1 under the lock, then \
             pthread_cond_broadcast()) and recover()'s wake the wait",
            if signal == Signal::SIGCHLD {
                " (as each worker's exit does)"
            } else {
                ""
            }
        )));
    }
    Ok(())
}
