//! The stop with a client's handler held at its very start: a connection accepted before the
//! signal must be shut by the stop however far its handler has got, so it is registered for the
//! stop by the accepting thread, before the handler starts, not by the handler once it runs.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};

use super::Transport;
use super::observe;
use super::programs::{killed_by, server};
use super::stop_held::{AcceptorHeld, acceptor_held_at};
use crate::engine::tracer::{Action, Call};
use crate::engine::{Fail, Run};

/// The calls the C library makes first in a new thread, before any of the program's code.
const THREAD_START: [i64; 2] = [libc::SYS_rseq, libc::SYS_set_robust_list];

/// A client connects and stays idle; the thread the accepting thread starts for it is held by
/// the grader at its first system call (the C library's, before the handler's code), while the
/// accepting thread goes on. Then SIGTERM; once the thread that stops the server waits, the
/// handler is let go: the stop must have shut that client's connection, and the server stops.
/// Skipped (with a note) when no thread of the server accepts, none is started for the client,
/// or the machine allows no tracing.
pub fn registered_before_the_handler_starts(run: &mut Run) -> Result<(), Fail> {
    let server = server(run, Transport::Unix)?;
    server.ping()?;
    let pid = server.pid();
    let not_probed = "the stop with a handler held at its start was not probed";
    let start = Call::one_of(&THREAD_START);
    let held = acceptor_held_at(run, server, start, Action::OnNewThread, not_probed, || {
        "the accepting thread started no thread for a new client".into()
    })?;
    let Some(AcceptorHeld {
        mut server,
        acceptor,
        tracer,
        late,
    }) = held
    else {
        return Ok(());
    };
    let _ = kill(server.proc.pid, Signal::SIGTERM);
    // Until the accepting thread has ended and the main thread waits, asleep in a futex wait
    // (a join) several samples in a row: the stop has done whatever it does before it waits
    // for the held handler.
    let until = Instant::now() + Duration::from_secs(2);
    let mut asleep = 0;
    let mut early = None;
    while asleep < 5 && early.is_none() && Instant::now() < until {
        match server
            .proc
            .recv_before(Instant::now() + Duration::from_millis(5))
        {
            Ok(message) => early = message,
            Err(fail) => {
                tracer.release();
                return Err(killed_by(fail, Signal::SIGTERM));
            }
        }
        let threads = observe::threads(pid);
        let accepting = acceptor != pid && threads.iter().any(|t| t.tid == acceptor);
        let waiting = !accepting
            && threads
                .iter()
                .any(|t| t.tid == pid && t.state == 'S' && t.syscall == Some(libc::SYS_futex));
        asleep = if waiting { asleep + 1 } else { 0 };
    }
    let shut_while_held = late.peer_closed();
    tracer.release();
    // The client is idle: its handler ends only if the stop shuts its connection.
    let until = Instant::now() + Duration::from_secs(3);
    while early.is_none() && Instant::now() < until && !late.peer_closed() {
        match server
            .proc
            .recv_before(Instant::now() + Duration::from_millis(10))
        {
            Ok(message) => early = message,
            Err(fail) => return Err(killed_by(fail, Signal::SIGTERM)),
        }
    }
    if early.is_none() && !shut_while_held && !late.peer_closed() {
        return Err(Fail::failed(
            "at SIGTERM, with a client accepted just before (idle) whose handler's thread the \
             grader held at its very start (its first system call, the C library's, before any \
             of the handler's code) until the stop was waiting, the server did not stop within \
             3 s once that handler went on, and that client's connection was never shut: the \
             stop shut the open connections without it. Its connection was registered for the \
             stop (its second handle put where the stop finds it) by the handler itself, once \
             it ran, after the stop had shut the connections, and the handler then blocked in \
             read() for good. The accepting thread registers each connection before it starts \
             its handler, so that the stop, which ends the accepting thread before it shuts \
             the connections, finds every connection accepted",
        ));
    }
    server.finish(Signal::SIGTERM, Some(&late), early)?;
    Ok(())
}
