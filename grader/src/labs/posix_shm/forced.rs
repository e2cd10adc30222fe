//! Calls of the lab made to fail by the tracer, each with an errno no other path gives it there:
//! the answer must carry the step's kind and that very errno (the call's own, not one the
//! program assumes), and a failed create must leave no name and no descriptor.

use std::time::{Duration, Instant};

use nix::errno::Errno;

use crate::engine::tracer::{Action, Call, Reached, Step, Tracer};
use crate::engine::{Fail, Run, force, inspect};

use super::driver::{CREATOR, await_answer, is_refusal, refused, said, start_stopped, table};
use super::probes::{dev_shm, exists, mappings};

/// Fails unless `answer` is `failed` with `kind` and its error names `errno`, the errno the
/// grader gave the step's call.
pub fn refused_with(
    answer: &ipc_labs_driver::Message,
    kind: &str,
    errno: i32,
    what: &str,
    variant: &str,
) -> Result<(), Fail> {
    refused(
        answer,
        kind,
        what,
        &format!("the step that failed is the one to report: TableError::{variant}, kind={kind}"),
    )?;
    let errno = Errno::from_raw(errno);
    if answer
        .get("error")
        .unwrap_or("")
        .contains(&format!("{errno:?}"))
    {
        return Ok(());
    }
    Err(Fail::failed(format!(
        "{what}: the program said {}: the kind is right, but the error does not carry {errno:?}, \
         which the call returned (the grader made it fail with that errno, which no other path \
         gives there): TableError::{variant} carries the errno of the failed call, read right \
         after it, not one the program assumes",
        said(answer)
    )))
}

/// One create whose call the grader fails: what it is, the size, the call, the errno.
struct Forced {
    tag: &'static str,
    size: usize,
    step: &'static str,
    errno: i32,
    kind: &'static str,
    variant: &'static str,
    /// An object of the grader's own is at the name already.
    taken: bool,
    /// Why it matters that the call was made, when it was not.
    unmade: &'static str,
}

/// The calls of [`failed_creator_calls`]: each site with an errno no other path gives there,
/// other than the one another check forces at it (`EFBIG` for `ftruncate()`), and at the edges
/// of sizes: a size of exactly `i64::MAX` (an `off_t`: `ftruncate()` must be asked), and 4 GiB
/// less a page (`mmap()` must be asked: only the call knows what can be mapped).
const FORCED: [Forced; 7] = [
    Forced {
        tag: "opening",
        size: 12_288,
        step: "shm_open() with O_CREAT",
        errno: libc::ENOSPC,
        kind: "shm-open",
        variant: "Open",
        taken: false,
        unmade: "a table is created with shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600)",
    },
    Forced {
        tag: "opening-taken",
        size: 12_288,
        step: "shm_open() with O_CREAT, under a name the grader's object has,",
        errno: libc::ENOSPC,
        kind: "shm-open",
        variant: "Open",
        taken: true,
        unmade: "the name was taken, but `exists` is shm_open()'s answer (EEXIST), not a look \
                 at /dev/shm/NAME (lstat(), access(), Path::exists()) made instead of it: \
                 create() always calls shm_open(O_CREAT | O_EXCL), and answers from its errno \
                 (here the grader's ENOSPC: shm-open)",
    },
    Forced {
        tag: "opening-denied",
        size: 12_288,
        step: "shm_open() with O_CREAT, under a name nothing has,",
        errno: libc::EACCES,
        kind: "shm-open",
        variant: "Open",
        taken: false,
        unmade: "a table is created with shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600)",
    },
    Forced {
        tag: "mapping",
        size: 12_288,
        step: "mmap()",
        errno: libc::ENODEV,
        kind: "mmap",
        variant: "Map",
        taken: false,
        unmade: "a table is sized with ftruncate() and mapped with mmap(MAP_SHARED) of its \
                 whole size",
    },
    Forced {
        tag: "mapping-vast",
        size: (4 << 30) - 4096,
        step: "mmap() (of 4 GiB less a page)",
        errno: libc::ENODEV,
        kind: "mmap",
        variant: "Map",
        taken: false,
        unmade: "whether a size can be mapped is mmap()'s to say: a size limit of the \
                 program's own (the address space it assumes) answers for the call; the table \
                 is mapped with mmap(MAP_SHARED) of its whole size, whatever that is, and \
                 TableError::Map carries mmap()'s own errno",
    },
    Forced {
        tag: "mapping-past-u32",
        size: 1 << 32,
        step: "mmap() (of 2^32 bytes, one past u32::MAX)",
        errno: libc::ENODEV,
        kind: "mmap",
        variant: "Map",
        taken: false,
        unmade: "whether a size can be mapped is mmap()'s to say, also past 4 GiB: a size limit \
                 of the program's own (u32::MAX, the address space it assumes) answers for the \
                 call; the table is mapped with mmap(MAP_SHARED) of its whole size, whatever \
                 that is, and TableError::Map carries mmap()'s own errno",
    },
    Forced {
        tag: "sizing-edge",
        size: i64::MAX as usize,
        step: "ftruncate() (to exactly i64::MAX bytes)",
        errno: libc::EPERM,
        kind: "ftruncate",
        variant: "Truncate",
        taken: false,
        unmade: "i64::MAX is a valid off_t (on tmpfs ftruncate() to it even succeeds): only a \
                 size past i64::MAX may be refused without the call (i64::try_from(size)); the \
                 bound is off by one",
    },
];

