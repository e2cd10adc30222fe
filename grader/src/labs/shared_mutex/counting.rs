//! Every transfer and every finish counts: exact totals under contention, data through the
//! mapping, and nothing touching the bank while someone else holds its mutex.

use std::time::{Duration, Instant};

use rand::RngExt;

use super::bank_view::ordinal;
use super::count_stores;
use super::late_watches;
use super::lock_calls::{self, LockCalls, LockEvent};
use super::probe::{self, Place, Sleep};
use super::segment::{Counts, Journal, Segment};
use super::session::{Session, role_of};
use super::totals::verify;
use super::{ACCOUNTS, LIGHT_WORK};
use crate::engine::tracer::{Field, Tracer, Watched};
use crate::engine::waiting::{self, WaitRules};
use crate::engine::{Fail, Run, force};

/// Transfers per worker, so that a correct run takes 0.1-0.3 s and an unprotected one loses
/// updates every time, even with all workers on one CPU (measured: 0 misses in 800 runs).
const WORK: u64 = 150_000;
/// Transfers of each worker that transfers while the grader holds the lock.
const HELD_WORK: u64 = 20_000;
/// Between which of the bank's counts the first run's worker watched from the middle of its run
/// is stopped and watched: far from every worker's end.
const MIDWAY_FROM: u64 = WORK / 50;
const MIDWAY_TO: u64 = WORK / 10;

pub(super) fn exact_totals(run: &mut Run) -> Result<String, Fail> {
    let mut times = Vec::new();
    let mut calls = 0;
    for round in 1..=3 {
        let mut session = Session::start(run, &[WORK; 4], &[])?;
        let started = Instant::now();
        session.go()?;
        // In the first run, one worker is watched from the middle of its run, untraced before.
        let midway = if round == 1 {
            late_watches::watch_midway(run, &session, MIDWAY_FROM, MIDWAY_TO)?
        } else {
            None
        };
        let outcome = session.finish(0, |_| Ok(()))?;
        times.push(started.elapsed().as_millis());
        let in_round = |fail| match fail {
            Fail::Failed(m) => Fail::failed(format!("run {round} of 3: {m}")),
            other => other,
        };
        let transfers = verify(&session, &outcome, &[], 0).map_err(in_round)?;
        if let Some(midway) = midway {
            midway.judge().map_err(in_round)?;
        }
        if let Some(io) = outcome.io {
            calls = calls.max(io.read_calls + io.write_calls);
            through_the_mapping(&session, transfers, io).map_err(in_round)?;
        }
    }
    let kept = if super::balances_kept::balances_read_under_the_lock(run)? {
        "; balances changed by the grader midway, holding the mutex, were kept"
    } else {
        ""
    };
    Ok(format!(
        "3 runs of 4 workers x {WORK} transfers: count and every balance exact ({times:?} ms), \
         with at most {calls} read/write calls in a run{kept}"
    ))
}

/// The bank's data moves through the mapping: a run of many transfers makes next to no
/// read-like system calls, and no write-like ones beyond what the program printed (the control
/// messages are not counted).
fn through_the_mapping(
    session: &Session,
    transfers: u64,
    io: crate::engine::inspect::IoCounters,
) -> Result<(), Fail> {
    let allowed = 64 + transfers / 1000;
    let printed: u64 = [&session.proc.stdout, &session.proc.stderr]
        .iter()
        .map(|c| {
            let c = c.lock().expect("capture lock");
            c.bytes.len() as u64 + c.dropped
        })
        .sum();
    let unprinted = io.written_bytes.saturating_sub(printed);
    if io.read_calls <= allowed && (io.write_calls <= allowed || unprinted <= 256 * 1024) {
        return Ok(());
    }
    // Reads alone may be the data's, or files a transfer has no need of.
    let cause = if io.write_calls <= allowed || unprinted <= 256 * 1024 {
        "either the bank's data went through a descriptor (read, pread) instead of the shared \
         mapping, or the program read files a transfer has no need of (its /proc/self/status, \
         whose TracerPid says whether it is traced, say)"
    } else {
        "the bank's data went through a descriptor (read/write, pread/pwrite) instead of the \
         shared mapping"
    };
    Err(Fail::failed(format!(
        "the totals are right, but for {transfers} transfers the coordinator and its workers \
         made {} read and {} write system calls ({} bytes read, {} written, {printed} of them \
         printed): {cause}; a transfer reads and writes the Bank through the pointer \
         mmap(MAP_SHARED) returned for {}, and reads nothing else",
        io.read_calls,
        io.write_calls,
        io.read_bytes,
        io.written_bytes,
        super::segment::dev_shm(&session.name).display()
    )))
}

