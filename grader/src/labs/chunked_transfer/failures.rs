//! Each call the API wraps made to fail, with ptrace, with an errno that no other path of the
//! program gives: the error must be that step's kind, carrying that errno, and what the failed
//! call leaves behind must be nothing it made (and everything that was there). A failure the
//! program predicts before the call (a size it judges too large) is never this one, so only a
//! clean-up that really runs after the failed step passes.

use std::time::{Duration, Instant};

use super::errors::GraderQueue;
use super::layout::{MIN_SEGMENT, Mapped, Sem};
use super::observe::dev_shm;
use super::pool::{PoolNames, destroy_pool, pool_args, pool_ready};
use super::transfer::said;
use crate::engine::audit::message_queue_exists;
use crate::engine::force;
use crate::engine::process::Limits;
use crate::engine::tracer::{Action, Call, Reached, Tracer};
use crate::engine::{Fail, Proc, Run};

/// One program, started stopped, whose `call` the tracer makes fail with `errno`.
struct Forced {
    proc: Proc,
    tracer: Tracer,
    /// What the program was asked, and which call failed how: the start of every message.
    asked: String,
    /// The kind the failure must be reported as, and the errno's name it must carry.
    kind: &'static str,
    errno: &'static str,
    /// Why that kind (the API's words).
    rule: &'static str,
    /// Names of segments and queues the program made or might have: none may be left.
    segments: Vec<String>,
    queues: Vec<String>,
    /// An object of the grader's that must still be there afterwards.
    kept: Option<String>,
    /// Why the program must make the call at all, where no other way is right (the
    /// `shm_open()` of the very name it was given); `None` where skipping it is judged
    /// elsewhere.
    required: Option<&'static str>,
}

/// glibc's `shm_open()` of `name`: its `openat()` of the name in `/dev/shm`.
fn opening(name: &str) -> Call {
    Call::opening(&dev_shm(name))
}

/// Starts `args` stopped and attaches a tracer that fails its first `call` with `errno`;
/// `None` if the machine does not allow tracing (the check does without).
fn start(
    run: &mut Run,
    args: &[&str],
    call: Call,
    errno: i32,
) -> Result<Option<(Proc, Tracer)>, Fail> {
    let proc = run.spawn_stopped(args)?;
    let pid = proc.pid.as_raw();
    let Some(tracer) = Tracer::attach(pid, call, Action::Fail(errno))? else {
        proc.kill_tree();
        return Ok(None);
    };
    force::resume(pid)?;
    Ok(Some((proc, tracer)))
}

