//! The receiver reads each chunk's header once and acts on the copy it checked. The grader
//! plays the sender of a four-chunk message and watches the receiver's loads of the two slots'
//! `len` words (hardware watchpoints): right after the first load of a chunk's `len`, the
//! grader changes that word in the slot (its lowest byte, already read, so that even a copy
//! made byte by byte has the checked value). A receiver that acts on its copy delivers the
//! message exactly; one that takes `len` from the slot again writes out and counts the changed
//! length, a length nobody checked. Chunk 1 is shorter than the capacity though not the last:
//! a receiver that works the length out itself instead of reading it delivers other bytes.

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use rand::RngExt;

use super::data::{pattern_bytes, pattern_hash};
use super::headers::{ready_on_grader_segment, spawn_one_message_receiver};
use super::layout::{CHUNK_HEADER, Header, MIN_SEGMENT, Mapped, SEGMENT_HEADER, SLOTS, Sem};
use super::observe::{dev_shm, segment_mappings};
use super::transfer::failure;
use crate::engine::tracer::{Field, Tracer, Watched};
use crate::engine::{Fail, Run};

/// The segment's size: the watched offsets below are its slots'.
const SIZE: usize = MIN_SEGMENT;
/// A slot's size in that segment (`slot_size(SIZE)`).
const SLOT: usize = ((SIZE - SEGMENT_HEADER as usize) / SLOTS as usize) & !7;
/// Where `len` lies in a chunk header.
const LEN_AT: usize = 16;
/// The `len` words of slots 0 and 1 (loads and stores).
static LEN_WORDS: [Field; 2] = [
    Field {
        offset: SEGMENT_HEADER as usize + LEN_AT,
        len: 8,
        loads: true,
    },
    Field {
        offset: SEGMENT_HEADER as usize + SLOT + LEN_AT,
        len: 8,
        loads: true,
    },
];
/// Chunks in the message: both slots, twice.
const CHUNKS: usize = 4;

