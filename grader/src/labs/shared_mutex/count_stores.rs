//! One worker's stores to the count and to the journal's `active` flag, each judged as it is
//! made (hardware watchpoints stop the worker right after it): every one is made holding the
//! mutex, and the journal is still active when the count is stored.

use std::time::{Duration, Instant};

use super::probe;
use super::session::Session;
use crate::engine::Fail;
use crate::engine::tracer::{Field, Tracer, Watched};

/// How many stores to the count are judged: enough to meet every store a transfer makes.
const WATCHED_STORES: u32 = 300;
/// How many are judged however slow the machine.
const FEWEST_STORES: u32 = 30;
/// [`watch`]'s fields, in this order.
const COUNT: usize = 0;
const ACTIVE: usize = 1;

/// Watches worker `pid`'s stores to the count and to `journal.active`, from now on.
pub(super) fn watch(session: &Session, pid: i32) -> Result<Option<Tracer>, Fail> {
    let Some(map) = probe::mappings(pid, &session.name)
        .into_iter()
        .find(|m| m.offset == 0)
    else {
        return Ok(None);
    };
    let layout = session.segment.layout;
    // The tracer keeps its fields for its life: a few bytes a run.
    let fields: &'static [Field] = Box::leak(Box::new([
        Field {
            offset: layout.transfers_at,
            len: 8,
            loads: false,
        },
        Field {
            offset: layout.journal_at,
            len: 4,
            loads: false,
        },
    ]));
    Tracer::watch_at(pid, map.start, fields)
}

/// What the owner word says, for messages.
fn holder(owner: i32) -> String {
    if owner == 0 {
        "the mutex was free".to_string()
    } else {
        format!("the mutex was held by thread {owner}")
    }
}

/// At each store of worker `pid` to the count, the mutex's owner word must be its own thread
/// id and the journal still active (it is cleared only once the transfer is complete); at each
/// store to `active`, the owner word must be its own too. Returns how many count stores were
/// judged.
pub(super) fn judge(session: &mut Session, pid: i32, mut tracer: Tracer) -> Result<u32, Fail> {
    // Three stops a transfer: on a loaded machine the watch ends early, once it has seen a few.
    let budget = Instant::now() + Duration::from_secs(3);
    let mut stores = 0;
    // What the worker's own last store to `active` left there.
    let mut own_active = None;
    while stores < WATCHED_STORES && (stores < FEWEST_STORES || Instant::now() < budget) {
        match tracer.next(&mut session.proc, Instant::now() + Duration::from_secs(5))? {
            Watched::Armed => {}
            Watched::Hit if tracer.last_hit() == ACTIVE => {
                let owner = session.segment.mutex_owner()?;
                if owner != pid {
                    drop(tracer);
                    return Err(active_outside_the_lock(pid, owner));
                }
                own_active = Some(session.segment.journal()?.active);
                tracer.go_on();
            }
            Watched::Hit => {
                debug_assert_eq!(tracer.last_hit(), COUNT);
                stores += 1;
                let owner = session.segment.mutex_owner()?;
                if owner != pid {
                    drop(tracer);
                    return Err(Fail::failed(format!(
                        "a worker (pid {pid}) changed Bank::transfers while it did not hold the \
                         bank's mutex ({} at that store, seen with a hardware watchpoint on \
                         the count): the count is updated outside the lock (an atomic add is no \
                         lock: recover() puts the journal's count back over it); set it, with \
                         the balances, before the guard is dropped",
                        holder(owner)
                    )));
                }
                // The journal says "active" until the transfer is complete, its count too: a
                // holder that dies right after a store to the count must still be undone.
                if session.segment.journal()?.active == 0 {
                    drop(tracer);
                    return Err(match own_active {
                        Some(0) => cleared_before_count(pid),
                        Some(_) => cleared_by_another(pid),
                        None => never_set(pid),
                    });
                }
                tracer.go_on();
            }
            Watched::Said(message) => session.set_aside(message),
            Watched::Lost | Watched::Unavailable => break,
        }
    }
    drop(tracer);
    Ok(stores)
}

fn active_outside_the_lock(pid: i32, owner: i32) -> Fail {
    Fail::failed(format!(
        "a worker (pid {pid}) stored to journal.active while it did not hold the bank's mutex \
         ({} at that store, seen with a hardware watchpoint on active): it clears the journal \
         after its unlock (or sets it before its lock); such a late clear can wipe the next \
         holder's journal, which then says nothing while that holder is mid-transfer, so its \
         death is never undone; every store to the journal, the clear too, is made holding the \
         lock: clear active last, before the guard is dropped",
        holder(owner)
    ))
}

fn cleared_by_another(pid: i32) -> Fail {
    Fail::failed(format!(
        "a worker (pid {pid}) stored a new Bank::transfers while the journal in the segment was \
         no longer active, though its own last store to journal.active had set it (hardware \
         watchpoints on the count and on active, the mutex held by that worker): another \
         process cleared the journal while this worker held the mutex, a clear made outside \
         the lock (after that process unlocked); a holder that dies then leaves its transfer \
         half done with nothing for recover() to undo; every store to the journal, the clear \
         too, is made holding the lock: clear active last, before the guard is dropped"
    ))
}

fn cleared_before_count(pid: i32) -> Fail {
    Fail::failed(format!(
        "a worker (pid {pid}) stored a new Bank::transfers while the journal in the segment was \
         no longer active, its own last store to journal.active a clear (hardware watchpoints \
         on the count and on active, the mutex held by that worker): the journal was cleared \
         before the transfer was complete (or never set active for it), so a holder that dies between clearing it and \
         counting leaves the money moved but the count one short, with nothing for recover() \
         to undo; write the count with the balances, then clear the journal last"
    ))
}

fn never_set(pid: i32) -> Fail {
    Fail::failed(format!(
        "a worker (pid {pid}) stored a new Bank::transfers while the journal in the segment was \
         not active, and it had made no store to journal.active at all (hardware watchpoints on \
         the count and on active, the mutex held by that worker): a transfer writes the \
         journal and sets active before it changes the bank, so that a holder that dies \
         mid-transfer is undone by the next one; then debit, credit, count, and clear active \
         last"
    ))
}
