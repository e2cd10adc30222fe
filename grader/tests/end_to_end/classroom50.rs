//! The Classroom 50 autograder end to end: `cargo grade export --classroom50` writes the config
//! files; the generated `autograder.py` runs in the exported template, with the environment the
//! Classroom 50 runner sets, on the skeleton and on the solution of one lab, and its result.json
//! is held to the rules of the schema `classroom50/result/v1`.

use std::path::Path;
use std::process::Command;

use assert_cmd::cargo::CommandCargoExt;
use ipc_grader::deliver::classroom50::{Classroom50Error, write};
use serde_json::Value;

use crate::support::{self, workspace};

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
    for field in [
        "classroom",
        "assignment",
        "owner",
        "commit",
        "release",
        "review",
    ] {
        if result[field].as_str().is_none_or(str::is_empty) {
            return Err(format!("`{field}` is not a non-empty string"));
        }
    }
    // YYYY-MM-DDTHH:MM:SSZ, UTC.
    let instant = |value: &Value| {
        value.as_str().is_some_and(|s| {
            let b = s.as_bytes();
            let digits = |range: std::ops::Range<usize>| b[range].iter().all(u8::is_ascii_digit);
            b.len() == 20
                && digits(0..4)
                && b[4] == b'-'
                && digits(5..7)
                && b[7] == b'-'
                && digits(8..10)
                && b[10] == b'T'
                && digits(11..13)
                && &s[11..13] <= "23"
                && b[13] == b':'
                && digits(14..16)
                && &s[14..16] <= "59"
                && b[16] == b':'
                && digits(17..19)
                && &s[17..19] <= "59"
                && b[19] == b'Z'
        })
    };
    if !instant(&result["datetime"]) {
        return Err(format!(
            "datetime {} is not YYYY-MM-DDTHH:MM:SSZ",
            result["datetime"]
        ));
    }
    if object.contains_key("graded_at") && !instant(&result["graded_at"]) {
        return Err(format!(
            "graded_at {} is not YYYY-MM-DDTHH:MM:SSZ",
            result["graded_at"]
        ));
    }
    if let Some(by) = object.get("submitted_by") {
        let by = by.as_object().ok_or("submitted_by is not an object")?;
        if by
            .get("username")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err("submitted_by has no username".into());
        }
        if by.keys().any(|k| k != "username" && k != "id")
            || by.get("id").is_some_and(|id| !id.is_u64() && !id.is_null())
        {
            return Err(format!("submitted_by is not {{username, id}}: {by:?}"));
        }
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
        if test["test-name"].as_str().is_none_or(str::is_empty) || !test["passed"].is_boolean() {
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
        // A target directory with the registry crates built.
        .env(
            "CARGO_TARGET_DIR",
            support::template_target("classroom50", checkout),
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
        "commit": "u", "release": "u", "review": "u", "datetime": "2026-12-03T09:05:59Z",
        "score": 1, "max-score": 2,
        "tests": [{"test-name": "t", "passed": false, "score": 1, "max-score": 2}],
        "submitted_by": {"username": "s", "id": null}
    });
    check_schema(&good).unwrap();
    for (field, bad) in [
        ("datetime", serde_json::json!("2026-12-03 09:05:59")),
        ("datetime", serde_json::json!("2026-12-03T24:05:59Z")),
        ("graded_at", serde_json::json!("yesterday")),
        ("owner", serde_json::json!("")),
        ("submitted_by", serde_json::json!({"id": 3})),
        (
            "submitted_by",
            serde_json::json!({"username": "s", "login": "s"}),
        ),
    ] {
        let mut wrong = good.clone();
        wrong[field] = bad;
        assert!(check_schema(&wrong).is_err(), "{field}: {}", wrong[field]);
    }
    let mut unnamed = good.clone();
    unnamed["tests"][0]["test-name"] = "".into();
    assert!(check_schema(&unnamed).is_err());
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
    support::start_lab_builds(&template);
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
