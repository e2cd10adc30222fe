//! The records travel through the slot, and only through it: while the consumer is held before
//! record K, the grader finds record K in the producer's shared anonymous mapping (read from
//! `/proc/PID/mem`), checks that the consumer maps the same one, and replaces the record there
//! with another intact record K. A consumer that copies the slot takes the replacement; one
//! that gets the records another way (a pipe, a file, computing them) takes the original.

use std::time::{Duration, Instant};

use rand::RngExt;

use super::handover::{Handover, Reports, expected_digest, expected_record, whole_record};
use super::probe::{self, Mapping};
use super::{PAYLOAD, RECORD_SIZE};
use crate::engine::tracer::{Action, Call, Tracer};
use crate::engine::{Fail, Run};

/// How long the producer may take to write a record into the slot once the consumer has freed
/// it.
const SLOT_PATIENCE: Duration = Duration::from_secs(5);

/// What a slot's bytes hold, in words.
fn describe_slot(bytes: &[u8], seed: u64) -> String {
    let seq = u64::from_ne_bytes(bytes[..8].try_into().expect("8 bytes"));
    if bytes.iter().all(|&b| b == 0) {
        "only zeros".into()
    } else if bytes == expected_record(seed, seq) {
        format!("record {seq}")
    } else {
        format!("a record numbered {seq} whose payload is not the producer's")
    }
}

/// The record near `seq` whose payload `bytes` holds under another number: the
/// slot written over after `put()`.
fn renumbered(bytes: &[u8], seed: u64, seq: u64) -> Option<u64> {
    (seq.saturating_sub(2)..=seq + 1).find(|&near| {
        let record = expected_record(seed, near);
        bytes.len() == record.len() && bytes[..8] != record[..8] && bytes[8..] == record[8..]
    })
}

