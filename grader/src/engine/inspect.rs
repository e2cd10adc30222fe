//! What `/proc` shows of the processes a check started.

use std::collections::BTreeMap;

use nix::unistd::Pid;

/// One process, as read from `/proc/PID` at one moment.
#[derive(Debug, Clone)]
pub struct ProcessView {
    pub pid: i32,
    pub ppid: i32,
    pub pgrp: i32,
    pub comm: String,
    /// `R` running, `S` sleeping, `D` disk sleep, `Z` zombie, `T` stopped, ...
    pub state: char,
    /// User plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    pub uid: u32,
    /// For each thread: the system call it is blocked in, if any.
    pub threads: Vec<ThreadView>,
    /// Open descriptors: number to what `readlink /proc/PID/fd/N` says (`pipe:[123]`, ...).
    pub fds: BTreeMap<i32, String>,
}

/// One thread of a process.
#[derive(Debug, Clone)]
pub struct ThreadView {
    pub tid: i32,
    pub state: char,
    /// The system call number and its first argument, from `/proc/PID/task/TID/syscall`;
    /// `None` when running in user space or unreadable.
    pub syscall: Option<(i64, u64)>,
    pub wchan: String,
}

/// One line of the process table.
#[derive(Debug, Clone, Copy)]
pub struct Row {
    pub pid: i32,
    pub ppid: i32,
    pub pgrp: i32,
    pub state: char,
}

/// Every process on the machine. Cheap: only `stat` is read.
pub fn process_table() -> Vec<Row> {
    let Ok(all) = procfs::process::all_processes() else {
        return Vec::new();
    };
    all.filter_map(|p| p.ok())
        .filter_map(|p| p.stat().ok())
        .map(|s| Row {
            pid: s.pid,
            ppid: s.ppid,
            pgrp: s.pgrp,
            state: s.state,
        })
        .collect()
}

/// The processes that belong to a check: those in `groups` (process groups the check created)
/// and every descendant of `roots`, zombies included. Only the grader's own descendants count:
/// it is the parent, or the subreaper, of every process a check starts, while the pid of one
/// that has been reaped (and a group of that number) may since be another program's.
pub fn tree(roots: &[i32], groups: &[i32]) -> Vec<Row> {
    let table = process_table();
    let ours = descendants(&table, std::process::id() as i32);
    let mut members: std::collections::BTreeMap<i32, Row> = table
        .iter()
        .filter(|row| ours.contains(&row.pid))
        .filter(|row| roots.contains(&row.pid) || groups.contains(&row.pgrp))
        .map(|row| (row.pid, *row))
        .collect();
    let mut grew = true;
    while grew {
        grew = false;
        for row in &table {
            if members.contains_key(&row.ppid) && !members.contains_key(&row.pid) {
                members.insert(row.pid, *row);
                grew = true;
            }
        }
    }
    members.into_values().collect()
}

/// Whether `pid` is a live process that does not descend from the grader: a pid of a check's
/// that has been reaped and taken since by a program of another's (see [`tree`]).
pub fn is_anothers(pid: i32) -> bool {
    let me = std::process::id() as i32;
    let parent = |pid: i32| {
        procfs::process::Process::new(pid)
            .ok()
            .and_then(|p| p.stat().ok())
            .map(|s| s.ppid)
    };
    let Some(mut up) = parent(pid) else {
        return false;
    };
    for _ in 0..256 {
        if up == me {
            return false;
        }
        match parent(up) {
            Some(next) if up > 1 => up = next,
            _ => return true,
        }
    }
    true
}

/// Whether a process still runs the grader's own executable: a tracer the grader forked into a
/// program's group, or a program between fork and exec. Either holds, for a moment, copies of
/// the grader's descriptors (a file another process opened, as the file audit is told), which
/// are not the program's doing; nor is a tracer still on its way out when the program has
/// exited.
pub fn grader_forks() -> impl Fn(i32) -> bool {
    let own = std::fs::read_link("/proc/self/exe").ok();
    move |pid| own.is_some() && std::fs::read_link(format!("/proc/{pid}/exe")).ok() == own
}

/// The descendants of `pid` in `table`, not `pid` itself.
fn descendants(table: &[Row], pid: i32) -> std::collections::BTreeSet<i32> {
    let mut found = std::collections::BTreeSet::from([pid]);
    let mut grew = true;
    while grew {
        grew = false;
        for row in table {
            if found.contains(&row.ppid) && found.insert(row.pid) {
                grew = true;
            }
        }
    }
    found.remove(&pid);
    found
}

