//! The check that the magic is written last: watched as it writes, the publisher stores it after
//! the rest of the record; killed halfway through its payload, it leaves no magic.

use std::os::unix::process::ExitStatusExt;

use rand::RngExt;

use crate::engine::{Fail, Run};

use super::protocol::{
    as_expected, expect, first_difference, fresh_name, payload_file, spawn_publisher, with_context,
};
use super::segments::{RemoveKeyOnDrop, rmid, segment, segment_bytes};
use super::{HEADER_LEN, MAGIC};
use crate::engine::tracer::{Field, Tracer, Watched};

pub fn killed_mid_write(run: &mut Run) -> Result<String, Fail> {
    let watched = magic_stored_last(run)?;
    let cut = killed_by_a_cut(run)?;
    Ok(match watched {
        Some(watched) => format!("{watched}; {cut}"),
        None => cut,
    })
}

/// Two words of the segment past the end of the record (the payload is shorter than
/// [`TAIL_WORDS`]`[0] - 16` bytes, the segment longer than [`TAIL_WORDS`]`[1] + 8`): a fresh
/// segment holds zeros there, and nothing may be stored there once the magic is.
const TAIL_WORDS: [usize; 2] = [12288, 16384];

/// The magic's 4 bytes, the two words past the record, and the word that holds the first byte
/// after a payload of `len` bytes (where a terminator or a clearing of the rest would go),
/// watched for stores. Leaked: a tracer watches fields that live as long as it may.
fn magic_stores(len: usize) -> &'static [Field] {
    let end = (HEADER_LEN + len) / 8 * 8;
    Box::leak(Box::new([
        Field {
            offset: 0,
            len: 4,
            loads: false,
        },
        Field {
            offset: TAIL_WORDS[0],
            len: 8,
            loads: false,
        },
        Field {
            offset: TAIL_WORDS[1],
            len: 8,
            loads: false,
        },
        Field {
            offset: end,
            len: 8,
            loads: false,
        },
    ]))
}

