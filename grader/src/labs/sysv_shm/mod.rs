//! Checks of lab 4, SysV shared memory: a publisher leaves a record in a segment named by
//! `ftok(path, id)`; a reader, started as a separate run of the program, finds it, validates it,
//! copies it out and removes it when asked.
//!
//! What a segment is (key, size, mode, attachments) the grader reads from `/proc/sysvipc/shm`,
//! how a process maps it from `/proc/PID/maps`, and what it holds by attaching it itself, never
//! from the program. The protocol is in [`protocol`]; the checks are grouped by what they judge:
//! the publisher ([`publisher`], its stores watched in [`watched_stores`], and their order in
//! [`magic_last`]), publisher and readers together ([`sharing`]), the reader ([`reader`], and
//! records changed under it in [`watched_reads`]), the calls that would copy the record for
//! either ([`kernel_copies`]), the error paths ([`errors`], the size limit in [`size_limit`]),
//! and failing system calls ([`call_failures`], the calls made to fail in [`injected`]).
//! Two tools make timings and failures happen: a tracer ([`crate::engine::tracer`]), which also
//! watches the program's loads and stores in its segment with hardware watchpoints, and an IPC
//! namespace of the check's own ([`private_ipc`]).

use std::time::Duration;

use crate::engine::diagnose::{Activity, Hang};
use crate::engine::{Check, Lab};

mod big_record;
mod bystanders;
mod call_failures;
mod changed_at_magic;
mod errors;
mod failed_after_shmget;
mod first_errno;
mod injected;
mod kernel_copies;
mod lifelong_mode;
mod magic_last;
mod mode_at_removal;
mod older_publication;
mod open_files;
mod private_ipc;
mod protocol;
mod publisher;
mod reader;
mod republished;
mod second_create_limit;
mod segments;
mod sharing;
mod shmmax_closed;
mod size_limit;
mod taken_key;
mod watched_reads;
mod watched_stores;
mod written_again;

/// The record layout the lab prescribes: magic, sequence, length, payload.
const MAGIC: u32 = u32::from_le_bytes(*b"IPCR");
const HEADER_LEN: usize = 16;