/// Reads one process; `None` if it is gone.
pub fn view(pid: i32) -> Option<ProcessView> {
    let process = procfs::process::Process::new(pid).ok()?;
    let stat = process.stat().ok()?;
    let uid = process.uid().unwrap_or(u32::MAX);
    let mut threads = Vec::new();
    if let Ok(tasks) = process.tasks() {
        for task in tasks.flatten() {
            let Ok(task_stat) = task.stat() else { continue };
            threads.push(ThreadView {
                tid: task.tid,
                state: task_stat.state,
                syscall: call_of(pid, task.tid).map(|(number, args)| (number, args[0])),
                wchan: wchan(pid, task.tid),
            });
        }
    }
    let mut fds = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for entry in entries.flatten() {
            let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            if let Ok(target) = std::fs::read_link(entry.path()) {
                fds.insert(fd, target.display().to_string());
            }
        }
    }
    Some(ProcessView {
        pid,
        ppid: stat.ppid,
        pgrp: stat.pgrp,
        comm: stat.comm,
        state: stat.state,
        cpu_ticks: stat.utime + stat.stime,
        uid,
        threads,
        fds,
    })
}

/// The system call thread `tid` of `pid` is in (blocked, or held by a tracer), with its six
/// arguments, from `/proc/PID/task/TID/syscall`; `None` when it runs in user space or is gone.
/// A call the kernel resumes as `restart_syscall()` (a timed wait interrupted by a signal or
/// by a tracer's attach) is named by the call it resumes.
pub fn call_of(pid: i32, tid: i32) -> Option<(i64, [u64; 6])> {
    let (number, args) =
        parse_syscall(&std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).ok()?)?;
    if number != libc::SYS_restart_syscall {
        return Some((number, args));
    }
    Some((resumed_call(&wchan(pid, tid)).unwrap_or(number), args))
}

/// The kernel function thread `tid` of `pid` sleeps in (`/proc/PID/task/TID/wchan`).
fn wchan(pid: i32, tid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/wchan")).unwrap_or_default()
}

/// The call a `restart_syscall()` resumes, from the kernel function it sleeps in: its
/// registers still hold that call's arguments, only its number is replaced.
fn resumed_call(wchan: &str) -> Option<i64> {
    if wchan.starts_with("futex") {
        Some(libc::SYS_futex)
    } else if wchan.contains("poll") {
        Some(libc::SYS_poll)
    } else if wchan.contains("nanosleep") {
        // Shown by some kernels only; others name the system call's entry.
        Some(libc::SYS_clock_nanosleep)
    } else {
        None
    }
}

/// Where thread `tid` of `pid`, stopped outside any system call (at a watchpoint, held by a
/// tracer), is in its code: its instruction pointer, from `/proc/PID/task/TID/syscall` ("-1 SP
/// PC"); `None` when it is in a call, runs, or is gone.
pub fn stopped_at(pid: i32, tid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).ok()?;
    let mut words = text.split_whitespace();
    if words.next()? != "-1" {
        return None;
    }
    let pc = words.nth(1)?;
    u64::from_str_radix(pc.trim_start_matches("0x"), 16).ok()
}

/// The file mapped at `addr` in `pid` (`/proc/PID/maps`), if a file is mapped there.
pub fn mapped_file(pid: i32, addr: u64) -> Option<String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    maps.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (start, end) = fields.next()?.split_once('-')?;
        let (start, end) = (
            u64::from_str_radix(start, 16).ok()?,
            u64::from_str_radix(end, 16).ok()?,
        );
        let path = fields.nth(4)?;
        (start <= addr && addr < end && path.starts_with('/')).then(|| path.to_string())
    })
}

/// Parses `/proc/.../syscall`: "NR ARG0 ... ARG5 SP PC" when in a call, "running" or "-1 ..."
/// otherwise.
fn parse_syscall(text: &str) -> Option<(i64, [u64; 6])> {
    let mut words = text.split_whitespace();
    let number: i64 = words.next()?.parse().ok()?;
    if number < 0 {
        return None;
    }
    let mut args = [0u64; 6];
    for arg in &mut args {
        *arg = u64::from_str_radix(words.next()?.trim_start_matches("0x"), 16).ok()?;
    }
    Some((number, args))
}

