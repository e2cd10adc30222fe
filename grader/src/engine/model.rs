//! What a lab and its checks are, and what grading them produced.

use std::time::Duration;

use serde::Serialize;

use super::run::Run;

/// One lab: its slug (used on the command line, in reports and in directory names) and checks.
pub struct Lab {
    /// Its place in the course: lab 1, lab 2, ...
    pub number: u8,
    /// The lab's name everywhere: `pipe-echo`, `sysv-shm`, ...
    pub slug: &'static str,
    /// A one-line title for reports.
    pub title: &'static str,
    /// The checks, in the order they run and are reported.
    pub checks: &'static [Check],
    /// Points for leaving no IPC object behind; 0 means the lab has no `cleanup` check.
    pub cleanup_points: u32,
    /// Turns what the grader saw of a hung check's processes into one sentence a student can act
    /// on, when this lab knows better than the generic explanations.
    pub explain_hang: fn(&super::diagnose::Hang) -> Option<String>,
}

/// One check: declared once, reached from `cargo grade` and from `cargo test`.
pub struct Check {
    pub name: &'static str,
    pub points: u32,
    /// The whole check, processes and all, must finish within this.
    pub timeout: Duration,
    /// One line: what the check proves.
    pub description: &'static str,
    /// Whether the check must not share the machine with other checks (it measures time or
    /// CPU use).
    pub exclusive: bool,
    /// Runs the check: `Ok` with a message when it passes.
    pub run: fn(&mut Run) -> Result<String, Fail>,
}

/// The name of the check that every lab with cleanup points gets.
pub const CLEANUP_CHECK: &str = "cleanup";

/// How the message of a check that the grader itself could not run begins.
pub const GRADER_FAILURE: &str = "the grader could not run this check";

/// Why a check did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fail {
    /// The student's code ran and did the wrong thing.
    Failed(String),
    /// It did not finish in time; the message is the diagnosis.
    TimedOut(String),
    /// It reached a `todo!()`.
    NotImplemented(String),
    /// It panicked, was killed by a signal, or does not compile.
    Crashed(String),
    /// The grader itself could not do its part (a bug or a broken machine, not the student's).
    Grader(String),
}

impl Fail {
    pub fn failed(message: impl Into<String>) -> Fail {
        Fail::Failed(message.into())
    }

    pub fn status(&self) -> Status {
        match self {
            Fail::Failed(_) => Status::Failed,
            Fail::TimedOut(_) => Status::TimedOut,
            Fail::NotImplemented(_) => Status::NotImplemented,
            Fail::Crashed(_) | Fail::Grader(_) => Status::Crashed,
        }
    }

    pub fn message(&self) -> String {
        match self {
            Fail::Failed(m) | Fail::TimedOut(m) | Fail::NotImplemented(m) | Fail::Crashed(m) => {
                m.clone()
            }
            Fail::Grader(m) => format!("{GRADER_FAILURE}: {m}"),
        }
    }
}

impl From<std::io::Error> for Fail {
    fn from(error: std::io::Error) -> Fail {
        Fail::Grader(error.to_string())
    }
}

/// The outcome of a check, as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Passed,
    Failed,
    TimedOut,
    NotImplemented,
    Crashed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Passed => "passed",
            Status::Failed => "failed",
            Status::TimedOut => "timed_out",
            Status::NotImplemented => "not_implemented",
            Status::Crashed => "crashed",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub name: String,
    pub status: Status,
    pub score: u32,
    pub max_score: u32,
    pub message: String,
    pub duration_ms: u64,
    /// The seed of the check's random inputs: `--seed` reproduces them.
    #[serde(skip)]
    pub seed: u64,
    /// Where the check's full log was saved.
    #[serde(skip)]
    pub log: Option<std::path::PathBuf>,
}

/// One lab's results.
#[derive(Debug, Clone, Serialize)]
pub struct LabResult {
    pub name: String,
    pub score: u32,
    pub max_score: u32,
    pub checks: Vec<CheckResult>,
}

/// Everything graded in one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The run's seed: `--seed` with it reproduces every check's inputs.
    pub seed: u64,
    pub score: u32,
    pub max_score: u32,
    /// The workspace whose programs were graded.
    pub workspace: Option<std::path::PathBuf>,
    /// The signal that stopped grading early (`SIGINT`, `SIGTERM`): the report then holds only
    /// the checks that finished before it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interrupted: Option<String>,
    pub labs: Vec<LabResult>,
}

impl Report {
    pub fn from_labs(labs: Vec<LabResult>, seed: u64) -> Report {
        Report {
            seed,
            score: labs.iter().map(|l| l.score).sum(),
            max_score: labs.iter().map(|l| l.max_score).sum(),
            workspace: None,
            interrupted: None,
            labs,
        }
    }

    /// Whether every check passed.
    pub fn all_passed(&self) -> bool {
        self.labs
            .iter()
            .flat_map(|l| &l.checks)
            .all(|c| c.status == Status::Passed)
    }
}
