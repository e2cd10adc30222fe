//! `check()`'s byte budget compared exactly: `capacity * (msg_size + 96)` at most `queue_bytes`,
//! in integers, with limits given above 2^53, where an `f64` has no bits left for the last
//! units (a byte over the budget rounds to the budget itself).

use rand::RngExt;

use super::protocol::{MESSAGE_OVERHEAD, failed_with, release, said};
use crate::engine::{Fail, Run};

/// A config and the `queue_bytes` given, with `msg_max` and `msgsize_max` out of the way.
struct Budget {
    capacity: u64,
    msg_size: u64,
    queue_bytes: u64,
    within: bool,
}

impl Budget {
    fn args(&self) -> Vec<String> {
        let mut args = vec!["check".to_string()];
        for (flag, value) in [
            ("--capacity", self.capacity),
            ("--msg-size", self.msg_size),
            ("--msg-max", u64::MAX),
            ("--msgsize-max", u64::MAX),
            ("--queue-bytes", self.queue_bytes),
        ] {
            args.push(flag.into());
            args.push(value.to_string());
        }
        args
    }

    /// Whether a comparison in `f64` judges this case wrong.
    fn misjudged_in_floats(&self) -> bool {
        let bytes = self.capacity as f64 * (self.msg_size as f64 + MESSAGE_OVERHEAD as f64);
        (bytes > self.queue_bytes as f64) == self.within
    }
}

/// Each case at the budget (within) and one byte under it (over): one message of 2^53 bytes,
/// three of about 2^60, and one of 2^64 - 1 - 96 (the bytes exactly `u64::MAX`).
fn budgets(run: &mut Run) -> Vec<Budget> {
    let huge = run.rng().random_range(1u64 << 60..1 << 61) | 1;
    let mut budgets = Vec::new();
    let sizes = [(1, 1u64 << 53), (3, huge), (1, u64::MAX - MESSAGE_OVERHEAD)];
    for (capacity, msg_size) in sizes {
        let bytes = capacity * (msg_size + MESSAGE_OVERHEAD);
        budgets.push(Budget {
            capacity,
            msg_size,
            queue_bytes: bytes - 1,
            within: false,
        });
        budgets.push(Budget {
            capacity,
            msg_size,
            queue_bytes: bytes,
            within: true,
        });
    }
    budgets
}

pub fn bytes_compared_exactly(run: &mut Run) -> Result<(), Fail> {
    for budget in budgets(run) {
        let mut proc = run.spawn(&budget.args())?;
        let answer = proc.recv_any()?;
        release(&mut proc)?;
        let right = if budget.within {
            answer.kind == "within"
        } else {
            failed_with(&answer, "over-limit")
        };
        if right {
            continue;
        }
        let bytes = budget.capacity as u128 * (budget.msg_size as u128 + 96);
        let (expected, why) = if budget.within {
            (
                "within: the limit is inclusive",
                "compare the exact product with queue_bytes (>, not >=), in u64 with checked \
                 arithmetic or in u128",
            )
        } else if budget.misjudged_in_floats() {
            (
                "over-limit, by one byte",
                "the bytes were compared in floating point (an f64 holds 53 bits: above 2^53 a \
                 byte more or less rounds to the same value), or in another type that loses the \
                 last units. Compute capacity * (msg_size + 96) in integers (checked_mul and \
                 checked_add, or u128) and compare exactly",
            )
        } else {
            (
                "over-limit, by one byte",
                "the queue's bytes are capacity * (msg_size + 96), compared exactly with \
                 queue_bytes, in integers that neither wrap nor round",
            )
        };
        return Err(Fail::failed(format!(
            "QueueConfig::check() given msg_max and msgsize_max 2^64 - 1 and queue_bytes {}, \
             and {} message(s) of {} bytes ({bytes} bytes with the 96 of each) said {}; it is \
             {expected}: {why}",
            budget.queue_bytes,
            budget.capacity,
            budget.msg_size,
            said(&answer)
        )));
    }
    Ok(())
}
