//! Pairs whose transfer fails (a receiver that times out, a chunk that breaks the protocol):
//! the segment they took stays off the free queue.

use super::data::pattern_hash;
use super::layout::{Header, Mapped, SLOTS, Sem};
use super::observe::dev_shm;
use super::pool::{
    Follow, FreeQueue, PairOptions, PairSeen, follow_pair, pair_failed, pair_ready, spawn_pair,
};
use super::signals::waits_timed;
use super::transfer::failure;
use super::{SEGMENTS, STRANDED_RECEIVER};
use crate::engine::{Fail, Run};
use std::time::{Duration, Instant};

/// A pair whose sender the grader holds before its first chunk until its receiver times out:
/// the receiver must not give the segment back, though nothing came through it yet (the sender
/// may still write into it), nor the sender once released, when its send fails in turn.
/// Returns the id it took.
pub(super) fn failed_pair(
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
        hold_sender_at: Some(0),
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
        let failed = |side: bool| seen.failure_of(side).is_some();
        failed(false) && (seen.sender_holding.is_some() || failed(true))
    })?;
    let id = seen.took.clone().unwrap_or_else(|| "?".into());
    let answer = seen.failure_of(false).expect("waited for above");
    if answer.get("kind") != Some("timeout") {
        return Err(Fail::failed(format!(
            "pair {index}'s sender stood still before its first chunk (held by the grader) and \
             its receiver said `failed` ({}): a peer that hands over nothing within the timeout is \
             TransferError::Timeout (kind=timeout)",
            failure(answer)
        )));
    }
    let on_queue = queue.len()?;
    if on_queue != free {
        return Err(Fail::failed(format!(
            "pair {index}'s receiver timed out (its sender, held by the grader, stood still \
             before its first chunk), and the free queue then held {on_queue} ids, where {free} \
             should be: segment {id} went back to the pool after a failed receive. Give a \
             segment back only after a whole message, never after a failure, even one before \
             any chunk came: its sender may still wake up and write into it"
        )));
    }
    pair.send("release", &[])?;
    // The sender, alone now, fails in its turn; the segment stays out of the pool for good.
    follow_pair(&mut pair, &how, &mut seen, |seen| {
        seen.failure_of(true).is_some()
    })?;
    let _ = pair.wait()?;
    let on_queue = queue.len()?;
    if on_queue != free {
        return Err(Fail::failed(format!(
            "pair {index}'s receiver timed out (its sender, held by the grader, stood still \
             before its first chunk), then its sender, released, failed in turn; the free queue then held \
             {on_queue} ids, where {free} should be: segment {id} went back to the pool after a \
             failed send. Only the receiver gives a segment back, after a whole message: a \
             segment whose transfer failed still holds chunks and its semaphores are out of \
             step, so it stays out of the pool"
        )));
    }
    Ok(id)
}

/// A pair whose receiver finds a broken chunk: the grader puts chunk 1 where chunk 0 is due in
/// slot 0 of the segment of the only id it leaves on the queue, posts its `full` and takes both
/// of its `empty` (no slot is free for the sender, which cannot overwrite the chunk), and holds
/// the pair's sender before its first chunk. The receiver, waiting on the segment's `full`,
/// must fail with `protocol` and keep the segment off the queue, as after any failed receive;
/// so must the sender, which then fails too. Returns the id.
pub(super) fn protocol_pair(
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
    for slot in 0..SLOTS {
        if !mapped.wait(Sem::Empty, Duration::ZERO) {
            return Err(Fail::failed(format!(
                "segment {id}, on the free queue with no pair using it, had {slot} free slot(s) \
                 (its `empty`), where {SLOTS} should be: a segment goes back to the pool only \
                 after its receiver took every chunk, its semaphores as create() left them"
            )));
        }
    }
    mapped.put(0, broken, &run.random_bytes(capacity as usize));
    queue.put_all(std::slice::from_ref(planted))?;
    let options = PairOptions {
        hold_sender_at: Some(0),
        // Long enough that the sender still waits for a slot when its receiver has failed.
        timeout_ms: Some(400),
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
        let failed = |side: bool| seen.failure_of(side).is_some();
        // Before its `took`, only its take can fail, and nothing provoked that.
        (failed(true) && seen.took.is_none()) || failed(false)
    })?;
    if seen.took.is_none()
        && let Some((_, message)) = seen.failed.first()
    {
        return Err(pair_failed(index, SEGMENTS, message, true));
    }
    let answer = seen.failure_of(false).expect("waited for above");
    if answer.get("kind") != Some("protocol") {
        let planted = format!(
            "the grader put a broken chunk (numbered 1 where chunk 0 is due) in slot 0 of \
             segment {id}, the only one on the free queue, posted the segment's `full` and held \
             both of its slots (its `empty` at 0), and held pair {index}'s sender before its \
             first chunk; the pair's receiver said `failed` ({})",
            failure(answer)
        );
        return Err(Fail::failed(if mapped.value(Sem::Full) > 0 {
            format!(
                "{planted}, and the segment's `full` was still posted: the receiver never \
                 waited on it. A pair hands its chunks over with the two semaphores in the \
                 SegmentHeader of the segment it took (`empty` and `full`), not semaphores of \
                 its own: the id may go to any process that opens the pool"
            )
        } else {
            format!(
                "{planted}: it took the chunk from the segment's `full` but did not refuse it. \
                 A chunk numbered other than the one due is TransferError::Protocol \
                 (kind=protocol)"
            )
        }));
    }
    let receiver_said = failure(answer);
    let on_queue = queue.len()?;
    // A sender held before its first chunk, or in its wait for a slot, has given nothing back.
    // The receiver fails at once, so its parent may not have reached that wait when the queue
    // was read: a sender that enters it afterwards had not timed out either. One that failed
    // first leaves the story to the check after its failure below.
    let sender_waits = || {
        let deadline = Instant::now() + Duration::from_secs(2);
        while !waits_timed(pair.pid.as_raw()) {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    };
    if on_queue != 0 && (seen.sender_holding.is_some() || sender_waits()) {
        return Err(Fail::failed(format!(
            "the grader put a broken chunk (numbered 1 where chunk 0 is due) in segment {id}, \
             the only one on the free queue, and held pair {index}'s sender before its first \
             chunk; the pair's receiver said `failed` ({receiver_said}), and the free queue then \
             held {on_queue} id(s), where 0 should be: segment {id} went back to the pool after a \
             failed receive. Never give a segment back after a failed receive, whatever the \
             error (a protocol error too, not only a timeout): its sender may still write into \
             it"
        )));
    }
    // The sender, blocked on `empty`, times out unless it waits elsewhere (held at its first
    // chunk, then released).
    let sender_failed = |seen: &PairSeen| seen.failure_of(true).is_some();
    follow_pair(&mut pair, &how, &mut seen, |seen| {
        sender_failed(seen) || seen.sender_holding.is_some()
    })?;
    if !sender_failed(&seen) {
        pair.send("release", &[])?;
        follow_pair(&mut pair, &how, &mut seen, sender_failed)?;
    }
    let _ = pair.wait()?;
    drop(mapped);
    let on_queue = queue.len()?;
    queue.put_all(kept)?;
    if on_queue != 0 {
        return Err(Fail::failed(format!(
            "pair {index}'s receiver failed on a broken chunk the grader put in segment {id}, \
             then its sender failed in turn; the free queue then held {on_queue} \
             id(s), where 0 should be: segment {id} went back to the pool after a failed \
             transfer. Only the receiver gives a segment back, after a whole message"
        )));
    }
    Ok(id.to_string())
}