/// Creators whose creating `shm_open()` ([`FORCED`]), `ftruncate()` or `mmap()` the grader
/// fails: each says its step's kind with that errno, leaves no name, and holds no descriptor
/// of the object as it exits. `false` where the grader may not trace.
pub fn failed_creator_calls(run: &mut Run) -> Result<bool, Fail> {
    for case in &FORCED {
        let (size, errno, kind) = (case.size, case.errno, case.kind);
        let name = run.ipc_name(&format!("forced-{}", case.tag));
        let call = match case.variant {
            "Open" => Call::opening(&dev_shm(&name)),
            "Truncate" => Call::any(libc::SYS_ftruncate),
            _ => Call::mapping_shared(size),
        };
        let planted = if case.taken {
            Some(super::probes::plant_object(run, &name, &[7u8; 64])?)
        } else {
            None
        };
        let mut proc = start_stopped(run, &name, Some(size), CREATOR)?;
        let pid = proc.pid.as_raw();
        // A failed mmap() comes after the object was sized, when others may map it already:
        // held at any ftruncate() of its clean-up too, before its exit.
        let exiting = if case.variant == "Map" {
            Call::any_of(RESIZED_OR_EXITING)
        } else {
            Call::any(libc::SYS_exit_group)
        };
        let tracer = Tracer::in_turn(pid, [(call, Step::Fail(errno)), (exiting, Step::Hold)])?;
        force::resume(pid)?;
        let Some(mut tracer) = tracer else {
            proc.kill_tree();
            return Ok(false);
        };
        let what = format!(
            "creating a {size}-byte table while the grader fails its {} with {:?}",
            case.step,
            Errno::from_raw(errno)
        );
        // Held at an ftruncate() of its clean-up, a creator whose mmap() failed answers only
        // once the grader has seen it there.
        let (answer, failed, held_at_exit) = if case.variant == "Map" {
            answer_unless_resized(&mut tracer, &mut proc, &what)
        } else {
            (
                await_answer(&mut proc, CREATOR, &what, Some(kind)),
                None,
                false,
            )
        };
        let left = !case.taken && exists(&name);
        let intact = !case.taken
            || std::fs::symlink_metadata(dev_shm(&name)).is_ok_and(|meta| meta.len() == 64);
        drop(planted);
        let _ = std::fs::remove_file(dev_shm(&name));
        let answer = answer?;
        let failed = match failed {
            Some(failed) => failed,
            None => tracer.failed_the_call()?,
        };
        if !failed {
            // An mmap() of another length than the table's is not the one the grader failed.
            let mapped_len = super::probes::table_mapping(pid, &name)
                .map(|m| m.end - m.start)
                .filter(|&len| case.variant == "Map" && len != size.next_multiple_of(4096) as u64);
            proc.kill_tree();
            if let Some(len) = mapped_len {
                return Err(Fail::failed(format!(
                    "{what}: the grader failed only an mmap(MAP_SHARED) of exactly {size} \
                     bytes, the table's size, and the creator said {}, having mapped {len} \
                     bytes of the object (its /proc/{pid}/maps): its mmap() asks for another \
                     length than the table's size; map exactly the table's size (a {size}-byte \
                     object is whole pages already: a page more maps past its end)",
                    said(&answer)
                )));
            }
            return Err(Fail::failed(format!(
                "{what}: the creator made no such call on its main thread before it said {}: \
                 {}",
                said(&answer),
                case.unmade
            )));
        }
        if case.variant == "Open" && !case.taken && is_refusal(&answer, "exists") {
            proc.kill_tree();
            return Err(Fail::failed(format!(
                "{what}: the program said kind=exists, but nothing had the name: only EEXIST \
                 is TableError::Exists; shm_open()'s other errors, {:?} included, are \
                 TableError::Open (kind=shm-open) with that errno",
                Errno::from_raw(errno)
            )));
        }
        refused_with(&answer, kind, errno, &what, case.variant)?;
        if !intact && case.variant == "Open" {
            proc.kill_tree();
            let gone = !dev_shm(&name).exists();
            return Err(Fail::failed(format!(
                "{what}: it said kind={kind} with the errno, but {} (the grader's object) {}: \
                 the create's clean-up ran although its own shm_open() had failed, so it \
                 removed another program's object (a clean-up that unlinks the name for every \
                 error but Exists, say); the clean-up is for the steps after shm_open() only: \
                 one whose shm_open() failed made nothing to remove",
                dev_shm(&name).display(),
                if gone {
                    "is gone"
                } else {
                    "is no longer there as it was"
                }
            )));
        }
        if left || !intact {
            proc.kill_tree();
            return Err(Fail::failed(format!(
                "{what}: it said kind={kind} with the errno, but {} {}: a create that fails \
                 after its shm_open() unlinks the name before it returns (a failed create \
                 leaves nothing), and one whose shm_open() failed made nothing to remove",
                dev_shm(&name).display(),
                if left {
                    "was left behind"
                } else {
                    "(the grader's object) is no longer there as it was"
                }
            )));
        }
        let (kept, umask) = if held_at_exit {
            let fds = super::probes::object_fds(pid, &name);
            let umask = inspect::umask(pid);
            tracer.release();
            (fds, umask)
        } else {
            super::left_alone::held_at_exit(&proc, tracer, &name)?
        };
        if !kept.is_empty() {
            return Err(Fail::failed(format!(
                "{what}: it said kind={kind} and removed the name, but held as it exits it \
                 still holds descriptor {kept:?} of {} (deleted): the descriptor shm_open() \
                 gave it is not closed when a later step fails (keep it an OwnedFd, dropped \
                 when create() returns)",
                dev_shm(&name).display()
            )));
        }
        super::left_alone::umask_kept_on_failure(&what, kind, umask)?;
        proc.wait()?;
    }
    past_off_t_refused_before_the_call(run)?;
    Ok(true)
}

