//! Stopping: the counts the server reports, and how it stops on SIGTERM or SIGINT: the signal
//! blocked and waited for, no client taken on once the stop has begun, every handler waited for,
//! nothing left open. The probes of the stop that hold a thread of the server are in
//! `stop_held.rs`.

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{Backlog, listen};
use rand::RngExt;

use super::failures::dropped;
use super::forced::{self, ACCEPTS};
use super::grader_server::give_to_program_user;
use super::observe;
use super::programs::{Server, killed_by, server, spawn_stopped_server};
use super::protocol::{Conn, closed_after, frame, read_frame, read_response, verify};
use super::served_again;
use super::stop_held;
use super::{OP_ECHO, OP_HASH, Transport};
use crate::engine::inspect::SignalMask;
use crate::engine::process::Captured;
use crate::engine::tracer::{Call, Step, Tracer};
use crate::engine::{Fail, Run, inspect};

/// The server's `done` counts after a known history: connections that asked a few questions
/// and closed between frames, two that are still connected (idle) at SIGTERM, one bad client,
/// and the grader's ping.
pub fn server_counts(run: &mut Run) -> Result<String, Fail> {
    const CLOSED: usize = 3;
    let server = server(run, Transport::Unix)?;
    let sessions: Vec<usize> = (0..CLOSED + 2)
        .map(|_| run.rng().random_range(1..=6))
        .collect();
    let mut still_open = Vec::new();
    for (i, &calls) in sessions.iter().enumerate() {
        let mut conn = server.connect()?;
        for call in 0..calls {
            let len = run.rng().random_range(1..500);
            let payload = run.random_bytes(len);
            conn.send(&frame(OP_ECHO, &payload), call)?;
            let got = read_response(&mut conn).map_err(|e| {
                closed_after(&conn, call, Some(OP_ECHO))
                    .unwrap_or_else(|| Fail::failed(format!("no response to a request ({e})")))
            })?;
            verify(got, OP_ECHO, &payload, "a request")?;
        }
        if i >= CLOSED {
            still_open.push(conn);
        }
    }
    // Two accept() calls made to fail (ECONNABORTED), each followed by a client served: a failed
    // accept() accepted no client. Two, so that counting them cannot pass for counting the
    // connection that wakes the accepting thread at the end.
    let mut failed_accepts = 0;
    for _ in 0..2 {
        failed_accepts += u64::from(forced::aborted_accept(run, &server)?);
    }
    let known = server.dropped_lines().len();
    let mut bad = server.connect()?;
    bad.send(&[0, 0, 0, 0], 0)?;
    dropped(
        &mut bad,
        "an empty frame (length 0)",
        &server,
        known,
        "a length of 0 is RpcError::EmptyFrame",
    )?;
    // stop() pings first: one more client, one more request. The signal goes once the clients
    // that have gone have no connection left in the server: their handlers have ended.
    let done_log = server.proc.stderr.clone();
    let (done, settled) = server.stop_settled(still_open.len())?;
    drop(still_open);
    let connections = sessions.len() as u64 + 2 + failed_accepts;
    let requests = sessions.iter().sum::<usize>() as u64 + 1 + failed_accepts;
    let open_calls: usize = sessions[CLOSED..].iter().sum();
    let reported = |field: &str| done.get(field).and_then(|v| v.parse::<u64>().ok());
    let history = format!(
        "{} clients that made {:?} calls and closed between frames, {} that made {:?} calls and \
         were still connected at SIGTERM, {failed_accepts} accept() call(s) made to fail with \
         ECONNABORTED each followed by a client with one call, one that sent an empty frame, \
         and one last call",
        CLOSED,
        &sessions[..CLOSED],
        sessions.len() - CLOSED,
        &sessions[CLOSED..]
    );
    match reported("dropped") {
        Some(1) => {}
        Some(0) if !server_log_drops(&done_log).contains("kind=") => {
            return Err(Fail::failed(format!(
                "the server's `done` says dropped=0 and its log has no `dropped client` line, \
                 after {history}: the client that sent an empty frame lost its connection, but \
                 was neither logged nor counted, as if it had ended normally: a length of 0 is \
                 RpcError::EmptyFrame, an error that ends the client (logged with log_dropped \
                 and counted in ServerStats::dropped), not a goodbye"
            )));
        }
        Some(0) | None => {
            return Err(Fail::failed(format!(
                "the server's `done` says dropped={}, after {history}: count each client whose \
                 connection ends with an error in ServerStats::dropped",
                done.get("dropped").unwrap_or("nothing")
            )));
        }
        Some(n) => {
            let lines = server_log_drops(&done_log);
            // One `dropped client` line per accept() made to fail, with its error: the failed
            // accept() calls taken for clients.
            let aborted = done_log
                .lock()
                .expect("capture lock")
                .text()
                .lines()
                .filter(|l| l.contains("dropped client"))
                .filter(|l| {
                    let l = l.to_lowercase();
                    l.contains("abort") || l.contains("os error 103")
                })
                .count() as u64;
            if failed_accepts > 0 && n == 1 + failed_accepts && aborted == failed_accepts {
                return Err(Fail::failed(format!(
                    "the server's `done` says dropped={n}, after {history} (its log: {lines}): \
                     only the empty frame was an error; the other {aborted} `dropped client` \
                     line(s) are the accept() calls made to fail with ECONNABORTED (their error \
                     is the accept's): a failed accept() is no client, so it is not dropped: \
                     report it on its own (eprintln) if you like, but call log_dropped only for \
                     a client accept() returned, and do not count the failure in \
                     ServerStats::dropped"
                )));
            }
            return Err(Fail::failed(format!(
                "the server's `done` says dropped={n}, after {history} (its log: {lines}): only \
                 the empty frame was an error; a client that closes the connection between \
                 frames has ended normally (read_frame returns Ok(None) when the stream ends \
                 before the first byte of a frame), so has one whose connection the server shut \
                 at SIGTERM between frames, and one that pauses between requests is no error \
                 either"
            )));
        }
    }
    match reported("requests") {
        Some(n) if n == requests => {}
        Some(n) if settled && n + open_calls as u64 == requests => {
            return Err(Fail::failed(format!(
                "the server's `done` says requests={n}, after {history}: {requests} were \
                 answered, and exactly the {open_calls} answered to the clients still connected \
                 at SIGTERM are missing (the server held no connection of the other clients any \
                 more at SIGTERM). Those handlers end at the stop, when the server shuts \
                 their connections, and their requests must count too: either the counts were \
                 read before those handlers had ended (wait for every handler to end, join it, \
                 before reading the counts), or a handler ended by the stop does not add what it \
                 answered"
            )));
        }
        Some(n) if n < requests && requests - n <= open_calls as u64 => {
            return Err(Fail::failed(format!(
                "the server's `done` says requests={n}, after {history}: {requests} were \
                 answered, {open_calls} of them to the clients still connected at SIGTERM, whose \
                 handlers end when the server shuts their connections, and {} of those are \
                 missing: count every request a handler answered, those of a handler ended by \
                 the stop too, and read the counts once every handler has ended (joined)",
                requests - n
            )));
        }
        _ => {
            return Err(Fail::failed(format!(
                "the server's `done` says requests={}, after {history}: {requests} were \
                 answered; count every answered request in ServerStats::requests",
                done.get("requests").unwrap_or("nothing")
            )));
        }
    }
    let clients = reported("clients");
    if failed_accepts > 0
        && matches!(clients, Some(n) if n == connections + failed_accepts
            || n == connections + failed_accepts + 1)
    {
        return Err(Fail::failed(format!(
            "the server's `done` says clients={}, after {history}: {connections} clients \
             connected, and the count holds one more for each accept() that failed: count a \
             client in ServerStats::clients once accept() has returned it, not when accept() \
             returns an error",
            done.get("clients").unwrap_or("nothing")
        )));
    }
    if clients == Some(connections + 1) {
        return Err(Fail::failed(format!(
            "the server's `done` says clients={}, after {history}: {connections} clients \
             connected (the grader's last call included), one fewer than counted: on the signal the server \
             stops accepting first, and a connection accept() returns once the stop has begun \
             (the server's own connection that wakes its accepting thread, or a client coming \
             then) is no client and is not counted: look at the stopping flag as soon as \
             accept() returns, before counting; or else the count is one too many from the \
             start, or a client is counted twice",
            connections + 1
        )));
    }
    if clients != Some(connections) {
        return Err(Fail::failed(format!(
            "the server's `done` says clients={}, after {history}: {connections} clients \
             connected; count every accepted client in ServerStats::clients",
            done.get("clients").unwrap_or("nothing")
        )));
    }
    let again = served_again::second_run(run)?;
    Ok(format!(
        "the server counted {connections} clients, {requests} requests and 1 dropped client; \
         {again}"
    ))
}

