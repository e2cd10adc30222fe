//! The echo child blocked writing pipe B takes `SIGUSR1` there, as it does waiting for input: a
//! child that blocks signals around its writes never sees a short write or `EINTR` (the signal
//! waits, pending, until the write is over), which hides whether it handles them, and makes it
//! deaf to every signal while the parent is slow to read.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::outside;
use super::session::{Flags, settle_in_read, start};
use crate::engine::{Fail, Run, force, inspect};

/// Signals sent while the child is blocked writing: each must interrupt it.
const ROUNDS: u32 = 12;

/// Bytes the grader feeds pipe A: four times what pipe B, shrunk to a page, takes.
const FED: usize = 16 << 10;

/// Whether thread `tid` of `child` is blocked in a `write()` (or `writev()`) of descriptor `fd`.
fn writing(child: i32, fd: i32) -> bool {
    matches!(inspect::call_of(child, child), Some((n, args))
        if (n == libc::SYS_write || n == libc::SYS_writev) && args[0] == fd as u64)
}

pub fn child_interrupted_writing(run: &mut Run) -> Result<String, Fail> {
    let input = run.random_bytes(4 << 10);
    let flags = Flags {
        interruptible: true,
        ..Flags::default()
    };
    let mut session = start(run, input, flags)?;
    let child = session.child;
    settle_in_read(child);
    let pipes = session.pipes()?;
    let fd = pipes.child_writes_b;
    // Before `go` the parent reads nothing: pipe B, one page, fills and the child blocks in it.
    force::set_pipe_capacity(child, fd, 4096)?;
    let mut feed = outside::open_pipe(child, pipes.child_reads_a, true)?;
    let mut echo = outside::open_pipe(child, fd, false)?;
    let fed = run.random_bytes(FED);
    outside::put_bytes(&mut feed, &fed)?;
    drop(feed);
    let until = Instant::now() + Duration::from_secs(2);
    while !writing(child, fd) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut verdict = Ok(());
    if writing(child, fd) {
        std::thread::sleep(Duration::from_millis(5));
        let waiting = BTreeMap::from([(child, "write()")]);
        let still = || {
            let mut now = BTreeMap::new();
            if writing(child, fd) {
                now.insert(child, "write()");
            }
            now
        };
        if let Err((round, gave_up)) =
            outside::interrupt_waiting(child, &waiting, ROUNDS, "writing pipe B", &still)
        {
            let blocks =
                inspect::has_signal(child, child, inspect::SignalMask::Blocked, libc::SIGUSR1);
            let cause = if blocks {
                "the child blocks signals while it writes the echo (sigprocmask() around \
                 write_all(), say), so they wait, pending, until the write is over: a signal \
                 must reach the child wherever it waits; block none, and handle what a signal \
                 does to a write() (a short count, EINTR) by going on with what is left"
            } else {
                "a write() interrupted by a signal returns a short count or fails with EINTR: \
                 that is no error; go on with what is left, with no limit"
            };
            verdict = Err(Fail::failed(format!(
                "with pipe B shrunk to one page and {FED} bytes fed into pipe A by the grader, \
                 the echo child (pid {child}) was blocked writing pipe B (fd {fd}); SIGUSR1 (the \
                 program's handler, without SA_RESTART) was sent to it {ROUNDS} times, and at \
                 signal {round}: {}: {cause}",
                gave_up.join("; ")
            )));
        }
    } else {
        run.note("the echo child was not seen blocked writing pipe B: not interrupted there");
    }
    // The grader's bytes, echoed, taken back out of pipe B: the exchange that follows is whole.
    let mut taken = 0;
    let until = Instant::now() + Duration::from_secs(3);
    while taken < FED && Instant::now() < until {
        let got = outside::take_bytes(&mut echo, FED - taken)?.len();
        if got == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        taken += got;
    }
    drop(echo);
    let done = session.exchange();
    if verdict.is_err() {
        if done.is_ok() {
            session.finish()?;
        }
        return verdict.map(|()| String::new());
    }
    let done = done?;
    if taken == FED {
        session.verify_echo(&done)?;
    }
    session.finish()?;
    Ok(format!(
        "blocked writing pipe B, the echo child took SIGUSR1 {ROUNDS} times and went on writing"
    ))
}