/// Watches the publisher's stores to the magic: when it stores `MAGIC`, the payload, the length
/// and the sequence must all be in the segment already. `None` where the grader may not watch.
fn magic_stored_last(run: &mut Run) -> Result<Option<String>, Fail> {
    let name = fresh_name(run)?;
    let len = run.rng().random_range(2000..TAIL_WORDS[0] - HEADER_LEN);
    let size = (TAIL_WORDS[1] + 8 + run.rng().random_range(0..4000usize)) as u64;
    let sequence = run.rng().random_range(2..1_000_000u32);
    let payload = run.random_bytes(len);
    let mut proc = spawn_publisher(run, &name.path, name.id, size, sequence, &payload)?;
    let _removed = RemoveKeyOnDrop(Some(name.key));
    let unwatched = "the grader may not watch the publisher's stores here (ptrace, hardware \
                     watchpoints, x86-64): the order of its stores was not seen";
    let Some(mut watch) = Tracer::watch(proc.pid.as_raw(), magic_stores(len))? else {
        run.note(unwatched);
        proc.kill_tree();
        return Ok(None);
    };
    proc.send("go", &[])?;
    let how = "the grader watched the publisher's stores to the magic's 4 bytes (a hardware \
               watchpoint, set when its shmat() returned)";
    let mut armed = false;
    // Once the magic is stored, nothing more may be: that store, at the watched words, ends it.
    let mut magic_stored = false;
    let said = loop {
        match watch.next(&mut proc, run.deadline())? {
            Watched::Armed => armed = true,
            Watched::Unavailable => {
                drop(watch);
                run.note(unwatched);
                proc.kill_tree();
                return Ok(None);
            }
            Watched::Hit if magic_stored => {
                let field = watch.last_hit();
                drop(watch);
                proc.kill_tree();
                let end = HEADER_LEN + len;
                let (wher, why) = match field {
                    0 => (
                        "the magic's 4 bytes".to_string(),
                        "the magic once more".to_string(),
                    ),
                    3 => (
                        format!(
                            "the word that holds offset {end}, the first byte after the \
                             {len}-byte payload"
                        ),
                        "a terminator after the payload, or the start of a clearing of the \
                         rest of the segment"
                            .to_string(),
                    ),
                    _ => (
                        format!(
                            "offset {}, far past the record's end (a {size}-byte segment \
                             holding a {len}-byte payload)",
                            TAIL_WORDS[field.min(2) - 1]
                        ),
                        "clearing or filling the rest of the segment".to_string(),
                    ),
                };
                return Err(Fail::failed(format!(
                    "{how}, the word after the payload and two words far past the record: after \
                     it had stored the magic, the publisher stored into its segment again, at \
                     {wher} ({why}, say): a reader that sees the magic takes the record for \
                     complete while its publisher is still writing the segment; store payload, \
                     length, sequence, a release fence, the magic, and nothing after it, not \
                     even a byte past the payload"
                )));
            }
            Watched::Said(message) if magic_stored => {
                drop(watch);
                as_expected(message, "publisher", "ready")
                    .map_err(with_context(&format!("with {how}")))?;
                break None;
            }
            Watched::Lost if magic_stored => {
                drop(watch);
                expect(&mut proc, "publisher", "ready")
                    .map_err(with_context(&format!("with {how}")))?;
                break None;
            }
            Watched::Hit => {
                let Some(found) = segment(name.key) else {
                    watch.go_on();
                    continue;
                };
                let bytes = segment_bytes(found.id, (found.size as usize).min(size as usize))?;
                if watch.last_hit() == 0
                    && let Some(part) = part_of_magic(&bytes)
                {
                    drop(watch);
                    return Err(Fail::failed(format!(
                        "{how}: after one of its stores to it, the magic's word (0 in a new \
                         segment) held {part:#010x}, a part of MAGIC ({MAGIC:#010x}) with the \
                         rest still 0: the publisher stores the magic in pieces, narrower than \
                         its u32; store each header field whole, at its width (the magic and \
                         the sequence one u32 store each, the length one u64 store), so that \
                         no reader ever sees a field half written"
                    )));
                }
                if bytes.get(..4) != Some(&MAGIC.to_ne_bytes()[..]) {
                    // Another value (a zero, say, to mark the record invalid first): not yet.
                    watch.go_on();
                    continue;
                }
                if let Some(missing) = missing_before_magic(&bytes, sequence, &payload) {
                    drop(watch);
                    return Err(Fail::failed(format!(
                        "{how}: when it stored the magic, the segment held {missing}: the \
                         segment already holds the magic over a record that is not complete, \
                         and a publisher that dies now leaves it so, for a reader to take for \
                         a complete one; write the payload, the length and the sequence first, \
                         and the magic last, after a release fence"
                    )));
                }
                magic_stored = true;
                watch.go_on();
            }
            Watched::Said(message) => break Some(message),
            Watched::Lost => break Some(proc.recv_any()?),
        }
    };
    if let Some(message) = said {
        as_expected(message, "publisher", "ready").map_err(with_context(&format!("with {how}")))?;
        let magic = segment(name.key)
            .and_then(|s| segment_bytes(s.id, 4).ok())
            .is_some_and(|b| b == MAGIC.to_ne_bytes());
        return Err(Fail::failed(if !armed {
            format!(
                "{how}, but the publisher said `ready` without a shmat() on its main thread: \
                 attach the segment in the thread that calls publish(), as main.rs does"
            )
        } else if magic {
            format!(
                "{how}: its main thread never stored the magic, yet the segment holds it: the \
                 magic got there another way (another thread, or a system call writing into \
                 the mapping); write the record through the address shmat() returned, the \
                 magic last"
            )
        } else {
            format!(
                "{how}: the publisher said `ready` without ever storing the magic: write the \
                 record into the segment, the magic last"
            )
        }));
    }
    proc.send("go", &[])?;
    expect(&mut proc, "publisher", "done")?;
    proc.send("exit", &[])?;
    proc.wait()?;
    Ok(Some(
        "watched as it wrote, the publisher stored the magic after the whole payload, the \
         length and the sequence, and nothing in its segment after it"
            .into(),
    ))
}

/// The magic's word in `bytes` (the segment, 0 there when it was made) if it holds a part of
/// `MAGIC`: some of its bytes, the others still 0.
fn part_of_magic(bytes: &[u8]) -> Option<u32> {
    let word: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
    let magic = MAGIC.to_ne_bytes();
    let partial =
        word != magic && word != [0; 4] && word.iter().zip(magic).all(|(&b, m)| b == 0 || b == m);
    partial.then(|| u32::from_ne_bytes(word))
}

