//! Names at the system's length limit: the longest name it
//! accepts, names of a given length, and a handoff made with names exactly at the edge.

use super::handover::Launch;
use crate::engine::{Fail, Run};

/// The most characters after the slash that the system accepts in a name: NAME_MAX (255) for
/// a queue; for a semaphore 251, as its file `/dev/shm/sem.NAME` must fit in NAME_MAX.
pub(super) fn longest_name(mechanism: &str) -> usize {
    if mechanism == "semaphores" { 251 } else { 255 }
}

/// A name of `role` with `length` characters after its slash.
pub(super) fn name_of_length(run: &mut Run, role: &str, length: usize) -> String {
    let prefix = run.ipc_name(role).len() - role.len();
    let name = run.ipc_name(&format!(
        "{role}-{}",
        "x".repeat(length + 1 - prefix - role.len() - 1)
    ));
    debug_assert_eq!(name.len(), length + 1);
    name
}

/// `create()` with names at the exact edge of what the system accepts (`longest_name`): the
/// handoff must be made and work; one character more is refused by the system (`create_fails`).
pub(super) fn names_at_the_edge(run: &mut Run, mechanism: &'static str) -> Result<String, Fail> {
    let longest = longest_name(mechanism);
    let names = [
        name_of_length(run, "ready", longest),
        name_of_length(run, "ok", longest),
    ];
    let mut launch = Launch::new(run, mechanism, names, 10, &[])?;
    let first = launch.proc.recv_any()?;
    if first.kind == "failed" {
        let kind = first.get("kind").unwrap_or("none");
        let (call, limit) = if mechanism == "semaphores" {
            (
                "sem_open()",
                "its file /dev/shm/sem.NAME, of NAME_MAX characters, is within the limit",
            )
        } else {
            (
                "mq_open()",
                "NAME_MAX bounds the name without its leading slash",
            )
        };
        return Err(Fail::failed(format!(
            "with {mechanism} names of exactly {longest} characters after their slash ({}...), \
             which {call} accepts, Handoff::create() failed with kind={kind} ({}): {limit}. \
             Leave the limit to {call} and report its error; a length checked by hand must \
             match the system's",
            &launch.names[0][..24],
            first.get("error").unwrap_or("")
        )));
    }
    if first.kind != "ready" {
        return Err(Fail::failed(format!(
            "the program said `{}` where it should have been ready",
            first.kind
        )));
    }
    launch.proc.put_back(first);
    launch.run_through(&format!(
        "10 rounds with {mechanism} named by {longest} characters after the slash"
    ))?;
    Ok(format!(
        "{mechanism}, names of {longest} characters: created and used"
    ))
}
