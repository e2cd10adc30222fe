//! Error paths of the client no server brings about, forced with the tracer on the client
//! connected to a server of the grader's: its first send() of a large request held (the whole
//! frame, or TCP_NODELAY), its first write() of a request cut short, its read() and write()
//! made to fail.

use std::net::Shutdown;
use std::time::{Duration, Instant};

use super::client_procs::{spawn_client, start_stopped_client};
use super::forced::{READS, SHORTENABLE_WRITES, WRITES, carries_errno, errnos_in};
use super::grader_server::{GraderListener, give_to_program_user};
use super::observe;
use super::programs::{CONTROL_FD, said};
use super::protocol::{frame, op_name, read_frame_counted};
use super::{OP_ECHO, STATUS_OK, Transport};
use crate::engine::tracer::{Action, Call, Tracer};
use crate::engine::{Fail, Run, force};

/// Over TCP, the client's first send() of a 1 MiB request, on its connection to a server of the
/// grader's, is held: it must hold the whole frame, or the connection must have TCP_NODELAY
/// (read on a copy of the client's descriptor); otherwise the rest of the frame may wait for
/// the acknowledgement of its first piece (Nagle's algorithm). Skipped (with a note) when the
/// client writes its socket with another call, or the machine allows no tracing.
pub fn client_frames_leave_whole(run: &mut Run) -> Result<(), Fail> {
    let (listener, at) = GraderListener::bind(run, Transport::Tcp)?;
    let payload = run.random_bytes(1 << 20);
    let mut client = spawn_client(run, &at, vec![(OP_ECHO, payload.clone())], "the client")?;
    let mut conn = listener
        .accept_within(Duration::from_secs(2))?
        .ok_or_else(|| Fail::failed("the client said `ready` but never connected"))?;
    let pid = client.pid();
    let not_probed = "how the client's large requests leave over TCP was not probed";
    let socket = observe::sockets(pid)
        .into_iter()
        .map(|(fd, _)| fd)
        .find(|&fd| fd != CONTROL_FD);
    let tracer = match socket {
        Some(fd) => Tracer::attach_thread(pid, pid, Call::one_of_on(&WRITES, fd), Action::Hold)?,
        None => None,
    };
    client.proc.send("go", &[])?;
    let whole = (payload.len() + 5) as u64;
    let mut verdict = Ok(());
    let held = match tracer {
        Some(mut tracer) => {
            let held = tracer.held_before(Instant::now() + Duration::from_secs(2))?;
            Some((tracer, held))
        }
        None => None,
    };
    match held {
        Some((tracer, true)) => {
            if let (Some(fd), Some((_, count))) = (socket, observe::write_args(pid, pid))
                && count < whole
                && observe::tcp_nodelay(pid, fd) == Some(false)
            {
                verdict = Err(Fail::failed(format!(
                    "over TCP, the client began a request frame of {whole} bytes (a 1 MiB echo) \
                     with a write of {count} bytes, on a connection without TCP_NODELAY (read \
                     on a copy of the client's socket): the rest of the frame may wait for the \
                     server's acknowledgement of that piece (Nagle's algorithm, up to 40 ms): \
                     set TCP_NODELAY on the client's connection (set_nodelay(true) after \
                     connect), or write every frame, whatever its size, in one go"
                )));
            }
            tracer.release();
        }
        Some((tracer, false)) => {
            drop(tracer);
            run.note(format!(
                "the client wrote its request with none of write(), send(), writev(), \
                 sendmsg(): {not_probed}"
            ));
        }
        None => run.note(format!("the client could not be traced: {not_probed}")),
    }
    conn.timeouts(Duration::from_secs(3));
    let got = read_frame_counted(&mut conn);
    let _ = conn.stream().write_all(&frame(STATUS_OK, b"answered"));
    let done = client.proc.recv_any();
    conn.shutdown(Shutdown::Both);
    verdict?;
    match got {
        Ok(Ok(Some((op, got)))) if op == OP_ECHO && got == payload => {
            done?;
            Ok(())
        }
        _ => Err(Fail::failed(
            "over TCP, the client's 1 MiB echo request did not reach the grader's server whole",
        )),
    }
}

