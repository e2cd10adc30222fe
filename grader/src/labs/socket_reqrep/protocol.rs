//! The frame format, the answers the protocol defines, and the grader's own end of a connection.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, recv};
use rand::RngExt;

use super::{MAX_BODY, OP_ECHO, OP_HASH, OP_REVERSE, STATUS_OK, STATUS_UNKNOWN_OP};
use crate::engine::{Fail, Run};

/// The 64-bit FNV-1a hash, for `H`.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The answer the protocol defines for a request.
pub fn expected(op: u8, payload: &[u8]) -> (u8, Vec<u8>) {
    match op {
        OP_ECHO => (STATUS_OK, payload.to_vec()),
        OP_REVERSE => (STATUS_OK, payload.iter().rev().copied().collect()),
        OP_HASH => (STATUS_OK, fnv1a(payload).to_be_bytes().to_vec()),
        _ => (STATUS_UNKNOWN_OP, Vec::new()),
    }
}

/// A frame: u32 big-endian length of head and payload, the head (a request's op or a
/// response's status), the payload.
pub fn frame(head: u8, payload: &[u8]) -> Vec<u8> {
    let mut bytes = ((payload.len() + 1) as u32).to_be_bytes().to_vec();
    bytes.push(head);
    bytes.extend_from_slice(payload);
    bytes
}

/// An op byte for messages: `'e' (0x65)`.
pub fn op_name(op: u8) -> String {
    if op.is_ascii_graphic() {
        format!("'{}' (0x{op:02x})", op as char)
    } else {
        format!("0x{op:02x}")
    }
}

/// The grader's own connection to a server, or a client's connection to the grader's server.
pub enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
}

pub trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

