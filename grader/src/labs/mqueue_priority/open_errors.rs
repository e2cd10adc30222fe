//! `mq_open()`'s errors and the kinds they are: only `ENOENT` from open() is `not-found`, only
//! `EEXIST` from create() is `exists`; any other, made so with ptrace, is `mq-open` with its errno.

use nix::mqueue::{MQ_OFlag, MqAttr, mq_close, mq_open, mq_unlink};
use nix::sys::stat::Mode;

use super::names::end_consumer;
use super::protocol::{
    failed_errno, failed_with, release, said, spawn_consumer_stopped, spawn_producer_stopped,
};
use crate::engine::force;
use crate::engine::tracer::{Action, Call, Tracer};
use crate::engine::{Fail, Run};

/// The errors the grader makes open()'s `mq_open()` fail with, one producer each: `EACCES` (a
/// queue of another user), and `EINVAL` and `ENAMETOOLONG`, which the kernel also gives for a bad
/// name, but which check_name() has ruled out before the call: none of them is `not-found`
/// (only `ENOENT` is) nor `bad-name` (check_name()'s verdict, before any `mq_open()`).
const OPEN_ERRNOS: [(i32, &str); 3] = [
    (libc::EACCES, "EACCES"),
    (libc::EINVAL, "EINVAL"),
    (libc::ENAMETOOLONG, "ENAMETOOLONG"),
];

/// A producer opening a queue that exists, its `mq_open()` made to fail (where the grader may
/// trace it) with each of [`OPEN_ERRNOS`], must say `mq-open` with that errno: only `ENOENT` is
/// `not-found`, which would send the user looking for a queue that is there, and a name
/// check_name() let through is not `bad-name` whatever the kernel says of it.
pub(super) fn open_refused(run: &mut Run) -> Result<(), Fail> {
    let name = run.ipc_name("locked");
    let queue = mq_open(
        name.as_str(),
        MQ_OFlag::O_CREAT | MQ_OFlag::O_EXCL | MQ_OFlag::O_RDONLY | MQ_OFlag::O_NONBLOCK,
        Mode::empty(),
        Some(&MqAttr::new(0, 2, 64, 0)),
    )
    .map_err(|e| Fail::Grader(format!("creating a queue the producer may not open: {e}")))?;
    let outcome = (|| {
        for (errno, errno_name) in OPEN_ERRNOS {
            let mut proc = spawn_producer_stopped(run, &name)?;
            let answer = answer_with_mq_open_failed(&mut proc, errno)?;
            if answer.kind == "ready" {
                // Not traced, and allowed to open a queue of mode 0 (root): nothing to see here.
                run.note("a queue the producer may not open not tried (no ptrace, and it may)");
                return release(&mut proc);
            }
            release(&mut proc)?;
            if failed_with(&answer, "mq-open") && failed_errno(&answer, errno_name) {
                continue;
            }
            let hint = if failed_with(&answer, "not-found") {
                ": only ENOENT is not-found; it reports another mq_open() error as not-found, \
                 which sends the user looking for a queue that is there. Map ENOENT to \
                 QueueError::NotFound and any other error of mq_open() to QueueError::Open \
                 (kind=mq-open, with its errno)"
            } else if failed_with(&answer, "exists") {
                ": only EEXIST is QueueError::Exists; it reports another mq_open() error as \
                 exists, which sends the user looking elsewhere for a queue that is there (and \
                 open() never creates, so it never meets EEXIST). Map any error of mq_open() \
                 but ENOENT to QueueError::Open (kind=mq-open, with its errno)"
            } else if failed_with(&answer, "bad-name") {
                ": bad-name is check_name()'s verdict on the name, before any mq_open(); this \
                 name passed it, so an error of mq_open() (EINVAL and ENAMETOOLONG have other \
                 causes than the name) is QueueError::Open (kind=mq-open) with its errno, not \
                 bad-name"
            } else if failed_with(&answer, "mq-open") {
                ": kind=mq-open is right, but the errno reported is not the one mq_open() \
                 returned: QueueError::Open carries it as it came"
            } else {
                ": an mq_open() that fails for another reason than ENOENT is QueueError::Open \
                 (kind=mq-open), with its errno"
            };
            return Err(Fail::failed(format!(
                "a producer opening a queue that exists ({name:.40}) had its mq_open() fail with \
                 {errno_name} (the grader made it fail with ptrace), and said {}, not `failed` \
                 with kind=mq-open and {errno_name}{hint}",
                said(&answer)
            )));
        }
        Ok(())
    })();
    let _ = mq_close(queue);
    let _ = mq_unlink(name.as_str());
    outcome
}

