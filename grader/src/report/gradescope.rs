//! `--format gradescope`: Gradescope's `results.json`, a test per check worth its points.

use serde::Serialize;

use super::{Context, checks, reproducible};
use crate::engine::{Report, Status};

#[derive(Serialize)]
struct Results {
    score: u32,
    /// Seconds.
    execution_time: u64,
    output: String,
    tests: Vec<Test>,
}

#[derive(Serialize)]
struct Test {
    /// `lab/check`.
    name: String,
    score: u32,
    max_score: u32,
    /// `passed` or `failed`.
    status: &'static str,
    /// The diagnosis, and how to reproduce it.
    output: String,
    visibility: &'static str,
}

pub fn render(report: &Report, context: &Context) -> String {
    let tests = checks(report)
        .map(|(lab, check)| {
            let mut output = check.message.clone();
            if reproducible(check) {
                output.push_str("\nreproduce: ");
                output.push_str(&context.reproduce(report, &lab.name, check));
            }
            Test {
                name: format!("{}/{}", lab.name, check.name),
                score: check.score,
                max_score: check.max_score,
                status: if check.status == Status::Passed {
                    "passed"
                } else {
                    "failed"
                },
                output,
                visibility: "visible",
            }
        })
        .collect();
    let mut output = format!(
        "{}/{} (seed {})",
        report.score, report.max_score, report.seed
    );
    if let Some(signal) = &report.interrupted {
        output.push_str(&format!(
            "\ninterrupted by {signal}: only the checks graded before it are listed"
        ));
    }
    let results = Results {
        score: report.score,
        execution_time: context.started.elapsed().as_secs(),
        output,
        tests,
    };
    serde_json::to_string_pretty(&results).expect("results serialize") + "\n"
}
