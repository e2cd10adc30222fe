//! Looking at the programs from outside: the system call a waiting side sits in, with all its
//! arguments, and the deadline of a timed wait read from its memory; its mappings and its
//! descriptors; the state of a semaphore or a queue.

use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use nix::time::{ClockId, clock_gettime};

use crate::engine::inspect::SignalMask;
use crate::engine::{Fail, force, inspect};

/// A system call a thread is blocked in (or stopped at), with its six arguments.
#[derive(Debug, Clone, Copy)]
struct Call {
    nr: i64,
    args: [u64; 6],
}

/// The call the main thread of `pid` is in, from `/proc/PID/task/PID/syscall`; `None` when it
/// runs in user space or is gone.
fn call(pid: i32) -> Option<Call> {
    let (nr, args) = inspect::call_of(pid, pid)?;
    Some(Call { nr, args })
}

/// The deadline of a timed wait, as it stood when the grader read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// No timeout: the call waits until a signal comes, for ever if none does.
    Never,
    /// This far ahead.
    Ahead(Duration),
    /// Already `by` in the past when the call was seen: it returns at once (or it has just
    /// timed out). `at` is the deadline itself, on its clock.
    Past { by: Duration, at: Duration },
    /// Not readable, or not a time.
    Unknown,
}

/// What a waiting side was seen in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// A futex wait (what `sem_wait()` and `sem_timedwait()` sleep in) on this address;
    /// `monotonic` when its deadline is an absolute time on `CLOCK_MONOTONIC` (no
    /// `FUTEX_CLOCK_REALTIME`: `sem_clockwait()`), not on `CLOCK_REALTIME` as `sem_timedwait()`'s.
    Futex {
        addr: u64,
        deadline: Deadline,
        monotonic: bool,
    },
    /// `mq_timedreceive()` (or `mq_receive()`) on this descriptor.
    Receive { fd: i32, deadline: Deadline },
    /// `nanosleep()` or `clock_nanosleep()`.
    Sleep,
    /// Another system call: its number and arguments.
    Other { nr: i64, args: [u64; 6] },
}

impl Seen {
    /// Whether this is system call `nr`, whatever its arguments.
    pub fn is_call(&self, nr: i64) -> bool {
        matches!(*self, Seen::Other { nr: n, .. } if n == nr)
    }
}

/// A deadline counts as past only when it is behind the moment the call was seen by more than
/// this: the kernel's timer slack and the grader's own delay stay well under it.
const PAST_SLACK: Duration = Duration::from_millis(20);

fn now(clock: ClockId) -> Duration {
    clock_gettime(clock).map(Duration::from).unwrap_or_default()
}

/// Reads a `struct timespec` at `addr` in the memory of `pid`.
pub(super) fn timespec(pid: i32, addr: u64) -> Option<Duration> {
    let memory = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut bytes = [0u8; 16];
    memory.read_exact_at(&mut bytes, addr).ok()?;
    let secs = i64::from_ne_bytes(bytes[..8].try_into().ok()?);
    let nanos = i64::from_ne_bytes(bytes[8..].try_into().ok()?);
    if secs < 0 || !(0..1_000_000_000).contains(&nanos) {
        return None;
    }
    Some(Duration::new(secs as u64, nanos as u32))
}

/// An absolute deadline at `addr` on `clock`; `before` is that clock just before the call was
/// read (the call was made no earlier), the deadline's lead is measured after reading it.
fn absolute(pid: i32, addr: u64, clock: ClockId, before: Duration) -> Deadline {
    let Some(at) = timespec(pid, addr) else {
        return Deadline::Unknown;
    };
    if at + PAST_SLACK < before {
        return Deadline::Past {
            by: before - at,
            at,
        };
    }
    Deadline::Ahead(at.saturating_sub(now(clock)))
}

