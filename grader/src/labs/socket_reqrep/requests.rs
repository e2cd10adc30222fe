//! Requests answered right: the protocol's answers over both transports, in whatever pieces the
//! stream delivers them, to clients the grader writes itself or finds on the machine.
//!
//! Beside it: TCP and its large frames in `tcp_frames.rs`, large payloads
//! in `large_payloads.rs`, clients the grader finds on the machine in `foreign_clients.rs`.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::time::Duration;

use rand::RngExt;

use super::client_procs::spawn_client;
use super::grader_server::answer_all;
use super::observe;
use super::programs::{Server, server};
use super::protocol::{
    Conn, closed_after, expected, frame, op_name, random_requests_for, read_response, verify,
};
use super::{OP_ECHO, OP_HASH, OP_REVERSE, STATUS_OK, STATUS_UNKNOWN_OP, Transport};
use crate::engine::{Fail, Run, force};

pub fn unix_requests(run: &mut Run) -> Result<String, Fail> {
    let server = server(run, Transport::Unix)?;
    // The server alone first, with the grader's client: then what the student's client gets
    // wrong is the client's.
    op_table(&server)?;
    let requests = random_requests_for(run, 40, "c");
    let client = spawn_client(run, &server.where_args(), requests, "the client")?.finish()?;
    client.verify()?;
    answered_in_the_servers_place(run, &server)?;
    // The op table's calls and the stop's own.
    server.stop_counting(OP_TABLE_CALLS + 1, &client)?;
    Ok(
        "40 random requests were answered correctly over a Unix socket, all of them read by the \
        server; every op byte but E, R and H got status 1, and empty payloads were answered"
            .into(),
    )
}

/// The student's client connects to the lab's own server, whose listening socket the grader
/// accepts on in its place (a copy of the descriptor, the server stopped meanwhile): the
/// client's peer is the server's program, but the answers are the grader's random bytes. The
/// requests must come over the socket as they are, and the client must write the answers as
/// they came. Skipped (with a note) when the listener cannot be copied.
fn answered_in_the_servers_place(run: &mut Run, server: &Server) -> Result<(), Fail> {
    let Some(listener) = observe::unix_listener_copy(server.pid()) else {
        run.note("the server's listening socket could not be copied: its place not taken");
        return Ok(());
    };
    // Small and large (more than a socket's buffer, where another path pays off).
    let mut requests = vec![
        (OP_ECHO, run.random_bytes(20_000)),
        (OP_HASH, run.random_bytes(1 << 20)),
        (OP_REVERSE, run.random_bytes(30)),
    ];
    super::repeated_requests::repeat_each(&mut requests);
    let answers: Vec<(u8, Vec<u8>)> = (0..requests.len())
        .map(|_| {
            let len = run.rng().random_range(1..64);
            (STATUS_OK, run.random_bytes(len))
        })
        .collect();
    observe::hold_every_thread(server.pid())?;
    let outcome = client_of_the_grader(run, server, &listener, requests.clone(), &answers);
    force::resume(server.pid())?;
    let (received, written) = outcome?;
    let situation = "the client, connected to the lab's own server's socket, on which the grader \
                     accepted and answered in the server's place (with random bytes, the server \
                     stopped meanwhile)";
    if let Some(fail) =
        super::repeated_requests::repeat_not_sent(&requests, &received, written.len(), situation)
    {
        return Err(fail);
    }
    if received.len() < requests.len() && requests.starts_with(&received) {
        return Err(Fail::failed(format!(
            "{situation}: the client made its {} calls and wrote answers, but only {} of its \
             requests came over the socket: the others never reached the server. Client::call \
             sends each request over the socket and returns the response that came, whoever \
             the peer is (even the lab's own program): never answer a call in the client",
            requests.len(),
            received.len()
        )));
    }
    if let Some(i) = (0..requests.len()).find(|&i| received.get(i) != Some(&requests[i])) {
        let (op, payload) = &requests[i];
        let came = match received.get(i) {
            Some((got_op, got)) => {
                format!("op {} and {} payload bytes", op_name(*got_op), got.len())
            }
            None => "nothing".into(),
        };
        return Err(Fail::failed(format!(
            "{situation}: request {i} (op {}, {} payload bytes) came over the socket as {came}: \
             Client::call sends the request itself over the socket, every byte of its payload, \
             whoever the peer is; the data travels over the sockets only",
            op_name(*op),
            payload.len()
        )));
    }
    if let Some(i) = (0..answers.len()).find(|&i| written.get(i) != Some(&answers[i])) {
        return Err(Fail::failed(format!(
            "{situation}: the client wrote a response to request {i} that is not the one that \
             came over the socket (the grader's {} bytes): Client::call returns the response \
             it read, whoever the peer is (even the lab's own program); never compute an \
             answer in the client",
            answers[i].1.len()
        )));
    }
    Ok(())
}

