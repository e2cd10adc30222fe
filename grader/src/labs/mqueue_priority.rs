//! Checks of lab 2, POSIX message queues: a job dispatcher in which producer processes submit
//! prioritized jobs to a consumer process over a named queue.
//!
//! `mqueue-priority consumer --name N --output F [--capacity C --msg-size S --fail-after K]`
//! creates the queue and says `ready` (with its attributes), waits for `go`, serves until the
//! shutdown message, writes every served job to F and says `done served=K` (or `failed kind=`).
//! `mqueue-priority producer --name N --jobs F [--shutdown --nonblocking]` opens the queue, says
//! `ready`, waits for `go`, submits F's jobs and says `done submitted=K full=F`.
//!
//! Job files are records of priority (u32 LE), length (u32 LE) and payload. On the queue a job is
//! the byte `J` and its payload, the shutdown the byte `Q` alone at priority 0: the grader's own
//! sender and receiver use this format with plain POSIX calls. Once a producer has said `ready`
//! (it has read its jobs), its job file is overwritten with decoys: a consumer that serves one
//! read the file instead of the queue.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::mqueue::{MQ_OFlag, MqAttr, MqdT, mq_close, mq_getattr, mq_open, mq_receive, mq_send};
use nix::sys::resource::{Resource, getrlimit};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid, fchown};
use rand::RngExt;

use crate::engine::audit::message_queue_exists;
use crate::engine::diagnose::{self, Activity, Hang};
use crate::engine::inspect;
use crate::engine::{Check, Fail, Lab, Proc, Run};

pub static LAB: Lab = Lab {
    number: 2,
    slug: "mqueue-priority",
    title: "POSIX message queues: a job dispatcher with priorities",
    cleanup_points: 2,
    explain_hang,
    checks: &[
        Check {
            name: "priority-order",
            points: 4,
            timeout: Duration::from_secs(10),
            description: "jobs already queued (the grader sees them all in the queue) are served \
                          highest priority first, FIFO within a priority (3 rounds)",
            exclusive: false,
            run: priority_order,
        },
        Check {
            name: "full-queue-blocks",
            points: 5,
            timeout: Duration::from_secs(20),
            description: "4 producers with 50 jobs each on a 4-message queue block in mq_send \
                          at no CPU cost, and every job is then served exactly once",
            exclusive: true,
            run: full_queue_blocks,
        },
        Check {
            name: "nonblocking-full",
            points: 2,
            timeout: Duration::from_secs(5),
            description: "with O_NONBLOCK a full queue is kind=full (EAGAIN) and no job is lost \
                          or invented",
            exclusive: false,
            run: nonblocking_full,
        },
        Check {
            name: "message-boundaries",
            points: 3,
            timeout: Duration::from_secs(10),
            description: "payloads from 0 bytes to the largest a 8192-byte message holds arrive \
                          whole, each as one job",
            exclusive: false,
            run: message_boundaries,
        },
        Check {
            name: "oversized-refused",
            points: 3,
            timeout: Duration::from_secs(10),
            description: "a payload one byte too long, or far too long, is kind=too-big and \
                          nothing (not a truncated job) reaches the queue",
            exclusive: false,
            run: oversized_refused,
        },
        Check {
            name: "name-errors",
            points: 2,
            timeout: Duration::from_secs(10),
            description: "invalid names (256 bytes after the slash too) are kind=bad-name, a \
                          255-byte one works, a missing queue is not-found, an existing one exists",
            exclusive: false,
            run: name_errors,
        },
        Check {
            name: "attributes-and-limits",
            points: 3,
            timeout: Duration::from_secs(10),
            description: "the queue has the capacity and message size asked for; exactly msg_max, \
                          msgsize_max and RLIMIT_MSGQUEUE bytes are allowed, one more is \
                          kind=over-limit",
            exclusive: false,
            run: attributes_and_limits,
        },
        Check {
            name: "unlinked-at-end",
            points: 3,
            timeout: Duration::from_secs(10),
            description: "the consumer removes its queue when it ends, also when serving a job \
                          fails",
            exclusive: false,
            run: unlinked_at_end,
        },
        Check {
            name: "interop-plain-posix",
            points: 3,
            timeout: Duration::from_secs(10),
            description: "the consumer serves jobs the grader sends with plain mq_send, and the \
                          grader's plain mq_receive gets the producer's jobs in order",
            exclusive: false,
            run: interop_plain_posix,
        },
    ],
};

const JOB_TAG: u8 = b'J';
const SHUTDOWN_TAG: u8 = b'Q';
/// What the lab's API charges per message against `RLIMIT_MSGQUEUE` besides the message.
const MESSAGE_OVERHEAD: u64 = 96;
/// The longest queue name after its slash (`NAME_MAX`).
const MAX_NAME_LEN: usize = 255;
/// How the payloads the grader writes into a producer's job file after the producer read it
/// begin: nobody submits them, so a consumer that serves one read the file, not the queue.
const DECOY: &[u8] = b"never-submitted-";

/// A job as the grader writes it for a producer and reads it from a consumer's output.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Job {
    priority: u32,
    payload: Vec<u8>,
}

