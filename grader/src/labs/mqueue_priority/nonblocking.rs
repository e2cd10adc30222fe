//! With O_NONBLOCK, no waiting at all: a full queue is `full` at once, the flag set through
//! the queue's own calls, and the jobs submitted in the file's order.

use std::time::{Duration, Instant};

use ipc_labs_driver::Message;
use nix::sys::signal::Signal;

use super::blocking::{PATIENCE, SEND, waiting_in};
use super::interrupted_waits::{
    INTERRUPTIONS, blocks_sigusr1, force_eintrs, held_call, interrupted, nth_time,
    refuse_blocked_sigusr1, retried_every_eintr, signal_restarts,
};
use super::jobs::{Job, random_jobs, same_order};
use super::observe::{Reached, interrupt, one_queue_fd, queue_fds, wait_in_call};
use super::protocol::{Producer, consumer, failed_with, field, producer, queue_attributes, said};
use crate::engine::diagnose::{self};
use crate::engine::tracer::{Action, Call, Tracer};
use crate::engine::{Fail, Run};

/// `ioctl()`'s request to set or clear `O_NONBLOCK` (`<asm-generic/ioctls.h>`; libc's type for it
/// differs from one C library to another).
const FIONBIO: u64 = 0x5421;

/// After `ready`, a producer's calls that work on the queue by another way than its `mqd_t`
/// and the `mq_*` calls: an `mq_open()` (the queue opened again by its name), and a descriptor's
/// flags set by `fcntl(F_SETFL)` or `ioctl(FIONBIO)`.
static REOPEN_OR_FLAGS: &[Call] = &[
    Call::any(libc::SYS_mq_open),
    Call::arg_is(libc::SYS_fcntl, 1, libc::F_SETFL as u64),
    Call::arg_is(libc::SYS_ioctl, 1, FIONBIO),
];

/// Held at one of [`REOPEN_OR_FLAGS`]: the failure if it is an `fcntl()` or `ioctl()` on the
/// program's descriptor of `name` (`None` for an `mq_open()`, or another descriptor).
fn flags_by_fcntl(pid: i32, name: &str) -> Option<Fail> {
    let syscall = std::fs::read_to_string(format!("/proc/{pid}/syscall")).ok()?;
    let fields: Vec<&str> = syscall.split_whitespace().collect();
    let call = match held_call(pid)? {
        libc::SYS_fcntl => "fcntl(F_SETFL)",
        libc::SYS_ioctl => "ioctl(FIONBIO)",
        _ => return None,
    };
    let fd = i32::from_str_radix(fields.get(1)?.trim_start_matches("0x"), 16).ok()?;
    let queue = queue_fds(pid, name)?;
    if !queue.iter().any(|q| q.fd == fd) {
        return None;
    }
    Some(Fail::failed(format!(
        "after it said ready and was told go, the non-blocking producer called {call} on its \
         descriptor {fd} of the queue (the grader held it there; set_nonblocking(false) before \
         the shutdown): it sets and clears O_NONBLOCK as a file's flag, which works only \
         because Linux makes an mqd_t a file descriptor. set_nonblocking() sets and clears it \
         with mq_setattr (mq_set_nonblock, mq_remove_nonblock), the queue's own call"
    )))
}

