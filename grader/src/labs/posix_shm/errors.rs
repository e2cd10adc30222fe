//! The error paths of create and of access, each error asserted by its kind: a size of 0, a
//! name that exists (an object, a 0-byte one, a link, one that appears as the creator's
//! `shm_open()` begins), accesses at and past the end. Opens that must fail are in `open_errors`,
//! bad names in `names`, creates that fail half-way in `failed_creates`.

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use ipc_labs_driver::Message;

use crate::engine::tracer::{Call, Field, Reached, Step, Tracer};
use crate::engine::{Fail, Proc, Run, force, inspect};

use super::driver::{
    CREATOR, Table, WatchedCommand, await_answer, creating_open, is_refusal, refused, said, start,
    start_stopped,
};
use super::probes::{
    Planted, dev_shm, exists, object_bytes, plant_dangling_link, plant_object, table_mapping,
};

/// An access the program must refuse, or accept.
#[derive(Clone, Copy, PartialEq)]
enum Op {
    Read,
    Write,
}

impl Op {
    fn doing(self) -> &'static str {
        match self {
            Op::Read => "reading",
            Op::Write => "writing",
        }
    }
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// Asks `table` to read or write `len` bytes at `offset`.
fn access(
    run: &mut Run,
    table: &mut Table,
    op: Op,
    offset: usize,
    len: usize,
) -> Result<Message, Fail> {
    let fields = match op {
        Op::Write => {
            let data = run.random_bytes(len);
            table.write_fields(run, offset, &data)?
        }
        Op::Read => table.read_fields(run, offset, len).0,
    };
    table.command(&fields)
}

/// Past the end of a `size`-byte table, `op` must be refused; when it is not, probes farther
/// out to say which bound the program checks.
fn past_the_end(run: &mut Run, table: &mut Table, op: Op, size: usize) -> Result<(), Fail> {
    let doing = op.doing();
    let other = if op == Op::Read {
        " (write() refused the same accesses)"
    } else {
        ""
    };
    let answer = access(run, table, op, size - 1, 2)?;
    if answer.kind == "done" {
        let cause = match access(run, table, op, size + 903, 8) {
            Ok(far) if is_refusal(&far, "out-of-range") => format!(
                "it refused 8 bytes at offset {}: offset + len must not pass the size; it \
                 checked only the start, or let the end go one past the size",
                size + 903
            ),
            Ok(_) => match access(run, table, op, 8191, 2) {
                Ok(page) if is_refusal(&page, "out-of-range") => format!(
                    "it refused only 2 bytes at offset 8191, across the end of its mapping: it \
                     checks against the mapping's whole pages (8192 bytes), not the table's \
                     {size} bytes"
                ),
                Ok(_) => format!(
                    "it even said `done` to 2 bytes at offset 8191, across the end of its \
                     mapping: {doing} checks no range; refuse the whole access with \
                     OutOfRange, do not copy what exists"
                ),
                Err(fail) => format!(
                    "with 2 bytes at offset 8191, across the end of its mapping, it then \
                     crashed ({}): {doing} checks no range",
                    fail.message().lines().next().unwrap_or("")
                ),
            },
            Err(fail) => format!(
                "with 8 bytes at offset {} it then crashed ({}): it checks no range",
                size + 903,
                fail.message().lines().next().unwrap_or("")
            ),
        };
        return Err(Fail::failed(format!(
            "{doing} 2 bytes at offset {} of a {size}-byte table, the program said `done`, not \
             `failed` with kind=out-of-range{other}; {cause}",
            size - 1
        )));
    }
    refused(
        &answer,
        "out-of-range",
        &format!(
            "{doing} 2 bytes at offset {} of a {size}-byte table",
            size - 1
        ),
        "check the range (offset + len <= size) before touching the mapping",
    )?;
    // Neither of the two bounds a program may plausibly use: past the table's end, inside its
    // mapping's last page.
    let answer = access(run, table, op, size + 903, 8)?;
    refused(
        &answer,
        "out-of-range",
        &format!(
            "{doing} 8 bytes at offset {} of a {size}-byte table, inside its mapping's last page",
            size + 903
        ),
        "the mapping is whole pages, but only the table's bytes are yours: check offset + len \
         against the table's size",
    )?;
    let len = if op == Op::Read { 4 } else { 2 };
    let answer = access(run, table, op, usize::MAX - 1, len).map_err(|fail| match fail {
        Fail::Crashed(message) => Fail::Crashed(format!(
            "{doing} {len} bytes at offset usize::MAX - 1: offset + len overflowed usize, while \
             the plain accesses past the end were refused; compute the end with checked_add \
             ({message})"
        )),
        other => other,
    })?;
    refused(
        &answer,
        "out-of-range",
        &format!("{doing} {len} bytes at offset usize::MAX - 1"),
        "offset + len overflows and wraps around to a small number, which passes the range \
         check (the plain accesses past the end were refused): compute the end with checked_add",
    )?;
    if op == Op::Read {
        refused_read_untouched(run, table, size)?;
    }
    Ok(())
}

