//! `open-errors`: names that do not exist, a 0-byte object, a link, a sparse object and one too
//! big to map; open never creates, follows no link, refuses 0 bytes at once and never waits.

use std::time::{Duration, Instant};

use crate::engine::tracer::{Action, Call, Reached, Step, Tracer};
use crate::engine::{Fail, Run, force};

use super::driver::{
    CREATOR, OPENER, await_answer, await_answer_watching, descriptors_at_exit, is_refusal, refused,
    said, start, start_held_at_exit, start_stopped, start_watched,
};
use super::probes::{
    Attributes, attribute_change, attributes, dev_shm, exists, plant_link, plant_object,
    plant_sparse, runnable_ns,
};

pub fn open_errors(run: &mut Run) -> Result<String, Fail> {
    let missing = run.ipc_name("missing");
    let missing_path = dev_shm(&missing).display().to_string();
    // What a creator stopped between shm_open() and ftruncate() leaves: a 0-byte object.
    let empty = run.ipc_name("empty");
    let empty_path = dev_shm(&empty).display().to_string();
    let planted = plant_object(run, &empty, &[])?;
    // Another program's objects may have another mode: an open leaves it, and all else, as it was.
    planted.set_mode(OTHER_MODE)?;
    let empty_before = attributes(&empty).expect("the object just planted");
    // A link to an object: shm_open() refuses it, a program that opens the path maps the object.
    let linked = run.ipc_name("linked");
    let behind = format!("{linked}-behind");
    let behind_bytes = run.random_bytes(64);
    let behind_object = plant_object(run, &behind, &behind_bytes)?;
    let link = plant_link(&linked, &behind)?;
    // An object the program's 4 GiB of address space cannot map: open() fails in mmap(), and
    // must leave it where it is (open never removes anything).
    let vast = run.ipc_name("vast");
    let vast_len = (4u64 << 30) + 4096;
    let vast_object = plant_sparse(run, &vast, vast_len)?;
    vast_object.set_mode(OTHER_MODE)?;
    let vast_before = attributes(&vast).expect("the object just planted");
    // A name refused before any system call: how long starting and answering takes the
    // program, in this run.
    let baseline_name = run.ipc_name("baseline").trim_start_matches('/').to_string();
    // The opens do not depend on each other: they start at once.
    // Held at any waiting call before they answer: both answers are due at once.
    let (mut lost, mut lost_held) = start_watched(run, &missing, None, OPENER)?;
    let (mut hollow, mut hollow_held) = start_watched(run, &empty, None, OPENER)?;
    // A second opener of the 0-byte object, held as it exits (the first is traced already): a
    // refused open must have closed what it opened.
    let (mut hollow_exit, hollow_exit_tracer) = start_held_at_exit(run, &empty, None, OPENER)?;
    let mut through = start(run, &linked, None, OPENER)?;
    let mut baseline = start(run, &baseline_name, None, OPENER)?;
    // Its mmap() made to fail with ENODEV, which that call alone gives there (only the call
    // knows what maps), then held as it exits: a failed open must have closed what it opened.
    let mut unmappable = start_stopped(run, &vast, None, OPENER)?;
    let unmappable_tracer = Tracer::in_turn(
        unmappable.pid.as_raw(),
        [
            (
                Call::mapping_shared(vast_len as usize),
                Step::Fail(libc::ENODEV),
            ),
            (Call::any(libc::SYS_exit_group), Step::Hold),
        ],
    )?;
    force::resume(unmappable.pid.as_raw())?;
    // How long each was runnable, read at every look while the grader waits for any of them
    // (the engine reaps a process soon after it exits).
    let pids = [
        baseline.pid.as_raw(),
        lost.pid.as_raw(),
        hollow.pid.as_raw(),
    ];
    let mut runnable = [0u64; 3];
    let mut look = || {
        for (most, pid) in runnable.iter_mut().zip(pids) {
            *most = (*most).max(runnable_ns(pid));
        }
    };
    let what = "given a name without a slash";
    await_answer_watching(&mut baseline, None, OPENER, what, None, &mut look)?;
    baseline.wait()?;

    let answer = await_answer_watching(
        &mut lost,
        lost_held.as_mut(),
        OPENER,
        &format!("opening {missing}, which does not exist"),
        Some("not-found when shm_open() fails with ENOENT"),
        &mut look,
    )?;
    if exists(&missing) {
        return Err(Fail::failed(format!(
            "opening {missing}, which did not exist, the program said {} and {missing_path} \
             exists now: open() created it; open with O_RDWR alone, no O_CREAT (ENOENT is \
             NotFound)",
            said(&answer)
        )));
    }
    refused(
        &answer,
        "not-found",
        &format!("opening {missing}, which does not exist"),
        "shm_open() fails with ENOENT for a name that does not exist, which is \
         TableError::NotFound",
    )?;
    drop(lost_held);
    lost.wait()?;

    let what = "opening a 0-byte object (as a creator leaves it before its ftruncate())";
    let due = Some("empty when fstat() says 0 bytes");
    let answer = await_answer_watching(
        &mut hollow,
        hollow_held.as_mut(),
        OPENER,
        what,
        due,
        &mut look,
    )?;
    drop(hollow_held);
    if is_refusal(&answer, "not-found") && std::fs::symlink_metadata(&empty_path).is_err() {
        // Two openers of the program were started on it: one of them removed it.
        return Err(Fail::failed(format!(
            "{what}: the program said {}, and the grader's 0-byte object {empty_path} is gone: \
             an open of it (this one, or another opener of the program started beside it) \
             unlinked it; open() must not unlink a name it did not create, and a 0-byte object \
             is TableError::Empty, left as it is",
            said(&answer)
        )));
    }
    refused(&answer, "empty", what, EMPTY_HINT)?;
    let [baseline_ns, lost_ns, hollow_ns] = runnable;
    at_once(
        lost_ns,
        baseline_ns,
        "opening a name that does not exist",
        "not-found",
        "for the name to appear",
    )?;
    at_once(
        hollow_ns,
        baseline_ns,
        "opening a 0-byte object",
        "empty",
        "for the object to be given a size",
    )?;
    match std::fs::metadata(&empty_path).map(|m| m.len()) {
        Ok(0) => {}
        Ok(len) => {
            return Err(Fail::failed(format!(
                "opening the 0-byte object {empty_path} was refused, but it is {len} bytes now: \
                 open() must not size an object; that is the creator's ftruncate()"
            )));
        }
        Err(_) => {
            return Err(Fail::failed(format!(
                "opening the 0-byte object {empty_path} was refused, but the object is gone: \
                 open() must not unlink a name it did not create"
            )));
        }
    }
    hollow.wait()?;
    let what = "opening a 0-byte object again";
    let answer = await_answer(&mut hollow_exit, OPENER, what, Some("empty"))?;
    refused(&answer, "empty", what, EMPTY_HINT)?;
    let kept = descriptors_at_exit(&hollow_exit, hollow_exit_tracer, &empty)?;
    if !kept.is_empty() {
        return Err(Fail::failed(format!(
            "opening {empty}, a 0-byte object, the program said kind=empty, but held as it \
             exits (at its exit_group(), after that answer), it still holds descriptor \
             {kept:?} of {empty_path}: open() does not close the descriptor shm_open() gave it \
             when a later step fails (here the size check: Empty, at an early return); a \
             failed open must release what it opened, on every return (keep it an OwnedFd, \
             dropped when open() returns)"
        )));
    }
    hollow_exit.wait()?;
    left_as_it_was(
        &empty,
        &empty_before,
        "opening a 0-byte object, twice",
        &answer,
    )?;
    drop(planted);

    let what = format!(
        "opening {linked}, a symbolic link the grader put in /dev/shm to the object {behind}"
    );
    let answer = await_answer(&mut through, OPENER, &what, None)?;
    if answer.kind == "mapped" {
        return Err(Fail::failed(format!(
            "{what}, the program mapped the object behind the link: it opened {} as a path, \
             which follows links; shm_open() never follows one (O_NOFOLLOW: ELOOP, \
             kind=shm-open): open the object with shm_open(name, O_RDWR), not by its path",
            dev_shm(&linked).display()
        )));
    }
    refused(
        &answer,
        "shm-open",
        &what,
        "shm_open() refuses a symbolic link (ELOOP), which is TableError::Open",
    )?;
    through.wait()?;
    drop(link);
    drop(behind_object);

    let vast_path = dev_shm(&vast);
    let forced = if unmappable_tracer.is_some() {
        " while the grader fails its mmap() of that size with ENODEV"
    } else {
        ""
    };
    let what = format!(
        "opening {vast}, an object of {vast_len} bytes the grader made (more than the program's \
         4 GiB of address space can map){forced}"
    );
    let answer = await_answer(&mut unmappable, OPENER, &what, None)?;
    left_as_it_was(&vast, &vast_before, &what, &answer)?;
    let mut unmappable_tracer = unmappable_tracer;
    if let Some(tracer) = unmappable_tracer.as_mut()
        && !tracer.failed_the_call()?
    {
        unmappable.kill_tree();
        return Err(Fail::failed(format!(
            "{what}: the opener made no mmap(MAP_SHARED) of {vast_len} bytes on its main thread \
             before it said {}: whether a size can be mapped is mmap()'s to say, not a limit of \
             the program's own (the address space it assumes); open() maps the size fstat() \
             gave, and TableError::Map carries mmap()'s own errno",
            said(&answer)
        )));
    }
    refused(
        &answer,
        "mmap",
        &what,
        "fstat() gives its size, mmap() of that size fails: TableError::Map",
    )?;
    if unmappable_tracer.is_some() {
        super::forced::refused_with(&answer, "mmap", libc::ENODEV, &what, "Map")?;
    }
    let kept = descriptors_at_exit(&unmappable, unmappable_tracer, &vast)?;
    if !kept.is_empty() {
        return Err(Fail::failed(format!(
            "{what}, the program said kind=mmap, but held as it exits (at its exit_group(), \
             after that answer), it still holds descriptor {kept:?} of {}: open() does not \
             close the descriptor shm_open() gave it when a later step (fstat(), mmap()) \
             fails; a failed open must release what it opened, on every return (keep it an \
             OwnedFd, dropped when open() returns)",
            vast_path.display()
        )));
    }
    unmappable.wait()?;
    drop(vast_object);
    size_looked_at_once(run)?;
    beside_a_held_creator(run)?;
    failed_fstat(run)?;
    refused_open(run)?;
    missing_opened_once(run)?;
    super::left_alone::open_keeps_the_object(run)?;
    super::by_hand::empty_refused_by_hand(run)?;
    super::left_alone::foreign_descriptors_kept(run)?;
    Ok(
        "a name that does not exist was not-found and stayed so; a 0-byte object was empty, \
        both at once, also when it was sized right after the opener's fstat(); a link in \
        /dev/shm was not followed; an object too big to map was mmap, and stayed; another \
        program's object kept its mode; run by hand, the opener refused a 0-byte object too; \
        descriptors in /dev/shm that were not the table's stayed open"
            .into(),
    )
}

