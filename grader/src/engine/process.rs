//! Starting a lab program as a process the grader can watch, talk to, time out and kill.
//!
//! Each program starts in a process group of its own, with resource limits, its stdout and
//! stderr captured (up to a cap), and the control socket of `ipc-labs-driver` as descriptor 3.
//! Two threads per process turn what happens into [`Event`]s: one reads the control socket, one
//! waits for the exit. The grader is a child subreaper, so the program's orphaned children are
//! reparented to it; [`reap_orphans`] collects them.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ipc_labs_driver::{CONTROL_FD_ENV, Message, NOT_IMPLEMENTED, PANICKED};
use nix::fcntl::{FcntlArg, fcntl};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, recv, send, socketpair};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

use super::diagnose::{self, Hang};
use super::inspect::{self, ProcessView};
use super::model::{Fail, Lab};

/// How much of each stdout and stderr is kept.
pub const OUTPUT_CAP: usize = 64 * 1024;
/// The descriptor number of the control socket in the program.
const CONTROL_FD: i32 = 3;
/// How often a wait for the program looks for a deadlock.
const DEADLOCK_PROBE: Duration = Duration::from_millis(200);
/// How long after an exit the grader still waits for control messages the program sent just
/// before it, while its control socket is still open (a child of it may hold it): they travel
/// on another thread, which a loaded machine may run late.
const LATE_MESSAGE_GRACE: Duration = Duration::from_secs(2);
/// How long the grader waits for the capture of a program's stderr to read what the program
/// wrote before it exited.
const STDERR_SETTLE: Duration = Duration::from_secs(2);

/// The pids of processes the grader started and has not yet waited for: [`reap_orphans`] must
/// leave them to their own waiter. Spawning holds this lock, so a sweep cannot reap a process
/// that exited before it was registered.
static STARTED: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

/// The process groups of the programs whose [`Proc`] lives: what is in them belongs to a check
/// even once the group's first process has been reaped (a check that killed it and follows its
/// orphans), so [`kill_stray_children`] leaves them alone. Taken after [`STARTED`], never before.
static LIVE_GROUPS: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

/// A program's process group in [`LIVE_GROUPS`], for as long as its [`Proc`] lives.
struct GroupClaim(i32);

impl GroupClaim {
    /// Claims `group`; the caller holds [`STARTED`], so that no sweep sees the program unclaimed.
    fn new(group: i32) -> GroupClaim {
        live_groups().get_or_insert_with(HashSet::new).insert(group);
        GroupClaim(group)
    }
}

impl Drop for GroupClaim {
    fn drop(&mut self) {
        if let Some(groups) = live_groups().as_mut() {
            groups.remove(&self.0);
        }
    }
}

fn live_groups() -> MutexGuard<'static, Option<HashSet<i32>>> {
    LIVE_GROUPS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Resource limits for the processes of a check.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Address space per process.
    pub address_space: u64,
    /// Largest file a process may write.
    pub file_size: u64,
    /// Tasks (processes and their threads) the user may have in all: `RLIMIT_NPROC`, which the
    /// kernel does not enforce for root.
    pub processes: u64,
    /// The user (uid, gid) the programs run as, if not the grader's own.
    pub user: Option<(u32, u32)>,
    /// A lower soft `RLIMIT_MSGQUEUE` (bytes of message queues), when a check sets one.
    pub message_queue_bytes: Option<u64>,
    /// The program stops itself (SIGSTOP) just before `exec`, so that a check can start tracing
    /// it before its first system call; the check lets it go with SIGCONT.
    pub stopped_at_start: bool,
    /// The program runs in an IPC namespace of its own, whose `/proc/sys/fs/mqueue/msg_max` and
    /// `msgsize_max` are these (root only): limits other than the machine's, for a check of
    /// how a program reads them. Its queues are out of the grader's sight and go with it.
    pub message_queue_sysctls: Option<(u64, u64)>,
    /// With [`Limits::message_queue_sysctls`], that namespace's `msg_default` (what a queue
    /// created without attributes gets) too: a value of its own, which a program that takes it
    /// for `msg_max` shows.
    pub message_queue_msg_default: Option<u64>,
    /// The program (run as root) lacks `CAP_IPC_OWNER`, with which root passes every System V
    /// IPC permission check: the modes of the objects it uses apply to it as to any user.
    pub without_ipc_owner: bool,
    /// Descriptors the program finds open when it starts, besides stdio and the control channel,
    /// each on `/dev/null`: files it holds before the lab's code runs, which that code must leave
    /// alone (the first free number, 4, and a high one).
    pub held_descriptors: &'static [i32],
    /// With [`Limits::held_descriptors`]: a directory in which each of them is a new unnamed
    /// file (`O_TMPFILE`) instead of `/dev/null`, say `/dev/shm`, where the lab's own objects
    /// live: a descriptor there that is not the lab's.
    pub held_descriptors_in: Option<&'static std::ffi::CStr>,
    /// The program is started without the control channel's variable in its environment, as a
    /// user runs it by hand (the socket is still descriptor 3, unused): it must behave as graded.
    pub ungraded: bool,
    /// Signals the program starts with blocked (a mask of bits, signal N at bit N - 1): a
    /// program that blocked them before the lab's code ran, which must find them so after it.
    pub blocked_signals: u64,
    /// A pipe the program finds open when it starts, its read end at this descriptor and its
    /// write end at the next: a pipe of the program's own (to a logger, another helper), which
    /// the lab's code did not open.
    pub held_pipe_at: Option<i32>,
    /// The program joins the IPC namespace of this process (root only): a second program of a
    /// check beside one started with [`Limits::message_queue_sysctls`], sharing its queues.
    pub ipc_namespace_of: Option<i32>,
}