/// A create of 2^63 bytes, one past `i64::MAX`, whose `ftruncate()` the grader would fail with
/// `EPERM`: no `off_t` holds the size, so it is refused before any `ftruncate()` (a size cast
/// with `as i64` wraps to a negative length, which the call refuses with `EINVAL`).
fn past_off_t_refused_before_the_call(run: &mut Run) -> Result<(), Fail> {
    let name = run.ipc_name("forced-past-off-t");
    let size = 1usize << 63;
    let mut proc = start_stopped(run, &name, Some(size), CREATOR)?;
    let pid = proc.pid.as_raw();
    let tracer = Tracer::attach(
        pid,
        Call::any(libc::SYS_ftruncate),
        Action::Fail(libc::EPERM),
    )?;
    force::resume(pid)?;
    let Some(mut tracer) = tracer else {
        proc.kill_tree();
        return Ok(());
    };
    let what = "creating a table of 2^63 bytes (one past i64::MAX) while the grader would fail \
                its ftruncate() with EPERM";
    let answer = await_answer(&mut proc, CREATOR, what, Some("ftruncate"));
    let called = tracer.failed_the_call()?;
    drop(tracer);
    let _ = std::fs::remove_file(dev_shm(&name));
    let answer = answer?;
    if called {
        proc.kill_tree();
        return Err(Fail::failed(format!(
            "{what}: the creator called ftruncate() (the grader failed it) before it said {}: \
             2^63 is no off_t, and a size cast with `as i64` wraps to a negative length, which \
             ftruncate() refuses with EINVAL; a size past i64::MAX is refused before the call \
             (i64::try_from(size), TableError::Truncate)",
            said(&answer)
        )));
    }
    refused(
        &answer,
        "ftruncate",
        what,
        "a size past i64::MAX is TableError::Truncate, refused before ftruncate()",
    )?;
    proc.wait()?;
    Ok(())
}

