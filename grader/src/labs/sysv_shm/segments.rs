//! Segments as the grader itself sees and makes them: found in `/proc/sysvipc/shm`, read and
//! written by attaching them, planted for a reader, and looked for in a process's
//! `/proc/PID/maps`.

use crate::engine::Fail;
use crate::engine::Run;
use crate::engine::audit::{ShmSegment, shm_segments};

use super::{HEADER_LEN, MAGIC};

/// The segment with `key`, in the calling thread's IPC namespace.
pub fn segment(key: i32) -> Option<ShmSegment> {
    shm_segments().into_iter().find(|s| s.key == key)
}

pub fn segment_by_id(id: i32) -> Option<ShmSegment> {
    shm_segments().into_iter().find(|s| s.id == id)
}

pub fn rmid(id: i32) {
    // SAFETY: IPC_RMID takes no buffer.
    unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
}

fn os_error(what: &str) -> Fail {
    Fail::Grader(format!("{what}: {}", std::io::Error::last_os_error()))
}

/// Segment `id` attached to the grader, detached when dropped. Processes the grader forks
/// meanwhile (for checks running alongside) do not inherit it: one holding it until its
/// `exec()` would count as an attachment (`nattch`), keep a removed segment alive, and be its
/// last attacher (`shm_lpid`).
pub struct Attached(std::ptr::NonNull<libc::c_void>);

impl Attached {
    pub fn new(id: i32, flags: i32) -> Result<Attached, Fail> {
        // Looked up first: a fork between the attach and the advice would inherit it.
        let size = segment_by_id(id).map_or(0, |s| s.size as usize);
        // SAFETY: a null address lets the kernel choose where.
        let addr = unsafe { libc::shmat(id, std::ptr::null(), flags) };
        let Some(addr) = std::ptr::NonNull::new(addr).filter(|a| a.as_ptr() as isize != -1) else {
            return Err(os_error("shmat"));
        };
        let attached = Attached(addr);
        // SAFETY: the range is the mapping just made, as long as the segment.
        unsafe {
            nix::sys::mman::madvise(addr, size, nix::sys::mman::MmapAdvise::MADV_DONTFORK)
                .map_err(|e| Fail::Grader(format!("madvise(MADV_DONTFORK): {e}")))?;
        }
        Ok(attached)
    }

    fn bytes(&self) -> *mut u8 {
        self.0.as_ptr().cast()
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        // SAFETY: attached by `new`; nothing refers to it any more.
        unsafe { libc::shmdt(self.0.as_ptr()) };
    }
}

/// The first `size` bytes (no more than its size) of segment `id`, as the grader itself sees
/// them.
pub fn segment_bytes(id: i32, size: usize) -> Result<Vec<u8>, Fail> {
    let attached = Attached::new(id, libc::SHM_RDONLY)?;
    // SAFETY: the caller keeps `size` within the segment.
    Ok(unsafe { std::slice::from_raw_parts(attached.bytes(), size) }.to_vec())
}

/// Writes `bytes` at `offset` of segment `id` (which must hold them), as another process
/// attached to it could.
pub fn overwrite(id: i32, offset: usize, bytes: &[u8]) -> Result<(), Fail> {
    let attached = Attached::new(id, 0)?;
    // SAFETY: the caller keeps offset + bytes.len() within the segment.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), attached.bytes().add(offset), bytes.len());
    }
    Ok(())
}

/// Writes `bytes` into the rest of the last page of segment `id` (of `size` bytes), past its
/// end: the kernel maps whole pages, so a program's stores past the end land there.
pub fn mark_past_end(id: i32, size: usize, bytes: &[u8]) -> Result<(), Fail> {
    past_end(id, size, bytes.len(), |tail| tail.copy_from_slice(bytes))
}

/// The first `len` bytes past the end of segment `id` (of `size` bytes), in its last page.
pub fn bytes_past_end(id: i32, size: usize, len: usize) -> Result<Vec<u8>, Fail> {
    let mut bytes = vec![0; len];
    past_end(id, size, len, |tail| bytes.copy_from_slice(tail))?;
    Ok(bytes)
}

/// Attaches segment `id` (of `size` bytes) and hands `f` the `len` bytes past its end, which the
/// caller keeps within its last page.
fn past_end(id: i32, size: usize, len: usize, f: impl FnOnce(&mut [u8])) -> Result<(), Fail> {
    let attached = Attached::new(id, 0)?;
    // SAFETY: the mapping covers the segment's last page whole, and size + len stays within it.
    f(unsafe { std::slice::from_raw_parts_mut(attached.bytes().add(size), len) });
    Ok(())
}

