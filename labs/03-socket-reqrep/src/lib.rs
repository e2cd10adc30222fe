//! # Lab 3: request-response over sockets
//!
//! A tiny RPC. A client connects to the server, sends requests and reads one response per
//! request; the server serves many clients at once. The same code runs over a Unix domain
//! socket (a path in the file system) and over TCP on the loopback address.
//!
//! ```text
//!   server: bind(endpoint) -> listen -> loop { accept() -> serve the client concurrently }
//!           SIGTERM: stop accepting, close every client, remove the socket file
//!   client: connect(endpoint) -> { write request frame, read response frame }* -> close
//!   frame:  u32 big-endian length of the body, then the body
//!   request body:  op (1 byte) + payload       response body: status (1 byte) + payload
//! ```
//!
//! What this lab is about:
//! - A stream socket carries bytes, not messages: one `write()` of 100 bytes may arrive as
//!   several `read()`s, and two writes may arrive in one read. A request therefore needs
//!   framing (here a length prefix), and a reader loops until it has the whole frame.
//! - One request-response costs at least four crossings between user and kernel (the client's
//!   write and read, the server's read and write) and four copies of the data.
//! - `UnixStream` and `TcpStream` are both `Read + Write`: the protocol code does not care
//!   which one it has.
//! - A server must never trust a length it reads: it refuses a frame longer than it accepts
//!   before allocating anything, and a client that sends garbage or vanishes mid-request costs
//!   that client its connection, never the server.
//! - A Unix socket's file stays after the server exits unless the server removes it.
//!
//! The program in `main.rs` calls [`Listener::bind`] and [`run_server`] (server), or
//! [`Client::connect`] and [`Client::call`] (client). Keep `main.rs` as it is: the grader talks to
//! it.

use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;

use nix::errno::Errno;

/// Operation: the response's payload is the request's.
pub const OP_ECHO: u8 = b'E';
/// Operation: the response's payload is the request's, reversed.
pub const OP_REVERSE: u8 = b'R';
/// Operation: the response's payload is [`fnv1a`] of the request's, 8 bytes big-endian.
pub const OP_HASH: u8 = b'H';
/// Status: the operation was done.
pub const STATUS_OK: u8 = 0;
/// Status: the operation is unknown; the payload is empty.
pub const STATUS_UNKNOWN_OP: u8 = 1;
/// The largest payload of a request or a response: 16 MiB.
pub const MAX_PAYLOAD: usize = 16 << 20;
/// The largest frame body: the op or status byte and the largest payload.
pub const MAX_BODY: usize = MAX_PAYLOAD + 1;

/// Everything that can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// The server could not bind its address.
    #[error("cannot bind {endpoint}: {source}")]
    Bind {
        /// The address.
        endpoint: String,
        /// Why.
        source: io::Error,
    },
    /// The client could not connect.
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        /// The address.
        endpoint: String,
        /// Why.
        source: io::Error,
    },
    /// Reading or writing the connection failed.
    #[error("i/o on the connection failed: {0}")]
    Io(io::Error),
    /// The peer closed the connection inside a frame.
    #[error("the peer closed the connection {got} bytes into a {want}-byte frame part")]
    Truncated {
        /// Bytes received of that part (the 4-byte length, or the body).
        got: usize,
        /// Bytes the part has.
        want: usize,
    },
    /// A length prefix larger than [`MAX_BODY`].
    #[error("a frame of {len} bytes was announced; at most {max} are accepted")]
    TooLong {
        /// The length read.
        len: u64,
        /// The most accepted.
        max: usize,
    },
    /// A length prefix of 0: a frame needs at least its op or status byte.
    #[error("an empty frame (length 0)")]
    EmptyFrame,
    /// The server closed the connection before it answered.
    #[error("the server closed the connection instead of answering")]
    Closed,
    /// Blocking or waiting for the shutdown signal failed.
    #[error("signal handling failed: {0}")]
    Signal(Errno),
    /// The socket file could not be removed.
    #[error("cannot remove the socket file: {0}")]
    Remove(io::Error),
}

