//! The student's client against servers of the grader's: every call goes over the socket and
//! returns what the server sent, and a server that fails shows as the error the API names.

use std::net::{Shutdown, TcpListener};
use std::time::{Duration, Instant};

use rand::RngExt;

use super::client_procs::{spawn_client, start_client};
use super::grader_server::{GraderListener, answer_all};
use super::programs::said;
use super::protocol::{expected, frame, median, op_name, random_requests_for, read_frame};
use super::{
    MAX_BODY, MAX_PAYLOAD, OP_ECHO, OP_HASH, OP_REVERSE, STATUS_OK, STATUS_UNKNOWN_OP, Transport,
};
use super::{forced, forced_client};
use crate::engine::{Fail, Run};

/// The student's client against a server of the grader's: what the client writes must be what
/// came back over the socket, for requests that went over it, one request per call.
pub fn client_over_socket(run: &mut Run) -> Result<String, Fail> {
    const REQUESTS: usize = 20;
    const LARGE: usize = 12;
    // A small request whose response the grader's server holds back while it watches how the
    // client waits.
    const WAIT_JUDGED: usize = 1;
    // A response the grader's server sends with status 1 and a payload.
    const ERROR_WITH_PAYLOAD: usize = 10;
    // The copies of request 4, each answered as request 4 was, then one more answered otherwise
    // (the server's state changed): an answer confirmed twice is still no answer to keep.
    const AGREEING_REPEATS: [usize; 2] = [8, 13];
    const CHANGED_REPEAT: usize = 17;
    // How long the client's small requests took from their first byte to their last, over a
    // Unix socket and over TCP.
    let mut spread = Vec::new();
    for transport in [Transport::Unix, Transport::Tcp] {
        let kind = transport.describe();
        let (listener, at) = GraderListener::bind(run, transport)?;
        let mut requests = random_requests_for(run, REQUESTS, "g");
        // Repeats, which the grader's server answers differently each time (2), and the same
        // every time (4), as a real server does: a client that keeps an answer once the server
        // has confirmed it sends the third copy no more.
        requests[7] = requests[2].clone();
        requests[15] = requests[2].clone();
        for i in AGREEING_REPEATS.into_iter().chain([CHANGED_REPEAT]) {
            requests[i] = requests[4].clone();
        }
        // The edges of a payload's length, which a client might think it can answer itself:
        // nothing at all, and a hash of far more than a socket's buffer.
        requests[3] = (OP_ECHO, Vec::new());
        requests[9] = (OP_REVERSE, Vec::new());
        requests[5] = (OP_HASH, run.random_bytes(256 << 10));
        // A big hash, asked twice: both must go to the server, however costly. Over a Unix
        // socket, of the largest payload (a random block repeated: random bytes are costly to
        // draw by the MiB).
        let block = run.random_bytes(64 << 10);
        let big = match transport {
            Transport::Unix => MAX_PAYLOAD,
            Transport::Tcp => 2 << 20,
        };
        requests[18] = (OP_HASH, block.repeat(big / block.len()));
        requests[19] = requests[18].clone();
        // Far larger than a Unix socket's buffer: the client blocks writing it, and is stopped
        // and resumed there.
        let hold_at = (transport == Transport::Unix).then_some(LARGE);
        let judge_wait_at = (transport == Transport::Unix).then_some(WAIT_JUDGED);
        // A large echo, over TCP of a size of its own, answered with random bytes of the
        // request's length: what the client writes is what came, even when it looks like an
        // echo's answer.
        let large = match transport {
            Transport::Unix => 1 << 20,
            Transport::Tcp => (1 << 20) + run.rng().random_range(1..(2 << 20)),
        };
        requests[LARGE] = (OP_ECHO, run.random_bytes(large));
        // Random bytes no client can compute; now and then status 1, which the client must pass
        // on as it came.
        // The first of the big hashes is answered with status 0, every seed: a client may keep
        // only such answers.
        let mut answers: Vec<(u8, Vec<u8>)> = (0..REQUESTS)
            .map(|i| {
                if i == LARGE {
                    return (STATUS_OK, run.random_bytes(large));
                }
                // Status 1 with a payload, every seed: what the server sent, the client returns,
                // whatever the status.
                if i == ERROR_WITH_PAYLOAD {
                    let len = run.rng().random_range(1..64);
                    return (STATUS_UNKNOWN_OP, run.random_bytes(len));
                }
                if i != 18 && run.rng().random_range(0..4) == 0 {
                    return (STATUS_UNKNOWN_OP, Vec::new());
                }
                let len = run.rng().random_range(1..64);
                (STATUS_OK, run.random_bytes(len))
            })
            .collect();
        for i in AGREEING_REPEATS {
            answers[i] = answers[4].clone();
        }
        let len = run.rng().random_range(8..64);
        answers[CHANGED_REPEAT] = (STATUS_OK, run.random_bytes(len));
        let mut client = spawn_client(run, &at, requests, "the client")?;
        // The client says `ready` once connected, so its connection is already queued.
        let conn = listener
            .accept_within(Duration::from_secs(2))?
            .ok_or_else(|| {
                Fail::failed(format!(
                    "the client said `ready` but never connected to the grader's server over \
                 {kind} ({}): Client::connect must connect to the endpoint it is given, and \
                 every call must go over that connection",
                    at.join(" ")
                ))
            })?;
        let closer = conn.try_clone()?;
        let pid = client.pid();
        let answering = {
            let answers = answers.clone();
            std::thread::spawn(move || answer_all(conn, answers, pid, hold_at, judge_wait_at))
        };
        client.proc.send("go", &[])?;
        // The client's last word, watching meanwhile for a second connection: every call goes
        // over the one Client::connect made.
        let mut ended: Option<Instant> = None;
        let last = loop {
            let soon = Instant::now() + Duration::from_millis(20);
            if let Some(message) = client.proc.recv_before(soon)? {
                break Some(message);
            }
            if !answering.is_finished() {
                continue;
            }
            let since = *ended.get_or_insert_with(Instant::now);
            if listener.accept_within(Duration::ZERO)?.is_some() {
                return Err(Fail::failed(format!(
                    "over {kind}, the client opened a second connection to the grader's server: \
                     every call must go over the connection Client::connect made (the \
                     Client's conn), not a new one"
                )));
            }
            if since.elapsed() > Duration::from_secs(3) {
                break None;
            }
        };
        // Ends the answering thread if the client is stuck.
        closer.shutdown(Shutdown::Both);
        let answered = answering
            .join()
            .map_err(|_| Fail::Grader("the grader's server panicked".into()))?;
        if let Some(Fail::Failed(how)) = answered.waited {
            return Err(Fail::failed(format!(
                "over {kind}, with request {WAIT_JUDGED} sent and its response held back by the \
                 grader's server: {how}"
            )));
        }
        if let Some(fail) = answered.waited {
            return Err(fail);
        }
        if let Some((i, short)) = answered.short {
            return Err(Fail::failed(format!(
                "over {kind}, the client's request {i} stopped short: the grader's server got \
                 {short}, after the client was stopped and resumed (SIGSTOP, SIGCONT, as a \
                 debugger or the shell's job control do) while it was blocked writing it: a \
                 write() interrupted that way returns a short count; write every byte of a frame \
                 (write_all, or loop on write())"
            )));
        }
        match last {
            Some(message) if message.kind == "done" => {
                client.proc.wait()?;
            }
            Some(message) => {
                return Err(Fail::failed(format!(
                    "over {kind}, the client said {} instead of `done`, with the grader's server \
                     answering each request",
                    said(&message)
                )));
            }
            None => {
                return Err(Fail::failed(format!(
                    "over {kind}, the client neither finished nor failed within 3 s after its \
                     connection to the grader's server ended ({} requests received)",
                    answered.received.len()
                )));
            }
        }
        let sent = &client.requests;
        let small = answered
            .spread
            .iter()
            .zip(&answered.received)
            .filter(|(_, (_, payload))| payload.len() < 1000)
            .map(|(time, _)| *time)
            .collect();
        spread.push(median(small));
        let received = answered.received;
        // The requests the server got, matched in order against those the client was given.
        let mut missing = Vec::new();
        let mut next = 0;
        for (i, request) in sent.iter().enumerate() {
            if received.get(next) == Some(request) {
                next += 1;
            } else {
                missing.push(i);
            }
        }
        if next < received.len() {
            return Err(Fail::failed(format!(
                "over {kind}, request {next} as the grader's server received it is not the one \
                 in the requests file: send the op and the payload as they are"
            )));
        }
        if !missing.is_empty() {
            let repeats: Vec<(usize, usize)> = missing
                .iter()
                .filter_map(|&i| Some((i, sent[..i].iter().position(|r| *r == sent[i])?)))
                .collect();
            if repeats.len() == missing.len() {
                let (i, j) = repeats[0];
                let earlier = (0..i).filter(|&k| sent[k] == sent[i]).count();
                let agreed = if (0..i)
                    .filter(|&k| sent[k] == sent[i])
                    .all(|k| answers[k] == answers[i])
                {
                    format!(
                        " (it had been sent {earlier} time(s) before, and the server had given \
                         the same answer each time)"
                    )
                } else {
                    String::new()
                };
                return Err(Fail::failed(format!(
                    "over {kind}, the grader's server received {} of the client's {} requests: \
                     request {i}, the same as request {j}, never came{agreed}, yet the client \
                     wrote an answer for it: each call sends its request and reads a new \
                     response, even for a request made before, however often it was answered \
                     alike (a server may answer it differently: no cache)",
                    received.len(),
                    sent.len()
                )));
            }
            let ops: Vec<String> = missing.iter().map(|&i| op_name(sent[i].0)).collect();
            return Err(Fail::failed(format!(
                "over {kind}, the grader's server received {} of the client's {} requests \
                 (requests {missing:?}, ops {} never came), yet the client wrote its answers: \
                 Client::call must send each request over the socket and return the response \
                 the server sent, never compute it itself",
                received.len(),
                sent.len(),
                ops.join(", ")
            )));
        }
        let written = client.responses()?;
        if let Some(i) = written.iter().zip(&answers).position(|(w, a)| w != a) {
            let (op, payload) = &sent[i];
            let (wrote, sent_back) = (&written[i], &answers[i]);
            // Every payload the server's, only statuses wrong: the status was not read.
            let payloads_right = written.len() == answers.len()
                && written.iter().zip(&answers).all(|(w, a)| w.1 == a.1);
            if payloads_right {
                let known = if matches!(*op, OP_ECHO | OP_REVERSE | OP_HASH) {
                    "a known op"
                } else {
                    "an unknown op"
                };
                return Err(Fail::failed(format!(
                    "over {kind}, the client wrote status {} for request {i} (op {}, {known}), \
                     where the grader's server had sent status {} (every payload it wrote was \
                     the server's): the status is the response's first byte, as the server sent it, \
                     whatever the op; Client::call must not derive it from the op, or set it \
                     itself",
                    wrote.0,
                    op_name(*op),
                    sent_back.0
                )));
            }
            // Only the payloads of responses with a status other than 0 missing.
            let error_payloads_dropped = written.len() == answers.len()
                && written
                    .iter()
                    .zip(&answers)
                    .all(|(w, a)| w == a || (w.0 == a.0 && a.0 != STATUS_OK && w.1.is_empty()));
            if error_payloads_dropped {
                return Err(Fail::failed(format!(
                    "over {kind}, the grader's server answered request {i} with status {} and a \
                     payload of {} bytes; the client wrote status {} and an empty payload (every \
                     response with status 0 it wrote as it came): Client::call returns the \
                     response it read, status and payload as the server sent them, whatever the \
                     status; it must not drop the payload of a response that is not OK",
                    sent_back.0,
                    sent_back.1.len(),
                    wrote.0
                )));
            }
            let own = if *op == OP_ECHO && written[i] == (STATUS_OK, payload.clone()) {
                format!(
                    " (it wrote its own request's payload back, where the server had sent {} \
                     other bytes with status 0: an echo's answer is what came over the socket \
                     too)",
                    sent_back.1.len()
                )
            } else if written[i] == expected(*op, payload) {
                " (it wrote the answer the protocol defines, computed by the client)".into()
            } else if let Some(j) = (0..i).find(|&j| sent[j] == sent[i] && answers[j] == written[i])
            {
                format!(
                    " (it wrote the answer the server had given to the same request before, \
                     request {j}: an answer remembered, where the server answered this copy \
                     otherwise; each call returns the response read for it, no cache, even one \
                     that still sends the request)"
                )
            } else {
                String::new()
            };
            return Err(Fail::failed(format!(
                "over {kind}, the client wrote a response to request {i} that is not the one the \
                 grader's server sent{own} (the server answered every request with random bytes \
                 of its own): Client::call must return the response read from the socket, never \
                 one computed by the client"
            )));
        }
    }
    forced_client::short_request_write(run)?;
    forced_client::client_frames_leave_whole(run)?;
    // A request written in pieces without TCP_NODELAY waits for the grader's delayed
    // acknowledgement of the first piece, about 40 ms.
    if let [unix, tcp] = spread[..]
        && tcp > unix + Duration::from_millis(25)
    {
        return Err(Fail::failed(format!(
            "over TCP, the client's small requests took {} ms from their first byte to their \
             last (the median), over a Unix socket {} ms: a frame written in pieces waits for \
             the server's acknowledgement of the first piece (Nagle's algorithm, about 40 ms): \
             set TCP_NODELAY on the client's connection (set_nodelay(true) after connect), or \
             write each frame with a single write()",
            tcp.as_millis(),
            unix.as_millis()
        )));
    }
    Ok(format!(
        "the client sent its {REQUESTS} requests (repeats included, a hash of MAX_PAYLOAD bytes among them) to the grader's server over a \
         Unix socket and over TCP, a 1 MiB one whole through a stop and resume, and wrote the \
         random answers it got back, waiting for them blocked"
    ))
}

