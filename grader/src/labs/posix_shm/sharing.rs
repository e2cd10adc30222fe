//! One table, several processes: each maps the object shared and accesses it in place, so that
//! a store by one is what the others (and the object's file) hold at once, even after unlink.
//! Where the bytes go, and by whose instructions, is `in_place`.

use std::time::{Duration, Instant};

use rand::RngExt;

use crate::engine::diagnose::classify;
use crate::engine::tracer::{Action, Call, Reached, Step, Tracer};
use crate::engine::{Fail, Run, force, inspect};

use super::driver::{
    Table, answer_past_breakpoint, await_answer, is_refusal, pair, refused, said, start,
};
use super::explain::{Writer, expect_read};
use super::probes::{
    Mapping, dev_shm, exists, mappings, name_still_there, object_bytes, object_fds,
    plant_dangling_link, plant_object, table_mapping,
};

pub fn mapped_by_each(run: &mut Run) -> Result<String, Fail> {
    let (mut creator, mut opener) = pair(run, "table", 10_000)?;
    let name = creator.name.clone();
    let path = dev_shm(&name).display().to_string();
    let mut ranges = Vec::new();
    for table in [&creator, &opener] {
        let pid = table.pid();
        let mapping = table_mapping(pid, &name).ok_or_else(|| {
            // The object itself, mapped under a path that is not its name: a name it had
            // before it was given the table's.
            let inode = std::fs::metadata(&path).ok().map(|m| {
                use std::os::unix::fs::MetadataExt;
                m.ino()
            });
            let aliased = mappings(pid)
                .into_iter()
                .find(|m| Some(m.inode) == inode && m.path.starts_with("/dev/shm/"));
            match aliased {
                Some(other) => Fail::failed(format!(
                    "{} (pid {pid}) maps the object that is {path} (inode {}), but under \
                     another name: its /proc/{pid}/maps shows it as {}: it created the \
                     object under a name of its own and gave it the table's name afterwards \
                     (link(), rename()); create it at its very name with shm_open(name, \
                     O_CREAT | O_EXCL | O_RDWR, 0600)",
                    table.who, other.inode, other.path
                )),
                None => Fail::failed(format!(
                    "{} (pid {pid}) says it has the table mapped, but /proc/{pid}/maps has no \
                     mapping of {path}: map the object itself with mmap(MAP_SHARED) and keep \
                     it mapped until close",
                    table.who
                )),
            }
        })?;
        let of_object: Vec<Mapping> = {
            let deleted = format!("{path} (deleted)");
            mappings(pid)
                .into_iter()
                .filter(|m| m.path == path || m.path == deleted)
                .collect()
        };
        if of_object.len() > 1 {
            let listed: Vec<String> = of_object.iter().map(Mapping::describe).collect();
            return Err(Fail::failed(format!(
                "{} (pid {pid}) maps {path} {} times, once the table is mapped: its \
                 /proc/{pid}/maps shows {}; the table is one mapping of the object, shared, \
                 readable and writable (PROT_READ | PROT_WRITE, MAP_SHARED), which read() and \
                 write() both use in place: a second mapping of the same object (for reads, \
                 or for writes) is a way around the table's own addresses; map the object \
                 once",
                table.who,
                of_object.len(),
                listed.join(" and ")
            )));
        }
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
    no_call_in_access(run, &mut creator, at, len, true)?;
    no_call_in_access(run, &mut creator, at, len, false)?;
    creator.unlink()?;
    opener.close()?;
    creator.close()?;
    Ok(
        "writes went both ways in place, each side saw the other's newest bytes, with the writer \
        stopped"
            .into(),
    )
}

/// Calls that push a mapping's bytes to its file, pin its pages or advise the kernel of them:
/// what a program that believes a shared mapping needs a system call adds to its read or write.
const SYNCS: &[i64] = &[
    libc::SYS_msync,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_sync_file_range,
    libc::SYS_syncfs,
    libc::SYS_sync,
    libc::SYS_mlock,
    libc::SYS_mlock2,
    libc::SYS_munlock,
    libc::SYS_madvise,
    libc::SYS_mprotect,
    libc::SYS_mincore,
];

/// Of [`SYNCS`], the calls the program's allocator or runtime may make on memory of its own:
/// held, they count only when they name the table's pages.
const ON_MEMORY: &[i64] = &[libc::SYS_madvise, libc::SYS_mprotect, libc::SYS_mincore];

/// The name of one of [`SYNCS`].
fn sync_name(number: i64) -> &'static str {
    match number {
        libc::SYS_msync => "msync()",
        libc::SYS_fsync => "fsync()",
        libc::SYS_fdatasync => "fdatasync()",
        libc::SYS_sync_file_range => "sync_file_range()",
        libc::SYS_syncfs => "syncfs()",
        libc::SYS_sync => "sync()",
        libc::SYS_mlock | libc::SYS_mlock2 => "mlock()",
        libc::SYS_munlock => "munlock()",
        libc::SYS_madvise => "madvise() of the table's pages",
        libc::SYS_mprotect => "mprotect() of the table's pages",
        libc::SYS_mincore => "mincore() of the table's pages",
        _ => "a call that syncs, pins or advises memory",
    }
}

