//! Why a consumer whose failed open of a limit file still created its queue: whether it opened
//! the same file again (a retry), told by a second consumer whose every open of it fails.

use std::time::{Duration, Instant};

use super::protocol::{grader_send, release, shutdown_message, spawn_consumer_stopped};
use crate::engine::tracer::{Call, Match, Tracer};
use crate::engine::{Fail, Run, force};

/// The most opens of the file made to fail: more than any retry loop a student writes.
const TIMES: u32 = 20;

/// How many times a consumer opened `path` (`openat()` of that very path), each open made to
/// fail with `errno`; `None` without ptrace.
pub fn opens_of_failing_file(
    run: &mut Run,
    path: &'static str,
    errno: i32,
) -> Result<Option<u32>, Fail> {
    let name = run.ipc_name("limit-retries");
    let mut proc = spawn_consumer_stopped(run, &name)?;
    let pid = proc.pid.as_raw();
    let open = Call {
        number: libc::SYS_openat,
        matching: Match::Path(path),
    };
    let tracer = Tracer::fail_times(pid, open, errno, TIMES)?;
    force::resume(pid)?;
    let answer = proc.recv_any()?;
    let opens = match tracer {
        Some(tracer) => Some(tracer.failed_count(Instant::now() + Duration::from_millis(200))?),
        None => None,
    };
    if answer.kind == "ready" {
        grader_send(&name, &[shutdown_message()])?;
        proc.send("go", &[])?;
        let _ = proc.recv_any()?;
    }
    release(&mut proc)?;
    Ok(opens)
}
