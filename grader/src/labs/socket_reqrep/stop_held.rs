//! The stop probed with a thread of the server held by the grader (the tracer): its main thread
//! right after its first shutdown(), a handler as its read() returns, at its close() of its
//! connection or at its exit(), the accepting thread at its dup() of a new client or at its
//! exit(). Each time the stop must stop accepting first, shut every connection still open and
//! wait, blocked, for every thread it started.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};

use super::forced::{ACCEPTS, READS};
use super::observe;
use super::programs::{Server, killed_by, server};
use super::protocol::{Conn, frame, read_frame, read_response, verify};
use super::{OP_ECHO, Transport};
use crate::engine::inspect;
use crate::engine::tracer::{Action, Call, Reached, Tracer};
use crate::engine::waiting::{self, WaitRules};
use crate::engine::{Fail, Run};

/// A Unix server with a client that made a call and stays connected (so that the stop has a
/// connection to shut), and the client.
fn server_with_idle_client(run: &mut Run) -> Result<(Server, Conn), Fail> {
    let server = server(run, Transport::Unix)?;
    let mut idle = server.connect()?;
    idle.send(&frame(OP_ECHO, b"hello"), 0)?;
    let got = read_response(&mut idle)
        .map_err(|e| Fail::failed(format!("no response to a first request: {e}")))?;
    verify(got, OP_ECHO, b"hello", "a first request")?;
    Ok((server, idle))
}

/// At SIGTERM the server's main thread is held right after its first shutdown() of a client's
/// connection; a client that connects then, while a thread still accepts, must not be served:
/// the stop begins by no longer accepting. Meanwhile every thread still blocks SIGTERM and
/// SIGINT, and a second SIGTERM and a SIGINT sent then do not end the stop. Skipped (with a note) when the main thread shuts no
/// connection itself, or the machine allows no tracing.
pub fn accepting_ends_before_shutting(run: &mut Run) -> Result<(), Fail> {
    let (mut server, idle) = server_with_idle_client(run)?;
    let pid = server.pid();
    let shutdown = Call::any(libc::SYS_shutdown);
    let Some(mut tracer) = Tracer::attach(pid, shutdown, Action::HoldAfter)? else {
        run.note("the server could not be traced: the order of its stop was not probed");
        server.stop()?;
        return Ok(());
    };
    let _ = kill(server.proc.pid, Signal::SIGTERM);
    let until = Instant::now() + Duration::from_secs(5);
    let held = tracer
        .wait(&mut server.proc, until)
        .map_err(|fail| killed_by(fail, Signal::SIGTERM))?;
    if let Reached::Passed(early) = held {
        run.note(
            "the server's main thread shut no connection: the order of its stop was not probed",
        );
        drop(tracer);
        server.finish(Signal::SIGTERM, Some(&idle), early)?;
        return Ok(());
    }
    // Only a thread still in accept() can take the client on; without one it waits in the
    // listener's queue, unanswered, until the listener closes.
    let accepting = observe::threads(pid)
        .iter()
        .any(|t| t.state == 'S' && t.syscall.is_some_and(|n| ACCEPTS.contains(&n)));
    let mut late = None;
    if accepting {
        let sockets = observe::sockets(pid).len();
        let mut conn = server.connect()?;
        let _ = conn
            .stream()
            .write_all(&frame(OP_ECHO, b"after the stop began"));
        // Until the server has taken it (a socket more), while its main thread is held.
        let until = Instant::now() + Duration::from_secs(2);
        while observe::sockets(pid).len() <= sockets && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
        late = Some(conn);
    }
    // Mid-stop, the signals must still be blocked in every thread: a second SIGTERM (an
    // impatient user, a service manager) must not end the server halfway through its cleanup.
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let open = observe::threads_not_blocking(pid, signal);
        if !open.is_empty() {
            tracer.release();
            return Err(Fail::failed(format!(
                "during the stop (its main thread held by the grader right after its first \
                 shutdown()), {} of the server's threads (tid {open:?}) no longer block {} \
                 (SigBlk in /proc/{pid}/task/TID/status): a second {} then ends the server \
                 halfway through its cleanup (its socket file left, no `done`); keep SIGTERM and \
                 SIGINT blocked in every thread until run_server returns, and do not unblock \
                 them after sigwait()",
                open.len(),
                signal.as_str(),
                signal.as_str()
            )));
        }
    }
    // A second signal of each kind, sent: they stay pending, blocked, and the stop goes on.
    let _ = kill(server.proc.pid, Signal::SIGTERM);
    let _ = kill(server.proc.pid, Signal::SIGINT);
    tracer.release();
    if let Some(mut late) = late
        && matches!(read_frame(&mut late), Ok(Some(_)))
    {
        return Err(Fail::failed(
            "after SIGTERM, a client that connected while the server's main thread was held by \
             the grader right after its first shutdown() of a client's connection was answered \
             once the server went on: the server still accepted clients after it had begun \
             shutting the open connections, and a client accepted after that shutting is not \
             shut, so its handler can hold up the stop. Stop accepting first (set the stopping \
             flag, wake the accepting thread and wait for it to end), then shut the open \
             connections",
        ));
    }
    // A server ended by the second signals exits before `done`: told apart from other early
    // ends, which finish() describes.
    if server
        .proc
        .says_before(Instant::now() + Duration::from_secs(5))
        && let Some(status) = server.proc.exit_status()
        && !status.success()
    {
        return Err(Fail::failed(format!(
            "a second SIGTERM and a SIGINT sent during the stop (the server's main thread held \
             by the grader right after its first shutdown(), both signals then blocked in \
             every thread as they must be) ended the server: it exited ({status}) without \
             `done`, its stop unfinished. A signal that comes during the stop, of either kind, \
             must not end it: SIGTERM and SIGINT stay blocked until run_server returns, and \
             nothing takes a pending one (sigpending, a second sigwait) as an order to quit"
        )));
    }
    server.finish(Signal::SIGTERM, Some(&idle), None)?;
    Ok(())
}

