//! `cargo grade --leaderboard`: after grading, each lab whose graded checks all passed is
//! measured as `cargo grade bench` measures it (a small plan, one CPU), and some of its figures
//! go into the `leaderboard` of Gradescope's results.json: each round trip's p50 (lower ranks
//! higher) and each throughput at 1 MiB (higher ranks higher). Nothing of it counts in the grade.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::figures::{self, Figure};
use super::{Metric, Program, Settings};
use crate::engine::{self, RunAs, Status, Variant};
use crate::report::Format;

/// The message size of the leaderboard's throughputs: the size from which shared memory is
/// expected to be well ahead of the pipe (see docs/benchmark.md).
pub const THROUGHPUT_SIZE: usize = 1 << 20;

/// Timed rounds per size by default: enough for a stable median, a few seconds per lab.
pub const DEFAULT_SAMPLES: u64 = 1000;

/// The leaderboard's options, on `cargo grade` and on `cargo grade gradescope` (whose
/// `run_autograder` passes them on).
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct LeaderboardArgs {
    /// Also measure each lab whose checks all pass (`cargo grade bench` on one CPU, a small
    /// plan; not graded) and put its round-trip p50 and 1 MiB throughput in the leaderboard of
    /// Gradescope's results.json.
    #[arg(long)]
    pub leaderboard: bool,
    /// Timed rounds per message size of the leaderboard's measurement.
    #[arg(
        long,
        value_name = "N",
        default_value_t = DEFAULT_SAMPLES,
        requires = "leaderboard",
        value_parser = clap::value_parser!(u64).range(3..)
    )]
    pub leaderboard_samples: u64,
}

impl Default for LeaderboardArgs {
    fn default() -> LeaderboardArgs {
        LeaderboardArgs {
            leaderboard: false,
            leaderboard_samples: DEFAULT_SAMPLES,
        }
    }
}

/// A leaderboard that cannot be made; found before anything is graded.
#[derive(Debug, thiserror::Error)]
pub enum LeaderboardError {
    #[error(
        "--leaderboard fills the leaderboard of Gradescope's results.json: add --format \
         gradescope or --write gradescope=PATH"
    )]
    NoGradescope,
    #[error("--leaderboard: no lab graded ({0}) has a benchmark; the labs measured are: {1}")]
    NoBenchmark(String, String),
}

impl LeaderboardArgs {
    /// Whether a leaderboard can be made when `slugs` are graded and, when grading, `formats`
    /// printed or written.
    pub fn validate(
        &self,
        slugs: &[&str],
        formats: Option<&[Format]>,
    ) -> Result<(), LeaderboardError> {
        if !self.leaderboard {
            return Ok(());
        }
        if formats.is_some_and(|formats| !formats.contains(&Format::Gradescope)) {
            return Err(LeaderboardError::NoGradescope);
        }
        let measured = super::measured_labs();
        if !slugs.iter().any(|slug| measured.contains(slug)) {
            return Err(LeaderboardError::NoBenchmark(
                slugs.join(", "),
                measured.join(", "),
            ));
        }
        Ok(())
    }

    /// The options as `cargo grade` takes them (none without `--leaderboard`).
    pub fn flags(&self) -> Vec<String> {
        if !self.leaderboard {
            return Vec::new();
        }
        vec![
            "--leaderboard".into(),
            "--leaderboard-samples".into(),
            self.leaderboard_samples.to_string(),
        ]
    }
}

/// Which way a figure ranks, as Gradescope reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Lower is better: a time.
    Asc,
    /// Higher is better: a throughput.
    Desc,
}

/// One column of Gradescope's leaderboard.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    pub name: String,
    pub value: f64,
    pub order: Order,
}

/// What results.json gets: the leaderboard, and lines for its `output` (each figure with its
/// ratio to its baseline, what was not measured and why).
#[derive(Debug, Clone, Default)]
pub struct Leaderboard {
    pub entries: Vec<Entry>,
    pub summary: Vec<String>,
}

/// The plan: small, so that it adds seconds to a grading, not minutes.
fn settings(samples: u64) -> Settings {
    Settings {
        samples,
        warmup: (samples / 10).max(1),
        budget: 64 << 20,
        max_size: THROUGHPUT_SIZE,
        timeout: Duration::from_secs(120),
    }
}

