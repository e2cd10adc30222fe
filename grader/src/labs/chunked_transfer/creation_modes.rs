//! A segment's mode is given at its creation: the grader holds the creator (ptrace) as its
//! creating `shm_open()` returns, before it does anything else, and reads the object's mode
//! in `/dev/shm` then. A mode narrowed afterwards (`fchmod()`) leaves a moment in which any
//! user may open the segment and keep the descriptor, since permissions are checked at open
//! only: at the end it looks right, at its creation it is not. The mode the call asked for is
//! read there too: 0600 itself, not a wider one narrowed by a umask the library set.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use super::layout::MIN_SEGMENT;
use super::observe::dev_shm;
use super::pool::{PoolNames, pool_args};
use crate::engine::force;
use crate::engine::tracer::{Action, Call, Reached, Tracer};
use crate::engine::{Fail, Run};

/// The mode every segment must have from its creation on.
const MODE: u32 = 0o600;

pub fn segments_created_with_their_mode(run: &mut Run) -> Result<(), Fail> {
    let name = run.ipc_name("mode-at-create");
    let size = MIN_SEGMENT.to_string();
    let sender = [
        "send", "--name", &name, "--size", &size, "--seed", "1", "--lens", "0",
    ]
    .map(String::from);
    mode_at_creation(run, &sender, &name, &[], "a sender's create()")?;
    own_status_unread(run, &sender, &name)?;
    let names = PoolNames::new(run, "mode-at-create", 2);
    let pool = pool_args(&names, MIN_SEGMENT)?;
    let segment = names.segments[0].clone();
    let mut others = names.segments.clone();
    others.push(names.queue.clone());
    mode_at_creation(
        run,
        &pool,
        &segment,
        &others,
        "a pool's create(), at its segment 0",
    )
}

/// Starts `args` (a sender of `name`), traced from its first instruction to its first message
/// (`ready`, its segment made): it opens no status file of its own, where `TracerPid` says
/// whether a tracer watches it (a create that calls `sem_init()` only while traced, say).
fn own_status_unread(run: &mut Run, args: &[String], name: &str) -> Result<(), Fail> {
    let mut proc = run.spawn_stopped(args)?;
    proc.set_roles(|_| "the sender".into());
    let pid = proc.pid.as_raw();
    let cleanup = |proc: &crate::engine::Proc| {
        proc.kill_tree();
        let _ = nix::sys::mman::shm_unlink(name);
    };
    let Some(mut tracer) = Tracer::attach(pid, Call::opening_own_status(pid), Action::Hold)? else {
        cleanup(&proc);
        return Ok(());
    };
    force::resume(pid)?;
    let reached = tracer.wait(&mut proc, Instant::now() + Duration::from_secs(5));
    drop(tracer);
    cleanup(&proc);
    match reached? {
        Reached::Call => Err(Fail::failed(
            "the grader traced a sender from its first instruction to its `ready`: it opened \
             its own status file (/proc/self/status or its like), where TracerPid says whether \
             a tracer watches it, which creating and sending have no need of: a program that \
             looks there behaves one way when graded and another when not (sem_init() called \
             only while traced, say). Create the segment the same way every time: shm_open(), \
             ftruncate(), mmap(), sem_init() on both semaphores",
        )),
        Reached::Passed(_) => Ok(()),
    }
}

/// Starts `args`, holds it as its creating `openat()` of `name` returns and judges the mode the
/// object has then; kills it and removes `name` and `others` (queues or segments it made).
fn mode_at_creation(
    run: &mut Run,
    args: &[String],
    name: &str,
    others: &[String],
    who: &str,
) -> Result<(), Fail> {
    let mut proc = run.spawn_stopped(args)?;
    proc.set_roles(|_| "the creator".into());
    let pid = proc.pid.as_raw();
    let creating: &'static [Call] = Vec::leak(vec![
        Call::opening(&dev_shm(name)),
        Call::flag_set(libc::SYS_openat, 2, libc::O_CREAT as u64),
    ]);
    let cleanup = |proc: &crate::engine::Proc| {
        proc.kill_tree();
        let _ = nix::sys::mman::shm_unlink(name);
        for other in others {
            let _ = nix::sys::mman::shm_unlink(other.as_str());
            let _ = nix::mqueue::mq_unlink(other.as_str());
        }
    };
    let Some(mut tracer) = Tracer::attach(pid, Call::all_of(creating), Action::HoldAfter)? else {
        cleanup(&proc);
        return Ok(());
    };
    force::resume(pid)?;
    let reached = tracer.wait(&mut proc, Instant::now() + Duration::from_secs(5));
    // The mode the call asked for (openat()'s fourth argument) and the umask it met.
    let mut asked = None;
    let mode = match reached {
        Ok(Reached::Call) => {
            asked = crate::engine::inspect::call_of(pid, pid)
                .filter(|(number, _)| *number == libc::SYS_openat)
                .map(|(_, args)| (args[3] as u32 & 0o7777, crate::engine::inspect::umask(pid)));
            std::fs::metadata(dev_shm(name))
                .ok()
                .map(|m| m.permissions().mode() & 0o7777)
        }
        // It said something first, or created nothing with O_CREAT (judged elsewhere).
        Ok(Reached::Passed(_)) => None,
        Err(error) => {
            drop(tracer);
            cleanup(&proc);
            return Err(error);
        }
    };
    drop(tracer);
    cleanup(&proc);
    let held = format!(
        "the grader held {who} (ptrace) as its creating shm_open() of {name} returned, before \
         it did anything else"
    );
    match mode {
        Some(mode) if mode & !MODE != 0 => Err(Fail::failed(format!(
            "{held}: the object's mode was then {mode:o}, not 600. It is created with a wider \
             mode and narrowed afterwards (fchmod()): in between any user may open the \
             segment, and keeps the descriptor once the mode changes, since permissions are \
             checked at open only. Give shm_open() the mode 0600 itself: shm_open(O_CREAT | \
             O_EXCL | O_RDWR, 0600)"
        ))),
        Some(mode) if mode != MODE => Err(Fail::failed(format!(
            "{held}: the object's mode was then {mode:o}, not 600 (set to 600 only \
             afterwards, if at all). Give shm_open() the mode 0600 itself: shm_open(O_CREAT | \
             O_EXCL | O_RDWR, 0600)"
        ))),
        _ => match asked {
            Some((asked, umask)) if asked != MODE => {
                let umask = match umask {
                    Some(umask) => format!(" (the process's umask was then {umask:03o})"),
                    None => String::new(),
                };
                Err(Fail::failed(format!(
                    "{held}: its shm_open() asked for mode {asked:o}{umask}, not 0600, and the \
                     umask narrowed it: ask for 0600 (S_IRUSR | S_IWUSR) in the call itself. A \
                     wider mode narrowed by the umask leaves the object's mode to the process's \
                     state, and a umask the library sets changes the mode of every file the \
                     program creates afterwards"
                )))
            }
            _ => Ok(()),
        },
    }
}