pub fn nonblocking_full(run: &mut Run) -> Result<String, Fail> {
    let name = run.ipc_name("jobs");
    let consumer = consumer(run, &name, &["--capacity".into(), "4".into()])?;
    let mut jobs = random_jobs(run, 7, "nb");
    // The last job outranks every other: the 4 that fit are the file's first 4 only if the
    // producer submits in the file's order.
    let top = jobs.iter().map(|j| j.priority).max().unwrap_or(0);
    jobs[6].priority = top + 1;
    let role = "the non-blocking producer";
    let mut producer = producer(run, &name, &jobs, true, true, role)?;
    let fd = one_queue_fd(producer.pid(), &name, role, "after it said ready")?;
    if !fd.nonblocking() {
        return Err(Fail::failed(format!(
            "with --nonblocking the producer called set_nonblocking(true), yet its descriptor of \
             the queue has no O_NONBLOCK ({}): set it on the descriptor with mq_setattr \
             (mq_set_nonblock), so that mq_send itself fails with EAGAIN on a full queue \
             instead of waiting",
            fd.describe(producer.pid())
        )));
    }
    // Its queue is open: from here on every call works on that descriptor, so a second
    // mq_open() is the queue opened again by its name, held there.
    // So is a flag set on that descriptor by fcntl(F_SETFL) or ioctl(FIONBIO) instead of
    // mq_setattr: the program's own file-descriptor calls on an mqd_t, held there too.
    let mut reopen = Tracer::attach(producer.pid(), Call::any_of(REOPEN_OR_FLAGS), Action::Hold)?;
    producer.proc.send("go", &[])?;
    // 4 jobs fit, 3 find the queue full; then the producer turns blocking again and its
    // shutdown waits for room, which only the consumer can make.
    let until = Instant::now() + PATIENCE + PATIENCE;
    let reached = loop {
        if let Some(tracer) = reopen.as_mut()
            && tracer.held_before(Instant::now())?
        {
            if let Some(fail) = flags_by_fcntl(producer.pid(), &name) {
                return Err(fail);
            }
            if held_call(producer.pid()) != Some(libc::SYS_mq_open) {
                // A file's flags set on another descriptor than the queue's: none of this
                // check's business; let it go on, untraced.
                if let Some(tracer) = reopen.take() {
                    tracer.release();
                }
                continue;
            }
            return Err(Fail::failed(
                "after it said ready (its queue open, O_NONBLOCK set) and was told go, the \
                 non-blocking producer called mq_open() again, where the grader held it: it \
                 opens the queue again by its name (set_nonblocking(false) before the \
                 shutdown, or the shutdown itself), and a name can lead to another queue than \
                 the one it holds; O_NONBLOCK is a flag of the descriptor: set and clear it \
                 with mq_setattr (mq_set_nonblock, mq_remove_nonblock) on the descriptor \
                 open() gave",
            ));
        }
        match wait_in_call(&mut producer.proc, SEND, Duration::from_millis(20))? {
            Reached::NotYet if Instant::now() < until => {}
            reached => break reached,
        }
    };
    drop(reopen);
    match reached {
        Reached::InCall => {}
        Reached::Said(answer) => return Err(shutdown_did_not_wait(&producer, &name, &answer)),
        Reached::NotYet => {
            let hang = diagnose::observe(&[producer.pid()], &|_| role.to_string());
            let doing: Vec<String> = hang
                .processes
                .iter()
                .flat_map(|p| p.activities.iter().map(waiting_in))
                .collect();
            return Err(Fail::failed(format!(
                "7 jobs into a 4-message queue nobody reads, non-blocking, then the shutdown: \
                 after 6 s the producer has not answered, and it does not wait in mq_send for \
                 room for the shutdown; it waits {}. With O_NONBLOCK each job that finds the \
                 queue full fails at once with EAGAIN (QueueError::Full, counted, not retried), \
                 and after set_nonblocking(false) the shutdown waits inside mq_send",
                doing.join(", ")
            )));
        }
    }
    let queued = queue_attributes(&name)?.curmsgs();
    if queued != 4 {
        return Err(Fail::failed(format!(
            "the non-blocking producer waits to send the shutdown, but the 4-message queue \
             holds {queued}: each job either went in or was counted full"
        )));
    }
    // The shutdown waits like a job, so a signal that interrupts its mq_send (EINTR) must not
    // end it either, however often.
    refuse_blocked_sigusr1(&mut producer.proc, role, SEND, "mq_send")?;
    let mut restarted = None;
    for round in 1..=INTERRUPTIONS {
        if round == INTERRUPTIONS {
            restarted = signal_restarts(producer.pid(), SEND)?;
        }
        if restarted.is_none() {
            interrupt(producer.pid(), Signal::SIGUSR1, PATIENCE);
        }
        match wait_in_call(&mut producer.proc, SEND, PATIENCE)? {
            Reached::Said(answer) => {
                let hint = if failed_with(&answer, "full") {
                    "EINTR is not a full queue: "
                } else {
                    ""
                };
                let when = if round == 1 {
                    String::new()
                } else {
                    format!(" {}", nth_time(round))
                };
                return Err(Fail::failed(format!(
                    "after SIGUSR1 interrupted the mq_send of its shutdown, waiting for room in \
                     the full queue (EINTR){when}, the producer said {}: {hint}shutdown() must \
                     call mq_send again when it fails with EINTR, as submit() does",
                    said(&answer)
                )));
            }
            reached => interrupted(reached, producer.pid(), role, "mq_send", round)?,
        }
    }
    let blocked = blocks_sigusr1(producer.pid(), SEND);
    let forced = force_eintrs(&mut producer.proc, SEND)?;
    retried_every_eintr(
        run,
        forced,
        role,
        "mq_send (of its shutdown)",
        restarted,
        blocked,
    )?;
    let mut consumer = consumer;
    consumer.go()?;
    let done = producer.proc.recv_any()?;
    producer.expect_done(&done)?;
    let (submitted, full) = (field(&done, "submitted"), field(&done, "full"));
    if (submitted, full) != (4, 3) {
        return Err(Fail::failed(format!(
            "7 jobs into a 4-message queue nobody reads, non-blocking: the producer says \
             {submitted} submitted and {full} found it full, expected 4 and 3: with O_NONBLOCK \
             mq_send fails with EAGAIN on a full queue, which submit() reports as QueueError::Full"
        )));
    }
    producer.end()?;
    let served = consumer.finish()?;
    submitted_in_file_order(&served, &jobs, 4)?;
    same_order(&served, &jobs[..4], "the jobs that fitted")?;
    super::sending::full_only_when_full(run)?;
    super::sending::full_from_each_send(run)?;
    super::sending::sent_in_file_order(run)?;
    Ok(
        "a full non-blocking queue refused 3 of 7 jobs with kind=full, the shutdown then waited \
        for room (through SIGUSR1), and the 4 jobs that fitted were served; a queue emptied \
        meanwhile took every job; a blocking producer sent its jobs in its file's order"
            .into(),
    )
}

