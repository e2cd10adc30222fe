//! The timeouts: a peer killed mid-message is an error within the timeout, and a live peer
//! that is merely slow is none, however long the whole message takes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ipc_labs_driver::Message;
use nix::sys::signal::Signal;

use super::data::pattern_hash;
use super::layout::{Header, MIN_SEGMENT, Mapped, Sem, expected_capacity};
use super::stalled::StalledReceiver;
use super::transfer::{Sender, Setup, Transfer, failure, start, start_sender};
use super::{ORPHANED_RECEIVER, ORPHANED_SENDER};
use crate::engine::{Fail, Proc, Run, force};

/// Each wait's timeout in this check.
const TIMEOUT_MS: u64 = 500;
/// How long the slow side of a live transfer takes per chunk.
const SLOW_MS: u64 = 20;
/// Chunks of a live transfer: it lasts twice the timeout at least.
const LIVE_CHUNKS: u64 = 2 * TIMEOUT_MS / SLOW_MS;

pub fn peer_killed(run: &mut Run) -> Result<String, Fail> {
    // Side by side with the rest: a receiver whose writer is slow, the grader its sender.
    let writer = SlowWriter::start(run)?;
    // And its twin: a sender whose data source is slow, the grader its receiver.
    let reader = SlowReader::start(run)?;
    // And a sender whose receiver (the grader) takes a chunk during its wait, then stalls.
    let stalled = StalledReceiver::start(run)?;
    // And a pool pair whose sender is killed mid-message.
    let orphaned = super::orphaned_pair::OrphanedPair::start(run)?;
    std::thread::scope(|scope| {
        let orphaned = scope.spawn(move || orphaned.run());
        let writer = scope.spawn(move || writer.run());
        let reader = scope.spawn(move || reader.run());
        let stalled = scope.spawn(move || stalled.run());
        let rest = killed_and_live(run);
        let writer = writer
            .join()
            .unwrap_or_else(|_| Err(Fail::Grader("the slow writer's thread panicked".into())));
        let reader = reader
            .join()
            .unwrap_or_else(|_| Err(Fail::Grader("the slow reader's thread panicked".into())));
        let stalled = stalled.join().unwrap_or_else(|_| {
            Err(Fail::Grader(
                "the stalled receiver's thread panicked".into(),
            ))
        });
        let orphaned = orphaned
            .join()
            .unwrap_or_else(|_| Err(Fail::Grader("the orphaned pair's thread panicked".into())));
        let (rest, writer, reader, stalled) = (rest?, writer?, reader?, stalled?);
        let orphaned = orphaned?;
        Ok(format!("{rest}; {writer}; {reader}; {stalled}; {orphaned}"))
    })
}

/// The sender's data source takes this long per read in the slow-reader case ...
const READER_MS: u64 = 600;
/// ... the grader, as its receiver, frees a slot this long after the sender's post of `full`
/// for chunk 1 (the ring then full) ...
const READER_GAP_MS: u64 = 200;
/// ... and the sender's timeout is this: longer than the gap by far (a loaded machine),
/// shorter than the data source's time and the gap together (a deadline taken before the data
/// source ran).
const READER_TIMEOUT_MS: u64 = 700;

/// A sender whose data source is slow, the grader its receiver, the twin of [`SlowWriter`]: a
/// 3-chunk message; the grader takes chunks 0 and 1 as they come and frees the slot of chunk 0
/// [`READER_GAP_MS`] after the post of `full` for chunk 1, so that the sender's wait on `empty`
/// for chunk 2 lasts far less than its timeout while the time since its previous wait returned
/// (the data source's, then the gap) is more.
struct SlowReader {
    sender: Sender,
}

impl SlowReader {
    fn start(run: &mut Run) -> Result<SlowReader, Fail> {
        let c = expected_capacity(MIN_SEGMENT) as u64;
        let mut setup = Setup::new(MIN_SEGMENT, vec![2 * c + 1]);
        setup.save = false;
        setup.timeout_ms = READER_TIMEOUT_MS;
        setup.sender_slow_ms = READER_MS;
        let sender = start_sender(run, &setup)?;
        // The grader is the receiver: it unlinks the name once it has the segment.
        let _ = nix::sys::mman::shm_unlink(sender.name.as_str());
        Ok(SlowReader { sender })
    }

