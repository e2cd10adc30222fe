//! The object itself: its mode and its exact size, which an opener learns from it.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use rand::RngExt;

use std::time::{Duration, Instant};

use crate::engine::tracer::{Action, Call, Reached, Tracer};
use crate::engine::{Fail, Run, force, inspect};

use super::driver::{
    CREATOR, OPENER, answer_past_breakpoint, await_answer, close_all, creating_open, creators,
    mapped, openers, start_breaking_at, start_stopped, table,
};
use super::explain::{Writer, expect_read};
use super::probes::{dev_shm, object_bytes, object_size, plant_object};

const PAGE: usize = 4096;

/// What a mode wider or narrower than 0600 allows, in words.
pub(super) fn wrong_with(mode: u32) -> String {
    let mut wrong = Vec::new();
    if mode & 0o044 != 0 {
        wrong.push("users other than its owner can read the table");
    }
    if mode & 0o022 != 0 {
        wrong.push("they can change it");
    }
    if mode & 0o600 != 0o600 {
        wrong.push("its owner cannot both read and write it");
    }
    if mode & 0o111 != 0 {
        wrong.push("it is marked executable");
    }
    wrong.join(", ")
}

/// What the grader saw of a creating `shm_open()`, held right after it returned.
#[derive(Clone, Copy)]
struct Creation {
    /// The object's mode then.
    created: u32,
    /// Its mode once the creator said `mapped`.
    settled: u32,
    /// The mode the creating `openat()` asked for (its fourth argument), when the grader could
    /// read it in `/proc/PID/syscall`.
    asked: Option<u32>,
    /// The creator's umask then (`/proc/PID/status`), when read.
    umask: Option<u32>,
}

/// Fails if the creator `pid`, mapped, has another umask than the one it was started with (the
/// grader's own, which it inherits): the umask is the whole process's, and a create that
/// changes it widens (or narrows) every file the program makes afterwards.
fn umask_kept(pid: i32) -> Result<(), Fail> {
    let (Some(started), Some(now)) = (
        inspect::umask(std::process::id() as i32),
        inspect::umask(pid),
    ) else {
        return Ok(());
    };
    if started == now {
        return Ok(());
    }
    Err(Fail::failed(format!(
        "the creator was started with umask {started:04o} and, once it said `mapped`, its \
         umask is {now:04o} (/proc/{pid}/status): create() changed the process's umask and did \
         not put it back; the umask belongs to the whole process, so every file the program \
         makes afterwards (the op=read data files among them) gets {}; shm_open()'s mode \
         argument, 0600, is all the object needs (a umask only takes bits away), so leave the \
         umask alone, or restore it right after the call",
        if now & !started == 0 {
            "a wider mode than the user asked for: files others may write"
        } else {
            "another mode than the user asked for"
        }
    )))
}

