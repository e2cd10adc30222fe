//! Checks of lab 8, chunked transfer: messages of any length streamed through one shared
//! memory segment of a fixed size, chunk by chunk, and a pool of segments shared by concurrent
//! sender/receiver pairs.
//!
//! `chunked-transfer send` creates the segment and says `ready` (with `capacity`, the data bytes
//! per chunk); `recv` opens it, unlinks the name and says `ready`; both start at `go`. The
//! receiver says `message` (`index`, `len`, `hash`) after each message, or `failed` with `kind=`
//! and `received=` (bytes its writer got). Message `i` of seed `s` is a block of 8192
//! splitmix64 words (started at `s + i * 2^32`) repeated, each copy XORed with its number, and
//! `hash` is FNV-1a over 64-bit words in four lanes; the grader computes both itself, and with
//! `--save` compares the saved files byte for byte. It never hands the receiver the expected
//! data. A check can make one side stand still mid-message (`send --hold-at`, `recv --hold-at`,
//! `pair --hold-at`, `pair --hold-sender-at`: it says `holding` and waits for `release`) to
//! look at the segment or the free queue from outside while nothing moves, and it can play one
//! side itself on its own mapping of the segment.
//!
//! The files: `data` (the messages' bytes and hash), `layout` (the segment as the handout lays
//! it out, and the grader's mapping of it), `observe` (what /proc shows of a transfer),
//! `transfer` (driving a sender and a receiver), `init` (how a new segment's semaphores were
//! made), `pool` (the pool, its queue and its pairs, as the grader drives them), `signals`
//! (interrupting a blocked wait), `deadline` (how a take's deadline is made), `spinning` (a
//! wait's accesses to its semaphore, and its deadline), `stalled` (a peer that moves, then stalls), `handover`, `handback` and `failures` (a handover held, a pool segment handed
//! back, calls made to fail), `pair_held`, `pair_failures` and `pair_queue` (the parts of the
//! pool check: a pair held giving its segment back, pairs that fail, a pair against the free
//! queue), and the groups of checks: `streams`, `headers`, `broken`, `held`, `errors`,
//! `timeouts`, `pairs`, `speed`. `held_after_create` (what a create leaves its own process
//! holding) and `others_objects` (objects under the program's names that are not its own) are
//! parts of `typed-errors`. Checks of one rule each: `header_reads` (a header read once, its copy acted on),
//! `writer_failures` (a writer that fails), `deadline_carry` (a deadline's nanoseconds carried)
//! and `queue_messages` (a free-queue message that is no id).
//! `failed_opens` (what a failed open leaves, and its kinds), `failed_pool_creates` (what a
//! failed pool create holds) and `destroy_queue` (the queue's error from destroy) are parts of
//! `typed-errors`; `take_deadline_carry` (a take's deadline carried) of `deadline-carry`.
//! `pool_creation` (a pool's queue mode at its creation, its segments' exact size, a segment
//! destroy() cannot unlink) is part of `typed-errors`, `wide_ids` (ids past a byte) of
//! `pool-pairs`.
//! `aged_objects` (old objects under a segment's name) is part of `typed-errors`,
//! `orphaned_pair` (a pool pair whose sender dies) of `peer-killed`.

use std::time::Duration;

use crate::engine::diagnose::{Activity, Hang};
use crate::engine::{Check, Lab};

mod aged_objects;
mod broken;
mod clock_reads;
mod creation_modes;
mod data;
mod deadline;
mod deadline_carry;
mod destroy_queue;
mod errors;
mod failed_opens;
mod failed_pool_creates;
mod failures;
mod handback;
mod handover;
mod header_reads;
mod headers;
mod held;
mod held_after_create;
mod init;
mod layout;
mod missing_name;
mod observe;
mod orphaned_pair;
mod others_objects;
mod pair_failures;
mod pair_held;
mod pair_queue;
mod pairs;
mod pool;
mod pool_creation;
mod queue_messages;
mod signals;
mod speed;
mod spinning;
mod stalled;
mod streams;
mod take_clock;
mod take_deadline_carry;
mod timeouts;
mod transfer;
mod wide_ids;
mod writer_failures;

