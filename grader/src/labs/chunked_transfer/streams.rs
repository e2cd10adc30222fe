//! Checks that messages arrive exactly: empty and tiny ones, sizes at the chunk boundaries,
//! random sizes, a slow writer, and 1 GiB streamed with the receiver's memory bounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::RngExt;

use super::data::pattern_hash;
use super::handover::go_held;
use super::layout::chunks_of;
use super::layout::expected_capacity;
use super::observe::{expect_copied_in_memory, io_of, peak_memory};
use super::transfer::{
    Setup, Transfer, check_messages, deliver, failure, in_chunks, receive_failed, start,
};
use crate::engine::{Fail, Run};

const MIB: u64 = 1 << 20;

pub fn empty_and_tiny(run: &mut Run) -> Result<String, Fail> {
    let mut setup = Setup::new(4096, vec![0, 1, 0, 7, 0]);
    setup.watch_init = true;
    let mut transfer = start(run, &setup)?;
    let held = go_held(&mut transfer, &setup.lens)?;
    check_messages(run, &mut transfer, &setup)?;
    transfer.finish()?;
    let counted = match super::spinning::wait_accesses(run)? {
        [Some(receiver), Some(sender)] => format!(
            "; a receiver's wait on a segment where nothing is posted touched `full` {receiver} \
             times, a sender's waits on a full ring `empty` {sender} times"
        ),
        _ => String::new(),
    };
    Ok(format!(
        "messages of 0, 1, 0, 7 and 0 bytes arrived in order, exactly{held}{counted}"
    ))
}

pub fn chunk_boundaries(run: &mut Run) -> Result<String, Fail> {
    let odd = run.rng().random_range(5000..20_000);
    let mut capacities = Vec::new();
    for size in [4096, odd, 65_536] {
        // The layout (given code) fixes the capacity; the sender's report confirms it.
        let capacity = expected_capacity(size) as u64;
        let s = size as u64;
        let c = capacity;
        let lens = vec![
            c - 1,
            c,
            c + 1,
            2 * c - 1,
            2 * c,
            2 * c + 1,
            s - 1,
            s,
            s + 1,
            10 * s + 7,
        ];
        let mut setup = Setup::new(size, lens);
        // One size with a data source whose reads are short and a writer whose writes are
        // short (half of what is asked): neither is the end of the data or of a chunk.
        setup.short_reads = size == odd;
        setup.short_writes = size == odd;
        let transfer = if setup.short_reads {
            short_reads(run, &setup)?
        } else {
            deliver(run, &setup)?
        };
        if transfer.capacity != capacity {
            return Err(Fail::failed(format!(
                "the sender reports chunks of {} bytes in a {size}-byte segment; the layout \
                 gives {capacity}: keep the given capacity()",
                transfer.capacity
            )));
        }
        if setup.short_reads {
            last_chunks_full(&transfer, &setup.lens)?;
        }
        transfer.finish()?;
        capacities.push(format!("S={size} C={capacity}"));
    }
    // The rubric's check of permissions: every segment, mode 600.
    run.expect_owner_only()?;
    Ok(format!(
        "C-1, C, C+1, 2C-1, 2C, 2C+1, S-1, S, S+1 and 10S+7 bytes arrived exactly ({}; the \
         second size from a data source of short reads, to a writer of short writes); every segment had mode 600",
        capacities.join(", ")
    ))
}

pub fn random_sizes(run: &mut Run) -> Result<String, Fail> {
    let size = run.rng().random_range(4096..=1 << 20);
    let lens: Vec<u64> = (0..8)
        .map(|_| run.rng().random_range(0..=4u64 << 20))
        .collect();
    deliver(run, &Setup::new(size, lens.clone()))?.finish()?;
    Ok(format!(
        "messages of {lens:?} bytes through a {size}-byte segment arrived exactly"
    ))
}

pub fn slow_receiver(run: &mut Run) -> Result<String, Fail> {
    let size = 16_384;
    let capacity = expected_capacity(size) as u64;
    let mut setup = Setup::new(size, vec![30 * capacity + 5]);
    setup.slow_ms = 1;
    let clock = super::clock_reads::both_sides_read_the_clock(run, &setup)?;
    Ok(format!("31 chunks reached a slow writer intact; {clock}"))
}

