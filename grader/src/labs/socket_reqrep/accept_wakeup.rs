//! The stop's wake-up of the accepting thread, whenever it comes: the thread may be anywhere
//! in its loop, not only blocked in accept().

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};

use super::Transport;
use super::forced::ACCEPTS;
use super::observe;
use super::programs::server;
use crate::engine::tracer::{Breakpoint, Tracer};
use crate::engine::{Fail, Run};

/// The accepting thread, back from serving a client, is held at the entry of the C library's
/// `accept4()` (past any look at the stopping flag, not yet in the system call) while SIGTERM
/// comes and the stop wakes it its way; let go once the main thread waits, it must still end,
/// and the server stop. A wake-up that only interrupts a blocked `accept()` (a signal sent to
/// the thread) is lost there. Skipped (with a note) when no thread is seen in `accept()`, or
/// the machine allows no breakpoint.
pub fn wake_up_not_lost(run: &mut Run) -> Result<(), Fail> {
    let server = server(run, Transport::Unix)?;
    let pid = server.pid();
    let soon = || Instant::now() + Duration::from_secs(2);
    let skipped = |run: &mut Run, why: &str| {
        run.note(format!(
            "{why}: the wake-up of an accepting thread outside accept() was not probed"
        ))
    };
    let Some((acceptor, _)) = observe::new_thread_in(pid, &[], &ACCEPTS, soon()) else {
        skipped(run, "no thread of the server's was seen in accept()");
        server.stop()?;
        return Ok(());
    };
    let Some(mut tracer) = Tracer::break_at_function_in(pid, acceptor, c"accept4")? else {
        skipped(run, "no breakpoint could be set at accept4()");
        server.stop()?;
        return Ok(());
    };
    // A client: the accepting thread takes it, then comes back to accept4(), and is held there.
    let client = server.connect()?;
    let until = soon();
    let held = loop {
        match tracer.next_break(until)? {
            Some(Breakpoint::At(_)) => break true,
            None if Instant::now() < until => {}
            _ => break false,
        }
    };
    if !held {
        drop(tracer);
        skipped(run, "the accepting thread did not come back to accept4()");
        drop(client);
        server.stop()?;
        return Ok(());
    }
    let _ = kill(server.proc.pid, Signal::SIGTERM);
    // The stop has woken the accepting thread its way once the main thread waits for it.
    let until = soon();
    while Instant::now() < until
        && !observe::threads(pid)
            .iter()
            .any(|t| t.tid == pid && t.syscall == Some(libc::SYS_futex))
    {
        std::thread::sleep(Duration::from_millis(2));
    }
    drop(tracer);
    let mut server = server;
    if !server
        .proc
        .says_before(Instant::now() + Duration::from_secs(3))
    {
        let accepting = observe::threads(pid)
            .iter()
            .any(|t| t.tid == acceptor && t.syscall.is_some_and(|n| ACCEPTS.contains(&n)));
        if accepting {
            return Err(Fail::failed(
                "with the accepting thread held by the grader at the entry of accept4() (back \
                 from serving a client, past its look at the stopping flag, not yet in the \
                 system call) when SIGTERM came, and let go once the stop was waiting for it, \
                 the server never said `done`: that thread then blocked in accept() for good. \
                 The wake-up was lost: one that only interrupts a blocked accept() (a signal \
                 sent to the thread, EINTR) does nothing to a thread about to call it. Wake it \
                 with something that waits for it: connect to your own listener once, after \
                 setting the stopping flag (the connection waits in the listener's queue, \
                 however late accept() comes)",
            ));
        }
    }
    server.finish(Signal::SIGTERM, Some(&client), None)?;
    Ok(())
}
