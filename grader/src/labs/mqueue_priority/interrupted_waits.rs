//! Waits interrupted: SIGUSR1 on every wait, EINTR forced again and again through the tracer,
//! a signal blocked or ignored around a wait; each wait must be made again, as it was.

use std::time::{Duration, Instant};

use ipc_labs_driver::Message;
use nix::sys::signal::Signal;

use super::blocking::{PATIENCE, idle_said, waiting_in};
use super::observe::{Reached, wait_in_call};
use super::protocol::{failed_with, said};
use crate::engine::diagnose::classify;
use crate::engine::inspect::SignalMask;
use crate::engine::tracer::{Action, Call, Tracer};
use crate::engine::{Fail, Proc, Run, inspect};

/// How many times SIGUSR1 interrupts each wait: a retry that gives up after a few is caught.
pub(super) const INTERRUPTIONS: u32 = 6;

/// How many more times in a row, after the signals, the grader makes a waiting call fail with
/// EINTR (with ptrace, without a signal, in a few milliseconds): a retry that gives up after any
/// count a program would pick (8, 10, 100) is caught.
pub(super) const FORCED_EINTRS: u32 = 200;

/// How many EINTRs in a row the grader forces on the waits of `full-queue-blocks`: past 1000
/// and 1024, the round bounds a retry that counts its tries picks.
pub(super) const EINTR_STORM: u32 = 1100;

/// What a process did once the grader had made its waiting call fail with EINTR again and again.
pub(super) enum Forced {
    /// It made the call again every time, and waits in it.
    Retried,
    /// The machine does not allow tracing it (or no thread of it waits in the call).
    Untraced,
    /// It said this after that many failures in a row.
    Said(u32, Message),
    /// After that many failures it no longer makes the call, and says nothing.
    Left(u32),
}

/// The call the main thread of `pid`, held by a tracer at its entry, is making.
pub(super) fn held_call(pid: i32) -> Option<i64> {
    let syscall = std::fs::read_to_string(format!("/proc/{pid}/syscall")).ok()?;
    syscall.split_whitespace().next()?.parse().ok()
}

/// The thread of `pid` that waits in system call `call`, if one does.
fn thread_waiting_in(pid: i32, call: i64) -> Option<i32> {
    inspect::view(pid).and_then(|view| {
        view.threads
            .iter()
            .find(|t| t.syscall.map(|(nr, _)| nr) == Some(call))
            .map(|t| t.tid)
    })
}

/// Whether the thread of `pid` that waits in `call` has SIGUSR1 blocked (its `SigBlk`).
pub(super) fn blocks_sigusr1(pid: i32, call: i64) -> bool {
    thread_waiting_in(pid, call)
        .is_some_and(|tid| inspect::has_signal(pid, tid, SignalMask::Blocked, libc::SIGUSR1))
}

/// How SIGUSR1 is disposed of in `pid` when no handler catches it, as `/proc/PID/status`
/// shows it (`SigIgn`, `SigCgt`): ignored, or at its default disposition (which ends the
/// program), each with an open parenthesis that the message closes; `None` when a handler
/// catches it (or the file is unreadable).
fn sigusr1_disposition(pid: i32) -> Option<&'static str> {
    let has = |mask: SignalMask| {
        inspect::signal_mask(pid, pid, mask).map(|bits| bits & (1 << (libc::SIGUSR1 - 1)) != 0)
    };
    match (has(SignalMask::Ignored)?, has(SignalMask::Caught)?) {
        (true, _) => Some("ignored (SIG_IGN: set in SigIgn"),
        (false, false) => {
            Some("at its default disposition (SIG_DFL: neither in SigIgn nor in SigCgt")
        }
        (false, true) => None,
    }
}

/// The timeout argument of `call` (`mq_timedsend` and `mq_timedreceive` take it fifth) that the
/// thread of `pid` waits in: non-zero for a wait that gives up after a while.
pub(super) fn wait_timeout_argument(pid: i32, call: i64) -> Option<u64> {
    waiting_call_field(pid, call, 5)
}

/// The stack pointer of the thread of `pid` that waits in `call`: a retry in a loop waits again
/// with the same one, a retry that calls itself one frame deeper each time.
pub(super) fn waiting_stack_pointer(pid: i32, call: i64) -> Option<u64> {
    waiting_call_field(pid, call, 7)
}

/// Field `index` of `/proc/PID/task/TID/syscall` (the call's number, its six arguments, the
/// stack pointer, the program counter) of the thread of `pid` that waits in `call`.
fn waiting_call_field(pid: i32, call: i64, index: usize) -> Option<u64> {
    let tid = thread_waiting_in(pid, call)?;
    let syscall = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).ok()?;
    let fields: Vec<&str> = syscall.split_whitespace().collect();
    if fields.first()?.parse::<i64>().ok()? != call {
        return None;
    }
    u64::from_str_radix(fields.get(index)?.trim_start_matches("0x"), 16).ok()
}

