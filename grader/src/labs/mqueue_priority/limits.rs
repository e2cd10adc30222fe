//! Attributes and limits: the queue gets what was asked for, and what is over a limit is refused
//! before `mq_open`.

use std::time::{Duration, Instant};

use nix::sys::resource::{Resource, getrlimit};
use rand::RngExt;

use super::attributes;
use super::protocol::{
    Consumer, MESSAGE_OVERHEAD, consumer, failed_errno, failed_with, grader_send, queue_attributes,
    release, said, sized, spawn_consumer,
};
use super::queue_bytes::{BytesLimit, consumer_watched_at_mq_open};
use crate::engine::audit::message_queue_exists;
use crate::engine::{Fail, Run};

/// A value of `/proc/sys/fs/mqueue/`.
pub(super) fn mqueue_limit(file: &str) -> Result<u64, Fail> {
    let path = format!("/proc/sys/fs/mqueue/{file}");
    std::fs::read_to_string(&path)?
        .trim()
        .parse()
        .map_err(|e| Fail::Grader(format!("{path}: {e}")))
}

pub fn attributes_and_limits(run: &mut Run) -> Result<String, Fail> {
    let (msg_max, msgsize_max) = (mqueue_limit("msg_max")?, mqueue_limit("msgsize_max")?);
    let capacity = run.rng().random_range(3..=msg_max.min(9));
    let msg_size = run.rng().random_range(100..1000);
    let name = run.ipc_name("jobs");
    let mut consumer = consumer(run, &name, &sized(capacity, msg_size))?;
    let attr = queue_attributes(&name)?;
    let seen = (attr.maxmsg() as u64, attr.msgsize() as u64);
    if seen != (capacity, msg_size) {
        return Err(Fail::failed(format!(
            "asked for {capacity} messages of {msg_size} bytes, the queue has {} of {}: pass \
             the attributes (mq_attr) to mq_open with O_CREAT",
            seen.0, seen.1
        )));
    }
    if (consumer.capacity, consumer.msg_size) != seen {
        return Err(Fail::failed(format!(
            "the queue has {} messages of {} bytes (the grader's mq_getattr), but the consumer's \
             attributes() reports {} of {}: return mq_getattr's mq_maxmsg and mq_msgsize",
            seen.0, seen.1, consumer.capacity, consumer.msg_size
        )));
    }
    attributes::counted_by_the_kernel(run, &name, capacity, msg_size)?;
    attributes::asked_each_time(run, &name)?;
    super::attribute_errors::getattr_fails_after_open(run)?;
    consumer.send_shutdown()?;
    consumer.serve()?;

    let default = run.ipc_name("default");
    let mut consumer = self::consumer(run, &default, &[])?;
    let attr = queue_attributes(&default)?;
    if attr.maxmsg() as u64 > msg_max || attr.msgsize() as u64 > msgsize_max {
        return Err(Fail::failed(format!(
            "the default queue has {} messages of {} bytes, more than an unprivileged user may \
             have (msg_max {msg_max}, msgsize_max {msgsize_max}): choose defaults within them",
            attr.maxmsg(),
            attr.msgsize()
        )));
    }
    consumer.send_shutdown()?;
    consumer.serve()?;

    // Exactly at a limit is allowed, one past it is not. The bytes limit is out of reach of the
    // default RLIMIT_MSGQUEUE, so the consumer gets a lower one.
    let (rlimit, hard) = getrlimit(Resource::RLIMIT_MSGQUEUE)
        .map_err(|e| Fail::Grader(format!("getrlimit(RLIMIT_MSGQUEUE): {e}")))?;
    let limit = BytesLimit {
        capacity: run.rng().random_range(2..=msg_max.min(8)),
        msg_size: run.rng().random_range(100..1000),
        hard,
    };
    let bytes = limit.bytes();
    let mut exact = Vec::new();
    if msg_max.saturating_mul(msgsize_max + MESSAGE_OVERHEAD) <= rlimit {
        exact.push((
            format!(
                "exactly msg_max ({msg_max}) messages of exactly msgsize_max ({msgsize_max}) bytes"
            ),
            sized(msg_max, msgsize_max),
            None,
            (msg_max, msgsize_max),
            "a capacity up to msg_max and a message size up to msgsize_max are allowed",
        ));
    } else {
        run.note("msg_max messages of msgsize_max bytes exceed RLIMIT_MSGQUEUE here: not tried");
    }
    exact.push((
        format!(
            "{} with RLIMIT_MSGQUEUE at exactly {bytes}",
            limit.describe()
        ),
        sized(limit.capacity, limit.msg_size),
        Some(bytes),
        (limit.capacity, limit.msg_size),
        "a queue of at most RLIMIT_MSGQUEUE bytes is allowed",
    ));
    // At exactly RLIMIT_MSGQUEUE, an over-limit that came after the consumer's mq_open() (the
    // grader sees the call) is the kernel's EMFILE renamed: this user's other queues count too.
    let mut renamed = None;
    for (case, (asked, args, queue_bytes, (capacity, msg_size), allowed)) in
        exact.into_iter().enumerate()
    {
        let name = run.ipc_name(&format!("limits-{case}"));
        // `watched`: the grader saw every call up to the answer (`reached` says whether
        // mq_open() was among them).
        let (mut proc, answer, output, reached, watched) = match queue_bytes {
            Some(bytes) => {
                let (proc, answer, output, reached, tracer) =
                    consumer_watched_at_mq_open(run, &name, &args, bytes)?;
                let watched = reached || tracer.is_some();
                drop(tracer);
                (proc, answer, output, reached, watched)
            }
            None => {
                let (proc, answer, output) = spawn_consumer(run, &name, &args, None)?;
                (proc, answer, output, false, false)
            }
        };
        if answer.kind == "ready" {
            let attr = queue_attributes(&name)?;
            if (attr.maxmsg() as u64, attr.msgsize() as u64) != (capacity, msg_size) {
                return Err(Fail::failed(format!(
                    "asked for {asked}, the queue has {} messages of {} bytes: create it with \
                     the attributes asked for",
                    attr.maxmsg(),
                    attr.msgsize()
                )));
            }
            let mut consumer = Consumer::ready(proc, &name, &answer, output);
            consumer.send_shutdown()?;
            consumer.serve()?;
        } else if failed_with(&answer, "mq-open") && failed_errno(&answer, "EMFILE") {
            // The program's own check passed; the kernel counts this user's other queues too.
            run.note(format!(
                "{asked}: mq_open said EMFILE (other queues of this user)"
            ));
            release(&mut proc)?;
        } else if failed_with(&answer, "over-limit") && reached && !message_queue_exists(&name) {
            // Not its own check: the one byte less probe tells whether it has one at all.
            renamed = Some(format!(
                "asking for {asked}, it said {} only after its mq_open() (the grader saw the \
                 call): that refusal was the kernel's EMFILE (the kernel counts this user's \
                 other queues too), not a check of its own",
                said(&answer)
            ));
            release(&mut proc)?;
        } else if failed_with(&answer, "over-limit") {
            let before = if watched && !reached {
                " (before any mq_open(): the grader watched for the call)"
            } else {
                ""
            };
            return Err(Fail::failed(format!(
                "asking for {asked}, the consumer said {}{before}: the limits are inclusive, \
                 {allowed}; refuse only what is more than a limit (>, not >=)",
                said(&answer)
            )));
        } else {
            return Err(Fail::failed(format!(
                "asking for {asked}, the consumer said {} where it should have created the \
                 queue: {allowed}",
                said(&answer)
            )));
        }
    }
    let over = [
        (
            format!("{} messages (msg_max + 1)", msg_max + 1),
            vec!["--capacity".to_string(), (msg_max + 1).to_string()],
            "a capacity of at most msg_max, for root too (the kernel exempts root, check() does \
             not)",
        ),
        (
            format!("messages of {} bytes (msgsize_max + 1)", msgsize_max + 1),
            vec!["--msg-size".to_string(), (msgsize_max + 1).to_string()],
            "a message size of at most msgsize_max, for root too (the kernel exempts root, \
             check() does not)",
        ),
        (
            "a capacity of 0".to_string(),
            vec!["--capacity".to_string(), "0".into()],
            "a capacity of at least 1",
        ),
        (
            "a message size of 0".to_string(),
            vec!["--msg-size".to_string(), "0".into()],
            "a message size of at least 1",
        ),
        (
            format!("a capacity of {}", u64::MAX),
            vec!["--capacity".to_string(), u64::MAX.to_string()],
            "a capacity of at most msg_max, compared before the queue's bytes are computed",
        ),
        (
            format!("a capacity of {} (2^32 + 1)", (1u64 << 32) + 1),
            vec!["--capacity".to_string(), ((1u64 << 32) + 1).to_string()],
            "a capacity of at most msg_max (compared as the u64 it is)",
        ),
        (
            format!("messages of {} bytes (2^32 + 1)", (1u64 << 32) + 1),
            vec!["--msg-size".to_string(), ((1u64 << 32) + 1).to_string()],
            "a message size of at most msgsize_max (compared as the u64 it is)",
        ),
    ];
    let mut refused = Vec::new();
    for (case, (asked, args, rule)) in over.into_iter().enumerate() {
        let name = run.ipc_name(&format!("over-{case}"));
        let (mut proc, answer, _) = match spawn_consumer(run, &name, &args, None) {
            Err(Fail::Crashed(crash)) => {
                return Err(Fail::failed(format!(
                    "asking for {asked}, the consumer crashed ({crash}): check the capacity \
                     against msg_max before computing with it, or compute with checked \
                     arithmetic"
                )));
            }
            other => other?,
        };
        if let Some(kind) = own_refusal(&answer, &name) {
            return Err(Fail::failed(format!(
                "asking for {asked}, the consumer refused the queue itself (nothing was \
                 created), but said {}: {}",
                said(&answer),
                kind_advice(&kind)
            )));
        }
        if !failed_with(&answer, "over-limit") {
            // The cases before this one it refused itself: it checks the config, but not this.
            let checks = if refused.is_empty() || !failed_with(&answer, "mq-open") {
                String::new()
            } else {
                format!(
                    " (it did refuse {} as over-limit, so it checks the config, but let this \
                     one through to mq_open)",
                    refused.join(", ")
                )
            };
            // 2^64 - 1 let through where msg_max + 1 was not: 2^63 - 1, the largest that stays
            // positive as an i64, tells a signed comparison apart.
            let signed = if !refused.is_empty()
                && failed_with(&answer, "mq-open")
                && args.last() == Some(&u64::MAX.to_string())
            {
                let probe = run.ipc_name("over-signed");
                let largest = vec!["--capacity".to_string(), i64::MAX.to_string()];
                let (mut second, said_then, _) = spawn_consumer(run, &probe, &largest, None)?;
                let _ = release(&mut second);
                if failed_with(&said_then, "over-limit") {
                    format!(
                        "; a capacity of {} (2^63 - 1) it did refuse as over-limit, so a \
                         capacity of 2^63 or more turns negative where it compares: it compares \
                         (or computes the bytes) as a signed number (i64, C's long); compare \
                         the u64 values with the limits before converting",
                        i64::MAX
                    )
                } else {
                    String::new()
                }
            } else {
                String::new()
            };
            let narrowed = if !refused.is_empty()
                && failed_with(&answer, "mq-open")
                && args.last() == Some(&((1u64 << 32) + 1).to_string())
            {
                "; 2^32 + 1 is 1 once narrowed to 32 bits, which passes every limit: it narrows \
                 the value (to u32, C's int) before it compares, and mq_open got the whole \
                 value; compare the u64 values with the limits before converting"
            } else {
                ""
            };
            let exempt = if refused.is_empty() {
                root_exempted(run, &args, &answer)?
            } else {
                String::new()
            };
            return Err(Fail::failed(format!(
                "asking for {asked}, the consumer said {}, not `failed` with \
                 kind=over-limit{checks}{signed}{narrowed}{exempt}: check the config against \
                 system_limits() before mq_open; only {rule} is allowed",
                said(&answer)
            )));
        }
        refused.push(asked.clone());
        if message_queue_exists(&name) {
            return Err(Fail::failed(format!(
                "asking for {asked}, the consumer said kind=over-limit but {name} exists: check \
                 the config before mq_open, so that nothing is created"
            )));
        }
        release(&mut proc)?;
    }
    limit.expect_refused(run, renamed)?;
    limit.read_at_each_create(run)?;
    limits_read_from_proc(run, msg_max, msgsize_max)?;
    default_config_checked(run)?;
    super::proc_limits::unreadable_limits(run)?;
    super::proc_limits::limit_not_a_number(run)?;
    super::limit_read_failures::every_limit_read_fails(run)?;
    unlimited_queue_bytes(run)?;
    super::proc_limits::read_whole_at_each_create(run, msg_max)?;
    let given = super::given_limits::judged_against_given_limits(run)?;
    super::unlimited_given_limits::limits_judged_when_bytes_unlimited(run)?;
    // Ceilings first: a check() clamped to the kernel's ceilings also refuses the huge sizes
    // of the exact budget, where the message would blame the comparison.
    super::kernel_ceilings::limits_above_kernel_ceilings(run)?;
    super::exact_byte_budget::bytes_compared_exactly(run)?;
    Ok(format!(
        "the queue had the {capacity} x {msg_size} bytes asked for; the defaults fit; exactly \
         msg_max ({msg_max}), msgsize_max ({msgsize_max}) and RLIMIT_MSGQUEUE ({bytes} bytes) \
         were allowed, one more (or 0) was over-limit; {given}"
    ))
}

