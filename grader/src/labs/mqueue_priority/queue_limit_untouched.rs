//! The library never sets the process's `RLIMIT_MSGQUEUE`, not even for a moment: a limit
//! raised around `mq_open()` and put back after gets past the kernel's own check (this user's
//! queues together, `EMFILE`), which `/proc/PID/limits` at `ready` cannot show.

use std::time::{Duration, Instant};

use super::limits::consumer_args;
use super::protocol::{Consumer, release, said, sized};
use crate::engine::tracer::{Call, Tracer};
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
