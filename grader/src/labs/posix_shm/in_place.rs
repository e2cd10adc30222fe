//! Where the bytes go: into the object itself, through the mappings, copied by the
//! program's own instructions (a hardware watchpoint sees them), with no read or write system
//! call (`/proc/PID/io`); when a program moves them by system call, the grader holds it at one
//! to see through what.

use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use rand::RngExt;

use crate::engine::tracer::{Action, Call, Field, Reached, Tracer, Watched};
use crate::engine::{Fail, Run, inspect};

use super::driver::{Table, WatchedCommand, await_answer, pair, said};
use super::explain::{Writer, expect_read};
use super::probes::{
    dev_shm, find, io_of, mapped_bytes, object_fds, other_threads, resident_bytes, table_mapping,
};

pub fn bytes_in_the_object(run: &mut Run) -> Result<String, Fail> {
    // Each access is nearly half the table: a copy the program hands to the kernel past some
    // length would hide below it.
    let size = 256 << 10;
    let (mut creator, mut opener) = pair(run, "table", size)?;
    let path = dev_shm(&creator.name);
    // read() and write() on the object reach the very pages the programs map, and, unlike a
    // mapping, cannot fault if a program shrinks the object.
    let object = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)?;
    let len = size / 2 - run.rng().random_range(1..1024);
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
        let how = through(run, &mut creator, Moved::Wrote, at, len)?;
        return Err(Fail::failed(format!(
            "writing {len} bytes into the table, the creator passed {} bytes to write-like \
             system calls (write, pwrite, ...): {how}; store them into the mapped memory, with \
             no system call",
            moved.written_bytes,
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
                let late = |when: String| {
                    format!(
                        "they arrived only {when}, its copy unfinished at its `done`: the bytes \
                         reach the table after write() has returned (copied by another thread \
                         or process of the program), so a process that reads right after the \
                         `done` finds the old ones; write() copies the bytes into the mapping \
                         itself, before it returns"
                    )
                };
                match (found, super::explain::partly(&seen, &data)) {
                    // Found where they belong by the second look: they came late.
                    (Some(to), _) if to == at => late("by the grader's second look".into()),
                    (Some(to), _) => format!(
                        "they are at offset {to}: write() must copy to the mapping's address \
                         plus the offset asked for"
                    ),
                    (None, Some(part)) => format!(
                        "it holds only {part}: write() must copy all of them, to the mapping's \
                         address plus the offset"
                    ),
                    (None, None) => match arrived_later(&object, at, &data) {
                        Some(after) => late(format!("{after} ms later")),
                        None => "write into the mapping of the object itself, not into a copy \
                                 or a file of your own"
                            .into(),
                    },
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
        let how = through(run, &mut opener, Moved::Read, back, len)?;
        return Err(Fail::failed(format!(
            "reading {len} bytes of the table, the opener got {} bytes from read-like system \
             calls (read, pread, ...): {how}; copy them out of the mapped memory, with no \
             system call",
            moved.read_bytes,
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
            let moved = if doing == "writing" {
                Moved::Wrote
            } else {
                Moved::Read
            };
            let table = if moved == Moved::Wrote {
                &mut creator
            } else {
                &mut opener
            };
            if moved == Moved::Wrote
                && let Some(elsewhere) = stored_by_other_thread(run, table, at, len)?
            {
                return Err(Fail::failed(elsewhere));
            }
            let how = untouched_how(run, table, moved, at, len)?;
            return Err(Fail::failed(format!(
                "{doing} {len} bytes at offset {at} of the table, {who} said `done` and the \
                 bytes arrived, but none of its own instructions touched them at the table's \
                 addresses: a hardware watchpoint on the table's bytes at offset {} of its \
                 mapping saw no {access} them (and /proc/PID/io counted no read or write): \
                 {how}; read() and write() copy the bytes themselves, with a plain memory copy \
                 between the buffer and the mapping create() or open() made",
                watched_offset(at)
            )));
        }
    }
    read_beside_a_writer(run, &mut opener, &object, back, len)?;
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

/// The calls by which a program can move the table's bytes without its own instructions
/// touching the table's mapping: a new shared mapping (of the object, opened again), or a copy
/// the kernel makes between two places of its own memory.
const ELSEWHERE: &[Call] = &[
    Call::flag_set(libc::SYS_mmap, 3, libc::MAP_SHARED as u64),
    Call::one_of(&[libc::SYS_process_vm_readv, libc::SYS_process_vm_writev]),
];

/// How a program that moved the bytes with no load or store at the table's addresses and no
/// read or write call did it, as the grader sees it held at the first of [`ELSEWHERE`] in one
/// more access of `len` bytes at `at`.
fn untouched_how(
    run: &mut Run,
    table: &mut Table,
    moved: Moved,
    at: usize,
    len: usize,
) -> Result<String, Fail> {
    let path = dev_shm(&table.name).display().to_string();
    let access = if moved == Moved::Wrote {
        "write"
    } else {
        "read"
    };
    let held = held_at_call(run, table, moved, at, len, Call::any_of(ELSEWHERE), 4)?;
    Ok(match held {
        Some((libc::SYS_mmap, args, target)) => {
            let fd = args[4] as i32;
            let what = match target {
                Some(target) if target == path || target.starts_with(&format!("{path} ")) => {
                    format!(
                        "{path} again: it maps the object a second time for the access (opens \
                         it again, mmap()) and copies through that fresh mapping, not through \
                         the table's"
                    )
                }
                Some(target) => format!(
                    "{target}, not the table's mapping: it copies through another mapping made \
                     for the access"
                ),
                None => "a descriptor the grader could not see: it copies through another \
                         mapping made for the access"
                    .into(),
            };
            format!(
                "held at the first mmap(MAP_SHARED) of one more {access}, it was mapping (its \
                 descriptor {fd}) {what}; each access then makes system calls, and after an \
                 unlink and a new object at the name it would reach that other object"
            )
        }
        Some((number, args, _)) => format!(
            "held at one more {access}, it entered {}() of {}: the kernel copied the bytes \
             for it",
            if number == libc::SYS_process_vm_writev {
                "process_vm_writev"
            } else {
                "process_vm_readv"
            },
            if args[0] == table.pid() as u64 {
                "its own memory".to_string()
            } else {
                format!("process {}", args[0])
            }
        ),
        None => "either the kernel copied them for it (process_vm_readv()/process_vm_writev() \
                 or /proc/self/mem), or it copied them through another mapping of the object \
                 (the grader saw neither as it held one more access)"
            .into(),
    })
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
    let Some(tracer) = tracer else {
        table.must(&what, &fields)?;
        if let Some(file) = file {
            std::fs::remove_file(file)?;
        }
        if let Access::Write(data) = access {
            table.wrote.push((at, data.to_vec()));
        }
        return Ok(None);
    };
    let WatchedCommand { answer, armed, hit } = table.command_watched(tracer, &fields)?;
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

/// Which way a program moved the table's bytes with system calls.
#[derive(Clone, Copy, PartialEq)]
enum Moved {
    Wrote,
    Read,
}

impl Moved {
    fn did(self) -> &'static str {
        match self {
            Moved::Wrote => "wrote",
            Moved::Read => "read",
        }
    }

    /// The calls that move bytes this way (the program's commands and answers go by
    /// `recvfrom()` and `sendto()`, none of these).
    fn calls(self) -> &'static [i64] {
        match self {
            Moved::Wrote => &[
                libc::SYS_write,
                libc::SYS_pwrite64,
                libc::SYS_writev,
                libc::SYS_pwritev,
                libc::SYS_pwritev2,
            ],
            Moved::Read => &[
                libc::SYS_read,
                libc::SYS_pread64,
                libc::SYS_readv,
                libc::SYS_preadv,
                libc::SYS_preadv2,
            ],
        }
    }
}

/// The name of one of [`Moved::calls`].
fn call_name(number: i64) -> &'static str {
    match number {
        libc::SYS_write => "write()",
        libc::SYS_pwrite64 => "pwrite()",
        libc::SYS_writev => "writev()",
        libc::SYS_pwritev | libc::SYS_pwritev2 => "pwritev()",
        libc::SYS_read => "read()",
        libc::SYS_pread64 => "pread()",
        libc::SYS_readv => "readv()",
        _ => "preadv()",
    }
}

/// Through what a program that moved the table's bytes with system calls (`moved` them) did
/// it, as far as `/proc` tells, and, when it holds no descriptor of the object, as the grader
/// sees it held at the first such call of one more access of `len` bytes at `at`.
fn through(
    run: &mut Run,
    table: &mut Table,
    moved: Moved,
    at: usize,
    len: usize,
) -> Result<String, Fail> {
    let did = moved.did();
    let path = dev_shm(&table.name).display().to_string();
    let fds = object_fds(table.pid(), &table.name);
    let how = if !fds.is_empty() {
        format!("it {did} them through its descriptor {fds:?} of {path} (pread/pwrite)")
    } else {
        match held_at_copy(run, table, moved, at, len)? {
            Some((call, fd, target)) if target == format!("/proc/{}/mem", table.pid()) => {
                return Ok(format!(
                    "held at the first such call of one more {} ({call} of descriptor {fd}), \
                     it was copying them through {target}, its own memory: it {did} them at \
                     the mapping's addresses through /proc/self/mem, so the kernel copied them \
                     for it, not its own instructions",
                    if moved == Moved::Wrote {
                        "write"
                    } else {
                        "read"
                    }
                ));
            }
            Some((call, fd, target)) => {
                let what = if target == path || target.starts_with(&path) {
                    "the object itself, opened a second time (by its path or by shm_open())"
                } else {
                    "a file of its own"
                };
                format!(
                    "it {did} them through a file it opened for the purpose (it holds no \
                     descriptor of {path} now): held at the first such call of one more access \
                     ({call} of descriptor {fd}), it was copying them through {target}, {what}"
                )
            }
            None => format!(
                "it {did} them through a file it opened for the purpose (it holds no \
                 descriptor of {path} now), such as the object opened by its path or a file of \
                 its own"
            ),
        }
    };
    Ok(match resident_bytes(table.pid(), &table.name) {
        Some(0) => format!("{how}, and never touched its mapping (none of its pages is resident)"),
        _ => format!("{how}, not through its mapping"),
    })
}

/// Has `table` make one more access of `len` bytes at `at` (a write when `moved` is
/// [`Moved::Wrote`]) and holds it at its first call of [`Moved::calls`]: that call, its
/// descriptor and the file the descriptor is open on. `None` where the grader may not trace
/// it, or it made no such call before it answered.
fn held_at_copy(
    run: &mut Run,
    table: &mut Table,
    moved: Moved,
    at: usize,
    len: usize,
) -> Result<Option<(&'static str, i32, String)>, Fail> {
    let held = held_at_call(run, table, moved, at, len, Call::one_of(moved.calls()), 0)?;
    Ok(held.and_then(|(number, args, target)| Some((call_name(number), args[0] as i32, target?))))
}

/// A call the program was held at: its number, its arguments, and the file its descriptor
/// argument is open on.
type HeldAt = (i64, [u64; 6], Option<String>);

/// Has `table` make one more access of `len` bytes at `at` (a write when `moved` is
/// [`Moved::Wrote`]) and holds it at the entry of its first `call`: that call's number, its
/// arguments and the file its argument `fd_arg` (a descriptor) is open on. `None` where the
/// grader may not trace it, or it made no such call before it answered.
fn held_at_call(
    run: &mut Run,
    table: &mut Table,
    moved: Moved,
    at: usize,
    len: usize,
    call: Call,
    fd_arg: usize,
) -> Result<Option<HeldAt>, Fail> {
    let pid = table.pid();
    let Some(mut tracer) = Tracer::attach(pid, call, Action::Hold)? else {
        return Ok(None);
    };
    let (fields, file) = match moved {
        Moved::Wrote => {
            let data = run.random_bytes(len);
            let fields = table.write_fields(run, at, &data)?;
            let file = std::path::PathBuf::from(&fields[2].1);
            (fields, file)
        }
        Moved::Read => table.read_fields(run, at, len),
    };
    table.proc.send("cmd", &fields)?;
    let until = Instant::now() + Duration::from_secs(2);
    let (seen, said) = match tracer.wait(&mut table.proc, until)? {
        Reached::Call => {
            let seen = inspect::call_of(pid, pid).map(|(number, args)| {
                let fd = args[fd_arg] as i32;
                let target = std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
                    .ok()
                    .map(|target| target.display().to_string());
                (number, args, target)
            });
            tracer.release();
            (seen, None)
        }
        Reached::Passed(said) => {
            drop(tracer);
            (None, said)
        }
    };
    if said.is_none() {
        await_answer(
            &mut table.proc,
            table.who,
            "asked for one more access",
            None,
        )?;
    }
    let _ = std::fs::remove_file(file);
    Ok(seen)
}

/// How many loads of the same byte one read of it may make: a copy that loads it twice
/// (overlapping vector loads) is still one copy.
const LOADS_IN_ONE_COPY: usize = 2;

/// How many loads of the byte the grader lets a read make, changing it after each, before it
/// judges that the read copies until the bytes stop changing (a read that answers after more
/// than [`LOADS_IN_ONE_COPY`], but no more than this, copies a fixed number of times).
const LOADS_SEEN: usize = 8;

/// A byte, loads included: a string copy (`rep movsb`) stopped at a watched access goes on a
/// byte at a time, so each byte of a wider field would count as a load of its own.
const ONE_BYTE_LOADED: &[Field] = &[Field {
    offset: 0,
    len: 1,
    loads: true,
}];

/// One more read of `len` bytes at `at` by `table`, while the grader changes the byte watched
/// in the middle of the range after each load of it, and the range's first and last bytes
/// with it, as a writer in another process may at any moment: the read must answer after one
/// copy, whatever it copied, not copy again until the bytes (the middle, or only the ends)
/// stop changing. `object` is the object's file, the very pages mapped.
fn read_beside_a_writer(
    run: &mut Run,
    table: &mut Table,
    object: &std::fs::File,
    at: usize,
    len: usize,
) -> Result<(), Fail> {
    let watched = watched_offset(at + len / 2);
    let Some(mapping) = table_mapping(table.pid(), &table.name) else {
        return Ok(());
    };
    let Some(mut tracer) =
        Tracer::watch_at(table.pid(), mapping.start + watched as u64, ONE_BYTE_LOADED)?
    else {
        return Ok(());
    };
    let what = format!("reading {len} bytes at offset {at} of the table");
    let (fields, file) = table.read_fields(run, at, len);
    let until = Instant::now() + Duration::from_secs(5);
    let (mut loads, mut sent) = (0, false);
    let answer = loop {
        match tracer.next(&mut table.proc, until)? {
            Watched::Armed => {
                table.proc.send("cmd", &fields)?;
                sent = true;
            }
            Watched::Hit if loads < LOADS_SEEN => {
                loads += 1;
                // A copy runs one way: one end at least was loaded before this change.
                for changed in [at, watched, at + len - 1] {
                    object.write_all_at(&[loads as u8], changed as u64)?;
                }
                tracer.go_on();
            }
            Watched::Hit => {
                drop(tracer);
                table.proc.kill_tree();
                let _ = std::fs::remove_file(&file);
                return Err(Fail::failed(format!(
                    "{what}, {} loaded the byte at offset {watched} more than \
                     {LOADS_SEEN} times without answering, while the grader changed \
                     it, and the range's first and last bytes ({at} and {}), after each load \
                     (as another process writing the table may; a hardware watchpoint saw the \
                     loads): read() copies the range again until it stops changing (all of \
                     it, or only its ends compared with the copy), that is, it waits for \
                     writers and never answers under a steady one; read() makes one copy and \
                     answers at once, whatever another process stores meanwhile",
                    table.who,
                    at + len - 1
                )));
            }
            Watched::Said(answer) => break Some(answer),
            Watched::Lost | Watched::Unavailable => break None,
        }
    };
    drop(tracer);
    if !sent {
        table.proc.send("cmd", &fields)?;
    }
    let answer = match answer {
        Some(answer) => answer,
        None => await_answer(&mut table.proc, table.who, &what, None)?,
    };
    if loads > LOADS_IN_ONE_COPY {
        let _ = std::fs::remove_file(&file);
        return Err(Fail::failed(format!(
            "{what}, {} loaded the byte at offset {watched}, in the middle of the range, \
             {loads} times before it said {}, while the grader changed it, and the range's \
             first and last bytes, after each load (as another process writing the table may; \
             a hardware watchpoint saw the loads): \
             read() copies the range {loads} times (a second copy to compare with the first, \
             and another when they differ, say); more copies make no read untorn while a \
             writer is at work, they only cost time: read() makes one copy of the range and \
             answers with it, whatever another process stores meanwhile",
            table.who,
            said(&answer)
        )));
    }
    finish(table, &what, answer, Some(file))
}

/// One more write of `len` bytes at `at` by `table`, whose own thread stored nothing into
/// them, with a hardware watchpoint on the same 8 bytes in each of its other threads: which
/// thread stores them, and whether write() answered while that thread, held at its store, had
/// not finished the copy. `None` when no other thread stored them.
fn stored_by_other_thread(
    run: &mut Run,
    table: &mut Table,
    at: usize,
    len: usize,
) -> Result<Option<String>, Fail> {
    let pid = table.pid();
    let Some(mapping) = table_mapping(pid, &table.name) else {
        return Ok(None);
    };
    let offset = watched_offset(at);
    let until = Instant::now() + Duration::from_secs(5);
    let mut watchers = Vec::new();
    // Four debug registers a thread: a copier among more threads than that is not looked for.
    for tid in other_threads(pid).into_iter().take(4) {
        let Some(mut tracer) =
            Tracer::watch_at_in(pid, tid, mapping.start + offset as u64, STORES)?
        else {
            continue;
        };
        let armed = loop {
            match tracer.next_watched(until)? {
                Some(Watched::Armed) => break true,
                Some(_) => break false,
                None if Instant::now() >= until => break false,
                None => {}
            }
        };
        if armed {
            watchers.push((tid, tracer));
        }
    }
    if watchers.is_empty() {
        return Ok(None);
    }
    let data = run.random_bytes(len);
    let fields = table.write_fields(run, at, &data)?;
    let file = std::path::PathBuf::from(&fields[2].1);
    table.proc.send("cmd", &fields)?;
    // The thread that stores, held at its store, and how much of the copy its mapping lacked
    // once the write had answered (`None`: it did not answer while the thread was held).
    let (mut storer, mut answer, mut missing) = (None, None, None);
    // When the store was seen, and when the answer came: a store held 300 ms with no answer (a
    // write() that waits for its copier), or an answer with no store 300 ms after, ends the
    // watch.
    let (mut stored_at, mut answered_at) = (None, None);
    let waited = |since: Option<Instant>| {
        since.is_some_and(|t: Instant| t.elapsed() > Duration::from_millis(300))
    };
    while Instant::now() < until && !waited(stored_at) && !waited(answered_at) {
        for (tid, tracer) in &mut watchers {
            if storer.is_none()
                && let Some(Watched::Hit) = tracer.next_watched(Instant::now())?
            {
                storer = Some(*tid);
                stored_at = Some(Instant::now());
            }
        }
        if answer.is_none() {
            answer = table
                .proc
                .recv_before(Instant::now() + Duration::from_millis(1))?;
            answered_at = answer.as_ref().map(|_| Instant::now());
        }
        if storer.is_some() && answer.is_some() {
            // The storer is still held: what the table holds now is what it held at `done`.
            let now = mapped_bytes(pid, &table.name, at, len).unwrap_or_default();
            missing = Some(now.iter().zip(&data).filter(|(a, b)| a != b).count());
            break;
        }
    }
    drop(watchers);
    let answer = match answer {
        Some(answer) => answer,
        None => await_answer(&mut table.proc, table.who, "asked to write", None)?,
    };
    finish(table, "write", answer, Some(file))?;
    table.wrote.push((at, data));
    let Some(tid) = storer else {
        return Ok(None);
    };
    let seen = format!(
        "writing {len} bytes at offset {at} of the table, {} said `done`, but no store by the \
         thread that called write() reached them: one more write, with a hardware watchpoint \
         on the table's bytes at offset {offset} in each of its other threads, saw its thread \
         {tid} store them",
        table.who
    );
    Ok(Some(match missing {
        Some(missing) => format!(
            "{seen}, and write() said `done` while the grader held that thread at its store, \
             its copy unfinished{}: the bytes reach the table after write() has returned, so a \
             process that reads right after the `done` finds the old ones; write() copies the \
             bytes into the mapping itself, before it returns",
            if missing > 0 {
                format!(" (the table then lacked {missing} of the {len} bytes)")
            } else {
                String::new()
            }
        ),
        None => format!(
            "{seen}: write() hands the copy to another thread; it copies the bytes into the \
             mapping itself, with a plain memory copy and no system call"
        ),
    }))
}

/// When `data` appears at `at` of `object` within a second, after it was not there: how many
/// milliseconds it took (a copy finished after the answer).
fn arrived_later(object: &std::fs::File, at: usize, data: &[u8]) -> Option<u128> {
    let started = Instant::now();
    let mut seen = vec![0u8; data.len()];
    while started.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(10));
        if object.read_exact_at(&mut seen, at as u64).is_ok() && seen == data {
            return Some(started.elapsed().as_millis());
        }
    }
    None
}