/// The calls a program's allocator makes on memory of its own (a buffer allocated or freed
/// around an access), which say nothing of the access itself.
const ALLOCATOR: [i64; 4] = [
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
];

/// Every call number but `allowed` (those are -2, which no call has): with [`Call::one_of`],
/// the first call the program makes that is not one of them, whatever it is.
const fn all_but<const N: usize>(allowed: [i64; N]) -> [i64; 512] {
    let mut numbers = [-2i64; 512];
    let mut n = 0;
    while n < 512 {
        let mut seen = false;
        let mut i = 0;
        while i < N {
            if allowed[i] == n as i64 {
                seen = true;
            }
            i += 1;
        }
        if !seen {
            numbers[n] = n as i64;
        }
        n += 1;
    }
    numbers
}

/// A `write` command: after the `close()` of the data file the program read, and before its
/// answer (`sendto()`, with the `getpid()` of its message), only the allocator may call.
static AFTER_DATA_FILE: [i64; 512] = all_but([
    ALLOCATOR[0],
    ALLOCATOR[1],
    ALLOCATOR[2],
    ALLOCATOR[3],
    libc::SYS_getpid,
]);

/// A `read` command: after the command's `recvfrom()` and before the `openat()` of the file it
/// writes the bytes to, only the allocator may call (the buffer).
static BEFORE_RESULT_FILE: [i64; 512] = all_but([
    ALLOCATOR[0],
    ALLOCATOR[1],
    ALLOCATOR[2],
    ALLOCATOR[3],
    libc::SYS_recvfrom,
    libc::SYS_restart_syscall,
]);

/// The name of a call made inside an access.
pub fn any_call_name(number: i64) -> String {
    if SYNCS.contains(&number) {
        return sync_name(number).into();
    }
    let known = match number {
        libc::SYS_sched_yield => Some("sched_yield() (std::thread::yield_now())"),
        libc::SYS_getpid => Some("getpid()"),
        libc::SYS_futex => Some("futex() (a lock or a condition variable)"),
        libc::SYS_nanosleep | libc::SYS_clock_nanosleep => Some("a sleep (nanosleep())"),
        libc::SYS_membarrier => Some("membarrier()"),
        libc::SYS_pread64 | libc::SYS_pwrite64 => Some("pread()/pwrite()"),
        libc::SYS_process_vm_readv | libc::SYS_process_vm_writev => {
            Some("process_vm_readv()/process_vm_writev()")
        }
        libc::SYS_sendto => Some("sendto()"),
        _ => crate::engine::diagnose::call_name(number),
    };
    match known {
        Some(name) => name.into(),
        None => format!("system call number {number}"),
    }
}

/// One more write (or read) by `table`, traced: between the command's own steps (the data file
/// read in, or the result file written out) and the access, the program may make no system call
/// at all but its allocator's: the first other call it makes, held, must be the next step of
/// `main.rs` (the answer's `sendto()` after a write, the result file's `openat()` after a
/// read). Any other call (a sync, a yield, a lock, a sleep, a look at the object) is made inside
/// the access, which the rules forbid.
fn no_call_in_access(
    run: &mut Run,
    table: &mut Table,
    at: usize,
    len: usize,
    write: bool,
) -> Result<(), Fail> {
    let pid = table.pid();
    let tracer = if write {
        Tracer::in_turn(
            pid,
            [
                (Call::any(libc::SYS_close), Step::Pass),
                (Call::one_of(&AFTER_DATA_FILE), Step::Hold),
            ],
        )?
    } else {
        Tracer::attach(pid, Call::one_of(&BEFORE_RESULT_FILE), Action::Hold)?
    };
    let Some(mut tracer) = tracer else {
        return Ok(());
    };
    let (fields, file, what) = if write {
        let data = run.random_bytes(len);
        let fields = table.write_fields(run, at, &data)?;
        let file = std::path::PathBuf::from(&fields[2].1);
        table.wrote.push((at, data));
        (fields, file, format!("writing {len} bytes at offset {at}"))
    } else {
        let (fields, file) = table.read_fields(run, at, len);
        (fields, file, format!("reading {len} bytes at offset {at}"))
    };
    table.proc.send("cmd", &fields)?;
    let until = Instant::now() + Duration::from_secs(5);
    let (held, said_first) = if write {
        (tracer.held_before(until)?, None)
    } else {
        match tracer.wait(&mut table.proc, until)? {
            Reached::Call => (true, None),
            Reached::Passed(said_first) => (false, said_first),
        }
    };
    let expected = if write {
        libc::SYS_sendto
    } else {
        libc::SYS_openat
    };
    let held = if held {
        let call = inspect::call_of(pid, pid);
        let table_at = super::probes::table_mapping(pid, &table.name);
        tracer.release();
        let on_table = |&(number, args): &(i64, [u64; 6])| {
            !ON_MEMORY.contains(&number)
                || table_at.is_some_and(|m| args[0] < m.end && m.start < args[0] + args[1])
        };
        match call {
            Some((number, _)) if number == expected => None,
            // Memory of its own (its allocator's, its runtime's): not the table's.
            Some(call) if ON_MEMORY.contains(&call.0) && !on_table(&call) => None,
            call => Some(call.map_or(-1, |(number, _)| number)),
        }
    } else {
        drop(tracer);
        None
    };
    let Some(number) = held else {
        let answer = match said_first {
            Some(answer) => answer,
            None => await_answer(&mut table.proc, table.who, &what, None)?,
        };
        let _ = std::fs::remove_file(&file);
        if answer.kind != "done" {
            return Err(Fail::failed(format!(
                "{} could not finish {what}: it said {}",
                table.who,
                said(&answer)
            )));
        }
        return Ok(());
    };
    await_answer(&mut table.proc, table.who, &what, None)?;
    let _ = std::fs::remove_file(&file);
    let doing = if write { "write()" } else { "read()" };
    let window = if write {
        "after main.rs had read the data file (its close()) and before it sent its answer"
    } else {
        "after main.rs had received the command and before it opened the file for the bytes"
    };
    let why = if SYNCS.contains(&number) {
        "a MAP_SHARED mapping is the object's own pages, which every process sees at once \
         (msync() and fsync() are for files on a disk, madvise() and mprotect() change nothing \
         of what a copy sees)"
    } else {
        "the bytes are in every process's view the moment the store is made: nothing needs to \
         be flushed, yielded for, locked or waited for"
    };
    Err(Fail::failed(format!(
        "{what} of the table, {} entered {} {window}, that is, inside {doing} itself (the \
         grader, which traced it, held it there; only its allocator's brk()/mmap()/munmap() \
         may come there): {doing} copies {} the mapping in place, with no system call at all; \
         {why}",
        table.who,
        any_call_name(number),
        if write { "into" } else { "out of" }
    )))
}

