//! How the programs end: a producer closes its descriptor, the consumer closes and unlinks its
//! queue however serving ends. Each program is held after its last answer, so that the grader
//! sees the descriptors it still holds before the process exit closes them.

use rand::RngExt;

use std::time::Duration;

use super::observe::{Reached, queue_fds, wait_in_call};
use nix::mqueue::{MQ_OFlag, mq_close, mq_getattr};

use super::jobs::{Job, random_jobs, show};
use super::protocol::{
    Consumer, SHUTDOWN_TAG, consumer, failed_with, grader_open, grader_send, job_message, producer,
    queue_attributes, said,
};

/// How long the consumer gets to answer after a garbled message, or to be seen waiting for more.
const PATIENCE: Duration = Duration::from_secs(3);
use crate::engine::audit::message_queue_exists;
use crate::engine::tracer::{Action, Call, Tracer};
use crate::engine::{Fail, Run};

pub fn unlinked_at_end(run: &mut Run) -> Result<String, Fail> {
    // A normal end: the producer's jobs, then its shutdown.
    let name = run.ipc_name("jobs");
    let mut consumer = consumer(run, &name, &[])?;
    let jobs = random_jobs(run, 3, "u");
    let mut producer = producer(run, &name, &jobs, true, false, "the producer")?;
    // The descriptors it holds at `ready`: open()'s, which close() must close.
    let opened: Vec<i32> = queue_fds(producer.pid(), &name)
        .unwrap_or_default()
        .iter()
        .map(|fd| fd.fd)
        .collect();
    let done = producer.submit()?;
    producer.expect_done(&done)?;
    if let Some(fd) = queue_fds(producer.pid(), &name).and_then(|fds| fds.first().copied()) {
        let advice = if opened.is_empty() || opened.contains(&fd.fd) {
            "close() must mq_close the descriptor".to_string()
        } else {
            format!(
                "it is not the descriptor open() gave it ({opened:?} at `ready`), which it \
                 closed, but one it opened later (in submit() or shutdown()?): every \
                 descriptor of the queue the producer opens must be mq_closed"
            )
        };
        return Err(Fail::failed(format!(
            "the producer still holds descriptor {} of {name} after it said `done` (close() \
             was called): {advice}",
            fd.fd
        )));
    }
    producer.end()?;
    consumer.go()?;
    let done = consumer.answer_after_shutdown()?;
    if done.kind != "done" {
        return Err(Fail::failed(format!(
            "the consumer said {} instead of `done` after the shutdown message",
            said(&done)
        )));
    }
    expect_closed_and_unlinked(
        &consumer,
        "after the consumer said `done`",
        "when serving ends",
    )?;
    consumer.end(&done)?;
    ends_at_the_shutdown(run)?;

    // The handler fails on the second of three jobs, and no shutdown follows: serve() hands
    // each job to the handler as it comes and stops at the failure, so it must not wait for
    // more, and the third job stays in the queue (seen through a descriptor the grader keeps).
    let name = run.ipc_name("failing");
    let mut consumer = self::consumer(run, &name, &["--fail-after".into(), "1".into()])?;
    grader_send(
        &name,
        &[
            job_message(&jobs[0]),
            job_message(&jobs[1]),
            job_message(&jobs[2]),
        ],
    )?;
    let kept = grader_open(&name, MQ_OFlag::O_WRONLY)?;
    let answer = failing_handler(&mut consumer, &name);
    let left = mq_getattr(&kept).map(|a| a.curmsgs()).unwrap_or(-1);
    let _ = mq_close(kept);
    let answer = answer?;
    if !failed_with(&answer, "handler") {
        return Err(Fail::failed(format!(
            "when the handler fails on the second job the consumer must report kind=handler; \
             it said {}",
            said(&answer)
        )));
    }
    if left != 1 {
        return Err(Fail::failed(format!(
            "the grader queued three jobs for a consumer whose handler fails on the second \
             (--fail-after 1); it said kind=handler, but the queue then held {left} message(s), \
             not 1 (the third job, never served): {}",
            if left == 0 {
                "serve() received the job behind the failing one, which is now lost: it received \
                 it ahead, before handing the failing job to the handler, or went on receiving \
                 after the failure. serve() receives a message only once the handler has \
                 returned, and a handler error ends it at once, leaving the rest in the queue"
            } else {
                "serve() takes one message at a time and stops at the handler's error"
            }
        )));
    }
    expect_closed_and_unlinked(
        &consumer,
        "after the consumer failed serving a job (kind=handler)",
        "on its error paths too (do not return early with `?` before the unlink)",
    )?;
    super::protocol::release(&mut consumer.proc)?;

    // A message that is neither a job nor the shutdown: receive() fails inside serve().
    let name = run.ipc_name("garbled");
    let mut consumer = self::consumer(run, &name, &[])?;
    let mut garbled = vec![b'X'];
    let extra = run.rng().random_range(0..8);
    garbled.extend(run.random_bytes(extra));
    let job = Job {
        priority: 3,
        payload: b"first".to_vec(),
    };
    grader_send(&name, &[job_message(&job), (garbled, 1)])?;
    consumer.go()?;
    // A consumer that passes over the garbled message takes both and then waits for more in
    // mq_receive on the empty queue: said at once, rather than when the check's time is up.
    let answer = match wait_in_call(&mut consumer.proc, libc::SYS_mq_timedreceive, PATIENCE)? {
        Reached::Said(answer) => answer,
        Reached::InCall if queue_attributes(&name).is_ok_and(|a| a.curmsgs() == 0) => {
            return Err(Fail::failed(
                "after a job the grader sent a message that is neither a job nor the shutdown \
                 ('X' and more): the consumer took both and waits in mq_receive for more on \
                 the empty queue, so it passed over the garbled message. receive() returns it \
                 as QueueError::Garbled, which ends serve() (kind=garbled), and serve() closes \
                 and unlinks the queue then too",
            ));
        }
        Reached::InCall | Reached::NotYet => consumer.answer()?,
    };
    if !failed_with(&answer, "garbled") {
        return Err(Fail::failed(format!(
            "after a job the grader sent a message that is neither a job nor the shutdown \
             ('X' and more): the consumer must fail with kind=garbled; it said {}",
            said(&answer)
        )));
    }
    expect_closed_and_unlinked(
        &consumer,
        "after the consumer failed on a garbled message (kind=garbled)",
        "on every way it ends, a failed receive too: break out of the loop with the error \
         instead of returning from inside it",
    )?;
    super::protocol::release(&mut consumer.proc)?;
    failed_calls(run)?;
    close_fails(run)?;
    unlink_fails(run)?;
    super::opening::getattr_fails_at_open(run)?;
    super::serving_error_first::serving_error_before_clean_up(run)?;
    super::handler_errors::handler_error_stops_serving(run)?;
    Ok(
        "the producer closed its descriptor; the consumer closed and unlinked its queue after a \
        normal end, a failed job, a garbled message and a failed mq_receive (mq-receive); a \
        failed mq_send was mq-send"
            .into(),
    )
}

