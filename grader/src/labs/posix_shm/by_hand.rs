//! The program run as a user runs it, without the grader's control channel: it must do what it
//! does graded. Its answer is then its exit status and output alone.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use crate::engine::tracer::{Call, Reached, Step, Tracer};
use crate::engine::{Fail, Run, force};

use super::object::wrong_with;
use super::probes::{dev_shm, plant_object};

/// The calls that give a descriptor's size.
const STATS: &[i64] = &[libc::SYS_fstat, libc::SYS_newfstatat, libc::SYS_statx];

/// An opener of a 0-byte object run by hand (no control channel in its environment), traced
/// from its start and held right after its first `fstat()` after the object's `shm_open()`
/// returned 0 bytes, while the grader gives the object a page (as a creator's `ftruncate()`
/// racing with it would): it must still refuse it (`empty`, a failed exit), as it does graded:
/// 0 bytes is `Empty` at once, whoever runs the program.
pub fn empty_refused_by_hand(run: &mut Run) -> Result<(), Fail> {
    let name = run.ipc_name("by-hand");
    let path = dev_shm(&name);
    let planted = plant_object(run, &name, &[])?;
    let args = ["open", "--name", name.as_str()];
    let mut proc = run.spawn_stopped_ungraded(&args)?;
    proc.set_roles(|_| "the opener run by hand".into());
    let pid = proc.pid.as_raw();
    let tracer = Tracer::in_turn(
        pid,
        [
            (Call::opening(&path), Step::Hold),
            (Call::one_of(STATS), Step::HoldAfter),
        ],
    )?;
    force::resume(pid)?;
    let Some(mut tracer) = tracer else {
        run.note(
            "the grader may not trace the program here (ptrace): an opener run by hand was not \
             tried",
        );
        proc.kill_tree();
        return Ok(());
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    // No shm_open() or fstat() of it: the graded checks judge how it opens.
    if tracer.wait(&mut proc, deadline)? != Reached::Call {
        drop(tracer);
        proc.kill_tree();
        return Ok(());
    }
    tracer.go_on();
    if tracer.wait(&mut proc, deadline)? != Reached::Call {
        drop(tracer);
        proc.kill_tree();
        return Ok(());
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)?
        .set_len(4096)?;
    tracer.release();
    let status = proc.wait_until(deadline)?;
    drop(planted);
    let out = proc.stdout.lock().expect("stdout").tail(2);
    // The output may still be on its way to the grader as the exit is seen.
    let printed = if out.is_empty() {
        String::new()
    } else {
        format!(" (it printed {out:?})")
    };
    let Some(status) = status else {
        proc.kill_tree();
        return Err(Fail::failed(format!(
            "run by hand (without the grader's control channel, {} unset), opening {}, a 0-byte \
             object, the program was held right after its fstat() returned 0 bytes while the \
             grader gave the object 4096 bytes, and it had not exited 5 s later: open() waits \
             when it is not graded; 0 bytes is TableError::Empty at once, whoever runs the \
             program",
            ipc_labs_driver::CONTROL_FD_ENV,
            path.display()
        )));
    };
    if status.success() {
        return Err(Fail::failed(format!(
            "run by hand (without the grader's control channel, {} unset), opening {}, a 0-byte \
             object, the program was held right after its fstat() returned 0 bytes while the \
             grader gave the object 4096 bytes (as a creator's ftruncate() racing with it \
             would); it then mapped it and exited with success{printed}: after \
             fstat() said 0 it looked at the size again (a wait or a retry), which graded it \
             does not: it behaves differently when it is not graded; 0 bytes is \
             TableError::Empty at once, one fstat() then the answer, whoever runs the program",
            ipc_labs_driver::CONTROL_FD_ENV,
            path.display()
        )));
    }
    Ok(())
}

/// A creator run by hand (no control channel in its environment, no tracer): as the handout's
/// example, `open --name N --create --size 10000` creates, maps and closes the table and leaves
/// the object, which must have mode 0600 as it has graded: the mode does not depend on who runs
/// the program.
pub fn created_by_hand(run: &mut Run) -> Result<(), Fail> {
    let name = run.ipc_name("made-by-hand");
    let path = dev_shm(&name);
    let args = [
        "open",
        "--name",
        name.as_str(),
        "--create",
        "--size",
        "10000",
    ];
    let mut proc = run.spawn_stopped_ungraded(&args)?;
    proc.set_roles(|_| "the creator run by hand".into());
    force::resume(proc.pid.as_raw())?;
    let status = proc.wait_until(Instant::now() + Duration::from_secs(5))?;
    let mode = std::fs::metadata(&path).map(|m| m.permissions().mode() & 0o777);
    let _ = std::fs::remove_file(&path);
    let Some(status) = status else {
        proc.kill_tree();
        return Err(Fail::failed(format!(
            "run by hand (without the grader's control channel, {} unset) as `open --name {name} \
             --create --size 10000`, the program had not exited 5 s later: run by hand it \
             creates, maps, says the size and exits",
            ipc_labs_driver::CONTROL_FD_ENV
        )));
    };
    match mode {
        Ok(0o600) => Ok(()),
        Ok(mode) => Err(Fail::failed(format!(
            "run by hand (without the grader's control channel, {} unset) as `open --name {name} \
             --create --size 10000`, the program made {} with mode {mode:03o} ({}), where graded \
             it makes it 600: the mode depends on whether it believes it is graded; create the \
             object with shm_open(..., 0600) whoever runs the program",
            ipc_labs_driver::CONTROL_FD_ENV,
            path.display(),
            wrong_with(mode)
        ))),
        // Not created: the graded checks say why (a bad name, a failed call).
        Err(_) if !status.success() => Ok(()),
        Err(_) => Err(Fail::failed(format!(
            "run by hand (without the grader's control channel, {} unset) as `open --name {name} \
             --create --size 10000`, the program exited with success and left no {}: run by \
             hand it creates the object and leaves it (it does not unlink it)",
            ipc_labs_driver::CONTROL_FD_ENV,
            path.display()
        ))),
    }
}
