//! The bank's segment: the grader's view of it (where the program says the pieces lie, and its
//! own handle on the segment, to read the fields, the mutex and the condition variable, and to
//! write as the lock's holder would), and the segment's life: how `create()` leaves it (mode,
//! mappings, descriptors, the mutex and the condition variable initialized in place, the
//! fields); how `destroy()` ends it is in `teardown`.

use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::probe::{self, KIND_PSHARED, KIND_ROBUST, Place, Sleep};
use super::session::{Session, role_of};
use super::totals::verify;
use super::{ACCOUNTS, LIGHT_WORK};
use crate::engine::tracer::{Action, Call, Tracer};
use crate::engine::{Fail, Proc, Run, force};

/// Given a program stopped before its first instruction: lets it run to its `shm_open()` of
/// the bank `name` (past the start-up of the Rust runtime, the C library loaded, the bank not
/// yet set up) and leaves it stopped just after that call, untraced. `false` (the program let
/// go, untraced) if the machine does not allow tracing it or it made no such call within 5 s.
pub(super) fn stopped_after_shm_open(pid: i32, name: &str) -> Result<bool, Fail> {
    stopped_after(pid, Call::opening(&dev_shm(name)))
}

/// Runs the program, stopped before its first instruction, to its first `call` and leaves it
/// stopped just after that call, untraced. `false` (the program let go, untraced) if the
/// machine does not allow tracing it or it made no such call within 5 s.
pub(super) fn stopped_after(pid: i32, call: Call) -> Result<bool, Fail> {
    let Some(mut tracer) = Tracer::attach(pid, call, Action::Hold)? else {
        force::resume(pid)?;
        return Ok(false);
    };
    force::resume(pid)?;
    if !tracer.held_before(Instant::now() + Duration::from_secs(5))? {
        return Ok(false);
    }
    tracer.release_stopped(pid)?;
    Ok(true)
}

/// Runs the program with `work` and one tried transfer of `amount` `from` → `to`, made when the
/// grader says `try` (`--try-when-told`), and hands it and the bank's name to `judge` (with
/// `run`, to start more programs). Such a run does not end on its own: the grader then ends it
/// and removes the segment itself.
pub(super) fn told_transfer<T>(
    run: &mut Run,
    work: u64,
    (from, to, amount): (usize, usize, i64),
    judge: impl FnOnce(&mut Run, &mut Proc, &str) -> Result<T, Fail>,
) -> Result<T, Fail> {
    let name = run.ipc_name("bank");
    let args = [
        "--name".to_string(),
        name.clone(),
        "--work".into(),
        work.to_string(),
        "--try-transfers".into(),
        format!("{from},{to}"),
        "--try-amounts".into(),
        amount.to_string(),
        "--try-when-told".into(),
    ];
    let mut proc = run.spawn(&args)?;
    let outcome = judge(run, &mut proc, &name);
    proc.kill_tree();
    let _ = std::fs::remove_file(dev_shm(&name));
    outcome
}

/// Where the program says the pieces of the bank lie.
#[derive(Clone, Copy)]
pub(super) struct Layout {
    pub mutex_at: usize,
    pub cond_at: usize,
    /// `workers`, `finished`, `dead`: three `u32`s, then the rest of the bank.
    pub counts_at: usize,
    pub transfers_at: usize,
    pub journal_at: usize,
    pub accounts_at: usize,
    pub size: usize,
    pub opening: i64,
}

/// The journal as it lies in the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Journal {
    pub active: u32,
    pub from: u32,
    pub to: u32,
    pub from_balance: i64,
    pub to_balance: i64,
    pub transfers: u64,
}

impl Journal {
    /// What the journal saved: from, to, their balances and the transfer count.
    pub fn saved(&self) -> (usize, usize, i64, i64, u64) {
        (
            self.from as usize,
            self.to as usize,
            self.from_balance,
            self.to_balance,
            self.transfers,
        )
    }
}

/// `workers`, `finished` and `dead` as they are in the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Counts {
    pub workers: u32,
    pub finished: u32,
    pub dead: u32,
}

/// The bank's segment as the grader sees it: opened at `ready`, it outlives the unlink; mapped,
/// so that the grader can take the bank's mutex like any process.
pub(super) struct Segment {
    file: std::fs::File,
    pub layout: Layout,
    pub map: Option<probe::Mapping>,
}

pub(super) fn dev_shm(name: &str) -> PathBuf {
    PathBuf::from("/dev/shm").join(name.trim_start_matches('/'))
}

