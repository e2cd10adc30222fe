//! The publisher's stores into its segment, watched (hardware watchpoints): the payload's
//! bytes stored by its own instructions, and each header field stored whole.

use rand::RngExt;

use crate::engine::tracer::{Action, Call, Field, Reached, Tracer, Watched};
use crate::engine::{Fail, Proc, Run, force};

use super::HEADER_LEN;
use super::protocol::{as_expected, expect, fresh_name, spawn_publisher, with_context};
use super::publisher::mark_header;
use super::segments::{RemoveKeyOnDrop, mapped_at, segment, segment_bytes};

/// The payload's first 8 bytes, the sequence and the length, watched for stores.
const RECORD_STORES: &[Field] = &[
    Field {
        offset: HEADER_LEN,
        len: 8,
        loads: false,
    },
    Field {
        offset: 4,
        len: 4,
        loads: false,
    },
    Field {
        offset: 8,
        len: 8,
        loads: false,
    },
    Field {
        offset: PAYLOAD_MIDDLE,
        len: 8,
        loads: false,
    },
];

/// The first word of the segment's second page: inside the payload of
/// [`payload_stored_by_publisher`], on a whole page of it, which a program may hand to the
/// kernel to copy while it stores the first bytes itself.
const PAYLOAD_MIDDLE: usize = 4096;

/// Watches the publisher's stores to the payload's first bytes, and to 8 bytes on a whole page
/// in its middle: for each, one of them must leave those bytes in the segment. A payload the
/// kernel copies in (`process_vm_writev()`, a write to `/proc/self/mem`) comes with no store of
/// the publisher's own. Watches its stores to the sequence and the length too, in a header the
/// grader filled with bytes of its own: each field is stored whole, so that after each store it
/// holds the grader's bytes, 0 or its value, never a part of it. `None` where the grader may
/// not watch.
pub(super) fn payload_stored_by_publisher(run: &mut Run) -> Result<Option<()>, Fail> {
    let name = fresh_name(run)?;
    // Two bytes of the length and all four of the sequence are not 0: a store of a part of
    // either leaves a value that is neither 0 nor the field's.
    let len = loop {
        let len = run.rng().random_range(2 * PAYLOAD_MIDDLE..12000usize);
        if len % 256 != 0 {
            break len;
        }
    };
    let size = (HEADER_LEN + len + run.rng().random_range(0..100usize)) as u64;
    let sequence = u32::from_ne_bytes(std::array::from_fn(|_| run.rng().random_range(1..=255u8)));
    let payload = run.random_bytes(len);
    let mut proc = spawn_publisher(run, &name.path, name.id, size, sequence, &payload)?;
    let _removed = RemoveKeyOnDrop(Some(name.key));
    let unwatched = "the grader may not watch the publisher's stores here (ptrace, hardware \
                     watchpoints, x86-64): how it copies the payload was not seen";
    let Some((mut watch, header)) = watched_from_attach(run, &mut proc, name.key)? else {
        run.note(unwatched);
        proc.kill_tree();
        return Ok(None);
    };
    let how = format!(
        "with the stores to the first 8 bytes of its {len}-byte payload in the segment, and to \
         the 8 at offset {PAYLOAD_MIDDLE} (on the payload's second page), watched (hardware \
         watchpoints set when its shmat() returned)"
    );
    // Per watched part of the payload (its first bytes, its middle): the stores seen, and
    // whether one of them left the payload's bytes there.
    let parts = [HEADER_LEN, PAYLOAD_MIDDLE];
    let mut seen = [(0, false); 2];
    let holds_payload = |bytes: &[u8], at: usize| {
        bytes.get(at..at + 8) == Some(&payload[at - HEADER_LEN..at - HEADER_LEN + 8])
    };
    let message = loop {
        match watch.next(&mut proc, run.deadline())? {
            Watched::Armed => force::resume(proc.pid.as_raw())?,
            Watched::Unavailable => {
                drop(watch);
                force::resume(proc.pid.as_raw())?;
                run.note(unwatched);
                proc.kill_tree();
                return Ok(None);
            }
            Watched::Hit => {
                let bytes =
                    segment(name.key).and_then(|s| segment_bytes(s.id, PAYLOAD_MIDDLE + 8).ok());
                let field = watch.last_hit();
                if let Some(part) = [0, 3].iter().position(|&f| f == field) {
                    seen[part].0 += 1;
                    seen[part].1 |= bytes.is_some_and(|b| holds_payload(&b, parts[part]));
                } else if let Some(part) =
                    bytes.and_then(|b| part_of_field(&b, field, (sequence, len), &header))
                {
                    drop(watch);
                    return Err(Fail::failed(part));
                }
                watch.go_on();
            }
            Watched::Said(message) => break message,
            Watched::Lost => break proc.recv_any()?,
        }
    };
    drop(watch);
    as_expected(message, "publisher", "ready").map_err(with_context(&how))?;
    let bytes = segment(name.key).and_then(|s| segment_bytes(s.id, PAYLOAD_MIDDLE + 8).ok());
    for (at, (stores, stored)) in parts.into_iter().zip(seen) {
        let in_segment = bytes.as_ref().is_some_and(|b| holds_payload(b, at));
        if in_segment && !stored {
            let seen = match stores {
                0 => "no store to them at all".to_string(),
                n => format!("{n} stores to them, none leaving the payload's bytes"),
            };
            return Err(Fail::failed(format!(
                "{how}, the publisher said `ready` with the payload in its segment, but no \
                 instruction of its main thread stored the 8 bytes at offset {at} there \
                 ({seen}): they got there another way, copied by the kernel \
                 (process_vm_writev(), a write to /proc/self/mem) or by another thread; copy \
                 the whole payload into the segment through the address shmat() returned"
            )));
        }
    }
    proc.send("go", &[])?;
    expect(&mut proc, "publisher", "done")?;
    proc.send("exit", &[])?;
    proc.wait()?;
    Ok(Some(()))
}

