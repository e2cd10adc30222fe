//! Driving one transfer: a `send` program that creates the segment and a `recv` program that
//! opens it, started, held and checked message by message.

use std::fs::File;
use std::time::{Duration, Instant};

use ipc_labs_driver::Message;
use rand::RngExt;

use super::PEER_TIMEOUT_MS;
use super::data::{pattern_bytes, pattern_hash};
use super::init::{fresh_semaphores, initialized_by_library, watch_semaphore_stores};
use super::layout::{Header, Mapped, chunks_of};
use super::observe::dev_shm;
use super::signals::waits_timed;
use crate::engine::{Fail, Proc, Run};

/// How a transfer is run.
pub struct Setup {
    /// The segment's size, bytes.
    pub size: usize,
    pub lens: Vec<u64>,
    /// Compare saved files (else only lengths and hashes).
    pub save: bool,
    /// The receiver's writer sleeps this long before each write.
    pub slow_ms: u64,
    /// The sender's data source sleeps this long before each read.
    pub sender_slow_ms: u64,
    pub timeout_ms: u64,
    pub progress_after: Option<u64>,
    /// The sender stops before reading this byte of the first message (`send --hold-at`).
    pub hold_at: Option<u64>,
    /// The receiver's writer stops before the writes that reach these bytes of the stream
    /// (`recv --hold-at`).
    pub receiver_holds: Vec<u64>,
    /// The seed of the data; drawn from the check's when `None`.
    pub seed: Option<u64>,
    /// Watch the sender's stores to its semaphores from its mmap() of the segment until it
    /// says `ready`: create() must initialize them with sem_init().
    pub watch_init: bool,
    /// The sender's data source gives short reads (`send --short-reads`).
    pub short_reads: bool,
    /// The receiver's writer takes at most half of each write (`recv --short-writes`).
    pub short_writes: bool,
}

impl Setup {
    pub fn new(size: usize, lens: Vec<u64>) -> Setup {
        Setup {
            size,
            lens,
            save: true,
            slow_ms: 0,
            sender_slow_ms: 0,
            timeout_ms: PEER_TIMEOUT_MS,
            progress_after: None,
            hold_at: None,
            receiver_holds: Vec::new(),
            seed: None,
            watch_init: false,
            short_reads: false,
            short_writes: false,
        }
    }
}

/// A sender that said `ready`, and its segment.
pub struct Sender {
    pub proc: Proc,
    /// The segment's name.
    pub name: String,
    /// Data bytes per chunk, as the sender reported.
    pub capacity: u64,
    pub seed: u64,
    /// The segment, opened by the grader before anyone unlinks its name.
    pub segment: File,
    /// The grader's own mapping of it.
    pub mapped: Mapped,
}

/// A sender and a receiver, both `ready`, not yet started.
pub struct Transfer {
    pub sender: Proc,
    pub receiver: Proc,
    pub name: String,
    /// Data bytes per chunk, as the sender reported.
    pub capacity: u64,
    pub seed: u64,
    pub segment: File,
    /// The grader's mapping of the segment, to read what the slots hold.
    pub mapped: Mapped,
    /// Each wait's timeout, as the programs were told.
    pub timeout_ms: u64,
    /// When the grader said `go`.
    pub started: Option<Instant>,
}

/// Starts the sender, checks the segment it made, starts the receiver.
pub fn start(run: &mut Run, setup: &Setup) -> Result<Transfer, Fail> {
    let sender = start_sender(run, setup)?;
    start_receiver(run, setup, sender)
}

