//! A writer that fails: the receiver saves the message (`recv --save`) and the grader makes one
//! `write()` of the saved file fail (ptrace), that of the first chunk, then that of the last.
//! The receiver must report `Write`, after only the bytes its writer took, never the message,
//! and at once: the chunk after a failed one stays in the ring.
//! A pool pair's receiver whose writer fails mid-message (`pair --fail-write-at`) must keep its
//! segment off the free queue, as after any failed receive.

use std::path::Path;

use rand::RngExt;

use super::data::pattern_hash;
use super::headers::{one_message_receiver, ready_on_grader_segment};
use super::layout::{Header, MIN_SEGMENT, Mapped, Sem, expected_capacity};
use super::pool::{
    Follow, FreeQueue, PairOptions, PairSeen, PoolNames, destroy_pool, follow_pair, pair_ready,
    pool_ready, spawn_pair, spawn_pool,
};
use super::transfer::failure;
use crate::engine::tracer::{Call, Step, Tracer};
use crate::engine::{Fail, Run};

/// The errno the failing write returns: a full disk.
const ERRNO: i32 = libc::ENOSPC;

pub fn writer_fails(run: &mut Run) -> Result<String, Fail> {
    let mut followed = 0;
    // The write of chunk 0 (nothing taken yet), then that of chunk 1, the message's last.
    for failing in 0..2u64 {
        if fail_one_write(run, failing)? {
            followed += 1;
        }
    }
    let pool = pool_pair_writer_fails(run)?;
    Ok(if followed == 2 {
        format!(
            "with the write of the saved message's first chunk, then of its last, made to fail \
             (ENOSPC), the receiver reported kind=write after only the bytes its writer took; \
             {pool}"
        )
    } else {
        format!("the receiver's writes could not be made to fail here (no ptrace); {pool}")
    })
}

/// A pool of one segment and a pair whose receiver's writer fails in the middle of chunk 1 of
/// a four-chunk message: the receive fails with `Write`, and the segment stays off the free
/// queue, its sender still writing the rest of the message into it.
fn pool_pair_writer_fails(run: &mut Run) -> Result<String, Fail> {
    let size = MIN_SEGMENT;
    let names = PoolNames::new(run, "writer-fails", 1);
    let mut pool = spawn_pool(run, &names, size)?;
    pool_ready(&mut pool, &names, size)?;
    let queue = FreeQueue::open(&names.queue)?;
    let capacity = expected_capacity(size) as u64;
    let len = 4 * capacity;
    let fail_at = capacity + run.rng().random_range(0..capacity);
    let seed: u64 = run.rng().random();
    let options = PairOptions {
        fail_write_at: Some(fail_at),
        ..Default::default()
    };
    let mut pair = spawn_pair(run, &names.prefix, 0, seed, len, &options)?;
    pair_ready(&mut pair, 0)?;
    pair.send("go", &[])?;
    let want = pattern_hash(seed, 0, len);
    let how = Follow {
        index: 0,
        want: &want,
        free_after_take: 0..=0,
        segments: 1,
        failures_expected: true,
    };
    let mut seen = PairSeen::default();
    follow_pair(&mut pair, &how, &mut seen, |seen| {
        seen.failure_of(false).is_some()
    })?;
    let id = seen.took.clone().unwrap_or_else(|| "?".into());
    let answer = seen.failure_of(false).expect("waited for above");
    let setting = format!(
        "in a pool of one segment, pair 0 took segment {id} for a {len}-byte message (4 chunks \
         of {capacity}), and its receiver's writer failed (StorageFull, as a full disk) at byte \
         {fail_at}, in chunk 1 (`pair --fail-write-at`)"
    );
    if answer.get("kind") != Some("write") {
        pair.kill_tree();
        return Err(Fail::failed(format!(
            "{setting}; the receiver said `failed` ({}): a writer that fails is \
             TransferError::Write (kind=write)",
            failure(answer)
        )));
    }
    let on_queue = queue.len()?;
    pair.kill_tree();
    if on_queue != 0 {
        return Err(Fail::failed(format!(
            "{setting}; the receiver reported kind=write, rightly, and the free queue then held \
             segment {id} again: a segment went back to the pool after a failed receive. Give a \
             segment back only after a whole message, whatever failed (the writer too): its \
             sender was still writing the rest of the message into it, and the next pair to \
             take it would find those chunks"
        )));
    }
    destroy_pool(
        &mut pool,
        &names,
        &format!("after pair 0's receive failed in its writer, segment {id} lost to it"),
        0,
    )?;
    Ok(format!(
        "a pool pair whose receiver's writer failed in chunk 1 reported kind=write and kept \
         segment {id} off the free queue"
    ))
}

