//! Requests answered right: the protocol's answers over both transports, in whatever pieces the
//! stream delivers them, to clients the grader writes itself or finds on the machine.

use std::io::Write;
use std::time::{Duration, Instant};

use rand::RngExt;

use super::forced;
use super::half_close;
use super::observe;
use super::programs::{Ran, Server, external, server, spawn_client};
use super::protocol::{
    Conn, closed_after, expected, frame, median, op_name, random_requests_for, read_frame_counted,
    read_response, timed_calls, verify,
};
use super::{MAX_PAYLOAD, OP_ECHO, OP_HASH, OP_REVERSE, STATUS_OK, STATUS_UNKNOWN_OP, Transport};
use crate::engine::tracer::{Action, Call, Tracer};
use crate::engine::{Fail, Run};

pub fn unix_requests(run: &mut Run) -> Result<String, Fail> {
    let server = server(run, Transport::Unix)?;
    // The server alone first, with the grader's client: then what the student's client gets
    // wrong is the client's.
    op_table(&server)?;
    let requests = random_requests_for(run, 40, "c");
    let client = spawn_client(run, &server.where_args(), requests, "the client")?.finish()?;
    client.verify()?;
    // The op table's calls and the stop's own.
    server.stop_counting(OP_TABLE_CALLS + 1, &client)?;
    Ok(
        "40 random requests were answered correctly over a Unix socket, all of them read by the \
        server; every op byte but E, R and H got status 1, and empty payloads were answered"
            .into(),
    )
}

/// One request per op byte (256), and E, R and H with an empty payload: only `E`, `R` and `H`
/// are operations, every other byte is unknown.
/// The op table's requests: one per op byte, and E, R and H with an empty payload.
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

