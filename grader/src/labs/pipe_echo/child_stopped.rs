//! Checks run with the echo child stopped by the grader: the parent reads pipe B while it writes
//! pipe A, and the echo is what came back through pipe B, copied by the child as it read it.

use std::io::Write;
use std::time::{Duration, Instant};

use nix::unistd::Pid;
use rand::RngExt;

use super::child_timers;
use super::outside;
use super::parent_would_block;
use super::returned::Returned;
use super::session::{
    Flags, Pipes, Session, first_difference, pipes_of, role_of, settle_in_read, start,
};
use super::written_by_child;
use crate::engine::diagnose::{Activity, classify};
use crate::engine::tracer::{Action, Call, Match, TIMERS, Tracer};
use crate::engine::waiting::{self, WaitRules};
use crate::engine::{Fail, Run, force, inspect};

/// One page: the smallest pipe the kernel makes, and what a user short of pipe memory gets.
pub(super) const PAGE: i32 = 4096;

const WAIT_ADVICE: &str = "wait in read() or write() on the pipes (a thread each), or in \
                           poll() on both, until there is something to do";

/// Waits until every thread of the parent sleeps in the same calls twice in a row: with the
/// child stopped, a parent that has filled pipe A has nothing left to do. Fails if the parent
/// did without the child: it reported, or it is already reaping.
fn parent_settles(session: &mut Session) -> Result<(), Fail> {
    parent_settles_held_small(session, &mut None, 0).map(|_| ())
}

/// As [`parent_settles`], and while it waits, a parent held by `growing` right after its
/// `F_SETPIPE_SZ` on descriptor `fd` gets that pipe set back to one page before it goes on: the
/// pipe it writes stays small whatever it asked for. Returns the capacity it had set. The
/// tracer goes once bytes are in the pipe: a pipe is enlarged before it is written, and a
/// traced thread, stopped at each of its calls, would not look as it waits.
fn parent_settles_held_small(
    session: &mut Session,
    growing: &mut Option<Tracer>,
    fd: i32,
) -> Result<Option<i32>, Fail> {
    let until = Instant::now() + Duration::from_secs(3);
    let mut last = None;
    let mut grown = None;
    let written_to = match growing {
        Some(_) => Some(outside::open_pipe(session.parent, fd, false)?),
        None => None,
    };
    loop {
        if growing.is_some()
            && written_to
                .as_ref()
                .and_then(outside::bytes_in_pipe)
                .is_some_and(|n| n > 0)
        {
            *growing = None;
        }
        if let Some(tracer) = growing.as_mut()
            && tracer.held_before(Instant::now())?
        {
            let pipe = outside::open_pipe(session.parent, fd, false)?;
            grown = outside::pipe_capacity(&pipe);
            drop(pipe);
            force::set_pipe_capacity(session.parent, fd, PAGE)?;
            if let Some(tracer) = growing.take() {
                tracer.release();
            }
        }
        if let Some(message) = session.message_within(Duration::from_millis(5))? {
            let _ = force::resume(session.child);
            let report = message
                .get("exchange")
                .map(|e| format!(" (exchange: {e})"))
                .unwrap_or_default();
            return Err(without_child(format!("said `{}`{report}", message.kind)));
        }
        let calls = inspect::view(session.parent)
            .filter(|v| v.threads.iter().all(|t| matches!(t.state, 'S' | 'D')))
            .map(|v| {
                v.threads
                    .iter()
                    .map(|t| (t.tid, t.syscall))
                    .collect::<Vec<_>>()
            });
        if calls.is_some() && calls == last || Instant::now() > until {
            break;
        }
        last = calls;
    }
    if threads_in(session.parent, |a| *a == Activity::WaitChild) {
        let _ = force::resume(session.child);
        return Err(without_child(
            "returned from exchange() and waits in waitpid()".to_string(),
        ));
    }
    Ok(grown)
}

