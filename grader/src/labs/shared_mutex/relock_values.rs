//! What a store to the mutex's lock word left there: an unlock leaves it without the storing
//! worker's thread id, so a store that writes the same owner back (a compare-and-swap of the
//! value it holds) is no unlock, however it looks to a watchpoint.

use std::os::unix::fs::FileExt;

use super::segment::dev_shm;

/// glibc's `FUTEX_TID_MASK`: the owner's thread id in the lock word, without the waiters and
/// owner-died bits.
const TID_MASK: u32 = 0x3fff_ffff;

/// The bank's lock word, read through `/dev/shm/<name>` (no mapping: the tracer's thread has
/// it for its life).
pub(super) struct LockWord {
    file: std::fs::File,
    at: u64,
}

impl LockWord {
    /// `None` if the segment cannot be opened.
    pub(super) fn open(name: &str, mutex_at: usize) -> Option<LockWord> {
        let file = std::fs::File::open(dev_shm(name)).ok()?;
        Some(LockWord {
            file,
            at: mutex_at as u64,
        })
    }

    /// Whether the word, read while worker `pid` (single-threaded: its thread id) is stopped
    /// right after its store, no longer names it as the owner: free, or taken by another
    /// since. Unreadable counts as released (nothing judged on it).
    pub(super) fn released_by(&self, pid: i32) -> bool {
        let mut word = [0u8; 4];
        if self.file.read_exact_at(&mut word, self.at).is_err() {
            return true;
        }
        u32::from_ne_bytes(word) & TID_MASK != pid as u32
    }
}

/// What the watch saw between the two transfers, for the failure message.
pub(super) fn no_release(kept_stores: u32) -> String {
    if kept_stores == 0 {
        "a single store to the mutex's lock word between them (a second watchpoint on it)".into()
    } else {
        format!(
            "releasing the mutex between them: a second watchpoint on its lock word saw {} \
             store{} there, and after each the word still held the worker's own thread id \
             (read at the store, the worker stopped): the same owner written back (a \
             compare-and-swap of the value the word holds, say), not an unlock, which leaves \
             the word free (0)",
            kept_stores,
            if kept_stores == 1 { "" } else { "s" }
        )
    }
}
