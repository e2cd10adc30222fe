//! What a wait costs: the calls a consumer makes before and between its receives, the context
//! switches of an idle one, and the memory its retries keep.

use std::time::{Duration, Instant};

use super::blocking::{IDLE, PATIENCE, RECEIVE};
use super::interrupted_waits::{
    FORCED_EINTRS, Forced, force_eintrs, held_call, waiting_stack_pointer,
};
use super::jobs::Job;
use super::observe::{Reached, wait_in_call};
use super::protocol::{grader_send, job_message, said};
use crate::engine::diagnose::{self};
use crate::engine::tracer::{Action, Call, Step, Tracer};
use crate::engine::{Fail, Run};

/// How many system calls a consumer may make between `go` and its first `mq_receive` on an
/// empty queue: reading `go` and the few calls of its way to the receive. A receive() that
/// looks at the queue (mq_getattr, sched_yield) in a loop before it sleeps makes hundreds.
const CALLS_BEFORE_RECEIVING: u64 = 40;

/// The voluntary context switches of `pid`'s main thread, from `/proc/PID/status`.
fn voluntary_switches(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))?
        .trim()
        .parse()
        .ok()
}

/// Lets the consumer of an empty queue go, traced until its first `mq_receive`: each system
/// call it makes on the way stops it for the tracer (twice: at entry and at return), which its
/// voluntary context switches count. The reference makes a handful; a receive() that polls the
/// empty queue before it sleeps (mq_getattr and sched_yield in a loop) makes hundreds, burning
/// CPU where the wait belongs inside mq_receive. The count is judged as it goes: once it is over
/// [`CALLS_BEFORE_RECEIVING`] the verdict is the same whether the receive has come yet or not,
/// however slowly a loaded machine runs the loop.
pub(super) fn calls_before_receiving(idle: &mut super::protocol::Consumer) -> Result<(), Fail> {
    /// Its first `mq_receive`, or the first call it waits in otherwise (`poll()`, a
    /// `sigtimedwait()` after `mq_notify()`, a sleep...: the checks below say what is wrong with
    /// that); not `sched_yield()`, which a loop that looks at the queue makes at each turn.
    const RECEIVE_OR_WAIT: [Call; 13] = [
        Call::any(RECEIVE),
        Call::any(libc::SYS_poll),
        Call::any(libc::SYS_ppoll),
        Call::any(libc::SYS_select),
        Call::any(libc::SYS_pselect6),
        Call::any(libc::SYS_epoll_wait),
        Call::any(libc::SYS_epoll_pwait),
        Call::any(libc::SYS_rt_sigtimedwait),
        Call::any(libc::SYS_rt_sigsuspend),
        Call::any(libc::SYS_pause),
        Call::any(libc::SYS_nanosleep),
        Call::any(libc::SYS_clock_nanosleep),
        Call::any(libc::SYS_futex),
    ];
    let pid = idle.pid();
    // Reported, not held: a wait the grader holds and lets go is restarted (restart_syscall),
    // which the checks that follow would see instead of the call the program made.
    let tracer = Tracer::attach(pid, Call::any_of(&RECEIVE_OR_WAIT), Action::Report)?;
    let before = voluntary_switches(pid);
    idle.go()?;
    let Some(mut tracer) = tracer else {
        return Ok(());
    };
    let calls_since_go = || match (before, voluntary_switches(pid)) {
        (Some(before), Some(now)) => now.saturating_sub(before) / 2,
        _ => 0,
    };
    let until = Instant::now() + PATIENCE;
    let (reported, calls) = loop {
        if let Some(answer) = idle.proc.recv_before(Instant::now())? {
            return Err(Fail::failed(format!(
                "{IDLE}, let go, said {} before it called mq_receive: serve() waits for a \
                 message inside mq_receive",
                said(&answer)
            )));
        }
        let reported = tracer.failed_before(Instant::now() + Duration::from_millis(5))?;
        let calls = calls_since_go();
        if reported || calls > CALLS_BEFORE_RECEIVING || Instant::now() >= until {
            break (reported, calls);
        }
    };
    drop(tracer);
    if calls <= CALLS_BEFORE_RECEIVING {
        // Its wait reached within the allowance, or not reached at all in PATIENCE with few
        // calls: what it waits in (or does) is left to the checks that follow.
        return Ok(());
    }
    // The call reported is the one it waits in now; one other than mq_receive is named.
    let other_wait = held_call(pid)
        .filter(|&nr| reported && nr != RECEIVE)
        .map(|nr| diagnose::call_name(nr).unwrap_or("another call"));
    let until = match other_wait {
        Some(call) => format!("its first wait ({call})"),
        None => "its first mq_receive".to_string(),
    };
    Err(Fail::failed(format!(
        "{IDLE} made more than {CALLS_BEFORE_RECEIVING} system calls between `go` and {until} \
         (the grader traced it: each call stops it twice; {calls} counted when it stopped \
         counting), where a handful do: it looks at the empty queue in a loop (mq_getattr, \
         sched_yield) before it waits. receive() calls mq_receive at once and waits inside it, \
         using no CPU while the queue is empty"
    )))
}

