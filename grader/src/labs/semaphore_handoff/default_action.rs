//! A signal with no handler does what it does by default, also during a wait: `wait()` leaves
//! signals as the program set them.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::handover::Handover;
use super::probe;
use crate::engine::inspect::{self, SignalMask};
use crate::engine::{Fail, Run};

/// The record before which the producer is held in [`mid_wait`], and the
/// rounds of that run.
const DEFAULT_ACTION_AT: u64 = 2;
const DEFAULT_ACTION_ROUNDS: u64 = 4;
/// How long a process has to end once a signal whose default action ends it was sent.
const DEFAULT_ACTION_LIMIT: Duration = Duration::from_secs(1);

/// A signal with no handler does what it does by default, also during a wait: the grader starts
/// the program without `--interruptible` (no handler for SIGUSR1, whose default action ends the
/// process), holds the producer before a record and sends SIGUSR1 to the consumer in its wait
/// for ready. The consumer must end at once. A wait that catches the signal with a handler of
/// its own (to replay it later), blocks it, or takes it with sigwait() or a signalfd outlives it.
pub fn mid_wait(run: &mut Run, mechanism: &'static str) -> Result<String, Fail> {
    let at = DEFAULT_ACTION_AT.to_string();
    let args = ["--pause-producer-at", at.as_str()];
    let mut handover = Handover::start(run, mechanism, DEFAULT_ACTION_ROUNDS, &args)?;
    let consumer = handover.consumer;
    handover.go()?;
    let paused = handover.proc.recv("paused")?;
    if paused.get("role") != Some("producer") {
        return Err(Fail::Grader("the wrong side paused".into()));
    }
    let until = Instant::now() + Duration::from_secs(1);
    while !(probe::state(consumer) == Some('S') && probe::sample(consumer).is_some()) {
        if Instant::now() > until {
            handover.proc.kill_tree();
            return Ok(format!(
                "{mechanism}: the consumer was not seen waiting, SIGUSR1 not sent"
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let usr1 = Signal::SIGUSR1 as i32;
    let caught = inspect::has_signal(consumer, consumer, SignalMask::Caught, usr1);
    let (blocked, ignored) = (
        inspect::has_signal(consumer, consumer, SignalMask::Blocked, usr1),
        inspect::has_signal(consumer, consumer, SignalMask::Ignored, usr1),
    );
    kill(Pid::from_raw(consumer), Signal::SIGUSR1)
        .map_err(|e| Fail::Grader(format!("kill: {e}")))?;
    let until = Instant::now() + DEFAULT_ACTION_LIMIT;
    while probe::alive(consumer) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
    }
    let outlived = probe::alive(consumer);
    handover.proc.kill_tree();
    if !outlived {
        return Ok(format!(
            "{mechanism}: SIGUSR1 without a handler ended a waiting consumer"
        ));
    }
    let how = if caught {
        "it caught SIGUSR1 with a handler main.rs never installed (SigCgt in \
         /proc/PID/status, read during the wait): a handler of wait()'s own, which keeps the \
         signal from the program"
    } else if blocked {
        "it blocked SIGUSR1 during the wait (SigBlk in /proc/PID/task/TID/status)"
    } else if ignored {
        "it set SIGUSR1 to be ignored during the wait (SigIgn in /proc/PID/status)"
    } else {
        "it neither caught nor blocked it: another thread takes it (sigwait(), a signalfd), \
         or it is held back another way"
    };
    Err(Fail::failed(format!(
        "the grader started the program without --interruptible, so that no handler is \
         installed for SIGUSR1 and its default action ends the process, and sent SIGUSR1 to the \
         consumer in its wait for ready ({mechanism}): the consumer was still alive {} ms \
         later: {how}. wait() must leave signals as the program set them: a handler of the \
         program's runs when its signal comes, and a signal without one does what it does by \
         default, at once",
        DEFAULT_ACTION_LIMIT.as_millis()
    )))
}
