//! Limits and bad input: the largest frame goes through and one byte more does not; every frame
//! that is wrong or cut short costs its client the connection, with a log line of the right
//! kind, and nothing else.

use std::io::ErrorKind;
use std::net::Shutdown;
use std::time::{Duration, Instant};

use ipc_labs_driver::Message;

use super::client_procs::spawn_client;
use super::grader_server::{GraderListener, answer_all};
use super::programs::{Server, line_kind, said, server};
use super::protocol::{Conn, frame, read_response, verify};
use super::{MAX_BODY, MAX_PAYLOAD, OP_ECHO, OP_HASH, OP_REVERSE, STATUS_OK, Transport};
use super::{forced, observe};
use crate::engine::{Fail, Run, force};

/// How long a log line may take to reach the grader after the server dropped a client.
const LOG_PATIENCE: Duration = Duration::from_secs(2);

pub fn size_limit(run: &mut Run) -> Result<String, Fail> {
    let server = server(run, Transport::Unix)?;
    // The largest payload allowed, from the student's client to the student's server and
    // back: the request's and the response's bodies are exactly MAX_BODY bytes.
    let payload = run.random_bytes(MAX_PAYLOAD);
    let requests = vec![(OP_REVERSE, payload.clone())];
    let mut client = spawn_client(run, &server.where_args(), requests, "the client")?;
    client.proc.send("go", &[])?;
    let done = client.proc.recv_any()?;
    if done.kind != "done" {
        return Err(at_the_limit_failed(run, &server, &done, &payload));
    }
    client.proc.wait()?;
    client.verify()?;

    // One byte more: refused as soon as the length prefix is in.
    let what = "a length prefix of MAX_BODY + 1 (a payload one byte over MAX_PAYLOAD)";
    let known = server.dropped_lines().len();
    let sockets_before = observe::connections(server.pid(), 0);
    let threads = observe::thread_ids(server.pid());
    let mut conn = server.connect()?;
    let mut header = ((MAX_BODY + 1) as u32).to_be_bytes().to_vec();
    header.push(OP_ECHO);
    conn.send(&header, 0)?;
    let refuse = "a length above MAX_BODY is RpcError::TooLong, refused before the body is read";
    dropped(&mut conn, what, &server, known, refuse)?;
    let kept = Kept {
        sockets_before,
        threads: &threads,
    };
    kept.nothing_after_dropping(&server, what)?;
    expect_logged(&server, known, what, "too-long", refuse)?;
    server.stop()?;
    Ok(
        "a payload of exactly MAX_PAYLOAD went both ways, to and from each program; a frame one \
         byte longer was refused"
            .into(),
    )
}

/// Which program refused a payload of exactly MAX_PAYLOAD, when the student's client and server
/// did not manage it together (the client said `done`, not `failed`): the server, if its log
/// says so; the client, if it fails with a server of the grader's too.
fn at_the_limit_failed(
    run: &mut Run,
    server: &Server,
    said_instead: &Message,
    payload: &[u8],
) -> Fail {
    let refused = server
        .next_dropped_line(0, Duration::from_millis(500))
        .filter(|l| line_kind(l) == "too-long");
    if let Some(line) = refused {
        return Fail::failed(format!(
            "the server refused a request with a payload of exactly MAX_PAYLOAD (16 MiB), the \
             largest allowed ({line}): a request body is the op byte and the payload, so \
             MAX_BODY = MAX_PAYLOAD + 1 bytes must be accepted"
        ));
    }
    if let Err(fail) = client_at_the_limit(run, payload) {
        return fail;
    }
    Fail::failed(format!(
        "the client said {} instead of `done`, with a payload of exactly MAX_PAYLOAD (16 MiB), \
         the largest allowed, although it managed one with a server of the grader's{}: a frame \
         body is the op or status byte and the payload, so MAX_BODY = MAX_PAYLOAD + 1 bytes must \
         be accepted, by the server and by the client",
        said(said_instead),
        server.alive_note()
    ))
}

