//! The order jobs are served in, who may touch the queue, and the format on the queue that any
//! other program relies on.

use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::mqueue::{MQ_OFlag, MqAttr, MqdT, mq_close, mq_getattr, mq_open, mq_receive};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid, fchown};
use rand::RngExt;

use super::jobs::{Job, jobs_at, random_jobs, same_order, show, total_payload};
use super::observe::{one_queue_fd, queue_mode};
use super::protocol::{
    Consumer, JOB_TAG, MQ_PRIO_MAX, SHUTDOWN_TAG, consumer, failed_errno, failure_hint,
    grader_open, grader_send, job_message, producer, queue_attributes, release, said,
    shutdown_message, sized,
};
use crate::engine::tracer::{Action, Call, Reached as TraceReached, Step, Tracer};
use crate::engine::{Fail, Run};

pub fn priority_order(run: &mut Run) -> Result<String, Fail> {
    for round in 1..=3 {
        let name = run.ipc_name(&format!("jobs-{round}"));
        let mut consumer = consumer(run, &name, &[])?;
        expect_private(&name)?;
        let fd = one_queue_fd(consumer.pid(), &name, "the consumer", "after it said ready")?;
        if fd.access() != "O_RDONLY" {
            return Err(Fail::failed(format!(
                "the consumer's descriptor of {name} is open {} ({}): the consumer only \
                 receives, so it creates the queue O_RDONLY (producers open it O_WRONLY)",
                fd.access(),
                fd.describe(consumer.pid())
            )));
        }
        // All jobs and the shutdown fit in the queue: they are all queued before the consumer
        // receives anything. Priority 0 (that of the shutdown) and the highest are among them.
        let count = consumer.capacity.clamp(3, 8) as usize - 1;
        let middle = run.rng().random_range(1..MQ_PRIO_MAX - 1);
        let levels = match round {
            1 => vec![0, middle, MQ_PRIO_MAX - 1],
            _ => vec![
                0,
                run.rng().random_range(1..50),
                run.rng().random_range(50..100),
            ],
        };
        let jobs = jobs_at(run, count, &format!("r{round}"), &levels);
        let mut producer = producer(run, &name, &jobs, true, false, "the producer")?;
        let fd = one_queue_fd(producer.pid(), &name, "the producer", "after it said ready")?;
        if fd.access() != "O_WRONLY" {
            return Err(Fail::failed(format!(
                "the producer's descriptor of {name} is open {} ({}): a producer only sends, so \
                 it opens the queue O_WRONLY",
                fd.access(),
                fd.describe(producer.pid())
            )));
        }
        let done = producer.submit()?;
        producer.expect_done(&done)?;
        producer.expect_io_through_queue(total_payload(&jobs))?;
        producer.end()?;
        // Nobody has received yet: every job and the shutdown must be in the queue.
        let queued = queue_attributes(&name)?.curmsgs();
        let sent = jobs.len() as i64 + 1;
        if queued != sent {
            let found = drain(&name, &jobs)?;
            let hint = if queued < sent && found.jobs == jobs.len() && found.shutdowns == 0 {
                "every job is there but no shutdown: shutdown() must mq_send 'Q' alone at \
                 priority 0"
            } else if found.jobs == 0 {
                "the jobs did not go through the message queue (a file or another channel \
                 instead?): submit() must mq_send each job, 'J' and its payload, at its \
                 priority"
            } else if found.jobs < jobs.len() {
                "some jobs did not go through the message queue as they were (another channel, \
                 dropped, or changed?): submit() must mq_send each job, 'J' and its payload, \
                 at its priority"
            } else {
                "one mq_send per job, and one for the shutdown"
            };
            return Err(Fail::failed(format!(
                "round {round}: the producer said `done` after submitting {} jobs and the \
                 shutdown, but the queue, which nobody had read yet, holds {queued} \
                 message(s), not {sent}; the grader took from it {}: {hint}",
                jobs.len(),
                found.describe(jobs.len())
            )));
        }
        consumer.go()?;
        let done = consumer.answer_after_shutdown()?;
        if done.kind != "done" {
            return Err(Fail::failed(format!(
                "round {round}: the consumer said {} instead of `done` after the shutdown \
                 message{}",
                said(&done),
                failure_hint(&done)
            )));
        }
        consumer.expect_io_through_queue(total_payload(&jobs))?;
        let served = consumer.end(&done)?;
        same_order(&served, &jobs, &format!("round {round}"))?;
    }
    served_as_received(run)?;
    super::queue_limit_untouched::queue_limit_never_set(run)?;
    super::queue_limit_untouched::queue_limit_kept_on_emfile(run)?;
    served_again(run)?;
    served_one_at_a_time(run)?;
    received_after_handled(run)?;
    super::process_state::left_as_main_set(run)?;
    super::failed_create_state::umask_kept_when_create_fails(run)?;
    super::umask_untouched::create_leaves_the_umask(run)?;
    run.expect_owner_only()?;
    Ok(
        "3 rounds of queued jobs were served highest priority first, FIFO within one; a job \
        taken before a higher one arrived was served first, also with more jobs queued; a queue \
        created again (--again) was served too; while the handler ran the next job was still \
        in the queue; the queue was mode 0600, the \
        descriptors O_RDONLY and O_WRONLY; create() left the umask, the soft RLIMIT_MSGQUEUE, \
        SIGUSR1's handler and no file open behind it"
            .into(),
    )
}

