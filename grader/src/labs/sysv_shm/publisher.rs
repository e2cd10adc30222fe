//! Checks of the publisher alone: the segment it makes (key, size, mode) and the record it
//! writes into it, whole or, when it is killed halfway, without the magic.

use std::os::unix::process::ExitStatusExt;

use rand::RngExt;

use crate::engine::{Fail, Run, inspect};

use super::protocol::{
    expect, first_difference, fresh_name, payload_file, publish, publish_record, replace_file,
    spawn_publisher, with_context,
};
use super::segments::{rmid, segment, segment_bytes};
use super::{HEADER_LEN, MAGIC};

pub fn segment_key_and_size(run: &mut Run) -> Result<String, Fail> {
    let mut published = publish(run, true)?;
    let found = published.segment()?;
    if found.size != published.size {
        return Err(Fail::failed(format!(
            "the segment is {} bytes, the publisher was asked for {}: pass the requested size to \
             shmget() as it is (the header is part of it)",
            found.size, published.size
        )));
    }
    published.finish()?;
    rmid(found.id);
    // The same path now holds another file: ftok() gives another key, which a key kept from
    // the first run (by the path's name) would miss.
    let name = replace_file(run, &published.name)?;
    let size = published.size;
    let context = "after the grader replaced the file at the path by a new one (another inode)";
    let mut again = publish_record(run, true, name, size, 100).map_err(with_context(context))?;
    let second = again.segment()?;
    again.finish()?;
    Ok(format!(
        "segment {} had key {:#x} = ftok(path, {}) and {} bytes, and key {:#x} once the file at \
         the path was replaced",
        found.id, found.key, published.name.id, found.size, second.key
    ))
}

pub fn owner_only_permissions(run: &mut Run) -> Result<String, Fail> {
    let mut published = publish(run, true)?;
    let found = published.segment()?;
    let mode = found.mode & 0o777;
    if mode != 0o600 {
        let who = if mode & 0o007 != 0 {
            "every user on the machine"
        } else if mode & 0o070 != 0 {
            "the members of its group"
        } else {
            ""
        };
        let what = if mode & 0o022 != 0 {
            "read and overwrite"
        } else {
            "read"
        };
        let consequence = if who.is_empty() {
            "its owner may not read and write it".to_string()
        } else {
            format!("{who} may {what} the record")
        };
        return Err(Fail::failed(format!(
            "the segment's mode is {mode:03o}: {consequence}; create it with 0600 (read and \
             write for its owner only)"
        )));
    }
    published.finish()?;
    // Any other object the publisher made must be its owner's only as well.
    run.expect_owner_only()?;
    Ok("the segment's mode is 600".into())
}

pub fn record_in_segment(run: &mut Run) -> Result<String, Fail> {
    let name = fresh_name(run)?;
    // The payload fills the segment to its last byte: header + payload = size fits.
    let len = run.rng().random_range(3000..12000usize);
    let size = (HEADER_LEN + len) as u64;
    let context =
        format!("with a {len}-byte payload in a {size}-byte segment, which it fills exactly");
    let mut published =
        publish_record(run, true, name, size, len).map_err(with_context(&context))?;
    let found = published.segment()?;
    let bytes = segment_bytes(found.id, (found.size as usize).min(size as usize))?;
    let field = |at: usize, len: usize| bytes.get(at..at + len).unwrap_or_default();
    let magic = field(0, 4);
    if magic != MAGIC.to_ne_bytes() {
        return Err(Fail::failed(format!(
            "the publisher says `ready`, but the segment holds no record: its first 4 bytes are \
             {magic:02x?}, not the magic {:02x?} (\"IPCR\"); write the record into the segment \
             itself, through the address shmat() returned",
            MAGIC.to_ne_bytes()
        )));
    }
    let header = [
        ("sequence", field(4, 4), published.sequence.to_ne_bytes().to_vec()),
        ("length", field(8, 8), (len as u64).to_ne_bytes().to_vec()),
    ];
    for (what, found, want) in header {
        if found != want {
            return Err(Fail::failed(format!(
                "the segment's {what} field holds {found:02x?}, the record's {what} is \
                 {want:02x?}: lay the header out as magic (u32), sequence (u32), length (u64)"
            )));
        }
    }
    if field(HEADER_LEN, len) != published.payload {
        return Err(Fail::failed(
            "the segment's header is right but its payload bytes are not the published ones: \
             copy the payload into the segment right after the 16-byte header",
        ));
    }
    // The payload reaches the segment by a copy into the mapping: no write() at all. Writes to
    // stdout and stderr (captured by the grader) are not counted against it.
    let pid = published.proc.pid.as_raw();
    let output = |captured: &std::sync::Arc<std::sync::Mutex<crate::engine::process::Captured>>| {
        let captured = captured.lock().expect("capture lock");
        captured.bytes.len() as u64 + captured.dropped
    };
    let printed = output(&published.proc.stdout) + output(&published.proc.stderr);
    let Some(io) = inspect::io(pid) else {
        run.note(format!("/proc/{pid}/io could not be read: the publisher's writes not counted"));
        published.finish()?;
        return Ok(format!(
            "the grader found the record (sequence {}, {len} bytes) in the {size}-byte segment \
             itself",
            published.sequence
        ));
    };
    let elsewhere = io.written_bytes.saturating_sub(printed);
    if elsewhere >= len as u64 {
        return Err(Fail::failed(format!(
            "before it said `ready` the publisher wrote {elsewhere} bytes with write() calls \
             (stdout and stderr not counted), as much as the {len}-byte payload or more: it \
             keeps a copy of the record outside the segment (a file, a pipe); the record goes \
             into the segment through the address shmat() returned, and nowhere else"
        )));
    }
    published.finish()?;
    Ok(format!(
        "the grader found the record (sequence {}, {len} bytes) in the {size}-byte segment \
         itself, and the publisher wrote it nowhere else",
        published.sequence
    ))
}