/// What the main thread of `pid` is blocked in now, with the deadline of a timed wait; `None`
/// when it is running (or gone).
pub fn sample(pid: i32) -> Option<Seen> {
    let realtime = now(ClockId::CLOCK_REALTIME);
    let monotonic = now(ClockId::CLOCK_MONOTONIC);
    let call = call(pid)?;
    let seen = match call.nr {
        libc::SYS_futex => {
            let op = call.args[1] as i32;
            let deadline = match (call.args[3], op & libc::FUTEX_CMD_MASK) {
                (0, _) => Deadline::Never,
                // FUTEX_WAIT takes a relative timeout.
                (addr, libc::FUTEX_WAIT) => {
                    timespec(pid, addr).map_or(Deadline::Unknown, Deadline::Ahead)
                }
                (addr, _) if op & libc::FUTEX_CLOCK_REALTIME != 0 => {
                    absolute(pid, addr, ClockId::CLOCK_REALTIME, realtime)
                }
                (addr, _) => absolute(pid, addr, ClockId::CLOCK_MONOTONIC, monotonic),
            };
            Seen::Futex {
                addr: call.args[0],
                deadline,
                monotonic: call.args[3] != 0
                    && op & libc::FUTEX_CMD_MASK != libc::FUTEX_WAIT
                    && op & libc::FUTEX_CLOCK_REALTIME == 0,
            }
        }
        libc::SYS_mq_timedreceive => Seen::Receive {
            fd: call.args[0] as i32,
            deadline: match call.args[4] {
                0 => Deadline::Never,
                addr => absolute(pid, addr, ClockId::CLOCK_REALTIME, realtime),
            },
        },
        libc::SYS_nanosleep | libc::SYS_clock_nanosleep => Seen::Sleep,
        nr => Seen::Other {
            nr,
            args: call.args,
        },
    };
    Some(seen)
}

/// The absolute `CLOCK_REALTIME` deadline of the timed wait the main thread of `pid` sits in (a
/// futex wait on `CLOCK_REALTIME`, or `mq_timedreceive()`), read from its memory; `None` when it
/// is in no such wait. The call is read again after the deadline: a wait left meanwhile (its
/// stack reused) gives nothing rather than a stale value.
pub fn realtime_deadline(pid: i32) -> Option<Duration> {
    let before = call(pid)?;
    let op = before.args[1] as i32;
    let addr = match before.nr {
        libc::SYS_futex
            if op & libc::FUTEX_CLOCK_REALTIME != 0
                && op & libc::FUTEX_CMD_MASK != libc::FUTEX_WAIT =>
        {
            before.args[3]
        }
        libc::SYS_mq_timedreceive => before.args[4],
        _ => return None,
    };
    if addr == 0 {
        return None;
    }
    let deadline = timespec(pid, addr)?;
    let after = call(pid)?;
    (after.nr == before.nr && after.args == before.args).then_some(deadline)
}

/// The absolute `CLOCK_REALTIME` deadline of the `mq_timedsend()` the main thread of `pid` sits
/// in; `None` when it is in no such call or sends with no deadline (`mq_send()`).
pub fn send_deadline(pid: i32) -> Option<Duration> {
    let before = call(pid)?;
    if before.nr != libc::SYS_mq_timedsend || before.args[4] == 0 {
        return None;
    }
    let deadline = timespec(pid, before.args[4])?;
    let after = call(pid)?;
    (after.nr == before.nr && after.args == before.args).then_some(deadline)
}

/// The state letter of `pid` (`R`, `S`, `T`, `Z`, ...), `None` if it is gone.
pub fn state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

/// Whether `pid` is gone (reaped) within `limit`, looked at every millisecond.
pub fn gone_within(pid: i32, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    while state(pid).is_some() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
    }
    state(pid).is_none()
}

/// Whether `pid` still runs (a zombie does not).
pub fn alive(pid: i32) -> bool {
    state(pid).is_some_and(|s| s != 'Z')
}

/// Stops `pid` for a moment to see which call it makes: a process that never blocks is never
/// seen in a call otherwise. `None` if it did not stop; `Some(None)` if it stopped in its own
/// code, in no system call.
fn sample_stopped(pid: i32) -> Option<Option<Seen>> {
    force::hold(pid).ok()?;
    let until = Instant::now() + Duration::from_millis(200);
    while state(pid) != Some('T') && Instant::now() < until {
        std::thread::sleep(Duration::from_micros(200));
    }
    let stopped = state(pid) == Some('T');
    let seen = sample(pid);
    let _ = force::resume(pid);
    stopped.then_some(seen)
}

