//! The grader plays a broken sender, one broken chunk header at a time, and wants the
//! receiver to refuse each as a protocol error after writing out only the good chunks.

use std::time::Duration;

use rand::RngExt;

use super::headers::{ready_on_grader_segment, spawn_one_message_receiver};
use super::layout::{Header, MIN_SEGMENT, Mapped, Sem, expected_capacity, expected_slot_size};
use crate::engine::{Fail, Run};

/// What a receiver did with one broken chunk.
enum Outcome {
    /// `failed`, with its kind and the bytes its writer got.
    Failed { kind: String, received: Option<u64> },
    /// It reported the message, of this length.
    Delivered { len: String },
    /// It crashed (what the grader saw of it).
    Crashed(String),
}

/// One broken stream the grader plays.
struct Case {
    /// What is wrong with the chunk: "a chunk that ...".
    what: String,
    chunks: Vec<Header>,
    /// The bytes before the broken chunk.
    good: u64,
    /// What the receiver must compare, if it took the chunk for a good one.
    advice: &'static str,
    /// The stream is broken only by what does not come: a chunk completes the total with
    /// end = 0 and nothing follows. The receiver must not report the message: it waits for the
    /// end (`timeout`) or refuses the chunk (`protocol`).
    no_end: bool,
}

fn header(seq: u64, total: u64, len: u64, end: u64) -> Header {
    Header {
        seq,
        total,
        len,
        end,
    }
}

/// How to bound a len near 2^64 without overflowing.
const OVERFLOW_ADVICE: &str = "compare len with what is left of the total as total - received, \
                               which cannot overflow: received + len wraps around (or panics, \
                               with overflow checks) for a len near 2^64";

/// A chunk 0 longer than its message: the bound holds from the first chunk on.
const FIRST_CHUNK_ADVICE: &str = "compare len with what is left of the total (total - \
                                  received) for every chunk, chunk 0 too, where what is left \
                                  is the whole total: a chunk 0 longer than its message is \
                                  broken at once, whatever it says of the end";

/// A message of 0 bytes is no exception to the checks.
const EMPTY_MESSAGE_ADVICE: &str = "a message of 0 bytes is checked like any other: its chunk \
                                    must carry no more than what is left (0 bytes) and only a \
                                    chunk with end = 1 ends it; a shortcut that ends the message \
                                    as soon as chunk 0 says total = 0 skips the len and end \
                                    checks and takes a broken chunk for an empty message";

