//! The name removed while the table is mapped: the memory lives on for the processes that map
//! it, each unlink and open asks the C library again, and a new object can take the name.

use std::time::{Duration, Instant};

use ipc_labs_driver::Message;
use rand::RngExt;

use crate::engine::tracer::{Call, Tracer};
use crate::engine::{Fail, Run};

use super::driver::{
    CREATOR, Table, answer_past_breakpoint, await_answer, is_refusal, pair, refused, said, start,
};
use super::explain::{Writer, expect_read};
use super::probes::{
    Mapping, dev_shm, exists, mappings, object_bytes, plant_dangling_link, plant_object,
    table_mapping,
};

/// The table's `unlink` command with a hardware breakpoint at the C library's `shm_unlink()`:
/// its answer, and whether the program called that function before it answered (`None` where
/// the grader cannot set the breakpoint).
fn unlink_watched(table: &mut Table) -> Result<(Message, Option<bool>), Fail> {
    let pid = table.pid();
    let Some(tracer) = Tracer::break_at_function(pid, c"shm_unlink")? else {
        let answer = table.command(&[("op", "unlink".into())])?;
        return Ok((answer, None));
    };
    table.proc.send("cmd", &[("op", "unlink".into())])?;
    let (answer, entered) = answer_past_breakpoint(tracer, &mut table.proc)?;
    let answer = match answer {
        Some(answer) => answer,
        None => await_answer(&mut table.proc, table.who, "asked for op=unlink", None)?,
    };
    Ok((answer, Some(entered)))
}

/// More bytes than a command's own message that an `unlink` may read through system calls (its
/// `/proc/PID/io`): the command comes in over the control channel, and `shm_unlink()` reads
/// nothing.
const UNLINK_READ_SLACK: u64 = 512;

/// The table's `unlink` command, untraced, with its process's I/O counters read around it: it
/// reads no file. A program that looks whether it is watched (its `/proc/self/status`) before
/// it picks how to remove the name does so here, where no tracer watches it.
fn unlink_reads_nothing(table: &mut Table) -> Result<(), Fail> {
    let pid = table.pid();
    let before = crate::engine::inspect::io(pid);
    table.unlink()?;
    let (Some(before), Some(after)) = (before, crate::engine::inspect::io(pid)) else {
        return Ok(());
    };
    let read = after.since(before);
    if read.read_bytes <= UNLINK_READ_SLACK {
        return Ok(());
    }
    Err(Fail::failed(format!(
        "during its unlink command, untraced, the creator read {} bytes in {} read() calls \
         (its /proc/{pid}/io), besides the command itself: unlink() is one shm_unlink(name), \
         which reads no file. A file read there is the program looking at something it has no \
         need of, such as its own /proc/self/status (whose TracerPid tells whether a tracer \
         watches it, to remove the name another way when none does)",
        read.read_bytes, read.read_calls
    )))
}