/// The table's first bytes during a refused write, watched for stores.
const REFUSED_WRITE: &[Field] = &[Field {
    offset: 0,
    len: 8,
    loads: false,
}];

/// A write of one byte more than a `size`-byte table holds, from its start: longer than a page,
/// so a write that checks and copies piece by piece has copied whole pieces before it meets the
/// one that does not fit. It must be refused, and change nothing, not even for a moment: a
/// hardware watchpoint on byte 0 must see no store before the answer (where the grader can
/// watch).
fn refused_long_write(run: &mut Run, table: &mut Table, size: usize) -> Result<(), Fail> {
    let Some(before) = object_bytes(&table.name, 0, size) else {
        return Ok(());
    };
    let len = size + 1;
    let data = run.random_bytes(len);
    let fields = table.write_fields(run, 0, &data)?;
    let what =
        format!("writing {len} bytes at offset 0 of a {size}-byte table (one byte too many)");
    let tracer = match table_mapping(table.pid(), &table.name) {
        Some(mapping) => Tracer::watch_at(table.pid(), mapping.start, REFUSED_WRITE)?,
        None => None,
    };
    let (answer, stored) = match tracer {
        Some(tracer) => {
            let WatchedCommand { answer, hit, .. } = table.command_watched(tracer, &fields)?;
            let answer = match answer {
                Some(answer) => answer,
                None => await_answer(&mut table.proc, table.who, &what, Some("out-of-range"))?,
            };
            (answer, hit)
        }
        None => (table.command(&fields)?, false),
    };
    refused(
        &answer,
        "out-of-range",
        &what,
        "check the whole range (offset + len <= size) before copying anything",
    )?;
    let Some(after) = object_bytes(&table.name, 0, size) else {
        return Ok(());
    };
    let changed: Vec<usize> = (0..size).filter(|&i| before[i] != after[i]).collect();
    if let (Some(&first), Some(&last)) = (changed.first(), changed.last()) {
        let theirs = (first..=last).filter(|&i| after[i] == data[i]).count();
        return Err(Fail::failed(format!(
            "{what}, the program said kind=out-of-range, but bytes {first}..{} of the table \
             changed in {} ({theirs} of them now hold the refused data's): write() copied part \
             of the data (a piece at a time, checking each piece as it went) before it found \
             that the rest does not fit; a refused access copies nothing: check the whole \
             range before copying anything",
            last + 1,
            dev_shm(&table.name).display()
        )));
    }
    if stored {
        return Err(Fail::failed(format!(
            "{what}, the program said kind=out-of-range and the table's bytes are as they \
             were, but a hardware watchpoint on the table's byte 0 saw the program's own \
             instructions store into it before that answer: write() copied data in and then \
             put the old bytes back (or wrote them over themselves), so another process \
             reading meanwhile sees bytes of a refused write, and a write of its own there is \
             undone; a refused access copies nothing: check the whole range before touching \
             the mapping"
        )));
    }
    Ok(())
}

/// The table's bytes from the start of a refused read across the end, watched for loads.
const REFUSED_READ: &[Field] = &[Field {
    offset: 0,
    len: 8,
    loads: true,
}];

/// A read of 2 bytes at `size - 1` of a `size`-byte table (one byte in it, one past), refused,
/// with a hardware watchpoint on the table's last byte (and the 7 after it, past the end):
/// a refused access copies nothing, so the program's instructions must not load it before the
/// answer. Nothing where the grader cannot watch.
fn refused_read_untouched(run: &mut Run, table: &mut Table, size: usize) -> Result<(), Fail> {
    refused_read_loads_nothing(run, table, size, size - 1, 2)?;
    // One byte more than the table, from its start: more than a page, so a read that checks and
    // copies piece by piece has loaded its first pieces before it meets the one that does not
    // fit.
    refused_read_loads_nothing(run, table, size, 0, size + 1)
}