/// The pipe inode in a descriptor target like `pipe:[1234]`.
pub fn pipe_inode(target: &str) -> Option<u64> {
    target
        .strip_prefix("pipe:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Whether descriptor `fd` of `pid` is open for writing (from `/proc/PID/fdinfo/FD`).
pub fn fd_writable(pid: i32, fd: i32) -> Option<bool> {
    Some(fd_flags(pid, fd)? & 0o3 != 0)
}

/// The flags of the open file description behind descriptor `fd` of `pid` (`O_NONBLOCK`, the
/// access mode), from `/proc/PID/fdinfo/FD`: shared by every process that inherited it.
pub fn fd_flags(pid: i32, fd: i32) -> Option<u32> {
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
    let flags = info.lines().find_map(|l| l.strip_prefix("flags:"))?.trim();
    u32::from_str_radix(flags, 8).ok()
}

/// A signal mask of one thread, as `/proc/PID/task/TID/status` shows it (in hexadecimal): bit
/// n-1 is signal n.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalMask {
    /// `SigBlk`: the signals the thread blocks.
    Blocked,
    /// `SigIgn`: the signals set to be ignored (`SIG_IGN`), the same in every thread.
    Ignored,
    /// `SigCgt`: the signals caught by a handler, the same in every thread.
    Caught,
    /// `SigPnd`: the signals pending for the thread itself.
    Pending,
    /// `ShdPnd`: the signals pending for the whole process.
    SharedPending,
}

impl SignalMask {
    /// The field's name with its colon, as it begins its line.
    fn field(self) -> &'static str {
        match self {
            SignalMask::Blocked => "SigBlk:",
            SignalMask::Ignored => "SigIgn:",
            SignalMask::Caught => "SigCgt:",
            SignalMask::Pending => "SigPnd:",
            SignalMask::SharedPending => "ShdPnd:",
        }
    }
}

/// The `mask` of thread `tid` of `pid` (`tid` = `pid`: its main thread), from
/// `/proc/PID/task/TID/status`; `None` once it is gone, or if the file cannot be read.
pub fn signal_mask(pid: i32, tid: i32, mask: SignalMask) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).ok()?;
    let value = status.lines().find_map(|l| l.strip_prefix(mask.field()))?;
    u64::from_str_radix(value.trim(), 16).ok()
}

/// Whether `signal` is in the `mask` of thread `tid` of `pid` (see [`signal_mask`]); false if
/// the file cannot be read.
pub fn has_signal(pid: i32, tid: i32, mask: SignalMask, signal: i32) -> bool {
    (1..=64).contains(&signal)
        && signal_mask(pid, tid, mask).is_some_and(|bits| bits & (1 << (signal - 1)) != 0)
}

/// The file-mode creation mask of `pid` (`Umask:` in `/proc/PID/status`, in octal); `None` once
/// it is gone, or if the file cannot be read.
pub fn umask(pid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let value = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(value.trim(), 8).ok()
}

/// The soft and hard descriptor limits (`RLIMIT_NOFILE`) of `pid`, from `/proc/PID/limits`
/// (readable whoever runs the process, where `prlimit()` needs its user or `CAP_SYS_RESOURCE`);
/// `None` once it is gone. An unlimited value reads as `RLIM_INFINITY`.
pub fn open_files_limit(pid: i32) -> Option<(u64, u64)> {
    use procfs::process::LimitValue;
    let limit = procfs::process::Process::new(pid)
        .ok()?
        .limits()
        .ok()?
        .max_open_files;
    let value = |v: LimitValue| match v {
        LimitValue::Value(n) => n,
        LimitValue::Unlimited => libc::RLIM_INFINITY,
    };
    Some((value(limit.soft_limit), value(limit.hard_limit)))
}

/// What one thread has done so far: how often it went to sleep and how long it ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ThreadTimes {
    /// Context switches, voluntary (it slept) and involuntary (it was preempted).
    pub switches: u64,
    /// The voluntary ones only: how often it went to sleep.
    pub sleeps: u64,
    /// Time on a CPU, in nanoseconds (`/proc/PID/task/TID/schedstat`).
    pub run_ns: u64,
}

/// Each thread of `pid`, by thread id: its [`ThreadTimes`]. Empty if the process is gone.
pub fn thread_times(pid: i32) -> BTreeMap<i32, ThreadTimes> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return BTreeMap::new();
    };
    let mut times = BTreeMap::new();
    for task in tasks.flatten() {
        let Some(tid) = task
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<i32>().ok())
        else {
            continue;
        };
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let count = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        let run_ns = std::fs::read_to_string(task.path().join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        times.insert(
            tid,
            ThreadTimes {
                switches: count("voluntary_ctxt_switches:") + count("nonvoluntary_ctxt_switches:"),
                sleeps: count("voluntary_ctxt_switches:"),
                run_ns,
            },
        );
    }
    times
}