    /// Waits (up to a few seconds) for the sender's post of `full` for chunk `chunk`; what the
    /// sender said instead, if it said anything first.
    fn take_full(&mut self, chunk: u64, setting: &str) -> Result<Option<Message>, Fail> {
        let until = Instant::now() + Duration::from_millis(READER_MS + 5000);
        loop {
            if self
                .sender
                .mapped
                .wait(Sem::Full, Duration::from_millis(10))
            {
                return Ok(None);
            }
            if let Some(said) = self.sender.proc.recv_before(Instant::now())? {
                // A post made after the look at `full` above and before the message: the
                // message comes after the chunk, and is read again later.
                if self.sender.mapped.wait(Sem::Full, Duration::ZERO) {
                    self.sender.proc.put_back(said);
                    return Ok(None);
                }
                return Ok(Some(said));
            }
            if Instant::now() >= until {
                return Err(Fail::failed(format!(
                    "{setting}: the sender did not post `full` for chunk {chunk} within {} ms",
                    READER_MS + 5000
                )));
            }
        }
    }

    fn run(mut self) -> Result<String, Fail> {
        let setting = format!(
            "a sender whose data source takes {READER_MS} ms per read (send --slow-ms), \
             timeout {READER_TIMEOUT_MS} ms, the grader its receiver: a message of 3 chunks; \
             the grader took chunks 0 and 1 as they came and freed the slot of chunk 0 \
             {READER_GAP_MS} ms after the sender's post of `full` for chunk 1"
        );
        let before = |chunk: u64, said: Message| {
            Fail::failed(format!(
                "{setting}: the sender said `{}` ({}) before it posted `full` for chunk {chunk}",
                said.kind,
                failure(&said)
            ))
        };
        self.sender.proc.send("go", &[])?;
        for chunk in 0..2 {
            if let Some(said) = self.take_full(chunk, &setting)? {
                return Err(before(chunk, said));
            }
        }
        let full = Instant::now();
        // The ring is full: the sender's wait on `empty` for chunk 2 starts now and lasts the
        // gap, far below its timeout.
        let early = self
            .sender
            .proc
            .recv_before(full + Duration::from_millis(READER_GAP_MS))?;
        let said = match early {
            Some(said) => Some(said),
            None => {
                self.sender.mapped.post(Sem::Empty);
                self.take_full(2, &setting)?
            }
        };
        if let Some(said) = said {
            let after = full.elapsed().as_millis();
            if said.get("kind") == Some("timeout") && after < u128::from(READER_TIMEOUT_MS) {
                return Err(Fail::failed(format!(
                    "{setting}: the sender said `failed` ({}) {after} ms after its post of \
                     `full` for chunk 1: its wait on `empty` for chunk 2, which starts after that post, gave \
                     up sooner than its timeout. The data source's time was counted against \
                     it: the deadline was taken before the data source ran (when the previous \
                     wait returned, or once for the whole message). The timeout counts from the \
                     start of each wait: take now + the timeout right before each \
                     sem_timedwait()",
                    failure(&said)
                )));
            }
            return Err(before(2, said));
        }
        self.sender.mapped.post(Sem::Empty);
        self.sender.mapped.post(Sem::Empty);
        let done = self.sender.proc.recv_any()?;
        if done.kind != "done" {
            return Err(Fail::failed(format!(
                "{setting}: the grader took all 3 chunks, and the sender said `{}` ({}) instead \
                 of `done`",
                done.kind,
                failure(&done)
            )));
        }
        self.sender.proc.send("exit", &[])?;
        self.sender.proc.wait()?;
        Ok(format!(
            "a sender whose data source takes {READER_MS} ms a read waited for a slot freed \
             {READER_GAP_MS} ms after its post of `full` (timeout {READER_TIMEOUT_MS} ms)"
        ))
    }
}

/// The receiver's writer takes this long per write in the slow-writer case ...
const WRITER_MS: u64 = 900;
/// ... the grader, as its sender, puts the next chunk this long after the receiver's post of
/// `empty` ...
const GAP_MS: u64 = 300;
/// ... and the receiver's timeout is this: longer than the gap by far (a loaded machine), shorter
/// than the writer's time and the gap together (a deadline taken before the writer ran).
const WRITER_TIMEOUT_MS: u64 = 1000;

