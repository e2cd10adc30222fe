//! Why a check's processes did not finish: for each one still alive, is it blocked and on what,
//! or busy; then one sentence a student can act on.
//!
//! The grader samples `/proc` a few times before it kills anything: a process that used CPU
//! between samples is busy; one that sits in a system call is blocked, and the call and its
//! first argument (a descriptor) say on what.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use super::inspect::{self, ProcessView, fd_writable, pipe_inode};

const SAMPLES: usize = 5;
const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

/// What one thread was doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activity {
    /// On the CPU (or runnable) between samples.
    Busy,
    PipeRead {
        fd: i32,
        inode: u64,
    },
    PipeWrite {
        fd: i32,
        inode: u64,
    },
    SocketRead {
        fd: i32,
    },
    SocketWrite {
        fd: i32,
    },
    SocketAccept {
        fd: i32,
    },
    /// A futex: a semaphore, mutex or condition variable wait.
    Futex,
    MqSend,
    MqReceive,
    SysvMsgSend,
    SysvMsgReceive,
    SysvSemop,
    WaitChild,
    Sleep,
    Poll,
    /// Blocked in another call (its number).
    Syscall(i64),
    /// Sleeping, the call unknown (no permission to read it).
    Blocked,
}

impl Activity {
    /// What the thread was doing, in words.
    pub fn describe(&self) -> String {
        match self {
            Activity::Busy => "busy on the CPU, not blocked".into(),
            Activity::PipeRead { fd, .. } => format!("blocked reading a pipe (fd {fd})"),
            Activity::PipeWrite { fd, .. } => format!("blocked writing a full pipe (fd {fd})"),
            Activity::SocketRead { fd } => format!("blocked reading a socket (fd {fd})"),
            Activity::SocketWrite { fd } => format!("blocked writing a socket (fd {fd})"),
            Activity::SocketAccept { fd } => format!("blocked in accept() (fd {fd})"),
            Activity::Futex => "blocked on a futex (a semaphore, mutex or condition wait)".into(),
            Activity::MqSend => "blocked sending to a full message queue".into(),
            Activity::MqReceive => "blocked receiving from an empty message queue".into(),
            Activity::SysvMsgSend => "blocked in msgsnd() on a full queue".into(),
            Activity::SysvMsgReceive => "blocked in msgrcv() on an empty queue".into(),
            Activity::SysvSemop => "blocked in semop()".into(),
            Activity::WaitChild => "blocked waiting for a child (waitpid)".into(),
            Activity::Sleep => "sleeping (nanosleep)".into(),
            Activity::Poll => "blocked in poll()/select()".into(),
            Activity::Syscall(nr) => format!("blocked in system call {nr}"),
            Activity::Blocked => "blocked".into(),
        }
    }
}

/// One process that was still alive at the deadline.
#[derive(Debug, Clone)]
pub struct Stuck {
    pub view: ProcessView,
    /// Its role in the check ("the parent", "the echo child"), if the check knows it.
    pub role: String,
    /// Share of one CPU it used while it was sampled.
    pub cpu_share: f64,
    /// What each of its threads was doing at the last sample.
    pub activities: Vec<Activity>,
}

/// What the grader saw of a hung check.
#[derive(Debug, Clone, Default)]
pub struct Hang {
    pub processes: Vec<Stuck>,
}

impl Hang {
    /// The stuck process with this role, if any.
    pub fn by_role(&self, role: &str) -> Option<&Stuck> {
        self.processes.iter().find(|p| p.role == role)
    }

    /// The processes of the check that hold pipe `inode` open for writing.
    pub fn pipe_writers(&self, inode: u64) -> Vec<&Stuck> {
        self.processes
            .iter()
            .filter(|p| {
                p.view.fds.iter().any(|(fd, target)| {
                    pipe_inode(target) == Some(inode) && fd_writable(p.view.pid, *fd) == Some(true)
                })
            })
            .collect()
    }

