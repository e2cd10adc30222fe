//! Error paths no client can bring about, forced with the tracer on a thread of the server: a
//! handler's read() and write() interrupted (EINTR), which it must retry, a write() that
//! returns a short count, whose rest it must write, and an accept() that fails (ECONNABORTED),
//! which costs that connection only, never the server. The client's own forced error paths
//! are in `forced_client.rs`.

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use super::observe;
use super::programs::{Server, line_kind};
use super::protocol::{Conn, frame, hex, read_frame_counted, read_response, verify};
use super::{OP_ECHO, STATUS_OK};
use crate::engine::tracer::{Action, Call, Tracer};
use crate::engine::{Fail, Run};

/// The calls a handler may read a socket with, and write one with.
pub const READS: [i64; 4] = [
    libc::SYS_read,
    libc::SYS_recvfrom,
    libc::SYS_readv,
    libc::SYS_recvmsg,
];
pub const WRITES: [i64; 4] = [
    libc::SYS_write,
    libc::SYS_sendto,
    libc::SYS_writev,
    libc::SYS_sendmsg,
];
pub const ACCEPTS: [i64; 2] = [libc::SYS_accept, libc::SYS_accept4];
/// The writes whose third argument counts what they write (bytes, or buffers for writev()):
/// those the grader can make return a short count.
pub const SHORTENABLE_WRITES: [i64; 3] = [libc::SYS_write, libc::SYS_sendto, libc::SYS_writev];

/// Makes the next `call` of thread `tid` fail with `errno`; false if the machine does not allow
/// it or the thread never made the call.
fn fail_next(pid: i32, tid: i32, call: i64, errno: i32) -> Result<bool, Fail> {
    let Some(mut tracer) = Tracer::attach_thread(pid, tid, Call::any(call), Action::Fail(errno))?
    else {
        return Ok(false);
    };
    // Attaching interrupts the blocked call, which the kernel restarts: the restart is failed.
    tracer.failed_before(Instant::now() + Duration::from_secs(2))
}

/// How many times in a row the grader interrupts a call (EINTR): signals may come one after
/// another, and a call is retried however many times it is interrupted.
const INTERRUPTS: u32 = 3;

/// Makes the next `call` of thread `tid` fail with EINTR [`INTERRUPTS`] times in a row, the
/// retries too; false if the machine does not allow it or the thread never made the call.
fn interrupt_in_a_row(pid: i32, tid: i32, call: Call) -> Result<bool, Fail> {
    let interrupting = Action::FailTimes(libc::EINTR, INTERRUPTS);
    let Some(tracer) = Tracer::attach_thread(pid, tid, call, interrupting)? else {
        return Ok(false);
    };
    Ok(tracer.failed_count(Instant::now() + Duration::from_secs(2))? > 0)
}

/// A new client of `server` whose handler's first read() has been made to fail with `errno`
/// (EINTR: [`INTERRUPTS`] times in a row), and what the check needs of it.
struct FailedRead {
    pid: i32,
    /// The server's threads and their calls before the client connected.
    before: Vec<(i32, Option<(i64, u64)>)>,
    /// The server's `dropped client` lines before it.
    known: usize,
    /// The thread that serves it.
    handler: i32,
    conn: Conn,
}

/// Connects a client and makes its handler's first read() fail with `errno` (`name` in the
/// notes), once, or [`INTERRUPTS`] times in a row for EINTR; `None`, with a note, when no thread of the server's own reads the new client or
/// the machine allows no tracing.
fn client_with_failed_read(
    run: &mut Run,
    server: &Server,
    errno: i32,
    name: &str,
) -> Result<Option<FailedRead>, Fail> {
    let pid = server.pid();
    let before = observe::blocked_calls(pid);
    let known = server.dropped_lines().len();
    let conn = server.connect()?;
    let soon = Instant::now() + Duration::from_secs(2);
    let Some((handler, read)) = observe::thread_newly_in(pid, &before, &READS, soon) else {
        run.note(format!(
            "no thread of the server's own was seen reading a new client: {name} not forced"
        ));
        return Ok(None);
    };
    let failed = if errno == libc::EINTR {
        interrupt_in_a_row(pid, handler, Call::any(read))?
    } else {
        fail_next(pid, handler, read, errno)?
    };
    if !failed {
        run.note(format!(
            "the handler's read() could not be made to fail: {name} not forced"
        ));
        return Ok(None);
    }
    Ok(Some(FailedRead {
        pid,
        before,
        known,
        handler,
        conn,
    }))
}

