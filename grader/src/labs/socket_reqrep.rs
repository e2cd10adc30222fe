//! Checks of lab 3, request-response over sockets: a length-prefixed RPC served over a Unix
//! domain socket and over TCP on loopback.
//!
//! `socket-reqrep server --unix PATH | --tcp 0` says `ready` (with `port` for TCP) once it
//! listens, serves until SIGTERM, then says `done` with its counts. `socket-reqrep client
//! (--unix PATH | --tcp PORT) --requests F --output O` says `ready` once connected, waits for
//! `go`, makes one call per request and says `done`. The grader also talks to the server itself
//! (its own client, below, and Python or socat when the machine has them), points the client at
//! a server of its own to see the requests really come over the socket, and reads the server's
//! memory use from `/proc/PID/status`.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ipc_labs_driver::Message;
use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, recv};
use nix::sys::signal::{Signal, kill};
use rand::RngExt;

use crate::engine::diagnose::{Activity, Hang};
use crate::engine::process;
use crate::engine::{Check, Fail, Lab, Proc, Run};

pub static LAB: Lab = Lab {
    number: 3,
    slug: "socket-reqrep",
    title: "Request-response over sockets: a framed RPC over Unix and TCP sockets",
    cleanup_points: 2,
    explain_hang,
    checks: &[
        Check {
            name: "unix-requests",
            points: 3,
            timeout: Duration::from_secs(10),
            description: "random echo, reverse, hash and unknown-op requests are answered \
                          correctly over a Unix domain socket",
            exclusive: false,
            run: |run| random_requests(run, Transport::Unix),
        },
        Check {
            name: "tcp-requests",
            points: 3,
            timeout: Duration::from_secs(10),
            description: "the same over TCP on 127.0.0.1, on the port the server chose",
            exclusive: false,
            run: |run| random_requests(run, Transport::Tcp),
        },
        Check {
            name: "byte-at-a-time",
            points: 3,
            timeout: Duration::from_secs(15),
            description: "requests the grader writes one byte per write() are answered, over \
                          both transports",
            exclusive: false,
            run: byte_at_a_time,
        },
        Check {
            name: "pipelined",
            points: 3,
            timeout: Duration::from_secs(10),
            description: "200 requests the grader writes in a single write() get 200 responses, \
                          in order",
            exclusive: false,
            run: pipelined,
        },
        Check {
            name: "large-payloads",
            points: 3,
            timeout: Duration::from_secs(20),
            description: "8 MiB and 9 MiB payloads go both ways, over both transports",
            exclusive: false,
            run: large_payloads,
        },
        Check {
            name: "size-limit",
            points: 2,
            timeout: Duration::from_secs(15),
            description: "a payload of exactly MAX_PAYLOAD (16 MiB) goes both ways; a frame one \
                          byte longer is refused",
            exclusive: false,
            run: size_limit,
        },
        Check {
            name: "many-clients",
            points: 5,
            timeout: Duration::from_secs(40),
            description: "8 client processes with 40 requests each get only their own \
                          responses while another client stalls mid-request",
            exclusive: false,
            run: many_clients,
        },
        Check {
            name: "bad-input",
            points: 5,
            timeout: Duration::from_secs(20),
            description: "a truncated frame (in its body or its length prefix), an empty frame, \
                          an absurd length, a client gone mid-request and a reset connection \
                          each get that client dropped with a log line; the server allocates \
                          nothing absurd and serves on",
            exclusive: false,
            run: bad_input,
        },
        Check {
            name: "server-counts",
            points: 2,
            timeout: Duration::from_secs(10),
            description: "the server's `done` counts the clients it accepted, the requests it \
                          answered and the clients it dropped",
            exclusive: false,
            run: server_counts,
        },
        Check {
            name: "sigterm-cleanup",
            points: 3,
            timeout: Duration::from_secs(10),
            description: "SIGTERM stops the server cleanly (done, exit 0) with a client still \
                          connected, and removes the socket file",
            exclusive: false,
            run: sigterm_cleanup,
        },
        Check {
            name: "foreign-clients",
            points: 3,
            timeout: Duration::from_secs(15),
            description: "the server answers clients it did not write: the grader's own, and \
                          Python and socat when the machine has them",
            exclusive: false,
            run: foreign_clients,
        },
        Check {
            name: "client-over-socket",
            points: 3,
            timeout: Duration::from_secs(15),
            description: "the client, pointed at the grader's own server over both transports, \
                          sends every request over the socket and writes the answers it gets",
            exclusive: false,
            run: client_over_socket,
        },
    ],
};

const OP_ECHO: u8 = b'E';
const OP_REVERSE: u8 = b'R';
const OP_HASH: u8 = b'H';
const STATUS_OK: u8 = 0;
const STATUS_UNKNOWN_OP: u8 = 1;
/// The largest payload the protocol allows, and the largest frame body (its head byte and that
/// payload).
const MAX_PAYLOAD: usize = 16 << 20;
const MAX_BODY: usize = MAX_PAYLOAD + 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Unix,
    Tcp,
}

