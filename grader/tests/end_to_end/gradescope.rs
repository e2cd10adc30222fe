//! The Gradescope autograder end to end: `cargo grade gradescope` writes the zip, which is
//! unpacked into a fake `/autograder`; `setup.sh` builds it and `run_autograder` grades a full,
//! an empty, a hostile and a skeleton submission of one lab.

use std::path::Path;
use std::process::Command;

use assert_cmd::cargo::CommandCargoExt;
use ipc_grader::bench::leaderboard::LeaderboardArgs;
use ipc_grader::deliver::export::ExportError;
use ipc_grader::deliver::gradescope::{GradescopeError, ROOT_SCRIPTS, build};
use serde_json::Value;

use crate::support::{self, workspace};

/// Set, the test fails where it cannot run the submission as an unprivileged user, instead of
/// running it as its own user (CI sets it where it runs as root).
const REQUIRE_RUN_AS: &str = "IPC_LABS_TEST_REQUIRE_RUN_AS";

/// The user the student's code runs as, or why it runs as the test's own user.
fn grade_user(root: &Path) -> Result<String, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("the test is not root".into());
    }
    let nobody = ipc_grader::engine::RunAs::lookup("nobody")?;
    match ipc_grader::engine::compile::cannot_build_as(&nobody, root) {
        Some(why) => Err(format!("nobody cannot build here: {why}")),
        None => Ok("nobody".into()),
    }
}

/// A script of the unpacked autograder, with the fake root and user.
fn script(root: &Path, name: &str, user: &str) -> Command {
    let mut command = Command::new("bash");
    command
        .arg(root.join("source").join(name))
        .env("AUTOGRADER_ROOT", root)
        .env("IPC_LABS_GRADE_USER", user)
        .env_remove("IPC_LABS_WORKSPACE")
        .env_remove("IPC_LABS_PREBUILT")
        // A target directory with the registry crates built (setup.sh installs the grader
        // where run_autograder looks, wherever built).
        .env(
            "CARGO_TARGET_DIR",
            support::template_target("gradescope", &root.join("source").join("template")),
        )
        .env_remove("CARGO_MANIFEST_DIR")
        .current_dir(root);
    command
}

