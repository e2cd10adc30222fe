//! Checks of the publisher alone: the segment it makes (key, size, mode) and the record it
//! writes into it, found whole by the grader and stored by the publisher itself.

use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

use rand::RngExt;

use crate::engine::{Fail, Run, inspect};

use super::protocol::{
    Name, Published, as_expected, expect, fresh_fifo_name, fresh_name, fresh_name_in, ftok,
    publish, publish_record, replace_file, spawn_publisher, start_create_step, with_context,
};
use super::segments::{
    RemoveKeyOnDrop, bytes_past_end, mark_past_end, overwrite, rmid, segment, segment_bytes,
};
use super::{HEADER_LEN, MAGIC, kernel_copies, watched_stores};
use crate::engine::tracer::{Action, Breakpoint, Call, Reached, Step, Tracer};

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
    key_of_each_call(run)?;
    let bytes_key = key_of_path_not_utf8(run)?;
    // ftok() needs the path to exist, nothing more: a FIFO there is a file like any other.
    let fifo = fresh_fifo_name(run)?;
    let context = "with a FIFO at the path (ftok() only looks a path up, it never opens it)";
    let mut published =
        publish_record(run, true, fifo, 4000, 100).map_err(with_context(context))?;
    published.segment().map_err(with_context(context))?;
    published.finish()?;
    let called = if key_from_ftok(run)? {
        ", computed by the C library's ftok()"
    } else {
        ""
    };
    Ok(format!(
        "segment {} had key {:#x} = ftok(path, {}) and {} bytes, key {:#x} once the file at the \
         path was replaced, key {bytes_key:#x} for a path whose name is not UTF-8, and a FIFO at the path did as well \
         as a file{called}",
        found.id, found.key, published.name.id, found.size, second.key
    ))
}

/// One process, two keys: the `create` step with `--then-id`, the file at the path replaced
/// between its two `Segment::create` calls. Held at its second `shmget()` with `IPC_CREAT`, it
/// must ask for `ftok()` of the new file, with the second id: nothing kept from the first call
/// (the file's inode, a key) may make it. Tried with another id and with the same one (a key
/// kept by path and id).
fn key_of_each_call(run: &mut Run) -> Result<(), Fail> {
    let name = fresh_name(run)?;
    key_of_second_create(run, &name, name.id % 255 + 1)?;
    let name = fresh_name(run)?;
    key_of_second_create(run, &name, name.id)
}

fn key_of_second_create(run: &mut Run, name: &Name, then_id: u32) -> Result<(), Fail> {
    let what =
        format!("`sysv-shm create --then-id {then_id}` (two Segment::create calls in one process)");
    let mut proc = start_create_step(run, name, 4000, Some(then_id), &what)?;
    let _removed = RemoveKeyOnDrop(Some(name.key));
    as_expected(proc.recv_any()?, "create step", "created").map_err(with_context(&what))?;
    let old_key = ftok(&name.path, then_id)?;
    let second = Name {
        path: name.path.clone(),
        id: then_id,
        key: old_key,
        replaced: None,
    };
    let replaced = replace_file(run, &second)?;
    let _removed_too = RemoveKeyOnDrop(Some(replaced.key));
    let pid = proc.pid.as_raw();
    let creating = Call::flag_set(libc::SYS_shmget, 2, libc::IPC_CREAT as u64);
    let Some(mut held) = Tracer::attach(pid, creating, Action::Hold)? else {
        proc.kill_tree();
        return Ok(());
    };
    proc.send("go", &[])?;
    let asked = if held.held_before(run.deadline())? {
        inspect::call_of(pid, pid).map(|(_, args)| args[0] as i32)
    } else {
        None
    };
    held.release();
    let message = proc.recv_any().map_err(with_context(&what))?;
    proc.wait()?;
    match asked {
        Some(key) if key == replaced.key => Ok(()),
        Some(key) => {
            let why = if key == old_key && then_id == name.id {
                format!(
                    "ftok() of the file that was there before, {old_key:#x}, which the first \
                     create, of the same path and id, had used: the key (or the inode it comes \
                     from) was remembered by path and id and handed out again without a new \
                     ftok()"
                )
            } else if key == old_key {
                format!(
                    "ftok() of the file that was there before, {old_key:#x}: the key, or the \
                     inode it comes from, was kept from the first call"
                )
            } else {
                "no key ftok() gives for the path now".into()
            };
            Err(Fail::failed(format!(
                "{what}: after its first create, the grader replaced the file at the path by a \
                 new one (another inode), and the second create's shmget() asked for key \
                 {key:#x}, not ftok(path, {then_id}) = {:#x} of the file now there; it is {why}; \
                 call ftok() every time, of the path as it is",
                replaced.key
            )))
        }
        None => as_expected(message, "create step", "done")
            .map(|_| ())
            .map_err(with_context(&what)),
    }
}

