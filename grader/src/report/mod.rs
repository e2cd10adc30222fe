//! The reports of a grading: the human-readable one and the JSON document here, the formats of
//! CI jobs and grading platforms in a module each (see docs/report-format.md).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::bench::leaderboard::Leaderboard;
use crate::engine::{CheckResult, GRADER_FAILURE, Lab, LabResult, Report, Status, Variant};

mod classroom;
mod classroom50;
mod destination;
mod github_annotations;
mod github_summary;
mod gradescope;
mod junit;

pub use classroom50::IdentityError;
pub use destination::{Destination, DestinationError, OpenDestination, open_all};

/// What `--format` prints and `--write` writes. The names are used by workflows and scripts
/// outside the grader: do not rename them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A line per check, a subtotal per lab, the total.
    Human,
    /// The whole report, one JSON document.
    Json,
    /// The result of a GitHub Classroom runner (for autograding-grading-reporter).
    Classroom,
    /// Markdown for a GitHub job summary ($GITHUB_STEP_SUMMARY).
    GithubSummary,
    /// GitHub workflow commands: an error annotation per check that did not pass.
    GithubAnnotations,
    /// Classroom 50's result.json (classroom50/result/v1), identity from the runner's environment.
    #[value(name = "classroom50")]
    Classroom50,
    /// Gradescope's results.json.
    Gradescope,
    /// JUnit XML: a test suite per lab, a test case per check.
    Junit,
}

impl Format {
    /// The name on the command line: `github-summary`, `classroom50`, ...
    pub fn name(self) -> String {
        clap::ValueEnum::to_possible_value(&self)
            .expect("no format is hidden")
            .get_name()
            .to_string()
    }
}

/// What the formats need besides the report: how to reproduce a check, where each lab's source
/// is, and the identity a Classroom 50 result carries.
pub struct Context {
    /// What `reproduce:` lines add after `--seed N` (`--solutions`, `--run-as USER`).
    flags: String,
    /// Each lab's source file, relative to the workspace: `labs/01-pipe-echo/src/lib.rs`.
    sources: BTreeMap<String, String>,
    classroom50: Option<classroom50::Identity>,
    /// When grading started: Gradescope wants the execution time.
    started: Instant,
    /// Gradescope's leaderboard, when `--leaderboard` measured one.
    leaderboard: Option<Leaderboard>,
}

impl Context {
    /// Everything the `formats` will need, read before grading so that a missing piece (the
    /// Classroom 50 environment) is an error before any time is spent.
    pub fn new(
        workspace: &Path,
        variant: Variant,
        slugs: &[&str],
        flags: String,
        formats: &[Format],
    ) -> Result<Context, IdentityError> {
        let classroom50 = if formats.contains(&Format::Classroom50) {
            Some(classroom50::Identity::from_env()?)
        } else {
            None
        };
        let sources = slugs
            .iter()
            .map(|slug| (slug.to_string(), lab_source(workspace, variant, slug)))
            .collect();
        Ok(Context {
            flags,
            sources,
            classroom50,
            started: Instant::now(),
            leaderboard: None,
        })
    }

    /// Gives Gradescope's results.json a leaderboard.
    pub fn set_leaderboard(&mut self, leaderboard: Leaderboard) {
        self.leaderboard = Some(leaderboard);
    }

    /// The source file students edit in `lab`, relative to the workspace.
    fn source(&self, lab: &str) -> String {
        self.sources
            .get(lab)
            .cloned()
            .unwrap_or_else(|| format!("labs/{lab}/src/lib.rs"))
    }

    /// The command that grades `check` again with the same inputs.
    fn reproduce(&self, report: &Report, lab: &str, check: &CheckResult) -> String {
        reproduce_command(lab, &check.name, report.seed, &self.flags)
    }
}

/// `labs/NN-slug/src/lib.rs` (or under `solutions/`), as the workspace names it.
fn lab_source(workspace: &Path, variant: Variant, slug: &str) -> String {
    let dir = crate::engine::compile::crate_dir(workspace, variant, slug)
        .and_then(|dir| dir.strip_prefix(workspace).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from(variant.dir()).join(slug));
    dir.join("src").join("lib.rs").display().to_string()
}

