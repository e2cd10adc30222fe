//! Looking at the bank from outside, and acting on it: where a process sleeps (which futex of
//! the segment, or which other call), how it maps and holds the segment, and the grader taking
//! the bank's mutex itself, or dying with it held, as one more process would.

use std::ptr::NonNull;
use std::sync::mpsc::{Sender, channel};
use std::thread::JoinHandle;
use std::time::Duration;

use super::segment::{Layout, Segment, dev_shm};
use crate::engine::Fail;
use crate::engine::inspect;

/// glibc: `PTHREAD_MUTEX_PSHARED_BIT` in the mutex's `__kind`.
pub(super) const KIND_PSHARED: i32 = 128;
/// glibc: `PTHREAD_MUTEX_ROBUST_NORMAL_NP` in the mutex's `__kind`.
pub(super) const KIND_ROBUST: i32 = 16;
/// glibc: the priority-inheritance and priority-protection bits, which the lab does not use.
const KIND_PRIORITY: i32 = 32 | 64;
/// Where `__owner` (the holder's thread id, 0 when free) lies in glibc's `pthread_mutex_t`.
pub(super) const MUTEX_OWNER_AT: usize = 8;
/// Where `__kind` lies in glibc's `pthread_mutex_t` (64-bit).
pub(super) const MUTEX_KIND_AT: usize = 16;
/// Where `__wrefs` lies in glibc's `pthread_cond_t`: bit 0 process-shared, bit 2 destroyed.
pub(super) const COND_WREFS_AT: usize = 36;

/// Where a process's main thread is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sleep {
    /// Running, or gone.
    Awake,
    /// Asleep on a futex at this address (of its own address space).
    Futex { address: u64 },
    /// Asleep in another system call.
    Call(i64),
}

/// What a futex a process sleeps on is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Place {
    Mutex,
    Cond,
    /// In the segment, but neither the mutex nor the condition variable.
    Segment,
    /// Not in the segment: the process's own memory.
    Own,
}

impl Place {
    pub fn describe(self) -> &'static str {
        match self {
            Place::Mutex => "the bank's mutex",
            Place::Cond => "the bank's condition variable",
            Place::Segment => {
                "a futex in the segment that is neither the mutex nor the condition \
                               variable"
            }
            Place::Own => "a futex in its own memory, not in the segment",
        }
    }
}

impl Sleep {
    pub fn describe(self) -> String {
        match self {
            Sleep::Awake => "is on the CPU, not asleep".into(),
            Sleep::Futex { .. } => "sleeps on a futex".into(),
            Sleep::Call(nr) => format!("sleeps in {}", call_name(nr)),
        }
    }
}

/// A system call by name, for the calls a waiting process is likely to sit in.
pub(super) fn call_name(nr: i64) -> String {
    let known = [
        (libc::SYS_futex, "futex()"),
        (libc::SYS_nanosleep, "nanosleep() (a sleep)"),
        (libc::SYS_clock_nanosleep, "clock_nanosleep() (a sleep)"),
        (libc::SYS_wait4, "waitpid() (waiting for a child to exit)"),
        (libc::SYS_waitid, "waitid() (waiting for a child to exit)"),
        (
            libc::SYS_rt_sigtimedwait,
            "sigwaitinfo()/sigtimedwait() (waiting for a signal)",
        ),
        (
            libc::SYS_rt_sigsuspend,
            "sigsuspend() (waiting for a signal)",
        ),
        (libc::SYS_pause, "pause() (waiting for a signal)"),
        (libc::SYS_read, "read()"),
        (libc::SYS_poll, "poll()"),
        (libc::SYS_ppoll, "ppoll()"),
        (libc::SYS_pselect6, "select()"),
        (libc::SYS_epoll_wait, "epoll_wait()"),
        (libc::SYS_fcntl, "fcntl() (a record lock)"),
        (libc::SYS_flock, "flock()"),
        (libc::SYS_semtimedop, "semop()"),
        (libc::SYS_recvfrom, "recv()"),
        (libc::SYS_sched_yield, "sched_yield()"),
    ];
    known
        .iter()
        .find(|(n, _)| *n == nr)
        .map(|(_, name)| (*name).to_string())
        .unwrap_or_else(|| format!("system call {nr}"))
}

