//! The mqueue-priority program. The grader runs it; you can too, in separate terminals:
//!
//! ```text
//! cargo run -p mqueue-priority -- consumer --name /jobs --output served.bin
//! cargo run -p mqueue-priority -- producer --name /jobs --jobs jobs.bin --shutdown
//! cargo run -p mqueue-priority -- monitor --name /jobs --samples 5
//! cargo run -p mqueue-priority -- check --capacity 50 --msg-size 65536 --msg-max 100 \
//!     --msgsize-max 65536 --queue-bytes 8388608
//! ```
//!
//! A job file (the producer's input, the consumer's output) is a sequence of records: the
//! priority as 4 bytes little-endian, the payload's length as 4 bytes little-endian, the
//! payload. `producer --jobs /dev/null --shutdown` only sends the shutdown.
//!
//! Run by the grader, each program says `ready` once its queue is open (the consumer with the
//! queue's attributes), waits for `go`, does its work, and says `done` (the consumer with how
//! many jobs it served, the producer with how many it submitted, with `--nonblocking` how many
//! found the queue full, and how many messages the queue then holds; the monitor with the
//! fewest and the most messages its samples saw; `check`, which judges a config against limits
//! given to it rather than this machine's, says `within`), or `failed` with `kind=`
//! from [`QueueError::kind`]; then it waits for `exit`, so that the grader can see which
//! descriptors it still holds (a consumer with `--again`, once `done`, waits for `again` and
//! starts over, its queue of the size `again` gives, if it gives one). SIGUSR1 does nothing
//! but interrupt a blocking call (`EINTR`): the grader sends it to a process that waits on a
//! queue. Keep this file as it is.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ipc_labs_driver::bench::{Bench, Side};
use ipc_labs_driver::{Control, install_noop_handler};
use mqueue_priority::{Job, JobQueue, Limits, Message, QueueConfig, QueueError, unlink};
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};

/// A job dispatcher over a POSIX message queue.
#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Creates the queue, serves its jobs until a shutdown message, then removes it.
    Consumer {
        /// The queue's name: `/` and up to 255 more characters, no other `/`.
        #[arg(long)]
        name: String,
        /// Where the served jobs are written, in the job file format.
        #[arg(long)]
        output: PathBuf,
        /// How many messages the queue holds.
        #[arg(long)]
        capacity: Option<u64>,
        /// The largest message in bytes, the tag byte included.
        #[arg(long)]
        msg_size: Option<u64>,
        /// Fail while serving the job after the first N (to see that the queue goes anyway).
        #[arg(long)]
        fail_after: Option<usize>,
        /// Once served, create the queue anew when told `again` (with the `capacity` and
        /// `msg_size` that message gives, if any) and serve it too, as a dispatcher that
        /// outlives its queue does.
        #[arg(long)]
        again: bool,
    },
    /// Opens the queue and submits the jobs of a file, in order.
    Producer {
        /// The queue's name.
        #[arg(long)]
        name: String,
        /// The jobs to submit, in the job file format.
        #[arg(long)]
        jobs: PathBuf,
        /// Send the shutdown message after the jobs.
        #[arg(long)]
        shutdown: bool,
        /// Do not wait on a full queue: count the jobs that did not fit and go on.
        #[arg(long)]
        nonblocking: bool,
    },
    /// Opens the queue and reads its attributes several times in a row, as a tool that watches
    /// a queue's length does.
    Monitor {
        /// The queue's name.
        #[arg(long)]
        name: String,
        /// How many times to read the attributes.
        #[arg(long, default_value_t = 10)]
        samples: u32,
    },
    /// Judges a queue config against the limits given here, not this machine's, as a tool that
    /// plans the queues of another machine does.
    Check {
        /// How many messages the queue would hold.
        #[arg(long)]
        capacity: u64,
        /// The largest message in bytes, the tag byte included.
        #[arg(long)]
        msg_size: u64,
        /// The other machine's `msg_max`.
        #[arg(long)]
        msg_max: u64,
        /// The other machine's `msgsize_max`.
        #[arg(long)]
        msgsize_max: u64,
        /// The other user's `RLIMIT_MSGQUEUE`, in bytes.
        #[arg(long)]
        queue_bytes: u64,
    },
}

/// Reports `error` to the grader and on stderr.
fn report(control: &Control, error: &QueueError, fields: &[(&str, String)]) -> ExitCode {
    eprintln!("mqueue-priority: {error}");
    let mut all = vec![
        ("kind", error.kind().to_string()),
        ("error", error.to_string()),
    ];
    all.extend(fields.iter().cloned());
    control.send("failed", &all);
    control.wait_for("exit");
    ExitCode::FAILURE
}

