//! Checks of publisher and readers together: attached at the same time, the segment outliving
//! its publisher, and its removal.

use std::path::Path;
use std::time::{Duration, Instant};

use ipc_labs_driver::Message;
use rand::RngExt;

use crate::engine::tracer::{Call, Tracer};
use crate::engine::{Fail, Run};

use super::HEADER_LEN;
use super::protocol::{
    as_expected, exits_cleanly, expect, first_difference, fresh_name, publish, run_create_step,
    spawn_reader, spawn_reader_reading_twice, verify_read, with_context,
};
use super::segments::{mapping_of, may_write, overwrite, segment, segment_by_id};

pub fn attached_together(run: &mut Run) -> Result<String, Fail> {
    let mut published = publish(run, true)?;
    let alone = published.segment()?;
    let publisher = published.proc.pid.as_raw();
    if alone.attached != 1 {
        return Err(Fail::failed(if alone.attached == 0 {
            "while the publisher says `ready` (holding the segment), nattch is 0: it detached \
             already; stay attached from shmat() until detach() is called"
                .to_string()
        } else {
            format!(
                "while the publisher says `ready` (holding the segment), nattch is {}, not 1: \
                 every shmat() counts; attach the segment once",
                alone.attached
            )
        }));
    }
    let (mut reader, output) = spawn_reader(run, &published.name, false, 1)?;
    expect(&mut reader, "reader", "attached")?;
    let both = published.segment()?;
    let reading = reader.pid.as_raw();
    let reader_map = mapping_of(reading, both.id);
    if both.attached != 2 {
        let missing = match (mapping_of(publisher, both.id), &reader_map) {
            (_, None) => format!(
                "the reader (pid {reading}) has no mapping of segment {} in its /proc/PID/maps: \
                 Segment::open must shmat() the segment it found and stay attached",
                both.id
            ),
            (None, _) => format!(
                "the publisher (pid {publisher}) no longer has segment {} mapped: it must stay \
                 attached until it is told to detach",
                both.id
            ),
            _ => "each must attach the segment once (every shmat() counts)".to_string(),
        };
        return Err(Fail::failed(format!(
            "with the publisher and the reader both saying they are attached, nattch is {}, not \
             2: {missing}",
            both.attached
        )));
    }
    match reader_map {
        Some(perms) if perms.contains('w') => {
            return Err(Fail::failed(format!(
                "the reader attached segment {} for writing too (its /proc/{reading}/maps shows \
                 {perms}): attach it with SHM_RDONLY; a reader only reads, and a read-only \
                 attach is all a reader gets on a segment it may not write",
                both.id
            )));
        }
        Some(perms) if may_write(reading, both.id) == Some(true) => {
            return Err(Fail::failed(format!(
                "the reader attached segment {} for writing and took the write permission away \
                 afterwards (mprotect): its /proc/{reading}/maps shows {perms}, but \
                 /proc/{reading}/smaps gives the mapping the flag mw (it may be made writable \
                 again), which an attach with SHM_RDONLY never has; attach it with SHM_RDONLY: \
                 a reader not allowed to write the segment cannot attach it otherwise",
                both.id
            )));
        }
        Some(_) => {}
        None => {
            return Err(Fail::failed(format!(
                "nattch is 2, but the reader (pid {reading}) has no mapping of segment {} in its \
                 /proc/PID/maps: the reader must be attached when it says `attached`",
                both.id
            )));
        }
    }
    reader.send("go", &[])?;
    let done = expect(&mut reader, "reader", "done")?;
    exits_cleanly(&mut reader, "reader")?;
    published.verify(&done, &output)?;
    if segment(published.name.key).is_none() {
        return Err(Fail::failed(
            "the segment lost its key when the reader (without --remove) detached: remove it \
             only when asked, and detach with shmdt() alone",
        ));
    }
    published.detach()?;
    // The publisher still runs: only its shmdt() can have dropped the count.
    let detached = published.segment()?;
    if detached.attached != 0 {
        return Err(Fail::failed(format!(
            "the reader exited and the publisher said `done` after detach(), yet nattch is {} \
             while the publisher still runs: detach() must call shmdt()",
            detached.attached
        )));
    }
    published.exit()?;
    Ok(
        "nattch went 1, 2 (the reader read-only), and 0 at the publisher's detach, and the \
        reader read the record"
            .into(),
    )
}

