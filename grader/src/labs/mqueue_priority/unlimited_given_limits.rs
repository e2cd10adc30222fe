//! `QueueConfig::check()` given an unlimited `queue_bytes` (`RLIM_INFINITY`): only the bytes are
//! unlimited, so capacity and message size are still judged against `msg_max` and
//! `msgsize_max`, 0 and one past each refused.

use rand::RngExt;

use super::limits::mqueue_limit;
use super::protocol::{failed_with, release, said};
use crate::engine::{Fail, Run};

/// Runs the program's `check` step with `queue_bytes` `RLIM_INFINITY` and limits above this
/// machine's: each of capacity and message size at 0, at its limit and one past it.
pub fn limits_judged_when_bytes_unlimited(run: &mut Run) -> Result<(), Fail> {
    let msg_max = mqueue_limit("msg_max")? * 10 + run.rng().random_range(1..10);
    let msgsize_max = mqueue_limit("msgsize_max")? * 4 + run.rng().random_range(1..100);
    // (capacity, message size, what, within)
    let cases = [
        (
            msg_max,
            msgsize_max,
            "a capacity of msg_max and a message size of msgsize_max",
            true,
        ),
        (0, 1, "a capacity of 0", false),
        (msg_max + 1, 1, "a capacity of msg_max + 1", false),
        (1, 0, "a message size of 0", false),
        (
            1,
            msgsize_max + 1,
            "a message size of msgsize_max + 1",
            false,
        ),
    ];
    for (capacity, msg_size, what, within) in cases {
        let args: Vec<String> = [
            ("--capacity", capacity),
            ("--msg-size", msg_size),
            ("--msg-max", msg_max),
            ("--msgsize-max", msgsize_max),
            ("--queue-bytes", libc::RLIM_INFINITY),
        ]
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_string(), value.to_string()])
        .collect();
        let args: Vec<String> = std::iter::once("check".to_string()).chain(args).collect();
        let mut proc = run.spawn(&args)?;
        let answer = proc.recv_any()?;
        release(&mut proc)?;
        let right = if within {
            answer.kind == "within"
        } else {
            failed_with(&answer, "over-limit")
        };
        if right {
            continue;
        }
        let expected = if within {
            "within them: each is at its limit, and an unlimited queue_bytes fits any queue"
                .to_string()
        } else if answer.kind == "within" {
            "over-limit: RLIM_INFINITY lifts the limit on the queue's bytes only; capacity and \
             message size are still 1 to msg_max and 1 to msgsize_max (a check() that returns \
             Ok as soon as queue_bytes is RLIM_INFINITY skips them)"
                .to_string()
        } else {
            "over-limit: a config past a limit given is refused, with the limits' own kind"
                .to_string()
        };
        return Err(Fail::failed(format!(
            "QueueConfig::check() given msg_max {msg_max}, msgsize_max {msgsize_max} and \
             queue_bytes RLIM_INFINITY ({}, no limit on the bytes) and {what} ({capacity} \
             messages of {msg_size} bytes) said {}; it is {expected}",
            libc::RLIM_INFINITY,
            said(&answer)
        )));
    }
    Ok(())
}