/// What the client must report next: `failed` with `kind`, within 5 s. Meanwhile a second
/// connection to `listener` (the grader's server, which hung up) is watched for: a client that
/// connects again and sends its request again is told so. `if_done` explains a `done`.
fn expect_failure(
    client: &mut super::client_procs::ClientProc,
    listener: Option<&GraderListener>,
    kind: &str,
    situation: &str,
    rule: &str,
    if_done: Option<&str>,
) -> Result<(), Fail> {
    let until = Instant::now() + Duration::from_secs(5);
    let message = loop {
        let soon = (Instant::now() + Duration::from_millis(20)).min(until);
        if let Some(message) = client.proc.recv_before(soon)? {
            break Some(message);
        }
        if let Some(listener) = listener
            && let Some(mut again) = listener.accept_within(Duration::ZERO)?
        {
            again.timeouts(Duration::from_secs(2));
            let resent = match read_frame(&mut again) {
                Ok(Some((op, payload))) => format!(
                    " and sent a request over it again (op {}, {} payload bytes)",
                    op_name(op),
                    payload.len()
                ),
                _ => String::new(),
            };
            return Err(Fail::failed(format!(
                "{situation}, the client connected to the grader's server a second time{resent}, \
                 instead of reporting kind={kind}: Client::call makes one request and reads one \
                 response over the connection Client::connect opened, never a new connection \
                 (a request sent again may be done twice); {rule}"
            )));
        }
        if Instant::now() >= until {
            break None;
        }
    };
    match message {
        Some(m) if m.kind == "failed" && m.get("kind") == Some(kind) => {
            client.proc.wait()?;
            Ok(())
        }
        Some(m) if m.kind == "done" && if_done.is_some() => Err(Fail::failed(format!(
            "{situation}, the client said `done`, where `failed` with kind={kind} is expected: \
             {}; {rule}",
            if_done.unwrap_or_default()
        ))),
        Some(m) => Err(Fail::failed(format!(
            "{situation}, the client said {}, where `failed` with kind={kind} is expected: {rule}",
            said(&m)
        ))),
        None => Err(Fail::failed(format!(
            "{situation}, the client neither failed nor finished within 5 s: {rule}"
        ))),
    }
}

