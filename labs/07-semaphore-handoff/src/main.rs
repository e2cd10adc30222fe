//! The semaphore-handoff program. The grader runs it; you can too:
//!
//! ```text
//! cargo run -p semaphore-handoff -- --mechanism semaphores --ready /ready --ok /ok --rounds 10000
//! ```
//!
//! It creates the [`Handoff`], forks a producer and a consumer, unlinks the names once both
//! hold the objects, and waits for both. The producer hands `--rounds` records over; the
//! consumer checks each one (its number and checksum), counts what was wrong, and folds every
//! record into a digest.
//!
//! Run by the grader: the parent says `ready` (with both pids) once the names are unlinked;
//! the producer starts at the grader's `go`, which carries the seed of the records: only the
//! producer is told, so the consumer can only know the records by receiving them, and the
//! grader recomputes the digest of what it should have received. With `--pause-producer-at K`
//! the producer says `paused` before record K and waits for `go` (the consumer is then waiting
//! for *ready*), and with `--pause-consumer-at K` the consumer does so before taking record K
//! (the producer is then waiting for *ok*). With `--pause-after-create` the parent says
//! `created` once the handoff exists, before it forks, and waits for `go`. Each side says `done`
//! (the producer with the time its put() calls took, the consumer with its counts and digest)
//! or `failed` with `kind=` from [`HandoffError::kind`]; the parent says `ended` with how each
//! side ended, and waits for `exit`. If `Handoff::create` fails, the parent reports it and waits
//! for `exit` too, so that the grader can see what the failed call left open. Keep this file as
//! it is.

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use ipc_labs_driver::bench::{Bench, Side};
use ipc_labs_driver::{Control, install_noop_handler};
use nix::sched::{CpuSet, sched_setaffinity};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};
use semaphore_handoff::{Handoff, HandoffError, Mechanism, Peer, Record};

/// Which kernel object carries the signals.
#[derive(Clone, Copy, ValueEnum)]
enum Via {
    /// Named POSIX semaphores.
    Semaphores,
    /// POSIX message queues.
    Queues,
}

/// Hands records from a producer process to a consumer process through one shared slot.
#[derive(Parser)]
struct Args {
    /// What carries the signals.
    #[arg(long, value_enum)]
    mechanism: Via,
    /// The name of the *ready* semaphore or queue (`/...`).
    #[arg(long)]
    ready: String,
    /// The name of the *ok* semaphore or queue (`/...`).
    #[arg(long)]
    ok: String,
    /// How many records to hand over.
    #[arg(long)]
    rounds: u64,
    /// Run every process on this CPU only.
    #[arg(long)]
    cpu: Option<usize>,
    /// Install a do-nothing SIGUSR1 handler (without SA_RESTART) in both sides, so that SIGUSR1
    /// interrupts their waits instead of killing them.
    #[arg(long)]
    interruptible: bool,
    /// The producer stops before record K and waits for the grader's `go`.
    #[arg(long)]
    pause_producer_at: Option<u64>,
    /// The consumer stops before record K and waits for the grader's `go`.
    #[arg(long)]
    pause_consumer_at: Option<u64>,
    /// The parent stops once the handoff is created, before it forks, and waits for `go`.
    #[arg(long)]
    pause_after_create: bool,
}

/// Reports `error` to the grader and on stderr.
fn report(control: &Control, role: &str, error: &HandoffError) {
    eprintln!("semaphore-handoff {role}[{}]: {error}", std::process::id());
    control.send(
        "failed",
        &[
            ("role", role.to_string()),
            ("kind", error.kind().to_string()),
            ("error", error.to_string()),
        ],
    );
}

/// Stops until the grader says `go`, if `at` is `round`.
fn pause(control: &Control, role: &str, at: Option<u64>, round: u64) {
    if at == Some(round) {
        control.send("paused", &[("role", role.to_string())]);
        control.wait_for("go");
    }
}

/// The seed of the records when the program runs by hand, without the grader's `go`.
const SEED_BY_HAND: u64 = 1;

/// Folds a record into the consumer's digest (FNV-1a over its sequence number and its payload,
/// as 64-bit words), which the grader recomputes from the records the producer was to send.
fn fold(digest: u64, record: &Record) -> u64 {
    let words = record
        .payload
        .chunks_exact(8)
        .map(|word| u64::from_le_bytes(word.try_into().expect("8 bytes")));
    std::iter::once(record.seq)
        .chain(words)
        .fold(digest, |digest, word| {
            (digest ^ word).wrapping_mul(0x0100_0000_01b3)
        })
}

