//! The timeouts: a peer killed mid-message is an error within the timeout, and a live peer
//! that is merely slow is none, however long the whole message takes.

use std::time::{Duration, Instant};

use ipc_labs_driver::Message;

use super::data::pattern_hash;
use super::layout::expected_capacity;
use super::transfer::{Setup, Transfer, failure, start};
use super::{ORPHANED_RECEIVER, ORPHANED_SENDER};
use crate::engine::{Fail, Run};

/// Each wait's timeout in this check.
const TIMEOUT_MS: u64 = 500;
/// How long the slow side of a live transfer takes per chunk.
const SLOW_MS: u64 = 20;
/// Chunks of a live transfer: it lasts twice the timeout at least.
const LIVE_CHUNKS: u64 = 2 * TIMEOUT_MS / SLOW_MS;

pub fn peer_killed(run: &mut Run) -> Result<String, Fail> {
    let size = 65_536;
    let capacity = expected_capacity(size) as u64;
    let setup = |lens: Vec<u64>| {
        let mut setup = Setup::new(size, lens);
        setup.save = false;
        setup.timeout_ms = TIMEOUT_MS;
        setup
    };
    // All four at once: their timeouts run side by side.
    // The sender dies after a few chunks; the receiver's writer is slow (256 chunks at 20 ms
    // each), so that the sender is still mid-message, blocked on a full ring, when it dies.
    let mut lost_sender = setup(vec![256 * capacity]);
    lost_sender.slow_ms = SLOW_MS;
    lost_sender.progress_after = Some(4 * capacity);
    // The receiver dies after the first message, in the middle of the second.
    let mut lost_receiver = setup(vec![capacity, 256 * capacity]);
    lost_receiver.slow_ms = SLOW_MS;
    // Live and slow: the receiver's writer, then the sender's data source, takes 20 ms a chunk,
    // so that the message lasts twice the timeout while no single wait lasts more than 20 ms.
    let mut slow_writer = setup(vec![LIVE_CHUNKS * capacity]);
    slow_writer.slow_ms = SLOW_MS;
    let mut slow_source = setup(vec![LIVE_CHUNKS * capacity]);
    slow_source.sender_slow_ms = SLOW_MS;

    let mut k1 = start(run, &lost_sender)?;
    let mut k2 = start(run, &lost_receiver)?;
    let mut l1 = start(run, &slow_writer)?;
    let mut l2 = start(run, &slow_source)?;
    let started = Instant::now();
    for transfer in [&mut k1, &mut k2, &mut l1, &mut l2] {
        transfer.go()?;
    }

    k1.sender.recv("progress")?;
    k1.sender.kill_tree();
    let killed = Instant::now();
    k1.receiver.set_roles(|_| ORPHANED_RECEIVER.into());
    k2.receiver.recv("message")?;
    k2.receiver.kill_tree();
    k2.sender.set_roles(|_| ORPHANED_SENDER.into());

    let answer = k1.receiver.recv_any()?;
    let waited = killed.elapsed();
    orphan_failed(
        &answer,
        "the sender was killed after a few chunks of a message, and its receiver",
        "the receiver must not report a message it did not get whole",
        waited,
    )?;
    let status = k1.receiver.wait()?;
    if status.success() {
        return Err(Fail::Grader("the receiver failed but exited 0".into()));
    }
    let answer = k2.sender.recv_any()?;
    orphan_failed(
        &answer,
        "the receiver was killed early in a message, and the sender, whose ring stayed full,",
        "a sender whose ring stays full must give up after its timeout",
        Duration::ZERO,
    )?;
    k2.sender.wait()?;

    let mut lives = [
        Live {
            transfer: &mut l1,
            len: slow_writer.lens[0],
            waiter: "sender",
            slow: "receiver's writer",
            sender_done: false,
            receiver_done: false,
        },
        Live {
            transfer: &mut l2,
            len: slow_source.lens[0],
            waiter: "receiver",
            slow: "sender's data source",
            sender_done: false,
            receiver_done: false,
        },
    ];
    follow_live(run, &mut lives, started)?;
    l1.exit()?;
    l2.exit()?;
    Ok(format!(
        "the orphaned receiver failed {} ms after its sender was killed, the orphaned sender \
         failed too (kind=timeout, timeout {TIMEOUT_MS} ms); two live transfers of {} ms (one \
         side {SLOW_MS} ms a chunk) arrived whole",
        waited.as_millis(),
        LIVE_CHUNKS * SLOW_MS
    ))
}