impl RpcError {
    /// A stable one-word name for the variant, which the program reports as `kind=` and the
    /// server writes in its log (the grader checks it). Given; do not change.
    pub fn kind(&self) -> &'static str {
        match self {
            RpcError::Bind { .. } => "bind",
            RpcError::Connect { .. } => "connect",
            RpcError::Io(_) => "io",
            RpcError::Truncated { .. } => "truncated",
            RpcError::TooLong { .. } => "too-long",
            RpcError::EmptyFrame => "empty-frame",
            RpcError::Closed => "closed",
            RpcError::Signal(_) => "signal",
            RpcError::Remove(_) => "remove",
        }
    }
}

/// The server's log line for a client it dropped. Given; call it for every client whose
/// connection ends with an error.
pub fn log_dropped(client: u64, error: &RpcError) {
    eprintln!(
        "socket-reqrep: dropped client {client}: {error} (kind={})",
        error.kind()
    );
}

/// The 64-bit FNV-1a hash of `bytes`, for [`OP_HASH`]. Given.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Where a server listens: a Unix socket's path, or a TCP address (always on loopback here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A Unix domain socket's path (at most 107 bytes).
    Unix(PathBuf),
    /// A TCP address; port 0 when binding means "any free port".
    Tcp(SocketAddr),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
            Endpoint::Tcp(addr) => write!(f, "tcp:{addr}"),
        }
    }
}

/// One connected stream socket, Unix or TCP. Reads and writes go to the socket as they are.
#[derive(Debug)]
pub enum Connection {
    /// A Unix domain stream socket.
    Unix(UnixStream),
    /// A TCP connection.
    Tcp(TcpStream),
}

impl Read for Connection {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Connection::Unix(s) => s.read(buf),
            Connection::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Connection {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Connection::Unix(s) => s.write(buf),
            Connection::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Connection {
    /// Another handle on the same socket (`dup()`), for shutting it down from another thread.
    pub fn try_clone(&self) -> io::Result<Connection> {
        Ok(match self {
            Connection::Unix(s) => Connection::Unix(s.try_clone()?),
            Connection::Tcp(s) => Connection::Tcp(s.try_clone()?),
        })
    }

    /// `shutdown()`: ends reading, writing or both for every handle on the socket.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Connection::Unix(s) => s.shutdown(how),
            Connection::Tcp(s) => s.shutdown(how),
        }
    }

    /// Connects to `endpoint`: `UnixStream::connect(path)` or `TcpStream::connect(addr)`.
    /// Failures are [`RpcError::Connect`].
    pub fn connect(endpoint: &Endpoint) -> Result<Connection, RpcError> {
        let _ = (&endpoint,);
        todo!("UnixStream::connect or TcpStream::connect; errors are Connect")
    }
}

/// A listening socket.
#[derive(Debug)]
pub enum Listener {
    /// Listening on a Unix socket file, which [`Listener::remove`] deletes.
    Unix {
        /// The listening socket.
        listener: UnixListener,
        /// Its file.
        path: PathBuf,
    },
    /// Listening on a TCP address.
    Tcp(TcpListener),
}

impl Listener {
    /// Binds and listens: `UnixListener::bind(path)` (which creates the socket file; an
    /// existing file is `EADDRINUSE`, left alone however old it is) or `TcpListener::bind(addr)`
    /// (a port already listened on is `EADDRINUSE`: no `SO_REUSEPORT`, which would let this
    /// listener share a running server's port and clients). Failures are [`RpcError::Bind`].
    pub fn bind(endpoint: &Endpoint) -> Result<Listener, RpcError> {
        let _ = (&endpoint,);
        todo!("UnixListener::bind or TcpListener::bind; errors are Bind")
    }

