//! A key taken by a segment that looks unused: all zeros, of the very size the publisher asks
//! for, nobody attached, its creator exited (as a publisher that made it a moment ago and has
//! not written yet, or died before its first store, leaves it). It is refused like any other
//! (`Exists`), and at once: the one `shmget(IPC_CREAT | IPC_EXCL)` decides, never a second try
//! after a pause in which the key may change hands.

use std::time::{Duration, Instant};

use crate::engine::tracer::{Call, Tracer};
use crate::engine::{Fail, Run};

use super::errors::refused_existing;
use super::injected::shmget_creating;
use super::protocol::{fresh_name, spawn_publisher};
use super::segments::{Planted, segment_by_id};

pub fn blank_segment_refused_at_once(run: &mut Run) -> Result<(), Fail> {
    let size = 8192;
    let name = fresh_name(run)?;
    let payload = run.random_bytes(1000);
    let planted = Planted::left_by_exited_process(run, name.key, size, &[])?;
    let before = planted.contents(size)?;
    planted.unattached()?;
    let mut proc = spawn_publisher(run, &name.path, name.id, size as u64, 5, &payload)?;
    let creating = Call {
        number: libc::SYS_shmget,
        matching: shmget_creating(true),
    };
    let counted = Tracer::count_calls(proc.pid.as_raw(), creating)?;
    proc.send("go", &[])?;
    let message = proc.recv_any()?;
    let how = format!(
        "a blank segment already had the key (all zeros, the {size} bytes asked for, nobody \
         attached, its creator exited: as a publisher that has not written yet leaves it)"
    );
    let took_over = segment_by_id(planted.id).is_some_and(|s| s.attached > 0);
    if message.kind == "ready" && took_over {
        return Err(Fail::failed(format!(
            "{how}; the publisher attached it (segment {}) and said `ready` with its record \
             written into it: it refused segments holding a record (kind=exists), but took this \
             blank one for its own; a segment that has the key is never reused, however unused \
             it looks (the publisher that made it may be about to write it): report EEXIST as \
             ShmError::Exists and leave it alone",
            planted.id
        )));
    }
    let calls = match counted {
        Some(tracer) if message.kind == "failed" => {
            Some(tracer.failed_count(Instant::now() + Duration::from_secs(2))?)
        }
        _ => None,
    };
    if calls == Some(0) && message.get("kind") == Some("exists") {
        return Err(Fail::failed(format!(
            "{how}; the publisher said kind=exists without any shmget() with IPC_CREAT (the \
             grader counted them with ptrace): it decided from a look (/proc/sysvipc/shm, or a \
             shmget() without IPC_CREAT), which may see a key another process is about to take \
             or free; only shmget(IPC_CREAT | IPC_EXCL) can tell, and its EEXIST is \
             ShmError::Exists"
        )));
    }
    if let Some(calls @ 2..) = calls
        && message.get("kind") == Some("exists")
    {
        return Err(Fail::failed(format!(
            "{how}; the publisher said kind=exists, but only after {calls} calls of shmget() \
             with IPC_CREAT (the grader counted them with ptrace): after EEXIST it made the \
             call again, waiting for the key to free up; EEXIST is ShmError::Exists at once: \
             the segment is whoever runs the program's to remove, and a key freed while the \
             publisher waits is taken from under the one who freed it (a reader that removed \
             its record, a publisher that is about to make it again)"
        )));
    }
    refused_existing(
        &mut proc,
        message,
        (&planted, &before, size),
        name.key,
        &how,
    )
}
