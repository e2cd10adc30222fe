//! Robustness: a holder that dies (a worker killed mid-transfer, a grader's thread that ends
//! with the lock) must be met with `EOWNERDEAD`, repaired, and the mutex made consistent. A
//! mutex left unrecoverable is in `unrecoverable`.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rand::RngExt;

use super::attributes::Watching;
use super::messages::{failure, field, index_of, layout_of, list};
use super::probe::{self, DyingHolder, KIND_ROBUST, Place};
use super::segment::{open_segment, told_transfer};
use super::session::{Session, let_coordinator_look};
use super::totals::{expected, verify};
use super::{ACCOUNTS, LIGHT_WORK};
use crate::engine::tracer::{Action, Call, Field, Tracer, Watched};
use crate::engine::{Fail, Run, force, inspect};

/// Transfers per worker in a run where a holder dies.
const CRASH_WORK: u64 = 20_000;
/// How long the grader watches for a step a correct program takes at once.
pub(super) const STEP: Duration = Duration::from_secs(2);

/// Fails unless the mutex in the segment is robust.
pub(super) fn robust(session: &Session) -> Result<(), Fail> {
    let kind = session.segment.mutex_kind()?;
    if kind & KIND_ROBUST == 0 {
        return Err(Fail::failed(format!(
            "the mutex is not robust (kind word {kind}): set PTHREAD_MUTEX_ROBUST with \
             pthread_mutexattr_setrobust(), or a worker that dies holding it blocks all the \
             others for ever"
        )));
    }
    Ok(())
}

pub(super) fn owner_dies(run: &mut Run) -> Result<String, Fail> {
    let crasher = run.rng().random_range(0..4usize);
    let after = run.rng().random_range(100..5000u64);
    let extra = [
        "--crash-worker".to_string(),
        crasher.to_string(),
        "--crash-after".into(),
        after.to_string(),
    ];
    // The other workers start only once the crasher holds the lock (the program sees to it), so
    // someone is always left to find it dead, and until then the bank is the crasher's alone.
    let mut session = Session::start(run, &[CRASH_WORK; 4], &extra)?;
    robust(&session)?;
    let victim = session.workers[crasher];
    let survivors: Vec<i32> = session
        .workers
        .iter()
        .copied()
        .filter(|&w| w != victim)
        .collect();
    let segment = session.segment.handle()?;
    let opening = segment.layout.opening;
    let (coordinator, name, layout) = (session.coordinator, session.name.clone(), segment.layout);
    session.go()?;
    let mut held: Option<(u64, Vec<i64>)> = None;
    // The transfer the crasher died in, as the grader saw it at the hold.
    let mut cut: Option<Cut> = None;
    // The count found raised at the hold, before the credit (judged after the totals).
    let mut counted_early: Option<Fail> = None;
    // Whether the coordinator slept on the condition variable when the holder died: then only
    // a worker can be the next to lock, and meet EOWNERDEAD.
    let mut coordinator_waiting = false;
    let outcome = session.finish(1, |message| {
        // The crasher stopped with the lock held: look, then kill it there.
        if index_of(message)? != crasher {
            return Err(Fail::Grader(
                "an unexpected worker stopped mid-transfer".into(),
            ));
        }
        let done: u64 = field(message, "transfers")?;
        let delta: Vec<i64> = list(message, "delta")?;
        held = Some((done, delta.clone()));
        // Held according to the mutex itself, not only to the program.
        let owner = segment.mutex_owner()?;
        if owner != victim {
            return Err(Fail::failed(format!(
                "worker {crasher} (pid {victim}) is in the middle of a transfer (in midway()) \
                 but does not hold the mutex in the segment ({}): lock the bank's mutex \
                 (SharedBank::lock) before a transfer's first read and keep it until its last \
                 write",
                if owner == 0 {
                    "nobody holds it".to_string()
                } else {
                    format!("its holder is thread {owner}")
                }
            )));
        }
        let before: Vec<i64> = delta.iter().map(|d| opening + d).collect();
        cut = Some(match journal_written(&segment, crasher, done, &before)? {
            Ok(cut) => cut,
            Err((cut, fail)) => {
                counted_early = Some(fail);
                cut
            }
        });
        coordinator_waiting = matches!(probe::sleeping(coordinator),
            probe::Sleep::Futex { address }
                if probe::place(coordinator, &name, &layout, address) == Place::Cond);
        // The survivors queue on the mutex behind the crasher; one of them is left there to
        // meet EOWNERDEAD, the others are stopped (see FirstUnlock).
        let until = Instant::now() + STEP / 2;
        while Instant::now() < until
            && !survivors.iter().all(|&w| {
                matches!(probe::sleeping(w), probe::Sleep::Futex { address }
                    if probe::place(w, &name, &layout, address) == Place::Mutex)
            })
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        let first_unlock = FirstUnlock::arm(&segment, &name, &survivors, coordinator)?;
        kill(Pid::from_raw(victim), Signal::SIGKILL)
            .map_err(|e| Fail::Grader(format!("kill: {e}")))?;
        if let Some(first_unlock) = first_unlock {
            first_unlock.judge(&segment, crasher, coordinator_waiting)?;
        }
        settle_after_recovery(&segment, coordinator, &name, &survivors)
    })?;
    let Some((transfers, delta)) = held else {
        return Err(Fail::failed(format!(
            "worker {crasher} never reached the middle of its transfer {after}: call midway() \
             between debit and credit, with the lock held"
        )));
    };
    let extra = [(transfers, delta)];
    verify(&session, &outcome, &extra, 1).map_err(|fail| match (fail, cut) {
        (Fail::Failed(m), Some(cut)) if not_undone(&session, &outcome, &extra, cut) => {
            Fail::failed(format!(
                "worker {crasher} was killed in the middle of its transfer from account {} to \
                 account {}, its journal right, but the bank was not put back: {m}. On \
                 EOWNERDEAD, undo the journaled transfer: put back both balances and the count \
                 the journal saved",
                cut.from, cut.to
            ))
        }
        (other, _) => other,
    })?;
    if let Some(fail) = counted_early {
        return Err(fail);
    }
    let recovered: u64 = outcome.workers.values().map(|w| w.recovered).sum();
    if !coordinator_waiting {
        run.note(
            "the coordinator was not asleep on the condition variable when the holder died: \
                  it may have met EOWNERDEAD itself, so the workers' `recovered` is not judged",
        );
    } else if recovered != 1 {
        return Err(Fail::failed(format!(
            "the bank was repaired after worker {crasher} died, but {recovered} transfers said \
             they had recovered it (the `recovered` the workers counted from transfer()'s \
             result), where exactly one worker's lock met EOWNERDEAD (the coordinator slept on \
             the condition variable): lock() returns a guard with \
             recovered: true after EOWNERDEAD (false otherwise), and transfer() returns it"
        )));
    }
    let ends = outcome.closed.get("workers").unwrap_or("").to_string();
    if !ends.contains("killed-SIGKILL") {
        run.note(format!("the workers ended: {ends}"));
    }
    drop(session);
    // Any amount: nothing limits it, and 0 or a negative one is a transfer like any other.
    let refund = -run.rng().random_range(1..1000i64);
    let mut watched = "";
    for amount in [1, 0, refund] {
        if journal_before_debit(run, amount)? {
            watched = "; a watchpoint on the debited account saw the journal active at the \
                       debit (transfers of 1, 0 and a negative amount)";
        }
    }
    Ok(format!(
        "worker {crasher} (pid {victim}) was killed holding the lock after {transfers} \
         transfers, its journal written; a worker met EOWNERDEAD and said so, the half-done \
         transfer was undone and the totals add up{watched}"
    ))
}