/// A publisher watched with a breakpoint at the C library's `ftok()`: it must call it, with the
/// id it was given, before it says `ready`. `false` where the grader may not set one (no
/// ptrace, not x86-64, or the program does not use the grader's C library).
fn key_from_ftok(run: &mut Run) -> Result<bool, Fail> {
    let name = fresh_name(run)?;
    let payload = run.random_bytes(100);
    let mut proc = spawn_publisher(run, &name.path, name.id, 4000, 1, &payload)?;
    let _removed = RemoveKeyOnDrop(Some(name.key));
    let pid = proc.pid.as_raw();
    let unwatched = "the grader may not set a breakpoint at ftok() in the publisher here (ptrace, \
                     x86-64, the same C library as the grader's): that the key comes from \
                     ftok() itself was not seen";
    let Some(mut tracer) = Tracer::break_at_function(pid, c"ftok")? else {
        run.note(unwatched);
        proc.kill_tree();
        return Ok(false);
    };
    proc.send("go", &[])?;
    let mut ids = Vec::new();
    let message = loop {
        match tracer.next_break(Instant::now() + Duration::from_millis(2))? {
            Some(Breakpoint::At([_, id])) => {
                ids.push(id & 0xffff_ffff);
                tracer.go_on();
                continue;
            }
            Some(Breakpoint::Armed) | None => {}
            Some(_) => break proc.recv_any()?,
        }
        if let Some(message) = proc.recv_before(Instant::now())? {
            break message;
        }
        if Instant::now() >= run.deadline() {
            return Err(Fail::TimedOut(format!(
                "timed out: the publisher, watched with a breakpoint at ftok(), said nothing.{}",
                proc.diagnose()
            )));
        }
    };
    drop(tracer);
    let how = "watched with a hardware breakpoint at the C library's ftok()";
    as_expected(message, "publisher", "ready").map_err(with_context(how))?;
    if ids.is_empty() {
        let key = if segment(name.key).is_some() {
            "its segment at the right key"
        } else {
            "no segment at ftok(path, id)"
        };
        return Err(Fail::failed(format!(
            "{how}, the publisher said `ready` ({key}) but never called ftok(): it \
             computed the key itself (ftok()'s formula from a stat() of the file, say); that \
             formula is one C library's inner detail, which another (or another version) may \
             mix otherwise, and every process that finds the segment must agree on the key: \
             call ftok(path, id) every time"
        )));
    }
    if !ids.contains(&u64::from(name.id)) {
        return Err(Fail::failed(format!(
            "{how}, the publisher called ftok() with the id {} where it was given {}: pass \
             the id as it is",
            ids[0] as i32, name.id
        )));
    }
    proc.send("go", &[])?;
    expect(&mut proc, "publisher", "done")?;
    proc.send("exit", &[])?;
    proc.wait()?;
    Ok(true)
}

/// A file name that is no UTF-8 text (0xff and 0xfe never occur in it), as Linux allows.
const NOT_UTF8_FILE_NAME: &[u8] = b"anchor-\xff\xfe";