/// The client's errors, each provoked by a server of the grader's (or by none).
pub fn client_errors(run: &mut Run) -> Result<String, Fail> {
    let request = vec![(OP_ECHO, b"anyone there?".to_vec())];
    let connect_rule = "a connect() that fails is RpcError::Connect, reported at once";

    forced_client::failed_connect_not_retried(run)?;

    let port = TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port();
    let at = vec!["--tcp".to_string(), port.to_string()];
    let mut client = start_client(run, &at, request.clone(), "the client")?;
    expect_failure(
        &mut client,
        None,
        "connect",
        &format!("with nothing listening on TCP port {port}"),
        connect_rule,
        None,
    )?;

    response_at_the_limit(run, &request)?;

    // The grader's server reads the request, then hangs up without a word, or after a part of
    // its answer.
    let partial = frame(STATUS_OK, b"partial");
    // Far past any buffer a reader might fill first (a socket's, a BufReader's, a first chunk).
    let big = frame(STATUS_OK, &run.random_bytes(1 << 20));
    // An empty frame, then a good response: the empty frame is the response, and an error.
    let mut empty_then_good = vec![0u8; 4];
    empty_then_good.extend_from_slice(&frame(STATUS_OK, b"anyone there?"));
    let cases = [
        (
            "closed",
            None,
            "when the grader's server closed the connection instead of answering",
            "a server that closes the connection before the first byte of a response is \
             RpcError::Closed",
        ),
        (
            "truncated",
            Some(&partial[..1]),
            "when the grader's server sent 1 byte of a response's 4-byte length prefix and \
             closed the connection",
            "end of stream inside a response frame, its length prefix included, is \
             RpcError::Truncated; Closed is only a stream that ends before a response's first \
             byte",
        ),
        (
            "truncated",
            Some(&partial[..3]),
            "when the grader's server sent 3 bytes of a response's 4-byte length prefix and \
             closed the connection",
            "end of stream inside a response frame, its length prefix included, is \
             RpcError::Truncated; Closed is only a stream that ends before a response's first \
             byte",
        ),
        (
            "truncated",
            Some(&partial[..4]),
            "when the grader's server sent a response's whole 4-byte length prefix (a length of \
             8), no byte of its body, and closed the connection",
            "end of stream inside a response frame is RpcError::Truncated, right after its \
             length prefix too (read_frame's `got` counts the bytes of the part being read, so \
             got: 0 there is not \"nothing came\"); Closed is only a stream that ends before a \
             response's first byte",
        ),
        (
            "empty-frame",
            Some(&empty_then_good[..]),
            "when the grader's server answered with an empty frame (a length prefix of 0), then \
             a good response frame, and closed the connection",
            "a response frame needs at least its status byte: a length of 0 is \
             RpcError::EmptyFrame, for responses too, the end of the call, not a keep-alive to \
             skip",
        ),
        (
            "truncated",
            Some(&partial[..7]),
            "when the grader's server sent 7 bytes of a 12-byte response and closed the \
             connection",
            "end of stream inside a response frame is RpcError::Truncated (read_frame's rules \
             hold for responses too)",
        ),
        (
            "truncated",
            Some(&big[..big.len() - 1]),
            "when the grader's server sent a response frame with a body of 1 MiB + 1 bytes, \
             all but its last byte, and closed the connection",
            "end of stream anywhere inside a response frame, however far into a large body, is \
             RpcError::Truncated, not Io: an end of stream is no i/o error (read_exact's \
             UnexpectedEof is one: count what came against the whole length instead, as for a \
             small frame)",
        ),
    ];
    for (kind, part, situation, rule) in cases {
        let (listener, at) = GraderListener::bind(run, Transport::Unix)?;
        let mut client = spawn_client(run, &at, request.clone(), "the client")?;
        let mut conn = listener.accept_client()?;
        client.proc.send("go", &[])?;
        let got = read_frame(&mut conn);
        if !matches!(got, Ok(Some(_))) {
            return Err(Fail::failed(format!(
                "the client sent no request to the grader's server ({}): Client::call must send \
                 each request over the socket",
                match got {
                    Err(e) => e.to_string(),
                    _ => "the connection ended".into(),
                }
            )));
        }
        if let Some(bytes) = part {
            conn.send(bytes, 0)?;
        }
        drop(conn);
        let if_done = (kind == "empty-frame").then_some(
            "it skipped the empty frame and took the frame that followed it for the response",
        );
        expect_failure(&mut client, Some(&listener), kind, situation, rule, if_done)?;
    }
    response_one_past_the_limit(run, &request)?;
    forced_client::client_failed_calls(run)?;
    hung_up_with_an_error(run, &request)?;
    Ok(
        "the client reported kind=connect with no server (Unix and TCP), kind=closed for a \
        server that hung up, kind=io for one that reset the connection or was gone before the \
        request, kind=truncated for a response cut short (in its length prefix and in its \
        body), and kind=too-long for a response one byte over MAX_BODY"
            .into(),
    )
}