/// The mode of the objects the grader makes for openers to refuse: another program's, group
/// readable, not the 600 a table of this lab's gets.
const OTHER_MODE: u32 = 0o640;

/// Fails unless the object `name` is as it was `before` once `what` was answered.
fn left_as_it_was(
    name: &str,
    before: &Attributes,
    what: &str,
    answer: &ipc_labs_driver::Message,
) -> Result<(), Fail> {
    match attribute_change(before, attributes(name).as_ref()) {
        None => Ok(()),
        Some(change) => Err(Fail::failed(format!(
            "{what} ({}, mode {:o}, made by the grader), the program said {}, and {change}: \
             open() never removes or changes an object, whoever made it and whatever its mode, \
             even when it refuses or cannot map it (only create() unlinks, the name it has just \
             made, when a later step fails)",
            dev_shm(name).display(),
            OTHER_MODE,
            said(answer)
        ))),
    }
}

/// A page: the size the grader gives an object behind an opener's back.
const PAGE: usize = 4096;

/// The calls that read a descriptor's size: `fstat()`, and what glibc and Rust's `std` make
/// of it.
const STATS: &[i64] = &[libc::SYS_fstat, libc::SYS_newfstatat, libc::SYS_statx];

/// An opener of a 0-byte object, traced from its start: after its `shm_open()` (the `openat()`
/// of the object's path), it must make an `fstat()`-like call before it answers (the size comes
/// from `fstat()`); held right after that call returned 0 bytes, while the grader gives the
/// object a size (as a creator's `ftruncate()` racing with it would), it must still say
/// `empty`: 0 bytes is `Empty` at once, with no second look, however short.
fn size_looked_at_once(run: &mut Run) -> Result<(), Fail> {
    let name = run.ipc_name("late");
    let path = dev_shm(&name);
    let planted = plant_object(run, &name, &[])?;
    let mut proc = start_stopped(run, &name, None, OPENER)?;
    let pid = proc.pid.as_raw();
    let opening = Call::opening(&path);
    let tracer = Tracer::in_turn(
        pid,
        [
            (opening, Step::Hold),
            (Call::one_of(STATS), Step::HoldAfter),
        ],
    )?;
    force::resume(pid)?;
    let Some(mut tracer) = tracer else {
        run.note(
            "the grader may not trace the opener here (ptrace): an object sized right after its \
             fstat() was not tried",
        );
        proc.kill_tree();
        return Ok(());
    };
    let what = format!("opening {name}, a 0-byte object");
    let deadline = Instant::now() + Duration::from_secs(5);
    if tracer.wait(&mut proc, deadline)? != Reached::Call {
        // No shm_open() of the path on its main thread: the checks before judged how it opens.
        drop(tracer);
        proc.kill_tree();
        return Ok(());
    }
    tracer.go_on();
    let answer = match tracer.wait(&mut proc, deadline)? {
        Reached::Call => {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)?
                .set_len(PAGE as u64)?;
            tracer.release();
            await_answer(&mut proc, OPENER, &what, Some("empty"))?
        }
        Reached::Passed(said_first) => {
            drop(tracer);
            let answer = match said_first {
                Some(answer) => answer,
                None => await_answer(&mut proc, OPENER, &what, Some("empty"))?,
            };
            return Err(Fail::failed(format!(
                "{what}, the opener said {} without any fstat() of its descriptor after its \
                 shm_open() (the grader traced it: no fstat(), newfstatat() or statx()): it took \
                 the size another way (lseek(fd, 0, SEEK_END)?); the size comes from fstat() of \
                 the descriptor shm_open() returned",
                said(&answer)
            )));
        }
    };
    if answer.kind == "mapped" {
        return Err(Fail::failed(format!(
            "{what}, the opener was held right after its fstat() returned (0 bytes), while the \
             grader gave the object {PAGE} bytes, as a creator's ftruncate() racing with it \
             would; it then said `mapped`: after fstat() said 0 it looked at the size again (a \
             retry or a wait for the size, however short, or a second fstat() for the mapping); \
             0 bytes is `empty` at once: one fstat(), then the answer"
        )));
    }
    refused(
        &answer,
        "empty",
        &format!("{what}, held right after its fstat() returned while the grader sized it"),
        "fstat() said 0 bytes: return TableError::Empty at once",
    )?;
    proc.wait()?;
    drop(planted);
    Ok(())
}

