//! Every check of every lab, as `cargo test` tests: the same declarations `cargo grade` runs.
//!
//! In this repository (where `solutions/` exists) each check must pass on the reference
//! solution and be `not_implemented` on the skeleton as shipped, and the skeletons must be what
//! `make-skeletons` generates. In a student's copy (no `solutions/`) each check must pass on
//! `labs/`. After all of it, no IPC object a check was given and no process may be left.

use std::process::ExitCode;
use std::sync::OnceLock;

use ipc_grader::engine::compile::{self, Programs, Variant};
use ipc_grader::engine::{self, Check, Lab, Options, Plan, Status, audit, ledger};
use libtest_mimic::{Arguments, Failed, Trial};

static SOLUTIONS: OnceLock<Programs> = OnceLock::new();
static LABS: OnceLock<Programs> = OnceLock::new();

fn programs(variant: Variant) -> &'static Programs {
    let cell = match variant {
        Variant::Labs => &LABS,
        Variant::Solutions => &SOLUTIONS,
    };
    cell.get_or_init(|| {
        let slugs: Vec<&'static str> = ipc_grader::labs::all().iter().map(|l| l.slug).collect();
        compile::build(
            &ipc_grader::workspace_root().expect("the tests run in an ipc-labs workspace"),
            variant,
            &slugs,
        )
    })
}

/// A seed that changes from run to run, printed with every failure; `IPC_LABS_SEED` fixes it.
fn seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| {
        std::env::var("IPC_LABS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64 % 1_000_000_000)
                    .unwrap_or(1)
            })
    })
}

/// As root, the programs run as `nobody`, as `cargo grade batch` and the Gradescope autograder
/// run them: the checks running side by side then have programs of one user, and must still
/// tell their objects and files apart. Not root, they run as the test's user.
fn run_as() -> Option<engine::RunAs> {
    static USER: OnceLock<Option<engine::RunAs>> = OnceLock::new();
    USER.get_or_init(|| {
        if !nix::unistd::geteuid().is_root() {
            return None;
        }
        let nobody = engine::RunAs::lookup("nobody").expect("root's machine has the user nobody");
        eprintln!("root: the programs run as nobody (--run-as nobody)");
        Some(nobody)
    })
    .clone()
}

/// Grades one check of `lab` on `variant` and wants `expected` from it and, for labs with a
/// cleanup check, `cleanup` from that.
fn expect(
    lab: &'static Lab,
    check: &'static Check,
    variant: Variant,
    expected: Status,
    cleanup: Status,
) -> Result<(), Failed> {
    let log_dir = log_dir();
    let options = Options {
        variant,
        seed: seed(),
        jobs: 1,
        log_dir,
        run_as: run_as(),
    };
    let plan = Plan {
        lab,
        checks: vec![check],
        cleanup: lab.cleanup_points > 0,
    };
    let report = engine::grade_built(&[plan], &options, programs(variant), &|_| {});
    let results = &report.labs[0].checks;
    let mut problems = Vec::new();
    let graded = &results[0];
    if graded.status != expected {
        problems.push(format!(
            "{}/{} on {}: expected {}, got {}: {}",
            lab.slug,
            check.name,
            variant.dir(),
            expected.as_str(),
            graded.status.as_str(),
            graded.message
        ));
    }
    if let Some(cleanup_result) = results.get(1)
        && cleanup_result.status != cleanup
    {
        problems.push(format!(
            "{}/cleanup after {}: expected {}, got {}: {}",
            lab.slug,
            check.name,
            cleanup.as_str(),
            cleanup_result.status.as_str(),
            cleanup_result.message
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        let log = graded
            .log
            .as_ref()
            .map(|p| format!("\nlog: {}", p.display()))
            .unwrap_or_default();
        Err(format!("{} (seed {}){log}", problems.join("\n"), seed()).into())
    }
}

fn trials() -> Vec<Trial> {
    let workspace = ipc_grader::workspace_root().expect("the tests run in an ipc-labs workspace");
    let repository = workspace.join("solutions").join("Cargo.toml").is_file();
    let mut trials = Vec::new();
    if repository {
        trials.push(Trial::test(
            "skeletons_are_generated_from_solutions",
            move || {
                let stale = ipc_grader::skeleton::stale_skeletons(&workspace)
                    .map_err(|e| Failed::from(e.to_string()))?;
                if stale.is_empty() {
                    Ok(())
                } else {
                    Err(format!(
                        "stale skeletons {stale:?}: run `cargo run -p ipc-grader --bin \
                         make-skeletons`, which overwrites them with what solutions/ determines"
                    )
                    .into())
                }
            },
        ));
    }
    for lab in ipc_grader::labs::all() {
        for check in lab.checks {
            let name =
                |variant: Variant| format!("{}::{}::{}", variant.dir(), lab.slug, check.name);
            if repository {
                trials.push(Trial::test(name(Variant::Solutions), move || {
                    expect(
                        lab,
                        check,
                        Variant::Solutions,
                        Status::Passed,
                        Status::Passed,
                    )
                }));
                trials.push(Trial::test(name(Variant::Labs), move || {
                    let todo = Status::NotImplemented;
                    expect(lab, check, Variant::Labs, todo, todo)
                }));
            } else {
                trials.push(Trial::test(name(Variant::Labs), move || {
                    expect(lab, check, Variant::Labs, Status::Passed, Status::Passed)
                }));
            }
        }
    }
    trials
}

/// This harness's IPC objects (named after its pid, whatever other grader runs the machine
/// has) and the processes it started: none may be left.
fn leftovers() -> Vec<String> {
    let ours = format!("{}{:x}-", ledger::PREFIX, std::process::id());
    let mut left: Vec<String> = audit::snapshot()
        .into_iter()
        .filter(|o| o.name().is_some_and(|n| n.starts_with(&ours)))
        .map(|o| o.to_string())
        .collect();
    let me = nix::unistd::getpid();
    for pid in engine::inspect::children(me) {
        left.push(format!("process {pid} (a child of the test harness)"));
    }
    left
}

fn main() -> ExitCode {
    let arguments = Arguments::from_args();
    let conclusion = libtest_mimic::run(&arguments, trials());
    let left = leftovers();
    if !left.is_empty() {
        eprintln!("left behind after the checks: {}", left.join(", "));
        return ExitCode::FAILURE;
    }
    if conclusion.has_failed() {
        eprintln!(
            "seed of this run: {} (IPC_LABS_SEED={} reproduces it)",
            seed(),
            seed()
        );
    }
    conclusion.exit_code()
}

/// This user's own directory for the logs of the checks graded here (mode 700: another user's
/// logs must not be in the way, nor readable).
fn log_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ipc-labs-test-logs-{}", nix::unistd::getuid()));
    ipc_grader::engine::ledger::private_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot make the log directory {}: {e}", dir.display()));
    dir
}