/// A read of `len` bytes at `at` of a `size`-byte table, which does not fit, refused, with a
/// hardware watchpoint on the table's byte `at` (and the 7 after it): it must load nothing
/// before its answer. Nothing where the grader cannot watch.
fn refused_read_loads_nothing(
    run: &mut Run,
    table: &mut Table,
    size: usize,
    at: usize,
    len: usize,
) -> Result<(), Fail> {
    let Some(mapping) = table_mapping(table.pid(), &table.name) else {
        return Ok(());
    };
    if !at.is_multiple_of(8) {
        return Ok(());
    }
    let Some(tracer) = Tracer::watch_at(table.pid(), mapping.start + at as u64, REFUSED_READ)?
    else {
        return Ok(());
    };
    let (fields, _) = table.read_fields(run, at, len);
    let WatchedCommand { answer, hit, .. } = table.command_watched(tracer, &fields)?;
    let what = if len == 2 {
        format!("reading 2 bytes at offset {at} of a {size}-byte table (again)")
    } else {
        format!("reading {len} bytes at offset {at} of a {size}-byte table (one byte too many)")
    };
    let answer = match answer {
        Some(answer) => answer,
        None => await_answer(&mut table.proc, table.who, &what, Some("out-of-range"))?,
    };
    refused(
        &answer,
        "out-of-range",
        &what,
        "check the range (offset + len <= size) before touching the mapping",
    )?;
    if hit && len == 2 {
        return Err(Fail::failed(format!(
            "{what}, the program said kind=out-of-range, but a hardware watchpoint on the \
             table's byte {at} (the one byte of the range inside the table) saw the program's \
             own instructions load it before that answer: read() copied the part that exists \
             into the caller's buffer, then refused (as read(2) gives a short count); a refused \
             access copies nothing: check_range() first, then copy"
        )));
    }
    if hit {
        return Err(Fail::failed(format!(
            "{what}, the program said kind=out-of-range, but a hardware watchpoint on the \
             table's byte {at} (the first of the range) saw the program's own instructions load \
             it before that answer: read() copied part of the range into the caller's buffer \
             (a piece at a time, checking each piece as it went) before it found that the rest \
             does not fit; a refused access copies nothing: check the whole range before \
             copying anything"
        )));
    }
    Ok(())
}

/// The size of the object a create of that very size finds at its name.
const TWIN_SIZE: usize = 4096;

/// A create of exactly the size of the grader's object at its name (`theirs`, [`TWIN_SIZE`]
/// bytes): `exists`, and the object as it was.
fn same_size_exists(creator: &mut Proc, name: &str, theirs: &[u8]) -> Result<(), Fail> {
    let what = format!(
        "creating a {TWIN_SIZE}-byte table under {name}, whose object (made by another program, \
         not this one) has exactly that size"
    );
    let answer = await_answer(creator, "a second creator", &what, None)?;
    if answer.kind == "mapped" {
        return Err(Fail::failed(format!(
            "{what}: the program said `mapped`, not `failed` with kind=exists: after its \
             shm_open(O_CREAT | O_EXCL) failed with EEXIST it took over the existing object \
             (opened and mapped it, as the size matched): a create never uses an object it did \
             not make, whatever its size (two creators of one name would both succeed, and \
             share another program's table); EEXIST is TableError::Exists, at once"
        )));
    }
    refused(
        &answer,
        "exists",
        &what,
        "use O_CREAT | O_EXCL and map EEXIST to TableError::Exists, whatever the size",
    )?;
    if object_bytes(name, 0, theirs.len() + 1).is_some()
        || object_bytes(name, 0, theirs.len()).as_deref() != Some(theirs)
    {
        return Err(Fail::failed(format!(
            "{what}: it said kind=exists, but the object is gone or changed: a create that \
             fails must not touch an object it did not create"
        )));
    }
    creator.wait()?;
    Ok(())
}