/// The answer the protocol defines for a request.
fn expected(op: u8, payload: &[u8]) -> (u8, Vec<u8>) {
    match op {
        OP_ECHO => (STATUS_OK, payload.to_vec()),
        OP_REVERSE => (STATUS_OK, payload.iter().rev().copied().collect()),
        OP_HASH => {
            let mut hash = 0xcbf2_9ce4_8422_2325u64;
            for &byte in payload {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
            (STATUS_OK, hash.to_be_bytes().to_vec())
        }
        _ => (STATUS_UNKNOWN_OP, Vec::new()),
    }
}

/// A frame: u32 big-endian length of head and payload, the head (a request's op or a
/// response's status), the payload.
fn frame(head: u8, payload: &[u8]) -> Vec<u8> {
    let mut bytes = ((payload.len() + 1) as u32).to_be_bytes().to_vec();
    bytes.push(head);
    bytes.extend_from_slice(payload);
    bytes
}

/// A running server, after `ready`.
struct Server {
    proc: Proc,
    transport: Transport,
    path: PathBuf,
    port: u16,
}

/// Starts a server and waits until it listens.
fn server(run: &mut Run, transport: Transport) -> Result<Server, Fail> {
    // Short: a Unix socket's path must fit sun_path (108 bytes).
    let path = run.path("rpc.sock");
    let args: Vec<String> = match transport {
        Transport::Unix => vec!["server".into(), "--unix".into(), path.display().to_string()],
        Transport::Tcp => vec!["server".into(), "--tcp".into(), "0".into()],
    };
    let mut proc = run.spawn(&args)?;
    proc.set_roles(|_| "the server".into());
    let ready = proc.recv_any()?;
    if ready.kind != "ready" {
        return Err(Fail::failed(format!(
            "the server said `{}` (kind={}: {}) where it should have been listening",
            ready.kind,
            ready.get("kind").unwrap_or("none"),
            ready.get("error").unwrap_or("")
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
    })
}

/// The grader's own connection to a server.
enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Conn {
    fn stream(&mut self) -> &mut dyn ReadWrite {
        match self {
            Conn::Unix(s) => s,
            Conn::Tcp(s) => s,
        }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Conn::Unix(s) => s.as_fd(),
            Conn::Tcp(s) => s.as_fd(),
        }
    }

    /// Whether `len` bytes are waiting to be read within `limit` (peeked, not read).
    fn queued_within(&self, len: usize, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        let mut buffer = vec![0u8; len];
        let flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
        while Instant::now() < until {
            match recv(self.fd().as_raw_fd(), &mut buffer, flags) {
                Ok(n) if n >= len => return true,
                Ok(0) => return false,
                Ok(_) | Err(Errno::EAGAIN) | Err(Errno::EINTR) => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => return false,
            }
        }
        false
    }

    fn shutdown(&self, how: Shutdown) {
        let _ = match self {
            Conn::Unix(s) => s.shutdown(how),
            Conn::Tcp(s) => s.shutdown(how),
        };
    }

    fn timeouts(&self, limit: Duration) {
        let _ = match self {
            Conn::Unix(s) => s
                .set_read_timeout(Some(limit))
                .and_then(|()| s.set_write_timeout(Some(limit))),
            Conn::Tcp(s) => s
                .set_read_timeout(Some(limit))
                .and_then(|()| s.set_write_timeout(Some(limit))),
        };
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

impl Server {
    fn pid(&self) -> i32 {
        self.proc.pid.as_raw()
    }

    fn where_args(&self) -> Vec<String> {
        match self.transport {
            Transport::Unix => vec!["--unix".into(), self.path.display().to_string()],
            Transport::Tcp => vec!["--tcp".into(), self.port.to_string()],
        }
    }

    /// A connection of the grader's own, with 5-second read and write timeouts.
    fn connect(&self) -> Result<Conn, Fail> {
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
                 the server died or closed its listening socket"
            ))
        })?;
        conn.timeouts(Duration::from_secs(5));
        Ok(conn)
    }

    /// " (the server has died)" when it has.
    fn alive_note(&self) -> &'static str {
        match crate::engine::inspect::view(self.pid()) {
            Some(view) if view.state != 'Z' => "",
            _ => " (the server died)",
        }
    }

    /// Stops the server with SIGTERM: it must say `done`, exit 0 and leave no socket file.
    /// Returns the `done` message, with the server's counts.
    fn stop(mut self) -> Result<Message, Fail> {
        // The server says `ready` before run_server() blocks SIGTERM: one answered request
        // shows that it is serving, so that the signal meets the server's own handling.
        if let Ok(mut conn) = self.connect() {
            let _ = conn.stream().write_all(&frame(OP_ECHO, b"ping"));
            let _ = read_response(&mut conn);
        }
        let _ = kill(self.proc.pid, Signal::SIGTERM);
        let done = self.proc.recv_any().map_err(|fail| match fail {
            Fail::Crashed(m) if m.contains("SIGTERM") => Fail::failed(
                "the server was killed by SIGTERM instead of stopping cleanly: block SIGTERM in \
                 every thread (before starting any) and wait for it with sigwait(), then clean \
                 up",
            ),
            other => other,
        })?;
        if done.kind != "done" {
            return Err(Fail::failed(format!(
                "after SIGTERM the server said `{}` (kind={}: {}) instead of `done`",
                done.kind,
                done.get("kind").unwrap_or("none"),
                done.get("error").unwrap_or("")
            )));
        }
        let status = self.proc.wait()?;
        if !status.success() {
            return Err(Fail::failed(format!(
                "after SIGTERM the server exited with {status}: stop cleanly with status 0"
            )));
        }
        if self.transport == Transport::Unix && self.path.exists() {
            return Err(Fail::failed(format!(
                "{} still exists after the server stopped: remove the socket file when the \
                 server ends, or the next bind() fails with EADDRINUSE",
                self.path.display()
            )));
        }
        Ok(done)
    }

    /// The server's stderr, for its log lines.
    fn log(&self) -> String {
        self.proc.stderr.lock().expect("capture lock").text()
    }
}

