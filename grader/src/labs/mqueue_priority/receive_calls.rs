//! What a receive does besides `mq_receive`: nothing. The attributes are read once, after
//! opening; a receive that looks at the queue first (`mq_getattr`), or gives the CPU away
//! (`sched_yield`) or sleeps before its wait, spends calls and CPU where the wait belongs
//! inside `mq_receive`, at every receive.

use std::time::{Duration, Instant};

use super::blocking::{PATIENCE, RECEIVE};
use super::jobs::Job;
use super::observe::{Reached, wait_in_call};
use super::protocol::{consumer, grader_send, job_message, said, sized};
use crate::engine::tracer::{Call, Tracer};
use crate::engine::{Fail, Run};

/// Calls a consumer makes no one of from `go` to `done`: looking at the queue, asking for a
/// notification, and any wait but the one inside `mq_receive` (a yield, a sleep, a poll).
const LOOKS_OR_WAITS: [Call; 3] = [
    Call::any(libc::SYS_mq_getsetattr),
    Call::any(libc::SYS_mq_notify),
    Call::waiting(),
];

/// How many jobs the grader sends one at a time, each into the empty queue.
const ROUNDS: usize = 2;

/// A consumer traced from `go` to `done`, its looks and waits besides `mq_receive` counted,
/// while the grader sends [`ROUNDS`] jobs one at a time (each once the consumer waits in
/// `mq_receive` on the empty queue), then the shutdown: the count must be 0.
pub fn receives_look_at_nothing(run: &mut Run) -> Result<(), Fail> {
    let name = run.ipc_name("receive-calls");
    let mut consumer = consumer(run, &name, &sized(2, 64))?;
    let pid = consumer.pid();
    let tracer = Tracer::count_calls(pid, Call::any_of(&LOOKS_OR_WAITS))?;
    consumer.go()?;
    let Some(tracer) = tracer else {
        run.note("no ptrace here: the calls of each receive were not counted");
        consumer.send_shutdown()?;
        consumer.finish()?;
        return Ok(());
    };
    let mut sent = Vec::new();
    for round in 1..=ROUNDS {
        if let Reached::Said(answer) = wait_in_call(&mut consumer.proc, RECEIVE, PATIENCE)? {
            return Err(Fail::failed(format!(
                "the consumer of an empty queue said {} after the grader sent it {} job(s) one \
                 at a time: it serves each job and waits in mq_receive for the next",
                said(&answer),
                round - 1
            )));
        }
        let job = Job {
            priority: 1,
            payload: format!("job {round}, sent alone").into_bytes(),
        };
        grader_send(&name, &[job_message(&job)])?;
        sent.push(job);
    }
    let _ = wait_in_call(&mut consumer.proc, RECEIVE, PATIENCE)?;
    let mut tracer = tracer;
    // Each call was reported while the consumer was stopped in it: those before the shutdown
    // are in by now, the consumer waiting in mq_receive.
    let before_shutdown = tracer.counted_so_far(Instant::now() + Duration::from_millis(20))?;
    consumer.send_shutdown()?;
    let done = consumer.answer_after_shutdown()?;
    let after_shutdown = tracer.failed_count(Instant::now() + Duration::from_millis(20))?;
    let calls = before_shutdown + after_shutdown;
    if done.kind != "done" {
        super::protocol::release(&mut consumer.proc)?;
        return Err(Fail::failed(format!(
            "the consumer said {} instead of `done` after {ROUNDS} jobs and the shutdown",
            said(&done)
        )));
    }
    consumer.end(&done)?;
    if before_shutdown == 0 && after_shutdown > 0 {
        return Err(Fail::failed(format!(
            "receiving {ROUNDS} jobs sent one at a time into its empty queue, the consumer made \
             none of mq_getattr, mq_notify, sched_yield, a sleep or a poll (counted with \
             ptrace); once the shutdown reached it, it made {after_shutdown} before it said \
             `done`: serve() went on after the shutdown (to look at the queue, or to take what \
             is queued behind it). The shutdown ends serve() at once; jobs behind it stay in \
             the queue"
        )));
    }
    if calls > 0 {
        return Err(Fail::failed(format!(
            "from `go` to `done`, receiving {ROUNDS} jobs sent one at a time into its empty \
             queue and the shutdown, the consumer made {calls} call(s) of mq_getattr, \
             mq_notify, sched_yield, a sleep or a poll (counted with ptrace), where none \
             belongs: receive() looks at the queue (mq_getattr) or gives the CPU away \
             (sched_yield) before it waits. The attributes are read once, after opening; \
             every receive calls mq_receive at once and waits inside it"
        )));
    }
    Ok(())
}
