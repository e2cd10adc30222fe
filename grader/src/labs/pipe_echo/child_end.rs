//! Checks of how the echo child ends and how the parent learns it: exit status 0 after
//! end-of-file, `wait()` blocking in `waitpid()` until the child has exited (not merely stopped)
//! and retrying it after every `EINTR`, and the error kinds when the child dies. A child whose
//! write fails is `child_fails`'s.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::outside::{self, ContinuedHold, ExitHold, describe_status};
use super::session::{
    Done, Flags, Pipes, Returned, Session, ignores_signal, pipes_of, refused_again, role_of,
    settle_in_read, start, started_twice_in_read,
};
use crate::engine::diagnose::{Activity, classify};
use crate::engine::inspect;
use crate::engine::tracer::{Action, Call, Reached, Tracer};
use crate::engine::waiting::{self, WaitRules};
use crate::engine::{Fail, Run};

pub fn child_exits_at_eof(run: &mut Run) -> Result<String, Fail> {
    let input = run.random_bytes(1000);
    let mut session = start(run, input, Flags::default())?;
    let done = session.exchange()?;
    session.verify_echo(&done)?;
    if done.wait != "ok" {
        return Err(Fail::failed(format!(
            "the echo child did not exit with status 0 after end-of-file: wait() said {}",
            done.wait
        )));
    }
    session.finish()?;
    Ok("the child saw end-of-file and exited with status 0".into())
}

/// One end of a pipe: its inode, and whether it is the write end.
type PipeEnd = (u64, bool);

/// The threads of `pid` blocked in `waitpid()` (the `wait4` system call) or `waitid()`, each
/// with which of the two.
fn in_waitpid(pid: i32) -> BTreeMap<i32, &'static str> {
    let Some(view) = inspect::view(pid) else {
        return BTreeMap::new();
    };
    view.threads
        .iter()
        .filter(|t| t.state == 'S')
        .filter(|t| {
            t.syscall
                .is_some_and(|(n, _)| n == libc::SYS_wait4 || n == libc::SYS_waitid)
        })
        .map(|t| {
            let call = match t.syscall {
                Some((libc::SYS_waitid, _)) => "waitid()",
                _ => "waitpid()",
            };
            (t.tid, call)
        })
        .collect()
}

/// What the threads of `pid` are doing, in words.
pub(super) fn doing(pid: i32) -> String {
    let Some(view) = inspect::view(pid) else {
        return "gone".into();
    };
    let calls: Vec<String> = view
        .threads
        .iter()
        .map(|t| {
            if t.state == 'R' {
                "running on the CPU".to_string()
            } else {
                classify(&view, t.syscall).describe()
            }
        })
        .collect();
    calls.join(", ")
}

/// `wait()` came back while the grader held the child at its exit.
fn returned_early(done: &Done) -> Fail {
    Fail::failed(format!(
        "wait() returned `{}` while the echo child had not exited yet (the grader held it on its \
         way out, after it had closed its pipes): wait() must call waitpid() without WNOHANG, \
         which blocks until the child has exited, and only then judge how it ended",
        done.wait
    ))
}

