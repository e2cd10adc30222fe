//! How `destroy()` ends the bank: both pthread objects destroyed by their calls, the bank
//! unmapped and its name unlinked, every step tried when one fails, the first error returned.

use std::time::{Duration, Instant};

use super::LIGHT_WORK;
use super::destroy_errors::unlink_fails_with;
use super::probe;
use super::segment::dev_shm;
use super::session::Session;
use super::totals::verify;
use crate::engine::tracer::{Breakpoint, Call, Step, Tracer};
use crate::engine::{Fail, Run};

pub(super) fn destroyed_and_removed(run: &mut Run) -> Result<String, Fail> {
    let mut session = Session::start(run, &[LIGHT_WORK; 4], &[])?;
    let destroys = super::attributes::Destroys::watch(&session)?;
    session.go()?;
    let outcome = session.finish(0, |_| Ok(()))?;
    verify(&session, &outcome, &[], 0)?;
    if dev_shm(&session.name).exists() {
        return Err(Fail::failed(format!(
            "{} is still there after the coordinator exited: remove the segment's name with \
             shm_unlink()",
            dev_shm(&session.name).display()
        )));
    }
    let wrefs = session.segment.cond_wrefs()?;
    if wrefs & 4 == 0 {
        return Err(Fail::failed(
            "the condition variable was not destroyed: call pthread_cond_destroy() once the \
             workers are gone",
        ));
    }
    let kind = session.segment.mutex_kind()?;
    if kind != -1 {
        return Err(Fail::failed(
            "the mutex was not destroyed: call pthread_mutex_destroy() once the workers are gone",
        ));
    }
    if let Some(destroys) = destroys {
        destroys.judge()?;
    }
    let (mapped, fds) = &outcome.kept;
    if *mapped > 0 || !fds.is_empty() {
        return Err(Fail::failed(format!(
            "after destroy(), the coordinator still {}: destroy() unmaps the bank (munmap()) \
             and nothing else keeps the segment",
            if *mapped > 0 {
                "maps the segment".to_string()
            } else {
                format!("holds the segment open as descriptor {fds:?}")
            }
        )));
    }
    let forced = if forced_munmap_failure(run)? {
        "; with its munmap() and then its shm_unlink() failed by the grader, destroy() still \
         tried the unlink and said kind=munmap (the first error)"
    } else {
        ""
    };
    let unlink_failed = if forced_unlink_failure(run)? {
        "; with its shm_unlink() alone failed by the grader, destroy() said kind=shm-unlink"
    } else {
        ""
    };
    let destroy_failed = if forced_destroy_failure(run, 0)? & forced_destroy_failure(run, 1)? {
        "; with its pthread_cond_destroy(), then (in another run) its pthread_mutex_destroy() \
         failed by the grader, destroy() still made the later steps (the mutex destroyed, \
         unmapped, unlinked) and said kind=destroy"
    } else {
        ""
    };
    let at_exit = if super::name_after_exit::name_left_alone_at_exit(run)? {
        "; the name left alone by the program's exit, after destroy() and after a failed \
         shm_unlink()"
    } else {
        "; the name left alone by the program's exit after destroy()"
    };
    Ok(format!(
        "condition variable and mutex destroyed, segment unmapped and unlinked{forced}\
         {unlink_failed}{destroy_failed}{at_exit}"
    ))
}

/// The C library's calls that destroy the condition variable and the mutex, in that order.
pub(super) const DESTROYS: [&std::ffi::CStr; 2] =
    [c"pthread_cond_destroy", c"pthread_mutex_destroy"];

