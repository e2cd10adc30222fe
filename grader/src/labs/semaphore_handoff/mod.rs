//! Checks of lab 7, semaphores: a producer hands 4 KiB records to a consumer through a one-slot
//! buffer in shared memory, in lock step, signalling *ready* and *ok* with named POSIX
//! semaphores or with POSIX message queues.
//!
//! `semaphore-handoff --mechanism semaphores|queues --ready N --ok M --rounds R [--cpu C]
//! [--interruptible] [--pause-producer-at K] [--pause-consumer-at K]`: the parent creates the
//! handoff, forks the consumer and the producer, unlinks the names and says `ready` (both
//! pids). The producer starts at `go`, which carries the seed of the records: only the producer
//! is told, so a consumer cannot make up what it should receive. A side told to pause says
//! `paused` before record K and waits for `go`, the other side then waiting for it. Each side
//! says `done` (the producer with the time its `put()` calls took, the consumer with how many
//! records were good, torn, stale or skipped, and the digest of all it took) or `failed` with
//! `kind=`; the parent says `ended` and waits for `exit`.
//!
//! The grader does not take the consumer's word for the records: it recomputes the digest of
//! the records the producer was to send, from the seed, with its own copy of the lab's given
//! `Record::generate`; and it reads the slot itself, from the producer's memory, while the
//! consumer is held.
//!
//! Sizes from measurements on a 2-CPU machine: a write-after-post bug shows within 100 rounds
//! when both sides share one CPU; a correct round trip takes 2-100 us (up to ~90 us when the
//! sides sit on different CPUs), so 10,000 free rounds take at most a few seconds.

use std::os::unix::fs::FileExt;
use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ipc_labs_driver::Message;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use rand::RngExt;

use crate::engine::diagnose::{Activity, Hang, Stuck};
use crate::engine::{Check, Fail, Lab, Proc, Run, audit, inspect};

pub static LAB: Lab = Lab {
    number: 7,
    slug: "semaphore-handoff",
    title: "Semaphores: a one-slot handoff between two processes, with semaphores and queues",
    cleanup_points: 2,
    explain_hang,
    checks: &[
        Check {
            name: "sem-free-rounds",
            points: 4,
            timeout: Duration::from_secs(20),
            description: "10,000 records handed over with semaphores, sides on any CPU: none \
                          lost, repeated, stale or torn; the round-trip time is reported",
            exclusive: false,
            run: sem_free_rounds,
        },
        Check {
            name: "sem-pinned-rounds",
            points: 4,
            timeout: Duration::from_secs(10),
            description: "1,000 records with semaphores, both sides on one CPU (where a post \
                          before the write shows): all intact and in order",
            exclusive: false,
            run: sem_pinned_rounds,
        },
        Check {
            name: "mq-rounds",
            points: 4,
            timeout: Duration::from_secs(25),
            description: "the same handoff with message queues: 1,000 records on one CPU and \
                          10,000 on any, all intact and in order; the round-trip time is \
                          reported",
            exclusive: false,
            run: mq_rounds,
        },
        Check {
            name: "record-in-slot",
            points: 2,
            timeout: Duration::from_secs(15),
            description: "while the consumer is held before record K, the producer's shared \
                          slot (read by the grader from its memory) holds record K, and the \
                          consumer maps the same slot",
            exclusive: false,
            run: record_in_slot,
        },
        Check {
            name: "waits-block",
            points: 3,
            timeout: Duration::from_secs(15),
            description: "a side waiting for the other (held by the grader) uses under 15% of \
                          a CPU: it blocks in the kernel, it does not spin",
            exclusive: true,
            run: waits_block,
        },
        Check {
            name: "signals-during-waits",
            points: 3,
            timeout: Duration::from_secs(30),
            description: "SIGUSR1 (with a handler) delivered to a waiting side, and every \
                          millisecond to both, does not break the protocol: EINTR is retried",
            exclusive: false,
            run: signals_during_waits,
        },
        Check {
            name: "peer-exits-early",
            points: 3,
            timeout: Duration::from_secs(20),
            description: "when one side is killed, the other reports kind=peer-gone within \
                          seconds instead of waiting for ever (semaphores both ways, queues)",
            exclusive: false,
            run: peer_exits_early,
        },
        Check {
            name: "names-unlinked",
            points: 2,
            timeout: Duration::from_secs(15),
            description: "the semaphores are named (mapped from /dev/shm) and, like the \
                          queues, unlinked once both sides hold them",
            exclusive: false,
            run: names_unlinked,
        },
    ],
};

