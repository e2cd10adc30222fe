//! The life of the objects: created as the API says (mode 0600, semaphores at 0, queues of one
//! `SIGNAL_SIZE` message, a shared anonymous slot), unlinked once both sides hold them (and only
//! they), posted with `sem_post()`, released by `close()`. The steps of `close()` are watched in
//! `closing.rs`, the error paths of `create()` and `unlink()` in `error_paths.rs`, what the
//! creating calls ask for in `creating_calls.rs`.

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use super::handover::{Launch, report_failure};
use super::planted::{PLANTED_VALUE, Planted};
use super::{RECORD_SIZE, SIGNAL_SIZE};
use super::{after_unlink, closing, creating_calls, probe};
use crate::engine::audit::{message_queue_exists, message_queue_mode};
use crate::engine::tracer::{Breakpoint, Call, Tracer};
use crate::engine::{Fail, Proc, Run};

/// Characters outside the portable file name set (`[A-Za-z0-9._-]`) that `sem_open()` and
/// `mq_open()` accept in a name: everything but a `/` after the first and NUL.
pub(super) const UNUSUAL_CHARACTERS: &str = " :+~@é";

/// A name of the check for `role` that ends in [`UNUSUAL_CHARACTERS`].
fn unusual_name(run: &mut Run, role: &str) -> String {
    format!("{}{UNUSUAL_CHARACTERS}", run.ipc_name(role))
}

/// How soon a producer let go before a record calls `sem_post()` for its ready: at once, a
/// loaded machine allowing.
const POST_SEEN_WITHIN: Duration = Duration::from_millis(1000);

/// Whether the side stopped at the breakpoint of `tracer` (the C library's `sem_post()`)
/// reaches it within `POST_SEEN_WITHIN` (and before it exits); `true` where the breakpoint
/// could not be set.
fn posts_through_sem_post(mut tracer: Tracer) -> Result<bool, Fail> {
    let until = Instant::now() + POST_SEEN_WITHIN;
    loop {
        match tracer.next_break(until)? {
            Some(Breakpoint::At(_) | Breakpoint::Unavailable) => return Ok(true),
            Some(Breakpoint::Armed) => {}
            // Exited: it had to post ready for its record first.
            Some(Breakpoint::Lost) => return Ok(false),
            None if Instant::now() >= until => return Ok(false),
            None => {}
        }
    }
}

/// What the parent still holds of the handoff: the slot, a named semaphore's mapping, a queue
/// descriptor of `names`.
pub(super) fn held_by(pid: i32, names: &[String; 2]) -> Vec<String> {
    let mut held = Vec::new();
    for mapping in probe::mappings(pid) {
        if mapping.shared_anonymous() && mapping.len() >= RECORD_SIZE {
            held.push("the slot (a shared anonymous mapping)".to_string());
        } else if mapping.named_semaphore() {
            held.push(format!("a named semaphore ({})", mapping.path));
        }
    }
    for name in names {
        for fd in probe::queue_descriptors(pid, name) {
            held.push(format!("the queue {name} (descriptor {fd})"));
        }
    }
    held
}

/// What the mode 600 written in decimal (0o1130) gives, less a umask: the sticky bit, or only
/// bits of 0o130.
pub(super) fn decimal_600(mode: u32) -> bool {
    let low = mode & 0o777;
    mode & 0o1000 != 0 || (low != 0 && low & !0o130 == 0)
}

pub(super) const DECIMAL_600: &str = "what the decimal 600 gives: 0o1130, less the umask; in Rust, a mode \
                           written 0600 as in C is decimal, write 0o600";

