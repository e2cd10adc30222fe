//! A lab program's `bench` mode: the grader starts the program as `PROGRAM bench WHAT`, the
//! program says `bench-ready`, and the grader's `bench` message says what to measure: how many
//! warm-up rounds and samples, which message sizes, which CPU each side runs on, and the file
//! the samples go to. The program times each round itself (one `size nanoseconds` line per
//! sample), and says `bench-done`, or `failed` with `error=`.
//!
//! Run by hand (`cargo run -p pipe-echo -- bench latency`), a small default plan is used and
//! each size's median is printed instead.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Instant;

use nix::sched::{CpuSet, sched_setaffinity};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};

use crate::Control;

/// The kind of the grader's message that starts a measurement.
pub const BENCH: &str = "bench";
/// What the program says once it is ready for the grader's [`BENCH`] message.
pub const BENCH_READY: &str = "bench-ready";
/// What the program says once its samples are written.
pub const BENCH_DONE: &str = "bench-done";

/// Which side of a measurement a process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The side that times the rounds: the client, the sender.
    Timer,
    /// The other side: the server, the echo, the receiver.
    Peer,
}

/// The reader's side of [`Bench::time_copies`]: a process that opened the shared memory.
pub trait CopyReader {
    /// Copies the `size` bytes just written out of the shared memory.
    fn copy_out(&mut self, size: usize) -> Result<(), String>;
    /// Lets go of the shared memory (detaches or closes it).
    fn close(self) -> Result<(), String>;
}

/// What to measure, as the grader said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bench {
    /// What the command line asked for (`latency`, `throughput`, `unix-latency`, ...).
    pub what: String,
    /// Two POSIX IPC names (`/...`) the program may use, removed by the grader afterwards.
    pub names: [String; 2],
    /// A path the program may create (a Unix socket's, say), in the grader's directory.
    pub path: PathBuf,
    /// Rounds run before the timed ones, for each size.
    pub warmup: u64,
    /// Timed rounds for each size (fewer for large sizes, see [`Bench::rounds`]).
    pub samples: u64,
    /// At most this many bytes are moved per size in the timed rounds.
    pub budget: u64,
    /// The message sizes, in bytes.
    pub sizes: Vec<usize>,
    /// The CPU of the timing side and of the peer; `None`: not pinned.
    pub cpus: [Option<usize>; 2],
    /// Where the samples go; `None` when run by hand (they are summed up on stdout).
    pub out: Option<PathBuf>,
}

impl Bench {
    /// `Some` when the program was started as `PROGRAM bench WHAT`: says [`BENCH_READY`] and
    /// returns the grader's plan (a small default plan when run by hand).
    pub fn requested(control: &Control) -> Option<Bench> {
        let mut args = std::env::args().skip(1);
        if args.next().as_deref() != Some(BENCH) {
            return None;
        }
        Some(Bench::receive(control, &args.next().unwrap_or_default()))
    }

    /// Says [`BENCH_READY`] and returns the grader's plan for measuring `what` (a small default
    /// plan when run by hand).
    pub fn receive(control: &Control, what: &str) -> Bench {
        let what = what.to_string();
        control.send(BENCH_READY, &[]);
        let message = control.wait_for(BENCH);
        let number = |key: &str, default: u64| {
            message
                .get(key)
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let cpu = |key: &str| message.get(key).and_then(|v| v.parse().ok());
        let sizes = message
            .get("sizes")
            .map(|list| list.split(',').filter_map(|s| s.parse().ok()).collect())
            .unwrap_or_else(|| vec![64, 4096, 1 << 20]);
        let pid = std::process::id();
        let name = |key: &str, what: &str| {
            message
                .get(key)
                .map_or_else(|| format!("/bench-{pid}-{what}"), str::to_string)
        };
        Bench {
            names: [name("name", "a"), name("name2", "b")],
            path: message.get("path").map_or_else(
                || std::env::temp_dir().join(format!("bench-{pid}")),
                PathBuf::from,
            ),
            what,
            warmup: number("warmup", 100),
            samples: number("samples", 1000),
            budget: number("budget", 1 << 30),
            sizes,
            cpus: [cpu("timer-cpu"), cpu("peer-cpu")],
            out: message.get("out").map(PathBuf::from),
        }
    }

    /// The largest size, for buffers allocated once.
    pub fn largest(&self) -> usize {
        self.sizes.iter().copied().max().unwrap_or(0)
    }

    /// Runs process `pid` (0: the calling one) on `side`'s CPU, if the grader chose one.
    pub fn pin(&self, side: Side, pid: Pid) -> nix::Result<()> {
        let cpu = match side {
            Side::Timer => self.cpus[0],
            Side::Peer => self.cpus[1],
        };
        let Some(cpu) = cpu else { return Ok(()) };
        let mut set = CpuSet::new();
        set.set(cpu)?;
        sched_setaffinity(pid, &set)
    }

    /// How many timed rounds of `size` bytes: [`Bench::samples`], fewer when that would move
    /// more than [`Bench::budget`] bytes, and at least 3.
    pub fn rounds(&self, size: usize) -> u64 {
        let within_budget = self.budget / (size.max(1) as u64);
        self.samples.min(within_budget).max(3)
    }

    /// Times `round(size)` for every size, after warm-up rounds: one sample per timed round.
    /// Stops at the first error.
    pub fn time<E>(
        &self,
        mut round: impl FnMut(usize) -> Result<(), E>,
    ) -> Result<Vec<(usize, u64)>, E> {
        let mut samples = Vec::new();
        for &size in &self.sizes {
            let rounds = self.rounds(size);
            for _ in 0..self.warmup.min(rounds) {
                round(size)?;
            }
            for _ in 0..rounds {
                let started = Instant::now();
                round(size)?;
                samples.push((size, started.elapsed().as_nanos() as u64));
            }
        }
        Ok(samples)
    }

    /// The number of rounds the peer runs for every size (warm-up and timed), in the order
    /// [`Bench::time`] runs them.
    pub fn peer_rounds(&self) -> impl Iterator<Item = usize> + '_ {
        self.sizes.iter().flat_map(|&size| {
            let rounds = self.rounds(size);
            std::iter::repeat_n(size, (self.warmup.min(rounds) + rounds) as usize)
        })
    }

