//! `cargo grade` as a user meets it: exit codes, the listing, usage errors, the JSON report.

use assert_cmd::Command;
use predicates::prelude::*;

fn grade() -> Command {
    Command::cargo_bin("cargo-grade").expect("the cargo-grade binary is built")
}

#[test]
fn list_shows_every_check_with_points() {
    let mut expected = Vec::new();
    for lab in ipc_grader::labs::all() {
        for check in lab.checks {
            expected.push(format!("{}/{}", lab.slug, check.name));
        }
    }
    let output = grade()
        .arg("--list")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let listing = String::from_utf8(output).expect("utf-8");
    for name in expected {
        assert!(listing.contains(&name), "--list misses {name}:\n{listing}");
    }
}

#[test]
fn unknown_lab_is_a_usage_error_listing_the_labs() {
    grade()
        .arg("no-such-lab")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("unknown lab `no-such-lab`"))
        .stderr(predicate::str::contains("pipe-echo"));
}

#[test]
fn unknown_check_is_a_usage_error_listing_the_checks() {
    grade()
        .arg("pipe-echo/no-such-check")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no check `no-such-check`"))
        .stderr(predicate::str::contains("echo-16-mib"));
}

#[test]
fn bad_option_value_is_a_usage_error() {
    grade().args(["--format", "xml"]).assert().code(2);
    grade().args(["--seed", "minus-one"]).assert().code(2);
}

#[test]
fn json_report_of_the_skeleton_is_all_not_implemented() {
    let assert = grade()
        .args([
            "--format",
            "json",
            "pipe-echo/echo-0-bytes",
            "pipe-echo/real-pipes",
        ])
        .assert()
        .code(1);
    let report: serde_json::Value =
        serde_json::from_slice(&assert.get_output().stdout).expect("stdout is one JSON document");
    assert_eq!(report["score"], 0);
    assert_eq!(report["max_score"], 4);
    let checks = report["labs"][0]["checks"].as_array().expect("checks");
    assert_eq!(checks.len(), 2);
    for check in checks {
        assert_eq!(check["status"], "not_implemented", "{check}");
        for field in ["name", "score", "max_score", "message", "duration_ms"] {
            assert!(!check[field].is_null(), "{field} missing in {check}");
        }
    }
}

#[test]
fn json_report_of_the_solution_is_full_marks() {
    let assert = grade()
        .args(["--solutions", "--format", "json", "pipe-echo/echo-4-kib"])
        .assert()
        .success();
    let report: serde_json::Value =
        serde_json::from_slice(&assert.get_output().stdout).expect("stdout is one JSON document");
    assert_eq!(report["labs"][0]["checks"][0]["status"], "passed");
    assert_eq!(report["score"], report["max_score"]);
}

#[test]
fn repeat_counts_passes_per_check() {
    let assert = grade()
        .args([
            "--solutions",
            "--repeat",
            "3",
            "--format",
            "json",
            "pipe-echo/echo-1-byte",
        ])
        .assert()
        .success();
    let tally: serde_json::Value =
        serde_json::from_slice(&assert.get_output().stdout).expect("stdout is one JSON document");
    assert_eq!(tally["repeat"], 3);
    assert_eq!(tally["checks"][0]["name"], "echo-1-byte");
    assert_eq!(tally["checks"][0]["passed"], 3);
    assert_eq!(tally["checks"][0]["runs"], 3);
    grade().args(["--repeat", "0"]).assert().code(2);
}

#[test]
fn zero_jobs_is_a_usage_error() {
    grade().args(["--jobs", "0", "pipe-echo"]).assert().code(2);
}

#[test]
fn solutions_where_there_are_none_is_a_usage_error() {
    let student_copy = tempfile::tempdir().expect("a temp dir");
    std::fs::create_dir(student_copy.path().join("labs")).expect("labs/");
    grade()
        .args(["--solutions", "pipe-echo"])
        .env("IPC_LABS_WORKSPACE", student_copy.path())
        .assert()
        .code(2)
        .stderr(predicate::str::contains("there is no solutions/"));
}

#[test]
fn make_skeletons_refuses_what_it_does_not_know_and_writes_nothing() {
    let copy = tempfile::tempdir().expect("a temp dir");
    for dir in ["labs", "grader"] {
        std::fs::create_dir(copy.path().join(dir)).expect("a directory");
    }
    std::fs::write(copy.path().join("grader/Cargo.toml"), "").expect("a file");
    std::fs::write(copy.path().join("Cargo.toml"), "[workspace]\n").expect("a file");
    for arg in ["--help", "--force", "labs"] {
        Command::cargo_bin("make-skeletons")
            .expect("the make-skeletons binary is built")
            .arg(arg)
            .env("IPC_LABS_WORKSPACE", copy.path())
            .assert()
            .code(2)
            .stderr(predicate::str::contains("OVERWRITES"));
    }
    let written = std::fs::read_dir(copy.path().join("labs"))
        .expect("labs/")
        .count();
    assert_eq!(written, 0, "make-skeletons wrote into labs/");
}

