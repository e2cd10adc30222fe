//! `O_NONBLOCK` is a flag of the descriptor, which anyone sharing the open queue may set:
//! `set_nonblocking(false)` clears it whatever it was before, and a shutdown on a descriptor
//! that has it fails on a full queue like a job, `full`.

use std::time::{Duration, Instant};

use super::jobs::Job;
use super::observe::queue_fds;
use super::protocol::{
    consumer, failed_with, grader_send, grader_take_all, job_message, release, said,
    shutdown_message, sized, spawn_producer_stopped_with,
};
use crate::engine::tracer::{Action, Call, Reached, Tracer};
use crate::engine::{Fail, Run, force};

const SEND: i64 = libc::SYS_mq_timedsend;
const MSG_SIZE: u64 = 64;

/// The nonblocking-full check: the blocking module's part, then this one's.
pub fn nonblocking_full(run: &mut Run) -> Result<String, Fail> {
    let summary = super::nonblocking::nonblocking_full(run)?;
    flag_set_by_another(run)?;
    flag_cleared_for_a_blocking_producer(run)?;
    super::attribute_errors::setattr_fails(run)?;
    super::shutdown_flags::shutdown_keeps_the_flag(run)?;
    Ok(format!(
        "{summary}; set_nonblocking(false) cleared an O_NONBLOCK set before set_nonblocking(true), \
         and a shutdown on a descriptor made non-blocking meanwhile was kind=full"
    ))
}

/// A producer with `--nonblocking --shutdown` and no jobs, on a full 1-message queue. Held at
/// its first `mq_getsetattr()` after opening (before `set_nonblocking(true)` sets anything),
/// the grader sets `O_NONBLOCK` on its descriptor through a copy of it: at the shutdown's
/// `mq_send`, after `set_nonblocking(false)`, the descriptor must be blocking. Held there, the
/// grader sets `O_NONBLOCK` again: the `mq_send` fails with `EAGAIN`, and the shutdown must say
/// `full` rather than send again.
fn flag_set_by_another(run: &mut Run) -> Result<(), Fail> {
    let name = run.ipc_name("flags");
    let consumer = consumer(run, &name, &sized(1, MSG_SIZE))?;
    let filler = Job {
        priority: 1,
        payload: b"grader-filler".to_vec(),
    };
    grader_send(&name, &[job_message(&filler)])?;
    let mut proc = spawn_producer_stopped_with(run, &name, &["--shutdown", "--nonblocking"])?;
    let pid = proc.pid.as_raw();
    let tracer = Tracer::attach(pid, Call::any(libc::SYS_mq_getsetattr), Action::Hold)?;
    force::resume(pid)?;
    let Some(mut tracer) = tracer else {
        run.note("no ptrace here: O_NONBLOCK set by another on the descriptor not tried");
        let _ = proc.recv_any()?;
        return release(&mut proc);
    };
    let until = Instant::now() + Duration::from_secs(5);
    if tracer.wait(&mut proc, until)? != Reached::Call {
        // It never set its flags with mq_setattr: the check of the flags at `ready` judges it.
        drop(tracer);
        return Ok(());
    }
    let Some(&[fd]) = queue_fds(pid, &name).as_deref() else {
        tracer.release();
        return Ok(());
    };
    let shared = force::share_descriptor(pid, fd.fd)?;
    force::set_nonblocking(&shared)?;
    tracer.release();
    let ready = proc.recv_any()?;
    if ready.kind != "ready" {
        return Err(Fail::failed(format!(
            "a producer with --nonblocking whose descriptor the grader had made non-blocking \
             before its set_nonblocking(true) said {} where it should have said ready",
            said(&ready)
        )));
    }
    let mut tracer = hold_at_send(pid)?;
    proc.send("go", &[])?;
    match tracer.wait(&mut proc, Instant::now() + Duration::from_secs(5))? {
        Reached::Call => {}
        Reached::Passed(answer) => {
            let answer = answer.map_or("nothing".into(), |a| said(&a));
            return Err(Fail::failed(format!(
                "a producer with --nonblocking and --shutdown, its 1-message queue full, said \
                 {answer} without sending the shutdown with mq_send: after \
                 set_nonblocking(false) the shutdown waits inside mq_send for room"
            )));
        }
    }
    if let Some(still) = queue_fds(pid, &name)
        .unwrap_or_default()
        .into_iter()
        .find(|fd| fd.nonblocking())
    {
        return Err(Fail::failed(format!(
            "the grader set O_NONBLOCK on a producer's queue descriptor (through a copy of it, \
             pidfd_getfd) after its open() and before its set_nonblocking(true); then \
             set_nonblocking(false) came, yet the shutdown's mq_send comes on a descriptor that \
             still has O_NONBLOCK ({}): set_nonblocking(false) must clear O_NONBLOCK whatever \
             the flags were before (flags saved at set_nonblocking(true) and put back leave it \
             set)",
            still.describe(pid)
        )));
    }
    force::set_nonblocking(&shared)?;
    drop(shared);
    tracer.release();
    let mut tracer = hold_at_send(pid)?;
    let answer = match tracer.wait(&mut proc, Instant::now() + Duration::from_secs(5))? {
        Reached::Call => {
            return Err(Fail::failed(
                "a producer's shutdown was held at its mq_send on a full queue while the grader \
                 set O_NONBLOCK on its descriptor (through a copy of it); that mq_send then \
                 failed with EAGAIN, and the producer called mq_send again instead of \
                 answering: on a non-blocking descriptor a full queue is QueueError::Full for \
                 the shutdown as for a job (kind=full), not a reason to try again",
            ));
        }
        Reached::Passed(Some(answer)) => answer,
        Reached::Passed(None) => {
            drop(tracer);
            proc.recv_any()?
        }
    };
    if !failed_with(&answer, "full") {
        return Err(Fail::failed(format!(
            "a producer's shutdown was held at its mq_send on a full queue while the grader set \
             O_NONBLOCK on its descriptor (through a copy of it); the mq_send then failed with \
             EAGAIN, and the producer said {}: on a non-blocking descriptor a full queue is \
             QueueError::Full for the shutdown as for a job (kind=full)",
            said(&answer)
        )));
    }
    release(&mut proc)?;
    grader_take_all(&name, MSG_SIZE)?;
    grader_send(&name, &[shutdown_message()])?;
    consumer.serve()?;
    Ok(())
}