/// Starts the sender and checks the segment it made: there, of the size asked for, mode 600,
/// its semaphores initialized process-shared (`empty` 2, `full` 0).
pub fn start_sender(run: &mut Run, setup: &Setup) -> Result<Sender, Fail> {
    // A name of its own, though a check may run several transfers of one size at once.
    let unique: u32 = run.rng().random();
    let name = run.ipc_name(&format!("seg-{}-{unique:08x}", setup.size));
    let seed: u64 = setup.seed.unwrap_or_else(|| run.rng().random());
    let lens: Vec<String> = setup.lens.iter().map(u64::to_string).collect();
    let mut args = vec![
        "send".to_string(),
        "--name".into(),
        name.clone(),
        "--size".into(),
        setup.size.to_string(),
        "--seed".into(),
        seed.to_string(),
        "--lens".into(),
        lens.join(","),
        "--timeout-ms".into(),
        setup.timeout_ms.to_string(),
    ];
    if let Some(after) = setup.progress_after {
        args.extend(["--progress-after".into(), after.to_string()]);
    }
    if let Some(byte) = setup.hold_at {
        args.extend(["--hold-at".into(), byte.to_string()]);
    }
    if setup.sender_slow_ms > 0 {
        args.extend(["--slow-ms".into(), setup.sender_slow_ms.to_string()]);
    }
    if setup.short_reads {
        args.push("--short-reads".into());
    }
    let (sender, ready, stores) = if setup.watch_init {
        let mut sender = run.spawn_stopped(&args)?;
        sender.set_roles(|_| "the sender".into());
        let (ready, stores) = watch_semaphore_stores(run, &mut sender, setup.size)?;
        (sender, ready, stores)
    } else {
        let mut sender = run.spawn(&args)?;
        sender.set_roles(|_| "the sender".into());
        let ready = sender.recv_any()?;
        (sender, ready, Vec::new())
    };
    if ready.kind != "ready" {
        return Err(Fail::failed(format!(
            "the sender could not create a {}-byte segment: it said `{}` ({})",
            setup.size,
            ready.kind,
            failure(&ready)
        )));
    }
    let capacity: u64 = ready
        .get("capacity")
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| Fail::Grader("the sender's `ready` has no capacity".into()))?;
    if capacity == 0 {
        return Err(Fail::failed(format!(
            "the sender reports chunks of 0 bytes in a {}-byte segment: no data fits in its \
             slots. Keep the given slot_size() and capacity()",
            setup.size
        )));
    }
    let path = dev_shm(&name);
    let object = std::fs::metadata(&path).map_err(|_| {
        Fail::failed(format!(
            "the sender says it created the segment, but {} does not exist: create it with \
             shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600)",
            path.display()
        ))
    })?;
    if object.len() != setup.size as u64 {
        return Err(Fail::failed(format!(
            "the {}-byte segment is {} bytes in /dev/shm: ftruncate() it to exactly the size \
             asked for; the header and the slots live inside it",
            setup.size,
            object.len()
        )));
    }
    use std::os::unix::fs::MetadataExt;
    if object.mode() & 0o777 != 0o600 {
        return Err(Fail::failed(format!(
            "{} has mode {:03o}: create it with mode 0600",
            path.display(),
            object.mode() & 0o777
        )));
    }
    // Read and write: the grader maps it shared, to read the slots and to play a receiver.
    let segment = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)?;
    let mapped = Mapped::open(&segment, setup.size)?;
    initialized_by_library(sender.pid.as_raw(), &stores)?;
    fresh_semaphores(&mapped)?;
    Ok(Sender {
        proc: sender,
        name,
        capacity,
        seed,
        segment,
        mapped,
    })
}

/// Starts the receiver of `sender`'s segment.
pub fn start_receiver(run: &mut Run, setup: &Setup, sender: Sender) -> Result<Transfer, Fail> {
    let mut args = vec![
        "recv".to_string(),
        "--name".into(),
        sender.name.clone(),
        "--count".into(),
        setup.lens.len().to_string(),
        "--timeout-ms".into(),
        setup.timeout_ms.to_string(),
        "--slow-ms".into(),
        setup.slow_ms.to_string(),
    ];
    if setup.save {
        args.push("--save".into());
    }
    if setup.short_writes {
        args.push("--short-writes".into());
    }
    if !setup.receiver_holds.is_empty() {
        let holds: Vec<String> = setup.receiver_holds.iter().map(u64::to_string).collect();
        args.extend(["--hold-at".into(), holds.join(",")]);
    }
    let mut receiver = run.spawn(&args)?;
    receiver.set_roles(|_| "the receiver".into());
    let ready = receiver.recv_any()?;
    if ready.kind != "ready" {
        return Err(Fail::failed(format!(
            "the receiver could not open the sender's segment: it said `{}` ({})",
            ready.kind,
            failure(&ready)
        )));
    }
    Ok(Transfer {
        sender: sender.proc,
        receiver,
        name: sender.name,
        capacity: sender.capacity,
        seed: sender.seed,
        segment: sender.segment,
        mapped: sender.mapped,
        timeout_ms: setup.timeout_ms,
        started: None,
    })
}

