//! Delivering the labs: a student repository of its own, without the solutions, and the
//! platforms that grade what students submit.

pub mod batch;
pub mod classroom50;
pub mod export;
pub mod gradescope;
pub mod submission;
