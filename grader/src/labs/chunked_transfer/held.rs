//! Checks that stop one side mid-message (at a hold point of `main.rs`) and look from outside
//! while nothing moves: what the segment's slots hold, how the other side waits, where the
//! sender's data source is asked to put the data, and how the data travelled.

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use rand::RngExt;

use super::data::{pattern_bytes, pattern_hash};
use super::deadline::{take_set_up, watch_take};
use super::layout::{Header, Sem, chunks_of, expected_capacity};
use super::observe::{
    describe_descriptors, expect_copied_in_memory, expect_descriptor_closed,
    expect_reads_into_slot, expect_writes_from_slot, io_of, maps_segment,
};
use super::pool::{
    Follow, FreeQueue, PairOptions, PairSeen, PoolNames, destroy_pool, follow_pair, pair_ready,
    pool_ready, spawn_pair, spawn_pool,
};
use super::signals::{
    force_eintrs, interrupt_waits, monotonic_deadline_ahead, posix_timers, waits_untimed,
};
use super::transfer::{Setup, Transfer, check_messages, start};
use crate::engine::diagnose::Activity;
use crate::engine::inspect::{IoCounters, ProcessView};
use crate::engine::tracer::{Action, Call, Tracer};
use crate::engine::waiting::{self, WaitRules};
use crate::engine::{Fail, Run};

/// The programs' timeout in the checks that hold one side: the other side waits for as long as
/// the grader looks, which is more than a second on a loaded machine.
const HELD_TIMEOUT_MS: u64 = 10_000;

/// The timeout of the pair that waits on an empty pool in `held-mid-message`: with 999 ms past
/// the whole seconds, now + the timeout carries a second from the nanoseconds unless now is in
/// the first millisecond of a second (the grader sends the pair's `go` 2 to 800 ms past one),
/// and the grader reads the deadline of its `mq_timedreceive()`.
const HELD_TAKE_TIMEOUT_MS: u64 = 10_999;

