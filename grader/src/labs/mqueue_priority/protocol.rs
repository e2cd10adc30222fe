//! The grader's side of the lab's protocol: the consumer and producer programs and their control
//! messages, and the grader's own plain POSIX sender and receiver (the jobs: `jobs.rs`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ipc_labs_driver::Message;
use nix::errno::Errno;
use nix::mqueue::{MQ_OFlag, MqAttr, MqdT, mq_close, mq_getattr, mq_open, mq_receive, mq_send};
use nix::sys::stat::Mode;
use rand::RngExt;

use super::jobs::{DECOY, Job, encode_jobs, served_jobs};
use super::observe::{self, Io};
use crate::engine::audit::message_queue_exists;
use crate::engine::{Fail, Proc, Run};

pub const JOB_TAG: u8 = b'J';
pub const SHUTDOWN_TAG: u8 = b'Q';
/// Priorities go from 0 to `MQ_PRIO_MAX - 1`.
pub const MQ_PRIO_MAX: u32 = 32768;
/// What the lab's API charges per message against `RLIMIT_MSGQUEUE` besides the message.
pub const MESSAGE_OVERHEAD: u64 = 96;
/// The longest queue name after its slash (`NAME_MAX`).
pub const MAX_NAME_LEN: usize = 255;

/// The `kind=` of a `failed` answer, with its error text, for messages.
pub fn said(message: &Message) -> String {
    match message.kind.as_str() {
        "failed" => format!(
            "`failed` (kind={}: {})",
            message.get("kind").unwrap_or("none"),
            message.get("error").unwrap_or("")
        ),
        kind => format!("`{kind}`"),
    }
}

/// Whether `message` is `failed` with this kind.
pub fn failed_with(message: &Message, kind: &str) -> bool {
    message.kind == "failed" && message.get("kind") == Some(kind)
}

/// Whether `message` is `failed` with an error text that names `errno` (`EMSGSIZE`, ...).
pub fn failed_errno(message: &Message, errno: &str) -> bool {
    message.kind == "failed" && message.get("error").is_some_and(|e| e.contains(errno))
}

