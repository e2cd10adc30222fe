//! Waits the grader makes end its way, through the waiting side's system calls (`ptrace`): every
//! timed wait held at its entry for a second, so that its deadline is read whatever the clock
//! shows (a deadline built wrong only near the end of a second shows too); hundreds of slices
//! made to time out at once, so that a wait() that gives up on a live peer after any count of
//! slices does it while the grader looks; a timed wait made to fail with an error that is
//! neither `EINTR` nor `ETIMEDOUT`, which wait() must return as `HandoffError::Wait`; and a
//! hardware watchpoint on the ok semaphore's word, which counts how often the producer looks at
//! it while no ok can come (a wait tries it a few times a slice, a spin before blocking
//! thousands).

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use nix::time::{ClockId, clock_gettime};
use rand::RngExt;

use super::handover::{Handover, Launch, report_failure};
use super::probe::{self, Seen};
use super::waits::millis;
use super::{CONSUMER, PRODUCER, WAIT_SLICE};
use crate::engine::tracer::{Action, Call, Field, Match, Tracer, Watched};
use crate::engine::{Fail, Proc, Run, force};

/// How long the grader reads the deadline of every timed wait at least: a whole second of the
/// clock, and a slice more, so that every moment of a second is met.
const EVERY_DEADLINE: Duration = Duration::from_millis(1150);
/// A deadline behind the clock by more than this, read at the entry of its wait, was not now +
/// WAIT_SLICE: read just before the call, it is ahead, and even a program preempted between its
/// clock read and its call, and a grader slow to look, stay well under it.
const BEHIND_LIMIT: Duration = Duration::from_millis(400);
/// Slices the grader makes time out at once, the other side alive: a hundred times a plausible
/// patience (50 s of slices), in well under a second of the grader's time.
const TIMEOUTS: u32 = 500;
/// Slices the grader makes time out at once after those, the other side stopped by `SIGSTOP`:
/// ten seconds of slices, five times a plausible patience with a stopped peer.
const STOPPED_TIMEOUTS: u32 = 100;
/// Waits the grader makes return `EINTR` in a row: twice a plausible cap on the retries.
const INTERRUPTIONS: u32 = 200;
/// How far past a slice the deadline read after the forced timeouts may be: a program
/// preempted between its clock read and its call, a grader slow to look.
const AHEAD_SLACK: Duration = Duration::from_millis(250);
/// How long the grader lets the timeouts take: each is two stops of the waiting side.
const TIMEOUTS_TAKE: Duration = Duration::from_millis(2500);

pub(super) fn realtime() -> Duration {
    clock_gettime(ClockId::CLOCK_REALTIME)
        .map(Duration::from)
        .unwrap_or_default()
}

/// A futex wait on `addr` with a deadline (`FUTEX_WAIT_BITSET`, what `sem_timedwait()` makes).
fn timed_futex_wait(addr: u64) -> Call {
    Call {
        number: libc::SYS_futex,
        matching: Match::BothBits([
            (0, u64::MAX, addr),
            (1, 0x7f, libc::FUTEX_WAIT_BITSET as u64),
        ]),
    }
}

/// Any timed wait of a side: a futex wait with a deadline (`sem_timedwait()`,
/// `sem_clockwait()`) or `mq_timedreceive()`.
const ANY_TIMED_WAIT: Call = Call::any_of(&[
    Call::bits(libc::SYS_futex, 1, 0x7f, libc::FUTEX_WAIT_BITSET as u64),
    Call::any(libc::SYS_mq_timedreceive),
]);

