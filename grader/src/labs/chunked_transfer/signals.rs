//! Interrupting a blocked wait with SIGUSR1 and watching what the wait does with it: the signal
//! must be delivered while the side waits (not blocked around the call), the wait must be
//! entered again, and with the deadline it had (read from the program's memory at each entry).

use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::time::{ClockId, clock_gettime};

use super::transfer::failure;
use crate::engine::inspect::SignalMask;
use crate::engine::tracer::{Action, Call, Tracer};
use crate::engine::{Fail, Proc, force, inspect};

/// How long a signal may take to be delivered, and the wait to be entered again, on a loaded
/// machine: a side that does it at all does it within milliseconds.
const SETTLE: Duration = Duration::from_secs(3);

/// The timed wait the main thread of `pid` is blocked in: the system call's number, and its
/// absolute `CLOCK_REALTIME` deadline as read from the program's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TimedWait {
    nr: i64,
    pub deadline: Duration,
}

/// Whether the main thread of `pid` sleeps in a timed wait.
pub(super) fn waits_timed(pid: i32) -> bool {
    timed_wait(pid).is_some()
}

/// Whether the main thread of `pid` sleeps in a futex wait with no timeout at all (the wait
/// `sem_wait()` makes), read twice so that a wait left meanwhile does not count.
pub(super) fn waits_untimed(pid: i32) -> bool {
    let untimed = || {
        sleeping(pid)
            && inspect::call_of(pid, pid).is_some_and(|(nr, args)| {
                let command = args[1] as i32 & libc::FUTEX_CMD_MASK;
                nr == libc::SYS_futex
                    && matches!(command, libc::FUTEX_WAIT | libc::FUTEX_WAIT_BITSET)
                    && args[3] == 0
            })
    };
    untimed() && untimed()
}

/// How far ahead of `CLOCK_MONOTONIC`'s now lies the deadline of the futex wait the main thread
/// of `pid` sleeps in, when that deadline is an absolute time on `CLOCK_MONOTONIC` (a bitset
/// wait without `FUTEX_CLOCK_REALTIME`, as `sem_clockwait(CLOCK_MONOTONIC)` makes it, where
/// `sem_timedwait()` sets the flag); `None` for any other wait.
pub(super) fn monotonic_deadline_ahead(pid: i32) -> Option<Duration> {
    if !sleeping(pid) {
        return None;
    }
    let (nr, args) = inspect::call_of(pid, pid)?;
    let op = args[1] as i32;
    if nr != libc::SYS_futex
        || op & libc::FUTEX_CMD_MASK != libc::FUTEX_WAIT_BITSET
        || op & libc::FUTEX_CLOCK_REALTIME != 0
        || args[3] == 0
    {
        return None;
    }
    let memory = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut bytes = [0u8; 16];
    memory.read_exact_at(&mut bytes, args[3]).ok()?;
    let secs = u64::try_from(i64::from_ne_bytes(bytes[..8].try_into().ok()?)).ok()?;
    let nanos = u32::try_from(i64::from_ne_bytes(bytes[8..].try_into().ok()?)).ok()?;
    let now = Duration::from(nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).ok()?);
    Some(Duration::new(secs, nanos.min(999_999_999)).saturating_sub(now))
}

/// The POSIX timers `pid` has made (`/proc/PID/timers`: the signal each sends and to whom), in
/// words; `None` when it has none (or the kernel does not list them).
pub(super) fn posix_timers(pid: i32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/timers")).ok()?;
    let timers: Vec<String> = text
        .split("ID:")
        .filter_map(|timer| {
            let field = |name: &str| {
                timer
                    .lines()
                    .find_map(|l| l.trim().strip_prefix(name))
                    .map(|v| v.trim().to_string())
            };
            let signal = field("signal:")?;
            let number = signal.split('/').next()?.parse::<i32>().ok()?;
            // "signal/tid.N": the signal goes to thread N; "signal/pid.N" to the process.
            let notify = field("notify:").unwrap_or_default();
            let to = match notify.split_once('/').map(|(_, to)| to.split_once('.')) {
                Some(Some(("tid", id))) => format!(" to thread {id}"),
                Some(Some(("pid", id))) => format!(" to process {id}"),
                _ => String::new(),
            };
            Some(format!(
                "{}{to}",
                crate::engine::process::signal_name(number)
            ))
        })
        .collect();
    (!timers.is_empty()).then(|| timers.join(", "))
}

/// Whether the main thread of `pid` sleeps (in a system call, interruptibly).
fn sleeping(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(") ")?.1.chars().next())
        == Some('S')
}

