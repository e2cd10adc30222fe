//! The check of the pool in use: its free queue as created, take() on an empty pool and of a
//! foreign id, pairs held by the grader at each step of giving a segment back, a pair whose
//! transfer fails, and concurrent pairs.

use rand::RngExt;

use super::data::pattern_hash;
use super::handback::GiveBackHeld;
use super::layout::{Header, MIN_SEGMENT, Mapped, expected_capacity};
use super::observe::{describe_descriptors, dev_shm, expect_writes_from_slot, io_of};
use super::pool::{
    Follow, FreeQueue, PairOptions, PairSeen, PoolNames, destroy_pool, follow_pair, id_message,
    pair_failed, pair_ready, pool_ready, spawn_pair, spawn_pool,
};
use super::transfer::failure;
use super::{MAX_POOL, SEGMENTS, STRANDED_RECEIVER};
use crate::engine::tracer::{Action, Call, Reached, Tracer};
use crate::engine::{Fail, Proc, Run, inspect};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

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

/// One pair alone on the pool (the grader keeps one id), its receiver held before it writes
/// out its first chunk, the chunk before the last (its sender then done), and the last: the
/// segment must stay off the free queue until the receiver has written out the whole message.
fn held_pair(
    run: &mut Run,
    queue: &FreeQueue,
    names: &PoolNames,
    seed: u64,
    size: usize,
) -> Result<String, Fail> {
    let prefix = names.prefix.as_str();
    let capacity = expected_capacity(size) as u64;
    let index = 8;
    let len = run.rng().random_range(256 * 1024..2 * MIB);
    let chunks = len.div_ceil(capacity);
    let holds = [0, (chunks - 2) * capacity, (chunks - 1) * capacity];
    let options = PairOptions {
        hold_at: holds.to_vec(),
        count_again: true,
        ..Default::default()
    };
    let mut pair = spawn_pair(run, prefix, index, seed, len, &options)?;
    pair_ready(&mut pair, index)?;
    // The grader holds one id and the pair one: exactly 2 are free.
    let free = SEGMENTS - 2;
    counts_by_attributes(&mut pair, queue, index, free)?;
    let want = pattern_hash(seed, index, len);
    let how = Follow {
        index,
        want: &want,
        free_after_take: free..=free,
        segments: SEGMENTS,
        failures_expected: false,
    };
    let mut seen = PairSeen::default();
    follow_pair(&mut pair, &how, &mut seen, |seen| seen.took.is_some())?;
    counts_now(&mut pair, queue, index, free)?;
    let stages = [
        (
            "before writing out its first chunk, its sender still sending",
            "a segment goes back to the pool only once its receiver has read the end of the \
             message",
        ),
        (
            "before writing out the chunk before the last, its sender done (send() returned)",
            "it came back between the grader's two looks, while the sender finished its send() \
             and the receiver wrote out ordinary chunks: the segment was given back too early, \
             as a sender that gives it back after its last chunk does. Only the receiver gives \
             it back, once it has read the end of the message",
        ),
        (
            "before writing out the last chunk",
            "between the grader's two looks only the receiver ran (its sender had returned \
             from send() before): the receiver gave the segment back too early, on seeing the \
             end-of-message chunk, before writing that chunk out. Give it back only once the \
             whole message, last chunk included, has been written out",
        ),
    ];
    let mut give_back = None;
    for (stage, (where_, why)) in stages.iter().enumerate() {
        follow_pair(&mut pair, &how, &mut seen, |seen| seen.holding.is_some())?;
        let id = seen.took.clone().unwrap_or_else(|| "?".into());
        if stage == 1 && !seen.sent {
            let at = Sent {
                index,
                len,
                chunks,
                id: &id,
                segment: &dev_shm(&format!("{prefix}-seg-{id}")),
                size,
            };
            await_sent(&mut pair, &mut seen, &at)?;
        }
        if stage == 0 {
            expect_pair_writes_from_slot(&seen, names, index, size, &id)?;
        }
        let on_queue = queue.len()?;
        if on_queue != free {
            return Err(Fail::failed(format!(
                "pair {index} ({len} bytes, {chunks} chunks through segment {id}), its receiver \
                 held by the grader {where_}: the free queue held {on_queue} ids, where {free} \
                 should be (the grader keeps one, the pair has segment {id}): {why}"
            )));
        }
        // Before its last chunk: held again as its give-back returns.
        if stage == stages.len() - 1 {
            let receiver = seen.holding_said.as_ref().and_then(|said| said.get("pid"));
            if let Some(receiver) = receiver.and_then(|pid| pid.parse().ok()) {
                give_back = GiveBackHeld::attach(receiver)?;
            }
        }
        seen.holding = None;
        pair.send("release", &[])?;
    }
    let id = seen.took.clone().unwrap_or_else(|| "?".into());
    let given_back = match give_back {
        Some(held) => held.read_slots(&format!("{prefix}-seg-{id}"), size)?,
        None => None,
    };
    follow_pair(&mut pair, &how, &mut seen, |seen| seen.done)?;
    pair.wait()?;
    if let Some(given_back) = given_back {
        given_back.unchanged(index, &id)?;
    }
    let on_queue = queue.len()?;
    if on_queue != free + 1 {
        return Err(Fail::failed(format!(
            "pair {index} alone on the pool has finished, but the free queue holds {on_queue} \
             ids, where {} should be (all but the one the grader keeps): a segment was never \
             given back. The receiver gives its segment back once it has read the end of the \
             message",
            free + 1
        )));
    }
    Ok(format!(
        "a pair kept its segment off the free queue until its receiver had written out the \
         last chunk ({free} of {SEGMENTS} ids free, the grader keeping one)"
    ))
}

