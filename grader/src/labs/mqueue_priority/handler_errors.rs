//! A handler's error stops `serve()` at once: the job it failed is not handed over again, and
//! no job after it is served. The grader makes main.rs's handler fail for a passing reason (its
//! write to the output file refused once, as a full disk does): a consumer that tries the job
//! again would then go on serving.

use std::time::Duration;

use super::blocking::{PATIENCE, RECEIVE};
use super::jobs::Job;
use super::observe::{Reached, wait_in_call};
use super::protocol::{
    consumer, failed_with, grader_send, job_message, release, said, shutdown_message, sized,
};
use crate::engine::tracer::{Action, Call, Tracer};
use crate::engine::{Fail, Run, inspect};

/// The calls a write to the output file may be made with.
const WRITES: &[i64] = &[
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_pwrite64,
    libc::SYS_pwritev,
];

/// The consumer's descriptor of its output file (opened after `go`).
fn output_fd(pid: i32, output: &std::path::Path) -> Option<i32> {
    let path = std::fs::canonicalize(output).ok()?;
    let path = path.to_str()?;
    let view = inspect::view(pid)?;
    view.fds
        .iter()
        .find(|(_, target)| target.as_str() == path)
        .map(|(&fd, _)| fd)
}

/// A consumer of 8192-byte messages, waiting in `mq_receive` with its output file open, has
/// its next write to that file made to fail with `ENOSPC` (ptrace), once; then it is sent a
/// job that fills a message (main.rs's handler writes it through a buffer of 8 KiB, so the
/// write comes while that job is handled), a second job and the shutdown. The handler fails
/// on the first job: the consumer must say `failed` with kind=handler.
pub fn handler_error_stops_serving(run: &mut Run) -> Result<(), Fail> {
    let name = run.ipc_name("handler-fails");
    let mut consumer = consumer(run, &name, &sized(3, 8192))?;
    let pid = consumer.pid();
    consumer.go()?;
    match wait_in_call(&mut consumer.proc, RECEIVE, PATIENCE)? {
        Reached::InCall => {}
        // Not waiting on its empty queue: the checks of blocking judge that.
        Reached::Said(_) | Reached::NotYet => return release(&mut consumer.proc),
    }
    let Some(fd) = output_fd(pid, &consumer.output) else {
        // No output file open while it waits: nothing to make fail here.
        consumer.send_shutdown()?;
        let _ = consumer.answer_after_shutdown()?;
        return release(&mut consumer.proc);
    };
    let Some(mut tracer) =
        Tracer::attach(pid, Call::one_of_on(WRITES, fd), Action::Fail(libc::ENOSPC))?
    else {
        run.note("no ptrace here: a handler failing once was not tried");
        consumer.send_shutdown()?;
        let _ = consumer.answer_after_shutdown()?;
        return release(&mut consumer.proc);
    };
    let first = Job {
        priority: 2,
        payload: vec![b'h'; consumer.max_payload],
    };
    let second = Job {
        priority: 1,
        payload: b"after the failed job".to_vec(),
    };
    grader_send(
        &name,
        &[
            job_message(&first),
            job_message(&second),
            shutdown_message(),
        ],
    )?;
    consumer.shutdown_from_grader = true;
    let answer = consumer.answer_after_shutdown()?;
    let failed_write =
        tracer.failed_before(std::time::Instant::now() + Duration::from_millis(50))?;
    drop(tracer);
    if failed_with(&answer, "handler") || !failed_write {
        // Stopped at the failed job; or no write reached the file while serving (nothing
        // failed, nothing to judge).
        return release(&mut consumer.proc);
    }
    let output = consumer.output.clone();
    release(&mut consumer.proc)?;
    // The first job's record begins with its priority and length; twice in a row, the handler
    // was given the same job again after its error.
    let mut header = first.priority.to_le_bytes().to_vec();
    header.extend((first.payload.len() as u32).to_le_bytes());
    let written = std::fs::read(&output).unwrap_or_default();
    let again = written.starts_with(&[header.as_slice(), header.as_slice()].concat());
    let what = if again {
        "serve() handed the same job to the handler again after its error (its record begins \
         twice in the output file): a retry of the handler"
    } else if answer.kind == "done" {
        "serve() went on after the handler's error (a retry of the handler, or its error \
         ignored)"
    } else {
        "serve() did not report the handler's error as QueueError::Handler"
    };
    Err(Fail::failed(format!(
        "the grader made the consumer's write to its output file fail once with ENOSPC \
         (ptrace), as a full disk does, while main.rs's handler wrote the first of two jobs: \
         the handler returned its error, and the consumer said {}, not `failed` with \
         kind=handler. {what}. A handler's error stops serve() at once with \
         QueueError::Handler: the job is not tried again and no job after it is served",
        said(&answer)
    )))
}
