//! How a pair makes the deadline of its take: stopped at every clock read (the C library's
//! `clock_gettime()`, and the system call for code that bypasses the vDSO) from its `go` to the
//! entry of its `mq_timedreceive()`, the grader sees which clock it reads and when, and the
//! deadline it then passes: the timeout counts from the moment the wait starts, on
//! `CLOCK_REALTIME`, whatever the machine's load.

use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use nix::time::{ClockId, clock_gettime};

use super::signals::{coarse_tick, realtime};
use super::transfer::failure;
use crate::engine::diagnose::clock_name;
use crate::engine::tracer::{AT_CALL, Breakpoint, Call, Tracer};
use crate::engine::{Fail, Proc, inspect};

/// How long the pair may take from its `go` to its `mq_timedreceive()` on a loaded machine,
/// stopped at every clock read: past it, the checks that follow judge where it waits.
const SET_UP: Duration = Duration::from_secs(10);

/// Starts stopping the pair `pid` at each clock read and at its next `mq_timedreceive()` (the
/// wait of its `take()`, once it is told `go`): `None` if the machine does not allow it.
pub fn watch_take(pid: i32) -> Result<Option<Tracer>, Fail> {
    const CALLS: &[i64] = &[libc::SYS_clock_gettime, libc::SYS_mq_timedreceive];
    Tracer::break_at_functions_and_call(pid, &[c"clock_gettime"], Call::one_of(CALLS))
}

/// A clock the pair read while it set up its wait, as the grader saw it with the pair stopped
/// at the read: the value read lies between the grader's own readings of that clock at this
/// stop (`from`) and at the pair's next one (`to`); `None` for a clock the grader cannot read
/// as the pair does (its CPU time).
struct ClockRead {
    clock: i32,
    /// Where the time goes (`clock_gettime()`'s second argument): the C library's call and the
    /// system call it may make are one read.
    into: u64,
    /// The grader's `CLOCK_REALTIME` at the stop: the read comes after it.
    realtime: Duration,
    from: Option<Duration>,
    to: Option<Duration>,
}

impl ClockRead {
    /// Whether `value` may be what this read gave.
    fn gave(&self, value: Duration) -> bool {
        matches!((self.from, self.to), (Some(from), Some(to)) if from <= value && value <= to)
    }
}

/// The grader's reading of `clock`, for a clock every process reads alike.
fn read_clock(clock: i32) -> Option<Duration> {
    const SHARED: [i32; 9] = [
        libc::CLOCK_REALTIME,
        libc::CLOCK_MONOTONIC,
        libc::CLOCK_MONOTONIC_RAW,
        libc::CLOCK_REALTIME_COARSE,
        libc::CLOCK_MONOTONIC_COARSE,
        libc::CLOCK_BOOTTIME,
        libc::CLOCK_REALTIME_ALARM,
        libc::CLOCK_BOOTTIME_ALARM,
        libc::CLOCK_TAI,
    ];
    if !SHARED.contains(&clock) {
        return None;
    }
    clock_gettime(ClockId::from_raw(clock))
        .ok()
        .map(Duration::from)
}

/// What that clock is, where it is not `CLOCK_REALTIME`.
fn clock_kind(clock: i32) -> String {
    match clock {
        libc::CLOCK_REALTIME_COARSE => format!(
            "the time of the kernel's last tick (one every {} ms here, fewer on an idle CPU), \
             behind the real time by the time since that tick, so every wait can give up that \
             much before its timeout",
            coarse_tick().as_millis()
        ),
        libc::CLOCK_TAI => "International Atomic Time, some seconds ahead of the UTC of \
                            CLOCK_REALTIME, so every wait lasts that much longer"
            .to_string(),
        _ => "not the clock mq_timedreceive() and sem_timedwait() measure their deadline on"
            .to_string(),
    }
}

/// `secs.nanos`, as a time is written.
fn time(at: Duration) -> String {
    format!("{}.{:09}", at.as_secs(), at.subsec_nanos())
}

/// `b - a` in milliseconds, to the microsecond, signed.
fn millis_between(a: Duration, b: Duration) -> f64 {
    (b.as_nanos() as f64 - a.as_nanos() as f64) / 1e6
}

/// The deadline argument of the `mq_timedreceive()` the main thread of `pid` is stopped at (at
/// the call's entry, by a tracer): `None` when it is not at that call or passes no deadline.
fn held_mq_deadline(pid: i32) -> Option<Duration> {
    let (nr, args) = inspect::call_of(pid, pid)?;
    if nr != libc::SYS_mq_timedreceive || args[4] == 0 {
        return None;
    }
    let memory = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut bytes = [0u8; 16];
    memory.read_exact_at(&mut bytes, args[4]).ok()?;
    let secs = i64::from_ne_bytes(bytes[..8].try_into().ok()?);
    let nanos = i64::from_ne_bytes(bytes[8..].try_into().ok()?);
    if !(0..1_000_000_000).contains(&nanos) {
        return None;
    }
    Some(Duration::new(secs.max(0) as u64, nanos as u32))
}

