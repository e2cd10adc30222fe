//! A dead peer: a side whose peer is killed gives up with `PeerGone` within about a slice, at
//! the first slice that times out once the peer is gone, and not before: a signal the peer
//! posted before it went is taken, even after `EINTR`.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::time::{ClockId, clock_gettime};
use nix::unistd::Pid;
use rand::RngExt;

use super::WAIT_SLICE;
use super::eintr_after_last_ok::{Interrupted, eintr_after_last_ok};
use super::forced_waits;
use super::handover::{Handover, expected_record, report_failure, whole_record};
use super::names_after_gone::OthersObjects;
use super::probe::{self, Deadline, Seen};
use super::waits::{NOTICE_LIMIT, millis};
use crate::engine::tracer::{Step, Tracer};
use crate::engine::{Fail, Run, force};

/// What a side that should have noticed its peer's death is doing instead, from samples.
fn still_waiting(survivor: i32, who: &str, victim: &str) -> Fail {
    let mut samples = probe::watch(survivor, Instant::now() + Duration::from_millis(100));
    if samples.seen.is_empty() {
        samples = probe::watch_stopped(survivor, 5);
    }
    let since = NOTICE_LIMIT.as_secs();
    let waits: Vec<Deadline> = samples.waits().map(|(_, d)| d).collect();
    let doing = if waits.contains(&Deadline::Never) {
        "with no deadline (a plain sem_wait() or mq_receive()): a dead peer never posts. Wait \
         in slices (sem_timedwait or mq_timedreceive, now + WAIT_SLICE) and give up with \
         PeerGone when Peer::gone() says so"
    } else if !waits.is_empty() {
        "in timed slices that it never ends: when a slice times out (ETIMEDOUT), ask \
         Peer::gone() and give up with PeerGone when the peer is gone"
    } else if samples.slept() {
        "sleeping between looks: give up with PeerGone when Peer::gone() says so"
    } else {
        "without reporting anything: when a slice of the wait times out, ask Peer::gone() and \
         give up with PeerGone when the peer is gone"
    };
    Fail::failed(format!(
        "{since} s after the grader killed the {victim}, the {who} still waits for it, {doing}"
    ))
}

/// Kills the side that pauses; the other must report `peer-gone`.
fn survives(run: &mut Run, mechanism: &'static str, kill_producer: bool) -> Result<String, Fail> {
    let at = run.rng().random_range(10..100u64).to_string();
    let pause = if kill_producer {
        "--pause-producer-at"
    } else {
        "--pause-consumer-at"
    };
    let mut handover = Handover::start(run, mechanism, 1000, &[pause, &at])?;
    let (victim_role, survivor) = if kill_producer {
        ("producer", "consumer")
    } else {
        ("consumer", "producer")
    };
    let mut others = OthersObjects::plant(&handover, victim_role, survivor, &at)?;
    handover.go()?;
    let (victim, survivor_pid) = (handover.pid_of(victim_role), handover.pid_of(survivor));
    let paused = handover.proc.recv("paused")?;
    if paused.get("role") != Some(victim_role) {
        return Err(Fail::Grader("the wrong side paused".into()));
    }
    kill(Pid::from_raw(victim), Signal::SIGKILL).map_err(|e| Fail::Grader(format!("kill: {e}")))?;
    let killed = Instant::now();
    let mut noticed = None;
    loop {
        let message = if noticed.is_none() {
            match handover.proc.recv_before(killed + NOTICE_LIMIT)? {
                Some(message) => message,
                None => {
                    return Err(still_waiting(survivor_pid, survivor, victim_role));
                }
            }
        } else {
            handover.proc.recv_any()?
        };
        match (message.kind.as_str(), message.get("kind")) {
            ("failed", Some("peer-gone")) if message.get("role") == Some(survivor) => {
                noticed = Some(killed.elapsed());
                if let Some(others) = others.as_mut() {
                    others.survivor_reported();
                }
            }
            ("failed", _) => return Err(report_failure(&message, mechanism)),
            ("done", _) => {
                return Err(Fail::failed(format!(
                    "the {survivor} said it was done although the {victim_role} was killed \
                     before record {at}"
                )));
            }
            ("ended", _) => break,
            (kind, _) => {
                return Err(Fail::failed(format!(
                    "the program said an unexpected `{kind}`"
                )));
            }
        }
    }
    if let Some(others) = &others {
        others.judge()?;
    }
    handover.exit()?;
    let Some(noticed) = noticed else {
        return Err(Fail::failed(format!(
            "the {survivor} ended without reporting kind=peer-gone after the {victim_role} was \
             killed"
        )));
    };
    Ok(format!(
        "{mechanism}: the {survivor} noticed the killed {victim_role} in {} ms",
        noticed.as_millis()
    ))
}

