//! One table, several processes: each maps the object shared and accesses it in place, so that
//! a store by one is what the others (and the object's file) hold at once, even after unlink.

use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use rand::RngExt;

use crate::engine::diagnose::classify;
use crate::engine::tracer::{Field, Tracer, Watched};
use crate::engine::{Fail, Run, force, inspect};

use super::driver::{Table, await_answer, is_refusal, pair, refused, said, start};
use super::explain::{Writer, expect_read};
use super::probes::{
    Mapping, dev_shm, exists, find, io_of, mappings, name_still_there, object_bytes, object_fds,
    plant_object, resident_bytes, table_mapping,
};

pub fn mapped_by_each(run: &mut Run) -> Result<String, Fail> {
    let (mut creator, mut opener) = pair(run, "table", 10_000)?;
    let name = creator.name.clone();
    let path = dev_shm(&name).display().to_string();
    let mut ranges = Vec::new();
    for table in [&creator, &opener] {
        let pid = table.pid();
        let mapping = table_mapping(pid, &name).ok_or_else(|| {
            Fail::failed(format!(
                "{} (pid {pid}) says it has the table mapped, but /proc/{pid}/maps has no \
                 mapping of {path}: map the object itself with mmap(MAP_SHARED) and keep it \
                 mapped until close",
                table.who
            ))
        })?;
        if !mapping.perms.ends_with('s') {
            return Err(Fail::failed(format!(
                "{} maps the table privately ({}): its writes stay its own; map it with \
                 MAP_SHARED",
                table.who, mapping.perms
            )));
        }
        if !mapping.perms.starts_with("rw") {
            return Err(Fail::failed(format!(
                "{} maps the table {}: map it for reading and writing (PROT_READ | PROT_WRITE)",
                table.who, mapping.perms
            )));
        }
        let fds = object_fds(pid, &name);
        if !fds.is_empty() {
            return Err(Fail::failed(format!(
                "{} (pid {pid}) still holds descriptor {fds:?} of {path} once the table is \
                 mapped: close it after mmap() (drop the OwnedFd from shm_open()); the mapping \
                 keeps the object alive, and an open descriptor would keep its memory after \
                 munmap() and shm_unlink()",
                table.who
            )));
        }
        ranges.push(mapping);
    }
    let at = run.rng().random_range(0..9000);
    let data = run.random_bytes(1000);
    creator.write(run, at, &data)?;
    if object_bytes(&name, at, data.len()).as_deref() != Some(&data[..]) {
        return Err(Fail::failed(format!(
            "the creator said it wrote 1000 bytes at offset {at}, but {path} does not hold them: \
             write() must store into the mapping of the object itself"
        )));
    }
    let stays = |step: &str| -> Result<(), Fail> {
        name_still_there(&name, step)?;
        if object_bytes(&name, at, data.len()).as_deref() == Some(&data[..]) {
            return Ok(());
        }
        Err(Fail::failed(format!(
            "{path} held the 1000 bytes the creator wrote at offset {at}, but no longer once \
             {step}: the object's bytes stay as they are until unlink; close() only munmap()s"
        )))
    };
    // The opener closes first: its mapping goes; the object, its name and its bytes stay.
    unmapped(&mut opener, &ranges[1], &path)?;
    stays("the opener closed the table (op=close)")?;
    opener.exit()?;
    stays("the opener exited")?;
    creator.unlink()?;
    unmapped(&mut creator, &ranges[0], &path)?;
    creator.exit()?;
    Ok(
        "both processes map the object shared, read-write, without a descriptor, and unmap it \
        on close, leaving the name and the bytes"
            .into(),
    )
}