pub fn typed_errors(run: &mut Run) -> Result<String, Fail> {
    let size = 4097;
    let empty = run.ipc_name("empty");
    let name = run.ipc_name("table");
    let path = dev_shm(&name).display().to_string();
    // An object another program made, and a name taken by something that cannot be opened as
    // a table (only O_EXCL still says it exists).
    let existing = run.ipc_name("existing");
    let theirs = run.random_bytes(3000);
    let object = plant_object(run, &existing, &theirs)?;
    let occupied = run.ipc_name("occupied");
    let ours = run.random_bytes(100);
    let occupant = plant_object(run, &occupied, &ours)?;
    let taken = run.ipc_name("taken");
    let link = plant_dangling_link(run, &taken)?;
    // A 0-byte object: what another creator leaves between its shm_open() and its ftruncate().
    // The grader keeps it open, to see whether a create unlinks or replaces it.
    let hollow = run.ipc_name("hollow");
    let hollow_object = plant_object(run, &hollow, &[])?;
    let hollow_held = std::fs::File::open(dev_shm(&hollow))?;
    // Six creates that do not depend on each other start at once.
    let mut zero = start(run, &empty, Some(0), CREATOR)?;
    // Size 0 under a taken name: only a size checked before shm_open() says zero-size here.
    let mut zero_taken = start(run, &occupied, Some(0), CREATOR)?;
    let mut first = start(run, &name, Some(size), CREATOR)?;
    let mut again = start(run, &existing, Some(8000), "a second creator")?;
    // The very size of the object at the name: as much `exists` as any other size.
    let twin = run.ipc_name("twin");
    let twin_bytes = run.random_bytes(TWIN_SIZE);
    let twin_object = plant_object(run, &twin, &twin_bytes)?;
    let mut same_size = start(run, &twin, Some(TWIN_SIZE), "a second creator")?;
    let mut linked = start(run, &taken, Some(64), "a creator")?;
    let mut over_hollow = start(run, &hollow, Some(64), "a creator")?;
    let raced = run.ipc_name("raced");
    let racer = start_racer(run, &raced)?;

    let answer = await_answer(&mut zero, CREATOR, "creating a 0-byte table", None)?;
    refused(
        &answer,
        "zero-size",
        "creating a 0-byte table",
        "reject size 0 before shm_open()",
    )?;
    if exists(&empty) {
        return Err(Fail::failed(format!(
            "creating a 0-byte table said kind=zero-size, but left {} behind: check the size \
             before shm_open(), so that a refused create leaves nothing",
            dev_shm(&empty).display()
        )));
    }
    zero.wait()?;
    let answer = await_answer(
        &mut zero_taken,
        CREATOR,
        "creating a 0-byte table under a name that exists",
        None,
    )?;
    if is_refusal(&answer, "exists") {
        return Err(Fail::failed(format!(
            "creating a 0-byte table under {occupied}, a name another program's object has, \
             the program said kind=exists, not kind=zero-size: only shm_open() reports EEXIST, \
             so it called shm_open() before looking at the size; reject size 0 first (and a \
             refused create then makes and removes nothing)"
        )));
    }
    refused(
        &answer,
        "zero-size",
        "creating a 0-byte table under a name that exists",
        "reject size 0 before shm_open()",
    )?;
    if object_bytes(&occupied, 0, ours.len() + 1).is_some()
        || object_bytes(&occupied, 0, ours.len()).as_deref() != Some(&ours[..])
    {
        return Err(Fail::failed(format!(
            "a 0-byte create under {occupied}, which another program had made, was refused \
             with kind=zero-size, but the object is gone or changed: the create touched it \
             (shm_open(), ftruncate() or shm_unlink()) before it looked at the size; reject \
             size 0 before shm_open()"
        )));
    }
    zero_taken.wait()?;
    drop(occupant);

    let answer = await_answer(
        &mut again,
        "a second creator",
        &format!("creating {existing}"),
        None,
    )?;
    refused(
        &answer,
        "exists",
        "creating a table whose name exists",
        "use O_CREAT | O_EXCL and map EEXIST to TableError::Exists",
    )?;
    let kept = std::fs::metadata(dev_shm(&existing)).map(|m| m.len()).ok();
    if kept != Some(theirs.len() as u64)
        || object_bytes(&existing, 0, theirs.len()).as_deref() != Some(&theirs[..])
    {
        let what = match kept {
            None => "removed it".to_string(),
            Some(len) if len != theirs.len() as u64 => format!("resized it to {len} bytes"),
            Some(_) => "changed its bytes".to_string(),
        };
        return Err(Fail::failed(format!(
            "creating {existing}, which another program had made, was refused with kind=exists, \
             but the create {what}: a create that fails must not touch an object it did not \
             create (no ftruncate, no write, no shm_unlink after EEXIST)"
        )));
    }
    again.wait()?;
    drop(object);
    same_size_exists(&mut same_size, &twin, &twin_bytes)?;
    drop(twin_object);

    let answer = await_answer(&mut linked, "a creator", &format!("creating {taken}"), None)?;
    if !is_refusal(&answer, "exists") {
        let followed = exists(&format!("{taken}-nowhere"));
        let how = if followed {
            "it created the file the link points to: create with O_CREAT | O_EXCL, which \
             refuses every name that exists"
        } else {
            "the create does not rely on O_EXCL: shm_open(O_CREAT | O_EXCL) fails with EEXIST \
             for every name that exists, this one too; looking first (an open or a stat) and \
             then creating without O_EXCL gives another answer here, and lets two creators \
             racing for one name both succeed"
        };
        return Err(Fail::failed(format!(
            "{} is taken (by a symbolic link the grader put there, to nothing), yet creating a \
             table under that name, the program said {}, not `failed` with kind=exists: {how}",
            dev_shm(&taken).display(),
            said(&answer)
        )));
    }
    linked.wait()?;
    drop(link);

    let answer = await_answer(
        &mut over_hollow,
        "a creator",
        &format!("creating {hollow}, the name of a 0-byte object"),
        None,
    )?;
    left_alone(&answer, &hollow, &hollow_held)?;
    over_hollow.wait()?;
    drop(hollow_object);
    if let Some(racer) = racer {
        racer.judge()?;
    }

    let answer = await_answer(&mut first, CREATOR, &format!("creating {name}"), None)?;
    let mut creator = super::driver::mapped(first, answer, &name, CREATOR)?;
    // The last byte is the table's: offset + len may equal the size.
    let last = run.random_bytes(1);
    let fields = creator.write_fields(run, size - 1, &last)?;
    let answer = creator.command(&fields)?;
    if answer.kind != "done" {
        return Err(Fail::failed(format!(
            "writing the last byte of a {size}-byte table (1 byte at offset {}), the program \
             said {}: offset + len may equal the size",
            size - 1,
            said(&answer)
        )));
    }
    let answer = access(run, &mut creator, Op::Read, size - 2, 2)?;
    if answer.kind != "done" {
        return Err(Fail::failed(format!(
            "reading the last 2 bytes of a {size}-byte table (offset {}), the program said {}: \
             offset + len may equal the size",
            size - 2,
            said(&answer)
        )));
    }

    past_the_end(run, &mut creator, Op::Write, size)?;
    let now = object_bytes(&name, size - 1, 1);
    if now.as_deref() != Some(&last[..]) {
        return Err(Fail::failed(format!(
            "a write of 2 bytes at offset {} was refused, but the table's last byte changed in \
             {path}: check the whole range before copying anything",
            size - 1
        )));
    }
    refused_long_write(run, &mut creator, size)?;
    past_the_end(run, &mut creator, Op::Read, size)?;
    // Nothing at the very end: the empty range ends at the size, so it is inside.
    for op in [Op::Write, Op::Read] {
        let answer = access(run, &mut creator, op, size, 0)?;
        if answer.kind != "done" {
            return Err(Fail::failed(format!(
                "{} 0 bytes at offset {size} of a {size}-byte table, the program said {}: \
                 offset + len may equal the size, and here it does",
                capitalized(op.doing()),
                said(&answer)
            )));
        }
    }
    // One past the very end, and far past: 0 bytes there are outside, like any others.
    for op in [Op::Write, Op::Read] {
        for offset in [size + 1, size + 903] {
            let answer = access(run, &mut creator, op, offset, 0)?;
            refused(
                &answer,
                "out-of-range",
                &format!(
                    "{} 0 bytes at offset {offset} of a {size}-byte table (0 bytes at {size} were \
                     accepted)",
                    capitalized(op.doing())
                ),
                "an access of 0 bytes is inside only if it starts at most at the size: offset + \
                 len must not pass the size, whatever len is; do not let an empty access through \
                 before the range check",
            )?;
        }
    }

    creator.unlink()?;
    creator.close()?;
    Ok(
        "size 0, a taken name (an object, a link) and accesses past the end were typed errors \
        that changed nothing; the last byte was the table's"
            .into(),
    )
}

