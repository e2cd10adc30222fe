//! An `EINTR` that comes after the slice's deadline is still no timed-out slice: the grader
//! stops the producer inside its timed wait for the last ok, lets the consumer post that ok,
//! exit and be reaped, keeps the producer stopped past the wait's deadline, then interrupts it
//! (SIGUSR1, its handler installed) and lets it go on. Its wait returns `EINTR`, late, with the
//! ok there and the peer gone: it must wait again and take the ok.

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

/// The rounds of the run: the producer is stopped in its wait for the last one's ok.
const ROUNDS: u64 = 8;
/// How long past the latest possible deadline of the stopped wait the producer stays stopped.
const PAST_THE_DEADLINE: Duration = Duration::from_millis(30);

pub fn late_eintr_after_last_ok(run: &mut Run, mechanism: &'static str) -> Result<String, Fail> {
    let last = ROUNDS - 1;
    let at = last.to_string();
    let args = ["--interruptible", "--pause-consumer-at", &at];
    let mut handover = Handover::start(run, mechanism, ROUNDS, &args)?;
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
        let until = Instant::now() + NOTICE_LIMIT;
        while probe::state(consumer).is_some() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
        interrupted = probe::state(consumer).is_none();
        std::thread::sleep(past_deadline.saturating_duration_since(Instant::now()));
        kill(Pid::from_raw(producer), Signal::SIGUSR1)
            .map_err(|e| Fail::Grader(format!("kill: {e}")))?;
        force::resume(producer)
    });
    let reports = match result {
        Err(Fail::Failed(message))
            if interrupted && message.contains("the producer gave up with kind=peer-gone") =>
        {
            return Err(Fail::failed(format!(
                "the grader stopped the producer inside its timed wait for the ok of the last \
                 record ({last}), let the consumer take that record, post ok, exit and be \
                 reaped, kept the producer stopped until its wait's deadline had passed, then \
                 interrupted the wait with SIGUSR1 (a handler installed) and let it go on: the \
                 producer gave up with kind=peer-gone, though the ok was there ({mechanism}). \
                 An EINTR that comes after the deadline is still no timed-out slice (the \
                 producer's earlier, quick EINTR was waited through): wait() took it for one \
                 (the clock past the deadline?) and asked Peer::gone(). EINTR: wait again, \
                 whenever it comes; only ETIMEDOUT is a slice that timed out, and a signal \
                 already there is taken first"
            )));
        }
        other => other?,
    };
    handover.verify(&reports, &format!("{ROUNDS} rounds with {mechanism}"))?;
    Ok(format!(
        "{mechanism}: {}",
        if interrupted {
            "the producer, interrupted past its wait's deadline once the consumer had posted its \
             last ok and exited, took that ok"
        } else {
            "the producer was not stopped inside its wait (the late EINTR after the last ok not \
             tried)"
        }
    ))
}
