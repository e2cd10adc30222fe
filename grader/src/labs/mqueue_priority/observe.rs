//! What the grader sees of the programs from outside, besides their messages: the queue
//! descriptors they hold and their flags (`/proc/PID/fd`, `/proc/PID/fdinfo`), a queue's
//! permission bits (`fstat` of the grader's own descriptor, which needs no mqueue mount), the
//! system call a process waits in, whether a signal sent to it is still pending, and how many
//! bytes it moved with read() and write().

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use ipc_labs_driver::Message;
use nix::mqueue::{MQ_OFlag, MqdT, mq_close, mq_open};
use nix::sys::signal::Signal;
use nix::sys::stat::{Mode, fstat};

use crate::engine::inspect::SignalMask;
use crate::engine::{Fail, Proc, force, inspect};

pub use crate::engine::inspect::IoCounters as Io;

/// Bytes a program may move with read() and write() between two protocol steps without them
/// being the jobs: a stray line of debugging output, a limit file read again.
pub const IO_SLACK: u64 = 512;

/// The I/O counters of a program, if it is still there.
pub fn io(proc: &Proc) -> Option<Io> {
    inspect::io(proc.pid.as_raw())
}

/// What a program has printed on stdout and stderr so far, as far as the grader has read it.
pub fn printed(proc: &Proc) -> u64 {
    // The grader's reader threads may still be behind the program: give them a moment.
    std::thread::sleep(Duration::from_millis(20));
    [&proc.stdout, &proc.stderr]
        .iter()
        .map(|c| {
            let c = c.lock().expect("capture lock");
            c.bytes.len() as u64 + c.dropped
        })
        .sum()
}

/// Fails if `who` printed (stdout and stderr, since it started) as many bytes as the payloads
/// of the jobs it `did`: a line of its own per job is far less, a print of each job's payload
/// (a debugging trace left in) is a copy of the data that leaves by another way than the queue.
pub fn expect_jobs_not_printed(
    who: &str,
    did: &str,
    payloads: u64,
    printed: u64,
) -> Result<(), Fail> {
    if payloads < 1024 || printed < payloads {
        return Ok(());
    }
    Err(Fail::failed(format!(
        "{who} printed {printed} bytes on its stdout and stderr by the time it had {did} jobs \
         whose payloads total {payloads} bytes: as much as the jobs themselves, so it prints \
         the jobs (a debugging trace left in?). The jobs travel through the queue and nowhere \
         else; print nothing of them"
    )))
}

const O_ACCMODE: u32 = 0o3;
const O_NONBLOCK: u32 = 0o4000;

/// One descriptor a process holds on a message queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueFd {
    pub fd: i32,
    /// The open flags, from `/proc/PID/fdinfo/FD`.
    pub flags: u32,
}

impl QueueFd {
    pub fn nonblocking(&self) -> bool {
        self.flags & O_NONBLOCK != 0
    }

    /// `O_RDONLY`, `O_WRONLY` or `O_RDWR`.
    pub fn access(&self) -> &'static str {
        match self.flags & O_ACCMODE {
            0 => "O_RDONLY",
            1 => "O_WRONLY",
            _ => "O_RDWR",
        }
    }

    /// The flags as `/proc/PID/fdinfo` shows them, for messages.
    pub fn describe(&self, pid: i32) -> String {
        format!("flags {:o} in /proc/{pid}/fdinfo/{}", self.flags, self.fd)
    }
}

/// The descriptors `pid` holds on the queue `name` (a queue descriptor's link in
/// `/proc/PID/fd` is its name, followed by ` (deleted)` once it is unlinked); `None` if the
/// process is gone.
pub fn queue_fds(pid: i32, name: &str) -> Option<Vec<QueueFd>> {
    let view = inspect::view(pid)?;
    if view.state == 'Z' {
        return None;
    }
    let deleted = format!("{name} (deleted)");
    Some(
        view.fds
            .iter()
            .filter(|(_, target)| **target == name || **target == deleted)
            .filter_map(|(&fd, _)| {
                let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
                let flags = info.lines().find_map(|l| l.strip_prefix("flags:"))?.trim();
                Some(QueueFd {
                    fd,
                    flags: u32::from_str_radix(flags, 8).ok()?,
                })
            })
            .collect(),
    )
}