/// What the grader found in a queue it emptied.
struct Found {
    /// Messages that were one of the jobs submitted ('J' and its payload, at its priority).
    jobs: usize,
    /// Shutdown messages ('Q' alone at priority 0).
    shutdowns: usize,
    /// Anything else.
    others: usize,
}

impl Found {
    fn describe(&self, submitted: usize) -> String {
        format!(
            "{} of the {submitted} jobs, {} shutdown message(s) and {} other message(s)",
            self.jobs, self.shutdowns, self.others
        )
    }
}

/// Empties the queue `name` (the check has failed by then) and sorts what it held.
fn drain(name: &str, jobs: &[Job]) -> Result<Found, Fail> {
    let queue = grader_open(name, MQ_OFlag::O_RDONLY)?;
    let size = mq_getattr(&queue).map_or(8192, |a| a.msgsize() as usize);
    let mut buffer = vec![0u8; size];
    let mut found = Found {
        jobs: 0,
        shutdowns: 0,
        others: 0,
    };
    let mut priority = 0;
    while let Ok(len) = mq_receive(&queue, &mut buffer, &mut priority) {
        let message = (buffer[..len].to_vec(), priority);
        if jobs.iter().any(|job| job_message(job) == message) {
            found.jobs += 1;
        } else if message == shutdown_message() {
            found.shutdowns += 1;
        } else {
            found.others += 1;
        }
    }
    let _ = mq_close(queue);
    Ok(found)
}

/// The queue's permission bits, read with `fstat` (the engine sees them too where the mqueue
/// file system is mounted), must be read and write for the owner only.
fn expect_private(name: &str) -> Result<(), Fail> {
    match queue_mode(name) {
        Some(mode) if mode != 0o600 => Err(Fail::failed(format!(
            "the consumer created {name} with mode {mode:o}: {}; create it with mode S_IRUSR | \
             S_IWUSR (0600), read and write for its owner only",
            what_mode_allows(mode)
        ))),
        _ => Ok(()),
    }
}

/// What is wrong with a queue's permission bits `mode` (not 0600).
pub(super) fn what_mode_allows(mode: u32) -> &'static str {
    if mode & 0o600 != 0o600 {
        "its owner's other processes (the producers) cannot open it"
    } else if mode & 0o077 != 0 {
        "other users can open it, to take jobs or to send them"
    } else {
        "it has other bits than read and write for its owner (execute means nothing for a queue)"
    }
}

