//! Signal handlers do not break the protocol. A wait that a handler interrupts (`EINTR`) has
//! received nothing: it waits again, with a deadline read anew from the clock. The grader holds
//! one side, so that nothing is posted, interrupts the other side's wait itself, one signal at a
//! time, and looks at the waiter after each: it must not have moved (no post, no write into the
//! slot, the same wait), and the deadline of the wait it is back in must be read from the clock
//! after the signal (a slice after it). Then `SIGUSR1` goes to both sides every millisecond for
//! the rest of the run. Last, in a program without a handler for it, a `SIGUSR1` must end the
//! waiting consumer at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use super::default_action;
use super::forced_waits::realtime;
use super::handover::{Handover, expected_record};
use super::probe::{self, Deadline, Seen};
use super::slot::slot_holding;
use super::waits::{SLICE_LIMIT, millis};
use super::{CONSUMER, PRODUCER, WAIT_SLICE};
use crate::engine::inspect::{self, SignalMask};
use crate::engine::process::signal_names;
use crate::engine::tracer::{Call, Step, Tracer};
use crate::engine::{Fail, Run, force};

/// Records of each run; the producer is held before the first mark, the consumer before the
/// second.
const ROUNDS: u64 = 3000;
const PRODUCER_HELD_AT: u64 = 1000;
const CONSUMER_HELD_AT: u64 = 2000;
/// Signals the grader sends, one at a time, to a side waiting for the held one: enough that a
/// deadline pushed a slice further at each of them ends up seconds ahead.
const DIRECT: usize = 10;
/// The first signal goes at least this long before the end of the slice it interrupts.
const MARGIN: Duration = Duration::from_millis(25);

/// Sends SIGUSR1 to the group `group` every millisecond until stopped, but not while quiet;
/// counts what it sent.
struct Storm {
    stop: Arc<AtomicBool>,
    quiet: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Storm {
    fn start(group: i32) -> Storm {
        let stop = Arc::new(AtomicBool::new(false));
        let quiet = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, quiet, sent) = (stop.clone(), quiet.clone(), sent.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    if !quiet.load(Ordering::SeqCst) {
                        if killpg(Pid::from_raw(group), Signal::SIGUSR1).is_err() {
                            return;
                        }
                        sent.fetch_add(1, Ordering::SeqCst);
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        };
        Storm {
            stop,
            quiet,
            sent,
            thread: Some(thread),
        }
    }

    fn quiet(&self, quiet: bool) {
        self.quiet.store(quiet, Ordering::SeqCst);
    }

    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.sent.load(Ordering::SeqCst)
    }
}

/// Waits (up to 2 s) until no SIGUSR1 is pending for `pid` and it sleeps in a system call: a
/// signal it got has been handled, and it is back in a call, whichever.
fn settle(pid: i32) {
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until && probe::alive(pid) {
        if !probe::pending(pid, Signal::SIGUSR1 as i32)
            && probe::state(pid) == Some('S')
            && probe::sample(pid).is_some()
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A call, without its deadline: the wait it is, and on what.
fn call_key(seen: Seen) -> (i64, u64) {
    match seen {
        Seen::Futex { addr, .. } => (libc::SYS_futex, addr),
        Seen::Receive { fd, .. } => (libc::SYS_mq_timedreceive, fd as u64),
        Seen::Sleep => (libc::SYS_nanosleep, 0),
        Seen::Other { nr, args } => (nr, args[0]),
    }
}

/// What a waiting side shows from outside: the call it sits in, how many signals each of its
/// semaphores or queues holds, the number of the record in the slot.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stance {
    call: Option<(i64, u64)>,
    counts: Vec<(String, i64)>,
    slot: Option<u64>,
}

/// The side that waits, and what it waits on and posts.
struct Waiter<'a> {
    pid: i32,
    role: &'static str,
    held: &'static str,
    mechanism: &'static str,
    /// The names of the signal it waits for and of the one it posts.
    waits_on: &'a str,
    posts: &'a str,
    slot: Option<u64>,
}

