//! Checks of lab 6, shared mutex: a bank in a POSIX shared memory segment, worker processes that
//! transfer money under a process-shared robust mutex, and a coordinator that waits on a
//! process-shared condition variable until every worker is done.
//!
//! `shared-mutex --name N --work T1,T2,.. [--seed S] [--crash-worker W --crash-after K]`: the
//! coordinator creates the bank, forks one worker per number, and says `ready` (the workers'
//! pids and where the mutex and condition variable lie in the segment); each worker says `ready`
//! and waits for a `go` (one `go` per worker: the start barrier), then says `finished` with the
//! change it made to each account. The coordinator says `done` with what it saw when its wait
//! ended, and `closed` after reaping the workers and tearing the bank down, then waits for
//! `exit`.
//!
//! The grader predicts every balance exactly from the workers' own accounts of their transfers,
//! so a single lost update shows, and it reads the final balances and count from the segment
//! itself (it keeps `/dev/shm/<name>` open to the end), so totals the coordinator reports from
//! anywhere else do not pass. It reads the mutex and condition variable from the segment to see
//! how they were initialized and who holds the lock: glibc keeps `PTHREAD_PROCESS_SHARED` as
//! bit 7 and robustness as bit 4 of the mutex's kind word (`-1` once destroyed), the holder's
//! thread id in its owner word, and the condition variable's process-shared flag as bit 0 of
//! its `__wrefs` word (bit 2 once destroyed). These are glibc's layouts on 64-bit Linux; the
//! program reports the offsets.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ipc_labs_driver::Message;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rand::RngExt;

use crate::engine::diagnose::{Activity, Hang, Stuck};
use crate::engine::inspect;
use crate::engine::{Check, Fail, Lab, Proc, Run};

pub static LAB: Lab = Lab {
    number: 6,
    slug: "shared-mutex",
    title: "Shared mutex: a bank in shared memory under a process-shared, robust pthread mutex",
    cleanup_points: 2,
    explain_hang,
    checks: &[
        Check {
            name: "process-shared-init",
            points: 3,
            timeout: Duration::from_secs(15),
            description: "the mutex and condition variable in the segment are initialized there \
                          with PTHREAD_PROCESS_SHARED (read from /dev/shm)",
            exclusive: false,
            run: process_shared_init,
        },
        Check {
            name: "exact-totals",
            points: 6,
            timeout: Duration::from_secs(40),
            description: "3 runs of 4 workers x 150000 transfers started together: every balance \
                          and the transfer count are exact (no lost update)",
            exclusive: false,
            run: exact_totals,
        },
        Check {
            name: "coordinator-sleeps",
            points: 3,
            timeout: Duration::from_secs(15),
            description: "the coordinator waiting for the workers uses under 15% of a CPU \
                          (it sleeps in pthread_cond_wait, it does not spin)",
            exclusive: true,
            run: coordinator_sleeps,
        },
        Check {
            name: "waits-for-last-worker",
            points: 3,
            timeout: Duration::from_secs(20),
            description: "workers that finish one after another wake the coordinator, which \
                          returns only once the last one has finished",
            exclusive: false,
            run: waits_for_last_worker,
        },
        Check {
            name: "owner-dies",
            points: 5,
            timeout: Duration::from_secs(20),
            description: "a worker killed while it holds the lock mid-transfer: the next locker \
                          gets EOWNERDEAD, undoes the transfer, marks the mutex consistent, and \
                          the totals add up",
            exclusive: false,
            run: owner_dies,
        },
        Check {
            name: "typed-errors",
            points: 2,
            timeout: Duration::from_secs(15),
            description: "bad segment names are refused with kind=bad-name, and transfers between \
                          accounts that do not exist or are the same with kind=bad-accounts, \
                          leaving the bank unchanged",
            exclusive: false,
            run: typed_errors,
        },
        Check {
            name: "destroyed-and-removed",
            points: 2,
            timeout: Duration::from_secs(15),
            description: "at the end the condition variable and mutex are destroyed and the \
                          segment is unlinked",
            exclusive: false,
            run: destroyed_and_removed,
        },
    ],
};

