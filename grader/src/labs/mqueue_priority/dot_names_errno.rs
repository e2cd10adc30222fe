//! The error `create()` and `open()` give for `/.` and `/..` is the kernel's, from their
//! `mq_open()`: the grader makes that call fail with another errno than the kernel's `EACCES`,
//! and that errno must be the one reported. An answer known in advance is no answer.

use super::protocol::{
    failed_errno, failed_with, release, said, spawn_consumer_stopped, spawn_producer_stopped,
};
use crate::engine::tracer::{Action, Call, Tracer};
use crate::engine::{Fail, Run, force};

pub fn dot_names_errno_is_the_kernels(run: &mut Run) -> Result<(), Fail> {
    for name in ["/.", "/.."] {
        for creating in [true, false] {
            let (doing, who) = if creating {
                ("creating a queue", "the consumer")
            } else {
                ("a producer opening a queue", "the producer")
            };
            let mut proc = if creating {
                spawn_consumer_stopped(run, name)?
            } else {
                spawn_producer_stopped(run, name)?
            };
            let pid = proc.pid.as_raw();
            let tracer = Tracer::attach(
                pid,
                Call::any(libc::SYS_mq_open),
                Action::Fail(libc::ENOMEM),
            )?;
            force::resume(pid)?;
            let answer = proc.recv_any()?;
            let Some(mut tracer) = tracer else {
                run.note("no ptrace here: the errno of /. and /.. was not made the grader's");
                return release(&mut proc);
            };
            let called = tracer.failed_the_call()?;
            drop(tracer);
            release(&mut proc)?;
            if failed_with(&answer, "mq-open") && failed_errno(&answer, "ENOMEM") {
                continue;
            }
            let why = if !called && failed_errno(&answer, "EACCES") {
                "it answered EACCES without calling mq_open() at all: a hard-coded answer for \
                 these names, not the kernel's. Let the name reach mq_open() and report the \
                 errno it returns"
            } else if !called {
                "it never called mq_open() for this name; the kernel judges `.` and `..`, and \
                 its errno is mq-open's"
            } else {
                "mq_open()'s errno is reported as it came, QueueError::Open (kind=mq-open)"
            };
            return Err(Fail::failed(format!(
                "{doing} named {name}, the grader made {who}'s mq_open() fail with ENOMEM \
                 (ptrace), and {who} said {}, not `failed` with kind=mq-open and ENOMEM: {why}",
                said(&answer)
            )));
        }
    }
    Ok(())
}
