//! How the programs wait: on a full queue inside mq_send, on an empty one inside mq_receive,
//! without CPU and through signals; and with O_NONBLOCK, not at all.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ipc_labs_driver::Message;
use nix::sys::signal::Signal;

use super::observe::{Reached, interrupt, one_queue_fd, queue_fds, wait_in_call};
use super::protocol::{
    Job, Producer, consumer, failed_with, field, grader_send, job_message, payload_change,
    producer, queue_attributes, random_jobs, said, same_order, show, shut_down, sized,
};
use crate::engine::diagnose::{self, Activity, classify};
use crate::engine::tracer::{Action, Call, Step, Tracer};
use crate::engine::waiting::{self, WaitRules};
use crate::engine::{Fail, Proc, Run, inspect};

/// What `mq_send` and `mq_receive` call.
const SEND: i64 = libc::SYS_mq_timedsend;
const RECEIVE: i64 = libc::SYS_mq_timedreceive;
/// How long the processes of a step get to reach the call they must wait in: a loaded machine
/// may take a while to run them; only a wrong program makes the check wait this long.
const PATIENCE: Duration = Duration::from_secs(3);
const IDLE: &str = "the consumer of an empty queue";
/// How many times SIGUSR1 interrupts each wait: a retry that gives up after a few is caught.
const INTERRUPTIONS: u32 = 6;

/// How many more times in a row, after the signals, the grader makes a waiting call fail with
/// EINTR (with ptrace, without a signal, in a few milliseconds): a retry that gives up after any
/// count a program would pick (8, 10, 100) is caught.
const FORCED_EINTRS: u32 = 200;

/// What a process did once the grader had made its waiting call fail with EINTR again and again.
enum Forced {
    /// It made the call again every time, and waits in it.
    Retried,
    /// The machine does not allow tracing it (or no thread of it waits in the call).
    Untraced,
    /// It said this after that many failures in a row.
    Said(u32, Message),
    /// After that many failures it no longer makes the call, and says nothing.
    Left(u32),
}

/// The thread of `pid` that waits in system call `call`, if one does.
/// `ioctl()`'s request to set or clear `O_NONBLOCK` (`<asm-generic/ioctls.h>`; libc's type for it
/// differs from one C library to another).
const FIONBIO: u64 = 0x5421;

/// After `ready`, a producer's calls that work on the queue by another way than its `mqd_t`
/// and the `mq_*` calls: an `mq_open()` (the queue opened again by its name), and a descriptor's
/// flags set by `fcntl(F_SETFL)` or `ioctl(FIONBIO)`.
static REOPEN_OR_FLAGS: &[Call] = &[
    Call::any(libc::SYS_mq_open),
    Call::arg_is(libc::SYS_fcntl, 1, libc::F_SETFL as u64),
    Call::arg_is(libc::SYS_ioctl, 1, FIONBIO),
];

