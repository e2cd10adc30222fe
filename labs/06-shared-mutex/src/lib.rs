//! # Lab 6: a mutex shared between processes
//!
//! A small bank lives in a POSIX shared memory segment: a few accounts, a count of transfers,
//! and the mutex and condition variable that protect them. Worker processes move money between
//! the accounts; a coordinator process waits until every worker is done.
//!
//! ```text
//!   coordinator: shm_open + ftruncate + mmap -> init mutex and condvar IN the segment
//!                fork workers ... wait_all_done(): lock; while not all done { cond_wait } ...
//!   worker:      repeat { lock; journal; debit; credit; count; unlock }  finish(): broadcast
//!   coordinator: waitpid the workers; destroy condvar and mutex; munmap; shm_unlink
//! ```
//!
//! What this lab is about:
//! - A pthread mutex or condition variable that processes share must itself lie in the shared
//!   memory, be initialized there exactly once, and carry the attribute
//!   `PTHREAD_PROCESS_SHARED`. Without it the kernel wakes only waiters of the process that
//!   unlocks, and waiters in other processes may sleep for ever.
//! - Every read and write of the shared data happens with the mutex held, from the first read of
//!   a transfer to its last write: two workers that interleave lose updates.
//! - A waiter re-checks its condition in a `while` loop around `pthread_cond_wait()`: a wake-up
//!   only says that something changed, not that the condition holds.
//! - A *robust* mutex (`PTHREAD_MUTEX_ROBUST`) survives the death of its holder: the next
//!   `pthread_mutex_lock()` returns `EOWNERDEAD` with the mutex held. The data may be half
//!   updated; the new holder repairs it (here: rolls back the journaled transfer) and calls
//!   `pthread_mutex_consistent()` before unlocking, or the mutex becomes unusable
//!   (`ENOTRECOVERABLE`).
//!
//! The layout of the segment, [`Bank`], is given; you write [`SharedBank`]'s functions. The
//! program in `main.rs` creates the bank, forks the workers, runs the coordinator and reports to
//! the grader. Keep `main.rs` as it is: the grader talks to it.

use std::ptr::NonNull;

use libc::{pthread_cond_t, pthread_mutex_t};
use nix::errno::Errno;

/// How many accounts the bank holds.
pub const ACCOUNTS: usize = 8;

/// What a transfer under way writes down first, so that whoever finds its worker dead can undo
/// it. Lives in the segment.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Journal {
    /// 1 from the moment the transfer starts changing the bank until it is complete, else 0.
    /// Set last when the journal is written (after every field below), and cleared last, once
    /// the transfer is complete (or undone): an active journal always describes the transfer
    /// under way.
    pub active: u32,
    /// The account debited.
    pub from: u32,
    /// The account credited.
    pub to: u32,
    /// `accounts[from]` before the transfer.
    pub from_balance: i64,
    /// `accounts[to]` before the transfer.
    pub to_balance: i64,
    /// `transfers` before the transfer.
    pub transfers: u64,
}

/// The bank, exactly as it lies in the shared segment (offset 0). Given; do not change.
///
/// Every field but `lock` itself is read and written only with `lock` held.
#[repr(C)]
pub struct Bank {
    /// The process-shared, robust mutex that protects everything below.
    pub lock: pthread_mutex_t,
    /// The process-shared condition variable: broadcast whenever `finished` or `dead` grows.
    pub all_done: pthread_cond_t,
    /// How many workers the coordinator waits for.
    pub workers: u32,
    /// Workers that called [`SharedBank::finish`].
    pub finished: u32,
    /// Workers found dead in the middle of a transfer (see [`recover`]).
    pub dead: u32,
    /// Transfers completed.
    pub transfers: u64,
    /// The transfer under way, if any.
    pub journal: Journal,
    /// The balances.
    pub accounts: [i64; ACCOUNTS],
}

/// A copy of the bank's counters and balances, taken with the lock held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// [`Bank::workers`].
    pub workers: u32,
    /// [`Bank::finished`].
    pub finished: u32,
    /// [`Bank::dead`].
    pub dead: u32,
    /// [`Bank::transfers`].
    pub transfers: u64,
    /// [`Bank::accounts`].
    pub accounts: [i64; ACCOUNTS],
}