/// How long the sender's start waits for the receiver to block: a receiver that waits at all
/// does within milliseconds.
const RECEIVER_SETTLE: Duration = Duration::from_secs(1);

impl Transfer {
    /// Starts both: the receiver first, and the sender once the receiver sleeps in its timed
    /// wait for the first chunk (or has said something, or [`RECEIVER_SETTLE`] passed), so
    /// that in every run that wait must block and a deadline that has already passed shows.
    pub fn go(&mut self) -> Result<(), Fail> {
        self.started = Some(Instant::now());
        self.receiver.send("go", &[])?;
        let pid = self.receiver.pid.as_raw();
        let until = Instant::now() + RECEIVER_SETTLE;
        while !waits_timed(pid) && Instant::now() < until {
            // A receiver whose wait gave up at once says so (or exits): no need to wait more.
            if self
                .receiver
                .says_before(Instant::now() + Duration::from_millis(1))
            {
                break;
            }
        }
        self.sender.send("go", &[])
    }

    /// Lets both finish: both say `done`, then exit cleanly.
    pub fn finish(mut self) -> Result<(), Fail> {
        self.both_done()?;
        self.exit()
    }

    /// Waits for both to say `done`: every message is through, and both wait for `exit`.
    pub fn both_done(&mut self) -> Result<(), Fail> {
        self.receiver.recv("done")?;
        let done = self.sender.recv_any()?;
        if done.kind != "done" {
            return Err(Fail::failed(format!(
                "every message arrived, but the sender said `{}` ({})",
                done.kind,
                failure(&done)
            )));
        }
        Ok(())
    }

    /// Tells both to exit, and wants a clean exit from each.
    pub fn exit(mut self) -> Result<(), Fail> {
        self.receiver.send("exit", &[])?;
        self.sender.send("exit", &[])?;
        for (proc, who) in [
            (&mut self.sender, "sender"),
            (&mut self.receiver, "receiver"),
        ] {
            let status = proc.wait()?;
            if !status.success() {
                return Err(Fail::failed(format!("the {who} exited with {status}")));
            }
        }
        Ok(())
    }

    /// Waits for `proc` (one of this transfer's) to say `holding`; anything else is a failure
    /// described with `what` (where it should have stopped).
    pub fn holding(proc: &mut Proc, who: &str, what: &str) -> Result<u64, Fail> {
        Self::holding_message(proc, who, what)?
            .get("at")
            .and_then(|at| at.parse::<u64>().ok())
            .ok_or_else(|| Fail::Grader(format!("the {who}'s `holding` has no byte offset")))
    }

    /// Like [`Transfer::holding`], the whole `holding` message (a sender's names the buffer
    /// its data source was given: `into`, `room`).
    pub fn holding_message(proc: &mut Proc, who: &str, what: &str) -> Result<Message, Fail> {
        let holding = proc.recv_any()?;
        // The receivers are held inside their first message: a message reported first ended
        // too early.
        if holding.kind == "message" && holding.get("index") == Some("0") {
            return Err(Fail::failed(format!(
                "the {who} reported message 1 complete with {} bytes before it came to {what}, \
                 a byte of that message: it took a chunk for the message's last that was not. \
                 Either it decides the end on a wrong condition, or it reads a chunk's header \
                 again after posting `empty`, when the sender may already have put a later \
                 chunk (end = 1) in that slot",
                holding.get("len").unwrap_or("?")
            )));
        }
        if holding.kind != "holding" {
            return Err(Fail::failed(format!(
                "the {who} said `{}` ({}) before it came to {what}",
                holding.kind,
                failure(&holding)
            )));
        }
        Ok(holding)
    }
}