pub fn tcp_requests(run: &mut Run) -> Result<String, Fail> {
    let server = server(run, Transport::Tcp)?;
    let addresses = observe::listening_on(server.pid(), server.port);
    if let Some(wide) = addresses.iter().find(|a| !observe::is_loopback(a)) {
        return Err(Fail::failed(format!(
            "the server listens on {}:{}, not on the loopback address it was given: bind the \
             endpoint's address (127.0.0.1), so that only this machine can connect",
            observe::address_name(wide),
            server.port
        )));
    }
    if addresses.is_empty() {
        run.note("the server's listening socket was not found in /proc/PID/net/tcp");
    }
    // Port 0 is any free port: a second server, started while the first listens, gets
    // another one.
    let second = self::server(run, Transport::Tcp).map_err(|fail| match fail {
        Fail::Failed(m) => Fail::failed(format!(
            "a second server given --tcp 0, started while the first listened on port {}: {m}",
            server.port
        )),
        other => other,
    })?;
    if second.port == server.port {
        return Err(Fail::failed(format!(
            "two servers given --tcp 0 both reported port {}: port 0 means any free port, \
             which the system picks; report the port local_addr() says",
            server.port
        )));
    }
    second.ping()?;
    let requests = random_requests_for(run, 40, "c");
    let client = spawn_client(run, &second.where_args(), requests, "the client")?;
    // Connected (it said ready): over TCP, to the port it was given.
    if !observe::connected_to(client.pid(), second.port) {
        return Err(Fail::failed(format!(
            "the client, given --tcp {} and connected (it said ready), holds no TCP connection \
             to that port (/proc/PID/net/tcp): the calls must go over TCP to the port given, not \
             another way (a Unix socket, abstract or not, is another transport)",
            second.port
        )));
    }
    let client = client.finish()?;
    client.verify()?;
    // The ping above and the stop's own.
    second.stop_counting(2, &client)?;

    // Calls one after the other, over TCP and, for comparison, over a Unix socket to the same
    // program: a response written in two pieces without TCP_NODELAY waits for the client's
    // delayed acknowledgement, about 40 ms each time. A few bytes, and a few KiB (more than a
    // small buffer, less than a TCP segment on loopback). The delay comes back in every round;
    // a busy machine's, not: a gap seen in one round is measured again, up to three rounds.
    let baseline = self::server(run, Transport::Unix)?;
    let mut took = Vec::new();
    for size in [16, 4000] {
        let mut rounds = 0;
        let (tcp, unix) = loop {
            rounds += 1;
            let unix = median(timed_calls(&mut baseline.connect()?, 9, size)?);
            let tcp = median(timed_calls(&mut server.connect()?, 9, size)?);
            run.note(format!(
                "median call of {size} bytes: {tcp:?} over TCP, {unix:?} over a Unix socket"
            ));
            if tcp <= unix + Duration::from_millis(25) || rounds == 3 {
                break (tcp, unix);
            }
        };
        if tcp > unix + Duration::from_millis(25) {
            return Err(Fail::failed(format!(
                "a call with a payload of {size} bytes over TCP took {} ms (the median of 9, in \
                 each of 3 rounds), one over a Unix socket to the same program {} ms: a frame \
                 written in pieces waits for the peer's acknowledgement of the first piece \
                 (Nagle's algorithm, about 40 ms): set TCP_NODELAY on every TCP connection (set_nodelay(true) after connect \
                 and after accept), or write every frame, whatever its size, with a single \
                 write()",
                tcp.as_millis(),
                unix.as_millis()
            )));
        }
        took.push(tcp.as_millis());
    }
    baseline.stop()?;
    // A frame just past the socket buffers' usual sizes, the 8 MiB payload write_frame's doc
    // names (half the largest: not copied either), and the largest frame there is.
    for payload in [100_000, 8 << 20, MAX_PAYLOAD] {
        frames_leave_whole(run, &server, payload)?;
    }
    server.stop()?;
    Ok(format!(
        "40 random requests were answered correctly over TCP on 127.0.0.1, by a client connected \
         over TCP; calls of 16 and 4000 bytes took {} and {} ms",
        took[0], took[1]
    ))
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
fn misread_stream(
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

pub fn large_payloads(run: &mut Run) -> Result<String, Fail> {
    for transport in [Transport::Unix, Transport::Tcp] {
        let server = server(run, transport)?;
        // Each far larger than a socket's buffers: no read or write moves one whole.
        let requests = vec![
            (OP_ECHO, run.random_bytes(2 << 20)),
            (OP_REVERSE, run.random_bytes(3 << 20)),
            (OP_HASH, run.random_bytes(2 << 20)),
        ];
        let client = spawn_client(run, &server.where_args(), requests, "the client")?.finish()?;
        client.verify()?;
        half_close::half_closed_client(run, &server)?;
        hash_of_every_byte(run, &server)?;
        match transport {
            Transport::Unix => stopped_mid_write(run, &server)?,
            Transport::Tcp => stopped_mid_small_frames(run, &server)?,
        }
        // A small frame and a large one: a server may write the two kinds differently.
        for len in [1000, 3 << 20] {
            forced::short_response_write(run, &server, transport.describe(), len)?;
        }
        server.stop()?;
    }
    Ok(
        "2 and 3 MiB payloads went both ways over Unix and TCP sockets; two large payloads one \
        byte apart got each its own hash; a response came whole through a stop and resume of the \
        server"
            .into(),
    )
}

/// Two hash requests of the same large length, one after the other, the second the first with
/// one byte changed somewhere in its middle: each answer is fnv1a of its own payload, whatever
/// was asked before (an answer remembered by length, or by a part of the payload, is stale).
fn hash_of_every_byte(run: &mut Run, server: &Server) -> Result<(), Fail> {
    let len = (1 << 20) + run.rng().random_range(0..(2 << 20));
    let first = run.random_bytes(len);
    let mut second = first.clone();
    let changed = run.rng().random_range(len / 4..len * 3 / 4);
    second[changed] ^= 1 << run.rng().random_range(0..8);
    let mut conn = server.connect()?;
    let mut answers = Vec::new();
    for (i, payload) in [&first, &second].into_iter().enumerate() {
        conn.send(&frame(OP_HASH, payload), i)?;
        let got = read_response(&mut conn).map_err(|e| {
            closed_after(&conn, i, Some(OP_HASH)).unwrap_or_else(|| {
                Fail::failed(format!(
                    "a hash request of {len} bytes got no response ({e}){}",
                    server.alive_note()
                ))
            })
        })?;
        answers.push(got);
    }
    if answers[1] == answers[0] {
        return Err(Fail::failed(format!(
            "two hash requests of {len} bytes, one after the other, the second the same as the \
             first but for byte {changed}, got the same answer (fnv1a of the first), where \
             fnv1a of the second is {:016x}: H answers fnv1a of the payload it was sent, every \
             byte of it, every time; an answer remembered for another payload (a cache keyed by \
             the length, or by a part of the payload) is a wrong answer",
            super::protocol::fnv1a(&second)
        )));
    }
    for (got, (payload, which)) in answers
        .into_iter()
        .zip([(&first, "first"), (&second, "second")])
    {
        verify(
            got,
            OP_HASH,
            payload,
            &format!("the {which} of two hash requests of {len} bytes one byte apart"),
        )?;
    }
    Ok(())
}

/// The server, blocked writing a large response nobody reads yet, is stopped and resumed: the
/// write() it was in returns a short count, and the rest must still follow.
fn stopped_mid_write(run: &mut Run, server: &Server) -> Result<(), Fail> {
    const LEN: usize = 3 << 20;
    let payload = run.random_bytes(LEN);
    let mut conn = server.connect()?;
    conn.send(&frame(OP_REVERSE, &payload), 0)?;
    let blocked = observe::writing_a_socket(server.pid(), Instant::now() + Duration::from_secs(5));
    if blocked {
        observe::stop_and_resume(server.pid())?;
    } else {
        run.note("the server was never seen blocked writing the 3 MiB response");
    }
    conn.timeouts(Duration::from_secs(2));
    match read_frame_counted(&mut conn) {
        Ok(Ok(Some(got))) => verify(
            got,
            OP_REVERSE,
            &payload,
            "a 3 MiB reverse request, answered through a stop and resume",
        ),
        Ok(Err(short)) if blocked => Err(Fail::failed(format!(
            "the response to a 3 MiB reverse request stopped short: {short}, after the server \
             was stopped and resumed (SIGSTOP, SIGCONT, as a debugger or the shell's job control \
             do) while it was blocked writing it: a write() interrupted that way returns a short \
             count; write every byte (write_all, or loop on write())"
        ))),
        Ok(Err(short)) => Err(Fail::failed(format!(
            "the response to a 3 MiB reverse request stopped short: {short}{}",
            server.alive_note()
        ))),
        Ok(Ok(None)) | Err(_) => Err(Fail::failed(format!(
            "no response to a 3 MiB reverse request{}",
            server.alive_note()
        ))),
    }
}

/// The server, blocked writing responses of 48 KiB (each small enough to fit a socket's buffer)
/// that nobody reads yet, is stopped and resumed: the write() it was in returns a short count
/// for that frame too, and the rest must still follow.
fn stopped_mid_small_frames(run: &mut Run, server: &Server) -> Result<(), Fail> {
    const CALLS: usize = 200;
    const LEN: usize = 48 << 10;
    let body = run.random_bytes(LEN - 8);
    let payload = |i: usize| {
        let mut p = (i as u64).to_be_bytes().to_vec();
        p.extend_from_slice(&body);
        p
    };
    let known = server.dropped_lines().len();
    let mut conn = server.connect()?;
    let all: Vec<u8> = (0..CALLS)
        .flat_map(|i| frame(OP_ECHO, &payload(i)))
        .collect();
    let Conn::Tcp(writer) = conn.try_clone()? else {
        unreachable!("a TCP connection")
    };
    let mut writer = writer;
    // Written from a thread: the server stops reading while its responses are not read.
    let sender = std::thread::spawn(move || writer.write_all(&all));
    let pid = server.pid();
    let mut stops = 0;
    conn.timeouts(Duration::from_secs(2));
    let mut result = Ok(());
    for i in 0..CALLS {
        // Once at the start, and once more after some responses were read if the server is
        // blocked writing again (its buffers may hold the rest by then).
        let patience = match i {
            0 => Duration::from_secs(2),
            _ if i == CALLS / 2 => Duration::from_millis(20),
            _ => Duration::ZERO,
        };
        if !patience.is_zero() && observe::writing_a_socket(pid, Instant::now() + patience) {
            observe::stop_and_resume(pid)?;
            stops += 1;
        }
        let want = payload(i);
        let got = read_frame_counted(&mut conn);
        if matches!(got, Ok(Ok(None)))
            && let Some(misread) = misread_stream(server, &conn, known, i, CALLS)
        {
            result = Err(misread);
            break;
        }
        let problem = match got {
            Ok(Ok(Some((STATUS_OK, got)))) if got == want => continue,
            Ok(Ok(Some((status, got)))) => format!(
                "it was status {status} with {} payload bytes, {} of them the echo's first",
                got.len(),
                got.iter().zip(&want).take_while(|(a, b)| a == b).count()
            ),
            Ok(Err(short)) => format!("it stopped short: {short}"),
            Ok(Ok(None)) => "the server closed the connection instead".into(),
            Err(e) => format!("it did not come whole ({e})"),
        };
        if stops == 0 {
            result = Err(Fail::failed(format!(
                "response {i} of {CALLS} pipelined echo requests of 48 KiB over TCP was wrong: \
                 {problem}{}: each request gets its whole response, in order, however many \
                 requests come together",
                server.alive_note()
            )));
            break;
        }
        result = Err(Fail::failed(format!(
            "response {i} of {CALLS} pipelined echo requests of 48 KiB over TCP was wrong: \
             {problem}{}. The server had been stopped and resumed (SIGSTOP, SIGCONT, as a \
             debugger or job control do) {stops} time(s) while blocked writing responses: a \
             write() interrupted that way returns a short count, also for a frame small enough \
             to fit a socket's buffer, and the rest of that frame must still be written; write \
             every byte of every frame (write_all, or loop on write())",
            server.alive_note()
        )));
        break;
    }
    // Ends the sender's write too, if the server no longer reads.
    conn.shutdown(std::net::Shutdown::Both);
    drop(conn);
    let _ = sender.join();
    if stops == 0 {
        run.note("the server was never seen blocked writing the 48 KiB responses");
    }
    result
}

/// A Python client: for each server given (`unix PATH` or `tcp PORT`), sends each framed
/// request, reads each framed response, prints them.
const PYTHON_CLIENT: &str = r#"
import socket, struct, sys
out = sys.stdout.buffer
args = sys.argv[1:]
for kind, where in zip(args[0::2], args[1::2]):
    if kind == "unix":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(where)
    else:
        s = socket.create_connection(("127.0.0.1", int(where)))
    s.settimeout(5)
    def recv_exact(n):
        data = b""
        while len(data) < n:
            chunk = s.recv(n - len(data))
            if not chunk:
                raise SystemExit("connection closed")
            data += chunk
        return data
    for op, payload in [(b"E", b"from python"), (b"R", b"nohtyp"), (b"H", b"hash me")]:
        s.sendall(struct.pack(">I", len(payload) + 1) + op + payload)
        (length,) = struct.unpack(">I", recv_exact(4))
        out.write(struct.pack(">I", length) + recv_exact(length))
    s.close()
out.flush()
"#;

fn python_expected() -> Vec<u8> {
    let mut bytes = Vec::new();
    for (op, payload) in [
        (OP_ECHO, &b"from python"[..]),
        (OP_REVERSE, b"nohtyp"),
        (OP_HASH, b"hash me"),
    ] {
        let (status, answer) = expected(op, payload);
        bytes.extend_from_slice(&((answer.len() + 1) as u32).to_be_bytes());
        bytes.push(status);
        bytes.extend_from_slice(&answer);
    }
    bytes
}

pub fn foreign_clients(run: &mut Run) -> Result<String, Fail> {
    let mut used = vec!["the grader's own client"];
    let mut missing = Vec::new();
    let servers = [server(run, Transport::Unix)?, server(run, Transport::Tcp)?];
    let mut targets = Vec::new();
    for server in &servers {
        // The grader's own client: two requests in a row on one connection.
        let mut conn = server.connect()?;
        let requests = [
            (OP_HASH, b"grader".to_vec()),
            (OP_ECHO, run.random_bytes(3000)),
        ];
        for (i, (op, payload)) in requests.into_iter().enumerate() {
            conn.send(&frame(op, &payload), i)?;
            let got = read_response(&mut conn).map_err(|e| {
                closed_after(&conn, i, Some(op)).unwrap_or_else(|| {
                    Fail::failed(format!(
                        "the grader's own client got no response ({e}): follow the frame format \
                         exactly (u32 big-endian length of the status and the payload)"
                    ))
                })
            })?;
            verify(got, op, &payload, "the grader's own client")?;
        }
        targets.push(match server.transport {
            Transport::Unix => ("unix", server.path.display().to_string()),
            Transport::Tcp => ("tcp", server.port.to_string()),
        });
    }
    // One Python process for both servers: starting Python is the slow part.
    let limit = Duration::from_secs(5);
    let mut args = vec!["-c", PYTHON_CLIENT];
    for (kind, target) in &targets {
        args.extend([*kind, target.as_str()]);
    }
    match external("python3", &args, &[], limit)? {
        Some(ran) => {
            let one = python_expected();
            let out = &ran.stdout;
            for (i, (kind, _)) in targets.iter().enumerate() {
                let part = out.get(i * one.len()..(i + 1) * one.len());
                if part != Some(&one[..]) {
                    let advice = "follow the frame format exactly (u32 big-endian length of \
                                  the status and the payload)";
                    let why = match &ran.failure {
                        // Its last words tell a server that broke the protocol from a
                        // client that could not run here.
                        Some(failure) => format!(
                            "; the client failed ({failure}): either the server broke the \
                             protocol ({advice}) or Python cannot run here"
                        ),
                        None => format!(": {advice}"),
                    };
                    return Err(Fail::failed(format!(
                        "a Python client over {kind} did not get the {} bytes of answers \
                         expected ({} bytes came for both servers){why}",
                        one.len(),
                        out.len()
                    )));
                }
            }
            used.push("Python");
        }
        None => missing.push("python3"),
    }
    for (kind, target) in &targets {
        // socat forwards stdin to the socket and the answer back to stdout.
        let address = match *kind {
            "unix" => format!("UNIX-CONNECT:{target}"),
            _ => format!("TCP:127.0.0.1:{target}"),
        };
        let request = frame(OP_REVERSE, b"socat");
        match external("socat", &["-t", "2", "-", &address], &request, limit)? {
            Some(Ran { stdout: out, .. }) => {
                let mut want = 6u32.to_be_bytes().to_vec();
                want.push(STATUS_OK);
                want.extend_from_slice(b"tacos");
                if out != want {
                    return Err(Fail::failed(format!(
                        "a socat client over {kind} got {out:?}, expected {want:?}"
                    )));
                }
                used.push("socat");
            }
            None => missing.push("socat"),
        }
    }
    for server in servers {
        server.stop()?;
    }
    used.dedup();
    missing.dedup();
    let mut message = format!("answered {}", used.join(", "));
    if !missing.is_empty() {
        message.push_str(&format!(
            " ({} not installed here: skipped)",
            missing.join(", ")
        ));
    }
    Ok(message)
}

/// Over TCP, a response of more than 64 KiB, up to the largest, must leave at once too: on a
/// connection without
/// TCP_NODELAY (read on the server's socket), the first write() of its frame must hold the whole
/// frame. On loopback the peer's acknowledgements come fast for large frames, so this is seen
/// in the call, not in the time: the handler is held at the entry of its first `send()` of the
/// response. Skipped (with a note) when no thread of the server's own serves the client, it
/// writes with another call, or the machine allows no tracing.
fn frames_leave_whole(run: &mut Run, server: &Server, payload_len: usize) -> Result<(), Fail> {
    let pid = server.pid();
    let before = observe::thread_ids(pid);
    let mut conn = server.connect()?;
    let soon = || Instant::now() + Duration::from_secs(2);
    let not_probed = "how a large response leaves over TCP was not probed";
    let Some((handler, _)) = observe::new_thread_in(pid, &before, &forced::READS, soon()) else {
        run.note(format!(
            "no thread of the server's own was seen reading a client: {not_probed}"
        ));
        return Ok(());
    };
    let send = Call::any(libc::SYS_sendto);
    let Some(mut tracer) = Tracer::attach_thread(pid, handler, send, Action::Hold)? else {
        run.note(format!("the server could not be traced: {not_probed}"));
        return Ok(());
    };
    // A random block repeated: random bytes are costly to draw by the MiB.
    let block = run.random_bytes(payload_len.min(100_000));
    let mut payload = block.repeat(payload_len.div_ceil(block.len()));
    payload.truncate(payload_len);
    let known = server.dropped_lines().len();
    conn.send(&frame(OP_ECHO, &payload), 0)?;
    let whole = (payload_len + 5) as u64;
    let mut verdict = Ok(());
    if tracer.held_before(soon())? {
        let args = observe::write_args(pid, handler);
        if let Some((_, count)) = args
            && count >= whole
            && payload_len >= 1 << 20
        {
            verdict = Err(Fail::failed(format!(
                "over TCP, the server's first send() of a response frame of {whole} bytes (the \
                 echo of a {payload_len}-byte payload) held the whole frame in one buffer: the \
                 payload was copied behind its 5-byte prefix, a second copy of the whole \
                 payload in memory and a copy more for every large response. write_frame \
                 writes the prefix and then the payload as they are (with TCP_NODELAY on the \
                 connection, so that the payload does not wait), or both with one writev() \
                 (write_vectored), never copying the payload into a new buffer just to put 5 \
                 bytes in front of it"
            )));
        }
        if let Some((fd, count)) = args
            && count < whole
        {
            match observe::tcp_nodelay(pid, fd) {
                Some(false) => {
                    verdict = Err(Fail::failed(format!(
                        "over TCP, the server began a response frame of {whole} bytes with a \
                         write of {count} bytes, on a connection without TCP_NODELAY (read on its \
                         socket): the rest of the frame may wait for the peer's acknowledgement \
                         of that piece (Nagle's algorithm, about 40 ms on a network, whatever \
                         the frame's size): set TCP_NODELAY on every TCP connection \
                         (set_nodelay(true) after connect and after accept), or write every \
                         frame, whatever its size, with a single write()"
                    )));
                }
                Some(true) => {}
                None => run.note(format!(
                    "the server's socket could not be read: {not_probed}"
                )),
            }
        }
        tracer.release();
    } else {
        drop(tracer);
        run.note(format!(
            "the server's handler wrote no response with send(): {not_probed}"
        ));
    }
    let got = read_response(&mut conn).map_err(|e| {
        if payload_len == MAX_PAYLOAD {
            return unanswered_at_the_limit(server, known, &payload, &e);
        }
        Fail::failed(format!(
            "no response to a {payload_len}-byte echo request over TCP ({e}){}",
            server.alive_note()
        ))
    })?;
    verify(
        got,
        OP_ECHO,
        &payload,
        &format!("a {payload_len}-byte echo request over TCP"),
    )?;
    verdict
}

/// No response to an echo of exactly MAX_PAYLOAD bytes, the edge: what the server did instead,
/// from its log (a refusal of its own, kind=too-long, or another drop), and, for a refusal,
/// which frame it refused, probed with a hash of MAX_PAYLOAD bytes (a request at the limit whose
/// response is 8 bytes): answered, the server accepts the request at the limit and refused its
/// own response; refused too, it refused the request.
fn unanswered_at_the_limit(
    server: &Server,
    known: usize,
    payload: &[u8],
    error: &std::io::Error,
) -> Fail {
    let edge = format!(
        "an echo request with a payload of exactly MAX_PAYLOAD ({MAX_PAYLOAD} bytes, the largest \
         allowed: the edge) got no response over TCP ({error})"
    );
    let rule = "one byte past MAX_PAYLOAD must be refused, but exactly MAX_PAYLOAD must be \
                served both ways: a frame body is the op or status byte and the payload, so \
                MAX_BODY = MAX_PAYLOAD + 1, for requests and responses (refuse a body only when \
                it is longer than MAX_BODY, in read_frame and in write_frame)";
    let alive = server.alive_note();
    if !alive.is_empty() {
        return Fail::failed(format!("{edge}{alive}"));
    }
    let line = match server.next_dropped_line(known, Duration::from_millis(500)) {
        Some(line) if super::programs::line_kind(&line) == "too-long" => line,
        Some(line) => {
            return Fail::failed(format!(
                "{edge}: the server ended the connection and logged `{line}`; {rule}"
            ));
        }
        None => {
            return Fail::failed(format!(
                "{edge}: the server ended the connection without a response and logged \
                 nothing; {rule}"
            ));
        }
    };
    let hashed = server.connect().ok().and_then(|mut conn| {
        conn.timeouts(Duration::from_secs(3));
        conn.send(&frame(OP_HASH, payload), 0).ok()?;
        read_response(&mut conn).ok()
    });
    let which = match hashed {
        Some((STATUS_OK, hash)) if hash.len() == 8 => {
            "a hash request of the same MAX_PAYLOAD bytes (an 8-byte response) was answered, so \
             the request at the limit is accepted and what the server refused is its own \
             response of MAX_PAYLOAD bytes (write_frame's guard)"
        }
        _ => {
            "a hash request of the same MAX_PAYLOAD bytes (an 8-byte response) got no answer \
             either, so what the server refused is the request at the limit (read_frame's limit, \
             or the limit serve_client gives it)"
        }
    };
    Fail::failed(format!(
        "{edge}: the server ended the connection and logged `{line}`, a refusal of its own at \
         the limit; {which}. {rule}"
    ))
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