/// Reads one frame: (head, payload), or `None` at end of stream before the frame starts.
fn read_frame(conn: &mut Conn) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let stream = conn.stream();
    let mut header = [0u8; 4];
    let mut got = 0;
    while got < header.len() {
        match stream.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_be_bytes(header) as usize;
    if len == 0 || len > MAX_BODY {
        return Err(std::io::Error::other(format!(
            "a length prefix of {len}, read as u32 big-endian"
        )));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body)?;
    let payload = body.split_off(1);
    Ok(Some((body[0], payload)))
}

/// Reads one response frame: (status, payload).
fn read_response(conn: &mut Conn) -> std::io::Result<(u8, Vec<u8>)> {
    read_frame(conn)?.ok_or_else(|| ErrorKind::UnexpectedEof.into())
}

/// Checks one response against the request, naming the request.
fn verify(got: (u8, Vec<u8>), op: u8, payload: &[u8], what: &str) -> Result<(), Fail> {
    let (status, answer) = expected(op, payload);
    if got.0 != status {
        return Err(Fail::failed(format!(
            "{what}: status {} for op {:?} with {} payload bytes, expected {status} (0 for E, R \
             and H, 1 for an unknown op)",
            got.0, op as char, payload.len()
        )));
    }
    if got.1 != answer {
        return Err(Fail::failed(format!(
            "{what}: the response to op {:?} with {} payload bytes has {} bytes that differ \
             from the {} expected: a request is exactly the length its prefix says; read the \
             prefix, then exactly that many bytes (looping), and keep what follows for the next",
            op as char,
            payload.len(),
            got.1.len(),
            answer.len()
        )));
    }
    Ok(())
}

/// Random requests: mostly small, some up to 64 KiB, one of them with an unknown op.
fn random_requests_for(run: &mut Run, n: usize, tag: &str) -> Vec<(u8, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let op = if i == n / 2 {
                b'Z'
            } else {
                [OP_ECHO, OP_REVERSE, OP_HASH][run.rng().random_range(0..3)]
            };
            let len = if run.rng().random_range(0..8) == 0 {
                run.rng().random_range(0..64 << 10)
            } else {
                run.rng().random_range(0..200)
            };
            let mut payload = format!("{tag}-{i}-").into_bytes();
            payload.extend(run.random_bytes(len));
            (op, payload)
        })
        .collect()
}

/// A client process of the student's: connected, waiting for `go`.
struct ClientProc {
    proc: Proc,
    requests: Vec<(u8, Vec<u8>)>,
    output: PathBuf,
    role: String,
}

fn spawn_client(
    run: &mut Run,
    at: &[String],
    requests: Vec<(u8, Vec<u8>)>,
    role: &str,
) -> Result<ClientProc, Fail> {
    let tag = role.replace(' ', "-");
    let input = run.path(&format!("{tag}.requests"));
    let output = run.path(&format!("{tag}.responses"));
    let mut bytes = Vec::new();
    for (op, payload) in &requests {
        bytes.push(*op);
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(payload);
    }
    std::fs::write(&input, bytes)?;
    let mut args = vec!["client".to_string()];
    args.extend_from_slice(at);
    args.extend([
        "--requests".into(),
        input.display().to_string(),
        "--output".into(),
        output.display().to_string(),
    ]);
    let mut proc = run.spawn(&args)?;
    let name = role.to_string();
    proc.set_roles(move |_| name.clone());
    let ready = proc.recv_any()?;
    if ready.kind != "ready" {
        return Err(Fail::failed(format!(
            "{role} said `{}` (kind={}: {}) instead of connecting",
            ready.kind,
            ready.get("kind").unwrap_or("none"),
            ready.get("error").unwrap_or("")
        )));
    }
    Ok(ClientProc {
        proc,
        requests,
        output,
        role: role.to_string(),
    })
}

impl ClientProc {
    /// The responses the client wrote (status, payload), after it exited: one per request, or
    /// an error saying how many there were.
    fn responses(&self) -> Result<Vec<(u8, Vec<u8>)>, Fail> {
        let bytes = std::fs::read(&self.output).unwrap_or_default();
        let mut rest = &bytes[..];
        let mut responses = Vec::new();
        for i in 0..self.requests.len() {
            if rest.len() < 5 {
                return Err(Fail::failed(format!(
                    "{} got {i} responses to {} requests",
                    self.role,
                    self.requests.len()
                )));
            }
            let len = u32::from_le_bytes(rest[1..5].try_into().expect("4 bytes")) as usize;
            responses.push((rest[0], rest[5..].get(..len).unwrap_or(&[]).to_vec()));
            rest = &rest[(5 + len).min(rest.len())..];
        }
        Ok(responses)
    }

    /// Checks the responses the client wrote, after it exited.
    fn verify(&self) -> Result<(), Fail> {
        for (i, (got, (op, payload))) in self.responses()?.into_iter().zip(&self.requests).enumerate()
        {
            verify(got, *op, payload, &format!("{}, request {i}", self.role))?;
        }
        Ok(())
    }

    /// Lets it run and waits for its `done` and exit.
    fn finish(mut self) -> Result<ClientProc, Fail> {
        self.proc.send("go", &[])?;
        let done = self.proc.recv_any()?;
        if done.kind != "done" {
            return Err(Fail::failed(format!(
                "{} said `{}` (kind={}: {}) instead of `done`",
                self.role,
                done.kind,
                done.get("kind").unwrap_or("none"),
                done.get("error").unwrap_or("")
            )));
        }
        self.proc.wait()?;
        Ok(self)
    }
}

