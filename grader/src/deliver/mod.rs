//! Delivering the labs to students: a repository of their own, without the solutions.

pub mod export;
