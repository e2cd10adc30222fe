//! `not-recoverable`: a mutex left unrecoverable (its holder died and nobody made it
//! consistent) must make every lock fail with its own error, also a lock already waiting.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::LIGHT_WORK;
use super::create_failures::expect_errno;
use super::lock_calls::LockCalls;
use super::messages::{failure, field, layout_of};
use super::probe::{self, DyingHolder, Place};
use super::robust::{STEP, robust};
use super::segment::{Segment, dev_shm, open_segment};
use super::session::Session;
use super::totals::verify;
use crate::engine::tracer::{Action, Call, Tracer};
use crate::engine::{Fail, Proc, Run, force, inspect};
use ipc_labs_driver::Message;

pub(super) fn not_recoverable(run: &mut Run) -> Result<String, Fail> {
    let mut session = Session::start(run, &[LIGHT_WORK; 2], &[])?;
    robust(&session)?;
    session.coordinator_settled();
    make_unrecoverable(&session.segment)?;
    // A worker that sleeps before its transfer reports is waiting for the mutex to come back.
    let mut sleepers: Vec<(i32, Tracer)> = session
        .workers
        .iter()
        .filter_map(|&worker| {
            let tracer = Tracer::attach(worker, Call::one_of(SLEEPS), Action::Hold).ok()??;
            Some((worker, tracer))
        })
        .collect();
    session.go()?;
    let mut kinds = BTreeMap::new();
    let until = Instant::now() + STEP;
    while kinds.len() < session.workers.len() {
        let asleep = sleepers.iter_mut().find_map(|(worker, tracer)| {
            tracer
                .held_before(Instant::now())
                .ok()
                .filter(|&held| held)
                .map(|_| *worker)
        });
        if let Some(worker) = asleep {
            let call = inspect::call_of(worker, worker)
                .map_or_else(|| "a sleep".to_string(), |(nr, _)| probe::call_name(nr));
            // Their tracers end here, which lets the workers go on.
            drop(sleepers);
            return Err(Fail::failed(format!(
                "the mutex is not recoverable (ENOTRECOVERABLE), and worker pid {worker}, once \
                 released, went to sleep in {call} before its transfer reported anything: it \
                 waits and tries the lock again, which is polling, and for nothing: \
                 ENOTRECOVERABLE is final, no later lock succeeds (only re-initializing the \
                 mutex would change it, which no process may do while others use it); the \
                 first pthread_mutex_lock() that returns ENOTRECOVERABLE is \
                 BankError::NotRecoverable, returned at once"
            )));
        }
        let message = session.next_before(Instant::now() + Duration::from_millis(5))?;
        let Some(message) = message else {
            if Instant::now() < until {
                continue;
            }
            let doing: Vec<String> = session
                .workers
                .iter()
                .map(|&w| format!("pid {w} {}", probe::sleeping(w).describe()))
                .collect();
            return Err(Fail::failed(format!(
                "the mutex is not recoverable (ENOTRECOVERABLE), and {} s after they started \
                 the workers had neither failed nor finished ({}): pthread_mutex_lock() returns \
                 ENOTRECOVERABLE at once; lock() returns BankError::NotRecoverable",
                STEP.as_secs(),
                doing.join(", ")
            )));
        };
        match message.kind.as_str() {
            "failed" => {
                let kind = message.get("kind").unwrap_or("none").to_string();
                let error = message.get("error").unwrap_or("").to_string();
                kinds.insert(field::<i32>(&message, "pid")?, (kind, error));
            }
            "finished" => {
                return Err(Fail::failed(format!(
                    "a worker finished its transfers on a mutex that is not recoverable \
                     (ENOTRECOVERABLE): {}; lock() must fail with BankError::NotRecoverable",
                    went_on_anyway(&session.segment)
                )));
            }
            _ => {}
        }
    }
    drop(sleepers);
    // The run cannot end on its own: the grader ends it and removes the segment itself.
    session.proc.kill_tree();
    let _ = std::fs::remove_file(dev_shm(&session.name));
    for (pid, (kind, error)) in &kinds {
        if kind != "not-recoverable" {
            return Err(Fail::failed(format!(
                "on a mutex that is not recoverable, worker {pid}'s transfer failed with \
                 kind={kind} ({error}), not not-recoverable: pthread_mutex_lock()'s \
                 ENOTRECOVERABLE is BankError::NotRecoverable"
            )));
        }
    }
    let during_wait = if unrecoverable_during_wait(run)? {
        "; made unrecoverable while the coordinator waited to take the lock back, its \
         pthread_cond_wait() failed: kind=wait"
    } else {
        ""
    };
    let before_wait = if unrecoverable_before_wait(run)? {
        "; made unrecoverable before the coordinator's wait, its first lock failed: \
         kind=not-recoverable"
    } else {
        ""
    };
    let usable = if usable_again(run)? {
        "; re-initialized by the grader after the coordinator's lock met ENOTRECOVERABLE, the \
         mutex served the coordinator and the workers forked from it again"
    } else {
        ""
    };
    super::lock_errors::other_lock_errors_are_lock(run)?;
    let other_errors = "; a lock failing with EINVAL, EDEADLK or EAGAIN: kind=lock";
    let failed_repairs = if super::failed_repairs::failed_repairs_give_the_lock_back(run)? {
        "; a repair whose pthread_mutex_consistent() or broadcast failed: its kind, and the \
         lock given back"
    } else {
        ""
    };
    Ok(format!(
        "on a mutex made unrecoverable, all {} workers' transfers failed with \
         kind=not-recoverable{during_wait}{before_wait}{usable}{other_errors}{failed_repairs}",
        kinds.len()
    ))
}

