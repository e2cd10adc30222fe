//! Every timed wait of `wait()` follows a clock read: the grader stops the producer at each
//! clock read (the C library's `clock_gettime()`, and the system call for code that bypasses
//! it) and at each entry of `sem_timedwait()` / `sem_clockwait()` while it hands records over,
//! and wants a read of the wait's clock between any two timed waits. A deadline kept from an
//! earlier slice or call shows as a timed wait with no read before it, whatever the machine's
//! load, once two waits come less than a slice apart: the grader counts such pairs and goes on
//! until it has seen enough of them.

use std::time::{Duration, Instant};

use rand::RngExt;

use super::forced_waits::realtime;
use super::handover::Handover;
use super::probe;
use super::waits::millis;
use super::{PRODUCER, WAIT_SLICE};
use crate::engine::diagnose::clock_name;
use crate::engine::tracer::{AT_CALL, Breakpoint, Call, Tracer};
use crate::engine::{Fail, Run, inspect};

/// Rounds of the run: more than the producer needs to show [`PAIRS_WANTED`] close pairs.
const ROUNDS: u64 = 400;
/// Pairs of timed waits less than [`CLOSE`] apart the grader wants to have seen: in each, a
/// deadline kept since the earlier wait would still have been ahead.
const PAIRS_WANTED: u32 = 20;
/// Timed waits closer than this are a pair a kept deadline would show in: a slice, less a
/// margin for the grader's own delay in seeing the stop.
const CLOSE: Duration = WAIT_SLICE.saturating_sub(Duration::from_millis(20));
/// How long the grader follows the producer at most.
const FOLLOWED: Duration = Duration::from_secs(5);

/// The functions the tracer stops at, in this order ([`Tracer::last_break`]).
const FUNCTIONS: [&std::ffi::CStr; 3] = [c"clock_gettime", c"sem_timedwait", c"sem_clockwait"];
const READ: usize = 0;
const TIMED_WAIT: usize = 1;
const CLOCK_WAIT: usize = 2;

/// The clocks a read of which serves a deadline on `clock`: `CLOCK_REALTIME_COARSE` is on
/// `CLOCK_REALTIME`'s time (whether it is fine enough is judged elsewhere).
fn serves(read: i32, clock: i32) -> bool {
    read == clock || (clock == libc::CLOCK_REALTIME && read == libc::CLOCK_REALTIME_COARSE)
}

/// Hands records over with semaphores while the producer is stopped at every clock read and
/// timed wait, and fails at a timed wait with no read of its clock since the last one.
pub fn every_wait_reads_the_clock(run: &mut Run) -> Result<String, Fail> {
    let at = run.rng().random_range(2..6u64).to_string();
    let mut handover = Handover::start(
        run,
        "semaphores",
        ROUNDS,
        &["--pause-producer-at", at.as_str()],
    )?;
    let producer = handover.producer;
    let mut outcome = Ok("the producer's clock reads were not followed".to_string());
    let reports = handover.finish(|proc, _| {
        let call = Call::any(libc::SYS_clock_gettime);
        let tracer = Tracer::break_at_functions_and_call(producer, &FUNCTIONS, call)?;
        proc.send("go", &[])?;
        if let Some(tracer) = tracer {
            outcome = follow(tracer, producer);
        }
        Ok(())
    })?;
    let note = outcome?;
    handover.verify(
        &reports,
        "semaphores, every clock read and timed wait followed",
    )?;
    Ok(note)
}

/// What the grader saw of the producer's clock reads and timed waits.
#[derive(Default)]
struct Seen {
    waits: u32,
    /// Pairs of timed waits less than [`CLOSE`] apart, each with a read between.
    close_pairs: u32,
    /// The clocks read since the last timed wait.
    read_since: Vec<i32>,
    /// When the grader saw the last timed wait.
    last_wait: Option<Instant>,
}

fn follow(mut tracer: Tracer, pid: i32) -> Result<String, Fail> {
    let until = Instant::now() + FOLLOWED;
    let mut seen = Seen::default();
    while seen.close_pairs < PAIRS_WANTED && Instant::now() < until {
        let [first, second] = match tracer.next_break(Instant::now() + Duration::from_millis(5))? {
            Some(Breakpoint::At(args)) => args,
            Some(Breakpoint::Armed) | None => continue,
            Some(Breakpoint::Lost | Breakpoint::Unavailable) => break,
        };
        let stopped = Instant::now();
        let clock_of_wait = match tracer.last_break() {
            READ => {
                seen.read_since.push(first as i32);
                None
            }
            AT_CALL => {
                if let Some((_, args)) = inspect::call_of(pid, pid) {
                    seen.read_since.push(args[0] as i32);
                }
                None
            }
            TIMED_WAIT => Some((libc::CLOCK_REALTIME, "sem_timedwait()", second)),
            CLOCK_WAIT => Some((second as i32, "sem_clockwait()", 0)),
            _ => None,
        };
        if let Some((clock, function, deadline_at)) = clock_of_wait {
            let read = seen.read_since.iter().any(|&read| serves(read, clock));
            if let Some(last) = seen.last_wait {
                let apart = stopped - last;
                if !read {
                    let ahead = (deadline_at != 0)
                        .then(|| probe::timespec(pid, deadline_at))
                        .flatten()
                        .map(|deadline| match deadline.checked_sub(realtime()) {
                            Some(ahead) => format!(" (its deadline {} ahead)", millis(ahead)),
                            None => " (its deadline already past)".to_string(),
                        })
                        .unwrap_or_default();
                    let others = if seen.read_since.is_empty() {
                        "no clock read at all".to_string()
                    } else {
                        let names: Vec<String> =
                            seen.read_since.iter().map(|&c| clock_name(c)).collect();
                        format!("reads of {} only", names.join(", "))
                    };
                    tracer.release();
                    return Err(Fail::failed(format!(
                        "the grader stopped {PRODUCER} at every clock read and every timed \
                         wait while it handed records over: its timed wait number {} \
                         ({function}){ahead}, {} after the last one, came with {others} since \
                         that one, none of {}: that deadline was not read from the clock when \
                         this wait() began (one kept from an earlier slice or call, computed \
                         ahead, or counted on from another clock). Read the clock the wait \
                         measures its deadline on before every timed wait, the first of each \
                         wait() too: now + WAIT_SLICE",
                        seen.waits + 1,
                        millis(apart),
                        clock_name(clock)
                    )));
                }
                if apart < CLOSE {
                    seen.close_pairs += 1;
                }
            }
            seen.waits += 1;
            seen.read_since.clear();
            seen.last_wait = Some(stopped);
        }
        tracer.go_on();
    }
    tracer.release();
    Ok(format!(
        "each of the producer's {} timed waits followed a read of its clock ({} pairs less than \
         {} apart)",
        seen.waits,
        seen.close_pairs,
        millis(CLOSE)
    ))
}
