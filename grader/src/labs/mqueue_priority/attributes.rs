//! What `attributes()` reports: the kernel's count of the queue's messages, asked for at each
//! call, not a count the program keeps.

use std::time::{Duration, Instant};

use rand::RngExt;

use super::jobs::Job;
use super::protocol::{
    grader_send, grader_take_all, job_message, queue_attributes, release, said, spawn_producer,
};
use crate::engine::tracer::{Call, Tracer};
use crate::engine::{Fail, Run};

/// How many times in a row the monitor reads the attributes: an answer kept for a while (however
/// short) is reused at once by the calls that follow, which then make no `mq_getsetattr`.
const SAMPLES: u32 = 12;

/// Where a program answers `attributes()` from a count it read before.
const NOT_ASKED: &str = "it answers from a count it read before, without asking the kernel again";

/// With messages waiting in queue `name` (`capacity` messages of `msg_size` bytes, empty), a
/// producer that opens it must report them; then the grader takes them all out and the producer
/// submits one job: its `done` says what attributes() reports then (1), which a count read at
/// open misses, and so does one that adds its own sends to it. At least 2 wait, so that neither
/// of those is 1; room is left for the producer's job, which stays in the queue.
pub fn counted_by_the_kernel(
    run: &mut Run,
    name: &str,
    capacity: u64,
    msg_size: u64,
) -> Result<(), Fail> {
    let waiting = run.rng().random_range(2..capacity);
    let jobs: Vec<(Vec<u8>, u32)> = (0..waiting)
        .map(|_| {
            job_message(&Job {
                priority: 1,
                payload: b"waiting".to_vec(),
            })
        })
        .collect();
    grader_send(name, &jobs)?;
    let own = [Job {
        priority: 1,
        payload: b"one-more".to_vec(),
    }];
    let (mut producer, ready, _) = spawn_producer(run, name, &own, false, false, "a producer")?;
    if ready.kind != "ready" {
        return Ok(());
    }
    let reported = ready.get("queued").unwrap_or("nothing").to_string();
    let taken = grader_take_all(name, msg_size)?;
    producer.send("go", &[])?;
    let done = producer.recv_any()?;
    release(&mut producer)?;
    if reported != waiting.to_string() {
        return Err(Fail::failed(format!(
            "with {waiting} messages waiting in the queue (mq_curmsgs {waiting} in the grader's \
             mq_getattr), a producer that opened it says its attributes() reports queued = \
             {reported}: return mq_getattr's mq_curmsgs, as the kernel counts it now"
        )));
    }
    let now = queue_attributes(name)?.curmsgs() as u64;
    let after = done.get("queued").unwrap_or("nothing").to_string();
    if done.kind == "done" && taken == waiting && now == 1 && after != "1" {
        let cause = if after == waiting.to_string() {
            format!(", the count it reported at `ready`: {NOT_ASKED}")
        } else if after == (waiting + 1).to_string() {
            ", the count when it opened the queue plus the job it sent itself: it counts its \
             own sends instead of asking the kernel, blind to what other processes send and \
             receive"
                .to_string()
        } else {
            String::new()
        };
        return Err(Fail::failed(format!(
            "with {waiting} messages waiting, a producer said `ready` (attributes() then \
             reported queued = {waiting}); the grader then took those {waiting} out, the \
             producer submitted one job and says its attributes() then reports queued = \
             {after}, where the grader's mq_getattr counts {now}{cause}: attributes() calls \
             mq_getattr each time, for the queue's count changes as any process sends and \
             receives"
        )));
    }
    Ok(())
}

/// A monitor of queue `name` reads the attributes [`SAMPLES`] times in a row, traced: each
/// `attributes()` must make its own `mq_getsetattr()` (what `mq_getattr()` calls). An answer
/// reused for a few milliseconds is caught whatever the machine's load: the calls after the
/// first come within microseconds of it, and a stop at each call the grader counts holds the
/// program only while it is in the kernel, not between the calls.
pub fn asked_each_time(run: &mut Run, name: &str) -> Result<(), Fail> {
    let args = [
        "monitor".to_string(),
        "--name".into(),
        name.into(),
        "--samples".into(),
        SAMPLES.to_string(),
    ];
    let mut monitor = run.spawn(&args)?;
    monitor.set_roles(|_| "the monitor".into());
    let ready = monitor.recv_any()?;
    if ready.kind != "ready" {
        return Err(Fail::failed(format!(
            "a monitor (`monitor --name {name}`) said {} where it should have opened the queue",
            said(&ready)
        )));
    }
    let pid = monitor.pid.as_raw();
    let tracer = Tracer::count_calls(pid, Call::any(libc::SYS_mq_getsetattr))?;
    monitor.send("go", &[])?;
    let done = monitor.recv_any()?;
    // Let go first: the tracer ends with the monitor, and each call was reported while the
    // monitor was stopped in it, before its `done`.
    release(&mut monitor)?;
    let asked = match tracer {
        Some(tracer) => Some(tracer.failed_count(Instant::now() + Duration::from_secs(2))?),
        None => None,
    };
    if done.kind != "done" {
        return Err(Fail::failed(format!(
            "a monitor reading the attributes of {name} {SAMPLES} times said {} instead of \
             `done`",
            said(&done)
        )));
    }
    let Some(asked) = asked else {
        run.note("attributes() asked each time: ptrace not allowed here, not checked");
        return Ok(());
    };
    if asked < SAMPLES {
        return Err(Fail::failed(format!(
            "a monitor called attributes() {SAMPLES} times in a row and made {asked} \
             mq_getsetattr() call(s) meanwhile (the grader counted them with ptrace): {} of its \
             answers came without a call, so {NOT_ASKED}. attributes() calls mq_getattr each \
             time, for the queue's count changes as any process sends and receives",
            SAMPLES - asked
        )));
    }
    Ok(())
}
