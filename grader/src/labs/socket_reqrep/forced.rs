//! Error paths no client can bring about, forced with the tracer on a thread of the server: a
//! handler's read() and write() interrupted (EINTR), which it must retry, and an accept() that
//! fails (ECONNABORTED), which costs that connection only, never the server.

use std::time::{Duration, Instant};

use super::OP_ECHO;
use super::observe;
use super::programs::Server;
use super::protocol::{frame, read_frame_counted, read_response, verify};
use crate::engine::tracer::{Action, Call, Tracer};
use crate::engine::{Fail, Run};

/// The calls a handler may read a socket with, and write one with.
const READS: [i64; 4] = [
    libc::SYS_read,
    libc::SYS_recvfrom,
    libc::SYS_readv,
    libc::SYS_recvmsg,
];
const WRITES: [i64; 4] = [
    libc::SYS_write,
    libc::SYS_sendto,
    libc::SYS_writev,
    libc::SYS_sendmsg,
];
pub const ACCEPTS: [i64; 2] = [libc::SYS_accept, libc::SYS_accept4];

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

/// A handler whose read() and then write() are interrupted once each (EINTR, as a signal caught
/// by a handler function anywhere in the process makes them fail) must retry them: the client
/// still gets its whole response. Skipped (with a note) when the server serves its clients
/// with no thread of their own, or the machine allows no tracing.
pub fn interrupted_calls(run: &mut Run, server: &Server) -> Result<(), Fail> {
    let pid = server.pid();
    let before = observe::thread_ids(pid);
    let known = server.dropped_lines().len();
    let mut conn = server.connect()?;
    let soon = || Instant::now() + Duration::from_secs(2);
    let Some((handler, read)) = observe::new_thread_in(pid, &before, &READS, soon()) else {
        run.note("no thread of the server's own was seen reading a new client: EINTR not forced");
        return Ok(());
    };
    if !fail_next(pid, handler, read, libc::EINTR)? {
        run.note("the handler's read() could not be made to fail: EINTR not forced");
        return Ok(());
    }
    // Larger than the socket's buffers: the handler blocks writing the response.
    let payload = run.random_bytes(3 << 20);
    conn.send(&frame(OP_ECHO, &payload), 0)?;
    let writing = observe::new_thread_in(pid, &before, &WRITES, soon())
        .filter(|(tid, _)| *tid == handler)
        .map(|(_, call)| call);
    let write_failed = match writing {
        Some(write) => fail_next(pid, handler, write, libc::EINTR)?,
        None => false,
    };
    let calls = if write_failed {
        "its read() of the request and its write() of the response each failed once"
    } else {
        "its read() of the request failed once"
    };
    let rule = "EINTR says the call was interrupted before it did anything: retry it (read_exact \
                and write_all do); only another error is RpcError::Io";
    match read_frame_counted(&mut conn) {
        Ok(Ok(Some(got))) => verify(
            got,
            OP_ECHO,
            &payload,
            "a 3 MiB echo request whose handler was interrupted",
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
                "a client's handler, when {calls} with EINTR (forced by the grader, as a signal \
                 caught anywhere in the process does), did not go on: {how}{log}{}; {rule}",
                server.alive_note()
            )))
        }
    }
}

/// An accept() that fails (ECONNABORTED: a client reset its connection before it was accepted)
/// costs that connection only: the next client is served. Skipped (with a note) when no thread
/// of the server is seen blocked in accept(), or the machine allows no tracing.
pub fn aborted_accept(run: &mut Run, server: &Server) -> Result<(), Fail> {
    let pid = server.pid();
    let Some((acceptor, accept)) =
        observe::new_thread_in(pid, &[], &ACCEPTS, Instant::now() + Duration::from_secs(2))
    else {
        run.note("no thread of the server was seen in accept(): ECONNABORTED not forced");
        return Ok(());
    };
    if !fail_next(pid, acceptor, accept, libc::ECONNABORTED)? {
        run.note("the server's accept() could not be made to fail: ECONNABORTED not forced");
        return Ok(());
    }
    let mut conn = server.connect()?;
    let payload = b"served after a failed accept?".to_vec();
    conn.send(&frame(OP_ECHO, &payload), 0)?;
    let got = read_response(&mut conn).map_err(|e| {
        Fail::failed(format!(
            "after one of the server's accept() calls failed with ECONNABORTED (forced by the \
             grader: a client that resets its connection before it is accepted does it), the \
             next client got no response ({e}){}: a failed accept() costs that connection only; \
             log it and go on accepting",
            server.alive_note()
        ))
    })?;
    verify(got, OP_ECHO, &payload, "a client after a failed accept()")
}