/// `destroy()` goes on to the next step when one fails and returns the first error: the
/// tracer fails the coordinator's `munmap()` of the bank (`EINVAL`), then its `shm_unlink()` of
/// the name (`EACCES`): the unlink must be tried all the same, and `kind=munmap` (the first
/// error, not the last) reported. `false` when the grader may not trace the coordinator, or it
/// made no `munmap()` of the bank's mapping (judged above).
fn forced_munmap_failure(run: &mut Run) -> Result<bool, Fail> {
    let mut session = Session::start(run, &[LIGHT_WORK; 2], &[])?;
    let Some(map) = probe::mappings(session.coordinator, &session.name)
        .into_iter()
        .find(|m| m.offset == 0)
    else {
        return Ok(false);
    };
    let unmapping = Call::arg_is(libc::SYS_munmap, 0, map.start);
    // The path a glibc shm_unlink() unlinks, kept for the life of the grader (a few bytes a run).
    let unlinked: &'static str = dev_shm(&session.name).display().to_string().leak();
    let steps = [
        (unmapping, Step::Fail(libc::EINVAL)),
        (Call::naming(unlinked), Step::Fail(libc::EACCES)),
    ];
    let Some(mut tracer) = Tracer::in_turn(session.coordinator, steps)? else {
        return Ok(false);
    };
    session.go()?;
    let last = last_word(&mut session)?;
    let failed = tracer.failed_the_call()?;
    let unlink_failed = failed && tracer.failed_the_call()?;
    drop(tracer);
    let Some(last) = last else {
        return Err(Fail::failed(
            "with the grader failing the coordinator's munmap() of the bank, the coordinator \
             said neither `closed` nor `failed` within 8 s",
        ));
    };
    if !failed {
        return Ok(false);
    }
    let kind = last.get("kind").unwrap_or("none").to_string();
    if unlink_failed {
        let kept = name_kept_after_failed_unlink(&session.name, "munmap() (EINVAL) and then its ");
        dismiss(&mut session);
        kept?;
        if last.kind != "failed" || kind != "munmap" {
            return Err(Fail::failed(format!(
                "the grader failed the coordinator's munmap() of the bank in destroy() \
                 (EINVAL) and then its shm_unlink() of the name (EACCES), and destroy() {}, \
                 not kind=munmap: it returns the first error, munmap()'s BankError::Unmap, \
                 not {}",
                if last.kind == "failed" {
                    format!("failed with kind={kind}")
                } else {
                    "said nothing went wrong (`closed`)".to_string()
                },
                if kind == "shm-unlink" {
                    "the last one (an error kept from each failing step overwrites the first)"
                } else {
                    "another"
                }
            )));
        }
        return Ok(true);
    }
    let path = dev_shm(&session.name);
    let left = path.exists();
    let _ = session.proc.send("exit", &[]);
    let _ = session.proc.wait();
    if left {
        let _ = std::fs::remove_file(&path);
        return Err(Fail::failed(format!(
            "the grader failed the coordinator's munmap() of the bank in destroy() (EINVAL), \
             and {} is still there: destroy() stopped at the failed step; it goes on to the \
             next step when one fails (shm_unlink() the name all the same) and returns the \
             first error",
            path.display()
        )));
    }
    // The unlink the tracer waited for after the failed munmap() never came, yet the name is
    // gone: it went before.
    Err(Fail::failed(format!(
        "the grader failed the coordinator's munmap() of the bank in destroy() (EINVAL) and \
         then waited for its shm_unlink() of {}: none came after the munmap(), yet the name is \
         gone (destroy() said {}): destroy() unlinked the name before it unmapped the bank (or \
         removed it another way than shm_unlink() of that path); the steps go in order, \
         pthread_cond_destroy(), pthread_mutex_destroy(), munmap(), shm_unlink(), each tried \
         when one before it failed, and the first error returned",
        path.display(),
        if last.kind == "failed" {
            format!("kind={kind}")
        } else {
            "`closed`".to_string()
        }
    )))
}

/// The coordinator's `closed` or `failed` after its workers were let go, or `None` if it said
/// neither within 8 s.
pub(super) fn last_word(session: &mut Session) -> Result<Option<ipc_labs_driver::Message>, Fail> {
    let until = Instant::now() + Duration::from_secs(8);
    loop {
        match session.next_before(until)? {
            Some(m) if m.kind == "failed" || m.kind == "closed" => return Ok(Some(m)),
            Some(_) => {}
            None => return Ok(None),
        }
    }
}

/// Each step's failure is its own error: the tracer fails the coordinator's `shm_unlink()` of
/// the name alone (`EACCES`; its `munmap()` goes through), and `destroy()` must say
/// `kind=shm-unlink`. `false` when the grader may not trace the coordinator, or it made no call
/// naming the segment (judged above).
fn forced_unlink_failure(run: &mut Run) -> Result<bool, Fail> {
    unlink_fails_with(run, libc::EACCES)
}