/// The timed wait (a futex wait on `CLOCK_REALTIME`, as `sem_timedwait()` makes, or
/// `mq_timedreceive()`) the main thread of `pid` sleeps in; `None` when it is in no such wait.
/// The call is read again after the deadline, so that a wait left meanwhile gives nothing.
pub(super) fn timed_wait(pid: i32) -> Option<TimedWait> {
    if !sleeping(pid) {
        return None;
    }
    let (nr, args) = inspect::call_of(pid, pid)?;
    let op = args[1] as i32;
    let addr = match nr {
        libc::SYS_futex if op & libc::FUTEX_CLOCK_REALTIME != 0 => args[3],
        libc::SYS_mq_timedreceive => args[4],
        _ => return None,
    };
    if addr == 0 {
        return None;
    }
    let memory = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut bytes = [0u8; 16];
    memory.read_exact_at(&mut bytes, addr).ok()?;
    let secs = i64::from_ne_bytes(bytes[..8].try_into().ok()?);
    let nanos = i64::from_ne_bytes(bytes[8..].try_into().ok()?);
    if secs < 0 || !(0..1_000_000_000).contains(&nanos) {
        return None;
    }
    let again = inspect::call_of(pid, pid)?;
    (again == (nr, args) && sleeping(pid)).then_some(TimedWait {
        nr,
        deadline: Duration::new(secs as u64, nanos as u32),
    })
}

/// How far `CLOCK_REALTIME_COARSE` may lag the real time: one tick.
pub(super) fn coarse_tick() -> Duration {
    nix::time::clock_getres(ClockId::CLOCK_REALTIME_COARSE)
        .map(Duration::from)
        .unwrap_or(Duration::from_millis(4))
}

pub(super) fn realtime() -> Duration {
    clock_gettime(ClockId::CLOCK_REALTIME)
        .map(Duration::from)
        .unwrap_or_default()
}

fn describe(wait: &TimedWait) -> String {
    let call = if wait.nr == libc::SYS_mq_timedreceive {
        "mq_timedreceive()"
    } else {
        "a futex wait (sem_timedwait())"
    };
    format!(
        "{call} with the deadline {:.6} s",
        wait.deadline.as_secs_f64()
    )
}

