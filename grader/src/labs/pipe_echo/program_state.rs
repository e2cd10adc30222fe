//! What the program had before `spawn()` and still has after it, in both processes: the
//! signals it blocked, a pipe of its own, its descriptor limit. The lab's code may change
//! process-wide state only for a moment and must put it back as it found it (not to a default
//! of its own: "unblock everything" is not "as it was"), on every way out.

use nix::unistd::Pid;

use super::outside;
use super::returned::Returned;
use super::session::{Flags, HELD_PIPE, Spawned, launch, settle_in_read};
use crate::engine::inspect::{self, SignalMask};
use crate::engine::tracer::{Action, Call, Tracer};
use crate::engine::{Fail, Run, force};

/// The signals the program starts with blocked: two it has no use for, which a program may
/// well block for reasons of its own (to take them in a `signalfd()`, say).
const BLOCKED: u64 = (1 << (libc::SIGUSR2 - 1)) | (1 << (libc::SIGWINCH - 1));

pub fn program_state_kept(run: &mut Run) -> Result<String, Fail> {
    mask_and_pipe_kept(run)?;
    let fork = mask_kept_when_fork_fails(run)?;
    let limit = descriptor_limit_kept(run)?;
    Ok(format!(
        "with SIGUSR2 and SIGWINCH blocked and a pipe of its own before spawn(), both processes \
         still block them and hold the pipe; {fork}; {limit}"
    ))
}

