//! The coordinator's wait: asleep on the condition variable in the segment while there is
//! nothing to do, and over only once the last worker has finished.

use super::probe::{self, Place, Sleep};
use super::session::{Session, role_of, verify};
use crate::engine::waiting::{self, WaitRules};
use crate::engine::{Fail, Run, inspect};

/// Transfers per worker where only the waiting is judged.
const LIGHT_WORK: u64 = 1000;
/// The work of the longest worker in `waits-for-last-worker`.
const LONGEST_WORK: u64 = 150_000;

pub(super) fn coordinator_sleeps(run: &mut Run) -> Result<String, Fail> {
    let mut session = Session::start(run, &[LIGHT_WORK; 4], &[])?;
    // The workers wait for `go`: the coordinator has nothing to do but wait for them.
    let role = role_of(session.coordinator);
    let advice = "wait_all_done() must sleep in pthread_cond_wait() on all_done until a worker's \
                  broadcast wakes it";
    waiting::expect_blocked(&[session.coordinator], &role, WaitRules::default(), advice)
        .map_err(super::counting::never_seen_blocked)?;
    // A few looks: one that is never asleep spins, even if the machine's load kept its share
    // of the CPU below what the watch calls spinning.
    let mut sleep = probe::sleeping(session.coordinator);
    for _ in 0..20 {
        if sleep != Sleep::Awake {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
        sleep = probe::sleeping(session.coordinator);
    }
    let place = match sleep {
        Sleep::Futex { address } => probe::place(
            session.coordinator,
            &session.name,
            &session.segment.layout,
            address,
        ),
        Sleep::Call(nr) => {
            return Err(Fail::failed(format!(
                "while no worker had started, the coordinator waited in {} instead of on the \
                 condition variable: {advice}, the only wake-up a worker's finish() gives",
                probe::call_name(nr)
            )));
        }
        Sleep::Awake => {
            return Err(Fail::failed(format!(
                "while no worker had started, the coordinator was on the CPU whenever the \
                 grader looked, never asleep: it spins instead of sleeping; {advice}"
            )));
        }
    };
    if place != Place::Cond {
        return Err(Fail::failed(format!(
            "while no worker had started, the coordinator slept on {} instead of the condition \
             variable all_done in the segment: {advice}",
            place.describe()
        )));
    }
    // The program is single-threaded: another thread of the coordinator is a second way of
    // being woken (a child's exit, a timer), not the workers' broadcasts.
    if let Some(view) = inspect::view(session.coordinator) {
        let others: Vec<String> = view
            .threads
            .iter()
            .filter(|t| t.tid != session.coordinator)
            .map(|t| match (t.state, t.syscall) {
                ('S' | 'D', Some((nr, _))) => {
                    format!("thread {} sleeps in {}", t.tid, probe::call_name(nr))
                }
                _ => format!("thread {} runs", t.tid),
            })
            .collect();
        if !others.is_empty() {
            return Err(Fail::failed(format!(
                "while no worker had started, the coordinator had threads besides the one \
                 waiting ({}): the only wake-up of its wait is the broadcast of all_done that \
                 each worker's finish() makes (finished += 1, then pthread_cond_broadcast(), \
                 every time), not a worker's exit (SIGCHLD) or a timer; the bank starts no \
                 thread",
                others.join(", ")
            )));
        }
    }
    // A wait with a timeout wakes up by itself to look again: a poll, whatever its period.
    if probe::futex_has_timeout(session.coordinator) == Some(true) {
        return Err(Fail::failed(format!(
            "while no worker had started, the coordinator slept on the condition variable with \
             a timeout (pthread_cond_timedwait()): it wakes up to look again when nothing has \
             changed, which is polling; {advice}, with no timeout"
        )));
    }
    session.go()?;
    let outcome = session.finish(0, |_| Ok(()))?;
    verify(&session, &outcome, &[], 0)?;
    Ok(
        "while the workers were held, the coordinator slept on the condition variable in the \
         segment, without waking up"
            .into(),
    )
}

pub(super) fn waits_for_last_worker(run: &mut Run) -> Result<String, Fail> {
    // Workers with 1, 2, 3 and 4 times as much work finish one after another; each finish wakes
    // the coordinator, which must go back to sleep until the last one.
    let work = [
        LONGEST_WORK / 4,
        LONGEST_WORK / 2,
        3 * LONGEST_WORK / 4,
        LONGEST_WORK,
    ];
    let mut session = Session::start(run, &work, &[])?;
    let place = match session.coordinator_settled() {
        Sleep::Futex { .. } => session.coordinator_place(),
        _ => None,
    };
    if place != Some(Place::Cond) {
        run.note(format!(
            "the coordinator was not seen waiting on the condition variable: {place:?}"
        ));
    }
    // Each finish but the last wakes the coordinator; it looks before the others go on.
    session.settle_finishes = true;
    session.go()?;
    let outcome = session.finish(0, |_| Ok(()))?;
    let transfers = verify(&session, &outcome, &[], 0)?;
    Ok(format!(
        "the coordinator returned after all 4 workers finished ({transfers} transfers)"
    ))
}