/// Closes `table`, which mapped the object at `range`, and checks, while it still runs, that
/// its munmap() freed those addresses and that it holds no descriptor of the object.
fn unmapped(table: &mut Table, range: &Mapping, path: &str) -> Result<(), Fail> {
    table.unmap()?;
    let pid = table.pid();
    // It still runs: only its munmap() can have removed the mapping.
    if let Some(mapping) = table_mapping(pid, &table.name) {
        return Err(Fail::failed(format!(
            "{} said `done` to close, yet /proc/{pid}/maps still shows the table mapped ({}) \
             while it runs: close() must munmap() it",
            table.who, mapping.perms
        )));
    }
    let over = mappings(pid)
        .into_iter()
        .find(|m| m.start < range.end && m.end > range.start);
    if let Some(over) = over {
        return Err(Fail::failed(format!(
            "{} said `done` to close and no longer maps the object, but the table's addresses \
             ({:x}-{:x}) are still mapped ({}): close() must munmap() the table, not map \
             something else over it",
            table.who,
            range.start,
            range.end,
            over.describe()
        )));
    }
    let fds = object_fds(pid, &table.name);
    if !fds.is_empty() {
        return Err(Fail::failed(format!(
            "{} closed the table but still holds descriptor {fds:?} of {path}: the object's \
             memory cannot be freed while a descriptor is open; close it once mapped",
            table.who
        )));
    }
    Ok(())
}

/// `reader` reads `len` bytes at `at` while `held` is stopped (SIGSTOP): the bytes are in the
/// shared pages, so the read needs nothing from the other process.
fn read_while_held(
    run: &mut Run,
    reader: &mut Table,
    held: &Table,
    at: usize,
    len: usize,
) -> Result<Vec<u8>, Fail> {
    let (fields, file) = reader.read_fields(run, at, len);
    force::hold(held.pid())?;
    let answer = reader.proc.send("cmd", &fields).and_then(|()| {
        // A correct read answers in a moment; the margin is for a loaded machine.
        let until = run.deadline() - Duration::from_secs(1);
        reader.proc.recv_before(until.max(Instant::now()))
    });
    let doing = waiting_on(reader.pid());
    force::resume(held.pid())?;
    let Some(answer) = answer? else {
        return Err(Fail::failed(format!(
            "with {} stopped (SIGSTOP), {} did not answer its read of {len} bytes ({doing}): \
             a read must need nothing from the other process; copy straight out of the shared \
             mapping",
            held.who, reader.who
        )));
    };
    if answer.kind != "done" {
        return Err(Fail::failed(format!(
            "{} could not read {len} bytes at offset {at}: it said {}",
            reader.who,
            said(&answer)
        )));
    }
    let bytes = std::fs::read(&file)?;
    std::fs::remove_file(&file)?;
    Ok(bytes)
}

/// What the threads of `pid` are blocked in, in words.
fn waiting_on(pid: i32) -> String {
    let Some(view) = inspect::view(pid) else {
        return "it is gone".into();
    };
    let calls: Vec<String> = view
        .threads
        .iter()
        .map(|t| classify(&view, t.syscall).describe())
        .collect();
    calls.join("; ")
}

/// `writer` writes fresh bytes at `at` and `reader` reads them back, while `writer` is
/// stopped when `hold_writer` (so that nothing it does later can make up for a missing store).
fn write_then_read(
    run: &mut Run,
    writer: &mut Table,
    reader: &mut Table,
    at: usize,
    len: usize,
    hold_writer: bool,
    context: &str,
) -> Result<(), Fail> {
    let data = run.random_bytes(len);
    writer.write(run, at, &data)?;
    let got = if hold_writer {
        read_while_held(run, reader, writer, at, len)?
    } else {
        reader.read(run, at, len)?
    };
    expect_read(
        reader,
        Writer::Program(writer),
        at,
        &got,
        &data,
        context,
        None,
    )
}

pub fn shared_updates(run: &mut Run) -> Result<String, Fail> {
    let (mut creator, mut opener) = pair(run, "table", 10_000)?;
    let len = run.rng().random_range(500..1500);
    let at = run.rng().random_range(0..4000);
    let back = run.rng().random_range(5000..8000);
    write_then_read(
        run,
        &mut creator,
        &mut opener,
        at,
        len,
        true,
        "what the creator wrote, as the opener read it",
    )?;
    // The same bytes again, written over by the other side: each must see the newest.
    write_then_read(
        run,
        &mut opener,
        &mut creator,
        at,
        len,
        false,
        "the opener wrote over the creator's bytes; as the creator read them back",
    )?;
    write_then_read(
        run,
        &mut opener,
        &mut creator,
        back,
        len,
        true,
        "what the opener wrote, as the creator read it",
    )?;
    write_then_read(
        run,
        &mut creator,
        &mut opener,
        back,
        len,
        false,
        "the creator wrote over the opener's bytes; as the opener read them back",
    )?;
    creator.unlink()?;
    opener.close()?;
    creator.close()?;
    Ok(
        "writes went both ways in place, each side saw the other's newest bytes, with the writer \
        stopped"
            .into(),
    )
}

