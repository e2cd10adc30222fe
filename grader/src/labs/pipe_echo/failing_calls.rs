//! The parent's own calls on its pipes made to fail by the grader's tracer (`EIO`, an errno no
//! pipe gives by itself): the `write()` to pipe A and the `read()` of pipe B, each with its
//! error returned as such, and no thread of `exchange()` left holding a pipe end behind it.

use std::io::Write;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::child_stopped::PAGE;
use super::outside;
use super::returned::Returned;
use super::session::{Done, Flags, Pipes, Session, pipes_of, settle_in_read, start};
use crate::engine::diagnose::{Activity, classify};
use crate::engine::inspect;
use crate::engine::tracer::{Action, Call, Tracer};
use crate::engine::{Fail, Run, force};

/// A call of the parent on a pipe made to fail by [`fail_blocked_call`], and the exchange's end.
struct FailedCall {
    session: Session,
    fd: i32,
    tid: i32,
    done: Done,
    /// The pipe ends the parent held while it was already in `waitpid()`, the child still
    /// stopped after the failed call, with the threads reading them.
    waited_holding: Option<String>,
    /// What the parent's threads were doing once settled after the failed call, the child
    /// still stopped.
    settled: String,
}

impl FailedCall {
    /// The verdict on a parent seen in `waitpid()` while it still held a pipe end, if it was.
    fn waited_holding_verdict(&self, setting: &str) -> Option<String> {
        let held = self.waited_holding.as_ref()?;
        Some(format!(
            "{setting}, then kept the child stopped: exchange() returned `{}`, and the parent \
             was blocked in waitpid() inside wait() while it still held {held}",
            self.done.exchange
        ))
    }

    /// Ends the session, then gives the verdict: its message as the failure, or `passed`.
    fn conclude(self, verdict: Option<String>, passed: &str) -> Result<String, Fail> {
        self.session.finish()?;
        match verdict {
            Some(message) => Err(Fail::failed(message)),
            None => Ok(passed.into()),
        }
    }
}

/// Starts an echo of `input` with the child stopped and pipe A shrunk to one page (an input
/// longer than that leaves the writing unfinished), waits (3 s) for a thread of the parent
/// blocked in the call `number` on the descriptor `end` picks, and has the tracer fail it with
/// `errno`: the write and read probes share it. A parent that waits in `poll()` instead is given
/// one byte on pipe B, or a page of room in pipe A, by the grader, and the `read()` or `write()`
/// that follows fails. The inner `Err` is a probe not tried, said.
fn fail_blocked_call(
    run: &mut Run,
    input: Vec<u8>,
    flags: Flags,
    (number, errno): (libc::c_long, i32),
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
    let mut session = start(run, input, flags)?;
    let (parent, child) = (session.parent, session.child);
    settle_in_read(child);
    let pipes = session.pipes()?;
    force::set_pipe_capacity(child, pipes.child_reads_a, PAGE)?;
    outside::hold_stopped(child)?;
    session.go()?;
    let fd = end(&pipes);
    let until = Instant::now() + Duration::from_secs(3);
    let mut polling = false;
    let blocked_thread = loop {
        let blocked = inspect::view(parent).and_then(|v| {
            let in_call = v
                .threads
                .iter()
                .find(|t| t.syscall == Some((number, fd as u64)));
            let in_poll = || {
                v.threads
                    .iter()
                    .find(|t| matches!(classify(&v, t.syscall), Activity::Poll))
            };
            match in_call {
                Some(t) => Some((t.tid, false)),
                None => in_poll().map(|t| (t.tid, true)),
            }
        });
        if let Some((tid, in_poll)) = blocked {
            polling = in_poll;
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
    // Attached, the tracer interrupts the blocked call, which it fails as it starts again: the
    // child may stay stopped meanwhile.
    let Some(mut tracer) = Tracer::attach_thread(parent, tid, call, Action::Fail(errno))? else {
        let _ = cont();
        run.note(format!(
            "the grader may not trace the parent here (ptrace): a failing {name}() not tried"
        ));
        session.recv_done()?;
        session.finish()?;
        return Ok(Err(not_tried.into()));
    };
    if polling && number == libc::SYS_read {
        // Something to read on pipe B wakes the poll() and calls the read() that fails.
        outside::open_pipe(child, pipes.child_writes_b, true)?
            .write_all(b"!")
            .map_err(|e| Fail::Grader(format!("writing into pipe B: {e}")))?;
    } else if polling {
        // Room in pipe A wakes the poll() and calls the write() that fails.
        outside::take_bytes(
            &mut outside::open_pipe(child, pipes.child_reads_a, false)?,
            PAGE as usize,
        )?;
    }
    let failed = tracer.failed_before(Instant::now() + Duration::from_secs(3))?;
    drop(tracer);
    let waited_holding = failed
        .then(|| waits_holding_pipes(&session, &pipes))
        .flatten();
    let settled = super::child_exit::doing(parent);
    let _ = cont();
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
        waited_holding,
        settled,
    }))
}

