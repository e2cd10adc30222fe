//! The verdict on the totals: the transfer count and the balances the workers' reports predict,
//! and the coordinator's final view and the bank in the segment checked against them.

use super::ACCOUNTS;
use super::messages::{field, list};
use super::segment::dev_shm;
use super::session::{Outcome, Session};
use crate::engine::Fail;

/// The transfer count and the balances the workers' reports (and `extra`: a killed worker's
/// transfers, the coordinator's tried ones) predict.
pub(super) fn expected(
    session: &Session,
    outcome: &Outcome,
    extra: &[(u64, Vec<i64>)],
) -> (u64, Vec<i64>) {
    let mut want = vec![session.segment.layout.opening; ACCOUNTS];
    let mut want_transfers = 0;
    let reported = outcome
        .workers
        .values()
        .map(|w| (w.transfers, w.delta.as_slice()))
        .chain(
            extra
                .iter()
                .map(|(count, delta)| (*count, delta.as_slice())),
        );
    for (count, delta) in reported {
        want_transfers += count;
        for (balance, change) in want.iter_mut().zip(delta) {
            *balance += change;
        }
    }
    (want_transfers, want)
}

/// Each account whose balance in `got` is not the one in `want`, and by how much.
pub(super) fn off_accounts(got: &[i64], want: &[i64]) -> Vec<String> {
    got.iter()
        .zip(want)
        .enumerate()
        .filter(|(_, (got, want))| got != want)
        .map(|(account, (got, want))| format!("account {account} is off by {}", got - want))
        .collect()
}

/// Checks the coordinator's final view against the workers' reports: `finished` and `dead`
/// as given, the transfer count and every balance exact; then that the bank in the segment, as
/// the grader reads it, holds the same count and balances, with no transfer under way. `extra`
/// is work done outside the workers' reports: a killed worker's transfers, the coordinator's
/// tried transfers.
pub(super) fn verify(
    session: &Session,
    outcome: &Outcome,
    extra: &[(u64, Vec<i64>)],
    dead: u32,
) -> Result<u64, Fail> {
    let workers = session.workers.len();
    let done = &outcome.done;
    let finished: u32 = field(done, "finished")?;
    let seen_dead: u32 = field(done, "dead")?;
    let transfers: u64 = field(done, "transfers")?;
    let balances: Vec<i64> = list(done, "balances")?;
    let want_finished = workers as u32 - dead;
    let planted_workers = session.planted_workers;
    let seen_workers: u32 = field(done, "workers")?;
    if planted_workers > 0 && seen_workers != workers as u32 + planted_workers {
        return Err(Fail::failed(format!(
            "the coordinator reported workers = {seen_workers} (its wait ended with {finished} \
             finished and {seen_dead} dead), but the bank counted workers = {}: the grader, as \
             one more holder of the mutex, had added a worker to Bank::workers while the \
             coordinator slept, counted dead at once; wait_all_done() reads Bank::workers from \
             the segment, under the lock, both for its loop (while finished + dead < workers) \
             and for the snapshot, not a copy kept in the process",
            workers as u32 + planted_workers
        )));
    }
    if finished < want_finished {
        return Err(Fail::failed(format!(
            "the coordinator's wait ended when only {finished} of {want_finished} workers had \
             finished: a wake-up does not mean the condition holds; re-check \
             finished + dead, and sleep again while it is below workers: a while loop around \
             pthread_cond_wait()"
        )));
    }
    let planted = session.planted_dead;
    if planted > 0 && finished == want_finished && seen_dead != dead + planted {
        let computed = if seen_dead == workers as u32 - finished {
            " = workers - finished, computed instead of read from the bank".to_string()
        } else {
            String::new()
        };
        return Err(Fail::failed(format!(
            "the coordinator reported dead = {seen_dead}{computed}, but when its wait ended \
             the bank counted dead = {} (the grader, as one more holder of the mutex, had \
             counted a dead holder of its own while the last worker ran, so finished + dead \
             was {} for {workers} workers): the Snapshot reports Bank::dead as the segment \
             holds it, read with the lock held",
            dead + planted,
            finished + dead + planted
        )));
    }
    let dead = dead + planted;
    if finished != want_finished || seen_dead != dead {
        return Err(Fail::failed(format!(
            "the coordinator saw {finished} finished and {seen_dead} dead workers, not \
             {want_finished} and {dead}"
        )));
    }
    let (want_transfers, want) = expected(session, outcome, extra);
    let wrong = off_accounts(&balances, &want);
    let total: i64 = balances.iter().sum::<i64>() - want.iter().sum::<i64>();
    if transfers > want_transfers && wrong.is_empty() {
        return Err(Fail::failed(format!(
            "the bank counts {transfers} transfers for {want_transfers} done ({} too many), \
             the balances right: a transfer was counted twice, or one counted that the bank \
             refused or that never happened in this process; every transfer that goes through \
             adds one to Bank::transfers, in the segment, once",
            transfers - want_transfers
        )));
    }
    if transfers == want_transfers && total == 0 && !wrong.is_empty() {
        return Err(Fail::failed(format!(
            "the balances differ from the workers' records ({}), though every transfer was \
             counted and no money was created or destroyed: transfers overlapped (a balance \
             written back from a stale read: hold the lock from a transfer's first read to its \
             last write), or a transfer moves money other than `amount` from `from` to `to`",
            wrong.join(", ")
        )));
    }
    if transfers != want_transfers || !wrong.is_empty() {
        return Err(Fail::failed(format!(
            "lost updates: the bank counts {transfers} transfers for {want_transfers} done, {} \
             ({} money {}): transfers overlapped; hold the lock from a transfer's first read \
             to its last write, in every process",
            if wrong.is_empty() {
                "the balances are right".to_string()
            } else {
                wrong.join(", ")
            },
            total.abs(),
            if total >= 0 { "created" } else { "destroyed" }
        )));
    }
    let (in_segment, accounts) = session.segment.bank()?;
    if in_segment != transfers || accounts != balances {
        return Err(Fail::failed(format!(
            "the totals the coordinator reported are not the segment's: it reported {transfers} \
             transfers and balances {balances:?}, but the bank in {} holds {in_segment} \
             transfers and balances {accounts:?}; the accounts and the count live in the \
             segment (Bank::accounts, Bank::transfers): every transfer changes them there, and \
             wait_all_done() reports them from there",
            dev_shm(&session.name).display()
        )));
    }
    let journal = session.segment.journal()?;
    if journal.active != 0 {
        return Err(Fail::failed(format!(
            "every transfer is over, yet the journal in the segment is still active (a \
             transfer from account {} to account {}): a transfer clears it (active = 0) once it \
             is complete, and recover() once it has undone one",
            journal.from, journal.to
        )));
    }
    Ok(transfers)
}

/// The change one transfer of `amount` from `from` to `to` makes to the accounts.
pub(super) fn delta_of(from: usize, to: usize, amount: i64) -> Vec<i64> {
    let mut delta = vec![0; ACCOUNTS];
    delta[from] -= amount;
    delta[to] += amount;
    delta
}