pub static LAB: Lab = Lab {
    number: 8,
    slug: "chunked-transfer",
    title: "Chunked transfer: messages of any size through a fixed-size segment, and a pool",
    cleanup_points: 2,
    explain_hang,
    checks: &[
        Check {
            name: "empty-and-tiny",
            points: 2,
            timeout: Duration::from_secs(10),
            description: "messages of 0, 1, 0, 7 and 0 bytes follow each other through one \
                          4 KiB segment, each delivered exactly; the semaphores made by \
                          sem_init(); at the post of `full` for chunk 0 its header complete; \
                          with the receiver stopped, the sender fills two slots and waits; \
                          a wait that nothing ends touches its semaphore a few times, not in \
                          a loop, and gives up at its timeout",
            exclusive: false,
            hint: Some(
                "An empty message is one empty chunk with end = 1; a message smaller than a slot is one chunk. See docs/labs/08-chunked-transfer.md, the rules table (the chunk rule) and \"The layout\".",
            ),
            run: streams::empty_and_tiny,
        },
        Check {
            name: "chunk-headers",
            points: 3,
            timeout: Duration::from_secs(15),
            description: "the grader plays the receiver: every chunk the sender puts in the \
                          segment is in slot k % 2 with the right seq, total, len (full chunks \
                          but the last, from a data source of short reads too) and end, and its \
                          bytes",
            exclusive: false,
            hint: Some(
                "Each chunk's header: seq from 0, total in every chunk, end on the chunk that completes the message; full posted only once data and header are in the slot. See docs/labs/08-chunked-transfer.md, \"The layout\" and the rules table (the chunk rules).",
            ),
            run: headers::chunk_headers,
        },
        Check {
            name: "chunk-boundaries",
            points: 4,
            timeout: Duration::from_secs(15),
            description: "for three segment sizes S, messages of C-1, C, C+1, 2C, S-1, S, S+1 \
                          and 10*S+7 bytes (C the chunk capacity) arrive byte for byte, one \
                          size from a data source of short reads to a writer of short writes",
            exclusive: false,
            hint: Some(
                "Chunks are capacity bytes, the last shorter, for sizes at and around the slot's capacity. See docs/labs/08-chunked-transfer.md, the rules table (the chunk rule).",
            ),
            run: streams::chunk_boundaries,
        },
        Check {
            name: "random-sizes",
            points: 3,
            timeout: Duration::from_secs(20),
            description: "eight messages of random sizes up to 4 MiB through a segment of a \
                          random size between 4 KiB and 1 MiB arrive byte for byte",
            exclusive: false,
            hint: Some(
                "Any message size and segment size: chunks of capacity bytes, the last shorter, alternating slots. See docs/labs/08-chunked-transfer.md, the rules table (the chunk and slot rules).",
            ),
            run: streams::random_sizes,
        },
        Check {
            name: "slow-receiver",
            points: 3,
            timeout: Duration::from_secs(15),
            description: "a receiver whose writer takes 1 ms per chunk still gets every byte: \
                          the sender never refills a slot before the receiver is done with it, \
                          and the sender, then the receiver, reads CLOCK_REALTIME for each \
                          wait's deadline",
            exclusive: false,
            hint: Some(
                "The sender fills a slot only after empty; the receiver posts empty only once it is done with the slot. See docs/labs/08-chunked-transfer.md, the rules table (the empty and full rules).",
            ),
            run: streams::slow_receiver,
        },
        Check {
            name: "through-the-segment",
            points: 2,
            timeout: Duration::from_secs(15),
            description: "the chunks travel in the segment: with the sender held mid-message, \
                          its data source was given the next chunk's slot, and the slot of its \
                          last chunk holds that chunk's header and bytes; both \
                          processes map the segment, move no data through system calls and \
                          keep no descriptor of it",
            exclusive: false,
            hint: Some(
                "The data goes into the slot and out of it by memory copies, chunk k in slot k % 2; the descriptor is closed once mapped. See docs/labs/08-chunked-transfer.md, the rules table (the slot rules).",
            ),
            run: held::through_the_segment,
        },
        Check {
            name: "held-mid-message",
            points: 3,
            timeout: Duration::from_secs(20),
            description: "with a receiver held while it writes out a chunk, its slot stays \
                          untouched, its writer was handed the slot itself and its sender \
                          blocks; with a sender held, its receiver blocks; a pair on an empty \
                          pool blocks in mq_timedreceive() with a deadline ahead, each wait one \
                          timed wait with the whole timeout; SIGUSR1 is delivered and each \
                          wait entered again with its deadline, and 1025 EINTRs in a row are \
                          retried; \
                          a receiver held after its post of `empty` reads nothing of the \
                          refilled slot",
            exclusive: false,
            hint: Some(
                "Every wait blocks, retries EINTR until its deadline, and the receiver hands a slot back only when done with it. See docs/labs/08-chunked-transfer.md, the rules table (the wait rules).",
            ),
            run: held::held_mid_message,
        },
        Check {
            name: "broken-chunks",
            points: 2,
            timeout: Duration::from_secs(15),
            description: "the grader plays a broken sender: chunks out of sequence, a changed \
                          length, chunks longer than the capacity or than what is left (lengths \
                          near 2^64 too), an early end, bytes in a 0-byte message are each a \
                          protocol error, after only the good chunks",
            exclusive: false,
            hint: Some(
                "The receiver checks seq, total, len and end on every chunk and refuses a broken one with Protocol, without writing its data out. See docs/labs/08-chunked-transfer.md, the rules table (the receiver rule).",
            ),
            run: broken::broken_chunks,
        },
        Check {
            name: "header-read-once",
            points: 2,
            timeout: Duration::from_secs(15),
            description: "the grader plays the sender and, watching the receiver's loads of \
                          each slot's len (hardware watchpoints), changes that len right after \
                          the receiver's first load of it: the message still arrives exactly, \
                          the length written out and counted the one checked",
            exclusive: false,
            hint: Some(
                "Read each chunk header once, check that copy, and take len and end from it alone: the slot is shared memory. See docs/labs/08-chunked-transfer.md, the rules table (the receiver rule).",
            ),
            run: header_reads::header_read_once,
        },
        Check {
            name: "writer-fails",
            points: 1,
            timeout: Duration::from_secs(15),
            description: "the receiver's write of a saved message's first chunk, then of its \
                          last, made to fail (ptrace, ENOSPC): each receive fails with Write at \
                          once, after only the bytes the writer took; a pool pair whose receiver's \
                          writer fails mid-message keeps its segment off the free queue",
            exclusive: false,
            hint: Some(
                "A writer that fails ends the receive with TransferError::Write: never drop its error. See docs/labs/08-chunked-transfer.md, the rules table (the receiver rule).",
            ),
            run: writer_failures::writer_fails,
        },
        Check {
            name: "typed-errors",
            points: 3,
            timeout: Duration::from_secs(20),
            description: "bad sizes and counts, names that exist or do not, steps that fail \
                          half-way (made to fail with ptrace, each with an errno of its own) \
                          are each refused with their error, leaving nothing of their own (nor \
                          a descriptor in the failed process); a \
                          queue made while the creator is at its mq_open() is refused; pools \
                          of 1 and 10 segments of 4096 bytes work; a pool's queue has mode 600 \
                          at its creating mq_open(), its segments of 4097 bytes exactly, and \
                          a segment destroy() cannot unlink (EACCES) is shm-unlink",
            exclusive: false,
            hint: Some(
                "Each refusal has its kind and leaves nothing made; a create that fails part-way removes what it made, and only that. See docs/labs/08-chunked-transfer.md, the rules table (the error rules).",
            ),
            run: errors::typed_errors,
        },
        Check {
            name: "one-gib-streamed",
            points: 4,
            timeout: Duration::from_secs(45),
            description: "a 1 GiB message streams through a 256 KiB segment, hash exact, copied \
                          in memory, with the receiver's peak memory (VmHWM) a few segments, not \
                          the message",
            // Its judgements (the hash, I/O counters, peak memory) do not move with load.
            exclusive: false,
            hint: Some(
                "The receiver streams: it keeps a few chunks in memory, never the whole message. See docs/labs/08-chunked-transfer.md, the rules table (\"the receiver streams\").",
            ),
            run: streams::one_gib_streamed,
        },
        Check {
            name: "peer-killed",
            points: 3,
            timeout: Duration::from_secs(12),
            description: "a sender killed mid-message gives its receiver a timeout error, \
                          SIGUSR1 interrupting its waits all the while, and a killed receiver \
                          gives its sender one, within their timeout; a live but slow peer is \
                          no error, however long the message takes; a pool pair whose sender \
                          is killed keeps its segment off the free queue",
            exclusive: false,
            hint: Some(
                "Every wait gives up with Timeout after its timeout, counted from the start of that wait (an absolute deadline). See docs/labs/08-chunked-transfer.md, the rules table (the timeout rule).",
            ),
            run: timeouts::peer_killed,
        },
        Check {
            name: "deadline-carry",
            points: 1,
            timeout: Duration::from_secs(15),
            description: "each CLOCK_REALTIME read of a sender and a receiver made to return \
                          nanoseconds that, with the timeout's fraction of a second, sum to \
                          exactly one second (and one nanosecond either side): every \
                          sem_timedwait() deadline, and a take's mq_timedreceive() one, has \
                          tv_nsec below 10^9",
            exclusive: false,
            hint: Some(
                "A deadline's nanoseconds are carried into the seconds from exactly 10^9 on: add with TimeSpec, or carry when they reach 1_000_000_000. See docs/labs/08-chunked-transfer.md, the rules table (the timeout rule).",
            ),
            run: deadline_carry::deadline_carry,
        },
        Check {
            name: "pool-pairs",
            points: 5,
            timeout: Duration::from_secs(25),
            description: "the free queue as created; take() on an empty pool and of a foreign \
                          id (ids past a byte too); a held pair keeps its segment until its \
                          receiver has written the \
                          end, and writes nothing into it once given back, a failed one keeps it \
                          for good; 8 concurrent pairs share the rest, each \
                          receiver gets its own sender's message; free_count() counts the queue",
            exclusive: false,
            hint: Some(
                "The pool's free queue hands out each id once; only the receiver gives it back, once the message is written out; pairs never share a segment. See docs/labs/08-chunked-transfer.md, the rules table (the pool rules).",
            ),
            run: pairs::pool_pairs,
        },
        Check {
            name: "queue-message-length",
            points: 1,
            timeout: Duration::from_secs(15),
            description: "messages of 0 and 3 bytes on the free queue (each the start of a \
                          valid id) are each refused by take() as Queue, no segment taken",
            exclusive: false,
            hint: Some(
                "An id on the free queue is exactly 4 bytes: compare the length mq_timedreceive() returns. See docs/labs/08-chunked-transfer.md, the rules table (the pool rules).",
            ),
            run: queue_messages::queue_message_length,
        },
        Check {
            name: "as-fast-as-pipe",
            points: 3,
            timeout: Duration::from_secs(60),
            description: "256 MiB through a 1 MiB segment take no more CPU time than the same \
                          bytes through a pipe (a margin of 25% for noise), measured in the same \
                          run on one CPU (best of 3 each)",
            exclusive: true,
            hint: Some(
                "Shared memory must cost no more CPU than a pipe: fill whole slots and copy straight in and out of them. See docs/labs/08-chunked-transfer.md, the rules table (the speed rule) and the note after it.",
            ),
            run: speed::as_fast_as_pipe,
        },
    ],
};

