//! The segment's mode after `ready`: 0600 for as long as the segment lives, not only while the
//! grader looks at the publisher. A mode widened on the way out (in `detach()`, say) opens a
//! record that stays in the kernel after its publisher is gone to every reader it allows.

use crate::engine::{Fail, Run};

use super::protocol::Published;
use super::segments::segment;

/// Lets the publisher detach and exit, then has a reader (without `--remove`) read the record,
/// and wants the segment's mode still `600` after each.
pub fn mode_kept_after_ready(run: &mut Run, published: &mut Published) -> Result<(), Fail> {
    published.finish()?;
    let key = published.name.key;
    let judge = |after: &str| -> Result<bool, Fail> {
        // Gone: its removal is judged elsewhere (`outlives-publisher`).
        let Some(found) = segment(key) else {
            return Ok(false);
        };
        let mode = found.mode & 0o777;
        if mode == 0o600 {
            return Ok(true);
        }
        let who = if mode & 0o007 != 0 {
            "every user on the machine"
        } else if mode & 0o070 != 0 {
            "the members of its group"
        } else {
            "nobody but its owner, yet not as 0600 asks"
        };
        Err(Fail::failed(format!(
            "the segment's mode was 600 at `ready`, but {mode:03o} once {after} ({who} may \
             attach it now, and the record stays after its publisher is gone): the program \
             changed the mode after `ready` (shmctl(IPC_SET), in detach() or on its way out); \
             the mode is 0600 from the shmget() that creates the segment to its removal, and no \
             program of the lab changes it"
        )))
    };
    if judge("the publisher had detached and exited")? {
        published.read_back(run, false, 1)?;
        judge("a reader (without --remove) had read the record")?;
    }
    Ok(())
}
