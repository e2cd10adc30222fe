//! The kill of a watched process right after a given store, and the workers kept for it (split
//! from `stores.rs`).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::bank_view::{Bank, Word, changes, look, ordinal};
use super::messages::{failure, index_of};
use super::probe::{self, Place};
use super::robust::STEP;
use super::session::Session;
use crate::engine::tracer::{Field, Tracer, Watched};
use crate::engine::{Fail, force, inspect};

/// The store where the grader killed a process, and the bank it left.
pub(super) struct Kill {
    /// Which store of the watched ones (from 1), and to which word.
    store: usize,
    word: &'static str,
    /// What that store changed (nothing, if it stored the value already there).
    change: Vec<String>,
    pub(super) bank: Bank,
}

impl Kill {
    pub(super) fn describe(&self, watched: &str) -> String {
        format!(
            "right after its {} store to {watched} (a store to {}: {})",
            ordinal(self.store),
            self.word,
            if self.change.is_empty() {
                "the value already there".to_string()
            } else {
                self.change.join(", ")
            }
        )
    }
}

/// How a watched process went on.
pub(super) enum Watch {
    /// Killed right after its `k`-th store to the watched words.
    Killed(Kill),
    /// It made fewer stores to them, and finished.
    Finished,
    /// The machine does not allow watchpoints.
    Unwatched,
}

/// The workers not yet used, by role; all stopped.
pub(super) struct Pool {
    pub(super) victims: VecDeque<usize>,
    pub(super) repairers: VecDeque<usize>,
}

impl Pool {
    pub(super) fn victim(&mut self) -> Result<usize, Fail> {
        self.victims
            .pop_front()
            .ok_or_else(|| Fail::Grader("no worker left to kill".into()))
    }

    pub(super) fn repairer(&mut self) -> Result<usize, Fail> {
        self.repairers
            .pop_front()
            .ok_or_else(|| Fail::Grader("no worker left to repair".into()))
    }
}

/// A worker, in messages.
pub(super) fn who(session: &Session, index: usize) -> String {
    format!("worker {index} (pid {})", session.workers[index])
}

/// Waits (up to [`STEP`]) until the coordinator sleeps on the condition variable again: a
/// coordinator still taking in an earlier wake-up could be the one to meet the next dead
/// holder.
pub(super) fn settle(session: &Session) {
    let until = Instant::now() + STEP;
    while session.coordinator_place() != Some(Place::Cond) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Lets worker `index` (stopped) take its `go`, watching `words`, and kills it right after its
/// `k`-th store to them; or sees it finish first.
pub(super) fn kill_at(
    session: &mut Session,
    index: usize,
    words: &[Word],
    k: usize,
) -> Result<Watch, Fail> {
    let pid = session.workers[index];
    let Some(map) = probe::mappings(pid, &session.name)
        .into_iter()
        .find(|m| m.offset == 0)
    else {
        return Ok(Watch::Unwatched);
    };
    // The tracer keeps its fields for its life: a few bytes a watched worker.
    let fields: &'static [Field] = Box::leak(
        words
            .iter()
            .map(|w| Field {
                offset: w.offset,
                len: 8,
                loads: false,
            })
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    );
    let Some(mut tracer) = Tracer::watch_at(pid, map.start, fields)? else {
        return Ok(Watch::Unwatched);
    };
    let mut last = look(&session.segment)?;
    let mut stores = 0;
    let until = Instant::now() + 2 * STEP;
    loop {
        match tracer.next(&mut session.proc, until)? {
            Watched::Armed => {
                force::resume(pid)?;
                session.proc.send("go", &[])?;
            }
            Watched::Hit => {
                stores += 1;
                let now = look(&session.segment)?;
                if stores < k {
                    last = now;
                    tracer.go_on();
                    continue;
                }
                let kill_now = Kill {
                    store: stores,
                    word: words[tracer.last_hit().min(words.len() - 1)].name,
                    change: changes(&last, &now),
                    bank: now,
                };
                kill(Pid::from_raw(pid), Signal::SIGKILL)
                    .map_err(|e| Fail::Grader(format!("kill: {e}")))?;
                drop(tracer);
                let gone_by = Instant::now() + STEP;
                while inspect::view(pid).is_some_and(|v| v.state != 'Z' && v.state != 'X')
                    && Instant::now() < gone_by
                {
                    std::thread::sleep(Duration::from_micros(200));
                }
                return Ok(Watch::Killed(kill_now));
            }
            Watched::Said(message) => match message.kind.as_str() {
                "finished" if index_of(&message)? == index => return Ok(Watch::Finished),
                "failed" => return Err(failure(&message)),
                _ => session.set_aside(message),
            },
            Watched::Lost => {
                drop(tracer);
                return finished(session, index).map(|()| Watch::Finished);
            }
            Watched::Unavailable => return Ok(Watch::Unwatched),
        }
    }
}

/// Waits for worker `index`'s `finished`.
fn finished(session: &mut Session, index: usize) -> Result<(), Fail> {
    let until = Instant::now() + STEP;
    let mut aside = Vec::new();
    let result = loop {
        match session.next_before(until)? {
            Some(message) if message.kind == "finished" && index_of(&message)? == index => {
                break Ok(());
            }
            Some(message) if message.kind == "failed" => break Err(failure(&message)),
            Some(message) => aside.push(message),
            None => {
                let pid = session.workers[index];
                break Err(Fail::failed(format!(
                    "{}, which had no transfer to make, did not return from finish() within \
                     {} s (it {}; the bank's mutex: owner word {:#x})",
                    who(session, index),
                    STEP.as_secs(),
                    probe::sleeping(pid).describe(),
                    session.segment.mutex_owner().unwrap_or(0)
                )));
            }
        }
    };
    for message in aside {
        session.set_aside(message);
    }
    result
}

/// Lets repairer `index` (stopped, no transfer to make) go into `finish()`, where its lock
/// meets the dead holder, and waits until it has finished.
pub(super) fn repair(session: &mut Session, index: usize) -> Result<(), Fail> {
    force::resume(session.workers[index])?;
    session.proc.send("go", &[])?;
    finished(session, index)
}
