//! Checks of signals: a transfer under a storm of SIGUSR1 (short writes, EINTR), and each
//! process interrupted again and again while it is blocked on its pipes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use rand::RngExt;

use super::outside;
use super::returned::Returned;
use super::session::{
    CHILD, Done, Flags, PARENT, Session, WRITTEN_TWICE, role_of, settle_in_read, start,
};
use crate::engine::inspect::{self, SignalMask, pipe_inode};
use crate::engine::tracer::{Action, Call, Tracer};
use crate::engine::waiting::{self, WaitRules};
use crate::engine::{Fail, Run, force};

/// One page: with pipes this small, a write() of more than a page always waits for the reader
/// part-way, where a signal cuts it short.
const PAGE: i32 = 4096;

pub fn signals_during_transfer(run: &mut Run) -> Result<String, Fail> {
    let len = 4 << 20;
    let input = run.random_bytes(len);
    let flags = Flags {
        interruptible: true,
        ..Flags::default()
    };
    let mut session = start(run, input, flags)?;
    settle_in_read(session.child);
    let pipes = session.pipes()?;
    force::set_pipe_capacity(session.parent, pipes.parent_writes_a, PAGE)?;
    force::set_pipe_capacity(session.parent, pipes.parent_reads_b, PAGE)?;
    let pids = [session.parent, session.child];
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    // Every thread of every process gets the signal: a process-directed signal would mostly
    // interrupt one thread (the one reading), never the one writing.
    let signaller = {
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                // The two processes are known: reading the whole process table each round
                // would leave far fewer signals per second than intended.
                for pid in pids {
                    sent.fetch_add(
                        force::signal_every_thread(pid, Signal::SIGUSR1),
                        Ordering::SeqCst,
                    );
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    // The storm stops before a hang is diagnosed: under it every process looks busy.
    let until = run.deadline() - Duration::from_secs(3);
    let done = session
        .go()
        .and_then(|()| force_short_writes(&session, 10))
        .and_then(|forced| {
            sent.fetch_add(forced, Ordering::SeqCst);
            session.watch_done(until)
        });
    stop.store(true, Ordering::SeqCst);
    let _ = signaller.join();
    judge_under_signals(session, done)?;
    let cut = short_write_continued(run)?;
    Ok(format!(
        "{} MiB echoed intact through pipes of one page and {} SIGUSR1 signals; {cut}",
        len >> 20,
        sent.load(Ordering::SeqCst)
    ))
}

/// The echo child's first `write()` to pipe B cut short by the grader's tracer (its count cut
/// to one byte, as a signal landing in a large write to a pipe cuts it): `write_all()` must go
/// on with the rest. Signals cannot be counted on for this: a program that blocks them while it
/// writes is never cut short by them, and drops the rest of a short write all the same.
fn short_write_continued(run: &mut Run) -> Result<String, Fail> {
    let input = run.random_bytes(4 << 10);
    let mut session = start(run, input, Flags::default())?;
    settle_in_read(session.child);
    let pipes = session.pipes()?;
    let write_b = Call::arg_is(libc::SYS_write, 0, pipes.child_writes_b as u64);
    let Some(mut tracer) = Tracer::attach(session.child, write_b, Action::Shorten(1))? else {
        run.note("the grader may not trace the echo child here (ptrace): no write() cut short");
        let done = session.exchange()?;
        session.verify_echo(&done)?;
        session.finish()?;
        return Ok("no write() cut short (no ptrace)".into());
    };
    session.go()?;
    let cut = tracer.failed_before(Instant::now() + Duration::from_secs(3))?;
    drop(tracer);
    let done = session.recv_done()?;
    if !cut {
        // It wrote pipe B otherwise (writev(), splice()): nothing was cut.
        session.verify_echo(&done)?;
        session.finish()?;
        return Ok("no write() cut short (pipe B written otherwise)".into());
    }
    if let Err(fail) = session.verify_echo(&done) {
        let echoed = match Returned::parse(&done.exchange) {
            Returned::ShortEcho { sent, echoed } if echoed < sent => format!(
                "exchange() returned `{}` ({} bytes missing)",
                done.exchange,
                sent - echoed
            ),
            _ => format!("the exchange failed ({})", fail.message()),
        };
        return Err(Fail::failed(format!(
            "the grader cut the echo child's first write() to pipe B short (its tracer cut the \
             count to 1 byte: write() returned 1, as a signal landing during a large write to a \
             pipe makes it return less than asked), and {echoed}: the rest of that buffer was \
             never written; write_all() must go on with what is left after a short write, \
             however it came (blocking signals around the write does not prevent short \
             writes, it only hides them from signal tests)"
        )));
    }
    session.finish()?;
    Ok("a write() cut to 1 byte was continued with the rest".into())
}

/// Cuts the parent's writes short on purpose, `rounds` times: with the child held, the parent
/// fills pipe A's one page and sleeps in a write() that has copied part of its buffer; a signal
/// then makes that write() return short. On a loaded machine the storm alone may land no signal
/// inside a write. Returns how many signals it sent.
fn force_short_writes(session: &Session, rounds: u32) -> Result<u64, Fail> {
    let mut sent = 0;
    let gone = || inspect::view(session.child).is_none();
    for _ in 0..rounds {
        // A child already reaped has done its part: the transfer's verdict judges the rest.
        match outside::hold_stopped(session.child) {
            Err(_) if gone() => break,
            held => held?,
        }
        let until = Instant::now() + Duration::from_millis(500);
        let mut writing = false;
        while !writing && Instant::now() < until {
            writing = threads_on_own_pipes(session, session.parent)
                .values()
                .any(|call| *call == "write()");
            if !writing {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        if writing {
            sent += force::signal_every_thread(session.parent, Signal::SIGUSR1);
        }
        match force::resume(session.child) {
            Err(_) if gone() => break,
            resumed => resumed?,
        }
        // A parent that no longer writes has sent everything (or waits elsewhere, which the
        // transfer's verdict judges).
        if !writing {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(sent)
}

/// The threads of `pid` asleep in a read or write on one of its own pipes (not the grader's
/// stdout and stderr pipes), or in poll/select, with the call they are in.
fn threads_on_own_pipes(session: &Session, pid: i32) -> BTreeMap<i32, &'static str> {
    let Some(view) = inspect::view(pid) else {
        return BTreeMap::new();
    };
    let own_pipe = |fd: u64| {
        view.fds
            .get(&(fd as i32))
            .and_then(|target| pipe_inode(target))
            .is_some_and(|inode| !session.proc.grader_pipes.contains(&inode))
    };
    let call = |number: i64, fd: u64| match number {
        libc::SYS_read | libc::SYS_readv if own_pipe(fd) => Some("read()"),
        libc::SYS_write | libc::SYS_writev if own_pipe(fd) => Some("write()"),
        // What std::io::copy uses between two pipes; its first argument is the pipe read.
        libc::SYS_splice if own_pipe(fd) => Some("splice()"),
        libc::SYS_poll
        | libc::SYS_ppoll
        | libc::SYS_select
        | libc::SYS_pselect6
        | libc::SYS_epoll_wait
        | libc::SYS_epoll_pwait => Some("poll()"),
        _ => None,
    };
    view.threads
        .iter()
        .filter(|t| t.state == 'S')
        .filter_map(|t| Some((t.tid, t.syscall.and_then(|(n, fd)| call(n, fd))?)))
        .collect()
}

/// Whether every thread of `pid` is asleep and one of them waits on its own pipes.
fn waits_on_own_pipes(session: &Session, pid: i32) -> bool {
    let all_asleep = inspect::view(pid).is_some_and(|v| v.threads.iter().all(|t| t.state == 'S'));
    all_asleep && !threads_on_own_pipes(session, pid).is_empty()
}

/// How many times each process is interrupted where it waits: far more than any retry limit a
/// program might set itself, since none is allowed.
const ROUNDS: u32 = 40;

/// Waits until `pid` waits on its own pipes, then interrupts it with SIGUSR1 [`ROUNDS`] times,
/// each time while it is blocked again. Fails, naming the call, if one gave up.
fn interrupt_while_blocked(session: &Session, pid: i32, who: &str) -> Result<(), Fail> {
    let settle = Instant::now() + Duration::from_secs(3);
    while !waits_on_own_pipes(session, pid) {
        if Instant::now() > settle {
            let never = format!(
                "{who} (pid {pid}) never waited on its pipes, so the grader could not interrupt \
                 it there"
            );
            // It has nothing to do: the waiting verdict says how it waits instead.
            let verdict = waiting::expect_blocked(
                &[pid],
                &role_of(session.parent),
                WaitRules::untimed(),
                "wait in read() or write() on the pipes, or in poll()",
            );
            return Err(Fail::failed(match verdict {
                Err(fail) => format!("{never}: {}", fail.message()),
                Ok(_) => format!("{never}: it is {}", super::child_exit::doing(pid)),
            }));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let blocked = threads_on_own_pipes(session, pid);
    let result = outside::interrupt_waiting(pid, &blocked, ROUNDS, "on its pipes", &|| {
        threads_on_own_pipes(session, pid)
    });
    let Err((round, gave_up)) = result else {
        return Ok(());
    };
    let masked: Vec<String> = blocked
        .iter()
        .filter(|(tid, _)| inspect::has_signal(pid, **tid, SignalMask::Blocked, libc::SIGUSR1))
        .map(|(tid, call)| format!("thread {tid}, blocked in {call}"))
        .collect();
    if !masked.is_empty() {
        return Err(Fail::failed(format!(
            "the grader sent SIGUSR1 to every thread of {who} (pid {pid}) while it was blocked on \
             its pipes, and the signal never interrupted {}: the thread blocks SIGUSR1 (its \
             signal mask, SigBlk in /proc/PID/task/TID/status, has it), so the signal stays \
             pending instead of being handled; the program's handler must run when the signal \
             comes: do not block signals around reads and writes to escape EINTR and short \
             writes; retry the call after EINTR and go on after a short write",
            masked.join("; ")
        )));
    }
    if inspect::has_signal(pid, pid, SignalMask::Ignored, libc::SIGUSR1) {
        return Err(Fail::failed(format!(
            "the grader sent SIGUSR1 to every thread of {who} (pid {pid}) while it was blocked \
             on its pipes, and the signal never interrupted it: it ignores SIGUSR1 (SigIgn in \
             /proc/PID/status), so the kernel discards the signal; main.rs installs a SIGUSR1 \
             handler, which the child inherits: leave the signal dispositions as they are, and \
             retry every call a signal interrupts (EINTR)"
        )));
    }
    let retried = if round > 1 {
        format!(
            " after it had retried {} times: there must be no limit on retries",
            round - 1
        )
    } else {
        String::new()
    };
    Err(Fail::failed(format!(
        "SIGUSR1 interrupted {who} (pid {pid}) while it was blocked on its pipes, and it gave up \
         at signal {round} ({}){retried}: a read() or write() interrupted by a signal fails with \
         EINTR (or, for a write, writes less than asked); that is no error, retry the call",
        gave_up.join("; ")
    )))
}

/// How many times in a row the grader's tracer makes each of the calls the processes wait in
/// fail with `EINTR`: far more than any limit a program might set itself on retries (none is
/// allowed), in a few milliseconds per site.
const FORCED_EINTRS: u32 = 1000;

/// Makes `call` of thread `tid` of `pid` fail with `EINTR` [`FORCED_EINTRS`] times in a row
/// (the tracer skipping the call, as a signal caught by a handler without `SA_RESTART` ends
/// it; attaching interrupts a blocked call, which the kernel restarts, and the restart fails).
/// How many failed before the thread stopped making the call: all of them for a thread that
/// retries every time; `None` if it may not be traced here.
fn force_eintrs(pid: i32, tid: i32, call: Call, times: u32) -> Result<Option<u32>, Fail> {
    let fail = Action::FailTimes(libc::EINTR, times);
    let Some(mut tracer) = Tracer::attach_thread(pid, tid, call, fail)? else {
        return Ok(None);
    };
    let mut failed = 0;
    // A thread that retries is back in the call within microseconds; the margin is for a
    // loaded machine. One that gave up ends (the tracer says so at once) or waits elsewhere.
    while failed < times && tracer.failed_before(Instant::now() + Duration::from_secs(2))? {
        failed += 1;
    }
    drop(tracer);
    Ok(Some(failed))
}

/// What became of `pid` after it stopped retrying: its exit status, or what it is doing.
fn fate(pid: i32) -> String {
    // An exit takes a moment to show.
    let until = Instant::now() + Duration::from_millis(200);
    loop {
        if let Some(status) = outside::zombie_status(pid) {
            return format!("it {}", outside::describe_status(status));
        }
        if inspect::view(pid).is_none() {
            return "it ended".into();
        }
        if Instant::now() > until {
            return format!("it is {}", super::child_exit::doing(pid));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The failure of a site that gave up after `failed` forced `EINTR`s in a row, `before` real
/// signals having interrupted the same wait first.
fn gave_up_after(site: &str, who: &str, pid: i32, failed: u32, times: u32, before: u32) -> Fail {
    let before = if before > 0 {
        format!(
            ", after the {before} real SIGUSR1s that had interrupted the same wait first (up \
             to {} interruptions in a row in all)",
            before + failed
        )
    } else {
        String::new()
    };
    Fail::failed(format!(
        "the grader's tracer made {site} fail with EINTR again and again (the call skipped, as a \
         signal caught by a handler without SA_RESTART ends it; {times} times in a row \
         were to come), and {who} (pid {pid}) stopped calling it after {failed} of them{before}; \
         {}: there must be no limit on retries: call it again every time it fails with EINTR, \
         however many times in a row",
        fate(pid)
    ))
}

/// The child's read of pipe A, as it waits for input, failed with `EINTR` by the grader's
/// tracer [`FORCED_EINTRS`] times in a row (re-entered once the tracer interrupts it): what
/// signals do to a read whose handler has no `SA_RESTART`, forced whatever flags the program
/// gave its handlers, and far more often than a retry limit. Run after real signals interrupted
/// that read, which tells a missing retry hidden by `SA_RESTART` (the kernel restarted the
/// reads) from one that real signals would have shown.
fn injected_eintr(session: &Session) -> Result<(), Fail> {
    let child = session.child;
    let pipes = session.pipes()?;
    let read_a = Call::one_of_on(READS, pipes.child_reads_a);
    let Some(failed) = force_eintrs(child, child, read_a, FORCED_EINTRS)? else {
        return Ok(()); // Not traceable here: the real signals were the test.
    };
    if failed == 0 || failed == FORCED_EINTRS {
        // A correct child is back in read() at once; one that gave up at the last one ends.
        let until = Instant::now() + Duration::from_millis(500);
        while outside::zombie_status(child).is_none() && !waits_on_own_pipes(session, child) {
            if Instant::now() > until {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if failed == 0 || outside::zombie_status(child).is_none() {
            return Ok(());
        }
    }
    let site = "the echo child's read() of pipe A (as it waited for input)";
    let fail = gave_up_after(site, CHILD, child, failed, FORCED_EINTRS, ROUNDS);
    if failed > 1 {
        return Err(fail);
    }
    Err(Fail::failed(format!(
        "{}; the {ROUNDS} real SIGUSR1s before it had not made it give up, so the kernel \
         restarted its reads: a handler installed with SA_RESTART (main.rs installs SIGUSR1 \
         without it) hides the EINTR retry that is missing; leave the handlers as they are and \
         retry EINTR in every read() loop",
        fail.message()
    )))
}

const READS: &[i64] = &[libc::SYS_read, libc::SYS_readv];
const WRITES: &[i64] = &[libc::SYS_write, libc::SYS_writev];
/// The calls a thread waits in on several descriptors, and `restart_syscall()`: attaching the
/// tracer interrupts a blocked `poll()`, which the kernel resumes under that number.
const POLLS: &[i64] = &[
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_select,
    libc::SYS_pselect6,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_restart_syscall,
];

/// With the child stopped, each thread of the parent blocked on its pipes (its write() to pipe
/// A, its read() of pipe B, or a poll()) has that call failed with `EINTR` [`FORCED_EINTRS`]
/// times in a row, and must be back in it each time.
fn parent_forced_eintrs(session: &Session) -> Result<(), Fail> {
    let parent = session.parent;
    let pipes = session.pipes()?;
    let Some(view) = inspect::view(parent) else {
        return Ok(());
    };
    let blocked = threads_on_own_pipes(session, parent);
    for thread in view.threads.iter().filter(|t| blocked.contains_key(&t.tid)) {
        let Some((number, fd)) = thread.syscall else {
            continue;
        };
        let fd = fd as i32;
        let (call, site) = if READS.contains(&number) && fd == pipes.parent_reads_b {
            (Call::one_of_on(READS, fd), "the parent's read() of pipe B")
        } else if WRITES.contains(&number) && fd == pipes.parent_writes_a {
            (
                Call::one_of_on(WRITES, fd),
                "the parent's write() to pipe A",
            )
        } else if POLLS.contains(&number) {
            (Call::one_of(POLLS), "the parent's poll() on its pipes")
        } else {
            continue;
        };
        let Some(failed) = force_eintrs(parent, thread.tid, call, FORCED_EINTRS)? else {
            return Ok(());
        };
        let site = format!("{site} (thread {}, with the child stopped)", thread.tid);
        let gave_up = || gave_up_after(&site, PARENT, parent, failed, FORCED_EINTRS, ROUNDS);
        if failed < FORCED_EINTRS {
            return Err(gave_up());
        }
        // Back in the call, or gave up at the very last one.
        let until = Instant::now() + Duration::from_millis(500);
        while !threads_on_own_pipes(session, parent).contains_key(&thread.tid) {
            if Instant::now() > until {
                return Err(gave_up());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    Ok(())
}

/// How many times in a row the grader's tracer makes the echo child's write() to pipe B fail
/// with `EINTR`, drawn anew each run: past 10 000, the round number a program that sets itself
/// a limit on retries picks (none is allowed), up to 2^14, and never the same count, so that no
/// limit can be set just above the one a failure message showed; a tenth of a second or so. One
/// site is enough: the parent's writes and the child's share `write_all()`.
const FORCED_WRITE_EINTRS: std::ops::RangeInclusive<u32> = 10_001..=1 << 14;

/// The stopped child's write() to pipe B failed with `EINTR` `times` times in a row (one of
/// [`FORCED_WRITE_EINTRS`]): seized from its stop, it runs under the tracer, reads the full
/// pipe A and writes pipe B. Detached, it stops again until the grader resumes it.
fn child_write_forced_eintrs(session: &Session, times: u32) -> Result<(), Fail> {
    let child = session.child;
    let pipes = session.pipes()?;
    let write_b = Call::one_of_on(WRITES, pipes.child_writes_b);
    let Some(failed) = force_eintrs(child, child, write_b, times)? else {
        return Ok(());
    };
    // None: it wrote pipe B otherwise (splice()), which the transfer's verdict judges.
    if failed == 0 || failed == times {
        return Ok(());
    }
    let site = "the echo child's write() to pipe B (with pipe A full)";
    Err(gave_up_after(site, CHILD, child, failed, times, 0))
}

pub fn interrupted_while_blocked(run: &mut Run) -> Result<String, Fail> {
    // Far more than both pipes hold, even enlarged to pipe-max-size: with the child stopped,
    // a correct parent cannot finish its read or its write.
    let input = run.random_bytes(4 << 20);
    let flags = Flags {
        interruptible: true,
        ..Flags::default()
    };
    let write_eintrs = run.rng().random_range(FORCED_WRITE_EINTRS);
    let mut session = start(run, input, flags)?;
    // Before `go` the child waits for input in read() on an empty pipe: a signal there can only
    // mean EINTR.
    interrupt_while_blocked(&session, session.child, CHILD)?;
    let child = session.child;
    injected_eintr(&session)?;
    outside::hold_stopped(child)?;
    session.go()?;
    // The first signal may cut a write short; the next ones find it blocked with nothing
    // written, which is EINTR.
    let parent = interrupt_while_blocked(&session, session.parent, PARENT)
        .and_then(|()| parent_forced_eintrs(&session))
        .and_then(|()| child_write_forced_eintrs(&session, write_eintrs));
    force::resume(child)?;
    parent?;
    let done = session.watch_done(run.deadline() - Duration::from_secs(2));
    judge_under_signals(session, done)?;
    Ok(format!(
        "interrupted {ROUNDS} times while blocked on its pipes, then {FORCED_EINTRS} EINTRs in a \
         row forced on each call they waited in ({write_eintrs} on the child's write to pipe B), \
         each process retried; 4 MiB came back"
    ))
}

/// A transfer that went wrong because a short write was followed by bytes written twice: said
/// first, with what was seen after it (a hang, a crash, a wrong echo).
/// Judges a transfer made under signals: a hang is told by where the programs stopped reading,
/// an echo that came back wrong by what the signals did to it.
fn judge_under_signals(session: Session, done: Result<Done, Fail>) -> Result<(), Fail> {
    let done = match done {
        Err(Fail::TimedOut(_)) => {
            // Let the last signal's effect settle before the processes are read.
            std::thread::sleep(Duration::from_millis(50));
            let hang = Fail::TimedOut(session.stopped_reading(session.proc.diagnose()));
            return Err(name_resend(&session, hang));
        }
        other => other.map_err(|fail| name_resend(&session, fail))?,
    };
    if let Err(fail) = session.verify_echo(&done) {
        return Err(name_resend(
            &session,
            name_signal_bug(&session, &done, fail),
        ));
    }
    session.finish()
}

fn name_resend(session: &Session, fail: Fail) -> Fail {
    let Some(resent) = session.resent() else {
        return fail;
    };
    let seen = fail.message();
    let seen = seen.lines().next().unwrap_or_default();
    // A crash's first line only announces the stderr that follows it.
    let seen = seen.trim_end_matches("; its stderr ends with:");
    Fail::failed(format!("{resent} (then: {seen})"))
}

/// Says which of the two signal bugs broke the transfer, from the parent's report and what the
/// processes wrote to stderr.
fn name_signal_bug(session: &Session, done: &Done, fail: Fail) -> Fail {
    let stderr = session.proc.stderr.lock().expect("capture lock").text();
    let seen = format!("{} {stderr}", done.exchange);
    let mut bugs = Vec::new();
    if seen.contains("EINTR") {
        bugs.push(
            "a signal interrupted a read() or write() (EINTR) and the program gave up: retry the \
             call",
        );
    }
    let longer = match Returned::parse(&done.exchange) {
        Returned::ShortEcho { sent, echoed } if echoed > sent => Some((sent, echoed)),
        _ => None,
    };
    if let Some((sent, echoed)) = longer {
        // Nothing but the two processes wrote into the pipes: more came back than was sent.
        return Fail::failed(format!(
            "{}; {echoed} bytes came back for {sent} sent, and only the parent and the child \
             wrote into the pipes, so bytes written twice came back (by the parent into pipe \
             A, or by the child into pipe B); {WRITTEN_TWICE}",
            fail.message()
        ));
    }
    if seen.contains("sent back") || fail.message().contains("the echo is not the input") {
        // The counters sampled on the way may have missed the end of the transfer, so which
        // way the length went wrong is not established here: both are named.
        bugs.push(
            "a write() interrupted by a signal writes less than asked (a short write): the next \
             call must write the rest, no less (bytes lost) and no more (bytes written twice)",
        );
    }
    if bugs.is_empty() {
        return fail;
    }
    Fail::failed(format!("{}; {}", fail.message(), bugs.join("; ")))
}
