//! What one message may hold: a whole job of any length the queue takes, nothing too long, no
//! priority out of range, and nothing but a job or the shutdown.

use std::time::{Duration, Instant};

use ipc_labs_driver::Message;
use nix::mqueue::{MQ_OFlag, mq_close, mq_getattr};
use rand::RngExt;

use super::jobs::{Job, payload_change, show, total_payload};
use super::protocol::{
    JOB_TAG, MQ_PRIO_MAX, SHUTDOWN_TAG, consumer, failed_errno, failed_with, field, grader_open,
    grader_send, job_message, producer, queue_attributes, said, shutdown_message, sized,
};
use crate::engine::tracer::{Action, Call, Reached, Tracer};
use crate::engine::{Fail, Run};

pub fn message_boundaries(run: &mut Run) -> Result<String, Fail> {
    let max = 8191;
    let all = [0, 1, 2, 3, 100, 1000, 4095, 4096, max - 1, max];
    // Two rounds of five jobs and the shutdown, which all fit in the queue before the consumer
    // starts: a consumer that fails cannot leave a producer blocked.
    for (round, sizes) in all.chunks(5).enumerate() {
        let name = run.ipc_name(&format!("jobs-{round}"));
        let mut consumer = consumer(run, &name, &sized(6, 8192))?;
        if consumer.max_payload != max {
            return Err(Fail::failed(format!(
                "in a queue of 8192-byte messages the largest payload is {} bytes, expected \
                 {max} (the message size minus the tag byte)",
                consumer.max_payload
            )));
        }
        let priority = run.rng().random_range(1..100);
        let mut jobs: Vec<Job> = sizes
            .iter()
            .map(|&len| Job {
                priority,
                payload: run.random_bytes(len),
            })
            .collect();
        // Some payloads end in NUL bytes (the 1-byte one is a NUL alone): a payload is opaque
        // bytes, not a C string whose terminator may be dropped.
        for job in &mut jobs {
            let len = job.payload.len();
            let nuls = match len {
                1 => 1,
                3 => 2,
                4096 => 1,
                _ if len == max => 3,
                _ => 0,
            };
            job.payload[len - nuls..].fill(0);
        }
        let mut producer = producer(run, &name, &jobs, true, false, "the producer")?;
        let done = producer.submit()?;
        if done.kind != "done" {
            // It submits in order and stops at its first error: the jobs in the queue are the
            // ones before the one it refused.
            let queued = queue_attributes(&name)?.curmsgs() as usize;
            let stopped = match sizes.get(queued) {
                Some(&len) if len == max => format!(
                    ": the {queued} jobs before it are in the queue, so it refused the \
                     {len}-byte payload, which fills a 8192-byte message exactly with its tag \
                     byte (1 + {len} = 8192). Refuse only a payload longer than the message \
                     size minus the tag byte (>, not >=)"
                ),
                Some(&len) => format!(
                    ": the {queued} jobs before it are in the queue, so it refused the \
                     {len}-byte payload; every size up to the message size minus the tag byte \
                     must go"
                ),
                None => ": every size up to the message size minus the tag byte must go".into(),
            };
            return Err(Fail::failed(format!(
                "the producer said {} submitting payloads of {sizes:?} bytes to a queue that \
                 takes up to {max}{stopped}",
                said(&done)
            )));
        }
        producer.expect_io_through_queue(total_payload(&jobs))?;
        producer.end()?;
        consumer.go()?;
        let answer = consumer.answer_after_shutdown()?;
        if answer.kind != "done" {
            // The jobs, of one priority, come out in the order sent, then the shutdown.
            let at = field(&answer, "served") as usize;
            let garbled_job = sizes.get(at).map(|len| {
                format!(
                    "the job with a {len}-byte payload ('J' and {len} bytes) was taken for \
                     garbled: a job is 'J' followed by any bytes, none at all included"
                )
            });
            let hint = if failed_with(&answer, "garbled") && garbled_job.is_some() {
                garbled_job.as_deref().unwrap_or_default()
            } else if failed_with(&answer, "garbled") {
                "the shutdown, the last message, came out garbled after every job: either \
                 receive() decoded more than the bytes mq_receive returned (a message is exactly \
                 the bytes mq_receive returned, its return value, not the whole buffer), or \
                 shutdown() sent more than 'Q' alone"
            } else if failed_errno(&answer, "EMSGSIZE") {
                "mq_receive refused the buffer (EMSGSIZE): the receive buffer must hold \
                 mq_msgsize bytes, whatever the length of the message waiting"
            } else {
                "each message holds one job whole: receive it into a buffer of mq_msgsize bytes \
                 and keep the length mq_receive returns"
            };
            return Err(Fail::failed(format!(
                "the consumer said {} while receiving payloads of {sizes:?} bytes: {hint}",
                said(&answer)
            )));
        }
        consumer.expect_io_through_queue(total_payload(&jobs))?;
        let served = consumer.end(&answer)?;
        let lengths: Vec<usize> = served.iter().map(|j| j.payload.len()).collect();
        if lengths != sizes {
            if served.len() == jobs.len()
                && let Some((got, sent)) = served
                    .iter()
                    .zip(&jobs)
                    .find(|(got, sent)| got.payload != sent.payload)
            {
                return Err(Fail::failed(format!(
                    "payloads of {sizes:?} bytes were served as {lengths:?} bytes; the job of {} \
                     came out as {}: {}",
                    show(&sent.payload),
                    show(&got.payload),
                    payload_change(&sent.payload, &got.payload)
                )));
            }
            return Err(Fail::failed(format!(
                "payloads of {sizes:?} bytes were served as {lengths:?} bytes: a message is one \
                 job; keep exactly the bytes mq_receive returned (its return value), minus the \
                 tag"
            )));
        }
        for (job, sent) in served.iter().zip(&jobs) {
            if job.payload != sent.payload {
                return Err(Fail::failed(format!(
                    "a {}-byte payload arrived with the right length but other bytes: pass the \
                     payload through untouched (no text conversion)",
                    sent.payload.len()
                )));
            }
        }
    }
    let large = super::large_messages::large_payloads(run)?
        .map(|said| format!("; {said}"))
        .unwrap_or_default();
    Ok(format!(
        "payloads of {all:?} bytes each arrived whole, as one job, through the queue{large}"
    ))
}

