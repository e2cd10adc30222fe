//! Names, attributes and limits: what `mq_open` is given, and what is refused before it.

use nix::mqueue::{MQ_OFlag, MqAttr, mq_close, mq_getattr, mq_open, mq_send, mq_unlink};
use nix::sys::resource::{Resource, getrlimit};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid, fchown};
use rand::RngExt;

use super::protocol::{
    Consumer, Job, MAX_NAME_LEN, MESSAGE_OVERHEAD, consumer, failed_errno, failed_with, field,
    grader_send, job_message, queue_attributes, release, said, sized, spawn_consumer,
    spawn_consumer_stopped, spawn_producer,
};
use std::time::{Duration, Instant};

use crate::engine::audit::message_queue_exists;
use crate::engine::force;
use crate::engine::tracer::{Action, Call, Reached, Tracer};
use crate::engine::{Fail, Run};

/// A handed-out name (audited like any other) with exactly `len` bytes after its slash, made of
/// two-byte characters ('é') as far as they go when `wide`.
fn name_of_length(run: &mut Run, len: usize, wide: bool) -> String {
    // Handed-out names are "/", the check's prefix, "-" and what was asked for.
    let prefix = run.ipc_name("x").len() - "/-x".len();
    let room = len - prefix - 1;
    let what = if wide {
        "é".repeat(room / 2) + &"x".repeat(room % 2)
    } else {
        "x".repeat(room)
    };
    let name = run.ipc_name(&what);
    debug_assert_eq!(name.len(), len + 1);
    name
}

/// A consumer of `name`, its first answer, and whether it called `mq_open()` before it (the
/// grader holds it there and lets it go on; false where the grader may not trace it).
fn consumer_watched_at_mq_open(
    run: &mut Run,
    name: &str,
) -> Result<(crate::engine::Proc, ipc_labs_driver::Message, bool), Fail> {
    let mut proc = spawn_consumer_stopped(run, name)?;
    let pid = proc.pid.as_raw();
    let tracer = Tracer::attach(pid, Call::any(libc::SYS_mq_open), Action::Hold)?;
    force::resume(pid)?;
    let (mut reached, mut first) = (false, None);
    if let Some(mut tracer) = tracer {
        match tracer.wait(&mut proc, Instant::now() + Duration::from_secs(5))? {
            Reached::Call => reached = true,
            Reached::Passed(message) => first = message,
        }
        tracer.release();
    }
    let answer = match first {
        Some(message) => message,
        None => proc.recv_any()?,
    };
    Ok((proc, answer, reached))
}