/// `kind=...: error` of a `failed` message, for a diagnosis.
/// What a semaphore call's `EINVAL` establishes: glibc's `sem_timedwait()` checks the
/// deadline's `tv_nsec` before it touches the semaphore and fails with `EINVAL` for that alone
/// (`sem_post()` gives `EOVERFLOW`, never `EINVAL`; `sem_init()` only for a value too large).
pub const SEM_EINVAL: &str = "EINVAL from a semaphore wait: glibc's sem_timedwait() gives \
     EINVAL for one reason only, a deadline whose tv_nsec is not in 0..=999999999 (checked \
     before the semaphore is even looked at; sem_post() never gives EINVAL). The deadline was \
     built by hand (now + the timeout, field by field) without carrying the nanoseconds into \
     tv_sec: with a timeout that has a fraction of a second, about one wait in two gets a \
     tv_nsec of a second or more. Normalize the deadline (or use TimeSpec addition), and \
     nothing here says the segment was given back too early";

/// What a program answered, for a diagnosis: `failed` with its kind and error, or the word.
pub fn said(message: &Message) -> String {
    if message.kind == "failed" {
        format!("`failed` ({})", failure(message))
    } else {
        format!("`{}`", message.kind)
    }
}

pub fn failure(message: &Message) -> String {
    format!(
        "kind={}: {}",
        message.get("kind").unwrap_or("none"),
        message.get("error").unwrap_or("")
    )
}

/// `len` in chunks of `capacity`, for a diagnosis: "exactly 2 full chunks", "3 chunks, the
/// last of 17 bytes".
pub fn in_chunks(len: u64, capacity: u64) -> String {
    match (len / capacity, len % capacity) {
        (0, 0) => "an empty message: one chunk of 0 bytes".into(),
        (full, 0) => format!("exactly {full} full chunk(s) of {capacity}"),
        (0, rest) => format!("one chunk of {rest}"),
        (full, rest) => format!("{} chunks, the last of {rest}", full + 1),
    }
}

/// What went wrong with message `index`, which the receiver reported as `failed`. When all its
/// bytes arrived and the receiver still waited, the slot of the message's last chunk, read by
/// the grader, tells whether the sender left `end = 0` there or the receiver did not stop.
pub fn receive_failed(message: &Message, index: usize, lens: &[u64], transfer: &Transfer) -> Fail {
    let capacity = transfer.capacity;
    let len = lens[index];
    let received: Option<u64> = message.get("received").and_then(|r| r.parse().ok());
    let what = format!(
        "message {} of {} ({len} bytes, {}): the receiver said `failed` ({}) after {} bytes",
        index + 1,
        lens.len(),
        in_chunks(len, capacity),
        failure(message),
        received.map_or("?".into(), |r| r.to_string())
    );
    let kind = message.get("kind").unwrap_or("");
    let timeout = Duration::from_millis(transfer.timeout_ms);
    if let Some(started) = transfer.started
        && kind == "timeout"
        && started.elapsed() < timeout / 2
    {
        return Fail::failed(format!(
            "{what}, {} ms after the transfer began, far sooner than its timeout of {} ms: a \
             wait gave up before its time. sem_timedwait() takes an absolute CLOCK_REALTIME \
             deadline: the time now plus the timeout, not the timeout itself",
            started.elapsed().as_millis(),
            transfer.timeout_ms
        ));
    }
    if received != Some(len) || !matches!(kind, "timeout" | "protocol") {
        return Fail::failed(what);
    }
    let boundary = if len > 0 && len.is_multiple_of(capacity) {
        " When the message fills its last chunk exactly, that chunk must still carry end = 1: \
         an off-by-one at the chunk boundary."
    } else {
        ""
    };
    // The message's last chunk, if the slot still holds it.
    let before: u64 = lens[..index].iter().map(|&l| chunks_of(l, capacity)).sum();
    let chunks = chunks_of(len, capacity);
    let last = before + chunks - 1;
    let header = Some(transfer.mapped.header(last));
    let is_last = |h: &Header| {
        h.seq == chunks - 1 && h.total == len && h.len == len - (chunks - 1) * capacity
    };
    match header {
        Some(h) if is_last(&h) && h.end == 0 => Fail::failed(format!(
            "{what}: all its bytes arrived, but the slot of its last chunk holds {} (read by \
             the grader): the sender left end = 0 on the chunk that completes the message, so \
             the receiver waited for more. Mark the last chunk of every message end = 1.\
             {boundary}",
            h.describe()
        )),
        Some(h) if is_last(&h) => Fail::failed(format!(
            "{what}: all its bytes arrived and the slot of its last chunk says end = 1 ({}, \
             read by the grader), yet the receiver waited for more: either the receiver does \
             not stop after the chunk with end = 1, or the sender sets end = 1 only after its \
             post of `full`, so that the receiver, woken at once, read end = 0 (the check \
             `empty-and-tiny` holds the sender at that post and reads the header)",
            h.describe()
        )),
        _ => Fail::failed(format!(
            "{what}: all its bytes arrived but the message never ended for the receiver: either \
             the sender did not mark its last chunk (Mark the last chunk of every message end = \
             1), or the receiver did not stop at end = 1 (the check `chunk-headers` looks at \
             the sender's headers alone), or it read end again after posting `empty`, when the \
             sender may already have put the next message's chunk in that slot.{boundary}"
        )),
    }
}

