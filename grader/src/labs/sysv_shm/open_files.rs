//! What a program still has open as it exits: a file it opened for a call that failed must be
//! closed on that path too (a long-lived caller that meets the failure again and again runs out
//! of descriptors). Seen in `/proc/PID/fd` while the program is held at its `exit_group()`,
//! before the kernel closes everything for it.

use std::time::{Duration, Instant};

use crate::engine::Fail;
use crate::engine::tracer::Tracer;

/// The descriptor of `pid` open on `path` as it exits, with `tracer` holding it at its exit
/// (the step after the failure it made); `None` if none, or if the program was not held there
/// (`held_at_exit` false: it did not fail as the check wanted). Lets the program go.
pub fn left_open_at_exit(
    mut tracer: Tracer,
    held_at_exit: bool,
    pid: i32,
    path: &str,
) -> Result<Option<i32>, Fail> {
    if !held_at_exit || !tracer.held_before(Instant::now() + Duration::from_secs(5))? {
        drop(tracer);
        return Ok(None);
    }
    let open = descriptor_on(pid, path);
    tracer.release();
    Ok(open)
}

/// The lowest descriptor of `pid` open on `path`.
pub fn descriptor_on(pid: i32, path: &str) -> Option<i32> {
    let entries = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    entries
        .filter_map(Result::ok)
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|target| target.as_os_str() == path))
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .min()
}