pub static LAB: Lab = Lab {
    number: 4,
    slug: "sysv-shm",
    title: "SysV shared memory: a record left in a segment found by ftok()",
    cleanup_points: 2,
    explain_hang,
    checks: &[
        Check {
            name: "segment-key-and-size",
            points: 3,
            timeout: Duration::from_secs(10),
            description: "the publisher's segment has key ftok(path, id), of the file at the path \
                          now, computed by ftok() itself, and the requested size (read from \
                          /proc/sysvipc/shm)",
            exclusive: false,
            hint: Some(
                "The key is ftok(P, N), computed every time from the file as it is, and the segment exactly S bytes. See docs/labs/04-sysv-shm.md, \"The idea\" and the rules table (the key and size rules).",
            ),
            run: publisher::segment_key_and_size,
        },
        Check {
            name: "owner-only-permissions",
            points: 2,
            timeout: Duration::from_secs(10),
            description: "the segment is created with mode 0600, as its shmget() returns and \
                          at ready, and keeps it after the publisher's exit and a read",
            exclusive: false,
            hint: Some(
                "Create the segment with mode 0600. See docs/labs/04-sysv-shm.md, the rules table (\"mode 0600\").",
            ),
            run: publisher::owner_only_permissions,
        },
        Check {
            name: "attached-together",
            points: 2,
            timeout: Duration::from_secs(10),
            description: "publisher and reader are attached at the same time (nattch 2, the \
                          reader read-only), the reader reads the record, and the publisher's \
                          detach drops nattch to 0",
            exclusive: false,
            hint: Some(
                "The publisher stays attached until go, then shmdt()s while still running; the reader attaches read-only (SHM_RDONLY). See docs/labs/04-sysv-shm.md, the rules table (the attach rules).",
            ),
            run: sharing::attached_together,
        },
        Check {
            name: "record-in-segment",
            points: 3,
            timeout: Duration::from_secs(10),
            description: "the grader attaches the publisher's segment itself and finds the \
                          record in it, with a payload that fills it to the last byte, written \
                          there by the publisher's own stores and nowhere else",
            exclusive: false,
            hint: Some(
                "The record (magic, sequence, length, payload) goes into the segment at the handout's offsets, and nowhere else. See docs/labs/04-sysv-shm.md, the rules table (\"the record layout\").",
            ),
            run: publisher::record_in_segment,
        },
        Check {
            name: "written-again",
            points: 1,
            timeout: Duration::from_secs(10),
            description: "a record written twice more into its segment, from a buffer of the \
                          program's own and then the same buffer refilled in place (the same \
                          address and length, four bytes changed), holds each time the payload of \
                          that write_record()",
            exclusive: false,
            hint: Some(
                "write_record() copies the payload it is given at every call and keeps no state from one call to the next. See docs/labs/04-sysv-shm.md, the rules table (\"every write copies its payload\").",
            ),
            run: written_again::written_again,
        },
        Check {
            name: "killed-mid-write",
            points: 3,
            timeout: Duration::from_secs(10),
            description: "the magic is written last: watched, the publisher stores it after the \
                          payload, the length and the sequence, and nothing after it, and killed \
                          while it copies the payload it leaves no magic in its segment",
            exclusive: false,
            hint: Some(
                "The magic is written last, once the payload, the length and the sequence are in place. See docs/labs/04-sysv-shm.md, the rules table (\"the magic is written last\").",
            ),
            run: magic_last::killed_mid_write,
        },
        Check {
            name: "reader-reads-segment",
            points: 3,
            timeout: Duration::from_secs(10),
            description: "the reader copies out records the grader planted itself: one that \
                          fills its segment, an empty one in a 16-byte segment, and one \
                          republished between two reads of one attachment; it loads the \
                          payload from its mapping itself, one of over 8 MiB too",
            exclusive: false,
            hint: Some(
                "The reader copies the payload out of the segment each time it runs. See docs/labs/04-sysv-shm.md, the rules table (the reader rules).",
            ),
            run: reader::reader_reads_segment,
        },
        Check {
            name: "outlives-publisher",
            points: 3,
            timeout: Duration::from_secs(10),
            description: "after the publisher exited, two readers in turn read the record byte \
                          for byte, the first reader twice; before every read but the first, the \
                          grader rewrote the payload under the same header",
            exclusive: false,
            hint: Some(
                "A segment is not tied to a process: it outlives its publisher until someone removes it. See docs/labs/04-sysv-shm.md, \"The idea\" (\"Segments are not tied to any process\").",
            ),
            run: sharing::outlives_publisher,
        },
        Check {
            name: "removal",
            points: 2,
            timeout: Duration::from_secs(10),
            description: "after `read --remove` the segment is gone, and no other: a finished \
                          publication of another key is left alone; still held, it keeps its \
                          mode 0600 until its last detach",
            exclusive: false,
            hint: Some(
                "read --remove removes the segment with IPC_RMID. See docs/labs/04-sysv-shm.md, the rules table (\"read --remove removes\").",
            ),
            run: sharing::removal,
        },
        Check {
            name: "stale-segment-refused",
            points: 3,
            timeout: Duration::from_secs(10),
            description: "a segment with the same key, left by a crashed run (its creator \
                          exited) or appearing just as the publisher calls shmget(), is \
                          reported (kind=exists) and left untouched, never written over, a blank \
                          one too, after a single shmget(), and one holding an older \
                          publication's record, with no other call on it after EEXIST",
            exclusive: false,
            hint: Some(
                "Create with IPC_CREAT | IPC_EXCL: an existing segment is Exists, never written over nor removed. See docs/labs/04-sysv-shm.md, the rules table (the IPC_EXCL rule).",
            ),
            run: errors::stale_segment_refused,
        },
        Check {
            name: "reader-validates",
            points: 3,
            timeout: Duration::from_secs(10),
            description: "the reader rejects random bytes (bad-magic, whatever their length \
                          field), a length one byte past the end or wrapping around, a segment \
                          smaller than a header (bad-length), and a missing segment (not-found), \
                          loads no field before the magic or with it, copies the length it \
                          checked, and \
                          never waits for a magic it did not find",
            exclusive: false,
            hint: Some(
                "The reader checks the header, then the magic, then the length (without overflow), and loads the length and sequence after the magic. See docs/labs/04-sysv-shm.md, the rules table (the reader validation rules).",
            ),
            run: reader::reader_validates,
        },
        Check {
            name: "bad-input",
            points: 3,
            timeout: Duration::from_secs(10),
            description: "a missing path, ids 0, 256, 257 and above (0 even with a missing \
                          path; the reader's too), size 0, a payload one byte too big, a segment smaller than a \
                          header, and a segment too big to attach are typed errors that leave no \
                          segment; id 255 with an empty payload in 16 bytes works",
            exclusive: false,
            hint: Some(
                "Refuse bad arguments with their kind (Ftok, BadId, ZeroSize, NoRoom) and leave nothing behind. See docs/labs/04-sysv-shm.md, the rules table (the argument rules).",
            ),
            run: errors::bad_input,
        },
        Check {
            name: "size-limit",
            points: 2,
            timeout: Duration::from_secs(10),
            description: "a size of exactly shmmax is allowed and shmmax + 1 is too-large (even \
                          with the key taken), with shmmax as /proc/sys/kernel/shmmax says now, at \
                          every call (lowered in a private IPC namespace when the grader runs as \
                          root, again between two creates of one process, and \
                          shmall below it, which bounds no single segment; then 20 digits long)",
            exclusive: false,
            hint: Some(
                "TooLarge only above shmmax, read in bytes when creating. See docs/labs/04-sysv-shm.md, the rules table (the TooLarge rule).",
            ),
            run: size_limit::size_limit,
        },
        Check {
            name: "system-call-failures",
            points: 3,
            timeout: Duration::from_secs(10),
            description: "a failing system call (shmget, shmctl, shmat, shmdt, the open of \
                          shmmax) is reported with its own kind, never as not-found, exists or \
                          too-large, whatever its errno (size 0 is judged before the limit), and a reader whose open failed holds nothing \
                          attached; a publisher whose clean-up after no-room or shmat fails \
                          still reports that first error, with its errno; shmmax is closed when \
                          its read fails, and after a read that went well; a process's second \
                          create reports a failure to read shmmax too, and a create that fails \
                          after its shmget() leaves no segment",
            exclusive: false,
            hint: Some(
                "Each failing system call has its own error kind. See docs/labs/04-sysv-shm.md, the rules table (\"each failing call has its kind\").",
            ),
            run: call_failures::system_call_failures,
        },
    ],
};

fn explain_hang(hang: &Hang) -> Option<String> {
    let opening = [libc::SYS_open, libc::SYS_openat, libc::SYS_openat2];
    let stuck = hang.processes.iter().find(|p| {
        p.activities
            .iter()
            .any(|a| matches!(a, Activity::Syscall(n) if opening.contains(n)))
            && fifo_path_given(p.view.pid)
    })?;
    Some(format!(
        "{} is blocked in an open(), and its --path is a FIFO, which an open() waits on until \
         a writer comes (nothing else the program opens here can wait); ftok() needs the path \
         to exist, nothing more (it only looks it up): never open the path, hand ftok() its \
         own bytes",
        stuck.role
    ))
}

/// Whether process `pid` was given a FIFO as its `--path`.
fn fifo_path_given(pid: i32) -> bool {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::FileTypeExt;
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let mut args = cmdline.split(|&b| b == 0);
    args.by_ref().any(|a| a == b"--path");
    args.next()
        .and_then(|path| std::fs::metadata(std::ffi::OsStr::from_bytes(path)).ok())
        .is_some_and(|m| m.file_type().is_fifo())
}
