//! Checks of lab 6, shared mutex: a bank in a POSIX shared memory segment, worker processes that
//! transfer money under a process-shared robust mutex, and a coordinator that waits on a
//! process-shared condition variable until every worker is done.
//!
//! `shared-mutex --name N --work T1,T2,.. [--seed S] [--crash-worker W --crash-after K]
//! [--try-transfers F,T,..] [--file-size-limit B]`: the coordinator creates the bank, forks one
//! worker per number, and says `ready` (the workers' pids and where the pieces of the bank lie in
//! the segment); each worker says `ready` and waits for a `go` (one `go` per worker: the start
//! barrier), then says `finished` with the change it made to each account. The coordinator says
//! `done` with what it saw when its wait ended, and `closed` after reaping the workers and
//! tearing the bank down, then waits for `exit`. A failed `create` says `failed` and waits for
//! `exit` too.
//!
//! The grader predicts every balance exactly from the workers' own accounts of their transfers,
//! so a single lost update shows, and it reads the bank from the segment itself (it keeps
//! `/dev/shm/<name>` open to the end). It maps the segment too, so that it can act on the bank's
//! mutex as one more process would: hold it while the workers start (nothing in the bank may
//! change, and everyone waiting must sleep), or die holding it (the next locker must get
//! `EOWNERDEAD`). It reads the mutex and condition variable to see how they were initialized and
//! who holds the lock: glibc keeps `PTHREAD_PROCESS_SHARED` as bit 7 and robustness as bit 4 of
//! the mutex's kind word (`-1` once destroyed), the holder's thread id in its owner word, and the
//! condition variable's process-shared flag as bit 0 of its `__wrefs` word (bit 2 once
//! destroyed). These are glibc's layouts on 64-bit Linux; the program reports the offsets.

mod abandoned_bank;
mod attributes;
mod balances_kept;
mod bank_view;
mod broadcast_errors;
mod coordinator_locks;
mod coordinator_look;
mod count_stores;
mod counting;
mod create_failures;
mod destroy_errors;
mod diagnoses;
mod during_wait;
mod errors;
mod failed_repairs;
mod finish_past_workers;
mod journal_at_lock;
mod journal_clear;
mod last_finish;
mod late_watches;
mod later_sleeps;
mod lock_calls;
mod lock_errors;
mod locks_after_recovery;
mod messages;
mod name_after_exit;
mod open_errors;
mod other_processes;
mod probe;
mod relock_values;
mod repair_stores;
mod robust;
mod segment;
mod session;
mod signal_wakeups;
mod sleeping;
mod snapshot;
mod store_kills;
mod stores;
mod taken_names;
mod teardown;
mod timers;
mod totals;
mod transfer_stores;
mod unrecoverable;
mod unusual_names;

use std::time::Duration;

use crate::engine::diagnose::{Activity, Hang, Stuck};
use crate::engine::{Check, Lab};

