//! Looks counted with hardware watchpoints: on the ok
//! semaphore's word, how often the producer looks at it while no ok can come (a wait tries it a
//! few times a slice, a spin before blocking thousands); on words of the consumer's slot, how
//! often the consumer reads it while no ready can come.

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use super::WAIT_SLICE;
use super::handover::{Handover, Launch};
use super::probe;
use super::waits::millis;
use crate::engine::tracer::{Field, Tracer, Watched};
use crate::engine::{Fail, Run};

/// The data word of a named semaphore (glibc, 64-bit: the value and the count of waiters), at
/// the start of its mapping: every load and store of it by the program.
pub(super) const SEMAPHORE_WORD: &[Field] = &[Field {
    offset: 0,
    len: 8,
    loads: true,
}];
/// The record before which the consumer is held: the second, so that the producer's looks at
/// the ok semaphore are those of two waits, the second of which no ok ends.
pub(super) const SPIN_HELD_AT: u64 = 1;
/// How long the grader counts the producer's looks at the ok semaphore once the consumer is
/// held: three slices.
pub(super) const SPIN_WATCH: Duration = Duration::from_millis(300);
/// Looks at the ok semaphore a blocking producer makes, counted from its `go`: a timed wait
/// loads and updates the word a few times a round and a slice (a try, the count of waiters up
/// and down); a loop of sem_trywait() before the timed wait looks hundreds or thousands of times
/// a wait. The count starts with the `go`, not when the consumer is seen held, so that a spin
/// over before the grader hears of the hold is counted too. A grader slow to count lets more
/// slices pass: each allows `LOOKS_PER_SLICE` more.
const MOST_LOOKS: u64 = 60;
const LOOKS_PER_SLICE: u64 = 10;
/// A pause this long between two looks at the ok semaphore is the producer's first block: a
/// timed wait looks next when its slice times out, a slice after the clock read made before its
/// first look; the looks before it, however slowly a loaded machine lets them come, are those
/// of the waits up to their block.
pub(super) const FIRST_BLOCK: Duration = Duration::from_millis(80);
/// Looks a wait makes before it blocks: the C library's sem_timedwait() tries the word once,
/// counts itself a waiter and looks again before its futex wait, and takes the post and counts
/// itself out when woken; a few sem_trywait() tries before the timed wait, however brief, are
/// one look each.
const LOOKS_BEFORE_BLOCKING: u64 = 8;
/// Looks allowed before the first block: the waits of the rounds before the hold, and the held
/// one up to its block.
pub(super) const FIRST_BLOCK_LOOKS: u64 = LOOKS_BEFORE_BLOCKING * (SPIN_HELD_AT + 1);

/// How many looks at the ok semaphore are allowed since the rounds started at `started`.
pub(super) fn most_looks(started: Instant) -> u64 {
    let slices = (started.elapsed().as_millis() / WAIT_SLICE.as_millis()) as u64;
    MOST_LOOKS + LOOKS_BEFORE_BLOCKING * SPIN_HELD_AT + LOOKS_PER_SLICE * slices
}

/// The side whose looks at a semaphore are counted while the grader holds the other one
/// before record `SPIN_HELD_AT`: the producer at ok, or the consumer at ready.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Looker {
    Producer,
    Consumer,
}

/// What a watch of one side's looks at its semaphore counted.
pub(super) struct Looks {
    pub looks: u64,
    /// Looks before the first pause of `FIRST_BLOCK` between two, its block.
    pub first_looks: u64,
    /// Judged at the look that went past the allowance: later, more slices would allow more.
    pub spun: bool,
    /// Whether the watchpoint stayed armed to the end.
    pub watched: bool,
    pub watched_for: Duration,
}

impl Looks {
    pub fn too_many(&self) -> bool {
        self.spun || self.first_looks > FIRST_BLOCK_LOOKS
    }
}