const COORDINATOR: &str = "the coordinator";
const WORKER: &str = "a worker";
/// glibc: `PTHREAD_MUTEX_PSHARED_BIT` in the mutex's `__kind`.
const KIND_PSHARED: i32 = 128;
/// glibc: `PTHREAD_MUTEX_ROBUST_NORMAL_NP` in the mutex's `__kind`.
const KIND_ROBUST: i32 = 16;
/// Where `__owner` (the holder's thread id, 0 when free) lies in glibc's `pthread_mutex_t`.
const MUTEX_OWNER_AT: usize = 8;
/// Where `__kind` lies in glibc's `pthread_mutex_t` (64-bit).
const MUTEX_KIND_AT: usize = 16;
/// Where `__wrefs` lies in glibc's `pthread_cond_t`: bit 0 process-shared, bit 2 destroyed.
const COND_WREFS_AT: usize = 36;
/// Transfers per worker, so that a correct run takes 0.1-0.3 s and an unprotected one loses
/// updates every time, even with all workers on one CPU (measured: 0 misses in 800 runs).
const WORK: u64 = 150_000;
/// How many accounts the bank has (`ACCOUNTS` in the lab).
const ACCOUNTS: usize = 8;

/// Where the program says the pieces of the bank lie.
#[derive(Clone, Copy)]
struct Layout {
    mutex_at: usize,
    cond_at: usize,
    transfers_at: usize,
    accounts_at: usize,
    size: usize,
    opening: i64,
}

/// The bank's segment as the grader reads it: opened at `ready`, it outlives the unlink.
struct Segment {
    file: std::fs::File,
    layout: Layout,
}

/// One run of the program, from the `ready`s to `closed`.
struct Session {
    proc: Proc,
    name: String,
    coordinator: i32,
    /// Worker pids, by index.
    workers: Vec<i32>,
    segment: Segment,
    /// How each of the `--try-transfers` ended, as the coordinator reported: `ok` or a kind.
    tried: Vec<String>,
}

/// What one worker reported.
struct WorkerReport {
    transfers: u64,
    delta: Vec<i64>,
    recovered: u64,
}

/// What the run reported, to its end.
struct Outcome {
    done: Message,
    closed: Message,
    workers: BTreeMap<usize, WorkerReport>,
}

fn dev_shm(name: &str) -> PathBuf {
    PathBuf::from("/dev/shm").join(name.trim_start_matches('/'))
}

fn field<T: std::str::FromStr>(message: &Message, key: &str) -> Result<T, Fail> {
    message
        .get(key)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Fail::Grader(format!("`{}` without a valid `{key}`", message.kind)))
}

fn list<T: std::str::FromStr>(message: &Message, key: &str) -> Result<Vec<T>, Fail> {
    let text = message.get(key).unwrap_or("");
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().ok())
        .collect::<Option<Vec<T>>>()
        .ok_or_else(|| Fail::Grader(format!("`{}` with a bad list `{key}`", message.kind)))
}

fn index_of(message: &Message) -> Result<usize, Fail> {
    field(message, "index")
}

/// A `failed` report, in the student's terms.
fn failure(message: &Message) -> Fail {
    let kind = message.get("kind").unwrap_or("none");
    let error = message.get("error").unwrap_or("");
    let who = message.get("pid").unwrap_or("?");
    let hint = match kind {
        // Whichever call meets it first (a lock, a condition wait) reports the same cause.
        _ if kind == "not-recoverable" || error.contains("ENOTRECOVERABLE") => {
            "a holder died and the one who got EOWNERDEAD unlocked without \
             pthread_mutex_consistent(): the mutex is now unusable for good"
        }
        "lock" | "wait" if error.contains("EOWNERDEAD") => {
            "EOWNERDEAD is not a failure: the lock is yours, repair the bank (recover()) and \
             call pthread_mutex_consistent()"
        }
        "lock" | "wait" if error.contains("EINVAL") => {
            "the mutex or condition variable was not initialized, or already destroyed"
        }
        _ => "see the error",
    };
    Fail::failed(format!(
        "pid {who} failed with kind={kind} ({error}): {hint}"
    ))
}