pub fn broken_chunks(run: &mut Run) -> Result<String, Fail> {
    // (S - 64) / 2 is 1 to 7 bytes past a multiple of 8, so that the slot's rounding down
    // matters: a capacity worked out from the unrounded half is that many bytes too large.
    let unrounded_by = run.rng().random_range(1..=7u64);
    let size = MIN_SEGMENT + 2 * unrounded_by as usize;
    let c = expected_capacity(size) as u64;
    let slot = expected_slot_size(size) as u64;
    // A message of one full chunk and a half one.
    let total = c + c / 2;
    let rest = total - c;
    let long = 4 * c;
    // A message shorter than a chunk, for chunk 0 longer than the whole of it.
    let short = run.rng().random_range(1..c / 2);
    let cases = [
        Case {
            what: "is numbered 1 where chunk 0 is due".into(),
            chunks: vec![header(1, total, c, 0)],
            good: 0,
            advice: "compare each chunk's seq with the number of the chunk due (0, 1, 2, ... in \
                     every message)",
            no_end: false,
        },
        Case {
            what: "is numbered 2 where chunk 1 is due".into(),
            chunks: vec![header(0, total, c, 0), header(2, total, rest, 1)],
            good: c,
            advice: "compare each chunk's seq with the number of the chunk due (0, 1, 2, ... in \
                     every message)",
            no_end: false,
        },
        Case {
            what: "says the message is 8 bytes longer than its chunk 0 said".into(),
            chunks: vec![header(0, total, c, 0), header(1, total + 8, rest + 8, 1)],
            good: c,
            advice: "keep the total of chunk 0 and compare every later chunk's total with it; \
                     a total read afresh from each chunk follows the broken one",
            no_end: false,
        },
        Case {
            what: format!(
                "says the message is 8 bytes shorter than its chunk 0 said, with end = 1 and \
                 len {rest}, exactly what chunk 0's total leaves"
            ),
            chunks: vec![header(0, total, c, 0), header(1, total - 8, rest, 1)],
            good: c,
            advice: "keep the total of chunk 0 and compare every later chunk's total with it, \
                     the last chunk's too: a len that completes the message does not make \
                     another total right",
            no_end: false,
        },
        Case {
            what: format!(
                "carries {} bytes, one more than the chunk capacity {c}",
                c + 1
            ),
            chunks: vec![header(0, long, c + 1, 0)],
            good: 0,
            advice: "compare len with the chunk capacity (capacity(): the slot minus its \
                     32-byte chunk header)",
            no_end: false,
        },
        Case {
            what: format!(
                "carries {slot} bytes, as many as the whole slot, its 32-byte header included \
                 (the capacity is {c})"
            ),
            chunks: vec![header(0, long, slot, 0)],
            good: 0,
            advice: "compare len with the chunk capacity (capacity(): the slot minus its \
                     32-byte chunk header)",
            no_end: false,
        },
        Case {
            what: format!("carries {} bytes, more than the whole slot", slot + 1),
            chunks: vec![header(0, long, slot + 1, 0)],
            good: 0,
            advice: "compare len with the chunk capacity before using it",
            no_end: false,
        },
        // One past the capacity worked out from the unrounded half of the segment.
        Case {
            what: format!(
                "carries {} bytes, {} more than the chunk capacity {c} (one more than \
                 (S - 64) / 2 - 32 for S = {size}, the slot not rounded down to a multiple \
                 of 8)",
                c + unrounded_by + 1,
                unrounded_by + 1
            ),
            chunks: vec![header(0, long, c + unrounded_by + 1, 0)],
            good: 0,
            advice: "compare len with the chunk capacity (capacity(): the slot, rounded down to \
                     a multiple of 8, minus its 32-byte chunk header)",
            no_end: false,
        },
        // The last chunk too: what is left of the total does not bound it by the capacity.
        Case {
            what: format!(
                "is the last (end = 1) of a {}-byte message and carries all {} bytes, one more \
                 than the chunk capacity {c}",
                c + 1,
                c + 1
            ),
            chunks: vec![header(0, c + 1, c + 1, 1)],
            good: 0,
            advice: "compare len with the chunk capacity for every chunk, the last (end = 1) \
                     too: what is left of the total does not bound it by the slot",
            no_end: false,
        },
        Case {
            what: "carries 1 byte more than what is left of the message".into(),
            chunks: vec![header(0, total, c, 0), header(1, total, rest + 1, 1)],
            good: c,
            advice: "compare len with what is left of the total",
            no_end: false,
        },
        // Behind the chunk due: a chunk handed over again.
        Case {
            what: "is numbered 0 again where chunk 1 is due (chunk 0 handed over twice)".into(),
            chunks: vec![header(0, total, c, 0), header(0, total, rest, 1)],
            good: c,
            advice: "compare each chunk's seq with the number of the chunk due, for equality: \
                     a chunk numbered behind it (a repeat) is as wrong as one ahead",
            no_end: false,
        },
        Case {
            what: format!("marks end = 1 after {c} of the message's {total} bytes"),
            chunks: vec![header(0, total, c, 1)],
            good: 0,
            advice: "compare the bytes received with the total when a chunk says end = 1",
            no_end: false,
        },
        // A chunk longer than what is left, with end = 0 (within the capacity): what is left
        // bounds every chunk, not only the last.
        Case {
            what: format!(
                "carries {} bytes with end = 0 where only {rest} of the message's {total} bytes \
                 are left (one more than what is left, within the capacity {c})",
                rest + 1
            ),
            chunks: vec![header(0, total, c, 0), header(1, total, rest + 1, 0)],
            good: c,
            advice: "compare len with what is left of the total for every chunk, end = 0 too: \
                     a chunk longer than the rest is broken at once, whatever it says of the end",
            no_end: false,
        },
        // A len at the edge of u64 after good bytes: received + len wraps (or panics, with
        // overflow checks), while total - received cannot.
        Case {
            what: format!("carries u64::MAX bytes after chunk 0's {c}"),
            chunks: vec![header(0, total, c, 0), header(1, total, u64::MAX, 1)],
            good: c,
            advice: OVERFLOW_ADVICE,
            no_end: false,
        },
        Case {
            what: format!(
                "carries 2^64 - {c} bytes after chunk 0's {c} (the received bytes plus that \
                 len wrap around to 0)"
            ),
            chunks: vec![
                header(0, total, c, 0),
                header(1, total, c.wrapping_neg(), 0),
            ],
            good: c,
            advice: OVERFLOW_ADVICE,
            no_end: false,
        },
        // All of the total with end = 0, then nothing: only end = 1 ends a message.
        Case {
            what: format!(
                "carries all {c} bytes of a {c}-byte message with end = 0, and nothing came \
                 after it"
            ),
            chunks: vec![header(0, c, c, 0)],
            good: c,
            advice: "",
            no_end: true,
        },
        // Chunk 0 longer than the whole message, within the capacity: nothing has been received
        // yet, so what is left is the total, and it bounds chunk 0 like any other (end = 0 and
        // end = 1; one past the total, and a full chunk).
        Case {
            what: format!(
                "is chunk 0 of a {short}-byte message and carries {} bytes with end = 0 (one \
                 more than the whole message, within the capacity {c})",
                short + 1
            ),
            chunks: vec![header(0, short, short + 1, 0)],
            good: 0,
            advice: FIRST_CHUNK_ADVICE,
            no_end: false,
        },
        Case {
            what: format!(
                "is chunk 0 of a {short}-byte message and carries a full chunk ({c} bytes) \
                 with end = 0"
            ),
            chunks: vec![header(0, short, c, 0)],
            good: 0,
            advice: FIRST_CHUNK_ADVICE,
            no_end: false,
        },
        Case {
            what: format!(
                "is chunk 0 of a {short}-byte message and carries {} bytes with end = 1 (one \
                 more than the whole message)",
                short + 1
            ),
            chunks: vec![header(0, short, short + 1, 1)],
            good: 0,
            advice: FIRST_CHUNK_ADVICE,
            no_end: false,
        },
        // A message of 0 bytes: its one chunk is checked like any other (len within what is
        // left, 0; only end = 1 ends it), past it too.
        Case {
            what: "is chunk 0 of a 0-byte message and carries 1 byte with end = 1".into(),
            chunks: vec![header(0, 0, 1, 1)],
            good: 0,
            advice: EMPTY_MESSAGE_ADVICE,
            no_end: false,
        },
        Case {
            what: format!(
                "is chunk 0 of a 0-byte message and carries a full chunk ({c} bytes) with end = 0"
            ),
            chunks: vec![header(0, 0, c, 0)],
            good: 0,
            advice: EMPTY_MESSAGE_ADVICE,
            no_end: false,
        },
        Case {
            what: "is chunk 1 of a 0-byte message, carrying 1 byte with end = 1, after a chunk 0 \
                   of 0 bytes with end = 0"
                .into(),
            chunks: vec![header(0, 0, 0, 0), header(1, 0, 1, 1)],
            good: 0,
            advice: EMPTY_MESSAGE_ADVICE,
            no_end: false,
        },
    ];
    // The same faults deep inside a longer message, at a chunk drawn from the seed past the
    // first two (both slots) and before the last: every header is checked, not the first few.
    let n = run.rng().random_range(5..=8u64);
    let deep = run.rng().random_range(2..=n - 2);
    let long_total = (n - 1) * c + c / 2;
    let good_before = |broken: Header| {
        let mut chunks: Vec<Header> = (0..deep).map(|i| header(i, long_total, c, 0)).collect();
        chunks.push(broken);
        chunks
    };
    let deep_cases = [
        Case {
            what: format!(
                "is numbered {} where chunk {deep} of a {n}-chunk message is due (chunks 0 to \
                 {} were good)",
                deep + 1,
                deep - 1
            ),
            chunks: good_before(header(deep + 1, long_total, c, 0)),
            good: deep * c,
            advice: "compare every chunk's seq with the number of the chunk due, not only the \
                     first chunks'",
            no_end: false,
        },
        Case {
            what: format!(
                "is numbered {} again where chunk {deep} of a {n}-chunk message is due (chunk \
                 {} handed over twice)",
                deep - 1,
                deep - 1
            ),
            chunks: good_before(header(deep - 1, long_total, c, 0)),
            good: deep * c,
            advice: "compare every chunk's seq with the number of the chunk due, for equality, \
                     not only the first chunks'",
            no_end: false,
        },
        Case {
            what: format!(
                "says, at chunk {deep} of a {n}-chunk message, that the message is 8 bytes \
                 longer than its chunk 0 said"
            ),
            chunks: good_before(header(deep, long_total + 8, c, 0)),
            good: deep * c,
            advice: "keep the total of chunk 0 and compare every later chunk's total with it, \
                     not only the first chunks'",
            no_end: false,
        },
    ];
    let cases: Vec<Case> = cases.into_iter().chain(deep_cases).collect();
    let mut outcomes = Vec::new();
    for (index, case) in cases.iter().enumerate() {
        outcomes.push(play(run, size, index, case)?);
    }
    // A bound off by the chunk header shows as the slot-sized chunk taken, the longer refused.
    let refused = |i: usize| {
        matches!(&outcomes[i], Outcome::Failed { kind, received } if kind == "protocol"
            && *received == Some(cases[i].good))
    };
    if !refused(4) && refused(5) && refused(7) {
        return Err(Fail::failed(format!(
            "the grader sent a chunk that {}, and the receiver took it for a good one, while it \
             refused one that {}: on this segment of {size} bytes its bound lies between, as \
             (S - 64) / 2 - 32 = {} does. The slot is (S - 64) / 2 rounded down to a multiple \
             of 8 ({slot}), the capacity that minus its 32-byte header ({c}): use capacity(), \
             not a size of your own. A chunk longer than the capacity is a protocol error: \
             TransferError::Protocol (kind=protocol)",
            cases[4].what,
            cases[7].what,
            c + unrounded_by
        )));
    }
    if !refused(5) && refused(6) {
        return Err(Fail::failed(format!(
            "the grader sent a chunk that {}, and the receiver took it for a good one, while it \
             refused one of {} bytes: it compares len with the slot size ({slot}), header \
             included, not with the chunk capacity ({c} = the slot minus its 32-byte header). \
             A chunk longer than the capacity is a protocol error: TransferError::Protocol \
             (kind=protocol)",
            cases[5].what,
            slot + 1
        )));
    }
    // The same faults refused at chunk 1 but taken deep inside the message: the headers are
    // checked for the first chunks only.
    let deep_first = cases.len() - 3;
    if refused(1)
        && refused(2)
        && refused(10)
        && let Some(taken) = (deep_first..cases.len()).find(|&i| !refused(i))
    {
        return Err(Fail::failed(format!(
            "the grader sent a chunk that {}, and the receiver did not refuse it as a \
             protocol error after only the {} good bytes before it ({}), though it refused \
             the same faults at chunk 1 (numbered 2, numbered 0 again, another total): it \
             checks seq and total for the first chunks of a message only. Check every \
             chunk's header, however many good ones came before: \
             TransferError::Protocol (kind=protocol)",
            cases[taken].what,
            cases[taken].good,
            outcomes[taken].describe()
        )));
    }
    for (case, outcome) in cases.iter().zip(&outcomes) {
        judge_case(case, outcome)?;
    }
    Ok(
        "chunks out of sequence (ahead and behind), a changed total (longer, and shorter on a last chunk of the right length), \
         chunks of capacity + 1 (a middle one and a last one), one past the capacity of a slot not \
         rounded down, of a whole slot and longer, one \
         longer than what is left, a chunk 0 longer than its whole message (end = 0 and 1), \
         chunks of a 0-byte message carrying bytes (chunk 0 with end = 1 and 0, chunk 1), \
         lengths near 2^64 and an early end were each reported as \
         kind=protocol, after only the good chunks had been written out; a message whose bytes \
         all came with end = 0 was not reported"
            .into(),
    )
}

