//! Checks of lab 7, semaphores: a producer hands 4 KiB records to a consumer through a one-slot
//! buffer in shared memory, in lock step, signalling *ready* and *ok* with named POSIX
//! semaphores or with POSIX message queues.
//!
//! `semaphore-handoff --mechanism semaphores|queues --ready N --ok M --rounds R [--cpu C]
//! [--interruptible] [--pause-producer-at K] [--pause-consumer-at K] [--pause-after-create]`:
//! the parent creates the handoff (with `--pause-after-create` it says `created` and waits for
//! `go`; if creating fails it reports it and waits for `exit`), forks the consumer and the
//! producer, unlinks the names and says `ready` (both pids). The producer starts at `go`, which
//! carries the seed of the records: only the producer is told, so a consumer cannot make up what
//! it should receive. A side told to pause says `paused` before record K and waits for `go`, the
//! other side then waiting for it. Each side says `done` (the producer with the time its `put()`
//! calls took, the consumer with how many records were good, torn, stale or skipped, and the
//! digest of all it took) or `failed` with `kind=`; the parent says `ended` and waits for `exit`.
//!
//! The grader does not take the consumer's word for the records: it recomputes the digest of
//! the records the producer was to send, from the seed, with its own copy of the lab's given
//! `Record::generate`; and it reads and rewrites the slot itself, in the producer's memory,
//! while the consumer is held. It looks at how a side waits from outside: the call it sits in,
//! the futex or queue that call waits on, the deadline of its timed wait.
//!
//! Files: `handover.rs` drives the protocol and judges the reports, `probe.rs` reads the processes
//! from `/proc`, and the checks are grouped in `rounds.rs` (many records), `order.rs` (the order of
//! writes, copies and posts, forced), `slot.rs` (the records go through the slot), `waits.rs`
//! (blocking), `peer_gone.rs` (a dead peer), `gone_after_post.rs` (a peer gone after its part: its
//! record still taken, a wait error still `Wait`), `forced_waits.rs` (waits driven through their
//! system calls: every deadline read, slices made to time out or fail, the semaphore's word
//! watched), `clock.rs` (the waiting side's clock set by the grader, its vDSO hidden), `signals.rs`
//! (signal handlers during waits), `names.rs` (the objects' creation, names and release),
//! `error_paths.rs` (failures and their clean-up) and `create_cleanup.rs` (a failed `create()`
//! whose clean-up fails too). Beside them: `failed_calls.rs` (waits and posts made to fail),
//! `watchpoints.rs` (looks counted with hardware watchpoints), `clock_reads.rs` (a clock read
//! before every timed wait), `queue_looks.rs` (no looks at a queue before its wait blocks),
//! `creating_calls.rs` (the calls that create the objects), `closing.rs` (`close()`), `planted.rs`
//! (the objects the grader plants), and `create_errors.rs`, `name_limits.rs` and `unlink_errors.rs`
//! (the error paths).
//! And `affinity_kept.rs` (the affinity after the rounds), `after_unlink.rs` (what `unlink()`
//! leaves, and the parent's exit), `open_errnos.rs` (opens failing with errnos named nowhere),
//! `resent_post.rs` (signals during a send made again) and `unposted_record.rs` (a record in
//! the slot with no ready posted).
//! Also `process_left.rs` (the signals and the affinity `create()` leaves), `eintr_straight_back.rs`
//! (no sleep between an `EINTR` and the next wait) and `others_kept.rs` (objects under other
//! names survive a run).
//!
//! Sizes from measurements on a 2-CPU machine: a correct round trip takes 2-100 us (up to ~90 us
//! when the sides sit on different CPUs), so 10,000 free rounds take at most a few seconds.

mod affinity_kept;
mod after_unlink;
mod bench_rounds;
mod carried_errno;
mod clock;
mod clock_reads;
mod closing;
mod create_cleanup;
mod create_errors;
mod creating_calls;
mod default_action;
mod dispositions;
mod eintr_after_last_ok;
mod eintr_straight_back;
mod error_paths;
mod failed_calls;
mod failed_clock_read;
mod failed_step_ends;
mod forced_waits;
mod gone_after_post;
mod handover;
mod name_limits;
mod names;
mod names_after_gone;
mod open_errnos;
mod order;
mod others_kept;
mod peer_gone;
mod planted;
mod probe;
mod process_left;
mod queue_looks;
mod ready_looks;
mod refused_deadline;
mod resent_post;
mod rounds;
mod signals;
mod slot;
mod unlink_errors;
mod unposted_record;
mod waits;
mod watchpoints;

