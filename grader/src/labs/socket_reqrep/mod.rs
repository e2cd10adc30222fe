//! Checks of lab 3, request-response over sockets: a length-prefixed RPC served over a Unix
//! domain socket and over TCP on loopback.
//!
//! `socket-reqrep server --unix PATH | --tcp 0` says `ready` (with `port` for TCP) once it
//! listens, serves until SIGTERM or SIGINT, then says `done` with its counts and waits for
//! `exit`. `socket-reqrep client (--unix PATH | --tcp PORT) --requests F --output O` says `ready`
//! once connected, waits for `go`, makes one call per request and says `done`. The grader also
//! talks to the server itself (its own client, and Python or socat when the machine has them),
//! points the client at servers of its own, and reads both programs from `/proc`: their threads
//! and what they are blocked in, their descriptors, signal masks and memory use.
//!
//! The table of checks is here; `protocol.rs` holds the frame format and the grader's own
//! client, `programs.rs` the driving of the server and client programs (and `stuck.rs` the
//! description of a server that does not stop), `observe.rs` what is read
//! of them in `/proc`, and the other files the checks, by what they judge.
//! Beside `programs.rs`: `client_procs.rs` (the client processes),
//! `grader_server.rs` (the grader's own server) and `external_programs.rs` (the grader's client
//! programs).

mod accept_errors;
mod accept_wakeup;
mod announced_allocation;
mod binding;
mod client;
mod client_procs;
mod client_reads;
mod concurrency;
mod crowd;
mod drop_counts;
mod dup_failure;
mod ended_handlers;
mod external_programs;
mod failures;
mod forced;
mod forced_client;
mod foreign_clients;
mod grader_server;
mod half_close;
mod handler_start_held;
mod large_payloads;
mod lingering;
mod observe;
mod other_signals;
mod port_in_use;
mod programs;
mod protocol;
mod repeated_requests;
mod requests;
mod served_again;
mod socket_file_owner;
mod stalled_frames;
mod stop_accept_failure;
mod stop_held;
mod stopping;
mod stuck;
mod tcp_frames;

use std::time::Duration;

use crate::engine::diagnose::{Activity, Hang};
use crate::engine::{Check, Lab};

