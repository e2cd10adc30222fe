//! How a side waits for the other: blocked in the kernel on the signal (the named semaphore's
//! futex, the queue), in timed slices of `WAIT_SLICE`, for as long as the other side lives
//! (once it is gone: `peer_gone.rs`).
//!
//! The grader holds one side (it pauses at a record and waits for `go`), so that the other has
//! nothing to do, and looks at the waiting one from outside: its CPU use and wake-ups
//! (`engine::waiting`), the call it sits in and that call's arguments
//! (`/proc/PID/task/TID/syscall`), and the deadline of the timed wait, read from its memory.

use std::time::{Duration, Instant};

use rand::RngExt;

use super::eintr_straight_back;
use super::forced_waits;
use super::handover::{Handover, expected_record};
use super::probe::{self, Deadline, Samples, Seen};
use super::slot::slot_holding;
use super::watchpoints;
use super::{CONSUMER, PRODUCER, WAIT_SLICE};
use crate::engine::inspect::{self, ProcessView};
use crate::engine::tracer::{Breakpoint, Tracer};
use crate::engine::waiting::{self, WaitRules};
use crate::engine::{Fail, Run, force};

/// How long the grader holds the consumer in the semaphore run: twenty slices. A patience
/// counted in slices meets the 500 slices made to time out at once, one read from a clock the
/// clocks the grader moves; the hold is for one kept by a kernel timer (`alarm()`, a timerfd).
const LONG_HOLD: Duration = Duration::from_secs(2);
/// How often the grader looks at the slot while it holds the consumer.
const SLOT_LOOKS: Duration = Duration::from_millis(200);
/// Successive timed waits closer than this are not slices of `WAIT_SLICE`: each deadline is
/// read from the clock after the last one passed, so a correct gap is never under 100 ms.
const SHORTEST_SLICE: Duration = Duration::from_millis(90);
/// How long the grader samples the call a waiting side sits in.
const WATCH: Duration = Duration::from_millis(450);
/// A deadline further ahead than this is not a slice of `WAIT_SLICE` (100 ms).
pub const SLICE_LIMIT: Duration = Duration::from_millis(250);
/// A correct timed wait wakes once a slice (10 times a second); polling wakes far more often.
const RULES: WaitRules = WaitRules {
    wakeups_per_second: 25.0,
    timeouts: true,
};
/// CPU time a side waiting for 0.4 s may use: a blocked wait wakes ten times a second for a few
/// microseconds; a spinning one, even with a twentieth of a CPU, uses 20 ms.
const BUSY_CPU: Duration = Duration::from_millis(20);
/// How many more times the grader looks at a waiting side, stopping it if it is not asleep.
const STOPS: usize = 8;
/// A blocked side is asleep but for a few microseconds a slice; one that is runnable at more
/// than half the looks does not block, however little of a CPU a loaded machine gives it.
const RUNNABLE_SHARE: f64 = 0.5;
/// A deadline seen past by more than this, twice the same, was used again after it had passed:
/// a wait that has just timed out shows its deadline past only by the time it waits for a CPU.
const PAST_SLACK: Duration = Duration::from_millis(200);
/// How long a survivor may take to notice that the other side was killed: it needs a slice
/// (100 ms) and its parent's waitpid(); thirty slices leave room for a loaded machine.
pub(super) const NOTICE_LIMIT: Duration = Duration::from_secs(3);

const ADVICE: &str = "block in sem_timedwait() or mq_timedreceive() until the other side posts, \
                      with a deadline of now + WAIT_SLICE computed before each slice; a loop \
                      around sem_trywait() or a non-blocking receive, or a deadline already \
                      past, returns at once instead of blocking";

/// The CPU time all threads of `pid` have used so far.
fn cpu_time(pid: i32) -> Duration {
    Duration::from_nanos(inspect::thread_times(pid).values().map(|t| t.run_ns).sum())
}

/// A duration in milliseconds, or in microseconds below one: "100 µs", "1250 ms".
pub fn millis(duration: Duration) -> String {
    if duration < Duration::from_millis(1) {
        format!("{} µs", duration.as_micros())
    } else {
        format!("{} ms", duration.as_millis())
    }
}

