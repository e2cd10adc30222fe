//! `cargo grade gradescope ZIP`: the autograder zip an instructor uploads to Gradescope.
//!
//! It holds `setup.sh` and `run_autograder` (from [`SCRIPTS`]), the labs to grade (`labs`, one
//! line of slugs), the options the grading adds (`options`, one line: the leaderboard's) and,
//! under `template/`, the student template of [`super::export`]: the grader and the skeletons,
//! no solutions. `run_autograder` grades a pristine copy of that template into which only the
//! submission's `labs/*/src` is copied (`cargo grade import`), so the grade cannot be changed
//! by what the submission holds.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::export::{self, ExportError, ExportOptions};
use crate::bench::leaderboard::{LeaderboardArgs, LeaderboardError};

/// Where `setup.sh` and `run_autograder` are kept in the workspace.
pub const SCRIPTS: &str = "grader/template/gradescope";
/// The scripts at the root of the zip, executable.
pub const ROOT_SCRIPTS: &[&str] = &["setup.sh", "run_autograder"];

/// Why no zip was written.
#[derive(Debug, thiserror::Error)]
pub enum GradescopeError {
    #[error("{0} exists; --force replaces it")]
    Exists(PathBuf),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing the zip: {0}")]
    Zip(#[from] zip::result::ZipError),
    #[error("reading the template: {0}")]
    Walk(#[from] walkdir::Error),
    #[error(transparent)]
    Leaderboard(#[from] LeaderboardError),
}

impl GradescopeError {
    /// Whether the command line asked for something impossible (exit status 2).
    pub fn is_usage(&self) -> bool {
        match self {
            GradescopeError::Exists(_) => true,
            GradescopeError::Export(error) => error.is_usage(),
            GradescopeError::Leaderboard(_) => true,
            _ => false,
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> GradescopeError + '_ {
    move |source| GradescopeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `cargo grade gradescope`'s arguments.
#[derive(clap::Args, Debug)]
pub struct GradescopeArgs {
    /// The zip to write.
    pub zip: PathBuf,
    /// Only these labs (comma-separated slugs, e.g. `pipe-echo,sysv-shm`); all if not given.
    #[arg(long, value_delimiter = ',', value_name = "LAB,...")]
    pub labs: Vec<String>,
    /// Replace ZIP if it exists.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub leaderboard: LeaderboardArgs,
}

/// Runs `cargo grade gradescope`.
pub fn command(args: GradescopeArgs) -> ExitCode {
    let written = crate::workspace_root()
        .map_err(|error| (2, error.to_string()))
        .and_then(|workspace| {
            build(
                &workspace,
                &args.zip,
                &args.labs,
                args.force,
                &args.leaderboard,
            )
            .map_err(|error| (if error.is_usage() { 2 } else { 1 }, error.to_string()))
        });
    match written {
        Ok(labs) => {
            let leaderboard = if args.leaderboard.leaderboard {
                ", with a leaderboard"
            } else {
                ""
            };
            println!(
                "wrote {}: the Gradescope autograder of {}{leaderboard} (upload it as the \
                 assignment's autograder, Ubuntu base image)",
                args.zip.display(),
                labs.join(", ")
            );
            ExitCode::SUCCESS
        }
        Err((status, message)) => {
            eprintln!("cargo grade gradescope: {message}");
            ExitCode::from(status)
        }
    }
}

/// Writes the autograder zip of `labs` (every lab if empty) to `zip`, whose gradings make the
/// `leaderboard` asked for; returns the labs' slugs. The zip is written beside `zip` and renamed,
/// so that a failure leaves `zip` as it was.
pub fn build(
    workspace: &Path,
    zip: &Path,
    labs: &[String],
    force: bool,
    leaderboard: &LeaderboardArgs,
) -> Result<Vec<&'static str>, GradescopeError> {
    if zip.symlink_metadata().is_ok() && !force {
        return Err(GradescopeError::Exists(zip.to_path_buf()));
    }
    let scratch = tempfile::tempdir().map_err(io(Path::new("a temporary directory")))?;
    let template = scratch.path().join("template");
    let exported = export::export(
        workspace,
        &template,
        &ExportOptions {
            labs: labs.to_vec(),
            force: false,
        },
    )?;
    leaderboard.validate(&exported.labs, None)?;
    let parent = match zip.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut staged = tempfile::Builder::new()
        .prefix(".gradescope-")
        .suffix(".zip")
        .tempfile_in(parent)
        .map_err(io(parent))?;
    write_zip(
        staged.as_file_mut(),
        workspace,
        &template,
        &exported.labs,
        &leaderboard.flags(),
    )?;
    staged.persist(zip).map_err(|e| GradescopeError::Io {
        path: zip.to_path_buf(),
        source: e.error,
    })?;
    Ok(exported.labs)
}

fn write_zip(
    file: &mut std::fs::File,
    workspace: &Path,
    template: &Path,
    labs: &[&str],
    grading_options: &[String],
) -> Result<(), GradescopeError> {
    let mut zip = zip::ZipWriter::new(file);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    let executable = options.unix_permissions(0o755);
    let plain = options.unix_permissions(0o644);
    for script in ROOT_SCRIPTS {
        let path = workspace.join(SCRIPTS).join(script);
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        zip.start_file(*script, executable)?;
        zip.write_all(&bytes).map_err(io(&path))?;
    }
    zip.start_file("labs", plain)?;
    zip.write_all(format!("{}\n", labs.join(" ")).as_bytes())
        .map_err(io(Path::new("labs")))?;
    zip.start_file("options", plain)?;
    zip.write_all(format!("{}\n", grading_options.join(" ")).as_bytes())
        .map_err(io(Path::new("options")))?;
    // The template's git history is of no use to the grading.
    let walk = walkdir::WalkDir::new(template)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.file_name() != ".git");
    for entry in walk {
        let entry = entry?;
        let relative = entry
            .path()
            .strip_prefix(template)
            .expect("the walk stays in the template");
        if relative.as_os_str().is_empty() || entry.file_type().is_dir() {
            continue;
        }
        let name = Path::new("template").join(relative);
        let name = name.to_string_lossy();
        let mode = entry.metadata()?.permissions();
        let options = if std::os::unix::fs::PermissionsExt::mode(&mode) & 0o111 != 0 {
            executable
        } else {
            plain
        };
        let bytes = std::fs::read(entry.path()).map_err(io(entry.path()))?;
        zip.start_file(name, options)?;
        zip.write_all(&bytes).map_err(io(entry.path()))?;
    }
    zip.finish()?;
    Ok(())
}