/// Fails unless a create under `name`, where the grader had put a 0-byte object it still holds
/// (`held`), said `exists` and left that object as it was: still linked at the name, 0 bytes.
fn left_alone(answer: &Message, name: &str, held: &std::fs::File) -> Result<(), Fail> {
    let path = dev_shm(name);
    let ours = held.metadata()?;
    let at_name = std::fs::symlink_metadata(&path).ok();
    let replaced = at_name.as_ref().is_some_and(|m| m.ino() != ours.ino());
    let done = if ours.nlink() == 0 {
        if replaced {
            "unlinked that object and created a new one in its place"
        } else {
            "unlinked that object"
        }
    } else if ours.len() != 0 {
        "gave that object a size (it opened it without O_EXCL, or after a look)"
    } else {
        ""
    };
    let told = format!(
        "{} held a 0-byte object the grader had put there (as another creator leaves it \
         between its shm_open() and its ftruncate()); creating a table under that name",
        path.display()
    );
    if !done.is_empty() {
        return Err(Fail::failed(format!(
            "{told}, the program said {} and {done}: a name that exists is `exists`, whatever the size of its object; \
             a 0-byte object is no leftover to reclaim, its creator may be about to size it; a \
             create must not touch an object it did not create",
            said(answer)
        )));
    }
    refused(
        answer,
        "exists",
        &told,
        "use O_CREAT | O_EXCL and map EEXIST to TableError::Exists, whatever the size of the \
         object that has the name",
    )
}