    /// Where clients reach this listener (for TCP, with the port the system chose).
    pub fn endpoint(&self) -> io::Result<Endpoint> {
        Ok(match self {
            Listener::Unix { path, .. } => Endpoint::Unix(path.clone()),
            Listener::Tcp(listener) => Endpoint::Tcp(listener.local_addr()?),
        })
    }

    /// Waits for the next client and returns its connection. Failures are [`RpcError::Io`].
    pub fn accept(&self) -> Result<Connection, RpcError> {
        todo!("accept() on the Unix or TCP listener; errors are Io")
    }

    /// Closes the listening socket and, for a Unix socket, removes its file (errors are
    /// [`RpcError::Remove`], a file already gone too): the file outlives the socket otherwise.
    /// Nothing else removes it: a `Listener` dropped without `remove` leaves its file, as
    /// main.rs's `bench` needs (it forks the server after binding, and the parent drops its
    /// copy).
    pub fn remove(self) -> Result<(), RpcError> {
        todo!("drop the listener; for Unix, std::fs::remove_file(path); errors are Remove")
    }
}

/// Reads one frame and returns its body. `Ok(None)` when the peer closed the connection
/// between frames (no byte of a new one). Reads loop until the 4-byte length and then the whole
/// body are in, whatever pieces the stream delivers them in. A length of 0 is
/// [`RpcError::EmptyFrame`]; a length above `max` is [`RpcError::TooLong`], found *before*
/// anything is allocated; end of stream inside the frame is [`RpcError::Truncated`]. A length
/// within `max` is only announced: the body's buffer grows with the bytes that come, at most 64
/// KiB reserved before they do, so that a client that announces `MAX_BODY` and stalls costs
/// the server what it sent, not 16 MiB of its address space.
pub fn read_frame(stream: &mut impl Read, max: usize) -> Result<Option<Vec<u8>>, RpcError> {
    let _ = (&stream, &max);
    todo!(
        "read the 4-byte big-endian length in a loop (EOF at 0 bytes is Ok(None)), check it, then read exactly that many bytes"
    )
}

/// Writes one frame: the 4-byte big-endian length of `head` and `payload` together, then
/// both (so an 8 MiB payload is not copied just to put a byte in front of it). Every byte is
/// written (`write_all`). A payload of more than 64 KiB is never copied behind its prefix into
/// a new buffer, whatever its size (write the prefix and then the payload, or both with one
/// `write_vectored`); a smaller one may be, for one write() instead of two.
pub fn write_frame(stream: &mut impl Write, head: u8, payload: &[u8]) -> Result<(), RpcError> {
    let _ = (&stream, &head, &payload);
    todo!("write_all the length (payload + 1, u32 big-endian), the head byte and the payload")
}

/// Does the operation of one request body (op byte and payload): returns the response's status
/// and payload. An unknown op is [`STATUS_UNKNOWN_OP`] with an empty payload.
pub fn respond(op: u8, payload: &[u8]) -> (u8, Vec<u8>) {
    let _ = (&op, &payload);
    todo!("echo, reverse or hash the payload by op; unknown ops are STATUS_UNKNOWN_OP")
}

/// Serves one client: reads request frames (at most [`MAX_BODY`]) and writes one response
/// frame for each, in order, until the client closes the connection between frames. Returns how
/// many requests it answered; any error ends the client's connection.
pub fn serve_client(conn: &mut Connection) -> Result<u64, RpcError> {
    let _ = (&conn,);
    todo!("loop read_frame, respond, write_frame until read_frame says the client is done")
}

/// What a server did, reported when it stops. Each count is updated in place, under one lock
/// (or atomically): a copy taken, changed and written back later loses the updates made in
/// between.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ServerStats {
    /// Clients accepted before the stop began (the server's own wake-up connection is none),
    /// exactly, whatever ended the accepting loop.
    pub clients: u64,
    /// Requests answered.
    pub requests: u64,
    /// Clients dropped because of an error, whatever the error (each one logged with
    /// [`log_dropped`]).
    pub dropped: u64,
}