/// What the signal the waiter should wait on is: the ok semaphore, the ready queue, ...
fn signal(mechanism: &str, name: &str) -> String {
    let what = if mechanism == "semaphores" {
        "semaphore"
    } else {
        "queue"
    };
    format!("the {what} {name}")
}

/// Why a side that should have been blocked was not, when the samples tell: a timed wait whose
/// deadline is already past, or only a moment ahead, returns at once or almost.
fn explain_busy(waiter: i32, role: &str, fail: Fail, passive: &Samples) -> Fail {
    // A deadline behind the clock is the most specific cause: looked for first, in the samples
    // and then by reading every wait's deadline, before how the waiting looked, which on a
    // loaded machine may show only the spinning it causes.
    let past = |samples: &Samples| {
        samples.past(PAST_SLACK).map(|by| {
            if by > probe::FAR_PAST {
                far_past_deadline(role, by)
            } else {
                format!(
                    "{role} did not block while it waited for the other side (held by the \
                     grader): its timed wait was called again and again with a deadline already \
                     {} ms in the past, which returns ETIMEDOUT at once. Compute the deadline \
                     for each slice, just before the timed wait: now + WAIT_SLICE",
                    by.as_millis()
                )
            }
        })
    };
    let looks = |samples: &Samples| {
        let leads = samples.leads();
        if leads.len() >= 2 && leads[0] < WAIT_SLICE / 5 {
            Some(format!(
                "{role} woke up again and again while it waited for the other side (held by the \
                 grader): its timed waits were at most {} long (the deadline at most that far \
                 ahead). Wait in slices of WAIT_SLICE ({} ms): now + WAIT_SLICE",
                millis(leads[0]),
                WAIT_SLICE.as_millis()
            ))
        } else if samples.seen.iter().filter(|s| **s == Seen::Sleep).count() >= 2 {
            // On a loaded machine a side that sleeps a moment between looks is mostly waiting
            // for a CPU, which looks like spinning: nanosleep() tells them apart.
            Some(format!(
                "{role} did not block while it waited for the other side (held by the grader): \
                 the grader found it in nanosleep() again and again (sleeping (nanosleep) between \
                 looks): it polls, trying the signal and sleeping, instead of blocking; {ADVICE}"
            ))
        } else if samples.waits().next().is_none() && samples.outside >= 6 {
            Some(format!(
                "{role} did not block while it waited for the other side (held by the grader): \
                 each of the {} times the grader stopped it, it was running its own code, in no \
                 system call: it spins (a loop around sem_trywait() or a non-blocking \
                 receive?); {ADVICE}",
                samples.outside
            ))
        } else {
            None
        }
    };
    // Read at each wait's entry, the deadlines are certain; seen in passing, a deadline past by
    // a moment may be one that timed out while its side waited for a CPU. So the passive
    // samples explain only where the entries could not be read.
    let traced = forced_waits::every_deadline(waiter, role);
    let entries_read = matches!(traced, Ok(ref found) if found.read > 0);
    let traced = || match traced {
        Err(Fail::Failed(message)) => Some(message),
        _ => None,
    };
    let past = |samples: &Samples| (!entries_read).then(|| past(samples)).flatten();
    let far_past = passive
        .past(PAST_SLACK)
        .filter(|by| *by > probe::FAR_PAST)
        .map(|by| far_past_deadline(role, by));
    let message = far_past
        .or_else(traced)
        .or_else(|| past(passive))
        .or_else(|| looks(passive))
        .or_else(|| {
            let stopped = probe::watch_stopped(waiter, 12);
            past(&stopped).or_else(|| looks(&stopped))
        });
    message.map_or(fail, Fail::failed)
}

/// A deadline `by` behind the clock, hours: a duration or a time on another clock taken for
/// an absolute `CLOCK_REALTIME` time.
pub(super) fn far_past_deadline(role: &str, by: Duration) -> String {
    format!(
        "{role} did not block while it waited for the other side (held by the grader): its \
         timed wait was called again and again with a deadline {} hours in the past, which \
         returns ETIMEDOUT at once. The deadline is an absolute time on CLOCK_REALTIME: \
         clock_gettime(CLOCK_REALTIME) + WAIT_SLICE, not a duration or a time on another clock",
        by.as_secs() / 3600
    )
}

