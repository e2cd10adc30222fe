//! The balances live in the segment, not in a worker: another holder of the mutex may change
//! them between two transfers of one worker without changing the count, and each transfer
//! reads them anew, under the lock. A worker that remembers them from its own last transfer
//! (the count unchanged since, so "nobody else transferred") writes the old ones back.

use std::time::{Duration, Instant};

use super::ACCOUNTS;
use super::probe;
use super::session::Session;
use super::totals::{expected, off_accounts, verify};
use crate::engine::{Fail, Run};

/// Transfers of the worker: a tenth of a second of work or more, so that the grader, which
/// takes the mutex after the first hundred, finds most of it still to come even when the
/// machine is loaded.
const WORK: u64 = 300_000;

/// Transfers counted before the grader takes the mutex: the worker has a last transfer of its
/// own to remember.
const BEFORE_HOLD: u64 = 100;

/// One worker (so that it is its own last transfer it could remember); once [`BEFORE_HOLD`] of
/// its transfers are counted, the grader takes the mutex, adds 1 to every balance (the count as it
/// was), and lets go. The final balances must hold that 1.
/// `false` if the workers were done before the grader could take the mutex midway.
pub(super) fn balances_read_under_the_lock(run: &mut Run) -> Result<bool, Fail> {
    let mut session = Session::start(run, &[WORK], &[])?;
    session.go()?;
    let total = WORK;
    let until = Instant::now() + Duration::from_secs(5);
    let midway = loop {
        let (count, _) = session.segment.bank()?;
        if count >= BEFORE_HOLD || Instant::now() >= until {
            break count;
        }
        std::thread::sleep(Duration::from_micros(50));
    };
    let held = probe::hold(&session.segment, Duration::from_secs(2))?;
    let (count, accounts) = session.segment.bank()?;
    let changed = midway < total / 2 && count < total / 2;
    if changed {
        let at = session.segment.layout.accounts_at;
        for (index, balance) in accounts.iter().enumerate() {
            session
                .segment
                .write_at(at + 8 * index, &(balance + 1).to_ne_bytes())?;
        }
    }
    drop(held);
    let added = if changed { 1 } else { 0 };
    let outcome = session.finish(0, |_| Ok(()))?;
    if changed {
        // Judged from the segment before the verdict on the totals, whose causes (overlapping
        // transfers) are not this one's.
        let (transfers, want) = expected(&session, &outcome, &[(0, vec![added; ACCOUNTS])]);
        let (counted, balances) = session.segment.bank()?;
        let lost = off_accounts(&balances, &want);
        if counted == transfers && !lost.is_empty() {
            return Err(Fail::failed(format!(
                "the grader took the bank's mutex after {count} of {total} transfers and, \
                 holding it, added 1 to every balance, the count left as it was (another \
                 holder of the lock may change the bank); at the end, every transfer counted, \
                 {}: a transfer wrote back balances it had not read from the segment. A \
                 transfer reads both balances from the bank, with the lock held, every time: \
                 a copy kept from the worker's own last transfer (the count unchanged since, \
                 so nobody else transferred?) is no longer the bank's",
                lost.join(", ")
            )));
        }
    }
    verify(&session, &outcome, &[(0, vec![added; ACCOUNTS])], 0)?;
    Ok(changed)
}