const PARENT: &str = "the parent";
const PRODUCER: &str = "the producer";
const CONSUMER: &str = "the consumer";
/// Payload bytes in a record (`PAYLOAD` in the lab).
const PAYLOAD: usize = 4080;
/// FNV-1a's offset basis and prime: the consumer's digest folds 64-bit words with them.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;
/// How long the producer may take to write a record into the slot once the consumer has
/// freed it.
const SLOT_PATIENCE: Duration = Duration::from_secs(5);

/// One run of the program, from `ready` to `ended`.
struct Handover {
    proc: Proc,
    names: [String; 2],
    producer: i32,
    consumer: i32,
    rounds: u64,
    /// The seed of the records, which only the producer is told (in its `go`).
    seed: u64,
}

/// What the two sides reported.
#[derive(Default)]
struct Reports {
    /// Mean time of one `put()`: write, signal, wait for ok.
    round_trip_us: f64,
    good: u64,
    torn: u64,
    stale: u64,
    skipped: u64,
    first: String,
    /// The digest of every record the consumer took.
    digest: u64,
}

fn field<T: std::str::FromStr>(message: &Message, key: &str) -> Result<T, Fail> {
    message
        .get(key)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Fail::Grader(format!("`{}` without a valid `{key}`", message.kind)))
}

/// A `failed` report, in the student's terms.
fn failure(message: &Message) -> Fail {
    let role = message.get("role").unwrap_or("?");
    let kind = message.get("kind").unwrap_or("none");
    let error = message.get("error").unwrap_or("");
    let hint = match kind {
        "wait" | "post" if error.contains("EINTR") => {
            "a signal handler ran during the wait, which then failed with EINTR: that is not an \
             error, wait again"
        }
        "peer-gone" => "it says the other side is gone, but nobody killed it",
        "exists" => "the names the grader gave are fresh: open them with O_CREAT | O_EXCL",
        "open" if error.contains("EINVAL") => {
            "check the queue's attributes (one message of SIGNAL_SIZE bytes) and the name"
        }
        _ => "see the error",
    };
    Fail::failed(format!("the {role} failed with kind={kind} ({error}): {hint}"))
}