/// What a 0-byte object's opener must answer, and why.
const EMPTY_HINT: &str =
    "fstat() says 0 bytes: return TableError::Empty (mmap() cannot map nothing)";

/// Far longer runnable than starting and answering takes: what a loop adds that does not
/// sleep (a 10 ms wait seen asleep is caught by the looks of `await_answer`).
const BUSY_NS: u64 = 150_000_000;

/// Fails if an opener that answered `kind` was runnable (`spent`) far longer than the program
/// that answered a bad name at once (`baseline_ns`, started with it): it looped before
/// answering, as if waiting for what `awaited` names.
fn at_once(
    spent: u64,
    baseline_ns: u64,
    what: &str,
    kind: &str,
    awaited: &str,
) -> Result<(), Fail> {
    // A baseline gone before the grader's first look was not measured: nothing to compare with
    // (a loaded machine may keep the opener waiting for a CPU that long).
    if baseline_ns == 0 || spent <= baseline_ns + BUSY_NS || spent <= 2 * baseline_ns {
        return Ok(());
    }
    Err(Fail::failed(format!(
        "{what}, the opener answered kind={kind}, but only after {} ms runnable (on a CPU or \
         waiting for one, never asleep), where a run started with it that refused a bad name \
         took {} ms: it loops (busy-waits) before it answers, as if waiting {awaited}; \
         nothing in this lab waits: one shm_open() and one fstat(), then the answer",
        spent / 1_000_000,
        baseline_ns / 1_000_000
    )))
}