/// Held at one of [`REOPEN_OR_FLAGS`]: the failure if it is an `fcntl()` or `ioctl()` on the
/// program's descriptor of `name` (`None` for an `mq_open()`, or another descriptor).
fn flags_by_fcntl(pid: i32, name: &str) -> Option<Fail> {
    let syscall = std::fs::read_to_string(format!("/proc/{pid}/syscall")).ok()?;
    let fields: Vec<&str> = syscall.split_whitespace().collect();
    let call = match held_call(pid)? {
        libc::SYS_fcntl => "fcntl(F_SETFL)",
        libc::SYS_ioctl => "ioctl(FIONBIO)",
        _ => return None,
    };
    let fd = i32::from_str_radix(fields.get(1)?.trim_start_matches("0x"), 16).ok()?;
    let queue = queue_fds(pid, name)?;
    if !queue.iter().any(|q| q.fd == fd) {
        return None;
    }
    Some(Fail::failed(format!(
        "after it said ready and was told go, the non-blocking producer called {call} on its \
         descriptor {fd} of the queue (the grader held it there; set_nonblocking(false) before \
         the shutdown): it sets and clears O_NONBLOCK as a file's flag, which works only \
         because Linux makes an mqd_t a file descriptor. set_nonblocking() sets and clears it \
         with mq_setattr (mq_set_nonblock, mq_remove_nonblock), the queue's own call"
    )))
}

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
fn calls_before_receiving(idle: &mut super::protocol::Consumer) -> Result<(), Fail> {
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
fn calls_between_receives(
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
fn retries_keep_nothing(
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

/// The call the main thread of `pid`, held by a tracer at its entry, is making.
fn held_call(pid: i32) -> Option<i64> {
    let syscall = std::fs::read_to_string(format!("/proc/{pid}/syscall")).ok()?;
    syscall.split_whitespace().next()?.parse().ok()
}

fn thread_waiting_in(pid: i32, call: i64) -> Option<i32> {
    inspect::view(pid).and_then(|view| {
        view.threads
            .iter()
            .find(|t| t.syscall.map(|(nr, _)| nr) == Some(call))
            .map(|t| t.tid)
    })
}

/// Whether the thread of `pid` that waits in `call` has SIGUSR1 blocked (its `SigBlk`).
fn blocks_sigusr1(pid: i32, call: i64) -> bool {
    let Some(tid) = thread_waiting_in(pid, call) else {
        return false;
    };
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (libc::SIGUSR1 - 1)) != 0)
}

/// How SIGUSR1 is disposed of in `pid` when no handler catches it, as `/proc/PID/status`
/// shows it (`SigIgn`, `SigCgt`): ignored, or at its default disposition (which ends the
/// program), each with an open parenthesis that the message closes; `None` when a handler
/// catches it (or the file is unreadable).
fn sigusr1_disposition(pid: i32) -> Option<&'static str> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let has = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .map(|mask| mask & (1 << (libc::SIGUSR1 - 1)) != 0)
    };
    match (has("SigIgn:")?, has("SigCgt:")?) {
        (true, _) => Some("ignored (SIG_IGN: set in SigIgn"),
        (false, false) => {
            Some("at its default disposition (SIG_DFL: neither in SigIgn nor in SigCgt")
        }
        (false, true) => None,
    }
}

/// The timeout argument of `call` (`mq_timedsend` and `mq_timedreceive` take it fifth) that the
/// thread of `pid` waits in: non-zero for a wait that gives up after a while.
fn wait_timeout_argument(pid: i32, call: i64) -> Option<u64> {
    waiting_call_field(pid, call, 5)
}

/// The stack pointer of the thread of `pid` that waits in `call`: a retry in a loop waits again
/// with the same one, a retry that calls itself one frame deeper each time.
fn waiting_stack_pointer(pid: i32, call: i64) -> Option<u64> {
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
fn force_eintrs(proc: &mut Proc, call: i64) -> Result<Forced, Fail> {
    let pid = proc.pid.as_raw();
    let waiting = thread_waiting_in(pid, call);
    let Some(tid) = waiting else {
        return Ok(Forced::Untraced);
    };
    let fail = Action::FailTimes(libc::EINTR, FORCED_EINTRS);
    let Some(mut tracer) = Tracer::attach_thread(pid, tid, Call::any(call), fail)? else {
        return Ok(Forced::Untraced);
    };
    for failed in 0..FORCED_EINTRS {
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
        Reached::Said(message) => Forced::Said(FORCED_EINTRS, message),
        Reached::NotYet => Forced::Left(FORCED_EINTRS),
    })
}