/// The grader's server answers a small request with a response of `MAX_BODY` bytes, the largest
/// frame body: the client must take it and write it out as it came (a limit taken from the
/// request's size, or any limit under `MAX_BODY`, refuses a response the protocol allows).
fn response_at_the_limit(run: &mut Run, request: &[(u8, Vec<u8>)]) -> Result<(), Fail> {
    let (listener, at) = GraderListener::bind(run, Transport::Unix)?;
    let mut client = spawn_client(run, &at, request.to_vec(), "the client")?;
    let mut conn = listener.accept_client()?;
    client.proc.send("go", &[])?;
    let Ok(Some((_, sent))) = read_frame(&mut conn) else {
        return Err(Fail::failed(
            "the client sent no request to the grader's server: Client::call must send each \
             request over the socket",
        ));
    };
    // A random block repeated: random bytes are costly to draw by the MiB.
    let block = run.random_bytes(64 << 10);
    let payload = block.repeat(MAX_PAYLOAD / block.len());
    // Sent from a thread: a client that refuses the response stops reading it.
    let mut writer = conn.try_clone()?;
    let response = frame(STATUS_OK, &payload);
    let sender = std::thread::spawn(move || {
        let _ = writer.stream().write_all(&response);
    });
    let message = client
        .proc
        .recv_before(Instant::now() + Duration::from_secs(10))?;
    conn.shutdown(Shutdown::Both);
    let _ = sender.join();
    let situation = format!(
        "when the grader's server answered a request of {} payload bytes with a response of \
         MAX_BODY bytes (status 0 and MAX_PAYLOAD payload bytes, the largest frame body)",
        sent.len()
    );
    let rule = "a response may be any size up to MAX_BODY = MAX_PAYLOAD + 1, whatever its \
                request's size (the server decides what it answers): read the response with \
                the limit MAX_BODY, and return what the server sent";
    match message {
        Some(m) if m.kind == "done" => {
            client.proc.wait()?;
            let got = client.responses()?.swap_remove(0);
            if got != (STATUS_OK, payload) {
                return Err(Fail::failed(format!(
                    "{situation}, the client wrote a response of status {} and {} payload \
                     bytes that is not the one sent: {rule}",
                    got.0,
                    got.1.len()
                )));
            }
            Ok(())
        }
        Some(m) if m.kind == "failed" && m.get("kind") == Some("too-long") => {
            Err(Fail::failed(format!(
                "{situation}, the client said {}: it refused a response the protocol allows, \
                 as if a response could not be larger than some limit of its own (its \
                 request's size, say); {rule}",
                said(&m)
            )))
        }
        Some(m) => Err(Fail::failed(format!(
            "{situation}, the client said {}, where `done` is expected: {rule}",
            said(&m)
        ))),
        None => Err(Fail::failed(format!(
            "{situation}, the client neither failed nor finished within 10 s: {rule}"
        ))),
    }
}

