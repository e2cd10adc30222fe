//! A pair and the free queue: free_count() right after a take counts the queue as it is now,
//! by its attributes, and a take with a timeout under a second waits for an id given back.

use super::SEGMENTS;
use super::pool::{FreeQueue, PairOptions, pair_failed, pair_ready, spawn_pair};
use super::transfer::{failure, said};
use crate::engine::tracer::{Action, Call, Reached, Tracer};
use crate::engine::{Fail, Proc, Run, inspect};
use std::time::{Duration, Instant};

/// With `pair` (started with `--count-again`) past its `took`, `free` ids on the queue: the
/// grader takes one of them off and asks the pair's `free_count()` again, tracing it to see
/// whether it asks the queue (`mq_getattr()`); the count must be the queue's now (`free - 1`),
/// not the one at the take. The id goes back on the queue afterwards.
pub(super) fn counts_now(
    pair: &mut Proc,
    queue: &FreeQueue,
    index: u64,
    free: usize,
) -> Result<(), Fail> {
    let mut ids = queue.take_all()?;
    if ids.len() != free {
        queue.put_all(&ids)?;
        return Err(Fail::failed(format!(
            "pair {index} said `took`, and the free queue then held {} ids, where {free} \
             should be (the grader keeps one, the pair has one): take() took more than one id \
             off the queue, or put something back",
            ids.len()
        )));
    }
    let kept = ids.pop();
    queue.put_all(&ids)?;
    let now = free - 1;
    let pid = pair.pid.as_raw();
    let traced = Tracer::attach(pid, Call::any(libc::SYS_mq_getsetattr), Action::Hold)?;
    pair.send("count", &[])?;
    // Whether it called mq_getattr() between the question and its answer (unknown untraced).
    let mut asked = None;
    let answer = match traced {
        Some(mut tracer) => match tracer.wait(pair, Instant::now() + Duration::from_secs(10))? {
            Reached::Call => {
                asked = Some(true);
                tracer.release();
                pair.recv_any()?
            }
            Reached::Passed(Some(message)) => {
                asked = (message.kind == "state").then_some(false);
                message
            }
            Reached::Passed(None) => pair.recv_any()?,
        },
        None => pair.recv_any()?,
    };
    if let Some(id) = kept {
        queue.put_all(&[id])?;
    }
    if answer.kind != "state" {
        let said = said(&answer);
        return Err(Fail::failed(format!(
            "pair {index}, asked for free_count() again after its `took`, said {said} where \
             it should have counted the free queue ({now} ids)"
        )));
    }
    let said = answer.get("free").unwrap_or("nothing");
    if said.parse::<usize>().ok() == Some(now) {
        return Ok(());
    }
    let how = match asked {
        Some(false) => format!(
            "it answered without any mq_getattr() call (the grader traced it from the question \
             to the answer){}: free_count() gives a number of its own, such as one remembered \
             from the take, instead of asking the queue each time",
            if said.parse::<usize>().ok() == Some(free) {
                format!(", and {free} is the count at its take")
            } else {
                String::new()
            }
        ),
        Some(true) => {
            "it did call mq_getattr(), yet its answer is not the queue's mq_curmsgs".to_string()
        }
        None => "free_count() does not count the queue as it is now".to_string(),
    };
    Err(Fail::failed(format!(
        "pair {index} said `took` with free_count() {free}; then the grader took one id off the \
         free queue ({now} left) and asked free_count() again (`--count-again`): it said \
         {said}, where {now} id(s) were on the queue: {how}. free_count() is how many segments \
         are free now: mq_getattr's mq_curmsgs, asked at each call"
    )))
}

