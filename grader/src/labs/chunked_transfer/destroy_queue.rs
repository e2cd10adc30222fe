//! `destroy()` reports the queue's error too: a pool of 2 whose segments all unlink, the
//! `mq_unlink()` of its free queue made to fail with `EACCES` (ptrace, as another user's queue):
//! the queue's error is the first, so `destroy` must fail with `mqueue` carrying `EACCES`.

use ipc_labs_driver::Message;

use super::layout::MIN_SEGMENT;
use super::pool::{PoolNames, pool_ready, spawn_pool};
use super::transfer::said;
use crate::engine::tracer::{Action, Call, Tracer};
use crate::engine::{Fail, Proc, Run};

pub fn destroy_reports_the_queue(run: &mut Run) -> Result<(), Fail> {
    let names = PoolNames::new(run, "qdenied", 2);
    let mut pool = spawn_pool(run, &names, MIN_SEGMENT)?;
    let judged = queue_error_reported(&mut pool, &names);
    pool.kill_tree();
    names.remove();
    judged
}

fn queue_error_reported(pool: &mut Proc, names: &PoolNames) -> Result<(), Fail> {
    pool_ready(pool, names, MIN_SEGMENT)?;
    // None: no mq_unlink() of the queue, judged with the other destroy.
    let Some(answer) = destroy_with_eacces(pool, Call::any(libc::SYS_mq_unlink))? else {
        return Ok(());
    };
    let segments_left: Vec<&String> = names
        .left()
        .into_iter()
        .filter(|n| **n != names.queue)
        .collect();
    let asked = format!(
        "destroy() of a pool of 2 segments, the grader making the mq_unlink() of its free queue \
         {} fail with EACCES (with ptrace, as another user's queue does)",
        names.queue
    );
    let error = answer.get("error").unwrap_or("");
    if answer.kind != "failed" || answer.get("kind") != Some("mqueue") || !error.contains("EACCES")
    {
        let why = if answer.kind == "done" {
            ": the queue's error was dropped, and destroy() said all went well while the queue \
             is still there. Keep mq_unlink()'s error as TransferError::Queue (not `let _ =`)"
        } else {
            ""
        };
        return Err(Fail::failed(format!(
            "{asked}, every segment unlinking, said {}: this must be kind=mqueue with EACCES, \
             the first (and only) error{why}. destroy() unlinks every segment and the queue, \
             tries them all and returns the first error",
            said(&answer)
        )));
    }
    if !segments_left.is_empty() {
        return Err(Fail::failed(format!(
            "{asked} said kind=mqueue, rightly, but left {segments_left:?}: destroy() unlinks \
             every segment whatever fails"
        )));
    }
    Ok(())
}

/// The pool's answer to `finish` (its destroy()), the grader making `call` fail with `EACCES`
/// (with ptrace, as an object of another user's); `None` if the grader may not trace the pool
/// or it made no such call.
pub fn destroy_with_eacces(pool: &mut Proc, call: Call) -> Result<Option<Message>, Fail> {
    let Some(mut tracer) = Tracer::attach(pool.pid.as_raw(), call, Action::Fail(libc::EACCES))?
    else {
        return Ok(None);
    };
    pool.send("finish", &[])?;
    let state = pool.recv_any()?;
    let answer = if state.kind == "state" {
        pool.recv_any()?
    } else {
        state
    };
    let failed = tracer.failed_the_call()?;
    drop(tracer);
    Ok(failed.then_some(answer))
}
