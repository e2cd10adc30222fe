//! # Lab 2: POSIX message queues
//!
//! A small job dispatcher. One consumer process creates a named message queue and serves the
//! jobs found in it; any number of producer processes (separate runs of the program) open the
//! queue and submit jobs, each with a priority. A shutdown message ends the consumer, which then
//! removes the queue.
//!
//! ```text
//!   consumer: mq_open(name, O_CREAT|O_EXCL|O_RDONLY, 0600, {maxmsg, msgsize})
//!             loop { mq_receive(buffer of msgsize) -> job: serve it | shutdown: stop }
//!             mq_close, mq_unlink(name)            (also when serving failed)
//!   producer: mq_open(name, O_WRONLY) ... mq_send(['J', payload...], priority) ... mq_close
//!   anyone:   mq_send(['Q'], 0)                    (shutdown, after every queued job)
//! ```
//!
//! What this lab is about:
//! - A message queue keeps message boundaries: one `mq_send()` is one `mq_receive()`, of exactly
//!   the length sent, unlike a pipe's byte stream.
//! - `mq_receive()` returns the oldest message of the highest priority: priorities first, FIFO
//!   within a priority.
//! - A queue has a capacity (`mq_maxmsg`) and a message size (`mq_msgsize`), fixed when it is
//!   created. An unprivileged user may not exceed `/proc/sys/fs/mqueue/msg_max` (often 10),
//!   `/proc/sys/fs/mqueue/msgsize_max` (often 8192), nor `RLIMIT_MSGQUEUE` bytes in all.
//! - `mq_send()` on a full queue blocks until there is room, `mq_receive()` on an empty one until
//!   a message arrives; with `O_NONBLOCK` both fail with `EAGAIN` instead.
//! - The receive buffer must hold `mq_msgsize` bytes, or `mq_receive()` fails with `EMSGSIZE`;
//!   a message longer than `mq_msgsize` cannot be sent (`EMSGSIZE` again).
//! - A queue lives in the kernel until `mq_unlink()`, like a file: forget it and it stays until
//!   reboot.
//!
//! Every message starts with one byte that says what it is: [`JOB_TAG`] followed by the job's
//! payload, or [`SHUTDOWN_TAG`] alone. Any program that follows this format can talk to yours.
//!
//! The program in `main.rs` calls [`JobQueue::create`] and [`JobQueue::serve`] (consumer), or
//! [`JobQueue::open`], [`JobQueue::submit`] and [`JobQueue::shutdown`] (producer). Keep
//! `main.rs` as it is: the grader talks to it.

use nix::errno::Errno;
use nix::mqueue::MqdT;

/// The first byte of a job message; the payload follows.
pub const JOB_TAG: u8 = b'J';
/// The only byte of a shutdown message.
pub const SHUTDOWN_TAG: u8 = b'Q';
/// Priorities go from 0 (lowest) to `MQ_PRIO_MAX - 1`; Linux's `MQ_PRIO_MAX` is 32768.
pub const MQ_PRIO_MAX: u32 = 32768;
/// The longest name accepted after its leading `/` (`NAME_MAX`).
pub const MAX_NAME_LEN: usize = 255;
/// What the kernel charges per message against `RLIMIT_MSGQUEUE` besides the message itself
/// (its header and its place in the priority tree), rounded up.
pub const MESSAGE_OVERHEAD: u64 = 96;

