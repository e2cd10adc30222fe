//! A failed `create()` whose clean-up fails too: the ok name is taken, and the grader makes
//! one step of the clean-up of the ready signal fail (its unlink, or its close). The error is
//! still the open's, and the other steps are still done.

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use super::handover::{arguments, report_failure};
use super::names::held_by;
use super::planted::{PLANTED_VALUE, Planted};
use super::probe;
use crate::engine::process::Proc;
use crate::engine::tracer::{Action, Call, Match, Reached, Tracer};
use crate::engine::{Fail, Run, force};

/// The clean-up step of a failed `create()` that the grader makes fail.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum CleanupStep {
    /// The unlink of the ready name, with `ENOENT`, as if another process had removed it.
    Unlink,
    /// The close of the ready signal: the `munmap()` inside `sem_close()` (`EINVAL`), the
    /// `close()` inside `mq_close()` (`EIO`).
    Close,
}

/// The grader's hand on a clean-up step: the tracer that makes it fail, what the step is, and
/// what it was to release (a semaphore's mapping, a queue's descriptor), which stays.
struct Armed {
    tracer: Tracer,
    step: String,
    target: Option<u64>,
}

/// Makes the clean-up's unlink of `ready` fail with `ENOENT`, from the start.
fn arm_unlink_failure(pid: i32, mechanism: &str, ready: &str) -> Result<Option<Armed>, Fail> {
    let (call, step) = if mechanism == "semaphores" {
        let file: &'static str = probe::semaphore_file(ready).leak();
        let call = Call {
            number: libc::SYS_unlink,
            matching: Match::Names(file),
        };
        (call, "sem_unlink()")
    } else {
        // mq_unlink() passes the name without its slash.
        let bare: &'static str = ready.trim_start_matches('/').to_string().leak();
        let call = Call {
            number: libc::SYS_mq_unlink,
            matching: Match::Names(bare),
        };
        (call, "mq_unlink()")
    };
    let tracer = Tracer::attach(pid, call, Action::Fail(libc::ENOENT))?;
    force::resume(pid)?;
    Ok(tracer.map(|tracer| Armed {
        tracer,
        step: format!(
            "{step} of {ready}, which create() had made, fail with ENOENT (as if another \
             process had removed it meanwhile)"
        ),
        target: None,
    }))
}

/// Makes the clean-up's close of the ready signal fail: the parent is held as the ok's
/// creating call returns (`EEXIST`), where the ready signal's mapping or descriptor is known,
/// then traced afresh to fail the `munmap()` of that mapping or the `close()` of that
/// descriptor.
fn arm_close_failure(
    proc: &mut Proc,
    mechanism: &str,
    ready: &str,
    ok: &str,
) -> Result<Option<Armed>, Fail> {
    let pid = proc.pid.as_raw();
    let creating = if mechanism == "semaphores" {
        Call::naming(probe::semaphore_file(ok).leak())
    } else {
        // mq_open() passes the name without its slash.
        Call {
            number: libc::SYS_mq_open,
            matching: Match::Names(ok.trim_start_matches('/').to_string().leak()),
        }
    };
    let held = Tracer::attach(pid, creating, Action::HoldAfter)?;
    force::resume(pid)?;
    let Some(mut held) = held else {
        return Ok(None);
    };
    match held.wait(proc, Instant::now() + Duration::from_secs(5))? {
        Reached::Call => {}
        Reached::Passed(message) => {
            if let Some(message) = message {
                proc.put_back(message);
            }
            return Ok(None);
        }
    }
    let (target, call, step) = if mechanism == "semaphores" {
        let inode = std::fs::metadata(probe::semaphore_file(ready)).map(|m| m.ino());
        let mapping = inode.ok().and_then(|inode| {
            probe::mappings(pid)
                .into_iter()
                .find(|m| m.named_semaphore() && m.inode == inode)
        });
        let target = mapping.map(|m| m.start);
        let call = target.map(|addr| Call::arg_is(libc::SYS_munmap, 0, addr));
        let step = format!("sem_close() of {ready} fail (the munmap() of its mapping said EINVAL)");
        (target, call.map(|call| (call, libc::EINVAL)), step)
    } else {
        let fd = probe::queue_descriptors(pid, ready).first().copied();
        let call = fd.map(|fd| Call::arg_is(libc::SYS_close, 0, fd as u64));
        let step = format!("mq_close() of {ready} fail (the close() of its descriptor said EIO)");
        (
            fd.map(|fd| fd as u64),
            call.map(|call| (call, libc::EIO)),
            step,
        )
    };
    held.release_stopped(pid)?;
    let tracer = match call {
        Some((call, errno)) => Tracer::attach(pid, call, Action::Fail(errno))?,
        None => None,
    };
    force::resume(pid)?;
    Ok(tracer.map(|tracer| Armed {
        tracer,
        step,
        target,
    }))
}