/// Opens (and maps, if it can) the segment the coordinator (`coordinator`) says holds the bank.
pub(super) fn open_segment(name: &str, layout: Layout, coordinator: i32) -> Result<Segment, Fail> {
    let path = dev_shm(name);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .or_else(|_| std::fs::File::open(&path))
        .map_err(|_| name_missing(name, coordinator))?;
    let mut segment = Segment {
        file,
        layout,
        map: None,
    };
    segment.map = probe::Mapping::of(&segment);
    Ok(segment)
}

/// Why the bank's name is missing while the coordinator says the bank is there: a segment of
/// that name it still maps (`/proc/PID/maps` says "(deleted)") was created and unlinked since.
pub(super) fn name_missing(name: &str, coordinator: i32) -> Fail {
    let path = dev_shm(name);
    if probe::mappings(coordinator, name).is_empty() {
        return Fail::failed(format!(
            "{} does not exist while the coordinator says the bank is ready: create the \
             segment with shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600)",
            path.display()
        ));
    }
    Fail::failed(format!(
        "{} is gone while the bank is in use, yet the coordinator (pid {coordinator}) maps a \
         segment of that name, now deleted: the name was removed (shm_unlink()) before the \
         teardown; only destroy(), once the workers are reaped, removes it (while the bank runs, \
         its name keeps another create() of it from making a second bank)",
        path.display()
    ))
}

impl Segment {
    /// Another handle on the segment, not mapped: for reading.
    pub fn reader(&self) -> Result<Segment, Fail> {
        Ok(Segment {
            file: self.file.try_clone()?,
            layout: self.layout,
            map: None,
        })
    }

    /// Another handle on the segment, mapped like this one.
    pub fn handle(&self) -> Result<Segment, Fail> {
        let mut segment = self.reader()?;
        segment.map = probe::Mapping::of(&segment);
        Ok(segment)
    }

    /// The open segment.
    pub fn file(&self) -> &std::fs::File {
        &self.file
    }

    /// Reads `N` bytes of the segment at `offset`.
    pub fn read<const N: usize>(&self, offset: usize) -> Result<[u8; N], Fail> {
        let mut bytes = [0u8; N];
        self.file
            .read_exact_at(&mut bytes, offset as u64)
            .map_err(|_| {
                Fail::failed(format!(
                    "the segment is smaller than the bank ({} bytes): ftruncate() it to \
                 size_of::<Bank>()",
                    self.layout.size
                ))
            })?;
        Ok(bytes)
    }

    fn u32_at(&self, offset: usize) -> Result<u32, Fail> {
        Ok(u32::from_ne_bytes(self.read(offset)?))
    }

    fn i64_at(&self, offset: usize) -> Result<i64, Fail> {
        Ok(i64::from_ne_bytes(self.read(offset)?))
    }

    /// The mutex's kind word.
    pub fn mutex_kind(&self) -> Result<i32, Fail> {
        Ok(i32::from_ne_bytes(
            self.read(self.layout.mutex_at + probe::MUTEX_KIND_AT)?,
        ))
    }

    /// The thread id of the mutex's holder, 0 if nobody holds it.
    pub fn mutex_owner(&self) -> Result<i32, Fail> {
        Ok(i32::from_ne_bytes(
            self.read(self.layout.mutex_at + probe::MUTEX_OWNER_AT)?,
        ))
    }

    /// Sets the mutex's lock word to 1, as a process holding it would: only for a mutex that
    /// glibc treats as a plain one (kind 0), which then makes every locker sleep on it.
    pub fn mark_mutex_taken(&self) -> Result<(), Fail> {
        self.file
            .write_all_at(&1u32.to_ne_bytes(), self.layout.mutex_at as u64)
            .map_err(|e| Fail::Grader(format!("writing the segment: {e}")))
    }

    /// Writes `bytes` into the segment at `offset`, as a process holding the lock would.
    pub fn write_at(&self, offset: usize, bytes: &[u8]) -> Result<(), Fail> {
        self.file
            .write_all_at(bytes, offset as u64)
            .map_err(|e| Fail::Grader(format!("writing the segment: {e}")))
    }

    /// The condition variable's `__wrefs` word.
    pub fn cond_wrefs(&self) -> Result<u32, Fail> {
        self.u32_at(self.layout.cond_at + probe::COND_WREFS_AT)
    }

    pub fn counts(&self) -> Result<Counts, Fail> {
        let at = self.layout.counts_at;
        Ok(Counts {
            workers: self.u32_at(at)?,
            finished: self.u32_at(at + 4)?,
            dead: self.u32_at(at + 8)?,
        })
    }

