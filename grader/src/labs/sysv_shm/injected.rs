//! The system calls `call_failures` makes fail, one case each: which program meets the failure
//! and when, the errno, and the kind the program must report.

use crate::engine::tracer::{Call, Match};

/// Which program meets the failure, and when.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Who {
    /// The publisher, before it says `ready`.
    Publisher,
    /// The publisher, after `ready`, when it detaches.
    DetachingPublisher,
    /// A reader, before it says `attached`.
    Reader,
    /// A reader with `--remove`, after it read.
    RemovingReader,
    /// A publisher whose payload is one byte too big for its segment, as it detaches and
    /// removes the segment it made: it must still remove it, and report `no-room`.
    CleaningPublisher,
    /// The publisher, before it says `ready`, whose new segment the grader attaches as its
    /// `shmget()` returns, as a reader that found the key may: the segment is still its own to
    /// remove when it fails.
    SharingPublisher,
    /// A publisher asked for a segment of 0 bytes: it must refuse the size before anything
    /// else, so that the call made to fail, if it makes it at all, changes nothing.
    ZeroSizePublisher,
}

/// One call made to fail, and what the program must report.
pub(super) struct Injected {
    pub(super) who: Who,
    pub(super) call: Call,
    pub(super) errno: i32,
    /// The call, as the messages name it.
    pub(super) what: &'static str,
    /// The same, in a word or two.
    pub(super) short: &'static str,
    pub(super) kind: &'static str,
    /// A wrong kind the check knows the cause of, and that cause.
    pub(super) known: Option<(&'static str, &'static str)>,
    /// Why the program never made the call, if it did not.
    pub(super) not_made: &'static str,
    /// What the tracer does after the call failed.
    pub(super) then: Then,
}

