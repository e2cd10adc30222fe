//! `shutdown()` sends on the descriptor as it is: `O_NONBLOCK` is the caller's switch
//! (`set_nonblocking()`), and anyone sharing the open queue may set it. On a non-blocking
//! descriptor a full queue is `full` for the shutdown as for a job, and the flag stays.

use std::time::{Duration, Instant};

use super::jobs::Job;
use super::observe::queue_fds;
use super::protocol::{
    consumer, failed_with, grader_send, grader_take_all, job_message, release, said,
    shutdown_message, sized, spawn_producer_stopped_with,
};
use crate::engine::tracer::{Action, Call, Reached, Tracer};
use crate::engine::{Fail, Run, force};

const MSG_SIZE: u64 = 64;

/// A blocking producer with `--shutdown` and no jobs, on a full 1-message queue: after its
/// `ready` (its own `set_nonblocking(false)` done) the grader sets `O_NONBLOCK` on its
/// descriptor through a copy of it, then holds it at its shutdown's `mq_send`. The descriptor
/// must still have `O_NONBLOCK` there, and the shutdown must say `full`.
pub fn shutdown_keeps_the_flag(run: &mut Run) -> Result<(), Fail> {
    let name = run.ipc_name("shutdown-flag");
    let consumer = consumer(run, &name, &sized(1, MSG_SIZE))?;
    let filler = Job {
        priority: 1,
        payload: b"grader-filler".to_vec(),
    };
    grader_send(&name, &[job_message(&filler)])?;
    let mut proc = spawn_producer_stopped_with(run, &name, &["--shutdown"])?;
    let pid = proc.pid.as_raw();
    force::resume(pid)?;
    let ready = proc.recv_any()?;
    let end = |proc: &mut crate::engine::Proc| -> Result<(), Fail> {
        release(proc)?;
        grader_take_all(&name, MSG_SIZE)?;
        grader_send(&name, &[shutdown_message()])?;
        Ok(())
    };
    if ready.kind != "ready" {
        end(&mut proc)?;
        consumer.serve()?;
        return Err(Fail::failed(format!(
            "a blocking producer with --shutdown said {} where it should have opened the queue",
            said(&ready)
        )));
    }
    let Some(&[fd]) = queue_fds(pid, &name).as_deref() else {
        // Not one descriptor of the queue: the checks of its descriptors judge that.
        proc.send("go", &[])?;
        let _ = proc.recv_any();
        end(&mut proc)?;
        consumer.serve()?;
        return Ok(());
    };
    let shared = force::share_descriptor(pid, fd.fd)?;
    force::set_nonblocking(&shared)?;
    drop(shared);
    let Some(mut tracer) = Tracer::attach(pid, Call::any(libc::SYS_mq_timedsend), Action::Hold)?
    else {
        run.note("no ptrace here: a shutdown on a descriptor made non-blocking not tried");
        proc.send("go", &[])?;
        let _ = proc.recv_any();
        end(&mut proc)?;
        consumer.serve()?;
        return Ok(());
    };
    proc.send("go", &[])?;
    let reached = tracer.wait(&mut proc, Instant::now() + Duration::from_secs(5))?;
    let cleared = if reached == Reached::Call {
        queue_fds(pid, &name)
            .unwrap_or_default()
            .into_iter()
            .find(|fd| !fd.nonblocking())
    } else {
        None
    };
    tracer.release();
    if let Some(cleared) = cleared {
        // Held in mq_send on the full queue, blocking: the grader makes room.
        grader_take_all(&name, MSG_SIZE)?;
        let _ = proc.recv_any();
        end(&mut proc)?;
        consumer.serve()?;
        return Err(Fail::failed(format!(
            "the grader set O_NONBLOCK on a producer's queue descriptor (through a copy of it, \
             pidfd_getfd, as another holder of the open queue may) after its `ready`; told \
             `go` with no jobs, its shutdown's mq_send came on a descriptor without O_NONBLOCK \
             ({}): shutdown() cleared the flag itself (mq_setattr, or a descriptor opened \
             anew), so it waits on a full queue where it must say `full`, and leaves the \
             caller's descriptor blocking. shutdown() sends as submit() does, on the \
             descriptor as it is: O_NONBLOCK is set_nonblocking()'s, the caller's switch",
            cleared.describe(pid)
        )));
    }
    let answer = match reached {
        Reached::Passed(Some(answer)) => answer,
        _ => proc.recv_any()?,
    };
    end(&mut proc)?;
    consumer.serve()?;
    if !failed_with(&answer, "full") {
        return Err(Fail::failed(format!(
            "the grader set O_NONBLOCK on a producer's queue descriptor (through a copy of it) \
             after its `ready`; told `go` with no jobs, on a full queue, its shutdown said {}: \
             on a non-blocking descriptor a full queue is QueueError::Full for the shutdown as \
             for a job (kind=full)",
            said(&answer)
        )));
    }
    Ok(())
}