pub fn bytes_in_the_object(run: &mut Run) -> Result<String, Fail> {
    let size = 64 << 10;
    let (mut creator, mut opener) = pair(run, "table", size)?;
    let path = dev_shm(&creator.name);
    // read() and write() on the object reach the very pages the programs map, and, unlike a
    // mapping, cannot fault if a program shrinks the object.
    let object = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)?;
    let len = (16 << 10) + run.rng().random_range(0..1024);
    let at = run.rng().random_range(0..size / 2 - len);
    let data = run.random_bytes(len);
    // /proc/PID/io counts the bytes of read-like and write-like calls, not loads and stores: a
    // write into the mapping moves none (the program reads the grader's file, that is all).
    let (before, printed) = (io_of(&creator.proc), output_bytes(&creator.proc));
    let store_seen = watched_access(run, &mut creator, Access::Write(&data), at)?;
    let mut moved = io_of(&creator.proc).since(before);
    // What it printed (stdout, stderr) counts too, and is not the table's business; the
    // grader's capture of it may be a moment behind.
    let settle = Instant::now() + Duration::from_secs(1);
    let written = moved.written_bytes;
    while moved.written_bytes >= len as u64 / 2 && Instant::now() < settle {
        let printed = output_bytes(&creator.proc).saturating_sub(printed);
        moved.written_bytes = written.saturating_sub(printed);
        std::thread::sleep(Duration::from_millis(10));
    }
    if moved.written_bytes >= len as u64 / 2 {
        return Err(Fail::failed(format!(
            "writing {len} bytes into the table, the creator passed {} bytes to write-like \
             system calls (write, pwrite, ...): {}; store them into the mapped memory, with no \
             system call",
            moved.written_bytes,
            through(&creator, "wrote")
        )));
    }
    let mut seen = vec![0u8; data.len()];
    object.read_exact_at(&mut seen, at as u64).map_err(|e| {
        Fail::failed(format!(
            "the grader cannot read {} at offset {at}: {e}; leave the object its size",
            path.display()
        ))
    })?;
    if seen != data {
        let cause = match table_mapping(creator.pid(), &creator.name) {
            Some(m) if !m.perms.ends_with('s') => format!(
                "it maps the table privately ({}, MAP_PRIVATE), so its stores stay in its own \
                 copy-on-write pages; map it with MAP_SHARED",
                m.perms
            ),
            _ => {
                let mut whole = vec![0u8; size];
                let found = object
                    .read_exact_at(&mut whole, 0)
                    .ok()
                    .and_then(|()| find(&whole, &data));
                match (found, super::explain::partly(&seen, &data)) {
                    (Some(to), _) => format!(
                        "they are at offset {to}: write() must copy to the mapping's address \
                         plus the offset asked for"
                    ),
                    (None, Some(part)) => format!(
                        "it holds only {part}: write() must copy all of them, to the mapping's \
                         address plus the offset"
                    ),
                    (None, None) => "write into the mapping of the object itself, not into a \
                                     copy or a file of your own"
                        .into(),
                }
            }
        };
        return Err(Fail::failed(format!(
            "the creator said it wrote {len} bytes at offset {at}, but {} holds other bytes \
             there: {cause}",
            path.display()
        )));
    }
    let mine = run.random_bytes(len);
    let back = run.rng().random_range(size / 2..size - len);
    object.write_all_at(&mine, back as u64)?;
    let before = io_of(&opener.proc);
    let (fields, file) = opener.read_fields(run, back, len);
    let load_seen = watched_access(run, &mut opener, Access::Read(&fields), back)?;
    let read = std::fs::read(&file)?;
    std::fs::remove_file(&file)?;
    let moved = io_of(&opener.proc).since(before);
    if moved.read_bytes >= len as u64 / 2 {
        return Err(Fail::failed(format!(
            "reading {len} bytes of the table, the opener got {} bytes from read-like system \
             calls (read, pread, ...): {}; copy them out of the mapped memory, with no system \
             call",
            moved.read_bytes,
            through(&opener, "read")
        )));
    }
    expect_read(
        &opener,
        Writer::Object("the grader"),
        back,
        &read,
        &mine,
        &format!(
            "the grader wrote {len} bytes at offset {back} of {}, as the opener read them",
            path.display()
        ),
        None,
    )?;
    for (seen, who, doing, at, access) in [
        (store_seen, creator.who, "writing", at, "store into"),
        (load_seen, opener.who, "reading", back, "load from"),
    ] {
        if seen == Some(false) {
            return Err(Fail::failed(format!(
                "{doing} {len} bytes at offset {at} of the table, {who} said `done` and the \
                 bytes arrived, but none of its own instructions touched them: a hardware \
                 watchpoint on the table's bytes at offset {} of its mapping saw no {access} \
                 them (and /proc/PID/io counted no read or write): the kernel copied them for \
                 it, by a system call such as process_vm_readv()/process_vm_writev() or an \
                 access to /proc/self/mem; read() and write() copy the bytes themselves, with \
                 a plain memory copy between the buffer and the mapping",
                watched_offset(at)
            )));
        }
    }
    creator.unlink()?;
    opener.close()?;
    creator.close()?;
    let watched = if store_seen.is_some() && load_seen.is_some() {
        ", each by the program's own loads and stores (seen with a hardware watchpoint)"
    } else {
        ""
    };
    Ok(format!(
        "the grader saw the creator's write in {} and the opener read the grader's, {len} bytes \
         each way with no read or write system call{watched}",
        path.display()
    ))
}