fn random_requests(run: &mut Run, transport: Transport) -> Result<String, Fail> {
    let server = server(run, transport)?;
    let requests = random_requests_for(run, 40, "c");
    let client = spawn_client(run, &server.where_args(), requests, "the client")?.finish()?;
    client.verify()?;
    server.stop()?;
    Ok(format!(
        "40 random requests were answered correctly over {}",
        if transport == Transport::Unix { "a Unix socket" } else { "TCP" }
    ))
}

fn byte_at_a_time(run: &mut Run) -> Result<String, Fail> {
    for transport in [Transport::Unix, Transport::Tcp] {
        let server = server(run, transport)?;
        let mut conn = server.connect()?;
        for (i, (op, payload)) in random_requests_for(run, 6, "b").into_iter().enumerate() {
            let payload: Vec<u8> = payload.into_iter().take(40).collect();
            for (n, byte) in frame(op, &payload).iter().enumerate() {
                conn.stream().write_all(&[*byte]).map_err(|e| {
                    Fail::failed(format!(
                        "the server closed the connection after {n} bytes of a request sent one \
                         byte per write ({e}): a read may return fewer bytes than asked; loop \
                         until the whole length prefix and body are in"
                    ))
                })?;
                // A pause now and then, so that the server's reads see the pieces apart.
                if n % 3 == 0 {
                    std::thread::sleep(Duration::from_micros(300));
                }
            }
            let got = read_response(&mut conn).map_err(|e| {
                Fail::failed(format!(
                    "no response to request {i}, sent one byte per write ({e}): a read returns \
                     what has arrived, maybe 1 byte; loop until the whole frame is in"
                ))
            })?;
            verify(got, op, &payload, &format!("request {i}, sent one byte per write"))?;
        }
        drop(conn);
        server.stop()?;
    }
    Ok("6 requests sent one byte per write were answered, over Unix and TCP sockets".into())
}

fn pipelined(run: &mut Run) -> Result<String, Fail> {
    let server = server(run, Transport::Unix)?;
    let mut conn = server.connect()?;
    let requests: Vec<(u8, Vec<u8>)> = random_requests_for(run, 200, "p")
        .into_iter()
        .map(|(op, p)| (op, p.into_iter().take(100).collect()))
        .collect();
    let all: Vec<u8> = requests.iter().flat_map(|(op, p)| frame(*op, p)).collect();
    // Written whole from a thread: the responses must be read meanwhile, or both sides could
    // fill their buffers.
    let mut writer = match &conn {
        Conn::Unix(s) => s.try_clone()?,
        Conn::Tcp(_) => unreachable!("a Unix socket"),
    };
    let sender = std::thread::spawn(move || writer.write_all(&all));
    for (i, (op, payload)) in requests.iter().enumerate() {
        let got = read_response(&mut conn).map_err(|e| {
            Fail::failed(format!(
                "200 requests were written in one write(); the server answered only {i} ({e}): \
                 one read may hold several requests, keep the bytes after the first frame for \
                 the next"
            ))
        })?;
        verify(got, *op, payload, &format!("pipelined request {i}"))?;
    }
    let _ = sender.join();
    drop(conn);
    server.stop()?;
    Ok("200 requests in one write got 200 correct responses, in order".into())
}

fn large_payloads(run: &mut Run) -> Result<String, Fail> {
    for transport in [Transport::Unix, Transport::Tcp] {
        let server = server(run, transport)?;
        let requests = vec![
            (OP_ECHO, run.random_bytes(8 << 20)),
            (OP_REVERSE, run.random_bytes(9 << 20)),
            (OP_HASH, run.random_bytes(8 << 20)),
        ];
        let client = spawn_client(run, &server.where_args(), requests, "the client")?.finish()?;
        client.verify()?;
        server.stop()?;
    }
    Ok("8 MiB and 9 MiB payloads went both ways over Unix and TCP sockets".into())
}

fn size_limit(run: &mut Run) -> Result<String, Fail> {
    let server = server(run, Transport::Unix)?;
    // The largest payload allowed, from the student's client: the request's and the response's
    // bodies are exactly MAX_BODY bytes.
    let requests = vec![(OP_REVERSE, run.random_bytes(MAX_PAYLOAD))];
    let client = spawn_client(run, &server.where_args(), requests, "the client")?;
    let client = client.finish().map_err(|fail| match fail {
        Fail::Failed(m) => Fail::failed(format!(
            "{m}, with a payload of exactly MAX_PAYLOAD (16 MiB), the largest allowed{}: a frame \
             body is the op or status byte and the payload, so MAX_BODY = MAX_PAYLOAD + 1 bytes \
             must be accepted, by the server and by the client",
            server.alive_note()
        )),
        other => other,
    })?;
    client.verify()?;

    // One byte more: refused as soon as the length prefix is in.
    let what = "a length prefix of MAX_BODY + 1 (a payload one byte over MAX_PAYLOAD)";
    let mut conn = server.connect()?;
    let mut header = ((MAX_BODY + 1) as u32).to_be_bytes().to_vec();
    header.push(OP_ECHO);
    conn.stream().write_all(&header)?;
    dropped(&mut conn, what, &server)?;
    server.stop()?;
    Ok("a payload of exactly MAX_PAYLOAD went both ways; a frame one byte longer was refused".into())
}