/// How many times all threads of `pid` went to sleep so far (voluntary context switches).
fn sleeps(pid: i32) -> u64 {
    inspect::thread_times(pid).values().map(|t| t.sleeps).sum()
}

/// `role` waited on a futex at `addr` that lies in none of the named semaphores (`maps` are its
/// mappings); it went to sleep `woke` times in `watched`.
fn foreign_futex(
    role: &str,
    addr: u64,
    maps: &[probe::Mapping],
    woke: u64,
    watched: Duration,
) -> Fail {
    let place = maps
        .iter()
        .find(|m| m.contains(addr))
        .map(|m| match m.path.as_str() {
            "/dev/zero (deleted)" => "a shared anonymous mapping".to_string(),
            "" => "anonymous memory of its own".to_string(),
            "[heap]" | "[stack]" => format!("memory of its own ({})", m.path),
            path => path.to_string(),
        })
        .unwrap_or_else(|| "no mapping".into());
    // A correct wait wakes once a slice.
    let slices = (watched.as_millis() / WAIT_SLICE.as_millis()) as u64 + 1;
    let polls = if 2 * woke > 3 * slices {
        format!(
            "; it woke up {woke} times in {} meanwhile, far more than once a slice: it naps \
             there (std::thread::park_timeout, a Condvar's timed wait, ...), so that it can only \
             learn of a post by looking at the semaphore again after each nap, which is polling",
            millis(watched)
        )
    } else {
        String::new()
    };
    Fail::failed(format!(
        "{role} waited for the other side (held by the grader) on a futex at {addr:#x}, in \
         {place}, not in one of the named semaphores sem_open() mapped from /dev/shm{polls}: the \
         signals must be the named semaphores (post and wait on what sem_open() returned), and \
         a wait blocks on the semaphore itself, in sem_timedwait()"
    ))
}

/// Successive timed waits of `role` must be a slice apart: a deadline `WAIT_SLICE` after the
/// clock read once the last one passed.
fn judge_slices(role: &str, samples: &Samples) -> Result<(), Fail> {
    match samples.shortest_slice() {
        Some(gap) if gap < SHORTEST_SLICE => Err(Fail::failed(format!(
            "{role} waited in slices of about {} (the deadlines of two successive timed waits \
             were that far apart, read from its memory at each wait), not of WAIT_SLICE ({} \
             ms): each deadline is now + WAIT_SLICE",
            millis(gap),
            WAIT_SLICE.as_millis()
        ))),
        _ => Ok(()),
    }
}