/// `format` of `report`, as printed or written.
pub fn render(format: Format, report: &Report, context: &Context) -> String {
    match format {
        Format::Human => {
            let printer = Printer::new(Style::plain(), report.seed, context.flags.clone());
            let mut text = String::new();
            for lab in &report.labs {
                for check in &lab.checks {
                    text.push_str(&printer.check(&lab.name, check));
                }
            }
            text + &summary(report, report.seed, &Style::plain())
        }
        Format::Json => serde_json::to_string_pretty(report).expect("a report serializes") + "\n",
        Format::Classroom => classroom::render(report, context),
        Format::GithubSummary => github_summary::render(report),
        Format::GithubAnnotations => github_annotations::render(report, context),
        Format::Classroom50 => classroom50::render(
            report,
            context
                .classroom50
                .as_ref()
                .expect("Context::new reads the identity when classroom50 is asked for"),
        ),
        Format::Gradescope => gradescope::render(report, context),
        Format::Junit => junit::render(report),
    }
}

/// `cargo grade LAB/CHECK --seed SEED FLAGS`: grades one check again with the same inputs.
pub fn reproduce_command(lab: &str, check: &str, seed: u64, flags: &str) -> String {
    format!("cargo grade {lab}/{check} --seed {seed}{flags}")
}

/// Every check of the report with its lab, in report order.
fn checks(report: &Report) -> impl Iterator<Item = (&LabResult, &CheckResult)> {
    report
        .labs
        .iter()
        .flat_map(|lab| lab.checks.iter().map(move |check| (lab, check)))
}

/// Whether the grader, not the graded program, is why the check did not pass.
fn grader_failed(check: &CheckResult) -> bool {
    check.message.starts_with(GRADER_FAILURE)
}

/// Whether a reproduce line helps: the check ran the program and did not pass (a `todo!()` or
/// a lab that does not compile gives the same result with any seed).
fn reproducible(check: &CheckResult) -> bool {
    !matches!(check.status, Status::Passed | Status::NotImplemented)
        && !check.message.starts_with(DOES_NOT_COMPILE)
}

/// Whether the run could not grade the work: it was interrupted, the grader failed a check, or
/// no graded lab compiles.
fn could_not_grade(report: &Report) -> bool {
    let nothing_compiled = checks(report).next().is_some()
        && checks(report).all(|(_, check)| check.message.starts_with(DOES_NOT_COMPILE));
    report.interrupted.is_some()
        || nothing_compiled
        || checks(report).any(|(_, check)| grader_failed(check))
}

/// The message's first line (a `\r` ends it too).
fn first_line(message: &str) -> &str {
    message.split(['\n', '\r']).next().unwrap_or("")
}