pub fn waits_for_exit(run: &mut Run) -> Result<String, Fail> {
    let input = run.random_bytes(64 << 10);
    let flags = Flags {
        interruptible: true,
        ..Flags::default()
    };
    let mut session = start(run, input, flags)?;
    let (parent, child) = (session.parent, session.child);
    settle_in_read(child);
    if inspect::view(child).is_none_or(|v| v.state == 'Z') {
        return Err(Fail::failed(
            "the echo child ended before any input was sent: it must wait in read() for input \
             until end-of-file",
        ));
    }
    let pipes = session.pipes()?;
    let mut hold = ExitHold::seize(child)?;
    session.go()?;
    let status = held_at_exit(&mut session, &mut hold)?;
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        let stderr = session.proc.stderr.lock().expect("capture lock").tail(3);
        return Err(Fail::failed(format!(
            "the echo child {} (the grader saw it at its exit), in an exchange the grader did \
             not disturb: when echo_loop() succeeds the child must _exit(0) (the program's \
             stderr ends with: {stderr})",
            describe_status(status)
        )));
    }
    // Its own ends are echo_loop()'s to close; the others should have gone right after fork().
    let own = [(pipes.a, false), (pipes.b, true)];
    let (mine, others): (Vec<PipeEnd>, Vec<PipeEnd>) = pipes_of(&session.proc, child)
        .into_iter()
        .flat_map(|(inode, (reads, writes))| {
            let reads = reads.into_iter().map(move |_| (inode, false));
            reads.chain(writes.into_iter().map(move |_| (inode, true)))
        })
        .partition(|end| own.contains(end));
    let named = |ends: &[PipeEnd]| -> String {
        let names: Vec<String> = ends
            .iter()
            .map(|&(inode, write)| {
                let pipe = match inode {
                    i if i == pipes.a => "pipe A",
                    i if i == pipes.b => "pipe B",
                    _ => "another pipe",
                };
                let end = if write { "write" } else { "read" };
                format!("the {end} end of {pipe} (pipe:[{inode}])")
            })
            .collect();
        names.join(", ")
    };
    if !others.is_empty() {
        return Err(Fail::failed(format!(
            "the echo child called _exit() still holding {}, which it never uses: after fork() \
             each process must close the pipe ends it does not use",
            named(&others)
        )));
    }
    if !mine.is_empty() {
        return Err(Fail::failed(format!(
            "the echo child called _exit() still holding {}: echo_loop() must close both of its \
             descriptors when it returns (they close when the OwnedFds are dropped), so that \
             the parent sees end-of-file while the child finishes",
            named(&mine)
        )));
    }
    // The parent has its end-of-file: it must now be blocked in waitpid().
    let until = Instant::now() + Duration::from_secs(3);
    let waiting = loop {
        if let Some(message) = session.message_within(Duration::from_millis(2))? {
            return Err(returned_early(&session.done(message)?));
        }
        let waiting = in_waitpid(parent);
        if !waiting.is_empty() {
            break waiting;
        }
        if Instant::now() > until {
            let held = "with the echo child held at its exit (it had closed its pipes and \
                        called _exit()), the parent was not blocked in waitpid()";
            let advice = "wait() must call waitpid() without WNOHANG, which blocks until the \
                          child has exited";
            // A descriptor of the child's own (a pidfd) says what the parent waits on.
            let pidfds: Vec<String> = inspect::view(parent)
                .map(|v| v.fds)
                .unwrap_or_default()
                .into_iter()
                .filter(|(_, target)| target.contains("pidfd"))
                .map(|(fd, target)| format!("fd {fd} ({target})"))
                .collect();
            if !pidfds.is_empty() {
                return Err(Fail::failed(format!(
                    "{held}: it is {}, holding a pidfd ({}): it waits for the child's end on a \
                     pidfd instead of in waitpid(); wait() must block in waitpid() itself \
                     (without WNOHANG, and with no other wait before it), which returns once \
                     the child has exited",
                    doing(parent),
                    pidfds.join(", ")
                )));
            }
            // Waiting for SIGCHLD, and calling waitpid() only once it came.
            let for_a_signal: Vec<&str> = inspect::view(parent)
                .map(|v| v.threads)
                .unwrap_or_default()
                .iter()
                .filter(|t| t.state == 'S')
                .filter_map(|t| match t.syscall?.0 {
                    libc::SYS_rt_sigtimedwait => {
                        Some("rt_sigtimedwait() (sigwait(), sigtimedwait())")
                    }
                    libc::SYS_rt_sigsuspend => Some("rt_sigsuspend() (sigsuspend())"),
                    libc::SYS_pause => Some("pause()"),
                    _ => None,
                })
                .collect();
            if let Some(call) = for_a_signal.first() {
                return Err(Fail::failed(format!(
                    "{held}: it waits for a signal instead, blocked in {call}: it calls \
                     waitpid() (with WNOHANG, or after SIGCHLD came) only once the child has \
                     changed state; wait() must block in waitpid() itself (without WNOHANG, \
                     and with no other wait before it), which returns once the child has exited"
                )));
            }
            // How it waits instead: the waiting verdict tells polling and spinning apart.
            let verdict =
                waiting::expect_blocked(&[parent], &role_of(parent), WaitRules::untimed(), advice);
            return Err(Fail::failed(match verdict {
                Err(fail) => format!("{held}: {}", fail.message()),
                Ok(_) => format!("{held}: it is {}; {advice}", doing(parent)),
            }));
        }
    };
    // The API's call is waitpid() (the wait4 system call): waitid() waits as well, but is not
    // the call wait() promises.
    if let Some((tid, _)) = waiting.iter().find(|(_, call)| **call == "waitid()") {
        return Err(Fail::failed(format!(
            "with the echo child held at its exit, the parent (thread {tid}) was blocked in the \
             waitid system call, not in waitpid() (the wait4 system call, /proc/PID/task/TID/\
             syscall): wait() must reap the child with waitpid(self.pid, ...), as its doc \
             comment says, not with waitid()"
        )));
    }
    let leaked: Vec<String> = pipes_of(&session.proc, parent)
        .iter()
        .map(|(inode, (r, w))| format!("pipe:[{inode}] (read fds {r:?}, write fds {w:?})"))
        .collect();
    if !leaked.is_empty() {
        return Err(Fail::failed(format!(
            "while wait() was blocked in waitpid(), the parent still held {}: close both pipe \
             ends before waitpid(), or a child still writing its echo would wait for a reader \
             for ever, and waitpid() with it",
            leaked.join(", ")
        )));
    }
    let rounds = 16;
    // Between a signal and its return to waitpid(), a waiting thread seen asleep in a timed
    // sleep: it backs off before it retries, and the child's exit waits for the sleep's end.
    let slept_instead = std::cell::Cell::new(None);
    let interrupted = outside::interrupt_waiting(parent, &waiting, rounds, "in waitpid()", &|| {
        if let Some(view) = inspect::view(parent) {
            for thread in view.threads.iter().filter(|t| waiting.contains_key(&t.tid)) {
                match thread.syscall {
                    Some((libc::SYS_nanosleep, _)) => slept_instead.set(Some("nanosleep()")),
                    Some((libc::SYS_clock_nanosleep, _)) => {
                        slept_instead.set(Some("clock_nanosleep()"))
                    }
                    _ => {}
                }
            }
        }
        in_waitpid(parent)
    });
    if interrupted.is_ok()
        && let Some(call) = slept_instead.get()
    {
        return Err(Fail::failed(format!(
            "with the echo child held at its exit, the grader interrupted the parent's waitpid() \
             with SIGUSR1 {rounds} times, and between a signal and its next waitpid() the waiting \
             thread was seen asleep in {call} (/proc/PID/task/TID/syscall): wait() sleeps before \
             it retries after EINTR; a child that exits meanwhile is noticed only when the sleep \
             ends, and a stream of signals turns the wait into sleep-and-retry: call waitpid() \
             again at once after EINTR, no sleep"
        )));
    }
    if let Err((round, gave_up)) = interrupted {
        let said = match session.message_within(Duration::from_millis(500))? {
            Some(message) => format!("; wait() returned `{}`", session.done(message)?.wait),
            None => String::new(),
        };
        return Err(Fail::failed(format!(
            "SIGUSR1 interrupted waitpid() (signal {round} of {rounds}) and wait() gave up ({}{said}): \
             a signal makes waitpid() fail with EINTR; that is no error, call waitpid() again",
            gave_up.join("; ")
        )));
    }
    // Far more interruptions than signals can bring in the time: waitpid() made to fail with
    // EINTR again and again by the grader's tracer.
    let forced = match forced_eintrs(&mut session, rounds)? {
        Some(forced) => forced,
        None => {
            run.note(
                "the grader may not trace the parent here (ptrace): waitpid() was interrupted \
                 by the signals only",
            );
            0
        }
    };
    hold.release();
    let done = session.recv_done()?;
    session.verify_echo(&done)?;
    if done.wait != "ok" {
        return Err(Fail::failed(format!(
            "the echo child exited with status 0, yet wait() returned `{}`",
            done.wait
        )));
    }
    let children = inspect::children(Pid::from_raw(parent));
    if !children.is_empty() {
        return Err(Fail::failed(format!(
            "wait() returned but the parent still has children {children:?}: reap the echo child \
             with waitpid()"
        )));
    }
    session.finish()?;
    let stopped = stopped_while_waited(run)?;
    let failing = waitpid_fails(run)?;
    let alone = wait_without_exchange(run)?;
    Ok(format!(
        "with the child held at its exit, wait() stayed blocked in waitpid() through {rounds} \
         signals and {forced} more EINTRs in a row, then reaped it; {stopped}; {failing}; \
         {alone}"
    ))
}

