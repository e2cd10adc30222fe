//! `--format github-summary`: Markdown for `$GITHUB_STEP_SUMMARY`, the page a workflow run
//! shows: the total, then a row per check.

use std::fmt::Write;

use super::{Context, checks, first_line};
use crate::engine::Report;

pub fn render(report: &Report, _context: &Context) -> String {
    let mut text = format!("## cargo grade: {}/{}\n\n", report.score, report.max_score);
    if let Some(signal) = &report.interrupted {
        let _ = writeln!(
            text,
            "Interrupted by {signal}: only the checks graded before it are listed.\n"
        );
    }
    text.push_str("| lab | check | points | status | diagnosis |\n");
    text.push_str("| --- | --- | ---: | --- | --- |\n");
    for (lab, check) in checks(report) {
        let _ = writeln!(
            text,
            "| {} | {} | {}/{} | {} | {} |",
            cell(&lab.name),
            cell(&check.name),
            check.score,
            check.max_score,
            check.status.as_str(),
            cell(first_line(&check.message))
        );
    }
    let _ = writeln!(
        text,
        "\nSeed {}: `cargo grade --seed {}` reproduces every check's inputs.",
        report.seed, report.seed
    );
    text
}

/// `text` as one table cell that shows it verbatim: no character of it can end the cell or
/// the row, open a code span, or be taken for HTML.
fn cell(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '|' => escaped.push_str("\\|"),
            '`' => escaped.push_str("\\`"),
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            c if c.is_control() => escaped.push(' '),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::cell;

    #[test]
    fn a_cell_keeps_its_row_whole() {
        assert_eq!(cell("a|b"), "a\\|b");
        assert_eq!(cell("a\\|b"), "a\\\\\\|b");
        assert_eq!(cell("`x`"), "\\`x\\`");
        assert_eq!(cell("<b>&"), "&lt;b&gt;&amp;");
        assert_eq!(cell("a\nb\rc\x1bd"), "a b c d");
    }
}
