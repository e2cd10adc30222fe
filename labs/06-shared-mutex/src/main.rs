//! The shared-mutex program. The grader runs it; you can too:
//!
//! ```text
//! cargo run -p shared-mutex -- --name /bank --work 100000,100000,100000,100000
//! ```
//!
//! It creates the bank in the segment `--name`, forks one worker per number in `--work` (each
//! does that many random transfers), waits as the coordinator until every worker is done, prints
//! the balances, reaps the workers and tears the bank down.
//!
//! Run by the grader, every process reports over the control channel: each worker says `ready` and
//! waits for `go`, then `finished` (with the changes it made to each account); the coordinator says
//! `ready` (with the workers' pids and where the mutex, the condition variable, the counters, the
//! journal and the accounts lie in the segment), `done` (what it saw when its wait ended) and
//! `closed` (after the teardown), and waits for `exit`. Errors are `failed` with `kind=` from
//! [`BankError::kind`]. With `--crash-worker W --crash-after N`, worker W says `holding` in the
//! middle of its transfer number N and waits, lock held, to be killed; the other workers start
//! their transfers only then. With `--try-transfers F,T,...`, the coordinator first tries those
//! transfers (of 1, or of the amounts `--try-amounts` gives) and reports how each ended in its
//! `ready` (and, for a `BadAccounts`, the accounts it named); with `--try-when-told` too, it says
//! `created` (where the pieces lie) and waits for `try` before. With `--file-size-limit B`, the
//! program may not make files larger than B bytes, so that sizing the segment fails. `--opening B`
//! is every account's opening balance. When creating the bank fails, the program says `failed` and
//! waits for `exit`, so that the grader can see what the failure left behind. Keep this file as it
//! is.

use std::io::{Read, Write};
use std::process::ExitCode;

use clap::Parser;
use ipc_labs_driver::Control;
use ipc_labs_driver::bench::{Bench, Side};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};
use shared_mutex::{ACCOUNTS, Bank, BankError, Guard, SharedBank};

/// What every account holds at the start, unless `--opening` says otherwise.
const OPENING_BALANCE: i64 = 1_000_000_000;

/// Runs a bank in shared memory: workers transfer money, a coordinator waits for them.
#[derive(Parser)]
struct Args {
    /// The segment's name: `/` and more characters, no other `/`.
    #[arg(long)]
    name: String,
    /// Transfers per worker, comma-separated: one worker per number.
    #[arg(long, value_delimiter = ',', required = true)]
    work: Vec<u64>,
    /// Seed of the workers' random transfers.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Iterations of busy work in the middle of each transfer.
    #[arg(long, default_value_t = 200)]
    stretch: u32,
    /// The worker (from 0) that stops in the middle of a transfer, holding the lock.
    #[arg(long, requires = "crash_after")]
    crash_worker: Option<usize>,
    /// How many transfers that worker completes before the one it stops in (the other workers
    /// start once it stops).
    #[arg(long)]
    crash_after: Option<u64>,
    /// Transfers to try before the workers start, as pairs of accounts `from,to,from,to,...`
    /// (of 1 each, or `--try-amounts`); the coordinator reports `ok` or the error's kind for each.
    #[arg(long, value_delimiter = ',')]
    try_transfers: Vec<usize>,
    /// The amount of each tried transfer, in order (1 where none is given): 0 and negative
    /// amounts too.
    #[arg(
        long,
        value_delimiter = ',',
        allow_negative_numbers = true,
        requires = "try_transfers"
    )]
    try_amounts: Vec<i64>,
    /// Before trying the transfers, say `created` (where the pieces of the bank lie) and wait
    /// for the grader's `try`, so that it can act on the bank's mutex first.
    #[arg(long, requires = "try_transfers")]
    try_when_told: bool,
    /// What every account holds at the start.
    #[arg(long, default_value_t = OPENING_BALANCE, allow_negative_numbers = true)]
    opening: i64,
    /// The largest file the program may make (`RLIMIT_FSIZE`), in bytes.
    #[arg(long)]
    file_size_limit: Option<u64>,
}

