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

/// The start of the message of every check of a lab that does not compile.
pub use crate::engine::compile::DOES_NOT_COMPILE;

/// Prints check lines as they come: a failure with its message, how to reproduce it and where
/// its log is; a lab's compiler errors only once.
pub struct Printer {
    style: Style,
    seed: u64,
    /// What `reproduce:` lines add after `--seed N` (`--solutions`, `--run-as USER`).
    flags: String,
    compile_errors_shown: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

impl Printer {
    pub fn new(style: Style, seed: u64, flags: String) -> Printer {
        Printer {
            style,
            seed,
            flags,
            compile_errors_shown: Default::default(),
        }
    }

    /// One check's line, and for a failure what follows it.
    pub fn check(&self, lab: &str, result: &CheckResult) -> String {
        let (word, colour) = label(result.status);
        // Padded before it is painted: the escape codes must not count as width.
        let mut text = format!(
            "{}{:<40}{:>3}/{:<3}{:>9}\n",
            self.style.paint(colour, &format!("{word:<6}")),
            format!("{lab}/{}", result.name),
            result.score,
            result.max_score,
            format_duration(result.duration_ms)
        );
        if result.status == Status::Passed {
            return text;
        }
        if result.message.starts_with(DOES_NOT_COMPILE) {
            let mut shown = self.compile_errors_shown.lock().expect("shown lock");
            if !shown.insert(lab.to_string()) {
                let _ = writeln!(text, "      the lab does not compile: its errors are above");
                return text;
            }
            for line in result.message.lines() {
                let _ = writeln!(text, "      {line}");
            }
            return text;
        }
        for line in result.message.lines() {
            let _ = writeln!(text, "      {line}");
        }
        if let Some(hint) = result.hint {
            let _ = writeln!(text, "      hint: {hint}");
        }
        if result.status != Status::NotImplemented {
            let _ = writeln!(
                text,
                "      reproduce: cargo grade {lab}/{} --seed {}{}",
                result.name, self.seed, self.flags
            );
            if let Some(log) = &result.log {
                let _ = writeln!(text, "      full log: {}", log.display());
            }
        }
        text
    }
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
    if let Some(signal) = &report.interrupted {
        let graded: usize = report.labs.iter().map(|l| l.checks.len()).sum();
        let _ = writeln!(
            text,
            "interrupted by {signal}: {graded} check(s) were graded before it; the checks that \
             were running were stopped and cleaned up after\n"
        );
    }
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
    if let Some(workspace) = &report.workspace {
        let _ = writeln!(text, "graded: {}", workspace.display());
    }
    text
}

/// `--list`: every lab and its checks with points.
pub fn list(labs: &[&Lab]) -> String {
    let mut text = String::new();
    let width = labs
        .iter()
        .flat_map(|lab| {
            lab.checks
                .iter()
                .map(move |c| lab.slug.len() + 1 + c.name.len())
                .chain([lab.slug.len() + 1 + crate::engine::CLEANUP_CHECK.len()])
        })
        .max()
        .unwrap_or(0)
        + 2;
    for lab in labs {
        let points: u32 = lab.checks.iter().map(|c| c.points).sum::<u32>() + lab.cleanup_points;
        let _ = writeln!(text, "{} ({points} points): {}", lab.slug, lab.title);
        for check in lab.checks {
            let _ = writeln!(
                text,
                "  {:<width$}{:>3}  {}",
                format!("{}/{}", lab.slug, check.name),
                check.points,
                check.description
            );
        }
        if lab.cleanup_points > 0 {
            let _ = writeln!(
                text,
                "  {:<width$}{:>3}  leaves no IPC object behind",
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

#[cfg(test)]
mod tests {
    use super::*;

    fn result(status: Status, message: &str) -> CheckResult {
        CheckResult {
            name: "echo-1-byte".into(),
            status,
            score: 0,
            max_score: 1,
            message: message.into(),
            duration_ms: 3,
            hint: None,
            seed: 7,
            log: None,
        }
    }

    #[test]
    fn a_lab_that_does_not_compile_shows_its_errors_once() {
        let printer = Printer::new(Style::plain(), 1, String::new());
        let broken = result(
            Status::Crashed,
            &format!("{DOES_NOT_COMPILE} (cargo exited with 101):\nerror[E0425]: nope"),
        );
        let first = printer.check("pipe-echo", &broken);
        let second = printer.check("pipe-echo", &broken);
        assert!(first.contains("E0425"));
        assert!(!second.contains("E0425"));
        assert!(second.contains("its errors are above"));
        assert!(!first.contains("reproduce:"));
    }

    #[test]
    fn reproduce_lines_keep_the_options_that_change_what_is_graded() {
        let printer = Printer::new(Style::plain(), 42, " --solutions --run-as nobody".into());
        let line = printer.check("pipe-echo", &result(Status::Failed, "the echo differs"));
        assert!(
            line.contains(
                "reproduce: cargo grade pipe-echo/echo-1-byte --seed 42 --solutions --run-as nobody"
            ),
            "{line}"
        );
    }

    #[test]
    fn a_hint_follows_the_diagnosis_and_is_in_the_json_only_when_set() {
        let printer = Printer::new(Style::plain(), 1, String::new());
        let mut failed = result(Status::Failed, "the echo differs");
        failed.hint = Some("read the handout");
        let text = printer.check("pipe-echo", &failed);
        let diagnosis = text.find("the echo differs").expect("the diagnosis");
        let hint = text
            .find("      hint: read the handout\n")
            .expect("the hint");
        let reproduce = text.find("reproduce:").expect("the reproduce line");
        assert!(diagnosis < hint && hint < reproduce, "{text}");
        let json = serde_json::to_value(&failed).expect("serializes");
        assert_eq!(json["hint"], "read the handout");

        let passed = result(Status::Passed, "echoed");
        assert!(!printer.check("pipe-echo", &passed).contains("hint:"));
        let json = serde_json::to_value(&passed).expect("serializes");
        assert!(json.get("hint").is_none(), "{json}");
    }
}
