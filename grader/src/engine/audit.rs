//! The machine's IPC objects, before and after a check, and their removal.
//!
//! SysV objects come from `/proc/sysvipc`, POSIX shared memory and named semaphores from
//! `/dev/shm`, POSIX message queues from the mqueue file system when it is mounted (and, when it
//! is not, by opening the names the grader handed out).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An IPC object, as the machine lists it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum IpcObject {
    SysvShm {
        key: i32,
        id: i32,
        creator: i32,
    },
    SysvMsg {
        key: i32,
        id: i32,
    },
    SysvSem {
        key: i32,
        id: i32,
    },
    /// A file in `/dev/shm`: POSIX shared memory, or a named semaphore (`sem.NAME`).
    DevShm {
        name: String,
    },
    /// A POSIX message queue, by its name without the leading slash.
    MessageQueue {
        name: String,
    },
    /// A Unix domain socket's file, left in the check's directory.
    SocketFile {
        path: std::path::PathBuf,
    },
}

impl std::fmt::Display for IpcObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IpcObject::SysvShm { key, id, .. } => {
                write!(f, "SysV shared memory segment id {id} (key {key:#010x})")
            }
            IpcObject::SysvMsg { key, id } => {
                write!(f, "SysV message queue id {id} (key {key:#010x})")
            }
            IpcObject::SysvSem { key, id } => {
                write!(f, "SysV semaphore set id {id} (key {key:#010x})")
            }
            IpcObject::DevShm { name } if name.starts_with("sem.") => {
                write!(f, "named semaphore /{}", &name[4..])
            }
            IpcObject::DevShm { name } => write!(f, "POSIX shared memory /{name}"),
            IpcObject::MessageQueue { name } => write!(f, "POSIX message queue /{name}"),
            IpcObject::SocketFile { path } => write!(f, "socket file {}", path.display()),
        }
    }
}

impl IpcObject {
    /// The name or key by which the grader can tell it handed the object out.
    pub fn key(&self) -> Option<i32> {
        match self {
            IpcObject::SysvShm { key, .. }
            | IpcObject::SysvMsg { key, .. }
            | IpcObject::SysvSem { key, .. } => Some(*key),
            _ => None,
        }
    }

    pub fn name(&self) -> Option<&str> {
        match self {
            IpcObject::DevShm { name } => Some(name.strip_prefix("sem.").unwrap_or(name)),
            IpcObject::MessageQueue { name } => Some(name),
            _ => None,
        }
    }

    /// Removes the object from the machine.
    pub fn remove(&self) -> std::io::Result<()> {
        let errno = |r: nix::Result<()>| r.map_err(std::io::Error::from);
        match self {
            IpcObject::SysvShm { id, .. } => {
                // SAFETY: IPC_RMID takes no buffer.
                let r = unsafe { libc::shmctl(*id, libc::IPC_RMID, std::ptr::null_mut()) };
                errno(nix::errno::Errno::result(r).map(drop))
            }
            IpcObject::SysvMsg { id, .. } => {
                // SAFETY: IPC_RMID takes no buffer.
                let r = unsafe { libc::msgctl(*id, libc::IPC_RMID, std::ptr::null_mut()) };
                errno(nix::errno::Errno::result(r).map(drop))
            }
            IpcObject::SysvSem { id, .. } => {
                // SAFETY: IPC_RMID ignores the semaphore number and takes no argument.
                let r = unsafe { libc::semctl(*id, 0, libc::IPC_RMID) };
                errno(nix::errno::Errno::result(r).map(drop))
            }
            IpcObject::DevShm { name } => std::fs::remove_file(format!("/dev/shm/{name}")),
            IpcObject::MessageQueue { name } => {
                errno(nix::mqueue::mq_unlink(format!("/{name}").as_str()))
            }
            IpcObject::SocketFile { path } => std::fs::remove_file(path),
        }
    }
}