/// Where the main thread of `pid` is now.
pub(super) fn sleeping(pid: i32) -> Sleep {
    let Some(view) = inspect::view(pid) else {
        return Sleep::Awake;
    };
    let Some(thread) = view.threads.iter().find(|t| t.tid == pid) else {
        return Sleep::Awake;
    };
    match (thread.state, thread.syscall) {
        ('S' | 'D', Some((nr, address))) if nr == libc::SYS_futex => Sleep::Futex { address },
        ('S' | 'D', Some((nr, _))) => Sleep::Call(nr),
        _ => Sleep::Awake,
    }
}

/// Whether the main thread of `pid`, asleep in `futex()`, gave it a timeout (its fourth
/// argument, in `/proc/PID/syscall`): `pthread_cond_timedwait()` does, `pthread_cond_wait()`
/// does not. `None` if it is not asleep in `futex()`.
pub(super) fn futex_has_timeout(pid: i32) -> Option<bool> {
    let (number, args) = inspect::call_of(pid, pid)?;
    (number == libc::SYS_futex).then_some(args[3] != 0)
}

/// One line of `/proc/PID/maps` that maps the segment.
#[derive(Debug, Clone)]
pub(super) struct MapLine {
    pub start: u64,
    pub perms: String,
    pub offset: u64,
}

/// The mappings of segment `name` in `pid` (its name in `/proc/PID/maps` ends with
/// ` (deleted)` once unlinked).
pub(super) fn mappings(pid: i32, name: &str) -> Vec<MapLine> {
    let path = dev_shm(name).display().to_string();
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return Vec::new();
    };
    maps.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let range = words.next()?;
            let perms = words.next()?.to_string();
            let offset = u64::from_str_radix(words.next()?, 16).ok()?;
            let rest: Vec<&str> = words.skip(2).collect();
            let file = rest.join(" ");
            if file != path && file != format!("{path} (deleted)") {
                return None;
            }
            let start = u64::from_str_radix(range.split('-').next()?, 16).ok()?;
            Some(MapLine {
                start,
                perms,
                offset,
            })
        })
        .collect()
}

/// The file another name than `name` maps in `pid` for the same segment (inode `inode` of
/// `/dev/shm`): a second name, a hard link, of the object at `name`.
pub(super) fn mapped_under_another_name(pid: i32, name: &str, inode: u64) -> Option<String> {
    let path = dev_shm(name).display().to_string();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    maps.lines().find_map(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        let file = words.get(5..)?.join(" ");
        let same = words.get(4)?.parse::<u64>().ok()? == inode;
        let other = file.starts_with("/dev/shm/") && !file.starts_with(&format!("{path} "));
        (same && other && file != path).then_some(file)
    })
}

/// The descriptors of `pid` open on segment `name`.
pub(super) fn descriptors(pid: i32, name: &str) -> Vec<i32> {
    let path = dev_shm(name).display().to_string();
    inspect::view(pid)
        .map(|view| {
            view.fds
                .iter()
                .filter(|(_, target)| **target == path || **target == format!("{path} (deleted)"))
                .map(|(fd, _)| *fd)
                .collect()
        })
        .unwrap_or_default()
}

/// What the futex at `address` (in `pid`'s address space) is.
pub(super) fn place(pid: i32, name: &str, layout: &Layout, address: u64) -> Place {
    let size = std::mem::size_of::<libc::pthread_mutex_t>() as u64;
    let cond_size = std::mem::size_of::<libc::pthread_cond_t>() as u64;
    for map in mappings(pid, name) {
        if map.offset != 0 || address < map.start {
            continue;
        }
        let at = address - map.start;
        if at >= layout.size as u64 {
            continue;
        }
        let mutex = layout.mutex_at as u64;
        let cond = layout.cond_at as u64;
        return if (mutex..mutex + size).contains(&at) {
            Place::Mutex
        } else if (cond..cond + cond_size).contains(&at) {
            Place::Cond
        } else {
            Place::Segment
        };
    }
    Place::Own
}

