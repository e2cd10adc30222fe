//! Clients that announce the largest frame and then stall: each costs the server what it has
//! sent, not the length it announced. A server that reserves the announced length (up to
//! `MAX_BODY`, 16 MiB) for each of them never touches those pages, so its peak memory does not
//! show it, but its address space does: a few hundred such clients exhaust it.

use std::time::{Duration, Instant};

use super::forced::READS;
use super::observe;
use super::programs::Server;
use super::protocol::Conn;
use super::{MAX_BODY, OP_ECHO};
use crate::engine::Fail;

/// How many clients stall in each batch.
const STALLED: usize = 6;
/// The most a client stalled inside a body may cost beyond one stalled inside its length
/// prefix: its bytes, a buffer sized up front (64 KiB), room for the allocator's rounding.
const ALLOWED_PER_CLIENT: u64 = 4 << 20;

/// The bytes of `pid`'s writable private memory (`VmData`): what it has reserved, touched or
/// not.
fn data_bytes(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmData:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib << 10)
}

/// How many threads of `pid` are blocked reading.
fn readers(pid: i32) -> usize {
    observe::threads(pid)
        .iter()
        .filter(|t| t.state == 'S' && t.syscall.is_some_and(|n| READS.contains(&n)))
        .count()
}

/// Connects [`STALLED`] clients that each send `bytes` and then nothing; returns them and how
/// much the server's writable memory grew once each handler has read them and waits for more.
fn stall(server: &Server, bytes: &[u8]) -> Result<(Vec<Conn>, u64), Fail> {
    let pid = server.pid();
    let before = data_bytes(pid);
    let reading = readers(pid);
    let mut conns = Vec::with_capacity(STALLED);
    for _ in 0..STALLED {
        let mut conn = server.connect()?;
        conn.send(bytes, 0)?;
        conns.push(conn);
    }
    for conn in &conns {
        conn.wait_until_read();
    }
    // A handler blocked reading again has done what it does with the bytes it read.
    let until = Instant::now() + Duration::from_secs(1);
    while readers(pid) < reading + STALLED && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok((conns, data_bytes(pid).saturating_sub(before)))
}

/// [`STALLED`] clients stalled inside their length prefix, then as many that announced a frame
/// of `MAX_BODY` bytes and sent 10 of them: the second batch may cost the server little more
/// than the first, not the length announced.
pub fn stalled_bodies_cost_what_came(server: &Server) -> Result<(), Fail> {
    let pid = server.pid();
    let known = server.dropped_lines().len();
    let (in_prefix, prefix_grown) = stall(server, &[0, 1])?;
    let mut announced = (MAX_BODY as u32).to_be_bytes().to_vec();
    announced.push(OP_ECHO);
    announced.extend_from_slice(&[7u8; 9]);
    let (in_body, body_grown) = stall(server, &announced)?;
    let excess = body_grown.saturating_sub(prefix_grown) / STALLED as u64;
    drop(in_prefix);
    drop(in_body);
    // Their drops are logged before the next client's, which the caller counts.
    let until = Instant::now() + Duration::from_secs(2);
    while server.dropped_lines().len() < known + 2 * STALLED && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    if excess <= ALLOWED_PER_CLIENT {
        return Ok(());
    }
    let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
    Err(Fail::failed(format!(
        "{STALLED} clients that each announced a frame of MAX_BODY bytes (16 MiB + 1) and sent \
         its op byte and 9 bytes of payload, then stalled, grew the server's writable memory \
         (VmData in /proc/{pid}/status) by {:.1} MiB, against {:.1} MiB for {STALLED} clients \
         stalled inside their length prefix: {:.1} MiB a client more, about the length \
         announced. read_frame reserved the announced length before the body came \
         (Vec::with_capacity(len), vec![0; len], reserve(len)): the pages are never touched, \
         so the peak memory does not show it, but each stalled client holds 16 MiB of the \
         server's address space and a few hundred of them exhaust it. A length within max is \
         only announced: reserve a bounded amount up front (64 KiB, say) and let the buffer \
         grow with the bytes that come (read_to_end on take(len))",
        mib(body_grown),
        mib(prefix_grown),
        mib(excess)
    )))
}
