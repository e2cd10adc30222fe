//! Creates that fail after their `shm_open()`: each reports the step that failed and leaves
//! nothing in `/dev/shm`. Sizes no `ftruncate()` or `mmap()` can take make the real calls fail;
//! the tracer makes an `ftruncate()` of an ordinary size fail too, which also shows that the
//! object is sized with `ftruncate()`, and then holds the creator as it exits, to see that it
//! closed the object's descriptor.

use std::os::unix::fs::MetadataExt;

use crate::engine::tracer::{Call, Step, Tracer};
use crate::engine::{Fail, Run, force};

use super::driver::{
    CREATOR, await_answer, descriptors_at_exit, is_refusal, refused, said, start,
    start_held_at_exit, start_stopped,
};
use super::probes::{dev_shm, exists};

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
    let mut huge_proc = start(run, &huge, Some(too_big), CREATOR)?;
    let mut big_proc = start(run, &big, Some(unmappable), CREATOR)?;
    // Held as it exits: a create whose mmap() failed must have closed what it opened.
    let (mut wide_proc, wide_tracer) = start_held_at_exit(run, &wide, Some(past_u32), CREATOR)?;
    let mut wide_tracer = Some(wide_tracer);
    let cases = [
        (
            &mut huge_proc,
            &huge,
            "ftruncate",
            "2^63 bytes, more than ftruncate()'s off_t holds".to_string(),
        ),
        (
            &mut big_proc,
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
            &wide,
            "mmap",
            format!(
                "2^32 bytes (one past u32::MAX), which ftruncate() gives but the program's {} \
                 GiB of address space cannot map",
                ADDRESS_SPACE >> 30
            ),
        ),
    ];
    for (proc, name, kind, what) in cases {
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
        if name == &wide {
            let kept = descriptors_at_exit(proc, wide_tracer.take().flatten(), name)?;
            if !kept.is_empty() {
                return Err(Fail::failed(format!(
                    "creating a table of {what} failed with kind={kind} and left no name, but \
                     held as it exits (at its exit_group(), after that answer), the creator \
                     still holds descriptor {kept:?} of the unlinked object ({} (deleted)), \
                     and with it the object's memory: create() does not close the descriptor \
                     shm_open() gave it when a later step fails (here mmap()); a failed create must release what \
                     it opened, on every return (keep it an OwnedFd, dropped when create() \
                     returns)",
                    dev_shm(name).display()
                )));
            }
        }
        proc.wait()?;
    }
    let forced = if forced_ftruncate_failure(run)? {
        ", and so did one whose ftruncate() the grader made fail"
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

/// A create of an ordinary size whose `ftruncate()` the tracer makes fail with [`FORCED_ERRNO`]:
/// it must say `ftruncate`, leave nothing, and hold no descriptor of the object as it exits. A
/// create that says `mapped` without the tracer having seen any `ftruncate()` sized the object
/// another way. `false` if the grader may not trace the creator.
fn forced_ftruncate_failure(run: &mut Run) -> Result<bool, Fail> {
    let name = run.ipc_name("forced");
    let size = 10_000;
    let mut proc = start_stopped(run, &name, Some(size), CREATOR)?;
    let pid = proc.pid.as_raw();
    // The ftruncate() fails; then the creator is held as it exits, to see what it still holds.
    let tracer = Tracer::in_turn(
        pid,
        [
            (Call::any(libc::SYS_ftruncate), Step::Fail(FORCED_ERRNO)),
            (Call::any(libc::SYS_exit_group), Step::Hold),
        ],
    )?;
    force::resume(pid)?;
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