pub static LAB: Lab = Lab {
    number: 3,
    slug: "socket-reqrep",
    title: "Request-response over sockets: a framed RPC over Unix and TCP sockets",
    cleanup_points: 2,
    explain_hang,
    checks: &[
        Check {
            name: "unix-requests",
            points: 3,
            timeout: Duration::from_secs(10),
            description: "random echo, reverse, hash and unknown-op requests are answered \
                          correctly over a Unix domain socket; every op byte but E, R and H is \
                          unknown",
            exclusive: false,
            hint: Some(
                "A frame is a u32 big-endian length, then the head and the payload, both ways; each op byte is answered as the table says. See docs/labs/03-socket-reqrep.md, the task and the rules table.",
            ),
            run: requests::unix_requests,
        },
        Check {
            name: "tcp-requests",
            points: 3,
            timeout: Duration::from_secs(10),
            description: "the same over TCP, on the loopback address and the port the server \
                          chose; small calls are not held back by Nagle's algorithm",
            exclusive: false,
            hint: Some(
                "Over TCP: bind 127.0.0.1, report the port, and let each frame leave at once. See docs/labs/03-socket-reqrep.md, the rules table (the TCP rules).",
            ),
            run: tcp_frames::tcp_requests,
        },
        Check {
            name: "byte-at-a-time",
            points: 3,
            timeout: Duration::from_secs(15),
            description: "requests the grader writes one byte per write() are answered, over \
                          both transports",
            exclusive: false,
            hint: Some(
                "A read may return any part of a frame: read_frame loops until the length prefix and then the body are whole. See docs/labs/03-socket-reqrep.md, the rules table (\"read_frame loops\").",
            ),
            run: requests::byte_at_a_time,
        },
        Check {
            name: "pipelined",
            points: 3,
            timeout: Duration::from_secs(10),
            description: "200 requests the grader writes in a single write() get 200 responses, \
                          in order",
            exclusive: false,
            hint: Some(
                "Several frames can arrive in one read: answer each request in order, and keep nothing read for the next frame out of sight. See docs/labs/03-socket-reqrep.md, the rules table (\"one response per request, in order\").",
            ),
            run: requests::pipelined,
        },
        Check {
            name: "large-payloads",
            points: 3,
            timeout: Duration::from_secs(20),
            description: "payloads of several MiB go both ways, over both transports, and a \
                          response survives the server being stopped and resumed mid-write",
            exclusive: false,
            hint: Some(
                "Large frames arrive and leave in many pieces: read_frame loops and write_frame writes every byte. See docs/labs/03-socket-reqrep.md, the rules table (the read_frame and write_frame rules).",
            ),
            run: large_payloads::large_payloads,
        },
        Check {
            name: "size-limit",
            points: 2,
            timeout: Duration::from_secs(15),
            description: "a payload of exactly MAX_PAYLOAD (16 MiB) goes both ways; a frame one \
                          byte longer is refused",
            exclusive: false,
            hint: Some(
                "MAX_BODY = MAX_PAYLOAD + 1, for requests and responses; a longer length is TooLong, found before anything is allocated. See docs/labs/03-socket-reqrep.md, the rules table (the size rules).",
            ),
            run: failures::size_limit,
        },
        Check {
            name: "many-clients",
            points: 5,
            timeout: Duration::from_secs(40),
            description: "8 client processes with 40 requests each get only their own \
                          responses while 8 other clients stall mid-request and one does not \
                          read; the idle server blocks, the stalled clients are served when they \
                          go on, and one more while 300 others are idle",
            // Alone: its server's hundreds of threads count against RLIMIT_NPROC, which covers
            // every process of the user, and would leave another check's programs, started
            // with a limit of their own, short of threads (unprivileged, where it is enforced).
            exclusive: true,
            hint: Some(
                "Serve clients concurrently, so that a stalled one holds up nobody, and block while there is nothing to do. See docs/labs/03-socket-reqrep.md, the rules table (the concurrency and blocking rules).",
            ),
            run: concurrency::many_clients,
        },
        Check {
            name: "bad-input",
            points: 5,
            timeout: Duration::from_secs(25),
            description: "frames cut short (in the length prefix or the body, down to the last \
                          byte), an empty frame, an absurd length, a client gone mid-request and \
                          a reset connection each get that client dropped and logged with the \
                          right kind; the server allocates nothing absurd, keeps no socket of \
                          theirs, retries interrupted calls, survives a failed accept(), and \
                          serves on",
            exclusive: false,
            hint: Some(
                "Each bad client is logged with its kind and loses its connection at once, never the server. See docs/labs/03-socket-reqrep.md, the rules table (the error kinds and log_dropped rules).",
            ),
            run: failures::bad_input,
        },
        Check {
            name: "server-counts",
            points: 2,
            timeout: Duration::from_secs(10),
            description: "the server's `done` counts the clients it accepted, the requests it \
                          answered (those of clients still connected at SIGTERM included) and \
                          the clients it dropped; run_server() called again in the same process \
                          serves and counts afresh",
            exclusive: false,
            hint: Some(
                "ServerStats counts clients, requests answered and clients dropped; end of stream between frames is a normal end. See docs/labs/03-socket-reqrep.md, the rules table (the ServerStats rule).",
            ),
            run: stopping::server_counts,
        },
        Check {
            name: "drop-counts",
            points: 1,
            timeout: Duration::from_secs(10),
            description: "every client dropped with an error, a reset and a broken pipe too, is \
                          counted as it is logged, and no count is lost while a handler logs",
            exclusive: false,
            hint: Some(
                "ServerStats::dropped counts every client logged with log_dropped, and each count is updated in place under one lock. See docs/labs/03-socket-reqrep.md, the rules table (the ServerStats rules).",
            ),
            run: drop_counts::drop_counts,
        },
        Check {
            name: "ended-handlers-joined",
            points: 1,
            timeout: Duration::from_secs(10),
            description: "clients served one after another leave the server no bigger: a \
                          handler that has ended is joined as the server goes, not at the stop",
            exclusive: false,
            hint: Some(
                "A server runs long: join the handlers that have ended as it goes (each time a client is accepted), so that their threads' stacks are freed. See docs/labs/03-socket-reqrep.md, the rules table (the run_server rules).",
            ),
            run: ended_handlers::ended_handlers_joined,
        },
        Check {
            name: "sigterm-cleanup",
            points: 3,
            timeout: Duration::from_secs(20),
            description: "SIGTERM and SIGINT, blocked and waited for, stop the server cleanly \
                          with clients connected: no new client is served, every handler is \
                          waited for, the socket file goes and the port closes",
            exclusive: false,
            hint: Some(
                "SIGTERM and SIGINT are blocked in every thread and waited for; on one the server stops accepting, shuts its connections, waits for its handlers and removes its socket. See docs/labs/03-socket-reqrep.md, the rules table (the stop rules).",
            ),
            run: stopping::sigterm_cleanup,
        },
        Check {
            name: "socket-paths",
            points: 2,
            timeout: Duration::from_secs(10),
            description: "a 107-byte socket path binds and a 108-byte one fails with kind=bind; \
                          a path where a file (or a live server's socket) already is fails with \
                          kind=bind and leaves that file alone",
            exclusive: false,
            hint: Some(
                "bind creates the socket file, an existing path is EADDRINUSE and is left alone, and a path holds at most 107 bytes. See docs/labs/03-socket-reqrep.md, the rules table (the Listener::bind rules).",
            ),
            run: binding::socket_paths,
        },
        Check {
            name: "socket-file-owner",
            points: 2,
            timeout: Duration::from_secs(15),
            description: "only Listener::remove removes the socket file: a file already gone at \
                          the stop is kind=remove, a forked copy of the listener dropped leaves \
                          it, and a dead socket file however old is kind=bind and left alone",
            exclusive: false,
            hint: Some(
                "The server's stop removes its socket file and reports any failure, a file already gone too; nothing else removes it, not a Drop, not a bind over an old file. See docs/labs/03-socket-reqrep.md, the rules table (the Listener::bind and Listener::remove rules).",
            ),
            run: socket_file_owner::socket_file_owner,
        },
        Check {
            name: "port-in-use",
            points: 1,
            timeout: Duration::from_secs(10),
            description: "a server given a TCP port already listened on fails with kind=bind \
                          and EADDRINUSE, even where the listener there shares its port \
                          (SO_REUSEPORT)",
            exclusive: false,
            hint: Some(
                "A port in use is EADDRINUSE: bind with TcpListener::bind, without SO_REUSEPORT. See docs/labs/03-socket-reqrep.md, the rules table (the Listener::bind rules).",
            ),
            run: port_in_use::port_in_use,
        },
        Check {
            name: "foreign-clients",
            points: 3,
            timeout: Duration::from_secs(15),
            description: "the server answers clients it did not write: the grader's own, and \
                          Python and socat when the machine has them",
            exclusive: false,
            hint: Some(
                "The server speaks the frame format exactly, so that clients written by others understand it. See docs/labs/03-socket-reqrep.md, the task and the rules table (the frame rule).",
            ),
            run: foreign_clients::foreign_clients,
        },
        Check {
            name: "client-over-socket",
            points: 3,
            timeout: Duration::from_secs(15),
            description: "the client, pointed at the grader's own server over both transports, \
                          sends every request over the socket (repeats too, and a large one \
                          through a stop and resume) and writes the answers it gets",
            exclusive: false,
            hint: Some(
                "Client::call sends one request over the connection Client::connect opened and returns what the server sent. See docs/labs/03-socket-reqrep.md, the rules table (the Client::call rule).",
            ),
            run: client::client_over_socket,
        },
        Check {
            name: "client-reads",
            points: 1,
            timeout: Duration::from_secs(10),
            description: "the client reads a small response, its length and its body, in one \
                          read(), through its buffer",
            exclusive: false,
            hint: Some(
                "Client::conn is read through its BufReader, so that a response's length and a small body come in one read(). See docs/labs/03-socket-reqrep.md, the rules table (the Client::conn rule).",
            ),
            run: client_reads::client_reads,
        },
        Check {
            name: "client-errors",
            points: 2,
            timeout: Duration::from_secs(15),
            description: "the client reports kind=connect with no server there, kind=closed when \
                          the server hangs up instead of answering, and kind=truncated when the \
                          answer is cut short, in its length prefix too",
            exclusive: false,
            hint: Some(
                "A failed connect is Connect, a server that closes instead of answering Closed, a cut response Truncated. See docs/labs/03-socket-reqrep.md, the rules table (the client error rules).",
            ),
            run: client::client_errors,
        },
    ],
};