impl Conn {
    /// Bytes the grader sent that the server has not read yet: for a Unix socket what waits in
    /// the server's receive queue (`SIOCOUTQ` on the grader's end), for TCP the receive queue of
    /// the server's socket (`/proc/net/tcp`). `None` where the machine does not say.
    pub fn unread_by_peer(&self) -> Option<usize> {
        match self {
            Conn::Unix(stream) => {
                let mut queued: libc::c_int = 0;
                // SAFETY: SIOCOUTQ writes one int into `queued`.
                let done = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
                (done == 0).then_some(queued as usize)
            }
            Conn::Tcp(stream) => {
                let hex = |addr: std::net::SocketAddr| match addr {
                    std::net::SocketAddr::V4(v4) => Some(format!(
                        "{:08X}:{:04X}",
                        u32::from_ne_bytes(v4.ip().octets()),
                        v4.port()
                    )),
                    std::net::SocketAddr::V6(_) => None,
                };
                let server = hex(stream.peer_addr().ok()?)?;
                let grader = hex(stream.local_addr().ok()?)?;
                let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
                table.lines().skip(1).find_map(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    if fields.get(1) != Some(&server.as_str())
                        || fields.get(2) != Some(&grader.as_str())
                    {
                        return None;
                    }
                    let rx = fields.get(4)?.split(':').nth(1)?;
                    usize::from_str_radix(rx, 16).ok()
                })
            }
        }
    }

    /// Waits (up to a second) until the server has read everything the grader sent: the next
    /// byte then reaches a server that waits in its read, which returns it alone.
    pub fn wait_until_read(&self) {
        let until = Instant::now() + Duration::from_secs(1);
        while self.unread_by_peer().is_some_and(|n| n > 0) && Instant::now() < until {
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    pub fn stream(&mut self) -> &mut dyn ReadWrite {
        match self {
            Conn::Unix(s) => s,
            Conn::Tcp(s) => s,
        }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Conn::Unix(s) => s.as_fd(),
            Conn::Tcp(s) => s.as_fd(),
        }
    }

    pub fn try_clone(&self) -> std::io::Result<Conn> {
        Ok(match self {
            Conn::Unix(s) => Conn::Unix(s.try_clone()?),
            Conn::Tcp(s) => Conn::Tcp(s.try_clone()?),
        })
    }

    /// Whether `len` bytes are waiting to be read within `limit` (peeked, not read).
    pub fn queued_within(&self, len: usize, limit: Duration) -> bool {
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

    /// What the connection shows without waiting: `Some(0)` end of stream, `Some(n)` bytes
    /// waiting, `None` nothing yet (or an error).
    pub fn peek_now(&self) -> Option<usize> {
        let mut byte = [0u8; 1];
        let flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
        recv(self.fd().as_raw_fd(), &mut byte, flags).ok()
    }

    /// Whether the peer has closed the connection: end of stream, or a reset (a peer that
    /// closes with data of ours unread resets the connection).
    pub fn peer_closed(&self) -> bool {
        let mut byte = [0u8; 1];
        let flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
        matches!(
            recv(self.fd().as_raw_fd(), &mut byte, flags),
            Ok(0) | Err(Errno::ECONNRESET | Errno::EPIPE)
        )
    }

    /// Writes all of `bytes`, after `answered` requests were answered on this connection: a
    /// peer that closed or reset the connection is the student's program's doing, not the
    /// grader's.
    pub fn send(&mut self, bytes: &[u8], answered: usize) -> Result<(), Fail> {
        self.stream().write_all(bytes).map_err(|e| {
            closed_after(self, answered, None).unwrap_or_else(|| {
                Fail::failed(format!(
                    "the peer closed or reset the connection while the grader was writing to it \
                     ({e})"
                ))
            })
        })
    }

    pub fn shutdown(&self, how: Shutdown) {
        let _ = match self {
            Conn::Unix(s) => s.shutdown(how),
            Conn::Tcp(s) => s.shutdown(how),
        };
    }

    pub fn timeouts(&self, limit: Duration) {
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

/// Reads one frame: (head, payload), or `None` at end of stream before the frame starts.
pub fn read_frame(conn: &mut Conn) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    match read_frame_counted(conn).map_err(said_plainly)? {
        Ok(frame) => Ok(frame),
        Err(short) => Err(std::io::Error::new(short.error, short.to_string())),
    }
}

/// A read's error in the words of what happened: a read timeout is not the server's "Resource
/// temporarily unavailable".
fn said_plainly(error: std::io::Error) -> std::io::Error {
    let plainly = match error.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => "nothing came within the grader's wait",
        ErrorKind::UnexpectedEof => "the connection ended",
        _ => return error,
    };
    std::io::Error::new(error.kind(), plainly)
}

/// A frame that did not arrive whole: how much of it did.
pub struct ShortFrame {
    /// The length its prefix announced.
    pub announced: usize,
    /// Body bytes received.
    pub got: usize,
    pub error: ErrorKind,
}

impl std::fmt::Display for ShortFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let then = match self.error {
            ErrorKind::UnexpectedEof => "then the connection ended".to_string(),
            ErrorKind::WouldBlock | ErrorKind::TimedOut => "then nothing more came".to_string(),
            other => format!("then {other}"),
        };
        write!(
            f,
            "{} of the {} bytes its length prefix announced, {then}",
            self.got, self.announced
        )
    }
}

/// A frame's head and payload, or `None` at end of stream before it; or how much of it came.
pub type Counted = Result<Option<(u8, Vec<u8>)>, ShortFrame>;

/// Reads one frame like [`read_frame`], telling a body that stopped short (how much came) from
/// other errors.
pub fn read_frame_counted(conn: &mut Conn) -> std::io::Result<Counted> {
    read_frame_timed(conn, &mut None)
}