fn many_clients(run: &mut Run) -> Result<String, Fail> {
    const CLIENTS: usize = 8;
    let server = server(run, Transport::Unix)?;
    // A client of the grader's that sends half a request and then nothing.
    let mut stalled = server.connect()?;
    stalled
        .stream()
        .write_all(&frame(OP_ECHO, b"never finished")[..7])?;
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let requests = random_requests_for(run, 40, &format!("client{c}"));
        clients.push(spawn_client(run, &server.where_args(), requests, &format!("client {}", c + 1))?);
    }
    for client in &mut clients {
        client.proc.send("go", &[])?;
    }
    let limit = Instant::now() + Duration::from_secs(15);
    for client in &mut clients {
        if client.proc.wait_until(limit)?.is_none() {
            return Err(Fail::failed(format!(
                "{} did not finish its 40 requests within 15 s while another client had sent \
                 half a request and stalled: the server waits on one client at a time; serve \
                 each client concurrently (a thread or process per client, or poll())",
                client.role
            )));
        }
    }
    for client in &clients {
        client.verify().map_err(|fail| match fail {
            Fail::Failed(m) => Fail::failed(format!(
                "{m} (with {CLIENTS} clients at once: each connection must get only its own \
                 responses, keep per-client state per connection)"
            )),
            other => other,
        })?;
    }
    stalled.shutdown(Shutdown::Both);
    server.stop()?;
    Ok(format!(
        "{CLIENTS} clients got their own 40 responses each while another client stalled"
    ))
}

/// The server's `VmHWM` (peak resident memory) in KiB.
fn peak_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// After a bad client, the server must have closed that connection (read gives end-of-file or
/// an error, not a timeout).
fn dropped(conn: &mut Conn, what: &str, server: &Server) -> Result<(), Fail> {
    conn.timeouts(Duration::from_secs(3));
    let mut byte = [0u8; 1];
    match conn.stream().read(&mut byte) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            Err(Fail::failed(format!(
                "the server kept the connection open after {what}: check the frame and drop \
                 the client (log it with log_dropped()) as soon as its input is wrong"
            )))
        }
        Ok(0) | Err(_) if server.alive_note().is_empty() => Ok(()),
        Ok(0) | Err(_) => Err(Fail::failed(format!(
            "the server died after {what}: a bad client must cost only its own connection \
             (log it and drop it), never the server"
        ))),
        Ok(_) => Err(Fail::failed(format!(
            "after {what} the server sent a response instead of dropping the client"
        ))),
    }
}

fn bad_input(run: &mut Run) -> Result<String, Fail> {
    let server = server(run, Transport::Unix)?;
    let good = |server: &Server, after: &str| -> Result<(), Fail> {
        let mut conn = server.connect()?;
        let payload = b"still serving?".to_vec();
        conn.stream().write_all(&frame(OP_REVERSE, &payload))?;
        let got = read_response(&mut conn).map_err(|e| {
            Fail::failed(format!(
                "after {after}, a good client got no response ({e}){}: drop the bad client and \
                 keep serving the others",
                server.alive_note()
            ))
        })?;
        verify(got, OP_REVERSE, &payload, &format!("a good client after {after}"))
    };
    good(&server, "the start")?;
    let before = peak_kib(server.pid());

    // A frame announcing 100 bytes, 10 sent, then the client's write side shut.
    let what = "a truncated frame (100 bytes announced, 10 sent, then end of stream)";
    let mut conn = server.connect()?;
    conn.stream().write_all(&frame(OP_ECHO, &[7u8; 99])[..14])?;
    conn.shutdown(Shutdown::Write);
    dropped(&mut conn, what, &server)?;
    good(&server, what)?;

    // End of stream inside the length prefix is a frame cut short too, not a clean end.
    let what = "a frame cut inside its length prefix (2 of its 4 bytes, then end of stream)";
    let mut conn = server.connect()?;
    conn.stream().write_all(&[0, 0])?;
    conn.shutdown(Shutdown::Write);
    dropped(&mut conn, what, &server)?;
    good(&server, what)?;

    let what = "an empty frame (length 0)";
    let mut conn = server.connect()?;
    conn.stream().write_all(&[0, 0, 0, 0])?;
    dropped(&mut conn, what, &server)?;
    good(&server, what)?;

    // An absurd length, then 48 MiB of filler: a server that believed the length would keep
    // reading, and its memory would grow with the filler.
    let what = "an absurd length prefix (0xfffffff0)";
    let mut conn = server.connect()?;
    conn.stream().write_all(&[0xff, 0xff, 0xff, 0xf0])?;
    let filler = vec![0x5au8; 1 << 20];
    conn.timeouts(Duration::from_secs(2));
    for _ in 0..48 {
        if conn.stream().write_all(&filler).is_err() {
            break;
        }
    }
    dropped(&mut conn, what, &server)?;
    good(&server, what)?;
    let grown = peak_kib(server.pid()).saturating_sub(before);
    if grown > 24 << 10 {
        return Err(Fail::failed(format!(
            "after {what} the server's peak memory (VmHWM) grew by {} MiB: refuse a length \
             above MAX_BODY before allocating or reading anything",
            grown >> 10
        )));
    }

    // Half a request, then the connection closed.
    let what = "a client that disconnected mid-request";
    let mut conn = server.connect()?;
    conn.stream().write_all(&frame(OP_HASH, &[1u8; 999])[..500])?;
    drop(conn);
    good(&server, what)?;

    // Closing with a response unread resets the connection: the server's next read fails with
    // ECONNRESET, an error like any other. The whole response must be in first, so that the
    // server's next call is that read, not the end of its write.
    let what = "a client that closed its connection with a response unread (a reset)";
    let mut conn = server.connect()?;
    let request = frame(OP_ECHO, b"never read");
    conn.stream().write_all(&request)?;
    if !conn.queued_within(request.len(), Duration::from_secs(5)) {
        return Err(Fail::failed(format!(
            "no complete response within 5 s to a good request{}",
            server.alive_note()
        )));
    }
    drop(conn);
    good(&server, what)?;

    // Each drop is logged after the server noticed it: give the lines a moment to arrive.
    let wanted = [
        (
            "truncated",
            3,
            "the truncated frame, the frame cut inside its length prefix and the client gone \
             mid-request: end of stream inside a frame, its length prefix included, is \
             RpcError::Truncated",
        ),
        ("empty-frame", 1, "the empty frame"),
        ("too-long", 1, "the absurd length prefix"),
        (
            "io",
            1,
            "the reset connection: a read error other than EINTR ends the client, it is not \
             retried",
        ),
    ];
    let count = |log: &str, kind: &str| {
        let tag = format!("(kind={kind})");
        log.lines()
            .filter(|l| l.contains("dropped client") && l.contains(&tag))
            .count()
    };
    let complete = |log: &str| wanted.iter().all(|&(kind, n, _)| count(log, kind) >= n);
    let patience = Instant::now() + Duration::from_secs(3);
    while !complete(&server.log()) && Instant::now() < patience {
        std::thread::sleep(Duration::from_millis(10));
    }
    let log = server.log();
    for (kind, n, which) in wanted {
        let lines = count(&log, kind);
        if lines < n {
            return Err(Fail::failed(format!(
                "the server's log has {lines} `dropped client ... (kind={kind})` line(s), \
                 expected {n}, for {which}: log every client whose connection ends with an \
                 error, with log_dropped()"
            )));
        }
    }
    server.stop()?;
    Ok(format!(
        "6 bad clients were dropped and logged, the server kept serving, its peak memory grew \
         {grown} KiB"
    ))
}