/// Everything that can go wrong with a job queue.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The name is not `/` followed by 1 to 255 characters none of which is `/`.
    #[error("invalid queue name {name:?}: {reason}")]
    BadName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The limits could not be read from `/proc/sys/fs/mqueue` or `getrlimit()`.
    #[error("cannot read the message queue limits: {0}")]
    Limits(String),
    /// The attributes asked for exceed what this user may have (or are not positive).
    #[error("{what} of {asked} is not allowed: the limit is {limit}")]
    OverLimit {
        /// Which attribute.
        what: &'static str,
        /// What was asked.
        asked: u64,
        /// The most allowed.
        limit: u64,
    },
    /// A queue with this name exists already.
    #[error("{name} already exists")]
    Exists {
        /// The name.
        name: String,
    },
    /// No queue has this name: never created, or unlinked.
    #[error("{name} does not exist")]
    NotFound {
        /// The name.
        name: String,
    },
    /// `mq_open()` failed for another reason.
    #[error("mq_open() failed: {0}")]
    Open(Errno),
    /// `mq_getattr()` or `mq_setattr()` failed.
    #[error("reading or setting the queue's attributes failed: {0}")]
    Attributes(Errno),
    /// The job's payload does not fit in one message of the queue.
    #[error("a {len}-byte payload does not fit: this queue takes at most {max} bytes per job")]
    TooBig {
        /// The payload's length.
        len: usize,
        /// The longest payload the queue takes.
        max: usize,
    },
    /// The priority is `MQ_PRIO_MAX` or more.
    #[error("priority {priority} is out of range (0 to {})", MQ_PRIO_MAX - 1)]
    BadPriority {
        /// The priority given.
        priority: u32,
    },
    /// The queue is full and the descriptor is non-blocking (`EAGAIN`).
    #[error("the queue is full")]
    Full,
    /// `mq_send()` failed for another reason.
    #[error("mq_send() failed: {0}")]
    Send(Errno),
    /// `mq_receive()` failed.
    #[error("mq_receive() failed: {0}")]
    Receive(Errno),
    /// A message that is neither a job nor a shutdown.
    #[error("a {len}-byte message that is neither a job nor a shutdown")]
    Garbled {
        /// Its length.
        len: usize,
    },
    /// The job handler failed; the consumer stopped.
    #[error("serving a job failed: {0}")]
    Handler(String),
    /// `mq_close()` failed.
    #[error("mq_close() failed: {0}")]
    Close(Errno),
    /// `mq_unlink()` failed.
    #[error("mq_unlink() failed: {0}")]
    Unlink(Errno),
}

impl QueueError {
    /// A stable one-word name for the variant, which the program reports as `kind=` (the
    /// grader checks it). Given; do not change.
    pub fn kind(&self) -> &'static str {
        match self {
            QueueError::BadName { .. } => "bad-name",
            QueueError::Limits(_) => "limits",
            QueueError::OverLimit { .. } => "over-limit",
            QueueError::Exists { .. } => "exists",
            QueueError::NotFound { .. } => "not-found",
            QueueError::Open(_) => "mq-open",
            QueueError::Attributes(_) => "mq-attr",
            QueueError::TooBig { .. } => "too-big",
            QueueError::BadPriority { .. } => "bad-priority",
            QueueError::Full => "full",
            QueueError::Send(_) => "mq-send",
            QueueError::Receive(_) => "mq-receive",
            QueueError::Garbled { .. } => "garbled",
            QueueError::Handler(_) => "handler",
            QueueError::Close(_) => "mq-close",
            QueueError::Unlink(_) => "mq-unlink",
        }
    }
}

/// A job: a priority (higher is served first) and an opaque payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// 0 to `MQ_PRIO_MAX - 1`.
    pub priority: u32,
    /// The job's bytes, from 0 up to the queue's message size minus the tag byte.
    pub payload: Vec<u8>,
}

/// What one message of the queue was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A job to serve.
    Job(Job),
    /// The end: no more jobs.
    Shutdown,
}

/// The attributes of a queue to create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    /// How many messages the queue holds (`mq_maxmsg`).
    pub capacity: u64,
    /// The largest message, tag byte included (`mq_msgsize`).
    pub msg_size: u64,
}

impl Default for QueueConfig {
    /// 8 messages of 1024 bytes: within the limits of an unprivileged user on any Linux.
    fn default() -> QueueConfig {
        QueueConfig {
            capacity: 8,
            msg_size: 1024,
        }
    }
}