/// A command whose copy the grader watches.
#[derive(Clone, Copy)]
enum Access<'a> {
    /// Write these bytes.
    Write(&'a [u8]),
    /// Read: the command's fields.
    Read(&'a [(&'static str, String)]),
}

/// The offset of the 8 bytes watched in an access that starts at `at` (watchpoints are
/// aligned; the accesses watched are kilobytes long).
fn watched_offset(at: usize) -> usize {
    at.next_multiple_of(8)
}

const STORES: &[Field] = &[Field {
    offset: 0,
    len: 8,
    loads: false,
}];
const LOADS_AND_STORES: &[Field] = &[Field {
    offset: 0,
    len: 8,
    loads: true,
}];

/// Has `table` do `access` at `at` (which must succeed) with a hardware watchpoint on 8 bytes
/// of its mapping there: whether its own instructions stored into them (a write) or loaded
/// from them (a read) before it answered; `None` where the grader cannot watch.
fn watched_access(
    run: &mut Run,
    table: &mut Table,
    access: Access<'_>,
    at: usize,
) -> Result<Option<bool>, Fail> {
    let (fields, file, what, fields_watched) = match access {
        Access::Write(data) => {
            let fields = table.write_fields(run, at, data)?;
            let file = std::path::PathBuf::from(&fields[2].1);
            let what = format!("write {} bytes at offset {at}", data.len());
            (fields, Some(file), what, STORES)
        }
        Access::Read(fields) => {
            let len = fields
                .iter()
                .find(|(k, _)| *k == "len")
                .map_or("", |f| f.1.as_str());
            let what = format!("read {len} bytes at offset {at}");
            (fields.to_vec(), None, what, LOADS_AND_STORES)
        }
    };
    let tracer = match table_mapping(table.pid(), &table.name) {
        Some(m) => Tracer::watch_at(
            table.pid(),
            m.start + watched_offset(at) as u64,
            fields_watched,
        )?,
        None => None,
    };
    let Some(mut tracer) = tracer else {
        table.must(&what, &fields)?;
        if let Some(file) = file {
            std::fs::remove_file(file)?;
        }
        if let Access::Write(data) = access {
            table.wrote.push((at, data.to_vec()));
        }
        return Ok(None);
    };
    let until = Instant::now() + Duration::from_secs(5);
    // Whether the command went, whether the watchpoint was set, and whether it was hit.
    let (mut sent, mut armed, mut hit) = (false, false, false);
    let answer = loop {
        match tracer.next(&mut table.proc, until)? {
            Watched::Armed => {
                armed = true;
                table.proc.send("cmd", &fields)?;
                sent = true;
            }
            Watched::Hit => {
                // One is enough: the rest of the copy runs unwatched.
                hit = true;
                break None;
            }
            Watched::Said(message) => break Some(message),
            Watched::Lost | Watched::Unavailable => {
                armed = false;
                break None;
            }
        }
    };
    drop(tracer);
    if !sent {
        table.proc.send("cmd", &fields)?;
    }
    let answer = match answer {
        Some(answer) => answer,
        None => await_answer(
            &mut table.proc,
            table.who,
            &format!("asked to {what}"),
            None,
        )?,
    };
    finish(table, &what, answer, file)?;
    if let Access::Write(data) = access {
        table.wrote.push((at, data.to_vec()));
    }
    Ok(armed.then_some(hit))
}

