//! The protocol driver: one run of the program from the `ready`s to `closed`, the bank's segment
//! as the grader reads it, and the verdict on the totals.

use std::collections::{BTreeMap, VecDeque};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ipc_labs_driver::Message;
use rand::RngExt;

use super::probe::{self, Place, Sleep};
use super::sleeping::AsleepOnCond;
use super::snapshot::FinalUnlock;
use super::{ACCOUNTS, COORDINATOR, WORKER};
use crate::engine::inspect::{self, IoCounters, ProcessView};
use crate::engine::{Fail, Proc, Run, force};

/// How long a run may go without any change in the bank, every process asleep, before the
/// grader says why (a correct run changes it thousands of times a second).
const STALL: Duration = Duration::from_secs(2);
/// How long the coordinator gets to say `done` once the bank counts every worker, before the
/// grader looks at why it did not: it needs one wake-up and one lock.
const DONE_GRACE: Duration = Duration::from_secs(3);

/// Where the program says the pieces of the bank lie.
#[derive(Clone, Copy)]
pub(super) struct Layout {
    pub mutex_at: usize,
    pub cond_at: usize,
    /// `workers`, `finished`, `dead`: three `u32`s, then the rest of the bank.
    pub counts_at: usize,
    pub transfers_at: usize,
    pub journal_at: usize,
    pub accounts_at: usize,
    pub size: usize,
    pub opening: i64,
}

/// The journal as it lies in the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Journal {
    pub active: u32,
    pub from: u32,
    pub to: u32,
    pub from_balance: i64,
    pub to_balance: i64,
    pub transfers: u64,
}

/// `workers`, `finished` and `dead` as they are in the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Counts {
    pub workers: u32,
    pub finished: u32,
    pub dead: u32,
}

/// The bank's segment as the grader sees it: opened at `ready`, it outlives the unlink; mapped,
/// so that the grader can take the bank's mutex like any process.
pub(super) struct Segment {
    file: std::fs::File,
    pub layout: Layout,
    pub map: Option<probe::Mapping>,
}

/// One run of the program, from the `ready`s to `closed`.
pub(super) struct Session {
    pub proc: Proc,
    pub name: String,
    pub coordinator: i32,
    /// Worker pids, by index.
    pub workers: Vec<i32>,
    pub segment: Segment,
    /// How each of the `--try-transfers` ended, as the coordinator reported: `ok` or a kind.
    pub tried: Vec<String>,
    /// Messages received while the check watched something else.
    pending: VecDeque<Message>,
    /// The coordinator's I/O counters once every process was ready.
    io_at_ready: Option<IoCounters>,
    /// When the check's time is up.
    deadline: Instant,
    /// Whether each finish but the last is followed by [`let_coordinator_look`].
    pub settle_finishes: bool,
    /// The coordinator last seen asleep on the condition variable: the next finish counted
    /// after that must wake it.
    pub asleep: Option<AsleepOnCond>,
    /// Whether one worker is held back until the others are done, so that its finish comes
    /// after [`FinalUnlock`] is armed.
    pub watch_final_unlock: bool,
    held_back: Option<i32>,
    final_unlock: Option<FinalUnlock>,
}

/// What one worker reported.
pub(super) struct WorkerReport {
    pub transfers: u64,
    pub delta: Vec<i64>,
    pub recovered: u64,
}

/// What the run reported, to its end.
pub(super) struct Outcome {
    pub done: Message,
    pub closed: Message,
    pub workers: BTreeMap<usize, WorkerReport>,
    /// What the coordinator and its reaped workers read and wrote through system calls between
    /// `ready` and `closed`.
    pub io: Option<IoCounters>,
    /// What the coordinator still held of the segment after its teardown: mappings and
    /// descriptors.
    pub kept: (usize, Vec<i32>),
}

pub(super) fn dev_shm(name: &str) -> PathBuf {
    PathBuf::from("/dev/shm").join(name.trim_start_matches('/'))
}