/// In an IPC namespace of the consumer's own, `/proc/sys/fs/mqueue` holds other limits than the
/// machine's: a higher `msg_max` and a lower `msgsize_max`, and a `msg_default` between the
/// machine's `msg_max` and the new one. A consumer must accept exactly the new `msg_max` and
/// refuse one byte over the new `msgsize_max`, which only one that reads them there does; one
/// that refuses `msg_max` is then asked for one less and for `msg_default`, which tells a limit
/// off by one, `msg_default` taken for `msg_max`, and a limit from elsewhere apart. Root only
/// (the namespace's limits are root's to write).
fn limits_read_from_proc(run: &mut Run, msg_max: u64, msgsize_max: u64) -> Result<(), Fail> {
    let own = OwnLimits {
        msg_max: msg_max + run.rng().random_range(4..=7),
        msgsize_max: run
            .rng()
            .random_range(128.max(msgsize_max / 2)..msgsize_max),
        msg_default: 0,
    };
    let own = OwnLimits {
        msg_default: run.rng().random_range(msg_max + 1..=own.msg_max - 2),
        ..own
    };
    let limits = format!(
        "in an IPC namespace of its own whose /proc/sys/fs/mqueue/msg_max is {} and \
         msgsize_max {} (the machine's: {msg_max} and {msgsize_max}; its msg_default {})",
        own.msg_max, own.msgsize_max, own.msg_default
    );
    let Some(answer) = own.try_capacity(run, own.msg_max)? else {
        run.note(
            "no IPC namespace of its own for the consumer here (root only): limits other than \
             the machine's not tried",
        );
        return Ok(());
    };
    if answer.kind != "ready" {
        let asked = format!(
            "{limits}, asking for exactly {} messages of 100 bytes, the consumer said {}",
            own.msg_max,
            said(&answer)
        );
        if !failed_with(&answer, "over-limit") {
            return Err(Fail::failed(format!(
                "{asked}: a capacity up to msg_max is allowed"
            )));
        }
        let one_less = own.try_capacity(run, own.msg_max - 1)?;
        if one_less.as_ref().is_some_and(|a| a.kind == "ready") {
            return Err(Fail::failed(format!(
                "{asked}, and took {} (one less): the limits are inclusive, refuse only a \
                 capacity over msg_max (>, not >=)",
                own.msg_max - 1
            )));
        }
        let default = own.try_capacity(run, own.msg_default)?;
        if default.as_ref().is_some_and(|a| a.kind == "ready") {
            return Err(Fail::failed(format!(
                "{asked}; it refused {} too but took {}, this namespace's msg_default: it takes \
                 /proc/sys/fs/mqueue/msg_default (what mq_open gives a queue created without \
                 attributes) for the limit. system_limits() reads msg_max from \
                 /proc/sys/fs/mqueue/msg_max",
                own.msg_max - 1,
                own.msg_default
            )));
        }
        return Err(Fail::failed(format!(
            "{asked}; it refused {} (this namespace's msg_default) too: its limit is lower than \
             anything this namespace says, a constant or a value of another machine or \
             namespace. A capacity up to msg_max is allowed, and system_limits() reads msg_max \
             from /proc/sys/fs/mqueue/msg_max each time, not a constant or a value of another \
             machine",
            own.msg_default
        )));
    }
    let name = run.ipc_name("own-limits-over");
    let over = sized(2, own.msgsize_max + 1);
    let Some((mut proc, answer)) = spawn_with_sysctls(run, &name, &over, &own)? else {
        return Ok(());
    };
    if !failed_with(&answer, "over-limit") {
        return Err(Fail::failed(format!(
            "{limits}, asking for messages of {} bytes (msgsize_max + 1), the consumer said {}, \
             not `failed` with kind=over-limit: system_limits() reads msgsize_max from \
             /proc/sys/fs/mqueue/msgsize_max each time (not msgsize_default, not a constant or \
             a value of another machine), and check() refuses a message size over it",
            own.msgsize_max + 1,
            said(&answer)
        )));
    }
    release(&mut proc)
}

