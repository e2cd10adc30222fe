//! The report formats as `cargo grade` prints and writes them, from real gradings of one check:
//! on the reference solution (it passes) and on the skeleton (it is not implemented).

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;

const CHECK: &str = "pipe-echo/echo-0-bytes";

fn grade() -> Command {
    let mut command = Command::cargo_bin("cargo-grade").expect("the cargo-grade binary is built");
    // What the Classroom 50 runner would set must not leak in from the machine.
    for name in CLASSROOM50_ENV.iter().map(|(name, _)| name) {
        command.env_remove(name);
    }
    command
}

/// Grades CHECK (on the solution when `solution`) in `format`; stdout, after the exit code is
/// checked: 0 for the solution, 1 for the skeleton.
fn graded(format: &str, solution: bool) -> String {
    let mut command = grade();
    if solution {
        command.arg("--solutions");
    }
    let assert = command
        .args(["--seed", "3", "--format", format, CHECK])
        .envs(CLASSROOM50_ENV)
        .assert()
        .code(if solution { 0 } else { 1 });
    String::from_utf8(assert.get_output().stdout.clone()).expect("UTF-8")
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not one JSON document ({e}):\n{text}"))
}

const CLASSROOM50_ENV: [(&str, &str); 7] = [
    ("CLASSROOM", "os-2026"),
    ("ASSIGNMENT", "ipc-labs"),
    ("SUBMISSION_TAG", "submit/20261202T092230Z-abc1234"),
    ("OWNER", "ada"),
    (
        "COMMIT_URL",
        "https://example.org/ipc-labs-ada/commit/abc1234",
    ),
    (
        "RELEASE_URL",
        "https://example.org/ipc-labs-ada/releases/tag/submit",
    ),
    (
        "REVIEW_URL",
        "https://example.org/ipc-labs-ada/compare/a...b",
    ),
];

#[test]
fn classroom() {
    let passed = json(&graded("classroom", true));
    assert_eq!(passed["version"], 1);
    assert_eq!(passed["status"], "pass");
    assert_eq!(passed["max_score"], 1);
    assert_eq!(passed["tests"][0]["name"], CHECK);
    assert_eq!(passed["tests"][0]["status"], "pass");
    assert_eq!(passed["tests"][0]["score"], 1);
    assert_eq!(
        passed["tests"][0]["filename"],
        "solutions/01-pipe-echo/src/lib.rs"
    );

    let todo = json(&graded("classroom", false));
    assert_eq!(todo["status"], "fail");
    let test = &todo["tests"][0];
    assert_eq!(test["status"], "fail");
    assert_eq!(test["score"], 0);
    assert_eq!(test["filename"], "labs/01-pipe-echo/src/lib.rs");
    assert!(test["line_no"].as_u64().unwrap() > 0, "{test}");
    assert!(
        test["message"]
            .as_str()
            .unwrap()
            .starts_with("not yet implemented")
    );
}

#[test]
fn github_summary() {
    let passed = graded("github-summary", true);
    assert!(passed.starts_with("## cargo grade: 1/1\n"), "{passed}");
    assert!(
        passed.contains("| pipe-echo | echo-0-bytes | 1/1 | passed |"),
        "{passed}"
    );
    let todo = graded("github-summary", false);
    assert!(todo.starts_with("## cargo grade: 0/1\n"), "{todo}");
    assert!(
        todo.contains("| pipe-echo | echo-0-bytes | 0/1 | not_implemented | not yet implemented"),
        "{todo}"
    );
}

#[test]
fn github_annotations() {
    assert_eq!(
        graded("github-annotations", true),
        "",
        "a pass has no annotation"
    );
    let todo = graded("github-annotations", false);
    let lines: Vec<&str> = todo.lines().collect();
    assert_eq!(lines.len(), 1, "{todo}");
    assert!(
        lines[0].starts_with("::error file=labs/01-pipe-echo/src/lib.rs,line="),
        "{todo}"
    );
    assert!(
        lines[0].contains(",title=pipe-echo/echo-0-bytes::not yet implemented"),
        "{todo}"
    );
}

#[test]
fn classroom50() {
    for (solution, score) in [(true, 1), (false, 0)] {
        let result = json(&graded("classroom50", solution));
        assert_eq!(result["schema"], "classroom50/result/v1");
        assert_eq!(result["classroom"], "os-2026");
        assert_eq!(result["assignment"], "ipc-labs");
        assert_eq!(result["assignment_type"], "individual");
        assert_eq!(result["owner"], "ada");
        assert_eq!(result["submission"], "submit/20261202T092230Z-abc1234");
        assert_eq!(
            result["review"],
            "https://example.org/ipc-labs-ada/compare/a...b"
        );
        assert_eq!(result["score"], score);
        assert_eq!(result["max-score"], 1);
        let test = &result["tests"][0];
        assert_eq!(test["test-name"], CHECK);
        assert_eq!(test["passed"], solution);
        assert_eq!(test["score"], score);
        assert_eq!(test["max-score"], 1);
    }
}

