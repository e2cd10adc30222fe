//! The program run as a user runs it, without the grader's control channel in its environment:
//! it must do what it does graded. What the grader looks at does not depend on what the program
//! believes: the echo child's timer is read by the tracer at its `read()` of pipe A, by hand too.

use std::time::{Duration, Instant};

use nix::unistd::Pid;

use super::child_stopped::PAGE;
use super::session::{role_of, settle_in_read};
use crate::engine::tracer::{Call, Reached, Step, Tracer};
use crate::engine::{Fail, Run, force, inspect};

/// The descriptors of `pid` that are pipes it holds beyond stdio and the control channel's
/// number, reading (`false`) or writing (`true`).
fn pipe_ends(pid: i32, writing: bool) -> Vec<i32> {
    let fds = inspect::view(pid).map(|v| v.fds).unwrap_or_default();
    fds.iter()
        .filter(|(fd, target)| **fd > 3 && target.starts_with("pipe:"))
        .map(|(fd, _)| *fd)
        .filter(|fd| inspect::fd_writable(pid, *fd) == Some(writing))
        .collect()
}

pub fn watchdog_by_hand(run: &mut Run) -> Result<String, Fail> {
    // Past what both pipes, one page each, and the child's buffer hold: a parent that writes it
    // all before it reads the echo waits for ever.
    let input = run.random_bytes(32 << 10);
    let input_path = run.path("input.bin");
    let output = run.path("output.bin");
    std::fs::write(&input_path, &input)?;
    let input_len = input.len();
    let args = [
        "--input".into(),
        input_path.into_os_string(),
        "--output".into(),
        output.clone().into_os_string(),
    ];
    let mut proc = run.spawn_stopped_ungraded(&args)?;
    let parent = proc.pid.as_raw();
    proc.set_roles(role_of(parent));
    // The parent is held right after its fork() returned: the child waits for input.
    let forked = Tracer::in_turn(parent, [(Call::any(libc::SYS_clone), Step::HoldAfter)])?;
    force::resume(parent)?;
    let Some(mut forked) = forked else {
        run.note("the grader may not trace the program here (ptrace): not run by hand");
        proc.kill_tree();
        return Ok("not run by hand".into());
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    if forked.wait(&mut proc, deadline)? != Reached::Call {
        drop(forked);
        proc.wait_until(deadline)?;
        if let Some(not_implemented) = proc.not_implemented_on_stderr() {
            return Err(not_implemented);
        }
        proc.kill_tree();
        return Ok("run by hand, the program did not fork (the graded checks say why)".into());
    }
    let child = inspect::children(Pid::from_raw(parent)).first().copied();
    if let Some(child) = child {
        settle_in_read(child);
        for fd in pipe_ends(child, false)
            .into_iter()
            .chain(pipe_ends(child, true))
        {
            force::set_pipe_capacity(child, fd, PAGE)?;
        }
    }
    let armed = match child {
        Some(child) => child_timer(child)?,
        None => None,
    };
    forked.release();
    let status = proc.wait_until(deadline)?;
    if status.is_none() {
        let seen = proc.diagnose();
        proc.kill_tree();
        return Err(Fail::failed(format!(
            "run by hand (without the grader's control channel, {} unset), with a {} KiB input \
             and both pipes one page each (the grader set their capacity as the child started), \
             the program had not finished 5 s later, where graded it finishes: it moves the \
             bytes another way when not graded, such as the whole input written before the echo \
             is read, which waits for ever once the pipes are full (the child blocked writing \
             pipe B, the parent writing pipe A). The parent reads the echo while it is still \
             writing, whoever runs the program. {seen}",
            ipc_labs_driver::CONTROL_FD_ENV,
            input_len >> 10
        )));
    }
    if armed == Some(true) {
        return Err(Fail::failed(format!(
            "run by hand (without the grader's control channel, {} unset), the echo child had \
             a real-time timer pending as it went back to read pipe A (read by the grader's \
             tracer with getitimer(ITIMER_REAL) at that read()), where graded it has none: an \
             alarm() or setitimer() armed only when the program is not graded (it looks for \
             the control channel in its environment) is a deadline all the same: SIGALRM ends \
             the child whenever its parent is slower than that (a large input, a loaded \
             machine, a program stopped with Ctrl-Z); arm no timer: the child waits by blocking \
             in read(), with no deadline, whoever runs the program",
            ipc_labs_driver::CONTROL_FD_ENV
        )));
    }
    Ok(match armed {
        Some(_) => "run by hand, the child had no timer pending at its read()".into(),
        None => "run by hand, the child's timer not read".into(),
    })
}

/// Whether the echo child, fed one byte by the grader, has a real-time timer pending as it goes
/// back to read pipe A; the byte's echo is taken back out of pipe B. `None` if not seen.
fn child_timer(child: i32) -> Result<Option<bool>, Fail> {
    settle_in_read(child);
    let (Some(&reads_a), Some(&writes_b)) = (
        pipe_ends(child, false).first(),
        pipe_ends(child, true).first(),
    ) else {
        return Ok(None);
    };
    Ok(super::child_timers::timer_at_next_read(child, reads_a, writes_b)?.flatten())
}
