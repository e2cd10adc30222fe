//! Payloads far larger than a socket's buffers, and responses that must come whole through a
//! stop and resume of the server.

use std::io::Write;
use std::time::{Duration, Instant};

use rand::RngExt;

use super::client_procs::spawn_client;
use super::forced;
use super::half_close;
use super::observe;
use super::programs::{Server, server};
use super::protocol::{Conn, closed_after, frame, read_frame_counted, read_response, verify};
use super::requests::misread_stream;
use super::{OP_ECHO, OP_HASH, OP_REVERSE, STATUS_OK, Transport};
use crate::engine::{Fail, Run};

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
/// two different bytes of its middle exchanged (the same bytes, only their order changed): each
/// answer is fnv1a of its own payload, whatever was asked before (an answer remembered by
/// length, by a part of the payload, or by a sum of its bytes, is stale).
fn hash_of_every_byte(run: &mut Run, server: &Server) -> Result<(), Fail> {
    let len = (1 << 20) + run.rng().random_range(0..(2 << 20));
    let mut first = run.random_bytes(len);
    // Odd offsets, off any sampling stride of a power of two, in the first and second half of
    // the middle, holding different bytes.
    let one = run.rng().random_range(len / 8..len / 4) * 2 + 1;
    let other = run.rng().random_range(len / 4..len * 3 / 8) * 2 + 1;
    first[other] = first[one] ^ 0x5a;
    let mut second = first.clone();
    second.swap(one, other);
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
             first but for bytes {one} and {other} exchanged, got the same answer (fnv1a of the \
             first), where fnv1a of the second is {:016x}: H answers fnv1a of the payload it was \
             sent, every byte of it in its order, every time; an answer remembered for another \
             payload (a cache keyed by the length, by a part of the payload, or by a sum of its \
             bytes) is a wrong answer",
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
            &format!("the {which} of two hash requests of {len} bytes, two bytes exchanged"),
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
                server.closed_note()
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
