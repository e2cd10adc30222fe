//! Client processes of the student's: started with their requests, waited for, their
//! responses read and verified.

use std::path::PathBuf;

use super::programs::said;
use super::protocol::verify;
use crate::engine::{Fail, Proc, Run};

/// A client process of the student's: connected, waiting for `go`.
pub struct ClientProc {
    pub proc: Proc,
    pub requests: Vec<(u8, Vec<u8>)>,
    pub output: PathBuf,
    pub role: String,
}

/// Starts `socket-reqrep client` with `at` and `requests`, without waiting for its first
/// message.
pub fn start_client(
    run: &mut Run,
    at: &[String],
    requests: Vec<(u8, Vec<u8>)>,
    role: &str,
) -> Result<ClientProc, Fail> {
    start_client_as(run, at, requests, role, false)
}

/// As [`start_client`], stopped before its first instruction (SIGSTOP), for a tracer to attach
/// before it runs ([`crate::engine::force::resume`] lets it go).
pub fn start_stopped_client(
    run: &mut Run,
    at: &[String],
    requests: Vec<(u8, Vec<u8>)>,
    role: &str,
) -> Result<ClientProc, Fail> {
    start_client_as(run, at, requests, role, true)
}

fn start_client_as(
    run: &mut Run,
    at: &[String],
    requests: Vec<(u8, Vec<u8>)>,
    role: &str,
    stopped: bool,
) -> Result<ClientProc, Fail> {
    let tag = role.replace(' ', "-");
    let input = run.path(&format!("{tag}.requests"));
    let output = run.path(&format!("{tag}.responses"));
    let mut bytes = Vec::new();
    for (op, payload) in &requests {
        bytes.push(*op);
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(payload);
    }
    std::fs::write(&input, bytes)?;
    let mut args = vec!["client".to_string()];
    args.extend_from_slice(at);
    args.extend([
        "--requests".into(),
        input.display().to_string(),
        "--output".into(),
        output.display().to_string(),
    ]);
    let mut proc = if stopped {
        run.spawn_stopped(&args)?
    } else {
        run.spawn(&args)?
    };
    let name = role.to_string();
    proc.set_roles(move |_| name.clone());
    Ok(ClientProc {
        proc,
        requests,
        output,
        role: role.to_string(),
    })
}

/// Starts a client and waits until it is connected.
pub fn spawn_client(
    run: &mut Run,
    at: &[String],
    requests: Vec<(u8, Vec<u8>)>,
    role: &str,
) -> Result<ClientProc, Fail> {
    let mut client = start_client(run, at, requests, role)?;
    let ready = client.proc.recv_any()?;
    if ready.kind != "ready" {
        return Err(Fail::failed(format!(
            "{role} said {} instead of connecting",
            said(&ready)
        )));
    }
    Ok(client)
}

impl ClientProc {
    pub fn pid(&self) -> i32 {
        self.proc.pid.as_raw()
    }

    /// The responses the client wrote (status, payload), after it exited: one per request, or
    /// an error saying how many there were.
    pub fn responses(&self) -> Result<Vec<(u8, Vec<u8>)>, Fail> {
        let bytes = std::fs::read(&self.output).unwrap_or_default();
        let mut rest = &bytes[..];
        let mut responses = Vec::new();
        for i in 0..self.requests.len() {
            if rest.len() < 5 {
                return Err(Fail::failed(format!(
                    "{} got {i} responses to {} requests",
                    self.role,
                    self.requests.len()
                )));
            }
            let len = u32::from_le_bytes(rest[1..5].try_into().expect("4 bytes")) as usize;
            responses.push((rest[0], rest[5..].get(..len).unwrap_or(&[]).to_vec()));
            rest = &rest[(5 + len).min(rest.len())..];
        }
        Ok(responses)
    }

    /// Checks the responses the client wrote, after it exited.
    pub fn verify(&self) -> Result<(), Fail> {
        let responses = self.responses()?;
        for (i, (got, (op, payload))) in responses.into_iter().zip(&self.requests).enumerate() {
            verify(got, *op, payload, &format!("{}, request {i}", self.role))?;
        }
        Ok(())
    }

    /// Lets it run (`go`) and waits for its `done` and exit.
    pub fn finish(mut self) -> Result<ClientProc, Fail> {
        self.proc.send("go", &[])?;
        let done = self.proc.recv_any()?;
        if done.kind != "done" {
            return Err(Fail::failed(format!(
                "{} said {} instead of `done`",
                self.role,
                said(&done)
            )));
        }
        self.proc.wait()?;
        Ok(self)
    }
}
