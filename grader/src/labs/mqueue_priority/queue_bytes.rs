//! The bytes limit, the soft `RLIMIT_MSGQUEUE`: a queue of at most that many bytes (by the
//! kernel's count) is created, one byte more is refused before `mq_open`, and the limit is the
//! one in force when the queue is created.

use nix::sys::resource::{Resource, getrlimit};

use super::limits::{consumer_args, kind_advice, own_refusal};
use super::names::watched_at_mq_open;
use super::protocol::{
    Consumer, MESSAGE_OVERHEAD, consumer, failed_errno, failed_with, release, said, sized,
    spawn_consumer,
};
use crate::engine::audit::message_queue_exists;
use crate::engine::{Fail, Proc, Run, force};

/// A queue sized against a lowered `RLIMIT_MSGQUEUE`.
pub struct BytesLimit {
    pub capacity: u64,
    pub msg_size: u64,
    /// The hard limit, which a lowered soft limit leaves as it is.
    pub hard: u64,
}

impl BytesLimit {
    /// What the queue takes by the lab's rule.
    pub fn bytes(&self) -> u64 {
        self.capacity * (self.msg_size + MESSAGE_OVERHEAD)
    }

    pub fn describe(&self) -> String {
        format!(
            "{} messages of {} bytes, which take {} bytes ({} x ({} + {MESSAGE_OVERHEAD})),",
            self.capacity,
            self.msg_size,
            self.bytes(),
            self.capacity,
            self.msg_size
        )
    }

    /// The queue must be over-limit with the soft limit one byte under what it takes. When it
    /// is not, a second consumer, with the limit under even `capacity x msg_size`, tells a
    /// count that leaves out the overhead from a limit that is not the soft RLIMIT_MSGQUEUE.
    /// `renamed`: at exactly the limit it said over-limit after its mq_open() (what of it).
    pub fn expect_refused(&self, run: &mut Run, renamed: Option<String>) -> Result<(), Fail> {
        let args = sized(self.capacity, self.msg_size);
        let soft = self.bytes() - 1;
        let name = run.ipc_name("bytes");
        let (mut proc, answer, _, reached, tracer) =
            consumer_watched_at_mq_open(run, &name, &args, soft)?;
        if reached && failed_with(&answer, "over-limit") {
            // The kernel's EMFILE, called over-limit: what its own check counts, if anything,
            // the limit under even capacity x msg_size tells.
            release(&mut proc)?;
            drop(tracer);
            let exact = renamed
                .map(|r| format!("; at exactly the limit, {r}"))
                .unwrap_or_default();
            let first = format!(
                "asking for {} with its soft RLIMIT_MSGQUEUE at {soft}, one byte less, the \
                 consumer called mq_open() to create the queue (the grader saw the call) and \
                 then said {}{exact}: that refusal was the kernel's (mq_open's EMFILE), not \
                 check()'s",
                self.describe(),
                said(&answer)
            );
            let bare = self.capacity * self.msg_size - 1;
            let name = run.ipc_name("bare-bytes");
            let (_, second, _, bare_reached, bare_tracer) =
                consumer_watched_at_mq_open(run, &name, &args, bare)?;
            drop(bare_tracer);
            if failed_with(&second, "over-limit") && !bare_reached {
                return Err(Fail::failed(format!(
                    "{first}; with the limit at {bare}, under even {} x {}, it refused before \
                     mq_open: it counts fewer bytes than the kernel charges: count capacity x \
                     (msg_size + MESSAGE_OVERHEAD), the overhead once per message",
                    self.capacity, self.msg_size
                )));
            }
            return Err(Fail::failed(format!(
                "{first}; with the limit at {bare}, under even {} x {} bytes, it called \
                 mq_open() too: check() does not compare the queue's bytes with the soft \
                 RLIMIT_MSGQUEUE (not at all, or with another limit: a constant, the hard \
                 one) and leaves the refusal to the kernel. check() compares capacity x \
                 (msg_size + MESSAGE_OVERHEAD) with system_limits()'s queue_bytes (getrlimit's \
                 soft limit) before mq_open, and refuses with QueueError::OverLimit",
                self.capacity, self.msg_size
            )));
        }
        if failed_with(&answer, "over-limit") {
            release(&mut proc)?;
            drop(tracer);
            if let Some(renamed) = renamed {
                return Err(Fail::failed(format!(
                    "{renamed}; one byte under the queue's bytes it refused the queue itself, \
                     before mq_open, so its own check is right, but a failed mq_open() is \
                     kind=mq-open, not over-limit: over-limit is for what check() refuses \
                     against system_limits()"
                )));
            }
            return Ok(());
        }
        drop(tracer);
        if let Some(kind) = own_refusal(&answer, &name) {
            return Err(Fail::failed(format!(
                "asking for {} with its soft RLIMIT_MSGQUEUE at {soft}, one byte less, the \
                 consumer refused the queue itself (nothing was created), but said {}: {}",
                self.describe(),
                said(&answer),
                kind_advice(&kind)
            )));
        }
        let first = format!(
            "asking for {} with its soft RLIMIT_MSGQUEUE at {soft}, one byte less, the consumer \
             said {}, not `failed` with kind=over-limit",
            self.describe(),
            said(&answer)
        );
        let now = super::observe::soft_message_queue_bytes(proc.pid.as_raw());
        if let Some(raised) = now.filter(|&now| now != soft) {
            return Err(Fail::failed(format!(
                "{first}, and its soft RLIMIT_MSGQUEUE is now {raised} (/proc/PID/limits), not \
                 the {soft} it was started with: it raised its own limit (setrlimit) and \
                 checked against that. The limit is the one the process was given: \
                 system_limits() reads it with getrlimit() and changes nothing; a queue over \
                 it is QueueError::OverLimit"
            )));
        }
        let bare = self.capacity * self.msg_size - 1;
        let name = run.ipc_name("bare-bytes");
        let (_, second, _) = spawn_consumer(run, &name, &args, Some(bare))?;
        if failed_with(&second, "over-limit") {
            return Err(Fail::failed(format!(
                "{first}; with the limit at {bare}, under even {} x {}, it did refuse: it counts \
                 fewer bytes than the kernel charges: count capacity x (msg_size + \
                 MESSAGE_OVERHEAD), the overhead once per message",
                self.capacity, self.msg_size
            )));
        }
        Err(Fail::failed(format!(
            "{first}; with the limit at {bare}, under even {} x {} bytes, it said {} too: it \
             does not compare the queue's bytes with the soft RLIMIT_MSGQUEUE of the process \
             (its hard limit stayed at {}). \
             system_limits() reads the soft limit with getrlimit(RLIMIT_MSGQUEUE) (not the hard \
             one, not a constant), and check() compares capacity x (msg_size + \
             MESSAGE_OVERHEAD) with it",
            self.capacity,
            self.msg_size,
            said(&second),
            self.hard
        )))
    }
}

