//! A queue wait blocks in `mq_timedreceive()`, which takes a message already there at once: it
//! does not look at the queue (`mq_getattr()`, the `mq_getsetattr` call) again and again
//! before it blocks, as a spin before the sleep.

use std::time::{Duration, Instant};

use rand::RngExt;

use super::CONSUMER;
use super::handover::Handover;

/// How long the producer is held: half a slice, ample for a spin of looks (each a system call)
/// to show, even traced.
const HOLD: Duration = Duration::from_millis(50);
use crate::engine::tracer::{Call, Tracer};
use crate::engine::{Fail, Run};

/// The consumer is traced from `ready`, every `mq_getsetattr()` counted, over the rounds up to
/// record K, before which the producer is held for [`HOLD`]: the consumer's wait for ready of
/// record K then finds nothing for that long. A wait that blocks makes no such call;
/// one that looks before each block makes many in that wait alone. More looks than two per
/// wait is judged a poll.
pub fn queue_waits_do_not_look(run: &mut Run) -> Result<String, Fail> {
    let seq = run.rng().random_range(5..15u64);
    let at = seq.to_string();
    let mut handover = Handover::start(run, "queues", 20, &["--pause-producer-at", &at])?;
    let consumer = handover.consumer;
    let tracer = Tracer::count_calls(consumer, Call::any(libc::SYS_mq_getsetattr))?;
    let mut tracer = Some(tracer);
    let mut looks = None;
    let reports = handover.finish(|proc, _| {
        std::thread::sleep(HOLD);
        if let Some(Some(tracer)) = tracer.take() {
            looks = Some(tracer.failed_count(Instant::now() + Duration::from_millis(20))?);
        }
        proc.send("go", &[])
    })?;
    // Its waits for ready up to record K, the held one included.
    let waits = seq + 1;
    if let Some(looks) = looks
        && looks > 2 * waits as u32
    {
        return Err(Fail::failed(format!(
            "with queues, the grader held the producer before record {seq} for {} ms and \
             counted the consumer's mq_getsetattr() calls (mq_getattr(), mq_setattr()) with \
             ptrace: it made {looks} in its {waits} waits for ready, most in the one the \
             producer kept waiting: {CONSUMER} looks at the queue again and again (its message \
             count) before, or instead of, blocking. A wait blocks: mq_timedreceive() takes a \
             message already there at once and sleeps in the kernel until one comes, with no \
             look first",
            HOLD.as_millis()
        )));
    }
    handover.verify(
        &reports,
        &format!("20 rounds with queues, the producer held before record {seq}"),
    )?;
    Ok(match looks {
        Some(looks) => format!(
            "queues: {looks} look(s) at the queue in the consumer's {waits} waits for ready"
        ),
        None => "queues: the consumer's looks at the queue not counted (no ptrace)".into(),
    })
}