/// Lets a consumer whose handler fails on the second job (of three queued, no shutdown) go, and
/// returns its answer; a consumer that took every job and waits for more is a failure said at
/// once.
fn failing_handler(consumer: &mut Consumer, name: &str) -> Result<ipc_labs_driver::Message, Fail> {
    consumer.go()?;
    let answer = match wait_in_call(&mut consumer.proc, libc::SYS_mq_timedreceive, PATIENCE)? {
        Reached::Said(answer) => answer,
        Reached::InCall if queue_attributes(name).is_ok_and(|a| a.curmsgs() == 0) => {
            // It took every job and waits for more: the shutdown tells whether it had handed
            // them to the handler yet.
            consumer.send_shutdown()?;
            let after = consumer.answer_after_shutdown()?;
            let why = if failed_with(&after, "handler") {
                format!(
                    "once the grader then sent the shutdown it said {}: it handed the jobs to \
                     the handler only after the shutdown came, so it collects them first. \
                     serve() passes each job to the handler as it is received",
                    said(&after)
                )
            } else {
                format!(
                    "once the grader then sent the shutdown it said {}: it went on receiving \
                     after the handler failed",
                    said(&after)
                )
            };
            return Err(Fail::failed(format!(
                "the grader sent three jobs and no shutdown to a consumer whose handler fails \
                 on the second (--fail-after 1); the consumer took all three and waits in \
                 mq_receive for more on the empty queue instead of saying kind=handler; {why}, \
                 and a handler error ends serve() at once (kind=handler)"
            )));
        }
        Reached::InCall | Reached::NotYet => consumer.answer()?,
    };
    Ok(answer)
}

