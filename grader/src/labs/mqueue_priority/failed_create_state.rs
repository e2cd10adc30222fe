//! What a failed `create()` leaves of the process: nothing of what `main.rs` set changes on an
//! error path either. The consumer's creating `mq_open()` is made to fail (ptrace) with
//! `EEXIST` (a name taken) and with `ENOSPC` (as when `queues_max` is reached), and its umask is
//! read while it waits for `exit` after its `failed`.

use super::protocol::{
    failed_with, grader_send, release, said, shutdown_message, spawn_consumer_stopped,
};
use crate::engine::inspect::umask;
use crate::engine::tracer::{Action, Call, Tracer};
use crate::engine::{Fail, Run, force};

/// `mq_open()` with `O_CREAT`: create()'s, not a look-up.
const CREATING: Call = Call::flag_set(libc::SYS_mq_open, 1, libc::O_CREAT as u64);

pub fn umask_kept_when_create_fails(run: &mut Run) -> Result<(), Fail> {
    let Some(inherited) = umask(std::process::id() as i32) else {
        return Ok(());
    };
    for (errno, errno_name, kind) in [
        (libc::EEXIST, "EEXIST", "exists"),
        (libc::ENOSPC, "ENOSPC", "mq-open"),
    ] {
        let name = run.ipc_name("failed-create");
        let mut proc = spawn_consumer_stopped(run, &name)?;
        let pid = proc.pid.as_raw();
        let tracer = Tracer::attach(pid, CREATING, Action::Fail(errno))?;
        force::resume(pid)?;
        let answer = proc.recv_any()?;
        let Some(mut tracer) = tracer else {
            run.note("no ptrace here: the umask after a failed create not tried");
            if answer.kind == "ready" {
                grader_send(&name, &[shutdown_message()])?;
                proc.send("go", &[])?;
                let _ = proc.recv_any()?;
            }
            return release(&mut proc);
        };
        let failed = tracer.failed_the_call()?;
        drop(tracer);
        let now = umask(pid);
        if answer.kind == "ready" {
            super::protocol::shut_down(run, &name)?;
            proc.send("go", &[])?;
            let _ = proc.recv_any()?;
        }
        release(&mut proc)?;
        if !failed || !failed_with(&answer, kind) {
            // The kinds of mq_open()'s errors are judged by name-errors.
            continue;
        }
        if let Some(now) = now.filter(|&now| now != inherited) {
            return Err(Fail::failed(format!(
                "the grader made the consumer's creating mq_open() fail with {errno_name} \
                 (ptrace); it said {}, as it should, but its umask was then {now:04o} \
                 (/proc/PID/status), not the {inherited:04o} it was started with: create() \
                 changed the process's umask around mq_open() (umask(0) for the queue's mode?) \
                 and its error path returned (a `?` on mq_open) before putting it back, so \
                 every file the program creates afterwards gets a wider mode. mq_open()'s mode \
                 0600 needs no umask change; if one is made, it is undone on every path",
                said(&answer)
            )));
        }
    }
    Ok(())
}
