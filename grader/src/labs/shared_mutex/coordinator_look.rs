//! The pause in which the coordinator takes in a wake-up before the workers go on, and the dead holders the grader counts in the bank itself.

use std::time::{Duration, Instant};

use super::last_finish::LastFinish;
use super::probe::{self, Place, Sleep};
use super::segment::Segment;
use super::session::Session;
use super::sleeping::AsleepOnCond;
use super::snapshot::FinalUnlock;
use crate::engine::{Fail, force};

/// Makes the coordinator take in a wake-up before the `others` go on: with the bank's mutex
/// held by the grader, the others are stopped; the grader lets go and wakes whoever waits for
/// the mutex (glibc's own wake-up may go to a stopped worker); once the coordinator has looked
/// (it sleeps on the condition variable again, or has left its wait), the others go on.
/// Otherwise the coordinator, woken while workers hammer the mutex, may get it only once they
/// have all finished, and see the end without needing their broadcasts. A `held_back` worker
/// stays stopped until it is the only one left; then, once the coordinator sleeps on the
/// condition variable again, [`FinalUnlock`] is armed before it goes on. The `waiting` workers
/// stay stopped too: their turn comes after a later finish. With `queue_waiter`,
/// two threads of the grader then wait on the condition variable too, until the next finish.
pub(super) fn let_coordinator_look(
    segment: &Segment,
    coordinator: i32,
    name: &str,
    others: &[i32],
    (held_back, waiting): (Option<i32>, &[i32]),
    queue_waiter: bool,
) -> Result<Looked, Fail> {
    let arm_final_unlock = held_back.is_some() && others.len() == 1;
    let mut looked = Looked {
        asleep: None,
        final_unlock: None,
        planted_dead: 0,
        waiters: None,
        last_finish: None,
    };
    if !probe::can_hold(segment) {
        // Other checks judge that mutex; here the run just goes on, the held-back worker too.
        if let Some(worker) = held_back {
            force::resume(worker)?;
        }
        return Ok(looked);
    }
    let held = probe::hold(segment, Duration::from_secs(2))?;
    for &worker in others {
        let _ = force::hold(worker);
    }
    drop(held);
    probe::wake_mutex_waiters(segment);
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        let looking = match probe::sleeping(coordinator) {
            Sleep::Futex { address } => {
                probe::place(coordinator, name, &segment.layout, address) == Place::Mutex
            }
            Sleep::Call(_) => false,
            Sleep::Awake => true,
        };
        if !looking {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    looked.asleep = AsleepOnCond::observe(segment, coordinator, name);
    if queue_waiter || arm_final_unlock {
        // On a busy machine the coordinator, woken, may not be back on the condition variable
        // yet: what is armed next needs it there.
        let settle_until = Instant::now() + Duration::from_secs(2);
        while looked.asleep.is_none() && Instant::now() < settle_until {
            std::thread::sleep(Duration::from_millis(1));
            looked.asleep = AsleepOnCond::observe(segment, coordinator, name);
        }
    }
    super::later_sleeps::untimed_after_finish(segment, coordinator, name)?;
    // Not before the last finish: the coordinator is held at its unlock then, and the waiters
    // could not take the mutex back.
    let not_last = segment
        .counts()
        .is_ok_and(|c| c.finished + c.dead + 2 <= c.workers);
    if queue_waiter && looked.asleep.is_some() && !arm_final_unlock && not_last {
        looked.waiters = probe::CondWaiters::start(segment, 2);
    }
    if arm_final_unlock {
        let one_left = segment
            .counts()
            .is_ok_and(|c| c.finished + c.dead + 1 == c.workers);
        if looked.asleep.is_some() && one_left {
            looked.final_unlock = FinalUnlock::arm(segment, coordinator, name);
            if looked.final_unlock.is_some() {
                looked.planted_dead = plant_dead(segment)?;
            }
            if let Some(worker) = held_back {
                looked.last_finish = LastFinish::watch(segment, worker, name);
            }
        }
    }
    for &worker in others {
        if (arm_final_unlock || Some(worker) != held_back) && !waiting.contains(&worker) {
            let _ = force::resume(worker);
        }
    }
    Ok(looked)
}

/// What [`let_coordinator_look`] saw and armed.
pub(super) struct Looked {
    /// The coordinator asleep on the condition variable while the others were stopped.
    pub asleep: Option<AsleepOnCond>,
    pub final_unlock: Option<FinalUnlock>,
    /// The dead holders the grader counted itself ([`plant_dead`]).
    pub planted_dead: u32,
    /// Threads of the grader queued on the condition variable beside the coordinator: the
    /// next finish must wake them all.
    pub waiters: Option<probe::CondWaiters>,
    /// The last worker's store to `finished`, watched.
    pub last_finish: Option<LastFinish>,
}

/// Counts one dead holder in the bank (`dead += 1`, under the mutex, with no broadcast) while
/// the coordinator sleeps and one worker is left: at the end `finished + dead` is one more than
/// `workers`, so that a snapshot whose `dead` is computed (`workers - finished`) instead of read
/// from the bank shows. The coordinator, asleep on the condition variable, is not woken by it.
/// As one more holder of the mutex: one more worker in `Bank::workers`, counted dead at once
/// (so `finished + dead` still reaches `workers` with the last real finish). A coordinator that
/// waits for, and reports, a count of its own instead of the bank's ends a finish early and
/// reports the old count.
pub(super) fn plant_dead_worker(session: &mut Session) -> Result<(), Fail> {
    let segment = &session.segment;
    let held = probe::hold(segment, Duration::from_secs(2))?;
    let counts = segment.counts()?;
    segment.write_at(
        segment.layout.counts_at,
        &(counts.workers + 1).to_ne_bytes(),
    )?;
    segment.write_at(
        segment.layout.counts_at + 8,
        &(counts.dead + 1).to_ne_bytes(),
    )?;
    drop(held);
    session.planted_dead += 1;
    session.planted_workers += 1;
    Ok(())
}

fn plant_dead(segment: &Segment) -> Result<u32, Fail> {
    let held = probe::hold(segment, Duration::from_secs(2))?;
    let at = segment.layout.counts_at + 8;
    let dead = segment.counts()?.dead;
    segment.write_at(at, &(dead + 1).to_ne_bytes())?;
    drop(held);
    Ok(1)
}