/// The default config (8 messages of 1024 bytes) is checked like any other: in an IPC namespace
/// whose `msg_max` is 7, or whose `msgsize_max` is 1023, a consumer asked for no attributes must
/// refuse with kind=over-limit before `mq_open()` (as root, the kernel would create it anyway).
fn default_config_checked(run: &mut Run) -> Result<(), Fail> {
    for (msg_max, msgsize_max, what) in
        [(7, 8192, "msg_max is 7"), (10, 1023, "msgsize_max is 1023")]
    {
        let own = OwnLimits {
            msg_max,
            msgsize_max,
            msg_default: msg_max,
        };
        let name = run.ipc_name("default-over");
        let Some((mut proc, answer)) = spawn_with_sysctls(run, &name, &[], &own)? else {
            return Ok(());
        };
        release(&mut proc)?;
        if failed_with(&answer, "over-limit") {
            continue;
        }
        let hint = if answer.kind == "ready" {
            "it created the queue (root passes the kernel's own check): "
        } else {
            ""
        };
        return Err(Fail::failed(format!(
            "in an IPC namespace of its own whose /proc/sys/fs/mqueue/{what}, a consumer given \
             no attributes (the default config, 8 messages of 1024 bytes) said {}, not `failed` \
             with kind=over-limit: {hint}create() checks every config against system_limits() \
             before mq_open(), the default one too; the defaults fit the usual limits, not \
             every machine's",
            said(&answer)
        )));
    }
    Ok(())
}