/// The take of a pair as the grader saw it made: its clock reads and its deadline.
pub struct TakeSetUp {
    who: String,
    pid: i32,
    timeout: Duration,
    /// The grader's `CLOCK_REALTIME` as it said `go`.
    since: Duration,
    reads: Vec<ClockRead>,
    deadline: Duration,
}

/// With `tracer` from [`watch_take`] and the pair told `go` (at the grader's `since`) on an
/// empty pool: follows its clock reads to the entry of its `mq_timedreceive()`, where the
/// deadline it passes must lie ahead (a deadline already past, on another clock or the timeout
/// itself, makes the call return `ETIMEDOUT` at once: `take()` would never wait) and must not
/// be a read of a clock other than `CLOCK_REALTIME` + the timeout. Lets it go on; what it saw,
/// for [`TakeSetUp::counted_from_its_start`] (`None` if the pair never got there).
pub fn take_set_up(
    proc: &mut Proc,
    mut tracer: Tracer,
    who: &str,
    timeout: Duration,
    since: Duration,
) -> Result<Option<TakeSetUp>, Fail> {
    let pid = proc.pid.as_raw();
    let until = Instant::now() + SET_UP;
    let mut reads: Vec<ClockRead> = Vec::new();
    let deadline = loop {
        if let Some(Breakpoint::At([first, second])) =
            tracer.next_break(Instant::now() + Duration::from_millis(2))?
        {
            let stopped = realtime();
            let call = (tracer.last_break() == AT_CALL)
                .then(|| inspect::call_of(pid, pid))
                .flatten();
            let entered = call.is_some_and(|(nr, _)| nr == libc::SYS_mq_timedreceive);
            let same_read = call.is_some()
                && reads.last().is_some_and(|read| {
                    read.to.is_none() && read.clock as u64 == first && read.into == second
                });
            // The read before this stop is done: the grader's reading of its clock now bounds
            // what it gave.
            if !same_read && let Some(last) = reads.last_mut().filter(|read| read.to.is_none()) {
                last.to = read_clock(last.clock);
            }
            if entered {
                break held_mq_deadline(pid);
            }
            if !same_read {
                let clock = first as i32;
                reads.push(ClockRead {
                    clock,
                    into: second,
                    realtime: stopped,
                    from: read_clock(clock),
                    to: None,
                });
            }
            tracer.go_on();
            continue;
        }
        if let Some(said) = proc.recv_before(Instant::now())? {
            return Err(Fail::failed(format!(
                "{who} (pid {pid}), given a timeout of {} ms, said `{}` ({}) before it ever \
                 called mq_timedreceive(): take() on an empty pool waits in mq_timedreceive() \
                 until an id comes back or its timeout has passed (TransferError::PoolEmpty \
                 only then)",
                timeout.as_millis(),
                said.kind,
                failure(&said)
            )));
        }
        // Where it waits instead is judged by the checks that follow.
        if Instant::now() >= until {
            return Ok(None);
        }
    };
    let now = realtime();
    tracer.release();
    let Some(deadline) = deadline else {
        return Ok(None);
    };
    let seen = TakeSetUp {
        who: who.to_string(),
        pid,
        timeout,
        since,
        reads,
        deadline,
    };
    if deadline <= now {
        return Err(seen.past(now));
    }
    seen.on_realtime()?;
    Ok(Some(seen))
}

impl TakeSetUp {
    /// The call and its deadline, in words.
    fn entered(&self) -> String {
        format!(
            "{} (pid {}), given a timeout of {} ms, entered mq_timedreceive() (stopped there by \
             the grader, which read its arguments) with the deadline {} s",
            self.who,
            self.pid,
            self.timeout.as_millis(),
            time(self.deadline)
        )
    }

    /// What the deadline was read as: the deadline minus the timeout.
    fn read_as(&self) -> Option<Duration> {
        self.deadline.checked_sub(self.timeout)
    }