/// Every sample taken of a waiting side, summed up.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    pub seen: Vec<Seen>,
    /// How many times it was stopped in its own code, in no system call.
    pub outside: usize,
    /// How many times its state was looked at, and how many of them it was runnable (on a CPU
    /// or waiting for one) rather than asleep.
    pub looked: usize,
    pub runnable: usize,
    /// The absolute deadlines of the timed waits it was seen asleep in, in order.
    pub deadlines: Vec<Duration>,
}

/// A timed wait whose deadline is this far behind the clock was never "now + a slice": it is a
/// duration, or a time on another clock.
pub const FAR_PAST: Duration = Duration::from_secs(3600);

impl Samples {
    /// Adds `other`'s samples to these.
    pub fn merge(&mut self, other: Samples) {
        self.seen.extend(other.seen);
        self.outside += other.outside;
        self.looked += other.looked;
        self.runnable += other.runnable;
        self.deadlines.extend(other.deadlines);
    }

    /// The shortest time between two successive timed waits: the gap between consecutive
    /// deadlines, each seen at least twice (a value read once may be torn). A slice that timed
    /// out is followed by a deadline read from the clock after it, so for slices of
    /// `WAIT_SLICE` no gap is shorter than that.
    pub fn shortest_slice(&self) -> Option<Duration> {
        let mut seen: Vec<Duration> = self
            .deadlines
            .iter()
            .copied()
            .filter(|d| self.deadlines.iter().filter(|o| *o == d).count() >= 2)
            .collect();
        seen.sort_unstable();
        seen.dedup();
        seen.windows(2).map(|pair| pair[1] - pair[0]).min()
    }

    /// The waits (futex or receive) seen, with their deadlines.
    pub fn waits(&self) -> impl Iterator<Item = (Seen, Deadline)> + '_ {
        self.seen.iter().filter_map(|seen| match *seen {
            Seen::Futex { deadline, .. } | Seen::Receive { deadline, .. } => {
                Some((*seen, deadline))
            }
            _ => None,
        })
    }

    /// How far the deadlines seen were ahead, the farthest first.
    pub fn leads(&self) -> Vec<Duration> {
        let mut leads: Vec<Duration> = self
            .waits()
            .filter_map(|(_, d)| match d {
                Deadline::Ahead(lead) => Some(lead),
                _ => None,
            })
            .collect();
        leads.sort_unstable_by(|a, b| b.cmp(a));
        leads
    }

    /// How far behind the clock the deadlines of its waits were, when they were no slices: the
    /// same deadline seen past by more than `slack` at least twice (computed once and used
    /// again), or deadlines far in the past at least twice. A wait that has just timed out and
    /// waits for a CPU shows its deadline past once, by the time it waits.
    pub fn past(&self, slack: Duration) -> Option<Duration> {
        let past: Vec<(Duration, Duration)> = self
            .waits()
            .filter_map(|(_, d)| match d {
                Deadline::Past { by, at } => Some((by, at)),
                _ => None,
            })
            .collect();
        let far: Vec<Duration> = past
            .iter()
            .filter(|(by, _)| *by > FAR_PAST)
            .map(|(by, _)| *by)
            .collect();
        if far.len() >= 2 {
            return far.iter().max().copied();
        }
        past.iter()
            .filter(|(by, at)| {
                *by > slack && past.iter().filter(|(_, other)| other == at).count() >= 2
            })
            .map(|(by, _)| *by)
            .max()
    }

    /// Whether waits without any deadline were seen (at least two samples).
    pub fn untimed(&self) -> bool {
        self.waits().filter(|(_, d)| *d == Deadline::Never).count() >= 2
    }

    /// Whether the side was seen sleeping between looks.
    pub fn slept(&self) -> bool {
        self.seen.contains(&Seen::Sleep)
    }

    /// The share of looks at which it was runnable.
    pub fn runnable_share(&self) -> f64 {
        self.runnable as f64 / self.looked.max(1) as f64
    }

    /// Looks at `pid` once: the call it sits in when it is asleep, its state anyway; when it is
    /// runnable and `stop`, stops it to see which call it is making, if any.
    fn look(&mut self, pid: i32, stop: bool) {
        let Some(now) = state(pid) else {
            return;
        };
        self.looked += 1;
        if now == 'R' {
            self.runnable += 1;
            match stop.then(|| sample_stopped(pid)).flatten() {
                Some(Some(seen)) => self.seen.push(seen),
                Some(None) => self.outside += 1,
                None => {}
            }
        } else if let Some(seen) = sample(pid) {
            self.seen.push(seen);
            self.deadlines.extend(realtime_deadline(pid));
        }
    }
}

