//! `QueueConfig::check(limits)` judges a config against the limits it is given, whatever this
//! machine's are: the program's `check` step is handed limits well above the machine's, and
//! configs at each limit and one past it. Through `create()` alone the limits given are always
//! the machine's, so that a `check()` that reads `/proc` again, or keeps limits of its own,
//! answers the same there.

use rand::RngExt;

use super::limits::mqueue_limit;
use super::protocol::{MESSAGE_OVERHEAD, failed_with, release, said};
use crate::engine::{Fail, Run};

/// Limits for another machine, and a config to judge against them.
struct Case {
    capacity: u64,
    msg_size: u64,
    msg_max: u64,
    msgsize_max: u64,
    queue_bytes: u64,
    /// What the case is, for the message.
    what: String,
    within: bool,
}

impl Case {
    fn args(&self) -> Vec<String> {
        let mut args = vec!["check".to_string()];
        for (flag, value) in [
            ("--capacity", self.capacity),
            ("--msg-size", self.msg_size),
            ("--msg-max", self.msg_max),
            ("--msgsize-max", self.msgsize_max),
            ("--queue-bytes", self.queue_bytes),
        ] {
            args.push(flag.into());
            args.push(value.to_string());
        }
        args
    }
}

/// The cases: limits above this machine's `msg_max` and `msgsize_max`, and configs at each limit
/// (within) and one past it (over).
fn cases(run: &mut Run) -> Result<Vec<Case>, Fail> {
    let msg_max = mqueue_limit("msg_max")? * 10 + run.rng().random_range(1..10);
    let msgsize_max = mqueue_limit("msgsize_max")? * 4 + run.rng().random_range(1..100);
    let roomy = u64::MAX / 2;
    let case = |capacity, msg_size, queue_bytes, what: &str, within| Case {
        capacity,
        msg_size,
        msg_max,
        msgsize_max,
        queue_bytes,
        what: what.to_string(),
        within,
    };
    let bytes = 3 * (msgsize_max + MESSAGE_OVERHEAD);
    Ok(vec![
        case(msg_max, 1, roomy, "a capacity of exactly msg_max", true),
        case(msg_max + 1, 1, roomy, "a capacity of msg_max + 1", false),
        case(
            1,
            msgsize_max,
            roomy,
            "a message size of exactly msgsize_max",
            true,
        ),
        case(
            1,
            msgsize_max + 1,
            roomy,
            "a message size of msgsize_max + 1",
            false,
        ),
        case(
            3,
            msgsize_max,
            bytes,
            "3 messages of msgsize_max bytes in exactly queue_bytes",
            true,
        ),
        case(
            3,
            msgsize_max,
            bytes - 1,
            "3 messages of msgsize_max bytes in queue_bytes - 1",
            false,
        ),
        // 2^32 x 2^32 bytes is 2^64: a product that wraps (wrapping_mul, an unchecked `*`)
        // comes out 0 and fits any queue_bytes.
        Case {
            msg_max: u64::MAX,
            msgsize_max: u64::MAX,
            ..case(
                1 << 32,
                (1 << 32) - MESSAGE_OVERHEAD,
                1000,
                "a queue of 2^64 bytes (capacity x (msg_size + 96), past what a u64 holds: a \
                 product that wraps comes out 0) in 1000 queue_bytes",
                false,
            )
        },
    ])
}

/// Runs each case through the program's `check` step: `within` for a config within the limits
/// given, `failed` with kind=over-limit one past.
pub fn judged_against_given_limits(run: &mut Run) -> Result<String, Fail> {
    let cases = cases(run)?;
    for case in &cases {
        let mut proc = run.spawn(&case.args())?;
        let answer = proc.recv_any()?;
        release(&mut proc)?;
        let right = if case.within {
            answer.kind == "within"
        } else {
            failed_with(&answer, "over-limit")
        };
        if right {
            continue;
        }
        let limits = format!(
            "msg_max {}, msgsize_max {}, queue_bytes {}",
            case.msg_max, case.msgsize_max, case.queue_bytes
        );
        let expected = if case.within {
            "within them: check() judges the config against the limits it is given (here \
             above this machine's), not against /proc or limits of its own"
        } else {
            "over-limit: a config past a limit given is refused"
        };
        return Err(Fail::failed(format!(
            "QueueConfig::check() given the limits {limits} (another machine's) and {} ({} \
             messages of {} bytes) said {}; it is {expected}",
            case.what,
            case.capacity,
            case.msg_size,
            said(&answer)
        )));
    }
    Ok(format!(
        "check() judged {} configs at and one past limits given above this machine's",
        cases.len()
    ))
}