/// The end of a watched access: it must have said `done`; the data file goes.
fn finish(
    table: &mut Table,
    what: &str,
    answer: ipc_labs_driver::Message,
    file: Option<std::path::PathBuf>,
) -> Result<(), Fail> {
    if let Some(file) = file {
        std::fs::remove_file(file)?;
    }
    if answer.kind != "done" {
        return Err(Fail::failed(format!(
            "{} could not {what}: it said {}",
            table.who,
            said(&answer)
        )));
    }
    Ok(())
}

/// How many bytes the program has written to its stdout and stderr so far.
fn output_bytes(proc: &crate::engine::Proc) -> u64 {
    [&proc.stdout, &proc.stderr]
        .iter()
        .map(|captured| {
            let captured = captured.lock().expect("capture lock");
            captured.bytes.len() as u64 + captured.dropped
        })
        .sum()
}

/// Through what a program that moved the table's bytes with system calls `did` them, as far as
/// `/proc` tells.
fn through(table: &Table, did: &str) -> String {
    let path = dev_shm(&table.name).display().to_string();
    let fds = object_fds(table.pid(), &table.name);
    let how = if fds.is_empty() {
        format!(
            "it {did} them through a file it opened for the purpose (it holds no descriptor of \
             {path} now), such as the object opened by its path or a file of its own"
        )
    } else {
        format!("it {did} them through its descriptor {fds:?} of {path} (pread/pwrite)")
    };
    match resident_bytes(table.pid(), &table.name) {
        Some(0) => format!("{how}, and never touched its mapping (none of its pages is resident)"),
        _ => format!("{how}, not through its mapping"),
    }
}

