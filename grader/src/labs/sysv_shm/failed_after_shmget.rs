//! A publisher that fails after its `shmget()` made the segment leaves nothing behind, whichever
//! call fails: not only `shmat()`, whose failure the lab names, but any call the program makes
//! of its own between the segment's creation and `ready` (an `IPC_STAT` to learn the size "as
//! the kernel knows it", say). Nobody else knows the new segment is not a publication.

use crate::engine::tracer::{Call, Match, Step, Tracer};
use crate::engine::{Fail, Run};

use super::injected::shmget_creating;
use super::protocol::{expect, fresh_name, spawn_publisher, with_context};
use super::segments::{rmid, segment};

/// `shmctl()` with any command but `IPC_RMID`: what a program may ask of the segment it made
/// (the command's low 8 bits; glibc may add flags above them).
const ASKING_SHMCTL: &[Call] = &[
    shmctl(libc::IPC_STAT),
    shmctl(libc::IPC_SET),
    // SHM_STAT and SHM_STAT_ANY, which the libc crate does not name.
    shmctl(13),
    shmctl(15),
    shmctl(libc::SHM_LOCK),
];

const fn shmctl(command: i32) -> Call {
    Call {
        number: libc::SYS_shmctl,
        matching: Match::Bits {
            arg: 1,
            mask: 0xff,
            value: command as u64,
        },
    }
}

/// The publisher's first `shmctl()` other than a removal after its creating `shmget()`, made
/// to fail (`EACCES`): if it makes one and fails for it, it must say `shmctl` and leave no
/// segment. One that makes none is judged by the other failures. `false` if the grader may not
/// trace the program.
pub fn shmctl_failing_after_creation(run: &mut Run) -> Result<bool, Fail> {
    let name = fresh_name(run)?;
    let payload = run.random_bytes(100);
    let mut proc = spawn_publisher(run, &name.path, name.id, 4096, 47, &payload)?;
    let created = Call {
        number: libc::SYS_shmget,
        matching: shmget_creating(true),
    };
    let asking = Call {
        number: libc::SYS_shmctl,
        matching: Match::AnyOf(ASKING_SHMCTL),
    };
    let steps = [(created, Step::Pass), (asking, Step::Fail(libc::EACCES))];
    let pid = proc.pid.as_raw();
    let Some(mut tracer) = Tracer::in_turn(pid, steps)? else {
        proc.kill_tree();
        return Ok(false);
    };
    proc.send("go", &[])?;
    let context = "with the publisher's first shmctl() after its shmget() had created the \
                   segment (IPC_STAT, IPC_SET, ...: any but IPC_RMID) made to fail (EACCES)";
    let message = proc.recv_any().map_err(with_context(context));
    let made_to_fail = message.is_ok() && tracer.failed_the_call()?;
    drop(tracer);
    let message = match message {
        Ok(message) if message.kind == "ready" => {
            // No such call, or its failure did not matter to it: a publication as any other.
            proc.send("go", &[])?;
            let done = expect(&mut proc, "publisher", "done");
            proc.kill_tree();
            segment(name.key).into_iter().for_each(|s| rmid(s.id));
            done.map_err(with_context(context))?;
            return Ok(true);
        }
        other => other,
    };
    // Exited, its segments are what it leaves.
    let _ = proc.wait();
    let left = segment(name.key);
    left.iter().for_each(|s| rmid(s.id));
    let message = message?;
    let kind = message.get("kind").unwrap_or("none");
    let error = message.get("error").unwrap_or("");
    match left {
        Some(left) if left.creator == pid => Err(Fail::failed(format!(
            "{context}, the publisher said `{}` (kind={kind}: {error}) but left segment {} \
             (key {:#x}), which its own shmget() had made, behind as it exited: it returned \
             the error of a call made after shmget() without removing the new segment (a `?` \
             after shmget(), the removal only on shmat()'s failure); a publisher that fails \
             leaves nothing, so remove the segment on every error path after shmget()",
            message.kind, left.id, left.key
        ))),
        _ if made_to_fail && kind != "shmctl" => Err(Fail::failed(format!(
            "{context}, the publisher said `{}` (kind={kind}: {error}), the lab wants \
             kind=shmctl: a failing shmctl() is ShmError::Control",
            message.kind
        ))),
        _ if message.kind == "failed" && made_to_fail => Ok(true),
        _ => Err(Fail::failed(format!(
            "{context}, the publisher said `{}` (kind={kind}: {error}), the lab wants `ready`: \
             no call of it was made to fail",
            message.kind
        ))),
    }
}
