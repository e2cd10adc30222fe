//! Checks of how the echo child ends and how the parent learns it: exit status 0 after
//! end-of-file and 1 when `echo_loop` fails (`EPIPE` too), `wait()` blocking in `waitpid()` until
//! the child has exited (not merely stopped), and the error kinds when the child dies or fails.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::outside::{self, ExitHold, describe_status};
use super::session::{
    Done, Flags, Returned, Session, pipes_of, refused_again, role_of, settle_in_read, start,
};
use crate::engine::diagnose::classify;
use crate::engine::inspect;
use crate::engine::tracer::{Action, Call, Match, Reached, Tracer};
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

/// The threads of `pid` blocked in `waitpid()` (or `waitid()`).
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
        .map(|t| (t.tid, "waitpid()"))
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
            // How it waits instead: the waiting verdict tells polling and spinning apart.
            let verdict =
                waiting::expect_blocked(&[parent], &role_of(parent), WaitRules::untimed(), advice);
            return Err(Fail::failed(match verdict {
                Err(fail) => format!("{held}: {}", fail.message()),
                Ok(_) => format!("{held}: it is {}; {advice}", doing(parent)),
            }));
        }
    };
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
    if let Err((round, gave_up)) =
        outside::interrupt_waiting(parent, &waiting, rounds, "in waitpid()", &|| {
            in_waitpid(parent)
        })
    {
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
    Ok(format!(
        "with the child held at its exit, wait() stayed blocked in waitpid() through {rounds} \
         signals, then reaped it; {stopped}"
    ))
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
    let close_b = Call {
        number: libc::SYS_close,
        matching: Match::Bits {
            arg: 0,
            mask: u64::MAX,
            value: pipes.child_writes_b as u64,
        },
    };
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
    let child_pid = Pid::from_raw(child);
    kill(child_pid, Signal::SIGSTOP).map_err(|e| Fail::Grader(format!("kill: {e}")))?;
    // Let go, the child meets the stop on its way back from close().
    tracer.release();
    let until = Instant::now() + Duration::from_secs(3);
    while inspect::view(child).is_some_and(|v| v.state != 'T') && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
    }
    let woke_and_slept = || {
        let again = in_waitpid(parent);
        slept.iter().any(|&(tid, before)| {
            again.contains_key(&tid) && sleeps(parent, tid).zip(before).is_some_and(|(n, b)| n > b)
        })
    };
    let until = Instant::now() + Duration::from_secs(3);
    let early = loop {
        match session.message_within(Duration::from_millis(2)) {
            Ok(Some(message)) => break session.done(message).map(Some),
            Ok(None) => {}
            Err(fail) => break Err(fail),
        }
        if woke_and_slept() || Instant::now() > until {
            break Ok(None);
        }
    };
    // Continued whatever happened: no process is left stopped.
    let _ = kill(child_pid, Signal::SIGCONT);
    if let Some(done) = early? {
        return Err(Fail::failed(format!(
            "the grader stopped the echo child (SIGSTOP) while wait() was blocked in waitpid(), \
             and wait() returned `{}` while the child was stopped: a stopped child has not \
             exited; wait() must go on waiting until it exits (waitpid() without WUNTRACED, and \
             ChildFailed only for an end: an exit status other than 0, or a signal that killed \
             it)",
            done.wait
        )));
    }
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
    Ok("a child stopped and continued while wait() waited was still waited for".into())
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
    Ok(format!(
        "the parent reported the dead child: exchange: {}; wait: {}; a second exchange() was \
         AlreadyExchanged; {read_on}; {late}",
        done.exchange, done.wait
    ))
}

