//! `cargo grade bench`: copy versus map, measured on the labs' own programs. Each lab program
//! has a `bench` mode (in its `main.rs`) that times its own IPC code; baselines do the same
//! with the raw system calls; every lab figure is reported with its ratio to its baseline.

pub mod baselines;
pub mod chart;
pub mod driver;
pub mod figures;
pub mod leaderboard;
pub mod markdown;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// What `cargo grade bench` prints on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchFormat {
    /// A table of figures, each with its baseline and ratio.
    Human,
    /// One JSON document (every figure with its unit, baseline and ratio).
    Json,
}

use crate::engine::{self, Check, Lab, Options, Plan, RunAs, Status, Variant};
use baselines::Baseline;

/// Measures each lab's program (round trips of 64-byte messages, throughput from 64 B up) and
/// baselines written with the raw system calls, and prints each figure with its ratio to its
/// baseline.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Labs to measure (`pipe-echo`, `socket-reqrep`, ...); all that have a benchmark if none.
    pub labs: Vec<String>,
    /// Measure the reference solutions in solutions/ instead of labs/.
    #[arg(long)]
    pub solutions: bool,
    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = BenchFormat::Human)]
    pub format: BenchFormat,
    /// Write bench.json, throughput.svg (the chart) and bench.md (the tables) into this
    /// directory.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Measure nothing: read the report FILE (a bench.json) and print it, or with --out write
    /// its chart and tables again.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["labs", "solutions", "samples", "warmup", "max_size", "budget", "timeout"]
    )]
    pub from: Option<PathBuf>,
    /// Timed rounds per message size (fewer for large sizes: see --budget).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(3..))]
    pub samples: u64,
    /// Untimed rounds before the timed ones, per size.
    #[arg(long, default_value_t = 200)]
    pub warmup: u64,
    /// The largest message size for throughput, in bytes (suffixes K, M: KiB, MiB).
    #[arg(long, default_value = "64M", value_parser = parse_size)]
    pub max_size: usize,
    /// At most this many bytes are timed per size (suffixes K, M: KiB, MiB).
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    pub budget: usize,
    /// A measurement that takes longer than this many seconds is stopped and reported.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
    /// Run as a baseline's program (the grader starts itself so).
    #[arg(long, value_enum, hide = true)]
    pub baseline: Option<Baseline>,
}

/// A size with an optional K or M suffix (KiB, MiB), at least 64 bytes.
fn parse_size(text: &str) -> Result<usize, String> {
    let (digits, unit) = match text.strip_suffix(['K', 'k']) {
        Some(digits) => (digits, 1 << 10),
        None => match text.strip_suffix(['M', 'm']) {
            Some(digits) => (digits, 1 << 20),
            None => (text, 1),
        },
    };
    let size = digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| format!("`{text}` is not a size (bytes, or a number with K or M)"))?;
    if size < LATENCY_SIZE {
        return Err(format!(
            "{size} bytes is below the smallest message ({LATENCY_SIZE} B)"
        ));
    }
    Ok(size)
}

/// The size of the messages whose round trips are timed.
pub const LATENCY_SIZE: usize = 64;

/// What is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Metric {
    /// Round trips of [`LATENCY_SIZE`]-byte messages.
    RoundTrip,
    /// Messages of every size, one way (or echoed: see the measure), until acknowledged.
    Throughput,
}

/// Whose program is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// A lab's program, by slug.
    Lab(&'static str),
    /// The grader's own, as a baseline.
    Baseline(Baseline),
}

/// One measurement of one program.
#[derive(Debug)]
pub struct Measure {
    /// How reports name it: `socket-reqrep (tcp)`, `raw pipe`, ...
    pub name: &'static str,
    pub program: Program,
    /// The program's `bench WHAT`.
    pub what: &'static str,
    pub metric: Metric,
    /// The baselines its figures are divided by (names of baseline measures).
    pub baselines: &'static [&'static str],
}

const fn lab(
    name: &'static str,
    slug: &'static str,
    what: &'static str,
    metric: Metric,
    baselines: &'static [&'static str],
) -> Measure {
    Measure {
        name,
        program: Program::Lab(slug),
        what,
        metric,
        baselines,
    }
}

const fn baseline(name: &'static str, kind: Baseline, metric: Metric) -> Measure {
    Measure {
        name,
        program: Program::Baseline(kind),
        what: "",
        metric,
        baselines: &[],
    }
}

use Metric::{RoundTrip, Throughput};