/// An opener of an object whose creator the grader holds at the entry of its `ftruncate()`
/// (created, still 0 bytes, its descriptor open): the opener must say `empty` at once; nothing
/// the creator holds (a lock on the object, say) may make it wait for the size. Then, the
/// creator held as that call returns (sized, not yet mapped), another opener must map the
/// object at its size: the size, as `fstat()` gives it, alone decides.
fn beside_a_held_creator(run: &mut Run) -> Result<(), Fail> {
    let name = run.ipc_name("sizing");
    let path = dev_shm(&name);
    let mut creator = start_stopped(run, &name, Some(PAGE), CREATOR)?;
    let pid = creator.pid.as_raw();
    let tracer = Tracer::attach(pid, Call::any(libc::SYS_ftruncate), Action::HoldAround)?;
    force::resume(pid)?;
    let Some(mut tracer) = tracer else {
        creator.kill_tree();
        return Ok(());
    };
    let until = Instant::now() + Duration::from_secs(5);
    let held = matches!(tracer.wait(&mut creator, until), Ok(Reached::Call)) && exists(&name);
    if !held {
        // It made no ftruncate() before it answered: failed-create says what that means.
        drop(tracer);
        creator.kill_tree();
        let _ = std::fs::remove_file(&path);
        return Ok(());
    }
    let what = format!(
        "opening {}, a 0-byte object whose creator the grader holds at the entry of its \
         ftruncate() (between its shm_open() and the call that sizes it)",
        path.display()
    );
    let (mut opener, mut opener_held) = start_watched(run, &name, None, OPENER)?;
    let answer = await_answer_watching(
        &mut opener,
        opener_held.as_mut(),
        OPENER,
        &what,
        Some("empty when fstat() says 0 bytes, whatever its creator is doing"),
        &mut || {},
    );
    drop(opener_held);
    let checked = answer.and_then(|answer| {
        refused(&answer, "empty", &what, EMPTY_HINT)?;
        opener.wait()?;
        Ok(())
    });
    let checked = checked.and_then(|()| {
        tracer.go_on();
        let until = Instant::now() + Duration::from_secs(5);
        match tracer.wait(&mut creator, until)? {
            Reached::Call => opened_beside_a_sized_creator(run, &name),
            Reached::Passed(_) => Ok(()),
        }
    });
    tracer.release();
    if let Err(fail) = checked {
        opener.kill_tree();
        creator.kill_tree();
        let _ = std::fs::remove_file(&path);
        return Err(fail);
    }
    let first = await_answer(&mut creator, CREATOR, &format!("creating {name:.60}"), None)?;
    let mut creator = super::driver::mapped(creator, first, &name, CREATOR)?;
    creator.unlink()?;
    creator.close()
}