/// What follows the failed call.
#[derive(Clone, Copy)]
pub(super) enum Then {
    /// Nothing: the program goes on untraced.
    Nothing,
    /// The call the program makes to clean up after it is made to fail too (with this errno):
    /// the first error must still be the one reported. The call, as the messages name it.
    Fail(Call, i32, &'static str),
    /// The program is held as it exits: a reader whose open failed must hold no segment
    /// attached.
    HoldAtExit,
}

/// What a publisher that fails to write says when a call of its clean-up fails too.
const FIRST_ERROR: &str = "the error that made publish() fail (no room for the record) is the \
                           one to report; a failure of the clean-up after it must neither \
                           replace it nor stop the clean-up";

/// A `shmget()` with `IPC_CREAT` (`creating`), or without it.
pub(super) fn shmget_creating(creating: bool) -> Match {
    Match::Bits {
        arg: 2,
        mask: libc::IPC_CREAT as u64,
        value: if creating { libc::IPC_CREAT as u64 } else { 0 },
    }
}

pub(super) fn injected() -> [Injected; 23] {
    let shmctl = |command: i32| Match::Bits {
        arg: 1,
        mask: 0xff,
        value: command as u64,
    };
    [
        Injected {
            who: Who::Publisher,
            call: Call {
                number: libc::SYS_openat,
                matching: Match::Path("/proc/sys/kernel/shmmax"),
            },
            errno: libc::EACCES,
            what: "the publisher's open of /proc/sys/kernel/shmmax",
            short: "open of shmmax",
            kind: "limit",
            known: None,
            not_made: "the publisher never opened /proc/sys/kernel/shmmax: read the limit from \
                       it (max_segment_size()) each time a segment is created",
            then: Then::Nothing,
        },
        // Size 0 is refused first: the limit is not even needed, and a failure to read it
        // must not hide the zero size.
        Injected {
            who: Who::ZeroSizePublisher,
            call: Call {
                number: libc::SYS_openat,
                matching: Match::Path("/proc/sys/kernel/shmmax"),
            },
            errno: libc::EACCES,
            what: "the open of /proc/sys/kernel/shmmax by a publisher asked for size 0",
            short: "open of shmmax (size 0)",
            kind: "zero-size",
            known: Some((
                "limit",
                "it read the limit before it checked the size, and the failure to read it hid \
                 the zero size; check the size first: 0 is ShmError::ZeroSize, without reading \
                 shmmax (only a size above 0 is compared with it)",
            )),
            not_made: "",
            then: Then::Nothing,
        },
        Injected {
            who: Who::Publisher,
            call: Call {
                number: libc::SYS_shmget,
                matching: shmget_creating(true),
            },
            errno: libc::ENOSPC,
            what: "the publisher's shmget(key, size, IPC_CREAT | ...) (no segment has the key)",
            short: "shmget (create)",
            kind: "shmget",
            known: Some((
                "exists",
                "only EEXIST means that a segment has the key; any other shmget() error is \
                 ShmError::Get (kind=shmget)",
            )),
            not_made: "the publisher never called shmget() with IPC_CREAT on its main thread",
            then: Then::Nothing,
        },
        // EACCES too: "permission denied", not "a segment has the key" (there is none).
        Injected {
            who: Who::Publisher,
            call: Call {
                number: libc::SYS_shmget,
                matching: shmget_creating(true),
            },
            errno: libc::EACCES,
            what: "the publisher's shmget(key, size, IPC_CREAT | ...) (no segment has the key)",
            short: "shmget (create)",
            kind: "shmget",
            known: Some((
                "exists",
                "only EEXIST means that a segment has the key (and there was none); EACCES and \
                 any other shmget() error is ShmError::Get (kind=shmget)",
            )),
            not_made: "the publisher never called shmget() with IPC_CREAT on its main thread",
            then: Then::Nothing,
        },
        // EINVAL too: the kernel's answer to a size it will not make (shmmax lowered between
        // the read of the limit and the call, or more than a segment may be), which only the
        // kernel judges: the lab's TooLarge is the comparison with shmmax, before shmget().
        Injected {
            who: Who::Publisher,
            call: Call {
                number: libc::SYS_shmget,
                matching: shmget_creating(true),
            },
            errno: libc::EINVAL,
            what: "the publisher's shmget(key, size, IPC_CREAT | ...) (as for a size the kernel \
                   will not make: shmmax lowered after the publisher read it)",
            short: "shmget (create)",
            kind: "shmget",
            known: Some((
                "too-large",
                "its size was within shmmax as max_segment_size() read it, so the failure is \
                 shmget()'s own: it takes shmget()'s EINVAL for TooLarge; TooLarge is only the \
                 comparison with shmmax before shmget(), and every shmget() error but EEXIST \
                 (EINVAL included) is ShmError::Get (kind=shmget)",
            )),
            not_made: "the publisher never called shmget() with IPC_CREAT on its main thread",
            then: Then::Nothing,
        },
        // shmat() fails after shmget() made the segment, and so does the removal of its
        // clean-up: the error to report is still shmat()'s.
        Injected {
            who: Who::Publisher,
            call: Call::any(libc::SYS_shmat),
            errno: libc::ENOMEM,
            what: "the publisher's shmat() (as for a segment larger than its address space)",
            short: "shmat, then shmctl(IPC_RMID)",
            kind: "shmat",
            known: Some((
                "shmctl",
                "the error that made create() fail (shmat) is the one to report; a failure of \
                 the clean-up after it (the removal of the new segment) must not replace it",
            )),
            not_made: "the publisher never called shmat() on its main thread",
            then: Then::Fail(
                Call {
                    number: libc::SYS_shmctl,
                    matching: shmctl(libc::IPC_RMID),
                },
                libc::EPERM,
                "the shmctl(IPC_RMID) of its clean-up",
            ),
        },
        Injected {
            who: Who::DetachingPublisher,
            call: Call::any(libc::SYS_shmdt),
            errno: libc::EINVAL,
            what: "the publisher's shmdt()",
            short: "shmdt",
            kind: "shmdt",
            known: None,
            not_made: "the publisher never called shmdt() when told to detach: detach() must \
                       call it",
            then: Then::Nothing,
        },
        Injected {
            who: Who::Reader,
            call: Call {
                number: libc::SYS_shmget,
                matching: shmget_creating(false),
            },
            errno: libc::EACCES,
            what: "the reader's shmget(key, 0, 0) (the segment is there)",
            short: "shmget (find)",
            kind: "shmget",
            known: Some((
                "not-found",
                "shmget() failed with EACCES, not ENOENT; only ENOENT (no segment has the key) \
                 is NotFound, any other error is ShmError::Get (kind=shmget)",
            )),
            not_made: "the reader never called shmget(key, 0, 0) on its main thread: find the \
                       segment with it (not by a look elsewhere, /proc/sysvipc/shm say), so that \
                       its errors reach the reader",
            then: Then::HoldAtExit,
        },
        // EIDRM ("being removed") is no ENOENT either: the segment was there.
        Injected {
            who: Who::Reader,
            call: Call {
                number: libc::SYS_shmget,
                matching: shmget_creating(false),
            },
            errno: libc::EIDRM,
            what: "the reader's shmget(key, 0, 0) (as for a segment being removed)",
            short: "shmget (find)",
            kind: "shmget",
            known: Some((
                "not-found",
                "shmget() failed with EIDRM, not ENOENT; only ENOENT (no segment has the key) \
                 is NotFound, any other error is ShmError::Get (kind=shmget)",
            )),
            not_made: "the reader never called shmget(key, 0, 0) on its main thread: find the \
                       segment with it (not by a look elsewhere, /proc/sysvipc/shm say), so that \
                       its errors reach the reader",
            then: Then::HoldAtExit,
        },
        // EINVAL (a segment has the key, smaller than the size asked for) is no ENOENT either.
        Injected {
            who: Who::Reader,
            call: Call {
                number: libc::SYS_shmget,
                matching: shmget_creating(false),
            },
            errno: libc::EINVAL,
            what: "the reader's shmget(key, 0, 0) (as for a segment smaller than the size asked \
                   for)",
            short: "shmget (find)",
            kind: "shmget",
            known: Some((
                "not-found",
                "shmget() failed with EINVAL, not ENOENT: a segment has the key (EINVAL from a \
                 find says it is smaller than the size asked for); only ENOENT (no segment has \
                 the key) is NotFound, any other error is ShmError::Get (kind=shmget)",
            )),
            not_made: "the reader never called shmget(key, 0, 0) on its main thread: find the \
                       segment with it (not by a look elsewhere, /proc/sysvipc/shm say), so that \
                       its errors reach the reader",
            then: Then::HoldAtExit,
        },
        Injected {
            who: Who::Reader,
            call: Call {
                number: libc::SYS_shmctl,
                matching: shmctl(libc::IPC_STAT),
            },
            errno: libc::EACCES,
            what: "the reader's shmctl(IPC_STAT) (as for a reader the segment's mode does not \
                   allow)",
            short: "shmctl(IPC_STAT)",
            kind: "shmctl",
            known: Some((
                "not-found",
                "shmget() had found the segment; a failing shmctl() is ShmError::Control \
                 (kind=shmctl)",
            )),
            not_made: "the reader never called shmctl(IPC_STAT): take the segment's size from \
                       it",
            then: Then::HoldAtExit,
        },
        Injected {
            who: Who::Reader,
            call: Call::any(libc::SYS_shmat),
            errno: libc::EACCES,
            what: "the reader's shmat() (as for a reader the segment's mode does not allow)",
            short: "shmat",
            kind: "shmat",
            known: Some((
                "not-found",
                "shmget() had found the segment; a failing shmat() is ShmError::Attach \
                 (kind=shmat)",
            )),
            not_made: "the reader never called shmat() on its main thread",
            then: Then::HoldAtExit,
        },
        Injected {
            who: Who::RemovingReader,
            call: Call {
                number: libc::SYS_shmctl,
                matching: shmctl(libc::IPC_RMID),
            },
            errno: libc::EPERM,
            what: "the reader's shmctl(IPC_RMID) (as for a reader that neither owns nor created \
                   the segment)",
            short: "shmctl(IPC_RMID)",
            kind: "shmctl",
            known: None,
            not_made: "the reader with --remove never called shmctl(IPC_RMID): remove() must \
                       call it",
            then: Then::Nothing,
        },
        // The errors that look like "already removed" are failures all the same.
        Injected {
            who: Who::RemovingReader,
            call: Call {
                number: libc::SYS_shmctl,
                matching: shmctl(libc::IPC_RMID),
            },
            errno: libc::EINVAL,
            what: "the reader's shmctl(IPC_RMID) (as for an id that is no longer valid)",
            short: "shmctl(IPC_RMID)",
            kind: "shmctl",
            known: None,
            not_made: "the reader with --remove never called shmctl(IPC_RMID): remove() must \
                       call it",
            then: Then::Nothing,
        },
        Injected {
            who: Who::RemovingReader,
            call: Call {
                number: libc::SYS_shmctl,
                matching: shmctl(libc::IPC_RMID),
            },
            errno: libc::EIDRM,
            what: "the reader's shmctl(IPC_RMID) (as for a segment removed meanwhile)",
            short: "shmctl(IPC_RMID)",
            kind: "shmctl",
            known: None,
            not_made: "the reader with --remove never called shmctl(IPC_RMID): remove() must \
                       call it",
            then: Then::Nothing,
        },
        Injected {
            who: Who::CleaningPublisher,
            call: Call::any(libc::SYS_shmdt),
            errno: libc::EINVAL,
            what: "the shmdt() of a publisher cleaning up after a payload one byte too big for \
                   its segment (kind=no-room)",
            short: "shmdt after no-room",
            kind: "no-room",
            known: Some(("shmdt", FIRST_ERROR)),
            not_made: "the publisher never called shmdt() once writing had failed: detach the \
                       segment, then remove it",
            then: Then::Nothing,
        },
        Injected {
            who: Who::CleaningPublisher,
            call: Call {
                number: libc::SYS_shmctl,
                matching: shmctl(libc::IPC_RMID),
            },
            errno: libc::EPERM,
            what: "the shmctl(IPC_RMID) of a publisher cleaning up after a payload one byte too \
                   big for its segment (kind=no-room)",
            short: "shmctl(IPC_RMID) after no-room",
            kind: "no-room",
            known: Some(("shmctl", FIRST_ERROR)),
            not_made: "the publisher never called shmctl(IPC_RMID) once writing had failed: \
                       remove the segment it made",
            then: Then::Nothing,
        },
        // Last, so that each call above is judged first with the errno it met before. ENOMEM
        // is the kernel out of memory for the segment's bookkeeping, not a size past shmmax.
        Injected {
            who: Who::Publisher,
            call: Call {
                number: libc::SYS_shmget,
                matching: shmget_creating(true),
            },
            errno: libc::ENOMEM,
            what: "the publisher's shmget(key, size, IPC_CREAT | ...) (as for a kernel out of \
                   memory)",
            short: "shmget (create)",
            kind: "shmget",
            known: Some((
                "too-large",
                "its size was within shmmax as max_segment_size() read it, so the failure is \
                 shmget()'s own: it takes shmget()'s ENOMEM for TooLarge; TooLarge is only the \
                 comparison with shmmax before shmget(), and every shmget() error but EEXIST \
                 is ShmError::Get (kind=shmget)",
            )),
            not_made: "the publisher never called shmget() with IPC_CREAT on its main thread",
            then: Then::Nothing,
        },
        // shmat() alone fails, with the grader attached to the new segment: the removal of
        // the new segment succeeds whatever nattch is, and its key is gone (judged however much
        // memory the machine has, unlike bad-input's huge segment). EIDRM: the segment is no
        // segment that had the key before shmget() made it.
        Injected {
            who: Who::SharingPublisher,
            call: Call::any(libc::SYS_shmat),
            errno: libc::EIDRM,
            what: "the publisher's shmat() (as for a segment removed as it attaches; its clean-up's \
                   removal left to succeed, the grader attached to the new segment since its \
                   shmget() returned, as a reader that found the key may be)",
            short: "shmat (alone)",
            kind: "shmat",
            known: Some((
                "exists",
                "its shmget(IPC_CREAT | IPC_EXCL) had succeeded: no other segment had the key, \
                 and only that EEXIST is ShmError::Exists; a shmat() that fails, whatever its \
                 errno, is ShmError::Attach (kind=shmat)",
            )),
            not_made: "the publisher never called shmat() on its main thread",
            then: Then::Nothing,
        },
        // A segment removed between the reader's shmget() and its next call: its id is gone,
        // which is no ENOENT of shmget().
        Injected {
            who: Who::Reader,
            call: Call {
                number: libc::SYS_shmctl,
                matching: shmctl(libc::IPC_STAT),
            },
            errno: libc::EIDRM,
            what: "the reader's shmctl(IPC_STAT) (as for a segment removed after its shmget())",
            short: "shmctl(IPC_STAT)",
            kind: "shmctl",
            known: Some((
                "not-found",
                "shmget() had found the segment, and a segment removed since is no ENOENT of \
                 shmget(); a failing shmctl() is ShmError::Control (kind=shmctl), whatever its \
                 errno",
            )),
            not_made: "the reader never called shmctl(IPC_STAT): take the segment's size from \
                       it",
            then: Then::HoldAtExit,
        },
        Injected {
            who: Who::Reader,
            call: Call::any(libc::SYS_shmat),
            errno: libc::EIDRM,
            what: "the reader's shmat() (as for a segment removed after its shmget())",
            short: "shmat",
            kind: "shmat",
            known: Some((
                "not-found",
                "shmget() had found the segment, and a segment removed since is no ENOENT of \
                 shmget(); a failing shmat() is ShmError::Attach (kind=shmat), whatever its \
                 errno",
            )),
            not_made: "the reader never called shmat() on its main thread",
            then: Then::HoldAtExit,
        },
        // The same with EINVAL, what the kernel says of an id that names no segment any more:
        // the errno a program might take for "gone", and report as not-found.
        Injected {
            who: Who::Reader,
            call: Call {
                number: libc::SYS_shmctl,
                matching: shmctl(libc::IPC_STAT),
            },
            errno: libc::EINVAL,
            what: "the reader's shmctl(IPC_STAT) (as for an id that names no segment any more)",
            short: "shmctl(IPC_STAT)",
            kind: "shmctl",
            known: Some((
                "not-found",
                "shmget() had found the segment; only shmget()'s ENOENT is NotFound, and a \
                 failing shmctl() is ShmError::Control (kind=shmctl) with its errno, EINVAL \
                 included",
            )),
            not_made: "the reader never called shmctl(IPC_STAT): take the segment's size from \
                       it",
            then: Then::Nothing,
        },
        Injected {
            who: Who::Reader,
            call: Call::any(libc::SYS_shmat),
            errno: libc::EINVAL,
            what: "the reader's shmat() (as for an id that names no segment any more)",
            short: "shmat",
            kind: "shmat",
            known: Some((
                "not-found",
                "shmget() had found the segment; only shmget()'s ENOENT is NotFound, and a \
                 failing shmat() is ShmError::Attach (kind=shmat) with its errno, EINVAL \
                 included",
            )),
            not_made: "the reader never called shmat() on its main thread",
            then: Then::Nothing,
        },
    ]
}
