//! The ok of the last record comes while the producer's wait is interrupted: the grader stops
//! the producer inside its timed wait for that ok, lets the consumer take the record, post ok,
//! exit and be reaped, then interrupts the producer (SIGUSR1, its handler installed) and lets it
//! go on, in time or kept stopped until past the wait's deadline. Its wait returns `EINTR` with
//! the ok there and the peer gone: it must wait again and take the ok, not give up. An `EINTR`
//! that comes after the slice's deadline is still no timed-out slice.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::WAIT_SLICE;
use super::forced_waits::realtime;
use super::handover::Handover;
use super::peer_gone::stop_inside_wait;
use super::probe;
use super::waits::NOTICE_LIMIT;
use crate::engine::{Fail, Run, force};

/// When the stopped producer's wait is interrupted.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Interrupted {
    /// As soon as the consumer is gone.
    InTime,
    /// Once the wait's deadline has passed: the `EINTR` comes late.
    PastTheDeadline,
}

/// How long past the latest possible deadline of the stopped wait the producer stays stopped.
const PAST_THE_DEADLINE: Duration = Duration::from_millis(30);

pub fn eintr_after_last_ok(
    run: &mut Run,
    mechanism: &'static str,
    when: Interrupted,
) -> Result<String, Fail> {
    let late = when == Interrupted::PastTheDeadline;
    // The rounds of the run: the producer is stopped in its wait for the last one's ok.
    let rounds: u64 = if late { 8 } else { 20 };
    let last = rounds - 1;
    let at = last.to_string();
    let args = ["--interruptible", "--pause-consumer-at", &at];
    let mut handover = Handover::start(run, mechanism, rounds, &args)?;
    let (producer, consumer) = (handover.producer, handover.consumer);
    let mut interrupted = false;
    let result = handover.finish(|proc, _| {
        if !stop_inside_wait(producer)? {
            return proc.send("go", &[]);
        }
        // The stopped wait's deadline, read from its memory; else at most a slice from now,
        // read from the clock before the stop.
        let past_deadline = match probe::realtime_deadline(producer) {
            Some(deadline) => {
                Instant::now() + deadline.saturating_sub(realtime()) + PAST_THE_DEADLINE
            }
            None => Instant::now() + WAIT_SLICE + PAST_THE_DEADLINE,
        };
        proc.send("go", &[])?;
        interrupted = probe::gone_within(consumer, NOTICE_LIMIT);
        if late {
            std::thread::sleep(past_deadline.saturating_duration_since(Instant::now()));
        }
        kill(Pid::from_raw(producer), Signal::SIGUSR1)
            .map_err(|e| Fail::Grader(format!("kill: {e}")))?;
        force::resume(producer)
    });
    let reports = match result {
        Err(Fail::Failed(message))
            if interrupted && message.contains("the producer gave up with kind=peer-gone") =>
        {
            return Err(Fail::failed(if late {
                format!(
                    "the grader stopped the producer inside its timed wait for the ok of the \
                     last record ({last}), let the consumer take that record, post ok, exit and \
                     be reaped, kept the producer stopped until its wait's deadline had passed, \
                     then interrupted the wait with SIGUSR1 (a handler installed) and let it go \
                     on: the producer gave up with kind=peer-gone, though the ok was there \
                     ({mechanism}). An EINTR that comes after the deadline is still no timed-out \
                     slice (the producer's earlier, quick EINTR was waited through): wait() took \
                     it for one (the clock past the deadline?) and asked Peer::gone(). EINTR: \
                     wait again, whenever it comes; only ETIMEDOUT is a slice that timed out, and \
                     a signal already there is taken first"
                )
            } else {
                format!(
                    "the grader stopped the producer inside its timed wait for the ok of the \
                     last record ({last}), let the consumer take that record, post ok, exit and \
                     be reaped, then interrupted the producer's wait with SIGUSR1 (a handler \
                     installed) and let it go on: the producer gave up with kind=peer-gone, \
                     though the ok was there ({mechanism}). A wait that a signal handler \
                     interrupts (EINTR) waits again, and so takes a signal already there; ask \
                     Peer::gone() only when a slice has timed out"
                )
            }));
        }
        other => other?,
    };
    handover.verify(&reports, &format!("{rounds} rounds with {mechanism}"))?;
    Ok(format!(
        "{mechanism}: {}",
        match (interrupted, late) {
            (true, true) => {
                "the producer, interrupted past its wait's deadline once the consumer had posted \
                 its last ok and exited, took that ok"
            }
            (true, false) => {
                "the producer, interrupted once the consumer had posted its last ok and exited, \
                 took that ok"
            }
            (false, true) => {
                "the producer was not stopped inside its wait (the late EINTR after the last ok \
                 not tried)"
            }
            (false, false) => {
                "the producer was not stopped inside its wait (the EINTR after the last ok not \
                 tried)"
            }
        }
    ))
}