fn producer(control: &Control, handoff: &Handoff, args: &Args, consumer: Peer) -> i32 {
    let seed = control
        .wait_for("go")
        .get("seed")
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(SEED_BY_HAND);
    // Time spent in put(): writing the slot, signalling, and waiting for the consumer's ok.
    let mut elapsed = Duration::ZERO;
    for seq in 0..args.rounds {
        pause(control, "producer", args.pause_producer_at, seq);
        let record = Record::generate(seq, seed);
        let started = Instant::now();
        if let Err(error) = handoff.put(&record, &consumer) {
            report(control, "producer", &error);
            return 1;
        }
        elapsed += started.elapsed();
    }
    control.send(
        "done",
        &[
            ("role", "producer".into()),
            ("rounds", args.rounds.to_string()),
            ("elapsed_ns", elapsed.as_nanos().to_string()),
        ],
    );
    if !control.is_graded() {
        let micros = elapsed.as_secs_f64() * 1e6 / args.rounds.max(1) as f64;
        println!("{} rounds, {micros:.1} us per round trip", args.rounds);
    }
    0
}

fn consumer(control: &Control, handoff: &Handoff, args: &Args, producer: Peer) -> i32 {
    let mut record = Record::zeroed();
    let (mut good, mut torn, mut stale, mut skipped) = (0u64, 0u64, 0u64, 0u64);
    let mut digest = 0xcbf2_9ce4_8422_2325u64;
    let mut first_problem = String::new();
    for seq in 0..args.rounds {
        pause(control, "consumer", args.pause_consumer_at, seq);
        if let Err(error) = handoff.take(&mut record, &producer) {
            report(control, "consumer", &error);
            return 1;
        }
        digest = fold(digest, &record);
        let problem = if !record.is_intact() {
            torn += 1;
            "a torn record (bad checksum)".to_string()
        } else if record.seq < seq {
            stale += 1;
            format!("record {} again", record.seq)
        } else if record.seq > seq {
            skipped += 1;
            format!("record {}", record.seq)
        } else {
            good += 1;
            continue;
        };
        if first_problem.is_empty() {
            first_problem = format!("round {seq}: got {problem}");
        }
    }
    control.send(
        "done",
        &[
            ("role", "consumer".into()),
            ("good", good.to_string()),
            ("torn", torn.to_string()),
            ("stale", stale.to_string()),
            ("skipped", skipped.to_string()),
            ("first", first_problem.clone()),
            ("digest", digest.to_string()),
        ],
    );
    if !control.is_graded() {
        println!(
            "{good} good records, {torn} torn, {stale} stale, {skipped} skipped {first_problem}"
        );
    }
    0
}

