//! The report as a Markdown page, `bench.md` beside `bench.json` and the chart: the machine,
//! the plan, a table of round trips and a table of throughputs per placement, every lab figure
//! with its ratio to its baselines. The book's reference figures are such a page.

use std::fmt::Write;

use super::figures::{Figure, Report};
use super::{MEASURES, Program, chart};

/// `value` to about three significant digits: `5.23`, `10.0`, `4295`, `0.123`.
fn number(value: f64) -> String {
    if !value.is_finite() {
        return "-".into();
    }
    let magnitude = if value == 0.0 {
        0
    } else {
        value.abs().log10().floor().clamp(-6.0, 6.0) as i32
    };
    let decimals = (2 - magnitude).clamp(0, 6) as usize;
    format!("{value:.decimals$}")
}

/// `64 B`, `4 KiB`, `16 MiB`.
fn size_words(size: usize) -> String {
    if size >= 1 << 20 && size.is_multiple_of(1 << 20) {
        format!("{} MiB", size >> 20)
    } else if size >= 1 << 10 && size.is_multiple_of(1 << 10) {
        format!("{} KiB", size >> 10)
    } else {
        format!("{size} B")
    }
}

/// The placements measured, in report order.
fn placements(report: &Report) -> Vec<&'static str> {
    let mut placements: Vec<&'static str> = Vec::new();
    for f in report.baselines.iter().chain(&report.figures) {
        if !placements.contains(&f.placement) {
            placements.push(f.placement);
        }
    }
    placements
}

/// One line of a table: a mechanism and, for a lab, its baselines.
struct Row {
    mechanism: &'static str,
    baselines: Vec<&'static str>,
}

/// The mechanisms with a figure of `metric`, baselines first, each once.
fn rows(report: &Report, metric: &str) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    for f in report.baselines.iter().chain(&report.figures) {
        if f.metric != metric {
            continue;
        }
        let row = match rows.iter_mut().find(|r| r.mechanism == f.mechanism) {
            Some(row) => row,
            None => {
                rows.push(Row {
                    mechanism: f.mechanism,
                    baselines: Vec::new(),
                });
                rows.last_mut().expect("just pushed")
            }
        };
        if let Some(base) = &f.baseline
            && !row.baselines.contains(&base.mechanism)
        {
            row.baselines.push(base.mechanism);
        }
    }
    rows
}

/// The figure of `mechanism` (divided by `baseline`, for a lab) in `placement` at `size`.
fn find<'a>(
    report: &'a Report,
    mechanism: &str,
    baseline: Option<&str>,
    metric: &str,
    placement: &str,
    size: usize,
) -> Option<&'a Figure> {
    report.baselines.iter().chain(&report.figures).find(|f| {
        f.mechanism == mechanism
            && f.metric == metric
            && f.placement == placement
            && f.size == size
            && f.baseline.as_ref().map(|b| b.mechanism) == baseline
    })
}