/// At SIGTERM a handler is held by the grader as its read() returns (its connection shut): the
/// thread that stops the server must wait for it blocked, with no timeout (a join), not sleep
/// and look again. Skipped (with a note) when no thread of the server's own serves the client,
/// or the machine allows no tracing.
pub fn handlers_joined_blocked(run: &mut Run) -> Result<(), Fail> {
    let server = server(run, Transport::Unix)?;
    let pid = server.pid();
    let ids = observe::thread_ids(pid);
    let idle = server.connect()?;
    let until = Instant::now() + Duration::from_secs(2);
    let Some((handler, read)) = observe::new_thread_in(pid, &ids, &READS, until) else {
        run.note("no thread of the server's own was seen reading a client: its wait for its handlers was not probed");
        drop(idle);
        server.stop()?;
        return Ok(());
    };
    let Some(mut tracer) = Tracer::attach_thread(pid, handler, Call::any(read), Action::HoldAfter)?
    else {
        run.note("the server could not be traced: its wait for its handlers was not probed");
        drop(idle);
        server.stop()?;
        return Ok(());
    };
    let _ = kill(server.proc.pid, Signal::SIGTERM);
    if !tracer.held_before(Instant::now() + Duration::from_secs(5))? {
        drop(tracer);
        server.finish(Signal::SIGTERM, Some(&idle), None)?;
        return Ok(());
    }
    let judged = waiting::expect_blocked(
        &[pid],
        &|_| "the server".into(),
        WaitRules::untimed(),
        "at SIGTERM, while a handler is still finishing (the grader held it as its read() \
         returned), the thread that stops the server must wait for it blocked: join it, do not \
         sleep and look again",
    );
    tracer.release();
    judged?;
    server.finish(Signal::SIGTERM, Some(&idle), None)?;
    Ok(())
}