/// The `dropped client` lines of a server's log, in short: "kind=io (why), kind=...".
fn server_log_drops(log: &Arc<Mutex<Captured>>) -> String {
    let text = log.lock().expect("capture lock").text();
    let drops: Vec<String> = text
        .lines()
        .filter(|l| l.contains("dropped client"))
        .map(|l| {
            let why = l.splitn(3, ": ").nth(2).unwrap_or(l);
            why.to_string()
        })
        .collect();
    if drops.is_empty() {
        "no `dropped client` line".into()
    } else {
        drops.join("; ")
    }
}

/// SIGTERM and SIGINT must be blocked in every thread and waited for, never caught by a handler
/// function: run_server()'s documentation asks for it, and a handler could only set a flag for
/// some thread to poll.
fn signal_disposition(server: &Server) -> Result<(), Fail> {
    let pid = server.pid();
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        if inspect::has_signal(pid, pid, SignalMask::Caught, signal as i32) {
            return Err(Fail::failed(format!(
                "the server catches {} with a handler function (SigCgt in /proc/{pid}/status): \
                 handle it without one, as run_server() asks: block SIGTERM and SIGINT in every \
                 thread (SigSet::thread_block before the first thread starts) and wait for them \
                 with SigSet::wait()",
                signal.as_str()
            )));
        }
    }
    let threads = observe::threads(pid).len();
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let open = observe::threads_not_blocking(pid, signal);
        if !open.is_empty() {
            return Err(Fail::failed(format!(
                "{} of the server's {threads} threads (tid {open:?}) do not block {} (SigBlk in \
                 /proc/{pid}/task/TID/status): the signal may be delivered to one of them and \
                 end the process on the spot; block SIGTERM and SIGINT before the first thread \
                 starts (threads inherit the mask) and wait for them with sigwait()",
                open.len(),
                signal.as_str()
            )));
        }
    }
    waits_in_sigwait(pid)
}

