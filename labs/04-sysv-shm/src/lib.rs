//! # Lab 4: SysV shared memory
//!
//! A *publisher* creates a System V shared memory segment, writes one record into it and
//! detaches. Later, a *reader* that is not related to the publisher (it is not its child; it may
//! start after the publisher has exited) finds the same segment, checks that the record in it is
//! whole and well-formed, copies it out, and removes the segment when asked.
//!
//! ```text
//!   publisher: ftok(path, id) -> key -> shmget(key, size, IPC_CREAT|IPC_EXCL|0600) -> shmat
//!              write the record, shmdt, exit            (the segment stays)
//!   reader:    ftok(path, id) -> key -> shmget(key, 0, 0) -> shmat(SHM_RDONLY)
//!              validate and copy the record, shmdt, shmctl(IPC_RMID) if asked
//! ```
//!
//! The record is a [`Header`] followed by the payload:
//!
//! ```text
//!   offset 0   magic     u32  MAGIC, written last: the record is complete
//!   offset 4   sequence  u32  which publication this is
//!   offset 8   length    u64  payload bytes that follow
//!   offset 16  payload
//! ```
//!
//! What this lab is about:
//! - Two unrelated processes agree on a segment through a *key*. `ftok(path, id)` turns an
//!   existing file and a non-zero 8-bit id into the same key in every process.
//! - `shmget()` with `IPC_CREAT | IPC_EXCL` creates a new segment or fails with `EEXIST`; the low
//!   9 bits of its flags are the permissions, as for a file.
//! - `shmat()` maps the segment into the caller's address space; `shmdt()` unmaps it. The
//!   kernel counts attachments (`nattch` in `/proc/sysvipc/shm`).
//! - A segment is not a file descriptor: it outlives every process that used it until someone
//!   calls `shmctl(IPC_RMID)`. A segment left by a crashed run is still there next time, with
//!   whatever it held; never take what you find for fresh data.
//! - The kernel limits segment sizes: `/proc/sys/kernel/shmmax` is the largest.
//!
//! The program in `main.rs` calls [`publish`] (then [`Segment::detach`]) in the publisher, and
//! [`key_for`], [`Segment::open`], [`Segment::read_record`], [`Segment::detach`] and [`remove`]
//! in the reader. Keep `main.rs` as it is: the grader talks to it.

use std::path::Path;
use std::ptr::NonNull;

use nix::errno::Errno;

/// The first field of every complete record: the bytes `IPCR`.
pub const MAGIC: u32 = u32::from_le_bytes(*b"IPCR");

/// The header at the start of the segment.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// [`MAGIC`] once the record is complete; anything else means "no valid record here".
    pub magic: u32,
    /// Which publication this is, as the publisher was told.
    pub sequence: u32,
    /// How many payload bytes follow the header.
    pub length: u64,
}

/// The size of [`Header`]: the payload starts at this offset.
pub const HEADER_LEN: usize = std::mem::size_of::<Header>();

/// Where the system-wide largest segment size is published.
pub const SHMMAX_PATH: &str = "/proc/sys/kernel/shmmax";

/// A SysV IPC key, as `ftok()` returns it.
pub type Key = libc::key_t;