/// A process's I/O through system calls, from `/proc/PID/io`: what its read-like and
/// write-like calls moved (files, pipes, sockets alike; not memory mappings, not message
/// queues), including the children it has reaped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoCounters {
    /// Bytes returned by read(), recv() and the like.
    pub read_bytes: u64,
    /// Bytes given to write(), send() and the like.
    pub written_bytes: u64,
    /// How many read-like calls it made.
    pub read_calls: u64,
    /// How many write-like calls it made.
    pub write_calls: u64,
}

impl std::ops::Add for IoCounters {
    type Output = IoCounters;
    fn add(self, other: IoCounters) -> IoCounters {
        IoCounters {
            read_bytes: self.read_bytes + other.read_bytes,
            written_bytes: self.written_bytes + other.written_bytes,
            read_calls: self.read_calls + other.read_calls,
            write_calls: self.write_calls + other.write_calls,
        }
    }
}

impl IoCounters {
    /// What happened between `earlier` and `self`.
    pub fn since(self, earlier: IoCounters) -> IoCounters {
        IoCounters {
            read_bytes: self.read_bytes.saturating_sub(earlier.read_bytes),
            written_bytes: self.written_bytes.saturating_sub(earlier.written_bytes),
            read_calls: self.read_calls.saturating_sub(earlier.read_calls),
            write_calls: self.write_calls.saturating_sub(earlier.write_calls),
        }
    }
}

/// The I/O counters of `pid`; `None` if it is gone or not readable.
pub fn io(pid: i32) -> Option<IoCounters> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    Some(IoCounters {
        read_bytes: field("rchar:")?,
        written_bytes: field("wchar:")?,
        read_calls: field("syscr:")?,
        write_calls: field("syscw:")?,
    })
}

/// The children of `pid` (alive or zombie).
pub fn children(pid: Pid) -> Vec<i32> {
    process_table()
        .into_iter()
        .filter(|row| row.ppid == pid.as_raw())
        .map(|row| row.pid)
        .collect()
}

/// The file mappings of process `pid` ("self" for the grader): start, end, offset, and the
/// file as "device inode path".
fn file_mappings(pid: &str) -> Option<Vec<(u64, u64, u64, String)>> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    Some(
        maps.lines()
            .filter_map(|line| {
                let words: Vec<&str> = line.split_whitespace().collect();
                let (range, offset) = (words.first()?, words.get(2)?);
                let file = words.get(3..)?.join(" ");
                let (start, end) = range.split_once('-')?;
                Some((
                    u64::from_str_radix(start, 16).ok()?,
                    u64::from_str_radix(end, 16).ok()?,
                    u64::from_str_radix(offset, 16).ok()?,
                    file,
                ))
            })
            .collect(),
    )
}

/// `address` of process `from` moved to process `to`'s mapping of the same file (same device
/// and inode); `None` if either mapping is not found.
fn same_place_in(from: &str, address: u64, to: &str) -> Option<u64> {
    let theirs = file_mappings(from)?;
    let (start, _, offset, file) = theirs
        .iter()
        .find(|(s, e, _, _)| (*s..*e).contains(&address))?;
    let at_in_file = address - start + offset;
    file_mappings(to)?
        .into_iter()
        .find(|(s, e, o, f)| f == file && (*o..*o + (e - s)).contains(&at_in_file))
        .map(|(s, _, o, _)| s + (at_in_file - o))
}

/// Where function `name` of the C library lies in `pid`: its address in the grader (the dynamic
/// linker's answer) moved from the grader's mapping of that library to `pid`'s mapping of the
/// same file (same device and inode). `None` if the function or either mapping is not found.
pub fn library_function_in(pid: i32, name: &std::ffi::CStr) -> Option<u64> {
    // SAFETY: dlsym only reads the name, a valid C string.
    let own = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) } as u64;
    if own == 0 {
        return None;
    }
    same_place_in("self", own, &pid.to_string())
}

/// The exported function of a shared library whose code holds `address` in `pid` (the dynamic
/// linker's answer for the same place in the grader's mapping of that library): `None` for
/// code outside every exported function (an internal one) or a library the grader has not
/// loaded.
pub fn library_function_at(pid: i32, address: u64) -> Option<String> {
    let own = same_place_in(&pid.to_string(), address, "self")?;
    // SAFETY: dladdr only reads the address and fills `info`.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    if unsafe { libc::dladdr(own as *const libc::c_void, &mut info) } == 0
        || info.dli_sname.is_null()
    {
        return None;
    }
    // SAFETY: dladdr's symbol name is a C string of the loaded library.
    let name = unsafe { std::ffi::CStr::from_ptr(info.dli_sname) };
    Some(name.to_string_lossy().into_owned())
}

