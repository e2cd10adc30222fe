//! The first handovers of a transfer, held: the receiver waits for chunk 0 and is stopped
//! there, the sender is held at its post of `full` for chunk 0 (the futex wake that wakes the
//! receiver, made while the header must already be complete), then let run alone: with no
//! chunk taken by the receiver, it may fill the two slots and no more.

use std::time::{Duration, Instant};

use super::layout::{Header, Sem, chunks_of};
use super::observe::segment_mappings;
use super::transfer::{Transfer, failure, in_chunks};
use crate::engine::tracer::{Action, Call, Match, Reached, Tracer};
use crate::engine::waiting::{self, WaitRules};
use crate::engine::{Fail, force};

/// How long the receiver may take to wait for chunk 0, and the sender to reach its post of
/// `full`, then, let run alone, to fill the ring and wait on `empty`: a program that does it
/// at all does it within milliseconds, even on a loaded machine.
const SETTLE: Duration = Duration::from_secs(5);

/// How long the receiver may take to be a waiter on `full` before the grader watches how it
/// waits (`engine::waiting`): the watch (at most 1.4 s) ends well within its timeout of 3 s,
/// so that a receiver that polls is named as such before it times out for want of chunk 0.
const WAITER_DUE: Duration = Duration::from_millis(800);

/// Starts `transfer` (messages `lens`, each at most one chunk) as [`Transfer::go`] does, with
/// its first handovers held and looked at; returns what was seen, for the check's message
/// (empty when the machine would not let the grader hold the sender, or the receiver never
/// waited). The transfer goes on from there.
pub fn go_held(transfer: &mut Transfer, lens: &[u64]) -> Result<String, Fail> {
    transfer.started = Some(Instant::now());
    transfer.receiver.send("go", &[])?;
    let due = Instant::now() + WAITER_DUE;
    let mut said = false;
    while transfer.mapped.waiters(Sem::Full) == 0 && Instant::now() < due {
        if transfer
            .receiver
            .says_before(Instant::now() + Duration::from_millis(1))
        {
            said = true;
            break;
        }
    }
    if !said && transfer.mapped.waiters(Sem::Full) == 0 {
        // Not waiting on `full` in a futex wait, with nothing to do (its sender has not begun):
        // how it waits, told from /proc (a thread that polls or spins fails here).
        let receiver = transfer.receiver.pid.as_raw();
        waiting::expect_blocked(
            &[receiver],
            &|_| "the receiver, waiting for chunk 0 (its sender not yet started)".to_string(),
            WaitRules::default(),
            "wait in sem_timedwait() on the segment's `full` semaphore, which sleeps in a futex \
             wait until the sender posts",
        )?;
    }
    if transfer.mapped.waiters(Sem::Full) == 0 {
        // No waiter on `full`: its post makes no system call to hold the sender at.
        transfer.sender.send("go", &[])?;
        return Ok(String::new());
    }
    let receiver = transfer.receiver.pid.as_raw();
    force::hold(receiver)?;
    let seen = held_handovers(transfer, lens);
    force::resume(receiver)?;
    seen
}

fn held_handovers(transfer: &mut Transfer, lens: &[u64]) -> Result<String, Fail> {
    let sender = transfer.sender.pid.as_raw();
    let inode = std::os::unix::fs::MetadataExt::ino(&transfer.segment.metadata()?);
    let Some(&(start, _, 0)) = segment_mappings(sender, inode)?.first() else {
        transfer.sender.send("go", &[])?;
        return Ok(String::new());
    };
    let full = start + std::mem::size_of::<libc::sem_t>() as u64;
    let wake = Call {
        number: libc::SYS_futex,
        matching: Match::BothBits([
            (0, u64::MAX, full),
            (1, libc::FUTEX_CMD_MASK as u64, libc::FUTEX_WAKE as u64),
        ]),
    };
    let Some(mut tracer) = Tracer::attach(sender, wake, Action::Hold)? else {
        transfer.sender.send("go", &[])?;
        return Ok(String::new());
    };
    transfer.sender.send("go", &[])?;
    let capacity = transfer.capacity;
    let want = Header {
        seq: 0,
        total: lens[0],
        len: lens[0].min(capacity),
        end: u64::from(lens[0] <= capacity),
    };
    let mut at_post = None;
    let first = match tracer.wait(&mut transfer.sender, Instant::now() + SETTLE) {
        Ok(Reached::Call) => {
            let got = transfer.mapped.header(0);
            if got != want {
                at_post = Some(got);
            }
            tracer.release();
            None
        }
        Ok(Reached::Passed(said)) => said,
        // Never at that post: the checks of the transfer itself tell why.
        Err(Fail::TimedOut(_)) => {
            drop(tracer);
            None
        }
        Err(fail) => return Err(fail),
    };
    let said = match first {
        Some(said) => Some(said),
        None => {
            let until = Instant::now() + SETTLE;
            let mut said = None;
            while transfer.mapped.waiters(Sem::Empty) == 0 && Instant::now() < until {
                said = transfer
                    .sender
                    .recv_before(Instant::now() + Duration::from_millis(1))?;
                if said.is_some() {
                    break;
                }
            }
            said
        }
    };
    if let Some(got) = at_post {
        // Read again once the sender has gone on: a header completed after the post, or one
        // left as it was.
        let later = transfer.mapped.header(0);
        return Err(header_at_post(got, later, want, lens, capacity));
    }
    let (empty, posted) = (
        i64::from(transfer.mapped.value(Sem::Empty)),
        i64::from(transfer.mapped.value(Sem::Full)),
    );
    let taken = 2 - empty;
    let finished = match &said {
        None => String::new(),
        Some(m) if m.kind == "done" => ", and said `done`".to_string(),
        Some(m) => {
            return Err(Fail::failed(format!(
                "with the receiver stopped by the grader in its wait for chunk 0, the sender \
                 said `{}` ({}) where it should have filled the two slots and waited on \
                 `empty`",
                m.kind,
                failure(m)
            )));
        }
    };
    if posted > taken {
        return Err(overran(lens, capacity, posted, empty, &finished));
    }
    if said.is_some() {
        // A `done` with no more posts than slots: fewer chunks than messages.
        return Err(Fail::failed(format!(
            "with the receiver stopped by the grader in its wait for chunk 0, the sender said \
             `done` after handing over {posted} chunk(s) for {} messages: every message, an \
             empty one too, is at least one chunk",
            lens.len()
        )));
    }
    Ok(format!(
        "; with the sender held at its post of `full` for chunk 0, the chunk's header was \
         complete, and with the receiver stopped, the sender filled {posted} slot(s) and waited \
         on `empty`"
    ))
}