/// Plays case `index` on a segment of its own, for one receiver; what the receiver did.
fn play(run: &mut Run, size: usize, index: usize, case: &Case) -> Result<Outcome, Fail> {
    let name = run.ipc_name(&format!("broken-{index}"));
    let planted = Mapped::create(run, &name, size, true)?;
    let capacity = planted.capacity();
    // As a sender does: wait on `empty` before each chunk; the first two (both slots) before
    // the receiver starts, the rest as it frees the slots.
    let put = |k: usize, run: &mut Run| {
        let header = case.chunks[k];
        let data = run.random_bytes(header.len.min(capacity) as usize);
        let free = planted.wait(Sem::Empty, Duration::from_secs(2));
        if free {
            planted.put(k as u64 % 2, header, &data);
        }
        free
    };
    let first = case.chunks.len().min(2);
    for k in 0..first {
        put(k, run);
    }
    // The grader puts the chunks past the first two as the receiver frees the slots: there
    // the receiver waits on the grader, which a loaded machine may keep from the CPU for a
    // while, so those cases give it more time (a receiver that takes the broken chunk then
    // times out later, only in a failing run).
    let timeout_ms = if case.chunks.len() > 2 { 1500 } else { 500 };
    let mut receiver = spawn_one_message_receiver(run, &name, timeout_ms)?;
    ready_on_grader_segment(&mut receiver)?;
    receiver.send("go", &[])?;
    for k in first..case.chunks.len() {
        if !put(k, run) {
            break;
        }
    }
    let answer = match receiver.recv_any() {
        Ok(answer) => answer,
        Err(Fail::Crashed(text)) => return Ok(Outcome::Crashed(text)),
        Err(fail) => return Err(fail),
    };
    let outcome = if answer.kind == "failed" {
        Outcome::Failed {
            kind: answer.get("kind").unwrap_or("none").into(),
            received: answer.get("received").and_then(|r| r.parse().ok()),
        }
    } else {
        Outcome::Delivered {
            len: format!(
                "`{}` (len={})",
                answer.kind,
                answer.get("len").unwrap_or("?")
            ),
        }
    };
    // A receiver that took the message waits for `exit`; one that failed has exited.
    receiver.send("exit", &[])?;
    receiver.wait()?;
    Ok(outcome)
}

