//! A holder may be killed between any two of its stores into the bank, and a `SIGKILL` leaves
//! in the segment exactly the stores made before it. So the grader kills a worker right after
//! each store of one transfer in turn (one worker per store: hardware watchpoints on the words a
//! transfer writes stop it there), lets the next locker repair, and wants the bank exact every
//! time; then it kills the repairer right after each store of its `recover()` in turn, and wants
//! the next repair to come out exact as well. A store the compiler moved (plain stores, a whole
//! `Journal` assigned at once, may reach memory in any order) shows as surely as one written in
//! the wrong order.
//!
//! The run has many workers: those with one transfer are the ones killed, those with none go
//! straight to `finish()`, where their lock meets `EOWNERDEAD` and repairs. Every worker is
//! stopped until its turn; the grader knows each one's transfer from the seed (the program's
//! generator, which `main.rs` keeps as it is), so it can watch the two accounts before the
//! transfer starts.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::ACCOUNTS;
use super::messages::{failure, index_of};
use super::probe::{self, Place};
use super::robust::{STEP, robust};
use super::segment::{Journal, Segment};
use super::session::Session;
use crate::engine::tracer::{Field, Tracer, Watched};
use crate::engine::{Fail, Run, force, inspect};

/// The most stores one transfer is expected to make to one set of watched words (the reference
/// makes 7 to the journal's first four words, 4 to the other four): the kills stop there.
const MOST_STORES: usize = 8;
/// The same for `recover()`'s stores to one set of its watched words (the reference makes 4 to
/// the words it repairs, 1 to `dead`).
const MOST_REPAIR_STORES: usize = 5;
/// Workers with one transfer (killed in it) and with none (repairers, in `finish()`).
const VICTIMS: usize = 2 * (MOST_STORES + 1) + 2 * (MOST_REPAIR_STORES + 1);
const REPAIRERS: usize = 2 * (MOST_STORES + 1) + 4 * (MOST_REPAIR_STORES + 1);

/// The bank as the grader reads it from the segment, but for the mutex and the condition
/// variable.
#[derive(Clone, PartialEq)]
struct Bank {
    transfers: u64,
    accounts: Vec<i64>,
    journal: Journal,
    dead: u32,
}

