//! `cargo grade`: what students and instructors type.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::engine::{self, CLEANUP_CHECK, Lab, Options, Plan, Progress, Variant};
use crate::report;

/// Grades the IPC labs: runs your code as real processes and checks it from the outside.
///
/// Examples: `cargo grade` grades every lab in labs/; `cargo grade pipe-echo` one lab;
/// `cargo grade pipe-echo/echo-16-mib` one check; `cargo grade --list` lists them;
/// `cargo grade clean` removes IPC objects left by grader runs that crashed.
#[derive(Parser, Debug)]
#[command(
    name = "cargo grade",
    bin_name = "cargo grade",
    version,
    args_conflicts_with_subcommands = true
)]
pub struct Args {
    /// What to do instead of grading.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Labs (`pipe-echo`) or checks (`pipe-echo/echo-16-mib`) to grade; all if none.
    pub selection: Vec<String>,
    /// Grade the reference solutions in solutions/ instead of labs/.
    #[arg(long)]
    pub solutions: bool,
    /// List the labs and their checks with points, and exit.
    #[arg(long)]
    pub list: bool,
    /// Seed for the random inputs (printed with every failure); random if not given.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Output format (see docs/report-format.md).
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// Also write the report in FORMAT to PATH, from the same grading (repeatable), e.g.
    /// `--write junit=junit.xml --write github-summary=$GITHUB_STEP_SUMMARY`.
    #[arg(long = "write", value_name = "FORMAT=PATH")]
    pub write: Vec<report::Destination>,
    /// How many checks run at once (checks that measure time always run alone) [default: one
    /// more than the number of CPUs].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub jobs: Option<u32>,
    /// Where each check's full log is written [default: target/grade/logs].
    #[arg(long)]
    pub log_dir: Option<PathBuf>,
    /// Grade the selected checks N times, with seeds S, S+1, ... (S from --seed, or drawn and
    /// printed), and report each check's pass count: for hunting flaky checks.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub repeat: u32,
    /// Run the graded programs as this unprivileged user (the grader must be root): how to
    /// grade untrusted code; permission, queue and process limits then apply to it.
    #[arg(long, value_name = "USER")]
    pub run_as: Option<String>,
    /// Grade, then grade again whenever a file under the selected labs' src/ is saved; q or
    /// Ctrl-C leaves.
    #[arg(long, conflicts_with_all = ["list", "repeat", "format", "leaderboard"])]
    pub watch: bool,
    #[command(flatten)]
    pub leaderboard: crate::bench::leaderboard::LeaderboardArgs,
}

/// The commands other than grading.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Removes what grader runs that died left behind: IPC objects, processes, directories.
    Clean,
    /// Prints the hint of a check (`cargo grade hint pipe-echo/echo-16-mib`): where to look
    /// when it fails.
    Hint {
        /// The check, as LAB/CHECK.
        check: String,
    },
    /// Measures the labs' programs against raw baselines (round trips, throughput); see
    /// docs/benchmark.md.
    Bench(crate::bench::Args),
    /// Writes a repository for students (new directory, one commit): the labs, the grader, the
    /// handouts and a grading workflow, without the solutions.
    Export(crate::deliver::export::ExportArgs),
    /// Writes the Gradescope autograder zip: setup.sh, run_autograder and the template (the
    /// grader and the skeletons, no solutions).
    Gradescope(crate::deliver::gradescope::GradescopeArgs),
    /// Copies the labs/*/src of a submission (a directory, .zip or .tar.gz) into a workspace's
    /// labs, and nothing else of it.
    Import(crate::deliver::submission::ImportArgs),
    /// Grades every submission in a directory (directories, .zip, .tar.gz), each in a pristine
    /// workspace of its own and, as root, isolated; writes grades.csv, checks.csv and
    /// report.html.
    Batch(crate::deliver::batch::BatchArgs),
    /// Grades one submission of a batch (run by `cargo grade batch`, not by hand).
    #[command(hide = true)]
    BatchChild(crate::deliver::batch::child::ChildArgs),
}

pub use crate::report::Format;

/// A selection that names no known lab or check.
#[derive(Debug, thiserror::Error)]
pub enum SelectionError {
    #[error("unknown lab `{0}`; the labs are: {1}")]
    UnknownLab(String, String),
    #[error("lab `{0}` has no check `{1}`; its checks are: {2}")]
    UnknownCheck(String, String, String),
}