/// The errors the grader makes create()'s `mq_open()` fail with, one consumer each: `ENOSPC` (as
/// when `queues_max` is reached), `EACCES` (creating refused for permission), `EINVAL` (which
/// the kernel also gives for attributes over its limits, but which check() has ruled out before
/// the call), `EMFILE` (this user's queues together over `RLIMIT_MSGQUEUE`, which check()
/// cannot see, or no descriptor left) and `ENAMETOOLONG` (a name the kernel finds too long,
/// which check_name() let through): none is `exists` (only `EEXIST` is), `over-limit` (check()'s
/// verdict) nor `bad-name` (check_name()'s).
const CREATE_ERRNOS: [(i32, &str); 5] = [
    (libc::ENOSPC, "ENOSPC"),
    (libc::EACCES, "EACCES"),
    (libc::EINVAL, "EINVAL"),
    (libc::EMFILE, "EMFILE"),
    (libc::ENAMETOOLONG, "ENAMETOOLONG"),
];

/// A consumer whose creating `mq_open()` fails with each of [`CREATE_ERRNOS`] (made so where the
/// grader may trace it) must say `mq-open` with that errno: only `EEXIST` is `exists`, and
/// `over-limit` is check()'s, before any `mq_open()`.
pub(super) fn create_refused(run: &mut Run) -> Result<(), Fail> {
    for (errno, errno_name) in CREATE_ERRNOS {
        let name = run.ipc_name(&format!("refused-{}", errno_name.to_lowercase()));
        let mut proc = spawn_consumer_stopped(run, &name)?;
        let answer = answer_with_mq_open_failed(&mut proc, errno)?;
        if answer.kind == "ready" {
            run.note("a creating mq_open() that fails not tried (no ptrace)");
            return end_consumer(proc, &name, &answer);
        }
        release(&mut proc)?;
        if failed_with(&answer, "mq-open") && failed_errno(&answer, errno_name) {
            continue;
        }
        let why = match errno {
            libc::ENOSPC => "no room for another queue, as when queues_max is reached",
            libc::EACCES => "creating refused for permission, as for the names /. and /..",
            libc::EMFILE => {
                "this user's queues together over RLIMIT_MSGQUEUE, or no descriptor left (the \
                 config alone fits every limit)"
            }
            libc::ENAMETOOLONG => {
                "a name the kernel finds too long, which check_name() let through"
            }
            _ => "an error the kernel also gives for attributes over its limits",
        };
        let hint = if failed_with(&answer, "exists") {
            "only EEXIST is QueueError::Exists; it reports another mq_open() error as exists, \
             which sends the user looking for a queue that is not there"
        } else if failed_with(&answer, "over-limit") && errno == libc::EMFILE {
            "over-limit is check()'s verdict on this config against system_limits(), before any \
             mq_open(), and check() let it through; the kernel's EMFILE counts this user's other \
             queues too (or the process's descriptors), so it is mq_open()'s own error, \
             QueueError::Open with EMFILE, not OverLimit"
        } else if failed_with(&answer, "over-limit") {
            "over-limit is check()'s verdict on the config, against system_limits(), before any \
             mq_open(): msg_max and msgsize_max are the program's to check, not left to the \
             kernel's EINVAL; an error of mq_open() itself is QueueError::Open with its errno"
        } else if failed_with(&answer, "bad-name") {
            "bad-name is check_name()'s verdict on the name, before any mq_open(); this name \
             passed it, so an error of mq_open() (ENAMETOOLONG too) is QueueError::Open with its \
             errno, not BadName"
        } else if failed_with(&answer, "not-found") {
            "not-found is for open() of a missing queue; create() reports mq_open() errors other \
             than EEXIST as QueueError::Open"
        } else {
            "an mq_open() that fails for another reason than EEXIST is QueueError::Open \
             (kind=mq-open), with its errno as it came"
        };
        return Err(Fail::failed(format!(
            "the consumer's mq_open() creating {name:.40} (a valid config) was made to fail with \
             {errno_name} ({why}; the grader made it fail with ptrace), and it said {}, not \
             `failed` with kind=mq-open and {errno_name}: {hint}",
            said(&answer)
        )));
    }
    Ok(())
}

/// What `proc`, started stopped, answers with its `mq_open()` failed with `errno` (a tracer;
/// where the grader may not trace it, the call goes through).
fn answer_with_mq_open_failed(
    proc: &mut crate::engine::Proc,
    errno: i32,
) -> Result<ipc_labs_driver::Message, Fail> {
    let pid = proc.pid.as_raw();
    let tracer = Tracer::attach(pid, Call::any(libc::SYS_mq_open), Action::Fail(errno))?;
    force::resume(pid)?;
    let answer = proc.recv_any();
    drop(tracer);
    answer
}