pub fn through_the_segment(run: &mut Run) -> Result<String, Fail> {
    // 1 to 15 bytes past a page boundary: the slots end at the boundary (64 + 2 slots of
    // (S - 64) / 2 rounded down to 8), and the object goes on into one more page, which a
    // mapping of the whole object covers and one of the slots only does not.
    let size = 4096 * run.rng().random_range(2..=16usize) + run.rng().random_range(1..=15usize);
    let capacity = expected_capacity(size) as u64;
    let full_chunks = run.rng().random_range(4..=8u64);
    let len = full_chunks * capacity + run.rng().random_range(1..capacity);
    // The sender stops before it reads the data of chunk `held + 1`, the message's last (the
    // short one, which a data source asked for "the rest" meets): the chunk before is then in
    // its slot, and nothing writes the slots until the grader lets the sender go on, however
    // the receiver handles its side.
    let held = full_chunks - 1;
    let mut setup = Setup::new(size, vec![len]);
    setup.save = false;
    setup.hold_at = Some((held + 1) * capacity);
    setup.timeout_ms = HELD_TIMEOUT_MS;
    let mut transfer = start(run, &setup)?;
    let inode = transfer.segment.metadata()?.ino();
    let pids = [transfer.sender.pid.as_raw(), transfer.receiver.pid.as_raw()];
    for (pid, who) in pids.iter().zip(["sender", "receiver"]) {
        maps_segment(*pid, inode, size as u64, who)?;
    }
    let io_before = pids.map(io_of);
    transfer.go()?;
    let holding = Transfer::holding_message(
        &mut transfer.sender,
        "sender",
        &format!("byte {} of a {len}-byte message", (held + 1) * capacity),
    )?;
    let field = |name: &str| {
        let value = holding.get(name)?;
        match value.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => value.parse().ok(),
        }
    };
    let (Some(at), Some(into), Some(room)) = (field("at"), field("into"), field("room")) else {
        return Err(Fail::Grader(
            "the sender's `holding` lacks `at`, `into` or `room`".into(),
        ));
    };
    let at = at.min(len);
    // Where the data source was to put the next chunk's bytes: in that chunk's slot.
    expect_reads_into_slot(pids[0], inode, size, held + 1, into, room).map_err(|fail| {
        let moved = io_of(pids[0]).since(io_before[0]);
        match fail {
            // More than the control messages: data written through a descriptor.
            Fail::Failed(what) if moved.written_bytes > at / 2 => Fail::failed(format!(
                "{what}; meanwhile the sender had written {} bytes with write()-like system \
                 calls ({}): the data went through a descriptor; the data must travel in the \
                 segment's slots, not through a file, a pipe or a buffer of its own",
                moved.written_bytes,
                describe_descriptors(pids[0], &transfer.name)
            )),
            fail => fail,
        }
    })?;
    let place = format!(
        "while the sender stood at byte {at} of a {len}-byte message (S={size}, C={capacity}), \
         with every byte before it handed over"
    );
    let expected = pattern_bytes(transfer.seed, 0, at as usize);
    let mut headers = Vec::new();
    let mut found = None;
    for slot in 0..2 {
        let header = transfer.mapped.header(slot);
        headers.push(format!("slot {slot}: {}", header.describe()));
        // The chunk that ends at `at`: the last one the sender handed over.
        if header.total != len
            || header.end != 0
            || header.len == 0
            || header.len > capacity.min(at)
        {
            continue;
        }
        let data = transfer.mapped.data(slot, header.len);
        let wrong = data
            .iter()
            .zip(&expected[(at - header.len) as usize..])
            .filter(|(a, b)| a != b)
            .count();
        found = Some((slot, header, wrong));
        if wrong == 0 {
            break;
        }
    }
    let (slot, header) = match found {
        Some((slot, header, 0)) => (slot, header),
        Some((slot, header, wrong)) => {
            let moved = io_of(pids[0]).since(io_before[0]);
            let syscalls = if moved.written_bytes > 0 {
                format!(
                    "; meanwhile the sender had written {} bytes with write()-like system calls \
                     ({})",
                    moved.written_bytes,
                    describe_descriptors(pids[0], &transfer.name)
                )
            } else {
                String::new()
            };
            return Err(Fail::failed(format!(
                "{place}, slot {slot} of the segment held the header of its last chunk (seq \
                 {}, {} bytes), but {wrong} of those bytes are not the message's{syscalls}: the \
                 data must travel in the segment's slots, not through a file, a pipe or a \
                 buffer of its own",
                header.seq, header.len
            )));
        }
        None => {
            return Err(Fail::failed(format!(
                "{place}, no slot of the segment held the header of the chunk that ends there \
                 ({}): chunk k goes in slot k % 2, its ChunkHeader (seq, total, len, end) at \
                 the start of the slot and its data right after it",
                headers.join("; ")
            )));
        }
    };
    // The slot the data source is filling: its header is still the chunk before's (two
    // back), not the one whose data has not been read yet.
    let next = held + 1;
    let next_header = transfer.mapped.header(next % 2);
    if next_header.seq == next && next_header.total == len {
        return Err(Fail::failed(format!(
            "{place}, inside its data source, which had been asked for the bytes of chunk \
             {next}, slot {} already carried chunk {next}'s header ({}) over bytes not read \
             yet: the sender writes a chunk's header before its data. Segment::send fills the \
             slot with the data first (read_exact into the slot), then writes the ChunkHeader, \
             then posts `full`: a header in a slot describes data that is already there (a data \
             source that fails half-way would leave a header for bytes that never came)",
            next % 2,
            next_header.describe()
        )));
    }
    transfer.sender.send("release", &[])?;
    check_messages(run, &mut transfer, &setup)?;
    transfer.both_done()?;
    for ((pid, before), who) in pids.iter().zip(io_before).zip(["sender", "receiver"]) {
        expect_copied_in_memory(who, *pid, io_of(*pid).since(before), len, &transfer.name)?;
    }
    for (pid, who) in pids.iter().zip(["sender", "receiver"]) {
        expect_descriptor_closed(who, *pid, &transfer.name)?;
    }
    transfer.exit()?;
    Ok(format!(
        "with the sender held at byte {at} of a {len}-byte message (S={size}, C={capacity}), \
         chunk {} ({} bytes) was in slot {slot}, header and data; both processes map the \
         segment, copy in memory (no data through system calls) and keep no descriptor of it; \
         the message arrived exactly",
        header.seq, header.len
    ))
}