/// A store to the watched account (8 bytes).
static ACCOUNT_STORE: [Field; 1] = [Field {
    offset: 0,
    len: 8,
    loads: false,
}];

/// The journal is active from the moment a transfer starts changing the bank: the coordinator
/// makes one transfer of `amount` (`--try-transfers`, `--try-amounts`) with a hardware
/// watchpoint on the account it debits; at the debit's store, the journal in the segment must
/// be active already and name `from` and `to` as given, with the balances and the count from
/// before. A transfer of 0 or of a negative amount is no exception: it stores the debit too (a
/// store of the same value fires the watchpoint). `false` when the machine does not allow
/// watchpoints.
fn journal_before_debit(run: &mut Run, amount: i64) -> Result<bool, Fail> {
    let from = run.rng().random_range(0..ACCOUNTS);
    let to = (from + run.rng().random_range(1..ACCOUNTS)) % ACCOUNTS;
    let mut pid = 0;
    let outcome = told_transfer(run, 1, (from, to, amount), |_, proc, name| {
        pid = proc.pid.as_raw();
        watch_the_debit(proc, name, from)
    })?;
    let (journal, opening) = match outcome {
        Debit::Stored(journal, opening) => (journal, opening),
        Debit::Unwatched => return Ok(false),
        Debit::NoStore(tried) if tried == "ok" && amount == 0 => {
            return Err(Fail::failed(format!(
                "the coordinator's transfer of 0 from account {from} to account {to} went \
                 through (ok) without ever storing to account {from} (a hardware watchpoint on \
                 it, set before the transfer, never fired): a transfer of 0 was short-cut; \
                 nothing limits the amount, and every transfer, 0 too, writes the journal, \
                 debits `from`, calls midway(), credits `to`, counts and clears the journal, \
                 so that a holder killed at midway() leaves the same trace for any amount"
            )));
        }
        Debit::NoStore(_) => return Ok(false),
    };
    let rule = "a transfer writes its journal, active = 1 with the two balances and the count \
                as they are, before it changes any balance (Journal::active: 1 from the moment \
                the transfer starts changing the bank)";
    if journal.active != 1 {
        return Err(Fail::failed(format!(
            "the coordinator's transfer of {amount} from account {from} to account {to} stored \
             its debit while the journal in the segment was not active (active = {}; a \
             hardware watchpoint on account {from} stopped it right after the store, pid \
             {pid}): a holder that dies at that instruction leaves a debit that recover(), \
             finding no transfer under way, never undoes, and the money is gone; {rule}",
            journal.active
        )));
    }
    let saved = journal.saved();
    if saved != (from, to, opening, opening, 0) {
        let swapped = if (saved.0, saved.1) == (to, from) && amount < 0 {
            " (the accounts the other way round: a negative amount is not turned into a \
             positive one from `to` to `from`; the journal names `from` and `to` as given, \
             `from` is debited by `amount` before midway(), whatever its sign)"
        } else {
            ""
        };
        return Err(Fail::failed(format!(
            "the coordinator's first transfer, of {amount} from account {from} to account {to} \
             of a new bank, stored to account {from} with a journal naming accounts {} and {}, \
             balances {} and {}, count {} (a hardware watchpoint on account {from} stopped it \
             right after the store), not {from} and {to}, {opening} and {opening}, \
             0{swapped}: {rule}",
            saved.0, saved.1, saved.2, saved.3, saved.4
        )));
    }
    Ok(true)
}

/// What the watchpoint on the debited account saw of the coordinator's tried transfer.
enum Debit {
    /// The first store to it: the journal then, and the opening balance.
    Stored(super::segment::Journal, i64),
    /// No store before the coordinator's `ready`, with how the transfer ended (`tried`).
    NoStore(String),
    /// It could not be watched.
    Unwatched,
}