    /// A deadline already past (`now` the grader's `CLOCK_REALTIME`) as the call was entered.
    fn past(&self, now: Duration) -> Fail {
        let deadline = self.deadline;
        let timeout = self.timeout;
        let monotonic = clock_gettime(ClockId::CLOCK_MONOTONIC)
            .map(Duration::from)
            .unwrap_or_default();
        let near = |a: Duration, b: Duration| a.abs_diff(b) < Duration::from_secs(2);
        let cause = if near(deadline, monotonic + timeout) {
            format!(
                "that is CLOCK_MONOTONIC's now ({:.3} s, time since boot) + the timeout: a \
                 deadline taken on the monotonic clock",
                monotonic.as_secs_f64()
            )
        } else if near(deadline, timeout) {
            "that is the timeout itself: a relative time where the call wants an absolute one"
                .to_string()
        } else {
            "a deadline taken on another clock than CLOCK_REALTIME, or long before the wait"
                .to_string()
        };
        Fail::failed(format!(
            "{}, {:.0} s before the grader's CLOCK_REALTIME now ({:.3} s): {cause}. \
             mq_timedreceive() takes an absolute CLOCK_REALTIME deadline; one already past \
             makes it return ETIMEDOUT at once, without waiting, so take() on an empty pool \
             fails with PoolEmpty at once instead of waiting up to its timeout for an id. The \
             deadline is CLOCK_REALTIME now + the timeout",
            self.entered(),
            (now - deadline).as_secs_f64(),
            now.as_secs_f64()
        ))
    }

    /// Fails if the deadline is what a read of a clock other than `CLOCK_REALTIME` gave + the
    /// timeout (and no `CLOCK_REALTIME` read could have given it).
    fn on_realtime(&self) -> Result<(), Fail> {
        let Some(value) = self.read_as() else {
            return Ok(());
        };
        let realtime_read = |read: &&ClockRead| read.clock == libc::CLOCK_REALTIME;
        if self
            .reads
            .iter()
            .filter(realtime_read)
            .any(|r| r.gave(value))
        {
            return Ok(());
        }
        let Some(read) = self
            .reads
            .iter()
            .find(|read| read.clock != libc::CLOCK_REALTIME && read.gave(value))
        else {
            return Ok(());
        };
        let (Some(from), Some(to)) = (read.from, read.to) else {
            return Ok(());
        };
        let off = millis_between(self.deadline, read.realtime + self.timeout);
        let how_far = if off > 0.0 {
            format!("{off:.3} ms before")
        } else {
            format!(
                "{:.3} ms after (this time that clock moved on between the grader's reading and \
                 the pair's)",
                -off
            )
        };
        let name = clock_name(read.clock);
        let around = if from == to {
            format!("{} both times", time(from))
        } else {
            format!("{} and {}", time(from), time(to))
        };
        Err(Fail::failed(format!(
            "{} (pid {}), given a timeout of {} ms, read {name} with clock_gettime() as it set \
             up its take (stopped there by the grader, which read that clock right before and \
             right after: {around}), then entered mq_timedreceive() with the deadline {} s: \
             minus the timeout, a value that read could have given ({} s), and none that a \
             read of CLOCK_REALTIME could have. The deadline lies {how_far} the grader's \
             CLOCK_REALTIME at the moment of the read ({} s) + the timeout. {name} is {}. The \
             deadline is CLOCK_REALTIME now + the timeout",
            self.who,
            self.pid,
            self.timeout.as_millis(),
            time(self.deadline),
            time(value),
            time(read.realtime),
            clock_kind(read.clock)
        )))
    }

    /// Fails if the deadline is earlier than now + the timeout at the start of the wait's
    /// set-up: the grader's `CLOCK_REALTIME` at the pair's first clock read after its `go` (or
    /// at the `go`, with no read seen).
    pub fn counted_from_its_start(&self) -> Result<(), Fail> {
        let Some(value) = self.read_as() else {
            return Ok(());
        };
        let (start, when) = match self.reads.first() {
            Some(read) => (
                read.realtime,
                format!(
                    "the grader's CLOCK_REALTIME as the pair made its first clock read after its \
                     `go` ({}, with clock_gettime(), stopped there by the grader)",
                    clock_name(read.clock)
                ),
            ),
            None => (
                self.since,
                "the grader's CLOCK_REALTIME as it said `go` (the pair made no clock_gettime() \
                 since)"
                    .to_string(),
            ),
        };
        if value >= start {
            return Ok(());
        }
        Err(Fail::failed(format!(
            "{}: {:.3} ms before {when}, at {} s, + the timeout. The wait's set-up began no \
             earlier, so its deadline does not count the whole timeout from the moment the wait \
             starts: a time read before the wait (once for several waits), or a part of the \
             timeout dropped. The deadline is CLOCK_REALTIME now + the timeout, read as the \
             wait starts",
            self.entered(),
            millis_between(value, start),
            time(start)
        )))
    }
}
