//! `close()` watched in the parent: the C library's `sem_close()` called for both semaphores,
//! and every step tried, with the first error returned, when the grader makes one step or both
//! signals' closes fail.

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use super::handover::{Handover, Launch};
use super::names::held_by;
use super::{RECORD_SIZE, probe};
use crate::engine::tracer::{Action, Breakpoint, Call, Step, Tracer};
use crate::engine::{Fail, Run};

/// The parent's `close()` with a hardware breakpoint at the C library's `sem_close()` (set once
/// the parent has said `ready`): it must call it for both semaphores, the addresses
/// `sem_open()` gave. A semaphore's mapping unmapped behind the library's back makes the same
/// system calls, but leaves the library's table of open semaphores listing it: a later
/// `sem_open()` of the name in the process would be handed the unmapped address.
pub(super) fn closed_by_sem_close(run: &mut Run) -> Result<String, Fail> {
    let mut handover = Handover::start(run, "semaphores", 10, &[])?;
    let pid = handover.proc.pid.as_raw();
    let semaphores: Vec<u64> = probe::mappings(pid)
        .iter()
        .filter(|m| m.named_semaphore())
        .map(|m| m.start)
        .collect();
    let armed = Tracer::break_at_function(pid, c"sem_close")?;
    let until = Instant::now() + Duration::from_secs(5);
    handover.go()?;
    let Some(mut tracer) = armed.filter(|_| semaphores.len() == 2) else {
        let reports = handover.finish(|_, _| Ok(()))?;
        handover.verify(&reports, "10 rounds with semaphores")?;
        return Ok("sem_close() not watched (no breakpoint)".into());
    };
    let mut closed = Vec::new();
    let mut watched = true;
    let ended = loop {
        if watched {
            match tracer.next_break(Instant::now() + Duration::from_millis(2))? {
                Some(Breakpoint::At([sem, _])) => {
                    closed.push(sem);
                    tracer.go_on();
                }
                Some(Breakpoint::Armed) | None => {}
                Some(Breakpoint::Lost | Breakpoint::Unavailable) => watched = false,
            }
        }
        let wait = if watched {
            Instant::now()
        } else {
            Instant::now() + Duration::from_millis(2)
        };
        if let Some(message) = handover.proc.recv_before(wait)? {
            match message.kind.as_str() {
                "done" => {}
                "ended" => break true,
                "failed" => return Err(handover.failure(&message)),
                kind => {
                    return Err(Fail::failed(format!(
                        "the program said an unexpected `{kind}`"
                    )));
                }
            }
        }
        if Instant::now() >= until {
            break false;
        }
    };
    drop(tracer);
    if !ended {
        return Err(Fail::failed(
            "the program did not say `ended` within 5 s of `go` (semaphores, 10 rounds)",
        ));
    }
    let released = probe::mappings(pid)
        .iter()
        .all(|m| !semaphores.contains(&m.start));
    handover.exit()?;
    let missing = semaphores
        .iter()
        .filter(|sem| !closed.contains(sem))
        .count();
    if watched && released && missing > 0 {
        return Err(Fail::failed(format!(
            "the grader set a breakpoint at the C library's sem_close() in the parent: \
             Handoff::close() called it for {} of the 2 semaphores, yet both semaphores' \
             mappings (/dev/shm/sem.*) were gone when the parent said ended: it unmapped them \
             itself (munmap() of the sem_t), behind the C library's back. The library's table \
             of open semaphores still lists them, and a later sem_open() of the same name in \
             the process would be handed the unmapped address. Close a semaphore with \
             sem_close(sem)",
            2 - missing
        )));
    }
    Ok(format!(
        "close() called sem_close() for {} of the 2 semaphores",
        2 - missing
    ))
}

