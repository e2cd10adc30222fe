//! One table, several processes: each maps the object shared and accesses it in place, so that
//! a store by one is what the others (and the object's file) hold at once. Where the bytes go,
//! and by whose instructions, is `in_place`; the name removed while mapped, `unlinked`.

use std::time::{Duration, Instant};

use rand::RngExt;

use crate::engine::diagnose::classify;
use crate::engine::tracer::{Action, Call, Reached, Step, Tracer};
use crate::engine::{Fail, Run, force, inspect};

use super::driver::{CREATOR, Table, await_answer, pair, said};
use super::explain::{Writer, expect_read};
use super::probes::{
    Mapping, dev_shm, mappings, name_still_there, object_bytes, object_fds, resident_bytes,
    table_mapping, vm_flags,
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
        if vm_flags(pid, &mapping).iter().any(|flag| flag == "lo") {
            return Err(Fail::failed(format!(
                "{} (pid {pid}) maps the table locked: /proc/{pid}/smaps shows `lo` in the \
                 mapping's VmFlags (MAP_LOCKED, or mlock() of it): every page of the table is \
                 pinned in memory for as long as it is mapped, and a table larger than \
                 RLIMIT_MEMLOCK cannot be mapped at all by an unprivileged user (mmap() fails \
                 with EAGAIN); map it with mmap(NULL, size, PROT_READ | PROT_WRITE, \
                 MAP_SHARED, fd, 0), no other flag, and lock nothing",
                table.who
            )));
        }
        // Nothing has read or written the table yet: a page already resident was faulted in
        // at map time.
        let size = mapping.end - mapping.start;
        if resident_bytes(pid, &name).is_some_and(|resident| resident >= size) {
            return Err(Fail::failed(format!(
                "{} (pid {pid}) has every page of the table resident ({size} bytes in Rss of \
                 its mapping in /proc/{pid}/smaps) once mapped, before any read() or write() \
                 was asked: it faulted the whole table in at map time (MAP_POPULATE, or a pass \
                 over every page); a huge table would commit all its memory at once, and an \
                 opener of a large sparse object would fill it; map it with mmap(NULL, size, \
                 PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), no other flag: pages come in as \
                 read() and write() touch them",
                table.who
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
    // Then the creator: the object outlives every process that mapped it, until an unlink.
    unmapped(&mut creator, &ranges[0], &path)?;
    stays("the creator closed the table (op=close)")?;
    let outlived = exit_holding_children(creator)?;
    let kept = object_bytes(&name, at, data.len());
    // Nobody unlinks it in this check: the grader removes it.
    let removed = std::fs::remove_file(dev_shm(&name));
    if removed.is_err() || kept.as_deref() != Some(&data[..]) {
        let left = outlived
            .left
            .iter()
            .map(|(pid, what)| format!("pid {pid} ({what})"))
            .collect::<Vec<_>>();
        let after = if left.is_empty() {
            String::new()
        } else {
            format!(
                "; {}, which the creator had started, still ran after it exited (the grader had \
                 stopped it, SIGSTOP, before that exit, and let it go on once the creator was \
                 gone)",
                left.join(", ")
            )
        };
        return Err(Fail::failed(format!(
            "{path} held the 1000 bytes the creator wrote at offset {at}, but {} once the \
             creator had closed the table (op=close) and exited, and nobody had asked for an \
             unlink{after}: close() only munmap()s; the object, its name and its bytes stay \
             until unlink(), after every process that mapped it has gone",
            if removed.is_err() {
                "it was gone"
            } else {
                "no longer"
            }
        )));
    }
    if let Some((pid, what)) = outlived.running.first() {
        return Err(Fail::failed(format!(
            "pid {pid} ({what}), which the creator had started, was still running {} ms after \
             the creator exited (the grader killed it): the program leaves no process behind; \
             nothing in this lab needs a child",
            GONE_WITHIN.as_millis()
        )));
    }
    super::killed::killed_creators_leave_the_name(run)?;
    super::panicked::panicked_processes_leave_the_name(run)?;
    Ok(
        "both processes map the object shared, read-write, without a descriptor, and unmap it \
        on close, leaving the name and the bytes, also once both have exited, and once \
        creators were killed by SIGTERM, SIGINT and SIGHUP"
            .into(),
    )
}

/// How long a process a creator started may take to end once the creator has exited.
const GONE_WITHIN: Duration = Duration::from_millis(1000);

/// The processes a creator had started, seen once it had exited.
struct Outlived {
    /// Those still alive right after its exit (stopped by the grader before it), with what
    /// they are: `comm`, and whether in a session of their own.
    left: Vec<(i32, String)>,
    /// Those of them still running [`GONE_WITHIN`] after they were let go (then killed).
    running: Vec<(i32, String)>,
}

/// Lets `creator`, which has closed its table, exit, with every process it started stopped
/// (`SIGSTOP`) before that exit, so that what they do once it is gone happens after the grader
/// has seen them alive; then lets them go on and waits [`GONE_WITHIN`] for them to end, and
/// kills what is left (they are the grader's, its subreaper's, once the creator is gone).
fn exit_holding_children(creator: Table) -> Result<Outlived, Fail> {
    let pid = creator.pid();
    let session = |pid: i32| {
        procfs::process::Process::new(pid)
            .ok()
            .and_then(|p| p.stat().ok())
            .map(|s| s.session)
    };
    let own_session = session(pid);
    let forks = inspect::grader_forks();
    let children: Vec<i32> = inspect::tree(&[pid], &[])
        .into_iter()
        .filter(|row| row.pid != pid && row.state != 'Z' && !forks(row.pid))
        .map(|row| row.pid)
        .collect();
    let mut described = Vec::new();
    for &child in &children {
        // One that has just ended is not stopped: it no longer counts.
        let _ = force::hold(child);
        let comm = inspect::view(child).map_or_else(|| "?".to_string(), |v| v.comm);
        let what = if session(child).is_some() && session(child) != own_session {
            format!("{comm}, in a session of its own")
        } else {
            comm
        };
        described.push((child, what));
    }
    let exited = creator.exit();
    let alive =
        |pid: i32| inspect::view(pid).is_some_and(|v| v.state != 'Z') && !inspect::is_anothers(pid);
    let left: Vec<(i32, String)> = described
        .iter()
        .filter(|(pid, _)| alive(*pid))
        .cloned()
        .collect();
    for (pid, _) in &left {
        let _ = force::resume(*pid);
    }
    let until = Instant::now() + GONE_WITHIN;
    while Instant::now() < until && left.iter().any(|(pid, _)| alive(*pid)) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let running: Vec<(i32, String)> = left
        .iter()
        .filter(|(pid, _)| alive(*pid))
        .cloned()
        .collect();
    for (pid, _) in &running {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    crate::engine::process::reap_orphans();
    exited?;
    Ok(Outlived { left, running })
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
    middle_changed_then_read_again(run, &mut creator, &mut opener, back, len)?;
    // Both ends: a table open() mapped is accessed like the one create() mapped.
    for table in [&mut creator, &mut opener] {
        super::own_range::stores_only_its_ranges(run, table)?;
    }
    for (table, offset) in [(&mut creator, at), (&mut opener, back)] {
        no_call_in_access(run, table, offset, len, true)?;
        no_call_in_access(run, table, offset, len, false)?;
    }
    super::many_accesses::no_flush_in_many_accesses(run, &mut creator, at)?;
    large_accesses_make_no_call(run)?;
    creator.unlink()?;
    opener.close()?;
    creator.close()?;
    Ok(
        "writes went both ways in place, each side saw the other's newest bytes, with the writer \
        stopped; the creator's and the opener's accesses made no system call"
            .into(),
    )
}

/// `reader`, which has just read `len` bytes at `at`, reads them again after `writer` changed
/// a few bytes inside the range, away from its ends: it must see them (a change is a change
/// wherever it lies).
fn middle_changed_then_read_again(
    run: &mut Run,
    writer: &mut Table,
    reader: &mut Table,
    at: usize,
    len: usize,
) -> Result<(), Fail> {
    let before = reader.read(run, at, len)?;
    let (edge, piece) = (16, 7);
    let inside = at + run.rng().random_range(edge..len - edge - piece);
    let mut data = run.random_bytes(piece);
    // Every byte of it new.
    for (new, old) in data.iter_mut().zip(&before[inside - at..]) {
        if new == old {
            *new = !*old;
        }
    }
    writer.write(run, inside, &data)?;
    let mut want = before;
    want[inside - at..inside - at + piece].copy_from_slice(&data);
    let got = reader.read(run, at, len)?;
    expect_read(
        reader,
        Writer::Program(writer),
        at,
        &got,
        &want,
        &format!(
            "{} read {len} bytes at offset {at}, then {} wrote {piece} bytes at offset \
             {inside}, inside that range (its first and last {edge} bytes unchanged); as {} \
             read the range again",
            reader.who, writer.who, reader.who
        ),
        None,
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
        // What starting a thread calls first: glibc's first pthread_create() sets the handler
        // of its signal 33, and every one blocks the signals around clone3().
        libc::SYS_rt_sigaction => Some(
            "rt_sigaction() (a signal handler set, as glibc does when the program starts its \
             first thread: std::thread::spawn())",
        ),
        libc::SYS_rt_sigprocmask => Some(
            "rt_sigprocmask() (the signal mask changed, as glibc does around starting a \
             thread: std::thread::spawn())",
        ),
        libc::SYS_clone | libc::SYS_clone3 => {
            Some("clone() (a thread or a process started: std::thread::spawn(), fork())")
        }
        _ => crate::engine::diagnose::call_name(number),
    };
    match known {
        Some(name) => name.into(),
        None => format!("system call number {number}"),
    }
}

const PAGE: usize = 4096;

/// The length of [`large_accesses_make_no_call`]'s write and read: far more than the other
/// checks copy, as a program may take another way past some length.
const LARGE_ACCESS: usize = 8 << 20;

/// A write and a read of [`LARGE_ACCESS`] bytes, the whole of a table that large, traced as
/// [`no_call_in_access`]: a copy of any length is the program's own, with no system call.
fn large_accesses_make_no_call(run: &mut Run) -> Result<(), Fail> {
    let name = run.ipc_name("large");
    let mut large = super::driver::table(run, &name, Some(LARGE_ACCESS), CREATOR)?;
    // Untouched first: then its pages must not be resident yet.
    let outcome = super::lazy_pages::large_table_mapped_lazily(run, &large)
        .and_then(|()| no_call_in_access(run, &mut large, 0, LARGE_ACCESS, true))
        .and_then(|()| no_call_in_access(run, &mut large, 0, LARGE_ACCESS, false))
        .and_then(|()| {
            let (len, neighbours) = &super::own_range::LARGE;
            super::own_range::stores_only_its_range(run, &mut large, *len, neighbours)
        });
    large.proc.kill_tree();
    let _ = std::fs::remove_file(dev_shm(&name));
    outcome
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
        // Megabytes are a random page repeated: filling them all at random costs the grader
        // more time than the access.
        let data = if len > PAGE {
            run.random_bytes(PAGE).repeat(len.div_ceil(PAGE))[..len].to_vec()
        } else {
            run.random_bytes(len)
        };
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
    let why = if [libc::SYS_process_vm_readv, libc::SYS_process_vm_writev].contains(&number) {
        "the kernel copies the bytes for it (of its own memory), so its own instructions never \
         touch the table: a copy of any length, however long, is the program's own \
         (copy_nonoverlapping)"
    } else if SYNCS.contains(&number) {
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
