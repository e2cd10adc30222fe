//! The consumer's looks at the ready semaphore, counted with a hardware watchpoint on its word
//! while the producer is held: take() blocks in its wait for ready, it does not try the
//! semaphore again and again first (in wait() or around it).

use std::time::Duration;

use super::waits::millis;
use super::watchpoints::{
    FIRST_BLOCK, FIRST_BLOCK_LOOKS, Looker, Looks, SPIN_HELD_AT, count_looks,
};
use crate::engine::{Fail, Run};

/// How long the grader counts the consumer's looks at the ready semaphore once the producer is
/// held: a slice and a half, so that the held wait has blocked and timed out once.
const READY_WATCH: Duration = Duration::from_millis(150);

/// The consumer must block in its wait for ready, not try the semaphore again and again first:
/// a hardware watchpoint on the ready semaphore's word in the consumer counts its loads and
/// stores while the grader holds the producer before a record, so that no ready comes. The
/// same allowance as the producer's looks at ok: a timed wait's few looks a wait and a slice.
pub fn consumer_spins_before_blocking(run: &mut Run) -> Result<String, Fail> {
    let Some(Looks {
        looks,
        first_looks,
        spun,
        watched,
        watched_for,
    }) = count_looks(run, Looker::Consumer, READY_WATCH)?
    else {
        return Ok("the ready semaphore was not watched (no watchpoints here)".into());
    };
    if spun || first_looks > FIRST_BLOCK_LOOKS {
        let counted = if spun {
            format!("at least {looks} times in {}", millis(watched_for))
        } else {
            format!(
                "{first_looks} times before its first pause of {} between two looks, its block",
                millis(FIRST_BLOCK)
            )
        };
        return Err(Fail::failed(format!(
            "in its take() of record 0, then of record {SPIN_HELD_AT} while the grader held the \
             producer (so that no ready came), the consumer loaded or changed the ready \
             semaphore {counted} (counted with a hardware watchpoint on the semaphore's word): \
             it tries ready again and again (sem_trywait() in a loop, in take() or in wait(), \
             however short?) before it blocks. The C library's sem_timedwait() looks at the word \
             a few times a wait before its futex wait (at most {FIRST_BLOCK_LOOKS} in {} \
             waits): take() calls wait(ready), which blocks in it from the start",
            SPIN_HELD_AT + 1
        )));
    }
    Ok(if watched {
        format!(
            "the consumer looked at the ready semaphore {looks} times in {} ({first_looks} \
             before a pause of {}), in {SPIN_HELD_AT} round, then the wait for a held producer",
            millis(watched_for),
            millis(FIRST_BLOCK)
        )
    } else {
        "the ready semaphore was not watched (no watchpoints here)".into()
    })
}
