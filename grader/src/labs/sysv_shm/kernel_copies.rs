//! The system calls by which the kernel moves bytes for a program, looked for between its
//! `shmat()` and the next step of `main.rs`: after setup, the record goes into the segment by
//! the publisher's own stores and comes out by the reader's own loads, never copied by a call
//! (`process_vm_writev()`, a `pwrite()` to `/proc/self/mem`, a `read()` into the mapping).

use std::time::Instant;

use crate::engine::tracer::{Call, Step, Tracer};
use crate::engine::{Fail, inspect};

/// The calls that move bytes between memory and a file, a pipe or another place of memory, or
/// open a file to do so.
const MOVING_BYTES: [i64; 20] = [
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_read,
    libc::SYS_pread64,
    libc::SYS_readv,
    libc::SYS_preadv,
    libc::SYS_preadv2,
    libc::SYS_write,
    libc::SYS_pwrite64,
    libc::SYS_writev,
    libc::SYS_pwritev,
    libc::SYS_pwritev2,
    libc::SYS_sendfile,
    libc::SYS_splice,
    libc::SYS_vmsplice,
    libc::SYS_tee,
    libc::SYS_copy_file_range,
    libc::SYS_open,
    libc::SYS_openat,
    libc::SYS_openat2,
];

/// [`MOVING_BYTES`] and `next`, the call `main.rs` makes next.
const fn and_then(next: i64) -> [i64; 21] {
    let mut calls = [next; 21];
    let mut i = 0;
    while i < MOVING_BYTES.len() {
        calls[i] = MOVING_BYTES[i];
        i += 1;
    }
    calls
}

/// The publisher: its `ready` (a `sendto()`) follows the record's writing.
static UNTIL_READY: [i64; 21] = and_then(libc::SYS_sendto);

/// The reader: its `shmdt()` follows the record's reading.
static UNTIL_DETACH: [i64; 21] = and_then(libc::SYS_shmdt);

/// What [`copy_made`] says of a reader held at a call of [`MOVING_BYTES`] with no segment
/// attached any more, though it never called `shmdt()`: it detached another way.
pub(super) const DETACHED_ANOTHER_WAY: &str = "no shmdt(), the segment no longer attached";

/// The step of a publisher's [`Tracer::in_turn`] that holds it at its first call of
/// [`UNTIL_READY`], after its `shmat()`.
pub(super) fn publisher_step() -> (Call, Step) {
    (Call::one_of(&UNTIL_READY), Step::Hold)
}

/// Traces a reader `pid` (not told `go` yet) to hold it at its first call of [`UNTIL_DETACH`]
/// after its `shmat()` and its `attached`. `None` if the machine does not allow it.
pub(super) fn trace_reader(pid: i32) -> Result<Option<Tracer>, Fail> {
    Tracer::in_turn(
        pid,
        [
            (Call::any(libc::SYS_shmat), Step::Pass),
            (Call::any(libc::SYS_sendto), Step::Pass),
            (Call::one_of(&UNTIL_DETACH), Step::Hold),
        ],
    )
}

/// Waits until `tracer` holds program `pid` at its step of [`publisher_step`] or
/// [`trace_reader`], and lets it go: the call it was held in, if that is one that moves bytes
/// (a write to its standard output or error, which prints, aside), not `main.rs`'s next step.
/// For a reader (`reader`: its watch ends at its `shmdt()`), [`DETACHED_ANOTHER_WAY`] if the
/// segment was gone from its mappings by then.
pub(super) fn copy_made(
    mut tracer: Tracer,
    pid: i32,
    until: Instant,
    reader: bool,
) -> Result<Option<String>, Fail> {
    let (held, attached) = if tracer.held_before(until)? {
        let attached = std::fs::read_to_string(format!("/proc/{pid}/maps"))
            .is_ok_and(|maps| maps.contains("/SYSV"));
        (inspect::call_of(pid, pid), attached)
    } else {
        (None, true)
    };
    tracer.release();
    let Some((number, args)) = held else {
        return Ok(None);
    };
    let printing = matches!(number, libc::SYS_write | libc::SYS_writev) && args[0] <= 2;
    if !MOVING_BYTES.contains(&number) || printing {
        return Ok(None);
    }
    if reader && !attached {
        return Ok(Some(DETACHED_ANOTHER_WAY.to_string()));
    }
    let fd = args[0] as i32;
    let target = || {
        std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
            .map(|t| format!(" (descriptor {fd}: {})", t.display()))
            .unwrap_or_else(|_| format!(" (descriptor {fd})"))
    };
    Ok(Some(match number {
        libc::SYS_process_vm_readv | libc::SYS_process_vm_writev => {
            let whose = if args[0] == pid as u64 {
                "its own memory".to_string()
            } else {
                format!("process {}", args[0])
            };
            format!("{} on {whose}", name_of(number))
        }
        libc::SYS_open | libc::SYS_openat | libc::SYS_openat2 => {
            format!("{} of a file", name_of(number))
        }
        _ => format!("{}{}", name_of(number), target()),
    }))
}

/// The name of a call of [`MOVING_BYTES`].
fn name_of(number: i64) -> &'static str {
    match number {
        libc::SYS_process_vm_readv => "process_vm_readv()",
        libc::SYS_process_vm_writev => "process_vm_writev()",
        libc::SYS_read => "read()",
        libc::SYS_pread64 => "pread()",
        libc::SYS_readv | libc::SYS_preadv | libc::SYS_preadv2 => "readv()/preadv()",
        libc::SYS_write => "write()",
        libc::SYS_pwrite64 => "pwrite()",
        libc::SYS_writev | libc::SYS_pwritev | libc::SYS_pwritev2 => "writev()/pwritev()",
        libc::SYS_sendfile => "sendfile()",
        libc::SYS_splice | libc::SYS_vmsplice | libc::SYS_tee => "splice()/vmsplice()/tee()",
        libc::SYS_copy_file_range => "copy_file_range()",
        _ => "open()/openat()",
    }
}
