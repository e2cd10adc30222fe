//! A second handle on a new connection that cannot be had: the accepting thread's `dup()` of a
//! client it has just accepted (`try_clone`, the handle kept to shut the connection at the
//! stop) fails with EMFILE, as it does when the accept() took the last free descriptor, and
//! again at every retry, as it does while the limit holds. That costs that client at most
//! (served without the handle, or dropped and logged), never the accepting.

use std::time::{Duration, Instant};

use super::OP_ECHO;
use super::forced::ACCEPTS;
use super::observe;
use super::programs::Server;
use super::protocol::{frame, read_response, verify};
use crate::engine::tracer::{Action, Call, Tracer};
use crate::engine::{Fail, Run};

/// How many of the accepting thread's dup() calls in a row fail: the first and every retry a
/// server could make of it.
const DUPS_FAILED: u32 = 64;

/// Makes the accepting thread's next `dup()` (`fcntl(F_DUPFD_CLOEXEC)`) fail with EMFILE as a
/// client connects, and its retries too, until that client is answered or dropped; that client must be answered, or dropped and logged, and the next one
/// served. Skipped (with a note) when no thread is seen in accept(), the accepting thread makes
/// no such `dup()`, or the machine allows no tracing.
pub fn failed_dup_costs_one_client(run: &mut Run, server: &Server) -> Result<(), Fail> {
    let pid = server.pid();
    let not_probed = "a failed dup() of a new connection was not forced";
    let soon = || Instant::now() + Duration::from_secs(2);
    let Some((acceptor, _)) = observe::new_thread_in(pid, &[], &ACCEPTS, soon()) else {
        run.note(format!(
            "no thread of the server was seen in accept(): {not_probed}"
        ));
        return Ok(());
    };
    let dup = Call::arg_is(libc::SYS_fcntl, 1, libc::F_DUPFD_CLOEXEC as u64);
    // A descriptor limit does not lift for a retry: every dup() fails while the client is
    // taken on, not the first one only.
    let failing = Action::FailTimes(libc::EMFILE, DUPS_FAILED);
    let Some(mut tracer) = Tracer::attach_thread(pid, acceptor, dup, failing)? else {
        run.note(format!("the server could not be traced: {not_probed}"));
        return Ok(());
    };
    let known = server.dropped_lines().len();
    let mut conn = server.connect()?;
    if !tracer.failed_before(soon())? {
        run.note(format!(
            "the accepting thread made no dup() of a new connection (fcntl F_DUPFD_CLOEXEC): \
             {not_probed}"
        ));
        return Ok(());
    }
    let payload = b"served after a failed dup()?".to_vec();
    let forced = "the accepting thread's dup() (fcntl F_DUPFD_CLOEXEC: try_clone) of a client it \
                  had just accepted was made to fail with EMFILE, and every retry of it too \
                  (the descriptor limit, which the accept() itself may just have reached, \
                  lasts: a dup() tried again fails again)";
    let panicked = || {
        server
            .log()
            .lines()
            .find(|l| l.contains("panicked"))
            .map(|l| format!("; the server's log: `{l}`"))
            .unwrap_or_default()
    };
    let answered = conn
        .send(&frame(OP_ECHO, &payload), 0)
        .and_then(|()| read_response(&mut conn).map_err(|e| Fail::failed(e.to_string())));
    // The client is answered or given up: the next dup() is the next client's, let through.
    drop(tracer);
    match answered {
        Ok(got) => verify(got, OP_ECHO, &payload, "a client whose dup() failed")?,
        Err(_)
            if server
                .next_dropped_line(known, Duration::from_millis(500))
                .is_some() => {}
        Err(_) => {
            return Err(Fail::failed(format!(
                "{forced}: that client was neither answered nor logged with log_dropped{}{}. \
                 A failing call for one client costs that client at most, never the \
                 accepting: on a failed try_clone (retried or not) serve the client without \
                 the second handle, or drop it and log it, and go on accepting (no expect() or \
                 unwrap() there)",
                panicked(),
                server.alive_note()
            )));
        }
    }
    drop(conn);
    let mut next = server.connect()?;
    let payload = b"and the next one?".to_vec();
    next.send(&frame(OP_ECHO, &payload), 0)?;
    let got = read_response(&mut next).map_err(|e| {
        Fail::failed(format!(
            "{forced}; the next client got no response ({e}){}{}: the accepting ended with it. \
             A failing call for one client costs that client at most, never the accepting: on \
             a failed try_clone (retried or not) serve the client without the second handle, \
             or drop it and log it, and go on accepting (no expect() or unwrap() there)",
            panicked(),
            server.alive_note()
        ))
    })?;
    verify(got, OP_ECHO, &payload, "a client after a failed dup()")
}