/// The server's `done` counts after a known history: connections that asked a few questions
/// and closed between frames, one bad client, and the grader's ping.
fn server_counts(run: &mut Run) -> Result<String, Fail> {
    let server = server(run, Transport::Unix)?;
    let sessions: Vec<usize> = (0..3).map(|_| run.rng().random_range(1..=6)).collect();
    for &calls in &sessions {
        let mut conn = server.connect()?;
        for _ in 0..calls {
            let len = run.rng().random_range(1..500);
            let payload = run.random_bytes(len);
            conn.stream().write_all(&frame(OP_ECHO, &payload))?;
            let got = read_response(&mut conn)
                .map_err(|e| Fail::failed(format!("no response to a request ({e})")))?;
            verify(got, OP_ECHO, &payload, "a request")?;
        }
    }
    let mut bad = server.connect()?;
    bad.stream().write_all(&[0, 0, 0, 0])?;
    dropped(&mut bad, "an empty frame (length 0)", &server)?;
    // stop() pings first: one more client, one more request.
    let done = server.stop()?;
    let connections = sessions.len() as u64 + 2;
    let requests = sessions.iter().sum::<usize>() as u64 + 1;
    let reported = |field: &str| done.get(field).and_then(|v| v.parse::<u64>().ok());
    let history = format!(
        "{} clients that made {sessions:?} calls and closed between frames, one that sent an \
         empty frame, and one last call",
        sessions.len()
    );
    match reported("dropped") {
        Some(1) => {}
        Some(0) | None => {
            return Err(Fail::failed(format!(
                "the server's `done` says dropped={}, after {history}: count each client whose \
                 connection ends with an error in ServerStats::dropped",
                done.get("dropped").unwrap_or("nothing")
            )));
        }
        Some(n) => {
            return Err(Fail::failed(format!(
                "the server's `done` says dropped={n}, after {history}: a client that closes \
                 the connection between frames has ended normally (read_frame returns \
                 Ok(None) when the stream ends before the first byte of a frame); only the \
                 empty frame was an error"
            )));
        }
    }
    if reported("requests") != Some(requests) {
        return Err(Fail::failed(format!(
            "the server's `done` says requests={}, after {history}: {requests} were answered; \
             count every answered request in ServerStats::requests",
            done.get("requests").unwrap_or("nothing")
        )));
    }
    // The connection that wakes the accepting thread at the end may count as a client.
    if !matches!(reported("clients"), Some(n) if n == connections || n == connections + 1) {
        return Err(Fail::failed(format!(
            "the server's `done` says clients={}, after {history}: {connections} clients \
             connected; count every accepted client in ServerStats::clients",
            done.get("clients").unwrap_or("nothing")
        )));
    }
    Ok(format!(
        "the server counted {connections} clients, {requests} requests and 1 dropped client"
    ))
}

fn sigterm_cleanup(run: &mut Run) -> Result<String, Fail> {
    let server = server(run, Transport::Unix)?;
    let mut idle = server.connect()?;
    idle.stream().write_all(&frame(OP_ECHO, b"hello"))?;
    read_response(&mut idle)
        .map_err(|e| Fail::failed(format!("no response to a first request: {e}")))?;
    if !server.path.exists() {
        return Err(Fail::failed("the socket file does not exist while the server listens"));
    }
    // The idle client stays connected: SIGTERM must not wait for it.
    server.stop()?;
    let mut byte = [0u8; 1];
    if let Ok(n @ 1..) = idle.stream().read(&mut byte) {
        return Err(Fail::failed(format!(
            "the idle client read {n} byte(s) after the server stopped"
        )));
    }
    let tcp = self::server(run, Transport::Tcp)?;
    let port = tcp.port;
    tcp.stop()?;
    if TcpStream::connect(("127.0.0.1", port)).is_ok() {
        return Err(Fail::failed(format!(
            "port {port} still accepts connections after the TCP server stopped"
        )));
    }
    Ok("SIGTERM stopped both servers cleanly with a client connected; the socket file went".into())
}

