//! From samples to figures: percentiles and throughputs, each lab figure beside its baseline
//! measured in the same run, and the report as a table and as JSON.

use std::fmt::Write;

use serde::{Deserialize, Deserializer, Serialize};

use super::{Measure, Metric, Outcome, Program, Settings};

/// A name read back from a saved report: the report's names are `'static` (they come from the
/// measures' table), and a report is read once per run.
fn leaked<'de, D: Deserializer<'de>>(deserializer: D) -> Result<&'static str, D::Error> {
    String::deserialize(deserializer).map(|name| &*name.leak())
}

/// The machine the figures were taken on, and how loaded it was.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    /// `model name` in /proc/cpuinfo (what `lscpu` calls the model).
    pub cpu: String,
    /// The CPUs this process may use.
    pub cores: usize,
    /// The running kernel's release.
    pub kernel: String,
    /// The 1-, 5- and 15-minute load averages when the measurements began and ended.
    pub load_at_start: [f64; 3],
    pub load_at_end: [f64; 3],
}

impl Machine {
    /// This machine, with its load now (as both start and end).
    pub fn this_one() -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, model)| model.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|k| k.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let load = load();
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel,
            load_at_start: load,
            load_at_end: load,
        }
    }
}

/// The load averages from /proc/loadavg (what `uptime` prints).
pub fn load() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut fields = text.split_whitespace().map(|f| f.parse().unwrap_or(0.0));
    [(); 3].map(|()| fields.next().unwrap_or(0.0))
}

/// What the baseline of a figure measured, under the same conditions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BaselineFigure {
    #[serde(deserialize_with = "leaked")]
    pub mechanism: &'static str,
    pub value: f64,
}

/// One figure: a percentile of round trips or a throughput at one size.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Figure {
    #[serde(deserialize_with = "leaked")]
    pub mechanism: &'static str,
    /// `round-trip-p50`, `round-trip-p99` or `throughput`.
    #[serde(deserialize_with = "leaked")]
    pub metric: &'static str,
    /// `same-cpu` or `cross-cpu`.
    #[serde(deserialize_with = "leaked")]
    pub placement: &'static str,
    /// The message size, in bytes.
    pub size: usize,
    pub value: f64,
    /// `us` (microseconds per round trip) or `GiB/s`.
    #[serde(deserialize_with = "leaked")]
    pub unit: &'static str,
    /// How many timed rounds the figure comes from.
    pub samples: usize,
    /// The baseline's figure; only lab figures have one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<BaselineFigure>,
    /// `value / baseline.value`: above 1 is slower for round trips, faster for throughput.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
}

/// A measurement that gave no figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Failure {
    #[serde(deserialize_with = "leaked")]
    pub mechanism: &'static str,
    pub metric: Metric,
    #[serde(deserialize_with = "leaked")]
    pub placement: &'static str,
    #[serde(deserialize_with = "leaked")]
    pub status: &'static str,
    pub message: String,
}

/// Where a shared-memory lab overtakes the pipe.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Crossover {
    #[serde(deserialize_with = "leaked")]
    pub placement: &'static str,
    /// The smallest size from which `shared_memory` moves more bytes per second than `pipe`
    /// at every larger size measured.
    pub size: usize,
    #[serde(deserialize_with = "leaked")]
    pub shared_memory: &'static str,
    #[serde(deserialize_with = "leaked")]
    pub pipe: &'static str,
}

/// The settings as reported.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub samples: u64,
    pub warmup: u64,
    pub budget_bytes: u64,
    pub round_trip_size: usize,
    pub throughput_sizes: Vec<usize>,
    #[serde(deserialize_with = "leaked")]
    pub pinning: &'static str,
}