/// Interrupts the wait of each of `procs` (blocked, with nothing to do) with SIGUSR1 on every
/// thread, three times. Each time the signal must be delivered while it waits (a wait that
/// blocks signals keeps it pending), and the side must enter its timed wait again with the same
/// absolute deadline (read from its memory before and after), never report a failure.
/// `timeout` is the timeout of each one's waits, and `since` (`CLOCK_REALTIME`) a moment
/// before each began its wait: the deadline of one timed wait with the whole timeout lies at
/// least `timeout` after it, and at most `timeout` after now (it was taken before now).
pub fn interrupt_waits(
    procs: &mut [(&mut Proc, &str, Duration)],
    since: Duration,
) -> Result<(), Fail> {
    for (proc, who, timeout) in procs.iter_mut() {
        let timeout = *timeout;
        let pid = proc.pid.as_raw();
        let until = Instant::now() + SETTLE;
        let mut first = timed_wait(pid);
        while first.is_none() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
            first = timed_wait(pid);
        }
        if let Some(wait) = first {
            whole_deadline(proc, who, wait, since, timeout)?;
        }
        let main_blocks_usr1 =
            inspect::has_signal(pid, pid, SignalMask::Blocked, Signal::SIGUSR1 as i32);
        if main_blocks_usr1 && (first.is_some() || sleeping(pid)) {
            let wait = first.map_or("its wait".to_string(), |wait| describe(&wait));
            return Err(Fail::failed(format!(
                "{who} (pid {pid}) blocks SIGUSR1 (SigBlk in /proc/{pid}/task/{pid}/status) \
                 while it sleeps in {wait}: a signal sent now stays pending until the wait \
                 ends. The wait must stay open to signals (main.rs handles SIGUSR1) and be \
                 retried after EINTR, until the deadline it had"
            )));
        }
        // An ignored signal is discarded on arrival: the program's handler never runs.
        let ignores_usr1 =
            inspect::has_signal(pid, pid, SignalMask::Ignored, Signal::SIGUSR1 as i32);
        if ignores_usr1 && (first.is_some() || sleeping(pid)) {
            let wait = first.map_or("its wait".to_string(), |wait| describe(&wait));
            return Err(Fail::failed(format!(
                "{who} (pid {pid}) ignores SIGUSR1 (SIG_IGN: SigIgn in \
                 /proc/{pid}/task/{pid}/status) while it sleeps in {wait}, though main.rs gives \
                 SIGUSR1 a handler: a signal sent now is discarded and the program's handler \
                 never runs. Leave the program's signal handlers alone around a wait: let the \
                 signal interrupt it and retry after EINTR, until the deadline it had"
            )));
        }
        // What it said before any signal came is no answer to a signal.
        if let Some(said) = proc.recv_before(Instant::now())? {
            let seen = first.map_or(
                "the grader never saw it asleep in a timed wait (sem_timedwait() or \
                 mq_timedreceive())"
                    .to_string(),
                |wait| format!("it had slept in {}", describe(&wait)),
            );
            return Err(Fail::failed(format!(
                "{who} (pid {pid}), given a timeout of {} ms, with nothing to do until the \
                 grader let the other side go on, said `{}` ({}) before the grader sent any \
                 signal; {seen}: its wait ended on its own, before its timeout. A wait blocks \
                 until the other side posts or its deadline (CLOCK_REALTIME now + the \
                 timeout) has passed",
                timeout.as_millis(),
                said.kind,
                failure(&said)
            )));
        }
        for round in 1..=3 {
            let sent = realtime();
            force::signal_every_thread(pid, Signal::SIGUSR1);
            let until = Instant::now() + SETTLE;
            // Whether SIGUSR1 is still pending on the main thread (the one that waits): other
            // threads may block signals as they please.
            let usr1 = Signal::SIGUSR1 as i32;
            let usr1_pending = || inspect::has_signal(pid, pid, SignalMask::Pending, usr1);
            let mut again = None;
            while Instant::now() < until {
                if let Some(said) = proc.recv_before(Instant::now() + Duration::from_millis(1))? {
                    return Err(Fail::failed(format!(
                        "{who} (pid {pid}) was blocked in its wait when the grader sent it \
                         SIGUSR1 (whose handler does nothing), and it said `{}` ({}): a wait \
                         that a signal interrupts fails with EINTR and must be retried, until \
                         the deadline it had",
                        said.kind,
                        failure(&said)
                    )));
                }
                if !usr1_pending() {
                    again = timed_wait(pid);
                    // A wait whose deadline the grader cannot read is judged by other checks.
                    if again.is_some() || (first.is_none() && sleeping(pid)) {
                        break;
                    }
                }
            }
            if usr1_pending() {
                return Err(Fail::failed(format!(
                    "{who} (pid {pid}) was blocked in its wait, and SIGUSR1 (signal {round} of \
                     3) stayed pending on its waiting thread for {} s without being delivered: \
                     it blocks signals while it waits. The wait must stay open to signals and \
                     be retried after EINTR",
                    SETTLE.as_secs()
                )));
            }
            if first.is_none() && again.is_none() && sleeping(pid) {
                continue;
            }
            let Some(again) = again else {
                return Err(Fail::failed(format!(
                    "{who} (pid {pid}) was blocked in its wait, and {} s after SIGUSR1 \
                     (signal {round} of 3) it was not back in a timed wait \
                     (sem_timedwait() or mq_timedreceive()): after EINTR, wait again",
                    SETTLE.as_secs()
                )));
            };
            if let Some(first) = first
                && first != again
            {
                // A deadline of now + the timeout, taken after the signal, is a restart.
                let cause =
                    if again.deadline >= sent + timeout && again.deadline <= realtime() + timeout {
                        format!(
                            "It took a new deadline (now + its timeout of {} ms) after the signal",
                            timeout.as_millis()
                        )
                    } else {
                        "It takes a new deadline when a signal interrupts it, or it waits in \
                     slices with deadlines of their own"
                            .to_string()
                    };
                return Err(Fail::failed(format!(
                    "{who} (pid {pid}) was blocked in {}; after SIGUSR1 (signal {round} of 3) \
                     it waited again in {}: a wait's timeout counts from the start of that \
                     wait, so a wait retried after EINTR keeps the deadline it had. {cause}",
                    describe(&first),
                    describe(&again)
                )));
            }
        }
    }
    Ok(())
}