/// A creator's `ftruncate()` or its `exit_group()`, whichever comes first.
const RESIZED_OR_EXITING: &[Call] = &[
    Call::any(libc::SYS_ftruncate),
    Call::any(libc::SYS_exit_group),
];

/// The answer of a creator whose `mmap()` the grader fails, traced by `tracer` to be held at
/// its next `ftruncate()` or `exit_group()`; whether the call was failed (read on the way); and
/// whether it is held at its `exit_group()` already. A failure if it is held at an
/// `ftruncate()` before it answers, in its clean-up: the sized object may be mapped by others
/// by then.
fn answer_unless_resized(
    tracer: &mut Tracer,
    proc: &mut crate::engine::Proc,
    what: &str,
) -> (Result<ipc_labs_driver::Message, Fail>, Option<bool>, bool) {
    let pid = proc.pid.as_raw();
    let until = Instant::now() + Duration::from_secs(5);
    let (mut failed, mut answer) = (false, None);
    // The tracer reports the failure, then the hold; the answer comes between them, or after
    // a hold at an ftruncate().
    while Instant::now() < until {
        if answer.is_none() {
            match proc.recv_before(Instant::now() + Duration::from_millis(2)) {
                Ok(Some(message)) => answer = Some(message),
                Ok(None) => {}
                Err(fail) => return (Err(fail), Some(failed), false),
            }
        }
        let soon = Instant::now() + Duration::from_millis(2);
        if !failed {
            // Reported before the program goes on, so before any answer.
            failed = match tracer.failed_before(soon) {
                Ok(failed) => failed,
                Err(fail) => return (Err(fail), Some(false), false),
            };
            if !failed && answer.is_some() {
                break;
            }
            continue;
        }
        match tracer.held_before(soon) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(fail) => return (Err(fail), Some(failed), false),
        }
        let Some((libc::SYS_ftruncate, args)) = crate::engine::inspect::call_of(pid, pid) else {
            let answer = match answer {
                Some(answer) => Ok(answer),
                None => await_answer(proc, CREATOR, what, None),
            };
            return (answer, Some(failed), true);
        };
        proc.kill_tree();
        let before = if answer.is_some() { "after" } else { "before" };
        let fail = Fail::failed(format!(
            "{what}: after that failure, {before} it answered, the creator called ftruncate() \
             of its object to {} bytes (the grader held it there): its clean-up resizes the \
             object before it unlinks the name, while an opener may map it already (sized, at \
             the name): pages past the new end raise SIGBUS at that opener's next access; the \
             clean-up is shm_unlink() of the name and closing the descriptor, nothing more (the \
             memory goes with the last mapping)",
            args[1] as i64
        ));
        return (Err(fail), Some(failed), false);
    }
    let answer = match answer {
        Some(answer) => Ok(answer),
        None => await_answer(proc, CREATOR, what, None),
    };
    (answer, Some(failed), false)
}

