//! The consumer's looks at the ready semaphore, counted with a hardware watchpoint on its word
//! while the producer is held: take() blocks in its wait for ready, it does not try the
//! semaphore again and again first (in wait() or around it).

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use super::handover::Launch;
use super::probe;
use super::waits::millis;
use super::watchpoints::{
    FIRST_BLOCK, FIRST_BLOCK_LOOKS, SEMAPHORE_WORD, SPIN_HELD_AT, most_looks,
    paused_for_the_grader, release_to_the_end,
};
use crate::engine::tracer::{Tracer, Watched};
use crate::engine::{Fail, Run};

/// How long the grader counts the consumer's looks at the ready semaphore once the producer is
/// held: a slice and a half, so that the held wait has blocked and timed out once.
const READY_WATCH: Duration = Duration::from_millis(150);

/// The consumer must block in its wait for ready, not try the semaphore again and again first:
/// a hardware watchpoint on the ready semaphore's word in the consumer counts its loads and
/// stores while the grader holds the producer before a record, so that no ready comes. The
/// same allowance as the producer's looks at ok: a timed wait's few looks a wait and a slice.
pub fn consumer_spins_before_blocking(run: &mut Run) -> Result<String, Fail> {
    let names = [run.ipc_name("ready"), run.ipc_name("ok")];
    let held_at = SPIN_HELD_AT.to_string();
    let extra = ["--pause-after-create", "--pause-producer-at", &held_at];
    let mut launch = Launch::new(run, "semaphores", names, SPIN_HELD_AT + 2, &extra)?;
    launch.created()?;
    // The ready semaphore's file, known by its inode while its name exists.
    let ready_inode = std::fs::metadata(probe::semaphore_file(&launch.names[0])).map(|m| m.ino());
    launch.proc.send("go", &[])?;
    let mut handover = launch.ready()?;
    let consumer = handover.consumer;
    let ready_word = ready_inode.ok().and_then(|inode| {
        probe::mappings(consumer)
            .into_iter()
            .find(|m| m.named_semaphore() && m.inode == inode)
            .map(|m| m.start)
    });
    let tracer = match ready_word {
        Some(word) => Tracer::watch_at(consumer, word, SEMAPHORE_WORD)?,
        None => None,
    };
    let Some(mut tracer) = tracer else {
        handover.finish(|proc, _| proc.send("go", &[]))?;
        return Ok("the ready semaphore was not watched (no watchpoints here)".into());
    };
    handover.go()?;
    let started = Instant::now();
    let until = started + Duration::from_secs(5);
    let mut held_since: Option<Instant> = None;
    let (mut looks, mut first_looks) = (0u64, 0u64);
    let mut last_look: Option<Instant> = None;
    let (mut blocked, mut spun, mut watched) = (false, false, true);
    loop {
        // Once the producer is held, only the consumer's looks are read.
        let next = match held_since {
            Some(since) => match tracer.next_watched(since + READY_WATCH)? {
                Some(next) => next,
                None => break,
            },
            None => tracer.next(&mut handover.proc, until)?,
        };
        match next {
            Watched::Armed => {}
            Watched::Hit => {
                looks += 1;
                blocked |= last_look.is_some_and(|last| last.elapsed() >= FIRST_BLOCK);
                if !blocked {
                    first_looks += 1;
                }
                last_look = Some(Instant::now());
                if looks > most_looks(started) {
                    spun = true;
                    break;
                }
                tracer.go_on();
            }
            Watched::Said(message) => {
                if paused_for_the_grader(&handover, &message, "producer")? {
                    held_since = Some(Instant::now());
                }
            }
            Watched::Lost | Watched::Unavailable => {
                watched = false;
                break;
            }
        }
    }
    let watched_for = started.elapsed();
    drop(tracer);
    if spun || first_looks > FIRST_BLOCK_LOOKS {
        handover.proc.kill_tree();
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
    release_to_the_end(
        &mut handover,
        held_since.is_some(),
        "the producer",
        SPIN_HELD_AT,
    )?;
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
