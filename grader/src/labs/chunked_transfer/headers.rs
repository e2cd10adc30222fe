//! Checks of the chunk protocol from the receiver's side: the grader plays a strict receiver
//! and judges every chunk header a sender writes.

use std::time::{Duration, Instant};

use rand::RngExt;

use super::PEER_TIMEOUT_MS;
use super::data::pattern_bytes;
use super::layout::{Header, Mapped, Sem, chunks_of, expected_capacity};
use super::observe::{describe_descriptors, io_of};
use super::transfer::{Sender, Setup, Transfer, failure, in_chunks, start_sender};
use crate::engine::{Fail, Proc, Run};

pub fn chunk_headers(run: &mut Run) -> Result<String, Fail> {
    let odd = run.rng().random_range(5000..20_000);
    // A segment whose chunk capacity is past 64 KiB (a pipe's buffer, a plausible cap): every
    // chunk but the last fills the capacity, however large the slot.
    let big = run.rng().random_range(140_000..=300_000);
    let mut sizes = Vec::new();
    for size in [4096, odd, big] {
        let c = expected_capacity(size) as u64;
        let lens = vec![2 * c + 1, 0, 1, c - 1, c, c + 1, 2 * c, 0, 3 * c];
        let mut setup = Setup::new(size, lens.clone());
        setup.save = false;
        // One size with a data source of short reads (half of what is asked, as a pipe may
        // give): a chunk is still `capacity` bytes but the last, however the source gives them.
        setup.short_reads = size == odd;
        // The sender stands still before it reads the data of chunk 1: it must not have posted
        // that chunk yet.
        setup.hold_at = Some(c);
        let mut sender = start_sender(run, &setup)?;
        let io_before = io_of(sender.proc.pid.as_raw());
        // The grader is the receiver: it unlinks the name once it has the segment, as `recv`
        // does.
        let _ = nix::sys::mman::shm_unlink(sender.name.as_str());
        sender.proc.send("go", &[])?;
        let mut stream = 0u64;
        for (index, &len) in lens.iter().enumerate() {
            let want = pattern_bytes(sender.seed, index as u64, len as usize);
            let mut received = 0u64;
            let mut seq = 0u64;
            loop {
                let at = Place {
                    lens: &lens,
                    index,
                    seq,
                    stream,
                    capacity: c,
                    short_reads: setup.short_reads,
                };
                if index == 0 && seq == 1 {
                    no_chunk_before_its_data(&mut sender, &at)?;
                }
                next_chunk(&mut sender, &at)?;
                let header = judge_header(&sender.mapped, &at, received, sender.proc.pid.as_raw())?;
                let data = sender.mapped.data(stream, header.len);
                let expected = &want[received as usize..(received + header.len) as usize];
                let wrong = data.iter().zip(expected).filter(|(a, b)| a != b).count();
                if wrong > 0 {
                    // Bytes that turn right a moment later came after `full`.
                    std::thread::sleep(Duration::from_millis(50));
                    let later = sender.mapped.data(stream, header.len);
                    if later.iter().zip(expected).all(|(a, b)| a == b) {
                        return Err(Fail::failed(format!(
                            "{}: its header was right, but right after `full` was posted {wrong} of its \
                             {} data bytes in the slot were not the message's yet, and 50 ms \
                             later they were: it posts `full` before the chunk's data is in the \
                             slot. Read the chunk's data into the slot first, then post `full`",
                            at.chunk(),
                            header.len
                        )));
                    }
                    let pid = sender.proc.pid.as_raw();
                    let moved = io_of(pid).since(io_before);
                    let syscalls = if moved.written_bytes > 0 {
                        format!(
                            "; meanwhile the sender wrote {} bytes with write()-like system \
                             calls ({}), so the data went elsewhere",
                            moved.written_bytes,
                            describe_descriptors(pid, &sender.name)
                        )
                    } else {
                        String::new()
                    };
                    return Err(Fail::failed(format!(
                        "{}: its header is right ({}), but {wrong} of its {} data bytes in the \
                         slot are not the message's{syscalls}: a chunk's data goes in its slot \
                         right after the chunk header, in place before `full` is posted",
                        at.chunk(),
                        header.describe(),
                        header.len
                    )));
                }
                sender.mapped.post(Sem::Empty);
                stream += 1;
                seq += 1;
                received += header.len;
                if received == len {
                    break;
                }
            }
        }
        let done = sender.proc.recv_any()?;
        if done.kind != "done" {
            return Err(Fail::failed(format!(
                "the grader, as the receiver, took every chunk of the {} messages, and the \
                 sender said `{}` ({}) instead of `done`",
                lens.len(),
                done.kind,
                failure(&done)
            )));
        }
        if sender.mapped.value(Sem::Full) > 0 {
            return Err(Fail::failed(format!(
                "after the last chunk of its last message the sender posted one more chunk \
                 ({}): a message ends with the chunk that completes it",
                sender.mapped.header(stream).describe()
            )));
        }
        sender.proc.send("exit", &[])?;
        sender.proc.wait()?;
        sizes.push(format!("S={size} C={c}"));
    }
    Ok(format!(
        "with the grader as the receiver, every chunk of messages of 2C+1, 0, 1, C-1, C, C+1, \
         2C, 0 and 3C bytes was in slot k % 2 with the right seq, total, len (full chunks but \
         the last) and end, and its bytes ({}; the second size from a data source of short \
         reads)",
        sizes.join(", ")
    ))
}

