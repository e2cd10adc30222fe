//! `--format gradescope`: Gradescope's `results.json`, a test per check worth its points.

use serde::Serialize;

use super::{Context, checks, reproducible};
use crate::bench::leaderboard::Entry;
use crate::engine::{Report, Status};

#[derive(Serialize)]
struct Results<'a> {
    score: u32,
    /// Seconds.
    execution_time: u64,
    output: String,
    tests: Vec<Test>,
    /// Only with `--leaderboard` (empty when no lab could be measured).
    #[serde(skip_serializing_if = "Option::is_none")]
    leaderboard: Option<&'a [Entry]>,
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
    if let Some(board) = &context.leaderboard {
        output.push_str(
            "\n\nLeaderboard (measured after grading, on one CPU; not part of the grade):",
        );
        for line in &board.summary {
            output.push('\n');
            output.push_str(line);
        }
    }
    let results = Results {
        score: report.score,
        execution_time: context.started.elapsed().as_secs(),
        output,
        tests,
        leaderboard: context.leaderboard.as_ref().map(|b| b.entries.as_slice()),
    };
    serde_json::to_string_pretty(&results).expect("results serialize") + "\n"
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use crate::bench::leaderboard::{Entry, Leaderboard, Order};
    use crate::report::tests::{HOSTILE, context, every_outcome};
    use crate::report::{Format, render};

    #[test]
    fn a_test_per_check_with_its_diagnosis_and_how_to_reproduce_it() {
        let text = render(Format::Gradescope, &every_outcome(), &context());
        let results: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(results["score"], 1);
        assert!(results["execution_time"].is_u64());
        assert!(
            results["output"]
                .as_str()
                .unwrap()
                .starts_with("1/13 (seed 42)")
        );
        let tests = results["tests"].as_array().unwrap();
        assert_eq!(tests.len(), 6);
        let statuses: Vec<&str> = tests
            .iter()
            .map(|t| t["status"].as_str().unwrap())
            .collect();
        assert_eq!(
            statuses,
            ["passed", "failed", "failed", "failed", "failed", "failed"]
        );
        let max: u64 = tests.iter().map(|t| t["max_score"].as_u64().unwrap()).sum();
        assert_eq!(max, 13);
        assert!(tests.iter().all(|t| t["visibility"] == "visible"));
        assert_eq!(tests[1]["name"], "pipe-echo/echo-1-byte");
        assert_eq!(
            tests[1]["output"],
            format!(
                "{HOSTILE}\nreproduce: cargo grade pipe-echo/echo-1-byte --seed 42 --solutions"
            )
        );
        let todo = tests[2]["output"].as_str().unwrap();
        assert!(
            !todo.contains("reproduce:"),
            "a todo!() needs no seed: {todo}"
        );
        let broken = tests[5]["output"].as_str().unwrap();
        assert!(!broken.contains("reproduce:"), "{broken}");
    }

    #[test]
    fn a_leaderboard_only_when_one_was_measured() {
        let plain: Value =
            serde_json::from_str(&render(Format::Gradescope, &every_outcome(), &context()))
                .unwrap();
        assert!(plain.get("leaderboard").is_none(), "{plain:#}");

        let mut with = context();
        with.set_leaderboard(Leaderboard {
            entries: vec![Entry {
                name: "pipe-echo round trip p50 (µs)".into(),
                value: 5.5,
                order: Order::Asc,
            }],
            summary: vec!["pipe-echo round trip p50 (µs): 5.500 (1.05 times the raw pipe)".into()],
        });
        let results: Value =
            serde_json::from_str(&render(Format::Gradescope, &every_outcome(), &with)).unwrap();
        assert_eq!(
            results["leaderboard"],
            serde_json::json!([
                {"name": "pipe-echo round trip p50 (µs)", "value": 5.5, "order": "asc"}
            ])
        );
        let output = results["output"].as_str().unwrap();
        assert!(output.starts_with("1/13 (seed 42)"), "{output}");
        assert!(
            output.ends_with("5.500 (1.05 times the raw pipe)"),
            "{output}"
        );
    }
}