/// Reads one frame like [`read_frame_counted`]; `first_byte` is set to when its first byte
/// came.
pub fn read_frame_timed(
    conn: &mut Conn,
    first_byte: &mut Option<Instant>,
) -> std::io::Result<Counted> {
    let stream = conn.stream();
    let mut header = [0u8; 4];
    let mut got = 0;
    while got < header.len() {
        match stream.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(Ok(None)),
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                first_byte.get_or_insert_with(Instant::now);
                got += n;
            }
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
    let mut got = 0;
    while got < len {
        match stream.read(&mut body[got..]) {
            Ok(0) => {
                return Ok(Err(ShortFrame {
                    announced: len,
                    got,
                    error: ErrorKind::UnexpectedEof,
                }));
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                return Ok(Err(ShortFrame {
                    announced: len,
                    got,
                    error: e.kind(),
                }));
            }
        }
    }
    let payload = body.split_off(1);
    Ok(Ok(Some((body[0], payload))))
}

/// Reads one response frame: (status, payload).
pub fn read_response(conn: &mut Conn) -> std::io::Result<(u8, Vec<u8>)> {
    read_frame(conn)?.ok_or_else(|| said_plainly(ErrorKind::UnexpectedEof.into()))
}

/// Checks one response against the request, naming the request.
pub fn verify(got: (u8, Vec<u8>), op: u8, payload: &[u8], what: &str) -> Result<(), Fail> {
    let (status, answer) = expected(op, payload);
    if got.0 != status {
        return Err(Fail::failed(format!(
            "{what}: status {} for op {} with {} payload bytes, expected {status} (0 for E, R \
             and H, 1 for an unknown op)",
            got.0,
            op_name(op),
            payload.len()
        )));
    }
    if got.1 == answer {
        return Ok(());
    }
    let cause = if op == OP_HASH && got.1 == fnv1a(payload).to_le_bytes() {
        "it is fnv1a of the payload written little-endian: write the hash big-endian \
         (to_be_bytes)"
    } else if op == OP_REVERSE && got.1 == payload {
        "it is the payload as it came: R answers it reversed"
    } else if op == OP_REVERSE
        && std::str::from_utf8(payload)
            .is_ok_and(|text| got.1 == text.chars().rev().collect::<String>().into_bytes())
    {
        "it is the payload reversed character by character, as UTF-8 text: a payload is bytes, \
         whatever they spell; R reverses the bytes, one by one, so a character of several \
         bytes comes back with its bytes in reverse order"
    } else if let Some(shift) = shifted(&got.1, &answer) {
        let by = shift.unsigned_abs();
        let (extra, ends) = if shift > 0 {
            let extra = &got.1[got.1.len() - by..];
            (
                extra,
                format!(
                    "its first {by} byte(s) missing, and {by} other byte(s) at its end ({})",
                    hex(extra)
                ),
            )
        } else {
            let extra = &got.1[..by];
            (
                extra,
                format!(
                    "{by} other byte(s) in front ({}), and its last {by} byte(s) missing",
                    hex(extra)
                ),
            )
        };
        let op_byte = if extra == [op] {
            format!(", the op byte {} among them", op_name(op))
        } else {
            String::new()
        };
        return Err(Fail::failed(format!(
            "{what}: the response to op {} with {} payload bytes is the expected answer shifted \
             by {by} byte(s): {ends}{op_byte}: a slice off by one (or more), the payload taken \
             from the wrong offset of the frame's body",
            op_name(op),
            payload.len(),
        )));
    } else if got.1.len() == answer.len() {
        match op {
            OP_ECHO => "the length is right, the bytes are not: E answers the payload as it is",
            OP_REVERSE => "the length is right, the bytes are not: R answers the payload reversed",
            _ => {
                "the length is right, the bytes are not: H answers fnv1a of the payload, 8 bytes \
                  big-endian"
            }
        }
    } else {
        "a request is exactly the length its prefix says; read the prefix, then exactly that \
         many bytes (looping), and keep what follows for the next"
    };
    Err(Fail::failed(format!(
        "{what}: the response to op {} with {} payload bytes has {} bytes that differ from the {} \
         expected: {cause}",
        op_name(op),
        payload.len(),
        got.1.len(),
        answer.len()
    )))
}