fn encode_jobs(jobs: &[Job]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for job in jobs {
        bytes.extend_from_slice(&job.priority.to_le_bytes());
        bytes.extend_from_slice(&(job.payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&job.payload);
    }
    bytes
}

fn decode_jobs(bytes: &[u8]) -> Result<Vec<Job>, Fail> {
    let mut jobs = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let header = rest.get(..8).ok_or_else(|| Fail::Grader("a cut output file".into()))?;
        let priority = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
        let len = u32::from_le_bytes(header[4..].try_into().expect("4 bytes")) as usize;
        let payload = rest[8..]
            .get(..len)
            .ok_or_else(|| Fail::Grader("a cut output file".into()))?;
        jobs.push(Job {
            priority,
            payload: payload.to_vec(),
        });
        rest = &rest[8 + len..];
    }
    Ok(jobs)
}

/// The jobs a consumer wrote to its output file, which must all have come through the queue.
fn served_jobs(output: &std::path::Path) -> Result<Vec<Job>, Fail> {
    let served = decode_jobs(&std::fs::read(output).unwrap_or_default())?;
    if let Some(decoy) = served.iter().find(|job| job.payload.starts_with(DECOY)) {
        return Err(Fail::failed(format!(
            "the consumer served a job that nobody submitted ({}): the grader wrote it into a \
             producer's job file after the producer had read its jobs. The consumer must serve \
             the messages it receives from the queue, not read the producers' files",
            show(&decoy.payload)
        )));
    }
    Ok(served)
}

/// The order a correct consumer serves jobs that were all queued before it started: highest
/// priority first, and the order of submission within a priority (a stable sort).
fn served_order(jobs: &[Job]) -> Vec<Job> {
    let mut sorted = jobs.to_vec();
    sorted.sort_by_key(|job| std::cmp::Reverse(job.priority));
    sorted
}

/// A short, printable picture of a payload.
fn show(payload: &[u8]) -> String {
    let text: String = payload
        .iter()
        .take(24)
        .map(|&b| if b.is_ascii_graphic() { b as char } else { '.' })
        .collect();
    format!("{} bytes {text:?}", payload.len())
}

/// The `kind=` of a `failed` answer, with its error text, for messages.
fn said(message: &ipc_labs_driver::Message) -> String {
    match message.kind.as_str() {
        "failed" => format!(
            "`failed` (kind={}: {})",
            message.get("kind").unwrap_or("none"),
            message.get("error").unwrap_or("")
        ),
        kind => format!("`{kind}`"),
    }
}

