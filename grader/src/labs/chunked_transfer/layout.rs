//! The segment as the handout lays it out (a header of two semaphores, then two slots of a chunk
//! header and data), and the grader's own mapping of a segment: to read what the slots and the
//! semaphores hold while the programs stand still, to play a broken sender, or to play a strict
//! receiver.

use std::ffi::c_void;
use std::fs::File;
use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap, shm_open};
use nix::sys::stat::Mode;

use crate::engine::{Fail, Run};

/// The bytes of the segment's header (two `sem_t`) and of a chunk's header (four `u64`).
pub const SEGMENT_HEADER: u64 = 64;
pub const CHUNK_HEADER: u64 = 32;
/// Slots in a segment: chunk k of a transfer lies in slot k % 2.
pub const SLOTS: u64 = 2;
/// The smallest segment accepted (`MIN_SEGMENT_SIZE`).
pub const MIN_SEGMENT: usize = 4096;

/// The bytes of one slot of a segment of `size` bytes: `(size - 64) / 2`, rounded down to 8.
pub fn expected_slot_size(size: usize) -> usize {
    ((size - SEGMENT_HEADER as usize) / SLOTS as usize) & !7
}

/// The chunk capacity of a segment of `size` bytes: a slot minus its 32-byte chunk header.
pub fn expected_capacity(size: usize) -> usize {
    expected_slot_size(size) - CHUNK_HEADER as usize
}

/// How many chunks a message of `len` bytes takes: one at least (an empty message is one empty
/// chunk), each full but the last.
pub fn chunks_of(len: u64, capacity: u64) -> u64 {
    len.div_ceil(capacity).max(1)
}

/// A chunk header as it lies at the start of a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub seq: u64,
    pub total: u64,
    pub len: u64,
    pub end: u64,
}

impl Header {
    pub fn describe(&self) -> String {
        format!(
            "seq {}, total {}, len {}, end {}",
            self.seq, self.total, self.len, self.end
        )
    }
}

/// The two semaphores of the segment's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sem {
    /// At offset 0: slots the sender may fill.
    Empty,
    /// At offset 32: chunks waiting for the receiver.
    Full,
}

impl Sem {
    pub fn name(self) -> &'static str {
        match self {
            Sem::Empty => "empty",
            Sem::Full => "full",
        }
    }

    fn offset(self) -> usize {
        match self {
            Sem::Empty => 0,
            Sem::Full => size_of::<libc::sem_t>(),
        }
    }
}

/// How a semaphore's bytes compare with what `sem_init()` of this C library writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SemInit {
    /// As `sem_init(sem, 1, value)` leaves it: process-shared.
    Shared,
    /// As `sem_init(sem, 0, value)` leaves it: for the threads of one process only.
    Private,
    /// Every byte zero: never initialized (or, for a value of 0, initialized with pshared = 0,
    /// which leaves the same bytes).
    Zeros,
    /// Something else.
    Other,
}

/// A segment mapped by the grader, unmapped when dropped.
pub struct Mapped {
    addr: NonNull<c_void>,
    size: usize,
}

fn os(what: &'static str) -> impl Fn(nix::errno::Errno) -> Fail {
    move |errno| Fail::Grader(format!("{what}: {errno}"))
}

fn map_shared(fd: std::os::fd::BorrowedFd<'_>, size: usize) -> Result<Mapped, Fail> {
    let length = NonZeroUsize::new(size).ok_or(Fail::Grader("a segment of 0 bytes".into()))?;
    // SAFETY: a new mapping chosen by the kernel replaces nothing; the object is `size` bytes
    // long.
    let addr = unsafe {
        mmap(
            None,
            length,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED,
            fd,
            0,
        )
    }
    .map_err(os("mmap"))?;
    Ok(Mapped { addr, size })
}

