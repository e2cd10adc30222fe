//! Driving the lab's programs: a server (started, talked to, stopped and looked at when it says
//! `done`), client processes, and the grader's own server for the client to talk to.
//!
//! Beside it: client processes in `client_procs.rs`, the grader's own server
//! in `grader_server.rs`, the grader's client programs in `external_programs.rs`.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ipc_labs_driver::Message;
use nix::sys::signal::{Signal, kill};

use super::client_procs::ClientProc;
use super::observe;
use super::protocol::{Conn, frame, read_response, verify};
use super::{OP_ECHO, Transport};
use crate::engine::{Fail, Proc, Run};

/// How long a server gets, after the signal, to say `done`: a correct one needs milliseconds.
pub const STOP_PATIENCE: Duration = Duration::from_secs(5);
/// The program's control channel, where the server waits for `exit` after `done`.
pub const CONTROL_FD: i32 = 3;
/// What main.rs writes to the server's log once run_server() has returned.
const RETURNED: &str = "socket-reqrep: run_server returned";

/// A running server, after `ready`.
pub struct Server {
    pub proc: Proc,
    pub transport: Transport,
    pub path: PathBuf,
    pub port: u16,
    deadline: Instant,
    /// The client connections it held when the stop's signal was sent (socket inodes).
    pub(super) at_signal: Option<std::collections::BTreeSet<u64>>,
}

/// A message's kind and error fields, for messages: "`failed` (kind=bind: ...)".
pub fn said(message: &Message) -> String {
    match message.get("kind") {
        Some(kind) => format!(
            "`{}` (kind={kind}: {})",
            message.kind,
            message.get("error").unwrap_or("")
        ),
        None => format!("`{}`", message.kind),
    }
}

/// Starts `socket-reqrep server` with `at` (its `--unix`/`--tcp` arguments) and returns it with
/// its first message.
pub fn spawn_server(run: &mut Run, at: &[String]) -> Result<(Proc, Message), Fail> {
    spawn_server_with_threads(run, at, 0)
}

/// As [`spawn_server`], with room for `threads` more threads than a program gets
/// ([`Run::spawn_with_threads`]).
fn spawn_server_with_threads(
    run: &mut Run,
    at: &[String],
    threads: u64,
) -> Result<(Proc, Message), Fail> {
    let mut args = vec!["server".to_string()];
    args.extend_from_slice(at);
    let mut proc = run.spawn_with_threads(&args, threads)?;
    proc.set_roles(|_| "the server".into());
    let first = proc.recv_any()?;
    Ok((proc, first))
}

/// Starts `socket-reqrep server` with `at` (`--unix PATH` or `--tcp PORT`) stopped (SIGSTOP before its first
/// instruction), for a tracer to attach before it runs ([`crate::engine::force::resume`] lets it
/// go); returns it and its pid.
pub fn spawn_stopped_server(run: &mut Run, at: [String; 2]) -> Result<(Proc, i32), Fail> {
    let [how, place] = at;
    let mut proc = run.spawn_stopped(&["server".to_string(), how, place])?;
    proc.set_roles(|_| "the server".into());
    let pid = proc.pid.as_raw();
    Ok((proc, pid))
}

/// Starts a server and waits until it listens.
pub fn server(run: &mut Run, transport: Transport) -> Result<Server, Fail> {
    server_with_threads(run, transport, 0)
}

/// Starts a server with room for a thread per client of the largest crowd of idle clients the
/// grader connects ([`super::crowd`]), and waits until it listens.
pub fn crowded_server(run: &mut Run, transport: Transport) -> Result<Server, Fail> {
    server_with_threads(run, transport, super::crowd::MOST as u64 + 64)
}

fn server_with_threads(run: &mut Run, transport: Transport, threads: u64) -> Result<Server, Fail> {
    // Short: a Unix socket's path must fit sun_path (108 bytes).
    let path = run.path("rpc.sock");
    let at: Vec<String> = match transport {
        Transport::Unix => vec!["--unix".into(), path.display().to_string()],
        Transport::Tcp => vec!["--tcp".into(), "0".into()],
    };
    let (proc, ready) = spawn_server_with_threads(run, &at, threads)?;
    Server::ready(run, proc, ready, transport, path)
}