pub fn oversized_refused(run: &mut Run) -> Result<String, Fail> {
    const MSG_SIZE: usize = 256;
    let name = run.ipc_name("jobs");
    let mut consumer = consumer(run, &name, &["--msg-size".into(), MSG_SIZE.to_string()])?;
    // The longest payload that fits goes in; the next one is refused, and the producer stops
    // there (it submits its jobs in order and stops at the first error).
    let fits = Job {
        priority: 1,
        payload: run.random_bytes(MSG_SIZE - 1),
    };
    for (len, before) in [(MSG_SIZE, Some(&fits)), (100_000, None)] {
        let mut jobs: Vec<Job> = before.into_iter().cloned().collect();
        let index = jobs.len();
        jobs.push(Job {
            priority: 1,
            payload: run.random_bytes(len),
        });
        let queued_before = queue_attributes(&name)?.curmsgs();
        let mut producer = producer(run, &name, &jobs, false, false, "the producer")?;
        if producer.max_payload != MSG_SIZE - 1 {
            return Err(Fail::failed(format!(
                "the producer, opening a queue of {MSG_SIZE}-byte messages, said at `ready` \
                 that its largest payload is {} bytes, not {}: max_payload() is the queue's \
                 mq_msgsize (read with mq_getattr() at open) minus the tag byte, not a limit \
                 of the system's (msgsize_max) or a constant; submit() compares with it before \
                 it sends",
                producer.max_payload,
                MSG_SIZE - 1
            )));
        }
        // The payload must be compared before sending: an mq_send of the whole message ('J' and
        // the payload) is held, whatever the kernel would then say.
        let whole = len as u64 + 1;
        let tried = Call::arg_is(libc::SYS_mq_timedsend, 2, whole);
        let answer = match Tracer::attach(producer.pid(), tried, Action::Hold)? {
            None => producer.submit()?,
            Some(mut tracer) => {
                producer.proc.send("go", &[])?;
                match tracer.wait(&mut producer.proc, Instant::now() + Duration::from_secs(5))? {
                    Reached::Call => {
                        tracer.release();
                        let answer = producer.proc.recv_any()?;
                        if !failed_with(&answer, "too-big") {
                            // Sent, cut or refused by mq_send: said below.
                            return Err(Fail::failed(too_big_answer(
                                len,
                                &answer,
                                index,
                                queue_attributes(&name)?.curmsgs() - queued_before,
                            )));
                        }
                        return Err(Fail::failed(format!(
                            "submitting a {len}-byte payload to a queue whose messages hold 255 \
                             bytes of payload (256 with the tag), the producer called mq_send \
                             with the whole {whole}-byte message (the grader held it there) and \
                             then said {}: it leaves the length to the kernel (mq_send's \
                             EMSGSIZE) instead of comparing the payload with max_payload() \
                             first. A payload longer than max_payload() is QueueError::TooBig \
                             and nothing is sent: check it before mq_send",
                            said(&answer)
                        )));
                    }
                    Reached::Passed(answer) => {
                        drop(tracer);
                        match answer {
                            Some(answer) => answer,
                            None => producer.proc.recv_any()?,
                        }
                    }
                }
            }
        };
        let queued = queue_attributes(&name)?.curmsgs() - queued_before;
        let refused_at = field(&answer, "index") as usize;
        if failed_with(&answer, "too-big") && refused_at == index && queued == index as i64 {
            producer.end()?;
            continue;
        }
        return Err(Fail::failed(too_big_answer(len, &answer, index, queued)));
    }
    let queued = queue_attributes(&name)?.curmsgs();
    if queued != 1 {
        return Err(Fail::failed(format!(
            "after a 255-byte payload and two refused ones the queue holds {queued} message(s), \
             not 1: a job that does not fit is not sent at all"
        )));
    }
    consumer.send_shutdown()?;
    let served = consumer.serve()?;
    if served != [fits] {
        let got: Vec<String> = served.iter().map(|j| show(&j.payload)).collect();
        return Err(Fail::failed(format!(
            "only the 255-byte payload fitted, yet the consumer served {}: a payload that does \
             not fit is refused whole, never cut to fit",
            got.join(", ")
        )));
    }
    Ok(
        "a 255-byte payload went into 256-byte messages; 256-byte and 100000-byte payloads were \
        kind=too-big and nothing of them was queued"
            .into(),
    )
}