const OP_ECHO: u8 = b'E';
const OP_REVERSE: u8 = b'R';
const OP_HASH: u8 = b'H';
const STATUS_OK: u8 = 0;
const STATUS_UNKNOWN_OP: u8 = 1;
/// The largest payload the protocol allows, and the largest frame body (its head byte and that
/// payload).
const MAX_PAYLOAD: usize = 16 << 20;
const MAX_BODY: usize = MAX_PAYLOAD + 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Unix,
    Tcp,
}

impl Transport {
    fn describe(self) -> &'static str {
        match self {
            Transport::Unix => "a Unix socket",
            Transport::Tcp => "TCP",
        }
    }
}

fn explain_hang(hang: &Hang) -> Option<String> {
    let server = hang.by_role("the server")?;
    let reading = server
        .activities
        .iter()
        .any(|a| matches!(a, Activity::SocketRead { .. }));
    let clients_waiting = hang
        .processes
        .iter()
        .filter(|p| p.role != "the server")
        .any(|p| {
            p.activities
                .iter()
                .any(|a| matches!(a, Activity::SocketRead { .. }))
        });
    if reading && clients_waiting {
        return Some(
            "the server and its clients are all waiting to read: the server waits for bytes \
             of a request it believes incomplete (read the exact frame length, no more) or \
             serves one client at a time"
                .into(),
        );
    }
    None
}
