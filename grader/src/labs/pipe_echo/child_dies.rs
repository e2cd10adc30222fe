//! The check of a child that dies (killed before the transfer, at its exit, by `SIGPIPE`); the
//! parent's failing `write()` and `read()`, part of it, are `failing_calls`'. A child whose
//! write fails is `child_fails`'s.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::descriptors::listed;
use super::failing_calls;
use super::outside;
use super::returned::{Returned, refused_again};
use super::session::{
    Done, Flags, Pipes, Session, role_of, settle_in_read, start, started_twice_in_read,
};
use super::small_inputs;
use crate::engine::diagnose::{Activity, classify};
use crate::engine::inspect::{self, SignalMask};
use crate::engine::tracer::{Action, Call, Reached, Tracer};
use crate::engine::waiting::{self, WaitRules};
use crate::engine::{Fail, Run};

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
    let reader_gone = last_reader_gone(run)?;
    let late = killed_at_exit(run)?;
    let write_failed = failing_calls::parent_write_fails(run)?;
    let read_failed = failing_calls::parent_read_fails(run, libc::EIO)?;
    let read_would_block = failing_calls::parent_read_fails(run, libc::EAGAIN)?;
    let sigpipe = killed_by_sigpipe(run)?;
    let small = small_inputs::small_input_to_dead_child(run)?;
    Ok(format!(
        "the parent reported the dead child: exchange: {}; wait: {}; a second exchange() was \
         AlreadyExchanged; {read_on}; {reader_gone}; {late}; {write_failed}; {read_failed}; \
         {read_would_block}; {sigpipe}; {small}",
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
    while Instant::now() < settle
        && inspect::has_signal(child, child, SignalMask::Ignored, libc::SIGPIPE)
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    if !made || inspect::has_signal(child, child, SignalMask::Ignored, libc::SIGPIPE) {
        drop(feed);
        run.note("the echo child's SIGPIPE could not be set back to its default: not tried");
        session.exchange()?;
        session.finish()?;
        return Ok("a child killed by SIGPIPE not tried".into());
    }
    kill(Pid::from_raw(child), Signal::SIGPIPE).map_err(|e| Fail::Grader(format!("kill: {e}")))?;
    let status = outside::zombie_status_within(child, Duration::from_secs(2));
    drop(feed);
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
    let parent = session.parent;
    let (mut pipe_a, filled) = killed_pipe_a_filled(&mut session, &pipes)?;
    let (full, mut early) = match filled {
        Ok(()) => (true, None),
        Err(early) => (false, early),
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

/// Kills the child of a session whose child waits in `read()`, keeping a read end of pipe A
/// open (returned), then lets the program go and waits (2 s) until pipe A is full, the parent's
/// writing blocked (after pipe B's end-of-file, unless the check holds a write end of pipe B):
/// `Ok`; or the program's report, if it came first.
fn killed_pipe_a_filled(
    session: &mut Session,
    pipes: &Pipes,
) -> Result<(std::fs::File, Result<(), Option<Done>>), Fail> {
    let child = session.child;
    let pipe_a = outside::open_pipe(child, pipes.child_reads_a, false)?;
    kill(Pid::from_raw(child), Signal::SIGKILL).map_err(|e| Fail::Grader(format!("kill: {e}")))?;
    outside::zombie_status_within(child, Duration::from_secs(1));
    session.go()?;
    let until = Instant::now() + Duration::from_secs(2);
    loop {
        let full = match (
            outside::bytes_in_pipe(&pipe_a),
            outside::pipe_capacity(&pipe_a),
        ) {
            (Some(held), Some(capacity)) => held >= capacity.max(1) as usize,
            _ => false,
        };
        if full {
            return Ok((pipe_a, Ok(())));
        }
        if Instant::now() > until {
            return Ok((pipe_a, Err(None)));
        }
        if let Some(message) = session.message_within(Duration::from_millis(2))? {
            let done = session.done(message)?;
            return Ok((pipe_a, Err(Some(done))));
        }
    }
}

/// The child killed, pipe A full (the grader holds its last read end and takes nothing) and
/// pipe B not at end-of-file (the grader holds a write end), then the grader closes pipe A's
/// read end: the parent's next `write()` to pipe A fails with `EPIPE`, and that is what
/// `exchange()` returns. While the writing waits, the parent holds nothing but its two pipe ends
/// and the program's descriptors (the input goes from its memory into pipe A, through no other
/// file). A parent that is one thread waiting in `poll()` is traced meanwhile: `POLLERR` says
/// the reader is gone, but the `EPIPE` to return is a `write()`'s, and one that makes none made
/// its error up.
fn last_reader_gone(run: &mut Run) -> Result<String, Fail> {
    let input = run.random_bytes(2 << 20);
    let mut session = start(run, input, Flags::default())?;
    let parent = session.parent;
    settle_in_read(session.child);
    let pipes = session.pipes()?;
    let pipe_b = outside::open_pipe(session.child, pipes.child_writes_b, true)?;
    let (pipe_a, filled) = killed_pipe_a_filled(&mut session, &pipes)?;
    if let Err(early) = filled {
        // It ended, or never filled pipe A: pipe_a_still_read judges the same setting.
        drop((pipe_a, pipe_b));
        match early {
            Some(_) => session.finish()?,
            None => session.proc.kill_tree(),
        }
        return Ok("a last reader of pipe A gone not tried".into());
    }
    let setting = "with the echo child killed, pipe A full and pipe B not at end-of-file (the \
                   grader held pipe A's last read end, taking nothing, and a write end of pipe \
                   B)";
    let view = blocked_view(parent);
    let fds = view.as_ref().map(|v| v.fds.clone()).unwrap_or_default();
    let own = [pipes.parent_writes_a, pipes.parent_reads_b];
    // A copy of a pipe end (dup()) is still the pipe; another file is not.
    let extra = listed(&fds, |fd, target| {
        !session.fds_before.contains_key(fd)
            && !own.contains(fd)
            && !inspect::pipe_inode(target)
                .is_some_and(|inode| inode == pipes.a || inode == pipes.b)
    });
    if !extra.is_empty() {
        let calls: Vec<String> = view
            .as_ref()
            .map(|v| {
                v.threads
                    .iter()
                    .map(|t| match t.syscall {
                        Some((libc::SYS_sendfile, fd)) => {
                            format!("thread {} blocked in sendfile() to fd {fd}", t.tid)
                        }
                        _ => format!("thread {} {}", t.tid, classify(v, t.syscall).describe()),
                    })
                    .collect()
            })
            .unwrap_or_default();
        session.proc.kill_tree();
        return Err(Fail::failed(format!(
            "{setting}, the parent, sending the input, held descriptors besides its pipe ends \
             and the program's own: {} ({}): the input travels through pipe A only, \
             written from the parent's memory with write() (write_all()), through no other \
             file",
            extra.join(", "),
            calls.join("; ")
        )));
    }
    // One thread, waiting in poll(): the thread that must write.
    let poller = view.as_ref().and_then(|v| match v.threads.as_slice() {
        [t] if classify(v, t.syscall) == Activity::Poll => Some(t.tid),
        _ => None,
    });
    let writes_a = Call::one_of_on(&[libc::SYS_write, libc::SYS_writev], pipes.parent_writes_a);
    let counting = match poller {
        Some(tid) => Tracer::attach_thread(parent, tid, writes_a, Action::ReportEach)?,
        None => None,
    };
    drop(pipe_a);
    // Pipe B's end-of-file only once the parent has met the reader's end and waits again.
    blocked_view(parent);
    drop(pipe_b);
    let done = session.recv_done()?;
    let writes = match counting {
        Some(tracer) => Some(tracer.failed_count(Instant::now() + Duration::from_secs(1))?),
        None => None,
    };
    session.finish()?;
    let closed = format!("{setting}, the grader closed pipe A's read end");
    match Returned::parse(&done.exchange) {
        Returned::Write(errno) if errno == "EPIPE" && writes == Some(0) => {
            Err(Fail::failed(format!(
                "{closed}; the parent, one thread blocked in poll() on both pipes, then made \
                 no write() to pipe A (the grader traced it), yet exchange() returned `{}`: \
                 that EPIPE did not come from a write(); POLLERR from poll() says the reader \
                 is gone, but PipeEchoError::Write carries the error write() returns: call \
                 write() and return its errno",
                done.exchange
            )))
        }
        Returned::Write(errno) if errno == "EPIPE" => Ok(
            "a last reader of pipe A gone while the parent waited to write gave Write(EPIPE)"
                .into(),
        ),
        _ => Err(Fail::failed(format!(
            "{closed}: a write() to pipe A fails with EPIPE once nobody holds its read end, \
             and exchange() must return that error (PipeEchoError::Write(EPIPE)); it returned \
             `{}`",
            done.exchange
        ))),
    }
}

/// The parent seen once every thread of it is blocked (1 s at most): a thread between two calls
/// says nothing yet.
fn blocked_view(parent: i32) -> Option<inspect::ProcessView> {
    let settle = Instant::now() + Duration::from_secs(1);
    let mut view = inspect::view(parent);
    while Instant::now() < settle
        && !view
            .as_ref()
            .is_some_and(|v| v.threads.iter().all(|t| t.state == 'S'))
    {
        std::thread::sleep(Duration::from_millis(1));
        view = inspect::view(parent);
    }
    view
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
