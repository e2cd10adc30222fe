//! A pool made and removed, watched at its system calls: the free queue's mode as its creating
//! `mq_open()` returns (held there with ptrace: a mode narrowed afterwards leaves a moment in
//! which any user may open the queue and keep the descriptor); segments of exactly the size
//! asked, one past a page (4097 bytes: any rounding up shows); and a `destroy()` in which the
//! `shm_unlink()` of a segment fails with `EACCES`, which is `Unlink` with its errno, not
//! `NotFound` (only `ENOENT` is).

use std::time::{Duration, Instant};

use nix::mqueue::{MQ_OFlag, mq_close, mq_open};
use nix::sys::stat::Mode;

use super::layout::MIN_SEGMENT;
use super::observe::dev_shm;
use super::pool::{PoolNames, pool_args, pool_ready};
use super::transfer::said;
use crate::engine::force;
use crate::engine::tracer::{Action, Call, Reached, Tracer};
use crate::engine::{Fail, Proc, Run};

/// The segments' size: one byte past a page, the smallest size no rounding leaves alone.
const SIZE: usize = MIN_SEGMENT + 1;
/// The segment whose `shm_unlink()` fails: between two that unlink.
const DENIED: usize = 1;

pub fn pool_made_and_removed(run: &mut Run) -> Result<(), Fail> {
    let names = PoolNames::new(run, "made", 3);
    let mut pool = run.spawn_stopped(&pool_args(&names, SIZE)?)?;
    pool.set_roles(|_| "the pool's creator".into());
    let judged = judge(&mut pool, &names);
    pool.kill_tree();
    names.remove();
    judged
}

fn judge(pool: &mut Proc, names: &PoolNames) -> Result<(), Fail> {
    if !queue_mode_at_creation(pool, names)? {
        return Ok(());
    }
    // Segments of exactly SIZE bytes in /dev/shm (pool_ready's judgement).
    pool_ready(pool, names, SIZE)?;
    denied_segment_reported(pool, names)
}

/// Holds the creator as its creating `mq_open()` returns and judges the queue's mode then;
/// lets it go on. False if it could not be held there (no ptrace, or it said something
/// first: judged by the other checks).
fn queue_mode_at_creation(pool: &mut Proc, names: &PoolNames) -> Result<bool, Fail> {
    let pid = pool.pid.as_raw();
    let creating = Call::flag_set(libc::SYS_mq_open, 1, libc::O_CREAT as u64);
    let Some(mut tracer) = Tracer::attach(pid, creating, Action::HoldAfter)? else {
        force::resume(pid)?;
        return Ok(false);
    };
    force::resume(pid)?;
    match tracer.wait(pool, Instant::now() + Duration::from_secs(5))? {
        Reached::Call => {}
        Reached::Passed(_) => return Ok(false),
    }
    // The grader's own descriptor, opened while the creator stands still: its fstat() is the
    // mode the queue was created with.
    let mode = mq_open(
        names.queue.as_str(),
        MQ_OFlag::O_RDONLY | MQ_OFlag::O_NONBLOCK,
        Mode::empty(),
        None,
    )
    .ok()
    .and_then(|queue| {
        let mode = nix::sys::stat::fstat(&queue)
            .ok()
            .map(|s| s.st_mode & 0o7777);
        let _ = mq_close(queue);
        mode
    });
    tracer.release();
    let held = format!(
        "the grader held the pool's creator (ptrace) as its creating mq_open() of the free \
         queue {} returned, before it did anything else",
        names.queue
    );
    match mode {
        Some(mode) if mode & !0o600 != 0 => Err(Fail::failed(format!(
            "{held}: the queue's mode was then {mode:o}, not 600. It is created with a wider \
             mode and narrowed afterwards (fchmod()), or not at all: in between any user may \
             open the queue, take ids and put ids of its own, and keeps the descriptor once \
             the mode changes, since permissions are checked at open only. Give mq_open() the \
             mode 0600 itself: mq_open(O_CREAT | O_EXCL | O_RDWR, 0600, attributes)"
        ))),
        _ => Ok(true),
    }
}

/// `destroy()` with the `shm_unlink()` of segment [`DENIED`] made to fail with `EACCES` (as a
/// name of another user in the sticky /dev/shm): `failed` with `kind=shm-unlink` and `EACCES`,
/// the other segments and the queue removed.
fn denied_segment_reported(pool: &mut Proc, names: &PoolNames) -> Result<(), Fail> {
    let denied = &names.segments[DENIED];
    let unlinking = Call::unlinking(&dev_shm(denied));
    // None: no unlink of that segment's name at all, judged by the other destroy checks.
    let Some(answer) = super::destroy_queue::destroy_with_eacces(pool, unlinking)? else {
        return Ok(());
    };
    let asked = format!(
        "destroy() of a pool of {} segments, the grader making the shm_unlink() of segment \
         {DENIED} ({denied}) fail with EACCES (with ptrace, as a name of another user in the \
         sticky /dev/shm), the others unlinking",
        names.segments.len()
    );
    let error = answer.get("error").unwrap_or("");
    let kind = answer.get("kind");
    if answer.kind != "failed" || kind != Some("shm-unlink") || !error.contains("EACCES") {
        let why = match kind {
            Some("not-found") => {
                ": it reports a segment that is there but cannot be unlinked as one already \
                 gone, and loses its errno. Only ENOENT is TransferError::NotFound; map every \
                 segment's shm_unlink() failure as unlink() does"
            }
            _ if answer.kind == "done" => {
                ": the segment's error was dropped, and destroy() said all went well while the \
                 segment is still there"
            }
            _ => "",
        };
        return Err(Fail::failed(format!(
            "{asked}, said {}: this must be kind=shm-unlink with EACCES \
             (TransferError::Unlink(errno)), the first and only error{why}",
            said(&answer)
        )));
    }
    let left: Vec<&String> = names.left().into_iter().filter(|n| *n != denied).collect();
    if !left.is_empty() {
        return Err(Fail::failed(format!(
            "{asked}, said kind=shm-unlink, rightly, but left {left:?}: it stops at the \
             failure. destroy() tries every segment and the queue, then returns the first error"
        )));
    }
    Ok(())
}
