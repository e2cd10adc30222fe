//! The child's failure: its write to pipe B made to fail (`EAGAIN` on a full non-blocking pipe,
//! then `EPIPE` with the `SIGPIPE` the kernel raises with it): `echo_loop()` returns the error,
//! the child exits with status 1, `wait()` says `ChildFailed` and a second `exchange()`
//! `AlreadyExchanged`.

use std::io::Write;
use std::time::{Duration, Instant};

use super::child_exit::doing;
use super::error_kinds;
use super::outside::{self, describe_status};
use super::returned::{Returned, refused_again};
use super::session::started_twice_in_read;
use super::session::{Pipes, pipes_of};
use crate::engine::diagnose::{Activity, classify};
use crate::engine::inspect::{self, SignalMask};
use crate::engine::tracer::{Action, Call, Step, Tracer};
use crate::engine::{Fail, Proc, Run, force};

pub fn child_fails(run: &mut Run) -> Result<String, Fail> {
    let input = run.random_bytes(64 << 10);
    let (mut session, pipes) = started_twice_in_read(run, input)?;
    let child = session.child;
    // The child's own write end of pipe B, made non-blocking: once pipe B is full (the parent
    // reads nothing before `go`), the child's next write() fails with EAGAIN.
    let shared = force::share_descriptor(child, pipes.child_writes_b)?;
    force::set_nonblocking(&shared)?;
    drop(shared);
    let child_io = inspect::io(child).unwrap_or_default();
    // The grader's own read end of pipe B, never read from: it shows what the child wrote there,
    // even once the child is gone.
    let probe_b = outside::open_pipe(child, pipes.child_writes_b, false)?;
    let mut feed = outside::open_pipe(child, pipes.child_reads_a, true)?;
    let capacity = outside::pipe_capacity(&feed).unwrap_or(64 << 10) as u64;
    let bytes = run.random_bytes(16 << 10);
    // Pipes A and B and one read of the child's: a correct child fails well before that, pipe
    // B enlarged by the child (to pipe-max-size, say) or not.
    let mut fed = 0;
    let until = Instant::now() + Duration::from_secs(3);
    let enough = || capacity as usize + outside::pipe_capacity(&probe_b).unwrap_or(0) as usize;
    while Instant::now() < until
        && fed < enough() + (1 << 20)
        && outside::zombie_status(child).is_none()
    {
        match feed.write(&bytes) {
            Ok(n) => fed += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(_) => break,
        }
    }
    drop(feed);
    outside::zombie_status_within(child, Duration::from_millis(500));
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
            let doing = doing(child);
            // Asleep in poll() with pipe B full: it waits for room instead of failing.
            let waits_for_room = if doing.contains("poll") {
                ", waiting for room in pipe B after EAGAIN, which nobody will make: on a \
                 non-blocking descriptor EAGAIN is the error to return, not a wait"
            } else {
                ""
            };
            // Several threads: the write failed on one while another reads on.
            let threads = inspect::view(child).map_or(0, |view| view.threads.len());
            let split = if threads > 1 {
                format!(
                    "; the echo child runs {threads} threads, one reading pipe A while another \
                     writes pipe B: it moved them another way than read-then-write, so a failed \
                     write does not stop the reads (echo_loop() writes what each read() returned \
                     before it reads again, on one thread)"
                )
            } else {
                String::new()
            };
            return Err(Fail::failed(format!(
                "{failed}, and the child did not end (it is {doing}{waits_for_room}){split}: \
                 write_all() must return every error but EINTR, echo_loop() must return it, and \
                 the child must then _exit(1)"
            )));
        }
    }
    error_kinds::write_error_reported_as_write(&session, "EAGAIN", failed)?;
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
    let read_failed = child_read_fails(run)?;
    let would_block = child_read_would_block(run)?;
    Ok(format!(
        "when its write failed the child exited with status 1, and wait() said ChildFailed; \
         {broken}; {read_failed}; {would_block}"
    ))
}