/// How many system calls a consumer may make between taking a job from its queue and its next
/// `mq_receive` on the (then empty) queue, besides those two receives: its handler writes the
/// small job to a buffer, and the reference makes none. A receive() that looks at the queue
/// (mq_getattr) in a loop before it waits makes one call per look, at every receive.
const CALLS_BETWEEN_RECEIVES: u64 = 4;
/// How many jobs the grader sends one at a time, each to an empty queue, to judge the receives
/// after the first.
const ROUNDS: usize = 3;

/// The consumer of an empty queue, waiting in `mq_receive`, is sent one job at a time; each
/// time it is traced from the receive that takes the job to its next `mq_receive`, and the
/// calls in between are counted (its voluntary context switches: two per traced call, and the
/// receive's own sleep). Every receive on an empty queue must go straight to its wait, not only
/// the first after `go`.
pub(super) fn calls_between_receives(
    run: &mut Run,
    consumer: &mut super::protocol::Consumer,
) -> Result<Vec<Job>, Fail> {
    let pid = consumer.pid();
    let mut sent = Vec::new();
    for round in 1..=ROUNDS {
        match wait_in_call(&mut consumer.proc, RECEIVE, PATIENCE)? {
            Reached::InCall => {}
            Reached::Said(answer) => {
                return Err(Fail::failed(format!(
                    "{IDLE} said {} after the grader sent it {} job(s) one at a time: it serves \
                     each job and waits in mq_receive for the next",
                    said(&answer),
                    round - 1
                )));
            }
            // Not back in its wait: left to the checks of its serving (it is sent the shutdown).
            Reached::NotYet => return Ok(sent),
        }
        // The receive it waits in, interrupted by the attach and restarted, takes the job; the
        // program is held at the entry of the next one.
        let steps = [
            (Call::any(RECEIVE), Step::Pass),
            (Call::any(RECEIVE), Step::Hold),
        ];
        let Some(mut tracer) = Tracer::in_turn(pid, steps)? else {
            run.note("no ptrace here: the receives after a job were not traced");
            return Ok(sent);
        };
        let before = voluntary_switches(pid);
        let job = Job {
            priority: 1,
            payload: format!("job {round} of {ROUNDS}, sent alone").into_bytes(),
        };
        grader_send(&consumer.name, &[job_message(&job)])?;
        sent.push(job);
        let until = Instant::now() + PATIENCE;
        let held = loop {
            if tracer.held_before(Instant::now() + Duration::from_millis(5))? {
                break true;
            }
            if let Some(answer) = consumer.proc.recv_before(Instant::now())? {
                return Err(Fail::failed(format!(
                    "{IDLE} said {} after the grader sent it job {round} alone: it serves each \
                     job and waits in mq_receive for the next",
                    said(&answer)
                )));
            }
            if Instant::now() >= until {
                break false;
            }
        };
        let after = voluntary_switches(pid);
        tracer.release();
        // The receive that took the job (its entry and return) and the next one's entry, and
        // the sleep before the job came: two calls' worth.
        let calls = match (before, after) {
            (Some(before), Some(after)) => (after.saturating_sub(before) / 2).saturating_sub(2),
            _ => 0,
        };
        if calls > CALLS_BETWEEN_RECEIVES {
            let next = if held {
                "its next mq_receive"
            } else {
                "its next mq_receive (not reached in 3 s)"
            };
            return Err(Fail::failed(format!(
                "{IDLE} made about {calls} system calls between taking job {round} (sent alone, \
                 the queue then empty) from the queue and {next}, where at most \
                 {CALLS_BETWEEN_RECEIVES} may come between (the grader traced it: each call \
                 stops it twice): a receive that looks at the empty queue (mq_getattr) before \
                 every wait makes one call per look, each time the queue runs empty. receive() \
                 calls mq_receive at once, every time, and waits inside it"
            )));
        }
        if !held {
            return Ok(sent);
        }
    }
    Ok(sent)
}