/// A creator of a fresh name, held at the entry of its creating `shm_open()` while the grader
/// puts an object of its own at the name: a second creator of the name that got there in that
/// moment. Only `O_EXCL` answers `exists` then, whatever the program looked at before; and the
/// answer is due at once, so the creator is held again if it starts a sleep before it.
struct Racer {
    proc: Proc,
    tracer: Tracer,
    name: String,
    /// The grader's object, its bytes and its inode; `None` if the program said something
    /// before any creating `openat()`.
    planted: Option<(Planted, Vec<u8>, u64)>,
    /// What it said first, if it spoke before the creating `openat()`.
    early: Option<Message>,
}

/// The calls a pause is made of.
const SLEEPS: &[i64] = &[libc::SYS_nanosleep, libc::SYS_clock_nanosleep];

/// What a creator that does not answer `exists` at once does next: a pause, or the creating
/// `shm_open()` again (a retry, with or without a pause or a busy loop before it).
const PAUSE_OR_RETRY: &[Call] = &[Call::one_of(SLEEPS), creating_open()];

const RACER: &str = "a racing creator";

/// Starts the [`Racer`] and plants the grader's object once it is held; `None` where the
/// grader may not trace it.
fn start_racer(run: &mut Run, name: &str) -> Result<Option<Racer>, Fail> {
    let mut proc = start_stopped(run, name, Some(64), RACER)?;
    let pid = proc.pid.as_raw();
    let steps = [
        (creating_open(), Step::Hold),
        (Call::any_of(PAUSE_OR_RETRY), Step::Hold),
    ];
    let tracer = Tracer::in_turn(pid, steps)?;
    force::resume(pid)?;
    let Some(mut tracer) = tracer else {
        run.note(
            "the grader may not trace a creator here (ptrace): no object was put at a name as \
             its shm_open() began",
        );
        proc.kill_tree();
        return Ok(None);
    };
    let (planted, early) = match tracer.wait(&mut proc, Instant::now() + Duration::from_secs(5))? {
        Reached::Call => {
            let bytes = run.random_bytes(100);
            let object = plant_object(run, name, &bytes)?;
            let inode = std::fs::metadata(dev_shm(name))?.ino();
            tracer.go_on();
            (Some((object, bytes, inode)), None)
        }
        Reached::Passed(said) => (None, said),
    };
    Ok(Some(Racer {
        proc,
        tracer,
        name: name.to_string(),
        planted,
        early,
    }))
}