/// Counts `looker`'s loads and stores of its semaphore's word (a hardware watchpoint) from its
/// `go`, over record 0 and record `SPIN_HELD_AT`, the other side held before it, for `watch`
/// once that one is held. The run then goes on to its end, or is ended when the looks went
/// past the allowance. `None`: no watchpoints here.
pub(super) fn count_looks(
    run: &mut Run,
    looker: Looker,
    watch: Duration,
) -> Result<Option<Looks>, Fail> {
    let names = [run.ipc_name("ready"), run.ipc_name("ok")];
    let held_at = SPIN_HELD_AT.to_string();
    let (held, pause, rounds, watched_name) = match looker {
        Looker::Producer => ("consumer", "--pause-consumer-at", SPIN_HELD_AT + 5, 1),
        Looker::Consumer => ("producer", "--pause-producer-at", SPIN_HELD_AT + 2, 0),
    };
    let extra = ["--pause-after-create", pause, &held_at];
    let mut launch = Launch::new(run, "semaphores", names, rounds, &extra)?;
    launch.created()?;
    // The semaphore's file, known by its inode while its name exists.
    let inode =
        std::fs::metadata(probe::semaphore_file(&launch.names[watched_name])).map(|m| m.ino());
    launch.proc.send("go", &[])?;
    let mut handover = launch.ready()?;
    let pid = match looker {
        Looker::Producer => handover.producer,
        Looker::Consumer => handover.consumer,
    };
    let word = inode.ok().and_then(|inode| {
        probe::mappings(pid)
            .into_iter()
            .find(|m| m.named_semaphore() && m.inode == inode)
            .map(|m| m.start)
    });
    let tracer = match word {
        Some(word) => Tracer::watch_at(pid, word, SEMAPHORE_WORD)?,
        None => None,
    };
    let Some(mut tracer) = tracer else {
        handover.finish(|proc, _| proc.send("go", &[]))?;
        return Ok(None);
    };
    handover.go()?;
    let started = Instant::now();
    let until = started + Duration::from_secs(5);
    let mut held_since: Option<Instant> = None;
    let (mut looks, mut first_looks) = (0u64, 0u64);
    let mut last_look: Option<Instant> = None;
    let (mut blocked, mut spun, mut watched) = (false, false, true);
    loop {
        // Once the other side is held, only the watched side's looks are read.
        let next = match held_since {
            Some(since) => match tracer.next_watched(since + watch)? {
                Some(next) => next,
                None => break,
            },
            None => tracer.next(&mut handover.proc, until)?,
        };
        match next {
            Watched::Armed => {}
            Watched::Hit => {
                looks += 1;
                blocked |= last_look.is_some_and(|last| last.elapsed() >= FIRST_BLOCK);
                if !blocked {
                    first_looks += 1;
                }
                last_look = Some(Instant::now());
                if looks > most_looks(started) {
                    spun = true;
                    break;
                }
                tracer.go_on();
            }
            Watched::Said(message) => {
                if paused_for_the_grader(&handover, &message, held)? {
                    held_since = Some(Instant::now());
                }
            }
            Watched::Lost | Watched::Unavailable => {
                watched = false;
                break;
            }
        }
    }
    let counted = Looks {
        looks,
        first_looks,
        spun,
        watched,
        watched_for: started.elapsed(),
    };
    drop(tracer);
    if counted.too_many() {
        handover.proc.kill_tree();
    } else {
        release_to_the_end(
            &mut handover,
            held_since.is_some(),
            &format!("the {held}"),
            SPIN_HELD_AT,
        )?;
    }
    Ok(Some(counted))
}

