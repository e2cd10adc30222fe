//! Driving the program's protocol: start it, let the producer go with the seed of the records,
//! collect what each side reports, and judge it: the digest of the records against the one the
//! grader recomputes, and each `failed` report against what the grader knows of the other side.

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use ipc_labs_driver::Message;
use rand::RngExt;

use super::probe;
use super::{CONSUMER, PARENT, PAYLOAD, PRODUCER, RECORD_SIZE};
use crate::engine::tracer::{Action, Call, Tracer};
use crate::engine::{Fail, Proc, Run, force};

/// FNV-1a's offset basis and prime: the consumer's digest folds 64-bit words with them, and a
/// record's checksum folds bytes.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

fn field<T: std::str::FromStr>(message: &Message, key: &str) -> Result<T, Fail> {
    message
        .get(key)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Fail::Grader(format!("`{}` without a valid `{key}`", message.kind)))
}

/// The command line of a run.
pub fn arguments(mechanism: &str, names: &[String; 2], rounds: u64, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--mechanism".to_string(),
        mechanism.into(),
        "--ready".into(),
        names[0].clone(),
        "--ok".into(),
        names[1].clone(),
        "--rounds".into(),
        rounds.to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Starts the parent stopped (semaphores, 10 rounds) and lets it run with `call` traced for
/// `action`, so that none of its calls is missed: the probes that fail or hold one start so.
pub fn spawn_traced(
    run: &mut Run,
    names: &[String; 2],
    call: Call,
    action: Action,
) -> Result<(Proc, Option<Tracer>), Fail> {
    spawn_traced_with(run, names, &[], call, action)
}

/// As [`spawn_traced`], with `extra` arguments (`--pause-after-create`).
pub fn spawn_traced_with(
    run: &mut Run,
    names: &[String; 2],
    extra: &[&str],
    call: Call,
    action: Action,
) -> Result<(Proc, Option<Tracer>), Fail> {
    let proc = run.spawn_stopped(&arguments("semaphores", names, 10, extra))?;
    let pid = proc.pid.as_raw();
    let tracer = Tracer::attach(pid, call, action)?;
    force::resume(pid)?;
    Ok((proc, tracer))
}

/// Lets a traced run go on untouched and verifies its rounds (`what`), then removes both
/// semaphores whatever came of it: the trace may have left them behind.
pub fn run_through_removing(
    proc: Proc,
    names: &[String; 2],
    seed: u64,
    what: &str,
) -> Result<(), Fail> {
    let launch = Launch {
        proc,
        names: names.clone(),
        mechanism: "semaphores",
        rounds: 10,
        seed,
    };
    let ran = launch.run_through(what);
    probe::remove_semaphores(names);
    ran
}

/// The program started, before its `ready`.
pub struct Launch {
    pub proc: Proc,
    pub names: [String; 2],
    pub mechanism: &'static str,
    pub rounds: u64,
    /// The seed of the records, which only the producer is told (in its `go`).
    pub seed: u64,
}

impl Launch {
    /// Starts the program with the check's names `names`.
    pub fn new(
        run: &mut Run,
        mechanism: &'static str,
        names: [String; 2],
        rounds: u64,
        extra: &[&str],
    ) -> Result<Launch, Fail> {
        let seed: u64 = run.rng().random();
        let proc = run.spawn(&arguments(mechanism, &names, rounds, extra))?;
        Ok(Launch {
            proc,
            names,
            mechanism,
            rounds,
            seed,
        })
    }

    /// Waits for the program's `created` (started with `--pause-after-create`).
    pub fn created(&mut self) -> Result<(), Fail> {
        let created = self.proc.recv_any()?;
        match created.kind.as_str() {
            "created" => Ok(()),
            "failed" => Err(report_failure(&created, self.mechanism)),
            kind => Err(Fail::failed(format!(
                "the program said `{kind}` where it should have said `created`"
            ))),
        }
    }

    /// Waits for `ready`, then lets every round run untouched and verifies them (`what`: the
    /// rounds, for the messages).
    pub fn run_through(self, what: &str) -> Result<(), Fail> {
        let mut handover = self.ready()?;
        let reports = handover.finish(|_, _| Ok(()))?;
        handover.verify(&reports, what)
    }

    /// Waits for the parent's `ready`.
    pub fn ready(mut self) -> Result<Handover, Fail> {
        let ready = self.proc.recv_any()?;
        match ready.kind.as_str() {
            "ready" => {}
            "failed" => return Err(report_failure(&ready, self.mechanism)),
            kind => {
                return Err(Fail::failed(format!(
                    "the program said `{kind}` where it should have been ready"
                )));
            }
        }
        let producer: i32 = field(&ready, "producer")?;
        let consumer: i32 = field(&ready, "consumer")?;
        if probe::alive(producer) && probe::alive(consumer) {
            shares_slot(producer, consumer)?;
        }
        let parent = self.proc.pid.as_raw();
        self.proc.set_roles(move |view| {
            match view.pid {
                pid if pid == parent => PARENT,
                pid if pid == producer => PRODUCER,
                pid if pid == consumer => CONSUMER,
                _ => "another process",
            }
            .into()
        });
        Ok(Handover {
            proc: self.proc,
            names: self.names,
            mechanism: self.mechanism,
            producer,
            consumer,
            rounds: self.rounds,
            seed: self.seed,
            done: Vec::new(),
            hold: None,
        })
    }
}

/// Both sides must share the slot: a shared anonymous mapping inherited across `fork()`.
fn shares_slot(producer: i32, consumer: i32) -> Result<(), Fail> {
    let large = |m: &probe::Mapping| m.shared() && !m.named_semaphore() && m.len() >= RECORD_SIZE;
    let (ours, theirs) = (probe::mappings(producer), probe::mappings(consumer));
    if ours.is_empty() || theirs.is_empty() {
        // Gone, or not readable: nothing to judge.
        return Ok(());
    }
    let shared: Vec<probe::Mapping> = ours
        .into_iter()
        .filter(|m| large(m) && theirs.iter().any(|t| large(t) && t.inode == m.inode))
        .collect();
    if shared.iter().any(probe::Mapping::shared_anonymous) {
        return Ok(());
    }
    let instead = match shared.first() {
        Some(mapping) => format!(
            " (they share a mapping of {} instead)",
            probe::mapped(&mapping.path)
        ),
        None => String::new(),
    };
    Err(Fail::failed(format!(
        "the producer and the consumer share no anonymous mapping large enough for a \
         record{instead}: the slot must be mmap_anonymous(MAP_SHARED), made in Handoff::create() \
         before fork() so that both sides inherit it"
    )))
}

/// One run of the program, from `ready` to `ended`.
pub struct Handover {
    pub proc: Proc,
    pub names: [String; 2],
    pub mechanism: &'static str,
    pub producer: i32,
    pub consumer: i32,
    pub rounds: u64,
    pub seed: u64,
    /// The sides that said `done`.
    done: Vec<&'static str>,
    /// The side that last paused for the grader, when, and for how long once it went on.
    hold: Option<(i32, Instant, Option<Duration>)>,
}

/// What the two sides reported.
#[derive(Default)]
pub struct Reports {
    /// Mean time of one `put()`: write, signal, wait for ok.
    pub round_trip_us: f64,
    pub good: u64,
    pub torn: u64,
    pub stale: u64,
    pub skipped: u64,
    pub first: String,
    /// The digest of every record the consumer took.
    pub digest: u64,
}

impl Handover {
    /// Starts the program with fresh names and waits for its `ready`.
    pub fn start(
        run: &mut Run,
        mechanism: &'static str,
        rounds: u64,
        extra: &[&str],
    ) -> Result<Self, Fail> {
        let names = [run.ipc_name("ready"), run.ipc_name("ok")];
        Launch::new(run, mechanism, names, rounds, extra)?.ready()
    }

    /// The pid of `role` ("producer" or "consumer").
    pub fn pid_of(&self, role: &str) -> i32 {
        if role == "producer" {
            self.producer
        } else {
            self.consumer
        }
    }

    /// Whether `role` ("producer" or "consumer") said `done`.
    pub fn said_done(&self, role: &str) -> bool {
        self.done.contains(&role)
    }

    /// Lets the producer start, telling it (alone) the seed of the records.
    pub fn go(&mut self) -> Result<(), Fail> {
        self.proc.send("go", &[("seed", self.seed.to_string())])
    }

    /// Lets a run the grader held go on (`go`), reads it to `ended` and says `exit`.
    pub fn go_on_to_the_end(&mut self) -> Result<(), Fail> {
        self.proc.send("go", &[])?;
        loop {
            let message = self.proc.recv_any()?;
            match message.kind.as_str() {
                "done" => {}
                "ended" => break,
                "failed" => return Err(self.failure(&message)),
                kind => {
                    return Err(Fail::failed(format!(
                        "the program said an unexpected `{kind}`"
                    )));
                }
            }
        }
        self.exit()
    }

    /// Lets the producer start, collects the reports up to `ended` and says `exit`.
    /// `on_paused` is called with the pid of the side that paused and must send `go` when done.
    pub fn finish(
        &mut self,
        on_paused: impl FnMut(&mut Proc, i32) -> Result<(), Fail>,
    ) -> Result<Reports, Fail> {
        let reports = self.collect(on_paused)?;
        self.exit()?;
        Ok(reports)
    }

    /// Lets the producer start and collects the reports up to `ended` (the parent then waits
    /// for `exit`).
    pub fn collect(
        &mut self,
        mut on_paused: impl FnMut(&mut Proc, i32) -> Result<(), Fail>,
    ) -> Result<Reports, Fail> {
        self.go()?;
        let mut reports = Reports::default();
        loop {
            let message = self.proc.recv_any()?;
            match (message.kind.as_str(), message.get("role")) {
                ("done", Some("producer")) => {
                    self.done.push("producer");
                    let nanos: f64 = field(&message, "elapsed_ns")?;
                    reports.round_trip_us = nanos / 1000.0 / self.rounds.max(1) as f64;
                }
                ("done", Some("consumer")) => {
                    self.done.push("consumer");
                    reports.good = field(&message, "good")?;
                    reports.torn = field(&message, "torn")?;
                    reports.stale = field(&message, "stale")?;
                    reports.skipped = field(&message, "skipped")?;
                    reports.first = message.get("first").unwrap_or("").to_string();
                    reports.digest = field(&message, "digest")?;
                }
                ("paused", Some(role)) => {
                    let pid = self.pid_of(role);
                    let since = Instant::now();
                    self.hold = Some((pid, since, None));
                    on_paused(&mut self.proc, pid)?;
                    self.hold = Some((pid, since, Some(since.elapsed())));
                }
                ("failed", _) => return Err(self.failure(&message)),
                ("ended", _) => break,
                (kind, _) => {
                    return Err(Fail::failed(format!(
                        "the program said an unexpected `{kind}`"
                    )));
                }
            }
        }
        Ok(reports)
    }

    /// Says `exit` and waits for the parent.
    pub fn exit(&mut self) -> Result<(), Fail> {
        self.proc.send("exit", &[])?;
        let status = self.proc.wait()?;
        if status.signal().is_some() {
            return Err(Fail::Crashed(format!("the parent died: {status}")));
        }
        Ok(())
    }

    /// A side's `failed` report, judged with what the grader knows of the other side.
    pub fn failure(&self, message: &Message) -> Fail {
        let role = message.get("role").unwrap_or("?");
        if message.get("kind") != Some("peer-gone") || !matches!(role, "producer" | "consumer") {
            return report_failure(message, self.mechanism);
        }
        let other = if role == "producer" {
            "consumer"
        } else {
            "producer"
        };
        let other_pid = self.pid_of(other);
        let seen = if self.done.contains(&other) {
            format!(
                "the {other} had posted its last signal and exited (it reported done): wait() \
                 threw away a signal that was already there. Do the timed wait first, and ask \
                 Peer::gone() only when a slice has timed out"
            )
        } else if probe::alive(other_pid) {
            let held = match self.hold {
                Some((pid, since, lasted)) if pid == other_pid => format!(
                    " (the grader held it, paused, for {} ms)",
                    lasted.unwrap_or_else(|| since.elapsed()).as_millis()
                ),
                _ => String::new(),
            };
            format!(
                "the {other} was alive{held}: when a slice times out and Peer::gone() says the \
                 peer is still there, wait again; a slow peer is not a dead one"
            )
        } else {
            format!("the {other} had ended without reporting done or failed")
        };
        Fail::failed(format!(
            "the {role} gave up with kind=peer-gone ({}), but {seen}",
            self.mechanism
        ))
    }

    /// Every record must have arrived intact and in order: the consumer's digest is that of the
    /// records the producer was to send. The consumer's own counts only explain a mismatch.
    pub fn verify(&self, reports: &Reports, what: &str) -> Result<(), Fail> {
        self.verify_with(reports, what, None)
    }

    /// Like [`Handover::verify`], when the grader replaced record `seq` in the slot with the
    /// record of the same number from the stream `seed` (`swap`).
    pub fn verify_with(
        &self,
        reports: &Reports,
        what: &str,
        swap: Option<(u64, u64)>,
    ) -> Result<(), Fail> {
        if reports.digest == expected_digest(self.seed, self.rounds, swap) {
            return Ok(());
        }
        let Reports {
            good,
            torn,
            stale,
            skipped,
            ..
        } = reports;
        if let Some((seq, _)) = swap
            && reports.digest == expected_digest(self.seed, self.rounds, None)
        {
            return Err(Fail::failed(format!(
                "{what}: while the consumer was held before record {seq}, the grader replaced \
                 record {seq} in the slot with another intact record {seq}; the consumer still \
                 got the one the producer had put: it does not take the records out of the \
                 slot. take() must copy each record out of the slot (Handoff::slot) after \
                 wait(ready)"
            )));
        }
        if *good == self.rounds {
            return Err(Fail::failed(format!(
                "{what}: the consumer found all {good} records intact and in order, but they \
                 are not the records the producer sent (the grader recomputes them from a seed \
                 only the producer is told): take() must copy each record out of the slot the \
                 producer wrote it into"
            )));
        }
        let cause = if *torn == self.rounds {
            "every record was torn, in every round: not a race, the copy itself. put() and \
             take() must copy the whole Record (all size_of::<Record>() bytes) into and out of \
             the slot"
        } else if *stale > 0 {
            "the consumer copied the slot before the producer had written the record in it: \
             put() must write the record before it posts ready, take() must copy the slot only \
             once wait(ready) has returned, and wait() must return only when the signal came, \
             not when a slice timed out or a signal handler interrupted it"
        } else if *skipped > 0 {
            "the producer wrote the next record into the slot before the consumer had copied \
             the last one: take() must post ok only after copying the slot, and put() must wait \
             for ok before it returns (wait() returning only when the signal came, not when a \
             slice timed out or a signal handler interrupted it)"
        } else {
            "a record was copied while it was being written: post ready only after writing the \
             slot, post ok only after copying it, and create the semaphores at 0"
        };
        Err(Fail::failed(format!(
            "{what}: of {} records the consumer got {good} right, {torn} torn, {stale} stale \
             (seen before), {skipped} out of order; first: {}: {cause}",
            self.rounds, reports.first
        )))
    }
}

/// A `failed` report, in the student's terms (the names the grader gives do not exist yet).
pub fn report_failure(message: &Message, mechanism: &str) -> Fail {
    let role = message.get("role").unwrap_or("?");
    let kind = message.get("kind").unwrap_or("none");
    let error = message.get("error").unwrap_or("");
    let hint = match kind {
        "wait" | "post" if error.contains("EINTR") => {
            "a signal handler ran while it waited, and the wait failed with EINTR: that is not \
             an error, wait again"
                .to_string()
        }
        "exists" => {
            "the names the grader gave did not exist: open each of the two names once, and give \
             Exists only for EEXIST"
                .to_string()
        }
        "post" | "wait" if error.contains("EBADF") && mechanism == "queues" => {
            "the queue descriptor does not allow this: open both queues with O_RDWR (each side \
             sends on one and receives from the other)"
                .to_string()
        }
        "wait" if error.contains("ETIMEDOUT") => {
            "a slice that times out is no error: ask Peer::gone(), give up with PeerGone if the \
             peer is gone, and wait again if it is there"
                .to_string()
        }
        "unlink" if error.contains("ENOENT") => {
            "the name was already gone when Handoff::unlink() came to it: remove the names there \
             only, once, not in create() nor in the sides"
                .to_string()
        }
        "wait" if error.contains("EMSGSIZE") => {
            "mq_timedreceive() said EMSGSIZE: the queue's messages are larger than the receive \
             buffer; make them SIGNAL_SIZE bytes (mq_msgsize) and receive into SIGNAL_SIZE bytes"
                .to_string()
        }
        "open" if error.contains(super::names::UNUSUAL_CHARACTERS) => format!(
            "its names end in \"{}\", characters outside [A-Za-z0-9._-] that sem_open() and \
             mq_open() accept (the grader made objects of the other kind under the same names): \
             a name checked by hand must be checked as the system does, which refuses only a \
             '/' after the first character and a name too long; else leave the check to \
             sem_open() / mq_open()",
            super::names::UNUSUAL_CHARACTERS
        ),
        "open" if error.contains("EINVAL") && mechanism == "queues" => {
            "mq_open() said EINVAL: the attributes must be one message (mq_maxmsg 1) of \
             SIGNAL_SIZE bytes (mq_msgsize), and the name the one given"
                .to_string()
        }
        "open" if error.contains("EINVAL") => {
            "sem_open() said EINVAL: with O_CREAT, pass the mode and the initial value 0 as \
             c_uint, and the name the one given"
                .to_string()
        }
        "peer-gone" => "it says the other side is gone".to_string(),
        _ => "see the error".to_string(),
    };
    Fail::failed(format!(
        "the {role} failed with kind={kind} ({error}) ({mechanism}): {hint}"
    ))
}

fn fnv_word(digest: u64, word: u64) -> u64 {
    (digest ^ word).wrapping_mul(FNV_PRIME)
}

/// The payload of record `seq` of the stream drawn from `seed`, as 64-bit words: the grader's
/// copy of the lab's given `Record::generate`, so that it checks the records itself.
pub fn payload_words(seed: u64, seq: u64) -> impl Iterator<Item = u64> {
    let mut state = (seed ^ seq.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1;
    (0..PAYLOAD / 8).map(move |_| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    })
}

/// The digest the consumer reports when it took records `0..rounds` of the stream `seed`, in
/// order (record `swap.0` from the stream `swap.1`): FNV-1a over each one's sequence number and
/// payload words.
pub fn expected_digest(seed: u64, rounds: u64, swap: Option<(u64, u64)>) -> u64 {
    (0..rounds).fold(FNV_OFFSET, |digest, seq| {
        let stream = match swap {
            Some((at, other)) if at == seq => other,
            _ => seed,
        };
        std::iter::once(seq)
            .chain(payload_words(stream, seq))
            .fold(digest, fnv_word)
    })
}

/// Record `seq` of the stream `seed` as it lies in the slot, up to its checksum: the sequence
/// number, the payload.
pub fn expected_record(seed: u64, seq: u64) -> Vec<u8> {
    let mut bytes = seq.to_ne_bytes().to_vec();
    bytes.extend(payload_words(seed, seq).flat_map(u64::to_le_bytes));
    bytes
}

/// Record `seq` of the stream `seed`, whole: with its checksum (the lab's `checksum_of`, FNV-1a
/// over the bytes of the number and the payload), as it lies in the slot.
pub fn whole_record(seed: u64, seq: u64) -> Vec<u8> {
    let mut bytes = expected_record(seed, seq);
    let checksum = bytes.iter().fold(FNV_OFFSET, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(FNV_PRIME)
    });
    bytes.extend(checksum.to_ne_bytes());
    bytes
}