/// A publisher given a path whose file name is not UTF-8: its key is ftok() of the path's
/// bytes, whatever they are. Returns the key of its segment.
fn key_of_path_not_utf8(run: &mut Run) -> Result<i32, Fail> {
    let name = fresh_name_in(run, std::ffi::OsStr::from_bytes(NOT_UTF8_FILE_NAME))?;
    let context = "with a path whose file name is not valid UTF-8 (it ends in the bytes ff fe: \
                   a Linux file name is any bytes but '/' and NUL), the file there";
    let mut published = publish_record(run, true, name, 4000, 100).map_err(|fail| match fail {
        Fail::Failed(m) if m.starts_with("the publisher failed (kind=ftok)") => {
            Fail::failed(format!(
                "{context}, {m}, though ftok() of the same path works (the grader's): the \
                 publisher handed ftok() another path; pass the path's own bytes \
                 (CString::new(path.as_os_str().as_bytes())), not a text made of them \
                 (to_string_lossy() puts U+FFFD in place of the bytes that are not UTF-8, \
                 to_str() refuses them)"
            ))
        }
        other => with_context(context)(other),
    })?;
    let found = published.segment().map_err(with_context(context))?;
    published.finish()?;
    Ok(found.key)
}

pub fn owner_only_permissions(run: &mut Run) -> Result<String, Fail> {
    let (mut published, at_creation) = publish_held_at_creation(run)?;
    let found = published.segment()?;
    let mode = found.mode & 0o777;
    if let Some(first) = at_creation.filter(|&m| m != 0o600 && mode == 0o600) {
        let who = if first & 0o007 != 0 {
            "every user on the machine"
        } else if first & 0o070 != 0 {
            "the members of its group"
        } else {
            "nobody but its owner, yet not as 0600 asks"
        };
        return Err(Fail::failed(format!(
            "right after the publisher's shmget() with IPC_CREAT returned, the segment's mode \
             was {first:03o} ({who} could attach it then), though it was 600 by `ready`: the \
             segment was created with other permissions and changed afterwards \
             (shmctl(IPC_SET)); in between, another process may attach it and keep the \
             attachment, which a later change of mode does not take away; create it with mode \
             0600 in the shmget() itself (IPC_CREAT | IPC_EXCL | 0600)"
        )));
    }
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
    super::lifelong_mode::mode_kept_after_ready(run, &mut published)?;
    // Any other object the publisher made must be its owner's only as well.
    run.expect_owner_only()?;
    Ok("the segment's mode is 600".into())
}

/// Publishes a random record as [`publish`] does, holding the publisher as its `shmget()` with
/// `IPC_CREAT` returns to read the new segment's mode then, before anything else can change it;
/// `None` for that mode where the grader may not trace the publisher, or no segment had the key.
fn publish_held_at_creation(run: &mut Run) -> Result<(Published, Option<u32>), Fail> {
    let name = fresh_name(run)?;
    let size = run.rng().random_range(5000..20000u64);
    let len = size as usize - HEADER_LEN - 100;
    let sequence = run.rng().random_range(2..1_000_000u32);
    let payload = run.random_bytes(len);
    let mut proc = spawn_publisher(run, &name.path, name.id, size, sequence, &payload)?;
    let shmget = Call::flag_set(libc::SYS_shmget, 2, libc::IPC_CREAT as u64);
    let tracer = Tracer::attach(proc.pid.as_raw(), shmget, Action::HoldAfter)?;
    if tracer.is_none() {
        run.note(
            "the grader may not trace the publisher here (ptrace): the segment's mode was read \
             at `ready` only, not as shmget() made it",
        );
    }
    proc.send("go", &[])?;
    let mut at_creation = None;
    let mut first = None;
    if let Some(mut stop) = tracer {
        let until = Instant::now() + Duration::from_secs(5);
        match stop.wait(&mut proc, until)? {
            Reached::Call => {
                at_creation = segment(name.key).map(|s| s.mode & 0o777);
                stop.release();
            }
            Reached::Passed(message) => {
                drop(stop);
                first = message;
            }
        }
    }
    let published = Published {
        discard: true,
        proc,
        name,
        size,
        sequence,
        payload,
    }
    .once_ready(run, first)?;
    Ok((published, at_creation))
}