/// Where the grader, as the receiver, is in the stream.
struct Place<'a> {
    lens: &'a [u64],
    /// The message.
    index: usize,
    /// The chunk of the message due.
    seq: u64,
    /// The chunk of the transfer due: it lies in slot `stream % 2`.
    stream: u64,
    capacity: u64,
    /// The sender's data source gives short reads (at most half of what is asked).
    short_reads: bool,
}

impl Place<'_> {
    fn len(&self) -> u64 {
        self.lens[self.index]
    }

    /// "message 3 (1984 bytes, exactly 1 full chunk(s) of 1984), chunk 0 (slot 1)".
    fn chunk(&self) -> String {
        format!(
            "message {} of {} ({} bytes, {}), chunk {} (chunk {} of the transfer, slot {})",
            self.index + 1,
            self.lens.len(),
            self.len(),
            in_chunks(self.len(), self.capacity),
            self.seq,
            self.stream,
            self.stream % 2
        )
    }
}

/// Waits until the sender posts `full` for the chunk due; fails if it says something instead
/// or posts nothing for the programs' timeout.
fn next_chunk(sender: &mut Sender, at: &Place) -> Result<(), Fail> {
    let until = Instant::now() + Duration::from_millis(PEER_TIMEOUT_MS);
    while Instant::now() < until {
        if sender.mapped.wait(Sem::Full, Duration::from_millis(20)) {
            return Ok(());
        }
        if let Some(said) = sender.proc.recv_before(Instant::now())? {
            if said.kind == "holding" {
                return Err(Fail::failed(format!(
                    "the grader, as the receiver, waited for {}, and the sender came first to \
                     the point where the grader holds it, the read that reaches byte {} of \
                     message 1 (the data of chunk 1): it reads its data source ahead of the \
                     chunk it hands over. Read each chunk's data straight into its slot and \
                     post `full` before reading the next",
                    at.chunk(),
                    at.capacity
                )));
            }
            let hint = if at.len() == 0 && said.kind == "done" {
                ": a message of 0 bytes must still be sent, as one chunk of 0 bytes with end = 1"
            } else {
                ""
            };
            return Err(Fail::failed(format!(
                "the grader, as the receiver, waited for {}, and the sender said `{}` ({}) \
                 instead of posting it{hint}",
                at.chunk(),
                said.kind,
                failure(&said)
            )));
        }
    }
    Err(Fail::failed(format!(
        "the grader, as the receiver, had taken every chunk before and posted `empty` for each, \
         yet the sender put nothing in the segment for {PEER_TIMEOUT_MS} ms where {} was due",
        at.chunk()
    )))
}

/// With the sender held before it reads the data of the chunk due (`send --hold-at`), fails if
/// it has posted `full` for that chunk already.
fn no_chunk_before_its_data(sender: &mut Sender, at: &Place) -> Result<(), Fail> {
    Transfer::holding(
        &mut sender.proc,
        "sender",
        &format!("the data of {}", at.chunk()),
    )?;
    settle(sender.proc.pid.as_raw());
    let full = sender.mapped.value(Sem::Full);
    if full > 0 {
        return Err(Fail::failed(format!(
            "the sender stood still before reading the data of {} from its source (the grader \
             held it there), with every chunk before it taken by the grader, yet `full` was \
             already {full}: it posts `full` before the chunk's data is in the slot. Post \
             `full` only once the chunk's data and header are in place",
            at.chunk()
        )));
    }
    sender.proc.send("release", &[])
}