/// The client's first write() of a request, on its connection to a server of the grader's, is
/// cut to 1 byte: the server must still get the whole frame. Skipped (with a note) when the
/// client writes its socket with another call, or the machine allows no tracing.
pub fn short_request_write(run: &mut Run) -> Result<(), Fail> {
    let (listener, at) = GraderListener::bind(run, Transport::Unix)?;
    let payload = run.random_bytes(1000);
    let mut client = spawn_client(run, &at, vec![(OP_ECHO, payload.clone())], "the client")?;
    let mut conn = listener
        .accept_within(Duration::from_secs(2))?
        .ok_or_else(|| Fail::failed("the client said `ready` but never connected"))?;
    let pid = client.pid();
    let not_forced = "a short write of a request was not forced";
    let socket = observe::sockets(pid)
        .into_iter()
        .map(|(fd, _)| fd)
        .find(|&fd| fd != CONTROL_FD);
    let tracer = match socket {
        Some(fd) => {
            let on_socket = Call::one_of_on(&SHORTENABLE_WRITES, fd);
            Tracer::attach_thread(pid, pid, on_socket, Action::Shorten(1))?
        }
        None => None,
    };
    client.proc.send("go", &[])?;
    let cut = match tracer {
        Some(mut tracer) => tracer.failed_before(Instant::now() + Duration::from_secs(2))?,
        None => false,
    };
    conn.timeouts(Duration::from_secs(2));
    let got = read_frame_counted(&mut conn);
    // Whatever came, an answer, so that the client can finish.
    let _ = conn.stream().write_all(&frame(STATUS_OK, b"answered"));
    let done = client.proc.recv_any();
    conn.shutdown(Shutdown::Both);
    if !cut {
        run.note(format!(
            "the client's main thread wrote nothing to its socket with write(), send() or \
             writev(): {not_forced}"
        ));
        return Ok(());
    }
    let how = match got {
        Ok(Ok(Some((op, got)))) if op == OP_ECHO && got == payload => {
            done?;
            return Ok(());
        }
        Ok(Ok(Some((op, got)))) => format!(
            "a frame with op {} and {} payload bytes, not the request (op 'E' and the 1000 \
             bytes sent)",
            op_name(op),
            got.len()
        ),
        Ok(Err(short)) => format!("a request that stopped short: {short}"),
        Ok(Ok(None)) => "no request: the connection ended".into(),
        Err(e) => format!("no whole request ({e})"),
    };
    Err(Fail::failed(format!(
        "the client's first write() of a request (a 1000-byte echo), which the grader cut to 1 \
         byte (it returned 1, a short count, as a stop or a full socket buffer can make any \
         write return), was followed by bytes that do not make the frame: the grader's server \
         received {how}. Write every byte of the frame, its 5-byte prefix too (write_all, or loop \
         on write() until all is written)"
    )))
}