/// A receiver whose writer is slow, on a segment the grader made and sends through itself: a
/// 2-chunk message whose chunk 1 comes [`GAP_MS`] after the post of `empty` for chunk 0, so
/// that the wait for chunk 1 lasts far less than its timeout while the time since chunk 0
/// came (the writer's, then the gap) is more.
struct SlowWriter {
    receiver: Proc,
    mapped: Mapped,
    capacity: u64,
    data: Vec<u8>,
}

impl SlowWriter {
    fn start(run: &mut Run) -> Result<SlowWriter, Fail> {
        let name = run.ipc_name("slow-writer");
        let mapped = Mapped::create(run, &name, MIN_SEGMENT, true)?;
        let capacity = mapped.capacity();
        let data = run.random_bytes(capacity as usize);
        let mut args = super::headers::one_message_receiver(&name, WRITER_TIMEOUT_MS);
        args.extend(["--slow-ms".to_string(), WRITER_MS.to_string()]);
        let mut receiver = run.spawn(&args)?;
        receiver.set_roles(|_| "the receiver whose writer is slow".into());
        let ready = receiver.recv_any()?;
        if ready.kind != "ready" {
            return Err(Fail::failed(format!(
                "the receiver could not open a segment the grader made as the handout lays it \
                 out: it said `{}` ({})",
                ready.kind,
                failure(&ready)
            )));
        }
        Ok(SlowWriter {
            receiver,
            mapped,
            capacity,
            data,
        })
    }

    fn run(mut self) -> Result<String, Fail> {
        let c = self.capacity;
        let total = c + 1;
        // The grader is the sender: it takes both slots, as a sender's waits on `empty` do.
        for _ in 0..2 {
            self.mapped.wait(Sem::Empty, Duration::from_secs(1));
        }
        let first = Header {
            seq: 0,
            total,
            len: c,
            end: 0,
        };
        self.mapped.put(0, first, &self.data);
        self.receiver.send("go", &[])?;
        let setting = format!(
            "a receiver whose writer takes {WRITER_MS} ms per write (recv --slow-ms), timeout \
             {WRITER_TIMEOUT_MS} ms, the grader its sender: a message of {total} bytes, chunk 0 \
             ({c} bytes) at once, chunk 1 (1 byte, end = 1) {GAP_MS} ms after the receiver's \
             post of `empty` for chunk 0"
        );
        // The post of `empty` for chunk 0, once its writer is done.
        let until = Instant::now() + Duration::from_millis(WRITER_MS + 5000);
        loop {
            if self.mapped.wait(Sem::Empty, Duration::from_millis(10)) {
                break;
            }
            if let Some(said) = self.receiver.recv_before(Instant::now())? {
                return Err(Fail::failed(format!(
                    "{setting}: the receiver said `{}` ({}) before it posted `empty` for chunk \
                     0",
                    said.kind,
                    failure(&said)
                )));
            }
            if Instant::now() >= until {
                return Err(Fail::failed(format!(
                    "{setting}: the receiver did not post `empty` for chunk 0 within {} ms",
                    WRITER_MS + 5000
                )));
            }
        }
        let freed = Instant::now();
        // Chunk 1 comes the gap later: the wait for it lasts that long, far below its timeout.
        let early = self
            .receiver
            .recv_before(freed + Duration::from_millis(GAP_MS))?;
        let answer = match early {
            Some(said) => (said, false),
            None => {
                let last = Header {
                    seq: 1,
                    total,
                    len: 1,
                    end: 1,
                };
                self.mapped.put(1, last, &self.data[..1]);
                (self.receiver.recv_any()?, true)
            }
        };
        let (said, posted) = answer;
        let after = freed.elapsed().as_millis();
        if said.kind == "message" && said.get("len") == Some(total.to_string().as_str()) {
            self.receiver.send("exit", &[])?;
            self.receiver.wait()?;
            return Ok(format!(
                "a receiver whose writer takes {WRITER_MS} ms a write waited for a chunk that \
                 came {GAP_MS} ms after its post of `empty` (timeout {WRITER_TIMEOUT_MS} ms)"
            ));
        }
        if said.get("kind") == Some("timeout") && after < u128::from(WRITER_TIMEOUT_MS) {
            let when = if posted {
                ""
            } else {
                "before the grader had even put chunk 1 in the segment, "
            };
            return Err(Fail::failed(format!(
                "{setting}: the receiver said `failed` ({}) {when}{after} ms after its post of \
                 `empty` for chunk 0: its wait for chunk 1, which starts after that post, gave \
                 up sooner than its timeout. The writer's time was counted against it: the \
                 deadline was taken before the writer ran (when chunk 0 came, or once for the \
                 whole message). The timeout \
                 counts from the start of each wait: take now + the timeout right before each \
                 sem_timedwait()",
                failure(&said)
            )));
        }
        Err(Fail::failed(format!(
            "{setting}: the receiver said `{}` ({}, len={}) {after} ms after its post of `empty` \
             for chunk 0, where message 1 ({total} bytes) was due",
            said.kind,
            failure(&said),
            said.get("len").unwrap_or("?")
        )))
    }
}