/// The call `pid` waits in: its futex or its queue descriptor, looked for up to a second.
pub(super) fn waiting_in(pid: i32) -> Option<Seen> {
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        if let Some(seen @ (Seen::Futex { .. } | Seen::Receive { .. })) = probe::sample(pid) {
            return Some(seen);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

/// The timed wait `seen` is, as a call the tracer can stop at.
pub(super) fn the_wait(seen: Seen) -> Option<Call> {
    match seen {
        Seen::Futex { addr, .. } => Some(timed_futex_wait(addr)),
        Seen::Receive { fd, .. } => Some(Call::arg_is(libc::SYS_mq_timedreceive, 0, fd as u64)),
        _ => None,
    }
}

/// What [`every_deadline`] found when no deadline was behind the clock.
pub struct DeadlinesRead {
    pub note: String,
    /// How many deadlines were read at a wait's entry: 0 when none could be.
    pub read: usize,
}

/// Holds `waiter` (`role`, its peer held by the grader) at the entry of each of its timed waits
/// for a second and more, reading each deadline: none may be behind the clock.
pub fn every_deadline(waiter: i32, role: &str) -> Result<DeadlinesRead, Fail> {
    let unread = |note: String| Ok(DeadlinesRead { note, read: 0 });
    // A side whose deadlines are past never sleeps in its waits, so that the samples rarely
    // find it in one: then every timed wait is stopped at.
    let wait = waiting_in(waiter)
        .and_then(the_wait)
        .unwrap_or(ANY_TIMED_WAIT);
    let started = Instant::now();
    let mut read = 0;
    // A deadline whose nanoseconds are not carried is wrong only for waits entered in the last
    // slice of a second; on a loaded machine the holds may step over it, so the reading goes
    // on (a few seconds at most) until a wait entered then has been read.
    let mut late_in_a_second = false;
    while (started.elapsed() < EVERY_DEADLINE || !late_in_a_second)
        && started.elapsed() < EVERY_DEADLINE * 4
        && probe::alive(waiter)
    {
        let Some(mut tracer) = Tracer::attach(waiter, wait, Action::Hold)? else {
            return unread("the grader may not trace the waiting side (ptrace)".into());
        };
        if !tracer.held_before(Instant::now() + WAIT_SLICE * 3)? {
            break;
        }
        let now = realtime();
        let deadline = probe::realtime_deadline(waiter);
        tracer.release();
        let Some(deadline) = deadline else { continue };
        read += 1;
        late_in_a_second |= now.subsec_nanos() >= 1_000_000_000 - WAIT_SLICE.subsec_nanos();
        if deadline + BEHIND_LIMIT < now {
            let behind = now - deadline;
            if behind > probe::FAR_PAST {
                return Err(Fail::failed(super::waits::far_past_deadline(role, behind)));
            }
            let seen = format!(
                "the grader held {role} at the entry of each of its timed waits for a second \
                 (the other side held, so that it only waited): one wait, made {} ms into a \
                 second of the clock, was called with a deadline {} behind the clock, which \
                 times out at once, so that {role} does not block then",
                now.subsec_millis(),
                millis(behind)
            );
            return Err(Fail::failed(if lost_carry(now, deadline) {
                format!(
                    "{seen}; that deadline is one second short of now + WAIT_SLICE (the clock \
                     at x.{:03} s, the deadline at x.{:03} s of the same second): the \
                     nanoseconds passed 1,000,000,000 and were not carried into the seconds. \
                     Each deadline is now + WAIT_SLICE, whatever the clock shows: add WAIT_SLICE \
                     with TimeSpec arithmetic (or carry the nanoseconds over 1,000,000,000 into \
                     the seconds)",
                    now.subsec_millis(),
                    deadline.subsec_millis()
                )
            } else {
                format!(
                    "{seen}: the deadline was computed once and used again after it had passed. \
                     Compute the deadline for each slice, just before the timed wait: now + \
                     WAIT_SLICE"
                )
            }));
        }
    }
    Ok(DeadlinesRead {
        note: format!(
            "every deadline of {role}'s timed waits over {} ms was ahead ({read} read)",
            started.elapsed().as_millis()
        ),
        read,
    })
}

/// Whether `deadline`, read at the entry of a wait made at `now`, is now + `WAIT_SLICE` with the
/// nanoseconds wrapped without a carry: in the clock's second, one second short of a slice
/// ahead (give or take what a program preempted between its clock read and its call loses).
fn lost_carry(now: Duration, deadline: Duration) -> bool {
    let carried = deadline + Duration::from_secs(1);
    carried > now
        && carried - now <= WAIT_SLICE
        && deadline.subsec_nanos() < WAIT_SLICE.subsec_nanos()
}

/// Makes the timed wait of `waiter` (`role`, waiting for `other`, which the grader holds) time
/// out `TIMEOUTS` times at once: it must go on waiting, whatever the count. Then, `other`
/// stopped as job control stops a process (`SIGSTOP`), `STOPPED_TIMEOUTS` times more: a
/// stopped peer is alive.
pub fn many_timeouts(
    proc: &mut Proc,
    waiter: i32,
    role: &str,
    (other, other_pid): (&str, i32),
) -> Result<String, Fail> {
    let note = timeouts(proc, waiter, role, other, TIMEOUTS)?;
    if !probe::alive(waiter) {
        return Ok(note);
    }
    force::hold(other_pid)?;
    let stopped = format!(
        "{other}, stopped by SIGSTOP (state T, as Ctrl-Z leaves it; {role} had waited on \
         through {TIMEOUTS} such slices with it held and running)"
    );
    let outcome = timeouts(proc, waiter, role, &stopped, STOPPED_TIMEOUTS);
    force::resume(other_pid)?;
    Ok(format!("{note}; then {}", outcome?))
}

/// Makes the timed wait of `waiter` (`role`, waiting for `other`, held) time out `count` times
/// at once; then reads its next deadline.
fn timeouts(
    proc: &mut Proc,
    waiter: i32,
    role: &str,
    other: &str,
    count: u32,
) -> Result<String, Fail> {
    let Some(wait) = waiting_in(waiter).and_then(the_wait) else {
        return Ok(format!("{role} was seen in no timed wait"));
    };
    let Some(tracer) = Tracer::fail_times(waiter, wait, libc::ETIMEDOUT, count)? else {
        return Ok("the grader may not trace the waiting side (ptrace)".into());
    };
    let failed = tracer.failed_count(Instant::now() + TIMEOUTS_TAKE)?;
    if failed < count && !probe::alive(waiter) {
        let report = proc.recv_before(Instant::now() + Duration::from_secs(1))?;
        if let Some(report) = report
            && report.kind == "failed"
        {
            if report.get("kind") != Some("peer-gone") {
                return Err(report_failure(&report, "semaphores"));
            }
            return Err(Fail::failed(format!(
                "the grader made {role}'s timed wait time out at once (ETIMEDOUT), again and \
                 again, while it held {other}, alive: {failed} such slices later, {role} gave \
                 up with kind=peer-gone. When a slice times out and Peer::gone() \
                 says the peer is still there, wait again, however many slices have passed: a \
                 slow or stopped peer is not a dead one"
            )));
        }
        return Ok(format!(
            "{role} ended after {failed} slices made to time out"
        ));
    }
    // Each slice's deadline is read from the clock: the wait after those that timed out early
    // ends a slice from now, not TIMEOUTS slices on from the first deadline.
    let until = Instant::now() + WAIT_SLICE * 3;
    while Instant::now() < until && probe::alive(waiter) {
        let now = realtime();
        if let Some(deadline) = probe::realtime_deadline(waiter) {
            if deadline > now + WAIT_SLICE + AHEAD_SLACK {
                return Err(Fail::failed(format!(
                    "the grader made {role}'s timed wait time out at once (ETIMEDOUT), {failed} \
                     times in a row, while it held {other}: the wait after them had a deadline \
                     {} ahead, not a slice: each slice's deadline was pushed on from the last \
                     one (the old deadline + WAIT_SLICE), as if each timeout meant the clock had \
                     reached it. Read the clock for every slice, also after ETIMEDOUT: now + \
                     WAIT_SLICE (a dead peer would otherwise be noticed that late)",
                    millis(deadline - now)
                )));
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(format!(
        "{role} waited on through {failed} slices made to time out at once ({other} held), \
         its next deadline a slice ahead"
    ))
}

/// Makes the timed wait of `waiter` (`role`, waiting for `other`, which the grader holds) return
/// `EINTR` `INTERRUPTIONS` times in a row, as a storm of signals would: it must go on waiting,
/// whatever the count.
pub fn many_interruptions(
    proc: &mut Proc,
    waiter: i32,
    role: &str,
    other: &str,
) -> Result<String, Fail> {
    let Some(wait) = waiting_in(waiter).and_then(the_wait) else {
        return Ok(format!("{role} was seen in no timed wait"));
    };
    let Some(tracer) = Tracer::fail_times(waiter, wait, libc::EINTR, INTERRUPTIONS)? else {
        return Ok("the grader may not trace the waiting side (ptrace)".into());
    };
    let failed = tracer.failed_count(Instant::now() + TIMEOUTS_TAKE)?;
    if failed < INTERRUPTIONS && !probe::alive(waiter) {
        let report = proc.recv_before(Instant::now() + Duration::from_secs(1))?;
        if let Some(report) = report
            && report.kind == "failed"
        {
            return Err(Fail::failed(format!(
                "the grader made {role}'s timed wait return EINTR (a signal handler ran) {} \
                 times in a row, as a storm of signals would, while it held {other}, alive: \
                 after {failed} of them, {role} gave up with kind={} ({}). EINTR is no error, \
                 however often it comes: wait again, with a deadline read anew, every time (a \
                 cap on the retries turns a busy signal handler into a failed handoff)",
                INTERRUPTIONS,
                report.get("kind").unwrap_or("none"),
                report.get("error").unwrap_or("")
            )));
        }
        return Ok(format!(
            "{role} ended after {failed} waits made to return EINTR"
        ));
    }
    Ok(format!(
        "{role} waited on through {failed} waits made to return EINTR"
    ))
}

/// A timed wait made to fail with `errno` (neither EINTR nor ETIMEDOUT) must end wait() with
/// `HandoffError::Wait`: the waiting side reports `kind=wait`.
fn wait_error(
    run: &mut Run,
    mechanism: &'static str,
    (errno, errno_name): (i32, &'static str),
) -> Result<String, Fail> {
    let (pause, role, waiter_role, call) = if mechanism == "semaphores" {
        (
            "--pause-consumer-at",
            "consumer",
            PRODUCER,
            "sem_timedwait()",
        )
    } else {
        (
            "--pause-producer-at",
            "producer",
            CONSUMER,
            "mq_timedreceive()",
        )
    };
    // EAGAIN is what a queue whose description was made non-blocking (O_NONBLOCK, shared by
    // both sides across fork()) says at once, again and again: taken for a slice that timed
    // out, it makes a wait that spins.
    let eagain = if errno == libc::EAGAIN {
        " EAGAIN is no timeout: a blocking timed wait never says it, and when it does (a \
         description made non-blocking) it says it at once, every time, so that waiting again \
         spins on the CPU."
    } else if errno == libc::EINVAL {
        " EINVAL is no passing clock problem: with a deadline read from the clock just before \
         the call, a timed wait says it only of a queue or semaphore it cannot use, or a \
         deadline it refuses, and says it again at every retry."
    } else {
        ""
    };
    let at = run.rng().random_range(10..50u64).to_string();
    let mut handover = Handover::start(run, mechanism, 100, &[pause, &at])?;
    let waiter = if role == "consumer" {
        handover.producer
    } else {
        handover.consumer
    };
    let waiter_name = if role == "consumer" {
        "producer"
    } else {
        "consumer"
    };
    handover.go()?;
    let mut failed_call = false;
    let mut reported = false;
    loop {
        let message = handover.proc.recv_any()?;
        match (
            message.kind.as_str(),
            message.get("role"),
            message.get("kind"),
        ) {
            ("paused", Some(paused), _) if paused == role => {
                let wait = waiting_in(waiter).and_then(the_wait);
                if let Some(wait) = wait
                    && let Some(mut tracer) = Tracer::attach(waiter, wait, Action::Fail(errno))?
                {
                    failed_call = tracer.failed_before(Instant::now() + WAIT_SLICE * 5)?;
                }
                if failed_call {
                    match handover
                        .proc
                        .recv_before(Instant::now() + Duration::from_secs(2))?
                    {
                        Some(report) if report.kind == "failed" => {
                            if report.get("kind") != Some("wait") {
                                return Err(report_failure(&report, mechanism));
                            }
                            reported = true;
                            // The held side has taken every signal it was sent: a signal there
                            // now was posted by the side whose wait failed, after it failed.
                            if let Some(posted) = posted_after_failure(&handover, role) {
                                return Err(Fail::failed(format!(
                                    "the grader held the {role} before record {at} and made \
                                     {waiter_role}'s {call} fail with {errno_name} while it \
                                     waited ({mechanism}): {waiter_role} reported kind=wait, as \
                                     it should, but it had first posted {posted}, though its \
                                     wait had failed and it had taken nothing: the {role}, once \
                                     let go, would take that signal for one that answers its \
                                     record, and go on as if it had been received. A side posts \
                                     only after its wait succeeded and it did its part (take(): \
                                     wait for ready, copy, then post ok; put(): write, post \
                                     ready, wait for ok); a failed wait returns its error at \
                                     once"
                                )));
                            }
                        }
                        Some(other) => {
                            return Err(Fail::failed(format!(
                                "the program said an unexpected `{}`",
                                other.kind
                            )));
                        }
                        None => {
                            let doing = match probe::sample(waiter) {
                                Some(seen) => {
                                    format!("it was in {}", probe::describe_call(waiter, seen))
                                }
                                None => "it was running".into(),
                            };
                            return Err(Fail::failed(format!(
                                "the grader made {waiter_role}'s {call} fail with {errno_name} \
                                 (an error other than EINTR and ETIMEDOUT) while it waited \
                                 ({mechanism}): {waiter_role} reported nothing and went on \
                                 waiting ({doing} 2 s later). Any other error of the timed wait \
                                 ends wait() with HandoffError::Wait (kind=wait): waiting again \
                                 would loop for ever on an error that does not go away.{eagain}"
                            )));
                        }
                    }
                }
                handover.proc.send("go", &[])?;
            }
            ("failed", Some(side), Some("peer-gone")) if reported && side == role => {}
            ("failed", Some(side), Some("wait")) if side == waiter_name && !reported => {
                return Err(report_failure(&message, mechanism));
            }
            ("failed", _, _) => return Err(handover.failure(&message)),
            ("done", _, _) => {}
            ("ended", _, _) => break,
            (kind, _, _) => {
                return Err(Fail::failed(format!(
                    "the program said an unexpected `{kind}`"
                )));
            }
        }
    }
    handover.exit()?;
    Ok(if reported {
        format!("{mechanism}: {call} made to fail with {errno_name}: kind=wait")
    } else {
        format!("{mechanism}: the grader could not make {call} fail")
    })
}

/// What the consumer, its wait failed, posted to the held producer `held` (which has taken
/// every ok it was sent), in words; `None` if nothing, or if `held` is the consumer.
fn posted_after_failure(handover: &Handover, held: &str) -> Option<String> {
    // A consumer held before record K has the producer's ready for K before it, rightly: only
    // a held producer (which took the ok of K-1) has nothing to take.
    if held != "producer" {
        return None;
    }
    let pid = handover.producer;
    let (index, what) = (1, "ok");
    let name = &handover.names[index];
    if handover.mechanism == "queues" {
        let fd = *probe::queue_descriptors(pid, name).first()?;
        let messages = probe::queue_messages(pid, fd)?;
        (messages > 0).then(|| format!("{what} (the {what} queue {name} held {messages} message)"))
    } else {
        let value = probe::semaphore_value(name).or_else(|| {
            // Unlinked: read the semaphores the held side maps; one at 1 is the posted one.
            probe::semaphores_of(pid)
                .into_iter()
                .map(|(_, value)| value)
                .max()
        })?;
        (value > 0).then(|| format!("{what} (a semaphore of the handoff was at {value})"))
    }
}

/// The largest value of a semaphore (`SEM_VALUE_MAX`): a `sem_post()` at it fails with
/// `EOVERFLOW`.
const SEM_VALUE_MAX: u32 = i32::MAX as u32;

/// A `sem_post()` made to fail: with the producer held before record K and the consumer
/// stopped in its wait for ready, the grader sets the ready semaphore's value to
/// `SEM_VALUE_MAX` (in the consumer's mapping of it, which is the producer's too), then lets
/// the producer put record K: its `sem_post(ready)` fails with `EOVERFLOW`, which post() must
/// return as `HandoffError::Post` (`kind=post`). The value is set back to 0 before the
/// consumer goes on.
pub fn post_error(run: &mut Run) -> Result<String, Fail> {
    let at = run.rng().random_range(10..50u64).to_string();
    let mut handover = Handover::start(run, "semaphores", 100, &["--pause-producer-at", &at])?;
    let consumer = handover.consumer;
    handover.go()?;
    let paused = handover.proc.recv_any()?;
    match paused.kind.as_str() {
        "paused" => {}
        "failed" => return Err(handover.failure(&paused)),
        kind => {
            return Err(Fail::failed(format!(
                "the program said an unexpected `{kind}`"
            )));
        }
    }
    let named = |addr: u64| {
        probe::mappings(consumer)
            .iter()
            .any(|m| m.named_semaphore() && m.contains(addr))
    };
    let word = match waiting_in(consumer) {
        Some(Seen::Futex { addr, .. }) if named(addr) => Some(addr),
        _ => None,
    };
    let Some(word) = word else {
        handover.proc.send("go", &[])?;
        loop {
            let message = handover.proc.recv_any()?;
            match message.kind.as_str() {
                "done" => {}
                "ended" => break,
                "failed" => return Err(handover.failure(&message)),
                kind => {
                    return Err(Fail::failed(format!(
                        "the program said an unexpected `{kind}`"
                    )));
                }
            }
        }
        handover.exit()?;
        return Ok("semaphores: the consumer was not seen waiting on a named semaphore".into());
    };
    force::hold(consumer)?;
    probe::poke(consumer, word, &SEM_VALUE_MAX.to_ne_bytes())?;
    handover.proc.send("go", &[])?;
    let report = handover
        .proc
        .recv_before(Instant::now() + Duration::from_secs(4))?;
    // Whatever came, the consumer finds nothing to take once it goes on.
    probe::poke(consumer, word, &0u32.to_ne_bytes())?;
    force::resume(consumer)?;
    let situation = format!(
        "the grader held the producer before record {at}, stopped the consumer in its wait for \
         ready and set the ready semaphore to SEM_VALUE_MAX (2147483647), so that the \
         producer's sem_post(ready) for record {at} failed with EOVERFLOW (semaphores)"
    );
    match report {
        Some(report) if report.kind == "failed" && report.get("role") == Some("producer") => {
            if report.get("kind") != Some("post") {
                return Err(Fail::failed(format!(
                    "{situation}: the producer reported kind={} (`{}`), not kind=post: a \
                     failed sem_post() or mq_send() is HandoffError::Post, whatever the error; \
                     HandoffError::Wait is for the timed wait",
                    report.get("kind").unwrap_or("none"),
                    report.get("error").unwrap_or("")
                )));
            }
        }
        Some(report) if report.kind == "failed" => return Err(handover.failure(&report)),
        Some(report) => {
            return Err(Fail::failed(format!(
                "{situation}: the program said `{}`, not the producer's kind=post",
                report.kind
            )));
        }
        None => {
            return Err(Fail::failed(format!(
                "{situation}: the producer reported nothing within 4 s: a failed sem_post() \
                 ends post() with HandoffError::Post (kind=post), which put() returns"
            )));
        }
    }
    finish_after_failed_post(&mut handover, "consumer")?;
    Ok("semaphores: sem_post() at SEM_VALUE_MAX (EOVERFLOW): kind=post".into())
}

pub fn wait_errors(run: &mut Run) -> Result<String, Fail> {
    Ok(format!(
        "{}; {}; {}; {}",
        wait_error(run, "semaphores", (libc::EOVERFLOW, "EOVERFLOW"))?,
        // Queues: glibc's sem_timedwait() itself retries a futex wait that says EINVAL, and
        // mq_timedreceive() hands it on.
        wait_error(run, "queues", (libc::EINVAL, "EINVAL"))?,
        wait_error(run, "queues", (libc::EBADF, "EBADF"))?,
        wait_error(run, "queues", (libc::EAGAIN, "EAGAIN"))?
    ))
}

/// The data word of a named semaphore (glibc, 64-bit: the value and the count of waiters), at
/// the start of its mapping: every load and store of it by the program.
const SEMAPHORE_WORD: &[Field] = &[Field {
    offset: 0,
    len: 8,
    loads: true,
}];
/// The record before which the consumer is held: the second, so that the producer's looks at
/// the ok semaphore are those of two waits, the second of which no ok ends.
const SPIN_HELD_AT: u64 = 1;
/// How long the grader counts the producer's looks at the ok semaphore once the consumer is
/// held: three slices.
const SPIN_WATCH: Duration = Duration::from_millis(300);
/// Looks at the ok semaphore a blocking producer makes, counted from its `go`: a timed wait
/// loads and updates the word a few times a round and a slice (a try, the count of waiters up and down); a
/// loop of sem_trywait() before the timed wait looks hundreds or thousands of times a wait. The
/// count starts with the `go`, not when the consumer is seen held, so that a spin over before
/// the grader hears of the hold is counted too. A grader slow to count lets more slices pass:
/// each allows `LOOKS_PER_SLICE` more.
const MOST_LOOKS: u64 = 60;
const LOOKS_PER_SLICE: u64 = 10;
/// A pause this long between two looks at the ok semaphore is the producer's first block: a
/// timed wait looks next when its slice times out, a slice after the clock read made before its
/// first look; the looks before it, however slowly a loaded machine lets them come, are those
/// of the waits up to their block.
const FIRST_BLOCK: Duration = Duration::from_millis(80);
/// Looks a wait makes before it blocks: the C library's sem_timedwait() tries the word once,
/// counts itself a waiter and looks again before its futex wait, and takes the post and counts
/// itself out when woken; a few sem_trywait() tries before the timed wait, however brief, are
/// one look each.
const LOOKS_BEFORE_BLOCKING: u64 = 8;
/// Looks allowed before the first block: the waits of the rounds before the hold, and the held
/// one up to its block.
const FIRST_BLOCK_LOOKS: u64 = LOOKS_BEFORE_BLOCKING * (SPIN_HELD_AT + 1);

/// How many looks at the ok semaphore are allowed since the rounds started at `started`.
fn most_looks(started: Instant) -> u64 {
    let slices = (started.elapsed().as_millis() / WAIT_SLICE.as_millis()) as u64;
    MOST_LOOKS + LOOKS_BEFORE_BLOCKING * SPIN_HELD_AT + LOOKS_PER_SLICE * slices
}

/// The producer must block in its wait for ok, not try the semaphore again and again first:
/// hardware watchpoints on the ok semaphore's word in the producer count its loads and stores
/// while the grader holds the consumer before a record, so that no ok comes.
pub fn spins_before_blocking(run: &mut Run) -> Result<String, Fail> {
    let names = [run.ipc_name("ready"), run.ipc_name("ok")];
    let rounds = SPIN_HELD_AT + 5;
    let held_at = SPIN_HELD_AT.to_string();
    let extra = ["--pause-after-create", "--pause-consumer-at", &held_at];
    let mut launch = Launch::new(run, "semaphores", names, rounds, &extra)?;
    let created = launch.proc.recv_any()?;
    if created.kind != "created" {
        return Err(match created.kind.as_str() {
            "failed" => report_failure(&created, "semaphores"),
            kind => Fail::failed(format!(
                "the program said `{kind}` where it should have said `created`"
            )),
        });
    }
    // The ok semaphore's file, known by its inode while its name exists.
    let ok_inode = std::fs::metadata(probe::semaphore_file(&launch.names[1])).map(|m| m.ino());
    launch.proc.send("go", &[])?;
    let mut handover = launch.ready()?;
    let producer = handover.producer;
    let ok_word = ok_inode.ok().and_then(|inode| {
        probe::mappings(producer)
            .into_iter()
            .find(|m| m.named_semaphore() && m.inode == inode)
            .map(|m| m.start)
    });
    let tracer = match ok_word {
        Some(word) => Tracer::watch_at(producer, word, SEMAPHORE_WORD)?,
        None => None,
    };
    let Some(mut tracer) = tracer else {
        handover.finish(|proc, _| proc.send("go", &[]))?;
        return Ok("the ok semaphore was not watched (no watchpoints here)".into());
    };
    handover.go()?;
    let started = Instant::now();
    let mut held_since: Option<Instant> = None;
    let mut looks = 0u64;
    // Looks before the first pause of FIRST_BLOCK between two (`blocked` once it came).
    let mut first_looks = 0u64;
    let mut last_look: Option<Instant> = None;
    let mut blocked = false;
    let until = started + Duration::from_secs(5);
    let mut watched = true;
    // Judged at the look that went past the allowance: later, more slices would allow more.
    let mut spun = false;
    loop {
        if let Some(since) = held_since
            && since.elapsed() >= SPIN_WATCH
        {
            break;
        }
        match tracer.next(&mut handover.proc, until)? {
            Watched::Armed => {}
            Watched::Hit => {
                looks += 1;
                blocked |= last_look.is_some_and(|last| last.elapsed() >= FIRST_BLOCK);
                if !blocked {
                    first_looks += 1;
                }
                last_look = Some(Instant::now());
                if looks > most_looks(started) {
                    spun = true;
                    break;
                }
                tracer.go_on();
            }
            Watched::Said(message) => {
                if paused_for_the_grader(&handover, &message, "consumer")? {
                    held_since = Some(Instant::now());
                }
            }
            Watched::Lost | Watched::Unavailable => {
                watched = false;
                break;
            }
        }
    }
    let watched_for = started.elapsed();
    drop(tracer);
    if spun {
        return Err(Fail::failed(format!(
            "while the grader held the consumer before record {SPIN_HELD_AT} (so that no ok \
             came), the producer loaded or changed the ok \
             semaphore at least {looks} times in {} (counted with a hardware watchpoint on the \
             semaphore's word): its wait(ok) tries the semaphore again and again (a loop around \
             sem_trywait()?) before, or instead of, blocking. A wait blocks in sem_timedwait() \
             from the start, which looks at the semaphore a few times a slice",
            millis(watched_for)
        )));
    }
    if first_looks > FIRST_BLOCK_LOOKS {
        return Err(Fail::failed(format!(
            "in its wait(ok) for record 0, then for record {SPIN_HELD_AT} while the grader held \
             the consumer (so that no ok came), the producer loaded or changed the ok semaphore \
             {first_looks} times before its first pause of {} between two looks, its block \
             (counted with a hardware watchpoint on the semaphore's word): its wait(ok) tries \
             the semaphore again and again (sem_trywait() in a loop, however short?) before it \
             blocks. The C library's sem_timedwait() looks at the word a few times a wait \
             before its futex wait (at most {FIRST_BLOCK_LOOKS} in {} waits): block in it from \
             the start",
            millis(FIRST_BLOCK),
            SPIN_HELD_AT + 1
        )));
    }
    release_to_the_end(
        &mut handover,
        held_since.is_some(),
        "the consumer",
        SPIN_HELD_AT,
    )?;
    Ok(if watched {
        format!(
            "the producer looked at the ok semaphore {looks} times in {} ({first_looks} before \
             a pause of {}), in {SPIN_HELD_AT} round, then the wait for a held consumer",
            millis(watched_for),
            millis(FIRST_BLOCK)
        )
    } else {
        "the ok semaphore was not watched (no watchpoints here)".into()
    })
}

/// Words of the slot a consumer that polls it would read: the record's number, the first and
/// a middle word of its payload, its checksum.
const SLOT_WORDS: &[Field] = &[
    Field {
        offset: 0,
        len: 8,
        loads: true,
    },
    Field {
        offset: 8,
        len: 8,
        loads: true,
    },
    Field {
        offset: 2048,
        len: 8,
        loads: true,
    },
    Field {
        offset: super::RECORD_SIZE as usize - 8,
        len: 8,
        loads: true,
    },
];
/// How long the grader counts the consumer's looks at the slot once the producer is held.
const SLOT_WATCH: Duration = Duration::from_millis(150);
/// The record before which the producer is held: one record copied before, with the
/// watchpoints (each look a stop of the consumer) armed.
const SLOT_HELD_AT: u64 = 1;
/// Looks at the watched words of the slot a consumer that reads the slot only after ready
/// makes, from the start of the rounds: its copy of each record (a copy in pieces reads a word
/// a few times; 17 to 25 a record measured); none once the producer is held (a few allowed,
/// for looks already under way).
const MOST_SLOT_LOOKS: u64 = 100;
const SLOT_LOOKS_PER_ROUND: u64 = 50;
const HELD_SLOT_LOOKS: u64 = 4;

/// The consumer reads the slot only once ready came: hardware watchpoints on words of the
/// consumer's slot count its loads while the grader holds the producer before a record (no
/// ready can come): none then, a copy's few a round before.
pub fn consumer_polls_slot(run: &mut Run) -> Result<String, Fail> {
    let held_at = SLOT_HELD_AT.to_string();
    let mut handover = Handover::start(
        run,
        "semaphores",
        SLOT_HELD_AT + 2,
        &["--pause-producer-at", &held_at],
    )?;
    let consumer = handover.consumer;
    let slot = probe::mappings(consumer)
        .into_iter()
        .find(|m| m.shared_anonymous() && m.len() >= super::RECORD_SIZE)
        .map(|m| m.start);
    let tracer = match slot {
        Some(slot) => Tracer::watch_at(consumer, slot, SLOT_WORDS)?,
        None => None,
    };
    let Some(mut tracer) = tracer else {
        handover.finish(|proc, _| proc.send("go", &[]))?;
        return Ok("the consumer's slot was not watched (no watchpoints here)".into());
    };
    handover.go()?;
    let started = Instant::now();
    let until = started + Duration::from_secs(5);
    let mut held_since: Option<Instant> = None;
    let mut looks = 0u64;
    let mut held_looks = 0u64;
    let mut armed = false;
    // The looks counted by the time the producer paused: the consumer had taken the records
    // before the hold by then.
    let mut looks_before_hold = None;
    let mut watched = true;
    let allowed = MOST_SLOT_LOOKS + SLOT_LOOKS_PER_ROUND * SLOT_HELD_AT;
    loop {
        // Once the producer is held, only the consumer's looks are read, for SLOT_WATCH: one
        // that blocks touches nothing.
        let next = match held_since {
            Some(since) => match tracer.next_watched(since + SLOT_WATCH)? {
                Some(next) => next,
                None => break,
            },
            None => tracer.next(&mut handover.proc, until)?,
        };
        match next {
            Watched::Armed => armed = true,
            Watched::Hit => {
                looks += 1;
                if held_since.is_some() {
                    held_looks += 1;
                }
                if looks > allowed || held_looks > HELD_SLOT_LOOKS {
                    break;
                }
                tracer.go_on();
            }
            Watched::Said(message) => {
                if paused_for_the_grader(&handover, &message, "producer")? {
                    held_since = Some(Instant::now());
                    looks_before_hold = Some(looks);
                }
            }
            Watched::Lost | Watched::Unavailable => {
                watched = false;
                break;
            }
        }
    }
    let watched_for = started.elapsed();
    drop(tracer);
    if looks > allowed || held_looks > HELD_SLOT_LOOKS {
        return Err(Fail::failed(format!(
            "in {SLOT_HELD_AT} round and then while the grader held the producer before record \
             {SLOT_HELD_AT} (so that no ready came), the consumer read the slot at least {looks} \
             times in {} ({held_looks} of them once the producer had said it paused, when a \
             consumer waiting for ready reads nothing; counted with hardware watchpoints on the \
             record's number, payload and checksum in the consumer's slot): \
             take() polls the slot (for a new number or checksum) before, or instead of, waiting \
             for ready. The slot is read only once ready came: wait(ready) blocks from the start, \
             then copy the record",
            millis(watched_for)
        )));
    }
    if watched && armed && looks_before_hold == Some(0) {
        return Err(Fail::failed(format!(
            "the consumer took {SLOT_HELD_AT} record(s) and posted ok before the grader held the \
             producer before record {SLOT_HELD_AT}, without once reading its slot (hardware \
             watchpoints on the record's number, payload and checksum in the consumer's own \
             mapping of the slot counted no load): take() got the record some other way, such \
             as a copy out of the producer's memory (process_vm_readv(), /proc/PID/mem, \
             ptrace()), a file or a pipe. take() copies the record out of its own mapping of \
             the shared slot: the records travel through the slot, and only through it"
        )));
    }
    release_to_the_end(
        &mut handover,
        held_since.is_some(),
        "the producer",
        SLOT_HELD_AT,
    )?;
    Ok(if watched {
        format!(
            "the consumer read the watched words of its slot {looks} times in {} \
             ({SLOT_HELD_AT} round, then {held_looks} while the producer was held)",
            millis(watched_for)
        )
    } else {
        "the consumer's slot was not watched (no watchpoints here)".into()
    })
}

/// The consumer's post of ok fails (queues: the grader makes its `mq_timedsend()` fail with
/// `EBADF`, as on a descriptor closed behind its back): take() must return that error
/// (`kind=post`, from the consumer), not drop it and go on to the next record.
pub fn consumer_post_error(run: &mut Run) -> Result<String, Fail> {
    let at = run.rng().random_range(10..50u64).to_string();
    let mut handover = Handover::start(run, "queues", 100, &["--pause-consumer-at", &at])?;
    let consumer = handover.consumer;
    handover.go()?;
    let paused = handover.proc.recv_any()?;
    match paused.kind.as_str() {
        "paused" if paused.get("role") == Some("consumer") => {}
        "failed" => return Err(handover.failure(&paused)),
        kind => {
            return Err(Fail::failed(format!(
                "the program said an unexpected `{kind}`"
            )));
        }
    }
    let tracer = Tracer::attach(
        consumer,
        Call::any(libc::SYS_mq_timedsend),
        Action::Fail(libc::EBADF),
    )?;
    handover.proc.send("go", &[])?;
    let Some(mut tracer) = tracer else {
        handover.finish(|_, _| Ok(()))?;
        return Ok("queues: the consumer's post not made to fail (no ptrace)".into());
    };
    let report = handover
        .proc
        .recv_before(Instant::now() + Duration::from_secs(3))?;
    let failed = tracer.failed_before(Instant::now() + Duration::from_millis(200))?;
    drop(tracer);
    let situation = format!(
        "the grader made the consumer's mq_send() of ok after record {at} fail with EBADF \
         (queues; the producer's posts went through)"
    );
    match report {
        Some(report) if report.kind == "failed" && report.get("role") == Some("consumer") => {
            if report.get("kind") != Some("post") {
                handover.proc.kill_tree();
                return Err(Fail::failed(format!(
                    "{situation}: the consumer reported kind={} (`{}`), not kind=post: a failed \
                     sem_post() or mq_send() is HandoffError::Post",
                    report.get("kind").unwrap_or("none"),
                    report.get("error").unwrap_or("")
                )));
            }
        }
        Some(report) if report.kind == "failed" => {
            handover.proc.kill_tree();
            return Err(handover.failure(&report));
        }
        _ if !failed => {
            // The consumer made no mq_timedsend(): its post is judged elsewhere.
            handover.proc.kill_tree();
            return Ok("queues: no mq_send() of the consumer seen".into());
        }
        Some(report) => {
            handover.proc.kill_tree();
            return Err(Fail::failed(format!(
                "{situation}: the program said `{}`, not the consumer's kind=post: take() \
                 dropped the error of its post(ok) and went on. A failed step is the take's \
                 error: return post()'s HandoffError::Post (kind=post), or the producer waits \
                 for an ok that was never sent",
                report.kind
            )));
        }
        None => {
            handover.proc.kill_tree();
            return Err(Fail::failed(format!(
                "{situation}: the consumer reported nothing within 3 s: take() dropped the \
                 error of its post(ok) and went on to wait for the next record, while the \
                 producer waits for an ok that was never sent. A failed step is the take's \
                 error: return post()'s HandoffError::Post (kind=post)"
            )));
        }
    }
    finish_after_failed_post(&mut handover, "producer")?;
    Ok("queues: the consumer's mq_send() of ok failing (EBADF): kind=post".into())
}

/// Reads what the program says to its end, then lets the parent exit: after a side's failed
/// post, its peer's kind=peer-gone (`peer`, the role) is expected, any other failure is not.
fn finish_after_failed_post(handover: &mut Handover, peer: &str) -> Result<(), Fail> {
    loop {
        let message = handover.proc.recv_any()?;
        match (message.kind.as_str(), message.get("kind")) {
            ("failed", Some("peer-gone")) if message.get("role") == Some(peer) => {}
            ("failed", _) => return Err(handover.failure(&message)),
            ("ended", _) => break,
            (kind, _) => {
                return Err(Fail::failed(format!(
                    "the program said an unexpected `{kind}`"
                )));
            }
        }
    }
    handover.exit()
}

/// Whether `message`, said while a side is watched, is `role` pausing for the grader; a failure
/// or any other message but `done` ends the watch.
fn paused_for_the_grader(
    handover: &Handover,
    message: &ipc_labs_driver::Message,
    role: &str,
) -> Result<bool, Fail> {
    match (message.kind.as_str(), message.get("role")) {
        ("paused", Some(paused)) if paused == role => Ok(true),
        ("failed", _) => Err(handover.failure(message)),
        ("done", _) => Ok(false),
        (kind, _) => Err(Fail::failed(format!(
            "the program said an unexpected `{kind}`"
        ))),
    }
}

/// Lets a run whose `role` the grader held before record `at` (`paused`: it said so) go on,
/// and reads it to its end.
fn release_to_the_end(
    handover: &mut Handover,
    paused: bool,
    role: &str,
    at: u64,
) -> Result<(), Fail> {
    if !paused {
        return Err(Fail::failed(format!(
            "{role} did not pause before record {at}"
        )));
    }
    handover.proc.send("go", &[])?;
    loop {
        let message = handover.proc.recv_any()?;
        match message.kind.as_str() {
            "failed" => return Err(handover.failure(&message)),
            "ended" => break,
            _ => {}
        }
    }
    handover.exit()
}