impl Mapped {
    /// Creates the object `name` of `size` bytes (mode 0600, owned by the user the lab's
    /// programs run as) and maps it; with `semaphores`, initializes them as a sender's create()
    /// does (`empty` 2, `full` 0, process-shared).
    pub fn create(run: &Run, name: &str, size: usize, semaphores: bool) -> Result<Mapped, Fail> {
        let fd = shm_open(
            name,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR,
            Mode::S_IRUSR | Mode::S_IWUSR,
        )
        .map_err(os("shm_open"))?;
        if let Some((uid, gid)) = run.program_user() {
            nix::unistd::fchown(
                &fd,
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
            )
            .map_err(os("fchown"))?;
        }
        nix::unistd::ftruncate(&fd, size as i64).map_err(os("ftruncate"))?;
        let mapped = map_shared(std::os::fd::AsFd::as_fd(&fd), size)?;
        if semaphores {
            // SAFETY: the two sem_t lie at the start of the fresh mapping; nobody uses them yet.
            let ok = unsafe {
                libc::sem_init(mapped.sem(Sem::Empty), 1, SLOTS as libc::c_uint) == 0
                    && libc::sem_init(mapped.sem(Sem::Full), 1, 0) == 0
            };
            if !ok {
                return Err(Fail::Grader(format!(
                    "sem_init: {}",
                    std::io::Error::last_os_error()
                )));
            }
        }
        Ok(mapped)
    }

    /// Maps the segment open as `file`, `size` bytes of it.
    pub fn open(file: &File, size: usize) -> Result<Mapped, Fail> {
        map_shared(std::os::fd::AsFd::as_fd(file), size)
    }

    /// Data bytes per chunk in this segment.
    pub fn capacity(&self) -> u64 {
        expected_capacity(self.size) as u64
    }

    fn sem(&self, which: Sem) -> *mut libc::sem_t {
        // SAFETY: both semaphores lie inside the segment's 64-byte header.
        unsafe { self.addr.as_ptr().cast::<u8>().add(which.offset()).cast() }
    }

    /// The semaphore's value now (`sem_getvalue()`).
    pub fn value(&self, which: Sem) -> i32 {
        let mut value = 0;
        // SAFETY: the pointer lies in the mapping; sem_getvalue only reads it.
        unsafe { libc::sem_getvalue(self.sem(which), &mut value) };
        value
    }

    /// How many threads wait on the semaphore now, as this C library counts them (glibc on a
    /// 64-bit machine: the high half of the semaphore's first word), from the entry into the
    /// wait until it is left; a waiter makes `sem_post()` wake it with a system call.
    pub fn waiters(&self, which: Sem) -> u64 {
        // SAFETY: the semaphore's first 8 bytes lie inside the mapping, 8-byte aligned.
        let word = unsafe { self.sem(which).cast::<u64>().read_volatile() };
        word >> 32
    }

    /// How the semaphore's bytes compare with a fresh `sem_init(.., pshared, value)` here.
    pub fn init_kind(&self, which: Sem, value: u32) -> SemInit {
        let size = size_of::<libc::sem_t>();
        let mut bytes = vec![0u8; size];
        // SAFETY: the semaphore's bytes lie inside the mapping.
        unsafe {
            std::ptr::copy_nonoverlapping(self.sem(which).cast::<u8>(), bytes.as_mut_ptr(), size)
        };
        let fresh = |pshared: libc::c_int| {
            // SAFETY: a zeroed sem_t of our own, initialized and read, never waited on.
            unsafe {
                let mut sem: libc::sem_t = std::mem::zeroed();
                libc::sem_init(&mut sem, pshared, value);
                let copy = std::slice::from_raw_parts((&raw const sem).cast::<u8>(), size).to_vec();
                libc::sem_destroy(&mut sem);
                copy
            }
        };
        if bytes == fresh(1) {
            SemInit::Shared
        } else if bytes.iter().all(|&b| b == 0) {
            SemInit::Zeros
        } else if bytes == fresh(0) {
            SemInit::Private
        } else {
            SemInit::Other
        }
    }