/// The line of `source` that the message points at (`... (labs/01-pipe-echo/src/lib.rs:96)`, as
/// a `todo!()` reports it).
fn source_line(message: &str, source: &str) -> Option<u32> {
    let at = message.find(&format!("{source}:"))? + source.len() + 1;
    let digits: String = message[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Colour on a terminal only (and never with `NO_COLOR`).
pub struct Style {
    colour: bool,
}

impl Style {
    pub fn detect() -> Style {
        Style {
            colour: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    pub fn plain() -> Style {
        Style { colour: false }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

fn label(status: Status) -> (&'static str, &'static str) {
    match status {
        Status::Passed => ("PASS", "32"),
        Status::Failed => ("FAIL", "31"),
        Status::TimedOut => ("HANG", "31"),
        Status::NotImplemented => ("TODO", "33"),
        Status::Crashed => ("CRASH", "31"),
    }
}

/// The start of the message of every check of a lab that does not compile.
pub use crate::engine::compile::DOES_NOT_COMPILE;

/// Prints check lines as they come: a failure with its message, how to reproduce it and where
/// its log is; a lab's compiler errors only once.
pub struct Printer {
    style: Style,
    seed: u64,
    /// What `reproduce:` lines add after `--seed N` (`--solutions`, `--run-as USER`).
    flags: String,
    compile_errors_shown: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

impl Printer {
    pub fn new(style: Style, seed: u64, flags: String) -> Printer {
        Printer {
            style,
            seed,
            flags,
            compile_errors_shown: Default::default(),
        }
    }

    /// One check's line, and for a failure what follows it.
    pub fn check(&self, lab: &str, result: &CheckResult) -> String {
        let (word, colour) = label(result.status);
        // Padded before it is painted: the escape codes must not count as width.
        let mut text = format!(
            "{}{:<40}{:>3}/{:<3}{:>9}\n",
            self.style.paint(colour, &format!("{word:<6}")),
            format!("{lab}/{}", result.name),
            result.score,
            result.max_score,
            format_duration(result.duration_ms)
        );
        if result.status == Status::Passed {
            return text;
        }
        if result.message.starts_with(DOES_NOT_COMPILE) {
            let mut shown = self.compile_errors_shown.lock().expect("shown lock");
            if !shown.insert(lab.to_string()) {
                let _ = writeln!(text, "      the lab does not compile: its errors are above");
                return text;
            }
            for line in result.message.lines() {
                let _ = writeln!(text, "      {line}");
            }
            return text;
        }
        for line in result.message.lines() {
            let _ = writeln!(text, "      {line}");
        }
        if let Some(hint) = result.hint {
            let _ = writeln!(text, "      hint: {hint}");
        }
        if result.status != Status::NotImplemented {
            let _ = writeln!(
                text,
                "      reproduce: {}",
                reproduce_command(lab, &result.name, self.seed, &self.flags)
            );
            if let Some(log) = &result.log {
                let _ = writeln!(text, "      full log: {}", log.display());
            }
        }
        text
    }
}

fn format_duration(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

/// Subtotals per lab and the total.
pub fn summary(report: &Report, seed: u64, style: &Style) -> String {
    let mut text = String::from("\n");
    if let Some(signal) = &report.interrupted {
        let graded: usize = report.labs.iter().map(|l| l.checks.len()).sum();
        let _ = writeln!(
            text,
            "interrupted by {signal}: {graded} check(s) were graded before it; the checks that \
             were running were stopped and cleaned up after\n"
        );
    }
    for lab in &report.labs {
        let passed = lab
            .checks
            .iter()
            .filter(|c| c.status == Status::Passed)
            .count();
        let _ = writeln!(
            text,
            "{:<46}{:>3}/{:<3}  ({passed} of {} checks passed)",
            lab.name,
            lab.score,
            lab.max_score,
            lab.checks.len()
        );
    }
    let total = format!("{}/{}", report.score, report.max_score);
    let colour = if report.all_passed() { "32" } else { "31" };
    let _ = writeln!(
        text,
        "{:<46}{}   (seed {seed})",
        "total",
        style.paint(colour, &total)
    );
    if let Some(workspace) = &report.workspace {
        let _ = writeln!(text, "graded: {}", workspace.display());
    }
    text
}

/// `--list`: every lab and its checks with points.
pub fn list(labs: &[&Lab]) -> String {
    let mut text = String::new();
    let width = labs
        .iter()
        .flat_map(|lab| {
            lab.checks
                .iter()
                .map(move |c| lab.slug.len() + 1 + c.name.len())
                .chain([lab.slug.len() + 1 + crate::engine::CLEANUP_CHECK.len()])
        })
        .max()
        .unwrap_or(0)
        + 2;
    for lab in labs {
        let points: u32 = lab.checks.iter().map(|c| c.points).sum::<u32>() + lab.cleanup_points;
        let _ = writeln!(text, "{} ({points} points): {}", lab.slug, lab.title);
        for check in lab.checks {
            let _ = writeln!(
                text,
                "  {:<width$}{:>3}  {}",
                format!("{}/{}", lab.slug, check.name),
                check.points,
                check.description
            );
        }
        if lab.cleanup_points > 0 {
            let _ = writeln!(
                text,
                "  {:<width$}{:>3}  leaves no IPC object behind",
                format!("{}/cleanup", lab.slug),
                lab.cleanup_points
            );
        }
    }
    text
}

/// One check's record over `--repeat` runs (also the JSON of `--repeat --format json`).
#[derive(Debug, serde::Serialize)]
pub struct Tally {
    pub lab: String,
    pub name: String,
    pub passed: u32,
    pub runs: u32,
    pub failures: Vec<Failure>,
}

/// One failed run of a check.
#[derive(Debug, serde::Serialize)]
pub struct Failure {
    pub seed: u64,
    pub status: &'static str,
    /// The first line of the check's message.
    pub message: String,
}

/// `--repeat`: each check's pass count, and how to reproduce each failure.
pub fn repeat_table(tallies: &[Tally]) -> String {
    let mut text = String::new();
    for tally in tallies {
        let check = format!("{}/{}", tally.lab, tally.name);
        let _ = writeln!(
            text,
            "{check:<46}{:>4}/{:<4} passed",
            tally.passed, tally.runs
        );
        for failure in &tally.failures {
            let _ = writeln!(
                text,
                "      {} with --seed {}: {}",
                failure.status, failure.seed, failure.message
            );
        }
    }
    let flaky = tallies.iter().filter(|t| t.passed != t.runs).count();
    let _ = writeln!(
        text,
        "\n{flaky} of {} checks did not pass every run",
        tallies.len()
    );
    text
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A diagnosis that tries to break every format: table and property separators, escapes,
    /// markup, a workflow command after a newline, and bytes XML forbids.
    pub const HOSTILE: &str = "the echo differs | 100% <b>&amp;</b> `x` a:b,c\\|\r\n::error::injected\nline\x00two\x1b[31m\x07 \u{FFFE}end";

    pub const TODO: &str = "not yet implemented: write it (labs/01-pipe-echo/src/lib.rs:96)";

    pub fn check(name: &str, status: Status, max_score: u32, message: &str) -> CheckResult {
        CheckResult {
            name: name.into(),
            status,
            score: if status == Status::Passed {
                max_score
            } else {
                0
            },
            max_score,
            message: message.into(),
            duration_ms: 1500,
            hint: None,
            seed: 7,
            log: None,
        }
    }

    pub fn lab(name: &str, checks: Vec<CheckResult>) -> LabResult {
        LabResult {
            name: name.into(),
            score: checks.iter().map(|c| c.score).sum(),
            max_score: checks.iter().map(|c| c.max_score).sum(),
            checks,
        }
    }

    /// Every outcome a check can have: passed, failed (hostile), not implemented, timed out, a
    /// grader failure, and a lab that does not compile.
    pub fn every_outcome() -> Report {
        Report::from_labs(
            vec![
                lab(
                    "pipe-echo",
                    vec![
                        check("echo-0-bytes", Status::Passed, 1, "0 bytes echoed"),
                        check("echo-1-byte", Status::Failed, 2, HOSTILE),
                        check("echo-4-kib", Status::NotImplemented, 2, TODO),
                        check(
                            "echo-16-mib",
                            Status::TimedOut,
                            4,
                            "timed out: nobody reads\n  pid 9 (the parent): blocked writing",
                        ),
                        check(
                            "cleanup",
                            Status::Crashed,
                            1,
                            &format!("{GRADER_FAILURE}: /proc vanished"),
                        ),
                    ],
                ),
                lab(
                    "sysv-shm",
                    vec![check(
                        "attach",
                        Status::Crashed,
                        3,
                        &format!("{DOES_NOT_COMPILE} (cargo exited with 101):\nerror[E0425]: nope"),
                    )],
                ),
            ],
            42,
        )
    }

    pub fn context() -> Context {
        let identity = classroom50::tests::identity();
        Context {
            flags: " --solutions".into(),
            sources: [
                ("pipe-echo", "labs/01-pipe-echo/src/lib.rs"),
                ("sysv-shm", "labs/04-sysv-shm/src/lib.rs"),
            ]
            .into_iter()
            .map(|(lab, source)| (lab.to_string(), source.to_string()))
            .collect(),
            classroom50: Some(identity),
            started: Instant::now(),
            leaderboard: None,
        }
    }

    #[test]
    fn the_format_names_stay_what_workflows_use() {
        let names: Vec<String> = <Format as clap::ValueEnum>::value_variants()
            .iter()
            .map(|f| f.name())
            .collect();
        assert_eq!(
            names,
            [
                "human",
                "json",
                "classroom",
                "github-summary",
                "github-annotations",
                "classroom50",
                "gradescope",
                "junit"
            ]
        );
    }

    #[test]
    fn a_lab_source_is_found_in_the_workspace() {
        let workspace = crate::workspace_root().expect("the tests run in a workspace");
        assert_eq!(
            lab_source(&workspace, Variant::Labs, "pipe-echo"),
            "labs/01-pipe-echo/src/lib.rs"
        );
        assert_eq!(source_line(TODO, "labs/01-pipe-echo/src/lib.rs"), Some(96));
        assert_eq!(source_line(TODO, "labs/04-sysv-shm/src/lib.rs"), None);
    }

    #[test]
    fn what_could_not_be_graded_is_told_apart_from_a_failure() {
        assert!(could_not_grade(&every_outcome()));
        let failing = Report::from_labs(
            vec![lab("pipe-echo", vec![check("a", Status::Failed, 1, "x")])],
            1,
        );
        assert!(!could_not_grade(&failing));
        let broken = format!("{DOES_NOT_COMPILE}: error");
        let nothing_builds = Report::from_labs(
            vec![
                lab("pipe-echo", vec![check("a", Status::Crashed, 1, &broken)]),
                lab("sysv-shm", vec![check("b", Status::Crashed, 1, &broken)]),
            ],
            1,
        );
        assert!(could_not_grade(&nothing_builds));
        let mut interrupted = failing.clone();
        interrupted.interrupted = Some("SIGINT".into());
        assert!(could_not_grade(&interrupted));
    }

    #[test]
    fn the_human_format_renders_every_check_and_the_total() {
        let text = render(Format::Human, &every_outcome(), &context());
        for name in [
            "echo-0-bytes",
            "echo-1-byte",
            "echo-4-kib",
            "echo-16-mib",
            "attach",
        ] {
            assert!(text.contains(name), "{name} missing:\n{text}");
        }
        assert!(
            text.contains("reproduce: cargo grade pipe-echo/echo-1-byte --seed 42 --solutions")
        );
        assert!(text.contains("1/13"), "{text}");
    }

    #[test]
    fn write_destinations_are_parsed_and_checked_before_grading() {
        let parsed: Destination = "junit=out/junit.xml".parse().unwrap();
        assert_eq!(parsed.format, Format::Junit);
        assert_eq!(parsed.path, PathBuf::from("out/junit.xml"));
        assert!(matches!(
            "xml=a".parse::<Destination>(),
            Err(DestinationError::UnknownFormat(name, known)) if name == "xml" && known.contains("gradescope")
        ));
        assert!(matches!(
            "junit".parse::<Destination>(),
            Err(DestinationError::NoEquals(_))
        ));
        assert!(matches!(
            "junit=".parse::<Destination>(),
            Err(DestinationError::EmptyPath(_))
        ));

        let dir = tempfile::tempdir().unwrap();
        let into_a_directory = Destination {
            format: Format::Json,
            path: dir.path().to_path_buf(),
        };
        assert!(matches!(
            open_all(&[into_a_directory]),
            Err(DestinationError::Unwritable(..))
        ));
        let nowhere = Destination {
            format: Format::Json,
            path: dir.path().join("no/such/dir/x"),
        };
        assert!(matches!(
            open_all(&[nowhere]),
            Err(DestinationError::Unwritable(..))
        ));
        let file = dir.path().join("report.json");
        let twice = [
            Destination {
                format: Format::Json,
                path: file.clone(),
            },
            Destination {
                format: Format::Junit,
                path: file.clone(),
            },
        ];
        assert!(matches!(open_all(&twice), Err(DestinationError::Twice(_))));

        std::fs::write(&file, "an older, longer report that must not survive").unwrap();
        let mut open = open_all(&twice[..1]).unwrap();
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "an older, longer report that must not survive",
            "opening before grading keeps the file as it is"
        );
        open.remove(0).write("{}\n").unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "{}\n");

        let device = Destination {
            format: Format::Json,
            path: PathBuf::from("/dev/null"),
        };
        let mut open = open_all(&[device]).expect("a device can be written");
        open.remove(0)
            .write("{}\n")
            .expect("a device is written, not truncated");
    }

    fn result(status: Status, message: &str) -> CheckResult {
        CheckResult {
            name: "echo-1-byte".into(),
            status,
            score: 0,
            max_score: 1,
            message: message.into(),
            duration_ms: 3,
            hint: None,
            seed: 7,
            log: None,
        }
    }

    #[test]
    fn a_lab_that_does_not_compile_shows_its_errors_once() {
        let printer = Printer::new(Style::plain(), 1, String::new());
        let broken = result(
            Status::Crashed,
            &format!("{DOES_NOT_COMPILE} (cargo exited with 101):\nerror[E0425]: nope"),
        );
        let first = printer.check("pipe-echo", &broken);
        let second = printer.check("pipe-echo", &broken);
        assert!(first.contains("E0425"));
        assert!(!second.contains("E0425"));
        assert!(second.contains("its errors are above"));
        assert!(!first.contains("reproduce:"));
    }

    #[test]
    fn reproduce_lines_keep_the_options_that_change_what_is_graded() {
        let printer = Printer::new(Style::plain(), 42, " --solutions --run-as nobody".into());
        let line = printer.check("pipe-echo", &result(Status::Failed, "the echo differs"));
        assert!(
            line.contains(
                "reproduce: cargo grade pipe-echo/echo-1-byte --seed 42 --solutions --run-as nobody"
            ),
            "{line}"
        );
    }
    #[test]
    fn a_hint_follows_the_diagnosis_and_is_in_the_json_only_when_set() {
        let printer = Printer::new(Style::plain(), 1, String::new());
        let mut failed = result(Status::Failed, "the echo differs");
        failed.hint = Some("read the handout");
        let text = printer.check("pipe-echo", &failed);
        let diagnosis = text.find("the echo differs").expect("the diagnosis");
        let hint = text
            .find("      hint: read the handout\n")
            .expect("the hint");
        let reproduce = text.find("reproduce:").expect("the reproduce line");
        assert!(diagnosis < hint && hint < reproduce, "{text}");
        let json = serde_json::to_value(&failed).expect("serializes");
        assert_eq!(json["hint"], "read the handout");

        let passed = result(Status::Passed, "echoed");
        assert!(!printer.check("pipe-echo", &passed).contains("hint:"));
        let json = serde_json::to_value(&passed).expect("serializes");
        assert!(json.get("hint").is_none(), "{json}");
    }
}
