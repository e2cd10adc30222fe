//! The bank as the grader reads it from the segment, the words a store may hit and the
//! transfers the workers make, as the kills at every store judge them.

use super::ACCOUNTS;
use super::segment::{Journal, Segment};
use crate::engine::Fail;

/// The bank as the grader reads it from the segment, but for the mutex and the condition
/// variable.
#[derive(Clone, PartialEq)]
pub(super) struct Bank {
    pub(super) transfers: u64,
    pub(super) accounts: Vec<i64>,
    pub(super) journal: Journal,
    pub(super) dead: u32,
}

pub(super) fn look(segment: &Segment) -> Result<Bank, Fail> {
    let (transfers, accounts) = segment.bank()?;
    Ok(Bank {
        transfers,
        accounts,
        journal: segment.journal()?,
        dead: segment.counts()?.dead,
    })
}

/// One watched word of the bank: its offset in the segment and its name in messages.
#[derive(Clone, Copy)]
pub(super) struct Word {
    pub(super) offset: usize,
    pub(super) name: &'static str,
}

/// A transfer of a worker: its accounts and amount.
#[derive(Clone, Copy)]
pub(super) struct Transfer {
    pub(super) from: usize,
    pub(super) to: usize,
    pub(super) amount: i64,
}

/// The first transfer of worker `index`, as `main.rs` draws it from the seed (its `Random`).
pub(super) fn first_transfer(seed: u64, index: usize) -> Transfer {
    let mut state = (seed ^ 0x9e37_79b9_7f4a_7c15).wrapping_mul(index as u64 + 1) | 1;
    let mut next = |below: u64| {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) % below
    };
    let from = next(ACCOUNTS as u64) as usize;
    let to = (from + 1 + next(ACCOUNTS as u64 - 1) as usize) % ACCOUNTS;
    let amount = 1 + next(1000) as i64;
    Transfer { from, to, amount }
}

/// The bank after `transfer`, made on `bank`.
pub(super) fn applied(bank: &Bank, transfer: Transfer) -> (u64, Vec<i64>) {
    let mut accounts = bank.accounts.clone();
    accounts[transfer.from] -= transfer.amount;
    accounts[transfer.to] += transfer.amount;
    (bank.transfers + 1, accounts)
}

/// What changed from `before` to `now`, in words ("journal.active 0 -> 1").
pub(super) fn changes(before: &Bank, now: &Bank) -> Vec<String> {
    let (b, n) = (&before.journal, &now.journal);
    let mut seen = Vec::new();
    let mut note = |what: String, was: String, is: String| {
        if was != is {
            seen.push(format!("{what} {was} -> {is}"));
        }
    };
    note(
        "journal.active".into(),
        b.active.to_string(),
        n.active.to_string(),
    );
    note(
        "journal.from".into(),
        b.from.to_string(),
        n.from.to_string(),
    );
    note("journal.to".into(), b.to.to_string(), n.to.to_string());
    note(
        "journal.from_balance".into(),
        b.from_balance.to_string(),
        n.from_balance.to_string(),
    );
    note(
        "journal.to_balance".into(),
        b.to_balance.to_string(),
        n.to_balance.to_string(),
    );
    note(
        "journal.transfers".into(),
        b.transfers.to_string(),
        n.transfers.to_string(),
    );
    for a in 0..ACCOUNTS {
        note(
            format!("account {a}"),
            before.accounts[a].to_string(),
            now.accounts[a].to_string(),
        );
    }
    note(
        "transfers".into(),
        before.transfers.to_string(),
        now.transfers.to_string(),
    );
    note("dead".into(), before.dead.to_string(), now.dead.to_string());
    seen
}

/// How `now` differs from the bank that was wanted (its count and balances), in words.
pub(super) fn wrong(now: &Bank, transfers: u64, accounts: &[i64]) -> Vec<String> {
    let mut seen: Vec<String> = (0..ACCOUNTS)
        .filter(|&a| now.accounts[a] != accounts[a])
        .map(|a| {
            format!(
                "account {a} holds {} (not {}: {:+})",
                now.accounts[a],
                accounts[a],
                now.accounts[a] - accounts[a]
            )
        })
        .collect();
    if now.transfers != transfers {
        seen.push(format!("the count is {} (not {transfers})", now.transfers));
    }
    seen
}

pub(super) fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (1, 11) | (2, 12) | (3, 13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}