/// What this user may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `/proc/sys/fs/mqueue/msg_max`: the largest capacity.
    pub msg_max: u64,
    /// `/proc/sys/fs/mqueue/msgsize_max`: the largest message size.
    pub msgsize_max: u64,
    /// The soft `RLIMIT_MSGQUEUE`: the bytes all of this user's queues may take.
    pub queue_bytes: u64,
}

/// Reads the limits from `/proc/sys/fs/mqueue/msg_max` and `msgsize_max`, and the soft
/// `RLIMIT_MSGQUEUE` from `getrlimit()`. Any failure is [`QueueError::Limits`]: a file that
/// cannot be opened or read, or that holds no number. It changes no limit, and closes the files
/// it opens.
pub fn system_limits() -> Result<Limits, QueueError> {
    todo!("read msg_max and msgsize_max from /proc/sys/fs/mqueue, RLIMIT_MSGQUEUE from getrlimit()")
}

impl QueueConfig {
    /// [`QueueError::OverLimit`] unless the capacity is 1 to `msg_max`, the message size 1 to
    /// `msgsize_max`, and `capacity * (msg_size + MESSAGE_OVERHEAD)` at most `queue_bytes`.
    pub fn check(&self, limits: &Limits) -> Result<(), QueueError> {
        let _ = (&limits,);
        todo!(
            "OverLimit unless 1 <= capacity <= msg_max, 1 <= msg_size <= msgsize_max, and the bytes fit"
        )
    }
}

/// Checks that `name` is a valid queue name: a leading `/`, then 1 to [`MAX_NAME_LEN`]
/// characters, none of them `/`. Blanks and control characters are characters like any other:
/// `"/ "` is a valid name.
pub fn check_name(name: &str) -> Result<(), QueueError> {
    let _ = (&name,);
    todo!("BadName unless \"/\" + 1..=255 bytes without another \"/\"")
}

/// The attributes of an open queue, as `mq_getattr()` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attributes {
    /// `mq_maxmsg`.
    pub capacity: u64,
    /// `mq_msgsize`.
    pub msg_size: u64,
    /// `mq_curmsgs`: messages waiting now.
    pub queued: u64,
}

/// One open descriptor of a job queue.
#[derive(Debug)]
pub struct JobQueue {
    /// The queue's name, `/...`.
    pub name: String,
    /// The descriptor `mq_open()` returned.
    pub mqd: MqdT,
    /// The queue's `mq_msgsize`, read once at open: the receive buffer's size, and the tag
    /// plus the largest payload.
    pub msg_size: usize,
}

impl JobQueue {
    /// The consumer's side: checks the name and the config (against [`system_limits`]), then
    /// creates the queue for receiving: `mq_open(name, O_CREAT | O_EXCL | O_RDONLY, 0600,
    /// attributes)`. `EEXIST` is [`QueueError::Exists`]. It changes nothing of the process
    /// that `main.rs` set (its umask, its limits, SIGUSR1's handler), not even for a moment
    /// (no `umask()` call: the mode 0600 needs none). Errors of `mq_open()` are the kernel's,
    /// for any name that passed [`check_name`] (`/.` and `/..` too). If the `mq_getattr()` of
    /// the new descriptor fails ([`QueueError::Attributes`]), it closes that descriptor and
    /// removes the queue it made: a failed create leaves nothing.
    pub fn create(name: &str, config: &QueueConfig) -> Result<JobQueue, QueueError> {
        let _ = (&name, &config);
        todo!(
            "check_name, config.check(system_limits), mq_open(O_CREAT|O_EXCL|O_RDONLY, 0600, attr)"
        )
    }

    /// A producer's side: opens the existing queue for sending, `mq_open(name, O_WRONLY)`.
    /// `ENOENT` is [`QueueError::NotFound`]. As [`JobQueue::create`], it closes the new
    /// descriptor if its `mq_getattr()` fails (and leaves the queue, which is not its own).
    pub fn open(name: &str) -> Result<JobQueue, QueueError> {
        let _ = (&name,);
        todo!("check_name, mq_open(O_WRONLY); ENOENT is NotFound")
    }