pub fn unlinked_but_mapped(run: &mut Run) -> Result<String, Fail> {
    let size = 10_000;
    let (mut creator, mut opener) = pair(run, "table", size)?;
    let name = creator.name.clone();
    let path = dev_shm(&name).display().to_string();
    creator.unlink()?;
    if exists(&name) {
        return Err(Fail::failed(format!(
            "{path} still exists after the creator's unlink: remove the name with shm_unlink()"
        )));
    }
    if table_mapping(creator.pid(), &name).is_none() {
        return Err(Fail::failed(format!(
            "after its unlink the creator no longer maps the table (not in /proc/{}/maps): \
             unlink() removes the name only; the mapping stays until close()",
            creator.pid()
        )));
    }
    let mut late = start(run, &name, None, "a late opener")?;
    let answer = await_answer(
        &mut late,
        "a late opener",
        &format!("opening {name} after it was unlinked"),
        Some("not-found when shm_open() fails with ENOENT"),
    )?;
    if answer.get("kind") != Some("not-found") || answer.kind != "failed" {
        let cause = if exists(&name) {
            format!(
                "and {path} exists again: open() created it; open with O_RDWR alone, no O_CREAT"
            )
        } else {
            "shm_open() fails with ENOENT for a name that does not exist, which is \
             TableError::NotFound"
                .into()
        };
        return Err(Fail::failed(format!(
            "opening {name} after it was unlinked, the program said {}, not `failed` with \
             kind=not-found: {cause}",
            said(&answer)
        )));
    }
    late.wait()?;
    let again = opener.command(&[("op", "unlink".into())])?;
    refused(
        &again,
        "not-found",
        "the opener unlinking the name the creator had already unlinked",
        "shm_unlink() fails with ENOENT for a name that does not exist, which is \
         TableError::NotFound",
    )?;
    // A new object takes the name: the two processes must go on sharing the old one.
    let fresh = run.random_bytes(size);
    let planted = plant_object(run, &name, &fresh)?;
    let len = 2000;
    let at = run.rng().random_range(0..size - len);
    let data = run.random_bytes(len);
    opener.write(run, at, &data)?;
    let got = creator.read(run, at, len)?;
    expect_read(
        &creator,
        Writer::Program(&opener),
        at,
        &got,
        &data,
        "after unlink, what the opener wrote, as the creator read it (the memory lives on while \
         mapped)",
        Some(&fresh),
    )?;
    let reply = run.random_bytes(len);
    creator.write(run, at, &reply)?;
    let got = opener.read(run, at, len)?;
    expect_read(
        &opener,
        Writer::Program(&creator),
        at,
        &got,
        &reply,
        "after unlink, the creator's write as the opener read it",
        Some(&fresh),
    )?;
    if object_bytes(&name, at, len).as_deref() != Some(&fresh[at..at + len]) {
        return Err(Fail::failed(format!(
            "after the unlink the grader created a new object named {name}, and the programs' \
             writes to their table changed it: write() must store into the process's own \
             mapping, not into whatever file has the name now"
        )));
    }
    // The name is the grader's object's now: the creator's second unlink must remove it, as
    // shm_unlink() does; an answer from memory of its first unlink says not-found.
    let second = creator.command(&[("op", "unlink".into())])?;
    if second.kind != "done" || exists(&name) {
        return Err(Fail::failed(format!(
            "after the creator's unlink the grader created a new object named {name}; a second \
             unlink by the creator said {}{}: unlink() calls shm_unlink() every time, which \
             removes whatever object has the name now (not-found only when shm_unlink() fails \
             with ENOENT)",
            said(&second),
            if exists(&name) {
                format!(" and {path} is still there")
            } else {
                String::new()
            }
        )));
    }
    drop(planted);
    // A directory at the name: shm_unlink() fails, with another error than ENOENT (EISDIR,
    // or EPERM for a program that does not own it), which is no not-found.
    let dir = dev_shm(&name);
    std::fs::create_dir(&dir)?;
    // The program's own, so that the error is EISDIR whoever it runs as (not the sticky
    // /dev/shm's EPERM).
    if let Some((uid, gid)) = run.program_user() {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid))?;
    }
    let answer = creator.command(&[("op", "unlink".into())]);
    let _ = std::fs::remove_dir(&dir);
    let answer = answer?;
    if is_refusal(&answer, "not-found") {
        return Err(Fail::failed(format!(
            "with a directory at {path} (the grader made it), the creator's unlink said \
             kind=not-found, but the name exists: shm_unlink() failed with another error than \
             ENOENT (EISDIR), and only ENOENT is NotFound; any other errno is \
             TableError::Unlink (kind=shm-unlink)"
        )));
    }
    refused(
        &answer,
        "shm-unlink",
        &format!("with a directory at {path} (the grader made it), the creator's unlink"),
        "shm_unlink() fails there (EISDIR), and an error other than ENOENT is \
         TableError::Unlink",
    )?;
    opener.close()?;
    creator.close()?;
    Ok(
        "the name went, the shared memory stayed while mapped, apart from a new object of that \
        name, which the creator's second unlink removed; an unlink that failed otherwise than \
        with ENOENT was shm-unlink"
            .into(),
    )
}