/// A record as the lab lays it out.
pub fn record(magic: u32, sequence: u32, length: u64, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len());
    bytes.extend_from_slice(&magic.to_ne_bytes());
    bytes.extend_from_slice(&sequence.to_ne_bytes());
    bytes.extend_from_slice(&length.to_ne_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// A complete record of `payload` with sequence `sequence`.
pub fn full_record(sequence: u32, payload: &[u8]) -> Vec<u8> {
    record(MAGIC, sequence, payload.len() as u64, payload)
}

/// A segment the check made itself; removed when the check ends, whatever happens.
pub struct Planted {
    pub id: i32,
}

impl Planted {
    /// Creates a segment of `size` bytes with key `key` and mode 0600 holding `bytes`, owned by
    /// the user the lab's programs run as.
    pub fn new(run: &Run, key: i32, size: usize, bytes: &[u8]) -> Result<Planted, Fail> {
        Planted::with_mode(run, key, size, bytes, 0o600)
    }

    /// The same, with permission bits `mode`.
    pub fn with_mode(
        run: &Run,
        key: i32,
        size: usize,
        bytes: &[u8],
        mode: u16,
    ) -> Result<Planted, Fail> {
        // SAFETY: shmget takes no pointers.
        let id = unsafe { libc::shmget(key, size, libc::IPC_CREAT | libc::IPC_EXCL | 0o600) };
        if id == -1 {
            return Err(os_error("shmget"));
        }
        Planted::fill(run, Planted { id }, size, bytes, mode)
    }

    /// A segment as a crashed run leaves it: created (mode 0600, holding `bytes`) by a process
    /// that has exited since, so that its creator (`shm_cpid`) is gone and nobody is attached.
    pub fn left_by_exited_process(
        run: &Run,
        key: i32,
        size: usize,
        bytes: &[u8],
    ) -> Result<Planted, Fail> {
        // Tried again once: the grader's own set-up is not the code under test.
        let mut failure = String::new();
        for _ in 0..2 {
            match create_in_exiting_child(key, size) {
                Ok(id) => return Planted::fill(run, Planted { id }, size, bytes, 0o600),
                Err(why) => failure = why,
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Err(Fail::Grader(format!(
            "a child of the grader could not create a segment with key {key:#x}: {failure}"
        )))
    }

    /// Writes `bytes` into the new segment `planted` and gives it to the programs' user with
    /// permission bits `mode`.
    fn fill(
        run: &Run,
        planted: Planted,
        size: usize,
        bytes: &[u8],
        mode: u16,
    ) -> Result<Planted, Fail> {
        let id = planted.id;
        overwrite(id, 0, &bytes[..bytes.len().min(size)])?;
        let owner = run.program_user();
        if owner.is_some() || mode != 0o600 {
            // SAFETY: IPC_STAT fills the zeroed shmid_ds; IPC_SET reads it back.
            unsafe {
                let mut info: libc::shmid_ds = std::mem::zeroed();
                if libc::shmctl(id, libc::IPC_STAT, &mut info) == -1 {
                    return Err(os_error("shmctl(IPC_STAT)"));
                }
                if let Some((uid, gid)) = owner {
                    info.shm_perm.uid = uid;
                    info.shm_perm.gid = gid;
                }
                info.shm_perm.mode = mode;
                if libc::shmctl(id, libc::IPC_SET, &mut info) == -1 {
                    return Err(os_error("shmctl(IPC_SET)"));
                }
            }
        }
        Ok(planted)
    }

    /// Its bytes now.
    pub fn contents(&self, size: usize) -> Result<Vec<u8>, Fail> {
        segment_bytes(self.id, size)
    }

    /// Waits until nobody is attached (`shm_nattch` 0), as a crashed run leaves a segment: a
    /// process forked by the grader just as it attached may hold it until its `exec()`.
    pub fn unattached(&self) -> Result<(), Fail> {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(1);
        while segment_by_id(self.id).is_some_and(|s| s.attached > 0) {
            if std::time::Instant::now() > until {
                return Err(Fail::Grader(format!(
                    "segment {} the grader planted stayed attached for a second",
                    self.id
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        Ok(())
    }
}

impl Drop for Planted {
    fn drop(&mut self) {
        rmid(self.id);
    }
}

/// The process that last attached or detached segment `shmid` (`shm_lpid`, the column `lpid`
/// of `/proc/sysvipc/shm`: `shmat()` and `shmdt()` set it, nothing else does); `None` if it is
/// not listed.
pub fn last_attacher(shmid: i32) -> Option<i32> {
    let text = std::fs::read_to_string("/proc/sysvipc/shm").ok()?;
    text.lines().skip(1).find_map(|line| {
        // Columns: key shmid perms size cpid lpid nattch ...
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1)?.parse::<i32>().ok()? == shmid).then(|| fields.get(5)?.parse().ok())?
    })
}

/// How process `pid` has segment `shmid` mapped: the permissions column of its line in
/// `/proc/PID/maps` (`rw-s`, `r--s`), or `None` if it has no mapping of it. A SysV segment is
/// mapped from a file named `/SYSV<key>` whose inode number is the segment's id.
pub fn mapping_of(pid: i32, shmid: i32) -> Option<String> {
    maps_line_of(pid, shmid).map(|(_, perms)| perms)
}

/// Where process `pid` has segment `shmid` mapped: the start address of its mapping.
pub fn mapped_at(pid: i32, shmid: i32) -> Option<u64> {
    let (range, _) = maps_line_of(pid, shmid)?;
    u64::from_str_radix(range.split('-').next()?, 16).ok()
}

/// The address range and the permissions of segment `shmid` in `/proc/PID/maps`.
fn maps_line_of(pid: i32, shmid: i32) -> Option<(String, String)> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    maps.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (range, perms) = (fields.first()?, fields.get(1)?);
        let (inode, path) = (fields.get(4)?, fields.get(5)?);
        (path.starts_with("/SYSV") && inode.parse::<i64>().ok()? == i64::from(shmid))
            .then(|| (range.to_string(), perms.to_string()))
    })
}

/// Whether process `pid`'s mapping of segment `shmid` may be made writable (the flag `mw` of
/// its `VmFlags` in `/proc/PID/smaps`): an attach with `SHM_RDONLY` never may, one for writing
/// made read-only afterwards (`mprotect`) still may. `None` if it is not mapped, or not readable.
pub fn may_write(pid: i32, shmid: i32) -> Option<bool> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let mut lines = smaps.lines();
    while let Some(line) = lines.next() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(inode), Some(path)) = (fields.get(4), fields.get(5)) else {
            continue;
        };
        if !path.starts_with("/SYSV") || inode.parse::<i64>().ok() != Some(i64::from(shmid)) {
            continue;
        }
        let flags = lines.find_map(|l| l.strip_prefix("VmFlags:"))?;
        return Some(flags.split_whitespace().any(|f| f == "mw"));
    }
    None
}