pub static LAB: Lab = Lab {
    number: 6,
    slug: "shared-mutex",
    title: "Shared mutex: a bank in shared memory under a process-shared, robust pthread mutex",
    cleanup_points: 2,
    explain_hang,
    checks: &[
        Check {
            name: "process-shared-init",
            points: 3,
            timeout: Duration::from_secs(15),
            description: "the segment (mode 600) is mapped shared by every process, its descriptor \
                          closed; the mutex and condition variable are initialized in it with \
                          PTHREAD_PROCESS_SHARED, the rest as the API says",
            exclusive: false,
            hint: Some(
                "The mutex and the condition variable live in the segment, PTHREAD_PROCESS_SHARED (the mutex robust too), and the bank starts as the handout says. See docs/labs/06-shared-mutex.md, \"The idea\" and the rules table (the initialization rules).",
            ),
            run: segment::process_shared_init,
        },
        Check {
            name: "exact-totals",
            points: 6,
            timeout: Duration::from_secs(40),
            description: "3 runs of 4 workers x 150000 transfers started together: every balance \
                          and the transfer count are exact (no lost update), and the data moved \
                          through the mapping, not through read/write calls",
            exclusive: false,
            hint: Some(
                "Every access to the bank is under the lock, from a transfer's first read to its last write. See docs/labs/06-shared-mutex.md, \"The idea\" (\"Every access is under the lock\").",
            ),
            run: counting::exact_totals,
        },
        Check {
            name: "everything-under-the-lock",
            points: 4,
            timeout: Duration::from_secs(20),
            description: "while the grader holds the bank's mutex, workers that start transfers \
                          or finish change nothing in the bank and sleep on the mutex, with no \
                          timeout; once it lets go, every transfer and every finish counts, \
                          each store to the count made holding the mutex, and the mutex \
                          released and taken again between two transfers, a worker alone \
                          too; workers meeting the coordinator's hold wait for it",
            exclusive: false,
            hint: Some(
                "Everything that touches the bank, finish() too, happens under the lock, and lock() sleeps in pthread_mutex_lock(). See docs/labs/06-shared-mutex.md, the rules table (the lock rules).",
            ),
            run: counting::everything_under_the_lock,
        },
        Check {
            name: "coordinator-sleeps",
            points: 3,
            timeout: Duration::from_secs(15),
            description: "while the workers are held at the start, the coordinator sleeps on the \
                          condition variable in the segment (no spinning, no polling, no other \
                          call, no timeout, no timer, no signal handler that wakes it, no \
                          other thread or process)",
            exclusive: false,
            hint: Some(
                "The coordinator sleeps on the condition variable in a while loop: no spinning, no polling. See docs/labs/06-shared-mutex.md, \"The idea\" (\"Condition variables\").",
            ),
            run: sleeping::coordinator_sleeps,
        },
        Check {
            name: "waits-for-last-worker",
            points: 3,
            timeout: Duration::from_secs(20),
            description: "workers that finish one after another each wake the coordinator and \
                          every other waiter, which returns only once the last one has \
                          finished, with the bank's counts in a snapshot read through the \
                          mapping before it unlocks, each sleep with no timeout; every \
                          finish counts, past workers too",
            exclusive: false,
            hint: Some(
                "The coordinator waits while finished + dead < workers and reads its snapshot before unlocking; each finish() broadcasts. See docs/labs/06-shared-mutex.md, the rules table (the finish and coordinator rules).",
            ),
            run: sleeping::waits_for_last_worker,
        },
        Check {
            name: "broadcast-errors",
            points: 1,
            timeout: Duration::from_secs(15),
            description: "a worker whose pthread_cond_broadcast() in finish() fails (the \
                          grader makes it return EINVAL) says kind=broadcast with that error, \
                          not finished",
            exclusive: false,
            hint: Some(
                "pthread functions return their error number: finish() returns the broadcast's error as BankError::Broadcast. See docs/labs/06-shared-mutex.md, the rules table (the finish rules).",
            ),
            run: broadcast_errors::broadcast_errors,
        },
        Check {
            name: "owner-dies",
            points: 5,
            timeout: Duration::from_secs(20),
            description: "a worker killed while it holds the lock mid-transfer, its journal \
                          written: the next locker gets EOWNERDEAD, says so, undoes the transfer, \
                          marks the mutex consistent, and the totals add up",
            exclusive: false,
            hint: Some(
                "A robust mutex reports EOWNERDEAD: recover from the journal, then pthread_mutex_consistent(). See docs/labs/06-shared-mutex.md, \"The idea\" (\"Robust mutexes\") and the rules table (the recover rules).",
            ),
            run: robust::owner_dies,
        },
        Check {
            name: "locks-after-recovery",
            points: 1,
            timeout: Duration::from_secs(15),
            description: "once a holder has died and a worker has recovered, every lock of \
                          every worker is still pthread_mutex_lock(): no try or timed lock, \
                          before or after the recovery",
            exclusive: false,
            hint: Some(
                "lock() sleeps in pthread_mutex_lock() at every call, after a recovery too: a holder that dies again is reported with EOWNERDEAD, not found by a timeout. See docs/labs/06-shared-mutex.md, the rules table (the lock rules).",
            ),
            run: locks_after_recovery::locks_after_recovery,
        },
        Check {
            name: "owner-dies-during-wait",
            points: 2,
            timeout: Duration::from_secs(15),
            description: "a holder that dies while the coordinator waits to take the lock back: \
                          its pthread_cond_wait() returns EOWNERDEAD, it repairs (both balances \
                          and the count of a half-done transfer), marks the mutex consistent \
                          and goes on waiting; a holder dead outside a transfer is a recovery \
                          for the transfer that locks next",
            exclusive: false,
            hint: Some(
                "pthread_cond_wait() can return EOWNERDEAD too: handle it as lock() does. See docs/labs/06-shared-mutex.md, the rules table (the pthread_cond_wait rule).",
            ),
            run: during_wait::owner_dies_during_wait,
        },
        Check {
            name: "killed-at-every-store",
            points: 3,
            timeout: Duration::from_secs(20),
            description: "a worker killed right after each store of its transfer in turn (the \
                          journal's fields, active, the two accounts, the count, the clear), \
                          and a repairer right after each store of its recover(): the stores \
                          come in order, and the next holder's repair leaves the bank exact and \
                          the dead counted",
            exclusive: false,
            hint: Some(
                "A holder may die between any two stores: the journal's fields first, active last; debit, credit, count; active cleared last; recover() clears active last too, and compiler fences keep the stores in that order. See docs/labs/06-shared-mutex.md, the API table (transfer, recover) and the rules table.",
            ),
            run: stores::killed_at_every_store,
        },
        Check {
            name: "not-recoverable",
            points: 1,
            timeout: Duration::from_secs(15),
            description: "a mutex left unrecoverable (ENOTRECOVERABLE) makes every transfer fail \
                          with kind=not-recoverable, and a lock answers what the mutex says \
                          now: re-initialized, it serves every process again; its other \
                          errors (EINVAL, EDEADLK, EAGAIN) are kind=lock; a repair whose \
                          pthread_mutex_consistent() or broadcast fails is its kind, the \
                          lock given back",
            exclusive: false,
            hint: Some(
                "ENOTRECOVERABLE is NotRecoverable. See docs/labs/06-shared-mutex.md, the rules table (the ENOTRECOVERABLE rule).",
            ),
            run: unrecoverable::not_recoverable,
        },
        Check {
            name: "typed-errors",
            points: 2,
            timeout: Duration::from_secs(15),
            description: "bad segment names are refused with kind=bad-name and a one-character \
                          name or one of blanks is not; transfers from or to an account that does not exist, or \
                          to itself, are refused with kind=bad-accounts, before the lock; \
                          accounts 0 and 7 work; a bad name starting with a multi-byte \
                          character is kind=bad-name, not a crash",
            exclusive: false,
            hint: Some(
                "Bad names and bad accounts are refused with their kind, before anything is created or locked. See docs/labs/06-shared-mutex.md, the rules table (the BadName and BadAccounts rules).",
            ),
            run: errors::typed_errors,
        },
        Check {
            name: "create-failures",
            points: 2,
            timeout: Duration::from_secs(15),
            description: "a name already taken (a segment, a dangling link, a bank whose holder \
                          died, a finished bank, one a year old, one nobody maps) is kind=exists and what is there is left alone; a name too long for shm_open (PATH_MAX and past too) is \
                          kind=shm-open; a failing ftruncate (a limit, a tracer) is \
                          kind=ftruncate with the name removed and nothing left open",
            exclusive: false,
            hint: Some(
                "Each failing step of create has its kind and undoes the earlier ones; an existing segment is Exists and left alone. See docs/labs/06-shared-mutex.md, the rules table (the create rules).",
            ),
            run: create_failures::create_failures,
        },
        Check {
            name: "shm-open-errors",
            points: 1,
            timeout: Duration::from_secs(15),
            description: "create()'s shm_open() failed by the grader with each error but \
                          EEXIST (EACCES, EMFILE, ENFILE, EINVAL, ENOENT) is kind=shm-open \
                          with that error, and no name is left",
            exclusive: false,
            hint: Some(
                "EEXIST alone is Exists; every other error of shm_open() is Open. See docs/labs/06-shared-mutex.md, the rules table (the create rules).",
            ),
            run: open_errors::shm_open_errors,
        },
        Check {
            name: "destroy-errors",
            points: 1,
            timeout: Duration::from_secs(20),
            description: "destroy()'s shm_unlink() failed with ENOENT or EROFS is \
                          kind=shm-unlink with that error; with both pthread destroys failed, \
                          the condition variable is destroyed first and its error returned",
            exclusive: false,
            hint: Some(
                "destroy() makes its steps in the API's order (condition variable, mutex, munmap, shm_unlink), returns the first error, and any failed shm_unlink() is Unlink. See docs/labs/06-shared-mutex.md, the rules table (the destroy rule).",
            ),
            run: destroy_errors::destroy_errors,
        },
        Check {
            name: "destroyed-and-removed",
            points: 2,
            timeout: Duration::from_secs(15),
            description: "at the end the condition variable and mutex are destroyed and the \
                          segment is unlinked, by destroy() alone: the program's exit leaves \
                          the name to whoever has it then",
            exclusive: false,
            hint: Some(
                "destroy() destroys the condition variable and the mutex, unmaps and unlinks. See docs/labs/06-shared-mutex.md, the rules table (the destroy rule).",
            ),
            run: teardown::destroyed_and_removed,
        },
    ],
};

