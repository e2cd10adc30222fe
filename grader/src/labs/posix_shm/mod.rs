//! Checks of lab 5, POSIX shared memory: a table in `/dev/shm` that one run of the program
//! creates and other, independent runs open; all map it and read and write it in place.
//!
//! `posix-shm open --name N [--create --size S]` says `mapped` (with `len`) once the table is
//! mapped, then does what each `cmd` message says (`op=write|read|unlink|close`) and answers
//! `done`, or `failed` with `kind=` (the error variant); after `close` it waits for `exit`. What
//! the object is (mode, size, bytes) the grader reads from `/dev/shm`; how each process holds it
//! from `/proc/PID/maps`, `fd`, `mem` and `io`.
//!
//! - `driver`: starting the program, its commands and answers;
//! - `probes`: what the grader reads from outside, and the objects it plants at a name;
//! - `explain`: why a read did not return what was written;
//! - `object`: mode and exact size;
//! - `sharing`: the mapping, shared, before and after close and unlink;
//! - `unlinked`: the name removed while mapped; unlink and open ask the C library each time;
//! - `killed`: the name outlives a creator killed by a signal;
//! - `panicked`: the name outlives processes ended by a panic that unwinds;
//! - `lazy_pages`: a large table is not faulted in at map time;
//! - `resized_open`: an opener's size is the one it mapped, whatever the object becomes;
//! - `many_accesses`: no flush in a long run of accesses;
//! - `in_place`: the bytes in the object, copied by the program's own instructions;
//! - `own_range`: a write stores its own bytes only, none around them;
//! - `names`: bad names refused, unusual good ones accepted;
//! - `errors`: every other error kind;
//! - `open_errors`: opens that fail, and what they leave;
//! - `failed_creates`: creates that fail after `shm_open()`, and what they leave;
//! - `forced`: calls made to fail with an errno no other path gives, the errno compared;
//! - `left_alone`: the umask, another program's object and descriptors that are not the table's;
//! - `by_hand`: the program run without the grader's control channel.

use std::time::Duration;

use crate::engine::diagnose::{Activity, Hang};
use crate::engine::{Check, Lab};

mod by_hand;
mod driver;
mod errors;
mod explain;
mod failed_creates;
mod forced;
mod in_place;
mod killed;
mod lazy_pages;
mod left_alone;
mod many_accesses;
mod names;
mod object;
mod open_errors;
mod own_range;
mod panicked;
mod probes;
mod resized_open;
mod sharing;
mod unlinked;

