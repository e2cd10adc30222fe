//! The protocol driver: one run of the program from the `ready`s to `closed`, the roles of its
//! processes, and the pause in which the coordinator takes in a wake-up before the workers go on.

use std::collections::{BTreeMap, VecDeque};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use ipc_labs_driver::Message;
use rand::RngExt;

use super::messages::{early_done, failure, field, index_of, layout_of, list};
use super::probe::{self, Place, Sleep};
use super::segment::{Segment, open_segment};
use super::sleeping::AsleepOnCond;
use super::snapshot::FinalUnlock;
use super::{COORDINATOR, WORKER};
use crate::engine::inspect::{self, IoCounters, ProcessView};
use crate::engine::tracer::{Field, Tracer, Watched};
use crate::engine::{Fail, Proc, Run, force};

/// How long a run may go without any change in the bank, every process asleep, before the
/// grader says why (a correct run changes it thousands of times a second).
const STALL: Duration = Duration::from_secs(2);
/// How long the coordinator gets to say `done` once the bank counts every worker, before the
/// grader looks at why it did not: it needs one wake-up and one lock.
const DONE_GRACE: Duration = Duration::from_secs(3);

/// One run of the program, from the `ready`s to `closed`.
pub(super) struct Session {
    pub proc: Proc,
    pub name: String,
    pub coordinator: i32,
    /// Worker pids, by index.
    pub workers: Vec<i32>,
    pub segment: Segment,
    /// The `--seed` the workers' random transfers come from.
    pub seed: u64,
    /// How each of the `--try-transfers` ended, as the coordinator reported: `ok` or a kind.
    pub tried: Vec<String>,
    /// For each tried transfer, the accounts its `BadAccounts` named (`from>to`), `-` else.
    pub refused: Vec<String>,
    /// Messages received while the check watched something else.
    pending: VecDeque<Message>,
    /// The coordinator's I/O counters once every process was ready.
    pub io_at_ready: Option<IoCounters>,
    /// When the check's time is up.
    deadline: Instant,
    /// Whether each finish but the last is followed by [`let_coordinator_look`].
    pub settle_finishes: bool,
    /// The coordinator last seen asleep on the condition variable: the next finish counted
    /// after that must wake it.
    pub asleep: Option<AsleepOnCond>,
    /// Whether [`FinalUnlock`] is watched: the worker held back (see
    /// [`Session::hold_back_last_worker`]) finishes after it is armed.
    pub watch_final_unlock: bool,
    held_back: Option<i32>,
    /// Workers stopped before their `go` (see [`Session::take_turns`]), released one at a time,
    /// each once the finish before it has been looked at.
    turns: VecDeque<i32>,
    final_unlock: Option<FinalUnlock>,
    last_finish: Option<LastFinish>,
    /// Dead holders the grader counted in the bank itself: the coordinator's `dead` includes
    /// them.
    pub planted_dead: u32,
    /// Workers the grader added to `Bank::workers` (each counted dead at once, so the wait
    /// ends as before): the coordinator must report and wait for the bank's `workers`.
    pub planted_workers: u32,
    /// The grader's own waiters on the condition variable, beside the coordinator.
    waiters: Option<probe::CondWaiters>,
}

