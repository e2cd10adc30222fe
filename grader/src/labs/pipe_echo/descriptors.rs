//! Checks of the descriptors each process holds: the two pipes and their unused ends after
//! `spawn()`, nothing closed that the program owns, nothing left after `wait()`, and nothing
//! left when `pipe()` fails half-way.

use std::collections::BTreeMap;

use nix::errno::Errno;
use nix::unistd::Pid;

use super::outside;
use super::returned::Returned;
use super::session::{
    CHILD, Flags, PARENT, Pipes, Session, Spawned, launch, pipes_of, settle_in_read, start,
};
use super::signal_mask;
use crate::engine::inspect::{self, SignalMask};
use crate::engine::tracer::{Action, Call, Step, Tracer};
use crate::engine::{Fail, Run};

/// `fd (target)` for each descriptor of `fds` that `keep` rejects.
pub(super) fn listed(
    fds: &BTreeMap<i32, String>,
    keep: impl Fn(&i32, &String) -> bool,
) -> Vec<String> {
    fds.iter()
        .filter(|(fd, target)| keep(fd, target))
        .map(|(fd, target)| format!("fd {fd} ({target})"))
        .collect()
}

pub fn real_pipes(run: &mut Run) -> Result<String, Fail> {
    let input = run.random_bytes(64 << 10);
    let holding = Flags {
        holding: true,
        ..Flags::default()
    };
    let mut session = start(run, input, holding)?;
    let (parent, child) = (session.parent, session.child);
    settle_in_read(child);
    let child_view = inspect::view(child).ok_or_else(|| {
        Fail::failed(format!(
            "the child pid {child} that spawn() returned does not exist"
        ))
    })?;
    if child_view.ppid != parent {
        return Err(Fail::failed(format!(
            "pid {child} is not a child of the parent (its parent is {}): fork() the echo child \
             from the parent",
            child_view.ppid
        )));
    }
    let pipes = session.pipes()?;
    let (a, b) = (pipes.a, pipes.b);
    let mut problems = Vec::new();
    for (who, fds, pipe, end) in [
        (PARENT, &pipes.parent[&a].0, a, "read"),
        (PARENT, &pipes.parent[&b].1, b, "write"),
        (CHILD, &pipes.child[&a].1, a, "write"),
        (CHILD, &pipes.child[&b].0, b, "read"),
    ] {
        if !fds.is_empty() {
            let name = if pipe == a {
                "parent-to-child"
            } else {
                "child-to-parent"
            };
            problems.push(format!(
                "{who} still holds the {end} end of the {name} pipe (fd {fds:?})"
            ));
        }
    }
    if !problems.is_empty() {
        return Err(Fail::failed(format!(
            "{}: after fork() each process must close the pipe ends it does not use, or \
             end-of-file and EPIPE never come",
            problems.join("; ")
        )));
    }
    packet_mode(&pipes, parent, child)?;
    // The child inherits the program's descriptors; they are not the student's to close.
    let child_fds = inspect::view(child).map(|v| v.fds).unwrap_or_default();
    // Replaced: the number is there, but names another file now (dup2() onto it).
    let replaced: Vec<String> = session
        .fds_before
        .iter()
        .filter_map(|(fd, was)| {
            let now = child_fds.get(fd).filter(|now| *now != was)?;
            let end = match inspect::pipe_inode(now) {
                Some(inode) if inode == pipes.a => ", pipe A's read end",
                Some(inode) if inode == pipes.b => ", pipe B's write end",
                _ => "",
            };
            Some(format!("fd {fd} (was {was}, now {now}{end})"))
        })
        .collect();
    if !replaced.is_empty() {
        return Err(Fail::failed(format!(
            "the echo child replaced descriptors it did not open: {} (the program held them \
             before spawn(); descriptor 3 is the grader's control channel): dup2() onto a \
             descriptor closes the file it held; leave the program's descriptors as they are, \
             and let echo_loop() read and write the child's own pipe ends",
            replaced.join(", ")
        )));
    }
    let closed = listed(&session.fds_before, |fd, target| {
        child_fds.get(fd) != Some(target)
    });
    if !closed.is_empty() {
        return Err(Fail::failed(format!(
            "the echo child closed descriptors it did not open: {} (the program held them \
             before spawn(); descriptor 3 is the grader's control channel): close only the \
             pipe ends the child does not use",
            closed.join(", ")
        )));
    }
    let parent_fds = inspect::view(parent).map(|v| v.fds).unwrap_or_default();
    let closed = listed(&session.fds_before, |fd, target| {
        parent_fds.get(fd) != Some(target)
    });
    if !closed.is_empty() {
        return Err(Fail::failed(format!(
            "the parent closed or replaced descriptors spawn() did not open: {} (the program held \
             them before spawn()): spawn() closes only the child's two pipe ends in the parent",
            closed.join(", ")
        )));
    }
    let ends = [
        (
            PARENT,
            &parent_fds,
            [pipes.parent_writes_a, pipes.parent_reads_b],
        ),
        (
            CHILD,
            &child_fds,
            [pipes.child_reads_a, pipes.child_writes_b],
        ),
    ];
    for (who, fds, own) in ends {
        let extra = listed(fds, |fd, _| {
            !session.fds_before.contains_key(fd) && !own.contains(fd)
        });
        if !extra.is_empty() {
            return Err(Fail::failed(format!(
                "{who} holds descriptors besides its two pipe ends and the program's own: {}; \
                 spawn() needs two pipes, and each process keeps one end of each",
                extra.join(", ")
            )));
        }
    }
    let done = session.exchange()?;
    session.verify_echo(&done)?;
    session.finish()?;
    Ok(format!(
        "parent {parent} and child {child} are joined by pipe:[{a}] and pipe:[{b}], unused ends \
         closed, the program's descriptors left alone"
    ))
}