/// Reads a job file.
fn read_jobs(path: &Path) -> Vec<Job> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut jobs = Vec::new();
    let mut rest = &bytes[..];
    while rest.len() >= 8 {
        let priority = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes"));
        let len = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes")) as usize;
        let payload = rest[8..].get(..len).expect("a truncated job file").to_vec();
        rest = &rest[8 + len..];
        jobs.push(Job { priority, payload });
    }
    jobs
}

fn consumer(
    control: &Control,
    name: &str,
    output: &Path,
    config: QueueConfig,
    fail_after: Option<usize>,
    again: bool,
) -> ExitCode {
    let queue = match JobQueue::create(name, &config) {
        Ok(queue) => queue,
        Err(error) => return report(control, &error, &[]),
    };
    let attributes = match queue.attributes() {
        Ok(attributes) => attributes,
        Err(error) => return report(control, &error, &[]),
    };
    control.send(
        "ready",
        &[
            ("capacity", attributes.capacity.to_string()),
            ("msg_size", attributes.msg_size.to_string()),
            ("max_payload", queue.max_payload().to_string()),
        ],
    );
    control.wait_for("go");
    let file = std::fs::File::create(output).expect("creating the output file");
    let mut out = std::io::BufWriter::new(file);
    let mut count = 0;
    let served = queue.serve(|job| {
        if fail_after == Some(count) {
            return Err(format!("job {} failed (--fail-after {count})", count + 1));
        }
        count += 1;
        out.write_all(&job.priority.to_le_bytes())
            .and_then(|()| out.write_all(&(job.payload.len() as u32).to_le_bytes()))
            .and_then(|()| out.write_all(&job.payload))
            .map_err(|e| format!("writing {}: {e}", output.display()))
    });
    out.flush().expect("writing the output file");
    match served {
        Ok(served) => {
            control.send("done", &[("served", served.to_string())]);
            if again {
                // The queue created again may be of another size, if the grader says so.
                let told = control.wait_for("again");
                let size = |key: &str, given: u64| {
                    told.get(key)
                        .and_then(|value| value.parse().ok())
                        .unwrap_or(given)
                };
                let config = QueueConfig {
                    capacity: size("capacity", config.capacity),
                    msg_size: size("msg_size", config.msg_size),
                };
                return consumer(control, name, output, config, fail_after, false);
            }
            control.wait_for("exit");
            if !control.is_graded() {
                println!("served {served} jobs");
            }
            ExitCode::SUCCESS
        }
        Err(error) => report(control, &error, &[("served", count.to_string())]),
    }
}

fn producer(control: &Control, name: &str, jobs: &Path, shutdown: bool, nb: bool) -> ExitCode {
    let jobs = read_jobs(jobs);
    let queue = match JobQueue::open(name) {
        Ok(queue) => queue,
        Err(error) => return report(control, &error, &[]),
    };
    if let Err(error) = queue.set_nonblocking(nb) {
        return report(control, &error, &[]);
    }
    let attributes = match queue.attributes() {
        Ok(attributes) => attributes,
        Err(error) => return report(control, &error, &[]),
    };
    control.send(
        "ready",
        &[
            ("max_payload", queue.max_payload().to_string()),
            ("queued", attributes.queued.to_string()),
        ],
    );
    control.wait_for("go");
    let (mut submitted, mut full) = (0, 0);
    for (index, job) in jobs.iter().enumerate() {
        match queue.submit(job) {
            Ok(()) => submitted += 1,
            Err(QueueError::Full) if nb => full += 1,
            Err(error) => return report(control, &error, &[("index", index.to_string())]),
        }
    }
    if nb && shutdown {
        // The shutdown must get through: wait for room.
        if let Err(error) = queue.set_nonblocking(false) {
            return report(control, &error, &[]);
        }
    }
    if shutdown && let Err(error) = queue.shutdown() {
        return report(control, &error, &[]);
    }
    // What the queue holds now, by the kernel's count, for the grader to compare.
    let attributes = match queue.attributes() {
        Ok(attributes) => attributes,
        Err(error) => return report(control, &error, &[]),
    };
    if let Err(error) = queue.close() {
        return report(control, &error, &[]);
    }
    control.send(
        "done",
        &[
            ("submitted", submitted.to_string()),
            ("full", full.to_string()),
            ("queued", attributes.queued.to_string()),
        ],
    );
    control.wait_for("exit");
    if !control.is_graded() {
        println!("submitted {submitted} jobs, {full} found the queue full");
    }
    ExitCode::SUCCESS
}