    fn slot_start(&self, slot: u64) -> *mut u8 {
        let offset =
            SEGMENT_HEADER as usize + (slot % SLOTS) as usize * expected_slot_size(self.size);
        // SAFETY: the slot lies inside the mapping (slot % 2 < 2).
        unsafe { self.addr.as_ptr().cast::<u8>().add(offset) }
    }

    /// The chunk header in `slot` (taken modulo 2).
    pub fn header(&self, slot: u64) -> Header {
        // SAFETY: the header lies at the slot's start, 8-byte aligned; read as it is now.
        let words = unsafe { self.slot_start(slot).cast::<[u64; 4]>().read_volatile() };
        Header {
            seq: words[0],
            total: words[1],
            len: words[2],
            end: words[3],
        }
    }

    /// The first `len` data bytes of `slot` (at most the capacity).
    pub fn data(&self, slot: u64, len: u64) -> Vec<u8> {
        let len = len.min(self.capacity()) as usize;
        let mut bytes = vec![0u8; len];
        // SAFETY: at most `capacity` bytes after the slot's chunk header, inside the mapping.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.slot_start(slot).add(CHUNK_HEADER as usize),
                bytes.as_mut_ptr(),
                len,
            )
        };
        bytes
    }

    /// Puts a chunk in `slot`, its header and `data` (cut to the capacity), then posts `full`,
    /// as a sender would.
    pub fn put(&self, slot: u64, header: Header, data: &[u8]) {
        let words = [header.seq, header.total, header.len, header.end];
        let len = data.len().min(self.capacity() as usize);
        // SAFETY: the header and at most `capacity` data bytes lie inside the slot; no process
        // reads the slot before `full` is posted.
        unsafe {
            let start = self.slot_start(slot);
            start.cast::<[u64; 4]>().write_volatile(words);
            std::ptr::copy_nonoverlapping(data.as_ptr(), start.add(CHUNK_HEADER as usize), len);
        }
        self.post(Sem::Full);
    }

    /// Rewrites the end word of `slot`'s header alone, posting nothing: a header changed after
    /// its chunk was handed over, which only a side that reads it again sees.
    pub fn set_end(&self, slot: u64, end: u64) {
        // SAFETY: the end word (the header's fourth) lies at the slot's start, 8-byte aligned.
        unsafe {
            self.slot_start(slot)
                .cast::<u64>()
                .add(3)
                .write_volatile(end)
        };
    }

    /// Rewrites byte `at` of `slot`'s chunk header alone, posting nothing: one byte, so that a
    /// side stopped right after it read that byte (even one byte at a time) has what it read.
    pub fn set_header_byte(&self, slot: u64, at: usize, byte: u8) {
        assert!(at < CHUNK_HEADER as usize, "byte {at} of a chunk header");
        // SAFETY: the byte lies in the slot's chunk header, inside the mapping.
        unsafe { self.slot_start(slot).add(at).write_volatile(byte) };
    }

    /// Waits at most `timeout` for the semaphore (`sem_timedwait()`); whether it was taken.
    pub fn wait(&self, which: Sem, timeout: Duration) -> bool {
        let Ok(now) = nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME) else {
            return false;
        };
        let deadline = now + nix::sys::time::TimeSpec::from_duration(timeout);
        loop {
            // SAFETY: the semaphore lies in the mapping, initialized by a sender's create().
            if unsafe { libc::sem_timedwait(self.sem(which), deadline.as_ref()) } == 0 {
                return true;
            }
            if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return false;
            }
        }
    }

    /// Posts the semaphore.
    pub fn post(&self, which: Sem) {
        // SAFETY: as in wait().
        unsafe { libc::sem_post(self.sem(which)) };
    }
}

// SAFETY: a shared mapping of an object, which any thread of the grader may read and write;
// the mapping is unmapped once, by its one owner.
unsafe impl Send for Mapped {}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: the mapping made by map_shared(), not used after this.
        let _ = unsafe { munmap(self.addr, self.size) };
    }
}
