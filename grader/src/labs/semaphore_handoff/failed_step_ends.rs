//! A failed step ends `create()`: with the ready name taken (the grader's object under it), the
//! program's open of it fails with `EEXIST`, and nothing may be made after that, the ok signal
//! least of all, even to remove it again at once: for that moment the name is taken, and
//! another program that makes it then fails with `EEXIST` on a name this one never keeps.

use std::time::{Duration, Instant};

use super::handover::{arguments, report_failure};
use super::planted::{PLANTED_VALUE, Planted};
use super::probe;
use crate::engine::tracer::{Call, Match, Step, Tracer};
use crate::engine::{Fail, Run, force};

/// The first call that names signal `name` (`mechanism`): the `link()` into `/dev/shm` of
/// glibc's `sem_open()`, or `mq_open()` (which passes the name without its slash).
fn naming_signal(mechanism: &str, name: &str) -> Call {
    if mechanism == "semaphores" {
        Call::naming(probe::semaphore_file(name).leak())
    } else {
        Call {
            number: libc::SYS_mq_open,
            matching: Match::Names(name.trim_start_matches('/').to_string().leak()),
        }
    }
}

/// With the ready name taken, `create()` must fail with kind=exists, and make no call naming
/// the ok signal after the call that named the ready one (that call is let through; a call
/// naming the ok name after it is made to fail with `EEXIST`, as a name taken meanwhile).
pub(super) fn nothing_made_after_a_failed_open(
    run: &mut Run,
    mechanism: &'static str,
) -> Result<String, Fail> {
    let names = [run.ipc_name("ready"), run.ipc_name("ok")];
    let plant = Planted::with_value(mechanism, &names[0], PLANTED_VALUE)?;
    let steps = [
        (naming_signal(mechanism, &names[0]), Step::Pass),
        (
            naming_signal(mechanism, &names[1]),
            Step::Fail(libc::EEXIST),
        ),
    ];
    let mut proc = run.spawn_stopped(&arguments(mechanism, &names, 10, &[]))?;
    let pid = proc.pid.as_raw();
    let tracer = Tracer::in_turn(pid, steps)?;
    force::resume(pid)?;
    let message = proc.recv_any()?;
    let opened_ok = match tracer {
        // The tracer reports the call as it stops the program there, before the program can
        // report its failure: a short wait is enough.
        Some(mut tracer) => tracer.failed_before(Instant::now() + Duration::from_millis(20))?,
        None => false,
    };
    let (ready, ok) = (&names[0], &names[1]);
    if message.kind != "failed" || message.get("kind") != Some("exists") {
        proc.kill_tree();
        if message.kind == "failed" {
            return Err(report_failure(&message, mechanism));
        }
        return Err(Fail::failed(format!(
            "with {ready} already there ({mechanism}), the program said `{}`, not kind=exists: \
             open the signals with O_CREAT | O_EXCL; EEXIST is HandoffError::Exists",
            message.kind
        )));
    }
    if opened_ok {
        proc.kill_tree();
        let _ = nix::mqueue::mq_unlink(ok.as_str());
        probe::remove_semaphores(std::slice::from_ref(ok));
        return Err(Fail::failed(format!(
            "with {ready} already there ({mechanism}), create()'s open of the ready signal \
             failed with EEXIST, and create() then went on to open the ok signal {ok} (the \
             grader saw the call, and made it fail): it makes an object after a failed step, \
             even if it removes it again, and for that moment another program making {ok} \
             fails with EEXIST on a name this one never keeps. A failed step ends create(): \
             remove what was already made, return its error, and open nothing more (do not \
             try both opens and sort out the results after)"
        )));
    }
    proc.send("exit", &[])?;
    proc.wait()?;
    drop(plant);
    Ok(format!(
        "{mechanism}, ready taken: kind=exists, the ok signal never opened after"
    ))
}
