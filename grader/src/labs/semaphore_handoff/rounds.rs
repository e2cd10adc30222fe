//! Plain handoffs of many records, free or with both sides on one CPU (where the woken side
//! often runs at once, so that a post made too early shows): every record must arrive once, in
//! order, intact.

use crate::engine::{Fail, Run};

use super::handover::Handover;

/// A plain run of `rounds` records; returns the mean round trip in microseconds.
fn rounds(run: &mut Run, mechanism: &'static str, rounds: u64, pinned: bool) -> Result<f64, Fail> {
    let extra: &[&str] = if pinned { &["--cpu", "0"] } else { &[] };
    let mut handover = Handover::start(run, mechanism, rounds, extra)?;
    let reports = handover.finish(|_, _| Ok(()))?;
    let what = format!(
        "{rounds} rounds with {mechanism}{}",
        if pinned { " on one CPU" } else { "" }
    );
    handover.verify(&reports, &what)?;
    Ok(reports.round_trip_us)
}

pub fn sem_free_rounds(run: &mut Run) -> Result<String, Fail> {
    let micros = rounds(run, "semaphores", 10_000, false)?;
    Ok(format!(
        "10000 records intact and in order; a round trip (put: write, post, wait) took {micros:.1} \
         us on average"
    ))
}

pub fn sem_pinned_rounds(run: &mut Run) -> Result<String, Fail> {
    let micros = rounds(run, "semaphores", 1000, true)?;
    Ok(format!(
        "1000 records intact and in order on one CPU; {micros:.1} us per round trip"
    ))
}

pub fn mq_rounds(run: &mut Run) -> Result<String, Fail> {
    let pinned = rounds(run, "queues", 1000, true)?;
    let free = rounds(run, "queues", 10_000, false)?;
    Ok(format!(
        "1000 records on one CPU ({pinned:.1} us per round trip) and 10000 on any ({free:.1} us) \
         intact and in order"
    ))
}