/// Everything that can go wrong with the shared bank.
#[derive(Debug, thiserror::Error)]
pub enum BankError {
    /// The name is not `/` followed by at least one character none of which is `/`.
    #[error("invalid shared memory name {0:?}")]
    BadName(String),
    /// A segment with this name already exists.
    #[error("{0} already exists")]
    Exists(String),
    /// `shm_open()` failed for another reason.
    #[error("shm_open() failed: {0}")]
    Open(Errno),
    /// `ftruncate()` failed.
    #[error("ftruncate() failed: {0}")]
    Truncate(Errno),
    /// `mmap()` failed.
    #[error("mmap() failed: {0}")]
    Map(Errno),
    /// A `pthread_*attr_*()` or `pthread_*_init()` call failed.
    #[error("initializing the {what} failed: {errno}")]
    Init {
        /// `"mutex"` or `"condition variable"`.
        what: &'static str,
        /// What the call returned.
        errno: Errno,
    },
    /// `pthread_mutex_lock()` failed with something other than `EOWNERDEAD`.
    #[error("pthread_mutex_lock() failed: {0}")]
    Lock(Errno),
    /// The mutex is `ENOTRECOVERABLE`: a holder died and its successor unlocked without
    /// `pthread_mutex_consistent()`.
    #[error("the mutex is not recoverable (ENOTRECOVERABLE)")]
    NotRecoverable,
    /// `pthread_mutex_consistent()` failed.
    #[error("pthread_mutex_consistent() failed: {0}")]
    Consistent(Errno),
    /// `pthread_cond_wait()` failed with something other than `EOWNERDEAD`.
    #[error("pthread_cond_wait() failed: {0}")]
    Wait(Errno),
    /// `pthread_cond_broadcast()` failed.
    #[error("pthread_cond_broadcast() failed: {0}")]
    Broadcast(Errno),
    /// A transfer named an account that does not exist, or the same account twice.
    #[error("no transfer from account {from} to account {to}")]
    BadAccounts {
        /// The account to debit.
        from: usize,
        /// The account to credit.
        to: usize,
    },
    /// `pthread_mutex_destroy()` or `pthread_cond_destroy()` failed.
    #[error("destroying the {what} failed: {errno}")]
    Destroy {
        /// `"mutex"` or `"condition variable"`.
        what: &'static str,
        /// What the call returned.
        errno: Errno,
    },
    /// `munmap()` failed.
    #[error("munmap() failed: {0}")]
    Unmap(Errno),
    /// `shm_unlink()` failed.
    #[error("shm_unlink() failed: {0}")]
    Unlink(Errno),
}

impl BankError {
    /// A stable one-word name for the variant, which the program reports as `kind=` (the
    /// grader checks it). Given; do not change.
    pub fn kind(&self) -> &'static str {
        match self {
            BankError::BadName(_) => "bad-name",
            BankError::Exists(_) => "exists",
            BankError::Open(_) => "shm-open",
            BankError::Truncate(_) => "ftruncate",
            BankError::Map(_) => "mmap",
            BankError::Init { .. } => "init",
            BankError::Lock(_) => "lock",
            BankError::NotRecoverable => "not-recoverable",
            BankError::Consistent(_) => "consistent",
            BankError::Wait(_) => "wait",
            BankError::Broadcast(_) => "broadcast",
            BankError::BadAccounts { .. } => "bad-accounts",
            BankError::Destroy { .. } => "destroy",
            BankError::Unmap(_) => "munmap",
            BankError::Unlink(_) => "shm-unlink",
        }
    }
}

/// A pthread function's result as a `Result`: they return the error number instead of setting
/// `errno`. Given.
pub fn pthread_result(rc: libc::c_int) -> Result<(), Errno> {
    if rc == 0 {
        Ok(())
    } else {
        Err(Errno::from_raw(rc))
    }
}

