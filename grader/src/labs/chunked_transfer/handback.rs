//! A pool segment handed back: the pair's receiver is held as its `mq_send()` of the id
//! returns (the segment is the pool's again, and the next pair's at once), the grader reads the
//! semaphores and the slots' headers, and lets it go on: the ring goes back whole (both slots
//! free), and once the id is back, the receiver writes nothing more into the segment.

use std::time::{Duration, Instant};

use super::layout::{Header, Mapped, SLOTS, Sem};
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
    /// `empty` and `full` as the id went back.
    empty: i32,
    full: i32,
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
        let (empty, full) = (segment.value(Sem::Empty), segment.value(Sem::Full));
        self.tracer.release();
        Ok(Some(GivenBack {
            receiver: self.receiver,
            segment,
            headers,
            empty,
            full,
        }))
    }
}

impl GivenBack {
    /// Fails unless both slots were free as the id went back (pair `index`, segment `id`):
    /// the next pair starts on a whole ring, `empty` 2 and `full` 0.
    pub fn ring_free(&self, index: u64, id: &str) -> Result<(), Fail> {
        if self.empty == SLOTS as i32 && self.full == 0 {
            return Ok(());
        }
        let (empty, full) = (self.empty, self.full);
        let cause = if full == 0 && empty < SLOTS as i32 {
            format!(
                ": {} slot(s) not given back to the ring. The receiver gave the id back before \
                 its post of `empty` for the message's last chunk(s); a receiver stopped or \
                 killed there leaves the pool a segment of {empty} slot(s) for good, and the \
                 next pair may take the segment while its slot is still being let go. Post \
                 `empty` for every chunk, the last one too, then give the id back",
                SLOTS as i32 - empty
            )
        } else {
            ": the ring was not as a finished transfer leaves it (every chunk posted by the \
             sender taken by the receiver, every slot freed). Give the id back only once the \
             whole message is written out and its last slot freed"
                .into()
        };
        Err(Fail::failed(format!(
            "pair {index}'s receiver (pid {}) was held by the grader as its mq_send() of id \
             {id} returned (segment {id} given back to the pool): the segment's semaphores said \
             `empty` {empty}, `full` {full}, where a whole ring handed back says `empty` \
             {SLOTS}, `full` 0{cause}",
            self.receiver
        )))
    }

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