/// The killed peers and the live slow transfers, four transfers side by side.
fn killed_and_live(run: &mut Run) -> Result<String, Fail> {
    let size = 65_536;
    let capacity = expected_capacity(size) as u64;
    let setup = |lens: Vec<u64>| {
        let mut setup = Setup::new(size, lens);
        setup.save = false;
        setup.timeout_ms = TIMEOUT_MS;
        setup
    };
    // All four at once: their timeouts run side by side.
    // The sender dies after a few chunks; the receiver's writer is slow (256 chunks at 20 ms
    // each), so that the sender is still mid-message, blocked on a full ring, when it dies.
    let mut lost_sender = setup(vec![256 * capacity]);
    lost_sender.slow_ms = SLOW_MS;
    lost_sender.progress_after = Some(4 * capacity);
    // The receiver dies after the first message, in the middle of the second.
    let mut lost_receiver = setup(vec![capacity, 256 * capacity]);
    lost_receiver.slow_ms = SLOW_MS;
    // Live and slow: the receiver's writer, then the sender's data source, takes 20 ms a chunk,
    // so that the message lasts twice the timeout while no single wait lasts more than 20 ms.
    let mut slow_writer = setup(vec![LIVE_CHUNKS * capacity]);
    slow_writer.slow_ms = SLOW_MS;
    let mut slow_source = setup(vec![LIVE_CHUNKS * capacity]);
    slow_source.sender_slow_ms = SLOW_MS;

    let mut k1 = start(run, &lost_sender)?;
    let mut k2 = start(run, &lost_receiver)?;
    let mut l1 = start(run, &slow_writer)?;
    let mut l2 = start(run, &slow_source)?;
    let started = Instant::now();
    for transfer in [&mut k1, &mut k2, &mut l1, &mut l2] {
        transfer.go()?;
    }

    expect_live(&mut k1.sender, "progress", "the sender", started)?;
    k1.sender.kill_tree();
    let killed = Instant::now();
    k1.receiver.set_roles(|_| ORPHANED_RECEIVER.into());
    // The orphaned receiver gets SIGUSR1 (a handler that does nothing) more often than its
    // timeout, until it answers or its time is well past: a wait that a signal interrupts must
    // keep the deadline it had, or the signals would keep a dead peer from ever timing out.
    let receiver_pid = k1.receiver.pid.as_raw();
    let stop = AtomicBool::new(false);
    // What the live transfers said meanwhile, with when.
    let mut early = Vec::new();
    let (answers, signals) = std::thread::scope(|scope| {
        let pester =
            scope.spawn(|| interrupt_until(receiver_pid, &stop, killed, killed + orphan_bound()));
        let live = [&mut l1, &mut l2];
        let answers = orphan_answers(run, &mut k1, &mut k2, killed, started, live, &mut early);
        stop.store(true, Ordering::SeqCst);
        (answers, pester.join().unwrap_or_default())
    });
    let [(answer, waited), (sender_answer, sender_waited)] = answers?;
    orphan_failed(
        &answer,
        "the sender was killed after a few chunks of a message, and its receiver",
        "the receiver must not report a message it did not get whole",
        waited,
        Some((&signals, sender_waited)),
    )?;
    let status = k1.receiver.wait()?;
    if status.success() {
        return Err(Fail::Grader("the receiver failed but exited 0".into()));
    }
    orphan_failed(
        &sender_answer,
        "the receiver was killed early in a message, and the sender, whose ring stayed full,",
        "a sender whose ring stays full must give up after its timeout",
        Duration::ZERO,
        None,
    )?;
    k2.sender.wait()?;

    let mut lives = [
        Live {
            transfer: &mut l1,
            len: slow_writer.lens[0],
            slow: "receiver's writer",
            sender_done: false,
            receiver_done: false,
        },
        Live {
            transfer: &mut l2,
            len: slow_source.lens[0],
            slow: "sender's data source",
            sender_done: false,
            receiver_done: false,
        },
    ];
    follow_live(run, &mut lives, started, early)?;
    l1.exit()?;
    l2.exit()?;
    Ok(format!(
        "the orphaned receiver failed {} ms after its sender was killed, the orphaned sender \
         failed too (kind=timeout, timeout {TIMEOUT_MS} ms); two live transfers of {} ms (one \
         side {SLOW_MS} ms a chunk) arrived whole",
        waited.as_millis(),
        LIVE_CHUNKS * SLOW_MS
    ))
}