/// An opener of `name`, a page-sized object whose creator the grader holds right after its
/// `ftruncate()` returned: `mapped`, at that size.
fn opened_beside_a_sized_creator(run: &mut Run, name: &str) -> Result<(), Fail> {
    let what = format!(
        "opening {}, a {PAGE}-byte object (fstat() says so) whose creator the grader holds \
         right after its ftruncate() returned (sized, not yet mapped, its descriptor still \
         open)",
        dev_shm(name).display()
    );
    let (mut opener, mut opener_held) = start_watched(run, name, None, OPENER)?;
    let answer = await_answer_watching(
        &mut opener,
        opener_held.as_mut(),
        OPENER,
        &what,
        Some("mapped: the object has its size"),
        &mut || {},
    )?;
    drop(opener_held);
    if answer.kind != "mapped" {
        opener.kill_tree();
        return Err(Fail::failed(format!(
            "{what}, the opener said {}, not `mapped`: the object's size, as fstat() gives it, \
             alone decides (0 bytes is empty, anything else is mapped); nothing its creator \
             holds or has yet to do (a lock on the object, its mmap()) makes a sized object \
             empty or unopenable",
            said(&answer)
        )));
    }
    let opened = super::driver::mapped(opener, answer, name, OPENER)?;
    if opened.len != PAGE {
        return Err(Fail::failed(format!(
            "{what}, the opener reported len={}, not {PAGE}: the size is fstat()'s",
            opened.len
        )));
    }
    opened.close()
}