/// A handler whose read() and then write() are interrupted three times in a row each (EINTR, as
/// signals caught by a handler function anywhere in the process make them fail) must retry
/// them, every time: the client
/// still gets its whole response. Skipped (with a note) when the server serves its clients
/// with no thread of their own, or the machine allows no tracing.
pub fn interrupted_calls(run: &mut Run, server: &Server) -> Result<(), Fail> {
    let Some(FailedRead {
        pid,
        before,
        known,
        handler,
        mut conn,
    }) = client_with_failed_read(run, server, libc::EINTR, "EINTR")?
    else {
        return Ok(());
    };
    let soon = || Instant::now() + Duration::from_secs(2);
    // Larger than the socket's buffers: the handler blocks writing the response.
    let payload = run.random_bytes(3 << 20);
    let rule = "EINTR says the call was interrupted before it did anything: retry it, however \
                many times in a row it comes (read_exact and write_all do; a limit on the \
                retries turns signals that come one after another into a dropped client); only \
                another error is RpcError::Io";
    if conn.send(&frame(OP_ECHO, &payload), 0).is_err() {
        let log = match server.next_dropped_line(known, Duration::from_millis(500)) {
            Some(line) => format!("dropped the client (its log: `{line}`)"),
            None => "closed the connection".into(),
        };
        return Err(Fail::failed(format!(
            "a client's handler, when its first read() on a new connection (in the length \
             prefix) failed with EINTR three times in a row (forced by the grader, as signals \
             caught anywhere in the process, one after another, do), did not go on: the server {log} before the request (3 MiB, written after the interrupted \
             read) was all sent{}; {rule}",
            server.alive_note()
        )));
    }
    let writing = observe::thread_newly_in(pid, &before, &WRITES, soon())
        .filter(|(tid, _)| *tid == handler)
        .map(|(_, call)| call);
    let write_failed = match writing {
        Some(write) => interrupt_in_a_row(pid, handler, Call::any(write))?,
        None => false,
    };
    let calls = if write_failed {
        "its read() of the request and its write() of the response each"
    } else {
        "its read() of the request"
    };
    match read_frame_counted(&mut conn) {
        Ok(Ok(Some(got))) => {
            verify(
                got,
                OP_ECHO,
                &payload,
                "a 3 MiB echo request whose handler was interrupted",
            )?;
            interrupted_small_write(run, server, &mut conn, handler, known)
        }
        outcome => {
            let how = match outcome {
                Ok(Err(short)) => format!("the response stopped short: {short}"),
                Ok(Ok(None)) => "the connection ended without a response".into(),
                Err(e) => format!("no response ({e})"),
                Ok(Ok(Some(_))) => unreachable!("matched above"),
            };
            let log = server
                .next_dropped_line(known, Duration::from_millis(500))
                .map(|l| format!(" (the server's log: `{l}`)"))
                .unwrap_or_default();
            Err(Fail::failed(format!(
                "a client's handler, when {calls} failed with EINTR three times in a row (forced \
                 by the grader, as signals caught anywhere in the process, one after another, \
                 do), did not go on: {how}{log}{}; {rule}",
                server.alive_note()
            )))
        }
    }
}