/// An unlimited `RLIMIT_MSGQUEUE` (`RLIM_INFINITY`) is no limit: in an IPC namespace whose
/// `msg_max` and `msgsize_max` allow it, a consumer whose `getrlimit()` reports
/// `RLIM_INFINITY` (the grader writes it into the result, held at the return of the
/// `prlimit64()` call, with ptrace: raising the real limit takes `CAP_SYS_RESOURCE`) must let a
/// queue of more than 819200 bytes through its check to `mq_open()` (which may then refuse it
/// against the real limit: kind=mq-open), not refuse it as over-limit.
fn unlimited_queue_bytes(run: &mut Run) -> Result<(), Fail> {
    use crate::engine::force;
    use crate::engine::tracer::{Action, Call, Reached, Tracer};
    use std::os::unix::fs::FileExt;
    const CAPACITY: u64 = 100;
    const MSG_SIZE: u64 = 8192;
    let name = run.ipc_name("unlimited-bytes");
    let (all, _) = consumer_args(run, &name, &sized(CAPACITY, MSG_SIZE));
    let Some(mut proc) =
        run.spawn_stopped_with_message_queue_sysctls(&all, (2 * CAPACITY, MSG_SIZE))?
    else {
        return Ok(());
    };
    proc.set_roles(|_| "the consumer".into());
    let pid = proc.pid.as_raw();
    let getrlimit = Call::arg_is(libc::SYS_prlimit64, 1, libc::RLIMIT_MSGQUEUE as u64);
    let tracer = Tracer::attach(pid, getrlimit, Action::HoldAfter)?;
    force::resume(pid)?;
    let Some(mut tracer) = tracer else {
        run.note("an unlimited RLIMIT_MSGQUEUE not tried (no ptrace)");
        let _ = proc.recv_any()?;
        return release(&mut proc);
    };
    let mut faked = false;
    let mut asked = true;
    // Once the limit is faked, whether the consumer then tries to create the queue.
    let mut creating = None;
    let first = match tracer.wait(&mut proc, Instant::now() + Duration::from_secs(5))? {
        Reached::Call => {
            // prlimit64(pid, resource, new, old): the limit returned is at `old`.
            let old = std::fs::read_to_string(format!("/proc/{pid}/syscall"))
                .ok()
                .and_then(|s| {
                    let arg = s.split_whitespace().nth(4)?.to_string();
                    u64::from_str_radix(arg.strip_prefix("0x")?, 16).ok()
                })
                .filter(|&old| old != 0);
            if let Some(old) = old {
                let unlimited = [libc::RLIM_INFINITY.to_ne_bytes(); 2].concat();
                faked = std::fs::OpenOptions::new()
                    .write(true)
                    .open(format!("/proc/{pid}/mem"))
                    .and_then(|mem| mem.write_all_at(&unlimited, old))
                    .is_ok();
            }
            tracer.release_stopped(pid)?;
            let create = Call::flag_set(libc::SYS_mq_open, 1, libc::O_CREAT as u64);
            let attached = Tracer::attach(pid, create, Action::Report);
            force::resume(pid)?;
            creating = attached?;
            None
        }
        Reached::Passed(message) => {
            drop(tracer);
            asked = false;
            message
        }
    };
    let answer = match first {
        Some(answer) => answer,
        None => proc.recv_any()?,
    };
    let tried_mq_open = match creating {
        Some(mut tracer) => tracer.failed_the_call()?,
        None => false,
    };
    if answer.kind == "ready" {
        shutdown_in_namespace_of(pid, &name)?;
        proc.send("go", &[])?;
        let _ = proc.recv_any()?;
    }
    release(&mut proc)?;
    let refused = failed_with(&answer, "over-limit") || failed_with(&answer, "limits");
    if !asked && refused {
        return Err(Fail::failed(format!(
            "asked for {CAPACITY} messages of {MSG_SIZE} bytes in an IPC namespace of its own \
             whose msg_max is {}, the consumer said {} without ever calling \
             getrlimit(RLIMIT_MSGQUEUE) (the grader watched for its prlimit64 call from the \
             start): its limit on the queue's bytes comes from elsewhere (/proc/self/limits, a \
             constant, another process), which is not what this process's getrlimit() says. \
             system_limits() reads the soft RLIMIT_MSGQUEUE with getrlimit() each time",
            2 * CAPACITY,
            said(&answer)
        )));
    }
    if !faked {
        run.note("an unlimited RLIMIT_MSGQUEUE not tried (the limit getrlimit returned not seen)");
        return Ok(());
    }
    if !failed_with(&answer, "over-limit") && !failed_with(&answer, "limits") {
        return Ok(());
    }
    let bytes = CAPACITY * (MSG_SIZE + MESSAGE_OVERHEAD);
    if tried_mq_open {
        return Err(Fail::failed(format!(
            "asked for {CAPACITY} messages of {MSG_SIZE} bytes ({bytes} bytes with the \
             overhead), a consumer whose getrlimit(RLIMIT_MSGQUEUE) said unlimited (the \
             grader's doing with ptrace) let the queue through its check, as it should, and \
             called mq_open() to create it (the grader saw the call), which the kernel refuses \
             against the real limit (EMFILE); it then said {}: the kernel's refusal was renamed. \
             An mq_open() error other than EEXIST is QueueError::Open (kind=mq-open) with its \
             errno; over-limit is check()'s verdict, before any mq_open()",
            said(&answer)
        )));
    }
    Err(Fail::failed(format!(
        "in an IPC namespace of its own whose msg_max is {} and msgsize_max {MSG_SIZE}, asked \
         for {CAPACITY} messages of {MSG_SIZE} bytes ({bytes} bytes with the overhead, more than \
         819200), a consumer whose getrlimit(RLIMIT_MSGQUEUE) said unlimited (RLIM_INFINITY, \
         the grader's doing with ptrace) said {}: it takes the unlimited soft limit for a \
         finite one (the usual default of 819200 bytes, say). system_limits() returns \
         getrlimit()'s soft limit as it is: RLIM_INFINITY (u64::MAX) is larger than any queue, \
         and check() lets the queue through to mq_open()",
        2 * CAPACITY,
        said(&answer)
    )))
}