/// The held pair whose sender must say `sent`: its message and its segment.
struct Sent<'a> {
    index: u64,
    len: u64,
    chunks: u64,
    id: &'a str,
    segment: &'a std::path::Path,
    size: usize,
}

/// Waits for the `sent` of a pair whose receiver the grader holds before it writes out the
/// chunk before the last: its sender has room for the last chunk (the slot of the chunk before
/// it was freed), so its send() ends. A sender that, its last chunk handed over (the header
/// with end = 1 in its slot, `full` posted), waits on in a timed wait never says it: it waits
/// for its receiver (to take the segment back itself, or for some other reason of its own).
fn await_sent(pair: &mut Proc, seen: &mut PairSeen, at: &Sent) -> Result<(), Fail> {
    let Sent {
        index,
        len,
        chunks,
        id,
        segment,
        size,
    } = *at;
    let pid = pair.pid.as_raw();
    let mapped = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(segment)
        .ok()
        .and_then(|file| Mapped::open(&file, size).ok());
    // The pair's timeout (5 s) and a margin: a sender that fails says so after its child.
    let until = Instant::now() + Duration::from_secs(8);
    let mut waiting_since: Option<Instant> = None;
    while Instant::now() < until {
        if let Some(message) = pair.recv_before(Instant::now() + Duration::from_millis(5))? {
            if message.kind == "sent" && message.get("pid") == Some(pid.to_string().as_str()) {
                seen.sent = true;
                return Ok(());
            }
            return Err(Fail::failed(format!(
                "pair {index} ({len} bytes, {chunks} chunks through segment {id}), its \
                 receiver held by the grader before writing out the chunk before the last, \
                 said `{}` ({}) where its sender's `sent` was due",
                message.kind,
                failure(&message)
            )));
        }
        let last = mapped.as_ref().map(|m| m.header(chunks - 1));
        let handed_over = last.is_some_and(|h| h.seq == chunks - 1 && h.end == 1);
        if handed_over && super::signals::waits_timed(pid) {
            let since = *waiting_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= Duration::from_millis(500) {
                return Err(Fail::failed(format!(
                    "pair {index} ({len} bytes, {chunks} chunks through segment {id}), its \
                     receiver held by the grader before writing out the chunk before the last: \
                     the sender had put the message's last chunk in the segment ({}, `full` \
                     posted), yet its send() did not return (no `sent`); it has waited since \
                     in a timed futex wait (sem_timedwait()), for its receiver to drain the \
                     segment: it gives the segment back itself once both slots are free again. \
                     The sender's send() ends with its last chunk; only the receiver gives the \
                     segment back, once it has written out the whole message (Pool::receive)",
                    last.map(|h| h.describe()).unwrap_or_default()
                )));
            }
        } else {
            waiting_since = None;
        }
    }
    Err(Fail::failed(format!(
        "pair {index} ({len} bytes, {chunks} chunks through segment {id}), its receiver held by \
         the grader before writing out the chunk before the last: its sender had room for the \
         last chunk, yet said no `sent` within 8 s: send() must end once the last chunk is \
         handed over, whatever its receiver does"
    )))
}