/// Samples the main thread of `pid` every few milliseconds until `until`, without disturbing
/// it.
pub fn watch(pid: i32, until: Instant) -> Samples {
    let mut samples = Samples::default();
    while Instant::now() < until && alive(pid) {
        samples.look(pid, false);
        std::thread::sleep(Duration::from_millis(5));
    }
    samples
}

/// Looks at `pid` `times` times, stopping it whenever it is not asleep to see what it calls
/// (a side that never blocks is seen in no call otherwise; one asleep is not disturbed).
pub fn watch_stopped(pid: i32, times: usize) -> Samples {
    let mut samples = Samples::default();
    for _ in 0..times {
        if !alive(pid) {
            break;
        }
        samples.look(pid, true);
        std::thread::sleep(Duration::from_millis(5));
    }
    samples
}

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub perms: String,
    pub inode: u64,
    pub path: String,
}

impl Mapping {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn shared(&self) -> bool {
        self.perms.ends_with('s')
    }

    /// What `mmap(MAP_SHARED | MAP_ANONYMOUS)` makes: the kernel backs it with `/dev/zero`.
    pub fn shared_anonymous(&self) -> bool {
        self.shared() && self.path == "/dev/zero (deleted)"
    }

    /// A named semaphore, as glibc's `sem_open()` maps it.
    pub fn named_semaphore(&self) -> bool {
        self.shared() && self.path.starts_with("/dev/shm/sem.")
    }

    pub fn contains(&self, addr: u64) -> bool {
        (self.start..self.end).contains(&addr)
    }
}

/// The mappings of `pid` (empty if it is gone).
pub fn mappings(pid: i32) -> Vec<Mapping> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (range, perms) = (fields.next()?, fields.next()?);
            let inode = fields.nth(2)?.parse().ok()?;
            let path = fields.collect::<Vec<&str>>().join(" ");
            let (start, end) = range.split_once('-')?;
            Some(Mapping {
                start: u64::from_str_radix(start, 16).ok()?,
                end: u64::from_str_radix(end, 16).ok()?,
                perms: perms.to_string(),
                inode,
                path,
            })
        })
        .collect()
}

/// The descriptors of `pid` that are message queues called `name` (a queue's descriptor reads
/// as its name in `/proc/PID/fd`, with ` (deleted)` once unlinked).
pub fn queue_descriptors(pid: i32, name: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let fd = entry.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(entry.path()).ok()?;
            let target = target.to_string_lossy();
            (target == name || target == format!("{name} (deleted)")).then_some(fd)
        })
        .collect()
}

/// What `readlink /proc/PID/fd/FD` says.
pub fn descriptor(pid: i32, fd: i32) -> String {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .map(|t| t.display().to_string())
        .unwrap_or_else(|_| "nothing".into())
}

/// What descriptor `fd` of `pid` is, in words: "descriptor 7 (a pipe, pipe:[1234])".
fn descriptor_in_words(pid: i32, fd: i32) -> String {
    let target = descriptor(pid, fd);
    let what = if target.starts_with("pipe:") {
        "a pipe, "
    } else if target.starts_with("socket:") {
        "a socket, "
    } else if target.starts_with("anon_inode:") {
        "an anonymous inode, "
    } else {
        ""
    };
    format!("descriptor {fd} ({what}{target})")
}

/// The descriptors a `poll()` or `ppoll()` of `pid` watches: `nfds` `struct pollfd` (an int
/// and two shorts) at `addr` in its memory.
fn polled(pid: i32, addr: u64, nfds: u64) -> Vec<i32> {
    let count = nfds.min(16) as usize;
    let Some(bytes) = peek(pid, addr, count * 8) else {
        return Vec::new();
    };
    bytes
        .chunks_exact(8)
        .map(|pollfd| i32::from_ne_bytes(pollfd[..4].try_into().expect("4 bytes")))
        .filter(|fd| *fd >= 0)
        .collect()
}

