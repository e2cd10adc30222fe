//! The grading engine: runs each check's processes isolated and timed, diagnoses hangs, audits
//! IPC objects, and scores.

pub mod audit;
pub mod compile;
pub mod diagnose;
pub mod files;
pub mod force;
pub mod inspect;
pub mod ledger;
mod looks;
pub mod model;
mod order;
pub mod process;
pub mod run;
pub mod tracer;
pub mod waiting;

pub use compile::Variant;
pub use model::{
    CLEANUP_CHECK, Check, CheckResult, Fail, GRADER_FAILURE, Lab, LabResult, Report, Status,
};
pub use process::Proc;
pub use run::{Options, Plan, Progress, Run, RunAs, grade, grade_built};