/// What to say when a producer did not refuse a `len`-byte payload (at job `index`, after
/// `index` jobs that fit) with too-big, `queued` messages having reached the queue.
fn too_big_answer(len: usize, answer: &Message, index: usize, queued: i64) -> String {
    let what = format!(
        "submitting a {len}-byte payload to a queue whose messages hold 255 bytes of payload \
         (256 with the tag)"
    );
    if answer.kind == "failed" && (field(answer, "index") as usize) < index {
        return format!(
            "the producer refused the 255-byte payload before it with {}: 255 bytes fit (the \
             message size minus the tag byte); refuse only longer payloads",
            said(answer)
        );
    }
    if failed_errno(answer, "EMSGSIZE") && !failed_with(answer, "too-big") {
        return format!(
            "{what}, the producer said {}: the payload reached mq_send, which refused the \
             message as too long. The tag byte counts: the longest payload is msg_size - 1 \
             (max_payload()); compare with that and return QueueError::TooBig before sending",
            said(answer)
        );
    }
    if failed_with(answer, "too-big") {
        return format!(
            "{what}, the producer said kind=too-big but {} message(s) of it reached the queue: \
             check the length before mq_send, and send nothing of a job that does not fit",
            queued - index as i64
        );
    }
    let how = match queued - index as i64 {
        0 => "nothing of it reached the queue, yet it was not refused".to_string(),
        1 => "one message reached the queue for it: it was cut to fit".to_string(),
        n => format!("{n} messages reached the queue for it: it was split"),
    };
    format!(
        "{what}, the producer said {}; {how}. Refuse it with QueueError::TooBig, never cut it \
         to fit",
        said(answer)
    )
}