impl Limits {
    /// The default limits for programs that run as `user` (the grader's own user if `None`).
    pub fn for_user(user: Option<(u32, u32)>) -> Limits {
        let uid = user.map_or_else(|| nix::unistd::getuid().as_raw(), |(uid, _)| uid);
        Limits {
            address_space: 4 << 30,
            file_size: 4 << 30,
            processes: user_task_count(uid) + TASK_HEADROOM,
            user,
            message_queue_bytes: None,
            stopped_at_start: false,
            message_queue_sysctls: None,
            message_queue_msg_default: None,
            without_ipc_owner: false,
            held_descriptors: &[],
            held_descriptors_in: None,
            ungraded: false,
            blocked_signals: 0,
            held_pipe_at: None,
            ipc_namespace_of: None,
        }
    }
}

/// `CAP_IPC_OWNER` (linux/capability.h).
const CAP_IPC_OWNER: u32 = 15;

/// Takes `capability` out of the calling process's bounding and inheritable sets, so that the
/// program it `exec`s next does not have it, even as root. Async-signal-safe: for `pre_exec`.
fn drop_capability(capability: u32) -> std::io::Result<()> {
    /// `struct __user_cap_header_struct` and `__user_cap_data_struct` (version 3: two of them).
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    // SAFETY: plain system calls on live structures of the kernel's layout.
    unsafe {
        if libc::prctl(libc::PR_CAPBSET_DROP, capability as libc::c_ulong, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut header = Header {
            version: VERSION_3,
            pid: 0,
        };
        let mut data = [Data {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        if libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        data[(capability / 32) as usize].inheritable &= !(1 << (capability % 32));
        if libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The tasks `uid` has now, each process's threads counted: what the kernel holds against
/// `RLIMIT_NPROC` (a browser or an editor alone may have hundreds).
fn user_task_count(uid: u32) -> u64 {
    procfs::process::all_processes()
        .map(|all| {
            all.flatten()
                .filter(|p| p.uid().ok() == Some(uid))
                .map(|p| p.stat().map_or(1, |stat| stat.num_threads.max(1) as u64))
                .sum()
        })
        .unwrap_or(0)
}

/// The tasks a check's programs may add to their user's: few, so that a fork bomb, held by the
/// limit, cannot swamp the machine before the grader's watch stops it (see
/// [`super::run::MAX_PROCESSES`]). A check that needs more threads asks for them
/// ([`super::run::Run::spawn_with_threads`]).
const TASK_HEADROOM: u64 = 2 * super::run::MAX_PROCESSES as u64;

/// Whether a program can be given an IPC namespace of its own with these message queue limits
/// ([`Limits::message_queue_sysctls`]): tried first in a forked child, for root may still lack
/// `CAP_SYS_ADMIN` or find `/proc/sys` read-only (in a container).
pub fn message_queue_sysctls_allowed(msg_max: u64, msgsize_max: u64) -> bool {
    // Held so that the orphan sweep cannot reap the child before we do.
    let _started = STARTED.lock().expect("registry lock");
    // SAFETY: the child makes only async-signal-safe calls, then exits.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: as above.
        let made = unsafe { libc::unshare(libc::CLONE_NEWIPC) } == 0
            && write_number(c"/proc/sys/fs/mqueue/msg_max", msg_max).is_ok()
            && write_number(c"/proc/sys/fs/mqueue/msgsize_max", msgsize_max).is_ok();
        // SAFETY: ends the child without running the grader's exit handlers.
        unsafe { libc::_exit(if made { 0 } else { 1 }) };
    }
    if child < 0 {
        return false;
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    let reaped = unsafe { libc::waitpid(child, &mut status, 0) };
    reaped == child && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}

/// Sets every signal's action back to the default. A signal ignored by the grader's own
/// starter (`nohup` ignores `SIGHUP`, a shell's background job `SIGINT` and `SIGQUIT`) stays
/// ignored across `exec`: the program would not die of it, nor see it as the checks expect.
/// Async-signal-safe: for `pre_exec`.
fn default_signal_actions() {
    for signal in 1..libc::SIGRTMAX() {
        if signal != libc::SIGKILL && signal != libc::SIGSTOP {
            // SAFETY: sigaction() is async-signal-safe; numbers the C library keeps for
            // itself fail with EINVAL and keep their action.
            unsafe { libc::signal(signal, libc::SIG_DFL) };
        }
    }
}

/// `value` in decimal, written at the end of `into`, without allocating (between fork and exec,
/// or in a tracer forked from the grader).
pub(super) fn decimal(value: u64, into: &mut [u8; 20]) -> &[u8] {
    let mut start = into.len();
    let mut rest = value;
    loop {
        start -= 1;
        into[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    &into[start..]
}

/// Writes `value` in decimal to the file at `path`, with async-signal-safe calls only (between
/// fork and exec).
fn write_number(path: &std::ffi::CStr, value: u64) -> std::io::Result<()> {
    let mut digits = [0u8; 20];
    let text = decimal(value, &mut digits);
    // SAFETY: a NUL-terminated path, a live buffer of the length given, our own descriptor.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let written = libc::write(fd, text.as_ptr().cast(), text.len());
        let error = std::io::Error::last_os_error();
        libc::close(fd);
        if written != text.len() as isize {
            return Err(error);
        }
    }
    Ok(())
}

/// What happened to a started program.
#[derive(Debug)]
pub enum Event {
    Message(Message),
    Exited(ExitStatus),
    /// No process holds the program's end of the control socket any more: every message it
    /// sent has been delivered.
    Closed,
}

/// Captured output of one stream: the first [`OUTPUT_CAP`] bytes and how many were dropped.
#[derive(Debug, Default)]
pub struct Captured {
    pub bytes: Vec<u8>,
    pub dropped: u64,
    /// The stream reached its end: every process that held it has closed it.
    pub ended: bool,
}

impl Captured {
    pub fn text(&self) -> String {
        let mut text = String::from_utf8_lossy(&self.bytes).into_owned();
        if self.dropped > 0 {
            text.push_str(&format!("\n[... {} more bytes not kept]", self.dropped));
        }
        text
    }

    /// The last `lines` lines, for a message.
    pub fn tail(&self, lines: usize) -> String {
        let text = String::from_utf8_lossy(&self.bytes);
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// A program the check started.
pub struct Proc {
    pub pid: Pid,
    pub command: String,
    events: Receiver<Event>,
    control: Arc<OwnedFd>,
    pub stdout: Arc<Mutex<Captured>>,
    pub stderr: Arc<Mutex<Captured>>,
    /// The inodes of the pipes the grader made for the program's stdout and stderr: not the
    /// program's own.
    pub grader_pipes: Vec<u64>,
    exit: Option<ExitStatus>,
    /// [`Event::Closed`] has been received.
    control_closed: bool,
    /// A message [`Proc::says_before`] saw and left for the next receive.
    held: Option<Message>,
    /// Every control message, for the log.
    pub transcript: Arc<Mutex<Vec<String>>>,
    deadline: Instant,
    lab: &'static Lab,
    roles: Arc<dyn Fn(&ProcessView) -> String + Send + Sync>,
    /// Called on every message from the program: the moments the grader looks at the check's
    /// objects.
    on_message: Option<Box<dyn Fn() + Send>>,
    _group: GroupClaim,
}

/// Starts `program` with `args` in `dir`.
pub fn spawn(
    program: &Path,
    args: &[&OsStr],
    dir: &Path,
    limits: Limits,
    deadline: Instant,
    lab: &'static Lab,
) -> Result<Proc, Fail> {
    let (grader_end, paired_end) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| Fail::Grader(format!("socketpair: {e}")))?;
    // Above CONTROL_FD, so that the dup2 below always makes a copy: dup2 onto itself would keep
    // close-on-exec (if another thread freed descriptor 3 while the pair was made), and a
    // descriptor below 3 would be overwritten by the child's stdio.
    let program_end = fcntl(&paired_end, FcntlArg::F_DUPFD_CLOEXEC(CONTROL_FD + 1))
        // SAFETY: fcntl has just made this descriptor, and nothing else owns it.
        .map(|raw| unsafe { OwnedFd::from_raw_fd(raw) })
        .map_err(|e| Fail::Grader(format!("fcntl(F_DUPFD_CLOEXEC): {e}")))?;
    drop(paired_end);
    let program_raw = program_end.as_raw_fd();
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(dir)
        .env(CONTROL_FD_ENV, CONTROL_FD.to_string())
        // Temporary files land in the check's directory, where the grader sees them.
        .env("TMPDIR", dir)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if limits.ungraded {
        command.env_remove(CONTROL_FD_ENV);
    }
    // Opened here, as the closure below may not allocate a path; closed at exec.
    let namespace = match limits.ipc_namespace_of {
        Some(pid) => Some(
            std::fs::File::open(format!("/proc/{pid}/ns/ipc"))
                .map_err(|e| Fail::Grader(format!("the IPC namespace of pid {pid}: {e}")))?,
        ),
        None => None,
    };
    let namespace_fd = namespace.as_ref().map(AsRawFd::as_raw_fd);
    // SAFETY: between fork and exec the closure only makes async-signal-safe system calls.
    unsafe {
        command.pre_exec(move || {
            nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0))?;
            default_signal_actions();
            if let Some(fd) = namespace_fd
                && libc::setns(fd, libc::CLONE_NEWIPC) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // Before setuid: only root may make the namespace and write its limits.
            if let Some((msg_max, msgsize_max)) = limits.message_queue_sysctls {
                if libc::unshare(libc::CLONE_NEWIPC) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                write_number(c"/proc/sys/fs/mqueue/msg_max", msg_max)?;
                write_number(c"/proc/sys/fs/mqueue/msgsize_max", msgsize_max)?;
                if let Some(msg_default) = limits.message_queue_msg_default {
                    write_number(c"/proc/sys/fs/mqueue/msg_default", msg_default)?;
                }
            }
            if let Some((uid, gid)) = limits.user {
                nix::unistd::setgroups(&[])?;
                nix::unistd::setgid(nix::unistd::Gid::from_raw(gid))?;
                nix::unistd::setuid(nix::unistd::Uid::from_raw(uid))?;
            }
            if limits.without_ipc_owner {
                drop_capability(CAP_IPC_OWNER)?;
            }
            // If the grader dies, so does the program (set after setuid, which clears it).
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            setrlimit(
                Resource::RLIMIT_AS,
                limits.address_space,
                limits.address_space,
            )?;
            setrlimit(Resource::RLIMIT_FSIZE, limits.file_size, limits.file_size)?;
            setrlimit(Resource::RLIMIT_CORE, 0, 0)?;
            setrlimit(Resource::RLIMIT_NPROC, limits.processes, limits.processes)?;
            if let Some(bytes) = limits.message_queue_bytes {
                let (_, hard) = getrlimit(Resource::RLIMIT_MSGQUEUE)?;
                setrlimit(Resource::RLIMIT_MSGQUEUE, bytes.min(hard), hard)?;
            }
            // dup2 clears close-on-exec on the copy.
            if libc::dup2(program_raw, CONTROL_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Nothing else of the grader's (a jobserver pipe it inherited, say) reaches the
            // program: the descriptors it finds open are the ones it opened. They are closed at
            // exec, not now: among them is the pipe whose end tells spawn() the exec is done,
            // so that spawn() returns a program that runs its own code, past this closure. A
            // program started stopped stops before its exec: spawn() must not wait for that.
            let at_exec = if limits.stopped_at_start {
                0
            } else {
                libc::CLOSE_RANGE_CLOEXEC
            };
            if libc::syscall(libc::SYS_close_range, CONTROL_FD + 1, u32::MAX, at_exec) != 0 {
                // Kernels before 5.11 have no CLOSE_RANGE_CLOEXEC (before 5.9, no close_range).
                for fd in CONTROL_FD + 1..4096 {
                    if limits.stopped_at_start {
                        libc::close(fd);
                    } else {
                        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                    }
                }
            }
            for &fd in limits.held_descriptors {
                let null = match limits.held_descriptors_in {
                    Some(dir) => libc::open(dir.as_ptr(), libc::O_TMPFILE | libc::O_RDWR, 0o600),
                    None => libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY),
                };
                if null < 0 || (null != fd && libc::dup2(null, fd) < 0) {
                    return Err(std::io::Error::last_os_error());
                }
                if null != fd {
                    libc::close(null);
                }
            }
            if let Some(fd) = limits.held_pipe_at {
                let mut ends = [0; 2];
                if libc::pipe(ends.as_mut_ptr()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                for (end, at) in ends.into_iter().zip([fd, fd + 1]) {
                    if end != at && (libc::dup2(end, at) < 0 || libc::close(end) != 0) {
                        return Err(std::io::Error::last_os_error());
                    }
                }
            }
            // The program inherits this mask across exec: the check's, none unless it asks,
            // whatever the grader's thread blocks.
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for signal in 1..=64 {
                if limits.blocked_signals & (1 << (signal - 1)) != 0 {
                    libc::sigaddset(&mut set, signal);
                }
            }
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            if limits.stopped_at_start {
                nix::sys::signal::raise(Signal::SIGSTOP)?;
            }
            Ok(())
        });
    }
    let (mut child, group) = {
        let mut started = STARTED.lock().expect("registry lock");
        let child = command
            .spawn()
            .map_err(|e| Fail::Grader(format!("cannot start {}: {e}", program.display())))?;
        started
            .get_or_insert_with(HashSet::new)
            .insert(child.id() as i32);
        // The program leads a group of its own (set before its exec).
        let group = GroupClaim::new(child.id() as i32);
        (child, group)
    };
    drop(program_end);
    let pid = Pid::from_raw(child.id() as i32);
    let (sender, events) = channel();
    let control = Arc::new(grader_end);
    let stdout_pipe = child.stdout.take().expect("piped");
    let stderr_pipe = child.stderr.take().expect("piped");
    let grader_pipes = [stdout_pipe.as_fd(), stderr_pipe.as_fd()]
        .into_iter()
        .filter_map(|fd| nix::sys::stat::fstat(fd).ok())
        .map(|stat| stat.st_ino)
        .collect();
    let stdout = capture(stdout_pipe);
    let stderr = capture(stderr_pipe);
    watch_control(control.clone(), sender.clone());
    std::thread::spawn(move || {
        let status = child.wait();
        STARTED
            .lock()
            .expect("registry lock")
            .get_or_insert_with(HashSet::new)
            .remove(&pid.as_raw());
        if let Ok(status) = status {
            let _ = sender.send(Event::Exited(status));
        }
    });
    let command = std::iter::once(program.as_os_str())
        .chain(args.iter().copied())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    Ok(Proc {
        pid,
        command,
        events,
        control,
        stdout,
        stderr,
        grader_pipes,
        exit: None,
        control_closed: false,
        held: None,
        transcript: Arc::new(Mutex::new(Vec::new())),
        deadline,
        lab,
        roles: Arc::new(|_| "a process of the check".to_string()),
        on_message: None,
        _group: group,
    })
}

fn capture(mut stream: impl Read + Send + 'static) -> Arc<Mutex<Captured>> {
    let captured = Arc::new(Mutex::new(Captured::default()));
    let sink = captured.clone();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 8192];
        while let Ok(n) = stream.read(&mut buffer) {
            if n == 0 {
                break;
            }
            let mut out = sink.lock().expect("capture lock");
            let room = OUTPUT_CAP.saturating_sub(out.bytes.len()).min(n);
            out.bytes.extend_from_slice(&buffer[..room]);
            out.dropped += (n - room) as u64;
        }
        sink.lock().expect("capture lock").ended = true;
    });
    captured
}

fn watch_control(control: Arc<OwnedFd>, sender: Sender<Event>) {
    std::thread::spawn(move || {
        let mut buffer = vec![0u8; 8192];
        loop {
            match recv(control.as_raw_fd(), &mut buffer, MsgFlags::empty()) {
                Ok(0) => {
                    let _ = sender.send(Event::Closed);
                    return;
                }
                Ok(n) => {
                    let message = Message::decode(&buffer[..n]);
                    if sender.send(Event::Message(message)).is_err() {
                        return;
                    }
                }
                // A program that ends with a message of the grader's unread resets the socket:
                // the error comes before the messages it sent, which are still there to read.
                Err(nix::errno::Errno::EINTR | nix::errno::Errno::ECONNRESET) => continue,
                Err(_) => return,
            }
        }
    });
}

impl Proc {
    fn log(&self, line: String) {
        self.transcript.lock().expect("transcript lock").push(line);
    }

    /// Names the processes of this program's tree in diagnoses.
    pub fn set_roles(&mut self, roles: impl Fn(&ProcessView) -> String + Send + Sync + 'static) {
        self.roles = Arc::new(roles);
    }

    /// Calls `observe` whenever a message comes from the program.
    pub fn on_message(&mut self, observe: impl Fn() + Send + 'static) {
        self.on_message = Some(Box::new(observe));
    }

    /// Sends `kind` with `fields` to the program.
    pub fn send(&mut self, kind: &str, fields: &[(&str, String)]) -> Result<(), Fail> {
        self.log(format!("grader -> {kind} {fields:?}"));
        let bytes = Message::encode(kind, fields);
        match send(self.control.as_raw_fd(), &bytes, MsgFlags::MSG_NOSIGNAL) {
            Ok(_) => Ok(()),
            // The program is gone; the next recv or wait will say how.
            Err(_) => Ok(()),
        }
    }

    /// Waits for the program's next message of kind `kind`.
    pub fn recv(&mut self, kind: &str) -> Result<Message, Fail> {
        let message = self.recv_any()?;
        if message.kind == kind {
            Ok(message)
        } else {
            Err(Fail::failed(format!(
                "the program said `{}` ({}) where the grader expected `{kind}`",
                message.kind,
                describe_fields(&message)
            )))
        }
    }

    /// Puts back a message [`Proc::recv_any`] returned, so that the next receive returns it
    /// again: a check that looked at the first message before a helper that reads it.
    pub fn put_back(&mut self, message: Message) {
        debug_assert!(self.held.is_none());
        self.held = Some(message);
    }

    /// Waits for the program's next message, whatever its kind.
    pub fn recv_any(&mut self) -> Result<Message, Fail> {
        if let Some(message) = self.held.take() {
            self.note_message(&message)?;
            return Ok(message);
        }
        loop {
            if let Some(status) = self.exit {
                // Every message sent before the exit is delivered, not only the first.
                if let Some(message) = self.late_message() {
                    self.note_message(&message)?;
                    return Ok(message);
                }
                return Err(self.exited_early(status));
            }
            match self.next_event(self.deadline)? {
                Event::Message(message) => return Ok(message),
                Event::Exited(status) => self.exit = Some(status),
                Event::Closed => {}
            }
        }
    }

    /// The program's next message if one comes before `until`; `None` if none does. Unlike
    /// [`Proc::recv_any`], running out of time here is not a failure: the check is watching for
    /// something that should not happen.
    pub fn recv_before(&mut self, until: Instant) -> Result<Option<Message>, Fail> {
        if let Some(message) = self.held.take() {
            self.note_message(&message)?;
            return Ok(Some(message));
        }
        loop {
            if let Some(status) = self.exit {
                if let Some(message) = self.late_message() {
                    self.note_message(&message)?;
                    return Ok(Some(message));
                }
                return Err(self.exited_early(status));
            }
            let wait = until.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(wait) {
                Ok(Event::Message(message)) => {
                    self.note_message(&message)?;
                    return Ok(Some(message));
                }
                Ok(Event::Exited(status)) => self.exit = Some(status),
                Ok(Event::Closed) => self.control_closed = true,
                Err(_) => return Ok(None),
            }
        }
    }

    /// Whether the program says something (a message, or its exit) before `until`. A message
    /// stays for the next receive: a check can wait for one of several signs without taking
    /// what belongs to a later step.
    pub fn says_before(&mut self, until: Instant) -> bool {
        while self.held.is_none() && self.exit.is_none() {
            let wait = until.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(wait) {
                Ok(Event::Message(message)) => self.held = Some(message),
                Ok(Event::Exited(status)) => self.exit = Some(status),
                Ok(Event::Closed) => self.control_closed = true,
                Err(_) => return false,
            }
        }
        true
    }

    /// A message the program sent before it exited and the grader has not received yet: the
    /// control socket and the exit are watched by different threads. Waits until the socket
    /// is closed (then every message has come) or for [`LATE_MESSAGE_GRACE`].
    fn late_message(&mut self) -> Option<Message> {
        let until = Instant::now() + LATE_MESSAGE_GRACE;
        while !self.control_closed {
            match self
                .events
                .recv_timeout(until.saturating_duration_since(Instant::now()))
            {
                Ok(Event::Message(message)) => return Some(message),
                Ok(Event::Closed) => self.control_closed = true,
                Ok(Event::Exited(_)) => {}
                Err(_) => return None,
            }
        }
        // Every message came before the close.
        None
    }

    /// Waits for the program to exit.
    pub fn wait(&mut self) -> Result<ExitStatus, Fail> {
        while self.exit.is_none() {
            match self.next_event(self.deadline)? {
                Event::Message(_) | Event::Closed => {}
                Event::Exited(status) => self.exit = Some(status),
            }
        }
        Ok(self.exit.expect("set above"))
    }

    /// Waits until `deadline` for the program to exit: `None` if it is still running then.
    pub fn wait_until(&mut self, deadline: Instant) -> Result<Option<ExitStatus>, Fail> {
        while self.exit.is_none() {
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            match self.events.recv_timeout(deadline - now) {
                Ok(Event::Message(message)) => self.note_message(&message)?,
                Ok(Event::Exited(status)) => self.exit = Some(status),
                Ok(Event::Closed) => self.control_closed = true,
                Err(_) => return Ok(None),
            }
        }
        Ok(self.exit)
    }

    /// The next event before `deadline`; a `todo!()` or panic reported by the program, or the
    /// deadline passing, is an error.
    ///
    /// While it waits, it watches for a deadlock: every process blocked, unchanged, in waits only
    /// the processes themselves could end ([`diagnose::deadlock_snapshot`]) for
    /// [`diagnose::DEADLOCK_AFTER`] is reported then, instead of at the deadline.
    fn next_event(&mut self, deadline: Instant) -> Result<Event, Fail> {
        let mut still: Option<(Instant, diagnose::Stillness)> = None;
        loop {
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .min(DEADLOCK_PROBE);
            match self.events.recv_timeout(wait) {
                Ok(Event::Message(message)) => {
                    self.note_message(&message)?;
                    return Ok(Event::Message(message));
                }
                Ok(Event::Closed) => {
                    self.control_closed = true;
                    continue;
                }
                Ok(event) => return Ok(event),
                Err(RecvTimeoutError::Timeout) if Instant::now() >= deadline => {
                    return Err(Fail::TimedOut(self.diagnose()));
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(Fail::Grader("lost track of the program".into()));
                }
            }
            match diagnose::deadlock_snapshot(&self.tree(), &self.grader_pipes) {
                Some(now) => match &still {
                    Some((since, before)) if now.unchanged_since(before, since.elapsed()) => {
                        if since.elapsed() >= diagnose::DEADLOCK_AFTER {
                            return Err(Fail::TimedOut(self.diagnose_deadlock(since.elapsed())));
                        }
                    }
                    _ => still = Some((Instant::now(), now)),
                },
                None => still = None,
            }
        }
    }

    /// Records a message; turns the panic hook's reports into failures.
    fn note_message(&mut self, message: &Message) -> Result<(), Fail> {
        if let Some(observe) = &self.on_message {
            observe();
        }
        self.log(format!(
            "program -> {} {}",
            message.kind,
            describe_fields(message)
        ));
        let location = message.get("location").unwrap_or("?");
        let text = message.get("message").unwrap_or("");
        match message.kind.as_str() {
            NOT_IMPLEMENTED => Err(Fail::NotImplemented(format!("{text} ({location})"))),
            PANICKED => {
                let pid = message.get("pid").unwrap_or("?");
                // The process is usually still there: its hook reports before it unwinds.
                let who = pid
                    .parse()
                    .ok()
                    .and_then(inspect::view)
                    .map(|view| format!("{} (pid {pid})", (self.roles)(&view)))
                    .unwrap_or_else(|| format!("pid {pid}"));
                Err(Fail::Crashed(format!(
                    "{who} panicked at {location}: {text}"
                )))
            }
            _ => Ok(()),
        }
    }

    /// The program's `todo!()` reached, as its panic hook wrote it on stderr (`PROGRAM:
    /// not-implemented at LOCATION: MESSAGE`): run as by hand, with no control channel, that
    /// line is its only report.
    pub fn not_implemented_on_stderr(&self) -> Option<Fail> {
        let tail = self.stderr_tail(5);
        let hook = format!(": {} at ", ipc_labs_driver::NOT_IMPLEMENTED);
        let line = tail.lines().find(|line| line.contains(&hook))?;
        Some(Fail::NotImplemented(line.to_string()))
    }

    /// The last `lines` lines of the program's stderr. Once it has exited and none of its
    /// processes is left, all they wrote is in the pipe, but the exit can be seen before the
    /// capture thread has read the last of it (a skeleton's `todo!()` line): the capture's end
    /// is waited for, briefly.
    fn stderr_tail(&self, lines: usize) -> String {
        let root = [self.pid.as_raw()];
        let all_gone = || {
            inspect::tree(&root, &root)
                .iter()
                .all(|row| row.state == 'Z')
        };
        if self.exit.is_some() && all_gone() {
            let until = Instant::now() + STDERR_SETTLE;
            while !self.stderr.lock().expect("capture lock").ended && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        self.stderr.lock().expect("capture lock").tail(lines)
    }

    fn exited_early(&self, status: ExitStatus) -> Fail {
        if let Some(fail) = self.not_implemented_on_stderr() {
            return fail;
        }
        let tail = self.stderr_tail(5);
        let tail = if tail.is_empty() {
            String::new()
        } else {
            format!("; its stderr ends with:\n{tail}")
        };
        match status.signal() {
            Some(signal) => Fail::Crashed(format!(
                "the program was killed by signal {}{tail}",
                signal_name(signal)
            )),
            None => Fail::Failed(format!(
                "the program exited with status {} before reporting back{tail}",
                status.code().unwrap_or(-1)
            )),
        }
    }

    /// The processes of this program's tree.
    pub fn tree(&self) -> Vec<i32> {
        let root = [self.pid.as_raw()];
        inspect::tree(&root, &root)
            .into_iter()
            .map(|row| row.pid)
            .collect()
    }

    /// What the program's processes are doing, and the sentence that explains it.
    pub fn diagnose(&self) -> String {
        let roles = self.roles.clone();
        let hang = diagnose::observe(&self.tree(), &*roles);
        hang_message(self.lab, &hang)
    }

    /// The diagnosis of a deadlock seen before the deadline: how long nothing moved, then what
    /// each process waits for.
    fn diagnose_deadlock(&self, still: Duration) -> String {
        let roles = self.roles.clone();
        let hang = diagnose::observe(&self.tree(), &*roles);
        let sentence = (self.lab.explain_hang)(&hang).unwrap_or_else(|| diagnose::explain(&hang));
        format!(
            "deadlock (every process blocked, nothing moved for {:.1} s; the grader stopped \
             waiting before the check's time limit): {sentence}.{}",
            still.as_secs_f64(),
            hang.describe()
        )
    }

    /// The exit status, if the program has exited and the grader has seen it.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.exit
    }

    /// Kills the program's whole tree.
    pub fn kill_tree(&self) {
        kill_tree(&[self.pid.as_raw()]);
    }
}

/// The diagnosis line for a timeout: what each process did, then the lab's or the generic
/// explanation.
pub fn hang_message(lab: &Lab, hang: &Hang) -> String {
    let sentence = (lab.explain_hang)(hang).unwrap_or_else(|| diagnose::explain(hang));
    format!("timed out: {sentence}.{}", hang.describe())
}

fn describe_fields(message: &Message) -> String {
    message
        .fields
        .iter()
        .filter(|(k, _)| k != "pid")
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A signal's name, or its number.
pub fn signal_name(signal: i32) -> String {
    Signal::try_from(signal)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| signal.to_string())
}

/// The signals of `mask` (bit N-1 for signal N), by name, the first six.
pub fn signal_names(mask: u64) -> String {
    let names: Vec<String> = (1..=64)
        .filter(|n| mask & (1u64 << (n - 1)) != 0)
        .map(|n| match Signal::try_from(n) {
            Ok(signal) => signal.as_str().to_string(),
            Err(_) => format!("signal {n}"),
        })
        .collect();
    if names.len() > 6 {
        format!("{}, ... ({} signals)", names[..6].join(", "), names.len())
    } else {
        names.join(", ")
    }
}

/// Kills every process in the trees and groups of `roots`, until none is left (at most ~1 s),
/// and reaps those reparented to the grader.
pub fn kill_tree(roots: &[i32]) -> Vec<i32> {
    let mut killed = Vec::new();
    for round in 0..50 {
        // The groups first: one call each, and a fork bomb in a group cannot outrun it. Only a
        // group the grader's descendants are in: a reaped root's number may be another's group.
        let members = inspect::tree(roots, roots);
        for &root in roots {
            if members.iter().any(|row| row.pgrp == root) {
                let _ = killpg(Pid::from_raw(root), Signal::SIGKILL);
            }
        }
        let alive: Vec<i32> = inspect::tree(roots, roots)
            .into_iter()
            .filter(|row| row.state != 'Z')
            .map(|row| row.pid)
            .collect();
        if alive.is_empty() {
            break;
        }
        for &pid in &alive {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            if !killed.contains(&pid) {
                killed.push(pid);
            }
        }
        reap_orphans();
        std::thread::sleep(Duration::from_millis(if round < 5 { 2 } else { 20 }));
    }
    reap_orphans();
    killed
}

/// Reaps the exited processes that were reparented to the grader (it is a subreaper) and that
/// nobody else waits for.
pub fn reap_orphans() {
    let me = nix::unistd::getpid();
    let started = STARTED.lock().expect("registry lock");
    let skip = started.clone().unwrap_or_default();
    for pid in inspect::children(me) {
        if skip.contains(&pid) {
            continue;
        }
        let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
    }
}

/// Every program the grader starts, and every tracer, is a `fork()` of the grader, which copies
/// the page table of all the memory the grader holds, and the child's `exec()` or exit drops it
/// again. The C library keeps freed buffers of any size to reuse (each large one freed raises the
/// size below which it keeps them), so a check's 100 MiB of input would go on costing every
/// later fork. Buffers from 256 KiB up are given back to the kernel as soon as they are freed.
pub fn keep_memory_small() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        const LARGE: libc::c_int = 256 << 10;
        // SAFETY: mallopt() only sets the allocator's parameters.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, LARGE);
            libc::mallopt(libc::M_TRIM_THRESHOLD, LARGE);
        }
    });
}