/// A created table of [`WHOLE_PAGES`] and its mapping's start.
fn mapped_table(run: &mut Run, tag: &str) -> Result<Option<(super::driver::Table, u64)>, Fail> {
    let name = run.ipc_name(tag);
    let table = table(run, &name, Some(WHOLE_PAGES), CREATOR)?;
    let Some(start) = mappings(table.pid())
        .into_iter()
        .find(|m| m.path == dev_shm(&name).display().to_string())
        .map(|m| m.start)
    else {
        table.proc.kill_tree();
        let _ = std::fs::remove_file(dev_shm(&name));
        return Ok(None);
    };
    Ok(Some((table, start)))
}

/// The `munmap()` of the mapping at `start`.
fn unmapping(start: u64) -> Call {
    Call::bits(libc::SYS_munmap, 0, u64::MAX, start)
}

/// The tables of [`failed_unmap`] and [`unmapped_length`]: three pages exactly, where a length
/// rounded up one page too far shows.
const WHOLE_PAGES: usize = 12_288;

/// A table of three whole pages, held at the entry of its `munmap()` at `close`: the length
/// asked (`/proc/PID/syscall`) must be the table's, not more (`munmap()` unmaps every page the
/// range touches, whatever lies after the table included). `false` where the grader may not
/// trace.
pub fn unmapped_length(run: &mut Run) -> Result<bool, Fail> {
    let Some((mut table, start)) = mapped_table(run, "unmapped-length")? else {
        return Ok(false);
    };
    let pid = table.pid();
    let Some(mut tracer) = Tracer::attach(pid, unmapping(start), Action::Hold)? else {
        table.proc.kill_tree();
        let _ = std::fs::remove_file(dev_shm(&table.name));
        return Ok(false);
    };
    table.proc.send("cmd", &[("op", "close".into())])?;
    let held = tracer.wait(&mut table.proc, Instant::now() + Duration::from_secs(5))?;
    let asked = match held {
        Reached::Call => crate::engine::inspect::call_of(pid, pid).map(|(_, args)| args[1]),
        _ => None,
    };
    tracer.release();
    let name = table.name.clone();
    let closed = await_answer(&mut table.proc, CREATOR, "asked for op=close", None);
    table.proc.kill_tree();
    let _ = std::fs::remove_file(dev_shm(&name));
    if let Some(len) = asked.filter(|&len| len > WHOLE_PAGES as u64) {
        return Err(Fail::failed(format!(
            "closing a {WHOLE_PAGES}-byte table (three whole pages), the program called \
             munmap() of its start with a length of {len} bytes: munmap() unmaps every page the \
             range touches, so the {} bytes past the table were unmapped too, whatever the \
             program had there (its heap, a library, another mapping); close() unmaps exactly \
             the table, munmap(addr, len) with the length it mapped (rounding up to a page is \
             the kernel's)",
            len - WHOLE_PAGES as u64
        )));
    }
    let closed = closed?;
    if closed.kind != "done" {
        return Err(Fail::failed(format!(
            "closing a {WHOLE_PAGES}-byte table, the program said {}",
            said(&closed)
        )));
    }
    Ok(asked.is_some())
}

/// A table whose `munmap()` at `close` the grader makes fail with `errno`: the answer is
/// `failed` with kind=munmap and that errno, not `done`. `false` where the grader may not trace.
pub fn failed_unmap(run: &mut Run, errno: i32) -> Result<bool, Fail> {
    let Some((mut table, start)) = mapped_table(run, "forced-unmap")? else {
        return Ok(false);
    };
    let pid = table.pid();
    let name = table.name.clone();
    let tracer = Tracer::attach(pid, unmapping(start), Action::Fail(errno))?;
    let Some(mut tracer) = tracer else {
        table.proc.kill_tree();
        let _ = std::fs::remove_file(dev_shm(&name));
        return Ok(false);
    };
    let what = format!(
        "closing a created table while the grader fails its munmap() with {:?}",
        Errno::from_raw(errno)
    );
    let answer = table.command(&[("op", "close".into())]);
    let failed = tracer.failed_the_call();
    drop(tracer);
    table.proc.kill_tree();
    let _ = std::fs::remove_file(dev_shm(&name));
    let answer = answer?;
    if !failed? {
        return Err(Fail::failed(format!(
            "{what}: the program made no munmap() of the table's mapping (at {start:#x}) on its \
             main thread before it said {}: close() unmaps the table with munmap(addr, len)",
            said(&answer)
        )));
    }
    if answer.kind == "done" {
        return Err(Fail::failed(format!(
            "{what}: the program said `done`, as if it had succeeded: it ignores munmap()'s \
             error; close() returns TableError::Unmap(errno) (kind=munmap) when munmap() fails"
        )));
    }
    refused_with(&answer, "munmap", errno, &what, "Unmap")?;
    Ok(true)
}

