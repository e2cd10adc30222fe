//! Known-wrong variants of the reference solutions, each a bug a student plausibly writes: the
//! check named must catch it, with a message that names the bug. Each mutant is a test of its
//! own (`mutants::<lab>::<name>`), so that progress and failures show one by one.
//!
//! A mutant is the solution with pieces of text replaced, stored as a file under
//! `tests/mutants/<lab>/` (adding one touches no list). The test copies the solution's crate
//! (and the driver crate it needs) into the lab's scratch workspace under
//! `target/grade/mutants/`, applies the replacements, builds it, grades the one check, and wants
//! the expected status and words in the message. Each lab has two such workspaces, reused from
//! mutant to mutant, so at most two of a lab's mutants run at a time; the labs are taken in turn
//! so that the threads rarely wait for the same lab, and a lab's mutants in the order of the
//! place they change, so that a build recompiles little. Grading is mostly waiting (for programs,
//! for timeouts), so the harness runs four at a time unless `--test-threads` says otherwise. Pass a filter to run a
//! subset: `cargo test -p ipc-grader --test mutants -- pipe-echo`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use ipc_grader::engine::compile::{self, Variant};
use ipc_grader::engine::{self, Options, Plan};
use libtest_mimic::{Arguments, Failed, Trial};

mod support;

/// One mutant, read from `tests/mutants/<lab>/<name>.mutant`:
///
/// ```text
/// bug: what the student got wrong
/// check: the check that must catch it
/// status: failed | timed_out | crashed | not_implemented
///                            (or `passed`, with `kind: correct`: a correct design the check
///                            once failed, which it must accept, its message naming the pass)
/// diagnosis: words the check's message must contain
/// file: src/lib.rs
/// user: nobody              (optional: run as `nobody`; needs root, ignored otherwise)
/// needs: mqueue-mount        (optional: the bug shows only where the mqueue file system is
///                            mounted, as systemd does at /dev/mqueue; ignored otherwise)
/// needs: root                (optional: the bug shows only where the grader is root, which
///                            may raise a limit in a namespace; ignored otherwise)
/// --- find
/// text of the solution (exactly once)
/// --- replace
/// the wrong text
/// ```
///
/// Several `--- find` / `--- replace` pairs may follow one another; they are applied in order.
/// Other header lines (`kind:`, `origin:`, ...) are kept for readers and ignored here.
struct Mutant {
    lab: String,
    name: String,
    bug: String,
    check: String,
    status: String,
    diagnosis: String,
    file: String,
    edits: Vec<(String, String)>,
    /// `user: nobody`: the mutant's programs must run as a user of their own (`nobody`): a fork
    /// bomb is held by RLIMIT_NPROC, which root escapes, and what a user of its own leaves
    /// behind is known to be the mutant's. Such mutants need the test to run as root.
    as_nobody: bool,
    /// `needs: mqueue-mount`: the mutant behaves as the solution where no mqueue file system is
    /// mounted (it looks for one), so there it has no bug to catch.
    needs_mqueue_mount: bool,
    /// `needs: root`: the check reaches the bug only as root.
    needs_root: bool,
}

fn parse(lab: &str, name: &str, text: &str) -> Result<Mutant, String> {
    let (header, rest) = text.split_once("--- find\n").ok_or("no `--- find` line")?;
    let mut edits = Vec::new();
    for block in rest.split("\n--- find\n") {
        let (find, replace) = block
            .split_once("--- replace\n")
            .ok_or("a `--- find` without its `--- replace`")?;
        let find = find.trim_end_matches('\n');
        if find.is_empty() {
            return Err("an empty `--- find` text".into());
        }
        edits.push((find.into(), replace.trim_end_matches('\n').into()));
    }
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
    let (needs_mqueue_mount, needs_root) = match field("needs") {
        Err(_) => (false, false),
        Ok(needs) if needs == "mqueue-mount" => (true, false),
        Ok(needs) if needs == "root" => (false, true),
        Ok(other) => {
            return Err(format!(
                "`needs: {other}`: only `mqueue-mount` and `root` are known"
            ));
        }
    };
    Ok(Mutant {
        lab: lab.into(),
        name: name.into(),
        bug: field("bug")?,
        check: field("check")?,
        status: field("status")?,
        diagnosis,
        as_nobody: field("user").is_ok_and(|user| user == "nobody"),
        needs_mqueue_mount,
        needs_root,
        file: field("file")?,
        edits,
    })
}