/// Rounds of the run in which the consumer exits right after its last ok.
const LAST_ROUNDS: u64 = 20;

/// The consumer takes the last record and exits, and is reaped, before the producer goes on to
/// wait for its ok: the grader holds the producer before the last record, writes that record
/// into the slot and posts ready in its stead, waits until the consumer is gone, then lets the
/// producer put the record (again) and wait. The ok is there: the producer must take it.
fn last_signal(run: &mut Run, mechanism: &'static str) -> Result<String, Fail> {
    let last = LAST_ROUNDS - 1;
    let at = last.to_string();
    let mut handover = Handover::start(run, mechanism, LAST_ROUNDS, &["--pause-producer-at", &at])?;
    let (consumer, seed) = (handover.consumer, handover.seed);
    let mut note = String::new();
    let reports = handover.finish(|proc, _| {
        note = post_last(consumer, seed, last)?;
        proc.send("go", &[])
    })?;
    handover.verify(&reports, &format!("{LAST_ROUNDS} rounds with {mechanism}"))?;
    Ok(format!("{mechanism}: {note}"))
}

/// With the producer held before record `last`, plays its part for that record: writes it
/// into the consumer's slot and posts ready; returns once the consumer is gone.
fn post_last(consumer: i32, seed: u64, last: u64) -> Result<String, Fail> {
    let until = Instant::now() + Duration::from_secs(2);
    // A futex in one of the named semaphores: another futex (one of the program's own) is no
    // signal the grader can post.
    let named = |addr: u64| {
        probe::mappings(consumer)
            .iter()
            .any(|m| m.named_semaphore() && m.contains(addr))
    };
    let seen = loop {
        match probe::sample(consumer) {
            Some(seen @ Seen::Futex { addr, .. }) if named(addr) => break seen,
            Some(seen @ Seen::Receive { .. }) => break seen,
            _ if Instant::now() > until => {
                return Ok("the consumer was not seen in a wait the grader could post".into());
            }
            _ => std::thread::sleep(Duration::from_millis(1)),
        }
    };
    let previous = expected_record(seed, last - 1);
    let Some(slot) = probe::mappings(consumer).into_iter().find(|m| {
        m.shared_anonymous()
            && probe::peek(consumer, m.start, previous.len()).is_some_and(|b| b == previous)
    }) else {
        return Ok("the consumer's slot was not found".into());
    };
    probe::poke(consumer, slot.start, &whole_record(seed, last))?;
    probe::post_for(consumer, seen)?;
    Ok(if !probe::gone_within(consumer, NOTICE_LIMIT) {
        "the consumer did not end after the grader posted its last ready".into()
    } else {
        "the producer took the ok of a consumer already gone".into()
    })
}

/// Stops `producer` (SIGSTOP) inside its timed wait, early enough in a slice that the wait is
/// interrupted, not timed out: true once it is stopped before the deadline of that wait.
pub(super) fn stop_inside_wait(producer: i32) -> Result<bool, Fail> {
    let realtime = || {
        clock_gettime(ClockId::CLOCK_REALTIME)
            .map(Duration::from)
            .unwrap_or_default()
    };
    for _ in 0..10 {
        let Some(deadline) = probe::realtime_deadline(producer) else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        if deadline < realtime() + STOP_MARGIN {
            std::thread::sleep(deadline.saturating_sub(realtime()) + Duration::from_millis(2));
            continue;
        }
        force::hold(producer)?;
        // Stopped before the deadline: the wait cannot have timed out, the stop ended it.
        if probe::state(producer) == Some('T') && realtime() < deadline {
            return Ok(true);
        }
        force::resume(producer)?;
    }
    Ok(false)
}

/// How far ahead the deadline of the producer's wait must be when the grader stops it.
const STOP_MARGIN: Duration = Duration::from_millis(30);

