//! What a take makes of a message on the free queue that is no id: the queue holds messages of
//! up to 4 bytes, and an id is exactly 4. The grader puts messages of 0 and 3 bytes on the queue
//! of a pool whose ids it holds, one at a time, each for a pair of its own: each take must fail
//! with `Queue` and take no segment.

use rand::RngExt;

use super::SEGMENTS;
use super::pool::{
    FreeQueue, PairOptions, PoolNames, destroy_pool, pair_ready, pool_ready, spawn_pair, spawn_pool,
};
use super::transfer::failure;
use crate::engine::{Fail, Run};

pub fn queue_message_length(run: &mut Run) -> Result<String, Fail> {
    let size = 4096;
    let names = PoolNames::new(run, "pool", SEGMENTS);
    let mut pool = spawn_pool(run, &names, size)?;
    pool_ready(&mut pool, &names, size)?;
    let queue = FreeQueue::open(&names.queue)?;
    let seed: u64 = run.rng().random();
    let ids = queue.take_all()?;
    // Read as the start of a 4-byte id padded with zeros, each is one of the pool's ids.
    // None at all, and one byte short of an id.
    let messages: [&[u8]; 2] = [&[], &[3, 0, 0]];
    for (index, message) in (200..).zip(messages) {
        queue.put_all(&[message.to_vec()])?;
        let mut pair = spawn_pair(
            run,
            &names.prefix,
            index,
            seed,
            1000,
            &PairOptions::default(),
        )?;
        pair_ready(&mut pair, index)?;
        pair.send("go", &[])?;
        let answer = pair.recv_any()?;
        if answer.kind == "failed" && answer.get("kind") == Some("mqueue") {
            pair.wait()?;
            continue;
        }
        pair.kill_tree();
        let bytes: Vec<String> = message.iter().map(|b| format!("{b:#04x}")).collect();
        let setting = format!(
            "with only a message of {} byte(s) on the free queue ([{}], put there by the \
             grader; an id is 4 little-endian bytes, and the queue takes messages of up to 4)",
            message.len(),
            bytes.join(", ")
        );
        let said = match answer.kind.as_str() {
            "took" => format!(
                "took segment {}: take() ignores how many bytes mq_timedreceive() returned and \
                 reads the missing ones as zeros (or as whatever its buffer held), so that a \
                 message too short to be an id hands out a segment, possibly one another pair \
                 holds",
                answer.get("id").unwrap_or("?")
            ),
            _ => format!(
                "said `{}` ({}): a message of another length than an id's is no id at all, \
                 not one out of range",
                answer.kind,
                failure(&answer)
            ),
        };
        return Err(Fail::failed(format!(
            "{setting}, pair {index} {said}. Pool::take must compare the length \
             mq_timedreceive() returns with 4 and fail with TransferError::Queue \
             (kind=mqueue) for any other"
        )));
    }
    queue.put_all(&ids)?;
    destroy_pool(
        &mut pool,
        &names,
        "after the pairs refused the short messages",
        SEGMENTS,
    )?;
    Ok(
        "messages of 0 and 3 bytes on the free queue were each refused by take() as \
        kind=mqueue, no segment taken"
            .into(),
    )
}
