//! The server blocks SIGTERM and SIGINT, and no other signal: a server that blocks every signal
//! ignores a hang-up (SIGHUP), Ctrl-\ (SIGQUIT), Ctrl-Z (SIGTSTP) and every other signal its
//! user or its service manager sends, which stay pending for ever.

use std::time::Duration;

use nix::sys::signal::Signal;

use super::observe;
use super::programs::Server;
use crate::engine::Fail;
use crate::engine::inspect::{self, SignalMask};

/// The signals of `mask` but SIGTERM and SIGINT, by name.
fn others(mask: u64) -> Vec<String> {
    let stop = [Signal::SIGTERM, Signal::SIGINT]
        .iter()
        .fold(0u64, |m, &s| m | 1 << (s as i32 - 1));
    (1..=64)
        .filter(|n| (mask & !stop) & (1u64 << (n - 1)) != 0)
        .map(|n| match Signal::try_from(n) {
            Ok(signal) => signal.as_str().to_string(),
            Err(_) => format!("signal {n}"),
        })
        .collect()
}

/// Every thread of the running server, idle, blocks no signal but SIGTERM and SIGINT. Read
/// twice, 50 ms apart: a thread being started (the C library blocks every signal around its
/// clone3()) blocks more for a moment.
pub fn blocks_only_the_stop_signals(server: &Server) -> Result<(), Fail> {
    let pid = server.pid();
    let extra = |tid: i32| {
        inspect::signal_mask(pid, tid, SignalMask::Blocked)
            .map(others)
            .unwrap_or_default()
    };
    let first: Vec<(i32, Vec<String>)> = observe::thread_ids(pid)
        .into_iter()
        .map(|tid| (tid, extra(tid)))
        .filter(|(_, names)| !names.is_empty())
        .collect();
    if first.is_empty() {
        return Ok(());
    }
    std::thread::sleep(Duration::from_millis(50));
    let still: Vec<(i32, Vec<String>)> = first
        .into_iter()
        .filter_map(|(tid, _)| Some((tid, extra(tid))).filter(|(_, n)| !n.is_empty()))
        .collect();
    let Some((tid, names)) = still.first() else {
        return Ok(());
    };
    let shown = if names.len() > 8 {
        format!("{} and {} more", names[..8].join(", "), names.len() - 8)
    } else {
        names.join(", ")
    };
    Err(Fail::failed(format!(
        "{} of the server's threads (tid {tid} among them) block {shown} besides SIGTERM and \
         SIGINT (SigBlk in /proc/{pid}/task/TID/status): those signals then stay pending for \
         ever, so the server ignores a hang-up (SIGHUP), Ctrl-\\ (SIGQUIT), Ctrl-Z (SIGTSTP) and \
         the rest. Block SIGTERM and SIGINT only (a SigSet of those two, not SigSet::all()): \
         every other signal keeps its default effect",
        still.len()
    )))
}