/// Every mutant under `tests/mutants/`, by lab and name.
fn mutants() -> Vec<Mutant> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
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
            if path.extension().is_none_or(|e| e != "mutant") {
                continue;
            }
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

/// The solution's text with the mutant's edits applied, or why they do not apply.
fn mutated(mutant: &Mutant, text: &str) -> Result<String, String> {
    let mut text = text.to_string();
    for (index, (find, replace)) in mutant.edits.iter().enumerate() {
        let count = text.matches(find.as_str()).count();
        if count != 1 {
            return Err(format!(
                "edit {} of {}/{}: the text to replace occurs {count} times in the solution; it \
                 must occur exactly once",
                index + 1,
                mutant.lab,
                mutant.name
            ));
        }
        text = text.replacen(find.as_str(), replace, 1);
    }
    Ok(text)
}

/// A workspace holding the mutated solution of `mutant.lab` and the driver crate, with its own
/// target directory: slot `slot` of the lab's, reused from mutant to mutant, so that only the
/// mutated crate is rebuilt, incrementally.
fn scratch_workspace(workspace: &Path, mutant: &Mutant, slot: usize) -> Result<PathBuf, String> {
    let scratch = workspace
        .join("target")
        .join("grade")
        .join("mutants")
        .join(&mutant.lab)
        .join(format!("slot-{slot}"));
    let solutions = workspace.join("solutions");
    let lab_dir = compile::crate_dir(workspace, Variant::Solutions, &mutant.lab)
        .ok_or("the mutant's lab has no solution")?;
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
    let text = std::fs::read_to_string(lab_dir.join(&mutant.file))
        .map_err(|e| format!("reading {}: {e}", mutant.file))?;
    let source = scratch.join("solutions").join(lab_name).join(&mutant.file);
    write_if_changed(&source, mutated(mutant, &text)?.as_bytes());
    Ok(scratch)
}

/// Builds and grades one mutant; `Err` unless its check caught it as expected.
fn grade(workspace: &Path, mutant: &Mutant, slot: usize) -> Result<(), Failed> {
    let lab = ipc_grader::labs::find(&mutant.lab).ok_or("the mutant's lab does not exist")?;
    let run_as = if mutant.as_nobody {
        Some(ipc_grader::engine::RunAs::lookup("nobody").map_err(Failed::from)?)
    } else {
        None
    };
    // The cleanup check judges what all of the lab's checks left behind.
    let cleanup = mutant.check == engine::CLEANUP_CHECK;
    let checks: Vec<&'static engine::Check> = if cleanup {
        lab.checks.iter().collect()
    } else {
        let check = lab.checks.iter().find(|c| c.name == mutant.check);
        vec![check.ok_or_else(|| format!("lab {} has no check {}", lab.slug, mutant.check))?]
    };
    let started = std::time::Instant::now();
    let scratch = scratch_workspace(workspace, mutant, slot)?;
    // A target directory per lab: the labs' builds run side by side.
    let target = scratch.join("target");
    // The solutions' build (the checks harness made it) has the registry crates of every lab's
    // feature sets: the first mutant of each lab then compiles only the lab.
    support::copy_registry_builds(
        &workspace
            .join("target")
            .join("grade")
            .join("solutions")
            .join(compile::PROFILE),
        &target.join(compile::PROFILE),
    );
    let programs = compile::build_in(
        &scratch,
        Variant::Solutions,
        &[lab.slug],
        &target,
        None,
        &|_| {},
    );
    let built = started.elapsed();
    let options = Options {
        variant: Variant::Solutions,
        seed: 1,
        jobs: 1,
        log_dir: log_dir(),
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
        .ok_or("the graded check is not in the report")?;
    let named = result.message.contains(&mutant.diagnosis);
    let graded = started.elapsed() - built;
    TIMES.lock().unwrap_or_else(|e| e.into_inner()).push(Timed {
        mutant: format!("{}::{}", mutant.lab, mutant.name),
        check: format!("{}/{}", mutant.lab, mutant.check),
        built,
        graded,
    });
    let summary = format!(
        "{} -> {} (built in {:.1} s, graded in {:.1} s): {}",
        mutant.check,
        result.status.as_str(),
        built.as_secs_f64(),
        graded.as_secs_f64(),
        result.message.lines().next().unwrap_or("")
    );
    if result.status.as_str() == mutant.status && named {
        return Ok(());
    }
    Err(format!(
        "not caught as expected ({}): expected {} mentioning `{}`\n{summary}\nwhole message: {}",
        mutant.bug, mutant.status, mutant.diagnosis, result.message
    )
    .into())
}

