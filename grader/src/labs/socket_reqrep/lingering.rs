//! A dropped client loses its connection at once: once it sees the end of the stream, the
//! server has closed its connection (or shut it both ways). A lingering close (shut for
//! writing, then read on and discard until the client hangs up or a time runs out) keeps a
//! descriptor and a thread of the server for each bad client, however short its bound.

use std::time::{Duration, Instant};

use super::programs::Server;
use super::protocol::Conn;
use super::{MAX_BODY, Transport};
use crate::engine::Fail;

/// What a write of the grader's after the end of the stream showed of the server's end.
enum AfterEnd {
    /// Refused (`EPIPE`): the server's end is closed, or shut for reading.
    Closed,
    /// Taken, then read by the server, and a second write taken too: its end still reads.
    StillRead,
    /// Taken and left unread: not a lingering close (a descriptor kept, which the other
    /// checks of the connection's close judge).
    Unread,
}

/// Bytes written after the end of the stream, then whether the server read them and still
/// takes more.
fn write_after_end(conn: &mut Conn) -> AfterEnd {
    let chunk = [0x6cu8; 1000];
    if conn.stream().write_all(&chunk).is_err() {
        return AfterEnd::Closed;
    }
    let until = Instant::now() + Duration::from_secs(1);
    while conn.unread_by_peer().is_some_and(|n| n > 0) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
    }
    if conn.unread_by_peer() != Some(0) {
        return AfterEnd::Unread;
    }
    // Read by the server, or freed by its close: a second write tells which.
    match conn.stream().write_all(&chunk) {
        Ok(()) => AfterEnd::StillRead,
        Err(_) => AfterEnd::Closed,
    }
}

/// After an empty frame, and after a length prefix of `MAX_BODY + 1`, the client waits for the
/// end of the stream, then writes: a server that closed the connection refuses the write
/// (`EPIPE`); one that lingers reads the bytes and takes more. Over a Unix socket, where the
/// grader sees what the server has read of its bytes (`SIOCOUTQ`).
pub fn no_lingering_close(server: &Server) -> Result<(), Fail> {
    if server.transport != Transport::Unix {
        return Ok(());
    }
    let too_long = ((MAX_BODY + 1) as u32).to_be_bytes();
    let cases: [(&str, &[u8]); 2] = [
        ("an empty frame", &[0, 0, 0, 0]),
        ("a length prefix of MAX_BODY + 1", &too_long),
    ];
    for (what, bytes) in cases {
        let mut conn = server.connect()?;
        conn.send(bytes, 0)?;
        let until = Instant::now() + Duration::from_secs(3);
        while !conn.peer_closed() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
        if !conn.peer_closed() {
            // Not closed at all: judged by the checks of the connection's close.
            continue;
        }
        if let AfterEnd::StillRead = write_after_end(&mut conn) {
            return Err(Fail::failed(format!(
                "after {what}, the grader's client saw the end of the stream, then wrote 1000 \
                 bytes: the server read them and took 1000 more, so it had shut the connection \
                 for writing only and kept reading it (a lingering close, however short its \
                 time limit): a dropped client loses its connection at once; after log_dropped, \
                 close it (drop every handle on it, or shut it both ways), and read nothing more"
            )));
        }
    }
    Ok(())
}