/// At SIGTERM a handler is held by the grader at the entry of its thread's exit() (the last
/// thing a thread does, after everything it ran): run_server must not return before it, so the
/// server says nothing while the thread that stops it waits, blocked in a join (a futex wait).
/// A wait that ends when the handler says it is done (a count and a condition variable, a
/// channel) lets run_server return while the thread still runs. With `closed_first`, the client
/// closes its connection before the signal, and the handler, its work done, is held at its
/// exit() through the signal: a handle dropped at the stop because `is_finished()` said the
/// handler was done (true once the closure has returned, before the thread ends) is a thread
/// never waited for. With `then_another` too, another client is accepted while the handler is
/// held there, before the signal: a handle dropped from the list at an accept for the same
/// reason is never waited for either. Skipped (with a note) when no thread of the server's own
/// serves the client, or the machine allows no tracing.
pub fn handlers_ended_before_return(
    run: &mut Run,
    closed_first: bool,
    then_another: bool,
) -> Result<(), Fail> {
    let mut server = server(run, Transport::Unix)?;
    let pid = server.pid();
    let ids = observe::thread_ids(pid);
    let idle = server.connect()?;
    let not_probed = "whether run_server returns before its handlers' threads end was not probed";
    let until = Instant::now() + Duration::from_secs(2);
    let Some((handler, _)) = observe::new_thread_in(pid, &ids, &READS, until) else {
        run.note(format!(
            "no thread of the server's own was seen reading a client: {not_probed}"
        ));
        drop(idle);
        server.stop()?;
        return Ok(());
    };
    let exit = Call::any(libc::SYS_exit);
    let Some(mut tracer) = Tracer::attach_thread(pid, handler, exit, Action::Hold)? else {
        run.note(format!("the server could not be traced: {not_probed}"));
        drop(idle);
        server.stop()?;
        return Ok(());
    };
    let idle = if closed_first {
        // Its handler ends, and is held at its exit() before the signal.
        drop(idle);
        None
    } else {
        let _ = kill(server.proc.pid, Signal::SIGTERM);
        Some(idle)
    };
    if !tracer.held_before(Instant::now() + Duration::from_secs(5))? {
        drop(tracer);
        run.note(format!(
            "the client's handler thread was not seen ending: {not_probed}"
        ));
        if closed_first {
            server.stop()?;
        } else {
            server.finish(Signal::SIGTERM, idle.as_ref(), None)?;
        }
        return Ok(());
    }
    // With the handler held at its exit(), another client is accepted (its handler seen
    // reading) before the signal: a list of handlers tidied at each accept must not lose the
    // held one.
    let mut next = None;
    let mut accepted_next = false;
    if closed_first && then_another {
        let ids = observe::thread_ids(pid);
        let conn = server.connect()?;
        let until = Instant::now() + Duration::from_secs(2);
        accepted_next = observe::new_thread_in(pid, &ids, &READS, until).is_some();
        if !accepted_next {
            run.note(
                "no thread of the server's own was seen reading a client accepted while \
                 another's handler was held at its exit(): the list of handlers was not \
                 probed at an accept",
            );
        }
        next = Some(conn);
    }
    if closed_first {
        let _ = kill(server.proc.pid, Signal::SIGTERM);
    }
    let early = said_while_held(&mut server, pid);
    tracer.release();
    let early = early?;
    if let Some(message) = &early
        && message.kind == "done"
        && closed_first
    {
        return Err(Fail::failed(format!(
            "at SIGTERM, the server said `done` (run_server had returned) while the thread of a \
             client's handler (tid {handler}) was still running: its client had closed its \
             connection before the signal and the handler had returned, but the grader held \
             its thread at the entry of its exit(), the last thing a thread does, through the \
             signal{}. The stop did not wait for that thread: either its JoinHandle was dropped because \
             is_finished() said it was done (is_finished() is true as soon as the handler's \
             closure has returned, before its thread has ended), when the next client was \
             accepted (a retain(|h| !h.is_finished()) of the list) or at the stop, or the stop \
             waits on something the handler signals as it ends (a count and a condition \
             variable, a channel). Keep the handle of every handler not yet joined and join \
             each one (JoinHandle::join), finished or not: a finished handle is joined, never \
             dropped",
            if accepted_next {
                ", and another client was accepted (its handler seen reading) in the meantime"
            } else {
                ""
            }
        )));
    }
    if let Some(message) = &early
        && message.kind == "done"
    {
        return Err(Fail::failed(format!(
            "at SIGTERM, the server said `done` (run_server had returned) while the thread of a \
             client's handler (tid {handler}) was still running: the grader held it at the \
             entry of its exit(), the last thing a thread does, after the handler's work. A \
             wait that ends when the handler says it is done (a count and a condition variable, \
             a channel, a scope's count of running threads) ends before the thread does: wait \
             for every handler thread to end by joining it (JoinHandle::join)"
        )));
    }
    server.finish(Signal::SIGTERM, idle.as_ref().or(next.as_ref()), early)?;
    Ok(())
}