/// The parent finished its exchange with the child stopped: it did not need the child.
fn without_child(seen: String) -> Fail {
    Fail::failed(format!(
        "with the echo child stopped (SIGSTOP) the parent {seen}: the bytes did not go through \
         the child; send them through pipe A, let the child copy them to pipe B, and read them \
         back from there"
    ))
}

/// What each thread of `pid` is doing (a running thread is busy).
fn activities(pid: i32) -> Vec<Activity> {
    let Some(view) = inspect::view(pid) else {
        return Vec::new();
    };
    view.threads
        .iter()
        .map(|t| {
            if t.state == 'R' {
                Activity::Busy
            } else {
                classify(&view, t.syscall)
            }
        })
        .collect()
}

pub fn reads_while_writing(run: &mut Run) -> Result<String, Fail> {
    // Exactly what a pipe holds by default (no input is small enough to skip reading), one byte
    // more than the pipe of one page holds (the smallest input that cannot be written whole
    // before reading: every threshold above it shows), then far more.
    for len in [64 << 10, PAGE as usize + 1, 1 << 20] {
        reads_while_writing_len(run, len)?;
    }
    // Inputs that fit an empty pipe A: one byte, one under PIPE_BUF (a write the kernel keeps
    // whole), and exactly PIPE_BUF; none of them may be written before reading.
    let fitting = [1, libc::PIPE_BUF - 1, libc::PIPE_BUF];
    for len in fitting {
        reads_while_writing_prefilled(run, len)?;
    }
    let would_block = parent_would_block::parent_read_would_block(run)?;
    Ok(format!(
        "with the child stopped and pipes of one page, the parent waited on pipe B while it \
         wrote; resumed, 64 KiB, {} bytes, then 1 MiB came back; inputs that fit pipe A \
         ({fitting:?} bytes), which the grader had filled, were written while pipe B was \
         waited on too; {would_block}",
        PAGE + 1
    ))
}

/// A session with `len` random bytes of input whose pipes A and B hold one page each, its child
/// settled in its first read and then stopped by the grader, its parent bound to one CPU (a
/// second thread is needed to block on pipe B, not for speed: one CPU changes nothing).
fn small_pipes_child_held(run: &mut Run, len: usize) -> Result<(Session, Pipes), Fail> {
    let input = run.random_bytes(len);
    let session = start(run, input, Flags::default())?;
    let (parent, child) = (session.parent, session.child);
    force::one_cpu(parent)?;
    settle_in_read(child);
    let pipes = session.pipes()?;
    force::set_pipe_capacity(parent, pipes.parent_writes_a, PAGE)?;
    force::set_pipe_capacity(parent, pipes.parent_reads_b, PAGE)?;
    outside::hold_stopped(child)?;
    Ok((session, pipes))
}

/// An input of `len` bytes, no longer than pipe A holds (one page), which would fit an empty
/// pipe A (in one atomic write, up to `PIPE_BUF`); but the grader has filled pipe A with a page
/// of its own before `go`, with the child stopped: the write blocks all the same, and the parent
/// must be waiting on pipe B meanwhile. Whether a write blocks depends on what the pipe holds,
/// not only on its capacity, so no input is small enough to skip reading while writing. The
/// grader takes its page back before the child goes on, so the echo is the input's.
fn reads_while_writing_prefilled(run: &mut Run, len: usize) -> Result<(), Fail> {
    let (mut session, pipes) = small_pipes_child_held(run, len)?;
    let (parent, child) = (session.parent, session.child);
    let page = PAGE as usize;
    let filler = run.random_bytes(page);
    let mut fill = outside::open_pipe(child, pipes.child_reads_a, true)?;
    outside::put_bytes(&mut fill, &filler)?;
    session.go()?;
    let settled = parent_settles_held_small(&mut session, &mut None, pipes.parent_writes_a);
    let seen = activities(parent);
    // The grader's page back out of pipe A (it came first), whatever the verdict.
    let mut drain = outside::open_pipe(child, pipes.child_reads_a, false)?;
    let taken = outside::take_bytes(&mut drain, page)?;
    drop((drain, fill));
    if let Err(fail) = settled {
        let _ = force::resume(child);
        return Err(fail);
    }
    if taken != filler {
        let _ = force::resume(child);
        return Err(Fail::Grader(format!(
            "the grader took {} bytes back out of pipe A, not the page it had put there",
            taken.len()
        )));
    }
    let reads_b = seen.iter().any(|a| match a {
        Activity::PipeRead { inode, .. } => *inode == pipes.b,
        Activity::Poll => true,
        _ => false,
    });
    if !reads_b {
        let verdict = not_reading(&session, &pipes, &seen, None);
        let _ = force::resume(child);
        return Err(Fail::failed(format!(
            "{}; here the input ({len} bytes) was no longer than pipe A holds (F_GETPIPE_SZ: \
             {PAGE}; PIPE_BUF is {}), but the grader had filled pipe A with a page of its own \
             first: a write blocks when the pipe has no room, whatever the input's size (a \
             write of at most PIPE_BUF bytes is atomic, not sure to go through at once), so \
             read pipe B while writing for every input (no shortcut for inputs that fit the \
             pipe or PIPE_BUF)",
            verdict.message(),
            libc::PIPE_BUF,
        )));
    }
    force::resume(child)?;
    let done = session.recv_done()?;
    session.verify_echo(&done)?;
    session.finish()
}