/// The names of the signals in `mask`.
fn names(mask: u64) -> String {
    (1..=64)
        .filter(|n| mask & (1u64 << (n - 1)) != 0)
        .map(crate::engine::process::signal_name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `who` (thread `tid` of `pid`) blocks exactly `before`, or what it changed, named.
fn same_mask(pid: i32, tid: i32, before: u64, who: &str, setting: &str) -> Result<(), Fail> {
    let Some(now) = inspect::signal_mask(pid, tid, SignalMask::Blocked) else {
        return Ok(());
    };
    if now == before {
        return Ok(());
    }
    let (unblocked, added) = (before & !now, now & !before);
    let mut changed = Vec::new();
    if unblocked != 0 {
        changed.push(format!(
            "no longer blocks {} (blocked before spawn())",
            names(unblocked)
        ));
    }
    if added != 0 {
        changed.push(format!("now blocks {} as well", names(added)));
    }
    let cause = if unblocked != 0 {
        "spawn() unblocked signals it had not blocked itself: putting the mask \"back\" with \
         SIG_UNBLOCK (of all signals, or of those it blocked) is not putting it back; save the \
         old mask when you block (sigprocmask(SIG_BLOCK, ..., Some(&mut old))) and restore \
         exactly that one (SIG_SETMASK) on every way out, in the child too"
    } else {
        "spawn() changed the signal mask and left it so; put the old mask back (SIG_SETMASK \
         with the saved one) on every way out, in the child too"
    };
    Err(Fail::failed(format!(
        "the program started with {} blocked; {setting}, {who} {} (SigBlk {now:016x}, was \
         {before:016x} in /proc/PID/status): {cause}",
        names(before),
        changed.join(" and ")
    )))
}

/// The signals `pid` ignores (`SIG_IGN`) and those it catches with a handler.
fn dispositions(pid: i32) -> Option<(u64, u64)> {
    Some((
        inspect::signal_mask(pid, pid, SignalMask::Ignored)?,
        inspect::signal_mask(pid, pid, SignalMask::Caught)?,
    ))
}

/// `pid` ignores and catches the signals the parent did before `spawn()` (`before`), or what
/// changed, named: a disposition is process-wide state, inherited by the child at `fork()`.
fn same_dispositions(pid: i32, before: (u64, u64), who: &str, setting: &str) -> Result<(), Fail> {
    let Some(now) = dispositions(pid) else {
        return Ok(());
    };
    let mut changed = Vec::new();
    for (was, is, what) in [
        (before.0, now.0, "ignores"),
        (before.1, now.1, "catches with a handler"),
    ] {
        if is & !was != 0 {
            changed.push(format!("now {what} {}", names(is & !was)));
        }
        if was & !is != 0 {
            changed.push(format!("no longer {what} {}", names(was & !is)));
        }
    }
    if changed.is_empty() {
        return Ok(());
    }
    Err(Fail::failed(format!(
        "{setting}, {who} {} (SigIgn {:016x} and SigCgt {:016x} in /proc/PID/status, against \
         {:016x} and {:016x} in the parent before spawn()): the lab's code changed what a \
         signal does, and a disposition is process-wide state (the child inherits it at fork()); \
         spawn() leaves the program's state as it found it, in the parent and in the child, so \
         a signal that ends the program ends its echo child too",
        changed.join(" and "),
        now.0,
        now.1,
        before.0,
        before.1
    )))
}

/// Signals blocked and a pipe held before `spawn()`: after it returns, the parent blocks them
/// still and so does the child (it inherits the mask and must not lose any of it), and both
/// hold the pipe.
fn mask_and_pipe_kept(run: &mut Run) -> Result<(), Fail> {
    let input = run.random_bytes(4 << 10);
    let flags = Flags {
        blocked_signals: BLOCKED,
        holding_pipe: true,
        ..Flags::default()
    };
    let launched = launch(run, input, flags)?;
    let parent = launched.parent;
    let before = inspect::signal_mask(parent, parent, SignalMask::Blocked);
    let dispositions_before = dispositions(parent);
    let held: Vec<(i32, String)> = [HELD_PIPE, HELD_PIPE + 1]
        .iter()
        .filter_map(|&fd| Some((fd, launched.fds_before.get(&fd)?.clone())))
        .collect();
    let Spawned::Ready(mut session) = launched.spawn()? else {
        return Err(Fail::failed(
            "spawn() failed with descriptors and processes to spare: see spawn-errors",
        ));
    };
    settle_in_read(session.child);
    let setting = "spawn() returned the echo child";
    let mut verdict = Ok(());
    if let Some(before) = before {
        verdict =
            same_mask(parent, parent, before, "the parent's thread", setting).and_then(|()| {
                same_mask(
                    session.child,
                    session.child,
                    before,
                    "the echo child, waiting for input,",
                    setting,
                )
            });
    }
    if verdict.is_ok()
        && let Some(before) = dispositions_before
    {
        verdict = same_dispositions(parent, before, "the parent", setting).and_then(|()| {
            same_dispositions(
                session.child,
                before,
                "the echo child, waiting for input,",
                setting,
            )
        });
    }
    if verdict.is_ok() {
        verdict = pipe_held(&held, parent, session.child);
    }
    let done = session.exchange()?;
    if verdict.is_ok() {
        session.verify_echo(&done)?;
    }
    session.finish()?;
    verdict
}

/// Both processes hold the program's own pipe (`held`, as the parent held it before
/// `spawn()`), on the same descriptors.
fn pipe_held(held: &[(i32, String)], parent: i32, child: i32) -> Result<(), Fail> {
    for (pid, who) in [(child, "the echo child"), (parent, "the parent")] {
        let fds = inspect::view(pid).map(|v| v.fds).unwrap_or_default();
        let lost: Vec<String> = held
            .iter()
            .filter(|(fd, target)| fds.get(fd) != Some(target))
            .map(|(fd, target)| format!("fd {fd} ({target})"))
            .collect();
        if !lost.is_empty() {
            return Err(Fail::failed(format!(
                "the program started holding a pipe of its own (fd {HELD_PIPE} and fd {}, its \
                 read and write ends, as a program holds a pipe to a logger or another helper); \
                 once spawn() had returned and the child waited for input, {who} no longer held \
                 {}: the lab's code closed descriptors it did not open (a sweep of /proc/self/fd \
                 closing every pipe but its own ends, say); close only the ends of the two pipes \
                 spawn() made, by the descriptors it holds (drop them), nothing found by a scan",
                HELD_PIPE + 1,
                lost.join(", ")
            )));
        }
    }
    Ok(())
}

/// Signals blocked before `spawn()`, and its `fork()` made to fail (`EAGAIN`): the parent's
/// thread blocks them still when `spawn()` has returned the error.
fn mask_kept_when_fork_fails(run: &mut Run) -> Result<String, Fail> {
    let input = run.random_bytes(16);
    let flags = Flags {
        blocked_signals: BLOCKED,
        ..Flags::default()
    };
    let launched = launch(run, input, flags)?;
    let parent = launched.parent;
    let before = inspect::signal_mask(parent, parent, SignalMask::Blocked);
    let clone = Call::any(libc::SYS_clone);
    let Some(mut tracer) = Tracer::attach(parent, clone, Action::Fail(libc::EAGAIN))? else {
        run.note("the grader may not trace the program here (ptrace): fork() failing not tried");
        launched.run_out()?;
        return Ok("fork() failing not tried".into());
    };
    match launched.spawn()? {
        Spawned::Ready(mut session) => {
            drop(tracer);
            session.exchange()?;
            session.finish()?;
            // Whether fork() failed, and what spawn() must then return: spawn-errors says.
            Ok("fork() failing not tried (spawn() forked all the same)".into())
        }
        Spawned::Failed(launched, error) => {
            let failed = tracer.failed_the_call()?;
            drop(tracer);
            let verdict = match before {
                Some(before) if failed => same_mask(
                    parent,
                    parent,
                    before,
                    "the parent's thread",
                    &format!(
                        "the grader made fork() fail with EAGAIN (its clone() skipped) and \
                         spawn() returned `{error}`; afterwards"
                    ),
                ),
                _ => Ok(()),
            };
            launched.finish()?;
            verdict.map(|()| "with fork() failed, the mask was as before".into())
        }
    }
}

/// The soft descriptor limit lowered from outside (`prlimit()`) to leave one descriptor free,
/// then three (the first pipe fits, not the second), with the hard limit far above it: the
/// limit is the soft one, and `spawn()` must return `Pipe(EMFILE)` and leave both limits as
/// they were, not raise the soft one to make room.
fn descriptor_limit_kept(run: &mut Run) -> Result<String, Fail> {
    for (free, failing) in [(1, "the first pipe()"), (3, "the second pipe()")] {
        let input = run.random_bytes(16);
        let launched = launch(run, input, Flags::default())?;
        let parent = launched.parent;
        let soft = outside::descriptor_limit(&launched.fds_before, free);
        let Some((_, hard)) = inspect::open_files_limit(parent) else {
            run.note("the program's descriptor limit could not be read: not tried");
            launched.run_out()?;
            return Ok("the soft descriptor limit not tried".into());
        };
        let wanted = (soft, hard.min(soft + 4096).max(soft + 64));
        let set = force::set_limit(
            parent,
            libc::RLIMIT_NOFILE,
            wanted.0,
            wanted.1,
            run.program_user(),
        );
        if set.is_err() || inspect::open_files_limit(parent) != Some(wanted) {
            run.note(format!(
                "the grader could not set the program's descriptor limit ({}): not tried",
                match set {
                    Err(Fail::Grader(why)) => why,
                    _ => "it did not hold".into(),
                }
            ));
            launched.run_out()?;
            return Ok("the soft descriptor limit not tried".into());
        }
        let setting = format!(
            "with the program's soft descriptor limit (RLIMIT_NOFILE) at {soft}, {free} \
             descriptor{} free where two pipes need four, and its hard limit at {}",
            if free == 1 { "" } else { "s" },
            wanted.1
        );
        let after = |pid: i32| match inspect::open_files_limit(pid) {
            Some((cur, max)) if (cur, max) != wanted => format!(
                ", and the program's limit is now {cur} (soft) / {max} (hard): spawn() raised \
                 it (setrlimit()) to make room, and left it so. The soft limit is the limit: \
                 when pipe() fails with EMFILE, return PipeEchoError::Pipe(EMFILE) and leave \
                 the program's limits as they were"
            ),
            _ => String::new(),
        };
        match launched.spawn()? {
            Spawned::Ready(mut session) => {
                let raised = after(parent);
                session.exchange()?;
                session.finish()?;
                return Err(Fail::failed(format!(
                    "{setting}, spawn() returned a child{raised}{}",
                    if raised.is_empty() {
                        ": two pipes cannot fit under the soft limit; create both with pipe() \
                         and return its error"
                    } else {
                        ""
                    }
                )));
            }
            Spawned::Failed(launched, error) => {
                let raised = after(parent);
                launched.finish()?;
                if !raised.is_empty() {
                    return Err(Fail::failed(format!(
                        "{setting}, spawn() returned `{error}`{raised}"
                    )));
                }
                if !matches!(Returned::parse(&format!("error {error}")), Returned::Pipe(e) if e == "EMFILE")
                {
                    return Err(Fail::failed(format!(
                        "{setting}, {failing} fails with EMFILE, but spawn() returned \
                         `{error}`: return PipeEchoError::Pipe with pipe()'s error"
                    )));
                }
                let children = inspect::children(Pid::from_raw(parent));
                if !children.is_empty() {
                    return Err(Fail::failed(format!(
                        "{setting}, spawn() failed but left child processes {children:?}"
                    )));
                }
            }
        }
    }
    Ok(
        "under a soft descriptor limit below the hard one, Pipe(EMFILE), the limits unchanged"
            .into(),
    )
}