/// `wait()` called right after `spawn()`, with no `exchange()` (`--wait-only`): `to_child` is
/// still the parent's, and `wait()` must close it before it blocks in `waitpid()`, or the
/// child waits for an end-of-file on pipe A that only that close gives, and the parent for the
/// child. A correct program ends at once (the child reads end-of-file, echoes nothing and
/// exits 0); the deadlock is recognised from `/proc` (the parent in `wait4`, holding pipe A's
/// write end, the child in a read of pipe A) and the processes are killed.
fn wait_without_exchange(run: &mut Run) -> Result<String, Fail> {
    let input = run.random_bytes(16);
    let flags = Flags {
        wait_only: true,
        ..Flags::default()
    };
    let mut session = start(run, input, flags)?;
    let (parent, child) = (session.parent, session.child);
    settle_in_read(child);
    let pipes = session.pipes()?;
    session.go()?;
    // Seen twice in a row: the state is the deadlock, not a step on the way out of it.
    let mut seen = 0;
    let until = Instant::now() + Duration::from_secs(3);
    let done = loop {
        if let Some(message) = session.message_within(Duration::from_millis(10))? {
            break session.done(message)?;
        }
        let waiting = in_waitpid(parent);
        let holds_a: Vec<i32> = pipes_of(&session.proc, parent)
            .get(&pipes.a)
            .map(|(_, writes)| writes.clone())
            .unwrap_or_default();
        let child_reads_a = inspect::view(child).is_some_and(|view| {
            view.threads.iter().any(|t| {
                t.state == 'S'
                    && matches!(
                        classify(&view, t.syscall),
                        Activity::PipeRead { inode, .. } if inode == pipes.a
                    )
            })
        });
        if !waiting.is_empty() && !holds_a.is_empty() && child_reads_a {
            seen += 1;
        } else {
            seen = 0;
        }
        if seen >= 2 {
            let fds: Vec<String> = holds_a.iter().map(i32::to_string).collect();
            session.proc.kill_tree();
            return Err(Fail::failed(format!(
                "with wait() called right after spawn(), no exchange() before it (main.rs \
                 --wait-only), the parent was blocked in waitpid() (the wait4 system call) \
                 while it still held the write end of pipe A (fd {} -> pipe:[{}], the pipe \
                 whose read end, fd {}, the echo child was blocked in read() of): the child \
                 waits for an end-of-file that only the parent's close can give, and the \
                 parent waits for the child, for ever (the grader killed both). wait() must \
                 close both of its pipe ends (to_child too, when exchange() has not taken it) \
                 before it blocks in waitpid()",
                fds.join(", "),
                pipes.a,
                pipes.child_reads_a
            )));
        }
        if Instant::now() > until {
            let hang = session.proc.diagnose();
            session.proc.kill_tree();
            return Err(Fail::TimedOut(format!(
                "with wait() called right after spawn(), no exchange() before it (main.rs \
                 --wait-only), wait() did not return within 3 s: it must close both pipe \
                 ends, then reap the child, which sees end-of-file and exits 0. {hang}"
            )));
        }
    };
    if done.wait != "ok" {
        return Err(Fail::failed(format!(
            "with wait() called right after spawn(), no exchange() before it (main.rs \
             --wait-only), wait() returned `{}`: closing pipe A's write end gives the child \
             end-of-file at once, and it must exit with status 0, which wait() reports as Ok",
            done.wait
        )));
    }
    session.finish()?;
    Ok("wait() with no exchange() before it closed pipe A and reaped the child".into())
}

/// `waitpid()` made to fail with `ECHILD` (the call skipped by the grader's tracer, the child
/// left unreaped: the errno of a child reaped elsewhere, which a correct `waitpid(self.pid, None)`
/// never meets here): `wait()` must return `Wait(ECHILD)`,
/// the error of the call, not `ChildFailed` (a failed `waitpid()` says nothing of how the child
/// ended) nor another errno.
fn waitpid_fails(run: &mut Run) -> Result<String, Fail> {
    let input = run.random_bytes(4 << 10);
    let mut session = start(run, input, Flags::default())?;
    let waits = Call::one_of(&[libc::SYS_wait4, libc::SYS_waitid]);
    let Some(mut tracer) = Tracer::attach(session.parent, waits, Action::Fail(libc::ECHILD))?
    else {
        run.note(
            "the grader may not trace the parent here (ptrace): waitpid() failing was not tried",
        );
        session.exchange()?;
        session.finish()?;
        return Ok("waitpid() failing not tried".into());
    };
    let done = session.exchange()?;
    let failed = tracer.failed_the_call()?;
    drop(tracer);
    session.verify_echo(&done)?;
    if !failed {
        // wait() reaped the child some other way, on another thread: the other checks judge it.
        run.note("wait() made no waitpid() on the main thread: waitpid() failing was not tried");
        session.finish()?;
        return Ok("waitpid() failing not tried".into());
    }
    let setting = "the grader made wait()'s waitpid() fail with ECHILD (the call skipped by its \
                   tracer, the child left unreaped: \"no such child\", as if it had been reaped \
                   elsewhere)";
    let verdict = match Returned::parse(&done.wait) {
        Returned::Wait(errno) if errno == "ECHILD" => None,
        Returned::ChildFailed => Some(format!(
            "{setting}, and wait() returned `{}` (ChildFailed): a waitpid() that fails says \
             nothing of how the child ended, ECHILD included (\"no such child\" is no exit \
             status); return PipeEchoError::Wait with waitpid()'s errno",
            done.wait
        )),
        Returned::Wait(errno) => Some(format!(
            "{setting}, and wait() returned Wait({errno}): return PipeEchoError::Wait with the \
             errno waitpid() returned, not a fixed or guessed one"
        )),
        Returned::Ok(_) => Some(format!(
            "{setting}, and wait() returned `{}`: a failed waitpid() reaped nothing; return \
             PipeEchoError::Wait with its errno",
            done.wait
        )),
        _ => Some(format!(
            "{setting}, and wait() returned `{}`: return PipeEchoError::Wait with the errno \
             waitpid() returned (only EINTR is retried)",
            done.wait
        )),
    };
    session.finish()?;
    match verdict {
        Some(message) => Err(Fail::failed(message)),
        None => Ok("waitpid() failing with ECHILD gave Wait(ECHILD)".into()),
    }
}