fn reads_while_writing_len(run: &mut Run, len: usize) -> Result<(), Fail> {
    let (mut session, pipes) = small_pipes_child_held(run, len)?;
    let (parent, child) = (session.parent, session.child);
    // A parent that enlarges pipe A could write the whole input before reading: held right
    // after its F_SETPIPE_SZ (on any thread, a writer thread's too), it gets pipe A set back to
    // one page.
    let grow_a = Call {
        number: libc::SYS_fcntl,
        matching: Match::BothBits([
            (0, u64::MAX, pipes.parent_writes_a as u64),
            (1, u64::MAX, libc::F_SETPIPE_SZ as u64),
        ]),
    };
    let mut growing = Tracer::attach(parent, grow_a, Action::OnAnyThread(None))?;
    if growing.is_none() {
        run.note(
            "the grader may not trace the parent here (ptrace): an enlarged pipe A was not set \
             back to one page",
        );
    }
    session.go()?;
    let settled = parent_settles_held_small(&mut session, &mut growing, pipes.parent_writes_a);
    // Dropped, the tracer lets the parent go on untraced.
    drop(growing);
    let grown_a = settled?;
    let seen = activities(parent);
    let reads_b = seen.iter().any(|a| match a {
        Activity::PipeRead { inode, .. } => *inode == pipes.b,
        Activity::Poll => true,
        _ => false,
    });
    if !reads_b {
        let verdict = not_reading(&session, &pipes, &seen, grown_a);
        let _ = force::resume(child);
        return Err(verdict);
    }
    force::resume(child)?;
    let done = session.recv_done()?;
    session.verify_echo(&done)?;
    session.finish()
}

