//! A record republished in its segment between two reads of one attachment: another sequence,
//! another length and another payload under the magic. The second `read_record()` reports the
//! new record whole: nothing the first read loaded (the header's fields included) may stand in
//! for what the segment holds now.

use rand::RngExt;

use crate::engine::{Fail, Run};

use super::HEADER_LEN;
use super::protocol::{
    Name, exits_cleanly, expect, first_difference, spawn_reader_reading_twice, verify_read,
    with_context,
};
use super::segments::{Planted, full_record, overwrite};

/// A reader (`read --first-output`) reads a planted record, then, from the same attachment,
/// the one the grader republished in the segment meanwhile.
pub(super) fn republished_between_reads(run: &mut Run, name: &Name, n: u32) -> Result<(), Fail> {
    let size = run.rng().random_range(5000..9000usize);
    let capacity = size - HEADER_LEN;
    let first_len = run.rng().random_range(100..=capacity);
    // Shorter or longer, never the same: a length kept from the first read shows either way.
    let second_len = loop {
        let len = run.rng().random_range(100..=capacity);
        if len != first_len {
            break len;
        }
    };
    let first_sequence = run.rng().random_range(2..1_000_000u32);
    let second_sequence = first_sequence + run.rng().random_range(1..1000u32);
    let first = run.random_bytes(first_len);
    let second = run.random_bytes(second_len);
    let planted = Planted::new(run, name.key, size, &full_record(first_sequence, &first))?;
    let (mut reader, first_output, output) = spawn_reader_reading_twice(run, name, false, n)?;
    let what = format!(
        "a planted record (sequence {first_sequence}, {first_len} bytes) that the grader \
         republished in its segment between the reader's two reads of one attachment (a new \
         record: sequence {second_sequence}, {second_len} bytes, another payload, the magic \
         cleared first and stored last)"
    );
    let context = format!("on {what}");
    reader.send("go", &[])?;
    expect(&mut reader, "reader", "attached").map_err(with_context(&context))?;
    reader.send("go", &[])?;
    let read = expect(&mut reader, "reader", "read").map_err(with_context(&context))?;
    verify_read(&read, &first_output, first_sequence, &first, "planted")
        .map_err(with_context(&format!("{context}, at the first read")))?;
    let republished = full_record(second_sequence, &second);
    overwrite(planted.id, 0, &[0; 4])?;
    overwrite(planted.id, 4, &republished[4..])?;
    overwrite(planted.id, 0, &republished[..4])?;
    reader.send("go", &[])?;
    let said = reader.recv_any().map_err(with_context(&context))?;
    if said.kind != "done" {
        return Err(Fail::failed(format!(
            "{context}, the reader's second read said `{}` (kind={}), the lab wants `done` with \
             the new record: it is complete, and fits its segment",
            said.kind,
            said.get("kind").unwrap_or("none")
        )));
    }
    exits_cleanly(&mut reader, "reader")?;
    let stale: Vec<&str> = [
        (
            said.get("sequence") == Some(first_sequence.to_string().as_str()),
            "sequence",
        ),
        (
            said.get("length") == Some(first_len.to_string().as_str()),
            "length",
        ),
    ]
    .into_iter()
    .filter_map(|(stale, field)| stale.then_some(field))
    .collect();
    if !stale.is_empty() {
        let output_len = std::fs::read(&output)?.len();
        return Err(Fail::failed(format!(
            "{context}: at its second read the reader reported sequence {}, {} bytes (it wrote \
             {output_len}): the {} of the first record, which the segment no longer held; it \
             kept the header's fields from its first read_record() (for the attachment, or for \
             the process) instead of loading them again; at every read_record(), check the \
             magic, then, after an acquire fence, load the length and the sequence from the \
             segment itself: whatever it keeps from one call must still be right for the next",
            said.get("sequence").unwrap_or("?"),
            said.get("length").unwrap_or("?"),
            stale.join(" and ")
        )));
    }
    let written = std::fs::read(&output)?;
    if written.len() == first_len && written == first {
        return Err(Fail::failed(format!(
            "{context}: at its second read the reader reported the new header but output the \
             first record's payload (first difference from the new one at byte {}), which the \
             segment no longer held: the payload came from a copy kept outside the segment; \
             copy it out of the segment every time",
            first_difference(&written, &second)
        )));
    }
    verify_read(&said, &output, second_sequence, &second, "republished")
        .map_err(with_context(&format!("{context}, at the second read")))
}
