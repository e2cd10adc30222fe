//! Clients served at once: a client that stalls holds up nobody, is not dropped for being slow,
//! and a server with nothing to do blocks until there is something.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::RngExt;

use super::client_procs::spawn_client;
use super::observe;
use super::programs::crowded_server;
use super::protocol::{frame, random_requests_for, read_response, verify};
use super::{OP_ECHO, OP_HASH, OP_REVERSE, Transport};
use crate::engine::diagnose::Activity;
use crate::engine::waiting::{self, WaitRules};
use crate::engine::{Fail, Run, inspect};

/// Where each stalled client stops in its request: before its first byte, inside the length
/// prefix, right after it, after the op byte, in the payload, one byte short.
fn stall_point(k: usize, whole: usize) -> usize {
    match k {
        0 => 0,
        1 => 1,
        2 => 3,
        3 => 4,
        4 => 5,
        5 => whole / 2,
        6 => whole - 1,
        _ => 2,
    }
}

pub fn many_clients(run: &mut Run) -> Result<String, Fail> {
    const CLIENTS: usize = 8;
    const STALLED: usize = 8;
    let server = crowded_server(run, Transport::Unix)?;
    // Clients of the grader's that send part of a request and then nothing, until the end:
    // more of them than a small pool of threads would serve.
    let mut stalled = Vec::new();
    for k in 0..STALLED {
        let op = [OP_ECHO, OP_REVERSE, OP_HASH][k % 3];
        let len = run.rng().random_range(20..60);
        let mut payload = format!("stalled {k} ").into_bytes();
        payload.extend(run.random_bytes(len));
        let whole = frame(op, &payload);
        let cut = stall_point(k, whole.len());
        let mut conn = server.connect()?;
        conn.send(&whole[..cut], 0)?;
        stalled.push((conn, whole, cut, op, payload));
    }
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let requests = random_requests_for(run, 40, &format!("client{c}"));
        clients.push(spawn_client(
            run,
            &server.where_args(),
            requests,
            &format!("client {}", c + 1),
        )?);
    }
    let started = Instant::now();
    for client in &mut clients {
        client.proc.send("go", &[])?;
    }
    let limit = started + Duration::from_secs(15);
    for client in &mut clients {
        let status = client.proc.wait_until(limit)?;
        if let Some(status) = status.filter(|s| !s.success()) {
            // Its last message, as the log has it: "program -> failed kind=... error=...".
            let said = client
                .proc
                .transcript
                .lock()
                .expect("transcript lock")
                .last()
                .map(|l| l.trim_start_matches("program -> ").to_string())
                .unwrap_or_default();
            return Err(Fail::failed(format!(
                "{} ended with {status} ({said}), one of {CLIENTS} clients served at once{}",
                client.role,
                server.alive_note()
            )));
        }
        if status.is_none() {
            return Err(Fail::failed(format!(
                "{} did not finish its 40 requests within 15 s while {STALLED} other clients \
                 had sent part of a request and stalled: the server waits on one client (or a \
                 few) at a time; serve every client concurrently (a thread or process per \
                 client, or poll())",
                client.role
            )));
        }
    }
    for client in &clients {
        client.verify().map_err(|fail| match fail {
            Fail::Failed(m) => Fail::failed(format!(
                "{m} (with {CLIENTS} clients at once: each connection must get only its own \
                 responses, keep per-client state per connection)"
            )),
            other => other,
        })?;
    }

    // A client that sends a request with a large response and does not read it: its handler
    // must block writing, with nothing to do until the client reads.
    let unread_payload = run.random_bytes(4 << 20);
    let mut unread = server.connect()?;
    unread.send(&frame(OP_ECHO, &unread_payload), 0)?;

    // Now the server has nothing to do but wait for the stalled clients.
    // A server with nothing to do has no reason to wake up at all: a wake-up is a loop that
    // looks again (a read timeout, a poll() timeout) instead of being woken.
    let tree = server.proc.tree();
    const ADVICE: &str = "with nothing to do, every thread must block until there is something: \
                          in accept() for the next client, in read() for a client's next bytes \
                          (no read timeout), in write() for a client that does not read its \
                          response (a blocking socket, no sleep between tries), in sigwait() \
                          for the signal";
    // The handler of the client that does not read is blocked writing (a server that polls its
    // sockets is in poll() instead: the judgment below tells).
    observe::writing_a_socket(server.pid(), Instant::now() + Duration::from_secs(2));
    // Counted from the moment every thread sleeps: from then on, a thread blocked until there is
    // something to do does not wake up once.
    settle(&tree);
    let before = wakeups(&tree);
    let watched = Instant::now();
    let waiters = waiting::expect_blocked(
        &tree,
        &|_| "the server".into(),
        WaitRules {
            wakeups_per_second: 5.0,
            timeouts: false,
        },
        ADVICE,
    )?;
    let after = wakeups(&tree);
    let ms = watched.elapsed().as_millis();
    // Only threads waiting on a client, a listener or a timer: nothing wakes them but a client
    // (a thread that reaps children or waits on a lock may be woken by a handler just ending).
    let on_clients = |pid: i32, tid: i32| {
        waiters.iter().find(|w| {
            w.pid == pid
                && w.tid == tid
                && matches!(
                    w.activity,
                    Activity::SocketRead { .. }
                        | Activity::SocketWrite { .. }
                        | Activity::SocketAccept { .. }
                        | Activity::Poll
                        | Activity::Sleep
                )
        })
    };
    if let Some((waiter, woke)) = after
        .iter()
        .filter_map(|((pid, tid), n)| {
            Some((
                on_clients(*pid, *tid)?,
                n.checked_sub(*before.get(&(*pid, *tid))?)?,
            ))
        })
        .find(|(_, woke)| *woke > 0)
    {
        return Err(Fail::failed(format!(
            "the server's thread {} (pid {}), seen {}, woke up {woke} time(s) in {ms} ms while \
             nothing happened (only stalled clients connected, one of them not reading a \
             response, every thread asleep when the count began): a thread that wakes with nothing to do polls, on a timeout (a read \
             timeout retried, a poll() or sleep between looks); {ADVICE}",
            waiter.tid,
            waiter.pid,
            waiter.activity.describe()
        )));
    }

    // A wait with a timeout is a poll however long the timeout, and a write timeout drops a
    // client that only reads late: no socket of the server may have one.
    for &pid in &tree {
        if let Some(timeouts) = observe::sockets_with_timeouts(pid).into_iter().next() {
            let (fd, what) = (timeouts.fd, timeouts.describe());
            return Err(Fail::failed(format!(
                "the server's socket {fd} (pid {pid}, read on a copy of the descriptor while \
                 only stalled clients were connected, one of them not reading a response) has \
                 {what}: a thread blocked on it wakes when the timeout ends, to look again or \
                 to drop a client that is only slow: a slow client is not a bad one (one that \
                 pauses mid-request, or reads its response late); {ADVICE}"
            )));
        }
    }

    // The stalled clients go on: each is still connected, and is answered.
    let paused = started.elapsed();
    for (k, (mut conn, whole, cut, op, payload)) in stalled.into_iter().enumerate() {
        let answer = conn
            .stream()
            .write_all(&whole[cut..])
            .and_then(|()| read_response(&mut conn));
        match answer {
            Ok(got) => verify(
                got,
                op,
                &payload,
                &format!("stalled client {k}, once it went on"),
            )?,
            Err(e) => {
                let log = server
                    .dropped_lines()
                    .first()
                    .map(|l| format!(" (the server's log: `{l}`)"))
                    .unwrap_or_default();
                return Err(Fail::failed(format!(
                    "a client that had sent {cut} of the {} bytes of a request and paused for \
                     {:.1} s while the others were served got no answer when it went on \
                     ({e}){log}: a slow client is not a bad one; serve each client \
                     concurrently, with no time limit that drops it",
                    whole.len(),
                    paused.as_secs_f64()
                )));
            }
        }
    }
    let answer = read_response(&mut unread).map_err(|e| {
        Fail::failed(format!(
            "a client that had not read its 4 MiB echo response for {:.1} s got no whole \
             response when it read it ({e}): a slow reader is not a bad one",
            paused.as_secs_f64()
        ))
    })?;
    verify(
        answer,
        OP_ECHO,
        &unread_payload,
        "a client that read its response late",
    )?;
    // More idle clients than any small pool of threads holds, and than the threads the server
    // has now (a pool started in advance, whatever its size): one more must still be served.
    let (idle, threads) = super::crowd::idle_clients_past_the_threads(server.pid());
    let crowd = (0..idle)
        .map(|_| server.connect())
        .collect::<Result<Vec<_>, Fail>>()?;
    server.ping().map_err(|fail| match fail {
        Fail::Failed(m) => Fail::failed(format!(
            "with {idle} clients connected and idle{}, {m}: the new client waits behind the \
             others, as if the server served a fixed number of clients at a time; serve every \
             client concurrently, however many are connected (a thread or process per client, \
             or poll())",
            super::crowd::pool_note(idle, threads)
        )),
        other => other,
    })?;
    drop(crowd);
    server.stop()?;
    Ok(format!(
        "{CLIENTS} clients got their own 40 responses each while {STALLED} others stalled and \
         one did not read its response; the idle server blocked, the stalled clients were \
         answered when they went on, and a client was served while {idle} others were connected \
         and idle"
    ))
}

/// Waits (up to a second) until every thread of `pids` sleeps: the server may still be
/// finishing what it did for the clients that have just gone.
fn settle(pids: &[i32]) {
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        let asleep = pids.iter().all(|&pid| {
            inspect::view(pid).is_none_or(|view| {
                view.state == 'Z' || view.threads.iter().all(|t| matches!(t.state, 'S' | 'D'))
            })
        });
        if asleep {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// How often each thread of `pids` has gone to sleep (voluntary context switches).
fn wakeups(pids: &[i32]) -> BTreeMap<(i32, i32), u64> {
    pids.iter()
        .flat_map(|&pid| {
            inspect::thread_times(pid)
                .into_iter()
                .map(move |(tid, times)| ((pid, tid), times.sleeps))
        })
        .collect()
}