/// The mode of the object the moment the creator's `shm_open()` made it (read while the
/// creator is held right after that call), with the mode the call asked for, and its mode once
/// the creator said `mapped`: `None` where the grader may not trace it.
fn modes_at_creation(run: &mut Run, name: &str) -> Result<Option<Creation>, Fail> {
    let mut proc = start_stopped(run, name, Some(10_000), CREATOR)?;
    let pid = proc.pid.as_raw();
    let tracer = Tracer::attach(pid, creating_open(), Action::HoldAfter)?;
    force::resume(pid)?;
    let Some(mut tracer) = tracer else {
        run.note(
            "the grader may not trace the creator here (ptrace): its mode at creation was not \
             read",
        );
        proc.kill_tree();
        return Ok(None);
    };
    let mode = || {
        std::fs::metadata(dev_shm(name))
            .ok()
            .map(|m| m.permissions().mode() & 0o777)
    };
    let (created, said_first) =
        match tracer.wait(&mut proc, Instant::now() + Duration::from_secs(5))? {
            Reached::Call => (mode(), None),
            Reached::Passed(message) => (None, message),
        };
    // Held there with no object at the name yet: what the call created instead, as the
    // descriptors it holds in /dev/shm show.
    let elsewhere = (said_first.is_none() && std::fs::symlink_metadata(dev_shm(name)).is_err())
        .then(|| shm_files_held(pid));
    // Held at the return of openat(): its arguments are still those it was called with.
    let (asked, umask) = if said_first.is_none() {
        let asked = crate::engine::inspect::call_of(pid, pid)
            .filter(|(number, _)| *number == libc::SYS_openat)
            .map(|(_, args)| (args[3] & 0o7777) as u32);
        (asked, inspect::umask(pid))
    } else {
        (None, None)
    };
    tracer.release();
    // It spoke before any creating open on its main thread.
    let no_creating_open = said_first.is_some();
    // Whatever it does next, its first answer must be `mapped`.
    let first = match said_first {
        Some(first) => first,
        None => await_answer(&mut proc, CREATOR, &format!("creating {name:.60}"), None)?,
    };
    if no_creating_open
        && first.kind == "mapped"
        && std::fs::symlink_metadata(dev_shm(name)).is_ok()
    {
        return Err(Fail::failed(format!(
            "the creator said `mapped` and {} exists, but the grader, which traced its main \
             thread from its start, saw no creating open (openat() with O_CREAT) before that: \
             it gave the object its name another way (a file made without a name, O_TMPFILE, \
             then linkat() or a rename?); create it with shm_open(name, O_CREAT | O_EXCL | \
             O_RDWR, 0600), then ftruncate() it",
            dev_shm(name).display()
        )));
    }
    if let Some(held) = elsewhere
        && first.kind == "mapped"
        && std::fs::symlink_metadata(dev_shm(name)).is_ok()
    {
        let made = if held.is_empty() {
            "an object under another name (it held no descriptor of anything in /dev/shm \
             then)"
                .to_string()
        } else {
            format!("{} instead", held.join(", "))
        };
        return Err(Fail::failed(format!(
            "held right after the creator's creating shm_open() (openat() with O_CREAT) \
             returned, {} did not exist: that call created {made}; the table's name appeared \
             only later, before `mapped`: it builds the object under a name of its own and then \
             gives it the table's name (link(), rename() of /dev/shm paths); create it at its \
             very name, with shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600): a second name \
             is a file of the program's own in /dev/shm (left behind if it dies in between), \
             and a link() of /dev/shm paths hard-codes where the C library keeps its objects",
            dev_shm(name).display()
        )));
    }
    let mut creator = mapped(proc, first, name, CREATOR)?;
    let settled = mode();
    creator.unlink()?;
    creator.close()?;
    Ok(created.zip(settled).map(|(created, settled)| Creation {
        created,
        settled,
        asked,
        umask,
    }))
}

/// The files in `/dev/shm` (or under it) that `pid`'s descriptors are open on.
fn shm_files_held(pid: i32) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut held: Vec<String> = entries
        .flatten()
        .filter_map(|entry| std::fs::read_link(entry.path()).ok())
        .map(|target| target.display().to_string())
        .filter(|target| target.starts_with("/dev/shm/"))
        .collect();
    held.sort();
    held.dedup();
    held
}

pub fn owner_only_mode(run: &mut Run) -> Result<String, Fail> {
    let first = run.ipc_name("first");
    let creation = modes_at_creation(run, &first)?;
    if let Some(Creation {
        created, settled, ..
    }) = creation
        && created != 0o600
        && settled == 0o600
    {
        return Err(Fail::failed(format!(
            "held right after the creator's shm_open(O_CREAT) returned, {} had mode \
             {created:03o} ({}), and 600 only later: a mode set afterwards (fchmod) leaves a \
             moment when others can open it; pass 0600 (S_IRUSR | S_IWUSR) to shm_open() itself",
            dev_shm(&first).display(),
            wrong_with(created)
        )));
    }
    if let Some(Creation {
        created: 0o600,
        asked: Some(asked),
        umask,
        ..
    }) = creation
        && asked != 0o600
    {
        let umask = umask.map_or_else(String::new, |umask| {
            format!(" (its umask was {umask:04o} right then)")
        });
        return Err(Fail::failed(format!(
            "{} was born with mode 600, but the creating openat() of the creator's shm_open(), \
             held as it returned, asked for mode {asked:04o}{umask}: the mode came from a umask \
             set around the call, not from shm_open()'s mode argument (the umask is the whole \
             process's, and only masks bits out); pass 0600 (S_IRUSR | S_IWUSR) to shm_open() \
             itself",
            dev_shm(&first).display()
        )));
    }
    let name = run.ipc_name("table");
    let mut creator = table(run, &name, Some(10_000), CREATOR)?;
    let path = dev_shm(&name);
    let mode = std::fs::metadata(&path)
        .map_err(|_| {
            Fail::failed(format!(
                "{} does not exist while the creator says it has the table mapped: create the \
                 object under that very name with shm_open(O_CREAT | O_EXCL | O_RDWR, 0600)",
                path.display()
            ))
        })?
        .permissions()
        .mode()
        & 0o777;
    if mode != 0o600 {
        return Err(Fail::failed(format!(
            "{} has mode {mode:03o}: {}; create it with mode 0600 (S_IRUSR | S_IWUSR)",
            path.display(),
            wrong_with(mode)
        )));
    }
    run.expect_owner_only()?;
    umask_kept(creator.pid())?;
    creator.unlink()?;
    creator.close()?;
    created_through_shm_open(run)?;
    super::by_hand::created_by_hand(run)?;
    Ok(format!(
        "{} has mode 600, and so has an object made by the program run by hand",
        path.display()
    ))
}

