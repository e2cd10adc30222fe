//! What reaches the queue from a producer, and when: `full` only as `mq_send`'s answer on a
//! full queue, and the jobs sent in its file's order.

use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::mqueue::{MQ_OFlag, mq_close, mq_receive};
use rand::RngExt;

use super::jobs::Job;
use super::protocol::{
    consumer, field, grader_open, grader_send, grader_take_all, job_message, produce, producer,
    shutdown_message, sized,
};
use crate::engine::tracer::{Call, Tracer};
use crate::engine::{Fail, Run};

/// `full` is the queue's answer at each send (`EAGAIN`), not a count the producer keeps: a
/// non-blocking producer comes up (`ready`, `O_NONBLOCK` set) while its 3-message queue holds 2
/// messages, which the grader then takes out; its 2 jobs and the shutdown then all fit.
pub fn full_only_when_full(run: &mut Run) -> Result<(), Fail> {
    const CAPACITY: u64 = 3;
    let name = run.ipc_name("room");
    let consumer = consumer(run, &name, &sized(CAPACITY, 64))?;
    let filler = Job {
        priority: 1,
        payload: b"grader-filler".to_vec(),
    };
    grader_send(&name, &[job_message(&filler), job_message(&filler)])?;
    let jobs = [
        Job {
            priority: run.rng().random_range(0..100),
            payload: b"fits-1".to_vec(),
        },
        Job {
            priority: run.rng().random_range(0..100),
            payload: b"fits-2".to_vec(),
        },
    ];
    let producer = producer(run, &name, &jobs, true, true, "the non-blocking producer")?;
    grader_take_all(&name, consumer.msg_size)?;
    let done = produce(producer)?;
    let served = consumer.serve()?;
    let (submitted, full) = (field(&done, "submitted"), field(&done, "full"));
    if (submitted, full) == (2, 0) && served.len() == 2 {
        return Ok(());
    }
    Err(Fail::failed(format!(
        "a non-blocking producer said `ready` while its {CAPACITY}-message queue held 2 \
         messages; the grader then took them out, so its 2 jobs and the shutdown all had room, \
         yet it said {submitted} submitted and {full} full: it judged the queue full without \
         mq_send's EAGAIN, from a count of its own (the room it saw at open or at \
         set_nonblocking). Others send and receive meanwhile: submit() calls mq_send for every \
         job and reports QueueError::Full only when that mq_send fails with EAGAIN"
    )))
}

/// Each `full` is an `mq_send` that failed with `EAGAIN`: a non-blocking producer of 3 jobs on
/// a queue the grader filled makes an `mq_send` for each (ptrace counts them). A producer that
/// looks at the queue's count first and says `full` without sending loses a job whenever a
/// receiver makes room between its look and its decision.
pub fn full_from_each_send(run: &mut Run) -> Result<(), Fail> {
    const JOBS: u64 = 3;
    let name = run.ipc_name("still-full");
    let mut consumer = consumer(run, &name, &sized(2, 64))?;
    let filler = Job {
        priority: 1,
        payload: b"grader-filler".to_vec(),
    };
    grader_send(&name, &[job_message(&filler), job_message(&filler)])?;
    let jobs: Vec<Job> = (1..=JOBS)
        .map(|i| Job {
            priority: run.rng().random_range(0..100),
            payload: format!("no-room-{i}").into_bytes(),
        })
        .collect();
    let mut producer = producer(run, &name, &jobs, false, true, "the non-blocking producer")?;
    let sends = Tracer::count_calls(producer.pid(), Call::any(libc::SYS_mq_timedsend))?;
    let done = producer.submit()?;
    producer.expect_done(&done)?;
    // Let go first: the tracer ends with the producer, and each call was reported while the
    // producer was stopped in it, before its `done`.
    producer.end()?;
    let sent = match sends {
        Some(tracer) => Some(tracer.failed_count(Instant::now() + Duration::from_secs(2))?),
        None => None,
    };
    grader_take_all(&name, consumer.msg_size)?;
    consumer.send_shutdown()?;
    consumer.serve()?;
    let (submitted, full) = (field(&done, "submitted"), field(&done, "full"));
    if (submitted, full) != (0, JOBS) {
        return Err(Fail::failed(format!(
            "a non-blocking producer of {JOBS} jobs on a 2-message queue the grader had filled \
             said {submitted} submitted and {full} full, not 0 and {JOBS}: each mq_send on the \
             full queue fails with EAGAIN, which submit() reports as QueueError::Full"
        )));
    }
    let Some(sent) = sent else {
        run.note("`full` from mq_send: ptrace not allowed here, not checked");
        return Ok(());
    };
    if u64::from(sent) < full {
        return Err(Fail::failed(format!(
            "a non-blocking producer of {JOBS} jobs on a 2-message queue the grader had filled \
             said {full} full, but made only {sent} mq_send call(s) (ptrace counted them): it \
             judged the queue full without sending, from a count (mq_getattr's mq_curmsgs \
             against mq_maxmsg, or one of its own). Between that look and its decision a \
             receiver may make room, and the job is lost as `full`: submit() calls mq_send for \
             every job and reports QueueError::Full only when that mq_send fails with EAGAIN"
        )));
    }
    Ok(())
}