pub fn bad_priority(run: &mut Run) -> Result<String, Fail> {
    let name = run.ipc_name("jobs");
    let mut consumer = consumer(run, &name, &[])?;
    let top = Job {
        priority: MQ_PRIO_MAX - 1,
        payload: b"highest-priority".to_vec(),
    };
    let beyond = run.rng().random_range(MQ_PRIO_MAX + 1..=u32::MAX);
    // u32::MAX: the largest value a priority can hold, where arithmetic on it overflows.
    let probes = [(MQ_PRIO_MAX, Some(&top)), (beyond, None), (u32::MAX, None)];
    for (priority, before) in probes {
        let mut jobs: Vec<Job> = before.into_iter().cloned().collect();
        let index = jobs.len();
        jobs.push(Job {
            priority,
            payload: b"out-of-range".to_vec(),
        });
        let queued_before = queue_attributes(&name)?.curmsgs();
        let mut producer = producer(run, &name, &jobs, false, false, "the producer")?;
        // The priority must be compared before sending: an mq_send with it is reported, whatever
        // the kernel then says of it.
        let tried = Call::arg_is(libc::SYS_mq_timedsend, 3, u64::from(priority));
        let tracer = Tracer::attach(producer.pid(), tried, Action::Report)?;
        let answer = producer.submit();
        let sent = match tracer {
            Some(mut tracer) => tracer.failed_the_call()?,
            None => false,
        };
        let answer = match answer {
            Err(Fail::Crashed(crash)) => {
                let largest = if priority == u32::MAX {
                    " (u32::MAX, the largest a priority can hold; smaller ones past the range \
                     were refused)"
                } else {
                    ""
                };
                return Err(Fail::failed(format!(
                    "submitting a job with priority {priority}{largest}, the producer crashed \
                     ({crash}) instead of saying `failed` with kind=bad-priority: compare the \
                     priority itself with MQ_PRIO_MAX (priority >= MQ_PRIO_MAX); arithmetic on \
                     it before the comparison (priority + 1) overflows at the type's largest \
                     value"
                )));
            }
            other => other?,
        };
        let queued = queue_attributes(&name)?.curmsgs() - queued_before;
        let refused_at = field(&answer, "index") as usize;
        if failed_with(&answer, "bad-priority")
            && refused_at == index
            && queued == index as i64
            && sent
        {
            return Err(Fail::failed(format!(
                "submitting a job with priority {priority}, the producer called mq_send with \
                 that priority (the grader saw the call) and then said {}: it leaves the range \
                 to the kernel (mq_send's EINVAL, which has other causes too) instead of \
                 comparing the priority with MQ_PRIO_MAX first. A priority of MQ_PRIO_MAX or \
                 more is QueueError::BadPriority and nothing is sent: check it before mq_send",
                said(&answer)
            )));
        }
        if failed_with(&answer, "bad-priority") && refused_at == index && queued == index as i64 {
            producer.end()?;
            continue;
        }
        let what = format!("submitting a job with priority {priority}");
        let error = answer.get("error").unwrap_or("");
        let message = if failed_with(&answer, "bad-priority")
            && refused_at < index
            && queued == 0
            && error.contains(&format!("priority {priority}"))
        {
            format!(
                "the producer's file holds a job with priority {} and then one with {priority}; \
                 it said {} for the first job it submitted, naming priority {priority}, and \
                 queued nothing: it tried the second job before the first, so it submits its \
                 jobs in another order than the file's; submit them in the file's order, one \
                 mq_send each",
                MQ_PRIO_MAX - 1,
                said(&answer)
            )
        } else if answer.kind == "failed" && refused_at < index {
            format!(
                "the producer refused the job with priority {} (MQ_PRIO_MAX - 1) with {}: \
                 priorities go from 0 to MQ_PRIO_MAX - 1, refuse only MQ_PRIO_MAX and more",
                MQ_PRIO_MAX - 1,
                said(&answer)
            )
        } else if failed_with(&answer, "mq-send") && failed_errno(&answer, "EINVAL") {
            format!(
                "{what}, the producer said {}: the priority reached mq_send, which refused it. \
                 Priorities go from 0 to MQ_PRIO_MAX - 1 ({}): refuse MQ_PRIO_MAX and more \
                 with QueueError::BadPriority before sending (>=, not >)",
                said(&answer),
                MQ_PRIO_MAX - 1
            )
        } else if failed_with(&answer, "bad-priority") {
            format!(
                "{what}, the producer said kind=bad-priority but {} message(s) of it reached \
                 the queue: check the priority before mq_send",
                queued - index as i64
            )
        } else {
            format!(
                "{what}, the producer said {} ({} message(s) queued for it): priorities go \
                 from 0 to MQ_PRIO_MAX - 1; refuse MQ_PRIO_MAX and more with \
                 QueueError::BadPriority, never change the priority",
                said(&answer),
                queued - index as i64
            )
        };
        return Err(Fail::failed(message));
    }
    consumer.send_shutdown()?;
    let served = consumer.serve()?;
    if served != [top] {
        let got: Vec<u32> = served.iter().map(|j| j.priority).collect();
        return Err(Fail::failed(format!(
            "only the job with priority {} was valid, yet the consumer served jobs with \
             priorities {got:?}",
            MQ_PRIO_MAX - 1
        )));
    }
    Ok(format!(
        "priority {} went; {MQ_PRIO_MAX}, {beyond} and {} were kind=bad-priority and nothing \
         of them was queued",
        MQ_PRIO_MAX - 1,
        u32::MAX
    ))
}