/// Checks, at the parent's `created`, that the objects are what the API says.
fn inspect_created(
    run: &Run,
    proc: &Proc,
    mechanism: &str,
    names: &[String; 2],
) -> Result<(), Fail> {
    let parent = proc.pid.as_raw();
    let maps = probe::mappings(parent);
    if !maps
        .iter()
        .any(|m| m.shared_anonymous() && m.len() >= RECORD_SIZE)
    {
        // A shared mapping of a file in its place is named: that is the slot made another way.
        let instead = maps
            .iter()
            .find(|m| m.shared() && !m.named_semaphore() && m.len() >= RECORD_SIZE)
            .map(|m| {
                format!(
                    " (it had a shared mapping of {} instead)",
                    probe::mapped(&m.path)
                )
            })
            .unwrap_or_default();
        return Err(Fail::failed(format!(
            "once Handoff::create() returned, the parent had no shared anonymous mapping large \
             enough for a record{instead}: make the slot with mmap_anonymous(MAP_SHARED), one \
             Record long"
        )));
    }
    let removed = |name: &str| {
        Fail::failed(format!(
            "once Handoff::create() returned, the parent held {name}, but its name was already \
             gone: remove the names only in Handoff::unlink(), once both sides hold the objects"
        ))
    };
    for name in names {
        if mechanism == "semaphores" {
            let Some(value) = probe::semaphore_value(name) else {
                if maps.iter().filter(|m| m.named_semaphore()).count() >= 2 {
                    return Err(removed(name));
                }
                return Err(Fail::failed(format!(
                    "once Handoff::create() returned, there was no named semaphore {name} (no \
                     file {}): create the signals with sem_open(name, O_CREAT | O_EXCL, 0600, 0)",
                    probe::semaphore_file(name)
                )));
            };
            if value != 0 {
                return Err(Fail::failed(format!(
                    "the semaphore {name} started at {value}: create it at 0 (the last argument \
                     of sem_open), so that a wait blocks until the other side posts"
                )));
            }
        } else {
            let Some(attributes) = probe::queue_attributes(name) else {
                if !probe::queue_descriptors(parent, name).is_empty() {
                    return Err(removed(name));
                }
                return Err(Fail::failed(format!(
                    "once Handoff::create() returned, there was no message queue {name}: create \
                     the signals with mq_open(name, O_CREAT | O_EXCL | O_RDWR, 0600, attributes)"
                )));
            };
            if attributes.max_messages != 1 || attributes.message_size != SIGNAL_SIZE as i64 {
                let messages = match attributes.max_messages {
                    1 => "one message".to_string(),
                    n => format!("{n} messages"),
                };
                return Err(Fail::failed(format!(
                    "the queue {name} has room for {messages} of {} bytes: a signal queue holds \
                     one message (mq_maxmsg 1) of SIGNAL_SIZE ({SIGNAL_SIZE}) bytes (mq_msgsize)",
                    attributes.message_size
                )));
            }
            if attributes.messages != 0 {
                return Err(Fail::failed(format!(
                    "the queue {name} held {} messages before anything was posted: create it \
                     empty",
                    attributes.messages
                )));
            }
            if probe::queue_descriptors(parent, name).is_empty() {
                return Err(Fail::failed(format!(
                    "once Handoff::create() returned, the parent did not hold the queue {name} \
                     open: keep the descriptors mq_open() returns in the Handoff"
                )));
            }
            // Read here too: without the mqueue file system mounted, the audit sees no queue.
            if let Some(mode) = message_queue_mode(name.trim_start_matches('/'))
                && mode != 0o600
            {
                let decimal = if decimal_600(mode) {
                    format!(" ({DECIMAL_600})")
                } else {
                    String::new()
                };
                return Err(Fail::failed(format!(
                    "the message queue {name} has mode {mode:o}{decimal}: create every IPC \
                     object with mode 0600 (S_IRUSR | S_IWUSR), read and write for its owner only"
                )));
            }
        }
    }
    // A mode written 0600 as in C is the decimal 600 in Rust (0o1130): said as such.
    if mechanism == "semaphores" {
        for name in names {
            let Ok(meta) = std::fs::metadata(probe::semaphore_file(name)) else {
                continue;
            };
            let mode = meta.mode() & 0o7777;
            if mode != 0o600 && decimal_600(mode) {
                return Err(Fail::failed(format!(
                    "named semaphore {name} has mode {:o} ({DECIMAL_600}): create every IPC \
                     object with mode 0600 (S_IRUSR | S_IWUSR), read and write for its owner \
                     only",
                    mode & 0o777
                )));
            }
        }
    }
    // The rubric's check of permissions: every object the check saw, as it was created.
    run.expect_owner_only()
}