/// Turns `slug` and `slug/check` words into plans, in course order.
pub fn plan(selection: &[String]) -> Result<Vec<Plan>, SelectionError> {
    let labs = crate::labs::all();
    if selection.is_empty() {
        return Ok(labs.into_iter().map(whole_lab).collect());
    }
    let mut plans: Vec<Plan> = Vec::new();
    for word in selection {
        let (slug, check) = match word.split_once('/') {
            Some((slug, check)) => (slug, Some(check)),
            None => (word.as_str(), None),
        };
        let lab = crate::labs::find(slug).ok_or_else(|| {
            let known: Vec<&str> = labs.iter().map(|l| l.slug).collect();
            SelectionError::UnknownLab(slug.into(), known.join(", "))
        })?;
        let wanted = match check {
            None => whole_lab(lab),
            // The cleanup check judges what the lab's other checks left behind.
            Some(CLEANUP_CHECK) if lab.cleanup_points > 0 => whole_lab(lab),
            Some(name) => {
                let found = lab.checks.iter().find(|c| c.name == name).ok_or_else(|| {
                    SelectionError::UnknownCheck(slug.into(), name.into(), check_names(lab))
                })?;
                Plan {
                    lab,
                    checks: vec![found],
                    cleanup: false,
                }
            }
        };
        match plans.iter_mut().find(|p| std::ptr::eq(p.lab, lab)) {
            Some(existing) => {
                for check in wanted.checks {
                    if !existing.checks.iter().any(|c| std::ptr::eq(*c, check)) {
                        existing.checks.push(check);
                    }
                }
                existing.cleanup |= wanted.cleanup;
            }
            None => plans.push(wanted),
        }
    }
    for plan in &mut plans {
        let order =
            |check: &&engine::Check| plan.lab.checks.iter().position(|c| std::ptr::eq(c, *check));
        plan.checks.sort_by_key(order);
    }
    plans.sort_by_key(|p| p.lab.number);
    Ok(plans)
}

fn whole_lab(lab: &'static Lab) -> Plan {
    Plan {
        lab,
        checks: lab.checks.iter().collect(),
        cleanup: lab.cleanup_points > 0,
    }
}

fn check_names(lab: &Lab) -> String {
    let mut names: Vec<&str> = lab.checks.iter().map(|c| c.name).collect();
    if lab.cleanup_points > 0 {
        names.push(CLEANUP_CHECK);
    }
    names.join(", ")
}

/// A seed from the clock and the pid, for runs without `--seed`.
pub(crate) fn fresh_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    (nanos ^ (u64::from(std::process::id()) << 32)) % 1_000_000_000
}

pub fn main() -> ExitCode {
    let args = Args::parse();
    match args.command {
        Some(Command::Clean) => clean(),
        Some(Command::Hint { check }) => match crate::hint::lookup(&check) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(error) => usage_error(&error.to_string()),
        },
        Some(Command::Bench(args)) => crate::bench::main(args),
        Some(Command::Export(export)) => crate::deliver::export::command(export),
        Some(Command::Gradescope(args)) => crate::deliver::gradescope::command(args),
        Some(Command::Import(args)) => crate::deliver::submission::command(args),
        Some(Command::Batch(args)) => crate::deliver::batch::command(args),
        Some(Command::BatchChild(args)) => crate::deliver::batch::child::command(args),
        None => grade(args),
    }
}

fn clean() -> ExitCode {
    let done = engine::ledger::clean();
    for line in &done {
        println!("{line}");
    }
    println!(
        "{} leftover(s) of grader runs that died were cleaned up",
        done.len()
    );
    ExitCode::SUCCESS
}

