//! The pipe-echo program. The grader runs it; you can too:
//!
//! ```text
//! cargo run -p pipe-echo -- --input Cargo.toml --output /tmp/echoed
//! cmp Cargo.toml /tmp/echoed
//! ```
//!
//! Keep this file as it is: the grader talks to it over its control channel.

use std::os::fd::{AsFd, AsRawFd, IntoRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

use clap::Parser;
use ipc_labs_driver::bench::{Bench, Side};
use ipc_labs_driver::{Control, install_noop_handler};
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, pipe};
use pipe_echo::{EchoChild, PipeEchoError, echo_loop, write_all};

/// Sends a file's bytes through an echo child and writes what comes back to another file.
#[derive(Parser)]
struct Args {
    /// The file whose bytes are sent to the echo child.
    #[arg(long)]
    input: PathBuf,
    /// Where the echoed bytes are written (only if the exchange succeeded).
    #[arg(long)]
    output: PathBuf,
    /// Install a do-nothing SIGUSR1 handler before forking, so that SIGUSR1 interrupts system
    /// calls in both processes instead of killing them (the grader sends it during the transfer).
    #[arg(long)]
    interruptible: bool,
    /// Call exchange() a second time after the first, and report what it returned.
    #[arg(long)]
    twice: bool,
    /// Once the first child is reaped, spawn a second one in the same process (saying
    /// `again-ready` with its pid, then waiting for `again-go`) and send it the same input: the
    /// output and the report's `exchange` and `wait` are the second child's, the first's are
    /// reported as `first-exchange` and `first-wait`.
    #[arg(long)]
    again: bool,
    /// Fork a child of the program's own before spawn(), which exits at once, and reap it after
    /// wait() (reported as `other-child`): wait() must reap the echo child, not any child.
    #[arg(long)]
    other_child: bool,
    /// Call wait() right after spawn(), with no exchange() at all, and report only what wait()
    /// returned: wait() must close both pipe ends itself, so that the child sees end-of-file on
    /// pipe A, exits, and waitpid() returns.
    #[arg(long)]
    wait_only: bool,
    /// Open the input file twice after spawn(), and after wait() report whether both
    /// descriptors still refer to it (as `own-files`): the lab's code closes only what it opened.
    #[arg(long)]
    own_files: bool,
}

/// Printed without a newline before spawn(), so that it is still in stdout's buffer when the
/// child is forked: the child, which ends with _exit(), must not print it a second time.
const BEFORE_SPAWN: &str = "pipe-echo: spawning the echo child; ";

/// The program's own pid, and its control socket, for [`exit_in_a_child`].
static PROGRAM_PID: AtomicU32 = AtomicU32::new(0);
static CONTROL_FD: AtomicI32 = AtomicI32::new(-1);

/// Runs at exit() (not at _exit()): in a process other than the program's own, that is a forked
/// child ending with exit(), which runs the parent's atexit handlers. It tells the grader.
extern "C" fn exit_in_a_child() {
    let pid = std::process::id();
    let fd = CONTROL_FD.load(Ordering::SeqCst);
    if pid != PROGRAM_PID.load(Ordering::SeqCst) && fd >= 0 {
        let message = format!("exit-in-child\npid={pid}");
        // SAFETY: a plain send() of a buffer that lives through the call.
        unsafe {
            nix::libc::send(
                fd,
                message.as_ptr().cast(),
                message.len(),
                nix::libc::MSG_NOSIGNAL,
            )
        };
    }
}