/// The child killed while the grader holds a read end of pipe A and takes what the parent
/// writes there: no `write()` to pipe A can fail, so an error of kind `Write` was not returned
/// by one. It tells a `Write(EPIPE)` the kernel gave from one guessed from the child's state.
fn pipe_a_still_read(run: &mut Run) -> Result<String, Fail> {
    let len = 256 << 10;
    let input = run.random_bytes(len);
    let twice = Flags {
        twice: true,
        ..Flags::default()
    };
    let mut session = start(run, input, twice)?;
    let child = session.child;
    settle_in_read(child);
    let pipes = session.pipes()?;
    let mut pipe_a = outside::open_pipe(child, pipes.child_reads_a, false)?;
    kill(Pid::from_raw(child), Signal::SIGKILL).map_err(|e| Fail::Grader(format!("kill: {e}")))?;
    let settle = Instant::now() + Duration::from_secs(1);
    while Instant::now() < settle && outside::zombie_status(child).is_none() {
        std::thread::sleep(Duration::from_millis(2));
    }
    session.go()?;
    let until = Instant::now() + Duration::from_secs(5);
    let mut taken = 0;
    let done = loop {
        taken += outside::take_bytes(&mut pipe_a, 64 << 10)?.len();
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

pub fn child_fails(run: &mut Run) -> Result<String, Fail> {
    let input = run.random_bytes(64 << 10);
    let twice = Flags {
        twice: true,
        ..Flags::default()
    };
    let mut session = start(run, input, twice)?;
    let child = session.child;
    settle_in_read(child);
    let pipes = session.pipes()?;
    // The child's own write end of pipe B, made non-blocking: once pipe B is full (the parent
    // reads nothing before `go`), the child's next write() fails with EAGAIN.
    let shared = outside::share_descriptor(child, pipes.child_writes_b)?;
    outside::set_nonblocking(&shared)?;
    drop(shared);
    let child_io = inspect::io(child).unwrap_or_default();
    // The grader's own read end of pipe B, never read from: it shows what the child wrote there,
    // even once the child is gone.
    let probe_b = outside::open_pipe(child, pipes.child_writes_b, false)?;
    let mut feed = outside::open_pipe(child, pipes.child_reads_a, true)?;
    let capacity = outside::pipe_capacity(&feed).unwrap_or(64 << 10) as u64;
    let bytes = run.random_bytes(16 << 10);
    // Pipes A and B and one read of the child's: a correct child fails well before 1 MiB.
    let mut fed = 0;
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until && fed < 1 << 20 && outside::zombie_status(child).is_none() {
        match feed.write(&bytes) {
            Ok(n) => fed += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(_) => break,
        }
    }
    drop(feed);
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until && outside::zombie_status(child).is_none() {
        std::thread::sleep(Duration::from_millis(2));
    }
    // A panic in the child comes as a message.
    let _ = session.message_within(Duration::from_millis(5))?;
    let in_b = outside::bytes_in_pipe(&probe_b).unwrap_or(0);
    let room = outside::pipe_capacity(&probe_b).unwrap_or(0) as usize;
    drop(probe_b);
    let copied = inspect::io(child).unwrap_or_default().since(child_io);
    let failed = "the grader made the echo child's write to pipe B fail (it set O_NONBLOCK on \
                  the child's write end and let pipe B fill up: write() failed with EAGAIN)";
    // Its write fails only once pipe B is full.
    let filled = in_b >= room;
    match outside::zombie_status(child) {
        Some(status) if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 1 => {}
        Some(status) if !filled => {
            return Err(Fail::failed(format!(
                "the echo child {} after reading {} bytes, before end-of-file (the grader held \
                 pipe A open) and before its write could fail (pipe B holds {in_b} of {room} \
                 bytes): echo_loop() must read until read() returns 0",
                describe_status(status),
                copied.read_bytes
            )));
        }
        Some(status) => {
            return Err(Fail::failed(format!(
                "{failed}, and the child {}: when echo_loop() returns an error the child must \
                 _exit(1)",
                describe_status(status)
            )));
        }
        // Nobody reads pipe B before `go`: what the child read and is not there, it kept.
        None if !filled && copied.read_bytes > in_b as u64 + capacity => {
            return Err(Fail::failed(format!(
                "the echo child read {} bytes from pipe A, yet pipe B holds only {in_b} (it \
                 holds {room}): the child must write what each read() returned to pipe B \
                 before it reads again",
                copied.read_bytes
            )));
        }
        // Gone without a zombie, before the parent called wait(): the kernel reaped it.
        None if inspect::view(child).is_none() => {
            return Err(Fail::failed(format!(
                "{failed}; the echo child then ended, and left no zombie although the parent \
                 had not called wait() yet: {}; its exit status is lost, so wait() cannot tell \
                 a failed child from a clean exit: leave SIGCHLD as it is, and reap the child \
                 with waitpid() in wait()",
                reaped_by_kernel(session.parent)
            )));
        }
        None => {
            return Err(Fail::failed(format!(
                "{failed}, and the child did not end (it is {}): write_all() must return every \
                 error but EINTR, echo_loop() must return it, and the child must then _exit(1)",
                doing(child)
            )));
        }
    }
    let done = session.exchange()?;
    if done.exchange.starts_with("ok") {
        return Err(Fail::failed(format!(
            "the echo child had failed and exited before the transfer, yet exchange() returned \
             `{}`: check the result of every write() and read()",
            done.exchange
        )));
    }
    match Returned::parse(&done.wait) {
        Returned::ChildFailed => {}
        Returned::Ok(_) => {
            return Err(Fail::failed(
                "the echo child exited with status 1, yet wait() reported a clean exit: only \
                 Exited(_, 0) is success; any other status is ChildFailed",
            ));
        }
        _ => {
            return Err(Fail::failed(format!(
                "wait() returned `{}` for a child that exited with status 1: reap it with \
                 waitpid() and return ChildFailed for any end but Exited(_, 0)",
                done.wait
            )));
        }
    }
    refused_again(&done)?;
    session.finish()?;
    let broken = child_write_broken(run)?;
    Ok(format!(
        "when its write failed the child exited with status 1, and wait() said ChildFailed; \
         {broken}"
    ))
}

/// The child's write to pipe B made to fail with `EPIPE` (the grader skips the call, as the
/// kernel fails it once no read end is open): an error like any other, so status 1 and
/// `ChildFailed`. Run after the `EAGAIN` round, which showed that `wait()` reports status 1.
fn child_write_broken(run: &mut Run) -> Result<String, Fail> {
    let input = run.random_bytes(64 << 10);
    let twice = Flags {
        twice: true,
        ..Flags::default()
    };
    let mut session = start(run, input, twice)?;
    let child = session.child;
    settle_in_read(child);
    let pipes = session.pipes()?;
    let write_b = Call {
        number: libc::SYS_write,
        matching: Match::Bits {
            arg: 0,
            mask: u64::MAX,
            value: pipes.child_writes_b as u64,
        },
    };
    let Some(mut tracer) = Tracer::attach(child, write_b, Action::Fail(libc::EPIPE))? else {
        run.note(
            "the grader may not trace the echo child here (ptrace): a write failing with EPIPE \
             was not tried",
        );
        session.exchange()?;
        session.finish()?;
        return Ok("EPIPE not tried".into());
    };
    let done = session.exchange()?;
    if !tracer.failed_the_call()? {
        session.verify_echo(&done)?;
        return Err(Fail::failed(format!(
            "the echo child never called write() on its end of pipe B (fd {}): echo_loop() must \
             write the echo with write() (write_all())",
            pipes.child_writes_b
        )));
    }
    let failed = "the grader made the echo child's write to pipe B fail with EPIPE (as the \
                  kernel does once nobody holds pipe B's read end)";
    if done.exchange.starts_with("ok") {
        return Err(Fail::failed(format!(
            "{failed}, yet exchange() returned `{}`: the child went on after the failed \
             write (and wrote the bytes again); write_all() must return every error but EINTR, \
             echo_loop() must return it, and the child must then _exit(1)",
            done.exchange
        )));
    }
    match Returned::parse(&done.wait) {
        Returned::ChildFailed => {}
        Returned::Ok(_) => {
            return Err(Fail::failed(format!(
                "{failed}, and wait() reported a clean exit, where it had reported ChildFailed \
                 for a child that exited with status 1: the child exited with status 0; EPIPE \
                 is an error like any other: write_all() and echo_loop() must return it, and the \
                 child must then _exit(1)"
            )));
        }
        _ => {
            return Err(Fail::failed(format!(
                "{failed}, and wait() returned `{}`: the child must _exit(1), and wait() return \
                 ChildFailed for it",
                done.wait
            )));
        }
    }
    refused_again(&done)?;
    session.finish()?;
    Ok("when its write failed with EPIPE the child exited with status 1 too".into())
}

/// Why a child left no zombie, from the parent's signal dispositions in `/proc/PID/status`.
fn reaped_by_kernel(parent: i32) -> String {
    if super::session::ignores_sigchld(parent) {
        "the parent ignores SIGCHLD (SIG_IGN), and the kernel then reaps its children itself".into()
    } else {
        "the kernel reaps a child itself when its parent ignores SIGCHLD or sets SA_NOCLDWAIT, \
         and another waitpid() in the parent would have reaped it too"
            .into()
    }
}