/// The bank's fields, to say what changed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fields {
    counts: Counts,
    transfers: u64,
    journal: Journal,
    accounts: Vec<i64>,
}

fn fields(segment: &Segment) -> Result<Fields, Fail> {
    let (transfers, accounts) = segment.bank()?;
    Ok(Fields {
        counts: segment.counts()?,
        transfers,
        journal: segment.journal()?,
        accounts,
    })
}

pub(super) fn everything_under_the_lock(run: &mut Run) -> Result<String, Fail> {
    // Two workers only finish, two transfer first: every one of them meets the grader's lock.
    let mut work = [0, 0, HELD_WORK, HELD_WORK];
    let swap = run.rng().random_range(0..4usize);
    work.swap(0, swap);
    let mut session = Session::start(run, &work, &[])?;
    session.coordinator_settled();
    let held = probe::hold(&session.segment, Duration::from_secs(2))?;
    let bytes_before = session.segment.guarded_bytes()?;
    let before = fields(&session.segment)?;
    // A worker with no transfers (it goes straight to finish()'s lock) is watched on the
    // mutex's lock word while the grader holds the mutex: a waiter that sleeps looks at it a
    // few times; one that spins on it before sleeping (a trylock loop) many times.
    let spinner = work
        .iter()
        .position(|&w| w == 0)
        .map(|index| session.workers[index]);
    let lock_watch =
        match spinner.and_then(|pid| lock_word_address(&session, pid).map(|a| (pid, a))) {
            Some((pid, address)) => Tracer::watch_at(pid, address, LOCK_WORD)?.map(|t| (pid, t)),
            None => None,
        };
    // And a worker with transfers to make: its first transfer's lock meets the grader's too.
    let transferrer = work
        .iter()
        .position(|&w| w == HELD_WORK)
        .map(|index| session.workers[index]);
    let transfer_watch =
        match transferrer.and_then(|pid| lock_word_address(&session, pid).map(|a| (pid, a))) {
            Some((pid, address)) => Tracer::watch_at(pid, address, LOCK_WORD)?.map(|t| (pid, t)),
            None => None,
        };
    // The other two are stopped at their lock calls on the mutex (breakpoints): a waiter calls
    // pthread_mutex_lock() first, no try or timed lock before it.
    let mut lock_calls = Vec::new();
    for (index, _) in work
        .iter()
        .enumerate()
        .filter(|&(index, &w)| work[..index].contains(&w))
    {
        let pid = session.workers[index];
        if let Some(address) = lock_word_address(&session, pid)
            && let Some(calls) = LockCalls::start(pid, address)?
        {
            let called = if work[index] == 0 {
                "finish()"
            } else {
                "transfer()"
            };
            lock_calls.push((pid, calls, called));
        }
    }
    session.go()?;
    // Judged once the other ways of waiting have been (their messages say more).
    let mut first_calls = Vec::new();
    for (pid, calls, called) in lock_calls {
        first_calls.push(first_lock_call(pid, calls, called));
    }
    if let Some((pid, tracer)) = lock_watch {
        looks_before_sleeping(pid, tracer, "finish()")?;
    }
    if let Some((pid, tracer)) = transfer_watch {
        looks_before_sleeping(pid, tracer, "transfer()")?;
    }
    // Every worker should now wait for the grader's lock.
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until
        && !session
            .workers
            .iter()
            .all(|&w| matches!(probe::sleeping(w), Sleep::Futex { .. }))
    {
        std::thread::sleep(Duration::from_millis(2));
    }
    let role = role_of(session.coordinator);
    let waiters = waiting::expect_blocked(
        &session.workers,
        &role,
        WaitRules::default(),
        "a process that waits for the lock must sleep in pthread_mutex_lock() until the holder \
         unlocks",
    )
    .map_err(never_seen_blocked)?;
    let after = fields(&session.segment)?;
    if session.segment.guarded_bytes()? != bytes_before || after != before {
        return Err(changed_under_the_lock(&before, &after));
    }
    for waiter in waiters.iter().filter(|w| w.tid == w.pid) {
        // A few looks: one that is never asleep on a futex spins, even if the machine's load
        // kept its share of the CPU below what the watch calls spinning.
        let mut sleep = probe::sleeping(waiter.pid);
        for _ in 0..20 {
            if matches!(sleep, Sleep::Futex { .. }) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
            sleep = probe::sleeping(waiter.pid);
        }
        let Sleep::Futex { address } = sleep else {
            let doing = match sleep {
                Sleep::Call(nr) => format!("waited in {}", probe::call_name(nr)),
                _ => "was on the CPU whenever the grader looked, never asleep".to_string(),
            };
            return Err(Fail::failed(format!(
                "while the grader held the bank's mutex, {} (pid {}) {doing} instead of \
                 sleeping on the mutex: a process that waits for the lock must sleep in \
                 pthread_mutex_lock() on the mutex in the segment until the holder unlocks",
                waiter.role, waiter.pid,
            )));
        };
        let place = probe::place(waiter.pid, &session.name, &session.segment.layout, address);
        if place != Place::Mutex {
            return Err(Fail::failed(format!(
                "while the grader held the bank's mutex, {} (pid {}) slept on {}: a worker \
                 waits for the bank's lock, the mutex in the segment",
                waiter.role,
                waiter.pid,
                place.describe()
            )));
        }
        // A wait with a timeout wakes up by itself to look again: a poll, whatever its period.
        if probe::futex_has_timeout(waiter.pid) == Some(true) {
            return Err(Fail::failed(format!(
                "while the grader held the bank's mutex, {} (pid {}) slept on the mutex with a \
                 timeout (pthread_mutex_timedlock(), its futex() wait given a deadline): it \
                 wakes up by itself to look again while the holder still has the lock, which \
                 is polling, whatever the period; lock() waits in pthread_mutex_lock(), with \
                 no timeout, until the holder unlocks",
                waiter.role, waiter.pid
            )));
        }
    }
    first_calls.into_iter().collect::<Result<Vec<()>, Fail>>()?;
    // One worker with transfers to do is watched: each store to the count must be made with
    // the mutex held by that worker.
    let watched = work
        .iter()
        .position(|&w| w > 0)
        .map(|index| session.workers[index]);
    let tracer = match watched {
        Some(pid) => count_stores::watch(&session, pid)?.map(|t| (pid, t)),
        None => None,
    };
    // The other worker with transfers to do: between two of its stores to the count it lets go
    // of the mutex and takes it again.
    let relocks = work
        .iter()
        .enumerate()
        .filter(|&(_, &w)| w > 0)
        .nth(1)
        .and_then(|(index, _)| Relocks::watch(&session, session.workers[index]));
    drop(held);
    let stores = match tracer {
        Some((pid, tracer)) => count_stores::judge(&mut session, pid, tracer)?,
        None => 0,
    };
    if let Some(relocks) = relocks {
        relocks.judge()?;
    }
    let outcome = session.finish(0, |_| Ok(()))?;
    let transfers = verify(&session, &outcome, &[], 0)?;
    let alone = if relocks_alone(run)? {
        "; a worker alone also let go of the mutex between two transfers"
    } else {
        ""
    };
    let coordinator_held = if waits_for_the_coordinators_hold(run)? {
        "; workers forked from a coordinator that had locked before (tried transfers) slept \
         while it held the mutex"
    } else {
        ""
    };
    Ok(format!(
        "while the grader held the mutex the bank stood still and all 4 workers slept on it; \
         then {transfers} transfers and 4 finishes all counted ({stores} stores to the count \
         watched, each made holding the mutex, the journal still active){alone}{coordinator_held}"
    ))
}

