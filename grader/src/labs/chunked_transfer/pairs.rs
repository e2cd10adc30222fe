//! The check of the pool in use: its free queue as created, take() on an empty pool and of a
//! foreign id, pairs held by the grader at each step of giving a segment back (`pair_held`), a
//! pair whose transfer fails (`pair_failures`), a pair's take and free count against the queue
//! (`pair_queue`), and concurrent pairs.

use rand::RngExt;

use super::data::pattern_hash;
use super::layout::{MIN_SEGMENT, Mapped, expected_capacity};
use super::pair_failures::{failed_pair, protocol_pair};
use super::pair_held::held_pair;
use super::pair_queue::short_take;
use super::pool::{
    Follow, FreeQueue, PairOptions, PairSeen, PoolNames, destroy_pool, follow_pair, id_message,
    pair_ready, pool_ready, spawn_pair, spawn_pool,
};
use super::transfer::failure;
use super::{MAX_POOL, SEGMENTS};
use crate::engine::{Fail, Proc, Run};

/// Bytes in a MiB: the pairs' messages are up to 2 MiB.
pub(super) const MIB: u64 = 1 << 20;

/// A pair that must fail right after `go` with `kind` (the error `error`) because of what the
/// grader did to the pool (`setting`).
fn pair_refused(
    pair: &mut Proc,
    index: u64,
    setting: &str,
    kind: &str,
    error: &str,
    on_queue: Option<u32>,
    why: &str,
) -> Result<(), Fail> {
    pair.send("go", &[])?;
    let answer = pair.recv_any()?;
    if answer.kind == "failed" && answer.get("kind") == Some(kind) {
        pair.wait()?;
        return Ok(());
    }
    // `why` explains taking the id on the queue, and only that.
    let (said, why) = if answer.kind == "took" {
        let id = answer.get("id").unwrap_or("?");
        match on_queue {
            // Not the id the grader put there: take() made one up.
            Some(only) if id != only.to_string() => (
                format!(
                    "took segment {id}, which was not on the queue: take() must use the id the \
                     message it received carries, not one of its own making, and"
                ),
                "",
            ),
            _ => (format!("took segment {id}:"), why),
        }
    } else {
        (
            format!("said `{}` ({}):", answer.kind, failure(&answer)),
            "",
        )
    };
    Err(Fail::failed(format!(
        "{setting}, pair {index} {said} Pool::take must fail with TransferError::{error} \
         (kind={kind}){why}"
    )))
}

