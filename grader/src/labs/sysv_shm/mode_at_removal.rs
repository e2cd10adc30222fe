//! The segment's mode across its removal: `IPC_RMID` takes its key away and nothing else. A
//! segment still attached lives on after `read --remove` until its last detach, and the
//! publisher that holds it must find it as it made it; a `remove()` that first changes the mode
//! (`IPC_SET`, to "lock" it) changes a segment that is not gone yet.

use crate::engine::Fail;

use super::segments::segment_by_id;

/// Segment `id`, marked for removal by a reader's `remove()` while its publisher still holds
/// it, must still have mode `600`. Gone or keeping its key is judged by the caller.
pub fn mode_kept_at_removal(id: i32) -> Result<(), Fail> {
    let Some(found) = segment_by_id(id) else {
        return Ok(());
    };
    let mode = found.mode & 0o777;
    if mode == 0o600 {
        return Ok(());
    }
    Err(Fail::failed(format!(
        "after `read --remove` said `done`, segment {id}, still held by its publisher (nattch \
         {}), lost its key as IPC_RMID does, but its mode is {mode:03o}, not 600: the reader \
         changed the mode (shmctl(IPC_SET)) as it removed the segment; remove() is \
         shmctl(id, IPC_RMID) alone, and the mode is 0600 from the shmget() that creates the \
         segment to its removal (a segment marked for removal lives on, with its mode, until \
         its last detach)",
        found.attached
    )))
}