/// Removes the segment with this key, if any, when the check is done with it (a program that
/// failed, or was stopped on the way, may leave one).
pub struct RemoveKeyOnDrop(pub Option<i32>);

impl Drop for RemoveKeyOnDrop {
    fn drop(&mut self) {
        if let Some(found) = self.0.and_then(segment) {
            rmid(found.id);
        }
    }
}

/// Creates a segment with `key` in a child that exits at once (its creator gone, nobody
/// attached): its id, or what went wrong (the child's errno, or how it ended).
fn create_in_exiting_child(key: i32, size: usize) -> Result<i32, String> {
    // SAFETY: the child makes one system call and exits at once, touching no lock.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: shmget takes no pointers; _exit ends the child only. Its status is the errno.
        unsafe {
            let id = libc::shmget(key, size, libc::IPC_CREAT | libc::IPC_EXCL | 0o600);
            let errno = *libc::__errno_location();
            libc::_exit(if id == -1 { errno.clamp(1, 255) } else { 0 });
        }
    }
    if child == -1 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    let mut status = 0;
    // SAFETY: waits for our own child; status is a live int. Another thread's sweep of orphans
    // may reap it first (ECHILD): the segment's presence then tells.
    let waited = unsafe { libc::waitpid(child, &mut status, 0) };
    // SAFETY: shmget takes no pointers.
    let id = unsafe { libc::shmget(key, 0, 0) };
    if id != -1 {
        return Ok(id);
    }
    Err(if waited == -1 {
        "the child was reaped elsewhere and no segment has the key".to_string()
    } else if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) != 0 {
        format!(
            "its shmget() failed: {}",
            nix::errno::Errno::from_raw(libc::WEXITSTATUS(status))
        )
    } else if libc::WIFSIGNALED(status) {
        format!("the child was killed by signal {}", libc::WTERMSIG(status))
    } else {
        "the child created it, and it was gone when the grader looked".to_string()
    })
}