/// Watches the first store to account `from` of the coordinator's tried transfer.
fn watch_the_debit(proc: &mut crate::engine::Proc, name: &str, from: usize) -> Result<Debit, Fail> {
    let pid = proc.pid.as_raw();
    let until = Instant::now() + 2 * STEP;
    let segment = loop {
        let message = proc.recv_any()?;
        match message.kind.as_str() {
            "created" => break open_segment(name, layout_of(&message)?)?,
            "ready" => {}
            _ => return Err(failure(&message)),
        }
    };
    let Some(map) = probe::mappings(pid, name)
        .into_iter()
        .find(|m| m.offset == 0)
    else {
        return Ok(Debit::Unwatched);
    };
    let address = map.start + (segment.layout.accounts_at + 8 * from) as u64;
    let Some(mut tracer) = Tracer::watch_at(pid, address, &ACCOUNT_STORE)? else {
        return Ok(Debit::Unwatched);
    };
    let mut told = false;
    loop {
        match tracer.next(proc, until)? {
            Watched::Armed if !told => {
                proc.send("try", &[])?;
                told = true;
            }
            Watched::Armed => {}
            Watched::Hit => {
                let journal = segment.journal()?;
                drop(tracer);
                return Ok(Debit::Stored(journal, segment.layout.opening));
            }
            Watched::Said(message) if message.kind == "failed" => {
                return Err(failure(&message));
            }
            // Its `ready` without a store to the account: the transfer is judged elsewhere,
            // but for one that went through without storing its debit.
            Watched::Said(message) if message.get("role") == Some("coordinator") => {
                let tried = message.get("tried").unwrap_or("").to_string();
                return Ok(if told {
                    Debit::NoStore(tried)
                } else {
                    Debit::Unwatched
                });
            }
            Watched::Said(_) => {}
            Watched::Lost | Watched::Unavailable => return Ok(Debit::Unwatched),
        }
    }
}

/// `futex()`'s operation without its flags (`FUTEX_CMD_MASK`).
const FUTEX_COMMAND: u64 = 0x7f;

/// The first unlock after a holder's death, watched: the grader leaves one worker asleep on the
/// mutex and stops every other process that may lock it (a stopped process leaves the futex's
/// queue), so that the kernel wakes that one to meet `EOWNERDEAD`; glibc gives it the mutex
/// with the waiters bit set, so that its unlock always calls `FUTEX_WAKE`, where a tracer holds
/// it. The bank must be repaired by then: the repair happens under the lock that `EOWNERDEAD`
/// handed over, before anyone else can take it.
struct FirstUnlock {
    tracer: Tracer,
    stopped: Vec<i32>,
    /// The condition variable's bytes once everyone else is stopped, before the kill: only a
    /// broadcast (the recovery's) changes them until that first unlock.
    cond_before: Option<[u8; COND_SIZE]>,
}

/// The size of a `pthread_cond_t` (glibc, 64-bit Linux).
const COND_SIZE: usize = 48;

impl FirstUnlock {
    /// `None` (nothing stopped) when no worker sleeps on the mutex or it cannot be traced.
    fn arm(
        segment: &super::segment::Segment,
        name: &str,
        survivors: &[i32],
        coordinator: i32,
    ) -> Result<Option<FirstUnlock>, Fail> {
        use crate::engine::tracer::Match;
        let on_mutex = |pid: i32| {
            matches!(probe::sleeping(pid), probe::Sleep::Futex { address }
                if probe::place(pid, name, &segment.layout, address) == Place::Mutex)
        };
        let Some(&recoverer) = survivors.iter().find(|&&w| on_mutex(w)) else {
            return Ok(None);
        };
        let Some(map) = probe::mappings(recoverer, name)
            .into_iter()
            .find(|m| m.offset == 0)
        else {
            return Ok(None);
        };
        let mutex = map.start + segment.layout.mutex_at as u64;
        let call = Call {
            number: libc::SYS_futex,
            matching: Match::BothBits([
                (0, u64::MAX, mutex),
                (1, FUTEX_COMMAND, libc::FUTEX_WAKE as u64),
            ]),
        };
        let Some(tracer) = Tracer::attach(recoverer, call, Action::Hold)? else {
            return Ok(None);
        };
        let stopped: Vec<i32> = survivors
            .iter()
            .copied()
            .filter(|&w| w != recoverer)
            .chain([coordinator])
            .collect();
        for &pid in &stopped {
            force::hold(pid)?;
        }
        let cond_before = segment.read(segment.layout.cond_at).ok();
        Ok(Some(FirstUnlock {
            tracer,
            stopped,
            cond_before,
        }))
    }

