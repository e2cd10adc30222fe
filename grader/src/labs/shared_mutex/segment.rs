//! The segment's life: how `create()` leaves it (mode, mappings, descriptors, the mutex and the
//! condition variable initialized in place, the fields), and how `destroy()` ends it.

use std::time::{Duration, Instant};

use super::ACCOUNTS;
use super::probe::{self, KIND_PSHARED, KIND_ROBUST, Place, Sleep};
use super::session::{Journal, Session, dev_shm, role_of, verify};
use crate::engine::{Fail, Run};

/// Transfers per worker where only the set-up is judged.
const LIGHT_WORK: u64 = 1000;

pub(super) fn process_shared_init(run: &mut Run) -> Result<String, Fail> {
    let mut session = Session::start(run, &[LIGHT_WORK; 4], &[])?;
    // A mutex never initialized in the segment is all zero, like one initialized with default
    // attributes: both have kind 0, so the run tells them apart.
    let kind = session.segment.mutex_kind()?;
    if kind & KIND_PSHARED == 0 {
        let cause = if kind == 0 {
            if segment_mutex_used(&mut session)? {
                "the workers lock it, so it was initialized without PTHREAD_PROCESS_SHARED \
                 (default attributes), or never initialized in the segment at all (zeroed \
                 memory acts as a mutex with default attributes)"
            } else {
                "it was never initialized in the segment, and the workers ran without ever \
                 locking it (its lock and owner words stayed 0, nobody slept on it): the mutex \
                 they lock is not the one at bank.lock; initialize and lock the mutex at \
                 &raw mut bank.lock"
            }
        } else {
            "it was initialized without PTHREAD_PROCESS_SHARED"
        };
        return Err(Fail::failed(format!(
            "the mutex in the segment is not process-shared (its kind word is {kind}): {cause}; \
             set it with pthread_mutexattr_setpshared() before pthread_mutex_init(), or an \
             unlock wakes only waiters in its own process"
        )));
    }
    let wrefs = session.segment.cond_wrefs()?;
    if wrefs & 1 == 0 {
        return Err(Fail::failed(
            "the condition variable in the segment is not process-shared: initialize it in the \
             segment with a pthread_condattr_setpshared(PTHREAD_PROCESS_SHARED) attribute",
        ));
    }
    // The lab's permissions are judged here: the segment must be its owner's only.
    run.expect_owner_only()?;
    mapped_by_everyone(&session)?;
    as_created(&session)?;
    session.go()?;
    let outcome = session.finish(0, |_| Ok(()))?;
    verify(&session, &outcome, &[], 0)?;
    Ok(format!(
        "mode 600, mapped shared by all 5 processes with no descriptor left open; mutex kind \
         {kind} (process-shared{}), condition variable process-shared, both in {}",
        if kind & KIND_ROBUST != 0 {
            ", robust"
        } else {
            ""
        },
        dev_shm(&session.name).display()
    ))
}

