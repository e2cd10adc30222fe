//! What `/proc` shows of how a transfer works: which processes map the segment, which
//! descriptors they hold, how many bytes their system calls moved, how much memory they used.

use std::path::PathBuf;

use super::layout::{CHUNK_HEADER, SEGMENT_HEADER, SLOTS, expected_slot_size};
use crate::engine::Fail;
use crate::engine::inspect::{self, IoCounters};

/// `/dev/shm/<name>`.
pub fn dev_shm(name: &str) -> PathBuf {
    PathBuf::from("/dev/shm").join(name.trim_start_matches('/'))
}

/// Fails unless `pid` maps all `size` bytes of the segment (inode `inode` in /dev/shm) shared,
/// from /proc/PID/maps.
pub fn maps_segment(pid: i32, inode: u64, size: u64, who: &str) -> Result<(), Fail> {
    let mapped: u64 = segment_mappings(pid, inode)?
        .iter()
        .map(|(start, end, _)| end - start)
        .sum();
    if mapped == 0 {
        return Err(Fail::failed(format!(
            "the {who} (pid {pid}) says it is ready, but /proc/{pid}/maps has no shared mapping \
             of the segment: map it with mmap(MAP_SHARED) and pass every chunk through it"
        )));
    }
    if mapped < size {
        // The slots end this far into the segment; an odd size goes on a few bytes past them.
        let slots_end = SEGMENT_HEADER + SLOTS * expected_slot_size(size as usize) as u64;
        let page = 4096;
        let slots_only = if mapped >= slots_end && mapped <= slots_end.div_ceil(page) * page {
            format!(
                ": it maps as far as the slots go ({slots_end} bytes: the semaphores and two \
                 slots), not the {} byte(s) of the object after them",
                size - slots_end
            )
        } else {
            String::new()
        };
        return Err(Fail::failed(format!(
            "the {who} (pid {pid}) maps {mapped} bytes of the {size}-byte segment \
             (/proc/{pid}/maps){slots_only}: map all of it, its size from fstat(), whatever \
             part of it the layout uses"
        )));
    }
    Ok(())
}

/// The descriptors `pid` opened itself (not stdin, stdout, stderr or the grader's control
/// socket, 3), with what each is, from /proc/PID/fd.
pub fn own_descriptors(pid: i32) -> Vec<(i32, String)> {
    inspect::view(pid)
        .map(|view| view.fds.into_iter().filter(|(fd, _)| *fd > 3).collect())
        .unwrap_or_default()
}

/// The descriptor of `pid` open on the shared memory object `name`, if any (after the name is
/// unlinked the link reads `/dev/shm/NAME (deleted)`).
pub fn object_descriptor(pid: i32, name: &str) -> Option<i32> {
    let path = dev_shm(name).display().to_string();
    own_descriptors(pid)
        .into_iter()
        .find(|(_, target)| *target == path || *target == format!("{path} (deleted)"))
        .map(|(fd, _)| fd)
}

/// The descriptors of `pid`, in words, for a diagnosis.
pub fn describe_descriptors(pid: i32, segment: &str) -> String {
    let segment = dev_shm(segment).display().to_string();
    let fds: Vec<String> = own_descriptors(pid)
        .into_iter()
        .map(|(fd, target)| {
            let what = if target.starts_with(&segment) {
                "the segment's own object".to_string()
            } else if target.starts_with("pipe:") {
                "a pipe".into()
            } else if target.starts_with("socket:") {
                "a socket".into()
            } else if target.starts_with('/') {
                format!("the file {target}")
            } else {
                target
            };
            format!("fd {fd}: {what}")
        })
        .collect();
    if fds.is_empty() {
        "no descriptor of its own open now".into()
    } else {
        format!("open now: {}", fds.join(", "))
    }
}

/// The I/O counters of `pid`; zeros if it is gone.
pub fn io_of(pid: i32) -> IoCounters {
    inspect::io(pid).unwrap_or_default()
}

/// Fails if `who` (`pid`) moved more than half of a `len`-byte transfer's bytes with read-like
/// or write-like system calls between two readings of its counters (`moved`): in this lab the
/// data is copied in memory, into the slot of the mapping and out of it, never through a
/// descriptor.
pub fn expect_copied_in_memory(
    who: &str,
    pid: i32,
    moved: IoCounters,
    len: u64,
    segment: &str,
) -> Result<(), Fail> {
    let bytes = moved.read_bytes + moved.written_bytes;
    if bytes <= len / 2 {
        return Ok(());
    }
    Err(Fail::failed(format!(
        "while a {len}-byte message went through the segment, the {who} moved {} bytes with \
         write()-like and {} with read()-like system calls ({} and {} calls, from /proc/{pid}/io; \
         {}): the data went through a descriptor (a file, a pipe, pread()/pwrite() on the \
         object) instead of the mapping. Copy each chunk into its slot of the mapped segment \
         and hand the writer the slot itself",
        moved.written_bytes,
        moved.read_bytes,
        moved.write_calls,
        moved.read_calls,
        describe_descriptors(pid, segment)
    )))
}

/// Fails if `who` (`pid`) still holds the segment `name` open as a descriptor once it has
/// mapped it.
pub fn expect_descriptor_closed(who: &str, pid: i32, name: &str) -> Result<(), Fail> {
    match object_descriptor(pid, name) {
        None => Ok(()),
        Some(fd) => Err(Fail::failed(format!(
            "the {who} (pid {pid}) still holds the segment's object open as descriptor {fd} \
             after mapping it: close the descriptor once the segment is mapped (the mapping \
             keeps the memory; a Segment holds only the mapping)"
        ))),
    }
}