    /// Once the holder is dead: at the first unlock, with the mutex free, the dead holder's
    /// journal must no longer be active. Then lets everyone go on.
    /// When the coordinator slept on the condition variable (`coordinator_waiting`), the
    /// repair must have broadcast it by then too.
    fn judge(
        mut self,
        segment: &super::segment::Segment,
        crasher: usize,
        coordinator_waiting: bool,
    ) -> Result<(), Fail> {
        let held = self.tracer.held_before(Instant::now() + STEP)?;
        let seen = match held {
            true => Some((
                segment.journal()?,
                segment.counts()?,
                segment.mutex_owner()?,
            )),
            false => None,
        };
        let cond_now: Option<[u8; COND_SIZE]> = segment.read(segment.layout.cond_at).ok();
        if held {
            self.tracer.release();
        }
        for &pid in &self.stopped {
            force::resume(pid)?;
        }
        let Some((journal, counts, owner)) = seen else {
            // No unlock seen: what follows says why.
            return Ok(());
        };
        if journal.active != 0 && counts.dead == 0 {
            return Err(Fail::failed(format!(
                "after worker {crasher} was killed holding the lock, the worker that took the \
                 mutex next (EOWNERDEAD) let go of it before repairing the bank: held at its \
                 first unlock (its FUTEX_WAKE on the mutex, the mutex {}), the dead worker's \
                 journal was still active and dead = 0, so for that moment any process could \
                 take the mutex and work on a half-done transfer; EOWNERDEAD hands over the \
                 lock: recover() the bank while holding it, then pthread_mutex_consistent(), \
                 and unlock only after that (pthread_mutex_consistent() does not make it right \
                 to unlock and lock again before the repair)",
                if owner == 0 {
                    "free".to_string()
                } else {
                    format!("owner word {owner}")
                }
            )));
        }
        if coordinator_waiting
            && journal.active == 0
            && counts.dead > 0
            && self.cond_before.is_some()
            && cond_now == self.cond_before
        {
            return Err(Fail::failed(format!(
                "after worker {crasher} was killed holding the lock mid-transfer, the worker \
                 that took the mutex next (EOWNERDEAD) repaired the bank (the journal cleared, \
                 dead = {}), but held at its first unlock (its FUTEX_WAKE on the mutex) it had \
                 not broadcast all_done: the condition variable in the segment was byte for \
                 byte as before the kill, while the coordinator waited on it; recover() \
                 broadcasts all_done after dead += 1, because the coordinator may be waiting \
                 for exactly that worker and no finish may come to wake it",
                counts.dead
            )));
        }
        Ok(())
    }
}

