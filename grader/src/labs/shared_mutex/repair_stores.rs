//! A repairer killed right after each store of its `recover()` in turn, and the next repair
//! judged.

use super::bank_view::{Transfer, Word, first_transfer, look, wrong};
use super::segment::Segment;
use super::session::Session;
use super::store_kills::{Pool, Watch, kill_at, repair, settle, who};
use super::stores::MOST_REPAIR_STORES;
use crate::engine::Fail;

/// The words `recover()` may write, in two sets of four: the two accounts, the count and
/// `active`; then the journal's saved balances and count (left whole while active, for the next
/// repairer) and `dead` (counted while the journal is active, the worker is counted again).
fn repair_words(segment: &Segment, transfer: Transfer) -> [[Word; 4]; 2] {
    let (j, layout) = (segment.layout.journal_at, segment.layout);
    let active = Word {
        offset: j,
        name: "journal.active",
    };
    [
        [
            Word {
                offset: layout.accounts_at + 8 * transfer.from,
                name: "the debited account",
            },
            Word {
                offset: layout.accounts_at + 8 * transfer.to,
                name: "the credited account",
            },
            Word {
                offset: layout.transfers_at,
                name: "the bank's count (transfers)",
            },
            active,
        ],
        [
            Word {
                offset: j + 16,
                name: "journal.from_balance",
            },
            Word {
                offset: j + 24,
                name: "journal.to_balance",
            },
            Word {
                offset: j + 32,
                name: "journal.transfers",
            },
            Word {
                offset: layout.counts_at + 8,
                name: "dead",
            },
        ],
    ]
}

const REPAIR_SETS: [&str; 2] = [
    "the two accounts, the count and journal.active",
    "the journal's saved balances and count and dead",
];

/// Kills a worker right after its debit, then the worker that repairs right after each store of
/// its `recover()` to each set of [`repair_words`] in turn; another worker then repairs. `None`
/// without watchpoints; else how many stores.
pub(super) fn every_repair_store(session: &mut Session, pool: &mut Pool) -> Result<usize, Fail> {
    let mut stores = 0;
    for set in 0..2 {
        for k in 1..=MOST_REPAIR_STORES + 1 {
            if !repair_killed_at(session, pool, set, k)? {
                break;
            }
            stores += 1;
        }
    }
    Ok(stores)
}

/// One kill of a repairer right after its `k`-th store to the set `set` of [`repair_words`]:
/// `true` if it was killed there, `false` when it made fewer stores (the set is done).
fn repair_killed_at(
    session: &mut Session,
    pool: &mut Pool,
    set: usize,
    k: usize,
) -> Result<bool, Fail> {
    settle(session);
    let victim = pool.victim()?;
    let transfer = first_transfer(session.seed, victim);
    let Transfer { from, to, .. } = transfer;
    let before = look(&session.segment)?;
    let layout = session.segment.layout;
    let debit = [Word {
        offset: layout.accounts_at + 8 * from,
        name: "the debited account",
    }];
    let journal = match kill_at(session, victim, &debit, 1)? {
        Watch::Killed(killed) if killed.bank.journal.active != 0 => killed.bank.journal,
        Watch::Killed(_) => {
            // Judged with the transfer's own stores: let a worker repair and stop here.
            let repairer = pool.repairer()?;
            repair(session, repairer)?;
            return Ok(false);
        }
        Watch::Finished | Watch::Unwatched => return Ok(false),
    };
    let repairer = pool.repairer()?;
    let words = repair_words(&session.segment, transfer);
    let what = format!(
        "{} was killed (SIGKILL) right after the debit of its transfer of {} from account \
         {from} to account {to} (the journal active)",
        who(session, victim),
        transfer.amount
    );
    let (killed, last) = match kill_at(session, repairer, &words[set], k)? {
        Watch::Killed(killed) => (Some(killed), pool.repairer()?),
        Watch::Finished | Watch::Unwatched => (None, repairer),
    };
    if killed.is_some() {
        repair(session, last)?;
    }
    let after = look(&session.segment)?;
    let mut off = wrong(&after, before.transfers, &before.accounts);
    if after.journal.active != 0 {
        off.push("the journal still active".into());
    }
    // A repairer killed after its clear may not have counted the dead worker yet.
    let cleared = killed.as_ref().is_some_and(|k| k.bank.journal.active == 0);
    let counted = after.dead == before.dead + 1 || (cleared && after.dead == before.dead);
    if !counted {
        off.push(format!("dead = {} (not {})", after.dead, before.dead + 1));
    }
    let Some(killed) = killed else {
        if !off.is_empty() {
            return Err(Fail::failed(format!(
                "{what}; {} met EOWNERDEAD in finish() and repaired, but then {}: recover() \
                 puts back both balances and the count the journal saved, clears the \
                 journal and counts the worker dead",
                who(session, repairer),
                off.join(", ")
            )));
        }
        return Ok(false);
    };
    if off.is_empty() {
        return Ok(true);
    }
    let at = &killed.bank;
    let undone = at.accounts == before.accounts && at.transfers == before.transfers;
    let cause = if at.journal.active == 0 && !undone {
        format!(
            "the repairer had cleared the journal before putting back everything it saved (at \
             its death {}), so the next holder found no transfer under way and the half \
             transfer stays for good: ",
            wrong(at, before.transfers, &before.accounts).join(", ")
        )
    } else if at.journal.active != 0 && at.journal.saved() != journal.saved() {
        format!(
            "the repairer had changed what the journal saved while it was still active \
             (accounts {} and {}, balances {} and {}, count {}; the dead holder saved {}, {}, \
             {}, {}, {}), so the next holder repeated the repair from the changed values: an \
             active journal always describes the transfer under way, and recover() leaves it \
             as it is but for `active`: ",
            at.journal.from,
            at.journal.to,
            at.journal.from_balance,
            at.journal.to_balance,
            at.journal.transfers,
            journal.from,
            journal.to,
            journal.from_balance,
            journal.to_balance,
            journal.transfers
        )
    } else if after.dead > before.dead + 1 {
        "the repairer had counted the dead worker before clearing the journal, so the next \
         holder, finding the journal still active, counted it again (count it once the \
         journal is cleared): "
            .to_string()
    } else {
        String::new()
    };
    Err(Fail::failed(format!(
        "{what}; the next to lock, {} (in finish()), met EOWNERDEAD and was killed in its \
         repair {}; then {} locked (EOWNERDEAD again), and after that {}: {cause}a repairer \
         holds the lock like any holder and may die between any two stores too: recover() \
         puts back both balances and the count first and clears `active` last (a \
         compiler_fence before the clear), so that a repair cut short leaves the journal \
         active and the next holder repeats it",
        who(session, repairer),
        killed.describe(REPAIR_SETS[set]),
        who(session, last),
        off.join(", ")
    )))
}
