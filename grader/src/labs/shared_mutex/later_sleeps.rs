//! The coordinator's sleeps after its first: each wake-up it gets (a finish that is not the
//! last) sends it back to sleep on `all_done` as before, with no timeout.

use std::time::{Duration, Instant};

use super::probe::{self, Place, Sleep};
use super::segment::Segment;
use crate::engine::Fail;

/// With the other workers stopped after a finish that is not the last, the coordinator, once
/// back asleep on the condition variable, must wait with no timeout (its `futex()` call's
/// fourth argument): a timed wait turned on after some event wakes up by itself from then on,
/// a poll whatever its period. Not judged if it is not seen back on the condition variable.
pub(super) fn untimed_after_finish(
    segment: &Segment,
    coordinator: i32,
    name: &str,
) -> Result<(), Fail> {
    let until = Instant::now() + Duration::from_millis(500);
    let on_cond = || match probe::sleeping(coordinator) {
        Sleep::Futex { address } => {
            probe::place(coordinator, name, &segment.layout, address) == Place::Cond
        }
        _ => false,
    };
    while !on_cond() {
        if Instant::now() > until {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    // Looked at a few times: a wait woken by its deadline is back with one soon.
    let timed = (0..3).any(|_| {
        std::thread::sleep(Duration::from_millis(2));
        on_cond() && probe::futex_has_timeout(coordinator) == Some(true)
    });
    if !timed {
        return Ok(());
    }
    let counts = segment.counts()?;
    Err(Fail::failed(format!(
        "once a worker had finished (the bank counts finished = {}, dead = {} of {} workers) \
         and woken it, the coordinator went back to sleep on all_done with a timeout (its futex() wait has a deadline: \
         pthread_cond_timedwait()): from then on it wakes up to look again when nothing has \
         changed, which is polling, whatever its period, even one turned on only after the \
         first finish; every sleep of wait_all_done() is pthread_cond_wait(), woken only by \
         the workers' broadcasts",
        counts.finished, counts.dead, counts.workers
    )))
}
