//! A record written again into the same segment, from one buffer refilled in place between the
//! writes: the same address and length, other bytes. Every `write_record()` copies the payload
//! it is given, whatever an earlier call copied: it keeps no state from one call to the next.

use rand::RngExt;

use super::HEADER_LEN;
use super::protocol::{
    Name, Published, expect, first_difference, fresh_name, payload_file, spawn_publisher_with,
};
use super::segments::segment_bytes;
use crate::engine::{Fail, Run};

pub fn written_again(run: &mut Run) -> Result<String, Fail> {
    let name: Name = fresh_name(run)?;
    let len = run.rng().random_range(1000..8000usize);
    let size = (HEADER_LEN + len) as u64;
    let sequence = run.rng().random_range(2..1_000_000u32);
    let mut payloads: Vec<Vec<u8>> = (0..2).map(|_| run.random_bytes(len)).collect();
    // The last write differs from the one before at a few bytes only, away from both ends and
    // the middle: a copy skipped because some bytes looked the same shows too.
    let mut last = payloads[1].clone();
    let changed = changed_bytes(run, len);
    for &at in &changed {
        last[at] ^= 0x5a;
    }
    payloads.push(last);
    let file = payload_file(run, sequence);
    let mut proc = spawn_publisher_with(
        run,
        (&name.path, name.id, size),
        sequence,
        &payloads[0],
        &["--rewrite"],
    )?;
    proc.send("go", &[])?;
    let mut published = Published {
        discard: true,
        proc,
        name,
        size,
        sequence,
        payload: payloads[0].clone(),
    }
    .once_ready(run, None)?;
    for step in 1..=2usize {
        // The publisher reads the file again into its buffer: here, the bytes it must publish.
        std::fs::write(&file, &payloads[step])?;
        published.proc.send("go", &[])?;
        expect(&mut published.proc, "publisher", "rewritten").map_err(|fail| match fail {
            Fail::Failed(why) => Fail::Failed(format!(
                "{why}; that was the publisher writing a record again into the {size}-byte \
                 segment it had just published into (`--rewrite`, write {step} of 2, the same \
                 {len} bytes long, which fit): write_record() copies the payload it is given \
                 every time, into a segment that holds a record already too, keeping nothing \
                 from one call to the next"
            )),
            other => other,
        })?;
        let found = published.segment()?;
        let bytes = segment_bytes(found.id, (found.size as usize).min(size as usize))?;
        let want_sequence = sequence.wrapping_add(step as u32);
        let header = (
            bytes
                .get(4..8)
                .map(|b| u32::from_ne_bytes(b.try_into().expect("4 bytes"))),
            bytes
                .get(8..16)
                .map(|b| u64::from_ne_bytes(b.try_into().expect("8 bytes"))),
        );
        if header != (Some(want_sequence), Some(len as u64)) {
            return Err(Fail::failed(format!(
                "after write_record(sequence {want_sequence}, {len} bytes) returned, the \
                 segment's header held sequence {} and length {}: each call writes its own \
                 sequence and length",
                header.0.map_or("none".into(), |s| s.to_string()),
                header.1.map_or("none".into(), |l| l.to_string()),
            )));
        }
        let payload = bytes.get(HEADER_LEN..HEADER_LEN + len).unwrap_or_default();
        if payload == payloads[step] {
            continue;
        }
        let rewrite = if step == 1 {
            "a buffer of its own filled with other bytes".to_string()
        } else {
            format!(
                "the same buffer (the same address and length) refilled in place, {} of its \
                 bytes changed (at offsets {changed:?} of the payload)",
                changed.len()
            )
        };
        let what = if payload == payloads[step - 1] {
            "the payload of the write before it: write_record() skipped the copy, as if the \
             bytes were the same because the pointer, the length or some of the bytes were. \
             Copy the whole payload at every call, and keep no state from one call to the next"
                .to_string()
        } else {
            format!(
                "other bytes, from byte {} on: copy the whole payload at every call",
                first_difference(payload, &payloads[step])
            )
        };
        return Err(Fail::failed(format!(
            "the publisher wrote its record again into its segment (publication \
             {want_sequence}), from {rewrite}; once write_record() returned, the segment's \
             header was right but its payload held {what}"
        )));
    }
    published.finish()?;
    Ok(format!(
        "the record written twice more into its {size}-byte segment, from one buffer refilled \
         in place, held each time the payload of that write"
    ))
}

/// Four offsets of a `len`-byte payload (at least 1000), each at least 64 bytes from both ends
/// and from the middle, where a look at a few samples would not go.
fn changed_bytes(run: &mut Run, len: usize) -> Vec<usize> {
    let half = len / 2;
    let mut offsets: Vec<usize> = [64..half - 64, half + 64..len - 64]
        .into_iter()
        .flat_map(|range| [range.clone(), range])
        .map(|range| run.rng().random_range(range))
        .collect();
    offsets.sort_unstable();
    offsets.dedup();
    offsets
}