/// A consumer serves each job when mq_receive returns it: a job it has already taken is served
/// before one sent afterwards, whatever their priorities.
fn served_as_received(run: &mut Run) -> Result<(), Fail> {
    let name = run.ipc_name("live");
    let mut consumer = consumer(run, &name, &[])?;
    let low_priority = run.rng().random_range(1..50);
    let low = Job {
        priority: low_priority,
        payload: b"taken-first".to_vec(),
    };
    let high = Job {
        priority: run.rng().random_range(low_priority + 1..MQ_PRIO_MAX),
        payload: b"sent-later".to_vec(),
    };
    consumer.go()?;
    grader_send(&name, &[job_message(&low)])?;
    // The job leaves the queue when the consumer's mq_receive returns it.
    let until = Instant::now() + Duration::from_secs(3);
    while queue_attributes(&name)?.curmsgs() > 0 {
        if let Some(answer) = consumer
            .proc
            .recv_before(Instant::now() + Duration::from_millis(1))?
        {
            return Err(Fail::failed(format!(
                "the consumer said {} after receiving one job, with no shutdown sent: serve() \
                 goes on until the shutdown message",
                said(&answer)
            )));
        }
        if Instant::now() > until {
            return Err(Fail::failed(
                "the consumer, told to go, did not take the job the grader sent to its empty \
                 queue within 3 s: serve() receives as soon as it starts",
            ));
        }
    }
    grader_send(&name, &[job_message(&high), shutdown_message()])?;
    consumer.shutdown_from_grader = true;
    let served = consumer.finish()?;
    let priorities: Vec<u32> = served.iter().map(|j| j.priority).collect();
    if served == [low.clone(), high.clone()] {
        return Ok(());
    }
    if served == [high.clone(), low.clone()] {
        return Err(Fail::failed(format!(
            "the consumer took the priority-{} job from the queue (the grader saw the queue \
             empty) before the grader sent the priority-{} job, yet served the priority-{} job \
             first: serve each job when mq_receive returns it; do not collect jobs and sort \
             them yourself, the queue already orders them",
            low.priority, high.priority, high.priority
        )));
    }
    Err(Fail::failed(format!(
        "a job taken from the queue, then a higher one sent after it and the shutdown: the \
         consumer served priorities {priorities:?}, expected [{}, {}]",
        low.priority, high.priority
    )))
}

/// The first queue's message size, and the larger one of the queue created again.
const FIRST_MSG_SIZE: u64 = 64;
const AGAIN_MSG_SIZE: u64 = 8192;