fn monitor(control: &Control, name: &str, samples: u32) -> ExitCode {
    let queue = match JobQueue::open(name) {
        Ok(queue) => queue,
        Err(error) => return report(control, &error, &[]),
    };
    control.send("ready", &[]);
    control.wait_for("go");
    let (mut lowest, mut highest) = (u64::MAX, 0);
    for _ in 0..samples {
        match queue.attributes() {
            Ok(attributes) => {
                lowest = lowest.min(attributes.queued);
                highest = highest.max(attributes.queued);
            }
            Err(error) => return report(control, &error, &[]),
        }
    }
    if let Err(error) = queue.close() {
        return report(control, &error, &[]);
    }
    control.send(
        "done",
        &[
            ("samples", samples.to_string()),
            ("lowest", lowest.to_string()),
            ("highest", highest.to_string()),
        ],
    );
    control.wait_for("exit");
    if !control.is_graded() {
        println!("{samples} samples: {lowest} to {highest} messages queued");
    }
    ExitCode::SUCCESS
}

fn check(control: &Control, config: &QueueConfig, limits: &Limits) -> ExitCode {
    if let Err(error) = config.check(limits) {
        return report(control, &error, &[]);
    }
    control.send("within", &[]);
    control.wait_for("exit");
    if !control.is_graded() {
        println!("within the limits");
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let control = Control::start("mqueue-priority");
    install_noop_handler(Signal::SIGUSR1).expect("installing the SIGUSR1 handler");
    if let Some(bench) = Bench::requested(&control) {
        return bench_jobs(&control, &bench);
    }
    match Args::parse().command {
        Command::Consumer {
            name,
            output,
            capacity,
            msg_size,
            fail_after,
            again,
        } => {
            let mut config = QueueConfig::default();
            config.capacity = capacity.unwrap_or(config.capacity);
            config.msg_size = msg_size.unwrap_or(config.msg_size);
            consumer(&control, &name, &output, config, fail_after, again)
        }
        Command::Producer {
            name,
            jobs,
            shutdown,
            nonblocking,
        } => producer(&control, &name, &jobs, shutdown, nonblocking),
        Command::Monitor { name, samples } => monitor(&control, &name, samples),
        Command::Check {
            capacity,
            msg_size,
            msg_max,
            msgsize_max,
            queue_bytes,
        } => {
            let config = QueueConfig { capacity, msg_size };
            let limits = Limits {
                msg_max,
                msgsize_max,
                queue_bytes,
            };
            check(&control, &config, &limits)
        }
    }
}

/// `mqueue-priority bench jobs`: a job submitted to one queue, received by a forked child that
/// submits it back on a second queue, received again: one round trip, for `cargo grade bench`.
fn bench_jobs(control: &Control, bench: &Bench) -> ExitCode {
    let samples = (|| {
        let config = QueueConfig {
            capacity: 1,
            msg_size: 1024,
        };
        // create() opens the consumer's end, open() the producer's.
        let there = JobQueue::create(&bench.names[0], &config).map_err(|e| e.to_string())?;
        let back = JobQueue::create(&bench.names[1], &config).map_err(|e| e.to_string())?;
        let to_there = JobQueue::open(&bench.names[0]).map_err(|e| e.to_string())?;
        let to_back = JobQueue::open(&bench.names[1]).map_err(|e| e.to_string())?;
        let unlinked = unlink(&bench.names[0]).and_then(|()| unlink(&bench.names[1]));
        unlinked.map_err(|e| e.to_string())?;
        // SAFETY: the program is single-threaded, so the child may run on after fork().
        let child = match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
            ForkResult::Child => {
                let _ = bench.pin(Side::Peer, Pid::from_raw(0));
                for _ in bench.peer_rounds() {
                    let echoed = match there.receive() {
                        Ok(Message::Job(job)) => to_back.submit(&job),
                        Ok(Message::Shutdown) => Ok(()),
                        Err(error) => Err(error),
                    };
                    if let Err(error) = echoed {
                        eprintln!("mqueue-priority bench child: {error}");
                        std::process::exit(1);
                    }
                }
                std::process::exit(0);
            }
            ForkResult::Parent { child } => child,
        };
        let measured = bench
            .pin(Side::Timer, Pid::from_raw(0))
            .map_err(|e| format!("sched_setaffinity: {e}"))
            .and_then(|()| {
                let job = Job {
                    priority: 1,
                    payload: vec![0x5a; 64],
                };
                bench.time(|_| {
                    to_there.submit(&job).map_err(|e| e.to_string())?;
                    match back.receive().map_err(|e| e.to_string())? {
                        Message::Job(echoed) if echoed == job => Ok(()),
                        other => Err(format!("sent {job:?}, got {other:?} back")),
                    }
                })
            });
        if measured.is_err() {
            // The child would wait for the rounds that will not come.
            let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
        }
        let ended = waitpid(child, None);
        let _ = (
            there.close(),
            back.close(),
            to_there.close(),
            to_back.close(),
        );
        let samples = measured?;
        match ended {
            Ok(WaitStatus::Exited(_, 0)) => Ok(samples),
            other => Err(format!("the child ended with {other:?}")),
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
