//! The batch's results for the instructor: `grades.csv` (a row per submission), `checks.csv` (a
//! row per submission and check) and `report.html`, one static page (inline SVG charts drawn by
//! plotters, HTML from maud, no script) that says what the class got wrong.

use std::collections::BTreeMap;
use std::path::Path;

use maud::{DOCTYPE, Markup, PreEscaped, html};
use plotters::prelude::*;

use super::{GRADER_LOG, Outcome, REPORT_JSON, Row, SUBMISSIONS_DIR};

pub const GRADES_CSV: &str = "grades.csv";
pub const CHECKS_CSV: &str = "checks.csv";
pub const REPORT_HTML: &str = "report.html";

/// How many of a check's most frequent diagnoses the page lists.
const TOP_DIAGNOSES: usize = 3;

/// Writes the three files of the results into `out`.
pub fn write_all(out: &Path, labs: &[String], seed: u64, rows: &[Row]) -> std::io::Result<()> {
    write_grades(&out.join(GRADES_CSV), labs, rows)?;
    write_checks(&out.join(CHECKS_CSV), rows)?;
    let page = page(labs, seed, rows).map_err(std::io::Error::other)?;
    std::fs::write(out.join(REPORT_HTML), page)
}

fn write_grades(path: &Path, labs: &[String], rows: &[Row]) -> std::io::Result<()> {
    let mut writer = csv::Writer::from_path(path)?;
    let mut header: Vec<String> = vec!["id".into(), "total".into(), "max_total".into()];
    header.extend(labs.iter().cloned());
    header.extend(["wall_seconds", "status", "reason"].map(String::from));
    writer.write_record(&header)?;
    for row in rows {
        let mut record = vec![
            row.id.clone(),
            row.total.to_string(),
            row.max_total.to_string(),
        ];
        for lab in labs {
            let score = row
                .labs
                .iter()
                .find(|l| &l.lab == lab)
                .map_or(0, |l| l.score);
            record.push(score.to_string());
        }
        record.push(format!("{:.1}", row.wall_seconds));
        record.push(row.outcome.as_str().to_string());
        record.push(row.reason.clone());
        writer.write_record(&record)?;
    }
    writer.flush()
}

fn write_checks(path: &Path, rows: &[Row]) -> std::io::Result<()> {
    let mut writer = csv::Writer::from_path(path)?;
    for check in rows.iter().flat_map(|r| &r.checks) {
        writer.serialize(check).map_err(std::io::Error::other)?;
    }
    writer.flush()
}

/// A check across the class.
struct Rate {
    /// `lab/check`.
    name: String,
    passed: usize,
    graded: usize,
    /// Diagnoses of the submissions that did not pass, most frequent first, with their counts.
    diagnoses: Vec<(String, usize)>,
}

impl Rate {
    fn fraction(&self) -> f64 {
        if self.graded == 0 {
            0.0
        } else {
            self.passed as f64 / self.graded as f64
        }
    }

    fn percent(&self) -> usize {
        (self.fraction() * 100.0).round() as usize
    }
}

/// Every check's pass rate over the submissions it was graded in, lowest first.
fn rates(rows: &[Row]) -> Vec<Rate> {
    let mut by_check: BTreeMap<String, (usize, usize, BTreeMap<String, usize>)> = BTreeMap::new();
    for check in rows.iter().flat_map(|r| &r.checks) {
        let entry = by_check
            .entry(format!("{}/{}", check.lab, check.check))
            .or_default();
        entry.1 += 1;
        if check.status == "passed" {
            entry.0 += 1;
        } else {
            *entry.2.entry(check.diagnosis.clone()).or_default() += 1;
        }
    }
    let mut rates: Vec<Rate> = by_check
        .into_iter()
        .map(|(name, (passed, graded, diagnoses))| {
            let mut diagnoses: Vec<(String, usize)> = diagnoses.into_iter().collect();
            diagnoses.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            Rate {
                name,
                passed,
                graded,
                diagnoses,
            }
        })
        .collect();
    rates.sort_by(|a, b| {
        a.fraction()
            .total_cmp(&b.fraction())
            .then_with(|| a.name.cmp(&b.name))
    });
    rates
}

fn draw_error(error: impl std::fmt::Display) -> String {
    format!("drawing a chart: {error}")
}

const CHART_FONT: (&str, u32) = ("sans-serif", 13);