/// Workers whose first lock meets the coordinator's hold wait for it, as for any holder: the
/// coordinator has locked before its forks (`--try-transfers`), so the workers are its copies
/// from after a lock; woken by the grader's broadcast, it is stopped by a watchpoint at its read
/// of the counts in `wait_all_done()`, the mutex held, and the workers are let go. Each must
/// sleep on the mutex until the coordinator goes on. `false` if it could not be stopped there.
fn waits_for_the_coordinators_hold(run: &mut Run) -> Result<bool, Fail> {
    let tried = ["--try-transfers".to_string(), "0,1".into()];
    // The tried transfer: 1 from account 0 to account 1.
    let mut delta = vec![0i64; ACCOUNTS];
    (delta[0], delta[1]) = (-1, 1);
    let tried_transfer = [(1u64, delta)];
    let mut session = Session::start(run, &[LIGHT_WORK; 2], &tried)?;
    session.coordinator_settled();
    let coordinator = session.coordinator;
    let counts: &'static [Field] = Box::leak(Box::new([Field {
        // The counts, loads too: the coordinator reads them in wait_all_done(), mutex held.
        offset: session.segment.layout.counts_at,
        len: 8,
        loads: true,
    }]));
    let tracer = match probe::mappings(coordinator, &session.name)
        .into_iter()
        .find(|m| m.offset == 0)
    {
        Some(map) => Tracer::watch_at(coordinator, map.start, counts)?,
        None => None,
    };
    let Some(mut tracer) = tracer else {
        return finish_unjudged(session, &tried_transfer);
    };
    let until = Instant::now() + Duration::from_secs(2);
    let mut broadcast = false;
    let held = loop {
        match tracer.next_watched(Instant::now() + Duration::from_millis(5))? {
            Some(Watched::Hit) => break true,
            Some(Watched::Armed) | None if !broadcast => {
                broadcast = probe::broadcast(&session.segment)
            }
            Some(Watched::Armed) | None if Instant::now() < until => {}
            _ => break false,
        }
    };
    if !held || session.segment.mutex_owner()? != coordinator {
        drop(tracer);
        return finish_unjudged(session, &tried_transfer);
    }
    // Not Session::go(), which waits for the coordinator to sleep on the condition variable.
    for _ in &session.workers {
        session.proc.send("go", &[])?;
    }
    let until = Instant::now() + Duration::from_millis(500);
    let mut failed = None;
    while Instant::now() < until && failed.is_none() {
        let asleep = session
            .workers
            .iter()
            .all(|&w| matches!(probe::sleeping(w), Sleep::Futex { .. }));
        if asleep {
            break;
        }
        match session.next_before(Instant::now() + Duration::from_millis(2))? {
            Some(message) if message.kind == "failed" => failed = Some(message),
            Some(message) => session.set_aside(message),
            None => {}
        }
    }
    // Dropped: the coordinator goes on and lets go of the mutex.
    drop(tracer);
    if let Some(message) = failed {
        session.proc.kill_tree();
        let _ = std::fs::remove_file(super::segment::dev_shm(&session.name));
        return Err(Fail::failed(format!(
            "the coordinator had locked the bank's mutex before forking its workers (tried \
             transfers), and held it again in wait_all_done() (stopped by a watchpoint at its \
             read of the counts, its thread id {coordinator} in the mutex's owner word) when \
             the workers started: worker pid {}'s transfer failed with kind={} ({}) instead of \
             waiting: a mutex held by another process is waited for, pthread_mutex_lock() \
             sleeps until it is unlocked; if lock() compares the owner word with a thread id, \
             that id must be the calling thread's (a value kept from before fork() is the \
             coordinator's)",
            message.get("pid").unwrap_or("?"),
            message.get("kind").unwrap_or("none"),
            message.get("error").unwrap_or("")
        )));
    }
    let outcome = session.finish(0, |_| Ok(()))?;
    verify(&session, &outcome, &tried_transfer, 0)?;
    Ok(true)
}

