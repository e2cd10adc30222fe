//! What the grader does to the lab's processes from outside, to make a step of the protocol
//! happen when it wants: a stop that has taken effect, its own copies of their pipe ends, a
//! descriptor shared with a process, the descriptor limit that leaves a given number free, the
//! status of a zombie, a hold at exit, and signals repeated while a process waits.
//!
//! None of this is specific to pipes between a parent and a child; other labs could use it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::engine::Fail;
use crate::engine::force;
use crate::engine::inspect::{self, SignalMask};

/// Stops `pid` (SIGSTOP) and waits until it has stopped: a process blocked in read() when the
/// signal comes may still take what arrives meanwhile before it stops.
pub fn hold_stopped(pid: i32) -> Result<(), Fail> {
    force::hold(pid)?;
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        match inspect::view(pid).map(|v| v.state) {
            Some('T') | Some('Z') | None => return Ok(()),
            _ => std::thread::sleep(Duration::from_micros(200)),
        }
    }
    Err(Fail::Grader(format!(
        "pid {pid} did not stop after SIGSTOP"
    )))
}

/// The pipe behind descriptor `fd` of `pid`, opened anew by the grader through
/// `/proc/PID/fd/FD` (non-blocking): bytes it reads are taken off the pipe, bytes it writes are
/// added to it, and while it holds a write end open the pipe's reader sees no end-of-file.
pub fn open_pipe(pid: i32, fd: i32, write: bool) -> Result<File, Fail> {
    let path = format!("/proc/{pid}/fd/{fd}");
    std::fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .map_err(|e| Fail::Grader(format!("opening {path}: {e}")))
}

/// Takes up to `len` bytes off a pipe opened with [`open_pipe`]: as many as it holds.
pub fn take_bytes(pipe: &mut File, len: usize) -> Result<Vec<u8>, Fail> {
    let mut bytes = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match pipe.read(&mut bytes[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(Fail::Grader(format!("reading a pipe of the program: {e}"))),
        }
    }
    bytes.truncate(got);
    Ok(bytes)
}

/// Adds `bytes` to a pipe opened with [`open_pipe`]; the pipe must have room for them.
pub fn put_bytes(pipe: &mut File, bytes: &[u8]) -> Result<(), Fail> {
    pipe.write_all(bytes)
        .map_err(|e| Fail::Grader(format!("writing into a pipe of the program: {e}")))
}

/// Waits until `pipe` has room for a write, for at most `within`.
pub fn until_writable(pipe: &File, within: Duration) {
    let mut fds = [nix::poll::PollFd::new(
        pipe.as_fd(),
        nix::poll::PollFlags::POLLOUT,
    )];
    let timeout = nix::poll::PollTimeout::try_from(within).unwrap_or(nix::poll::PollTimeout::MAX);
    let _ = nix::poll::poll(&mut fds, timeout);
}

/// How many bytes a pipe holds now (`FIONREAD`).
pub fn bytes_in_pipe(pipe: &File) -> Option<usize> {
    let mut bytes: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int into `bytes`.
    let got = unsafe { libc::ioctl(pipe.as_raw_fd(), libc::FIONREAD, &mut bytes) };
    (got == 0).then_some(bytes as usize)
}

/// How many bytes a pipe can hold (`F_GETPIPE_SZ`).
pub fn pipe_capacity(pipe: &File) -> Option<i32> {
    nix::fcntl::fcntl(pipe, nix::fcntl::FcntlArg::F_GETPIPE_SZ).ok()
}

/// The descriptor limit (`RLIMIT_NOFILE`, one more than the highest number allowed) that leaves
/// exactly `free` numbers unused below it, given the descriptors a process holds.
pub fn descriptor_limit(held: &BTreeMap<i32, String>, free: usize) -> u64 {
    let mut limit = 0i32;
    let mut left = free;
    loop {
        if !held.contains_key(&limit) {
            if left == 0 {
                break;
            }
            left -= 1;
        }
        limit += 1;
    }
    limit as u64
}

