//! A pool pair whose sender dies mid-message: the receiver times out and must keep its segment
//! off the free queue, as after any failed receive. Whether the sender still lives is no
//! reason to give the segment back: its ring holds a chunk half-way through the message and
//! semaphores out of step. The grader stops the receiver (SIGSTOP) before it kills the sender,
//! and lets it go on once the sender is gone, so that the receiver's timeout always comes after
//! its sender's death.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::layout::{MIN_SEGMENT, expected_capacity};
use super::pool::{
    FreeQueue, PairOptions, PoolNames, destroy_pool, pair_ready, pool_ready, spawn_pair, spawn_pool,
};
use super::transfer::failure;
use crate::engine::{Fail, Proc, Run, inspect};

/// The receiver's timeout: well within the time the grader waits for a message of a process
/// whose first process has exited.
const TIMEOUT_MS: u64 = 600;

pub struct OrphanedPair {
    pool: Proc,
    names: PoolNames,
    queue: FreeQueue,
    pair: Proc,
    capacity: u64,
}

impl OrphanedPair {
    /// A pool of one segment, and a pair whose sender stops before chunk 1 of a 4-chunk
    /// message, told `go`.
    pub fn start(run: &mut Run) -> Result<OrphanedPair, Fail> {
        let names = PoolNames::new(run, "orphaned", 1);
        let mut pool = spawn_pool(run, &names, MIN_SEGMENT)?;
        pool_ready(&mut pool, &names, MIN_SEGMENT)?;
        let queue = FreeQueue::open(&names.queue)?;
        let capacity = expected_capacity(MIN_SEGMENT) as u64;
        let options = PairOptions {
            hold_sender_at: Some(capacity),
            timeout_ms: Some(TIMEOUT_MS),
            ..Default::default()
        };
        let seed = 7;
        let mut pair = spawn_pair(run, &names.prefix, 0, seed, 4 * capacity, &options)?;
        let root = pair.pid.as_raw();
        pair.set_roles(move |view| {
            if view.pid == root {
                "the orphaned pair's sender".into()
            } else {
                "the orphaned pair's receiver".into()
            }
        });
        pair_ready(&mut pair, 0)?;
        pair.send("go", &[])?;
        Ok(OrphanedPair {
            pool,
            names,
            queue,
            pair,
            capacity,
        })
    }

    pub fn run(mut self) -> Result<String, Fail> {
        let judged = self.judge();
        if judged.is_err() {
            self.pair.kill_tree();
            self.pool.kill_tree();
            self.names.remove();
        }
        judged
    }

    fn judge(&mut self) -> Result<String, Fail> {
        let root = self.pair.pid.as_raw();
        let root_id = root.to_string();
        let mut id = "?".to_string();
        loop {
            let message = self.pair.recv_any()?;
            match message.kind.as_str() {
                "took" => id = message.get("id").unwrap_or("?").to_string(),
                "holding" if message.get("pid") == Some(root_id.as_str()) => break,
                "failed" => {
                    return Err(Fail::failed(format!(
                        "pair 0 (a pool of one segment, a {}-byte message) said `failed` ({}) \
                         before its sender reached chunk 1, where the grader holds it",
                        4 * self.capacity,
                        failure(&message)
                    )));
                }
                _ => {}
            }
        }
        let receiver = inspect::process_table()
            .into_iter()
            .find(|row| row.ppid == root)
            .map(|row| Pid::from_raw(row.pid))
            .ok_or_else(|| Fail::Grader("the pair's receiver is not there".into()))?;
        kill(receiver, Signal::SIGSTOP).map_err(|e| Fail::Grader(format!("SIGSTOP: {e}")))?;
        let _ = kill(self.pair.pid, Signal::SIGKILL);
        // The sender's exit reparents the receiver: wait until it is a zombie, or gone.
        let until = Instant::now() + Duration::from_secs(5);
        while inspect::view(root).is_some_and(|view| view.state != 'Z') && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(2));
        }
        kill(receiver, Signal::SIGCONT).map_err(|e| Fail::Grader(format!("SIGCONT: {e}")))?;
        // The receiver reports, then exits. Its report is read once it has: with the pair's
        // first process gone, the grader takes what came before the channel closed, and a
        // report still to come would be waited for only briefly.
        let until = Instant::now() + Duration::from_millis(TIMEOUT_MS) + Duration::from_secs(5);
        while inspect::view(receiver.as_raw()).is_some_and(|view| view.state != 'Z')
            && Instant::now() < until
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        let answer = loop {
            let message = self.pair.recv_any()?;
            if message.kind == "failed" || message.kind == "message" {
                break message;
            }
        };
        let setting = format!(
            "in a pool of one segment, pair 0 took segment {id} for a {}-byte message (4 chunks \
             of {}), and its sender was killed (SIGKILL) before chunk 1, its receiver waiting",
            4 * self.capacity,
            self.capacity
        );
        if answer.get("kind") != Some("timeout") {
            return Err(Fail::failed(format!(
                "{setting}; the receiver said {} where its sender died mid-message: that is \
                 TransferError::Timeout (kind=timeout) once its timeout has passed",
                super::transfer::said(&answer)
            )));
        }
        // The receiver has exited: its give-back, if any, came before.
        let on_queue = self.queue.len()?;
        if on_queue != 0 {
            return Err(Fail::failed(format!(
                "{setting}; the receiver timed out, rightly, and the free queue then held \
                 segment {id} again: the receiver gave it back because its sender had died \
                 (its parent changed, getppid(), or the sender's pid gone). Whether the \
                 sender lives is no reason: the segment's ring holds the dead sender's chunks \
                 and its semaphores are out of step, so the next pair would get broken chunks. \
                 A receive that fails keeps the segment out of the pool for good; only a whole \
                 message gives it back"
            )));
        }
        destroy_pool(
            &mut self.pool,
            &self.names,
            &format!("after pair 0's sender was killed, segment {id} lost to it"),
            0,
        )?;
        Ok(format!(
            "a pool pair whose sender was killed mid-message: its receiver timed out and kept \
             segment {id} off the free queue"
        ))
    }
}
