//! `drop-counts`: every client the server drops, whatever its error, is counted in
//! `ServerStats::dropped` as it is logged, and no count is lost while a handler logs: the
//! handler of a bad client is held at its log line's write() while another client comes, is
//! answered and goes.

use std::time::{Duration, Instant};

use super::forced::{READS, WRITES};
use super::observe;
use super::programs::{Server, line_kind, server};
use super::protocol::{frame, read_response, verify};
use super::{OP_ECHO, OP_HASH, Transport};
use crate::engine::tracer::{Action, Call, Tracer};
use crate::engine::{Fail, Run};

/// How the held handler's wait ended for the client that came meanwhile.
#[derive(PartialEq)]
enum Meanwhile {
    /// Answered, gone, its handler ended, all while the other handler was held.
    Served,
    /// Not served: a thread of the server waits for a lock the held handler holds.
    Locked,
}

pub fn drop_counts(run: &mut Run) -> Result<String, Fail> {
    let server = server(run, Transport::Unix)?;
    let pid = server.pid();
    let mut answered = 0u64;
    let mut connections = 0u64;
    let mut bad = Vec::new();

    // Clients ended by errors of every kind: the end of the stream inside a frame, a reset on
    // the read, a broken pipe on the write.
    let what = "a client that sent 2 bytes of a length prefix and closed";
    let known = server.dropped_lines().len();
    let mut conn = server.connect()?;
    connections += 1;
    conn.send(&frame(OP_HASH, b"cut")[..2], 0)?;
    drop(conn);
    bad.push(logged(&server, known, what)?);

    let what = "a client that closed its connection with a response unread (ECONNRESET)";
    let known = server.dropped_lines().len();
    super::failures::reset_with_a_response_unread(&server, &[])?;
    connections += 1;
    // Answered, but its handler ends with an error: not counted in `requests`, as in
    // `server-counts`' history.
    bad.push(logged(&server, known, what)?);

    let what = "a client that closed before its answer was written (EPIPE)";
    let known = server.dropped_lines().len();
    super::failures::closed_before_the_answer(&server, pid)?;
    connections += 1;
    bad.push(logged(&server, known, what)?);

    let held = held_log(run, &server, &mut answered, &mut connections)?;
    if held.is_some() {
        bad.push("an empty frame".into());
    }

    let kinds: Vec<String> = server
        .dropped_lines()
        .iter()
        .map(|l| line_kind(l).to_string())
        .collect();
    let (done, _) = server.stop_settled(0)?;
    // The stop's own ping.
    connections += 1;
    answered += 1;
    let count = |field: &str| done.get(field).and_then(|v| v.parse::<u64>().ok());
    let (clients, requests, dropped) = (count("clients"), count("requests"), count("dropped"));
    let history = format!(
        "{} bad clients, each logged as dropped ({}){}",
        bad.len(),
        bad.join("; "),
        match held {
            Some(Meanwhile::Served) => {
                ", the last one's handler held by the grader at its log line's write() while \
                 another client connected, was answered and closed"
            }
            Some(Meanwhile::Locked) => {
                ", the last one's handler held by the grader at its log line's write() while \
                 another client connected"
            }
            None => "",
        }
    );
    let want = (connections, answered, bad.len() as u64);
    if (clients, requests, dropped) == (Some(want.0), Some(want.1), Some(want.2)) {
        return Ok(format!(
            "{} clients dropped with errors of every kind were each counted, and no count was \
             lost while a handler logged",
            bad.len()
        ));
    }
    let said = format!(
        "the server's `done` says clients={}, requests={}, dropped={}, where {} clients \
         connected, {} requests were answered to clients that ended normally (the stop's own \
         call included) and {} clients were dropped",
        shown(clients),
        shown(requests),
        shown(dropped),
        want.0,
        want.1,
        want.2
    );
    if held.is_some()
        && (clients < Some(want.0) || requests < Some(want.1))
        && dropped == Some(want.2)
    {
        return Err(Fail::failed(format!(
            "after {history}: {said}. The counts of the other client (its acceptance, its call) \
             made while that handler logged are lost: the handler took a copy of the stats, \
             logged, and wrote the whole copy back (a read-modify-write split across two lock \
             sections, so an update made in between is overwritten). Update ServerStats in place, under one \
             lock (or with atomics)"
        )));
    }
    if dropped < Some(want.2) {
        return Err(Fail::failed(format!(
            "after {history}: {said}, though the log has a `dropped client` line for each \
             (kinds: {}). ServerStats::dropped counts every client logged with log_dropped, \
             whatever its error: a reset (ECONNRESET) or a broken pipe (EPIPE) is RpcError::Io \
             and a client the server dropped, like the end of the stream inside a frame",
            kinds.join(", ")
        )));
    }
    Err(Fail::failed(format!(
        "after {history}: {said}: count every client accepted, every request answered and \
         every client dropped, each once"
    )))
}