/// A transfer whose receiver the grader holds while it writes out chunk `chunk` of the stream.
struct HeldReceiver<'a> {
    transfer: &'a Transfer,
    lens: &'a [u64],
    /// The chunk of the stream being written out.
    chunk: u64,
    /// The sender's I/O counters before the transfer began.
    sender_io: IoCounters,
}

impl HeldReceiver<'_> {
    /// Which chunk of the stream `header` describes, from the message lengths (distinct), if
    /// it is one of this transfer's.
    fn stream_index(&self, header: &Header) -> Option<u64> {
        let capacity = self.transfer.capacity;
        let mut before = 0;
        for &len in self.lens {
            let chunks = chunks_of(len, capacity);
            if header.total == len && header.seq < chunks {
                return Some(before + header.seq);
            }
            before += chunks;
        }
        None
    }

    /// Message index and seq of chunk `chunk` of the stream, and its header as it must be.
    fn expected(&self, chunk: u64) -> (usize, Header) {
        let capacity = self.transfer.capacity;
        let mut before = 0;
        for (index, &len) in self.lens.iter().enumerate() {
            let chunks = chunks_of(len, capacity);
            if chunk < before + chunks {
                let seq = chunk - before;
                let part = (len - seq * capacity).min(capacity);
                let end = u64::from(seq + 1 == chunks);
                return (
                    index,
                    Header {
                        seq,
                        total: len,
                        len: part,
                        end,
                    },
                );
            }
            before += chunks;
        }
        (
            0,
            Header {
                seq: 0,
                total: 0,
                len: 0,
                end: 0,
            },
        )
    }

    /// Fails unless the slot of the chunk being written out still holds it, header and bytes.
    fn slot_kept(&self) -> Result<(), Fail> {
        let mapped = &self.transfer.mapped;
        let (index, want) = self.expected(self.chunk);
        let capacity = self.transfer.capacity;
        let last = if want.end == 1 {
            format!(", the last chunk of message {}", index + 1)
        } else {
            String::new()
        };
        let place = format!(
            "while the receiver's writer was writing out chunk {} of message {} ({} bytes{last}; \
             the grader held it there)",
            want.seq,
            index + 1,
            want.len
        );
        let got = mapped.header(self.chunk);
        let bytes = pattern_bytes(self.transfer.seed, index as u64, self.lens[index] as usize);
        let start = (want.seq * capacity) as usize;
        let expected = &bytes[start..start + want.len as usize];
        let data = mapped.data(self.chunk, want.len);
        let wrong = data.iter().zip(expected).filter(|(a, b)| a != b).count();
        if got == want && wrong == 0 {
            return Ok(());
        }
        let (empty, full) = (mapped.value(Sem::Empty), mapped.value(Sem::Full));
        let latest = [self.chunk, self.chunk + 1]
            .iter()
            .filter_map(|&slot| self.stream_index(&mapped.header(slot)))
            .max()
            .unwrap_or(self.chunk);
        // The sender takes `empty` once per chunk it puts (latest + 1 of them) from a start of
        // 2; what is left says how often the receiver posted it.
        let posted = i64::from(empty) + latest as i64 + 1 - 2;
        let slot = self.chunk % 2;
        let semaphores = format!("semaphores: empty {empty}, full {full}");
        match self.stream_index(&got) {
            Some(found) if found > self.chunk && posted > self.chunk as i64 => {
                Err(Fail::failed(format!(
                    "{place}, slot {slot} already held {}, {} chunk(s) further on: the \
                     receiver had posted `empty` {posted} times, though only {} chunk(s) before \
                     this one were finished ({semaphores}). It posts `empty` for a chunk before \
                     its writer has finished with it{}: post `empty` only after the chunk's data \
                     has gone to the writer, straight from the slot (a copy taken first does not \
                     count: the slot stays the receiver's until the chunk is written out)",
                    got.describe(),
                    found - self.chunk,
                    self.chunk,
                    if want.end == 1 {
                        ", the last chunk of a message too"
                    } else {
                        ""
                    }
                )))
            }
            Some(found) if found > self.chunk => Err(Fail::failed(format!(
                "{place}, slot {slot} already held {}: the sender filled it again though the \
                 receiver had freed only {posted} slot(s) ({semaphores}): wait on `empty` \
                 before filling a slot",
                got.describe()
            ))),
            _ if got == want => {
                let pid = self.transfer.sender.pid.as_raw();
                let moved = io_of(pid).since(self.sender_io);
                let why = if moved.written_bytes > 0 {
                    format!(
                        "meanwhile the sender had written {} bytes with write()-like system \
                         calls ({}): the data must travel in the slot, right after its header",
                        moved.written_bytes,
                        describe_descriptors(pid, &self.transfer.name)
                    )
                } else {
                    "the chunk's data was put elsewhere, or changed while the receiver was \
                     writing it out: it lies in the slot, right after its header, untouched until \
                     the receiver posts `empty`"
                        .into()
                };
                Err(Fail::failed(format!(
                    "{place}, slot {slot} held the chunk's header, but {wrong} of its {} bytes \
                     there were not the message's ({semaphores}); {why}",
                    want.len
                )))
            }
            _ => Err(Fail::failed(format!(
                "{place}, slot {slot} held {} instead of that chunk ({}; {semaphores}): chunk k \
                 of the transfer lies in slot k % 2 until the receiver has written it out",
                got.describe(),
                want.describe()
            ))),
        }
    }
}

