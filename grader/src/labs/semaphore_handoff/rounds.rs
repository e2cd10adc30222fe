//! Plain handoffs of many records, free or with both sides on one CPU (where the woken side
//! often runs at once, so that a post made too early shows): every record must arrive once, in
//! order, intact.

use std::time::{Duration, Instant};

use rand::RngExt;

use super::affinity_kept::cpus_kept_through_rounds;
use super::handover::{expected_digest, whole_record};
use super::probe;
use super::slot::find_slot;
use crate::engine::tracer::{Action, Call, Tracer};
use crate::engine::{Fail, Run, force};

use super::handover::Handover;
use super::{CONSUMER, PARENT, PRODUCER};

/// A plain run of `rounds` records; returns the mean round trip in microseconds.
fn rounds(run: &mut Run, mechanism: &'static str, rounds: u64, pinned: bool) -> Result<f64, Fail> {
    // Free, the consumer pauses before the last record, where the affinity is read again.
    let last = (rounds - 1).to_string();
    let extra: &[&str] = if pinned {
        &["--cpu", "0"]
    } else {
        &["--pause-consumer-at", &last]
    };
    let mut handover = Handover::start(run, mechanism, rounds, extra)?;
    let grader_cpus = cpus_of(0).filter(|cpus| !pinned && cpus.len() >= 2);
    if !pinned {
        cpus_left_alone(&handover, mechanism)?;
    }
    if pinned {
        super::process_left::pinned_as_asked(&handover, mechanism, 0)?;
    }
    let (parent, producer, consumer) = (
        handover.proc.pid.as_raw(),
        handover.producer,
        handover.consumer,
    );
    let reports = handover.finish(|proc, _| {
        if let Some(ours) = &grader_cpus {
            cpus_kept_through_rounds(mechanism, rounds, [parent, producer, consumer], ours)?;
        }
        proc.send("go", &[])
    })?;
    let what = format!(
        "{rounds} rounds with {mechanism}{}",
        if pinned { " on one CPU" } else { "" }
    );
    handover.verify(&reports, &what)?;
    Ok(reports.round_trip_us)
}

/// The CPUs `pid` may run on (its affinity); `None` if it cannot be read.
pub(super) fn cpus_of(pid: i32) -> Option<Vec<usize>> {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(pid)).ok()?;
    Some(
        (0..nix::sched::CpuSet::count())
            .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
            .collect(),
    )
}

/// Started without `--cpu`, the program runs where the grader does: at `ready`, the parent
/// and both sides may still run on every CPU the grader may. Where the sides run is main.rs's
/// to decide (`--cpu`); a lab that narrows its affinity (in `create()`, which both sides
/// inherit) pins the sides together and makes the free round trip a pinned one.
fn cpus_left_alone(handover: &Handover, mechanism: &str) -> Result<(), Fail> {
    let Some(ours) = cpus_of(0) else {
        return Ok(());
    };
    if ours.len() < 2 {
        return Ok(());
    }
    let sides = [
        (PARENT, handover.proc.pid.as_raw()),
        (PRODUCER, handover.producer),
        (CONSUMER, handover.consumer),
    ];
    for (role, pid) in sides {
        match cpus_of(pid) {
            Some(theirs) if theirs != ours => {
                return Err(Fail::failed(format!(
                    "started without --cpu ({mechanism}), {role} may run only on CPU(s) \
                     {theirs:?} at ready (its affinity, sched_getaffinity()), where the grader \
                     that started it may run on {ours:?}: the lab's code narrowed the CPU \
                     affinity (sched_setaffinity(), in Handoff::create() or another call before \
                     fork(), which both sides inherit), which pins the sides together and makes \
                     the free round trip a pinned one. Where the sides run is main.rs's to say \
                     (--cpu); the handoff leaves the affinity as it found it"
                )));
            }
            _ => {}
        }
    }
    Ok(())
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
    let forced = ok_after_copy(run)?;
    Ok(format!(
        "1000 records intact and in order on one CPU; {micros:.1} us per round trip; {forced}"
    ))
}

/// The consumer held where it posts ok for record `seq` (its first futex wake once let go from
/// a pause before that record; the producer waits for that ok in the kernel), while the grader
/// puts another record `seq` in the slot. A consumer that copied the record before posting ok
/// has the producer's; one that posts ok first copies the grader's. On one CPU a post before
/// the copy shows only when the scheduler switches right after the post: here, every time.
fn ok_after_copy(run: &mut Run) -> Result<String, Fail> {
    let seq = run.rng().random_range(10..90u64);
    let at = seq.to_string();
    let rounds = 100;
    let mut handover = Handover::start(run, "semaphores", rounds, &["--pause-consumer-at", &at])?;
    let (producer, consumer, seed) = (handover.producer, handover.consumer, handover.seed);
    let mut other: u64 = run.rng().random();
    if other == seed {
        other ^= 1;
    }
    let wake = Call::bits(libc::SYS_futex, 1, 0x7f, libc::FUTEX_WAKE as u64);
    let mut held = false;
    let mut traced = true;
    let reports = handover.finish(|proc, _| {
        let slot = find_slot(producer, consumer, seed, seq)?;
        let tracer = Tracer::attach(consumer, wake, Action::Hold)?;
        proc.send("go", &[])?;
        let Some(mut tracer) = tracer else {
            traced = false;
            return Ok(());
        };
        if tracer.held_before(Instant::now() + Duration::from_secs(3))? {
            // sem_post() raises the value before its wake: a producer not yet asleep takes the
            // ok without it and may be writing the next record already. Stopped, it is judged
            // only while the slot still holds record `seq`.
            force::hold(producer)?;
            let want = whole_record(seed, seq);
            if probe::peek(producer, slot, want.len()).is_some_and(|now| now == want) {
                probe::poke(producer, slot, &whole_record(other, seq))?;
                held = true;
            }
            force::resume(producer)?;
        }
        tracer.release();
        Ok(())
    })?;
    if !traced {
        run.note(
            "the grader may not trace the consumer here (ptrace): ok before the copy not forced",
        );
    }
    if held && reports.digest == expected_digest(seed, rounds, Some((seq, other))) {
        return Err(Fail::failed(format!(
            "the grader held the consumer at its post of ok for record {seq}, and put another \
             record {seq} in the slot meanwhile: the consumer took the grader's record, so it \
             posted ok before it had copied the slot; take() must post ok only after copying \
             the slot (the producer writes the next record the moment ok is posted)"
        )));
    }
    handover.verify(
        &reports,
        &format!("{rounds} rounds with semaphores, ok held"),
    )?;
    Ok(if held {
        format!("held at its ok for record {seq}, the consumer had already copied it")
    } else {
        "the consumer was not seen posting ok in the kernel (no waiter)".into()
    })
}

pub fn mq_rounds(run: &mut Run) -> Result<String, Fail> {
    let pinned = rounds(run, "queues", 1000, true)?;
    let free = rounds(run, "queues", 10_000, false)?;
    Ok(format!(
        "1000 records on one CPU ({pinned:.1} us per round trip) and 10000 on any ({free:.1} us) \
         intact and in order"
    ))
}
