//! The error paths of `unlink()`: a name removed behind the
//! program's back, both names gone, an unlink failing with `EACCES` (the ready name's
//! or the ok name's).

use std::time::{Duration, Instant};

use rand::RngExt;

use super::handover::{Launch, report_failure, run_through_removing, spawn_traced_with};
use super::probe;
use crate::engine::tracer::{Action, Call, Match};
use crate::engine::{Fail, Run};

/// `unlink()` when one name is already gone (the grader removes it while the parent is paused
/// after `create()`; `gone`: 0 the ready name, 1 the ok name): the other name must still be
/// unlinked, and the error reported, whichever of the two failed.
pub(super) fn unlink_fails(run: &mut Run, gone: usize) -> Result<String, Fail> {
    let names = [run.ipc_name("ready"), run.ipc_name("ok")];
    let mut launch = Launch::new(run, "semaphores", names, 10, &["--pause-after-create"])?;
    launch.created()?;
    let (removed, other) = (launch.names[gone].clone(), launch.names[1 - gone].clone());
    let which = ["ready", "ok"][gone];
    std::fs::remove_file(probe::semaphore_file(&removed))
        .map_err(|e| Fail::Grader(format!("removing {removed}: {e}")))?;
    launch.proc.send("go", &[])?;
    let message = launch.proc.recv_any()?;
    let reported = message.kind == "failed" && message.get("kind") == Some("unlink");
    if message.kind == "failed" && !reported {
        return Err(report_failure(&message, "semaphores"));
    }
    if probe::name_exists(&other) && reported {
        return Err(Fail::failed(format!(
            "when unlinking {removed} failed (the grader had removed it), Handoff::unlink() left \
             {other} in place: try both names, then return the first error"
        )));
    }
    if probe::name_exists(&other) {
        return Err(Fail::failed(format!(
            "Handoff::unlink() returned without an error and left {other} in place (the grader \
             had removed {removed} itself): unlink both names there, with sem_unlink(), and \
             return the first error"
        )));
    }
    if !reported {
        let second = if gone == 1 {
            format!(
                " The ready name {other} was unlinked, and only the ok name's sem_unlink() \
                 failed: its error was dropped. Keep the result of both unlinks and return the \
                 first that failed, whichever name it was"
            )
        } else {
            String::new()
        };
        return Err(Fail::failed(format!(
            "Handoff::unlink() reported no error although the {which} name {removed} was \
             already gone (sem_unlink said ENOENT): return the first error, as \
             HandoffError::Unlink (kind=unlink).{second}"
        )));
    }
    let error = message.get("error").unwrap_or("");
    if !error.contains(removed.as_str()) {
        return Err(Fail::failed(format!(
            "the grader removed the {which} name {removed} before Handoff::unlink(): unlink() \
             reported `{error}`, which does not name it: report the unlink that failed, as \
             HandoffError::Unlink with its name and errno"
        )));
    }
    launch.run_through(&format!(
        "10 rounds with semaphores after a failed unlink of the {which} name"
    ))?;
    Ok(format!(
        "unlink with the {which} name gone: kind=unlink, the other name unlinked"
    ))
}

/// `unlink()` when both names are already gone (the grader removes them while the parent is
/// paused after `create()`): both `sem_unlink()` calls fail, and the error reported must be the
/// first, the ready name's.
pub(super) fn unlink_both_fail(run: &mut Run) -> Result<String, Fail> {
    let names = [run.ipc_name("ready"), run.ipc_name("ok")];
    let mut launch = Launch::new(run, "semaphores", names, 10, &["--pause-after-create"])?;
    launch.created()?;
    let (ready, ok) = (launch.names[0].clone(), launch.names[1].clone());
    for name in [&ready, &ok] {
        std::fs::remove_file(probe::semaphore_file(name))
            .map_err(|e| Fail::Grader(format!("removing {name}: {e}")))?;
    }
    launch.proc.send("go", &[])?;
    let message = launch.proc.recv_any()?;
    if message.kind != "failed" || message.get("kind") != Some("unlink") {
        if message.kind == "failed" {
            return Err(report_failure(&message, "semaphores"));
        }
        return Err(Fail::failed(format!(
            "Handoff::unlink() reported no error although the grader had removed both {ready} \
             and {ok} (each sem_unlink() said ENOENT; the program said `{}`): return the first \
             error, as HandoffError::Unlink (kind=unlink)",
            message.kind
        )));
    }
    let error = message.get("error").unwrap_or("");
    if !error.contains(ready.as_str()) || error.contains(ok.as_str()) {
        return Err(Fail::failed(format!(
            "the grader removed both {ready} and {ok} before Handoff::unlink(), so that both \
             sem_unlink() calls failed: unlink() reported `{error}`, not the first failure (of \
             the ready name {ready}). Try both names in order, then return the first error, \
             not the last"
        )));
    }
    launch.run_through("10 rounds with semaphores after two failed unlinks")?;
    Ok("unlink of two names gone: the first error, the ready name's".into())
}