/// The limits of a consumer's IPC namespace of its own.
pub(super) struct OwnLimits {
    pub msg_max: u64,
    pub msgsize_max: u64,
    pub msg_default: u64,
}

impl OwnLimits {
    /// A consumer asked for `capacity` messages of 100 bytes in a namespace with these limits:
    /// its first answer (once a queue it created has served the shutdown), or `None` where the
    /// grader may not make one.
    fn try_capacity(
        &self,
        run: &mut Run,
        capacity: u64,
    ) -> Result<Option<ipc_labs_driver::Message>, Fail> {
        let name = run.ipc_name(&format!("own-limits-{capacity}"));
        let Some((mut proc, answer)) = spawn_with_sysctls(run, &name, &sized(capacity, 100), self)?
        else {
            return Ok(None);
        };
        if answer.kind != "ready" {
            release(&mut proc)?;
            return Ok(Some(answer));
        }
        shutdown_in_namespace_of(proc.pid.as_raw(), &name)?;
        proc.send("go", &[])?;
        let done = proc.recv_any()?;
        release(&mut proc)?;
        if done.kind != "done" {
            return Err(Fail::failed(format!(
                "in an IPC namespace of its own, with {capacity} messages of 100 bytes, the \
                 consumer said {} instead of `done` after the shutdown message",
                said(&done)
            )));
        }
        Ok(Some(answer))
    }
}