/// How many times in a row the grader's tracer makes `waitpid()` fail with `EINTR` after the
/// signals: far more than any limit a program might set itself on retries (none is allowed),
/// in a few milliseconds.
const FORCED_EINTRS: u32 = 1000;

/// With the child held at its exit and the parent blocked in `waitpid()`, makes that call fail
/// with `EINTR` [`FORCED_EINTRS`] times in a row (the tracer skips it, as a signal caught by a
/// handler ends it), and sees the parent call it again each time and block in it at the end.
/// `None` if the parent may not be traced here.
fn forced_eintrs(session: &mut Session, signals: u32) -> Result<Option<u32>, Fail> {
    let parent = session.parent;
    let Some(&tid) = in_waitpid(parent).keys().next() else {
        return Ok(None);
    };
    let waits = Call::one_of(&[libc::SYS_wait4, libc::SYS_waitid]);
    let fail = Action::FailTimes(libc::EINTR, FORCED_EINTRS);
    let Some(mut tracer) = Tracer::attach_thread(parent, tid, waits, fail)? else {
        return Ok(None);
    };
    let gave_up = |failed: u32, what: String| {
        Fail::failed(format!(
            "after the {signals} SIGUSR1, the grader made waitpid() fail with EINTR again and \
             again (its tracer skipping the call, as a signal caught by a handler ends it), \
             with the echo child still held at its exit, and wait() gave up after {failed} of \
             them ({} interruptions in all): {what}; there must be no limit on retries: call \
             waitpid() again every time it fails with EINTR",
            signals + failed
        ))
    };
    // Attaching interrupts the blocked call, which the kernel restarts: the restart fails, and
    // each call after it.
    for failed in 0..FORCED_EINTRS {
        let until = Instant::now() + Duration::from_secs(2);
        loop {
            if tracer.failed_before(Instant::now() + Duration::from_millis(5))? {
                break;
            }
            if let Some(message) = session.message_within(Duration::ZERO)? {
                let done = session.done(message)?;
                return Err(gave_up(failed, format!("wait() returned `{}`", done.wait)));
            }
            if Instant::now() >= until {
                return Err(gave_up(
                    failed,
                    format!("it no longer calls waitpid() (it is {})", doing(parent)),
                ));
            }
        }
    }
    drop(tracer);
    let until = Instant::now() + Duration::from_secs(2);
    while in_waitpid(parent).is_empty() {
        if let Some(message) = session.message_within(Duration::from_millis(1))? {
            let done = session.done(message)?;
            return Err(gave_up(
                FORCED_EINTRS,
                format!("wait() returned `{}`", done.wait),
            ));
        }
        if Instant::now() >= until {
            return Err(gave_up(
                FORCED_EINTRS,
                format!("it no longer waits in waitpid() (it is {})", doing(parent)),
            ));
        }
    }
    Ok(Some(FORCED_EINTRS))
}

/// Waits (3 s at most) for the parent's answer, or for one of its threads that waited in
/// `waitpid()` (`slept`: each with its count of sleeps then) to have woken and gone back to
/// waiting there. The answer, if it came first.
fn answer_or_back_in_waitpid(
    session: &mut Session,
    parent: i32,
    slept: &[(i32, Option<u64>)],
) -> Result<Option<Done>, Fail> {
    let woke_and_slept = || {
        let again = in_waitpid(parent);
        slept.iter().any(|&(tid, before)| {
            again.contains_key(&tid) && sleeps(parent, tid).zip(before).is_some_and(|(n, b)| n > b)
        })
    };
    let until = Instant::now() + Duration::from_secs(3);
    loop {
        if let Some(message) = session.message_within(Duration::from_millis(2))? {
            return session.done(message).map(Some);
        }
        if woke_and_slept() || Instant::now() > until {
            return Ok(None);
        }
    }
}

/// How many times thread `tid` of `pid` has gone to sleep, from its `status` in `/proc`.
fn sleeps(pid: i32, tid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|n| n.trim().parse().ok())
}

/// The child stopped (`SIGSTOP`) while `wait()` is blocked in `waitpid()`: a stopped child has
/// not exited, so `waitpid()` must go on waiting. The grader holds the child just after it has
/// closed pipe B (the parent then has its end-of-file and calls `wait()`), stops it, and watches
/// the waiting thread wake up (the kernel wakes it for the stop) and sleep again.
fn stopped_while_waited(run: &mut Run) -> Result<String, Fail> {
    let input = run.random_bytes(4 << 10);
    let mut session = start(run, input, Flags::default())?;
    let (parent, child) = (session.parent, session.child);
    settle_in_read(child);
    let pipes = session.pipes()?;
    let close_b = Call::arg_is(libc::SYS_close, 0, pipes.child_writes_b as u64);
    let Some(mut tracer) = Tracer::attach(child, close_b, Action::HoldAfter)? else {
        run.note(
            "the grader may not trace the echo child here (ptrace): a child stopped while \
             wait() waits was not tried",
        );
        session.exchange()?;
        session.finish()?;
        return Ok("a stopped child not tried".into());
    };
    session.go()?;
    let until = Instant::now() + Duration::from_secs(5);
    match tracer.wait(&mut session.proc, until)? {
        Reached::Call => {}
        Reached::Passed(Some(message)) => {
            return Err(returned_early(&session.done(message)?));
        }
        // It closed pipe B some other way (or on another thread): nothing to hold it at.
        Reached::Passed(None) => {
            drop(tracer);
            let done = session.recv_done()?;
            session.verify_echo(&done)?;
            session.finish()?;
            return Ok("a stopped child not tried (pipe B closed otherwise)".into());
        }
    }
    let waiting = loop {
        if let Some(message) = session.message_within(Duration::from_millis(2))? {
            return Err(returned_early(&session.done(message)?));
        }
        let waiting = in_waitpid(parent);
        if !waiting.is_empty() {
            break waiting;
        }
        if Instant::now() > until {
            // How it waits instead is waits-for-exit's to judge; here the child just goes.
            tracer.release();
            let done = session.recv_done()?;
            session.verify_echo(&done)?;
            session.finish()?;
            return Ok("a stopped child not tried (wait() was not seen in waitpid())".into());
        }
    };
    let slept: Vec<(i32, Option<u64>)> = waiting
        .keys()
        .map(|&tid| (tid, sleeps(parent, tid)))
        .collect();
    // Let go, the child meets the stop on its way back from close().
    tracer.release_stopped(child)?;
    let early = answer_or_back_in_waitpid(&mut session, parent, &slept);
    let early = match early {
        Ok(None) => None,
        other => {
            // Continued whatever happened: no process is left stopped.
            let _ = kill(Pid::from_raw(child), Signal::SIGCONT);
            other?
        }
    };
    if let Some(done) = early {
        return Err(Fail::failed(format!(
            "the grader stopped the echo child (SIGSTOP) while wait() was blocked in waitpid(), \
             and wait() returned `{}` while the child was stopped: a stopped child has not \
             exited; wait() must go on waiting until it exits (waitpid() without WUNTRACED, and \
             ChildFailed only for an end: an exit status other than 0, or a signal that killed \
             it)",
            done.wait
        )));
    }
    let continued = continued_while_waited(&mut session, &waiting)?;
    let done = session.recv_done()?;
    session.verify_echo(&done)?;
    if done.wait != "ok" {
        return Err(Fail::failed(format!(
            "the echo child was stopped (SIGSTOP) while wait() waited, then continued \
             (SIGCONT), and exited with status 0, yet wait() returned `{}`",
            done.wait
        )));
    }
    if !inspect::children(Pid::from_raw(parent)).is_empty() {
        return Err(Fail::failed(
            "the echo child was stopped and continued while wait() waited; wait() returned but \
             the child was not reaped: wait() must block in waitpid() until it has exited",
        ));
    }
    session.finish()?;
    Ok(format!(
        "a child stopped and continued while wait() waited was still waited for{continued}"
    ))
}

