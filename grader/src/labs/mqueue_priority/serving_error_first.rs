//! When serving fails and the clean-up after it fails too, serve() answers serving's error:
//! the close's and the unlink's errors are returned only when serving ended well. Each way of
//! failing (a garbled message, the handler's error, a failed `mq_receive`) is paired with a
//! failing clean-up: the queue's name removed by the grader (the unlink's `ENOENT`), or the
//! `mq_close` made to fail with `EIO` (ptrace).

use nix::mqueue::{MQ_OFlag, mq_close, mq_getattr, mq_send, mq_unlink};

use super::jobs::Job;
use super::observe::queue_fds;
use super::protocol::{
    Consumer, consumer, failed_errno, failed_with, grader_open, grader_send, job_message, said,
    shutdown_message,
};
use crate::engine::tracer::{Action, Call, Tracer};
use crate::engine::{Fail, Run};

/// What the consumer's serving runs into, and the kind it must answer.
enum Failing {
    Garbled,
    Handler,
    Receive,
}

pub fn serving_error_before_clean_up(run: &mut Run) -> Result<(), Fail> {
    garbled_and_name_removed(run)?;
    handler_fails_and_close_fails(run)?;
    receive_fails_and_name_removed(run)
}

fn masked(answer: &ipc_labs_driver::Message, failing: Failing, clean_up: &str) -> Fail {
    let (what, kind) = match failing {
        Failing::Garbled => ("a garbled message ('X' alone) ended serving", "garbled"),
        Failing::Handler => (
            "the handler failed on the second job (--fail-after 1)",
            "handler",
        ),
        Failing::Receive => (
            "the grader made its mq_receive fail with EBADF (ptrace)",
            "mq-receive (EBADF)",
        ),
    };
    let cause = if failed_with(answer, "not-found")
        || failed_with(answer, "mq-close")
        || failed_with(answer, "mq-unlink")
    {
        "serve() returned the clean-up's error in place of serving's: it checks the close's and \
         the unlink's results (a `?` on each) before the serving outcome. Close and unlink \
         whatever happened, then return serving's error first; the clean-up's errors are the \
         answer only when serving ended well"
    } else {
        "serving's error is the answer, whatever the clean-up after it gave"
    };
    Fail::failed(format!(
        "{what}, and then {clean_up}; the consumer said {}, not `failed` with kind={kind}: \
         {cause}",
        said(answer)
    ))
}

/// A garbled message sent through a descriptor the grader keeps after removing the name.
fn garbled_and_name_removed(run: &mut Run) -> Result<(), Fail> {
    let name = run.ipc_name("garbled-unlinked");
    let mut consumer = consumer(run, &name, &[])?;
    let kept = grader_open(&name, MQ_OFlag::O_WRONLY)?;
    let removed = mq_unlink(name.as_str());
    let sent = mq_send(&kept, b"X", 1);
    let _ = mq_close(kept);
    if let Err(e) = removed.and(sent) {
        return Err(Fail::Grader(format!(
            "removing {name} and sending a garbled message: {e}"
        )));
    }
    consumer.go()?;
    let answer = consumer.answer()?;
    super::protocol::release(&mut consumer.proc)?;
    if failed_with(&answer, "garbled") {
        return Ok(());
    }
    Err(masked(
        &answer,
        Failing::Garbled,
        "the consumer's own mq_unlink found no such name (ENOENT: the grader had removed it, \
         as an administrator's clean-up may)",
    ))
}

/// Two jobs for a consumer whose handler fails on the second, its `mq_close` made to fail.
fn handler_fails_and_close_fails(run: &mut Run) -> Result<(), Fail> {
    let name = run.ipc_name("handler-close");
    let mut consumer = consumer(run, &name, &["--fail-after".into(), "1".into()])?;
    let job = |payload: &[u8]| Job {
        priority: 1,
        payload: payload.to_vec(),
    };
    let jobs = [job_message(&job(b"one")), job_message(&job(b"two"))];
    grader_send(&name, &jobs)?;
    let Some(fd) = queue_fds(consumer.pid(), &name).and_then(|fds| fds.first().copied()) else {
        return finish_after_handler(consumer);
    };
    let close = Call::arg_is(libc::SYS_close, 0, fd.fd as u64);
    let Some(mut tracer) = Tracer::attach(consumer.pid(), close, Action::Fail(libc::EIO))? else {
        run.note("no ptrace here: a failed mq_close after a failed job not tried");
        return finish_after_handler(consumer);
    };
    consumer.go()?;
    let answer = consumer.answer();
    let failed = tracer.failed_the_call()?;
    drop(tracer);
    let answer = answer?;
    let _ = mq_unlink(name.as_str());
    super::protocol::release(&mut consumer.proc)?;
    if !failed || failed_with(&answer, "handler") {
        return Ok(());
    }
    Err(masked(
        &answer,
        Failing::Handler,
        "the consumer's mq_close of the queue failed with EIO (ptrace)",
    ))
}

fn finish_after_handler(mut consumer: Consumer) -> Result<(), Fail> {
    consumer.go()?;
    let _ = consumer.answer()?;
    super::protocol::release(&mut consumer.proc)
}

/// The consumer's `mq_receive` made to fail, its name removed by the grader, the shutdown
/// queued: a consumer that retried the receive would take it, which the grader's descriptor
/// tells.
fn receive_fails_and_name_removed(run: &mut Run) -> Result<(), Fail> {
    let name = run.ipc_name("receive-unlinked");
    let mut consumer = consumer(run, &name, &[])?;
    grader_send(&name, &[shutdown_message()])?;
    let kept = grader_open(&name, MQ_OFlag::O_WRONLY)?;
    if let Err(e) = mq_unlink(name.as_str()) {
        let _ = mq_close(kept);
        return Err(Fail::Grader(format!("removing {name}: {e}")));
    }
    let receive = Call::any(libc::SYS_mq_timedreceive);
    let Some(mut tracer) = Tracer::attach(consumer.pid(), receive, Action::Fail(libc::EBADF))?
    else {
        let _ = mq_close(kept);
        run.note("no ptrace here: a failed mq_receive with its name removed not tried");
        consumer.go()?;
        let _ = consumer.answer()?;
        return super::protocol::release(&mut consumer.proc);
    };
    consumer.go()?;
    let answer = consumer.answer();
    let failed = tracer.failed_the_call()?;
    drop(tracer);
    let left = mq_getattr(&kept).map(|a| a.curmsgs()).unwrap_or(-1);
    let _ = mq_close(kept);
    let answer = answer?;
    super::protocol::release(&mut consumer.proc)?;
    if !failed || (failed_with(&answer, "mq-receive") && failed_errno(&answer, "EBADF")) {
        return Ok(());
    }
    if left == 0 {
        return Err(Fail::failed(format!(
            "the grader made the consumer's mq_receive fail with EBADF (ptrace), with the \
             shutdown queued; the consumer said {} and had taken the shutdown: it called \
             mq_receive again. Only EINTR is retried; any other error of mq_receive is \
             QueueError::Receive (kind=mq-receive), which ends serve()",
            said(&answer)
        )));
    }
    Err(masked(
        &answer,
        Failing::Receive,
        "the consumer's own mq_unlink found no such name (ENOENT: the grader had removed it)",
    ))
}