impl Waiter<'_> {
    fn stance(&self) -> Stance {
        let seen = probe::sample(self.pid);
        let mut counts = Vec::new();
        if self.mechanism == "semaphores" {
            let waited = match seen {
                Some(Seen::Futex { addr, .. }) => Some(addr & !0xfff),
                _ => None,
            };
            for (start, value) in probe::semaphores_of(self.pid) {
                let name = match waited {
                    Some(page) if page == start => self.waits_on,
                    Some(_) => self.posts,
                    None => "a",
                };
                counts.push((format!("the {name} semaphore"), i64::from(value)));
            }
        } else {
            for name in [self.waits_on, self.posts] {
                let messages = probe::queue_descriptors(self.pid, name)
                    .first()
                    .and_then(|&fd| probe::queue_messages(self.pid, fd));
                if let Some(messages) = messages {
                    counts.push((format!("the {name} queue"), messages));
                }
            }
        }
        let slot = self.slot.and_then(|addr| {
            let bytes = probe::peek(self.pid, addr, 8)?;
            Some(u64::from_ne_bytes(bytes.try_into().ok()?))
        });
        Stance {
            call: seen.map(call_key),
            counts,
            slot,
        }
    }

    /// The stance once the waiter sleeps in a call: a slice that timed out has it running for a
    /// moment, which is no change.
    fn settled(&self) -> Stance {
        let mut stance = self.stance();
        for _ in 0..20 {
            if stance.call.is_some() {
                break;
            }
            settle(self.pid);
            stance = self.stance();
        }
        stance
    }

    /// What changed between `before` and `after`, in words.
    fn changes(&self, before: &Stance, after: &Stance) -> Vec<String> {
        let mut changes = Vec::new();
        for ((what, was), (_, now)) in before.counts.iter().zip(&after.counts) {
            if was != now {
                let unit = if self.mechanism == "queues" {
                    " messages"
                } else {
                    ""
                };
                changes.push(format!("{what} went from {was} to {now}{unit}"));
            }
        }
        if let (Some(was), Some(now)) = (before.slot, after.slot)
            && was != now
        {
            changes.push(format!("the slot went from record {was} to record {now}"));
        }
        if before.call != after.call {
            changes.push(match probe::sample(self.pid) {
                Some(seen) => format!(
                    "it left its wait for {}",
                    probe::describe_call(self.pid, seen)
                ),
                None => "it left its wait".into(),
            });
        }
        changes
    }
}

/// When the wait `pid` sits in ends on its own, on CLOCK_REALTIME; `None` if it never does
/// (no deadline), `Some(ZERO)` if that is not known.
fn wait_ends(pid: i32) -> Option<Duration> {
    match probe::sample(pid) {
        Some(Seen::Futex { deadline, .. } | Seen::Receive { deadline, .. }) => match deadline {
            Deadline::Never => None,
            Deadline::Ahead(lead) => Some(realtime() + lead),
            _ => Some(Duration::ZERO),
        },
        _ => Some(Duration::ZERO),
    }
}

