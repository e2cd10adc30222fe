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

#[cfg(test)]
mod tests {
    use serde_json::Value;

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
}
