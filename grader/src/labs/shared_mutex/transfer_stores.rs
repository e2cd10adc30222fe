//! A transfer's holder killed right after each of its stores in turn, and the bank the next
//! holder's repair leaves judged.

use super::bank_view::{Bank, Transfer, Word, applied, first_transfer, look, wrong};
use super::journal_clear::ClearedLast;
use super::segment::Segment;
use super::session::Session;
use super::store_kills::{Kill, Pool, Watch, kill_at, repair, settle, who};
use super::stores::MOST_STORES;
use crate::engine::Fail;

/// The words one transfer writes, in two sets of four (a machine has four watchpoints): the
/// journal's first four words, then its count, the two accounts and the bank's count.
fn transfer_words(segment: &Segment, transfer: Transfer) -> [Vec<Word>; 2] {
    let (j, layout) = (segment.layout.journal_at, segment.layout);
    [
        vec![
            Word {
                offset: j,
                name: "journal.active / journal.from",
            },
            Word {
                offset: j + 8,
                name: "journal.to",
            },
            Word {
                offset: j + 16,
                name: "journal.from_balance",
            },
            Word {
                offset: j + 24,
                name: "journal.to_balance",
            },
        ],
        vec![
            Word {
                offset: j + 32,
                name: "journal.transfers",
            },
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
        ],
    ]
}

const SETS: [&str; 2] = [
    "the journal's first words (active and from, to, from_balance, to_balance)",
    "the journal's saved count, the two accounts and the bank's count",
];

/// Kills a transfer's holder right after each of its stores in turn; each time a worker in
/// `finish()` locks next and repairs. `None` without watchpoints; else how many stores.
pub(super) fn every_store(session: &mut Session, pool: &mut Pool) -> Result<Option<usize>, Fail> {
    let mut stores = 0;
    for set in 0..2 {
        let mut cleared_last = ClearedLast::new(set == 0);
        for k in 1..=MOST_STORES + 1 {
            settle(session);
            let victim = pool.victim()?;
            let transfer = first_transfer(session.seed, victim);
            let before = look(&session.segment)?;
            let words = transfer_words(&session.segment, transfer);
            let killed = match kill_at(session, victim, &words[set], k)? {
                Watch::Unwatched => return Ok(None),
                Watch::Finished => break,
                Watch::Killed(killed) => killed,
            };
            stores += 1;
            let repairer = pool.repairer()?;
            repair(session, repairer)?;
            let after = look(&session.segment)?;
            judge_kill(
                session,
                (victim, repairer),
                transfer,
                SETS[set],
                (&before, &killed, &after),
            )?;
            cleared_last.judge(session, (victim, transfer, SETS[set]), &before, &killed)?;
        }
    }
    Ok(Some(stores))
}

