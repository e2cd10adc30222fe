//! `cargo grade batch SUBMISSIONS --out DIR`: grades a whole class on one machine.
//!
//! Every entry of SUBMISSIONS is one submission (a directory, a `.zip` or a `.tar.gz`). Each is
//! taken by the intake of [`super::submission`] into a pristine workspace of its own (a copy of
//! this one without `target/`, `solutions/` and the mutants, whose prebuilt dependencies come
//! from one shared warm-up build), and graded there by a child grader process
//! ([`child`]) bounded in time. Whatever goes wrong with one submission is its row of the
//! results, never the batch's. The results, in DIR: `grades.csv`, `checks.csv`, `report.html`
//! and, under `submissions/<id>/`, each one's JSON report, check logs and grader output.

pub mod child;
mod class_report;
mod progress;
mod tree;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::submission::{self, Limits};
use crate::engine::{self, compile::DOES_NOT_COMPILE};

pub use class_report::{CHECKS_CSV, GRADES_CSV, REPORT_HTML};
pub use tree::{copy_lab_builds, copy_tree, pristine_copy};

/// `cargo grade batch`'s arguments.
#[derive(clap::Args, Debug)]
pub struct BatchArgs {
    /// A directory whose every entry is one submission: a directory (a clone), a .zip or a
    /// .tar.gz holding labs/ at any depth.
    pub submissions: PathBuf,
    /// Where the results go (created; with --resume, continued).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Only these labs (comma-separated slugs, e.g. `pipe-echo,posix-shm`); all if not given.
    #[arg(long, value_delimiter = ',', value_name = "LAB,...")]
    pub labs: Vec<String>,
    /// How many submissions are graded at once [default: the number of CPUs].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub jobs: Option<u32>,
    /// Skip the submissions DIR already holds a result for (same seed and labs as before).
    #[arg(long)]
    pub resume: bool,
    /// How long one submission's build and grading may take before it is stopped.
    #[arg(long, value_name = "DURATION", default_value = "15m", value_parser = humantime::parse_duration)]
    pub time_limit: Duration,
    /// Seed of the random inputs, the same for every submission; drawn if not given.
    #[arg(long)]
    pub seed: Option<u64>,
    /// The unprivileged user the programs run as when the batch runs as root.
    #[arg(long, value_name = "USER", default_value = "nobody")]
    pub run_as: String,
}

/// Why a batch could not start.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("{0} is not a directory of submissions")]
    NotADirectory(PathBuf),
    #[error("{0} holds no submission")]
    NoSubmissions(PathBuf),
    #[error("{0} already holds a batch's results; --resume continues it, or choose another --out")]
    OutExists(PathBuf),
    #[error(
        "--resume: {out} was graded with {was}, not {now}; resume with the same --labs and --seed"
    )]
    ResumeMismatch {
        out: PathBuf,
        was: String,
        now: String,
    },
    #[error("--run-as: {0}")]
    RunAs(String),
    #[error(transparent)]
    Selection(#[from] crate::cli::SelectionError),
    #[error(transparent)]
    Workspace(#[from] crate::WorkspaceError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the shared build of the skeletons failed, so no submission could be built:\n{0}")]
    WarmUp(String),
}

impl BatchError {
    /// Whether the command line asked for something impossible (exit status 2).
    fn is_usage(&self) -> bool {
        !matches!(self, BatchError::Io { .. } | BatchError::WarmUp(_))
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BatchError + '_ {
    move |source| BatchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a submission's grading came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Built and graded (some checks may have failed).
    Graded,
    /// Graded, but at least one lab did not compile (its checks score 0).
    DoesNotCompile,
    /// Not taken by the intake: empty, malformed, unsafe or too large.
    Refused,
    /// Stopped at the time limit; the checks graded before count.
    TimeLimit,
    /// The grader process failed (not the student's code): grade it again.
    GraderError,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Graded => "graded",
            Outcome::DoesNotCompile => "does-not-compile",
            Outcome::Refused => "refused",
            Outcome::TimeLimit => "time-limit",
            Outcome::GraderError => "grader-error",
        }
    }

    /// Whether the progress counts it as failed (anything but a normal grading).
    fn failed(self) -> bool {
        !matches!(self, Outcome::Graded)
    }
}

/// A lab's subtotal in a submission.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabScore {
    pub lab: String,
    pub score: u32,
    pub max_score: u32,
}

