//! What the grader reads from outside: the object in `/dev/shm`, each process's mappings
//! (`/proc/PID/maps`, `smaps`), what its mapping holds (`/proc/PID/mem`), its descriptors and
//! its I/O counters; and the objects the grader itself puts at a name.

use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

use crate::engine::inspect::{self, IoCounters};
use crate::engine::{Fail, Proc, Run};

/// Where the object named `name` (`/...`) lives.
pub fn dev_shm(name: &str) -> PathBuf {
    PathBuf::from("/dev/shm").join(name.trim_start_matches('/'))
}

/// Whether something (an object, a link) has the name.
pub fn exists(name: &str) -> bool {
    std::fs::symlink_metadata(dev_shm(name)).is_ok()
}

/// The size of `/dev/shm/<name>`, which must exist while `who` has the table mapped.
pub fn object_size(name: &str, who: &str) -> Result<u64, Fail> {
    std::fs::metadata(dev_shm(name))
        .map(|m| m.len())
        .map_err(|_| {
            Fail::failed(format!(
                "{} does not exist while {who} says it has the table mapped: the object was not \
                 created under that very name, or the program removed the name (shm_unlink) \
                 although nobody asked it to",
                dev_shm(name).display()
            ))
        })
}

/// Fails if the name is gone after `step`: only `op=unlink` may remove it.
pub fn name_still_there(name: &str, step: &str) -> Result<(), Fail> {
    if exists(name) {
        return Ok(());
    }
    Err(Fail::failed(format!(
        "{} vanished when {step}, and nobody had asked for an unlink: only unlink() may remove \
         the name (shm_unlink); create(), open() and close() leave it in place",
        dev_shm(name).display()
    )))
}

/// `len` bytes at `offset` of the object, read through its file (the very pages the programs
/// map); `None` if it cannot be read there.
pub fn object_bytes(name: &str, offset: usize, len: usize) -> Option<Vec<u8>> {
    let file = std::fs::File::open(dev_shm(name)).ok()?;
    let mut bytes = vec![0u8; len];
    file.read_exact_at(&mut bytes, offset as u64).ok()?;
    Some(bytes)
}

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// `rw-s`, `rw-p`, ...
    pub perms: String,
    /// The inode of the file mapped (0 for anonymous memory).
    pub inode: u64,
    /// The file mapped; empty for anonymous memory.
    pub path: String,
}

impl Mapping {
    pub fn describe(&self) -> String {
        let what = if self.path.is_empty() {
            "anonymous memory".to_string()
        } else {
            self.path.clone()
        };
        format!("{:x}-{:x} {} {what}", self.start, self.end, self.perms)
    }
}

