//! Requests from clients the grader does not write itself: a Python client and programs found
//! on the machine.

use std::time::Duration;

use super::external_programs::{Ran, external};
use super::programs::server;
use super::protocol::{closed_after, expected, frame, read_response, verify};
use super::{OP_ECHO, OP_HASH, OP_REVERSE, STATUS_OK, Transport};
use crate::engine::{Fail, Run};

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
