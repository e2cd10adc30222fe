//! An id is all 4 of its bytes: ids whose low byte (or two, or three) is one of the pool's ids
//! and whose other bytes are not zero, each alone on the free queue for a pair of its own, must
//! each be refused by take() as `BadId`. Decoding fewer bytes, or comparing as a signed number,
//! turns them into one of the pool's ids, a segment perhaps held by another pair.

use super::SEGMENTS;
use super::pool::{FreeQueue, PairOptions, id_message, pair_ready, spawn_pair};
use super::transfer::failure;
use crate::engine::{Fail, Proc, Run};

/// Ids outside the pool that a decoding of fewer than 4 bytes reads as one of its ids (1 past a
/// byte, past two bytes, past three), the last negative as an `i32` too.
const WIDE_IDS: [u32; 3] = [0x0000_0100, 0x0001_0002, 0x8000_0001];

/// The first index of these pairs: apart from the other pairs of the check.
const FIRST_INDEX: u64 = 300;

/// With the free queue empty (the grader holds the pool's ids), puts each of [`WIDE_IDS`] on it
/// in turn for a pair of its own, and judges that pair's take.
pub fn ids_read_whole(
    run: &mut Run,
    queue: &FreeQueue,
    prefix: &str,
    seed: u64,
) -> Result<(), Fail> {
    // The pairs start together, and each is sent `go` once its id alone is on the queue.
    let mut pairs = Vec::new();
    for index in (FIRST_INDEX..).take(WIDE_IDS.len()) {
        pairs.push(spawn_pair(
            run,
            prefix,
            index,
            seed,
            1000,
            &PairOptions::default(),
        )?);
    }
    let mut judged = Ok(());
    for ((index, pair), id) in (FIRST_INDEX..).zip(pairs.iter_mut()).zip(WIDE_IDS) {
        judged = pair_ready(pair, index).and_then(|()| {
            queue.put_all(&[id_message(id)])?;
            refused(pair, index, id)
        });
        if judged.is_err() {
            break;
        }
    }
    for pair in &mut pairs {
        pair.kill_tree();
    }
    // Whatever a pair left on the queue (an id it gave back) goes, so that the check's count
    // of the queue stays its own.
    queue.take_all()?;
    judged
}

/// Pair `index`, with only `id` on the free queue, must fail with `BadId` at once.
fn refused(pair: &mut Proc, index: u64, id: u32) -> Result<(), Fail> {
    pair.send("go", &[])?;
    let answer = pair.recv_any()?;
    if answer.kind == "failed" && answer.get("kind") == Some("bad-id") {
        pair.wait()?;
        return Ok(());
    }
    let bytes: Vec<String> = id
        .to_le_bytes()
        .iter()
        .map(|b| format!("{b:#04x}"))
        .collect();
    let setting = format!(
        "with only id {id} ({id:#x}, the message [{}]) on the free queue (put there by the \
         grader; the pool's ids are 0 to {})",
        bytes.join(", "),
        SEGMENTS - 1
    );
    let said = if answer.kind == "took" {
        let took = answer.get("id").unwrap_or("?");
        let cause = match took.parse::<u32>() {
            Ok(took) if took == id & 0xff => {
                "take() decodes the id from its first byte only (u32::from(message[0])), not \
                 from all 4"
                    .to_string()
            }
            Ok(took) if took == id & 0xffff || took == id & 0xff_ffff => format!(
                "take() decodes the id from its first {} bytes only, not from all 4",
                if took == id & 0xffff { 2 } else { 3 }
            ),
            Ok(took) if took == id => "take() decodes the id whole but lets it through: it \
                 compares it with the count as a signed or narrower number (id as i32, as u8), \
                 or not at all"
                .to_string(),
            _ => "take() hands out a segment the message does not name".to_string(),
        };
        format!("took segment {took}: {cause}")
    } else {
        format!("said `{}` ({})", answer.kind, failure(&answer))
    };
    Err(Fail::failed(format!(
        "{setting}, pair {index} {said}. An id is the 4 bytes of the message, little-endian \
         (u32::from_le_bytes), and Pool::take must fail with TransferError::BadId \
         (kind=bad-id) for any id outside 0..count"
    )))
}
