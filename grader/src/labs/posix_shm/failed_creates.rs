//! Creates that fail after their `shm_open()`: each reports the step that failed and leaves
//! nothing in `/dev/shm`. Sizes no `ftruncate()` or `mmap()` can take make the real calls fail;
//! the tracer makes an `ftruncate()` of an ordinary size fail too, which also shows that the
//! object is sized with `ftruncate()`, and then holds the creator as it exits, to see that it
//! closed the object's descriptor.

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use crate::engine::tracer::{Call, Reached, Step, Tracer};
use crate::engine::{Fail, Proc, Run, force};

use super::driver::{
    CREATOR, answer_past_breakpoint, await_answer, descriptors_at_exit, is_refusal, refused, said,
    start, start_breaking_at, start_held_at_exit, start_stopped,
};
use super::forced::{
    failed_creator_calls, failed_unlinks, failed_unmap, refused_with, unmapped_length,
};
use super::probes::{dev_shm, exists, plant_object};
use super::sharing::any_call_name;

/// The address space, and the largest file, the grader allows each program (`RLIMIT_AS` and
/// `RLIMIT_FSIZE`, see the instructor guide): a table a page smaller can be sized, not mapped.
const ADDRESS_SPACE: usize = 4 << 30;

pub fn failed_create(run: &mut Run) -> Result<String, Fail> {
    let huge = run.ipc_name("huge");
    let big = run.ipc_name("big");
    // A size ftruncate() cannot take (off_t is signed), and one it can but that the programs'
    // address space cannot hold: each create fails after its shm_open().
    let too_big = 1usize << 63;
    let unmappable = ADDRESS_SPACE - 4096;
    // One past u32::MAX: ftruncate() takes it (the file-size limit is 4 GiB, which it does
    // not pass; tmpfs gives no pages before they are touched), mmap() does not.
    let wide = run.ipc_name("wide");
    let past_u32 = 1usize << 32;
    // Each held as it exits: a create that failed, at whichever step, closed what it opened
    // (the size refused before ftruncate() included).
    let (mut huge_proc, huge_tracer) = start_held_at_exit(run, &huge, Some(too_big), CREATOR)?;
    let (mut big_proc, big_tracer) = start_held_at_exit(run, &big, Some(unmappable), CREATOR)?;
    let (mut wide_proc, wide_tracer) = start_held_at_exit(run, &wide, Some(past_u32), CREATOR)?;
    let cases = [
        (
            &mut huge_proc,
            huge_tracer,
            &huge,
            "ftruncate",
            "2^63 bytes, more than ftruncate()'s off_t holds".to_string(),
        ),
        (
            &mut big_proc,
            big_tracer,
            &big,
            "mmap",
            format!(
                "{unmappable} bytes, which ftruncate() gives but the program's {} GiB of \
                 address space cannot map",
                ADDRESS_SPACE >> 30
            ),
        ),
        (
            &mut wide_proc,
            wide_tracer,
            &wide,
            "mmap",
            format!(
                "2^32 bytes (one past u32::MAX), which ftruncate() gives but the program's {} \
                 GiB of address space cannot map",
                ADDRESS_SPACE >> 30
            ),
        ),
    ];
    for (proc, tracer, name, kind, what) in cases {
        let answer = await_answer(proc, CREATOR, &format!("creating a table of {what}"), None)
            .map_err(|fail| match fail {
                Fail::Crashed(message) => Fail::Crashed(format!(
                    "creating a table of {what}: return TableError::{} for it, do not panic \
                     ({message})",
                    if kind == "mmap" { "Map" } else { "Truncate" }
                )),
                other => other,
            })?;
        if kind == "ftruncate" && is_refusal(&answer, "mmap") {
            return Err(Fail::failed(format!(
                "creating a table of {what}: the program said {}, not `failed` with \
                 kind=ftruncate, which cannot give the object that size: mmap() ran before \
                 ftruncate() (or ftruncate()'s failure was reported as Map); size the object \
                 first (a size past i64::MAX is Truncate), then map it, and stop at the first \
                 step that fails",
                said(&answer)
            )));
        }
        if kind == "mmap" && is_refusal(&answer, "ftruncate") && name == &wide {
            return Err(Fail::failed(format!(
                "creating a table of {what}, the program said {}, not `failed` with kind=mmap: \
                 ftruncate() takes any size up to i64::MAX, and here 2^32 bytes too (the \
                 program's file-size limit is 4 GiB, which it does not pass); the program \
                 refused a size ftruncate() can give, with a limit of its own (a 32-bit size?): \
                 only a size past i64::MAX is Truncate before the call",
                said(&answer)
            )));
        }
        refused(
            &answer,
            kind,
            &format!("creating a table of {what}"),
            &format!("the step that failed is {kind}(): report it as kind={kind}"),
        )?;
        if exists(name) {
            return Err(Fail::failed(format!(
                "creating a table of {what} failed with kind={kind}, but {} was left behind: \
                 when a step after shm_open() fails, shm_unlink() the name before returning the \
                 error (a failed create leaves nothing)",
                dev_shm(name).display()
            )));
        }
        let kept = descriptors_at_exit(proc, tracer, name)?;
        if !kept.is_empty() {
            let path = if kind == "ftruncate" {
                "the early return for a size past i64::MAX, which makes no ftruncate()"
            } else {
                "mmap()"
            };
            return Err(Fail::failed(format!(
                "creating a table of {what} failed with kind={kind} and left no name, but held \
                 as it exits (at its exit_group(), after that answer), the creator still holds \
                 descriptor {kept:?} of the unlinked object ({} (deleted)), and with it the \
                 object's memory: create() does not close the descriptor shm_open() gave it \
                 when a later step fails (here {path}); a failed create must release what it \
                 opened, on every return (keep it an OwnedFd, dropped when create() returns)",
                dev_shm(name).display()
            )));
        }
        proc.wait()?;
    }
    // First the size under a taken name: a create that decides a step fails before any
    // shm_open() is told so, before the forced calls (which it never makes) are looked for.
    taken_name_before_size(run)?;
    let forced = if forced_ftruncate_failure(run)?
        && forced_cleanup_failure(run)?
        && failed_creator_calls(run)?
        && failed_unmap(run, libc::EINVAL)?
        // A range it cannot split (past the count of mappings): not the EINVAL a program may
        // assume.
        && failed_unmap(run, libc::ENOMEM)?
        && failed_unlinks(run)?
        && unmapped_length(run)?
        && cleanup_answers_at_once(run)?
        && cleanup_through_shm_unlink(run)?
    {
        ", and so did creates whose ftruncate() (also with its clean-up unlink failing, \
         answered at once), shm_open() and mmap() the grader made fail, each with its errno, \
         a close whose munmap() and unlinks whose shm_unlink() it made fail; a clean-up \
         called shm_unlink(); a close unmapped exactly the table"
    } else {
        ""
    };
    Ok(format!(
        "creates that failed in ftruncate() and in mmap() said so and left nothing{forced}"
    ))
}