/// The child's `read()` of pipe A made to fail with `EIO` (the call skipped by the grader's
/// tracer: an error no pipe gives by itself), then the child held at its `exit_group()`: only a
/// `read()` that returns 0 is end-of-file, so `echo_loop()` must return `Read(EIO)` and the
/// child `_exit(1)`; and `echo_loop()` closes both of its descriptors on that error path too.
fn child_read_fails(run: &mut Run) -> Result<String, Fail> {
    let input = run.random_bytes(16 << 10);
    let (mut session, pipes) = started_twice_in_read(run, input)?;
    let child = session.child;
    let read_a = Call::arg_is(libc::SYS_read, 0, pipes.child_reads_a as u64);
    let exit = Call::any(libc::SYS_exit_group);
    let steps = [(read_a, Step::Fail(libc::EIO)), (exit, Step::Hold)];
    // Opened before the tracer comes: the read it fails may be the one the child waits in.
    let mut feed = outside::open_pipe(child, pipes.child_reads_a, true)?;
    let Some(mut tracer) = Tracer::in_turn(child, steps)? else {
        run.note(
            "the grader may not trace the echo child here (ptrace): a read failing with EIO was \
             not tried",
        );
        session.exchange()?;
        session.finish()?;
        return Ok("a read() failing not tried".into());
    };
    // A few bytes into pipe A: the child's blocked read() returns, and its next one is failed,
    // whether or not the tracer saw the read it was blocked in restarted.
    let _ = feed.write(b"echo me");
    drop(feed);
    let until = Instant::now() + Duration::from_secs(3);
    if !tracer.failed_before(until)? {
        let doing = doing(child);
        drop(tracer);
        session.exchange()?;
        session.finish()?;
        return Err(Fail::failed(format!(
            "the grader fed bytes into pipe A and traced the echo child, which made no read() \
             of its end of pipe A (fd {}) (it is {doing}): echo_loop() must read its input with \
             read()",
            pipes.child_reads_a
        )));
    }
    let setting = format!(
        "the grader made the echo child's read() of pipe A (fd {}) fail with EIO (the call \
         skipped by its tracer)",
        pipes.child_reads_a
    );
    let held = tracer.held_before(Instant::now() + Duration::from_secs(3))?;
    let (status, kept) = if held {
        let status = inspect::view(child)
            .and_then(|v| v.threads.first().and_then(|t| t.syscall))
            .filter(|(nr, _)| *nr == libc::SYS_exit_group)
            .map(|(_, arg)| arg as i32);
        let kept = ends_kept(&session.proc, child, &pipes);
        tracer.release();
        (status.map(|s| s << 8), kept)
    } else {
        drop(tracer);
        (
            outside::zombie_status_within(child, Duration::from_millis(500)),
            Vec::new(),
        )
    };
    let _ = session.message_within(Duration::from_millis(2))?;
    let verdict = match status {
        Some(s) if libc::WIFEXITED(s) && libc::WEXITSTATUS(s) == 1 => None,
        Some(s) if libc::WIFEXITED(s) && libc::WEXITSTATUS(s) == 0 => Some(format!(
            "{setting}, and the child exited with status 0: it took the read error for \
             end-of-file; only a read() that returns 0 is end-of-file, any other error but EINTR \
             must make echo_loop() return PipeEchoError::Read(errno), and the child _exit(1)"
        )),
        Some(s) => Some(format!(
            "{setting}, and the child {}: when echo_loop() returns an error the child must \
             _exit(1)",
            describe_status(s)
        )),
        None if inspect::view(child).is_some() => Some(format!(
            "{setting}, and the child did not end (it is {}): echo_loop() must return the \
             error (only EINTR is retried), and the child then _exit(1)",
            doing(child)
        )),
        None => None,
    };
    if let Some(message) = verdict {
        session.exchange()?;
        session.finish()?;
        return Err(Fail::failed(message));
    }
    if !kept.is_empty() {
        session.exchange()?;
        session.finish()?;
        return Err(Fail::failed(format!(
            "{setting}; the child then called _exit(1) still holding {}: echo_loop() must close \
             both of its descriptors when it returns, on its error paths too (drop the OwnedFds; \
             a raw descriptor closed only after the loop leaks on every early return)",
            kept.join(" and ")
        )));
    }
    let done = session.exchange()?;
    if !matches!(Returned::parse(&done.wait), Returned::ChildFailed) {
        session.finish()?;
        return Err(Fail::failed(format!(
            "{setting}, the child exited with status 1, and wait() returned `{}`: wait() must \
             return ChildFailed for it",
            done.wait
        )));
    }
    // What the child said of its error, if it said anything (the parent's writes fail with
    // EPIPE, never EIO): a Write error of the read's errno is the read reported as a write.
    let stderr = session.proc.stderr.lock().expect("capture lock").text();
    session.finish()?;
    if let Some(line) = stderr
        .lines()
        .find(|l| l.contains("writing to a pipe failed: EIO"))
    {
        return Err(Fail::failed(format!(
            "{setting}, and the child reported `{}` on stderr before it exited with status 1: \
             echo_loop() returned PipeEchoError::Write for the failed read(); a read() of pipe \
             A that fails is PipeEchoError::Read(errno), Write is for the writes to pipe B",
            line.trim()
        )));
    }
    Ok("when its read failed with EIO the child exited with status 1, its pipes closed".into())
}