/// Why a parent that does not read pipe B while the child is stopped is wrong, from what its
/// threads were seen doing.
fn not_reading(session: &Session, pipes: &Pipes, seen: &[Activity], grown_a: Option<i32>) -> Fail {
    if seen
        .iter()
        .any(|a| matches!(a, Activity::Busy | Activity::Sleep))
    {
        // Spinning or sleeping between tries: the waiting verdict names it.
        if let Err(fail) = waiting::expect_blocked(
            &[session.parent],
            &role_of(session.parent),
            WaitRules::untimed(),
            WAIT_ADVICE,
        ) {
            return Fail::failed(format!(
                "with the echo child stopped (SIGSTOP): {}",
                fail.message()
            ));
        }
    }
    let writes_a = seen.iter().find_map(|a| match a {
        Activity::PipeWrite { fd, inode } if *inode == pipes.a => Some(*fd),
        _ => None,
    });
    let doing = match writes_a {
        Some(fd) => format!("is blocked writing pipe A (fd {fd})"),
        None => {
            let calls: Vec<String> = seen.iter().map(Activity::describe).collect();
            format!("is {}", calls.join(", "))
        }
    };
    let capacity = outside::open_pipe(session.parent, pipes.parent_reads_b, false)
        .ok()
        .and_then(|pipe| outside::pipe_capacity(&pipe))
        .unwrap_or(0);
    let grown = match grown_a {
        Some(asked) => format!(
            " (it made pipe A hold {asked} bytes with F_SETPIPE_SZ, and the grader, which holds \
             the pipe too, set it back to one page: F_SETPIPE_SZ only moves the limit, may be \
             refused, and any process holding the pipe may move it again)"
        ),
        None if capacity > PAGE => format!(
            " (it made pipe B hold {capacity} bytes: F_SETPIPE_SZ only moves the limit, and may \
             be refused)"
        ),
        None => String::new(),
    };
    Fail::failed(format!(
        "with the echo child stopped (SIGSTOP) and both pipes holding one page (4 KiB, as the \
         kernel gives a user short of pipe memory), exchanging {} bytes, the parent {doing}, \
         and none of its threads reads pipe B{grown} (it ran bound to one CPU, as on a machine \
         of one CPU: available_parallelism() is 1): the parent must read the echo while it \
         writes (a second thread blocked in read() on pipe B, or one thread in poll() on both \
         pipes), on any number of CPUs; a parent that only writes, or writes a block before \
         reading, blocks for ever once both pipes are full, whatever the input's size",
        session.input.len()
    ))
}