pub fn objects_created(run: &mut Run) -> Result<String, Fail> {
    for mechanism in ["semaphores", "queues"] {
        let names = [run.ipc_name("ready"), run.ipc_name("ok")];
        let mut launch = Launch::new(run, mechanism, names, 10, &["--pause-after-create"])?;
        launch.created()?;
        let created = format!("once Handoff::create() returned ({mechanism})");
        super::process_left::signals_as_main_set(launch.proc.pid.as_raw(), &created, true)?;
        inspect_created(run, &launch.proc, mechanism, &launch.names)?;
        launch.proc.send("go", &[])?;
        launch.run_through(&format!("10 rounds with {mechanism}"))?;
    }
    let asked = [
        creating_calls::created_by_sem_open(run)?,
        creating_calls::mode_asked(run, "semaphores")?,
        creating_calls::mode_asked(run, "queues")?,
        creating_calls::slot_length_asked(run)?,
        creating_calls::created_at_zero(run)?,
    ];
    Ok(format!(
        "the slot was a shared anonymous mapping; the semaphores started at 0, the queues held \
         one message of SIGNAL_SIZE bytes; every object had mode 0600; {}",
        asked.join("; ")
    ))
}

pub fn names_unlinked(run: &mut Run) -> Result<String, Fail> {
    // First: a program that removes objects not its own is told so before anything else.
    super::others_kept::others_kept(run)?;
    for mechanism in ["semaphores", "queues"] {
        // Objects of the other kind under the same names, the grader's: the names of
        // semaphores and of queues are apart, and unlink() removes only its own kind.
        let names = [unusual_name(run, "ready"), unusual_name(run, "ok")];
        let (other_kind, others) = match mechanism {
            "semaphores" => ("queues", "a queue"),
            _ => ("semaphores", "a semaphore"),
        };
        let strangers = names
            .iter()
            .map(|name| Planted::with_value(other_kind, name, PLANTED_VALUE))
            .collect::<Result<Vec<_>, _>>()?;
        // Held before record 50, so that the grader's objects below are there before close().
        let extra = ["--pause-producer-at", "50"];
        let mut handover = Launch::new(run, mechanism, names, 100, &extra)?.ready()?;
        after_unlink::whole_after_unlink(handover.proc.pid.as_raw(), &handover.names, mechanism)?;
        for name in &handover.names {
            let exists = match mechanism {
                "semaphores" => std::path::Path::new(&probe::semaphore_file(name)).exists(),
                _ => message_queue_exists(name),
            };
            if exists {
                return Err(Fail::failed(format!(
                    "{name} still exists once both sides hold it: unlink the names \
                     (sem_unlink / mq_unlink) in Handoff::unlink(); the processes that have \
                     them open go on using them, and no crash can leave them behind"
                )));
            }
        }
        if mechanism == "semaphores"
            && !probe::mappings(handover.producer)
                .iter()
                .any(probe::Mapping::named_semaphore)
        {
            // glibc maps a named semaphore from a file /dev/shm/sem.* (created under a
            // temporary name, then linked to the real one).
            return Err(Fail::failed(
                "the producer maps no /dev/shm/sem.* file: use named semaphores, \
                 sem_open(name, O_CREAT | O_EXCL, 0600, 0)",
            ));
        }
        let removed: Vec<String> = handover
            .names
            .iter()
            .zip(&strangers)
            .filter_map(|(name, other)| other.changed().map(|change| format!("{name} {change}")))
            .collect();
        if !removed.is_empty() {
            return Err(Fail::failed(format!(
                "before the program ran, the grader made {others} of its own under each name \
                 (its own kind of object, whose names are apart from those of {mechanism}), and \
                 by the time both sides held the handoff, {}: Handoff::unlink() (or create()) \
                 removed an object of the other kind, which was not the program's. Remove only \
                 the names create() made, with sem_unlink() or mq_unlink() by the mechanism",
                removed.join(", ")
            )));
        }
        drop(strangers);
        // Once unlinked, the names belong to nobody: another handoff may take them. The grader
        // does, with objects of its own, while the producer is held, which the parent's close()
        // must leave alone.
        let owner = run.program_user();
        let names = handover.names.clone();
        let producer = handover.producer;
        let mut planted = Vec::new();
        let mut posted = None;
        let reports = handover.collect(|proc, _| {
            for name in &names {
                planted.push(Planted::with_value(mechanism, name, PLANTED_VALUE)?);
                if mechanism == "semaphores"
                    && let Some((uid, gid)) = owner
                {
                    // The program's user's, so that a program run as that user could remove it.
                    std::os::unix::fs::chown(probe::semaphore_file(name), Some(uid), Some(gid))?;
                }
            }
            if mechanism != "semaphores" {
                return proc.send("go", &[]);
            }
            let tracer = Tracer::break_at_function(producer, c"sem_post")?;
            proc.send("go", &[])?;
            posted = tracer.map(posts_through_sem_post).transpose()?;
            Ok(())
        })?;
        if posted == Some(false) {
            return Err(Fail::failed(format!(
                "the grader let the producer go on from record 50 with a breakpoint at the entry \
                 of the C library's sem_post(), and it did not call it (in {}, or before it \
                 ended), though it had ready to post for that record: post() makes the \
                 post itself, on the C library's private sem_t layout (its value, its count of \
                 waiters, the futex wake), which that library may change. A post on a semaphore \
                 is sem_post(sem)",
                super::waits::millis(POST_SEEN_WITHIN)
            )));
        }
        // The parent has reaped both sides and closed the handoff: it waits for `exit`.
        let changed: Vec<String> = handover
            .names
            .iter()
            .zip(&planted)
            .filter_map(|(name, plant)| plant.changed().map(|change| format!("{name} {change}")))
            .collect();
        if !changed.is_empty() {
            let what = if mechanism == "semaphores" {
                "semaphores"
            } else {
                "queues"
            };
            return Err(Fail::failed(format!(
                "once both names were unlinked, the grader made {what} of its own under the same \
                 names (a name unlinked belongs to nobody: another handoff may create it), and by \
                 the time the parent had closed the handoff, {}: the program removed objects \
                 that were not its own. Remove the names only in Handoff::unlink(), once; \
                 close() closes both signals and unmaps the slot, and unlinks nothing",
                changed.join(", ")
            )));
        }
        let held = held_by(handover.proc.pid.as_raw(), &handover.names);
        if !held.is_empty() {
            return Err(Fail::failed(format!(
                "after Handoff::close() the parent still held {} ({mechanism}): close() must \
                 sem_close() or mq_close() both signals and munmap() the slot",
                held.join(", ")
            )));
        }
        handover.exit()?;
        after_unlink::left_alone_after_exit(&handover.names, &planted, mechanism)?;
        drop(planted);
        handover.verify(&reports, &format!("100 rounds with {mechanism}"))?;
    }
    let steps = [
        unlinked_by_api(run, "semaphores")?,
        unlinked_by_api(run, "queues")?,
        closing::closed_by_sem_close(run)?,
        closing::close_goes_on(run, "semaphores", false)?,
        closing::close_goes_on(run, "semaphores", true)?,
        closing::close_goes_on(run, "queues", false)?,
        closing::close_both_fail(run, "semaphores")?,
        closing::close_both_fail(run, "queues")?,
    ];
    Ok(format!(
        "named semaphores and queues were unlinked once both sides held them, and released by \
         close(); {}",
        steps.join("; ")
    ))
}