/// What the server said while a thread of its own is held by the grader at its exit(), after
/// the signal: watched until it says something (too early: run_server returned), or its main
/// thread is asleep in a futex wait (a join, or a wait that only that thread's end can end)
/// several samples in a row.
fn said_while_held(
    server: &mut Server,
    pid: i32,
) -> Result<Option<ipc_labs_driver::Message>, Fail> {
    let until = Instant::now() + Duration::from_secs(3);
    let mut asleep = 0;
    while asleep < 5 && Instant::now() < until {
        match server
            .proc
            .recv_before(Instant::now() + Duration::from_millis(10))
        {
            Ok(Some(message)) => return Ok(Some(message)),
            Ok(None) => {}
            Err(fail) => return Err(killed_by(fail, Signal::SIGTERM)),
        }
        let joining = observe::threads(pid)
            .iter()
            .any(|t| t.tid == pid && t.state == 'S' && t.syscall == Some(libc::SYS_futex));
        asleep = if joining { asleep + 1 } else { 0 };
    }
    Ok(None)
}

/// At SIGTERM the accepting thread is held by the grader at the entry of its exit() (after
/// everything it ran, its list of handlers handed over): run_server must not return before
/// it, so the server says nothing while the thread that stops it waits for it, blocked in a
/// join. A stop that takes what the accepting thread sends as it ends (its handlers over a
/// channel) instead of joining it returns while that thread still runs. Skipped (with a note)
/// when no thread of the server's own accepts, or the machine allows no tracing.
pub fn acceptor_ended_before_return(run: &mut Run) -> Result<(), Fail> {
    let (mut server, idle) = server_with_idle_client(run)?;
    let pid = server.pid();
    let not_probed = "whether run_server returns before its accepting thread ends was not probed";
    let soon = || Instant::now() + Duration::from_secs(2);
    let acceptor = observe::new_thread_in(pid, &[], &ACCEPTS, soon()).map(|(tid, _)| tid);
    let Some(acceptor) = acceptor.filter(|&tid| tid != pid) else {
        run.note(format!(
            "no thread of the server's own was seen in accept(): {not_probed}"
        ));
        server.stop()?;
        return Ok(());
    };
    let exit = Call::any(libc::SYS_exit);
    let Some(mut tracer) = Tracer::attach_thread(pid, acceptor, exit, Action::Hold)? else {
        run.note(format!("the server could not be traced: {not_probed}"));
        server.stop()?;
        return Ok(());
    };
    let _ = kill(server.proc.pid, Signal::SIGTERM);
    if !tracer.held_before(Instant::now() + Duration::from_secs(5))? {
        drop(tracer);
        run.note(format!(
            "the accepting thread was not seen ending at the stop: {not_probed}"
        ));
        server.finish(Signal::SIGTERM, Some(&idle), None)?;
        return Ok(());
    }
    let early = said_while_held(&mut server, pid);
    tracer.release();
    let early = early?;
    if let Some(message) = &early
        && message.kind == "done"
    {
        return Err(Fail::failed(format!(
            "at SIGTERM, the server said `done` (run_server had returned) while its accepting \
             thread (tid {acceptor}) was still running: the grader held it at the entry of its \
             exit(), the last thing a thread does, after it had left its loop (and handed over \
             whatever it hands over). The stop did not join it: a wait for what the accepting \
             thread sends or sets as it ends (its list of handlers over a channel, a flag) ends \
             before the thread does. Join the accepting thread (JoinHandle::join, which can \
             return its list of handlers), then shut the connections and join the handlers"
        )));
    }
    server.finish(Signal::SIGTERM, Some(&idle), early)?;
    Ok(())
}