/// The error the grader gives the creator's `ftruncate()`: what the call says to a size past
/// the file-size limit.
const FORCED_ERRNO: i32 = libc::EFBIG;

/// Starts a creator of `name` with `size` bytes whose `ftruncate()` the tracer fails with
/// [`FORCED_ERRNO`], and which it then meets at `then`; the tracer is `None` where the machine
/// does not allow tracing.
fn failed_ftruncate_then(
    run: &mut Run,
    name: &str,
    size: usize,
    then: (Call, Step),
) -> Result<(Proc, Option<Tracer>), Fail> {
    let proc = start_stopped(run, name, Some(size), CREATOR)?;
    let pid = proc.pid.as_raw();
    let failing = (Call::any(libc::SYS_ftruncate), Step::Fail(FORCED_ERRNO));
    let tracer = Tracer::in_turn(pid, [failing, then])?;
    force::resume(pid)?;
    Ok((proc, tracer))
}

/// A create of an ordinary size whose `ftruncate()` the tracer makes fail with [`FORCED_ERRNO`]:
/// it must say `ftruncate`, leave nothing, and hold no descriptor of the object as it exits. A
/// create that says `mapped` without the tracer having seen any `ftruncate()` sized the object
/// another way. `false` if the grader may not trace the creator.
fn forced_ftruncate_failure(run: &mut Run) -> Result<bool, Fail> {
    let name = run.ipc_name("forced");
    let size = 10_000;
    // Then the creator is held as it exits, to see what it still holds.
    let exiting = (Call::any(libc::SYS_exit_group), Step::Hold);
    let (mut proc, tracer) = failed_ftruncate_then(run, &name, size, exiting)?;
    let Some(mut tracer) = tracer else {
        run.note(
            "the grader may not trace the creator here (ptrace): no ftruncate() was made to fail",
        );
        proc.kill_tree();
        return Ok(false);
    };
    let error = nix::errno::Errno::from_raw(FORCED_ERRNO);
    let what = format!(
        "creating a {size}-byte table while the grader fails the creator's next ftruncate() \
         ({error})"
    );
    let answer = await_answer(&mut proc, CREATOR, &what, Some("ftruncate"))?;
    let failed = tracer.failed_the_call()?;
    if !failed {
        let path = dev_shm(&name);
        let how = match std::fs::metadata(&path) {
            Ok(meta) if meta.len() == size as u64 && meta.blocks() > 0 => format!(
                "{} is {size} bytes all the same, and already holds pages of memory, which \
                 ftruncate() never allocates: it was sized by a call that fills pages (a write \
                 at its end, fallocate(), ...)",
                path.display()
            ),
            Ok(meta) => format!("{} is {} bytes", path.display(), meta.len()),
            Err(_) => format!("{} does not exist", path.display()),
        };
        return Err(Fail::failed(format!(
            "{what}: the creator made no ftruncate() call (on its main thread) before it said \
             {}; {how}. A new object is given its size with ftruncate(fd, size), whose failure \
             is kind=ftruncate",
            said(&answer)
        )));
    }
    if answer.kind == "mapped" {
        return Err(Fail::failed(format!(
            "{what}: the program said `mapped`, as if it had succeeded: it ignores ftruncate()'s \
             error; return TableError::Truncate (kind=ftruncate) and unlink the name"
        )));
    }
    refused(
        &answer,
        "ftruncate",
        &what,
        "the step that failed is ftruncate(): report it as kind=ftruncate",
    )?;
    refused_with(&answer, "ftruncate", FORCED_ERRNO, &what, "Truncate")?;
    if exists(&name) {
        return Err(Fail::failed(format!(
            "{what}: it failed with kind=ftruncate, but {} was left behind: when a step after \
             shm_open() fails, shm_unlink() the name before returning the error (a failed \
             create leaves nothing)",
            dev_shm(&name).display()
        )));
    }
    let kept = descriptors_at_exit(&proc, Some(tracer), &name)?;
    if !kept.is_empty() {
        return Err(Fail::failed(format!(
            "{what}: it failed with kind=ftruncate and removed the name, but held as it exits \
             (at its exit_group(), after that answer), it still holds descriptor {kept:?} of \
             {} (deleted): the descriptor shm_open() gave it is not closed when a later step \
             fails, and keeps the unlinked object's memory while the process runs; a failed \
             create must release what it opened, on every return (keep it an OwnedFd, dropped \
             when create() returns)",
            dev_shm(&name).display()
        )));
    }
    proc.wait()?;
    Ok(true)
}

