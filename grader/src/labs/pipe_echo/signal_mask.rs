//! The parent's signal mask across `spawn()`: whatever `spawn()` does around `fork()`, the
//! program's thread leaves it with the mask it came in with, when `spawn()` fails too. A mask
//! left blocking signals makes the program deaf to Ctrl-C, `SIGTERM` and the `SIGUSR1` it relies
//! on for the rest of its life.

use crate::engine::Fail;
use crate::engine::inspect::{self, SignalMask};

/// The parent's main thread (which called `spawn()`, `setting` says how it ended) blocks now
/// what it blocked before (`before`), no more.
pub fn kept(parent: i32, before: Option<u64>, setting: &str) -> Result<(), Fail> {
    let (Some(before), Some(now)) = (
        before,
        inspect::signal_mask(parent, parent, SignalMask::Blocked),
    ) else {
        return Ok(());
    };
    let added = now & !before;
    if added == 0 {
        return Ok(());
    }
    let names: Vec<String> = (1..=64)
        .filter(|n| added & (1u64 << (n - 1)) != 0)
        .map(signal_name)
        .collect();
    let shown = if names.len() > 6 {
        format!(
            "{} signals, {} among them",
            names.len(),
            names[..6].join(", ")
        )
    } else {
        names.join(", ")
    };
    Err(Fail::failed(format!(
        "{setting}; afterwards the program's thread blocks signals it did not block before \
         spawn() ({shown}; SigBlk {now:016x}, was {before:016x} in /proc/PID/status): spawn() \
         changed the signal mask (around fork(), say) and left it so; the program can no longer \
         be interrupted or stopped by those signals. Put the old mask back on every way out of \
         spawn(), the error returns (the `?` after fork()) too"
    )))
}

fn signal_name(number: u64) -> String {
    crate::engine::process::signal_name(number as i32)
}
