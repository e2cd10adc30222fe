//! The errno an error carries is the one its failed call returned: a failed post's (the
//! grader's `EOVERFLOW` or `EBADF`, judged where `failed_calls.rs` makes the post fail), a
//! failed `mq_unlink()`'s (`EACCES`, made here), never one made from a return value or assumed.

use std::time::{Duration, Instant};

use ipc_labs_driver::Message;
use rand::RngExt;

use super::handover::{Launch, arguments, report_failure};
use crate::engine::tracer::{Action, Call, Match, Tracer};
use crate::engine::{Fail, Run, force};

/// Rounds of the run whose unlink fails: the run need only go on.
const RUN_ROUNDS: u64 = 3;

/// Whether the `failed` report's error carries `errno` (its name, as `Errno` shows it), the
/// one the grader made the call fail with; what the error carries instead, otherwise.
pub(super) fn carries(
    report: &Message,
    errno: &str,
    who: &str,
    situation: &str,
) -> Result<(), Fail> {
    let error = report.get("error").unwrap_or("");
    if error
        .split(|c: char| !c.is_ascii_alphanumeric())
        .any(|word| word == errno)
    {
        return Ok(());
    }
    let why = if error.contains("UnknownErrno") {
        "an errno made from the call's return value: sem_post(), sem_unlink() and the other \
         semaphore calls return -1 and set errno, so read Errno::last() right after the call \
         that failed (nix's mq_* functions return the Errno themselves)"
    } else {
        "an errno assumed or read after another call had overwritten it: take the errno of the \
         failed call itself, right after it (Errno::last() for the semaphore calls, the Errno \
         nix's mq_* functions return)"
    };
    Err(Fail::failed(format!(
        "{situation}: {who} reported kind={} as it should, but its error `{error}` does not \
         carry {errno}, the errno the call failed with; it carries {why}",
        report.get("kind").unwrap_or("none")
    )))
}

/// With queues, the parent's `mq_unlink()` of the ok name in `Handoff::unlink()` made to fail
/// with `EACCES` (as for a queue another user owns; the ready name's goes through): the error
/// must be `HandoffError::Unlink` with that name and `EACCES`, not an errno assumed.
pub(super) fn queue_unlink_errno(run: &mut Run) -> Result<String, Fail> {
    let names = [run.ipc_name("ready"), run.ipc_name("ok")];
    let name = names[1].clone();
    // mq_unlink() passes the name without its slash.
    let bare: &'static str = name.trim_start_matches('/').to_string().leak();
    let call = Call {
        number: libc::SYS_mq_unlink,
        matching: Match::Names(bare),
    };
    let seed: u64 = run.rng().random();
    let mut proc = run.spawn_stopped(&arguments("queues", &names, RUN_ROUNDS, &[]))?;
    let pid = proc.pid.as_raw();
    let tracer = Tracer::attach(pid, call, Action::Fail(libc::EACCES))?;
    force::resume(pid)?;
    let remove = || {
        for name in &names {
            let _ = nix::mqueue::mq_unlink(name.as_str());
        }
    };
    let Some(mut tracer) = tracer else {
        proc.kill_tree();
        remove();
        return Ok("queues: an mq_unlink() failing with EACCES not tried (no ptrace)".into());
    };
    let message = proc.recv_any()?;
    let failed = tracer.failed_before(Instant::now() + Duration::from_millis(500))?;
    drop(tracer);
    let launch = |proc| Launch {
        proc,
        names: names.clone(),
        mechanism: "queues",
        rounds: RUN_ROUNDS,
        seed,
    };
    if !failed {
        proc.put_back(message);
        let ran = launch(proc).run_through("rounds with queues, unlink() traced");
        remove();
        ran?;
        return Ok(format!("queues: no mq_unlink() of {name} seen"));
    }
    let situation = format!(
        "the grader made the parent's mq_unlink() of the ok name {name} in Handoff::unlink() \
         fail with EACCES (as for a queue another user owns; the ready name's went through)"
    );
    if message.kind != "failed" || message.get("kind") != Some("unlink") {
        proc.kill_tree();
        remove();
        if message.kind == "failed" {
            return Err(report_failure(&message, "queues"));
        }
        return Err(Fail::failed(format!(
            "{situation}: the program said `{}`, with no error: return the first error of \
             unlink(), as HandoffError::Unlink (kind=unlink)",
            message.kind
        )));
    }
    let error = message.get("error").unwrap_or("");
    if !error.contains(name.as_str()) {
        proc.kill_tree();
        remove();
        return Err(Fail::failed(format!(
            "{situation}: unlink() reported `{error}`, which does not name it: report the \
             unlink that failed, as HandoffError::Unlink {{ name, errno }}"
        )));
    }
    if let Err(fail) = carries(&message, "EACCES", "the parent", &situation) {
        proc.kill_tree();
        remove();
        return Err(fail);
    }
    let ran = launch(proc).run_through("rounds with queues after an unlink failing with EACCES");
    remove();
    ran?;
    Ok(
        "queues: mq_unlink() of the ok name failing with EACCES: kind=unlink, its name and EACCES"
            .into(),
    )
}
