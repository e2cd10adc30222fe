//! A failed `mq_getattr()` or `mq_setattr()` after the queue is open is `mq-attr` with its errno,
//! wherever it comes: `attributes()` never answers values it saw before, and `set_nonblocking()`
//! never lets the program go on in a mode it did not get. Each failure is made with ptrace
//! (`EIO`, which nothing else gives), on a queue of the grader's.

use std::time::{Duration, Instant};

use nix::mqueue::{mq_close, mq_unlink};

use super::names::take_name;
use super::protocol::{
    failed_errno, failed_with, release, said, spawn_consumer_stopped_with, spawn_producer,
    spawn_producer_stopped_with,
};
use crate::engine::tracer::{Action, Call, Step, Tracer};
use crate::engine::{Fail, Proc, Run, force};

/// Any `mq_getsetattr()`: what `mq_getattr()` and `mq_setattr()` both call.
const GETSETATTR: Call = Call::any(libc::SYS_mq_getsetattr);
/// An `mq_getsetattr()` that sets attributes (its new attributes not null): `mq_setattr()`.
const SETATTR: Call = Call::pointed_flag_set(libc::SYS_mq_getsetattr, 1, 0);

/// Where the program's failure comes from, for the message.
const GETATTR_RULE: &str = "attributes() calls mq_getattr each time and returns its error as \
                            QueueError::Attributes (kind=mq-attr) with its errno; it never \
                            answers values it read before (kept at open or at an earlier call)";

/// After a successful open, the monitor's, a producer's and the consumer's next `mq_getattr()`
/// fails: each says `mq-attr` naming `EIO`.
pub fn getattr_fails_after_open(run: &mut Run) -> Result<(), Fail> {
    let name = run.ipc_name("getattr-later");
    let (queue, capacity, msg_size) = take_name(run, &name, 0)?;
    let outcome = (|| {
        for monitor in [true, false] {
            let (mut proc, ready) = match monitor {
                true => {
                    let args = ["monitor", "--name", &name, "--samples", "1"].map(String::from);
                    let mut proc = run.spawn(&args)?;
                    let ready = proc.recv_any()?;
                    (proc, ready)
                }
                false => {
                    let (proc, ready, _) =
                        spawn_producer(run, &name, &[], false, false, "a producer")?;
                    (proc, ready)
                }
            };
            let who = if monitor { "the monitor" } else { "a producer" };
            let pid = proc.pid.as_raw();
            if ready.kind != "ready" {
                release(&mut proc)?;
                return Err(Fail::failed(format!(
                    "{who} of {name:.40} said {} where it should have opened it",
                    said(&ready)
                )));
            }
            let Some(tracer) = Tracer::attach(pid, GETSETATTR, Action::Fail(libc::EIO))? else {
                run.note("a failed mq_getattr after open not tried (no ptrace)");
                proc.send("go", &[])?;
                let _ = proc.recv_any()?;
                return release(&mut proc);
            };
            proc.send("go", &[])?;
            let answer = judged(&mut proc, tracer)?;
            let Some(answer) = answer else { continue };
            let after = if monitor {
                "its one sample after `go`"
            } else {
                "the count it reports at `done`"
            };
            return Err(Fail::failed(format!(
                "{who} opened {name:.40} (its mq_getattr then went through); the grader made \
                 its next mq_getattr (mq_getsetattr, for {after}) fail with EIO (ptrace), and \
                 it said {}, not `failed` with kind=mq-attr and EIO{}",
                said(&answer),
                hint(&answer)
            )));
        }
        // The consumer's attributes() for `ready`, after create()'s own mq_getattr.
        let asked = super::protocol::sized(capacity as u64, msg_size as u64);
        let own = run.ipc_name("getattr-ready");
        let mut proc = spawn_consumer_stopped_with(run, &own, &asked)?;
        let pid = proc.pid.as_raw();
        let steps = [
            (GETSETATTR, Step::Pass),
            (GETSETATTR, Step::Fail(libc::EIO)),
        ];
        let Some(tracer) = Tracer::in_turn(pid, steps)? else {
            force::resume(pid)?;
            let answer = proc.recv_any()?;
            return super::names::end_consumer(proc, &own, &answer);
        };
        force::resume(pid)?;
        let answer = judged(&mut proc, tracer);
        // The queue create() made stays when attributes() fails after it: the grader's to remove.
        let _ = mq_unlink(own.as_str());
        if let Some(answer) = answer? {
            return Err(Fail::failed(format!(
                "the consumer created {own:.40} (create()'s mq_getattr went through); the grader \
                 made its next mq_getattr (mq_getsetattr, for the attributes it reports at \
                 `ready`) fail with EIO (ptrace), and it said {}, not `failed` with kind=mq-attr \
                 and EIO{}",
                said(&answer),
                hint(&answer)
            )));
        }
        Ok(())
    })();
    let _ = mq_close(queue);
    let _ = mq_unlink(name.as_str());
    outcome
}

