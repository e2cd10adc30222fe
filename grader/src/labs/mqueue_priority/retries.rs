//! What a retry of an interrupted call must redo: an `mq_send` that failed with `EINTR` sent
//! nothing, whatever other processes did to the queue meanwhile.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use rand::RngExt;

use super::jobs::Job;
use super::observe::{Reached as Waited, interrupt, wait_in_call};
use super::protocol::{
    consumer, grader_send, grader_take_all, grader_take_at_most, job_message, producer,
    queue_attributes, said, sized,
};
use crate::engine::tracer::{Action, Call, Reached, Tracer};
use crate::engine::{Fail, Run};

const SEND: i64 = libc::SYS_mq_timedsend;
const PATIENCE: Duration = Duration::from_secs(3);

/// A producer of one job is held at its first `mq_send`; the grader fills the queue meanwhile,
/// as other producers may, and lets the call go on: it waits for room. SIGUSR1 then interrupts
/// it (EINTR). The producer must wait in `mq_send` again and, once the grader made room, its
/// job must be in the queue exactly once: an `EINTR` means nothing was sent, however the
/// queue's count changed since the producer last looked. Only that loss fails here; other
/// answers are left to the checks of waiting that follow.
pub(super) fn interrupted_send_resent(run: &mut Run) -> Result<(), Fail> {
    const CAPACITY: u64 = 4;
    const MSG_SIZE: u64 = 64;
    let name = run.ipc_name("interrupted");
    let mut consumer = consumer(run, &name, &sized(CAPACITY, MSG_SIZE))?;
    let job = Job {
        priority: run.rng().random_range(1..100),
        payload: b"interrupted-job".to_vec(),
    };
    let mut producer = producer(
        run,
        &name,
        std::slice::from_ref(&job),
        false,
        false,
        "the producer",
    )?;
    let pid = producer.pid();
    let tracer = Tracer::attach(pid, Call::any(SEND), Action::Hold)?;
    producer.proc.send("go", &[])?;
    let Some(mut tracer) = tracer else {
        run.note("no ptrace here: a send interrupted after others filled the queue not tried");
        let _ = producer.proc.recv_any()?;
        producer.end()?;
        consumer.send_shutdown()?;
        return consumer.serve().map(drop);
    };
    if let Reached::Passed(answer) = tracer.wait(&mut producer.proc, Instant::now() + PATIENCE)? {
        drop(tracer);
        let answer = match answer {
            Some(answer) => answer,
            None => producer.proc.recv_any()?,
        };
        // No mq_send at all: what it said is judged by the checks that send jobs.
        producer.expect_done(&answer)?;
        producer.end()?;
        consumer.send_shutdown()?;
        return consumer.serve().map(drop);
    }
    let filler = Job {
        priority: job.priority,
        payload: b"the-grader's".to_vec(),
    };
    grader_send(&name, &vec![job_message(&filler); CAPACITY as usize])?;
    tracer.release();
    let asleep = wait_in_call(&mut producer.proc, SEND, PATIENCE)?;
    let interrupted =
        matches!(asleep, Waited::InCall) && interrupt(pid, Signal::SIGUSR1, Duration::from_secs(1));
    let after = if interrupted {
        wait_in_call(&mut producer.proc, SEND, PATIENCE)?
    } else {
        asleep
    };
    let answer = match after {
        Waited::InCall => {
            // Room for the job (the grader's come out first): the producer's mq_send goes
            // through.
            grader_take_at_most(&name, MSG_SIZE, CAPACITY)?;
            producer.proc.recv_any()?
        }
        Waited::Said(answer) => answer,
        Waited::NotYet => {
            run.note("the producer never waited in mq_send: an interrupted send not tried");
            grader_take_at_most(&name, MSG_SIZE, CAPACITY)?;
            producer.proc.recv_any()?
        }
    };
    let queued = queue_attributes(&name)?.curmsgs();
    if answer.kind == "done" && interrupted && queued == CAPACITY as i64 {
        let kept = grader_take_all(&name, MSG_SIZE)?;
        producer.end()?;
        consumer.send_shutdown()?;
        let _ = consumer.serve();
        return Err(Fail::failed(format!(
            "the grader held the producer at its first mq_send, filled the {CAPACITY}-message \
             queue meanwhile (as other producers may) and let the call go on, to wait for room; \
             SIGUSR1 then interrupted it (EINTR), and the producer said `done`, though its job \
             never reached the queue (the {kept} messages in it were the grader's): an mq_send \
             that fails with EINTR sent nothing. submit() calls mq_send again until it \
             succeeds, whatever the queue looked like before (its count changes as other \
             processes send)"
        )));
    }
    if answer.kind != "done" || !interrupted {
        // Another answer (an EINTR not retried, say), or no wait to interrupt (a full queue
        // taken for sent), is judged, and named, by the waits of several producers that follow.
        producer.end()?;
        grader_take_all(&name, MSG_SIZE)?;
        consumer.send_shutdown()?;
        let _ = consumer.serve();
        return Ok(());
    }
    producer.end()?;
    consumer.send_shutdown()?;
    let served = consumer.serve()?;
    if served != [job] {
        return Err(Fail::failed(format!(
            "a producer of one job, its mq_send interrupted by SIGUSR1 (EINTR) while it waited \
             for room, said {}, and the consumer then served {} job(s), not that job once: an \
             interrupted mq_send sent nothing and is called again, once",
            said(&answer),
            served.len()
        )));
    }
    Ok(())
}