/// Once a worker found the dead holder and recovered, lets the coordinator take in the
/// recovery's wake-up before the surviving workers go on (see [`let_coordinator_look`]).
fn settle_after_recovery(
    segment: &super::segment::Segment,
    coordinator: i32,
    name: &str,
    survivors: &[i32],
) -> Result<(), Fail> {
    let until = Instant::now() + STEP;
    while segment.counts()?.dead == 0 {
        if Instant::now() > until {
            // Nobody recovered: what follows says why.
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let_coordinator_look(segment, coordinator, name, survivors, (None, &[]), false).map(drop)
}

/// The transfer a worker died in: its two accounts.
#[derive(Clone, Copy)]
struct Cut {
    from: usize,
    to: usize,
}

/// Whether the totals are off by the half-done transfer only: the count is right and only its
/// two accounts differ from the prediction.
fn not_undone(
    session: &Session,
    outcome: &super::session::Outcome,
    extra: &[(u64, Vec<i64>)],
    cut: Cut,
) -> bool {
    let (want_transfers, want) = expected(session, outcome, extra);
    let Ok((transfers, balances)) = session.segment.bank() else {
        return false;
    };
    let off: Vec<usize> = (0..ACCOUNTS).filter(|&a| balances[a] != want[a]).collect();
    transfers == want_transfers
        && !off.is_empty()
        && off.iter().all(|&a| a == cut.from || a == cut.to)
}

/// The journal of the transfer the crasher is in the middle of: active, naming two accounts,
/// with the balances `before` it and the count `done` as they were.
fn journal_written(
    segment: &super::segment::Segment,
    crasher: usize,
    done: u64,
    before: &[i64],
) -> Result<Result<Cut, (Cut, Fail)>, Fail> {
    let journal = segment.journal()?;
    let (count, now) = segment.bank()?;
    let rule = "before changing any balance, write the journal: active = 1, the two accounts, \
                their balances and the transfer count as they are";
    if journal.active != 1 {
        if now == before && count == done {
            return Err(Fail::failed(format!(
                "worker {crasher} stopped in midway() before its transfer had changed anything \
                 (the balances and the count as before, the journal not active): midway() is \
                 called between the debit and the credit, with the journal written and the \
                 lock held"
            )));
        }
        return Err(Fail::failed(format!(
            "worker {crasher} is in the middle of a transfer (in midway(), the lock held), but \
             the journal in the segment is not active (active = {}): {rule}",
            journal.active
        )));
    }
    let (from, to) = (journal.from as usize, journal.to as usize);
    if from >= ACCOUNTS || to >= ACCOUNTS || from == to {
        return Err(Fail::failed(format!(
            "worker {crasher}'s journal names accounts {from} and {to}: {rule}"
        )));
    }
    let saved = (journal.from_balance, journal.to_balance, journal.transfers);
    let were = (before[from], before[to], done);
    if saved != were {
        let after_debit = if journal.from_balance == now[from] && now[from] != before[from] {
            format!(
                "; it saved account {from}'s balance after the debit, so undoing the transfer \
                 would not give the money back"
            )
        } else {
            String::new()
        };
        return Err(Fail::failed(format!(
            "worker {crasher}'s journal of its transfer from account {from} to account {to} \
             saved balances {} and {} and count {}, but before the transfer the bank held {} \
             and {} and count {}{after_debit}: {rule}",
            saved.0, saved.1, saved.2, were.0, were.1, were.2
        )));
    }
    // midway() comes between the debit and the credit: `to` still holds what it held.
    if now[to] != before[to] && now[from] != before[from] {
        return Err(Fail::failed(format!(
            "worker {crasher} stopped in midway() of its transfer from account {from} to \
             account {to}, lock held, with both the debit and the credit already in the \
             segment (account {to}: {} before, {} now): call midway() between the debit and \
             the credit, so that a holder killed there leaves a half-done transfer",
            before[to], now[to]
        )));
    }
    // The count goes with the credit, after midway(): at the hold it is still the count before.
    // Told once the run is over (a repair that undoes the count as well as the balances hides
    // it there; one that does not is the first thing to say).
    if count != done {
        return Ok(Err((
            Cut { from, to },
            Fail::failed(format!(
                "worker {crasher} stopped in midway() of its transfer from account {from} to \
             account {to}, lock held, with the bank's transfer count already {count} where \
             {done} transfers were complete (its journal saved {}; account {to} not yet \
             credited): the count was raised with the debit, before midway(), so for that \
             moment the bank counts a transfer whose credit is not made; set transfers to the \
             journal's count plus one together with the credit, after midway()",
                journal.transfers
            )),
        )));
    }
    Ok(Ok(Cut { from, to }))
}

pub(super) fn owner_dies_during_wait(run: &mut Run) -> Result<String, Fail> {
    let mut session = Session::start(run, &[LIGHT_WORK; 3], &[])?;
    robust(&session)?;
    session.coordinator_settled();
    if session.coordinator_place() != Some(Place::Cond) {
        return Err(Fail::failed(format!(
            "while no worker had started, the coordinator was not asleep on the condition \
             variable in the segment (it {}): wait_all_done() sleeps in pthread_cond_wait() on \
             all_done",
            probe::sleeping(session.coordinator).describe()
        )));
    }
    // A thread of the grader takes the lock and broadcasts: the coordinator wakes up and waits
    // to take the lock back; then the thread ends, lock held.
    let holder = DyingHolder::start(&session.segment, true)?;
    let until = Instant::now() + 2 * STEP;
    while session.coordinator_place() != Some(Place::Mutex) {
        if Instant::now() > until {
            return Err(Fail::failed(format!(
                "the grader held the bank's mutex and broadcast all_done, and {} s later the \
                 coordinator {} instead of waiting to take the lock back: pthread_cond_wait() \
                 on all_done, with the bank's mutex, wakes on a broadcast and relocks it",
                (2 * STEP).as_secs(),
                probe::sleeping(session.coordinator).describe()
            )));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    holder.die();
    // Its pthread_cond_wait() returns EOWNERDEAD: it repairs, marks the mutex consistent, finds
    // no worker done, and sleeps on the condition variable again.
    let until = Instant::now() + STEP;
    let mut back = false;
    while Instant::now() < until {
        if session.coordinator_place() == Some(Place::Cond) {
            back = true;
            break;
        }
        let Some(message) = session.next_before(Instant::now() + Duration::from_millis(2))? else {
            continue;
        };
        match message.kind.as_str() {
            "failed" => {
                return Err(Fail::failed(format!(
                    "the grader's thread died holding the bank's mutex while the coordinator \
                     waited to take it back in pthread_cond_wait(), which then returned \
                     EOWNERDEAD; wait_all_done() failed with kind={} ({}): EOWNERDEAD is not a \
                     failure, the lock is yours: recover() and pthread_mutex_consistent(), as \
                     lock() does, then wait again",
                    message.get("kind").unwrap_or("none"),
                    message.get("error").unwrap_or("")
                )));
            }
            "done" => {
                return Err(Fail::failed(
                    "the coordinator's wait ended though no worker had started: after \
                     pthread_cond_wait() returned EOWNERDEAD (a holder died) it must repair, \
                     then re-check finished + dead < workers and wait again",
                ));
            }
            _ => session.set_aside(message),
        }
    }
    if !back {
        return Err(Fail::failed(format!(
            "a holder of the bank's mutex died while the coordinator waited in \
             pthread_cond_wait(), and {} s later the coordinator {} instead of sleeping on the \
             condition variable again: pthread_cond_wait() returns EOWNERDEAD with the lock \
             held; recover(), pthread_mutex_consistent(), then wait again",
            STEP.as_secs(),
            probe::sleeping(session.coordinator).describe()
        )));
    }
    // Back asleep, it waits as before: a wait with a timeout wakes by itself, a poll.
    let timed = (0..3).any(|_| {
        std::thread::sleep(Duration::from_millis(2));
        session.coordinator_place() == Some(Place::Cond)
            && probe::futex_has_timeout(session.coordinator) == Some(true)
    });
    if timed {
        return Err(Fail::failed(
            "a holder of the bank's mutex died while the coordinator waited in \
             pthread_cond_wait(); the coordinator repaired and went back to sleep on the \
             condition variable, but now with a timeout (its futex() wait has a deadline: \
             pthread_cond_timedwait()): it wakes up to look again when nothing has changed, \
             which is polling, whatever its period; a dead holder changes nothing in how the \
             wait is woken (recover() broadcasts): wait again with pthread_cond_wait(), no \
             timeout",
        ));
    }
    match probe::try_lock(&session.segment, Duration::from_secs(1))? {
        0 => {}
        libc::ENOTRECOVERABLE => {
            return Err(Fail::failed(
                "the coordinator met EOWNERDEAD in pthread_cond_wait() (a holder died) and went \
                 back to waiting without pthread_mutex_consistent(): the mutex is now unusable \
                 (ENOTRECOVERABLE) for every process; handle EOWNERDEAD there as lock() does",
            ));
        }
        rc => {
            return Err(Fail::failed(format!(
                "after a holder died while the coordinator waited, the grader taking the \
                 mutex got {}: the coordinator never took the lock back and repaired it (the \
                 broadcast should have woken it, and its pthread_cond_wait() returned \
                 EOWNERDEAD)",
                probe::errno_name(rc)
            )));
        }
    }
    let counts = session.segment.counts()?;
    if counts.dead != 0 {
        return Err(Fail::failed(format!(
            "the dead holder had no transfer under way (the journal was not active), yet the \
             bank counts dead = {}: recover() counts a dead worker and undoes its transfer only \
             when the journal is active",
            counts.dead
        )));
    }
    let cut = dies_mid_transfer(run, &mut session)?;
    // A third holder dies outside any transfer while the workers wait in transfer(): the one
    // that gets the lock next meets EOWNERDEAD, and its transfer() must say it recovered.
    let holder = DyingHolder::start(&session.segment, false)?;
    session.go()?;
    let until = Instant::now() + STEP;
    while Instant::now() < until
        && !session.workers.iter().all(|&w| {
            matches!(probe::sleeping(w), probe::Sleep::Futex { address }
                if probe::place(w, &session.name, &session.segment.layout, address) == Place::Mutex)
        })
    {
        std::thread::sleep(Duration::from_millis(2));
    }
    holder.die();
    let outcome = session.finish(0, |_| Ok(()))?;
    verify(&session, &outcome, &[], 0)?;
    let recovered: u64 = outcome.workers.values().map(|w| w.recovered).sum();
    if recovered != 1 {
        return Err(Fail::failed(format!(
            "a holder died with the lock held but no transfer under way (the journal \
             inactive) while the workers waited in transfer(); the next of them to lock met \
             EOWNERDEAD (the run went on, nothing to undo, dead stayed 0), yet {recovered} \
             transfers said they had recovered the lock (not 1): lock() returns a guard with \
             recovered: true after every EOWNERDEAD, whatever the journal holds; recover() \
             decides only what to undo"
        )));
    }
    drop(session);
    dies_before_the_debit(run)?;
    Ok(format!(
        "a holder died while the coordinator waited: its pthread_cond_wait() met EOWNERDEAD, \
         it made the mutex consistent and went on waiting; a second one died in the middle of a \
         transfer from account {} to account {}, and the coordinator undid it and counted it \
         dead; a third died while the workers waited in transfer(), and one transfer said it \
         had recovered; a fourth died between its journal and its debit, with one worker \
         already dead: counted dead (dead 2 of 1 worker), the grader's two waiters on \
         all_done woken, and the coordinator's wait ended",
        cut.from, cut.to
    ))
}

/// The workers the stand-in of [`dies_mid_transfer`] counts dead before it dies itself.
const EARLIER_DEAD: u32 = 1;

/// Writes, as the grader's stand-in holding the lock, `dead` = [`EARLIER_DEAD`] and an active
/// journal of a transfer `from` → `to` over the balances `before` and the count `count`, filled
/// before its flag is set, as a worker begins one.
fn begin_transfer_after_a_death(
    segment: &super::segment::Segment,
    from: usize,
    to: usize,
    before: &[i64],
    count: u64,
) -> Result<(), Fail> {
    let layout = segment.layout;
    let at = layout.journal_at;
    segment.write_at(layout.counts_at + 8, &EARLIER_DEAD.to_ne_bytes())?;
    segment.write_at(at + 4, &(from as u32).to_ne_bytes())?;
    segment.write_at(at + 8, &(to as u32).to_ne_bytes())?;
    segment.write_at(at + 16, &before[from].to_ne_bytes())?;
    segment.write_at(at + 24, &before[to].to_ne_bytes())?;
    segment.write_at(at + 32, &count.to_ne_bytes())?;
    segment.write_at(at, &1u32.to_ne_bytes())
}

/// Breakpoints at the coordinator's `pthread_mutex_consistent()`: at each, whether the journal
/// in the segment was still active (the repair not done). `None` if the machine does not allow
/// it.
fn watch_consistent(session: &Session) -> Result<Option<Watching<Option<u32>>>, Fail> {
    let pid = session.coordinator;
    let Some(address) = inspect::library_function_in(pid, c"pthread_mutex_consistent") else {
        return Ok(None);
    };
    let Some(tracer) = Tracer::break_at(pid, address)? else {
        return Ok(None);
    };
    let file = session.segment.file().try_clone()?;
    let active_at = session.segment.layout.journal_at as u64;
    Ok(Some(Watching::start(tracer, move |_, _| {
        use std::os::unix::fs::FileExt;
        let mut word = [0u8; 4];
        file.read_exact_at(&mut word, active_at)
            .ok()
            .map(|()| u32::from_ne_bytes(word))
    })))
}

/// The coordinator's `pthread_mutex_consistent()` calls after the stand-in died mid-transfer
/// (from `from` to `to`): at the first, the journal must be cleared already (the repair done).
fn judge_consistent(seen: Vec<Option<u32>>, from: usize, to: usize) -> Result<(), Fail> {
    if let Some(Some(active)) = seen.first()
        && *active != 0
    {
        return Err(Fail::failed(format!(
            "a holder died in the middle of a transfer from account {from} to account {to} \
             while the coordinator waited; its pthread_cond_wait() returned EOWNERDEAD and it \
             called pthread_mutex_consistent() with the transfer not yet undone (at a \
             breakpoint at that call the journal in the segment was still active): the order \
             is recover() first, then pthread_mutex_consistent(); marked consistent before the \
             repair, a recoverer that dies in between leaves a half-done transfer that the next \
             locker, getting a plain 0 instead of EOWNERDEAD, never undoes"
        )));
    }
    Ok(())
}

/// A second holder dies while the coordinator waits to take the lock back, this time in the
/// middle of a transfer (journal written, debit, credit and count made, the journal not yet
/// cleared): the coordinator's pthread_cond_wait() meets EOWNERDEAD and must repair as lock()
/// does, putting back both balances and the count.
/// The grader then takes its stand-in's `dead` back, so that the workers' run ends as usual.
fn dies_mid_transfer(run: &mut Run, session: &mut Session) -> Result<Cut, Fail> {
    let from = run.rng().random_range(0..ACCOUNTS);
    let to = (from + run.rng().random_range(1..ACCOUNTS)) % ACCOUNTS;
    let amount = run.rng().random_range(1..1000i64);
    // The coordinator's pthread_mutex_consistent(), watched: the repair comes first.
    let consistents = watch_consistent(session)?;
    let holder = DyingHolder::start(&session.segment, true)?;
    let (count, before) = session.segment.bank()?;
    let layout = session.segment.layout;
    let segment = &session.segment;
    // A worker was found dead before (the stand-in, under the lock, counts it): the repair adds
    // this one, dead += 1.
    begin_transfer_after_a_death(segment, from, to, &before, count)?;
    segment.write_at(
        layout.accounts_at + 8 * from,
        &(before[from] - amount).to_ne_bytes(),
    )?;
    // It dies after its credit and its count too, just before clearing the journal: the
    // repair must put back both balances and the count, not only the debit.
    segment.write_at(
        layout.accounts_at + 8 * to,
        &(before[to] + amount).to_ne_bytes(),
    )?;
    segment.write_at(layout.transfers_at, &(count + 1).to_ne_bytes())?;
    let until = Instant::now() + 2 * STEP;
    while session.coordinator_place() != Some(Place::Mutex) {
        if Instant::now() > until {
            return Err(Fail::failed(format!(
                "the grader held the bank's mutex a second time and broadcast all_done, and {} \
                 s later the coordinator {} instead of waiting to take the lock back",
                (2 * STEP).as_secs(),
                probe::sleeping(session.coordinator).describe()
            )));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    holder.die();
    let until = Instant::now() + STEP;
    while session.coordinator_place() != Some(Place::Cond) {
        if Instant::now() > until {
            return Err(Fail::failed(format!(
                "a holder died in the middle of a transfer while the coordinator waited in \
                 pthread_cond_wait(), and {} s later the coordinator {} instead of sleeping on \
                 the condition variable again",
                STEP.as_secs(),
                probe::sleeping(session.coordinator).describe()
            )));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let journal = session.segment.journal()?;
    let (count_now, now) = session.segment.bank()?;
    let counts = session.segment.counts()?;
    // Seen now, judged once the repair itself is (a repair that is wrong is said first).
    let consistents = consistents.map(Watching::finish);
    let dead_after = EARLIER_DEAD + 1;
    if journal.active == 0 && counts.dead == EARLIER_DEAD && now == before && count_now == count {
        return Err(Fail::failed(format!(
            "a holder died in the middle of a transfer while the coordinator waited, with \
             dead = {EARLIER_DEAD} already in the bank (a worker found dead before); the \
             coordinator's repair undid the transfer and cleared the journal, but left dead at \
             {EARLIER_DEAD}, not {dead_after}: recover() counts the worker it found dead with \
             dead += 1 (setting it, dead = 1, forgets every earlier dead worker, and the \
             coordinator waiting for finished + dead to reach workers sleeps for ever)"
        )));
    }
    if journal.active == 0
        && counts.dead == dead_after
        && now[from] == before[from]
        && (now[to] != before[to] || count_now != count)
    {
        let mut left = Vec::new();
        if now[to] != before[to] {
            left.push(format!(
                "account {to} still holds the {} credited ({}, not {})",
                now[to] - before[to],
                now[to],
                before[to]
            ));
        }
        if count_now != count {
            left.push(format!("the count is {count_now}, not {count}"));
        }
        return Err(Fail::failed(format!(
            "a holder died after the debit, the credit and the count of a transfer from \
             account {from} to account {to}, before clearing its journal; the coordinator's \
             repair put back account {from} and cleared the journal, but {}: recover() puts \
             back both balances and the count the journal saved (from_balance, to_balance, \
             transfers), since a holder may die anywhere between writing the journal and \
             clearing it",
            left.join(", and ")
        )));
    }
    if journal.active != 0 && now == before && count_now == count && counts.dead == dead_after {
        return Err(Fail::failed(format!(
            "a holder died in the middle of a transfer from account {from} to account {to} \
             (journal written, debit, credit and count made) while the coordinator waited to \
             take the lock back; its repair put back both balances and the count and counted \
             the worker dead, but left the journal active: recover() clears the journal \
             (active = 0) once it has undone the transfer; a journal left active is undone \
             again by the next recovery, which puts these old balances back over newer ones \
             and counts a second dead worker"
        )));
    }
    if journal.active == 0 && counts.dead == dead_after && now[from] != before[from] {
        return Err(Fail::failed(format!(
            "a holder died after the debit, the credit and the count of a transfer from \
             account {from} to account {to}, before clearing its journal; the coordinator's \
             repair cleared the journal and counted the worker dead, but undid nothing: \
             balances {now:?} (not {before:?}), the count {count_now} (not {count}): recover() \
             undoes the journaled transfer whatever step the holder reached; a raised count \
             does not make the transfer complete, since the journal is cleared only after it"
        )));
    }
    if journal.active != 0 || now != before || count_now != count || counts.dead != dead_after {
        let mut seen = Vec::new();
        if journal.active != 0 {
            seen.push("its journal is still active".to_string());
        }
        if now[from] != before[from] {
            seen.push(format!(
                "account {from} still lacks the {} debited",
                before[from] - now[from]
            ));
        }
        if counts.dead != dead_after {
            seen.push(format!(
                "dead = {} (not {dead_after}: it was {EARLIER_DEAD} before)",
                counts.dead
            ));
        }
        if now[to] != before[to] && now[from] != before[from] {
            seen.push(format!(
                "account {to} still holds the {} credited",
                now[to] - before[to]
            ));
        }
        if now != before && now[from] == before[from] {
            seen.push(format!("balances {now:?}, not {before:?}"));
        }
        if count_now != count {
            seen.push(format!("the count is {count_now}, not {count}"));
        }
        return Err(Fail::failed(format!(
            "a holder died in the middle of a transfer from account {from} to account {to} \
             (journal written, debit, credit and count made) while the coordinator waited to \
             take the lock back; \
             its pthread_cond_wait() returned EOWNERDEAD and it went back to waiting, but {}: \
             EOWNERDEAD from pthread_cond_wait() needs the same repair as from lock(): \
             recover() (undo the journaled transfer, count the worker dead, broadcast), then \
             pthread_mutex_consistent(); and recover() reads the journal in the segment, where \
             a transfer writes it (a repair that reads a journal kept elsewhere finds nothing \
             to undo here)",
            seen.join(", ")
        )));
    }
    if let Some(seen) = consistents {
        judge_consistent(seen, from, to)?;
    }
    // The stand-ins were no workers of the run: take their `dead` back.
    let held = probe::hold(&session.segment, Duration::from_secs(1))?;
    session
        .segment
        .write_at(layout.counts_at + 8, &0u32.to_ne_bytes())?;
    drop(held);
    Ok(Cut { from, to })
}

/// A holder that dies right after writing its journal, before its debit (the accounts still
/// hold what the journal saved), is a worker dead mid-transfer all the same: the journal is
/// active, so the next locker counts it in `dead` and broadcasts `all_done`. The grader's
/// stand-in does it (with `dead = 1` already in the bank of one worker: a worker found dead
/// before), with two threads of the grader asleep on `all_done`; the coordinator's tried
/// transfer meets `EOWNERDEAD`. The broadcast must wake both threads, `dead` must become 2,
/// and the coordinator's wait must then end at once, `finished + dead` (2) being past
/// `workers` (1).
fn dies_before_the_debit(run: &mut Run) -> Result<(), Fail> {
    let from = run.rng().random_range(0..ACCOUNTS);
    let to = (from + run.rng().random_range(1..ACCOUNTS)) % ACCOUNTS;
    told_transfer(run, LIGHT_WORK, (from, to, 1), |_, proc, name| {
        judge_before_the_debit(proc, name, from, to)
    })
}

fn judge_before_the_debit(
    proc: &mut crate::engine::Proc,
    name: &str,
    from: usize,
    to: usize,
) -> Result<(), Fail> {
    let message = proc.recv_any()?;
    if message.kind != "created" {
        return Err(failure(&message));
    }
    let segment = open_segment(name, layout_of(&message)?)?;
    let Some(waiters) = probe::CondWaiters::start(&segment, 2) else {
        return Ok(());
    };
    let holder = DyingHolder::start(&segment, false)?;
    let (count, before) = segment.bank()?;
    begin_transfer_after_a_death(&segment, from, to, &before, count)?;
    holder.die();
    proc.send("try", &[])?;
    let (woken, ended) = waiters.woken(STEP);
    // Whatever happened, the grader's waiters go before the segment does.
    probe::broadcast(&segment);
    let journal = segment.journal()?;
    let counts = segment.counts()?;
    let dead_after = EARLIER_DEAD + 1;
    let what = format!(
        "a holder died right after writing its journal for a transfer from account {from} to \
         account {to}, before its debit (both accounts still held the balances the journal \
         saved), with dead = {EARLIER_DEAD} already in the bank of one worker; the \
         coordinator's next transfer met EOWNERDEAD"
    );
    if journal.active == 0 && counts.dead == EARLIER_DEAD {
        return Err(Fail::failed(format!(
            "{what} and cleared the journal, but left dead at {EARLIER_DEAD}{}: the journal was \
             active, so a transfer was under way and its worker died in it, however little of \
             it was done; recover() undoes it (here a no-op), counts the worker dead and \
             broadcasts all_done whenever the journal is active, whatever the balances show \
             (else the coordinator waits for that worker for ever)",
            if woken == 0 && !ended {
                " and woke none of the grader's two waiters on all_done"
            } else {
                ""
            }
        )));
    }
    if journal.active != 0 || counts.dead != dead_after {
        return Err(Fail::failed(format!(
            "{what}; then the journal is {} and dead = {} (not cleared and {dead_after}): \
             recover() clears the journal, counts the worker dead and broadcasts whenever the \
             journal is active",
            if journal.active != 0 {
                "still active"
            } else {
                "cleared"
            },
            counts.dead
        )));
    }
    if !ended && woken < waiters.count() {
        return Err(Fail::failed(format!(
            "{what} and counted it dead, but only {woken} of the grader's {} threads asleep on \
             all_done (beside the coordinator) woke within {} s: recover() must \
             pthread_cond_broadcast() all_done, not pthread_cond_signal() it: every waiter \
             re-checks its own condition, and a signal wakes one waiter at most",
            waiters.count(),
            STEP.as_secs()
        )));
    }
    // Its wait: finished + dead = 2 is past workers = 1, so it ends at once.
    let until = Instant::now() + STEP;
    loop {
        let message = match proc.recv_before(until) {
            Ok(Some(message)) => message,
            Ok(None) => {
                return Err(Fail::failed(format!(
                    "with workers = 1 and dead = {dead_after} in the bank (finished 0), the \
                     coordinator's wait_all_done() did not end within {} s (it {}): the wait \
                     ends once finished + dead reaches workers or passes it; compare \
                     finished + dead >= workers (workers - dead underflows when more holders \
                     died than there are workers)",
                    STEP.as_secs(),
                    probe::sleeping(proc.pid.as_raw()).describe()
                )));
            }
            Err(Fail::Crashed(m)) => {
                return Err(Fail::failed(format!(
                    "with workers = 1 and dead = {dead_after} in the bank (finished 0), the \
                     coordinator crashed in its wait ({m}): the wait ends once finished + dead \
                     reaches workers or passes it; compare finished + dead >= workers \
                     (workers - dead underflows when more holders died than there are \
                     workers)"
                )));
            }
            Err(other) => return Err(other),
        };
        match message.kind.as_str() {
            "done" => return Ok(()),
            "ready" => {}
            "failed" => {
                return Err(Fail::failed(format!(
                    "with workers = 1 and dead = {dead_after} in the bank (finished 0), the \
                     coordinator's wait failed with kind={} ({}): the wait ends once \
                     finished + dead reaches workers or passes it",
                    message.get("kind").unwrap_or("none"),
                    message.get("error").unwrap_or("")
                )));
            }
            _ => return Err(failure(&message)),
        }
    }
}
