//! `ended-handlers-joined`: a server runs for a long time, so what a client costs it must go
//! with the client. Clients served one after another, each gone and its connection closed before
//! the next comes, must leave the server no bigger: a handler's thread that has ended is joined
//! by the next accept at the latest, and its stack freed (or reused for the next thread).

use std::net::Shutdown;
use std::time::{Duration, Instant};

use super::OP_REVERSE;
use super::Transport;
use super::observe;
use super::programs::{Server, server};
use super::protocol::{frame, read_response, verify};
use crate::engine::{Fail, Run};

/// Clients served before the server is first measured (allocator arenas, stack caches).
const WARM_UP: usize = 2;
const CLIENTS: usize = 16;
/// More mappings than this after [`CLIENTS`] clients is growth with the clients: an ended
/// thread left unjoined keeps two (its stack and its guard page).
const SLACK: usize = 8;

pub fn ended_handlers_joined(run: &mut Run) -> Result<String, Fail> {
    let server = server(run, Transport::Unix)?;
    let pid = server.pid();
    for i in 0..WARM_UP {
        one_client(run, &server, i)?;
    }
    let (maps_before, size_before) = (mappings(pid), vm_size_kib(pid));
    for i in 0..CLIENTS {
        one_client(run, &server, WARM_UP + i)?;
    }
    let (maps_after, size_after) = (mappings(pid), vm_size_kib(pid));
    let grown = maps_after.saturating_sub(maps_before);
    server.stop()?;
    if grown > SLACK {
        return Err(Fail::failed(format!(
            "after {CLIENTS} clients served one after another, each gone and its connection closed \
             by the server before the next connected, the server had {grown} memory mappings more than \
             before them ({maps_before} then {maps_after} in /proc/{pid}/maps; VmSize {} MiB \
             then {} MiB): about two per client, an ended thread's stack and its guard page. \
             The threads of handlers that have ended are not joined until the stop (their \
             JoinHandles kept, say in a Vec, to the end), so each keeps its stack, and a \
             server that runs long grows with every client it has served. Join the handlers \
             that have ended as the server goes (each time a client is accepted, those whose \
             is_finished() is true)",
            size_before / 1024,
            size_after / 1024
        )));
    }
    Ok(format!(
        "{CLIENTS} clients served one after another left the server {grown} memory mappings \
         bigger"
    ))
}

/// A client connects, makes one call and shuts its writing side; returns once the server has
/// closed the connection and its handler's thread has ended.
fn one_client(run: &mut Run, server: &Server, i: usize) -> Result<(), Fail> {
    let payload = run.random_bytes(16 + i);
    let threads = observe::thread_ids(server.pid()).len();
    let mut conn = server.connect()?;
    conn.send(&frame(OP_REVERSE, &payload), 0)?;
    let got = read_response(&mut conn).map_err(|e| {
        Fail::failed(format!(
            "client {} of {} served one after another got no response ({e}){}",
            i + 1,
            WARM_UP + CLIENTS,
            server.alive_note()
        ))
    })?;
    verify(got, OP_REVERSE, &payload, "a client served after others")?;
    conn.shutdown(Shutdown::Write);
    conn.timeouts(Duration::from_secs(2));
    let mut byte = [0u8; 1];
    if !matches!(conn.stream().read(&mut byte), Ok(0)) {
        return Err(Fail::failed(format!(
            "a client that had made one call and shut its writing side (the end of the stream \
             between frames) did not see the server close the connection within 2 s{}: a \
             client that closes ends its handler, which closes its connection",
            server.alive_note()
        )));
    }
    // Its thread gone too (joined or not), so that the next client's thread is not started
    // beside it: on a loaded machine that would take a new stack and allocator arena.
    let until = Instant::now() + Duration::from_secs(2);
    while observe::thread_ids(server.pid()).len() > threads && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

fn mappings(pid: i32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map(|maps| maps.lines().count())
        .unwrap_or(0)
}

fn vm_size_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status.lines().find_map(|l| {
                l.strip_prefix("VmSize:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .unwrap_or(0)
}