/// A horizontal bar per check: its name, its pass rate as a bar, and `passed/graded passed`.
fn pass_rate_chart(rates: &[Rate]) -> Result<String, String> {
    const ROW: i32 = 22;
    const NAME_WIDTH: i32 = 380;
    const BAR_WIDTH: i32 = 360;
    let height = 40 + ROW * rates.len() as i32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, height as u32)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let font = CHART_FONT.into_font();
        root.draw(&Text::new(
            "Pass rate of each check, lowest first",
            (10, 8),
            ("sans-serif", 16).into_font(),
        ))
        .map_err(draw_error)?;
        for (index, rate) in rates.iter().enumerate() {
            let top = 34 + ROW * index as i32;
            let bottom = top + ROW - 6;
            root.draw(&Text::new(rate.name.clone(), (10, top + 2), font.clone()))
                .map_err(draw_error)?;
            let left = NAME_WIDTH;
            root.draw(&Rectangle::new(
                [(left, top), (left + BAR_WIDTH, bottom)],
                RGBColor(230, 230, 230).filled(),
            ))
            .map_err(draw_error)?;
            let filled = (rate.fraction() * f64::from(BAR_WIDTH)).round() as i32;
            if filled > 0 {
                let color = if rate.fraction() < 0.5 {
                    RGBColor(200, 70, 60)
                } else {
                    RGBColor(60, 140, 80)
                };
                root.draw(&Rectangle::new(
                    [(left, top), (left + filled, bottom)],
                    color.filled(),
                ))
                .map_err(draw_error)?;
            }
            root.draw(&Text::new(
                format!(
                    "{}/{} passed ({}%)",
                    rate.passed,
                    rate.graded,
                    rate.percent()
                ),
                (left + BAR_WIDTH + 10, top + 2),
                font.clone(),
            ))
            .map_err(draw_error)?;
        }
        root.present().map_err(draw_error)?;
    }
    Ok(svg)
}

/// How many submissions scored in each range of totals.
fn distribution(rows: &[Row]) -> Vec<(String, usize)> {
    let graded: Vec<&Row> = rows.iter().filter(|r| r.max_total > 0).collect();
    let max = graded.iter().map(|r| r.max_total).max().unwrap_or(0);
    if max == 0 {
        return Vec::new();
    }
    let buckets = (max + 1).min(20);
    let width = (max + 1).div_ceil(buckets);
    let count = (max / width + 1) as usize;
    let mut counts = vec![0usize; count];
    for row in &graded {
        counts[(row.total / width) as usize] += 1;
    }
    counts
        .into_iter()
        .enumerate()
        .map(|(index, n)| {
            let low = index as u32 * width;
            let high = (low + width - 1).min(max);
            let label = if low == high {
                low.to_string()
            } else {
                format!("{low}-{high}")
            };
            (label, n)
        })
        .collect()
}

/// A vertical bar per range of totals, its count above it.
fn distribution_chart(buckets: &[(String, usize)]) -> Result<String, String> {
    const WIDTH: i32 = 900;
    const PLOT_TOP: i32 = 50;
    const PLOT_BOTTOM: i32 = 250;
    let highest = buckets.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1);
    let slot = (WIDTH - 40) / buckets.len().max(1) as i32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH as u32, 290)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let font = CHART_FONT.into_font();
        root.draw(&Text::new(
            "Score distribution: submissions by total score",
            (10, 8),
            ("sans-serif", 16).into_font(),
        ))
        .map_err(draw_error)?;
        root.draw(&PathElement::new(
            vec![(20, PLOT_BOTTOM), (WIDTH - 20, PLOT_BOTTOM)],
            BLACK,
        ))
        .map_err(draw_error)?;
        for (index, (label, count)) in buckets.iter().enumerate() {
            let left = 20 + slot * index as i32 + 2;
            let right = left + slot - 4;
            let height = (PLOT_BOTTOM - PLOT_TOP) * *count as i32 / highest as i32;
            if *count > 0 {
                root.draw(&Rectangle::new(
                    [(left, PLOT_BOTTOM - height), (right, PLOT_BOTTOM)],
                    RGBColor(70, 110, 180).filled(),
                ))
                .map_err(draw_error)?;
                root.draw(&Text::new(
                    count.to_string(),
                    (left + 2, PLOT_BOTTOM - height - 16),
                    font.clone(),
                ))
                .map_err(draw_error)?;
            }
            root.draw(&Text::new(
                label.clone(),
                (left + 2, PLOT_BOTTOM + 8),
                font.clone(),
            ))
            .map_err(draw_error)?;
        }
        root.present().map_err(draw_error)?;
    }
    Ok(svg)
}