/// `close()` tries every step: the grader makes one step fail in the parent (with semaphores,
/// the ready semaphore's `sem_close()`, through the `munmap()` of its mapping; with queues, the
/// slot's `munmap()`), and the parent must still have released the rest at `ended`, and
/// reported the error.
pub(super) fn close_goes_on(
    run: &mut Run,
    mechanism: &'static str,
    ok_alone: bool,
) -> Result<String, Fail> {
    let names = [run.ipc_name("ready"), run.ipc_name("ok")];
    let mut launch = Launch::new(run, mechanism, names, 10, &["--pause-after-create"])?;
    launch.created()?;
    let parent = launch.proc.pid.as_raw();
    // With `ok_alone`, the ok semaphore's close fails and nothing else: an error that only
    // the second close() step returns.
    let ready = launch.names[usize::from(ok_alone)].clone();
    let maps = probe::mappings(parent);
    let (target, step, kind) = if mechanism == "semaphores" {
        // The mapping of the semaphore: the inode of its file, while its name exists.
        let inode = std::fs::metadata(probe::semaphore_file(&ready)).map(|m| m.ino());
        let mapping = inode.ok().and_then(|inode| {
            maps.iter()
                .find(|m| m.named_semaphore() && m.inode == inode)
        });
        let which = if ok_alone {
            "the ok semaphore, alone (the ready one and the slot released fine)"
        } else {
            "the ready semaphore"
        };
        (
            mapping.map(|m| m.start),
            format!(
                "the sem_close() of {ready}, {which} (the munmap() of its mapping said EINVAL)"
            ),
            "close",
        )
    } else {
        let slot = maps
            .iter()
            .find(|m| m.shared_anonymous() && m.len() >= RECORD_SIZE);
        (
            slot.map(|m| m.start),
            "the munmap() of the slot (it said EINVAL)".to_string(),
            "munmap",
        )
    };
    launch.proc.send("go", &[])?;
    let mut handover = launch.ready()?;
    // Traced from ready, once unlink() has returned: the munmap() made to fail is one that
    // close() makes, not one made before it.
    let tracer = match target {
        Some(addr) => {
            let call = Call::arg_is(libc::SYS_munmap, 0, addr);
            Tracer::attach(parent, call, Action::Fail(libc::EINVAL))?
        }
        None => None,
    };
    let Some(mut tracer) = tracer else {
        handover.finish(|_, _| Ok(()))?;
        return Ok(format!("{mechanism}: no step of close() made to fail"));
    };
    handover.go()?;
    let mut reported = false;
    loop {
        let message = handover.proc.recv_any()?;
        match (message.kind.as_str(), message.get("role")) {
            ("failed", Some("parent")) if message.get("kind") == Some(kind) => reported = true,
            // The other kind close() can give: the step the grader failed, given the kind of
            // another step.
            ("failed", Some("parent"))
                if matches!(message.get("kind"), Some("close" | "munmap"))
                    && tracer.failed_before(Instant::now() + Duration::from_millis(100))? =>
            {
                let got = message.get("kind").unwrap_or("");
                let error = message.get("error").unwrap_or("");
                return Err(Fail::failed(format!(
                    "the grader made {step} fail in the parent's Handoff::close() \
                     ({mechanism}), and the parent reported kind={got} ({error}) instead of \
                     kind={kind}: a failed munmap() of the slot is HandoffError::Unmap \
                     (kind=munmap), a failed sem_close() or mq_close() HandoffError::Close \
                     (kind=close)"
                )));
            }
            ("failed", _) => return Err(handover.failure(&message)),
            ("done", _) => {}
            ("ended", _) => break,
            (other, _) => {
                return Err(Fail::failed(format!(
                    "the program said an unexpected `{other}`"
                )));
            }
        }
    }
    let failed = tracer.failed_before(Instant::now() + Duration::from_millis(100))? || reported;
    // What the failed step kept stays: the rest must be gone.
    let kept = maps.iter().find(|m| Some(m.start) == target).map(|m| {
        if mechanism == "semaphores" {
            format!("a named semaphore ({})", m.path)
        } else {
            "the slot (a shared anonymous mapping)".to_string()
        }
    });
    let held: Vec<String> = held_by(parent, &handover.names)
        .into_iter()
        .filter(|what| Some(what) != kept.as_ref())
        .collect();
    handover.exit()?;
    if !failed {
        return Ok(format!("{mechanism}: no step of close() made to fail"));
    }
    if !held.is_empty() {
        return Err(Fail::failed(format!(
            "the grader made {step} fail in the parent's Handoff::close() ({mechanism}): after \
             it, the parent still held {} (besides what that step was to release): close() stopped at the first error. Try every step \
             (close both signals, unmap the slot), then return the first error",
            held.join(", ")
        )));
    }
    if !reported {
        let dropped = if ok_alone {
            ": the ok signal's close error was dropped. Keep the result of every step (both \
             closes, the munmap) and return the first that failed, whichever it was"
        } else {
            ""
        };
        return Err(Fail::failed(format!(
            "the grader made {step} fail in the parent's Handoff::close() ({mechanism}), and \
             the parent reported no error{dropped}: return the first error of close() \
             (HandoffError::Close or Unmap, kind={kind})"
        )));
    }
    Ok(format!(
        "{mechanism}: with {step} failed, close() released the rest and said kind={kind}"
    ))
}

