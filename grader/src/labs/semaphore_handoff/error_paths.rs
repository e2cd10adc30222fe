//! The error paths of `create()` and `unlink()`: a name already taken, a name taken right after
//! the program's first look at it, a name the system refuses or one exactly at its limit, a
//! clean-up that fails in its turn, a name removed behind the program's back.
//!
//! The objects planted are made in `planted.rs`, the failures of `create()` tried in
//! `create_errors.rs`, names at the length limit in `name_limits.rs`, the failures of
//! `unlink()` in `unlink_errors.rs`.

use super::create_cleanup::{CleanupStep, create_cleanup_fails};
use super::create_errors::{
    Refused, create_fails, create_fails_eacces_while_taken, create_map_fails, create_races,
};
use super::name_limits::names_at_the_edge;
use super::open_errnos::create_fails_unlisted_errno;
use super::unlink_errors::{unlink_both_fail, unlink_fails, unlink_fails_with_eacces};
use crate::engine::{Fail, Run};

pub fn error_paths(run: &mut Run) -> Result<String, Fail> {
    let mut notes = Vec::new();
    for mechanism in ["semaphores", "queues"] {
        notes.push(create_fails(run, mechanism, 1, Refused::Taken)?);
        notes.push(create_fails(run, mechanism, 0, Refused::Taken)?);
        notes.push(create_fails(run, mechanism, 1, Refused::TooLong)?);
        notes.push(create_fails(run, mechanism, 1, Refused::Slashed)?);
        notes.push(create_cleanup_fails(run, mechanism, CleanupStep::Unlink)?);
        notes.push(create_cleanup_fails(run, mechanism, CleanupStep::Close)?);
    }
    notes.push(create_map_fails(run, "semaphores")?);
    notes.push(create_races(run)?);
    notes.push(names_at_the_edge(run, "semaphores")?);
    notes.push(names_at_the_edge(run, "queues")?);
    notes.push(unlink_fails(run, 0)?);
    notes.push(unlink_fails(run, 1)?);
    notes.push(unlink_both_fail(run)?);
    // The ok name's first: an errno assumed, not read, shows there; the ready name's then
    // shows an errno read late.
    notes.push(unlink_fails_with_eacces(run, 1)?);
    notes.push(unlink_fails_with_eacces(run, 0)?);
    for (mechanism, failing) in [
        ("semaphores", 1),
        ("semaphores", 0),
        ("queues", 1),
        ("queues", 0),
    ] {
        notes.push(create_fails_eacces_while_taken(run, mechanism, failing)?);
    }
    for (mechanism, failing, errno) in [
        ("semaphores", 0, (libc::ENOSPC, "ENOSPC")),
        ("semaphores", 1, (libc::EMFILE, "EMFILE")),
        ("queues", 0, (libc::EMFILE, "EMFILE")),
        ("queues", 1, (libc::ENOSPC, "ENOSPC")),
    ] {
        notes.push(create_fails_unlisted_errno(run, mechanism, failing, errno)?);
    }
    notes.push(super::failed_calls::wait_errors(run)?);
    notes.push(super::refused_deadline::refused_deadline(run)?);
    notes.push(super::failed_calls::post_error(run)?);
    notes.push(super::failed_calls::consumer_post_error(run)?);
    notes.push(super::carried_errno::queue_unlink_errno(run)?);
    notes.push(super::failed_step_ends::nothing_made_after_a_failed_open(
        run,
        "semaphores",
    )?);
    notes.push(super::failed_clock_read::clock_read_fails(run)?);
    Ok(format!(
        "every failure was reported by kind, removed what create() had made and left the \
         existing object alone: {}",
        notes.join("; ")
    ))
}