/// The grader's own shared mapping of the segment.
pub(super) struct Mapping {
    addr: NonNull<libc::c_void>,
    len: usize,
}

impl Mapping {
    /// Maps `segment` shared, read and write; `None` if it cannot (too small, read-only).
    pub fn of(segment: &Segment) -> Option<Mapping> {
        use std::os::fd::AsRawFd;
        if !segment.full_size() {
            return None;
        }
        let len = segment.layout.size;
        // SAFETY: a new mapping of the whole bank, placed by the kernel.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                segment.file().as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return None;
        }
        NonNull::new(addr).map(|addr| Mapping { addr, len })
    }

    fn at(&self, offset: usize) -> usize {
        self.addr.as_ptr() as usize + offset
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping is ours and nothing points into it any more.
        unsafe {
            libc::munmap(self.addr.as_ptr(), self.len);
        }
    }
}

/// The bank's mutex and condition variable in the grader's mapping, once they look like what
/// the lab initializes (process-shared and robust, no priority protocol): glibc is only ever
/// handed a mutex it made itself.
fn lockable(segment: &Segment) -> Result<(usize, usize), Fail> {
    let kind = segment.mutex_kind()?;
    let map = segment.map.as_ref().filter(|_| segment.full_size());
    match map {
        Some(map)
            if kind != -1
                && kind & (KIND_PSHARED | KIND_ROBUST) == KIND_PSHARED | KIND_ROBUST
                && kind & KIND_PRIORITY == 0 =>
        {
            Ok((
                map.at(segment.layout.mutex_at),
                map.at(segment.layout.cond_at),
            ))
        }
        _ => Err(Fail::failed(format!(
            "the mutex in the segment is not a process-shared robust mutex (kind word {kind}): \
             initialize it in the segment with pthread_mutexattr_setpshared(PROCESS_SHARED) and \
             pthread_mutexattr_setrobust(ROBUST)"
        ))),
    }
}

/// Broadcasts the bank's condition variable from the grader, as a finishing worker would;
/// `false` if it is not one a process-shared broadcast can reach.
pub(super) fn broadcast(segment: &Segment) -> bool {
    let Ok((_, cond)) = lockable(segment) else {
        return false;
    };
    if segment.cond_wrefs().map_or(true, |wrefs| wrefs & 1 == 0) {
        return false;
    }
    // SAFETY: a process-shared condition variable the program initialized, in the grader's
    // mapping of the segment.
    unsafe { libc::pthread_cond_broadcast(cond as *mut libc::pthread_cond_t) == 0 }
}

/// Wakes every process asleep on the bank's mutex (they look again, and sleep again if it is
/// taken): after the grader lets go of it with some waiters stopped, the wake-up glibc gives
/// one of them may go to a stopped one.
pub(super) fn wake_mutex_waiters(segment: &Segment) {
    let Ok((mutex, _)) = lockable(segment) else {
        return;
    };
    // SAFETY: FUTEX_WAKE only reads the address, a word of the grader's mapping.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            mutex as *const u32,
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0,
        );
    }
}

/// Whether the grader can take the bank's mutex (it looks like one the lab initializes).
pub(super) fn can_hold(segment: &Segment) -> bool {
    lockable(segment).is_ok()
}

/// `pthread_mutex_timedlock` for at most `within`: 0, or the error number.
fn timed_lock(mutex: usize, within: Duration) -> i32 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec; `mutex` points into the grader's mapping of a mutex
    // that glibc initialized (checked by `lockable`).
    unsafe {
        libc::clock_gettime(libc::CLOCK_REALTIME, &mut now);
        let nanos = now.tv_nsec as u64 + u64::from(within.subsec_nanos());
        let until = libc::timespec {
            tv_sec: now.tv_sec
                + within.as_secs() as libc::time_t
                + (nanos / 1_000_000_000) as libc::time_t,
            tv_nsec: (nanos % 1_000_000_000) as _,
        };
        libc::pthread_mutex_timedlock(mutex as *mut libc::pthread_mutex_t, &until)
    }
}