/// `close()` with both signals' closes failing (the grader makes them fail in the parent, in
/// turn: with semaphores the `munmap()` of each semaphore's mapping, inside `sem_close()`; with
/// queues the `close()` of each queue descriptor, inside `mq_close()`): the slot must still be
/// unmapped at `ended`, and the first error reported (`kind=close`).
pub(super) fn close_both_fail(run: &mut Run, mechanism: &'static str) -> Result<String, Fail> {
    let names = [run.ipc_name("ready"), run.ipc_name("ok")];
    let mut launch = Launch::new(run, mechanism, names, 10, &["--pause-after-create"])?;
    launch.created()?;
    let parent = launch.proc.pid.as_raw();
    let maps = probe::mappings(parent);
    let targets: Vec<Option<u64>> = launch
        .names
        .iter()
        .map(|name| {
            if mechanism == "semaphores" {
                let inode = std::fs::metadata(probe::semaphore_file(name)).map(|m| m.ino());
                inode.ok().and_then(|inode| {
                    maps.iter()
                        .find(|m| m.named_semaphore() && m.inode == inode)
                        .map(|m| m.start)
                })
            } else {
                probe::queue_descriptors(parent, name)
                    .first()
                    .map(|&fd| fd as u64)
            }
        })
        .collect();
    // With queues each with an errno of its own, so that the error reported tells which came
    // first; glibc's sem_close() says EINVAL whatever its munmap() said.
    let (number, errno, second_errno, step) = if mechanism == "semaphores" {
        (libc::SYS_munmap, libc::EINVAL, libc::EINVAL, "sem_close()")
    } else {
        (libc::SYS_close, libc::EIO, libc::ENOSPC, "mq_close()")
    };
    let call = |value: u64| Call::arg_is(number, 0, value);
    let tracer = match (targets[0], targets[1]) {
        (Some(ready), Some(ok)) => Tracer::in_turn(
            parent,
            [
                (call(ready), Step::Fail(errno)),
                (call(ok), Step::Fail(second_errno)),
            ],
        )?,
        _ => None,
    };
    launch.proc.send("go", &[])?;
    let mut handover = launch.ready()?;
    let Some(mut tracer) = tracer else {
        handover.finish(|_, _| Ok(()))?;
        return Ok(format!("{mechanism}: no two closes made to fail"));
    };
    handover.go()?;
    let mut kinds = Vec::new();
    let mut errors = Vec::new();
    loop {
        let message = handover.proc.recv_any()?;
        match (message.kind.as_str(), message.get("role")) {
            ("failed", Some("parent")) => {
                kinds.push(message.get("kind").unwrap_or("none").to_string());
                errors.push(message.get("error").unwrap_or("").to_string());
            }
            ("failed", _) => return Err(handover.failure(&message)),
            ("done", _) => {}
            ("ended", _) => break,
            (other, _) => {
                return Err(Fail::failed(format!(
                    "the program said an unexpected `{other}`"
                )));
            }
        }
    }
    let until = Instant::now() + Duration::from_millis(100);
    let both = tracer.failed_before(until)? && tracer.failed_before(until)?;
    let slot = held_by(parent, &handover.names)
        .into_iter()
        .any(|what| what.starts_with("the slot"));
    handover.exit()?;
    if !both {
        return Ok(format!("{mechanism}: the two closes not both made to fail"));
    }
    let (ready, ok) = (&handover.names[0], &handover.names[1]);
    let (first, second) = (
        nix::errno::Errno::from_raw(errno),
        nix::errno::Errno::from_raw(second_errno),
    );
    let situation = format!(
        "the grader made the {step} of both signals fail in the parent's Handoff::close() \
         ({mechanism}), {ready}'s first (with {first}), then {ok}'s (with {second})"
    );
    if slot {
        return Err(Fail::failed(format!(
            "{situation}: after it, the parent still held the slot (a shared anonymous mapping): \
             close() stopped at the second signal's error and never unmapped the slot. Try \
             every step (close both signals, unmap the slot), then return the first error"
        )));
    }
    if kinds.first().map(String::as_str) != Some("close") {
        return Err(Fail::failed(format!(
            "{situation}: the parent reported {}, not kind=close: return the first error of \
             close() (HandoffError::Close)",
            match kinds.first() {
                Some(kind) => format!("kind={kind}"),
                None => "no error".to_string(),
            }
        )));
    }
    let error = errors.first().map(String::as_str).unwrap_or("");
    let named = |errno: nix::errno::Errno| {
        let name = format!("{errno:?}");
        error
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|word| word == name)
    };
    if first != second && named(second) && !named(first) {
        return Err(Fail::failed(format!(
            "{situation}: the parent reported kind=close with `{error}`: the second close's \
             error ({second}), not the first one ({first}, {ready}'s): close() kept the last \
             error. Try every step (close both signals, unmap the slot), then return the first \
             error, not one that came after it"
        )));
    }
    Ok(format!(
        "{mechanism}: with both closes failed, close() unmapped the slot and said kind=close \
         with the first error"
    ))
}