/// Measures the labs of `graded` whose checks all passed, with their baselines, on one CPU.
pub fn measure(
    workspace: &Path,
    graded: &engine::Report,
    variant: Variant,
    run_as: Option<&RunAs>,
    samples: u64,
) -> Leaderboard {
    let measured = super::measured_labs();
    let mut summary = Vec::new();
    let mut labs = Vec::new();
    for lab in graded
        .labs
        .iter()
        .filter(|l| measured.contains(&l.name.as_str()))
    {
        // A wrong program can be fast: only correct ones are ranked.
        if !lab.checks.is_empty() && lab.checks.iter().all(|c| c.status == Status::Passed) {
            labs.push(lab.name.clone());
        } else {
            summary.push(format!(
                "{}: not measured, its checks do not all pass",
                lab.name
            ));
        }
    }
    if labs.is_empty() {
        return Leaderboard {
            entries: Vec::new(),
            summary,
        };
    }
    let measures = match super::select(&labs) {
        Ok(all) => with_their_baselines(all),
        Err(error) => {
            summary.push(format!("not measured: {error}"));
            return Leaderboard {
                entries: Vec::new(),
                summary,
            };
        }
    };
    // One CPU: every machine has one, and its figures depend least on other work.
    let placement = match super::placements() {
        Ok(placements) => placements[..1].to_vec(),
        Err(error) => {
            summary.push(format!("not measured: {error}"));
            return Leaderboard {
                entries: Vec::new(),
                summary,
            };
        }
    };
    let report = super::measure(
        workspace,
        variant,
        &measures,
        &placement,
        &settings(samples),
        run_as,
    );
    let mut board = from_report(&report);
    summary.append(&mut board.summary);
    board.summary = summary;
    board
}