/// An error number in words.
pub(super) fn errno_name(rc: i32) -> String {
    match rc {
        libc::EOWNERDEAD => "EOWNERDEAD".into(),
        libc::ENOTRECOVERABLE => "ENOTRECOVERABLE".into(),
        libc::ETIMEDOUT => "ETIMEDOUT (someone else held it)".into(),
        rc => nix::errno::Errno::from_raw(rc).to_string(),
    }
}

/// The bank's mutex, held by the grader: unlocked when dropped.
pub(super) struct Held {
    mutex: usize,
}

impl Drop for Held {
    fn drop(&mut self) {
        // SAFETY: this thread holds the mutex (taken by `hold`).
        unsafe {
            libc::pthread_mutex_unlock(self.mutex as *mut libc::pthread_mutex_t);
        }
    }
}

/// Takes the bank's mutex, as a process of the bank would; fails if it cannot within `within`.
pub(super) fn hold(segment: &Segment, within: Duration) -> Result<Held, Fail> {
    let (mutex, _) = lockable(segment)?;
    match timed_lock(mutex, within) {
        0 => Ok(Held { mutex }),
        libc::EOWNERDEAD => {
            let held = Held { mutex };
            // SAFETY: this thread holds the mutex.
            unsafe { libc::pthread_mutex_consistent(mutex as *mut libc::pthread_mutex_t) };
            drop(held);
            Err(Fail::failed(
                "the grader found the bank's mutex abandoned by a dead holder (EOWNERDEAD) \
                 though no process had died: a process exited with the lock held",
            ))
        }
        libc::ENOTRECOVERABLE => Err(Fail::failed(
            "the grader found the bank's mutex unusable (ENOTRECOVERABLE): a holder died and \
             whoever got EOWNERDEAD unlocked without pthread_mutex_consistent(), so every lock \
             now fails; after EOWNERDEAD, repair the bank (recover()) and call \
             pthread_mutex_consistent() before unlocking",
        )),
        rc => Err(Fail::failed(format!(
            "the grader could not take the bank's mutex within {} ms: {} (its owner word says \
             thread {})",
            within.as_millis(),
            errno_name(rc),
            segment.mutex_owner().unwrap_or(0)
        ))),
    }
}

/// Tries the mutex once (waiting up to `within`) and lets it go: what a process taking the lock
/// now would get (0, `EOWNERDEAD`, `ENOTRECOVERABLE`, `ETIMEDOUT`). An `EOWNERDEAD` is left as
/// it was: the mutex stays inconsistent, as the grader found it, but unlocked it becomes
/// unrecoverable; use it only where that ends the check.
pub(super) fn try_lock(segment: &Segment, within: Duration) -> Result<i32, Fail> {
    let (mutex, _) = lockable(segment)?;
    let rc = timed_lock(mutex, within);
    if rc == 0 || rc == libc::EOWNERDEAD {
        // SAFETY: this thread holds the mutex.
        unsafe { libc::pthread_mutex_unlock(mutex as *mut libc::pthread_mutex_t) };
    }
    Ok(rc)
}

