//! After `EINTR`, a wait goes straight back into its timed wait: the next call of the waiting
//! side that may wait is the semaphore's or the queue's own, not a sleep, a poll or a yield in
//! between. A post that comes meanwhile is then seen at once, and under a storm of signals the
//! side stays blocked on the signal, not asleep beside it.

use std::time::Instant;

use super::WAIT_SLICE;
use super::forced_waits::{the_wait, waiting_in};
use crate::engine::Fail;
use crate::engine::inspect;
use crate::engine::tracer::{Call, Step, Tracer};

/// The timed waits of a side: a futex wait with a deadline (`sem_timedwait()`,
/// `sem_clockwait()`) or `mq_timedreceive()`.
const TIMED_WAITS: [Call; 2] = [
    Call::bits(libc::SYS_futex, 1, 0x7f, libc::FUTEX_WAIT_BITSET as u64),
    Call::any(libc::SYS_mq_timedreceive),
];

/// The next call after the `EINTR`: a timed wait, or any other call that may wait.
const NEXT_WAIT: Call = Call::any_of(&[TIMED_WAITS[0], TIMED_WAITS[1], Call::waiting()]);

/// A waiting call other than the timed waits, in words.
fn other_wait(number: i64) -> String {
    match number {
        libc::SYS_nanosleep | libc::SYS_clock_nanosleep => "a sleep (nanosleep)".into(),
        libc::SYS_sched_yield => "sched_yield()".into(),
        libc::SYS_poll | libc::SYS_ppoll => "a poll()".into(),
        libc::SYS_select | libc::SYS_pselect6 => "a select()".into(),
        libc::SYS_epoll_wait | libc::SYS_epoll_pwait => "an epoll_wait()".into(),
        libc::SYS_pause | libc::SYS_rt_sigsuspend => "a wait for a signal (pause)".into(),
        libc::SYS_rt_sigtimedwait => "sigtimedwait()".into(),
        number => format!("system call {number}"),
    }
}

fn is_timed_wait(number: i64) -> bool {
    number == libc::SYS_futex || number == libc::SYS_mq_timedreceive
}

/// The grader makes the timed wait of `waiter` (`role`, waiting for `other`, held) return
/// `EINTR` once, as a signal handler's return does, and holds it at its next call that may
/// wait: that must be its timed wait again.
pub(super) fn waits_again_at_once(waiter: i32, role: &str, other: &str) -> Result<String, Fail> {
    let Some(wait) = waiting_in(waiter).and_then(the_wait) else {
        return Ok(format!("{role} was seen in no timed wait to interrupt"));
    };
    let Some(mut tracer) = Tracer::in_turn(
        waiter,
        [(wait, Step::Fail(libc::EINTR)), (NEXT_WAIT, Step::Hold)],
    )?
    else {
        return Ok("the grader may not trace the waiting side (ptrace)".into());
    };
    if !tracer.failed_before(Instant::now() + WAIT_SLICE * 5)? {
        tracer.release();
        return Ok(format!("{role}'s timed wait was not made to return EINTR"));
    }
    if !tracer.held_before(Instant::now() + WAIT_SLICE * 10)? {
        tracer.release();
        return Ok(format!("{role} made no call that waits after its EINTR"));
    }
    let number = inspect::call_of(waiter, waiter).map(|(number, _)| number);
    tracer.release();
    match number {
        Some(number) if !is_timed_wait(number) => Err(Fail::failed(format!(
            "the grader made {role}'s timed wait return EINTR (as the return of a signal \
             handler does) while it waited for {other}, which the grader held, and held {role} \
             at its next call that may wait: that was {}, not its timed wait again. wait() \
             sleeps or backs off after EINTR: a post that comes meanwhile is seen only once the \
             pause is over, and under a storm of signals the side spends its time asleep \
             instead of blocked on the semaphore or the queue. EINTR means wait again at once, \
             with a deadline read anew; the blocking is the timed wait's alone",
            other_wait(number)
        ))),
        _ => Ok(format!(
            "{role} went straight back into its timed wait after EINTR"
        )),
    }
}
