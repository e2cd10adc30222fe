//! The chart: throughput against message size, log-log, every mechanism and baseline on one
//! picture (the cross-CPU placement if measured), with the size where each shared-memory lab
//! overtakes the pipe marked.

use std::path::Path;

use plotters::prelude::*;

use super::figures::{Figure, Report, size_label};

/// Why the chart could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("no throughput was measured: there is nothing to chart")]
    Empty,
    #[error("drawing {0}: {1}")]
    Draw(String, String),
}

/// One line of the chart: its label and its points (size, GiB/s).
type Series = (String, Vec<(f64, f64)>);

fn series(report: &Report, placement: &str) -> Vec<Series> {
    let mut lines: Vec<Series> = Vec::new();
    let lab_figures = report
        .figures
        .iter()
        // A lab figure appears once per baseline; one line per mechanism is enough.
        .filter(|f| {
            let first = report.figures.iter().find(|g| {
                g.mechanism == f.mechanism && g.metric == f.metric && g.placement == f.placement
            });
            first.and_then(|g| g.baseline.as_ref()).map(|b| b.mechanism)
                == f.baseline.as_ref().map(|b| b.mechanism)
        });
    let all: Vec<&Figure> = report.baselines.iter().chain(lab_figures).collect();
    for f in all {
        if f.metric != "throughput"
            || f.placement != placement
            || f.value.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
        {
            continue;
        }
        let label = f.mechanism.to_string();
        match lines.iter_mut().find(|(l, _)| *l == label) {
            Some((_, points)) => points.push((f.size as f64, f.value)),
            None => lines.push((label, vec![(f.size as f64, f.value)])),
        }
    }
    lines
}

/// The placement the chart shows: cross-cpu if its throughput was measured (there the copies
/// of the two sides can overlap), else same-cpu.
pub fn placement(report: &Report) -> Option<&'static str> {
    ["cross-cpu", "same-cpu"]
        .into_iter()
        .find(|p| !series(report, p).is_empty())
}

/// Draws the chart into an SVG file at `path`.
pub fn draw(report: &Report, path: &Path) -> Result<(), ChartError> {
    let placement = placement(report).ok_or(ChartError::Empty)?;
    let lines = series(report, placement);
    let points = lines.iter().flat_map(|(_, p)| p.iter());
    let (mut min_x, mut max_x, mut min_y, mut max_y) = (f64::MAX, 0f64, f64::MAX, 0f64);
    for &(x, y) in points {
        min_x = min_x.min(x);
        max_x = max_x.max(x);
        min_y = min_y.min(y);
        max_y = max_y.max(y);
    }
    if lines.is_empty() {
        return Err(ChartError::Empty);
    }
    let draw_error =
        |e: &dyn std::fmt::Display| ChartError::Draw(path.display().to_string(), e.to_string());
    let root = SVGBackend::new(path, (1000, 650)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_error(&e))?;
    let caption = format!(
        "Throughput by message size ({placement}), {} ({} CPUs)",
        report.machine.cpu, report.machine.cores
    );
    let x_range = (min_x / 1.5)..(max_x * 1.5);
    let y_range = (min_y / 2.0)..(max_y * 2.0);
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(x_range.clone().log_scale(), y_range.clone().log_scale())
        .map_err(|e| draw_error(&e))?;
    chart
        .configure_mesh()
        .x_desc("message size (bytes)")
        .y_desc("GiB/s")
        .x_label_formatter(&|x| size_label(*x as usize))
        .y_label_formatter(&|y| format!("{y}"))
        .draw()
        .map_err(|e| draw_error(&e))?;
    let color_of = |label: &str| {
        let index = lines.iter().position(|(l, _)| l == label).unwrap_or(0);
        Palette99::pick(index).to_rgba()
    };
    for (label, points) in &lines {
        let color = color_of(label);
        let dashed = !report.figures.iter().any(|f| f.mechanism == *label);
        let style = ShapeStyle {
            color,
            filled: false,
            stroke_width: if dashed { 1 } else { 3 },
        };
        chart
            .draw_series(LineSeries::new(points.iter().copied(), style))
            .map_err(|e| draw_error(&e))?
            .label(if dashed {
                format!("{label} (baseline)")
            } else {
                label.clone()
            })
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(|e| draw_error(&e))?;
    }
    for crossover in report
        .crossovers
        .iter()
        .filter(|c| c.placement == placement)
    {
        let x = crossover.size as f64;
        // A thin line in the colour of the lab that crosses.
        let style = ShapeStyle {
            color: color_of(crossover.shared_memory),
            filled: false,
            stroke_width: 1,
        };
        chart
            .draw_series(LineSeries::new(
                [(x, y_range.start), (x, y_range.end)],
                style,
            ))
            .map_err(|e| draw_error(&e))?
            .label(format!(
                "{} overtakes the {} at {}",
                crossover.shared_memory,
                crossover.pipe,
                size_label(crossover.size)
            ))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        // Bottom right: every line is low at small sizes, and rises with the size.
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| draw_error(&e))?;
    root.present().map_err(|e| draw_error(&e))?;
    Ok(())
}
