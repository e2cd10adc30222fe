//! The coordinator's wait: asleep on the condition variable in the segment while there is
//! nothing to do, and over only once the last worker has finished.

use std::time::{Duration, Instant};

use super::LIGHT_WORK;
use super::probe::{self, Place, Sleep};
use super::segment::Segment;
use super::session::{Session, role_of};
use super::timers::{self, TimerCall};
use super::totals::verify;
use std::os::unix::fs::FileExt;

use crate::engine::tracer::{Action, Call, Field, Match, TIMERS, Tracer, Watched};
use crate::engine::waiting::{self, WaitRules};
use crate::engine::{Fail, Run, force, inspect};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// `futex()`'s operation without its flags (`FUTEX_CMD_MASK`).
const FUTEX_COMMAND: u64 = 0x7f;
/// The work of the longest worker in `waits-for-last-worker`.
const LONGEST_WORK: u64 = 150_000;

/// The calls a waiter that polls makes (a yield, a sleep, a wait with a timeout on nothing).
const POLLING_CALLS: &[i64] = &[
    libc::SYS_sched_yield,
    libc::SYS_nanosleep,
    libc::SYS_clock_nanosleep,
    libc::SYS_select,
    libc::SYS_pselect6,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
];

/// [`POLLING_CALLS`] and the arming of a timer ([`TIMERS`]): the ways of waking up by itself.
const SELF_WAKING: &[Call] = &[Call::one_of(POLLING_CALLS), Call::one_of(TIMERS)];

/// Given the coordinator stopped before its first instruction: lets it run to its `shm_open()`
/// of the bank (past the start-up of the Rust runtime, which polls its standard descriptors),
/// traced for the arming of a timer, then traces it until its first call of [`SELF_WAKING`],
/// held there. `None` (untraced) if the machine does not allow it.
fn watch_polling(proc: &mut crate::engine::Proc, name: &str) -> Result<Option<Tracer>, Fail> {
    let pid = proc.pid.as_raw();
    if !timers::stopped_after_arming_none(pid, Call::opening(&super::segment::dev_shm(name)))? {
        return Ok(None);
    }
    trace_self_waking(pid)
}

/// Traces the coordinator, stopped, until its next call of [`SELF_WAKING`], and lets it go.
fn trace_self_waking(pid: i32) -> Result<Option<Tracer>, Fail> {
    let polling = Tracer::attach(pid, Call::any_of(SELF_WAKING), Action::Hold)?;
    force::resume(pid)?;
    Ok(polling)
}

/// From its `ready` until it first sleeps on the condition variable, the coordinator makes
/// none of [`POLLING_CALLS`] and arms no timer: a look at the counts in a loop with a yield or a
/// sleep before the real wait is polling, however short, and so is a tick that wakes the wait.
fn no_polling_before_sleep(session: &Session, tracer: Option<Tracer>) -> Result<(), Fail> {
    let Some(mut tracer) = tracer else {
        return Ok(());
    };
    let coordinator = session.coordinator;
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        if tracer.held_before(Instant::now() + Duration::from_millis(2))? {
            match timers::held_at_timer(coordinator) {
                Some(TimerCall::Arms(armed)) => {
                    tracer.release();
                    return Err(timers::armed_a_timer(
                        &armed,
                        "before it first slept on the condition variable",
                    ));
                }
                Some(TimerCall::Disarms) => {
                    tracer.release_stopped(coordinator)?;
                    match trace_self_waking(coordinator)? {
                        Some(again) => tracer = again,
                        None => return Ok(()),
                    }
                    continue;
                }
                None => {}
            }
            let call = inspect::call_of(coordinator, coordinator).map_or(
                "one of sched_yield(), nanosleep(), poll() or select()".to_string(),
                |c| probe::call_name(c.0),
            );
            tracer.release();
            return Err(Fail::failed(format!(
                "before it first slept on the condition variable, while no worker had started, \
                 the coordinator called {call} (a tracer on it from its shm_open() held it \
                 there): it polls the counts (look, unlock, yield or sleep, look again) before \
                 it waits; wait_all_done() takes the lock and goes straight into \
                 pthread_cond_wait() on all_done in a while loop: no spinning, no polling, not \
                 even for a moment at the start"
            )));
        }
        if session.coordinator_place() == Some(Place::Cond) {
            break;
        }
    }
    // Dropped: the tracer is killed and the coordinator, asleep, goes on untraced.
    drop(tracer);
    Ok(())
}