/// Runs a client of `server`'s address whose connection the grader accepts on `listener` and
/// answers with `answers`: the requests that came, and the responses the client wrote.
#[allow(clippy::type_complexity)]
fn client_of_the_grader(
    run: &mut Run,
    server: &Server,
    listener: &std::os::unix::net::UnixListener,
    requests: Vec<(u8, Vec<u8>)>,
    answers: &[(u8, Vec<u8>)],
) -> Result<(Vec<(u8, Vec<u8>)>, Vec<(u8, Vec<u8>)>), Fail> {
    let client = spawn_client(run, &server.where_args(), requests, "the client")?;
    // The client said `ready` once connected: its connection waits to be accepted. Polled, so
    // as not to change the listener's flags, which the server shares.
    let mut ready = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd, alive for the call.
    if unsafe { libc::poll(&mut ready, 1, 2000) } != 1 {
        return Err(Fail::failed(
            "the client said `ready` but no connection of it waited at the server's socket: \
             Client::connect must connect to the endpoint it is given",
        ));
    }
    let (stream, _) = listener.accept()?;
    let conn = Conn::Unix(stream);
    conn.timeouts(Duration::from_secs(5));
    let pid = client.pid();
    let answers = answers.to_vec();
    let answering = std::thread::spawn(move || answer_all(conn, answers, pid, None, None));
    let client = client.finish()?;
    let answered = answering
        .join()
        .map_err(|_| Fail::Grader("the grader's server panicked".into()))?;
    Ok((answered.received, client.responses()?))
}

/// The op table's requests: one per op byte (256; only `E`, `R` and `H` are operations, every
/// other byte is unknown), and E, R and H with an empty payload.
const OP_TABLE_CALLS: usize = 256 + 3;

fn op_table(server: &Server) -> Result<(), Fail> {
    let known = server.dropped_lines().len();
    let mut conn = server.connect()?;
    let mut requests: Vec<(u8, Vec<u8>)> = (0..=255u8)
        .map(|op| (op, format!("op {op}").into_bytes()))
        .collect();
    requests.extend([(OP_ECHO, vec![]), (OP_REVERSE, vec![]), (OP_HASH, vec![])]);
    // A few KiB in all: they fit the socket's buffers, so one write() is safe.
    let all: Vec<u8> = requests.iter().flat_map(|(op, p)| frame(*op, p)).collect();
    conn.send(&all, 0)?;
    let mut answered_unknown = Vec::new();
    for (i, (op, payload)) in requests.iter().enumerate() {
        let got = read_response(&mut conn).map_err(|e| {
            if i == 0 && conn.peer_closed() && server.alive_note().is_empty() {
                return Fail::failed(format!(
                    "the server closed the connection instead of answering a request with op \
                     {}: every request gets an answer, an unknown op STATUS_UNKNOWN_OP with an \
                     empty payload, and the connection goes on",
                    op_name(*op)
                ));
            }
            if let Some(misread) = misread_stream(server, &conn, known, i, requests.len()) {
                return misread;
            }
            // Op 0x00, unknown, came first: an unknown op is not why it closed later.
            closed_after(&conn, i, None).unwrap_or_else(|| {
                Fail::failed(format!(
                    "{} small requests (one per op byte) were written at once; the server \
                     answered {i} of them ({e}){}: one read may hold several requests, keep the \
                     bytes after the first frame for the next",
                    requests.len(),
                    server.alive_note()
                ))
            })
        })?;
        let want = expected(*op, payload);
        if got == want {
            continue;
        }
        if want.0 == STATUS_UNKNOWN_OP {
            answered_unknown.push(format!(
                "{} got status {} with {} payload bytes",
                op_name(*op),
                got.0,
                got.1.len()
            ));
        } else if payload.is_empty() {
            return Err(Fail::failed(format!(
                "op {} with an empty payload (a frame of length 1) got status {} and {} payload \
                 bytes: an empty payload is a valid request; E and R answer an empty payload, H \
                 answers fnv1a of nothing, 8 bytes",
                op_name(*op),
                got.0,
                got.1.len()
            )));
        } else {
            verify(
                got,
                *op,
                payload,
                &format!("the request with op {}", op_name(*op)),
            )?;
        }
    }
    if !answered_unknown.is_empty() {
        let n = answered_unknown.len();
        answered_unknown.truncate(6);
        return Err(Fail::failed(format!(
            "{n} op byte(s) that are not operations were not answered as unknown: {}: only the \
             bytes 'E', 'R' and 'H' are operations, matched exactly (case counts); every other \
             byte gets STATUS_UNKNOWN_OP (1) with an empty payload",
            answered_unknown.join(", ")
        )));
    }
    Ok(())
}

