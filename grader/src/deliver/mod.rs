//! Delivering the course: what goes to students and to the platforms that grade them.

pub mod gradescope;
pub mod submission;
