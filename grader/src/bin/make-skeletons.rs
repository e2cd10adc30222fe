//! Regenerates `labs/` from `solutions/` (see `ipc_grader::skeleton`).
//!
//! `cargo run -p ipc-grader --bin make-skeletons` writes them; with `--check` it only lists the
//! stale ones and exits 1 if there are any.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let check_only = match args.as_slice() {
        [] => false,
        [flag] if flag == "--check" => true,
        _ => {
            eprintln!(
                "usage: make-skeletons [--check]\n\n\
                 Without --check it OVERWRITES labs/*/Cargo.toml and every file under labs/*/src/ \
                 that differs from what solutions/ determines (a student's work in labs/ is lost);\n\
                 with --check it only lists those files and exits 1 if there are any."
            );
            return ExitCode::from(2);
        }
    };
    let workspace = match ipc_grader::workspace_root() {
        Ok(workspace) => workspace,
        Err(error) => {
            eprintln!("make-skeletons: {error}");
            return ExitCode::from(2);
        }
    };
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
                println!(
                    "run `cargo run -p ipc-grader --bin make-skeletons` to regenerate them (it \
                     overwrites these files in labs/ with what solutions/ determines)"
                );
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
