//! A name taken by a queue that no process holds open is still taken: `create()` says `exists`
//! and leaves that queue, its messages and all, as it is. No process holding a queue open is no
//! sign that it is a leftover: its creator may have closed it on purpose, for a reader to come.

use std::os::fd::AsFd;

use nix::mqueue::{mq_close, mq_getattr, mq_unlink};
use nix::sys::stat::fstat;

use super::names::{end_consumer, take_name};
use super::protocol::{failed_with, release, said, sized, spawn_consumer_stopped_with};
use crate::engine::tracer::{Action, Call, Tracer};
use crate::engine::{Fail, Run, force};

/// The grader's queue (1 message in it) under the name, its descriptor closed before the
/// consumer starts: the consumer, asked for the very same attributes, must say `exists`, make
/// no `mq_unlink()` (watched with ptrace) and leave the same queue (inode) with its message.
pub fn existing_queue_nobody_holds(run: &mut Run) -> Result<(), Fail> {
    let name = run.ipc_name("unheld");
    let (queue, capacity, msg_size) = take_name(run, &name, 1)?;
    let inode = fstat(queue.as_fd()).map(|stat| stat.st_ino);
    let _ = mq_close(queue);
    let outcome = (|| {
        let inode = inode.map_err(|e| Fail::Grader(format!("fstat of the grader's queue: {e}")))?;
        let asked = sized(capacity as u64, msg_size as u64);
        let mut proc = spawn_consumer_stopped_with(run, &name, &asked)?;
        let pid = proc.pid.as_raw();
        let tracer = Tracer::attach(pid, Call::any(libc::SYS_mq_unlink), Action::Report)?;
        force::resume(pid)?;
        let answer = proc.recv_any()?;
        let unlinked = match tracer {
            Some(mut tracer) => tracer.failed_the_call()?,
            None => false,
        };
        let now = under_the_name(&name);
        let kept = now == Some((inode, 1));
        if failed_with(&answer, "exists") && kept && !unlinked {
            return release(&mut proc);
        }
        let what = match now {
            Some((ino, _)) if ino != inode => {
                "the queue now under the name is another (another inode): the grader's, with \
                 its message, is gone"
                    .to_string()
            }
            Some((_, left)) if left != 1 => {
                format!("the grader's queue holds {left} message(s) of its 1")
            }
            Some(_) => "the grader's queue is still there with its message".to_string(),
            None => "no queue has the name any more".to_string(),
        };
        let removed = if unlinked {
            "; it called mq_unlink() (seen with ptrace) before it answered: it removed the \
             existing queue, taking it for a leftover since no process held it open"
        } else {
            ""
        };
        if answer.kind == "ready" {
            // Its own queue, if it made one: served, so that it removes it.
            let _ = end_consumer(proc, &name, &answer);
        } else {
            release(&mut proc)?;
        }
        Err(Fail::failed(format!(
            "creating a queue whose name exists (the grader's, {capacity} messages of {msg_size} \
             bytes with 1 in it, which no process held open: the grader had closed its \
             descriptor), the consumer said {}{removed}; {what}. A name taken is `exists` \
             (EEXIST from mq_open(O_CREAT | O_EXCL)), whether or not anyone holds the queue \
             open, and the existing queue is left as it is: no mq_unlink, no scan of /proc to \
             judge it a leftover",
            said(&answer)
        )))
    })();
    let _ = mq_unlink(name.as_str());
    outcome
}

/// The inode and message count of the queue under `name`, if there is one.
fn under_the_name(name: &str) -> Option<(u64, i64)> {
    let queue = super::observe::open_to_look(name)?;
    let inode = fstat(queue.as_fd()).ok().map(|stat| stat.st_ino);
    let count = mq_getattr(&queue).ok().map(|attr| attr.curmsgs());
    let _ = mq_close(queue);
    Some((inode?, count?))
}