/// Makes the call `proc` waits in (`call`, on whichever thread waits in it) fail with EINTR
/// [`FORCED_EINTRS`] times in a row, and sees whether it made the call again each time.
pub(super) fn force_eintrs(proc: &mut Proc, call: i64) -> Result<Forced, Fail> {
    force_eintrs_times(proc, call, FORCED_EINTRS)
}

/// As [`force_eintrs`], `times` times in a row.
pub(super) fn force_eintrs_times(proc: &mut Proc, call: i64, times: u32) -> Result<Forced, Fail> {
    let pid = proc.pid.as_raw();
    let waiting = thread_waiting_in(pid, call);
    let Some(tid) = waiting else {
        return Ok(Forced::Untraced);
    };
    let fail = Action::FailTimes(libc::EINTR, times);
    let Some(mut tracer) = Tracer::attach_thread(pid, tid, Call::any(call), fail)? else {
        return Ok(Forced::Untraced);
    };
    for failed in 0..times {
        // Attaching interrupts the blocked call, which the kernel restarts: the restart fails,
        // and each call after it. A program that gave up makes no more calls of the kind, and
        // says so or not.
        let until = Instant::now() + PATIENCE;
        loop {
            if tracer.failed_before(Instant::now() + Duration::from_millis(5))? {
                break;
            }
            if let Some(message) = proc.recv_before(Instant::now())? {
                return Ok(Forced::Said(failed, message));
            }
            if Instant::now() >= until {
                return Ok(Forced::Left(failed));
            }
        }
    }
    drop(tracer);
    Ok(match wait_in_call(proc, call, PATIENCE)? {
        Reached::InCall => Forced::Retried,
        Reached::Said(message) => Forced::Said(times, message),
        Reached::NotYet => Forced::Left(times),
    })
}

/// Sends SIGUSR1 to the thread of `pid` that waits in `call`, traced through the handler:
/// whether the kernel restarted the call (`Some(true)`) or failed it with EINTR; `None` where
/// it cannot be traced.
pub(super) fn signal_restarts(pid: i32, call: i64) -> Result<Option<bool>, Fail> {
    let waiting = thread_waiting_in(pid, call);
    let Some(tid) = waiting else {
        return Ok(None);
    };
    let until = Instant::now() + PATIENCE;
    Tracer::signal_restarts(pid, tid, Signal::SIGUSR1 as i32, until)
}

/// The failure for a process that waits in `call` (`name` for messages) with SIGUSR1 ignored,
/// at its default disposition or blocked, if it does: a signal sent to it would be discarded,
/// end it or stay pending, never interrupting the wait (and the grader would wait in vain for
/// it to be taken). The forced EINTRs then tell whether it retries EINTR at all, for the
/// message.
pub(super) fn refuse_blocked_sigusr1(
    proc: &mut Proc,
    role: &str,
    call: i64,
    name: &str,
) -> Result<(), Fail> {
    let pid = proc.pid.as_raw();
    let (blocked, dodge, keep) = if let Some(disposition) = sigusr1_disposition(pid) {
        let what = format!(
            "{role} waits in {name} with SIGUSR1 {disposition} of /proc/{pid}/status): main.rs \
             gives SIGUSR1 a handler that does nothing, so that the signal the grader sends to a \
             program waiting on a queue interrupts the wait (EINTR) instead of {}; the library \
             must not change the disposition main.rs set (no signal() or sigaction() of \
             SIGUSR1 in create() or open())",
            if disposition.contains("SIG_IGN") {
                "being discarded"
            } else {
                "killing the program"
            }
        );
        (
            what,
            "ignoring the signal",
            "leave SIGUSR1's handler as main.rs set it",
        )
    } else if blocks_sigusr1(pid, call) {
        let what = format!(
            "{role} waits in {name} with SIGUSR1 blocked (its thread's SigBlk in \
             /proc/PID/task/TID/status): the SIGUSR1 the grader sends to a program waiting on a \
             queue stays pending instead of interrupting the wait; main.rs gives SIGUSR1 a \
             handler so that it interrupts the call (EINTR), and the program must not mask it"
        );
        (
            what,
            "blocking the signal",
            "leave the signal mask as main.rs set it",
        )
    } else {
        return Ok(());
    };
    let retries = match force_eintrs(proc, call)? {
        Forced::Retried => format!(
            ". It does call {name} again when the grader makes it fail with EINTR {FORCED_EINTRS} \
             times (with ptrace), so only that is wrong: {keep}"
        ),
        Forced::Untraced => {
            format!(": {keep}, and call {name} again every time it fails with EINTR")
        }
        Forced::Said(failed, message) => format!(
            "; and after the grader made {name} fail with EINTR {failed} time(s) (with ptrace, \
             as a signal caught by a handler does), it said {}: it does not retry EINTR, and \
             {dodge} only hid that: {keep}, and call {name} again every time it fails with \
             EINTR",
            said(&message)
        ),
        Forced::Left(failed) => format!(
            "; and after the grader made {name} fail with EINTR {failed} time(s) (with ptrace, \
             as a signal caught by a handler does), it no longer waits in {name}: it does not \
             retry EINTR, and {dodge} only hid that: {keep}, and call {name} again every time \
             it fails with EINTR"
        ),
    };
    Err(Fail::failed(format!("{blocked}{retries}")))
}

