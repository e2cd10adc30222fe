//! Waits the grader makes end its way, through the waiting side's system calls (`ptrace`): every
//! timed wait held at its entry for a second, so that its deadline is read whatever the clock
//! shows (a deadline built wrong only near the end of a second shows too); hundreds of slices
//! made to time out at once, so that a wait() that gives up on a live peer after any count of
//! slices does it while the grader looks; a timed wait made to fail with an error that is
//! neither `EINTR` nor `ETIMEDOUT`, which wait() must return as `HandoffError::Wait`; and a
//! hardware watchpoint on the ok semaphore's word, which counts how often the producer looks at
//! it while no ok can come (a wait tries it a few times a slice, a spin before blocking
//! thousands).
//!
//! The waits and posts made to fail are in `failed_calls.rs`, the watchpoints in
//! `watchpoints.rs`.

use std::time::{Duration, Instant};

use nix::time::{ClockId, clock_gettime};

use super::WAIT_SLICE;
use super::handover::report_failure;
use super::probe::{self, Seen};
use super::waits::millis;
use crate::engine::tracer::{Action, Call, Match, Tracer};
use crate::engine::{Fail, Proc, force};

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