/// The child's `read()` of pipe A failing with `EAGAIN`: the grader sets `O_NONBLOCK` on the
/// child's read end (the file description it shares) while the child waits for input, then
/// feeds a few bytes; once the child has read them, pipe A is empty, the parent still holds its
/// write end (it waits for `go`), and the next `read()` fails with `EAGAIN`. That is no
/// end-of-file (only a `read()` that returns 0 is): `echo_loop()` must return `Read(EAGAIN)` and
/// the child `_exit(1)`. A child that waits for input in `poll()` makes no such `read()`: back in
/// `poll()` with pipe A empty, it waits as it should; the grader then feeds one byte more and its
/// tracer makes the `read()` that follows fail with `EAGAIN`.
fn child_read_would_block(run: &mut Run) -> Result<String, Fail> {
    let input = run.random_bytes(16 << 10);
    let (mut session, pipes) = started_twice_in_read(run, input)?;
    let child = session.child;
    let shared = force::share_descriptor(child, pipes.child_reads_a)?;
    force::set_nonblocking(&shared)?;
    drop(shared);
    let mut feed = outside::open_pipe(child, pipes.child_reads_a, true)?;
    let _ = feed.write(b"echo me");
    let polls = ended_or_polling(child, &feed, Instant::now() + Duration::from_secs(2));
    let mut made_to_fail = false;
    if polls {
        let read_a = Call::one_of_on(&[libc::SYS_read, libc::SYS_readv], pipes.child_reads_a);
        if let Some(mut tracer) = Tracer::attach(child, read_a, Action::Fail(libc::EAGAIN))? {
            let _ = feed.write(b"!");
            made_to_fail = tracer.failed_before(Instant::now() + Duration::from_secs(2))?;
            drop(tracer);
            ended_or_polling(child, &feed, Instant::now() + Duration::from_secs(1));
        }
    }
    drop(feed);
    let _ = session.message_within(Duration::from_millis(2))?;
    let fd = pipes.child_reads_a;
    let setting = match (polls, made_to_fail) {
        (false, _) => format!(
            "the grader set O_NONBLOCK on the echo child's read end of pipe A (fd {fd}) and fed \
             it 7 bytes while the parent still held the write end: once those were read, the \
             child's next read() failed with EAGAIN (pipe A empty, not closed)"
        ),
        (true, true) => format!(
            "the echo child waits for input in poll(): the grader set O_NONBLOCK on its read end \
             of pipe A (fd {fd}) and fed it 7 bytes while the parent still held the write end; \
             with the child back in poll() and pipe A empty, it fed one byte more and its tracer \
             made the child's next read() of pipe A fail with EAGAIN (as a non-blocking read of \
             an empty pipe does)"
        ),
        (true, false) => {
            session.exchange()?;
            session.finish()?;
            return Err(Fail::failed(format!(
                "the echo child waits for input in poll(): the grader set O_NONBLOCK on its read \
                 end of pipe A (fd {fd}), fed it 7 bytes, then one byte more once it was back in \
                 poll() with pipe A empty, and the child made no read() of pipe A within 2 s \
                 (it is {}): once poll() says pipe A is readable, read it",
                doing(child)
            )));
        }
    };
    let verdict = match outside::zombie_status(child) {
        Some(s) if libc::WIFEXITED(s) && libc::WEXITSTATUS(s) == 1 => None,
        Some(s) if libc::WIFEXITED(s) && libc::WEXITSTATUS(s) == 0 => Some(format!(
            "{setting}, and the child exited with status 0: it took EAGAIN (\"no data now\") for \
             end-of-file; only a read() that returns 0 is end-of-file, and every error but EINTR \
             must make echo_loop() return PipeEchoError::Read(errno), the child then _exit(1)"
        )),
        Some(s) => Some(format!(
            "{setting}, and the child {}: when echo_loop() returns an error the child must \
             _exit(1)",
            describe_status(s)
        )),
        None if inspect::view(child).is_some() => Some(format!(
            "{setting}, and the child did not end (it is {}): echo_loop() must return the error \
             (only EINTR is retried, EAGAIN is not waited out), and the child then _exit(1)",
            doing(child)
        )),
        None => None,
    };
    session.exchange()?;
    session.finish()?;
    match verdict {
        Some(message) => Err(Fail::failed(message)),
        None => {
            Ok("a read() of pipe A failing with EAGAIN made the child exit with status 1".into())
        }
    }
}