/// One check of one submission, as `checks.csv` has it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckRow {
    pub submission: String,
    pub lab: String,
    pub check: String,
    pub status: String,
    pub score: u32,
    pub max_score: u32,
    /// The first line of the check's message.
    pub diagnosis: String,
}

/// One submission's result: a row of `grades.csv` and its rows of `checks.csv`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub id: String,
    /// The entry of SUBMISSIONS it came from.
    pub source: String,
    pub outcome: Outcome,
    /// Why it is not a plain `graded` row, in a line.
    pub reason: String,
    pub wall_seconds: f64,
    pub total: u32,
    pub max_total: u32,
    pub labs: Vec<LabScore>,
    pub checks: Vec<CheckRow>,
}

/// What a batch in DIR was started with, kept so that `--resume` grades alike.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Settings {
    seed: u64,
    labs: Vec<String>,
}

const SETTINGS: &str = "batch.json";
/// Under DIR, a folder per submission.
pub const SUBMISSIONS_DIR: &str = "submissions";
/// In a submission's folder: its row, written last (a submission with one is done).
const ROW: &str = "row.json";
/// In a submission's folder: the grader's JSON report.
pub const REPORT_JSON: &str = "report.json";
/// In a submission's folder: what the child grader printed.
pub const GRADER_LOG: &str = "grader.log";
/// In a submission's folder: what the intake took.
const INTAKE: &str = "intake.txt";