/// The signal is waited for with sigwait() (`SigSet::wait`, rt_sigtimedwait), as run_server()
/// asks: a server that reads it from a signalfd instead (no thread in rt_sigtimedwait, a
/// signalfd among its descriptors) is told so.
fn waits_in_sigwait(pid: i32) -> Result<(), Fail> {
    let in_sigwait = || {
        observe::threads(pid)
            .iter()
            .any(|t| t.syscall == Some(libc::SYS_rt_sigtimedwait))
    };
    let until = Instant::now() + Duration::from_secs(2);
    while !in_sigwait() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
    }
    if in_sigwait() {
        return Ok(());
    }
    let signalfds: Vec<i32> = inspect::view(pid)
        .map(|view| {
            view.fds
                .into_iter()
                .filter(|(_, target)| target == "anon_inode:[signalfd]")
                .map(|(fd, _)| fd)
                .collect()
        })
        .unwrap_or_default();
    if signalfds.is_empty() {
        return Ok(());
    }
    Err(Fail::failed(format!(
        "while the server runs, none of its threads waits in sigwait() (rt_sigtimedwait), and it \
         holds a signalfd (descriptor {signalfds:?}, anon_inode:[signalfd] in /proc/{pid}/fd): \
         it reads the signal from a signalfd, where run_server() asks to wait for it with \
         SigSet::wait() (sigwait), the call the lab teaches"
    )))
}