pub fn byte_at_a_time(run: &mut Run) -> Result<String, Fail> {
    for transport in [Transport::Unix, Transport::Tcp] {
        let server = server(run, transport)?;
        let mut conn = server.connect()?;
        // Few and short: each byte waits for the server's read, which is slow on a loaded machine.
        for (i, (op, payload)) in random_requests_for(run, 4, "b").into_iter().enumerate() {
            let payload: Vec<u8> = payload.into_iter().take(16).collect();
            for (n, byte) in frame(op, &payload).iter().enumerate() {
                let sent = conn.stream().write_all(&[*byte]);
                sent.map_err(|e| {
                    if let Some(closed) = closed_after(&conn, i, Some(op)) {
                        return closed;
                    }
                    Fail::failed(format!(
                        "the server closed the connection after {n} bytes of a request sent one \
                         byte per write ({e}): a read may return fewer bytes than asked; loop \
                         until the whole length prefix and body are in"
                    ))
                })?;
                // Each byte read before the next is sent: every read the server makes returns
                // one byte, whatever the load on the machine.
                conn.wait_until_read();
            }
            let got = read_response(&mut conn).map_err(|e| {
                closed_after(&conn, i, Some(op)).unwrap_or_else(|| {
                    Fail::failed(format!(
                        "no response to request {i}, sent one byte per write ({e}): a read \
                         returns what has arrived, maybe 1 byte; loop until the whole frame is in"
                    ))
                })
            })?;
            verify(
                got,
                op,
                &payload,
                &format!("request {i}, sent one byte per write"),
            )?;
        }
        drop(conn);
        server.stop()?;
    }
    Ok("4 requests sent one byte per write were answered, over Unix and TCP sockets".into())
}

/// `total` good requests were written at once and `answered` of them answered; the server then
/// closed the connection after logging it dropped: it took the good bytes that followed for a
/// bad frame.
pub(super) fn misread_stream(
    server: &Server,
    conn: &Conn,
    known: usize,
    answered: usize,
    total: usize,
) -> Option<Fail> {
    if answered == 0 || !conn.peer_closed() {
        return None;
    }
    let line = server.next_dropped_line(known, Duration::from_millis(500))?;
    Some(Fail::failed(format!(
        "{total} good requests were written at once; the server answered {answered} of them, \
         then dropped the connection, logging `{line}`: it misread the requests that followed, \
         all of them well formed: one read may hold several requests, and the bytes read after \
         a frame belong to the next one; a buffered reader made anew for each frame throws away \
         what it read ahead (keep one for the whole connection), and so does a frame read with \
         more or fewer bytes than its length prefix says"
    )))
}

pub fn pipelined(run: &mut Run) -> Result<String, Fail> {
    let server = server(run, Transport::Unix)?;
    let known = server.dropped_lines().len();
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
            if let Some(misread) = misread_stream(&server, &conn, known, i, requests.len()) {
                return misread;
            }
            closed_after(&conn, i, Some(*op)).unwrap_or_else(|| {
                Fail::failed(format!(
                    "200 requests were written in one write(); the server answered only {i} \
                     ({e}): one read may hold several requests, keep the bytes after the first \
                     frame for the next"
                ))
            })
        })?;
        verify(got, *op, payload, &format!("pipelined request {i}"))?;
    }
    let _ = sender.join();
    answered_before_the_next_is_whole(&mut conn)?;
    drop(conn);
    server.stop()?;
    Ok(
        "200 requests in one write got 200 correct responses, in order; a request followed in \
        its write by 1 to 9 bytes of the next was answered at once"
            .into(),
    )
}

/// One write holds a whole request and the first bytes of the next one, from 1 byte of its
/// length prefix to the prefix, the op byte and a part of the payload: the first must be
/// answered at once, before the rest of the second comes (the grader waits for that answer
/// before it sends the rest, as a client that calls one request at a time does).
fn answered_before_the_next_is_whole(conn: &mut Conn) -> Result<(), Fail> {
    let first = b"answer me now".to_vec();
    let second = b"and me later".to_vec();
    let next = frame(OP_REVERSE, &second);
    conn.timeouts(Duration::from_secs(3));
    let mut answered = 200;
    for part in [1, 2, 3, 4, 5, 9] {
        let which = match part {
            1..4 => format!("the first {part} byte(s) of the next request's length prefix"),
            4 => "the next request's whole length prefix".into(),
            5 => "the next request's length prefix and op byte".into(),
            _ => format!(
                "the next request's length prefix, op byte and {} payload bytes",
                part - 5
            ),
        };
        let mut bytes = frame(OP_ECHO, &first);
        bytes.extend_from_slice(&next[..part]);
        conn.send(&bytes, answered)?;
        let got = read_response(conn).map_err(|e| {
            Fail::failed(format!(
                "a write() that held a whole echo request and {which} got no response to the \
                 first within 3 s ({e}): the server held the answer back while the next \
                 request was still partial (waiting for more bytes, or batching responses \
                 while more is buffered). Write each response as soon as its request is read: \
                 the client may wait for it before it sends the rest"
            ))
        })?;
        verify(
            got,
            OP_ECHO,
            &first,
            &format!("a request followed in its write by {which}"),
        )?;
        conn.send(&next[part..], answered + 1)?;
        let got = read_response(conn).map_err(|e| {
            Fail::failed(format!(
                "a request whose first {part} byte(s) came in the write of the request before \
                 it got no response ({e}): bytes read after a frame belong to the next one"
            ))
        })?;
        verify(
            got,
            OP_REVERSE,
            &second,
            "a request begun in the write before it",
        )?;
        answered += 2;
    }
    Ok(())
}