pub fn one_gib_streamed(run: &mut Run) -> Result<String, Fail> {
    let size = 256 * 1024;
    let len = 1u64 << 30;
    let mut setup = Setup::new(size, vec![len]);
    setup.save = false;
    let mut transfer = start(run, &setup)?;
    let pid = transfer.receiver.pid.as_raw();
    let sender_pid = transfer.sender.pid.as_raw();
    let base = peak_memory(pid).ok_or_else(|| Fail::Grader("no VmHWM for the receiver".into()))?;
    // A few segments' worth, plus room for the allocator and stdio: a receiver that keeps the
    // message (or any large part of it) is far beyond this.
    let limit = 4 * size as u64 + 16 * MIB;
    // A receiver that gathers the message would grow to 1 GiB: stop it at 256 MiB.
    let stop = Arc::new(AtomicBool::new(false));
    let killed_at = Arc::new(AtomicU64::new(0));
    let guard = {
        let (stop, killed_at) = (stop.clone(), killed_at.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if let Some(peak) = peak_memory(pid)
                    && peak > base + 256 * MIB
                {
                    killed_at.store(peak, Ordering::SeqCst);
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let seed = transfer.seed;
    let expected = std::thread::spawn(move || pattern_hash(seed, 0, len));
    let io_before = (io_of(sender_pid), io_of(pid));
    let started = Instant::now();
    transfer.go()?;
    let message = transfer.receiver.recv_any();
    let elapsed = started.elapsed();
    let peak = peak_memory(pid);
    stop.store(true, Ordering::SeqCst);
    let _ = guard.join();
    let grown = |peak: u64| {
        Fail::failed(format!(
            "the receiver's peak memory (VmHWM) grew by {} MiB during a 1 GiB message through \
             a {} KiB segment: it keeps the message (or a large part of it) in memory. Write \
             each chunk to the writer as it comes, straight from the segment",
            peak.saturating_sub(base) / MIB,
            size / 1024
        ))
    };
    let killed = killed_at.load(Ordering::SeqCst);
    if killed > 0 {
        return Err(grown(killed));
    }
    let message = message?;
    if message.kind != "message" {
        return Err(receive_failed(&message, 0, &setup.lens, &transfer));
    }
    if message.get("len") != Some(len.to_string().as_str()) {
        return Err(Fail::failed(format!(
            "the 1 GiB message arrived as {} bytes",
            message.get("len").unwrap_or("?")
        )));
    }
    let expected = expected
        .join()
        .map_err(|_| Fail::Grader("computing the expected hash".into()))?;
    if message.get("hash") != Some(expected.as_str()) {
        return Err(Fail::failed(
            "the 1 GiB message arrived with the right length but other bytes (the hash does \
             not match)",
        ));
    }
    // Both wait for `exit` now: what their system calls moved is all the transfer's.
    transfer.both_done()?;
    for (who, pid, before) in [
        ("sender", sender_pid, io_before.0),
        ("receiver", pid, io_before.1),
    ] {
        expect_copied_in_memory(who, pid, io_of(pid).since(before), len, &transfer.name)?;
    }
    let peak = peak.unwrap_or(base);
    if peak > base + limit {
        return Err(grown(peak));
    }
    transfer.exit()?;
    Ok(format!(
        "1 GiB streamed in {:.1} s ({:.0} MB/s), hash exact, copied in memory (no data through \
         system calls); the receiver's peak memory grew by {} KiB (limit {} KiB)",
        elapsed.as_secs_f64(),
        len as f64 / elapsed.as_secs_f64() / 1e6,
        peak.saturating_sub(base) / 1024,
        limit / 1024
    ))
}

/// Once every message of a transfer whose sender's data source gives short reads has arrived,
/// the two slots hold the transfer's last two chunks: their headers (seq, len) tell whether the
/// sender filled every chunk up to the capacity, which the receiver alone does not show.
fn last_chunks_full(transfer: &Transfer, lens: &[u64]) -> Result<(), Fail> {
    let capacity = transfer.capacity;
    let chunks: u64 = lens.iter().map(|&len| chunks_of(len, capacity)).sum();
    let mut wrong = Vec::new();
    for stream in chunks.saturating_sub(2)..chunks {
        let want = super::headers::chunk_at(lens, capacity, stream);
        let got = transfer.mapped.header(stream);
        if want != Some(got) {
            wrong.push(format!(
                "slot {} holds {} where chunk {stream} of the transfer ({}) belongs",
                stream % 2,
                got.describe(),
                want.map_or("none".into(), |h| h.describe())
            ));
        }
    }
    if wrong.is_empty() {
        return Ok(());
    }
    let last = lens.last().copied().unwrap_or(0);
    Err(Fail::failed(format!(
        "with a data source that gives short reads (each read() fills at most half of the \
         buffer it is given, as a pipe may), every message arrived, but once the last ({last} \
         bytes, {}) was in, {}: the sender cut its chunks where a read() came back short, \
         sending more and shorter chunks than the protocol's. A short read is not the end of a \
         chunk: fill each with read_exact() (read() again until the chunk is full); every \
         chunk is `capacity` bytes but the message's last",
        in_chunks(last, capacity),
        wrong.join("; ")
    )))
}

/// A transfer whose sender's data source gives short reads (and whose writer short writes): on a failure, what the sender said
/// tells whether it took a short read for the end of the data.
fn short_reads(run: &mut Run, setup: &Setup) -> Result<Transfer, Fail> {
    let mut transfer = start(run, setup)?;
    transfer.go()?;
    let Err(fail) = check_messages(run, &mut transfer, setup) else {
        return Ok(transfer);
    };
    let Fail::Failed(what) = fail else {
        return Err(fail);
    };
    let said = transfer
        .sender
        .recv_before(Instant::now() + Duration::from_millis(100))?
        .filter(|message| message.kind == "failed");
    let setting = "with a data source that gives short reads (each read() fills at most half \
                   of the buffer it is given, as a pipe may; the data never ends before the \
                   message's length) and a writer that gives short writes (each write() takes \
                   at most half of what it is given)";
    Err(match said {
        Some(message) if message.get("kind") == Some("read") => Fail::failed(format!(
            "{setting}, the sender said `failed` ({}); then: {what}. The data had not ended: a \
             read() that gives fewer bytes than asked is not the end of the data (pipes, \
             sockets and buffered readers do it all the time). Fill each chunk with \
             read_exact() (read() again until the chunk is full); only the data ending before \
             the message's length is TransferError::Read",
            failure(&message)
        )),
        Some(message) => Fail::failed(format!(
            "{setting}, the sender said `failed` ({}); then: {what}",
            failure(&message)
        )),
        None => Fail::failed(format!("{setting}: {what}")),
    })
}
