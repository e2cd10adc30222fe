//! Why a run does not move on: a run that stalls with every process
//! asleep, finishes lost from the bank's count, a coordinator that does not say `done`, a
//! finish that woke one waiter only.

use std::time::{Duration, Instant};

use super::messages::failure;
use super::probe::{self, Place, Sleep};
use super::session::{Session, role_of};
use crate::engine::Fail;
use crate::engine::inspect;

/// How long a run may go without any change in the bank, every process asleep, before the
/// grader says why (a correct run changes it thousands of times a second).
pub(super) const STALL: Duration = Duration::from_secs(2);
/// How long the coordinator gets to say `done` once the bank counts every worker, before the
/// grader looks at why it did not: it needs one wake-up and one lock.
pub(super) const DONE_GRACE: Duration = Duration::from_secs(3);

/// A finish that woke only `woken` of the grader's `count` waiters on the condition variable
/// (and the coordinator, if `coordinator_woke`).
pub(super) fn signalled_one(
    reported: u32,
    woken: usize,
    count: usize,
    coordinator_woke: bool,
) -> Fail {
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

impl Session {
    /// Why nothing moves, when every process of the run sleeps: from who holds the mutex and
    /// where each process sleeps. `None` when something still runs, or nothing can be said.
    pub(super) fn stalled(&self) -> Option<Fail> {
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

    /// Once `reported` workers have returned from `finish()`, the bank must count them all: a
    /// finish counted outside the lock is lost when two meet.
    pub(super) fn every_finish_counted(&self, reported: u32) -> Result<(), Fail> {
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
    pub(super) fn no_done(&mut self, finished: u32, killed: u32) -> Fail {
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
