//! `take()` hands over only a record whose ready was posted: the post is the promise that the
//! data is there, and a record in the slot without it is not in the handoff, however intact it
//! looks. The grader holds the producer before the last record, writes that record into the
//! slot itself, intact and numbered as the consumer expects, and kills the producer before it
//! posts ready: the consumer must give up with `kind=peer-gone`, not take the record.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::handover::{Handover, report_failure, whole_record};
use super::probe;
use super::slot::find_slot;
use super::waits::NOTICE_LIMIT;
use crate::engine::{Fail, Run};

/// Rounds of the run; the producer is held before the last.
const ROUNDS: u64 = 10;

pub(super) fn unposted_record_not_taken(
    run: &mut Run,
    mechanism: &'static str,
) -> Result<String, Fail> {
    let last = ROUNDS - 1;
    let at = last.to_string();
    let mut handover = Handover::start(run, mechanism, ROUNDS, &["--pause-producer-at", &at])?;
    let (producer, consumer, seed) = (handover.producer, handover.consumer, handover.seed);
    handover.go()?;
    let paused = handover.proc.recv("paused")?;
    if paused.get("role") != Some("producer") {
        return Err(Fail::Grader("the wrong side paused".into()));
    }
    // The slot holds the record before the last, which the consumer has taken.
    let slot = find_slot(producer, consumer, seed, last - 1)?;
    probe::poke(producer, slot, &whole_record(seed, last))?;
    kill(Pid::from_raw(producer), Signal::SIGKILL)
        .map_err(|e| Fail::Grader(format!("kill: {e}")))?;
    let killed = Instant::now();
    while probe::state(producer).is_some() && killed.elapsed() < NOTICE_LIMIT {
        std::thread::sleep(Duration::from_millis(1));
    }
    let report = handover.proc.recv_before(Instant::now() + NOTICE_LIMIT)?;
    handover.proc.kill_tree();
    let situation = format!(
        "the grader held the producer before the last record ({last}), the consumer waiting \
         for its ready, wrote record {last} into the slot itself, intact and numbered as the \
         consumer expected, and killed the producer (reaped by the parent) before it could \
         post ready ({mechanism})"
    );
    let Some(report) = report else {
        return Err(Fail::failed(format!(
            "{situation}: the consumer reported nothing within {} s: give up with PeerGone \
             once a slice has timed out with the producer gone",
            NOTICE_LIMIT.as_secs()
        )));
    };
    match (report.kind.as_str(), report.get("role"), report.get("kind")) {
        ("failed", Some("consumer"), Some("peer-gone")) => Ok(format!(
            "{mechanism}: a record in the slot with no ready posted was not taken from a gone \
             producer"
        )),
        ("done", Some("consumer"), _) => Err(Fail::failed(format!(
            "{situation}: the consumer said done with {} good records of {ROUNDS}: take() \
             returned record {last}, found in the slot, though ready was never posted for it. \
             The post is the promise that the data is there: a record in the slot without its \
             ready (half written, or written by a producer that died before its post) is not \
             in the handoff, however intact it looks. When wait(ready) gives up with PeerGone, \
             take() returns PeerGone",
            report.get("good").unwrap_or("?")
        ))),
        ("failed", _, _) => Err(report_failure(&report, mechanism)),
        (kind, _, _) => Err(Fail::failed(format!(
            "{situation}: the program said an unexpected `{kind}`"
        ))),
    }
}
