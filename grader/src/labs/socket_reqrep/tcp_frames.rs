//! Requests answered over TCP, and large responses leaving whole, up to the limit.

use std::time::{Duration, Instant};

use super::client_procs::{ClientProc, spawn_client};
use super::forced;
use super::observe;
use super::programs::{Server, server};
use super::protocol::{
    expected, frame, median, random_requests_for, read_response, timed_calls, verify,
};
use super::{MAX_PAYLOAD, OP_ECHO, OP_HASH, STATUS_OK, Transport};
use crate::engine::tracer::{Action, Call, Tracer};
use crate::engine::{Fail, Run};

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
    // Read once the client has gone: the copy keeps the connection's counts.
    let connection = observe::tcp_connection_copy(client.pid(), second.port);
    let client = client.finish()?;
    client.verify()?;
    responses_came_over_tcp(run, connection, &client, second.port)?;
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
    // One past the largest payload write_frame may copy, the first it must not.
    // A copied payload is told once every size has left at once: a frame held back by Nagle's
    // algorithm is the bigger fault, and is named first.
    let mut copied = None;
    for payload in [LARGEST_COPIED_PAYLOAD + 1, 100_000, 8 << 20, MAX_PAYLOAD] {
        let copy = frames_leave_whole(run, &server, payload)?;
        copied = copied.or(copy);
    }
    if let Some(fail) = copied {
        return Err(fail);
    }
    server.stop()?;
    Ok(format!(
        "40 random requests were answered correctly over TCP on 127.0.0.1, by a client connected \
         over TCP; calls of 16 and 4000 bytes took {} and {} ms",
        took[0], took[1]
    ))
}

/// The largest payload write_frame may copy behind its prefix (its doc): past it, the copy
/// costs more than the write() it saves.
const LARGEST_COPIED_PAYLOAD: usize = 64 << 10;

/// Over TCP, a response of more than 64 KiB, up to the largest, must leave at once too: on a
/// connection without
/// TCP_NODELAY (read on the server's socket), the first write() of its frame must hold the whole
/// frame. On loopback the peer's acknowledgements come fast for large frames, so this is seen
/// in the call, not in the time: the handler is held at the entry of its first `send()` of the
/// response. Skipped (with a note) when no thread of the server's own serves the client, it
/// writes with another call, or the machine allows no tracing.
/// Returns the failure of a payload copied behind its prefix, told after the others.
fn frames_leave_whole(
    run: &mut Run,
    server: &Server,
    payload_len: usize,
) -> Result<Option<Fail>, Fail> {
    let pid = server.pid();
    let before = observe::thread_ids(pid);
    let mut conn = server.connect()?;
    let soon = || Instant::now() + Duration::from_secs(2);
    let not_probed = "how a large response leaves over TCP was not probed";
    let Some((handler, _)) = observe::new_thread_in(pid, &before, &forced::READS, soon()) else {
        run.note(format!(
            "no thread of the server's own was seen reading a client: {not_probed}"
        ));
        return Ok(None);
    };
    let send = Call::any(libc::SYS_sendto);
    let Some(mut tracer) = Tracer::attach_thread(pid, handler, send, Action::Hold)? else {
        run.note(format!("the server could not be traced: {not_probed}"));
        return Ok(None);
    };
    // A random block repeated: random bytes are costly to draw by the MiB.
    let block = run.random_bytes(payload_len.min(100_000));
    let mut payload = block.repeat(payload_len.div_ceil(block.len()));
    payload.truncate(payload_len);
    let known = server.dropped_lines().len();
    conn.send(&frame(OP_ECHO, &payload), 0)?;
    let whole = (payload_len + 5) as u64;
    let mut verdict = Ok(());
    let mut copied = None;
    if tracer.held_before(soon())? {
        let args = observe::write_args(pid, handler);
        if let Some((_, count)) = args
            && count >= whole
            && payload_len > LARGEST_COPIED_PAYLOAD
        {
            copied = Some(Fail::failed(format!(
                "over TCP, the server's first send() of a response frame of {whole} bytes (the \
                 echo of a {payload_len}-byte payload) held the whole frame in one buffer: the \
                 payload was copied behind its 5-byte prefix, a second copy of the whole \
                 payload in memory and a copy more for every large response. write_frame \
                 writes the prefix and then the payload as they are (with TCP_NODELAY on the \
                 connection, so that the payload does not wait), or both with one writev() \
                 (write_vectored), never copying a payload of more than 64 KiB, whatever its \
                 size, into a new buffer just to put 5 bytes in front of it"
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
    verdict.map(|()| copied)
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

/// The responses the client wrote must have come over its TCP connection to `port`
/// (`connection`, a copy of it): that connection received at least their frames' bytes
/// (`TCP_INFO`), or the calls went another way while it stood idle.
fn responses_came_over_tcp(
    run: &mut Run,
    connection: Option<std::os::fd::OwnedFd>,
    client: &ClientProc,
    port: u16,
) -> Result<(), Fail> {
    let Some(received) = connection.as_ref().and_then(observe::tcp_bytes_received) else {
        run.note("the client's TCP connection could not be read: its bytes not counted");
        return Ok(());
    };
    let answers: u64 = client
        .requests
        .iter()
        .map(|(op, payload)| 5 + expected(*op, payload).1.len() as u64)
        .sum();
    if received < answers {
        return Err(Fail::failed(format!(
            "the client, given --tcp {port}, wrote the right answers to its {} calls, but its \
             TCP connection to that port received {received} bytes, where the response frames \
             take {answers} (TCP_INFO, read on a copy of the client's socket): the calls went \
             another way while that connection stood idle. Every call goes over the \
             connection to the endpoint given, and over nothing else",
            client.requests.len()
        )));
    }
    Ok(())
}