pub fn odd_sizes(run: &mut Run) -> Result<String, Fail> {
    // A single byte, and a page and a byte: neither a whole page, and the second grows to
    // several pages below.
    let sizes = [1, 4097];
    let tables: Vec<(String, usize)> = sizes
        .iter()
        .map(|size| (run.ipc_name(&format!("table-{size}")), *size))
        .collect();
    // The tables do not depend on each other: their programs start at once.
    let mut creators = creators(run, &tables)?;
    for (name, size) in &tables {
        let size = *size;
        let on_disk = object_size(name, CREATOR)?;
        if on_disk != size as u64 {
            let how = if on_disk == size.next_multiple_of(PAGE) as u64 {
                "rounded up to whole pages: ftruncate() to the size asked for; only the mapping \
                 is made of whole pages"
            } else {
                "ftruncate(fd, size) with the size asked for"
            };
            return Err(Fail::failed(format!(
                "the {size}-byte table is {on_disk} bytes in /dev/shm: {how}"
            )));
        }
        let fresh = object_bytes(name, 0, size).unwrap_or_default();
        if let Some(at) = fresh.iter().position(|&b| b != 0) {
            return Err(Fail::failed(format!(
                "a new {size}-byte table already holds a nonzero byte at offset {at} (in \
                 /dev/shm) before anyone wrote to it: the new bytes must be zero, as ftruncate() \
                 leaves them; do not fill the table"
            )));
        }
    }
    // The size is the object's, whoever set it: the grader grows the last table after its
    // creator sized it, before its opener opens it.
    let (last, first) = tables[tables.len() - 1].clone();
    let grown = first + run.rng().random_range(64..8000);
    let object = std::fs::OpenOptions::new()
        .write(true)
        .open(dev_shm(&last))?;
    object.set_len(grown as u64)?;
    let tail = run.random_bytes(64);
    std::os::unix::fs::FileExt::write_all_at(&object, &tail, (grown - tail.len()) as u64)?;
    let names: Vec<String> = tables.iter().map(|(name, _)| name.clone()).collect();
    let mut openers = openers(run, &names)?;
    for ((creator, opener), size) in creators.iter_mut().zip(&mut openers).zip(sizes) {
        let now = if creator.name == last { grown } else { size };
        if opener.len != now && now == grown {
            let how = if opener.len == first {
                format!(
                    "the size the creator was asked for: the opener learned it some other way \
                     than from the object; take it from fstat() of the descriptor (st_size), \
                     which says {grown}"
                )
            } else {
                format!(
                    "take the size from fstat() of the descriptor (st_size), which says {grown}"
                )
            };
            return Err(Fail::failed(format!(
                "the grader grew a {first}-byte table to {grown} bytes before the opener opened \
                 it, but the opener says it is {} bytes: {how}",
                opener.len
            )));
        }
        if opener.len != now {
            let how = if opener.len == size.next_multiple_of(PAGE) {
                "rounded up to whole pages; the table is st_size bytes, exactly"
            } else {
                "take the size from fstat() of the object (st_size)"
            };
            return Err(Fail::failed(format!(
                "the opener says the {size}-byte table is {} bytes: {how}",
                opener.len
            )));
        }
        let data = run.random_bytes(size);
        creator.write(run, 0, &data)?;
        let read = opener.read(run, 0, size)?;
        expect_read(
            opener,
            Writer::Program(creator),
            0,
            &read,
            &data,
            &format!("the opener's copy of a {size}-byte table"),
            None,
        )?;
        if now == grown {
            let at = grown - tail.len();
            let read = opener.read(run, at, tail.len())?;
            expect_read(
                opener,
                Writer::Object("the grader"),
                at,
                &read,
                &tail,
                "the last bytes of a table the grader grew, as the opener read them",
                None,
            )?;
        }
    }
    let (first_name, first_size) = tables[0].clone();
    size_from_descriptor(run, &first_name, first_size)?;
    creator_maps_its_object(run)?;
    super::resized_open::len_is_the_size_mapped(run)?;
    for creator in &mut creators {
        creator.unlink()?;
    }
    close_all(openers.into_iter().chain(creators).collect())?;
    Ok(format!(
        "1 and 4097-byte tables have their exact sizes, start zeroed and carry every byte; the \
         second, grown to {grown} bytes, was opened at that size; an opener took the size from \
         its descriptor"
    ))
}

