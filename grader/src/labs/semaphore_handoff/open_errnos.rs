//! `create()` whose open fails with an errno the handout names nowhere: `EEXIST` alone is
//! `Exists`, and every other errno `Open`, whichever it is. The grader makes the creating call
//! of one name fail (`ptrace`) with an errno of a system out of something (`ENOSPC`: the
//! queues' or `/dev/shm`'s room; `EMFILE`: descriptors), while no object has that name.

use std::time::{Duration, Instant};

use super::handover::{arguments, report_failure};
use super::names::held_by;
use super::probe;
use crate::engine::tracer::{Action, Call, Match, Tracer};
use crate::engine::{Fail, Run, force};

/// The creating call of `name`: the `link()` by which glibc's `sem_open(O_CREAT | O_EXCL)` puts
/// a new semaphore under its name, or `mq_open()` (given the name without its slash).
fn creating_call(mechanism: &str, name: &str) -> (Call, &'static str) {
    if mechanism == "semaphores" {
        let file: &'static str = probe::semaphore_file(name).leak();
        (
            Call {
                number: libc::SYS_link,
                matching: Match::Names(file),
            },
            "the link() by which sem_open(O_CREAT | O_EXCL) puts the new semaphore under its name",
        )
    } else {
        let bare: &'static str = name[1..].to_string().leak();
        (
            Call {
                number: libc::SYS_mq_open,
                matching: Match::Names(bare),
            },
            "its mq_open(O_CREAT | O_EXCL)",
        )
    }
}

/// `create()` with the open of one name (`failing`: 0 ready, 1 ok) made to fail with `errno`
/// (`errno_name`), no object having that name: `kind=open` with that errno, what create()
/// made before removed, nothing held.
pub(super) fn create_fails_unlisted_errno(
    run: &mut Run,
    mechanism: &'static str,
    failing: usize,
    (errno, errno_name): (i32, &str),
) -> Result<String, Fail> {
    let names = [run.ipc_name("ready"), run.ipc_name("ok")];
    let which = ["ready", "ok"][failing];
    let name = names[failing].clone();
    let (call, creating) = creating_call(mechanism, &name);
    let proc = run.spawn_stopped(&arguments(mechanism, &names, 10, &[]))?;
    let tracer = Tracer::attach(proc.pid.as_raw(), call, Action::Fail(errno))?;
    force::resume(proc.pid.as_raw())?;
    let mut proc = proc;
    let remove_names = || {
        for name in &names {
            if mechanism == "semaphores" {
                let _ = std::fs::remove_file(probe::semaphore_file(name));
            } else {
                let _ = nix::mqueue::mq_unlink(name.as_str());
            }
        }
    };
    let Some(mut tracer) = tracer else {
        proc.kill_tree();
        remove_names();
        return Ok(format!(
            "an open failing with {errno_name}: not tried (no ptrace)"
        ));
    };
    let message = proc.recv_any()?;
    if !tracer.failed_before(Instant::now() + Duration::from_millis(500))? {
        // No such call for that name: create() made it some other way (judged elsewhere).
        proc.kill_tree();
        remove_names();
        if message.kind == "failed" {
            return Err(report_failure(&message, mechanism));
        }
        return Ok(format!(
            "{mechanism}: no creating call of the {which} name seen"
        ));
    }
    let kind = message.get("kind").unwrap_or("none");
    let error = message.get("error").unwrap_or("").to_string();
    let situation = format!(
        "no object had the name {name}, and the grader made {creating} for the {which} name \
         fail with {errno_name} ({mechanism})"
    );
    let verdict = if message.kind != "failed" || message.get("role") != Some("parent") {
        Some(format!(
            "{situation}: the program said `{}` ({kind}) instead of failing with kind=open",
            message.kind
        ))
    } else if kind != "open" {
        Some(format!(
            "{situation}: create() reported kind={kind} (`{error}`) instead of kind=open: \
             EEXIST alone is HandoffError::Exists, and every other errno of the open is \
             HandoffError::Open, whichever it is (EMFILE, ENFILE, ENOSPC, ENOMEM, ENOENT, as \
             well as the ones the handout names): a list of the errnos that are Open, with \
             Exists for the rest, reports a system out of room or of descriptors as a name \
             in use"
        ))
    } else if !error.contains(errno_name) {
        Some(format!(
            "{situation}: create() reported `{error}`, not {errno_name}: report the errno of \
             the failed call (HandoffError::Open {{ name, errno }})"
        ))
    } else {
        let left: Vec<&String> = names.iter().filter(|n| probe::name_exists(n)).collect();
        let held = held_by(proc.pid.as_raw(), &names);
        (!left.is_empty() || !held.is_empty()).then(|| {
            format!(
                "{situation}: create() failed with kind=open as it should, but it left \
                 behind {:?} and still held {:?}: remove what was already created, and \
                 release what create() holds",
                left, held
            )
        })
    };
    if let Some(verdict) = verdict {
        proc.kill_tree();
        remove_names();
        return Err(Fail::failed(verdict));
    }
    proc.send("exit", &[])?;
    proc.wait()?;
    Ok(format!(
        "{mechanism}, the {which} open failing with {errno_name}: kind=open, nothing left"
    ))
}