/// The same handler's write() of a small response (one that fits the socket's buffer, written
/// without blocking) is interrupted three times in a row (EINTR): a frame of any size is
/// retried there.
fn interrupted_small_write(
    run: &mut Run,
    server: &Server,
    conn: &mut Conn,
    handler: i32,
    known: usize,
) -> Result<(), Fail> {
    let pid = server.pid();
    // Attached while the handler blocks reading the next request: its next write of any kind.
    let Some(tracer) = Tracer::attach_thread(
        pid,
        handler,
        Call::one_of(&WRITES),
        Action::FailTimes(libc::EINTR, INTERRUPTS),
    )?
    else {
        return Ok(());
    };
    let payload = run.random_bytes(1000);
    conn.send(&frame(OP_ECHO, &payload), 1)?;
    if tracer.failed_count(Instant::now() + Duration::from_secs(2))? == 0 {
        run.note("the handler's write() of a 1000-byte response could not be made to fail");
        return Ok(());
    }
    let how = match read_frame_counted(conn) {
        Ok(Ok(Some(got))) => {
            return verify(
                got,
                OP_ECHO,
                &payload,
                "a 1000-byte echo request whose response's write() was interrupted",
            );
        }
        Ok(Err(short)) => format!("the response stopped short: {short}"),
        Ok(Ok(None)) => "the connection ended without a response".into(),
        Err(e) => format!("no response ({e})"),
    };
    let log = server
        .next_dropped_line(known, Duration::from_millis(500))
        .map(|l| format!(" (the server's log: `{l}`)"))
        .unwrap_or_default();
    Err(Fail::failed(format!(
        "a client's handler, when its write() of the response to a 1000-byte echo request (a \
         frame that fits the socket's buffer) failed with EINTR three times in a row (forced by \
         the grader, as signals caught anywhere in the process do), did not go on: \
         {how}{log}{}; the write of a 3 MiB response on that connection, interrupted the same \
         way, went on. Retry EINTR wherever a frame is written, whatever its size, however \
         many times in a row (write_all does)",
        server.alive_note()
    )))
}

/// A handler's read() inside the body of a 3 MiB request, once the length prefix and 100 KiB of
/// the body are read, is interrupted three times in a row (EINTR): the handler must retry it
/// there too, and
/// the client still gets its whole response. Skipped (with a note) as
/// [`interrupted_calls`] is.
pub fn interrupted_body_read(run: &mut Run, server: &Server) -> Result<(), Fail> {
    let pid = server.pid();
    let before = observe::blocked_calls(pid);
    let known = server.dropped_lines().len();
    let mut conn = server.connect()?;
    let soon = || Instant::now() + Duration::from_secs(2);
    let Some((handler, read)) = observe::thread_newly_in(pid, &before, &READS, soon()) else {
        run.note("no thread of the server's own was seen reading a new client: EINTR not forced");
        return Ok(());
    };
    let payload = run.random_bytes(3 << 20);
    let whole = frame(OP_ECHO, &payload);
    let (begun, rest) = whole.split_at(5 + (100 << 10));
    conn.send(begun, 0)?;
    // Once the server has read all of it, its next read is one inside the body.
    conn.wait_until_read();
    if !interrupt_in_a_row(pid, handler, Call::any(read))? {
        run.note("the handler's read() could not be made to fail: EINTR not forced");
        return Ok(());
    }
    let situation = "a client's handler, when its read() inside the body of a 3 MiB echo request \
                     (the length prefix and 100 KiB of the body read) failed with EINTR three \
                     times in a row (forced by the grader, as signals caught anywhere in the \
                     process, one after another, do)";
    let rule = "EINTR says the call was interrupted before it did anything: retry it wherever it \
                comes, however many times in a row, in the length prefix and in a body of any \
                size (read_exact and \
                read_to_end do; a hand-written read loop needs an arm for \
                ErrorKind::Interrupted); only another error is RpcError::Io";
    let sent = conn.send(rest, 0);
    let got = match sent {
        Ok(()) => read_frame_counted(&mut conn),
        Err(_) => Err(std::io::Error::from(ErrorKind::BrokenPipe)),
    };
    match got {
        Ok(Ok(Some(got))) => verify(
            got,
            OP_ECHO,
            &payload,
            "a 3 MiB echo request whose body read was interrupted",
        ),
        outcome => {
            let how = match outcome {
                Ok(Err(short)) => format!("the response stopped short: {short}"),
                Ok(Ok(None)) => "the connection ended without a response".into(),
                Err(e) => format!("no response ({e})"),
                Ok(Ok(Some(_))) => unreachable!("matched above"),
            };
            let log = server
                .next_dropped_line(known, Duration::from_millis(500))
                .map(|l| format!(" (the server's log: `{l}`)"))
                .unwrap_or_default();
            Err(Fail::failed(format!(
                "{situation}, did not go on: {how}{log}{}; {rule}",
                server.alive_note()
            )))
        }
    }
}

