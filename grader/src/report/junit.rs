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
    use std::collections::BTreeMap;

    use quick_xml::events::Event;
    use quick_xml::{Reader, XmlVersion};

    use super::xml_chars;
    use crate::engine::Status;
    use crate::report::tests::{HOSTILE, context, every_outcome};
    use crate::report::{Format, render};

    #[test]
    fn forbidden_characters_are_dropped() {
        assert_eq!(xml_chars("a\x00b\x1bc\td\u{FFFE}e\n"), "abc\tde\n");
    }

    /// An element as read back: its name, attributes and text.
    #[derive(Debug, Default)]
    struct Element {
        name: String,
        attributes: BTreeMap<String, String>,
        text: String,
    }

    fn parse(xml: &str) -> Vec<Element> {
        let mut reader = Reader::from_str(xml);
        let mut elements: Vec<Element> = Vec::new();
        // The elements open where the reader is: text belongs to the innermost.
        let mut open: Vec<usize> = Vec::new();
        loop {
            let event = reader.read_event().expect("well-formed XML");
            if let Event::Start(_) = event {
                open.push(elements.len());
            }
            match event {
                Event::Start(start) | Event::Empty(start) => {
                    let attributes = start
                        .attributes()
                        .map(|a| {
                            let a = a.expect("an attribute");
                            let value = a
                                .normalized_value(XmlVersion::Explicit1_0)
                                .expect("an attribute value");
                            (a.key.as_ref().to_string(), value.into_owned())
                        })
                        .collect();
                    elements.push(Element {
                        name: start.name().as_ref().to_string(),
                        attributes,
                        text: String::new(),
                    });
                }
                Event::End(_) => {
                    open.pop();
                }
                Event::Text(text) => {
                    if let Some(&inner) = open.last() {
                        let last = &mut elements[inner];
                        last.text
                            .push_str(&text.xml_content(XmlVersion::Explicit1_0));
                    }
                }
                Event::GeneralRef(reference) => {
                    let character = match reference.resolve_char_ref().expect("a reference") {
                        Some(character) => character,
                        None => match reference.as_ref() {
                            "amp" => '&',
                            "lt" => '<',
                            "gt" => '>',
                            "quot" => '"',
                            "apos" => '\'',
                            other => panic!("unexpected reference {other}"),
                        },
                    };
                    if let Some(&inner) = open.last() {
                        elements[inner].text.push(character);
                    }
                }
                Event::Eof => return elements,
                _ => {}
            }
        }
    }

    #[test]
    fn read_back_the_counts_match_the_report() {
        let report = every_outcome();
        let xml = render(Format::Junit, &report, &context());
        assert!(
            !xml.chars()
                .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')),
            "{xml:?}"
        );
        let elements = parse(&xml);
        let of = |name: &'static str| elements.iter().filter(move |e| e.name == name);
        let root = of("testsuites").next().expect("testsuites");
        assert_eq!(root.attributes["tests"], "6");
        assert_eq!(root.attributes["failures"], "4");
        assert_eq!(root.attributes["errors"], "1");
        let suites: Vec<&Element> = of("testsuite").collect();
        assert_eq!(suites.len(), report.labs.len());
        for (suite, lab) in suites.iter().zip(&report.labs) {
            assert_eq!(suite.attributes["name"], lab.name);
            assert_eq!(suite.attributes["tests"], lab.checks.len().to_string());
            let not_passed = lab
                .checks
                .iter()
                .filter(|c| c.status != Status::Passed)
                .count();
            let failures: usize = suite.attributes["failures"].parse().unwrap();
            let errors: usize = suite.attributes["errors"].parse().unwrap();
            assert_eq!(failures + errors, not_passed);
            assert_eq!(
                suite.attributes["time"],
                format!("{:.3}", 1.5 * lab.checks.len() as f64)
            );
        }
        let cases: Vec<&Element> = of("testcase").collect();
        assert_eq!(cases.len(), 6);
        assert_eq!(cases[1].attributes["classname"], "pipe-echo");
        assert_eq!(cases[1].attributes["name"], "echo-1-byte");
        assert_eq!(cases[1].attributes["time"], "1.500");
        assert_eq!(of("failure").count(), 4);
        assert_eq!(of("error").count(), 1);
        let hostile = of("failure").next().expect("the failed check's failure");
        assert_eq!(
            hostile.attributes["message"],
            "the echo differs | 100% <b>&amp;</b> `x` a:b,c\\|"
        );
        assert_eq!(hostile.attributes["type"], "failed");
        assert_eq!(hostile.text, xml_chars(HOSTILE), "the whole diagnosis");
        assert!(
            hostile
                .text
                .ends_with("\r\n::error::injected\nlinetwo[31m end")
        );
    }
}
