//! What `unlink()` leaves, and what the parent's exit leaves: `unlink()` removes the names and
//! nothing else (the `Handoff` stays whole, its slot mapped and both signals open, until
//! `close()`); and once the names are unlinked they belong to nobody, so that nothing the
//! parent does later, up to and past its exit (an `atexit()` handler, a destructor), removes
//! an object another program has made under them since.

use super::RECORD_SIZE;
use super::planted::Planted;
use super::probe;
use crate::engine::Fail;

/// At `ready` the parent has called `unlink()` and not yet `close()`: it still maps the slot
/// and holds both signals (a named semaphore's mapping, or a queue descriptor, for each name).
pub(super) fn whole_after_unlink(
    parent: i32,
    names: &[String; 2],
    mechanism: &str,
) -> Result<(), Fail> {
    let maps = probe::mappings(parent);
    if maps.is_empty() {
        // Gone, or not readable: nothing to judge.
        return Ok(());
    }
    let mut missing = Vec::new();
    if !maps
        .iter()
        .any(|m| m.shared_anonymous() && m.len() >= RECORD_SIZE)
    {
        missing.push("the slot (no shared anonymous mapping of a record)".to_string());
    }
    if mechanism == "semaphores" {
        let held = maps.iter().filter(|m| m.named_semaphore()).count();
        if held < 2 {
            missing.push(format!(
                "{} of the 2 named semaphores (it maps {held})",
                2 - held
            ));
        }
    } else {
        for name in names {
            if probe::queue_descriptors(parent, name).is_empty() {
                missing.push(format!("the queue {name} (no descriptor of it)"));
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(Fail::failed(format!(
        "at ready ({mechanism}), when the parent had called Handoff::unlink() and not yet \
         close(), it no longer held {}: unlink() (or create()) released it early, so that a \
         Handoff only unlinked points at nothing (a put() or take() after unlink() faults, and \
         close() releases the same range or descriptor a second time, whatever has taken its \
         place since). unlink() removes the names and nothing else; close() is where the \
         signals are closed and the slot unmapped",
        missing.join(", ")
    )))
}

/// After the parent has exited: the objects the grader made under the unlinked names (while
/// the producer was held) must still be as it made them.
pub(super) fn left_alone_after_exit(
    names: &[String; 2],
    planted: &[Planted],
    mechanism: &str,
) -> Result<(), Fail> {
    let changed: Vec<String> = names
        .iter()
        .zip(planted)
        .filter_map(|(name, plant)| plant.changed().map(|change| format!("{name} {change}")))
        .collect();
    if changed.is_empty() {
        return Ok(());
    }
    Err(Fail::failed(format!(
        "once both names were unlinked, the grader made {mechanism} of its own under the same \
         names (a name unlinked belongs to nobody: another handoff may create it); they were \
         still there when the parent said ended, but once it had exited, {}: the parent \
         removed them as it exited (an atexit() handler, or a destructor, that unlinks the \
         names again), objects that were not its own. Remove the names only in \
         Handoff::unlink(), once, and nothing after it, not even at exit",
        changed.join(", ")
    )))
}