/// Lets a session that could not be brought where its check wanted run to its end; `extra` as
/// [`verify`] takes it.
fn finish_unjudged(mut session: Session, extra: &[(u64, Vec<i64>)]) -> Result<bool, Fail> {
    session.go()?;
    let outcome = session.finish(0, |_| Ok(()))?;
    verify(&session, &outcome, extra, 0)?;
    Ok(false)
}

/// A worker alone in its run (nobody waits for the mutex, the coordinator asleep on the
/// condition variable) still unlocks after each transfer and locks again: a lock kept while
/// nobody waits is still kept outside any transfer. `false` if it could not be watched.
fn relocks_alone(run: &mut Run) -> Result<bool, Fail> {
    // Slowed down (busy work in the middle of each transfer), so that the grader can pick the
    // moment of its second watch: a transfer late in the run is judged too, not only the first.
    let stretch = ["--stretch".to_string(), ALONE_STRETCH.to_string()];
    let mut session = Session::start(run, &[ALONE_WORK], &stretch)?;
    session.coordinator_settled();
    let worker = session.workers[0];
    let relocks = Relocks::watch_then_hold(&session, worker);
    session.go()?;
    let watched = relocks.is_some();
    if let Some(relocks) = relocks {
        relocks.judge()?;
    }
    // Held since the first watch ended: let go a millisecond at a time up to the second, so
    // that a grader slowed by the machine's load does not miss it.
    let from = run.rng().random_range(ALONE_WORK / 4..ALONE_WORK / 3);
    let until = Instant::now() + Duration::from_secs(3);
    let mut made = session.segment.bank()?.0;
    while watched && Instant::now() < until && made < from {
        force::resume(worker)?;
        std::thread::sleep(Duration::from_millis(1));
        if force::hold(worker).is_err() {
            break;
        }
        made = session.segment.bank()?.0;
    }
    // The tracer lets the stopped worker go on once it has seized it; it is held again when
    // the watch ends, for the breakpoints at its lock calls.
    let late = (watched && (from..ALONE_WORK - 2 * u64::from(RELOCKS_WATCHED)).contains(&made))
        .then(|| Relocks::watch_then_hold(&session, worker))
        .flatten();
    force::resume(worker)?;
    if let Some(late) = late {
        late.judge_after(made)?;
        late_watches::late_lock_calls(&session, worker, made)?;
    }
    let outcome = session.finish(0, |_| Ok(()))?;
    verify(&session, &outcome, &[], 0)?;
    Ok(watched)
}