/// A blocking producer sends its file's jobs in the file's order, each in its own `mq_send`: a
/// 1-message queue, which the grader empties message by message as each arrives, shows the
/// order they were sent in. The last job outranks the others: held back and sent by priority
/// it comes second.
pub fn sent_in_file_order(run: &mut Run) -> Result<(), Fail> {
    let name = run.ipc_name("one-place");
    let mut consumer = consumer(run, &name, &sized(1, 64))?;
    let low = run.rng().random_range(1..100);
    let mut jobs: Vec<Job> = (1..=3)
        .map(|i| Job {
            priority: low,
            payload: format!("in-file-{i}").into_bytes(),
        })
        .collect();
    jobs.push(Job {
        priority: low + run.rng().random_range(1..100),
        payload: b"in-file-4".to_vec(),
    });
    let mut producer = producer(run, &name, &jobs, true, false, "the producer")?;
    producer.proc.send("go", &[])?;
    let queue = grader_open(&name, MQ_OFlag::O_RDONLY)?;
    let mut arrived = Vec::new();
    let mut buffer = vec![0u8; consumer.msg_size as usize];
    let until = Instant::now() + Duration::from_secs(5);
    let outcome = loop {
        if arrived.len() > jobs.len() || Instant::now() > until {
            break Ok(());
        }
        let mut priority = 0;
        match mq_receive(&queue, &mut buffer, &mut priority) {
            Ok(len) => arrived.push(buffer[..len].to_vec()),
            Err(Errno::EAGAIN) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => break Err(Fail::Grader(format!("mq_receive from {name}: {e}"))),
        }
    };
    let _ = mq_close(queue);
    outcome?;
    let done = producer.proc.recv_any()?;
    producer.expect_done(&done)?;
    producer.end()?;
    consumer.send_shutdown()?;
    consumer.serve()?;
    let sent: Vec<Vec<u8>> = jobs.iter().map(|job| job_message(job).0).collect();
    let order: Vec<String> = arrived
        .iter()
        .map(|message| match sent.iter().position(|m| m == message) {
            Some(index) => (index + 1).to_string(),
            None if *message == shutdown_message().0 => "the shutdown".to_string(),
            None => "another message".to_string(),
        })
        .collect();
    let expected = ["1", "2", "3", "4", "the shutdown"];
    if order == expected {
        return Ok(());
    }
    Err(Fail::failed(format!(
        "a blocking producer of 4 jobs (the last of a higher priority than the 3 before it) and \
         the shutdown, into a 1-message queue the grader emptied as each message arrived: they \
         arrived as [{}] of its file, not [{}]: it sent its jobs in another order than the \
         file's (held back in the producer and sent later, or sorted first). submit() sends \
         each job as it is submitted, waiting inside mq_send for room, and the queue orders \
         them by priority",
        order.join(", "),
        expected.join(", ")
    )))
}