/// Once the parent has settled after its failed call (the child stopped, pipe B still open),
/// whether it is in `waitpid()` already (`exchange()` returned early, which it may) while it
/// holds a pipe end: the ends, what its threads do, and why it is wrong; or `None`. A parent
/// still in `exchange()` settles reading pipe B, and is not judged.
fn waits_holding_pipes(session: &Session, pipes: &Pipes) -> Option<String> {
    let parent = session.parent;
    let until = Instant::now() + Duration::from_secs(1);
    let mut last = None;
    let mut steady_since = Instant::now();
    while Instant::now() < until {
        let view = inspect::view(parent)?;
        let calls: Vec<_> = view
            .threads
            .iter()
            .map(|t| (t.tid, t.state, t.syscall))
            .collect();
        let waiting = view
            .threads
            .iter()
            .any(|t| t.state == 'S' && t.syscall.is_some_and(|(n, _)| n == libc::SYS_wait4));
        if waiting {
            let held = pipes_of(&session.proc, parent);
            if held.is_empty() {
                return None;
            }
            let ends: Vec<String> = held
                .iter()
                .map(|(inode, (r, w))| {
                    let name = match *inode {
                        inode if inode == pipes.a => "pipe A",
                        inode if inode == pipes.b => "pipe B",
                        _ => "a pipe",
                    };
                    format!("{name} (pipe:[{inode}], read fds {r:?}, write fds {w:?})")
                })
                .collect();
            let threads: Vec<String> = view
                .threads
                .iter()
                .map(|t| format!("thread {} {}", t.tid, classify(&view, t.syscall).describe()))
                .collect();
            let left_running = view
                .threads
                .iter()
                .find_map(|t| match classify(&view, t.syscall) {
                    Activity::PipeRead { inode, .. } if inode == pipes.b => Some("reading pipe B"),
                    Activity::PipeWrite { inode, .. } if inode == pipes.a => Some("writing pipe A"),
                    _ => None,
                });
            let advice = if let Some(doing) = left_running {
                format!(
                    "a thread still {doing} once exchange() has returned is one exchange() left \
                     running, with a pipe end of its own: join every thread exchange() starts, \
                     on its error paths too, before it returns"
                )
            } else {
                "wait() closes both pipe ends before it blocks in waitpid()".into()
            };
            return Some(format!(
                "{} ({}): {advice}",
                ends.join(", "),
                threads.join("; ")
            ));
        }
        if last.as_ref() != Some(&calls) {
            last = Some(calls);
            steady_since = Instant::now();
        } else if steady_since.elapsed() > Duration::from_millis(50) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

/// The parent's `write()` to pipe A made to fail with `EIO` (skipped by the grader's tracer on
/// the thread blocked writing pipe A, the child stopped so that pipe A is full; an errno no pipe
/// gives by itself, with the child alive and reading): `exchange()` must return `Write(EIO)`,
/// the error `write()` returned, not `EPIPE` or another guess.
pub(super) fn parent_write_fails(run: &mut Run) -> Result<String, Fail> {
    let input = run.random_bytes(1 << 20);
    let failed = match fail_blocked_call(
        run,
        input,
        Flags::default(),
        (libc::SYS_write, libc::EIO),
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
    if let Some(verdict) = failed.waited_holding_verdict(&setting) {
        return failed.conclude(Some(verdict), "");
    }
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

/// The parent's `read()` of pipe B made to fail with `errno` (skipped by the grader's tracer on
/// the thread blocked reading pipe B, the child stopped): `EIO`, an errno no pipe gives by
/// itself, and `EAGAIN`, what a read end someone made non-blocking gives. Only `EINTR` is
/// retried and only a `read()` that returns 0 is end-of-file, so `exchange()` must return
/// `Read(errno)`, not the bytes it had as a whole echo (`Ok`, `ShortEcho`), nor the echo read
/// again after a wait (`poll()` after `EAGAIN`), nor another kind. The input is more than
/// the one-page pipe A holds, so the writing is unfinished when the read fails: the write end
/// is still closed by the time `exchange()` returns (a parent in `waitpid()` holds no pipe end,
/// a second call is `AlreadyExchanged`), and its echo fits pipe B, unread, once the child goes on.
pub(super) fn parent_read_fails(run: &mut Run, errno: i32) -> Result<String, Fail> {
    let name = if errno == libc::EAGAIN {
        "EAGAIN"
    } else {
        "EIO"
    };
    let input = run.random_bytes(16 << 10);
    let twice = Flags {
        twice: true,
        ..Flags::default()
    };
    let failed = match fail_blocked_call(
        run,
        input,
        twice,
        (libc::SYS_read, errno),
        |pipes| pipes.parent_reads_b,
        "a read() of pipe B failing not tried",
        "a read() of pipe B failing not tried",
    )? {
        Ok(failed) => failed,
        Err(not_tried) => return Ok(not_tried),
    };
    let (fd, tid, done) = (failed.fd, failed.tid, &failed.done);
    let setting = format!(
        "the grader made the parent's read() of pipe B (fd {fd}, thread {tid}) fail with {name} \
         (the call skipped by its tracer) while the echo child was alive and echoing, and \
         pipe A, shrunk to one page, held the rest of the 16 KiB input back"
    );
    if let Some(verdict) = failed.waited_holding_verdict(&setting) {
        return failed.conclude(Some(verdict), "");
    }
    let again = done.again.as_deref().unwrap_or("?");
    let verdict = match Returned::parse(&done.exchange) {
        Returned::Read(errno)
            if errno == name && Returned::parse(again) != Returned::AlreadyExchanged =>
        {
            Some(format!(
                "{setting}: exchange() returned Read({name}), and a second call returned `{again}`: \
                 the first call kept the write end of pipe A open on its read-error path; \
                 exchange() takes the write end and closes it whatever it returns, so a second \
                 call is AlreadyExchanged"
            ))
        }
        Returned::Read(errno) if errno == name => None,
        Returned::Read(errno) => Some(format!(
            "{setting}, and exchange() returned Read({errno}): return PipeEchoError::Read with \
             the errno read() returned, not a fixed or guessed one"
        )),
        Returned::Ok(_) | Returned::ShortEcho { .. } if errno == libc::EAGAIN => Some(format!(
            "{setting}, and exchange() returned `{}`: it went on reading pipe B after the \
             EAGAIN (once settled after it, with the child still stopped, the parent was {}), \
             and returned the echo that came once the child went on: a read() failing with \
             EAGAIN (its read end made non-blocking by someone) is no cue to wait (poll()) and \
             read again; only EINTR is retried: return PipeEchoError::Read(EAGAIN)",
            done.exchange, failed.settled
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
        &format!("a read() of pipe B failing with {name} gave Read({name})"),
    )
}