/// A thread that was never seen in a system call is listed with no call: say so.
pub(super) fn never_seen_blocked(fail: Fail) -> Fail {
    match fail {
        Fail::Failed(m) => Fail::Failed(m.replace(
            "(seen )",
            "(never seen blocked in a system call: it gives up the CPU between tries)",
        )),
        other => other,
    }
}

/// What changed in the bank while the grader held its mutex, and who must have done it.
fn changed_under_the_lock(before: &Fields, after: &Fields) -> Fail {
    let mut changes = Vec::new();
    let mut culprits = Vec::new();
    if after.transfers != before.transfers || after.accounts != before.accounts {
        changes.push(format!(
            "transfers {} -> {}, balances {:?} -> {:?}",
            before.transfers, after.transfers, before.accounts, after.accounts
        ));
        culprits.push("transfers ran without holding it");
    }
    if after.journal != before.journal {
        changes.push("the journal was written".to_string());
    }
    if after.counts != before.counts {
        changes.push(format!(
            "finished {} -> {}, dead {} -> {}",
            before.counts.finished, after.counts.finished, before.counts.dead, after.counts.dead
        ));
        culprits.push("finish() counted without holding it");
    }
    if changes.is_empty() {
        changes.push("bytes of the bank outside its fields".to_string());
    }
    Fail::failed(format!(
        "while the grader held the bank's mutex, the bank in the segment changed: {}; {}: every read and write of the bank (a transfer from \
         its first read to its last write, finish() and wait_all_done() too) happens with the \
         mutex in the segment locked (SharedBank::lock)",
        changes.join("; "),
        if culprits.is_empty() {
            "a process wrote the bank without holding it".to_string()
        } else {
            culprits.join(", and ")
        }
    ))
}

/// The transfers of the worker alone, and the busy work in the middle of each (iterations).
const ALONE_WORK: u64 = 4000;
const ALONE_STRETCH: u32 = 6_000;

/// How many transfers of the second worker are watched for their lock and unlock (each stops
/// it at a few stores to the lock word).
const RELOCKS_WATCHED: u32 = 30;

/// A worker's stores to the count and to the mutex's lock word, watched on a thread of the
/// grader: between two stores to the count (two transfers) it must store to the lock word (its
/// unlock, then its next lock). A lock kept from one transfer to the next still holds the mutex
/// at every store and keeps the totals exact, but the workers then take turns by whole runs
/// and transfer() returns with the lock held.
pub(super) struct Relocks {
    pid: i32,
    /// Whether two transfers in a row came without a release of the lock word between them;
    /// `None` if the watch saw too few. The transfer (from 1) that followed the last without
    /// one, and how many stores between the two left the word holding the worker's thread id.
    seen: std::sync::mpsc::Receiver<Option<Option<(u32, u32)>>>,
}

