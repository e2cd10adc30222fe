//! Checks of lab 2, POSIX message queues: a job dispatcher in which producer processes submit
//! prioritized jobs to a consumer process over a named queue.
//!
//! `mqueue-priority consumer --name N --output F [--capacity C --msg-size S --fail-after K]`
//! creates the queue and says `ready` (with its attributes), waits for `go`, serves until the
//! shutdown message, writes every served job to F and says `done served=K` (or `failed kind=`).
//! `mqueue-priority producer --name N --jobs F [--shutdown --nonblocking]` opens the queue, says
//! `ready`, waits for `go`, submits F's jobs and says `done submitted=K full=F queued=Q` (Q
//! from `attributes()` then). After `done` or `failed` each waits for `exit`, so that the grader
//! sees the descriptors it still holds.
//!
//! Job files are records of priority (u32 LE), length (u32 LE) and payload. On the queue a job is
//! the byte `J` and its payload, the shutdown the byte `Q` alone at priority 0: the grader's own
//! sender and receiver use this format with plain POSIX calls. Once a producer has said `ready`
//! (it has read its jobs), its job file is overwritten with decoys: a consumer that serves one
//! read the file instead of the queue.
//!
//! The checks are grouped by what they judge: `ordering` (priorities, and the format other
//! programs rely on), `blocking` (how a full or empty queue waits), `interrupted_waits` (waits
//! through signals and forced `EINTR`), `wait_costs` (the calls, switches and memory a wait
//! costs), `nonblocking` (a full queue with `O_NONBLOCK`), `descriptor_flags` (`O_NONBLOCK` as
//! the descriptor's, set by anyone sharing it), `direct_receive` (`receive()`
//! retrying `EINTR` outside `serve()`), `messages` (what a message may hold), `names` (queue
//! names), `open_errors` (the kinds of `mq_open()`'s errors), `opening` (a failed `mq_getattr()`
//! of a new descriptor), `process_state` (what `create()` leaves of the process main.rs set
//! up), `attributes` (what `attributes()`
//! reports), `limits` (the limits on a queue's attributes), `proc_limits` (those limits read by
//! the program itself, whole, at each create), `given_limits` (`check()` against limits it is
//! given), `queue_bytes` (the limit on its bytes), `ending` (closing and unlinking), `retries`
//! (what a retried call redoes), `sending` (what a producer's sends show: `full` only from
//! `mq_send`, the file's order). `protocol` drives the programs; `observe` reads what `/proc`
//! shows of them.
//!
//! Besides: `attribute_errors` (a failed `mq_getattr()` or `mq_setattr()` after open),
//! `existing_unheld` (a name taken by a queue nobody holds open), `kernel_ceilings` (`check()`
//! given limits past the kernel's own), `limit_retries` (a failed limit read retried),
//! `limit_read_failures` (each call reading a limit made to fail), `unlimited_given_limits`
//! (`check()` with `RLIM_INFINITY` bytes) and
//! `queue_limit_untouched` (`RLIMIT_MSGQUEUE` never set).

mod attribute_errors;
mod attributes;
mod blocking;
mod descriptor_flags;
mod direct_receive;
mod dot_names;
mod dot_names_errno;
mod ending;
mod exact_byte_budget;
mod existing_unheld;
mod failed_create_state;
mod given_limits;
mod handler_errors;
mod interrupted_waits;
mod jobs;
mod kernel_ceilings;
mod large_messages;
mod limit_read_failures;
mod limit_retries;
mod limits;
mod messages;
mod names;
mod nonblocking;
mod observe;
mod open_errors;
mod opening;
mod ordering;
mod proc_limits;
mod process_state;
mod protocol;
mod queue_bytes;
mod queue_limit_untouched;
mod receive_calls;
mod retries;
mod sending;
mod serving_error_first;
mod shutdown_flags;
mod umask_untouched;
mod unlimited_given_limits;
mod wait_costs;

use std::time::Duration;

use crate::engine::diagnose::{Activity, Hang};
use crate::engine::{Check, Lab};