/// A client connects and the accepting thread is held by the grader at its `dup()` of that
/// connection (`fcntl(F_DUPFD_CLOEXEC)`: `try_clone`, the second handle kept for the stop),
/// after its look at the stopping flag and before the handle is registered; then SIGTERM. The
/// thread that stops the server must wait for the accepting thread blocked, with no timeout (a
/// join, not sleeps); once the accepting thread goes on, the client it registers must be shut
/// too, and the server stops: the open connections are shut only after the accepting thread
/// has ended. Skipped (with a note) when the accepting thread makes no such `dup()`, or the
/// machine allows no tracing.
pub fn acceptor_held_at_registration(run: &mut Run) -> Result<(), Fail> {
    let (server, idle) = server_with_idle_client(run)?;
    let pid = server.pid();
    let not_probed = "the stop with its accepting thread held was not probed";
    let dup = Call::arg_is(libc::SYS_fcntl, 1, libc::F_DUPFD_CLOEXEC as u64);
    let held = acceptor_held_at(run, server, dup, Action::Hold, not_probed, || {
        "the accepting thread made no dup() of a new connection (fcntl F_DUPFD_CLOEXEC)".into()
    })?;
    let Some(AcceptorHeld {
        mut server,
        tracer,
        late,
        ..
    }) = held
    else {
        return Ok(());
    };
    let _ = kill(server.proc.pid, Signal::SIGTERM);
    // Until the main thread has left its wait for the signal.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until
        && observe::threads(pid)
            .iter()
            .any(|t| t.tid == pid && t.syscall == Some(libc::SYS_rt_sigtimedwait))
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    let judged = waiting::expect_blocked(
        &[pid],
        &|_| "the server".into(),
        WaitRules::untimed(),
        "at SIGTERM, while the accepting thread has not ended yet (the grader held it at its \
         dup() of a client it had just accepted), the thread that stops the server must wait \
         for it blocked: join it (JoinHandle::join), do not sleep and look again \
         (is_finished() between sleeps)",
    );
    if let Err(fail) = judged {
        tracer.release();
        return Err(fail);
    }
    tracer.release();
    // The late client is idle: its handler ends only if the stop shuts its connection.
    let until = Instant::now() + Duration::from_secs(3);
    let mut early = None;
    while early.is_none() && Instant::now() < until {
        match server
            .proc
            .recv_before(Instant::now() + Duration::from_millis(10))
        {
            Ok(message) => early = message,
            Err(fail) => return Err(killed_by(fail, Signal::SIGTERM)),
        }
    }
    if early.is_none() && !late.peer_closed() {
        return Err(Fail::failed(
            "at SIGTERM, with the accepting thread held by the grader at its dup() of a client \
             it had just accepted (past its look at the stopping flag, before the client was \
             registered) until the stop was waiting, the server did not stop within 3 s once \
             the accepting thread went on, and that client's connection was never shut: the \
             stop shut the open connections before the accepting thread had ended, and a \
             connection registered after that shutting is missed, its handler blocked in read() \
             for good. Stop accepting first (set the flag, wake the accepting thread and join \
             it), then shut every connection still open",
        ));
    }
    drop(late);
    server.finish(Signal::SIGTERM, Some(&idle), early)?;
    Ok(())
}

