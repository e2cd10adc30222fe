//! The clear of `journal.active` is a transfer's last store to the journal: a kill right after
//! any store of a transfer finds the transfer complete and `active` cleared at most once, at
//! the clear itself. A store to the journal after it (its other fields zeroed by a whole
//! `Journal` assigned at once) is a clear whose order the compiler picks: today after `active`,
//! another day before it, when a holder killed between them leaves an active journal of zeros.

use super::bank_view::{Bank, Transfer, applied};
use super::session::Session;
use super::store_kills::{Kill, who};
use crate::engine::Fail;

/// Counts, over the kills of one set of watched words, those that found the transfer complete
/// and the journal cleared.
pub(super) struct ClearedLast {
    /// Whether the set watches `journal.active` (then one such kill is the clear itself).
    watches_active: bool,
    after_clear: usize,
}

impl ClearedLast {
    pub(super) fn new(watches_active: bool) -> ClearedLast {
        ClearedLast {
            watches_active,
            after_clear: 0,
        }
    }

    /// Judges the kill of worker `victim` in `transfer`, made from the bank `before`.
    pub(super) fn judge(
        &mut self,
        session: &Session,
        (victim, transfer, watched): (usize, Transfer, &str),
        before: &Bank,
        killed: &Kill,
    ) -> Result<(), Fail> {
        let at = &killed.bank;
        let done = applied(before, transfer);
        if at.journal.active != 0 || at.transfers != done.0 || at.accounts != done.1 {
            return Ok(());
        }
        self.after_clear += 1;
        if self.after_clear <= usize::from(self.watches_active) {
            return Ok(());
        }
        Err(Fail::failed(format!(
            "{} was killed (SIGKILL) {} (hardware watchpoints on the words a transfer writes): \
             its transfer was complete and journal.active already cleared, yet it still wrote \
             to the journal: `active` is cleared last, by a store of that field alone \
             (journal.active = 0, after a compiler_fence); clearing the whole journal at once \
             (journal = Journal::default(), a struct assigned at once) lets the compiler store \
             its fields in any order, the saved balances before `active` too, and a holder \
             killed between them leaves an active journal that makes the repairer set both \
             balances to 0",
            who(session, victim),
            killed.describe(watched)
        )))
    }
}
