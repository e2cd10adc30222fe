//! A peer that moves, then stalls: the grader, as a sender's receiver, takes a chunk while the
//! sender waits on a full ring, and then frees nothing. The sender's wait must end at its own
//! deadline, the timeout after that wait began: a peer that took a chunk and stopped is as
//! stuck as one that never came, and a wait extended because the peer moved is longer than its
//! timeout.

use std::time::{Duration, Instant};

use super::layout::{MIN_SEGMENT, Sem, expected_capacity};
use super::signals::{realtime, timed_wait};
use super::transfer::{Sender, Setup, failure, start_sender};
use crate::engine::{Fail, Run};

/// The sender's timeout: short, so that its wait ends well inside the check.
const TIMEOUT_MS: u64 = 300;

/// How long past its deadline the sender may take to answer, on a loaded machine.
const SETTLE: Duration = Duration::from_secs(3);

/// A sender of 3 chunks, the grader its receiver: once the sender waits on `empty` for chunk 2
/// (the ring full), the grader takes `full` for chunk 0 and then stalls. The sender must say
/// `failed` (kind=timeout) once that wait's deadline has passed, not wait again.
pub struct StalledReceiver {
    sender: Sender,
}

impl StalledReceiver {
    pub fn start(run: &mut Run) -> Result<StalledReceiver, Fail> {
        let c = expected_capacity(MIN_SEGMENT) as u64;
        let mut setup = Setup::new(MIN_SEGMENT, vec![3 * c]);
        setup.save = false;
        setup.timeout_ms = TIMEOUT_MS;
        let sender = start_sender(run, &setup)?;
        // The grader is the receiver: it unlinks the name once it has the segment.
        let _ = nix::sys::mman::shm_unlink(sender.name.as_str());
        Ok(StalledReceiver { sender })
    }

    pub fn run(self) -> Result<String, Fail> {
        let mut sender = self.sender;
        let pid = sender.proc.pid.as_raw();
        let setting = format!(
            "a sender of a 3-chunk message (timeout {TIMEOUT_MS} ms), the grader its receiver, \
             which took chunk 0 (its `full`) once the sender waited on `empty` for chunk 2 and \
             then freed no slot"
        );
        sender.proc.send("go", &[])?;
        // The ring full, the sender asleep in its wait for a slot: the deadline of that wait.
        let until = Instant::now() + SETTLE;
        let first = loop {
            if sender.mapped.value(Sem::Full) == 2
                && let Some(wait) = timed_wait(pid)
            {
                break wait;
            }
            if let Some(said) = sender
                .proc
                .recv_before(Instant::now() + Duration::from_millis(1))?
            {
                return Err(Fail::failed(format!(
                    "{setting}: the sender said `{}` ({}) before it filled both slots and waited",
                    said.kind,
                    failure(&said)
                )));
            }
            if Instant::now() >= until {
                // A sender that never sleeps in a timed wait is judged by the checks of blocking.
                sender.proc.kill_tree();
                return Ok(
                    "a sender never seen asleep on a full ring (judged by the checks of \
                           blocking)"
                        .into(),
                );
            }
        };
        // The peer moves during that wait: it takes chunk 0, then frees nothing.
        sender.mapped.wait(Sem::Full, Duration::ZERO);
        let ahead = first.deadline.saturating_sub(realtime());
        let until = Instant::now() + ahead + SETTLE;
        let mut again = None;
        let answer = loop {
            if let Some(said) = sender
                .proc
                .recv_before(Instant::now() + Duration::from_millis(2))?
            {
                break Some(said);
            }
            if again.is_none()
                && realtime() > first.deadline
                && let Some(wait) = timed_wait(pid).filter(|w| w.deadline > first.deadline)
            {
                again = Some(wait);
            }
            if Instant::now() >= until {
                break None;
            }
        };
        sender.proc.kill_tree();
        if let Some(next) = again {
            return Err(Fail::failed(format!(
                "{setting}: the sender's wait on `empty` had the deadline {:.3} s (the timeout \
                 after it began); it passed with nothing posted on `empty` and no signal sent, and \
                 the sender waited again, until {:.3} s ({} ms later), instead of giving up: a wait \
                 is extended because the other side moved meanwhile (it took a chunk). A peer \
                 that took a chunk and then stalls is as stuck as one that never came: once the \
                 deadline of a wait (CLOCK_REALTIME at its start + the timeout) passes, the wait \
                 ends with TransferError::Timeout",
                first.deadline.as_secs_f64(),
                next.deadline.as_secs_f64(),
                (next.deadline - first.deadline).as_millis()
            )));
        }
        match answer {
            Some(said) if said.kind == "failed" && said.get("kind") == Some("timeout") => {
                Ok(format!(
                    "a sender whose receiver took a chunk during its wait on a full ring, then stalled, \
                 gave up at that wait's deadline (timeout {TIMEOUT_MS} ms)"
                ))
            }
            Some(said) => Err(Fail::failed(format!(
                "{setting}: the sender said `{}` ({}) where its wait on `empty` for chunk 2 had \
                 to end with kind=timeout",
                said.kind,
                failure(&said)
            ))),
            None => Err(Fail::failed(format!(
                "{setting}: the sender's wait on `empty` had the deadline {:.3} s; {} ms past it the \
                 sender had not given up (kind=timeout): a wait ends at its deadline, CLOCK_REALTIME \
                 at its start + the timeout",
                first.deadline.as_secs_f64(),
                SETTLE.as_millis()
            ))),
        }
    }
}