pub fn forced_failures(run: &mut Run) -> Result<(), Fail> {
    let mut forced = Vec::new();
    let size = MIN_SEGMENT.to_string();
    let send = |name: &str| {
        vec![
            "send".to_string(),
            "--name".into(),
            name.into(),
            "--size".into(),
            size.clone(),
            "--seed".into(),
            "1".into(),
            "--lens".into(),
            "0".into(),
        ]
    };
    // Segment::create, a step after shm_open() at a time: ftruncate() (EIO), mmap() (ENODEV);
    // and shm_open() itself (EMFILE: out of descriptors, which the kernel reports before it
    // looks the name up), on a name an object of the grader's has: a failed shm_open() made
    // nothing, so the clean-up of the later steps must not run.
    let creates: [(&str, Call, i32, &str, &str, &str); 3] = [
        (
            "trunc",
            Call::any(libc::SYS_ftruncate),
            libc::EIO,
            "EIO",
            "ftruncate() of the new segment",
            "ftruncate",
        ),
        (
            "map",
            Call::flag_set(libc::SYS_mmap, 3, libc::MAP_SHARED as u64),
            libc::ENODEV,
            "ENODEV",
            "mmap(MAP_SHARED) of the new segment",
            "mmap",
        ),
        (
            "open",
            Call::any(0),
            libc::EMFILE,
            "EMFILE",
            "shm_open() (its openat() of the name)",
            "shm-open",
        ),
    ];
    let mut objects = Vec::new();
    for (tag, call, errno, errno_name, step, kind) in creates {
        let name = run.ipc_name(&format!("forced-{tag}"));
        let opens = kind == "shm-open";
        let call = if opens {
            objects.push(Mapped::create(run, &name, MIN_SEGMENT, true)?);
            opening(&name)
        } else {
            call
        };
        let args = send(&name);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let Some((mut proc, tracer)) = start(run, &args, call, errno)? else {
            abandon(&forced);
            if opens {
                let _ = nix::sys::mman::shm_unlink(name.as_str());
            }
            return Ok(());
        };
        proc.set_roles(|_| "the sender".into());
        forced.push(Forced {
            proc,
            tracer,
            asked: format!(
                "creating a segment of {size} bytes ({}{}), with the grader making its {step} \
                 fail with {errno_name} (with ptrace)",
                dev_shm(&name).display(),
                if opens {
                    ", a name an object of the grader's has"
                } else {
                    ""
                }
            ),
            kind,
            errno: errno_name,
            rule: match kind {
                "ftruncate" => "a failed ftruncate() is TransferError::Truncate",
                "mmap" => "a failed mmap() is TransferError::Map",
                _ => "a shm_open() failure other than EEXIST is TransferError::Open",
            },
            required: (kind == "shm-open").then_some(
                "Segment::create makes the segment with shm_open(name, O_CREAT | O_EXCL | \
                 O_RDWR, 0600) of the very name it was given: O_EXCL on that name is what \
                 refuses one that exists, and nothing is made under a name of its own",
            ),
            segments: if opens {
                Vec::new()
            } else {
                vec![name.clone()]
            },
            queues: Vec::new(),
            kept: opens.then_some(name),
        });
    }
    // Segment::open of a segment that exists, whose shm_open() fails with EACCES (another
    // user's segment, a mode that forbids): not NotFound, the name is there.
    let name = run.ipc_name("forced-denied");
    let object = Mapped::create(run, &name, MIN_SEGMENT, true)?;
    let call = opening(&name);
    let args = super::headers::one_message_receiver(&name, 1000);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let Some((mut proc, tracer)) = start(run, &args, call, libc::EACCES)? else {
        abandon(&forced);
        let _ = nix::sys::mman::shm_unlink(name.as_str());
        return Ok(());
    };
    proc.set_roles(|_| "the receiver".into());
    forced.push(Forced {
        proc,
        tracer,
        asked: format!(
            "opening the existing segment {} (the grader's), with the grader making its \
             shm_open() fail with EACCES (with ptrace), as a segment of another user or of mode \
             0400 does",
            dev_shm(&name).display()
        ),
        kind: "shm-open",
        errno: "EACCES",
        rule: "only ENOENT is TransferError::NotFound; any other shm_open() failure is \
               TransferError::Open with its errno: the segment is there, it cannot be opened",
        required: Some(
            "Segment::open opens the segment with shm_open() of its name, O_RDWR, no O_CREAT",
        ),
        segments: Vec::new(),
        queues: Vec::new(),
        kept: Some(name),
    });
    // unlink() of a segment that exists, in `recv` once it has it open, whose shm_unlink()
    // fails with EACCES (another user's name in the sticky /dev/shm: glibc reports the
    // kernel's EPERM as EACCES): not NotFound, the name is there.
    let name = run.ipc_name("forced-kept");
    let undeletable = Mapped::create(run, &name, MIN_SEGMENT, true)?;
    let call = Call::unlinking(&dev_shm(&name));
    let args = super::headers::one_message_receiver(&name, 1000);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let Some((mut proc, tracer)) = start(run, &args, call, libc::EACCES)? else {
        abandon(&forced);
        let _ = nix::sys::mman::shm_unlink(name.as_str());
        return Ok(());
    };
    proc.set_roles(|_| "the receiver".into());
    forced.push(Forced {
        proc,
        tracer,
        asked: format!(
            "opening the existing segment {} (the grader's), with the grader making its \
             shm_unlink() fail with EACCES (with ptrace), as a name of another user in the \
             sticky /dev/shm does",
            dev_shm(&name).display()
        ),
        kind: "shm-unlink",
        errno: "EACCES",
        rule: "only ENOENT is TransferError::NotFound; any other shm_unlink() failure is \
               TransferError::Unlink with its errno: the name is there, it cannot be removed",
        required: None,
        segments: Vec::new(),
        queues: Vec::new(),
        kept: Some(name),
    });
    // Pool::create: the creating mq_open() (ENOSPC: the system's queues_max), then the
    // mq_send() of an id (EIO): nothing of the pool may be left.
    for (tag, call, errno, errno_name, step) in [
        (
            "qfull",
            Call::flag_set(libc::SYS_mq_open, 1, libc::O_CREAT as u64),
            libc::ENOSPC,
            "ENOSPC",
            "creating mq_open() of the free queue",
        ),
        (
            "qsend",
            Call::any(libc::SYS_mq_timedsend),
            libc::EIO,
            "EIO",
            "first mq_send() of an id",
        ),
    ] {
        let names = PoolNames::new(run, &format!("forced-{tag}"), 2);
        let Some((mut proc, tracer)) = start(
            run,
            &[
                "pool",
                "--prefix",
                &names.prefix,
                "--count",
                "2",
                "--size",
                &size,
            ],
            call,
            errno,
        )?
        else {
            abandon(&forced);
            return Ok(());
        };
        proc.set_roles(|_| "the pool's creator".into());
        forced.push(Forced {
            proc,
            tracer,
            asked: format!(
                "creating a pool of 2 segments ({}), with the grader making its {step} fail \
                 with {errno_name} (with ptrace)",
                names.prefix
            ),
            kind: "mqueue",
            errno: errno_name,
            rule: "a failed message queue call is TransferError::Queue, and a create() that \
                   fails part-way removes what it made",
            required: None,
            segments: names.segments.clone(),
            queues: vec![names.queue.clone()],
            kept: None,
        });
    }
    // Pool::open of a pool that exists, whose mq_open() fails with EACCES (another user's
    // queue of mode 0600), then EMFILE (out of descriptors): not NotFound, the queue is there.
    let mut queues: Vec<(GraderQueue, String)> = Vec::new();
    for (tag, errno, errno_name, why) in [
        (
            "qdenied",
            libc::EACCES,
            "EACCES",
            "as another user's queue of mode 0600 does",
        ),
        (
            "qfiles",
            libc::EMFILE,
            "EMFILE",
            "as a process out of descriptors sees",
        ),
    ] {
        let names = PoolNames::new(run, &format!("forced-{tag}"), 1);
        queues.push((GraderQueue::create(&names.queue)?, names.queue.clone()));
        let Some((mut proc, tracer)) = start(
            run,
            &[
                "pair",
                "--prefix",
                &names.prefix,
                "--index",
                "1",
                "--seed",
                "1",
                "--len",
                "0",
            ],
            Call::any(libc::SYS_mq_open),
            errno,
        )?
        else {
            abandon(&forced);
            remove_queues(queues);
            return Ok(());
        };
        proc.set_roles(|_| "the pair".into());
        forced.push(Forced {
            proc,
            tracer,
            asked: format!(
                "opening the existing pool {} (its free queue {} the grader's), with the grader \
                 making its mq_open() fail with {errno_name} (with ptrace), {why}",
                names.prefix, names.queue
            ),
            kind: "mqueue",
            errno: errno_name,
            rule: "only ENOENT is TransferError::NotFound; any other mq_open() failure of \
                   Pool::open is TransferError::Queue with its errno: the pool is there, it \
                   cannot be opened",
            required: None,
            segments: Vec::new(),
            queues: Vec::new(),
            kept: None,
        });
    }
    let outcome = forced.iter_mut().try_for_each(judge);
    abandon(&forced);
    drop(objects);
    drop(object);
    drop(undeletable);
    remove_queues(queues);
    outcome
}

