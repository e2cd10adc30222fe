//! A segment that is none of the program's business, kept beside the ones it removes: a finished
//! publication waiting for its reader looks abandoned (nobody attached, its creator and its last
//! user exited) and is not. `remove(id)` removes that one segment, and nothing else.

use rand::RngExt;

use crate::engine::{Fail, Run};

use super::HEADER_LEN;
use super::protocol::{fresh_name, publish_record};
use super::segments::{RemoveKeyOnDrop, segment_by_id};

/// A record another publisher left: it published, detached and exited. The check removes it at
/// its end.
pub struct Bystander {
    pub id: i32,
    key: i32,
    _removed: RemoveKeyOnDrop,
}

/// Has the program publish a record in a segment of its own and exit, as a publication waits
/// for its reader.
pub fn leave_bystander(run: &mut Run) -> Result<Bystander, Fail> {
    let name = fresh_name(run)?;
    let key = name.key;
    let removed = RemoveKeyOnDrop(Some(key));
    let size = run.rng().random_range(4096..8192u64);
    let mut published = publish_record(run, false, name, size, size as usize - HEADER_LEN)?;
    let id = published.segment()?.id;
    published.finish()?;
    Ok(Bystander {
        id,
        key,
        _removed: removed,
    })
}

impl Bystander {
    /// Fails unless the segment is still there with its key once `after` has happened.
    pub fn still_there(&self, after: &str) -> Result<(), Fail> {
        if segment_by_id(self.id).is_some_and(|s| s.key == self.key) {
            return Ok(());
        }
        Err(Fail::failed(format!(
            "segment {} (key {:#x}), a record another publisher had left for its reader (nobody \
             attached, its creator and its last user exited), was gone after {after}: the \
             program removed a segment it was not given (a sweep of segments that look \
             abandoned, or an IPC_RMID of another id); remove(id) is shmctl(id, IPC_RMID) of \
             that one segment: a finished publication looks abandoned until its reader removes \
             it, and other segments are whoever runs the program's to remove",
            self.id, self.key
        )))
    }
}
