//! What the grader reads of the programs in `/proc` while they run: where each thread is
//! blocked, which signals a process blocks or catches, its sockets and what they listen on. None
//! of it is specific to sockets' lab but the socket parts; the rest could serve other labs.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::engine::diagnose::{Activity, classify};
use crate::engine::inspect::SignalMask;
use crate::engine::{Fail, force, inspect};

/// One thread of a process, at one moment.
pub struct ThreadState {
    pub tid: i32,
    /// `R`, `S`, `D`, `T`, ...
    pub state: char,
    /// The system call it is blocked in, if any.
    pub syscall: Option<i64>,
    pub activity: Activity,
}

/// The threads of `pid` (empty if it is gone).
pub fn threads(pid: i32) -> Vec<ThreadState> {
    let Some(view) = inspect::view(pid) else {
        return Vec::new();
    };
    view.threads
        .iter()
        .map(|t| ThreadState {
            tid: t.tid,
            state: t.state,
            syscall: t.syscall.map(|(n, _)| n),
            activity: if t.state == 'R' {
                Activity::Busy
            } else {
                classify(&view, t.syscall)
            },
        })
        .collect()
}

/// Waits until a thread of `pid` is blocked in system call `number`, or `until`; returns it.
pub fn thread_in(pid: i32, number: i64, until: Instant) -> Option<i32> {
    loop {
        if let Some(t) = threads(pid)
            .into_iter()
            .find(|t| t.state != 'R' && t.syscall == Some(number))
        {
            return Some(t.tid);
        }
        if Instant::now() >= until {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits until a thread of `pid` not among `before` (a thread started since) is blocked in one
/// of `calls`, or `until`; returns it and its call.
pub fn new_thread_in(
    pid: i32,
    before: &[i32],
    calls: &[i64],
    until: Instant,
) -> Option<(i32, i64)> {
    loop {
        let found = threads(pid).into_iter().find_map(|t| {
            let call = t.syscall.filter(|n| calls.contains(n))?;
            (t.state == 'S' && !before.contains(&t.tid)).then_some((t.tid, call))
        });
        if found.is_some() || Instant::now() >= until {
            return found;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Each thread of `pid` with the call it is blocked in and that call's first argument, taken
/// before a client connects: the thread that then reads that client is told apart from it.
pub fn blocked_calls(pid: i32) -> Vec<(i32, Option<(i64, u64)>)> {
    inspect::view(pid)
        .map(|view| view.threads.iter().map(|t| (t.tid, t.syscall)).collect())
        .unwrap_or_default()
}

/// Waits until a thread of `pid` is blocked in one of `calls` and was not in `before` (from
/// [`blocked_calls`]), or was blocked there in another call (a pool's thread that has taken up
/// a new client), or `until`. A thread on the CPU in `before` is left out: it may have been on
/// its way back to a read of its own client. Returns the thread and its call.
pub fn thread_newly_in(
    pid: i32,
    before: &[(i32, Option<(i64, u64)>)],
    calls: &[i64],
    until: Instant,
) -> Option<(i32, i64)> {
    let was_elsewhere = |tid: i32| match before.iter().find(|(t, _)| *t == tid) {
        None => true,
        Some((_, Some((number, _)))) => !calls.contains(number),
        Some((_, None)) => false,
    };
    loop {
        let found = inspect::view(pid).and_then(|view| {
            view.threads.iter().find_map(|t| {
                let (number, _) = t.syscall?;
                let new = t.state == 'S' && calls.contains(&number) && was_elsewhere(t.tid);
                new.then_some((t.tid, number))
            })
        });
        if found.is_some() || Instant::now() >= until {
            return found;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The ids of the threads of `pid` now.
pub fn thread_ids(pid: i32) -> Vec<i32> {
    threads(pid).iter().map(|t| t.tid).collect()
}

/// Waits until a thread of `pid` is blocked writing a socket, or `until`.
pub fn writing_a_socket(pid: i32, until: Instant) -> bool {
    loop {
        let writing = threads(pid)
            .iter()
            .any(|t| t.state == 'S' && matches!(t.activity, Activity::SocketWrite { .. }));
        if writing {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Stops `pid` (SIGSTOP) until every thread is stopped, then lets it go on (SIGCONT): a thread
/// blocked in a write that had sent part of its data returns with a short count, as it does
/// under a debugger or job control.
pub fn stop_and_resume(pid: i32) -> Result<(), Fail> {
    hold_every_thread(pid)?;
    force::resume(pid)
}

/// Stops `pid` (SIGSTOP) and waits until every one of its threads has stopped (up to 2 s), not
/// only the main one: until [`force::resume`] none of them takes anything from a socket.
pub fn hold_every_thread(pid: i32) -> Result<(), Fail> {
    force::hold(pid)?;
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        let states = threads(pid);
        if states.is_empty() || states.iter().all(|t| matches!(t.state, 'T' | 't')) {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// Whether the main thread of `pid` is blocked receiving on descriptor `fd` (one file read:
/// cheap enough to look every few hundred microseconds).
pub fn main_receives_on(pid: i32, fd: i32) -> bool {
    inspect::call_of(pid, pid).is_some_and(|(number, args)| {
        matches!(
            number,
            libc::SYS_recvfrom | libc::SYS_recvmsg | libc::SYS_read
        ) && args[0] == fd as u64
    })
}

/// Binds every thread of `pid` to one CPU, the first the grader may use (threads they start
/// inherit it): its threads then take turns instead of running side by side, so that one busy
/// on the CPU makes no progress while another runs. Returns whether it could.
pub fn pin_to_one_cpu(pid: i32) -> bool {
    threads(pid)
        .iter()
        .all(|t| crate::engine::force::one_cpu(t.tid).is_ok())
}

fn mask_bit(signal: Signal) -> u64 {
    1 << (signal as i32 - 1)
}

/// The threads of `pid` that do not block `signal` (`SigBlk` of each thread). A thread in
/// sigwait() is not one of them: the kernel unblocks the signals it waits for while it waits.
pub fn threads_not_blocking(pid: i32, signal: Signal) -> Vec<i32> {
    threads(pid)
        .into_iter()
        .filter(|t| t.syscall != Some(libc::SYS_rt_sigtimedwait))
        .filter_map(|t| {
            let tid = t.tid;
            let blocked = inspect::signal_mask(pid, tid, SignalMask::Blocked)?;
            (blocked & mask_bit(signal) == 0).then_some(tid)
        })
        .collect()
}

/// The socket descriptors of `pid`: descriptor number and socket inode.
pub fn sockets(pid: i32) -> Vec<(i32, u64)> {
    inspect::view(pid)
        .map(|view| {
            view.fds
                .iter()
                .filter_map(|(fd, target)| {
                    let inode = target.strip_prefix("socket:[")?.strip_suffix(']')?;
                    Some((*fd, inode.parse().ok()?))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A TCP socket as `/proc/PID/net/tcp` (or `tcp6`) lists it: addresses as written there
/// (`0100007F:1F90`), the state in hex (`0A`: listening, `01`: established), the inode.
struct TcpSocket {
    local: String,
    remote: String,
    state: String,
    inode: u64,
}

impl TcpSocket {
    fn port_of(address: &str) -> Option<u16> {
        let (_, hex) = address.rsplit_once(':')?;
        u16::from_str_radix(hex, 16).ok()
    }
}

/// The TCP sockets of `pid`'s network namespace (IPv4 and IPv6) that are `pid`'s own.
fn tcp_sockets(pid: i32) -> Vec<TcpSocket> {
    let inodes: Vec<u64> = sockets(pid).into_iter().map(|(_, inode)| inode).collect();
    let mut found = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(remote), Some(state), Some(inode)) =
                (fields.get(1), fields.get(2), fields.get(3), fields.get(9))
            else {
                continue;
            };
            if let Ok(inode) = inode.parse::<u64>()
                && inodes.contains(&inode)
            {
                found.push(TcpSocket {
                    local: local.to_string(),
                    remote: remote.to_string(),
                    state: state.to_string(),
                    inode,
                });
            }
        }
    }
    found
}

/// The local addresses (as `/proc/net/tcp` writes them, `0100007F` for 127.0.0.1) of the TCP
/// sockets of `pid` that listen on `port`.
pub fn listening_on(pid: i32, port: u16) -> Vec<String> {
    tcp_sockets(pid)
        .into_iter()
        .filter(|s| s.state == "0A" && TcpSocket::port_of(&s.local) == Some(port))
        .filter_map(|s| {
            s.local
                .rsplit_once(':')
                .map(|(address, _)| address.to_string())
        })
        .collect()
}

/// Whether `pid` holds a TCP connection to `port` (established, in `/proc/PID/net/tcp`).
pub fn connected_to(pid: i32, port: u16) -> bool {
    tcp_sockets(pid)
        .iter()
        .any(|s| s.state == "01" && TcpSocket::port_of(&s.remote) == Some(port))
}

/// A copy (`pidfd_getfd`) of `pid`'s TCP connection to `port`: it stays readable once the
/// program has closed its own. `None` if there is none or the copy cannot be had.
pub fn tcp_connection_copy(pid: i32, port: u16) -> Option<OwnedFd> {
    let inode = tcp_sockets(pid)
        .into_iter()
        .find(|s| s.state == "01" && TcpSocket::port_of(&s.remote) == Some(port))?
        .inode;
    let (fd, _) = sockets(pid).into_iter().find(|(_, i)| *i == inode)?;
    descriptor_copy(pid, fd)
}

/// How many bytes TCP connection `socket` has received so far (`TCP_INFO`'s
/// `tcpi_bytes_received`); `None` if it cannot be read.
pub fn tcp_bytes_received(socket: &OwnedFd) -> Option<u64> {
    // SAFETY: tcp_info is plain data; getsockopt() writes at most the length passed.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let got = libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        );
        (got == 0 && len as usize >= std::mem::size_of::<libc::tcp_info>())
            .then_some(info.tcpi_bytes_received)
    }
}

/// Whether a `/proc/net/tcp` address is the loopback one (127.0.0.0/8, or ::1).
pub fn is_loopback(address: &str) -> bool {
    match address.len() {
        // Little-endian on x86: 127.x.y.z is xxxxxx7F.
        8 => address.ends_with("7F"),
        32 => address == "00000000000000000000000001000000",
        _ => false,
    }
}

/// A `/proc/net/tcp` address in the usual notation, for messages.
pub fn address_name(address: &str) -> String {
    match address.len() {
        8 => u32::from_str_radix(address, 16)
            .map(|a| std::net::Ipv4Addr::from(a.swap_bytes()).to_string())
            .unwrap_or_else(|_| address.to_string()),
        32 if address.chars().all(|c| c == '0') => "[::]".into(),
        _ => format!("[{address}]"),
    }
}

/// How long each thread of `pid` has been on a CPU, in nanoseconds.
pub fn cpu_ns(pid: i32) -> std::collections::BTreeMap<i32, u64> {
    inspect::thread_times(pid)
        .into_iter()
        .map(|(tid, times)| (tid, times.run_ns))
        .collect()
}

/// The descriptor and byte count of the write thread `tid` of `pid` is in (held at its entry):
/// its first and third arguments (`/proc/PID/task/TID/syscall`).
pub fn write_args(pid: i32, tid: i32) -> Option<(i32, u64)> {
    let (_, args) = inspect::call_of(pid, tid)?;
    Some((i32::try_from(args[0]).ok()?, args[2]))
}

/// A copy of descriptor `fd` of `pid` (`pidfd_getfd`), to read its socket's state; `None` if it
/// cannot be had.
fn descriptor_copy(pid: i32, fd: i32) -> Option<OwnedFd> {
    // SAFETY: plain system calls; each descriptor returned is owned once, and closed.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid, 0);
        let pidfd = OwnedFd::from_raw_fd(i32::try_from(pidfd).ok().filter(|&f| f >= 0)?);
        let copy = libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0);
        Some(OwnedFd::from_raw_fd(
            i32::try_from(copy).ok().filter(|&f| f >= 0)?,
        ))
    }
}

/// Whether socket `fd` of `pid` closes by aborting its connection: `SO_LINGER` on with a time of
/// 0, read on a copy of the descriptor. `None` if the copy cannot be had.
pub fn aborts_on_close(pid: i32, fd: i32) -> Option<bool> {
    let copy = descriptor_copy(pid, fd)?;
    let mut linger = libc::linger {
        l_onoff: 0,
        l_linger: 0,
    };
    let mut len = std::mem::size_of::<libc::linger>() as libc::socklen_t;
    // SAFETY: getsockopt() into a linger of the length passed.
    let got = unsafe {
        libc::getsockopt(
            copy.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw mut linger).cast(),
            &mut len,
        )
    };
    (got == 0).then_some(linger.l_onoff != 0 && linger.l_linger == 0)
}

/// Whether socket `fd` of `pid` has TCP_NODELAY set, read on a copy of the descriptor
/// (`pidfd_getfd`); `None` if the copy cannot be had.
pub fn tcp_nodelay(pid: i32, fd: i32) -> Option<bool> {
    let copy = descriptor_copy(pid, fd)?;
    // SAFETY: getsockopt() into a c_int of the length passed.
    unsafe {
        let mut on: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let got = libc::getsockopt(
            copy.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&raw mut on).cast(),
            &mut len,
        );
        (got == 0).then_some(on != 0)
    }
}

/// The receive and send timeouts (`SO_RCVTIMEO`, `SO_SNDTIMEO`) of socket `fd` of `pid`, read
/// on a copy of the descriptor (`pidfd_getfd`); `None` if the copy cannot be had or `fd` is no
/// socket. A timeout of zero is none.
pub fn socket_timeouts(pid: i32, fd: i32) -> Option<[Duration; 2]> {
    let copy = descriptor_copy(pid, fd)?;
    // SAFETY: getsockopt() into a timeval of the length passed.
    unsafe {
        let read = |option| {
            let mut tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 0,
            };
            let mut len = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
            let got = libc::getsockopt(
                copy.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&raw mut tv).cast(),
                &mut len,
            );
            (got == 0).then(|| {
                Duration::from_secs(tv.tv_sec as u64) + Duration::from_micros(tv.tv_usec as u64)
            })
        };
        Some([read(libc::SO_RCVTIMEO)?, read(libc::SO_SNDTIMEO)?])
    }
}

/// A socket's receive and send timeouts (`SO_RCVTIMEO`, `SO_SNDTIMEO`); zero is none.
pub struct Timeouts {
    pub fd: i32,
    pub receive: Duration,
    pub send: Duration,
}

impl Timeouts {
    /// `a receive timeout of 20.000 s (SO_RCVTIMEO: set_read_timeout)`, the send one, or both.
    pub fn describe(&self) -> String {
        let mut said = Vec::new();
        if !self.receive.is_zero() {
            said.push(format!(
                "a receive timeout of {:.3} s (SO_RCVTIMEO: set_read_timeout)",
                self.receive.as_secs_f64()
            ));
        }
        if !self.send.is_zero() {
            said.push(format!(
                "a send timeout of {:.3} s (SO_SNDTIMEO: set_write_timeout)",
                self.send.as_secs_f64()
            ));
        }
        said.join(" and ")
    }
}

/// The sockets of `pid` but the control channel that have a receive or a send timeout.
pub fn sockets_with_timeouts(pid: i32) -> Vec<Timeouts> {
    sockets(pid)
        .into_iter()
        .filter(|&(fd, _)| fd != super::programs::CONTROL_FD)
        .filter_map(|(fd, _)| {
            let [receive, send] = socket_timeouts(pid, fd)?;
            (!receive.is_zero() || !send.is_zero()).then_some(Timeouts { fd, receive, send })
        })
        .collect()
}

/// The inodes of the client connections `pid` holds: the Unix sockets accepted on a listener
/// (they carry its path in `/proc/PID/net/unix`; a socket pair or a client's own socket has no
/// path) and the TCP connections it accepted on `port` (local port `port`, not listening). A
/// descriptor and its copies (`dup`, `try_clone`) share one inode.
pub fn connections(pid: i32, port: u16) -> std::collections::BTreeSet<u64> {
    let ours: std::collections::BTreeSet<u64> =
        sockets(pid).into_iter().map(|(_, inode)| inode).collect();
    let mut found = std::collections::BTreeSet::new();
    let unix = std::fs::read_to_string(format!("/proc/{pid}/net/unix")).unwrap_or_default();
    for line in unix.lines().skip(1) {
        // Num RefCount Protocol Flags Type St Inode Path
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(flags), Some(inode), Some(_path)) = (fields.get(3), fields.get(6), fields.get(7))
        else {
            continue;
        };
        let listening = u32::from_str_radix(flags, 16).is_ok_and(|f| f & 0x0001_0000 != 0);
        if let Ok(inode) = inode.parse::<u64>()
            && !listening
            && ours.contains(&inode)
        {
            found.insert(inode);
        }
    }
    if port != 0 {
        found.extend(
            tcp_sockets(pid)
                .into_iter()
                .filter(|s| s.state != "0A" && TcpSocket::port_of(&s.local) == Some(port))
                .map(|s| s.inode),
        );
    }
    found
}

/// A copy (`pidfd_getfd`) of `pid`'s listening Unix socket bound to a path: what it accepts,
/// the grader accepts in its place. `None` if there is none or the copy cannot be had.
pub fn unix_listener_copy(pid: i32) -> Option<std::os::unix::net::UnixListener> {
    let unix = std::fs::read_to_string(format!("/proc/{pid}/net/unix")).ok()?;
    let listening: Vec<u64> = unix
        .lines()
        .skip(1)
        .filter_map(|line| {
            // Num RefCount Protocol Flags Type St Inode Path
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = u32::from_str_radix(fields.get(3)?, 16).ok()?;
            let path = fields.get(7)?;
            (flags & 0x0001_0000 != 0 && !path.starts_with('@')).then_some(())?;
            fields.get(6)?.parse().ok()
        })
        .collect();
    let (fd, _) = sockets(pid)
        .into_iter()
        .find(|(_, inode)| listening.contains(inode))?;
    descriptor_copy(pid, fd).map(std::os::unix::net::UnixListener::from)
}

/// How many descriptors of `pid` are client connections ([`connections`]): a copy of one
/// (`dup`, `try_clone`) counts on its own.
pub fn connection_fds(pid: i32, port: u16) -> usize {
    let inodes = connections(pid, port);
    sockets(pid)
        .into_iter()
        .filter(|(_, inode)| inodes.contains(inode))
        .count()
}

/// Whether socket `fd` of `pid` has been shut down for reading (by `shutdown()` on it, or the
/// peer's end of writing): a `poll()` of a copy of it (`pidfd_getfd`) reports `POLLRDHUP` or
/// `POLLHUP`. `None` if the copy cannot be had.
pub fn read_side_shut(pid: i32, fd: i32) -> Option<bool> {
    let copy = descriptor_copy(pid, fd)?;
    // SAFETY: poll() of one pollfd.
    unsafe {
        let mut poll = libc::pollfd {
            fd: copy.as_raw_fd(),
            events: libc::POLLRDHUP,
            revents: 0,
        };
        if libc::poll(&mut poll, 1, 0) < 0 {
            return None;
        }
        Some(poll.revents & (libc::POLLRDHUP | libc::POLLHUP) != 0)
    }
}