/// Fails unless a side whose peer was killed (`who` ... said) reported `failed` with
/// kind=timeout, `waited` at most a little more than the timeout after the kill (when known).
fn orphan_failed(answer: &Message, who: &str, rule: &str, waited: Duration) -> Result<(), Fail> {
    if answer.kind != "failed" {
        return Err(Fail::failed(format!(
            "{who} said `{}`: {rule}",
            answer.kind
        )));
    }
    if answer.get("kind") != Some("timeout") {
        return Err(Fail::failed(format!(
            "{who} said `failed` ({}): a peer that hands over nothing within the timeout is \
             TransferError::Timeout (kind=timeout)",
            failure(answer)
        )));
    }
    // The orphan drains at most the two chunks in flight (20 ms each), then waits the timeout.
    let bound = Duration::from_millis(TIMEOUT_MS + 1500);
    if waited > bound {
        return Err(Fail::failed(format!(
            "{who} gave up {} ms after the kill, though it was given a timeout of {TIMEOUT_MS} \
             ms: every wait gives up after the timeout it is given",
            waited.as_millis()
        )));
    }
    Ok(())
}

/// A live transfer whose `slow` side takes 20 ms a chunk, followed until both say `done`.
struct Live<'a> {
    transfer: &'a mut Transfer,
    len: u64,
    /// The side that waits for the slow one.
    waiter: &'static str,
    /// The slow side, in words.
    slow: &'static str,
    sender_done: bool,
    receiver_done: bool,
}

/// Follows the live transfers side by side until each has arrived whole and both its sides say
/// `done`; if one side gives up, says which, when, and why that is wrong.
fn follow_live(run: &Run, lives: &mut [Live], started: Instant) -> Result<(), Fail> {
    const LOOK: Duration = Duration::from_millis(2);
    while lives.iter().any(|l| !l.sender_done || !l.receiver_done) {
        let late = Instant::now() >= run.deadline();
        for live in lives.iter_mut() {
            if !live.receiver_done {
                let message = if late {
                    Some(live.transfer.receiver.recv_any()?)
                } else {
                    live.transfer.receiver.recv_before(Instant::now() + LOOK)?
                };
                match message {
                    Some(m) if m.kind == "message" => {
                        let want = pattern_hash(live.transfer.seed, 0, live.len);
                        if m.get("hash") != Some(want.as_str()) {
                            return Err(Fail::failed(format!(
                                "a live transfer whose {} takes {SLOW_MS} ms per chunk: the \
                                 receiver's bytes differ from what the sender sent (the hash \
                                 does not match)",
                                live.slow
                            )));
                        }
                    }
                    Some(m) if m.kind == "done" => live.receiver_done = true,
                    Some(m) => return Err(live_failed(live, "receiver", &m, started)),
                    None => {}
                }
            }
            if !live.sender_done
                && let Some(m) = live.transfer.sender.recv_before(Instant::now() + LOOK)?
            {
                if m.kind != "done" {
                    return Err(live_failed(live, "sender", &m, started));
                }
                live.sender_done = true;
            }
        }
    }
    Ok(())
}

/// What went wrong when `who` of a live transfer said `message` instead of what was due.
fn live_failed(live: &Live, who: &str, message: &Message, started: Instant) -> Fail {
    let after = started.elapsed().as_millis();
    let slow = live.slow;
    let what = format!(
        "a live transfer whose {slow} takes {SLOW_MS} ms per chunk ({LIVE_CHUNKS} chunks, so the \
         message lasts about {} ms, timeout {TIMEOUT_MS} ms): the {who} said `{}` ({}) about \
         {after} ms after it began",
        LIVE_CHUNKS * SLOW_MS,
        message.kind,
        failure(message)
    );
    if who == live.waiter
        && message.get("kind") == Some("timeout")
        && after < u128::from(3 * TIMEOUT_MS)
    {
        return Fail::failed(format!(
            "{what}, though its peer was alive and handed over a chunk every {SLOW_MS} ms, so \
             that no single wait lasted anywhere near the timeout: it gave up when the whole \
             message had lasted the timeout. The timeout counts from the start of each wait, \
             not of the message: take a new deadline for every sem_timedwait()"
        ));
    }
    Fail::failed(what)
}