impl Relocks {
    /// `None` when the worker's mapping is not found or it cannot be watched.
    pub(super) fn watch(session: &Session, pid: i32) -> Option<Relocks> {
        Relocks::start(session, pid, false)
    }

    /// As [`Relocks::watch`], and the worker left stopped (SIGSTOP) when the watch ends.
    fn watch_then_hold(session: &Session, pid: i32) -> Option<Relocks> {
        Relocks::start(session, pid, true)
    }

    fn start(session: &Session, pid: i32, hold_after: bool) -> Option<Relocks> {
        let map = probe::mappings(pid, &session.name)
            .into_iter()
            .find(|m| m.offset == 0)?;
        let layout = session.segment.layout;
        // The tracer keeps its fields for its life: a few bytes a run.
        let fields: &'static [Field] = Box::leak(Box::new([
            Field {
                offset: layout.transfers_at,
                len: 8,
                loads: false,
            },
            Field {
                offset: layout.mutex_at,
                len: 4,
                loads: false,
            },
        ]));
        let lock_word = super::relock_values::LockWord::open(&session.name, layout.mutex_at)?;
        let mut tracer = Tracer::watch_at(pid, map.start, fields).ok()??;
        let (tell, seen) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(5);
            let (mut transfers, mut releases, mut kept_stores) = (0, 0, 0);
            let mut kept = None;
            while Instant::now() < until && transfers < RELOCKS_WATCHED {
                match tracer.next_watched(until) {
                    Ok(None | Some(Watched::Armed)) => {}
                    Ok(Some(Watched::Hit)) => {
                        if tracer.last_hit() == 1 {
                            // Stopped right after its store: an unlock leaves the word without
                            // its thread id (no later store of its own can come in between).
                            if lock_word.released_by(pid) {
                                releases += 1;
                            } else {
                                kept_stores += 1;
                            }
                        } else {
                            transfers += 1;
                            if transfers > 1 {
                                kept = Some((releases == 0).then_some((transfers, kept_stores)));
                                if releases == 0 {
                                    break;
                                }
                            }
                            (releases, kept_stores) = (0, 0);
                        }
                        tracer.go_on();
                    }
                    _ => break,
                }
            }
            if hold_after {
                // Stopped by the tracer now: it stays stopped once let go.
                let _ = force::hold(pid);
            }
            // Dropped here: the watchpoints are cleared and the worker let go.
            drop(tracer);
            let _ = tell.send(kept);
        });
        Some(Relocks { pid, seen })
    }

    fn judge(self) -> Result<(), Fail> {
        self.judge_after(0)
    }

    /// As [`Relocks::judge`], for a watch begun once the worker had made `made` transfers
    /// (its first ones judged by an earlier watch).
    /// The transfer (from 1 in the watch) that followed another with no store to the lock
    /// word between them, if the watch saw one.
    /// With it, how many stores to the lock word between the two left it the worker's.
    pub(super) fn kept_at(&self) -> Option<(u32, u32)> {
        match self.seen.recv_timeout(Duration::from_secs(6)) {
            Ok(Some(Some(at))) => Some(at),
            _ => None,
        }
    }

    fn judge_after(self, made: u64) -> Result<(), Fail> {
        match self.kept_at() {
            Some((at, kept_stores)) => {
                let second = made + u64::from(at);
                let warmed_up = if made > 0 {
                    format!(
                        " (a watch begun with {made} transfers made; its first ones, watched \
                         too, each took and released the mutex: a lock kept only once the \
                         worker has warmed up is kept all the same)"
                    )
                } else if at > 2 {
                    format!(
                        ", after {} transfers that each took and released the mutex (a lock \
                         kept only once the worker has warmed up is kept all the same)",
                        at - 2
                    )
                } else {
                    String::new()
                };
                Err(Fail::failed(format!(
                    "a worker (pid {}) made two transfers in a row, its {} and {}{warmed_up} \
                     (two stores to Bank::transfers, seen with a hardware watchpoint on the \
                     count) without {}: it kept the bank's mutex from one transfer to \
                     the next, so the workers take turns by whole runs of transfers; each \
                     transfer is a critical section of its own: lock, journal, debit, \
                     midway(), credit, count, clear the journal, unlock (transfer() returns \
                     with the mutex released)",
                    self.pid,
                    ordinal(second as usize - 1),
                    ordinal(second as usize),
                    super::relock_values::no_release(kept_stores),
                )))
            }
            None => Ok(()),
        }
    }
}

