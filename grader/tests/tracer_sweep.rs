//! A grading run ends by killing the grader's children that belong to no running check (strays).
//! The checks harness grades in many threads of one process, so one run's sweep meets another
//! run's tracer while it works. A tracer must survive it, also when it traces a child of the
//! program (which leads no process group of its own): killed, it left its check crashed with
//! "the tracer did not attach".
//!
//! Its own test binary: the sweep kills every unregistered child of this process, which other
//! tests running beside it may have.

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use ipc_grader::engine::inspect;
use ipc_grader::engine::process;
use ipc_grader::engine::tracer::{Action, Call, Match, Tracer};
use nix::unistd::{Pid, getpid};

/// The pid of the process tracing `pid`, 0 for none.
fn tracer_of(pid: i32) -> i32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("TracerPid:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_tracer_of_a_programs_child_outlives_another_runs_sweep() {
    // A program in a process group of its own, as the grader starts them, and its child.
    let mut program = Command::new("sh");
    program.args(["-c", "sleep 60 & wait"]).process_group(0);
    let mut program = process::spawn_helper(&mut program).expect("start sh");
    let deadline = Instant::now() + Duration::from_secs(10);
    let child = loop {
        if let Some(&child) = inspect::children(Pid::from_raw(program.id() as i32)).first() {
            break child;
        }
        assert!(Instant::now() < deadline, "sh started no child");
        std::thread::sleep(Duration::from_millis(5));
    };
    let never = Call {
        number: libc::SYS_exit_group,
        matching: Match::Any,
    };
    let tracer = Tracer::attach(child, never, Action::Hold).expect("attach");
    let traced_before = tracer_of(child);

    process::kill_stray_children();
    std::thread::sleep(Duration::from_millis(100));
    let traced_after = tracer_of(child);
    let others: Vec<i32> = inspect::children(getpid())
        .into_iter()
        .filter(|&pid| pid != program.id() as i32)
        .collect();

    drop(tracer);
    // SAFETY: signals the process group this test started.
    unsafe { libc::kill(-(program.id() as i32), libc::SIGKILL) };
    let _ = program.wait();
    process::forget(program.id());
    if traced_before == 0 {
        eprintln!("this machine does not let the test trace (ptrace): nothing was tried");
        return;
    }
    assert_eq!(
        traced_after, traced_before,
        "the sweep killed the tracer of the program's child (children left: {others:?})"
    );
}
