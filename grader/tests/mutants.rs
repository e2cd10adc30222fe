//! Known-wrong variants of the reference solutions, each a bug a student plausibly writes: the
//! check named must catch it, with a message that names the bug.
//!
//! A mutant is the solution with one piece of text replaced, stored as a file under
//! `tests/mutants/<lab>/` (adding one touches no list). The test copies the solution's crate
//! (and the driver crate it needs) into the lab's scratch workspace under
//! `target/grade/mutants/`, applies the replacement, builds it, grades the one check, and wants
//! the expected status and words in the message. `IPC_LABS_MUTANTS=<lab>` or `<lab>/<mutant>`
//! runs a subset.

use std::path::{Path, PathBuf};

use ipc_grader::engine::compile::{self, Variant};
use ipc_grader::engine::{self, Options, Plan};

/// One mutant, read from `tests/mutants/<lab>/<name>.mutant`:
///
/// ```text
/// bug: what the student got wrong
/// check: the check that must catch it
/// status: failed | timed_out | crashed | not_implemented
/// diagnosis: words the check's message must contain
/// file: src/lib.rs
/// user: nobody              (optional: run as `nobody`; needs root, skipped otherwise)
/// --- find
/// text of the solution (exactly once)
/// --- replace
/// the wrong text
/// ```
struct Mutant {
    lab: String,
    name: String,
    bug: String,
    check: String,
    status: String,
    diagnosis: String,
    file: String,
    find: String,
    replace: String,
    /// `user: nobody`: the mutant's programs must run as a user of their own (`nobody`): a fork
    /// bomb is held by RLIMIT_NPROC, which root escapes, and what a user of its own leaves
    /// behind is known to be the mutant's. Such mutants need the test to run as root.
    as_nobody: bool,
}

/// The user a mutant's programs run as: `Err` if the mutant needs root and the test is not.
fn run_as(mutant: &Mutant) -> Result<Option<ipc_grader::engine::RunAs>, &'static str> {
    if !mutant.as_nobody {
        return Ok(None);
    }
    if !nix::unistd::geteuid().is_root() {
        return Err("skipped: it runs as nobody, which needs the test to run as root");
    }
    Ok(Some(
        ipc_grader::engine::RunAs::lookup("nobody").expect("the user nobody exists"),
    ))
}

fn parse(lab: &str, name: &str, text: &str) -> Result<Mutant, String> {
    let (header, rest) = text.split_once("--- find\n").ok_or("no `--- find` line")?;
    let (find, replace) = rest
        .split_once("--- replace\n")
        .ok_or("no `--- replace` line")?;
    let field = |key: &str| {
        header
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .map(|v| v.trim().to_string())
            .ok_or(format!("no `{key}:` line"))
    };
    let diagnosis = field("diagnosis")?;
    if diagnosis.is_empty() {
        return Err("an empty `diagnosis:` would accept any message".into());
    }
    Ok(Mutant {
        lab: lab.into(),
        name: name.into(),
        bug: field("bug")?,
        check: field("check")?,
        status: field("status")?,
        diagnosis,
        as_nobody: field("user").is_ok_and(|user| user == "nobody"),
        file: field("file")?,
        find: find.trim_end_matches('\n').into(),
        replace: replace.trim_end_matches('\n').into(),
    })
}

/// Every mutant under `tests/mutants/`, by lab and name.
fn mutants() -> Vec<Mutant> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("mutants");
    let mut found = Vec::new();
    for lab in std::fs::read_dir(&root)
        .expect("tests/mutants exists")
        .flatten()
    {
        let lab_name = lab.file_name().to_string_lossy().into_owned();
        for file in std::fs::read_dir(lab.path())
            .expect("a lab's mutants")
            .flatten()
        {
            let path = file.path();
            let Some(name) = path.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
                continue;
            };
            let text = std::fs::read_to_string(&path).expect("reading a mutant");
            let mutant = parse(&lab_name, &name, &text)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            found.push(mutant);
        }
    }
    found.sort_by(|a, b| (&a.lab, &a.name).cmp(&(&b.lab, &b.name)));
    found
}

/// Copies `from` into `to`, writing only the files whose content differs, so that what did not
/// change keeps its modification time and cargo does not rebuild it.
fn sync_dir(from: &Path, to: &Path) {
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
            sync_dir(&path, &to.join(&name));
        } else {
            let text = std::fs::read(&path).expect("reading a source file");
            write_if_changed(&to.join(&name), &text);
        }
    }
}

