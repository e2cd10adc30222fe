//! The coordinator's lock calls on the bank's mutex before it first sleeps on the condition
//! variable: one for its tried transfer, one for `wait_all_done()`; more is a poll of the counts
//! before the real wait (lock, look, unlock), however short, even one that makes no system call.

use std::time::{Duration, Instant};

use super::errors::first_message;
use super::lock_calls::{LockCalls, LockEvent};
use super::messages::{failure, layout_of};
use super::probe::{self, Place, Sleep};
use super::segment::dev_shm;
use crate::engine::{Fail, Run};

/// The coordinator makes one tried transfer (`--try-transfers 0,1`, told when to), forks its
/// worker, which waits for a `go` that never comes, and waits: from its `try` until it sleeps on
/// `all_done`, breakpoints at the lock functions count its calls on the bank's mutex. `false`
/// when it could not be watched (judged elsewhere).
pub(super) fn locks_once_before_waiting(run: &mut Run) -> Result<bool, Fail> {
    let name = run.ipc_name("wait-locks");
    let mut proc = run.spawn(&[
        "--name",
        name.as_str(),
        "--work",
        "1",
        "--try-transfers",
        "0,1",
        "--try-when-told",
    ])?;
    let pid = proc.pid.as_raw();
    let counted = (|| -> Result<Option<u32>, Fail> {
        let message = first_message(&mut proc)?;
        if message.kind != "created" {
            return Err(failure(&message));
        }
        let layout = layout_of(&message)?;
        let Some(map) = probe::mappings(pid, &name)
            .into_iter()
            .find(|m| m.offset == 0)
        else {
            return Ok(None);
        };
        let Some(mut calls) = LockCalls::start(pid, map.start + layout.mutex_at as u64)? else {
            return Ok(None);
        };
        proc.send("try", &[])?;
        let until = Instant::now() + Duration::from_secs(3);
        let mut count = 0;
        while Instant::now() < until {
            match calls.next(Instant::now() + Duration::from_millis(10))? {
                LockEvent::Call(_) => {
                    count += 1;
                    calls.go_on();
                }
                LockEvent::Lost => return Ok(None),
                LockEvent::Nothing => {
                    if let Sleep::Futex { address } = probe::sleeping(pid)
                        && probe::place(pid, &name, &layout, address) == Place::Cond
                    {
                        return Ok(Some(count));
                    }
                }
            }
        }
        Ok(None)
    })();
    proc.kill_tree();
    let _ = std::fs::remove_file(dev_shm(&name));
    let Some(count) = counted? else {
        return Ok(false);
    };
    if count <= 2 {
        return Ok(true);
    }
    Err(Fail::failed(format!(
        "from its `try` to its first sleep on the condition variable (no worker had started), \
         the coordinator called the lock functions on the bank's mutex {count} times (a \
         breakpoint at each of pthread_mutex_lock(), _trylock(), _timedlock() and \
         _clocklock()): one for its tried transfer, one for wait_all_done(), and {} more: \
         wait_all_done() polls the counts (lock, look, unlock, again) before its real wait, \
         however short and even with no system call between looks; it locks once and, while \
         finished + dead < workers, sleeps in pthread_cond_wait(), which gives the mutex back \
         while it sleeps",
        count - 2
    )))
}
