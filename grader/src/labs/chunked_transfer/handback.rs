//! A pool segment handed back: the pair's receiver is held as its `mq_send()` of the id
//! returns (the segment is the pool's again, and the next pair's at once), the grader reads the
//! slots' headers, and lets it go on: once the id is back, the receiver writes nothing more into
//! the segment.

use std::time::{Duration, Instant};

use super::layout::{Header, Mapped, SLOTS};
use super::observe::dev_shm;
use crate::engine::Fail;
use crate::engine::tracer::{Action, Call, Tracer};

/// How long the released receiver may take to reach its give-back, on a loaded machine.
const SETTLE: Duration = Duration::from_secs(5);

/// A receiver that will be held as its give-back returns.
pub struct GiveBackHeld {
    receiver: i32,
    tracer: Tracer,
}

/// The slots' headers as the receiver gave the segment back.
pub struct GivenBack {
    receiver: i32,
    segment: Mapped,
    headers: Vec<Header>,
}

impl GiveBackHeld {
    /// Starts holding `receiver` (a pair's receiver, held by the pair's own `holding` before
    /// its last chunk) at the return of its next `mq_send()`; `None` where the machine does
    /// not allow tracing.
    pub fn attach(receiver: i32) -> Result<Option<GiveBackHeld>, Fail> {
        let call = Call::any(libc::SYS_mq_timedsend);
        Ok(Tracer::attach(receiver, call, Action::HoldAfter)?
            .map(|tracer| GiveBackHeld { receiver, tracer }))
    }

    /// Once the receiver, released by the pair's `release`, is held as its give-back returns:
    /// reads the slots of segment `name` (`size` bytes) and lets it go on. `None` if it never
    /// got there (judged by the checks that follow the pair).
    pub fn read_slots(mut self, name: &str, size: usize) -> Result<Option<GivenBack>, Fail> {
        if !self.tracer.held_before(Instant::now() + SETTLE)? {
            return Ok(None);
        }
        // Read while it is held: what it does next is what is judged.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dev_shm(name))?;
        let segment = Mapped::open(&file, size)?;
        let headers = (0..SLOTS).map(|slot| segment.header(slot)).collect();
        self.tracer.release();
        Ok(Some(GivenBack {
            receiver: self.receiver,
            segment,
            headers,
        }))
    }
}

impl GivenBack {
    /// Fails if a slot's header changed since the give-back (pair `index`, segment `id`), once
    /// the pair is done.
    pub fn unchanged(&self, index: u64, id: &str) -> Result<(), Fail> {
        for (slot, before) in (0..SLOTS).zip(&self.headers) {
            let after = self.segment.header(slot);
            if after != *before {
                return Err(Fail::failed(format!(
                    "pair {index}'s receiver (pid {}) was held by the grader as its mq_send() \
                     of id {id} returned (segment {id} given back to the pool), then let go on: \
                     afterwards slot {slot}'s header said {}, where it said {} as the id went \
                     back. The receiver wrote into the segment after giving it back; from then \
                     on the segment is the next pair's, which may already be putting its \
                     chunks there. Give the id back last, and touch nothing of the segment \
                     after",
                    self.receiver,
                    after.describe(),
                    before.describe()
                )));
            }
        }
        Ok(())
    }
}