impl IpcObject {
    /// The uid that owns the object now, if it still exists.
    pub fn owner(&self) -> Option<u32> {
        use std::os::unix::fs::MetadataExt;
        let sysv = |file: &str, id: i32, uid_column: usize| {
            sysv_rows(file)
                .into_iter()
                .find(|row| row[1] == i64::from(id))
                .and_then(|row| row.get(uid_column).map(|&uid| uid as u32))
        };
        match self {
            // Columns: shm "key shmid perms size cpid lpid nattch uid", msg "key msqid perms
            // cbytes qnum lspid lrpid uid", sem "key semid perms nsems uid".
            IpcObject::SysvShm { id, .. } => sysv("shm", *id, 7),
            IpcObject::SysvMsg { id, .. } => sysv("msg", *id, 7),
            IpcObject::SysvSem { id, .. } => sysv("sem", *id, 4),
            IpcObject::DevShm { name } => std::fs::metadata(format!("/dev/shm/{name}"))
                .ok()
                .map(|m| m.uid()),
            IpcObject::MessageQueue { name } => mqueue_stat(name).map(|stat| stat.st_uid),
            IpcObject::SocketFile { path } => std::fs::metadata(path).ok().map(|m| m.uid()),
        }
    }
}

impl IpcObject {
    /// Its permission bits now, if it still exists and the machine shows them.
    pub fn mode(&self) -> Option<u32> {
        use std::os::unix::fs::PermissionsExt;
        let sysv = |file: &str, id: i32| {
            sysv_rows(file)
                .into_iter()
                .find(|row| row[1] == i64::from(id))
                // The kernel prints the permissions in octal ("%4o"): read the digits as such.
                .and_then(|row| u32::from_str_radix(&row.get(2)?.to_string(), 8).ok())
        };
        let file = |path: &str| {
            std::fs::symlink_metadata(path)
                .ok()
                .map(|m| m.permissions().mode() & 0o7777)
        };
        match self {
            IpcObject::SysvShm { id, .. } => sysv("shm", *id),
            IpcObject::SysvMsg { id, .. } => sysv("msg", *id),
            IpcObject::SysvSem { id, .. } => sysv("sem", *id),
            IpcObject::DevShm { name } => file(&format!("/dev/shm/{name}")),
            IpcObject::MessageQueue { name } => mqueue_stat(name).map(|stat| stat.st_mode & 0o7777),
            IpcObject::SocketFile { path } => file(&path.to_string_lossy()),
        }
    }
}

/// What a check was given and started, by which the grader tells the check's IPC objects from
/// everything else on the machine; and the check's objects it has seen, with their modes.
pub struct CheckObjects {
    /// POSIX names handed out to the check.
    pub names: Mutex<Vec<String>>,
    /// SysV keys the check declared (see [`CheckObjects::claim_key`]).
    keys: Mutex<Vec<i32>>,
    /// What holds each of those keys for the check while it runs.
    key_claims: Mutex<Vec<std::os::unix::net::UnixDatagram>>,
    /// The programs the check started.
    pub roots: Arc<Mutex<Vec<i32>>>,
    /// The user the programs run as, when not the grader's.
    pub user: Option<u32>,
    before: BTreeSet<IpcObject>,
    /// Objects a process of the check was seen creating or using (see [`used_by`]): theirs
    /// still once those processes are gone.
    used: Mutex<BTreeSet<IpcObject>>,
    seen: Mutex<BTreeMap<IpcObject, Option<u32>>>,
    last_look: Mutex<Option<Instant>>,
}

/// The checks running now (see [`CheckObjects::register`]).
static RUNNING_CHECKS: Mutex<Vec<std::sync::Weak<CheckObjects>>> = Mutex::new(Vec::new());