/// `destroy()` goes on to the next step when one fails, and returns the first error: the grader
/// makes the coordinator's `DESTROYS[which]` (`pthread_cond_destroy()` or
/// `pthread_mutex_destroy()`) return `EPERM` at once (at a breakpoint on that function; glibc's
/// never fail on these objects, so only the grader gives that error), and watches the other
/// with a second one. destroy() must still make every later step (destroy the mutex after a
/// failed condition variable, unmap the bank, unlink the name), and say `kind=destroy`. `false`
/// when the grader may not trace the coordinator, or it made no such call (judged above).
fn forced_destroy_failure(run: &mut Run, which: usize) -> Result<bool, Fail> {
    let (function, object) = if which == 0 {
        ("pthread_cond_destroy() of all_done", "condition variable")
    } else {
        ("pthread_mutex_destroy() of the lock", "mutex")
    };
    let mut session = Session::start(run, &[LIGHT_WORK; 2], &[])?;
    let pid = session.coordinator;
    let Some(mut tracer) = Tracer::break_at_functions(pid, &DESTROYS)? else {
        return Ok(false);
    };
    session.go()?;
    let until = Instant::now() + Duration::from_secs(8);
    let mut failed = false;
    let mut mutex_destroyed = false;
    let mut left = (false, false);
    let last = loop {
        match tracer.next_break(Instant::now() + Duration::from_millis(5))? {
            Some(Breakpoint::At(_)) => {
                if tracer.last_break() == which && !failed {
                    failed = true;
                    tracer.return_now(i64::from(libc::EPERM));
                } else {
                    mutex_destroyed |= tracer.last_break() == 1;
                    tracer.go_on();
                }
                continue;
            }
            Some(Breakpoint::Armed) | None => {}
            Some(_) => break None,
        }
        match session.next_before(Instant::now())? {
            Some(m) if m.kind == "failed" || m.kind == "closed" => {
                left = (
                    dev_shm(&session.name).exists(),
                    !probe::mappings(pid, &session.name).is_empty(),
                );
                break Some(m);
            }
            Some(_) => {}
            None if Instant::now() > until => break None,
            None => {}
        }
    };
    drop(tracer);
    dismiss(&mut session);
    if !failed {
        return Ok(false);
    }
    let Some(last) = last else {
        return Err(Fail::failed(format!(
            "with the grader failing the coordinator's {function} (EPERM), the coordinator \
             said neither `closed` nor `failed` within 8 s"
        )));
    };
    let skipped: Vec<&str> = [
        (which == 0 && !mutex_destroyed).then_some("never called pthread_mutex_destroy()"),
        left.1.then_some("still maps the bank (no munmap())"),
        left.0
            .then_some("left the name in /dev/shm (no shm_unlink())"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !skipped.is_empty() {
        return Err(Fail::failed(format!(
            "the grader made the coordinator's {function} return EPERM (at a breakpoint on \
             that function), and destroy() then {}: it stopped at the failed step; destroy() \
             goes on to the next step when one fails (destroy the mutex, munmap(), \
             shm_unlink() all the same, whichever step failed) and returns the first error",
            skipped.join(", ")
        )));
    }
    let kind = last.get("kind").unwrap_or("none");
    if last.kind != "failed" || kind != "destroy" {
        return Err(Fail::failed(format!(
            "the grader made the coordinator's {function} return EPERM, and destroy() {}, not \
             kind=destroy: a failed pthread_cond_destroy() or pthread_mutex_destroy() is \
             BankError::Destroy, and the first error is the one returned",
            if last.kind == "failed" {
                format!("failed with kind={kind}")
            } else {
                "said nothing went wrong (`closed`)".to_string()
            }
        )));
    }
    super::create_failures::expect_object(
        &last,
        object,
        &format!(
            "the grader made the coordinator's {function} return EPERM, and destroy() failed \
             with kind=destroy, as it should, but"
        ),
    )?;
    Ok(true)
}

/// A name is removed by `shm_unlink()` alone: once the grader failed the coordinator's
/// `shm_unlink()` (after `before`, the calls it failed first), the name must still be in
/// `/dev/shm`, however `destroy()` ended.
pub(super) fn name_kept_after_failed_unlink(name: &str, before: &str) -> Result<(), Fail> {
    if dev_shm(name).exists() {
        return Ok(());
    }
    Err(Fail::failed(format!(
        "the grader failed the coordinator's {before}shm_unlink() of the name in destroy() \
         (EACCES), and yet {name} was gone from /dev/shm when destroy() returned: another call \
         removed it, an unlink() or std::fs::remove_file() of /dev/shm{name} as a fallback (or \
         a shm_unlink() tried again); the name is removed by shm_unlink() alone, and when that \
         fails the name stays and destroy() reports BankError::Unlink"
    )))
}

/// Ends `session` whatever state its check left it in: the coordinator told to exit and
/// reaped, the segment's name removed if the program left it.
pub(super) fn dismiss(session: &mut Session) {
    let _ = session.proc.send("exit", &[]);
    let _ = session.proc.wait();
    let _ = std::fs::remove_file(dev_shm(&session.name));
}