/// A consumer of `name` with `args` in an IPC namespace of its own with these limits, and its
/// first answer; `None` where the grader may not make one.
pub(super) fn spawn_with_sysctls(
    run: &mut Run,
    name: &str,
    args: &[String],
    own: &OwnLimits,
) -> Result<Option<(crate::engine::Proc, ipc_labs_driver::Message)>, Fail> {
    let (all, _) = consumer_args(run, name, args);
    let Some(mut proc) = run.spawn_with_message_queue_sysctls_and_default(
        &all,
        (own.msg_max, own.msgsize_max),
        own.msg_default,
    )?
    else {
        return Ok(None);
    };
    proc.set_roles(|_| "the consumer".into());
    let answer = proc.recv_any()?;
    Ok(Some((proc, answer)))
}

/// Sends the shutdown into the queue `name` of the IPC namespace process `pid` is in.
pub(super) fn shutdown_in_namespace_of(pid: i32, name: &str) -> Result<(), Fail> {
    let name = name.to_string();
    in_namespace_of(pid, move || {
        grader_send(&name, &[super::protocol::shutdown_message()])
    })
}

/// Runs `work` in the IPC namespace process `pid` is in, from a thread that joins that
/// namespace and ends: its queues, and its `/proc/sys/fs/mqueue`.
pub(super) fn in_namespace_of<T: Send + 'static>(
    pid: i32,
    work: impl FnOnce() -> Result<T, Fail> + Send + 'static,
) -> Result<T, Fail> {
    use std::os::fd::AsRawFd;
    let path = format!("/proc/{pid}/ns/ipc");
    std::thread::spawn(move || {
        let namespace = std::fs::File::open(&path)?;
        // SAFETY: a plain system call on a descriptor we own; it moves this thread only.
        if unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWIPC) } != 0 {
            return Err(Fail::Grader(format!(
                "setns({path}): {}",
                std::io::Error::last_os_error()
            )));
        }
        work()
    })
    .join()
    .map_err(|_| Fail::Grader("the thread that joins the consumer's namespace panicked".into()))?
}