/// Interrupts the wait of `waiter`, whose peer is held, `DIRECT` times, one signal at a time:
/// after each, nothing may have changed and the deadline must be a slice after the signal;
/// after all, it must be a slice ahead. Returns
/// what was done, in words.
fn interrupt(waiter: &Waiter) -> Result<String, Fail> {
    let (pid, role, held) = (waiter.pid, waiter.role, waiter.held);
    settle(pid);
    let before = waiter.settled();
    if !matches!(
        probe::sample(pid),
        Some(Seen::Futex { .. } | Seen::Receive { .. })
    ) {
        // How it waits is waits-block's to judge; here the signals only go to it.
        for _ in 0..DIRECT {
            let _ = kill(Pid::from_raw(pid), Signal::SIGUSR1);
            settle(pid);
        }
        return Ok(format!("{role} was seen in no timed wait"));
    }
    // Its mask as it sits in the wait, SIGUSR1 aside (the signals below judge that one): any
    // signal it blocks there is held pending until the slice ends, its handler late and the
    // wait not interrupted.
    let usr1 = 1u64 << (Signal::SIGUSR1 as i32 - 1);
    let whole = inspect::signal_mask(pid, pid, SignalMask::Blocked).unwrap_or(0);
    let mask = whole & !usr1;
    if mask != 0
        && whole & usr1 == 0
        && matches!(
            probe::sample(pid),
            Some(Seen::Futex { .. } | Seen::Receive { .. })
        )
        && inspect::signal_mask(pid, pid, SignalMask::Blocked)
            .is_some_and(|again| again & mask != 0)
    {
        let shown = signal_names(mask);
        return Err(Fail::failed(format!(
            "the grader held {held} and looked at {role} as it sat in its timed wait ({}): it \
             blocked {shown} there (its signal mask, SigBlk in /proc/PID/task/TID/status). A \
             signal it blocks stays pending until the wait ends: its handler runs up to a slice \
             late, and it does not interrupt the wait (Ctrl-C, SIGTERM, SIGALRM, SIGCHLD act \
             only then). wait() must not block signals, not even around each timed wait: leave \
             the mask as it is",
            waiter.mechanism
        )));
    }
    let started = Instant::now();
    for sent in 1..=DIRECT {
        let mut ends = wait_ends(pid);
        if let Some(end) = ends.filter(|end| !end.is_zero())
            && end < realtime() + MARGIN
        {
            // Each signal comes early in a slice, so that a wait it ends cannot have timed out
            // instead: the moment it moved tells which, and the wait after it is a retry.
            std::thread::sleep(end.saturating_sub(realtime()) + Duration::from_millis(2));
            settle(pid);
            ends = wait_ends(pid);
        }
        let interrupted_deadline = probe::realtime_deadline(pid);
        // Its mask as it sits in the wait: a wait() that blocks signals around each timed wait
        // is never interrupted, and handles what came only once that wait has ended.
        let blocked_in_wait =
            matches!(
                probe::sample(pid),
                Some(Seen::Futex { .. } | Seen::Receive { .. })
            ) && inspect::has_signal(pid, pid, SignalMask::Blocked, Signal::SIGUSR1 as i32);
        // Its disposition as it sits in the wait: a SIGUSR1 set to SIG_IGN around the wait is
        // thrown away on arrival, its handler never runs and the wait is not interrupted.
        if inspect::has_signal(pid, pid, SignalMask::Ignored, Signal::SIGUSR1 as i32)
            && matches!(
                probe::sample(pid),
                Some(Seen::Futex { .. } | Seen::Receive { .. })
            )
            && inspect::has_signal(pid, pid, SignalMask::Ignored, Signal::SIGUSR1 as i32)
        {
            return Err(Fail::failed(format!(
                "the grader held {held} and, before sending SIGUSR1 (signal {sent} of {DIRECT}), \
                 looked at {role} as it sat in its timed wait ({}): {role} had set SIGUSR1 to be \
                 ignored (SIG_IGN: SigIgn in /proc/PID/status), though the program installs a \
                 handler for it, so the signal would be thrown away on arrival: its handler never \
                 runs and the wait is never interrupted (no EINTR). wait() must leave the \
                 signals' actions and mask as they are: the handler runs when its signal comes, \
                 and the wait it interrupts returns EINTR: wait again, with a deadline read anew",
                waiter.mechanism
            )));
        }
        let signalled_at = realtime();
        kill(Pid::from_raw(pid), Signal::SIGUSR1)
            .map_err(|e| Fail::Grader(format!("kill: {e}")))?;
        if blocked_in_wait
            && probe::pending(pid, Signal::SIGUSR1 as i32)
            && inspect::has_signal(pid, pid, SignalMask::Blocked, Signal::SIGUSR1 as i32)
            && matches!(
                probe::sample(pid),
                Some(Seen::Futex { .. } | Seen::Receive { .. })
            )
        {
            return Err(Fail::failed(format!(
                "the grader held {held} and sent SIGUSR1 (a handler installed, signal {sent} of \
                 {DIRECT}) to {role} as it sat in its timed wait ({}): {role} blocked SIGUSR1 \
                 there (its signal mask, SigBlk in /proc/PID/task/TID/status), so the signal \
                 stayed pending and the wait went on, to be handled only once that wait ended by \
                 itself. wait() must not block signals, not even around each timed wait: the \
                 handler runs when its signal comes, and the wait it interrupts returns EINTR: \
                 wait again, with a deadline read anew",
                waiter.mechanism
            )));
        }
        settle(pid);
        if probe::pending(pid, Signal::SIGUSR1 as i32)
            && inspect::has_signal(pid, pid, SignalMask::Blocked, Signal::SIGUSR1 as i32)
            && probe::alive(pid)
        {
            return Err(Fail::failed(format!(
                "the grader held {held} and sent SIGUSR1 (a handler installed, signal {sent} of \
                 {DIRECT}) to {role}, which was waiting: 2 s later the signal was still pending, \
                 not handled, and {role} blocked SIGUSR1 (its signal mask, SigBlk in \
                 /proc/PID/task/TID/status) ({}). wait() must not block signals: the handler \
                 runs when its signal comes, and the wait it interrupts returns EINTR: wait \
                 again, with a deadline read anew",
                waiter.mechanism
            )));
        }
        if let Some(was) = interrupted_deadline.filter(|was| *was > signalled_at)
            && !probe::pending(pid, Signal::SIGUSR1 as i32)
            && let Some(now) = probe::realtime_deadline(pid)
            && now < signalled_at + WAIT_SLICE
        {
            // The wait was under way when the signal came (its deadline was still ahead): the
            // wait after EINTR must read the clock after the signal.
            let how = if now == was {
                format!(
                    "with the same deadline as the wait the signal interrupted ({} after the \
                     signal)",
                    millis(was - signalled_at)
                )
            } else {
                format!(
                    "with a deadline only {} after the signal",
                    millis(now.saturating_sub(signalled_at))
                )
            };
            return Err(Fail::failed(format!(
                "the grader held {held} and interrupted {role}'s timed wait with SIGUSR1 (a \
                 handler installed, signal {sent} of {DIRECT}, {}); {role} waited again {how}, \
                 not a whole slice: after EINTR, read the clock anew and wait until now + \
                 WAIT_SLICE ({} ms)",
                waiter.mechanism,
                WAIT_SLICE.as_millis()
            )));
        }
        let mut after = waiter.settled();
        let moved_at = realtime();
        // Look again for a while: what moved for good is a change, a moment caught mid-call is
        // not, and a side that ends (a wait that failed, say) tells why in its report.
        for _ in 0..10 {
            if after == before || !probe::alive(pid) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
            settle(pid);
            after = waiter.settled();
        }
        if !probe::alive(pid) {
            return Ok(format!("{role} ended at signal {sent}"));
        }
        if after == before {
            continue;
        }
        let changes = waiter.changes(&before, &after).join(", ");
        // Its wait could not have timed out before it was seen moved: the signal ended it.
        let interrupted = ends.is_none_or(|ends| moved_at < ends);
        let (seen, rule) = if interrupted {
            (
                "as if the signal had come",
                "a wait that a signal handler interrupts (EINTR) has received nothing: wait \
                 again",
            )
        } else {
            (
                "without the signal, after a signal handler interrupted its wait or a slice \
                 timed out",
                "wait() returns only when the signal came; on EINTR, or ETIMEDOUT with the \
                 peer alive, it waits again",
            )
        };
        return Err(Fail::failed(format!(
            "the grader held {held}, which posted nothing, and interrupted {role}'s wait with \
             SIGUSR1 (a handler installed, signal {sent} of {DIRECT}); {role} went on {seen}: \
             {changes} ({}). {}",
            waiter.mechanism,
            upper_first(rule)
        )));
    }
    // The deadline of the wait it is back in: a slice ahead, not a slice per interruption.
    let lead = (0..3)
        .filter_map(|_| match probe::sample(pid) {
            Some(Seen::Futex { deadline, .. } | Seen::Receive { deadline, .. }) => Some(deadline),
            _ => None,
        })
        .filter_map(|deadline| match deadline {
            Deadline::Ahead(lead) => Some(lead),
            _ => None,
        })
        .max();
    if let Some(lead) = lead
        && lead > SLICE_LIMIT
    {
        return Err(Fail::failed(format!(
            "after the grader interrupted {role}'s wait {DIRECT} times with SIGUSR1 within {} \
             ({held} held), the deadline of its timed wait was {} ahead ({}): compute each \
             deadline from the clock, just before the wait, now + WAIT_SLICE ({} ms), also \
             after EINTR, not by pushing the last deadline on; a dead peer would be noticed \
             only that late",
            millis(started.elapsed()),
            millis(lead),
            waiter.mechanism,
            WAIT_SLICE.as_millis()
        )));
    }
    Ok(format!(
        "{role} waited on through {DIRECT} signals (deadline {} ahead)",
        lead.map_or("not seen".into(), millis)
    ))
}