pub static LAB: Lab = Lab {
    number: 2,
    slug: "mqueue-priority",
    title: "POSIX message queues: a job dispatcher with priorities",
    cleanup_points: 2,
    explain_hang,
    checks: &[
        Check {
            name: "priority-order",
            points: 4,
            timeout: Duration::from_secs(10),
            description: "queued jobs (the grader sees them all in the queue) are served highest \
                          priority first, FIFO within one, a job taken earlier is served earlier; \
                          the queue is mode 0600, its descriptors O_RDONLY and O_WRONLY; \
                          create() leaves the umask, limits and SIGUSR1 handler as main.rs set \
                          them, and no file open",
            exclusive: false,
            hint: Some(
                "One mq_send per job with its priority; receive takes the highest priority first; the queue mode 0600 and the descriptors O_RDONLY / O_WRONLY. See docs/labs/02-mqueue-priority.md, the rules table (the rules naming priority-order).",
            ),
            run: ordering::priority_order,
        },
        Check {
            name: "full-queue-blocks",
            points: 5,
            timeout: Duration::from_secs(20),
            description: "producers on a full queue wait in mq_send, a consumer on an empty one \
                          in mq_receive, at no CPU cost and through signals; every job is then \
                          served exactly once",
            // Its watch of the waits counts a thread's runnable looks and wake-ups, which load
            // does not fake (see engine::waiting); nothing in it is timed against a figure.
            exclusive: false,
            hint: Some(
                "On a full or empty queue, submit and receive wait inside mq_send / mq_receive on a blocking descriptor, and retry EINTR. See docs/labs/02-mqueue-priority.md, the rules table (the waits and EINTR rules).",
            ),
            run: blocking::full_queue_blocks,
        },
        Check {
            name: "nonblocking-full",
            points: 2,
            timeout: Duration::from_secs(10),
            description: "with O_NONBLOCK on the descriptor a full queue is kind=full (EAGAIN), \
                          and set_nonblocking(false) makes the shutdown wait for room, through \
                          signals; a failed mq_setattr is mq-attr",
            exclusive: false,
            hint: Some(
                "set_nonblocking() sets or clears O_NONBLOCK with mq_setattr; a full non-blocking queue is `full`. See docs/labs/02-mqueue-priority.md, the rules table (the set_nonblocking rules).",
            ),
            run: descriptor_flags::nonblocking_full,
        },
        Check {
            name: "message-boundaries",
            points: 3,
            timeout: Duration::from_secs(10),
            description: "payloads from 0 bytes to the largest a 8192-byte message holds arrive \
                          whole, each as one job, through the queue only; as root, so do \
                          payloads past 8192 bytes in 16384-byte messages",
            exclusive: false,
            hint: Some(
                "A message is received into a buffer of mq_msgsize bytes and only the bytes received are kept. See docs/labs/02-mqueue-priority.md, the rules table (the receive buffer and payload rules).",
            ),
            run: messages::message_boundaries,
        },
        Check {
            name: "oversized-refused",
            points: 3,
            timeout: Duration::from_secs(10),
            description: "a payload of msg_size - 1 bytes goes; one byte more, or far more, is \
                          kind=too-big and nothing of it (not a truncated job) reaches the queue",
            exclusive: false,
            hint: Some(
                "A payload longer than the message size allows is `too-big`, and nothing is sent. See docs/labs/02-mqueue-priority.md, the rules table (\"a longer payload is too-big\").",
            ),
            run: messages::oversized_refused,
        },
        Check {
            name: "bad-priority",
            points: 2,
            timeout: Duration::from_secs(10),
            description: "priority MQ_PRIO_MAX - 1 goes; MQ_PRIO_MAX and more are \
                          kind=bad-priority and nothing of them reaches the queue",
            exclusive: false,
            hint: Some(
                "A priority of MQ_PRIO_MAX or more is `bad-priority`, and nothing is sent. See docs/labs/02-mqueue-priority.md, the rules table (the priority rule).",
            ),
            run: messages::bad_priority,
        },
        Check {
            name: "garbled-refused",
            points: 2,
            timeout: Duration::from_secs(10),
            description: "a message that is neither 'J'+payload nor 'Q' alone ('Q' and more, \
                          empty, another tag) ends the consumer with kind=garbled",
            exclusive: false,
            hint: Some(
                "Only `Q` alone is the shutdown and only `J` with a payload a job; any other message is `garbled`. See docs/labs/02-mqueue-priority.md, the rules table (the message format rules).",
            ),
            run: messages::garbled_refused,
        },
        Check {
            name: "name-errors",
            points: 2,
            timeout: Duration::from_secs(20),
            description: "invalid names (256 bytes after the slash too, in multi-byte characters \
                          too) are kind=bad-name, 255 bytes work, a missing queue is not-found, \
                          an existing one exists and stays",
            exclusive: false,
            hint: Some(
                "A queue name is `/` then 1 to 255 bytes without another `/`; open() never creates, create() uses O_CREAT | O_EXCL. See docs/labs/02-mqueue-priority.md, the rules table (the name rules).",
            ),
            run: names::name_errors,
        },
        Check {
            name: "attributes-and-limits",
            points: 3,
            timeout: Duration::from_secs(10),
            description: "the queue has the capacity and message size asked for; exactly msg_max, \
                          msgsize_max and RLIMIT_MSGQUEUE bytes are allowed, one more (or 0) is \
                          kind=over-limit and creates nothing",
            exclusive: false,
            hint: Some(
                "Check capacity and message size against msg_max, msgsize_max and RLIMIT_MSGQUEUE before mq_open; the queue gets the attributes asked for. See docs/labs/02-mqueue-priority.md, the rules table (the attributes and limits rules).",
            ),
            run: limits::attributes_and_limits,
        },
        Check {
            name: "unlinked-at-end",
            points: 3,
            timeout: Duration::from_secs(10),
            description: "the consumer closes and removes its queue when it ends, also when a job \
                          fails, a message is garbled or mq_receive fails, and stops at the \
                          shutdown or a failed job with jobs still queued behind it; a producer \
                          closes its descriptor; failed mq_send / mq_receive / mq_unlink / \
                          mq_getattr are mq-send / mq-receive / mq-unlink / mq-attr with their \
                          errno, a descriptor whose mq_getattr failed closed (and the queue \
                          a create made removed)",
            exclusive: false,
            hint: Some(
                "serve() closes and unlinks the queue however it ends, and close() calls mq_close. See docs/labs/02-mqueue-priority.md, the rules table (the close and unlink rules).",
            ),
            run: ending::unlinked_at_end,
        },
        Check {
            name: "interop-plain-posix",
            points: 3,
            timeout: Duration::from_secs(10),
            description: "the consumer serves jobs the grader sends with plain mq_send, and the \
                          grader's plain mq_receive gets the producer's jobs (up to 8191 bytes) \
                          whole and in order",
            exclusive: false,
            hint: Some(
                "The message format is the handout's, byte for byte, so that a plain POSIX sender and receiver understand it. See docs/labs/02-mqueue-priority.md, the rules table (the rules naming interop-plain-posix).",
            ),
            run: ordering::interop_plain_posix,
        },
    ],
};

fn explain_hang(hang: &Hang) -> Option<String> {
    let doing = |activity: Activity| {
        hang.processes
            .iter()
            .filter(|p| p.activities.contains(&activity))
            .map(|p| p.role.clone())
            .collect::<Vec<_>>()
    };
    let senders = doing(Activity::MqSend);
    let receivers = doing(Activity::MqReceive);
    if !receivers.is_empty() {
        return Some(format!(
            "{} waits on an empty queue: the shutdown message never arrived, or it was not \
             recognized (the byte 'Q' alone ends serve())",
            receivers.join(" and ")
        ));
    }
    if !senders.is_empty() {
        return Some(format!(
            "{} is blocked on a full queue that nobody empties",
            senders.join(" and ")
        ));
    }
    None
}