/// Everything that can go wrong between the publisher, the segment and the reader.
#[derive(Debug, thiserror::Error)]
pub enum ShmError {
    /// `ftok()` failed: the path does not exist or cannot be reached.
    #[error("ftok({path}) failed: {errno}")]
    Ftok {
        /// The path that was given.
        path: String,
        /// Why.
        errno: Errno,
    },
    /// The id is not in `1..=255`: `ftok()` uses only its low 8 bits, and 0 is reserved.
    #[error("the ftok id must be in 1..=255, not {0}")]
    BadId(u32),
    /// A segment of 0 bytes was asked for.
    #[error("a segment cannot be 0 bytes long")]
    ZeroSize,
    /// More than the system allows (`/proc/sys/kernel/shmmax`) was asked for.
    #[error("{size} bytes is more than the system's limit of {max} (shmmax)")]
    TooLarge {
        /// Bytes asked for.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The limit could not be read.
    #[error("cannot read {SHMMAX_PATH}: {0}")]
    Limit(std::io::Error),
    /// The header and the payload do not fit in the segment.
    #[error("a {payload}-byte payload and its {HEADER_LEN}-byte header do not fit in {size} bytes")]
    NoRoom {
        /// Payload bytes.
        payload: usize,
        /// Segment bytes.
        size: usize,
    },
    /// A segment with this key already exists: a crashed earlier run may have left it.
    #[error("a segment with key {key:#x} already exists (remove it with `ipcrm -M {key:#x}`)")]
    Exists {
        /// The key.
        key: Key,
    },
    /// No segment has this key: nothing was published, or it was removed.
    #[error("no segment has key {key:#x}")]
    NotFound {
        /// The key.
        key: Key,
    },
    /// `shmget()` failed for another reason.
    #[error("shmget() failed: {0}")]
    Get(Errno),
    /// `shmat()` failed.
    #[error("shmat() failed: {0}")]
    Attach(Errno),
    /// `shmdt()` failed.
    #[error("shmdt() failed: {0}")]
    Detach(Errno),
    /// `shmctl()` failed.
    #[error("shmctl() failed: {0}")]
    Control(Errno),
    /// The segment does not start with [`MAGIC`]: no complete record, or not ours.
    #[error("no valid record: the magic is {found:#010x}, not {MAGIC:#010x}")]
    BadMagic {
        /// What the segment holds instead.
        found: u32,
    },
    /// The header claims more payload than the segment can hold.
    #[error("the header claims {length} payload bytes, but the segment holds at most {capacity}")]
    BadLength {
        /// What the header says.
        length: u64,
        /// What fits after the header.
        capacity: usize,
    },
}

impl ShmError {
    /// A stable one-word name for the variant, which the program reports as `kind=` (the
    /// grader checks it). Given; do not change.
    pub fn kind(&self) -> &'static str {
        match self {
            ShmError::Ftok { .. } => "ftok",
            ShmError::BadId(_) => "bad-id",
            ShmError::ZeroSize => "zero-size",
            ShmError::TooLarge { .. } => "too-large",
            ShmError::Limit(_) => "limit",
            ShmError::NoRoom { .. } => "no-room",
            ShmError::Exists { .. } => "exists",
            ShmError::NotFound { .. } => "not-found",
            ShmError::Get(_) => "shmget",
            ShmError::Attach(_) => "shmat",
            ShmError::Detach(_) => "shmdt",
            ShmError::Control(_) => "shmctl",
            ShmError::BadMagic { .. } => "bad-magic",
            ShmError::BadLength { .. } => "bad-length",
        }
    }
}

/// A record read out of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The publication's sequence number.
    pub sequence: u32,
    /// The payload, copied out of the segment.
    pub payload: Vec<u8>,
}

/// A segment attached to this process.
#[derive(Debug)]
pub struct Segment {
    /// The segment's id, from `shmget()`: what `shmctl()` takes.
    pub id: i32,
    /// Where `shmat()` attached it.
    pub addr: NonNull<u8>,
    /// Its size in bytes, as the kernel knows it.
    pub size: usize,
}

/// The key that every process derives from `path` and `id` with `ftok()`.
///
/// Reject an `id` outside `1..=255` with [`ShmError::BadId`] first, before `ftok()` looks at the
/// path: `ftok()` keeps only 8 bits of it, so 256 would silently mean 0. The path must exist.
/// Call `ftok()` every time: the key comes from the file's inode, so a file replaced at the same
/// path gives another key.
pub fn key_for(path: &Path, id: u32) -> Result<Key, ShmError> {
    let _ = (&path, &id);
    todo!("reject id 0 or > 255 (BadId), then libc::ftok(); -1 is Ftok")
}

