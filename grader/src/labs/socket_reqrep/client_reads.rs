//! `client-reads`: the client, connected to a server of the grader's that writes each small
//! response whole in one write(), reads it, length and body, in one read() of its socket: its
//! connection is read through its buffer, not around it.

use std::net::Shutdown;
use std::time::{Duration, Instant};

use super::client_procs::spawn_client;
use super::forced::READS;
use super::grader_server::GraderListener;
use super::observe;
use super::programs::{CONTROL_FD, said};
use super::protocol::{frame, read_frame};
use super::{OP_ECHO, STATUS_OK, Transport};
use crate::engine::tracer::{Call, Tracer};
use crate::engine::{Fail, Run};

/// Sizes of the responses' payloads: none (the status alone), small, and one whose frame is
/// near a default buffer's 8 KiB.
const SIZES: [usize; 5] = [0, 1, 100, 4000, 8000];

pub fn client_reads(run: &mut Run) -> Result<String, Fail> {
    for transport in [Transport::Unix, Transport::Tcp] {
        if let Some(verdict) = reads_per_response(run, transport)? {
            return Err(verdict);
        }
    }
    Ok(format!(
        "the client read each of {} small responses, written whole, in one read(), over both \
         transports",
        SIZES.len()
    ))
}

/// The failure, if the client made more read()s of its socket than there were responses.
fn reads_per_response(run: &mut Run, transport: Transport) -> Result<Option<Fail>, Fail> {
    let (listener, at) = GraderListener::bind(run, transport)?;
    let requests: Vec<(u8, Vec<u8>)> = (0..SIZES.len())
        .map(|i| (OP_ECHO, run.random_bytes(10 + i)))
        .collect();
    let mut client = spawn_client(run, &at, requests, "the client")?;
    let mut conn = listener.accept_client()?;
    let pid = client.pid();
    let socket = observe::sockets(pid)
        .into_iter()
        .map(|(fd, _)| fd)
        .find(|&fd| fd != CONTROL_FD);
    let tracer = match socket {
        Some(fd) => Tracer::count_calls(pid, Call::one_of_on(&READS, fd))?,
        None => None,
    };
    let Some(tracer) = tracer else {
        run.note("the client's socket could not be traced: its reads were not counted");
        return Ok(None);
    };
    client.proc.send("go", &[])?;
    let mut sent = Vec::new();
    for &size in &SIZES {
        match read_frame(&mut conn) {
            Ok(Some(_)) => {}
            _ => break,
        }
        let answer = frame(STATUS_OK, &run.random_bytes(size));
        // The whole frame in one write(): it reaches the client in one piece.
        if conn.stream().write_all(&answer).is_err() {
            break;
        }
        sent.push(answer.len());
    }
    let done = client.proc.recv_any();
    conn.shutdown(Shutdown::Both);
    let _ = client.proc.wait();
    let reads = tracer.failed_count(Instant::now() + Duration::from_secs(2))? as usize;
    let done = done?;
    if done.kind != "done" {
        return Err(Fail::failed(format!(
            "the client said {} instead of `done`, given small responses by the grader's server",
            said(&done)
        )));
    }
    if reads > sent.len() {
        return Ok(Some(Fail::failed(format!(
            "over {}, the client made {reads} read()s of its socket for {} responses, each \
             written whole by the grader's server in one write() (frames of {:?} bytes): it \
             reads a response's length prefix and its body apart, straight from the socket \
             (read_frame on conn.get_mut(), around the BufReader, or with no buffer, or one too \
             small for them). Client::conn is read through its buffer, read_frame(&mut \
             self.conn, ...), so that a response's length and a small body come in one read()",
            transport.describe(),
            sent.len(),
            sent
        ))));
    }
    Ok(None)
}