/// An accept() that fails (ECONNABORTED: a client reset its connection before it was accepted)
/// costs that connection only: the next client is served. Skipped (with a note) when no thread
/// of the server is seen blocked in accept(), or the machine allows no tracing. Says whether the
/// accept() was made to fail, and a client served after it.
pub fn aborted_accept(run: &mut Run, server: &Server) -> Result<bool, Fail> {
    failed_accept(run, server, libc::ECONNABORTED, &[])
}

/// An accept() error's name, and what brings it about.
fn accept_error(errno: i32) -> (&'static str, &'static str) {
    match errno {
        libc::ECONNABORTED => (
            "ECONNABORTED",
            "a client that resets its connection before it is accepted does it",
        ),
        libc::EMFILE => (
            "EMFILE",
            "a server that runs out of descriptors gets it until some of its clients leave",
        ),
        libc::EPERM => (
            "EPERM",
            "a firewall rule that refuses one connection does it (accept(2))",
        ),
        _ => super::accept_errors::name_and_cause(errno).unwrap_or(("an error", "forced")),
    }
}

/// As [`aborted_accept`], with another error: `EMFILE` (the process has run out of
/// descriptors, until some of its clients leave) or `EPERM` (a firewall rule refused that
/// connection, an error no list of transient ones names) must not end the accepting either.
/// `gone_past`: the errors of accept() calls made to fail before, which the accepting went on
/// after.
pub fn failed_accept(
    run: &mut Run,
    server: &Server,
    errno: i32,
    gone_past: &[i32],
) -> Result<bool, Fail> {
    let (name, cause) = accept_error(errno);
    let why = if gone_past.is_empty() {
        cause.to_string()
    } else {
        let before: Vec<&str> = gone_past.iter().map(|&e| accept_error(e).0).collect();
        format!(
            "{cause}; the accepting went on after accept() calls that failed with {} before, \
             so the loop ends on some errors only",
            before.join(" and ")
        )
    };
    let pid = server.pid();
    let Some((acceptor, accept)) =
        observe::new_thread_in(pid, &[], &ACCEPTS, Instant::now() + Duration::from_secs(2))
    else {
        run.note(format!(
            "no thread of the server was seen in accept(): {name} not forced"
        ));
        return Ok(false);
    };
    if !fail_next(pid, acceptor, accept, errno)? {
        run.note(format!(
            "the server's accept() could not be made to fail: {name} not forced"
        ));
        return Ok(false);
    }
    let mut conn = server.connect()?;
    let payload = format!("served after a failed accept ({name})?").into_bytes();
    conn.send(&frame(OP_ECHO, &payload), 0)?;
    let got = read_response(&mut conn).map_err(|e| {
        Fail::failed(format!(
            "after one of the server's accept() calls failed with {name} (forced by the \
             grader: {why}), the next client got no response ({e}){}: a failed accept() costs \
             that connection only, whatever its error; log it and go on accepting",
            server.alive_note()
        ))
    })?;
    verify(got, OP_ECHO, &payload, "a client after a failed accept()")?;
    Ok(true)
}

