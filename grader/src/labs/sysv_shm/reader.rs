//! Checks of the reader alone, on segments the grader planted: records it must copy out, and
//! segments it must refuse, each with the kind of error the lab names.

use rand::RngExt;

use crate::engine::{Fail, Run};

use super::protocol::{Name, fresh_name, read_to_end, spawn_reader, verify_read, with_context};
use super::segments::{Planted, full_record, record};
use super::{HEADER_LEN, MAGIC};

/// Runs a reader on what the check planted and returns its last message: `failed` (with its
/// kind), or `done` when it read a record.
fn reader_outcome(
    run: &mut Run,
    name: &Name,
    n: u32,
    what: &str,
) -> Result<ipc_labs_driver::Message, Fail> {
    let (mut reader, _) = spawn_reader(run, name, false, n)?;
    let context = format!("on {what}");
    let mut message = reader.recv_any().map_err(with_context(&context))?;
    if message.kind == "attached" {
        reader.send("go", &[])?;
        message = reader.recv_any().map_err(|fail| match fail {
            Fail::Crashed(m) if m.contains("overflow") => Fail::Crashed(format!(
                "on {what}, the reader crashed: {m}; an arithmetic overflow: compare the length \
                 with the room after the header (size - 16) instead of adding to it"
            )),
            Fail::Crashed(m) => Fail::Crashed(format!(
                "on {what}, the reader crashed: {m}; check the header before you trust it"
            )),
            other => other,
        })?;
    }
    if matches!(message.kind.as_str(), "failed" | "done") {
        reader.wait()?;
    }
    Ok(message)
}

/// Runs a reader on what the check planted and requires `failed` with `kind`.
fn reader_refuses(run: &mut Run, name: &Name, kind: &str, n: u32, what: &str) -> Result<(), Fail> {
    let message = reader_outcome(run, name, n, what)?;
    match (message.kind.as_str(), message.get("kind")) {
        ("failed", Some(k)) if k == kind => Ok(()),
        ("done", _) => Err(Fail::failed(format!(
            "on {what}, the reader reported a record (sequence {}, {} bytes) instead of \
             kind={kind}: validate the magic and the length before you trust the data",
            message.get("sequence").unwrap_or("?"),
            message.get("length").unwrap_or("?")
        ))),
        ("failed", Some("shmget"))
            if kind == "not-found" && message.get("error").is_some_and(|e| e.contains("EINVAL")) =>
        {
            // shmget() of a missing key fails with ENOENT unless it may create: then a size of
            // 0 is what it refuses.
            Err(Fail::failed(format!(
                "on {what}, the reader said kind=shmget ({}), not not-found: its shmget() tried \
                 to create the missing segment (IPC_CREAT, with size 0); a reader finds without \
                 creating: shmget(key, 0, 0)",
                message.get("error").unwrap_or("?")
            )))
        }
        (said, got) => Err(Fail::failed(format!(
            "on {what}, the reader said `{said}` (kind={}), the lab wants `failed` with \
             kind={kind}",
            got.unwrap_or("none")
        ))),
    }
}

/// Runs a reader on a record the check planted and requires it read back as it is.
fn reader_accepts(
    run: &mut Run,
    name: &Name,
    (sequence, payload): (u32, &[u8]),
    n: u32,
    what: &str,
) -> Result<(), Fail> {
    let context = format!("on {what}");
    let (done, output) = read_to_end(run, name, false, n).map_err(with_context(&context))?;
    verify_read(&done, &output, sequence, payload, "planted").map_err(with_context(&context))
}

pub fn reader_reads_segment(run: &mut Run) -> Result<String, Fail> {
    let name = fresh_name(run)?;
    // Not a multiple of the page size, and the payload fills the segment to its last byte.
    let size = run.rng().random_range(5000..20000usize);
    let sequence = run.rng().random_range(2..1_000_000u32);
    let payload = run.random_bytes(size - HEADER_LEN);
    {
        let _planted = Planted::new(run, name.key, size, &full_record(sequence, &payload))?;
        let what = format!(
            "a {}-byte payload the grader planted in a {size}-byte segment, which it fills \
             exactly",
            payload.len()
        );
        reader_accepts(run, &name, (sequence, &payload), 1, &what)?;
    }
    let empty_sequence = run.rng().random_range(2..1_000_000u32);
    {
        let empty = record(MAGIC, empty_sequence, 0, &[]);
        let _planted = Planted::new(run, name.key, HEADER_LEN, &empty)?;
        let what = "an empty record the grader planted in a segment of just a 16-byte header";
        reader_accepts(run, &name, (empty_sequence, &[]), 2, what)?;
    }
    Ok(format!(
        "the reader copied out planted records: {} bytes filling a {size}-byte segment, and an \
         empty one in 16 bytes",
        payload.len()
    ))
}