#[test]
fn classroom50_without_its_environment_is_a_usage_error_before_grading() {
    let logs = tempfile::tempdir().expect("a temp dir");
    let log_dir = logs.path().join("logs");
    grade()
        .args(["--format", "classroom50", CHECK, "--log-dir"])
        .arg(&log_dir)
        .envs(
            CLASSROOM50_ENV
                .into_iter()
                .filter(|(name, _)| *name != "CLASSROOM"),
        )
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains("CLASSROOM"));
    assert!(!log_dir.exists(), "nothing was graded");
}

#[test]
fn gradescope() {
    let passed = json(&graded("gradescope", true));
    assert_eq!(passed["score"], 1);
    assert!(passed["execution_time"].is_u64());
    let test = &passed["tests"][0];
    assert_eq!(test["name"], CHECK);
    assert_eq!(test["status"], "passed");
    assert_eq!(
        (test["score"].as_u64(), test["max_score"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(test["visibility"], "visible");

    let todo = json(&graded("gradescope", false));
    assert_eq!(todo["score"], 0);
    assert_eq!(todo["tests"][0]["status"], "failed");
    assert!(
        todo["tests"][0]["output"]
            .as_str()
            .unwrap()
            .starts_with("not yet implemented")
    );
}

/// The `testsuite` and `testcase` elements of a JUnit document, and its failures.
fn junit_counts(xml: &str) -> (usize, usize, usize) {
    let mut reader = quick_xml::Reader::from_str(xml);
    let (mut suites, mut cases, mut failures) = (0, 0, 0);
    loop {
        match reader.read_event().expect("well-formed XML") {
            quick_xml::events::Event::Start(e) | quick_xml::events::Event::Empty(e) => {
                match e.name().as_ref() {
                    "testsuite" => suites += 1,
                    "testcase" => cases += 1,
                    "failure" => failures += 1,
                    _ => {}
                }
            }
            quick_xml::events::Event::Eof => return (suites, cases, failures),
            _ => {}
        }
    }
}

#[test]
fn junit() {
    assert_eq!(junit_counts(&graded("junit", true)), (1, 1, 0));
    let todo = graded("junit", false);
    assert_eq!(junit_counts(&todo), (1, 1, 1));
    assert!(
        todo.contains(r#"<testcase classname="pipe-echo" name="echo-0-bytes""#),
        "{todo}"
    );
}

#[test]
fn write_adds_formats_from_the_same_grading() {
    let out = tempfile::tempdir().expect("a temp dir");
    let path = |name: &str| out.path().join(name);
    let assert = grade()
        .args([
            "--format",
            "json",
            "--seed",
            "11",
            CHECK,
            "pipe-echo/echo-1-byte",
        ])
        .arg("--write")
        .arg(format!("junit={}", path("junit.xml").display()))
        .arg("--write")
        .arg(format!("classroom={}", path("classroom.json").display()))
        .arg("--write")
        .arg(format!("github-summary={}", path("summary.md").display()))
        .assert()
        .code(1);
    let report = json(&String::from_utf8_lossy(&assert.get_output().stdout));
    assert_eq!(report["seed"], 11);
    let checks = report["labs"][0]["checks"].as_array().expect("checks");
    assert_eq!(checks.len(), 2);

    let read = |name: &str| std::fs::read_to_string(path(name)).expect("written");
    assert_eq!(junit_counts(&read("junit.xml")), (1, 2, 2));
    let classroom = json(&read("classroom.json"));
    assert_eq!(classroom["max_score"], report["max_score"]);
    let durations: Vec<&Value> = checks.iter().map(|c| &c["duration_ms"]).collect();
    let classroom_durations: Vec<&Value> = classroom["tests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["duration"])
        .collect();
    assert_eq!(
        durations, classroom_durations,
        "one grading, not one per format"
    );
    let summary = read("summary.md");
    assert!(summary.starts_with("## cargo grade: 0/"), "{summary}");
    assert!(summary.contains("echo-1-byte"), "{summary}");
}

#[test]
fn write_errors_are_usage_errors_before_grading() {
    let out = tempfile::tempdir().expect("a temp dir");
    let log_dir = out.path().join("logs");
    let missing_dir = out.path().join("no").join("such").join("dir.xml");
    for (write, says) in [
        ("xml=out.xml".to_string(), "unknown format `xml`"),
        ("junit".to_string(), "FORMAT=PATH"),
        (format!("junit={}", missing_dir.display()), "cannot write"),
        (format!("junit={}", out.path().display()), "cannot write"),
    ] {
        grade()
            .args([CHECK, "--write", &write, "--log-dir"])
            .arg(&log_dir)
            .assert()
            .code(2)
            .stderr(predicate::str::contains(says));
        assert!(!log_dir.exists(), "graded despite --write {write}");
    }
    for repeat in [
        vec!["--format", "junit"],
        vec!["--write", "junit=junit.xml"],
    ] {
        grade()
            .args([CHECK, "--repeat", "2", "--log-dir"])
            .arg(&log_dir)
            .args(repeat)
            .assert()
            .code(2)
            .stderr(predicate::str::contains("--repeat"));
        assert!(!log_dir.exists(), "graded with --repeat");
    }
}

#[test]
fn a_document_that_cannot_be_written_fails_the_run() {
    // /dev/full opens, and every write to it fails for want of space.
    grade()
        .args(["--solutions", CHECK, "--write", "json=/dev/full"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("cannot write /dev/full"));
}