/// The error the grader gives the clean-up `shm_unlink()` (glibc's `unlink()`) after the
/// failed `ftruncate()`: one no unlink of a file in `/dev/shm` returns otherwise, so that an
/// answer carrying it can only be the clean-up's.
const CLEANUP_ERRNO: i32 = libc::EBUSY;

/// A create whose `ftruncate()` the tracer fails ([`FORCED_ERRNO`]), and then the clean-up's
/// unlink too ([`CLEANUP_ERRNO`]): the answer is still the first failure's kind, `ftruncate`;
/// the clean-up's error is not the caller's. The name stays (its unlink failed) and the grader
/// removes it. `false` if the grader may not trace the creator.
fn forced_cleanup_failure(run: &mut Run) -> Result<bool, Fail> {
    let name = run.ipc_name("unremoved");
    let size = 10_000;
    let unlinking = Call::one_of(&[libc::SYS_unlink, libc::SYS_unlinkat]);
    let (mut proc, tracer) =
        failed_ftruncate_then(run, &name, size, (unlinking, Step::Fail(CLEANUP_ERRNO)))?;
    let Some(mut tracer) = tracer else {
        proc.kill_tree();
        return Ok(false);
    };
    let first = nix::errno::Errno::from_raw(FORCED_ERRNO);
    let then = nix::errno::Errno::from_raw(CLEANUP_ERRNO);
    let what = format!(
        "creating a {size}-byte table while the grader fails the creator's ftruncate() ({first}) \
         and then the unlink of its clean-up ({then})"
    );
    let answer = await_answer(&mut proc, CREATOR, &what, Some("ftruncate"));
    // Whatever it said, the name its failed clean-up left is the grader's to remove.
    let _ = std::fs::remove_file(dev_shm(&name));
    let answer = answer?;
    let truncate_failed = tracer.failed_before(Instant::now() + Duration::from_millis(10))?;
    let unlink_failed =
        truncate_failed && tracer.failed_before(Instant::now() + Duration::from_millis(10))?;
    drop(tracer);
    if truncate_failed && unlink_failed && is_refusal(&answer, "shm-unlink") {
        return Err(Fail::failed(format!(
            "{what}: the program said {}, not `failed` with kind=ftruncate: the grader made \
             the clean-up's shm_unlink() fail too (its unlink() returned {then}, which nothing \
             else returns there), and the clean-up's error replaced the error of the step that \
             failed (a `?` on the clean-up unlink?); the create failed in ftruncate(), and that \
             is what it reports: the clean-up is best-effort (`let _ = shm_unlink(name);`)",
            said(&answer)
        )));
    }
    if truncate_failed && unlink_failed {
        refused(
            &answer,
            "ftruncate",
            &what,
            "the step that failed is ftruncate(), whatever the clean-up after it does: report \
             it as kind=ftruncate",
        )?;
        refused_with(&answer, "ftruncate", FORCED_ERRNO, &what, "Truncate")?;
    }
    proc.wait()?;
    Ok(true)
}