/// The errnos the grader makes `mq_send` fail with, one run each: one that the call has no
/// meaning of its own for in the library (not `EINTR`, `EAGAIN`, `EMSGSIZE`), and `EINVAL`,
/// which the kernel also gives for a priority out of range, though the library refuses those
/// before it sends: each is `mq-send` with the errno as it came.
const SEND_ERRNOS: [(i32, &str); 2] = [(libc::EBADF, "EBADF"), (libc::EINVAL, "EINVAL")];

/// The errno the grader makes the consumer's `mq_receive` fail with: `EAGAIN`, which a blocking
/// descriptor never gives (a receive on an empty queue sleeps), so that a receive() that takes
/// it for "nothing there yet" and asks again (a spin on a non-blocking descriptor) is seen.
const RECEIVE_ERRNO: (i32, &str) = (libc::EAGAIN, "EAGAIN");

/// A producer whose `mq_send` fails (with ptrace) says `mq-send` with that errno, at once; a
/// consumer whose `mq_receive` fails says `mq-receive` with that errno, and serve() closes and
/// unlinks its queue then too.
fn failed_calls(run: &mut Run) -> Result<(), Fail> {
    let name = run.ipc_name("failing-calls");
    let mut consumer = consumer(run, &name, &[])?;
    let jobs = random_jobs(run, 1, "f");
    for (errno, errno_name) in SEND_ERRNOS {
        let mut producer = producer(run, &name, &jobs, false, false, "the producer")?;
        let send = Call::any(libc::SYS_mq_timedsend);
        let Some(tracer) = Tracer::attach(producer.pid(), send, Action::Fail(errno))? else {
            run.note("no ptrace here: failed mq_send and mq_receive not tried");
            let done = producer.submit()?;
            producer.expect_done(&done)?;
            producer.end()?;
            consumer.send_shutdown()?;
            return consumer.finish().map(drop);
        };
        let answer = producer.submit();
        drop(tracer);
        let answer = answer?;
        let left = queue_attributes(&name)?.curmsgs();
        if !(failed_with(&answer, "mq-send") && super::protocol::failed_errno(&answer, errno_name))
        {
            let how = if answer.kind == "done" && left > 0 {
                "it called mq_send again and the job went: only EINTR is retried".to_string()
            } else if answer.kind == "done" {
                "it went on as if the job had been sent".to_string()
            } else if errno == libc::EINVAL {
                "the library judges the priority itself, before it sends: an EINVAL from \
                 mq_send is the call's failure, QueueError::Send (kind=mq-send) with EINVAL, \
                 not a kind taken from what the errno often means"
                    .to_string()
            } else {
                "an mq_send error other than EINTR, EAGAIN (full) and EMSGSIZE (too-big) is \
                 QueueError::Send, kind=mq-send, with the errno as it came"
                    .to_string()
            };
            return Err(Fail::failed(format!(
                "the grader made the producer's mq_send of its one job (priority {}) fail with \
                 {errno_name} (with ptrace), and it said {}, not `failed` with kind=mq-send and \
                 {errno_name}: {how}",
                jobs[0].priority,
                said(&answer)
            )));
        }
        producer.end()?;
    }
    // The consumer's receive fails, with a job in the queue.
    let (errno, errno_name) = RECEIVE_ERRNO;
    grader_send(&name, &[job_message(&jobs[0])])?;
    let receive = Call::any(libc::SYS_mq_timedreceive);
    let tracer = Tracer::attach(consumer.pid(), receive, Action::Fail(errno))?;
    consumer.go()?;
    let answer = match wait_in_call(&mut consumer.proc, libc::SYS_mq_timedreceive, PATIENCE) {
        Ok(Reached::Said(answer)) => Ok(answer),
        Ok(Reached::InCall) if queue_attributes(&name).is_ok_and(|a| a.curmsgs() == 0) => {
            drop(tracer);
            return Err(Fail::failed(format!(
                "the grader made the consumer's first mq_receive fail with {errno_name} (with \
                 ptrace); it called mq_receive again, took the job and waits for more instead \
                 of failing: only EINTR is retried, any other error of mq_receive is \
                 QueueError::Receive (kind=mq-receive), which ends serve(), EAGAIN too (on a \
                 non-blocking descriptor, retrying it spins)"
            )));
        }
        Ok(Reached::InCall | Reached::NotYet) => consumer.answer(),
        Err(fail) => Err(fail),
    };
    drop(tracer);
    let answer = answer?;
    if !(failed_with(&answer, "mq-receive") && super::protocol::failed_errno(&answer, errno_name)) {
        return Err(Fail::failed(format!(
            "the grader made the consumer's first mq_receive fail with {errno_name} (with \
             ptrace), and it said {}, not `failed` with kind=mq-receive and {errno_name}: an \
             error of mq_receive other than EINTR is QueueError::Receive with its errno, which \
             ends serve()",
            said(&answer)
        )));
    }
    expect_closed_and_unlinked(
        &consumer,
        "after the consumer's mq_receive failed (kind=mq-receive)",
        "on every way it ends, a failed mq_receive too",
    )?;
    super::protocol::release(&mut consumer.proc)
}