pub fn unlinked_but_mapped(run: &mut Run) -> Result<String, Fail> {
    let size = 10_000;
    let (mut creator, mut opener) = pair(run, "table", size)?;
    let name = creator.name.clone();
    let path = dev_shm(&name).display().to_string();
    let (opener_first, opener_second) = opened_twice(&mut opener, &path)?;
    // Its creator too, which a program may tell apart (it made the object), maps it again.
    let own_name = run.ipc_name("own");
    let mut own = super::driver::table(run, &own_name, Some(4096), CREATOR)?;
    let (own_first, own_second) =
        opened_twice(&mut own, &dev_shm(&own_name).display().to_string())?;
    unlink_reads_nothing(&mut own)?;
    closed_first_of_two(own, &own_first, &own_second)?;
    replaced_then_opened(run)?;
    let (answer, through_shm_unlink) = unlink_watched(&mut creator)?;
    if answer.kind != "done" {
        return Err(Fail::failed(format!(
            "the creator could not unlink the name: it said {}",
            said(&answer)
        )));
    }
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
    // The creator still maps the unlinked object; asked to open the name as well, it finds
    // nothing there either: open() asks shm_open() each time, whatever the process maps.
    let pid = creator.pid();
    let before = object_mappings(pid, &path);
    let reopened = creator.command(&[("op", "open".into()), ("name", name.clone())])?;
    if !is_refusal(&reopened, "not-found") {
        let now = object_mappings(pid, &path);
        let how = if reopened.kind == "done" && now == before {
            format!(
                " (len={}), and its /proc/{pid}/maps shows no new mapping of the object: it \
                 answered without mapping anything",
                reopened.get("len").unwrap_or("none")
            )
        } else {
            String::new()
        };
        return Err(Fail::failed(format!(
            "after the unlink (a new process's open of {name} was not-found), the creator, which \
             still maps the unlinked object, was asked to open {name} as well (op=open) and said \
             {}{how}, not `failed` with kind=not-found: nothing has the name; open() calls \
             shm_open() each time, and its ENOENT is TableError::NotFound, whatever the process \
             already maps",
            said(&reopened)
        )));
    }
    let (again, through_shm_unlink) = unlink_watched(&mut opener)?;
    refused(
        &again,
        "not-found",
        "the opener unlinking the name the creator had already unlinked",
        "shm_unlink() fails with ENOENT for a name that does not exist, which is \
         TableError::NotFound",
    )?;
    if through_shm_unlink == Some(false) {
        return Err(Fail::failed(format!(
            "the opener, asked to unlink {name}, which the creator had already unlinked, said \
             kind=not-found, but a breakpoint at the C library's shm_unlink() saw it never call \
             that function: it answered not-found without asking it (from a look at {path}, \
             say, a path written into the program, while where the objects live is the C \
             library's business); each unlink calls shm_unlink(), and not-found is its ENOENT"
        )));
    }
    // A new object, of another size, takes the name: the two processes must go on sharing the
    // old one, and the creator, asked to open the name as well, maps the new one beside it.
    let fresh_size = size + 3000;
    let fresh = run.random_bytes(fresh_size);
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
    // Once they have shared their writes, the creator opens the new object as well (before,
    // its table would not be the one mapping of the name's path in its /proc/PID/maps).
    second_table(&mut creator, &path, size, fresh_size)?;
    // What the creator's second table holds is the new object's bytes.
    let at2 = run.rng().random_range(0..fresh_size - len);
    let (mut fields, file) = creator.read_fields(run, at2, len);
    fields.push(("table", "1".into()));
    let answer = creator.command(&fields)?;
    if answer.kind != "done" {
        return Err(Fail::failed(format!(
            "the creator could not read {len} bytes at offset {at2} of its second table (the \
             new object at {name}, opened with op=open): it said {}",
            said(&answer)
        )));
    }
    let got = std::fs::read(&file)?;
    std::fs::remove_file(&file)?;
    if got != fresh[at2..at2 + len] {
        return Err(Fail::failed(format!(
            "the creator opened the grader's new object at {name} as a second table (op=open), \
             but {len} bytes it read there at offset {at2} are not the object's (the grader \
             reads them in {path}): open() maps the object shm_open() opened, the one that has \
             the name now"
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
    closed_first_of_two(opener, &opener_first, &opener_second)?;
    creator.close()?;
    Ok(
        "an object opened again, by its opener and by its creator, was mapped again, and a close unmapped its own table only; once another object had the name, opening it again mapped that one; the \
        name went, the shared memory stayed while mapped, apart from a new object of that \
        name, which the creator's second unlink removed; an unlink that failed otherwise than \
        with ENOENT was shm-unlink; a symbolic link at the name was unlinked"
            .into(),
    )
}

/// The mappings of the object at `path` in `pid`, linked or unlinked (` (deleted)`), as
/// (start, inode).
fn object_mappings(pid: i32, path: &str) -> Vec<(u64, u64)> {
    let deleted = format!("{path} (deleted)");
    mappings(pid)
        .into_iter()
        .filter(|m| m.path == path || m.path == deleted)
        .map(|m| (m.start, m.inode))
        .collect()
}

/// The creator, which maps the unlinked `size`-byte object as its table, opens the grader's new
/// `fresh_size`-byte object at the name as a second table (`op=open`): that one is mapped
/// beside the first, which stays where it was, and has the new object's size.
fn second_table(
    creator: &mut Table,
    path: &str,
    size: usize,
    fresh_size: usize,
) -> Result<(), Fail> {
    let pid = creator.pid();
    let name = creator.name.clone();
    let Some(first) = table_mapping(pid, &name) else {
        return Err(Fail::failed(format!(
            "after its unlink the creator no longer maps the table (not in /proc/{pid}/maps): \
             unlink() removes the name only; the mapping stays until close()"
        )));
    };
    let answer = creator.command(&[("op", "open".into()), ("name", name.clone())])?;
    if answer.kind != "done" {
        return Err(Fail::failed(format!(
            "after the unlink the grader created a new {fresh_size}-byte object at {name}; the \
             creator, asked to open it as well (op=open), said {}: an existing, sized object \
             opens and maps, also in a process that maps another one",
            said(&answer)
        )));
    }
    let now = mappings(pid);
    let kept = now
        .iter()
        .any(|m| m.start == first.start && m.end == first.end && m.inode == first.inode);
    if !kept {
        let there: Vec<String> = now
            .iter()
            .filter(|m| m.start < first.end && m.end > first.start)
            .map(Mapping::describe)
            .collect();
        return Err(Fail::failed(format!(
            "the creator mapped its table at {:x}-{:x} (the unlinked object, inode {}); once it \
             had opened a second table (op=open of the new object at {name}), {}: the new \
             mapping took the first table's addresses, so the first table reads and writes \
             something else now; only a mapping at a fixed address (MAP_FIXED) replaces \
             another: mmap(NULL, ...) lets the kernel pick addresses no other mapping uses",
            first.start,
            first.end,
            first.inode,
            if there.is_empty() {
                "nothing was mapped there".to_string()
            } else {
                format!("those addresses held {}", there.join(" and "))
            }
        )));
    }
    let len: Option<usize> = answer.get("len").and_then(|l| l.parse().ok());
    if len != Some(fresh_size) {
        return Err(Fail::failed(format!(
            "after the unlink the grader created a new {fresh_size}-byte object at {name}; the \
             creator, asked to open it as well (op=open), said `done` with len={}, not \
             {fresh_size} (the unlinked object it maps is {size} bytes): open() takes the size \
             from fstat() of the object its shm_open() opened",
            answer.get("len").unwrap_or("none")
        )));
    }
    let inode = std::fs::metadata(path).map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.ino()
    })?;
    if !now.iter().any(|m| m.path == path && m.inode == inode) {
        return Err(Fail::failed(format!(
            "the creator, asked to open the grader's new object at {name} as well (op=open), \
             said `done` (len={fresh_size}), but /proc/{pid}/maps shows no mapping of {path} \
             (inode {inode}): open() maps the object it opened"
        )));
    }
    Ok(())
}

/// A table's process (opener or creator), which maps the object at `path` as its table, opens
/// the name again (`op=open`) while it is the same object: open() maps each time, so the process now maps it twice.
/// Returns the first table's mapping and the second's.
fn opened_twice(table: &mut Table, path: &str) -> Result<(Mapping, Mapping), Fail> {
    let (pid, who) = (table.pid(), table.who);
    let name = table.name.clone();
    let Some(first) = table_mapping(pid, &name) else {
        return Err(Fail::failed(format!(
            "{who} said `mapped`, but /proc/{pid}/maps shows no mapping of {path}: map the \
             object with mmap(MAP_SHARED) and keep it mapped until close"
        )));
    };
    let answer = table.command(&[("op", "open".into()), ("name", name.clone())])?;
    if answer.kind != "done" {
        return Err(Fail::failed(format!(
            "{who}, which maps {name} as its table, was asked to open it again (op=open) \
             and said {}: an existing, sized object opens and maps, also in a process that \
             maps it already",
            said(&answer)
        )));
    }
    let second = mappings(pid)
        .into_iter()
        .find(|m| m.inode == first.inode && m.path == path && m.start != first.start);
    if let Some(second) = second {
        return Ok((first, second));
    }
    let told = format!(
        "{who}, which maps {path} as its table at {:x}-{:x}, was asked to open {name} \
         again (op=open) and said `done` (len={}), but its /proc/{pid}/maps shows no second \
         mapping of the object",
        first.start,
        first.end,
        answer.get("len").unwrap_or("none")
    );
    let why = "open() is shm_open(), fstat() and mmap() each time, and each table is a mapping \
               of its own, which its close() unmaps";
    Err(Fail::failed(match mmaps_in_open(table)? {
        Some(0) => format!(
            "{told}: it handed out the mapping it had (opened once more, traced, it made no \
             mmap() call); {why}"
        ),
        Some(calls) => format!(
            "{told}, although it maps (opened once more, traced, it made {calls} mmap() \
             call(s)): the new mapping took the first table's addresses, which only a mapping \
             at a fixed address (MAP_FIXED) does; mmap(NULL, ...) lets the kernel pick \
             addresses no other mapping uses"
        ),
        None => format!("{told}; {why}"),
    }))
}

/// How many `mmap()` calls one more `op=open` of the table's own name makes, traced (`None`
/// where the grader cannot trace).
fn mmaps_in_open(table: &mut Table) -> Result<Option<u32>, Fail> {
    let Some(tracer) = Tracer::count_calls(table.pid(), Call::any(libc::SYS_mmap))? else {
        return Ok(None);
    };
    let name = table.name.clone();
    table.command(&[("op", "open".into()), ("name", name)])?;
    // Each call was reported while the program was stopped in it, before its answer.
    Ok(Some(tracer.failed_count(
        Instant::now() + Duration::from_millis(200),
    )?))
}

/// A table's process, which maps the object twice ([`opened_twice`]), closes its first table: its
/// addresses are unmapped while the second table's mapping stays; then it exits.
fn closed_first_of_two(mut table: Table, first: &Mapping, second: &Mapping) -> Result<(), Fail> {
    table.unmap()?;
    let (pid, who) = (table.pid(), table.who);
    let now = mappings(pid);
    let tables = format!(
        "{who} mapped the object twice, as its table at {:x}-{:x} and as a second table \
         (op=open of the same name) at {:x}-{:x}; once it had closed the first (op=close, \
         `done`), while it still ran,",
        first.start, first.end, second.start, second.end
    );
    if let Some(over) = now
        .iter()
        .find(|m| m.start < first.end && m.end > first.start)
    {
        return Err(Fail::failed(format!(
            "{tables} the first table's addresses still held {}: close() munmap()s its own \
             table's mapping, whatever else of the process maps the same object",
            over.describe()
        )));
    }
    let kept = now
        .iter()
        .any(|m| m.start == second.start && m.end == second.end && m.inode == second.inode);
    if !kept {
        return Err(Fail::failed(format!(
            "{tables} the second table's mapping was gone too: close() unmaps its own table \
             only; the other table stays mapped until its own close"
        )));
    }
    table.exit()
}

/// The size of the object the grader puts at a name a process maps, in [`replaced_then_opened`]:
/// another than the first's.
const REPLACEMENT_SIZE: usize = 6000;

/// A process that maps the object at a name (its creator, and an opener of an object the
/// grader made), asked to open the name again (`op=open`) once the grader has put another
/// object of another size there (renamed over it, as another program's unlink and create
/// leave it): it maps the new object, at its size, beside its table. open() asks shm_open()
/// each time, whatever the process maps already under that name.
fn replaced_then_opened(run: &mut Run) -> Result<(), Fail> {
    for who in [CREATOR, "an opener"] {
        let creates = who == CREATOR;
        let name = run.ipc_name(if creates { "replaced-own" } else { "replaced" });
        let first_bytes = run.random_bytes(4096);
        let first = if creates {
            None
        } else {
            Some(plant_object(run, &name, &first_bytes)?)
        };
        let mut table = super::driver::table(run, &name, creates.then_some(4096), who)?;
        let pid = table.pid();
        let outcome = (|| {
            let old = table_mapping(pid, &name).map(|m| m.inode);
            let next = run.ipc_name("replacement");
            let bytes = run.random_bytes(REPLACEMENT_SIZE);
            let planted = plant_object(run, &next, &bytes)?;
            std::fs::rename(dev_shm(&next), dev_shm(&name))?;
            drop(planted);
            let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(dev_shm(&name))?);
            let answer = table.command(&[("op", "open".into()), ("name", name.clone())])?;
            let what = format!(
                "{who}, which maps {} as its table (inode {}), was asked to open {name} again \
                 (op=open) after the grader had put another object there (inode {inode}, \
                 {REPLACEMENT_SIZE} bytes, renamed over the name, as another program's unlink \
                 and create would leave it)",
                dev_shm(&name).display(),
                old.map_or_else(|| "?".to_string(), |i| i.to_string())
            );
            if answer.kind != "done" {
                return Err(Fail::failed(format!(
                    "{what}: it said {}: an existing, sized object opens and maps",
                    said(&answer)
                )));
            }
            let maps = mappings(pid);
            let of_new = maps.iter().any(|m| m.inode == inode);
            let len = answer.get("len").unwrap_or("none");
            if of_new && len == REPLACEMENT_SIZE.to_string() {
                return Ok(());
            }
            let old_twice =
                old.is_some_and(|old| maps.iter().filter(|m| m.inode == old).count() > 1);
            let how = if old_twice {
                "it mapped the object it had a second time (another mapping of the old inode in \
                 its /proc/PID/maps), without asking for the name: a table remembered by name \
                 and copied (mremap(), or a mapping kept aside)"
            } else {
                "it handed out the object it had"
            };
            Err(Fail::failed(format!(
                "{what}: it said `done` with len={len}, and its /proc/{pid}/maps has {} mapping \
                 of the new object: {how}; a process that maps a name never sees another \
                 object there that way. open() is shm_open(), fstat() and mmap() each time, \
                 whatever the process maps already",
                if of_new { "a" } else { "no" }
            )))
        })();
        table.proc.kill_tree();
        let _ = std::fs::remove_file(dev_shm(&name));
        drop(first);
        outcome?;
    }
    Ok(())
}