/// The calls of a clean-up unlink (glibc's `shm_unlink()` makes the first).
const UNLINKS: &[i64] = &[libc::SYS_unlink, libc::SYS_unlinkat];

/// What a clean-up that does not answer at once does after its failed unlink: a call that
/// waits, or the unlink again.
const WAIT_OR_UNLINK: &[Call] = &[Call::waiting(), Call::one_of(UNLINKS)];

/// A create of 2^63 bytes (no `ftruncate()` gives it) whose clean-up unlink the tracer fails
/// with [`CLEANUP_ERRNO`]: the answer is due at once, so the creator is held if it then enters
/// a call that waits (a sleep before another try) or unlinks again before it answers. `false`
/// if the grader may not trace the creator.
fn cleanup_answers_at_once(run: &mut Run) -> Result<bool, Fail> {
    let name = run.ipc_name("unremoved-at-once");
    let mut proc = start_stopped(run, &name, Some(1usize << 63), CREATOR)?;
    let pid = proc.pid.as_raw();
    let steps = [
        (Call::one_of(UNLINKS), Step::Fail(CLEANUP_ERRNO)),
        (Call::any_of(WAIT_OR_UNLINK), Step::Hold),
    ];
    let tracer = Tracer::in_turn(pid, steps)?;
    force::resume(pid)?;
    let Some(mut tracer) = tracer else {
        proc.kill_tree();
        return Ok(false);
    };
    // The program exits after its answer: a tracer that lost it says so at once.
    let until = Instant::now() + Duration::from_secs(5);
    let reached = if tracer.failed_before(until)? {
        tracer.wait(&mut proc, until)?
    } else {
        Reached::Passed(None)
    };
    let held_in = (reached == Reached::Call)
        .then(|| crate::engine::inspect::call_of(pid, pid).map(|(number, _)| number))
        .flatten();
    drop(tracer);
    // Whatever it did, the name its failed clean-up left is the grader's to remove.
    let _ = std::fs::remove_file(dev_shm(&name));
    let Some(number) = held_in else {
        if let Reached::Passed(None) = reached {
            await_answer(&mut proc, CREATOR, "creating a table of 2^63 bytes", None)?;
        }
        proc.wait()?;
        return Ok(true);
    };
    proc.kill_tree();
    let then = if UNLINKS.contains(&number) {
        "unlinked the name again: it retries the clean-up".to_string()
    } else {
        format!(
            "entered {}, where the grader held it: it waits before it answers (a pause before \
             another try?)",
            any_call_name(number)
        )
    };
    Err(Fail::failed(format!(
        "creating a table of 2^63 bytes (more than ftruncate()'s off_t holds) while the grader \
         fails the unlink of its clean-up with {:?} (which nothing else returns there): before \
         it answered, the creator {then}. Nothing in this lab waits: the clean-up is one \
         shm_unlink(), best effort (`let _ = shm_unlink(name);`), and the answer \
         (kind=ftruncate) is due at once",
        nix::errno::Errno::from_raw(CLEANUP_ERRNO)
    )))
}