/// The largest segment the system allows, read from [`SHMMAX_PATH`] each time (an administrator
/// may change it; `shmall`, next to it, is another limit: the total of all segments, in pages).
pub fn max_segment_size() -> Result<u64, ShmError> {
    todo!("read and parse SHMMAX_PATH (errors are Limit)")
}

impl Segment {
    /// Creates a new segment of `size` bytes with key `key`, readable and writable by its owner
    /// only (mode `0600`), and attaches it for reading and writing.
    ///
    /// Check `size` first: 0 is [`ShmError::ZeroSize`], more than [`max_segment_size`] is
    /// [`ShmError::TooLarge`] (exactly the limit is allowed). Create with `IPC_CREAT |
    /// IPC_EXCL`, so that a segment that already has this key (left by a crashed run, say, or
    /// made by another process a moment ago) is [`ShmError::Exists`] and is never written over:
    /// looking for it first cannot tell, since it may appear between the look and `shmget()`.
    /// If `shmat()` fails, remove the segment just created before returning the error.
    pub fn create(key: Key, size: u64) -> Result<Segment, ShmError> {
        let _ = (&key, &size);
        todo!("check size, shmget(IPC_CREAT | IPC_EXCL | 0o600), shmat()")
    }

    /// Finds the existing segment with key `key` and attaches it read-only (`SHM_RDONLY`).
    ///
    /// `shmget(key, 0, 0)` finds without creating (`ENOENT` is [`ShmError::NotFound`], and
    /// nothing else is); the segment's size comes from `shmctl(IPC_STAT)`, not from the caller
    /// (its failure is [`ShmError::Control`]).
    pub fn open(key: Key) -> Result<Segment, ShmError> {
        let _ = (&key,);
        todo!("shmget(key, 0, 0), shmctl(IPC_STAT) for the size, shmat(SHM_RDONLY)")
    }

    /// Writes a record: `payload` after the header, then the header's `sequence` and `length`,
    /// and the magic last, after a release fence, so that a reader that sees the magic sees the
    /// whole record.
    ///
    /// [`ShmError::NoRoom`] if the header and the payload do not fit in the segment (in a
    /// segment smaller than the header, not even an empty payload does).
    pub fn write_record(&mut self, sequence: u32, payload: &[u8]) -> Result<(), ShmError> {
        let _ = (&sequence, &payload);
        todo!("check room, copy payload, length, sequence, fence, MAGIC")
    }

    /// Reads the record, trusting nothing: the segment must be large enough for a header
    /// ([`ShmError::BadLength`]), the magic must be [`MAGIC`] ([`ShmError::BadMagic`]) and the
    /// length must fit in the segment after the header ([`ShmError::BadLength`]). Then copies
    /// the payload out.
    pub fn read_record(&self) -> Result<Record, ShmError> {
        todo!("a header must fit (BadLength), check MAGIC, fence(Acquire), length, copy out")
    }

    /// Detaches the segment with `shmdt()`. The segment itself stays until it is removed.
    pub fn detach(self) -> Result<(), ShmError> {
        todo!("shmdt(self.addr); -1 is Detach(Errno::last())")
    }
}

/// Marks the segment `id` for removal with `shmctl(id, IPC_RMID)`: it disappears once the last
/// process has detached (at once if none is attached).
pub fn remove(id: i32) -> Result<(), ShmError> {
    let _ = (&id,);
    todo!("shmctl(id, IPC_RMID, null); -1 is Control(Errno::last())")
}

/// The publisher's whole job: derives the key from `path` and `id`, creates a segment of `size`
/// bytes, and writes `payload` into it as publication `sequence`. Returns the segment still
/// attached.
///
/// If writing fails after the segment was created, detach and remove it before returning the
/// error: a failed publisher leaves nothing behind.
pub fn publish(
    path: &Path,
    id: u32,
    size: u64,
    sequence: u32,
    payload: &[u8],
) -> Result<Segment, ShmError> {
    let _ = (&path, &id, &size, &sequence, &payload);
    todo!("key_for, create, write_record; on error remove")
}