/// Plays the sender of a two-chunk message and fails the receiver's write of chunk `failing`;
/// false if the machine does not allow tracing.
fn fail_one_write(run: &mut Run, failing: u64) -> Result<bool, Fail> {
    let size = MIN_SEGMENT;
    let name = run.ipc_name(&format!("writer-fails-{failing}"));
    let planted = Mapped::create(run, &name, size, true)?;
    let c = planted.capacity();
    let rest = run.rng().random_range(1..=c);
    let total = c + rest;
    // Both chunks fit the two slots: the grader puts them in before the receiver starts.
    planted.put(
        0,
        Header {
            seq: 0,
            total,
            len: c,
            end: 0,
        },
        &run.random_bytes(c as usize),
    );
    planted.put(
        1,
        Header {
            seq: 1,
            total,
            len: rest,
            end: 1,
        },
        &run.random_bytes(rest as usize),
    );
    let mut args = one_message_receiver(&name, 3000);
    args.push("--save".into());
    // The file it saves the message to is the grader's to give.
    run.path("message-0.bin");
    let mut receiver = run.spawn(&args)?;
    receiver.set_roles(|_| "the receiver".into());
    ready_on_grader_segment(&mut receiver)?;
    // The saved file is opened at the start of the message; then each chunk is one write.
    let opening = Call::opening(Path::new("message-0.bin"));
    let write = Call::any(libc::SYS_write);
    let pid = receiver.pid.as_raw();
    let tracer = if failing == 0 {
        Tracer::in_turn(pid, [(opening, Step::Pass), (write, Step::Fail(ERRNO))])?
    } else {
        Tracer::in_turn(
            pid,
            [
                (opening, Step::Pass),
                (write, Step::Pass),
                (write, Step::Fail(ERRNO)),
            ],
        )?
    };
    let Some(mut tracer) = tracer else {
        receiver.kill_tree();
        return Ok(false);
    };
    receiver.send("go", &[])?;
    let answer = receiver.recv_any()?;
    let failed_write = tracer.failed_the_call()?;
    tracer.release();
    let taken = failing * c;
    let which = if failing == 0 {
        format!("chunk 0 ({c} bytes, the first)")
    } else {
        format!("chunk 1 ({rest} bytes, the last; chunk 0's {c} went through)")
    };
    let setting = format!(
        "the grader played the sender of a {total}-byte message in two chunks and made the \
         receiver's write() of {which} to its saved file fail with ENOSPC (ptrace; `recv \
         --save`)"
    );
    if answer.kind == "failed" && answer.get("kind") == Some("write") {
        let received = answer.get("received").and_then(|r| r.parse::<u64>().ok());
        if received != Some(taken) {
            return Err(Fail::failed(format!(
                "{setting}: the receiver reported kind=write, rightly, but its writer had taken \
                 {} bytes where {taken} went through before the failing write",
                received.map_or("?".into(), |r| r.to_string())
            )));
        }
        receiver.wait()?;
        // Chunk 1 stood in the ring when chunk 0's write failed: a receive that ended there
        // left it, one that went on took it.
        let left = planted.value(Sem::Full);
        if failing == 0 && left != 1 {
            return Err(Fail::failed(format!(
                "{setting}: the receiver reported kind=write, but it had gone on past its \
                 writer's error: chunk 1, in the ring all along, was taken (the segment's \
                 `full` was {left} after it, where 1 chunk should have stayed). It drained the \
                 rest of the message and reported Write only at its end. A writer that fails \
                 ends the receive at once with TransferError::Write: no wait, no chunk after it"
            )));
        }
        return Ok(true);
    }
    receiver.kill_tree();
    if !failed_write {
        // The write was never made: whatever went wrong, it is not the writer's error.
        return Err(Fail::failed(format!(
            "the grader played the sender of a {total}-byte message in two chunks, to make the \
             receiver's write of chunk {failing} to its saved file fail; the receiver said `{}` \
             ({}) before any such write",
            answer.kind,
            failure(&answer)
        )));
    }
    let said = if answer.kind == "failed" {
        format!(
            "said `failed` ({}): a writer that fails is TransferError::Write (kind=write), \
             whatever the segment holds",
            failure(&answer)
        )
    } else {
        format!(
            "said `{}` (len={}): it went on past its writer's error, as if the chunk had been \
             written out (the error of write_all() dropped, or the write tried again until it \
             passed). A writer that fails ends the receive with TransferError::Write \
             (kind=write): the message did not get out whole",
            answer.kind,
            answer.get("len").unwrap_or("?")
        )
    };
    Err(Fail::failed(format!("{setting}, and the receiver {said}")))
}
