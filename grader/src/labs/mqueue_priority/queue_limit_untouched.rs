//! The library never sets the process's `RLIMIT_MSGQUEUE`, not even for a moment: a limit
//! raised around `mq_open()` and put back after gets past the kernel's own check (this user's
//! queues together, `EMFILE`), which `/proc/PID/limits` at `ready` cannot show.

use std::time::{Duration, Instant};

use nix::sys::resource::{Resource, getrlimit};

use super::limits::consumer_args;
use super::protocol::{
    Consumer, failed_errno, failed_with, release, said, sized, spawn_consumer_stopped,
};
use crate::engine::tracer::{Call, Step, Tracer};
use crate::engine::{Fail, Run, force};

/// A `prlimit64()` of `RLIMIT_MSGQUEUE` with a new limit (not null), or a `setrlimit()` of it.
const SETS_QUEUE_LIMIT: Call = Call::any_of(&[
    Call::all_of(&[
        Call::arg_is(libc::SYS_prlimit64, 1, libc::RLIMIT_MSGQUEUE as u64),
        Call::pointed_flag_set(libc::SYS_prlimit64, 2, 0),
    ]),
    Call::arg_is(libc::SYS_setrlimit, 0, libc::RLIMIT_MSGQUEUE as u64),
]);

/// A consumer traced from its first instruction to `ready`: it makes no call that sets
/// `RLIMIT_MSGQUEUE`.
pub fn queue_limit_never_set(run: &mut Run) -> Result<(), Fail> {
    let Some(calls) = calls_of_a_consumer(run, "limit-untouched", SETS_QUEUE_LIMIT)? else {
        run.note("RLIMIT_MSGQUEUE never set: not checked (no ptrace)");
        return Ok(());
    };
    if calls > 0 {
        return Err(Fail::failed(format!(
            "from its start to its end the consumer set its RLIMIT_MSGQUEUE {calls} time(s) \
             (prlimit64 / setrlimit with a new limit, seen with ptrace): the library changed \
             the process's limit, if only for a while (raised to the hard limit around create()'s \
             mq_open() and put back after, say, which /proc/PID/limits at `ready` cannot show). \
             That gets past the kernel's check of all of this user's queues against the soft limit, whose \
             EMFILE is create()'s error (kind=mq-open). The library changes no limit of the \
             process: system_limits() only reads RLIMIT_MSGQUEUE with getrlimit()"
        )));
    }
    Ok(())
}

/// `mq_open()` with `O_CREAT`: create()'s, not a look-up.
const CREATING: Call = Call::flag_set(libc::SYS_mq_open, 1, libc::O_CREAT as u64);