/// With O_NONBLOCK, the first `fitted` jobs a producer sends are the ones that get into the
/// queue: if the jobs served are other jobs of its file, it sent them in another order.
fn submitted_in_file_order(served: &[Job], file: &[Job], fitted: usize) -> Result<(), Fail> {
    let position = |job: &Job| file.iter().position(|f| f.payload == job.payload);
    let Some(mut positions) = served.iter().map(position).collect::<Option<Vec<usize>>>() else {
        return Ok(());
    };
    positions.sort_unstable();
    if positions.len() != fitted || positions.iter().all(|&p| p < fitted) {
        return Ok(());
    }
    let mut by_priority = file.to_vec();
    by_priority.sort_by_key(|job| std::cmp::Reverse(job.priority));
    let mut highest: Vec<usize> = by_priority[..fitted].iter().filter_map(position).collect();
    highest.sort_unstable();
    let numbers: Vec<usize> = positions.iter().map(|p| p + 1).collect();
    let how = if highest == positions {
        ", its highest priorities (as if sorted by priority before sending)"
    } else {
        ""
    };
    Err(Fail::failed(format!(
        "the {fitted} jobs that got into the {fitted}-message queue were jobs {numbers:?} of the \
         producer's {} (its file's order), not its first {fitted}: with O_NONBLOCK the first \
         {fitted} mq_sends fill the queue, so the producer submitted its jobs in another order \
         than the file's{how}; submit them in the file's order, one mq_send each, and leave the \
         order of service to the queue's priorities",
        file.len()
    )))
}

/// The non-blocking producer answered where its shutdown should have waited for room.
fn shutdown_did_not_wait(producer: &Producer, name: &str, answer: &Message) -> Fail {
    let pid = producer.pid();
    if failed_with(answer, "full") {
        let still = queue_fds(pid, name)
            .unwrap_or_default()
            .into_iter()
            .find(|fd| fd.nonblocking());
        return match still {
            Some(fd) => Fail::failed(format!(
                "after its jobs the producer called set_nonblocking(false) to send the \
                 shutdown, but its descriptor still has O_NONBLOCK ({}) and the shutdown failed \
                 on the full queue with kind=full: set_nonblocking(false) must clear O_NONBLOCK \
                 (mq_setattr, mq_remove_nonblock)",
                fd.describe(pid)
            )),
            None => Fail::failed(format!(
                "the shutdown, sent after set_nonblocking(false), failed on the full queue with \
                 {}: on a blocking descriptor the shutdown waits for room like a job",
                said(answer)
            )),
        };
    }
    if answer.kind == "done" {
        let (submitted, full) = (field(answer, "submitted"), field(answer, "full"));
        if (submitted, full) != (4, 3) {
            return Fail::failed(format!(
                "7 jobs into a 4-message queue nobody reads, non-blocking: the producer says \
                 {submitted} submitted and {full} found it full, expected 4 and 3: with \
                 O_NONBLOCK mq_send fails with EAGAIN on a full queue, which submit() reports \
                 as QueueError::Full"
            ));
        }
        return Fail::failed(
            "the non-blocking producer said `done` though its shutdown cannot have fitted in the \
             full queue that nobody reads: after set_nonblocking(false) the shutdown waits in \
             mq_send for room",
        );
    }
    Fail::failed(format!(
        "7 jobs into a 4-message queue nobody reads, non-blocking, then the shutdown: the \
         producer said {}, where 4 jobs go in, 3 are kind=full and the shutdown waits for room",
        said(answer)
    ))
}