/// Roles of the processes, in diagnoses.
const COORDINATOR: &str = "the coordinator";
const WORKER: &str = "a worker";
/// How many accounts the bank has (`ACCOUNTS` in the lab).
const ACCOUNTS: usize = 8;
/// Transfers per worker in a run where only the set-up, the waiting or what surrounds a death
/// is judged, not the totals under contention.
const LIGHT_WORK: u64 = 1000;

fn blocked_on_futex(activities: &[Activity]) -> bool {
    activities.contains(&Activity::Futex)
}

fn explain_hang(hang: &Hang) -> Option<String> {
    let coordinator = hang.by_role(COORDINATOR);
    let workers: Vec<_> = hang.processes.iter().filter(|p| p.role == WORKER).collect();
    if let Some(coordinator) = coordinator
        && workers.is_empty()
        && blocked_on_futex(&coordinator.activities)
    {
        return Some(
            "the coordinator still waits on the condition variable though no worker is left: \
             after finished += 1 a worker must pthread_cond_broadcast() all_done, and whoever \
             recovers from a dead holder must count it in `dead` and broadcast too"
                .into(),
        );
    }
    let waits_for_crasher = |w: &&Stuck| {
        w.activities
            .iter()
            .any(|a| matches!(a, Activity::PipeRead { .. }))
    };
    if workers.iter().any(waits_for_crasher) {
        return Some(
            "the other workers wait for the worker that should stop in the middle of a \
             transfer: call midway() between the debit and the credit, with the lock held"
                .into(),
        );
    }
    if coordinator.is_some_and(|c| blocked_on_futex(&c.activities))
        && workers
            .iter()
            .any(|w| w.activities.contains(&Activity::Busy))
    {
        return Some(
            "time ran out while workers were still busy on the CPU and the coordinator waited: \
             the transfers are far slower than they should be (a correct run of a check takes \
             well under a second), or a worker loops for ever"
                .into(),
        );
    }
    if !workers.is_empty() && workers.iter().all(|w| blocked_on_futex(&w.activities)) {
        return Some(
            "every worker is asleep on a futex and nobody wakes it: the mutex is not robust \
             and its holder died, or it lacks PTHREAD_PROCESS_SHARED (then an unlock wakes only \
             waiters in the unlocking process), or its holder never unlocked it"
                .into(),
        );
    }
    None
}