use std::time::Duration;

use crate::engine::diagnose::{Activity, Hang, Stuck};
use crate::engine::{Check, Lab};

pub static LAB: Lab = Lab {
    number: 7,
    slug: "semaphore-handoff",
    title: "Semaphores: a one-slot handoff between two processes, with semaphores and queues",
    cleanup_points: 2,
    explain_hang,
    checks: &[
        Check {
            name: "sem-free-rounds",
            points: 4,
            timeout: Duration::from_secs(20),
            description: "10,000 records handed over with semaphores, sides on any CPU (their \
                          affinity left as the grader's): none lost, repeated, stale or torn; \
                          the round-trip time is reported",
            exclusive: false,
            hint: Some(
                "Write the record, then post ready; copy it, then post ok. See docs/labs/07-semaphore-handoff.md, \"The idea\" (\"Order\") and the rules table.",
            ),
            run: rounds::sem_free_rounds,
        },
        Check {
            name: "sem-pinned-rounds",
            points: 4,
            timeout: Duration::from_secs(10),
            description: "1,000 records with semaphores, both sides on one CPU (where a post \
                          before the write shows): all intact and in order",
            exclusive: false,
            hint: Some(
                "Write the record, then post ready; copy it, then post ok, whatever order the processes run in. See docs/labs/07-semaphore-handoff.md, \"The idea\" (\"Order\") and the rules table.",
            ),
            run: rounds::sem_pinned_rounds,
        },
        Check {
            name: "mq-rounds",
            points: 4,
            timeout: Duration::from_secs(25),
            description: "the same handoff with message queues: 1,000 records on one CPU and \
                          10,000 on any, all intact and in order; the round-trip time is \
                          reported",
            exclusive: false,
            hint: Some(
                "With queues as the signals, the handoff keeps the same order: write, then post ready; copy, then post ok. See docs/labs/07-semaphore-handoff.md, the rules table (the order and queue rules).",
            ),
            run: rounds::mq_rounds,
        },
        Check {
            name: "posts-in-order",
            points: 2,
            timeout: Duration::from_secs(10),
            description: "the grader holds a post in the middle (its queue full): the producer \
                          has written the record before it posts ready, the consumer has \
                          copied it before it posts ok; neither side makes a queue both \
                          hold non-blocking",
            exclusive: false,
            hint: Some(
                "A post promises the data is there: post only after the write or the copy it announces. See docs/labs/07-semaphore-handoff.md, \"The idea\" (\"Order\").",
            ),
            run: order::posts_in_order,
        },
        Check {
            name: "record-in-slot",
            points: 2,
            timeout: Duration::from_secs(15),
            description: "while the consumer is held before record K, the producer's shared \
                          slot holds record K (and no other shared mapping a copy), the consumer \
                          maps it, and the consumer takes the record the grader writes there in \
                          its place; put() copies each record over whatever the slot holds",
            exclusive: false,
            hint: Some(
                "The records travel through the shared slot mapped before fork(), and only through it. See docs/labs/07-semaphore-handoff.md, the rules table (the slot rules).",
            ),
            run: slot::record_in_slot,
        },
        Check {
            name: "waits-block",
            points: 3,
            timeout: Duration::from_secs(20),
            description: "a side waiting for the other (held by the grader) blocks on the named \
                          semaphore or the queue, in timed slices of WAIT_SLICE with deadlines \
                          ahead on CLOCK_REALTIME, without trying the semaphore again and again, \
                          and does not give up on a live peer held for seconds or after hundreds \
                          of slices, nor return from put() before its ok",
            // Its judgements read deadlines, call sites and watchpoint counts, which load does
            // not change; most of its time is a hold, which need not keep other checks waiting.
            exclusive: false,
            hint: Some(
                "A wait blocks in sem_timedwait / mq_timedreceive in slices of WAIT_SLICE with a fresh absolute deadline, and waits again on ETIMEDOUT while the peer lives. See docs/labs/07-semaphore-handoff.md, \"The idea\" (\"Blocking, not spinning\") and the rules table.",
            ),
            run: waits::waits_block,
        },
        Check {
            name: "signals-during-waits",
            points: 3,
            timeout: Duration::from_secs(30),
            description: "SIGUSR1 (with a handler) delivered to a waiting side, one at a \
                          time, and every millisecond to both, does not break the protocol: \
                          EINTR is waited through, with a deadline read anew, a slice after the \
                          signal, and signals are not blocked meanwhile",
            exclusive: false,
            hint: Some(
                "EINTR means wait again, with a deadline read anew from the clock. See docs/labs/07-semaphore-handoff.md, \"The idea\" (\"EINTR\").",
            ),
            run: signals::signals_during_waits,
        },
        Check {
            name: "peer-exits-early",
            points: 3,
            timeout: Duration::from_secs(20),
            description: "when one side is killed, the other reports kind=peer-gone within \
                          seconds instead of waiting for ever (semaphores both ways, queues); \
                          a side that posted its last signal and exited is not given up on, even after EINTR; \
                          a record put before the producer died is taken; a wait error with \
                          the peer gone is kind=wait",
            exclusive: false,
            hint: Some(
                "A peer that dies never posts: after a timed-out slice, check whether the peer is gone (PeerGone), but take a signal already there first. See docs/labs/07-semaphore-handoff.md, \"The idea\" (\"A peer that dies never posts\").",
            ),
            run: peer_gone::peer_exits_early,
        },
        Check {
            name: "objects-created",
            points: 2,
            timeout: Duration::from_secs(10),
            description: "right after create(): a shared anonymous slot, semaphores at 0, \
                          queues of one SIGNAL_SIZE message, every object with mode 0600",
            exclusive: false,
            hint: Some(
                "The semaphores are named ones created at 0, the queues hold one message of SIGNAL_SIZE bytes, the slot is a shared anonymous mapping, all mode 0600. See docs/labs/07-semaphore-handoff.md, the rules table (the creation rules).",
            ),
            run: names::objects_created,
        },
        Check {
            name: "names-unlinked",
            points: 2,
            timeout: Duration::from_secs(15),
            description: "the semaphores are named (mapped from /dev/shm) and, like the \
                          queues, unlinked once both sides hold them; close() releases both \
                          signals and the slot, every step even when one fails",
            exclusive: false,
            hint: Some(
                "Unlink the names as soon as both sides hold them; close() closes both signals and unmaps the slot. See docs/labs/07-semaphore-handoff.md, the rules table (the unlink and close rules).",
            ),
            run: names::names_unlinked,
        },
        Check {
            name: "error-paths",
            points: 2,
            timeout: Duration::from_secs(15),
            description: "a name already taken gives kind=exists, a name refused kind=open, a \
                          failed unlink kind=unlink, a name taken right after a look kind=exists, \
                          a failed mmap() kind=mmap, a timed wait failing with another error \
                          kind=wait; create() removes what it made and leaves the existing \
                          object alone",
            exclusive: false,
            hint: Some(
                "O_EXCL: an existing name is Exists; a failed create() removes what it made, and only that; unlink() tries both names. See docs/labs/07-semaphore-handoff.md, the rules table (the error rules).",
            ),
            run: error_paths::error_paths,
        },
    ],
};

