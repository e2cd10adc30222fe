//! What a failed `Pool::create` leaves its own process holding. A pool of 3 whose first
//! `mq_send()` of an id (`EIO`), then one whose segment 1's `ftruncate()` (`EIO`), is made to
//! fail (ptrace): each must be its step's kind, and, with the creator stopped at its
//! `exit_group()`, it may hold no descriptor of its free queue and no descriptor or mapping of
//! a segment: the clean-up closes what it opened, not only unlinks the names.

use std::time::{Duration, Instant};

use super::held_after_create::held_of;
use super::layout::MIN_SEGMENT;
use super::pool::{PoolNames, pool_args};
use super::transfer::said;
use crate::engine::tracer::{Call, Step, Tracer};
use crate::engine::{Fail, Proc, Run, force};

/// A pool's creator, one step of its create made to fail.
struct FailingCreate {
    creator: Proc,
    tracer: Tracer,
    names: PoolNames,
    step: &'static str,
    kind: &'static str,
}

pub fn failed_pool_creates_hold_nothing(run: &mut Run) -> Result<(), Fail> {
    let exiting = (Call::any(libc::SYS_exit_group), Step::Hold);
    let ftruncate = Call::any(libc::SYS_ftruncate);
    let mut creates = Vec::new();
    for (tag, step, kind) in [
        (
            "held-qsend",
            "first mq_send() of an id (made to fail with EIO, ptrace)",
            "mqueue",
        ),
        (
            "held-qtrunc",
            "ftruncate() of segment 1 (made to fail with EIO, ptrace)",
            "ftruncate",
        ),
    ] {
        let names = PoolNames::new(run, tag, 3);
        let creator = run.spawn_stopped(&pool_args(&names, MIN_SEGMENT)?)?;
        let pid = creator.pid.as_raw();
        let tracer = if kind == "mqueue" {
            let sending = Call::any(libc::SYS_mq_timedsend);
            Tracer::in_turn(pid, [(sending, Step::Fail(libc::EIO)), exiting])?
        } else {
            Tracer::in_turn(
                pid,
                [
                    (ftruncate, Step::Pass),
                    (ftruncate, Step::Fail(libc::EIO)),
                    exiting,
                ],
            )?
        };
        let Some(tracer) = tracer else {
            creator.kill_tree();
            names.remove();
            for create in creates {
                let FailingCreate { creator, names, .. } = create;
                creator.kill_tree();
                names.remove();
            }
            return Ok(());
        };
        force::resume(pid)?;
        creates.push(FailingCreate {
            creator,
            tracer,
            names,
            step,
            kind,
        });
    }
    let mut judged = Ok(());
    for create in creates {
        judged = judged.and(create.judge());
    }
    judged
}

/// The descriptors of `pid` open on the message queue `queue`, its name unlinked or not.
fn queue_descriptors(pid: i32, queue: &str) -> Vec<String> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let unlinked = format!("{queue} (deleted)");
    fds.flatten()
        .filter_map(|fd| {
            let target = std::fs::read_link(fd.path()).ok()?;
            let target = target.to_str()?;
            (target == queue || target == unlinked).then(|| {
                let fd = fd.file_name().to_string_lossy().into_owned();
                format!("descriptor {fd} of the free queue (/proc/{pid}/fd/{fd} -> {target})")
            })
        })
        .collect()
}

impl FailingCreate {
    fn judge(mut self) -> Result<(), Fail> {
        let pid = self.creator.pid.as_raw();
        let answer = self.creator.recv_any()?;
        let failed = self
            .tracer
            .failed_before(Instant::now() + Duration::from_secs(2))?;
        let exiting = answer.kind == "failed"
            && self
                .tracer
                .held_before(Instant::now() + Duration::from_secs(3))?;
        let mut held = Vec::new();
        if exiting {
            held = queue_descriptors(pid, &self.names.queue);
            for (id, name) in self.names.segments.iter().enumerate() {
                held.extend(
                    held_of(pid, name)
                        .into_iter()
                        .map(|what| format!("segment {id}'s {what}")),
                );
            }
        }
        self.tracer.release();
        if answer.kind == "failed" {
            let _ = self.creator.wait();
        } else {
            self.creator.kill_tree();
        }
        self.names.remove();
        if !failed {
            // The step never came: judged elsewhere.
            return Ok(());
        }
        let (kind, step) = (self.kind, self.step);
        let asked = format!(
            "creating a pool of 3 segments ({}), the grader made its {step}",
            self.names.prefix
        );
        if answer.kind != "failed" || answer.get("kind") != Some(kind) {
            return Err(Fail::failed(format!(
                "{asked}, and the creator (pid {pid}) said {}: this must be kind={kind}, the \
                 failed step's error",
                said(&answer)
            )));
        }
        if !held.is_empty() {
            return Err(Fail::failed(format!(
                "{asked}; the creator said kind={kind}, rightly, but stopped by the grader at its \
                 exit_group() it still held {}: a create() that fails part-way releases what it \
                 opened as well as unlinking the names. nix's MqdT has no Drop: mq_close() the \
                 queue's descriptor on the failure path (or keep it in something that closes it \
                 when dropped, as the Pool does), and drop each segment made",
                held.join(", ")
            )));
        }
        Ok(())
    }
}
