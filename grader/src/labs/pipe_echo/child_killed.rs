//! A child killed by each signal that ends a process on request (`SIGTERM`, `SIGINT`,
//! `SIGHUP`) and by others that end it by default (`SIGUSR2`, `SIGALRM`): however polite the
//! signal, the child did not exit with status 0, and `wait()` must say `ChildFailed`.

use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::outside::{self, describe_status};
use super::returned::Returned;
use super::session::{Flags, settle_in_read, start};
use crate::engine::{Fail, Run};

/// Every signal here ends the child by default; none is one `main.rs` handles.
const KILLING: &[Signal] = &[
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGUSR2,
    Signal::SIGALRM,
];

pub fn killed_child_fails(run: &mut Run) -> Result<String, Fail> {
    let mut wrong = Vec::new();
    let mut tried = Vec::new();
    for &signal in KILLING {
        let input = run.random_bytes(1 << 10);
        let mut session = start(run, input, Flags::default())?;
        let child = session.child;
        settle_in_read(child);
        kill(Pid::from_raw(child), signal).map_err(|e| Fail::Grader(format!("kill: {e}")))?;
        let status = outside::zombie_status_within(child, Duration::from_secs(1));
        let done = session.exchange()?;
        session.finish()?;
        // A child that outlived the signal (blocked or handled it) ended some other way: the
        // other checks judge that.
        let Some(status) = status.filter(|&s| libc::WIFSIGNALED(s)) else {
            continue;
        };
        tried.push(signal.as_str());
        if Returned::parse(&done.wait) != Returned::ChildFailed {
            wrong.push(format!(
                "the child {}, and wait() returned `{}`",
                describe_status(status),
                done.wait
            ));
        }
    }
    if !wrong.is_empty() {
        return Err(Fail::failed(format!(
            "the grader killed the echo child with a signal as it waited for input (before the \
             transfer), one run for each of {}: {}; a child ended by a signal did not exit \
             with status 0, whichever signal it was (a request to stop, such as SIGTERM, SIGINT \
             or SIGHUP, included): wait() returns Ok only for Exited(_, 0), and ChildFailed for \
             any other end",
            KILLING
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            wrong.join("; ")
        )));
    }
    Ok(format!(
        "a child killed by {} was ChildFailed every time",
        tried.join(", ")
    ))
}