/// Replaces the submission with `files` (path under the submission, content) and grades it.
fn grade(root: &Path, user: &str, files: &[(String, String)]) -> Value {
    let submission = root.join("submission");
    let _ = std::fs::remove_dir_all(&submission);
    std::fs::create_dir_all(&submission).unwrap();
    for (path, content) in files {
        let path = submission.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    let _ = std::fs::remove_file(root.join("results/results.json"));
    let output = script(root, "run_autograder", user).output().unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "run_autograder failed: {log}");
    let text = std::fs::read_to_string(root.join("results/results.json"))
        .unwrap_or_else(|e| panic!("no results.json ({e}): {log}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("results.json is not JSON ({e}): {text}"))
}

fn score(results: &Value) -> (u64, u64) {
    let tests = results["tests"].as_array().expect("tests");
    let max = tests.iter().map(|t| t["max_score"].as_u64().unwrap()).sum();
    (results["score"].as_u64().expect("a score"), max)
}

fn lab_sources(variant: &str) -> Vec<(String, String)> {
    let src = workspace().join(variant).join("01-pipe-echo/src");
    ["lib.rs", "main.rs"]
        .iter()
        .map(|file| {
            (
                format!("ipc-labs-main/labs/01-pipe-echo/src/{file}"),
                std::fs::read_to_string(src.join(file)).unwrap(),
            )
        })
        .collect()
}

#[test]
fn the_autograder_grades_full_empty_hostile_and_skeleton_submissions() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    // As Gradescope's /autograder: every user may enter it, the student's code writes nowhere in it.
    std::fs::set_permissions(root, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let zip_path = root.join("autograder.zip");
    let status = Command::cargo_bin("cargo-grade")
        .unwrap()
        .args(["gradescope", "--labs", "pipe-echo"])
        .args(["--leaderboard", "--leaderboard-samples", "5"])
        .arg(&zip_path)
        .env("IPC_LABS_WORKSPACE", workspace())
        .status()
        .unwrap();
    assert!(status.success());
    zip::ZipArchive::new(std::fs::File::open(&zip_path).unwrap())
        .unwrap()
        .extract(root.join("source"))
        .unwrap();
    let user = match grade_user(root) {
        Ok(user) => user,
        Err(why) => {
            assert!(
                std::env::var_os(REQUIRE_RUN_AS).is_none(),
                "{REQUIRE_RUN_AS} is set, but the submission cannot run as an unprivileged user: {why}"
            );
            eprintln!(
                "NOT TESTED: running the submission as an unprivileged user ({why}); the \
                 submission runs as the test's user, and only the score's source is checked"
            );
            String::new()
        }
    };
    let setup = script(root, "setup.sh", &user).output().unwrap();
    assert!(
        setup.status.success(),
        "setup.sh failed: {}{}",
        String::from_utf8_lossy(&setup.stdout),
        String::from_utf8_lossy(&setup.stderr)
    );

    let full = grade(root, &user, &lab_sources("solutions"));
    let (got, max) = score(&full);
    assert!(
        max > 0 && got == max,
        "the solution scores {got}/{max}: {full:#}"
    );
    assert!(
        full["output"]
            .as_str()
            .unwrap()
            .contains("labs/ found at ipc-labs-main"),
        "{full:#}"
    );
    let names: Vec<&str> = full["leaderboard"]
        .as_array()
        .unwrap_or_else(|| panic!("no leaderboard: {full:#}"))
        .iter()
        .map(|entry| entry["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "pipe-echo round trip p50 (µs)",
            "pipe-echo throughput at 1 MiB (GiB/s)"
        ],
        "{full:#}"
    );

    let empty = grade(root, &user, &[("README.md".into(), "nothing".into())]);
    assert_eq!(score(&empty).0, 0, "{empty:#}");
    assert!(
        empty["output"]
            .as_str()
            .unwrap()
            .contains("could not be taken: the submission holds no lab"),
        "{empty:#}"
    );

    // The solution, whose program first tries to give itself the grade and to change the grader.
    let work = root.join("work");
    let grader_lib = work.join("grader/src/lib.rs");
    let grader_before = std::fs::read(&grader_lib).unwrap();
    let results_dir = root.join("results");
    let mut hostile = lab_sources("solutions");
    let main = &mut hostile[1].1;
    *main = main.replace("fn main() -> ExitCode {", "fn graded_main() -> ExitCode {");
    main.push_str(&format!(
        r##"
fn main() -> ExitCode {{
    let _ = std::fs::write({results:?}, r#"{{"score": 1000, "tests": []}}"#);
    let _ = std::fs::write({planted:?}, "planted");
    let _ = std::fs::OpenOptions::new().append(true).open({grader:?})
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"\ncompile_error!(\"changed\");\n"));
    let _ = std::fs::write({grader_planted:?}, "planted");
    graded_main()
}}
"##,
        results = results_dir.join("results.json"),
        planted = results_dir.join("planted"),
        grader = grader_lib,
        grader_planted = work.join("grader/planted"),
    ));
    let attacked = grade(root, &user, &hostile);
    let (got, max) = score(&attacked);
    assert!(got == max && got < 1000, "{attacked:#}");
    if user.is_empty() {
        eprintln!(
            "NOT TESTED: that the hostile program's writes fail (it ran as the grader's user)"
        );
    } else {
        assert!(!results_dir.join("planted").exists(), "wrote into results/");
        assert!(
            !work.join("grader/planted").exists(),
            "wrote into the grader"
        );
        assert_eq!(
            std::fs::read(&grader_lib).unwrap(),
            grader_before,
            "changed the grader"
        );
    }

    let skeleton = grade(root, &user, &lab_sources("labs"));
    assert_eq!(score(&skeleton).0, 0, "{skeleton:#}");
    assert_eq!(
        skeleton["leaderboard"],
        serde_json::json!([]),
        "{skeleton:#}"
    );
    for test in skeleton["tests"].as_array().unwrap() {
        let output = test["output"].as_str().unwrap();
        let cleanup = test["name"].as_str().unwrap().ends_with("/cleanup");
        assert!(
            cleanup || output.contains("not yet implemented"),
            "{test:#}"
        );
    }
    // A previous grading's changes are gone: the workspace is pristine again.
    assert_eq!(std::fs::read(&grader_lib).unwrap(), grader_before);
    assert!(!work.join("grader/planted").exists());
}

#[test]
fn the_zip_holds_the_scripts_at_its_root_and_a_template_without_solutions() {
    let dir = tempfile::tempdir().unwrap();
    let zip_path = dir.path().join("autograder.zip");
    let labs = build(
        &workspace(),
        &zip_path,
        &["pipe-echo".into()],
        false,
        &LeaderboardArgs::default(),
    )
    .unwrap();
    assert_eq!(labs, ["pipe-echo"]);
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&zip_path).unwrap()).unwrap();
    let names: Vec<String> = zip.file_names().map(String::from).collect();
    for script in ROOT_SCRIPTS {
        let entry = zip.by_name(script).unwrap();
        assert_eq!(entry.unix_mode().unwrap() & 0o777, 0o755, "{script}");
    }
    let mut listed = String::new();
    std::io::Read::read_to_string(&mut zip.by_name("labs").unwrap(), &mut listed).unwrap();
    assert_eq!(listed, "pipe-echo\n");
    let mut options = String::new();
    std::io::Read::read_to_string(&mut zip.by_name("options").unwrap(), &mut options).unwrap();
    assert_eq!(options, "\n", "no leaderboard was asked for");
    for needed in [
        "template/Cargo.toml",
        "template/Cargo.lock",
        "template/grader/Cargo.toml",
        "template/labs/01-pipe-echo/src/lib.rs",
    ] {
        assert!(names.iter().any(|n| n == needed), "{needed} missing");
    }
    for name in &names {
        assert!(
            !name.contains("solutions/") && !name.contains("/.git/") && !name.contains("mutants"),
            "{name} should not be in the zip"
        );
    }
    assert!(!names.iter().any(|n| n.starts_with("template/labs/02-")));
}

#[test]
fn an_existing_zip_is_kept_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let zip_path = dir.path().join("autograder.zip");
    std::fs::write(&zip_path, "mine").unwrap();
    let none = LeaderboardArgs::default();
    let error = build(&workspace(), &zip_path, &["pipe-echo".into()], false, &none).unwrap_err();
    assert!(error.is_usage(), "{error}");
    assert_eq!(std::fs::read_to_string(&zip_path).unwrap(), "mine");
    let error = build(&workspace(), &zip_path, &["nope".into()], true, &none).unwrap_err();
    assert!(matches!(
        error,
        GradescopeError::Export(ExportError::UnknownLab(..))
    ));
    assert_eq!(std::fs::read_to_string(&zip_path).unwrap(), "mine");
    let leaderboard = LeaderboardArgs {
        leaderboard: true,
        leaderboard_samples: 50,
    };
    build(
        &workspace(),
        &zip_path,
        &["pipe-echo".into()],
        true,
        &leaderboard,
    )
    .unwrap();
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&zip_path).unwrap()).unwrap();
    let mut options = String::new();
    std::io::Read::read_to_string(&mut zip.by_name("options").unwrap(), &mut options).unwrap();
    assert_eq!(options, "--leaderboard --leaderboard-samples 50\n");
}