/// Every measurement, baselines first.
pub static MEASURES: &[Measure] = &[
    baseline("raw pipe", Baseline::Pipe, RoundTrip),
    baseline("raw unix socket", Baseline::Unix, RoundTrip),
    baseline("raw tcp", Baseline::Tcp, RoundTrip),
    baseline("raw mqueue", Baseline::Mqueue, RoundTrip),
    baseline("raw semaphore", Baseline::Semaphore, RoundTrip),
    baseline("raw semaphore timed", Baseline::SemaphoreTimed, RoundTrip),
    baseline("raw mutex", Baseline::Mutex, RoundTrip),
    baseline("spinning flag", Baseline::Spin, RoundTrip),
    baseline("raw pipe", Baseline::Pipe, Throughput),
    baseline("raw unix socket", Baseline::Unix, Throughput),
    baseline("raw tcp", Baseline::Tcp, Throughput),
    baseline("memcpy", Baseline::Memcpy, Throughput),
    lab("pipe-echo", "pipe-echo", "echo", RoundTrip, &["raw pipe"]),
    lab(
        "mqueue-priority",
        "mqueue-priority",
        "jobs",
        RoundTrip,
        &["raw mqueue"],
    ),
    lab(
        "socket-reqrep (unix)",
        "socket-reqrep",
        "unix",
        RoundTrip,
        &["raw unix socket"],
    ),
    lab(
        "socket-reqrep (tcp)",
        "socket-reqrep",
        "tcp",
        RoundTrip,
        &["raw tcp"],
    ),
    lab(
        "shared-mutex",
        "shared-mutex",
        "handoff",
        RoundTrip,
        &["raw mutex"],
    ),
    lab(
        "semaphore-handoff",
        "semaphore-handoff",
        "semaphores",
        RoundTrip,
        &["raw semaphore"],
    ),
    lab("pipe-echo", "pipe-echo", "echo", Throughput, &["raw pipe"]),
    lab(
        "socket-reqrep (unix)",
        "socket-reqrep",
        "unix",
        Throughput,
        &["raw unix socket"],
    ),
    lab(
        "socket-reqrep (tcp)",
        "socket-reqrep",
        "tcp",
        Throughput,
        &["raw tcp"],
    ),
    lab(
        "sysv-shm",
        "sysv-shm",
        "publish",
        Throughput,
        &["raw pipe", "memcpy"],
    ),
    lab(
        "posix-shm",
        "posix-shm",
        "table",
        Throughput,
        &["raw pipe", "memcpy"],
    ),
    lab(
        "chunked-transfer",
        "chunked-transfer",
        "throughput",
        Throughput,
        &["raw pipe", "memcpy"],
    ),
];

/// The lab figures of shared memory: on the chart, each is marked where it overtakes the pipe.
pub const SHARED_MEMORY: &[&str] = &["sysv-shm", "posix-shm", "chunked-transfer"];

/// Where the two sides of a measurement run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// `same-cpu` or `cross-cpu`.
    pub name: &'static str,
    /// The CPU of the timing side, and of its peer.
    pub cpus: [usize; 2],
}

/// How much to measure.
#[derive(Debug, Clone)]
pub struct Settings {
    pub samples: u64,
    pub warmup: u64,
    pub budget: u64,
    pub max_size: usize,
    pub timeout: Duration,
}

impl Settings {
    /// The message sizes of `metric`: 64 B for round trips; powers of 4 from 64 B up to the
    /// largest for throughput.
    pub fn sizes(&self, metric: Metric) -> Vec<usize> {
        match metric {
            Metric::RoundTrip => vec![LATENCY_SIZE],
            Metric::Throughput => std::iter::successors(Some(LATENCY_SIZE), |s| s.checked_mul(4))
                .take_while(|&s| s <= self.max_size)
                .collect(),
        }
    }
}

/// Bad input to `cargo grade bench`.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("unknown lab `{0}`; the labs are: {1}")]
    UnknownLab(String, String),
    #[error("lab `{0}` has no benchmark; the labs measured are: {1}")]
    NotMeasured(String, String),
    #[error("--out {0}: {1}")]
    Out(PathBuf, std::io::Error),
    #[error("--from {0}: {1}")]
    From(PathBuf, String),
    #[error("no CPU to run on: {0}")]
    Affinity(nix::Error),
}

/// The slugs of the labs that have a benchmark, in course order (those the grader does not
/// know last).
pub fn measured_labs() -> Vec<&'static str> {
    let mut slugs: Vec<&'static str> = Vec::new();
    for measure in MEASURES {
        if let Program::Lab(slug) = measure.program
            && !slugs.contains(&slug)
        {
            slugs.push(slug);
        }
    }
    slugs.sort_by_key(|slug| crate::labs::find(slug).map_or(u8::MAX, |lab| lab.number));
    slugs
}