/// The student's client against the grader's server, at the limit both ways: a request and a
/// response with a payload of exactly MAX_PAYLOAD.
fn client_at_the_limit(run: &mut Run, payload: &[u8]) -> Result<(), Fail> {
    let (listener, at) = GraderListener::bind(run, Transport::Unix)?;
    let requests = vec![(OP_ECHO, payload.to_vec())];
    // Its echo, reversed: what a server answers is not the client's to compute.
    let answer = (
        STATUS_OK,
        payload.iter().rev().copied().collect::<Vec<u8>>(),
    );
    let mut client = spawn_client(run, &at, requests, "the client")?;
    let conn = listener
        .accept_within(Duration::from_secs(2))?
        .ok_or_else(|| Fail::failed("the client said `ready` but never connected"))?;
    let closer = conn.try_clone()?;
    let pid = client.pid();
    let answering = {
        let answers = vec![answer.clone()];
        std::thread::spawn(move || answer_all(conn, answers, pid, None, None))
    };
    client.proc.send("go", &[])?;
    let done = client.proc.recv_any();
    closer.shutdown(Shutdown::Both);
    let answered = answering
        .join()
        .map_err(|_| Fail::Grader("the grader's server panicked".into()))?;
    let done = done?;
    if done.kind != "done" {
        let error = said(&done);
        let got_request = answered.received.len() == 1;
        return Err(Fail::failed(match (done.get("kind"), got_request) {
            (Some("too-long"), true) => format!(
                "the client said {error}: it refused a response with a payload of exactly \
                 MAX_PAYLOAD (16 MiB), the largest allowed; a response body is the status byte \
                 and the payload, so the client must accept MAX_BODY = MAX_PAYLOAD + 1 bytes \
                 (read the response with the limit MAX_BODY)"
            ),
            (Some("too-long"), false) => format!(
                "the client said {error} instead of sending a request with a payload of exactly \
                 MAX_PAYLOAD (16 MiB), the edge: no request reached the grader's server, so the \
                 client refused its own request before writing it (Client::call's write_frame). \
                 That payload is allowed, only a longer one is too long: MAX_BODY = MAX_PAYLOAD \
                 + 1, for requests and responses"
            ),
            _ => format!(
                "the client said {error} instead of `done`, with a request and a response of \
                 exactly MAX_PAYLOAD (16 MiB) each, the largest allowed: a frame body is the op \
                 or status byte and the payload, so MAX_BODY = MAX_PAYLOAD + 1 bytes must be \
                 accepted both ways"
            ),
        }));
    }
    client.proc.wait()?;
    if answered.received.len() != 1 {
        return Err(Fail::failed(
            "the client said `done` but the grader's server never received its request of \
             MAX_PAYLOAD bytes: Client::call must send each request over the socket",
        ));
    }
    if client.responses()?.first() != Some(&answer) {
        return Err(Fail::failed(
            "the client wrote a response other than the MAX_PAYLOAD bytes the grader's server \
             sent: read the whole response, up to MAX_BODY bytes",
        ));
    }
    Ok(())
}

/// After a bad client, the server must have closed that connection (read gives end-of-file or
/// an error, not a timeout). `rule` says why the input was bad, for a server that answered it.
pub(super) fn dropped(
    conn: &mut Conn,
    what: &str,
    server: &Server,
    known: usize,
    rule: &str,
) -> Result<(), Fail> {
    conn.timeouts(Duration::from_secs(3));
    let mut byte = [0u8; 1];
    match conn.stream().read(&mut byte) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            match server.next_dropped_line(known, Duration::ZERO) {
                Some(line) => Err(Fail::failed(format!(
                    "the server logged the client that sent {what} as dropped ({line}) but kept \
                     its connection open: close the connection when its handler ends, error or \
                     not; a second handle on it (try_clone, dup) kept elsewhere, in a table of \
                     open connections say, keeps the socket open"
                ))),
                None => Err(Fail::failed(format!(
                    "the server kept the connection open after {what}: {rule}; drop the client \
                     (log it with log_dropped() and close its connection) as soon as its input \
                     is wrong"
                ))),
            }
        }
        Ok(0) | Err(_) if server.alive_note().is_empty() => Ok(()),
        Ok(0) | Err(_) => Err(Fail::failed(format!(
            "the server died after {what}: a bad client must cost only its own connection \
             (log it and drop it), never the server"
        ))),
        Ok(_) => Err(Fail::failed(format!(
            "the server answered {what} instead of dropping the client: {rule}"
        ))),
    }
}

/// What the server had before a bad client connected: its client connections (their inodes)
/// and its threads.
struct Kept<'a> {
    sockets_before: std::collections::BTreeSet<u64>,
    threads: &'a [i32],
}

