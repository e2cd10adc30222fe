//! `/.` and `/..`: valid names by the rules (`/`, then 1 or 2 bytes, none of them `/`), which
//! the kernel refuses at `mq_open()` with `EACCES`. A name check of the program's own must let
//! them through, and the kernel's error is `mq-open` naming its errno, from `create()` and from
//! `open()` alike: a name is not a path, `.` and `..` are no directories here.

use super::protocol::{failed_errno, failed_with, release, said, spawn_consumer, spawn_producer};
use crate::engine::{Fail, Run};

pub fn dot_names_reach_the_kernel(run: &mut Run) -> Result<(), Fail> {
    for name in ["/.", "/.."] {
        for consumer in [true, false] {
            let (doing, who) = if consumer {
                ("creating a queue", "the consumer")
            } else {
                ("a producer opening a queue", "the producer")
            };
            let (mut proc, answer, _) = if consumer {
                spawn_consumer(run, name, &[], None)?
            } else {
                spawn_producer(run, name, &[], false, false, "the producer")?
            };
            release(&mut proc)?;
            if failed_with(&answer, "mq-open") && failed_errno(&answer, "EACCES") {
                continue;
            }
            // The kernel never answers bad-name: the program's own check refused the name.
            let why = if failed_with(&answer, "bad-name") {
                "check_name() refused it: `.` and `..` are 1 and 2 bytes with \
                 no `/`, a valid name by the rules (a name is not a path, and no file or \
                 directory is named here). check_name() refuses only what the rules say; the \
                 kernel refuses these names itself (EACCES), and that error is mq-open"
            } else if failed_with(&answer, "not-found") || failed_with(&answer, "exists") {
                "the kernel's error for a name check_name() let through (EACCES here) is \
                 mq-open naming its errno, not not-found or exists"
            } else {
                "the kernel refuses the name at mq_open() with EACCES, which is mq-open naming \
                 its errno"
            };
            return Err(Fail::failed(format!(
                "{doing} named {name}, {who} said {}, not `failed` with kind=mq-open and EACCES: \
                 {why}",
                said(&answer)
            )));
        }
    }
    Ok(())
}