/// Watches `waiter` (`role`), which has nothing to do but wait on `name`, and judges how it
/// waits; returns what it saw. A waiter that ends meanwhile is left to the reports.
fn judge_wait(
    waiter: i32,
    role: &'static str,
    mechanism: &str,
    name: &str,
) -> Result<String, Fail> {
    let started = Instant::now();
    let before = cpu_time(waiter);
    let slept_before = sleeps(waiter);
    // Read first: a side that gives up while it is watched leaves no mappings to read.
    let maps = probe::mappings(waiter);
    let watcher = std::thread::spawn(move || probe::watch(waiter, started + WATCH));
    let roles = move |_: &ProcessView| role.to_string();
    let blocked = waiting::expect_blocked(&[waiter], &roles, RULES, ADVICE);
    let mut samples = watcher
        .join()
        .map_err(|_| Fail::Grader("the sampling thread panicked".into()))?;
    let used = cpu_time(waiter).saturating_sub(before);
    let watched = started.elapsed();
    if !probe::alive(waiter) {
        return Ok(format!("{role} ended while it waited"));
    }
    // A futex of its own, never the named semaphore's: what it sleeps in tells more than how
    // often it wakes.
    if mechanism == "semaphores" {
        let woke = sleeps(waiter).saturating_sub(slept_before);
        let named = |addr: u64| maps.iter().any(|m| m.named_semaphore() && m.contains(addr));
        let futexes: Vec<u64> = samples
            .seen
            .iter()
            .filter_map(|seen| match *seen {
                Seen::Futex { addr, .. } => Some(addr),
                _ => None,
            })
            .collect();
        if let Some(&addr) = futexes.first()
            && !futexes.iter().any(|&addr| named(addr))
        {
            return Err(foreign_futex(role, addr, &maps, woke, started.elapsed()));
        }
    }
    if let Err(fail) = blocked {
        return Err(explain_busy(waiter, role, fail, &samples));
    }
    // On a loaded machine a spinning side may get too little of a CPU to show: stopped now and
    // then, a blocked side is always found in its wait, and a deadline already past shows.
    samples.merge(probe::watch_stopped(waiter, STOPS));
    let runnable = samples.runnable_share();
    let busy = used > BUSY_CPU || runnable > RUNNABLE_SHARE || samples.outside >= 3;
    // A deadline seen past in passing may have timed out while its side waited for a CPU: read
    // at the waits' entries, the deadlines say whether it was reused.
    let reused_deadline = || match samples.past(PAST_SLACK) {
        None => Ok(false),
        Some(by) if by > probe::FAR_PAST => Ok(true),
        Some(_) => forced_waits::every_deadline(waiter, role).map(|found| found.read == 0),
    };
    if busy || reused_deadline()? {
        let fail = Fail::failed(format!(
            "{role} used {} ms of CPU in {} ms while it had nothing to do, and was runnable \
             (on a CPU or waiting for one) at {:.0}% of the grader's looks: it does not block; \
             {ADVICE}",
            used.as_millis(),
            watched.as_millis(),
            runnable * 100.0
        ));
        return Err(explain_busy(waiter, role, fail, &samples));
    }
    let signal = signal(mechanism, name);
    let waits: Vec<(Seen, Deadline)> = samples.waits().collect();
    if waits.is_empty() {
        return match samples.seen.first() {
            Some(&seen) => {
                let call = probe::describe_call(waiter, seen);
                let rule = if call.contains(&format!("({name}")) {
                    "the wait on a signal is a timed wait on it (sem_timedwait, mq_timedreceive) \
                     in slices of now + WAIT_SLICE, asking Peer::gone() when a slice times out"
                } else {
                    "the signals are the named semaphores or the queues, not a channel of the \
                     program's own; wait on them (sem_timedwait, mq_timedreceive)"
                };
                Err(Fail::failed(format!(
                    "{role} waited for the other side (held by the grader) in {call}, not in a \
                     timed wait on {signal}: {rule}"
                )))
            }
            None => Ok(format!("{role} blocked")),
        };
    }
    if samples.untimed() {
        return Err(Fail::failed(format!(
            "{role} waited for the other side with no deadline (a plain sem_wait() or \
             mq_receive()): were the other side to die, it would wait for ever. Wait in slices: \
             sem_timedwait() or mq_timedreceive() with a deadline of now + WAIT_SLICE, and when \
             a slice times out, give up if Peer::gone() says so"
        )));
    }
    let leads = samples.leads();
    if let Some(lead) = leads.get(1)
        && *lead > SLICE_LIMIT
    {
        return Err(Fail::failed(format!(
            "{role} waited in slices of {} ms or more (its deadline was that far ahead), not of \
             WAIT_SLICE ({} ms): a dead peer is then noticed only that late. Use now + \
             WAIT_SLICE as the deadline of each slice",
            leads[0].as_millis(),
            WAIT_SLICE.as_millis()
        )));
    }
    judge_slices(role, &samples)?;
    for (seen, _) in &waits {
        match *seen {
            Seen::Futex {
                addr, monotonic, ..
            } if mechanism == "semaphores" => {
                if !maps.iter().any(|m| m.named_semaphore() && m.contains(addr)) {
                    let woke = sleeps(waiter).saturating_sub(slept_before);
                    return Err(foreign_futex(role, addr, &maps, woke, started.elapsed()));
                }
                if monotonic {
                    return Err(Fail::failed(format!(
                        "{role} waited on {signal} with a deadline on CLOCK_MONOTONIC (its futex \
                         wait had no FUTEX_CLOCK_REALTIME, as sem_clockwait(CLOCK_MONOTONIC) \
                         makes), not on CLOCK_REALTIME: the wait is sem_timedwait() with an \
                         absolute CLOCK_REALTIME deadline, now + WAIT_SLICE"
                    )));
                }
            }
            Seen::Receive { fd, .. } if mechanism == "queues" => {
                let target = probe::descriptor(waiter, fd);
                if target != format!("{name} (deleted)") && target != name {
                    return Err(Fail::failed(format!(
                        "{role} waited in mq_timedreceive() on descriptor {fd} ({target}), not \
                         on {signal}"
                    )));
                }
            }
            other => {
                return Err(Fail::failed(format!(
                    "{role} waited for the other side in {}, not in a timed wait on {signal}",
                    probe::describe_call(waiter, other)
                )));
            }
        }
    }
    let lead = leads.first().copied().unwrap_or_default();
    Ok(format!(
        "{role} blocked on {signal}, in slices (deadline at most {} ms ahead)",
        lead.as_millis()
    ))
}

