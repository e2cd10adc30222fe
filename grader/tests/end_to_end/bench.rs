//! `cargo grade bench` as a smoke test: tiny sizes and few samples, so that it is quick. It
//! checks the shape of what is reported, never how fast anything is.

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;

fn grade() -> Command {
    Command::cargo_bin("cargo-grade").expect("the cargo-grade binary is built")
}

/// The options that make a measurement small.
const TINY: [&str; 10] = [
    "--samples",
    "5",
    "--warmup",
    "1",
    "--max-size",
    "1K",
    "--budget",
    "64K",
    "--timeout",
    "120",
];

fn positive(value: &Value) -> bool {
    value.as_f64().is_some_and(|v| v.is_finite() && v > 0.0)
}

#[test]
fn solutions_are_measured_with_a_positive_ratio_to_every_baseline() {
    let out = tempfile::tempdir().expect("a temporary directory");
    let output = grade()
        .args(["bench", "--solutions", "--format", "json", "--out"])
        .arg(out.path())
        .args(TINY)
        .output()
        .expect("cargo grade bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "cargo grade bench failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(&stdout).expect("the report is JSON");
    let written = std::fs::read_to_string(out.path().join("bench.json")).expect("bench.json");
    assert_eq!(
        serde_json::from_str::<Value>(&written).expect("bench.json is JSON"),
        report
    );
    assert_eq!(report["programs"], "solutions");
    assert!(report["machine"]["cpu"].is_string());
    assert!(report["machine"]["cores"].as_u64().is_some_and(|n| n >= 1));
    assert_eq!(
        report["plan"]["throughput_sizes"],
        serde_json::json!([64, 256, 1024])
    );
    assert_eq!(report["failures"], serde_json::json!([]), "{report:#}");

    let baselines = report["baselines"].as_array().expect("baselines");
    for name in [
        "raw pipe",
        "raw unix socket",
        "raw tcp",
        "raw mqueue",
        "raw semaphore",
        "raw mutex",
        "spinning flag",
        "memcpy",
    ] {
        assert!(
            baselines.iter().any(|b| b["mechanism"] == name),
            "no figure of the baseline {name}"
        );
    }
    let figures = report["figures"].as_array().expect("figures");
    // Every lab of the course.
    for lab in [
        "pipe-echo",
        "mqueue-priority",
        "socket-reqrep (unix)",
        "socket-reqrep (tcp)",
        "sysv-shm",
        "posix-shm",
        "shared-mutex",
        "semaphore-handoff",
        "chunked-transfer",
    ] {
        assert!(
            figures.iter().any(|f| f["mechanism"] == lab),
            "no figure of {lab}"
        );
    }
    for figure in baselines.iter().chain(figures) {
        assert!(positive(&figure["value"]), "{figure}");
        assert!(
            ["us", "GiB/s"].contains(&figure["unit"].as_str().unwrap_or("")),
            "{figure}"
        );
        assert!(
            ["same-cpu", "cross-cpu"].contains(&figure["placement"].as_str().unwrap_or("")),
            "{figure}"
        );
    }
    for figure in figures {
        assert!(
            positive(&figure["ratio"]),
            "a lab figure without a ratio: {figure}"
        );
        assert!(positive(&figure["baseline"]["value"]), "{figure}");
        let ratio =
            figure["value"].as_f64().unwrap() / figure["baseline"]["value"].as_f64().unwrap();
        assert!(
            (ratio - figure["ratio"].as_f64().unwrap()).abs() < 1e-9 * ratio,
            "{figure}"
        );
    }
    for crossover in report["crossovers"].as_array().expect("crossovers") {
        assert!(
            ["sysv-shm", "posix-shm", "chunked-transfer"]
                .contains(&crossover["shared_memory"].as_str().unwrap_or("")),
            "{crossover}"
        );
        assert_eq!(crossover["pipe"], "raw pipe");
        assert!(
            [64, 256, 1024].contains(&crossover["size"].as_u64().unwrap_or(0)),
            "{crossover}"
        );
    }
    let svg = std::fs::read_to_string(out.path().join("throughput.svg")).expect("the chart");
    assert!(svg.contains("<svg"), "not an SVG: {svg:.200}");
    for line in ["raw pipe", "sysv-shm", "posix-shm", "chunked-transfer"] {
        assert!(svg.contains(line), "no line of {line} on the chart");
    }
    let page = std::fs::read_to_string(out.path().join("bench.md")).expect("bench.md");
    assert!(page.starts_with("# Benchmark figures\n"), "{page}");
    for row in [
        "| shared-mutex | raw mutex |",
        "| raw mutex |  |",
        "| 1 KiB |",
    ] {
        assert!(page.contains(row), "no `{row}` in bench.md:\n{page}");
    }
    assert!(
        page.contains("posix-shm (/ raw pipe, memcpy)") && !page.contains("Not measured"),
        "{page}"
    );

    // The saved report, read back, gives the same report, chart and page.
    let again = tempfile::tempdir().expect("a temporary directory");
    grade()
        .args(["bench", "--from"])
        .arg(out.path().join("bench.json"))
        .arg("--out")
        .arg(again.path())
        .assert()
        .success();
    for file in ["bench.json", "throughput.svg", "bench.md"] {
        let first = std::fs::read_to_string(out.path().join(file)).expect("written");
        let again = std::fs::read_to_string(again.path().join(file)).expect("written again");
        let differs = first.lines().zip(again.lines()).find(|(a, b)| a != b);
        assert!(
            first == again,
            "{file} differs when written from the saved report: {differs:?}"
        );
    }
}

#[test]
fn a_lab_not_yet_written_is_reported_and_the_baselines_still_measured() {
    let output = grade()
        .args(["bench", "semaphore-handoff", "--format", "json"])
        .args(TINY)
        .output()
        .expect("cargo grade bench runs");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let report: Value = serde_json::from_slice(&output.stdout).expect("the report is JSON");
    let failures = report["failures"].as_array().expect("failures");
    assert!(!failures.is_empty());
    assert!(
        failures
            .iter()
            .all(|f| f["mechanism"] == "semaphore-handoff" && f["status"] == "not_implemented"),
        "{failures:#?}"
    );
    assert!(
        report["baselines"]
            .as_array()
            .is_some_and(|b| !b.is_empty())
    );
}

#[test]
fn bad_selections_and_sizes_are_usage_errors() {
    grade()
        .args(["bench", "no-such-lab"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("unknown lab `no-such-lab`"));
    grade()
        .args(["bench", "--max-size", "10"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("below the smallest message"));
    grade().args(["bench", "--samples", "1"]).assert().code(2);
    // A saved report is only shown again: nothing is measured.
    grade()
        .args(["bench", "--from", "bench.json", "--samples", "5"])
        .assert()
        .code(2);
    grade()
        .args(["bench", "--from", "no/such/bench.json"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--from no/such/bench.json"));
}

/// `cargo grade --format gradescope --leaderboard` with a tiny plan, on one quick check of each
/// of two labs (a lab is measured when the checks graded all pass).
fn leaderboard_of(variant: Option<&str>, code: i32) -> Value {
    let mut command = grade();
    command.args(variant);
    let output = command
        .args(["--seed", "1", "--format", "gradescope"])
        .args(["--leaderboard", "--leaderboard-samples", "5"])
        .args(["pipe-echo/echo-0-bytes", "chunked-transfer/empty-and-tiny"])
        .output()
        .expect("cargo grade runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(code),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

#[test]
fn the_gradescope_leaderboard_ranks_each_lab_figure_the_right_way() {
    let results = leaderboard_of(Some("--solutions"), 0);
    let board = results["leaderboard"].as_array().expect("a leaderboard");
    let columns: Vec<(&str, &str)> = board
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["order"].as_str().unwrap()))
        .collect();
    assert_eq!(
        columns,
        [
            ("pipe-echo round trip p50 (µs)", "asc"),
            ("pipe-echo throughput at 1 MiB (GiB/s)", "desc"),
            ("chunked-transfer throughput at 1 MiB (GiB/s)", "desc"),
        ],
        "{results:#}"
    );
    for entry in board {
        assert!(positive(&entry["value"]), "{entry}");
        assert_eq!(entry.as_object().unwrap().len(), 3, "{entry}");
    }
    let output = results["output"].as_str().unwrap();
    assert!(
        output.contains("chunked-transfer throughput at 1 MiB (GiB/s): ")
            && output.contains("times the raw pipe")
            && output.contains("times the memcpy")
            && !output.contains("not measured"),
        "{output}"
    );
    // The grade is the grading's: the leaderboard adds no test.
    assert_eq!(results["tests"].as_array().unwrap().len(), 2);
}

#[test]
fn labs_that_do_not_pass_get_no_figure_on_the_leaderboard() {
    let results = leaderboard_of(None, 1);
    assert_eq!(results["leaderboard"], serde_json::json!([]), "{results:#}");
    let output = results["output"].as_str().unwrap();
    assert!(
        output.contains("pipe-echo: not measured, its checks do not all pass")
            && output.contains("chunked-transfer: not measured"),
        "{output}"
    );
}

#[test]
fn a_leaderboard_needs_the_gradescope_format() {
    grade()
        .args(["--leaderboard", "pipe-echo"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("add --format gradescope"));
    grade()
        .args(["--format", "gradescope", "--leaderboard-samples", "5"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--leaderboard"));
    grade()
        .args([
            "--format",
            "gradescope",
            "--leaderboard",
            "--leaderboard-samples",
            "2",
        ])
        .assert()
        .code(2);
}