/// A finish that woke only `woken` of the grader's `count` waiters on the condition variable
/// (and the coordinator, if `coordinator_woke`).
fn signalled_one(reported: u32, woken: usize, count: usize, coordinator_woke: bool) -> Fail {
    Fail::failed(format!(
        "{count} threads of the grader waited on the condition variable all_done with the \
         bank's mutex beside the coordinator (as more processes would); then a finish was \
         counted ({reported} workers had returned from finish()), and it woke {}: finish() \
         wakes one waiter (pthread_cond_signal()) instead of every waiter; it must \
         pthread_cond_broadcast(all_done), since the coordinator is not the only one that may \
         wait on it",
        if coordinator_woke {
            "the coordinator but neither of them".to_string()
        } else {
            format!("only {woken} of them")
        }
    ))
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

impl Session {
    /// Starts the program and collects the coordinator's and every worker's `ready`.
    pub fn start(run: &mut Run, work: &[u64], extra: &[String]) -> Result<Session, Fail> {
        Session::start_with(
            run,
            work,
            extra,
            None::<fn(&mut Proc, &str) -> Result<(), Fail>>,
        )
        .map(|(session, ())| session)
    }

    /// As [`Session::start`]; with `stopped`, the program is started stopped before its first
    /// instruction and handed to it (with the bank's name) to attach what it needs: it must let
    /// the program go on.
    pub fn start_with<T: Default>(
        run: &mut Run,
        work: &[u64],
        extra: &[String],
        stopped: Option<impl FnOnce(&mut Proc, &str) -> Result<T, Fail>>,
    ) -> Result<(Session, T), Fail> {
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
        let (mut proc, prepared) = match stopped {
            Some(prepare) => {
                let mut proc = run.spawn_stopped(&args)?;
                let prepared = prepare(&mut proc, &name)?;
                (proc, prepared)
            }
            None => (run.spawn(&args)?, T::default()),
        };
        let coordinator = proc.pid.as_raw();
        proc.set_roles(role_of(coordinator));
        let mut workers = vec![0; work.len()];
        let mut layout = None;
        let mut tried = Vec::new();
        let mut refused = Vec::new();
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
                    refused = message
                        .get("refused")
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
        let segment = open_segment(&name, layout.expect("loop ends with a layout"), coordinator)?;
        let session = Session {
            proc,
            name,
            coordinator,
            workers,
            segment,
            seed: u64::from(seed),
            tried,
            refused,
            pending: VecDeque::new(),
            io_at_ready: inspect::io(coordinator),
            deadline: run.deadline(),
            settle_finishes: false,
            asleep: None,
            watch_final_unlock: false,
            held_back: None,
            turns: VecDeque::new(),
            final_unlock: None,
            last_finish: None,
            planted_dead: 0,
            planted_workers: 0,
            waiters: None,
        };
        Ok((session, prepared))
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

    /// Stops the worker with the most work before it takes its `go`: it starts only once the
    /// others have finished and [`FinalUnlock`] is armed, however late the grader reads their
    /// finishes on a loaded machine.
    pub fn hold_back_last_worker(&mut self) -> Result<(), Fail> {
        let last = *self.workers.last().expect("a session has workers");
        force::hold(last)?;
        self.held_back = Some(last);
        Ok(())
    }

    /// Stops every worker but the first and the last (held back) before their `go`: each starts
    /// once the finish before it has been looked at, so that the grader, however late it reads
    /// a finish on a loaded machine, looks before the next one.
    pub fn take_turns(&mut self) -> Result<(), Fail> {
        let middle = self.workers.len().saturating_sub(1);
        for &worker in self.workers.get(1..middle).unwrap_or_default() {
            force::hold(worker)?;
            self.turns.push_back(worker);
        }
        Ok(())
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
                    let reported = workers.len() as u32;
                    let mut none_woke = false;
                    if let Some(waiters) = self.waiters.take_if(|w| reported > w.finished) {
                        let (woken, ended) = waiters.woken(Duration::from_secs(2));
                        if woken > 0 && woken < waiters.count() && !ended {
                            // Let them go before the coordinator's destroy waits for them.
                            probe::broadcast(&self.segment);
                            return Err(signalled_one(reported, woken, waiters.count(), false));
                        }
                        none_woke = woken == 0 && !ended;
                    }
                    if let Some(asleep) = self.asleep {
                        let judged =
                            asleep.judge(&self.segment, self.coordinator, &self.name, reported);
                        if none_woke {
                            probe::broadcast(&self.segment);
                        }
                        match judged? {
                            true if none_woke => {
                                return Err(signalled_one(reported, 0, 2, true));
                            }
                            true => self.asleep = None,
                            false => {}
                        }
                    } else if none_woke {
                        probe::broadcast(&self.segment);
                    }
                    if workers.len() as u32 == finishing {
                        self.every_finish_counted(finishing)?;
                        if let Some(final_unlock) = self.final_unlock.take() {
                            final_unlock.judge(self)?;
                        }
                        if let Some(last_finish) = self.last_finish.take() {
                            last_finish.judge()?;
                        }
                    } else if self.settle_finishes {
                        let others: Vec<i32> = (0..self.workers.len())
                            .filter(|i| !workers.contains_key(i))
                            .map(|i| self.workers[i])
                            .collect();
                        let held_back = self.held_back.filter(|w| others.contains(w));
                        let waiting: Vec<i32> = self.turns.iter().skip(1).copied().collect();
                        let looked = let_coordinator_look(
                            &self.segment,
                            self.coordinator,
                            &self.name,
                            &others,
                            (held_back, &waiting),
                            self.watch_final_unlock && self.waiters.is_none(),
                        )?;
                        self.turns.pop_front();
                        self.asleep = looked.asleep;
                        if looked.waiters.is_some() {
                            self.waiters = looked.waiters;
                        }
                        self.final_unlock = looked.final_unlock;
                        self.last_finish = looked.last_finish;
                        self.planted_dead += looked.planted_dead;
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
        let planted = self.planted_dead;
        let seen = format!(
            "{finished} workers returned from finish(){}; the bank counts finished = {}, dead = \
             {} of {} workers{}",
            if killed > 0 {
                format!(" and {killed} was killed mid-transfer")
            } else {
                String::new()
            },
            counts.finished,
            counts.dead,
            counts.workers,
            if planted > 0 {
                format!(" (the grader itself counted {planted} of those dead)")
            } else {
                String::new()
            }
        );
        let secs = DONE_GRACE.as_secs();
        if counts.finished + counts.dead < counts.workers {
            let cause = if counts.dead.saturating_sub(planted) < killed {
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
            let past = counts.finished + counts.dead > counts.workers;
            return Fail::failed(if woken {
                format!(
                    "{seen}, yet {secs} s later the coordinator still slept on the condition \
                     variable; when the grader broadcast all_done itself, it returned at once: \
                     nobody woke it when the count became complete; finish() must \
                     pthread_cond_broadcast(all_done) every time it counts a worker (and \
                     recover() when it counts a dead one)"
                )
            } else if past {
                format!(
                    "{seen}, yet the coordinator sleeps on in wait_all_done(), even after the \
                     grader broadcast all_done itself: finished + dead = {} is past workers = \
                     {}, and its loop did not end: it waits for finished + dead to equal \
                     workers exactly, which a count that steps past it never does again; loop \
                     while finished + dead < workers, so that the wait ends once the bank \
                     counts at least every worker",
                    counts.finished + counts.dead,
                    counts.workers
                )
            } else {
                format!(
                    "{seen}, yet the coordinator sleeps on in wait_all_done(), even after the \
                     grader broadcast all_done itself: its loop must end once finished + dead \
                     reaches workers{}",
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
             it counts a dead one); the coordinator re-checks finished + dead < workers itself"
        } else {
            "wait_all_done() must sleep in pthread_cond_wait() on all_done and return once \
             finished + dead reaches workers"
        };
        Fail::failed(format!(
            "{seen}, yet {secs} s later the coordinator has not returned from wait_all_done(): \
             it {doing}; {advice}"
        ))
    }
}

/// Makes the coordinator take in a wake-up before the `others` go on: with the bank's mutex
/// held by the grader, the others are stopped; the grader lets go and wakes whoever waits for
/// the mutex (glibc's own wake-up may go to a stopped worker); once the coordinator has looked
/// (it sleeps on the condition variable again, or has left its wait), the others go on.
/// Otherwise the coordinator, woken while workers hammer the mutex, may get it only once they
/// have all finished, and see the end without needing their broadcasts. A `held_back` worker
/// stays stopped until it is the only one left; then, once the coordinator sleeps on the
/// condition variable again, [`FinalUnlock`] is armed before it goes on. The `waiting` workers
/// stay stopped too: their turn comes after a later finish. With `queue_waiter`,
/// two threads of the grader then wait on the condition variable too, until the next finish.
pub(super) fn let_coordinator_look(
    segment: &Segment,
    coordinator: i32,
    name: &str,
    others: &[i32],
    (held_back, waiting): (Option<i32>, &[i32]),
    queue_waiter: bool,
) -> Result<Looked, Fail> {
    let arm_final_unlock = held_back.is_some() && others.len() == 1;
    let mut looked = Looked {
        asleep: None,
        final_unlock: None,
        planted_dead: 0,
        waiters: None,
        last_finish: None,
    };
    if !probe::can_hold(segment) {
        // Other checks judge that mutex; here the run just goes on, the held-back worker too.
        if let Some(worker) = held_back {
            force::resume(worker)?;
        }
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
    if queue_waiter || arm_final_unlock {
        // On a busy machine the coordinator, woken, may not be back on the condition variable
        // yet: what is armed next needs it there.
        let settle_until = Instant::now() + Duration::from_secs(2);
        while looked.asleep.is_none() && Instant::now() < settle_until {
            std::thread::sleep(Duration::from_millis(1));
            looked.asleep = AsleepOnCond::observe(segment, coordinator, name);
        }
    }
    // Not before the last finish: the coordinator is held at its unlock then, and the waiters
    // could not take the mutex back.
    let not_last = segment
        .counts()
        .is_ok_and(|c| c.finished + c.dead + 2 <= c.workers);
    if queue_waiter && looked.asleep.is_some() && !arm_final_unlock && not_last {
        looked.waiters = probe::CondWaiters::start(segment, 2);
    }
    if arm_final_unlock {
        let one_left = segment
            .counts()
            .is_ok_and(|c| c.finished + c.dead + 1 == c.workers);
        if looked.asleep.is_some() && one_left {
            looked.final_unlock = FinalUnlock::arm(segment, coordinator, name);
            if looked.final_unlock.is_some() {
                looked.planted_dead = plant_dead(segment)?;
            }
            if let Some(worker) = held_back {
                looked.last_finish = LastFinish::watch(segment, worker, name);
            }
        }
    }
    for &worker in others {
        if (arm_final_unlock || Some(worker) != held_back) && !waiting.contains(&worker) {
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
    /// The dead holders the grader counted itself ([`plant_dead`]).
    pub planted_dead: u32,
    /// Threads of the grader queued on the condition variable beside the coordinator: the
    /// next finish must wake them all.
    pub waiters: Option<probe::CondWaiters>,
    /// The last worker's store to `finished`, watched.
    pub last_finish: Option<LastFinish>,
}

/// `Bank::finished`, watched for stores from where the watched worker maps it.
const FINISHED_WORD: &[Field] = &[Field {
    offset: 0,
    len: 4,
    loads: false,
}];

/// The last worker's `finish()`, watched with a hardware watchpoint on `Bank::finished`: at its
/// store the grader reads the mutex's owner word. Being the last one left is no reason to skip
/// the lock: the coordinator may be between its look at the counts and its sleep, and then a
/// finish counted and broadcast without the mutex is a wake-up lost.
pub(super) struct LastFinish {
    worker: i32,
    /// The owner word at the worker's first store to `finished`.
    owner: Receiver<i32>,
}

impl LastFinish {
    /// `None` when the worker's mapping is not found or it cannot be watched.
    fn watch(segment: &Segment, worker: i32, name: &str) -> Option<LastFinish> {
        let map = probe::mappings(worker, name)
            .into_iter()
            .find(|m| m.offset == 0)?;
        let address = map.start + segment.layout.counts_at as u64 + 4;
        // The file, not a Segment (whose mapping stays on this thread).
        let file = segment.file().try_clone().ok()?;
        let owner_at = (segment.layout.mutex_at + probe::MUTEX_OWNER_AT) as u64;
        let mut tracer = Tracer::watch_at(worker, address, FINISHED_WORD).ok()??;
        let (seen, owner) = channel();
        std::thread::spawn(move || {
            let until = Instant::now() + WATCH_LIMIT;
            while Instant::now() < until {
                match tracer.next_watched(until) {
                    Ok(None | Some(Watched::Armed)) => {}
                    Ok(Some(Watched::Hit)) => {
                        let mut word = [0u8; 4];
                        let owner =
                            std::os::unix::fs::FileExt::read_exact_at(&file, &mut word, owner_at)
                                .map_or(-1, |()| i32::from_ne_bytes(word));
                        let _ = seen.send(owner);
                        tracer.go_on();
                    }
                    _ => break,
                }
            }
            // Dropped here: the watchpoint is cleared and the worker let go.
            drop(tracer);
        });
        Some(LastFinish { worker, owner })
    }

    /// Once the worker has returned from `finish()`: its store to `finished` was made holding
    /// the mutex (the owner word was its thread id).
    pub fn judge(self) -> Result<(), Fail> {
        let Ok(owner) = self.owner.recv_timeout(Duration::from_secs(1)) else {
            // No store seen (watchpoints unavailable): other checks judge finish().
            return Ok(());
        };
        if owner == self.worker {
            return Ok(());
        }
        let held = if owner == 0 {
            "the mutex was free".to_string()
        } else {
            format!("the mutex was held by thread {owner}")
        };
        Err(Fail::failed(format!(
            "the last worker (pid {}) to finish stored Bank::finished while it did not hold the \
             bank's mutex ({held} at that store, seen with a hardware watchpoint on finished): \
             the last finish was counted without the lock; being the last worker left is no \
             reason to skip it, since the coordinator (or any process holding the mutex) may \
             be between its look at the counts and its pthread_cond_wait(), and a finish \
             counted and broadcast in that window is a wake-up lost: finish() takes the lock \
             every time, then finished += 1 and broadcast",
            self.worker
        )))
    }
}

/// How long the last worker's finish is watched at most.
const WATCH_LIMIT: Duration = Duration::from_secs(15);

/// Counts one dead holder in the bank (`dead += 1`, under the mutex, with no broadcast) while
/// the coordinator sleeps and one worker is left: at the end `finished + dead` is one more than
/// `workers`, so that a snapshot whose `dead` is computed (`workers - finished`) instead of read
/// from the bank shows. The coordinator, asleep on the condition variable, is not woken by it.
/// As one more holder of the mutex: one more worker in `Bank::workers`, counted dead at once
/// (so `finished + dead` still reaches `workers` with the last real finish). A coordinator that
/// waits for, and reports, a count of its own instead of the bank's ends a finish early and
/// reports the old count.
pub(super) fn plant_dead_worker(session: &mut Session) -> Result<(), Fail> {
    let segment = &session.segment;
    let held = probe::hold(segment, Duration::from_secs(2))?;
    let counts = segment.counts()?;
    segment.write_at(
        segment.layout.counts_at,
        &(counts.workers + 1).to_ne_bytes(),
    )?;
    segment.write_at(
        segment.layout.counts_at + 8,
        &(counts.dead + 1).to_ne_bytes(),
    )?;
    drop(held);
    session.planted_dead += 1;
    session.planted_workers += 1;
    Ok(())
}

fn plant_dead(segment: &Segment) -> Result<u32, Fail> {
    let held = probe::hold(segment, Duration::from_secs(2))?;
    let at = segment.layout.counts_at + 8;
    let dead = segment.counts()?.dead;
    segment.write_at(at, &(dead + 1).to_ne_bytes())?;
    drop(held);
    Ok(1)
}