fn main() -> ExitCode {
    let control = Control::start("pipe-echo");
    if let Some(bench) = Bench::requested(&control) {
        return bench_echo(&control, &bench);
    }
    let args = Args::parse();
    let input = match std::fs::read(&args.input) {
        Ok(bytes) => bytes,
        Err(error) => {
            eprintln!("pipe-echo: cannot read {}: {error}", args.input.display());
            return ExitCode::from(2);
        }
    };
    if args.interruptible {
        install_noop_handler(Signal::SIGUSR1).expect("installing the SIGUSR1 handler");
    }
    PROGRAM_PID.store(std::process::id(), Ordering::SeqCst);
    if let Some(fd) = control.fd() {
        CONTROL_FD.store(fd.as_raw_fd(), Ordering::SeqCst);
    }
    // SAFETY: registers a function that only reads two atomics and sends one message.
    unsafe { nix::libc::atexit(exit_in_a_child) };

    let other_child = args.other_child.then(|| {
        // SAFETY: the program is single-threaded here, and the child only calls _exit().
        match unsafe { fork() }.expect("forking the program's other child") {
            // SAFETY: ends the child at once, without the parent's exit handlers.
            ForkResult::Child => unsafe { nix::libc::_exit(0) },
            ForkResult::Parent { child } => child,
        }
    });

    // The grader looks at the descriptors the program holds before spawn(), and may limit them.
    control.send("started", &[]);
    let go_ahead = control.wait_for("spawn");
    if let Some(limit) = go_ahead
        .get("descriptor-limit")
        .and_then(|l| l.parse().ok())
    {
        let limit = nix::libc::rlimit {
            rlim_cur: limit,
            rlim_max: limit,
        };
        // SAFETY: setrlimit reads the struct it is given.
        unsafe { nix::libc::setrlimit(nix::libc::RLIMIT_NOFILE, &limit) };
    }
    print!("{BEFORE_SPAWN}");
    let mut child = match EchoChild::spawn() {
        Ok(child) => child,
        Err(error) => return spawn_failed(&control, &error),
    };
    control.send("ready", &[("child", child.pid.to_string())]);
    control.wait_for("go");
    let own_files: Vec<RawFd> = if args.own_files {
        (0..2)
            .filter_map(|_| std::fs::File::open(&args.input).ok())
            .map(IntoRawFd::into_raw_fd)
            .collect()
    } else {
        Vec::new()
    };

    if args.wait_only {
        let (wait, ok) = match child.wait() {
            Ok(()) => ("ok".to_string(), true),
            Err(error) => {
                eprintln!("pipe-echo: wait: {error}");
                (format!("error {error}"), false)
            }
        };
        control.send("done", &[("wait", wait)]);
        control.wait_for("exit");
        return if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }

    let mut echoed = child.exchange(&input);
    let again = args.twice.then(|| child.exchange(&input));
    let mut waited = child.wait();
    let mut first = None;
    if args.again {
        // The same process, the same input, a new child: its echo must come through it too.
        let mut second = match EchoChild::spawn() {
            Ok(child) => child,
            Err(error) => return spawn_failed(&control, &error),
        };
        control.send("again-ready", &[("child", second.pid.to_string())]);
        control.wait_for("again-go");
        let second_echoed = second.exchange(&input);
        let second_waited = second.wait();
        first = Some((
            std::mem::replace(&mut echoed, second_echoed),
            std::mem::replace(&mut waited, second_waited),
        ));
    }
    let mut ok = true;
    let exchange = match &echoed {
        Ok(bytes) => match std::fs::write(&args.output, bytes) {
            Ok(()) => format!("ok {}", bytes.len()),
            Err(error) => {
                eprintln!("pipe-echo: cannot write {}: {error}", args.output.display());
                return ExitCode::from(2);
            }
        },
        Err(error) => {
            eprintln!("pipe-echo: exchange: {error}");
            ok = false;
            format!("error {error}")
        }
    };
    let wait = match &waited {
        Ok(()) => "ok".to_string(),
        Err(error) => {
            eprintln!("pipe-echo: wait: {error}");
            ok = false;
            format!("error {error}")
        }
    };
    drop(input);
    let mut report = vec![("exchange", exchange), ("wait", wait)];
    if let Some(again) = again {
        report.push((
            "again",
            outcome(&again, |bytes| format!("ok {}", bytes.len())),
        ));
    }
    if let Some((echoed, waited)) = first {
        let exchange = outcome(&echoed, |bytes| format!("ok {}", bytes.len()));
        report.push(("first-exchange", exchange));
        report.push(("first-wait", outcome(&waited, |()| "ok".into())));
    }
    if let Some(other) = other_child {
        let reaped = match waitpid(other, None) {
            Ok(status) => format!("ok {status:?}"),
            Err(error) => format!("error {error}"),
        };
        report.push(("other-child", reaped));
    }
    if args.own_files {
        report.push(("own-files", own_files_kept(&own_files, &args.input)));
    }
    control.send("done", &report);
    control.wait_for("exit");
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Reports a spawn() that failed, and waits for the grader to let the program exit.
fn spawn_failed(control: &Control, error: &PipeEchoError) -> ExitCode {
    eprintln!("pipe-echo: {error}");
    control.send("failed", &[("error", error.to_string())]);
    control.wait_for("exit");
    ExitCode::FAILURE
}

/// What a call returned, as reported: `ok...` as `ok` says, or `error MESSAGE`.
fn outcome<T>(returned: &Result<T, PipeEchoError>, ok: impl FnOnce(&T) -> String) -> String {
    match returned {
        Ok(value) => ok(value),
        Err(error) => format!("error {error}"),
    }
}

/// `ok` if every descriptor in `fds` still refers to `file`; else `lost FD,FD`. Those that do
/// are closed.
fn own_files_kept(fds: &[RawFd], file: &Path) -> String {
    let wanted = std::fs::metadata(file).map(|m| (m.dev(), m.ino())).ok();
    let mut lost = Vec::new();
    for &fd in fds {
        // SAFETY: fstat writes into the zeroed struct it is given.
        let mut stat: nix::libc::stat = unsafe { std::mem::zeroed() };
        let open = unsafe { nix::libc::fstat(fd, &mut stat) } == 0;
        if open && Some((stat.st_dev, stat.st_ino)) == wanted {
            // SAFETY: the descriptor is still the one opened above, and nothing else owns it.
            unsafe { nix::libc::close(fd) };
        } else {
            lost.push(fd.to_string());
        }
    }
    if lost.is_empty() {
        "ok".into()
    } else {
        format!("lost {}", lost.join(","))
    }
}

/// The bytes an empty pipe takes without blocking the writer (Linux's default).
const PIPE_CAPACITY: usize = 64 * 1024;

/// `pipe-echo bench WHAT`: messages of the grader's sizes go through a forked child running
/// echo_loop() and come back, sent with write_all() (by a writer thread when larger than a pipe
/// holds) while the parent reads the echo; one sample is one message's round trip, for
/// `cargo grade bench`. (exchange() ends the child, so it cannot be timed over many messages.)
fn bench_echo(control: &Control, bench: &Bench) -> ExitCode {
    let samples = (|| {
        let (child_reads, parent_writes) = pipe().map_err(|e| format!("pipe: {e}"))?;
        let (parent_reads, child_writes) = pipe().map_err(|e| format!("pipe: {e}"))?;
        // SAFETY: the program is single-threaded, so the child may run on after fork().
        let child = match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
            ForkResult::Child => {
                drop((parent_writes, parent_reads));
                let _ = bench.pin(Side::Peer, Pid::from_raw(0));
                let code = i32::from(echo_loop(child_reads, child_writes).is_err());
                std::process::exit(code);
            }
            ForkResult::Parent { child } => child,
        };
        drop((child_reads, child_writes));
        bench
            .pin(Side::Timer, Pid::from_raw(0))
            .map_err(|e| format!("sched_setaffinity: {e}"))?;
        let message = Arc::new(vec![0x5a; bench.largest()]);
        let (sizes, to_write) = std::sync::mpsc::channel::<usize>();
        let writes = Arc::new(parent_writes);
        let writer = {
            let (message, writes) = (message.clone(), writes.clone());
            std::thread::spawn(move || {
                for size in to_write {
                    write_all(writes.as_fd(), &message[..size])?;
                }
                Ok::<(), nix::errno::Errno>(())
            })
        };
        let mut echoed = vec![0u8; bench.largest().max(1)];
        let measured = bench.time(|size| {
            // A message that fits an empty pipe is written at once, without the thread's wake-up.
            if size <= PIPE_CAPACITY {
                write_all(writes.as_fd(), &message[..size])
                    .map_err(|e| format!("write_all: {e}"))?;
            } else {
                sizes
                    .send(size)
                    .map_err(|_| "the writer thread stopped".to_string())?;
            }
            let mut got = 0;
            while got < size {
                match nix::unistd::read(&parent_reads, &mut echoed[got..size]) {
                    Ok(0) => return Err(format!("{size} bytes sent, {got} echoed")),
                    Ok(n) => got += n,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(format!("read: {e}")),
                }
            }
            Ok(())
        });
        drop(sizes);
        let written = writer
            .join()
            .map_err(|_| "the writer thread panicked".to_string())?;
        drop(writes);
        drop(parent_reads);
        let ended = waitpid(child, None);
        let samples = measured?;
        written.map_err(|e| format!("write_all: {e}"))?;
        match ended {
            Ok(WaitStatus::Exited(_, 0)) => Ok(samples),
            other => Err(format!("the echo child ended with {other:?}")),
        }
    })();
    let ok = bench.finish(control, samples);
    control.wait_for("exit");
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