/// The echo child, stopped while the parent waits in `waitpid()`, is continued (`SIGCONT`) and
/// held right after, alive ([`ContinuedHold`]): the parent is woken by the continue and must go
/// back to waiting (a continued child has not exited). Without the hold the child, continued,
/// exits at once, and a parent that is told of continues (`WCONTINUED`) would see its exit
/// first, as often as not. Returns what was tried, for the check's summary.
fn continued_while_waited(
    session: &mut Session,
    waiting: &BTreeMap<i32, &'static str>,
) -> Result<String, Fail> {
    let (parent, child) = (session.parent, session.child);
    let slept: Vec<(i32, Option<u64>)> = waiting
        .keys()
        .map(|&tid| (tid, sleeps(parent, tid)))
        .collect();
    let Some(hold) = ContinuedHold::continue_stopped(child)? else {
        return Ok(String::new());
    };
    let early = answer_or_back_in_waitpid(session, parent, &slept);
    hold.release();
    if let Some(done) = early? {
        return Err(Fail::failed(format!(
            "the grader stopped the echo child (SIGSTOP) while wait() was blocked in waitpid(), \
             then continued it (SIGCONT) and held it, alive, right after the continue (traced): \
             wait() returned `{}` for a child that had only been continued: a continued child \
             has not exited; wait() must go on waiting until it exits (waitpid() without \
             WCONTINUED or WUNTRACED, or back to waitpid() on Continued and Stopped, and \
             ChildFailed only for an end: an exit status other than 0, or a signal that killed \
             it)",
            done.wait
        )));
    }
    Ok("; continued and held alive, it was waited for still".into())
}

/// Waits until the held child stops at its exit; returns its exit status. A `done` before that
/// means `wait()` did not wait.
fn held_at_exit(session: &mut Session, hold: &mut ExitHold) -> Result<i32, Fail> {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = hold.at_exit()? {
            return Ok(status);
        }
        if let Some(message) = session.message_within(Duration::from_millis(2))? {
            return Err(returned_early(&session.done(message)?));
        }
        if Instant::now() > until {
            return Err(Fail::TimedOut(
                session.stopped_reading(session.proc.diagnose()),
            ));
        }
    }
}

pub fn child_dies_early(run: &mut Run) -> Result<String, Fail> {
    // More than both pipes hold, even enlarged: the writes cannot all fit before the error.
    let input = run.random_bytes(2 << 20);
    let twice = Flags {
        twice: true,
        ..Flags::default()
    };
    let mut session = start(run, input, twice)?;
    let child = Pid::from_raw(session.child);
    kill(child, Signal::SIGKILL).map_err(|e| Fail::Grader(format!("kill: {e}")))?;
    // Let the kill land before the transfer starts.
    let settle = Instant::now() + Duration::from_secs(1);
    while Instant::now() < settle && inspect::view(session.child).is_some_and(|v| v.state != 'Z') {
        std::thread::sleep(Duration::from_millis(5));
    }
    let done = session.exchange()?;
    match Returned::parse(&done.exchange) {
        Returned::Write(errno) if errno == "EPIPE" => {}
        Returned::Ok(_) => {
            return Err(Fail::failed(
                "the echo child was killed before the transfer, yet exchange() reported success: \
                 check the result of every write() and read(), and compare the echo's length",
            ));
        }
        Returned::ShortEcho { .. } => {
            return Err(Fail::failed(format!(
                "the echo child was killed before the transfer, and exchange() returned `{}` \
                 (ShortEcho): every write() to pipe A failed with EPIPE, and that write error is \
                 what exchange() must return (PipeEchoError::Write(EPIPE)); the write error was \
                 dropped, or the lengths were compared before the writer's result was looked at",
                done.exchange
            )));
        }
        _ => {
            return Err(Fail::failed(format!(
                "the echo child was killed before the transfer, and exchange() returned `{}`: \
                 with nobody left to read pipe A, write() fails with EPIPE, and exchange() must \
                 return that write error (PipeEchoError::Write(EPIPE))",
                done.exchange
            )));
        }
    }
    match Returned::parse(&done.wait) {
        Returned::ChildFailed => {}
        Returned::Ok(_) => {
            return Err(Fail::failed(
                "the echo child was killed by SIGKILL, yet wait() reported a clean exit: only \
                 Exited(_, 0) is success",
            ));
        }
        _ => {
            return Err(Fail::failed(format!(
                "wait() returned `{}` for a child killed by SIGKILL: reap it with waitpid() and \
                 return ChildFailed for any end but Exited(_, 0)",
                done.wait
            )));
        }
    }
    refused_again(&done)?;
    session.finish()?;
    let read_on = pipe_a_still_read(run)?;
    let late = killed_at_exit(run)?;
    let write_failed = parent_write_fails(run)?;
    let read_failed = parent_read_fails(run)?;
    let sigpipe = killed_by_sigpipe(run)?;
    Ok(format!(
        "the parent reported the dead child: exchange: {}; wait: {}; a second exchange() was \
         AlreadyExchanged; {read_on}; {late}; {write_failed}; {read_failed}; {sigpipe}",
        done.exchange, done.wait
    ))
}