impl Server {
    /// The server `proc` whose first message was `ready`.
    pub fn ready(
        run: &Run,
        proc: Proc,
        ready: Message,
        transport: Transport,
        path: PathBuf,
    ) -> Result<Server, Fail> {
        if ready.kind != "ready" {
            // Port 0 asks the system for a port nobody uses: only a port chosen by the program
            // can be in use already.
            let fixed = transport == Transport::Tcp
                && ready.get("kind") == Some("bind")
                && ready
                    .get("error")
                    .is_some_and(|e| e.contains("os error 98") || e.contains("in use"));
            let why = if fixed {
                ": given --tcp 0, it bound a port already in use (EADDRINUSE), which a bind to \
                 port 0 never meets; port 0 means any free port, which the system picks: bind \
                 127.0.0.1:0 as given, not a port of your choosing, and report the one \
                 local_addr() says (the grader runs several servers at once)"
            } else {
                ""
            };
            return Err(Fail::failed(format!(
                "the server said {} where it should have been listening{why}",
                said(&ready)
            )));
        }
        let port = ready.get("port").and_then(|p| p.parse().ok()).unwrap_or(0);
        if transport == Transport::Tcp && port == 0 {
            return Err(Fail::failed(
                "the TCP server did not report the port it listens on: bind 127.0.0.1:0 and read \
                 the port from local_addr()",
            ));
        }
        Ok(Server {
            proc,
            transport,
            path,
            port,
            deadline: run.deadline(),
            at_signal: None,
        })
    }

    pub fn pid(&self) -> i32 {
        self.proc.pid.as_raw()
    }

    pub fn where_args(&self) -> Vec<String> {
        match self.transport {
            Transport::Unix => vec!["--unix".into(), self.path.display().to_string()],
            Transport::Tcp => vec!["--tcp".into(), self.port.to_string()],
        }
    }

    /// A connection of the grader's own, with 5-second read and write timeouts.
    pub fn connect(&self) -> Result<Conn, Fail> {
        let conn = match self.transport {
            Transport::Unix => UnixStream::connect(&self.path).map(Conn::Unix),
            Transport::Tcp => TcpStream::connect(("127.0.0.1", self.port)).map(|s| {
                let _ = s.set_nodelay(true);
                Conn::Tcp(s)
            }),
        };
        let conn = conn.map_err(|e| {
            Fail::failed(format!(
                "the grader cannot connect to the server ({e}) although it said it listens: \
                 the server died or closed its listening socket{}",
                self.alive_note()
            ))
        })?;
        conn.timeouts(Duration::from_secs(5));
        Ok(conn)
    }