/// The student's client, connected to a server of the grader's, has its first read() of a
/// response made to fail with EIO, then (another client) its first write() of a request with
/// ENOBUFS: errors no server can bring about (a server that hangs up gives an end of stream,
/// ECONNRESET or EPIPE). Each must end the client with `failed kind=io` carrying that call's
/// own errno: not Closed or Truncated (a read error is no end of stream), not a made-up error,
/// not retried. Skipped (with a note) when the client's socket is not seen or the machine
/// allows no tracing.
pub fn client_failed_calls(run: &mut Run) -> Result<(), Fail> {
    let payload = b"a call whose socket fails".to_vec();
    let cases: [(&'static [i64], i32, &str, &str); 2] = [
        (&READS, libc::EIO, "read()", "EIO, os error 5"),
        (&WRITES, libc::ENOBUFS, "write()", "ENOBUFS, os error 105"),
    ];
    for (calls, errno, call, name) in cases {
        let (listener, at) = GraderListener::bind(run, Transport::Unix)?;
        let mut client = spawn_client(run, &at, vec![(OP_ECHO, payload.clone())], "the client")?;
        let mut conn = listener
            .accept_within(Duration::from_secs(2))?
            .ok_or_else(|| Fail::failed("the client said `ready` but never connected"))?;
        let pid = client.pid();
        let socket = observe::sockets(pid)
            .into_iter()
            .map(|(fd, _)| fd)
            .find(|&fd| fd != CONTROL_FD);
        let tracer = match socket {
            Some(fd) => {
                Tracer::attach_thread(pid, pid, Call::one_of_on(calls, fd), Action::Fail(errno))?
            }
            None => None,
        };
        client.proc.send("go", &[])?;
        let failed = match tracer {
            Some(mut tracer) => tracer.failed_before(Instant::now() + Duration::from_secs(2))?,
            None => false,
        };
        if !failed {
            run.note(format!(
                "the client's {call} on its socket could not be made to fail: {name} not forced"
            ));
            client.proc.kill_tree();
            continue;
        }
        let situation = format!(
            "when its first {call} on its connection failed with {name} (forced by the grader: \
             an error no server can bring about, unlike a hang-up)"
        );
        let rule = "a read or write that fails (other than with EINTR) is RpcError::Io carrying \
                    the io::Error the call returned (map_err(RpcError::Io)): not Closed or \
                    Truncated, which are ends of the stream, not a made-up error, and not \
                    retried";
        let message = client
            .proc
            .recv_before(Instant::now() + Duration::from_secs(2))?;
        let error = message
            .as_ref()
            .and_then(|m| m.get("error"))
            .unwrap_or("")
            .to_string();
        let verdict = match message {
            Some(m) if m.kind == "failed" && m.get("kind") == Some("io") => {
                if carries_errno(&error, errno) {
                    Ok(())
                } else {
                    Err(Fail::failed(format!(
                        "{situation}, the client reported kind=io as it should, but not the \
                         error the call returned ({name}): `{error}` carries {}; {rule}",
                        errnos_in(&error)
                    )))
                }
            }
            Some(m) => Err(Fail::failed(format!(
                "{situation}, the client said {} where `failed` with kind=io is expected: {rule}",
                said(&m)
            ))),
            None => {
                // Nothing said: did it try the call again? A request that comes after a failed
                // write, or a response taken after a failed read, says so.
                let request = if errno == libc::EIO {
                    None
                } else {
                    conn.timeouts(Duration::from_millis(500));
                    super::protocol::read_frame(&mut conn).ok().flatten()
                };
                let retried = match request {
                    Some(_) => true,
                    None if errno == libc::EIO => {
                        let _ = conn.send(&frame(STATUS_OK, &payload), 0);
                        client
                            .proc
                            .recv_before(Instant::now() + Duration::from_secs(1))?
                            .is_some_and(|m| m.kind == "done")
                    }
                    None => false,
                };
                let how = if retried {
                    format!("tried the {call} again, and went on: it retried a failed call")
                } else {
                    "neither failed nor finished within 2 s".into()
                };
                Err(Fail::failed(format!(
                    "{situation}, the client {how}; {rule}"
                )))
            }
        };
        if verdict.is_err() {
            client.proc.kill_tree();
            return verdict;
        }
        client.proc.wait()?;
    }
    Ok(())
}

/// With no socket at its path, the client's connect() fails (ENOENT); the client, held right
/// after that connect() returns while the grader binds a socket at the path, must still report
/// kind=connect, and never connect: a failed connect is reported at once, not tried again (a
/// wait between tries is a poll, and a later try reaches whatever came to the path since).
/// Skipped (with a note) when the machine allows no tracing.
pub fn failed_connect_not_retried(run: &mut Run) -> Result<(), Fail> {
    let path = run.path("appears-later.sock");
    let at = ["--unix".to_string(), path.display().to_string()];
    let request = vec![(OP_ECHO, b"anyone there?".to_vec())];
    let mut client = start_stopped_client(run, &at, request, "the client")?;
    let pid = client.pid();
    let tracer = Tracer::attach(pid, Call::any(libc::SYS_connect), Action::HoldAfter)?;
    force::resume(pid)?;
    let Some(mut tracer) = tracer else {
        run.note("the client could not be traced: no socket bound after its failed connect()");
        return expect_connect_failure(&mut client, None, &path);
    };
    if !tracer.held_before(Instant::now() + Duration::from_secs(5))? {
        // The client reported (or failed) without a connect(): its message says which.
        drop(tracer);
        return expect_connect_failure(&mut client, None, &path);
    }
    let listener = std::os::unix::net::UnixListener::bind(&path)?;
    give_to_program_user(run, &path)?;
    listener.set_nonblocking(true)?;
    tracer.release();
    let outcome = expect_connect_failure(&mut client, Some(&listener), &path);
    drop(listener);
    let _ = std::fs::remove_file(&path);
    outcome
}

/// The client's last word must be `failed` with kind=connect, and `listener` (a socket the
/// grader bound at `path` after the client's failed connect()) must get no connection.
fn expect_connect_failure(
    client: &mut super::client_procs::ClientProc,
    listener: Option<&std::os::unix::net::UnixListener>,
    path: &std::path::Path,
) -> Result<(), Fail> {
    let bound_after = if listener.is_some() {
        " at its connect() (the grader bound one there only once that connect() had failed \
         with ENOENT)"
    } else {
        ""
    };
    let situation = format!("with no socket at {}{bound_after}", path.display());
    let rule = "a connect() that fails is RpcError::Connect, reported at once: never try again \
                (sleeping between tries is polling, and a later try reaches whatever came to the \
                path since)";
    let until = Instant::now() + Duration::from_secs(5);
    let message = loop {
        if let Some(message) = client
            .proc
            .recv_before(Instant::now() + Duration::from_millis(20))?
        {
            break Some(message);
        }
        if Instant::now() >= until {
            break None;
        }
    };
    let connected = listener.is_some_and(|l| l.accept().is_ok());
    match message {
        Some(m) if m.kind == "failed" && m.get("kind") == Some("connect") && !connected => {
            client.proc.wait()?;
            Ok(())
        }
        Some(m) => {
            client.proc.kill_tree();
            let how = if connected {
                ", having connected to the socket the grader bound after its failed connect(): \
                 it tried again"
            } else {
                ""
            };
            Err(Fail::failed(format!(
                "{situation}, the client said {}{how}, where `failed` with kind=connect is \
                 expected: {rule}",
                said(&m)
            )))
        }
        None => {
            client.proc.kill_tree();
            Err(Fail::failed(format!(
                "{situation}, the client neither failed nor connected within 5 s: {rule}"
            )))
        }
    }
}