/// Whether the workers lock the mutex in the segment, whose kind word is 0 (a mutex with
/// default attributes, or zeroed memory, which acts as one): the grader marks it taken in its
/// lock word, then releases the workers; one that locks it sleeps on it.
fn segment_mutex_used(session: &mut Session) -> Result<bool, Fail> {
    session.segment.mark_mutex_taken()?;
    session.go()?;
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        let asleep_on_it = session.workers.iter().any(|&w| match probe::sleeping(w) {
            Sleep::Futex { address } => {
                probe::place(w, &session.name, &session.segment.layout, address) == Place::Mutex
            }
            _ => false,
        });
        if asleep_on_it {
            return Ok(true);
        }
        match session.next_before(Instant::now() + Duration::from_millis(1)) {
            Ok(Some(message)) if message.kind == "closed" => break,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Ok(false)
}

/// Every process maps the segment shared, for reading and writing, and none keeps a
/// descriptor to it: the mapping is the way to the bank.
fn mapped_by_everyone(session: &Session) -> Result<(), Fail> {
    let path = dev_shm(&session.name);
    let role = role_of(session.coordinator);
    let processes = std::iter::once(session.coordinator).chain(session.workers.iter().copied());
    for pid in processes {
        let who = match crate::engine::inspect::view(pid) {
            Some(view) => format!("{} (pid {pid})", role(&view)),
            None => continue,
        };
        let maps = probe::mappings(pid, &session.name);
        let shared = |m: &&probe::MapLine| m.perms.starts_with("rw") && m.perms.ends_with('s');
        if !maps.iter().any(|m| shared(&m)) {
            let how = match maps.first() {
                Some(m) if m.perms.ends_with('p') => format!(
                    "maps it privately ({}): its writes stay in its own copy; map it with \
                     MAP_SHARED",
                    m.perms
                ),
                Some(m) => format!(
                    "maps it without read and write access ({}): map it with PROT_READ | \
                     PROT_WRITE and MAP_SHARED",
                    m.perms
                ),
                None => "has no mapping of it: create() maps it with mmap(MAP_SHARED) before \
                         the workers are forked, so that they inherit it"
                    .to_string(),
            };
            return Err(Fail::failed(format!("{who} {how} ({})", path.display())));
        }
        let fds = probe::descriptors(pid, &session.name);
        if !fds.is_empty() {
            return Err(Fail::failed(format!(
                "{who} keeps {} open as descriptor {fds:?} after create() returned: close the \
                 descriptor once the segment is mapped (the mapping keeps the segment, and \
                 SharedBank has no place for a descriptor); every forked worker inherits it",
                path.display()
            )));
        }
    }
    Ok(())
}

/// The bank as `create()` must leave it: `workers` set, every account at the opening balance,
/// the rest zero.
fn as_created(session: &Session) -> Result<(), Fail> {
    let segment = &session.segment;
    let counts = segment.counts()?;
    let journal = segment.journal()?;
    let (transfers, accounts) = segment.bank()?;
    let opening = segment.layout.opening;
    let workers = session.workers.len() as u32;
    let mut wrong = Vec::new();
    if counts.workers != workers {
        wrong.push(format!("workers = {} (not {workers})", counts.workers));
    }
    if counts.finished != 0 || counts.dead != 0 {
        wrong.push(format!(
            "finished = {}, dead = {} (not 0)",
            counts.finished, counts.dead
        ));
    }
    if transfers != 0 {
        wrong.push(format!("transfers = {transfers} (not 0)"));
    }
    let empty = Journal {
        active: 0,
        from: 0,
        to: 0,
        from_balance: 0,
        to_balance: 0,
        transfers: 0,
    };
    if journal != empty {
        wrong.push(format!("a journal that is not all zero ({journal:?})"));
    }
    let size = segment.file().metadata().map(|m| m.len()).unwrap_or(0);
    if size != segment.layout.size as u64 {
        wrong.push(format!(
            "a segment of {size} bytes (not size_of::<Bank>() = {})",
            segment.layout.size
        ));
    }
    if accounts != vec![opening; ACCOUNTS] {
        wrong.push(format!("balances {accounts:?} (not {opening} each)"));
    }
    if wrong.is_empty() {
        return Ok(());
    }
    Err(Fail::failed(format!(
        "right after create(), while no worker had started, the bank in the segment holds {}: \
         create() sizes the segment to one Bank, sets Bank::workers to the number of workers \
         and every account to the opening balance, and leaves everything else zero",
        wrong.join(", ")
    )))
}

pub(super) fn destroyed_and_removed(run: &mut Run) -> Result<String, Fail> {
    let mut session = Session::start(run, &[LIGHT_WORK; 4], &[])?;
    session.go()?;
    let outcome = session.finish(0, |_| Ok(()))?;
    verify(&session, &outcome, &[], 0)?;
    if dev_shm(&session.name).exists() {
        return Err(Fail::failed(format!(
            "{} is still there after the coordinator exited: remove the segment's name with \
             shm_unlink()",
            dev_shm(&session.name).display()
        )));
    }
    let wrefs = session.segment.cond_wrefs()?;
    if wrefs & 4 == 0 {
        return Err(Fail::failed(
            "the condition variable was not destroyed: call pthread_cond_destroy() once the \
             workers are gone",
        ));
    }
    let kind = session.segment.mutex_kind()?;
    if kind != -1 {
        return Err(Fail::failed(
            "the mutex was not destroyed: call pthread_mutex_destroy() once the workers are gone",
        ));
    }
    let (mapped, fds) = &outcome.kept;
    if *mapped > 0 || !fds.is_empty() {
        return Err(Fail::failed(format!(
            "after destroy(), the coordinator still {}: destroy() unmaps the bank (munmap()) \
             and nothing else keeps the segment",
            if *mapped > 0 {
                "maps the segment".to_string()
            } else {
                format!("holds the segment open as descriptor {fds:?}")
            }
        )));
    }
    Ok("condition variable and mutex destroyed, segment unmapped and unlinked".into())
}
