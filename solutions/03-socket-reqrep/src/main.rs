//! The socket-reqrep program. The grader runs it; you can too, in two terminals:
//!
//! ```text
//! cargo run -p socket-reqrep -- server --unix /tmp/rpc.sock
//! cargo run -p socket-reqrep -- client --unix /tmp/rpc.sock --requests reqs.bin --output out.bin
//! ```
//!
//! (`--tcp 0` for the server picks a free port on 127.0.0.1 and prints it; `--tcp PORT` for the
//! client.) A requests file holds records of op (1 byte), payload length (4 bytes
//! little-endian) and payload; the client writes each response as status (1 byte), length (4
//! bytes little-endian) and payload to the output file.
//!
//! Run by the grader, the server says `ready` (with `port` for TCP) once it listens, serves until
//! SIGTERM or SIGINT, then says `done` with its counts and waits for `exit` (so that the grader can
//! look at what is left of it); with `--runs N`, it binds and serves again after each of the first
//! N - 1 stops, once the grader says `again` (run_server called again in the same process); the client says `ready` once connected, waits for `go`, makes its
//! calls and says `done`. Failures are `failed` with `kind=` from
//! [`RpcError::kind`]. Keep this file as it is.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args as ClapArgs, Parser, Subcommand};
use ipc_labs_driver::Control;
use ipc_labs_driver::bench::{Bench, Side};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, fork};
use socket_reqrep::{Client, Endpoint, Listener, MAX_PAYLOAD, OP_ECHO, RpcError, run_server};

/// A tiny request-response RPC over a Unix domain socket or TCP on loopback.
#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

/// Unix socket path or TCP port on 127.0.0.1.
#[derive(ClapArgs)]
#[group(required = true, multiple = false)]
struct Where {
    /// The Unix domain socket's path.
    #[arg(long)]
    unix: Option<PathBuf>,
    /// The TCP port on 127.0.0.1 (0 for the server: any free port).
    #[arg(long)]
    tcp: Option<u16>,
}

impl Where {
    fn endpoint(&self) -> Endpoint {
        match (&self.unix, self.tcp) {
            (Some(path), _) => Endpoint::Unix(path.clone()),
            (None, Some(port)) => Endpoint::Tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, port))),
            (None, None) => unreachable!("clap requires one"),
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Serves clients until SIGTERM.
    Server {
        #[command(flatten)]
        at: Where,
        /// How many servers to run in turn in this process, each until SIGTERM.
        #[arg(long, default_value_t = 1)]
        runs: u32,
    },
    /// Sends the requests of a file, one call at a time, and writes the responses.
    Client {
        #[command(flatten)]
        at: Where,
        /// The requests: op (1 byte), length (u32 LE), payload, repeated.
        #[arg(long)]
        requests: PathBuf,
        /// Where the responses go: status (1 byte), length (u32 LE), payload, repeated.
        #[arg(long)]
        output: PathBuf,
    },
}

/// Reports `error` to the grader and on stderr.
fn report(control: &Control, error: &RpcError) -> ExitCode {
    eprintln!("socket-reqrep: {error}");
    control.send(
        "failed",
        &[
            ("kind", error.kind().to_string()),
            ("error", error.to_string()),
        ],
    );
    ExitCode::FAILURE
}

/// Reads a requests file.
fn read_requests(path: &Path) -> Vec<(u8, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut requests = Vec::new();
    let mut rest = &bytes[..];
    while rest.len() >= 5 {
        let len = u32::from_le_bytes(rest[1..5].try_into().expect("4 bytes")) as usize;
        let payload = rest[5..].get(..len).expect("a truncated requests file");
        requests.push((rest[0], payload.to_vec()));
        rest = &rest[5 + len..];
    }
    requests
}

fn server(control: &Control, endpoint: &Endpoint, runs: u32) -> ExitCode {
    for run in 1..=runs {
        let last = run == runs;
        if let Err(code) = serve_once(control, endpoint, last) {
            return code;
        }
    }
    ExitCode::SUCCESS
}