fn trials() -> Vec<Trial> {
    let workspace = ipc_grader::workspace_root().expect("the tests run in an ipc-labs workspace");
    if !workspace.join("solutions").is_dir() {
        return Vec::new(); // A student's copy has no solutions to mutate.
    }
    let root = nix::unistd::geteuid().is_root();
    let mqueue_mounted = std::fs::read_to_string("/proc/self/mounts").is_ok_and(|mounts| {
        mounts
            .lines()
            .any(|line| line.split(' ').nth(2) == Some("mqueue"))
    });
    let mut slots: BTreeMap<String, Arc<Slots>> = BTreeMap::new();
    let mut trials = Vec::new();
    for mutant in in_turn_by_lab(by_place(&workspace, mutants())) {
        let name = format!("{}::{}", mutant.lab, mutant.name);
        if mutant.needs_root && !root {
            eprintln!("{name}: ignored: its bug shows only where the grader is root");
            trials.push(Trial::test(name, || Ok(())).with_ignored_flag(true));
            continue;
        }
        if mutant.as_nobody && !root {
            eprintln!("{name}: ignored: it runs as nobody, which needs the test to run as root");
            trials.push(Trial::test(name, || Ok(())).with_ignored_flag(true));
            continue;
        }
        if mutant.needs_mqueue_mount && !mqueue_mounted {
            eprintln!(
                "{name}: ignored: its bug shows only where the mqueue file system is mounted"
            );
            trials.push(Trial::test(name, || Ok(())).with_ignored_flag(true));
            continue;
        }
        let lab_slots = slots.entry(mutant.lab.clone()).or_default().clone();
        let workspace = workspace.clone();
        trials.push(Trial::test(name, move || {
            let slot = lab_slots.take();
            grade(&workspace, &mutant, slot.index)
        }));
    }
    trials
}

/// How many scratch workspaces each lab has. With one, a thread whose next mutant belongs to a
/// lab another thread is building or grading sits idle; two leave little of that wait.
const SLOTS_PER_LAB: usize = 2;

/// The free scratch workspaces of one lab.
struct Slots {
    free: Mutex<Vec<usize>>,
    returned: Condvar,
}

impl Default for Slots {
    fn default() -> Slots {
        // Slot 0 is taken first, so that a second workspace is built only when two mutants of
        // the lab are due at once.
        Slots {
            free: Mutex::new((0..SLOTS_PER_LAB).rev().collect()),
            returned: Condvar::new(),
        }
    }
}

