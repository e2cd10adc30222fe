//! A peer gone after its part: the record a producer handed over before it died is still
//! taken (and answered with ok), and a timed wait failing with an error of its own while the
//! peer is gone is still that error (`kind=wait`), not `PeerGone`.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::forced_waits::{the_wait, waiting_in};
use super::handover::{Handover, expected_digest, report_failure};
use super::peer_gone::consumer_reaped_then_wait_fails;
use super::probe;
use super::waits::NOTICE_LIMIT;
use crate::engine::{Fail, Run, force};

/// Rounds of the run whose producer is killed once it has put the last record.
const ROUNDS: u64 = 20;

/// How many signals wait in the parent's ready and ok (a semaphore's value, a queue's
/// messages), read from its own semaphores or descriptors; `ready` is the address of the ready
/// semaphore. `None` if they cannot be read.
fn pending(handover: &Handover, parent: i32, ready: Option<u64>) -> Option<[i64; 2]> {
    if handover.mechanism == "queues" {
        let count = |name: &str| {
            let fd = *probe::queue_descriptors(parent, name).first()?;
            probe::queue_messages(parent, fd)
        };
        return Some([count(&handover.names[0])?, count(&handover.names[1])?]);
    }
    let semaphores = probe::semaphores_of(parent);
    let ready = ready?;
    let value = |wanted: bool| {
        semaphores
            .iter()
            .find(|(addr, _)| (*addr == ready) == wanted)
            .map(|(_, value)| i64::from(*value))
    };
    Some([value(true)?, value(false)?])
}

/// The producer puts the last record (writes it, posts ready) and dies before the consumer
/// takes it: the grader holds the consumer before the last record, waits until the producer
/// sits in its wait for ok, kills it and waits until the parent has reaped it, stops the parent
/// (so that it keeps its signals open) and lets the consumer go. The ready is there: the
/// consumer must take it, copy the record, post ok and say `done` with every record good.
fn record_of_a_gone_producer(run: &mut Run, mechanism: &'static str) -> Result<String, Fail> {
    let last = ROUNDS - 1;
    let at = last.to_string();
    let mut handover = Handover::start(run, mechanism, ROUNDS, &["--pause-consumer-at", &at])?;
    let (producer, parent, seed) = (handover.producer, handover.proc.pid.as_raw(), handover.seed);
    handover.go()?;
    let paused = handover.proc.recv("paused")?;
    if paused.get("role") != Some("consumer") {
        return Err(Fail::Grader("the wrong side paused".into()));
    }
    if waiting_in(producer).and_then(the_wait).is_none() {
        // Not seen in its wait for ok: the rounds are judged elsewhere.
        handover.proc.kill_tree();
        return Ok(format!(
            "{mechanism}: the producer was not seen waiting for its last ok"
        ));
    }
    // The ready semaphore is the one at 1 (posted, not yet taken); the ok one is at 0.
    let ready = probe::semaphores_of(parent)
        .into_iter()
        .find(|(_, value)| *value == 1)
        .map(|(addr, _)| addr);
    kill(Pid::from_raw(producer), Signal::SIGKILL)
        .map_err(|e| Fail::Grader(format!("kill: {e}")))?;
    let killed = Instant::now();
    while probe::state(producer).is_some() && killed.elapsed() < NOTICE_LIMIT {
        std::thread::sleep(Duration::from_millis(1));
    }
    force::hold(parent)?;
    handover.proc.send("go", &[])?;
    let report = handover.proc.recv_before(Instant::now() + NOTICE_LIMIT)?;
    let left = pending(&handover, parent, ready);
    force::resume(parent)?;
    let situation = format!(
        "the grader held the consumer before the last record ({last}), let the producer put it \
         (write it, post ready) and wait for its ok, then killed the producer, waited until the \
         parent had reaped it, and let the consumer go ({mechanism})"
    );
    let Some(report) = report else {
        handover.proc.kill_tree();
        return Err(Fail::failed(format!(
            "{situation}: the consumer reported nothing within {} s",
            NOTICE_LIMIT.as_secs()
        )));
    };
    match (report.kind.as_str(), report.get("role"), report.get("kind")) {
        ("done", Some("consumer"), _) => {
            let good = report.get("good").unwrap_or("?");
            let digest = report.get("digest").and_then(|d| d.parse::<u64>().ok());
            if good != ROUNDS.to_string() || digest != Some(expected_digest(seed, ROUNDS, None)) {
                handover.proc.kill_tree();
                return Err(Fail::failed(format!(
                    "{situation}: the consumer said done with {good} good records of {ROUNDS} \
                     (first problem: {}), not every record the producer put",
                    report.get("first").unwrap_or("")
                )));
            }
            if let Some([_, 0]) = left {
                handover.proc.kill_tree();
                return Err(Fail::failed(format!(
                    "{situation}: the consumer took record {last} but posted no ok for it \
                     (nothing in the parent's ok): take() is wait(ready), copy, then post(ok), \
                     whether or not the producer is still there"
                )));
            }
        }
        ("failed", Some("consumer"), Some("peer-gone")) => {
            handover.proc.kill_tree();
            let why = match left {
                Some([0, 0]) => format!(
                    "its wait took the ready (the parent's ready was at 0 after) and take() then \
                     threw record {last} away and posted no ok: take() asked Peer::gone() after \
                     its wait succeeded"
                ),
                Some([ready, _]) if ready > 0 => format!(
                    "the ready was still there after (the parent's ready at {ready}): wait() \
                     gave up without taking it, asking Peer::gone() before a slice had timed \
                     out"
                ),
                _ => "either wait() asked Peer::gone() before taking the ready that was there, \
                      or take() asked it after its wait and threw the record away"
                    .into(),
            };
            return Err(Fail::failed(format!(
                "{situation}: the consumer gave up with kind=peer-gone instead of taking record \
                 {last}, which was in the slot with its ready posted: {why}. A signal already \
                 there is taken, even from a peer that is gone since: take() waits for ready, \
                 copies the record and posts ok; PeerGone comes only from a wait whose slice \
                 timed out"
            )));
        }
        _ if report.kind == "failed" => {
            handover.proc.kill_tree();
            return Err(report_failure(&report, mechanism));
        }
        (kind, _, _) => {
            handover.proc.kill_tree();
            return Err(Fail::failed(format!(
                "{situation}: the program said an unexpected `{kind}`"
            )));
        }
    }
    let ended = handover.proc.recv_any()?;
    if ended.kind != "ended" {
        handover.proc.kill_tree();
        return Err(Fail::failed(format!(
            "the program said `{}` where it should have ended",
            ended.kind
        )));
    }
    handover.exit()?;
    Ok(format!(
        "{mechanism}: the last record, put by a producer killed and reaped since, was taken \
         and answered"
    ))
}

