//! What a create leaves its own process holding. Each step of `Segment::create` after
//! `shm_open()` made to fail (`ftruncate()` and `mmap()` with ptrace; the first, then the second
//! `sem_init()`, with a breakpoint that makes it return -1): the step's kind, the name gone, and,
//! with the program stopped at its `exit_group()`, no descriptor or mapping of the object left.
//! And a pool's creator, once its pool is made, holds none of its segments: the pool is ids on a
//! queue; a pair maps segment `id` for its transfer.

use std::time::{Duration, Instant};

use ipc_labs_driver::Message;

use super::layout::MIN_SEGMENT;
use super::observe::{dev_shm, object_descriptor};
use super::pool::PoolNames;
use super::transfer::said;
use crate::engine::tracer::{AT_CALL, Breakpoint, Call, Step, Tracer};
use crate::engine::{Fail, Proc, Run, force};

/// How a step is made to fail.
enum Failing {
    /// A system call, with ptrace, then the program held at its `exit_group()`.
    Call(Tracer),
    /// The `nth` (from 1) call of `sem_init()`, made to return -1 at a breakpoint; the program
    /// also stops at its `exit_group()`.
    SemInit(Tracer, usize),
}

/// A sender whose create is made to fail at one step.
struct FailedStep {
    sender: Proc,
    name: String,
    failing: Failing,
    /// The step, in words, and the kind its failure must be.
    step: &'static str,
    kind: &'static str,
}

/// What the sender said, and what it still held of the object when it exited: its
/// descriptors and mappings of it (`None`: the grader did not see it exit).
struct Outcome {
    said: Message,
    /// Whether the step was made to fail at all.
    failed: bool,
    held: Option<Vec<String>>,
}

pub fn failed_steps_leave_nothing(run: &mut Run) -> Result<(), Fail> {
    let mut senders = Vec::new();
    let exiting = Call::any(libc::SYS_exit_group);
    for (tag, call, errno, step, kind) in [
        (
            "held-trunc",
            Call::any(libc::SYS_ftruncate),
            libc::EIO,
            "ftruncate() (made to fail with EIO, ptrace)",
            "ftruncate",
        ),
        (
            "held-map",
            Call::flag_set(libc::SYS_mmap, 3, libc::MAP_SHARED as u64),
            libc::ENODEV,
            "mmap(MAP_SHARED) (made to fail with ENODEV, ptrace)",
            "mmap",
        ),
    ] {
        let name = run.ipc_name(tag);
        let mut sender = run.spawn_stopped(&sender_args(&name))?;
        sender.set_roles(|_| "the sender".into());
        let pid = sender.pid.as_raw();
        let steps = [(call, Step::Fail(errno)), (exiting, Step::Hold)];
        let Some(tracer) = Tracer::in_turn(pid, steps)? else {
            sender.kill_tree();
            return abandon(senders);
        };
        force::resume(pid)?;
        senders.push(FailedStep {
            sender,
            name,
            failing: Failing::Call(tracer),
            step,
            kind,
        });
    }
    for (nth, step) in [
        (
            1,
            "first sem_init() (made to return -1 at a breakpoint, ptrace)",
        ),
        (
            2,
            "second sem_init() (made to return -1 at a breakpoint, ptrace)",
        ),
    ] {
        let name = run.ipc_name(&format!("held-init{nth}"));
        let mut sender = run.spawn_stopped(&sender_args(&name))?;
        sender.set_roles(|_| "the sender".into());
        let Some(tracer) = Tracer::break_from_main_and_call(&mut sender, &[c"sem_init"], exiting)?
        else {
            sender.kill_tree();
            let _ = nix::sys::mman::shm_unlink(name.as_str());
            return abandon(senders);
        };
        senders.push(FailedStep {
            sender,
            name,
            failing: Failing::SemInit(tracer, nth),
            step,
            kind: "semaphore",
        });
    }
    let mut judged = Ok(());
    for failed in senders {
        let name = failed.name.clone();
        let pid = failed.sender.pid;
        let outcome = failed.follow();
        judged = judged.and_then(|()| {
            outcome
                .and_then(|(step, kind, outcome)| judge(&name, pid.as_raw(), step, kind, &outcome))
        });
        let _ = nix::sys::mman::shm_unlink(name.as_str());
    }
    judged
}

/// Ends the senders started so far (tracing is not allowed here: the check does without).
fn abandon(senders: Vec<FailedStep>) -> Result<(), Fail> {
    for failed in senders {
        failed.sender.kill_tree();
        let _ = nix::sys::mman::shm_unlink(failed.name.as_str());
    }
    Ok(())
}

fn sender_args(name: &str) -> Vec<String> {
    let size = MIN_SEGMENT.to_string();
    [
        "send", "--name", name, "--size", &size, "--seed", "1", "--lens", "0",
    ]
    .map(String::from)
    .to_vec()
}

/// What `pid` holds of the object `name`: a descriptor, mappings (from /proc/PID/maps).
pub(super) fn held_of(pid: i32, name: &str) -> Vec<String> {
    let path = dev_shm(name).display().to_string();
    let mut held: Vec<String> = object_descriptor(pid, name)
        .map(|fd| format!("descriptor {fd} (/proc/{pid}/fd/{fd} -> {path})"))
        .into_iter()
        .collect();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    held.extend(
        maps.lines()
            .filter(|line| line.contains(&format!("{path} ")) || line.ends_with(&path))
            .map(|line| {
                format!(
                    "a mapping ({})",
                    line.split_whitespace().next().unwrap_or("")
                )
            }),
    );
    held
}