/// Whether every thread of `pid` sleeps, one of them in `syscall`.
pub fn sleeps_in(pid: i32, syscall: i64) -> bool {
    view(pid).is_some_and(|view| {
        view.threads.iter().all(|t| matches!(t.state, 'S' | 'D'))
            && view
                .threads
                .iter()
                .any(|t| t.syscall.map(|(nr, _)| nr) == Some(syscall))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::{Signal, kill};
    use nix::sys::wait::{WaitPidFlag, waitpid};
    use nix::unistd::Pid;
    use std::time::{Duration, Instant};

    /// A real-time signal blocked in the test's own thread shows in its `SigBlk`, and sent to
    /// that thread, in its `SigPnd` (not the process's `ShdPnd`); neither once it is taken and
    /// the mask is put back.
    #[test]
    fn a_threads_blocked_and_pending_signal_shows_in_its_masks() {
        use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};
        let signal = libc::SIGRTMIN() + 5;
        let (pid, tid) = (std::process::id() as i32, nix::unistd::gettid().as_raw());
        // SAFETY: the set is initialized by sigemptyset() before a signal is added.
        let set = unsafe {
            let mut raw: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut raw);
            libc::sigaddset(&mut raw, signal);
            SigSet::from_sigset_t_unchecked(raw)
        };
        let mut old = SigSet::empty();
        pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old)).expect("block");
        let mask = signal_mask(pid, tid, SignalMask::Blocked);
        let blocked = has_signal(pid, tid, SignalMask::Blocked, signal);
        // SAFETY: the signal goes to this thread only, which blocks it.
        unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, signal) };
        let pending = has_signal(pid, tid, SignalMask::Pending, signal);
        let shared = has_signal(pid, tid, SignalMask::SharedPending, signal);
        let mut taken = 0;
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: the set and the timeout are valid for the call; no information is asked.
        while unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &zero) } == signal {
            taken += 1;
        }
        let pending_after = has_signal(pid, tid, SignalMask::Pending, signal);
        pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None).expect("put the mask back");
        let unblocked = !has_signal(pid, tid, SignalMask::Blocked, signal);
        // SAFETY: `old` is an initialized set.
        let was_blocked = unsafe { libc::sigismember(old.as_ref(), signal) } == 1;
        assert!(!was_blocked, "signal {signal} was blocked before the test");
        let bit = 1u64 << (signal - 1);
        assert!(
            mask.is_some_and(|mask| mask & bit != 0),
            "SigBlk {mask:x?} lacks signal {signal}"
        );
        assert!(blocked && pending && !shared && !pending_after && unblocked);
        assert_eq!(taken, 1);
    }

    /// The test process's own umask, set to another value and put back, is what `umask()` reads.
    #[test]
    fn the_own_umask_is_read() {
        use nix::sys::stat::{Mode, umask as set_umask};
        let pid = std::process::id() as i32;
        let old = set_umask(Mode::from_bits_truncate(0o027));
        let seen = umask(pid);
        let probe = set_umask(old);
        let seen_after = umask(pid);
        assert_eq!(probe.bits(), 0o027);
        assert_eq!(seen, Some(0o027));
        assert_eq!(seen_after, Some(old.bits()));
    }

    /// The raw number `/proc` shows for `pid`'s call, once `ready` accepts it.
    fn raw_call_once(pid: i32, ready: impl Fn(i64) -> bool) -> i64 {
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
            if let Some((number, _)) = parse_syscall(&text)
                && (ready(number) || Instant::now() > until)
            {
                return number;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_timed_wait_resumed_after_a_stop_is_named_by_its_call() {
        // SAFETY: the child makes async-signal-safe calls only.
        let child = unsafe { crate::engine::process::fork_registered() };
        if child == 0 {
            unsafe {
                libc::poll(std::ptr::null_mut(), 0, 60_000);
                libc::_exit(0);
            }
        }
        let pid = Pid::from_raw(child);
        assert_eq!(
            raw_call_once(child, |n| n == libc::SYS_poll),
            libc::SYS_poll
        );
        // A stop interrupts the wait; the kernel resumes it as restart_syscall().
        kill(pid, Signal::SIGSTOP).expect("stop");
        waitpid(pid, Some(WaitPidFlag::WUNTRACED)).expect("stopped");
        kill(pid, Signal::SIGCONT).expect("continue");
        let raw = raw_call_once(child, |n| n == libc::SYS_restart_syscall);
        let named = call_of(child, child).map(|(number, _)| number);
        kill(pid, Signal::SIGKILL).expect("kill");
        waitpid(pid, None).expect("reaped");
        crate::engine::process::forget(child as u32);
        assert_eq!(raw, libc::SYS_restart_syscall);
        assert_eq!(named, Some(libc::SYS_poll));
    }
}