impl Handover {
    /// Starts the program and waits for its `ready`.
    fn start(run: &mut Run, mechanism: &str, rounds: u64, extra: &[&str]) -> Result<Self, Fail> {
        let names = [run.ipc_name("ready"), run.ipc_name("ok")];
        let seed: u64 = run.rng().random();
        let mut args = vec![
            "--mechanism".to_string(),
            mechanism.into(),
            "--ready".into(),
            names[0].clone(),
            "--ok".into(),
            names[1].clone(),
            "--rounds".into(),
            rounds.to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut proc = run.spawn(&args)?;
        let ready = proc.recv_any()?;
        match ready.kind.as_str() {
            "ready" => {}
            "failed" => return Err(failure(&ready)),
            kind => {
                return Err(Fail::failed(format!(
                    "the program said `{kind}` where it should have been ready"
                )));
            }
        }
        let producer: i32 = field(&ready, "producer")?;
        let consumer: i32 = field(&ready, "consumer")?;
        let parent = proc.pid.as_raw();
        proc.set_roles(move |view| {
            match view.pid {
                pid if pid == parent => PARENT,
                pid if pid == producer => PRODUCER,
                pid if pid == consumer => CONSUMER,
                _ => "another process",
            }
            .into()
        });
        Ok(Handover {
            proc,
            names,
            producer,
            consumer,
            rounds,
            seed,
        })
    }

    /// Lets the producer start, telling it (alone) the seed of the records.
    fn go(&mut self) -> Result<(), Fail> {
        self.proc.send("go", &[("seed", self.seed.to_string())])
    }

    /// Lets the producer start and collects the reports up to `ended`. `on_paused` is called
    /// with the pid of the side that paused and must send `go` when done.
    fn finish(
        &mut self,
        mut on_paused: impl FnMut(&mut Proc, i32) -> Result<(), Fail>,
    ) -> Result<Reports, Fail> {
        self.go()?;
        let mut reports = Reports::default();
        loop {
            let message = self.proc.recv_any()?;
            match (message.kind.as_str(), message.get("role")) {
                ("done", Some("producer")) => {
                    let nanos: f64 = field(&message, "elapsed_ns")?;
                    reports.round_trip_us = nanos / 1000.0 / self.rounds.max(1) as f64;
                }
                ("done", Some("consumer")) => {
                    reports.good = field(&message, "good")?;
                    reports.torn = field(&message, "torn")?;
                    reports.stale = field(&message, "stale")?;
                    reports.skipped = field(&message, "skipped")?;
                    reports.first = message.get("first").unwrap_or("").to_string();
                    reports.digest = field(&message, "digest")?;
                }
                ("paused", Some(role)) => {
                    let pid = if role == "producer" {
                        self.producer
                    } else {
                        self.consumer
                    };
                    on_paused(&mut self.proc, pid)?;
                }
                ("failed", _) => return Err(failure(&message)),
                ("ended", _) => break,
                (kind, _) => {
                    return Err(Fail::failed(format!("the program said an unexpected `{kind}`")));
                }
            }
        }
        self.exit()?;
        Ok(reports)
    }

    /// Says `exit` and waits for the parent.
    fn exit(&mut self) -> Result<(), Fail> {
        self.proc.send("exit", &[])?;
        let status = self.proc.wait()?;
        if status.signal().is_some() {
            return Err(Fail::Crashed(format!("the parent died: {status}")));
        }
        Ok(())
    }

    /// Every record must have arrived intact and in order: the consumer's digest is that of the
    /// records the producer was to send. The consumer's own counts only explain a mismatch.
    fn verify(&self, reports: &Reports, what: &str) -> Result<(), Fail> {
        if reports.digest == expected_digest(self.seed, self.rounds) {
            return Ok(());
        }
        let Reports {
            good,
            torn,
            stale,
            skipped,
            ..
        } = reports;
        if *good == self.rounds {
            return Err(Fail::failed(format!(
                "{what}: the consumer found all {good} records intact and in order, but they \
                 are not the records the producer sent (the grader recomputes them from a seed \
                 only the producer is told): take() must copy each record out of the slot the \
                 producer wrote it into"
            )));
        }
        let cause = if *stale > 0 {
            "the consumer was woken before the record was in the slot: write the record \
             first, then post ready"
        } else if *skipped > 0 {
            "the producer overwrote the slot before the consumer had read it: wait for ok \
             before writing the next record, and post ok only after copying the slot"
        } else {
            "a record was copied while it was being written: post ready only after writing, \
             post ok only after reading"
        };
        Err(Fail::failed(format!(
            "{what}: of {} records the consumer got {good} right, {torn} torn, {stale} stale \
             (seen before), {skipped} out of order; first: {}: {cause}",
            self.rounds, reports.first
        )))
    }
}


/// A plain run of `rounds` records; returns the mean round trip in microseconds.
fn rounds(run: &mut Run, mechanism: &str, rounds: u64, pinned: bool) -> Result<f64, Fail> {
    let extra: &[&str] = if pinned { &["--cpu", "0"] } else { &[] };
    let mut handover = Handover::start(run, mechanism, rounds, extra)?;
    let reports = handover.finish(|_, _| Ok(()))?;
    let what = format!(
        "{rounds} rounds with {mechanism}{}",
        if pinned { " on one CPU" } else { "" }
    );
    handover.verify(&reports, &what)?;
    Ok(reports.round_trip_us)
}

fn sem_free_rounds(run: &mut Run) -> Result<String, Fail> {
    let micros = rounds(run, "semaphores", 10_000, false)?;
    Ok(format!(
        "10000 records intact and in order; a round trip (put: write, post, wait) took {micros:.1} \
         us on average"
    ))
}

fn sem_pinned_rounds(run: &mut Run) -> Result<String, Fail> {
    let micros = rounds(run, "semaphores", 1000, true)?;
    Ok(format!(
        "1000 records intact and in order on one CPU; {micros:.1} us per round trip"
    ))
}

fn mq_rounds(run: &mut Run) -> Result<String, Fail> {
    let pinned = rounds(run, "queues", 1000, true)?;
    let free = rounds(run, "queues", 10_000, false)?;
    Ok(format!(
        "1000 records on one CPU ({pinned:.1} us per round trip) and 10000 on any ({free:.1} us) \
         intact and in order"
    ))
}

fn fnv_word(digest: u64, word: u64) -> u64 {
    (digest ^ word).wrapping_mul(FNV_PRIME)
}

/// The payload of record `seq` of the stream drawn from `seed`, as 64-bit words: the grader's
/// copy of the lab's given `Record::generate`, so that it checks the records itself.
fn payload_words(seed: u64, seq: u64) -> impl Iterator<Item = u64> {
    let mut state = (seed ^ seq.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1;
    (0..PAYLOAD / 8).map(move |_| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    })
}

/// The digest the consumer reports when it took records `0..rounds` of the stream `seed`, in
/// order: FNV-1a over each one's sequence number and payload words.
fn expected_digest(seed: u64, rounds: u64) -> u64 {
    (0..rounds).fold(FNV_OFFSET, |digest, seq| {
        std::iter::once(seq)
            .chain(payload_words(seed, seq))
            .fold(digest, fnv_word)
    })
}

/// Record `seq` as it lies in the slot, up to its checksum: the sequence number, the payload.
fn expected_record(seed: u64, seq: u64) -> Vec<u8> {
    let mut bytes = seq.to_ne_bytes().to_vec();
    bytes.extend(payload_words(seed, seq).flat_map(u64::to_le_bytes));
    bytes
}

/// A shared anonymous mapping of a process (`/dev/zero (deleted)`, `rw-s` in its maps): what
/// `mmap(MAP_SHARED | MAP_ANONYMOUS)` makes, and so where the slot can be.
struct SharedMapping {
    start: u64,
    inode: u64,
}

fn shared_anonymous(pid: i32) -> Vec<SharedMapping> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (range, perms) = (fields.next()?, fields.next()?);
            let inode = fields.nth(2)?.parse().ok()?;
            let path: Vec<&str> = fields.collect();
            let (start, end) = range.split_once('-')?;
            let start = u64::from_str_radix(start, 16).ok()?;
            let end = u64::from_str_radix(end, 16).ok()?;
            let fits = end - start >= (PAYLOAD + 16) as u64;
            (perms == "rw-s" && path.join(" ") == "/dev/zero (deleted)" && fits)
                .then_some(SharedMapping { start, inode })
        })
        .collect()
}