/// How much a consumer's memory (`VmData` and `VmStk` of `/proc/PID/status`, in kB) may grow
/// while the grader makes its `mq_receive` fail with EINTR [`FORCED_EINTRS`] times: a retry in
/// a loop keeps nothing per EINTR and the reference grows by none; a retry that keeps a
/// receive buffer of 8192 bytes per EINTR grows by 1600 kB.
const RETRY_GROWTH_KB: u64 = 256;

/// How much lower a consumer's stack pointer may be, waiting in `mq_receive` after the
/// [`FORCED_EINTRS`], than before them: a retry in a loop waits with the same one; a receive()
/// that calls itself again, 48 bytes or more a level, is 9600 bytes or more lower.
const RETRY_STACK_BYTES: u64 = 4096;

/// The memory of `pid` as `/proc/PID/status` shows it: `VmData` (its heap and other private
/// writable mappings) and `VmStk` (its main thread's stack), in kB.
fn data_and_stack_kb(pid: i32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |field: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    Some((kb("VmData:")?, kb("VmStk:")?))
}

/// The consumer of an empty queue (8192-byte messages), waiting in `mq_receive`, has the call
/// made to fail with EINTR [`FORCED_EINTRS`] times in a row (ptrace): it must call it again
/// each time (judged before on another consumer) without its memory growing with the count: a
/// retry that keeps something per EINTR (a receive() that calls itself, each level keeping its
/// buffer and its frame) ends, after enough signals, out of stack or memory.
pub(super) fn retries_keep_nothing(
    run: &mut Run,
    consumer: &mut super::protocol::Consumer,
) -> Result<(), Fail> {
    let pid = consumer.pid();
    if !matches!(
        wait_in_call(&mut consumer.proc, RECEIVE, PATIENCE)?,
        Reached::InCall
    ) {
        return Ok(());
    }
    let Some(before) = data_and_stack_kb(pid) else {
        return Ok(());
    };
    let sp_before = waiting_stack_pointer(pid, RECEIVE);
    match force_eintrs(&mut consumer.proc, RECEIVE)? {
        Forced::Retried => {}
        Forced::Untraced => {
            run.note("no ptrace here: the memory kept by EINTR retries was not measured");
            return Ok(());
        }
        // A retry that gives up was judged on the idle consumer already; here only what a
        // retry keeps is.
        Forced::Said(..) | Forced::Left(_) => return Ok(()),
    }
    let Some(after) = data_and_stack_kb(pid) else {
        return Ok(());
    };
    let deeper = sp_before
        .zip(waiting_stack_pointer(pid, RECEIVE))
        .map_or(0, |(before, after)| before.saturating_sub(after));
    let grown = (after.0 + after.1).saturating_sub(before.0 + before.1);
    if grown <= RETRY_GROWTH_KB {
        // Too little memory to tell; a frame a retry deeper shows in the stack pointer.
        if deeper < RETRY_STACK_BYTES {
            return Ok(());
        }
        return Err(Fail::failed(format!(
            "while the grader made its mq_receive fail with EINTR {FORCED_EINTRS} times in a \
             row (ptrace), {IDLE} called it again each time, but waits in it now with its \
             stack pointer {deeper} bytes lower than before (/proc/PID/syscall), about {} bytes \
             per EINTR: each retry is a call deeper (as a receive() that calls itself again on \
             EINTR), so a stream of signals ends in a stack overflow. Retry in a loop that \
             keeps nothing per EINTR: the same frame",
            deeper / u64::from(FORCED_EINTRS)
        )));
    }
    let per_retry = grown * 1024 / u64::from(FORCED_EINTRS);
    let buffer = if per_retry >= consumer.msg_size {
        format!(
            ", at least a receive buffer's worth (its mq_msgsize is {})",
            consumer.msg_size
        )
    } else {
        String::new()
    };
    Err(Fail::failed(format!(
        "while the grader made its mq_receive fail with EINTR {FORCED_EINTRS} times in a row \
         (ptrace), {IDLE} called it again each time, but its memory grew by {grown} kB (VmData \
         {} to {} kB, VmStk {} to {} kB in /proc/PID/status), about {per_retry} bytes per \
         EINTR{buffer}: each retry keeps memory (as a receive() that calls itself again on \
         EINTR keeps each level's buffer and stack frame), so a stream of signals exhausts the \
         stack or the memory and the retry gives up in the end. Retry in a loop that keeps \
         nothing per EINTR: the same buffer, the same frame",
        before.0, after.0, before.1, after.1
    )))
}