/// Makes the grader a child subreaper: orphans of the processes it starts become its children,
/// so it can see, kill and reap them.
pub fn become_subreaper() -> Result<(), Fail> {
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| Fail::Grader(format!("PR_SET_CHILD_SUBREAPER: {e}")))
}

/// Starts a helper command (cargo) that the grader waits for itself: registered, so that the
/// orphan sweeps leave it alone. Call [`forget`] once it has been waited for.
pub fn spawn_helper(command: &mut Command) -> std::io::Result<std::process::Child> {
    let mut started = STARTED.lock().expect("registry lock");
    let child = command.spawn()?;
    started
        .get_or_insert_with(HashSet::new)
        .insert(child.id() as i32);
    Ok(child)
}

/// Forks a child of the grader's own (a tracer, a probe) that the orphan sweeps leave alone
/// until [`forget`]: it is registered under the lock the sweeps take, so that no sweep of a
/// grading run in another thread sees it unregistered. Returns what `fork()` returns.
///
/// # Safety
/// As `fork()` in a process with threads: the child may make async-signal-safe calls only.
pub unsafe fn fork_registered() -> i32 {
    let mut started = STARTED.lock().expect("registry lock");
    // SAFETY: the caller's.
    let pid = unsafe { libc::fork() };
    if pid > 0 {
        started.get_or_insert_with(HashSet::new).insert(pid);
    }
    pid
}

