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
//!
//! Beside it: the bank as the grader reads it in `bank_view.rs`, the kill
//! after a watched store in `store_kills.rs`, the kills in a transfer in `transfer_stores.rs`
//! and in a repair in `repair_stores.rs`.

use std::time::Instant;

use super::messages::failure;
use super::probe;
use super::repair_stores::every_repair_store;
use super::robust::{STEP, robust};
use super::session::Session;
use super::store_kills::Pool;
use super::transfer_stores::every_store;
use crate::engine::{Fail, Run, force};

/// The most stores one transfer is expected to make to one set of watched words (the reference
/// makes 7 to the journal's first four words, 4 to the other four): the kills stop there.
pub(super) const MOST_STORES: usize = 8;
/// The same for `recover()`'s stores to one set of its watched words (the reference makes 4 to
/// the words it repairs, 1 to `dead`).
pub(super) const MOST_REPAIR_STORES: usize = 5;
/// Workers with one transfer (killed in it) and with none (repairers, in `finish()`).
const VICTIMS: usize = 2 * (MOST_STORES + 1) + 2 * (MOST_REPAIR_STORES + 1);
const REPAIRERS: usize = 2 * (MOST_STORES + 1) + 4 * (MOST_REPAIR_STORES + 1);

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