const PARENT: &str = "the parent";
const PRODUCER: &str = "the producer";
const CONSUMER: &str = "the consumer";
/// Payload bytes in a record (`PAYLOAD` in the lab).
const PAYLOAD: usize = 4080;
/// Bytes of a whole record in the slot: its number, the payload, the checksum.
const RECORD_SIZE: u64 = (PAYLOAD + 16) as u64;
/// The size of a signal queue's one message (`SIGNAL_SIZE` in the lab).
const SIGNAL_SIZE: usize = 8;
/// How long one timed wait lasts (`WAIT_SLICE` in the lab).
const WAIT_SLICE: Duration = Duration::from_millis(100);

fn waits(process: &Stuck) -> bool {
    process.activities.iter().any(|a| {
        matches!(
            a,
            Activity::Futex | Activity::MqReceive | Activity::Sleep | Activity::Poll
        )
    })
}

fn explain_hang(hang: &Hang) -> Option<String> {
    let producer = hang.by_role(PRODUCER);
    let consumer = hang.by_role(CONSUMER);
    match (producer, consumer) {
        (Some(alone), None) | (None, Some(alone)) if waits(alone) => {
            let other = if alone.role == PRODUCER {
                CONSUMER
            } else {
                PRODUCER
            };
            Some(format!(
                "{} still waits for {other}, which is gone: wait in slices (sem_timedwait, \
                 mq_timedreceive) and give up with PeerGone when Peer::gone() says so",
                alone.role
            ))
        }
        (Some(p), Some(c)) if waits(p) && waits(c) => Some(
            "the producer and the consumer both wait for each other: a signal was lost or never \
             sent (each round: the producer writes, posts ready, waits for ok; the consumer \
             waits for ready, reads, posts ok)"
                .into(),
        ),
        _ => None,
    }
}