/// Runs the server until `SIGTERM` (or `SIGINT`): accepts clients and serves each with
/// [`serve_client`], many at once, so that a slow or stalled client holds up nobody else. Each
/// client that ends with an error is logged with [`log_dropped`] and the server goes on.
///
/// On the signal it stops accepting, shuts down the connections still open, waits for their
/// handlers, and removes the listener ([`Listener::remove`]) before it returns. Handle the signal
/// without a handler function: block it in every thread (`SigSet::thread_block` before the first
/// thread starts: threads inherit the mask) and wait for it with `SigSet::wait`; keep it blocked
/// until `run_server` returns, so that a second signal during the stop does not end the server.
///
/// Block `SIGTERM` and `SIGINT` only: every other signal keeps its default effect. Every client
/// gets a handler of its own, however many are connected (no pool of a fixed size). A failed
/// `accept()` costs that connection only, whatever its error, and so does a failed second
/// handle on it (`try_clone`); the stopping flag is looked at whatever `accept()` returned. Each
/// connection is registered for the stop (the handle the stop shuts) by the accepting thread
/// before its handler starts, so that the stop shuts it however far its handler has got. A
/// dropped client's connection is closed at once (no lingering close). A server runs long:
/// what a client costs goes with it, so a handler that has ended is joined as the server goes
/// (at the next accept at the latest), not kept to the stop. Each call is a server of its own:
/// its state lives in the call (not in `static`s), so that a second call, once the first has
/// returned, serves until its own signal and counts from zero.
pub fn run_server(listener: Listener) -> Result<ServerStats, RpcError> {
    let _ = (&listener,);
    todo!(
        "block SIGTERM/SIGINT, accept on a thread and serve each client on its own, sigwait, then stop and clean up"
    )
}

/// A response: its status and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// [`STATUS_OK`] or [`STATUS_UNKNOWN_OP`].
    pub status: u8,
    /// The result.
    pub payload: Vec<u8>,
}

/// A client's connection to the server.
#[derive(Debug)]
pub struct Client {
    /// The connection, read through a buffer so that a response's length and a small body come
    /// in one `read()`; write to it with `conn.get_mut()`.
    pub conn: BufReader<Connection>,
}

impl Client {
    /// Connects to the server at `endpoint`.
    pub fn connect(endpoint: &Endpoint) -> Result<Client, RpcError> {
        Connection::connect(endpoint).map(|conn| Client {
            conn: BufReader::new(conn),
        })
    }

    /// Sends one request and reads its response, waiting for it blocked in `read()` (no
    /// timeout: the response wakes the client). The request is written blocked too, with no
    /// timeout, however long the server takes to read it. A server that closes the connection
    /// instead of answering is [`RpcError::Closed`].
    pub fn call(&mut self, op: u8, payload: &[u8]) -> Result<Response, RpcError> {
        let _ = (&op, &payload);
        todo!("write_frame the request, read_frame the response (None is Closed)")
    }
}

/// Fast checks of the rules above, without the grader: `cargo test -p socket-reqrep`.
#[cfg(test)]
mod tests {
    use super::*;
    use ipc_labs_driver::testing::{Cleanup, unique_name, watchdog};
    use rstest::rstest;
    use std::io::Cursor;
    use std::time::Duration;

    /// A stream that hands out at most one byte per `read()`, after an `EINTR` each time: what a
    /// socket may do, and what a reader must put up with.
    struct Trickle {
        bytes: Cursor<Vec<u8>>,
        interrupt_next: bool,
    }

    impl Trickle {
        fn new(bytes: Vec<u8>) -> Trickle {
            Trickle {
                bytes: Cursor::new(bytes),
                interrupt_next: true,
            }
        }
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.interrupt_next = !self.interrupt_next;
            if !self.interrupt_next {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let one = buf.len().min(1);
            self.bytes.read(&mut buf[..one])
        }
    }

    /// A frame as the protocol lays it out: the body's length (u32 big-endian), then the body.
    fn frame(body: &[u8]) -> Vec<u8> {
        let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(body);
        bytes
    }