impl Outcome {
    fn describe(&self) -> String {
        match self {
            Outcome::Failed { kind, received } => format!(
                "it said `failed` (kind={kind}) after its writer got {} bytes",
                received.map_or("?".into(), |r| r.to_string())
            ),
            Outcome::Delivered { len } => format!("it said {len}"),
            Outcome::Crashed(_) => "it crashed".into(),
        }
    }
}

/// Fails unless the receiver refused `case` as a protocol error, after only the good bytes.
fn judge_case(case: &Case, outcome: &Outcome) -> Result<(), Fail> {
    let broken = format!("the grader sent a chunk that {}", case.what);
    let crashed = |text: &str| {
        Err(Fail::Crashed(format!(
            "{broken}, and the receiver crashed: {text}. Check every header: {}; such a chunk \
             is a protocol error: TransferError::Protocol (kind=protocol)",
            case.advice
        )))
    };
    if case.no_end {
        return match outcome {
            Outcome::Crashed(text) => crashed(text),
            Outcome::Delivered { len } => Err(Fail::failed(format!(
                "{broken}, and the receiver said {len}: it ends a message once `total` bytes \
                 have arrived, not at the chunk with end = 1. Stop only after the chunk with \
                 end = 1 (a sender may still send an empty end chunk; without one, the message \
                 has not ended)"
            ))),
            Outcome::Failed { kind, .. } if kind == "timeout" || kind == "protocol" => Ok(()),
            Outcome::Failed { kind, .. } => Err(Fail::failed(format!(
                "{broken}, and the receiver said `failed` (kind={kind}): the message never \
                 ended, so the receiver waits for its end (kind=timeout once nothing comes) or \
                 refuses the chunk (kind=protocol)"
            ))),
        };
    }
    match outcome {
        Outcome::Crashed(text) => crashed(text),
        Outcome::Delivered { len } => Err(Fail::failed(format!(
            "{broken}, and the receiver said {len}: it took the broken chunk for a good one. \
             Check every header: {}; fail with TransferError::Protocol",
            case.advice
        ))),
        Outcome::Failed { kind, .. } if kind == "timeout" => Err(Fail::failed(format!(
            "{broken}, and the receiver said `failed` (kind=timeout): it took the broken chunk \
             for a good one and waited for more. Check every header: {}; such a chunk is a \
             protocol error: TransferError::Protocol (kind=protocol)",
            case.advice
        ))),
        Outcome::Failed { kind, .. } if kind != "protocol" => Err(Fail::failed(format!(
            "{broken}, and the receiver said `failed` (kind={kind}): a broken chunk is a \
             protocol error, TransferError::Protocol (kind=protocol)"
        ))),
        Outcome::Failed { received, .. } if *received != Some(case.good) => {
            Err(Fail::failed(format!(
                "{broken}: the receiver reported the protocol error, but its writer got {} \
                 bytes where only the {} before the broken chunk were good. Check each chunk's \
                 header before writing its data out",
                received.map_or("?".into(), |r| r.to_string()),
                case.good
            )))
        }
        Outcome::Failed { .. } => Ok(()),
    }
}