/// A handler's first write of a response is cut to 1 byte (a short count, which a stop or a
/// full socket buffer can bring about for any write, however small): the client must still get
/// the whole frame, its length prefix included. Skipped (with a note) when no thread of the
/// server's own serves the client, it writes with another call, or the machine allows no
/// tracing.
pub fn short_response_write(
    run: &mut Run,
    server: &Server,
    transport: &str,
    len: usize,
) -> Result<(), Fail> {
    let pid = server.pid();
    let before = observe::blocked_calls(pid);
    let mut conn = server.connect()?;
    let soon = || Instant::now() + Duration::from_secs(2);
    let not_forced = "a short write of a response was not forced";
    let Some((handler, _)) = observe::thread_newly_in(pid, &before, &READS, soon()) else {
        run.note(format!(
            "no thread of the server's own was seen reading a new client: {not_forced}"
        ));
        return Ok(());
    };
    let writes = Call::one_of(&SHORTENABLE_WRITES);
    let Some(mut tracer) = Tracer::attach_thread(pid, handler, writes, Action::Shorten(1))? else {
        run.note(format!("the server could not be traced: {not_forced}"));
        return Ok(());
    };
    let payload = run.random_bytes(len);
    conn.send(&frame(OP_ECHO, &payload), 0)?;
    if !tracer.failed_before(soon())? {
        drop(tracer);
        run.note(format!(
            "the handler wrote its response with none of write(), send() or writev(): \
             {not_forced}"
        ));
        return Ok(());
    }
    conn.timeouts(Duration::from_secs(2));
    let rule = "a write() may return a short count, whatever its size (a stop, a full socket \
                buffer): write every byte of the frame, its 5-byte prefix too (write_all, or \
                loop on write() until all is written)";
    let size = match len % (1 << 20) {
        0 => format!("{} MiB", len >> 20),
        _ => format!("{len}-byte"),
    };
    let cut = format!(
        "a handler's first write() of the response to a {size} echo request over {transport}, \
         which the grader cut to 1 byte (it returned 1)"
    );
    let expected = frame(STATUS_OK, &payload);
    match read_frame_counted(&mut conn) {
        Ok(Ok(Some((status, echoed)))) if status == STATUS_OK && echoed == payload => {
            // The frame came whole: nothing of it may follow it. The next request's response
            // must be the next bytes on the connection.
            let next = b"and the next one?";
            conn.send(&frame(OP_ECHO, next), 1)?;
            let want = frame(STATUS_OK, next);
            let mut got = vec![0u8; want.len()];
            let read = conn.stream().read_exact(&mut got);
            if read.is_ok() && got == want {
                return Ok(());
            }
            let what = match read {
                Err(e) => format!("no whole response to the next request came ({e})"),
                // The bytes of the frame sent again, wherever they begin in what came.
                Ok(()) => match (0..got.len())
                    .filter_map(|k| {
                        replayed(&expected, &got[k..], expected.len(), None)
                            .map(|(from, run)| (from, run, k))
                    })
                    .max_by_key(|&(_, run, _)| run)
                {
                    Some((from, run, _)) if run >= 8 => format!(
                        "where the response to the next request was expected, the connection \
                         carried bytes {from}..{} of the frame just received over again \
                         (sent twice): after the short write, the write loop went back \
                         instead of on",
                        from + run
                    ),
                    _ => format!(
                        "where the response to the next request ({} bytes) was expected, the \
                         connection carried other bytes ({})",
                        want.len(),
                        hex(&got[..got.len().min(12)])
                    ),
                },
            };
            Err(Fail::failed(format!(
                "after {cut}, the whole frame came, but then {what}{}: write each byte of a \
                 frame once, going on from where the short write stopped (add each write's \
                 count to the position); {rule}",
                server.alive_note()
            )))
        }
        Ok(Ok(Some((status, echoed)))) => {
            let got = frame(status, &echoed);
            let at = expected
                .iter()
                .zip(&got)
                .position(|(a, b)| a != b)
                .unwrap_or(expected.len().min(got.len()));
            let rest = &got[at..];
            let how = if let Some((from, run)) = replayed(&expected, rest, at, None) {
                format!(
                    "from byte {at} of the frame (its 5-byte prefix counted) on, what came are \
                     the frame's bytes {from}..{} over again, bytes already sent: after the \
                     short write, the write loop went back instead of on",
                    from + run
                )
            } else if let Some((from, _)) = replayed(&expected, rest, expected.len(), Some(at))
                .filter(|&(from, run)| from > at && run >= 8)
            {
                format!(
                    "bytes {at}..{from} of the frame (its 5-byte prefix counted) never came: \
                     what came from byte {at} on is the frame's from byte {from}, so bytes were \
                     lost after the short write"
                )
            } else {
                format!(
                    "the frame differs from byte {at} on (its 5-byte prefix counted): {} came \
                     where {} was sent",
                    hex(&got[at..got.len().min(at + 8)]),
                    hex(&expected[at..expected.len().min(at + 8)])
                )
            };
            Err(Fail::failed(format!(
                "after {cut}, the frame that came was not the echo: status {status} and {} \
                 payload bytes (status 0 and the {len} bytes sent expected), and {how}{}; {rule}",
                echoed.len(),
                server.alive_note()
            )))
        }
        outcome => {
            let how = match outcome {
                Ok(Err(short)) => format!("the response stopped short: {short}"),
                Ok(Ok(None)) => "the connection ended without a response".into(),
                Err(e) => format!("no whole response came ({e})"),
                Ok(Ok(Some(_))) => unreachable!("matched above"),
            };
            Err(Fail::failed(format!(
                "after {cut}: {how}{}; {rule}",
                server.alive_note()
            )))
        }
    }
}