/// Whether `name` (of a file in `/dev/shm`) has the shape of the file in which glibc's
/// `sem_open()` builds a new semaphore, `sem.XXXXXX`, before it links it to its name.
pub fn glibc_temporary_name(name: &str) -> bool {
    name.strip_prefix("sem.")
        .is_some_and(|rest| rest.len() == 6 && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// The names handed out to checks that ended within [`ENDED_REMEMBERED`], with when each
/// ended: a file another check's program made just before that check ended may be seen by a
/// watcher a moment later.
static ENDED_CHECKS: Mutex<Vec<(Instant, Vec<String>)>> = Mutex::new(Vec::new());

/// How long the names of an ended check are remembered (see [`ENDED_CHECKS`]).
const ENDED_REMEMBERED: Duration = Duration::from_secs(5);

/// Whether `name` (of `/dev/shm`, without `sem.`) carries a name handed out to a check that
/// ended a moment ago.
fn ended_check_named(name: &str) -> bool {
    let mut ended = ENDED_CHECKS.lock().expect("ended checks lock");
    ended.retain(|(at, _)| at.elapsed() < ENDED_REMEMBERED);
    ended.iter().any(|(_, names)| {
        names
            .iter()
            .any(|given| name.starts_with(given.trim_start_matches('/')))
    })
}

impl Drop for CheckObjects {
    fn drop(&mut self) {
        let names = std::mem::take(&mut *self.names.lock().unwrap_or_else(|e| e.into_inner()));
        if !names.is_empty() {
            let mut ended = ENDED_CHECKS.lock().unwrap_or_else(|e| e.into_inner());
            ended.retain(|(at, _)| at.elapsed() < ENDED_REMEMBERED);
            ended.push((Instant::now(), names));
        }
    }
}

/// Looks closer together than this are skipped: a check may exchange thousands of messages.
const LOOK_INTERVAL: Duration = Duration::from_millis(2);

impl CheckObjects {
    /// Starts with the machine's objects now: the check's are those that appear after.
    pub fn new(roots: Arc<Mutex<Vec<i32>>>, user: Option<u32>) -> CheckObjects {
        CheckObjects {
            names: Mutex::new(Vec::new()),
            keys: Mutex::new(Vec::new()),
            key_claims: Mutex::new(Vec::new()),
            roots,
            user,
            before: snapshot(),
            used: Mutex::new(BTreeSet::new()),
            seen: Mutex::new(BTreeMap::new()),
            last_look: Mutex::new(None),
        }
    }

    /// Whether `object` is the check's: its name starts with one of the check's names, it has
    /// one of its keys, it belongs to the user the programs run as, or (a SysV segment) a
    /// program the check started created it.
    pub fn is_ours(&self, object: &IpcObject) -> bool {
        if self.claims(object) {
            return true;
        }
        // Owned by the programs' user, and claimed by no other check running alongside (with
        // `--jobs`, another check's programs run as the same user). Not a semaphore glibc is
        // making: whose it is cannot be told, and removing it fails that `sem_open()`.
        let owned = self.user.is_some() && object.owner() == self.user;
        let making = matches!(object, IpcObject::DevShm { name } if glibc_temporary_name(name));
        owned
            && !making
            && !RUNNING_CHECKS
                .lock()
                .expect("running checks lock")
                .iter()
                .filter_map(std::sync::Weak::upgrade)
                .any(|other| !std::ptr::eq(&*other, self) && other.claims(object))
    }

    /// Whether file `path` of `/dev/shm` (a POSIX object, `sem.` and all) carries a name handed
    /// out to another check running now: with `--jobs` and `--run-as`, the programs of every
    /// check run as one user, so the owner alone does not tell whose it is.
    pub fn anothers_shm_file(&self, path: &std::path::Path) -> bool {
        if path.parent() != Some(std::path::Path::new("/dev/shm")) {
            return false;
        }
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            return false;
        };
        let object = IpcObject::DevShm {
            name: name.to_string(),
        };
        let running = RUNNING_CHECKS
            .lock()
            .expect("running checks lock")
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .any(|other| !std::ptr::eq(&*other, self) && other.claims(&object));
        running || ended_check_named(name.strip_prefix("sem.").unwrap_or(name))
    }

    /// Whether `object` carries one of this check's names or keys, or was created or used by
    /// one of its processes (a SysV object made with `IPC_PRIVATE` has neither name nor key).
    fn claims(&self, object: &IpcObject) -> bool {
        let named = object.name().is_some_and(|name| {
            self.names
                .lock()
                .expect("names lock")
                .iter()
                .any(|given| name.starts_with(given.trim_start_matches('/')))
        });
        let keyed = object
            .key()
            .is_some_and(|key| self.keys.lock().expect("keys lock").contains(&key));
        let created = matches!(object, IpcObject::SysvShm { creator, .. }
            if self.roots.lock().expect("roots lock").contains(creator));
        named || keyed || created || self.used_by_a_program(object)
    }

    /// Whether a process of the check (one it started, or one in such a process's group) has
    /// created or last used `object`; remembered, since those processes end.
    fn used_by_a_program(&self, object: &IpcObject) -> bool {
        if self.used.lock().expect("used lock").contains(object) {
            return true;
        }
        let roots = self.roots.lock().expect("roots lock").clone();
        let ours = used_by(object).into_iter().any(|pid| {
            // SAFETY: a plain system call.
            pid > 0 && (roots.contains(&pid) || roots.contains(&unsafe { libc::getpgid(pid) }))
        });
        if ours {
            self.used.lock().expect("used lock").insert(object.clone());
        }
        ours
    }

    /// Declares SysV key `key` the check's, unless another check holds it: `false` then. Two
    /// checks running side by side, in this grader or in another on the machine, may compute one
    /// key from two files (`ftok()` keeps 16 bits of the inode number and 8 of the id); were
    /// both to use it, one check's audit would remove the other's segment. The claim is an
    /// abstract Unix socket name, bound until the check's objects are dropped (after its audit)
    /// and freed by the kernel however the grader ends.
    pub fn claim_key(&self, key: i32) -> bool {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::{SocketAddr, UnixDatagram};
        let claim = SocketAddr::from_abstract_name(format!("ipc-labs/sysv-key/{key:08x}"))
            .and_then(|name| UnixDatagram::bind_addr(&name));
        let Ok(claim) = claim else {
            return false;
        };
        self.key_claims.lock().expect("key claims lock").push(claim);
        self.keys.lock().expect("keys lock").push(key);
        true
    }

    /// Registers a check that starts, so that checks running alongside can tell its objects
    /// from theirs.
    pub fn register(objects: &Arc<CheckObjects>) {
        let mut running = RUNNING_CHECKS.lock().expect("running checks lock");
        running.retain(|weak| weak.strong_count() > 0);
        running.push(Arc::downgrade(objects));
    }

    /// The check's objects on the machine now, that were not there before it started.
    pub fn current(&self) -> Vec<IpcObject> {
        snapshot()
            .into_iter()
            .filter(|o| !self.before.contains(o) && self.is_ours(o))
            .collect()
    }

    /// Notes the check's objects that exist now, with their modes (at most every
    /// [`LOOK_INTERVAL`]).
    pub fn look(&self) {
        {
            let mut last = self.last_look.lock().expect("look lock");
            if last.is_some_and(|at| at.elapsed() < LOOK_INTERVAL) {
                return;
            }
            *last = Some(Instant::now());
        }
        for object in self.current() {
            let mode = object.mode();
            let mut seen = self.seen.lock().expect("seen lock");
            let entry = seen.entry(object).or_insert(mode);
            if entry.is_none() {
                *entry = mode;
            }
        }
    }

    /// Every object of the check seen so far, with its mode when it was first seen.
    pub fn seen(&self) -> Vec<(IpcObject, Option<u32>)> {
        self.look_now();
        self.seen
            .lock()
            .expect("seen lock")
            .iter()
            .map(|(o, m)| (o.clone(), *m))
            .collect()
    }

    fn look_now(&self) {
        *self.last_look.lock().expect("look lock") = None;
        self.look();
    }
}

/// The permission bits of message queue `name` (without its leading slash), if it exists and
/// the grader may look.
pub fn message_queue_mode(name: &str) -> Option<u32> {
    mqueue_stat(name).map(|stat| stat.st_mode & 0o7777)
}

/// The status of message queue `name` (its owner, its mode): from the mqueue file system where
/// it is mounted, else from a descriptor of the grader's own (an open for reading takes no
/// message; root may open any queue).
fn mqueue_stat(name: &str) -> Option<nix::sys::stat::FileStat> {
    if let Some(mount) = mqueue_mount() {
        return nix::sys::stat::lstat(format!("{mount}/{name}").as_str()).ok();
    }
    let queue = nix::mqueue::mq_open(
        format!("/{name}").as_str(),
        nix::mqueue::MQ_OFlag::O_RDONLY | nix::mqueue::MQ_OFlag::O_NONBLOCK,
        nix::sys::stat::Mode::empty(),
        None,
    )
    .ok()?;
    let stat = nix::sys::stat::fstat(&queue).ok();
    let _ = nix::mqueue::mq_close(queue);
    stat
}

/// Where the mqueue file system is mounted, if it is.
fn mqueue_mount() -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[2] == "mqueue")
        .map(|f| f[1].to_string())
}

