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

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use crate::engine::{GRADER_FAILURE, Report, Status};
    use crate::report::tests::{HOSTILE, TODO, check, context, every_outcome, lab};
    use crate::report::{DOES_NOT_COMPILE, Format, render};

    fn runner_result(report: &Report) -> Value {
        serde_json::from_str(&render(Format::Classroom, report, &context())).expect("JSON")
    }

    fn status(checks: Vec<crate::engine::CheckResult>) -> Value {
        runner_result(&Report::from_labs(vec![lab("pipe-echo", checks)], 1))["status"].clone()
    }

    #[test]
    fn each_check_is_a_test_worth_its_points() {
        let result = runner_result(&every_outcome());
        assert_eq!(result["version"], 1);
        assert_eq!(result["max_score"], 13);
        let tests = result["tests"].as_array().unwrap();
        assert_eq!(tests.len(), 6);
        let statuses: Vec<&str> = tests
            .iter()
            .map(|t| t["status"].as_str().unwrap())
            .collect();
        assert_eq!(statuses, ["pass", "fail", "fail", "fail", "error", "fail"]);
        let scores: Vec<u64> = tests.iter().map(|t| t["score"].as_u64().unwrap()).collect();
        assert_eq!(scores, [1, 0, 0, 0, 0, 0]);
        assert_eq!(tests[1]["name"], "pipe-echo/echo-1-byte");
        assert_eq!(tests[1]["message"], HOSTILE);
        assert_eq!(
            tests[1]["test_code"],
            "cargo grade pipe-echo/echo-1-byte --seed 42 --solutions"
        );
        assert_eq!(tests[2]["filename"], "labs/01-pipe-echo/src/lib.rs");
        assert_eq!(tests[2]["line_no"], 96);
        assert_eq!(tests[1]["line_no"], 0);
        assert_eq!(tests[5]["filename"], "labs/04-sysv-shm/src/lib.rs");
        assert_eq!(tests[0]["duration"], 1500);
    }

    #[test]
    fn the_run_passes_fails_or_could_not_grade() {
        assert_eq!(status(vec![check("a", Status::Passed, 1, "ok")]), "pass");
        assert_eq!(
            status(vec![
                check("a", Status::Passed, 1, "ok"),
                check("b", Status::NotImplemented, 1, TODO)
            ]),
            "fail"
        );
        let broken = format!("{DOES_NOT_COMPILE}: error");
        assert_eq!(
            status(vec![check("a", Status::Crashed, 1, &broken)]),
            "error"
        );
        let grader = format!("{GRADER_FAILURE}: no /proc");
        assert_eq!(
            status(vec![
                check("a", Status::Passed, 1, "ok"),
                check("b", Status::Crashed, 1, &grader)
            ]),
            "error"
        );
        assert_eq!(runner_result(&every_outcome())["status"], "error");
    }
}
