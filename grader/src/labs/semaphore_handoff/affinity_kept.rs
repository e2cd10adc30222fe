//! The CPU affinity after the handoff has run: `put()`, `take()`, `post()` and `wait()` leave
//! it as they found it, of their own process and of the other side's. Read at `ready`, an
//! affinity changed by the first `put()` or `take()` does not show yet.

use super::rounds::cpus_of;
use super::{CONSUMER, PARENT, PRODUCER};
use crate::engine::Fail;

/// The consumer paused before the last record (`--pause-consumer-at`), all the records before
/// it handed over: the parent and both sides may still run on every CPU `grader_cpus` lists.
pub(super) fn cpus_kept_through_rounds(
    mechanism: &str,
    rounds: u64,
    [parent, producer, consumer]: [i32; 3],
    grader_cpus: &[usize],
) -> Result<(), Fail> {
    let sides = [(PARENT, parent), (PRODUCER, producer), (CONSUMER, consumer)];
    let narrowed: Vec<String> = sides
        .iter()
        .filter_map(|&(role, pid)| match cpus_of(pid) {
            Some(theirs) if theirs != grader_cpus => Some(format!("{role} only on {theirs:?}")),
            _ => None,
        })
        .collect();
    if narrowed.is_empty() {
        return Ok(());
    }
    let last = rounds - 1;
    Err(Fail::failed(format!(
        "started without --cpu ({mechanism}), the parent and both sides could run on every CPU \
         the grader may ({grader_cpus:?}) at ready, but with the consumer paused before record \
         {last}, the records before it handed over, {} may run (their affinity, \
         sched_getaffinity()): a call of the handoff (put(), take(), post() or wait()) narrowed \
         the CPU affinity, its own process's or the other side's (sched_setaffinity() given \
         the peer's pid), which pins the sides together and makes the free round trip a \
         pinned one. Where the sides run is main.rs's to say (--cpu); the handoff leaves the \
         affinity as it found it, at every call",
        narrowed.join(", ")
    )))
}