/// How long the grader waits for a semaphore wait of the C library once its breakpoints are set:
/// a wait in slices starts one every `WAIT_SLICE`.
const C_LIBRARY_WAIT: Duration = Duration::from_millis(1000);

/// A side that sits in timed futex waits on a semaphore makes them through the C library's
/// semaphore wait: hardware breakpoints at the entries of `sem_timedwait()` and `sem_clockwait()`
/// in `waiter` (its peer held, its slices timing out) must be hit within a few slices. A wait
/// that makes the futex calls itself, on the C library's private `sem_t` layout, looks the same
/// from the kernel's side.
fn waits_in_the_c_library(waiter: i32, role: &str) -> Result<String, Fail> {
    let timed = |seen: Option<Seen>| matches!(seen, Some(Seen::Futex { deadline, .. }) if deadline != Deadline::Never);
    if !timed(forced_waits::waiting_in(waiter)) {
        return Ok(format!(
            "{role}'s semaphore waits not watched (in no timed futex wait)"
        ));
    }
    let both = Tracer::break_at_functions(waiter, &[c"sem_timedwait", c"sem_clockwait"])?;
    // A C library without sem_clockwait() (before glibc 2.30).
    let tracer = match both {
        Some(tracer) => Some(tracer),
        None => Tracer::break_at_functions(waiter, &[c"sem_timedwait"])?,
    };
    let Some(mut tracer) = tracer else {
        return Ok(format!(
            "{role}'s semaphore waits not watched (no breakpoint)"
        ));
    };
    let until = Instant::now() + C_LIBRARY_WAIT;
    let mut armed = false;
    let hit = loop {
        match tracer.next_break(until)? {
            Some(Breakpoint::Armed) => armed = true,
            Some(Breakpoint::At(_)) => break true,
            Some(Breakpoint::Lost | Breakpoint::Unavailable) => break false,
            None if Instant::now() >= until => break false,
            None => {}
        }
    };
    drop(tracer);
    if armed && !hit && probe::alive(waiter) && timed(forced_waits::waiting_in(waiter)) {
        return Err(Fail::failed(format!(
            "{role}, waiting (the other side held), sat in timed futex waits on the semaphore, \
             but in {} with breakpoints at the entries of the C library's sem_timedwait() and \
             sem_clockwait() it called neither: wait() makes the futex calls itself, on the C \
             library's private sem_t layout (its value, its count of waiters), which that \
             library may change. The timed wait on a semaphore is sem_timedwait(sem, \
             deadline)",
            millis(C_LIBRARY_WAIT)
        )));
    }
    Ok(format!(
        "{role} waited through the C library's {}",
        if hit {
            "semaphore wait"
        } else {
            "semaphore wait (not seen)"
        }
    ))
}