pub static LAB: Lab = Lab {
    number: 5,
    slug: "posix-shm",
    title: "POSIX shared memory: a table in /dev/shm mapped by independent processes",
    cleanup_points: 2,
    explain_hang,
    checks: &[
        Check {
            name: "owner-only-mode",
            points: 2,
            timeout: Duration::from_secs(10),
            description: "/dev/shm/<name> exists with mode 0600 while the table is in use, \
                          and has it too when the program is run by hand",
            exclusive: false,
            hint: Some(
                "Create the object with mode 0600. See docs/labs/05-posix-shm.md, the rules table (\"mode 0600\").",
            ),
            run: object::owner_only_mode,
        },
        Check {
            name: "odd-sizes",
            points: 3,
            timeout: Duration::from_secs(10),
            description: "tables of 1 and 4097 bytes have exactly that size in /dev/shm, start \
                          zeroed and carry every byte; an opener takes the size from the object, \
                          also after the grader grew it, and reports the size it mapped, also \
                          when the object grows right after",
            exclusive: false,
            hint: Some(
                "ftruncate() to the exact size, and take an opener's size from fstat(). See docs/labs/05-posix-shm.md, the rules table (the size rules).",
            ),
            run: object::odd_sizes,
        },
        Check {
            name: "mapped-by-each",
            points: 4,
            timeout: Duration::from_secs(10),
            description: "the creator and an independent opener both map /dev/shm/<name> \
                          shared, keep no descriptor of it, and unmap it on close, leaving its \
                          addresses free (read from /proc/PID/maps and fd), and the object's \
                          name and bytes in place, also once they died of a signal or a panic",
            exclusive: false,
            hint: Some(
                "Each process maps the object MAP_SHARED, read and write, closes the descriptor once mapped, and close() unmaps. See docs/labs/05-posix-shm.md, the rules table (the mmap and close rules).",
            ),
            run: sharing::mapped_by_each,
        },
        Check {
            name: "shared-updates",
            points: 3,
            timeout: Duration::from_secs(10),
            description: "what one process writes in place, the other reads, both ways, also \
                          over its own earlier bytes and with the writer stopped; a write of any \
                          length stores its own bytes only; no access, of many, flushes; a large \
                          table is mapped lazily",
            exclusive: false,
            hint: Some(
                "Reads and writes go to the mapping itself, so every process sees the others' writes at once. See docs/labs/05-posix-shm.md, the rules table (\"every process sees the others' writes at once\").",
            ),
            run: sharing::shared_updates,
        },
        Check {
            name: "bytes-in-the-object",
            points: 4,
            timeout: Duration::from_secs(10),
            description: "the bytes are in the object itself and go through the mappings: the \
                          grader sees the creator's 128 KiB write in /dev/shm/<name>, the opener \
                          reads the grader's, and neither moves them with a read or write \
                          system call (read from /proc/PID/io): their own instructions copy \
                          them (a hardware watchpoint sees it)",
            exclusive: false,
            hint: Some(
                "read and write copy out of and into the mapping, in place, not through a copy of your own. See docs/labs/05-posix-shm.md, the rules table (the read and write rule).",
            ),
            run: in_place::bytes_in_the_object,
        },
        Check {
            name: "unlinked-but-mapped",
            points: 4,
            timeout: Duration::from_secs(10),
            description: "after shm_unlink the name is gone, cannot be opened or unlinked again \
                          (not-found), and the two processes that map it still share the \
                          memory, even once a new object has the name; another unlink error \
                          is shm-unlink; a symbolic link at the name is unlinked",
            exclusive: false,
            hint: Some(
                "unlink removes the name while the mappings live on; an unlinked name is not-found. See docs/labs/05-posix-shm.md, the rules table (the unlink rules).",
            ),
            run: unlinked::unlinked_but_mapped,
        },
        Check {
            name: "invalid-names",
            points: 3,
            timeout: Duration::from_secs(10),
            description: "names without a leading slash, with two leading slashes or another \
                          slash, empty, or longer than 255 bytes are refused with kind=bad-name \
                          by create and by open, also with size 0; a 255-byte name works, and \
                          so do names of any bytes but '/'",
            exclusive: false,
            hint: Some(
                "A name is `/` then at least one character and no other `/`, at most 255 bytes, checked before shm_open(), by open too. See docs/labs/05-posix-shm.md, the rules table (the name rules).",
            ),
            run: names::invalid_names,
        },
        Check {
            name: "typed-errors",
            points: 3,
            timeout: Duration::from_secs(10),
            description: "size 0 (leaving nothing, also under a taken name), a taken name \
                          (also one taken as the creating shm_open() begins: exists, at once), \
                          and accesses past the end are typed errors (zero-size, exists, \
                          out-of-range) that change nothing; the last byte is the table's",
            exclusive: false,
            hint: Some(
                "Each refusal has its kind (zero-size, exists, OutOfRange) and changes nothing. See docs/labs/05-posix-shm.md, the rules table (the error rules).",
            ),
            run: errors::typed_errors,
        },
        Check {
            name: "open-errors",
            points: 2,
            timeout: Duration::from_secs(10),
            description: "opening a name that does not exist is not-found and creates nothing; \
                          opening a 0-byte object is empty; both at once, without spinning; a \
                          symbolic link in /dev/shm is not followed (shm-open); an object too \
                          big to map is mmap, and stays, and the opener keeps no descriptor; \
                          another program's object keeps its mode; run by hand, the same \
                          answers; descriptors that are not the table's stay open",
            exclusive: false,
            hint: Some(
                "open never creates, follows no link, refuses 0 bytes at once, and never waits. See docs/labs/05-posix-shm.md, the rules table (the open rules).",
            ),
            run: open_errors::open_errors,
        },
        Check {
            name: "failed-create",
            points: 2,
            timeout: Duration::from_secs(10),
            description: "a create whose shm_open(), ftruncate() or mmap() fails, and a close \
                          whose munmap() fails, report that step's kind with the call's errno; \
                          a failed create leaves nothing in /dev/shm, nor a descriptor open, \
                          nor the umask changed",
            exclusive: false,
            hint: Some(
                "A step after shm_open() that fails unlinks the name, closes the descriptor and reports that step's kind. See docs/labs/05-posix-shm.md, the rules table (\"a failed step after shm_open() unlinks the name\").",
            ),
            run: failed_creates::failed_create,
        },
    ],
};

/// Nothing in this lab waits: a process asleep in `nanosleep()` polls for something that will
/// not come.
fn explain_hang(hang: &Hang) -> Option<String> {
    let sleeper = hang
        .processes
        .iter()
        .find(|p| p.activities.contains(&Activity::Sleep))?;
    Some(format!(
        "{} is asleep in nanosleep(), waiting for something to change; nothing in this lab \
         waits: create, open, read, write, close and unlink answer at once",
        sleeper.role
    ))
}