/// A client connects while an earlier client's handler is finishing: the grader holds that
/// handler right after its close() of the descriptor it was seen reading (the number free again
/// for the next connection) and lets it go on only once the server has taken the new client on
/// (its handler reading it, the accepting thread back in accept()). The new client is served,
/// stays idle, and at SIGTERM its connection must be shut like any other: whatever the stop
/// shuts the open connections by must not lose a connection accepted while another's handler
/// ends (a registry keyed by the descriptor's number, say, whose finishing handler then removes
/// the new client's entry). Skipped (with a note) when no thread of the server's own serves the
/// client, its handler closes no descriptor it read, or the machine allows no tracing.
pub fn accepted_while_a_handler_finishes(run: &mut Run) -> Result<(), Fail> {
    let mut server = server(run, Transport::Unix)?;
    let pid = server.pid();
    let not_probed = "a client accepted while another's handler was finishing was not probed";
    let soon = || Instant::now() + Duration::from_secs(2);
    let ids = observe::thread_ids(pid);
    let first = server.connect()?;
    let read = observe::new_thread_in(pid, &ids, &READS, soon())
        .and_then(|(tid, _)| Some((tid, inspect::call_of(pid, tid)?)))
        .filter(|(_, (number, _))| READS.contains(number));
    let Some((handler, (_, args))) = read else {
        run.note(format!(
            "no thread of the server's own was seen reading a client: {not_probed}"
        ));
        drop(first);
        server.stop()?;
        return Ok(());
    };
    let fd = args[0];
    let close = Call::arg_is(libc::SYS_close, 0, fd);
    let Some(mut tracer) = Tracer::attach_thread(pid, handler, close, Action::HoldAfter)? else {
        run.note(format!("the server could not be traced: {not_probed}"));
        drop(first);
        server.stop()?;
        return Ok(());
    };
    // The client goes: its handler ends, and is held once it has closed the descriptor.
    drop(first);
    if !tracer.held_before(soon())? {
        drop(tracer);
        run.note(format!(
            "the handler of a client that closed its connection did not close the descriptor \
             it read (fd {fd}) itself: {not_probed}"
        ));
        server.stop()?;
        return Ok(());
    }
    // A thread blocked in accept() took its descriptor number when it began waiting: the
    // number just freed goes to the next client only once accept() is called again. Its wait,
    // interrupted by the grader (which the kernel restarts), begins again now.
    restart_accept(pid)?;
    let ids = observe::thread_ids(pid);
    let mut next = server.connect()?;
    // Taken on: its handler reads it, and the accepting thread is back in accept() (whatever
    // it does with a new connection, done).
    let taken = observe::new_thread_in(pid, &ids, &READS, soon());
    let accepting = taken.is_some() && observe::new_thread_in(pid, &[], &ACCEPTS, soon()).is_some();
    let same_number = taken
        .and_then(|(tid, _)| inspect::call_of(pid, tid))
        .is_some_and(|(_, args)| args[0] == fd);
    tracer.release();
    if !accepting {
        run.note(format!(
            "a client that connected while another's handler was held right after its close() \
             was not seen taken on (its handler reading, the accepting thread back in \
             accept()): {not_probed}"
        ));
    }
    // Until the finishing handler's thread has ended.
    let until = soon();
    while observe::thread_ids(pid).contains(&handler) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
    }
    next.send(&frame(OP_ECHO, b"accepted meanwhile"), 0)?;
    let got = read_response(&mut next).map_err(|e| {
        Fail::failed(format!(
            "no response to a client accepted while another's handler was finishing ({e}){}",
            server.alive_note()
        ))
    })?;
    verify(
        got,
        OP_ECHO,
        b"accepted meanwhile",
        "a client accepted meanwhile",
    )?;
    let _ = kill(server.proc.pid, Signal::SIGTERM);
    let until = Instant::now() + Duration::from_secs(3);
    let mut early = None;
    while early.is_none() && Instant::now() < until && !next.peer_closed() {
        match server
            .proc
            .recv_before(Instant::now() + Duration::from_millis(10))
        {
            Ok(message) => early = message,
            Err(fail) => return Err(killed_by(fail, Signal::SIGTERM)),
        }
    }
    if accepting && early.is_none() && !next.peer_closed() {
        let number = if same_number {
            format!(
                " (it was given the descriptor number the finishing handler had just closed, \
                 fd {fd})"
            )
        } else {
            String::new()
        };
        return Err(Fail::failed(format!(
            "at SIGTERM, a client accepted while an earlier client's handler was finishing \
             (the grader held that handler right after its close() of its connection, fd \
             {fd}, until the server had taken the new client on: its handler reading it, the \
             accepting thread back in accept()){number} was served, then stayed idle, and the \
             stop never shut its connection: the server did not stop within 3 s, that \
             client's handler blocked in read() for good. The stop must shut every connection \
             still open, one accepted while another's handler ends too: whatever it finds them \
             by must not let a finishing handler take away another connection's entry (a \
             registry keyed by something the finished connection gives back for reuse, such as \
             its descriptor's number, free again once it is closed). Key each connection by \
             something never reused (a count of the clients accepted), or remove the entry \
             before the connection is closed"
        )));
    }
    server.finish(Signal::SIGTERM, Some(&next), early)?;
    Ok(())
}

