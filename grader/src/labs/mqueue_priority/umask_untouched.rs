//! The umask is the whole process's: `create()` never calls `umask()`, not even to put it back
//! at once. For that moment every file any thread of the program creates gets the wider mode,
//! and `mq_open()`'s mode 0600 needs no change (the umask only takes bits away).

use std::time::{Duration, Instant};

use super::limits::consumer_args;
use super::protocol::{Consumer, release, said, sized};
use crate::engine::tracer::{Call, Tracer};
use crate::engine::{Fail, Run, force};

/// A consumer traced from its first instruction to `ready` (its `create()` done), its
/// `umask()` calls counted: main.rs makes none, so the library must make none either.
pub fn create_leaves_the_umask(run: &mut Run) -> Result<(), Fail> {
    let name = run.ipc_name("umask");
    let (args, output) = consumer_args(run, &name, &sized(2, 64));
    let mut proc = run.spawn_stopped(&args)?;
    proc.set_roles(|_| "the consumer".into());
    let pid = proc.pid.as_raw();
    let tracer = Tracer::count_calls(pid, Call::any(libc::SYS_umask))?;
    force::resume(pid)?;
    let ready = proc.recv_any()?;
    // Each call was reported while the consumer was stopped in it, before its `ready`.
    let calls = match tracer {
        Some(tracer) => tracer.failed_count(Instant::now() + Duration::from_millis(20))?,
        None => {
            run.note("no ptrace here: the umask() calls of create() were not counted");
            0
        }
    };
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
    if calls > 0 {
        return Err(Fail::failed(format!(
            "from its start to `ready` (create() done) the consumer called umask() {calls} \
             time(s) (counted with ptrace), where main.rs calls it never: create() changed the \
             umask of the whole process, if only for a moment (umask(0) around mq_open, then \
             put back). Meanwhile every file any thread creates gets the wider mode. \
             mq_open()'s mode 0600 needs no umask change (the umask only takes bits away): \
             leave the umask alone"
        )));
    }
    Ok(())
}