/// How far `got`, of the length of `answer` (and not equal to it), is `answer` shifted, for a
/// shift of up to 8 bytes and an answer of at least 16: positive when `got` begins with what
/// comes `shift` bytes into `answer`, negative when `answer` begins `-shift` bytes into `got`.
fn shifted(got: &[u8], answer: &[u8]) -> Option<isize> {
    let len = answer.len();
    if got.len() != len || len < 16 {
        return None;
    }
    (1..=8).find_map(|by: usize| {
        if got[..len - by] == answer[by..] {
            Some(by as isize)
        } else if got[by..] == answer[..len - by] {
            Some(-(by as isize))
        } else {
            None
        }
    })
}

/// Bytes in hex, for messages: `00 30 00 01`.
pub fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The failure of a server that closed the connection, between frames, after answering
/// `answered` requests on it, the next one with op `next` when the grader knows it: it ended
/// the connection at an unknown op, or it serves one request (or a few) per connection.
pub fn closed_after(conn: &Conn, answered: usize, next: Option<u8>) -> Option<Fail> {
    if answered == 0 || !conn.peer_closed() {
        return None;
    }
    let many = "serve_client answers frames until the client closes the connection (read_frame's \
                Ok(None)), however many come";
    Some(Fail::failed(match next {
        Some(op) if !matches!(op, OP_ECHO | OP_REVERSE | OP_HASH) => format!(
            "the server closed the connection instead of answering request {answered}, which has \
             the unknown op {}: every request gets an answer, an unknown op STATUS_UNKNOWN_OP with \
             an empty payload, and the connection goes on{}",
            op_name(op),
            if answered == 1 {
                format!(" (or else: {many})")
            } else {
                String::new()
            }
        ),
        _ => format!(
            "the server closed the connection after answering {answered} request(s) on it: {many}"
        ),
    }))
}

/// Characters of two, three and four bytes in UTF-8, for payloads that are valid text.
const MULTI_BYTE: [char; 6] = ['é', 'ß', '日', '€', '🦀', '𝄞'];

/// Random requests: mostly small, some up to 64 KiB, one of them with an unknown op, and a
/// reverse request whose payload is valid UTF-8 text with multi-byte characters (a payload is
/// bytes: reversed byte by byte, such a character comes back with its bytes in reverse order).
pub fn random_requests_for(run: &mut Run, n: usize, tag: &str) -> Vec<(u8, Vec<u8>)> {
    (0..n)
        .map(|i| {
            if i == 1 && n > 2 {
                let text: String = (0..run.rng().random_range(4..40))
                    .map(|_| MULTI_BYTE[run.rng().random_range(0..MULTI_BYTE.len())])
                    .collect();
                return (OP_REVERSE, format!("{tag}-{i}-{text}").into_bytes());
            }
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

/// Makes `calls` echo calls of `size` bytes on `conn`, one at a time; returns how long each took.
pub fn timed_calls(conn: &mut Conn, calls: usize, size: usize) -> Result<Vec<Duration>, Fail> {
    let mut times = Vec::with_capacity(calls);
    for i in 0..calls {
        let mut payload = format!("call {i} ").into_bytes();
        payload.resize(size.max(payload.len()), b'.');
        let started = Instant::now();
        conn.send(&frame(OP_ECHO, &payload), i)?;
        let got = read_response(conn).map_err(|e| {
            closed_after(conn, i, Some(OP_ECHO)).unwrap_or_else(|| {
                Fail::failed(format!(
                    "no response to an echo request of {size} bytes ({e})"
                ))
            })
        })?;
        times.push(started.elapsed());
        verify(
            got,
            OP_ECHO,
            &payload,
            &format!("an echo request of {size} bytes"),
        )?;
    }
    Ok(times)
}

/// The median of `times`.
pub fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times.get(times.len() / 2).copied().unwrap_or_default()
}