pub fn field(message: &Message, key: &str) -> u64 {
    message.get(key).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Lets a program that said `done` or `failed` (and now waits for `exit`) end, and waits for it.
pub fn release(proc: &mut Proc) -> Result<(), Fail> {
    proc.send("exit", &[])?;
    proc.wait()?;
    Ok(())
}

/// A running consumer, after `ready`.
pub struct Consumer {
    pub proc: Proc,
    pub name: String,
    pub output: PathBuf,
    pub capacity: u64,
    pub msg_size: u64,
    pub max_payload: usize,
    /// Its I/O counters when it was told `go`.
    io_at_go: Option<Io>,
    /// Whether the grader itself sent the shutdown (so it is known to be well-formed).
    pub shutdown_from_grader: bool,
}

/// Starts a consumer with `extra` arguments, and its soft `RLIMIT_MSGQUEUE` lowered to
/// `queue_bytes` if given; returns it with its first answer.
pub fn spawn_consumer(
    run: &mut Run,
    name: &str,
    extra: &[String],
    queue_bytes: Option<u64>,
) -> Result<(Proc, Message, PathBuf), Fail> {
    let tag: u32 = run.rng().random();
    let output = run.path(&format!("served-{tag}.bin"));
    let mut args = vec![
        "consumer".to_string(),
        "--name".into(),
        name.into(),
        "--output".into(),
        output.display().to_string(),
    ];
    args.extend(extra.iter().cloned());
    let mut proc = match queue_bytes {
        Some(bytes) => run.spawn_with_message_queue_bytes(&args, bytes)?,
        None => run.spawn(&args)?,
    };
    proc.set_roles(|_| "the consumer".into());
    let first = proc.recv_any()?;
    Ok((proc, first, output))
}

/// Starts a consumer of `name` stopped before its first instruction (see
/// [`Run::spawn_stopped`]), without waiting for its first message.
pub fn spawn_consumer_stopped(run: &mut Run, name: &str) -> Result<Proc, Fail> {
    spawn_consumer_stopped_with(run, name, &[])
}

/// As [`spawn_consumer_stopped`], with `extra` arguments.
pub fn spawn_consumer_stopped_with(
    run: &mut Run,
    name: &str,
    extra: &[String],
) -> Result<Proc, Fail> {
    let tag: u32 = run.rng().random();
    let output = run.path(&format!("served-{tag}.bin"));
    let mut args = vec![
        "consumer".to_string(),
        "--name".into(),
        name.into(),
        "--output".into(),
        output.display().to_string(),
    ];
    args.extend(extra.iter().cloned());
    let mut proc = run.spawn_stopped(&args)?;
    proc.set_roles(|_| "the consumer".into());
    Ok(proc)
}

/// Starts a producer of `name` with no jobs, stopped before its first instruction (see
/// [`Run::spawn_stopped`]), without waiting for its first message.
pub fn spawn_producer_stopped(run: &mut Run, name: &str) -> Result<Proc, Fail> {
    spawn_producer_stopped_with(run, name, &[])
}

/// As [`spawn_producer_stopped`], with `extra` arguments.
pub fn spawn_producer_stopped_with(
    run: &mut Run,
    name: &str,
    extra: &[&str],
) -> Result<Proc, Fail> {
    let tag: u32 = run.rng().random();
    let file = run.path(&format!("jobs-{tag}.bin"));
    std::fs::write(&file, [])?;
    let mut args = vec![
        "producer".to_string(),
        "--name".into(),
        name.into(),
        "--jobs".into(),
        file.display().to_string(),
    ];
    args.extend(extra.iter().map(|arg| arg.to_string()));
    let mut proc = run.spawn_stopped(&args)?;
    proc.set_roles(|_| "the producer".into());
    Ok(proc)
}

/// A consumer that must come up.
pub fn consumer(run: &mut Run, name: &str, extra: &[String]) -> Result<Consumer, Fail> {
    let (proc, ready, output) = spawn_consumer(run, name, extra, None)?;
    if failed_with(&ready, "over-limit") {
        // Every queue asked for here is within the limits of any user; one at exactly a limit
        // is named.
        let limit = |file: &str| {
            std::fs::read_to_string(format!("/proc/sys/fs/mqueue/{file}"))
                .ok()
                .and_then(|text| text.trim().parse::<u64>().ok())
        };
        let asked = |flag: &str| {
            extra
                .iter()
                .position(|a| a == flag)
                .and_then(|at| extra.get(at + 1))
                .and_then(|value| value.parse::<u64>().ok())
        };
        let exact = [
            ("--capacity", "msg_max", "messages"),
            ("--msg-size", "msgsize_max", "bytes"),
        ]
        .iter()
        .find_map(|&(flag, file, unit)| {
            let value = asked(flag)?;
            (Some(value) == limit(file)).then(|| {
                format!(
                    " {value} {unit} is exactly {file} (/proc/sys/fs/mqueue/{file}): the limits \
                     are inclusive, refuse only what is more than a limit (>, not >=);"
                )
            })
        })
        .unwrap_or_default();
        return Err(Fail::failed(format!(
            "the consumer said {} where it should have created {name} ({}), which is within \
             this user's limits:{exact} system_limits() reads msg_max and msgsize_max from \
             /proc/sys/fs/mqueue and the soft RLIMIT_MSGQUEUE with getrlimit, and check() \
             compares each attribute with its own limit",
            said(&ready),
            if extra.is_empty() {
                "the default 8 messages of 1024 bytes".to_string()
            } else {
                extra.join(" ")
            }
        )));
    }
    if ready.kind != "ready" {
        return Err(Fail::failed(format!(
            "the consumer said {} where it should have created {name}",
            said(&ready)
        )));
    }
    if !message_queue_exists(name) {
        return Err(Fail::failed(format!(
            "the consumer said `ready`, but no queue {name} exists: create it with mq_open \
             (O_CREAT), and mq_unlink it only when serve() ends, for the producers open it by \
             its name"
        )));
    }
    Ok(Consumer::ready(proc, name, &ready, output))
}

/// `--capacity C --msg-size S`.
pub fn sized(capacity: u64, msg_size: u64) -> Vec<String> {
    vec![
        "--capacity".into(),
        capacity.to_string(),
        "--msg-size".into(),
        msg_size.to_string(),
    ]
}

impl Consumer {
    /// The consumer that said `ready`.
    pub fn ready(proc: Proc, name: &str, ready: &Message, output: PathBuf) -> Consumer {
        Consumer {
            proc,
            name: name.to_string(),
            output,
            capacity: field(ready, "capacity"),
            msg_size: field(ready, "msg_size"),
            max_payload: field(ready, "max_payload") as usize,
            io_at_go: None,
            shutdown_from_grader: false,
        }
    }

    pub fn pid(&self) -> i32 {
        self.proc.pid.as_raw()
    }

    /// Lets it receive.
    pub fn go(&mut self) -> Result<(), Fail> {
        self.io_at_go = observe::io(&self.proc);
        self.proc.send("go", &[])
    }

    /// Lets it serve; returns what it served, in order, once it said `done`.
    pub fn serve(mut self) -> Result<Vec<Job>, Fail> {
        self.go()?;
        self.finish()
    }

    /// Waits for its answer after `go`; it is held (waiting for `exit`) until [`Consumer::end`].
    pub fn answer(&mut self) -> Result<Message, Fail> {
        self.proc.recv_any()
    }

    /// Sends the shutdown into its queue with the grader's own `mq_send`.
    pub fn send_shutdown(&mut self) -> Result<(), Fail> {
        self.shutdown_from_grader = true;
        grader_send(&self.name, &[shutdown_message()])
    }

    /// Waits for its answer once the shutdown is in its queue (after `go`). A consumer that has
    /// taken every message, the shutdown included, and waits in mq_receive for more did not
    /// see the shutdown: said at once, rather than when the check's time is up.
    pub fn answer_after_shutdown(&mut self) -> Result<Message, Fail> {
        let until = Instant::now() + Duration::from_secs(8);
        let mut stuck_since = None;
        while Instant::now() < until {
            let step = Instant::now() + Duration::from_millis(10);
            if let Some(answer) = self.proc.recv_before(step)? {
                return Ok(answer);
            }
            if !self.waits_on_empty_queue() {
                stuck_since = None;
                continue;
            }
            let since = *stuck_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= Duration::from_millis(50) {
                let who = if self.shutdown_from_grader {
                    "the grader's shutdown ('Q' alone, priority 0) included, and waits in \
                     mq_receive for more: receive() must decode a 1-byte message 'Q' as the \
                     shutdown, and serve() stop there"
                } else {
                    "the producer's shutdown included, and waits in mq_receive for more: the \
                     shutdown ('Q' alone, at priority 0) was not sent as one by shutdown(), or \
                     not taken for one by receive()"
                };
                return Err(Fail::failed(format!(
                    "the consumer took every message from {}, {who}",
                    self.name
                )));
            }
        }
        self.proc.recv_any()
    }

    /// Whether it sleeps in mq_receive while its queue is empty.
    fn waits_on_empty_queue(&self) -> bool {
        if !observe::sleeps_in(self.pid(), libc::SYS_mq_timedreceive) {
            return false;
        }
        let Some(queue) = observe::open_to_look(&self.name) else {
            return false;
        };
        let empty = mq_getattr(&queue).is_ok_and(|a| a.curmsgs() == 0);
        let _ = mq_close(queue);
        empty
    }

    /// Waits for `done` (after `go`, the shutdown sent), lets it exit, and returns what it
    /// served.
    pub fn finish(mut self) -> Result<Vec<Job>, Fail> {
        let done = self.answer_after_shutdown()?;
        if done.kind != "done" {
            return Err(Fail::failed(format!(
                "the consumer said {} instead of `done` after the shutdown message{}",
                said(&done),
                failure_hint(&done)
            )));
        }
        self.end(&done)
    }

    /// Lets a consumer that said `done` exit; returns what it served, which must be as many
    /// jobs as it says.
    pub fn end(mut self, done: &Message) -> Result<Vec<Job>, Fail> {
        release(&mut self.proc)?;
        let served = served_jobs(&self.output)?;
        if served.len() as u64 != field(done, "served") {
            return Err(Fail::failed(format!(
                "the consumer says it served {} jobs but handed {} to its handler",
                field(done, "served"),
                served.len()
            )));
        }
        Ok(served)
    }

    /// Fails if, between `go` and now (it has said `done` and is held), it read or wrote more
    /// through read()/write() than its output file and what it printed: the jobs come from the
    /// queue, nowhere else.
    pub fn expect_io_through_queue(&self, payloads: u64) -> Result<(), Fail> {
        let (Some(before), Some(after)) = (self.io_at_go, observe::io(&self.proc)) else {
            return Ok(());
        };
        let output = std::fs::metadata(&self.output).map_or(0, |m| m.len());
        let moved = after.since(before);
        let read = moved.read_bytes;
        let printed = observe::printed(&self.proc);
        observe::expect_jobs_not_printed("the consumer", "served", payloads, printed)?;
        let mut written = moved.written_bytes.saturating_sub(output);
        if written > observe::IO_SLACK {
            written = written.saturating_sub(printed);
        }
        if read > observe::IO_SLACK || written > observe::IO_SLACK {
            return Err(Fail::failed(format!(
                "while it served jobs whose payloads total {payloads} bytes, the consumer read \
                 {read} bytes and wrote {written} bytes with read()/write() besides its output \
                 file ({output} bytes) and what it printed: either the jobs reached it some \
                 other way than the message queue (a file or a pipe of the program's own), or \
                 it read files that serving has no need of (its /proc/self/status, which tells \
                 whether it is traced, before each receive, say). Each job travels whole in one \
                 message: the consumer gets it from mq_receive, and reads nothing else"
            )));
        }
        Ok(())
    }
}

/// What a consumer's `failed` says about its receiving, when every message sent was a job or
/// the shutdown.
pub fn failure_hint(answer: &Message) -> &'static str {
    if failed_with(answer, "garbled") {
        ": every message in its queue was a job ('J' and its payload) or the shutdown ('Q' \
         alone); decode exactly the bytes mq_receive returned (its return value), not the whole \
         buffer"
    } else if failed_errno(answer, "EMSGSIZE") {
        ": mq_receive refused the buffer (EMSGSIZE); the receive buffer must hold mq_msgsize \
         bytes, whatever the length of the message waiting"
    } else {
        ""
    }
}

