//! Client programs of the grader's, run with their output read.

use std::io::{ErrorKind, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::engine::Fail;
use crate::engine::process;

/// What a client program of the grader's ([`external`]) printed, and how it ended.
pub struct Ran {
    pub stdout: Vec<u8>,
    /// Its exit status, and the last line of its stderr, when it did not exit 0: a client
    /// that could not run here fails as one that got a wrong answer does, and the message
    /// must tell them apart.
    pub failure: Option<String>,
}

/// Runs `program` with `args` (stdin from `input`), at most `limit`; what it printed, or `None`
/// if it is not installed.
pub fn external(
    program: &str,
    args: &[&str],
    input: &[u8],
    limit: Duration,
) -> Result<Option<Ran>, Fail> {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Registered, so that the grader's sweeps for orphans do not reap it under our feet.
    let child = process::spawn_helper(&mut command);
    let mut child = match child {
        Ok(child) => child,
        // Not installed, or not runnable by this user (a PATH entry it may not search).
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::PermissionDenied) => {
            return Ok(None);
        }
        Err(e) => return Err(Fail::Grader(format!("{program}: {e}"))),
    };
    let mut stdin = child.stdin.take().expect("piped");
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        out
    });
    let mut stderr = child.stderr.take().expect("piped");
    let complaints = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stderr.read_to_end(&mut out);
        out
    });
    let deadline = Instant::now() + limit;
    let finished = loop {
        match child.try_wait() {
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(Some(status)) => break Some(Some(status)),
            Err(_) => break Some(None),
        }
    };
    process::forget(child.id());
    let Some(status) = finished else {
        return Err(Fail::failed(format!(
            "{program}'s client got no complete answer within {limit:?}"
        )));
    };
    let _ = feeder.join();
    let stderr = complaints.join().unwrap_or_default();
    let last_line = String::from_utf8_lossy(&stderr)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string();
    let failure = match status {
        Some(status) if status.success() => None,
        Some(status) => Some(format!("{program} exited with {status}: {last_line}")),
        None => Some(format!("{program}'s exit was lost: {last_line}")),
    };
    Ok(Some(Ran {
        stdout: reader.join().unwrap_or_default(),
        failure,
    }))
}