/// An opener held at its `shm_open()` of `name`: just before the call the grader puts another
/// object, of another size, at the name, and again just after it returns. The size the opener
/// reports must be the size of the object it opened (`fstat()` of its descriptor), not what the
/// name meant before the open (a look first) or after it (a `stat()` of the path).
fn size_from_descriptor(run: &mut Run, name: &str, size: usize) -> Result<(), Fail> {
    let path = dev_shm(name);
    let mut proc = start_stopped(run, name, None, OPENER)?;
    let pid = proc.pid.as_raw();
    let opening = Call::opening(&path);
    let tracer = Tracer::attach(pid, opening, Action::HoldAround)?;
    force::resume(pid)?;
    let Some(mut tracer) = tracer else {
        run.note(
            "the grader may not trace the opener here (ptrace): a name replaced under it was \
             not tried",
        );
        proc.kill_tree();
        return Ok(());
    };
    // Another object under the name, in one step (rename).
    let replace = |run: &Run, len: usize| -> Result<(), Fail> {
        let next = dev_shm(&format!("{name}-next"));
        std::fs::write(&next, vec![0u8; len])?;
        if let Some((uid, gid)) = run.program_user() {
            std::os::unix::fs::chown(&next, Some(uid), Some(gid))?;
        }
        std::fs::rename(&next, &path)?;
        Ok(())
    };
    let (opened_len, later_len) = (size + 4096 + 17, size + 3 * 4096 + 5);
    let until = Instant::now() + Duration::from_secs(5);
    let mut replaced = false;
    // The inodes of the object the opener's shm_open() opened, and of the one after it.
    let inode = || std::fs::metadata(&path).map(|m| m.ino()).unwrap_or(0);
    let (mut opened_inode, mut later_inode) = (0, 0);
    // The flags of the opener's open of the name, read at its entry.
    let mut flags = None;
    if tracer.wait(&mut proc, until)? == Reached::Call {
        flags = crate::engine::inspect::call_of(pid, pid).map(|(_, args)| args[2]);
        replace(run, opened_len)?;
        opened_inode = inode();
        tracer.go_on();
        if tracer.wait(&mut proc, until)? == Reached::Call {
            replace(run, later_len)?;
            later_inode = inode();
            replaced = true;
        }
    }
    tracer.release();
    if let Some(flags) = flags.filter(|flags| flags & libc::O_CREAT as u64 != 0) {
        proc.kill_tree();
        return Err(Fail::failed(format!(
            "opening {name:.60}, an existing object, the opener's first openat() of {} (held \
             at its entry, from its shm_open()) asked for O_CREAT (flags {flags:#o}): open() \
             never creates; it is shm_open(name, O_RDWR) alone, once (a creating probe makes an \
             object nobody asked for exist for a moment, for a creator to find taken and an \
             opener to find empty, and needs a second open of the name)",
            path.display()
        )));
    }
    let first = await_answer(&mut proc, OPENER, &format!("opening {name:.60}"), None)?;
    let opener = mapped(proc, first, name, OPENER)?;
    if replaced && opener.len != opened_len {
        let learned = if opener.len == size {
            "the size the name had before the open: it was looked up first (a stat() of the \
             path)"
                .to_string()
        } else if opener.len == later_len {
            "the size the name had after the open: a stat() of the path, which by then meant \
             another object"
                .to_string()
        } else {
            format!("{} bytes", opener.len)
        };
        return Err(Fail::failed(format!(
            "the grader put a {opened_len}-byte object at the name just before the opener's \
             shm_open(), and a {later_len}-byte one just after it returned; the opener reported \
             {learned}: the size is the opened object's, fstat() of the descriptor (st_size), \
             not a look at the name"
        )));
    }
    let mapped_inode = super::probes::table_mapping(opener.pid(), name).map(|m| m.inode);
    if replaced && mapped_inode == Some(later_inode) && later_inode != opened_inode {
        return Err(Fail::failed(format!(
            "the grader put a {opened_len}-byte object at the name just before the opener's \
             shm_open(), and a {later_len}-byte one just after it returned; the opener maps \
             the second (inode {later_inode} in /proc/{}/maps), not the object its shm_open() \
             opened (inode {opened_inode}): it opened the name a second time after that \
             shm_open() (to map it, or after a first open for the size); open the name once, \
             and fstat() and mmap() that one descriptor",
            opener.pid()
        )));
    }
    opener.close()
}

