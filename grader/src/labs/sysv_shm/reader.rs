//! Checks of the reader alone, on segments the grader planted: records it must copy out, and
//! segments it must refuse, each with the kind of error the lab names. Records changed under a
//! watched reader are `watched_reads`'s.

use rand::RngExt;

use crate::engine::{Fail, Run};

use super::changed_at_magic::record_replaced_at_magic_load;
use super::protocol::{
    Name, as_expected, exits_cleanly, expect, fresh_name, read_to_end, spawn_held_reader,
    spawn_reader, verify_read, with_context,
};
use super::republished::republished_between_reads;
use super::segments::{Planted, full_record, record};
use super::watched_reads::{
    AtLoad, WatchedRead, length_changed_after_its_load, magic_stored_after_its_look,
    record_completed_while_read, watched_reader,
};
use super::{HEADER_LEN, MAGIC, kernel_copies};
use crate::engine::tracer::{Action, Call, Field, Reached, Tracer};

/// Runs a reader on what the check planted and returns its last message: `failed` (with its
/// kind), or `done` when it read a record.
fn reader_outcome(
    run: &mut Run,
    name: &Name,
    n: u32,
    what: &str,
) -> Result<ipc_labs_driver::Message, Fail> {
    reader_outcome_of_length(run, name, n, what, "")
}