/// Reads the header of the chunk due and fails unless it is exactly what the protocol says.
fn judge_header(mapped: &Mapped, at: &Place, received: u64, sender: i32) -> Result<Header, Fail> {
    let h = mapped.header(at.stream);
    let len = at.len();
    let want = chunk_at(at.lens, at.capacity, at.stream);
    if Some(h) == want {
        return Ok(h);
    }
    let want = want.expect("the chunk due is one of the stream's");
    let (want_len, want_end) = (want.len, want.end);
    let place = at.chunk();
    // Whatever the sender could do, it has done: what the slots hold now tells the bugs apart.
    settle(sender);
    let other = mapped.header(at.stream + 1);
    let next = chunk_at(at.lens, at.capacity, at.stream + 1);
    let after = chunk_at(at.lens, at.capacity, at.stream + 2);
    if other == want {
        return Err(Fail::failed(format!(
            "{place}: that slot holds {}, and the chunk due is in the other slot ({}): chunk k \
             of the transfer goes in slot k % 2, counting every chunk of every message \
             (Segment::chunks), not starting again with each message",
            h.describe(),
            other.describe()
        )));
    }
    if Some(h) == next && Some(other) == after {
        let what = if len == 0 {
            "a message of 0 bytes must still be sent, as one chunk of 0 bytes with end = 1"
        } else {
            "every chunk of every message goes through the segment, in order"
        };
        return Err(Fail::failed(format!(
            "{place}: the sender skipped it: that slot holds the chunk after it ({}), the other \
             slot the one after that ({}): {what}",
            h.describe(),
            other.describe()
        )));
    }
    if Some(h) == next {
        return Err(Fail::failed(format!(
            "{place}: that slot already holds the chunk after it ({}), and the other slot holds \
             neither ({}): the sender put both in the same slot. Chunk k of the transfer goes in \
             slot k % 2, counting every chunk of every message (Segment::chunks), not starting \
             again with each message",
            h.describe(),
            other.describe()
        )));
    }
    // Which chunk of the transfer a header is, near the one due (empty messages look alike).
    let index_of = |header: &Header| {
        (at.stream.saturating_sub(2)..at.stream + 4)
            .find(|&s| chunk_at(at.lens, at.capacity, s) == Some(*header))
    };
    if let Some(later) = index_of(&other).filter(|&s| s > at.stream)
        && index_of(&h).is_none_or(|s| s < at.stream)
    {
        return Err(Fail::failed(format!(
            "{place}: that slot holds {}, an older chunk or none, while the other slot already \
             holds chunk {later} of the transfer ({}), put there after the chunk due was \
             posted: that chunk never reached its slot. Chunk k of the transfer goes in slot \
             k % 2, counting every chunk of every message (Segment::chunks), not starting again \
             with each message",
            h.describe(),
            other.describe()
        )));
    }
    if h.seq != want.seq {
        return Err(Fail::failed(format!(
            "{place}: its header says {}: number each message's chunks 0, 1, 2, ...",
            h.describe()
        )));
    }
    if h.total != len {
        return Err(Fail::failed(format!(
            "{place}: its header says {}: every chunk carries the whole message's length \
             ({len})",
            h.describe()
        )));
    }
    if h.len < want_len && at.short_reads {
        // This source gives at most half of what one read() asks for.
        let one_read = if h.len == want_len / 2 {
            format!(
                "{} bytes, what one read() of this source gives for a buffer of {want_len}",
                h.len
            )
        } else {
            format!("{} bytes", h.len)
        };
        return Err(Fail::failed(format!(
            "{place}: with a data source that gives short reads (each read() fills at most half \
             of the buffer it is given, as a pipe or a socket may; the data never ends before \
             the message's length), its header says {}, a chunk of {one_read}, where {want_len} \
             bytes fit ({} of the message left, capacity {}): a short read is not the end of a \
             chunk. Fill each chunk with read_exact() (read() again until the chunk is full): \
             every chunk is `capacity` bytes but the message's last",
            h.describe(),
            len - received,
            at.capacity
        )));
    }
    if h.len < want_len {
        return Err(Fail::failed(format!(
            "{place}: its header says {}, where {want_len} bytes fit ({} of the message left, \
             capacity {}): fill every chunk up to the capacity (the slot minus its 32-byte \
             header, however large the segment, with no cap of your own); only the message's \
             last chunk is shorter",
            h.describe(),
            len - received,
            at.capacity
        )));
    }
    if h.len > want_len {
        return Err(Fail::failed(format!(
            "{place}: its header says {}, more than {want_len} ({} of the message left, \
             capacity {})",
            h.describe(),
            len - received,
            at.capacity
        )));
    }
    if want_end == 1 {
        let boundary = if len > 0 && len.is_multiple_of(at.capacity) {
            // What the sender does next tells the off-by-one apart from a missing flag.
            // The other slot is free: a sender that goes on puts its next chunk there.
            let then = if mapped.wait(Sem::Full, Duration::from_millis(500)) {
                format!(
                    ", and the next chunk it put in the segment was {}",
                    mapped.header(at.stream + 1).describe()
                )
            } else {
                String::new()
            };
            format!(
                "{then}. A chunk that exactly fills up the message must still carry end = 1: an \
                 off-by-one at the chunk boundary"
            )
        } else {
            String::new()
        };
        return Err(Fail::failed(format!(
            "{place}: this chunk completes the message, but its header says {}{boundary}. Mark \
             the last chunk of every message end = 1",
            h.describe()
        )));
    }
    Err(Fail::failed(format!(
        "{place}: its header says {}, after {} of the message's {len} bytes: end = 1 goes only \
         on the chunk that completes the message, end = 0 on every other",
        h.describe(),
        received + h.len
    )))
}

