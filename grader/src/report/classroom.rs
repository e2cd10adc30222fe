//! `--format classroom`: the result a GitHub Classroom runner step hands to
//! `autograding-grading-reporter` (base64 in `<STEP_ID>_RESULTS`), which sums the tests' scores:
//! each check is a test worth its points, so the grade keeps partial credit.

use serde::Serialize;

use super::{Context, checks, could_not_grade, grader_failed, source_line};
use crate::engine::{Report, Status};

#[derive(Serialize)]
struct RunnerResult {
    version: u32,
    /// `pass`, `fail`, or `error` when the work could not be graded.
    status: &'static str,
    max_score: u32,
    tests: Vec<Test>,
}

#[derive(Serialize)]
struct Test {
    /// `lab/check`.
    name: String,
    status: &'static str,
    score: u32,
    message: String,
    /// The command that grades this check again with the same inputs.
    test_code: String,
    filename: String,
    /// The line the message points at (a `todo!()`), 0 if none.
    line_no: u32,
    /// Milliseconds.
    duration: u64,
}

pub fn render(report: &Report, context: &Context) -> String {
    let tests = checks(report)
        .map(|(lab, check)| {
            let filename = context.source(&lab.name);
            Test {
                name: format!("{}/{}", lab.name, check.name),
                status: if check.status == Status::Passed {
                    "pass"
                } else if grader_failed(check) {
                    "error"
                } else {
                    "fail"
                },
                score: check.score,
                message: check.message.clone(),
                test_code: context.reproduce(report, &lab.name, check),
                line_no: source_line(&check.message, &filename).unwrap_or(0),
                filename,
                duration: check.duration_ms,
            }
        })
        .collect();
    let status = if could_not_grade(report) {
        "error"
    } else if report.all_passed() {
        "pass"
    } else {
        "fail"
    };
    let result = RunnerResult {
        version: 1,
        status,
        max_score: report.max_score,
        tests,
    };
    serde_json::to_string_pretty(&result).expect("a runner result serializes") + "\n"
}
