//! The coordinator's snapshot is read under the lock: held at the unlock that ends its wait,
//! after the last finish, the grader takes the mutex and changes a balance; a snapshot taken
//! before unlocking cannot show the change, one read after it does.

use std::time::{Duration, Instant};

use super::ACCOUNTS;
use super::probe::{self, Place, Sleep};
use super::segment::Segment;
use super::session::Session;
use crate::engine::Fail;
use crate::engine::inspect::{self, IoCounters};
use crate::engine::tracer::{Action, Call, Match, Tracer};

/// `futex()`'s operation without its flags (`FUTEX_CMD_MASK`).
const FUTEX_COMMAND: u64 = 0x7f;
/// How long the coordinator gets, after the last finish, to reach its unlock (one wake-up and
/// one lock); and then to say `done` (no lock needed).
const STEP: Duration = Duration::from_secs(5);
/// What the grader adds to `finished` and `dead` (and `transfers`) at the coordinator's
/// unlock: no run reaches such counts.
const COUNT_BUMP: u32 = 1000;

/// A tracer that holds the coordinator at its next `FUTEX_WAKE` on the bank's mutex. Armed
/// while the coordinator sleeps in `pthread_cond_wait()` and one worker is left: after that
/// last finish it wakes, takes the mutex back (glibc then sets the mutex's waiters bit, so its
/// unlock always calls `FUTEX_WAKE`), and the first such call is the unlock that ends
/// `wait_all_done()`.
pub(super) struct FinalUnlock {
    tracer: Tracer,
    /// The coordinator's I/O counters once armed: until that unlock it only wakes, relocks and
    /// reads the bank, through its mapping.
    io: Option<IoCounters>,
}

impl FinalUnlock {
    /// `None` when the coordinator's mapping of the segment is not found or it cannot be
    /// traced.
    pub fn arm(segment: &Segment, coordinator: i32, name: &str) -> Option<FinalUnlock> {
        let map = probe::mappings(coordinator, name)
            .into_iter()
            .find(|m| m.offset == 0)?;
        let mutex = map.start + segment.layout.mutex_at as u64;
        let call = Call {
            number: libc::SYS_futex,
            matching: Match::BothBits([
                (0, u64::MAX, mutex),
                (1, FUTEX_COMMAND, libc::FUTEX_WAKE as u64),
            ]),
        };
        let tracer = Tracer::attach(coordinator, call, Action::Hold).ok()??;
        Some(FinalUnlock {
            tracer,
            io: inspect::io(coordinator),
        })
    }