    /// A socket path under the temporary directory, removed at the end.
    fn socket_path() -> (PathBuf, Cleanup<impl FnMut()>) {
        let path = std::env::temp_dir().join(&unique_name("sock")[1..]);
        let removed = path.clone();
        let cleanup = Cleanup::new(move || {
            let _ = std::fs::remove_file(&removed);
        });
        (path, cleanup)
    }

    #[rstest]
    #[case::empty_payload(OP_ECHO, b"".as_slice())]
    #[case::some_payload(OP_HASH, b"abc".as_slice())]
    fn a_frame_is_its_big_endian_length_then_head_and_payload(
        #[case] head: u8,
        #[case] payload: &[u8],
    ) {
        let mut written = Vec::new();
        write_frame(&mut written, head, payload).unwrap();
        let body = [&[head], payload].concat();
        assert_eq!(written, frame(&body));
    }

    #[rstest]
    #[case::one_byte(b"E".as_slice())]
    #[case::longer(b"Rsome payload".as_slice())]
    fn a_frame_is_read_whole_from_one_byte_reads(#[case] body: &[u8]) {
        let mut stream = Trickle::new(frame(body));
        assert_eq!(read_frame(&mut stream, MAX_BODY).unwrap().unwrap(), body);
        assert_eq!(read_frame(&mut stream, MAX_BODY).unwrap(), None);
    }

    #[test]
    fn frames_keep_their_boundaries_in_one_stream() {
        let mut stream = Cursor::new([frame(b"Efirst"), frame(b"Hsecond")].concat());
        assert_eq!(
            read_frame(&mut stream, MAX_BODY).unwrap().unwrap(),
            b"Efirst"
        );
        assert_eq!(
            read_frame(&mut stream, MAX_BODY).unwrap().unwrap(),
            b"Hsecond"
        );
        assert_eq!(read_frame(&mut stream, MAX_BODY).unwrap(), None);
    }

    #[rstest]
    #[case::at_the_limit(16, 16, true)]
    #[case::one_past_the_limit(17, 16, false)]
    #[case::largest_body(MAX_BODY, MAX_BODY, true)]
    #[case::one_past_the_largest_body(MAX_BODY + 1, MAX_BODY, false)]
    #[case::largest_prefix(u32::MAX as usize, MAX_BODY, false)]
    fn a_length_above_the_maximum_is_too_long_before_any_body(
        #[case] len: usize,
        #[case] max: usize,
        #[case] accepted: bool,
    ) {
        // Only the prefix is sent: a too-long frame must be refused on its length alone, and
        // an accepted one then misses its whole body.
        let prefix = (len as u32).to_be_bytes();
        match read_frame(&mut Cursor::new(prefix), max) {
            Err(RpcError::Truncated { got: 0, want }) if accepted => assert_eq!(want, len),
            Err(RpcError::TooLong {
                len: read,
                max: most,
            }) if !accepted => {
                assert_eq!((read, most), (len as u64, max));
            }
            other => panic!("length {len}, max {max}: got {other:?}"),
        }
    }

    #[test]
    fn a_length_of_zero_is_an_empty_frame() {
        let error = read_frame(&mut Cursor::new(frame(b"")), MAX_BODY).unwrap_err();
        assert_eq!(error.kind(), "empty-frame", "{error}");
    }

    #[rstest]
    #[case::inside_the_length(vec![0, 0], 2, 4)]
    #[case::one_byte_short_of_the_length(vec![0, 0, 0], 3, 4)]
    #[case::inside_the_body(frame(b"Ehello")[..7].to_vec(), 3, 6)]
    #[case::one_byte_short_of_the_body(frame(b"Ehello")[..9].to_vec(), 5, 6)]
    fn an_end_of_stream_inside_a_frame_is_truncated(
        #[case] bytes: Vec<u8>,
        #[case] got: usize,
        #[case] want: usize,
    ) {
        match read_frame(&mut Cursor::new(bytes), MAX_BODY) {
            Err(RpcError::Truncated { got: g, want: w }) => assert_eq!((g, w), (got, want)),
            other => panic!("expected Truncated {{ got: {got}, want: {want} }}, got {other:?}"),
        }
    }

