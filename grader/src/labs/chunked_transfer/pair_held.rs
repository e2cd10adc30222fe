//! A pair alone on the pool, its receiver held by the grader at each step of giving its segment
//! back: the segment stays off the free queue until the whole message is written out, the
//! sender's send() ends with its last chunk, and the data travels in the segment.

use rand::RngExt;

use super::SEGMENTS;
use super::data::pattern_hash;
use super::handback::GiveBackHeld;
use super::layout::{Mapped, expected_capacity};
use super::observe::{
    describe_descriptors, dev_shm, expect_writes_from_slot, io_of, segment_mappings,
};
use super::pair_queue::{counts_by_attributes, counts_now};
use super::pairs::MIB;
use super::pool::{
    Follow, FreeQueue, PairOptions, PairSeen, PoolNames, follow_pair, pair_ready, spawn_pair,
};
use super::transfer::failure;
use crate::engine::{Fail, Proc, Run};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

/// One pair alone on the pool (the grader keeps one id), its receiver held before it writes
/// out its first chunk, the chunk before the last (its sender then done), and the last: the
/// segment must stay off the free queue until the receiver has written out the whole message.
pub(super) fn held_pair(
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
    // Waiting for the grader's `count`, before it forks its receiver and sends.
    let id = seen.took.clone().unwrap_or_else(|| "?".into());
    expect_unmapped(
        &pair,
        index,
        &dev_shm(&format!("{prefix}-seg-{id}")),
        &id,
        Unmapped::AfterTake,
    )?;
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
        if stage == 1 {
            expect_unmapped(
                &pair,
                index,
                &dev_shm(&format!("{prefix}-seg-{id}")),
                &id,
                Unmapped::AfterSend,
            )?;
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
        given_back.ring_free(index, &id)?;
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

/// When a pair must map nothing of its segment.
enum Unmapped {
    /// Said `took`, waiting for the grader's `count` before it forks its receiver and sends.
    AfterTake,
    /// Its sender said `sent`: its Pool::send() had returned.
    AfterSend,
}

/// That pair `index` maps nothing of the segment it took (`id`, at `segment`) at `when`:
/// Pool::send and Pool::receive open the segment for the transfer and drop it after, and take()
/// keeps no mapping, so nothing of the pool stays mapped in a process outside its transfers.
fn expect_unmapped(
    pair: &Proc,
    index: u64,
    segment: &std::path::Path,
    id: &str,
    when: Unmapped,
) -> Result<(), Fail> {
    let pid = pair.pid.as_raw();
    let inode = std::fs::metadata(segment)?.ino();
    let mappings = segment_mappings(pid, inode)?;
    if mappings.is_empty() {
        return Ok(());
    }
    let listed: Vec<String> = mappings
        .iter()
        .map(|(start, end, _)| format!("{start:x}-{end:x}"))
        .collect();
    let (who, moment, what) = match when {
        Unmapped::AfterTake => (
            "",
            format!(
                "said `took` (id {id}) and waits for the grader before it forks its receiver \
                 and sends"
            ),
            "take() maps the segment it takes, and the mapping would serve the pair's \
             transfers (a forked receiver inherits it and never opens the segment)",
        ),
        Unmapped::AfterSend => (
            "'s sender",
            "said `sent` (its Pool::send() had returned)".to_string(),
            "a mapping of the segment outlives the send",
        ),
    };
    Err(Fail::failed(format!(
        "pair {index}{who} (pid {pid}) {moment}, yet it mapped segment {id} ({}: \
         /proc/{pid}/maps): {what}. Pool::send(id, ..) and Pool::receive(id, ..) each open \
         segment id for their transfer and drop it when it ends (Segment's Drop unmaps it); \
         take() only takes the id off the queue, and keeps no mapping for the pair",
        listed.join(", ")
    )))
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