pub fn waits_block(run: &mut Run) -> Result<String, Fail> {
    let mut notes = Vec::new();
    // Semaphores: the consumer is held for twenty slices; the producer waits for ok.
    let at = run.rng().random_range(20..80u64).to_string();
    let mut handover = Handover::start(run, "semaphores", 100, &["--pause-consumer-at", &at])?;
    let (producer, ok, seed) = (handover.producer, handover.names[1].clone(), handover.seed);
    let consumer = handover.consumer;
    let seq: u64 = at.parse().expect("a number");
    let reports = handover.finish(|proc, _| {
        let held = Instant::now();
        let record = expected_record(seed, seq);
        let slot = slot_holding(producer, &record, Duration::from_secs(1));
        // The consumer posts no ok: the producer must go on waiting, record K in the slot.
        let slot_moved = || match slot
            .and_then(|slot| probe::peek(producer, slot, record.len()))
            .filter(|now| *now != record)
        {
            Some(now) => {
                let moved = u64::from_ne_bytes(now[..8].try_into().expect("8 bytes"));
                Err(Fail::failed(format!(
                    "while the consumer was held before record {seq} (it posted no ok), the \
                     producer went on and wrote record {moved} into the slot: its wait(ok) \
                     returned without an ok. Return from wait() only when the signal came; a \
                     slice that times out means wait again, or PeerGone if the peer is gone"
                )))
            }
            None => Ok(()),
        };
        notes.push(judge_wait(producer, PRODUCER, "semaphores", &ok)?);
        notes.push(waits_in_the_c_library(producer, PRODUCER)?);
        slot_moved()?;
        notes.push(forced_waits::every_deadline(producer, PRODUCER)?.note);
        slot_moved()?;
        notes.push(forced_waits::many_timeouts(
            proc,
            producer,
            PRODUCER,
            (CONSUMER, consumer),
        )?);
        slot_moved()?;
        notes.push(forced_waits::many_interruptions(
            proc, producer, PRODUCER, CONSUMER,
        )?);
        slot_moved()?;
        notes.push(eintr_straight_back::waits_again_at_once(
            producer, PRODUCER, CONSUMER,
        )?);
        slot_moved()?;
        let mut rest = Samples::default();
        while held.elapsed() < LONG_HOLD {
            rest.merge(probe::watch(producer, Instant::now() + SLOT_LOOKS));
            slot_moved()?;
            if !probe::alive(producer) {
                break;
            }
        }
        judge_slices(PRODUCER, &rest)?;
        std::thread::sleep(LONG_HOLD.saturating_sub(held.elapsed()));
        proc.send("go", &[])
    })?;
    handover.verify(&reports, "100 rounds with semaphores, the consumer held")?;
    // Queues: the producer is held; the consumer waits for ready.
    let at = run.rng().random_range(20..80u64).to_string();
    let mut handover = Handover::start(run, "queues", 100, &["--pause-producer-at", &at])?;
    let (consumer, ready) = (handover.consumer, handover.names[0].clone());
    let reports = handover.finish(|proc, _| {
        notes.push(judge_wait(consumer, CONSUMER, "queues", &ready)?);
        notes.push(eintr_straight_back::waits_again_at_once(
            consumer, CONSUMER, PRODUCER,
        )?);
        proc.send("go", &[])
    })?;
    handover.verify(&reports, "100 rounds with queues, the producer held")?;
    notes.push(put_waits_for_last_ok(run)?);
    notes.push(super::bench_rounds::bench_put_waits_for_ok(run)?);
    notes.push(first_deadline_fresh(run)?);
    notes.push(watchpoints::spins_before_blocking(run)?);
    notes.push(super::ready_looks::consumer_spins_before_blocking(run)?);
    notes.push(super::queue_looks::queue_waits_do_not_look(run)?);
    notes.push(watchpoints::consumer_polls_slot(run)?);
    notes.push(super::clock::deadline_edges(run)?);
    notes.push(super::clock_reads::every_wait_reads_the_clock(run)?);
    Ok(format!(
        "{}; the producer waited {} ms for the held consumer without giving up",
        notes.join("; "),
        LONG_HOLD.as_millis()
    ))
}

/// Rounds of the run whose last record the consumer is held before.
const LAST_HELD_ROUNDS: u64 = 20;
/// How long the consumer is held at least before the last record: the producer has no later
/// put() to wait for the ok in, so one that returns without it says done and ends.
const LAST_HOLD: Duration = Duration::from_millis(300);