/// The bank once a worker killed right after a store of its transfer was found dead and
/// repaired: if the journal was active at the kill, the transfer is undone and the worker
/// counted dead; if not, the bank was whole then (before the transfer or after it), and stays
/// so, nobody counted.
fn judge_kill(
    session: &Session,
    (victim, repairer): (usize, usize),
    transfer: Transfer,
    watched: &str,
    (before, killed, after): (&Bank, &Kill, &Bank),
) -> Result<(), Fail> {
    let Transfer { from, to, amount } = transfer;
    let at = &killed.bank;
    let what = format!(
        "{} was killed (SIGKILL) in its transfer of {amount} from account {from} to account \
         {to}, {} (hardware watchpoints on the words a transfer writes)",
        who(session, victim),
        killed.describe(watched)
    );
    let next = format!(
        "the next to lock, {} (in finish(), no transfer of its own), met EOWNERDEAD",
        who(session, repairer)
    );
    let done = applied(before, transfer);
    if at.journal.active == 0 {
        let whole_before = at.transfers == before.transfers && at.accounts == before.accounts;
        let whole_after = at.transfers == done.0 && at.accounts == done.1;
        if !whole_before && !whole_after {
            return Err(Fail::failed(format!(
                "{what}; at that store the bank was half changed ({}) while the journal was \
                 not active, so nothing tells the next holder to undo it: the journal is active \
                 from before a transfer's first change to the bank until after its last \
                 (active set last in the journal, cleared last, after the count), and those \
                 stores reach the segment in that order (a compiler_fence between them keeps \
                 the compiler from moving one across)",
                wrong(at, before.transfers, &before.accounts).join(", ")
            )));
        }
        let mut off = wrong(after, at.transfers, &at.accounts);
        if after.dead != before.dead {
            off.push(format!(
                "dead is {} (not {}: no transfer was under way)",
                after.dead, before.dead
            ));
        }
        if !off.is_empty() {
            return Err(Fail::failed(format!(
                "{what}; the journal was not active then and the bank whole ({}), yet after \
                 {next}, {}: with no journal active there is nothing to undo",
                if whole_before {
                    "the transfer not begun"
                } else {
                    "the transfer complete"
                },
                off.join(", ")
            )));
        }
        return Ok(());
    }
    // Active at the kill: the transfer must be undone and its worker counted.
    let journal = at.journal;
    let saved = journal.saved();
    let right = (
        from,
        to,
        before.accounts[from],
        before.accounts[to],
        before.transfers,
    );
    let debited = at.accounts[from] != before.accounts[from];
    let credited = at.accounts[to] != before.accounts[to];
    let counted = at.transfers != before.transfers;
    if (credited && !debited) || (counted && !credited) {
        let (made, missing) = if credited && !debited {
            ("its credit", "its debit")
        } else {
            ("its count", "its credit")
        };
        return Err(Fail::failed(format!(
            "{what}, the journal active; at that store the bank held {made} but not {missing} \
             ({}): a transfer's stores reach the segment in the order debit, midway(), credit, \
             count, then `active` cleared, with a compiler_fence between each two, so that a \
             holder's death leaves only a beginning of them (the repair hid it this time, but \
             no other order is the transfer the handout asks for)",
            wrong(at, before.transfers, &before.accounts).join(", ")
        )));
    }
    let mut off = wrong(after, before.transfers, &before.accounts);
    if after.journal.active != 0 {
        off.push("the journal still active".into());
    }
    if after.dead != before.dead + 1 {
        off.push(format!("dead = {} (not {})", after.dead, before.dead + 1));
    }
    if off.is_empty() {
        return Ok(());
    }
    if after.journal.active != 0 && after.dead == before.dead && after.accounts == at.accounts {
        return Err(Fail::failed(format!(
            "{what}, the journal active; {next}, and did not repair the bank: it returned \
             from finish() with the journal still active and dead = {}: lock() repairs after \
             EOWNERDEAD (recover(), then pthread_mutex_consistent()) whatever called it, \
             finish() too: the dead holder's half transfer is no less there",
            after.dead
        )));
    }
    if saved != right {
        return Err(Fail::failed(format!(
            "{what}; the journal was then active, but its other fields were not this \
             transfer's: it named accounts {} and {} with balances {} and {} and count {}, \
             where the transfer's were {from} and {to}, {} and {} and {}{}; {next} and \
             trusted it: {}. An active journal must describe the transfer under way: set \
             `active` last, once from, to, both balances and the count are stored, with a \
             compiler_fence before it (assigning a whole Journal at once lets the compiler \
             store its fields in any order, `active` first)",
            saved.0,
            saved.1,
            saved.2,
            saved.3,
            saved.4,
            right.2,
            right.3,
            right.4,
            if journal.transfers + 1 == before.transfers || journal.transfers == 0 {
                " (an earlier transfer's, or nothing yet)"
            } else {
                ""
            },
            off.join(", ")
        )));
    }
    let made = [
        (at.accounts[from] != before.accounts[from], "its debit"),
        (at.accounts[to] != before.accounts[to], "its credit"),
        (at.transfers != before.transfers, "its count"),
    ]
    .iter()
    .filter(|(made, _)| *made)
    .map(|(_, what)| *what)
    .collect::<Vec<_>>();
    Err(Fail::failed(format!(
        "{what}, with the journal active and right ({}); {next}, and after its repair {}: \
         recover() puts back both balances and the count exactly as the journal saved them, \
         whatever step the holder reached (it may die after any store: its debit, its credit \
         without its count, ...), clears the journal and counts the worker dead",
        if made.is_empty() {
            "nothing of the transfer made yet".to_string()
        } else {
            format!("{} made", made.join(" and "))
        },
        off.join(", ")
    )))
}
