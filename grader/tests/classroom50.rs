//! The Classroom 50 autograder end to end: `cargo grade export --classroom50` writes the config
//! files; the generated `autograder.py` runs in the exported template, with the environment the
//! Classroom 50 runner sets, on the skeleton and on the solution of one lab, and its result.json
//! is held to the rules of the schema `classroom50/result/v1`.

use std::path::{Path, PathBuf};
use std::process::Command;

use assert_cmd::cargo::CommandCargoExt;
use ipc_grader::deliver::classroom50::{Classroom50Error, write};
use serde_json::Value;

fn workspace() -> PathBuf {
    ipc_grader::workspace_root().expect("the tests run in a workspace")
}

/// The rules of `schemas/result-v1.schema.json`: every required field, integer scores,
/// score <= max-score at both levels, no other top-level field.
fn check_schema(result: &Value) -> Result<(), String> {
    const REQUIRED: &[&str] = &[
        "schema",
        "classroom",
        "assignment",
        "assignment_type",
        "owner",
        "submission",
        "commit",
        "release",
        "review",
        "datetime",
        "score",
        "max-score",
        "tests",
    ];
    const OPTIONAL: &[&str] = &["graded_at", "submitted_by"];
    let object = result.as_object().ok_or("not an object")?;
    for field in REQUIRED {
        if !object.contains_key(*field) {
            return Err(format!("`{field}` is missing"));
        }
    }
    if let Some(unknown) = object
        .keys()
        .find(|k| !REQUIRED.contains(&k.as_str()) && !OPTIONAL.contains(&k.as_str()))
    {
        return Err(format!("unknown top-level field `{unknown}`"));
    }
    if result["schema"] != "classroom50/result/v1" {
        return Err(format!("schema is {}", result["schema"]));
    }
    if !matches!(
        result["assignment_type"].as_str(),
        Some("individual" | "group")
    ) {
        return Err("assignment_type is neither individual nor group".into());
    }
    if !result["submission"]
        .as_str()
        .is_some_and(|s| s.starts_with("submit/"))
    {
        return Err("submission is not a submit/ tag".into());
    }
    let scores = |value: &Value, at: &str| -> Result<(u64, u64), String> {
        let score = value["score"].as_u64();
        let max = value["max-score"].as_u64();
        match (score, max) {
            (Some(score), Some(max)) if score <= max => Ok((score, max)),
            _ => Err(format!(
                "{at}: score and max-score must be integers, score <= max"
            )),
        }
    };
    scores(result, "the result")?;
    for test in result["tests"].as_array().ok_or("tests is not an array")? {
        if !test["test-name"].is_string() || !test["passed"].is_boolean() {
            return Err(format!("a test lacks test-name or passed: {test}"));
        }
        scores(test, test["test-name"].as_str().unwrap())?;
    }
    Ok(())
}

/// Runs `autograder.py` in `checkout` as the runner does; returns result.json.
fn run_autograder(config: &Path, checkout: &Path) -> Value {
    let output = Command::new("python3")
        .arg(config.join("autograder.py"))
        .current_dir(checkout)
        .env("CLASSROOM", "os-2026")
        .env("ASSIGNMENT", "pipe-echo")
        .env("SUBMISSION_TAG", "submit/1")
        .env("USERNAME", "a-student")
        .env("OWNER", "a-student")
        .env(
            "COMMIT_URL",
            "https://github.com/os-2026/pipe-echo-a-student/commit/0123abc",
        )
        .env(
            "RELEASE_URL",
            "https://github.com/os-2026/pipe-echo-a-student/releases/tag/submit/1",
        )
        .env(
            "REVIEW_URL",
            "https://github.com/os-2026/pipe-echo-a-student/pull/1",
        )
        .env_remove("IPC_LABS_WORKSPACE")
        .env_remove("IPC_LABS_PREBUILT")
        // The target directory every test building a template shares: the registry crates are
        // built once.
        .env(
            "CARGO_TARGET_DIR",
            workspace().join("target/template-tests"),
        )
        .env_remove("CARGO_MANIFEST_DIR")
        .output()
        .expect("python3 runs");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "autograder.py failed: {log}");
    let text = std::fs::read_to_string(checkout.join("result.json"))
        .unwrap_or_else(|e| panic!("no result.json ({e}): {log}"));
    let result: Value = serde_json::from_str(&text).unwrap();
    check_schema(&result)
        .unwrap_or_else(|why| panic!("result.json breaks the schema: {why}\n{text}"));
    result
}

