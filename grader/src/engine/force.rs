//! Making the timing a bug needs happen, instead of hoping for it: a signal on every thread of a
//! process, a pipe shrunk from outside so that reads and writes come back short, a process held
//! still at a step of its protocol.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::model::Fail;

/// Sends `signal` to every thread of `pid` (a signal to the process lands on one thread only,
/// usually the same one); returns how many threads got it.
pub fn signal_every_thread(pid: i32, signal: Signal) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    let mut sent = 0;
    for task in tasks.flatten() {
        let Some(tid) = task
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: tgkill takes no pointers; a thread that is gone gives ESRCH.
        if unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, signal as i32) } == 0 {
            sent += 1;
        }
    }
    sent
}

/// Binds thread `tid` (a single-threaded program's pid) to one CPU, the first the grader may
/// use, as on a machine or container of one CPU: threads it starts later inherit the mask, and
/// `sched_getaffinity()` (Rust's `available_parallelism()`) then says 1.
pub fn one_cpu(tid: i32) -> Result<(), Fail> {
    use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
    let grader = |e: nix::Error| Fail::Grader(format!("sched_setaffinity({tid}): {e}"));
    let allowed = sched_getaffinity(Pid::from_raw(0)).map_err(grader)?;
    let first = (0..CpuSet::count())
        .find(|&cpu| allowed.is_set(cpu).unwrap_or(false))
        .ok_or_else(|| Fail::Grader("no CPU in the grader's affinity mask".into()))?;
    let mut one = CpuSet::new();
    one.set(first).map_err(grader)?;
    sched_setaffinity(Pid::from_raw(tid), &one).map_err(grader)
}

/// Sets the capacity of the pipe behind descriptor `fd` of `pid` to `bytes` (rounded up by the
/// kernel to a page at least): with a one-page pipe, reads and writes of more than a page come
/// back short however the program was written; with a large one, a writer can finish and exit
/// before its reader has read anything. Returns the capacity set.
pub fn set_pipe_capacity(pid: i32, fd: i32, bytes: i32) -> Result<i32, Fail> {
    let path = format!("/proc/{pid}/fd/{fd}");
    let pipe = std::fs::OpenOptions::new()
        .read(true)
        .open(&path)
        .map_err(|e| Fail::Grader(format!("opening {path}: {e}")))?;
    nix::fcntl::fcntl(&pipe, nix::fcntl::FcntlArg::F_SETPIPE_SZ(bytes))
        .map_err(|e| Fail::Grader(format!("F_SETPIPE_SZ on {path}: {e}")))
}

/// Stops `pid` (SIGSTOP) and waits until it has stopped (up to a second): a signal is delivered
/// on the way back from the kernel, so a process blocked in a read may still take data that
/// arrives after the signal was sent. It stays where it is until [`resume`].
pub fn hold(pid: i32) -> Result<(), Fail> {
    kill(Pid::from_raw(pid), Signal::SIGSTOP).map_err(|e| Fail::Grader(format!("SIGSTOP: {e}")))?;
    until_stopped(pid, std::time::Duration::from_secs(1));
    Ok(())
}

/// Waits until `pid` has stopped (or is gone), for at most `within`.
pub fn until_stopped(pid: i32, within: std::time::Duration) {
    let until = std::time::Instant::now() + within;
    while std::time::Instant::now() < until {
        match super::inspect::view(pid) {
            // Stopped, or a zombie that will never run again.
            Some(view) if !matches!(view.state, 'T' | 't' | 'Z' | 'X') => {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            _ => break,
        }
    }
}

/// Lets a process stopped by [`hold`] go on (SIGCONT). One already gone is not an error: a
/// tracer that seized it from its stop lets it run before the grader resumes it, and it may
/// have answered, exited and been reaped by then.
pub fn resume(pid: i32) -> Result<(), Fail> {
    match kill(Pid::from_raw(pid), Signal::SIGCONT) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(Fail::Grader(format!("SIGCONT: {e}"))),
    }
}

/// A copy of descriptor `fd` of `pid` that shares its open file (`pidfd_getfd`): a flag set on
/// it, such as `O_NONBLOCK`, is set for the process too.
pub fn share_descriptor(pid: i32, fd: i32) -> Result<OwnedFd, Fail> {
    // SAFETY: plain system calls; the descriptors they return are owned below.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        let e = std::io::Error::last_os_error();
        return Err(Fail::Grader(format!("pidfd_open({pid}): {e}")));
    }
    // SAFETY: pidfd_open returned a new descriptor that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    // SAFETY: as above.
    let copy = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if copy < 0 {
        let e = std::io::Error::last_os_error();
        return Err(Fail::Grader(format!("pidfd_getfd({pid}, {fd}): {e}")));
    }
    // SAFETY: pidfd_getfd returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(copy as i32) })
}

/// Sets resource limit `resource` of running process `pid` to `soft` and `hard`, as `prlimit`
/// does. A grader without `CAP_SYS_RESOURCE` (root in a container) may do so only to a process
/// of its own user: for programs run as `user`, a child of the grader takes that user first.
pub fn set_limit(
    pid: i32,
    resource: libc::__rlimit_resource_t,
    soft: u64,
    hard: u64,
    user: Option<(u32, u32)>,
) -> Result<(), Fail> {
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: a valid rlimit to read, no old value asked for.
    let set = || unsafe { libc::prlimit(pid, resource, &limit, std::ptr::null_mut()) };
    let refused = |errno: i32| {
        Fail::Grader(format!(
            "prlimit({pid}, resource {resource}, {soft}/{hard}): {}",
            std::io::Error::from_raw_os_error(errno)
        ))
    };
    let Some((uid, gid)) = user else {
        return match set() {
            0 => Ok(()),
            _ => Err(refused(
                std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
            )),
        };
    };
    // SAFETY: the child makes only async-signal-safe system calls, then exits.
    let child = unsafe { super::process::fork_registered() };
    if child == 0 {
        // SAFETY: plain system calls in the forked child.
        unsafe {
            let done = libc::setresgid(gid, gid, gid) == 0
                && libc::setresuid(uid, uid, uid) == 0
                && set() == 0;
            libc::_exit(if done { 0 } else { *libc::__errno_location() });
        }
    }
    if child < 0 {
        return Err(refused(
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        ));
    }
    let status = nix::sys::wait::waitpid(Pid::from_raw(child), None);
    super::process::forget(child as u32);
    match status {
        Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => Ok(()),
        Ok(nix::sys::wait::WaitStatus::Exited(_, errno)) => Err(refused(errno)),
        other => Err(Fail::Grader(format!(
            "the child setting resource limit {resource} of {pid} ended with {other:?}"
        ))),
    }
}

/// Sets `O_NONBLOCK` on an open file, one shared with a process ([`share_descriptor`]) say.
pub fn set_nonblocking(fd: impl AsFd) -> Result<(), Fail> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let fd = fd.as_fd();
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(|e| Fail::Grader(format!("F_GETFL: {e}")))?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(|e| Fail::Grader(format!("F_SETFL: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resuming_a_process_already_reaped_is_not_an_error() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        child.wait().unwrap();
        resume(pid).unwrap();
    }
}