/// That the receiver of pair `index`, held before it writes out its first chunk (the first
/// through segment `id`, so in slot 0), gave its writer that slot's data in its own mapping of
/// the segment: a pair's data travels in the pool's segment, as a transfer's does.
fn expect_pair_writes_from_slot(
    seen: &PairSeen,
    names: &PoolNames,
    index: u64,
    size: usize,
    id: &str,
) -> Result<(), Fail> {
    let Some(holding) = &seen.holding_said else {
        return Ok(());
    };
    let number = |name: &str| {
        let value = holding.get(name)?;
        match value.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => value.parse().ok(),
        }
    };
    let (Some(pid), Some(from), Some(len)) = (number("pid"), number("from"), number("len")) else {
        return Err(Fail::Grader(
            "the pair's receiver's `holding` lacks `pid`, `from` or `len`".into(),
        ));
    };
    let pid = pid as i32;
    let Some(segment) = id
        .parse::<usize>()
        .ok()
        .and_then(|id| names.segments.get(id))
    else {
        return Ok(());
    };
    let Ok(object) = std::fs::metadata(dev_shm(segment)) else {
        return Ok(());
    };
    use std::os::unix::fs::MetadataExt;
    expect_writes_from_slot(pid, object.ino(), size, 0, from, len).map_err(|fail| match fail {
        Fail::Failed(what) => {
            let moved = io_of(pid);
            let held = format!(
                "pair {index}'s receiver (pid {pid}), held by the grader before writing out its \
                 first chunk through segment {id}"
            );
            if moved.read_bytes >= len {
                Fail::failed(format!(
                    "{held}, had given its writer {len} bytes at {from:#x}, not in the slot of \
                     its mapping of the segment, after reading {} bytes with read()-like system \
                     calls ({} calls, from /proc/{pid}/io; {}): the pair's data went through a \
                     descriptor, not the segment. A pair streams its message through the \
                     segment it took, the data source reading straight into the slot and the \
                     writer getting the slot, as Segment::send and Segment::receive do",
                    moved.read_bytes,
                    moved.read_calls,
                    describe_descriptors(pid, segment)
                ))
            } else {
                Fail::failed(format!("{held}: {what}"))
            }
        }
        fail => fail,
    })
}