/// Holds the publisher `proc` (told `go`) as its `shmat()` returns, fills the header of its
/// segment (key `key`) with bytes of its own ([`mark_header`]) and watches [`RECORD_STORES`]
/// from there on; the publisher stays stopped until [`Watched::Armed`]. `None` where the grader
/// may not hold or watch it (the publisher let go).
fn watched_from_attach(
    run: &mut Run,
    proc: &mut Proc,
    key: i32,
) -> Result<Option<(Tracer, [u8; HEADER_LEN])>, Fail> {
    let pid = proc.pid.as_raw();
    let Some(mut held) = Tracer::attach(pid, Call::any(libc::SYS_shmat), Action::Hold)? else {
        proc.send("go", &[])?;
        return Ok(None);
    };
    proc.send("go", &[])?;
    if let Reached::Passed(said) = held.wait(proc, run.deadline())? {
        drop(held);
        let said = match said {
            Some(message) => message,
            None => proc.recv_any()?,
        };
        as_expected(said, "publisher", "ready")?;
        return Ok(None);
    }
    held.release_stopped(pid)?;
    let Some(found) = segment(key) else {
        force::resume(pid)?;
        return Ok(None);
    };
    let Some(address) = mapped_at(pid, found.id) else {
        force::resume(pid)?;
        return Ok(None);
    };
    let header = mark_header(run, found.id)?;
    match Tracer::watch_at(pid, address, RECORD_STORES)? {
        Some(watch) => Ok(Some((watch, header))),
        None => {
            force::resume(pid)?;
            Ok(None)
        }
    }
}

/// What the header field `field` of [`RECORD_STORES`] (1: the sequence, 2: the length) holds
/// in `bytes` right after a store to it, if that is a part of its value (`sequence`, `len`):
/// neither the grader's bytes (`marked`, filled when the publisher's `shmat()` returned), nor 0,
/// nor the value.
fn part_of_field(
    bytes: &[u8],
    field: usize,
    (sequence, len): (u32, usize),
    marked: &[u8; HEADER_LEN],
) -> Option<String> {
    let (name, at, width, value) = match field {
        1 => ("sequence", 4, 4, u64::from(sequence)),
        _ => ("length", 8, 8, len as u64),
    };
    let as_number = |b: &[u8]| b.iter().rev().fold(0u64, |n, &b| n << 8 | u64::from(b));
    let held = as_number(bytes.get(at..at + width)?);
    let grader = as_number(&marked[at..at + width]);
    (![0, grader, value].contains(&held)).then(|| {
        format!(
            "with the stores to the header watched (hardware watchpoints set when its shmat() \
             returned, when the grader also filled the header with bytes of its own, never \
             0), right after one of the publisher's stores to the {name} field ({width} bytes \
             at offset {at}, {grader:#x} before) it held {held:#x}: a part of the grader's \
             bytes, and a part of the {name} {value:#x}: the publisher stores it in pieces, \
             narrower than the field (a u64 as two u32 halves, or byte by byte); store each \
             header field whole, at its width (the magic and the sequence one u32 store each, \
             the length one u64 store), so that no reader ever sees a field half written"
        )
    })
}