/// Initializes `*mutex` for use by several processes: a mutex attribute object with
/// `PTHREAD_PROCESS_SHARED` and `PTHREAD_MUTEX_ROBUST`, then `pthread_mutex_init()`, then the
/// attribute object destroyed. Errors are [`BankError::Init`] with `what: "mutex"`.
///
/// # Safety
///
/// `mutex` points to writable memory for a `pthread_mutex_t` that no process is using.
pub unsafe fn init_mutex(mutex: *mut pthread_mutex_t) -> Result<(), BankError> {
    let _ = (&mutex,);
    todo!(
        "pthread_mutexattr_init, setpshared(PROCESS_SHARED), setrobust(ROBUST), pthread_mutex_init, attr destroy"
    )
}

/// Initializes `*cond` for use by several processes: a condition attribute object with
/// `PTHREAD_PROCESS_SHARED`, `pthread_cond_init()`, the attribute object destroyed. Errors are
/// [`BankError::Init`] with `what: "condition variable"`.
///
/// # Safety
///
/// `cond` points to writable memory for a `pthread_cond_t` that no process is using.
pub unsafe fn init_cond(cond: *mut pthread_cond_t) -> Result<(), BankError> {
    let _ = (&cond,);
    todo!("pthread_condattr_init, setpshared(PROCESS_SHARED), pthread_cond_init, attr destroy")
}

/// Repairs the bank after its last holder died with the lock held; called with the lock held,
/// right after `pthread_mutex_lock()` (or `pthread_cond_wait()`) returned `EOWNERDEAD`.
///
/// If the journal says a transfer was under way, undo it: put back both balances and the
/// transfer count the journal saved, clear the journal, count the worker in `dead`, and
/// broadcast `all_done` (the coordinator may be waiting for that worker).
///
/// The repairer holds the lock too, and may be killed between any two of its stores like any
/// holder: so `active` is cleared last, once both balances and the count are back, and those
/// stores must reach the segment in that order
/// ([`compiler_fence`](std::sync::atomic::compiler_fence) between them). A repairer killed
/// before it clears leaves the journal active, and the next holder repeats the repair.
///
/// # Safety
///
/// `bank` is the mapped bank and this process holds its lock.
pub unsafe fn recover(bank: *mut Bank) -> Result<(), BankError> {
    let _ = (&bank,);
    todo!(
        "if journal.active: restore from/to balances and transfers; fence; clear it; fence; dead += 1; broadcast all_done"
    )
}

/// The bank's segment, mapped into this process (and, after `fork()`, into the workers).
#[derive(Debug)]
pub struct SharedBank {
    /// The segment's name, `/...`.
    pub name: String,
    /// Where the segment is mapped: the [`Bank`].
    pub bank: NonNull<Bank>,
}

/// The lock, held: unlocks when dropped. [`SharedBank::lock`] makes one.
#[derive(Debug)]
pub struct Guard<'a> {
    /// The bank whose lock is held.
    pub bank: &'a SharedBank,
    /// Whether taking the lock found its previous holder dead (and [`recover`] ran).
    pub recovered: bool,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        // SAFETY: this process holds the lock of a mapped bank.
        unsafe {
            libc::pthread_mutex_unlock(self.bank.mutex());
        }
    }
}

impl SharedBank {
    /// Creates the segment `name` (`O_CREAT | O_EXCL`, mode `0600`; `EEXIST` is
    /// [`BankError::Exists`], and the segment that has the name is left alone), sizes it to one
    /// [`Bank`], maps it shared, and initializes the bank in place: [`init_mutex`] on `lock`,
    /// [`init_cond`] on `all_done`, `workers`, every account at `opening_balance`, the rest
    /// zero. The descriptor is closed once the segment is mapped: the mapping keeps it. If a
    /// step after `shm_open()` fails, undo the steps before it (unmap, close) and unlink the
    /// name again.
    pub fn create(name: &str, workers: u32, opening_balance: i64) -> Result<SharedBank, BankError> {
        let _ = (&name, &workers, &opening_balance);
        todo!(
            "check the name, shm_open, ftruncate, mmap, init the mutex and condvar in the segment, fill in the fields"
        )
    }