pub fn through_the_child(run: &mut Run) -> Result<String, Fail> {
    let len = 1 << 20;
    let input = run.random_bytes(len);
    let swapped = run.rng().random_range(1..=4096usize);
    let mut session = start(run, input, Flags::default())?;
    let (parent, child) = (session.parent, session.child);
    settle_in_read(child);
    let pipes = session.pipes()?;
    // The grader's own write end of pipe A: until it lets go, the child sees no end-of-file,
    // so the grader can look at both processes once every byte has gone through.
    let eof_held = outside::open_pipe(child, pipes.child_reads_a, true)?;
    outside::hold_stopped(child)?;
    written_by_child::room_for_the_whole_input(run, child, &pipes, len);
    let parent_io = inspect::io(parent).unwrap_or_default();
    let child_io = inspect::io(child).unwrap_or_default();
    session.go()?;
    parent_settles(&mut session)?;
    // The first bytes on pipe A are replaced on pipe B: the echo must be what pipe B carried.
    let mut pipe_a = outside::open_pipe(child, pipes.child_reads_a, false)?;
    let taken = outside::take_bytes(&mut pipe_a, swapped)?;
    drop(pipe_a);
    if taken.is_empty() {
        return Err(Fail::failed(
            "with the echo child stopped and the parent settled (every thread of it waiting), \
             pipe A held none of the input: the parent had written nothing into it, or another \
             process writes it in the parent's place. exchange() writes the input into pipe A \
             itself (from a second thread, or in a poll() loop) while it reads pipe B: it must \
             not hand the writing to another process, nor wait before it writes",
        ));
    }
    sent_in_order(&taken, &session.input, child)?;
    let swapped = taken.len();
    // One byte fewer than taken: the grader's own byte, sent once every byte has gone through,
    // makes up the length.
    let injected: Vec<u8> = taken[1..].iter().map(|b| !b).collect();
    let mut pipe_b = outside::open_pipe(child, pipes.child_writes_b, true)?;
    outside::put_bytes(&mut pipe_b, &injected)?;
    drop(pipe_b);
    force::resume(child)?;
    all_through(&mut session, &pipes, parent_io, &eof_held)?;

    let copied = inspect::io(child).unwrap_or_default().since(child_io);
    if copied.written_bytes < copied.read_bytes {
        return Err(Fail::failed(format!(
            "with every byte sent and end-of-file held back, the echo child had read {} bytes \
             from pipe A but written only {}: the child must write what each read() returned to \
             pipe B before it reads again; the echo goes back through pipe B as it is read",
            copied.read_bytes, copied.written_bytes
        )));
    }
    written_by_child::every_byte_written(copied, (len - swapped) as u64)?;
    // A read shorter than any buffer: the child must write it back before it reads again.
    // Traced meanwhile: going back to wait for input, it must arm no timer.
    let late_byte = run.random_bytes(1);
    let before_late = inspect::io(child).unwrap_or_default();
    let timers = Tracer::attach(child, Call::one_of(TIMERS), Action::Report)?;
    (&eof_held)
        .write_all(&late_byte)
        .map_err(|e| Fail::Grader(format!("writing into pipe A: {e}")))?;
    all_through(&mut session, &pipes, parent_io, &eof_held)?;
    if let Some(mut timers) = timers
        && timers.failed_before(Instant::now() + Duration::from_millis(10))?
    {
        return Err(Fail::failed(
            "the grader wrote one byte into pipe A; the echo child echoed it and, going back to \
             wait for input, armed a timer (alarm(), setitimer(), timer_settime() or \
             timerfd_settime(), seen by the grader's tracer): a wait for input with a deadline \
             ends the child (SIGALRM kills it) whenever the parent is slower than that, stopped \
             or busy; the child waits by blocking in read() until input or end-of-file comes, \
             with no timeout, however long",
        ));
    }
    let late = inspect::io(child).unwrap_or_default().since(before_late);
    if late.written_bytes < late.read_bytes {
        return Err(Fail::failed(format!(
            "with every byte sent and end-of-file held back, the grader wrote one byte of its \
             own into pipe A: the echo child read it and blocked reading pipe A again without \
             writing it back (it read {} bytes and wrote {} since): it keeps what it reads \
             before writing (a buffered writer, say); the child must write what each read() \
             returned to pipe B before it reads again",
            late.read_bytes, late.written_bytes
        )));
    }
    let child_fds = inspect::view(child).map(|v| v.fds).unwrap_or_default();
    let own = [pipes.child_reads_a, pipes.child_writes_b];
    let other: Vec<(i32, String)> = child_fds
        .into_iter()
        .filter(|(fd, _)| !own.contains(fd) && !session.fds_before.contains_key(fd))
        .collect();
    let unused: Vec<String> = other
        .iter()
        .filter(|(_, target)| {
            inspect::pipe_inode(target).is_some_and(|i| i == pipes.a || i == pipes.b)
        })
        .map(|(fd, target)| format!("fd {fd} ({target})"))
        .collect();
    if !unused.is_empty() {
        return Err(Fail::failed(format!(
            "during the transfer the echo child still holds {}, more ends of the two pipes than \
             the read end of pipe A and the write end of pipe B: after fork() each process \
             must close the pipe ends it does not use",
            unused.join(", ")
        )));
    }
    if !other.is_empty() {
        let other: Vec<String> = other
            .iter()
            .map(|(fd, target)| format!("fd {fd} ({target})"))
            .collect();
        return Err(Fail::failed(format!(
            "during the transfer the echo child holds {} besides its two pipe ends: the echo \
             goes back through pipe B, not through a file or another channel",
            other.join(", ")
        )));
    }
    // Nothing left to do for either process until end-of-file: both must block.
    waiting::expect_blocked(
        &[parent, child],
        &role_of(parent),
        WaitRules::untimed(),
        WAIT_ADVICE,
    )?;
    drop(eof_held);
    let done = session.recv_done()?;
    if !done.exchange.starts_with("ok") {
        return Err(Fail::failed(format!(
            "exchange() failed: {}",
            done.exchange
        )));
    }
    let mut expected = injected;
    expected.extend_from_slice(&session.input[swapped..]);
    expected.extend_from_slice(&late_byte);
    let echoed = session.echoed()?;
    if echoed != expected {
        let what = if echoed == session.input {
            "it is the input itself: exchange() must return the bytes it read from pipe B, not \
             a copy of its input"
                .to_string()
        } else {
            format!(
                "{} bytes for {} expected, first difference at byte {}",
                echoed.len(),
                expected.len(),
                first_difference(&echoed, &expected)
            )
        };
        return Err(Fail::failed(format!(
            "the grader took the first {swapped} bytes off pipe A, put {} other bytes into \
             pipe B, and one byte of its own into pipe A at the end, but the echo exchange() \
             returned is not what came through pipe B: {what}",
            swapped - 1
        )));
    }
    session.finish()?;
    let replaced = through_a_second_child(run, false)?;
    let replaced_after_failure = through_a_second_child(run, true)?;
    let timer = child_timers::child_arms_no_timer(run)?;
    Ok(format!(
        "with the child stopped the parent waited; the echo of {len} bytes came back through \
         pipe B, copied as it was read, {swapped} bytes replaced on the way; so did the echo \
         of a second child of the same process, given the same input ({replaced} bytes \
         replaced), after a first exchange that succeeded, then after one that failed \
         ({replaced_after_failure} bytes replaced); {timer}"
    ))
}