/// Waits for `who`'s `kind` while its peer is alive and busy; a timeout sooner than the
/// timeout it was given (since `started`) is a deadline cut short.
fn expect_live(proc: &mut Proc, kind: &str, who: &str, started: Instant) -> Result<Message, Fail> {
    let answer = proc.recv_any()?;
    if answer.kind == kind {
        return Ok(answer);
    }
    let after = started.elapsed();
    let what = format!(
        "before any peer was killed, {who} said `{}` ({}) {} ms after the transfer began, \
         where `{kind}` was due",
        answer.kind,
        failure(&answer),
        after.as_millis()
    );
    if answer.get("kind") == Some("timeout") && after < Duration::from_millis(TIMEOUT_MS) {
        return Err(Fail::failed(format!(
            "{what}: it timed out sooner than the {TIMEOUT_MS} ms it was given, with its peer \
             alive and at work. Its deadline is short of now + the \
             timeout: the sub-second part dropped (as_secs() alone makes 500 ms no time at \
             all), or a deadline not counted from now"
        )));
    }
    Err(Fail::failed(what))
}

/// How long after the kill an orphan may take to give up: the two chunks in flight (20 ms
/// each), then its timeout, with room for a loaded machine.
fn orphan_bound() -> Duration {
    Duration::from_millis(TIMEOUT_MS + 1500)
}

/// How often the orphaned receiver gets SIGUSR1: five times per timeout.
const SIGNAL_EVERY: Duration = Duration::from_millis(TIMEOUT_MS / 5);

/// The SIGUSR1 signals the grader sent an orphan while it waited.
#[derive(Default)]
struct Signals {
    sent: u64,
    /// When the last one went, counted from the kill.
    last: Option<Duration>,
}

/// Sends SIGUSR1 to every thread of `pid` every [`SIGNAL_EVERY`] from `killed` until `stop` or
/// `until`.
fn interrupt_until(pid: i32, stop: &AtomicBool, killed: Instant, until: Instant) -> Signals {
    let mut signals = Signals::default();
    while !stop.load(Ordering::SeqCst) && Instant::now() < until {
        if force::signal_every_thread(pid, Signal::SIGUSR1) > 0 {
            signals.sent += 1;
            signals.last = Some(killed.elapsed());
        }
        std::thread::sleep(SIGNAL_EVERY);
    }
    signals
}