    /// The mutex in the segment. Given.
    pub fn mutex(&self) -> *mut pthread_mutex_t {
        // SAFETY: `bank` points to the mapped Bank; no reference is made.
        unsafe { &raw mut (*self.bank.as_ptr()).lock }
    }

    /// The condition variable in the segment. Given.
    pub fn cond(&self) -> *mut pthread_cond_t {
        // SAFETY: as in mutex().
        unsafe { &raw mut (*self.bank.as_ptr()).all_done }
    }

    /// Takes the lock with `pthread_mutex_lock()`, called at once: a waiter sleeps in it, with
    /// no `pthread_mutex_trylock()` or timed lock before it (a spin or a poll, however short).
    /// `EOWNERDEAD` means the previous holder died holding it: the lock is now
    /// ours, so [`recover`] the bank, then `pthread_mutex_consistent()`, and return a guard with
    /// `recovered: true`. If that repair fails (`recover()`'s broadcast, or
    /// `pthread_mutex_consistent()`), return its error with the lock given back, never kept:
    /// the mutex, unlocked without `pthread_mutex_consistent()`, becomes `ENOTRECOVERABLE` for
    /// every process, while a lock kept by a process that goes on holds all the others up.
    /// `ENOTRECOVERABLE` is [`BankError::NotRecoverable`], returned at once
    /// (it is final: no retry); other errors are [`BankError::Lock`].
    pub fn lock(&self) -> Result<Guard<'_>, BankError> {
        todo!("pthread_mutex_lock; on EOWNERDEAD recover() and pthread_mutex_consistent()")
    }

    /// Moves `amount` from account `from` to account `to` as one step that no other process can
    /// see half done. With the lock held: write the journal (`from`, `to`, the two balances and
    /// the count as they are, then `active: 1` last), set `accounts[from]` to the journal's
    /// balance minus `amount`, call `midway()`, set `accounts[to]` to the journal's balance plus
    /// `amount`, then `transfers` to the journal's count plus one, and clear `active` last. A
    /// holder may be killed between any two of these stores, and a kill leaves in the segment
    /// exactly the stores made before it; so they must reach the segment in this order. Plain
    /// stores (a struct assigned at once too) may be reordered by the compiler: a
    /// [`compiler_fence`](std::sync::atomic::compiler_fence) between the journal's saved fields
    /// and `active`, and between each step and the next, keeps it from moving them (one thread
    /// makes them, so only the compiler could). The accounts must exist and differ
    /// ([`BankError::BadAccounts`]). Returns whether taking the lock recovered from a
    /// dead holder.
    ///
    /// `midway` is the grader's hook, run in the middle of the transfer with the lock held: it
    /// stretches the transfer (so that transfers the lock does not keep apart collide), and the
    /// grader may kill the process there.
    pub fn transfer(
        &self,
        from: usize,
        to: usize,
        amount: i64,
        midway: impl FnOnce(),
    ) -> Result<bool, BankError> {
        let _ = (&from, &to, &amount, &midway);
        todo!(
            "check accounts; lock; journal's saved fields; fence; active = 1; fence; debit; fence; midway(); credit; fence; count; fence; clear journal; unlock"
        )
    }

    /// A worker is done: with the lock held, `finished += 1` and broadcast `all_done`.
    pub fn finish(&self) -> Result<(), BankError> {
        todo!("lock; finished += 1; pthread_cond_broadcast(all_done); unlock")
    }

    /// The coordinator's wait: with the lock held, sleep on `all_done` while
    /// `finished + dead < workers`, re-checking after every wake-up (the counts may step past
    /// `workers`: the wait ends once they reach it or pass it); then return a
    /// [`Snapshot`] taken before unlocking. `pthread_cond_wait()` returns `EOWNERDEAD` like
    /// `pthread_mutex_lock()` does, and needs the same repair; other errors are
    /// [`BankError::Wait`]. Only the workers' broadcasts wake the wait: no timeout (after the
    /// first wake-up either), no timer, no signal handler (a worker's exit sends `SIGCHLD`), no
    /// other thread or process (a helper that broadcasts now and then is a poll by proxy).
    pub fn wait_all_done(&self) -> Result<Snapshot, BankError> {
        todo!(
            "lock; pthread_cond_wait in a while loop while finished + dead < workers (EOWNERDEAD: recover); snapshot; unlock"
        )
    }

    /// Tears the bank down once no other process uses it: `pthread_cond_destroy()`,
    /// `pthread_mutex_destroy()`, `munmap()`, `shm_unlink()`. Go on to the next step when one
    /// fails, and return the first error. This `shm_unlink()` is the one removal of the name:
    /// nothing unlinks it again afterwards (by the program's exit the name may be another
    /// bank's), nor after a failed unlink.
    pub fn destroy(self) -> Result<(), BankError> {
        todo!("pthread_cond_destroy, pthread_mutex_destroy, munmap, shm_unlink; first error wins")
    }
}