/// Removes the grader's own queues.
fn remove_queues(queues: Vec<(GraderQueue, String)>) {
    for (queue, name) in queues {
        drop(queue);
        let _ = nix::mqueue::mq_unlink(name.as_str());
    }
}

/// Ends the programs and removes what they may have left.
fn abandon(forced: &[Forced]) {
    for forced in forced {
        forced.proc.kill_tree();
        for name in &forced.segments {
            let _ = nix::sys::mman::shm_unlink(name.as_str());
        }
        for name in &forced.queues {
            let _ = nix::mqueue::mq_unlink(name.as_str());
        }
        if let Some(name) = &forced.kept {
            let _ = nix::sys::mman::shm_unlink(name.as_str());
        }
    }
}

fn judge(forced: &mut Forced) -> Result<(), Fail> {
    let answer = forced.proc.recv_any()?;
    let asked = &forced.asked;
    if !forced.tracer.failed_the_call()? {
        match forced.required {
            Some(rule) => {
                return Err(Fail::failed(format!(
                    "{asked}, the program never made that call, and said `{}`: {rule}",
                    answer.kind
                )));
            }
            // Skipping it is judged elsewhere.
            None if answer.kind != "failed" => return Ok(()),
            None => {}
        }
    }
    let (kind, errno) = (forced.kind, forced.errno);
    let error = answer.get("error").unwrap_or("");
    if answer.kind != "failed" || answer.get("kind") != Some(kind) || !error.contains(errno) {
        let said = said(&answer);
        return Err(Fail::failed(format!(
            "{asked}, the program said {said}: this must be kind={kind} with {errno} ({})",
            forced.rule
        )));
    }
    let _ = forced.proc.wait();
    let mut left: Vec<String> = forced
        .segments
        .iter()
        .filter(|name| dev_shm(name).exists())
        .map(|name| dev_shm(name).display().to_string())
        .collect();
    left.extend(
        forced
            .queues
            .iter()
            .filter(|name| message_queue_exists(name))
            .map(|name| format!("the queue {name}")),
    );
    if !left.is_empty() {
        return Err(Fail::failed(format!(
            "{asked}, the program said kind={kind} ({errno}), rightly, but left {}: when a \
             step fails after an object was made, remove what this call made (shm_unlink() the \
             segment, mq_unlink() the queue) before returning the error. A failure predicted \
             before the call (a size judged too large) is not this one: the clean-up must run \
             on a real failure",
            left.join(", ")
        )));
    }
    if let Some(name) = &forced.kept
        && !dev_shm(name).exists()
    {
        return Err(Fail::failed(format!(
            "{asked}, the program said kind={kind}, rightly, but the grader's segment {} is \
             gone: the program removed it. A failed call removes nothing it did not make: a \
             shm_open() that failed made nothing (only a step after it, ftruncate() or mmap(), \
             leaves a name of this call's to unlink), and the name may be another's",
            dev_shm(name).display()
        )));
    }
    Ok(())
}

