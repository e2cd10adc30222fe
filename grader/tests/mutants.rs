//! Known-wrong variants of the reference solutions, each a bug a student plausibly writes: the
//! check named must catch it, with a message that names the bug.
//!
//! A mutant is the solution with one piece of text replaced. The test copies the solution's
//! crate (and the driver crate it needs) into a scratch workspace under `target/grade/mutants/`,
//! applies the replacement, builds it, grades the one check, and wants the expected status and
//! words in the message.

use std::path::{Path, PathBuf};

use ipc_grader::engine::compile::{self, Variant};
use ipc_grader::engine::{self, Options, Plan, Status};

struct Mutant {
    lab: &'static str,
    name: &'static str,
    /// What the bug is, in a student's terms.
    bug: &'static str,
    find: &'static str,
    replace: &'static str,
    caught_by: &'static str,
    status: Status,
    /// Words the check's message must contain.
    diagnosis: &'static str,
}

const MUTANTS: &[Mutant] = &[Mutant {
    lab: "pipe-echo",
    name: "write-all-then-read",
    bug: "the parent writes the whole input before it reads any of the echo",
    find: "            let echoed = read_to_end(from_child);\n            let written = writer.join().expect(\"the writer thread panicked\");",
    replace: "            let written = writer.join().expect(\"the writer thread panicked\");\n            let echoed = read_to_end(from_child);",
    caught_by: "echo-16-mib",
    status: Status::TimedOut,
    diagnosis: "the echo child is blocked writing a full pipe while the parent is blocked writing too",
}];

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("creating a scratch directory");
    for entry in std::fs::read_dir(from)
        .expect("reading a source directory")
        .flatten()
    {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" {
            continue;
        }
        if path.is_dir() {
            copy_dir(&path, &to.join(&name));
        } else {
            std::fs::copy(&path, to.join(&name)).expect("copying a source file");
        }
    }
}

/// A workspace holding the mutated solution of `mutant.lab` and the driver crate.
fn scratch_workspace(workspace: &Path, mutant: &Mutant) -> PathBuf {
    let scratch = workspace
        .join("target")
        .join("grade")
        .join("mutants")
        .join(format!("{}-{}", mutant.lab, mutant.name));
    let _ = std::fs::remove_dir_all(&scratch);
    let solutions = workspace.join("solutions");
    let lab_dir = compile::crate_dir(workspace, Variant::Solutions, mutant.lab)
        .expect("the mutant's lab has a solution");
    let lab_name = lab_dir.file_name().expect("a crate directory has a name");
    copy_dir(&lab_dir, &scratch.join("solutions").join(lab_name));
    for file in ["Cargo.toml", "Cargo.lock"] {
        std::fs::copy(solutions.join(file), scratch.join("solutions").join(file))
            .expect("copying the solutions' manifest");
    }
    copy_dir(
        &workspace.join("grader").join("driver"),
        &scratch.join("grader").join("driver"),
    );
    let source = scratch
        .join("solutions")
        .join(lab_name)
        .join("src")
        .join("lib.rs");
    let text = std::fs::read_to_string(&source).expect("reading the solution");
    assert_eq!(
        text.matches(mutant.find).count(),
        1,
        "mutant {}/{}: the text to replace must occur exactly once in the solution",
        mutant.lab,
        mutant.name
    );
    std::fs::write(&source, text.replace(mutant.find, mutant.replace)).expect("writing the mutant");
    scratch
}

#[test]
fn every_mutant_is_caught_by_its_check() {
    let workspace = ipc_grader::workspace_root();
    if !workspace.join("solutions").is_dir() {
        return; // A student's copy has no solutions to mutate.
    }
    let target = workspace
        .join("target")
        .join("grade")
        .join("mutants")
        .join("target");
    let mut escaped = Vec::new();
    for mutant in MUTANTS {
        let lab = ipc_grader::labs::find(mutant.lab).expect("the mutant's lab exists");
        let check = lab
            .checks
            .iter()
            .find(|c| c.name == mutant.caught_by)
            .expect("the mutant names a check of its lab");
        let scratch = scratch_workspace(&workspace, mutant);
        let programs = compile::build_in(&scratch, Variant::Solutions, &[lab.slug], &target);
        let options = Options {
            variant: Variant::Solutions,
            seed: 1,
            jobs: 1,
            log_dir: std::env::temp_dir().join("ipc-labs-mutant-logs"),
        };
        let plan = Plan {
            lab,
            checks: vec![check],
            cleanup: false,
        };
        let report = engine::grade_built(&[plan], &options, &programs, &|_| {});
        let result = &report.labs[0].checks[0];
        let named = result.message.contains(mutant.diagnosis);
        if result.status != mutant.status || !named {
            escaped.push(format!(
                "{}/{} ({}): {} gave {} `{}`; expected {} mentioning `{}`",
                mutant.lab,
                mutant.name,
                mutant.bug,
                mutant.caught_by,
                result.status.as_str(),
                result.message,
                mutant.status.as_str(),
                mutant.diagnosis
            ));
        }
        let _ = std::fs::remove_dir_all(&scratch);
    }
    assert!(
        escaped.is_empty(),
        "mutants not caught as expected:\n{}",
        escaped.join("\n")
    );
}