fn write_if_changed(path: &Path, content: &[u8]) {
    if std::fs::read(path).ok().as_deref() != Some(content) {
        std::fs::write(path, content).expect("writing a scratch file");
    }
}

/// A workspace holding the mutated solution of `mutant.lab` and the driver crate: one per lab,
/// reused from mutant to mutant, so that only the mutated crate is rebuilt, incrementally.
fn scratch_workspace(workspace: &Path, mutant: &Mutant) -> PathBuf {
    let scratch = workspace
        .join("target")
        .join("grade")
        .join("mutants")
        .join(&mutant.lab);
    let solutions = workspace.join("solutions");
    let lab_dir = compile::crate_dir(workspace, Variant::Solutions, &mutant.lab)
        .expect("the mutant's lab has a solution");
    let lab_name = lab_dir.file_name().expect("a crate directory has a name");
    sync_dir(&lab_dir, &scratch.join("solutions").join(lab_name));
    for file in ["Cargo.toml", "Cargo.lock"] {
        let text = std::fs::read(solutions.join(file)).expect("reading the solutions' manifest");
        write_if_changed(&scratch.join("solutions").join(file), &text);
    }
    sync_dir(
        &workspace.join("grader").join("driver"),
        &scratch.join("grader").join("driver"),
    );
    let original = lab_dir.join(&mutant.file);
    let text = std::fs::read_to_string(&original).expect("reading the solution");
    assert_eq!(
        text.matches(&mutant.find).count(),
        1,
        "mutant {}/{}: the text to replace must occur exactly once in the solution",
        mutant.lab,
        mutant.name
    );
    let source = scratch.join("solutions").join(lab_name).join(&mutant.file);
    write_if_changed(
        &source,
        text.replace(&mutant.find, &mutant.replace).as_bytes(),
    );
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
    let only = std::env::var("IPC_LABS_MUTANTS").ok();
    for mutant in mutants() {
        // IPC_LABS_MUTANTS=pipe-echo (or pipe-echo/write-all-then-read) runs a subset.
        if let Some(only) = &only
            && *only != mutant.lab
            && *only != format!("{}/{}", mutant.lab, mutant.name)
        {
            continue;
        }
        let mutant = &mutant;
        let lab = ipc_grader::labs::find(&mutant.lab).expect("the mutant's lab exists");
        let run_as = match run_as(mutant) {
            Ok(user) => user,
            Err(skipped) => {
                println!("{}/{}: {skipped}", mutant.lab, mutant.name);
                continue;
            }
        };
        // The cleanup check judges what all of the lab's checks left behind.
        let cleanup = mutant.check == engine::CLEANUP_CHECK;
        let checks: Vec<&'static engine::Check> = if cleanup {
            lab.checks.iter().collect()
        } else {
            let check = lab.checks.iter().find(|c| c.name == mutant.check);
            vec![check.expect("the mutant names a check of its lab")]
        };
        let started = std::time::Instant::now();
        let scratch = scratch_workspace(&workspace, mutant);
        let programs = compile::build_in(&scratch, Variant::Solutions, &[lab.slug], &target);
        let built = started.elapsed();
        let options = Options {
            variant: Variant::Solutions,
            seed: 1,
            jobs: 1,
            log_dir: std::env::temp_dir().join("ipc-labs-mutant-logs"),
            run_as,
        };
        let plan = Plan {
            lab,
            checks,
            cleanup,
        };
        let report = engine::grade_built(&[plan], &options, &programs, &|_| {});
        let result = report.labs[0]
            .checks
            .iter()
            .find(|c| c.name == mutant.check)
            .expect("the graded check is in the report");
        let named = result.message.contains(&mutant.diagnosis);
        println!(
            "{}/{}: {} -> {} {} (built in {:.1} s, graded in {:.1} s)",
            mutant.lab,
            mutant.name,
            mutant.check,
            result.status.as_str(),
            if named {
                "(diagnosis named)"
            } else {
                "(diagnosis missing)"
            },
            built.as_secs_f64(),
            (started.elapsed() - built).as_secs_f64()
        );
        println!("    {}", result.message.lines().next().unwrap_or(""));
        if result.status.as_str() != mutant.status || !named {
            escaped.push(format!(
                "{}/{} ({}): {} gave {} `{}`; expected {} mentioning `{}`",
                mutant.lab,
                mutant.name,
                mutant.bug,
                mutant.check,
                result.status.as_str(),
                result.message,
                mutant.status.as_str(),
                mutant.diagnosis
            ));
        }
    }
    assert!(
        escaped.is_empty(),
        "mutants not caught as expected:\n{}",
        escaped.join("\n")
    );
}