/// A pair whose sender the grader holds mid-message until its receiver times out: the
/// receiver must not give the segment back (the sender may still write into it), nor the
/// sender once released, when its send fails in turn. Returns the id it took.
fn failed_pair(
    run: &mut Run,
    queue: &FreeQueue,
    prefix: &str,
    seed: u64,
    capacity: u64,
) -> Result<String, Fail> {
    let index = 9;
    let len = 6 * capacity;
    let timeout_ms = 150;
    let options = PairOptions {
        hold_sender_at: Some(3 * capacity),
        timeout_ms: Some(timeout_ms),
        ..Default::default()
    };
    let mut pair = spawn_pair(run, prefix, index, seed, len, &options)?;
    let root = pair.pid.as_raw();
    pair.set_roles(move |view| {
        if view.pid == root {
            format!("pair {index}'s sender")
        } else {
            STRANDED_RECEIVER.into()
        }
    });
    pair_ready(&mut pair, index)?;
    pair.send("go", &[])?;
    let want = pattern_hash(seed, index, len);
    // The grader keeps one id, the held pair gave its own back.
    let free = SEGMENTS - 2;
    let how = Follow {
        index,
        want: &want,
        free_after_take: free..=free,
        segments: SEGMENTS,
        failures_expected: true,
    };
    let mut seen = PairSeen::default();
    // On a loaded machine the sender may time out too before it reaches its hold point.
    follow_pair(&mut pair, &how, &mut seen, |seen| {
        let failed = |side: bool| seen.failed.iter().any(|(sender, _)| *sender == side);
        failed(false) && (seen.sender_holding.is_some() || failed(true))
    })?;
    let id = seen.took.clone().unwrap_or_else(|| "?".into());
    let (_, answer) = seen
        .failed
        .iter()
        .find(|(sender, _)| !sender)
        .expect("waited for above");
    if answer.get("kind") != Some("timeout") {
        return Err(Fail::failed(format!(
            "pair {index}'s sender stood still mid-message (held by the grader) and its \
             receiver said `failed` ({}): a peer that hands over nothing within the timeout is \
             TransferError::Timeout (kind=timeout)",
            failure(answer)
        )));
    }
    let on_queue = queue.len()?;
    if on_queue != free {
        return Err(Fail::failed(format!(
            "pair {index}'s receiver timed out (its sender, held by the grader, stood still \
             mid-message), and the free queue then held {on_queue} ids, where {free} should be: \
             segment {id} went back to the pool after a failed receive. Give a segment back only \
             after a whole message: after a failure its sender may still write into it"
        )));
    }
    pair.send("release", &[])?;
    // The sender, alone now, fails in its turn; the segment stays out of the pool for good.
    follow_pair(&mut pair, &how, &mut seen, |seen| {
        seen.failed.iter().any(|(sender, _)| *sender)
    })?;
    let _ = pair.wait()?;
    let on_queue = queue.len()?;
    if on_queue != free {
        return Err(Fail::failed(format!(
            "pair {index}'s receiver timed out (its sender, held by the grader, stood still \
             mid-message), then its sender, released, failed in turn; the free queue then held \
             {on_queue} ids, where {free} should be: segment {id} went back to the pool after a \
             failed send. Only the receiver gives a segment back, after a whole message: a \
             segment whose transfer failed still holds chunks and its semaphores are out of \
             step, so it stays out of the pool"
        )));
    }
    Ok(id)
}