/// A timed wait whose deadline is further ahead than this, entered once a slice has timed out
/// with the peer gone, is another slice: a last look without blocking (a deadline already
/// past) is not.
const ANOTHER_SLICE: Duration = Duration::from_millis(20);

/// `ETIMEDOUT` with the peer gone is `PeerGone` at once, at the first slice that times out: the
/// grader holds the producer at the entry of a timed wait for ok (the consumer held before a
/// record), kills the consumer and waits until it is reaped, then lets that one wait run to its
/// deadline, and holds the producer again if it enters another timed wait.
fn gone_at_first_timeout(run: &mut Run, mechanism: &'static str) -> Result<String, Fail> {
    let at = run.rng().random_range(10..50u64).to_string();
    let mut handover = Handover::start(run, mechanism, 100, &["--pause-consumer-at", &at])?;
    handover.go()?;
    let (producer, consumer) = (handover.producer, handover.consumer);
    let paused = handover.proc.recv("paused")?;
    if paused.get("role") != Some("consumer") {
        return Err(Fail::Grader("the wrong side paused".into()));
    }
    // A timed wait on the ok semaphore or the ok queue, nothing else.
    let ok = handover.names[1].clone();
    let on_ok = |seen: &Seen| match *seen {
        Seen::Futex {
            addr,
            deadline: Deadline::Ahead(_),
            monotonic: false,
        } => probe::mappings(producer)
            .iter()
            .any(|m| m.named_semaphore() && m.contains(addr)),
        Seen::Receive { fd, .. } => {
            let target = probe::descriptor(producer, fd);
            target == ok || target == format!("{ok} (deleted)")
        }
        _ => false,
    };
    let wait = forced_waits::waiting_in(producer)
        .filter(on_ok)
        .and_then(forced_waits::the_wait);
    let tracer = match wait {
        Some(wait) => Tracer::in_turn(producer, [(wait, Step::Hold), (wait, Step::Hold)])?,
        None => None,
    };
    let held = match tracer {
        Some(mut tracer) => {
            if tracer.held_before(Instant::now() + WAIT_SLICE * 5)? {
                Some(tracer)
            } else {
                None
            }
        }
        None => None,
    };
    kill(Pid::from_raw(consumer), Signal::SIGKILL)
        .map_err(|e| Fail::Grader(format!("kill: {e}")))?;
    let killed = Instant::now();
    let mut again = None;
    if let Some(mut tracer) = held {
        // Reaped: Peer::gone() says so from now on.
        while probe::state(consumer).is_some() && killed.elapsed() < NOTICE_LIMIT {
            std::thread::sleep(Duration::from_millis(1));
        }
        tracer.go_on();
        if tracer.held_before(Instant::now() + WAIT_SLICE * 10)? {
            let lead = probe::realtime_deadline(producer).map(|deadline| {
                let now = clock_gettime(ClockId::CLOCK_REALTIME)
                    .map(Duration::from)
                    .unwrap_or_default();
                deadline.saturating_sub(now)
            });
            again = Some(lead);
        }
        tracer.release();
    }
    if let Some(Some(lead)) = again
        && lead > ANOTHER_SLICE
    {
        let slice = format!("another slice (its deadline {} ahead)", millis(lead));
        handover.proc.kill_tree();
        return Err(Fail::failed(format!(
            "the grader killed the consumer while the producer waited for its ok ({mechanism}), \
             waited until the parent had reaped it, then let one timed wait of the producer run \
             to its deadline: that slice timed out (ETIMEDOUT) with the consumer gone, and the \
             producer, instead of giving up with kind=peer-gone, began {slice}. On ETIMEDOUT, \
             ask Peer::gone() and, if the peer is gone, return PeerGone at once: each slice more \
             delays noticing a dead peer"
        )));
    }
    producer_gives_up(&mut handover, producer, killed, mechanism)?;
    Ok(format!(
        "{mechanism}: the producer gave up at the first slice that timed out with the consumer \
         gone{}",
        if again.is_some() {
            " (then only a last look without blocking)"
        } else {
            ""
        }
    ))
}

