//! `--format classroom50`: Classroom 50's `result.json` (schema `classroom50/result/v1`), which
//! a Classroom 50 `autograder.py` writes in the student's checkout. The identity fields come
//! from the environment the Classroom 50 runner gives the autograder; the runner then stamps
//! `owner`, `assignment_type`, `datetime` and `graded_at` itself, and checks the others against
//! the repository.

use serde::Serialize;

use super::checks;
use crate::engine::{Report, Status};

/// The value of `schema`.
pub const SCHEMA: &str = "classroom50/result/v1";

/// A variable of the Classroom 50 environment that is missing or wrong.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "--format classroom50 needs {0} in the environment, which the Classroom 50 runner sets \
         for the autograder ({1})"
    )]
    Missing(&'static str, &'static str),
    #[error("--format classroom50: SUBMISSION_TAG is `{0}`, which is not a submit/... tag")]
    NotASubmission(String),
    #[error("--format classroom50: ASSIGNMENT_TYPE is `{0}`; a result is individual or group")]
    UnknownAssignmentType(String),
}

/// Who and what a result is for.
#[derive(Debug, Clone)]
pub struct Identity {
    pub classroom: String,
    pub assignment: String,
    pub assignment_type: String,
    pub owner: String,
    pub submission: String,
    pub commit: String,
    pub release: String,
    pub review: String,
}

impl Identity {
    pub fn from_env() -> Result<Identity, IdentityError> {
        Identity::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads each variable through `lookup`; an empty one counts as missing.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Identity, IdentityError> {
        let get = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let required = |name: &'static str, what: &'static str| {
            get(name).ok_or(IdentityError::Missing(name, what))
        };
        let submission = required("SUBMISSION_TAG", "the submit/... tag graded")?;
        if !submission.starts_with("submit/") {
            return Err(IdentityError::NotASubmission(submission));
        }
        let assignment_type = get("ASSIGNMENT_TYPE").unwrap_or_else(|| "individual".into());
        if !matches!(assignment_type.as_str(), "individual" | "group") {
            return Err(IdentityError::UnknownAssignmentType(assignment_type));
        }
        let commit = required("COMMIT_URL", "the link to the graded commit")?;
        Ok(Identity {
            classroom: required("CLASSROOM", "the classroom's short name")?,
            assignment: required("ASSIGNMENT", "the assignment's slug")?,
            assignment_type,
            owner: get("OWNER").map_or_else(
                || required("USERNAME", "the repository owner's login, or OWNER"),
                Ok,
            )?,
            submission,
            release: required("RELEASE_URL", "the link to the submission's release")?,
            review: get("REVIEW_URL").unwrap_or_else(|| commit.clone()),
            commit,
        })
    }
}

#[derive(Serialize)]
struct ResultDocument {
    schema: &'static str,
    classroom: String,
    assignment: String,
    assignment_type: String,
    owner: String,
    submission: String,
    commit: String,
    release: String,
    review: String,
    /// The runner replaces it with the graded commit's date, which it alone knows.
    datetime: String,
    graded_at: String,
    score: u32,
    #[serde(rename = "max-score")]
    max_score: u32,
    tests: Vec<Test>,
}

#[derive(Serialize)]
struct Test {
    #[serde(rename = "test-name")]
    test_name: String,
    passed: bool,
    score: u32,
    #[serde(rename = "max-score")]
    max_score: u32,
    message: String,
}

pub fn render(report: &Report, identity: &Identity) -> String {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let tests = checks(report)
        .map(|(lab, check)| Test {
            test_name: format!("{}/{}", lab.name, check.name),
            passed: check.status == Status::Passed,
            score: check.score,
            max_score: check.max_score,
            message: check.message.clone(),
        })
        .collect();
    let identity = identity.clone();
    let result = ResultDocument {
        schema: SCHEMA,
        classroom: identity.classroom,
        assignment: identity.assignment,
        assignment_type: identity.assignment_type,
        owner: identity.owner,
        submission: identity.submission,
        commit: identity.commit,
        release: identity.release,
        review: identity.review,
        datetime: now.clone(),
        graded_at: now,
        score: report.score,
        max_score: report.max_score,
        tests,
    };
    serde_json::to_string_pretty(&result).expect("a result serializes") + "\n"
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;
    use crate::report::tests::{context, every_outcome};
    use crate::report::{Format, render};

    /// What the Classroom 50 runner sets.
    fn runner_env() -> BTreeMap<&'static str, String> {
        [
            ("CLASSROOM", "os-2026"),
            ("ASSIGNMENT", "ipc-labs"),
            ("SUBMISSION_TAG", "submit/20261202T092230Z-abc1234"),
            ("USERNAME", "ada"),
            ("OWNER", "ada"),
            (
                "COMMIT_URL",
                "https://example.org/os-2026/ipc-labs-ada/commit/abc1234",
            ),
            (
                "RELEASE_URL",
                "https://example.org/os-2026/ipc-labs-ada/releases/tag/x",
            ),
            (
                "REVIEW_URL",
                "https://example.org/os-2026/ipc-labs-ada/compare/a...b",
            ),
        ]
        .into_iter()
        .map(|(name, value)| (name, value.to_string()))
        .collect()
    }