/// The failure for the header `got` found in slot 0 while the sender was held at its post of
/// `full` for chunk 0, where `want` must be; `later` is what the slot held once the sender had
/// gone on (the receiver still stopped).
fn header_at_post(got: Header, later: Header, want: Header, lens: &[u64], capacity: u64) -> Fail {
    let held = format!(
        "the grader held the sender at its post of `full` for chunk 0 (message 1 of {}, {} \
         bytes, {}), in the futex wake with which sem_post() wakes the waiting receiver, \
         before sem_post() returned: slot 0's header said {}",
        lens.len(),
        want.total,
        in_chunks(want.total, capacity),
        got.describe()
    );
    // The first chunk of a later message, all those before it empty: they were not sent.
    let skipped = lens
        .iter()
        .enumerate()
        .skip(1)
        .take_while(|&(i, _)| lens[..i].iter().all(|&len| len == 0))
        .find(|&(_, &len)| {
            got == Header {
                seq: 0,
                total: len,
                len: len.min(capacity),
                end: u64::from(len <= capacity),
            }
        });
    if let Some((index, &len)) = skipped {
        return Fail::failed(format!(
            "{held}: the first chunk handed over is message {}'s ({len} bytes), so nothing was \
             sent for the empty message(s) before it: a message of 0 bytes must still be sent, \
             as one chunk of 0 bytes with end = 1",
            index + 1
        ));
    }
    let only_end = (Header {
        end: want.end,
        ..got
    }) == want;
    if only_end && later == want {
        Fail::failed(format!(
            "{held}, where the chunk completes its message (end = {}), and once the sender had \
             gone on, end = {} (the receiver still stopped): the sender sets end only after \
             posting `full`, so a receiver that reads the header as soon as it is woken takes \
             the message for unfinished and waits for a chunk that never comes. Write the \
             whole header, end included, before sem_post(full)",
            want.end, later.end
        ))
    } else if only_end && later == got {
        Fail::failed(format!(
            "{held}, and still so once the sender had gone on: the sender left end = {} on the \
             chunk that completes the message (end = {}). Mark the last chunk of every message \
             end = 1",
            got.end, want.end
        ))
    } else if later == want {
        Fail::failed(format!(
            "{held}, where {} must be, as it was once the sender had gone on: it completes \
             the header only after posting `full`. `full` is posted only once the chunk's data \
             and its whole header are in the slot",
            want.describe()
        ))
    } else {
        Fail::failed(format!(
            "{held}, where {} must be: `full` is posted only once the chunk's data and its \
             whole header are in the slot",
            want.describe()
        ))
    }
}

/// The failure for a sender that, with the receiver stopped before taking any chunk, posted
/// `full` `posted` times while taking `empty` only `2 - empty` times.
fn overran(lens: &[u64], capacity: u64, posted: i64, empty: i64, finished: &str) -> Fail {
    let taken = 2 - empty;
    let unwaited = posted - taken;
    // Each message here is one chunk: the chunks handed over are the first messages'.
    let chunks: Vec<u64> = lens
        .iter()
        .flat_map(|&len| {
            let n = chunks_of(len, capacity);
            (0..n).map(move |seq| (len - seq * capacity).min(capacity))
        })
        .take(posted as usize)
        .collect();
    let empty_chunks = chunks.iter().filter(|&&len| len == 0).count() as i64;
    let which = if empty_chunks == unwaited {
        format!(
            " The {unwaited} chunks it did not wait for are its chunks of 0 bytes (of the empty \
             messages): an empty message is still a chunk, and it needs a free slot like any \
             other."
        )
    } else {
        String::new()
    };
    Fail::failed(format!(
        "with the receiver stopped by the grader in its wait for chunk 0 (it took no chunk), \
         the sender posted `full` {posted} times through the 2 slots, and took `empty` only \
         {taken} times (empty = {empty}, full = {posted}){finished}: it handed over {unwaited} \
         chunk(s) without waiting on `empty` first, each written into a slot that still held a \
         chunk the receiver had not read.{which} Wait on `empty` before every chunk, whatever \
         its length"
    ))
}