/// The consumer's `mq_close` of its queue at the end of serve() made to fail (with ptrace, with
/// `EIO`, which nothing else gives): serve() still unlinks the queue, and reports the error as
/// mq-close with that errno.
fn close_fails(run: &mut Run) -> Result<(), Fail> {
    let name = run.ipc_name("close-fails");
    let mut consumer = consumer(run, &name, &[])?;
    let Some(fd) = queue_fds(consumer.pid(), &name).and_then(|fds| fds.first().copied()) else {
        return Err(Fail::failed(format!(
            "the consumer holds no descriptor of {name} at `ready`: create() keeps the \
             descriptor mq_open() gave it"
        )));
    };
    let close = Call::arg_is(libc::SYS_close, 0, fd.fd as u64);
    let Some((answer, failed)) =
        shutdown_with_failing(run, &mut consumer, &name, close, libc::EIO, "mq_close")?
    else {
        return consumer.finish().map(drop);
    };
    let left = message_queue_exists(&name);
    if left {
        let _ = nix::mqueue::mq_unlink(name.as_str());
    }
    super::protocol::release(&mut consumer.proc)?;
    if !failed {
        return Ok(());
    }
    if left {
        return Err(Fail::failed(format!(
            "the grader made the consumer's mq_close of its queue fail with EIO (with ptrace) \
             at the end of serve(), after the shutdown message, and {name} was still there once \
             it said {}: serve() unlinks the queue however it ends, a failed mq_close too. Keep \
             close()'s result, unlink, and only then return the first error (no `?` on the \
             close before the unlink)",
            said(&answer)
        )));
    }
    if !(failed_with(&answer, "mq-close") && super::protocol::failed_errno(&answer, "EIO")) {
        return Err(Fail::failed(format!(
            "the grader made the consumer's mq_close of its queue fail with EIO (with ptrace) \
             at the end of serve(), after the shutdown message; it unlinked the queue but said \
             {}, not `failed` with kind=mq-close and EIO: an error of mq_close is \
             QueueError::Close with its errno, returned once the queue is unlinked",
            said(&answer)
        )));
    }
    Ok(())
}

