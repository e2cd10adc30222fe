//! `finish()` counts every finish, also once the counts reached `workers`: the grader, holding
//! the bank's mutex before the workers start, sets `finished` to `workers` - 1, so that the
//! first finish brings it to `workers` (the edge) and the second one past it. The coordinator
//! is held (`SIGSTOP`) from before the first finish to after the last: its wait then looks at
//! the counts only once they are past `workers`, as it does whenever the finishes outrun it.

use std::time::Duration;

use super::probe;
use super::segment::dev_shm;
use super::session::Session;
use crate::engine::{Fail, Run, force};

/// Transfers per worker: only the finishes are judged.
const WORK: u64 = 100;

pub(super) fn finish_counted_past_workers(run: &mut Run) -> Result<(), Fail> {
    let mut session = Session::start(run, &[WORK; 2], &[])?;
    let judged = judge(&mut session);
    session.proc.kill_tree();
    let _ = std::fs::remove_file(dev_shm(&session.name));
    judged
}

fn judge(session: &mut Session) -> Result<(), Fail> {
    session.coordinator_settled();
    let workers = session.workers.len() as u32;
    let planted = workers - 1;
    {
        let _held = probe::hold(&session.segment, Duration::from_secs(1))?;
        let finished_at = session.segment.layout.counts_at + 4;
        session
            .segment
            .write_at(finished_at, &planted.to_ne_bytes())?;
    }
    // Held in its wait, before any go: `Session::go` would wait for it to sleep on a futex.
    session.coordinator_settled();
    force::hold(session.coordinator)?;
    for _ in &session.workers {
        session.proc.send("go", &[])?;
    }
    let mut reported = 0;
    let mut held = true;
    loop {
        let message = session.next().map_err(|fail| match fail {
            Fail::Crashed(why) if !held => Fail::Crashed(format!(
                "{why}; the grader had held the coordinator in its wait while every worker \
                 finished, so that its wait looked at the counts only once finished + dead = \
                 {} was past workers = {workers}: the wait's test must hold past workers too \
                 (finished + dead < workers, with no subtraction that goes below zero)",
                planted + workers
            )),
            other => other,
        })?;
        match message.kind.as_str() {
            "finished" => reported += 1,
            "closed" => break,
            "failed" => return Err(super::messages::failure(&message)),
            _ => {}
        }
        if held && reported == workers {
            force::resume(session.coordinator)?;
            held = false;
        }
    }
    let counts = session.segment.counts()?;
    let expected = planted + reported;
    if counts.finished == expected {
        session.proc.send("exit", &[])?;
        session.proc.wait()?;
        return Ok(());
    }
    Err(Fail::failed(format!(
        "the grader, holding the bank's mutex before the workers started, set finished to {planted} \
         (workers - 1, as if one more worker had finished); then {reported} workers finished \
         (each said `finished`), and finished in the segment ended at {}, not {expected}: {}",
        counts.finished,
        if counts.finished < expected {
            "a finish was dropped once finished reached workers (a guard such as `if finished < \
             workers`, or on finished + dead, before the increment); finish() adds 1 every \
             time, under the lock, whatever the counts: they may step past workers, and the \
             coordinator waits while finished + dead < workers"
        } else {
            "finish() adds exactly 1 to finished, once per worker"
        }
    )))
}