/// A producer that said `ready`.
pub struct Producer {
    pub proc: Proc,
    pub role: &'static str,
    /// Its I/O counters when it said `ready` (it has read its job file by then).
    io_at_ready: Option<Io>,
    /// Each job's priority and payload length, in the order submitted.
    jobs: Vec<(u32, usize)>,
    /// The longest payload its queue takes, as it said at `ready`.
    pub max_payload: usize,
}

/// Starts a producer of `jobs` and waits for its `ready`.
pub fn producer(
    run: &mut Run,
    name: &str,
    jobs: &[Job],
    shutdown: bool,
    nonblocking: bool,
    role: &'static str,
) -> Result<Producer, Fail> {
    let (mut proc, ready, file) = spawn_producer(run, name, jobs, shutdown, nonblocking, role)?;
    if ready.kind != "ready" {
        let denied = ready.get("error").is_some_and(|e| e.contains("EACCES"));
        let hint = if denied {
            ": the consumer created the queue without read and write permission for its owner; \
             create it with mode S_IRUSR | S_IWUSR (0600)"
        } else if failed_with(&ready, "not-found") {
            ": the queue is gone, though the consumer that created it has not ended; it may \
             mq_unlink the queue only when serve() ends"
        } else {
            ""
        };
        return Err(Fail::failed(format!(
            "{role} said {} where it should have opened {name}{hint}",
            said(&ready)
        )));
    }
    let io_at_ready = observe::io(&proc);
    // The producer has read its jobs: what the file holds from now on never reaches the queue.
    let decoys: Vec<Job> = jobs
        .iter()
        .map(|job| {
            let mut payload = DECOY.to_vec();
            payload.extend(run.random_bytes(8));
            Job {
                priority: job.priority,
                payload,
            }
        })
        .collect();
    std::fs::write(&file, encode_jobs(&decoys))?;
    proc.set_roles(move |_| role.into());
    Ok(Producer {
        proc,
        role,
        io_at_ready,
        jobs: jobs.iter().map(|j| (j.priority, j.payload.len())).collect(),
        max_payload: field(&ready, "max_payload") as usize,
    })
}