/// What a slot's bytes hold, in words.
fn describe_slot(bytes: &[u8], seed: u64) -> String {
    let seq = u64::from_ne_bytes(bytes[..8].try_into().expect("8 bytes"));
    if bytes.iter().all(|&b| b == 0) {
        "only zeros".into()
    } else if bytes == expected_record(seed, seq) {
        format!("record {seq}")
    } else {
        format!("a record numbered {seq} whose payload is not the producer's")
    }
}

/// With the consumer held before taking record `seq` (so the producer has written it and waits
/// for ok), checks from outside that the record is in a shared anonymous mapping of the
/// producer that the consumer maps too.
fn slot_holds(producer: i32, consumer: i32, seed: u64, seq: u64) -> Result<String, Fail> {
    let slots = shared_anonymous(producer);
    if slots.is_empty() {
        return Err(Fail::failed(
            "the producer has no shared anonymous mapping to hold the slot: make it with \
             mmap_anonymous(MAP_SHARED) in Handoff::create(), before fork()",
        ));
    }
    let want = expected_record(seed, seq);
    let memory = std::fs::File::open(format!("/proc/{producer}/mem"))
        .map_err(|e| Fail::Grader(format!("reading the producer's memory: {e}")))?;
    let mut bytes = vec![0u8; want.len()];
    let until = Instant::now() + SLOT_PATIENCE;
    let slot = loop {
        // The producer may still be writing it: look again until it is there.
        let found = slots.iter().find(|slot| {
            memory.read_exact_at(&mut bytes, slot.start).is_ok() && bytes == want
        });
        if let Some(slot) = found {
            break slot;
        }
        if Instant::now() > until {
            return Err(Fail::failed(format!(
                "while the consumer waited to take record {seq}, the producer's slot (its \
                 shared anonymous mapping) held {}, not record {seq}: put() must copy each \
                 record into the slot (Handoff::slot) before posting ready; records that \
                 travel any other way (a file, a pipe) are not the handoff",
                describe_slot(&bytes, seed)
            )));
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    if !shared_anonymous(consumer)
        .iter()
        .any(|mapping| mapping.inode == slot.inode)
    {
        return Err(Fail::failed(
            "the consumer does not map the producer's slot: create the slot in \
             Handoff::create(), before fork(), so that both sides inherit the same mapping",
        ));
    }
    Ok(format!(
        "record {seq} was in the producer's slot, which the consumer maps too"
    ))
}

fn record_in_slot(run: &mut Run) -> Result<String, Fail> {
    let seq = run.rng().random_range(10..90u64);
    let at = seq.to_string();
    let mut handover = Handover::start(run, "semaphores", 100, &["--pause-consumer-at", &at])?;
    let (producer, consumer, seed) = (handover.producer, handover.consumer, handover.seed);
    let mut seen = String::new();
    let reports = handover.finish(|proc, _| {
        seen = slot_holds(producer, consumer, seed, seq)?;
        proc.send("go", &[])
    })?;
    handover.verify(&reports, "100 rounds")?;
    Ok(seen)
}

/// Waits (up to 2 s) until `pid` sleeps in a system call; returns the call's number.
fn wait_asleep(pid: i32) -> Option<i64> {
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        if let Some(view) = inspect::view(pid)
            && let Some(thread) = view.threads.first()
            && thread.state == 'S'
            && let Some((number, _)) = thread.syscall
        {
            return Some(number);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

/// The share of a CPU `pid` uses over one second.
fn cpu_share(pid: i32) -> Option<f64> {
    let before = inspect::view(pid)?.cpu_ticks;
    std::thread::sleep(Duration::from_secs(1));
    let after = inspect::view(pid)?.cpu_ticks;
    Some((after - before) as f64 / procfs::ticks_per_second() as f64)
}

fn waits_block(run: &mut Run) -> Result<String, Fail> {
    let pauses = ["--pause-producer-at", "300", "--pause-consumer-at", "700"];
    let mut handover = Handover::start(run, "semaphores", 1000, &pauses)?;
    let (producer, consumer) = (handover.producer, handover.consumer);
    let mut shares = Vec::new();
    let reports = handover.finish(|proc, paused| {
        // The other side now waits for the paused one.
        let (waiter, role) = if paused == producer {
            (consumer, CONSUMER)
        } else {
            (producer, PRODUCER)
        };
        wait_asleep(waiter);
        let share = cpu_share(waiter).unwrap_or(0.0);
        if share > 0.15 {
            return Err(Fail::failed(format!(
                "{role} used {:.0}% of a CPU in 1 s while it waited for the other side: it \
                 spins (sem_trywait in a loop?); block in sem_timedwait() instead",
                share * 100.0
            )));
        }
        shares.push(format!("{role} {:.0}%", share * 100.0));
        proc.send("go", &[])
    })?;
    handover.verify(&reports, "1000 rounds with pauses")?;
    Ok(format!(
        "while waiting for the other side: {} of a CPU",
        shares.join(", ")
    ))
}

/// Sends SIGUSR1 to the group `group` every millisecond until stopped; counts what it sent.
struct Storm {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Storm {
    fn start(group: i32) -> Storm {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, sent) = (stop.clone(), sent.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    if killpg(Pid::from_raw(group), Signal::SIGUSR1).is_err() {
                        return;
                    }
                    sent.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        };
        Storm {
            stop,
            sent,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.sent.load(Ordering::SeqCst)
    }
}

fn signals_during_waits(run: &mut Run) -> Result<String, Fail> {
    let mut notes = Vec::new();
    for mechanism in ["semaphores", "queues"] {
        let args = [
            "--interruptible",
            "--pause-producer-at",
            "1000",
            "--pause-consumer-at",
            "2000",
        ];
        let mut handover = Handover::start(run, mechanism, 3000, &args)?;
        let (producer, consumer) = (handover.producer, handover.consumer);
        let storm = Storm::start(handover.proc.pid.as_raw());
        let mut direct = 0;
        let reports = handover.finish(|proc, paused| {
            // Signal the side that waits for the paused one, each time while it sleeps.
            let waiter = if paused == producer { consumer } else { producer };
            for _ in 0..5 {
                wait_asleep(waiter);
                kill(Pid::from_raw(waiter), Signal::SIGUSR1)
                    .map_err(|e| Fail::Grader(format!("kill: {e}")))?;
                direct += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            proc.send("go", &[])
        });
        let sent = storm.stop();
        let reports = reports?;
        handover.verify(&reports, &format!("3000 rounds with {mechanism} under signals"))?;
        notes.push(format!("{mechanism}: {direct} signals to a waiting side, {sent} to all"));
    }
    Ok(format!("3000 records intact each way: {}", notes.join("; ")))
}

/// Kills the side that pauses; the other must report `peer-gone`.
fn survives(run: &mut Run, mechanism: &str, kill_producer: bool) -> Result<String, Fail> {
    let at = run.rng().random_range(10..100u64).to_string();
    let pause = if kill_producer {
        "--pause-producer-at"
    } else {
        "--pause-consumer-at"
    };
    let mut handover = Handover::start(run, mechanism, 1000, &[pause, &at])?;
    handover.go()?;
    let (victim, victim_role, survivor) = if kill_producer {
        (handover.producer, "producer", "consumer")
    } else {
        (handover.consumer, "consumer", "producer")
    };
    let paused = handover.proc.recv("paused")?;
    if paused.get("role") != Some(victim_role) {
        return Err(Fail::Grader("the wrong side paused".into()));
    }
    kill(Pid::from_raw(victim), Signal::SIGKILL).map_err(|e| Fail::Grader(format!("kill: {e}")))?;
    let killed = Instant::now();
    let mut noticed = None;
    loop {
        let message = handover.proc.recv_any()?;
        match (message.kind.as_str(), message.get("kind")) {
            ("failed", Some("peer-gone")) if message.get("role") == Some(survivor) => {
                noticed = Some(killed.elapsed());
            }
            ("failed", _) => return Err(failure(&message)),
            ("done", _) => {
                return Err(Fail::failed(format!(
                    "the {survivor} said it was done although the {victim_role} was killed \
                     before record {at}"
                )));
            }
            ("ended", _) => break,
            (kind, _) => {
                return Err(Fail::failed(format!("the program said an unexpected `{kind}`")));
            }
        }
    }
    handover.exit()?;
    let Some(noticed) = noticed else {
        return Err(Fail::failed(format!(
            "the {survivor} ended without reporting kind=peer-gone after the {victim_role} was \
             killed"
        )));
    };
    Ok(format!(
        "{mechanism}: the {survivor} noticed the killed {victim_role} in {} ms",
        noticed.as_millis()
    ))
}

fn peer_exits_early(run: &mut Run) -> Result<String, Fail> {
    let notes = [
        survives(run, "semaphores", false)?,
        survives(run, "semaphores", true)?,
        survives(run, "queues", false)?,
    ];
    Ok(notes.join("; "))
}

fn names_unlinked(run: &mut Run) -> Result<String, Fail> {
    for mechanism in ["semaphores", "queues"] {
        let mut handover = Handover::start(run, mechanism, 100, &[])?;
        for name in &handover.names {
            let file = format!("/dev/shm/sem.{}", name.trim_start_matches('/'));
            if std::path::Path::new(&file).exists() || audit::message_queue_exists(name) {
                return Err(Fail::failed(format!(
                    "{name} still exists once both sides hold it: unlink the names \
                     (sem_unlink / mq_unlink) in Handoff::unlink(); the processes that have \
                     them open go on using them, and no crash can leave them behind"
                )));
            }
        }
        if mechanism == "semaphores" {
            // glibc maps a named semaphore from a file /dev/shm/sem.* (created under a
            // temporary name, then linked to the real one).
            let maps = std::fs::read_to_string(format!("/proc/{}/maps", handover.producer))?;
            if !maps.contains("/dev/shm/sem.") {
                return Err(Fail::failed(
                    "the producer maps no /dev/shm/sem.* file: use named semaphores, \
                     sem_open(name, O_CREAT | O_EXCL, 0600, 0)",
                ));
            }
        }
        let reports = handover.finish(|_, _| Ok(()))?;
        handover.verify(&reports, &format!("100 rounds with {mechanism}"))?;
    }
    Ok("named semaphores and queues were unlinked once both sides held them".into())
}

fn waits(process: &Stuck) -> bool {
    process.activities.iter().any(|a| {
        matches!(
            a,
            Activity::Futex | Activity::MqReceive | Activity::Sleep | Activity::Poll
        )
    })
}

fn explain_hang(hang: &Hang) -> Option<String> {
    let producer = hang.by_role(PRODUCER);
    let consumer = hang.by_role(CONSUMER);
    match (producer, consumer) {
        (Some(alone), None) | (None, Some(alone)) if waits(alone) => {
            let other = if alone.role == PRODUCER {
                CONSUMER
            } else {
                PRODUCER
            };
            Some(format!(
                "{} still waits for {other}, which is gone: wait in slices (sem_timedwait, \
                 mq_timedreceive) and give up with PeerGone when Peer::gone() says so",
                alone.role
            ))
        }
        (Some(p), Some(c)) if waits(p) && waits(c) => Some(
            "the producer and the consumer both wait for each other: a signal was lost or never \
             sent (each round: the producer writes, posts ready, waits for ok; the consumer \
             waits for ready, reads, posts ok)"
                .into(),
        ),
        _ => None,
    }
}
