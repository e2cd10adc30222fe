//! `cargo grade` (an alias in `.cargo/config.toml`); `cargo grade --help` says what it does.

fn main() -> std::process::ExitCode {
    ipc_grader::cli::main()
}
