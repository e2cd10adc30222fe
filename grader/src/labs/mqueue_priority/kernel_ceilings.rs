//! `QueueConfig::check(limits)` judges against the limits it is given even where they are above
//! the kernel's own ceilings (`HARD_MSGMAX`, 65536 messages; `HARD_MSGSIZEMAX`, 16 MiB): those
//! are the kernel's to apply when it creates a queue, and a machine's `msg_max` may be set up to
//! them, another kernel's higher. The limits given here are past both ceilings (and past
//! `u16`), and each config is at a limit (within) and one past it (over).

use rand::RngExt;

use super::protocol::{failed_with, release, said};
use crate::engine::{Fail, Run};

/// Linux's ceiling on `msg_max`, whatever `/proc` says.
const HARD_MSGMAX: u64 = 65_536;
/// Linux's ceiling on `msgsize_max`.
const HARD_MSGSIZEMAX: u64 = 16 * 1024 * 1024;

/// The program's `check` step given `msg_max` and `msgsize_max` above the kernel's ceilings:
/// a capacity of exactly `msg_max` with a message size of exactly `msgsize_max` is `within`,
/// one more of either is `over-limit`.
pub fn limits_above_kernel_ceilings(run: &mut Run) -> Result<(), Fail> {
    let msg_max = HARD_MSGMAX * 3 + run.rng().random_range(1..1000);
    let msgsize_max = HARD_MSGSIZEMAX * 2 + run.rng().random_range(1..1000);
    let roomy = u64::MAX / 2;
    // Both at their limit in one config: a ceiling on either refuses it.
    let cases = [
        (
            msg_max,
            msgsize_max,
            "a capacity of exactly msg_max and a message size of exactly msgsize_max",
            true,
        ),
        (msg_max + 1, 1, "a capacity of msg_max + 1", false),
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
            ("--queue-bytes", roomy),
        ]
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_string(), value.to_string()])
        .collect();
        let mut proc = run.spawn(&[vec!["check".to_string()], args].concat())?;
        let answer = proc.recv_any()?;
        release(&mut proc)?;
        let right = match within {
            true => answer.kind == "within",
            false => failed_with(&answer, "over-limit"),
        };
        if right {
            continue;
        }
        let given = format!(
            "the limits msg_max {msg_max} (past the kernel's HARD_MSGMAX, {HARD_MSGMAX}), \
             msgsize_max {msgsize_max} (past its HARD_MSGSIZEMAX, {HARD_MSGSIZEMAX})"
        );
        let error = answer.get("error").unwrap_or_default();
        let ceiling = [HARD_MSGMAX, HARD_MSGSIZEMAX]
            .into_iter()
            .find(|ceiling| error.contains(&ceiling.to_string()));
        let why = match (within, ceiling) {
            (true, Some(ceiling)) => format!(
                ": the limit it names, {ceiling}, is the kernel's own ceiling, not the limit \
                 given, so check() holds the limits it is given to the kernel's HARD_MSGMAX / \
                 HARD_MSGSIZEMAX (constants of its own). Those are the kernel's to apply at \
                 mq_open(); check() judges against the limits it is given, whatever they are"
            ),
            (true, None) => ": the config is within the limits given; check() judges against \
                               them alone, not against ceilings of its own (the kernel's \
                               HARD_MSGMAX and HARD_MSGSIZEMAX, a type too narrow for them) \
                               nor this machine's /proc"
                .to_string(),
            (false, _) => ": a config past a limit given is over-limit".to_string(),
        };
        return Err(Fail::failed(format!(
            "QueueConfig::check() given {given}, queue_bytes {roomy}, and {what} ({capacity} \
             messages of {msg_size} bytes) said {}; it is {}{why}",
            said(&answer),
            if within { "within them" } else { "over-limit" }
        )));
    }
    Ok(())
}