/// Both sides are held between records K-1 and K; the grader kills the producer and waits
/// until the parent has reaped it, then lets the consumer go: it enters wait(ready) with
/// nothing there and its peer already gone. PeerGone comes only after a slice has timed out,
/// so not before a slice has passed since `go`.
fn gone_before_wait(run: &mut Run, mechanism: &'static str) -> Result<String, Fail> {
    let at = run.rng().random_range(10..50u64).to_string();
    let args = ["--pause-producer-at", &at, "--pause-consumer-at", &at];
    let mut handover = Handover::start(run, mechanism, 100, &args)?;
    handover.go()?;
    let (producer, consumer) = (handover.producer, handover.consumer);
    let mut paused = 0;
    while paused < 2 {
        let message = handover.proc.recv_any()?;
        match message.kind.as_str() {
            "paused" => paused += 1,
            "failed" => return Err(handover.failure(&message)),
            kind => {
                return Err(Fail::failed(format!(
                    "the program said an unexpected `{kind}`"
                )));
            }
        }
    }
    kill(Pid::from_raw(producer), Signal::SIGKILL)
        .map_err(|e| Fail::Grader(format!("kill: {e}")))?;
    if !probe::gone_within(producer, Duration::from_secs(2)) {
        return Err(Fail::Grader(
            "the killed producer was not reaped within 2 s".into(),
        ));
    }
    // The consumer alone reads the control channel now.
    let went = Instant::now();
    handover.proc.send("go", &[])?;
    let mut noticed = None;
    loop {
        let message = if noticed.is_none() {
            match handover.proc.recv_before(went + NOTICE_LIMIT)? {
                Some(message) => message,
                None => return Err(still_waiting(consumer, "consumer", "producer")),
            }
        } else {
            handover.proc.recv_any()?
        };
        match (message.kind.as_str(), message.get("kind")) {
            ("failed", Some("peer-gone")) if message.get("role") == Some("consumer") => {
                noticed = Some(went.elapsed());
            }
            ("failed", _) => return Err(report_failure(&message, mechanism)),
            ("ended", _) => break,
            (kind, _) => {
                return Err(Fail::failed(format!(
                    "the program said an unexpected `{kind}`"
                )));
            }
        }
    }
    handover.exit()?;
    let Some(noticed) = noticed else {
        return Err(Fail::failed(format!(
            "the consumer ended without reporting kind=peer-gone after the producer was killed \
             ({mechanism})"
        )));
    };
    // Its first deadline is read after `go`, a slice ahead: no slice can have timed out
    // before. Load only makes the report later.
    if noticed < WAIT_SLICE * 9 / 10 {
        return Err(Fail::failed(format!(
            "the grader held both sides between records {} and {at}, killed the producer, \
             waited until the parent had reaped it, then let the consumer go on to take record \
             {at} ({mechanism}): the consumer reported kind=peer-gone {} after `go`, before any \
             slice of its wait(ready) could have timed out (a slice is WAIT_SLICE, {} ms): it \
             gave up without waiting a slice, having asked Peer::gone() (and perhaps looked at \
             the signal) before its timed wait, or after a wait that did not run to its \
             deadline. A signal already there is taken, even from a peer that is gone since: \
             PeerGone only after a slice has timed out (ETIMEDOUT) with the peer gone",
            at.parse::<u64>().unwrap_or(1) - 1,
            millis(noticed),
            WAIT_SLICE.as_millis()
        )));
    }
    Ok(format!(
        "{mechanism}: the consumer, let go with the producer already reaped, gave up after {}",
        millis(noticed)
    ))
}

pub fn peer_exits_early(run: &mut Run) -> Result<String, Fail> {
    let notes = [
        survives(run, "semaphores", false)?,
        survives(run, "semaphores", true)?,
        survives(run, "queues", false)?,
        last_signal(run, "semaphores")?,
        last_signal(run, "queues")?,
        eintr_after_last_ok(run, "semaphores", Interrupted::InTime)?,
        eintr_after_last_ok(run, "queues", Interrupted::InTime)?,
        eintr_after_last_ok(run, "semaphores", Interrupted::PastTheDeadline)?,
        eintr_after_last_ok(run, "queues", Interrupted::PastTheDeadline)?,
        gone_at_first_timeout(run, "semaphores")?,
        gone_at_first_timeout(run, "queues")?,
        gone_at_early_timeout(run)?,
        not_gone_at_eintr(run)?,
        gone_before_wait(run, "semaphores")?,
        super::unposted_record::unposted_record_not_taken(run, "semaphores")?,
    ];
    let after_post = super::gone_after_post::gone_after_post(run)?;
    Ok(notes
        .into_iter()
        .chain(after_post)
        .collect::<Vec<_>>()
        .join("; "))
}