/// `VmHWM` (peak resident memory) of `pid`, in bytes.
pub fn peak_memory(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The shared mappings of the segment (its inode in /dev/shm) in `pid`: start and end
/// addresses, and the offset into the object of the start.
pub fn segment_mappings(pid: i32, inode: u64) -> Result<Vec<(u64, u64, u64)>, Fail> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    let mut mappings = Vec::new();
    for line in maps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() >= 6
            && fields[1].ends_with('s')
            && fields[4].parse() == Ok(inode)
            && fields[5].starts_with("/dev/shm/")
            && let Some((start, end)) = fields[0].split_once('-')
            && let (Ok(start), Ok(end), Ok(offset)) = (
                u64::from_str_radix(start, 16),
                u64::from_str_radix(end, 16),
                u64::from_str_radix(fields[2], 16),
            )
        {
            mappings.push((start, end, offset));
        }
    }
    Ok(mappings)
}

/// Where `len` bytes at `addr` of process `pid` lie against the data area of chunk `chunk`'s
/// slot in the segment (inode `inode`, made for `size`-byte chunks).
enum Placement {
    /// Inside the slot's data area.
    InSlot,
    /// In the segment, at offset `at`, but not inside the data area (`data_start` to
    /// `data_end`) of slot `slot`.
    ElsewhereInSegment {
        at: u64,
        slot: u64,
        data_start: u64,
        data_end: u64,
    },
    /// Outside every mapping of the segment (listed).
    Outside { mappings: String },
}

fn placement(
    pid: i32,
    inode: u64,
    size: usize,
    chunk: u64,
    addr: u64,
    len: u64,
) -> Result<Placement, Fail> {
    let slot = chunk % SLOTS;
    let slot_size = expected_slot_size(size) as u64;
    let data_start = SEGMENT_HEADER + slot * slot_size + CHUNK_HEADER;
    let data_end = SEGMENT_HEADER + (slot + 1) * slot_size;
    let mappings = segment_mappings(pid, inode)?;
    let inside = mappings
        .iter()
        .find(|(start, end, _)| addr >= *start && addr + len <= *end)
        .map(|(start, _, offset)| addr - start + offset);
    Ok(match inside {
        Some(at) if at >= data_start && at + len <= data_end => Placement::InSlot,
        Some(at) => Placement::ElsewhereInSegment {
            at,
            slot,
            data_start,
            data_end,
        },
        None => Placement::Outside {
            mappings: mappings
                .iter()
                .map(|(start, end, _)| format!("{start:#x}-{end:#x}"))
                .collect::<Vec<_>>()
                .join(", "),
        },
    })
}

/// That the sender, held in its data source before the data of chunk `chunk`, gave the data
/// source the data area of that chunk's slot (`into`, `room` bytes, from its `holding`): the
/// data source reads straight into the segment, with no buffer of the sender's own between.
pub fn expect_reads_into_slot(
    pid: i32,
    inode: u64,
    size: usize,
    chunk: u64,
    into: u64,
    room: u64,
) -> Result<(), Fail> {
    match placement(pid, inode, size, chunk, into, room)? {
        Placement::InSlot => Ok(()),
        Placement::ElsewhereInSegment {
            at,
            slot,
            data_start,
            data_end,
        } => Err(Fail::failed(format!(
            "the sender's data source was asked to fill {room} bytes at offset {at} of the \
             segment (address {into:#x}) for chunk {chunk}, whose data goes in slot {slot}, at \
             offsets {data_start} to {data_end}: chunk k goes in slot k % 2, its data right \
             after its 32-byte header"
        ))),
        Placement::Outside { mappings } => Err(Fail::failed(format!(
            "the sender's data source was asked to fill {room} bytes at {into:#x}, outside the \
             sender's mapping of the segment ({mappings}), for chunk {chunk}: the sender gives \
             its data source memory of its own, not the slot. The data source must read \
             straight into the slot (a slice of the segment), with no copy in between"
        ))),
    }
}

/// That the receiver, held in its writer before the write of chunk `chunk`, gave the writer the
/// data of that chunk's slot (`from`, `len` bytes, from its `holding`): the writer gets the slot
/// itself, with no copy of the receiver's own in between.
pub fn expect_writes_from_slot(
    pid: i32,
    inode: u64,
    size: usize,
    chunk: u64,
    from: u64,
    len: u64,
) -> Result<(), Fail> {
    match placement(pid, inode, size, chunk, from, len)? {
        Placement::InSlot => Ok(()),
        Placement::ElsewhereInSegment {
            at,
            slot,
            data_start,
            data_end,
        } => Err(Fail::failed(format!(
            "the receiver's writer was given {len} bytes at offset {at} of the segment (address \
             {from:#x}) for chunk {chunk}, whose data lies in slot {slot}, at offsets \
             {data_start} to {data_end}: chunk k lies in slot k % 2, its data right after its \
             32-byte header"
        ))),
        Placement::Outside { mappings } => Err(Fail::failed(format!(
            "the receiver's writer was given {len} bytes at {from:#x} for chunk {chunk}, outside \
             the receiver's mapping of the segment ({mappings}): the receiver copies each chunk \
             out of the slot into memory of its own and hands the writer that copy. The writer \
             must get the slot itself (a slice of the segment), with no copy in between"
        ))),
    }
}
