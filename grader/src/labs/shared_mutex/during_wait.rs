//! A holder that dies while the coordinator waits on `all_done` (its `pthread_cond_wait()`
//! returns `EOWNERDEAD`), or outside a transfer while the workers wait for the lock: the same
//! repair as `lock()`'s, and the wait goes on.

use std::time::{Duration, Instant};

use rand::RngExt;

use super::attributes::Watching;
use super::messages::{failure, layout_of};
use super::probe::{self, DyingHolder, Place};
use super::robust::{Cut, STEP, robust};
use super::segment::{Segment, open_segment, told_transfer};
use super::session::Session;
use super::totals::verify;
use super::{ACCOUNTS, LIGHT_WORK};
use crate::engine::tracer::Tracer;
use crate::engine::{Fail, Run};

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

/// The functions watched in the coordinator while it recovers from a death in its wait:
/// `pthread_mutex_consistent()`, and the condition variable's init and destroy (it is
/// initialized once, before the workers start).
const RECOVERY_CALLS: [&std::ffi::CStr; 3] = [
    c"pthread_mutex_consistent",
    c"pthread_cond_init",
    c"pthread_cond_destroy",
];
const CONSISTENT: usize = 0;

/// One of [`RECOVERY_CALLS`] hit: which, and the journal's `active` word then.
struct RecoveryCall {
    function: usize,
    active: Option<u32>,
}

/// Breakpoints at the coordinator's [`RECOVERY_CALLS`]: at each, which one, and whether the
/// journal in the segment was still active (the repair not done). `None` if the machine does
/// not allow it.
fn watch_recovery_calls(session: &Session) -> Result<Option<Watching<RecoveryCall>>, Fail> {
    let Some(tracer) = Tracer::break_at_functions(session.coordinator, &RECOVERY_CALLS)? else {
        return Ok(None);
    };
    let file = session.segment.file().try_clone()?;
    let active_at = session.segment.layout.journal_at as u64;
    Ok(Some(Watching::start(tracer, move |tracer, _| {
        use std::os::unix::fs::FileExt;
        let mut word = [0u8; 4];
        let active = file
            .read_exact_at(&mut word, active_at)
            .ok()
            .map(|()| u32::from_ne_bytes(word));
        RecoveryCall {
            function: tracer.last_break(),
            active,
        }
    })))
}

/// The coordinator's [`RECOVERY_CALLS`] after the stand-in died mid-transfer (from `from` to
/// `to`), once it has repaired and sleeps again: no condition variable made anew, a
/// `pthread_mutex_consistent()`, and at the first the journal cleared already (the repair
/// done).
fn judge_recovery_calls(
    segment: &Segment,
    calls: Vec<RecoveryCall>,
    from: usize,
    to: usize,
) -> Result<(), Fail> {
    if let Some(call) = calls.iter().find(|call| call.function != CONSISTENT) {
        return Err(Fail::failed(format!(
            "a holder died while the coordinator waited; its pthread_cond_wait() returned \
             EOWNERDEAD, and in its recovery it called {}() (a breakpoint at that function): \
             the condition variable is initialized once, in create(), before the other \
             processes start; destroying and initializing it again while others may wait on \
             it forgets them (a later broadcast wakes nobody who waited before), and a dead \
             holder leaves nothing to repair in it",
            RECOVERY_CALLS[call.function].to_str().unwrap_or("?")
        )));
    }
    let seen: Vec<Option<u32>> = calls.into_iter().map(|call| call.active).collect();
    if seen.is_empty() && probe::try_lock(segment, Duration::from_secs(1))? == 0 {
        return Err(Fail::failed(format!(
            "a holder died in the middle of a transfer from account {from} to account {to} \
             while the coordinator waited; its pthread_cond_wait() returned EOWNERDEAD, it \
             repaired the bank and slept on the condition variable again, but a breakpoint at \
             its pthread_mutex_consistent() was never hit, though the mutex was left usable: \
             it was marked consistent another way (glibc's private owner word written by \
             hand); the robust-mutex API is pthread_mutex_consistent(), after recover()"
        )));
    }
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
    let recovery_calls = watch_recovery_calls(session)?;
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
    let recovery_calls = recovery_calls.map(Watching::finish);
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
    if let Some(calls) = recovery_calls {
        judge_recovery_calls(&session.segment, calls, from, to)?;
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
    let segment = open_segment(name, layout_of(&message)?, proc.pid.as_raw())?;
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