/// The grader's server answers with a length prefix of `MAX_BODY + 1` (a payload one byte over
/// `MAX_PAYLOAD`), followed by the whole body: the client must refuse it as `TooLong` on its
/// length, and not take it (a limit that counts the 4-byte prefix, say, takes up to 4 more).
fn response_one_past_the_limit(run: &mut Run, request: &[(u8, Vec<u8>)]) -> Result<(), Fail> {
    let (listener, at) = GraderListener::bind(run, Transport::Unix)?;
    let mut client = spawn_client(run, &at, request.to_vec(), "the client")?;
    let mut conn = listener.accept_client()?;
    client.proc.send("go", &[])?;
    if !matches!(read_frame(&mut conn), Ok(Some(_))) {
        return Err(Fail::failed(
            "the client sent no request to the grader's server: Client::call must send each \
             request over the socket",
        ));
    }
    // The body is sent from a thread: a client that refuses it stops reading.
    let mut writer = conn.try_clone()?;
    let sender = std::thread::spawn(move || {
        let mut bytes = ((MAX_BODY + 1) as u32).to_be_bytes().to_vec();
        bytes.push(STATUS_OK);
        bytes.resize(4 + MAX_BODY + 1, b'x');
        let _ = writer.stream().write_all(&bytes);
    });
    let message = client
        .proc
        .recv_before(Instant::now() + Duration::from_secs(5))?;
    conn.shutdown(Shutdown::Both);
    let _ = sender.join();
    let situation = "when the grader's server answered with a length prefix of MAX_BODY + 1 \
                     (a status byte and a payload one byte over MAX_PAYLOAD), its whole body \
                     following";
    let rule = "MAX_BODY = MAX_PAYLOAD + 1 is the largest frame body, for responses too (the \
                4-byte length prefix is not part of it): read the response with the limit \
                MAX_BODY, and a longer length is RpcError::TooLong, refused on the length alone";
    match message {
        Some(m) if m.kind == "failed" && m.get("kind") == Some("too-long") => {
            client.proc.wait()?;
            Ok(())
        }
        Some(m) if m.kind == "done" => Err(Fail::failed(format!(
            "{situation}, the client took the response and said `done`: it accepted a frame \
             body of MAX_BODY + 1 bytes; {rule}"
        ))),
        Some(m) => Err(Fail::failed(format!(
            "{situation}, the client said {}, where `failed` with kind=too-long is expected: \
             {rule}",
            said(&m)
        ))),
        None => Err(Fail::failed(format!(
            "{situation}, the client neither failed nor finished within 5 s: {rule}"
        ))),
    }
}

