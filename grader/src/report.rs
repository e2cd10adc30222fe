//! The human-readable report.

use std::fmt::Write;
use std::io::IsTerminal;

use crate::engine::{CheckResult, Lab, Report, Status};

/// Colour on a terminal only (and never with `NO_COLOR`).
pub struct Style {
    colour: bool,
}

impl Style {
    pub fn detect() -> Style {
        Style {
            colour: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    pub fn plain() -> Style {
        Style { colour: false }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

fn label(status: Status) -> (&'static str, &'static str) {
    match status {
        Status::Passed => ("PASS", "32"),
        Status::Failed => ("FAIL", "31"),
        Status::TimedOut => ("HANG", "31"),
        Status::NotImplemented => ("TODO", "33"),
        Status::Crashed => ("CRASH", "31"),
    }
}

/// One check's line; for a failure, its message, how to reproduce it and where its log is.
pub fn check_line(lab: &str, result: &CheckResult, seed: u64, style: &Style) -> String {
    let (word, colour) = label(result.status);
    let mut text = format!(
        "{:<6}{:<40}{:>3}/{:<3}{:>9}\n",
        style.paint(colour, word),
        format!("{lab}/{}", result.name),
        result.score,
        result.max_score,
        format_duration(result.duration_ms)
    );
    if result.status != Status::Passed {
        for line in result.message.lines() {
            let _ = writeln!(text, "      {line}");
        }
        if result.status != Status::NotImplemented {
            let _ = writeln!(
                text,
                "      reproduce: cargo grade {lab}/{} --seed {seed}",
                result.name
            );
            if let Some(log) = &result.log {
                let _ = writeln!(text, "      full log: {}", log.display());
            }
        }
    }
    text
}

fn format_duration(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

/// Subtotals per lab and the total.
pub fn summary(report: &Report, seed: u64, style: &Style) -> String {
    let mut text = String::from("\n");
    for lab in &report.labs {
        let passed = lab
            .checks
            .iter()
            .filter(|c| c.status == Status::Passed)
            .count();
        let _ = writeln!(
            text,
            "{:<46}{:>3}/{:<3}  ({passed} of {} checks passed)",
            lab.name,
            lab.score,
            lab.max_score,
            lab.checks.len()
        );
    }
    let total = format!("{}/{}", report.score, report.max_score);
    let colour = if report.all_passed() { "32" } else { "31" };
    let _ = writeln!(
        text,
        "{:<46}{}   (seed {seed})",
        "total",
        style.paint(colour, &total)
    );
    text
}

/// `--list`: every lab and its checks with points.
pub fn list(labs: &[&Lab]) -> String {
    let mut text = String::new();
    for lab in labs {
        let points: u32 = lab.checks.iter().map(|c| c.points).sum::<u32>() + lab.cleanup_points;
        let _ = writeln!(text, "{} ({points} points): {}", lab.slug, lab.title);
        for check in lab.checks {
            let _ = writeln!(
                text,
                "  {:<36}{:>3}  {}",
                format!("{}/{}", lab.slug, check.name),
                check.points,
                check.description
            );
        }
        if lab.cleanup_points > 0 {
            let _ = writeln!(
                text,
                "  {:<36}{:>3}  leaves no IPC object behind",
                format!("{}/cleanup", lab.slug),
                lab.cleanup_points
            );
        }
    }
    text
}

/// One check's record over `--repeat` runs (also the JSON of `--repeat --format json`).
#[derive(Debug, serde::Serialize)]
pub struct Tally {
    pub lab: String,
    pub name: String,
    pub passed: u32,
    pub runs: u32,
    pub failures: Vec<Failure>,
}

/// One failed run of a check.
#[derive(Debug, serde::Serialize)]
pub struct Failure {
    pub seed: u64,
    pub status: &'static str,
    /// The first line of the check's message.
    pub message: String,
}

/// `--repeat`: each check's pass count, and how to reproduce each failure.
pub fn repeat_table(tallies: &[Tally]) -> String {
    let mut text = String::new();
    for tally in tallies {
        let check = format!("{}/{}", tally.lab, tally.name);
        let _ = writeln!(
            text,
            "{check:<46}{:>4}/{:<4} passed",
            tally.passed, tally.runs
        );
        for failure in &tally.failures {
            let _ = writeln!(
                text,
                "      {} with --seed {}: {}",
                failure.status, failure.seed, failure.message
            );
        }
    }
    let flaky = tallies.iter().filter(|t| t.passed != t.runs).count();
    let _ = writeln!(
        text,
        "\n{flaky} of {} checks did not pass every run",
        tallies.len()
    );
    text
}