pub(super) fn coordinator_sleeps(run: &mut Run) -> Result<String, Fail> {
    let (session, polling) = Session::start_with(run, &[LIGHT_WORK; 4], &[], Some(watch_polling))?;
    let mut session = session;
    no_polling_before_sleep(&session, polling)?;
    // The workers wait for `go`: the coordinator has nothing to do but wait for them.
    let role = role_of(session.coordinator);
    let advice = "wait_all_done() must sleep in pthread_cond_wait() on all_done until a worker's \
                  broadcast wakes it";
    waiting::expect_blocked(&[session.coordinator], &role, WaitRules::default(), advice)
        .map_err(super::counting::never_seen_blocked)?;
    // A few looks: one that is never asleep spins, even if the machine's load kept its share
    // of the CPU below what the watch calls spinning.
    let mut sleep = probe::sleeping(session.coordinator);
    for _ in 0..20 {
        if sleep != Sleep::Awake {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
        sleep = probe::sleeping(session.coordinator);
    }
    let place = match sleep {
        Sleep::Futex { address } => probe::place(
            session.coordinator,
            &session.name,
            &session.segment.layout,
            address,
        ),
        Sleep::Call(nr) => {
            return Err(Fail::failed(format!(
                "while no worker had started, the coordinator waited in {} instead of on the \
                 condition variable: {advice}, the only wake-up a worker's finish() gives",
                probe::call_name(nr)
            )));
        }
        Sleep::Awake => {
            return Err(Fail::failed(format!(
                "while no worker had started, the coordinator was on the CPU whenever the \
                 grader looked, never asleep: it spins instead of sleeping; {advice}"
            )));
        }
    };
    if place != Place::Cond {
        return Err(Fail::failed(format!(
            "while no worker had started, the coordinator slept on {} instead of the condition \
             variable all_done in the segment: {advice}",
            place.describe()
        )));
    }
    // The program is single-threaded: another thread of the coordinator is a second way of
    // being woken (a child's exit, a timer), not the workers' broadcasts.
    if let Some(view) = inspect::view(session.coordinator) {
        let others: Vec<String> = view
            .threads
            .iter()
            .filter(|t| t.tid != session.coordinator)
            .map(|t| match (t.state, t.syscall) {
                ('S' | 'D', Some((nr, _))) => {
                    format!("thread {} sleeps in {}", t.tid, probe::call_name(nr))
                }
                _ => format!("thread {} runs", t.tid),
            })
            .collect();
        if !others.is_empty() {
            return Err(Fail::failed(format!(
                "while no worker had started, the coordinator had threads besides the one \
                 waiting ({}): the only wake-up of its wait is the broadcast of all_done that \
                 each worker's finish() makes (finished += 1, then pthread_cond_broadcast(), \
                 every time), not a worker's exit (SIGCHLD) or a timer; the bank starts no \
                 thread",
                others.join(", ")
            )));
        }
    }
    super::other_processes::only_the_workers(&session)?;
    // A wait with a timeout wakes up by itself to look again: a poll, whatever its period.
    if probe::futex_has_timeout(session.coordinator) == Some(true) {
        return Err(Fail::failed(format!(
            "while no worker had started, the coordinator slept on the condition variable with \
             a timeout (pthread_cond_timedwait()): it wakes up to look again when nothing has \
             changed, which is polling; {advice}, with no timeout"
        )));
    }
    // After the timeout's verdict: a timed wait changes the condition variable by itself.
    super::signal_wakeups::no_wakeup_by_signals(&session)?;
    let queued = queued_before_unlock(&session)?;
    super::coordinator_look::plant_dead_worker(&mut session)?;
    session.go()?;
    let outcome = session.finish(0, |_| Ok(()))?;
    verify(&session, &outcome, &[], 0)?;
    drop(session);
    let locked_once = if super::coordinator_locks::locks_once_before_waiting(run)? {
        "; from a tried transfer to its first sleep, it locked the mutex twice (the transfer, \
         its wait): no poll of the counts before the wait"
    } else {
        ""
    };
    let watched = if counts_read_under_the_lock(run)? {
        "; its reads of finished and dead (a watchpoint, loads too) all made holding the lock"
    } else {
        ""
    };
    Ok(format!(
        "while the workers were held, the coordinator slept on the condition variable in the \
         segment, without waking up{}{watched}{locked_once}",
        if queued {
            "; a broadcast made while it was held at its unlock of the mutex, going back to \
             sleep, woke it"
        } else {
            ""
        }
    ))
}

/// The coordinator's sleep and its unlock of the bank's mutex are one step: the grader makes
/// the coordinator look at the counts once more (it holds the mutex, broadcasts, lets go), holds
/// it at the unlock that follows (its `FUTEX_WAKE` on the mutex: glibc sets the waiters bit of a
/// mutex taken after a wait, so that unlock always makes the call), takes the mutex there and
/// broadcasts. A `pthread_cond_wait()` given the bank's mutex queued the coordinator before
/// that unlock, so the broadcast wakes it and it waits for the mutex; a wait that let go of the
/// bank's mutex first and queues afterwards misses it and sleeps on the condition variable.
/// `Ok(false)` when the grader could not set this up (no ptrace, no such unlock).
fn queued_before_unlock(session: &Session) -> Result<bool, Fail> {
    let segment = &session.segment;
    let coordinator = session.coordinator;
    let Some(map) = probe::mappings(coordinator, &session.name)
        .into_iter()
        .find(|m| m.offset == 0)
    else {
        return Ok(false);
    };
    if !probe::can_hold(segment) {
        return Ok(false);
    }
    let mutex = map.start + segment.layout.mutex_at as u64;
    let place = || match probe::sleeping(coordinator) {
        Sleep::Futex { address } => Some(probe::place(
            coordinator,
            &session.name,
            &segment.layout,
            address,
        )),
        _ => None,
    };
    let held = probe::hold(segment, Duration::from_secs(2))?;
    probe::broadcast(segment);
    let until = Instant::now() + Duration::from_secs(2);
    while place() != Some(Place::Mutex) {
        if Instant::now() > until {
            // Not woken by a broadcast: other checks say why.
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let call = Call {
        number: libc::SYS_futex,
        matching: Match::BothBits([
            (0, u64::MAX, mutex),
            (1, FUTEX_COMMAND, libc::FUTEX_WAKE as u64),
        ]),
    };
    let Some(mut tracer) = Tracer::attach(coordinator, call, Action::Hold)? else {
        return Ok(false);
    };
    drop(held);
    if !tracer.held_before(Instant::now() + Duration::from_secs(2))? {
        return Ok(false);
    }
    // At its unlock: the mutex is free, the coordinator not yet asleep.
    let Some(holder) = probe::HolderThread::start(segment, Duration::from_millis(500)) else {
        tracer.release();
        return Ok(false);
    };
    probe::broadcast(segment);
    tracer.release();
    let until = Instant::now() + Duration::from_secs(2);
    let mut seen = place();
    while seen != Some(Place::Mutex) && seen != Some(Place::Cond) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
        seen = place();
    }
    holder.let_go();
    if seen == Some(Place::Cond) {
        // Its sleep missed the broadcast: wake it, as the bank is unchanged.
        probe::broadcast(segment);
        return Err(Fail::failed(
            "the grader held the bank's mutex and broadcast all_done, so that the coordinator \
             woke up and looked at the counts again; it held the coordinator at the unlock of \
             the mutex that followed (its FUTEX_WAKE), took the mutex there and broadcast \
             all_done once more: let go, the coordinator went to sleep on the condition \
             variable instead of waking up to take the mutex: it let go of the bank's mutex \
             before it was queued on the condition variable, so a broadcast made in between \
             is lost (a finish then, the last one, leaves it asleep for ever); \
             pthread_cond_wait(all_done, the bank's mutex) queues the waiter and unlocks the \
             mutex as one step: give it the bank's mutex, held, not a mutex of its own",
        ));
    }
    Ok(seen == Some(Place::Mutex))
}

pub(super) fn waits_for_last_worker(run: &mut Run) -> Result<String, Fail> {
    // Workers with 1, 2, 3 and 4 times as much work finish one after another; each finish wakes
    // the coordinator, which must go back to sleep until the last one.
    let work = [
        LONGEST_WORK / 4,
        LONGEST_WORK / 2,
        3 * LONGEST_WORK / 4,
        LONGEST_WORK,
    ];
    let mut session = Session::start(run, &work, &[])?;
    let place = match session.coordinator_settled() {
        Sleep::Futex { .. } => session.coordinator_place(),
        _ => None,
    };
    if place != Some(Place::Cond) {
        run.note(format!(
            "the coordinator was not seen waiting on the condition variable: {place:?}"
        ));
    }
    // Each finish but the last wakes the coordinator; it looks before the others go on.
    session.settle_finishes = true;
    session.watch_final_unlock = true;
    session.asleep = AsleepOnCond::observe(&session.segment, session.coordinator, &session.name);
    session.hold_back_last_worker()?;
    session.take_turns()?;
    session.go()?;
    let outcome = session.finish(0, |_| Ok(()))?;
    let transfers = verify(&session, &outcome, &[], 0)?;
    let unwatched = if finish_broadcasts_unwatched(run)? {
        "; a finish with nobody waiting on all_done broadcast all the same"
    } else {
        ""
    };
    let late = if late_wait_locks(run)? {
        "; a coordinator that came to its wait after every worker had finished took the lock \
         for its snapshot (it waited, with no timeout, while the grader held it, and recovered \
         when the grader's holder died with it)"
    } else {
        ""
    };
    super::finish_past_workers::finish_counted_past_workers(run)?;
    Ok(format!(
        "the coordinator returned after all 4 workers finished ({transfers} transfers){late}{unwatched}; \
         finished set to workers - 1 by the grader, each finish still counted"
    ))
}

/// A coordinator that comes to `wait_all_done()` once every worker has finished still takes
/// the lock, for its look at the counts and for its snapshot: held by a tracer right after its
/// `ready` (before its wait), it is let go once the workers are done and the grader holds the
/// bank's mutex; it must wait for the mutex, asleep with no timeout (a timed lock polls), and
/// say `done` only after the grader lets go. The grader's holder then dies with the lock: that
/// first lock of `wait_all_done()` must meet `EOWNERDEAD` and recover, as `lock()` does, and
/// the coordinator say `done`. `false` when the coordinator cannot be traced.
fn late_wait_locks(run: &mut Run) -> Result<bool, Fail> {
    let prepare = |proc: &mut crate::engine::Proc, _: &str| -> Result<Option<Tracer>, Fail> {
        let pid = proc.pid.as_raw();
        let tracer = Tracer::attach(pid, Call::any(libc::SYS_sendto), Action::HoldAfter)?;
        crate::engine::force::resume(pid)?;
        Ok(tracer)
    };
    let (mut session, tracer) =
        Session::start_with(run, &[LIGHT_WORK / 10; 2], &[], Some(prepare))?;
    let Some(mut tracer) = tracer else {
        return Ok(false);
    };
    if !tracer.held_before(Instant::now() + Duration::from_secs(2))? {
        return Ok(false);
    }
    // The coordinator is held just after its `ready`: the workers run and finish alone.
    for _ in &session.workers {
        session.proc.send("go", &[])?;
    }
    let until = Instant::now() + Duration::from_secs(5);
    let mut finished = Vec::new();
    while finished.len() < session.workers.len() {
        match session.next_before(until)? {
            Some(message) if message.kind == "finished" => finished.push(message),
            Some(message) if message.kind == "failed" => {
                tracer.release();
                return Err(Fail::failed(format!(
                    "a worker failed with kind={} ({}) while the coordinator was held before \
                     its wait",
                    message.get("kind").unwrap_or("none"),
                    message.get("error").unwrap_or("")
                )));
            }
            Some(message) => session.set_aside(message),
            None => {
                tracer.release();
                return Ok(false);
            }
        }
    }
    let counts = session.segment.counts()?;
    // A thread of the grader's holds the mutex, and ends with it held once the coordinator
    // waits: its first lock must then meet EOWNERDEAD and recover as lock() does.
    let held = probe::DyingHolder::start(&session.segment, false)?;
    tracer.release();
    let until = Instant::now() + Duration::from_millis(1500);
    let mut waited = false;
    while Instant::now() < until {
        if session.coordinator_place() == Some(Place::Mutex) {
            waited = true;
            break;
        }
        let Some(message) = session.next_before(Instant::now() + Duration::from_millis(1))? else {
            continue;
        };
        if message.kind == "done" {
            drop(held);
            return Err(Fail::failed(format!(
                "the coordinator came to wait_all_done() after both workers had finished \
                 (the bank counted finished = {} of workers = {}), and said `done` while the \
                 grader held the bank's mutex: it read the counts and took its snapshot \
                 without the lock (a fast path for a wait already over); wait_all_done() \
                 takes the lock first, whatever the counts, and reads them and the snapshot \
                 under it (a holder may be changing the bank, a recovery half done)",
                counts.finished, counts.workers
            )));
        }
        session.set_aside(message);
    }
    if !waited {
        // Never seen asleep on the mutex the grader holds: how does it wait for it, then?
        let coordinator = session.coordinator;
        let judged = waiting::expect_blocked(
            &[coordinator],
            &|_| {
                "the coordinator, let go into wait_all_done() while the grader held the bank's \
                 mutex"
                    .to_string()
            },
            WaitRules::default(),
            "wait_all_done() takes the lock with pthread_mutex_lock(), which sleeps in a futex \
             wait until the holder unlocks; trying it again and again (pthread_mutex_trylock() \
             in a loop) spins on the CPU the holder needs",
        );
        if let Err(fail) = judged {
            drop(held);
            return Err(fail);
        }
    }
    if waited && probe::futex_has_timeout(session.coordinator) == Some(true) {
        drop(held);
        return Err(Fail::failed(
            "the coordinator, let go into wait_all_done() while the grader held the bank's \
             mutex, waits for its first lock in a futex wait with a timeout (its futex() call's \
             fourth argument, in /proc/PID/syscall): a pthread_mutex_timedlock() (or a timed \
             retry) wakes up by itself and tries again, which is a poll, whatever its period; \
             wait_all_done() takes the lock as lock() does, with pthread_mutex_lock(), asleep \
             with no timeout until the holder unlocks or dies",
        ));
    }
    held.die();
    // The holder is dead: the coordinator's first lock returns EOWNERDEAD, and it must repair
    // (nothing was under way), make the mutex consistent and go on to its `done`.
    let until = Instant::now() + Duration::from_secs(2);
    while let Some(message) = session.next_before(until)? {
        if message.kind == "failed" {
            return Err(Fail::failed(format!(
                "while the coordinator {} the bank's mutex in wait_all_done() (every worker \
                 had finished; its first lock there), the grader's thread that held it ended \
                 without unlocking it, and the coordinator then failed with kind={} ({}): that \
                 first lock met EOWNERDEAD and treated it as an error; wait_all_done() takes \
                 the lock as lock() does: on EOWNERDEAD, recover() the bank, \
                 pthread_mutex_consistent(), and go on waiting (a dead holder is not an error)",
                if waited { "waited for" } else { "came to take" },
                message.get("kind").unwrap_or("none"),
                message.get("error").unwrap_or("")
            )));
        }
        let done = message.kind == "done";
        session.set_aside(message);
        if done {
            break;
        }
    }
    for message in finished {
        session.set_aside(message);
    }
    let outcome = session.finish(0, |_| Ok(()))?;
    verify(&session, &outcome, &[], 0)?;
    Ok(waited)
}

/// The coordinator seen asleep on the condition variable, and what the bank counted then: any
/// finish counted after that must wake it (`finish()` broadcasts every time).
#[derive(Debug, Clone, Copy)]
pub(super) struct AsleepOnCond {
    /// Its main thread's context switches, the same just before and just after it was seen
    /// asleep: it cannot run again without switching out before it is seen asleep again.
    switches: u64,
    /// `finished` in the bank once it was seen asleep.
    finished: u32,
}

impl AsleepOnCond {
    /// `None` unless the coordinator sleeps on the condition variable in the segment now.
    pub fn observe(segment: &Segment, coordinator: i32, name: &str) -> Option<AsleepOnCond> {
        let before = switches(coordinator)?;
        if !on_cond(segment, coordinator, name) {
            return None;
        }
        let finished = segment.counts().ok()?.finished;
        (switches(coordinator)? == before).then_some(AsleepOnCond {
            switches: before,
            finished,
        })
    }

    /// Judges, once `reported` workers have returned from `finish()`, whether one of their
    /// finishes was counted after the coordinator was seen asleep (more returned than the
    /// bank had counted then): if so, that finish's broadcast came later and must have woken
    /// it. `Ok(false)`: none was, nothing judged yet.
    pub fn judge(
        self,
        segment: &Segment,
        coordinator: i32,
        name: &str,
        reported: u32,
    ) -> Result<bool, Fail> {
        if reported <= self.finished {
            return Ok(false);
        }
        let still_asleep =
            on_cond(segment, coordinator, name) && switches(coordinator) == Some(self.switches);
        if !still_asleep {
            return Ok(true);
        }
        let counts = segment.counts()?;
        let private = segment.cond_wrefs().is_ok_and(|wrefs| wrefs & 1 == 0);
        Err(Fail::failed(format!(
            "{reported} of {} workers had returned from finish() (the bank counts finished = \
             {}, dead = {}), yet the coordinator, asleep on the condition variable since the \
             bank counted {} finished, has not run since: no finish woke it{}; finish() must \
             pthread_cond_broadcast(all_done) every time it counts a worker, not only once the \
             count is complete: the coordinator looks again after each one",
            counts.workers,
            counts.finished,
            counts.dead,
            self.finished,
            if private {
                " (or the broadcast cannot reach another process: the condition variable in \
                 the segment is not process-shared)"
            } else {
                ""
            }
        )))
    }
}

fn switches(pid: i32) -> Option<u64> {
    inspect::thread_times(pid).get(&pid).map(|t| t.switches)
}

fn on_cond(segment: &Segment, coordinator: i32, name: &str) -> bool {
    match probe::sleeping(coordinator) {
        Sleep::Futex { address } => {
            probe::place(coordinator, name, &segment.layout, address) == Place::Cond
        }
        _ => false,
    }
}

/// `finish()` broadcasts every time, whoever waits: with nobody asleep on `all_done` (the
/// grader holds the mutex and broadcasts, so that the coordinator leaves the condition
/// variable for the mutex, and stops it there, SIGSTOP), a worker with no transfer to make
/// finishes; a breakpoint at `pthread_cond_broadcast()` in it must be hit. A finish that skips
/// the broadcast when it sees no waiter reads a private glibc word, and a waiter that is on
/// its way into `pthread_cond_wait()` (on another C library, or counted otherwise) is never
/// woken. `false` when the grader may not trace the worker or the coordinator was not seen
/// asleep on the condition variable.
fn finish_broadcasts_unwatched(run: &mut Run) -> Result<bool, Fail> {
    let mut session = Session::start(run, &[0], &[])?;
    if !matches!(session.coordinator_settled(), Sleep::Futex { .. })
        || session.coordinator_place() != Some(Place::Cond)
    {
        return Ok(false);
    }
    let coordinator = Pid::from_raw(session.coordinator);
    let held = probe::hold(&session.segment, Duration::from_secs(2))?;
    if !probe::broadcast(&session.segment) {
        return Ok(false);
    }
    let until = Instant::now() + Duration::from_secs(2);
    while session.coordinator_place() != Some(Place::Mutex) {
        if Instant::now() > until {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    kill(coordinator, Signal::SIGSTOP).map_err(|e| Fail::Grader(format!("SIGSTOP: {e}")))?;
    let until = Instant::now() + Duration::from_secs(1);
    while inspect::view(session.coordinator).is_some_and(|v| v.state != 'T')
        && Instant::now() < until
    {
        std::thread::sleep(Duration::from_micros(200));
    }
    drop(held);
    let resume = |_: ()| kill(coordinator, Signal::SIGCONT);
    let Some(broadcasts) = super::attributes::Broadcasts::watch(&session, session.workers[0])?
    else {
        let _ = resume(());
        return Ok(false);
    };
    // The coordinator is stopped: no settling, just the one worker's `go`.
    session.proc.send("go", &[])?;
    let until = Instant::now() + Duration::from_secs(2);
    let mut finished = false;
    while !finished && Instant::now() < until {
        if let Some(message) = session.next_before(Instant::now() + Duration::from_millis(5))? {
            finished = message.kind == "finished";
            session.set_aside(message);
        }
    }
    let seen = broadcasts.broadcast_seen();
    let _ = resume(());
    if !finished {
        return Ok(false);
    }
    let outcome = session.finish(0, |_| Ok(()))?;
    verify(&session, &outcome, &[], 0)?;
    if !seen {
        return Err(Fail::failed(format!(
            "a worker (pid {}) with no transfer to make finished while nobody waited on \
             all_done (the coordinator was stopped on its way back from pthread_cond_wait(), \
             waiting for the mutex), and a breakpoint at pthread_cond_broadcast() in it was \
             never hit: finish() broadcasts every time, waiter or not (reading who waits from \
             the condition variable's private bytes misses a waiter on its way in)",
            session.workers[0]
        )));
    }
    Ok(true)
}

/// `finished` and `dead`, loads too, from where `finished` lies.
const DONE_COUNTS: &[Field] = &[
    Field {
        offset: 0,
        len: 4,
        loads: true,
    },
    Field {
        offset: 4,
        len: 4,
        loads: true,
    },
];

/// The coordinator reads the counts only holding the lock (every field of the bank but the
/// lock is read under it), and so does not look at them before it waits: a program held at its
/// `created` (before its tried transfer, before the workers) gets a hardware watchpoint, loads
/// too, on the coordinator's `finished` and `dead`; at each access until it sleeps, the
/// mutex's owner word must be the coordinator's thread id. `false` when it could not be
/// watched.
fn counts_read_under_the_lock(run: &mut Run) -> Result<bool, Fail> {
    super::segment::told_transfer(run, 1, (0, 1, 1), |_, proc, name| {
        watch_count_reads(proc, name)
    })
}

fn watch_count_reads(proc: &mut crate::engine::Proc, name: &str) -> Result<bool, Fail> {
    let pid = proc.pid.as_raw();
    let message = proc.recv_any()?;
    if message.kind != "created" {
        return Err(super::messages::failure(&message));
    }
    let segment = super::segment::open_segment(
        name,
        super::messages::layout_of(&message)?,
        proc.pid.as_raw(),
    )?;
    let Some(map) = probe::mappings(pid, name)
        .into_iter()
        .find(|m| m.offset == 0)
    else {
        return Ok(false);
    };
    let address = map.start + (segment.layout.counts_at + 4) as u64;
    let Some(mut tracer) = Tracer::watch_at(pid, address, DONE_COUNTS)? else {
        return Ok(false);
    };
    let owner_at = (segment.layout.mutex_at + probe::MUTEX_OWNER_AT) as u64;
    let until = Instant::now() + Duration::from_secs(3);
    let mut told = false;
    while Instant::now() < until {
        match tracer.next_watched(Instant::now() + Duration::from_millis(5))? {
            Some(Watched::Armed) if !told => {
                proc.send("try", &[])?;
                told = true;
            }
            Some(Watched::Armed) => {}
            Some(Watched::Hit) => {
                let mut word = [0u8; 4];
                segment.file().read_exact_at(&mut word, owner_at)?;
                let owner = i32::from_ne_bytes(word);
                if owner != pid {
                    drop(tracer);
                    return Err(Fail::failed(format!(
                        "the coordinator read the bank's finished or dead count (a \
                         hardware watchpoint, loads too, on both, in the coordinator) while the \
                         mutex was {}: every field of the bank but the lock is read with the \
                         lock held; wait_all_done() takes the lock first, then checks \
                         finished + dead < workers and sleeps in pthread_cond_wait() (a look at \
                         the counts before locking is a spin on them, and may see them half \
                         updated)",
                        if owner == 0 {
                            "free".to_string()
                        } else {
                            format!("held by thread {owner}")
                        }
                    )));
                }
                tracer.go_on();
            }
            Some(_) => break,
            None => {
                if told && matches!(probe::sleeping(pid), Sleep::Futex { .. }) {
                    break;
                }
            }
        }
    }
    drop(tracer);
    Ok(true)
}