fn sysv_rows(file: &str) -> Vec<Vec<i64>> {
    let Ok(text) = std::fs::read_to_string(format!("/proc/sysvipc/{file}")) else {
        return Vec::new();
    };
    text.lines()
        .skip(1)
        .map(|l| {
            l.split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect()
        })
        .filter(|row: &Vec<i64>| row.len() >= 2)
        .collect()
}

/// The processes that created or last used a SysV object: a segment's creator and last
/// attacher, a queue's last sender and receiver, the last to change each semaphore of a set.
fn used_by(object: &IpcObject) -> Vec<i32> {
    // Columns: shm "key shmid perms size cpid lpid", msg "key msqid perms cbytes qnum lspid
    // lrpid", sem "key semid perms nsems".
    let row = |file: &str, id: i32| {
        sysv_rows(file)
            .into_iter()
            .find(|row| row[1] == i64::from(id))
    };
    let pids = |row: Option<Vec<i64>>, columns: &[usize]| -> Vec<i32> {
        row.map(|row| {
            columns
                .iter()
                .filter_map(|&c| row.get(c))
                .map(|&p| p as i32)
                .collect()
        })
        .unwrap_or_default()
    };
    match object {
        // Its creator only: the last to attach or detach may be a process the grader forked for
        // another check, that inherited the grader's own attachment until its exec().
        IpcObject::SysvShm { id, .. } => pids(row("shm", *id), &[4]),
        IpcObject::SysvMsg { id, .. } => pids(row("msg", *id), &[5, 6]),
        IpcObject::SysvSem { id, .. } => {
            let count = row("sem", *id)
                .and_then(|row| row.get(3).copied())
                .unwrap_or(0);
            (0..count.min(64) as i32)
                // SAFETY: GETPID takes no argument; an id gone or not ours to read gives -1.
                .map(|number| unsafe { libc::semctl(*id, number, libc::GETPID) })
                .collect()
        }
        _ => Vec::new(),
    }
}