/// A consumer asking for `args`, with its soft `RLIMIT_MSGQUEUE` at `bytes`, started stopped and
/// watched until its first `mq_open()`: its first answer, and whether it called `mq_open()`
/// before it (false where the grader may not trace it). Drop the tracer that comes back once
/// the program has ended.
pub fn consumer_watched_at_mq_open(
    run: &mut Run,
    name: &str,
    args: &[String],
    bytes: u64,
) -> Result<
    (
        Proc,
        ipc_labs_driver::Message,
        std::path::PathBuf,
        bool,
        Option<crate::engine::tracer::Tracer>,
    ),
    Fail,
> {
    let (all, output) = consumer_args(run, name, args);
    let mut proc = run.spawn_stopped_with_message_queue_bytes(&all, bytes)?;
    proc.set_roles(|_| "the consumer".into());
    let (proc, answer, reached, tracer) = watched_at_mq_open(proc)?;
    Ok((proc, answer, output, reached, tracer))
}

impl BytesLimit {
    /// The limits are read when creating, not once per process: a consumer told to create its
    /// queue again (`--again`) once it served it, its soft `RLIMIT_MSGQUEUE` lowered meanwhile
    /// (`prlimit`, from outside) to one byte under what the queue takes, must refuse the second
    /// queue as it refused it in a fresh process ([`BytesLimit::expect_refused`]).
    pub fn read_at_each_create(&self, run: &mut Run) -> Result<(), Fail> {
        let name = run.ipc_name("again");
        let mut args = sized(self.capacity, self.msg_size);
        args.push("--again".into());
        let mut first = consumer(run, &name, &args)?;
        first.send_shutdown()?;
        first.go()?;
        let done = first.answer_after_shutdown()?;
        if done.kind != "done" {
            release(&mut first.proc)?;
            return Err(Fail::failed(format!(
                "a consumer of {} told to serve it once and then create it again (`--again`) \
                 said {} after the shutdown message, not `done`",
                self.describe(),
                said(&done)
            )));
        }
        let (before, _) = getrlimit(Resource::RLIMIT_MSGQUEUE)
            .map_err(|e| Fail::Grader(format!("getrlimit(RLIMIT_MSGQUEUE): {e}")))?;
        let soft = self.bytes() - 1;
        force::set_limit(
            first.pid(),
            libc::RLIMIT_MSGQUEUE,
            soft,
            self.hard,
            run.program_user(),
        )?;
        first.proc.send("again", &[])?;
        let answer = first.proc.recv_any()?;
        let created = message_queue_exists(&name);
        if answer.kind == "ready" {
            // Created after all: served to its end, so that nothing is left behind.
            let mut again = Consumer::ready(first.proc, &name, &answer, first.output);
            again.send_shutdown()?;
            let _ = again.serve();
        } else {
            release(&mut first.proc)?;
        }
        if failed_with(&answer, "over-limit") && !created {
            return Ok(());
        }
        let kernel = if failed_with(&answer, "mq-open") && failed_errno(&answer, "EMFILE") {
            " (mq_open's EMFILE: the kernel held it to the new limit, its own check did not)"
        } else {
            ""
        };
        Err(Fail::failed(format!(
            "a consumer created and served {} with its soft RLIMIT_MSGQUEUE at {before}; the \
             grader then lowered that limit to {soft} (prlimit), one byte under what the queue \
             takes, and told it to create the queue again (`--again`): it said {}{kernel} where \
             a consumer started with that limit says over-limit, so it checked the second queue \
             against the limits it read for the first. create() calls system_limits() each \
             time, and system_limits() reads the limits then (getrlimit, /proc/sys/fs/mqueue): \
             they change while a program runs",
            self.describe(),
            said(&answer)
        )))
    }
}