impl Racer {
    /// Fails unless the creator answered `exists` at once and left the grader's object as it
    /// was.
    fn judge(self) -> Result<(), Fail> {
        let Racer {
            mut proc,
            mut tracer,
            name,
            planted,
            early,
        } = self;
        let what = format!("creating {name}");
        let Some((object, theirs, inode)) = planted else {
            // It said something before any creating open: nothing was raced.
            if early.is_none() {
                await_answer(&mut proc, RACER, &what, None)?;
            }
            return Ok(());
        };
        let told = format!(
            "the grader held a creator of {name} at the entry of its creating shm_open() \
             (openat() with O_CREAT) and put an object of its own there ({} bytes), as a second \
             creator of the name would at that moment",
            theirs.len()
        );
        let pid = proc.pid.as_raw();
        let until = Instant::now() + Duration::from_secs(5);
        let answer = match tracer.wait(&mut proc, until)? {
            Reached::Call => {
                let call = inspect::call_of(pid, pid).map(|(number, _)| number);
                if call == Some(libc::SYS_openat) {
                    // The name is free again as it tries again.
                    drop(object);
                    tracer.release();
                    let answer = await_answer(&mut proc, RACER, &what, None)?;
                    let then = if answer.kind == "mapped" {
                        "the grader removed its object while the creator was held there, and \
                         the creator then said `mapped`: its second try took a name that was \
                         taken when it asked"
                            .to_string()
                    } else {
                        format!("it then said {}", said(&answer))
                    };
                    return Err(Fail::failed(format!(
                        "{told}; the shm_open() found the name taken (EEXIST), and before it \
                         answered, the creator made a creating openat() (O_CREAT) again, where \
                         the grader held it: it tries the create again (a retry loop, with or \
                         without a pause or a spin between the tries) instead of answering; \
                         {then}. EEXIST is kind=exists, at once, with no pause and no second \
                         try"
                    )));
                }
                let call = match call {
                    Some(libc::SYS_nanosleep) => "nanosleep()",
                    _ => "clock_nanosleep()",
                };
                // The name is free again while it sleeps.
                drop(object);
                tracer.release();
                let answer = await_answer(&mut proc, RACER, &what, None)?;
                let then = if answer.kind == "mapped" {
                    "the grader removed its object while the creator was held there, and the \
                     creator then said `mapped`: it tries again after the pause, and takes a \
                     name that was taken when it asked"
                        .to_string()
                } else {
                    format!("it then said {}", said(&answer))
                };
                return Err(Fail::failed(format!(
                    "{told}; the shm_open() found the name taken (EEXIST), and before it \
                     answered, the creator entered {call}, where the grader held it: it pauses \
                     instead of answering at once; {then}. Nothing in this lab waits: EEXIST \
                     is kind=exists, at once, with no pause and no second try"
                )));
            }
            Reached::Passed(Some(answer)) => answer,
            Reached::Passed(None) => await_answer(&mut proc, RACER, &what, None)?,
        };
        drop(tracer);
        let path = dev_shm(&name);
        let now = std::fs::symlink_metadata(&path).ok();
        let same = now.as_ref().is_some_and(|m| m.ino() == inode);
        let kept_bytes = object_bytes(&name, 0, theirs.len()).as_deref() == Some(&theirs[..]);
        let intact =
            same && now.as_ref().is_some_and(|m| m.len() == theirs.len() as u64) && kept_bytes;
        if is_refusal(&answer, "exists") && intact {
            drop(object);
            proc.wait()?;
            return Ok(());
        }
        let done = match &now {
            None => "the grader's object is gone".to_string(),
            Some(_) if !same => "the grader's object is gone, another one has the name".into(),
            Some(m) if m.len() != theirs.len() as u64 => {
                format!("it resized the grader's object to {} bytes", m.len())
            }
            Some(_) if !kept_bytes => "it changed the grader's object's bytes".into(),
            Some(_) => "it maps the grader's object".into(),
        };
        if answer.kind == "mapped" && same {
            return Err(Fail::failed(format!(
                "{told}; the creator then said `mapped`, and {done}: it opened the object that \
                 was there, so its shm_open() has no O_EXCL; whatever it looked at before the \
                 call (lstat(), stat(), an open) was out of date by then: only \
                 shm_open(O_CREAT | O_EXCL) tests and creates in one step, and fails with \
                 EEXIST (kind=exists) here"
            )));
        }
        if is_refusal(&answer, "exists") || answer.kind == "mapped" {
            return Err(Fail::failed(format!(
                "{told}; the creator then said {}, and {done}: a create that finds the name \
                 taken must not touch the object there (no shm_unlink(), no ftruncate())",
                said(&answer)
            )));
        }
        refused(
            &answer,
            "exists",
            &told,
            "shm_open(O_CREAT | O_EXCL) fails with EEXIST, which is TableError::Exists",
        )
    }
}