/// Runs `program` with `args` (stdin from `input`), at most `limit`; its stdout, or `None` if
/// it is not installed.
fn external(program: &str, args: &[&str], input: &[u8], limit: Duration) -> Result<Option<Vec<u8>>, Fail> {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // Registered, so that the grader's sweeps for orphans do not reap it under our feet.
    let child = process::spawn_helper(&mut command);
    let mut child = match child {
        Ok(child) => child,
        // Not installed, or not runnable by this user (a PATH entry it may not search).
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::PermissionDenied) => {
            return Ok(None);
        }
        Err(e) => return Err(Fail::Grader(format!("{program}: {e}"))),
    };
    let mut stdin = child.stdin.take().expect("piped");
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        out
    });
    let deadline = Instant::now() + limit;
    let finished = loop {
        match child.try_wait() {
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                break false;
            }
            _ => break true,
        }
    };
    process::forget(child.id());
    if !finished {
        return Err(Fail::failed(format!(
            "{program}'s client got no complete answer within {limit:?}"
        )));
    }
    let _ = feeder.join();
    Ok(Some(reader.join().unwrap_or_default()))
}

/// A Python client: sends each framed request, reads each framed response, prints them.
const PYTHON_CLIENT: &str = r#"
import socket, struct, sys
kind, where = sys.argv[1], sys.argv[2]
if kind == "unix":
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(where)
else:
    s = socket.create_connection(("127.0.0.1", int(where)))
