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
            Activity::Syscall(nr) => match call_name(*nr) {
                Some(name) => format!("blocked in {name}"),
                None => format!("blocked in system call {nr}"),
            },
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
    /// Signals pending that no thread of it takes, because every thread blocks them (bit
    /// `n - 1` for signal `n`): sent, and never delivered.
    pub held_signals: u64,
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
                held_signals: held_signals(&view),
                view,
                cpu_share,
                activities,
            }
        })
        .collect();
    Hang { processes }
}

/// The signals pending for `view`'s process or one of its threads that stay pending because they
/// are blocked where they could be delivered (see [`Stuck::held_signals`]).
fn held_signals(view: &ProcessView) -> u64 {
    use inspect::SignalMask;
    let mask = |tid: i32, which: SignalMask| inspect::signal_mask(view.pid, tid, which);
    let mut blocked_everywhere = u64::MAX;
    let mut held = 0;
    for thread in &view.threads {
        let blocked = mask(thread.tid, SignalMask::Blocked).unwrap_or(0);
        blocked_everywhere &= blocked;
        held |= mask(thread.tid, SignalMask::Pending).unwrap_or(0) & blocked;
    }
    let shared = mask(view.pid, SignalMask::SharedPending).unwrap_or(0);
    if view.threads.is_empty() {
        return held;
    }
    held | (shared & blocked_everywhere)
}

/// The name of a call a thread may block in that [`Activity`] has no kind for, with the library
/// functions that make it where its name is not theirs.
pub fn call_name(number: i64) -> Option<&'static str> {
    Some(match number {
        libc::SYS_rt_sigtimedwait => {
            "rt_sigtimedwait() (waiting for a signal: sigwait(), sigtimedwait(), sigwaitinfo())"
        }
        libc::SYS_rt_sigsuspend => "rt_sigsuspend() (waiting for a signal: sigsuspend())",
        libc::SYS_pause => "pause() (waiting for a signal)",
        libc::SYS_read => "read()",
        libc::SYS_write => "write()",
        libc::SYS_openat => "openat()",
        libc::SYS_flock => "flock()",
        libc::SYS_fcntl => "fcntl() (a record lock)",
        libc::SYS_connect => "connect()",
        libc::SYS_ioctl => "ioctl()",
        _ => return None,
    })
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
        libc::SYS_read | libc::SYS_readv | libc::SYS_pread64 | libc::SYS_splice => match on_pipe {
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

/// How long every process of a check must sit, unchanged, in waits nothing but itself can end
/// before the grader calls it a deadlock instead of waiting out the check's timeout.
pub const DEADLOCK_AFTER: std::time::Duration = std::time::Duration::from_millis(1500);

/// A system call's number and first argument, as `/proc/PID/task/TID/syscall` shows them.
type Syscall = Option<(i64, u64)>;

/// What a deadlock looks like at one moment: the call each thread is blocked in, the bytes each
/// process has read and written, and the CPU time they used in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stillness {
    /// Per thread: pid, tid, and the call (number, first argument) it is blocked in.
    calls: Vec<(i32, i32, Syscall)>,
    io: Vec<(i32, u64, u64)>,
    run_ns: u64,
}

impl Stillness {
    /// Whether nothing moved between `earlier` and `self`, `elapsed` apart: the same calls, no
    /// byte read or written, hardly any CPU (a signal the grader sends wakes a thread for
    /// microseconds, then it blocks again in the same call).
    pub fn unchanged_since(&self, earlier: &Stillness, elapsed: std::time::Duration) -> bool {
        let cpu = self.run_ns.saturating_sub(earlier.run_ns) as f64;
        self.calls == earlier.calls
            && self.io == earlier.io
            && cpu < 0.05 * elapsed.as_nanos() as f64
    }
}