/// A pipe made with `pipe2(O_DIRECT)` is in packet mode: each `write()` is a packet, and a
/// `read()` with a buffer shorter than the packet drops the rest of it, so it is no byte
/// stream. The flag is on each end's open file description (`/proc/PID/fdinfo/FD`).
fn packet_mode(pipes: &Pipes, parent: i32, child: i32) -> Result<(), Fail> {
    let ends = [
        (
            parent,
            pipes.parent_writes_a,
            "parent's write end of pipe A",
        ),
        (parent, pipes.parent_reads_b, "parent's read end of pipe B"),
        (child, pipes.child_reads_a, "child's read end of pipe A"),
        (child, pipes.child_writes_b, "child's write end of pipe B"),
    ];
    let direct: Vec<String> = ends
        .iter()
        .filter(|(pid, fd, _)| {
            inspect::fd_flags(*pid, *fd).is_some_and(|f| f & libc::O_DIRECT as u32 != 0)
        })
        .map(|(_, fd, name)| format!("{name} (fd {fd})"))
        .collect();
    if direct.is_empty() {
        return Ok(());
    }
    Err(Fail::failed(format!(
        "O_DIRECT is set on {} (/proc/PID/fdinfo): a pipe made with pipe2(O_DIRECT) is in packet \
         mode, where each write() is a packet and a read() shorter than the packet silently \
         drops the rest of it: no byte stream; create the pipes with pipe(), no flags",
        direct.join(", ")
    )))
}

pub fn reaped_no_fd_leak(run: &mut Run) -> Result<String, Fail> {
    let input = run.random_bytes(100 << 10);
    let mut session = start(run, input, Flags::default())?;
    let done = session.exchange()?;
    session.verify_echo(&done)?;
    let parent = session.parent;
    let children = inspect::children(Pid::from_raw(parent));
    if !children.is_empty() {
        let states: Vec<String> = children
            .iter()
            .filter_map(|&pid| inspect::view(pid))
            .map(|v| format!("pid {} in state {}", v.pid, v.state))
            .collect();
        return Err(Fail::failed(format!(
            "after wait() the parent still has children ({}): reap the echo child with waitpid(); \
             a child that exited stays a zombie (state Z) until then",
            states.join(", ")
        )));
    }
    leaks_after(&session, "after wait()")?;
    session.finish()?;
    reaps_its_own_child(run)?;
    Ok(
        "the child was reaped and the parent holds no descriptor it did not hold before; with \
         another child of the program already exited, wait() reaped the echo child"
            .into(),
    )
}