/// The call `pid` was seen in, in words, with what it waits on where the grader can tell: "a
/// futex wait (sem_timedwait)", "poll() on descriptor 7 (a pipe, pipe:[1234])".
pub fn describe_call(pid: i32, seen: Seen) -> String {
    let Seen::Other { nr, args } = seen else {
        return match seen {
            Seen::Futex { .. } => "a futex wait (sem_timedwait)".into(),
            Seen::Receive { fd, .. } => {
                format!("mq_timedreceive() on {}", descriptor_in_words(pid, fd))
            }
            _ => "nanosleep()".into(),
        };
    };
    let on_fd = |name: &str| format!("{name} on {}", descriptor_in_words(pid, args[0] as i32));
    match nr {
        libc::SYS_poll | libc::SYS_ppoll => {
            let name = if nr == libc::SYS_poll {
                "poll()"
            } else {
                "ppoll()"
            };
            let fds: Vec<String> = polled(pid, args[0], args[1])
                .into_iter()
                .map(|fd| descriptor_in_words(pid, fd))
                .collect();
            match fds.is_empty() {
                true => name.to_string(),
                false => format!("{name} on {}", fds.join(", ")),
            }
        }
        libc::SYS_select | libc::SYS_pselect6 => "select()".into(),
        libc::SYS_epoll_wait | libc::SYS_epoll_pwait => on_fd("epoll_wait()"),
        libc::SYS_read | libc::SYS_readv => on_fd("read()"),
        libc::SYS_recvfrom | libc::SYS_recvmsg => on_fd("recv()"),
        libc::SYS_wait4 | libc::SYS_waitid => "waitpid()".into(),
        libc::SYS_pause => "pause()".into(),
        libc::SYS_rt_sigsuspend => "sigsuspend()".into(),
        libc::SYS_rt_sigtimedwait => "sigtimedwait()".into(),
        libc::SYS_mq_timedsend => on_fd("mq_timedsend()"),
        libc::SYS_msgrcv => "msgrcv() (a System V message queue)".into(),
        libc::SYS_semop | libc::SYS_semtimedop => "semop() (a System V semaphore)".into(),
        nr => format!("system call {nr}"),
    }
}

/// A queue's attributes: how many messages it holds at most, how large each may be, how many
/// it holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueAttributes {
    pub max_messages: i64,
    pub message_size: i64,
    pub messages: i64,
}

fn attributes_of(fd: libc::c_int) -> Option<QueueAttributes> {
    // SAFETY: a zeroed mq_attr is a valid value to be filled in.
    let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
    // SAFETY: fd is an open descriptor; attr is a valid out-pointer.
    if unsafe { libc::mq_getattr(fd, &mut attr) } != 0 {
        return None;
    }
    Some(QueueAttributes {
        max_messages: attr.mq_maxmsg,
        message_size: attr.mq_msgsize,
        messages: attr.mq_curmsgs,
    })
}

/// The attributes of the queue called `name`, opened by name (read-only, so nothing changes).
pub fn queue_attributes(name: &str) -> Option<QueueAttributes> {
    let c_name = std::ffi::CString::new(name).ok()?;
    // SAFETY: a valid C string; without O_CREAT no further argument is read.
    let mqd = unsafe { libc::mq_open(c_name.as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK) };
    if mqd < 0 {
        return None;
    }
    let attributes = attributes_of(mqd);
    // SAFETY: opened just above.
    unsafe { libc::mq_close(mqd) };
    attributes
}

/// How many messages the queue behind descriptor `fd` of `pid` holds, opened through
/// `/proc/PID/fd` (read-only and non-blocking, so nothing changes).
pub fn queue_messages(pid: i32, fd: i32) -> Option<i64> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let queue = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(format!("/proc/{pid}/fd/{fd}"))
        .ok()?;
    attributes_of(queue.as_raw_fd()).map(|a| a.messages)
}

/// The named semaphores `pid` maps, by address, with their values (the first 32 bits of glibc's
/// `sem_t`).
pub fn semaphores_of(pid: i32) -> Vec<(u64, u32)> {
    mappings(pid)
        .into_iter()
        .filter(Mapping::named_semaphore)
        .filter_map(|m| {
            let bytes = peek(pid, m.start, 4)?;
            Some((m.start, u32::from_ne_bytes(bytes.try_into().ok()?)))
        })
        .collect()
}