    /// Times copies through shared memory that this process maps already: each round,
    /// `write(size)` copies `size` bytes in, and a reader forked from this process copies them
    /// out (it calls `open_reader()` once, then [`CopyReader::copy_out`] each round). A byte on
    /// a pipe tells the reader that the bytes are there, and one back says that it holds them.
    ///
    /// # Safety
    /// The calling process must be single-threaded: the reader runs on after `fork()`.
    pub unsafe fn time_copies<R: CopyReader>(
        &self,
        open_reader: impl FnOnce() -> Result<R, String>,
        mut write: impl FnMut(usize) -> Result<(), String>,
    ) -> Result<Vec<(usize, u64)>, String> {
        let (go_reader, mut go) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
        let (mut ack, ack_writer) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
        // SAFETY: the caller promises a single-threaded process.
        let reader = match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
            ForkResult::Child => {
                drop((go, ack));
                let _ = self.pin(Side::Peer, Pid::from_raw(0));
                let copied = self.copy_rounds(open_reader, go_reader, ack_writer);
                if let Err(error) = &copied {
                    eprintln!("bench {} reader: {error}", self.what);
                }
                std::process::exit(i32::from(copied.is_err()));
            }
            ForkResult::Parent { child } => child,
        };
        drop((go_reader, ack_writer));
        let mut byte = [0u8];
        let measured = ack
            .read_exact(&mut byte)
            .map_err(|_| "the reader could not open the shared memory".to_string())
            .and_then(|()| {
                self.pin(Side::Timer, Pid::from_raw(0))
                    .map_err(|e| format!("sched_setaffinity: {e}"))?;
                self.time(|size| {
                    write(size)?;
                    go.write_all(b"g").map_err(|e| format!("write: {e}"))?;
                    ack.read_exact(&mut byte)
                        .map_err(|_| "the reader stopped".to_string())
                })
            });
        drop((go, ack));
        let ended = waitpid(reader, None);
        let samples = measured?;
        match ended {
            Ok(WaitStatus::Exited(_, 0)) => Ok(samples),
            other => Err(format!("the reader ended with {other:?}")),
        }
    }

    /// The reader of [`Bench::time_copies`]: opens, says so, then copies out each time it is
    /// told to.
    fn copy_rounds<R: CopyReader>(
        &self,
        open_reader: impl FnOnce() -> Result<R, String>,
        mut go: std::io::PipeReader,
        mut ack: std::io::PipeWriter,
    ) -> Result<(), String> {
        let mut reader = open_reader()?;
        ack.write_all(b"o").map_err(|e| format!("write: {e}"))?;
        let mut byte = [0u8];
        for size in self.peer_rounds() {
            go.read_exact(&mut byte)
                .map_err(|_| "the writer stopped".to_string())?;
            reader.copy_out(size)?;
            ack.write_all(b"a").map_err(|e| format!("write: {e}"))?;
        }
        reader.close()
    }

    /// Writes the samples (or sums them up on stdout when run by hand) and tells the grader
    /// [`BENCH_DONE`]; an error is told as `failed`.
    pub fn finish<E: std::fmt::Display>(
        &self,
        control: &Control,
        samples: Result<Vec<(usize, u64)>, E>,
    ) -> bool {
        let samples = match samples {
            Ok(samples) => samples,
            Err(error) => {
                eprintln!("bench {}: {error}", self.what);
                control.send("failed", &[("error", error.to_string())]);
                return false;
            }
        };
        let Some(out) = &self.out else {
            for &size in &self.sizes {
                let mut times: Vec<u64> = samples
                    .iter()
                    .filter(|(s, _)| *s == size)
                    .map(|(_, t)| *t)
                    .collect();
                times.sort_unstable();
                if let Some(median) = times.get(times.len() / 2) {
                    println!("{} {size} B: median {median} ns", self.what);
                }
            }
            return true;
        };
        let mut text = String::new();
        for (size, nanos) in &samples {
            text.push_str(&format!("{size} {nanos}\n"));
        }
        match std::fs::File::create(out).and_then(|mut f| f.write_all(text.as_bytes())) {
            Ok(()) => {
                control.send(BENCH_DONE, &[("samples", samples.len().to_string())]);
                true
            }
            Err(error) => {
                control.send(
                    "failed",
                    &[("error", format!("writing the samples: {error}"))],
                );
                false
            }
        }
    }
}