pub(super) fn field<T: std::str::FromStr>(message: &Message, key: &str) -> Result<T, Fail> {
    message
        .get(key)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Fail::Grader(format!("`{}` without a valid `{key}`", message.kind)))
}

pub(super) fn list<T: std::str::FromStr>(message: &Message, key: &str) -> Result<Vec<T>, Fail> {
    let text = message.get(key).unwrap_or("");
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().ok())
        .collect::<Option<Vec<T>>>()
        .ok_or_else(|| Fail::Grader(format!("`{}` with a bad list `{key}`", message.kind)))
}

pub(super) fn index_of(message: &Message) -> Result<usize, Fail> {
    field(message, "index")
}

/// A `failed` report, in the student's terms.
pub(super) fn failure(message: &Message) -> Fail {
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
        "bad-name" => {
            "the grader's name is valid ('/', more characters, none of them '/'): refuse only \
             names that break that rule"
        }
        "exists" => "no segment had the grader's name: shm_open(O_CREAT | O_EXCL) succeeds on it",
        "mmap" | "ftruncate" if error.contains("EACCES") || error.contains("EINVAL") => {
            "open the segment for reading and writing (O_RDWR) to size it and map it shared \
             with PROT_READ | PROT_WRITE"
        }
        _ => "see the error",
    };
    Fail::failed(format!(
        "pid {who} failed with kind={kind} ({error}): {hint}"
    ))
}

/// The coordinator said `done` before the workers were even released: what its snapshot shows.
fn early_done(message: &Message, workers: usize) -> Fail {
    let count = |key| message.get(key).unwrap_or("?").to_string();
    let seen = format!(
        "the coordinator's wait ended before any worker had started (its snapshot: workers = \
         {}, finished = {}, dead = {})",
        count("workers"),
        count("finished"),
        count("dead")
    );
    if message.get("workers") != Some(workers.to_string().as_str()) {
        Fail::failed(format!(
            "{seen}: create() sets Bank::workers to the number of workers it is given \
             ({workers} here), and wait_all_done() waits until finished + dead reaches it"
        ))
    } else {
        Fail::failed(format!(
            "{seen}: wait_all_done() sleeps on all_done while finished + dead < workers"
        ))
    }
}

/// The roles of a run's processes, for diagnoses.
pub(super) fn role_of(coordinator: i32) -> impl Fn(&ProcessView) -> String + Send + Sync + 'static {
    move |view: &ProcessView| {
        if view.pid == coordinator {
            COORDINATOR.into()
        } else if view.ppid == coordinator {
            WORKER.into()
        } else {
            "another process".into()
        }
    }
}

/// Where the coordinator says the pieces of the bank lie.
pub(super) fn layout_of(message: &Message) -> Result<Layout, Fail> {
    Ok(Layout {
        mutex_at: field(message, "mutex_at")?,
        cond_at: field(message, "cond_at")?,
        counts_at: field(message, "counts_at")?,
        transfers_at: field(message, "transfers_at")?,
        journal_at: field(message, "journal_at")?,
        accounts_at: field(message, "accounts_at")?,
        size: field(message, "size")?,
        opening: field(message, "opening")?,
    })
}

/// Opens (and maps, if it can) the segment the coordinator says holds the bank.
pub(super) fn open_segment(name: &str, layout: Layout) -> Result<Segment, Fail> {
    let path = dev_shm(name);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .or_else(|_| std::fs::File::open(&path))
        .map_err(|_| {
            Fail::failed(format!(
                "{} does not exist while the coordinator says the bank is ready: create the \
                 segment with shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600)",
                path.display()
            ))
        })?;
    let mut segment = Segment {
        file,
        layout,
        map: None,
    };
    segment.map = probe::Mapping::of(&segment);
    Ok(segment)
}

impl Segment {
    /// Another handle on the segment, not mapped: for reading.
    pub fn reader(&self) -> Result<Segment, Fail> {
        Ok(Segment {
            file: self.file.try_clone()?,
            layout: self.layout,
            map: None,
        })
    }

    /// Another handle on the segment, mapped like this one.
    pub fn handle(&self) -> Result<Segment, Fail> {
        let mut segment = self.reader()?;
        segment.map = probe::Mapping::of(&segment);
        Ok(segment)
    }