/// The child killed by `SIGPIPE`: the grader's tracer sets the child's `SIGPIPE` back to its
/// default action (it inherits it ignored) as the child waits for input, then the grader sends
/// it. A child killed by a signal did not `exit(0)`, whichever signal it was (a reader gone is
/// no clean end either): `wait()` must say `ChildFailed`.
fn killed_by_sigpipe(run: &mut Run) -> Result<String, Fail> {
    let input = run.random_bytes(4 << 10);
    let mut session = start(run, input, Flags::default())?;
    let child = session.child;
    settle_in_read(child);
    let pipes = session.pipes()?;
    // Opened before the tracer comes: a byte in pipe A makes the child read again.
    let mut feed = outside::open_pipe(child, pipes.child_reads_a, true)?;
    let read_a = Call::arg_is(libc::SYS_read, 0, pipes.child_reads_a as u64);
    let Some(mut tracer) =
        Tracer::attach(child, read_a, Action::DefaultDisposition(libc::SIGPIPE))?
    else {
        run.note("the grader may not trace the echo child here (ptrace): SIGPIPE was not tried");
        drop(feed);
        session.exchange()?;
        session.finish()?;
        return Ok("a child killed by SIGPIPE not tried".into());
    };
    use std::io::Write;
    let _ = feed.write(b"x");
    let made = tracer.failed_before(Instant::now() + Duration::from_secs(2))?;
    drop(tracer);
    let settle = Instant::now() + Duration::from_secs(1);
    while Instant::now() < settle && ignores_signal(child, libc::SIGPIPE) {
        std::thread::sleep(Duration::from_millis(1));
    }
    if !made || ignores_signal(child, libc::SIGPIPE) {
        drop(feed);
        run.note("the echo child's SIGPIPE could not be set back to its default: not tried");
        session.exchange()?;
        session.finish()?;
        return Ok("a child killed by SIGPIPE not tried".into());
    }
    kill(Pid::from_raw(child), Signal::SIGPIPE).map_err(|e| Fail::Grader(format!("kill: {e}")))?;
    let settle = Instant::now() + Duration::from_secs(2);
    while Instant::now() < settle && outside::zombie_status(child).is_none() {
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(feed);
    let status = outside::zombie_status(child);
    if !status.is_some_and(|s| libc::WIFSIGNALED(s) && libc::WTERMSIG(s) == libc::SIGPIPE) {
        session.exchange()?;
        session.finish()?;
        run.note("the echo child did not die of SIGPIPE: a child killed by SIGPIPE not tried");
        return Ok("a child killed by SIGPIPE not tried".into());
    }
    let done = session.exchange()?;
    let verdict = match Returned::parse(&done.wait) {
        Returned::ChildFailed => None,
        Returned::Ok(_) => Some(
            "the echo child was killed by SIGPIPE (the grader set its SIGPIPE back to the \
             default action and sent it; the zombie's status says so), yet wait() reported a \
             clean exit: a child killed by a signal, SIGPIPE included, did not exit(0); only \
             Exited(_, 0) is success, Signaled(..) of any signal is ChildFailed"
                .to_string(),
        ),
        _ => Some(format!(
            "wait() returned `{}` for a child killed by SIGPIPE: reap it with waitpid() and \
             return ChildFailed for any end but Exited(_, 0)",
            done.wait
        )),
    };
    session.finish()?;
    match verdict {
        Some(message) => Err(Fail::failed(message)),
        None => Ok("a child killed by SIGPIPE was ChildFailed".into()),
    }
}

/// A call of the parent on a pipe made to fail by [`fail_blocked_call`], and the exchange's end.
struct FailedCall {
    session: Session,
    fd: i32,
    tid: i32,
    done: Done,
}

impl FailedCall {
    /// Ends the session, then gives the verdict: its message as the failure, or `passed`.
    fn conclude(self, verdict: Option<String>, passed: &str) -> Result<String, Fail> {
        self.session.finish()?;
        match verdict {
            Some(message) => Err(Fail::failed(message)),
            None => Ok(passed.into()),
        }
    }
}

/// Starts an echo of `input` with the child stopped, waits (3 s) for a thread of the parent
/// blocked in `number` on the descriptor `end` picks, and has the tracer fail that call with
/// `EIO`: the write and read probes share it. The inner `Err` is a probe not tried, said.
fn fail_blocked_call(
    run: &mut Run,
    input: Vec<u8>,
    number: libc::c_long,
    end: fn(&Pipes) -> i32,
    not_tried: &str,
    unfailed: &str,
) -> Result<Result<FailedCall, String>, Fail> {
    let name = if number == libc::SYS_write {
        "write"
    } else {
        "read"
    };
    let pipe = if number == libc::SYS_write { "A" } else { "B" };
    let mut session = start(run, input, Flags::default())?;
    let (parent, child) = (session.parent, session.child);
    settle_in_read(child);
    let pipes = session.pipes()?;
    outside::hold_stopped(child)?;
    session.go()?;
    let fd = end(&pipes);
    let until = Instant::now() + Duration::from_secs(3);
    let blocked_thread = loop {
        let blocked = inspect::view(parent).and_then(|v| {
            v.threads
                .iter()
                .find(|t| t.syscall == Some((number, fd as u64)))
                .map(|t| t.tid)
        });
        if let Some(tid) = blocked {
            break Some(tid);
        }
        if Instant::now() > until {
            break None;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let cont = || kill(Pid::from_raw(child), Signal::SIGCONT);
    let Some(tid) = blocked_thread else {
        // It uses the pipe some other way (poll(), non-blocking calls): other checks judge it.
        let _ = cont();
        let done = session.recv_done()?;
        session.verify_echo(&done)?;
        session.finish()?;
        run.note(format!(
            "no thread of the parent blocked in {name}() on pipe {pipe}: a failing {name}() not \
             tried"
        ));
        return Ok(Err(not_tried.into()));
    };
    let call = Call::arg_is(number, 0, fd as u64);
    let tracer = Tracer::attach_thread(parent, tid, call, Action::Fail(libc::EIO))?;
    let _ = cont();
    let Some(mut tracer) = tracer else {
        run.note(format!(
            "the grader may not trace the parent here (ptrace): a failing {name}() not tried"
        ));
        session.recv_done()?;
        session.finish()?;
        return Ok(Err(not_tried.into()));
    };
    let failed = tracer.failed_before(Instant::now() + Duration::from_secs(3))?;
    drop(tracer);
    if failed && number == libc::SYS_write {
        session.write_failed_with = Some("EIO");
    }
    let done = session.recv_done()?;
    if !failed {
        session.finish()?;
        return Ok(Err(unfailed.into()));
    }
    Ok(Ok(FailedCall {
        session,
        fd,
        tid,
        done,
    }))
}

/// The parent's `write()` to pipe A made to fail with `EIO` (skipped by the grader's tracer on
/// the thread blocked writing pipe A, the child stopped so that pipe A is full; an errno no pipe
/// gives by itself, with the child alive and reading): `exchange()` must return `Write(EIO)`,
/// the error `write()` returned, not `EPIPE` or another guess.
fn parent_write_fails(run: &mut Run) -> Result<String, Fail> {
    let input = run.random_bytes(1 << 20);
    let failed = match fail_blocked_call(
        run,
        input,
        libc::SYS_write,
        |pipes| pipes.parent_writes_a,
        "a write() to pipe A failing not tried",
        "a write() to pipe A failing not tried (the input went in one write)",
    )? {
        Ok(failed) => failed,
        Err(not_tried) => return Ok(not_tried),
    };
    let (fd, tid, done) = (failed.fd, failed.tid, &failed.done);
    let setting = format!(
        "the grader made the parent's write() to pipe A (fd {fd}, thread {tid}) fail with EIO \
         (the call skipped by its tracer) while the echo child was alive and reading"
    );
    let verdict = match Returned::parse(&done.exchange) {
        Returned::Write(errno) if errno == "EIO" => None,
        Returned::Write(errno) => Some(format!(
            "{setting}, and exchange() returned Write({errno}): return PipeEchoError::Write \
             with the errno write() returned, not a fixed or guessed one (EPIPE only when \
             write() said EPIPE)"
        )),
        _ => Some(format!(
            "{setting}, and exchange() returned `{}`: a write() that fails is an error; return \
             PipeEchoError::Write with its errno",
            done.exchange
        )),
    };
    failed.conclude(
        verdict,
        "a write() to pipe A failing with EIO gave Write(EIO)",
    )
}

/// The parent's `read()` of pipe B made to fail with `EIO` (skipped by the grader's tracer on
/// the thread blocked reading pipe B, the child stopped; the input fits pipe A, so the writer
/// is done by then; an errno no pipe gives by itself): only a `read()` that returns 0 is
/// end-of-file, so `exchange()` must return `Read(EIO)`, not the bytes it had as a whole echo
/// (`Ok`, `ShortEcho`) nor another kind.
fn parent_read_fails(run: &mut Run) -> Result<String, Fail> {
    let input = run.random_bytes(16 << 10);
    let failed = match fail_blocked_call(
        run,
        input,
        libc::SYS_read,
        |pipes| pipes.parent_reads_b,
        "a read() of pipe B failing not tried",
        "a read() of pipe B failing not tried",
    )? {
        Ok(failed) => failed,
        Err(not_tried) => return Ok(not_tried),
    };
    let (fd, tid, done) = (failed.fd, failed.tid, &failed.done);
    let setting = format!(
        "the grader made the parent's read() of pipe B (fd {fd}, thread {tid}) fail with EIO \
         (the call skipped by its tracer) while the echo child was alive and echoing"
    );
    let verdict = match Returned::parse(&done.exchange) {
        Returned::Read(errno) if errno == "EIO" => None,
        Returned::Read(errno) => Some(format!(
            "{setting}, and exchange() returned Read({errno}): return PipeEchoError::Read with \
             the errno read() returned, not a fixed or guessed one"
        )),
        Returned::Ok(_) | Returned::ShortEcho { .. } => Some(format!(
            "{setting}, and exchange() returned `{}`: it took the read error for end-of-file \
             and returned what it had read so far; only a read() that returns 0 is \
             end-of-file: any other error but EINTR must make exchange() return \
             PipeEchoError::Read(errno)",
            done.exchange
        )),
        _ => Some(format!(
            "{setting}, and exchange() returned `{}`: a read() of pipe B that fails is \
             PipeEchoError::Read with its errno (Write is for the writes to pipe A)",
            done.exchange
        )),
    };
    failed.conclude(
        verdict,
        "a read() of pipe B failing with EIO gave Read(EIO)",
    )
}

/// The child killed while the grader holds a read end of pipe A and takes what the parent
/// writes there: no `write()` to pipe A can fail, so an error of kind `Write` was not returned
/// by one. It tells a `Write(EPIPE)` the kernel gave from one guessed from the child's state.
///
/// Before it takes anything, the grader lets pipe A fill: pipe B is at end-of-file (the child
/// is dead) while the parent's writing is blocked on the full pipe A, and `exchange()` has
/// nothing to do but wait for its writer; how the parent's threads wait is judged then.
fn pipe_a_still_read(run: &mut Run) -> Result<String, Fail> {
    // More than pipe A holds, even enlarged to the 1 MiB an unprivileged process may set.
    let len = 2 << 20;
    let input = run.random_bytes(len);
    let (mut session, pipes) = started_twice_in_read(run, input)?;
    let (parent, child) = (session.parent, session.child);
    let mut pipe_a = outside::open_pipe(child, pipes.child_reads_a, false)?;
    kill(Pid::from_raw(child), Signal::SIGKILL).map_err(|e| Fail::Grader(format!("kill: {e}")))?;
    let settle = Instant::now() + Duration::from_secs(1);
    while Instant::now() < settle && outside::zombie_status(child).is_none() {
        std::thread::sleep(Duration::from_millis(2));
    }
    session.go()?;
    // Pipe A full, nobody taking from it: the writing is blocked for as long as the grader
    // wants, after pipe B's end-of-file.
    let until = Instant::now() + Duration::from_secs(2);
    let mut early = None;
    let full = loop {
        let full = match (
            outside::bytes_in_pipe(&pipe_a),
            outside::pipe_capacity(&pipe_a),
        ) {
            (Some(held), Some(capacity)) => held >= capacity.max(1) as usize,
            _ => false,
        };
        if full || Instant::now() > until {
            break full;
        }
        if let Some(message) = session.message_within(Duration::from_millis(2))? {
            early = Some(session.done(message)?);
            break false;
        }
    };
    if full {
        let writer = inspect::view(parent).and_then(|view| {
            view.threads.iter().find_map(|t| {
                matches!(
                    classify(&view, t.syscall),
                    Activity::PipeWrite { inode, .. } if inode == pipes.a
                )
                .then_some(t.tid)
            })
        });
        /// Where the writer is blocked as it should be and another thread of the parent
        /// polls: the one waiting for the writer.
        const WAIT_FOR_WRITER: &str = "exchange() has nothing to do but wait for its writer \
                                       thread: block in join(), not a loop that looks whether \
                                       it has finished (is_finished(), a flag) and sleeps \
                                       between looks";
        const WAIT_FOR_ROOM: &str = "exchange() has nothing to do but wait until pipe A takes \
                                     more bytes: block (in write(), in join() of a writer \
                                     thread, or in poll() with no timeout)";
        let (setting, advice) = match writer {
            Some(tid) => (
                format!(
                    "with the echo child killed, pipe B at end-of-file, and the parent's writer \
                     thread {tid} blocked writing pipe A (full: the grader holds a read end \
                     and takes nothing)"
                ),
                WAIT_FOR_WRITER,
            ),
            None => (
                "with the echo child killed, pipe B at end-of-file, and pipe A full (the \
                 grader holds a read end and takes nothing)"
                    .to_string(),
                WAIT_FOR_ROOM,
            ),
        };
        if let Err(fail) =
            waiting::expect_blocked(&[parent], &role_of(parent), WaitRules::untimed(), advice)
        {
            let mut message = fail.message().to_string();
            // The writer itself woke up: the advice about waiting for it does not apply.
            if let Some(tid) = writer
                && message.contains(&format!("thread {tid})"))
            {
                message = message.replace(WAIT_FOR_WRITER, WAIT_FOR_ROOM);
            }
            return Err(Fail::failed(format!("{setting}: {message}")));
        }
    }
    let until = Instant::now() + Duration::from_secs(5);
    let mut taken = 0;
    let done = loop {
        if let Some(done) = early.take() {
            break done;
        }
        taken += outside::take_bytes(&mut pipe_a, 1 << 20)?.len();
        if let Some(message) = session.message_within(Duration::from_millis(2))? {
            break session.done(message)?;
        }
        if Instant::now() > until {
            return Err(Fail::TimedOut(session.proc.diagnose()));
        }
    };
    drop(pipe_a);
    let setting = format!(
        "the grader killed the echo child (SIGKILL) but kept a read end of pipe A open itself, \
         taking what the parent wrote there ({taken} of the {len} bytes came)"
    );
    match Returned::parse(&done.exchange) {
        Returned::Write(_) => {
            return Err(Fail::failed(format!(
                "{setting}, so no write() to pipe A could fail, yet exchange() returned `{}`: \
                 that error did not come from a write(); exchange() must write the input to \
                 pipe A and return the error write() gives (EPIPE once nobody holds pipe A's \
                 read end), not one made up from the child's state",
                done.exchange
            )));
        }
        Returned::Ok(_) => {
            return Err(Fail::failed(format!(
                "{setting}, and nothing came back through pipe B, yet exchange() returned `{}`: \
                 compare the echo's length with the input's (ShortEcho)",
                done.exchange
            )));
        }
        _ => {}
    }
    refused_again(&done)?;
    session.finish()?;
    Ok(format!(
        "with the child killed and pipe A still read, exchange() returned `{}`",
        done.exchange
    ))
}

/// A child that echoed everything and is then killed at its `_exit()` (held there by the
/// grader): `wait()` must still say `ChildFailed`, judging the status `waitpid()` gives and not
/// the echo that came back.
fn killed_at_exit(run: &mut Run) -> Result<String, Fail> {
    let input = run.random_bytes(64 << 10);
    let mut session = start(run, input, Flags::default())?;
    let child = session.child;
    settle_in_read(child);
    let exit = Call::any(libc::SYS_exit_group);
    let Some(mut tracer) = Tracer::attach(child, exit, Action::Hold)? else {
        run.note(
            "the grader may not trace the echo child here (ptrace): a child killed at its exit              after a whole echo was not tried",
        );
        return session
            .finish()
            .map(|()| "a kill at the exit not tried".into());
    };
    session.go()?;
    match tracer.wait(&mut session.proc, Instant::now() + Duration::from_secs(5))? {
        Reached::Call => {
            kill(Pid::from_raw(child), Signal::SIGKILL)
                .map_err(|e| Fail::Grader(format!("kill: {e}")))?;
            // The tracer goes; the kill ends the child where it was held.
            drop(tracer);
        }
        Reached::Passed(_) => {
            return Err(Fail::failed(
                "the parent reported before its echo child reached _exit(): wait() must block in \
                 waitpid() until the child has exited",
            ));
        }
    }
    let done = session.recv_done()?;
    session.verify_echo(&done)?;
    match Returned::parse(&done.wait) {
        Returned::ChildFailed => {}
        _ => {
            return Err(Fail::failed(format!(
                "the echo child echoed all {} bytes, then was killed by SIGKILL on its way out \
                 (the grader held it at its _exit()), yet wait() returned `{}`: wait() judges \
                 the status waitpid() gives, whatever came back through the pipes; only \
                 Exited(_, 0) is success",
                64 << 10,
                done.wait
            )));
        }
    }
    session.finish()?;
    Ok("a child killed at its exit after a whole echo was ChildFailed".into())
}