fn look(segment: &Segment) -> Result<Bank, Fail> {
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
struct Word {
    offset: usize,
    name: &'static str,
}

/// A transfer of a worker: its accounts and amount.
#[derive(Clone, Copy)]
struct Transfer {
    from: usize,
    to: usize,
    amount: i64,
}

/// The first transfer of worker `index`, as `main.rs` draws it from the seed (its `Random`).
fn first_transfer(seed: u64, index: usize) -> Transfer {
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
fn applied(bank: &Bank, transfer: Transfer) -> (u64, Vec<i64>) {
    let mut accounts = bank.accounts.clone();
    accounts[transfer.from] -= transfer.amount;
    accounts[transfer.to] += transfer.amount;
    (bank.transfers + 1, accounts)
}

/// What changed from `before` to `now`, in words ("journal.active 0 -> 1").
fn changes(before: &Bank, now: &Bank) -> Vec<String> {
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
fn wrong(now: &Bank, transfers: u64, accounts: &[i64]) -> Vec<String> {
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

/// The store where the grader killed a process, and the bank it left.
struct Kill {
    /// Which store of the watched ones (from 1), and to which word.
    store: usize,
    word: &'static str,
    /// What that store changed (nothing, if it stored the value already there).
    change: Vec<String>,
    bank: Bank,
}

impl Kill {
    fn describe(&self, watched: &str) -> String {
        format!(
            "right after its {} store to {watched} (a store to {}: {})",
            ordinal(self.store),
            self.word,
            if self.change.is_empty() {
                "the value already there".to_string()
            } else {
                self.change.join(", ")
            }
        )
    }
}

/// How a watched process went on.
enum Watch {
    /// Killed right after its `k`-th store to the watched words.
    Killed(Kill),
    /// It made fewer stores to them, and finished.
    Finished,
    /// The machine does not allow watchpoints.
    Unwatched,
}

/// The workers not yet used, by role; all stopped.
struct Pool {
    victims: VecDeque<usize>,
    repairers: VecDeque<usize>,
}

impl Pool {
    fn victim(&mut self) -> Result<usize, Fail> {
        self.victims
            .pop_front()
            .ok_or_else(|| Fail::Grader("no worker left to kill".into()))
    }

    fn repairer(&mut self) -> Result<usize, Fail> {
        self.repairers
            .pop_front()
            .ok_or_else(|| Fail::Grader("no worker left to repair".into()))
    }
}

/// A worker, in messages.
fn who(session: &Session, index: usize) -> String {
    format!("worker {index} (pid {})", session.workers[index])
}

/// Waits (up to [`STEP`]) until the coordinator sleeps on the condition variable again: a
/// coordinator still taking in an earlier wake-up could be the one to meet the next dead
/// holder.
fn settle(session: &Session) {
    let until = Instant::now() + STEP;
    while session.coordinator_place() != Some(Place::Cond) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Lets worker `index` (stopped) take its `go`, watching `words`, and kills it right after its
/// `k`-th store to them; or sees it finish first.
fn kill_at(session: &mut Session, index: usize, words: &[Word], k: usize) -> Result<Watch, Fail> {
    let pid = session.workers[index];
    let Some(map) = probe::mappings(pid, &session.name)
        .into_iter()
        .find(|m| m.offset == 0)
    else {
        return Ok(Watch::Unwatched);
    };
    // The tracer keeps its fields for its life: a few bytes a watched worker.
    let fields: &'static [Field] = Box::leak(
        words
            .iter()
            .map(|w| Field {
                offset: w.offset,
                len: 8,
                loads: false,
            })
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    );
    let Some(mut tracer) = Tracer::watch_at(pid, map.start, fields)? else {
        return Ok(Watch::Unwatched);
    };
    let mut last = look(&session.segment)?;
    let mut stores = 0;
    let until = Instant::now() + 2 * STEP;
    loop {
        match tracer.next(&mut session.proc, until)? {
            Watched::Armed => {
                force::resume(pid)?;
                session.proc.send("go", &[])?;
            }
            Watched::Hit => {
                stores += 1;
                let now = look(&session.segment)?;
                if stores < k {
                    last = now;
                    tracer.go_on();
                    continue;
                }
                let kill_now = Kill {
                    store: stores,
                    word: words[tracer.last_hit().min(words.len() - 1)].name,
                    change: changes(&last, &now),
                    bank: now,
                };
                kill(Pid::from_raw(pid), Signal::SIGKILL)
                    .map_err(|e| Fail::Grader(format!("kill: {e}")))?;
                drop(tracer);
                let gone_by = Instant::now() + STEP;
                while inspect::view(pid).is_some_and(|v| v.state != 'Z' && v.state != 'X')
                    && Instant::now() < gone_by
                {
                    std::thread::sleep(Duration::from_micros(200));
                }
                return Ok(Watch::Killed(kill_now));
            }
            Watched::Said(message) => match message.kind.as_str() {
                "finished" if index_of(&message)? == index => return Ok(Watch::Finished),
                "failed" => return Err(failure(&message)),
                _ => session.set_aside(message),
            },
            Watched::Lost => {
                drop(tracer);
                return finished(session, index).map(|()| Watch::Finished);
            }
            Watched::Unavailable => return Ok(Watch::Unwatched),
        }
    }
}

/// Waits for worker `index`'s `finished`.
fn finished(session: &mut Session, index: usize) -> Result<(), Fail> {
    let until = Instant::now() + STEP;
    let mut aside = Vec::new();
    let result = loop {
        match session.next_before(until)? {
            Some(message) if message.kind == "finished" && index_of(&message)? == index => {
                break Ok(());
            }
            Some(message) if message.kind == "failed" => break Err(failure(&message)),
            Some(message) => aside.push(message),
            None => {
                let pid = session.workers[index];
                break Err(Fail::failed(format!(
                    "{}, which had no transfer to make, did not return from finish() within \
                     {} s (it {}; the bank's mutex: owner word {:#x})",
                    who(session, index),
                    STEP.as_secs(),
                    probe::sleeping(pid).describe(),
                    session.segment.mutex_owner().unwrap_or(0)
                )));
            }
        }
    };
    for message in aside {
        session.set_aside(message);
    }
    result
}

/// Lets repairer `index` (stopped, no transfer to make) go into `finish()`, where its lock
/// meets the dead holder, and waits until it has finished.
fn repair(session: &mut Session, index: usize) -> Result<(), Fail> {
    force::resume(session.workers[index])?;
    session.proc.send("go", &[])?;
    finished(session, index)
}

pub(super) fn killed_at_every_store(run: &mut Run) -> Result<String, Fail> {
    let mut work = vec![1u64; VICTIMS];
    work.extend([0u64; REPAIRERS]);
    let mut session = Session::start(run, &work, &[])?;
    robust(&session)?;
    if !probe::can_hold(&session.segment) {
        // Not a mutex the grader can take: `robust` and `process-shared-init` say why.
        return Err(Fail::failed(
            "the bank's mutex is not one a process-shared robust mutex's holder can take",
        ));
    }
    for &worker in &session.workers {
        force::hold(worker)?;
    }
    let mut pool = Pool {
        victims: (0..VICTIMS).collect(),
        repairers: (VICTIMS..VICTIMS + REPAIRERS).collect(),
    };
    session.coordinator_settled();
    let Some(transfer) = every_store(&mut session, &mut pool)? else {
        run.note("watchpoints are not available here: the stores were not watched");
        end_run(&mut session, pool)?;
        return Ok("not judged: no hardware watchpoints on this machine".into());
    };
    let repaired = every_repair_store(&mut session, &mut pool)?;
    end_run(&mut session, pool)?;
    Ok(format!(
        "a worker killed right after each of the {transfer} stores of a transfer (to the \
         journal, the two accounts and the count), and a repairer killed right after each of \
         the {repaired} stores of its recover(): every time, the next holder's repair left the \
         bank exact and dead counted"
    ))
}

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
fn every_store(session: &mut Session, pool: &mut Pool) -> Result<Option<usize>, Fail> {
    let mut stores = 0;
    for set in 0..2 {
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
fn every_repair_store(session: &mut Session, pool: &mut Pool) -> Result<usize, Fail> {
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

/// Lets the workers not used go (their transfers, their finishes), counts the ones killed
/// outside a transfer under way as dead (nobody else can: no journal was active), and lets
/// the coordinator end the run.
fn end_run(session: &mut Session, pool: Pool) -> Result<(), Fail> {
    let rest: Vec<usize> = pool.victims.into_iter().chain(pool.repairers).collect();
    for &index in &rest {
        force::resume(session.workers[index])?;
    }
    for _ in &rest {
        session.proc.send("go", &[])?;
    }
    let until = Instant::now() + 2 * STEP;
    let mut left = rest.len();
    while left > 0 {
        match session.next_before(until)? {
            Some(message) if message.kind == "finished" => left -= 1,
            Some(message) if message.kind == "failed" => return Err(failure(&message)),
            Some(_) => {}
            None => {
                return Err(Fail::failed(format!(
                    "after the kills, {left} of the {} workers let go at the end did not \
                     finish within {} s",
                    rest.len(),
                    (2 * STEP).as_secs()
                )));
            }
        }
    }
    let held = probe::hold(&session.segment, STEP)?;
    let counts = session.segment.counts()?;
    if counts.finished + counts.dead < counts.workers {
        session.segment.write_at(
            session.segment.layout.counts_at + 8,
            &(counts.workers - counts.finished).to_ne_bytes(),
        )?;
    }
    drop(held);
    probe::broadcast(&session.segment);
    loop {
        match session.next_before(until + STEP)? {
            Some(message) if message.kind == "closed" => break,
            Some(message) if message.kind == "failed" => return Err(failure(&message)),
            Some(_) => {}
            None => {
                return Err(Fail::failed(format!(
                    "once every worker was finished or counted dead, the coordinator did not \
                     end the run (it {})",
                    probe::sleeping(session.coordinator).describe()
                )));
            }
        }
    }
    session.proc.send("exit", &[])?;
    session.proc.wait()?;
    Ok(())
}