s.settimeout(5)
def recv_exact(n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise SystemExit("connection closed")
        data += chunk
    return data
out = sys.stdout.buffer
for op, payload in [(b"E", b"from python"), (b"R", b"nohtyp"), (b"H", b"hash me")]:
    s.sendall(struct.pack(">I", len(payload) + 1) + op + payload)
    (length,) = struct.unpack(">I", recv_exact(4))
    out.write(struct.pack(">I", length) + recv_exact(length))
out.flush()
"#;

fn python_expected() -> Vec<u8> {
    let mut bytes = Vec::new();
    for (op, payload) in [
        (OP_ECHO, &b"from python"[..]),
        (OP_REVERSE, b"nohtyp"),
        (OP_HASH, b"hash me"),
    ] {
        let (status, answer) = expected(op, payload);
        bytes.extend_from_slice(&((answer.len() + 1) as u32).to_be_bytes());
        bytes.push(status);
        bytes.extend_from_slice(&answer);
    }
    bytes
}

fn foreign_clients(run: &mut Run) -> Result<String, Fail> {
    let mut used = vec!["the grader's own client"];
    let mut missing = Vec::new();
    for transport in [Transport::Unix, Transport::Tcp] {
        let server = server(run, transport)?;
        // The grader's own client: two requests in a row on one connection.
        let mut conn = server.connect()?;
        for (op, payload) in [(OP_HASH, b"grader".to_vec()), (OP_ECHO, run.random_bytes(3000))] {
            conn.stream().write_all(&frame(op, &payload))?;
            let got = read_response(&mut conn)
                .map_err(|e| {
                    Fail::failed(format!(
                        "the grader's own client got no response ({e}): follow the frame format \
                         exactly (u32 big-endian length of the status and the payload)"
                    ))
                })?;
            verify(got, op, &payload, "the grader's own client")?;
        }
        drop(conn);
        let (kind, target) = match transport {
            Transport::Unix => ("unix", server.path.display().to_string()),
            Transport::Tcp => ("tcp", server.port.to_string()),
        };
        let limit = Duration::from_secs(5);
        match external("python3", &["-c", PYTHON_CLIENT, kind, &target], &[], limit)? {
            Some(out) if out == python_expected() => used.push("Python"),
            Some(out) => {
                return Err(Fail::failed(format!(
                    "a Python client over {kind} got {} bytes of answers, not the {} expected: \
                     follow the frame format exactly (u32 big-endian length of the status and \
                     the payload)",
                    out.len(),
                    python_expected().len()
                )));
            }
            None => missing.push("python3"),
        }
        // socat forwards stdin to the socket and the answer back to stdout.
        let address = match transport {
            Transport::Unix => format!("UNIX-CONNECT:{target}"),
            Transport::Tcp => format!("TCP:127.0.0.1:{target}"),
        };
        let request = frame(OP_REVERSE, b"socat");
        match external("socat", &["-t", "2", "-", &address], &request, limit)? {
            Some(out) => {
                let mut want = 6u32.to_be_bytes().to_vec();
                want.push(STATUS_OK);
                want.extend_from_slice(b"tacos");
                if out != want {
                    return Err(Fail::failed(format!(
                        "a socat client over {kind} got {:?}, expected {want:?}",
                        out
                    )));
                }
                used.push("socat");
            }
            None => missing.push("socat"),
        }
        server.stop()?;
    }
    used.dedup();
    missing.dedup();
    let mut message = format!("answered {}", used.join(", "));
    if !missing.is_empty() {
        message.push_str(&format!(" ({} not installed here: skipped)", missing.join(", ")));
    }
    Ok(message)
}

/// A listening socket of the grader's own, for the student's client.
enum GraderListener {
    /// Its file is removed when the listener goes.
    Unix(UnixListener, PathBuf),
    Tcp(TcpListener),
}

impl GraderListener {
    /// Listens, and returns the client's arguments that lead to it.
    fn bind(run: &Run, transport: Transport) -> Result<(GraderListener, Vec<String>), Fail> {
        Ok(match transport {
            Transport::Unix => {
                let path = run.path("grader.sock");
                let listener = UnixListener::bind(&path)?;
                // connect() needs write permission on the file.
                if let Some((uid, gid)) = run.program_user() {
                    nix::unistd::chown(&path, Some(uid.into()), Some(gid.into()))
                        .map_err(|e| Fail::Grader(format!("chown {}: {e}", path.display())))?;
                }
                let at = vec!["--unix".into(), path.display().to_string()];
                (GraderListener::Unix(listener, path), at)
            }
            Transport::Tcp => {
                let listener = TcpListener::bind(("127.0.0.1", 0))?;
                let at = vec!["--tcp".into(), listener.local_addr()?.port().to_string()];
                (GraderListener::Tcp(listener), at)
            }
        })
    }

    /// The first connection that comes within `limit`, with 5-second read and write timeouts.
    fn accept_within(&self, limit: Duration) -> Result<Option<Conn>, Fail> {
        let until = Instant::now() + limit;
        loop {
            let accepted = match self {
                GraderListener::Unix(l, _) => l
                    .set_nonblocking(true)
                    .and_then(|()| l.accept())
                    .and_then(|(s, _)| s.set_nonblocking(false).map(|()| Conn::Unix(s))),
                GraderListener::Tcp(l) => l
                    .set_nonblocking(true)
                    .and_then(|()| l.accept())
                    .and_then(|(s, _)| s.set_nonblocking(false).map(|()| Conn::Tcp(s))),
            };
            match accepted {
                Ok(conn) => {
                    conn.timeouts(Duration::from_secs(5));
                    return Ok(Some(conn));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Drop for GraderListener {
    fn drop(&mut self) {
        if let GraderListener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Answers each request of `conn`, until the client closes it, with the next of `answers`
/// (random bytes no client can compute); returns the requests that came.
fn answer_all(mut conn: Conn, answers: Vec<(u8, Vec<u8>)>) -> Vec<(u8, Vec<u8>)> {
    let mut received = Vec::new();
    let mut answers = answers.into_iter();
    while let Ok(Some(request)) = read_frame(&mut conn) {
        received.push(request);
        let Some((status, answer)) = answers.next() else {
            break;
        };
        if conn.stream().write_all(&frame(status, &answer)).is_err() {
            break;
        }
    }
    received
}

/// The student's client against a server of the grader's: what the client writes must be what
/// came back over the socket, for requests that went over it.
fn client_over_socket(run: &mut Run) -> Result<String, Fail> {
    const REQUESTS: usize = 20;
    for transport in [Transport::Unix, Transport::Tcp] {
        let kind = if transport == Transport::Unix { "a Unix socket" } else { "TCP" };
        let (listener, at) = GraderListener::bind(run, transport)?;
        let requests = random_requests_for(run, REQUESTS, "g");
        let answers: Vec<(u8, Vec<u8>)> = (0..REQUESTS)
            .map(|_| {
                let len = run.rng().random_range(1..64);
                (STATUS_OK, run.random_bytes(len))
            })
            .collect();
        let client = spawn_client(run, &at, requests, "the client")?;
        // The client says `ready` once connected, so its connection is already queued.
        let conn = listener.accept_within(Duration::from_secs(2))?.ok_or_else(|| {
            Fail::failed(format!(
                "the client said `ready` but never connected to the grader's server over \
                 {kind} ({}): Client::connect must connect to the endpoint it is given, and \
                 every call must go over that connection",
                at.join(" ")
            ))
        })?;
        let closer = match &conn {
            Conn::Unix(s) => s.try_clone().map(Conn::Unix),
            Conn::Tcp(s) => s.try_clone().map(Conn::Tcp),
        }?;
        let answering = {
            let answers = answers.clone();
            std::thread::spawn(move || answer_all(conn, answers))
        };
        let finished = client.finish();
        // Ends the answering thread if the client is stuck.
        closer.shutdown(Shutdown::Both);
        let received = answering.join().unwrap_or_default();
        let client = finished?;
        if received.len() != client.requests.len() {
            return Err(Fail::failed(format!(
                "over {kind}, the grader's server received {} of the client's {} requests, yet \
                 the client wrote its answers: Client::call must send each request over the \
                 socket and return the response the server sent, never compute it itself",
                received.len(),
                client.requests.len()
            )));
        }
        if let Some(i) = received.iter().zip(&client.requests).position(|(r, q)| r != q) {
            return Err(Fail::failed(format!(
                "over {kind}, request {i} as the grader's server received it is not the one in \
                 the requests file: send the op and the payload as they are"
            )));
        }
        if let Some(i) = client.responses()?.iter().zip(&answers).position(|(w, a)| w != a) {
            return Err(Fail::failed(format!(
                "over {kind}, the client wrote a response to request {i} that is not the one the \
                 grader's server sent (the server answered every request with random bytes of its \
                 own): Client::call must return the response read from the socket, never one \
                 computed by the client"
            )));
        }
    }
    Ok(format!(
        "the client sent its {REQUESTS} requests to the grader's server over a Unix socket and \
         over TCP, and wrote the random answers it got back"
    ))
}

fn explain_hang(hang: &Hang) -> Option<String> {
    let server = hang.by_role("the server")?;
    let reading = server
        .activities
        .iter()
        .any(|a| matches!(a, Activity::SocketRead { .. }));
    let clients_waiting = hang
        .processes
        .iter()
        .filter(|p| p.role != "the server")
        .any(|p| p.activities.iter().any(|a| matches!(a, Activity::SocketRead { .. })));
    if reading && clients_waiting {
        return Some(
            "the server and its clients are all waiting to read: the server waits for bytes \
             of a request it believes incomplete (read the exact frame length, no more) or \
             serves one client at a time"
                .into(),
        );
    }
    None
}
