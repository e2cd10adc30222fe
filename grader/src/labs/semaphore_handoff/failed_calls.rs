//! Wait and post calls the grader makes fail: a timed wait made
//! to fail with an error that is neither `EINTR` nor `ETIMEDOUT`, which wait() must return as
//! `HandoffError::Wait`; a `sem_post()` made to fail with `EOVERFLOW` and a consumer's
//! `mq_timedsend()` with `EBADF`, which post() must return as `HandoffError::Post`.

use std::time::{Duration, Instant};

use rand::RngExt;

use super::forced_waits::{the_wait, waiting_in};
use super::handover::{Handover, report_failure};
use super::probe::{self, Seen};
use super::{CONSUMER, PRODUCER, WAIT_SLICE};
use crate::engine::tracer::{Action, Call, Tracer};
use crate::engine::{Fail, Run, force};

/// A timed wait made to fail with `errno` (neither EINTR nor ETIMEDOUT) must end wait() with
/// `HandoffError::Wait`: the waiting side reports `kind=wait`.
fn wait_error(
    run: &mut Run,
    mechanism: &'static str,
    (errno, errno_name): (i32, &'static str),
) -> Result<String, Fail> {
    let (pause, role, waiter_role, call) = if mechanism == "semaphores" {
        (
            "--pause-consumer-at",
            "consumer",
            PRODUCER,
            "sem_timedwait()",
        )
    } else {
        (
            "--pause-producer-at",
            "producer",
            CONSUMER,
            "mq_timedreceive()",
        )
    };
    // EAGAIN is what a queue whose description was made non-blocking (O_NONBLOCK, shared by
    // both sides across fork()) says at once, again and again: taken for a slice that timed
    // out, it makes a wait that spins.
    let eagain = if errno == libc::EAGAIN {
        " EAGAIN is no timeout: a blocking timed wait never says it, and when it does (a \
         description made non-blocking) it says it at once, every time, so that waiting again \
         spins on the CPU."
    } else if errno == libc::EINVAL {
        " EINVAL is no passing clock problem: with a deadline read from the clock just before \
         the call, a timed wait says it only of a queue or semaphore it cannot use, or a \
         deadline it refuses, and says it again at every retry."
    } else {
        ""
    };
    let at = run.rng().random_range(10..50u64).to_string();
    let mut handover = Handover::start(run, mechanism, 100, &[pause, &at])?;
    let waiter = if role == "consumer" {
        handover.producer
    } else {
        handover.consumer
    };
    let waiter_name = if role == "consumer" {
        "producer"
    } else {
        "consumer"
    };
    handover.go()?;
    let mut failed_call = false;
    let mut reported = false;
    loop {
        let message = handover.proc.recv_any()?;
        match (
            message.kind.as_str(),
            message.get("role"),
            message.get("kind"),
        ) {
            ("paused", Some(paused), _) if paused == role => {
                let wait = waiting_in(waiter).and_then(the_wait);
                if let Some(wait) = wait
                    && let Some(mut tracer) = Tracer::attach(waiter, wait, Action::Fail(errno))?
                {
                    failed_call = tracer.failed_before(Instant::now() + WAIT_SLICE * 5)?;
                }
                if failed_call {
                    match handover
                        .proc
                        .recv_before(Instant::now() + Duration::from_secs(2))?
                    {
                        Some(report) if report.kind == "failed" => {
                            if report.get("kind") != Some("wait") {
                                return Err(report_failure(&report, mechanism));
                            }
                            reported = true;
                            // The held side has taken every signal it was sent: a signal there
                            // now was posted by the side whose wait failed, after it failed.
                            if let Some(posted) = posted_after_failure(&handover, role) {
                                return Err(Fail::failed(format!(
                                    "the grader held the {role} before record {at} and made \
                                     {waiter_role}'s {call} fail with {errno_name} while it \
                                     waited ({mechanism}): {waiter_role} reported kind=wait, as \
                                     it should, but it had first posted {posted}, though its \
                                     wait had failed and it had taken nothing: the {role}, once \
                                     let go, would take that signal for one that answers its \
                                     record, and go on as if it had been received. A side posts \
                                     only after its wait succeeded and it did its part (take(): \
                                     wait for ready, copy, then post ok; put(): write, post \
                                     ready, wait for ok); a failed wait returns its error at \
                                     once"
                                )));
                            }
                        }
                        Some(other) => {
                            return Err(Fail::failed(format!(
                                "the program said an unexpected `{}`",
                                other.kind
                            )));
                        }
                        None => {
                            let doing = match probe::sample(waiter) {
                                Some(seen) => {
                                    format!("it was in {}", probe::describe_call(waiter, seen))
                                }
                                None => "it was running".into(),
                            };
                            return Err(Fail::failed(format!(
                                "the grader made {waiter_role}'s {call} fail with {errno_name} \
                                 (an error other than EINTR and ETIMEDOUT) while it waited \
                                 ({mechanism}): {waiter_role} reported nothing and went on \
                                 waiting ({doing} 2 s later). Any other error of the timed wait \
                                 ends wait() with HandoffError::Wait (kind=wait): waiting again \
                                 would loop for ever on an error that does not go away.{eagain}"
                            )));
                        }
                    }
                }
                handover.proc.send("go", &[])?;
            }
            ("failed", Some(side), Some("peer-gone")) if reported && side == role => {}
            ("failed", Some(side), Some("wait")) if side == waiter_name && !reported => {
                return Err(report_failure(&message, mechanism));
            }
            ("failed", _, _) => return Err(handover.failure(&message)),
            ("done", _, _) => {}
            ("ended", _, _) => break,
            (kind, _, _) => {
                return Err(Fail::failed(format!(
                    "the program said an unexpected `{kind}`"
                )));
            }
        }
    }
    handover.exit()?;
    Ok(if reported {
        format!("{mechanism}: {call} made to fail with {errno_name}: kind=wait")
    } else {
        format!("{mechanism}: the grader could not make {call} fail")
    })
}

/// What the consumer, its wait failed, posted to the held producer `held` (which has taken
/// every ok it was sent), in words; `None` if nothing, or if `held` is the consumer.
fn posted_after_failure(handover: &Handover, held: &str) -> Option<String> {
    // A consumer held before record K has the producer's ready for K before it, rightly: only
    // a held producer (which took the ok of K-1) has nothing to take.
    if held != "producer" {
        return None;
    }
    let pid = handover.producer;
    let (index, what) = (1, "ok");
    let name = &handover.names[index];
    if handover.mechanism == "queues" {
        let fd = *probe::queue_descriptors(pid, name).first()?;
        let messages = probe::queue_messages(pid, fd)?;
        (messages > 0).then(|| format!("{what} (the {what} queue {name} held {messages} message)"))
    } else {
        let value = probe::semaphore_value(name).or_else(|| {
            // Unlinked: read the semaphores the held side maps; one at 1 is the posted one.
            probe::semaphores_of(pid)
                .into_iter()
                .map(|(_, value)| value)
                .max()
        })?;
        (value > 0).then(|| format!("{what} (a semaphore of the handoff was at {value})"))
    }
}

/// The largest value of a semaphore (`SEM_VALUE_MAX`): a `sem_post()` at it fails with
/// `EOVERFLOW`.
const SEM_VALUE_MAX: u32 = i32::MAX as u32;

/// A `sem_post()` made to fail: with the producer held before record K and the consumer
/// stopped in its wait for ready, the grader sets the ready semaphore's value to
/// `SEM_VALUE_MAX` (in the consumer's mapping of it, which is the producer's too), then lets
/// the producer put record K: its `sem_post(ready)` fails with `EOVERFLOW`, which post() must
/// return as `HandoffError::Post` (`kind=post`). The value is set back to 0 before the
/// consumer goes on.
pub fn post_error(run: &mut Run) -> Result<String, Fail> {
    let at = run.rng().random_range(10..50u64).to_string();
    let mut handover = Handover::start(run, "semaphores", 100, &["--pause-producer-at", &at])?;
    let consumer = handover.consumer;
    handover.go()?;
    let paused = handover.proc.recv_any()?;
    match paused.kind.as_str() {
        "paused" => {}
        "failed" => return Err(handover.failure(&paused)),
        kind => {
            return Err(Fail::failed(format!(
                "the program said an unexpected `{kind}`"
            )));
        }
    }
    let named = |addr: u64| {
        probe::mappings(consumer)
            .iter()
            .any(|m| m.named_semaphore() && m.contains(addr))
    };
    let word = match waiting_in(consumer) {
        Some(Seen::Futex { addr, .. }) if named(addr) => Some(addr),
        _ => None,
    };
    let Some(word) = word else {
        handover.go_on_to_the_end()?;
        return Ok("semaphores: the consumer was not seen waiting on a named semaphore".into());
    };
    force::hold(consumer)?;
    probe::poke(consumer, word, &SEM_VALUE_MAX.to_ne_bytes())?;
    handover.proc.send("go", &[])?;
    let report = handover
        .proc
        .recv_before(Instant::now() + Duration::from_secs(4))?;
    // Whatever came, the consumer finds nothing to take once it goes on.
    probe::poke(consumer, word, &0u32.to_ne_bytes())?;
    force::resume(consumer)?;
    let situation = format!(
        "the grader held the producer before record {at}, stopped the consumer in its wait for \
         ready and set the ready semaphore to SEM_VALUE_MAX (2147483647), so that the \
         producer's sem_post(ready) for record {at} failed with EOVERFLOW (semaphores)"
    );
    match report {
        Some(report) if report.kind == "failed" && report.get("role") == Some("producer") => {
            if report.get("kind") != Some("post") {
                return Err(Fail::failed(format!(
                    "{situation}: the producer reported kind={} (`{}`), not kind=post: a \
                     failed sem_post() or mq_send() is HandoffError::Post, whatever the error; \
                     HandoffError::Wait is for the timed wait",
                    report.get("kind").unwrap_or("none"),
                    report.get("error").unwrap_or("")
                )));
            }
            super::carried_errno::carries(&report, "EOVERFLOW", "the producer", &situation)?;
        }
        Some(report) if report.kind == "failed" => return Err(handover.failure(&report)),
        Some(report) => {
            return Err(Fail::failed(format!(
                "{situation}: the program said `{}`, not the producer's kind=post",
                report.kind
            )));
        }
        None => {
            return Err(Fail::failed(format!(
                "{situation}: the producer reported nothing within 4 s: a failed sem_post() \
                 ends post() with HandoffError::Post (kind=post), which put() returns"
            )));
        }
    }
    finish_after_failed_post(&mut handover, "consumer")?;
    Ok("semaphores: sem_post() at SEM_VALUE_MAX (EOVERFLOW): kind=post".into())
}

pub fn wait_errors(run: &mut Run) -> Result<String, Fail> {
    Ok(format!(
        "{}; {}; {}; {}",
        wait_error(run, "semaphores", (libc::EOVERFLOW, "EOVERFLOW"))?,
        // Queues: glibc's sem_timedwait() itself retries a futex wait that says EINVAL, and
        // mq_timedreceive() hands it on.
        wait_error(run, "queues", (libc::EINVAL, "EINVAL"))?,
        wait_error(run, "queues", (libc::EBADF, "EBADF"))?,
        wait_error(run, "queues", (libc::EAGAIN, "EAGAIN"))?
    ))
}

/// The consumer's post of ok fails (queues: the grader makes its `mq_timedsend()` fail with
/// `EBADF`, as on a descriptor closed behind its back): take() must return that error
/// (`kind=post`, from the consumer), not drop it and go on to the next record.
pub fn consumer_post_error(run: &mut Run) -> Result<String, Fail> {
    let at = run.rng().random_range(10..50u64).to_string();
    let mut handover = Handover::start(run, "queues", 100, &["--pause-consumer-at", &at])?;
    let consumer = handover.consumer;
    handover.go()?;
    let paused = handover.proc.recv_any()?;
    match paused.kind.as_str() {
        "paused" if paused.get("role") == Some("consumer") => {}
        "failed" => return Err(handover.failure(&paused)),
        kind => {
            return Err(Fail::failed(format!(
                "the program said an unexpected `{kind}`"
            )));
        }
    }
    let tracer = Tracer::attach(
        consumer,
        Call::any(libc::SYS_mq_timedsend),
        Action::Fail(libc::EBADF),
    )?;
    handover.proc.send("go", &[])?;
    let Some(mut tracer) = tracer else {
        handover.finish(|_, _| Ok(()))?;
        return Ok("queues: the consumer's post not made to fail (no ptrace)".into());
    };
    let report = handover
        .proc
        .recv_before(Instant::now() + Duration::from_secs(3))?;
    let failed = tracer.failed_before(Instant::now() + Duration::from_millis(200))?;
    drop(tracer);
    let situation = format!(
        "the grader made the consumer's mq_send() of ok after record {at} fail with EBADF \
         (queues; the producer's posts went through)"
    );
    match report {
        Some(report) if report.kind == "failed" && report.get("role") == Some("consumer") => {
            if report.get("kind") != Some("post") {
                handover.proc.kill_tree();
                return Err(Fail::failed(format!(
                    "{situation}: the consumer reported kind={} (`{}`), not kind=post: a failed \
                     sem_post() or mq_send() is HandoffError::Post",
                    report.get("kind").unwrap_or("none"),
                    report.get("error").unwrap_or("")
                )));
            }
            if let Err(fail) =
                super::carried_errno::carries(&report, "EBADF", "the consumer", &situation)
            {
                handover.proc.kill_tree();
                return Err(fail);
            }
        }
        Some(report) if report.kind == "failed" => {
            handover.proc.kill_tree();
            return Err(handover.failure(&report));
        }
        _ if !failed => {
            // The consumer made no mq_timedsend(): its post is judged elsewhere.
            handover.proc.kill_tree();
            return Ok("queues: no mq_send() of the consumer seen".into());
        }
        Some(report) => {
            handover.proc.kill_tree();
            return Err(Fail::failed(format!(
                "{situation}: the program said `{}`, not the consumer's kind=post: take() \
                 dropped the error of its post(ok) and went on. A failed step is the take's \
                 error: return post()'s HandoffError::Post (kind=post), or the producer waits \
                 for an ok that was never sent",
                report.kind
            )));
        }
        None => {
            handover.proc.kill_tree();
            return Err(Fail::failed(format!(
                "{situation}: the consumer reported nothing within 3 s: take() dropped the \
                 error of its post(ok) and went on to wait for the next record, while the \
                 producer waits for an ok that was never sent. A failed step is the take's \
                 error: return post()'s HandoffError::Post (kind=post)"
            )));
        }
    }
    finish_after_failed_post(&mut handover, "producer")?;
    Ok("queues: the consumer's mq_send() of ok failing (EBADF): kind=post".into())
}

/// Reads what the program says to its end, then lets the parent exit: after a side's failed
/// post, its peer's kind=peer-gone (`peer`, the role) is expected, any other failure is not.
fn finish_after_failed_post(handover: &mut Handover, peer: &str) -> Result<(), Fail> {
    loop {
        let message = handover.proc.recv_any()?;
        match (message.kind.as_str(), message.get("kind")) {
            ("failed", Some("peer-gone")) if message.get("role") == Some(peer) => {}
            ("failed", _) => return Err(handover.failure(&message)),
            ("ended", _) => break,
            (kind, _) => {
                return Err(Fail::failed(format!(
                    "the program said an unexpected `{kind}`"
                )));
            }
        }
    }
    handover.exit()
}
