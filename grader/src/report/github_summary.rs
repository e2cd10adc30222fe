//! `--format github-summary`: Markdown for `$GITHUB_STEP_SUMMARY`, the page a workflow run
//! shows: the total, then a row per check.

use std::fmt::Write;

use super::{checks, first_line};
use crate::engine::Report;

pub fn render(report: &Report) -> String {
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
        "\nSeed {0}: grading again with `--seed {0}` reproduces every check's inputs.",
        report.seed
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
    use crate::report::tests::{context, every_outcome};
    use crate::report::{Format, render};

    /// The `|` that separate a row's cells (not the escaped ones).
    fn separators(row: &str) -> usize {
        let mut count = 0;
        let mut escaped = false;
        for c in row.chars() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '|' => count += 1,
                _ => {}
            }
        }
        count
    }

    #[test]
    fn the_total_then_a_whole_row_per_check() {
        let text = render(Format::GithubSummary, &every_outcome(), &context());
        assert!(text.starts_with("## cargo grade: 1/13\n"), "{text}");
        let rows: Vec<&str> = text.lines().filter(|l| l.starts_with('|')).collect();
        assert_eq!(rows.len(), 2 + 6, "{text}");
        for row in &rows {
            assert_eq!(separators(row), 6, "{row}");
        }
        let hostile = rows
            .iter()
            .find(|r| r.contains("echo-1-byte"))
            .expect("the failed check's row");
        assert!(hostile.contains("| 0/2 | failed |"), "{hostile}");
        assert!(
            hostile.contains("the echo differs \\| 100% &lt;b&gt;&amp;amp;"),
            "{hostile}"
        );
        assert!(
            !hostile.contains("injected"),
            "only the first line: {hostile}"
        );
        assert!(!text.contains("<b>"));
        assert!(
            rows.iter()
                .any(|r| r.contains("| timed_out | timed out: nobody reads |"))
        );
    }

    #[test]
    fn a_cell_keeps_its_row_whole() {
        assert_eq!(cell("a|b"), "a\\|b");
        assert_eq!(cell("a\\|b"), "a\\\\\\|b");
        assert_eq!(cell("`x`"), "\\`x\\`");
        assert_eq!(cell("<b>&"), "&lt;b&gt;&amp;");
        assert_eq!(cell("a\nb\rc\x1bd"), "a b c d");
    }
}