pub fn name_errors(run: &mut Run) -> Result<String, Fail> {
    // Built from handed-out names, so that whatever a lax program creates is audited.
    let plain = run.ipc_name("noslash");
    let nested = run.ipc_name("dir");
    let wide = name_of_length(run, MAX_NAME_LEN + 1, true);
    let wide_chars = wide.chars().count() - 1;
    let cases = [
        (
            plain.trim_start_matches('/').to_string(),
            "no leading slash".to_string(),
        ),
        (format!("{nested}/jobs"), "a second slash".into()),
        ("/".to_string(), "nothing after the slash".into()),
        (
            name_of_length(run, MAX_NAME_LEN + 1, false),
            "256 bytes after the slash, one more than NAME_MAX".into(),
        ),
        (
            wide,
            format!("256 bytes after the slash in {wide_chars} characters ('é' takes two bytes)"),
        ),
    ];
    for (name, what) in &cases {
        let (mut proc, answer, reached) = consumer_watched_at_mq_open(run, name)?;
        if failed_with(&answer, "bad-name") && reached {
            release(&mut proc)?;
            return Err(Fail::failed(format!(
                "creating a queue named with {what} ({name:.40}), the consumer said \
                 kind=bad-name, but only after it had called mq_open() with that name (the \
                 grader saw the call): check the name before mq_open(); the kernel's errors \
                 for a bad name (EINVAL, EACCES, ENOENT, ENAMETOOLONG) also mean other things"
            )));
        }
        if failed_with(&answer, "bad-name") {
            release(&mut proc)?;
            continue;
        }
        let hint = if what.contains("characters") && failed_errno(&answer, "ENAMETOOLONG") {
            "NAME_MAX counts bytes, not characters: compare the name's length in bytes \
             (str::len), not chars().count(), with 255"
        } else {
            "check the name before mq_open()"
        };
        return Err(Fail::failed(format!(
            "creating a queue named with {what} ({name:.40}), the consumer said {}, not \
             `failed` with kind=bad-name: {hint}",
            said(&answer)
        )));
    }
    let missing = run.ipc_name("missing");
    let (mut proc, answer, _) = spawn_producer(run, &missing, &[], false, false, "the producer")?;
    if !failed_with(&answer, "not-found") {
        return Err(Fail::failed(format!(
            "opening a queue that does not exist, the producer said {}, not `failed` with \
             kind=not-found: open without O_CREAT and map ENOENT to QueueError::NotFound",
            said(&answer)
        )));
    }
    release(&mut proc)?;
    // The longest valid name works, in multi-byte characters too.
    for wide in [false, true] {
        let longest = name_of_length(run, MAX_NAME_LEN, wide);
        let (proc, answer, output) = spawn_consumer(run, &longest, &[], None)?;
        if answer.kind != "ready" {
            let hint = if !failed_with(&answer, "bad-name") {
                "that name is valid"
            } else if wide {
                "a name may hold any byte but '/', in any character ('é' here): refuse only a \
                 longer name or one with a second '/'"
            } else {
                "that name is valid, refuse only a longer one"
            };
            return Err(Fail::failed(format!(
                "creating a queue whose name has 255 bytes after the slash (NAME_MAX, the \
                 longest allowed; {} characters), the consumer said {}: {hint}",
                longest.chars().count() - 1,
                said(&answer)
            )));
        }
        let mut consumer = Consumer::ready(proc, &longest, &answer, output);
        consumer.send_shutdown()?;
        consumer.serve()?;
    }
    existing_name(run)?;
    Ok(
        "bad names were bad-name (256 bytes after the slash too, in multi-byte characters too), \
        a 255-byte name worked, a missing queue was not-found, an existing one exists and was \
        left as it was"
            .into(),
    )
}