    /// The queue's attributes, from `mq_getattr()`.
    /// Its failure is [`QueueError::Attributes`], never values read before.
    pub fn attributes(&self) -> Result<Attributes, QueueError> {
        todo!("mq_getattr(&self.mqd); errors are Attributes")
    }

    /// The longest payload a job may have: the message size minus the tag byte.
    pub fn max_payload(&self) -> usize {
        self.msg_size.saturating_sub(1)
    }

    /// Makes [`JobQueue::submit`] fail with [`QueueError::Full`] instead of blocking on a full
    /// queue (`O_NONBLOCK`), or blocking again. It calls `mq_setattr()` each time: another
    /// holder of the descriptor may have changed the flag since.
    /// Its failure is [`QueueError::Attributes`]: the program must not go on in a mode it did
    /// not get.
    pub fn set_nonblocking(&self, nonblocking: bool) -> Result<(), QueueError> {
        let _ = (&nonblocking,);
        todo!("mq_set_nonblock() or mq_remove_nonblock(); errors are Attributes")
    }

    /// Sends `job` as one message, [`JOB_TAG`] followed by the payload, with the job's
    /// priority. A payload longer than [`JobQueue::max_payload`] is [`QueueError::TooBig`] and
    /// nothing is sent; a priority of [`MQ_PRIO_MAX`] or more is [`QueueError::BadPriority`].
    /// On a full queue it blocks until there is room, with no deadline ([`QueueError::Full`] if
    /// non-blocking: only when its `mq_send()` fails with `EAGAIN`). Retries `EINTR`.
    pub fn submit(&self, job: &Job) -> Result<(), QueueError> {
        let _ = (&job,);
        todo!(
            "TooBig / BadPriority checks, then mq_send([JOB_TAG, payload..], priority); EAGAIN is Full"
        )
    }

    /// Sends the shutdown message, [`SHUTDOWN_TAG`] alone, with priority 0: the lowest, so that
    /// every job already queued is served before it. Blocks on a full queue like
    /// [`JobQueue::submit`], on the descriptor as it is: on a non-blocking one a full queue is
    /// [`QueueError::Full`]. It never changes `O_NONBLOCK`: that is
    /// [`JobQueue::set_nonblocking`]'s, the caller's switch.
    pub fn shutdown(&self) -> Result<(), QueueError> {
        todo!("mq_send([SHUTDOWN_TAG], 0), as submit() sends")
    }

    /// Receives the next message: the oldest of the highest priority, blocking while the queue
    /// is empty (retry `EINTR`). The buffer holds `msg_size` bytes; only the bytes received
    /// belong to the message. Anything but a job or a shutdown is [`QueueError::Garbled`]
    /// (`Q` with a line ending after it too). It calls `mq_receive()` at once, every time: no
    /// look at the queue (`mq_getattr()`), no yield or sleep before the wait.
    pub fn receive(&self) -> Result<Message, QueueError> {
        todo!("mq_receive into a msg_size buffer, keep only the length received, decode the tag")
    }

    /// The consumer's loop: receives messages and passes each job to `handler` until the
    /// shutdown message. Returns how many jobs were served. Whether it ends with the shutdown
    /// or with an error (a failed receive, a garbled message, or the handler's error as
    /// [`QueueError::Handler`]: the job is not handed to the handler again, and no job after it
    /// is served), it closes the descriptor and unlinks the queue before it returns: a consumer
    /// that fails must not leave its queue behind. If serving ended well,
    /// an error of the close or the unlink is returned (the unlink's `ENOENT` as
    /// [`QueueError::NotFound`]), never discarded; if serving failed, its own error is returned,
    /// whatever the close and the unlink gave.
    pub fn serve<F>(self, handler: F) -> Result<usize, QueueError>
    where
        F: FnMut(Job) -> Result<(), String>,
    {
        let _ = (&handler,);
        todo!(
            "receive until Shutdown, handing each job to handler; then close and unlink, also on errors"
        )
    }