/// A consumer that outlives its queue (`--again`) serves the queue it creates next as it served
/// the first: a shutdown ends one queue's serve(), not every receive() after it; and the new
/// queue's larger messages are received whole, into a buffer of that queue's `msg_size`.
fn served_again(run: &mut Run) -> Result<(), Fail> {
    let name = run.ipc_name("again-served");
    let mut asked = sized(4, FIRST_MSG_SIZE);
    asked.push("--again".to_string());
    let mut first = consumer(run, &name, &asked)?;
    first.send_shutdown()?;
    first.go()?;
    let done = first.answer_after_shutdown()?;
    if done.kind != "done" {
        release(&mut first.proc)?;
        return Err(Fail::failed(format!(
            "a consumer told to serve its queue and then create it again (`--again`) said {} \
             after the first queue's shutdown message, not `done`{}",
            said(&done),
            failure_hint(&done)
        )));
    }
    first
        .proc
        .send("again", &[("msg_size", AGAIN_MSG_SIZE.to_string())])?;
    let ready = first.proc.recv_any()?;
    if ready.kind != "ready" {
        release(&mut first.proc)?;
        return Err(Fail::failed(format!(
            "a consumer that had served its queue, told to create it again (`--again`), said \
             {} instead of `ready`",
            said(&ready)
        )));
    }
    let mut second = Consumer::ready(first.proc, &name, &ready, first.output);
    let jobs = random_jobs(run, 3, "again");
    let mut messages: Vec<_> = jobs.iter().map(job_message).collect();
    messages.push(shutdown_message());
    grader_send(&name, &messages)?;
    second.shutdown_from_grader = true;
    // The grader's own descriptor outlives the consumer's unlink: what is left in the queue.
    let watch = grader_open(&name, MQ_OFlag::O_RDONLY)?;
    second.go()?;
    let done = second.answer_after_shutdown();
    let left = mq_getattr(&watch).map(|a| a.curmsgs());
    let _ = mq_close(watch);
    let done = done?;
    if done.kind == "done" && left == Ok(messages.len() as i64) {
        release(&mut second.proc)?;
        return Err(Fail::failed(format!(
            "a consumer that had served its first queue to its shutdown created it again \
             (`--again`), the grader queued {} jobs and a shutdown in it, and the consumer said \
             {} without taking a single message from it (the grader's descriptor of the queue \
             still counts {}): the first queue's shutdown is remembered beyond that queue (in a \
             static, a thread-local or the like), where each serve() receives from its own \
             queue until its own shutdown",
            jobs.len(),
            said(&done),
            messages.len()
        )));
    }
    if failed_errno(&done, "EMSGSIZE") {
        release(&mut second.proc)?;
        return Err(Fail::failed(format!(
            "a consumer that had served its first queue ({FIRST_MSG_SIZE}-byte messages) \
             created it again (`--again`) with {AGAIN_MSG_SIZE}-byte messages, and with {} jobs \
             and a shutdown queued in the new one said {}: its mq_receive was given a buffer \
             smaller than the new queue's mq_msgsize, as if sized for the first queue and kept; \
             receive() uses a buffer of this queue's msg_size",
            jobs.len(),
            said(&done)
        )));
    }
    if done.kind != "done" {
        release(&mut second.proc)?;
        return Err(Fail::failed(format!(
            "a consumer that had served its first queue created it again (`--again`), and with \
             {} jobs and a shutdown queued in the new one said {} instead of `done`{}",
            jobs.len(),
            said(&done),
            failure_hint(&done)
        )));
    }
    let served = second.end(&done)?;
    same_order(&served, &jobs, "the queue created again (`--again`)")
}

/// A consumer takes one job at a time: held as its first mq_receive returns (it took the highest
/// of two queued jobs), the grader sends a job between the two in priority; served in the order
/// taken, the job it holds comes first, the new one second. A consumer that takes what is
/// queued and sorts it serves the new one first.
fn served_one_at_a_time(run: &mut Run) -> Result<(), Fail> {
    let name = run.ipc_name("held");
    let mut consumer = consumer(run, &name, &[])?;
    let taken_priority = run.rng().random_range(2..1000);
    let job = |priority: u32, payload: &[u8]| Job {
        priority,
        payload: payload.to_vec(),
    };
    let taken = job(taken_priority, b"taken-first");
    let lower = job(run.rng().random_range(1..taken_priority), b"queued-lower");
    let higher = job(
        run.rng().random_range(taken_priority + 1..MQ_PRIO_MAX),
        b"sent-while-held",
    );
    grader_send(
        &name,
        &[job_message(&lower), job_message(&taken), shutdown_message()],
    )?;
    consumer.shutdown_from_grader = true;
    let pid = consumer.pid();
    let receive = Call::any(libc::SYS_mq_timedreceive);
    let Some(mut tracer) = Tracer::attach(pid, receive, Action::HoldAfter)? else {
        run.note("no ptrace here: a job sent while the consumer holds another not tried");
        consumer.finish()?;
        return Ok(());
    };
    consumer.go()?;
    let reached = tracer.wait(&mut consumer.proc, Instant::now() + Duration::from_secs(5));
    if !matches!(reached, Ok(TraceReached::Call)) {
        tracer.release();
        return match reached? {
            TraceReached::Passed(Some(answer)) => Err(Fail::failed(format!(
                "the consumer, told to go with two jobs and the shutdown queued, said {} \
                 before its first mq_receive returned",
                said(&answer)
            ))),
            // Received on another thread: the order of the three is still checked.
            _ => same_order(
                &consumer.finish()?,
                &[taken, lower],
                "jobs queued for the consumer",
            ),
        };
    }
    let queued = queue_attributes(&name).map(|a| a.curmsgs());
    let sent = grader_send(&name, &[job_message(&higher)]);
    tracer.release();
    let (queued, ()) = (queued?, sent?);
    let served = consumer.finish()?;
    let priorities: Vec<u32> = served.iter().map(|j| j.priority).collect();
    let expected = [taken.clone(), higher.clone(), lower.clone()];
    if served == expected {
        return Ok(());
    }
    if queued == 2 && served == [higher.clone(), taken.clone(), lower.clone()] {
        return Err(Fail::failed(format!(
            "the consumer's first mq_receive returned the priority-{} job (the grader held it \
             there and saw 2 messages left), then the grader sent a priority-{} job, yet it \
             served that job first: it received more before serving the one it had taken. \
             Serve each job when mq_receive returns it; do not collect jobs and sort them \
             yourself, the queue already orders them",
            taken.priority, higher.priority
        )));
    }
    Err(Fail::failed(format!(
        "a priority-{} job taken (the grader held the consumer as its first mq_receive \
         returned, {queued} message(s) left), then a priority-{} job sent, with a priority-{} \
         job and the shutdown queued: the consumer served priorities {priorities:?}, expected \
         {:?}",
        taken.priority,
        higher.priority,
        lower.priority,
        expected.iter().map(|j| j.priority).collect::<Vec<_>>()
    )))
}