/// One server: bind, run_server() until the signal, report; then wait for `exit` (`last`) or for
/// `again`.
fn serve_once(control: &Control, endpoint: &Endpoint, last: bool) -> Result<(), ExitCode> {
    let listener = match Listener::bind(endpoint) {
        Ok(listener) => listener,
        Err(error) => return Err(report(control, &error)),
    };
    let port = match listener.endpoint() {
        Ok(Endpoint::Tcp(addr)) => addr.port().to_string(),
        _ => String::new(),
    };
    control.send("ready", &[("port", port.clone())]);
    if !control.is_graded() {
        println!("listening on {endpoint} (port {port}); SIGTERM or Ctrl-C stops");
    }
    match run_server(listener) {
        Ok(stats) => {
            // In the log, what the server's threads wrote before run_server() returned comes
            // before this line.
            eprintln!("socket-reqrep: run_server returned {stats:?}");
            control.send(
                "done",
                &[
                    ("clients", stats.clients.to_string()),
                    ("requests", stats.requests.to_string()),
                    ("dropped", stats.dropped.to_string()),
                ],
            );
            if !control.is_graded() {
                println!("{stats:?}");
            }
            control.wait_for(if last { "exit" } else { "again" });
            Ok(())
        }
        Err(error) => Err(report(control, &error)),
    }
}

fn client(control: &Control, endpoint: &Endpoint, requests: &Path, output: &Path) -> ExitCode {
    let requests = read_requests(requests);
    let mut client = match Client::connect(endpoint) {
        Ok(client) => client,
        Err(error) => return report(control, &error),
    };
    control.send("ready", &[]);
    control.wait_for("go");
    let file = std::fs::File::create(output).expect("creating the output file");
    let mut out = std::io::BufWriter::new(file);
    for (op, payload) in &requests {
        let response = match client.call(*op, payload) {
            Ok(response) => response,
            Err(error) => return report(control, &error),
        };
        out.write_all(&[response.status])
            .and_then(|()| out.write_all(&(response.payload.len() as u32).to_le_bytes()))
            .and_then(|()| out.write_all(&response.payload))
            .expect("writing the output file");
    }
    out.flush().expect("writing the output file");
    control.send("done", &[("calls", requests.len().to_string())]);
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let control = Control::start("socket-reqrep");
    if let Some(bench) = Bench::requested(&control) {
        return bench_calls(&control, bench);
    }
    match Args::parse().command {
        Command::Server { at, runs } => server(&control, &at.endpoint(), runs),
        Command::Client {
            at,
            requests,
            output,
        } => client(&control, &at.endpoint(), &requests, &output),
    }
}

/// `socket-reqrep bench unix|tcp`: a forked server (run_server) and a client in the parent
/// that times echo calls of the grader's sizes (up to MAX_PAYLOAD), for `cargo grade bench`.
fn bench_calls(control: &Control, mut bench: Bench) -> ExitCode {
    bench.sizes.retain(|&size| size <= MAX_PAYLOAD);
    let endpoint = match bench.what.as_str() {
        "tcp" => Endpoint::Tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
        _ => Endpoint::Unix(bench.path.clone()),
    };
    let samples = (|| {
        let listener = Listener::bind(&endpoint).map_err(|e| e.to_string())?;
        let endpoint = listener.endpoint().map_err(|e| e.to_string())?;
        // SAFETY: the program is single-threaded here; the child runs the server and exits.
        let server = match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
            ForkResult::Child => {
                let _ = bench.pin(Side::Peer, Pid::from_raw(0));
                let code = i32::from(run_server(listener).is_err());
                std::process::exit(code);
            }
            ForkResult::Parent { child } => child,
        };
        drop(listener);
        let measured = (|| {
            bench
                .pin(Side::Timer, Pid::from_raw(0))
                .map_err(|e| format!("sched_setaffinity: {e}"))?;
            let mut client = Client::connect(&endpoint).map_err(|e| e.to_string())?;
            let message = vec![0x5a; bench.largest()];
            bench.time(|size| match client.call(OP_ECHO, &message[..size]) {
                Ok(response) if response.payload.len() == size => Ok(()),
                Ok(response) => Err(format!(
                    "{size} bytes sent, {} echoed",
                    response.payload.len()
                )),
                Err(error) => Err(error.to_string()),
            })
        })();
        let _ = kill(server, Signal::SIGTERM);
        let _ = waitpid(server, None);
        measured
    })();
    let ok = bench.finish(control, samples);
    control.wait_for("exit");
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