/// A timed wait that fails with an error of its own (`EOVERFLOW`) while the peer is gone and
/// reaped: the grader holds the producer (waiting for ok) as its `kill(consumer, 0)` after a
/// timed-out slice returns, kills the consumer, waits until it is reaped, then makes the
/// producer's next timed wait fail with `EOVERFLOW`. wait() chooses by the error: only
/// `ETIMEDOUT` asks whether the peer is gone; any other error is `HandoffError::Wait`.
fn wait_error_with_peer_gone(run: &mut Run) -> Result<String, Fail> {
    let (mut handover, _killed, failed) =
        consumer_reaped_then_wait_fails(run, libc::EOVERFLOW, |second, _| {
            second.failed_before(Instant::now() + Duration::from_secs(2))
        })?;
    let mut said = None;
    loop {
        let Some(message) = handover.proc.recv_before(Instant::now() + NOTICE_LIMIT)? else {
            handover.proc.kill_tree();
            return Err(Fail::failed(format!(
                "the grader killed the consumer, waited until it was reaped, and made the \
                 producer's timed wait fail with EOVERFLOW (semaphores): the producer reported \
                 nothing within {} s",
                NOTICE_LIMIT.as_secs()
            )));
        };
        match (message.kind.as_str(), message.get("role")) {
            ("failed", Some("producer")) => said = Some(message),
            ("ended", _) => break,
            ("failed", _) => {
                handover.proc.kill_tree();
                return Err(report_failure(&message, "semaphores"));
            }
            _ => {}
        }
    }
    handover.exit()?;
    if failed != Some(true) {
        return Ok("semaphores: a wait error with the consumer gone not tried".into());
    }
    match said {
        Some(message) if message.get("kind") == Some("wait") => Ok(
            "semaphores: a timed wait failing with EOVERFLOW, the consumer gone: kind=wait".into(),
        ),
        Some(message) if message.get("kind") == Some("peer-gone") => Err(Fail::failed(
            "the grader killed the consumer while the producer waited for its ok (semaphores), \
             waited until the parent had reaped it, then made the producer's next timed wait \
             fail with EOVERFLOW (an error other than EINTR and ETIMEDOUT): the producer \
             reported kind=peer-gone, not kind=wait. wait() asked Peer::gone() for an error \
             that is no timed-out slice: choose by the errno first; only ETIMEDOUT asks whether \
             the peer is gone, and any other error is HandoffError::Wait (kind=wait), whether \
             or not the peer is still there",
        )),
        Some(message) => Err(report_failure(&message, "semaphores")),
        None => Err(Fail::failed(
            "the grader killed the consumer, waited until it was reaped, and made the producer's \
             timed wait fail with EOVERFLOW (semaphores): the producer ended without reporting \
             an error; any error of the timed wait other than EINTR and ETIMEDOUT is \
             HandoffError::Wait (kind=wait)",
        )),
    }
}

pub fn gone_after_post(run: &mut Run) -> Result<Vec<String>, Fail> {
    Ok(vec![
        record_of_a_gone_producer(run, "semaphores")?,
        record_of_a_gone_producer(run, "queues")?,
        wait_error_with_peer_gone(run)?,
    ])
}
