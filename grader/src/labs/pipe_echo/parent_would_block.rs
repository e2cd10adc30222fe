//! The parent's read of pipe B failing with `EAGAIN`: the grader sets `O_NONBLOCK` on the
//! parent's read end (the open file description, shared as any process holding it may share it)
//! while the parent waits for an echo that cannot come (the child stopped), and interrupts that
//! wait with `SIGUSR1`. Only `EINTR` is retried: a `read()` failing with `EAGAIN` is
//! `Read(EAGAIN)`, not a cue to read again at once; a parent that waits in `poll()` never sees
//! it and goes on blocking. Either way, it does not spin.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::outside;
use super::returned::Returned;
use super::session::{Flags, settle_in_read, start};
use crate::engine::{Fail, Run, force, inspect};

/// How long the parent's threads are looked at once interrupted, after a short settling: a
/// thread that returned the error is asleep again by then (in `waitpid()`, the child stopped).
const SETTLE: Duration = Duration::from_millis(20);
const WINDOW: Duration = Duration::from_millis(60);
/// Looks at a thread needed to judge it.
const MIN_LOOKS: u32 = 8;

/// Less than pipe A holds: the parent has written it all and only waits for the echo.
const INPUT: usize = 4 << 10;

pub fn parent_read_would_block(run: &mut Run) -> Result<String, Fail> {
    let input = run.random_bytes(INPUT);
    let interruptible = Flags {
        interruptible: true,
        ..Flags::default()
    };
    let mut session = start(run, input, interruptible)?;
    let (parent, child) = (session.parent, session.child);
    settle_in_read(child);
    let pipes = session.pipes()?;
    outside::hold_stopped(child)?;
    let in_a = outside::open_pipe(child, pipes.child_reads_a, false)?;
    session.go()?;
    // The whole input in pipe A, and every thread of the parent asleep: it waits for the echo.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        let sent = outside::bytes_in_pipe(&in_a) == Some(INPUT);
        let asleep =
            inspect::view(parent).is_some_and(|view| view.threads.iter().all(|t| t.state == 'S'));
        if sent && asleep {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(in_a);
    let shared = force::share_descriptor(parent, pipes.parent_reads_b)?;
    force::set_nonblocking(&shared)?;
    drop(shared);
    force::signal_every_thread(parent, Signal::SIGUSR1);
    let setting = format!(
        "with the echo child stopped and the whole input sent, the grader set O_NONBLOCK on the \
         parent's read end of pipe B (fd {}, a flag of the open file, which any process holding \
         it may set) and interrupted the parent with SIGUSR1: a read() of pipe B then fails \
         with EAGAIN as long as it is empty",
        pipes.parent_reads_b
    );
    let advice = format!(
        "{setting}, and the parent spun on the CPU, reading again and again: it retries EAGAIN as it retries EINTR; \
         only EINTR is retried, a read() that fails with EAGAIN is an error for exchange() to \
         return (PipeEchoError::Read(EAGAIN)), not a wait for data"
    );
    let spinning = spinning_thread(parent);
    force::resume(child)?;
    if let Some((tid, runnable, looks)) = spinning {
        session.recv_done()?;
        session.finish()?;
        return Err(Fail::failed(format!(
            "{advice} (its thread {tid} was running or ready to run in {runnable} of {looks} \
             looks, with nothing to read)",
        )));
    }
    let done = session.recv_done()?;
    session.finish()?;
    match Returned::parse(&done.exchange) {
        Returned::ShortEcho { .. } => Err(Fail::failed(format!(
            "{setting}, and exchange() returned `{}` once the child was resumed: it took EAGAIN \
             (no data now) for end-of-file; only a read() that returns 0 is end-of-file, and \
             a read() that fails with EAGAIN is PipeEchoError::Read(EAGAIN)",
            done.exchange
        ))),
        _ => Ok(format!(
            "with pipe B's read end made non-blocking, the parent did not spin (exchange: {})",
            done.exchange
        )),
    }
}

/// A thread of `pid` runnable (state `R`) in nearly every look over [`WINDOW`]: spinning, as a
/// blocked thread is asleep (`S`) in all of them. Its id, and in how many of how many looks.
fn spinning_thread(pid: i32) -> Option<(i32, u32, u32)> {
    std::thread::sleep(SETTLE);
    let mut counts: std::collections::BTreeMap<i32, (u32, u32)> = Default::default();
    let started = Instant::now();
    // On a loaded machine the grader's own looks are few: the window stretches until it has
    // made enough of them to judge, at most five times over.
    let enough = |counts: &std::collections::BTreeMap<i32, (u32, u32)>| {
        counts.values().all(|(_, looks)| *looks >= MIN_LOOKS) && !counts.is_empty()
    };
    while started.elapsed() < WINDOW || (!enough(&counts) && started.elapsed() < 5 * WINDOW) {
        for (tid, state) in thread_states(pid) {
            let count = counts.entry(tid).or_default();
            count.1 += 1;
            if state == 'R' {
                count.0 += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    counts
        .into_iter()
        .find(|(_, (runnable, looks))| *looks >= MIN_LOOKS && *runnable * 10 >= *looks * 9)
        .map(|(tid, (runnable, looks))| (tid, runnable, looks))
}

/// Each thread of `pid` and its state, from `/proc/PID/task/TID/stat` alone: looked at often, a
/// spinning thread's state must be read quickly.
fn thread_states(pid: i32) -> Vec<(i32, char)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|task| {
            let tid: i32 = task.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
            // The state follows the command's name, in parentheses that it may itself hold.
            let state = stat[stat.rfind(')')? + 1..].trim_start().chars().next()?;
            Some((tid, state))
        })
        .collect()
}
