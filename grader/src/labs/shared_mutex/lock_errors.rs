//! The errors of `pthread_mutex_lock()` other than the robust ones: each is kind=lock. The
//! grader rewrites the bank's mutex (free, nobody waiting) so that the coordinator's next lock
//! fails at once in glibc with the error it wants, and the coordinator then tries a transfer.

use super::errors::first_message;
use super::messages::{failure, layout_of};
use super::probe::{KIND_PSHARED, KIND_ROBUST, MUTEX_KIND_AT, MUTEX_OWNER_AT};
use super::segment::{Segment, open_segment, told_transfer};
use crate::engine::{Fail, Run};

/// glibc: `PTHREAD_MUTEX_RECURSIVE_NP` and `PTHREAD_MUTEX_ERRORCHECK_NP` in `__kind`.
const KIND_RECURSIVE: i32 = 1;
const KIND_ERRORCHECK: i32 = 2;
/// A type glibc does not know: robust with bit 2 set (`pthread_mutex_lock()`: `EINVAL`).
const KIND_UNKNOWN: i32 = 4;
/// Where `__count` (a recursive mutex's depth) lies in glibc's `pthread_mutex_t`.
const MUTEX_COUNT_AT: usize = 4;

/// How the grader makes the coordinator's lock fail, and the error glibc then returns.
struct Rigged {
    errno: i32,
    how: &'static str,
}

const RIGGED: [Rigged; 3] = [
    Rigged {
        errno: libc::EINVAL,
        how: "its kind word set to a type glibc does not know",
    },
    Rigged {
        errno: libc::EDEADLK,
        how: "made an error-checking mutex that the coordinator's own thread holds already",
    },
    Rigged {
        errno: libc::EAGAIN,
        how: "made a recursive mutex that the coordinator's own thread holds already, as \
              deep as it can count",
    },
];

/// Each rigged error in turn (a run each): the coordinator's tried transfer must fail with
/// kind=lock, not not-recoverable (that kind is for `ENOTRECOVERABLE` alone), nor any other.
pub(super) fn other_lock_errors_are_lock(run: &mut Run) -> Result<(), Fail> {
    for rigged in &RIGGED {
        let tried = told_transfer(run, 1, (0, 1, 1), |_, proc, name| {
            let message = first_message(proc)?;
            if message.kind != "created" {
                return Err(failure(&message));
            }
            let coordinator = proc.pid.as_raw();
            let segment = open_segment(name, layout_of(&message)?, coordinator)?;
            rig(&segment, rigged.errno, coordinator)?;
            proc.send("try", &[])?;
            loop {
                let message = proc.recv_any()?;
                match (message.kind.as_str(), message.get("role")) {
                    ("ready", Some("coordinator")) => {
                        return Ok(message.get("tried").unwrap_or("").to_string());
                    }
                    ("failed", _) => return Err(failure(&message)),
                    _ => {}
                }
            }
        })?;
        if tried == "lock" {
            continue;
        }
        let errno = format!("{:?}", nix::errno::Errno::from_raw(rigged.errno));
        let outcome = match tried.as_str() {
            "ok" => "went through (`ok`): the lock's result was not looked at".to_string(),
            "not-recoverable" => "failed with kind=not-recoverable: only ENOTRECOVERABLE is \
                 BankError::NotRecoverable; a catch-all arm that maps every other error to \
                 it loses the error number"
                .to_string(),
            other => format!("failed with kind={other}"),
        };
        return Err(Fail::failed(format!(
            "the grader rewrote the bank's mutex before the coordinator's tried transfer \
             ({}), so that the coordinator's pthread_mutex_lock() returned {errno}, and its \
             tried transfer {outcome}; lock(): EOWNERDEAD is a recovery, ENOTRECOVERABLE is \
             BankError::NotRecoverable, and every other error is BankError::Lock with its \
             errno (kind=lock)",
            rigged.how
        )));
    }
    Ok(())
}

/// Writes the mutex's words so that `coordinator`'s next `pthread_mutex_lock()` returns
/// `errno`: glibc's robust path, which the kind word sends every lock to, checks the type and
/// then whether the caller holds the mutex already.
fn rig(segment: &Segment, errno: i32, coordinator: i32) -> Result<(), Fail> {
    let at = segment.layout.mutex_at;
    let shared_robust = KIND_PSHARED | KIND_ROBUST;
    let (lock, count, owner, kind) = match errno {
        libc::EINVAL => (0, 0, 0, shared_robust | KIND_UNKNOWN),
        libc::EDEADLK => (coordinator, 0, coordinator, shared_robust | KIND_ERRORCHECK),
        _ => (
            coordinator,
            u32::MAX as i32,
            coordinator,
            shared_robust | KIND_RECURSIVE,
        ),
    };
    segment.write_at(at, &lock.to_ne_bytes())?;
    segment.write_at(at + MUTEX_COUNT_AT, &count.to_ne_bytes())?;
    segment.write_at(at + MUTEX_OWNER_AT, &owner.to_ne_bytes())?;
    segment.write_at(at + MUTEX_KIND_AT, &kind.to_ne_bytes())
}