/// Fails unless `wait`, the timed wait `proc` (`who`) sleeps in, which began after `since`,
/// has a deadline at least `timeout` after `since` (and no later than now + `timeout`): one
/// timed wait with the whole timeout, until the other side posts or the timeout has passed.
/// A deadline short of that is told apart by what follows: a new deadline of its own a moment
/// later (slices: it polls), or a wait that stays with it (a deadline computed short).
fn whole_deadline(
    proc: &mut Proc,
    who: &str,
    wait: TimedWait,
    since: Duration,
    timeout: Duration,
) -> Result<(), Fail> {
    // Clocks are read a microsecond apart, and the deadline is taken after `since`.
    let slack = Duration::from_millis(2);
    let earliest = since + timeout;
    // Taken before the grader read it: now + the timeout at the latest.
    let latest = realtime() + timeout;
    if wait.deadline > latest + slack {
        let pid = proc.pid.as_raw();
        return Err(Fail::failed(format!(
            "{who} (pid {pid}) was blocked in {}, given a timeout of {} ms: that deadline lies \
             {} ms past the grader's clock now + the timeout, later than any deadline of this \
             wait could be (it was taken before now): the wait is longer than its timeout (a \
             timeout rounded up, to whole seconds or otherwise, or added twice). A wait's \
             deadline is CLOCK_REALTIME now + exactly the timeout",
            describe(&wait),
            timeout.as_millis(),
            (wait.deadline - latest).as_millis()
        )));
    }
    if wait.deadline + slack >= earliest {
        return Ok(());
    }
    let pid = proc.pid.as_raw();
    let short = earliest - wait.deadline;
    let now = realtime();
    let ahead = wait.deadline.saturating_sub(now);
    // A deadline due within a second: watch whether the same wait takes a new one of its own
    // once it passes, while nothing was posted (the other side is held) and no signal came.
    let mut next = None;
    if ahead < Duration::from_secs(1) {
        let until = Instant::now() + ahead + Duration::from_millis(300);
        while Instant::now() < until {
            if let Some(said) = proc.recv_before(Instant::now() + Duration::from_millis(2))? {
                return Err(Fail::failed(format!(
                    "{who} (pid {pid}) waited in {}, {} ms after it was at the latest due to \
                     start waiting, though it was given a timeout of {} ms, and it then said \
                     `{}` ({}) while the other side was held: a wait gives up only after its \
                     whole timeout, counted from the start of that wait (CLOCK_REALTIME now + \
                     the timeout)",
                    describe(&wait),
                    (wait.deadline.as_millis() as i128 - since.as_millis() as i128),
                    timeout.as_millis(),
                    said.kind,
                    failure(&said)
                )));
            }
            if let Some(other) = timed_wait(pid).filter(|w| w.deadline != wait.deadline) {
                next = Some(other);
                break;
            }
        }
    }
    let began = format!(
        "{who} (pid {pid}) was blocked in {}, given a timeout of {} ms; its wait began after \
         the grader's `go` at {:.6} s, so one timed wait with the whole timeout has a deadline \
         of {:.6} s or later: this one is {} ms short of that",
        describe(&wait),
        timeout.as_millis(),
        since.as_secs_f64(),
        earliest.as_secs_f64(),
        short.as_millis()
    );
    if let Some(next) = next {
        return Err(Fail::failed(format!(
            "{began}, and once it passed, with nothing posted (the other side held) and no \
             signal sent, it waited again in {}: it waits in slices with deadlines of their \
             own, waking up to look again, which is polling. Wait in one sem_timedwait() (or \
             mq_timedreceive()) whose deadline is now + the whole timeout, and let the other \
             side's post wake it",
            describe(&next)
        )));
    }
    let fraction = timeout.subsec_nanos() > 0;
    let cause = if fraction && short > Duration::from_millis(500) && short <= Duration::from_secs(1)
    {
        format!(
            "about a second: the timeout's {} ms beyond the whole seconds, added to tv_nsec, \
             reach 1,000,000,000, and the carry into tv_sec was dropped (subtracting 10^9 \
             from tv_nsec must add 1 to tv_sec), or only the whole seconds of the timeout \
             were added",
            timeout.subsec_millis()
        )
    } else {
        format!(
            "its deadline is not now + the whole timeout: it lies {} ms after the grader's \
             `go`, as a timeout of at most that would give (a timeout other than the one given, \
             such as a fixed one of its own, or a part of it dropped), or a deadline taken \
             before the wait began, or a wait cut into slices{}",
            earliest
                .saturating_sub(short)
                .saturating_sub(since)
                .as_millis(),
            if short <= coarse_tick() + slack {
                format!(
                    ", or a deadline read from a coarse clock (CLOCK_REALTIME_COARSE: the time \
                     of the kernel's last tick, up to {} ms behind)",
                    coarse_tick().as_millis()
                )
            } else {
                String::new()
            }
        )
    };
    Err(Fail::failed(format!(
        "{began}: {cause}. A wait's deadline is CLOCK_REALTIME now + the timeout, taken when \
         the wait starts (TimeSpec::from_duration and TimeSpec addition carry the nanoseconds)"
    )))
}