impl Report {
    /// The report as a Markdown page.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(out, "# Benchmark figures\n");
        paragraph(
            &mut out,
            &format!(
                "`cargo grade bench` of `{}/`, on {} ({} CPUs), Linux {}. Load average {} at the \
                 start, {} at the end. {} timed rounds per size after {} warm-up ones, at most {} \
                 timed per size. Placements: {}. Every figure, with its unit, its baseline and \
                 its ratio: [bench.json](bench.json).",
                self.programs,
                m.cpu,
                m.cores,
                m.kernel,
                loads(m.load_at_start),
                loads(m.load_at_end),
                self.plan.samples,
                self.plan.warmup,
                size_words(self.plan.budget_bytes as usize),
                self.plan.pinning,
            ),
        );
        self.round_trips(&mut out);
        self.throughputs(&mut out);
        self.not_measured(&mut out);
        out
    }

    fn round_trips(&self, out: &mut String) {
        let rows = rows(self, "round-trip-p50");
        if rows.is_empty() {
            return;
        }
        let placements = placements(self);
        let _ = writeln!(out, "## Round trips\n");
        paragraph(
            out,
            &format!(
                "{}-byte messages, microseconds. A lab's ratio is its p50 over its baseline's, \
                 measured in the same run: above 1 is slower.",
                self.plan.round_trip_size
            ),
        );
        let mut header = String::from("| mechanism | baseline |");
        let mut rule = String::from("| --- | --- |");
        for placement in &placements {
            let _ = write!(header, " {placement} p50 | p99 | ratio |");
            rule.push_str(" ---: | ---: | ---: |");
        }
        let _ = writeln!(out, "{header}\n{rule}");
        let size = self.plan.round_trip_size;
        for row in rows {
            let bases: Vec<Option<&str>> = if row.baselines.is_empty() {
                vec![None]
            } else {
                row.baselines.iter().map(|b| Some(*b)).collect()
            };
            for base in bases {
                let _ = write!(out, "| {} | {} |", row.mechanism, base.unwrap_or(""));
                for placement in &placements {
                    let p50 = find(self, row.mechanism, base, "round-trip-p50", placement, size);
                    let p99 = find(self, row.mechanism, base, "round-trip-p99", placement, size);
                    let value = |f: Option<&Figure>| f.map_or("-".into(), |f| number(f.value));
                    let ratio = p50
                        .and_then(|f| f.ratio)
                        .map_or(String::new(), |r| format!("{r:.2}"));
                    let _ = write!(out, " {} | {} | {ratio} |", value(p50), value(p99));
                }
                out.push('\n');
            }
        }
        out.push('\n');
    }

    fn throughputs(&self, out: &mut String) {
        let rows = rows(self, "throughput");
        if rows.is_empty() {
            return;
        }
        let _ = writeln!(out, "## Throughput\n");
        paragraph(
            out,
            "GiB/s by message size. After a lab's figure, in brackets, its ratio to each of its \
             baselines (named in its column's title), measured in the same run: above 1 is \
             faster.",
        );
        for placement in placements(self) {
            let _ = writeln!(out, "### {placement}\n");
            let mut header = String::from("| size |");
            let mut rule = String::from("| ---: |");
            for row in &rows {
                if row.baselines.is_empty() {
                    let _ = write!(header, " {} |", row.mechanism);
                } else {
                    let _ = write!(
                        header,
                        " {} (/ {}) |",
                        row.mechanism,
                        row.baselines.join(", ")
                    );
                }
                rule.push_str(" ---: |");
            }
            let _ = writeln!(out, "{header}\n{rule}");
            for &size in &self.plan.throughput_sizes {
                let _ = write!(out, "| {} |", size_words(size));
                for row in &rows {
                    let cell = if row.baselines.is_empty() {
                        find(self, row.mechanism, None, "throughput", placement, size)
                            .map_or("-".into(), |f| number(f.value))
                    } else {
                        let divided: Vec<&Figure> = row
                            .baselines
                            .iter()
                            .filter_map(|b| {
                                find(self, row.mechanism, Some(b), "throughput", placement, size)
                            })
                            .collect();
                        match divided.first() {
                            None => "-".into(),
                            Some(first) => {
                                let ratios: Vec<String> = divided
                                    .iter()
                                    .map(|f| f.ratio.map_or("-".into(), |r| format!("{r:.2}")))
                                    .collect();
                                format!("{} ({})", number(first.value), ratios.join(", "))
                            }
                        }
                    };
                    let _ = write!(out, " {cell} |");
                }
                out.push('\n');
            }
            out.push('\n');
        }
        if let Some(placement) = chart::placement(self) {
            let _ = writeln!(
                out,
                "![Throughput against message size, {placement}](throughput.svg)\n"
            );
        }
        for c in &self.crossovers {
            let _ = writeln!(
                out,
                "- {} overtakes the {} from {} on ({}).",
                c.shared_memory,
                c.pipe,
                size_words(c.size),
                c.placement
            );
        }
        if self.crossovers.is_empty() {
            let _ = writeln!(
                out,
                "- No shared-memory lab overtakes the raw pipe in this run."
            );
        }
        out.push('\n');
    }

    fn not_measured(&self, out: &mut String) {
        let mut absent: Vec<&str> = Vec::new();
        for measure in MEASURES {
            let in_run = self
                .figures
                .iter()
                .map(|f| f.mechanism)
                .chain(self.failures.iter().map(|f| f.mechanism))
                .any(|name| name == measure.name);
            if matches!(measure.program, Program::Lab(_))
                && !in_run
                && !absent.contains(&measure.name)
            {
                absent.push(measure.name);
            }
        }
        if self.failures.is_empty() && absent.is_empty() {
            return;
        }
        let _ = writeln!(out, "## Not measured\n");
        for f in &self.failures {
            let _ = writeln!(
                out,
                "- {} ({}, {}): {}: {}",
                f.mechanism,
                match f.metric {
                    super::Metric::RoundTrip => "round trip",
                    super::Metric::Throughput => "throughput",
                },
                f.placement,
                f.status,
                f.message.lines().next().unwrap_or("")
            );
        }
        if !absent.is_empty() {
            let _ = writeln!(out, "- Not in this run: {}.", absent.join(", "));
        }
        out.push('\n');
    }
}

/// The widest line of a paragraph, as the book's pages are written.
const WIDTH: usize = 100;

/// Whether a line that starts with `word` would start a list, a heading or a quote instead of
/// going on with the paragraph.
fn starts_a_block(word: &str) -> bool {
    let number = word.trim_end_matches(['.', ')']);
    ["-", "+", "*", ">"].contains(&word)
        || word.starts_with('#')
        || (number.len() < word.len() && number.chars().all(|c| c.is_ascii_digit()))
}

/// `text` as a paragraph: lines of at most [`WIDTH`] characters (a longer word alone, or a word
/// that would start a block kept on the line before), then a blank line.
fn paragraph(out: &mut String, text: &str) {
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty()
            && line.chars().count() + 1 + word.chars().count() > WIDTH
            && !starts_a_block(word)
        {
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&line);
    out.push_str("\n\n");
}

/// `9.42 / 10.63 / 12.23`.
fn loads(load: [f64; 3]) -> String {
    format!("{:.2} / {:.2} / {:.2}", load[0], load[1], load[2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_about_three_significant_digits() {
        assert_eq!(number(5.228), "5.23");
        assert_eq!(number(10.005), "10.0");
        assert_eq!(number(4295.4), "4295");
        assert_eq!(number(0.1234), "0.123");
        assert_eq!(number(0.0), "0.00");
        assert_eq!(number(f64::NAN), "-");
    }

    #[test]
    fn paragraphs_are_wrapped_at_the_width_of_the_pages() {
        let mut out = String::new();
        let text = "word ".repeat(30);
        paragraph(&mut out, &text);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines, [&text[..99], &text[100..149], ""]);
        let mut out = String::new();
        paragraph(&mut out, &format!("{}- 12. 3) #4 x", "word ".repeat(19)));
        assert_eq!(out, format!("{}- 12. 3) #4\nx\n\n", "word ".repeat(19)));
    }

    #[test]
    fn sizes_are_written_in_binary_units() {
        assert_eq!(size_words(64), "64 B");
        assert_eq!(size_words(64 << 10), "64 KiB");
        assert_eq!(size_words(16 << 20), "16 MiB");
    }
}
