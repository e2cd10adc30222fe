//! An opener's `len` is the size it mapped: the object may be resized by others at any moment,
//! and a size read after `mmap()` (a second `fstat()`) no longer says how much is mapped. The
//! grader grows the object right after the opener's `mmap()` returned.

use std::time::{Duration, Instant};

use crate::engine::tracer::{Action, Call, Tracer};
use crate::engine::{Fail, Run, force};

use super::driver::{OPENER, await_answer, said, start_stopped};
use super::probes::{dev_shm, plant_object, table_mapping};

/// The object's size when the opener maps it (not a whole number of pages), and after.
const MAPPED: usize = 2 * 4096 + 100;
const GROWN: usize = 100_000;

/// An opener of a [`MAPPED`]-byte object, held right after its `mmap()` of that many bytes
/// returned while the grader grows the object to [`GROWN`] bytes, says `mapped` with
/// [`MAPPED`]: the size it mapped, not the object's newer one.
pub fn len_is_the_size_mapped(run: &mut Run) -> Result<(), Fail> {
    let name = run.ipc_name("grown-after-mmap");
    let bytes = run.random_bytes(MAPPED);
    let planted = plant_object(run, &name, &bytes)?;
    let mut proc = start_stopped(run, &name, None, OPENER)?;
    let pid = proc.pid.as_raw();
    let tracer = Tracer::attach(pid, Call::mapping_shared(MAPPED), Action::HoldAfter)?;
    force::resume(pid)?;
    let Some(mut tracer) = tracer else {
        proc.kill_tree();
        return Ok(());
    };
    let held = tracer.held_before(Instant::now() + Duration::from_secs(5))?;
    let mapping = if held {
        let object = std::fs::OpenOptions::new()
            .write(true)
            .open(dev_shm(&name))?;
        object.set_len(GROWN as u64)?;
        table_mapping(pid, &name)
    } else {
        None
    };
    tracer.release();
    let what = format!("opening {name}");
    let answer = await_answer(&mut proc, OPENER, &what, None)?;
    proc.kill_tree();
    drop(planted);
    if !held || answer.kind != "mapped" {
        // Never held there (another length mapped), or no table: other checks judge those.
        return Ok(());
    }
    let len = answer.get("len").and_then(|l| l.parse::<usize>().ok());
    if len == Some(MAPPED) {
        return Ok(());
    }
    let mapped = mapping.map_or("no mapping of it".into(), |m| {
        format!("a mapping of {} bytes", m.end - m.start)
    });
    let why = if len == Some(GROWN) {
        "the size the object had after mmap(): it read the size again once mapped (a second \
         fstat()), and reports a size it did not map; its reads and writes past the mapping \
         crash, and close() unmaps a length that is not the mapping's"
    } else {
        "neither the size it mapped nor the object's"
    };
    Err(Fail::failed(format!(
        "{OPENER} of an object of {MAPPED} bytes, held right after its mmap() of {MAPPED} bytes \
         returned ({mapped} in /proc/{pid}/maps) while the grader grew the object to {GROWN} \
         bytes (as another process may resize it at any moment), said {}: {why}; len is the \
         size mapped, the one fstat() gave before mmap(), read once",
        said(&answer)
    )))
}