/// Two creates of one pool at once: the program is held at its creating `mq_open()` of the free
/// queue (after any look it took at whether the queue exists), and the grader makes the queue
/// then, as another pool's creator could. Only `O_CREAT | O_EXCL` in that very call refuses it:
/// kind=exists, the grader's queue untouched, no segment made.
pub fn queue_made_meanwhile(run: &mut Run) -> Result<(), Fail> {
    let names = PoolNames::new(run, "raced", 2);
    let size = MIN_SEGMENT.to_string();
    let mut proc = run.spawn_stopped(&[
        "pool",
        "--prefix",
        &names.prefix,
        "--count",
        "2",
        "--size",
        &size,
    ])?;
    proc.set_roles(|_| "the pool's creator".into());
    let pid = proc.pid.as_raw();
    let call = Call::flag_set(libc::SYS_mq_open, 1, libc::O_CREAT as u64);
    let Some(mut tracer) = Tracer::attach(pid, call, Action::Hold)? else {
        proc.kill_tree();
        return Ok(());
    };
    force::resume(pid)?;
    let reached = tracer.wait(&mut proc, Instant::now() + Duration::from_secs(5));
    let cleanup = |proc: &Proc| {
        proc.kill_tree();
        for name in &names.segments {
            let _ = nix::sys::mman::shm_unlink(name.as_str());
        }
        let _ = nix::mqueue::mq_unlink(names.queue.as_str());
    };
    match reached {
        Ok(Reached::Call) => {}
        Ok(Reached::Passed(_)) => {
            // It said something first, or created no queue (judged elsewhere).
            drop(tracer);
            cleanup(&proc);
            return Ok(());
        }
        Err(error) => {
            drop(tracer);
            cleanup(&proc);
            return Err(error);
        }
    }
    let queue = GraderQueue::create(&names.queue);
    tracer.release();
    let queue = match queue {
        Ok(queue) => queue,
        Err(error) => {
            cleanup(&proc);
            return Err(error);
        }
    };
    let answer = proc.recv_any();
    let same = queue.untouched() && message_queue_exists(&names.queue);
    let segments: Vec<&String> = names
        .segments
        .iter()
        .filter(|name| dev_shm(name).exists())
        .collect();
    let segments = format!("{segments:?}");
    cleanup(&proc);
    drop(queue);
    let answer = answer?;
    let asked = format!(
        "the grader held a pool's creator at its creating mq_open() of the free queue {} (with \
         ptrace, after any look it took at the name) and made that queue itself meanwhile, as \
         a second pool's creator started at the same moment could",
        names.queue
    );
    if answer.kind != "failed" || answer.get("kind") != Some("exists") {
        let said = said(&answer);
        return Err(Fail::failed(format!(
            "{asked}; then the program said {said}: this must fail with TransferError::Exists \
             (kind=exists). Its create did not refuse a queue that exists: it opens the queue \
             without O_EXCL (a look first, then O_CREAT alone, leaves a gap in which another \
             process makes the queue, and both pools then share it). Create the queue with \
             O_CREAT | O_EXCL and let EEXIST say it is taken"
        )));
    }
    if !same || segments != "[]" {
        return Err(Fail::failed(format!(
            "{asked}; the program said kind=exists, rightly, but {}: a refused create() \
             touches nothing that was there and leaves nothing of its own",
            if same {
                format!("left {segments}")
            } else {
                "the grader's queue is gone or changed".to_string()
            }
        )));
    }
    Ok(())
}