/// A create of 2^63 bytes with a hardware breakpoint at the C library's `shm_unlink()`, set
/// before its `main()` runs: its clean-up must enter that function before the answer (an
/// `unlink()` of a `/dev/shm` path makes the same system call, but hard-codes where the C
/// library keeps the objects). `false` where the grader cannot set the breakpoint.
fn cleanup_through_shm_unlink(run: &mut Run) -> Result<bool, Fail> {
    let name = run.ipc_name("cleanup-called");
    let (mut proc, tracer) =
        start_breaking_at(run, &name, Some(1usize << 63), CREATOR, c"shm_unlink")?;
    let Some(tracer) = tracer else {
        proc.kill_tree();
        let _ = std::fs::remove_file(dev_shm(&name));
        return Ok(false);
    };
    let what = "creating a table of 2^63 bytes (more than ftruncate()'s off_t holds)";
    let (answer, entered) = answer_past_breakpoint(tracer, &mut proc)?;
    let watched = answer.is_some();
    let answer = match answer {
        Some(answer) => answer,
        None => await_answer(&mut proc, CREATOR, what, None)?,
    };
    let left = exists(&name);
    let _ = std::fs::remove_file(dev_shm(&name));
    if watched && !entered && !left && is_refusal(&answer, "ftruncate") {
        return Err(Fail::failed(format!(
            "{what}: it said kind=ftruncate and its name is gone, but a hardware breakpoint at \
             the C library's shm_unlink(), set before its main() ran, saw it never call that \
             function: its clean-up removed the object as a file (unlink() or remove_file() of \
             a /dev/shm path it builds); where shared memory objects live is the C library's \
             business: the clean-up is shm_unlink(name)"
        )));
    }
    proc.wait()?;
    Ok(watched)
}

/// Creates of sizes that cannot be made (4 GiB less a page, which cannot be mapped, and 2^63
/// bytes, which cannot be given), each under a name the grader's object already has:
/// `shm_open(O_CREAT | O_EXCL)` comes first and says `exists`, and the object stays as it
/// was; `mmap` or `ftruncate` there means the create judged the size before it made (or tried
/// to make) the object.
fn taken_name_before_size(run: &mut Run) -> Result<(), Fail> {
    let unmappable = ADDRESS_SPACE - 4096;
    let sizes = [
        (
            unmappable,
            format!(
                "{unmappable} bytes (which the program's {} GiB of address space cannot map)",
                ADDRESS_SPACE >> 30
            ),
        ),
        (
            1usize << 63,
            "2^63 bytes (more than ftruncate()'s off_t holds)".to_string(),
        ),
    ];
    for (size, described) in sizes {
        let name = run.ipc_name("taken-big");
        let bytes = run.random_bytes(64);
        let planted = plant_object(run, &name, &bytes)?;
        let inode = std::fs::metadata(dev_shm(&name))?.ino();
        let what = format!(
            "creating a table of {described} under {}, a 64-byte object the grader had made",
            dev_shm(&name).display()
        );
        let mut proc = start(run, &name, Some(size), CREATOR)?;
        let answer = await_answer(&mut proc, CREATOR, &what, Some("exists"))?;
        let after = std::fs::symlink_metadata(dev_shm(&name)).ok();
        let intact = after
            .as_ref()
            .is_some_and(|meta| meta.ino() == inode && meta.len() == bytes.len() as u64);
        drop(planted);
        let step = ["mmap", "ftruncate"]
            .into_iter()
            .find(|step| is_refusal(&answer, step));
        if let Some(step) = step.filter(|_| intact) {
            return Err(Fail::failed(format!(
                "{what}: the program said {}, not `failed` with kind=exists, and left the \
                 object as it was: it decided {step}() would fail before any shm_open(O_CREAT \
                 | O_EXCL) of the name (the size judged first?); create() makes the object \
                 first, and its taken name is `exists`, whatever the size: shm_open(), then \
                 ftruncate(), then mmap() of that object",
                said(&answer)
            )));
        }
        if !intact && !is_refusal(&answer, "exists") {
            return Err(Fail::failed(format!(
                "{what}: the program said {}, and the grader's object is no longer as it was \
                 (gone, another object, or another size): it opened the existing object instead \
                 of creating a new one (no O_EXCL?) and sized or removed it; shm_open(O_CREAT | \
                 O_EXCL) of a taken name fails with EEXIST, which is `exists`, and changes \
                 nothing",
                said(&answer)
            )));
        }
        refused(
            &answer,
            "exists",
            &what,
            "the name is taken, whatever the size: shm_open(O_CREAT | O_EXCL) says EEXIST, \
             which is TableError::Exists",
        )?;
        proc.wait()?;
    }
    Ok(())
}
