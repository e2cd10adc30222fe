//! What the handoff leaves of the processes it runs in: `create()`, whether it succeeds or
//! fails, leaves the parent's signal mask, its signals' actions and its CPU affinity as
//! `main.rs` set them, and the sides inherit them as they were. Read from `/proc` (`SigBlk` of
//! every thread, `SigIgn`, `SigCgt`, `sched_getaffinity()`).

use nix::sys::signal::Signal;

use super::handover::Handover;
use super::rounds::cpus_of;
use super::{CONSUMER, PARENT, PRODUCER};
use crate::engine::Fail;
use crate::engine::inspect::{self, SignalMask};
use crate::engine::process::signal_names;

/// Signals `main.rs` leaves at their default action, each of which ends the process: a Ctrl-C,
/// a `kill`, a hang-up, a timer the user set.
const LEFT_AT_DEFAULT: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGALRM,
    Signal::SIGUSR2,
];

fn bit(signal: Signal) -> u64 {
    1u64 << (signal as i32 - 1)
}

/// The signals blocked by any thread of `pid` (the union of their `SigBlk`).
fn blocked_by_any_thread(pid: i32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|task| task.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|tid| inspect::signal_mask(pid, tid, SignalMask::Blocked))
        .fold(0, |all, mask| all | mask)
}

/// What `pid` does with signals that `main.rs` leaves alone: each change with its likely
/// cause, empty if none.
fn signal_changes(pid: i32) -> Vec<(String, &'static str)> {
    // Nothing to tell of a process whose status cannot be read.
    let Some(ignored) = inspect::signal_mask(pid, pid, SignalMask::Ignored) else {
        return Vec::new();
    };
    let caught = inspect::signal_mask(pid, pid, SignalMask::Caught).unwrap_or(0);
    let left: u64 = LEFT_AT_DEFAULT.into_iter().map(bit).sum();
    let mut changes = Vec::new();
    let blocked = blocked_by_any_thread(pid);
    if blocked != 0 {
        changes.push((
            format!(
                "it blocked {} (SigBlk in /proc/PID/task/TID/status), which main.rs never \
                 blocks",
                signal_names(blocked)
            ),
            "a mask set with sigprocmask() and restored only on the path that succeeds, or not \
             at all",
        ));
    }
    let ignored = ignored & left;
    if ignored != 0 {
        changes.push((
            format!(
                "it ignored {} (SigIgn in /proc/PID/status), which main.rs leaves at the \
                 default action",
                signal_names(ignored)
            ),
            "SIG_IGN set for them, so that nothing can stop the run",
        ));
    }
    let caught = caught & left;
    if caught != 0 {
        changes.push((
            format!(
                "it caught {} with a handler (SigCgt in /proc/PID/status), which main.rs \
                 leaves at the default action",
                signal_names(caught)
            ),
            "a handler of the handoff's own installed for them",
        ));
    }
    changes
}

/// The parent, its `create()` returned (`after`: how, in words), has signals as `main.rs` set
/// them: none blocked, none of those `main.rs` leaves at their default ignored or caught.
/// `created`: whether `create()` succeeded, so that both sides inherit what it left.
pub(super) fn signals_as_main_set(pid: i32, after: &str, created: bool) -> Result<(), Fail> {
    let changes = signal_changes(pid);
    if changes.is_empty() {
        return Ok(());
    }
    let (seen, causes): (Vec<String>, Vec<&str>) = changes.into_iter().unzip();
    let who = if created {
        "in the parent and in both sides, which inherit it"
    } else {
        "in the parent, which goes on after the failure"
    };
    Err(Fail::failed(format!(
        "{after}, the grader read the parent's signals while it waited for the grader: {}. \
         Handoff::create() changed them and left them so ({}): Ctrl-C, kill or a hang-up no \
         longer does what the program asked, {who}. Signals are main.rs's: create() leaves the \
         mask and every action as it found them, on every path, failed or not",
        seen.join("; "),
        causes.join("; ")
    )))
}

/// Started with `--cpu CPU`, at `ready`: the parent and both sides may run on that CPU only, as
/// `main.rs` set before `create()`.
pub(super) fn pinned_as_asked(
    handover: &Handover,
    mechanism: &str,
    cpu: usize,
) -> Result<(), Fail> {
    let sides = [
        (PARENT, handover.proc.pid.as_raw()),
        (PRODUCER, handover.producer),
        (CONSUMER, handover.consumer),
    ];
    let moved: Vec<String> = sides
        .iter()
        .filter_map(|&(role, pid)| match cpus_of(pid) {
            Some(theirs) if theirs != [cpu] => Some(format!("{role} may run on {theirs:?}")),
            _ => None,
        })
        .collect();
    if moved.is_empty() {
        return Ok(());
    }
    Err(Fail::failed(format!(
        "started with --cpu {cpu} ({mechanism}), which main.rs applies before Handoff::create(), \
         at ready the processes were not on CPU {cpu} alone (their affinity, \
         sched_getaffinity(): {}): create() (or a call the sides make before ready) changed \
         the CPU affinity (sched_setaffinity()), which undoes --cpu, and a pinned run is then \
         no pinned run. Where the sides run is main.rs's to say; the handoff leaves the \
         affinity as it found it, at every call",
        moved.join(", ")
    )))
}