/// What of the record is not yet in `bytes` (the segment), if anything.
fn missing_before_magic(bytes: &[u8], sequence: u32, payload: &[u8]) -> Option<String> {
    let field = |at: usize, len: usize| bytes.get(at..at + len).unwrap_or_default();
    let number = |at: usize, len: usize| {
        field(at, len)
            .iter()
            .rev()
            .fold(0u64, |n, &b| n << 8 | u64::from(b))
    };
    let stored = field(HEADER_LEN, payload.len());
    let mut missing = Vec::new();
    if stored != payload {
        missing.push(format!(
            "a payload right in only its first {} of {} bytes",
            first_difference(stored, payload),
            payload.len()
        ));
    }
    if number(8, 8) != payload.len() as u64 {
        missing.push(format!(
            "a length of {} (not {})",
            number(8, 8),
            payload.len()
        ));
    }
    if number(4, 4) != u64::from(sequence) {
        missing.push(format!("a sequence of {} (not {sequence})", number(4, 4)));
    }
    (!missing.is_empty()).then(|| missing.join(", "))
}

/// Cuts the payload file short while the publisher is about to copy it: the copy dies with
/// SIGBUS, and the segment it leaves must hold no magic. The payload is megabytes long, and cut
/// in its last eighth: a copy a program splits among threads for size is underway there well
/// after the last thread starts.
fn killed_by_a_cut(run: &mut Run) -> Result<String, Fail> {
    let name = fresh_name(run)?;
    let pages = run.rng().random_range(300..600usize);
    let len = pages * 4096 + run.rng().random_range(1..4096usize);
    let size = (HEADER_LEN + len) as u64;
    let sequence = run.rng().random_range(2..1_000_000u32);
    let payload = run.random_bytes(len);
    let mut proc = spawn_publisher(run, &name.path, name.id, size, sequence, &payload)?;
    // main.rs maps the payload file: cut short now, the copy into the segment dies with
    // SIGBUS at the first page past the cut, as a crash mid-write would.
    let kept = run.rng().random_range(pages - pages / 8..pages - 2) * 4096;
    std::fs::OpenOptions::new()
        .write(true)
        .open(payload_file(run, sequence))?
        .set_len(kept as u64)?;
    proc.send("go", &[])?;
    let cut = format!(
        "with its payload file cut to {kept} of {len} bytes while it was to copy it (main.rs maps \
         the file, so the copy dies with SIGBUS there)"
    );
    let outcome = expect(&mut proc, "publisher", "ready");
    let killed_by_sigbus = proc
        .exit_status()
        .and_then(|s| s.signal())
        .is_some_and(|s| s == libc::SIGBUS);
    let left = segment(name.key);
    let _removed = RemoveOnDrop(left.map(|s| s.id));
    match outcome {
        Err(Fail::Crashed(_)) if killed_by_sigbus => {}
        Err(fail) => return Err(with_context(&cut)(fail)),
        Ok(_) => {
            return Err(Fail::failed(format!(
                "{cut}, the publisher said `ready`: it cannot have copied the whole payload into \
                 the segment; copy all of it"
            )));
        }
    }
    let Some(left) = left else {
        return Ok(format!(
            "the publisher, killed before it made its segment ({cut}), left nothing"
        ));
    };
    let bytes = segment_bytes(left.id, (left.size as usize).min(size as usize))?;
    if bytes.get(..4) == Some(&MAGIC.to_ne_bytes()[..]) {
        let in_segment = &bytes[HEADER_LEN.min(bytes.len())..];
        let missing = first_difference(in_segment, &payload);
        let copied = in_segment
            .chunks(4096)
            .zip(payload.chunks(4096))
            .filter(|(a, b)| a == b)
            .count();
        return Err(Fail::failed(format!(
            "the publisher was killed {cut}, with the payload in its segment wrong from byte \
             {missing} on ({copied} of its {} pages in place), and the segment already holds \
             the magic: a reader would take this torn record for a complete one; write the \
             whole payload, the length and the sequence first (every thread that copies a part \
             of it joined), and the magic last, after a release fence",
            len.div_ceil(4096)
        )));
    }
    Ok(format!(
        "the publisher, killed halfway through its payload, left segment {} without the magic",
        left.id
    ))
}

/// Removes the segment with this id, if any, when the check is done with it.
struct RemoveOnDrop(Option<i32>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(id) = self.0 {
            rmid(id);
        }
    }
}