pub fn reader_validates(run: &mut Run) -> Result<String, Fail> {
    let name = fresh_name(run)?;
    // Not a multiple of the page size: a reader that reads a little past the segment's end
    // reads the rest of its last page instead of crashing, and says what it believed.
    let size = 4096 + run.rng().random_range(100..3000usize);
    let capacity = size - HEADER_LEN;
    // Random bytes, but for a plausible length: only the magic tells them from a record.
    let mut garbage = run.random_bytes(size);
    if garbage[..4] == MAGIC.to_ne_bytes() {
        garbage[0] ^= 0xff;
    }
    garbage[8..16].copy_from_slice(&100u64.to_ne_bytes());
    {
        let _planted = Planted::new(run, name.key, size, &garbage)?;
        reader_refuses(run, &name, "bad-magic", 1, "a segment of random bytes")?;
    }
    // Random bytes whose length field is as random: the length of what is not a record means
    // nothing, so the magic is checked first.
    let huge = run.rng().random_range(1u64 << 40..u64::MAX);
    garbage[8..16].copy_from_slice(&huge.to_ne_bytes());
    {
        let _planted = Planted::new(run, name.key, size, &garbage)?;
        let what = format!("random bytes whose length field says {huge}");
        let message = reader_outcome(run, &name, 2, &what)?;
        if message.kind == "failed" && message.get("kind") == Some("bad-length") {
            return Err(Fail::failed(format!(
                "on {what} and no magic, the reader said kind=bad-length, not bad-magic (with a \
                 plausible length it said bad-magic): it checks the length before the magic; \
                 check the header fits, then the magic, then the length"
            )));
        }
        if (message.kind.as_str(), message.get("kind")) != ("failed", Some("bad-magic")) {
            return Err(Fail::failed(format!(
                "on {what}, the reader said `{}` (kind={}), the lab wants `failed` with \
                 kind=bad-magic",
                message.kind,
                message.get("kind").unwrap_or("none")
            )));
        }
    }
    let lengths = [
        (
            capacity as u64 + 1,
            format!(
                "a header claiming {} payload bytes in a {size}-byte segment, one more than fit \
                 after the 16-byte header",
                capacity + 1
            ),
        ),
        (
            u64::MAX - 7,
            "a header claiming 2^64 - 8 payload bytes, which wraps around to 8 when the 16-byte \
             header is added"
                .to_string(),
        ),
    ];
    for (n, (length, what)) in (3..).zip(lengths) {
        let payload = run.random_bytes(capacity);
        let lying = record(MAGIC, 9, length, &payload);
        let _planted = Planted::new(run, name.key, size, &lying)?;
        let message = reader_outcome(run, &name, n, &what)?;
        match (message.kind.as_str(), message.get("kind")) {
            ("failed", Some("bad-length")) => {}
            ("done", _) => {
                return Err(Fail::failed(format!(
                    "on {what}, the reader reported a record of {} bytes instead of \
                     kind=bad-length: the length must fit after the header, length <= size - 16 \
                     (compare it with the room after the header, in a way that cannot \
                     overflow)",
                    message.get("length").unwrap_or("?")
                )));
            }
            (said, got) => {
                return Err(Fail::failed(format!(
                    "on {what}, the reader said `{said}` (kind={}), the lab wants `failed` with \
                     kind=bad-length",
                    got.unwrap_or("none")
                )));
            }
        }
    }
    {
        // The magic and the sequence, but no room for the length: the header does not fit.
        let cut = record(MAGIC, 9, 0, &[]);
        let _planted = Planted::new(run, name.key, 8, &cut)?;
        reader_refuses(
            run,
            &name,
            "bad-length",
            5,
            "an 8-byte segment, too small for the 16-byte header",
        )?;
    }
    reader_refuses(run, &name, "not-found", 6, "a key with no segment")?;
    let tried = "random bytes (with a plausible and a random length), a length one past the \
                     end and one that wraps, a segment smaller than a header and a missing \
                     segment";
    Ok(format!("the reader rejected {tried}"))
}