/// One line of `/proc/sysvipc/shm`: key, id, mode, size, creator pid, attach count, owner uid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShmSegment {
    pub key: i32,
    pub id: i32,
    pub mode: u32,
    pub size: u64,
    pub creator: i32,
    pub attached: u64,
    pub uid: u32,
}

/// The SysV shared memory segments, as `/proc/sysvipc/shm` lists them.
pub fn shm_segments() -> Vec<ShmSegment> {
    // Columns: key shmid perms size cpid lpid nattch uid gid cuid cgid ...
    sysv_rows("shm")
        .into_iter()
        .filter(|r| r.len() >= 8)
        .map(|r| ShmSegment {
            key: r[0] as i32,
            id: r[1] as i32,
            // The kernel prints the permissions in octal ("%4o"): read the digits back as such.
            mode: u32::from_str_radix(&r[2].to_string(), 8).unwrap_or(0),
            size: r[3] as u64,
            creator: r[4] as i32,
            attached: r[6] as u64,
            uid: r[7] as u32,
        })
        .collect()
}

/// The mode bit of a segment marked for removal, still attached (`<linux/shm.h>`).
pub const SHM_DEST: u32 = 0o1000;

/// Every IPC object the machine lists now.
pub fn snapshot() -> BTreeSet<IpcObject> {
    let mut objects = BTreeSet::new();
    // A segment marked for removal (SHM_DEST) goes with its last attachment: nobody can leak it.
    for segment in shm_segments()
        .into_iter()
        .filter(|s| s.mode & SHM_DEST == 0)
    {
        objects.insert(IpcObject::SysvShm {
            key: segment.key,
            id: segment.id,
            creator: segment.creator,
        });
    }
    for row in sysv_rows("msg") {
        objects.insert(IpcObject::SysvMsg {
            key: row[0] as i32,
            id: row[1] as i32,
        });
    }
    for row in sysv_rows("sem") {
        objects.insert(IpcObject::SysvSem {
            key: row[0] as i32,
            id: row[1] as i32,
        });
    }
    if let Ok(entries) = std::fs::read_dir("/dev/shm") {
        for entry in entries.flatten() {
            if let Some(name) = entry.file_name().to_str() {
                objects.insert(IpcObject::DevShm { name: name.into() });
            }
        }
    }
    if let Some(mount) = mqueue_mount()
        && let Ok(entries) = std::fs::read_dir(mount)
    {
        for entry in entries.flatten() {
            if let Some(name) = entry.file_name().to_str() {
                objects.insert(IpcObject::MessageQueue { name: name.into() });
            }
        }
    }
    objects
}

/// Whether a message queue with this name (leading slash included) exists: found by opening it,
/// for machines where the mqueue file system is not mounted.
pub fn message_queue_exists(name: &str) -> bool {
    // A name with a slash past the first cannot name a queue (mq_open refuses it, with EACCES,
    // which below would mean "exists").
    if name.trim_start_matches('/').contains('/') {
        return false;
    }
    let Ok(c_name) = CString::new(name) else {
        return false;
    };
    // SAFETY: a plain mq_open of an existing queue for reading; the descriptor is closed at once.
    let mqd = unsafe { libc::mq_open(c_name.as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK) };
    if mqd < 0 {
        // EACCES means it exists but is not ours to read; still there.
        return nix::errno::Errno::last() == nix::errno::Errno::EACCES;
    }
    // SAFETY: mqd was just opened.
    unsafe { libc::mq_close(mqd) };
    true
}