/// Kills `k2`'s receiver after its first message, then follows both orphans (`k1`'s receiver,
/// whose sender was killed at `killed`, and `k2`'s sender) until each has answered; each answer
/// with how long after its peer's kill it came.
fn orphan_answers(
    run: &Run,
    k1: &mut Transfer,
    k2: &mut Transfer,
    killed: Instant,
    started: Instant,
    mut live: [&mut Transfer; 2],
    early: &mut Vec<Said>,
) -> Result<[(Message, Duration); 2], Fail> {
    expect_live(&mut k2.receiver, "message", "the receiver", started)?;
    k2.receiver.kill_tree();
    let receiver_killed = Instant::now();
    k2.sender.set_roles(|_| ORPHANED_SENDER.into());
    const LOOK: Duration = Duration::from_millis(2);
    let mut first = None;
    let mut second = None;
    while first.is_none() || second.is_none() {
        // A live transfer's news is judged by when it came: keep it with its time.
        for (index, transfer) in live.iter_mut().enumerate() {
            for (receiver, proc) in [
                (false, &mut transfer.sender),
                (true, &mut transfer.receiver),
            ] {
                // A side that has said its last word may have exited since: not asked again.
                let ended = early.iter().any(|said| {
                    said.index == index
                        && said.receiver == receiver
                        && matches!(said.message.kind.as_str(), "done" | "failed")
                });
                if ended {
                    continue;
                }
                if let Some(message) = proc.recv_before(Instant::now())? {
                    early.push(Said {
                        index,
                        receiver,
                        message,
                        after: started.elapsed(),
                    });
                }
            }
        }
        // Past the check's time, wait for good: the engine then tells what each one is doing.
        let late = Instant::now() >= run.deadline();
        if first.is_none() {
            let answer = if late {
                Some(k1.receiver.recv_any()?)
            } else {
                k1.receiver.recv_before(Instant::now() + LOOK)?
            };
            first = answer.map(|a| (a, killed.elapsed()));
        }
        if second.is_none() {
            let answer = if late {
                Some(k2.sender.recv_any()?)
            } else {
                k2.sender.recv_before(Instant::now() + LOOK)?
            };
            second = answer.map(|a| (a, receiver_killed.elapsed()));
        }
    }
    Ok([first.expect("waited for"), second.expect("waited for")])
}

/// Fails unless a side whose peer was killed (`who` ... said) reported `failed` with
/// kind=timeout, `waited` at most a little more than the timeout after the kill (when known).
/// `interrupted`: the signals it got while it waited, and how long the other orphan, which got
/// none, took to give up (to tell the signals from a timeout that is simply too long).
fn orphan_failed(
    answer: &Message,
    who: &str,
    rule: &str,
    waited: Duration,
    interrupted: Option<(&Signals, Duration)>,
) -> Result<(), Fail> {
    let signals = interrupted.map(|(s, _)| s).filter(|s| s.sent > 0);
    if answer.kind != "failed" {
        return Err(Fail::failed(format!(
            "{who} said `{}`: {rule}",
            answer.kind
        )));
    }
    if answer.get("kind") != Some("timeout") {
        // Sooner than the timeout, the wait did not time out: a signal may have ended it.
        let early = waited < Duration::from_millis(TIMEOUT_MS);
        let error = answer.get("error").unwrap_or("");
        let by_signal = error.contains("EINTR") || error.contains("nterrupted");
        let during = match signals.filter(|_| early) {
            Some(s) if by_signal => format!(
                ". It gave up {} ms after the kill, sooner than its timeout, while the grader sent \
                 it SIGUSR1 every {} ms ({} signals; the handler does nothing), and its error \
                 names the interruption: a wait that a signal interrupts fails with EINTR and \
                 must be retried until its deadline",
                waited.as_millis(),
                SIGNAL_EVERY.as_millis(),
                s.sent
            ),
            Some(s) => format!(
                ". It gave up {} ms after the kill, sooner than its timeout, while the grader sent \
                 it SIGUSR1 every {} ms ({} signals; the handler does nothing)",
                waited.as_millis(),
                SIGNAL_EVERY.as_millis(),
                s.sent
            ),
            None => String::new(),
        };
        return Err(Fail::failed(format!(
            "{who} said `failed` ({}): a peer that hands over nothing within the timeout is \
             TransferError::Timeout (kind=timeout){during}",
            failure(answer)
        )));
    }
    let bound = orphan_bound();
    if waited > bound {
        let late = format!(
            "{who} gave up {} ms after the kill, though it was given a timeout of {TIMEOUT_MS} ms",
            waited.as_millis()
        );
        if let (Some(signals), Some((_, unsignalled))) = (signals, interrupted)
            && unsignalled <= bound
        {
            let after_last = signals.last.map_or(String::new(), |last| {
                format!(
                    ", {} ms after the last",
                    waited.saturating_sub(last).as_millis()
                )
            });
            return Err(Fail::failed(format!(
                "{late}: the grader sent it SIGUSR1 every {} ms for {} ms after the kill ({} \
                 signals{after_last}), and it timed out only once they stopped, while the other \
                 orphan, a sender that got no signals, gave up {} ms after its receiver was \
                 killed: each signal started its timeout over. A wait that a signal interrupts \
                 (EINTR) is retried with the deadline it had: compute now + the timeout once, \
                 before the first sem_timedwait(), not again for every retry",
                SIGNAL_EVERY.as_millis(),
                bound.as_millis(),
                signals.sent,
                unsignalled.as_millis()
            )));
        }
        return Err(Fail::failed(format!(
            "{late}: every wait gives up after the timeout it is given, counted from the start \
             of that wait (an absolute deadline: now + the timeout)"
        )));
    }
    Ok(())
}