impl Kept<'_> {
    /// The bad client, still connected, has read the end of its stream: the server must have
    /// closed its connection, every handle on it, not only shut it (within 2 s). A thread
    /// started since that still reads a socket tells a lingering close from a handle left over.
    fn nothing_after_dropping(&self, server: &Server, what: &str) -> Result<(), Fail> {
        let pid = server.pid();
        // Descriptors of connections that came since: this client's, the only one.
        let new_fds = || {
            let now = observe::connections(pid, 0);
            observe::sockets(pid)
                .into_iter()
                .filter(|(_, inode)| now.contains(inode) && !self.sockets_before.contains(inode))
                .count()
        };
        let until = Instant::now() + Duration::from_secs(2);
        let mut extra = new_fds();
        while extra > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
            extra = new_fds();
        }
        if extra == 0 {
            return Ok(());
        }
        let reading = observe::new_thread_in(pid, self.threads, &forced::READS, Instant::now());
        let why = match reading {
            Some((tid, _)) => format!(
                "and a thread started for it (tid {tid}) still blocks reading a socket: the \
                 handler shut the connection and reads on until the client hangs up (a \
                 lingering close), which keeps a descriptor and a thread for as long as the \
                 client likes"
            ),
            None => "with no thread of it reading: a handle on the connection (a second one, \
                     try_clone or dup, in a table of open connections say) was left open"
                .into(),
        };
        Err(Fail::failed(format!(
            "after {what}, the server ended the connection for the client (its read returned: \
             end of stream or a reset) but 2 s later, with the client still connected, it \
             still held {extra} descriptor(s) of that client's connection (/proc/{pid}/fd, \
             sockets carrying the listener's path in /proc/net/unix), {why}. \
             A dropped client loses its connection at once: close it, every handle on it, as \
             soon as its handler has logged it, without waiting for the client"
        )))
    }
}

/// A client that sends a request and closes its connection while every thread of the server
/// (`pid`) is held: once let go, the server's write of the response fails with `EPIPE`.
pub(super) fn closed_before_the_answer(server: &Server, pid: i32) -> Result<(), Fail> {
    observe::hold_every_thread(pid)?;
    let gone = server.connect().and_then(|mut conn| {
        conn.send(&frame(OP_REVERSE, b"nobody reads this"), 0)?;
        drop(conn);
        Ok(())
    });
    force::resume(pid)?;
    gone
}

/// A client that makes a good request and, once the whole response is in its socket, sends
/// `then` (a part of a next frame, or nothing) and closes with the response unread: the
/// server's read after those bytes meets `ECONNRESET`.
pub(super) fn reset_with_a_response_unread(server: &Server, then: &[u8]) -> Result<(), Fail> {
    let mut conn = server.connect()?;
    let request = frame(OP_ECHO, b"never read");
    conn.send(&request, 0)?;
    if !conn.queued_within(request.len(), Duration::from_secs(5)) {
        return Err(Fail::failed(format!(
            "no complete response within 5 s to a good request{}",
            server.alive_note()
        )));
    }
    if !then.is_empty() {
        conn.send(then, 1)?;
    }
    drop(conn);
    Ok(())
}

/// The next `dropped client` line after the first `known` must come, and be of `kind`.
fn expect_logged(
    server: &Server,
    known: usize,
    what: &str,
    kind: &str,
    rule: &str,
) -> Result<(), Fail> {
    match server.next_dropped_line(known, LOG_PATIENCE) {
        Some(line) if line_kind(&line) == kind => Ok(()),
        Some(line) => Err(Fail::failed(format!(
            "after {what} the server logged `{line}`: kind={}, where kind={kind} is expected: \
             {rule}",
            line_kind(&line)
        ))),
        // A server that dies closes the connection before it is seen dead.
        None if !server.alive_note().is_empty() => Err(Fail::failed(format!(
            "the server died after {what}: a bad client must cost only its own connection (log \
             it and drop it), never the server"
        ))),
        None => Err(Fail::failed(format!(
            "after {what} the server ended the client but logged no `dropped client ... \
             (kind={kind})` line: either it took that for a normal end ({rule}), or it did not \
             log the error (log every client whose connection ends with an error with \
             log_dropped())"
        ))),
    }
}

/// The `got` and `want` of a Truncated as its given Display writes them: "the peer closed the
/// connection {got} bytes into a {want}-byte frame part".
fn truncated_fields(line: &str) -> Option<(usize, usize)> {
    let (_, rest) = line.split_once("closed the connection ")?;
    let (got, rest) = rest.split_once(" bytes into a ")?;
    let (want, _) = rest.split_once("-byte frame part")?;
    Some((got.parse().ok()?, want.parse().ok()?))
}