    /// The open segment.
    pub fn file(&self) -> &std::fs::File {
        &self.file
    }

    /// Reads `N` bytes of the segment at `offset`.
    pub fn read<const N: usize>(&self, offset: usize) -> Result<[u8; N], Fail> {
        let mut bytes = [0u8; N];
        self.file
            .read_exact_at(&mut bytes, offset as u64)
            .map_err(|_| {
                Fail::failed(format!(
                    "the segment is smaller than the bank ({} bytes): ftruncate() it to \
                 size_of::<Bank>()",
                    self.layout.size
                ))
            })?;
        Ok(bytes)
    }

    fn u32_at(&self, offset: usize) -> Result<u32, Fail> {
        Ok(u32::from_ne_bytes(self.read(offset)?))
    }

    fn i64_at(&self, offset: usize) -> Result<i64, Fail> {
        Ok(i64::from_ne_bytes(self.read(offset)?))
    }

    /// The mutex's kind word.
    pub fn mutex_kind(&self) -> Result<i32, Fail> {
        Ok(i32::from_ne_bytes(
            self.read(self.layout.mutex_at + probe::MUTEX_KIND_AT)?,
        ))
    }

    /// The thread id of the mutex's holder, 0 if nobody holds it.
    pub fn mutex_owner(&self) -> Result<i32, Fail> {
        Ok(i32::from_ne_bytes(
            self.read(self.layout.mutex_at + probe::MUTEX_OWNER_AT)?,
        ))
    }

    /// Sets the mutex's lock word to 1, as a process holding it would: only for a mutex that
    /// glibc treats as a plain one (kind 0), which then makes every locker sleep on it.
    pub fn mark_mutex_taken(&self) -> Result<(), Fail> {
        self.file
            .write_all_at(&1u32.to_ne_bytes(), self.layout.mutex_at as u64)
            .map_err(|e| Fail::Grader(format!("writing the segment: {e}")))
    }

    /// Writes `bytes` into the segment at `offset`, as a process holding the lock would.
    pub fn write_at(&self, offset: usize, bytes: &[u8]) -> Result<(), Fail> {
        self.file
            .write_all_at(bytes, offset as u64)
            .map_err(|e| Fail::Grader(format!("writing the segment: {e}")))
    }

    /// The condition variable's `__wrefs` word.
    pub fn cond_wrefs(&self) -> Result<u32, Fail> {
        self.u32_at(self.layout.cond_at + probe::COND_WREFS_AT)
    }

    pub fn counts(&self) -> Result<Counts, Fail> {
        let at = self.layout.counts_at;
        Ok(Counts {
            workers: self.u32_at(at)?,
            finished: self.u32_at(at + 4)?,
            dead: self.u32_at(at + 8)?,
        })
    }

    pub fn journal(&self) -> Result<Journal, Fail> {
        let at = self.layout.journal_at;
        Ok(Journal {
            active: self.u32_at(at)?,
            from: self.u32_at(at + 4)?,
            to: self.u32_at(at + 8)?,
            from_balance: self.i64_at(at + 16)?,
            to_balance: self.i64_at(at + 24)?,
            transfers: u64::from_ne_bytes(self.read(at + 32)?),
        })
    }

    /// The transfer count and the balances, as they are in the segment.
    pub fn bank(&self) -> Result<(u64, Vec<i64>), Fail> {
        let transfers = u64::from_ne_bytes(self.read(self.layout.transfers_at)?);
        let accounts = (0..ACCOUNTS)
            .map(|i| self.i64_at(self.layout.accounts_at + 8 * i))
            .collect::<Result<_, Fail>>()?;
        Ok((transfers, accounts))
    }

    /// Everything in the bank but the mutex and the condition variable: what only the mutex's
    /// holder may change.
    pub fn guarded_bytes(&self) -> Result<Vec<u8>, Fail> {
        let start = self.layout.counts_at;
        let mut bytes = vec![0u8; self.layout.size.saturating_sub(start)];
        self.file
            .read_exact_at(&mut bytes, start as u64)
            .map_err(|e| Fail::Grader(format!("reading the segment: {e}")))?;
        Ok(bytes)
    }