/// Everything `cargo grade bench` reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Whose programs were measured: `labs` or `solutions`.
    #[serde(deserialize_with = "leaked")]
    pub programs: &'static str,
    pub machine: Machine,
    pub plan: Plan,
    /// The baselines' own figures.
    pub baselines: Vec<Figure>,
    /// The labs' figures, each with its baseline and ratio.
    pub figures: Vec<Figure>,
    /// Where each shared-memory lab overtakes the pipe, in each placement where it does.
    pub crossovers: Vec<Crossover>,
    pub failures: Vec<Failure>,
}

/// The pipe that shared memory crosses.
const PIPE: &str = "raw pipe";

/// The `percent` percentile (nearest rank) of sorted values.
pub fn percentile(sorted: &[u64], percent: usize) -> u64 {
    let rank = (sorted.len() * percent).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

/// The figures of one measurement.
fn figures_of(outcome: &Outcome, samples: &[(usize, u64)]) -> Vec<Figure> {
    let mut sizes: Vec<usize> = samples.iter().map(|(s, _)| *s).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let mut figures = Vec::new();
    for size in sizes {
        let mut times: Vec<u64> = samples
            .iter()
            .filter(|(s, _)| *s == size)
            .map(|(_, t)| (*t).max(1))
            .collect();
        times.sort_unstable();
        let figure = |metric, value, unit| Figure {
            mechanism: outcome.measure.name,
            metric,
            placement: outcome.placement.name,
            size,
            value,
            unit,
            samples: times.len(),
            baseline: None,
            ratio: None,
        };
        match outcome.measure.metric {
            Metric::RoundTrip => {
                for (metric, percent) in [("round-trip-p50", 50), ("round-trip-p99", 99)] {
                    let micros = percentile(&times, percent) as f64 / 1e3;
                    figures.push(figure(metric, micros, "us"));
                }
            }
            Metric::Throughput => {
                let seconds = percentile(&times, 50) as f64 / 1e9;
                let gibs = size as f64 / seconds / f64::from(1u32 << 30);
                figures.push(figure("throughput", gibs, "GiB/s"));
            }
        }
    }
    figures
}

impl Report {
    pub fn new(
        programs: &'static str,
        machine: Machine,
        settings: &Settings,
        outcomes: &[Outcome],
    ) -> Report {
        let mut baselines = Vec::new();
        let mut labs: Vec<(&Measure, Figure)> = Vec::new();
        let mut failures = Vec::new();
        for outcome in outcomes {
            match &outcome.result {
                Ok(samples) => {
                    let figures = figures_of(outcome, samples);
                    match outcome.measure.program {
                        Program::Baseline(_) => baselines.extend(figures),
                        Program::Lab(_) => {
                            labs.extend(figures.into_iter().map(|f| (outcome.measure, f)))
                        }
                    }
                }
                Err((status, message)) => failures.push(Failure {
                    mechanism: outcome.measure.name,
                    metric: outcome.measure.metric,
                    placement: outcome.placement.name,
                    status: status.as_str(),
                    message: message.clone(),
                }),
            }
        }
        let mut figures = Vec::new();
        for (measure, figure) in labs {
            for &name in measure.baselines {
                let base = baselines.iter().find(|b| {
                    b.mechanism == name
                        && b.metric == figure.metric
                        && b.placement == figure.placement
                        && b.size == figure.size
                });
                let mut figure = figure.clone();
                match base {
                    Some(base) => {
                        figure.ratio = Some(figure.value / base.value);
                        figure.baseline = Some(BaselineFigure {
                            mechanism: name,
                            value: base.value,
                        });
                    }
                    None => failures.push(Failure {
                        mechanism: figure.mechanism,
                        metric: measure.metric,
                        placement: figure.placement,
                        status: "no-baseline",
                        message: format!(
                            "{name} has no {} figure at {} B ({}): no ratio",
                            figure.metric, figure.size, figure.placement
                        ),
                    }),
                }
                figures.push(figure);
            }
        }
        let crossovers = crossovers(&baselines, &figures);
        Report {
            programs,
            machine,
            plan: Plan {
                samples: settings.samples,
                warmup: settings.warmup,
                budget_bytes: settings.budget,
                round_trip_size: super::LATENCY_SIZE,
                throughput_sizes: settings.sizes(Metric::Throughput),
                pinning: "same-cpu: both processes on one CPU; cross-cpu: the timing process \
                          on one, its peer on another (sched_setaffinity)",
            },
            baselines,
            figures,
            crossovers,
            failures,
        }
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report serializes")
    }

    /// The report as a table for the terminal.
    pub fn table(&self) -> String {
        let m = &self.machine;
        let mut out = String::new();
        let _ = writeln!(out, "{} ({} CPUs), Linux {}", m.cpu, m.cores, m.kernel);
        let _ = writeln!(
            out,
            "load average {:.2} {:.2} {:.2} at the start, {:.2} {:.2} {:.2} at the end",
            m.load_at_start[0],
            m.load_at_start[1],
            m.load_at_start[2],
            m.load_at_end[0],
            m.load_at_end[1],
            m.load_at_end[2]
        );
        let _ = writeln!(
            out,
            "{} timed rounds per size after {} warm-up ones (at most {} MiB per size); {}",
            self.plan.samples,
            self.plan.warmup,
            self.plan.budget_bytes >> 20,
            self.plan.pinning
        );
        let _ = writeln!(
            out,
            "\nRound trips of {} B messages, microseconds (ratio: lab / baseline, above 1 is slower)",
            self.plan.round_trip_size
        );
        let _ = writeln!(
            out,
            "{:<22} {:<10} {:>9} {:>9}   {:<20} {:>7} {:>7}",
            "mechanism", "placement", "p50", "p99", "baseline", "p50 x", "p99 x"
        );
        let mut seen: Vec<(&str, &str, Option<&str>)> = Vec::new();
        for f in self.baselines.iter().chain(&self.figures) {
            let baseline = f.baseline.as_ref().map(|b| b.mechanism);
            let key = (f.mechanism, f.placement, baseline);
            if f.metric != "round-trip-p50" || seen.contains(&key) {
                continue;
            }
            seen.push(key);
            let all = if baseline.is_some() {
                &self.figures
            } else {
                &self.baselines
            };
            let p99 = all.iter().find(|g| {
                g.mechanism == f.mechanism
                    && g.placement == f.placement
                    && g.metric == "round-trip-p99"
                    && g.baseline.as_ref().map(|b| b.mechanism) == baseline
            });
            let ratio = |f: Option<&Figure>| {
                f.and_then(|f| f.ratio)
                    .map_or("-".into(), |r| format!("{r:.2}"))
            };
            let _ = writeln!(
                out,
                "{:<22} {:<10} {:>9.2} {:>9.2}   {:<20} {:>7} {:>7}",
                f.mechanism,
                f.placement,
                f.value,
                p99.map_or(f64::NAN, |p| p.value),
                baseline.unwrap_or("(baseline)"),
                ratio(Some(f)),
                ratio(p99)
            );
        }
        let _ = writeln!(
            out,
            "\nThroughput, GiB/s, by message size (ratio: lab / baseline, above 1 is faster)"
        );
        let mut series: Vec<(&str, &str, Option<&str>)> = Vec::new();
        for f in self.baselines.iter().chain(&self.figures) {
            let key = (
                f.mechanism,
                f.placement,
                f.baseline.as_ref().map(|b| b.mechanism),
            );
            if f.metric == "throughput" && !series.contains(&key) {
                series.push(key);
            }
        }
        let sizes = &self.plan.throughput_sizes;
        let _ = write!(out, "{:<40} {:<10}", "mechanism (baseline)", "placement");
        for &size in sizes {
            let _ = write!(out, " {:>8}", size_label(size));
        }
        out.push('\n');
        for (name, placement, baseline) in series {
            let label = match baseline {
                Some(base) => format!("{name} (/ {base})"),
                None => name.to_string(),
            };
            let all = if baseline.is_some() {
                &self.figures
            } else {
                &self.baselines
            };
            for show_ratio in [false, true] {
                if show_ratio && baseline.is_none() {
                    continue;
                }
                let label = if show_ratio {
                    "  ratio".to_string()
                } else {
                    label.clone()
                };
                let _ = write!(out, "{label:<40} {placement:<10}");
                for &size in sizes {
                    let figure = all.iter().find(|f| {
                        f.metric == "throughput"
                            && f.mechanism == name
                            && f.placement == placement
                            && f.size == size
                            && f.baseline.as_ref().map(|b| b.mechanism) == baseline
                    });
                    let cell = match figure {
                        Some(f) if show_ratio => f.ratio.map_or("-".into(), |r| format!("{r:.2}")),
                        Some(f) => format!("{:.3}", f.value),
                        None => "-".into(),
                    };
                    let _ = write!(out, " {cell:>8}");
                }
                out.push('\n');
            }
        }
        out.push('\n');
        for c in &self.crossovers {
            let _ = writeln!(
                out,
                "{} overtakes the {} from {} on ({})",
                c.shared_memory,
                c.pipe,
                size_label(c.size),
                c.placement
            );
        }
        if self.crossovers.is_empty() {
            let _ = writeln!(out, "no shared-memory lab overtakes the {PIPE} in this run");
        }
        for f in &self.failures {
            let _ = writeln!(
                out,
                "not measured: {} ({:?}, {}): {}: {}",
                f.mechanism,
                f.metric,
                f.placement,
                f.status,
                f.message.lines().next().unwrap_or("")
            );
        }
        out
    }
}

/// `64 B`, `4 KiB`, `16 MiB`.
pub fn size_label(size: usize) -> String {
    if size >= 1 << 20 && size.is_multiple_of(1 << 20) {
        format!("{}M", size >> 20)
    } else if size >= 1 << 10 && size.is_multiple_of(1 << 10) {
        format!("{}K", size >> 10)
    } else {
        format!("{size}")
    }
}

/// For each shared-memory lab and placement, the smallest size from which the lab beats the
/// raw pipe at every larger size measured.
fn crossovers(baselines: &[Figure], figures: &[Figure]) -> Vec<Crossover> {
    let mut crossovers = Vec::new();
    for &shared_memory in super::SHARED_MEMORY {
        for placement in ["same-cpu", "cross-cpu"] {
            let pipe = |size| {
                baselines
                    .iter()
                    .find(|f| {
                        f.mechanism == PIPE
                            && f.metric == "throughput"
                            && f.placement == placement
                            && f.size == size
                    })
                    .map(|f| f.value)
            };
            let mut shared: Vec<&Figure> = figures
                .iter()
                .filter(|f| {
                    f.mechanism == shared_memory
                        && f.metric == "throughput"
                        && f.placement == placement
                        && f.baseline.as_ref().is_some_and(|b| b.mechanism == PIPE)
                })
                .collect();
            shared.sort_by_key(|f| f.size);
            let mut from = None;
            for f in &shared {
                match pipe(f.size) {
                    Some(p) if f.value > p => {
                        from.get_or_insert(f.size);
                    }
                    _ => from = None,
                }
            }
            crossovers.extend(from.map(|size| Crossover {
                placement,
                size,
                shared_memory,
                pipe: PIPE,
            }));
        }
    }
    crossovers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_ranks() {
        let sorted: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&sorted, 50), 50);
        assert_eq!(percentile(&sorted, 99), 99);
        assert_eq!(percentile(&[7], 99), 7);
        assert_eq!(percentile(&[1, 2, 3], 50), 2);
    }

    #[test]
    fn sizes_are_labelled_in_binary_units() {
        assert_eq!(size_label(64), "64");
        assert_eq!(size_label(4096), "4K");
        assert_eq!(size_label(64 << 20), "64M");
    }
}
