//! The pipe-echo program. The grader runs it; you can too:
//!
//! ```text
//! cargo run -p pipe-echo -- --input Cargo.toml --output /tmp/echoed
//! cmp Cargo.toml /tmp/echoed
//! ```
//!
//! Keep this file as it is: the grader talks to it over its control channel.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use ipc_labs_driver::{Control, install_noop_handler};
use nix::sys::signal::Signal;
use pipe_echo::EchoChild;

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
}

fn main() -> ExitCode {
    let control = Control::start("pipe-echo");
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

    let mut child = match EchoChild::spawn() {
        Ok(child) => child,
        Err(error) => {
            eprintln!("pipe-echo: {error}");
            control.send("failed", &[("error", error.to_string())]);
            return ExitCode::FAILURE;
        }
    };
    control.send("ready", &[("child", child.pid.to_string())]);
    control.wait_for("go");

    let echoed = child.exchange(&input);
    let waited = child.wait();
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
    control.send("done", &[("exchange", exchange), ("wait", wait)]);
    control.wait_for("exit");
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
