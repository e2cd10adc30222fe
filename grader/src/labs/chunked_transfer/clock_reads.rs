//! Each wait's deadline is read from `CLOCK_REALTIME` when that wait begins: the grader stops
//! the sender and the receiver of one transfer at every clock read (the C library's
//! `clock_gettime()`, and the system call for code that bypasses it) and at every entry of
//! `sem_timedwait()` / `sem_clockwait()`, and wants a `CLOCK_REALTIME` read between any two
//! waits of each. A deadline counted on from one early read of the real-time clock with another
//! clock's time (right until the wall clock is set) shows as a wait with no such read before it.

use std::time::{Duration, Instant};

use super::transfer::{Setup, check_messages, start};
use crate::engine::diagnose::clock_name;
use crate::engine::tracer::{AT_CALL, Breakpoint, Call, Tracer};
use crate::engine::{Fail, Run, inspect};

/// The functions the tracer stops at, in this order ([`Tracer::last_break`]).
const FUNCTIONS: [&std::ffi::CStr; 3] = [c"clock_gettime", c"sem_timedwait", c"sem_clockwait"];
const READ: usize = 0;
const TIMED_WAIT: usize = 1;
const CLOCK_WAIT: usize = 2;
/// Waits the grader follows: a deadline kept from the first shows in the second.
const WAITS_WANTED: u32 = 12;
/// How long the grader follows a side at most.
const FOLLOWED: Duration = Duration::from_secs(3);

/// Sends `setup` with both sides stopped at every clock read and semaphore wait, each followed
/// by a thread of its own until it has made [`WAITS_WANTED`] waits, then checks what arrived.
pub fn both_sides_read_the_clock(run: &mut Run, setup: &Setup) -> Result<String, Fail> {
    let mut transfer = start(run, setup)?;
    let sides = [
        ("sender", transfer.sender.pid.as_raw()),
        ("receiver", transfer.receiver.pid.as_raw()),
    ];
    let mut followed = Vec::new();
    for (side, pid) in sides {
        let tracer = Tracer::break_at_functions_and_call(
            pid,
            &FUNCTIONS,
            Call::any(libc::SYS_clock_gettime),
        )?;
        followed.push((side, pid, tracer));
    }
    // Followed from before `go`: the receiver, held at its first clock read until its follower
    // lets it on, must reach its first wait before the sender is told to go.
    let (went, notes): (Result<(), Fail>, Vec<Result<String, Fail>>) =
        std::thread::scope(|scope| {
            let threads: Vec<_> = followed
                .into_iter()
                .map(|(side, pid, tracer)| {
                    scope.spawn(move || match tracer {
                        Some(tracer) => follow(tracer, pid, side, WAITS_WANTED),
                        None => Ok(format!("the {side}'s clock reads were not followed")),
                    })
                })
                .collect();
            let went = transfer.go();
            let notes = threads
                .into_iter()
                .map(|thread| thread.join().expect("a follower does not panic"))
                .collect();
            (went, notes)
        });
    went?;
    let notes = notes.into_iter().collect::<Result<Vec<String>, Fail>>()?;
    check_messages(run, &mut transfer, setup)?;
    transfer.finish()?;
    Ok(notes.join("; "))
}

fn follow(mut tracer: Tracer, pid: i32, side: &str, wanted: u32) -> Result<String, Fail> {
    let until = Instant::now() + FOLLOWED;
    let mut waits = 0u32;
    let mut read_since: Vec<i32> = Vec::new();
    while waits < wanted && Instant::now() < until {
        let [first, second] = match tracer.next_break(Instant::now() + Duration::from_millis(5))? {
            Some(Breakpoint::At(args)) => args,
            Some(Breakpoint::Armed) | None => continue,
            Some(Breakpoint::Lost | Breakpoint::Unavailable) => break,
        };
        let function = match tracer.last_break() {
            READ => {
                read_since.push(first as i32);
                None
            }
            AT_CALL => {
                if let Some((_, args)) = inspect::call_of(pid, pid) {
                    read_since.push(args[0] as i32);
                }
                None
            }
            TIMED_WAIT => Some("sem_timedwait()"),
            CLOCK_WAIT => Some(if second as i32 == libc::CLOCK_REALTIME {
                "sem_clockwait(CLOCK_REALTIME)"
            } else {
                "sem_clockwait()"
            }),
            _ => None,
        };
        if let Some(function) = function {
            let realtime = read_since
                .iter()
                .any(|&clock| matches!(clock, libc::CLOCK_REALTIME | libc::CLOCK_REALTIME_COARSE));
            if waits > 0 && !realtime {
                let others = if read_since.is_empty() {
                    "no clock read at all".to_string()
                } else {
                    let names: Vec<String> = read_since.iter().map(|&c| clock_name(c)).collect();
                    format!("reads of {} only", names.join(", "))
                };
                tracer.release();
                return Err(Fail::failed(format!(
                    "the grader stopped the {side} at every clock read and every semaphore wait \
                     of a message: its wait number {} ({function}) came with {others} since the \
                     one before, no read of CLOCK_REALTIME: its deadline was not read from the \
                     real-time clock when this wait began (kept from an earlier wait, or counted \
                     on from an early CLOCK_REALTIME read with another clock's time, which is \
                     wrong once the wall clock is set). Each wait's deadline is \
                     clock_gettime(CLOCK_REALTIME) + the timeout, read as that wait begins",
                    waits + 1
                )));
            }
            waits += 1;
            read_since.clear();
        }
        tracer.go_on();
    }
    tracer.release();
    Ok(format!(
        "each of the {side}'s {waits} semaphore waits followed a read of CLOCK_REALTIME"
    ))
}