fn shown(n: Option<u64>) -> String {
    n.map_or_else(|| "nothing".into(), |n| n.to_string())
}

/// Waits for the bad client's `dropped client` line; returns its description with its kind.
fn logged(server: &Server, known: usize, what: &str) -> Result<String, Fail> {
    match server.next_dropped_line(known, Duration::from_secs(2)) {
        Some(line) => Ok(format!("{what}: kind={}", line_kind(&line))),
        None => Err(Fail::failed(format!(
            "{what}: no `dropped client` line within 2 s{}: each client whose connection ends \
             with an error is logged with log_dropped",
            server.alive_note()
        ))),
    }
}

/// A client makes one call, then sends an empty frame; its handler is held at its log line's
/// first write() to stderr, while another client connects and makes a call. Where that client
/// is served meanwhile, it closes and its handler ends before the held one goes on; where a
/// thread of the server waits for a lock instead, the held one is let go first. `None`, with
/// a note, when the handler cannot be told apart or traced.
fn held_log(
    run: &mut Run,
    server: &Server,
    answered: &mut u64,
    connections: &mut u64,
) -> Result<Option<Meanwhile>, Fail> {
    let pid = server.pid();
    let not_held = "the counts were not judged with a handler held while it logs";
    let before = observe::blocked_calls(pid);
    let mut first = server.connect()?;
    *connections += 1;
    first.send(&frame(OP_ECHO, b"first"), 0)?;
    verify(
        read_response(&mut first)?,
        OP_ECHO,
        b"first",
        "a client's first call",
    )?;
    let until = Instant::now() + Duration::from_secs(2);
    let Some((handler, _)) = observe::thread_newly_in(pid, &before, &READS, until) else {
        run.note(format!(
            "no thread of the server's own reads a new client: {not_held}"
        ));
        first.send(&[0, 0, 0, 0], 1)?;
        return Ok(None);
    };
    let Some(mut tracer) =
        Tracer::attach_thread(pid, handler, Call::one_of_on(&WRITES, 2), Action::Hold)?
    else {
        run.note(format!("the server could not be traced: {not_held}"));
        first.send(&[0, 0, 0, 0], 1)?;
        return Ok(None);
    };
    let known = server.dropped_lines().len();
    first.send(&[0, 0, 0, 0], 1)?;
    if !tracer.held_before(Instant::now() + Duration::from_secs(2))? {
        drop(tracer);
        run.note(format!(
            "the handler wrote its log line with none of write(), send(), writev(), \
             sendmsg(): {not_held}"
        ));
        return Ok(None);
    }
    let mut other = server.connect()?;
    *connections += 1;
    let request = frame(OP_ECHO, b"meanwhile");
    other.send(&request, 0)?;
    let until = Instant::now() + Duration::from_secs(3);
    let meanwhile = loop {
        if other.queued_within(request.len(), Duration::ZERO) {
            break Some(Meanwhile::Served);
        }
        let locked = waits_on_a_lock(pid, handler);
        // A lock held by the held handler stays taken; a passing wait does not.
        if locked && !observe::connections(pid, 0).is_empty() && {
            std::thread::sleep(Duration::from_millis(20));
            waits_on_a_lock(pid, handler)
        } {
            break Some(Meanwhile::Locked);
        }
        if Instant::now() >= until {
            break None;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    if meanwhile == Some(Meanwhile::Served) {
        verify(
            read_response(&mut other)?,
            OP_ECHO,
            b"meanwhile",
            "a client served while another's handler logs",
        )?;
        drop(other);
        // Its handler has ended once the server holds no connection but the held one's.
        let until = Instant::now() + Duration::from_secs(2);
        while observe::connections(pid, 0).len() > 1 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
        tracer.release();
    } else {
        tracer.release();
        verify(
            read_response(&mut other)?,
            OP_ECHO,
            b"meanwhile",
            "a client that came while another's handler logged",
        )?;
        drop(other);
    }
    *answered += 1;
    if server
        .next_dropped_line(known, Duration::from_secs(2))
        .is_none()
    {
        return Err(Fail::failed(format!(
            "a client that sent an empty frame: no `dropped client` line within 2 s{}",
            server.alive_note()
        )));
    }
    drop(first);
    Ok(Some(meanwhile.unwrap_or(Meanwhile::Locked)))
}

/// Whether a thread of `pid` other than `handler` is blocked in a futex wait (a lock).
fn waits_on_a_lock(pid: i32, handler: i32) -> bool {
    observe::blocked_calls(pid)
        .iter()
        .any(|(tid, call)| *tid != handler && matches!(call, Some((n, _)) if *n == libc::SYS_futex))
}