/// The socket files under `dir` (a check's private directory).
pub fn socket_files(dir: &std::path::Path) -> Vec<IpcObject> {
    use std::os::unix::fs::FileTypeExt;
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_socket() {
                found.push(IpcObject::SocketFile { path: entry.path() });
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With the programs run as another user, a check claims that user's objects, but not one
    /// another running check was given, nor a semaphore glibc is making, nor, a moment after
    /// it ended, one that an ended check was given.
    #[test]
    fn a_users_objects_are_told_apart_by_name() {
        let uid = nix::unistd::getuid().as_raw();
        let tag = format!("ipc-labs-audit-test-{}", std::process::id());
        let this = Arc::new(CheckObjects::new(
            Arc::new(Mutex::new(Vec::new())),
            Some(uid),
        ));
        let other = Arc::new(CheckObjects::new(
            Arc::new(Mutex::new(Vec::new())),
            Some(uid),
        ));
        CheckObjects::register(&this);
        CheckObjects::register(&other);
        other.names.lock().unwrap().push(format!("/{tag}-other-"));
        let owned = |name: &str| {
            let path = std::path::PathBuf::from("/dev/shm").join(name);
            std::fs::write(&path, b"").unwrap();
            path
        };
        let unnamed = owned(&format!("{tag}-unnamed"));
        let anothers = owned(&format!("sem.{tag}-other-ready"));
        let making = owned("sem.Ab3xZ9");
        let found = this.current();
        let has = |path: &std::path::Path| {
            found.contains(&IpcObject::DevShm {
                name: path.file_name().unwrap().to_string_lossy().into_owned(),
            })
        };
        let (claimed_unnamed, claimed_anothers, claimed_making) =
            (has(&unnamed), has(&anothers), has(&making));
        let anothers_before_end = this.anothers_shm_file(&anothers);
        drop(other);
        let anothers_after_end = this.anothers_shm_file(&anothers);
        for path in [&unnamed, &anothers, &making] {
            let _ = std::fs::remove_file(path);
        }
        assert!(
            claimed_unnamed,
            "an unnamed object of the user was not claimed"
        );
        assert!(
            !claimed_anothers,
            "another running check's object was claimed"
        );
        assert!(!claimed_making, "a semaphore glibc is making was claimed");
        assert!(anothers_before_end && anothers_after_end);
    }

    /// Two checks that compute one key: the second to claim it is refused until the first's
    /// objects are dropped, at the end of its audit.
    #[test]
    fn a_key_is_held_by_one_check_at_a_time() {
        let key = 0x5e00_0000 | (std::process::id() as i32 & 0xff_ffff);
        let first = CheckObjects::new(Arc::new(Mutex::new(Vec::new())), None);
        let second = CheckObjects::new(Arc::new(Mutex::new(Vec::new())), None);
        assert!(first.claim_key(key), "a free key could not be claimed");
        assert!(
            !second.claim_key(key),
            "a key held by another check was claimed"
        );
        assert!(first.claims(&IpcObject::SysvShm {
            key,
            id: 1,
            creator: 0
        }));
        drop(first);
        assert!(
            second.claim_key(key),
            "a key was still held after its check ended"
        );
    }

    /// A semaphore set made with `IPC_PRIVATE` carries no key or name of the check's: it is the
    /// check's because one of its processes used it (here the test stands for that process).
    #[test]
    fn a_private_semaphore_set_a_program_used_is_the_checks() {
        let me = std::process::id() as i32;
        let objects = CheckObjects::new(Arc::new(Mutex::new(vec![me])), None);
        // SAFETY: plain system calls on a set this test makes and removes.
        let id = unsafe { libc::semget(libc::IPC_PRIVATE, 1, libc::IPC_CREAT | 0o600) };
        assert!(id >= 0, "semget: {}", std::io::Error::last_os_error());
        let mut up = libc::sembuf {
            sem_num: 0,
            sem_op: 1,
            sem_flg: 0,
        };
        // SAFETY: as above.
        let used = unsafe { libc::semop(id, &mut up, 1) } == 0;
        let found = objects
            .current()
            .contains(&IpcObject::SysvSem { key: 0, id });
        let removed = IpcObject::SysvSem { key: 0, id }.remove();
        assert!(used && removed.is_ok());
        assert!(
            found,
            "the set used by the check's process is not the check's"
        );
    }
}