/// The descriptor of `pid` open on `path`, if any.
fn fd_on(pid: i32, path: &std::path::Path) -> Option<i32> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .flatten()
        .find(|entry| std::fs::read_link(entry.path()).is_ok_and(|target| target == path))
        .and_then(|entry| entry.file_name().to_str()?.parse().ok())
}

/// serve() hands each job to the handler as it is received, and receives the next message only
/// once the handler has returned. The grader fills a 4-message queue with a job of 8191 bytes, two
/// small ones and the shutdown, and holds the consumer in its handler twice (at its writes to the
/// output file: main.rs's handler writes through a buffer of 8 KiB, so the long job's handler
/// writes, and so does the next one's, which flushes the long payload): in the long job's
/// handler, and in that of a small job the grader sent then. Each time the queue's count must
/// still hold every message behind the job, and a job the grader then sends, higher than those
/// left, is served next: a read-ahead, whether behind long or small jobs, is seen.
fn received_after_handled(run: &mut Run) -> Result<(), Fail> {
    let name = run.ipc_name("handled");
    // Full: a consumer that empties a full queue at once shows it as one that reads ahead.
    let mut consumer = consumer(run, &name, &super::protocol::sized(4, 8192))?;
    let above = |below: u32, run: &mut Run| below + run.rng().random_range(1..200);
    let lowest = above(0, run);
    let small = above(lowest, run);
    let second_sent = above(small, run);
    let first_sent = above(second_sent, run);
    let long_priority = above(first_sent, run);
    let job = |priority: u32, payload: &[u8]| Job {
        priority,
        payload: payload.to_vec(),
    };
    let long = job(
        long_priority,
        &run.random_bytes(consumer.max_payload.min(8191)),
    );
    let queued_small = [job(small, b"queued-small"), job(lowest, b"queued-lowest")];
    let sent = [
        job(first_sent, b"sent-in-long-handler"),
        job(second_sent, b"sent-in-small-handler"),
    ];
    let mut messages = vec![job_message(&long)];
    messages.extend(queued_small.iter().map(job_message));
    messages.push(shutdown_message());
    grader_send(&name, &messages)?;
    consumer.shutdown_from_grader = true;
    let expected = [
        long.clone(),
        sent[0].clone(),
        sent[1].clone(),
        queued_small[0].clone(),
        queued_small[1].clone(),
    ];
    let queued_jobs = [
        long.clone(),
        queued_small[0].clone(),
        queued_small[1].clone(),
    ];
    let pid = consumer.pid();
    // First held at its first mq_receive, by when main.rs has opened the output file, to learn
    // its descriptor; then held at the first two writes to it, in the handlers.
    let receive = Call::any(libc::SYS_mq_timedreceive);
    let Some(mut tracer) = Tracer::attach(pid, receive, Action::Hold)? else {
        run.note("no ptrace here: the queue while the handler runs not seen");
        consumer.finish()?;
        return Ok(());
    };
    consumer.go()?;
    let reached = tracer.wait(&mut consumer.proc, Instant::now() + Duration::from_secs(5))?;
    let fd = fd_on(pid, &consumer.output);
    let (TraceReached::Call, Some(fd)) = (reached, fd) else {
        // Received on another thread, or no output file yet: the order is still checked.
        tracer.release();
        return same_order(
            &consumer.finish()?,
            &queued_jobs,
            "jobs queued for the consumer",
        );
    };
    tracer.release_stopped(pid)?;
    const WRITES: &[i64] = &[libc::SYS_write, libc::SYS_writev, libc::SYS_pwrite64];
    let writes = Call::one_of_on(WRITES, fd);
    let attached = Tracer::in_turn(pid, [(writes, Step::Hold), (writes, Step::Hold)]);
    crate::engine::force::resume(pid)?;
    let Some(mut tracer) = attached? else {
        return same_order(
            &consumer.finish()?,
            &queued_jobs,
            "jobs queued for the consumer",
        );
    };
    let handlers = [
        format!(
            "its handler of the first job ({} bytes)",
            long.payload.len()
        ),
        format!(
            "its handler of the {}-byte job the grader sent while it was held in the first",
            sent[0].payload.len()
        ),
    ];
    // What the queue held at each hold, while it should hold 3.
    let mut seen = Vec::new();
    for (hold, job) in sent.iter().enumerate() {
        let until = Instant::now() + Duration::from_secs(5);
        if tracer.wait(&mut consumer.proc, until)? != TraceReached::Call {
            break;
        }
        let queued = queue_attributes(&name).map(|a| a.curmsgs());
        let sending = grader_send(&name, &[job_message(job)]);
        if hold + 1 < sent.len() {
            tracer.go_on();
        }
        seen.push(queued.and_then(|queued| sending.map(|()| queued))?);
    }
    tracer.release();
    let served = consumer.finish()?;
    let priorities = |jobs: &[Job]| jobs.iter().map(|j| j.priority).collect::<Vec<_>>();
    let order = if served == expected {
        String::new()
    } else {
        format!(
            "; the consumer served priorities {:?}, not {:?}",
            priorities(&served),
            priorities(&expected)
        )
    };
    let setup = format!(
        "the grader filled the 4-message queue with a job of {} bytes (priority {}), jobs of \
         priority {} and {} and the shutdown",
        long.payload.len(),
        long.priority,
        small,
        lowest
    );
    if let Some((hold, queued)) = seen.iter().enumerate().find(|(_, q)| **q < 3) {
        return Err(Fail::failed(format!(
            "{setup}, and held the consumer in {} (at a write to its output file): the queue \
             then held {queued} message(s), not 3, so serve() had already received {} \
             message(s) behind the job it was handing to the handler (reading ahead, or taking \
             a full queue's messages all at once){order}. A message received ahead is served \
             out of the kernel's order when a job arrives meanwhile, and lost if the handler \
             fails: serve() hands each job to the handler as it is received and calls \
             receive() again only once the handler has returned",
            handlers[hold],
            3 - queued
        )));
    }
    if seen.len() < sent.len() {
        // Not held twice: the jobs sent are not known; the queued ones are still checked.
        let queued: Vec<Job> = served.into_iter().filter(|j| !sent.contains(j)).collect();
        return same_order(&queued, &queued_jobs, "jobs queued for the consumer");
    }
    if served == expected {
        return Ok(());
    }
    Err(Fail::failed(format!(
        "{setup}, held the consumer in its handlers (the queue held {seen:?} messages then) and \
         sent a job of priority {} in the first, {} in the second{order}: a job sent while the \
         handler ran is the highest left, so the next receive takes it",
        sent[0].priority, sent[1].priority
    )))
}