/// Every mapping of `pid`.
pub fn mappings(pid: i32) -> Vec<Mapping> {
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return Vec::new();
    };
    maps.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (start, end) = fields.first()?.split_once('-')?;
            Some(Mapping {
                start: u64::from_str_radix(start, 16).ok()?,
                end: u64::from_str_radix(end, 16).ok()?,
                perms: fields.get(1)?.to_string(),
                inode: fields.get(4)?.parse().ok()?,
                path: fields
                    .get(5..)
                    .map(|rest| rest.join(" "))
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// The mapping of the object `name` in `pid`, if any (an unlinked object's path ends with
/// ` (deleted)`).
pub fn table_mapping(pid: i32, name: &str) -> Option<Mapping> {
    let path = dev_shm(name).display().to_string();
    let deleted = format!("{path} (deleted)");
    mappings(pid)
        .into_iter()
        .find(|m| m.path == path || m.path == deleted)
}

/// What `pid`'s mapping of the object holds at `offset` (read from `/proc/PID/mem`: what the
/// process itself would load there); `None` if it has no mapping or it cannot be read.
pub fn mapped_bytes(pid: i32, name: &str, offset: usize, len: usize) -> Option<Vec<u8>> {
    let mapping = table_mapping(pid, name)?;
    let at = mapping.start.checked_add(offset as u64)?;
    if at.checked_add(len as u64)? > mapping.end {
        return None;
    }
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut bytes = vec![0u8; len];
    mem.read_exact_at(&mut bytes, at).ok()?;
    Some(bytes)
}

/// How many bytes of `pid`'s mapping of the object are resident (`Rss` in `/proc/PID/smaps`):
/// pages the process touched through the mapping.
pub fn resident_bytes(pid: i32, name: &str) -> Option<u64> {
    let mapping = table_mapping(pid, name)?;
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let header = format!("{:x}-{:x} ", mapping.start, mapping.end);
    let mut lines = smaps
        .lines()
        .skip_while(|l| !l.starts_with(&header))
        .skip(1);
    let rss = lines.find_map(|l| l.strip_prefix("Rss:"))?;
    let kib: u64 = rss.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

/// The kernel's flags of `pid`'s mapping `mapping` (`VmFlags` in `/proc/PID/smaps`: `lo` for
/// locked pages, ...); empty if they cannot be read.
pub fn vm_flags(pid: i32, mapping: &Mapping) -> Vec<String> {
    let Ok(smaps) = std::fs::read_to_string(format!("/proc/{pid}/smaps")) else {
        return Vec::new();
    };
    let header = format!("{:x}-{:x} ", mapping.start, mapping.end);
    smaps
        .lines()
        .skip_while(|l| !l.starts_with(&header))
        .skip(1)
        // The entry's last line: the first after its header is its own.
        .find_map(|l| l.strip_prefix("VmFlags:"))
        .map(|flags| flags.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// The descriptors of `pid` open on the object `name` (deleted or not).
pub fn object_fds(pid: i32, name: &str) -> Vec<i32> {
    let path = dev_shm(name).display().to_string();
    let deleted = format!("{path} (deleted)");
    inspect::view(pid)
        .map(|view| {
            view.fds
                .iter()
                .filter(|(_, target)| **target == path || **target == deleted)
                .map(|(fd, _)| *fd)
                .collect()
        })
        .unwrap_or_default()
}

/// The I/O counters of a program (one process: the lab's program forks no child).
pub fn io_of(proc: &Proc) -> IoCounters {
    inspect::io(proc.pid.as_raw()).unwrap_or_default()
}

/// How `got` differs from `want`, if it does.
pub fn difference(got: &[u8], want: &[u8]) -> Option<String> {
    if got == want {
        return None;
    }
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let differ = got.iter().zip(want).filter(|(a, b)| a != b).count();
    let missing = got.len().abs_diff(want.len());
    Some(format!(
        "{} byte(s) differ from what was written, first at byte {first}",
        differ + missing
    ))
}

/// Where `needle` (random bytes, not all zero) occurs in `haystack`, if it does.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.len() < 8 || needle.iter().all(|&b| b == 0) {
        return None;
    }
    let head = &needle[..8];
    (0..=haystack.len().checked_sub(needle.len())?)
        .find(|&at| &haystack[at..at + 8] == head && &haystack[at..at + needle.len()] == needle)
}

/// Something the grader put at a name in `/dev/shm`, removed when dropped (the check's audit
/// would otherwise charge it to the program).
pub struct Planted {
    path: PathBuf,
}

impl Drop for Planted {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Planted {
    /// Gives the object another mode, as another program may have made it.
    pub fn set_mode(&self, mode: u32) -> Result<(), Fail> {
        std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(mode))?;
        Ok(())
    }
}

/// What an object is besides its bytes: what opening it must leave as it was.
#[derive(Debug, Clone, PartialEq)]
pub struct Attributes {
    inode: u64,
    mode: u32,
    owner: (u32, u32),
    len: u64,
    /// The last change of any of these (`chmod()`, `chown()`, `ftruncate()`, a write).
    changed: (i64, i64),
}

/// The attributes of `/dev/shm/<name>`; `None` if nothing has the name.
pub fn attributes(name: &str) -> Option<Attributes> {
    let meta = std::fs::symlink_metadata(dev_shm(name)).ok()?;
    Some(Attributes {
        inode: meta.ino(),
        mode: meta.mode() & 0o7777,
        owner: (meta.uid(), meta.gid()),
        len: meta.len(),
        changed: (meta.ctime(), meta.ctime_nsec()),
    })
}

/// In words, how `after` differs from `before` (`None`: the object is gone); `None` if in
/// nothing.
pub fn attribute_change(before: &Attributes, after: Option<&Attributes>) -> Option<String> {
    let Some(after) = after else {
        return Some("it is gone".into());
    };
    let change = if after.inode != before.inode {
        "another object has its name now".into()
    } else if after.mode != before.mode {
        format!(
            "its mode is {:o} now, not {:o}: it was chmod()ed",
            after.mode, before.mode
        )
    } else if after.owner != before.owner {
        format!(
            "its owner is {}:{} now, not {}:{}: it was chown()ed",
            after.owner.0, after.owner.1, before.owner.0, before.owner.1
        )
    } else if after.len != before.len {
        format!("it is {} bytes now, not {}", after.len, before.len)
    } else if after.changed != before.changed {
        "its status changed (its ctime moved: a chmod(), chown() or write to it), though its \
         mode, owner and size are as they were"
            .into()
    } else {
        return None;
    };
    Some(change)
}

/// An object the grader creates at `name`, mode 600, holding `bytes` (its size), owned by the
/// user the programs run as.
pub fn plant_object(run: &Run, name: &str, bytes: &[u8]) -> Result<Planted, Fail> {
    let path = dev_shm(name);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Fail::Grader(format!("creating {}: {e}", path.display())))?;
    let planted = Planted { path };
    if let Some((uid, gid)) = run.program_user() {
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
    }
    file.write_all_at(bytes, 0)?;
    Ok(planted)
}

/// An object the grader creates at `name`, mode 600, of `len` bytes that hold no memory yet
/// (tmpfs is sparse), owned by the user the programs run as.
pub fn plant_sparse(run: &Run, name: &str, len: u64) -> Result<Planted, Fail> {
    let planted = plant_object(run, name, &[])?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&planted.path)?
        .set_len(len)?;
    Ok(planted)
}

/// A symbolic link the grader puts at `name`, to a file that does not exist: the name is
/// taken, but nothing can be opened through it. Owned by the user the programs run as, so that
/// they may remove it from the sticky `/dev/shm`.
pub fn plant_dangling_link(run: &Run, name: &str) -> Result<Planted, Fail> {
    let path = dev_shm(name);
    let target = dev_shm(&format!("{name}-nowhere"));
    std::os::unix::fs::symlink(&target, &path)
        .map_err(|e| Fail::Grader(format!("creating the link {}: {e}", path.display())))?;
    let planted = Planted { path };
    if let Some((uid, gid)) = run.program_user() {
        std::os::unix::fs::lchown(&planted.path, Some(uid), Some(gid))?;
    }
    Ok(planted)
}

/// A symbolic link the grader puts at `name`, to the object `target` beside it: `shm_open()`
/// never follows one (glibc opens with `O_NOFOLLOW`), a program that opens the path does.
pub fn plant_link(name: &str, target: &str) -> Result<Planted, Fail> {
    let path = dev_shm(name);
    std::os::unix::fs::symlink(dev_shm(target), &path)
        .map_err(|e| Fail::Grader(format!("creating the link {}: {e}", path.display())))?;
    Ok(Planted { path })
}

/// How long `proc` has been runnable so far, all its threads, in nanoseconds: on a CPU or
/// waiting in a run queue for one, never asleep (`/proc/PID/task/TID/schedstat`); 0 once it
/// has been reaped. A loop that does not sleep is runnable for as
/// long as it loops, however busy the machine is; its share of a CPU is not.
pub fn runnable_ns(pid: i32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .map(|stat| {
            stat.split_whitespace()
                .take(2)
                .filter_map(|n| n.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

/// The threads of `pid` other than its main one (the one that reads the commands and answers).
pub fn other_threads(pid: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| task.file_name().to_str()?.parse().ok())
        .filter(|&tid| tid != pid)
        .collect()
}