/// The program has a child of its own, already exited (a zombie) when `wait()` is called:
/// `wait()` must reap the echo child, and leave the other one to the program.
fn reaps_its_own_child(run: &mut Run) -> Result<(), Fail> {
    let input = run.random_bytes(4 << 10);
    let flags = Flags {
        other_child: true,
        own_files: true,
        ..Flags::default()
    };
    let launched = launch(run, input, flags)?;
    let parent = Pid::from_raw(launched.parent);
    let others = inspect::children(parent);
    // It exits at once: a zombie before the echo child exists.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while std::time::Instant::now() < until
        && others
            .iter()
            .any(|&pid| inspect::view(pid).is_some_and(|v| v.state != 'Z'))
    {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let mut session = match launched.spawn()? {
        Spawned::Ready(session) => session,
        Spawned::Failed(_, error) => return Err(Fail::failed(format!("spawn() failed: {error}"))),
    };
    let done = session.exchange()?;
    session.verify_echo(&done)?;
    let echo_child = session.child;
    let left = inspect::children(parent);
    if left.contains(&echo_child) {
        let other = done.other_child.as_deref().unwrap_or("?");
        let reaped_other = if other.starts_with("error") {
            format!(
                ", and the program's own waitpid() for its other child then failed (`{other}`): \
                 wait() reaped that child (pid {others:?}, which had exited before spawn()) \
                 instead; reap the echo child with waitpid(self.pid), not wait() or \
                 waitpid(-1), which take any child"
            )
        } else {
            ": reap the echo child with waitpid(self.pid)".into()
        };
        return Err(Fail::failed(format!(
            "with another child of the program already exited, wait() returned `{}` but the echo \
             child (pid {echo_child}) was not reaped{reaped_other}",
            done.wait
        )));
    }
    if let Some(lost) = done
        .own_files
        .as_deref()
        .and_then(|o| o.strip_prefix("lost "))
    {
        return Err(Fail::failed(format!(
            "main.rs opened the input file twice after spawn() (two descriptors of the \
             program's own), and after wait() fd {lost} no longer referred to it: spawn(), exchange() or wait() closed a descriptor \
             they did not open (close_range(), or a loop over descriptor numbers, closes the \
             program's files too); close only your own pipe ends, by dropping them"
        )));
    }
    if done.wait != "ok" {
        return Err(Fail::failed(format!(
            "with another child of the program already exited, wait() returned `{}` for an echo \
             child that exited with status 0: reap the echo child with waitpid(self.pid) and \
             judge its status only",
            done.wait
        )));
    }
    session.finish()
}

/// Fails if the parent holds a descriptor it did not hold before `spawn()`.
fn leaks_after(session: &Session, when: &str) -> Result<(), Fail> {
    let leaked: Vec<String> = pipes_of(&session.proc, session.parent)
        .iter()
        .map(|(inode, (r, w))| format!("pipe:[{inode}] (read fds {r:?}, write fds {w:?})"))
        .collect();
    if !leaked.is_empty() {
        return Err(Fail::failed(format!(
            "{when} the parent still holds {}: close both pipe ends when you are done",
            leaked.join(", ")
        )));
    }
    let fds = inspect::view(session.parent)
        .map(|v| v.fds)
        .unwrap_or_default();
    let extra = listed(&fds, |fd, _| !session.fds_before.contains_key(fd));
    if !extra.is_empty() {
        return Err(Fail::failed(format!(
            "{when} the parent holds descriptors it did not hold before spawn(): {}; close \
             every descriptor you open",
            extra.join(", ")
        )));
    }
    Ok(())
}

pub fn spawn_errors(run: &mut Run) -> Result<String, Fail> {
    // One descriptor short each time: none of the two pipes fits, then only the first.
    for (free, failing) in [(1, "the first pipe()"), (3, "the second pipe()")] {
        let input = run.random_bytes(16);
        let launched = launch(run, input, Flags::default())?;
        let (parent, before) = (launched.parent, launched.fds_before.clone());
        let limit = outside::descriptor_limit(&before, free);
        let setting = format!(
            "with the descriptor limit (RLIMIT_NOFILE) at {limit}, {free} descriptor{} free \
             where two pipes need four",
            if free == 1 { "" } else { "s" }
        );
        // Seen, not changed: the error spawn() returns must be the one its pipe() returned.
        let mask = inspect::signal_mask(parent, parent, SignalMask::Blocked);
        let pipes = Call::one_of(&[libc::SYS_pipe, libc::SYS_pipe2]);
        let mut seen = Tracer::attach(parent, pipes, Action::Report)?;
        let launched = match launched.spawn_with(&[("descriptor-limit", limit.to_string())])? {
            Spawned::Ready(session) => {
                return Err(Fail::failed(format!(
                    "{setting}, spawn() returned a child (pid {}): two pipes cannot have been \
                     created; create both with pipe() before fork()",
                    session.child
                )));
            }
            Spawned::Failed(launched, error) => {
                match Returned::parse(&format!("error {error}")) {
                    Returned::Pipe(errno) if errno == "EMFILE" => {}
                    _ => {
                        return Err(Fail::failed(format!(
                            "{setting}, {failing} fails with EMFILE, but spawn() returned `{error}`: \
                             return PipeEchoError::Pipe with pipe()'s error"
                        )));
                    }
                }
                if let Some(tracer) = seen.as_mut()
                    && !tracer.failed_the_call()?
                {
                    return Err(Fail::failed(format!(
                        "{setting}, spawn() returned `{error}` without calling pipe() (the \
                         grader traced the parent: no pipe() or pipe2() call before it reported \
                         the error): the error must be the one pipe() returned, not one \
                         foretold from a count of free descriptors (a count that is wrong \
                         whenever a descriptor is held above the limit, or another thread opens \
                         one); call pipe() and return PipeEchoError::Pipe with its errno"
                    )));
                }
                launched
            }
        };
        let children = inspect::children(Pid::from_raw(parent));
        if !children.is_empty() {
            return Err(Fail::failed(format!(
                "{setting}, spawn() failed but left child processes {children:?}: fork() only \
                 once both pipes exist"
            )));
        }
        let fds = inspect::view(parent).map(|v| v.fds).unwrap_or_default();
        let leaked = listed(&fds, |fd, _| !before.contains_key(fd));
        if !leaked.is_empty() {
            return Err(Fail::failed(format!(
                "{setting}, {failing} failed and spawn() returned the error but left {} open: \
                 close what spawn() created before the failure (an OwnedFd closes itself when \
                 dropped)",
                leaked.join(", ")
            )));
        }
        signal_mask::kept(
            parent,
            mask,
            &format!("{setting}, spawn() returned Pipe(EMFILE)"),
        )?;
        launched.finish()?;
    }
    exactly_enough(run)?;
    let enfile = pipe_fails_enfile(run, false)?;
    let enfile_second = pipe_fails_enfile(run, true)?;
    let fork = fork_fails(run, Errno::EAGAIN)?;
    let fork_enomem = fork_fails(run, Errno::ENOMEM)?;
    Ok(format!(
        "pipe() failing at the first and at the second pipe gave Pipe(EMFILE), with nothing left \
         open; with exactly four descriptors free both pipes were made; {enfile}; {enfile_second}; \
         {fork}; {fork_enomem}"
    ))
}

/// The edge: exactly the four descriptors two pipes need are free. `spawn()` must succeed: it
/// fails only when a call fails.
fn exactly_enough(run: &mut Run) -> Result<(), Fail> {
    let input = run.random_bytes(16);
    let launched = launch(run, input, Flags::default())?;
    let limit = outside::descriptor_limit(&launched.fds_before, 4);
    let mask = inspect::signal_mask(launched.parent, launched.parent, SignalMask::Blocked);
    match launched.spawn_with(&[("descriptor-limit", limit.to_string())])? {
        Spawned::Ready(mut session) => {
            let spawned = "spawn() returned the echo child";
            if let Err(fail) = signal_mask::kept(session.parent, mask, spawned) {
                session.exchange()?;
                session.finish()?;
                return Err(fail);
            }
            let done = session.exchange()?;
            session.verify_echo(&done)?;
            session.finish()
        }
        Spawned::Failed(launched, error) => {
            launched.finish()?;
            Err(Fail::failed(format!(
                "with the descriptor limit (RLIMIT_NOFILE) at {limit}, exactly four descriptors \
                 free (what two pipes need), spawn() returned `{error}`: both pipes fit; spawn() \
                 must fail only when pipe() or fork() does (no descriptor but the four pipe \
                 ends opened, no count of free descriptors of its own)"
            )))
        }
    }
}

/// The first `pipe()`, then (`second`) the second one with the first let through, made to fail
/// with `ENFILE` (the system-wide table of open files full, which no descriptor limit of the
/// program's produces): `Pipe(ENFILE)`, the errno the call returned, not the `EMFILE` a
/// descriptor limit gives, and nothing forked or left open.
fn pipe_fails_enfile(run: &mut Run, second: bool) -> Result<String, Fail> {
    let input = run.random_bytes(16);
    let launched = launch(run, input, Flags::default())?;
    let (parent, before) = (launched.parent, launched.fds_before.clone());
    let mask = inspect::signal_mask(parent, parent, SignalMask::Blocked);
    let pipes = Call::one_of(&[libc::SYS_pipe, libc::SYS_pipe2]);
    let tracer = if second {
        Tracer::in_turn(
            parent,
            [(pipes, Step::Pass), (pipes, Step::Fail(libc::ENFILE))],
        )?
    } else {
        Tracer::attach(parent, pipes, Action::Fail(libc::ENFILE))?
    };
    let which = if second { "second" } else { "first" };
    let Some(mut tracer) = tracer else {
        run.note(
            "the grader may not trace the program here (ptrace): pipe() failing with ENFILE was \
             not tried",
        );
        launched.run_out()?;
        return Ok("pipe() failing with ENFILE not tried".into());
    };
    let setting = format!(
        "the grader made the parent's {which} pipe() fail with ENFILE (the call skipped, as the \
         kernel fails it when the system-wide table of open files is full)"
    );
    let launched = match launched.spawn()? {
        Spawned::Ready(session) => {
            let failed = tracer.failed_the_call()?;
            drop(tracer);
            let mut session = session;
            session.exchange()?;
            session.finish()?;
            if !failed {
                return Err(Fail::failed(
                    "spawn() made its pipes without pipe() or pipe2() (the grader traced the \
                     parent and saw neither): create them with pipe()",
                ));
            }
            return Err(Fail::failed(format!(
                "{setting}, and spawn() returned a child all the same: it must return \
                 PipeEchoError::Pipe with the error of its pipe()"
            )));
        }
        Spawned::Failed(launched, error) => {
            match Returned::parse(&format!("error {error}")) {
                Returned::Pipe(errno) if errno == "ENFILE" => {}
                Returned::Pipe(errno) => {
                    return Err(Fail::failed(format!(
                        "{setting}, and spawn() returned `{error}`: Pipe({errno}) is not the \
                         error pipe() returned; return PipeEchoError::Pipe with pipe()'s own \
                         errno (map_err(PipeEchoError::Pipe)) at each of the two pipe() calls, \
                         not a fixed or guessed one (EMFILE is only the per-process limit)"
                    )));
                }
                _ => {
                    return Err(Fail::failed(format!(
                        "{setting}, and spawn() returned `{error}`: return \
                         PipeEchoError::Pipe with pipe()'s error"
                    )));
                }
            }
            launched
        }
    };
    drop(tracer);
    let children = inspect::children(Pid::from_raw(parent));
    if !children.is_empty() {
        return Err(Fail::failed(format!(
            "{setting}, and spawn() returned the error but left child processes {children:?}: \
             fork() only once both pipes exist"
        )));
    }
    let fds = inspect::view(parent).map(|v| v.fds).unwrap_or_default();
    let leaked = listed(&fds, |fd, _| !before.contains_key(fd));
    if !leaked.is_empty() {
        return Err(Fail::failed(format!(
            "{setting}, and spawn() returned the error but left {} open: close what spawn() \
             created before the failure",
            leaked.join(", ")
        )));
    }
    signal_mask::kept(
        parent,
        mask,
        &format!("{setting}, and spawn() returned Pipe(ENFILE)"),
    )?;
    launched.finish()?;
    Ok(format!(
        "the {which} pipe() failing with ENFILE gave Pipe(ENFILE), with nothing left open"
    ))
}

/// `fork()` made to fail with `errno` (the grader skips the parent's `clone()`): `EAGAIN`, as the
/// kernel fails it at a process limit that root does not meet, then `ENOMEM`, as it fails it out
/// of memory or in a PID namespace whose init is gone: `Fork(errno)` with that very errno, both
/// pipes closed.
fn fork_fails(run: &mut Run, errno: Errno) -> Result<String, Fail> {
    let input = run.random_bytes(16);
    let launched = launch(run, input, Flags::default())?;
    let (parent, before) = (launched.parent, launched.fds_before.clone());
    let mask = inspect::signal_mask(parent, parent, SignalMask::Blocked);
    let clone = Call::any(libc::SYS_clone);
    let Some(mut tracer) = Tracer::attach(parent, clone, Action::Fail(errno as i32))? else {
        run.note(
            "the grader may not trace the program here (ptrace): fork() failing was not tried",
        );
        launched.run_out()?;
        return Ok("fork() failing not tried".into());
    };
    let why = if errno == Errno::EAGAIN {
        "as the kernel fails it at the process limit"
    } else {
        "as the kernel fails it out of memory, or in a PID namespace whose init has died"
    };
    let name = format!("{errno:?}");
    let setting = format!(
        "the grader made the parent's fork() fail with {name} (its clone() skipped, {why})"
    );
    let launched = match launched.spawn()? {
        Spawned::Ready(mut session) => {
            if !tracer.failed_the_call()? {
                // Forked by another call than clone(): nothing was made to fail.
                run.note("spawn() forked without clone(): fork() failing was not tried");
                session.exchange()?;
                session.finish()?;
                return Ok("fork() failing not tried".into());
            }
            return Err(Fail::failed(format!(
                "{setting} and spawn() returned a child (pid {}) all the same: it must return \
                 the error of its one fork()",
                session.child
            )));
        }
        Spawned::Failed(launched, error) => {
            if !tracer.failed_the_call()? {
                return Err(Fail::failed(format!(
                    "spawn() failed with `{error}` before it forked (the grader was to make \
                     fork() fail): create the two pipes, then fork()"
                )));
            }
            match Returned::parse(&format!("error {error}")) {
                Returned::Fork(got) if got == name => {}
                Returned::Fork(got) => {
                    return Err(Fail::failed(format!(
                        "{setting}, and spawn() returned Fork({got}): return PipeEchoError::Fork \
                         with the errno fork() returned (map_err(PipeEchoError::Fork)), not a \
                         fixed or guessed one; fork() fails with EAGAIN, ENOMEM, ENOSYS, ..."
                    )));
                }
                _ => {
                    return Err(Fail::failed(format!(
                        "{setting}, and spawn() returned `{error}`: return \
                         PipeEchoError::Fork with fork()'s error"
                    )));
                }
            }
            launched
        }
    };
    let fds = inspect::view(parent).map(|v| v.fds).unwrap_or_default();
    let leaked = listed(&fds, |fd, _| !before.contains_key(fd));
    if !leaked.is_empty() {
        return Err(Fail::failed(format!(
            "{setting}, and spawn() returned the error but left {} open: close both pipes \
             before returning Fork (an OwnedFd closes itself when dropped)",
            leaked.join(", ")
        )));
    }
    signal_mask::kept(
        parent,
        mask,
        &format!("{setting}, and spawn() returned Fork({name})"),
    )?;
    launched.finish()?;
    Ok(format!(
        "fork() failing with {name} gave Fork({name}), with both pipes closed"
    ))
}