/// The table's `unlink` command, which must say `done`, with a hardware breakpoint at the C
/// library's `shm_unlink()`: whether the program called it before it answered (`None` where the
/// grader cannot set it).
fn unlink_watched(table: &mut Table) -> Result<Option<bool>, Fail> {
    let pid = table.pid();
    let Some(tracer) = Tracer::break_at_function(pid, c"shm_unlink")? else {
        table.unlink()?;
        return Ok(None);
    };
    table.proc.send("cmd", &[("op", "unlink".into())])?;
    let (answer, entered) = answer_past_breakpoint(tracer, &mut table.proc)?;
    let answer = match answer {
        Some(answer) => answer,
        None => await_answer(&mut table.proc, table.who, "asked for op=unlink", None)?,
    };
    if answer.kind != "done" {
        return Err(Fail::failed(format!(
            "{} could not unlink the name: it said {}",
            table.who,
            said(&answer)
        )));
    }
    Ok(Some(entered))
}

pub fn unlinked_but_mapped(run: &mut Run) -> Result<String, Fail> {
    let size = 10_000;
    let (mut creator, mut opener) = pair(run, "table", size)?;
    let name = creator.name.clone();
    let path = dev_shm(&name).display().to_string();
    let through_shm_unlink = unlink_watched(&mut creator)?;
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
    if through_shm_unlink == Some(false) {
        return Err(Fail::failed(format!(
            "the creator's unlink removed {path} and said `done`, but a breakpoint at the C \
             library's shm_unlink() saw it never call that function: it removed the file \
             another way (unlink(2) or std::fs::remove_file() of /dev/shm/NAME, a path \
             written into the program: where the objects live is the C library's business, \
             and not /dev/shm everywhere); unlink() is shm_unlink(name)"
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
    // A symbolic link to nothing at the name: shm_unlink() removes it (an unlink() of the
    // name); a look that follows it first finds nothing there.
    let link = plant_dangling_link(run, &name)?;
    let answer = creator.command(&[("op", "unlink".into())]);
    let left = exists(&name);
    drop(link);
    let answer = answer?;
    let told = format!(
        "with a symbolic link to nothing at {path} (the grader made it, owned by the program's \
         user), the creator's unlink"
    );
    if is_refusal(&answer, "not-found") {
        return Err(Fail::failed(format!(
            "{told} said kind=not-found{}, but shm_unlink() removes the name whatever it is, a \
             link too (an unlink() of {path}), and succeeds: the program decided not-found \
             from a look at the name that follows the link (stat(), Path::exists(), an open) \
             instead of calling shm_unlink() and taking its ENOENT",
            if left {
                ", and the link is still there"
            } else {
                ""
            }
        )));
    }
    if answer.kind != "done" || left {
        return Err(Fail::failed(format!(
            "{told} said {}{}: shm_unlink() removes the name whatever it is, a link too (an \
             unlink() of {path}), and succeeds",
            said(&answer),
            if left {
                ", and the link is still there"
            } else {
                ""
            }
        )));
    }
    opener.close()?;
    creator.close()?;
    Ok(
        "the name went, the shared memory stayed while mapped, apart from a new object of that \
        name, which the creator's second unlink removed; an unlink that failed otherwise than \
        with ENOENT was shm-unlink; a symbolic link at the name was unlinked"
            .into(),
    )
}
