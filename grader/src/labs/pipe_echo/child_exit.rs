//! Checks of the echo child's exit and of `wait()`: exit status 0 after end-of-file, and
//! `wait()` blocked in `waitpid()` until the child has exited, retrying it after every `EINTR`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nix::unistd::Pid;
use rand::RngExt;

use super::outside::{self, ExitHold, describe_status};
use super::session::{Done, Flags, Session, pipes_of, role_of, settle_in_read, start};
use super::wait_probes::{
    status_collected_early, stopped_while_waited, wait_only_child_ends_by_itself,
    wait_without_exchange, waitpid_fails,
};
use crate::engine::diagnose::classify;
use crate::engine::inspect;
use crate::engine::tracer::{Action, Call, Tracer};
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
pub(super) fn in_waitpid(pid: i32) -> BTreeMap<i32, &'static str> {
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
pub(super) fn returned_early(done: &Done) -> Fail {
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
    let times = run.rng().random_range(FORCED_EINTRS);
    let forced = match forced_eintrs(&mut session, rounds, times)? {
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
    let looked = status_collected_early(run)?;
    let failing = waitpid_fails(run)?;
    let alone = wait_without_exchange(run)?;
    let ended = wait_only_child_ends_by_itself(run)?;
    Ok(format!(
        "with the child held at its exit, wait() stayed blocked in waitpid() through {rounds} \
         signals and {forced} more EINTRs in a row, then reaped it; {stopped}; {looked}; \
         {failing}; {alone}; {ended}"
    ))
}

/// How many times in a row the grader's tracer makes `waitpid()` fail with `EINTR` after the
/// signals, drawn anew each run: past any limit of 11 bits a program might set itself on
/// retries (none is allowed), and never the same count, so that no limit can be set just above
/// the one a failure message showed; a few tens of milliseconds.
const FORCED_EINTRS: std::ops::RangeInclusive<u32> = (1 << 11) + 1..=1 << 12;

/// With the child held at its exit and the parent blocked in `waitpid()`, makes that call fail
/// with `EINTR` `times` times in a row (one of [`FORCED_EINTRS`]; the tracer skips it, as a
/// signal caught by a handler ends it), and sees the parent call it again each time and block in it at the end.
/// `None` if the parent may not be traced here.
fn forced_eintrs(session: &mut Session, signals: u32, times: u32) -> Result<Option<u32>, Fail> {
    let parent = session.parent;
    let Some(&tid) = in_waitpid(parent).keys().next() else {
        return Ok(None);
    };
    let waits = Call::one_of(&[libc::SYS_wait4, libc::SYS_waitid]);
    let fail = Action::FailTimes(libc::EINTR, times);
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
    for failed in 0..times {
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
            return Err(gave_up(times, format!("wait() returned `{}`", done.wait)));
        }
        if Instant::now() >= until {
            return Err(gave_up(
                times,
                format!("it no longer waits in waitpid() (it is {})", doing(parent)),
            ));
        }
    }
    Ok(Some(times))
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