/// A socket of the grader's at the server's path, with a backlog of 0 already full: a connect()
/// to the path blocks until the grader lets it through.
struct HeldPath {
    listener: UnixListener,
    _filler: UnixStream,
    /// Where the server's own socket file was moved, removed by the grader at the end.
    moved: PathBuf,
}

impl HeldPath {
    /// Moves the server's socket file at `path` to `moved` and puts the holding socket at
    /// `path`.
    fn install(run: &Run, path: &std::path::Path, moved: PathBuf) -> Result<HeldPath, Fail> {
        std::fs::rename(path, &moved)?;
        let listener = UnixListener::bind(path)?;
        give_to_program_user(run, path)?;
        let zero = Backlog::new(0).map_err(|e| Fail::Grader(format!("backlog: {e}")))?;
        listen(&listener, zero).map_err(|e| Fail::Grader(format!("listen: {e}")))?;
        let filler = UnixStream::connect(path)?;
        Ok(HeldPath {
            listener,
            _filler: filler,
            moved,
        })
    }

    /// Lets one blocked connect() through.
    fn release(&self) {
        let _ = self.listener.accept();
    }
}

impl Drop for HeldPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.moved);
    }
}

pub fn sigterm_cleanup(run: &mut Run) -> Result<String, Fail> {
    let server = server(run, Transport::Unix)?;
    let pid = server.pid();
    // A client that made a call and stays connected, idle, one that sent half a length prefix,
    // and one that does not read its response: none may hold up the stop.
    let mut idle = server.connect()?;
    idle.send(&frame(OP_ECHO, b"hello"), 0)?;
    read_response(&mut idle)
        .map_err(|e| Fail::failed(format!("no response to a first request: {e}")))?;
    let mut half = server.connect()?;
    half.send(&[0, 0], 0)?;
    // Read by the server before the signal: the stop finds it inside a frame.
    half.wait_until_read();
    // And one that asked for a response larger than a socket's buffer and does not read it: its
    // handler is blocked writing at the stop.
    let mut unread = server.connect()?;
    unread.send(&frame(OP_ECHO, &vec![0x3c; 4 << 20]), 0)?;
    observe::writing_a_socket(pid, Instant::now() + Duration::from_secs(2));
    if !server.path.exists() {
        return Err(Fail::failed(
            "the socket file does not exist while the server listens",
        ));
    }
    signal_disposition(&server)?;
    super::other_signals::blocks_only_the_stop_signals(&server)?;
    first_thread_inherits_the_block(run)?;

    // The server wakes its accepting thread by connecting to its own socket: the grader holds
    // that connect() at its path, so that the accepting thread is woken by a client instead,
    // while the stop has begun. That client must not be served.
    let held = HeldPath::install(run, &server.path, run.path("rpc-moved.sock"))?;
    let _ = kill(server.proc.pid, Signal::SIGTERM);
    let until = Instant::now() + Duration::from_secs(2);
    let mut server = server;
    let mut early = None;
    let mut connecting = false;
    while Instant::now() < until {
        if observe::thread_in(pid, libc::SYS_connect, Instant::now()).is_some() {
            connecting = true;
            break;
        }
        match server
            .proc
            .recv_before(Instant::now() + Duration::from_millis(2))
        {
            Ok(Some(message)) => {
                early = Some(message);
                break;
            }
            Ok(None) => {}
            Err(fail) => return Err(killed_by(fail, Signal::SIGTERM)),
        }
    }
    if connecting {
        // A server that stops as it should refuses this connection, or closes it unserved,
        // maybe before the request is written.
        let late_answered = UnixStream::connect(&held.moved).is_ok_and(|stream| {
            let mut late = Conn::Unix(stream);
            late.timeouts(Duration::from_secs(1));
            let written = late.stream().write_all(&frame(OP_ECHO, b"after SIGTERM"));
            written.is_ok() && matches!(read_frame(&mut late), Ok(Some(_)))
        });
        if late_answered {
            // Where the accepting thread went after serving it: back into accept() (it was not
            // yet told to stop), or away (it was told, but did not look after that accept()).
            // It may take a while to get back on a loaded machine: wait for it, up to a second.
            let until = Instant::now() + Duration::from_secs(1);
            let mut in_accept = false;
            while !in_accept && Instant::now() < until {
                in_accept = observe::threads(pid)
                    .iter()
                    .any(|t| t.syscall.is_some_and(|n| ACCEPTS.contains(&n)));
                if !in_accept {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            let why = if in_accept {
                "the accepting thread was woken before it was told to stop (it went back to \
                 accept() after serving that client), so it took that client for a new one. Set \
                 the stopping flag before you wake the accepting thread"
            } else {
                "the accepting thread served it, then ended without going back to accept(): it \
                 was told to stop, but looked at the stopping flag only before accept() (a loop \
                 `while !stopping { accept() ... }`), so what accept() returned once the flag \
                 was set was served as a client (the server's own wake-up connection too)"
            };
            return Err(Fail::failed(format!(
                "after SIGTERM, while the server was connecting to its own socket to wake its \
                 accepting thread, a client that connected then was served: {why}. Check the \
                 flag after every accept(): a connection accepted once it is set ends the loop, \
                 unserved"
            )));
        }
    }
    // Let the server's own connection through, and wake the accepting thread as it would have.
    held.release();
    let _wake = UnixStream::connect(&held.moved);
    let log = server.proc.stderr.clone();
    let done = server.finish(Signal::SIGTERM, Some(&idle), early)?;
    // The stop ended the connection of the client inside a length prefix: end of stream inside
    // a frame, RpcError::Truncated, a client ended with an error like any other.
    // The log comes through a pipe of its own, which may lag behind `done` on a loaded machine.
    let until = Instant::now() + Duration::from_secs(2);
    let mut lines = server_log_drops(&log);
    while !lines.contains("kind=truncated") && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
        lines = server_log_drops(&log);
    }
    let dropped = done.get("dropped").and_then(|v| v.parse::<u64>().ok());
    if !lines.contains("kind=truncated") || dropped.is_none_or(|n| n == 0) {
        return Err(Fail::failed(format!(
            "at SIGTERM a client had sent 2 bytes of a length prefix (read by the server), so \
             the stop ended its connection inside a frame; the server's log had {lines} and its \
             `done` says dropped={}: the handler's read_frame then ends with \
             RpcError::Truncated, an error like any other, whoever shut the connection: \
             every client whose connection ends with an error is logged with log_dropped (here \
             kind=truncated) and counted in ServerStats::dropped, at the stop too",
            done.get("dropped").unwrap_or("nothing")
        )));
    }
    drop(held);
    let mut byte = [0u8; 1];
    if let Ok(n @ 1..) = idle.stream().read(&mut byte) {
        return Err(Fail::failed(format!(
            "the idle client read {n} byte(s) after the server stopped"
        )));
    }
    drop((half, unread));

    // SIGINT stops a TCP server the same way, while a handler is busy hashing 8 MiB: the
    // server must wait for it. On one CPU, the handler makes no progress while the server's
    // other threads stop it.
    let tcp = self::server(run, Transport::Tcp)?;
    let port = tcp.port;
    tcp.ping()?;
    if !observe::pin_to_one_cpu(tcp.pid()) {
        run.note("the server's threads could not be bound to one CPU");
    }
    let mut busy = tcp.connect()?;
    busy.send(&frame(OP_HASH, &vec![0x5a; 8 << 20]), 0)?;
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until
        && !observe::threads(tcp.pid())
            .iter()
            .any(|t| t.state == 'R' && t.syscall.is_none())
    {
        std::thread::sleep(Duration::from_micros(200));
    }
    let _ = kill(tcp.proc.pid, Signal::SIGINT);
    tcp.finish(Signal::SIGINT, None, None)?;
    drop(busy);

    stop_held::accepting_ends_before_shutting(run)?;
    stop_held::acceptor_held_at_registration(run)?;
    super::handler_start_held::registered_before_the_handler_starts(run)?;
    super::accept_wakeup::wake_up_not_lost(run)?;
    stop_held::handlers_joined_blocked(run)?;
    stop_held::handlers_ended_before_return(run, false, false)?;
    stop_held::handlers_ended_before_return(run, true, false)?;
    stop_held::handlers_ended_before_return(run, true, true)?;
    stop_held::acceptor_ended_before_return(run)?;
    stop_held::accepted_while_a_handler_finishes(run)?;
    super::stop_accept_failure::accept_failing_at_the_stop(run)?;
    if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        return Err(Fail::failed(format!(
            "port {port} still accepts connections after the TCP server stopped"
        )));
    }
    Ok(format!(
        "SIGTERM and SIGINT, blocked and waited for, stopped both servers cleanly with clients \
         connected{}; every handler was waited for and the socket file went",
        if connecting {
            ", and a client that came during the stop was not served"
        } else {
            ""
        }
    ))
}