    /// " (the server died)" when it has.
    pub fn alive_note(&self) -> &'static str {
        match crate::engine::inspect::view(self.pid()) {
            Some(view) if view.state != 'Z' => "",
            _ => " (the server died)",
        }
    }

    /// For a connection the server closed: [`Server::alive_note`], or, the server alive, the
    /// timeouts its sockets have, a cause of a close mid-exchange (a read that waits longer
    /// fails with `EAGAIN`; an accepted connection inherits its listener's timeouts).
    pub fn closed_note(&self) -> String {
        let alive = self.alive_note();
        if !alive.is_empty() {
            return alive.to_string();
        }
        let timeouts = super::observe::sockets_with_timeouts(self.pid());
        if timeouts.is_empty() {
            return String::new();
        }
        let described: Vec<String> = timeouts
            .iter()
            .map(|t| format!("fd {} has {}", t.fd, t.describe()))
            .collect();
        format!(
            " (the server's sockets have timeouts: {}; a read or a write that waits longer \
             fails with EAGAIN, which ends that client's connection, and an accepted \
             connection inherits its listener's timeouts: no socket of the server's has one; \
             the stop wakes the accept() by other means)",
            described.join(", ")
        )
    }

    /// One answered request: the server says `ready` before run_server() blocks SIGTERM, so
    /// this shows that the signal will meet the server's own handling.
    pub fn ping(&self) -> Result<(), Fail> {
        let mut conn = self.connect()?;
        conn.send(&frame(OP_ECHO, b"ping"), 0)?;
        let got = read_response(&mut conn).map_err(|e| {
            Fail::failed(format!(
                "no response to a one-request client ({e}){}",
                self.alive_note()
            ))
        })?;
        verify(got, OP_ECHO, b"ping", "a one-request client")
    }

    /// Stops the server (see [`Server::stop_settled`]) after `client`, which answered every
    /// one of its calls right, has gone, with `grader_calls` calls of the grader's own on it
    /// besides (the stop's own one included): its `done` must count the client's calls too. A
    /// server that counts the grader's calls and not the client's never got those requests;
    /// one that counts fewer than the grader's is judged by `server-counts`.
    pub fn stop_counting(self, grader_calls: usize, client: &ClientProc) -> Result<(), Fail> {
        let (done, _) = self.stop_settled(0)?;
        let Some(counted) = done.get("requests").and_then(|n| n.parse::<usize>().ok()) else {
            return Ok(());
        };
        let calls = client.requests.len();
        if (grader_calls..grader_calls + calls).contains(&counted) {
            return Err(Fail::failed(format!(
                "{} made its {calls} calls to the lab's own server and wrote the right answers, \
                 but the server's `done` counts {counted} requests answered: the grader's own \
                 {grader_calls} and only {} of the client's, so the others never reached the \
                 server. Client::call sends each request over the socket and returns the \
                 response the server sent, whichever server it is (even one it takes for its \
                 own program): never answer a call in the client",
                client.role,
                counted - grader_calls
            )));
        }
        Ok(())
    }

    /// Stops the server with SIGTERM: see [`Server::finish`].
    pub fn stop(self) -> Result<Message, Fail> {
        self.stop_with(Signal::SIGTERM)
    }

    /// Stops the server with `signal` once it is serving: see [`Server::finish`].
    pub fn stop_with(self, signal: Signal) -> Result<Message, Fail> {
        self.stop_once(signal, None)
    }

    /// Stops the server with SIGTERM once it is serving and holds no more than `open` client
    /// connections (those of the clients still connected), so that the handlers of the clients
    /// that have gone, the last one's included, have closed theirs. Waits for that at most 2 s,
    /// and says whether it came.
    pub fn stop_settled(self, open: usize) -> Result<(Message, bool), Fail> {
        let mut settled = false;
        let done = self.stop_once(Signal::SIGTERM, Some((open, &mut settled)))?;
        Ok((done, settled))
    }

    fn stop_once(
        mut self,
        signal: Signal,
        settle: Option<(usize, &mut bool)>,
    ) -> Result<Message, Fail> {
        self.ping()?;
        if let Some((open, settled)) = settle {
            let until = Instant::now() + Duration::from_secs(2);
            loop {
                *settled = observe::connections(self.pid(), self.port).len() <= open;
                if *settled || Instant::now() >= until {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        self.at_signal = Some(observe::connections(self.pid(), self.port));
        let _ = kill(self.proc.pid, signal);
        self.finish(signal, None, None)
    }

    /// After `signal`: the server must say `done` within [`STOP_PATIENCE`] (`early` if it
    /// already did), with nothing of its own left running or open (no thread but the one that
    /// reports, no child process, no socket but its control channel, no socket file), then exit
    /// 0. `idle` is a client connection still open at the signal, for the diagnosis of a server
    /// that does not stop. Returns the `done` message, with the server's counts.
    pub fn finish(
        mut self,
        signal: Signal,
        idle: Option<&Conn>,
        early: Option<Message>,
    ) -> Result<Message, Fail> {
        let name = signal.as_str();
        let done = self.await_done(signal, idle, early)?;
        self.proc.send("exit", &[])?;
        let status = self.proc.wait()?;
        if !status.success() {
            return Err(Fail::failed(format!(
                "after {name} the server exited with {status}: stop cleanly with status 0"
            )));
        }
        // main.rs writes this line once run_server() has returned: a handler's line after it
        // comes from a handler still running then.
        let log = self.log();
        if let Some((_, after)) = log.split_once(RETURNED)
            && let Some(line) = after.lines().find(|l| l.contains("dropped client"))
        {
            return Err(Fail::failed(format!(
                "after {name} a client's handler logged `{line}` after run_server() had returned \
                 (the server's log has it after main.rs's `{RETURNED}` line): run_server() must \
                 wait for every client's handler to end (join it) before it reports its counts \
                 and returns"
            )));
        }
        Ok(done)
    }

    /// Stops a server started with `--runs 2` or more with SIGTERM (see [`Server::finish`], up
    /// to `done`), then tells it `again`: returns its `done` and the server of its next run,
    /// once that one says `ready`.
    pub fn stop_then_again(mut self, run: &Run) -> Result<(Message, Server), Fail> {
        self.ping()?;
        self.at_signal = Some(observe::connections(self.pid(), self.port));
        let _ = kill(self.proc.pid, Signal::SIGTERM);
        let done = self.await_done(Signal::SIGTERM, None, None)?;
        self.proc.send("again", &[])?;
        let ready = self.proc.recv_any()?;
        let next = Server::ready(run, self.proc, ready, self.transport, self.path)?;
        Ok((done, next))
    }

    /// [`Server::finish`] up to the server's `done`, and what is left of it then.
    fn await_done(
        &mut self,
        signal: Signal,
        idle: Option<&Conn>,
        early: Option<Message>,
    ) -> Result<Message, Fail> {
        let name = signal.as_str();
        let pid = self.pid();
        if self.at_signal.is_none() {
            self.at_signal = Some(observe::connections(pid, self.port));
        }
        let signalled = Instant::now();
        let patience = (signalled + STOP_PATIENCE).min(self.deadline);
        // The moment the server reports, it waits for `exit` on its control channel: the threads
        // other than the main one, and what they have used of the CPU, are taken then.
        let mut at_done = None;
        let mut done = early;
        while done.is_none() {
            if at_done.is_none() && observe::main_receives_on(pid, CONTROL_FD) {
                at_done = Some(observe::cpu_ns(pid));
            }
            let now = Instant::now();
            if now >= patience {
                // Waiting for `exit` on its control channel, the server has said its word: a
                // loaded machine may only be slow to bring it.
                if observe::main_receives_on(pid, CONTROL_FD)
                    && let Ok(Some(message)) = self
                        .proc
                        .recv_before(Instant::now() + Duration::from_millis(500))
                {
                    done = Some(message);
                    break;
                }
                let stuck = self.stuck_after(signal, idle, patience - signalled);
                // The check's own time ran out first: what the server did is not established.
                if patience < signalled + STOP_PATIENCE
                    && let Fail::Failed(state) = stuck
                {
                    return Err(Fail::TimedOut(format!(
                        "the check's time ran out {:.1} s after {name}, before the server said \
                         `done` (it has {} s for that, which a machine this loaded did not \
                         leave); where it was: {state}",
                        (patience - signalled).as_secs_f64(),
                        STOP_PATIENCE.as_secs()
                    )));
                }
                return Err(stuck);
            }
            match self
                .proc
                .recv_before((now + Duration::from_micros(500)).min(patience))
            {
                Ok(message) => done = message,
                Err(fail) => return Err(killed_by(fail, signal)),
            }
        }
        let done = done.expect("the loop ends with a message");
        if done.kind != "done" {
            return Err(Fail::failed(format!(
                "after {name} the server said {} instead of `done`",
                said(&done)
            )));
        }
        let at_done = at_done.unwrap_or_else(|| observe::cpu_ns(pid));
        self.left_at_done(name, at_done)?;
        Ok(done)
    }

    /// What is left of the server when it says `done` (it waits for `exit` then): run_server()
    /// has returned, so every thread it started has ended and every socket it opened is closed.
    fn left_at_done(&self, name: &str, first: BTreeMap<i32, u64>) -> Result<(), Fail> {
        let pid = self.pid();
        // A thread that has just finished may still be on its way out: it is gone within
        // microseconds, having used no CPU to speak of. One still working or still blocked
        // was not waited for.
        let mut last = first.clone();
        let until = Instant::now() + Duration::from_millis(200);
        loop {
            let now = observe::cpu_ns(pid);
            let others = now.keys().filter(|&&tid| tid != pid).count();
            last.extend(now);
            if others == 0 || Instant::now() >= until {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let working: Vec<(i32, u64)> = first
            .iter()
            .filter(|&(&tid, _)| tid != pid)
            .map(|(&tid, &then)| {
                let now = last.get(&tid).copied().unwrap_or(then);
                (tid, now.saturating_sub(then))
            })
            .filter(|&(_, used)| used >= 500_000)
            .collect();
        if let Some((tid, used)) = working.first() {
            return Err(Fail::failed(format!(
                "after {name} the server said `done` while thread {tid} was still working (it \
                 used {:.1} ms of CPU after that): run_server() must wait for every client's \
                 handler to end (join it) before it reports its counts and returns",
                *used as f64 / 1e6
            )));
        }
        let remaining: Vec<observe::ThreadState> = observe::threads(pid)
            .into_iter()
            .filter(|t| t.tid != pid)
            .collect();
        if !remaining.is_empty() {
            let list: Vec<String> = remaining
                .iter()
                .map(|t| format!("thread {} {}", t.tid, t.activity.describe()))
                .collect();
            return Err(Fail::failed(format!(
                "after {name} the server said `done` with other threads still there ({}): \
                 run_server() must stop accepting, end every client's handler and wait for \
                 each (join it) before it returns",
                list.join("; ")
            )));
        }
        let children = crate::engine::inspect::children(self.proc.pid);
        if !children.is_empty() {
            return Err(Fail::failed(format!(
                "after {name} the server said `done` with child processes still there ({}): \
                 wait for every handler process before run_server() returns",
                children
                    .iter()
                    .map(|c| format!("pid {c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        // Descriptor 3 is the control channel.
        let sockets: Vec<i32> = observe::sockets(pid)
            .into_iter()
            .map(|(fd, _)| fd)
            .filter(|&fd| fd != CONTROL_FD)
            .collect();
        if !sockets.is_empty() {
            return Err(Fail::failed(format!(
                "after {name} the server said `done` with {} socket(s) still open (fd {:?}): \
                 close the listener (Listener::remove) and every client's connection before \
                 run_server() returns",
                sockets.len(),
                sockets
            )));
        }
        if self.transport == Transport::Unix && self.path.exists() {
            return Err(Fail::failed(format!(
                "{} still exists after the server stopped: remove the socket file when the \
                 server ends (Listener::remove), or the next bind() fails with EADDRINUSE",
                self.path.display()
            )));
        }
        Ok(())
    }

    /// The server's stderr, for its log lines.
    pub fn log(&self) -> String {
        self.proc.stderr.lock().expect("capture lock").text()
    }

    /// The `dropped client ...` lines of its log so far, whole lines only: a line may reach the
    /// grader in several writes.
    pub fn dropped_lines(&self) -> Vec<String> {
        let log = self.log();
        let whole = log.rsplit_once('\n').map(|(lines, _)| lines).unwrap_or("");
        whole
            .lines()
            .filter(|l| l.contains("dropped client"))
            .map(str::to_string)
            .collect()
    }

    /// Waits (at most `limit`) for a `dropped client` line after the first `known`; returns it.
    pub fn next_dropped_line(&self, known: usize, limit: Duration) -> Option<String> {
        let until = Instant::now() + limit;
        loop {
            if let Some(line) = self.dropped_lines().get(known) {
                return Some(line.clone());
            }
            if Instant::now() >= until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// The `kind=` of a `dropped client` line.
pub fn line_kind(line: &str) -> &str {
    line.rsplit_once("(kind=")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(kind, _)| kind)
        .unwrap_or("?")
}

/// What a server that ended instead of answering after `signal` did wrong.
pub fn killed_by(fail: Fail, signal: Signal) -> Fail {
    let name = signal.as_str();
    match fail {
        Fail::Crashed(m) if m.contains(name) => Fail::failed(format!(
            "the server was killed by {name} instead of stopping cleanly: block SIGTERM and \
             SIGINT in every thread (before starting any) and wait for them with sigwait(), \
             then clean up"
        )),
        other => other,
    }
}
