//! `destroy-errors`: what `destroy()` returns when its steps fail with errors the plain run never
//! meets: both pthread destroys failing (the first step's error wins, so the steps' order
//! shows), and `shm_unlink()` failing with each error a name's removal may meet, `ENOENT` (the
//! name already gone) too: every one is `BankError::Unlink`.

use std::time::{Duration, Instant};

use super::LIGHT_WORK;
use super::create_failures::{expect_errno, expect_object};
use super::open_errors::expect_call_errno;
use super::segment::dev_shm;
use super::session::Session;
use super::teardown::{DESTROYS, dismiss, last_word, name_kept_after_failed_unlink};
use crate::engine::tracer::{Action, Breakpoint, Call, Tracer};
use crate::engine::{Fail, Run};

/// The errors the grader gives `shm_unlink()`, beside the `EACCES` of `destroyed-and-removed`:
/// the name already gone, and a file system that is read-only (glibc turns `EPERM` into
/// `EACCES`, so that one is not told apart).
const UNLINK_ERRORS: [i32; 2] = [libc::ENOENT, libc::EROFS];
/// The errors the grader gives `pthread_cond_destroy()` and `pthread_mutex_destroy()`, in
/// [`DESTROYS`]' order: two different ones, so that the error returned tells which came first.
const DESTROY_ERRORS: [i32; 2] = [libc::EPERM, libc::EBUSY];

pub(super) fn destroy_errors(run: &mut Run) -> Result<String, Fail> {
    let mut unlinks = Vec::new();
    for errno in UNLINK_ERRORS {
        if unlink_fails_with(run, errno)? {
            unlinks.push(format!("{:?}", nix::errno::Errno::from_raw(errno)));
        }
    }
    let both = if both_destroys_fail(run)? {
        "; with pthread_cond_destroy() (EPERM) and pthread_mutex_destroy() (EBUSY) both failed, \
         the condition variable destroyed first and its error returned"
    } else {
        ""
    };
    Ok(format!(
        "with destroy()'s shm_unlink() failed by the grader ({}), destroy() said \
         kind=shm-unlink with that error, the name left{both}",
        if unlinks.is_empty() {
            "not traceable here".to_string()
        } else {
            unlinks.join(", ")
        }
    ))
}

/// The tracer fails the coordinator's `shm_unlink()` of the name with `errno` (its `munmap()`
/// goes through): `destroy()` must say `kind=shm-unlink` with that error, whatever the error.
/// `false` when the grader may not trace the coordinator, or it made no call naming the segment
/// (judged by `destroyed-and-removed`).
pub(super) fn unlink_fails_with(run: &mut Run, errno: i32) -> Result<bool, Fail> {
    let errno_name = format!("{:?}", nix::errno::Errno::from_raw(errno));
    let mut session = Session::start(run, &[LIGHT_WORK; 2], &[])?;
    // The path a glibc shm_unlink() unlinks, kept for the life of the grader (a few bytes a run).
    let unlinked: &'static str = dev_shm(&session.name).display().to_string().leak();
    let Some(mut tracer) = Tracer::attach(
        session.coordinator,
        Call::naming(unlinked),
        Action::Fail(errno),
    )?
    else {
        return Ok(false);
    };
    session.go()?;
    let last = last_word(&mut session)?;
    let failed = tracer.failed_the_call()?;
    drop(tracer);
    let kept = failed.then(|| name_kept_after_failed_unlink(&session.name, ""));
    dismiss(&mut session);
    if !failed {
        return Ok(false);
    }
    kept.unwrap_or(Ok(()))?;
    let Some(last) = last else {
        return Err(Fail::failed(format!(
            "with the grader failing the coordinator's shm_unlink() of the name ({errno_name}), \
             the coordinator said neither `closed` nor `failed` within 8 s"
        )));
    };
    let kind = last.get("kind").unwrap_or("none");
    let why = if errno == libc::ENOENT {
        ": ENOENT means the name was gone before destroy() removed it (something else \
         unlinked the bank's name while it was in use), which destroy() reports, not treats as \
         done"
    } else {
        ""
    };
    if last.kind != "failed" || kind != "shm-unlink" {
        return Err(Fail::failed(format!(
            "the grader failed the coordinator's shm_unlink() of the name in destroy() with \
             {errno_name}, and nothing else, and destroy() {}, not kind=shm-unlink: a failed \
             shm_unlink() is BankError::Unlink, whatever its error{}{why}",
            if last.kind == "failed" {
                format!("failed with kind={kind}")
            } else {
                "said nothing went wrong (`closed`)".to_string()
            },
            match (last.kind.as_str(), kind) {
                ("failed", "munmap") => " (its error was mapped to BankError::Unmap)",
                ("failed", _) => "",
                _ => " (no error number is \"as good as removed\")",
            }
        )));
    }
    expect_call_errno(
        &last,
        errno,
        &format!(
            "the grader failed destroy()'s shm_unlink() with {errno_name}, and destroy() said \
             kind=shm-unlink, as it should, but"
        ),
    )?;
    Ok(true)
}