/// Destroys the bank's mutex and initializes it again in place, process-shared and robust as
/// `create()` makes it: what a new bank mapped at the same address holds. Only while no process
/// uses the mutex (an unrecoverable one, which nobody can hold, is such).
pub(super) fn reinitialize_mutex(segment: &Segment) -> Result<(), Fail> {
    let (mutex, _) = lockable(segment)?;
    let mutex = mutex as *mut libc::pthread_mutex_t;
    let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
    // SAFETY: the mutex lies in the grader's mapping, initialized by glibc (checked by
    // `lockable`) and used by nobody; the attribute object is initialized before any other use
    // and destroyed after the init.
    let results = unsafe {
        let results = [
            libc::pthread_mutex_destroy(mutex),
            libc::pthread_mutexattr_init(attr.as_mut_ptr()),
            libc::pthread_mutexattr_setpshared(attr.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED),
            libc::pthread_mutexattr_setrobust(attr.as_mut_ptr(), libc::PTHREAD_MUTEX_ROBUST),
            libc::pthread_mutex_init(mutex, attr.as_ptr()),
        ];
        libc::pthread_mutexattr_destroy(attr.as_mut_ptr());
        results
    };
    match results.iter().find(|&&rc| rc != 0) {
        None => Ok(()),
        Some(&rc) => Err(Fail::Grader(format!(
            "re-initializing the bank's mutex: {}",
            errno_name(rc)
        ))),
    }
}

/// A thread of the grader that holds the bank's mutex and then ends without unlocking it: a
/// holder that dies, which the next locker must meet as `EOWNERDEAD`.
pub(super) struct DyingHolder {
    release: Sender<()>,
    thread: JoinHandle<()>,
}

impl DyingHolder {
    /// Takes the mutex on a thread of its own (and broadcasts the condition variable if
    /// `broadcast`, so that a waiter wakes up to take the lock back).
    pub fn start(segment: &Segment, broadcast: bool) -> Result<DyingHolder, Fail> {
        let (mutex, cond) = lockable(segment)?;
        let (locked, taken) = channel();
        let (release, released) = channel::<()>();
        let thread = std::thread::spawn(move || {
            let rc = timed_lock(mutex, Duration::from_secs(2));
            if rc == 0 && broadcast {
                // SAFETY: the condition variable lies in the mapping, initialized by the program
                // (its process-shared bit was checked by then).
                unsafe { libc::pthread_cond_broadcast(cond as *mut libc::pthread_cond_t) };
            }
            let _ = locked.send(rc);
            if rc == 0 {
                // Holds on until told to die; then ends with the mutex still locked.
                let _ = released.recv();
            }
        });
        let rc = taken
            .recv()
            .map_err(|_| Fail::Grader("the grader's holder thread did not start".into()))?;
        if rc != 0 {
            let _ = thread.join();
            return Err(Fail::failed(format!(
                "the grader could not take the bank's mutex while nobody was using it: {}",
                errno_name(rc)
            )));
        }
        Ok(DyingHolder { release, thread })
    }

    /// Ends the thread with the mutex held, and waits until it is gone (the kernel has marked
    /// the mutex's holder dead by then).
    pub fn die(self) {
        drop(self.release);
        let _ = self.thread.join();
    }
}

/// The bank's mutex held by a thread of the grader until [`HolderThread::let_go`]: if the
/// program destroys the mutex meanwhile, the failed unlock dies with that thread instead of
/// staying in the grader's own list of robust mutexes.
pub(super) struct HolderThread {
    release: Sender<()>,
    thread: JoinHandle<()>,
}

impl HolderThread {
    /// Takes the mutex on a thread of its own, waiting up to `within`.
    pub fn start(segment: &Segment, within: Duration) -> Option<HolderThread> {
        let (mutex, _) = lockable(segment).ok()?;
        let (locked, taken) = channel();
        let (release, released) = channel::<()>();
        let thread = std::thread::spawn(move || {
            let rc = timed_lock(mutex, within);
            let _ = locked.send(rc);
            if rc == 0 {
                let _ = released.recv();
                // SAFETY: this thread holds the mutex, in the grader's mapping.
                unsafe { libc::pthread_mutex_unlock(mutex as *mut libc::pthread_mutex_t) };
            }
        });
        if taken.recv() != Ok(0) {
            let _ = thread.join();
            return None;
        }
        Some(HolderThread { release, thread })
    }

    /// Unlocks the mutex, and waits until the thread is gone.
    pub fn let_go(self) {
        let _ = self.release.send(());
        let _ = self.thread.join();
    }
}

