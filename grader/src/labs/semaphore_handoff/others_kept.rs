//! Objects under names that were never the handoff's survive a whole run: the grader plants a
//! semaphore and a queue under names of their own (the semaphore dated a day back and the
//! program user's, as one left by a crashed run would be), runs a handoff through to its end,
//! and finds them as it made them. `unlink()` removes the two names `create()` made and nothing
//! else, however old or unused another object looks.

use super::handover::Launch;
use super::planted::{PLANTED_VALUE, Planted};
use super::probe;
use crate::engine::{Fail, Run};

pub(super) fn others_kept(run: &mut Run) -> Result<(), Fail> {
    for mechanism in ["semaphores", "queues"] {
        let mut others = Vec::new();
        for kind in ["semaphores", "queues"] {
            let name = run.ipc_name("someone-else");
            let planted = Planted::with_value(kind, &name, PLANTED_VALUE)?;
            if kind == "semaphores"
                && let Some((uid, gid)) = run.program_user()
            {
                std::os::unix::fs::chown(probe::semaphore_file(&name), Some(uid), Some(gid))?;
            }
            others.push((kind, name, planted));
        }
        let names = [run.ipc_name("ready"), run.ipc_name("ok")];
        let launch = Launch::new(run, mechanism, names, 10, &[])?;
        launch.run_through(&format!(
            "10 rounds with {mechanism}, other objects planted"
        ))?;
        let changed: Vec<String> = others
            .iter()
            .filter_map(|(kind, name, planted)| {
                let what = if *kind == "semaphores" {
                    "the semaphore"
                } else {
                    "the queue"
                };
                planted
                    .changed()
                    .map(|change| format!("{what} {name} {change}"))
            })
            .collect();
        if !changed.is_empty() {
            return Err(Fail::failed(format!(
                "before a run with {mechanism}, the grader made a semaphore (its file dated a day \
                 back, the program user's) and a queue under names that were never the \
                 handoff's, and once the run had ended {}: the program touched objects that \
                 are not its own, whose names it was never given (a sweep of /dev/shm or of the \
                 queues that removes old or unused objects, as leftovers of crashed runs). \
                 unlink() removes the two names create() made, and nothing else: an object \
                 under another name belongs to another program, however old it looks",
                changed.join(", ")
            )));
        }
    }
    Ok(())
}
