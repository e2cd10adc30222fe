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
