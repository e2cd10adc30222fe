//! A segment's mode is given at its creation: the grader holds the creator (ptrace) as its
//! creating `shm_open()` returns, before it does anything else, and reads the object's mode
//! in `/dev/shm` then. A mode narrowed afterwards (`fchmod()`) leaves a moment in which any
//! user may open the segment and keep the descriptor, since permissions are checked at open
//! only: at the end it looks right, at its creation it is not.

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
    let mode = match reached {
        Ok(Reached::Call) => std::fs::metadata(dev_shm(name))
            .ok()
            .map(|m| m.permissions().mode() & 0o7777),
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
        _ => Ok(()),
    }
}
