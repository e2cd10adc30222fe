//! Each call `system_limits()` reads a limit with, made to fail (ptrace): `getrlimit()` of
//! `RLIMIT_MSGQUEUE`, the `read()` of each limit file, and every call naming
//! `/proc/sys/fs/mqueue` or its files (the directory missing, as where `/proc` lacks the
//! sysctls). Each must be kind=limits, with no queue created and no limit file left open.

use std::time::{Duration, Instant};

use ipc_labs_driver::Message;

use super::protocol::{
    failed_with, grader_send, release, said, shutdown_message, spawn_consumer_stopped,
};
use crate::engine::audit::message_queue_exists;
use crate::engine::tracer::{Action, Call, Match, Step, Tracer};
use crate::engine::{Fail, Run, force};

const DIRECTORY: &str = "/proc/sys/fs/mqueue";
const FILES: [&str; 2] = [
    "/proc/sys/fs/mqueue/msg_max",
    "/proc/sys/fs/mqueue/msgsize_max",
];

/// `getrlimit(RLIMIT_MSGQUEUE)`: glibc makes it a `prlimit64()` that sets nothing.
static GETRLIMIT: [Call; 2] = [
    Call {
        number: libc::SYS_prlimit64,
        matching: Match::BothBits([
            (1, u64::MAX, libc::RLIMIT_MSGQUEUE as u64),
            (2, u64::MAX, 0),
        ]),
    },
    Call::arg_is(libc::SYS_getrlimit, 0, libc::RLIMIT_MSGQUEUE as u64),
];

/// The limit files the program `pid` holds open (`/proc/PID/fd`).
pub(super) fn limit_files_open(pid: i32) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| std::fs::read_link(entry.path()).ok())
        .map(|target| target.display().to_string())
        .filter(|target| target.starts_with(DIRECTORY))
        .collect()
}

/// What a consumer did with one failure made in `system_limits()`.
struct Outcome {
    /// Its answer, or how it ended without one.
    answer: Result<Message, String>,
    /// Whether the tracer made the call fail at all.
    injected: bool,
    created: bool,
    left_open: Vec<String>,
}

/// Starts a consumer, stopped, has `attach` trace it, and sees what it said, created and left
/// open; `None` where the machine does not allow tracing.
fn consumer_failing(
    run: &mut Run,
    attach: impl FnOnce(i32) -> Result<Option<Tracer>, Fail>,
) -> Result<Option<Outcome>, Fail> {
    let name = run.ipc_name("limit-read-fails");
    let mut proc = spawn_consumer_stopped(run, &name)?;
    let pid = proc.pid.as_raw();
    let tracer = attach(pid)?;
    force::resume(pid)?;
    let answer = match proc.recv_any() {
        Ok(answer) => Ok(answer),
        Err(Fail::Failed(ended) | Fail::Crashed(ended)) => Err(ended),
        Err(other) => return Err(other),
    };
    let injected = match tracer {
        Some(mut tracer) => tracer.failed_before(Instant::now() + Duration::from_millis(100))?,
        None => {
            if let Ok(answer) = &answer {
                if answer.kind == "ready" {
                    grader_send(&name, &[shutdown_message()])?;
                    proc.send("go", &[])?;
                    let _ = proc.recv_any()?;
                }
                release(&mut proc)?;
            }
            return Ok(None);
        }
    };
    let left_open = limit_files_open(pid);
    let created = message_queue_exists(&name);
    match &answer {
        Ok(answer) => {
            if answer.kind == "ready" {
                grader_send(&name, &[shutdown_message()])?;
                proc.send("go", &[])?;
                let _ = proc.recv_any()?;
            } else if created {
                let _ = nix::mqueue::mq_unlink(name.as_str());
            }
            release(&mut proc)?;
        }
        Err(_) if created => {
            let _ = nix::mqueue::mq_unlink(name.as_str());
        }
        Err(_) => {}
    }
    Ok(Some(Outcome {
        answer,
        injected,
        created,
        left_open,
    }))
}

/// Judges one failure: `made` says what the grader did, `instead` what a wrong answer most
/// likely did in its place.
fn judge(outcome: Outcome, made: &str, instead: &str) -> Result<(), Fail> {
    if !outcome.injected {
        return Ok(());
    }
    let answer = match outcome.answer {
        Ok(answer) => answer,
        Err(ended) => {
            return Err(Fail::failed(format!(
                "{made}, and the consumer ended without an answer ({ended}): system_limits() \
                 fails with QueueError::Limits when a limit cannot be read, it does not panic \
                 (an unwrap() or expect() on that call's result)"
            )));
        }
    };
    if !failed_with(&answer, "limits") {
        let created = if outcome.created {
            ", and created the queue"
        } else {
            ""
        };
        return Err(Fail::failed(format!(
            "{made}, and the consumer said {}{created}, not `failed` with kind=limits: \
             system_limits() fails with QueueError::Limits when a limit cannot be read, \
             whatever the call and the error; {instead}",
            said(&answer)
        )));
    }
    if !outcome.left_open.is_empty() {
        return Err(Fail::failed(format!(
            "{made}; the consumer rightly said kind=limits, but then still held {} open \
             (/proc/PID/fd): system_limits() closes the files it opens on every path, an \
             error's too (a descriptor closed after a `?` or an early return leaks)",
            outcome.left_open.join(" and ")
        )));
    }
    if outcome.created {
        return Err(Fail::failed(format!(
            "{made}; the consumer said kind=limits but had created its queue: the limits are \
             read and checked before mq_open"
        )));
    }
    Ok(())
}

/// Every read of a limit made to fail, in turn; each must be kind=limits, nothing created,
/// nothing left open.
pub fn every_limit_read_fails(run: &mut Run) -> Result<(), Fail> {
    let Some(outcome) = consumer_failing(run, |pid| {
        Tracer::attach(pid, Call::any_of(&GETRLIMIT), Action::Fail(libc::EINVAL))
    })?
    else {
        run.note("failed limit reads not tried (no ptrace)");
        return Ok(());
    };
    judge(
        outcome,
        "the grader made the consumer's getrlimit(RLIMIT_MSGQUEUE) fail with EINVAL (its \
         prlimit64(), with ptrace)",
        "a limit that could not be read is no limit at all (RLIM_INFINITY), nor any other value \
         put in its place",
    )?;
    for file in FILES {
        let open = Call {
            number: libc::SYS_openat,
            matching: Match::Path(file),
        };
        let read = Call::any(libc::SYS_read);
        if let Some(outcome) = consumer_failing(run, |pid| {
            Tracer::in_turn(pid, [(open, Step::Pass), (read, Step::Fail(libc::EIO))])
        })? {
            judge(
                outcome,
                &format!(
                    "the grader made the consumer's first read() after its open of {file} fail \
                     with EIO (with ptrace)"
                ),
                "a file that opens but cannot be read is a limit that cannot be read",
            )?;
        }
    }
    let missing = Call::any_of(Vec::leak(
        std::iter::once(DIRECTORY)
            .chain(FILES)
            .map(Call::naming)
            .collect(),
    ));
    if let Some(outcome) = consumer_failing(run, |pid| {
        Tracer::fail_times(pid, missing, libc::ENOENT, 50)
    })? {
        judge(
            outcome,
            &format!(
                "the grader made every call of the consumer that names {DIRECTORY} or its files \
                 (stat, statx, access, openat, ...) fail with ENOENT (with ptrace), as where \
                 /proc has no such directory"
            ),
            "a missing directory is limits that cannot be read, never Linux's defaults (10 and \
             8192) or other constants put in their place",
        )?;
    }
    Ok(())
}
