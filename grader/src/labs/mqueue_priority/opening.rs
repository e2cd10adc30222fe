//! What `create()` and `open()` do when the `mq_getattr()` that reads the new descriptor's
//! `mq_msgsize` fails: they report it (`mq-attr`, with its errno) and close the descriptor
//! first, for `MqdT` does not close itself; `create()` also removes the queue it made.

use std::time::{Duration, Instant};

use super::observe::queue_fds;
use super::protocol::{
    consumer, failed_errno, failed_with, release, said, spawn_consumer_stopped,
    spawn_producer_stopped,
};
use crate::engine::audit::message_queue_exists;
use crate::engine::tracer::{Action, Call, Tracer};
use crate::engine::{Fail, Proc, Run, force};

/// The first `mq_getattr()` of a consumer (in `create()`), then of a producer (in `open()`),
/// made to fail with `EIO` (ptrace; nothing else gives it): each says `mq-attr` naming `EIO`,
/// and holds no descriptor of the queue while it waits for `exit`; the consumer's queue is gone
/// by then (a failed create leaves nothing), the producer's still there.
pub fn getattr_fails_at_open(run: &mut Run) -> Result<(), Fail> {
    let name = run.ipc_name("getattr-create");
    let proc = spawn_consumer_stopped(run, &name)?;
    let outcome = getattr_fails(run, proc, &name, "the consumer", "create()");
    // Removed by the grader whatever the verdict: the check's own clean-up.
    let left = nix::mqueue::mq_unlink(name.as_str()).is_ok();
    if outcome? && left {
        return Err(Fail::failed(format!(
            "the grader made the consumer's first mq_getattr (mq_getsetattr) fail with EIO \
             (ptrace); it said kind=mq-attr and closed its descriptor, but the queue {name} it \
             had just created was still there once it answered: a failed create leaves \
             nothing, so create() removes the queue it made (mq_unlink) before it returns \
             mq_getattr's error"
        )));
    }
    let name = run.ipc_name("getattr-open");
    let consumer = consumer(run, &name, &[])?;
    let proc = spawn_producer_stopped(run, &name)?;
    let failed = getattr_fails(run, proc, &name, "a producer", "open()")?;
    let mut consumer = consumer;
    // The consumer waits for `go` meanwhile: the producer alone can have removed the queue.
    if failed && !message_queue_exists(&name) {
        consumer.proc.kill_tree();
        return Err(Fail::failed(format!(
            "the grader made a producer's first mq_getattr (mq_getsetattr) fail with EIO \
             (ptrace); it said kind=mq-attr and closed its descriptor, but the consumer's queue \
             {name} was gone once it answered, while the consumer, which created it, waited for \
             `go`: the producer's failed open() removed (mq_unlink) a queue that is not its own. \
             open() closes its new descriptor and leaves the queue; only create() removes the \
             queue it made itself (a clean-up shared by both must not unlink for open())"
        )));
    }
    consumer.send_shutdown()?;
    consumer.serve().map(drop)
}

fn getattr_fails(
    run: &mut Run,
    mut proc: Proc,
    name: &str,
    who: &str,
    call: &str,
) -> Result<bool, Fail> {
    let pid = proc.pid.as_raw();
    let getattr = Call::any(libc::SYS_mq_getsetattr);
    let tracer = Tracer::attach(pid, getattr, Action::Fail(libc::EIO))?;
    force::resume(pid)?;
    let Some(mut tracer) = tracer else {
        run.note("no ptrace here: a failed mq_getattr at open not tried");
        let _ = proc.recv_any()?;
        return release(&mut proc).map(|()| false);
    };
    let answer = proc.recv_any();
    let failed = tracer.failed_before(Instant::now() + Duration::from_millis(100))?;
    drop(tracer);
    let answer = answer?;
    let held = queue_fds(pid, name).and_then(|fds| fds.first().copied());
    release(&mut proc)?;
    if !failed {
        return Ok(false);
    }
    if !(failed_with(&answer, "mq-attr") && failed_errno(&answer, "EIO")) {
        return Err(Fail::failed(format!(
            "the grader made {who}'s first mq_getattr (mq_getsetattr) fail with EIO (ptrace), \
             and it said {}, not `failed` with kind=mq-attr and EIO: an error of mq_getattr is \
             QueueError::Attributes with its errno",
            said(&answer)
        )));
    }
    if let Some(fd) = held {
        return Err(Fail::failed(format!(
            "the grader made {who}'s first mq_getattr (mq_getsetattr) fail with EIO (ptrace); \
             it said kind=mq-attr, but still holds its descriptor {} of {name} while it waits \
             for `exit`: {call} returned the error without mq_close of the descriptor it had \
             just opened (a `?` on mq_getattr leaks it; MqdT does not close itself), or it did \
             not read mq_msgsize in {call} (its doc: read once at open) and a later call failed. \
             Close the new descriptor before returning mq_getattr's error",
            fd.fd
        )));
    }
    Ok(true)
}
