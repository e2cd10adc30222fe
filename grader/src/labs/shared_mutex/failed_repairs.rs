//! A repair that fails: after `EOWNERDEAD`, `recover()`'s broadcast or
//! `pthread_mutex_consistent()` made to fail at a breakpoint. `lock()` returns that error with
//! the mutex given back (unlocked without `pthread_mutex_consistent()`, so it becomes
//! `ENOTRECOVERABLE` for every process), never kept by a process that goes on without it.

use std::time::{Duration, Instant};

use super::errors::first_message;
use super::messages::{failure, layout_of};
use super::probe::DyingHolder;
use super::segment::{Segment, open_segment, told_transfer};
use crate::engine::tracer::{Breakpoint, Tracer};
use crate::engine::{Fail, Proc, Run};

/// glibc's `FUTEX_TID_MASK`: the holder's thread id in the lock word.
const TID_MASK: i32 = 0x3fff_ffff;

/// A repair call made to fail, and the kind its error is.
struct FailedStep {
    function: &'static std::ffi::CStr,
    kind: &'static str,
    /// Whether the dead holder leaves an active journal (so that `recover()` broadcasts).
    journal: bool,
}

const STEPS: [FailedStep; 2] = [
    FailedStep {
        function: c"pthread_mutex_consistent",
        kind: "consistent",
        journal: false,
    },
    FailedStep {
        function: c"pthread_cond_broadcast",
        kind: "broadcast",
        journal: true,
    },
];

/// Each repair step in turn (a run each): a thread of the grader dies holding the mutex
/// (after writing an active journal, for the broadcast), the coordinator's tried transfer
/// meets `EOWNERDEAD`, and its first call of the step's function returns `EINVAL` at once. The
/// transfer must fail with the step's kind, and once the coordinator says `ready` (its workers
/// forked) it must not hold the mutex. `Ok(false)` when the call could not be failed.
pub(super) fn failed_repairs_give_the_lock_back(run: &mut Run) -> Result<bool, Fail> {
    let mut judged = true;
    for step in &STEPS {
        let seen = told_transfer(run, 1, (0, 1, 1), |_, proc, name| {
            fail_step(proc, name, step)
        })?;
        let Some(Repaired {
            tried,
            lock_word,
            coordinator,
        }) = seen
        else {
            judged = false;
            continue;
        };
        let coordinator_holds = lock_word & TID_MASK == coordinator;
        if !coordinator_holds && tried == step.kind {
            continue;
        }
        let function = step.function.to_string_lossy();
        let after = if step.journal {
            " (with an active journal left by the dead holder, recover()'s broadcast)"
        } else {
            ""
        };
        let held = if coordinator_holds {
            format!(
                "once the coordinator had said `ready` (its workers forked), the bank's mutex \
                 was still held by its own thread (the lock word holds its thread id {}): \
                 lock() returned the error and kept the lock, so every other process waits \
                 for it as long as the coordinator lives; a failed repair gives the lock back \
                 (the guard built before the repair, so that the error drops it: the mutex, \
                 unlocked without pthread_mutex_consistent(), becomes ENOTRECOVERABLE and \
                 every later lock says so)",
                coordinator
            )
        } else {
            String::new()
        };
        let kind = if tried == step.kind {
            String::new()
        } else {
            format!(
                "its tried transfer ended with `{tried}`, not kind={} (the error of the call \
                 that failed){}",
                step.kind,
                if held.is_empty() { "" } else { "; " }
            )
        };
        return Err(Fail::failed(format!(
            "a holder of the bank's mutex died; the coordinator's tried transfer met EOWNERDEAD, \
             and the grader made its {function}(){after} return EINVAL (a breakpoint at that \
             function): {kind}{held}"
        )));
    }
    Ok(judged)
}

/// What a run of [`fail_step`] saw once the coordinator said `ready`.
struct Repaired {
    /// How its tried transfer ended: `ok` or a kind.
    tried: String,
    /// The mutex's lock word then.
    lock_word: i32,
    /// The coordinator's pid (its thread id).
    coordinator: i32,
}

/// Runs one [`FailedStep`]. `None` if the call was never made to fail.
fn fail_step(proc: &mut Proc, name: &str, step: &FailedStep) -> Result<Option<Repaired>, Fail> {
    let message = first_message(proc)?;
    if message.kind != "created" {
        return Err(failure(&message));
    }
    let coordinator = proc.pid.as_raw();
    let segment = open_segment(name, layout_of(&message)?, coordinator)?;
    let holder = DyingHolder::start(&segment, false)?;
    if step.journal {
        begin_transfer(&segment)?;
    }
    holder.die();
    let Some(mut breaking) = Tracer::break_at_function(coordinator, step.function)? else {
        return Ok(None);
    };
    proc.send("try", &[])?;
    let until = Instant::now() + Duration::from_secs(5);
    let mut failed = false;
    let ready = loop {
        match breaking.next_break(Instant::now() + Duration::from_millis(5))? {
            Some(Breakpoint::At(_)) if !failed => {
                failed = true;
                breaking.return_now(i64::from(libc::EINVAL));
                continue;
            }
            Some(Breakpoint::At(_)) => {
                breaking.go_on();
                continue;
            }
            Some(Breakpoint::Lost | Breakpoint::Unavailable) => return Ok(None),
            Some(Breakpoint::Armed) | None => {}
        }
        if let Some(message) = proc.recv_before(Instant::now())? {
            match (message.kind.as_str(), message.get("role")) {
                ("ready", Some("coordinator")) => break message,
                ("failed", _) => return Err(failure(&message)),
                _ => {}
            }
        }
        if Instant::now() > until {
            return Ok(None);
        }
    };
    drop(breaking);
    if !failed {
        return Ok(None);
    }
    let tried = ready.get("tried").unwrap_or("").to_string();
    let lock_word = i32::from_ne_bytes(segment.read(segment.layout.mutex_at)?);
    Ok(Some(Repaired {
        tried,
        lock_word,
        coordinator,
    }))
}

/// Writes, as the grader's holder, an active journal of a transfer 0 → 1 over the bank as it
/// is: the dead holder was mid-transfer, so `recover()` undoes it and broadcasts.
fn begin_transfer(segment: &Segment) -> Result<(), Fail> {
    let (count, balances) = segment.bank()?;
    let at = segment.layout.journal_at;
    segment.write_at(at + 4, &0u32.to_ne_bytes())?;
    segment.write_at(at + 8, &1u32.to_ne_bytes())?;
    segment.write_at(at + 16, &balances[0].to_ne_bytes())?;
    segment.write_at(at + 24, &balances[1].to_ne_bytes())?;
    segment.write_at(at + 32, &count.to_ne_bytes())?;
    segment.write_at(at, &1u32.to_ne_bytes())?;
    Ok(())
}