/// A consumer whose creating `mq_open()` fails with `EMFILE` (ptrace), as it does once this
/// user's queues reach the soft `RLIMIT_MSGQUEUE`: it sets no limit to get past it, and says
/// `failed` with kind=mq-open and `EMFILE`. Its soft limit is put under the hard one first, so
/// that there is room to raise it.
pub fn queue_limit_kept_on_emfile(run: &mut Run) -> Result<(), Fail> {
    let name = run.ipc_name("emfile");
    let mut proc = spawn_consumer_stopped(run, &name)?;
    let pid = proc.pid.as_raw();
    let (soft, hard) = getrlimit(Resource::RLIMIT_MSGQUEUE)
        .map_err(|e| Fail::Grader(format!("getrlimit(RLIMIT_MSGQUEUE): {e}")))?;
    if soft >= hard && hard > 1 {
        // Unlimited: a MiB, far above the consumer's one small queue.
        let lowered = if hard == libc::RLIM_INFINITY {
            1 << 20
        } else {
            hard - 1
        };
        force::set_limit(
            pid,
            libc::RLIMIT_MSGQUEUE,
            lowered,
            hard,
            run.program_user(),
        )?;
    }
    let steps = [
        (CREATING, Step::Fail(libc::EMFILE)),
        (SETS_QUEUE_LIMIT, Step::Hold),
    ];
    let Some(mut tracer) = Tracer::in_turn(pid, steps)? else {
        proc.kill_tree();
        run.note("no ptrace here: a limit raised on EMFILE not tried");
        return Ok(());
    };
    force::resume(pid)?;
    if !tracer.failed_before(Instant::now() + Duration::from_secs(5))? {
        // No creating mq_open(): what the consumer did instead is judged by name-errors.
        drop(tracer);
        proc.kill_tree();
        return Ok(());
    }
    let answer = match proc.recv_before(Instant::now() + Duration::from_secs(2))? {
        Some(answer) => answer,
        None if tracer.held_before(Instant::now() + Duration::from_millis(10))? => {
            proc.kill_tree();
            return Err(Fail::failed(
                "the grader made the consumer's creating mq_open() fail with EMFILE (ptrace), \
                 the error this user's queues over the soft RLIMIT_MSGQUEUE give, and the \
                 consumer then set its RLIMIT_MSGQUEUE (prlimit64 / setrlimit with a new \
                 limit; the grader held it there): create() raises the limit to get past the \
                 kernel's refusal. That refusal is create()'s error, kind=mq-open with EMFILE; \
                 the library changes no limit of the process, not even for a moment",
            ));
        }
        None => proc.recv_any()?,
    };
    drop(tracer);
    if answer.kind == "ready" {
        super::protocol::shut_down(run, &name)?;
        proc.send("go", &[])?;
        let _ = proc.recv_any()?;
        release(&mut proc)?;
        return Err(Fail::failed(format!(
            "the grader made the consumer's creating mq_open() fail with EMFILE (ptrace), the \
             error this user's queues over the soft RLIMIT_MSGQUEUE give, and it said {} all \
             the same: create() got past the refusal another way (a second mq_open(), other \
             attributes). mq_open()'s EMFILE is create()'s error, kind=mq-open with EMFILE",
            said(&answer)
        )));
    }
    release(&mut proc)?;
    if failed_with(&answer, "mq-open") && failed_errno(&answer, "EMFILE") {
        return Ok(());
    }
    Err(Fail::failed(format!(
        "the grader made the consumer's creating mq_open() fail with EMFILE (ptrace), the error \
         this user's queues over the soft RLIMIT_MSGQUEUE give, and it said {}, not `failed` \
         with kind=mq-open and EMFILE: an error of mq_open() other than EEXIST is \
         QueueError::Open with its errno",
        said(&answer)
    )))
}

/// How many calls matching `calls` a consumer of a 2 x 64-byte queue (named after `tag`) makes
/// from its first instruction to its end, told to shut down once ready; `None` where the grader
/// may not trace it.
pub(super) fn calls_of_a_consumer(
    run: &mut Run,
    tag: &str,
    calls: Call,
) -> Result<Option<u32>, Fail> {
    let name = run.ipc_name(tag);
    let (args, output) = consumer_args(run, &name, &sized(2, 64));
    let mut proc = run.spawn_stopped(&args)?;
    proc.set_roles(|_| "the consumer".into());
    let pid = proc.pid.as_raw();
    let tracer = Tracer::count_calls(pid, calls)?;
    force::resume(pid)?;
    let ready = proc.recv_any()?;
    if ready.kind != "ready" {
        release(&mut proc)?;
        return Err(Fail::failed(format!(
            "a consumer of a 2 x 64-byte queue said {} where it should have created it",
            said(&ready)
        )));
    }
    let mut consumer = Consumer::ready(proc, &name, &ready, output);
    consumer.send_shutdown()?;
    consumer.serve()?;
    // Read once the consumer has ended, which ends the tracer: each call was reported while
    // the consumer was stopped in it.
    tracer
        .map(|tracer| tracer.failed_count(Instant::now() + Duration::from_secs(2)))
        .transpose()
}