#[test]
fn the_schema_check_rejects_what_the_schema_rejects() {
    let good = serde_json::json!({
        "schema": "classroom50/result/v1", "classroom": "c", "assignment": "a",
        "assignment_type": "individual", "owner": "o", "submission": "submit/1",
        "commit": "u", "release": "u", "review": "u", "datetime": "d",
        "score": 1, "max-score": 2,
        "tests": [{"test-name": "t", "passed": false, "score": 1, "max-score": 2}]
    });
    check_schema(&good).unwrap();
    let mut extra = good.clone();
    extra["seed"] = 1.into();
    assert!(check_schema(&extra).is_err());
    let mut fractional = good.clone();
    fractional["tests"][0]["score"] = 0.5.into();
    assert!(check_schema(&fractional).is_err());
    let mut over = good.clone();
    over["score"] = 3.into();
    assert!(check_schema(&over).is_err());
    let mut missing = good;
    missing.as_object_mut().unwrap().remove("release");
    assert!(check_schema(&missing).is_err());
}

#[test]
fn the_generated_autograder_grades_the_skeleton_and_the_solution() {
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("template");
    let config = dir.path().join("config/autograders/pipe-echo");
    let status = Command::cargo_bin("cargo-grade")
        .unwrap()
        .args(["export", "--labs", "pipe-echo", "--classroom50"])
        .arg(&config)
        .arg(&template)
        .env("IPC_LABS_WORKSPACE", workspace())
        .status()
        .unwrap();
    assert!(status.success());
    // A result.json the student committed does not count.
    std::fs::write(template.join("result.json"), r#"{"score": 1000}"#).unwrap();

    let skeleton = run_autograder(&config, &template);
    let max = skeleton["max-score"].as_u64().unwrap();
    assert!(max > 0, "{skeleton:#}");
    assert_eq!(skeleton["score"], 0, "{skeleton:#}");
    assert_eq!(skeleton["assignment"], "pipe-echo");
    assert!(
        skeleton["tests"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["test-name"].as_str().unwrap().starts_with("pipe-echo/")),
        "{skeleton:#}"
    );

    let solution = workspace().join("solutions/01-pipe-echo/src");
    for file in ["lib.rs", "main.rs"] {
        std::fs::copy(
            solution.join(file),
            template.join("labs/01-pipe-echo/src").join(file),
        )
        .unwrap();
    }
    let solved = run_autograder(&config, &template);
    assert_eq!(solved["score"].as_u64(), Some(max), "{solved:#}");
}

#[test]
fn the_config_files_are_written_once_and_kept_without_force() {
    let workspace = ipc_grader::workspace_root().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("autograders/pipe-echo");
    write(&workspace, &config, &["pipe-echo"], false).unwrap();
    assert_eq!(
        std::fs::read_to_string(config.join("labs")).unwrap(),
        "pipe-echo\n"
    );
    let runtime: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(config.join("runtime.json")).unwrap())
            .unwrap();
    assert_eq!(runtime["rust"], "stable");
    assert!(
        std::fs::read_to_string(config.join("autograder.py"))
            .unwrap()
            .contains("classroom50=")
    );
    std::fs::write(config.join("labs"), "mine").unwrap();
    let error = write(&workspace, &config, &["sysv-shm"], false).unwrap_err();
    assert!(matches!(error, Classroom50Error::Exists(_)), "{error}");
    assert_eq!(
        std::fs::read_to_string(config.join("labs")).unwrap(),
        "mine"
    );
    write(&workspace, &config, &["sysv-shm"], true).unwrap();
    assert_eq!(
        std::fs::read_to_string(config.join("labs")).unwrap(),
        "sysv-shm\n"
    );
}
