//! The last worker's `finish()`, watched with a hardware watchpoint on `Bank::finished` (split
//! from `session.rs`).

use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use super::probe;
use super::segment::Segment;
use crate::engine::Fail;
use crate::engine::tracer::{Field, Tracer, Watched};

/// `Bank::finished`, watched for stores from where the watched worker maps it.
const FINISHED_WORD: &[Field] = &[Field {
    offset: 0,
    len: 4,
    loads: false,
}];

/// The last worker's `finish()`, watched with a hardware watchpoint on `Bank::finished`: at its
/// store the grader reads the mutex's owner word. Being the last one left is no reason to skip
/// the lock: the coordinator may be between its look at the counts and its sleep, and then a
/// finish counted and broadcast without the mutex is a wake-up lost.
pub(super) struct LastFinish {
    worker: i32,
    /// The owner word at the worker's first store to `finished`.
    owner: Receiver<i32>,
}

impl LastFinish {
    /// `None` when the worker's mapping is not found or it cannot be watched.
    pub(super) fn watch(segment: &Segment, worker: i32, name: &str) -> Option<LastFinish> {
        let map = probe::mappings(worker, name)
            .into_iter()
            .find(|m| m.offset == 0)?;
        let address = map.start + segment.layout.counts_at as u64 + 4;
        // The file, not a Segment (whose mapping stays on this thread).
        let file = segment.file().try_clone().ok()?;
        let owner_at = (segment.layout.mutex_at + probe::MUTEX_OWNER_AT) as u64;
        let mut tracer = Tracer::watch_at(worker, address, FINISHED_WORD).ok()??;
        let (seen, owner) = channel();
        std::thread::spawn(move || {
            let until = Instant::now() + WATCH_LIMIT;
            while Instant::now() < until {
                match tracer.next_watched(until) {
                    Ok(None | Some(Watched::Armed)) => {}
                    Ok(Some(Watched::Hit)) => {
                        let mut word = [0u8; 4];
                        let owner =
                            std::os::unix::fs::FileExt::read_exact_at(&file, &mut word, owner_at)
                                .map_or(-1, |()| i32::from_ne_bytes(word));
                        let _ = seen.send(owner);
                        tracer.go_on();
                    }
                    _ => break,
                }
            }
            // Dropped here: the watchpoint is cleared and the worker let go.
            drop(tracer);
        });
        Some(LastFinish { worker, owner })
    }

    /// Once the worker has returned from `finish()`: its store to `finished` was made holding
    /// the mutex (the owner word was its thread id).
    pub fn judge(self) -> Result<(), Fail> {
        let Ok(owner) = self.owner.recv_timeout(Duration::from_secs(1)) else {
            // No store seen (watchpoints unavailable): other checks judge finish().
            return Ok(());
        };
        if owner == self.worker {
            return Ok(());
        }
        let held = if owner == 0 {
            "the mutex was free".to_string()
        } else {
            format!("the mutex was held by thread {owner}")
        };
        Err(Fail::failed(format!(
            "the last worker (pid {}) to finish stored Bank::finished while it did not hold the \
             bank's mutex ({held} at that store, seen with a hardware watchpoint on finished): \
             the last finish was counted without the lock; being the last worker left is no \
             reason to skip it, since the coordinator (or any process holding the mutex) may \
             be between its look at the counts and its pthread_cond_wait(), and a finish \
             counted and broadcast in that window is a wake-up lost: finish() takes the lock \
             every time, then finished += 1 and broadcast",
            self.worker
        )))
    }
}

/// How long the last worker's finish is watched at most.
const WATCH_LIMIT: Duration = Duration::from_secs(15);
