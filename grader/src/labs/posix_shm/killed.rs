//! Creators ended by the signals that end a program from outside: only `unlink()` removes the
//! name, so the object outlives them as it outlives a creator that exits.

use nix::sys::signal::{Signal, kill};

use crate::engine::inspect::{self, SignalMask};
use crate::engine::{Fail, Run};

use super::driver::{CREATOR, creators};
use super::probes::{dev_shm, exists};

/// The signals that end a program from outside, and who sends them.
const ENDINGS: [(Signal, &str); 3] = [
    (Signal::SIGTERM, "kill, or a supervisor stopping it"),
    (Signal::SIGINT, "Ctrl-C"),
    (Signal::SIGHUP, "its terminal closing"),
];

/// One creator per signal, each killed by it once its table is mapped: the name stays.
pub fn killed_creators_leave_the_name(run: &mut Run) -> Result<(), Fail> {
    let tables: Vec<(String, usize)> = ENDINGS
        .iter()
        .map(|(signal, _)| (run.ipc_name(&format!("killed-{}", signal.as_str())), 4096))
        .collect();
    for (mut creator, (signal, sender)) in creators(run, &tables)?.into_iter().zip(ENDINGS) {
        let pid = creator.pid();
        if inspect::has_signal(pid, pid, SignalMask::Ignored, signal as i32) {
            // Born ignoring it (a grader started with nohup, or in the background): the
            // signal would not end it.
            run.note(format!(
                "{CREATOR} ignores {signal} from its start: a creator killed by it was not tried"
            ));
            creator.proc.kill_tree();
            let _ = std::fs::remove_file(dev_shm(&creator.name));
            continue;
        }
        kill(creator.proc.pid, signal)
            .map_err(|e| Fail::Grader(format!("sending {signal} to {CREATOR}: {e}")))?;
        creator.proc.wait()?;
        let path = dev_shm(&creator.name);
        // Nobody unlinks it in this check: the grader removes it.
        let left = exists(&creator.name) && std::fs::remove_file(&path).is_ok();
        if !left {
            return Err(Fail::failed(format!(
                "{CREATOR}, killed by {signal} ({sender}) once it had said `mapped`, had \
                 died, and {} was gone, and nobody had asked for an unlink: only unlink() \
                 removes the name; an object stays in /dev/shm until an unlink, however the \
                 processes that mapped it end (a handler that unlinks on such a signal removes \
                 what other processes may still open)",
                path.display()
            )));
        }
    }
    Ok(())
}