pub fn interop_plain_posix(run: &mut Run) -> Result<String, Fail> {
    // The grader sends, the student's consumer serves.
    let name = run.ipc_name("jobs");
    let mut consumer = consumer(run, &name, &[])?;
    let count = consumer.capacity.clamp(3, 8) as usize - 1;
    let levels = [0, run.rng().random_range(1..100), MQ_PRIO_MAX - 1];
    let mut jobs = jobs_at(run, count, "g", &levels);
    // One job as long as the queue takes.
    jobs[0].payload = run.random_bytes(consumer.max_payload);
    let mut messages: Vec<(Vec<u8>, u32)> = jobs.iter().map(job_message).collect();
    messages.push(shutdown_message());
    grader_send(&name, &messages)?;
    consumer.shutdown_from_grader = true;
    let served = consumer.serve()?;
    same_order(&served, &jobs, "jobs the grader sent with plain mq_send")?;

    // The student's producer sends, the grader receives from a queue it created itself.
    let name = run.ipc_name("grader");
    let attr = MqAttr::new(0, 8, GRADER_MSG_SIZE as i64, 0);
    let queue = mq_open(
        name.as_str(),
        MQ_OFlag::O_CREAT | MQ_OFlag::O_EXCL | MQ_OFlag::O_RDONLY | MQ_OFlag::O_NONBLOCK,
        Mode::S_IRUSR | Mode::S_IWUSR,
        Some(&attr),
    )
    .map_err(|e| Fail::Grader(format!("creating the grader's queue: {e}")))?;
    // The producer runs as the program user: the queue must be that user's to open.
    let given = match run.program_user() {
        Some((uid, gid)) => fchown(&queue, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
            .map_err(|e| {
                Fail::Grader(format!(
                    "giving the grader's queue to the program user: {e}"
                ))
            }),
        None => Ok(()),
    };
    let outcome = given.and_then(|()| receive_from_producer(run, &name, &queue));
    let _ = mq_close(queue);
    let _ = nix::mqueue::mq_unlink(name.as_str());
    outcome?;
    Ok(
        "the consumer served the grader's plain POSIX jobs in order, and the producer's jobs, up \
        to 8191 bytes, reached the grader's queue whole in the agreed format"
            .into(),
    )
}

/// The message size of the grader's own queue: its largest payload is 8191 bytes.
const GRADER_MSG_SIZE: usize = 8192;

/// Lets a producer submit jobs and a shutdown into the grader's queue, and reads them back.
fn receive_from_producer(run: &mut Run, name: &str, queue: &MqdT) -> Result<(), Fail> {
    let mut jobs = random_jobs(run, 6, "s");
    // Long payloads too, the longest the queue takes among them.
    jobs[1].payload = run.random_bytes(GRADER_MSG_SIZE - 1);
    let long = run.rng().random_range(1025..GRADER_MSG_SIZE - 1);
    jobs[3].payload = run.random_bytes(long);
    let producer = producer(run, name, &jobs, true, false, "the producer")?;
    super::protocol::produce(producer)?;
    let mut got = Vec::new();
    let mut buffer = vec![0u8; GRADER_MSG_SIZE];
    let mut shutdown = false;
    loop {
        let mut priority = 0;
        match mq_receive(queue, &mut buffer, &mut priority) {
            Ok(len) => match &buffer[..len] {
                [JOB_TAG, payload @ ..] if !shutdown => got.push(Job {
                    priority,
                    payload: payload.to_vec(),
                }),
                [SHUTDOWN_TAG] if priority == 0 && !shutdown => shutdown = true,
                other => {
                    return Err(Fail::failed(format!(
                        "the grader received a message of {} at priority {priority}{}: a job is \
                         the byte 'J' and its payload, the shutdown 'Q' alone at priority 0, \
                         sent last",
                        show(other),
                        if shutdown { " after the shutdown" } else { "" }
                    )));
                }
            },
            Err(Errno::EAGAIN) => break,
            Err(e) => return Err(Fail::Grader(format!("mq_receive: {e}"))),
        }
    }
    if !shutdown {
        return Err(Fail::failed(
            "the producer ran with --shutdown but the grader's queue got no shutdown message \
             ('Q' alone, priority 0)",
        ));
    }
    same_order(
        &got,
        &jobs,
        "jobs the grader received with plain mq_receive",
    )
}