/// `create()` whose clean-up itself fails: the ok name is taken (`EEXIST`), and the grader
/// makes one clean-up step fail (`failing`). The error of `create()` is still the open's
/// (`kind=exists`), and the other clean-up steps are still done: the ready name removed, the
/// ready signal closed, the slot unmapped.
pub(super) fn create_cleanup_fails(
    run: &mut Run,
    mechanism: &'static str,
    failing: CleanupStep,
) -> Result<String, Fail> {
    let names = [run.ipc_name("ready"), run.ipc_name("ok")];
    let (ready, ok) = (names[0].clone(), names[1].clone());
    let plant = Planted::with_value(mechanism, &ok, PLANTED_VALUE)?;
    let mut proc = run.spawn_stopped(&arguments(mechanism, &names, 10, &[]))?;
    let pid = proc.pid.as_raw();
    let armed = match failing {
        CleanupStep::Unlink => arm_unlink_failure(pid, mechanism, &ready)?,
        CleanupStep::Close => arm_close_failure(&mut proc, mechanism, &ready, &ok)?,
    };
    let which = match failing {
        CleanupStep::Unlink => "unlink",
        CleanupStep::Close => "close",
    };
    let Some(Armed {
        mut tracer,
        step,
        target,
    }) = armed
    else {
        proc.kill_tree();
        let _ = remove_signal(mechanism, &ready);
        return Ok(format!("{mechanism}: a failing clean-up {which} not tried"));
    };
    let message = proc.recv_any()?;
    let failed = tracer.failed_before(Instant::now() + Duration::from_millis(500))?;
    let remove_ready = || {
        let _ = remove_signal(mechanism, &ready);
    };
    if message.kind != "failed" {
        proc.kill_tree();
        remove_ready();
        return Err(Fail::failed(format!(
            "with {ok} already there ({mechanism}), Handoff::create() did not fail (the program \
             said `{}`): open each name with O_CREAT | O_EXCL, so that a name in use is an \
             error, not shared",
            message.kind
        )));
    }
    // What the failed step was to release stays: the rest must be gone.
    let kept = target.and_then(|target| {
        if mechanism == "semaphores" {
            probe::mappings(pid)
                .into_iter()
                .find(|m| m.start == target)
                .map(|m| format!("a named semaphore ({})", m.path))
        } else {
            Some(format!("the queue {ready} (descriptor {target})"))
        }
    });
    let held: Vec<String> = held_by(pid, &names)
        .into_iter()
        .filter(|what| Some(what) != kept.as_ref())
        .collect();
    // Only the close failed: the ready name must be removed all the same.
    let left = failing == CleanupStep::Close && probe::name_exists(&ready);
    let kind = message.get("kind").unwrap_or("none");
    let situation =
        format!("with {ok} already there ({mechanism}), the grader made the clean-up's {step}");
    if !failed {
        remove_ready();
        if kind != "exists" {
            return Err(report_failure(&message, mechanism));
        }
        proc.send("exit", &[])?;
        proc.wait()?;
        drop(plant);
        return Ok(format!(
            "{mechanism}: no {which} of {ready} in create()'s clean-up seen"
        ));
    }
    // What the grader found left, in the words of each failure.
    let still_held = if held.is_empty() {
        String::new()
    } else {
        format!("the parent still held {}", held.join(", "))
    };
    let name_left = if left {
        format!("{ready} was left behind (not unlinked)")
    } else {
        String::new()
    };
    let leftovers = [still_held, name_left]
        .into_iter()
        .filter(|what| !what.is_empty())
        .collect::<Vec<_>>()
        .join(", and ");
    if kind != "exists" {
        remove_ready();
        let and_left = if leftovers.is_empty() {
            String::new()
        } else {
            format!(", and {leftovers}")
        };
        return Err(Fail::failed(format!(
            "{situation}: Handoff::create() then failed with kind={kind} ({}) instead of \
             kind=exists{and_left}: the error create() returns is the one that made it fail \
             (EEXIST of {ok}); a clean-up step that fails must neither replace it nor stop the \
             other steps (unlink and close the ready signal, unmap the slot, ignoring their \
             errors)",
            message.get("error").unwrap_or("")
        )));
    }
    if !leftovers.is_empty() {
        remove_ready();
        return Err(Fail::failed(format!(
            "{situation}: Handoff::create() failed with kind=exists as it should, but \
             {leftovers} (besides what that step was to release): a clean-up step that fails \
             must not stop the others (unlink and close the ready signal and unmap the slot \
             all the same)"
        )));
    }
    if let Some(change) = plant.changed() {
        remove_ready();
        return Err(Fail::failed(format!(
            "{situation}: the existing {ok}, which was not the program's, {change}: when \
             create() fails, remove only what it created itself"
        )));
    }
    remove_ready();
    proc.send("exit", &[])?;
    proc.wait()?;
    drop(plant);
    Ok(format!(
        "{mechanism}, ok taken and the clean-up's {which} failing: kind=exists, the rest released"
    ))
}

/// Removes the signal `name` the grader let the program leave (its clean-up made to fail).
fn remove_signal(mechanism: &str, name: &str) -> std::io::Result<()> {
    if mechanism == "semaphores" {
        std::fs::remove_file(probe::semaphore_file(name))
    } else {
        nix::mqueue::mq_unlink(name).map_err(std::io::Error::from)
    }
}