    /// One line per process: who it is and what it was doing.
    pub fn describe(&self) -> String {
        let mut text = String::new();
        for process in self.processes.iter().take(MAX_DESCRIBED) {
            let mut doing: Vec<String> = process.activities.iter().map(|a| a.describe()).collect();
            doing.dedup();
            let _ = write!(
                text,
                "\n  pid {} ({}, {}): {}; {:.0}% CPU",
                process.view.pid,
                process.role,
                process.view.comm,
                doing.join(", "),
                process.cpu_share * 100.0
            );
        }
        if self.processes.len() > MAX_DESCRIBED {
            let more = self.processes.len() - MAX_DESCRIBED;
            let _ = write!(text, "\n  ... and {more} more processes");
        }
        text
    }
}

/// How many processes a diagnosis looks at: a fork bomb must not make it take minutes.
const MAX_OBSERVED: usize = 32;
/// How many processes a diagnosis lists.
const MAX_DESCRIBED: usize = 8;

/// Samples the processes `pids` (the first [`MAX_OBSERVED`]), labelled by `role_of`, and returns
/// what they were doing.
pub fn observe(pids: &[i32], role_of: &dyn Fn(&ProcessView) -> String) -> Hang {
    let pids = &pids[..pids.len().min(MAX_OBSERVED)];
    let ticks_per_second = procfs::ticks_per_second() as f64;
    let first: BTreeMap<i32, u64> = pids
        .iter()
        .filter_map(|&pid| inspect::view(pid).map(|v| (pid, v.cpu_ticks)))
        .collect();
    let mut busy_seen: BTreeMap<i32, usize> = BTreeMap::new();
    let mut last: BTreeMap<i32, ProcessView> = BTreeMap::new();
    for _ in 0..SAMPLES {
        std::thread::sleep(SAMPLE_INTERVAL);
        for &pid in pids {
            if let Some(view) = inspect::view(pid) {
                if view.threads.iter().any(|t| t.state == 'R') {
                    *busy_seen.entry(pid).or_default() += 1;
                }
                last.insert(pid, view);
            }
        }
    }
    let window = SAMPLES as f64 * SAMPLE_INTERVAL.as_secs_f64();
    let processes = last
        .into_values()
        .filter(|view| view.state != 'Z')
        .map(|view| {
            let used = view
                .cpu_ticks
                .saturating_sub(first.get(&view.pid).copied().unwrap_or(0));
            let cpu_share = used as f64 / ticks_per_second / window;
            let busy = cpu_share > 0.3 || busy_seen.get(&view.pid).copied().unwrap_or(0) > 2;
            let activities = view
                .threads
                .iter()
                .map(|thread| {
                    if busy && thread.state == 'R' {
                        Activity::Busy
                    } else {
                        classify(&view, thread.syscall)
                    }
                })
                .collect();
            Stuck {
                role: role_of(&view),
                view,
                cpu_share,
                activities,
            }
        })
        .collect();
    Hang { processes }
}