    /// Once the last worker has returned from `finish()`: at the coordinator's unlock the grader
    /// takes the mutex, changes one balance, lets the coordinator go on and waits for its
    /// `done`, then puts the balance back and lets go. The `done` must not show the change.
    pub fn judge(mut self, session: &mut Session) -> Result<(), Fail> {
        if !self.tracer.held_before(Instant::now() + STEP)? {
            // It never unlocked there: what follows says why.
            return Ok(());
        }
        if let (Some(then), Some(now)) = (self.io, inspect::io(session.coordinator)) {
            let read = now.since(then);
            if read.read_calls > 0 {
                self.tracer.release();
                return Err(Fail::failed(format!(
                    "between the last finish and the unlock that ends wait_all_done(), the \
                     coordinator made {} read system call(s) ({} bytes; the bank is {} bytes): it \
                     read the bank through a descriptor (read/pread on {}) instead of through \
                     its mapping; the snapshot is read from the Bank that mmap() returned, with \
                     the lock held",
                    read.read_calls,
                    read.read_bytes,
                    session.segment.layout.size,
                    super::segment::dev_shm(&session.name).display()
                )));
            }
        }
        let Some(held) = probe::HolderThread::start(&session.segment, Duration::from_millis(500))
        else {
            self.tracer.release();
            return Ok(());
        };
        let account = session.coordinator as usize % ACCOUNTS;
        let at = session.segment.layout.accounts_at + 8 * account;
        let counts_at = session.segment.layout.counts_at;
        let transfers_at = session.segment.layout.transfers_at;
        let before = i64::from_ne_bytes(session.segment.read(at)?);
        let counts = session.segment.counts()?;
        let transfers = u64::from_ne_bytes(session.segment.read(transfers_at)?);
        let changed = before + 1_000_003;
        // The counters move too: a snapshot may copy the balances under the lock and read
        // the counts after it.
        let bumped = (
            counts.finished + COUNT_BUMP,
            counts.dead + COUNT_BUMP,
            transfers + u64::from(COUNT_BUMP),
        );
        let segment = session.segment.handle()?;
        let write = |values: (i64, u32, u32, u64)| -> Result<(), Fail> {
            segment.write_at(at, &values.0.to_ne_bytes())?;
            segment.write_at(counts_at + 4, &values.1.to_ne_bytes())?;
            segment.write_at(counts_at + 8, &values.2.to_ne_bytes())?;
            segment.write_at(transfers_at, &values.3.to_ne_bytes())
        };
        write((changed, bumped.0, bumped.1, bumped.2))?;
        self.tracer.release();
        let done = wait_for_done(session);
        let restored = write((before, counts.finished, counts.dead, transfers));
        held.let_go();
        restored?;
        let Some(done) = done? else {
            return Ok(());
        };
        let shown = done
            .get("balances")
            .and_then(|b| b.split(',').nth(account))
            .and_then(|b| b.parse::<i64>().ok());
        let number = |key: &str| done.get(key).and_then(|v| v.parse::<u64>().ok());
        let counters = [
            ("finished", number("finished"), u64::from(bumped.0)),
            ("dead", number("dead"), u64::from(bumped.1)),
            ("transfers", number("transfers"), bumped.2),
        ];
        session.set_aside(done);
        if shown == Some(changed) {
            return Err(Fail::failed(format!(
                "the coordinator reported account {account} at {changed}, a balance the bank \
                 held only after wait_all_done() had unlocked the mutex (the grader took the \
                 mutex at that unlock, added 1000003 to the account, and put it back once the \
                 coordinator had reported): the snapshot was read after unlocking; take it \
                 with the lock still held, before the guard is dropped"
            )));
        }
        let late: Vec<String> = counters
            .iter()
            .filter(|(_, shown, bumped)| *shown == Some(*bumped))
            .map(|(key, _, bumped)| format!("{key} = {bumped}"))
            .collect();
        if !late.is_empty() {
            return Err(Fail::failed(format!(
                "the coordinator reported {}, counts the bank held only after wait_all_done() \
                 had unlocked the mutex (the grader took the mutex at that unlock, changed the \
                 counters and a balance, and put them back once the coordinator had reported; \
                 the balance it reported was the one from before): the counters of the \
                 snapshot were read after unlocking; read every field of the Snapshot, the \
                 counters too, with the lock still held, before the guard is dropped",
                late.join(", ")
            )));
        }
        Ok(())
    }
}

/// The coordinator's `done`, other messages set aside; `None` once it sleeps on the mutex or
/// the condition variable instead (it was not the unlock that ends the wait), or after
/// [`STEP`].
fn wait_for_done(session: &mut Session) -> Result<Option<ipc_labs_driver::Message>, Fail> {
    let until = Instant::now() + STEP;
    let mut others = Vec::new();
    let done = loop {
        if let Some(message) = session
            .proc
            .recv_before(Instant::now() + Duration::from_millis(2))?
        {
            if message.kind == "done" {
                break Some(message);
            }
            others.push(message);
            continue;
        }
        let waits = match probe::sleeping(session.coordinator) {
            Sleep::Futex { address } => matches!(
                probe::place(
                    session.coordinator,
                    &session.name,
                    &session.segment.layout,
                    address
                ),
                Place::Mutex | Place::Cond
            ),
            _ => false,
        };
        if waits || Instant::now() >= until {
            break None;
        }
    };
    for message in others {
        session.set_aside(message);
    }
    Ok(done)
}