/// A producer's `set_nonblocking()` whose `mq_setattr()` fails must say `mq-attr` naming `EIO`:
/// setting `O_NONBLOCK` (`--nonblocking`), clearing it (a blocking producer), and clearing it
/// again before the shutdown of a `--nonblocking --shutdown` producer, after `go`.
pub fn setattr_fails(run: &mut Run) -> Result<(), Fail> {
    let name = run.ipc_name("setattr");
    let (queue, _, _) = take_name(run, &name, 0)?;
    let outcome = (|| {
        let cases: [(&[&str], usize, &str); 3] = [
            (
                &["--nonblocking"],
                1,
                "setting O_NONBLOCK (set_nonblocking(true), at open)",
            ),
            (
                &[],
                1,
                "clearing O_NONBLOCK (set_nonblocking(false), at open)",
            ),
            (
                &["--nonblocking", "--shutdown"],
                2,
                "clearing O_NONBLOCK before the shutdown (set_nonblocking(false), after `go`)",
            ),
        ];
        for (extra, failing, what) in cases {
            let mut proc = spawn_producer_stopped_with(run, &name, extra)?;
            let pid = proc.pid.as_raw();
            let tracer = match failing {
                1 => Tracer::attach(pid, SETATTR, Action::Fail(libc::EIO))?,
                _ => Tracer::in_turn(
                    pid,
                    [(SETATTR, Step::Pass), (SETATTR, Step::Fail(libc::EIO))],
                )?,
            };
            force::resume(pid)?;
            let Some(tracer) = tracer else {
                run.note("a failed mq_setattr not tried (no ptrace)");
                let _ = proc.recv_any()?;
                return release(&mut proc);
            };
            if failing == 2 {
                let ready = proc.recv_any()?;
                if ready.kind != "ready" {
                    release(&mut proc)?;
                    return Err(Fail::failed(format!(
                        "a producer with {} said {} where it should have opened {name:.40}",
                        extra.join(" "),
                        said(&ready)
                    )));
                }
                proc.send("go", &[])?;
            }
            let Some(answer) = judged(&mut proc, tracer)? else {
                continue;
            };
            let went_on = if answer.kind == "failed" {
                String::new()
            } else {
                " and went on: set_nonblocking() dropped mq_setattr's error and returned Ok (a \
                 `let _ =` on mq_set_nonblock / mq_remove_nonblock), so the producer goes on in \
                 a mode it did not get: a --nonblocking one then sleeps on a full queue, a \
                 shutdown meant to wait for room comes back full"
                    .to_string()
            };
            return Err(Fail::failed(format!(
                "a producer with {} had its mq_setattr (mq_getsetattr with new attributes) \
                 {what} made to fail with EIO (ptrace), and said {}{went_on}; it is `failed` \
                 with kind=mq-attr and EIO: set_nonblocking() returns mq_setattr's error as \
                 QueueError::Attributes with its errno",
                if extra.is_empty() {
                    "no flags".to_string()
                } else {
                    extra.join(" ")
                },
                said(&answer)
            )));
        }
        Ok(())
    })();
    let _ = mq_close(queue);
    let _ = mq_unlink(name.as_str());
    outcome
}

/// The answer of `proc` once its call was made to fail: `None` if it was `failed` with kind=mq-attr
/// and `EIO`, or if the call was never made (other checks judge a program that makes none).
/// A program still at `ready` (a consumer that reported its queue anyway) is ended.
fn judged(proc: &mut Proc, mut tracer: Tracer) -> Result<Option<ipc_labs_driver::Message>, Fail> {
    let answer = proc.recv_any();
    let failed = tracer.failed_before(Instant::now() + Duration::from_millis(100))?;
    drop(tracer);
    let answer = answer?;
    if answer.kind == "ready" {
        proc.kill_tree();
    } else {
        release(proc)?;
    }
    let right = failed_with(&answer, "mq-attr") && failed_errno(&answer, "EIO");
    Ok((failed && !right).then_some(answer))
}

/// What a wrong answer to a failed `mq_getattr()` tells of the program.
fn hint(answer: &ipc_labs_driver::Message) -> String {
    if answer.kind == "failed" {
        return format!(": {GETATTR_RULE}");
    }
    format!(
        ": it answered attributes though mq_getattr failed, so it answers values it kept from \
         an earlier call (at open, or a sample before) instead of the kernel's error. \
         {GETATTR_RULE}"
    )
}
