//! A client that half-closes its connection once its requests are written: the server's end of
//! reading must not cost it the responses it has written.

use std::io::ErrorKind;
use std::net::Shutdown;
use std::time::{Duration, Instant};

use super::observe;
use super::programs::Server;
use super::protocol::frame;
use super::{OP_ECHO, STATUS_OK, Transport};
use crate::engine::{Fail, Run};

/// The grader writes a 4 MiB echo request and shuts down its writing side (as `socat` and
/// `nc -N` do once they have nothing more to send), then reads the response a piece at a time,
/// each piece only once the server's handler is blocked writing again or has closed the
/// connection: the handler then reads the end of the stream, and closes, with the end of the
/// response still in its socket's buffer. Every byte of it must come, then the end of the
/// stream (an abortive close, `SO_LINGER` on with a time of 0, throws that end away and resets
/// the connection).
pub fn half_closed_client(run: &mut Run, server: &Server) -> Result<(), Fail> {
    let pid = server.pid();
    let port = match server.transport {
        Transport::Tcp => server.port,
        Transport::Unix => 0,
    };
    let before = observe::connections(pid, port);
    let mut conn = server.connect()?;
    let payload = run.random_bytes(4 << 20);
    let expected = frame(STATUS_OK, &payload);
    let request = frame(OP_ECHO, &payload);
    let mut writer = conn.try_clone()?;
    let sender = std::thread::spawn(move || {
        let _ = writer.stream().write_all(&request);
        writer.shutdown(Shutdown::Write);
    });
    // The server's descriptors of this connection.
    let held = || {
        let ours: Vec<u64> = observe::connections(pid, port)
            .difference(&before)
            .copied()
            .collect();
        observe::sockets(pid)
            .into_iter()
            .filter(|(_, inode)| ours.contains(inode))
            .map(|(fd, _)| fd)
            .collect::<Vec<i32>>()
    };
    let mut aborts = None;
    let mut got = Vec::with_capacity(expected.len());
    let mut piece = vec![0u8; 64 << 10];
    let end = loop {
        let until = Instant::now() + Duration::from_secs(2);
        let closed = loop {
            let fds = held();
            if let (None, Some(&fd)) = (aborts, fds.first()) {
                aborts = observe::aborts_on_close(pid, fd);
            }
            if fds.is_empty() && sender.is_finished() {
                break true;
            }
            if observe::writing_a_socket(pid, Instant::now()) || Instant::now() >= until {
                break false;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        // Once the server has closed, the rest is read at once.
        let read = if closed {
            conn.stream().read_to_end(&mut got).map(|_| 0)
        } else {
            conn.stream().read(&mut piece)
        };
        match read {
            Ok(0) => break "the end of the stream".to_string(),
            Ok(n) => got.extend_from_slice(&piece[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                break "a connection reset (ECONNRESET)".to_string();
            }
            Err(e) => break format!("a failed read ({e})"),
        }
    };
    let _ = sender.join();
    if got == expected && end == "the end of the stream" {
        return Ok(());
    }
    let situation = format!(
        "a client over {} that wrote a 4 MiB echo request and then shut down its writing side \
         (shutdown(SHUT_WR), as socat and nc -N do once they have nothing more to send), and \
         read the response as it came",
        server.transport.describe()
    );
    let rule = "one response per request, whole, until the client closes: a client's end of \
                writing (end of stream between frames) ends the handler's reading, not what it \
                has written; close the connection normally (drop it, or shut it down, then drop \
                it): the kernel sends what is queued, then the end of the stream";
    let how = if got.len() < expected.len() && expected.starts_with(&got) {
        format!(
            "got {} of the response's {} bytes, then {end}",
            got.len(),
            expected.len()
        )
    } else {
        format!(
            "got {} bytes that are not the response's {} (the echo of the request), then {end}",
            got.len(),
            expected.len()
        )
    };
    let mechanism = if aborts == Some(true) {
        ", and the server's socket of that connection had SO_LINGER on with a time of 0 (read \
         from a copy of its descriptor): its close() aborts the connection, throwing away what \
         is still in the socket's send buffer and sending a reset"
    } else {
        ""
    };
    Err(Fail::failed(format!(
        "{situation}, {how}{mechanism}: {rule}"
    )))
}