/// Lowers the soft `RLIMIT_FSIZE` to `bytes`; a file grown past it fails with `EFBIG` instead
/// of killing the program with `SIGXFSZ`.
fn limit_file_size(bytes: u64) {
    // SAFETY: ignoring a signal and setting a limit take no pointers but the rlimit, which lives
    // across the calls.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let mut limit = std::mem::zeroed::<libc::rlimit>();
        libc::getrlimit(libc::RLIMIT_FSIZE, &mut limit);
        limit.rlim_cur = bytes.min(limit.rlim_max);
        libc::setrlimit(libc::RLIMIT_FSIZE, &limit);
    }
}

/// Where the pieces of the bank lie in the segment, its size and the opening balance.
fn layout(opening: i64) -> Vec<(&'static str, String)> {
    vec![
        ("mutex_at", std::mem::offset_of!(Bank, lock).to_string()),
        ("cond_at", std::mem::offset_of!(Bank, all_done).to_string()),
        ("counts_at", std::mem::offset_of!(Bank, workers).to_string()),
        (
            "transfers_at",
            std::mem::offset_of!(Bank, transfers).to_string(),
        ),
        (
            "journal_at",
            std::mem::offset_of!(Bank, journal).to_string(),
        ),
        (
            "accounts_at",
            std::mem::offset_of!(Bank, accounts).to_string(),
        ),
        ("size", std::mem::size_of::<Bank>().to_string()),
        ("opening", opening.to_string()),
    ]
}

/// Reports `error` to the grader and on stderr.
fn report(control: &Control, error: &BankError) {
    eprintln!("shared-mutex[{}]: {error}", std::process::id());
    control.send(
        "failed",
        &[
            ("kind", error.kind().to_string()),
            ("error", error.to_string()),
        ],
    );
}

/// A list of numbers as `a,b,c`.
fn list<T: ToString>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// xorshift64*: the workers' transfers, reproducible from the seed.
struct Random(u64);

impl Random {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) % below
    }
}

/// The work a transfer does between debit and credit: without it, a transfer takes a few
/// nanoseconds and two unprotected ones rarely overlap.
fn stretch(iterations: u32) {
    for i in 0..iterations {
        std::hint::black_box(i);
    }
}

/// In crash mode, the pipe on which the crashing worker lets the others start once it holds
/// the lock: so that someone is left to find it dead.
struct Held {
    reader: std::io::PipeReader,
    writer: std::io::PipeWriter,
    crasher: usize,
    after: u64,
}

/// One worker: waits for the grader's go, does `work` transfers, finishes. Returns the exit
/// status.
fn worker(
    control: &Control,
    bank: &SharedBank,
    args: &Args,
    held: Option<&Held>,
    index: usize,
    work: u64,
) -> i32 {
    control.send(
        "ready",
        &[("role", "worker".into()), ("index", index.to_string())],
    );
    control.wait_for("go");
    if let Some(held) = held
        && held.crasher != index
    {
        // Start once the crashing worker holds the lock.
        let _ = (&held.reader).read_exact(&mut [0u8]);
    }
    let mut random = Random((args.seed ^ 0x9e37_79b9_7f4a_7c15).wrapping_mul(index as u64 + 1) | 1);
    let mut delta = [0i64; ACCOUNTS];
    let mut recovered = 0u32;
    let crash_at = held.filter(|h| h.crasher == index).map(|h| h.after);
    for done in 0..work {
        let from = random.next(ACCOUNTS as u64) as usize;
        let to = (from + 1 + random.next(ACCOUNTS as u64 - 1) as usize) % ACCOUNTS;
        let amount = 1 + random.next(1000) as i64;
        let result = if crash_at == Some(done) {
            bank.transfer(from, to, amount, || {
                if let Some(held) = held {
                    let _ = (&held.writer).write_all(&vec![0u8; args.work.len() - 1]);
                }
                control.send(
                    "holding",
                    &[
                        ("index", index.to_string()),
                        ("transfers", done.to_string()),
                        ("delta", list(&delta)),
                    ],
                );
                if control.is_graded() {
                    // Wait, lock held, for the grader's SIGKILL.
                    loop {
                        nix::unistd::pause();
                    }
                }
            })
        } else {
            bank.transfer(from, to, amount, || stretch(args.stretch))
        };
        match result {
            Ok(recovery) => {
                recovered += u32::from(recovery);
                delta[from] -= amount;
                delta[to] += amount;
            }
            Err(error) => {
                report(control, &error);
                return 1;
            }
        }
    }
    if let Err(error) = bank.finish() {
        report(control, &error);
        return 1;
    }
    control.send(
        "finished",
        &[
            ("index", index.to_string()),
            ("transfers", work.to_string()),
            ("delta", list(&delta)),
            ("recovered", recovered.to_string()),
        ],
    );
    0
}