/// The grader has waited for `pid`.
pub fn forget(pid: u32) {
    if let Some(started) = STARTED.lock().expect("registry lock").as_mut() {
        started.remove(&(pid as i32));
    }
}

/// Kills and reaps the grader's children that belong to no running check (orphans that left
/// their check's process group, or whose group no [`Proc`] follows any more): nothing the grader
/// started outlives it.
pub fn kill_stray_children() {
    let me = nix::unistd::getpid();
    let strays: Vec<i32> = {
        // Under the lock, so that a program another check is starting right now is either
        // registered already or not yet a child.
        let started = STARTED.lock().expect("registry lock");
        let started = started.clone().unwrap_or_default();
        let groups = live_groups().clone().unwrap_or_default();
        let strays: Vec<i32> = inspect::process_table()
            .iter()
            .filter(|row| {
                row.ppid == me.as_raw()
                    && !started.contains(&row.pid)
                    && !started.contains(&row.pgrp)
                    && !groups.contains(&row.pgrp)
            })
            .map(|row| row.pid)
            .collect();
        for &pid in &strays {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        strays
    };
    if !strays.is_empty() {
        kill_tree(&strays);
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::path::Path;

    use super::*;

    /// `script` run by `/bin/sh`, its control socket on descriptor 3.
    fn shell(script: &str) -> Proc {
        spawn(
            Path::new("/bin/sh"),
            &[OsStr::new("-c"), OsStr::new(script)],
            Path::new("/"),
            Limits::for_user(None),
            Instant::now() + Duration::from_secs(10),
            crate::labs::all()[0],
        )
        .expect("the program starts")
    }

    /// A pid that is not the grader's descendant brings in no process, nor its group: here
    /// init's, as the pid of a reaped program may become another program's. Were it taken for
    /// the check's, killing the check's tree would kill the machine.
    #[test]
    fn a_pid_that_is_not_the_graders_is_no_part_of_a_check() {
        assert!(inspect::tree(&[1], &[1]).is_empty());
        let program = shell("sleep 10");
        let pid = program.pid.as_raw();
        let tree = inspect::tree(&[pid, 1], &[pid, 1]);
        assert!(inspect::is_anothers(1));
        assert!(!inspect::is_anothers(pid));
        program.kill_tree();
        assert!(tree.iter().any(|row| row.pid == pid));
        assert!(tree.iter().all(|row| row.pgrp == pid), "{tree:?}");
    }

    /// `RLIMIT_NPROC` counts threads: a user whose other programs have many threads (here 400
    /// of the test's own) still leaves a graded program room for a thread per client.
    #[test]
    fn the_task_limit_is_above_every_thread_the_user_has() {
        const PARKED: usize = 400;
        let parked = std::sync::Barrier::new(PARKED + 1);
        let (limits, own_threads) = std::thread::scope(|scope| {
            for _ in 0..PARKED {
                scope.spawn(|| parked.wait());
            }
            let program = shell("exec sleep 10");
            let limits = std::fs::read_to_string(format!("/proc/{}/limits", program.pid));
            let own_threads = std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count());
            program.kill_tree();
            parked.wait();
            (limits, own_threads as u64)
        });
        let soft: u64 = limits
            .expect("the program's limits")
            .lines()
            .find(|line| line.starts_with("Max processes"))
            .and_then(|line| line.split_whitespace().nth(2)?.parse().ok())
            .expect("a Max processes line");
        assert!(
            soft >= own_threads + TASK_HEADROOM,
            "RLIMIT_NPROC {soft}, with {own_threads} threads in the grader alone"
        );
    }

    /// A signal the grader was started ignoring (`nohup`'s `SIGHUP`) is not ignored by the
    /// programs it runs.
    #[test]
    fn a_program_does_not_inherit_the_graders_ignored_signals() {
        // SAFETY: no test here handles SIGHUP; its action is put back below.
        let before = unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
        let program = shell("exec sleep 10");
        let pid = program.pid.as_raw();
        let ignored = inspect::signal_mask(pid, pid, inspect::SignalMask::Ignored);
        program.kill_tree();
        unsafe { libc::signal(libc::SIGHUP, before) };
        let ignored = ignored.expect("the program's SigIgn");
        assert_eq!(ignored & (1 << (libc::SIGHUP - 1)), 0, "SigIgn {ignored:x}");
    }

    /// A signal the grader's thread blocks (a tool that started the grader blocks `SIGWINCH`,
    /// say) is not blocked in the programs it runs: their mask is the checks' to set.
    #[test]
    fn a_program_does_not_inherit_the_graders_signal_mask() {
        let mut winch = nix::sys::signal::SigSet::empty();
        winch.add(Signal::SIGWINCH);
        winch.thread_block().expect("blocking SIGWINCH");
        let program = shell("exec sleep 10");
        let pid = program.pid.as_raw();
        let blocked = inspect::signal_mask(pid, pid, inspect::SignalMask::Blocked);
        program.kill_tree();
        winch.thread_unblock().expect("unblocking SIGWINCH");
        let blocked = blocked.expect("the program's SigBlk");
        assert_eq!(blocked, 0, "SigBlk {blocked:x}");
    }

    /// The last message of a program that exits without reading one of the grader's is
    /// delivered: the reset its exit makes is reported before the messages it sent.
    #[test]
    fn a_message_sent_before_an_exit_that_leaves_the_graders_unread_is_delivered() {
        let mut program = shell("sleep 0.3; printf failed >&3; exit 1");
        program.send("unread", &[]).expect("sent");
        let message = program.recv_any();
        program.kill_tree();
        assert_eq!(message.expect("the last message").kind, "failed");
    }

    /// A message that reaches the grader after the program's exit is delivered while the
    /// control socket is still open: here a child of the program sends it half a second after
    /// the exit, as a loaded machine may deliver late one the program sent just before it.
    #[test]
    fn a_message_that_comes_after_the_exit_is_delivered() {
        let mut program = shell("(sleep 0.5; printf late >&3) & exit 0");
        let message = program.recv_any();
        program.kill_tree();
        assert_eq!(message.expect("the late message").kind, "late");
    }

    /// A program's processes stay its check's while its `Proc` lives, its first process reaped
    /// or not: another check ending meanwhile, which kills the grader's stray children, leaves
    /// alone the orphan that has still to report (here half a second after the exit).
    #[test]
    fn an_orphan_of_a_program_still_followed_is_not_a_stray() {
        become_subreaper().expect("a subreaper");
        let mut program = shell("(sleep 0.5; printf late >&3) & exit 0");
        let exited = program.wait();
        kill_stray_children();
        let message = program.recv_any();
        program.kill_tree();
        assert!(exited.is_ok_and(|status| status.success()));
        assert_eq!(message.expect("the orphan's message").kind, "late");
    }

    /// A program that exits right after its `todo!()` line is `not_implemented`: the line is
    /// read even when the exit is seen first (here behind 48 KiB of other output, the capture
    /// held until the exit is seen).
    #[test]
    fn the_not_implemented_line_before_an_exit_is_read() {
        let line = format!(
            "thread 'main' panicked at src/lib.rs:7:5: {} at labs/lib.rs",
            ipc_labs_driver::NOT_IMPLEMENTED
        );
        for _ in 0..20 {
            let mut program = shell(&format!(
                "head -c 49152 /dev/zero | tr '\\0' x >&2; echo >&2; echo \"{line}\" >&2; exit 101"
            ));
            let stderr = program.stderr.clone();
            let capture = stderr.lock().expect("capture lock");
            let exited = program.wait();
            drop(capture);
            let found = program.not_implemented_on_stderr();
            program.kill_tree();
            assert!(exited.is_ok());
            assert!(
                matches!(found, Some(Fail::NotImplemented(_))),
                "the line was not read: {found:?}"
            );
        }
    }

    /// `says_before` sees a message without taking it: the next receive gets it, then the next
    /// one; and it says nothing of a program that stays silent.
    #[test]
    fn a_message_seen_by_says_before_is_left_for_the_next_receive() {
        let mut program = shell("printf first >&3; sleep 0.3; printf second >&3; sleep 10");
        let said = program.says_before(Instant::now() + Duration::from_secs(5));
        let first = program.recv_any().map(|m| m.kind);
        let quiet = program.says_before(Instant::now() + Duration::from_millis(10));
        let second = program.recv_any().map(|m| m.kind);
        let silent = program.says_before(Instant::now() + Duration::from_millis(200));
        program.kill_tree();
        assert!(said, "the first message was not seen");
        assert_eq!(first.expect("the first message"), "first");
        assert!(!quiet, "a message was seen before the program sent it");
        assert_eq!(second.expect("the second message"), "second");
        assert!(!silent, "a silent program was seen to say something");
    }
}
