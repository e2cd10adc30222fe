//! A clock read that fails inside `wait()`: `clock_gettime(CLOCK_REALTIME)`, for a slice's
//! deadline, is one of wait()'s system calls, and its failure is `HandoffError::Wait` like any
//! other error of the wait, returned, never a panic. The vDSO is hidden from the program
//! (`clock.rs`), so that the read is a system call the grader can make fail.

use std::time::{Duration, Instant};

use rand::RngExt;

use super::clock::launch_without_vdso;
use super::probe;
use super::{PRODUCER, WAIT_SLICE};
use crate::engine::tracer::{Action, Call, Tracer};
use crate::engine::{Fail, Run};

/// With the consumer held before record K, the producer's next `CLOCK_REALTIME` read (for the
/// deadline of its wait for ok) is made to fail with `EINVAL`: the producer must report
/// kind=wait.
pub(super) fn clock_read_fails(run: &mut Run) -> Result<String, Fail> {
    let names = [run.ipc_name("ready"), run.ipc_name("ok")];
    let at = run.rng().random_range(2..8u64).to_string();
    let extra = ["--pause-consumer-at", at.as_str()];
    let (launch, hidden) = launch_without_vdso(run, "semaphores", names, 10, &extra)?;
    let mut handover = launch.ready()?;
    let producer = handover.producer;
    handover.go()?;
    let paused = handover.proc.recv_any()?;
    match (paused.kind.as_str(), paused.get("role")) {
        ("paused", Some("consumer")) => {}
        ("failed", _) => return Err(handover.failure(&paused)),
        (kind, _) => {
            return Err(Fail::failed(format!(
                "the program said an unexpected `{kind}`"
            )));
        }
    }
    let read = Call::arg_is(libc::SYS_clock_gettime, 0, libc::CLOCK_REALTIME as u64);
    let tracer = if hidden {
        Tracer::attach(producer, read, Action::Fail(libc::EINVAL))?
    } else {
        None
    };
    let failed = match tracer {
        Some(mut tracer) => tracer.failed_before(Instant::now() + WAIT_SLICE * 5)?,
        None => false,
    };
    if !failed {
        handover.go_on_to_the_end()?;
        return Ok("semaphores: no clock read of the producer made to fail".into());
    }
    let situation = format!(
        "the grader held the consumer before record {at} and made the clock_gettime\
         (CLOCK_REALTIME) with which {PRODUCER}, waiting for ok, read the time for its next \
         slice's deadline fail with EINVAL (semaphores)"
    );
    let panicked = |crash: String| {
        Fail::failed(format!(
            "{situation}: the producer panicked ({crash}) instead of reporting an error: a \
             failed clock_gettime() in wait() is HandoffError::Wait (kind=wait), returned with \
             its errno, not an .expect() or .unwrap(): library code that returns a Result does \
             not panic on a failing system call"
        ))
    };
    // The program's panic hook reports a panic as a message, which the engine takes for a
    // crash: here it is the verdict.
    let first = match handover
        .proc
        .recv_before(Instant::now() + Duration::from_secs(2))
    {
        Err(Fail::Crashed(crash)) if crash.contains("panicked") => {
            handover.proc.kill_tree();
            return Err(panicked(crash));
        }
        other => other?,
    };
    let reported = match first {
        Some(message)
            if message.kind == "failed"
                && message.get("role") == Some("producer")
                && message.get("kind") == Some("wait") =>
        {
            true
        }
        Some(message) if message.kind == "failed" => return Err(handover.failure(&message)),
        Some(message) => {
            return Err(Fail::failed(format!(
                "{situation}: the program said an unexpected `{}`",
                message.kind
            )));
        }
        None if probe::alive(producer) => {
            return Err(Fail::failed(format!(
                "{situation}: the producer reported nothing within 2 s, and went on: a failed \
                 clock read ends wait() with HandoffError::Wait (kind=wait); with no time read \
                 there is no deadline to wait to"
            )));
        }
        None => false,
    };
    // The consumer, let go, finds the producer gone.
    handover.proc.send("go", &[])?;
    loop {
        let message = match handover.proc.recv_any() {
            Err(Fail::Crashed(crash)) if crash.contains("panicked") && !reported => {
                handover.proc.kill_tree();
                return Err(panicked(crash));
            }
            other => other?,
        };
        match (message.kind.as_str(), message.get("kind")) {
            ("failed", Some("peer-gone")) if message.get("role") == Some("consumer") => {}
            ("ended", _) if !reported => {
                let end = message.get("producer").unwrap_or("?");
                let how = if end == "exit-101" {
                    "panicked (it exited with 101, Rust's panic status)".to_string()
                } else {
                    format!("ended ({end})")
                };
                return Err(Fail::failed(format!(
                    "{situation}: the producer {how} without reporting an error: a failed \
                     clock_gettime() in wait() is HandoffError::Wait (kind=wait), returned \
                     with its errno, not an .expect() or .unwrap(): library code that returns \
                     a Result does not panic on a failing system call"
                )));
            }
            ("ended", _) => break,
            ("failed", _) => return Err(handover.failure(&message)),
            (kind, _) => {
                return Err(Fail::failed(format!(
                    "{situation}: the program said an unexpected `{kind}`"
                )));
            }
        }
    }
    handover.exit()?;
    Ok("semaphores: the producer's clock read failing (EINVAL): kind=wait".into())
}