    #[rstest]
    #[case::echo(OP_ECHO, b"abc".as_slice(), STATUS_OK, b"abc".to_vec())]
    #[case::reverse(OP_REVERSE, b"abc".as_slice(), STATUS_OK, b"cba".to_vec())]
    #[case::reverse_nothing(OP_REVERSE, b"".as_slice(), STATUS_OK, Vec::new())]
    #[case::hash(OP_HASH, b"abc".as_slice(), STATUS_OK, fnv1a(b"abc").to_be_bytes().to_vec())]
    #[case::unknown_op(b'?', b"abc".as_slice(), STATUS_UNKNOWN_OP, Vec::new())]
    fn each_op_has_its_response(
        #[case] op: u8,
        #[case] payload: &[u8],
        #[case] status: u8,
        #[case] expected: Vec<u8>,
    ) {
        assert_eq!(respond(op, payload), (status, expected));
    }

    #[test]
    fn a_client_gets_one_response_per_request_in_order() {
        let _watchdog = watchdog("a client and serve_client", Duration::from_secs(10));
        let (client_end, server_end) = UnixStream::pair().unwrap();
        let server = std::thread::spawn(move || serve_client(&mut Connection::Unix(server_end)));
        let mut client = Client {
            conn: BufReader::new(Connection::Unix(client_end)),
        };
        let reversed = client.call(OP_REVERSE, b"stream").unwrap();
        let unknown = client.call(b'x', b"ignored").unwrap();
        assert_eq!(
            (reversed.status, reversed.payload),
            (STATUS_OK, b"maerts".to_vec())
        );
        assert_eq!(
            (unknown.status, unknown.payload),
            (STATUS_UNKNOWN_OP, Vec::new())
        );
        drop(client);
        assert_eq!(server.join().unwrap().unwrap(), 2);
    }

    #[test]
    fn a_server_that_closes_instead_of_answering_is_closed() {
        let (client_end, server_end) = UnixStream::pair().unwrap();
        drop(server_end);
        let mut client = Client {
            conn: BufReader::new(Connection::Unix(client_end)),
        };
        // Writing to a closed peer may already fail (EPIPE): either way it is not an answer.
        match client.call(OP_ECHO, b"hello") {
            Err(error) => assert!(matches!(error.kind(), "closed" | "io"), "{error}"),
            Ok(response) => panic!("an answer from nobody: {response:?}"),
        }
    }

    #[test]
    fn a_unix_socket_file_is_bound_once_and_removed_with_its_listener() {
        let (path, _cleanup) = socket_path();
        let endpoint = Endpoint::Unix(path.clone());
        let listener = Listener::bind(&endpoint).unwrap();
        let again = Listener::bind(&endpoint).unwrap_err();
        assert_eq!(again.kind(), "bind", "{again}");
        listener.remove().unwrap();
        assert!(!path.exists(), "the socket file outlived its listener");
    }

    #[test]
    fn connecting_where_nobody_listens_is_connect() {
        let (path, _cleanup) = socket_path();
        let error = Connection::connect(&Endpoint::Unix(path)).unwrap_err();
        assert_eq!(error.kind(), "connect", "{error}");
    }

    #[test]
    fn a_tcp_listener_on_port_0_is_reached_at_the_port_it_got() {
        let _watchdog = watchdog("accept", Duration::from_secs(10));
        let listener = Listener::bind(&Endpoint::Tcp("127.0.0.1:0".parse().unwrap())).unwrap();
        let endpoint = listener.endpoint().unwrap();
        let client = std::thread::spawn(move || Connection::connect(&endpoint).map(drop));
        listener.accept().unwrap();
        client.join().unwrap().unwrap();
        listener.remove().unwrap();
    }
}