/// The one descriptor `pid` holds on `name`, or a failure that says what was found instead.
pub fn one_queue_fd(pid: i32, name: &str, who: &str, when: &str) -> Result<QueueFd, Fail> {
    match queue_fds(pid, name).as_deref() {
        Some([one]) => Ok(*one),
        Some([]) => Err(Fail::failed(format!(
            "{who} holds no descriptor of {name} {when} (none in /proc/{pid}/fd): open the queue \
             once with mq_open and keep its descriptor in the JobQueue until close()"
        ))),
        Some(many) => Err(Fail::failed(format!(
            "{who} holds {} descriptors of {name} {when}: open the queue once and keep that one \
             descriptor",
            many.len()
        ))),
        None => Err(Fail::Grader(format!("{who} (pid {pid}) is gone {when}"))),
    }
}

/// The grader's own descriptor of the queue `name`, to look at it (read-only, non-blocking: it
/// takes nothing and never waits); `None` if no queue has the name.
pub fn open_to_look(name: &str) -> Option<MqdT> {
    mq_open(
        name,
        MQ_OFlag::O_RDONLY | MQ_OFlag::O_NONBLOCK,
        Mode::empty(),
        None,
    )
    .ok()
}

/// The permission bits of the queue `name`, from `fstat` of the grader's own descriptor.
pub fn queue_mode(name: &str) -> Option<u32> {
    let queue = open_to_look(name)?;
    let mode = fstat(queue.as_fd()).ok().map(|s| s.st_mode & 0o777);
    let _ = mq_close(queue);
    mode
}

pub use crate::engine::inspect::sleeps_in;

/// Sends `signal` to every thread of `pid` and waits, at most `patience`, until no thread has it
/// pending any more (`SigPnd` in `/proc/PID/task/TID/status`): until then the thread may still
/// look asleep in the call the signal is about to interrupt. False if it stayed pending.
pub fn interrupt(pid: i32, signal: Signal, patience: Duration) -> bool {
    force::signal_every_thread(pid, signal);
    let bit = 1u64 << (signal as i32 - 1);
    let until = Instant::now() + patience;
    loop {
        let pending = std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|task| task.file_name().to_str()?.parse::<i32>().ok())
            .filter_map(|tid| inspect::signal_mask(pid, tid, SignalMask::Pending))
            .any(|mask| mask & bit != 0);
        if !pending {
            return true;
        }
        if Instant::now() > until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// What a process did while the grader waited for it to sleep in one call.
pub enum Reached {
    /// It sleeps in the call.
    InCall,
    /// It said something first.
    Said(Message),
    /// Neither, by the time given.
    NotYet,
}

/// Waits until `proc` sleeps in `syscall` or says something, at most `patience`.
pub fn wait_in_call(proc: &mut Proc, syscall: i64, patience: Duration) -> Result<Reached, Fail> {
    let until = Instant::now() + patience;
    loop {
        if sleeps_in(proc.pid.as_raw(), syscall) {
            return Ok(Reached::InCall);
        }
        if let Some(message) = proc.recv_before(Instant::now() + Duration::from_millis(3))? {
            return Ok(Reached::Said(message));
        }
        if Instant::now() > until {
            return Ok(Reached::NotYet);
        }
    }
}

/// The soft `RLIMIT_MSGQUEUE` of `pid` (`Max msgqueue size` in `/proc/PID/limits`), if it has
/// one.
pub fn soft_message_queue_bytes(pid: i32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let soft = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max msgqueue size"))?;
    soft.split_whitespace().next()?.parse().ok()
}

/// The descriptors of `pid` above the standard three that name a file by its path (not a pipe,
/// a socket or a queue of `queue`), with that path: files the program left open.
pub fn open_files(pid: i32, queue: &str, control_fd: i32) -> Vec<(i32, String)> {
    let queues: Vec<i32> = queue_fds(pid, queue)
        .unwrap_or_default()
        .iter()
        .map(|fd| fd.fd)
        .collect();
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut files: Vec<(i32, String)> = entries
        .flatten()
        .filter_map(|entry| {
            let fd: i32 = entry.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(entry.path()).ok()?;
            let target = target.to_string_lossy().into_owned();
            let file = target.starts_with('/') && !target.starts_with("/dev/");
            (fd > 2 && fd != control_fd && !queues.contains(&fd) && file).then_some((fd, target))
        })
        .collect();
    files.sort();
    files
}
