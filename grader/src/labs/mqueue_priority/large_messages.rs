//! Payloads past the machine's usual message size: a queue's messages may be larger than
//! 8192 bytes where `msgsize_max` allows (root raises it, as does an administrator), and a job
//! goes whole up to the queue's own `max_payload`, not up to a size the code assumed. Root
//! only: the consumer runs in an IPC namespace of the grader's whose `msgsize_max` is 65536,
//! the producer joins it.

use rand::RngExt;

use super::jobs::{Job, encode_jobs, served_jobs};
use super::limits::consumer_args;
use super::protocol::{field, release, said, sized};
use crate::engine::{Fail, Run};

/// The queue's message size: twice the machine's default limit.
const MSG_SIZE: u64 = 16384;
/// Payloads at the old limit, one past it, and the largest the queue takes.
const SIZES: [usize; 3] = [8191, 8192, MSG_SIZE as usize - 1];

pub fn large_payloads(run: &mut Run) -> Result<Option<String>, Fail> {
    let name = run.ipc_name("large");
    let (consumer_args, output) = consumer_args(run, &name, &sized(4, MSG_SIZE));
    let Some(mut consumer) = run.spawn_with_message_queue_sysctls(&consumer_args, 10, 65536)?
    else {
        run.note("payloads past 8191 bytes not tried: only root may raise msgsize_max");
        return Ok(None);
    };
    consumer.set_roles(|_| "the consumer".into());
    let ready = consumer.recv_any()?;
    if ready.kind != "ready" || field(&ready, "max_payload") != MSG_SIZE - 1 {
        consumer.kill_tree();
        return Err(Fail::failed(format!(
            "asked for a queue of {MSG_SIZE}-byte messages where msgsize_max is 65536 (an IPC \
             namespace of the grader's), the consumer said {}, not `ready` with \
             max_payload={}: the limits are those /proc/sys/fs/mqueue says, read at every \
             create()",
            said(&ready),
            MSG_SIZE - 1
        )));
    }
    let priority = run.rng().random_range(1..100);
    let jobs: Vec<Job> = SIZES
        .iter()
        .map(|&len| Job {
            priority,
            payload: run.random_bytes(len),
        })
        .collect();
    let file = run.path("large-jobs.bin");
    std::fs::write(&file, encode_jobs(&jobs))?;
    let args = [
        "producer",
        "--name",
        name.as_str(),
        "--jobs",
        &file.display().to_string(),
        "--shutdown",
    ];
    let mut producer = run.spawn_in_ipc_namespace_of(&args, consumer.pid.as_raw())?;
    producer.set_roles(|_| "the producer".into());
    let said_first = producer.recv_any()?;
    let answer = match said_first.kind.as_str() {
        "ready" => {
            producer.send("go", &[])?;
            producer.recv_any()
        }
        _ => Ok(said_first),
    };
    let refused = |what: String| {
        Fail::failed(format!(
            "in a queue of {MSG_SIZE}-byte messages (max_payload {}; msgsize_max raised to 65536 \
             in an IPC namespace of the grader's), the producer submitting payloads of \
             {SIZES:?} bytes {what}: every payload up to the queue's max_payload goes, whole, \
             whatever the message size; a buffer of a size fixed in the code (8192, the usual \
             msgsize_max) is too small here: size it from the queue's mq_msgsize",
            MSG_SIZE - 1
        ))
    };
    let answer = match answer {
        Ok(answer) => answer,
        Err(Fail::Crashed(how)) => {
            producer.kill_tree();
            consumer.kill_tree();
            return Err(refused(format!("crashed ({how})")));
        }
        Err(fail) => {
            producer.kill_tree();
            consumer.kill_tree();
            return Err(fail);
        }
    };
    if answer.kind != "done" {
        producer.kill_tree();
        consumer.kill_tree();
        return Err(refused(format!("said {}", said(&answer))));
    }
    release(&mut producer)?;
    consumer.send("go", &[])?;
    let done = consumer.recv_any()?;
    release(&mut consumer)?;
    let served = served_jobs(&output)?;
    let lengths: Vec<usize> = served.iter().map(|j| j.payload.len()).collect();
    if done.kind != "done" || lengths != SIZES || served.iter().zip(&jobs).any(|(a, b)| a != b) {
        return Err(Fail::failed(format!(
            "in a queue of {MSG_SIZE}-byte messages (msgsize_max raised to 65536 in an IPC \
             namespace of the grader's), payloads of {SIZES:?} bytes were served as {lengths:?} \
             bytes (the consumer said {}): receive into a buffer of the queue's mq_msgsize, \
             not of a size fixed in the code",
            said(&done)
        )));
    }
    Ok(Some(format!(
        "payloads of {SIZES:?} bytes went whole through a queue of {MSG_SIZE}-byte messages"
    )))
}