pub fn record_in_segment(run: &mut Run) -> Result<String, Fail> {
    let name = fresh_name(run)?;
    // The payload fills the segment to its last byte: header + payload = size fits. The size is
    // no whole number of pages, so that the rest of its last page is there to watch.
    let mut len = run.rng().random_range(16000..40000usize);
    if (HEADER_LEN + len).is_multiple_of(page_size()) {
        len -= 1;
    }
    let size = (HEADER_LEN + len) as u64;
    let context =
        format!("with a {len}-byte payload in a {size}-byte segment, which it fills exactly");
    let (mut published, marks) =
        publish_with_past_end_marked(run, name, size, len).map_err(with_context(&context))?;
    let (past_end, header_marked, copy) = match marks {
        Some(Marked {
            past_end,
            header,
            copy,
        }) => (Some(past_end), Some(header), copy),
        None => (None, None, None),
    };
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
        (
            "sequence",
            field(4, 4),
            published.sequence.to_ne_bytes().to_vec(),
        ),
        ("length", field(8, 8), (len as u64).to_ne_bytes().to_vec()),
    ];
    for (what, found, want) in header {
        if found != want {
            // The grader's own bytes, left where the field was to be: a store narrower than
            // the field (a u32 into the u64 length), seen only over a segment not zeroed.
            let at = if what == "length" { 8 } else { 4 };
            if let Some(marked) = header_marked {
                let kept: Vec<usize> = (0..want.len())
                    .filter(|&i| found[i] != want[i] && found[i] == marked[at + i])
                    .collect();
                let stored = (0..want.len()).filter(|&i| found[i] == want[i]).count();
                if !kept.is_empty() && kept.len() + stored == want.len() {
                    return Err(Fail::failed(format!(
                        "{context}: the grader filled the header with bytes of its own (never \
                         zero) when the publisher's shmat() returned, before it wrote anything, \
                         and at `ready` the {what} field holds {found:02x?}, not {want:02x?}: \
                         its bytes {}..{} are still the grader's, the others are the record's; \
                         the publisher stored only part of the {}-byte {what} field (a narrower \
                         store, such as a u32 into the u64 length, which a new, zeroed segment \
                         hides): store each header field whole, at its full width",
                        at + kept[0],
                        at + kept[kept.len() - 1] + 1,
                        want.len()
                    )));
                }
            }
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
    if let Some(marked) = past_end {
        let now = bytes_past_end(found.id, size as usize, marked.len())?;
        if let Some(first) = now.iter().zip(&marked).position(|(a, b)| a != b) {
            let changed = now.iter().zip(&marked).filter(|(a, b)| a != b).count();
            return Err(Fail::failed(format!(
                "{context}: the grader filled the rest of the segment's last page (the {} bytes \
                 past its end, which the kernel maps with it) with bytes of its own when the \
                 publisher's shmat() returned, and at `ready` {changed} of them had changed, \
                 the first at offset {} (byte {:#04x} for {:#04x}): the publisher stored past \
                 the end of its {size}-byte segment; store only inside it (16 + length <= \
                 size): past a segment of whole pages lies another mapping, or none (SIGSEGV)",
                marked.len(),
                size as usize + first,
                now[first],
                marked[first]
            )));
        }
    }
    if !written_nowhere_else(run, &published, len, "")? {
        published.finish()?;
        return Ok(format!(
            "the grader found the record (sequence {}, {len} bytes) in the {size}-byte segment \
             itself",
            published.sequence
        ));
    }
    published.finish()?;
    // Untraced too: a program may store by hand only while a tracer watches it.
    let mut plain = publish(run, true)?;
    let plain_len = plain.payload.len();
    written_nowhere_else(run, &plain, plain_len, "untraced, ")?;
    plain.finish()?;
    nothing_past_a_segment_without_room(run)?;
    let stored = match watched_stores::payload_stored_by_publisher(run)? {
        Some(()) => ", and stored the payload into the segment itself (watched)",
        None => "",
    };
    // Last: a copy the watched stores missed, made by a call.
    if let Some(copy) = copy {
        return Err(Fail::failed(format!(
            "{context}: between its shmat() and its `ready` the publisher's main thread called \
             {copy}, a system call that moves bytes: the kernel copied (a part of) the record \
             for it, or was handed it; the record goes into the segment by the publisher's own \
             stores, through the address shmat() returned (after setup, the kernel is out of \
             the way), and no call comes between its shmat() and `ready`"
        )));
    }
    Ok(format!(
        "the grader found the record (sequence {}, {len} bytes) in the {size}-byte segment \
         itself, and the publisher wrote it nowhere else{stored}",
        published.sequence
    ))
}

/// A publisher asked for a 1-byte segment, too small even for the header (`no-room`): held as
/// its `shmat()` returns, the rest of the segment's page is filled with non-zero bytes, and held
/// again at its first call of the clean-up (or its exit), it must have stored none there.
/// The payload reaches the segment by a copy into the mapping: no write() at all, to a file or
/// to `/proc/self/mem`. Writes to stdout and stderr (captured by the grader) are not counted
/// against it. False when `/proc/PID/io` cannot be read (noted).
fn written_nowhere_else(
    run: &mut Run,
    published: &Published,
    len: usize,
    how: &str,
) -> Result<bool, Fail> {
    let pid = published.proc.pid.as_raw();
    let output = |captured: &std::sync::Arc<std::sync::Mutex<crate::engine::process::Captured>>| {
        let captured = captured.lock().expect("capture lock");
        captured.bytes.len() as u64 + captured.dropped
    };
    let printed = output(&published.proc.stdout) + output(&published.proc.stderr);
    let Some(io) = inspect::io(pid) else {
        run.note(format!(
            "/proc/{pid}/io could not be read: the publisher's writes not counted"
        ));
        return Ok(false);
    };
    let elsewhere = io.written_bytes.saturating_sub(printed);
    if elsewhere >= len as u64 {
        return Err(Fail::failed(format!(
            "{how}before it said `ready` the publisher wrote {elsewhere} bytes with write() \
             calls (stdout and stderr not counted), as much as the {len}-byte payload or more: \
             it keeps a copy of the record outside the segment (a file, a pipe), or has the \
             kernel copy it in (a pwrite() to /proc/self/mem); the record goes into the segment \
             through the address shmat() returned, by its own stores, and nowhere else"
        )));
    }
    Ok(true)
}

fn nothing_past_a_segment_without_room(run: &mut Run) -> Result<(), Fail> {
    const CLEAN_UP: &[i64] = &[
        libc::SYS_shmdt,
        libc::SYS_shmctl,
        libc::SYS_exit_group,
        libc::SYS_exit,
    ];
    let name = fresh_name(run)?;
    let size = 1;
    let mut proc = spawn_publisher(run, &name.path, name.id, size as u64, 3, &[])?;
    let _removed = RemoveKeyOnDrop(Some(name.key));
    let steps = [
        (Call::any(libc::SYS_shmat), Step::HoldAfter),
        (Call::one_of(CLEAN_UP), Step::Hold),
    ];
    let Some(mut tracer) = Tracer::in_turn(proc.pid.as_raw(), steps)? else {
        proc.kill_tree();
        return Ok(());
    };
    proc.send("go", &[])?;
    let until = Instant::now() + Duration::from_secs(5);
    let Some(found) = tracer
        .held_before(until)?
        .then(|| segment(name.key))
        .flatten()
    else {
        drop(tracer);
        proc.kill_tree();
        return Ok(());
    };
    let marks: Vec<u8> = (size..page_size())
        .map(|_| run.rng().random_range(1..=255))
        .collect();
    mark_past_end(found.id, size, &marks)?;
    tracer.go_on();
    let after = if tracer.held_before(until)? {
        bytes_past_end(found.id, size, marks.len()).ok()
    } else {
        None
    };
    tracer.release();
    proc.kill_tree();
    let Some(after) = after else {
        return Ok(());
    };
    let changed: Vec<usize> = (0..marks.len())
        .filter(|&i| after[i] != marks[i])
        .map(|i| size + i)
        .collect();
    match (changed.first(), changed.last()) {
        (Some(first), Some(last)) => Err(Fail::failed(format!(
            "with an empty payload for a {size}-byte segment (no room even for the 16-byte \
             header: kind=no-room), the publisher stored past the end of its segment before \
             its clean-up: the rest of the segment's page, which the grader filled when its \
             shmat() returned, had changed at {} of its bytes, offsets {first} to {last}; check \
             the room before you store anything: nothing is stored outside the segment's size \
             bytes",
            changed.len()
        ))),
        _ => Ok(()),
    }
}

/// What [`publish_with_past_end_marked`] filled (the rest of the last page, and the header),
/// and the call the publisher made that moves bytes between its `shmat()` and `ready`, if any.
struct Marked {
    past_end: Vec<u8>,
    header: [u8; HEADER_LEN],
    copy: Option<String>,
}

/// Starts a publisher of a random `len`-byte record in a segment of `size` bytes (no whole
/// number of pages) and waits until it holds the segment, as [`publish_record`]; held as its
/// `shmat()` returns, before it writes anything, the rest of the segment's last page and the
/// header are filled with random bytes, returned with the call it makes that moves bytes, if
/// any, before `ready` (`None` where the grader may not trace it).
fn publish_with_past_end_marked(
    run: &mut Run,
    name: super::protocol::Name,
    size: u64,
    len: usize,
) -> Result<(Published, Option<Marked>), Fail> {
    let sequence = run.rng().random_range(2..1_000_000u32);
    let payload = run.random_bytes(len);
    let mut proc = spawn_publisher(run, &name.path, name.id, size, sequence, &payload)?;
    let pid = proc.pid.as_raw();
    let tail = page_size() - size as usize % page_size();
    let mut marked = None;
    let steps = [
        (Call::any(libc::SYS_shmat), Step::HoldAfter),
        kernel_copies::publisher_step(),
    ];
    let traced = Tracer::in_turn(pid, steps)?;
    proc.send("go", &[])?;
    if let Some(mut tracer) = traced {
        if tracer.held_before(run.deadline())?
            && let Some(found) = segment(name.key)
        {
            // Never zero: a store of zeros shows.
            let bytes: Vec<u8> = (0..tail).map(|_| run.rng().random_range(1..=255)).collect();
            mark_past_end(found.id, size as usize, &bytes)?;
            let header = mark_header(run, found.id)?;
            tracer.go_on();
            let copy = kernel_copies::copy_made(tracer, pid, run.deadline(), false)?;
            marked = Some(Marked {
                past_end: bytes,
                header,
                copy,
            });
        } else {
            tracer.release();
        }
    } else {
        run.note("the grader may not trace the publisher here (ptrace): its stores past the end of its segment were not looked for");
    }
    let published = Published {
        discard: true,
        proc,
        name,
        size,
        sequence,
        payload,
    }
    .once_ready(run, None)?;
    Ok((published, marked))
}

/// Fills the header of segment `id` with random bytes, never zero and never the magic, and
/// returns them: a field stored only in part keeps some of them, which a new, zeroed segment
/// would hide.
pub(super) fn mark_header(run: &mut Run, id: i32) -> Result<[u8; HEADER_LEN], Fail> {
    let mut header = [0u8; HEADER_LEN];
    for byte in &mut header {
        *byte = run.rng().random_range(1..=255);
    }
    if header[..4] == MAGIC.to_ne_bytes() {
        header[0] ^= 0x80;
    }
    overwrite(id, 0, &header)?;
    Ok(header)
}

fn page_size() -> usize {
    // SAFETY: a plain query.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}