/// The grader makes both of the coordinator's pthread destroys fail (at breakpoints on the two
/// functions: `pthread_cond_destroy()` with `EPERM`, `pthread_mutex_destroy()` with `EBUSY`):
/// the steps come in the API's order, condition variable first, so the error returned is the
/// condition variable's. `false` when the grader may not trace the coordinator, or it made
/// neither call (judged by `destroyed-and-removed`).
fn both_destroys_fail(run: &mut Run) -> Result<bool, Fail> {
    let mut session = Session::start(run, &[LIGHT_WORK; 2], &[])?;
    let Some(mut tracer) = Tracer::break_at_functions(session.coordinator, &DESTROYS)? else {
        return Ok(false);
    };
    session.go()?;
    let until = Instant::now() + Duration::from_secs(8);
    let mut order = Vec::new();
    let last = loop {
        match tracer.next_break(Instant::now() + Duration::from_millis(5))? {
            Some(Breakpoint::At(_)) => {
                let which = tracer.last_break();
                if order.contains(&which) {
                    tracer.go_on();
                } else {
                    order.push(which);
                    tracer.return_now(i64::from(DESTROY_ERRORS[which]));
                }
                continue;
            }
            Some(Breakpoint::Armed) | None => {}
            Some(_) => break None,
        }
        match session.next_before(Instant::now())? {
            Some(m) if m.kind == "failed" || m.kind == "closed" => break Some(m),
            Some(_) => {}
            None if Instant::now() > until => break None,
            None => {}
        }
    };
    drop(tracer);
    dismiss(&mut session);
    if order.len() < 2 {
        return Ok(false);
    }
    let Some(last) = last else {
        return Err(Fail::failed(
            "with the grader failing the coordinator's pthread_cond_destroy() (EPERM) and \
             pthread_mutex_destroy() (EBUSY), the coordinator said neither `closed` nor \
             `failed` within 8 s",
        ));
    };
    let kind = last.get("kind").unwrap_or("none");
    let said = if last.kind == "failed" {
        format!(
            "failed with kind={kind} ({})",
            last.get("error").unwrap_or("")
        )
    } else {
        "said nothing went wrong (`closed`)".to_string()
    };
    if order[0] == 1 {
        return Err(Fail::failed(format!(
            "destroy() called pthread_mutex_destroy() before pthread_cond_destroy() \
             (breakpoints at both): the steps are pthread_cond_destroy(), \
             pthread_mutex_destroy(), munmap(), shm_unlink(), in that order (the condition \
             variable goes first, as it is used with its mutex), and the first error is \
             returned; with the grader making the condition variable's fail with EPERM and the \
             mutex's with EBUSY, destroy() {said}, where the condition variable's EPERM is due"
        )));
    }
    if last.kind != "failed" || kind != "destroy" {
        return Err(Fail::failed(format!(
            "the grader made the coordinator's pthread_cond_destroy() return EPERM and its \
             pthread_mutex_destroy() EBUSY, and destroy() {said}, not kind=destroy with the \
             condition variable's EPERM: a failed pthread destroy is BankError::Destroy, and \
             the first error is the one returned"
        )));
    }
    let doing = "the grader made the coordinator's pthread_cond_destroy() return EPERM and its \
                 pthread_mutex_destroy() EBUSY (called in that order), and destroy() failed \
                 with kind=destroy, but";
    let judged = expect_object(&last, "condition variable", doing)
        .and_then(|()| expect_errno(&last, DESTROY_ERRORS[0], doing));
    if let Err(Fail::Failed(message)) = judged {
        return Err(Fail::failed(format!(
            "{message}; the error returned is the first step's, pthread_cond_destroy()'s (an \
             error kept from each failing step overwrites the first)"
        )));
    }
    judged?;
    Ok(true)
}
