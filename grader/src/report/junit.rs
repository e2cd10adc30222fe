//! `--format junit`: JUnit XML, which CI dashboards read: a test suite per lab, a test case per
//! check.

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesText, Event};

use super::{checks, first_line, grader_failed};
use crate::engine::{CheckResult, LabResult, Report, Status};

pub fn render(report: &Report) -> String {
    let mut writer = Writer::new_with_indent(Vec::new(), b' ', 2);
    write(&mut writer, report).expect("writing to memory does not fail");
    String::from_utf8(writer.into_inner()).expect("the XML is UTF-8") + "\n"
}

fn write(writer: &mut Writer<Vec<u8>>, report: &Report) -> std::io::Result<()> {
    writer.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    let all: Vec<&CheckResult> = checks(report).map(|(_, check)| check).collect();
    let (tests, failures, errors, time) = counts(&all);
    writer
        .create_element("testsuites")
        .with_attributes([
            ("name", "cargo grade"),
            ("tests", &tests),
            ("failures", &failures),
            ("errors", &errors),
            ("time", &time),
        ])
        .write_inner_content(|writer| {
            for lab in &report.labs {
                suite(writer, lab)?;
            }
            Ok(())
        })?;
    Ok(())
}

fn suite(writer: &mut Writer<Vec<u8>>, lab: &LabResult) -> std::io::Result<()> {
    let all: Vec<&CheckResult> = lab.checks.iter().collect();
    let (tests, failures, errors, time) = counts(&all);
    writer
        .create_element("testsuite")
        .with_attributes([
            ("name", lab.name.as_str()),
            ("tests", &tests),
            ("failures", &failures),
            ("errors", &errors),
            ("time", &time),
        ])
        .write_inner_content(|writer| {
            for check in &lab.checks {
                let case = writer.create_element("testcase").with_attributes([
                    ("classname", lab.name.as_str()),
                    ("name", check.name.as_str()),
                    ("time", &seconds(check.duration_ms)),
                ]);
                if check.status == Status::Passed {
                    case.write_empty()?;
                    continue;
                }
                case.write_inner_content(|writer| {
                    let element = if grader_failed(check) {
                        "error"
                    } else {
                        "failure"
                    };
                    writer
                        .create_element(element)
                        .with_attributes([
                            ("message", xml_chars(first_line(&check.message)).as_str()),
                            ("type", check.status.as_str()),
                        ])
                        .write_text_content(BytesText::new(&xml_chars(&check.message)))?;
                    Ok(())
                })?;
            }
            Ok(())
        })?;
    Ok(())
}

/// Tests, failures, errors (the grader's own), and seconds, as attribute values.
fn counts(checks: &[&CheckResult]) -> (String, String, String, String) {
    let not_passed = checks.iter().filter(|c| c.status != Status::Passed);
    let errors = not_passed.clone().filter(|c| grader_failed(c)).count();
    let failures = not_passed.count() - errors;
    let millis: u64 = checks.iter().map(|c| c.duration_ms).sum();
    (
        checks.len().to_string(),
        failures.to_string(),
        errors.to_string(),
        seconds(millis),
    )
}

fn seconds(millis: u64) -> String {
    format!("{:.3}", millis as f64 / 1000.0)
}

/// `text` without the characters XML 1.0 forbids (program output can hold any byte).
fn xml_chars(text: &str) -> String {
    text.chars()
        .filter(|&c| {
            matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && !matches!(c, '\u{FFFE}' | '\u{FFFF}'))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::xml_chars;

    #[test]
    fn forbidden_characters_are_dropped() {
        assert_eq!(
            xml_chars("a\x00b\x1bc\td\u{FFFE}e\n"),
            "abc\td".to_string() + "e\n"
        );
    }
}