/// A live transfer whose `slow` side takes 20 ms a chunk, followed until both say `done`.
struct Live<'a> {
    transfer: &'a mut Transfer,
    len: u64,
    /// The slow side, in words.
    slow: &'static str,
    sender_done: bool,
    receiver_done: bool,
}

/// A message of one side of live transfer `index` (`receiver` or sender), and how long after
/// the transfers began it came.
struct Said {
    index: usize,
    receiver: bool,
    message: Message,
    after: Duration,
}

/// Follows the live transfers side by side until each has arrived whole and both its sides say
/// `done` (starting with what they said `early`); if one side gives up, says which, when, and
/// why that is wrong.
fn follow_live(
    run: &Run,
    lives: &mut [Live],
    started: Instant,
    early: Vec<Said>,
) -> Result<(), Fail> {
    const LOOK: Duration = Duration::from_millis(2);
    for said in early {
        take_live(
            &mut lives[said.index],
            said.receiver,
            &said.message,
            said.after,
        )?;
    }
    while lives.iter().any(|l| !l.sender_done || !l.receiver_done) {
        let late = Instant::now() >= run.deadline();
        for live in lives.iter_mut() {
            if !live.receiver_done {
                let message = if late {
                    Some(live.transfer.receiver.recv_any()?)
                } else {
                    live.transfer.receiver.recv_before(Instant::now() + LOOK)?
                };
                if let Some(m) = message {
                    take_live(live, true, &m, started.elapsed())?;
                }
            }
            if !live.sender_done
                && let Some(m) = live.transfer.sender.recv_before(Instant::now() + LOOK)?
            {
                take_live(live, false, &m, started.elapsed())?;
            }
        }
    }
    Ok(())
}

/// Takes what one side (`receiver` or the sender) of a live transfer said `after` the start.
fn take_live(live: &mut Live, receiver: bool, m: &Message, after: Duration) -> Result<(), Fail> {
    match m.kind.as_str() {
        "message" if receiver => {
            let want = pattern_hash(live.transfer.seed, 0, live.len);
            if m.get("hash") != Some(want.as_str()) {
                return Err(Fail::failed(format!(
                    "a live transfer whose {} takes {SLOW_MS} ms per chunk: the receiver's bytes \
                     differ from what the sender sent (the hash does not match)",
                    live.slow
                )));
            }
        }
        "done" if receiver => live.receiver_done = true,
        "done" => live.sender_done = true,
        _ => {
            let who = if receiver { "receiver" } else { "sender" };
            return Err(live_failed(live, who, m, after));
        }
    }
    Ok(())
}

/// What went wrong when `who` of a live transfer said `message` instead of what was due.
fn live_failed(live: &Live, who: &str, message: &Message, after: Duration) -> Fail {
    let after = after.as_millis();
    let slow = live.slow;
    let what = format!(
        "a live transfer whose {slow} takes {SLOW_MS} ms per chunk ({LIVE_CHUNKS} chunks, so the \
         message lasts about {} ms, timeout {TIMEOUT_MS} ms): the {who} said `{}` ({}) about \
         {after} ms after it began",
        LIVE_CHUNKS * SLOW_MS,
        message.kind,
        failure(message)
    );
    // Either side may time out: each waits for the other between chunks. Sooner than the
    // timeout, a wait was cut short (see `expect_live`); around it, the message's clock ran out.
    if message.get("kind") == Some("timeout")
        && (u128::from(TIMEOUT_MS)..u128::from(3 * TIMEOUT_MS)).contains(&after)
    {
        return Fail::failed(format!(
            "{what}, though its peer was alive and the transfer moved a chunk every {SLOW_MS} ms, so \
             that no single wait lasted anywhere near the timeout: it gave up when the whole \
             message had lasted the timeout. The timeout counts from the start of each wait, \
             not of the message: take a new deadline for every sem_timedwait()"
        ));
    }
    Fail::failed(what)
}