/// What a thread blocked in `syscall` (number, first argument) is waiting on.
pub fn classify(view: &ProcessView, syscall: Option<(i64, u64)>) -> Activity {
    let Some((number, arg0)) = syscall else {
        return Activity::Blocked;
    };
    let fd = arg0 as i32;
    let target = view.fds.get(&fd).map(String::as_str).unwrap_or("");
    let on_pipe = pipe_inode(target);
    let on_socket = target.starts_with("socket:");
    match number {
        libc::SYS_read | libc::SYS_readv | libc::SYS_pread64 => match on_pipe {
            Some(inode) => Activity::PipeRead { fd, inode },
            None if on_socket => Activity::SocketRead { fd },
            None => Activity::Syscall(number),
        },
        libc::SYS_write | libc::SYS_writev | libc::SYS_pwrite64 => match on_pipe {
            Some(inode) => Activity::PipeWrite { fd, inode },
            None if on_socket => Activity::SocketWrite { fd },
            None => Activity::Syscall(number),
        },
        libc::SYS_recvfrom | libc::SYS_recvmsg => Activity::SocketRead { fd },
        libc::SYS_sendto | libc::SYS_sendmsg => Activity::SocketWrite { fd },
        libc::SYS_accept | libc::SYS_accept4 => Activity::SocketAccept { fd },
        libc::SYS_futex => Activity::Futex,
        libc::SYS_mq_timedsend => Activity::MqSend,
        libc::SYS_mq_timedreceive => Activity::MqReceive,
        libc::SYS_msgsnd => Activity::SysvMsgSend,
        libc::SYS_msgrcv => Activity::SysvMsgReceive,
        libc::SYS_semop | libc::SYS_semtimedop => Activity::SysvSemop,
        libc::SYS_wait4 | libc::SYS_waitid => Activity::WaitChild,
        libc::SYS_nanosleep | libc::SYS_clock_nanosleep => Activity::Sleep,
        libc::SYS_poll | libc::SYS_ppoll | libc::SYS_select | libc::SYS_pselect6 => Activity::Poll,
        libc::SYS_epoll_wait | libc::SYS_epoll_pwait => Activity::Poll,
        other => Activity::Syscall(other),
    }
}

/// The generic sentence, for when the lab has no better one.
pub fn explain(hang: &Hang) -> String {
    if hang.processes.is_empty() {
        return "no process of the check was left: the program ended without reporting back, or \
                its report was lost"
            .into();
    }
    if let Some(busy) = hang
        .processes
        .iter()
        .find(|p| p.activities.contains(&Activity::Busy))
    {
        return format!(
            "{} (pid {}) is running on the CPU instead of waiting: an endless loop, or a busy \
             wait that should block (on a read, a semaphore or a condition variable) instead",
            busy.role, busy.view.pid
        );
    }
    for process in &hang.processes {
        for activity in &process.activities {
            if let Activity::PipeRead { inode, .. } = activity {
                let writers = hang.pipe_writers(*inode);
                if writers.is_empty() {
                    continue;
                }
                let names: Vec<String> = writers
                    .iter()
                    .map(|w| format!("{} (pid {})", w.role, w.view.pid))
                    .collect();
                return format!(
                    "{} waits for end-of-file on a pipe whose write end is still open in {}: \
                     every process must close the write ends it does not use, or the reader \
                     never sees end-of-file",
                    process.role,
                    names.join(" and ")
                );
            }
        }
    }
    if hang
        .processes
        .iter()
        .all(|p| !p.activities.is_empty() && !p.activities.contains(&Activity::Busy))
    {
        return "every process is blocked waiting for another one: a deadlock".into();
    }
    "the processes did not finish in time".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stuck(pid: i32, role: &str, activities: Vec<Activity>) -> Stuck {
        Stuck {
            view: ProcessView {
                pid,
                ppid: 1,
                pgrp: pid,
                comm: "prog".into(),
                state: 'S',
                cpu_ticks: 0,
                uid: 0,
                threads: Vec::new(),
                fds: BTreeMap::new(),
            },
            role: role.into(),
            cpu_share: 0.0,
            activities,
        }
    }

    #[test]
    fn a_busy_process_is_named_as_spinning() {
        let hang = Hang {
            processes: vec![
                stuck(10, "the waiter", vec![Activity::Busy]),
                stuck(11, "the worker", vec![Activity::Futex]),
            ],
        };
        let sentence = explain(&hang);
        assert!(
            sentence.starts_with("the waiter (pid 10) is running on the CPU"),
            "{sentence}"
        );
    }

    #[test]
    fn all_blocked_is_a_deadlock_and_nothing_left_is_said() {
        let hang = Hang {
            processes: vec![
                stuck(10, "a", vec![Activity::Futex]),
                stuck(11, "b", vec![Activity::MqSend]),
            ],
        };
        assert!(explain(&hang).contains("deadlock"));
        assert!(explain(&Hang::default()).contains("no process of the check was left"));
        assert!(
            hang.describe()
                .contains("pid 11 (b, prog): blocked sending to a full message queue")
        );
    }
}