/// The kernel's hard caps, which no `msg_max` or `msgsize_max` may exceed (`HARD_MSGMAX`,
/// `HARD_MSGSIZEMAX`): what root may ask for with `CAP_SYS_RESOURCE`.
const HARD_MSGMAX: u64 = 65536;
const HARD_MSGSIZEMAX: u64 = 16 * 1024 * 1024;

/// Run as root, a consumer that let `msg_max + 1` (or `msgsize_max + 1`) through is asked for
/// one more than the kernel's hard cap: refused as over-limit, it checks against a limit of its
/// own for root (the exemption the kernel gives root), not against `system_limits()`.
fn root_exempted(
    run: &mut Run,
    args: &[String],
    answer: &ipc_labs_driver::Message,
) -> Result<String, Fail> {
    let root = match run.program_user() {
        Some((uid, _)) => uid == 0,
        None => nix::unistd::geteuid().is_root(),
    };
    let (flag, cap, limit) = match args.first().map(String::as_str) {
        Some("--capacity") => ("--capacity", HARD_MSGMAX, "msg_max"),
        Some("--msg-size") => ("--msg-size", HARD_MSGSIZEMAX, "msgsize_max"),
        _ => return Ok(String::new()),
    };
    if !root || !(answer.kind == "ready" || failed_with(answer, "mq-open")) {
        return Ok(String::new());
    }
    let name = run.ipc_name("over-cap");
    let past = vec![flag.to_string(), (cap + 1).to_string()];
    let (mut proc, said_then, _) = spawn_consumer(run, &name, &past, None)?;
    let _ = release(&mut proc);
    if !failed_with(&said_then, "over-limit") || message_queue_exists(&name) {
        return Ok(String::new());
    }
    Ok(format!(
        "; it runs as root here, and it did refuse {} ({cap} + 1, one past the kernel's hard \
         cap) as over-limit: it exempts root from {limit} (raising the limit to the kernel's \
         cap when the user is root). The kernel exempts root, the lab's check() does not: \
         compare with the {limit} that system_limits() read, whoever runs the program",
        cap + 1
    ))
}

