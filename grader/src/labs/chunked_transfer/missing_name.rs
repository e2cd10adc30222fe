//! `Segment::open` of a missing name is `NotFound` at once: the grader holds the receiver
//! (ptrace) as its `shm_open()` of the name returns `ENOENT` and makes the segment then. A
//! receiver that tries the name again (a loop that sleeps and polls for the sender's create)
//! finds it; one that reports the `ENOENT` it got does not.

use std::time::{Duration, Instant};

use super::headers::one_message_receiver;
use super::layout::{MIN_SEGMENT, Mapped};
use super::observe::dev_shm;
use super::transfer::said;
use crate::engine::force;
use crate::engine::tracer::{Action, Call, Reached, Tracer};
use crate::engine::{Fail, Run};

pub fn missing_name_reported_at_once(run: &mut Run) -> Result<(), Fail> {
    let name = run.ipc_name("appears-later");
    let mut receiver = run.spawn_stopped(&one_message_receiver(&name, 1000))?;
    receiver.set_roles(|_| "the receiver".into());
    let pid = receiver.pid.as_raw();
    let cleanup = |receiver: &crate::engine::Proc| {
        receiver.kill_tree();
        let _ = nix::sys::mman::shm_unlink(name.as_str());
    };
    let opening = Call::opening(&dev_shm(&name));
    let Some(mut tracer) = Tracer::attach(pid, opening, Action::HoldAfter)? else {
        cleanup(&receiver);
        return Ok(());
    };
    force::resume(pid)?;
    match tracer.wait(&mut receiver, Instant::now() + Duration::from_secs(5)) {
        Ok(Reached::Call) => {}
        // It said something before it opened the name (judged by the plain missing name).
        Ok(Reached::Passed(_)) => {
            drop(tracer);
            cleanup(&receiver);
            return Ok(());
        }
        Err(error) => {
            drop(tracer);
            cleanup(&receiver);
            return Err(error);
        }
    }
    // The name was missing at that shm_open(): it exists from now on, a segment as a sender
    // makes it.
    let segment = Mapped::create(run, &name, MIN_SEGMENT, true);
    tracer.release();
    let answer = segment.and_then(|_segment| receiver.recv_any());
    cleanup(&receiver);
    let answer = answer?;
    if answer.kind == "failed" && answer.get("kind") == Some("not-found") {
        return Ok(());
    }
    let asked = format!(
        "the grader held a receiver (ptrace) as its shm_open() of {name}, a name that did not \
         exist, returned (ENOENT), and made the segment then"
    );
    if answer.kind == "ready" {
        return Err(Fail::failed(format!(
            "{asked}; the receiver then said `ready`: it opened the segment on a later try. \
             It tries the name again after ENOENT (a loop that sleeps and polls for the \
             sender's create). Segment::open calls shm_open() once and reports ENOENT as \
             TransferError::NotFound (kind=not-found) at once: waiting for the sender is no \
             part of open, and a wait by polling is none of the protocol's"
        )));
    }
    Err(Fail::failed(format!(
        "{asked}; the receiver then said {}: a name missing at the shm_open() is \
         TransferError::NotFound (kind=not-found)",
        said(&answer)
    )))
}