impl Segment {
    /// Another handle on the same segment.
    fn try_clone(&self) -> Result<Segment, Fail> {
        Ok(Segment {
            file: self.file.try_clone()?,
            layout: self.layout,
        })
    }

    /// Reads `N` bytes of the segment at `offset`.
    fn read<const N: usize>(&self, offset: usize) -> Result<[u8; N], Fail> {
        let mut bytes = [0u8; N];
        self.file.read_exact_at(&mut bytes, offset as u64).map_err(|_| {
            Fail::failed(format!(
                "the segment is smaller than the bank ({} bytes): ftruncate() it to \
                 size_of::<Bank>()",
                self.layout.size
            ))
        })?;
        Ok(bytes)
    }

    /// The mutex's kind word.
    fn mutex_kind(&self) -> Result<i32, Fail> {
        Ok(i32::from_ne_bytes(self.read(self.layout.mutex_at + MUTEX_KIND_AT)?))
    }

    /// The thread id of the mutex's holder, 0 if nobody holds it.
    fn mutex_owner(&self) -> Result<i32, Fail> {
        Ok(i32::from_ne_bytes(self.read(self.layout.mutex_at + MUTEX_OWNER_AT)?))
    }

    /// The condition variable's `__wrefs` word.
    fn cond_wrefs(&self) -> Result<u32, Fail> {
        Ok(u32::from_ne_bytes(self.read(self.layout.cond_at + COND_WREFS_AT)?))
    }

    /// The transfer count and the balances, as they are in the segment.
    fn bank(&self) -> Result<(u64, Vec<i64>), Fail> {
        let transfers = u64::from_ne_bytes(self.read(self.layout.transfers_at)?);
        let accounts = (0..ACCOUNTS)
            .map(|i| Ok(i64::from_ne_bytes(self.read(self.layout.accounts_at + 8 * i)?)))
            .collect::<Result<_, Fail>>()?;
        Ok((transfers, accounts))
    }
}

impl Session {
    /// Starts the program and collects the coordinator's and every worker's `ready`.
    fn start(run: &mut Run, work: &[u64], extra: &[String]) -> Result<Session, Fail> {
        let name = run.ipc_name("bank");
        let seed: u32 = run.rng().random();
        let work_list: Vec<String> = work.iter().map(u64::to_string).collect();
        let mut args = vec![
            "--name".to_string(),
            name.clone(),
            "--work".into(),
            work_list.join(","),
            "--seed".into(),
            seed.to_string(),
        ];
        args.extend(extra.iter().cloned());
        let mut proc = run.spawn(&args)?;
        let coordinator = proc.pid.as_raw();
        proc.set_roles(move |view| {
            if view.pid == coordinator {
                COORDINATOR.into()
            } else if view.ppid == coordinator {
                WORKER.into()
            } else {
                "another process".into()
            }
        });
        let mut workers = vec![0; work.len()];
        let mut layout = None;
        let mut tried = Vec::new();
        while layout.is_none() || workers.contains(&0) {
            let message = proc.recv_any()?;
            match (message.kind.as_str(), message.get("role")) {
                ("ready", Some("coordinator")) => {
                    layout = Some(Layout {
                        mutex_at: field(&message, "mutex_at")?,
                        cond_at: field(&message, "cond_at")?,
                        transfers_at: field(&message, "transfers_at")?,
                        accounts_at: field(&message, "accounts_at")?,
                        size: field(&message, "size")?,
                        opening: field(&message, "opening")?,
                    });
                    tried = message
                        .get("tried")
                        .unwrap_or("")
                        .split(',')
                        .map(String::from)
                        .collect();
                }
                ("ready", Some("worker")) => {
                    let index = index_of(&message)?;
                    if let Some(slot) = workers.get_mut(index) {
                        *slot = field(&message, "pid")?;
                    }
                }
                ("failed", _) => return Err(failure(&message)),
                (kind, _) => {
                    return Err(Fail::failed(format!(
                        "the program said `{kind}` before every process was ready"
                    )));
                }
            }
        }
        let layout = layout.expect("loop ends with a layout");
        let file = std::fs::File::open(dev_shm(&name)).map_err(|_| {
            Fail::failed(format!(
                "{} does not exist while the coordinator says the bank is ready: create the \
                 segment with shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600)",
                dev_shm(&name).display()
            ))
        })?;
        Ok(Session {
            proc,
            name,
            coordinator,
            workers,
            segment: Segment { file, layout },
            tried,
        })
    }