/// The header chunk `stream` of the transfer must have, for messages of `lens` bytes.
pub(super) fn chunk_at(lens: &[u64], capacity: u64, stream: u64) -> Option<Header> {
    let mut before = 0;
    for &len in lens {
        let chunks = chunks_of(len, capacity);
        if stream < before + chunks {
            let seq = stream - before;
            return Some(Header {
                seq,
                total: len,
                len: (len - seq * capacity).min(capacity),
                end: u64::from(seq + 1 == chunks),
            });
        }
        before += chunks;
    }
    None
}

/// Waits (at most a second) until `pid` has been asleep for a few looks in a row: whatever it
/// could do without the grader, it has done.
fn settle(pid: i32) {
    let until = Instant::now() + Duration::from_secs(1);
    let mut asleep = 0;
    while asleep < 5 && Instant::now() < until {
        let sleeping = crate::engine::inspect::view(pid).is_none_or(|view| {
            view.threads
                .iter()
                .all(|t| matches!(t.state, 'S' | 'D' | 'Z'))
        });
        asleep = if sleeping { asleep + 1 } else { 0 };
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A receiver of one message from the segment `name`, which gives up after `timeout_ms` of
/// silence.
pub fn spawn_one_message_receiver(
    run: &mut Run,
    name: &str,
    timeout_ms: u64,
) -> Result<Proc, Fail> {
    let mut receiver = run.spawn(&one_message_receiver(name, timeout_ms))?;
    receiver.set_roles(|_| "the receiver".into());
    Ok(receiver)
}

/// The receiver's first message, which must be `ready`: it opened a segment the grader made as
/// the handout lays it out.
pub fn ready_on_grader_segment(receiver: &mut Proc) -> Result<(), Fail> {
    let ready = receiver.recv_any()?;
    if ready.kind != "ready" {
        return Err(Fail::failed(format!(
            "the receiver could not open a segment the grader made as the handout lays it out: \
             it said `{}` ({})",
            ready.kind,
            super::transfer::failure(&ready)
        )));
    }
    Ok(())
}

/// The arguments of a receiver of one message from the segment `name`.
pub fn one_message_receiver(name: &str, timeout_ms: u64) -> Vec<String> {
    ["recv", "--name", name, "--count", "1", "--timeout-ms"]
        .map(String::from)
        .into_iter()
        .chain([timeout_ms.to_string()])
        .collect()
}
