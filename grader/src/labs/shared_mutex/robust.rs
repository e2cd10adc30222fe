//! Robustness: a holder that dies (a worker killed mid-transfer, a grader's thread that ends
//! with the lock) must be met with `EOWNERDEAD`, repaired, and the mutex made consistent. A
//! holder that dies while the coordinator waits is in `during_wait`, a mutex left unrecoverable
//! in `unrecoverable`.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rand::RngExt;

use super::ACCOUNTS;
use super::coordinator_look::let_coordinator_look;
use super::journal_at_lock::journal_at_the_lock;
use super::messages::{failure, field, index_of, layout_of, list};
use super::probe::{self, KIND_ROBUST, Place};
use super::segment::{open_segment, told_transfer};
use super::session::Session;
use super::totals::{expected, verify};
use crate::engine::tracer::{Action, Call, Field, Tracer, Watched};
use crate::engine::{Fail, Run, force};

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
    let at_lock = if journal_at_the_lock(run)? {
        "; a worker that waited for the grader's hold, every balance changed meanwhile, \
         journaled the balances as they were at its lock"
    } else {
        ""
    };
    Ok(format!(
        "worker {crasher} (pid {victim}) was killed holding the lock after {transfers} \
         transfers, its journal written; a worker met EOWNERDEAD and said so, the half-done \
         transfer was undone and the totals add up{watched}{at_lock}"
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
            "created" => break open_segment(name, layout_of(&message)?, proc.pid.as_raw())?,
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
pub(super) struct Cut {
    pub from: usize,
    pub to: usize,
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