    /// Releases the workers all at once: one `go` each.
    fn go(&mut self) -> Result<(), Fail> {
        for _ in &self.workers {
            self.proc.send("go", &[])?;
        }
        Ok(())
    }

    /// Collects the reports up to `closed`, then waits for the exit. `on_holding` is called
    /// when a worker stops mid-transfer.
    fn finish(&mut self, mut on_holding: impl FnMut(&Message) -> Result<(), Fail>) -> Result<Outcome, Fail> {
        let mut done = None;
        let mut workers = BTreeMap::new();
        let closed = loop {
            let message = self.proc.recv_any()?;
            match message.kind.as_str() {
                "finished" => {
                    workers.insert(
                        index_of(&message)?,
                        WorkerReport {
                            transfers: field(&message, "transfers")?,
                            delta: list(&message, "delta")?,
                            recovered: field(&message, "recovered")?,
                        },
                    );
                }
                "holding" => on_holding(&message)?,
                "done" => done = Some(message),
                "closed" => break message,
                "failed" => return Err(failure(&message)),
                kind => {
                    return Err(Fail::failed(format!("the program said an unexpected `{kind}`")));
                }
            }
        };
        let done = done.ok_or_else(|| Fail::failed("the coordinator said `closed` without `done`"))?;
        self.proc.send("exit", &[])?;
        let status = self.proc.wait()?;
        if !status.success() {
            return Err(Fail::failed(format!("the coordinator exited with {status}")));
        }
        Ok(Outcome {
            done,
            closed,
            workers,
        })
    }
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

/// Checks the coordinator's final view against the workers' reports: `finished` and `dead`
/// as given, the transfer count and every balance exact; then that the bank in the segment, as
/// the grader reads it, holds the same count and balances. `extra` is the work of a worker
/// killed before it could report.
fn verify(
    session: &Session,
    outcome: &Outcome,
    extra: Option<(u64, &[i64])>,
    dead: u32,
) -> Result<u64, Fail> {
    let workers = session.workers.len();
    let done = &outcome.done;
    let finished: u32 = field(done, "finished")?;
    let seen_dead: u32 = field(done, "dead")?;
    let transfers: u64 = field(done, "transfers")?;
    let balances: Vec<i64> = list(done, "balances")?;
    let want_finished = workers as u32 - dead;
    if finished < want_finished {
        return Err(Fail::failed(format!(
            "the coordinator's wait ended when only {finished} of {want_finished} workers had \
             finished: a wake-up does not mean the condition holds; re-check \
             finished + dead == workers in a while loop around pthread_cond_wait()"
        )));
    }
    if finished != want_finished || seen_dead != dead {
        return Err(Fail::failed(format!(
            "the coordinator saw {finished} finished and {seen_dead} dead workers, not \
             {want_finished} and {dead}"
        )));
    }
    let mut want = vec![session.segment.layout.opening; balances.len()];
    let mut want_transfers = 0;
    let reported = outcome
        .workers
        .values()
        .map(|w| (w.transfers, w.delta.as_slice()))
        .chain(extra);
    for (count, delta) in reported {
        want_transfers += count;
        for (balance, change) in want.iter_mut().zip(delta) {
            *balance += change;
        }
    }
    let wrong: Vec<String> = balances
        .iter()
        .zip(&want)
        .enumerate()
        .filter(|(_, (got, want))| got != want)
        .map(|(account, (got, want))| format!("account {account} is off by {}", got - want))
        .collect();
    let total: i64 = balances.iter().sum::<i64>() - want.iter().sum::<i64>();
    if transfers != want_transfers || !wrong.is_empty() {
        return Err(Fail::failed(format!(
            "lost updates: the bank counts {transfers} transfers for {want_transfers} done, {} \
             ({} money {}): transfers overlapped; hold the lock from a transfer's first read \
             to its last write, in every process",
            if wrong.is_empty() {
                "the balances are right".to_string()
            } else {
                wrong.join(", ")
            },
            total.abs(),
            if total >= 0 { "created" } else { "destroyed" }
        )));
    }
    let (in_segment, accounts) = session.segment.bank()?;
    if in_segment != transfers || accounts != balances {
        return Err(Fail::failed(format!(
            "the totals the coordinator reported are not the segment's: it reported {transfers} \
             transfers and balances {balances:?}, but the bank in {} holds {in_segment} \
             transfers and balances {accounts:?}; the accounts and the count live in the \
             segment (Bank::accounts, Bank::transfers): every transfer changes them there, and \
             wait_all_done() reports them from there",
            dev_shm(&session.name).display()
        )));
    }
    Ok(transfers)
}

fn process_shared_init(run: &mut Run) -> Result<String, Fail> {
    let mut session = Session::start(run, &[1000; 4], &[])?;
    // A mutex never initialized in the segment is all zero, like one initialized with default
    // attributes: both have kind 0.
    let kind = session.segment.mutex_kind()?;
    if kind & KIND_PSHARED == 0 {
        let cause = if kind == 0 {
            "either it was never initialized in the segment (initialize the mutex at \
             &raw mut bank.lock, not one in the process's own memory) or it was initialized \
             without PTHREAD_PROCESS_SHARED"
        } else {
            "it was initialized without PTHREAD_PROCESS_SHARED"
        };
        return Err(Fail::failed(format!(
            "the mutex in the segment is not process-shared (its kind word is {kind}): {cause}; \
             set it with pthread_mutexattr_setpshared() before pthread_mutex_init(), or an \
             unlock wakes only waiters in its own process"
        )));
    }
    let wrefs = session.segment.cond_wrefs()?;
    if wrefs & 1 == 0 {
        return Err(Fail::failed(
            "the condition variable in the segment is not process-shared: initialize it in the \
             segment with a pthread_condattr_setpshared(PTHREAD_PROCESS_SHARED) attribute",
        ));
    }
    session.go()?;
    let outcome = session.finish(|_| Ok(()))?;
    verify(&session, &outcome, None, 0)?;
    Ok(format!(
        "mutex kind {kind} (process-shared{}), condition variable process-shared, both in {}",
        if kind & KIND_ROBUST != 0 { ", robust" } else { "" },
        dev_shm(&session.name).display()
    ))
}

fn exact_totals(run: &mut Run) -> Result<String, Fail> {
    let mut times = Vec::new();
    for round in 1..=3 {
        let mut session = Session::start(run, &[WORK; 4], &[])?;
        let started = Instant::now();
        session.go()?;
        let outcome = session.finish(|_| Ok(()))?;
        times.push(started.elapsed().as_millis());
        verify(&session, &outcome, None, 0)
            .map_err(|fail| match fail {
                Fail::Failed(m) => Fail::failed(format!("run {round} of 3: {m}")),
                other => other,
            })?;
    }
    Ok(format!(
        "3 runs of 4 workers x {WORK} transfers: count and every balance exact ({times:?} ms)"
    ))
}

fn coordinator_sleeps(run: &mut Run) -> Result<String, Fail> {
    let mut session = Session::start(run, &[20_000; 4], &[])?;
    // The workers wait for `go`; the coordinator should be asleep in its wait by now.
    let call = wait_asleep(session.coordinator);
    let before = inspect::view(session.coordinator).map(|v| v.cpu_ticks);
    let window = Duration::from_secs(1);
    std::thread::sleep(window);
    let after = inspect::view(session.coordinator).map(|v| v.cpu_ticks);
    let (Some(before), Some(after)) = (before, after) else {
        return Err(Fail::failed(
            "the coordinator exited before the workers started: it must wait for them",
        ));
    };
    let share = (after - before) as f64 / procfs::ticks_per_second() as f64 / window.as_secs_f64();
    if share > 0.15 {
        return Err(Fail::failed(format!(
            "the coordinator used {:.0}% of a CPU in 1 s while no worker had started: it spins \
             on the bank instead of sleeping; wait with pthread_cond_wait() on all_done",
            share * 100.0
        )));
    }
    session.go()?;
    let outcome = session.finish(|_| Ok(()))?;
    verify(&session, &outcome, None, 0)?;
    Ok(format!(
        "the coordinator used {:.0}% of a CPU while it waited ({})",
        share * 100.0,
        match call {
            Some(nr) if nr == libc::SYS_futex => "asleep on a futex".to_string(),
            Some(nr) => format!("asleep in system call {nr}"),
            None => "never seen asleep".to_string(),
        }
    ))
}

fn waits_for_last_worker(run: &mut Run) -> Result<String, Fail> {
    // Workers with 1, 2, 3 and 4 times as much work finish one after another; each finish wakes
    // the coordinator, which must go back to sleep until the last one.
    let work = [WORK / 4, WORK / 2, 3 * WORK / 4, WORK];
    let mut session = Session::start(run, &work, &[])?;
    let call = wait_asleep(session.coordinator);
    if call != Some(libc::SYS_futex) {
        run.note(format!("the coordinator was not seen waiting on a futex: {call:?}"));
    }
    session.go()?;
    let outcome = session.finish(|_| Ok(()))?;
    let transfers = verify(&session, &outcome, None, 0)?;
    Ok(format!(
        "the coordinator returned after all 4 workers finished ({transfers} transfers)"
    ))
}

fn owner_dies(run: &mut Run) -> Result<String, Fail> {
    let crasher = run.rng().random_range(0..4usize);
    let after = run.rng().random_range(100..5000u64);
    let extra = [
        "--crash-worker".to_string(),
        crasher.to_string(),
        "--crash-after".into(),
        after.to_string(),
    ];
    // The other workers start only once the crasher holds the lock (the program sees to it), so
    // someone is always left to find it dead.
    let mut session = Session::start(run, &[20_000; 4], &extra)?;
    let kind = session.segment.mutex_kind()?;
    if kind & KIND_ROBUST == 0 {
        return Err(Fail::failed(format!(
            "the mutex is not robust (kind word {kind}): set PTHREAD_MUTEX_ROBUST with \
             pthread_mutexattr_setrobust(), or a worker that dies holding it blocks all the \
             others for ever"
        )));
    }
    let victim = session.workers[crasher];
    let segment = session.segment.try_clone()?;
    session.go()?;
    let mut held: Option<(u64, Vec<i64>)> = None;
    let outcome = session.finish(|message| {
        // The crasher stopped with the lock held: kill it there.
        if index_of(message)? != crasher {
            return Err(Fail::Grader("an unexpected worker stopped mid-transfer".into()));
        }
        held = Some((field(message, "transfers")?, list(message, "delta")?));
        // Held according to the mutex itself, not only to the program.
        let owner = segment.mutex_owner()?;
        if owner != victim {
            return Err(Fail::failed(format!(
                "worker {crasher} (pid {victim}) is in the middle of a transfer (in midway()) \
                 but does not hold the mutex in the segment ({}): lock the bank's mutex \
                 (SharedBank::lock) before a transfer's first read and keep it until its last \
                 write",
                if owner == 0 {
                    "nobody holds it".to_string()
                } else {
                    format!("its holder is thread {owner}")
                }
            )));
        }
        kill(Pid::from_raw(victim), Signal::SIGKILL)
            .map_err(|e| Fail::Grader(format!("kill: {e}")))
    })?;
    let Some((transfers, delta)) = held else {
        return Err(Fail::failed(format!(
            "worker {crasher} never reached the middle of its transfer {after}: call midway() \
             between debit and credit, with the lock held"
        )));
    };
    verify(&session, &outcome, Some((transfers, &delta)), 1).map_err(|fail| match fail {
        Fail::Failed(m) if m.starts_with("lost updates") => Fail::failed(format!(
            "after worker {crasher} was killed mid-transfer, {m}. On EOWNERDEAD, undo the \
             journaled transfer: put back both balances and the count the journal saved"
        )),
        other => other,
    })?;
    let recovered: u64 = outcome.workers.values().map(|w| w.recovered).sum();
    let ends = outcome.closed.get("workers").unwrap_or("").to_string();
    if !ends.contains("killed-SIGKILL") {
        run.note(format!("the workers ended: {ends}"));
    }
    Ok(format!(
        "worker {crasher} (pid {victim}) was killed holding the lock after {transfers} \
         transfers; {} recovered, the half-done transfer was undone and the totals add up",
        if recovered > 0 { "a worker" } else { "the coordinator" }
    ))
}

/// Starts the program on a bad segment name: the coordinator must refuse it with
/// `kind=bad-name` before it creates anything.
fn refuses_name(run: &mut Run, name: &str) -> Result<(), Fail> {
    let mut proc = run.spawn(&["--name", name, "--work", "1"])?;
    let message = proc.recv_any()?;
    let kind = message.get("kind").unwrap_or("none");
    match message.kind.as_str() {
        "failed" if kind == "bad-name" => {}
        "failed" => {
            return Err(Fail::failed(format!(
                "SharedBank::create({name:?}) failed with kind={kind} ({}), not bad-name: check \
                 the name first (a '/' followed by at least one character, no other '/') and \
                 return BankError::BadName",
                message.get("error").unwrap_or("")
            )));
        }
        _ => {
            return Err(Fail::failed(format!(
                "SharedBank::create accepted the name {name:?}: a segment's name is a '/' \
                 followed by at least one character and no other '/'; return \
                 BankError::BadName for any other"
            )));
        }
    }
    proc.wait()?;
    Ok(())
}

fn typed_errors(run: &mut Run) -> Result<String, Fail> {
    // Built on a name the grader handed out, so that a segment created despite a bad name is
    // audited and removed.
    let good = run.ipc_name("bank");
    let bad_names = [
        good.trim_start_matches('/').to_string(),
        "/".to_string(),
        format!("{good}/{}", run.rng().random_range(0..1000u32)),
    ];
    for name in &bad_names {
        refuses_name(run, name)?;
    }
    let mut account = || run.rng().random_range(0..ACCOUNTS);
    let same = account();
    let bad_transfers = [
        (ACCOUNTS + account(), account()),
        (account(), ACCOUNTS + account()),
        (same, same),
    ];
    let pairs: Vec<String> = bad_transfers
        .iter()
        .flat_map(|(from, to)| [from.to_string(), to.to_string()])
        .collect();
    let extra = ["--try-transfers".to_string(), pairs.join(",")];
    let mut session = Session::start(run, &[1000; 2], &extra).map_err(|fail| match fail {
        Fail::Crashed(m) => Fail::Crashed(format!(
            "a transfer between accounts that do not exist crashed the coordinator ({m}): \
             check that from and to are below ACCOUNTS and differ before touching the \
             accounts, and return BankError::BadAccounts"
        )),
        other => other,
    })?;
    if session.tried.len() != bad_transfers.len() {
        return Err(Fail::Grader(format!(
            "the coordinator reported {} tried transfers for {}",
            session.tried.len(),
            bad_transfers.len()
        )));
    }
    for (&(from, to), result) in bad_transfers.iter().zip(&session.tried) {
        if result != "bad-accounts" {
            return Err(Fail::failed(format!(
                "a transfer from account {from} to account {to} {}: the accounts must exist \
                 (below {ACCOUNTS}) and differ; return BankError::BadAccounts before taking \
                 the lock",
                if result == "ok" {
                    "went through".to_string()
                } else {
                    format!("failed with kind={result}, not bad-accounts")
                }
            )));
        }
    }
    session.go()?;
    let outcome = session.finish(|_| Ok(()))?;
    verify(&session, &outcome, None, 0)?;
    Ok(format!(
        "names {bad_names:?} refused with kind=bad-name; transfers {bad_transfers:?} refused \
         with kind=bad-accounts, the bank unchanged"
    ))
}

fn destroyed_and_removed(run: &mut Run) -> Result<String, Fail> {
    let mut session = Session::start(run, &[1000; 4], &[])?;
    session.go()?;
    let outcome = session.finish(|_| Ok(()))?;
    verify(&session, &outcome, None, 0)?;
    if dev_shm(&session.name).exists() {
        return Err(Fail::failed(format!(
            "{} is still there after the coordinator exited: remove the segment's name with \
             shm_unlink()",
            dev_shm(&session.name).display()
        )));
    }
    let wrefs = session.segment.cond_wrefs()?;
    if wrefs & 4 == 0 {
        return Err(Fail::failed(
            "the condition variable was not destroyed: call pthread_cond_destroy() once the \
             workers are gone",
        ));
    }
    let kind = session.segment.mutex_kind()?;
    if kind != -1 {
        return Err(Fail::failed(
            "the mutex was not destroyed: call pthread_mutex_destroy() once the workers are gone",
        ));
    }
    Ok("condition variable and mutex destroyed, segment unlinked".into())
}

fn blocked_on_futex(activities: &[Activity]) -> bool {
    activities.contains(&Activity::Futex)
}

fn explain_hang(hang: &Hang) -> Option<String> {
    let coordinator = hang.by_role(COORDINATOR);
    let workers: Vec<_> = hang.processes.iter().filter(|p| p.role == WORKER).collect();
    if let Some(coordinator) = coordinator
        && workers.is_empty()
        && blocked_on_futex(&coordinator.activities)
    {
        return Some(
            "the coordinator still waits on the condition variable though no worker is left: \
             after finished += 1 a worker must pthread_cond_broadcast() all_done, and whoever \
             recovers from a dead holder must count it in `dead` and broadcast too"
                .into(),
        );
    }
    let waits_for_crasher = |w: &&Stuck| {
        w.activities
            .iter()
            .any(|a| matches!(a, Activity::PipeRead { .. }))
    };
    if workers.iter().any(waits_for_crasher) {
        return Some(
            "the other workers wait for the worker that should stop in the middle of a \
             transfer: call midway() between the debit and the credit, with the lock held"
                .into(),
        );
    }
    if !workers.is_empty() && workers.iter().all(|w| blocked_on_futex(&w.activities)) {
        return Some(
            "every worker is asleep on the mutex and nobody wakes it: the mutex is not robust \
             and its holder died, or it lacks PTHREAD_PROCESS_SHARED (then an unlock wakes only \
             waiters in the unlocking process)"
                .into(),
        );
    }
    None
}