pub fn killed_mid_write(run: &mut Run) -> Result<String, Fail> {
    let name = fresh_name(run)?;
    let pages = run.rng().random_range(12..24usize);
    let len = pages * 4096 + run.rng().random_range(1..4096usize);
    let size = (HEADER_LEN + len) as u64;
    let sequence = run.rng().random_range(2..1_000_000u32);
    let payload = run.random_bytes(len);
    let mut proc = spawn_publisher(run, &name.path, name.id, size, sequence, &payload)?;
    // main.rs maps the payload file: cut short now, the copy into the segment dies with
    // SIGBUS at the first page past the cut, as a crash mid-write would.
    let kept = run.rng().random_range(2..pages - 2) * 4096;
    std::fs::OpenOptions::new()
        .write(true)
        .open(payload_file(run, sequence))?
        .set_len(kept as u64)?;
    proc.send("go", &[])?;
    let cut = format!(
        "with its payload file cut to {kept} of {len} bytes while it was to copy it (main.rs maps \
         the file, so the copy dies with SIGBUS there)"
    );
    let outcome = expect(&mut proc, "publisher", "ready");
    let killed_by_sigbus = proc
        .exit_status()
        .and_then(|s| s.signal())
        .is_some_and(|s| s == libc::SIGBUS);
    let left = segment(name.key);
    let _removed = RemoveOnDrop(left.map(|s| s.id));
    match outcome {
        Err(Fail::Crashed(_)) if killed_by_sigbus => {}
        Err(fail) => return Err(with_context(&cut)(fail)),
        Ok(_) => {
            return Err(Fail::failed(format!(
                "{cut}, the publisher said `ready`: it cannot have copied the whole payload into \
                 the segment; copy all of it"
            )));
        }
    }
    let Some(left) = left else {
        return Ok(format!(
            "the publisher, killed before it made its segment ({cut}), left nothing"
        ));
    };
    let bytes = segment_bytes(left.id, (left.size as usize).min(size as usize))?;
    if bytes.get(..4) == Some(&MAGIC.to_ne_bytes()[..]) {
        let copied = match first_difference(&bytes[HEADER_LEN.min(bytes.len())..], &payload) {
            0 => "none".to_string(),
            n => format!("only {n}"),
        };
        return Err(Fail::failed(format!(
            "the publisher was killed {cut}, with {copied} of the {len} payload bytes in its \
             segment, and the segment already holds the magic: a reader would take this torn \
             record for a complete one; write the payload, the length and the sequence first, \
             and the magic last, after a release fence"
        )));
    }
    Ok(format!(
        "the publisher, killed halfway through its payload, left segment {} without the magic",
        left.id
    ))
}

/// Removes the segment with this id, if any, when the check is done with it.
struct RemoveOnDrop(Option<i32>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(id) = self.0 {
            rmid(id);
        }
    }
}
