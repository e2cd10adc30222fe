//! What a waiting side does with signals: wait() leaves every signal's action (its handler, the
//! default, ignored) as the program set it, for the whole wait.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::handover::Handover;
use super::probe::{self, Seen};
use crate::engine::inspect::{self, SignalMask};
use crate::engine::process::signal_names;
use crate::engine::{Fail, Run};

/// The record before which the producer is held, and the rounds of the run.
const HELD_AT: u64 = 2;
const ROUNDS: u64 = 4;
/// How often, and how far apart, the waiting consumer's signal actions are read.
const READS: u32 = 4;
const READ_EVERY: Duration = Duration::from_millis(7);
/// How long a process has to end once a signal whose default action ends it was sent.
const END_LIMIT: Duration = Duration::from_millis(500);
/// Signals whose default action ends the process, which the grader may send to show it.
const ENDING: [Signal; 5] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGALRM,
];

/// The ignored and the caught signals of `pid` (`SigIgn`, `SigCgt` in `/proc/PID/status`).
fn actions(pid: i32) -> Option<(u64, u64)> {
    Some((
        inspect::signal_mask(pid, pid, SignalMask::Ignored)?,
        inspect::signal_mask(pid, pid, SignalMask::Caught)?,
    ))
}

/// Whether `pid` sits in a blocking wait now (a futex wait or a queue receive).
fn in_wait(pid: i32) -> bool {
    matches!(
        probe::sample(pid),
        Some(Seen::Futex { .. } | Seen::Receive { .. })
    )
}

/// The grader holds the producer before a record and reads the signal actions of the consumer
/// while it sits in its wait for ready, a few times: they must be those of the parent, which
/// set them before it forked and makes no wait (the program's handler for SIGUSR1, Rust's
/// SIGPIPE ignored, the rest at their default). A wait that ignores signals, or catches them,
/// for its length changes them there; the grader then sends one whose default action ends the
/// process, to show what that does.
pub fn wait_keeps_signal_actions(run: &mut Run, mechanism: &'static str) -> Result<String, Fail> {
    let at = HELD_AT.to_string();
    let args = ["--interruptible", "--pause-producer-at", at.as_str()];
    let mut handover = Handover::start(run, mechanism, ROUNDS, &args)?;
    let (parent, consumer) = (handover.proc.pid.as_raw(), handover.consumer);
    handover.go()?;
    loop {
        let message = handover.proc.recv_any()?;
        match (message.kind.as_str(), message.get("role")) {
            ("paused", Some("producer")) => break,
            ("done", _) => {}
            ("failed", _) => return Err(handover.failure(&message)),
            (kind, _) => {
                return Err(Fail::failed(format!(
                    "the program said an unexpected `{kind}`"
                )));
            }
        }
    }
    let Some((parent_ignored, parent_caught)) = actions(parent) else {
        handover.proc.kill_tree();
        return Ok(format!("{mechanism}: the parent's signal actions not read"));
    };
    let mut changed = None;
    let mut reads = 0;
    let until = Instant::now() + Duration::from_secs(1);
    while reads < READS && Instant::now() < until {
        // Read only while the consumer sits in its wait: before and after the read.
        if in_wait(consumer)
            && let Some((ignored, caught)) = actions(consumer)
            && in_wait(consumer)
        {
            reads += 1;
            if (ignored, caught) != (parent_ignored, parent_caught) {
                changed = Some((ignored, caught));
                break;
            }
            std::thread::sleep(READ_EVERY);
        } else {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let Some((ignored, caught)) = changed else {
        handover.go_on_to_the_end()?;
        return Ok(format!(
            "{mechanism}: the consumer's signal actions in its wait were the program's ({reads} \
             reads)"
        ));
    };
    let mut how = Vec::new();
    let now_ignored = ignored & !parent_ignored;
    let now_caught = caught & !parent_caught;
    let no_longer = (parent_ignored | parent_caught) & !(ignored | caught);
    if now_ignored != 0 {
        how.push(format!(
            "it ignored {} (SigIgn in /proc/PID/status), which the program does not ignore",
            signal_names(now_ignored)
        ));
    }
    if now_caught != 0 {
        how.push(format!(
            "it caught {} with a handler of its own (SigCgt), which the program leaves at its \
             default",
            signal_names(now_caught)
        ));
    }
    if no_longer != 0 {
        how.push(format!(
            "it had set {} back to the default action, which the program catches or ignores",
            signal_names(no_longer)
        ));
    }
    // Shown, not only read: one of them, whose default action ends the process, sent.
    let bit = |signal: Signal| 1u64 << (signal as i32 - 1);
    let shown = ENDING
        .into_iter()
        .find(|&signal| (now_ignored | now_caught) & bit(signal) != 0);
    if let Some(signal) = shown {
        let _ = kill(Pid::from_raw(consumer), signal);
        let until = Instant::now() + END_LIMIT;
        while probe::alive(consumer) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
        if probe::alive(consumer) {
            how.push(format!(
                "the grader sent it {} (its default action ends a process), and it was still \
                 alive {} ms later",
                signal.as_str(),
                END_LIMIT.as_millis()
            ));
        }
    }
    handover.proc.kill_tree();
    Err(Fail::failed(format!(
        "the grader held the producer before record {HELD_AT} and read the signal actions of \
         the consumer in its wait for ready ({mechanism}): they were not those the program set \
         before it forked (the parent's: SigIgn {parent_ignored:#x}, SigCgt {parent_caught:#x}; \
         the waiting consumer's: SigIgn {ignored:#x}, SigCgt {caught:#x}): {}. wait() changes \
         signal actions for its length (sigaction() around the timed wait?), so that Ctrl-C, \
         kill or a hang-up does not do what the program asked. wait() must leave signals as the \
         program set them: a handler of the program's runs when its signal comes, and a signal \
         without one does what it does by default, at once",
        how.join("; ")
    )))
}