/// Reaps both sides in the order they end (so that a dead side is gone at once for
/// [`Peer::gone`]), and says how each ended: producer's first.
fn reap(producer: Pid, consumer: Pid) -> [String; 2] {
    let mut ends = [String::new(), String::new()];
    while ends.iter().any(String::is_empty) {
        let (pid, end) = match waitpid(None, None) {
            Ok(WaitStatus::Exited(pid, code)) => (pid, format!("exit-{code}")),
            Ok(WaitStatus::Signaled(pid, signal, _)) => {
                (pid, format!("killed-{}", signal.as_str()))
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(errno) => {
                let end = format!("waitpid-{errno}");
                return ends.map(|e| if e.is_empty() { end.clone() } else { e });
            }
        };
        if pid == producer {
            ends[0] = end;
        } else if pid == consumer {
            ends[1] = end;
        }
    }
    ends
}

fn main() -> ExitCode {
    let control = Control::start("semaphore-handoff");
    if let Some(bench) = Bench::requested(&control) {
        return bench_handoff(&control, &bench);
    }
    let args = Args::parse();
    if let Some(cpu) = args.cpu {
        let mut set = CpuSet::new();
        set.set(cpu).expect("a CPU number");
        sched_setaffinity(Pid::from_raw(0), &set).expect("sched_setaffinity() failed");
    }
    if args.interruptible {
        install_noop_handler(nix::sys::signal::Signal::SIGUSR1).expect("installing the handler");
    }
    let mechanism = match args.mechanism {
        Via::Semaphores => Mechanism::Semaphores,
        Via::Queues => Mechanism::Queues,
    };
    let handoff = match Handoff::create(mechanism, &args.ready, &args.ok) {
        Ok(handoff) => handoff,
        Err(error) => {
            report(&control, "parent", &error);
            control.wait_for("exit");
            return ExitCode::FAILURE;
        }
    };
    if args.pause_after_create {
        control.send("created", &[]);
        control.wait_for("go");
    }
    // The consumer learns the producer's pid, forked after it, through a pipe.
    let (mut pid_reader, mut pid_writer) = std::io::pipe().expect("pipe() failed");
    // SAFETY: the program is single-threaded, so the children may run on after fork().
    let consumer_pid = match unsafe { fork() }.expect("fork() failed") {
        ForkResult::Child => {
            let mut bytes = [0u8; 4];
            pid_reader
                .read_exact(&mut bytes)
                .expect("the producer's pid");
            let producer = Peer {
                pid: Pid::from_raw(i32::from_ne_bytes(bytes)),
            };
            std::process::exit(consumer(&control, &handoff, &args, producer));
        }
        ForkResult::Parent { child } => child,
    };
    // SAFETY: as above.
    let producer_pid = match unsafe { fork() }.expect("fork() failed") {
        ForkResult::Child => {
            let consumer = Peer { pid: consumer_pid };
            std::process::exit(producer(&control, &handoff, &args, consumer));
        }
        ForkResult::Parent { child } => child,
    };
    pid_writer
        .write_all(&producer_pid.as_raw().to_ne_bytes())
        .expect("writing the producer's pid");
    let mut ok = true;
    if let Err(error) = handoff.unlink() {
        report(&control, "parent", &error);
        ok = false;
    }
    control.send(
        "ready",
        &[
            ("producer", producer_pid.to_string()),
            ("consumer", consumer_pid.to_string()),
        ],
    );
    let [producer_end, consumer_end] = reap(producer_pid, consumer_pid);
    if let Err(error) = handoff.close() {
        report(&control, "parent", &error);
        ok = false;
    }
    control.send(
        "ended",
        &[("producer", producer_end), ("consumer", consumer_end)],
    );
    control.wait_for("exit");
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `semaphore-handoff bench semaphores|queues`: times put() (a record handed over and its ok
/// back: a round trip) with a forked consumer that take()s every record, for
/// `cargo grade bench`. The records are whole ones (PAYLOAD bytes): the sizes are ignored.
fn bench_handoff(control: &Control, bench: &Bench) -> ExitCode {
    let mechanism = match bench.what.as_str() {
        "queues" => Mechanism::Queues,
        _ => Mechanism::Semaphores,
    };
    let samples = (|| {
        let handoff = Handoff::create(mechanism, &bench.names[0], &bench.names[1])
            .map_err(|e| e.to_string())?;
        let producer = Peer {
            pid: Pid::from_raw(std::process::id() as i32),
        };
        // SAFETY: the program is single-threaded, so the child may run on after fork().
        let consumer = match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
            ForkResult::Child => {
                let _ = bench.pin(Side::Peer, Pid::from_raw(0));
                let mut record = Record::zeroed();
                for _ in bench.peer_rounds() {
                    if let Err(error) = handoff.take(&mut record, &producer) {
                        eprintln!("semaphore-handoff bench consumer: {error}");
                        std::process::exit(1);
                    }
                }
                std::process::exit(0);
            }
            ForkResult::Parent { child } => Peer { pid: child },
        };
        let unlinked = handoff.unlink().map_err(|e| e.to_string());
        let measured = unlinked.and_then(|()| {
            bench
                .pin(Side::Timer, Pid::from_raw(0))
                .map_err(|e| format!("sched_setaffinity: {e}"))?;
            let record = Record::generate(0, SEED_BY_HAND);
            bench.time(|_| handoff.put(&record, &consumer).map_err(|e| e.to_string()))
        });
        let ended = reap_one(consumer.pid);
        handoff.close().map_err(|e| e.to_string())?;
        let samples = measured?;
        match ended {
            WaitStatus::Exited(_, 0) => Ok(samples),
            other => Err(format!("the consumer ended with {other:?}")),
        }
    })();
    let ok = bench.finish(control, samples);
    control.wait_for("exit");
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Waits for `pid` to end, through interruptions.
fn reap_one(pid: Pid) -> WaitStatus {
    loop {
        match waitpid(pid, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            Ok(status) => return status,
            Err(errno) => return WaitStatus::Exited(pid, -(errno as i32)),
        }
    }
}