/// A pool's creator held (ptrace) at its first `mq_send()` of an id, id 0: an id on the queue is
/// free for any pair to take, so segment 0 must exist by then, of the pool's size, its
/// semaphores initialized (`empty` 2, `full` 0).
pub fn ids_after_their_segments(run: &mut Run) -> Result<(), Fail> {
    let names = PoolNames::new(run, "ordered", 2);
    let args = pool_args(&names, MIN_SEGMENT)?;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut proc = run.spawn_stopped(&args)?;
    proc.set_roles(|_| "the pool's creator".into());
    let pid = proc.pid.as_raw();
    let Some(mut tracer) = Tracer::attach(pid, Call::any(libc::SYS_mq_timedsend), Action::Hold)?
    else {
        proc.kill_tree();
        return Ok(());
    };
    force::resume(pid)?;
    let reached = tracer.wait(&mut proc, Instant::now() + Duration::from_secs(5));
    // What segment 0 is at the first id's send: missing, its size, its semaphores' values.
    let first = &names.segments[0];
    let segment = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev_shm(first))
        .ok()
        .and_then(|file| Some((file.metadata().ok()?.len(), file)))
        .map(|(len, file)| {
            let values = (len == MIN_SEGMENT as u64)
                .then(|| Mapped::open(&file, MIN_SEGMENT).ok())
                .flatten()
                .map(|mapped| (mapped.value(Sem::Empty), mapped.value(Sem::Full)));
            (len, values)
        });
    let outcome = match reached {
        Ok(Reached::Call) => {
            tracer.release();
            pool_ready(&mut proc, &names, MIN_SEGMENT)
        }
        // It said something first, or sent no id (judged elsewhere).
        Ok(Reached::Passed(_)) => {
            drop(tracer);
            proc.kill_tree();
            names.remove();
            return Ok(());
        }
        Err(error) => Err(error),
    };
    let asked = format!(
        "the grader held a pool's creator (a pool of 2 segments of {MIN_SEGMENT} bytes, \
         {}) at its first mq_send() of an id to the free queue (with ptrace)",
        names.prefix
    );
    let wrong = match segment {
        None => Some(format!("segment 0 ({first}) did not exist yet")),
        Some((len, _)) if len != MIN_SEGMENT as u64 => Some(format!(
            "segment 0 ({first}) was {len} bytes, not {MIN_SEGMENT} yet"
        )),
        Some((_, Some((2, 0)))) => None,
        Some((_, Some((empty, full)))) => Some(format!(
            "segment 0's semaphores were not initialized yet (empty {empty}, full {full}, \
             where sem_init() leaves 2 and 0)"
        )),
        Some((_, None)) => Some("segment 0 could not be mapped".into()),
    };
    let outcome = outcome.and_then(|()| match wrong {
        Some(wrong) => Err(Fail::failed(format!(
            "{asked}: {wrong}. An id on the queue is free for any pair to take at once: a pair \
             that opened the pool then would find no segment (not-found) or one whose \
             semaphores sem_init() resets under it. Create and initialize the segments first, \
             then put their ids on the queue (or each id right after its own segment)"
        ))),
        None => Ok(()),
    });
    match outcome {
        Ok(()) => destroy_pool(&mut proc, &names, "after the pool was created", 2),
        Err(fail) => {
            proc.kill_tree();
            names.remove();
            Err(fail)
        }
    }
}