/// A pair whose receiver finds a broken chunk: the grader puts chunk 1 where chunk 0 is due in
/// the segment of the only id it leaves on the queue, and holds the pair's sender before its
/// first chunk. The receiver fails (`protocol`; `timeout` for a sender that writes the header
/// before the data) and must keep the segment off the queue, as after any failed receive; so
/// must the sender, which then fails too. Returns the id.
fn protocol_pair(
    run: &mut Run,
    queue: &FreeQueue,
    prefix: &str,
    seed: u64,
    capacity: u64,
    size: usize,
) -> Result<String, Fail> {
    let index = 10;
    let ids = queue.take_all()?;
    let Some((planted, kept)) = ids.split_first() else {
        return Err(Fail::Grader(
            "no id on the free queue for the broken pair".into(),
        ));
    };
    let id = <[u8; 4]>::try_from(planted.as_slice())
        .map(u32::from_le_bytes)
        .map_err(|_| Fail::Grader("an id of the wrong size on the free queue".into()))?;
    let segment = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev_shm(&format!("{prefix}-seg-{id}")))?;
    let mapped = Mapped::open(&segment, size)?;
    let len = 3 * capacity;
    let broken = Header {
        seq: 1,
        total: len,
        len: capacity,
        end: 0,
    };
    mapped.put(0, broken, &run.random_bytes(capacity as usize));
    queue.put_all(std::slice::from_ref(planted))?;
    let options = PairOptions {
        hold_sender_at: Some(0),
        timeout_ms: Some(200),
        ..Default::default()
    };
    let mut pair = spawn_pair(run, prefix, index, seed, len, &options)?;
    pair_ready(&mut pair, index)?;
    pair.send("go", &[])?;
    let want = pattern_hash(seed, index, len);
    let how = Follow {
        index,
        want: &want,
        free_after_take: 0..=0,
        segments: SEGMENTS,
        failures_expected: true,
    };
    let mut seen = PairSeen::default();
    follow_pair(&mut pair, &how, &mut seen, |seen| {
        let failed = |side: bool| seen.failed.iter().any(|(sender, _)| *sender == side);
        // Before its `took`, only its take can fail, and nothing provoked that.
        (failed(true) && seen.took.is_none())
            || (failed(false) && (seen.sender_holding.is_some() || failed(true)))
    })?;
    if seen.took.is_none()
        && let Some((_, message)) = seen.failed.first()
    {
        return Err(pair_failed(index, SEGMENTS, message, true));
    }
    let (_, answer) = seen
        .failed
        .iter()
        .find(|(sender, _)| !sender)
        .expect("waited for above");
    let on_queue = queue.len()?;
    if on_queue != 0 {
        return Err(Fail::failed(format!(
            "the grader put a broken chunk (numbered 1 where chunk 0 is due) in segment {id}, \
             the only one on the free queue, and held pair {index}'s sender before its first \
             chunk; the pair's receiver said `failed` ({}), and the free queue then held \
             {on_queue} id(s), where 0 should be: segment {id} went back to the pool after a \
             failed receive. Never give a segment back after a failed receive, whatever the \
             error (a protocol error too, not only a timeout): its sender may still write into \
             it",
            failure(answer)
        )));
    }
    pair.send("release", &[])?;
    follow_pair(&mut pair, &how, &mut seen, |seen| {
        seen.failed.iter().any(|(sender, _)| *sender)
    })?;
    let _ = pair.wait()?;
    let on_queue = queue.len()?;
    queue.put_all(kept)?;
    if on_queue != 0 {
        return Err(Fail::failed(format!(
            "pair {index}'s receiver failed on a broken chunk the grader put in segment {id}, \
             then its sender, released, failed in turn; the free queue then held {on_queue} \
             id(s), where 0 should be: segment {id} went back to the pool after a failed \
             transfer. Only the receiver gives a segment back, after a whole message"
        )));
    }
    Ok(id.to_string())
}

