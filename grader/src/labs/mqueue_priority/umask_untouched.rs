//! The umask is the whole process's: `create()` never calls `umask()`, not even to put it back
//! at once. For that moment every file any thread of the program creates gets the wider mode,
//! and `mq_open()`'s mode 0600 needs no change (the umask only takes bits away).

use super::queue_limit_untouched::calls_of_a_consumer;
use crate::engine::tracer::Call;
use crate::engine::{Fail, Run};

/// A consumer traced from its first instruction to its end, its `umask()` calls counted: main.rs makes none, so the library must make none either.
pub fn create_leaves_the_umask(run: &mut Run) -> Result<(), Fail> {
    let Some(calls) = calls_of_a_consumer(run, "umask", Call::any(libc::SYS_umask))? else {
        run.note("no ptrace here: the umask() calls of create() were not counted");
        return Ok(());
    };
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