/// The measures of the selected labs (all if none), after every baseline.
pub fn select(labs: &[String]) -> Result<Vec<&'static Measure>, BenchError> {
    let measured = measured_labs();
    for word in labs {
        if crate::labs::find(word).is_none() {
            let known: Vec<&str> = crate::labs::all().iter().map(|l| l.slug).collect();
            return Err(BenchError::UnknownLab(word.clone(), known.join(", ")));
        }
        if !measured.contains(&word.as_str()) {
            return Err(BenchError::NotMeasured(word.clone(), measured.join(", ")));
        }
    }
    Ok(MEASURES
        .iter()
        .filter(|m| match m.program {
            Program::Baseline(_) => true,
            Program::Lab(slug) => labs.is_empty() || labs.iter().any(|l| l == slug),
        })
        .collect())
}

/// Same CPU, and two different CPUs when the process may use two.
pub fn placements() -> Result<Vec<Placement>, BenchError> {
    let allowed = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
        .map_err(BenchError::Affinity)?;
    let cpus: Vec<usize> = (0..nix::sched::CpuSet::count())
        .filter(|&cpu| allowed.is_set(cpu).unwrap_or(false))
        .take(2)
        .collect();
    let mut placements = Vec::new();
    if let Some(&first) = cpus.first() {
        placements.push(Placement {
            name: "same-cpu",
            cpus: [first, first],
        });
    }
    if let [first, second] = cpus[..] {
        placements.push(Placement {
            name: "cross-cpu",
            cpus: [first, second],
        });
    }
    if placements.is_empty() {
        return Err(BenchError::Affinity(nix::Error::EINVAL));
    }
    Ok(placements)
}

/// What one measurement gave: its samples, or why there are none.
pub struct Outcome {
    pub measure: &'static Measure,
    pub placement: Placement,
    pub result: Result<driver::Samples, (Status, String)>,
}

