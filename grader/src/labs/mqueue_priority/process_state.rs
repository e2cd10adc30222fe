//! What the library leaves of the process: `create()` changes none of what `main.rs` set for
//! the whole process (the umask, the soft `RLIMIT_MSGQUEUE`, SIGUSR1's handler) and keeps no
//! file open but the queue's descriptor.

use std::time::{Duration, Instant};

use super::limits::consumer_args;
use super::observe::{open_files, soft_message_queue_bytes};
use super::protocol::{Consumer, said, sized};
use crate::engine::inspect::umask;
use crate::engine::tracer::{Call, Tracer};
use crate::engine::{Fail, Run, force};

/// `rt_sigaction(SIGUSR1, act, ...)` with a new disposition (`act` not null; the word it points
/// to, the handler, may be anything).
const SETS_SIGUSR1: Call = Call::all_of(&[
    Call::arg_is(libc::SYS_rt_sigaction, 0, libc::SIGUSR1 as u64),
    Call::pointed_flag_set(libc::SYS_rt_sigaction, 1, 0),
]);

/// The descriptor `main.rs` talks to the grader on.
const CONTROL_FD: i32 = 3;

/// A consumer, its soft `RLIMIT_MSGQUEUE` lowered under its hard one, traced from its first
/// instruction: at `ready` its umask is the grader's (which it inherited), its soft limit the
/// one it was given, `main.rs`'s one `rt_sigaction(SIGUSR1)` the only one it made, and it holds
/// no file but its queue (the limit files read, closed).
pub fn left_as_main_set(run: &mut Run) -> Result<(), Fail> {
    let name = run.ipc_name("untouched");
    let (args, output) = consumer_args(run, &name, &sized(2, 64));
    // What the program is started with: one byte under its hard limit (64 MiB where that is
    // unlimited), so that a limit raised to the hard one shows. The budget is the user's, shared
    // with every queue of the gradings beside this one: a low soft limit would make its
    // mq_open() fail with EMFILE when they hold more.
    let hard = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_MSGQUEUE)
        .map_or(u64::MAX, |(_, hard)| hard);
    let given = if hard == libc::RLIM_INFINITY {
        64 << 20
    } else {
        hard.saturating_sub(1)
    };
    let mut proc = run.spawn_stopped_with_message_queue_bytes(&args, given)?;
    proc.set_roles(|_| "the consumer".into());
    let pid = proc.pid.as_raw();
    let handlers = Tracer::count_calls(pid, SETS_SIGUSR1)?;
    force::resume(pid)?;
    let ready = proc.recv_any()?;
    if ready.kind != "ready" {
        super::protocol::release(&mut proc)?;
        return Err(Fail::failed(format!(
            "a consumer of a 2 x 64-byte queue said {} where it should have created it",
            said(&ready)
        )));
    }
    let inherited = umask(std::process::id() as i32);
    let its_umask = umask(pid);
    let soft = soft_message_queue_bytes(pid);
    let files = open_files(pid, &name, CONTROL_FD);
    let mut consumer = Consumer::ready(proc, &name, &ready, output);
    consumer.send_shutdown()?;
    consumer.serve()?;
    // Read once the consumer has ended, which ends the tracer: each call was reported while
    // the consumer was stopped in it, before its `ready`.
    let set_handler = match handlers {
        Some(tracer) => Some(tracer.failed_count(Instant::now() + Duration::from_secs(2))?),
        None => None,
    };
    let when = "when the consumer said `ready`, create() done";
    if let (Some(inherited), Some(now)) = (inherited, its_umask)
        && inherited != now
    {
        return Err(Fail::failed(format!(
            "{when}, its umask was {now:04o} (/proc/PID/status), not the {inherited:04o} it was \
             started with: create() changed the umask of the whole process (umask(0) for the \
             queue's mode?) and left it so, so every file the program creates afterwards (its \
             output file) gets a wider mode. mq_open()'s mode 0600 needs no umask change (the \
             umask only takes bits away); leave the process's umask as main.rs had it"
        )));
    }
    if let Some(raised) = soft.filter(|&soft| soft != given) {
        return Err(Fail::failed(format!(
            "{when}, its soft RLIMIT_MSGQUEUE was {raised} (/proc/PID/limits), not the {given} \
             it was started with: the library changed the process's limit (setrlimit). \
             system_limits() reads the soft limit with getrlimit() and changes nothing"
        )));
    }
    if let Some(calls) = set_handler.filter(|&calls| calls > 1) {
        return Err(Fail::failed(format!(
            "from its start to `ready` the consumer set SIGUSR1's disposition {calls} times \
             (rt_sigaction with a new action, counted with ptrace), where main.rs sets it once: \
             create() (or open()) installed a handler of its own over main.rs's. The library \
             must not change the disposition main.rs set: it retries EINTR whatever the handler"
        )));
    }
    if !files.is_empty() {
        let shown: Vec<String> = files
            .iter()
            .map(|(fd, path)| format!("{fd} -> {path}"))
            .collect();
        return Err(Fail::failed(format!(
            "{when}, the consumer held file descriptors besides its queue's: {} \
             (/proc/PID/fd): create() left them open (system_limits() reads /proc/sys/fs/mqueue \
             and must close each file it opened; one more leaks at each create()). Close what \
             you open, on every path",
            shown.join(", ")
        )));
    }
    Ok(())
}