/// Makes the bank's mutex unusable for good: a holder dies, and the grader meets EOWNERDEAD
/// and lets go without pthread_mutex_consistent().
pub(super) fn make_unrecoverable(segment: &Segment) -> Result<(), Fail> {
    probe::DyingHolder::start(segment, false)?.die();
    let first = probe::try_lock(segment, Duration::from_secs(1))?;
    let second = probe::try_lock(segment, Duration::from_secs(1))?;
    if first != libc::EOWNERDEAD || second != libc::ENOTRECOVERABLE {
        return Err(Fail::Grader(format!(
            "making the mutex unrecoverable failed: {} then {}",
            probe::errno_name(first),
            probe::errno_name(second)
        )));
    }
    Ok(())
}

/// `lock()` answers what the mutex in the segment says now: the mutex made unrecoverable while
/// the coordinator waits for `try`, its tried transfer fails with kind=not-recoverable; held
/// right after its `ready` (a tracer: its workers forked, waiting for their `go`), the grader
/// destroys the mutex and initializes it again in place, as a new bank mapped at the same
/// address would hold it; let go, the coordinator's wait and every worker's transfers must go
/// through on it, the totals exact. `false` when the coordinator could not be brought there.
fn usable_again(run: &mut Run) -> Result<bool, Fail> {
    let prepare = |proc: &mut Proc, name: &str| -> Result<Option<Tracer>, Fail> {
        let pid = proc.pid.as_raw();
        force::resume(pid)?;
        let message = proc.recv_any()?;
        if message.kind != "created" {
            return Err(failure(&message));
        }
        make_unrecoverable(&open_segment(
            name,
            layout_of(&message)?,
            proc.pid.as_raw(),
        )?)?;
        // Its next message is its `ready`, after the tried transfer and the forks.
        let tracer = Tracer::attach(pid, Call::any(libc::SYS_sendto), Action::HoldAfter)?;
        proc.send("try", &[])?;
        Ok(tracer)
    };
    let tried = [
        "--try-transfers".to_string(),
        "0,1".into(),
        "--try-when-told".into(),
    ];
    let (mut session, tracer) = Session::start_with(run, &[LIGHT_WORK; 2], &tried, Some(prepare))?;
    let held = match tracer {
        Some(mut tracer) if session.tried == ["not-recoverable"] => tracer
            .held_before(Instant::now() + Duration::from_secs(2))?
            .then_some(tracer),
        _ => None,
    };
    let Some(tracer) = held else {
        // Not traced, or the tried transfer is judged elsewhere (typed-errors).
        session.proc.kill_tree();
        let _ = std::fs::remove_file(dev_shm(&session.name));
        return Ok(false);
    };
    probe::reinitialize_mutex(&session.segment)?;
    let rc = probe::try_lock(&session.segment, Duration::from_secs(1))?;
    if rc != 0 {
        return Err(Fail::Grader(format!(
            "the re-initialized mutex could not be locked: {}",
            probe::errno_name(rc)
        )));
    }
    tracer.release();
    session.go()?;
    let mut seen = Vec::new();
    loop {
        let message = session.next()?;
        match message.kind.as_str() {
            "failed" if message.get("kind") == Some("not-recoverable") => {
                // Only to say more: by now the program may have destroyed the mutex.
                let rc = probe::try_lock(&session.segment, Duration::from_millis(200)).ok();
                let pid = message.get("pid").unwrap_or("?");
                let who = if pid == session.coordinator.to_string() {
                    "the coordinator's wait_all_done()".to_string()
                } else {
                    format!("worker pid {pid}'s transfer")
                };
                let usable = if rc == Some(0) {
                    " and the grader's lock of it still succeeds"
                } else {
                    ""
                };
                return Err(Fail::failed(format!(
                    "the grader made the bank's mutex unrecoverable and the coordinator's tried \
                     transfer met it (kind=not-recoverable, as it should); then, the \
                     coordinator held right after its `ready` (its workers forked, waiting for \
                     their `go`), the grader destroyed the mutex and initialized it again in \
                     place, process-shared and robust, as a new bank mapped at the same address \
                     would hold it (its own lock of it succeeded), and let them go: {who} \
                     failed with kind=not-recoverable ({}), though the mutex was usable{usable}: \
                     that answer did not come from the mutex; lock() calls \
                     pthread_mutex_lock() every time and reports what it returns then, not an \
                     ENOTRECOVERABLE met before (by this process or the one it was forked from)",
                    message.get("error").unwrap_or("")
                )));
            }
            "failed" => return Err(failure(&message)),
            "closed" => {
                seen.push(message);
                break;
            }
            _ => seen.push(message),
        }
    }
    for message in seen {
        session.set_aside(message);
    }
    let outcome = session.finish(0, |_| Ok(()))?;
    verify(&session, &outcome, &[], 0)?;
    Ok(true)
}