/// The parent's `unlink()` watched from `created` (the library loaded) until it says `ready`:
/// with semaphores a hardware breakpoint at the C library's `sem_unlink()`, with queues a stop
/// at each `mq_unlink` system call (glibc's `mq_unlink()` is that call alone, given the name
/// without its slash); it must be made for both names. The names are files of `/dev/shm` or of
/// a mounted mqueue file system only in one system's way of keeping them: removing those files
/// leaves the names gone, but not the same program where they are kept another way.
fn unlinked_by_api(run: &mut Run, mechanism: &'static str) -> Result<String, Fail> {
    let queues = mechanism == "queues";
    let api = if queues { "mq_unlink" } else { "sem_unlink" };
    let names = [run.ipc_name("ready"), run.ipc_name("ok")];
    let mut launch = Launch::new(run, mechanism, names, 10, &["--pause-after-create"])?;
    launch.created()?;
    let pid = launch.proc.pid.as_raw();
    let armed = if queues {
        Tracer::break_at_functions_and_call(pid, &[], Call::any(libc::SYS_mq_unlink))?
    } else {
        Tracer::break_at_function(pid, c"sem_unlink")?
    };
    let until = Instant::now() + Duration::from_secs(5);
    launch.proc.send("go", &[])?;
    let Some(mut tracer) = armed else {
        launch.run_through(&format!("10 rounds with {mechanism}"))?;
        return Ok(format!("{api}() not watched (no breakpoint)"));
    };
    let mut unlinked = Vec::new();
    let said = loop {
        match tracer.next_break(Instant::now() + Duration::from_millis(2))? {
            Some(Breakpoint::At([name, _])) => {
                let name = probe::peek(pid, name, 300)
                    .map(|bytes| {
                        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
                        String::from_utf8_lossy(&bytes[..end]).into_owned()
                    })
                    .unwrap_or_default();
                unlinked.push(format!("/{}", name.trim_start_matches('/')));
                tracer.go_on();
            }
            Some(Breakpoint::Armed) | None => {}
            Some(Breakpoint::Lost | Breakpoint::Unavailable) => break None,
        }
        if let Some(message) = launch.proc.recv_before(Instant::now())? {
            break Some(message);
        }
        if Instant::now() >= until {
            break None;
        }
    };
    drop(tracer);
    let Some(said) = said else {
        return Err(Fail::failed(format!(
            "the program said nothing within 5 s of `go` ({mechanism})"
        )));
    };
    if said.kind == "failed" {
        return Err(report_failure(&said, mechanism));
    }
    let gone = launch.names.iter().all(|name| !probe::name_exists(name));
    let missing: Vec<&String> = launch
        .names
        .iter()
        .filter(|name| !unlinked.iter().any(|u| u == *name))
        .collect();
    if said.kind == "ready" && gone && !missing.is_empty() {
        let missing = missing
            .iter()
            .map(|n| n.as_str())
            .collect::<Vec<_>>()
            .join(" and ");
        let (watched, files, kept) = if queues {
            (
                "stopped the parent at each mq_unlink system call (the C library's mq_unlink() \
                 is that call alone)",
                "the files NAME of a mounted mqueue file system",
                "A mount found in the process's table may be another IPC namespace's, and where \
                 none is mounted the queue stays. Remove a queue's name with mq_unlink(name)",
            )
        } else {
            (
                "set a breakpoint at the C library's sem_unlink() in the parent",
                "the files /dev/shm/sem.NAME",
                "That is where glibc happens to keep a named semaphore, not a rule: on another C \
                 library or system the name would stay, or another file go. Remove a \
                 semaphore's name with sem_unlink(name)",
            )
        };
        return Err(Fail::failed(format!(
            "the grader {watched}: Handoff::unlink() never called {api}() for {missing}, yet \
             both names were gone when the parent said ready: it removed them another way \
             ({files}). {kept}"
        )));
    }
    launch.proc.put_back(said);
    launch.run_through(&format!("10 rounds with {mechanism}, {api}() watched"))?;
    Ok(format!(
        "unlink() called {api}() for {}",
        unlinked.join(" and ")
    ))
}