/// The grader's server hangs up in ways that make the client's own call fail, not end: it
/// closes with the request unread (the kernel resets the connection: the client's read fails
/// with ECONNRESET), over a Unix socket and TCP, and it closes before the request is written
/// (the client's write fails with EPIPE, over a Unix socket, where that is certain). Each is
/// `kind=io` carrying that error: a failed call is no end of stream.
fn hung_up_with_an_error(run: &mut Run, request: &[(u8, Vec<u8>)]) -> Result<(), Fail> {
    let request_len: usize = request.iter().map(|(_, p)| 5 + p.len()).sum();
    let cases = [
        (
            Transport::Unix,
            true,
            libc::ECONNRESET,
            "read()",
            "ECONNRESET, os error 104",
        ),
        (
            Transport::Tcp,
            true,
            libc::ECONNRESET,
            "read()",
            "ECONNRESET, os error 104",
        ),
        (
            Transport::Unix,
            false,
            libc::EPIPE,
            "write()",
            "EPIPE, os error 32",
        ),
    ];
    for (transport, request_first, errno, call, name) in cases {
        let (listener, at) = GraderListener::bind(run, transport)?;
        let mut client = spawn_client(run, &at, request.to_vec(), "the client")?;
        let conn = listener.accept_client()?;
        let situation = if request_first {
            client.proc.send("go", &[])?;
            if !conn.queued_within(request_len, Duration::from_secs(2)) {
                return Err(Fail::failed(
                    "the client sent no request to the grader's server: Client::call must send \
                     each request over the socket",
                ));
            }
            drop(conn);
            format!(
                "over {}, when the grader's server closed the connection with the request \
                 unread (the kernel then resets it: the client's {call} fails with {name})",
                transport.describe()
            )
        } else {
            drop(conn);
            client.proc.send("go", &[])?;
            format!(
                "over {}, when the grader's server had closed the connection before the \
                 request was written (the client's {call} fails with {name})",
                transport.describe()
            )
        };
        let rule = format!(
            "a read or write that fails is RpcError::Io carrying the error the call returned, \
             {name} too; Closed is only the end of the stream (a read that returns 0) before a \
             response's first byte, and a failed {call} is no end of stream"
        );
        let message = client
            .proc
            .recv_before(Instant::now() + Duration::from_secs(5))?;
        let verdict = match message {
            Some(m) if m.kind == "failed" && m.get("kind") == Some("io") => {
                let error = m.get("error").unwrap_or("");
                if forced::carries_errno(error, errno) {
                    Ok(())
                } else {
                    Err(Fail::failed(format!(
                        "{situation}, the client reported kind=io as it should, but not the \
                         error the call returned: `{error}` carries {}; {rule}",
                        forced::errnos_in(error)
                    )))
                }
            }
            Some(m) => Err(Fail::failed(format!(
                "{situation}, the client said {}, where `failed` with kind=io is expected: \
                 {rule}",
                said(&m)
            ))),
            None => Err(Fail::failed(format!(
                "{situation}, the client neither failed nor finished within 5 s: {rule}"
            ))),
        };
        if verdict.is_err() {
            client.proc.kill_tree();
            return verdict;
        }
        client.proc.wait()?;
    }
    Ok(())
}