impl Slots {
    /// A free slot, waiting for one if both are in use; it is free again when dropped.
    fn take(&self) -> Slot<'_> {
        let mut free = self.lock();
        loop {
            if let Some(index) = free.pop() {
                return Slot { slots: self, index };
            }
            free = self.returned.wait(free).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<usize>> {
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One lab's scratch workspace, in use by one mutant.
struct Slot<'a> {
    slots: &'a Slots,
    index: usize,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut free = self.slots.lock();
        free.push(self.index);
        // Keep the lowest index on top: it has the warmest build.
        free.sort_unstable_by(|a, b| b.cmp(a));
        self.slots.returned.notify_one();
    }
}

/// The mutants of each lab in the order of the place they change in the solution (its file,
/// then where its last edit is): a slot's next build then mostly recompiles the function its
/// previous one changed, not two functions apart.
fn by_place(workspace: &Path, mut mutants: Vec<Mutant>) -> Vec<Mutant> {
    let mut texts: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut place = |mutant: &Mutant| {
        let text = texts
            .entry((mutant.lab.clone(), mutant.file.clone()))
            .or_insert_with(|| {
                compile::crate_dir(workspace, Variant::Solutions, &mutant.lab)
                    .and_then(|dir| std::fs::read_to_string(dir.join(&mutant.file)).ok())
                    .unwrap_or_default()
            });
        // The last edit: a first one is often an import at the top.
        let places = mutant
            .edits
            .iter()
            .filter_map(|(find, _)| text.find(find.as_str()));
        places.max().unwrap_or(usize::MAX)
    };
    let mut keyed: Vec<((String, String, usize), Mutant)> = mutants
        .drain(..)
        .map(|m| ((m.lab.clone(), m.file.clone(), place(&m)), m))
        .collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    keyed.into_iter().map(|(_, m)| m).collect()
}

/// The mutants reordered so that consecutive ones belong to different labs: the first of each
/// lab, then the second of each, and so on.
fn in_turn_by_lab(mutants: Vec<Mutant>) -> Vec<Mutant> {
    let mut by_lab: BTreeMap<String, std::collections::VecDeque<Mutant>> = BTreeMap::new();
    for mutant in mutants {
        by_lab
            .entry(mutant.lab.clone())
            .or_default()
            .push_back(mutant);
    }
    let mut in_turn = Vec::new();
    while !by_lab.is_empty() {
        by_lab.retain(|_, queue| {
            in_turn.extend(queue.pop_front());
            !queue.is_empty()
        });
    }
    in_turn
}

/// One mutant's build and grading times.
struct Timed {
    /// `lab::mutant`.
    mutant: String,
    /// `lab/check`.
    check: String,
    built: Duration,
    graded: Duration,
}

/// Each mutant's times, for the summary that shows where the suite's time goes.
static TIMES: Mutex<Vec<Timed>> = Mutex::new(Vec::new());

fn main() -> ExitCode {
    let mut arguments = Arguments::from_args();
    if arguments.test_threads.is_none() {
        arguments.test_threads = Some(4);
    }
    let conclusion = libtest_mimic::run(&arguments, trials());
    print_times();
    conclusion.exit_code()
}

/// The total build and grading times, by lab and by check, and the slowest mutants: the suite is
/// the longest part of the test command, and this says what makes it so.
fn print_times() {
    let mut times = TIMES.lock().unwrap_or_else(|e| e.into_inner());
    if times.is_empty() {
        return;
    }
    let seconds = |pick: fn(&Timed) -> Duration| -> f64 {
        times.iter().map(pick).sum::<Duration>().as_secs_f64()
    };
    println!(
        "{} mutants graded: {:.0} s building, {:.0} s grading (summed over the threads)",
        times.len(),
        seconds(|t| t.built),
        seconds(|t| t.graded)
    );
    // A lab's mutants run at most two at a time: half its sum is a floor of the suite's time.
    let mut by_lab: BTreeMap<&str, (Duration, Duration)> = BTreeMap::new();
    for timed in times.iter() {
        let lab = timed.check.split('/').next().unwrap_or(&timed.check);
        let sums = by_lab.entry(lab).or_default();
        sums.0 += timed.built;
        sums.1 += timed.graded;
    }
    println!("by lab (its mutants run at most {SLOTS_PER_LAB} at a time):");
    for (lab, (built, graded)) in &by_lab {
        println!(
            "  {lab}: {:.0} s building, {:.0} s grading",
            built.as_secs_f64(),
            graded.as_secs_f64()
        );
    }
    drop(by_lab);
    let mut by_check: BTreeMap<&str, (usize, Duration)> = BTreeMap::new();
    for timed in times.iter() {
        let sums = by_check.entry(&timed.check).or_default();
        sums.0 += 1;
        sums.1 += timed.graded;
    }
    let mut by_check: Vec<(&str, (usize, Duration))> = by_check.into_iter().collect();
    by_check.sort_by_key(|(_, (_, graded))| std::cmp::Reverse(*graded));
    println!("the checks whose mutants took longest to grade, all together:");
    for (check, (count, graded)) in by_check.iter().take(10) {
        println!(
            "  {check}: {count} mutants, {:.0} s grading",
            graded.as_secs_f64()
        );
    }
    drop(by_check);
    times.sort_by_key(|t| std::cmp::Reverse(t.built + t.graded));
    println!("the slowest:");
    for timed in times.iter().take(10) {
        println!(
            "  {}: built in {:.1} s, graded in {:.1} s",
            timed.mutant,
            timed.built.as_secs_f64(),
            timed.graded.as_secs_f64()
        );
    }
}

/// This user's own directory for the logs of the checks graded here (mode 700: another user's
/// logs must not be in the way, nor readable).
fn log_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ipc-labs-test-logs-{}", nix::unistd::getuid()));
    ipc_grader::engine::ledger::private_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot make the log directory {}: {e}", dir.display()));
    dir
}