#[test]
fn list_columns_line_up() {
    let output = grade()
        .arg("--list")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let listing = String::from_utf8(output).expect("utf-8");
    // Where each check's points start: the same column on every line.
    let columns: std::collections::BTreeSet<usize> = listing
        .lines()
        .filter(|l| l.starts_with("  "))
        .map(|l| {
            let name_end = 2 + l[2..].find(' ').expect("a name then spaces");
            name_end + l[name_end..].find(|c: char| c != ' ').expect("points")
        })
        .collect();
    assert!(
        columns.len() <= 2,
        "points start at columns {columns:?}:\n{listing}"
    );
}

/// Copies the sources of this workspace (not its `target/`, nor `solutions/`) into `to`.
fn copy_sources(to: &std::path::Path) {
    let here = ipc_grader::workspace_root().expect("the tests run in a workspace");
    for item in ["Cargo.toml", "Cargo.lock", ".cargo", "labs", "grader"] {
        let status = std::process::Command::new("cp")
            .arg("-r")
            .arg(here.join(item))
            .arg(to)
            .status()
            .expect("cp runs");
        assert!(status.success(), "copying {item}");
    }
    let _ = std::fs::remove_dir_all(to.join("grader").join("target"));
}

#[test]
fn run_as_never_builds_the_students_code_as_root() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: --run-as needs the test to run as root");
        return;
    }
    let copy = tempfile::tempdir().expect("a temp dir");
    copy_sources(copy.path());
    let escaped = copy.path().join("escaped-from-build-rs");
    std::fs::write(
        copy.path().join("labs/01-pipe-echo/build.rs"),
        format!(
            "fn main() {{ std::fs::write({:?}, \"written by build.rs\").expect(\"writing outside the crate\"); }}\n",
            escaped.display().to_string()
        ),
    )
    .expect("a build script");
    let output = grade()
        .args(["--run-as", "nobody", "pipe-echo/echo-0-bytes"])
        .env("IPC_LABS_WORKSPACE", copy.path())
        .env_remove("IPC_LABS_PREBUILT")
        .output()
        .expect("the grader runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        !escaped.exists(),
        "the build script wrote outside its crate: {stdout}{stderr}"
    );
    match output.status.code() {
        // nobody cannot reach the toolchain or the checkout: refused before anything is built.
        Some(2) => assert!(stderr.contains("never run as root"), "{stderr}"),
        // It could: built as nobody, whose build script may not write there.
        _ => assert!(stdout.contains("does not compile"), "{stdout}{stderr}"),
    }
}

#[test]
fn hint_prints_the_hint_declared_with_the_check() {
    let lab = ipc_grader::labs::find("pipe-echo").expect("pipe-echo");
    let check = lab
        .checks
        .iter()
        .find(|c| c.name == "echo-16-mib")
        .expect("echo-16-mib");
    let hint = check.hint.expect("echo-16-mib has a hint");
    grade()
        .args(["hint", "pipe-echo/echo-16-mib"])
        .assert()
        .success()
        .stdout(format!("pipe-echo/echo-16-mib: {hint}\n"));
    grade()
        .args(["hint", "pipe-echo/no-such-check"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "lab `pipe-echo` has no check `no-such-check`",
        ));
    grade()
        .args(["hint", "pipe-echo"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("name one as LAB/CHECK"));
}

#[test]
fn a_failing_check_shows_its_hint_in_both_formats() {
    use std::os::unix::fs::PermissionsExt;
    // A workspace whose pipe-echo program (taken as built) exits at once: the check fails.
    let scratch = tempfile::tempdir().expect("a temp dir");
    let bin = scratch.path().join("target/grade/labs/grade");
    std::fs::create_dir_all(&bin).expect("the programs' directory");
    let program = bin.join("pipe-echo");
    std::fs::write(&program, "#!/bin/sh\nexit 3\n").expect("a stand-in program");
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let hint = ipc_grader::labs::find("pipe-echo")
        .and_then(|lab| lab.checks.iter().find(|c| c.name == "echo-0-bytes"))
        .and_then(|check| check.hint)
        .expect("echo-0-bytes has a hint");
    let run = |format: &str| {
        let output = grade()
            .args(["--format", format, "pipe-echo/echo-0-bytes"])
            .env("IPC_LABS_WORKSPACE", scratch.path())
            .env("IPC_LABS_PREBUILT", "1")
            .env_remove("CARGO_MANIFEST_DIR")
            .assert()
            .code(1)
            .get_output()
            .stdout
            .clone();
        String::from_utf8(output).expect("utf-8")
    };
    let human = run("human");
    assert!(
        human.contains(&format!("      hint: {hint}\n")),
        "no hint below the diagnosis:\n{human}"
    );
    let report: serde_json::Value = serde_json::from_str(&run("json")).expect("a JSON report");
    let check = &report["labs"][0]["checks"][0];
    assert_eq!(check["status"], "failed", "{report}");
    assert_eq!(check["hint"], hint, "{report}");
}

#[test]
fn watch_with_another_output_or_mode_is_a_usage_error() {
    for other in [&["--format", "json"][..], &["--list"], &["--repeat", "2"]] {
        grade()
            .arg("--watch")
            .args(other)
            .arg("pipe-echo")
            .assert()
            .code(2)
            .stderr(predicate::str::contains("cannot be used with"));
    }
}