/// The failure for a process that did not retry every forced EINTR of `call`, if any.
/// `restarted`: whether the kernel restarted its call after a SIGUSR1 (its handler has
/// SA_RESTART), as the last round of signals saw.
pub(super) fn retried_every_eintr(
    run: &mut Run,
    forced: Forced,
    role: &str,
    call: &str,
    restarted: Option<bool>,
    blocked: bool,
) -> Result<(), Fail> {
    let (failed, what) = match forced {
        Forced::Retried => return Ok(()),
        Forced::Untraced => {
            run.note(format!(
                "no ptrace here: {role}'s {call} was interrupted by the signals only"
            ));
            return Ok(());
        }
        Forced::Said(failed, message) => (failed, format!("said {}", said(&message))),
        Forced::Left(failed) => (failed, format!("no longer waits in {call}")),
    };
    if failed <= 1 && blocked {
        return Err(Fail::failed(format!(
            "{role} waits in {call} with SIGUSR1 blocked (its thread's SigBlk in \
             /proc/PID/task/TID/status), so the {INTERRUPTIONS} SIGUSR1 never reached it; then \
             the first time the grader made {call} fail with EINTR (with ptrace, as a signal \
             caught by a handler does), it {what}: it does not retry EINTR, and blocking the \
             signal only hid that. Leave the signal mask as it is and call {call} again every \
             time it fails with EINTR"
        )));
    }
    if failed <= 1 && restarted == Some(true) {
        return Err(Fail::failed(format!(
            "the {INTERRUPTIONS} SIGUSR1 never made {role}'s {call} fail: the grader followed \
             the last one through its handler and saw the kernel restart the call, so the \
             program's SIGUSR1 handler has SA_RESTART (main.rs's has not); then the first time \
             the grader made {call} fail with EINTR (with ptrace, as a signal whose handler has \
             no SA_RESTART does), it {what}: it does not retry EINTR at all, SA_RESTART only \
             hid the signals it covers. Keep main.rs's handler and call {call} again every \
             time it fails with EINTR"
        )));
    }
    if failed <= 1 && restarted == Some(false) {
        return Err(Fail::failed(format!(
            "the {INTERRUPTIONS} SIGUSR1 made {role}'s {call} fail with EINTR (the grader \
             followed the last one through its handler) and it called {call} again each time, \
             but the first EINTR the grader then made without a signal (with ptrace), it {what}: \
             either it gave up after a number of tries (the signals used them up) or it retries \
             only when its own handler ran. A retry must not give up after a number of tries; \
             call {call} again every time it fails with EINTR, whatever caused it"
        )));
    }
    Err(Fail::failed(format!(
        "after the {INTERRUPTIONS} SIGUSR1, the grader made {call} fail with EINTR {failed} \
         more times in a row for {role} (with ptrace, as a signal caught by a handler does), \
         and then it {what}: a retry must not give up after a number of tries; call {call} \
         again every time it fails with EINTR"
    )))
}

/// "the 1st time", "the 2nd time", ... for messages.
pub(super) fn nth_time(round: u32) -> String {
    let suffix = match round {
        1 => "st",
        2 => "nd",
        3 => "rd",
        _ => "th",
    };
    format!("the {round}{suffix} time")
}

/// Where a process went after the grader's SIGUSR1 interrupted its wait in `call`, the
/// `round`th time.
pub(super) fn interrupted(
    reached: Reached,
    pid: i32,
    role: &str,
    call: &str,
    round: u32,
) -> Result<(), Fail> {
    let when = if round == 1 {
        String::new()
    } else {
        format!(
            " {} (it went back into {call} after each of the {} before)",
            nth_time(round),
            round - 1
        )
    };
    let answer = match reached {
        Reached::InCall => return Ok(()),
        Reached::Said(answer) => answer,
        Reached::NotYet => {
            let doing = inspect::view(pid)
                .map(|view| {
                    let syscall = view.threads.first().and_then(|t| t.syscall);
                    waiting_in(&classify(&view, syscall))
                })
                .unwrap_or_else(|| "nowhere: it is gone".into());
            return Err(Fail::failed(format!(
                "after SIGUSR1 interrupted its {call} (EINTR){when}, {role} no longer waits in \
                 it but {doing}: call {call} again when it fails with EINTR"
            )));
        }
    };
    if call == "mq_receive" {
        return Err(idle_said(&answer, true, &when));
    }
    let hint = if failed_with(&answer, "full") {
        "EINTR is not a full queue: "
    } else if round > 1 {
        "a retry must not give up after a number of tries: "
    } else {
        ""
    };
    Err(Fail::failed(format!(
        "after SIGUSR1 interrupted its mq_send on the full queue (EINTR){when}, {role} said {}: \
         {hint}call mq_send again when it fails with EINTR",
        said(&answer)
    )))
}
