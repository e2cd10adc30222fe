//! A deadline `sem_timedwait()` refuses: its nanoseconds made one past the largest valid value
//! in the waiting side's memory, at the call's entry, so that the C library answers `EINVAL`
//! (its futex wait never sees that error: the C library itself checks the deadline). `EINVAL`
//! is neither `EINTR` nor `ETIMEDOUT`: wait() returns it as `HandoffError::Wait`, once.

use std::time::{Duration, Instant};

use rand::RngExt;

use super::handover::{Handover, report_failure};
use super::probe;
use super::{CONSUMER, PRODUCER};
use crate::engine::tracer::{Breakpoint, Tracer};
use crate::engine::{Fail, Run};

/// `tv_nsec` one past the largest a timespec may hold.
const REFUSED_NANOS: i64 = 1_000_000_000;
/// How long the waiting side has to report `kind=wait` once its timed wait said `EINVAL`.
const REPORT_LIMIT: Duration = Duration::from_secs(2);

/// The grader holds one side (the producer or the consumer, by the seed) before a record, and
/// stops the other at the entry of its next `sem_timedwait()`, in its wait for the held side;
/// there it sets the deadline's `tv_nsec` to 10^9, so that the call fails with `EINVAL`, and
/// watches for the side's next `sem_timedwait()`: it must report `kind=wait` and make none.
pub fn refused_deadline(run: &mut Run) -> Result<String, Fail> {
    let hold_producer = run.rng().random_bool(0.5);
    let (pause, held, waiter_role, waiting_for) = if hold_producer {
        ("--pause-producer-at", "producer", CONSUMER, "ready")
    } else {
        ("--pause-consumer-at", "consumer", PRODUCER, "ok")
    };
    let at = run.rng().random_range(10..50u64).to_string();
    let mut handover = Handover::start(run, "semaphores", 100, &[pause, &at])?;
    let waiter = if hold_producer {
        handover.consumer
    } else {
        handover.producer
    };
    handover.go()?;
    let message = handover.proc.recv_any()?;
    match (message.kind.as_str(), message.get("role")) {
        ("paused", Some(role)) if role == held => {}
        ("failed", _) => return Err(handover.failure(&message)),
        (kind, _) => {
            return Err(Fail::failed(format!(
                "the program said an unexpected `{kind}`"
            )));
        }
    }
    let not_tried = |handover: &mut Handover, why: &str| -> Result<String, Fail> {
        handover.proc.kill_tree();
        Ok(format!("semaphores: {why} (a refused deadline not tried)"))
    };
    let Some(mut tracer) = Tracer::break_at_function(waiter, c"sem_timedwait")? else {
        return not_tried(&mut handover, "no breakpoint on sem_timedwait()");
    };
    // The held wait's next slice enters sem_timedwait() within a slice.
    let until = Instant::now() + Duration::from_secs(1);
    let refused = loop {
        match tracer.next_break(until)? {
            Some(Breakpoint::At([_, deadline])) => {
                let nanos = REFUSED_NANOS.to_ne_bytes();
                let poked = deadline != 0 && probe::poke(waiter, deadline + 8, &nanos).is_ok();
                tracer.go_on();
                break poked;
            }
            Some(Breakpoint::Armed) => {}
            None if Instant::now() < until => {}
            _ => break false,
        }
    };
    if !refused {
        drop(tracer);
        return not_tried(
            &mut handover,
            &format!("{waiter_role} was not stopped in sem_timedwait()"),
        );
    }
    let situation = format!(
        "the grader held the {held} before record {at} and, at the entry of {waiter_role}'s \
         next sem_timedwait() in its wait for {waiting_for}, set the deadline's tv_nsec to \
         1000000000 (one past the largest valid), so that sem_timedwait() failed with EINVAL \
         (semaphores)"
    );
    // Either a report, or the waiting side back in sem_timedwait(): it waited again.
    let until = Instant::now() + REPORT_LIMIT;
    let mut again = false;
    let report = loop {
        if let Some(message) = handover
            .proc
            .recv_before(Instant::now() + Duration::from_millis(5))?
        {
            break Some(message);
        }
        match tracer.next_break(Instant::now() + Duration::from_millis(5))? {
            Some(Breakpoint::At(_)) => {
                again = true;
                break None;
            }
            Some(Breakpoint::Armed) | None if Instant::now() < until => {}
            _ => break None,
        }
    };
    drop(tracer);
    let report = match report {
        Some(report) => report,
        // Neither: a machine too slow to tell; judged only on a second call.
        None if !again => {
            handover.proc.kill_tree();
            return Ok(format!(
                "semaphores: {waiter_role} neither reported nor waited again within {} s of its \
                 refused deadline (not judged)",
                REPORT_LIMIT.as_secs()
            ));
        }
        None => {
            handover.proc.kill_tree();
            return Err(Fail::failed(format!(
                "{situation}: {waiter_role} called sem_timedwait() again instead of reporting \
                 kind=wait: wait() took EINVAL for a passing problem of \
                 the deadline and waited again. Any error of the timed wait but EINTR and \
                 ETIMEDOUT ends wait() with HandoffError::Wait (kind=wait), EINVAL too: a \
                 deadline read from the clock and carried right is never refused, so EINVAL \
                 says the semaphore or the deadline is broken, and waiting again fails again, \
                 or hides the fault"
            )));
        }
    };
    let waiter_name = if hold_producer {
        "consumer"
    } else {
        "producer"
    };
    match (report.kind.as_str(), report.get("role"), report.get("kind")) {
        ("failed", Some(role), Some("wait")) if role == waiter_name => {}
        ("failed", Some(role), _) if role == waiter_name => {
            handover.proc.kill_tree();
            return Err(report_failure(&report, "semaphores"));
        }
        ("failed", _, _) => {
            handover.proc.kill_tree();
            return Err(handover.failure(&report));
        }
        (kind, _, _) => {
            handover.proc.kill_tree();
            return Err(Fail::failed(format!(
                "{situation}: the program said `{kind}`, not {waiter_role}'s kind=wait"
            )));
        }
    }
    // The held side, let go, finds its peer gone.
    handover.proc.send("go", &[])?;
    loop {
        let message = handover.proc.recv_any()?;
        match (message.kind.as_str(), message.get("kind")) {
            ("failed", Some("peer-gone")) if message.get("role") == Some(held) => {}
            ("failed", _) => return Err(handover.failure(&message)),
            ("done", _) => {}
            ("ended", _) => break,
            (kind, _) => {
                return Err(Fail::failed(format!(
                    "the program said an unexpected `{kind}`"
                )));
            }
        }
    }
    handover.exit()?;
    Ok(format!(
        "semaphores: sem_timedwait() of the {waiter_name} with a deadline refused (EINVAL): \
         kind=wait"
    ))
}