/// Receives every message of `setup` and checks each against what the sender sent.
pub fn deliver(run: &mut Run, setup: &Setup) -> Result<Transfer, Fail> {
    let mut transfer = start(run, setup)?;
    transfer.go()?;
    check_messages(run, &mut transfer, setup)?;
    Ok(transfer)
}

/// Checks every message of `setup` the receiver reports against what the sender sent.
pub fn check_messages(run: &mut Run, transfer: &mut Transfer, setup: &Setup) -> Result<(), Fail> {
    let capacity = transfer.capacity;
    for (index, &len) in setup.lens.iter().enumerate() {
        let message = transfer.receiver.recv_any()?;
        if message.kind == "failed" {
            return Err(receive_failed(&message, index, &setup.lens, transfer));
        }
        if message.kind != "message" {
            return Err(Fail::failed(format!(
                "the receiver said `{}` where it should have reported message {}",
                message.kind,
                index + 1
            )));
        }
        let got: u64 = message
            .get("len")
            .and_then(|l| l.parse().ok())
            .unwrap_or(u64::MAX);
        if got != len {
            let next = setup.lens.get(index + 1).filter(|&&n| n == got && n != len);
            let hint = match (len, next) {
                (0, Some(_)) => " It got the next message instead: a message of 0 bytes must \
                                 still be sent, as one chunk of 0 bytes with end = 1."
                    .to_string(),
                (_, Some(_)) => " It got the next message instead: this one was never sent \
                                 or never ended."
                    .into(),
                _ if got < len && got > 0 && got.is_multiple_of(capacity) => format!(
                    " It stopped after {} full chunks, at a chunk boundary: it took a chunk for \
                     the message's last that was not. Either it decides the end on a wrong \
                     condition, or it reads a chunk's header again after posting `empty`, when \
                     the sender may already have put a later chunk (end = 1) in that slot",
                    got / capacity
                ),
                _ => String::new(),
            };
            return Err(Fail::failed(format!(
                "message {} of {} should be {len} bytes ({}); the receiver got {got}.{hint}",
                index + 1,
                setup.lens.len(),
                in_chunks(len, capacity)
            )));
        }
        if setup.save {
            let saved = std::fs::read(run.path(&format!("message-{index}.bin")))?;
            if (saved.len() as u64) < len {
                return Err(writer_short_of(setup, index, len, saved.len()));
            }
            let want = pattern_bytes(transfer.seed, index as u64, len as usize);
            compare(&saved, &want, index, setup, capacity, transfer.seed)?;
        }
        if message.get("hash") != Some(pattern_hash(transfer.seed, index as u64, len).as_str()) {
            return Err(Fail::failed(format!(
                "message {} ({len} bytes): the receiver's bytes differ from what the sender \
                 sent (the hash does not match)",
                index + 1
            )));
        }
    }
    Ok(())
}