impl FailedStep {
    /// Lets the sender run to what it says, making its step fail, and looks at what it holds
    /// as it exits.
    fn follow(self) -> Result<(&'static str, &'static str, Outcome), Fail> {
        let FailedStep {
            mut sender,
            name,
            failing,
            step,
            kind,
        } = self;
        let pid = sender.pid.as_raw();
        let outcome = match failing {
            Failing::Call(mut tracer) => {
                let said = sender.recv_any()?;
                let failed = tracer.failed_before(Instant::now() + Duration::from_secs(2))?;
                let exiting = said.kind == "failed"
                    && tracer.held_before(Instant::now() + Duration::from_secs(3))?;
                let held = exiting.then(|| held_of(pid, &name));
                tracer.release();
                Outcome { said, failed, held }
            }
            Failing::SemInit(mut tracer, nth) => {
                let (said, failed, held) = fail_sem_init(&mut sender, &mut tracer, nth, &name)?;
                drop(tracer);
                Outcome { said, failed, held }
            }
        };
        if outcome.said.kind == "failed" {
            let _ = sender.wait();
        } else {
            sender.kill_tree();
        }
        Ok((step, kind, outcome))
    }
}

/// Runs the sender from breakpoint to breakpoint, making its `nth` `sem_init()` return -1,
/// until it has said something and, if that was `failed`, reached its `exit_group()`.
fn fail_sem_init(
    sender: &mut Proc,
    tracer: &mut Tracer,
    nth: usize,
    name: &str,
) -> Result<(Message, bool, Option<Vec<String>>), Fail> {
    let pid = sender.pid.as_raw();
    let until = Instant::now() + Duration::from_secs(5);
    let (mut said, mut calls, mut held) = (None, 0, None);
    loop {
        match tracer.next_break(Instant::now() + Duration::from_millis(5))? {
            Some(Breakpoint::At(_)) if tracer.last_break() == AT_CALL => {
                held = Some(held_of(pid, name));
                tracer.go_on();
            }
            Some(Breakpoint::At(_)) => {
                calls += 1;
                if calls == nth {
                    tracer.return_now(-1);
                } else {
                    tracer.go_on();
                }
            }
            Some(Breakpoint::Armed) | None => {}
            Some(Breakpoint::Lost | Breakpoint::Unavailable) => break,
        }
        if said.is_none() {
            said = sender.recv_before(Instant::now())?;
        }
        let done = match &said {
            Some(message) => message.kind != "failed" || held.is_some(),
            None => false,
        };
        if done || Instant::now() >= until {
            break;
        }
    }
    let said = match said {
        Some(said) => said,
        None => sender.recv_any()?,
    };
    Ok((said, calls >= nth, held))
}

fn judge(name: &str, pid: i32, step: &str, kind: &str, outcome: &Outcome) -> Result<(), Fail> {
    if !outcome.failed {
        // It said something before the step, or never made it: judged elsewhere.
        return Ok(());
    }
    let path = dev_shm(name);
    let asked = format!(
        "creating a segment of {MIN_SEGMENT} bytes ({}), the grader made its {step} fail",
        path.display()
    );
    let answer = &outcome.said;
    if answer.kind != "failed" || answer.get("kind") != Some(kind) {
        let said = said(answer);
        let why = if answer.kind == "ready" && kind == "semaphore" {
            ": create() ignored sem_init()'s result and handed out a segment whose semaphore \
             was never initialized. Check each sem_init(): -1 is TransferError::Semaphore, and \
             the name is unlinked again, as for any step after shm_open()"
        } else {
            ""
        };
        return Err(Fail::failed(format!(
            "{asked}, and the sender (pid {pid}) said {said}: this must be kind={kind}{why}"
        )));
    }
    if path.exists() {
        return Err(Fail::failed(format!(
            "{asked}; the sender said kind={kind}, rightly, but left {} behind: when a step \
             after shm_open() fails, create() unlinks the name again",
            path.display()
        )));
    }
    if let Some(held) = outcome.held.as_ref().filter(|held| !held.is_empty()) {
        return Err(Fail::failed(format!(
            "{asked}; the sender said kind={kind} and unlinked the name, rightly, but stopped by \
             the grader at its exit_group() it still held {}: create() releases what it made on \
             the failure path too (the descriptor closed, the mapping unmapped), not only once \
             the segment is mapped; a descriptor kept past an early return is lost to a \
             program that goes on, and a server that retries runs out of descriptors",
            held.join(", ")
        )));
    }
    Ok(())
}

/// A pool's creator, its pool made (`ready`): it holds no descriptor or mapping of any of its
/// segments (the pool is the ids on its queue; `Pool::send`/`receive` map a segment for a
/// transfer).
pub fn pool_creator_holds_no_segment(pool: &Proc, names: &PoolNames) -> Result<(), Fail> {
    let pid = pool.pid.as_raw();
    let held: Vec<(usize, Vec<String>)> = names
        .segments
        .iter()
        .enumerate()
        .map(|(id, name)| (id, held_of(pid, name)))
        .filter(|(_, held)| !held.is_empty())
        .collect();
    let Some((first, what)) = held.first() else {
        return Ok(());
    };
    let ids: Vec<String> = held.iter().map(|(id, _)| id.to_string()).collect();
    Err(Fail::failed(format!(
        "the creator of a pool of {} segments ({}, pid {pid}), its pool ready, still holds \
         segments {} (/proc/{pid}/maps and fd; segment {first}: {}). Pool::create keeps each \
         segment it made (a Segment kept in the pool, or leaked with mem::forget, never \
         unmapped): every segment's memory stays mapped in the creator for its whole life, \
         destroy() or not. Create each segment and drop it (dropping a Segment unmaps it; the \
         object lives on under its name): the pool holds ids, and a pair maps segment `id` in \
         Pool::send/receive for its transfer",
        names.segments.len(),
        names.prefix,
        ids.join(", "),
        what.join(", ")
    )))
}