    /// Closes the descriptor with `mq_close()`. The queue stays until [`unlink`].
    pub fn close(self) -> Result<(), QueueError> {
        todo!("mq_close(self.mqd); errors are Close")
    }
}

/// Removes the queue's name with `mq_unlink()` (`ENOENT` is [`QueueError::NotFound`]).
/// Processes that have it open keep using it; new `mq_open()`s fail.
pub fn unlink(name: &str) -> Result<(), QueueError> {
    let _ = (&name,);
    todo!("check_name(), mq_unlink(); ENOENT is NotFound, others Unlink")
}

/// Fast checks of the rules above, without the grader: `cargo test -p mqueue-priority`.
#[cfg(test)]
mod tests {
    use super::*;
    use ipc_labs_driver::testing::{Cleanup, unique_name};
    use rstest::rstest;
    use serial_test::serial;

    /// The defaults of an unprivileged user (root is not held to them).
    const USER_LIMITS: Limits = Limits {
        msg_max: 10,
        msgsize_max: 8192,
        queue_bytes: 819_200,
    };

    /// A fresh queue name, unlinked with the system call (not the code under test) at the end.
    fn queue_name() -> (String, Cleanup<impl FnMut()>) {
        let name = unique_name("mq");
        let removed = name.clone();
        let cleanup = Cleanup::new(move || {
            let _ = nix::mqueue::mq_unlink(removed.as_str());
        });
        (name, cleanup)
    }

    fn job(priority: u32, payload: &[u8]) -> Job {
        Job {
            priority,
            payload: payload.to_vec(),
        }
    }

    #[rstest]
    #[case::shortest("/a")]
    #[case::longest(&format!("/{}", "x".repeat(MAX_NAME_LEN)))]
    fn valid_names_are_accepted(#[case] name: &str) {
        assert!(check_name(name).is_ok(), "{name:?} was refused");
    }

    #[rstest]
    #[case::empty("")]
    #[case::no_leading_slash("queue")]
    #[case::slash_alone("/")]
    #[case::second_slash("/a/b")]
    #[case::one_past_the_longest(&format!("/{}", "x".repeat(MAX_NAME_LEN + 1)))]
    fn invalid_names_are_bad_name(#[case] name: &str) {
        let error = check_name(name).expect_err(name);
        assert_eq!(error.kind(), "bad-name", "{error}");
    }

    #[rstest]
    #[case::one_message(1, 1)]
    #[case::most_messages(10, 1)]
    #[case::largest_message(1, 8192)]
    #[case::both_at_the_limit(10, 8192)]
    fn configs_within_the_limits_pass(#[case] capacity: u64, #[case] msg_size: u64) {
        let config = QueueConfig { capacity, msg_size };
        assert!(config.check(&USER_LIMITS).is_ok(), "{config:?} was refused");
    }

    #[rstest]
    #[case::no_capacity(0, 1024, "a capacity")]
    #[case::one_message_too_many(11, 1024, "a capacity")]
    #[case::empty_messages(8, 0, "a message size")]
    #[case::one_byte_too_large(8, 8193, "a message size")]
    fn configs_past_the_limits_are_over_limit(
        #[case] capacity: u64,
        #[case] msg_size: u64,
        #[case] what_is_wrong: &str,
    ) {
        let config = QueueConfig { capacity, msg_size };
        match config.check(&USER_LIMITS) {
            Err(QueueError::OverLimit { what, .. }) => assert_eq!(what, what_is_wrong),
            other => panic!("{config:?}: expected OverLimit, got {other:?}"),
        }
    }