/// A consumer asked to create a queue that exists (the grader's, with other attributes and a
/// message in it) must refuse with kind=exists and leave that queue alone.
fn existing_name(run: &mut Run) -> Result<(), Fail> {
    let name = run.ipc_name("taken");
    let (capacity, msg_size) = (3, run.rng().random_range(40..90));
    let queue = mq_open(
        name.as_str(),
        MQ_OFlag::O_CREAT | MQ_OFlag::O_EXCL | MQ_OFlag::O_RDWR | MQ_OFlag::O_NONBLOCK,
        Mode::S_IRUSR | Mode::S_IWUSR,
        Some(&MqAttr::new(0, capacity, msg_size, 0)),
    )
    .map_err(|e| Fail::Grader(format!("creating a queue for the consumer to find: {e}")))?;
    let outcome = (|| {
        if let Some((uid, gid)) = run.program_user() {
            fchown(&queue, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
                .map_err(|e| Fail::Grader(format!("giving the queue to the program user: {e}")))?;
        }
        mq_send(&queue, b"Jkept", 1).map_err(|e| Fail::Grader(format!("mq_send: {e}")))?;
        let (mut proc, answer, _) = spawn_consumer(run, &name, &[], None)?;
        if !failed_with(&answer, "exists") {
            let opened = answer.kind == "ready"
                && (field(&answer, "capacity"), field(&answer, "msg_size"))
                    == (capacity as u64, msg_size as u64);
            let replaced = answer.kind == "ready" && !opened;
            let hint = if opened {
                format!(
                    ": it reports the existing queue's {capacity} messages of {msg_size} bytes, \
                     so it opened that queue instead of creating its own"
                )
            } else if replaced {
                format!(
                    ": it reports {} messages of {} bytes, not the existing queue's {capacity} \
                     of {msg_size}, so it removed that queue (mq_unlink) and created its own; a \
                     queue under the name is never another program's to remove",
                    field(&answer, "capacity"),
                    field(&answer, "msg_size")
                )
            } else {
                String::new()
            };
            return Err(Fail::failed(format!(
                "creating a queue whose name exists (the grader's own queue), the consumer said \
                 {}, not `failed` with kind=exists{hint}: create with O_CREAT | O_EXCL and map \
                 EEXIST to QueueError::Exists",
                said(&answer)
            )));
        }
        release(&mut proc)?;
        let left = mq_getattr(&queue).map(|a| a.curmsgs()).unwrap_or(0);
        if !message_queue_exists(&name) || left != 1 {
            return Err(Fail::failed(format!(
                "after it failed with kind=exists, the consumer had removed or emptied the queue \
                 it did not create ({}): a consumer that cannot create its queue leaves the \
                 existing one alone (no mq_unlink, no receive)",
                if message_queue_exists(&name) {
                    format!("{left} of its 1 message left")
                } else {
                    "its name is gone".to_string()
                }
            )));
        }
        Ok(())
    })();
    let _ = mq_close(queue);
    let _ = mq_unlink(name.as_str());
    outcome
}

/// A value of `/proc/sys/fs/mqueue/`.
fn mqueue_limit(file: &str) -> Result<u64, Fail> {
    let path = format!("/proc/sys/fs/mqueue/{file}");
    std::fs::read_to_string(&path)?
        .trim()
        .parse()
        .map_err(|e| Fail::Grader(format!("{path}: {e}")))
}

pub fn attributes_and_limits(run: &mut Run) -> Result<String, Fail> {
    let (msg_max, msgsize_max) = (mqueue_limit("msg_max")?, mqueue_limit("msgsize_max")?);
    let capacity = run.rng().random_range(2..=msg_max.min(9));
    let msg_size = run.rng().random_range(100..1000);
    let name = run.ipc_name("jobs");
    let mut consumer = consumer(run, &name, &sized(capacity, msg_size))?;
    let attr = queue_attributes(&name)?;
    let seen = (attr.maxmsg() as u64, attr.msgsize() as u64);
    if seen != (capacity, msg_size) {
        return Err(Fail::failed(format!(
            "asked for {capacity} messages of {msg_size} bytes, the queue has {} of {}: pass \
             the attributes (mq_attr) to mq_open with O_CREAT",
            seen.0, seen.1
        )));
    }
    if (consumer.capacity, consumer.msg_size) != seen {
        return Err(Fail::failed(format!(
            "the queue has {} messages of {} bytes (the grader's mq_getattr), but the consumer's \
             attributes() reports {} of {}: return mq_getattr's mq_maxmsg and mq_msgsize",
            seen.0, seen.1, consumer.capacity, consumer.msg_size
        )));
    }
    // Messages waiting: attributes() must read them from mq_getattr() (mq_curmsgs), which a
    // producer that opens the queue now sees.
    let waiting = run.rng().random_range(1..capacity);
    let jobs: Vec<(Vec<u8>, u32)> = (0..waiting)
        .map(|_| {
            job_message(&Job {
                priority: 1,
                payload: b"waiting".to_vec(),
            })
        })
        .collect();
    grader_send(&name, &jobs)?;
    let (mut producer, ready, _) = spawn_producer(run, &name, &[], false, false, "a producer")?;
    if ready.kind == "ready" {
        let reported = ready.get("queued").unwrap_or("nothing").to_string();
        producer.send("go", &[])?;
        producer.recv_any()?;
        release(&mut producer)?;
        if reported != waiting.to_string() {
            return Err(Fail::failed(format!(
                "with {waiting} messages waiting in the queue (mq_curmsgs {waiting} in the \
                 grader's mq_getattr), a producer that opened it says its attributes() reports \
                 queued = {reported}: return mq_getattr's mq_curmsgs, as the kernel counts it \
                 now"
            )));
        }
    }
    consumer.send_shutdown()?;
    consumer.serve()?;

    let default = run.ipc_name("default");
    let mut consumer = self::consumer(run, &default, &[])?;
    let attr = queue_attributes(&default)?;
    if attr.maxmsg() as u64 > msg_max || attr.msgsize() as u64 > msgsize_max {
        return Err(Fail::failed(format!(
            "the default queue has {} messages of {} bytes, more than an unprivileged user may \
             have (msg_max {msg_max}, msgsize_max {msgsize_max}): choose defaults within them",
            attr.maxmsg(),
            attr.msgsize()
        )));
    }
    consumer.send_shutdown()?;
    consumer.serve()?;

    // Exactly at a limit is allowed, one past it is not. The bytes limit is out of reach of the
    // default RLIMIT_MSGQUEUE, so the consumer gets a lower one.
    let (rlimit, hard) = getrlimit(Resource::RLIMIT_MSGQUEUE)
        .map_err(|e| Fail::Grader(format!("getrlimit(RLIMIT_MSGQUEUE): {e}")))?;
    let limit = BytesLimit {
        capacity: run.rng().random_range(2..=msg_max.min(8)),
        msg_size: run.rng().random_range(100..1000),
        hard,
    };
    let bytes = limit.bytes();
    let mut exact = Vec::new();
    if msg_max.saturating_mul(msgsize_max + MESSAGE_OVERHEAD) <= rlimit {
        exact.push((
            format!(
                "exactly msg_max ({msg_max}) messages of exactly msgsize_max ({msgsize_max}) bytes"
            ),
            sized(msg_max, msgsize_max),
            None,
            (msg_max, msgsize_max),
            "a capacity up to msg_max and a message size up to msgsize_max are allowed",
        ));
    } else {
        run.note("msg_max messages of msgsize_max bytes exceed RLIMIT_MSGQUEUE here: not tried");
    }
    exact.push((
        format!(
            "{} with RLIMIT_MSGQUEUE at exactly {bytes}",
            limit.describe()
        ),
        sized(limit.capacity, limit.msg_size),
        Some(bytes),
        (limit.capacity, limit.msg_size),
        "a queue of at most RLIMIT_MSGQUEUE bytes is allowed",
    ));
    for (case, (asked, args, queue_bytes, (capacity, msg_size), allowed)) in
        exact.into_iter().enumerate()
    {
        let name = run.ipc_name(&format!("limits-{case}"));
        let (mut proc, answer, output) = spawn_consumer(run, &name, &args, queue_bytes)?;
        if answer.kind == "ready" {
            let attr = queue_attributes(&name)?;
            if (attr.maxmsg() as u64, attr.msgsize() as u64) != (capacity, msg_size) {
                return Err(Fail::failed(format!(
                    "asked for {asked}, the queue has {} messages of {} bytes: create it with \
                     the attributes asked for",
                    attr.maxmsg(),
                    attr.msgsize()
                )));
            }
            let mut consumer = Consumer::ready(proc, &name, &answer, output);
            consumer.send_shutdown()?;
            consumer.serve()?;
        } else if failed_with(&answer, "mq-open") && failed_errno(&answer, "EMFILE") {
            // The program's own check passed; the kernel counts this user's other queues too.
            run.note(format!(
                "{asked}: mq_open said EMFILE (other queues of this user)"
            ));
            release(&mut proc)?;
        } else if failed_with(&answer, "over-limit") {
            return Err(Fail::failed(format!(
                "asking for {asked}, the consumer said {}: the limits are inclusive, {allowed}; \
                 refuse only what is more than a limit (>, not >=)",
                said(&answer)
            )));
        } else {
            return Err(Fail::failed(format!(
                "asking for {asked}, the consumer said {} where it should have created the \
                 queue: {allowed}",
                said(&answer)
            )));
        }
    }
    let over = [
        (
            format!("{} messages (msg_max + 1)", msg_max + 1),
            vec!["--capacity".to_string(), (msg_max + 1).to_string()],
            "a capacity of at most msg_max (root may exceed it, a student may not)",
        ),
        (
            format!("messages of {} bytes (msgsize_max + 1)", msgsize_max + 1),
            vec!["--msg-size".to_string(), (msgsize_max + 1).to_string()],
            "a message size of at most msgsize_max (root may exceed it, a student may not)",
        ),
        (
            "a capacity of 0".to_string(),
            vec!["--capacity".to_string(), "0".into()],
            "a capacity of at least 1",
        ),
        (
            "a message size of 0".to_string(),
            vec!["--msg-size".to_string(), "0".into()],
            "a message size of at least 1",
        ),
        (
            format!("a capacity of {}", u64::MAX),
            vec!["--capacity".to_string(), u64::MAX.to_string()],
            "a capacity of at most msg_max, compared before the queue's bytes are computed",
        ),
    ];
    for (case, (asked, args, rule)) in over.into_iter().enumerate() {
        let name = run.ipc_name(&format!("over-{case}"));
        let (mut proc, answer, _) = match spawn_consumer(run, &name, &args, None) {
            Err(Fail::Crashed(crash)) => {
                return Err(Fail::failed(format!(
                    "asking for {asked}, the consumer crashed ({crash}): check the capacity \
                     against msg_max before computing with it, or compute with checked \
                     arithmetic"
                )));
            }
            other => other?,
        };
        if !failed_with(&answer, "over-limit") {
            return Err(Fail::failed(format!(
                "asking for {asked}, the consumer said {}, not `failed` with kind=over-limit: \
                 check the config against system_limits() before mq_open; only {rule} is allowed",
                said(&answer)
            )));
        }
        if message_queue_exists(&name) {
            return Err(Fail::failed(format!(
                "asking for {asked}, the consumer said kind=over-limit but {name} exists: check \
                 the config before mq_open, so that nothing is created"
            )));
        }
        release(&mut proc)?;
    }
    limit.expect_refused(run)?;
    Ok(format!(
        "the queue had the {capacity} x {msg_size} bytes asked for; the defaults fit; exactly \
         msg_max ({msg_max}), msgsize_max ({msgsize_max}) and RLIMIT_MSGQUEUE ({bytes} bytes) \
         were allowed, one more (or 0) was over-limit"
    ))
}

/// A queue sized against a lowered `RLIMIT_MSGQUEUE`.
struct BytesLimit {
    capacity: u64,
    msg_size: u64,
    /// The hard limit, which a lowered soft limit leaves as it is.
    hard: u64,
}

impl BytesLimit {
    /// What the queue takes by the lab's rule.
    fn bytes(&self) -> u64 {
        self.capacity * (self.msg_size + MESSAGE_OVERHEAD)
    }

    fn describe(&self) -> String {
        format!(
            "{} messages of {} bytes, which take {} bytes ({} x ({} + {MESSAGE_OVERHEAD})),",
            self.capacity,
            self.msg_size,
            self.bytes(),
            self.capacity,
            self.msg_size
        )
    }

    /// The queue must be over-limit with the soft limit one byte under what it takes. When it
    /// is not, a second consumer, with the limit under even `capacity x msg_size`, tells a
    /// count that leaves out the overhead from a limit that is not the soft RLIMIT_MSGQUEUE.
    fn expect_refused(&self, run: &mut Run) -> Result<(), Fail> {
        let args = sized(self.capacity, self.msg_size);
        let soft = self.bytes() - 1;
        let name = run.ipc_name("bytes");
        let (mut proc, answer, _) = spawn_consumer(run, &name, &args, Some(soft))?;
        if failed_with(&answer, "over-limit") {
            return release(&mut proc);
        }
        let first = format!(
            "asking for {} with its soft RLIMIT_MSGQUEUE at {soft}, one byte less, the consumer \
             said {}, not `failed` with kind=over-limit",
            self.describe(),
            said(&answer)
        );
        let bare = self.capacity * self.msg_size - 1;
        let name = run.ipc_name("bare-bytes");
        let (_, second, _) = spawn_consumer(run, &name, &args, Some(bare))?;
        if failed_with(&second, "over-limit") {
            return Err(Fail::failed(format!(
                "{first}; with the limit at {bare}, under even {} x {}, it did refuse: it counts \
                 fewer bytes than the kernel charges: count capacity x (msg_size + \
                 MESSAGE_OVERHEAD), the overhead once per message",
                self.capacity, self.msg_size
            )));
        }
        Err(Fail::failed(format!(
            "{first}; with the limit at {bare}, under even {} x {} bytes, it said {} too: it \
             does not compare the queue's bytes with the soft RLIMIT_MSGQUEUE of the process \
             (its hard limit stayed at {}). \
             system_limits() reads the soft limit with getrlimit(RLIMIT_MSGQUEUE) (not the hard \
             one, not a constant), and check() compares capacity x (msg_size + \
             MESSAGE_OVERHEAD) with it",
            self.capacity,
            self.msg_size,
            said(&second),
            self.hard
        )))
    }
}
