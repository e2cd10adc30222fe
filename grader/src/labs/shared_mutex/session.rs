//! The protocol driver: one run of the program from the `ready`s to `closed`, the roles of its
//! processes, and the pause in which the coordinator takes in a wake-up before the workers go on.
//!
//! Beside it: the pause in `coordinator_look.rs`, the last finish watched in
//! `last_finish.rs`, the diagnoses of a run that stalls or does not end in `diagnoses.rs`.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use ipc_labs_driver::Message;
use rand::RngExt;

use super::coordinator_look::let_coordinator_look;
use super::diagnoses::{DONE_GRACE, STALL, signalled_one};
use super::last_finish::LastFinish;
use super::messages::{early_done, failure, field, index_of, layout_of, list};
use super::probe::{self, Place, Sleep};
use super::segment::{Segment, open_segment};
use super::sleeping::AsleepOnCond;
use super::snapshot::FinalUnlock;
use super::{COORDINATOR, WORKER};
use crate::engine::inspect::{self, IoCounters, ProcessView};
use crate::engine::{Fail, Proc, Run, force};

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
}