/// Starts a producer of `jobs`; returns it with its first answer and its job file.
pub fn spawn_producer(
    run: &mut Run,
    name: &str,
    jobs: &[Job],
    shutdown: bool,
    nonblocking: bool,
    role: &'static str,
) -> Result<(Proc, Message, PathBuf), Fail> {
    let tag: u32 = run.rng().random();
    let file = run.path(&format!("jobs-{tag}.bin"));
    std::fs::write(&file, encode_jobs(jobs))?;
    let mut args = vec![
        "producer".to_string(),
        "--name".into(),
        name.into(),
        "--jobs".into(),
        file.display().to_string(),
    ];
    if shutdown {
        args.push("--shutdown".into());
    }
    if nonblocking {
        args.push("--nonblocking".into());
    }
    let mut proc = run.spawn(&args)?;
    proc.set_roles(move |_| role.into());
    let first = proc.recv_any()?;
    Ok((proc, first, file))
}

impl Producer {
    pub fn pid(&self) -> i32 {
        self.proc.pid.as_raw()
    }

    /// Lets it submit and waits for its answer; it is held (waiting for `exit`) after it.
    pub fn submit(&mut self) -> Result<Message, Fail> {
        self.proc.send("go", &[])?;
        self.proc.recv_any()
    }

    /// Its answer must be `done`.
    pub fn expect_done(&self, answer: &Message) -> Result<(), Fail> {
        if answer.kind == "done" {
            return Ok(());
        }
        let job = self.jobs.get(field(answer, "index") as usize);
        let hint = match job {
            Some(&(priority, _)) if failed_with(answer, "bad-priority") => format!(
                ": it refused priority {priority}, which is valid; priorities go from 0 to \
                 MQ_PRIO_MAX - 1 ({}), refuse only MQ_PRIO_MAX and more",
                MQ_PRIO_MAX - 1
            ),
            Some(&(_, len)) if failed_with(answer, "too-big") => format!(
                ": it refused a {len}-byte payload, which fits (the queue takes payloads of up \
                 to {} bytes, its message size minus the tag byte)",
                self.max_payload
            ),
            _ => String::new(),
        };
        Err(Fail::failed(format!(
            "{} said {} instead of `done` after submitting{hint}",
            self.role,
            said(answer)
        )))
    }