pub fn pool_pairs(run: &mut Run) -> Result<String, Fail> {
    const PAIRS: u64 = 8;
    let size = 65_536;
    let capacity = expected_capacity(size) as u64;
    super::init::pool_semaphores_by_sem_init(run)?;
    let names = PoolNames::new(run, "pool", SEGMENTS);
    let mut pool = spawn_pool(run, &names, size)?;
    pool_ready(&mut pool, &names, size)?;
    // The rubric's check of permissions: the free queue and every segment, mode 600.
    run.expect_owner_only()?;
    let queue = FreeQueue::open(&names.queue)?;
    let prefix = names.prefix.clone();
    let seed: u64 = run.rng().random();

    // An empty pool: take() gives up after its timeout with PoolEmpty.
    let ids = queue.take_all()?;
    let mut index = 100;
    let mut empty = spawn_pair(
        run,
        &prefix,
        index,
        seed,
        1000,
        &PairOptions {
            timeout_ms: Some(100),
            ..Default::default()
        },
    )?;
    pair_ready(&mut empty, index)?;
    pair_refused(
        &mut empty,
        index,
        "with the free queue empty (the grader had taken every id)",
        "pool-empty",
        "PoolEmpty",
        None,
        "",
    )?;
    super::take_clock::take_reads_the_wall_clock(run, &prefix, seed)?;
    // Ids that are not the pool's: one between its count and the largest pool's (a bound
    // taken from MAX_POOL_SEGMENTS), then the count itself (one past the last).
    // Then id 4 again, with an object named as segment 4 would be in /dev/shm (the grader's):
    // the count is the queue's, whatever names lie about.
    for (foreign_id, stray) in [(SEGMENTS + 3, false), (SEGMENTS, false), (SEGMENTS, true)] {
        index += 1;
        let stray = if stray {
            let name = run.ipc_name(&format!("pool-seg-{foreign_id}"));
            Some((Mapped::create(run, &name, MIN_SEGMENT, true)?, name))
        } else {
            None
        };
        queue.put_all(&[id_message(foreign_id as u32)])?;
        let mut foreign = spawn_pair(run, &prefix, index, seed, 1000, &PairOptions::default())?;
        pair_ready(&mut foreign, index)?;
        let bound = if let Some((_, name)) = &stray {
            format!(
                ". It refused id {foreign_id} a moment before, when no object had that name: it \
                 counts the pool's segments by the names it finds in /dev/shm (the grader had \
                 made {name}), where Pool::open takes the count from the queue's mq_maxmsg \
                 ({SEGMENTS})"
            )
        } else if foreign_id > SEGMENTS {
            format!(
                ". Taking id {foreign_id} (below {MAX_POOL}, the largest pool) from a pool of \
                 {SEGMENTS}, it checks ids against no bound or one larger than the pool's \
                 count, which Pool::open takes from the queue's mq_maxmsg ({SEGMENTS})"
            )
        } else {
            String::new()
        };
        let setting = match &stray {
            Some((_, name)) => format!(
                "with only id {foreign_id} on the free queue (put there by the grader; the \
                 pool's ids are 0 to {}) and an object named {name} in /dev/shm (the grader's)",
                SEGMENTS - 1
            ),
            None => format!(
                "with only id {foreign_id} on the free queue (put there by the grader; the \
                 pool's ids are 0 to {})",
                SEGMENTS - 1
            ),
        };
        let refused = pair_refused(
            &mut foreign,
            index,
            &setting,
            "bad-id",
            "BadId",
            Some(foreign_id as u32),
            &bound,
        );
        if let Some((mapped, name)) = stray {
            drop(mapped);
            let _ = nix::sys::mman::shm_unlink(name.as_str());
        }
        refused?;
    }
    super::wide_ids::ids_read_whole(run, &queue, &prefix, seed)?;

    // A short timeout on an empty pool: the pair waits in mq_timedreceive(), and an id given
    // back within its timeout is taken.
    index += 1;
    short_take(run, &queue, &prefix, index, seed, &ids[0])?;

    // The grader keeps one id: free_count() must count the queue, not guess.
    queue.put_all(&ids[1..])?;
    let held = held_pair(run, &queue, &names, seed, size)?;
    let failed_id = failed_pair(run, &queue, &prefix, seed, capacity)?;
    let broken_id = protocol_pair(run, &queue, &prefix, seed, capacity, size)?;
    queue.put_all(&ids[..1])?;
    // The segments the failed pairs keep off the queue for good.
    let lost = 2;

    // Concurrent pairs on the 2 segments left (the failed pairs' stay out).
    let mut pairs = Vec::new();
    let mut lens = Vec::new();
    for index in 0..PAIRS {
        let len = run.rng().random_range(256 * 1024..2 * MIB);
        pairs.push(spawn_pair(
            run,
            &prefix,
            index,
            seed,
            len,
            &PairOptions::default(),
        )?);
        lens.push(len);
    }
    // A start barrier: every pair has opened the pool before any takes a segment, so that they
    // compete for the segments.
    for (index, pair) in pairs.iter_mut().enumerate() {
        pair_ready(pair, index as u64)?;
    }
    for pair in &mut pairs {
        pair.send("go", &[])?;
    }
    let mut taken = Vec::new();
    for (index, pair) in pairs.iter_mut().enumerate() {
        let want = pattern_hash(seed, index as u64, lens[index]);
        let how = Follow {
            index: index as u64,
            want: &want,
            // While this pair holds its segment, at most the others left can be free.
            free_after_take: 0..=SEGMENTS - lost - 1,
            segments: SEGMENTS,
            failures_expected: false,
        };
        let mut seen = PairSeen::default();
        follow_pair(pair, &how, &mut seen, |seen| seen.done)?;
        taken.extend(seen.took);
        pair.wait()?;
    }
    let free = queue.len()?;
    if free != SEGMENTS - lost {
        return Err(Fail::failed(format!(
            "after all {PAIRS} pairs finished, the free queue holds {free} ids, where {} \
             should be (every segment but {failed_id} and {broken_id}, whose transfers \
             failed): every segment taken must be given back once, after a whole message",
            SEGMENTS - lost
        )));
    }
    // One more off the queue: the pool's free_count() must see it.
    let last = queue.take_all()?;
    queue.put_all(&last[1..])?;
    destroy_pool(
        &mut pool,
        &names,
        &format!(
            "after all {PAIRS} pairs finished, with the grader holding one id and segments \
             {failed_id} and {broken_id} lost to failed transfers"
        ),
        SEGMENTS - lost - 1,
    )?;
    taken.sort();
    Ok(format!(
        "an empty pool gave pool-empty and ids {} and {SEGMENTS} (also with an object of that \
         name in /dev/shm) bad-id; {held}; a pair whose receiver timed out kept segment \
         {failed_id} off the queue, one whose receiver found a broken chunk segment \
         {broken_id}; then {PAIRS} pairs each got their own message through the other segments \
         (ids taken: {}); free_count() counted the queue, and destroy() removed every object",
        SEGMENTS + 3,
        taken.join(",")
    ))
}
