//! A record the grader replaces under a watched reader the moment it loads the magic: the
//! sequence, the length and the payload all change. A reader that loads them after the magic
//! (after its acquire fence) reports the new record; one that loaded any of them with the magic
//! (a copy of the header, or of the whole segment, taken before its check) or before it reports
//! what was there before.

use rand::RngExt;

use crate::engine::tracer::Field;
use crate::engine::{Fail, Run};

use super::HEADER_LEN;
use super::protocol::{Name, spawn_held_reader, with_context};
use super::segments::{Planted, full_record, overwrite};
use super::watched_reads::{AtLoad, WatchedRead, watched_reader};

/// The magic, watched for loads.
const MAGIC_LOADS: &[Field] = &[Field {
    offset: 0,
    len: 4,
    loads: true,
}];

/// A full segment whose sequence, length and whole payload the grader replaces right after the
/// reader's first load of the magic. `None` where the grader may not watch.
pub(super) fn record_replaced_at_magic_load(
    run: &mut Run,
    name: &Name,
    n: u32,
) -> Result<Option<()>, Fail> {
    // Under 2 KiB: a copy of the whole segment is made of vector loads, the first of which takes
    // the magic and the header's other fields at once (a longer one may be a string copy,
    // whose watchpoint traps are not exact).
    let size = run.rng().random_range(600..2000usize);
    let first_len = size - HEADER_LEN;
    let first_sequence = run.rng().random_range(2..1_000_000u32);
    let first = run.random_bytes(first_len);
    let second_len = run.rng().random_range(first_len / 2..first_len);
    let second_sequence = first_sequence + run.rng().random_range(1..1000u32);
    // The whole room after the header changes, the bytes past the new length too.
    let room = run.random_bytes(first_len);
    let second = room[..second_len].to_vec();
    let planted = Planted::new(run, name.key, size, &full_record(first_sequence, &first))?;
    let (mut reader, output) = spawn_held_reader(run, name, false, n)?;
    let unwatched = "the grader may not watch the reader's loads here (ptrace, hardware \
                     watchpoints, x86-64): a record replaced as the reader loaded its magic was \
                     not tried";
    let replacement = {
        let mut bytes = full_record(second_sequence, &second)[4..HEADER_LEN].to_vec();
        bytes.extend_from_slice(&room);
        bytes
    };
    let Some(WatchedRead { said, loads }) =
        watched_reader(run, &mut reader, MAGIC_LOADS, unwatched, |_| {
            overwrite(planted.id, 4, &replacement)?;
            Ok(AtLoad::Release)
        })?
    else {
        return Ok(None);
    };
    let what = format!(
        "a record filling its {size}-byte segment (sequence {first_sequence}, {first_len} \
         bytes), whose sequence, length and payload the grader replaced (sequence \
         {second_sequence}, {second_len} bytes, a new payload) right after the reader's first \
         load of the magic (a hardware watchpoint), the magic left in place"
    );
    let context = format!("on {what}");
    let outcome = said.map_err(with_context(&context))?;
    if matches!(outcome.kind.as_str(), "failed" | "done") {
        reader.wait()?;
    }
    if outcome.kind != "done" {
        return Err(Fail::failed(format!(
            "{context}, the reader said `{}` (kind={}), the lab wants `done` with the new \
             record: the segment held a complete record at every moment",
            outcome.kind,
            outcome.get("kind").unwrap_or("none")
        )));
    }
    let written = std::fs::read(&output)?;
    let new_sequence = outcome.get("sequence") == Some(second_sequence.to_string().as_str());
    let new_length = outcome.get("length") == Some(second_len.to_string().as_str());
    if new_sequence && new_length && written == second {
        return Ok(Some(()));
    }
    if loads == 0 {
        return Err(Fail::failed(format!(
            "{context}: no instruction of the reader's main thread loaded the magic from its \
             mapping of the segment, yet it reported a record (sequence {}, {} bytes): it \
             reached the header another way (copied by the kernel, or by another thread); load \
             the magic from the segment, through the address shmat() returned",
            outcome.get("sequence").unwrap_or("?"),
            outcome.get("length").unwrap_or("?")
        )));
    }
    // The bytes it wrote that are the old payload's and not the new one's.
    let old_bytes = written
        .iter()
        .zip(&first)
        .zip(&room)
        .filter(|((w, old), new)| w == old && w != new)
        .count();
    let stale: Vec<&str> = [
        (
            outcome.get("sequence") == Some(first_sequence.to_string().as_str()),
            "sequence",
        ),
        (
            outcome.get("length") == Some(first_len.to_string().as_str()),
            "length",
        ),
        (old_bytes > 0, "payload"),
    ]
    .into_iter()
    .filter_map(|(stale, field)| stale.then_some(field))
    .collect();
    if stale.is_empty() {
        return Err(Fail::failed(format!(
            "{context}: the reader reported sequence {}, {} bytes and wrote {} bytes, neither \
             the record before the change nor the one after it",
            outcome.get("sequence").unwrap_or("?"),
            outcome.get("length").unwrap_or("?"),
            written.len()
        )));
    }
    Err(Fail::failed(format!(
        "{context}: the reader reported sequence {}, {} bytes and wrote {} bytes ({old_bytes} of \
         them the old payload's): its {} {} what the segment held before its load of the magic \
         was over; it loaded {} together with the magic (one copy of the header, or of the whole \
         segment, taken before the check) or before it, so that a reader that sees the magic \
         may report fields of a record not yet complete; load the magic first, then an acquire \
         fence, then the length and the sequence, then copy the payload, each from the segment \
         itself",
        outcome.get("sequence").unwrap_or("?"),
        outcome.get("length").unwrap_or("?"),
        written.len(),
        stale.join(" and "),
        if stale.len() > 1 { "are" } else { "is" },
        if stale.len() > 1 { "them" } else { "it" },
    )))
}