/// A tracer that holds the main thread of `pid` at its next `mq_send`.
/// `O_NONBLOCK` set on a blocking producer's descriptor by the grader (through a copy of it),
/// held at its first `mq_getsetattr()`, before main.rs's `set_nonblocking(false)`: at `ready`
/// the descriptor is blocking again. A `set_nonblocking()` that remembers the state it set and
/// skips the call when asked for it again never clears a flag set by another holder.
fn flag_cleared_for_a_blocking_producer(run: &mut Run) -> Result<(), Fail> {
    let name = run.ipc_name("cleared");
    let consumer = consumer(run, &name, &sized(1, MSG_SIZE))?;
    let mut proc = spawn_producer_stopped_with(run, &name, &[])?;
    let pid = proc.pid.as_raw();
    let tracer = Tracer::attach(pid, Call::any(libc::SYS_mq_getsetattr), Action::Hold)?;
    force::resume(pid)?;
    let Some(mut tracer) = tracer else {
        let _ = proc.recv_any()?;
        return release(&mut proc);
    };
    let until = Instant::now() + Duration::from_secs(5);
    if tracer.wait(&mut proc, until)? != Reached::Call {
        drop(tracer);
        return release(&mut proc);
    }
    let Some(&[fd]) = queue_fds(pid, &name).as_deref() else {
        tracer.release();
        let _ = proc.recv_any()?;
        return release(&mut proc);
    };
    let shared = force::share_descriptor(pid, fd.fd)?;
    force::set_nonblocking(&shared)?;
    drop(shared);
    tracer.release();
    let ready = proc.recv_any()?;
    let still = queue_fds(pid, &name)
        .unwrap_or_default()
        .into_iter()
        .find(|fd| fd.nonblocking());
    if ready.kind == "ready" {
        proc.send("go", &[])?;
        let _ = proc.recv_any()?;
    }
    release(&mut proc)?;
    grader_send(&name, &[shutdown_message()])?;
    consumer.serve()?;
    if ready.kind != "ready" {
        return Err(Fail::failed(format!(
            "a blocking producer whose descriptor the grader had made non-blocking during its \
             open() said {} where it should have said ready",
            said(&ready)
        )));
    }
    if let Some(still) = still {
        return Err(Fail::failed(format!(
            "the grader set O_NONBLOCK on a blocking producer's queue descriptor (through a \
             copy of it, pidfd_getfd, as another holder of the open queue may) during its \
             open(), before main.rs's set_nonblocking(false); at `ready` the descriptor still \
             had O_NONBLOCK ({}): set_nonblocking(false) did not call mq_setattr. A state \
             remembered in the JobQueue (skipping the call when it seems unchanged) is not the \
             descriptor's: set and clear O_NONBLOCK with mq_setattr at every call",
            still.describe(pid)
        )));
    }
    Ok(())
}

fn hold_at_send(pid: i32) -> Result<Tracer, Fail> {
    Tracer::attach(pid, Call::any(SEND), Action::Hold)?
        .ok_or_else(|| Fail::Grader(format!("ptrace of {pid} refused after it was allowed")))
}