/// A slice that times out early, with the peer gone: the grader holds the producer (waiting
/// for ok, the consumer held before a record) as its `kill(consumer, 0)` after a timed-out
/// slice returns (the consumer alive: wait again), kills the consumer and waits until it is
/// reaped, then makes the producer's next timed wait fail at once with `ETIMEDOUT` (as a
/// `CLOCK_REALTIME` step forward does) and holds the one after. On `ETIMEDOUT`, whenever it
/// comes, the side asks `Peer::gone()` and gives up: it makes no further wait.
fn gone_at_early_timeout(run: &mut Run) -> Result<String, Fail> {
    let (mut handover, killed, again) =
        consumer_reaped_then_wait_fails(run, libc::ETIMEDOUT, |second, producer| {
            Ok(
                if second.failed_before(Instant::now() + Duration::from_secs(2))?
                    && second.held_before(Instant::now() + Duration::from_millis(500))?
                {
                    Some(probe::realtime_deadline(producer))
                } else {
                    None
                },
            )
        })?;
    let producer = handover.producer;
    let again = again.flatten();
    if let Some(deadline) = again {
        handover.proc.kill_tree();
        let lead = deadline
            .map(|deadline| {
                let now = clock_gettime(ClockId::CLOCK_REALTIME)
                    .map(Duration::from)
                    .unwrap_or_default();
                format!(
                    " (its deadline {} ahead)",
                    millis(deadline.saturating_sub(now))
                )
            })
            .unwrap_or_default();
        return Err(Fail::failed(format!(
            "the grader killed the consumer while the producer waited for its ok (semaphores), \
             waited until the parent had reaped it, then made the producer's next timed wait \
             return ETIMEDOUT at once, before WAIT_SLICE had passed (as a step of CLOCK_REALTIME \
             forward makes it): the producer, instead of giving up with kind=peer-gone, began \
             another slice{lead}. ETIMEDOUT is a slice that timed out, however long it lasted: \
             ask Peer::gone() then, and return PeerGone if the peer is gone; do not measure the \
             slice and wait again"
        )));
    }
    producer_gives_up(&mut handover, producer, killed, "semaphores")?;
    Ok(
        "semaphores: the producer gave up at a slice that timed out early with the consumer gone"
            .into(),
    )
}

/// `EINTR` with the peer gone and nothing there is no timed-out slice: the grader holds the
/// producer (waiting for ok, the consumer held before a record) as its `kill(consumer, 0)`
/// after a timed-out slice returns, kills the consumer and waits until it is reaped, then makes
/// the producer's next timed wait fail at once with `EINTR` (as a signal handler does) and
/// holds the one after. `EINTR` is waited through: the producer must wait again, a whole slice,
/// and give up only when that slice has timed out.
fn not_gone_at_eintr(run: &mut Run) -> Result<String, Fail> {
    // Whether the EINTR was given, and whether a timed wait followed it.
    let (mut handover, killed, tried) =
        consumer_reaped_then_wait_fails(run, libc::EINTR, |second, _| {
            Ok(
                if second.failed_before(Instant::now() + Duration::from_secs(2))? {
                    Some(second.held_before(Instant::now() + Duration::from_millis(500))?)
                } else {
                    None
                },
            )
        })?;
    let producer = handover.producer;
    let tried = tried.flatten();
    if tried == Some(false) {
        let mut said = None;
        while let Some(message) = handover.proc.recv_before(Instant::now() + WAIT_SLICE * 5)? {
            if message.kind == "failed" && message.get("role") == Some("producer") {
                said = Some(message);
                break;
            }
        }
        handover.proc.kill_tree();
        return Err(match said {
            Some(message) if message.get("kind") == Some("peer-gone") => Fail::failed(
                "the grader killed the consumer while the producer waited for its ok \
                 (semaphores), waited until the parent had reaped it, then made the producer's \
                 next timed wait return EINTR at once (as a signal handler makes it), with \
                 nothing posted: the producer gave up with kind=peer-gone at that EINTR, \
                 without another timed wait. EINTR is no timed-out slice: wait again, with a \
                 fresh deadline, and ask Peer::gone() only when a slice has timed out \
                 (ETIMEDOUT)",
            ),
            Some(message) => report_failure(&message, "semaphores"),
            None => Fail::failed(
                "the grader killed the consumer while the producer waited for its ok \
                 (semaphores), waited until the parent had reaped it, then made the producer's \
                 next timed wait return EINTR at once: the producer made no timed wait after \
                 it, and reported nothing. EINTR is waited through: wait again, with a fresh \
                 deadline, and ask Peer::gone() only when a slice has timed out",
            ),
        });
    }
    producer_gives_up(&mut handover, producer, killed, "semaphores")?;
    Ok(match tried {
        Some(true) => "semaphores: the producer waited again after an EINTR with the consumer \
                       gone, and gave up when that slice timed out"
            .into(),
        _ => "semaphores: the EINTR with the consumer gone not tried".into(),
    })
}