/// The lab measures and only the baselines they are divided by.
fn with_their_baselines(all: Vec<&'static super::Measure>) -> Vec<&'static super::Measure> {
    let labs: Vec<&super::Measure> = all
        .iter()
        .copied()
        .filter(|m| matches!(m.program, Program::Lab(_)))
        .collect();
    all.into_iter()
        .filter(|m| match m.program {
            Program::Lab(_) => true,
            Program::Baseline(_) => labs
                .iter()
                .any(|l| l.metric == m.metric && l.baselines.contains(&m.name)),
        })
        .collect()
}

/// The leaderboard of a benchmark report: a column per lab figure that ranks (round-trip p50,
/// throughput at [`THROUGHPUT_SIZE`]), and a summary line for each with its ratios.
pub fn from_report(report: &figures::Report) -> Leaderboard {
    let mut board = Leaderboard::default();
    for figure in &report.figures {
        let (name, order) = match figure.metric {
            "round-trip-p50" => (
                format!("{} round trip p50 (µs)", figure.mechanism),
                Order::Asc,
            ),
            "throughput" if figure.size == THROUGHPUT_SIZE => (
                format!("{} throughput at 1 MiB (GiB/s)", figure.mechanism),
                Order::Desc,
            ),
            _ => continue,
        };
        // A lab figure comes once per baseline; the first gives the column.
        if board.entries.iter().any(|e| e.name == name)
            || !(figure.value.is_finite() && figure.value > 0.0)
        {
            continue;
        }
        board.summary.push(summary_line(report, figure, &name));
        board.entries.push(Entry {
            name,
            value: significant(figure.value),
            order,
        });
    }
    for failure in &report.failures {
        board.summary.push(format!(
            "not measured: {} ({}): {}: {}",
            failure.mechanism,
            match failure.metric {
                Metric::RoundTrip => "round trip",
                Metric::Throughput => "throughput",
            },
            failure.status,
            failure.message.lines().next().unwrap_or("")
        ));
    }
    board
}

/// `value` to 4 significant digits: the leaderboard shows the number as it is, and the digits
/// beyond are noise.
fn significant(value: f64) -> f64 {
    let scale = 10f64.powi(3 - value.log10().floor() as i32);
    (value * scale).round() / scale
}

/// `pipe-echo round trip p50 (µs): 5.21 (1.00 times the raw pipe)`.
fn summary_line(report: &figures::Report, figure: &Figure, name: &str) -> String {
    let ratios: Vec<String> = report
        .figures
        .iter()
        .filter(|f| {
            f.mechanism == figure.mechanism
                && f.metric == figure.metric
                && f.placement == figure.placement
                && f.size == figure.size
        })
        .filter_map(|f| {
            let ratio = f.ratio?;
            let baseline = f.baseline.as_ref()?;
            Some(format!("{ratio:.2} times the {}", baseline.mechanism))
        })
        .collect();
    if ratios.is_empty() {
        format!("{name}: {:.3}", figure.value)
    } else {
        format!("{name}: {:.3} ({})", figure.value, ratios.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figure(mechanism: &'static str, metric: &'static str, size: usize, value: f64) -> Figure {
        Figure {
            mechanism,
            metric,
            placement: "same-cpu",
            size,
            value,
            unit: if metric == "throughput" {
                "GiB/s"
            } else {
                "us"
            },
            samples: 5,
            baseline: None,
            ratio: None,
        }
    }

    fn with_baseline(mut f: Figure, mechanism: &'static str, value: f64) -> Figure {
        f.ratio = Some(f.value / value);
        f.baseline = Some(figures::BaselineFigure { mechanism, value });
        f
    }

    #[test]
    fn a_column_per_ranked_figure_with_every_ratio_in_the_summary() {
        let settings = settings(5);
        let mut report =
            figures::Report::new("solutions", figures::Machine::this_one(), &settings, &[]);
        report.figures = vec![
            with_baseline(
                figure("pipe-echo", "round-trip-p50", 64, 6.0),
                "raw pipe",
                5.0,
            ),
            with_baseline(
                figure("pipe-echo", "round-trip-p99", 64, 9.0),
                "raw pipe",
                8.0,
            ),
            with_baseline(
                figure("pipe-echo", "throughput", 1024, 1.0),
                "raw pipe",
                1.0,
            ),
            with_baseline(
                figure("chunked-transfer", "throughput", THROUGHPUT_SIZE, 8.0),
                "raw pipe",
                4.0,
            ),
            with_baseline(
                figure("chunked-transfer", "throughput", THROUGHPUT_SIZE, 8.0),
                "memcpy",
                32.0,
            ),
            figure("socket-reqrep (tcp)", "round-trip-p50", 64, f64::NAN),
        ];
        let board = from_report(&report);
        assert_eq!(
            board.entries,
            [
                Entry {
                    name: "pipe-echo round trip p50 (µs)".into(),
                    value: 6.0,
                    order: Order::Asc
                },
                Entry {
                    name: "chunked-transfer throughput at 1 MiB (GiB/s)".into(),
                    value: 8.0,
                    order: Order::Desc
                },
            ]
        );
        assert_eq!(
            board.summary,
            [
                "pipe-echo round trip p50 (µs): 6.000 (1.20 times the raw pipe)",
                "chunked-transfer throughput at 1 MiB (GiB/s): 8.000 (2.00 times the raw pipe, \
                 0.25 times the memcpy)"
            ]
        );
    }

    #[test]
    fn values_keep_four_significant_digits() {
        assert_eq!(significant(1.2367374257245183), 1.237);
        assert_eq!(significant(44.0351), 44.04);
        assert_eq!(significant(0.000123456), 0.0001235);
        assert_eq!(significant(6.0), 6.0);
    }

    #[test]
    fn only_the_baselines_of_the_labs_measured_are_kept() {
        // From the table itself, not `select`: a template may know no chunked-transfer.
        let all: Vec<_> = super::super::MEASURES
            .iter()
            .filter(|m| match m.program {
                Program::Baseline(_) => true,
                Program::Lab(slug) => slug == "chunked-transfer",
            })
            .collect();
        let kept: Vec<(&str, Metric)> = with_their_baselines(all)
            .iter()
            .map(|m| (m.name, m.metric))
            .collect();
        assert_eq!(
            kept,
            [
                ("raw pipe", Metric::Throughput),
                ("memcpy", Metric::Throughput),
                ("chunked-transfer", Metric::Throughput)
            ]
        );
    }

    #[test]
    fn bad_leaderboards_are_typed_errors() {
        let on = LeaderboardArgs {
            leaderboard: true,
            ..LeaderboardArgs::default()
        };
        assert!(matches!(
            on.validate(&["pipe-echo"], Some(&[Format::Human])),
            Err(LeaderboardError::NoGradescope)
        ));
        // Every lab of the course has a benchmark; a lab added without one has none.
        let unmeasured = "a-lab-without-benchmark";
        assert!(matches!(
            on.validate(&[unmeasured], Some(&[Format::Human, Format::Gradescope])),
            Err(LeaderboardError::NoBenchmark(..))
        ));
        assert!(on.validate(&[unmeasured, "pipe-echo"], None).is_ok());
        assert!(
            LeaderboardArgs::default()
                .validate(&[unmeasured], Some(&[]))
                .is_ok()
        );
        assert_eq!(
            on.flags(),
            ["--leaderboard", "--leaderboard-samples", "1000"]
        );
        assert!(LeaderboardArgs::default().flags().is_empty());
    }
}