/// How a worker ended, in words.
fn describe(status: nix::Result<WaitStatus>) -> String {
    match status {
        Ok(WaitStatus::Exited(_, code)) => format!("exit-{code}"),
        Ok(WaitStatus::Signaled(_, signal, _)) => format!("killed-{}", signal.as_str()),
        Ok(other) => format!("{other:?}"),
        Err(errno) => format!("waitpid-{errno}"),
    }
}

fn main() -> ExitCode {
    let control = Control::start("shared-mutex");
    if let Some(bench) = Bench::requested(&control) {
        return bench_handoff(&control, &bench);
    }
    let args = Args::parse();
    if let Some(bytes) = args.file_size_limit {
        limit_file_size(bytes);
    }
    let bank = match SharedBank::create(&args.name, args.work.len() as u32, args.opening) {
        Ok(bank) => bank,
        Err(error) => {
            report(&control, &error);
            // The grader looks at the descriptors and mappings the failure left, then lets go.
            control.wait_for("exit");
            return ExitCode::FAILURE;
        }
    };
    if args.try_when_told {
        control.send("created", &layout(args.opening));
        control.wait_for("try");
    }
    // How each tried transfer ended, and the accounts a BadAccounts named (`from>to`; `-` for
    // any other result).
    let (tried, refused): (Vec<&str>, Vec<String>) = args
        .try_transfers
        .chunks_exact(2)
        .enumerate()
        .map(|(i, pair)| {
            let amount = args.try_amounts.get(i).copied().unwrap_or(1);
            match bank.transfer(pair[0], pair[1], amount, || {}) {
                Ok(_) => ("ok", "-".to_string()),
                Err(BankError::BadAccounts { from, to }) => {
                    ("bad-accounts", format!("{from}>{to}"))
                }
                Err(error) => (error.kind(), "-".to_string()),
            }
        })
        .unzip();
    let held = match (args.crash_worker, args.crash_after) {
        (Some(crasher), Some(after)) => {
            let (reader, writer) = std::io::pipe().expect("pipe() failed");
            Some(Held {
                reader,
                writer,
                crasher,
                after,
            })
        }
        _ => None,
    };
    let mut workers: Vec<Pid> = Vec::new();
    for (index, &work) in args.work.iter().enumerate() {
        // SAFETY: the program is single-threaded, so the child may run on after fork().
        match unsafe { fork() }.expect("fork() failed") {
            ForkResult::Child => {
                let status = worker(&control, &bank, &args, held.as_ref(), index, work);
                std::process::exit(status)
            }
            ForkResult::Parent { child } => workers.push(child),
        }
    }
    let mut ready = vec![
        ("role", "coordinator".to_string()),
        ("workers", list(&workers)),
        ("tried", tried.join(",")),
        ("refused", refused.join(",")),
    ];
    ready.extend(layout(args.opening));
    control.send("ready", &ready);
    let mut ok = true;
    match bank.wait_all_done() {
        Ok(seen) => {
            control.send(
                "done",
                &[
                    ("workers", seen.workers.to_string()),
                    ("finished", seen.finished.to_string()),
                    ("dead", seen.dead.to_string()),
                    ("transfers", seen.transfers.to_string()),
                    ("balances", list(&seen.accounts)),
                ],
            );
            if !control.is_graded() {
                println!("balances: {}", list(&seen.accounts));
                println!("{} transfers", seen.transfers);
            }
        }
        Err(error) => {
            report(&control, &error);
            ok = false;
        }
    }
    let ends: Vec<String> = workers
        .iter()
        .map(|&pid| describe(waitpid(pid, None)))
        .collect();
    match bank.destroy() {
        Ok(()) => control.send("closed", &[("workers", ends.join(","))]),
        Err(error) => {
            report(&control, &error);
            ok = false;
        }
    }
    control.wait_for("exit");
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `shared-mutex bench handoff`: times a lock handed to a forked peer and back, with
/// [`SharedBank::lock`] and the unlock of its guard only, for `cargo grade bench`. Three banks,
/// so that each side always holds a lock the other waits for: in round `r` the timer unlocks
/// bank `r` (the peer, asleep in `lock()`, takes it) and sleeps in `lock()` on bank `r + 2`,
/// which the peer unlocks once it holds bank `r` (indices modulo 3). The sizes are ignored.
fn bench_handoff(control: &Control, bench: &Bench) -> ExitCode {
    let names: Vec<String> = (0..3).map(|i| format!("{}-{i}", bench.names[0])).collect();
    let mut banks = Vec::new();
    let mut samples = Ok(Vec::new());
    for name in &names {
        match SharedBank::create(name, 0, 0) {
            Ok(bank) => banks.push(bank),
            Err(error) => {
                samples = Err(format!("creating {name}: {error}"));
                break;
            }
        }
    }
    if let Ok(banks) = <&[SharedBank; 3]>::try_from(&banks[..]) {
        samples = handoffs(bench, banks);
    }
    for bank in banks {
        let name = bank.name.clone();
        if let Err(error) = bank.destroy() {
            samples = samples.and(Err(format!("destroying {name}: {error}")));
        }
    }
    let ok = bench.finish(control, samples);
    control.wait_for("exit");
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The lock of `bank`, taken; a lock that recovers from a dead holder means the other side died.
fn take(bank: &SharedBank) -> Result<Guard<'_>, String> {
    match bank.lock() {
        Ok(guard) if guard.recovered => Err("the other side died holding a lock".into()),
        Ok(guard) => Ok(guard),
        Err(error) => Err(error.to_string()),
    }
}

/// The rounds of [`bench_handoff`]: the peer forked, the timer's samples.
fn handoffs(bench: &Bench, banks: &[SharedBank; 3]) -> Result<Vec<(usize, u64)>, String> {
    // The timer holds banks 0 and 1 before the peer exists; the peer takes bank 2 before the
    // timer starts, and says so on the pipe.
    let mut held = [Some(take(&banks[0])?), Some(take(&banks[1])?), None];
    let (mut ready_reader, mut ready_writer) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: the program is single-threaded, so the child may run on after fork().
    let peer = match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            // The timer's guards: its locks are not the peer's to unlock.
            std::mem::forget(held);
            drop(ready_reader);
            let _ = bench.pin(Side::Peer, Pid::from_raw(0));
            let handed = (|| {
                let mut mine = [None, None, Some(take(&banks[2])?)];
                ready_writer
                    .write_all(b"r")
                    .map_err(|e| format!("write: {e}"))?;
                for (round, _) in bench.peer_rounds().enumerate() {
                    mine[round % 3] = Some(take(&banks[round % 3])?);
                    mine[(round + 2) % 3] = None;
                }
                Ok::<(), String>(())
            })();
            if let Err(error) = handed {
                eprintln!("shared-mutex bench peer: {error}");
                std::process::exit(1);
            }
            std::process::exit(0);
        }
        ForkResult::Parent { child } => child,
    };
    drop(ready_writer);
    let measured = ready_reader
        .read_exact(&mut [0u8])
        .map_err(|_| "the peer could not take its lock".to_string())
        .and_then(|()| {
            bench
                .pin(Side::Timer, Pid::from_raw(0))
                .map_err(|e| format!("sched_setaffinity: {e}"))?;
            let mut round = 0;
            bench.time(|_| {
                held[round % 3] = None;
                held[(round + 2) % 3] = Some(take(&banks[(round + 2) % 3])?);
                round += 1;
                Ok(())
            })
        });
    drop(held);
    let ended = waitpid(peer, None);
    let samples = measured?;
    match ended {
        Ok(WaitStatus::Exited(_, 0)) => Ok(samples),
        other => Err(format!("the peer ended with {other:?}")),
    }
}