/// Whether `signal` is pending for `pid`, not yet delivered: for its main thread (`SigPnd`) or
/// for the whole process (`ShdPnd`).
pub fn pending(pid: i32, signal: i32) -> bool {
    [SignalMask::Pending, SignalMask::SharedPending]
        .into_iter()
        .any(|mask| inspect::has_signal(pid, pid, mask, signal))
}

/// The value of the named semaphore `name` (glibc keeps it in the first 32 bits of the
/// `/dev/shm/sem.NAME` file); `None` if it does not exist.
pub fn semaphore_value(name: &str) -> Option<u32> {
    let file = std::fs::File::open(semaphore_file(name)).ok()?;
    let mut bytes = [0u8; 4];
    file.read_exact_at(&mut bytes, 0).ok()?;
    Some(u32::from_ne_bytes(bytes))
}

/// What a shared mapping of `path` (from `/proc/PID/maps`) is, in words: a System V segment
/// shows as `/SYSV<key> (deleted)`.
pub fn mapped(path: &str) -> String {
    if path.starts_with("/SYSV") {
        format!("a System V shared memory segment ({path}: shmget() and shmat())")
    } else {
        path.to_string()
    }
}

/// The file of the named semaphore `name`.
pub fn semaphore_file(name: &str) -> String {
    format!("/dev/shm/sem.{}", name.trim_start_matches('/'))
}

/// Removes the named semaphores' files, as they are: a traced run may leave them behind.
pub fn remove_semaphores(names: &[String]) {
    for name in names {
        let _ = std::fs::remove_file(semaphore_file(name));
    }
}

/// Whether a semaphore or a queue called `name` exists.
pub fn name_exists(name: &str) -> bool {
    std::path::Path::new(&semaphore_file(name)).exists()
        || crate::engine::audit::message_queue_exists(name)
}

/// Writes `bytes` at `addr` in the memory of `pid`.
pub fn poke(pid: i32, addr: u64, bytes: &[u8]) -> Result<(), Fail> {
    let memory = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/mem"))
        .map_err(|e| Fail::Grader(format!("opening the memory of pid {pid}: {e}")))?;
    memory
        .write_all_at(bytes, addr)
        .map_err(|e| Fail::Grader(format!("writing the memory of pid {pid}: {e}")))
}

/// Reads `len` bytes at `addr` in the memory of `pid`.
pub fn peek(pid: i32, addr: u64, len: usize) -> Option<Vec<u8>> {
    let memory = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut bytes = vec![0u8; len];
    memory.read_exact_at(&mut bytes, addr).ok()?;
    Some(bytes)
}

/// Posts, in the other side's stead, the signal `waiter` is blocked on (`seen`): a semaphore's
/// value is raised in the waiter's memory, and the waiter stopped and continued, so that its
/// futex wait restarts and finds the value; a queue gets a `ready` message through the waiter's
/// own descriptor.
pub fn post_for(waiter: i32, seen: Seen) -> Result<(), Fail> {
    match seen {
        Seen::Futex { addr, .. } => {
            let bytes = peek(waiter, addr, 4)
                .ok_or_else(|| Fail::Grader(format!("reading the semaphore at {addr:#x}")))?;
            let value = u32::from_ne_bytes(bytes.try_into().expect("4 bytes"));
            poke(waiter, addr, &value.wrapping_add(1).to_ne_bytes())?;
            force::hold(waiter)?;
            let until = Instant::now() + Duration::from_millis(500);
            while state(waiter) != Some('T') && Instant::now() < until {
                std::thread::sleep(Duration::from_micros(200));
            }
            force::resume(waiter)
        }
        Seen::Receive { fd, .. } => {
            let path = format!("/proc/{waiter}/fd/{fd}");
            let queue = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| Fail::Grader(format!("opening {path}: {e}")))?;
            let message = b"ready";
            // SAFETY: an open queue descriptor and a valid buffer.
            let sent = unsafe {
                libc::mq_send(
                    std::os::fd::AsRawFd::as_raw_fd(&queue),
                    message.as_ptr().cast(),
                    message.len(),
                    0,
                )
            };
            match sent {
                0 => Ok(()),
                _ => Err(Fail::Grader(format!(
                    "mq_send through {path}: {}",
                    nix::errno::Errno::last()
                ))),
            }
        }
        _ => Err(Fail::Grader(
            "the waiter is in no wait the grader can post".into(),
        )),
    }
}