fn grade(args: Args) -> ExitCode {
    if args.list {
        print!("{}", report::list(&crate::labs::all()));
        return ExitCode::SUCCESS;
    }
    let plans = match plan(&args.selection) {
        Ok(plans) => plans,
        Err(error) => return usage_error(&error.to_string()),
    };
    let run_as = match args
        .run_as
        .as_deref()
        .map(engine::RunAs::lookup)
        .transpose()
    {
        Ok(user) if user.is_some() && !nix::unistd::geteuid().is_root() => {
            return usage_error("--run-as needs root (an unprivileged grader runs as itself)");
        }
        Ok(user) => user,
        Err(error) => return usage_error(&format!("--run-as: {error}")),
    };
    let workspace = match crate::workspace_root() {
        Ok(workspace) => workspace,
        Err(error) => return usage_error(&error.to_string()),
    };
    if let Some(why) = run_as
        .as_ref()
        .and_then(|user| engine::compile::cannot_build_as(user, &workspace))
    {
        return usage_error(&why);
    }
    if args.solutions && !workspace.join("solutions").join("Cargo.toml").is_file() {
        return usage_error(&format!(
            "--solutions: there is no solutions/ in {} (a student's copy has none); `cargo grade` \
             grades your work in labs/",
            workspace.display()
        ));
    }
    let variant = if args.solutions {
        Variant::Solutions
    } else {
        Variant::Labs
    };
    let seed = args.seed.unwrap_or_else(fresh_seed);
    let mut flags = String::new();
    if args.solutions {
        flags.push_str(" --solutions");
    }
    if let Some(user) = &run_as {
        flags.push_str(&format!(" --run-as {}", user.name));
    }
    if args.repeat > 1
        && (!matches!(args.format, Format::Human | Format::Json) || !args.write.is_empty())
    {
        return usage_error(
            "--repeat reports pass counts in the human or json format only, and without --write",
        );
    }
    let formats: Vec<Format> = std::iter::once(args.format)
        .chain(args.write.iter().map(|d| d.format))
        .collect();
    let slugs: Vec<&str> = plans.iter().map(|p| p.lab.slug).collect();
    if let Err(error) = args.leaderboard.validate(&slugs, Some(&formats)) {
        return usage_error(&error.to_string());
    }
    let mut context =
        match report::Context::new(&workspace, variant, &slugs, flags.clone(), &formats) {
            Ok(context) => context,
            Err(error) => return usage_error(&error.to_string()),
        };
    let destinations = match report::open_all(&args.write) {
        Ok(destinations) => destinations,
        Err(error) => return usage_error(&error.to_string()),
    };
    let options = Options {
        variant,
        seed,
        // Most of a check's time is spent waiting (for its programs, for a hold to end), so one
        // check more than there are CPUs keeps them busy.
        jobs: args.jobs.map_or_else(
            || std::thread::available_parallelism().map_or(1, |n| n.get()) + 1,
            |n| n as usize,
        ),
        log_dir: args
            .log_dir
            .unwrap_or_else(|| workspace.join("target").join("grade").join("logs")),
        run_as,
    };
    handle_interruptions();
    if args.watch {
        return crate::watch::run(&workspace, &plans, options, flags);
    }
    if args.repeat > 1 {
        return repeat(&workspace, &plans, options, args.repeat, args.format);
    }
    let human = args.format == Format::Human;
    let printer = report::Printer::new(report::Style::detect(), seed, flags);
    let live = crate::live::Live::for_plans(&plans, human);
    let progress = |event: Progress| match event {
        Progress::Building if human => {
            if engine::compile::prebuilt() {
                eprintln!(
                    "using the programs already built under target/grade/{} ({} is set)",
                    variant.dir(),
                    engine::compile::PREBUILT_ENV
                );
            } else {
                eprintln!(
                    "building {}/ with cargo (the first build takes a few minutes) ...",
                    variant.dir()
                );
            }
        }
        Progress::Compiling(line) if human => {
            if live.is_drawn() {
                live.compiling(line);
            } else {
                eprintln!("  {line}");
            }
        }
        Progress::Started { lab, check } if human => live.started(lab, check),
        Progress::Finished { lab, result } if human => live.finished(&printer.check(lab, result)),
        _ => {}
    };
    let report = engine::grade(&workspace, &plans, &options, &progress);
    live.clear();
    if args.leaderboard.leaderboard && engine::run::interrupted().is_none() {
        if human {
            eprintln!("measuring the labs that pass for the leaderboard ...");
        }
        context.set_leaderboard(crate::bench::leaderboard::measure(
            &workspace,
            &report,
            variant,
            options.run_as.as_ref(),
            args.leaderboard.leaderboard_samples,
        ));
    }
    match args.format {
        Format::Human => print!(
            "{}",
            report::summary(&report, options.seed, &report::Style::detect())
        ),
        format => print!("{}", report::render(format, &report, &context)),
    }
    let mut all_written = true;
    for destination in destinations {
        let text = report::render(destination.format, &report, &context);
        if let Err(error) = destination.write(&text) {
            eprintln!("cargo grade: {error}");
            all_written = false;
        }
    }
    if let Some(signal) = engine::run::interrupted() {
        return ExitCode::from(128 + signal as u8);
    }
    if report.all_passed() && all_written {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

pub(crate) fn usage_error(message: &str) -> ExitCode {
    eprintln!("cargo grade: {message}");
    ExitCode::from(2)
}

/// SIGINT (Ctrl-C) and SIGTERM stop grading: the running checks' processes are killed and
/// their checks clean up after themselves, then what was graded is reported and the grader exits
/// with 128 + the signal's number. A second signal exits at once.
pub fn handle_interruptions() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        return;
    };
    std::thread::spawn(move || {
        for signal in signals.forever() {
            if engine::run::interrupted().is_some() {
                engine::run::interrupt(signal);
                std::process::exit(128 + signal);
            }
            eprintln!(
                "\ncargo grade: {}: stopping the running checks and cleaning up ...",
                engine::process::signal_name(signal)
            );
            engine::run::interrupt(signal);
        }
    });
}