/// With `pair` (started with `--count-again`) past its `took`, `free` ids on the queue: the
/// grader takes one of them off and asks the pair's `free_count()` again, tracing it to see
/// whether it asks the queue (`mq_getattr()`); the count must be the queue's now (`free - 1`),
/// not the one at the take. The id goes back on the queue afterwards.
fn counts_now(pair: &mut Proc, queue: &FreeQueue, index: u64, free: usize) -> Result<(), Fail> {
    let mut ids = queue.take_all()?;
    if ids.len() != free {
        queue.put_all(&ids)?;
        return Err(Fail::failed(format!(
            "pair {index} said `took`, and the free queue then held {} ids, where {free} \
             should be (the grader keeps one, the pair has one): take() took more than one id \
             off the queue, or put something back",
            ids.len()
        )));
    }
    let kept = ids.pop();
    queue.put_all(&ids)?;
    let now = free - 1;
    let pid = pair.pid.as_raw();
    let traced = Tracer::attach(pid, Call::any(libc::SYS_mq_getsetattr), Action::Hold)?;
    pair.send("count", &[])?;
    // Whether it called mq_getattr() between the question and its answer (unknown untraced).
    let mut asked = None;
    let answer = match traced {
        Some(mut tracer) => match tracer.wait(pair, Instant::now() + Duration::from_secs(10))? {
            Reached::Call => {
                asked = Some(true);
                tracer.release();
                pair.recv_any()?
            }
            Reached::Passed(Some(message)) => {
                asked = (message.kind == "state").then_some(false);
                message
            }
            Reached::Passed(None) => pair.recv_any()?,
        },
        None => pair.recv_any()?,
    };
    if let Some(id) = kept {
        queue.put_all(&[id])?;
    }
    if answer.kind != "state" {
        let said = if answer.kind == "failed" {
            format!("`failed` ({})", failure(&answer))
        } else {
            format!("`{}`", answer.kind)
        };
        return Err(Fail::failed(format!(
            "pair {index}, asked for free_count() again after its `took`, said {said} where \
             it should have counted the free queue ({now} ids)"
        )));
    }
    let said = answer.get("free").unwrap_or("nothing");
    if said.parse::<usize>().ok() == Some(now) {
        return Ok(());
    }
    let how = match asked {
        Some(false) => format!(
            "it answered without any mq_getattr() call (the grader traced it from the question \
             to the answer){}: free_count() gives a number of its own, such as one remembered \
             from the take, instead of asking the queue each time",
            if said.parse::<usize>().ok() == Some(free) {
                format!(", and {free} is the count at its take")
            } else {
                String::new()
            }
        ),
        Some(true) => {
            "it did call mq_getattr(), yet its answer is not the queue's mq_curmsgs".to_string()
        }
        None => "free_count() does not count the queue as it is now".to_string(),
    };
    Err(Fail::failed(format!(
        "pair {index} said `took` with free_count() {free}; then the grader took one id off the \
         free queue ({now} left) and asked free_count() again (`--count-again`): it said \
         {said}, where {now} id(s) were on the queue: {how}. free_count() is how many segments \
         are free now: mq_getattr's mq_curmsgs, asked at each call"
    )))
}

/// Starts `pair` (alone on the pool: `free` ids are on the queue once it has taken one) with
/// its main thread traced, and holds it at its first `mq_getattr()` (`mq_getsetattr`) or
/// `mq_send()` (`mq_timedsend`) after `go`: `free_count()`, right after the take, must read
/// the queue's attributes (`mq_curmsgs`), not take the ids off the queue and put them back.
fn counts_by_attributes(
    pair: &mut Proc,
    queue: &FreeQueue,
    index: u64,
    free: usize,
) -> Result<(), Fail> {
    const CALLS: &[i64] = &[libc::SYS_mq_getsetattr, libc::SYS_mq_timedsend];
    let pid = pair.pid.as_raw();
    let traced = Tracer::attach(pid, Call::one_of(CALLS), Action::Hold)?;
    pair.send("go", &[])?;
    let Some(mut tracer) = traced else {
        return Ok(());
    };
    match tracer.wait(pair, Instant::now() + Duration::from_secs(10))? {
        Reached::Call => {
            let call = inspect::call_of(pid, pid).map(|(nr, _)| nr);
            let on_queue = queue.len()?;
            tracer.release();
            if call == Some(libc::SYS_mq_timedsend) {
                return Err(Fail::failed(format!(
                    "pair {index} took a segment, and before it said `took` (with \
                     free_count()'s number) it sent a message to the free queue (mq_send(); \
                     the grader held it there, before any mq_getattr()), with {on_queue} of \
                     the {free} free ids left on the queue: free_count() takes the ids off the \
                     queue to count them and puts them back, which leaves the queue empty for \
                     a moment to every other pair. Count them with mq_getattr(): mq_curmsgs"
                )));
            }
            Ok(())
        }
        Reached::Passed(Some(message)) if message.kind == "took" => Err(Fail::failed(format!(
            "pair {index} took a segment and said `took` (free_count() said {}, where \
             exactly {free} ids were free) without any mq_getattr() call (the grader traced \
             it): free_count() does not ask the queue. Count the ids on the free queue \
             (mq_getattr's mq_curmsgs), not a number of your own",
            message.get("free").unwrap_or("?")
        ))),
        // Before its `took`, only the take can fail: judged as anywhere else.
        Reached::Passed(Some(message)) if message.kind == "failed" => {
            Err(pair_failed(index, SEGMENTS, &message, true))
        }
        Reached::Passed(Some(message)) => Err(Fail::failed(format!(
            "pair {index}, alone on the pool with {} ids free, said `{}` where it should have \
             taken a segment",
            free + 1,
            message.kind
        ))),
        Reached::Passed(None) => Ok(()),
    }
}