pub fn outlives_publisher(run: &mut Run) -> Result<String, Fail> {
    let mut published = publish(run, false)?;
    published.finish()?;
    let Some(left) = segment(published.name.key) else {
        return Err(Fail::failed(
            "the segment is gone once the publisher exited: a SysV segment lives until \
             IPC_RMID, so do not remove it in the publisher",
        ));
    };
    if left.attached != 0 {
        return Err(Fail::failed(format!(
            "the publisher exited, yet nattch is {}",
            left.attached
        )));
    }
    // One reader reads the record, and, in the same process and the same attachment, again
    // after the grader rewrote the payload: a copy kept in the process shows there.
    let name = &published.name;
    let (mut reader, first_output, output) = spawn_reader_reading_twice(run, name, false, 1)?;
    // Its looks for the key, counted: the one segment it measures and attaches.
    let looks = Tracer::count_calls(reader.pid.as_raw(), Call::any(libc::SYS_shmget))?;
    reader.send("go", &[])?;
    expect(&mut reader, "reader", "attached")?;
    reader.send("go", &[])?;
    let first = expect(&mut reader, "reader", "read")?;
    published.verify(&first, &first_output)?;
    // A few bytes at random places: a reader that samples the payload to tell whether it
    // changed misses them.
    let mut rewritten = published.payload.clone();
    for _ in 0..3 {
        let at = run.rng().random_range(0..rewritten.len());
        rewritten[at] ^= run.rng().random_range(1..=255u8);
    }
    overwrite(left.id, HEADER_LEN, &rewritten)?;
    reader.send("go", &[])?;
    let done = expect(&mut reader, "reader", "done")?;
    exits_cleanly(&mut reader, "reader")?;
    let looks = match looks {
        Some(tracer) => Some(tracer.failed_count(Instant::now() + Duration::from_secs(2))?),
        None => None,
    };
    if let Some(looks @ 2..) = looks {
        return Err(Fail::failed(format!(
            "a reader that opened the segment once made {looks} shmget() calls (the grader \
             counted them with ptrace): the segment it measured with shmctl(IPC_STAT) and the \
             one it attached may be two different segments, for the key can change hands \
             between two looks (a `read --remove`, then a new publisher); look once, \
             shmget(key, 0, 0), and use that one id for shmctl(IPC_STAT) and shmat()"
        )));
    }
    let again = "the same reader process, reading the record again from the same attachment,";
    let sequence = published.sequence;
    read_after_rewrite(
        &done,
        &output,
        sequence,
        (&published.payload, &rewritten),
        again,
    )?;
    if segment(published.name.key).is_none() {
        return Err(Fail::failed(
            "the segment is gone after a `read` without --remove: remove it only when asked",
        ));
    }
    // A new reader process after another rewrite: a copy kept outside the process shows there.
    let rewritten_again = run.random_bytes(published.payload.len());
    overwrite(left.id, HEADER_LEN, &rewritten_again)?;
    let (mut reader, first_output, _) = spawn_reader_reading_twice(run, name, true, 2)?;
    reader.send("go", &[])?;
    expect(&mut reader, "reader", "attached")?;
    reader.send("go", &[])?;
    let first = expect(&mut reader, "reader", "read")?;
    read_after_rewrite(
        &first,
        &first_output,
        sequence,
        (&rewritten, &rewritten_again),
        "the next reader",
    )?;
    magic_judged_again(&mut reader, left.id)?;
    Ok(format!(
        "the record ({} bytes, sequence {}) outlived its publisher and was read three times, \
         by one reader twice and by a second one, each time with the payload the grader had \
         just rewritten under the same header; the second reader, reading again once the \
         grader had cleared the magic, said bad-magic",
        published.payload.len(),
        published.sequence
    ))
}