/// Fast checks of the rules above, without the grader: `cargo test -p shared-mutex`.
#[cfg(test)]
mod tests {
    use super::*;
    use ipc_labs_driver::testing::{Cleanup, unique_name, watchdog};
    use rstest::rstest;
    use serial_test::serial;
    use std::time::Duration;

    const OPENING: i64 = 100;
    /// Far longer than any of these tests takes when nothing blocks.
    const LIMIT: Duration = Duration::from_secs(10);

    /// A fresh bank name, unlinked with the system call (not the code under test) at the end.
    fn bank_name() -> (String, Cleanup<impl FnMut()>) {
        let name = unique_name("bank");
        let removed = name.clone();
        let cleanup = Cleanup::new(move || {
            let _ = nix::sys::mman::shm_unlink(removed.as_str());
        });
        (name, cleanup)
    }

    fn exists(name: &str) -> bool {
        std::path::Path::new("/dev/shm").join(&name[1..]).exists()
    }

    /// The bank handed to another thread of this process, as a worker process would share it.
    struct Shared<'a>(&'a SharedBank);
    // SAFETY: the bank is built to be shared between processes, so between threads too: every
    // access to it goes through its process-shared lock.
    unsafe impl Send for Shared<'_> {}

    #[rstest]
    #[case::empty("")]
    #[case::no_leading_slash("bank")]
    #[case::slash_alone("/")]
    #[case::second_slash("/a/b")]
    fn a_bad_name_is_bad_name(#[case] name: &str) {
        let error = SharedBank::create(name, 1, OPENING).unwrap_err();
        assert_eq!(error.kind(), "bad-name", "{error}");
    }

    #[test]
    #[serial(bank)]
    fn a_new_bank_has_its_workers_and_opening_balances_and_nothing_else() {
        let (name, _cleanup) = bank_name();
        let bank = SharedBank::create(&name, 0, OPENING).unwrap();
        let snapshot = bank.wait_all_done().unwrap();
        let expected = Snapshot {
            workers: 0,
            finished: 0,
            dead: 0,
            transfers: 0,
            accounts: [OPENING; ACCOUNTS],
        };
        assert_eq!(snapshot, expected);
        bank.destroy().unwrap();
        assert!(!exists(&name), "destroy() left the name");
    }

    #[test]
    #[serial(bank)]
    fn an_existing_name_is_exists_and_left_alone() {
        let (name, _cleanup) = bank_name();
        let first = SharedBank::create(&name, 0, OPENING).unwrap();
        first.transfer(0, 1, 5, || {}).unwrap();
        let error = SharedBank::create(&name, 0, 7).unwrap_err();
        assert_eq!(error.kind(), "exists", "{error}");
        let accounts = first.wait_all_done().unwrap().accounts;
        assert_eq!(
            accounts[..2],
            [OPENING - 5, OPENING + 5],
            "the bank was overwritten"
        );
    }

    #[rstest]
    #[case::same_account(3, 3)]
    #[case::from_past_the_last(ACCOUNTS, 0)]
    #[case::to_past_the_last(0, ACCOUNTS)]
    #[serial(bank)]
    fn a_transfer_needs_two_existing_accounts(#[case] from: usize, #[case] to: usize) {
        let (name, _cleanup) = bank_name();
        let bank = SharedBank::create(&name, 0, OPENING).unwrap();
        let error = bank.transfer(from, to, 1, || {}).unwrap_err();
        assert_eq!(error.kind(), "bad-accounts", "{error}");
        assert_eq!(bank.wait_all_done().unwrap().transfers, 0);
    }

    #[test]
    #[serial(bank)]
    fn a_transfer_moves_the_amount_under_the_lock_with_its_journal_written() {
        let (name, _cleanup) = bank_name();
        let bank = SharedBank::create(&name, 0, OPENING).unwrap();
        let mut seen_midway = None;
        let recovered = bank
            .transfer(0, ACCOUNTS - 1, 30, || {
                // SAFETY: the bank is mapped; the lock is held by this thread, and trylock does
                // not wait for it.
                let busy = unsafe { libc::pthread_mutex_trylock(bank.mutex()) };
                // SAFETY: as above: the holder of the lock may read the bank.
                let journal = unsafe { (*bank.bank.as_ptr()).journal };
                seen_midway = Some((busy, journal.active, journal.from_balance));
            })
            .unwrap();
        assert!(!recovered);
        assert_eq!(seen_midway, Some((libc::EBUSY, 1, OPENING)));
        let snapshot = bank.wait_all_done().unwrap();
        assert_eq!(snapshot.transfers, 1);
        assert_eq!(snapshot.accounts[0], OPENING - 30);
        assert_eq!(snapshot.accounts[ACCOUNTS - 1], OPENING + 30);
        // SAFETY: nobody holds the lock any more: a plain read of the finished journal.
        assert_eq!(unsafe { (*bank.bank.as_ptr()).journal.active }, 0);
    }

    #[test]
    #[serial(bank)]
    fn a_transfer_cut_short_by_its_holders_death_is_undone() {
        let (name, _cleanup) = bank_name();
        let bank = SharedBank::create(&name, 1, OPENING).unwrap();
        let _watchdog = watchdog("lock() after a holder died (is the mutex robust?)", LIMIT);
        let shared = Shared(&bank);
        std::thread::scope(|scope| {
            scope.spawn(move || {
                let shared = shared;
                let guard = shared.0.lock().unwrap();
                // Half a transfer, journal first, as transfer() does it; then the holder ends
                // without unlocking, as a killed worker would.
                // SAFETY: this thread holds the lock.
                unsafe {
                    let bank = shared.0.bank.as_ptr();
                    (*bank).journal = Journal {
                        active: 1,
                        from: 0,
                        to: 1,
                        from_balance: OPENING,
                        to_balance: OPENING,
                        transfers: 0,
                    };
                    (*bank).accounts[0] = OPENING - 40;
                }
                std::mem::forget(guard);
            });
        });
        let guard = bank.lock().unwrap();
        assert!(guard.recovered, "the dead holder went unnoticed");
        drop(guard);
        let snapshot = bank.wait_all_done().unwrap();
        assert_eq!(
            snapshot.accounts, [OPENING; ACCOUNTS],
            "the half transfer stayed"
        );
        assert_eq!((snapshot.dead, snapshot.transfers), (1, 0));
    }

    #[test]
    #[serial(bank)]
    fn the_coordinator_wakes_once_every_worker_finished() {
        let (name, _cleanup) = bank_name();
        let bank = SharedBank::create(&name, 3, OPENING).unwrap();
        let _watchdog = watchdog("wait_all_done with every worker finished", LIMIT);
        let snapshot = std::thread::scope(|scope| {
            for _ in 0..3 {
                let shared = Shared(&bank);
                scope.spawn(move || {
                    let shared = shared;
                    std::thread::sleep(Duration::from_millis(20));
                    shared.0.finish().unwrap();
                });
            }
            bank.wait_all_done().unwrap()
        });
        assert_eq!((snapshot.workers, snapshot.finished), (3, 3));
    }
}