/// How a process ended, from its status in the `waitpid()` format.
pub fn describe_status(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exited with status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!(
            "was killed by {}",
            crate::engine::process::signal_name(libc::WTERMSIG(status))
        )
    } else {
        format!("ended with wait status {status:#x}")
    }
}

/// The exit status (`waitpid()` format) of `pid` once it is a zombie, before its parent reaps
/// it; `None` while it runs or once it is gone.
pub fn zombie_status(pid: i32) -> Option<i32> {
    let stat = procfs::process::Process::new(pid).ok()?.stat().ok()?;
    (stat.state == 'Z').then_some(stat.exit_code?)
}

/// The exit status of `pid` once it is a zombie, waiting up to `wait` for it to become one.
pub fn zombie_status_within(pid: i32, wait: Duration) -> Option<i32> {
    let until = Instant::now() + wait;
    loop {
        let status = zombie_status(pid);
        if status.is_some() || Instant::now() >= until {
            return status;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A process held on its way out: traced (`PTRACE_SEIZE` with `PTRACE_O_TRACEEXIT`), it stops
/// when it exits, after everything it did, before its descriptors are closed by the exit and
/// before it becomes a zombie: for its parent it has not exited yet. Only the thread that
/// seized it may wait for it and let it go.
pub struct ExitHold {
    pid: i32,
    stopped: bool,
    released: bool,
}

impl ExitHold {
    /// Starts tracing `pid` (it goes on running).
    pub fn seize(pid: i32) -> Result<ExitHold, Fail> {
        let options = libc::PTRACE_O_TRACEEXIT | libc::PTRACE_O_EXITKILL;
        // SAFETY: PTRACE_SEIZE takes no pointers; `options` is passed by value.
        let seized = unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, 0, options as libc::c_ulong) };
        if seized != 0 {
            let e = std::io::Error::last_os_error();
            return Err(Fail::Grader(format!("ptrace(PTRACE_SEIZE, {pid}): {e}")));
        }
        Ok(ExitHold {
            pid,
            stopped: false,
            released: false,
        })
    }

    /// Whether the process has stopped at its exit; if so, its exit status (`waitpid()`
    /// format). Does not wait: call again to look again.
    pub fn at_exit(&mut self) -> Result<Option<i32>, Fail> {
        if self.stopped {
            return self.exit_status().map(Some);
        }
        let mut status = 0;
        // SAFETY: waitpid writes the status into `status`.
        let got = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG | libc::__WALL) };
        if got == 0 {
            return Ok(None);
        }
        if got < 0 {
            let e = std::io::Error::last_os_error();
            return Err(Fail::Grader(format!("waitpid on the held process: {e}")));
        }
        if libc::WIFSTOPPED(status) && status >> 8 == libc::SIGTRAP | (libc::PTRACE_EVENT_EXIT << 8)
        {
            self.stopped = true;
            return self.exit_status().map(Some);
        }
        if libc::WIFSTOPPED(status) {
            // A signal on its way to the process: deliver it, and keep watching.
            let signal = libc::WSTOPSIG(status);
            // SAFETY: PTRACE_CONT takes the signal by value.
            unsafe { libc::ptrace(libc::PTRACE_CONT, self.pid, 0, signal as libc::c_ulong) };
            return Ok(None);
        }
        // It ended without stopping (killed by SIGKILL): nothing to hold any more.
        self.released = true;
        Ok(Some(status))
    }

    fn exit_status(&self) -> Result<i32, Fail> {
        let mut message: libc::c_ulong = 0;
        // SAFETY: PTRACE_GETEVENTMSG writes one c_ulong into `message`.
        let got = unsafe {
            libc::ptrace(
                libc::PTRACE_GETEVENTMSG,
                self.pid,
                0,
                &mut message as *mut libc::c_ulong,
            )
        };
        if got != 0 {
            let e = std::io::Error::last_os_error();
            return Err(Fail::Grader(format!("PTRACE_GETEVENTMSG: {e}")));
        }
        Ok(message as i32)
    }

    /// Lets the process finish its exit.
    pub fn release(mut self) {
        self.detach();
    }

    fn detach(&mut self) {
        if self.released {
            return;
        }
        self.released = true;
        if !self.stopped {
            // PTRACE_DETACH needs a stopped tracee: stop it first.
            // SAFETY: PTRACE_INTERRUPT and waitpid take no pointers but `status`.
            unsafe { libc::ptrace(libc::PTRACE_INTERRUPT, self.pid, 0, 0) };
            let until = Instant::now() + Duration::from_millis(200);
            let mut status = 0;
            while Instant::now() < until {
                // SAFETY: as above.
                let got =
                    unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG | libc::__WALL) };
                if got != 0 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        // SAFETY: PTRACE_DETACH takes no pointers.
        unsafe { libc::ptrace(libc::PTRACE_DETACH, self.pid, 0, 0) };
    }
}