pub fn garbled_refused(run: &mut Run) -> Result<String, Fail> {
    let mut quit = vec![SHUTDOWN_TAG];
    let extra = run.rng().random_range(1..8);
    quit.extend((0..extra).map(|_| run.rng().random_range(b'A'..=b'Z')));
    let mut unknown = vec![loop {
        let tag: u8 = run.rng().random();
        if tag != JOB_TAG && tag != SHUTDOWN_TAG {
            break tag;
        }
    }];
    unknown.extend(run.random_bytes(4));
    // The tags in lower case: the nearest wrong tags, a job and a shutdown but for one bit.
    let mut lower_job = vec![JOB_TAG.to_ascii_lowercase()];
    lower_job.extend(run.random_bytes(4));
    let cases = [
        ("a message of 'Q' and more bytes", quit),
        ("an empty message", Vec::new()),
        ("a message with another tag", unknown),
        ("a job tagged 'j' (lower case)", lower_job),
        (
            "a shutdown tagged 'q' (lower case)",
            vec![SHUTDOWN_TAG.to_ascii_lowercase()],
        ),
        (
            "a shutdown followed by a NUL byte (as C sends \"Q\" with strlen() + 1)",
            vec![SHUTDOWN_TAG, 0],
        ),
        // A line ending or a blank after the tag: a shutdown typed in a shell (`echo Q`), or
        // trimmed before decoding.
        (
            "a shutdown followed by a newline (as `echo Q` sends it)",
            vec![SHUTDOWN_TAG, b'\n'],
        ),
        (
            "a shutdown followed by CR LF",
            vec![SHUTDOWN_TAG, b'\r', b'\n'],
        ),
        ("a shutdown followed by a space", vec![SHUTDOWN_TAG, b' ']),
    ];
    for (case, (what, garbled)) in cases.into_iter().enumerate() {
        let name = run.ipc_name(&format!("jobs-{case}"));
        let mut consumer = consumer(run, &name, &[])?;
        // Served in priority order: a job, the garbled message, a job, the shutdown.
        let first = Job {
            priority: 20,
            payload: b"before".to_vec(),
        };
        let after = Job {
            priority: 5,
            payload: b"after".to_vec(),
        };
        grader_send(
            &name,
            &[
                job_message(&first),
                (garbled.clone(), 10),
                job_message(&after),
                shutdown_message(),
            ],
        )?;
        // The grader keeps a descriptor, to see what is left in the queue afterwards.
        let queue = grader_open(&name, MQ_OFlag::O_WRONLY)?;
        consumer.shutdown_from_grader = true;
        consumer.go()?;
        let answer = consumer.answer_after_shutdown();
        let left = mq_getattr(&queue).map(|a| a.curmsgs()).unwrap_or(-1);
        let _ = mq_close(queue);
        let answer = answer?;
        if failed_with(&answer, "garbled") {
            super::protocol::release(&mut consumer.proc)?;
            continue;
        }
        let served = if answer.kind == "done" {
            consumer.end(&answer)?
        } else {
            Vec::new()
        };
        let message = format!("{what} ({})", show(&garbled));
        let taken_as = if answer.kind == "done" && left == 2 && served == [first.clone()] {
            "it took it as the shutdown and stopped, leaving the job after it and the shutdown in \
             the queue"
                .to_string()
        } else if answer.kind == "done" && left == 0 && served == [first.clone(), after.clone()] {
            "it skipped it: it served the job before it and the job after it, then stopped at the \
             shutdown, and said `done`; a garbled message is not passed over"
                .to_string()
        } else if served
            .iter()
            .any(|j| j.payload != first.payload && j.payload != after.payload)
        {
            "it served it as a job".to_string()
        } else {
            format!("it said {}", said(&answer))
        };
        return Err(Fail::failed(format!(
            "the grader sent {message} between two jobs: {taken_as}. Only 'Q' alone is the \
             shutdown and only 'J' and a payload a job (a tag is one exact byte); receive() returns \
             anything else as \
             QueueError::Garbled (kind=garbled), which ends serve()"
        )));
    }
    Ok(
        "'Q' with more bytes (a line ending, a space), an empty message, another tag, 'j' and 'q' \
        each ended the consumer with kind=garbled"
            .into(),
    )
}