/// The errno the grader gives the program's `shm_unlink()` in [`failed_unlinks`]: the kernel's
/// answer to an unlink of another user's object in the sticky `/dev/shm`, which glibc's
/// `shm_unlink()` reports as `EACCES`.
const UNLINK_REFUSAL: i32 = libc::EPERM;

/// A table's own unlink, whose `shm_unlink()` the grader fails with [`UNLINK_REFUSAL`]:
/// `shm-unlink` with that errno (or glibc's `EACCES` for it), not `not-found` (only `ENOENT`
/// is), and the name still there. `false` where the grader may not trace.
pub fn failed_unlinks(run: &mut Run) -> Result<bool, Fail> {
    let Some((mut table, _)) = mapped_table(run, "forced-unlink")? else {
        return Ok(false);
    };
    let name = table.name.clone();
    let outcome = refused_unlink(&mut table, &name);
    table.proc.kill_tree();
    let _ = std::fs::remove_file(dev_shm(&name));
    outcome
}

/// The `unlink` of [`failed_unlinks`], on `table`, whose name is `name`.
fn refused_unlink(table: &mut super::driver::Table, name: &str) -> Result<bool, Fail> {
    let errno = UNLINK_REFUSAL;
    let call = Call::unlinking(&dev_shm(name));
    let Some(mut tracer) = Tracer::attach(table.pid(), call, Action::Fail(errno))? else {
        return Ok(false);
    };
    let what = format!(
        "unlinking {}, which exists, while the grader fails the program's shm_unlink() with \
         {:?} (as for another user's object in the sticky /dev/shm)",
        dev_shm(name).display(),
        Errno::from_raw(errno)
    );
    let answer = table.command(&[("op", "unlink".into())]);
    let failed = tracer.failed_the_call();
    drop(tracer);
    let answer = answer?;
    if !failed? {
        return Err(Fail::failed(format!(
            "{what}: the program made no unlink of the name on its main thread before it said \
             {}: unlink() calls shm_unlink() and answers from its errno",
            said(&answer)
        )));
    }
    if is_refusal(&answer, "not-found") {
        return Err(Fail::failed(format!(
            "{what}: the program said kind=not-found, but the name exists (and is still there): \
             it takes {:?} of shm_unlink() for a missing name; only ENOENT is \
             TableError::NotFound, every other error is TableError::Unlink (kind=shm-unlink) \
             with its errno",
            Errno::from_raw(errno)
        )));
    }
    // glibc's shm_unlink() reports the kernel's EPERM as EACCES: either is the call's own.
    let carries = |errno: Errno| {
        answer
            .get("error")
            .unwrap_or("")
            .contains(&format!("{errno:?}"))
    };
    if carries(Errno::EPERM) || carries(Errno::EACCES) {
        refused(
            &answer,
            "shm-unlink",
            &what,
            "every shm_unlink() error but ENOENT is TableError::Unlink, kind=shm-unlink",
        )?;
    } else {
        refused_with(&answer, "shm-unlink", errno, &what, "Unlink")?;
    }
    if !exists(name) {
        return Err(Fail::failed(format!(
            "{what}: the program said {}, but {} is gone: after shm_unlink() failed it removed \
             the name another way; unlink() is shm_unlink() alone, and its error is the answer",
            said(&answer),
            dev_shm(name).display()
        )));
    }
    Ok(true)
}
