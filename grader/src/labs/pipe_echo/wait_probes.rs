//! The other cases of `waits-for-exit`: `wait()` with no `exchange()` before it, `waitpid()`
//! failing with `ECHILD`, and a child stopped, then continued, while `wait()` waits.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::child_exit::{in_waitpid, returned_early};
use super::outside::{self, ContinuedHold, describe_status};
use super::returned::Returned;
use super::session::{Done, Flags, Session, pipes_of, settle_in_read, start};
use crate::engine::diagnose::{Activity, classify};
use crate::engine::inspect;
use crate::engine::tracer::{Action, Call, Reached, Tracer};
use crate::engine::{Fail, Run};

/// `wait()` called right after `spawn()`, with no `exchange()` (`--wait-only`): `to_child` is
/// still the parent's, and `wait()` must close it before it blocks in `waitpid()`, or the
/// child waits for an end-of-file on pipe A that only that close gives, and the parent for the
/// child. A correct program ends at once (the child reads end-of-file, echoes nothing and
/// exits 0); the deadlock is recognised from `/proc` (the parent in `wait4`, holding pipe A's
/// write end, the child in a read of pipe A) and the processes are killed. The grader holds a
/// write end of pipe B of its own meanwhile, as any process may: a `wait()` that reads pipe B
/// to its end-of-file before `waitpid()` never gets there, and is named.
pub(super) fn wait_without_exchange(run: &mut Run) -> Result<String, Fail> {
    let mut session = started_wait_only(run)?;
    let (parent, child) = (session.parent, session.child);
    let pipes = session.pipes()?;
    let held_b = outside::open_pipe(child, pipes.child_writes_b, true)?;
    session.go()?;
    // Seen twice in a row: the state is the deadlock, not a step on the way out of it.
    let mut seen = 0;
    let mut drains = 0;
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
        let reads_b = outside::zombie_status(child).and_then(|_| thread_reading(parent, pipes.b));
        drains = if reads_b.is_some() { drains + 1 } else { 0 };
        if let Some((tid, fd)) = reads_b.filter(|_| drains >= 2) {
            session.proc.kill_tree();
            return Err(Fail::failed(format!(
                "with wait() called right after spawn(), no exchange() before it (main.rs \
                 --wait-only), and the grader holding a write end of pipe B of its own (as any \
                 process may), the echo child had exited (a zombie, unreaped), and the parent \
                 was blocked in read() of pipe B (fd {fd}, thread {tid}) instead of waitpid(): \
                 wait() reads pipe B to its end-of-file before it reaps the child, and that \
                 end-of-file never comes while another process holds a write end (the grader \
                 killed both). wait() must close both of its pipe ends, unread, then block in \
                 waitpid()"
            )));
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
    drop(held_b);
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

/// `wait()` with no `exchange()` before it (`--wait-only`) again, the parent's `waitpid()` held
/// by the grader's tracer until the echo child has ended: the child must end on its own, as
/// closing pipe A's write end makes it (end-of-file, exit 0), and not by a signal, which the
/// grader sends none of here. A child killed by the program and reported `Ok` hides the wait.
pub(super) fn wait_only_child_ends_by_itself(run: &mut Run) -> Result<String, Fail> {
    let not_tried = "the child's end with no exchange() not seen (no waitpid() held)";
    let mut session = started_wait_only(run)?;
    let (parent, child) = (session.parent, session.child);
    let waits = Call::one_of(&[libc::SYS_wait4, libc::SYS_waitid]);
    let Some(mut tracer) = Tracer::attach(parent, waits, Action::Hold)? else {
        session.go()?;
        session.recv_done()?;
        session.finish()?;
        return Ok(not_tried.into());
    };
    session.go()?;
    if !tracer.held_before(Instant::now() + Duration::from_secs(3))? {
        drop(tracer);
        session.recv_done()?;
        session.finish()?;
        return Ok(not_tried.into());
    }
    let settle = Instant::now() + Duration::from_secs(2);
    while Instant::now() < settle && outside::zombie_status(child).is_none() {
        std::thread::sleep(Duration::from_millis(1));
    }
    let status = outside::zombie_status(child);
    tracer.release();
    let done = session.recv_done()?;
    session.finish()?;
    match status {
        Some(s) if libc::WIFSIGNALED(s) => Err(Fail::failed(format!(
            "with wait() called right after spawn(), no exchange() before it (main.rs \
             --wait-only), the grader held the parent's waitpid() until the echo child had \
             ended: the child {} (the grader sent it no signal), and wait() then returned `{}`. \
             Closing pipe A's write end is what ends the child (end-of-file, then exit 0): \
             wait() must not signal it, and a child killed by a signal is ChildFailed",
            describe_status(s),
            done.wait
        ))),
        Some(_) => Ok("with no exchange() the child ended on its own".into()),
        None => Ok(not_tried.into()),
    }
}

/// The program started with `--wait-only` (a 16-byte input never exchanged), its child waiting
/// for input.
fn started_wait_only(run: &mut Run) -> Result<Session, Fail> {
    let input = run.random_bytes(16);
    let flags = Flags {
        wait_only: true,
        ..Flags::default()
    };
    let session = start(run, input, flags)?;
    settle_in_read(session.child);
    Ok(session)
}

/// A thread of `pid` blocked in a read of the pipe `inode`, and the descriptor it reads.
fn thread_reading(pid: i32, inode: u64) -> Option<(i32, i32)> {
    let view = inspect::view(pid)?;
    view.threads
        .iter()
        .find_map(|t| match classify(&view, t.syscall) {
            Activity::PipeRead { fd, inode: read } if read == inode && t.state == 'S' => {
                Some((t.tid, fd))
            }
            _ => None,
        })
}

/// A `waitpid()` with `WNOHANG` that the parent makes while it still holds pipe B's read end
/// (before `wait()` has closed it, so in `exchange()`), held by the grader's tracer until the
/// echo child has exited, then let run: on the child, it reaps it there, and the status is no
/// longer `wait()`'s to collect with its own `waitpid()`. A program that makes no such call
/// meets nothing; one that makes it in `wait()`, after closing its pipe ends, is judged by the
/// other cases.
pub(super) fn status_collected_early(run: &mut Run) -> Result<String, Fail> {
    const LOOKS: &[Call] = &[
        Call::bits(
            libc::SYS_wait4,
            2,
            libc::WNOHANG as u64,
            libc::WNOHANG as u64,
        ),
        Call::bits(
            libc::SYS_waitid,
            3,
            libc::WNOHANG as u64,
            libc::WNOHANG as u64,
        ),
    ];
    let not_tried = "no waitpid() with WNOHANG before wait()";
    let input = run.random_bytes(4 << 10);
    let mut session = start(run, input, Flags::default())?;
    let (parent, child) = (session.parent, session.child);
    settle_in_read(child);
    let pipes = session.pipes()?;
    let Some(mut tracer) = Tracer::attach(parent, Call::any_of(LOOKS), Action::Hold)? else {
        session.exchange()?;
        session.finish()?;
        return Ok(not_tried.into());
    };
    session.go()?;
    let until = Instant::now() + Duration::from_secs(5);
    let mut done = None;
    let held = loop {
        if tracer.held_before(Instant::now() + Duration::from_millis(5))? {
            break true;
        }
        if let Some(message) = session.message_within(Duration::from_millis(5))? {
            done = Some(session.done(message)?);
            break false;
        }
        if Instant::now() > until {
            break false;
        }
    };
    let holds_b: Vec<i32> = pipes_of(&session.proc, parent)
        .get(&pipes.b)
        .map(|(reads, _)| reads.clone())
        .unwrap_or_default();
    // The pid the call waits for: the child, any child (-1) or the group (0) reap the child.
    let on_child = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/syscall"))
        .ok()
        .and_then(|line| {
            let pid = line.split_whitespace().nth(1)?;
            u64::from_str_radix(pid.trim_start_matches("0x"), 16).ok()
        })
        .is_some_and(|pid| [child as u64, u64::MAX, 0, u32::MAX as u64].contains(&pid));
    if !held || holds_b.is_empty() || !on_child {
        if held {
            tracer.release();
        }
        if done.is_none() {
            session.recv_done()?;
        }
        session.finish()?;
        return Ok(not_tried.into());
    }
    let settle = Instant::now() + Duration::from_secs(2);
    while Instant::now() < settle && outside::zombie_status(child).is_none() {
        std::thread::sleep(Duration::from_millis(1));
    }
    let exited = outside::zombie_status(child).is_some();
    tracer.release();
    let done = session.recv_done()?;
    session.finish()?;
    if !exited {
        return Ok(not_tried.into());
    }
    let fds: Vec<String> = holds_b.iter().map(i32::to_string).collect();
    Err(Fail::failed(format!(
        "the parent called waitpid() with WNOHANG on the echo child while it still held the \
         read end of pipe B (fd {}: before wait() had closed it, so in exchange()); the grader \
         held that call until the child had exited, then let it run, and it reaped the child \
         there (wait() then returned `{}`): the child's status is wait()'s to collect, with a \
         blocking waitpid() once both pipe ends are closed; exchange() leaves the child alone, \
         a zombie until wait() reaps it",
        fds.join(", "),
        done.wait
    )))
}

/// `waitpid()` made to fail with `ECHILD` (the call skipped by the grader's tracer, the child
/// left unreaped: the errno of a child reaped elsewhere, which a correct `waitpid(self.pid, None)`
/// never meets here): `wait()` must return `Wait(ECHILD)`,
/// the error of the call, not `ChildFailed` (a failed `waitpid()` says nothing of how the child
/// ended) nor another errno.
pub(super) fn waitpid_fails(run: &mut Run) -> Result<String, Fail> {
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
pub(super) fn stopped_while_waited(run: &mut Run) -> Result<String, Fail> {
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
    // Only a SIGCONT (or SIGKILL) ends a stop, and the grader has sent neither yet.
    let still_stopped = inspect::view(child).is_some_and(|v| matches!(v.state, 'T' | 't'));
    let early = match early {
        Ok(None) => None,
        other => {
            // Continued whatever happened: no process is left stopped.
            let _ = kill(Pid::from_raw(child), Signal::SIGCONT);
            other?
        }
    };
    if let Some(done) = early.as_ref().filter(|_| !still_stopped) {
        let ended = match outside::zombie_status(child) {
            Some(status) => format!("it {} (a zombie, unreaped)", describe_status(status)),
            None if inspect::view(child).is_none() => "it had ended and been reaped".into(),
            None => format!("it was {}", super::child_exit::doing(child)),
        };
        return Err(Fail::failed(format!(
            "the grader stopped the echo child (SIGSTOP) while wait() was blocked in waitpid(), \
             and sent it nothing more, yet by the time wait() returned `{}` the child was no \
             longer stopped ({ended}): the program itself ended the stop, by sending the child \
             SIGCONT (or a signal that killed it), most likely in wait() on seeing it stopped \
             (waitpid() with WUNTRACED): whoever stopped the child is the one to continue it; \
             wait() must not signal the child, only go on waiting (waitpid() without \
             WUNTRACED) until it exits",
            done.wait
        )));
    }
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
