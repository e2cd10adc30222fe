//! The echo child's waits carry no deadline, however it set one: a timer armed at any time
//! (`alarm()` at its start, before anyone looks, as well as before each read) is still pending
//! when the child goes back to wait for input, and its `SIGALRM` ends a child whose parent is
//! merely slow. Nothing in `/proc` shows an `alarm()`: the grader's tracer reads the timer with a
//! `getitimer(ITIMER_REAL)` made in the child's place.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use super::outside;
use super::session::{Flags, settle_in_read, start};
use crate::engine::tracer::{Action, Call, Tracer};
use crate::engine::{Fail, Run};

pub fn child_arms_no_timer(run: &mut Run) -> Result<String, Fail> {
    let input = run.random_bytes(4 << 10);
    let mut session = start(run, input, Flags::default())?;
    let child = session.child;
    settle_in_read(child);
    let pipes = session.pipes()?;
    let Some(armed) = timer_at_next_read(child, pipes.child_reads_a, pipes.child_writes_b)? else {
        run.note("the grader may not trace the echo child here (ptrace): its timer was not read");
        let done = session.exchange()?;
        session.verify_echo(&done)?;
        session.finish()?;
        return Ok("the child's timer not read".into());
    };
    let done = session.exchange()?;
    if armed == Some(true) {
        session.finish()?;
        return Err(Fail::failed(format!(
            "the grader fed the echo child one byte; going back to read pipe A (fd {}), the child \
             had a real-time timer pending (read by the grader's tracer with getitimer \
             (ITIMER_REAL) at that read()): an alarm() or setitimer() it armed earlier, at its \
             start say, is a deadline on the whole transfer: SIGALRM ends the child whenever the \
             parent is slower than that (a large input, a loaded machine, the program stopped \
             with Ctrl-Z); arm no timer: the child waits by blocking in read(), with no deadline",
            pipes.child_reads_a
        )));
    }
    session.verify_echo(&done)?;
    session.finish()?;
    Ok(match armed {
        Some(_) => "going back to wait for input, the child had no timer pending".into(),
        None => "the child's timer not read (no read() of pipe A seen)".into(),
    })
}

/// Feeds the echo child (waiting in `read()` of pipe A, its descriptor `reads_a`) one byte, and
/// says whether it has a real-time timer pending as it goes back to read pipe A (`None`: no such
/// read seen); the byte's echo is then taken back out of pipe B (`writes_b`), so that an
/// exchange that follows is whole. `None` if the grader may not trace the child.
pub fn timer_at_next_read(
    child: i32,
    reads_a: i32,
    writes_b: i32,
) -> Result<Option<Option<bool>>, Fail> {
    // Opened before the tracer comes: a byte in pipe A makes the child read again.
    let mut feed = outside::open_pipe(child, reads_a, true)?;
    let mut echo = outside::open_pipe(child, writes_b, false)?;
    let read_a = Call::one_of_on(&[libc::SYS_read, libc::SYS_readv], reads_a);
    let Some(mut tracer) = Tracer::attach(child, read_a, Action::ReadRealTimer)? else {
        return Ok(None);
    };
    let _ = feed.write(b"?");
    drop(feed);
    let armed = tracer.real_timer_armed(Instant::now() + Duration::from_secs(2))?;
    drop(tracer);
    let until = Instant::now() + Duration::from_secs(2);
    while outside::bytes_in_pipe(&echo).unwrap_or(0) == 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
    }
    if outside::bytes_in_pipe(&echo).unwrap_or(0) > 0 {
        let _ = echo.read(&mut [0u8; 1]);
    }
    Ok(Some(armed))
}