/// [`reader_outcome`] on a planted length that a reader accepts only for `why_accepted`.
fn reader_outcome_of_length(
    run: &mut Run,
    name: &Name,
    n: u32,
    what: &str,
    why_accepted: &str,
) -> Result<ipc_labs_driver::Message, Fail> {
    let (mut reader, _) = spawn_reader(run, name, false, n)?;
    let context = format!("on {what}");
    let mut message = reader.recv_any().map_err(with_context(&context))?;
    if message.kind == "attached" {
        reader.send("go", &[])?;
        message = reader.recv_any().map_err(|fail| match fail {
            Fail::Crashed(m) if m.contains("attempt to add with overflow") => {
                Fail::Crashed(format!(
                    "on {what}, the reader crashed: {m}; it added the header's 16 bytes to the \
                     length it read, which overflows: compare the length with the room after \
                     the header (size - 16) instead of adding to it"
                ))
            }
            Fail::Crashed(m) if m.contains("capacity overflow") => Fail::Crashed(format!(
                "on {what}, the reader crashed: {m}; it accepted the length and tried to \
                 allocate that many bytes: its length check let it through{why_accepted}: \
                 compare the length, unsigned, with the room after the header (size - 16) \
                 instead of adding to it"
            )),
            Fail::Crashed(m) => Fail::Crashed(format!(
                "on {what}, the reader crashed: {m}; it was to refuse this segment: check \
                 that a header fits, then the magic, then the length"
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
    refused(&message, kind, what)
}

/// A reader on a key with no segment: `not-found`, from the one look it took. Held as its
/// `shmget(key, 0, 0)` returns `ENOENT`, it finds a segment with the key made right then: a
/// reader that looks again (waiting for a publisher) attaches it.
fn not_found_at_once(run: &mut Run, name: &Name, n: u32) -> Result<(), Fail> {
    let what = "a key with no segment";
    let looks = Call::bits(libc::SYS_shmget, 2, libc::IPC_CREAT as u64, 0);
    let (mut reader, _) = spawn_held_reader(run, name, false, n)?;
    let Some(mut tracer) = Tracer::attach(reader.pid.as_raw(), looks, Action::HoldAfter)? else {
        reader.kill_tree();
        return reader_refuses(run, name, "not-found", n, what);
    };
    reader.send("go", &[])?;
    if let Reached::Passed(first) = tracer.wait(&mut reader, run.deadline())? {
        drop(tracer);
        // The tracer lost it (it exited, or looked on another thread): what it said tells.
        let message = match first {
            Some(message) => message,
            None => reader.recv_any()?,
        };
        reader.kill_tree();
        if message.kind == "failed" && message.get("kind") == Some("not-found") {
            return Err(Fail::failed(format!(
                "on {what}, the reader said kind=not-found, but its main thread never called \
                 shmget() to look for the key: it decided NotFound from something other than \
                 shmget()'s ENOENT (a look in /proc/sysvipc/shm, say), or it called shmget() \
                 from another thread; NotFound is what Segment::open's shmget(key, 0, 0) \
                 answers, called from the thread that calls it"
            )));
        }
        // It said something else first: judged without the late segment.
        return reader_refuses(run, name, "not-found", n, what);
    }
    let payload = run.random_bytes(64);
    let size = 4096 + run.rng().random_range(1..4096usize);
    let _planted = Planted::new(run, name.key, size, &full_record(3, &payload))?;
    tracer.release();
    let context = format!("on {what}");
    let message = reader.recv_any().map_err(with_context(&context))?;
    if message.kind == "attached" {
        reader.kill_tree();
        return Err(Fail::failed(format!(
            "{context}, the reader's shmget(key, 0, 0) returned ENOENT; the grader then made a \
             segment with the key, and the reader attached it (it said `attached`): after \
             ENOENT it looked again, waiting for a segment to appear; ENOENT is NotFound at \
             once: the reader reports what its look found, not a segment made after it"
        )));
    }
    if matches!(message.kind.as_str(), "failed" | "done") {
        reader.wait()?;
    }
    refused(&message, "not-found", what)
}

/// A reader's last message on `what`, against the `failed` with `kind` the lab wants.
fn refused(message: &ipc_labs_driver::Message, kind: &str, what: &str) -> Result<(), Fail> {
    match (message.kind.as_str(), message.get("kind")) {
        ("failed", Some(k)) if k == kind => Ok(()),
        ("done", _) => Err(Fail::failed(format!(
            "on {what}, the reader reported a record (sequence {}, {} bytes) instead of \
             kind={kind}: {}",
            message.get("sequence").unwrap_or("?"),
            message.get("length").unwrap_or("?"),
            if kind == "bad-magic" {
                "it did not check the magic; a segment that does not start with MAGIC holds no \
                 record"
            } else {
                "validate the header before you trust the data"
            }
        ))),
        ("failed", Some("shmget"))
            if kind == "not-found"
                && message.get("error").is_some_and(|e| e.contains("EINVAL")) =>
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

/// As [`reader_accepts`], with the reader traced from its `shmat()` to its `shmdt()`: a call
/// that moves bytes in between ([`kernel_copies`]), judged by the caller after the watched
/// reads, whose diagnoses say more.
pub(super) fn reader_copies_itself(
    run: &mut Run,
    name: &Name,
    (sequence, payload): (u32, &[u8]),
    what: &str,
) -> Result<Option<Fail>, Fail> {
    let context = format!("on {what}");
    let (mut reader, output) = spawn_held_reader(run, name, false, 1)?;
    let pid = reader.pid.as_raw();
    let traced = kernel_copies::trace_reader(pid)?;
    reader.send("go", &[])?;
    expect(&mut reader, "reader", "attached").map_err(with_context(&context))?;
    reader.send("go", &[])?;
    let copy = match traced {
        Some(tracer) => kernel_copies::copy_made(tracer, pid, run.deadline(), true)?,
        None => None,
    };
    let done = expect(&mut reader, "reader", "done").map_err(with_context(&context))?;
    exits_cleanly(&mut reader, "reader")?;
    verify_read(&done, &output, sequence, payload, "planted").map_err(with_context(&context))?;
    Ok(copy.map(|copy| {
        if copy == kernel_copies::DETACHED_ANOTHER_WAY {
            return Fail::failed(format!(
                "{context}: after its shmat() the reader made no shmdt(), yet when it next \
                 called a system call that moves bytes the segment was no longer in its \
                 /proc/PID/maps: it detached the segment another way, such as munmap() of the \
                 address shmat() returned; shmdt() is the call that detaches a SysV segment \
                 (and the one whose failure is Detach): Segment::detach calls it"
            ));
        }
        Fail::failed(format!(
            "{context}: between its shmat() and its shmdt() the reader's main thread called \
             {copy}, a system call that moves bytes: the kernel copied (a part of) the payload \
             for it; the reader copies the payload out by its own loads, through the address \
             shmat() returned, and makes no call between its shmat() and its shmdt() but to \
             say `attached` and hear `go`"
        ))
    }))
}

pub fn reader_reads_segment(run: &mut Run) -> Result<String, Fail> {
    let name = fresh_name(run)?;
    // Not a multiple of the page size, and the payload fills the segment to its last byte.
    let size = run.rng().random_range(9000..24000usize);
    let sequence = run.rng().random_range(2..1_000_000u32);
    let payload = run.random_bytes(size - HEADER_LEN);
    let copied_by_a_call = {
        let _planted = Planted::new(run, name.key, size, &full_record(sequence, &payload))?;
        let what = format!(
            "a {}-byte payload the grader planted in a {size}-byte segment, which it fills \
             exactly",
            payload.len()
        );
        reader_copies_itself(run, &name, (sequence, &payload), &what)?
    };
    let big_copied_by_a_call =
        super::big_record::big_record_copied_by_loads(run, &name, payload.len())?;
    let empty_sequence = run.rng().random_range(2..1_000_000u32);
    {
        let empty = record(MAGIC, empty_sequence, 0, &[]);
        let _planted = Planted::new(run, name.key, HEADER_LEN, &empty)?;
        let what = "an empty record the grader planted in a segment of just a 16-byte header";
        reader_accepts(run, &name, (empty_sequence, &[]), 2, what)?;
    }
    // Every u32 is a sequence: the same record as the first but for the sequence, so that a
    // refusal can only be of the sequence.
    for (n, edge) in [(3, 0), (4, u32::MAX)] {
        let _planted = Planted::new(run, name.key, size, &full_record(edge, &payload))?;
        let what = format!(
            "the same planted record with sequence {edge} (accepted with sequence {sequence})"
        );
        reader_accepts(run, &name, (edge, &payload), n, &what).map_err(|fail| match fail {
            Fail::Failed(m) => Fail::Failed(format!(
                "{m}; a sequence is whatever u32 the publisher was told, {edge} too: a record \
                 is refused only when a header does not fit, its magic is not MAGIC or its \
                 length does not fit"
            )),
            other => other,
        })?;
    }
    republished_between_reads(run, &name, 7)?;
    let watched = payload_loaded_from_mapping(run, &name, 5)?;
    if let Some(fail) = copied_by_a_call {
        return Err(fail);
    }
    if let Some(fail) = big_copied_by_a_call {
        return Err(fail);
    }
    Ok(format!(
        "the reader copied out planted records: {} bytes filling a {size}-byte segment (with \
         sequences {sequence}, 0 and {}), and an empty one in 16 bytes, and, from the same \
         attachment, a record republished after its first read{}",
        payload.len(),
        u32::MAX,
        if watched.is_some() {
            "; watched, it loaded the payload from its mapping itself"
        } else {
            ""
        }
    ))
}

/// The payload's first 8 bytes, watched for loads.
const PAYLOAD_LOADS: &[Field] = &[Field {
    offset: HEADER_LEN,
    len: 8,
    loads: true,
}];

/// Where the last 8 bytes of the long payload watched for loads start: three pages in, far
/// past the first bytes, so that a reader that loads only a first part itself is seen.
const FAR_WORD: usize = HEADER_LEN + 3 * 4096;

/// The long payload's last 8 bytes, watched for loads.
const FAR_PAYLOAD_LOADS: &[Field] = &[Field {
    offset: FAR_WORD,
    len: 8,
    loads: true,
}];

/// Watches the reader's loads of the payload's first bytes, then of the last bytes of a
/// payload three pages long: it must copy the whole payload out of its mapping itself, not have
/// the kernel copy it or a part of it (a `read()` of `/proc/self/mem`, `process_vm_readv()`),
/// which no load of its own would show. `None` where the grader may not watch.
fn payload_loaded_from_mapping(run: &mut Run, name: &Name, n: u32) -> Result<Option<()>, Fail> {
    let size = 4096 + run.rng().random_range(100..8000usize);
    let len = size - HEADER_LEN - run.rng().random_range(0..100usize);
    let first = "the payload's first bytes";
    if loads_of(run, name, (size, len), (PAYLOAD_LOADS, first), n)?.is_none() {
        return Ok(None);
    }
    let len = FAR_WORD + 8 - HEADER_LEN;
    let size = len + HEADER_LEN + run.rng().random_range(0..100usize);
    let last = format!("the payload's last 8 bytes (at offset {FAR_WORD})");
    loads_of(run, name, (size, len), (FAR_PAYLOAD_LOADS, &last), n + 1)
}

/// Runs a reader on a planted record of `len` bytes in a `size`-byte segment with the loads of
/// `fields` (`what` they are) watched, and requires at least one. `None` where the grader may
/// not watch.
fn loads_of(
    run: &mut Run,
    name: &Name,
    (size, len): (usize, usize),
    (fields, watched): (&'static [Field], &str),
    n: u32,
) -> Result<Option<()>, Fail> {
    let sequence = run.rng().random_range(2..1_000_000u32);
    let payload = run.random_bytes(len);
    let _planted = Planted::new(run, name.key, size, &full_record(sequence, &payload))?;
    let (mut reader, output) = spawn_held_reader(run, name, false, n)?;
    let unwatched = "the grader may not watch the reader's loads here (ptrace, hardware \
                     watchpoints, x86-64): how it copies the payload was not seen";
    let Some(WatchedRead { said, loads }) =
        watched_reader(run, &mut reader, fields, unwatched, |_| Ok(AtLoad::GoOn))?
    else {
        return Ok(None);
    };
    let context = format!(
        "on a {len}-byte record the grader planted in a {size}-byte segment, the loads of \
         {watched} watched (a hardware watchpoint set when the reader's shmat() returned)"
    );
    let message = said.map_err(with_context(&context))?;
    let done = as_expected(message, "reader", "done").map_err(with_context(&context))?;
    exits_cleanly(&mut reader, "reader")?;
    verify_read(&done, &output, sequence, &payload, "planted").map_err(with_context(&context))?;
    if loads == 0 {
        return Err(Fail::failed(format!(
            "{context}: the reader wrote the planted payload, but no instruction of its main \
             thread ever loaded {watched} from its mapping of the segment: they reached it \
             another way, copied by the kernel (a read() of /proc/self/mem, \
             process_vm_readv()) or by another thread; copy the whole payload out of the \
             segment through the address shmat() returned"
        )));
    }
    Ok(Some(()))
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
    {
        // MAGIC's bytes in the other order, before a header that fits in either order (an
        // empty payload): only MAGIC as the publisher stores it starts a record.
        let swapped = record(MAGIC.swap_bytes(), run.rng().random(), 0, &[]);
        let _planted = Planted::new(run, name.key, size, &swapped)?;
        let what = "a segment that starts with MAGIC's bytes in the other byte order (\"RCPI\"), \
                    then a header that fits in either order";
        let message = reader_outcome(run, &name, 13, what)?;
        if message.kind == "done" {
            return Err(Fail::failed(format!(
                "on {what}, the reader reported a record (sequence {}, {} bytes) instead of \
                 kind=bad-magic: it accepts the byte-swapped magic; a segment whose first word \
                 is not MAGIC, as the publisher stores it, holds no record",
                message.get("sequence").unwrap_or("?"),
                message.get("length").unwrap_or("?")
            )));
        }
        refused(&message, "bad-magic", what)?;
    }
    let lengths = [
        (
            capacity as u64 + 1,
            format!(
                "a header claiming {} payload bytes in a {size}-byte segment, one more than fit \
                 after the 16-byte header",
                capacity + 1
            ),
            "",
        ),
        (
            1 << 63,
            "a header claiming 2^63 payload bytes (16 + 2^63 does not wrap around; as a signed \
             64-bit number it is negative)"
                .to_string(),
            " (it compared the length as a signed number, which a length of 2^63 or more is \
             not)",
        ),
        (
            u64::MAX - 7,
            "a header claiming 2^64 - 8 payload bytes, which wraps around to 8 when the 16-byte \
             header is added"
                .to_string(),
            " (16 + length wraps around to a small number; 2^63, which does not wrap, it \
             refused)",
        ),
        (
            (1 << 32) + capacity as u64 / 2,
            format!(
                "a header claiming 2^32 + {} payload bytes (its low 32 bits a length that fits, \
                 the high ones not zero)",
                capacity / 2
            ),
            "",
        ),
    ];
    for (n, (length, what, why_accepted)) in [3, 12, 4, 11].into_iter().zip(lengths) {
        let payload = run.random_bytes(capacity);
        let lying = record(MAGIC, 9, length, &payload);
        let _planted = Planted::new(run, name.key, size, &lying)?;
        let message = reader_outcome_of_length(run, &name, n, &what, why_accepted)?;
        match (message.kind.as_str(), message.get("kind")) {
            ("failed", Some("bad-length")) => {}
            ("done", _) if message.get("length") == Some(&(length & 0xffff_ffff).to_string()) => {
                return Err(Fail::failed(format!(
                    "on {what}, the reader reported a record of {} bytes, the length's low 32 \
                     bits, instead of kind=bad-length: it loads the 8-byte length field \
                     narrower than it is (a u32); the header's fields are read whole, and this \
                     length does not fit after the header",
                    message.get("length").unwrap_or("?")
                )));
            }
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
        // One byte short of a header: the magic, the sequence and 7 of the length's 8 bytes.
        let cut = record(MAGIC, 9, 0, &[]);
        let _planted = Planted::new(run, name.key, HEADER_LEN - 1, &cut[..HEADER_LEN - 1])?;
        let what = "a 15-byte segment that starts with the magic, too small for the 16-byte \
                    header";
        let message = reader_outcome(run, &name, 5, what)?;
        match (message.kind.as_str(), message.get("kind")) {
            ("failed", Some("bad-length")) => {}
            ("done", _) => {
                return Err(Fail::failed(format!(
                    "on {what}, the reader reported a record (sequence {}, {} bytes) instead of \
                     kind=bad-length: it read a header the segment cannot hold (the last byte \
                     of its length lies past the segment's end); check that the segment holds \
                     a header (size >= 16) before you read one",
                    message.get("sequence").unwrap_or("?"),
                    message.get("length").unwrap_or("?")
                )));
            }
            ("failed", Some("shmget")) => {
                let error = message.get("error").unwrap_or("?").to_string();
                let why = shmget_refused_small(run, &name, &error)?;
                return Err(Fail::failed(format!(
                    "on {what}, the reader said kind=shmget ({error}), the lab wants \
                     kind=bad-length: {why}"
                )));
            }
            (said, got) => {
                return Err(Fail::failed(format!(
                    "on {what}, the reader said `{said}` (kind={}), the lab wants `failed` with \
                     kind=bad-length: a segment smaller than a header holds no record",
                    got.unwrap_or("none")
                )));
            }
        }
    }
    {
        // The same size, without the magic: the size is checked before the magic.
        let cut = &garbage[..HEADER_LEN - 1];
        let _planted = Planted::new(run, name.key, HEADER_LEN - 1, cut)?;
        let what = "a 15-byte segment of random bytes, too small for the 16-byte header";
        let message = reader_outcome(run, &name, 6, what)?;
        match (message.kind.as_str(), message.get("kind")) {
            ("failed", Some("bad-length")) => {}
            ("failed", Some("bad-magic")) => {
                return Err(Fail::failed(format!(
                    "on {what}, the reader said kind=bad-magic, not bad-length (with the magic \
                     in it, it said bad-length): it checks the magic before it checks that a \
                     header fits; check the size first (a segment smaller than a header is \
                     BadLength), then the magic"
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
    not_found_at_once(run, &name, 7)?;
    let mut tried = "random bytes (with a plausible and a random length), the byte-swapped \
                     magic, a length one past the end and one that wraps, a 15-byte segment (with the magic and \
                     without) and a missing segment"
        .to_string();
    if record_completed_while_read(run, &name, 8)?.is_some() {
        tried.push_str(", and did not take the fields of a record completed under it");
    }
    if length_changed_after_its_load(run, &name, 9)?.is_some() {
        tried.push_str(", and copied the length it had checked when it changed afterwards");
    }
    if magic_stored_after_its_look(run, &name, 10)?.is_some() {
        tried.push_str(
            ", and refused a record whose magic appeared only after its look (bad-magic at once)",
        );
    }
    if record_replaced_at_magic_load(run, &name, 14)?.is_some() {
        tried
            .push_str(", and loaded every field of a record replaced at its magic's load after it");
    }
    Ok(format!("the reader rejected {tried}"))
}

/// Why a reader's `shmget()` refused the 15-byte segment still planted at `name`'s key: the
/// size it asks for, seen by holding another reader at the entry of its `shmget()` without
/// `IPC_CREAT` (its arguments read from `/proc/PID/syscall`); without tracing, from the error
/// (`EINVAL` from a find: the size asked for is larger than the segment).
fn shmget_refused_small(run: &mut Run, name: &Name, error: &str) -> Result<String, Fail> {
    let too_big = |asked: &str| {
        format!(
            "its shmget() asked for {asked}, and the kernel refuses (EINVAL) a segment smaller \
             than the size asked for, so a segment too small for a header never reached the \
             reader's own check; find the segment with shmget(key, 0, 0) (a size of 0 takes \
             it as it is), take its size from shmctl(IPC_STAT), and refuse one smaller than a \
             header yourself (BadLength)"
        )
    };
    let finds = Call::bits(libc::SYS_shmget, 2, libc::IPC_CREAT as u64, 0);
    let (mut reader, _) = spawn_held_reader(run, name, false, 50)?;
    let asked = match Tracer::attach(reader.pid.as_raw(), finds, Action::Hold)? {
        Some(mut tracer) => {
            reader.send("go", &[])?;
            let asked = if tracer.wait(&mut reader, run.deadline())? == Reached::Call {
                std::fs::read_to_string(format!("/proc/{}/syscall", reader.pid.as_raw()))
                    .ok()
                    .and_then(|line| {
                        let size = line.split_whitespace().nth(2)?;
                        u64::from_str_radix(size.trim_start_matches("0x"), 16).ok()
                    })
            } else {
                None
            };
            drop(tracer);
            asked
        }
        None => None,
    };
    reader.kill_tree();
    Ok(match asked {
        Some(0) => format!(
            "its shmget() asked for no size (held at it, the grader read its arguments: \
             shmget(key, 0, ...)) and still refused the segment ({error}): its flags ask for \
             something the segment does not allow; find it with shmget(key, 0, 0)"
        ),
        Some(size) => too_big(&format!(
            "{size} bytes (held at its shmget(), the grader read its arguments: shmget(key, \
             {size}, ...)), more than the segment's 15"
        )),
        None if error.contains("EINVAL") => too_big(
            "more bytes than the segment's 15 (EINVAL is what shmget() says, when it finds a \
             segment, to a size larger than it)",
        ),
        None => "a segment smaller than a header holds no record: the reader's shmget() \
                 refused a segment that exists; find it with shmget(key, 0, 0), which asks for \
                 no size and no access, and refuse it as too small (BadLength)"
            .to_string(),
    })
}