pub fn main(args: Args) -> ExitCode {
    if let Some(kind) = args.baseline {
        return baselines::serve(kind);
    }
    match run(&args) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("cargo grade bench: {error}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    if let Some(from) = &args.from {
        let text = std::fs::read_to_string(from)
            .map_err(|e| BenchError::From(from.clone(), e.to_string()))?;
        // The report's names are `'static`; it is read once.
        let report: figures::Report = serde_json::from_str(text.leak())
            .map_err(|e| BenchError::From(from.clone(), e.to_string()))?;
        write(args, &report)?;
        return Ok(ExitCode::SUCCESS);
    }
    let measures = select(&args.labs)?;
    let placements = placements()?;
    let workspace = crate::workspace_root()?;
    if args.solutions && !workspace.join("solutions").join("Cargo.toml").is_file() {
        return Err(format!(
            "--solutions: there is no solutions/ in {} (a student's copy has none)",
            workspace.display()
        )
        .into());
    }
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out).map_err(|e| BenchError::Out(out.clone(), e))?;
    }
    let settings = Settings {
        samples: args.samples,
        warmup: args.warmup,
        budget: args.budget as u64,
        max_size: args.max_size,
        timeout: Duration::from_secs(args.timeout),
    };
    let variant = if args.solutions {
        Variant::Solutions
    } else {
        Variant::Labs
    };
    if args.format == BenchFormat::Human {
        eprintln!("building {}/ with cargo ...", variant.dir());
    }
    crate::cli::handle_interruptions();
    let report = measure(&workspace, variant, &measures, &placements, &settings, None);
    write(args, &report)?;
    if let Some(signal) = engine::run::interrupted() {
        return Ok(ExitCode::from(128 + signal as u8));
    }
    Ok(if report.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Prints the report in the chosen format and, with --out, writes bench.json, the chart and
/// bench.md.
fn write(args: &Args, report: &figures::Report) -> Result<(), Box<dyn std::error::Error>> {
    match args.format {
        BenchFormat::Human => print!("{}", report.table()),
        BenchFormat::Json => println!("{}", report.json()),
    }
    let Some(out) = &args.out else {
        return Ok(());
    };
    std::fs::create_dir_all(out).map_err(|e| BenchError::Out(out.clone(), e))?;
    let json = out.join("bench.json");
    std::fs::write(&json, report.json() + "\n").map_err(|e| BenchError::Out(json.clone(), e))?;
    let svg = out.join("throughput.svg");
    chart::draw(report, &svg)?;
    let page = out.join("bench.md");
    std::fs::write(&page, report.markdown()).map_err(|e| BenchError::Out(page.clone(), e))?;
    if args.format == BenchFormat::Human {
        eprintln!(
            "wrote {}, {} and {}",
            json.display(),
            svg.display(),
            page.display()
        );
    }
    Ok(())
}

/// The slug the baselines' program is known by to the engine.
const BASELINE_SLUG: &str = "baseline";

/// Builds the programs of `measures` (as `run_as` when given, who also runs them) and measures
/// each in every placement: what `cargo grade bench` and the leaderboard share.
pub fn measure(
    workspace: &Path,
    variant: Variant,
    measures: &[&'static Measure],
    placements: &[Placement],
    settings: &Settings,
    run_as: Option<&RunAs>,
) -> figures::Report {
    let slugs: Vec<&'static str> = measures
        .iter()
        .filter_map(|m| match m.program {
            Program::Lab(slug) => Some(slug),
            Program::Baseline(_) => None,
        })
        .fold(Vec::new(), |mut slugs, slug| {
            if !slugs.contains(&slug) {
                slugs.push(slug);
            }
            slugs
        });
    let mut programs =
        engine::compile::build_reporting(workspace, variant, &slugs, run_as, &|_| {});
    programs.insert(
        BASELINE_SLUG,
        std::env::current_exe().map_err(|e| format!("the grader's own program: {e}")),
    );
    let load_at_start = figures::load();
    let outcomes = measure_all(
        workspace, variant, measures, placements, settings, &programs, run_as,
    );
    let machine = figures::Machine {
        load_at_start,
        ..figures::Machine::this_one()
    };
    figures::Report::new(variant.dir(), machine, settings, &outcomes)
}

/// Runs every measure in every placement, one at a time, with a progress bar.
fn measure_all(
    workspace: &Path,
    variant: Variant,
    measures: &[&'static Measure],
    placements: &[Placement],
    settings: &Settings,
    programs: &engine::compile::Programs,
    run_as: Option<&RunAs>,
) -> Vec<Outcome> {
    let bar = ProgressBar::new((measures.len() * placements.len()) as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let options = Options {
        variant,
        seed: 0,
        jobs: 1,
        log_dir: workspace.join("target").join("grade").join("bench-logs"),
        run_as: run_as.cloned(),
    };
    let mut outcomes = Vec::new();
    for measure in measures {
        let lab = engine_lab(measure.program);
        // Only the measured program: under --run-as each grading copies every program it gets.
        let program: engine::compile::Programs = programs
            .get_key_value(lab.slug)
            .map(|(slug, path)| (*slug, path.clone()))
            .into_iter()
            .collect();
        for &placement in placements {
            if engine::run::interrupted().is_some() {
                break;
            }
            bar.set_message(format!(
                "{} {:?} {}",
                measure.name, measure.metric, placement.name
            ));
            let check: &'static Check = Box::leak(Box::new(Check {
                name: Box::leak(
                    format!(
                        "{}-{:?}-{}",
                        measure.what_or_kind(),
                        measure.metric,
                        placement.name
                    )
                    .to_lowercase()
                    .into_boxed_str(),
                ),
                points: 0,
                timeout: settings.timeout,
                description: "a measurement",
                exclusive: true,
                hint: None,
                run: driver::check,
            }));
            {
                let mut slot = driver::SLOT.lock().expect("slot lock");
                slot.job = Some(driver::Job {
                    measure,
                    placement,
                    settings: settings.clone(),
                });
                slot.samples = None;
            }
            let plan = Plan {
                lab,
                checks: vec![check],
                cleanup: false,
            };
            let report = engine::grade_built(&[plan], &options, &program, &|_| {});
            let samples = driver::SLOT.lock().expect("slot lock").samples.take();
            let result = report
                .labs
                .first()
                .and_then(|l| l.checks.first())
                .map(|check| match (check.status, samples) {
                    (Status::Passed, Some(samples)) => Ok(samples),
                    (status, _) => Err((status, check.message.clone())),
                })
                .unwrap_or_else(|| Err((Status::Crashed, "interrupted".to_string())));
            outcomes.push(Outcome {
                measure,
                placement,
                result,
            });
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    outcomes
}

impl Measure {
    /// The program's word for this measure: `bench WHAT`, or the baseline's kind.
    fn what_or_kind(&self) -> String {
        match self.program {
            Program::Lab(slug) => format!("{slug}-{}", self.what),
            Program::Baseline(kind) => format!("raw-{}", kind.name()),
        }
    }
}

/// The engine's lab for a program: the lab's slug (the engine finds its program by it) and
/// hang explanation, with no points (a measurement leaving an IPC object fails).
fn engine_lab(program: Program) -> &'static Lab {
    let (number, slug, title, explain_hang) = match program {
        Program::Lab(slug) => match crate::labs::find(slug) {
            Some(lab) => (lab.number, lab.slug, lab.title, lab.explain_hang),
            None => (0, slug, slug, no_explanation as fn(&_) -> _),
        },
        Program::Baseline(_) => (0, BASELINE_SLUG, "baselines", no_explanation as fn(&_) -> _),
    };
    Box::leak(Box::new(Lab {
        number,
        slug,
        title,
        checks: &[],
        cleanup_points: 0,
        explain_hang,
    }))
}

fn no_explanation(_: &engine::diagnose::Hang) -> Option<String> {
    None
}