pub fn header_read_once(run: &mut Run) -> Result<String, Fail> {
    const { assert!(CHUNK_HEADER as usize > LEN_AT + 8) };
    let name = run.ipc_name("header-read-once");
    let planted = Mapped::create(run, &name, SIZE, true)?;
    let inode = std::fs::metadata(dev_shm(&name))?.ino();
    let c = planted.capacity();
    // Chunk 1 is short though not the last, as the protocol allows: only its header's len says
    // how much of the slot it fills.
    let lens: Vec<u64> = (0..CHUNKS as u64)
        .map(|k| match k {
            1 => run.rng().random_range(9..c),
            _ if k + 1 < CHUNKS as u64 => c,
            _ => run.rng().random_range(9..=c),
        })
        .collect();
    let total: u64 = lens.iter().sum();
    let seed: u64 = run.rng().random();
    let bytes = pattern_bytes(seed, 0, total as usize);
    let put = |k: usize| {
        let from = lens[..k].iter().sum::<u64>() as usize;
        let header = Header {
            seq: k as u64,
            total,
            len: lens[k],
            end: u64::from(k + 1 == CHUNKS),
        };
        planted.put(k as u64 % 2, header, &bytes[from..from + lens[k] as usize]);
    };
    let mut receiver = spawn_one_message_receiver(run, &name, 3000)?;
    ready_on_grader_segment(&mut receiver)?;
    let pid = receiver.pid.as_raw();
    let base = segment_mappings(pid, inode)?
        .iter()
        .find(|(_, _, offset)| *offset == 0)
        .map(|(start, _, _)| *start);
    let tracer = match base {
        Some(base) => Tracer::watch_at(pid, base, &LEN_WORDS)?,
        None => None,
    };
    let Some(mut tracer) = tracer else {
        receiver.kill_tree();
        return Ok(
            "the receiver's loads could not be watched here (no ptrace, or no mapping \
                   of the segment at its start)"
                .into(),
        );
    };
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        match tracer.next_watched(until)? {
            Some(Watched::Armed) => break,
            Some(Watched::Hit) => tracer.go_on(),
            None if Instant::now() < until => {}
            _ => {
                receiver.kill_tree();
                return Ok("the receiver's loads could not be watched here".into());
            }
        }
    }
    // Chunks 0 and 1 fill both slots; 2 and 3 follow as the receiver frees them. As a sender
    // does, each after a wait on `empty`.
    for k in 0..2 {
        if !planted.wait(Sem::Empty, Duration::ZERO) {
            return Err(Fail::Grader(
                "the grader's new segment has no free slot".into(),
            ));
        }
        put(k);
    }
    let mut in_slot = [0usize, 1];
    let mut next = 2;
    let mut loads = [0u32; CHUNKS];
    let mut changed = [None::<u64>; CHUNKS];
    receiver.send("go", &[])?;
    let until = Instant::now() + Duration::from_secs(10);
    let answer = loop {
        if next < CHUNKS && planted.wait(Sem::Empty, Duration::ZERO) {
            put(next);
            in_slot[next % 2] = next;
            next += 1;
        }
        // Anything but a hit: gone (its end is read below), or nothing yet.
        if let Some(Watched::Hit) =
            tracer.next_watched(Instant::now() + Duration::from_millis(2))?
        {
            let slot = tracer.last_hit().min(1);
            let k = in_slot[slot];
            loads[k] += 1;
            if loads[k] == 1 {
                let low = lens[k] as u8;
                let poked = if low >= 8 { low - 8 } else { low + 8 };
                planted.set_header_byte(slot as u64, LEN_AT, poked);
                changed[k] = Some((lens[k] & !0xff) | u64::from(poked));
            }
            tracer.go_on();
        }
        match receiver.recv_before(Instant::now()) {
            Ok(Some(message)) => break Ok(message),
            Ok(None) => {}
            Err(fail) => break Err(fail),
        }
        if Instant::now() >= until {
            break Err(Fail::TimedOut(format!(
                "timed out: the receiver of a {total}-byte message in {CHUNKS} chunks, the \
                 grader playing its sender, neither reported it nor failed.{}",
                receiver.diagnose()
            )));
        }
    };
    tracer.release();
    let reread: Vec<String> = (0..CHUNKS)
        .filter(|&k| loads[k] > 1)
        .map(|k| {
            format!(
                "chunk {k}'s len {} times ({} at its first load, {} in the slot after it)",
                loads[k],
                lens[k],
                changed[k].unwrap_or(lens[k])
            )
        })
        .collect();
    let want = pattern_hash(seed, 0, total);
    let outcome = match &answer {
        Ok(message)
            if message.kind == "message"
                && message.get("len") == Some(total.to_string().as_str())
                && message.get("hash") == Some(want.as_str()) =>
        {
            None
        }
        Ok(message) => Some(format!("it said `{}` ({})", message.kind, failure(message))),
        Err(Fail::Crashed(text)) => Some(format!("it crashed: {text}")),
        Err(fail) => return Err(Fail::Grader(format!("{fail:?}"))),
    };
    let Some(outcome) = outcome else {
        receiver.send("exit", &[])?;
        receiver.wait()?;
        let watched = loads.iter().filter(|&&n| n > 0).count();
        return Ok(format!(
            "with each chunk's len changed in the slot right after the receiver's first load of \
             it ({watched} of {CHUNKS} chunks seen loaded), the receiver delivered the \
             {total}-byte message exactly: it acts on the header it checked"
        ));
    };
    receiver.kill_tree();
    let setting = format!(
        "the grader played the sender of a {total}-byte message in {CHUNKS} chunks (segment of \
         {SIZE} bytes, capacity {c}) and, watching the receiver's loads of each slot's len word \
         (hardware watchpoints), changed that word in the slot right after the receiver's first \
         load of it for each chunk"
    );
    if reread.is_empty() {
        return Err(Fail::failed(format!(
            "{setting}; the receiver loaded each len at most once, yet did not deliver the \
             message exactly: {outcome}. Chunk 1 was {} bytes, short of the capacity though not \
             the last, as the protocol allows: either the receiver writes out or counts another \
             length than the len it checked (the capacity, or what is left of the message), \
             which delivers bytes the chunk never carried, or it refuses a short chunk before \
             the last. Write out and count the len of the header it checked, whatever it is",
            lens[1]
        )));
    }
    Err(Fail::failed(format!(
        "{setting}: the receiver loaded {}, and then {outcome}. It reads the \
         chunk's len from the slot again after checking its copy of the header (a double \
         fetch): the length it slices and counts is not the one it checked, so a sender that \
         changes the slot in between gets an unchecked length through. Read each header once, \
         check that copy, and take len (and end) from it alone",
        reread.join("; ")
    )))
}