    /// Whether the segment is still at least one bank long (a mapping past its end faults).
    pub fn full_size(&self) -> bool {
        self.file
            .metadata()
            .is_ok_and(|m| m.len() >= self.layout.size as u64)
    }
}

impl Session {
    /// Starts the program and collects the coordinator's and every worker's `ready`.
    pub fn start(run: &mut Run, work: &[u64], extra: &[String]) -> Result<Session, Fail> {
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
        proc.set_roles(role_of(coordinator));
        let mut workers = vec![0; work.len()];
        let mut layout = None;
        let mut tried = Vec::new();
        while layout.is_none() || workers.contains(&0) {
            let message = proc.recv_any()?;
            match (message.kind.as_str(), message.get("role")) {
                ("ready", Some("coordinator")) => {
                    layout = Some(layout_of(&message)?);
                    tried = message
                        .get("tried")
                        .unwrap_or("")
                        .split(',')
                        .filter(|s| !s.is_empty())
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
                ("done", _) => return Err(early_done(&message, work.len())),
                (kind, _) => {
                    return Err(Fail::failed(format!(
                        "the program said `{kind}` before every process was ready"
                    )));
                }
            }
        }
        let segment = open_segment(&name, layout.expect("loop ends with a layout"))?;
        Ok(Session {
            proc,
            name,
            coordinator,
            workers,
            segment,
            tried,
            pending: VecDeque::new(),
            io_at_ready: inspect::io(coordinator),
            deadline: run.deadline(),
            settle_finishes: false,
            asleep: None,
            watch_final_unlock: false,
            held_back: None,
            final_unlock: None,
        })
    }

    /// Waits (up to 1 s) until the coordinator sleeps in a system call, preferably on a futex:
    /// a check that releases the workers wants it in its wait already, so that every wake-up it
    /// needs must come from the workers. Returns where it was seen last.
    pub fn coordinator_settled(&self) -> Sleep {
        let until = Instant::now() + Duration::from_secs(1);
        let mut last = Sleep::Awake;
        while Instant::now() < until {
            last = probe::sleeping(self.coordinator);
            if matches!(last, Sleep::Futex { .. }) {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        last
    }

    /// Where the coordinator's futex lies, if it sleeps on one.
    pub fn coordinator_place(&self) -> Option<Place> {
        match probe::sleeping(self.coordinator) {
            Sleep::Futex { address } => Some(probe::place(
                self.coordinator,
                &self.name,
                &self.segment.layout,
                address,
            )),
            _ => None,
        }
    }

    /// Releases the workers all at once (one `go` each), once the coordinator waits.
    pub fn go(&mut self) -> Result<(), Fail> {
        self.coordinator_settled();
        for _ in &self.workers {
            self.proc.send("go", &[])?;
        }
        Ok(())
    }

    /// The next message, those set aside first. While none comes, the grader watches the
    /// bank: a run in which nothing changes for [`STALL`] while every process sleeps is
    /// diagnosed from the mutex then and there.
    pub fn next(&mut self) -> Result<Message, Fail> {
        if let Some(message) = self.pending.pop_front() {
            return Ok(message);
        }
        let mut still = (Instant::now(), self.segment.guarded_bytes().ok());
        loop {
            if Instant::now() >= self.deadline {
                return self.proc.recv_any();
            }
            let look = (Instant::now() + Duration::from_millis(250)).min(self.deadline);
            if let Some(message) = self.proc.recv_before(look)? {
                return Ok(message);
            }
            let bytes = self.segment.guarded_bytes().ok();
            if bytes != still.1 {
                still = (Instant::now(), bytes);
            } else if still.0.elapsed() >= STALL
                && let Some(fail) = self.stalled()
            {
                return Err(fail);
            }
        }
    }

    /// Why nothing moves, when every process of the run sleeps: from who holds the mutex and
    /// where each process sleeps. `None` when something still runs, or nothing can be said.
    fn stalled(&self) -> Option<Fail> {
        let pids: Vec<i32> = std::iter::once(self.coordinator)
            .chain(self.workers.iter().copied())
            .filter(|&pid| inspect::view(pid).is_some_and(|v| v.state != 'Z'))
            .collect();
        let sleeps: Vec<(i32, Sleep)> = pids.iter().map(|&p| (p, probe::sleeping(p))).collect();
        if sleeps.iter().any(|(_, s)| *s == Sleep::Awake) {
            return None;
        }
        let place = |pid: i32, sleep: Sleep| match sleep {
            Sleep::Futex { address } => {
                Some(probe::place(pid, &self.name, &self.segment.layout, address))
            }
            _ => None,
        };
        let who = |pid: i32| {
            let role = role_of(self.coordinator);
            inspect::view(pid).map_or(format!("thread {pid}"), |v| {
                format!("{} (pid {pid})", role(&v))
            })
        };
        let on_mutex = sleeps
            .iter()
            .filter(|(p, s)| place(*p, *s) == Some(Place::Mutex))
            .count();
        let seen = format!(
            "the run stalled: for {} s nothing changed in the bank and every process slept",
            STALL.as_secs()
        );
        let owner = self.segment.mutex_owner().ok()?;
        let kind = self.segment.mutex_kind().ok()?;
        if owner != 0 {
            let holder = who(owner);
            let cause = if inspect::view(owner).is_none_or(|v| v.state == 'Z') {
                if kind & probe::KIND_ROBUST == 0 {
                    format!(
                        "the bank's mutex is still held by thread {owner}, which is gone: the \
                         mutex is not robust, so its holder's death leaves it locked for ever"
                    )
                } else {
                    format!("the bank's mutex is still held by thread {owner}, which is gone")
                }
            } else {
                match place(owner, probe::sleeping(owner)) {
                    Some(Place::Mutex) => format!(
                        "{holder} holds the bank's mutex and sleeps waiting for it again: a lock \
                         that is never released; the Guard unlocks when it is dropped, and \
                         nothing locks the bank twice"
                    ),
                    Some(Place::Cond) => format!(
                        "{holder} sleeps on the condition variable holding the bank's mutex: \
                         pthread_cond_wait() must be given the bank's mutex, which it releases \
                         while it waits"
                    ),
                    _ => format!(
                        "{holder} holds the bank's mutex while it {}: release the lock before \
                         anything that blocks",
                        probe::sleeping(owner).describe()
                    ),
                }
            };
            return Some(Fail::failed(format!(
                "{seen}: {cause} ({on_mutex} sleep on the mutex)"
            )));
        }
        if on_mutex > 0 {
            let cause = if kind & probe::KIND_PSHARED == 0 {
                "the mutex lacks PTHREAD_PROCESS_SHARED: an unlock wakes only waiters in the \
                 unlocking process"
            } else {
                "its unlocks did not wake them"
            };
            return Some(Fail::failed(format!(
                "{seen}: the bank's mutex is free, yet {on_mutex} processes sleep on it and \
                 nobody wakes them: {cause}"
            )));
        }
        None
    }

    /// The next message if one comes before `until` (set-aside ones first).
    pub fn next_before(&mut self, until: Instant) -> Result<Option<Message>, Fail> {
        match self.pending.pop_front() {
            Some(message) => Ok(Some(message)),
            None => self.proc.recv_before(until),
        }
    }

    /// Keeps a message for [`Session::finish`].
    pub fn set_aside(&mut self, message: Message) {
        self.pending.push_back(message);
    }

    /// Collects the reports up to `closed`, then waits for the exit. `dead` workers are
    /// expected to be killed; `on_holding` is called when a worker stops mid-transfer. Once the
    /// bank should count every worker, a coordinator that does not say `done` is diagnosed from
    /// the segment instead of waiting for the timeout.
    pub fn finish(
        &mut self,
        dead: u32,
        mut on_holding: impl FnMut(&Message) -> Result<(), Fail>,
    ) -> Result<Outcome, Fail> {
        let mut done = None;
        let mut workers = BTreeMap::new();
        let finishing = self.workers.len() as u32 - dead;
        let closed = loop {
            let all_finished = workers.len() as u32 >= finishing;
            let message = if all_finished && done.is_none() {
                match self.next_before(Instant::now() + DONE_GRACE)? {
                    Some(message) => message,
                    None => return Err(self.no_done(workers.len() as u32, dead)),
                }
            } else {
                self.next()?
            };
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
                    if let Some(asleep) = self.asleep {
                        let reported = workers.len() as u32;
                        if asleep.judge(&self.segment, self.coordinator, &self.name, reported)? {
                            self.asleep = None;
                        }
                    }
                    if workers.len() as u32 == finishing {
                        self.every_finish_counted(finishing)?;
                        if let Some(final_unlock) = self.final_unlock.take() {
                            final_unlock.judge(self)?;
                        }
                    } else if self.settle_finishes {
                        let others: Vec<i32> = (0..self.workers.len())
                            .filter(|i| !workers.contains_key(i))
                            .map(|i| self.workers[i])
                            .collect();
                        if self.watch_final_unlock && self.held_back.is_none() {
                            // The one with the most work: the least likely to be done already.
                            self.held_back = others.last().copied();
                        }
                        let held_back = self.held_back.filter(|w| others.contains(w));
                        let looked = let_coordinator_look(
                            &self.segment,
                            self.coordinator,
                            &self.name,
                            &others,
                            held_back,
                        )?;
                        self.asleep = looked.asleep;
                        self.final_unlock = looked.final_unlock;
                    }
                }
                "holding" => on_holding(&message)?,
                "done" => done = Some(message),
                "closed" => break message,
                "failed" => return Err(failure(&message)),
                kind => {
                    return Err(Fail::failed(format!(
                        "the program said an unexpected `{kind}`"
                    )));
                }
            }
        };
        let kept = (
            probe::mappings(self.coordinator, &self.name).len(),
            probe::descriptors(self.coordinator, &self.name),
        );
        let io = match (inspect::io(self.coordinator), self.io_at_ready) {
            (Some(now), Some(then)) => Some(now.since(then)),
            _ => None,
        };
        let done =
            done.ok_or_else(|| Fail::failed("the coordinator said `closed` without `done`"))?;
        self.proc.send("exit", &[])?;
        let status = self.proc.wait()?;
        if !status.success() {
            return Err(Fail::failed(format!(
                "the coordinator exited with {status}"
            )));
        }
        Ok(Outcome {
            done,
            closed,
            workers,
            io,
            kept,
        })
    }

    /// Once `reported` workers have returned from `finish()`, the bank must count them all: a
    /// finish counted outside the lock is lost when two meet.
    fn every_finish_counted(&self, reported: u32) -> Result<(), Fail> {
        let counts = self.segment.counts()?;
        if counts.finished < reported {
            return Err(Fail::failed(format!(
                "{reported} workers returned from finish(), but the bank in the segment counts \
                 finished = {}: increments of `finished` were lost, so it was read or written \
                 without the lock held; in finish(), take the lock, then finished += 1 (read \
                 and write), then broadcast",
                counts.finished
            )));
        }
        Ok(())
    }

    /// Why the coordinator did not say `done` though `finished` workers reported (and the
    /// others were killed), from the bank and from where the coordinator sleeps.
    fn no_done(&mut self, finished: u32, killed: u32) -> Fail {
        let counts = match self.segment.counts() {
            Ok(counts) => counts,
            Err(fail) => return fail,
        };
        let seen = format!(
            "{finished} workers returned from finish(){}; the bank counts finished = {}, dead = \
             {} of {} workers",
            if killed > 0 {
                format!(" and {killed} was killed mid-transfer")
            } else {
                String::new()
            },
            counts.finished,
            counts.dead,
            counts.workers
        );
        let secs = DONE_GRACE.as_secs();
        if counts.finished + counts.dead < counts.workers {
            let cause = if counts.dead < killed {
                "the killed worker was never counted: whoever gets EOWNERDEAD and finds the \
                 journal active must count it (dead += 1) in recover()"
            } else {
                "the counts do not reach the number of workers"
            };
            return Fail::failed(format!(
                "{seen}, so the coordinator still waits {secs} s later: {cause}"
            ));
        }
        let place = self.coordinator_place();
        if place == Some(Place::Cond) && probe::broadcast(&self.segment) {
            // Woken by the grader: does it see that the wait is over?
            let woken = match self.next_before(Instant::now() + Duration::from_secs(1)) {
                Ok(Some(message)) if message.kind == "failed" => return failure(&message),
                Ok(Some(message)) => message.kind == "done",
                _ => false,
            };
            return Fail::failed(if woken {
                format!(
                    "{seen}, yet {secs} s later the coordinator still slept on the condition \
                     variable; when the grader broadcast all_done itself, it returned at once: \
                     nobody woke it when the count became complete; finish() must \
                     pthread_cond_broadcast(all_done) every time it counts a worker (and \
                     recover() when it counts a dead one)"
                )
            } else {
                format!(
                    "{seen}, yet the coordinator sleeps on in wait_all_done(), even after the \
                     grader broadcast all_done itself: its loop must end once finished + dead \
                     == workers{}",
                    if counts.dead > 0 {
                        " (a worker found dead counts as much as a finished one)"
                    } else {
                        ""
                    }
                )
            });
        }
        let doing = match place {
            Some(Place::Cond) => "sleeps on the condition variable".to_string(),
            Some(other) => format!("sleeps on {}", other.describe()),
            None => probe::sleeping(self.coordinator).describe(),
        };
        let advice = if place == Some(Place::Cond) {
            "nobody woke it when the count became complete: finish() must \
             pthread_cond_broadcast(all_done) every time it counts a worker (and recover() when \
             it counts a dead one); the coordinator re-checks finished + dead == workers itself"
        } else {
            "wait_all_done() must sleep in pthread_cond_wait() on all_done and return once \
             finished + dead == workers"
        };
        Fail::failed(format!(
            "{seen}, yet {secs} s later the coordinator has not returned from wait_all_done(): \
             it {doing}; {advice}"
        ))
    }
}

/// The transfer count and the balances the workers' reports (and `extra`: a killed worker's
/// transfers, the coordinator's tried ones) predict.
pub(super) fn expected(
    session: &Session,
    outcome: &Outcome,
    extra: &[(u64, Vec<i64>)],
) -> (u64, Vec<i64>) {
    let mut want = vec![session.segment.layout.opening; ACCOUNTS];
    let mut want_transfers = 0;
    let reported = outcome
        .workers
        .values()
        .map(|w| (w.transfers, w.delta.as_slice()))
        .chain(
            extra
                .iter()
                .map(|(count, delta)| (*count, delta.as_slice())),
        );
    for (count, delta) in reported {
        want_transfers += count;
        for (balance, change) in want.iter_mut().zip(delta) {
            *balance += change;
        }
    }
    (want_transfers, want)
}

/// Makes the coordinator take in a wake-up before the `others` go on: with the bank's mutex
/// held by the grader, the others are stopped; the grader lets go and wakes whoever waits for
/// the mutex (glibc's own wake-up may go to a stopped worker); once the coordinator has looked
/// (it sleeps on the condition variable again, or has left its wait), the others go on.
/// Otherwise the coordinator, woken while workers hammer the mutex, may get it only once they
/// have all finished, and see the end without needing their broadcasts. A `held_back` worker
/// stays stopped until it is the only one left; then, once the coordinator sleeps on the
/// condition variable again, [`FinalUnlock`] is armed before it goes on.
pub(super) fn let_coordinator_look(
    segment: &Segment,
    coordinator: i32,
    name: &str,
    others: &[i32],
    held_back: Option<i32>,
) -> Result<Looked, Fail> {
    let arm_final_unlock = held_back.is_some() && others.len() == 1;
    let mut looked = Looked {
        asleep: None,
        final_unlock: None,
    };
    if !probe::can_hold(segment) {
        // Other checks judge that mutex; here the run just goes on.
        return Ok(looked);
    }
    let held = probe::hold(segment, Duration::from_secs(2))?;
    for &worker in others {
        let _ = force::hold(worker);
    }
    drop(held);
    probe::wake_mutex_waiters(segment);
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        let looking = match probe::sleeping(coordinator) {
            Sleep::Futex { address } => {
                probe::place(coordinator, name, &segment.layout, address) == Place::Mutex
            }
            Sleep::Call(_) => false,
            Sleep::Awake => true,
        };
        if !looking {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    looked.asleep = AsleepOnCond::observe(segment, coordinator, name);
    if arm_final_unlock {
        let settle_until = Instant::now() + Duration::from_secs(2);
        while looked.asleep.is_none() && Instant::now() < settle_until {
            std::thread::sleep(Duration::from_millis(1));
            looked.asleep = AsleepOnCond::observe(segment, coordinator, name);
        }
        let one_left = segment
            .counts()
            .is_ok_and(|c| c.finished + c.dead + 1 == c.workers);
        if looked.asleep.is_some() && one_left {
            looked.final_unlock = FinalUnlock::arm(segment, coordinator, name);
        }
    }
    for &worker in others {
        if arm_final_unlock || Some(worker) != held_back {
            let _ = force::resume(worker);
        }
    }
    Ok(looked)
}

/// What [`let_coordinator_look`] saw and armed.
pub(super) struct Looked {
    /// The coordinator asleep on the condition variable while the others were stopped.
    pub asleep: Option<AsleepOnCond>,
    pub final_unlock: Option<FinalUnlock>,
}

/// Checks the coordinator's final view against the workers' reports: `finished` and `dead`
/// as given, the transfer count and every balance exact; then that the bank in the segment, as
/// the grader reads it, holds the same count and balances, with no transfer under way. `extra`
/// is work done outside the workers' reports: a killed worker's transfers, the coordinator's
/// tried transfers.
pub(super) fn verify(
    session: &Session,
    outcome: &Outcome,
    extra: &[(u64, Vec<i64>)],
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
    let (want_transfers, want) = expected(session, outcome, extra);
    let wrong: Vec<String> = balances
        .iter()
        .zip(&want)
        .enumerate()
        .filter(|(_, (got, want))| got != want)
        .map(|(account, (got, want))| format!("account {account} is off by {}", got - want))
        .collect();
    let total: i64 = balances.iter().sum::<i64>() - want.iter().sum::<i64>();
    if transfers > want_transfers && wrong.is_empty() {
        return Err(Fail::failed(format!(
            "the bank counts {transfers} transfers for {want_transfers} done ({} too many), \
             the balances right: a transfer was counted twice, or one counted that the bank \
             refused or that never happened in this process; every transfer that goes through \
             adds one to Bank::transfers, in the segment, once",
            transfers - want_transfers
        )));
    }
    if transfers == want_transfers && total == 0 && !wrong.is_empty() {
        return Err(Fail::failed(format!(
            "the balances differ from the workers' records ({}), though every transfer was \
             counted and no money was created or destroyed: transfers overlapped (a balance \
             written back from a stale read: hold the lock from a transfer's first read to its \
             last write), or a transfer moves money other than `amount` from `from` to `to`",
            wrong.join(", ")
        )));
    }
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
    let journal = session.segment.journal()?;
    if journal.active != 0 {
        return Err(Fail::failed(format!(
            "every transfer is over, yet the journal in the segment is still active (a \
             transfer from account {} to account {}): a transfer clears it (active = 0) once it \
             is complete, and recover() once it has undone one",
            journal.from, journal.to
        )));
    }
    Ok(transfers)
}

/// The change one transfer of `amount` from `from` to `to` makes to the accounts.
pub(super) fn delta_of(from: usize, to: usize, amount: i64) -> Vec<i64> {
    let mut delta = vec![0; ACCOUNTS];
    delta[from] -= amount;
    delta[to] += amount;
    delta
}
