//! `shm-open-errors`: `create()`'s `shm_open()` failing with each error it may meet but
//! `EEXIST` (the one that means the name is taken): every one is `BankError::Open`, with its
//! error number, and leaves nothing behind.

use ipc_labs_driver::Message;

use super::create_failures::expect_kind;
use super::errors::{first_message, release};
use super::segment::dev_shm;
use crate::engine::tracer::{Action, Call, Tracer};
use crate::engine::{Fail, Run, force};

/// What the grader makes `shm_open()` fail with: a directory the program may not create in, a
/// process or system out of descriptors, a name the system refuses, a directory that is gone.
const OPEN_ERRORS: [i32; 5] = [
    libc::EACCES,
    libc::EMFILE,
    libc::ENFILE,
    libc::EINVAL,
    libc::ENOENT,
];

pub(super) fn shm_open_errors(run: &mut Run) -> Result<String, Fail> {
    let mut failed = Vec::new();
    for errno in OPEN_ERRORS {
        if open_fails_with(run, errno)? {
            failed.push(format!("{:?}", nix::errno::Errno::from_raw(errno)));
        }
    }
    if failed.is_empty() {
        return Ok("the grader may not trace the program here: no shm_open() was failed".into());
    }
    Ok(format!(
        "with create()'s shm_open() failed by the grader ({}), create() said kind=shm-open \
         with that error each time, and left no name behind",
        failed.join(", ")
    ))
}

/// The tracer fails the program's first call naming the segment (glibc's `shm_open()` opens
/// `/dev/shm/<name>`) with `errno`: `create()` must say `kind=shm-open` with that error.
/// `false` if the grader may not trace the program, or it made no such call.
fn open_fails_with(run: &mut Run, errno: i32) -> Result<bool, Fail> {
    let errno_name = format!("{:?}", nix::errno::Errno::from_raw(errno));
    let name = run.ipc_name("unopenable");
    let path = dev_shm(&name);
    // The path a glibc shm_open() opens, kept for the life of the grader (a few bytes a run).
    let opened: &'static str = path.display().to_string().leak();
    let mut proc = run.spawn_stopped(&["--name", name.as_str(), "--work", "1"])?;
    let pid = proc.pid.as_raw();
    let tracer = Tracer::attach(pid, Call::naming(opened), Action::Fail(errno))?;
    force::resume(pid)?;
    let Some(mut tracer) = tracer else {
        proc.kill_tree();
        return Ok(false);
    };
    let message = first_message(&mut proc)?;
    let failed = tracer.failed_the_call()?;
    drop(tracer);
    if !failed {
        proc.kill_tree();
        let _ = std::fs::remove_file(&path);
        return Ok(false);
    }
    let what =
        format!("with the grader failing its shm_open() of {name:?} ({errno_name}), create()");
    let rule = if errno == libc::EACCES {
        "EEXIST alone is BankError::Exists (with O_EXCL, any name already there answers \
         EEXIST, another user's too); EACCES means the segment could not be created, \
         BankError::Open like every other error of shm_open()"
    } else {
        "EEXIST alone is BankError::Exists; every other error of shm_open() is \
         BankError::Open, with the error number"
    };
    let judged = expect_kind(&message, "shm-open", &what, rule).and_then(|()| {
        expect_call_errno(&message, errno, &format!("{what} said kind=shm-open, but"))
    });
    let left = path.exists();
    if judged.is_err() || message.kind != "failed" {
        proc.kill_tree();
    } else {
        release(&mut proc)?;
    }
    let _ = std::fs::remove_file(&path);
    judged?;
    if left {
        return Err(Fail::failed(format!(
            "{what} said kind=shm-open, but {} exists: shm_open() failed, so nothing was \
             created, and create() made the name another way (a retry without O_EXCL, an \
             open() of the path)",
            path.display()
        )));
    }
    Ok(true)
}

/// A failed system call's error carries the error number the call failed with (the `Err` that
/// nix returns): the `error=` text names it.
pub(super) fn expect_call_errno(message: &Message, errno: i32, what: &str) -> Result<(), Fail> {
    let error = message.get("error").unwrap_or("");
    let errno_name = format!("{:?}", nix::errno::Errno::from_raw(errno));
    if error.contains(&errno_name) {
        return Ok(());
    }
    Err(Fail::failed(format!(
        "{what} its error says {error:?}, not {errno_name}, the error the call failed with: \
         build the error from the call's own Err (its errno), not another value"
    )))
}