/// `--repeat N`: builds once, grades N times with seeds `seed`, `seed + 1`, ..., and reports
/// each check's pass count; exit status 0 only if every check passed every time.
fn repeat(
    workspace: &std::path::Path,
    plans: &[Plan],
    options: Options,
    times: u32,
    format: Format,
) -> ExitCode {
    let human = format == Format::Human;
    if human {
        eprintln!("building {}/ with cargo ...", options.variant.dir());
    }
    let slugs: Vec<&'static str> = plans.iter().map(|p| p.lab.slug).collect();
    let programs = engine::compile::build(workspace, options.variant, &slugs);
    if human {
        eprintln!("grading {}", workspace.display());
    }
    let mut tallies: Vec<report::Tally> = Vec::new();
    let base = options.seed;
    let mut options = options;
    for round in 0..times {
        options.seed = base + u64::from(round);
        let report = engine::grade_built(plans, &options, &programs, &|_| {});
        if engine::run::interrupted().is_some() {
            break;
        }
        for lab in &report.labs {
            for check in &lab.checks {
                let index = match tallies
                    .iter()
                    .position(|t| t.lab == lab.name && t.name == check.name)
                {
                    Some(index) => index,
                    None => {
                        tallies.push(report::Tally {
                            lab: lab.name.clone(),
                            name: check.name.clone(),
                            passed: 0,
                            runs: 0,
                            failures: Vec::new(),
                        });
                        tallies.len() - 1
                    }
                };
                let tally = &mut tallies[index];
                tally.runs += 1;
                if check.status == engine::Status::Passed {
                    tally.passed += 1;
                } else {
                    tally.failures.push(report::Failure {
                        seed: options.seed,
                        status: check.status.as_str(),
                        message: check.message.lines().next().unwrap_or("").to_string(),
                    });
                }
            }
        }
        if human {
            eprintln!(
                "run {}/{times} (seed {}): {}/{}",
                round + 1,
                options.seed,
                report.score,
                report.max_score
            );
        }
    }
    let clean = tallies.iter().all(|t| t.passed == t.runs);
    if let Some(signal) = engine::run::interrupted() {
        eprintln!(
            "interrupted by {}: the runs that finished are counted",
            engine::process::signal_name(signal)
        );
    }
    match format {
        Format::Json => println!(
            "{}",
            serde_json::json!({ "repeat": times, "seed": base, "checks": tallies })
        ),
        _ => print!("{}", report::repeat_table(&tallies)),
    }
    if let Some(signal) = engine::run::interrupted() {
        return ExitCode::from(128 + signal as u8);
    }
    if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn no_selection_plans_every_lab_whole() {
        let plans = plan(&[]).unwrap();
        assert_eq!(plans.len(), crate::labs::all().len());
        assert!(plans.iter().all(|p| p.checks.len() == p.lab.checks.len()));
    }

    #[test]
    fn checks_of_one_lab_merge_into_one_plan_in_declaration_order() {
        let plans = plan(&words(&["pipe-echo/real-pipes", "pipe-echo/echo-0-bytes"])).unwrap();
        assert_eq!(plans.len(), 1);
        let names: Vec<&str> = plans[0].checks.iter().map(|c| c.name).collect();
        assert_eq!(names, ["echo-0-bytes", "real-pipes"]);
        let again = plan(&words(&["pipe-echo/real-pipes", "pipe-echo"])).unwrap();
        assert_eq!(again[0].checks.len(), again[0].lab.checks.len());
    }

    #[test]
    fn unknown_names_are_typed_errors() {
        let lab = plan(&words(&["nope"])).err().unwrap();
        assert!(matches!(lab, SelectionError::UnknownLab(ref name, _) if name == "nope"));
        let check = plan(&words(&["pipe-echo/nope"])).err().unwrap();
        assert!(matches!(check, SelectionError::UnknownCheck(_, ref name, _) if name == "nope"));
    }
}
