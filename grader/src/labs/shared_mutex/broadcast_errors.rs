//! `broadcast-errors`: a worker's `finish()` whose `pthread_cond_broadcast()` fails (the grader
//! makes it return an error at a breakpoint; glibc's never fails on a good condition variable)
//! must return that error, `BankError::Broadcast`, not `Ok`: a broadcast that did not happen
//! may leave the coordinator asleep for ever.

use std::time::{Duration, Instant};

use ipc_labs_driver::Message;

use super::create_failures::{expect_errno, expect_kind};
use super::probe;
use super::session::Session;
use super::teardown::dismiss;
use crate::engine::tracer::{Breakpoint, Tracer};
use crate::engine::{Fail, Run, force};

/// Transfers of each worker: only the finish is judged.
const WORK: u64 = 100;
/// What the grader makes the broadcast return.
const BROADCAST_ERROR: i32 = libc::EINVAL;

pub(super) fn broadcast_errors(run: &mut Run) -> Result<String, Fail> {
    let mut session = Session::start(run, &[WORK; 2], &[])?;
    let (first, second) = (session.workers[0], session.workers[1]);
    let cond = probe::mappings(first, &session.name)
        .into_iter()
        .find(|m| m.offset == 0)
        .map(|m| m.start + session.segment.layout.cond_at as u64);
    // The second worker waits until the first has finished: the coordinator is woken by it
    // then, whatever the first one's broadcast did.
    force::hold(second)?;
    let tracer = match cond {
        Some(_) => Tracer::break_at_functions(first, &[c"pthread_cond_broadcast"])?,
        None => None,
    };
    let Some(mut tracer) = tracer else {
        force::resume(second)?;
        let _ = session.finish(0, |_| Ok(()));
        return Ok("the grader may not trace a worker here: no broadcast was failed".into());
    };
    session.go()?;
    let until = Instant::now() + Duration::from_secs(8);
    let mut failed = false;
    // Until the worker is gone (it may exit before its last word is read).
    let mut traced = true;
    let word = loop {
        match traced.then(|| tracer.next_break(Instant::now() + Duration::from_millis(5))) {
            Some(Ok(Some(Breakpoint::At([first_argument, _])))) => {
                if !failed && Some(first_argument) == cond {
                    failed = true;
                    tracer.return_now(i64::from(BROADCAST_ERROR));
                } else {
                    tracer.go_on();
                }
                continue;
            }
            Some(Err(fail)) => return Err(fail),
            Some(Ok(Some(Breakpoint::Lost | Breakpoint::Unavailable))) => traced = false,
            _ => {}
        }
        let look = Instant::now() + Duration::from_millis(if traced { 0 } else { 5 });
        match session.next_before(look)? {
            Some(m) if m.kind == "failed" || m.kind == "finished" => break Some(m),
            Some(_) => {}
            None if Instant::now() > until => break None,
            None => {}
        }
    };
    drop(tracer);
    force::resume(second)?;
    let closed = closed_within(&mut session, Duration::from_secs(8))?;
    if !closed {
        session.proc.kill_tree();
    }
    dismiss(&mut session);
    judge(failed, word)
}

/// The verdict on the first worker's word after its broadcast was failed (or not).
fn judge(failed: bool, word: Option<Message>) -> Result<String, Fail> {
    let Some(word) = word else {
        return Err(Fail::failed(format!(
            "the first worker said neither `finished` nor `failed` within 8 s of its go{}",
            if failed {
                ", once the grader had made its pthread_cond_broadcast() of all_done return \
                 EINVAL"
            } else {
                ""
            }
        )));
    };
    if !failed {
        // No broadcast on all_done before finishing: judged by waits-for-last-worker.
        return Ok("the worker made no pthread_cond_broadcast() of all_done to fail".into());
    }
    let what = "with the grader making its pthread_cond_broadcast() of all_done in finish() \
                return EINVAL, a worker's finish()";
    if word.kind == "finished" {
        return Err(Fail::failed(format!(
            "{what} returned Ok (the worker said `finished`): finish() ignores the value \
             pthread_cond_broadcast() returns; pthread functions return their error number \
             (they do not set errno), and a failed broadcast is BankError::Broadcast \
             (kind=broadcast), for a coordinator no broadcast reached sleeps on"
        )));
    }
    expect_kind(
        &word,
        "broadcast",
        what,
        "a failed pthread_cond_broadcast() is BankError::Broadcast",
    )?;
    expect_errno(
        &word,
        BROADCAST_ERROR,
        &format!("{what} said kind=broadcast, but"),
    )?;
    Ok(
        "a worker whose pthread_cond_broadcast() of all_done the grader made fail (EINVAL) \
         said kind=broadcast with that error"
            .into(),
    )
}

/// Reads the program's messages until the coordinator's `closed` (true) or `within` (false).
fn closed_within(session: &mut Session, within: Duration) -> Result<bool, Fail> {
    let until = Instant::now() + within;
    while let Some(message) = session.next_before(until)? {
        if message.kind == "closed" {
            return Ok(true);
        }
    }
    Ok(false)
}