    /// Lets it exit.
    pub fn end(mut self) -> Result<(), Fail> {
        release(&mut self.proc)
    }

    /// Fails if, between `ready` and now (it has answered and is held), it wrote or read more
    /// through write()/read() than what it printed: its jobs must go into the queue.
    pub fn expect_io_through_queue(&self, payloads: u64) -> Result<(), Fail> {
        let (Some(before), Some(after)) = (self.io_at_ready, observe::io(&self.proc)) else {
            return Ok(());
        };
        let moved = after.since(before);
        let printed = observe::printed(&self.proc);
        observe::expect_jobs_not_printed(self.role, "submitted", payloads, printed)?;
        let mut written = moved.written_bytes;
        if written > observe::IO_SLACK {
            written = written.saturating_sub(printed);
        }
        if moved.read_bytes > observe::IO_SLACK || written > observe::IO_SLACK {
            return Err(Fail::failed(format!(
                "while it submitted jobs whose payloads total {payloads} bytes, {} wrote \
                 {written} bytes and read {} bytes with write()/read() besides what it printed: \
                 the jobs left it some other way than the message queue (a file or a pipe of the \
                 program's own?). Each job travels whole in one message: submit() puts 'J' and \
                 the payload in one mq_send",
                self.role, moved.read_bytes
            )));
        }
        Ok(())
    }
}

