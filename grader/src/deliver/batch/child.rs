//! The grader process that grades one submission of a batch (`cargo grade batch-child`, run by
//! the batch, never by hand): the student's programs are built and run from it, never from the
//! batch's own process. When the batch runs as root it first moves into an IPC namespace and a
//! mount namespace of its own, with a private `/dev/shm` (and mqueue file system), so that the
//! programs it starts see no IPC object of another submission or of the machine.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::engine::{self, Options, Variant, compile};

/// Exit status of a child whose namespaces could not be set up.
pub const ISOLATION_FAILED: u8 = 3;

/// `cargo grade batch-child`'s arguments.
#[derive(clap::Args, Debug)]
pub struct ChildArgs {
    /// The labs to grade (slugs).
    #[arg(long, value_delimiter = ',', required = true)]
    pub labs: Vec<String>,
    /// The seed of the random inputs.
    #[arg(long)]
    pub seed: u64,
    /// Where each check's log is written.
    #[arg(long)]
    pub log_dir: PathBuf,
    /// Where the JSON report is written.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// The unprivileged user the programs run as (the child must be root).
    #[arg(long, value_name = "USER")]
    pub run_as: Option<String>,
    /// Move into IPC and mount namespaces of its own first (needs root).
    #[arg(long)]
    pub isolate: bool,
    /// Build the programs and stop (the batch warms its shared build this way).
    #[arg(long)]
    pub build_only: bool,
}

/// Why the child could not isolate itself.
#[derive(Debug, thiserror::Error)]
pub enum IsolationError {
    #[error("unshare(CLONE_NEWIPC | CLONE_NEWNS): {0}")]
    Unshare(nix::Error),
    #[error("making the mounts private: {0}")]
    Private(nix::Error),
    #[error("mounting a private {0}: {1}")]
    Mount(&'static str, nix::Error),
}

/// Gives this process (it must have no other thread yet: namespaces are per thread) an IPC
/// namespace and a mount namespace of its own, with a fresh tmpfs on `/dev/shm` and, where the
/// machine has one mounted, a fresh mqueue file system on `/dev/mqueue` (which lists the queues
/// of the namespace that mounted it).
pub fn isolate() -> Result<(), IsolationError> {
    use nix::mount::{MsFlags, mount};
    use nix::sched::{CloneFlags, unshare};
    unshare(CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWNS).map_err(IsolationError::Unshare)?;
    // Without this, the mounts below would propagate back to the machine's namespace.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(IsolationError::Private)?;
    let hardened = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(
        Some("tmpfs"),
        "/dev/shm",
        Some("tmpfs"),
        hardened,
        Some("mode=1777"),
    )
    .map_err(|e| IsolationError::Mount("/dev/shm", e))?;
    if Path::new("/dev/mqueue").is_dir() {
        mount(
            Some("mqueue"),
            "/dev/mqueue",
            Some("mqueue"),
            hardened,
            None::<&str>,
        )
        .map_err(|e| IsolationError::Mount("/dev/mqueue", e))?;
    }
    Ok(())
}

/// Runs `cargo grade batch-child`: 0 when graded (or built), 1 when a build-only run could not
/// build, 2 for a usage error, [`ISOLATION_FAILED`] when the namespaces could not be made.
pub fn command(args: ChildArgs) -> ExitCode {
    // First, while this process has a single thread.
    if args.isolate
        && let Err(error) = isolate()
    {
        eprintln!("cargo grade batch-child: {error}");
        return ExitCode::from(ISOLATION_FAILED);
    }
    let plans = match crate::cli::plan(&args.labs) {
        Ok(plans) => plans,
        Err(error) => return crate::cli::usage_error(&error.to_string()),
    };
    let workspace = match crate::workspace_root() {
        Ok(workspace) => workspace,
        Err(error) => return crate::cli::usage_error(&error.to_string()),
    };
    let run_as = match args
        .run_as
        .as_deref()
        .map(engine::RunAs::lookup)
        .transpose()
    {
        Ok(user) => user,
        Err(error) => return crate::cli::usage_error(&format!("--run-as: {error}")),
    };
    // The student's code is built as the user it runs as whenever that user can run the
    // toolchain; otherwise by this process, inside its namespaces, and said in the log.
    let builder = run_as
        .as_ref()
        .filter(|user| match compile::cannot_build_as(user, &workspace) {
            None => true,
            Some(why) => {
                eprintln!("built by the grader, run as {}: {why}", user.name);
                false
            }
        });
    crate::cli::handle_interruptions();
    let slugs: Vec<&'static str> = plans.iter().map(|p| p.lab.slug).collect();
    let programs = compile::build_reporting(&workspace, Variant::Labs, &slugs, builder, &|_| {});
    if args.build_only {
        let mut built = true;
        for (slug, program) in &programs {
            if let Err(error) = program {
                eprintln!("{slug}: {error}");
                built = false;
            }
        }
        return if built {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let options = Options {
        variant: Variant::Labs,
        seed: args.seed,
        jobs: 1,
        log_dir: args.log_dir,
        run_as,
    };
    let mut report = engine::grade_built(&plans, &options, &programs, &|_| {});
    report.workspace = Some(workspace);
    let text = serde_json::to_string_pretty(&report).expect("a report serializes") + "\n";
    match &args.report {
        Some(path) => {
            if let Err(error) = std::fs::write(path, text) {
                eprintln!("cargo grade batch-child: {}: {error}", path.display());
                return ExitCode::from(2);
            }
        }
        None => print!("{text}"),
    }
    ExitCode::SUCCESS
}