/// Releases the receiver of `transfer`, held writing out chunk `chunk` (its sender blocked on
/// a full ring), and holds it again right after its post of `empty` for that chunk (the futex
/// wake that frees its sender) until the sender has put chunk `chunk + 2` in the same slot and
/// posted `full`: a receiver that reads the slot after its post then reads the later chunk.
/// False when that could not be arranged (no ptrace, or no futex wake seen): the transfer then
/// runs on as it would.
fn release_past_post(transfer: &mut Transfer, chunk: u64) -> Result<bool, Fail> {
    let wake = Call::bits(
        libc::SYS_futex,
        1,
        libc::FUTEX_CMD_MASK as u64,
        libc::FUTEX_WAKE as u64,
    );
    let pid = transfer.receiver.pid.as_raw();
    let Some(mut tracer) = Tracer::attach(pid, wake, Action::HoldAfter)? else {
        transfer.receiver.send("release", &[])?;
        return Ok(false);
    };
    transfer.receiver.send("release", &[])?;
    // Its messages stay unread here: the transfer's own check reads them.
    let until = Instant::now() + Duration::from_secs(3);
    if !tracer.held_before(until)? {
        tracer.release();
        return Ok(false);
    }
    // The sender, woken, fills the slot again: chunk + 2's header there, `full` posted twice.
    let slot = chunk % 2;
    let until = Instant::now() + Duration::from_secs(3);
    let mut overwritten = false;
    while Instant::now() < until && !overwritten {
        overwritten = transfer.mapped.value(Sem::Full) == 2 && {
            let header = transfer.mapped.header(slot);
            header.seq == chunk + 2 && header.end == 1
        };
        std::thread::sleep(Duration::from_millis(1));
    }
    tracer.release();
    Ok(overwritten)
}