/// The log line of a frame cut short (already judged of kind truncated) must carry the counts
/// of the part the stream ended in, as RpcError::Truncated's doc says: `got`, the bytes received
/// of that part (the 4-byte length, or the body), and `want`, the bytes it has. A line whose
/// message is not the given Display's is not judged.
fn truncated_counts(
    server: &Server,
    known: usize,
    what: &str,
    (got, want): (usize, usize),
) -> Result<(), Fail> {
    let Some(line) = server.next_dropped_line(known, Duration::ZERO) else {
        return Ok(());
    };
    match truncated_fields(&line) {
        Some(found) if found != (got, want) => {
            let part = if want == 4 {
                "the length prefix"
            } else {
                "the body"
            };
            let cause = if found == (got + 4, want + 4) {
                ": both are 4 too many, the counts of the whole frame, its 4-byte prefix \
                 included, where those of the body alone are wanted"
                    .to_string()
            } else {
                String::new()
            };
            Err(Fail::failed(format!(
                "after {what} the server logged `{line}`: the kind is right, but the counts are \
                 got={} want={} where got={got} want={want} are expected (the stream ended in \
                 {part}){cause}. RpcError::Truncated's got is the bytes received of the part the \
                 stream ended in (the 4-byte length, or the body) and want the bytes that part \
                 has",
                found.0, found.1
            )))
        }
        _ => Ok(()),
    }
}

/// The server's `VmHWM` (peak resident memory) in KiB.
fn peak_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A good client must still be served.
fn good(server: &Server, after: &str) -> Result<(), Fail> {
    let mut conn = server.connect()?;
    let payload = b"still serving?".to_vec();
    conn.send(&frame(OP_REVERSE, &payload), 0)?;
    let got = read_response(&mut conn).map_err(|e| {
        Fail::failed(format!(
            "after {after}, a good client got no response ({e}){}: drop the bad client and keep \
             serving the others",
            server.alive_note()
        ))
    })?;
    verify(
        got,
        OP_REVERSE,
        &payload,
        &format!("a good client after {after}"),
    )
}

const TRUNCATED: &str = "end of stream inside a frame, its length prefix included, is \
                         RpcError::Truncated: compare what came with the whole length, and end \
                         the client";

/// A bad client: what it sends, whether it then ends its stream, and the kind of drop.
struct BadClient {
    what: &'static str,
    bytes: Vec<u8>,
    end_of_stream: bool,
    kind: &'static str,
    rule: &'static str,
    /// For a frame cut short: `got` and `want` of the Truncated its log line must carry, those
    /// of the part the stream ended in (the 4-byte prefix, or the body).
    counts: Option<(usize, usize)>,
}