/// The shutdown sent to a consumer whose `call` at the end of serve() is made to fail with
/// `errno` (ptrace): what it said, and whether the call was made and failed. `None` where it
/// may not be traced: the shutdown is then sent as usual, the failure not tried.
fn shutdown_with_failing(
    run: &mut Run,
    consumer: &mut Consumer,
    name: &str,
    call: Call,
    errno: i32,
    call_name: &str,
) -> Result<Option<(ipc_labs_driver::Message, bool)>, Fail> {
    let Some(mut tracer) = Tracer::attach(consumer.pid(), call, Action::Fail(errno))? else {
        run.note(format!(
            "no ptrace here: a failed {call_name} in serve() not tried"
        ));
        consumer.send_shutdown()?;
        return Ok(None);
    };
    grader_send(name, &[super::protocol::shutdown_message()])?;
    consumer.go()?;
    let answer = consumer.answer();
    let failed = tracer.failed_the_call()?;
    drop(tracer);
    Ok(Some((answer?, failed)))
}

/// The queue's name removed by someone else (the grader's `mq_unlink`, as an administrator's
/// clean-up may) while the consumer serves, the shutdown then sent through a descriptor the
/// grader kept: the consumer's own `mq_unlink` at the end of serve() finds nothing (ENOENT), and
/// serve() must close its descriptor all the same.
fn unlink_fails(run: &mut Run) -> Result<(), Fail> {
    let name = run.ipc_name("unlinked-by-others");
    let mut consumer = consumer(run, &name, &[])?;
    let kept = grader_open(&name, MQ_OFlag::O_WRONLY)?;
    let removed = nix::mqueue::mq_unlink(name.as_str());
    let (bytes, priority) = super::protocol::shutdown_message();
    let sent = nix::mqueue::mq_send(&kept, &bytes, priority);
    let _ = mq_close(kept);
    if let Err(e) = removed.and(sent) {
        return Err(Fail::Grader(format!(
            "removing {name} and sending the shutdown: {e}"
        )));
    }
    consumer.go()?;
    let answer = consumer.answer()?;
    let held = queue_fds(consumer.pid(), &name).and_then(|fds| fds.first().copied());
    super::protocol::release(&mut consumer.proc)?;
    match held {
        Some(fd) => Err(Fail::failed(format!(
            "the grader removed {name} (mq_unlink) while the consumer served, as an \
             administrator's clean-up may, and sent the shutdown through a descriptor it kept, so \
             that the consumer's own mq_unlink at the end of serve() finds no such name \
             (ENOENT); the consumer said {} and still holds its descriptor {} of the queue: \
             serve() closes the descriptor however it ends, when the unlink fails too. Do both \
             whatever the other returned, and only then return the first error (no `?` on \
             the unlink before the close)",
            said(&answer),
            fd.fd
        ))),
        None if !failed_with(&answer, "not-found") => Err(Fail::failed(format!(
            "the grader removed {name} (mq_unlink) while the consumer served, and sent the \
             shutdown through a descriptor it kept, so that the consumer's own mq_unlink at \
             the end of serve() failed with ENOENT; the consumer closed its descriptor but said \
             {}, not `failed` with kind=not-found: serve() returns unlink()'s error (ENOENT is \
             QueueError::NotFound) once it has closed, it does not discard it",
            said(&answer)
        ))),
        None => unlink_refused(run),
    }
}