pub fn held_mid_message(run: &mut Run) -> Result<String, Fail> {
    // A: the receiver held while it writes out chunk k of a message, two chunks from its end,
    // so that a sender let loose has one more chunk for slot k % 2: the message's last.
    let size_a = run.rng().random_range(8192..=32_768);
    let c_a = expected_capacity(size_a) as u64;
    let n_a = run.rng().random_range(5..=8u64);
    let len_a = (n_a - 1) * c_a + run.rng().random_range(1..=c_a);
    let k = n_a - 3;
    let mut setup_a = Setup::new(size_a, vec![len_a]);
    setup_a.save = false;
    setup_a.timeout_ms = HELD_TIMEOUT_MS;
    setup_a.receiver_holds = vec![k * c_a];
    // B: the receiver held while it writes out the last chunk of a message another follows.
    let size_b = run.rng().random_range(4096..=16_384);
    let c_b = expected_capacity(size_b) as u64;
    let n_0 = run.rng().random_range(1..=3u64);
    let len_0 = (n_0 - 1) * c_b + run.rng().random_range(1..=c_b);
    let len_1 = run.rng().random_range(3 * c_b + 1..=5 * c_b);
    let mut setup_b = Setup::new(size_b, vec![len_0, len_1]);
    setup_b.save = false;
    setup_b.timeout_ms = HELD_TIMEOUT_MS;
    setup_b.receiver_holds = vec![(n_0 - 1) * c_b];
    // C: the sender held before chunk j + 1: its receiver has nothing to do.
    let size_c = run.rng().random_range(8192..=32_768);
    let c_c = expected_capacity(size_c) as u64;
    let n_c = run.rng().random_range(4..=6u64);
    let len_c = (n_c - 1) * c_c + run.rng().random_range(1..=c_c);
    let j = run.rng().random_range(0..n_c - 2);
    let mut setup_c = Setup::new(size_c, vec![len_c]);
    setup_c.save = false;
    setup_c.timeout_ms = HELD_TIMEOUT_MS;
    setup_c.hold_at = Some((j + 1) * c_c);
    // W: a pair that finds the pool empty (the grader took its only id).
    let pool_size = 8192;
    let names = PoolNames::new(run, "pool", 1);
    let mut pool = spawn_pool(run, &names, pool_size)?;
    pool_ready(&mut pool, &names, pool_size)?;
    let queue = FreeQueue::open(&names.queue)?;
    let ids = queue.take_all()?;
    let seed: u64 = run.rng().random();
    let len_w = run
        .rng()
        .random_range(1..=3 * expected_capacity(pool_size) as u64);
    let options = PairOptions {
        timeout_ms: Some(HELD_TAKE_TIMEOUT_MS),
        ..Default::default()
    };
    let mut pair = spawn_pair(run, &names.prefix, 0, seed, len_w, &options)?;
    pair_ready(&mut pair, 0)?;
    // Stopped at each clock read of its take, and at the entry of its mq_timedreceive(), to
    // see what the deadline it passes is made of.
    let take = watch_take(pair.pid.as_raw())?;

    let mut a = start(run, &setup_a)?;
    let mut b = start(run, &setup_b)?;
    let mut c = start(run, &setup_c)?;
    let io_a = io_of(a.sender.pid.as_raw());
    let io_b = io_of(b.sender.pid.as_raw());
    // Every wait watched below begins after this: the pair's take first, at its `go`. The
    // `go` goes 2 to 800 ms past a whole second of CLOCK_REALTIME (a wait of 100 ms on average
    // one time in five): a take that starts before the next second (within milliseconds, on
    // a machine however loaded) has 1 ms or more of nanoseconds, and now + 10.999 s must carry
    // a second into tv_sec; only a take in the first millisecond of a second would not.
    let realtime = || {
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME)
            .map(Duration::from)
            .map_err(|e| Fail::Grader(format!("clock_gettime: {e}")))
    };
    let nanos = realtime()?.subsec_nanos();
    if !(2_000_000..800_000_000).contains(&nanos) {
        std::thread::sleep(Duration::from_nanos(u64::from(
            (1_002_000_000 - nanos) % 1_000_000_000,
        )));
    }
    let since = realtime()?;
    pair.send("go", &[])?;
    let take = match take {
        Some(tracer) => take_set_up(
            &mut pair,
            tracer,
            "a pair taking a segment from an empty pool",
            Duration::from_millis(HELD_TAKE_TIMEOUT_MS),
            since,
        )?,
        None => None,
    };
    a.go()?;
    b.go()?;
    c.go()?;
    let holding_a = Transfer::holding_message(
        &mut a.receiver,
        "receiver",
        &format!("the write of chunk {k}"),
    )?;
    let holding_b = Transfer::holding_message(
        &mut b.receiver,
        "receiver",
        "the write of the last chunk of message 1",
    )?;
    Transfer::holding(
        &mut c.sender,
        "sender",
        &format!("byte {} of a {len_c}-byte message", (j + 1) * c_c),
    )?;

    // Now every one of these has nothing to do until the grader lets the other side go on.
    let waiting = [
        (
            a.sender.pid.as_raw(),
            "the sender whose receiver the grader holds mid-message",
            Activity::Futex,
        ),
        (
            b.sender.pid.as_raw(),
            "the sender whose receiver the grader holds at the end of a message",
            Activity::Futex,
        ),
        (
            c.receiver.pid.as_raw(),
            "the receiver whose sender the grader holds mid-message",
            Activity::Futex,
        ),
        (
            pair.pid.as_raw(),
            "a pair taking a segment from an empty pool",
            Activity::MqReceive,
        ),
    ];
    let pids: Vec<i32> = waiting.iter().map(|w| w.0).collect();
    let role = |view: &ProcessView| {
        waiting
            .iter()
            .find(|w| w.0 == view.pid)
            .map_or("a process of the check".to_string(), |w| w.1.to_string())
    };
    let waiters = waiting::expect_blocked(
        &pids,
        &role,
        WaitRules::default(),
        "wait in sem_timedwait() on the segment's semaphore (and for a free segment in \
         mq_timedreceive()), which sleeps until the other side posts",
    )?;
    // What the slots hold first: a sender that had nothing left to send waits elsewhere.
    HeldReceiver {
        transfer: &a,
        lens: &setup_a.lens,
        chunk: k,
        sender_io: io_a,
    }
    .slot_kept()?;
    HeldReceiver {
        transfer: &b,
        lens: &setup_b.lens,
        chunk: n_0 - 1,
        sender_io: io_b,
    }
    .slot_kept()?;
    // The buffer each held writer was given: the data of its chunk's slot, in the receiver's
    // own mapping of the segment (after the slots: a copy with `empty` posted early is told
    // by what the slot holds).
    for (transfer, holding, chunk, size) in [
        (&a, &holding_a, k, size_a),
        (&b, &holding_b, n_0 - 1, size_b),
    ] {
        let field = |name: &str| {
            let value = holding.get(name)?;
            match value.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => value.parse().ok(),
            }
        };
        let (Some(from), Some(len)) = (field("from"), field("len")) else {
            return Err(Fail::Grader(
                "the receiver's `holding` lacks `from` or `len`".into(),
            ));
        };
        let inode = transfer.segment.metadata()?.ino();
        let pid = transfer.receiver.pid.as_raw();
        expect_writes_from_slot(pid, inode, size, chunk, from, len)?;
    }

    for waiter in &waiters {
        let Some((_, who, want)) = waiting.iter().find(|w| w.0 == waiter.pid) else {
            continue;
        };
        if waiter.activity != *want && waiter.activity != Activity::Blocked {
            let call = if *want == Activity::Futex {
                "sem_timedwait() on the segment's semaphore"
            } else {
                "mq_timedreceive() on the free queue"
            };
            return Err(Fail::failed(format!(
                "{who} (pid {}) waited {}, not in {call}: that is where it must wait",
                waiter.pid,
                waiter.activity.describe()
            )));
        }
    }
    // A semaphore wait with no timeout at all blocks for ever once the other side is gone,
    // whatever may interrupt it meanwhile.
    for (pid, who, want) in &waiting {
        if *want == Activity::Futex && waits_untimed(*pid) {
            let timers = match posix_timers(*pid) {
                Some(timers) => format!(
                    ", and it has POSIX timers of its own (/proc/{pid}/timers: {timers}): a \
                     timer's signal that interrupts an untimed wait is no deadline of that wait"
                ),
                None => String::new(),
            };
            return Err(Fail::failed(format!(
                "{who} (pid {pid}) sleeps in a futex wait with no deadline (/proc/{pid}/syscall: \
                 the wait's timeout argument is NULL, as sem_wait() makes it){timers}: a wait \
                 with no deadline blocks for ever if the other side dies. Wait in \
                 sem_timedwait() with an absolute deadline (CLOCK_REALTIME now + the timeout)"
            )));
        }
    }
    // A semaphore wait whose deadline is on the monotonic clock is no sem_timedwait(): its
    // deadline, read as the CLOCK_REALTIME time the handout asks for, passed long ago.
    for (pid, who, want) in &waiting {
        if *want == Activity::Futex
            && let Some(ahead) = monotonic_deadline_ahead(*pid)
        {
            return Err(Fail::failed(format!(
                "{who} (pid {pid}) sleeps in a futex wait whose deadline is on CLOCK_MONOTONIC \
                 (/proc/{pid}/syscall: FUTEX_WAIT_BITSET without FUTEX_CLOCK_REALTIME, as \
                 sem_clockwait(CLOCK_MONOTONIC) makes; the deadline lies {} ms past the \
                 monotonic clock's now), not on CLOCK_REALTIME: the wait is sem_timedwait() with \
                 an absolute CLOCK_REALTIME deadline, now + the timeout",
                ahead.as_millis()
            )));
        }
    }
    // A signal interrupts every one of these waits (its handler does nothing): each must wait
    // again, until the deadline it had.
    let held = Duration::from_millis(HELD_TIMEOUT_MS);
    interrupt_waits(
        &mut [
            (&mut a.sender, waiting[0].1, held),
            (&mut b.sender, waiting[1].1, held),
            (&mut c.receiver, waiting[2].1, held),
            (
                &mut pair,
                waiting[3].1,
                Duration::from_millis(HELD_TAKE_TIMEOUT_MS),
            ),
        ],
        since,
    )?;
    // Then EINTR again and again, faster than signals come: a wait that a signal interrupts
    // is retried however often, by the program itself.
    force_eintrs(&mut c.receiver, waiting[2].1, true)?;
    force_eintrs(&mut pair, waiting[3].1, false)?;
    // A deadline short of the timeout by less than the waits above tell: judged against the
    // pair's own clock reads.
    if let Some(take) = &take {
        take.counted_from_its_start()?;
    }

    // Its writer holds chunk k, whose header it has checked (end = 0): an end = 1 put in the
    // slot now is seen only by a receiver that reads the header again.
    a.mapped.set_end(k % 2, 1);
    let overwritten = release_past_post(&mut a, k)?;
    b.receiver.send("release", &[])?;
    c.sender.send("release", &[])?;
    queue.put_all(&ids)?;
    check_messages(run, &mut a, &setup_a).map_err(|fail| match fail {
        Fail::Failed(what) => {
            let after_post = if overwritten {
                format!(
                    ", and held the receiver right after it posted `empty` for chunk {k}, until \
                     the sender had written the message's last chunk (end = 1) into that slot"
                )
            } else {
                String::new()
            };
            Fail::failed(format!(
                "while the receiver's writer was held writing out chunk {k} (the last but two \
                 of the message; its header, read and checked before, said end = 0), the \
                 grader set end = 1 in that slot's header{after_post}; then: {what} Only a \
                 receiver that reads the slot's header again after checking it sees either: \
                 it acts on a header it never checked (and, after its post, on the sender's \
                 next chunk, the slot being the sender's once `empty` is posted). Read each \
                 header once, check that copy, and take the chunk's len and end from it alone"
            ))
        }
        fail => fail,
    })?;
    for (transfer, setup) in [(&mut b, &setup_b), (&mut c, &setup_c)] {
        check_messages(run, transfer, setup)?;
    }
    for transfer in [a, b, c] {
        transfer.finish()?;
    }
    let want = pattern_hash(seed, 0, len_w);
    let how = Follow {
        index: 0,
        want: &want,
        free_after_take: 0..=0,
        segments: 1,
        failures_expected: false,
    };
    follow_pair(&mut pair, &how, &mut PairSeen::default(), |seen| seen.done)?;
    pair.wait()?;
    destroy_pool(&mut pool, &names, "after its only pair", 1)?;
    Ok(format!(
        "with receivers held writing out chunk {k} of a message and the last chunk of another, \
         their senders blocked on `empty` and the slots kept those chunks; with a sender held, \
         its receiver blocked on `full`; a pair on an empty pool blocked in mq_timedreceive() \
         and took the id once it was back; each waited again when SIGUSR1 interrupted it"
    ))
}