pub fn bad_input(run: &mut Run) -> Result<String, Fail> {
    let server = server(run, Transport::Unix)?;
    let pid = server.pid();
    // Only the client connections count: the server may hold sockets of its own (a socket pair,
    // say) that no client brought.
    let sockets_before = observe::connection_fds(pid, 0);
    good(&server, "the start")?;
    let before = peak_kib(pid);

    let hundred = frame(OP_ECHO, &[7u8; 99]);
    let unknown_op = frame(b'Z', &[7u8; 99]);
    // Far past any buffer a reader might fill first (a socket's, a BufReader's, a first chunk).
    let big = frame(OP_ECHO, &run.random_bytes(1 << 20));
    let cut = |what, bytes: &[u8], got, want| BadClient {
        what,
        bytes: bytes.to_vec(),
        end_of_stream: true,
        kind: "truncated",
        rule: TRUNCATED,
        counts: Some((got, want)),
    };
    let cases = [
        cut(
            "a frame cut after 1 byte of its length prefix, then end of stream",
            &[0],
            1,
            4,
        ),
        cut(
            "a frame cut after 3 bytes of its length prefix, then end of stream",
            &[0, 0, 0],
            3,
            4,
        ),
        cut(
            "a frame of 100 bytes cut right after its length prefix, then end of stream",
            &hundred[..4],
            0,
            100,
        ),
        BadClient {
            what: "a truncated frame with an unknown op ('Z'; 100 bytes announced, 10 sent, then \
                   end of stream)",
            bytes: unknown_op[..14].to_vec(),
            end_of_stream: true,
            kind: "truncated",
            rule: "a request is answered once it has all come, whatever its op: an unknown op's \
                   answer too waits for the whole frame (its payload read, then dropped), and a \
                   frame the stream ends inside is RpcError::Truncated, never answered",
            counts: Some((10, 100)),
        },
        cut(
            "a frame missing only its last byte (99 of the 100 bytes announced, then end of \
             stream)",
            &hundred[..103],
            99,
            100,
        ),
        BadClient {
            what: "a frame of 1 MiB missing only its last byte (1 MiB of the 1 MiB + 1 announced, \
                   then end of stream)",
            bytes: big[..big.len() - 1].to_vec(),
            end_of_stream: true,
            kind: "truncated",
            rule: "end of stream anywhere inside a frame, however far into a large body, is \
                   RpcError::Truncated, not Io: an end of stream is no i/o error (read_exact's \
                   UnexpectedEof is one: count what came against the whole length instead, as \
                   for a small frame)",
            counts: Some((1 << 20, (1 << 20) + 1)),
        },
        cut(
            "a frame of length 1 without its op byte, then end of stream",
            &[0, 0, 0, 1],
            0,
            1,
        ),
        BadClient {
            what: "an empty frame (length 0)",
            bytes: vec![0, 0, 0, 0],
            end_of_stream: false,
            kind: "empty-frame",
            rule: "a frame needs at least its op byte: a length of 0 is RpcError::EmptyFrame",
            counts: None,
        },
    ];
    for case in &cases {
        let known = server.dropped_lines().len();
        let threads = observe::thread_ids(pid);
        let sockets_at_connect = observe::connections(pid, 0);
        let mut conn = server.connect()?;
        conn.send(&case.bytes, 0)?;
        if case.end_of_stream {
            conn.shutdown(Shutdown::Write);
        }
        dropped(&mut conn, case.what, &server, known, case.rule)?;
        if !case.end_of_stream {
            let kept = Kept {
                sockets_before: sockets_at_connect,
                threads: &threads,
            };
            kept.nothing_after_dropping(&server, case.what)?;
        }
        expect_logged(&server, known, case.what, case.kind, case.rule)?;
        if let Some(counts) = case.counts {
            truncated_counts(&server, known, case.what, counts)?;
        }
        good(&server, case.what)?;
    }

    // An absurd length, then 48 MiB of filler: a server that believed the length would keep
    // reading, and its memory would grow with the filler.
    let what = "an absurd length prefix (0xfffffff0)";
    let refuse = "a length above MAX_BODY is RpcError::TooLong, refused before anything is \
                  allocated or read";
    let known = server.dropped_lines().len();
    let threads = observe::thread_ids(pid);
    let sockets_at_connect = observe::connections(pid, 0);
    let mut conn = server.connect()?;
    conn.send(&[0xff, 0xff, 0xff, 0xf0], 0)?;
    let filler = vec![0x5au8; 1 << 20];
    conn.timeouts(Duration::from_secs(2));
    for _ in 0..48 {
        if conn.stream().write_all(&filler).is_err() {
            break;
        }
    }
    dropped(&mut conn, what, &server, known, refuse).map_err(|fail| {
        super::announced_allocation::named_if_the_length_was_allocated(&server, 0xffff_fff0, fail)
    })?;
    let kept = Kept {
        sockets_before: sockets_at_connect,
        threads: &threads,
    };
    kept.nothing_after_dropping(&server, what)?;
    expect_logged(&server, known, what, "too-long", refuse)?;
    good(&server, what).map_err(|fail| {
        super::announced_allocation::named_if_the_length_was_allocated(&server, 0xffff_fff0, fail)
    })?;
    let grown = peak_kib(pid).saturating_sub(before);
    if grown > 24 << 10 {
        return Err(Fail::failed(format!(
            "after {what} the server's peak memory (VmHWM) grew by {} MiB: refuse a length \
             above MAX_BODY before allocating or reading anything",
            grown >> 10
        )));
    }

    super::stalled_frames::stalled_bodies_cost_what_came(&server)?;
    good(&server, "clients that announced MAX_BODY bytes and stalled")?;

    // Half a request, then the connection closed.
    let what = "a client that disconnected mid-request";
    let known = server.dropped_lines().len();
    let mut conn = server.connect()?;
    conn.send(&frame(OP_HASH, &[1u8; 999])[..500], 0)?;
    drop(conn);
    expect_logged(&server, known, what, "truncated", TRUNCATED)?;
    good(&server, what)?;

    // Closing with a response unread resets the connection: the server's next read fails with
    // ECONNRESET, an error like any other. The whole response must be in first, so that the
    // server's next call is that read, not the end of its write.
    let what = "a client that closed its connection with a response unread (a reset)";
    let known = server.dropped_lines().len();
    reset_with_a_response_unread(&server, &[])?;
    expect_logged(
        &server,
        known,
        what,
        "io",
        "the server's next read fails with ECONNRESET, an error like any other: RpcError::Io, \
         which ends the client (logged and counted), neither retried nor taken for a clean close",
    )?;
    good(&server, what)?;

    // The same reset inside a frame, in its length prefix and in its body: an error there is
    // still RpcError::Io; only an end of stream is Truncated.
    let reset_rule = "a read that fails (ECONNRESET here) is RpcError::Io wherever it comes, in \
                      the length prefix or in the body too: only an end of stream inside a \
                      frame is RpcError::Truncated; map each read error to Io, not to Truncated";
    let next = frame(OP_HASH, &[3u8; 200]);
    for (what, part) in [
        (
            "a client that sent 2 bytes of a length prefix and closed its connection with a \
             response unread (a reset inside the prefix)",
            &next[..2],
        ),
        (
            "a client that sent 50 bytes of a 201-byte frame and closed its connection with a \
             response unread (a reset inside the body)",
            &next[..54],
        ),
    ] {
        let known = server.dropped_lines().len();
        // The bytes already sent are read first; the read after them fails.
        reset_with_a_response_unread(&server, part)?;
        expect_logged(&server, known, what, "io", reset_rule)?;
        good(&server, what)?;
    }

    // A client that sends a request and closes before the server answers: the response's
    // write fails (EPIPE on a Unix socket). The server is held while the client comes and goes,
    // so that its write surely comes after the close.
    let what = "a client that sent a request and closed its connection before the answer (the \
                server's write of the response then fails with EPIPE)";
    let known = server.dropped_lines().len();
    closed_before_the_answer(&server, pid)?;
    expect_logged(
        &server,
        known,
        what,
        "io",
        "a failed write of the response (EPIPE or ECONNRESET) is an error like any other: \
         RpcError::Io, which ends the client (logged with log_dropped and counted dropped), not \
         a clean end",
    )?;
    good(&server, what)?;

    super::lingering::no_lingering_close(&server)?;

    // Error paths no client can bring about, forced: interrupted calls, a failed accept().
    forced::interrupted_calls(run, &server)?;
    forced::interrupted_body_read(run, &server)?;
    forced::failed_read(run, &server)?;
    good(&server, "a handler's read() failed with EIO")?;
    let mut gone_past = Vec::new();
    if forced::aborted_accept(run, &server)? {
        gone_past.push(libc::ECONNABORTED);
    }
    // Errors a list of transient ones names, and ones it does not: the loop ends on none.
    for errno in [libc::EMFILE, libc::EPERM] {
        if forced::failed_accept(run, &server, errno, &gone_past)? {
            gone_past.push(errno);
        }
    }
    super::accept_errors::every_error_costs_one_connection(run, &server, &gone_past)?;
    super::dup_failure::failed_dup_costs_one_client(run, &server)?;
    let what = "a handler that ended while the thread that started it was held";
    forced::handler_ends_before_its_start_returns(run, &server)?;
    good(&server, what)?;

    // Every client has gone: so must every socket the server had for them.
    let until = Instant::now() + Duration::from_secs(1);
    let mut extra = observe::connection_fds(pid, 0).saturating_sub(sockets_before);
    while extra > 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
        extra = observe::connection_fds(pid, 0).saturating_sub(sockets_before);
    }
    if extra > 0 {
        return Err(Fail::failed(format!(
            "once every client had gone, the server still held {extra} descriptor(s) of \
             accepted client connections more than before them (/proc/{pid}/fd, sockets \
             carrying the listener's path in /proc/net/unix): a client's connection, or a \
             second handle on it (try_clone, dup), stays open after its handler ended; close \
             both, error or not"
        )));
    }
    server.stop()?;
    Ok(format!(
        "{} bad clients were dropped and logged with the right kind, the server kept serving, \
         its peak memory grew {grown} KiB, and it kept no socket of theirs",
        cases.len() + 4
    ))
}