/// A creator held right after its `ftruncate()` returned, while the grader puts another object,
/// of another size, at the name (as another program's `shm_unlink()` and create would): the
/// object it maps and reports is the one its creating `shm_open()` made and it sized, mapped
/// through that descriptor, not whatever the name means by then.
fn creator_maps_its_object(run: &mut Run) -> Result<(), Fail> {
    let name = run.ipc_name("swapped");
    let path = dev_shm(&name);
    let size = 3 * PAGE + 7;
    let mut proc = start_stopped(run, &name, Some(size), CREATOR)?;
    let pid = proc.pid.as_raw();
    let tracer = Tracer::attach(pid, Call::any(libc::SYS_ftruncate), Action::HoldAfter)?;
    force::resume(pid)?;
    let Some(mut tracer) = tracer else {
        run.note(
            "the grader may not trace the creator here (ptrace): a name replaced under it was \
             not tried",
        );
        proc.kill_tree();
        return Ok(());
    };
    let other_len = size + 2 * PAGE + 9;
    let inode = || std::fs::metadata(&path).map(|m| m.ino()).unwrap_or(0);
    let (mut created_inode, mut other_inode) = (0, 0);
    let until = Instant::now() + Duration::from_secs(5);
    // What an early opener may store, once the object is sized: no step of create() after its
    // ftruncate() may undo it.
    let early = run.random_bytes(64);
    let early_at = run.rng().random_range(0..size - early.len());
    let replaced = if tracer.wait(&mut proc, until)? == Reached::Call {
        created_inode = inode();
        std::os::unix::fs::FileExt::write_all_at(
            &std::fs::OpenOptions::new().write(true).open(&path)?,
            &early,
            early_at as u64,
        )?;
        let next = dev_shm(&format!("{name}-next"));
        std::fs::write(&next, vec![0u8; other_len])?;
        if let Some((uid, gid)) = run.program_user() {
            std::os::unix::fs::chown(&next, Some(uid), Some(gid))?;
        }
        std::fs::rename(&next, &path)?;
        other_inode = inode();
        true
    } else {
        false
    };
    tracer.release();
    let answer = await_answer(&mut proc, CREATOR, &format!("creating {name:.60}"), None);
    let done = |result: Result<(), Fail>| {
        let _ = std::fs::remove_file(&path);
        result
    };
    let first = match answer {
        Ok(first) => first,
        Err(fail) => return done(Err(fail)),
    };
    let held = format!(
        "held right after its ftruncate() returned (sizing its new object, inode \
         {created_inode}, to {size} bytes), the grader put another object at the name, of \
         {other_len} bytes (inode {other_inode}), as another program may (shm_unlink(), then a \
         create)"
    );
    if replaced && first.kind != "mapped" {
        return done(Err(Fail::failed(format!(
            "{held}; the creator then said {}, not `mapped`: its object exists, sized, and \
             its descriptor is open; create() maps that descriptor (mmap() of the fd \
             shm_open() returned), and what the name means by then does not matter",
            super::driver::said(&first)
        ))));
    }
    let creator = match mapped(proc, first, &name, CREATOR) {
        Ok(creator) => creator,
        Err(fail) => return done(Err(fail)),
    };
    let mapped_inode = super::probes::table_mapping(creator.pid(), &name).map(|m| m.inode);
    if replaced && (creator.len == other_len || mapped_inode == Some(other_inode)) {
        let maps = mapped_inode.map_or_else(
            || "no mapping of the name".to_string(),
            |inode| format!("inode {inode}"),
        );
        return done(Err(Fail::failed(format!(
            "{held}; the creator then reported len={} and maps {maps} (in /proc/{}/maps): the \
             grader's object, not the one it created: after sizing its object it opened the \
             name again (a second shm_open(), as open() does) to map it; map the descriptor \
             its creating shm_open() returned: the object created is the object mapped",
            creator.len,
            creator.pid()
        ))));
    }
    if replaced && creator.len != size {
        return done(Err(Fail::failed(format!(
            "creating a {size}-byte table, the creator reported len={}",
            creator.len
        ))));
    }
    let mut creator = creator;
    if replaced {
        let seen = match creator.read(run, early_at, early.len()) {
            Ok(seen) => seen,
            Err(fail) => return done(Err(fail)),
        };
        if seen != early {
            let how = if seen.iter().all(|&byte| byte == 0) {
                "zeros: after its ftruncate() create() cleared the bytes again (a store of zeros \
                 into the mapping, or a second sizing)"
            } else {
                "other bytes: after its ftruncate() create() stored into the object"
            };
            return done(Err(Fail::failed(format!(
                "creating a {size}-byte table, held right after its ftruncate() returned, the \
                 grader wrote 64 bytes at offset {early_at} of the object it created (as an \
                 opener may, once the object is sized); the creator then said `mapped`, and \
                 reading them back it got {how}: ftruncate() alone zeroes the new bytes, and \
                 create() stores nothing into the table, which others may use already"
            ))));
        }
    }
    done(creator.close())
}

