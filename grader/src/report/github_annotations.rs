//! `--format github-annotations`: GitHub workflow commands, one `::error` per check that did not
//! pass, on the lab's source file, so that the diagnosis shows on the run and in the diff.

use std::fmt::Write;

use super::{Context, checks, source_line};
use crate::engine::{Report, Status};

pub fn render(report: &Report, context: &Context) -> String {
    let mut text = String::new();
    for (lab, check) in checks(report) {
        if check.status == Status::Passed {
            continue;
        }
        let file = context.source(&lab.name);
        let mut properties = format!("file={}", property(&file));
        if let Some(line) = source_line(&check.message, &file) {
            let _ = write!(properties, ",line={line}");
        }
        let title = format!("{}/{}", lab.name, check.name);
        let _ = writeln!(
            text,
            "::error {properties},title={}::{}",
            property(&title),
            data(&check.message)
        );
    }
    text
}

/// A command's message, escaped as GitHub's runner unescapes it: a newline cannot end the
/// command and start another.
fn data(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// A command's property value: also no `:` (which ends the properties) nor `,` (which ends
/// the value).
fn property(text: &str) -> String {
    data(text).replace(':', "%3A").replace(',', "%2C")
}

#[cfg(test)]
mod tests {
    use super::{data, property};
    use crate::report::tests::{HOSTILE, context, every_outcome};
    use crate::report::{Format, render};

    /// What GitHub's runner makes of an escaped message.
    fn unescape(text: &str) -> String {
        text.replace("%0A", "\n")
            .replace("%0D", "\r")
            .replace("%3A", ":")
            .replace("%2C", ",")
            .replace("%25", "%")
    }

    #[test]
    fn one_command_per_check_that_did_not_pass() {
        let text = render(Format::GithubAnnotations, &every_outcome(), &context());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        for line in &lines {
            assert!(line.starts_with("::error file=labs/0"), "{line}");
        }
        let hostile = lines
            .iter()
            .find(|l| l.contains("title=pipe-echo/echo-1-byte::"))
            .expect("the failed check's annotation");
        assert!(hostile.starts_with("::error file=labs/01-pipe-echo/src/lib.rs,title="));
        let message = hostile.split_once("echo-1-byte::").unwrap().1;
        assert_eq!(unescape(message), HOSTILE);
        let todo = lines.iter().find(|l| l.contains("echo-4-kib")).unwrap();
        assert!(todo.contains(",line=96,"), "{todo}");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("::error file=labs/04-sysv-shm/src/lib.rs,"))
        );
        assert!(
            !text.contains("echo-0-bytes"),
            "a passed check has no annotation"
        );
    }

    #[test]
    fn escapes_follow_the_runner() {
        assert_eq!(data("100%\r\n::x"), "100%25%0D%0A::x");
        assert_eq!(property("a:b,c%"), "a%3Ab%2Cc%25");
    }
}