/// Whether `rest` (bytes that came) begins with bytes of `expected` (a frame sent): the place
/// `from` below `limit` (`except` excluded: where they belong) where the longest run of them
/// starts (at least 4 bytes, or all of `rest`), and that run's length.
fn replayed(
    expected: &[u8],
    rest: &[u8],
    limit: usize,
    except: Option<usize>,
) -> Option<(usize, usize)> {
    let common = |from: usize| {
        expected[from..]
            .iter()
            .zip(rest)
            .take_while(|(a, b)| a == b)
            .count()
    };
    (0..limit.min(expected.len()))
        .filter(|&from| Some(from) != except)
        .map(|from| (from, common(from)))
        .filter(|&(_, run)| run > 0 && run >= 4.min(rest.len()))
        .max_by_key(|&(from, run)| (run, std::cmp::Reverse(from)))
}

/// The thread that starts a client's handler is held right after the clone3() that starts it,
/// while the handler, given an empty frame, ends at once: the client's connection must close
/// then, every handle on it. A handle the starting thread still has after the start (one it
/// means to register for the stop, say) would outlive the handler. Skipped (with a note) when no
/// thread of the server starts a thread per client with clone3(), or the machine allows no
/// tracing.
pub fn handler_ends_before_its_start_returns(run: &mut Run, server: &Server) -> Result<(), Fail> {
    let pid = server.pid();
    let soon = || Instant::now() + Duration::from_secs(2);
    let not_probed = "a handler that ends before its start returns was not probed";
    let Some((acceptor, _)) = observe::new_thread_in(pid, &[], &ACCEPTS, soon()) else {
        run.note(format!(
            "no thread of the server was seen in accept(): {not_probed}"
        ));
        return Ok(());
    };
    let start = Call::any(libc::SYS_clone3);
    let Some(mut tracer) = Tracer::attach_thread(pid, acceptor, start, Action::HoldAfter)? else {
        run.note(format!("the server could not be traced: {not_probed}"));
        return Ok(());
    };
    let known = server.dropped_lines().len();
    let mut conn = server.connect()?;
    conn.send(&[0, 0, 0, 0], 0)?;
    if !tracer.held_before(soon())? {
        drop(tracer);
        run.note(format!(
            "the accepting thread started no thread with clone3() for the client: {not_probed}"
        ));
        return Ok(());
    }
    // A process started (a fork) keeps the parent's copy of the connection until the parent
    // closes it: only a thread is probed. A child process is listed by the thread that made it
    // (a zombie too: the held thread cannot have reaped it); a thread may be gone already.
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{acceptor}/children"));
    let started_thread = children.is_ok_and(|list| list.trim().is_empty());
    let logged = if started_thread {
        server.next_dropped_line(known, Duration::from_secs(2))
    } else {
        None
    };
    let Some(line) = logged else {
        tracer.release();
        run.note(format!(
            "no handler thread was seen ending while the accepting thread was held: {not_probed}"
        ));
        return Ok(());
    };
    conn.timeouts(Duration::from_secs(3));
    let mut byte = [0u8; 1];
    let kept_open = matches!(
        conn.stream().read(&mut byte),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
    );
    tracer.release();
    if kept_open {
        return Err(Fail::failed(format!(
            "the server logged a client that sent an empty frame as dropped (`{line}`) but kept \
             its connection open while the grader held the thread that had just started that \
             client's handler (right after its clone3() returned, before it did anything else): \
             that thread still had a handle on the connection after the handler ended, such as \
             the second handle kept for the stop, registered only once the handler is started \
             (a handler that ends at once removes its entry before it is there, and the copy \
             stays open until the stop). Register every handle on a connection before its \
             handler starts, so that the handler's end closes them all"
        )));
    }
    Ok(())
}