/// What the processes `pids` are doing, when every thread of every one of them is blocked in a
/// wait that only the processes themselves can end: reading a pipe whose write ends are all held
/// by them, writing a pipe whose read ends are all held by them, or waiting for a child. Two
/// snapshots [`DEADLOCK_AFTER`] apart with nothing moved between them mean a deadlock; `None`
/// means something may still move (a process runs, sleeps with a timeout, or waits on the
/// grader or on an object the grader could act on).
pub fn deadlock_snapshot(pids: &[i32], grader_pipes: &[u64]) -> Option<Stillness> {
    let views: Vec<ProcessView> = pids.iter().filter_map(|&p| inspect::view(p)).collect();
    let alive: Vec<&ProcessView> = views.iter().filter(|v| v.state != 'Z').collect();
    if alive.is_empty() {
        return None;
    }
    // Which processes hold each pipe's ends, by inode: (readers, writers).
    let mut ends: BTreeMap<u64, (Vec<i32>, Vec<i32>)> = BTreeMap::new();
    for view in &alive {
        for (fd, target) in &view.fds {
            if let Some(inode) = pipe_inode(target) {
                let entry = ends.entry(inode).or_default();
                match fd_writable(view.pid, *fd) {
                    Some(true) => entry.1.push(view.pid),
                    _ => entry.0.push(view.pid),
                }
            }
        }
    }
    // The grader's own descriptors: a pipe it holds is one it could write or read.
    let grader_holds: Vec<u64> = std::fs::read_dir("/proc/self/fd")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|t| pipe_inode(&t.to_string_lossy()))
                .collect()
        })
        .unwrap_or_default();
    let mut still = Stillness {
        calls: Vec::new(),
        io: Vec::new(),
        run_ns: 0,
    };
    for view in &alive {
        for thread in &view.threads {
            if thread.state != 'S' {
                return None;
            }
            let own_pipe =
                |inode: u64| !grader_pipes.contains(&inode) && !grader_holds.contains(&inode);
            let ends_of = |inode: u64| ends.get(&inode).cloned().unwrap_or_default();
            let closed = match classify(view, thread.syscall) {
                Activity::PipeRead { inode, .. } => own_pipe(inode) && !ends_of(inode).1.is_empty(),
                Activity::PipeWrite { inode, .. } => {
                    own_pipe(inode) && !ends_of(inode).0.is_empty()
                }
                Activity::WaitChild => true,
                _ => false,
            };
            if !closed {
                return None;
            }
            still.calls.push((view.pid, thread.tid, thread.syscall));
        }
        let io = inspect::io(view.pid).unwrap_or_default();
        still.io.push((view.pid, io.read_bytes, io.written_bytes));
        still.run_ns += inspect::thread_times(view.pid)
            .values()
            .map(|t| t.run_ns)
            .sum::<u64>();
    }
    Some(still)
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
    // A signal sent to end or wake a process that blocks it never arrives: whatever else waits,
    // that is where the chain starts.
    if let Some(holder) = hang.processes.iter().find(|p| p.held_signals != 0) {
        return format!(
            "{} (pid {}) has {} pending: blocked in every one of its threads, so it was sent and \
             never delivered. Unless the program takes it with sigwait() or a signalfd, its \
             signal mask was left blocking it (a mask changed around a call must be put back \
             with SIG_SETMASK and the mask saved before, not left set nor unblocked by hand)",
            holder.role,
            holder.view.pid,
            super::process::signal_names(holder.held_signals)
        );
    }
    // A reader that holds the write end of the very pipe it reads waits for itself: the root of
    // the chain, whoever else waits on it.
    for process in &hang.processes {
        for activity in &process.activities {
            if let Activity::PipeRead { fd, inode } = activity {
                let own: Vec<i32> = process
                    .view
                    .fds
                    .iter()
                    .filter(|(other, target)| {
                        pipe_inode(target) == Some(*inode)
                            && fd_writable(process.view.pid, **other) == Some(true)
                    })
                    .map(|(other, _)| *other)
                    .collect();
                if !own.is_empty() {
                    return format!(
                        "{} (pid {}) waits for end-of-file on the pipe it reads (fd {fd}) while it \
                         holds that pipe's write end itself (fd {}): end-of-file never comes. \
                         Right after fork(), every process must close the pipe ends it does not \
                         use",
                        process.role,
                        process.view.pid,
                        own.iter()
                            .map(i32::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
            }
        }
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
                     either that end is one its holder does not use and should have closed \
                     right after fork(), or its holder has not finished writing and closing \
                     it (look at what that process was doing, below)",
                    process.role,
                    names.join(" and ")
                );
            }
        }
    }
    // A sleep or a timed wait ends by itself: a process in one is not deadlocked, it waits for
    // time to pass (a poll loop, or a sleep longer than the check allows).
    if let Some(sleeper) = hang
        .processes
        .iter()
        .find(|p| p.activities.contains(&Activity::Sleep))
    {
        return format!(
            "{} (pid {}) was sleeping (nanosleep) when time ran out: a loop that sleeps and \
             looks again, or a sleep, where it should block until the other side acts (on a \
             read, a semaphore, a queue or a condition variable)",
            sleeper.role, sleeper.view.pid
        );
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

/// A clock's name (`clock_gettime()`'s first argument), with its id: "CLOCK_TAI (clock 11)".
pub fn clock_name(clock: i32) -> String {
    let name = match clock {
        libc::CLOCK_REALTIME => "CLOCK_REALTIME",
        libc::CLOCK_MONOTONIC => "CLOCK_MONOTONIC",
        libc::CLOCK_PROCESS_CPUTIME_ID => "CLOCK_PROCESS_CPUTIME_ID",
        libc::CLOCK_THREAD_CPUTIME_ID => "CLOCK_THREAD_CPUTIME_ID",
        libc::CLOCK_MONOTONIC_RAW => "CLOCK_MONOTONIC_RAW",
        libc::CLOCK_REALTIME_COARSE => "CLOCK_REALTIME_COARSE",
        libc::CLOCK_MONOTONIC_COARSE => "CLOCK_MONOTONIC_COARSE",
        libc::CLOCK_BOOTTIME => "CLOCK_BOOTTIME",
        libc::CLOCK_TAI => "CLOCK_TAI",
        _ => return format!("clock {clock}"),
    };
    format!("{name} (clock {clock})")
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
            held_signals: 0,
        }
    }

    fn settled(command: &mut std::process::Command) -> std::process::Child {
        let child = command.spawn().expect("the command starts");
        let pid = child.id() as i32;
        let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::time::Instant::now() < until
            && !inspect::view(pid).is_some_and(|v| {
                v.threads
                    .iter()
                    .all(|t| t.state == 'S' && t.syscall.is_some())
            })
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        child
    }

    #[test]
    fn a_reader_holding_its_own_pipe_is_a_deadlock_and_a_sleeper_is_not() {
        let mut stuck = settled(
            std::process::Command::new("python3")
                .args(["-c", "import os; r, w = os.pipe(); os.read(r, 1)"]),
        );
        let mut sleeper = settled(std::process::Command::new("sleep").arg("10"));
        let mut reader =
            settled(std::process::Command::new("cat").stdin(std::process::Stdio::piped()));
        // Python takes a while to start on a busy machine: wait until it reads its pipe.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut stuck_now = None;
        while stuck_now.is_none() && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(20));
            stuck_now = deadlock_snapshot(&[stuck.id() as i32], &[]);
        }
        let sleeper_now = deadlock_snapshot(&[sleeper.id() as i32], &[]);
        // cat's pipe is held open for writing by this test, outside the checked processes.
        let reader_now = deadlock_snapshot(&[reader.id() as i32], &[]);
        let hang = observe(&[stuck.id() as i32], &|_| "the reader".into());
        // The explanation reads /proc too: the processes must still be there.
        let sentence = explain(&hang);
        for child in [&mut stuck, &mut sleeper, &mut reader] {
            let _ = child.kill();
            let _ = child.wait();
        }
        assert!(stuck_now.is_some());
        assert!(sleeper_now.is_none());
        assert!(reader_now.is_none());
        assert!(
            sentence.contains("holds that pipe's write end itself"),
            "{sentence}"
        );
    }

    #[test]
    fn a_signal_blocked_and_pending_is_named_before_the_wait() {
        let script = "import os, signal, sys\n\
                      signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM, signal.SIGHUP])\n\
                      os.kill(os.getpid(), signal.SIGTERM)\n\
                      sys.stdin.read()";
        let mut blocked = std::process::Command::new("python3")
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("python3 starts");
        let pid = blocked.id() as i32;
        let pending = || inspect::has_signal(pid, pid, inspect::SignalMask::SharedPending, 15);
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !pending() && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let hang = observe(&[pid], &|_| "the creator".into());
        let _ = blocked.kill();
        let _ = blocked.wait();
        let sentence = explain(&hang);
        assert!(
            sentence.starts_with(&format!("the creator (pid {pid}) has SIGTERM pending")),
            "{sentence}"
        );
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
