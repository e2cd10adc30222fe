//! The stop with accept() failing: at the descriptor limit the accept() that would return the
//! server's own wake-up connection fails (EMFILE) and keeps failing while it stays queued. The
//! accepting thread must look at the stopping flag whatever accept() returned; one that looks
//! only after a connection it got retries for ever and the stop never ends. The count it then
//! reports holds the clients accepted before the stop began, exactly: the wake-up connection,
//! never accepted, is not taken off.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};

use super::Transport;
use super::forced::ACCEPTS;
use super::observe;
use super::programs::{killed_by, server};
use crate::engine::tracer::{Action, Call, Tracer};
use crate::engine::{Fail, Run};

/// The failures forced in a row at most: far more than a server that stops needs (one).
const FAILURES: u32 = 40;

/// At SIGTERM the thread that waited for it is held by the grader at its connect() (the
/// stopping flag set, the accepting thread not yet woken); the accepting thread's accept() is
/// then made to fail with EMFILE, again and again, as it does at the descriptor limit. It must
/// end after the first failure. Skipped (with a note) when no thread is seen in accept() and
/// one in sigwait(), the stop wakes the accepting thread without a connect(), or the machine
/// allows no tracing.
pub fn accept_failing_at_the_stop(run: &mut Run) -> Result<(), Fail> {
    let server = server(run, Transport::Unix)?;
    server.ping()?;
    let pid = server.pid();
    let not_probed = "the stop with accept() failing was not probed";
    let soon = || Instant::now() + Duration::from_secs(2);
    let acceptor = observe::new_thread_in(pid, &[], &ACCEPTS, soon());
    let waiter = observe::thread_in(pid, libc::SYS_rt_sigtimedwait, soon());
    let (Some((acceptor, _)), Some(waiter)) = (acceptor, waiter) else {
        run.note(format!(
            "no thread of the server was seen in accept() and one in sigwait(): {not_probed}"
        ));
        server.stop()?;
        return Ok(());
    };
    let connect = Call::any(libc::SYS_connect);
    let Some(mut held) = Tracer::attach_thread(pid, waiter, connect, Action::Hold)? else {
        run.note(format!("the server could not be traced: {not_probed}"));
        server.stop()?;
        return Ok(());
    };
    let _ = kill(server.proc.pid, Signal::SIGTERM);
    if !held.held_before(soon())? {
        drop(held);
        run.note(format!(
            "the thread that waited for SIGTERM made no connect() at the stop: {not_probed}"
        ));
        server.finish(Signal::SIGTERM, None, None)?;
        return Ok(());
    }
    let accepts = Call::one_of(&ACCEPTS);
    let failing = Action::FailTimes(libc::EMFILE, FAILURES);
    let failures = match Tracer::attach_thread(pid, acceptor, accepts, failing)? {
        Some(tracer) => tracer.failed_count(Instant::now() + Duration::from_secs(2))?,
        None => 0,
    };
    held.release();
    if failures > 1 {
        return Err(Fail::failed(format!(
            "at SIGTERM, with the stop begun (the thread that waited for the signal held by the \
             grader at its connect() to the server's own socket, the stopping flag set), the \
             accepting thread's accept() was made to fail with EMFILE, as it does at the \
             descriptor limit, where the wake-up connection stays queued and every accept() \
             fails again: it called accept() {failures} times in a row{}, so it looks at the \
             stopping flag only after an accept() that returned a connection, and at the limit \
             the stop never ends. Look at the flag whatever accept() returned: an error once \
             it is set ends the loop too",
            if failures >= FAILURES {
                " (the grader stopped failing them there)"
            } else {
                ""
            }
        )));
    }
    if failures == 0 {
        run.note(format!(
            "the accepting thread made no accept() once the stop began: {not_probed}"
        ));
    }
    let done = server
        .finish(Signal::SIGTERM, None, None)
        .map_err(|fail| killed_by(fail, Signal::SIGTERM))?;
    if failures == 1 {
        counted_without_the_wake_up(done.get("clients"))?;
    }
    Ok(())
}

/// The count of a server that served one client, whose accept loop the failed accept() ended
/// at the stop, its own wake-up connection never accepted: `clients` must be 1.
fn counted_without_the_wake_up(clients: Option<&str>) -> Result<(), Fail> {
    let said = clients.unwrap_or("nothing");
    let situation = "after one client (served, gone before the signal) and a stop whose \
                     accept() failed with EMFILE once the stopping flag was set (forced by the \
                     grader), which ended the accepting loop with the server's own wake-up \
                     connection never accepted";
    match clients.and_then(|n| n.parse::<u64>().ok()) {
        Some(1) => Ok(()),
        Some(0) => Err(Fail::failed(format!(
            "the server's `done` says clients={said} {situation}: one short. The count takes \
             one off for the wake-up connection (counted with every accept() that returned a \
             connection), which is right only when the wake-up is what ends the loop: here \
             nothing was accepted once the stop began. Count a client only once accept() has \
             returned it and the stopping flag, looked at then, is not set; never correct the \
             count afterwards"
        ))),
        _ => Err(Fail::failed(format!(
            "the server's `done` says clients={said} {situation}: it accepted exactly 1 \
             client. ServerStats::clients counts the connections accepted before the stop \
             began, whatever ended the accepting loop, and no failed accept()"
        ))),
    }
}