fn field(message: &ipc_labs_driver::Message, key: &str) -> u64 {
    message.get(key).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// A running consumer, after `ready`.
struct Consumer {
    proc: Proc,
    output: std::path::PathBuf,
    capacity: u64,
    max_payload: usize,
}

/// Starts a consumer with `extra` arguments, and its soft `RLIMIT_MSGQUEUE` lowered to
/// `queue_bytes` if given, and returns it with its first answer.
fn spawn_consumer(
    run: &mut Run,
    name: &str,
    extra: &[String],
    queue_bytes: Option<u64>,
) -> Result<(Proc, ipc_labs_driver::Message, std::path::PathBuf), Fail> {
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

/// A consumer that must come up.
fn consumer(run: &mut Run, name: &str, extra: &[String]) -> Result<Consumer, Fail> {
    let (proc, ready, output) = spawn_consumer(run, name, extra, None)?;
    if ready.kind != "ready" {
        return Err(Fail::failed(format!(
            "the consumer said {} where it should have created {name}",
            said(&ready)
        )));
    }
    Ok(Consumer::ready(proc, &ready, output))
}

impl Consumer {
    /// The consumer that said `ready`.
    fn ready(proc: Proc, ready: &ipc_labs_driver::Message, output: std::path::PathBuf) -> Consumer {
        Consumer {
            proc,
            output,
            capacity: field(ready, "capacity"),
            max_payload: field(ready, "max_payload") as usize,
        }
    }

    /// Lets it serve; returns what it served, in order, once it said `done`.
    fn serve(mut self) -> Result<Vec<Job>, Fail> {
        self.proc.send("go", &[])?;
        self.finish()
    }

    /// Waits for `done` (after `go` was sent) and a clean exit; returns what it served.
    fn finish(mut self) -> Result<Vec<Job>, Fail> {
        let done = self.proc.recv_any()?;
        if done.kind != "done" {
            return Err(Fail::failed(format!(
                "the consumer said {} instead of `done` after the shutdown message",
                said(&done)
            )));
        }
        self.proc.wait()?;
        let served = served_jobs(&self.output)?;
        if served.len() as u64 != field(&done, "served") {
            return Err(Fail::failed(format!(
                "the consumer says it served {} jobs but handed {} to its handler",
                field(&done, "served"),
                served.len()
            )));
        }
        Ok(served)
    }
}

/// Starts a producer of `jobs` and waits for its `ready`.
fn producer(
    run: &mut Run,
    name: &str,
    jobs: &[Job],
    shutdown: bool,
    nonblocking: bool,
    role: &'static str,
) -> Result<Proc, Fail> {
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
    let ready = proc.recv_any()?;
    if ready.kind != "ready" {
        let denied = ready.get("error").is_some_and(|e| e.contains("EACCES"));
        let hint = if denied {
            ": the consumer created the queue without read and write permission for its owner; \
             create it with mode S_IRUSR | S_IWUSR (0600)"
        } else {
            ""
        };
        return Err(Fail::failed(format!(
            "{role} said {} where it should have opened {name}{hint}",
            said(&ready)
        )));
    }
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
    Ok(proc)
}

/// Lets a producer submit and waits for `done`; returns it.
fn produce(mut proc: Proc, role: &str) -> Result<ipc_labs_driver::Message, Fail> {
    proc.send("go", &[])?;
    let done = proc.recv_any()?;
    if done.kind != "done" {
        return Err(Fail::failed(format!(
            "{role} said {} instead of `done` after submitting",
            said(&done)
        )));
    }
    proc.wait()?;
    Ok(done)
}

/// A producer that only sends the shutdown message.
fn shut_down(run: &mut Run, name: &str) -> Result<(), Fail> {
    let proc = producer(run, name, &[], true, false, "the shutdown producer")?;
    produce(proc, "the shutdown producer").map(drop)
}

/// `n` jobs with priorities drawn from a few values (so that several share one) and payloads
/// that name the job.
fn random_jobs(run: &mut Run, n: usize, tag: &str) -> Vec<Job> {
    let levels: Vec<u32> = (0..3).map(|_| run.rng().random_range(0..100)).collect();
    (0..n)
        .map(|i| {
            let priority = levels[run.rng().random_range(0..levels.len())];
            let mut payload = format!("{tag}-{i:03}-").into_bytes();
            let extra = run.rng().random_range(0..24);
            payload.extend(run.random_bytes(extra));
            Job { priority, payload }
        })
        .collect()
}

/// Compares what was served with the order a correct consumer serves `submitted` in.
fn same_order(served: &[Job], submitted: &[Job], who: &str) -> Result<(), Fail> {
    let expected = served_order(submitted);
    if served == expected {
        return Ok(());
    }
    let key = |jobs: &[Job]| {
        let mut payloads: Vec<Vec<u8>> = jobs.iter().map(|j| j.payload.clone()).collect();
        payloads.sort();
        payloads
    };
    if key(served) != key(submitted) {
        return Err(Fail::failed(format!(
            "{who}: the consumer served {} jobs, not the {} submitted (or their payloads \
             changed on the way)",
            served.len(),
            submitted.len()
        )));
    }
    if let Some(job) = served
        .iter()
        .find(|j| !submitted.iter().any(|s| s.payload == j.payload && s.priority == j.priority))
    {
        let sent = submitted
            .iter()
            .find(|s| s.payload == job.payload)
            .map_or(0, |s| s.priority);
        return Err(Fail::failed(format!(
            "{who}: a job submitted with priority {sent} was served with priority {}: send each \
             job with its own priority (mq_send's last argument) and keep the priority \
             mq_receive reports",
            job.priority
        )));
    }
    let priorities: Vec<u32> = served.iter().map(|j| j.priority).collect();
    let wanted: Vec<u32> = expected.iter().map(|j| j.priority).collect();
    let hint = if served == submitted {
        "they came out in the order submitted: the queue orders by the priority given to mq_send, \
         so send each job with its priority"
    } else if priorities.windows(2).all(|w| w[0] <= w[1]) {
        "lowest first: mq_receive returns the highest priority first, do not invert or re-sort"
    } else if priorities == wanted {
        "the priorities are right but jobs of one priority were reordered: within a priority \
         the queue is FIFO, keep that order"
    } else {
        "serve each job as mq_receive returns it: highest priority first, FIFO within one"
    };
    Err(Fail::failed(format!(
        "{who}: served with priorities {priorities:?}, expected {wanted:?}: {hint}"
    )))
}

fn priority_order(run: &mut Run) -> Result<String, Fail> {
    for round in 1..=3 {
        let name = run.ipc_name(&format!("jobs-{round}"));
        let consumer = consumer(run, &name, &[])?;
        // All jobs and the shutdown fit in the queue: they are all queued before the consumer
        // receives anything.
        let count = consumer.capacity.clamp(2, 8) as usize - 1;
        let jobs = random_jobs(run, count, &format!("r{round}"));
        let proc = producer(run, &name, &jobs, true, false, "the producer")?;
        produce(proc, "the producer")?;
        // Nobody has received yet: every job and the shutdown must be in the queue.
        let queued = queue_attributes(&name)?.curmsgs();
        let sent = jobs.len() as i64 + 1;
        if queued < sent {
            return Err(Fail::failed(format!(
                "round {round}: the producer said `done` after submitting {} jobs and the \
                 shutdown, but the queue, which nobody had read yet, holds {queued} message(s), \
                 not {sent}: the jobs did not go through the message queue (a file or another \
                 channel instead?); submit() must mq_send each job",
                jobs.len()
            )));
        }
        if queued > sent {
            return Err(Fail::failed(format!(
                "round {round}: after {} jobs and the shutdown the queue holds {queued} \
                 messages, not {sent}: one mq_send per job, and one for the shutdown",
                jobs.len()
            )));
        }
        let served = consumer.serve()?;
        same_order(&served, &jobs, &format!("round {round}"))?;
    }
    Ok("3 rounds of queued jobs were served highest priority first, FIFO within one".into())
}

/// Whether every thread of `pid` sleeps in `mq_timedsend` (what `mq_send` calls).
fn blocked_in_send(pid: i32) -> Option<bool> {
    let view = inspect::view(pid)?;
    if view.state == 'Z' {
        return None;
    }
    Some(view.threads.iter().all(|t| {
        t.state == 'S' && t.syscall.map(|(nr, _)| nr) == Some(libc::SYS_mq_timedsend)
    }))
}

/// The grader's own descriptor on a queue, for `mq_getattr` and plain sends and receives.
fn grader_open(name: &str, flags: MQ_OFlag) -> Result<MqdT, Fail> {
    mq_open(name, flags | MQ_OFlag::O_NONBLOCK, Mode::empty(), None)
        .map_err(|e| Fail::failed(format!("the grader cannot open {name} ({e}) while the consumer says it exists")))
}

/// The attributes of a queue as the grader's own `mq_getattr` sees them.
fn queue_attributes(name: &str) -> Result<MqAttr, Fail> {
    let queue = grader_open(name, MQ_OFlag::O_RDONLY)?;
    let attr = mq_getattr(&queue).map_err(|e| Fail::Grader(format!("mq_getattr: {e}")));
    let _ = mq_close(queue);
    attr
}

fn full_queue_blocks(run: &mut Run) -> Result<String, Fail> {
    const PRODUCERS: usize = 4;
    const JOBS: usize = 50;
    let name = run.ipc_name("jobs");
    let consumer = consumer(run, &name, &["--capacity".into(), "4".into(), "--msg-size".into(), "64".into()])?;
    let mut producers = Vec::new();
    let mut submitted = Vec::new();
    const ROLES: [&str; PRODUCERS] = ["producer 1", "producer 2", "producer 3", "producer 4"];
    for (p, role) in ROLES.iter().enumerate() {
        let mut jobs = random_jobs(run, JOBS, &format!("p{p}"));
        for job in &mut jobs {
            job.payload.truncate(20);
        }
        let proc = producer(run, &name, &jobs, false, false, role)?;
        submitted.push(jobs);
        producers.push(proc);
    }
    for proc in &mut producers {
        proc.send("go", &[])?;
    }
    let pids: Vec<i32> = producers.iter().map(|p| p.pid.as_raw()).collect();
    // Nobody receives yet: the queue fills and every producer must end up asleep in mq_send.
    let give_up = Instant::now() + Duration::from_secs(5);
    loop {
        let states: Vec<Option<bool>> = pids.iter().map(|&pid| blocked_in_send(pid)).collect();
        if let Some(p) = states.iter().position(Option::is_none) {
            return Err(Fail::failed(format!(
                "{} finished while the queue was full and nobody received: it cannot have \
                 submitted its {JOBS} jobs, so jobs were dropped; mq_send on a full queue must \
                 block until there is room (no O_NONBLOCK, no ignored EAGAIN)",
                ROLES[p]
            )));
        }
        if states.iter().all(|s| *s == Some(true)) {
            break;
        }
        if Instant::now() > give_up {
            let hang = diagnose::observe(&pids, &|view| {
                let index = pids.iter().position(|&p| p == view.pid).unwrap_or(0);
                ROLES[index].to_string()
            });
            return Err(Fail::failed(format!(
                "with the queue full and nobody receiving, the producers did not all block in \
                 mq_send: a producer must wait in mq_send (blocking descriptor), not retry in a \
                 loop or sleep and try again{}",
                hang.describe()
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // Asleep in the call is not enough if they wake up to retry: they must use no CPU.
    let ticks = |pid: i32| inspect::view(pid).map_or(0, |v| v.cpu_ticks);
    let before: Vec<u64> = pids.iter().map(|&pid| ticks(pid)).collect();
    std::thread::sleep(Duration::from_millis(300));
    for (p, &pid) in pids.iter().enumerate() {
        let used = ticks(pid).saturating_sub(before[p]);
        if used > 3 || blocked_in_send(pid) != Some(true) {
            return Err(Fail::failed(format!(
                "{} used {used} clock ticks of CPU in 300 ms while the queue was full: it must \
                 sleep in a blocking mq_send, not retry",
                ROLES[p]
            )));
        }
    }
    let queued = queue_attributes(&name)?.curmsgs();
    if queued != 4 {
        return Err(Fail::failed(format!(
            "the producers are blocked but the 4-message queue holds {queued}: block only when \
             the queue is full"
        )));
    }
    let mut consumer = consumer;
    consumer.proc.send("go", &[])?;
    for (proc, role) in producers.into_iter().zip(ROLES) {
        let mut proc = proc;
        let done = proc.recv_any()?;
        if done.kind != "done" || field(&done, "submitted") != JOBS as u64 {
            return Err(Fail::failed(format!(
                "{role} said {} ({} submitted) once the consumer ran, expected `done` with {JOBS}",
                said(&done),
                field(&done, "submitted")
            )));
        }
        proc.wait()?;
    }
    shut_down(run, &name)?;
    let served = consumer.finish()?;
    // Exactly once: every job of every producer, none twice, none invented.
    let mut seen: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    for job in &served {
        *seen.entry(job.payload.clone()).or_default() += 1;
    }
    let all: Vec<&Job> = submitted.iter().flatten().collect();
    let missing = all.iter().filter(|j| !seen.contains_key(&j.payload)).count();
    let twice = seen.values().filter(|&&n| n > 1).count();
    if missing > 0 || twice > 0 || served.len() != all.len() {
        return Err(Fail::failed(format!(
            "of {} jobs, {missing} were never served and {twice} were served more than once \
             ({} served in all): a full queue must make mq_send wait, never drop or repeat a job",
            all.len(),
            served.len()
        )));
    }
    // Within one producer and one priority, the queue keeps the order of submission.
    let position: BTreeMap<&[u8], usize> = served
        .iter()
        .enumerate()
        .map(|(i, j)| (j.payload.as_slice(), i))
        .collect();
    for (jobs, role) in submitted.iter().zip(ROLES) {
        let mut last: BTreeMap<u32, usize> = BTreeMap::new();
        for job in jobs {
            let at = position[job.payload.as_slice()];
            if last.insert(job.priority, at).is_some_and(|before| before > at) {
                return Err(Fail::failed(format!(
                    "jobs of {role} with priority {} were served out of the order submitted: \
                     within a priority the queue is FIFO",
                    job.priority
                )));
            }
        }
    }
    Ok(format!(
        "{PRODUCERS} producers blocked in mq_send on the full queue without using CPU; all {} \
         jobs were served once",
        all.len()
    ))
}

fn nonblocking_full(run: &mut Run) -> Result<String, Fail> {
    let name = run.ipc_name("jobs");
    let consumer = consumer(run, &name, &["--capacity".into(), "4".into()])?;
    let jobs = random_jobs(run, 7, "nb");
    let proc = producer(run, &name, &jobs, false, true, "the non-blocking producer")?;
    let done = produce(proc, "the non-blocking producer")?;
    let (submitted, full) = (field(&done, "submitted"), field(&done, "full"));
    if (submitted, full) != (4, 3) {
        return Err(Fail::failed(format!(
            "7 jobs into a 4-message queue nobody reads, non-blocking: the producer says {submitted} \
             submitted and {full} found it full, expected 4 and 3: with O_NONBLOCK mq_send \
             fails with EAGAIN on a full queue, which submit() reports as QueueError::Full"
        )));
    }
    let mut consumer = consumer;
    consumer.proc.send("go", &[])?;
    shut_down(run, &name)?;
    let served = consumer.finish()?;
    let accepted: Vec<Job> = jobs[..4].to_vec();
    same_order(&served, &accepted, "the jobs that fitted")?;
    Ok("a full non-blocking queue refused 3 of 7 jobs with kind=full, and the 4 that fitted were served".into())
}

fn message_boundaries(run: &mut Run) -> Result<String, Fail> {
    let max = 8191;
    let all = [0, 1, 2, 3, 100, 1000, 4095, 4096, max - 1, max];
    // Two rounds of five jobs and the shutdown, which all fit in the queue before the consumer
    // starts: a consumer that fails cannot leave a producer blocked.
    for sizes in all.chunks(5) {
        let name = run.ipc_name("jobs");
        let args = ["--capacity".into(), "6".into(), "--msg-size".into(), "8192".into()];
        let mut consumer = consumer(run, &name, &args)?;
        if consumer.max_payload != max {
            return Err(Fail::failed(format!(
                "in a queue of 8192-byte messages the largest payload is {} bytes, expected \
                 {max} (the message size minus the tag byte)",
                consumer.max_payload
            )));
        }
        let priority = run.rng().random_range(1..100);
        let jobs: Vec<Job> = sizes
            .iter()
            .map(|&len| Job {
                priority,
                payload: run.random_bytes(len),
            })
            .collect();
        let mut proc = producer(run, &name, &jobs, true, false, "the producer")?;
        proc.send("go", &[])?;
        let done = proc.recv_any()?;
        if done.kind != "done" {
            return Err(Fail::failed(format!(
                "the producer said {} submitting payloads of {sizes:?} bytes to a queue that \
                 takes up to {max}: every size up to the message size minus the tag byte must go",
                said(&done)
            )));
        }
        proc.wait()?;
        consumer.proc.send("go", &[])?;
        let answer = consumer.proc.recv_any()?;
        let hint = match answer.get("kind") {
            _ if answer.kind == "done" => None,
            Some("garbled") => Some(
                "a message is exactly the bytes mq_receive returned (its return value), not the \
                 whole buffer: the shutdown is one byte",
            ),
            _ => Some("the receive buffer must hold mq_msgsize bytes (a smaller one fails with \
                       EMSGSIZE)"),
        };
        if let Some(hint) = hint {
            return Err(Fail::failed(format!(
                "the consumer said {} while receiving payloads of {sizes:?} bytes: {hint}",
                said(&answer)
            )));
        }
        consumer.proc.wait()?;
        let served = served_jobs(&consumer.output)?;
        let lengths: Vec<usize> = served.iter().map(|j| j.payload.len()).collect();
        if lengths != sizes {
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
    Ok(format!("payloads of {all:?} bytes each arrived whole, as one job"))
}

fn oversized_refused(run: &mut Run) -> Result<String, Fail> {
    let name = run.ipc_name("jobs");
    let consumer = consumer(run, &name, &["--msg-size".into(), "256".into()])?;
    for len in [256, 100_000] {
        let job = Job {
            priority: 1,
            payload: run.random_bytes(len),
        };
        let mut proc = producer(run, &name, &[job], false, false, "the producer")?;
        proc.send("go", &[])?;
        let answer = proc.recv_any()?;
        match (answer.kind.as_str(), answer.get("kind")) {
            ("failed", Some("too-big")) => {}
            _ => {
                return Err(Fail::failed(format!(
                    "submitting a {len}-byte payload to a queue whose messages hold 255 bytes \
                     of payload, the producer said {}, not `failed` with kind=too-big: refuse it \
                     with QueueError::TooBig, never cut it to fit",
                    said(&answer)
                )));
            }
        }
        proc.wait()?;
    }
    // Nothing may have reached the queue, not even a truncated job.
    let queued = queue_attributes(&name)?.curmsgs();
    if queued != 0 {
        return Err(Fail::failed(format!(
            "after two refused payloads the queue holds {queued} message(s): a job that does \
             not fit must not be sent at all, not even cut to fit"
        )));
    }
    shut_down(run, &name)?;
    let served = consumer.serve()?;
    if let Some(job) = served.first() {
        return Err(Fail::failed(format!(
            "the consumer served a job ({}) though every payload was too big: do not truncate",
            show(&job.payload)
        )));
    }
    Ok("256-byte and 100000-byte payloads were kind=too-big and nothing was queued".into())
}

/// A handed-out name (audited like any other) with exactly `len` bytes after its slash.
fn name_of_length(run: &mut Run, len: usize) -> String {
    // Handed-out names are "/", the check's prefix, "-" and what was asked for.
    let prefix = run.ipc_name("x").len() - "/-x".len();
    let name = run.ipc_name(&"x".repeat(len - prefix - 1));
    debug_assert_eq!(name.len(), len + 1);
    name
}

fn name_errors(run: &mut Run) -> Result<String, Fail> {
    // Built from handed-out names, so that whatever a lax program creates is audited.
    let plain = run.ipc_name("noslash");
    let nested = run.ipc_name("dir");
    let cases = [
        (plain.trim_start_matches('/').to_string(), "no leading slash"),
        (format!("{nested}/jobs"), "a second slash"),
        ("/".to_string(), "nothing after the slash"),
        (
            name_of_length(run, MAX_NAME_LEN + 1),
            "256 bytes after the slash, one more than NAME_MAX",
        ),
    ];
    for (name, what) in &cases {
        let (mut proc, answer, _) = spawn_consumer(run, name, &[], None)?;
        match (answer.kind.as_str(), answer.get("kind")) {
            ("failed", Some("bad-name")) => {
                proc.wait()?;
            }
            _ => {
                return Err(Fail::failed(format!(
                    "creating a queue named with {what} ({name:.40}), the consumer said {}, not \
                     `failed` with kind=bad-name: check the name before mq_open()",
                    said(&answer)
                )));
            }
        }
    }
    let missing = run.ipc_name("missing");
    let file = run.path("none.bin");
    std::fs::write(&file, b"")?;
    let mut proc = run.spawn(&["producer", "--name", &missing, "--jobs", &file.display().to_string()])?;
    proc.set_roles(|_| "the producer".into());
    let answer = proc.recv_any()?;
    if (answer.kind.as_str(), answer.get("kind")) != ("failed", Some("not-found")) {
        return Err(Fail::failed(format!(
            "opening a queue that does not exist, the producer said {}, not `failed` with \
             kind=not-found: open without O_CREAT and map ENOENT to QueueError::NotFound",
            said(&answer)
        )));
    }
    proc.wait()?;
    // The longest valid name works.
    let longest = name_of_length(run, MAX_NAME_LEN);
    let (proc, answer, output) = spawn_consumer(run, &longest, &[], None)?;
    if answer.kind != "ready" {
        return Err(Fail::failed(format!(
            "creating a queue whose name has 255 bytes after the slash (NAME_MAX, the longest \
             allowed), the consumer said {}: that name is valid, refuse only a longer one",
            said(&answer)
        )));
    }
    shut_down(run, &longest)?;
    Consumer::ready(proc, &answer, output).serve()?;
    let name = run.ipc_name("jobs");
    let first = consumer(run, &name, &[])?;
    let (mut second, answer, _) = spawn_consumer(run, &name, &[], None)?;
    if (answer.kind.as_str(), answer.get("kind")) != ("failed", Some("exists")) {
        return Err(Fail::failed(format!(
            "creating a queue whose name exists, the consumer said {}, not `failed` with \
             kind=exists: create with O_CREAT | O_EXCL and map EEXIST to QueueError::Exists",
            said(&answer)
        )));
    }
    second.wait()?;
    shut_down(run, &name)?;
    first.serve()?;
    Ok("bad names were bad-name (256 bytes after the slash too), a 255-byte name worked, a \
        missing queue was not-found, an existing one exists"
        .into())
}

/// A value of `/proc/sys/fs/mqueue/`.
fn mqueue_limit(file: &str) -> Result<u64, Fail> {
    let path = format!("/proc/sys/fs/mqueue/{file}");
    std::fs::read_to_string(&path)?
        .trim()
        .parse()
        .map_err(|e| Fail::Grader(format!("{path}: {e}")))
}

fn attributes_and_limits(run: &mut Run) -> Result<String, Fail> {
    let (msg_max, msgsize_max) = (mqueue_limit("msg_max")?, mqueue_limit("msgsize_max")?);
    let sized = |capacity: u64, msg_size: u64| {
        vec!["--capacity".to_string(), capacity.to_string(), "--msg-size".into(), msg_size.to_string()]
    };
    let capacity = run.rng().random_range(2..=msg_max.min(9));
    let msg_size = run.rng().random_range(100..1000);
    let name = run.ipc_name("jobs");
    let consumer = consumer(run, &name, &sized(capacity, msg_size))?;
    let attr = queue_attributes(&name)?;
    if (attr.maxmsg() as u64, attr.msgsize() as u64) != (capacity, msg_size) {
        return Err(Fail::failed(format!(
            "asked for {capacity} messages of {msg_size} bytes, the queue has {} of {}: pass \
             the attributes (mq_attr) to mq_open with O_CREAT",
            attr.maxmsg(),
            attr.msgsize()
        )));
    }
    shut_down(run, &name)?;
    consumer.serve()?;

    let default = run.ipc_name("default");
    let consumer = self::consumer(run, &default, &[])?;
    let attr = queue_attributes(&default)?;
    if attr.maxmsg() as u64 > msg_max || attr.msgsize() as u64 > msgsize_max {
        return Err(Fail::failed(format!(
            "the default queue has {} messages of {} bytes, more than an unprivileged user may \
             have (msg_max {msg_max}, msgsize_max {msgsize_max}): choose defaults within them",
            attr.maxmsg(),
            attr.msgsize()
        )));
    }
    shut_down(run, &default)?;
    consumer.serve()?;

    // Exactly at a limit is allowed, one past it is not. The bytes limit is out of reach of the
    // default RLIMIT_MSGQUEUE, so the consumer gets a lower one.
    let (rlimit, _) = getrlimit(Resource::RLIMIT_MSGQUEUE)
        .map_err(|e| Fail::Grader(format!("getrlimit(RLIMIT_MSGQUEUE): {e}")))?;
    let rlimit_capacity = run.rng().random_range(2..=msg_max.min(8));
    let rlimit_msg_size = run.rng().random_range(100..1000);
    let bytes = rlimit_capacity * (rlimit_msg_size + MESSAGE_OVERHEAD);
    let in_bytes = format!(
        "{rlimit_capacity} messages of {rlimit_msg_size} bytes, which take {bytes} bytes \
         ({rlimit_capacity} x ({rlimit_msg_size} + {MESSAGE_OVERHEAD})),"
    );
    let mut exact = Vec::new();
    if msg_max.saturating_mul(msgsize_max + MESSAGE_OVERHEAD) <= rlimit {
        exact.push((
            format!("exactly msg_max ({msg_max}) messages of exactly msgsize_max ({msgsize_max}) bytes"),
            sized(msg_max, msgsize_max),
            None,
            (msg_max, msgsize_max),
            "a capacity up to msg_max and a message size up to msgsize_max are allowed",
        ));
    } else {
        run.note("msg_max messages of msgsize_max bytes exceed RLIMIT_MSGQUEUE here: not tried");
    }
    exact.push((
        format!("{in_bytes} with RLIMIT_MSGQUEUE at exactly {bytes}"),
        sized(rlimit_capacity, rlimit_msg_size),
        Some(bytes),
        (rlimit_capacity, rlimit_msg_size),
        "a queue of at most RLIMIT_MSGQUEUE bytes is allowed",
    ));
    for (asked, args, queue_bytes, (capacity, msg_size), allowed) in exact {
        let name = run.ipc_name("limits");
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
            shut_down(run, &name)?;
            Consumer::ready(proc, &answer, output).serve()?;
        } else if answer.get("kind") == Some("mq-open")
            && answer.get("error").is_some_and(|e| e.contains("EMFILE"))
        {
            // The program's own check passed; the kernel counts this user's other queues too.
            run.note(format!("{asked}: mq_open said EMFILE (other queues of this user)"));
            proc.wait()?;
        } else {
            return Err(Fail::failed(format!(
                "asking for {asked}, the consumer said {}: the limits are inclusive, {allowed}; \
                 refuse only what is more than a limit (>, not >=)",
                said(&answer)
            )));
        }
    }
    let over = [
        (
            format!("{} messages (msg_max + 1)", msg_max + 1),
            vec!["--capacity".to_string(), (msg_max + 1).to_string()],
            None,
            "root may exceed msg_max, a student may not",
        ),
        (
            format!("messages of {} bytes (msgsize_max + 1)", msgsize_max + 1),
            vec!["--msg-size".to_string(), (msgsize_max + 1).to_string()],
            None,
            "root may exceed msgsize_max, a student may not",
        ),
        (
            format!("{in_bytes} with RLIMIT_MSGQUEUE at {}, one byte less", bytes - 1),
            sized(rlimit_capacity, rlimit_msg_size),
            Some(bytes - 1),
            "count capacity x (msg_size + MESSAGE_OVERHEAD) against the soft RLIMIT_MSGQUEUE, which \
             holds root too",
        ),
    ];
    for (asked, args, queue_bytes, why) in over {
        let name = run.ipc_name("over");
        let (mut proc, answer, _) = spawn_consumer(run, &name, &args, queue_bytes)?;
        if (answer.kind.as_str(), answer.get("kind")) != ("failed", Some("over-limit")) {
            return Err(Fail::failed(format!(
                "asking for {asked}, the consumer said {}, not `failed` with kind=over-limit: \
                 check the config against system_limits() before mq_open ({why})",
                said(&answer)
            )));
        }
        proc.wait()?;
    }
    Ok(format!(
        "the queue had the {capacity} x {msg_size} bytes asked for; the defaults fit; exactly \
         msg_max ({msg_max}), msgsize_max ({msgsize_max}) and RLIMIT_MSGQUEUE ({bytes} bytes) \
         were allowed, one more was over-limit"
    ))
}

fn unlinked_at_end(run: &mut Run) -> Result<String, Fail> {
    let name = run.ipc_name("jobs");
    let consumer = consumer(run, &name, &[])?;
    let jobs = random_jobs(run, 3, "u");
    let proc = producer(run, &name, &jobs, true, false, "the producer")?;
    produce(proc, "the producer")?;
    consumer.serve()?;
    if message_queue_exists(&name) {
        return Err(Fail::failed(format!(
            "{name} still exists after the consumer said `done`: mq_unlink the queue when \
             serving ends, or it stays in the kernel until reboot"
        )));
    }
    let name = run.ipc_name("failing");
    let mut consumer = self::consumer(run, &name, &["--fail-after".into(), "1".into()])?;
    let proc = producer(run, &name, &jobs, true, false, "the producer")?;
    produce(proc, "the producer")?;
    consumer.proc.send("go", &[])?;
    let answer = consumer.proc.recv_any()?;
    if (answer.kind.as_str(), answer.get("kind")) != ("failed", Some("handler")) {
        return Err(Fail::failed(format!(
            "when the handler fails on the second job the consumer must report \
             kind=handler; it said {}",
            said(&answer)
        )));
    }
    consumer.proc.wait()?;
    if message_queue_exists(&name) {
        return Err(Fail::failed(format!(
            "{name} still exists after the consumer failed serving a job: serve() must close \
             and mq_unlink the queue on its error paths too (do not return early with `?` \
             before the unlink)"
        )));
    }
    Ok("the queue was unlinked after a normal end and after a failed job".into())
}

fn interop_plain_posix(run: &mut Run) -> Result<String, Fail> {
    // The grader sends, the student's consumer serves.
    let name = run.ipc_name("jobs");
    let consumer = consumer(run, &name, &[])?;
    let count = consumer.capacity.clamp(2, 8) as usize - 1;
    let jobs: Vec<Job> = random_jobs(run, count, "g")
        .into_iter()
        .map(|mut j| {
            j.payload.truncate(consumer.max_payload.min(64));
            j
        })
        .collect();
    let queue = grader_open(&name, MQ_OFlag::O_WRONLY)?;
    for job in &jobs {
        let mut message = vec![JOB_TAG];
        message.extend_from_slice(&job.payload);
        mq_send(&queue, &message, job.priority)
            .map_err(|e| Fail::Grader(format!("mq_send to the consumer's queue: {e}")))?;
    }
    mq_send(&queue, &[SHUTDOWN_TAG], 0)
        .map_err(|e| Fail::Grader(format!("mq_send of the shutdown: {e}")))?;
    let _ = mq_close(queue);
    let served = consumer.serve()?;
    same_order(&served, &jobs, "jobs the grader sent with plain mq_send")?;

    // The student's producer sends, the grader receives from a queue it created itself.
    let name = run.ipc_name("grader");
    let attr = MqAttr::new(0, 8, 512, 0);
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
            .map_err(|e| Fail::Grader(format!("giving the grader's queue to the program user: {e}"))),
        None => Ok(()),
    };
    let outcome = given.and_then(|()| receive_from_producer(run, &name, &queue));
    let _ = mq_close(queue);
    let _ = nix::mqueue::mq_unlink(name.as_str());
    outcome?;
    Ok("the consumer served the grader's plain POSIX jobs in order, and the producer's jobs \
        reached the grader's queue in the agreed format"
        .into())
}

/// Lets a producer submit jobs and a shutdown into the grader's queue, and reads them back.
fn receive_from_producer(run: &mut Run, name: &str, queue: &MqdT) -> Result<(), Fail> {
    let jobs = random_jobs(run, 6, "s");
    let proc = producer(run, name, &jobs, true, false, "the producer")?;
    produce(proc, "the producer")?;
    let mut got = Vec::new();
    let mut buffer = vec![0u8; 512];
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
    same_order(&got, &jobs, "jobs the grader received with plain mq_receive")
}

fn explain_hang(hang: &Hang) -> Option<String> {
    let doing = |activity: Activity| {
        hang.processes
            .iter()
            .filter(|p| p.activities.contains(&activity))
            .map(|p| p.role.clone())
            .collect::<Vec<_>>()
    };
    let senders = doing(Activity::MqSend);
    let receivers = doing(Activity::MqReceive);
    if !receivers.is_empty() {
        return Some(format!(
            "{} waits on an empty queue: the shutdown message never arrived, or it was not \
             recognized (the byte 'Q' alone ends serve())",
            receivers.join(" and ")
        ));
    }
    if !senders.is_empty() {
        return Some(format!(
            "{} is blocked on a full queue that nobody empties",
            senders.join(" and ")
        ));
    }
    None
}
