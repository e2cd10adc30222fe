//! The grader end to end, on copies of this workspace: a class graded in batch, the benchmark,
//! the Classroom 50 and Gradescope autograders, an exported template and its workflow, watch
//! mode. One test binary, so that its tests run side by side: each spends much of its time
//! building one crate or waiting for the programs it grades, and each template builds in a
//! target directory of its own.

#[path = "../support/mod.rs"]
mod support;

mod batch;
mod bench;
mod classroom50;
mod export;
mod gradescope;
mod watch;