/// The producer must block in its wait for ok, not try the semaphore again and again first:
/// hardware watchpoints on the ok semaphore's word in the producer count its loads and stores
/// while the grader holds the consumer before a record, so that no ok comes.
pub fn spins_before_blocking(run: &mut Run) -> Result<String, Fail> {
    let Some(Looks {
        looks,
        first_looks,
        spun,
        watched,
        watched_for,
    }) = count_looks(run, Looker::Producer, SPIN_WATCH)?
    else {
        return Ok("the ok semaphore was not watched (no watchpoints here)".into());
    };
    if spun {
        return Err(Fail::failed(format!(
            "while the grader held the consumer before record {SPIN_HELD_AT} (so that no ok \
             came), the producer loaded or changed the ok \
             semaphore at least {looks} times in {} (counted with a hardware watchpoint on the \
             semaphore's word): its wait(ok) tries the semaphore again and again (a loop around \
             sem_trywait()?) before, or instead of, blocking. A wait blocks in sem_timedwait() \
             from the start, which looks at the semaphore a few times a slice",
            millis(watched_for)
        )));
    }
    if first_looks > FIRST_BLOCK_LOOKS {
        return Err(Fail::failed(format!(
            "in its wait(ok) for record 0, then for record {SPIN_HELD_AT} while the grader held \
             the consumer (so that no ok came), the producer loaded or changed the ok semaphore \
             {first_looks} times before its first pause of {} between two looks, its block \
             (counted with a hardware watchpoint on the semaphore's word): its wait(ok) tries \
             the semaphore again and again (sem_trywait() in a loop, however short?) before it \
             blocks. The C library's sem_timedwait() looks at the word a few times a wait \
             before its futex wait (at most {FIRST_BLOCK_LOOKS} in {} waits): block in it from \
             the start",
            millis(FIRST_BLOCK),
            SPIN_HELD_AT + 1
        )));
    }
    Ok(if watched {
        format!(
            "the producer looked at the ok semaphore {looks} times in {} ({first_looks} before \
             a pause of {}), in {SPIN_HELD_AT} round, then the wait for a held consumer",
            millis(watched_for),
            millis(FIRST_BLOCK)
        )
    } else {
        "the ok semaphore was not watched (no watchpoints here)".into()
    })
}

/// Words of the slot a consumer that polls it would read: the record's number, the first and
/// a middle word of its payload, its checksum.
const SLOT_WORDS: &[Field] = &[
    Field {
        offset: 0,
        len: 8,
        loads: true,
    },
    Field {
        offset: 8,
        len: 8,
        loads: true,
    },
    Field {
        offset: 2048,
        len: 8,
        loads: true,
    },
    Field {
        offset: super::RECORD_SIZE as usize - 8,
        len: 8,
        loads: true,
    },
];
/// How long the grader counts the consumer's looks at the slot once the producer is held.
const SLOT_WATCH: Duration = Duration::from_millis(150);
/// The record before which the producer is held: one record copied before, with the
/// watchpoints (each look a stop of the consumer) armed.
const SLOT_HELD_AT: u64 = 1;
/// Looks at the watched words of the slot a consumer that reads the slot only after ready
/// makes, from the start of the rounds: its copy of each record (a copy in pieces reads a word
/// a few times; 17 to 25 a record measured); none once the producer is held (a few allowed,
/// for looks already under way).
const MOST_SLOT_LOOKS: u64 = 100;
const SLOT_LOOKS_PER_ROUND: u64 = 50;
const HELD_SLOT_LOOKS: u64 = 4;

