//! The labs' own unit tests (`cargo test -p <lab>`), run from here because the test command
//! leaves the lab crates out (their tests fail on the skeletons, by design).
//!
//! In this repository every lab's unit tests must pass on its reference solution, and each of
//! them must fail on the skeleton as shipped by reaching a `todo!()`: a test that passes on the
//! skeleton checks nothing the student writes. In a student's copy (no `solutions/`) there is
//! nothing to run here: `cargo test` runs the labs' tests directly. Afterwards no named object
//! a unit test created may be left by a process that has ended.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use ipc_grader::engine::audit;
use ipc_grader::engine::compile::{self, Variant};
use ipc_labs_driver::testing::creator_of;
use libtest_mimic::{Arguments, Failed, Trial};

/// What a `todo!()` panics with.
const TODO_PANIC: &str = "not yet implemented";

fn workspace() -> PathBuf {
    ipc_grader::workspace_root().expect("the tests run in an ipc-labs workspace")
}

/// Runs the unit tests of `slug`'s crate in `variant`; returns whether they passed and their
/// output. They are built as the grader builds the lab programs (its profile and target
/// directory), which shares the dependencies already built for grading.
fn run_unit_tests(variant: Variant, slug: &str) -> Result<(bool, String), Failed> {
    let workspace = workspace();
    let manifest = match variant {
        Variant::Labs => workspace.join("Cargo.toml"),
        Variant::Solutions => workspace.join("solutions").join("Cargo.toml"),
    };
    let output = Command::new(compile::cargo_program())
        .args([
            "test",
            "--lib",
            "--package",
            slug,
            "--profile",
            compile::PROFILE,
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(compile::target_dir(&workspace, variant))
        .env("CARGO_TERM_COLOR", "never")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !stdout.contains("test result:") {
        return Err(format!(
            "the unit tests of {slug} in {} did not run to the end:\n{stderr}\n{stdout}",
            variant.dir()
        )
        .into());
    }
    Ok((output.status.success(), stdout))
}

/// Each test's outcome (`ok`, `FAILED`, `ignored`) by name, from libtest's `test NAME ... X`
/// lines.
fn outcomes(stdout: &str) -> BTreeMap<&str, &str> {
    stdout
        .lines()
        .filter_map(|line| line.strip_prefix("test ")?.split_once(" ... "))
        .collect()
}

/// What a failed test printed, from its `---- NAME stdout ----` section.
fn failure_output<'a>(stdout: &'a str, test: &str) -> &'a str {
    let heading = format!("---- {test} stdout ----");
    let Some(start) = stdout.find(&heading) else {
        return "";
    };
    let section = &stdout[start + heading.len()..];
    let end = section.find("\n---- ").unwrap_or(section.len());
    &section[..end]
}

fn pass_on_solution(slug: &str) -> Result<(), Failed> {
    let (passed, stdout) = run_unit_tests(Variant::Solutions, slug)?;
    let outcomes = outcomes(&stdout);
    if outcomes.is_empty() {
        return Err(format!("{slug} has no unit tests").into());
    }
    if !passed || outcomes.values().any(|&outcome| outcome != "ok") {
        return Err(format!("the unit tests of {slug} fail on its solution:\n{stdout}").into());
    }
    Ok(())
}

fn reach_todo_on_skeleton(slug: &str) -> Result<(), Failed> {
    let (passed, stdout) = run_unit_tests(Variant::Labs, slug)?;
    let outcomes = outcomes(&stdout);
    let wrong: Vec<String> = outcomes
        .iter()
        .filter(|&(test, &outcome)| {
            outcome != "FAILED" || !failure_output(&stdout, test).contains(TODO_PANIC)
        })
        .map(|(test, outcome)| format!("{test}: {outcome}"))
        .collect();
    if passed || outcomes.is_empty() || !wrong.is_empty() {
        return Err(format!(
            "every unit test of {slug} must fail on the skeleton with a todo!() panic; these do \
             not: {}\n{stdout}",
            wrong.join(", ")
        )
        .into());
    }
    Ok(())
}

fn trials() -> Vec<Trial> {
    if !workspace().join("solutions").is_dir() {
        return Vec::new();
    }
    let mut trials = Vec::new();
    for lab in ipc_grader::labs::all() {
        let slug = lab.slug;
        trials.push(Trial::test(format!("solutions::{slug}"), move || {
            pass_on_solution(slug)
        }));
        trials.push(Trial::test(format!("labs::{slug}"), move || {
            reach_todo_on_skeleton(slug)
        }));
    }
    trials
}

/// Test objects that were created during the run by a process that no longer exists.
fn left_behind(before: &std::collections::BTreeSet<audit::IpcObject>) -> Vec<String> {
    audit::snapshot()
        .difference(before)
        .filter(|object| {
            object
                .name()
                .and_then(creator_of)
                .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        })
        .map(|object| object.to_string())
        .collect()
}

fn main() -> ExitCode {
    let arguments = Arguments::from_args();
    let before = audit::snapshot();
    let conclusion = libtest_mimic::run(&arguments, trials());
    let left = left_behind(&before);
    if !left.is_empty() {
        eprintln!("left behind by the unit tests: {}", left.join(", "));
        return ExitCode::FAILURE;
    }
    conclusion.exit_code()
}