/// A pair with a timeout under a second (600 ms) asks an empty pool for a segment; once it is
/// blocked in `mq_timedreceive()` the grader puts `id` on the queue: the pair must take it and
/// carry its message through. Afterwards `id` is off the queue again (the grader's).
fn short_take(
    run: &mut Run,
    queue: &FreeQueue,
    prefix: &str,
    index: u64,
    seed: u64,
    id: &[u8],
) -> Result<(), Fail> {
    const TIMEOUT_MS: u64 = 600;
    let mut pair = spawn_pair(
        run,
        prefix,
        index,
        seed,
        1000,
        &PairOptions {
            timeout_ms: Some(TIMEOUT_MS),
            ..Default::default()
        },
    )?;
    pair_ready(&mut pair, index)?;
    pair.send("go", &[])?;
    let asked = format!(
        "pair {index}, given a timeout of {TIMEOUT_MS} ms, asked an empty pool for a segment \
         (the grader had taken every id)"
    );
    let started = Instant::now();
    let pid = pair.pid.as_raw();
    // Blocked in mq_timedreceive(), or an answer first.
    loop {
        if let Some(answer) = pair.recv_before(Instant::now() + Duration::from_millis(2))? {
            let after = started.elapsed().as_millis();
            return Err(Fail::failed(format!(
                "{asked}, and said `{}` ({}) {after} ms after `go`, before the grader ever saw \
                 it wait in mq_timedreceive(): take() must wait for an id in \
                 mq_timedreceive() up to its timeout, however short, and take one that comes \
                 back meanwhile (only none in time is PoolEmpty)",
                answer.kind,
                failure(&answer)
            )));
        }
        if inspect::call_of(pid, pid).is_some_and(|(nr, _)| nr == libc::SYS_mq_timedreceive) {
            break;
        }
        if started.elapsed() > Duration::from_millis(TIMEOUT_MS / 2) {
            // Not seen in the call (a slow machine): no judgement of the wait here.
            pair.kill_tree();
            let _ = queue.take_all();
            return Ok(());
        }
    }
    queue.put_all(&[id.to_vec()])?;
    let given = started.elapsed().as_millis();
    let answer = pair.recv_any()?;
    if answer.get("kind") == Some("bad-id") {
        // The pool's own id refused: the count is wrong, whatever the wait.
        pair.kill_tree();
        return Err(pair_failed(index, SEGMENTS, &answer, true));
    }
    if answer.kind != "took" {
        pair.kill_tree();
        return Err(Fail::failed(format!(
            "{asked}; it was blocked in mq_timedreceive() and the grader put id {} on the queue \
             {given} ms after `go`, within its timeout, yet the pair said `{}` ({}): an id that \
             comes within the timeout must be taken",
            u32::from_le_bytes(id.try_into().unwrap_or([0; 4])),
            answer.kind,
            failure(&answer)
        )));
    }
    loop {
        let message = pair.recv_any()?;
        match message.kind.as_str() {
            "done" => break,
            "failed" => {
                return Err(Fail::failed(format!(
                    "{asked}, took the id the grader gave back, then said `failed` ({})",
                    failure(&message)
                )));
            }
            _ => {}
        }
    }
    pair.wait()?;
    // The id went back to the queue with the message's end: the grader keeps it again.
    let _ = queue.take_all()?;
    Ok(())
}