/// The consumer reads the slot only once ready came: hardware watchpoints on words of the
/// consumer's slot count its loads while the grader holds the producer before a record (no
/// ready can come): none then, a copy's few a round before.
pub fn consumer_polls_slot(run: &mut Run) -> Result<String, Fail> {
    let held_at = SLOT_HELD_AT.to_string();
    let mut handover = Handover::start(
        run,
        "semaphores",
        SLOT_HELD_AT + 2,
        &["--pause-producer-at", &held_at],
    )?;
    let consumer = handover.consumer;
    let slot = probe::mappings(consumer)
        .into_iter()
        .find(|m| m.shared_anonymous() && m.len() >= super::RECORD_SIZE)
        .map(|m| m.start);
    let tracer = match slot {
        Some(slot) => Tracer::watch_at(consumer, slot, SLOT_WORDS)?,
        None => None,
    };
    let Some(mut tracer) = tracer else {
        handover.finish(|proc, _| proc.send("go", &[]))?;
        return Ok("the consumer's slot was not watched (no watchpoints here)".into());
    };
    handover.go()?;
    let started = Instant::now();
    let until = started + Duration::from_secs(5);
    let mut held_since: Option<Instant> = None;
    let mut looks = 0u64;
    let mut held_looks = 0u64;
    let mut armed = false;
    // The looks counted by the time the producer paused: the consumer had taken the records
    // before the hold by then.
    let mut looks_before_hold = None;
    let mut watched = true;
    let allowed = MOST_SLOT_LOOKS + SLOT_LOOKS_PER_ROUND * SLOT_HELD_AT;
    loop {
        // Once the producer is held, only the consumer's looks are read, for SLOT_WATCH: one
        // that blocks touches nothing.
        let next = match held_since {
            Some(since) => match tracer.next_watched(since + SLOT_WATCH)? {
                Some(next) => next,
                None => break,
            },
            None => tracer.next(&mut handover.proc, until)?,
        };
        match next {
            Watched::Armed => armed = true,
            Watched::Hit => {
                looks += 1;
                if held_since.is_some() {
                    held_looks += 1;
                }
                if looks > allowed || held_looks > HELD_SLOT_LOOKS {
                    break;
                }
                tracer.go_on();
            }
            Watched::Said(message) => {
                if paused_for_the_grader(&handover, &message, "producer")? {
                    held_since = Some(Instant::now());
                    looks_before_hold = Some(looks);
                }
            }
            Watched::Lost | Watched::Unavailable => {
                watched = false;
                break;
            }
        }
    }
    let watched_for = started.elapsed();
    drop(tracer);
    if looks > allowed || held_looks > HELD_SLOT_LOOKS {
        return Err(Fail::failed(format!(
            "in {SLOT_HELD_AT} round and then while the grader held the producer before record \
             {SLOT_HELD_AT} (so that no ready came), the consumer read the slot at least {looks} \
             times in {} ({held_looks} of them once the producer had said it paused, when a \
             consumer waiting for ready reads nothing; counted with hardware watchpoints on the \
             record's number, payload and checksum in the consumer's slot): \
             take() polls the slot (for a new number or checksum) before, or instead of, waiting \
             for ready. The slot is read only once ready came: wait(ready) blocks from the start, \
             then copy the record",
            millis(watched_for)
        )));
    }
    if watched && armed && looks_before_hold == Some(0) {
        return Err(Fail::failed(format!(
            "the consumer took {SLOT_HELD_AT} record(s) and posted ok before the grader held the \
             producer before record {SLOT_HELD_AT}, without once reading its slot (hardware \
             watchpoints on the record's number, payload and checksum in the consumer's own \
             mapping of the slot counted no load): take() got the record some other way, such \
             as a copy out of the producer's memory (process_vm_readv(), /proc/PID/mem, \
             ptrace()), a file or a pipe. take() copies the record out of its own mapping of \
             the shared slot: the records travel through the slot, and only through it"
        )));
    }
    release_to_the_end(
        &mut handover,
        held_since.is_some(),
        "the producer",
        SLOT_HELD_AT,
    )?;
    Ok(if watched {
        format!(
            "the consumer read the watched words of its slot {looks} times in {} \
             ({SLOT_HELD_AT} round, then {held_looks} while the producer was held)",
            millis(watched_for)
        )
    } else {
        "the consumer's slot was not watched (no watchpoints here)".into()
    })
}

/// Whether `message`, said while a side is watched, is `role` pausing for the grader; a failure
/// or any other message but `done` ends the watch.
pub(super) fn paused_for_the_grader(
    handover: &Handover,
    message: &ipc_labs_driver::Message,
    role: &str,
) -> Result<bool, Fail> {
    match (message.kind.as_str(), message.get("role")) {
        ("paused", Some(paused)) if paused == role => Ok(true),
        ("failed", _) => Err(handover.failure(message)),
        ("done", _) => Ok(false),
        (kind, _) => Err(Fail::failed(format!(
            "the program said an unexpected `{kind}`"
        ))),
    }
}

/// Lets a run whose `role` the grader held before record `at` (`paused`: it said so) go on,
/// and reads it to its end.
pub(super) fn release_to_the_end(
    handover: &mut Handover,
    paused: bool,
    role: &str,
    at: u64,
) -> Result<(), Fail> {
    if !paused {
        return Err(Fail::failed(format!(
            "{role} did not pause before record {at}"
        )));
    }
    handover.proc.send("go", &[])?;
    loop {
        let message = handover.proc.recv_any()?;
        match message.kind.as_str() {
            "failed" => return Err(handover.failure(&message)),
            "ended" => break,
            _ => {}
        }
    }
    handover.exit()
}