/// A message the receiver reported whole while its writer got fewer bytes.
fn writer_short_of(setup: &Setup, index: usize, len: u64, written: usize) -> Fail {
    let writer = if setup.short_writes {
        "its writer takes at most half of each buffer, `recv --short-writes`"
    } else {
        "its writer takes every byte it is given"
    };
    Fail::failed(format!(
        "message {} of {}: the receiver reported all {len} bytes, but its writer got only \
         {written} ({writer}): a write() that takes fewer bytes than it is given is not the \
         whole chunk, and the rest is lost. Hand each chunk's data to the writer with \
         write_all(), which writes again until all of it is taken",
        index + 1,
        setup.lens.len()
    ))
}

/// Byte-for-byte comparison of a saved message, naming the first wrong byte's chunk and, when
/// the grader finds them there, the later chunk of the stream the wrong bytes belong to.
fn compare(
    got: &[u8],
    want: &[u8],
    index: usize,
    setup: &Setup,
    capacity: u64,
    seed: u64,
) -> Result<(), Fail> {
    if got == want {
        return Ok(());
    }
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len())) as u64;
    let wrong = got.iter().zip(want).filter(|(a, b)| a != b).count();
    let mut text = format!(
        "message {} ({} bytes through a {}-byte segment, chunks of {capacity}): {wrong} \
         byte(s) differ from what the sender sent, the first at byte {first} (chunk {}, byte {} \
         of it)",
        index + 1,
        want.len(),
        setup.size,
        first / capacity,
        first % capacity
    );
    if let Some((message, chunk)) = later_chunk(got, first, index, &setup.lens, capacity, seed) {
        text.push_str(&format!(
            ": those bytes are chunk {chunk} of message {}, at the same place in its chunk (the \
             grader found them there), a chunk that came later through the same slot. The slot \
             was filled again before the receiver had written this chunk out: either the \
             receiver posts `empty` before its writer is done with the slot (for a message's \
             last chunk too), or the sender fills a slot before its wait on `empty` returns \
             (the check `held-mid-message` looks at both)",
            message + 1
        ));
    } else if setup.slow_ms > 0 {
        text.push_str(
            ". With a slow writer this is what a slot refilled while the receiver is still \
             writing it out looks like: post `empty` only after the chunk's data has gone to \
             the writer (the check `held-mid-message` looks at the slots directly); a sender \
             that fills a slot before its wait on `empty` returns does the same",
        );
    } else {
        text.push_str(
            ": a slot refilled before its chunk was written out, or a chunk's data read from \
             the wrong slot or offset",
        );
    }
    Err(Fail::failed(text))
}

/// The chunk (message, seq) of the stream, later than the one holding byte `first` of message
/// `index` and through the same slot, whose bytes at the same offset in the chunk are the
/// wrong bytes `got` has there; the next two messages are searched too.
fn later_chunk(
    got: &[u8],
    first: u64,
    index: usize,
    lens: &[u64],
    capacity: u64,
    seed: u64,
) -> Option<(usize, u64)> {
    // Too few bytes could match by chance.
    let probe = got.get(first as usize..(first as usize + 32).min(got.len()))?;
    if probe.len() < 16 {
        return None;
    }
    let offset = first % capacity;
    let stream = |message: usize, seq: u64| -> u64 {
        lens[..message]
            .iter()
            .map(|&l| chunks_of(l, capacity))
            .sum::<u64>()
            + seq
    };
    let here = stream(index, first / capacity);
    for (message, &len) in lens.iter().enumerate().skip(index).take(3) {
        let bytes = pattern_bytes(seed, message as u64, len as usize);
        for seq in 0..chunks_of(len, capacity) {
            let at = seq * capacity + offset;
            let there = stream(message, seq);
            if there <= here || (there - here) % 2 != 0 || at + probe.len() as u64 > len {
                continue;
            }
            if bytes[at as usize..at as usize + probe.len()] == *probe {
                return Some((message, seq));
            }
        }
    }
    None
}