    pub fn journal(&self) -> Result<Journal, Fail> {
        let at = self.layout.journal_at;
        Ok(Journal {
            active: self.u32_at(at)?,
            from: self.u32_at(at + 4)?,
            to: self.u32_at(at + 8)?,
            from_balance: self.i64_at(at + 16)?,
            to_balance: self.i64_at(at + 24)?,
            transfers: u64::from_ne_bytes(self.read(at + 32)?),
        })
    }

    /// The transfer count and the balances, as they are in the segment.
    pub fn bank(&self) -> Result<(u64, Vec<i64>), Fail> {
        let transfers = u64::from_ne_bytes(self.read(self.layout.transfers_at)?);
        let accounts = (0..ACCOUNTS)
            .map(|i| self.i64_at(self.layout.accounts_at + 8 * i))
            .collect::<Result<_, Fail>>()?;
        Ok((transfers, accounts))
    }

    /// Everything in the bank but the mutex and the condition variable: what only the mutex's
    /// holder may change.
    pub fn guarded_bytes(&self) -> Result<Vec<u8>, Fail> {
        self.bytes_from(self.layout.counts_at)
    }

    /// The whole bank, the mutex and the condition variable too.
    pub fn all_bytes(&self) -> Result<Vec<u8>, Fail> {
        self.bytes_from(0)
    }

    fn bytes_from(&self, start: usize) -> Result<Vec<u8>, Fail> {
        let mut bytes = vec![0u8; self.layout.size.saturating_sub(start)];
        self.file
            .read_exact_at(&mut bytes, start as u64)
            .map_err(|e| Fail::Grader(format!("reading the segment: {e}")))?;
        Ok(bytes)
    }

    /// Whether the segment is still at least one bank long (a mapping past its end faults).
    pub fn full_size(&self) -> bool {
        self.file
            .metadata()
            .is_ok_and(|m| m.len() >= self.layout.size as u64)
    }
}

pub(super) fn process_shared_init(run: &mut Run) -> Result<String, Fail> {
    // Worker 0 has no transfer to make: its finish() is all its locking (see Broadcasts).
    // An opening balance of the seed's (not the program's usual one): create() must use its
    // argument.
    let opening = loop {
        let opening = rand::RngExt::random_range(run.rng(), 1..2_000_000_000i64);
        if opening != USUAL_OPENING {
            break opening;
        }
    };
    let (mut session, inits) = Session::start_with(
        run,
        &[0, LIGHT_WORK, LIGHT_WORK, LIGHT_WORK],
        &["--opening".to_string(), opening.to_string()],
        Some(super::attributes::MutexInits::watch),
    )?;
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
    // The calls seen at the breakpoints: what the segment cannot show.
    if let Some(inits) = inits {
        inits.judge(&session)?;
    }
    // The lab's permissions are judged here: the segment must be its owner's only.
    run.expect_owner_only()?;
    mapped_by_everyone(&session)?;
    as_created(&session)?;
    let broadcasts = super::attributes::Broadcasts::watch(&session, session.workers[0])?;
    session.go()?;
    let outcome = session.finish(0, |_| Ok(()))?;
    if let Some(broadcasts) = broadcasts {
        broadcasts.judge(true)?;
    }
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
    // The coordinator asleep in its wait: the bank is in use, its name must still be there.
    session.coordinator_settled();
    if !path.exists() {
        return Err(name_missing(&session.name, session.coordinator));
    }
    let role = role_of(session.coordinator);
    let inode = std::os::unix::fs::MetadataExt::ino(&session.segment.file().metadata()?);
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
                None => match probe::mapped_under_another_name(pid, &session.name, inode) {
                    Some(other) => format!(
                        "maps this segment (the same inode) only under another name, {other}: \
                         the object was made under that name and linked to the bank's name \
                         afterwards, never opened by that name; create() makes the segment \
                         with shm_open() of the name it is given (O_CREAT | O_EXCL)"
                    ),
                    None => "has no mapping of it: create() maps it with mmap(MAP_SHARED) \
                             before the workers are forked, so that they inherit it"
                        .to_string(),
                },
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

/// The program's opening balance when `--opening` does not give one.
const USUAL_OPENING: i64 = 1_000_000_000;

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
        let constant = if accounts.iter().all(|&a| a == accounts[0]) {
            format!(
                "; every account holds {}, where the program passed {opening} (--opening) as \
                 create()'s opening_balance: the argument was ignored, fill the accounts with \
                 opening_balance, not a constant",
                accounts[0]
            )
        } else {
            String::new()
        };
        wrong.push(format!(
            "balances {accounts:?} (not {opening} each){constant}"
        ));
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