/// Whether `text` (a log line, an `error=` field) carries the OS error `errno` as an
/// `io::Error` displays it: "... (os error N)".
pub fn carries_errno(text: &str, errno: i32) -> bool {
    text.contains(&format!("(os error {errno})"))
}

/// The `(os error N)` numbers `text` carries, for a message: "os error 104", or "no OS error".
pub fn errnos_in(text: &str) -> String {
    let found: Vec<&str> = text
        .match_indices("(os error ")
        .filter_map(|(at, _)| text[at + 1..].split_once(')').map(|(n, _)| n))
        .collect();
    if found.is_empty() {
        "no OS error number at all".into()
    } else {
        found.join(", ")
    }
}

/// A handler's read() of a new connection fails once with EIO, an error no client can bring
/// about (a reset is ECONNRESET): the client must be dropped (its connection closed) and logged
/// with kind=io and that read's own error, EIO (os error 5), and the server serves on.
/// Established in turn: a log line and its kind and errno, the connection's end, and, when
/// neither came, whether the handler answers a request on it (it retried the failed read).
/// Skipped (with a note) as [`interrupted_calls`] is.
pub fn failed_read(run: &mut Run, server: &Server) -> Result<(), Fail> {
    let Some(FailedRead {
        known, mut conn, ..
    }) = client_with_failed_read(run, server, libc::EIO, "EIO")?
    else {
        return Ok(());
    };
    let situation = "a client's handler, whose first read() on a new connection failed with EIO \
                     (forced by the grader: an error no client can bring about, unlike a reset)";
    let rule = "a read error other than EINTR is RpcError::Io carrying the io::Error the read() \
                returned (map_err(RpcError::Io)): never a made-up or fixed one, never the end \
                of the stream, never retried; the client is logged with log_dropped and its \
                connection closed";
    let line = server.next_dropped_line(known, Duration::from_secs(3));
    let closed = {
        let until = Instant::now() + Duration::from_secs(if line.is_some() { 3 } else { 0 });
        loop {
            if conn.peer_closed() {
                break true;
            }
            if Instant::now() >= until {
                break false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    match line {
        Some(line) if line_kind(&line) != "io" => Err(Fail::failed(format!(
            "{situation}, logged `{line}`: kind={}, where kind=io is expected: {rule}",
            line_kind(&line)
        ))),
        Some(line) if !carries_errno(&line, libc::EIO) => Err(Fail::failed(format!(
            "{situation}, logged kind=io as it should, but not the error the read() returned \
             (EIO, os error 5): `{line}` carries {}; {rule}",
            errnos_in(&line)
        ))),
        Some(line) if !closed => Err(Fail::failed(format!(
            "{situation}, logged `{line}` but kept the connection open for 3 s: a dropped \
             client's connection is closed at once, every handle on it"
        ))),
        Some(_) => Ok(()),
        None if !server.alive_note().is_empty() => Err(Fail::failed(format!(
            "the server died after {situation}: a failing client costs its own connection only"
        ))),
        None if closed => Err(Fail::failed(format!(
            "{situation}, closed the connection but logged no `dropped client ... (kind=io)` \
             line: it took the read error for the end of the stream (Ok(None)) or did not log \
             the error; {rule}"
        ))),
        None => {
            // Neither a log line nor the end: does the handler still serve this connection?
            let payload = b"after a failed read".to_vec();
            let answered = conn.send(&frame(OP_ECHO, &payload), 0).is_ok()
                && read_response(&mut conn).is_ok_and(|got| got == (STATUS_OK, payload));
            let how = if answered {
                "went on reading the connection and answered the request sent after it: it \
                 retried the failed read as if it were EINTR"
            } else {
                "neither logged the client nor closed its connection within 3 s, nor answered \
                 a request sent after it"
            };
            Err(Fail::failed(format!("{situation}, {how}; {rule}")))
        }
    }
}