const STYLE: &str = "
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.number { text-align: right; }
tr.failed td { background: #fff2f0; }
figure { margin: 1em 0; }
";

fn page(labs: &[String], seed: u64, rows: &[Row]) -> Result<String, String> {
    let rates = rates(rows);
    let buckets = distribution(rows);
    let distribution_svg = if buckets.is_empty() {
        None
    } else {
        Some(distribution_chart(&buckets)?)
    };
    let rates_svg = if rates.is_empty() {
        None
    } else {
        Some(pass_rate_chart(&rates)?)
    };
    let failed = rows.iter().filter(|r| r.outcome != Outcome::Graded).count();
    let markup: Markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "Class report" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { "Class report" }
                p {
                    (rows.len()) " submissions, " (failed) " with a failure of their own (see "
                    "their status); labs " (labs.join(", ")) "; seed " (seed) "."
                }
                h2 { "Score distribution" }
                @match &distribution_svg {
                    Some(svg) => figure id="distribution" { (PreEscaped(svg)) },
                    None => p { "No submission was graded." },
                }
                h2 { "Pass rate of each check" }
                @match &rates_svg {
                    Some(svg) => figure id="pass-rates" { (PreEscaped(svg)) },
                    None => p { "No check was graded." },
                }
                h2 { "Most frequent diagnoses" }
                table {
                    tr { th { "check" } th { "submissions" } th { "first line of the diagnosis" } }
                    @for rate in rates.iter().filter(|r| !r.diagnoses.is_empty()) {
                        @for (index, (diagnosis, count)) in rate.diagnoses.iter().take(TOP_DIAGNOSES).enumerate() {
                            tr {
                                td { @if index == 0 { (rate.name) } }
                                td.number { (count) }
                                td { (diagnosis) }
                            }
                        }
                    }
                }
                h2 { "Submissions" }
                table {
                    tr {
                        th { "submission" } th { "total" }
                        @for lab in labs { th { (lab) } }
                        th { "status" } th { "wall time (s)" } th { "reason" } th { "logs" }
                    }
                    @for row in rows {
                        @let folder = format!("{SUBMISSIONS_DIR}/{}", row.id);
                        tr.failed[row.outcome != Outcome::Graded] {
                            td {
                                @if row.checks.is_empty() {
                                    (row.id)
                                } @else {
                                    a href=(format!("{folder}/{REPORT_JSON}")) { (row.id) }
                                }
                            }
                            td.number { (row.total) "/" (row.max_total) }
                            @for lab in labs {
                                td.number {
                                    (row.labs.iter().find(|l| &l.lab == lab).map_or(0, |l| l.score))
                                }
                            }
                            td { (row.outcome.as_str()) }
                            td.number { (format!("{:.1}", row.wall_seconds)) }
                            td { (row.reason) }
                            td {
                                @if !row.checks.is_empty() {
                                    a href=(format!("{folder}/logs/")) { "checks" } " "
                                }
                                a href=(format!("{folder}/{GRADER_LOG}")) { "grader" }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(markup.into_string())
}

#[cfg(test)]
mod tests {
    use super::super::{CheckRow, LabScore};
    use super::*;

    fn row(id: &str, passed: &[bool]) -> Row {
        let checks: Vec<CheckRow> = passed
            .iter()
            .enumerate()
            .map(|(i, &ok)| CheckRow {
                submission: id.into(),
                lab: "pipe-echo".into(),
                check: format!("c{i}"),
                status: if ok { "passed" } else { "failed" }.into(),
                score: u32::from(ok),
                max_score: 1,
                diagnosis: if ok { "fine" } else { "wrong <bytes>" }.into(),
            })
            .collect();
        let total = checks.iter().map(|c| c.score).sum();
        Row {
            id: id.into(),
            source: id.into(),
            outcome: Outcome::Graded,
            reason: String::new(),
            wall_seconds: 1.0,
            total,
            max_total: checks.len() as u32,
            labs: vec![LabScore {
                lab: "pipe-echo".into(),
                score: total,
                max_score: checks.len() as u32,
            }],
            checks,
        }
    }

    #[test]
    fn rates_come_lowest_first_with_their_diagnoses_counted() {
        let rows = [
            row("a", &[true, false]),
            row("b", &[true, false]),
            row("c", &[false, true]),
        ];
        let rates = rates(&rows);
        let names: Vec<&str> = rates.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["pipe-echo/c1", "pipe-echo/c0"]);
        assert_eq!((rates[0].passed, rates[0].graded), (1, 3));
        assert_eq!(rates[0].diagnoses, [("wrong <bytes>".to_string(), 2)]);
    }

    #[test]
    fn the_distribution_counts_every_graded_submission_once() {
        let rows = [
            row("a", &[true, true]),
            row("b", &[true, false]),
            row("c", &[true, true]),
        ];
        let buckets = distribution(&rows);
        assert_eq!(
            buckets,
            [
                ("0".to_string(), 0),
                ("1".to_string(), 1),
                ("2".to_string(), 2)
            ]
        );
    }

    #[test]
    fn the_page_escapes_diagnoses_and_holds_no_script() {
        let rows = [row("a", &[true, false])];
        let page = page(&["pipe-echo".into()], 7, &rows).unwrap();
        assert!(page.contains("wrong &lt;bytes&gt;"), "{page}");
        assert!(!page.contains("<script"));
        assert!(page.contains("1/1 passed (100%)"));
        assert!(page.contains("submissions/a/report.json"));
    }
}