/// Runs `cargo grade batch`.
pub fn command(args: BatchArgs) -> ExitCode {
    match run(args) {
        Ok(_) if engine::run::interrupted().is_some() => {
            let signal = engine::run::interrupted().unwrap_or(2);
            eprintln!(
                "cargo grade batch: interrupted; the results hold the submissions graded to \
                 their end, and --resume grades the others"
            );
            ExitCode::from(128 + signal as u8)
        }
        Ok(rows) => {
            let failed = rows.iter().filter(|r| r.outcome.failed()).count();
            println!(
                "{} submission(s): {} graded, {failed} with a failure of their own (see the \
                 status column)",
                rows.len(),
                rows.len() - failed
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("cargo grade batch: {error}");
            ExitCode::from(if error.is_usage() { 2 } else { 1 })
        }
    }
}

/// One entry of SUBMISSIONS.
struct Submission {
    id: String,
    path: PathBuf,
}

/// The submissions in `dir`, in name order, each with an id made of its name (without the
/// archive's extension) that is safe in a path and unique.
fn submissions_in(dir: &Path) -> Result<Vec<Submission>, BatchError> {
    if !dir.is_dir() {
        return Err(BatchError::NotADirectory(dir.to_path_buf()));
    }
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect();
    paths.sort();
    let mut taken = BTreeSet::new();
    let mut found = Vec::new();
    for path in paths {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let lower = name.to_ascii_lowercase();
        let stem = [".tar.gz", ".tgz", ".zip"]
            .iter()
            .find(|ext| lower.ends_with(*ext) && !path.is_dir())
            .map_or(&name[..], |ext| &name[..name.len() - ext.len()]);
        let safe: String = stem
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let safe = if safe.is_empty() || safe.starts_with('.') {
            format!("_{safe}")
        } else {
            safe
        };
        let mut id = safe.clone();
        let mut n = 2;
        while !taken.insert(id.clone()) {
            id = format!("{safe}-{n}");
            n += 1;
        }
        found.push(Submission { id, path });
    }
    if found.is_empty() {
        return Err(BatchError::NoSubmissions(dir.to_path_buf()));
    }
    Ok(found)
}

/// How the submissions' programs are kept apart.
#[derive(Debug, Clone)]
enum Isolation {
    /// Root: each child grader in namespaces of its own, the programs as this user.
    Namespaces(engine::RunAs),
    /// Not root: the engine as `cargo grade` runs it, as the batch's own user.
    None,
}

/// What every submission's grading shares.
struct Shared {
    out: PathBuf,
    base: PathBuf,
    scratch: PathBuf,
    labs: Vec<String>,
    seed: u64,
    time_limit: Duration,
    isolation: Isolation,
    grader: PathBuf,
}

fn run(args: BatchArgs) -> Result<Vec<Row>, BatchError> {
    let workspace = crate::workspace_root()?;
    let plans = crate::cli::plan(&args.labs)?;
    let labs: Vec<String> = plans.iter().map(|p| p.lab.slug.to_string()).collect();
    let submissions = submissions_in(&args.submissions)?;
    let isolation = if nix::unistd::geteuid().is_root() {
        Isolation::Namespaces(engine::RunAs::lookup(&args.run_as).map_err(BatchError::RunAs)?)
    } else {
        eprintln!(
            "cargo grade batch: not root, so the submissions' programs run as {} without \
             namespaces of their own, as `cargo grade` runs them: one submission's programs \
             could see and remove another's IPC objects; run the batch as root to isolate them",
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map_or_else(|| "this user".to_string(), |u| u.name)
        );
        Isolation::None
    };
    // Absolute: the child graders are told where to write their logs and reports.
    let out = std::path::absolute(&args.out).map_err(io(&args.out))?;
    let settings_path = out.join(SETTINGS);
    let seed = if args.resume && settings_path.is_file() {
        let text = std::fs::read_to_string(&settings_path).map_err(io(&settings_path))?;
        let before: Settings = serde_json::from_str(&text).map_err(|e| BatchError::Io {
            path: settings_path.clone(),
            source: e.into(),
        })?;
        let now = Settings {
            seed: args.seed.unwrap_or(before.seed),
            labs: labs.clone(),
        };
        if now != before {
            return Err(BatchError::ResumeMismatch {
                out,
                was: format!("--seed {} --labs {}", before.seed, before.labs.join(",")),
                now: format!("--seed {} --labs {}", now.seed, now.labs.join(",")),
            });
        }
        before.seed
    } else {
        if !args.resume && std::fs::read_dir(&out).is_ok_and(|mut d| d.next().is_some()) {
            return Err(BatchError::OutExists(out));
        }
        let seed = args.seed.unwrap_or_else(crate::cli::fresh_seed);
        std::fs::create_dir_all(&out).map_err(io(&out))?;
        let settings = Settings {
            seed,
            labs: labs.clone(),
        };
        let text = serde_json::to_string_pretty(&settings).expect("settings serialize");
        std::fs::write(&settings_path, text).map_err(io(&settings_path))?;
        seed
    };
    std::fs::create_dir_all(out.join(SUBMISSIONS_DIR)).map_err(io(&out))?;

    let mut rows: Vec<Row> = Vec::new();
    let mut todo: Vec<Submission> = Vec::new();
    for submission in submissions {
        let row_path = out.join(SUBMISSIONS_DIR).join(&submission.id).join(ROW);
        let done = std::fs::read_to_string(&row_path)
            .ok()
            .and_then(|text| serde_json::from_str::<Row>(&text).ok());
        match done {
            Some(row) if args.resume => rows.push(row),
            _ => todo.push(submission),
        }
    }
    let jobs = args.jobs.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        |n| n as usize,
    );
    let progress = progress::BatchProgress::new(todo.len(), rows.len());
    if !todo.is_empty() {
        // Orphans of a child grader that died (or was stopped) come to the batch, which ends them.
        engine::process::become_subreaper().map_err(|fail| BatchError::Io {
            path: PathBuf::from("/proc/self"),
            source: std::io::Error::other(fail.message()),
        })?;
        let scratch = tempfile::Builder::new()
            .prefix("ipc-labs-batch-")
            .tempdir()
            .map_err(io(Path::new("a temporary directory")))?;
        // Every user must reach the workspaces: the programs run as another.
        tree::open_to_all(scratch.path()).map_err(io(scratch.path()))?;
        if let Isolation::Namespaces(user) = &isolation
            && let Some(why) = engine::compile::cannot_build_as(user, scratch.path())
        {
            progress.note(&format!(
                "cargo grade batch: {} cannot run the toolchain, so each submission is built by \
                 its child grader (root, inside the submission's namespaces) and only run as {}: \
                 give {} a toolchain it can run to build as it too. ({why})",
                user.name, user.name, user.name
            ));
        }
        let base = scratch.path().join("base");
        progress.note("preparing the pristine workspace and building the skeletons once ...");
        progress.tick();
        tree::pristine_copy(&workspace, &base).map_err(io(&base))?;
        let grader = std::env::current_exe().map_err(io(Path::new("the grader")))?;
        let shared = Shared {
            out: out.clone(),
            base,
            scratch: scratch.path().to_path_buf(),
            labs: labs.clone(),
            seed,
            time_limit: args.time_limit,
            isolation,
            grader,
        };
        warm_up(&shared)?;
        crate::cli::handle_interruptions();
        progress.start();
        let queue = Mutex::new(todo.into_iter());
        let graded = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for _ in 0..jobs.max(1) {
                scope.spawn(|| {
                    loop {
                        let next = queue.lock().expect("queue lock").next();
                        let Some(submission) = next else { return };
                        if engine::run::interrupted().is_some() {
                            return;
                        }
                        progress.started();
                        let row = grade_one(&shared, &submission);
                        // A submission cut short by Ctrl-C is graded again by --resume.
                        if engine::run::interrupted().is_some() {
                            return;
                        }
                        progress.finished(&row);
                        graded.lock().expect("rows lock").push(row);
                    }
                });
            }
        });
        progress.clear();
        rows.extend(graded.into_inner().expect("rows lock"));
        drop(scratch);
    }
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    class_report::write_all(&out, &labs, seed, &rows).map_err(io(&out))?;
    println!(
        "wrote {}, {} and {} in {}",
        GRADES_CSV,
        CHECKS_CSV,
        REPORT_HTML,
        out.display()
    );
    Ok(rows)
}

