//! Only `destroy()` removes the segment's name, once: not the program's exit. After `closed`
//! (the bank destroyed, its name unlinked) the name may be someone else's by the time the
//! program exits; and after a `shm_unlink()` that failed, the name stays, to the exit too.

use std::time::{Duration, Instant};

use super::errors::Taken;
use super::segment::dev_shm;
use super::session::Session;
use crate::engine::tracer::{Action, Call, Tracer};
use crate::engine::{Fail, Run};

/// Transfers per worker: only the end of the run is judged.
const WORK: u64 = 100;

/// How long the coordinator has to say `closed` or `failed` once its worker is let go.
const TO_CLOSE: Duration = Duration::from_secs(8);

/// A segment of the grader's at the name once the coordinator said `closed`, as another
/// program creating a bank of that name would make: it outlives the program's exit. Then
/// (where the grader may trace) a `shm_unlink()` failed in `destroy()`: the name is still
/// there after the exit. `false` if the second could not be traced.
pub(super) fn name_left_alone_at_exit(run: &mut Run) -> Result<bool, Fail> {
    let mut session = Session::start(run, &[WORK], &[])?;
    let path = dev_shm(&session.name);
    session.go()?;
    let closed = last_word(&mut session)?;
    let judged = match closed {
        Some(m) if m.kind == "closed" => {
            let taken = Taken::create(path.clone(), run.program_user(), b"another bank")?;
            run.made_by_grader(&path);
            judge_exit(&mut session, taken)
        }
        Some(m) => Err(super::messages::failure(&m)),
        None => Err(Fail::failed(format!(
            "the coordinator said neither `closed` nor `failed` within {} s of its worker's \
             start",
            TO_CLOSE.as_secs()
        ))),
    };
    session.proc.kill_tree();
    judged?;
    failed_unlink_not_retried_at_exit(run)
}

fn judge_exit(session: &mut Session, taken: Option<Taken>) -> Result<(), Fail> {
    let Some(taken) = taken else {
        return Err(Fail::failed(format!(
            "{} was still there after the coordinator said `closed`: destroy() unlinks the \
             name",
            dev_shm(&session.name).display()
        )));
    };
    let before_exit = taken.disturbed();
    session.proc.send("exit", &[])?;
    session.proc.wait()?;
    let when = match (before_exit, taken.disturbed()) {
        (None, None) => return Ok(()),
        (Some(what), _) => format!("{what} before the grader told it to exit"),
        (None, Some(what)) => format!("{what} when it exited"),
    };
    Err(Fail::failed(format!(
        "after the coordinator said `closed` (its destroy() done, the bank's name unlinked), \
         the grader made a segment of its own at {}, as another program creating a bank of \
         that name would, and the program's segment there was {when}: the program removes \
         the name again after destroy() (an exit handler such as atexit(), a Drop of a static \
         or a guard kept to the end, a second shm_unlink()), and by then the name is someone \
         else's; only destroy() removes the name, once",
        dev_shm(&session.name).display()
    )))
}

/// The tracer fails the coordinator's `shm_unlink()` of the name in `destroy()` (`EACCES`) and
/// lets it go: the name stays in `/dev/shm` after the program exited, not unlinked later.
fn failed_unlink_not_retried_at_exit(run: &mut Run) -> Result<bool, Fail> {
    let mut session = Session::start(run, &[WORK], &[])?;
    let path = dev_shm(&session.name);
    // The path a glibc shm_unlink() unlinks, kept for the life of the grader (a few bytes a run).
    let unlinked: &'static str = path.display().to_string().leak();
    let failing = Action::Fail(libc::EACCES);
    let Some(mut tracer) = Tracer::attach(session.coordinator, Call::naming(unlinked), failing)?
    else {
        session.proc.kill_tree();
        let _ = std::fs::remove_file(&path);
        return Ok(false);
    };
    session.go()?;
    let last = last_word(&mut session)?;
    let failed = tracer.failed_the_call()?;
    drop(tracer);
    let there = path.exists();
    let _ = session.proc.send("exit", &[]);
    let _ = session.proc.wait();
    let kept = path.exists();
    let _ = std::fs::remove_file(&path);
    session.proc.kill_tree();
    if !failed || last.is_none() || !there || kept {
        // Untraced, or judged by destroyed-and-removed's own failed unlink.
        return Ok(failed && there && kept);
    }
    Err(Fail::failed(format!(
        "the grader failed the coordinator's shm_unlink() of the name in destroy() (EACCES); \
         {} was still there when destroy() returned, as it should be, but gone once the \
         program exited: the program unlinks the name again at its exit (an atexit() handler, \
         a Drop of a static or a guard kept to the end, a retry); the name is removed by \
         destroy()'s shm_unlink() alone, and when that fails the name stays",
        path.display()
    )))
}

/// The coordinator's `closed` or `failed` once its workers were let go, or `None` if it said
/// neither in time.
fn last_word(session: &mut Session) -> Result<Option<ipc_labs_driver::Message>, Fail> {
    let until = Instant::now() + TO_CLOSE;
    loop {
        match session.next_before(until)? {
            Some(m) if m.kind == "failed" || m.kind == "closed" => return Ok(Some(m)),
            Some(_) => {}
            None => return Ok(None),
        }
    }
}