/// Holds the producer (waiting for ok, the consumer held before a record) as its
/// `kill(consumer, 0)` after a timed-out slice returns, kills the consumer and waits until it
/// is reaped, then makes the producer's next timed wait fail at once with `errno` and holds the
/// one after. Returns the run, when the consumer was killed, and what `judge` made of the
/// tracer of those two waits (given the producer), `None` when the producer could not be held.
pub(super) fn consumer_reaped_then_wait_fails<T>(
    run: &mut Run,
    errno: i32,
    judge: impl FnOnce(&mut Tracer, i32) -> Result<T, Fail>,
) -> Result<(Handover, Instant, Option<T>), Fail> {
    use crate::engine::tracer::{Action, Call};
    let at = run.rng().random_range(10..50u64).to_string();
    let mut handover = Handover::start(run, "semaphores", 100, &["--pause-consumer-at", &at])?;
    handover.go()?;
    let (producer, consumer) = (handover.producer, handover.consumer);
    let paused = handover.proc.recv("paused")?;
    if paused.get("role") != Some("consumer") {
        return Err(Fail::Grader("the wrong side paused".into()));
    }
    let wait = forced_waits::waiting_in(producer).and_then(forced_waits::the_wait);
    let asks = Call::arg_is(libc::SYS_kill, 0, consumer as u64);
    let first = match wait {
        Some(_) => Tracer::attach(producer, asks, Action::HoldAfter)?,
        None => None,
    };
    let first = match first {
        Some(mut tracer) => {
            if tracer.held_before(Instant::now() + WAIT_SLICE * 20)? {
                Some(tracer)
            } else {
                tracer.release();
                None
            }
        }
        None => None,
    };
    kill(Pid::from_raw(consumer), Signal::SIGKILL)
        .map_err(|e| Fail::Grader(format!("kill: {e}")))?;
    let killed = Instant::now();
    let mut judged = None;
    if let (Some(tracer), Some(wait)) = (first, wait) {
        // Reaped: Peer::gone() says so from now on.
        while probe::state(consumer).is_some() && killed.elapsed() < NOTICE_LIMIT {
            std::thread::sleep(Duration::from_millis(1));
        }
        tracer.release_stopped(producer)?;
        let second = Tracer::in_turn(producer, [(wait, Step::Fail(errno)), (wait, Step::Hold)])?;
        force::resume(producer)?;
        if let Some(mut second) = second {
            judged = Some(judge(&mut second, producer)?);
            second.release();
        }
    }
    Ok((handover, killed, judged))
}

/// Reads what the program says to its end (the consumer killed at `killed`), then lets the
/// parent exit: the producer must report kind=peer-gone within [`NOTICE_LIMIT`].
fn producer_gives_up(
    handover: &mut Handover,
    producer: i32,
    killed: Instant,
    mechanism: &str,
) -> Result<(), Fail> {
    let mut noticed = false;
    loop {
        let message = match handover.proc.recv_before(killed + NOTICE_LIMIT)? {
            Some(message) => message,
            None => return Err(still_waiting(producer, "producer", "consumer")),
        };
        match (message.kind.as_str(), message.get("kind")) {
            ("failed", Some("peer-gone")) if message.get("role") == Some("producer") => {
                noticed = true;
            }
            ("failed", _) => return Err(report_failure(&message, mechanism)),
            ("ended", _) => break,
            (kind, _) => {
                return Err(Fail::failed(format!(
                    "the program said an unexpected `{kind}`"
                )));
            }
        }
    }
    handover.exit()?;
    if !noticed {
        return Err(Fail::failed(
            "the producer ended without reporting kind=peer-gone after the consumer was killed",
        ));
    }
    Ok(())
}