/// Makes the thread of `pid` blocked in accept(), if any, begin its wait again: attaching the
/// tracer interrupts the call, which gives back the descriptor number it had taken for the
/// connection to come, and the kernel restarts it, taking the lowest number free now.
fn restart_accept(pid: i32) -> Result<(), Fail> {
    let soon = Instant::now() + Duration::from_secs(2);
    let Some((acceptor, _)) = observe::new_thread_in(pid, &[], &ACCEPTS, soon) else {
        return Ok(());
    };
    if let Some(mut tracer) =
        Tracer::attach_thread(pid, acceptor, Call::one_of(&ACCEPTS), Action::Hold)?
    {
        tracer.held_before(Instant::now() + Duration::from_secs(2))?;
        tracer.release();
    }
    Ok(())
}

/// The accepting thread of `server`, held by the grader at `call` (`action`) for a client that
/// has just connected.
pub struct AcceptorHeld {
    pub server: Server,
    pub acceptor: i32,
    pub tracer: Tracer,
    pub late: Conn,
}

/// Traces the accepting thread of `server` at `call` (`action`) and connects a client, which the
/// thread must reach `call` for within 2 s. `None`, with a note that the probe `not_probed` was
/// not run and the server stopped, when no thread of the server accepts, the machine allows no
/// tracing, or the thread did not reach `call` (`not_reached` says what it did not do).
pub fn acceptor_held_at(
    run: &mut Run,
    server: Server,
    call: Call,
    action: Action,
    not_probed: &str,
    not_reached: impl FnOnce() -> String,
) -> Result<Option<AcceptorHeld>, Fail> {
    let pid = server.pid();
    let soon = || Instant::now() + Duration::from_secs(2);
    let Some((acceptor, _)) = observe::new_thread_in(pid, &[], &ACCEPTS, soon()) else {
        run.note(format!(
            "no thread of the server was seen in accept(): {not_probed}"
        ));
        server.stop()?;
        return Ok(None);
    };
    let Some(mut tracer) = Tracer::attach_thread(pid, acceptor, call, action)? else {
        run.note(format!("the server could not be traced: {not_probed}"));
        server.stop()?;
        return Ok(None);
    };
    let late = server.connect()?;
    if !tracer.held_before(soon())? {
        drop(tracer);
        run.note(format!("{}: {not_probed}", not_reached()));
        drop(late);
        server.stop()?;
        return Ok(None);
    }
    Ok(Some(AcceptorHeld {
        server,
        acceptor,
        tracer,
        late,
    }))
}