/// An opener of a sized object whose `fstat()` (the first after its `shm_open()` of the
/// object's path) the grader makes fail with `EIO`, which `fstat()` of a `/dev/shm` object
/// never returns otherwise: the answer is `fstat`, and the object stays as it was.
fn failed_fstat(run: &mut Run) -> Result<(), Fail> {
    let name = run.ipc_name("unstated");
    let path = dev_shm(&name);
    let bytes = run.random_bytes(64);
    let planted = plant_object(run, &name, &bytes)?;
    let mut proc = start_stopped(run, &name, None, OPENER)?;
    let pid = proc.pid.as_raw();
    // Held as its shm_open() returns, then traced afresh: its next stat fails, and it is held
    // again as it exits, to see what it still holds.
    let opened = Tracer::attach(pid, Call::opening(&path), Action::HoldAfter)?;
    force::resume(pid)?;
    let Some(mut opened) = opened else {
        proc.kill_tree();
        return Ok(());
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    if opened.wait(&mut proc, deadline)? != Reached::Call {
        drop(opened);
        proc.kill_tree();
        return Ok(());
    }
    opened.release_stopped(pid)?;
    let exiting = (Call::any(libc::SYS_exit_group), Step::Hold);
    let tracer = Tracer::in_turn(pid, [(Call::one_of(STATS), Step::Fail(libc::EIO)), exiting])?;
    force::resume(pid)?;
    let Some(mut tracer) = tracer else {
        proc.kill_tree();
        return Ok(());
    };
    let what = format!(
        "opening {}, a 64-byte object, while the grader fails the opener's fstat() after its \
         shm_open() with EIO (which nothing else returns there)",
        path.display()
    );
    let answer = await_answer(&mut proc, OPENER, &what, Some("fstat"))?;
    let failed = tracer.failed_before(Instant::now() + Duration::from_millis(10))?;
    let kept = if failed {
        descriptors_at_exit(&proc, Some(tracer), &name)?
    } else {
        drop(tracer);
        Vec::new()
    };
    if failed {
        refused(
            &answer,
            "fstat",
            &what,
            "the size comes from fstat() of the descriptor, and its failure is \
             TableError::Stat (kind=fstat), not another kind nor a guess of the size",
        )?;
        super::forced::refused_with(&answer, "fstat", libc::EIO, &what, "Stat")?;
    }
    if !kept.is_empty() {
        return Err(Fail::failed(format!(
            "{what}: it said kind=fstat, but held as it exits (at its exit_group(), after that \
             answer) it still holds descriptor {kept:?} of {}: open() does not close the \
             descriptor shm_open() gave it when fstat() fails; a failed open releases what it \
             opened, on every return (keep it an OwnedFd, dropped when open() returns)",
            path.display()
        )));
    }
    let intact = std::fs::symlink_metadata(&path).is_ok_and(|meta| meta.len() == 64);
    if !intact {
        return Err(Fail::failed(format!(
            "{what}: the opener said {}, but the object is no longer there at 64 bytes: a \
             failed open leaves the object as it was",
            said(&answer)
        )));
    }
    drop(planted);
    proc.wait()?;
    Ok(())
}

/// An opener of a 64-byte object whose `shm_open()` the grader fails with `EACCES` (what an
/// object of another user, mode 600, gives): only `ENOENT` is `not-found`; any other failure of
/// `shm_open()` is `shm-open` with its errno, and the object stays.
fn refused_open(run: &mut Run) -> Result<(), Fail> {
    let name = run.ipc_name("forbidden");
    let path = dev_shm(&name);
    let planted = plant_object(run, &name, &[9u8; 64])?;
    let mut proc = start_stopped(run, &name, None, OPENER)?;
    let pid = proc.pid.as_raw();
    let tracer = Tracer::attach(pid, Call::opening(&path), Action::Fail(libc::EACCES))?;
    force::resume(pid)?;
    let Some(mut tracer) = tracer else {
        proc.kill_tree();
        return Ok(());
    };
    let what = format!(
        "opening {}, a 64-byte object, while the grader fails the opener's shm_open() with \
         EACCES (as for an object of another user)",
        path.display()
    );
    let answer = await_answer(&mut proc, OPENER, &what, Some("shm-open"))?;
    let failed = tracer.failed_the_call()?;
    drop(tracer);
    if !failed {
        proc.kill_tree();
        return Err(no_open_of(&what, &path, &answer));
    }
    if is_refusal(&answer, "not-found") {
        return Err(Fail::failed(format!(
            "{what}: it said {}, but the object exists: shm_open() refused it with EACCES (a \
             permission), not ENOENT; only ENOENT is TableError::NotFound (kind=not-found), \
             every other errno of shm_open() is TableError::Open(errno) (kind=shm-open)",
            said(&answer)
        )));
    }
    if answer.kind == "mapped" {
        let mapping = super::probes::table_mapping(pid, &name);
        proc.kill_tree();
        let how = match mapping {
            Some(m) if !m.perms.starts_with("rw") => format!(
                "after its shm_open() (O_RDWR) failed, it opened the name again and mapped the \
                 object {} ({} in /proc/{pid}/maps): a fallback to O_RDONLY and PROT_READ, so \
                 the first write to the table kills the program (SIGSEGV) and the caller never \
                 learns that it may not write it",
                if m.perms.starts_with("r-") {
                    "read-only"
                } else {
                    "without write access"
                },
                m.perms
            ),
            Some(_) => "after its shm_open() failed, it opened the object another way and \
                        mapped it anyway"
                .to_string(),
            None => "it maps no such object".to_string(),
        };
        return Err(Fail::failed(format!(
            "{what}: the program said `mapped`, not `failed` with kind=shm-open: {how}; open() \
             is shm_open(O_RDWR) and mmap(PROT_READ | PROT_WRITE), and when shm_open() fails \
             it answers TableError::Open(errno) (kind=shm-open), with no second try"
        )));
    }
    super::forced::refused_with(&answer, "shm-open", libc::EACCES, &what, "Open")?;
    let intact = std::fs::symlink_metadata(&path).is_ok_and(|meta| meta.len() == 64);
    drop(planted);
    if !intact {
        return Err(Fail::failed(format!(
            "{what}: the opener said {}, but the object is no longer there at 64 bytes: a \
             failed open leaves the object as it was",
            said(&answer)
        )));
    }
    proc.wait()?;
    Ok(())
}

/// An opener of a name that does not exist, traced from its start: its first `shm_open()` of
/// the name says `ENOENT` (the grader's answer, as the kernel's), and it answers `not-found`
/// with no second one: no retry, no waiting for the name to appear.
fn missing_opened_once(run: &mut Run) -> Result<(), Fail> {
    let name = run.ipc_name("absent");
    let path = dev_shm(&name);
    let mut proc = start_stopped(run, &name, None, OPENER)?;
    let pid = proc.pid.as_raw();
    let tracer = Tracer::fail_times(pid, Call::opening(&path), libc::ENOENT, 2)?;
    force::resume(pid)?;
    let Some(tracer) = tracer else {
        proc.kill_tree();
        return Ok(());
    };
    let what = format!("opening {}, which does not exist", path.display());
    let answer = await_answer(&mut proc, OPENER, &what, Some("not-found"));
    let count = tracer.failed_count(Instant::now() + Duration::from_millis(200))?;
    let answer = answer?;
    if count >= 2 {
        proc.kill_tree();
        return Err(Fail::failed(format!(
            "{what}: its shm_open() said ENOENT, and before it answered ({}) the opener opened \
             the name again (the grader, which traced it, saw a second openat() of {}): it \
             retries a missing name, waiting in a loop for the name to appear; ENOENT is \
             TableError::NotFound at once, after one shm_open() (no call of this lab waits)",
            said(&answer),
            path.display()
        )));
    }
    if count == 0 {
        proc.kill_tree();
        return Err(no_open_of(&what, &path, &answer));
    }
    refused(
        &answer,
        "not-found",
        &what,
        "shm_open()'s ENOENT is TableError::NotFound (kind=not-found)",
    )?;
    proc.wait()?;
    Ok(())
}

/// The opener answered (`answer`) without opening `path` on its main thread.
fn no_open_of(what: &str, path: &std::path::Path, answer: &ipc_labs_driver::Message) -> Fail {
    Fail::failed(format!(
        "{what}: the opener made no openat() of {} on its main thread before it said {}: open() \
         opens the object with shm_open(name, O_RDWR)",
        path.display(),
        said(answer)
    ))
}