/// Sends SIGUSR1 to the thread of `pid` that waits in `call`, traced through the handler:
/// whether the kernel restarted the call (`Some(true)`) or failed it with EINTR; `None` where
/// it cannot be traced.
fn signal_restarts(pid: i32, call: i64) -> Result<Option<bool>, Fail> {
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
fn refuse_blocked_sigusr1(proc: &mut Proc, role: &str, call: i64, name: &str) -> Result<(), Fail> {
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
fn retried_every_eintr(
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
fn nth_time(round: u32) -> String {
    let suffix = match round {
        1 => "st",
        2 => "nd",
        3 => "rd",
        _ => "th",
    };
    format!("the {round}{suffix} time")
}

/// What is left until `until`.
fn left(until: Instant) -> Duration {
    until.saturating_duration_since(Instant::now())
}

/// What the programs should wait in, for the end of a failure message.
const WAIT_ADVICE: &str = "a producer waits for room inside mq_send on a blocking descriptor, a \
                           consumer for a message inside mq_receive: the kernel wakes them, so \
                           do not retry in a loop or sleep and try again";

pub fn full_queue_blocks(run: &mut Run) -> Result<String, Fail> {
    const PRODUCERS: usize = 4;
    const JOBS: usize = 50;
    const ROLES: [&str; PRODUCERS] = ["producer 1", "producer 2", "producer 3", "producer 4"];
    // First, deterministically, the loss that several producers on a full queue make likely.
    super::retries::interrupted_send_resent(run)?;
    // How the wait is reached, first: a consumer of an empty queue, traced from `go` to its
    // first mq_receive. A loop that looks at the queue before it waits is named by its calls,
    // before the watchers below can see it run (how long it runs depends on the machine's load).
    // It stays, waiting, for the receives after it to be judged at the end.
    let traced_name = run.ipc_name("idle-traced");
    let mut traced = self::consumer(run, &traced_name, &["--msg-size".into(), "8192".into()])?;
    calls_before_receiving(&mut traced)?;
    let name = run.ipc_name("jobs");
    let consumer = consumer(run, &name, &sized(4, 64))?;
    // A second consumer, on a queue nobody sends to, shows how receiving on an empty queue waits.
    let idle_name = run.ipc_name("idle");
    let mut idle = self::consumer(run, &idle_name, &[])?;
    idle.go()?;
    let mut producers = Vec::new();
    let mut submitted = Vec::new();
    for (p, role) in ROLES.iter().enumerate() {
        let mut jobs = random_jobs(run, JOBS, &format!("p{p}"));
        for job in &mut jobs {
            job.payload.truncate(20);
        }
        let proc = producer(run, &name, &jobs, false, false, role)?;
        submitted.push(jobs);
        producers.push(proc);
    }
    for producer in &mut producers {
        producer.proc.send("go", &[])?;
    }
    // Nobody receives from the 4-message queue: every producer ends up waiting in mq_send, and
    // the idle consumer in mq_receive.
    let until = Instant::now() + PATIENCE;
    let mut late = Vec::new();
    for producer in &mut producers {
        match wait_in_call(&mut producer.proc, SEND, left(until))? {
            Reached::InCall => {}
            Reached::Said(answer) => return Err(finished_while_full(producer, &name, &answer)),
            Reached::NotYet => late.push(producer.pid()),
        }
    }
    match wait_in_call(&mut idle.proc, RECEIVE, left(until))? {
        Reached::InCall => {}
        Reached::Said(answer) => return Err(idle_said(&answer, false, "")),
        Reached::NotYet => late.push(idle.pid()),
    }
    let mut roles: BTreeMap<i32, String> = producers
        .iter()
        .map(|p| (p.pid(), p.role.to_string()))
        .collect();
    roles.insert(idle.pid(), IDLE.into());
    let role_of = |view: &inspect::ProcessView| roles.get(&view.pid).cloned().unwrap_or_default();
    let pids: Vec<i32> = roles.keys().copied().collect();
    // Nothing wakes a process blocked in mq_send or mq_receive here: a timed wait that wakes
    // to look again is polling.
    let rules = WaitRules {
        wakeups_per_second: 0.0,
        timeouts: false,
    };
    let waiters = waiting::expect_blocked(&pids, &role_of, rules, WAIT_ADVICE)?;
    for &pid in &late {
        let (call, what, right) = if pid == idle.pid() {
            ("mq_receive", "for a message", Activity::MqReceive)
        } else {
            ("mq_send", "for room", Activity::MqSend)
        };
        let mine: Vec<&Activity> = waiters
            .iter()
            .filter(|w| w.pid == pid)
            .map(|w| &w.activity)
            .collect();
        // Slow to get there, but there (in one of its threads).
        if mine.contains(&&right) {
            continue;
        }
        let activity = mine.first().map_or(Activity::Blocked, |a| (*a).clone());
        if activity == Activity::Poll {
            // poll() on a queue descriptor and then a call that cannot wait: O_NONBLOCK on it.
            let queue = if pid == idle.pid() { &idle_name } else { &name };
            let fds = queue_fds(pid, queue).unwrap_or_default();
            if let Some(fd) = fds.iter().find(|fd| fd.nonblocking()) {
                return Err(Fail::failed(format!(
                    "{} waits {what} in poll()/select() on the queue descriptor instead of \
                     inside {call}, and that descriptor is O_NONBLOCK ({}): without \
                     --nonblocking the descriptor stays blocking and {call} itself sleeps until \
                     the kernel wakes it; poll() and then a {call} that cannot wait is another \
                     mechanism",
                    roles[&pid],
                    fd.describe(pid)
                )));
            }
        }
        return Err(Fail::failed(format!(
            "{} waits {what} {} instead of inside {call}: {WAIT_ADVICE}",
            roles[&pid],
            waiting_in(&activity)
        )));
    }
    // A signal interrupts each wait (main.rs gives SIGUSR1 a handler without SA_RESTART): the
    // call fails with EINTR and must be made again, however often; each round waits until every
    // process is back in its call.
    // The last round's signal to the consumer and to producer 1 is followed through its handler
    // (traced): whether the kernel then failed the call with EINTR or restarted it (SA_RESTART)
    // tells, if one of them gives up on the EINTRs forced next, why the signals did not end it.
    refuse_blocked_sigusr1(&mut idle.proc, IDLE, RECEIVE, "mq_receive")?;
    for producer in &mut producers {
        refuse_blocked_sigusr1(&mut producer.proc, producer.role, SEND, "mq_send")?;
    }
    let mut restarts = BTreeMap::new();
    for round in 1..=INTERRUPTIONS {
        for &pid in &pids {
            let probed = [(idle.pid(), RECEIVE), (producers[0].pid(), SEND)];
            match probed.iter().find(|&&(p, _)| p == pid) {
                Some(&(_, call)) if round == INTERRUPTIONS => {
                    let restarted = signal_restarts(pid, call)?;
                    restarts.insert(pid, restarted);
                    if restarted.is_none() {
                        interrupt(pid, Signal::SIGUSR1, PATIENCE);
                    }
                }
                _ => {
                    interrupt(pid, Signal::SIGUSR1, PATIENCE);
                }
            }
        }
        let until = Instant::now() + PATIENCE;
        for producer in &mut producers {
            let reached = wait_in_call(&mut producer.proc, SEND, left(until))?;
            interrupted(reached, producer.pid(), producer.role, "mq_send", round)?;
        }
        let reached = wait_in_call(&mut idle.proc, RECEIVE, left(until))?;
        interrupted(reached, idle.pid(), IDLE, "mq_receive", round)?;
    }
    let blocked = blocks_sigusr1(idle.pid(), RECEIVE);
    let forced = force_eintrs(&mut idle.proc, RECEIVE)?;
    let restarted = restarts.get(&idle.pid()).copied().flatten();
    retried_every_eintr(run, forced, IDLE, "mq_receive", restarted, blocked)?;
    let blocked = blocks_sigusr1(producers[0].pid(), SEND);
    let forced = force_eintrs(&mut producers[0].proc, SEND)?;
    let restarted = restarts.get(&producers[0].pid()).copied().flatten();
    retried_every_eintr(
        run,
        forced,
        producers[0].role,
        "mq_send",
        restarted,
        blocked,
    )?;
    // Back in their calls after the forced EINTRs: with no timeout, as before them.
    let waiting = [
        (idle.pid(), IDLE, RECEIVE, "mq_receive"),
        (producers[0].pid(), producers[0].role, SEND, "mq_send"),
    ];
    for (pid, role, call, name) in waiting {
        let until = Instant::now() + PATIENCE;
        let mut timeout = wait_timeout_argument(pid, call);
        while timeout.is_none() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(2));
            timeout = wait_timeout_argument(pid, call);
        }
        if let Some(at) = timeout.filter(|&at| at != 0) {
            return Err(Fail::failed(format!(
                "after the signals and the forced EINTRs, {role} waits in {name} with a timeout \
                 (the call's timeout argument points at {at:#x}, read in \
                 /proc/PID/task/TID/syscall): a wait that gives up after a while and looks \
                 again is polling, however long its period; after EINTR, call {name} again \
                 the same way, with no timeout"
            )));
        }
    }
    for producer in &producers {
        let fd = one_queue_fd(
            producer.pid(),
            &name,
            producer.role,
            "while it waits for room",
        )?;
        if fd.nonblocking() {
            return Err(Fail::failed(format!(
                "{}'s descriptor of the queue is O_NONBLOCK while it waits for room ({}): \
                 without --nonblocking, submit() sends on a blocking descriptor, and mq_send \
                 itself waits",
                producer.role,
                fd.describe(producer.pid())
            )));
        }
    }
    let fd = one_queue_fd(idle.pid(), &idle_name, IDLE, "while it waits for a job")?;
    if fd.nonblocking() {
        return Err(Fail::failed(format!(
            "the consumer's descriptor of its queue is O_NONBLOCK ({}): create it blocking, so \
             that mq_receive itself waits for a message",
            fd.describe(idle.pid())
        )));
    }
    let queued = queue_attributes(&name)?.curmsgs();
    if queued != 4 {
        return Err(Fail::failed(format!(
            "the producers wait but the 4-message queue holds {queued}: wait only when the \
             queue is full"
        )));
    }
    idle.send_shutdown()?;
    idle.finish()?;

    let mut consumer = consumer;
    consumer.go()?;
    for mut producer in producers {
        let done = producer.proc.recv_any()?;
        if done.kind != "done" || field(&done, "submitted") != JOBS as u64 {
            return Err(Fail::failed(format!(
                "{} said {} ({} submitted) once the consumer ran, expected `done` with {JOBS}",
                producer.role,
                said(&done),
                field(&done, "submitted")
            )));
        }
        producer.end()?;
    }
    shut_down(run, &name)?;
    let served = consumer.finish()?;
    exactly_once(&served, &submitted, &ROLES)?;
    // Every receive after the first goes straight to its wait too; and the retries of its
    // wait keep nothing.
    let sent = calls_between_receives(run, &mut traced)?;
    retries_keep_nothing(run, &mut traced)?;
    shut_down(run, &traced_name)?;
    let served = traced.finish()?;
    same_order(&served, &sent, "the jobs sent one at a time")?;
    super::direct_receive::receive_retries_eintr(run)?;
    Ok(format!(
        "{PRODUCERS} producers waited in mq_send on the full queue and a consumer in mq_receive \
         on an empty one, without CPU and through SIGUSR1; all {} jobs were served once",
        PRODUCERS * JOBS
    ))
}

/// A producer answered while the queue was full and nobody received.
fn finished_while_full(producer: &Producer, name: &str, answer: &Message) -> Fail {
    let role = producer.role;
    if failed_with(answer, "full") {
        // Held after its answer, it still holds its descriptor: O_NONBLOCK on it, though it
        // ran without --nonblocking, came from set_nonblocking(false), which main.rs called.
        let flagged = queue_fds(producer.pid(), name)
            .unwrap_or_default()
            .into_iter()
            .find(|fd| fd.nonblocking());
        if let Some(fd) = flagged {
            return Fail::failed(format!(
                "{role} said {} on the full queue though it ran without --nonblocking, and its \
                 descriptor has O_NONBLOCK ({}): main.rs called set_nonblocking(false), which \
                 must clear O_NONBLOCK (mq_setattr, mq_remove_nonblock), not set it; open() \
                 opens the queue without it",
                said(answer),
                fd.describe(producer.pid())
            ));
        }
        return Fail::failed(format!(
            "{role} said {} on the full queue though it ran without --nonblocking: a blocking \
             submit() waits in mq_send until there is room; only a descriptor with O_NONBLOCK \
             gets EAGAIN (QueueError::Full)",
            said(answer)
        ));
    }
    if answer.kind == "done" {
        return Fail::failed(format!(
            "{role} finished while the queue was full and nobody received: it cannot have \
             submitted its jobs, so jobs were dropped; mq_send on a full queue must block \
             until there is room (no O_NONBLOCK, no ignored EAGAIN)"
        ));
    }
    Fail::failed(format!(
        "{role} said {} while the queue was full and nobody received: submit() waits in mq_send \
         until there is room",
        said(answer)
    ))
}

/// The idle consumer answered though nothing was sent to its queue.
fn idle_said(answer: &Message, signalled: bool, when: &str) -> Fail {
    let after = if signalled {
        format!("after SIGUSR1 interrupted its mq_receive (EINTR){when}")
    } else {
        "with nothing sent to its queue".to_string()
    };
    let hint = if signalled {
        "an interrupted mq_receive is called again (retry EINTR)"
    } else {
        "receive() waits in mq_receive until a message arrives"
    };
    Fail::failed(format!(
        "the consumer of an empty queue said {} {after}: {hint}",
        said(answer)
    ))
}

/// Where a process went after the grader's SIGUSR1 interrupted its wait in `call`, the
/// `round`th time.
fn interrupted(reached: Reached, pid: i32, role: &str, call: &str, round: u32) -> Result<(), Fail> {
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

/// Where a thread was seen waiting, in words.
fn waiting_in(activity: &Activity) -> String {
    match activity {
        Activity::Poll => "in poll()/select() on the queue descriptor".into(),
        Activity::Busy => "nowhere: it runs on the CPU".into(),
        Activity::Sleep => "in nanosleep (sleeping between tries)".into(),
        Activity::Futex => "on a futex".into(),
        Activity::MqSend => "in mq_send".into(),
        Activity::MqReceive => "in mq_receive".into(),
        other => other.describe().replace("blocked ", ""),
    }
}

/// Every job of every producer served once, in order within a producer and a priority.
fn exactly_once(served: &[Job], submitted: &[Vec<Job>], roles: &[&str]) -> Result<(), Fail> {
    let mut seen: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    for job in served {
        *seen.entry(job.payload.clone()).or_default() += 1;
    }
    let all: Vec<&Job> = submitted.iter().flatten().collect();
    let missing = all
        .iter()
        .filter(|j| !seen.contains_key(&j.payload))
        .count();
    let twice = seen.values().filter(|&&n| n > 1).count();
    if missing > 0 && twice == 0 && served.len() == all.len() {
        // As many served as submitted, some of them not as submitted: name what changed.
        let unknown: Vec<&Job> = served
            .iter()
            .filter(|s| !all.iter().any(|j| j.payload == s.payload))
            .collect();
        let lost: Vec<&&Job> = all
            .iter()
            .filter(|j| !seen.contains_key(&j.payload))
            .collect();
        let pair = lost.iter().find_map(|sent| {
            unknown
                .iter()
                .filter(|got| got.priority == sent.priority)
                .max_by_key(|got| {
                    got.payload
                        .iter()
                        .zip(&sent.payload)
                        .take_while(|(a, b)| a == b)
                        .count()
                })
                .map(|got| (sent, got))
        });
        if let Some((sent, got)) = pair {
            return Err(Fail::failed(format!(
                "of {} jobs, as many were served, but {missing} came out changed: a job of \
                 {} came out as {}: {}",
                all.len(),
                show(&sent.payload),
                show(&got.payload),
                payload_change(&sent.payload, &got.payload)
            )));
        }
    }
    if missing > 0 || twice > 0 || served.len() != all.len() {
        return Err(Fail::failed(format!(
            "of {} jobs, {missing} were never served and {twice} were served more than once \
             ({} served in all): a full queue must make mq_send wait, never drop or repeat a job",
            all.len(),
            served.len()
        )));
    }
    let position: BTreeMap<&[u8], usize> = served
        .iter()
        .enumerate()
        .map(|(i, j)| (j.payload.as_slice(), i))
        .collect();
    for (jobs, role) in submitted.iter().zip(roles) {
        let mut last: BTreeMap<u32, usize> = BTreeMap::new();
        for job in jobs {
            let at = position[job.payload.as_slice()];
            if last
                .insert(job.priority, at)
                .is_some_and(|before| before > at)
            {
                return Err(Fail::failed(format!(
                    "jobs of {role} with priority {} were served out of the order submitted: \
                     within a priority the queue is FIFO",
                    job.priority
                )));
            }
        }
    }
    Ok(())
}

pub fn nonblocking_full(run: &mut Run) -> Result<String, Fail> {
    let name = run.ipc_name("jobs");
    let consumer = consumer(run, &name, &["--capacity".into(), "4".into()])?;
    let mut jobs = random_jobs(run, 7, "nb");
    // The last job outranks every other: the 4 that fit are the file's first 4 only if the
    // producer submits in the file's order.
    let top = jobs.iter().map(|j| j.priority).max().unwrap_or(0);
    jobs[6].priority = top + 1;
    let role = "the non-blocking producer";
    let mut producer = producer(run, &name, &jobs, true, true, role)?;
    let fd = one_queue_fd(producer.pid(), &name, role, "after it said ready")?;
    if !fd.nonblocking() {
        return Err(Fail::failed(format!(
            "with --nonblocking the producer called set_nonblocking(true), yet its descriptor of \
             the queue has no O_NONBLOCK ({}): set it on the descriptor with mq_setattr \
             (mq_set_nonblock), so that mq_send itself fails with EAGAIN on a full queue \
             instead of waiting",
            fd.describe(producer.pid())
        )));
    }
    // Its queue is open: from here on every call works on that descriptor, so a second
    // mq_open() is the queue opened again by its name, held there.
    // So is a flag set on that descriptor by fcntl(F_SETFL) or ioctl(FIONBIO) instead of
    // mq_setattr: the program's own file-descriptor calls on an mqd_t, held there too.
    let mut reopen = Tracer::attach(producer.pid(), Call::any_of(REOPEN_OR_FLAGS), Action::Hold)?;
    producer.proc.send("go", &[])?;
    // 4 jobs fit, 3 find the queue full; then the producer turns blocking again and its
    // shutdown waits for room, which only the consumer can make.
    let until = Instant::now() + PATIENCE + PATIENCE;
    let reached = loop {
        if let Some(tracer) = reopen.as_mut()
            && tracer.held_before(Instant::now())?
        {
            if let Some(fail) = flags_by_fcntl(producer.pid(), &name) {
                return Err(fail);
            }
            if held_call(producer.pid()) != Some(libc::SYS_mq_open) {
                // A file's flags set on another descriptor than the queue's: none of this
                // check's business; let it go on, untraced.
                if let Some(tracer) = reopen.take() {
                    tracer.release();
                }
                continue;
            }
            return Err(Fail::failed(
                "after it said ready (its queue open, O_NONBLOCK set) and was told go, the \
                 non-blocking producer called mq_open() again, where the grader held it: it \
                 opens the queue again by its name (set_nonblocking(false) before the \
                 shutdown, or the shutdown itself), and a name can lead to another queue than \
                 the one it holds; O_NONBLOCK is a flag of the descriptor: set and clear it \
                 with mq_setattr (mq_set_nonblock, mq_remove_nonblock) on the descriptor \
                 open() gave",
            ));
        }
        match wait_in_call(&mut producer.proc, SEND, Duration::from_millis(20))? {
            Reached::NotYet if Instant::now() < until => {}
            reached => break reached,
        }
    };
    drop(reopen);
    match reached {
        Reached::InCall => {}
        Reached::Said(answer) => return Err(shutdown_did_not_wait(&producer, &name, &answer)),
        Reached::NotYet => {
            let hang = diagnose::observe(&[producer.pid()], &|_| role.to_string());
            let doing: Vec<String> = hang
                .processes
                .iter()
                .flat_map(|p| p.activities.iter().map(waiting_in))
                .collect();
            return Err(Fail::failed(format!(
                "7 jobs into a 4-message queue nobody reads, non-blocking, then the shutdown: \
                 after 6 s the producer has not answered, and it does not wait in mq_send for \
                 room for the shutdown; it waits {}. With O_NONBLOCK each job that finds the \
                 queue full fails at once with EAGAIN (QueueError::Full, counted, not retried), \
                 and after set_nonblocking(false) the shutdown waits inside mq_send",
                doing.join(", ")
            )));
        }
    }
    let queued = queue_attributes(&name)?.curmsgs();
    if queued != 4 {
        return Err(Fail::failed(format!(
            "the non-blocking producer waits to send the shutdown, but the 4-message queue \
             holds {queued}: each job either went in or was counted full"
        )));
    }
    // The shutdown waits like a job, so a signal that interrupts its mq_send (EINTR) must not
    // end it either, however often.
    refuse_blocked_sigusr1(&mut producer.proc, role, SEND, "mq_send")?;
    let mut restarted = None;
    for round in 1..=INTERRUPTIONS {
        if round == INTERRUPTIONS {
            restarted = signal_restarts(producer.pid(), SEND)?;
        }
        if restarted.is_none() {
            interrupt(producer.pid(), Signal::SIGUSR1, PATIENCE);
        }
        match wait_in_call(&mut producer.proc, SEND, PATIENCE)? {
            Reached::Said(answer) => {
                let hint = if failed_with(&answer, "full") {
                    "EINTR is not a full queue: "
                } else {
                    ""
                };
                let when = if round == 1 {
                    String::new()
                } else {
                    format!(" {}", nth_time(round))
                };
                return Err(Fail::failed(format!(
                    "after SIGUSR1 interrupted the mq_send of its shutdown, waiting for room in \
                     the full queue (EINTR){when}, the producer said {}: {hint}shutdown() must \
                     call mq_send again when it fails with EINTR, as submit() does",
                    said(&answer)
                )));
            }
            reached => interrupted(reached, producer.pid(), role, "mq_send", round)?,
        }
    }
    let blocked = blocks_sigusr1(producer.pid(), SEND);
    let forced = force_eintrs(&mut producer.proc, SEND)?;
    retried_every_eintr(
        run,
        forced,
        role,
        "mq_send (of its shutdown)",
        restarted,
        blocked,
    )?;
    let mut consumer = consumer;
    consumer.go()?;
    let done = producer.proc.recv_any()?;
    producer.expect_done(&done)?;
    let (submitted, full) = (field(&done, "submitted"), field(&done, "full"));
    if (submitted, full) != (4, 3) {
        return Err(Fail::failed(format!(
            "7 jobs into a 4-message queue nobody reads, non-blocking: the producer says \
             {submitted} submitted and {full} found it full, expected 4 and 3: with O_NONBLOCK \
             mq_send fails with EAGAIN on a full queue, which submit() reports as QueueError::Full"
        )));
    }
    producer.end()?;
    let served = consumer.finish()?;
    submitted_in_file_order(&served, &jobs, 4)?;
    same_order(&served, &jobs[..4], "the jobs that fitted")?;
    super::sending::full_only_when_full(run)?;
    super::sending::sent_in_file_order(run)?;
    Ok(
        "a full non-blocking queue refused 3 of 7 jobs with kind=full, the shutdown then waited \
        for room (through SIGUSR1), and the 4 jobs that fitted were served; a queue emptied \
        meanwhile took every job; a blocking producer sent its jobs in its file's order"
            .into(),
    )
}

/// With O_NONBLOCK, the first `fitted` jobs a producer sends are the ones that get into the
/// queue: if the jobs served are other jobs of its file, it sent them in another order.
fn submitted_in_file_order(served: &[Job], file: &[Job], fitted: usize) -> Result<(), Fail> {
    let position = |job: &Job| file.iter().position(|f| f.payload == job.payload);
    let Some(mut positions) = served.iter().map(position).collect::<Option<Vec<usize>>>() else {
        return Ok(());
    };
    positions.sort_unstable();
    if positions.len() != fitted || positions.iter().all(|&p| p < fitted) {
        return Ok(());
    }
    let mut by_priority = file.to_vec();
    by_priority.sort_by_key(|job| std::cmp::Reverse(job.priority));
    let mut highest: Vec<usize> = by_priority[..fitted].iter().filter_map(position).collect();
    highest.sort_unstable();
    let numbers: Vec<usize> = positions.iter().map(|p| p + 1).collect();
    let how = if highest == positions {
        ", its highest priorities (as if sorted by priority before sending)"
    } else {
        ""
    };
    Err(Fail::failed(format!(
        "the {fitted} jobs that got into the {fitted}-message queue were jobs {numbers:?} of the \
         producer's {} (its file's order), not its first {fitted}: with O_NONBLOCK the first \
         {fitted} mq_sends fill the queue, so the producer submitted its jobs in another order \
         than the file's{how}; submit them in the file's order, one mq_send each, and leave the \
         order of service to the queue's priorities",
        file.len()
    )))
}

/// The non-blocking producer answered where its shutdown should have waited for room.
fn shutdown_did_not_wait(producer: &Producer, name: &str, answer: &Message) -> Fail {
    let pid = producer.pid();
    if failed_with(answer, "full") {
        let still = queue_fds(pid, name)
            .unwrap_or_default()
            .into_iter()
            .find(|fd| fd.nonblocking());
        return match still {
            Some(fd) => Fail::failed(format!(
                "after its jobs the producer called set_nonblocking(false) to send the \
                 shutdown, but its descriptor still has O_NONBLOCK ({}) and the shutdown failed \
                 on the full queue with kind=full: set_nonblocking(false) must clear O_NONBLOCK \
                 (mq_setattr, mq_remove_nonblock)",
                fd.describe(pid)
            )),
            None => Fail::failed(format!(
                "the shutdown, sent after set_nonblocking(false), failed on the full queue with \
                 {}: on a blocking descriptor the shutdown waits for room like a job",
                said(answer)
            )),
        };
    }
    if answer.kind == "done" {
        let (submitted, full) = (field(answer, "submitted"), field(answer, "full"));
        if (submitted, full) != (4, 3) {
            return Fail::failed(format!(
                "7 jobs into a 4-message queue nobody reads, non-blocking: the producer says \
                 {submitted} submitted and {full} found it full, expected 4 and 3: with \
                 O_NONBLOCK mq_send fails with EAGAIN on a full queue, which submit() reports \
                 as QueueError::Full"
            ));
        }
        return Fail::failed(
            "the non-blocking producer said `done` though its shutdown cannot have fitted in the \
             full queue that nobody reads: after set_nonblocking(false) the shutdown waits in \
             mq_send for room",
        );
    }
    Fail::failed(format!(
        "7 jobs into a 4-message queue nobody reads, non-blocking, then the shutdown: the \
         producer said {}, where 4 jobs go in, 3 are kind=full and the shutdown waits for room",
        said(answer)
    ))
}