/// The mutex's lock word (glibc's `__lock`, at the mutex's start), loads and stores.
const LOCK_WORD: &[Field] = &[Field {
    offset: 0,
    len: 4,
    loads: true,
}];
/// How many accesses to the lock word a waiter may make while the grader holds the mutex:
/// glibc's pthread_mutex_lock() makes at most three before it sleeps in futex() (a load, a
/// compare-and-swap that sets the waiters bit, one more if another waiter set it first); a
/// trylock makes two, so even a few tries before sleeping pass this.
const LOOKS_ALLOWED: u32 = 10;

/// While the grader holds the mutex, worker `pid`'s first call on it (breakpoints at the lock
/// functions) must be `pthread_mutex_lock()`: a try or a timed lock first is a spin or a poll
/// before it sleeps, however short.
fn first_lock_call(pid: i32, mut calls: LockCalls, called: &str) -> Result<(), Fail> {
    let until = Instant::now() + Duration::from_millis(800);
    let which = loop {
        match calls.next(until)? {
            LockEvent::Call(which) => break which,
            LockEvent::Nothing if Instant::now() < until => {}
            // Never seen locking: judged below (it must sleep on the mutex).
            _ => return Ok(()),
        }
    };
    calls.go_on();
    drop(calls);
    if which == lock_calls::LOCK {
        return Ok(());
    }
    Err(Fail::failed(format!(
        "while the grader held the bank's mutex, a worker (pid {pid}) that called {called} \
         first called {}() on the mutex (a breakpoint at each of the C library's lock \
         functions), not pthread_mutex_lock(): it tries the lock before it sleeps (a spin \
         before sleeping, however short: a few pthread_mutex_trylock() calls) or polls it (a \
         timed lock); a process that waits for the lock calls pthread_mutex_lock() at once, \
         which sleeps in the kernel until the holder unlocks",
        lock_calls::function_name(which)
    )))
}

/// Where `pid` maps the bank's mutex.
pub(super) fn lock_word_address(session: &Session, pid: i32) -> Option<u64> {
    let map = probe::mappings(pid, &session.name)
        .into_iter()
        .find(|m| m.offset == 0)?;
    Some(map.start + session.segment.layout.mutex_at as u64)
}

/// While the grader holds the mutex, worker `pid` (watched on the lock word, loads too) must go
/// to sleep after a few looks at it, not spin on it.
fn looks_before_sleeping(pid: i32, mut tracer: Tracer, called: &str) -> Result<(), Fail> {
    let started = Instant::now();
    let until = started + Duration::from_millis(800);
    let mut looks = 0;
    while Instant::now() < until {
        match tracer.next_watched(Instant::now() + Duration::from_millis(20))? {
            Some(Watched::Armed) => {}
            Some(Watched::Hit) => {
                looks += 1;
                if looks > LOOKS_ALLOWED {
                    drop(tracer);
                    return Err(Fail::failed(format!(
                        "while the grader held the bank's mutex, a worker (pid {pid}) that \
                         called {called} read or wrote the mutex's lock word more than \
                         {LOOKS_ALLOWED} times in {} ms (a hardware watchpoint on it) without \
                         ever staying asleep for 20 ms: it spins on the mutex \
                         (pthread_mutex_trylock() in a loop, however short, before it sleeps), \
                         or polls it (a timed lock with a short timeout, retried), burning the \
                         CPU the holder needs to finish and unlock; a process that waits for \
                         the lock must sleep in pthread_mutex_lock(), called at once: it looks \
                         at the word a few times, then sleeps in the kernel until the holder \
                         unlocks",
                        started.elapsed().as_millis()
                    )));
                }
                tracer.go_on();
            }
            Some(_) => break,
            None => {
                if matches!(probe::sleeping(pid), Sleep::Futex { .. }) {
                    break;
                }
            }
        }
    }
    drop(tracer);
    Ok(())
}