    #[rstest]
    #[case::exactly_the_budget(0, true)]
    #[case::one_byte_over(1, false)]
    fn the_bytes_of_a_queue_count_the_overhead_of_each_message(
        #[case] short_by: u64,
        #[case] fits: bool,
    ) {
        let config = QueueConfig {
            capacity: 10,
            msg_size: 1000,
        };
        let limits = Limits {
            queue_bytes: 10 * (1000 + MESSAGE_OVERHEAD) - short_by,
            ..USER_LIMITS
        };
        let checked = config.check(&limits);
        assert_eq!(checked.is_ok(), fits, "{checked:?}");
        if let Err(error) = checked {
            assert_eq!(error.kind(), "over-limit", "{error}");
        }
    }

    #[test]
    fn a_size_whose_bytes_overflow_is_over_limit_not_a_panic() {
        let config = QueueConfig {
            capacity: 10,
            msg_size: u64::MAX,
        };
        let limits = Limits {
            msgsize_max: u64::MAX,
            ..USER_LIMITS
        };
        let error = config.check(&limits).unwrap_err();
        assert_eq!(error.kind(), "over-limit", "{error}");
    }

    #[test]
    fn the_system_limits_are_those_of_proc() {
        let limits = system_limits().unwrap();
        let read = |file: &str| {
            std::fs::read_to_string(format!("/proc/sys/fs/mqueue/{file}"))
                .unwrap()
                .trim()
                .parse::<u64>()
                .unwrap()
        };
        assert_eq!(limits.msg_max, read("msg_max"));
        assert_eq!(limits.msgsize_max, read("msgsize_max"));
        let (soft, _hard) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_MSGQUEUE).unwrap();
        assert_eq!(limits.queue_bytes, soft);
    }

    #[test]
    #[serial(mqueue)]
    fn jobs_come_out_by_priority_then_in_order() {
        let (name, _cleanup) = queue_name();
        let consumer = JobQueue::create(&name, &QueueConfig::default()).unwrap();
        let producer = JobQueue::open(&name).unwrap();
        let sent = [
            job(1, b"low"),
            job(5, b"first high"),
            job(0, b""),
            job(5, b"second high"),
            job(3, b"middle"),
        ];
        for job in &sent {
            producer.submit(job).unwrap();
        }
        let mut received = Vec::new();
        for _ in &sent {
            match consumer.receive().unwrap() {
                Message::Job(job) => received.push(job),
                Message::Shutdown => panic!("a shutdown nobody sent"),
            }
        }
        let expected = [&sent[1], &sent[3], &sent[4], &sent[0], &sent[2]];
        assert_eq!(received.iter().collect::<Vec<_>>(), expected);
    }

    #[rstest]
    #[case::largest_payload(0, true)]
    #[case::one_byte_too_many(1, false)]
    #[serial(mqueue)]
    fn a_payload_fills_a_message_but_the_tag_byte(#[case] extra: usize, #[case] sent: bool) {
        let (name, _cleanup) = queue_name();
        let consumer = JobQueue::create(&name, &QueueConfig::default()).unwrap();
        let payload = vec![7u8; consumer.max_payload() + extra];
        let submitted = JobQueue::open(&name).unwrap().submit(&job(2, &payload));
        assert_eq!(submitted.is_ok(), sent, "{submitted:?}");
        if let Err(error) = submitted {
            assert_eq!(error.kind(), "too-big", "{error}");
        }
        let queued = consumer.attributes().unwrap().queued;
        assert_eq!(queued, u64::from(sent), "a refused job must not be sent");
    }

    #[rstest]
    #[case::highest(MQ_PRIO_MAX - 1, true)]
    #[case::one_past_the_highest(MQ_PRIO_MAX, false)]
    #[serial(mqueue)]
    fn priorities_stop_below_mq_prio_max(#[case] priority: u32, #[case] sent: bool) {
        let (name, _cleanup) = queue_name();
        let _consumer = JobQueue::create(&name, &QueueConfig::default()).unwrap();
        let submitted = JobQueue::open(&name).unwrap().submit(&job(priority, b"x"));
        assert_eq!(submitted.is_ok(), sent, "{submitted:?}");
        if let Err(error) = submitted {
            assert_eq!(error.kind(), "bad-priority", "{error}");
        }
    }

    #[test]
    #[serial(mqueue)]
    fn a_full_non_blocking_queue_is_full() {
        let (name, _cleanup) = queue_name();
        let config = QueueConfig {
            capacity: 2,
            msg_size: 64,
        };
        let _consumer = JobQueue::create(&name, &config).unwrap();
        let producer = JobQueue::open(&name).unwrap();
        producer.set_nonblocking(true).unwrap();
        producer.submit(&job(0, b"1")).unwrap();
        producer.submit(&job(0, b"2")).unwrap();
        let error = producer.submit(&job(0, b"3")).unwrap_err();
        assert_eq!(error.kind(), "full", "{error}");
    }

    #[test]
    #[serial(mqueue)]
    fn a_name_is_created_once_and_opened_only_while_it_exists() {
        let (name, _cleanup) = queue_name();
        let missing = JobQueue::open(&name).unwrap_err();
        assert_eq!(missing.kind(), "not-found", "{missing}");
        let queue = JobQueue::create(&name, &QueueConfig::default()).unwrap();
        let twice = JobQueue::create(&name, &QueueConfig::default()).unwrap_err();
        assert_eq!(twice.kind(), "exists", "{twice}");
        queue.close().unwrap();
        unlink(&name).unwrap();
        let again = unlink(&name).unwrap_err();
        assert_eq!(again.kind(), "not-found", "{again}");
    }

    #[rstest]
    #[case::unknown_tag(b"X".as_slice())]
    #[case::empty(b"".as_slice())]
    #[case::shutdown_with_a_payload(b"Qx".as_slice())]
    #[serial(mqueue)]
    fn a_message_that_is_neither_job_nor_shutdown_is_garbled(#[case] message: &[u8]) {
        let (name, _cleanup) = queue_name();
        let consumer = JobQueue::create(&name, &QueueConfig::default()).unwrap();
        let producer = JobQueue::open(&name).unwrap();
        nix::mqueue::mq_send(&producer.mqd, message, 0).unwrap();
        match consumer.receive() {
            Err(QueueError::Garbled { len }) => assert_eq!(len, message.len()),
            other => panic!("{message:?}: expected Garbled, got {other:?}"),
        }
    }

    #[test]
    #[serial(mqueue)]
    fn serve_hands_over_every_job_before_the_shutdown_and_removes_the_queue() {
        let (name, _cleanup) = queue_name();
        let consumer = JobQueue::create(&name, &QueueConfig::default()).unwrap();
        let producer = JobQueue::open(&name).unwrap();
        producer.submit(&job(4, b"a")).unwrap();
        producer.shutdown().unwrap();
        producer.submit(&job(1, b"b")).unwrap();
        let mut served = Vec::new();
        let count = consumer
            .serve(|job| {
                served.push(job.payload);
                Ok(())
            })
            .unwrap();
        assert_eq!(count, 2);
        assert_eq!(served, [b"a".to_vec(), b"b".to_vec()]);
        let gone = JobQueue::open(&name).unwrap_err();
        assert_eq!(gone.kind(), "not-found", "{gone}");
    }

    #[test]
    #[serial(mqueue)]
    fn serve_removes_the_queue_when_the_handler_fails() {
        let (name, _cleanup) = queue_name();
        let consumer = JobQueue::create(&name, &QueueConfig::default()).unwrap();
        JobQueue::open(&name)
            .unwrap()
            .submit(&job(0, b"bad"))
            .unwrap();
        let error = consumer.serve(|_| Err("refused".into())).unwrap_err();
        assert_eq!(error.kind(), "handler", "{error}");
        let gone = JobQueue::open(&name).unwrap_err();
        assert_eq!(gone.kind(), "not-found", "{gone}");
    }
}