/// How many times in a row, after the signals, the grader makes a wait fail with EINTR (with
/// ptrace, without a signal): a retry that gives up after any count a program would pick (8,
/// 10, 100, 1000, 1024: one past it) is caught.
const FORCED_EINTRS: u32 = 1025;

/// Makes the timed wait `proc` (`who`) sleeps in fail with EINTR [`FORCED_EINTRS`] times in a
/// row, as a signal caught by a handler without `SA_RESTART` makes it fail: a futex wait
/// (`sem_timedwait()`) when `futex`, else `mq_timedreceive()`. Each time it must wait again,
/// and say nothing; then it must be back in its timed wait.
pub fn force_eintrs(proc: &mut Proc, who: &str, futex: bool) -> Result<(), Fail> {
    // A futex wait with a deadline, interrupted by the tracer's attach, goes on as
    // restart_syscall().
    const FUTEX: &[i64] = &[libc::SYS_futex, libc::SYS_restart_syscall];
    let (call, name) = if futex {
        (Call::one_of(FUTEX), "sem_timedwait()")
    } else {
        (Call::any(libc::SYS_mq_timedreceive), "mq_timedreceive()")
    };
    let pid = proc.pid.as_raw();
    let Some(waiting) = timed_wait(pid) else {
        return Ok(());
    };
    let forcing = Instant::now();
    // On a machine loaded enough, the forced EINTRs outlast the wait's whole timeout: then its
    // end is its deadline's, not a retry given up.
    let out_of_time = |failed: u32| {
        (realtime() >= waiting.deadline).then(|| {
            Fail::TimedOut(format!(
                "{who} (pid {pid}) waited on through SIGUSR1 three times; then the grader made \
                 its {name} fail with EINTR {failed} time(s) in a row (with ptrace), which took \
                 {:.1} s on a machine this loaded, past the deadline of the wait it was in: its \
                 time ran out meanwhile, so its end says nothing of its retries; not judged",
                forcing.elapsed().as_secs_f64()
            ))
        })
    };
    let fail = Action::FailTimes(libc::EINTR, FORCED_EINTRS);
    let Some(mut tracer) = Tracer::attach(pid, call, fail)? else {
        return Ok(());
    };
    let gave_up = |failed: u32, what: String| {
        // Its own error naming EINTR after retries: the program stopped retrying, a count
        // reached (without retries, the kernel's restart may be what it relied on).
        let cause = if failed > 1 && what.contains("EINTR") {
            "it gives up after a number of EINTRs in a row: a limit on the retries, which no \
             wait may have"
        } else {
            "neither a limit on the retries nor the kernel's restart of the call (SA_RESTART) \
             does that"
        };
        Fail::failed(format!(
            "{who} (pid {pid}) waited on through SIGUSR1 three times; then the grader made its \
             {name} fail with EINTR {failed} time(s) in a row (with ptrace, as a signal caught \
             by a handler without SA_RESTART does), and then it {what}: a wait must be retried \
             every time it fails with EINTR, however often, until the deadline it had; {cause}"
        ))
    };
    for failed in 0..FORCED_EINTRS {
        let until = Instant::now() + SETTLE;
        loop {
            if tracer.failed_before(Instant::now() + Duration::from_millis(5))? {
                break;
            }
            if let Some(said) = proc.recv_before(Instant::now())? {
                return Err(out_of_time(failed).unwrap_or_else(|| {
                    gave_up(failed, format!("said `{}` ({})", said.kind, failure(&said)))
                }));
            }
            if Instant::now() >= until {
                return Err(gave_up(failed, format!("no longer waits in {name}")));
            }
        }
    }
    drop(tracer);
    let until = Instant::now() + SETTLE;
    while timed_wait(pid).is_none() {
        if let Some(said) = proc.recv_before(Instant::now() + Duration::from_millis(1))? {
            return Err(out_of_time(FORCED_EINTRS).unwrap_or_else(|| {
                gave_up(
                    FORCED_EINTRS,
                    format!("said `{}` ({})", said.kind, failure(&said)),
                )
            }));
        }
        if Instant::now() >= until {
            return Err(gave_up(
                FORCED_EINTRS,
                format!("was not back in {name} {} s later", SETTLE.as_secs()),
            ));
        }
    }
    Ok(())
}