/// The kind of a refusal the program made itself, before `mq_open` (nothing under `name`, and
/// not the kind of a failed system call), with another kind than `over-limit`.
pub(super) fn own_refusal(answer: &ipc_labs_driver::Message, name: &str) -> Option<String> {
    let kind = answer.get("kind")?;
    let of_a_call = kind.starts_with("mq-");
    (answer.kind == "failed" && kind != "over-limit" && !of_a_call && !message_queue_exists(name))
        .then(|| kind.to_string())
}

/// What to say of a config over a limit refused with `kind`.
pub(super) fn kind_advice(kind: &str) -> String {
    let meant = match kind {
        "limits" => " is for limits that cannot be read (system_limits() failing), and",
        "bad-name" => " is for a name that breaks the rules, and",
        _ => "",
    };
    format!(
        "kind={kind}{meant} a config over a limit (or a capacity or message size of 0) is \
         QueueError::OverLimit, kind=over-limit, whichever limit it is"
    )
}

/// The arguments of a consumer of queue `name` that writes what it serves to a file of its own,
/// and that file.
pub(super) fn consumer_args(
    run: &mut Run,
    name: &str,
    args: &[String],
) -> (Vec<String>, std::path::PathBuf) {
    let tag: u32 = run.rng().random();
    let output = run.path(&format!("served-{tag}.bin"));
    let mut all = vec![
        "consumer".to_string(),
        "--name".into(),
        name.into(),
        "--output".into(),
        output.display().to_string(),
    ];
    all.extend(args.iter().cloned());
    (all, output)
}