/// Fails, resuming the stopped `child`, unless the bytes `taken` off pipe A are the input's
/// first bytes.
fn sent_in_order(taken: &[u8], input: &[u8], child: i32) -> Result<(), Fail> {
    if taken[..] == input[..taken.len()] {
        return Ok(());
    }
    let _ = force::resume(child);
    Err(Fail::failed(format!(
        "the first {} bytes the parent wrote into pipe A are not the input's first bytes \
         (first difference at byte {}): send the input in order",
        taken.len(),
        first_difference(taken, input)
    )))
}

/// The same rule for a second `EchoChild` of the same process, spawned once the first is reaped
/// and given the same input (`--again`): nothing kept from the first exchange may stand in for
/// the second child's echo (an echo kept after a success), or add to it (a buffer left full by
/// a failure: with `first_fails`, a byte of the grader's on the first child's pipe B makes that
/// exchange `ShortEcho`). With that child stopped, the parent's whole input
/// waits in pipe A (it fits) once the parent closes it; the grader replaces its first bytes on
/// pipe B. Returns how many it replaced.
fn through_a_second_child(run: &mut Run, first_fails: bool) -> Result<usize, Fail> {
    let len = 4096;
    let input = run.random_bytes(len);
    let replaced = run.rng().random_range(1..len);
    let again = Flags {
        again: true,
        ..Flags::default()
    };
    let mut session = start(run, input, again)?;
    if first_fails {
        settle_in_read(session.child);
        let first_pipes = session.pipes()?;
        let mut first_pipe_b = outside::open_pipe(session.child, first_pipes.child_writes_b, true)?;
        outside::put_bytes(&mut first_pipe_b, b"!")?;
    }
    session.go()?;
    let child = session.second_child()?;
    settle_in_read(child);
    let pipes = session.pipes()?;
    let mut pipe_a = outside::open_pipe(child, pipes.child_reads_a, false)?;
    outside::hold_stopped(child)?;
    session.go_again()?;
    let until = Instant::now() + Duration::from_secs(4);
    // Until the parent has closed its write end of pipe A.
    while pipes_of(&session.proc, session.parent)
        .get(&pipes.a)
        .is_some_and(|(_, writes)| !writes.is_empty())
    {
        if Instant::now() > until {
            force::resume(child)?;
            return Err(Fail::TimedOut(
                session.stopped_reading(session.proc.diagnose()),
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    // The child is stopped: what the parent sent is all still in pipe A.
    let sent = outside::bytes_in_pipe(&pipe_a).unwrap_or(0);
    if sent < len {
        force::resume(child)?;
        let done = session.recv_done()?;
        return Err(Fail::failed(format!(
            "a second EchoChild, spawned by the same process once the first was reaped, was \
             given the same {len} bytes; with that child stopped, exchange() closed pipe A \
             having sent it {sent} of them, and returned `{}`: exchange() sends the whole input \
             through the child it is called on, and returns what came back through its pipe B, \
             every time, not an echo kept from an earlier exchange",
            done.exchange
        )));
    }
    let taken = outside::take_bytes(&mut pipe_a, replaced)?;
    drop(pipe_a);
    sent_in_order(&taken, &session.input, child)?;
    let injected: Vec<u8> = taken.iter().map(|b| !b).collect();
    let mut pipe_b = outside::open_pipe(child, pipes.child_writes_b, true)?;
    outside::put_bytes(&mut pipe_b, &injected)?;
    drop(pipe_b);
    force::resume(child)?;
    let done = session.recv_done()?;
    let first = (
        done.first_exchange.as_deref().unwrap_or("?"),
        done.first_wait.as_deref().unwrap_or("?"),
    );
    let (first_expected, added) = match first_fails {
        true => (
            Returned::ShortEcho {
                sent: len,
                echoed: len + 1,
            },
            ", and the grader had put one byte of its own into its pipe B",
        ),
        false => (Returned::Ok(len), ""),
    };
    if (Returned::parse(first.0), first.1) != (first_expected.clone(), "ok") {
        return Err(Fail::failed(format!(
            "the first of two children was sent {len} bytes{added}: exchange() returned `{}` \
             (not {first_expected:?}) and wait() `{}`",
            first.0, first.1
        )));
    }
    if Returned::parse(&done.exchange)
        == (Returned::ShortEcho {
            sent: len,
            echoed: 2 * len + 1,
        })
    {
        return Err(Fail::failed(format!(
            "the first of two children, its exchange() made to fail (ShortEcho, the grader added \
             a byte to its pipe B), was reaped; a second EchoChild of the same process, given \
             the same {len} bytes, echoed them, and exchange() returned `{}`: {} bytes more than \
             came through its pipe B, as many as the first, failed exchange had read: read the \
             echo into a buffer of the exchange's own, not one kept from call to call (a \
             static, a thread-local) and left full on an error path",
            done.exchange,
            len + 1
        )));
    }
    if !done.exchange.starts_with("ok") || done.wait != "ok" {
        return Err(Fail::failed(format!(
            "with a second EchoChild, spawned by the same process once the first was reaped and \
             given the same {len} bytes, exchange() returned `{}` and wait() `{}`",
            done.exchange, done.wait
        )));
    }
    let mut expected = injected;
    expected.extend_from_slice(&session.input[replaced..]);
    let echoed = session.echoed()?;
    if echoed != expected {
        let what = if echoed == session.input {
            "it is the input, as the first child echoed it".to_string()
        } else {
            format!(
                "{} bytes for {len} expected, first difference at byte {}",
                echoed.len(),
                first_difference(&echoed, &expected)
            )
        };
        return Err(Fail::failed(format!(
            "a second EchoChild, spawned by the same process once the first was reaped, was \
             given the same {len} bytes; the grader took the first {replaced} off its pipe A \
             and put {replaced} other bytes into its pipe B, but the echo exchange() returned \
             is not what came through that pipe B: {what}; exchange() returns what came back \
             through the pipe B of the child it is called on, every time, not an echo kept \
             from an earlier exchange"
        )));
    }
    session.finish()?;
    Ok(replaced)
}

/// Waits until every byte has gone through and both processes wait for end-of-file, which the
/// grader holds back: the parent has written the input and closed its end of pipe A, no thread
/// of it writes any more, pipe A is empty (`eof_held` is the grader's end of it) and the child
/// sleeps. The input written by another child of the parent, not by the parent, is a failure.
fn all_through(
    session: &mut Session,
    pipes: &Pipes,
    parent_io: inspect::IoCounters,
    eof_held: &std::fs::File,
) -> Result<(), Fail> {
    let (parent, child) = (session.parent, session.child);
    let len = session.input.len() as u64;
    let until = Instant::now() + Duration::from_secs(4);
    loop {
        if let Some(message) = session.message_within(Duration::from_millis(2))? {
            let done = session.done(message)?;
            if inspect::view(child).is_none_or(|v| v.state == 'Z') {
                // The child ended although it never saw end-of-file.
                session.verify_echo(&done)?;
                return Err(Fail::failed(format!(
                    "the echo child ended before end-of-file (the grader held pipe A open), and \
                     exchange() returned `{}`: echo_loop() must read until read() returns 0",
                    done.exchange
                )));
            }
            return Err(Fail::failed(format!(
                "the program reported `done` (exchange: {}, wait: {}) while the echo child was \
                 still running (the grader held its end-of-file back): exchange() must read \
                 pipe B until read() returns 0, and wait() must wait for the child",
                done.exchange, done.wait
            )));
        }
        let written = inspect::io(parent).unwrap_or_default().since(parent_io);
        let a_closed = pipes_of(&session.proc, parent)
            .get(&pipes.a)
            .is_none_or(|(_, writes)| writes.is_empty());
        // Pipe A is empty and the child sleeps (how it waits is judged below). Not the child's
        // I/O counters: splice(), which std::io::copy uses between pipes, is not counted there.
        let a_empty = outside::bytes_in_pipe(eof_held) == Some(0);
        let child_waits = inspect::view(child)
            .is_some_and(|v| v.threads.iter().all(|t| t.state == 'S'))
            && !threads_in(child, |a| matches!(a, Activity::PipeWrite { .. }));
        let parent_writes = threads_in(
            parent,
            |a| matches!(a, Activity::PipeWrite { inode, .. } if *inode == pipes.a),
        );
        if a_closed && threads_in(parent, |a| *a == Activity::WaitChild) {
            return Err(Fail::failed(
                "exchange() returned before end-of-file on pipe B: the parent is in waitpid() \
                 while the echo child still runs (the grader held its end-of-file back); read \
                 pipe B until read() returns 0, however many bytes have come",
            ));
        }
        let settled = a_closed && !parent_writes && a_empty && child_waits;
        if settled && written.written_bytes >= len {
            return Ok(());
        }
        // The input went into pipe A, but not from the parent: another process wrote it.
        let helpers: Vec<i32> = inspect::children(Pid::from_raw(parent))
            .into_iter()
            .filter(|&pid| pid != child)
            .collect();
        if settled && !helpers.is_empty() {
            return Err(Fail::failed(format!(
                "the parent closed its write end of pipe A having written {} of the {len} bytes \
                 itself (its I/O counters), and it has children besides the echo child (pids \
                 {helpers:?}): the parent must write the input itself, from a second thread or \
                 with poll(), while it reads the echo, not hand the writing to another process",
                written.written_bytes
            )));
        }
        // Read again: the counters above may predate its last write and close.
        let written = inspect::io(parent).unwrap_or_default().since(parent_io);
        if settled && helpers.is_empty() && written.written_bytes < len {
            return Err(Fail::failed(format!(
                "every byte of the input went into pipe A and the parent closed its write end, \
                 but its I/O counters (/proc/PID/io, wchar: what write(), writev() and their \
                 kin passed) show {} of the {len} bytes written, and no other process of it \
                 wrote them: it moved the input without writing it (vmsplice(), a splice() from \
                 a file or a mapping); the parent writes the input itself, with write_all() on \
                 to_child",
                written.written_bytes
            )));
        }
        if Instant::now() > until {
            if !a_closed && written.written_bytes >= len {
                return Err(Fail::failed(format!(
                    "the parent wrote all {len} bytes into pipe A but still holds its write end: \
                     close it (drop to_child) after the last byte, or the child never sees \
                     end-of-file"
                )));
            }
            return Err(Fail::TimedOut(
                session.stopped_reading(session.proc.diagnose()),
            ));
        }
    }
}

/// Whether a sleeping thread of `pid` is doing what `wanted` accepts.
fn threads_in(pid: i32, wanted: impl Fn(&Activity) -> bool) -> bool {
    let Some(view) = inspect::view(pid) else {
        return false;
    };
    view.threads
        .iter()
        .filter(|t| t.state == 'S')
        .any(|t| wanted(&classify(&view, t.syscall)))
}