/// A creator, then an opener (of an object the grader made), each with a hardware breakpoint at
/// the C library's `shm_open()` set before its `main()` runs: each must enter that function
/// before it says `mapped`.
fn created_through_shm_open(run: &mut Run) -> Result<(), Fail> {
    through_shm_open(run, CREATOR)?;
    through_shm_open(run, OPENER)
}

fn through_shm_open(run: &mut Run, who: &'static str) -> Result<(), Fail> {
    // A name of each side's own: what the creator's process leaves must not reach the opener's.
    let name = run.ipc_name(if who == CREATOR {
        "created-called"
    } else {
        "opened-called"
    });
    let bytes = run.random_bytes(PAGE);
    let planted = match who {
        CREATOR => None,
        _ => Some(plant_object(run, &name, &bytes)?),
    };
    let create = planted.is_none().then_some(PAGE);
    let (mut proc, tracer) = start_breaking_at(run, &name, create, who, c"shm_open")?;
    let Some(tracer) = tracer else {
        run.note(format!(
            "the grader could not set a breakpoint at shm_open() in {who} here: whether it \
             calls it was not seen"
        ));
        proc.kill_tree();
        let _ = std::fs::remove_file(dev_shm(&name));
        return Ok(());
    };
    let (answer, entered) = answer_past_breakpoint(tracer, &mut proc)?;
    let watched = answer.is_some();
    let doing = if planted.is_some() {
        "opening"
    } else {
        "creating"
    };
    let first = match answer {
        Some(answer) => answer,
        None => await_answer(&mut proc, who, &format!("{doing} {name:.60}"), None)?,
    };
    let mut table = mapped(proc, first, &name, who)?;
    if watched && !entered && std::fs::symlink_metadata(dev_shm(&name)).is_ok() {
        table.proc.kill_tree();
        let _ = std::fs::remove_file(dev_shm(&name));
        let call = if planted.is_some() {
            "open it with shm_open(name, O_RDWR, 0)"
        } else {
            "create it with shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600)"
        };
        return Err(Fail::failed(format!(
            "{who} said `mapped` {doing} {}, but a hardware breakpoint at the C library's \
             shm_open(), set before its main() ran, saw it never call that function: it \
             opened the object with a system call of its own (open() or openat() of a \
             /dev/shm path it builds): where shared memory objects live is the C library's \
             business (glibc finds the tmpfs mount; other systems have none); {call}",
            dev_shm(&name).display()
        )));
    }
    match planted {
        Some(planted) => {
            drop(planted);
            table.close()
        }
        None => {
            table.unlink()?;
            table.close()
        }
    }
}