/// put() returns only once the consumer has posted ok for its record: with the consumer held
/// before the last record, the producer must still be in put().
fn put_waits_for_last_ok(run: &mut Run) -> Result<String, Fail> {
    let last = LAST_HELD_ROUNDS - 1;
    let at = last.to_string();
    let mut handover = Handover::start(
        run,
        "semaphores",
        LAST_HELD_ROUNDS,
        &["--pause-consumer-at", &at],
    )?;
    let producer = handover.producer;
    let mut producer_left = false;
    let reports = handover.finish(|proc, _| {
        // Held until the producer is gone, or is seen, the hold past, in a timed wait.
        let held = Instant::now();
        while held.elapsed() < NOTICE_LIMIT {
            if !probe::alive(producer) {
                producer_left = true;
                break;
            }
            let waiting = matches!(
                probe::sample(producer),
                Some(Seen::Futex {
                    deadline: Deadline::Ahead(_),
                    ..
                })
            );
            if waiting && held.elapsed() >= LAST_HOLD {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        proc.send("go", &[])
    })?;
    if producer_left && handover.said_done("producer") {
        return Err(Fail::failed(format!(
            "while the grader held the consumer before the last record ({last}; it had neither \
             taken it nor posted ok), the producer said done and exited: its put() of record \
             {last} returned without the consumer's ok. put() writes the record, posts ready, \
             then waits for ok, and returns only once the ok came"
        )));
    }
    handover.verify(
        &reports,
        &format!("{LAST_HELD_ROUNDS} rounds with semaphores, the last record held"),
    )?;
    Ok("the producer stayed in put() while the consumer was held before the last record".into())
}

/// How long the grader holds the producer between two of its wait() calls: less than a slice,
/// so that a deadline kept from the last call's slice would still be ahead of the clock.
const BETWEEN_WAITS: Duration = Duration::from_millis(30);

/// How far below `go` + WAIT_SLICE a fresh deadline may be: a program that rounds the time to
/// the millisecond on its way.
const FRESH_MARGIN: Duration = Duration::from_millis(1);

/// The first slice of each wait() reads the clock too: the grader holds the producer before
/// record K (between its wait(ok) for record K-1 and the next one) for less than a slice, stops
/// the consumer so that no ok comes, reads the clock, lets the producer go and reads the
/// deadline of the timed wait it comes to: at least that clock + WAIT_SLICE. A deadline kept
/// from an earlier slice, or read before this wait() began, is short by the hold.
fn first_deadline_fresh(run: &mut Run) -> Result<String, Fail> {
    let at = run.rng().random_range(5..20u64);
    let held = at.to_string();
    let extra = ["--pause-producer-at", held.as_str()];
    let mut handover = Handover::start(run, "semaphores", at + 5, &extra)?;
    let (producer, consumer) = (handover.producer, handover.consumer);
    let mut note = "the producer's first deadline of a wait() not seen".to_string();
    let reports = handover.finish(|proc, _| {
        force::hold(consumer)?;
        std::thread::sleep(BETWEEN_WAITS);
        let go = forced_waits::realtime();
        proc.send("go", &[])?;
        let deadline =
            forced_waits::waiting_in(producer).and_then(|_| probe::realtime_deadline(producer));
        force::resume(consumer)?;
        let Some(deadline) = deadline else {
            return Ok(());
        };
        if deadline + FRESH_MARGIN < go + WAIT_SLICE {
            let short = go + WAIT_SLICE - deadline;
            // A deadline kept from before the hold is short by about the hold, or more.
            let cause = if short < BETWEEN_WAITS / 2 {
                format!(
                    "short by {}, less than the hold: the clock was read for this wait(), but \
                     either from a clock that lags (CLOCK_REALTIME_COARSE, which lags the time \
                     by a tick, 4 ms, or more) or a moment earlier (before a step that comes \
                     first, such as the post). Read CLOCK_REALTIME itself, right before the \
                     timed wait",
                    millis(short)
                )
            } else {
                "that deadline was not read from the clock when this wait() began (one kept \
                 from an earlier slice or call, or read before)"
                    .to_string()
            };
            return Err(Fail::failed(format!(
                "the grader held {PRODUCER} before record {at}, between two of its wait() calls, \
                 for {} ms (less than a slice), stopped the consumer so that no ok came, and \
                 let the producer go: the timed wait it then sat in, the first slice of its \
                 wait(ok), had a deadline {} after the clock at that go, not a whole slice \
                 ({} ms): {cause}. Read the clock before every timed wait, the first of each \
                 wait() too: now + WAIT_SLICE",
                BETWEEN_WAITS.as_millis(),
                if deadline > go {
                    millis(deadline - go)
                } else {
                    format!("-{}", millis(go - deadline))
                },
                WAIT_SLICE.as_millis()
            )));
        }
        note = format!(
            "the first deadline of a wait() after a {} ms hold was a slice after the clock",
            BETWEEN_WAITS.as_millis()
        );
        Ok(())
    })?;
    handover.verify(&reports, "semaphores, the producer held between two waits")?;
    Ok(note)
}