/// The address of the shared anonymous mapping of `pid` that starts with `want`, looking again
/// for up to `patience` (the producer may still be writing it).
pub fn slot_holding(pid: i32, want: &[u8], patience: Duration) -> Option<u64> {
    let until = Instant::now() + patience;
    loop {
        let found = probe::mappings(pid).into_iter().find(|m| {
            m.shared_anonymous()
                && probe::peek(pid, m.start, want.len()).is_some_and(|bytes| bytes == want)
        });
        if found.is_some() || Instant::now() > until {
            return found.map(|m| m.start);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Where record `seq` lies in the shared mappings of `producer` other than shared anonymous
/// ones, if anywhere: to say what the slot was made of instead.
fn found_elsewhere(producer: i32, want: &[u8]) -> Option<Mapping> {
    probe::mappings(producer).into_iter().find(|m| {
        m.shared()
            && !m.shared_anonymous()
            && m.len() >= want.len() as u64
            && probe::peek(producer, m.start, want.len()).is_some_and(|bytes| bytes == want)
    })
}

/// The largest shared mapping searched for copies of a record: a slot is a page.
const SEARCHED: u64 = 64 << 20;

/// Every place where `want` lies in the shared mappings of `pid` (named semaphores aside), as
/// the mapping and the offset in it: the slot, and any other copy of the record.
fn copies_of(pid: i32, want: &[u8]) -> Vec<(Mapping, u64)> {
    let head = &want[..8.min(want.len())];
    let mut found = Vec::new();
    for mapping in probe::mappings(pid) {
        if !mapping.shared() || mapping.named_semaphore() || mapping.len() > SEARCHED {
            continue;
        }
        let Some(bytes) = probe::peek(pid, mapping.start, mapping.len() as usize) else {
            continue;
        };
        let offsets = (0..bytes.len().saturating_sub(want.len()) + 1)
            .filter(|&at| bytes[at..].starts_with(head) && bytes[at..].starts_with(want));
        for at in offsets.collect::<Vec<usize>>() {
            found.push((mapping.clone(), at as u64));
        }
    }
    found
}

/// A mapping and an offset in it, in words.
fn place(mapping: &Mapping, offset: u64) -> String {
    let what = match mapping.path.as_str() {
        "/dev/zero (deleted)" => "a shared anonymous mapping".to_string(),
        path => format!("a shared mapping of {path}"),
    };
    format!("{what} at {:#x}", mapping.start + offset)
}

/// With the consumer held before taking record `seq` (so the producer has written it and waits
/// for ok), finds the record at the start of a shared anonymous mapping of the producer that
/// the consumer maps too; returns its address.
pub(super) fn find_slot(producer: i32, consumer: i32, seed: u64, seq: u64) -> Result<u64, Fail> {
    let want = expected_record(seed, seq);
    let slots: Vec<Mapping> = probe::mappings(producer)
        .into_iter()
        .filter(|m| m.shared_anonymous() && m.len() >= RECORD_SIZE)
        .collect();
    let until = Instant::now() + SLOT_PATIENCE;
    let mut bytes = vec![0u8; want.len()];
    let slot = loop {
        // The producer may still be writing it: look again until it is there.
        let found = slots.iter().find(|slot| {
            probe::peek(producer, slot.start, want.len()).is_some_and(|b| {
                bytes = b;
                bytes == want
            })
        });
        if let Some(slot) = found {
            break slot;
        }
        if Instant::now() > until {
            if let Some(other) = found_elsewhere(producer, &want) {
                return Err(Fail::failed(format!(
                    "while the consumer waited to take record {seq}, record {seq} was in the \
                     producer's shared mapping of {}, not in a shared anonymous mapping: make \
                     the slot with mmap_anonymous(MAP_SHARED) in Handoff::create(), not from a \
                     file",
                    other.path
                )));
            }
            if slots.is_empty() {
                return Err(Fail::failed(format!(
                    "while the consumer waited to take record {seq}, the producer had no shared \
                     anonymous mapping to hold the slot, and record {seq} was in none of its \
                     shared mappings: make the slot with mmap_anonymous(MAP_SHARED) in \
                     Handoff::create(), before fork(), and copy each record into it"
                )));
            }
            if let Some(payload_of) = renumbered(&bytes, seed, seq) {
                let number = u64::from_ne_bytes(bytes[..8].try_into().expect("8 bytes"));
                return Err(Fail::failed(format!(
                    "while the consumer waited to take record {seq}, the producer's slot (its \
                     shared anonymous mapping) held record {payload_of}, its payload intact \
                     but numbered {number} ({number:#x}): its number was \
                     written over after put() wrote the record. take() marks the slot once it \
                     has its copy (for a producer that watches the slot for that mark, \
                     spinning, instead of waiting for ok), or another write of the handoff \
                     lands in the slot. take() only copies out of the slot: the producer learns \
                     that the record was taken from ok, and from nothing else"
                )));
            }
            if bytes.iter().all(|&b| b == 0) {
                return Err(Fail::failed(format!(
                    "while the consumer waited to take record {seq}, the producer's slot (its \
                     shared anonymous mapping) held only zeros, not record {seq}: either put() \
                     did not copy the record into the slot (it travels some other way, a file \
                     or a pipe), or take() wrote over the slot after copying a record out \
                     (clearing it, to mark it taken). put() copies each record into the slot \
                     (Handoff::slot) before posting ready, and take() only reads it"
                )));
            }
            return Err(Fail::failed(format!(
                "while the consumer waited to take record {seq}, the producer's slot (its \
                 shared anonymous mapping) held {}, not record {seq}: put() must copy each \
                 record into the slot (Handoff::slot) before posting ready; records that travel \
                 any other way (a file, a pipe) are not the handoff",
                describe_slot(&bytes, seed)
            )));
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    // The record goes into the slot, and nowhere else a consumer could take it from.
    let copies = copies_of(producer, &want);
    if copies.len() > 1 {
        let places: Vec<String> = copies
            .iter()
            .enumerate()
            .map(|(n, (m, at))| {
                if copies[..n].iter().any(|(other, _)| other.start == m.start) {
                    format!(
                        "the same mapping again, {at} bytes into it (it is {} bytes long), at \
                         {:#x}",
                        m.len(),
                        m.start + at
                    )
                } else {
                    place(m, *at)
                }
            })
            .collect();
        return Err(Fail::failed(format!(
            "while the consumer waited to take record {seq}, the producer held {} copies of \
             record {seq} in memory it shares ({}): put() must copy each record into the slot \
             (Handoff::slot) and nowhere else, and take() copy it out of there; a second copy \
             is a way around the slot",
            copies.len(),
            places.join("; ")
        )));
    }
    if !probe::mappings(consumer)
        .iter()
        .any(|mapping| mapping.shared_anonymous() && mapping.inode == slot.inode)
    {
        return Err(Fail::failed(
            "the consumer does not map the producer's slot: create the slot in \
             Handoff::create(), before fork(), so that both sides inherit the same mapping",
        ));
    }
    Ok(slot.start)
}

pub fn record_in_slot(run: &mut Run) -> Result<String, Fail> {
    let mut notes = Vec::new();
    for mechanism in ["semaphores", "queues"] {
        let seq = run.rng().random_range(10..90u64);
        let mut other: u64 = run.rng().random();
        let at = seq.to_string();
        let mut handover = Handover::start(run, mechanism, 100, &["--pause-consumer-at", &at])?;
        let (producer, consumer, seed) = (handover.producer, handover.consumer, handover.seed);
        if other == seed {
            other ^= 1;
        }
        let reports = handover.finish(|proc, _| {
            let slot = find_slot(producer, consumer, seed, seq)?;
            probe::poke(producer, slot, &whole_record(other, seq))?;
            proc.send("go", &[])
        })?;
        handover.verify_with(
            &reports,
            &format!("100 rounds with {mechanism}"),
            Some((seq, other)),
        )?;
        notes.push(format!("{mechanism}: record {seq}"));
    }
    notes.push(copied_after_ready(run)?);
    // Before the torn payload: a checksum made up by the consumer is named by its own step.
    notes.push(checksum_copied(run)?);
    notes.push(torn_after_ready(run)?);
    // The copy into the slot is the same whichever signals carry the posts: one mechanism.
    notes.push(put_copies_every_record(run, "semaphores")?);
    Ok(format!(
        "each record K was in the producer's shared anonymous slot, which the consumer maps too, \
         and the consumer took the record the grader put in its place ({}; {PAYLOAD}-byte \
         payloads)",
        notes.join(", ")
    ))
}

/// 100 rounds with queues, the consumer paused before record `seq`: the grader lets it go,
/// holds it at the entry of its `mq_timedreceive()` for ready (the producer has written record
/// `seq` and posted ready), and only then writes `record(seed)` into the slot. Returns the
/// handover, its reports, and whether the record was written (false when the wait could not be
/// held).
fn written_at_ready(
    run: &mut Run,
    seq: u64,
    record: impl FnOnce(u64) -> Vec<u8>,
) -> Result<(Handover, Reports, bool), Fail> {
    let at = seq.to_string();
    let mut handover = Handover::start(run, "queues", 100, &["--pause-consumer-at", &at])?;
    let (producer, consumer, seed) = (handover.producer, handover.consumer, handover.seed);
    let record = record(seed);
    let mut written = false;
    let reports = handover.finish(|proc, _| {
        let slot = find_slot(producer, consumer, seed, seq)?;
        let tracer = Tracer::attach(consumer, Call::any(libc::SYS_mq_timedreceive), Action::Hold)?;
        proc.send("go", &[])?;
        let Some(mut tracer) = tracer else {
            return Ok(());
        };
        if tracer.held_before(Instant::now() + Duration::from_secs(2))? {
            probe::poke(producer, slot, &record)?;
            written = true;
        }
        tracer.release();
        Ok(())
    })?;
    Ok((handover, reports, written))
}

/// The consumer copies the slot only once its wait for ready has returned: with queues, the
/// grader lets the consumer (held before record K, which the producer has written and
/// announced) go on, holds it at the entry of its `mq_timedreceive()` for ready, and only then
/// writes another record K into the slot. A consumer that copied the slot before that wait
/// takes the record that was there before.
fn copied_after_ready(run: &mut Run) -> Result<String, Fail> {
    let seq = run.rng().random_range(10..90u64);
    let mut other: u64 = run.rng().random();
    let (handover, reports, swapped) = written_at_ready(run, seq, |seed| {
        if other == seed {
            other ^= 1;
        }
        whole_record(other, seq)
    })?;
    let seed = handover.seed;
    if swapped && reports.digest == expected_digest(seed, 100, None) {
        return Err(Fail::failed(format!(
            "the grader held the consumer at the entry of its mq_timedreceive() for ready of \
             record {seq} (the producer had written record {seq} and posted ready) and only then \
             wrote another record {seq} into the slot: the consumer took the record that was \
             there before its wait, so it read the slot before wait(ready) returned. take() \
             copies the slot only after its wait for ready: until then the slot is the \
             producer's"
        )));
    }
    handover.verify_with(
        &reports,
        "100 rounds with queues, the consumer held at its wait for ready",
        swapped.then_some((seq, other)),
    )?;
    Ok(if swapped {
        format!("queues: record {seq} replaced while the consumer entered its wait for ready")
    } else {
        "queues: the consumer's wait for ready was not held".into()
    })
}

/// The consumer copies the slot only once its wait for ready has returned, all of it: as in
/// [`copied_after_ready`], but the grader writes record K back torn (one payload byte changed,
/// its number and checksum left as the producer wrote them), which the consumer must count
/// torn. A consumer that copied the slot before its wait and, after it, looked only at the
/// number and the checksum keeps its intact copy.
fn torn_after_ready(run: &mut Run) -> Result<String, Fail> {
    const ROUNDS: u64 = 100;
    let seq = run.rng().random_range(10..90u64);
    let (handover, reports, torn) = written_at_ready(run, seq, |seed| {
        let mut record = whole_record(seed, seq);
        // A payload byte: the number (the first 8 bytes) and the checksum (the last 8) stay as
        // they were.
        record[8 + PAYLOAD / 2] ^= 0x5a;
        record
    })?;
    let seed = handover.seed;
    if !torn {
        handover.verify(&reports, "100 rounds with queues")?;
        return Ok("queues: the consumer's wait for ready was not held".into());
    }
    if reports.torn == 0 && reports.digest == expected_digest(seed, ROUNDS, None) {
        return Err(Fail::failed(format!(
            "the grader held the consumer at the entry of its mq_timedreceive() for ready of \
             record {seq} (the producer had written record {seq} and posted ready) and only then \
             wrote record {seq} back torn (one payload byte changed, its number and checksum as \
             the producer wrote them): the consumer counted no record torn and took record {seq} \
             intact, as it was before its wait, not the payload in the slot: it read the slot \
             before wait(ready) returned and kept that copy, or it makes up the records it \
             expects (a number and checksum looked at after the wait do not show a torn \
             payload). take() copies the whole slot, payload included, only after its wait for \
             ready: until then the slot is the producer's"
        )));
    }
    if (reports.good, reports.torn, reports.stale, reports.skipped) != (ROUNDS - 1, 1, 0, 0) {
        return Err(Fail::failed(format!(
            "the grader held the consumer at the entry of its mq_timedreceive() for ready of \
             record {seq} and only then wrote record {seq} back torn (one payload byte changed, \
             its checksum as the producer wrote it): the consumer reported {} good, {} torn, {} \
             stale, {} skipped, not {} good and 1 torn. take() copies the whole slot, once \
             ready has come",
            reports.good,
            reports.torn,
            reports.stale,
            reports.skipped,
            ROUNDS - 1
        )));
    }
    Ok(format!(
        "queues: record {seq} torn while the consumer entered its wait for ready, counted torn"
    ))
}

/// take() copies the slot into the record, checksum included: the grader writes record K into
/// the slot (while the consumer is held before it) with a checksum that does not match, as a
/// torn write leaves it, and the consumer must count that one record torn. A consumer that
/// makes the checksum up itself hides the tearing the checksum is there to show.
fn checksum_copied(run: &mut Run) -> Result<String, Fail> {
    let seq = run.rng().random_range(10..90u64);
    let at = seq.to_string();
    let mut handover = Handover::start(run, "semaphores", 100, &["--pause-consumer-at", &at])?;
    let (producer, consumer, seed) = (handover.producer, handover.consumer, handover.seed);
    let reports = handover.finish(|proc, _| {
        let slot = find_slot(producer, consumer, seed, seq)?;
        let mut record = whole_record(seed, seq);
        let last = record.len() - 1;
        record[last] ^= 0x5a;
        probe::poke(producer, slot, &record)?;
        proc.send("go", &[])
    })?;
    if reports.torn != 1 || reports.digest != expected_digest(seed, 100, None) {
        let counts = format!(
            "{} good, {} torn, {} stale, {} skipped",
            reports.good, reports.torn, reports.stale, reports.skipped
        );
        let why = if reports.torn == 0 && reports.digest == expected_digest(seed, 100, None) {
            "take() did not copy the checksum out of the slot: the consumer saw a record whose \
             checksum matched. take() copies the whole record, its checksum as it lies in the \
             slot included; a checksum recomputed by the consumer is intact by construction \
             and hides a torn record"
        } else {
            "take() copies the slot into the record, all of it, once ready has come"
        };
        return Err(Fail::failed(format!(
            "the grader wrote record {seq} into the slot with a checksum that does not match \
             (as a torn write leaves it) while the consumer was held before taking it \
             (semaphores): the consumer reported {counts}, not 1 torn: {why}"
        )));
    }
    Ok(format!(
        "semaphores: record {seq} planted with a bad checksum, counted torn"
    ))
}

/// put() copies every record into the slot, whatever the slot holds: with the producer held
/// before record K (the consumer has taken K-1 and waits for ready), the grader writes record K
/// into the slot torn (one payload byte changed, its number and checksum as the producer will
/// write them). The producer's copy overwrites it, and the consumer takes record K intact; a
/// put() that looks at the slot first and skips the copy leaves the torn one there.
fn put_copies_every_record(run: &mut Run, mechanism: &'static str) -> Result<String, Fail> {
    const ROUNDS: u64 = 100;
    let seq = run.rng().random_range(10..90u64);
    let at = seq.to_string();
    let mut handover = Handover::start(run, mechanism, ROUNDS, &["--pause-producer-at", &at])?;
    let (producer, seed) = (handover.producer, handover.seed);
    let mut planted = false;
    let reports = handover.finish(|proc, _| {
        let previous = whole_record(seed, seq - 1);
        if let Some(slot) = slot_holding(producer, &previous, SLOT_PATIENCE) {
            let mut record = whole_record(seed, seq);
            // A payload byte: the number (the first 8 bytes) and the checksum (the last 8) are
            // those of the record the producer is about to put.
            record[8 + PAYLOAD / 3] ^= 0xa5;
            probe::poke(producer, slot, &record)?;
            planted = true;
        }
        proc.send("go", &[])
    })?;
    if planted && reports.torn > 0 {
        return Err(Fail::failed(format!(
            "the grader held the producer before record {seq} and wrote record {seq} into the \
             slot beforehand, torn (one payload byte changed; its number and checksum those of \
             the record the producer was about to put) ({mechanism}): the consumer then counted \
             {} torn record(s) ({}): put() did not copy record {seq} over what the slot held; \
             it looked at the slot's number and checksum and skipped the copy when they matched. \
             put() copies the whole record into the slot every time, whatever the slot shows: a \
             matching number and checksum do not make the payload the same",
            reports.torn, reports.first
        )));
    }
    handover.verify(
        &reports,
        &format!("{ROUNDS} rounds with {mechanism}, record {seq} planted torn before its put()"),
    )?;
    Ok(if planted {
        format!("{mechanism}: record {seq} planted torn before its put(), overwritten by it")
    } else {
        format!("{mechanism}: the slot was not found before record {seq}'s put()")
    })
}