/// Starts `pair` (alone on the pool: `free` ids are on the queue once it has taken one) with
/// its main thread traced, and holds it at its first `mq_getattr()` (`mq_getsetattr`) or
/// `mq_send()` (`mq_timedsend`) after `go`: `free_count()`, right after the take, must read
/// the queue's attributes (`mq_curmsgs`), not take the ids off the queue and put them back.
pub(super) fn counts_by_attributes(
    pair: &mut Proc,
    queue: &FreeQueue,
    index: u64,
    free: usize,
) -> Result<(), Fail> {
    const CALLS: &[i64] = &[libc::SYS_mq_getsetattr, libc::SYS_mq_timedsend];
    let pid = pair.pid.as_raw();
    let traced = Tracer::attach(pid, Call::one_of(CALLS), Action::Hold)?;
    pair.send("go", &[])?;
    let Some(mut tracer) = traced else {
        return Ok(());
    };
    match tracer.wait(pair, Instant::now() + Duration::from_secs(10))? {
        Reached::Call => {
            let call = inspect::call_of(pid, pid).map(|(nr, _)| nr);
            let on_queue = queue.len()?;
            tracer.release();
            if call == Some(libc::SYS_mq_timedsend) {
                return Err(Fail::failed(format!(
                    "pair {index} took a segment, and before it said `took` (with \
                     free_count()'s number) it sent a message to the free queue (mq_send(); \
                     the grader held it there, before any mq_getattr()), with {on_queue} of \
                     the {free} free ids left on the queue: free_count() takes the ids off the \
                     queue to count them and puts them back, which leaves the queue empty for \
                     a moment to every other pair. Count them with mq_getattr(): mq_curmsgs"
                )));
            }
            Ok(())
        }
        Reached::Passed(Some(message)) if message.kind == "took" => Err(Fail::failed(format!(
            "pair {index} took a segment and said `took` (free_count() said {}, where \
             exactly {free} ids were free) without any mq_getattr() call (the grader traced \
             it): free_count() does not ask the queue. Count the ids on the free queue \
             (mq_getattr's mq_curmsgs), not a number of your own",
            message.get("free").unwrap_or("?")
        ))),
        // Before its `took`, only the take can fail: judged as anywhere else.
        Reached::Passed(Some(message)) if message.kind == "failed" => {
            Err(pair_failed(index, SEGMENTS, &message, true))
        }
        Reached::Passed(Some(message)) => Err(Fail::failed(format!(
            "pair {index}, alone on the pool with {} ids free, said `{}` where it should have \
             taken a segment",
            free + 1,
            message.kind
        ))),
        Reached::Passed(None) => Ok(()),
    }
}

/// A pair with a timeout under a second (600 ms) asks an empty pool for a segment; once it is
/// blocked in `mq_timedreceive()` the grader puts `id` on the queue: the pair must take it and
/// carry its message through. Afterwards `id` is off the queue again (the grader's).
pub(super) fn short_take(
    run: &mut Run,
    queue: &FreeQueue,
    prefix: &str,
    index: u64,
    seed: u64,
    id: &[u8],
) -> Result<(), Fail> {
    const TIMEOUT_MS: u64 = 600;
    let mut pair = spawn_pair(
        run,
        prefix,
        index,
        seed,
        1000,
        &PairOptions {
            timeout_ms: Some(TIMEOUT_MS),
            ..Default::default()
        },
    )?;
    pair_ready(&mut pair, index)?;
    pair.send("go", &[])?;
    let asked = format!(
        "pair {index}, given a timeout of {TIMEOUT_MS} ms, asked an empty pool for a segment \
         (the grader had taken every id)"
    );
    let started = Instant::now();
    let pid = pair.pid.as_raw();
    // Blocked in mq_timedreceive(), or an answer first.
    loop {
        if let Some(answer) = pair.recv_before(Instant::now() + Duration::from_millis(2))? {
            let after = started.elapsed().as_millis();
            return Err(Fail::failed(format!(
                "{asked}, and said `{}` ({}) {after} ms after `go`, before the grader ever saw \
                 it wait in mq_timedreceive(): take() must wait for an id in \
                 mq_timedreceive() up to its timeout, however short, and take one that comes \
                 back meanwhile (only none in time is PoolEmpty)",
                answer.kind,
                failure(&answer)
            )));
        }
        if inspect::call_of(pid, pid).is_some_and(|(nr, _)| nr == libc::SYS_mq_timedreceive) {
            break;
        }
        if started.elapsed() > Duration::from_millis(TIMEOUT_MS / 2) {
            // Not seen in the call (a slow machine): no judgement of the wait here.
            pair.kill_tree();
            let _ = queue.take_all();
            return Ok(());
        }
    }
    queue.put_all(&[id.to_vec()])?;
    let given = started.elapsed().as_millis();
    let answer = pair.recv_any()?;
    if answer.get("kind") == Some("bad-id") {
        // The pool's own id refused: the count is wrong, whatever the wait.
        pair.kill_tree();
        return Err(pair_failed(index, SEGMENTS, &answer, true));
    }
    if answer.kind != "took" {
        pair.kill_tree();
        return Err(Fail::failed(format!(
            "{asked}; it was blocked in mq_timedreceive() and the grader put id {} on the queue \
             {given} ms after `go`, within its timeout, yet the pair said `{}` ({}): an id that \
             comes within the timeout must be taken",
            u32::from_le_bytes(id.try_into().unwrap_or([0; 4])),
            answer.kind,
            failure(&answer)
        )));
    }
    loop {
        let message = pair.recv_any()?;
        match message.kind.as_str() {
            "done" => break,
            "failed" => {
                return Err(Fail::failed(format!(
                    "{asked}, took the id the grader gave back, then said `failed` ({})",
                    failure(&message)
                )));
            }
            _ => {}
        }
    }
    pair.wait()?;
    // The id went back to the queue with the message's end: the grader keeps it again.
    let _ = queue.take_all()?;
    Ok(())
}