/// How long the grader's own waiter on the condition variable waits at most: it ends by itself
/// then, if nobody woke it.
const WAITER_LIMIT: Duration = Duration::from_secs(10);

/// Threads of the grader asleep on the bank's condition variable, with the bank's mutex, as more
/// waiters beside the coordinator: a finish that broadcasts wakes them all, one that signals
/// wakes one waiter at most. Each maps the segment itself, so that it never outlives its
/// mapping.
pub(super) struct CondWaiters {
    woke: std::sync::mpsc::Receiver<i32>,
    count: usize,
    /// `finished` in the bank once they were queued: only a later finish must wake them.
    pub finished: u32,
}

impl CondWaiters {
    /// Queues `count` waiters, one after another; `None` if the mutex or the condition variable
    /// is not one they can use.
    pub fn start(segment: &Segment, count: usize) -> Option<CondWaiters> {
        lockable(segment).ok()?;
        if segment.cond_wrefs().map_or(true, |wrefs| wrefs & 1 == 0) {
            return None;
        }
        let (woke_tx, woke) = channel();
        for _ in 0..count {
            let map = Mapping::of(segment)?;
            let mutex = map.at(segment.layout.mutex_at);
            let cond = map.at(segment.layout.cond_at);
            let (addr, len) = (map.addr.as_ptr() as usize, map.len);
            std::mem::forget(map);
            let (locked, taken) = channel();
            let woke_tx = woke_tx.clone();
            std::thread::spawn(move || {
                let rc = timed_lock(mutex, Duration::from_secs(2));
                let _ = locked.send(rc);
                if rc == 0 {
                    let _ = woke_tx.send(wait_once(mutex, cond));
                }
                // SAFETY: the mapping is this thread's alone, and nothing uses it any more.
                unsafe { libc::munmap(addr as *mut libc::c_void, len) };
            });
            if taken.recv() != Ok(0) {
                return None;
            }
            // The waiter gives the mutex back inside pthread_cond_wait(), once queued.
            drop(hold(segment, Duration::from_secs(2)).ok()?);
        }
        let finished = segment.counts().ok()?.finished;
        Some(CondWaiters {
            woke,
            count,
            finished,
        })
    }

    /// How many were woken within `within`, and whether one ended by itself (its limit passed
    /// first: then nothing can be judged).
    pub fn woken(&self, within: Duration) -> (usize, bool) {
        let until = std::time::Instant::now() + within;
        let (mut woken, mut ended) = (0, false);
        for _ in 0..self.count {
            let left = until.saturating_duration_since(std::time::Instant::now());
            match self.woke.recv_timeout(left) {
                Ok(0) => woken += 1,
                Ok(_) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => ended = true,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => break,
            }
        }
        (woken, ended)
    }

    pub fn count(&self) -> usize {
        self.count
    }
}

/// One `pthread_cond_timedwait()` of at most [`WAITER_LIMIT`] by a thread that holds `mutex`;
/// gives the mutex back after it. Returns what the wait returned.
fn wait_once(mutex: usize, cond: usize) -> i32 {
    let mut until = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let mutex = mutex as *mut libc::pthread_mutex_t;
    // SAFETY: the mutex and the condition variable lie in the caller's own mapping, initialized
    // by the program as process-shared (checked by `lockable`); it holds the mutex.
    unsafe {
        libc::clock_gettime(libc::CLOCK_REALTIME, &mut until);
        until.tv_sec += WAITER_LIMIT.as_secs() as libc::time_t;
        let rc = libc::pthread_cond_timedwait(cond as *mut libc::pthread_cond_t, mutex, &until);
        if rc == libc::EOWNERDEAD {
            libc::pthread_mutex_consistent(mutex);
        }
        if rc == 0 || rc == libc::ETIMEDOUT || rc == libc::EOWNERDEAD {
            libc::pthread_mutex_unlock(mutex);
        }
        rc
    }
}
