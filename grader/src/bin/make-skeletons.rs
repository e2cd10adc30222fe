//! Regenerates `labs/` from `solutions/` (see `ipc_grader::skeleton`).
//!
//! `cargo run -p ipc-grader --bin make-skeletons` writes them; with `--check` it only lists the
//! stale ones and exits 1 if there are any.

use std::process::ExitCode;

fn main() -> ExitCode {
    let check_only = std::env::args().skip(1).any(|arg| arg == "--check");
    let workspace = ipc_grader::workspace_root();
    let result = if check_only {
        ipc_grader::skeleton::stale_skeletons(&workspace)
    } else {
        ipc_grader::skeleton::write_skeletons(&workspace)
    };
    match result {
        Ok(paths) if paths.is_empty() => {
            println!("skeletons are up to date");
            ExitCode::SUCCESS
        }
        Ok(paths) => {
            for path in &paths {
                let verb = if check_only { "stale" } else { "wrote" };
                println!("{verb}: {}", path.display());
            }
            if check_only {
                println!("run `cargo run -p ipc-grader --bin make-skeletons` to regenerate them");
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(error) => {
            eprintln!("make-skeletons: {error}");
            ExitCode::from(2)
        }
    }
}
