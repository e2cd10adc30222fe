//! The coordinator arms no timer: a tick (a signal whose handler broadcasts `all_done`, a timer
//! descriptor another thread reads) wakes its wait up by itself to look at the counts again, a
//! poll whatever its period, where only a worker's broadcast may wake it.

use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use crate::engine::tracer::{Action, Call, TIMERS, Tracer};
use crate::engine::{Fail, force, inspect};

/// What a call of [`TIMERS`] the coordinator is held at does.
pub(super) enum TimerCall {
    /// It sets no deadline (a zero value): it disarms, or was never a timer's.
    Disarms,
    /// It arms a timer: the call and what it asks for, as the message names them.
    Arms(String),
}

/// The call the coordinator (main thread `pid`) is held at, if it is one of [`TIMERS`]: what it
/// asks for, read from its arguments and the `itimerval` or `itimerspec` they point to.
pub(super) fn held_at_timer(pid: i32) -> Option<TimerCall> {
    let (number, args) = inspect::call_of(pid, pid)?;
    if !TIMERS.contains(&number) {
        return None;
    }
    if number == libc::SYS_alarm {
        return Some(match args[0] {
            0 => TimerCall::Disarms,
            seconds => TimerCall::Arms(format!("alarm({seconds}): a SIGALRM in {seconds} s")),
        });
    }
    let (call, new_value, fraction) = match number {
        libc::SYS_setitimer => {
            let which = match args[0] as i32 {
                libc::ITIMER_REAL => "ITIMER_REAL: SIGALRM",
                libc::ITIMER_VIRTUAL => "ITIMER_VIRTUAL: SIGVTALRM",
                libc::ITIMER_PROF => "ITIMER_PROF: SIGPROF",
                _ => "an unknown timer",
            };
            // An itimerval: its fractions are microseconds.
            (format!("setitimer() ({which})"), args[1], 1_000)
        }
        // An itimerspec: its fractions are nanoseconds.
        libc::SYS_timer_settime => ("timer_settime()".to_string(), args[2], 1),
        _ => ("timerfd_settime()".to_string(), args[2], 1),
    };
    // [interval seconds, interval fraction, value seconds, value fraction]
    let Some(words) = read_words(pid, new_value) else {
        return Some(TimerCall::Arms(call));
    };
    let time = |seconds: u64, part: u64| Duration::new(seconds, (part * fraction) as u32);
    let (interval, value) = (time(words[0], words[1]), time(words[2], words[3]));
    Some(if value.is_zero() {
        TimerCall::Disarms
    } else if interval.is_zero() {
        TimerCall::Arms(format!("{call}, once, in {value:?}"))
    } else {
        TimerCall::Arms(format!("{call}, every {interval:?}, first in {value:?}"))
    })
}

/// Four words of `pid`'s memory at `address` (the program is held, so they stay put).
fn read_words(pid: i32, address: u64) -> Option<[u64; 4]> {
    let memory = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut bytes = [0u8; 32];
    memory.read_exact_at(&mut bytes, address).ok()?;
    let word = |i: usize| u64::from_ne_bytes(bytes[8 * i..8 * i + 8].try_into().unwrap());
    Some([word(0), word(1), word(2), word(3)])
}

/// The failure of a coordinator seen arming a timer (`call`, as [`TimerCall::Arms`] names it),
/// `when` (the moment, as the message says it).
pub(super) fn armed_a_timer(call: &str, when: &str) -> Fail {
    Fail::failed(format!(
        "{when}, the coordinator armed a timer: {call} (a tracer on it held it at the call): \
         a timer wakes the coordinator up by itself (its signal's handler broadcasts all_done, \
         or its expiry wakes a thread) to look at the counts again when nothing has changed, \
         which is polling, whatever its period; wait_all_done() sleeps in pthread_cond_wait() \
         on all_done with no timeout and no other way of being woken: only a worker's \
         broadcast wakes it (a finish() makes one every time)"
    ))
}

/// Runs the coordinator, stopped before its first instruction, to its first `call` (its
/// `shm_open()` of the bank) and leaves it stopped just after that call, untraced, as
/// [`super::segment::stopped_after`] does; an arming of a timer on the way fails. `false` (the
/// program let go, untraced) if the machine does not allow tracing it or it made no such call
/// within 5 s.
pub(super) fn stopped_after_arming_none(pid: i32, call: Call) -> Result<bool, Fail> {
    // Kept for the life of the grader, as the tracer matches against it: a few bytes a run.
    let calls: &'static [Call] = Box::leak(Box::new([call, Call::one_of(TIMERS)]));
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let Some(mut tracer) = Tracer::attach(pid, Call::any_of(calls), Action::Hold)? else {
            force::resume(pid)?;
            return Ok(false);
        };
        force::resume(pid)?;
        if !tracer.held_before(until)? {
            return Ok(false);
        }
        match held_at_timer(pid) {
            None => {
                tracer.release_stopped(pid)?;
                return Ok(true);
            }
            // Traced again from where it stopped: only an arming counts.
            Some(TimerCall::Disarms) => tracer.release_stopped(pid)?,
            Some(TimerCall::Arms(armed)) => {
                tracer.release();
                return Err(armed_a_timer(
                    &armed,
                    "from its start to its shm_open() of the bank",
                ));
            }
        }
    }
}