/// Lets a producer submit, wants `done`, lets it exit; returns its `done`.
pub fn produce(mut producer: Producer) -> Result<Message, Fail> {
    let done = producer.submit()?;
    producer.expect_done(&done)?;
    producer.end()?;
    Ok(done)
}

/// A producer that only sends the shutdown message.
pub fn shut_down(run: &mut Run, name: &str) -> Result<(), Fail> {
    let proc = producer(run, name, &[], true, false, "the shutdown producer")?;
    produce(proc).map(drop)
}

/// The grader's own descriptor on a queue, non-blocking, for `mq_getattr` and plain sends.
pub fn grader_open(name: &str, flags: MQ_OFlag) -> Result<MqdT, Fail> {
    mq_open(name, flags | MQ_OFlag::O_NONBLOCK, Mode::empty(), None).map_err(|e| match e {
        Errno::ENOENT => Fail::failed(format!(
            "the grader cannot open {name} ({e}) though the consumer that created it has not \
             ended: the queue exists from create() until serve() ends, and only then is it \
             unlinked"
        )),
        Errno::EACCES => Fail::failed(format!(
            "the grader, as the queue's owner, may not open {name} ({e}): create it with mode \
             S_IRUSR | S_IWUSR (0600)"
        )),
        e => Fail::Grader(format!("opening {name}: {e}")),
    })
}

/// The attributes of a queue as the grader's own `mq_getattr` sees them.
pub fn queue_attributes(name: &str) -> Result<MqAttr, Fail> {
    let queue = grader_open(name, MQ_OFlag::O_RDONLY)?;
    let attr = mq_getattr(&queue).map_err(|e| Fail::Grader(format!("mq_getattr: {e}")));
    let _ = mq_close(queue);
    attr
}

/// Takes every message out of the queue `name` with plain `mq_receive` (none waits); returns
/// how many.
pub fn grader_take_all(name: &str, msg_size: u64) -> Result<u64, Fail> {
    grader_take_at_most(name, msg_size, u64::MAX)
}

/// Takes at most `most` messages out of the queue `name` with plain `mq_receive` (none waits),
/// the first in the queue's order; returns how many.
pub fn grader_take_at_most(name: &str, msg_size: u64, most: u64) -> Result<u64, Fail> {
    let queue = grader_open(name, MQ_OFlag::O_RDONLY)?;
    let mut buffer = vec![0u8; msg_size as usize];
    let mut taken = 0;
    let outcome = loop {
        if taken == most {
            break Ok(taken);
        }
        let mut priority = 0;
        match mq_receive(&queue, &mut buffer, &mut priority) {
            Ok(_) => taken += 1,
            Err(Errno::EAGAIN) => break Ok(taken),
            Err(e) => break Err(Fail::Grader(format!("mq_receive from {name}: {e}"))),
        }
    };
    let _ = mq_close(queue);
    outcome
}

/// Sends `messages` (bytes, priority) into the queue `name` with plain `mq_send`.
pub fn grader_send(name: &str, messages: &[(Vec<u8>, u32)]) -> Result<(), Fail> {
    let queue = grader_open(name, MQ_OFlag::O_WRONLY)?;
    let mut outcome = Ok(());
    for (bytes, priority) in messages {
        if let Err(e) = mq_send(&queue, bytes, *priority) {
            outcome = Err(Fail::Grader(format!("mq_send to {name}: {e}")));
            break;
        }
    }
    let _ = mq_close(queue);
    outcome
}

/// A job as a message: the tag and the payload.
pub fn job_message(job: &Job) -> (Vec<u8>, u32) {
    let mut bytes = vec![JOB_TAG];
    bytes.extend_from_slice(&job.payload);
    (bytes, job.priority)
}

/// The shutdown message.
pub fn shutdown_message() -> (Vec<u8>, u32) {
    (vec![SHUTDOWN_TAG], 0)
}