/// The consumer's `mq_unlink` at the end of serve() made to fail with `EACCES` (ptrace; as for
/// a name in a directory it may not write): serve() reports it, kind=mq-unlink with that errno,
/// once it has closed its descriptor.
fn unlink_refused(run: &mut Run) -> Result<(), Fail> {
    let name = run.ipc_name("unlink-refused");
    let mut consumer = consumer(run, &name, &[])?;
    let unlink = Call::any(libc::SYS_mq_unlink);
    let Some((answer, failed)) =
        shutdown_with_failing(run, &mut consumer, &name, unlink, libc::EACCES, "mq_unlink")?
    else {
        return consumer.finish().map(drop);
    };
    let held = queue_fds(consumer.pid(), &name).and_then(|fds| fds.first().copied());
    let _ = nix::mqueue::mq_unlink(name.as_str());
    super::protocol::release(&mut consumer.proc)?;
    if !failed {
        return Err(Fail::failed(format!(
            "after the shutdown message the consumer said {} without calling mq_unlink (the \
             grader traced it): serve() unlinks its queue when serving ends",
            said(&answer)
        )));
    }
    if let Some(fd) = held {
        return Err(Fail::failed(format!(
            "the grader made the consumer's mq_unlink at the end of serve() fail with EACCES \
             (ptrace); the consumer said {} and still holds its descriptor {} of {name}: \
             serve() closes the descriptor however the unlink goes",
            said(&answer),
            fd.fd
        )));
    }
    if !(failed_with(&answer, "mq-unlink") && super::protocol::failed_errno(&answer, "EACCES")) {
        return Err(Fail::failed(format!(
            "the grader made the consumer's mq_unlink at the end of serve() fail with EACCES \
             (ptrace), after the shutdown message; the consumer said {}, not `failed` with \
             kind=mq-unlink and EACCES: serve() returns unlink()'s error \
             (QueueError::Unlink with its errno) once it has closed, it does not discard it",
            said(&answer)
        )));
    }
    Ok(())
}

/// A job queued behind the shutdown (a lower priority): serving ends at the shutdown, and the
/// job stays in the queue, seen through a descriptor the grader keeps.
fn ends_at_the_shutdown(run: &mut Run) -> Result<(), Fail> {
    let name = run.ipc_name("behind");
    let mut consumer = consumer(run, &name, &[])?;
    let first = Job {
        priority: 20,
        payload: b"first".to_vec(),
    };
    let behind = Job {
        priority: 5,
        payload: b"behind".to_vec(),
    };
    grader_send(
        &name,
        &[
            job_message(&first),
            (vec![SHUTDOWN_TAG], 10),
            job_message(&behind),
        ],
    )?;
    let queue = grader_open(&name, MQ_OFlag::O_WRONLY)?;
    consumer.shutdown_from_grader = true;
    consumer.go()?;
    let answer = consumer.answer_after_shutdown();
    let left = mq_getattr(&queue).map(|a| a.curmsgs()).unwrap_or(-1);
    let _ = mq_close(queue);
    let answer = answer?;
    if answer.kind != "done" {
        return Err(Fail::failed(format!(
            "the grader queued a job (priority 20), the shutdown (priority 10) and a job behind \
             it (priority 5); the consumer said {} instead of `done`",
            said(&answer)
        )));
    }
    let served = consumer.end(&answer)?;
    if served != [first] || left != 1 {
        let served: Vec<String> = served.iter().map(|j| show(&j.payload)).collect();
        return Err(Fail::failed(format!(
            "the grader queued a job (priority 20), the shutdown (priority 10) and a job behind \
             it (priority 5); the consumer served [{}] and left {left} message(s) in the queue: \
             serving ends at the shutdown message, even with jobs still queued behind it \
             (they stay unserved; serve() does not drain the queue first)",
            served.join(", ")
        )));
    }
    Ok(())
}

/// The consumer, held after its answer, holds no descriptor of its queue and the queue is gone.
fn expect_closed_and_unlinked(consumer: &Consumer, when: &str, paths: &str) -> Result<(), Fail> {
    let name = &consumer.name;
    if message_queue_exists(name) {
        return Err(Fail::failed(format!(
            "{name} still exists {when}: serve() must close and mq_unlink the queue {paths}; a \
             queue nobody unlinks stays in the kernel until reboot"
        )));
    }
    if let Some(fd) = queue_fds(consumer.pid(), name).and_then(|fds| fds.first().copied()) {
        return Err(Fail::failed(format!(
            "{name} was unlinked, but the consumer still holds its descriptor {} {when}: serve() \
             must mq_close the descriptor as well",
            fd.fd
        )));
    }
    Ok(())
}