/// `pthread_cond_wait()`'s errors other than `EOWNERDEAD` are `BankError::Wait`, its
/// `ENOTRECOVERABLE` too: the grader's thread takes the lock and broadcasts, so that the
/// coordinator wakes and waits to take the lock back; the grader stops it there (a stopped
/// process leaves the futex's queue, so the death wakes nobody), its thread dies holding the
/// lock, the grader meets `EOWNERDEAD` and lets go without `pthread_mutex_consistent()`, and
/// lets the coordinator go: its relock gets `ENOTRECOVERABLE`, and `wait_all_done()` must say
/// `kind=wait`. `false` when the coordinator could not be brought there (judged elsewhere).
fn unrecoverable_during_wait(run: &mut Run) -> Result<bool, Fail> {
    let mut session = Session::start(run, &[LIGHT_WORK], &[])?;
    session.coordinator_settled();
    if session.coordinator_place() != Some(Place::Cond) {
        return Ok(false);
    }
    let holder = DyingHolder::start(&session.segment, true)?;
    let until = Instant::now() + STEP;
    while session.coordinator_place() != Some(Place::Mutex) {
        if Instant::now() > until {
            holder.die();
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    force::hold(session.coordinator)?;
    holder.die();
    let rc = probe::try_lock(&session.segment, Duration::from_secs(1))?;
    force::resume(session.coordinator)?;
    if rc != libc::EOWNERDEAD {
        return Err(Fail::Grader(format!(
            "making the mutex unrecoverable failed: {}",
            probe::errno_name(rc)
        )));
    }
    let until = Instant::now() + STEP;
    let mut said = None;
    while Instant::now() < until {
        match session.next_before(Instant::now() + Duration::from_millis(5))? {
            Some(message) if message.kind == "failed" || message.kind == "done" => {
                said = Some(message);
                break;
            }
            _ => {}
        }
    }
    session.proc.kill_tree();
    let _ = std::fs::remove_file(dev_shm(&session.name));
    let what = "the grader's thread took the bank's mutex and broadcast all_done, the \
                coordinator woke and waited to take the lock back, and the mutex was made \
                unrecoverable meanwhile (its holder died, the next one unlocked without \
                pthread_mutex_consistent()), so the coordinator's pthread_cond_wait() returned \
                ENOTRECOVERABLE";
    let Some(message) = said else {
        return Err(Fail::failed(format!(
            "{what}; {} s later wait_all_done() had not failed (the coordinator {}): \
             pthread_cond_wait()'s errors other than EOWNERDEAD end the wait with \
             BankError::Wait",
            STEP.as_secs(),
            probe::sleeping(session.coordinator).describe()
        )));
    };
    let kind = message.get("kind").unwrap_or("none");
    if message.kind == "done" {
        return Err(Fail::failed(format!(
            "{what}; wait_all_done() returned a snapshot though no worker had started: an \
             error of pthread_cond_wait() other than EOWNERDEAD ends the wait with \
             BankError::Wait"
        )));
    }
    if kind != "wait" {
        return Err(Fail::failed(format!(
            "{what}; wait_all_done() failed with kind={kind} ({}), not wait: its doc says \
             pthread_cond_wait()'s errors other than EOWNERDEAD are BankError::Wait (\
             \"pthread_cond_wait() failed with something other than EOWNERDEAD\"), \
             ENOTRECOVERABLE included; BankError::NotRecoverable is lock()'s",
            message.get("error").unwrap_or("")
        )));
    }
    expect_errno(
        &message,
        libc::ENOTRECOVERABLE,
        &format!("{what}; wait_all_done() failed with kind=wait, as it should, but"),
    )?;
    Ok(true)
}

/// `wait_all_done()` takes the lock as `lock()` does: the mutex made unrecoverable while the
/// coordinator waits for `try`, its first `pthread_mutex_lock()` in `wait_all_done()` gets
/// `ENOTRECOVERABLE`, which is `kind=not-recoverable` (`Wait` is for `pthread_cond_wait()`'s
/// errors). `false` when the coordinator could not be brought there (judged elsewhere).
fn unrecoverable_before_wait(run: &mut Run) -> Result<bool, Fail> {
    let name = run.ipc_name("unrecoverable");
    let mut proc = run.spawn_stopped(&[
        "--name",
        name.as_str(),
        "--work",
        "1",
        "--try-transfers",
        "0,1",
        "--try-when-told",
    ])?;
    let coordinator = proc.pid.as_raw().to_string();
    force::resume(proc.pid.as_raw())?;
    let mut locks = None;
    let said = (|| -> Result<Option<Message>, Fail> {
        let message = proc.recv_any()?;
        if message.kind != "created" {
            return Ok(None);
        }
        let layout = layout_of(&message)?;
        make_unrecoverable(&open_segment(&name, layout, proc.pid.as_raw())?)?;
        let mutex = probe::mappings(proc.pid.as_raw(), &name)
            .into_iter()
            .find(|m| m.offset == 0)
            .map(|m| m.start + layout.mutex_at as u64);
        let counting = match mutex {
            Some(mutex) => LockCalls::start_until_fork(proc.pid.as_raw(), mutex)?,
            None => None,
        };
        proc.send("try", &[])?;
        let until = Instant::now() + STEP;
        if let Some(counting) = counting {
            // The tried transfer is made before the workers are forked.
            locks = counting.until_fork(until)?;
        }
        while let Some(message) = proc.recv_before(until)? {
            let from_coordinator = message.get("pid") == Some(coordinator.as_str());
            match message.kind.as_str() {
                "failed" | "done" if from_coordinator => return Ok(Some(message)),
                _ => {}
            }
        }
        Ok(None)
    })();
    // The workers wait for a `go` that never comes: the grader ends the run.
    proc.kill_tree();
    let _ = std::fs::remove_file(dev_shm(&name));
    let Some(message) = said? else {
        return Ok(false);
    };
    if let Some(calls) = locks
        && calls > 1
    {
        return Err(Fail::failed(format!(
            "the grader made the bank's mutex unrecoverable (its holder died, the next one \
             unlocked without pthread_mutex_consistent()), and the coordinator's one tried \
             transfer called pthread_mutex_lock() or _trylock() on it {calls} times (a \
             breakpoint at each) before it reported: lock() tries again after \
             ENOTRECOVERABLE, which is final (no later lock succeeds, nobody is still \
             recovering the mutex); the first ENOTRECOVERABLE is BankError::NotRecoverable, \
             returned at once"
        )));
    }
    let kind = message.get("kind").unwrap_or("none");
    if message.kind == "failed" && kind != "not-recoverable" {
        return Err(Fail::failed(format!(
            "the grader made the bank's mutex unrecoverable before the coordinator's wait \
             (its holder died, the next one unlocked without pthread_mutex_consistent()), so \
             the first pthread_mutex_lock() of wait_all_done() returned ENOTRECOVERABLE: \
             wait_all_done() failed with kind={kind} ({}), not not-recoverable: it takes the \
             lock as lock() does, whose ENOTRECOVERABLE is BankError::NotRecoverable; \
             BankError::Wait is for pthread_cond_wait()'s errors",
            message.get("error").unwrap_or("")
        )));
    }
    Ok(message.kind == "failed")
}

/// The calls that put a thread to sleep for a while.
const SLEEPS: &[i64] = &[libc::SYS_nanosleep, libc::SYS_clock_nanosleep];

/// How a transfer went through on a mutex the grader had left unrecoverable, from what a lock
/// of the mutex in the segment gives now: still `ENOTRECOVERABLE` (the transfer never took it)
/// or usable again (it was re-initialized).
pub(super) fn went_on_anyway(segment: &super::segment::Segment) -> &'static str {
    match probe::try_lock(segment, Duration::from_millis(200)) {
        Ok(libc::ENOTRECOVERABLE) => {
            "the mutex in the segment is still unrecoverable (the grader's lock of it still \
             gets ENOTRECOVERABLE), so the transfer went on without holding it"
        }
        // A holder that died: only a live robust mutex says EOWNERDEAD, never an unrecoverable
        // one.
        Ok(0 | libc::ETIMEDOUT | libc::EOWNERDEAD) => {
            "the mutex in the segment is usable again (the grader could lock it, someone held \
             it, or its last holder had died holding it), so it was re-initialized (pthread_mutex_init() on a mutex other \
             processes use) to go on: an unrecoverable mutex stays unrecoverable, and every \
             lock of it fails"
        }
        _ => {
            "the grader could not tell from the mutex in the segment whether the transfer \
             took it: it neither stayed unrecoverable nor became usable again"
        }
    }
}