/// The server is started stopped and held at its first clone3() (the first thread it starts),
/// then at the `rt_sigprocmask(SIG_SETMASK)` that follows it, with which the C library gives
/// the starting thread back the mask it had when it called `pthread_create()`: the mask the new
/// thread starts with. SIGTERM and SIGINT must be in it (blocked before the first thread
/// starts); a thread that blocks them itself once it runs leaves a window in which a signal
/// ends the process. Skipped (with a note) when the server starts no thread that way, or the
/// machine allows no tracing.
fn first_thread_inherits_the_block(run: &mut Run) -> Result<(), Fail> {
    use std::os::unix::fs::FileExt;
    let path = run.path("first-thread.sock");
    let at = ["--unix".to_string(), path.display().to_string()];
    let (mut proc, pid) = spawn_stopped_server(run, at)?;
    let not_probed = "the mask the first thread starts with was not read";
    let restore = Call::arg_is(libc::SYS_rt_sigprocmask, 0, libc::SIG_SETMASK as u64);
    let steps = [
        (Call::any(libc::SYS_clone3), Step::Hold),
        (restore, Step::Hold),
    ];
    let tracer = Tracer::in_turn(pid, steps)?;
    crate::engine::force::resume(pid)?;
    let mut inherited = None;
    match tracer {
        Some(mut tracer) => {
            if tracer.held_before(Instant::now() + Duration::from_secs(5))? {
                tracer.go_on();
                if tracer.held_before(Instant::now() + Duration::from_secs(2))? {
                    inherited = crate::engine::inspect::call_of(pid, pid).and_then(|(_, args)| {
                        let memory = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
                        let mut bytes = [0u8; 8];
                        memory.read_exact_at(&mut bytes, args[1]).ok()?;
                        Some(u64::from_ne_bytes(bytes))
                    });
                }
            }
            tracer.release();
        }
        None => run.note(format!("the server could not be traced: {not_probed}")),
    }
    let ready = proc.recv_any()?;
    let server = Server::ready(run, proc, ready, Transport::Unix, path)?;
    match inherited {
        None => run.note(format!(
            "the server's first clone3() was not followed by a restore of its signal mask: \
             {not_probed}"
        )),
        Some(mask) => {
            let missing: Vec<&str> = [Signal::SIGTERM, Signal::SIGINT]
                .into_iter()
                .filter(|&signal| mask & (1u64 << (signal as i32 - 1)) == 0)
                .map(|signal| signal.as_str())
                .collect();
            if !missing.is_empty() {
                let missing = missing.join(" and ");
                return Err(Fail::failed(format!(
                    "the first thread the server starts (held by the grader at its clone3(), \
                     read from the mask its starting thread had when it called \
                     pthread_create(), the mask a new thread inherits) starts with {missing} \
                     not blocked: until the new thread blocks them itself, once it runs, \
                     and the main thread does after the start, either signal, delivered to one \
                     of them, ends the process on the spot (no `done`, the socket file left). Block SIGTERM \
                     and SIGINT in the main thread before the first thread starts \
                     (SigSet::thread_block before the first thread::spawn): threads inherit the \
                     mask"
                )));
            }
        }
    }
    server.stop()?;
    Ok(())
}