/// `unlink()` whose `sem_unlink()` of one name fails with `EACCES` (the grader makes it fail,
/// as for a name another user owns; `failing`: 0 the ready name, 1 the ok name): the error
/// reported must carry that name and that errno, the one the call returned. When the ready
/// name's fails, the grader has removed the ok name too (its `sem_unlink()` then says
/// `ENOENT`): the first error is still the ready name's, with `EACCES`, not the errno of the
/// call made after it.
pub(super) fn unlink_fails_with_eacces(run: &mut Run, failing: usize) -> Result<String, Fail> {
    let names = [run.ipc_name("ready"), run.ipc_name("ok")];
    let name = names[failing].clone();
    let which = ["ready", "ok"][failing];
    let file: &'static str = probe::semaphore_file(&name).leak();
    let seed: u64 = run.rng().random();
    let call = Call {
        number: libc::SYS_unlink,
        matching: Match::Names(file),
    };
    let extra: &[&str] = if failing == 0 {
        &["--pause-after-create"]
    } else {
        &[]
    };
    let (mut proc, tracer) =
        spawn_traced_with(run, &names, extra, call, Action::Fail(libc::EACCES))?;
    let remove = || probe::remove_semaphores(&names);
    let Some(mut tracer) = tracer else {
        proc.kill_tree();
        remove();
        return Ok("an unlink failing with EACCES: not tried (no ptrace)".into());
    };
    let other = if failing == 0 {
        let created = proc.recv_any()?;
        if created.kind != "created" {
            proc.kill_tree();
            remove();
            return Err(report_failure(&created, "semaphores"));
        }
        std::fs::remove_file(probe::semaphore_file(&names[1]))
            .map_err(|e| Fail::Grader(format!("removing {}: {e}", names[1])))?;
        proc.send("go", &[])?;
        format!(
            "; the grader had removed the ok name {} itself, so that its sem_unlink() said \
             ENOENT",
            names[1]
        )
    } else {
        "; the ready name's went through".to_string()
    };
    let message = proc.recv_any()?;
    let failed = tracer.failed_before(Instant::now() + Duration::from_millis(500))?;
    if !failed {
        proc.put_back(message);
        run_through_removing(
            proc,
            &names,
            seed,
            "10 rounds with semaphores, unlink() traced",
        )?;
        return Ok(format!("semaphores: no unlink of {name} seen"));
    }
    let situation = format!(
        "the grader made the parent's sem_unlink() of the {which} name {name} in \
         Handoff::unlink() fail with EACCES (as for a name another user owns{other})"
    );
    if message.kind != "failed" || message.get("kind") != Some("unlink") {
        proc.kill_tree();
        remove();
        if message.kind == "failed" {
            return Err(report_failure(&message, "semaphores"));
        }
        return Err(Fail::failed(format!(
            "{situation}: the program said `{}`, with no error: return the first error of \
             unlink(), as HandoffError::Unlink (kind=unlink)",
            message.kind
        )));
    }
    let error = message.get("error").unwrap_or("").to_string();
    if !error.contains("EACCES") || !error.contains(name.as_str()) {
        proc.kill_tree();
        remove();
        let why = if !error.contains(name.as_str()) {
            "which does not name it: report the first unlink that failed, with its name"
        } else if failing == 0 && error.contains("ENOENT") {
            "the errno of the ok name's sem_unlink(), made after it (the ok name's EACCES, \
             made to fail alone before, was reported as it came, so the errno is not assumed): \
             the ready name's error was read from errno only after the second call had \
             overwritten it. Read Errno::last() right after each sem_unlink() that fails, and \
             keep it with its name"
        } else {
            "not the errno sem_unlink() returned (EACCES): take the errno from the failed call \
             (Errno::last() right after it), do not assume one: an unlink does not fail only \
             when the name is gone"
        };
        return Err(Fail::failed(format!(
            "{situation}: unlink() reported `{error}`, {why} (HandoffError::Unlink {{ name, errno \
             }})"
        )));
    }
    run_through_removing(
        proc,
        &names,
        seed,
        "10 rounds with semaphores after an unlink failing with EACCES",
    )?;
    Ok(format!(
        "unlink of the {which} name failing with EACCES: kind=unlink, its name and EACCES"
    ))
}
