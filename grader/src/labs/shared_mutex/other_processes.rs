//! The coordinator's processes: the workers it forks and nothing else. Another process (a
//! helper that broadcasts the condition variable now and then) is a second way of waking the
//! coordinator's wait, a poll by proxy.

use super::probe::{self, Sleep};
use super::session::Session;
use crate::engine::{Fail, inspect};

/// Fails if the coordinator or a worker has a child that is not one of the workers.
pub(super) fn only_the_workers(session: &Session) -> Result<(), Fail> {
    let table = inspect::process_table();
    let mut parents = vec![session.coordinator];
    parents.extend(&session.workers);
    let mut extra = Vec::new();
    while let Some(parent) = parents.pop() {
        for row in table.iter().filter(|row| row.ppid == parent) {
            if !session.workers.contains(&row.pid) && row.state != 'Z' {
                extra.push((parent, row.pid));
                parents.push(row.pid);
            }
        }
    }
    if extra.is_empty() {
        return Ok(());
    }
    let described: Vec<String> = extra
        .iter()
        .map(|&(parent, pid)| {
            let whose = if parent == session.coordinator {
                "the coordinator's".to_string()
            } else if session.workers.contains(&parent) {
                format!("worker {parent}'s")
            } else {
                format!("process {parent}'s")
            };
            let doing = match probe::sleeping(pid) {
                Sleep::Call(nr) => format!("asleep in {}", probe::call_name(nr)),
                Sleep::Futex { .. } => "asleep on a futex".to_string(),
                Sleep::Awake => "running".to_string(),
            };
            let maps = if probe::mappings(pid, &session.name).is_empty() {
                ""
            } else {
                ", mapping the bank's segment"
            };
            format!("{whose} child {pid}, {doing}{maps}")
        })
        .collect();
    Err(Fail::failed(format!(
        "while no worker had started and the coordinator slept on the condition variable, \
         there were processes besides the coordinator and its workers ({}): the coordinator \
         forks one worker per number and no other process; a helper that broadcasts all_done \
         now and then (a watchdog) wakes the wait by itself, which is polling by proxy \
         whatever its period, and hides a broadcast a finish or a recovery forgot; the only \
         wake-up of the wait is the broadcast each worker's finish() makes",
        described.join("; ")
    )))
}
