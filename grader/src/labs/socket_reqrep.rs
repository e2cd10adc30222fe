//! Checks of lab 3, request-response over sockets: a length-prefixed RPC served over a Unix
//! domain socket and over TCP on loopback.
//!
//! `socket-reqrep server --unix PATH | --tcp 0` says `ready` (with `port` for TCP) once it
//! listens, serves until SIGTERM, then says `done` with its counts. `socket-reqrep client
//! (--unix PATH | --tcp PORT) --requests F --output O` says `ready` once connected, waits for
//! `go`, makes one call per request and says `done`. The grader also talks to the server itself
//! (its own client, below, and Python or socat when the machine has them), and reads the
//! server's memory use from `/proc/PID/status`.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
            description: "a truncated frame, an empty frame, an absurd length and a client gone \
                          mid-request each get that client dropped with a log line; the server \
                          allocates nothing absurd and serves on",
            exclusive: false,
            run: bad_input,
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
    ],
};

const OP_ECHO: u8 = b'E';
const OP_REVERSE: u8 = b'R';
const OP_HASH: u8 = b'H';
const STATUS_OK: u8 = 0;
const STATUS_UNKNOWN_OP: u8 = 1;

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

/// A request frame: u32 big-endian length of op and payload, the op, the payload.
fn frame(op: u8, payload: &[u8]) -> Vec<u8> {
    let mut bytes = ((payload.len() + 1) as u32).to_be_bytes().to_vec();
    bytes.push(op);
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
    fn stop(mut self) -> Result<(), Fail> {
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
        Ok(())
    }

    /// The server's stderr, for its log lines.
    fn log(&self) -> String {
        self.proc.stderr.lock().expect("capture lock").text()
    }
}

/// Reads one response frame: (status, payload).
fn read_response(conn: &mut Conn) -> std::io::Result<(u8, Vec<u8>)> {
    let stream = conn.stream();
    let mut header = [0u8; 4];
    stream.read_exact(&mut header)?;
    let len = u32::from_be_bytes(header) as usize;
    if len == 0 || len > (16 << 20) + 1 {
        return Err(std::io::Error::other(format!(
            "a response length prefix of {len}, read as u32 big-endian"
        )));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body)?;
    Ok((body[0], body[1..].to_vec()))
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
    server: &Server,
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
    args.extend(server.where_args());
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
    /// Checks the responses the client wrote, after it exited.
    fn verify(&self) -> Result<(), Fail> {
        let bytes = std::fs::read(&self.output).unwrap_or_default();
        let mut rest = &bytes[..];
        for (i, (op, payload)) in self.requests.iter().enumerate() {
            if rest.len() < 5 {
                return Err(Fail::failed(format!(
                    "{} got {i} responses to {} requests",
                    self.role,
                    self.requests.len()
                )));
            }
            let len = u32::from_le_bytes(rest[1..5].try_into().expect("4 bytes")) as usize;
            let body = rest[5..].get(..len).unwrap_or(&[]).to_vec();
            let what = format!("{}, request {i}", self.role);
            verify((rest[0], body), *op, payload, &what)?;
            rest = &rest[(5 + len).min(rest.len())..];
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
    let client = spawn_client(run, &server, requests, "the client")?.finish()?;
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
        let client = spawn_client(run, &server, requests, "the client")?.finish()?;
        client.verify()?;
        server.stop()?;
    }
    Ok("8 MiB and 9 MiB payloads went both ways over Unix and TCP sockets".into())
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
        clients.push(spawn_client(run, &server, requests, &format!("client {}", c + 1))?);
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

    // The last drop is logged after the server noticed the closed connection: give the line
    // a moment to arrive.
    let count = |log: &str| log.lines().filter(|l| l.contains("dropped client")).count();
    let patience = Instant::now() + Duration::from_secs(3);
    while count(&server.log()) < 4 && Instant::now() < patience {
        std::thread::sleep(Duration::from_millis(10));
    }
    let log = server.log();
    let lines = count(&log);
    for kind in ["kind=truncated", "kind=empty-frame", "kind=too-long"] {
        if !log.lines().any(|l| l.contains("dropped client") && l.contains(kind)) {
            return Err(Fail::failed(format!(
                "the server's log has no `dropped client ... ({kind})` line (it has {lines} \
                 dropped-client lines): log every dropped client with log_dropped()"
            )));
        }
    }
    if lines < 4 {
        return Err(Fail::failed(format!(
            "4 bad clients, but the server logged {lines} `dropped client` line(s): log every \
             client whose connection ends with an error, with log_dropped()"
        )));
    }
    server.stop()?;
    Ok(format!(
        "4 bad clients were dropped and logged, the server kept serving, its peak memory grew \
         {grown} KiB"
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