/// A reader (`read --first-output`, said `read`) reading segment `id` again once the grader
/// has cleared its magic, as a publisher that began a new record over it and died leaves it:
/// it must say `bad-magic`, whatever it kept from its first read.
fn magic_judged_again(reader: &mut crate::engine::Proc, id: i32) -> Result<(), Fail> {
    overwrite(id, 0, &[0; 4])?;
    reader.send("go", &[])?;
    let said = reader.recv_any()?;
    match (said.kind.as_str(), said.get("kind")) {
        ("failed", Some("bad-magic")) => Ok(reader.wait().map(|_| ())?),
        ("done", _) => Err(Fail::failed(format!(
            "a reader read the record, then the grader cleared the magic (4 zero bytes at \
             offset 0, as a publisher that began a new record over it and died leaves it), and \
             the same reader, reading again from the same attachment, reported a record \
             (sequence {}, {} bytes): its second read_record() did not check the magic it \
             found, but trusted what its first read had checked; check the header (the magic, \
             then the length) at every read_record(): whatever it keeps from one call must \
             still be right for the next",
            said.get("sequence").unwrap_or("?"),
            said.get("length").unwrap_or("?")
        ))),
        (kind, error) => Err(Fail::failed(format!(
            "a reader read the record, then the grader cleared the magic, and the same reader, \
             reading again from the same attachment, said `{kind}` (kind={}), not `failed` \
             with kind=bad-magic",
            error.unwrap_or("none")
        ))),
    }
}

/// What `who` output (`done`, `output`) after the grader replaced payload `old` by `new` under
/// the same header (the same segment, `sequence` and length): only a reader that copies the
/// payload out of the segment each time outputs the new bytes; one that kept the old ones
/// somewhere, under any name the header gives, outputs them again.
fn read_after_rewrite(
    done: &Message,
    output: &Path,
    sequence: u32,
    (old, new): (&[u8], &[u8]),
    who: &str,
) -> Result<(), Fail> {
    let read = std::fs::read(output)?;
    if read == old {
        return Err(Fail::failed(format!(
            "the grader rewrote the payload in the segment ({} of its {} bytes changed, under \
             the same header: the same segment, sequence {sequence}, the same length), and \
             {who} output the old payload, which was no longer anywhere in the segment (first \
             difference from the new one at byte {}): the payload was taken from a copy kept \
             outside the segment; copy it out of the segment every time, all of it",
            old.iter().zip(new).filter(|(a, b)| a != b).count(),
            new.len(),
            first_difference(&read, new)
        )));
    }
    verify_read(done, output, sequence, new, "rewritten").map_err(with_context(&format!(
        "after the grader rewrote the payload in the segment, {who}"
    )))
}

pub fn removal(run: &mut Run) -> Result<String, Fail> {
    let bystander = super::bystanders::leave_bystander(run)?;
    let mut published = publish(run, false)?;
    let id = published.segment()?.id;
    // IPC_RMID marks the segment whatever its nattch: the publisher still holds it, so the
    // kernel keeps it until that last detach, but its key is gone at once.
    published.read_back(run, true, 1)?;
    bystander.still_there("`read --remove` of another record")?;
    if let Some(left) = segment(published.name.key) {
        return Err(Fail::failed(format!(
            "`read --remove` said `done` while the publisher still held the segment, yet \
             segment {} keeps its key {:#x} (nattch {}, not marked for removal): call \
             shmctl(id, IPC_RMID) whatever nattch is; it marks the segment, which the kernel \
             frees at the last detach, and nobody would remove it later",
            left.id, left.key, left.attached
        )));
    }
    super::mode_at_removal::mode_kept_at_removal(id)?;
    published.finish()?;
    if let Some(left) = segment_by_id(id) {
        return Err(Fail::failed(format!(
            "segment {} (nattch {}) still exists after `read --remove` and the publisher's \
             detach: call shmctl(id, IPC_RMID) to remove it",
            left.id, left.attached
        )));
    }
    // The create step removes its segment before it detaches it: while attached itself.
    let name = fresh_name(run)?;
    let size = run.rng().random_range(5000..20000u64);
    let what = format!(
        "`sysv-shm create` of {size} bytes (Segment::create, then remove() while it is still \
         attached, then detach())"
    );
    match run_create_step(run, &name, size, &what)? {
        (done, None) if done.kind == "done" => {}
        (done, Some(left)) if done.kind == "done" => {
            return Err(Fail::failed(format!(
                "{what} said `done` but left segment {} (nattch {}) behind: its remove() did \
                 not mark the segment while the caller itself still held it; call \
                 shmctl(id, IPC_RMID) whatever nattch is",
                left.id, left.attached
            )));
        }
        (message, _) => {
            as_expected(message, "create step", "done").map_err(with_context(&what))?;
        }
    }
    bystander.still_there("the create step's remove()")?;
    Ok(format!(
        "segment {id} lost its key at `read --remove` while the publisher still held it and \
         was gone at its detach; the create step's segment, removed while attached, was gone \
         too; segment {}, a finished publication of another key, was left alone",
        bystander.id
    ))
}