/// Waits until `child` has ended, or until every thread of it sits in `poll()`/`select()` with
/// pipe A (`feed`, the grader's write end) empty: whether it was seen polling.
fn ended_or_polling(child: i32, feed: &std::fs::File, until: Instant) -> bool {
    while Instant::now() < until && outside::zombie_status(child).is_none() {
        let polling = inspect::view(child).is_some_and(|view| {
            view.threads
                .iter()
                .all(|t| t.state != 'R' && classify(&view, t.syscall) == Activity::Poll)
        });
        if polling && outside::bytes_in_pipe(feed) == Some(0) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

/// The child's write to pipe B made to fail with `EPIPE`, and `SIGPIPE` raised in it, as the
/// kernel does once no read end is open (the grader skips the call): an error like any other,
/// so status 1 and `ChildFailed`. The grader feeds pipe A itself before `go`, so that the parent,
/// waiting for `go`, leaves the child's end to be read from its zombie: an exit with status 1,
/// not a death by `SIGPIPE` (the child inherits it ignored). Run after the `EAGAIN` round, which
/// showed that the child writes what it reads. The child's first echo goes through before the
/// failing write: a reader that leaves mid-stream is no cleaner an end than one that never read.
fn child_write_broken(run: &mut Run) -> Result<String, Fail> {
    let input = run.random_bytes(64 << 10);
    let (mut session, pipes) = started_twice_in_read(run, input)?;
    let child = session.child;
    // Its dispositions as it waits for input, after whatever it set up once forked.
    let ignored_sigpipe = inspect::has_signal(child, child, SignalMask::Ignored, libc::SIGPIPE);
    let write_b = Call::arg_is(libc::SYS_write, 0, pipes.child_writes_b as u64);
    // The failing write, then the child held at its exit_group(): what it still holds then.
    let raising = Step::FailRaising(libc::EPIPE, libc::SIGPIPE);
    let exit = Call::any(libc::SYS_exit_group);
    // The grader's own read end of pipe B, never read from: what the child passed on there.
    let probe_b = outside::open_pipe(child, pipes.child_writes_b, false)?;
    let mut feed = outside::open_pipe(child, pipes.child_reads_a, true)?;
    let bytes = run.random_bytes(4 << 10);
    // A first block echoed before any write fails.
    let mut fed = feed.write(&bytes).unwrap_or(0);
    let until = Instant::now() + Duration::from_secs(2);
    while outside::bytes_in_pipe(&probe_b).unwrap_or(0) == 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
    }
    let echoed_first = outside::bytes_in_pipe(&probe_b).unwrap_or(0);
    let Some(mut tracer) = Tracer::in_turn(child, [(write_b, raising), (exit, Step::Hold)])? else {
        run.note(
            "the grader may not trace the echo child here (ptrace): a write failing with EPIPE \
             was not tried",
        );
        drop((feed, probe_b));
        session.exchange()?;
        session.finish()?;
        return Ok("EPIPE not tried".into());
    };
    let until = Instant::now() + Duration::from_secs(3);
    let failed = loop {
        if tracer.failed_before(Instant::now() + Duration::from_millis(2))? {
            break true;
        }
        // Bytes in pipe B with no write() to it: they went another way.
        if outside::bytes_in_pipe(&probe_b).is_some_and(|n| n > echoed_first)
            || Instant::now() > until
        {
            break false;
        }
        if fed < 1 << 20 {
            match feed.write(&bytes) {
                Ok(n) => fed += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => {}
            }
        }
    };
    drop(feed);
    let passed_on = outside::bytes_in_pipe(&probe_b)
        .unwrap_or(0)
        .saturating_sub(echoed_first);
    drop(probe_b);
    if !failed {
        let how = moved_by(child);
        drop(tracer);
        if passed_on > 0 {
            return Err(Fail::failed(format!(
                "the echo child did not call write() on its end of pipe B (fd {}) while the \
                 grader watched, yet {passed_on} more of the {fed} bytes the grader fed into pipe \
                 A came out in pipe B: it moved them another way{how}; echo_loop() must read() into a buffer and write the echo with \
                 write() (write_all())",
                pipes.child_writes_b
            )));
        }
        // Nothing passed on, nothing written: how it keeps what it reads is another check's.
        let done = session.exchange()?;
        session.verify_echo(&done)?;
        return Err(Fail::failed(format!(
            "the echo child did not call write() on its end of pipe B (fd {}) while the grader \
             watched and fed {fed} bytes into pipe A{how}: echo_loop() must write what each read() returned \
             with write() (write_all()) before it reads again",
            pipes.child_writes_b
        )));
    }
    // Held at its exit_group() (a child killed by SIGPIPE makes none): its pipe ends then.
    let kept = if tracer.held_before(Instant::now() + Duration::from_secs(2))? {
        let kept = ends_kept(&session.proc, child, &pipes);
        tracer.release();
        kept
    } else {
        drop(tracer);
        Vec::new()
    };
    let failed = format!(
        "the grader let the echo child's first echo through ({echoed_first} bytes in pipe B), \
         then made its next write to pipe B fail with EPIPE and raised SIGPIPE in it, as the \
         kernel does once nobody holds pipe B's read end"
    );
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until && outside::zombie_status(child).is_none() {
        if inspect::view(child).is_none() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    // A panic in the child comes as a message.
    let _ = session.message_within(Duration::from_millis(2))?;
    match outside::zombie_status(child) {
        Some(status) if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 1 => {
            if !kept.is_empty() {
                session.exchange()?;
                session.finish()?;
                return Err(Fail::failed(format!(
                    "{failed}; the child then called _exit(1) still holding {}: echo_loop() must \
                     close both of its descriptors when it returns, on the write-error path too \
                     (drop the OwnedFds; raw descriptors must be closed on every return path, the \
                     early return of write_all()'s `?` included)",
                    kept.join(" and ")
                )));
            }
        }
        Some(status) if libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGPIPE => {
            let disposition = if ignored_sigpipe {
                " (it still ignored SIGPIPE while it waited for input: it changed that later, or \
                 raised the signal itself)"
            } else {
                " (it had set SIGPIPE back to its default action: while it waited for input, its \
                 SigIgn in /proc/PID/status lacked SIGPIPE)"
            };
            return Err(Fail::failed(format!(
                "{failed}, and the child was killed by SIGPIPE{disposition}: the child inherits \
                 SIGPIPE ignored (Rust ignores it before main runs) and must keep it so; then a \
                 write() to a pipe nobody reads fails with EPIPE, echo_loop() returns that error \
                 and the child _exit(1)s, as spawn() promises"
            )));
        }
        Some(status) if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 => {
            return Err(Fail::failed(format!(
                "{failed}, and the child exited with status 0; EPIPE is an error like any other, \
                 however much of the echo went through before it (a reader gone mid-stream did \
                 not get the rest): write_all() and echo_loop() must return it, and the child \
                 must then _exit(1)"
            )));
        }
        Some(status) => {
            return Err(Fail::failed(format!(
                "{failed}, and the child {}: when echo_loop() returns an error the child must \
                 _exit(1)",
                describe_status(status)
            )));
        }
        None if inspect::view(child).is_none() => {
            return Err(Fail::failed(format!(
                "{failed}; the echo child then ended, and left no zombie although the parent \
                 had not called wait() yet: {}",
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
    error_kinds::write_error_reported_as_write(&session, "EPIPE", &failed)?;
    let done = session.exchange()?;
    if done.exchange.starts_with("ok") {
        return Err(Fail::failed(format!(
            "the echo child had failed (EPIPE) and exited with status 1 before the transfer, yet \
             exchange() returned `{}`: check the result of every write() and read()",
            done.exchange
        )));
    }
    match Returned::parse(&done.wait) {
        Returned::ChildFailed => {}
        _ => {
            return Err(Fail::failed(format!(
                "{failed}, the child exited with status 1, and wait() returned `{}`: wait() \
                 must return ChildFailed for it",
                done.wait
            )));
        }
    }
    refused_again(&done)?;
    session.finish()?;
    Ok(
        "when its write failed with EPIPE (SIGPIPE raised) the child exited with status 1 too"
            .into(),
    )
}

/// How the echo child moved bytes into pipe B without a `write()`, from the call it sleeps in:
/// the kernel's own copies between descriptors.
fn moved_by(child: i32) -> String {
    let calls: Vec<&str> = inspect::view(child)
        .map(|view| {
            view.threads
                .iter()
                .filter_map(|t| match t.syscall?.0 {
                    libc::SYS_splice => Some("splice()"),
                    libc::SYS_tee => Some("tee()"),
                    libc::SYS_sendfile => Some("sendfile()"),
                    libc::SYS_copy_file_range => Some("copy_file_range()"),
                    libc::SYS_vmsplice => Some("vmsplice()"),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    match calls.first() {
        Some(call) => format!(
            " (it waits for input in {call}, which moves bytes between descriptors inside the \
             kernel)"
        ),
        None => format!(" (it is {})", doing(child)),
    }
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

/// The ends of the lab's pipes the child still holds, named: read while it is held at its
/// `exit_group()`, when `echo_loop()` should have closed both.
fn ends_kept(proc: &Proc, child: i32, pipes: &Pipes) -> Vec<String> {
    let own = [
        (pipes.a, "the read end of pipe A"),
        (pipes.b, "the write end of pipe B"),
    ];
    pipes_of(proc, child)
        .keys()
        .filter_map(|inode| {
            own.iter()
                .find(|(i, _)| i == inode)
                .map(|(_, name)| format!("{name} (pipe:[{inode}])"))
        })
        .collect()
}