impl Drop for ExitHold {
    fn drop(&mut self) {
        self.detach();
    }
}

/// Interrupts `pid` with SIGUSR1 `rounds` times while its threads wait: after each signal,
/// every thread of `waiting` (thread id to the call it waits in) must wake up and be back in a
/// call that `still_waiting` accepts before the next one. Returns `Err` with the signal that
/// broke it and what became of the threads that gave up (`place` says where they waited).
pub fn interrupt_waiting(
    pid: i32,
    waiting: &BTreeMap<i32, &'static str>,
    rounds: u32,
    place: &str,
    still_waiting: &dyn Fn() -> BTreeMap<i32, &'static str>,
) -> Result<(), (u32, Vec<String>)> {
    for round in 0..rounds {
        let before = switches(pid);
        force::signal_every_thread(pid, Signal::SIGUSR1);
        // A thread that retries is back in its call within microseconds; the margin is for a
        // loaded machine.
        let until = Instant::now() + Duration::from_secs(2);
        loop {
            let after = switches(pid);
            let now = still_waiting();
            let back = |tid: &i32| now.contains_key(tid) && after.get(tid) > before.get(tid);
            if waiting.keys().all(back) {
                break;
            }
            let exited = inspect::view(pid).is_none_or(|view| view.state == 'Z');
            let ended = waiting.keys().any(|tid| !after.contains_key(tid));
            if exited || ended || Instant::now() > until {
                let gave_up = waiting
                    .iter()
                    .filter(|(tid, _)| !back(tid))
                    .map(|(tid, call)| {
                        let fate = match (exited, after.contains_key(tid)) {
                            (true, _) => "and the process exited".to_string(),
                            (false, true)
                                if inspect::has_signal(
                                    pid,
                                    *tid,
                                    SignalMask::Blocked,
                                    libc::SIGUSR1,
                                ) =>
                            {
                                "never woke: it blocks SIGUSR1 (its signal mask, SigBlk in \
                                 /proc/PID/task/TID/status), so the signal stayed pending and \
                                 did not interrupt its call"
                                    .to_string()
                            }
                            (false, true) => format!("stopped waiting {place}"),
                            (false, false) => "ended".to_string(),
                        };
                        format!("thread {tid}, blocked in {call}, {fate}")
                    })
                    .collect();
                return Err((round + 1, gave_up));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    Ok(())
}

/// How many times each thread of `pid` has been switched out.
fn switches(pid: i32) -> BTreeMap<i32, u64> {
    inspect::thread_times(pid)
        .into_iter()
        .map(|(tid, times)| (tid, times.switches))
        .collect()
}

/// A stopped process continued (`SIGCONT`) and held right after, alive: traced
/// (`PTRACE_SEIZE`, listening through its stop, `PTRACE_LISTEN`), it is held as the `SIGCONT`
/// reaches it, once the kernel has told its parent that it continued (`CLD_CONTINUED`: a
/// `waitpid()` with `WCONTINUED` reports it) and before it runs on. Without the hold a child that
/// exits at once is a zombie before its parent looks, and the continue is never reported. Only
/// the thread that seized it may let it go.
pub struct ContinuedHold {
    pid: i32,
    released: bool,
}

impl ContinuedHold {
    /// Continues `pid`, stopped (`SIGSTOP`), and holds it at the delivery of the `SIGCONT`.
    /// `None` if the machine does not allow tracing it, or it did not stop there (it is then
    /// continued and untraced).
    pub fn continue_stopped(pid: i32) -> Result<Option<ContinuedHold>, Fail> {
        let options = libc::PTRACE_O_EXITKILL;
        // SAFETY: PTRACE_SEIZE takes no pointers; `options` is passed by value.
        let seized = unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, 0, options as libc::c_ulong) };
        if seized != 0 {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGCONT);
            return Ok(None);
        }
        let mut hold = ContinuedHold {
            pid,
            released: false,
        };
        // Seized in its stop, it reports a group-stop trap; listening, it stays stopped until
        // the SIGCONT, which makes it trap again.
        let until = Instant::now() + Duration::from_secs(2);
        let mut continued = false;
        loop {
            let Some(status) = hold.next_stop(until)? else {
                return Ok(None);
            };
            let event = status >> 16;
            let signal = libc::WSTOPSIG(status);
            if event == libc::PTRACE_EVENT_STOP {
                if !continued {
                    // SAFETY: PTRACE_LISTEN takes no pointers.
                    unsafe { libc::ptrace(libc::PTRACE_LISTEN, pid, 0, 0) };
                    // SAFETY: a plain system call.
                    unsafe { libc::kill(pid, libc::SIGCONT) };
                    continued = true;
                } else {
                    // SAFETY: PTRACE_CONT takes the signal by value.
                    unsafe { libc::ptrace(libc::PTRACE_CONT, pid, 0, 0) };
                }
            } else if signal == libc::SIGCONT && continued {
                return Ok(Some(hold));
            } else {
                // Another signal on its way: deliver it.
                // SAFETY: PTRACE_CONT takes the signal by value.
                unsafe { libc::ptrace(libc::PTRACE_CONT, pid, 0, signal as libc::c_ulong) };
            }
        }
    }

    /// The next ptrace stop of the process, before `until`; `None` (and no hold any more) if
    /// it ended or did not stop in time.
    fn next_stop(&mut self, until: Instant) -> Result<Option<i32>, Fail> {
        loop {
            let mut status = 0;
            // SAFETY: waitpid writes the status into `status`.
            let got = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG | libc::__WALL) };
            if got < 0 {
                self.released = true;
                return Ok(None);
            }
            if got == self.pid {
                if libc::WIFSTOPPED(status) {
                    return Ok(Some(status));
                }
                self.released = true;
                return Ok(None);
            }
            if Instant::now() >= until {
                self.detach();
                return Ok(None);
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Lets the process go on (its `SIGCONT` delivered), untraced.
    pub fn release(mut self) {
        self.detach();
    }

    fn detach(&mut self) {
        if self.released {
            return;
        }
        self.released = true;
        // Held at a signal's delivery, it may be detached at once; the signal is a no-op.
        // SAFETY: PTRACE_DETACH takes the signal by value.
        let detached = unsafe { libc::ptrace(libc::PTRACE_DETACH, self.pid, 0, libc::SIGCONT) };
        if detached != 0 {
            // Not in a stop: stop it, then detach.
            // SAFETY: as above, and waitpid writes only `status`.
            unsafe {
                libc::ptrace(libc::PTRACE_INTERRUPT, self.pid, 0, 0);
                let mut status = 0;
                let until = Instant::now() + Duration::from_millis(200);
                while Instant::now() < until
                    && libc::waitpid(self.pid, &mut status, libc::WNOHANG | libc::__WALL) == 0
                {
                    std::thread::sleep(Duration::from_millis(1));
                }
                libc::ptrace(libc::PTRACE_DETACH, self.pid, 0, libc::SIGCONT);
            }
        }
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), Signal::SIGCONT);
    }
}

impl Drop for ContinuedHold {
    fn drop(&mut self) {
        self.detach();
    }
}
