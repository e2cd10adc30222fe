//! The grader's own server, for the student's client to talk to.

use std::io::ErrorKind;
use std::net::{Shutdown, TcpListener};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::Transport;
use super::observe;
use super::protocol::{Conn, ShortFrame, frame, read_frame_timed};
use crate::engine::waiting::{self, WaitRules};
use crate::engine::{Fail, Run};

/// A listening socket of the grader's own, for the student's client.
pub enum GraderListener {
    /// Its file is removed when the listener goes.
    Unix(UnixListener, PathBuf),
    Tcp(TcpListener),
}

impl GraderListener {
    /// Listens, and returns the client's arguments that lead to it.
    pub fn bind(run: &Run, transport: Transport) -> Result<(GraderListener, Vec<String>), Fail> {
        Ok(match transport {
            Transport::Unix => {
                let path = run.path("grader.sock");
                let listener = UnixListener::bind(&path)?;
                give_to_program_user(run, &path)?;
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

    /// The connection of a client that said `ready`, which must come within 2 s.
    pub fn accept_client(&self) -> Result<Conn, Fail> {
        self.accept_within(Duration::from_secs(2))?.ok_or_else(|| {
            Fail::failed(
                "the client said `ready` but never connected to the grader's server: \
                 Client::connect must connect to the endpoint it is given",
            )
        })
    }

    /// The first connection that comes within `limit`, with 5-second read and write timeouts.
    pub fn accept_within(&self, limit: Duration) -> Result<Option<Conn>, Fail> {
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
                    std::thread::sleep(Duration::from_millis(2));
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

/// Gives a socket file the grader made to the user the programs run as: connect() needs write
/// permission on it.
pub fn give_to_program_user(run: &Run, path: &std::path::Path) -> Result<(), Fail> {
    if let Some((uid, gid)) = run.program_user() {
        nix::unistd::chown(path, Some(uid.into()), Some(gid.into()))
            .map_err(|e| Fail::Grader(format!("chown {}: {e}", path.display())))?;
    }
    Ok(())
}

/// What the grader's server saw of a client.
pub struct Answered {
    /// The requests that came whole, in order.
    pub received: Vec<(u8, Vec<u8>)>,
    /// For each, how long it took from its first byte to its last.
    pub spread: Vec<Duration>,
    /// A request that stopped short: its index and how much of it came.
    pub short: Option<(usize, ShortFrame)>,
    /// How the client waited for a response held back: a failure if it spun or polled.
    pub waited: Option<Fail>,
}

/// Answers each request of `conn`, until the client closes it, with the next of `answers`
/// (random bytes no client can compute). Before request `hold_at`, once the client (`pid`) is
/// blocked writing it, stops and resumes the client. The response to request `judge_wait_at`
/// is held back while the client's threads, with nothing to do but wait for it, are watched.
pub fn answer_all(
    mut conn: Conn,
    answers: Vec<(u8, Vec<u8>)>,
    pid: i32,
    hold_at: Option<usize>,
    judge_wait_at: Option<usize>,
) -> Answered {
    let mut waited = None;
    let mut received = Vec::new();
    let mut spread = Vec::new();
    let mut answers = answers.into_iter();
    loop {
        if hold_at == Some(received.len())
            && observe::writing_a_socket(pid, Instant::now() + Duration::from_secs(3))
        {
            let _ = observe::stop_and_resume(pid);
            // The rest of the frame must follow at once: the client has nothing else to do.
            conn.timeouts(Duration::from_secs(2));
        }
        let mut first_byte = None;
        match read_frame_timed(&mut conn, &mut first_byte) {
            Ok(Ok(Some(request))) => {
                received.push(request);
                spread.push(first_byte.map(|t| t.elapsed()).unwrap_or_default());
            }
            Ok(Err(short)) => {
                // The client waits for an answer that will not come: end its wait.
                conn.shutdown(Shutdown::Both);
                let index = received.len();
                return Answered {
                    received,
                    spread,
                    short: Some((index, short)),
                    waited,
                };
            }
            _ => break,
        }
        conn.timeouts(Duration::from_secs(5));
        if judge_wait_at == Some(received.len() - 1) {
            waited = client_waits_blocked(pid).err();
        }
        let Some((status, answer)) = answers.next() else {
            break;
        };
        if conn.stream().write_all(&frame(status, &answer)).is_err() {
            break;
        }
    }
    Answered {
        received,
        spread,
        short: None,
        waited,
    }
}

/// The client, its request sent and its response held back, has nothing to do: every thread of
/// it must be blocked, with no timeout (a read timeout retried is a poll).
fn client_waits_blocked(pid: i32) -> Result<(), Fail> {
    waiting::expect_blocked(
        &[pid],
        &|_| "the client".into(),
        WaitRules::untimed(),
        "while the server has not answered, Client::call waits for the response blocked in \
         read() on the connection, with no timeout (no set_read_timeout, no non-blocking \
         socket): the response wakes it",
    )?;
    if let Some(timeouts) = observe::sockets_with_timeouts(pid).into_iter().next() {
        let (fd, what) = (timeouts.fd, timeouts.describe());
        let effect = if timeouts.receive.is_zero() {
            // Only a send timeout: the wait for the response is not its concern, the request is.
            "a write of a request that the server reads slowly, or not yet (the socket's buffer \
             full: a large request), fails with EAGAIN when the timeout ends, and the call with \
             it (kind=io), where it must wait. Client::call sends its request blocked in write() \
             with no timeout, however long the server takes to read it"
        } else {
            "the read wakes when the timeout ends, and a read timeout retried is a poll, however \
             long its period (a response held back longer fails the call). Client::call waits \
             for the response blocked in read() with no timeout: the response wakes it"
        };
        return Err(Fail::failed(format!(
            "while the server has not answered, the client is blocked in read(), but its socket \
             {fd} (read on a copy of the descriptor) has {what}: {effect}"
        )));
    }
    Ok(())
}