/// The timeout the programs are given for each wait, unless a check says otherwise: long
/// enough for a loaded machine, short enough that a lost chunk is an error within the check.
const PEER_TIMEOUT_MS: u64 = 3000;

/// The segments of the pool in `pool-pairs`.
const SEGMENTS: usize = 4;

/// The most segments a pool may have (`MAX_POOL_SEGMENTS`).
const MAX_POOL: usize = 10;

/// The role of a receiver whose sender the check killed (for the hang explanation).
const ORPHANED_RECEIVER: &str = "the receiver, whose sender was killed";
/// The role of a sender whose receiver the check killed.
const ORPHANED_SENDER: &str = "the sender, whose receiver was killed";
/// The role of a pair's receiver whose sender the check holds past its timeout.
const STRANDED_RECEIVER: &str = "the pair's receiver, whose sender the grader holds";

/// Why a side blocked on a futex well past its timeout is still there: what the grader saw,
/// and the two ways a wait outlives its timeout.
fn outlived(who: &str, peer: &str) -> String {
    format!(
        "{who} is still blocked on a futex (a semaphore wait) long after its timeout, while its \
         {peer}: that wait has no timeout (sem_wait instead of sem_timedwait) or a deadline far \
         later than now + the timeout. Every wait must give up after its timeout and report \
         TransferError::Timeout"
    )
}

fn explain_hang(hang: &Hang) -> Option<String> {
    let blocked = |role: &str| {
        hang.by_role(role)
            .is_some_and(|p| p.activities.contains(&Activity::Futex))
    };
    if blocked(ORPHANED_RECEIVER) {
        return Some(outlived(
            "the receiver",
            "sender was killed mid-message and will never post again",
        ));
    }
    if blocked(ORPHANED_SENDER) {
        return Some(outlived(
            "the sender",
            "receiver was killed and will never free a slot again",
        ));
    }
    if blocked(STRANDED_RECEIVER) {
        return Some(outlived(
            "the pair's receiver",
            "sender stands still (held by the grader)",
        ));
    }
    None
}