/// The child grader's command line for the workspace `workspace`.
fn child_command(shared: &Shared, workspace: &Path, log_dir: &Path) -> Command {
    let mut command = Command::new(&shared.grader);
    command
        .arg("batch-child")
        .arg("--labs")
        .arg(shared.labs.join(","))
        .arg("--seed")
        .arg(shared.seed.to_string())
        .arg("--log-dir")
        .arg(log_dir)
        // The child's temporary files (check directories, ledger) stay in its workspace.
        .env("TMPDIR", workspace.join("tmp"))
        .env("IPC_LABS_WORKSPACE", workspace)
        // Checks that measure time run alone across the batch, not only within a submission.
        .env(
            engine::run::EXCLUSIVE_LOCK_ENV,
            shared.scratch.join("exclusive.lock"),
        )
        .env("NO_COLOR", "1")
        .env_remove("IPC_LABS_PREBUILT")
        .env_remove("CARGO_TARGET_DIR")
        .stdin(Stdio::null());
    if let Isolation::Namespaces(user) = &shared.isolation {
        command.arg("--isolate").arg("--run-as").arg(&user.name);
    }
    // A group of its own: the time limit stops the grader and the cargo it runs at once.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    command
}

/// Builds the skeletons once in the base workspace, so that every submission's build starts
/// from its dependencies already compiled.
fn warm_up(shared: &Shared) -> Result<(), BatchError> {
    let tmp = shared.base.join("tmp");
    tree::make_tmp(&tmp).map_err(io(&tmp))?;
    let log_dir = shared.scratch.join("warm-up-logs");
    let mut command = child_command(shared, &shared.base, &log_dir);
    command.arg("--build-only");
    let output = command.output().map_err(io(&shared.grader))?;
    if output.status.success() {
        return Ok(());
    }
    Err(BatchError::WarmUp(format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )))
}