/// A sender asked for a segment whose `ftruncate()` (2^63 bytes: more than an `off_t` holds) or
/// `mmap()` (the programs' whole address space) fails, its `shm_open()` counted (ptrace): the
/// step's kind, met after the segment was made, not predicted from the size, and the name gone
/// again.
pub struct HalfWay {
    sender: Proc,
    name: String,
    size: u64,
    step: &'static str,
    kind: &'static str,
    /// Counts the `shm_open()` of the name; `None` where the machine does not allow tracing.
    opens: Option<Tracer>,
}

impl HalfWay {
    pub fn start(run: &mut Run) -> Result<Vec<HalfWay>, Fail> {
        let address_space = Limits::for_user(run.program_user()).address_space;
        let mut half_way = Vec::new();
        for (size, step, kind) in [
            (1u64 << 63, "ftruncate()", "ftruncate"),
            (address_space, "mmap()", "mmap"),
        ] {
            let name = run.ipc_name(&format!("fails-{kind}"));
            let args = [
                "send",
                "--name",
                &name,
                "--size",
                &size.to_string(),
                "--seed",
                "1",
                "--lens",
                "0",
            ]
            .map(String::from);
            let mut sender = run.spawn_stopped(&args)?;
            sender.set_roles(|_| "the sender".into());
            let pid = sender.pid.as_raw();
            let opens = Tracer::count_calls(pid, opening(&name))?;
            force::resume(pid)?;
            half_way.push(HalfWay {
                sender,
                name,
                size,
                step,
                kind,
                opens,
            });
        }
        Ok(half_way)
    }

    /// Fails unless the sender said the step's kind, having made the call, and left no name.
    pub fn judge(&mut self) -> Result<(), Fail> {
        let HalfWay {
            size, step, kind, ..
        } = *self;
        let name = dev_shm(&self.name);
        let answer = self.sender.recv_any()?;
        let asked = format!(
            "asked for a segment of {size} bytes, whose {step} fails (after shm_open() has made \
             the name)"
        );
        if answer.kind != "failed" || answer.get("kind") != Some(kind) {
            let said = said(&answer);
            return Err(Fail::failed(format!(
                "{asked}, the sender said {said}: that step's error is kind={kind}"
            )));
        }
        let opened = match self.opens.take() {
            Some(opens) => Some(opens.failed_count(Instant::now() + Duration::from_secs(2))?),
            None => None,
        };
        self.sender.wait()?;
        if opened == Some(0) {
            let _ = nix::sys::mman::shm_unlink(self.name.as_str());
            return Err(Fail::failed(format!(
                "{asked}, the sender reported `failed` (kind={kind}), but the program never \
                 made that call: no shm_open() of the name it was given (its openat() of {}, \
                 traced with ptrace){}: the failure was not met on a segment of that name, but \
                 predicted from the size (or met on an object of another name). \
                 Segment::create makes the segment with shm_open(name, O_CREAT | O_EXCL | \
                 O_RDWR, 0600) of the very name it was given, sizes it (ftruncate()) and maps it \
                 (mmap()); the error is that of the step that failed, and the clean-up must run \
                 on a real failure, unlinking the name",
                name.display(),
                if name.exists() {
                    format!(", and left {}", name.display())
                } else {
                    String::new()
                }
            )));
        }
        if name.exists() {
            return Err(Fail::failed(format!(
                "{asked}, the sender reported `failed` (kind={kind}) but left {} behind: when a \
                 step after shm_open() fails, create() must unlink the name again",
                name.display()
            )));
        }
        Ok(())
    }
}