    fn identity_from(env: &BTreeMap<&'static str, String>) -> Result<Identity, IdentityError> {
        Identity::from_lookup(|name| env.get(name).cloned())
    }

    pub fn identity() -> Identity {
        identity_from(&runner_env()).expect("the runner's environment is complete")
    }

    /// `classroom50/result/v1` (`schemas/result-v1.schema.json`) as a type: every required
    /// field, no field the schema does not allow.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct SchemaResult {
        schema: String,
        classroom: String,
        assignment: String,
        assignment_type: String,
        owner: String,
        submission: String,
        commit: String,
        release: String,
        review: String,
        datetime: String,
        graded_at: Option<String>,
        #[allow(dead_code)]
        submitted_by: Option<serde_json::Value>,
        score: u32,
        #[serde(rename = "max-score")]
        max_score: u32,
        tests: Vec<SchemaTest>,
    }

    /// A test of the schema, with the extra field the grader adds.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct SchemaTest {
        #[serde(rename = "test-name")]
        test_name: String,
        passed: bool,
        score: u32,
        #[serde(rename = "max-score")]
        max_score: u32,
        message: String,
    }

    /// `YYYY-MM-DDTHH:MM:SSZ`, as the schema's pattern wants.
    fn is_schema_instant(text: &str) -> bool {
        let bytes = text.as_bytes();
        bytes.len() == 20
            && bytes.iter().enumerate().all(|(i, b)| match i {
                4 | 7 => *b == b'-',
                10 => *b == b'T',
                13 | 16 => *b == b':',
                19 => *b == b'Z',
                _ => b.is_ascii_digit(),
            })
    }

    #[test]
    fn the_result_follows_the_schema() {
        let report = every_outcome();
        let text = render(Format::Classroom50, &report, &context());
        let result: SchemaResult = serde_json::from_str(&text).expect("the schema's shape");
        assert_eq!(result.schema, SCHEMA);
        for (value, want) in [
            (&result.classroom, "os-2026"),
            (&result.assignment, "ipc-labs"),
            (&result.assignment_type, "individual"),
            (&result.owner, "ada"),
        ] {
            assert_eq!(value, want);
        }
        assert!(result.submission.starts_with("submit/"));
        for link in [&result.commit, &result.release, &result.review] {
            assert!(link.starts_with("https://"), "{link}");
        }
        assert!(is_schema_instant(&result.datetime), "{}", result.datetime);
        assert!(is_schema_instant(result.graded_at.as_deref().unwrap()));
        assert_eq!((result.score, result.max_score), (1, 13));
        assert!(result.score <= result.max_score);
        assert_eq!(result.tests.len(), 6);
        assert_eq!(
            result.tests.iter().map(|t| t.score).sum::<u32>(),
            result.score
        );
        for test in &result.tests {
            assert!(!test.test_name.is_empty());
            assert!(test.score <= test.max_score, "{}", test.test_name);
            assert_eq!(
                test.passed,
                test.score == test.max_score,
                "{}",
                test.test_name
            );
        }
        assert_eq!(result.tests[1].test_name, "pipe-echo/echo-1-byte");
        assert_eq!(result.tests[1].message, crate::report::tests::HOSTILE);
    }

    #[test]
    fn a_missing_identity_is_a_clear_error_and_defaults_are_the_runners() {
        let mut env = runner_env();
        env.remove("CLASSROOM");
        let error = identity_from(&env).unwrap_err();
        assert!(matches!(error, IdentityError::Missing("CLASSROOM", _)));
        assert!(error.to_string().contains("CLASSROOM"), "{error}");

        let mut env = runner_env();
        env.insert("COMMIT_URL", "  ".into());
        assert!(matches!(
            identity_from(&env),
            Err(IdentityError::Missing("COMMIT_URL", _))
        ));

        let mut env = runner_env();
        env.remove("OWNER");
        env.remove("REVIEW_URL");
        let identity = identity_from(&env).unwrap();
        assert_eq!(identity.owner, "ada", "USERNAME stands in for OWNER");
        assert_eq!(
            identity.review, identity.commit,
            "the runner's own fallback"
        );
        env.remove("USERNAME");
        assert!(matches!(
            identity_from(&env),
            Err(IdentityError::Missing("USERNAME", _))
        ));

        let mut env = runner_env();
        env.insert("SUBMISSION_TAG", "v1.0".into());
        assert!(matches!(
            identity_from(&env),
            Err(IdentityError::NotASubmission(_))
        ));
        let mut env = runner_env();
        env.insert("ASSIGNMENT_TYPE", "group".into());
        assert_eq!(identity_from(&env).unwrap().assignment_type, "group");
        env.insert("ASSIGNMENT_TYPE", "solo".into());
        assert!(matches!(
            identity_from(&env),
            Err(IdentityError::UnknownAssignmentType(_))
        ));
    }
}