/// Grades one submission; whatever happens becomes its row.
fn grade_one(shared: &Shared, submission: &Submission) -> Row {
    let started = Instant::now();
    let folder = shared.out.join(SUBMISSIONS_DIR).join(&submission.id);
    let _ = std::fs::remove_dir_all(&folder);
    let mut row = match std::fs::create_dir_all(&folder) {
        Ok(()) => grade_in_workspace(shared, submission, &folder),
        Err(error) => failed_row(
            shared,
            submission,
            Outcome::GraderError,
            format!("{}: {error}", folder.display()),
        ),
    };
    row.wall_seconds = (started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    if engine::run::interrupted().is_some() {
        return row;
    }
    let text = serde_json::to_string_pretty(&row).expect("a row serializes");
    let staged = folder.join(format!("{ROW}.part"));
    if std::fs::write(&staged, text).is_ok() {
        let _ = std::fs::rename(&staged, folder.join(ROW));
    }
    row
}

/// A row with no check graded.
fn failed_row(shared: &Shared, submission: &Submission, outcome: Outcome, reason: String) -> Row {
    Row {
        id: submission.id.clone(),
        source: submission
            .path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned(),
        outcome,
        reason: first_line(&reason).to_string(),
        wall_seconds: 0.0,
        total: 0,
        max_total: 0,
        labs: shared
            .labs
            .iter()
            .map(|lab| LabScore {
                lab: lab.clone(),
                score: 0,
                max_score: 0,
            })
            .collect(),
        checks: Vec::new(),
    }
}

fn first_line(text: &str) -> &str {
    text.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
}

fn grade_in_workspace(shared: &Shared, submission: &Submission, folder: &Path) -> Row {
    let workspace = shared.scratch.join(format!("ws-{}", submission.id));
    let row = match tree::copy_tree(&shared.base, &workspace, &|_| false) {
        Ok(()) => take_and_grade(shared, submission, folder, &workspace),
        Err(error) => failed_row(
            shared,
            submission,
            Outcome::GraderError,
            format!("copying the pristine workspace: {error}"),
        ),
    };
    // The logs are in DIR already; the workspace, its build included, goes.
    let _ = std::fs::remove_dir_all(&workspace);
    row
}

fn take_and_grade(
    shared: &Shared,
    submission: &Submission,
    folder: &Path,
    workspace: &Path,
) -> Row {
    match submission::import(&submission.path, workspace, Limits::default()) {
        Ok(imported) => {
            let _ = std::fs::write(folder.join(INTAKE), imported.to_string());
        }
        Err(error) => {
            let _ = std::fs::write(folder.join(INTAKE), format!("refused: {error}\n"));
            return failed_row(shared, submission, Outcome::Refused, error.to_string());
        }
    }
    let tmp = workspace.join("tmp");
    if let Err(error) = tree::make_tmp(&tmp) {
        let why = format!("{}: {error}", tmp.display());
        return failed_row(shared, submission, Outcome::GraderError, why);
    }
    let report_path = folder.join(REPORT_JSON);
    let log_path = folder.join(GRADER_LOG);
    let log = match std::fs::File::create(&log_path) {
        Ok(log) => log,
        Err(error) => {
            let why = format!("{}: {error}", log_path.display());
            return failed_row(shared, submission, Outcome::GraderError, why);
        }
    };
    let mut command = child_command(shared, workspace, &folder.join("logs"));
    command.arg("--report").arg(&report_path);
    let (Ok(stdout), Ok(stderr)) = (log.try_clone(), log.try_clone()) else {
        let why = format!("{}: cannot share the log", log_path.display());
        return failed_row(shared, submission, Outcome::GraderError, why);
    };
    command.stdout(stdout).stderr(stderr);
    let outcome = run_bounded(&mut command, shared.time_limit);
    let grader_said = std::fs::read_to_string(&log_path).unwrap_or_default();
    let report = std::fs::read_to_string(&report_path)
        .ok()
        .and_then(|text| serde_json::from_str::<ChildReport>(&text).ok());
    match (outcome, report) {
        (Ok(status), Some(report)) if status.success() => {
            row_of_report(shared, submission, report, None)
        }
        (Err(Stopped::TimeLimit), report) => {
            let why = format!(
                "stopped at the time limit ({}); the checks graded before count",
                humantime::format_duration(shared.time_limit)
            );
            match report {
                Some(report) => row_of_report(shared, submission, report, Some(why)),
                None => failed_row(shared, submission, Outcome::TimeLimit, why),
            }
        }
        (Ok(status), _) => {
            let last = grader_said.lines().rev().find(|l| !l.trim().is_empty());
            let why = format!(
                "the grader exited with {status} without a report{}",
                last.map(|l| format!(": {l}")).unwrap_or_default()
            );
            failed_row(shared, submission, Outcome::GraderError, why)
        }
        (Err(Stopped::Spawn(error)), _) => failed_row(
            shared,
            submission,
            Outcome::GraderError,
            format!("cannot start the grader: {error}"),
        ),
    }
}

/// The child grader's JSON report, as far as the batch reads it.
#[derive(Deserialize)]
struct ChildReport {
    labs: Vec<ChildLab>,
}

#[derive(Deserialize)]
struct ChildLab {
    name: String,
    score: u32,
    max_score: u32,
    checks: Vec<ChildCheck>,
}

#[derive(Deserialize)]
struct ChildCheck {
    name: String,
    status: String,
    score: u32,
    max_score: u32,
    message: String,
}

fn row_of_report(
    shared: &Shared,
    submission: &Submission,
    report: ChildReport,
    stopped: Option<String>,
) -> Row {
    let mut row = failed_row(shared, submission, Outcome::Graded, String::new());
    let mut broken = Vec::new();
    for lab in report.labs {
        // Every check of such a lab says so (its cleanup check, that none ran).
        if let Some(check) = lab
            .checks
            .iter()
            .find(|c| c.message.starts_with(DOES_NOT_COMPILE))
        {
            // The compiler's first error says more than the check's first line.
            let error = check
                .message
                .lines()
                .find(|l| l.trim_start().starts_with("error"))
                .map(|l| format!(" ({})", l.trim()))
                .unwrap_or_default();
            broken.push(format!("{}{error}", lab.name));
        }
        if let Some(score) = row.labs.iter_mut().find(|s| s.lab == lab.name) {
            score.score = lab.score;
            score.max_score = lab.max_score;
        }
        for check in lab.checks {
            row.checks.push(CheckRow {
                submission: submission.id.clone(),
                lab: lab.name.clone(),
                check: check.name,
                status: check.status,
                score: check.score,
                max_score: check.max_score,
                diagnosis: first_line(&check.message).to_string(),
            });
        }
    }
    row.total = row.labs.iter().map(|l| l.score).sum();
    row.max_total = row.labs.iter().map(|l| l.max_score).sum();
    if let Some(why) = stopped {
        row.outcome = Outcome::TimeLimit;
        row.reason = why;
    } else if !broken.is_empty() {
        row.outcome = Outcome::DoesNotCompile;
        row.reason = format!("does not compile: {}", broken.join("; "));
    }
    row
}

/// Why a child grader did not finish on its own.
enum Stopped {
    TimeLimit,
    Spawn(std::io::Error),
}

/// How long a child grader stopped at the time limit gets to stop its checks and write what it
/// graded before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(20);

/// Runs `command` (a child grader, in a process group of its own) to its end or to `limit`:
/// then it is asked to stop (SIGTERM: it ends its checks and reports what it graded), and killed
/// with its group after [`STOP_GRACE`]. Whatever it left running is ended.
fn run_bounded(
    command: &mut Command,
    limit: Duration,
) -> Result<std::process::ExitStatus, Stopped> {
    use nix::sys::signal::{Signal, kill, killpg};
    use nix::unistd::Pid;
    let mut child = engine::process::spawn_helper(command).map_err(Stopped::Spawn)?;
    let pid = Pid::from_raw(child.id() as i32);
    let started = Instant::now();
    let mut asked_to_stop: Option<Instant> = None;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) => {}
            Err(_) => break None,
        }
        let interrupted = engine::run::interrupted().is_some();
        match asked_to_stop {
            None if started.elapsed() >= limit || interrupted => {
                let _ = kill(pid, Signal::SIGTERM);
                asked_to_stop = Some(Instant::now());
            }
            Some(when) if when.elapsed() >= STOP_GRACE => {
                let _ = killpg(pid, Signal::SIGKILL);
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = killpg(pid, Signal::SIGKILL);
    engine::process::forget(pid.as_raw() as u32);
    engine::process::kill_stray_children();
    match (status, asked_to_stop) {
        (_, Some(_)) if engine::run::interrupted().is_none() => Err(Stopped::TimeLimit),
        (Some(status), _) => Ok(status),
        (None, _) => Err(Stopped::Spawn(std::io::Error::other(
            "lost track of the grader process",
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_names_without_extensions_safe_in_paths_and_unique() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "alice.zip",
            "bob.tar.gz",
            "carol smith",
            "dave.tgz",
            ".hidden",
        ] {
            std::fs::write(dir.path().join(name), "x").unwrap();
        }
        std::fs::create_dir(dir.path().join("alice")).unwrap();
        std::fs::create_dir(dir.path().join("eve.zip")).unwrap();
        let ids: Vec<String> = submissions_in(dir.path())
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(
            ids,
            ["alice", "alice-2", "bob", "carol_smith", "dave", "eve.zip"]
        );
    }

    #[test]
    fn an_empty_or_missing_directory_holds_no_submission() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            submissions_in(dir.path()),
            Err(BatchError::NoSubmissions(_))
        ));
        assert!(matches!(
            submissions_in(&dir.path().join("nope")),
            Err(BatchError::NotADirectory(_))
        ));
    }
}