fn upper_first(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// The record before which the producer is held in [`post_in_eintr`], and the rounds of that run.
const EINTR_HELD_AT: u64 = 10;
const EINTR_ROUNDS: u64 = 20;

/// Whether `pid` comes to be blocked (state S) in a futex within a second.
fn comes_to_futex(pid: i32) -> bool {
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        if probe::state(pid) == Some('S') && matches!(probe::sample(pid), Some(Seen::Futex { .. }))
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

/// Stops `pid` (`SIGSTOP`) and waits until it is stopped.
fn stopped(pid: i32) -> Result<bool, Fail> {
    force::hold(pid)?;
    let until = Instant::now() + Duration::from_secs(2);
    while probe::state(pid) != Some('T') {
        if Instant::now() >= until {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(true)
}

/// A signal that comes while a wait is interrupted: the grader stops the consumer in its timed
/// wait for ready (semaphores, a SIGUSR1 handler installed), lets the producer write record K,
/// post ready and block in its wait for ok, stops it there, then sends SIGUSR1 to the consumer
/// and lets it go on. Its wait returns `EINTR` with the ready semaphore at 1: wait() must wait
/// again, which takes the post (the semaphore back to 0). The consumer copies record K, posts
/// ok and waits for the next ready: with the producer stopped, the ok semaphore is at 1. A wait
/// that returned on `EINTR` without taking the post leaves ready at 1, so that the consumer's
/// next wait returns at once and posts ok a second time: ok at 2.
fn post_in_eintr(run: &mut Run) -> Result<String, Fail> {
    let at = EINTR_HELD_AT.to_string();
    let args = ["--interruptible", "--pause-producer-at", at.as_str()];
    let mut handover = Handover::start(run, "semaphores", EINTR_ROUNDS, &args)?;
    let (producer, consumer) = (handover.producer, handover.consumer);
    let mut note = "a post during EINTR not tried".to_string();
    let reports = handover.finish(|proc, _| {
        if !comes_to_futex(consumer) || !stopped(consumer)? {
            force::resume(consumer)?;
            return proc.send("go", &[]);
        }
        proc.send("go", &[])?;
        // The producer writes record K, posts ready (the consumer stopped, it stays at 1) and
        // blocks in its wait for ok.
        let posted =
            comes_to_futex(producer) && probe::semaphores_of(producer).iter().any(|&(_, v)| v == 1);
        if !posted || !stopped(producer)? {
            force::resume(producer)?;
            return force::resume(consumer);
        }
        kill(Pid::from_raw(consumer), Signal::SIGUSR1)
            .map_err(|e| Fail::Grader(format!("kill: {e}")))?;
        force::resume(consumer)?;
        // The consumer takes record K, posts ok, and waits for ready K+1, which does not come.
        let mut values = Vec::new();
        let until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < until && probe::alive(consumer) {
            if comes_to_futex(consumer) {
                std::thread::sleep(Duration::from_millis(5));
                if probe::state(consumer) == Some('S') {
                    values = probe::semaphores_of(producer);
                    break;
                }
            }
        }
        force::resume(producer)?;
        let most = values.iter().map(|&(_, v)| v).max().unwrap_or(0);
        if most >= 2 {
            return Err(Fail::failed(format!(
                "the grader stopped the consumer in its wait for ready before record \
                 {EINTR_HELD_AT} (semaphores, a SIGUSR1 handler installed), let the producer \
                 write the record, post ready and block in its wait for ok, stopped the producer \
                 there, and interrupted the consumer's wait with SIGUSR1 (EINTR, the ready \
                 semaphore at 1): the consumer then posted ok twice for that one ready (the ok \
                 semaphore at {most}, the producer still stopped): the consumer went on as if the \
                 signal had come, its wait returned on EINTR without taking the post, so that \
                 its next wait found it still there. A wait \
                 that a signal handler interrupts has received nothing, even when the signal is \
                 there meanwhile: wait again, and the wait takes it (looking at the value, \
                 sem_getvalue() or mq_getattr(), takes nothing)"
            )));
        }
        note = if values.is_empty() {
            "the consumer was not seen back in its wait after EINTR".into()
        } else {
            format!(
                "semaphores, ready posted while the consumer's wait was interrupted: taken once \
                 (ok at {most})"
            )
        };
        Ok(())
    })?;
    handover.verify(
        &reports,
        &format!("{EINTR_ROUNDS} rounds with semaphores, a post during EINTR"),
    )?;
    Ok(note)
}

pub fn signals_during_waits(run: &mut Run) -> Result<String, Fail> {
    // First: a wait that returns on EINTR without taking a post made meanwhile breaks the
    // protocol later, under the storm of signals below, where a failure names no cause.
    let mut notes = vec![post_in_eintr(run)?, mask_between_slices(run)?];
    for mechanism in ["semaphores", "queues"] {
        let (first, second) = (PRODUCER_HELD_AT.to_string(), CONSUMER_HELD_AT.to_string());
        let args = [
            "--interruptible",
            "--pause-producer-at",
            &first,
            "--pause-consumer-at",
            &second,
        ];
        let mut handover = Handover::start(run, mechanism, ROUNDS, &args)?;
        let (producer, consumer, seed) = (handover.producer, handover.consumer, handover.seed);
        let group = handover.proc.pid.as_raw();
        let [ready, ok] = handover.names.clone();
        let mut storm: Option<Storm> = None;
        let mut seen = Vec::new();
        let reports = handover.finish(|proc, paused| {
            if let Some(storm) = &storm {
                storm.quiet(true);
            }
            // The side that waits for the held one, the record in the slot, what it waits on.
            let waiter = if paused == producer {
                let slot = expected_record(seed, PRODUCER_HELD_AT - 1);
                Waiter {
                    pid: consumer,
                    role: CONSUMER,
                    held: PRODUCER,
                    mechanism,
                    waits_on: &ready,
                    posts: &ok,
                    slot: slot_holding(consumer, &slot, Duration::from_secs(1)),
                }
            } else {
                let slot = expected_record(seed, CONSUMER_HELD_AT);
                Waiter {
                    pid: producer,
                    role: PRODUCER,
                    held: CONSUMER,
                    mechanism,
                    waits_on: &ok,
                    posts: &ready,
                    slot: slot_holding(producer, &slot, Duration::from_secs(1)),
                }
            };
            seen.push(interrupt(&waiter)?);
            // Then signals for everyone, every millisecond, from here on.
            match &storm {
                Some(storm) => storm.quiet(false),
                None => storm = Some(Storm::start(group)),
            }
            proc.send("go", &[])
        });
        let sent = storm.map_or(0, Storm::stop);
        let reports = reports?;
        handover.verify(
            &reports,
            &format!("{ROUNDS} rounds with {mechanism} under signals"),
        )?;
        notes.push(format!(
            "{mechanism}: {}; {sent} signals to both sides",
            seen.join(", ")
        ));
    }
    for mechanism in ["semaphores", "queues"] {
        let actions = super::dispositions::wait_keeps_signal_actions(run, mechanism)?;
        notes.push(actions);
    }
    // Last: what it establishes (the signal held back) the steps above name more precisely.
    for mechanism in ["semaphores", "queues"] {
        notes.push(default_action::mid_wait(run, mechanism)?);
    }
    Ok(format!(
        "{ROUNDS} records intact each way; {}",
        notes.join("; ")
    ))
}

/// The consumer's blocked signals between two slices: the grader starts the program with its
/// vDSO hidden (each clock read a system call), holds the producer before a record, so that the
/// consumer's slices time out, and holds the consumer at the entry of the `kill(producer, 0)` by
/// which `Peer::gone()` asks after its peer once a slice has timed out, then as its next
/// `CLOCK_REALTIME` read, for the next slice's deadline, returns. Its mask at both must be the
/// one it waits with, the one `main.rs` set: a wait that blocks signals for its whole length, or
/// only while it reads the clock, keeps a signal that comes then pending, and its handler runs
/// late, at the next unblocking.
fn mask_between_slices(run: &mut Run) -> Result<String, Fail> {
    let names = [run.ipc_name("ready"), run.ipc_name("ok")];
    let extra = ["--interruptible", "--pause-producer-at", "20"];
    let (launch, _) = super::clock::launch_without_vdso(run, "semaphores", names, 100, &extra)?;
    let mut handover = launch.ready()?;
    let (producer, consumer) = (handover.producer, handover.consumer);
    let mut blocked = None;
    let mut held_at = Vec::new();
    let reports = handover.finish(|proc, _| {
        // The mask it waits with, read while it sits in its wait.
        let during = super::forced_waits::waiting_in(consumer)
            .and_then(|_| inspect::signal_mask(consumer, consumer, SignalMask::Blocked));
        let asks = Call::arg_is(libc::SYS_kill, 0, producer as u64);
        let read = Call::arg_is(libc::SYS_clock_gettime, 0, libc::CLOCK_REALTIME as u64);
        let steps = [(asks, Step::Hold), (read, Step::HoldAfter)];
        if let (Some(during), Some(mut tracer)) = (during, Tracer::in_turn(consumer, steps)?) {
            for place in [BETWEEN_AT_PEER, BETWEEN_AT_CLOCK] {
                if !tracer.held_before(Instant::now() + WAIT_SLICE * 20)? {
                    break;
                }
                held_at.push(place);
                let more = inspect::signal_mask(consumer, consumer, SignalMask::Blocked)
                    .map_or(0, |mask| mask & !during);
                if more != 0 && blocked.is_none() {
                    blocked = Some((place, during, more));
                }
                tracer.go_on();
            }
            tracer.release();
        }
        proc.send("go", &[])
    })?;
    if let Some((place, during, more)) = blocked {
        return Err(Fail::failed(format!(
            "the grader held the producer before record 20 and the consumer {place}: there \
             the consumer blocked {} (SigBlk {:#x}), which it did not block in its timed wait \
             (SigBlk {during:#x}) nor main.rs set: wait() blocks signals between its slices, \
             so that one coming then stays pending, and its handler runs only once wait() \
             unblocks it, late. Signals stay unblocked for the whole wait, also while it reads \
             the clock: do not block them around any part of it",
            signal_names(more),
            during | more
        )));
    }
    handover.verify(
        &reports,
        "100 rounds with semaphores, the consumer held between slices",
    )?;
    Ok(if held_at.is_empty() {
        "the consumer was not held between slices".into()
    } else {
        format!(
            "{}, the consumer's mask was the one it waits with",
            held_at.join(" and ")
        )
    })
}

/// Where [`mask_between_slices`] holds the consumer.
const BETWEEN_AT_PEER: &str =
    "at its kill(producer, 0), the Peer::gone() it asks after a timed-out slice";
const BETWEEN_AT_CLOCK: &str =
    "as its clock read (CLOCK_REALTIME) for the next slice's deadline returned";
