//! Names: what `mq_open` is given, what is refused before it, and a name that is taken.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::mqueue::{MQ_OFlag, MqAttr, MqdT, mq_close, mq_getattr, mq_open, mq_send, mq_unlink};
use nix::sys::stat::{Mode, fstat};
use nix::unistd::{Gid, Uid, fchown};
use rand::RngExt;

use super::protocol::{
    Consumer, MAX_NAME_LEN, failed_errno, failed_with, field, grader_send, release, said,
    spawn_consumer, spawn_consumer_stopped, spawn_consumer_stopped_with, spawn_producer,
    spawn_producer_stopped,
};
use crate::engine::audit::message_queue_exists;
use crate::engine::force;
use crate::engine::tracer::{Action, Call, Reached, Tracer};
use crate::engine::{Fail, Run};

/// A handed-out name (audited like any other) with exactly `len` bytes after its slash, made of
/// two-byte characters ('é') as far as they go when `wide`.
fn name_of_length(run: &mut Run, len: usize, wide: bool) -> String {
    // Handed-out names are "/", the check's prefix, "-" and what was asked for.
    let prefix = run.ipc_name("x").len() - "/-x".len();
    let room = len - prefix - 1;
    let what = if wide {
        "é".repeat(room / 2) + &"x".repeat(room % 2)
    } else {
        "x".repeat(room)
    };
    let name = run.ipc_name(&what);
    debug_assert_eq!(name.len(), len + 1);
    name
}

/// A program started stopped (a consumer or a producer of one name), its first answer, and
/// whether it called `mq_open()` before it (the grader holds it there and lets it go on; false
/// where the grader may not trace it). A tracer still waiting for the call comes back too: drop
/// it once the program has ended, which ends it at once (released before, it would be given
/// time to see a call that never comes).
pub(super) type Watched = (
    crate::engine::Proc,
    ipc_labs_driver::Message,
    bool,
    Option<Tracer>,
);

pub(super) fn watched_at_mq_open(mut proc: crate::engine::Proc) -> Result<Watched, Fail> {
    let pid = proc.pid.as_raw();
    let tracer = Tracer::attach(pid, Call::any(libc::SYS_mq_open), Action::Hold)?;
    force::resume(pid)?;
    let Some(mut tracer) = tracer else {
        let answer = proc.recv_any()?;
        return Ok((proc, answer, false, None));
    };
    match tracer.wait(&mut proc, Instant::now() + Duration::from_secs(5))? {
        Reached::Call => {
            tracer.release();
            let answer = proc.recv_any()?;
            Ok((proc, answer, true, None))
        }
        Reached::Passed(Some(answer)) => Ok((proc, answer, false, Some(tracer))),
        Reached::Passed(None) => {
            let answer = proc.recv_any()?;
            Ok((proc, answer, false, Some(tracer)))
        }
    }
}

/// Whether a consumer, then a producer, given `name` say `bad-name` before any `mq_open()`.
/// `too_long`: the name is one byte longer than NAME_MAX; a program that lets it through is
/// then given longer names, to tell where its own limit is.
fn expect_bad_name(run: &mut Run, name: &str, what: &str, too_long: bool) -> Result<(), Fail> {
    for consumer in [true, false] {
        let (doing, who) = if consumer {
            ("creating a queue", "the consumer")
        } else {
            ("a producer opening a queue", "the producer")
        };
        let started = if consumer {
            spawn_consumer_stopped(run, name)
        } else {
            spawn_producer_stopped(run, name)
        };
        let watched = started.and_then(watched_at_mq_open);
        let (mut proc, answer, reached, tracer) = match watched {
            Err(Fail::Crashed(crash)) => {
                let hint = if crash.contains("char boundary") {
                    ": it cut the name inside a multi-byte character; look at its first \
                     character with strip_prefix('/') or the bytes, not by slicing at byte 1"
                } else {
                    ""
                };
                return Err(Fail::failed(format!(
                    "{doing} named with {what} ({name:.40}), {who} crashed ({crash}) instead \
                     of saying `failed` with kind=bad-name{hint}"
                )));
            }
            other => other?,
        };
        if failed_with(&answer, "bad-name") && reached {
            release(&mut proc)?;
            return Err(Fail::failed(format!(
                "{doing} named with {what} ({name:.40}), {who} said kind=bad-name, but only \
                 after it had called mq_open() with that name (the grader saw the call): check \
                 the name before mq_open(); the kernel's errors for a bad name (EINVAL, EACCES, \
                 ENOENT, ENAMETOOLONG) also mean other things"
            )));
        }
        if failed_with(&answer, "bad-name") {
            release(&mut proc)?;
            drop(tracer);
            continue;
        }
        let hint = if what.contains("characters") && failed_errno(&answer, "ENAMETOOLONG") {
            "NAME_MAX counts bytes, not characters: compare the name's length in bytes \
             (str::len), not chars().count(), with 255"
        } else if too_long && let Some(edge) = length_edge(run, consumer)? {
            release(&mut proc)?;
            let more = edge - MAX_NAME_LEN - 1;
            return Err(Fail::failed(format!(
                "{doing} named with {what} ({name:.40}), {who} said {}, not `failed` with \
                 kind=bad-name; with {edge} bytes after the slash it did say kind=bad-name: it \
                 checks the length, but lets names of up to {} bytes through, {more} more than \
                 NAME_MAX. NAME_MAX (255) counts the bytes after the slash only, neither the \
                 slash nor a terminating NUL: refuse more than 255 before mq_open()",
                said(&answer),
                edge - 1
            )));
        } else if what.contains("at the end") {
            "a name is not a path: a slash at the end is a second slash like any other, not \
             one to forgive or strip (the kernel refuses the name, so the queue could never be \
             created); refuse a '/' anywhere after the first byte"
        } else if what.contains("space") {
            "a name is used as given: a space is a byte like any other, and a name that does \
             not start with '/' is bad-name; do not trim the name before checking or using it"
        } else if what.contains("right after the first") {
            "a name has one leading slash and no other, a second one right after it included: \
             strip the first slash only (strip_prefix('/')), not every leading one \
             (trim_start_matches), before looking for another"
        } else if !consumer {
            "open() checks the name before mq_open() too (check_name), as create() does"
        } else {
            "check the name before mq_open()"
        };
        let called = if reached {
            " after calling mq_open() with that name (the grader saw the call)"
        } else {
            ""
        };
        return Err(Fail::failed(format!(
            "{doing} named with {what} ({name:.40}), {who} said {}{called}, not `failed` with \
             kind=bad-name before any mq_open(): {hint}",
            said(&answer)
        )));
    }
    Ok(())
}

/// The shortest length after the slash, from 257 to 260 bytes, that the consumer (or a producer)
/// refuses as `bad-name`, if any.
fn length_edge(run: &mut Run, consumer: bool) -> Result<Option<usize>, Fail> {
    for len in MAX_NAME_LEN + 2..=MAX_NAME_LEN + 5 {
        let name = name_of_length(run, len, false);
        let (mut proc, answer) = if consumer {
            let (proc, answer, _) = spawn_consumer(run, &name, &[], None)?;
            (proc, answer)
        } else {
            let (proc, answer, _) = spawn_producer(run, &name, &[], false, false, "the producer")?;
            (proc, answer)
        };
        release(&mut proc)?;
        if failed_with(&answer, "bad-name") {
            return Ok(Some(len));
        }
    }
    Ok(None)
}

pub fn name_errors(run: &mut Run) -> Result<String, Fail> {
    // Built from handed-out names, so that whatever a lax program creates is audited.
    let plain = run.ipc_name("noslash");
    let nested = run.ipc_name("dir");
    let spaced = run.ipc_name("spaced");
    let wide = name_of_length(run, MAX_NAME_LEN + 1, true);
    let wide_chars = wide.chars().count() - 1;
    let too_long = name_of_length(run, MAX_NAME_LEN + 1, false);
    let cases = [
        (
            plain.trim_start_matches('/').to_string(),
            "no leading slash".to_string(),
        ),
        (
            format!("é{}", plain.trim_start_matches('/')),
            "no leading slash, a two-byte character ('é') first".to_string(),
        ),
        (
            format!(" {spaced}"),
            "a space before the slash (no leading slash)".to_string(),
        ),
        (format!("{nested}/jobs"), "a second slash".into()),
        (
            format!("/{nested}"),
            "a second slash right after the first".into(),
        ),
        (
            format!("{plain}/"),
            "a second slash at the end (as a directory's path may have)".into(),
        ),
        (format!("{plain}//"), "two slashes at the end".into()),
        ("/".to_string(), "nothing after the slash".into()),
        ("//".to_string(), "a slash alone after the slash".into()),
        (String::new(), "an empty name (0 bytes)".into()),
        (
            too_long.clone(),
            "256 bytes after the slash, one more than NAME_MAX".into(),
        ),
        (
            wide,
            format!("256 bytes after the slash in {wide_chars} characters ('é' takes two bytes)"),
        ),
    ];
    for (name, what) in &cases {
        expect_bad_name(run, name, what, *name == too_long)?;
    }
    let missing = run.ipc_name("missing");
    let (mut proc, answer, _) = spawn_producer(run, &missing, &[], false, false, "the producer")?;
    if !failed_with(&answer, "not-found") {
        let created = if message_queue_exists(&missing) {
            format!(", and {missing} now exists: open() created the queue (O_CREAT)")
        } else {
            String::new()
        };
        return Err(Fail::failed(format!(
            "opening a queue that does not exist, the producer said {}, not `failed` with \
             kind=not-found{created}: open without O_CREAT and map ENOENT to \
             QueueError::NotFound",
            said(&answer)
        )));
    }
    release(&mut proc)?;
    appeared_after_not_found(run)?;
    // The longest valid name works, in multi-byte characters too.
    for wide in [false, true] {
        let longest = name_of_length(run, MAX_NAME_LEN, wide);
        let (proc, answer, output) = spawn_consumer(run, &longest, &[], None)?;
        if answer.kind != "ready" {
            let hint = if !failed_with(&answer, "bad-name") {
                "that name is valid"
            } else if wide {
                "a name may hold any byte but '/', in any character ('é' here): refuse only a \
                 longer name or one with a second '/'"
            } else {
                "that name is valid, refuse only a longer one"
            };
            return Err(Fail::failed(format!(
                "creating a queue whose name has 255 bytes after the slash (NAME_MAX, the \
                 longest allowed; {} characters), the consumer said {}: {hint}",
                longest.chars().count() - 1,
                said(&answer)
            )));
        }
        let mut consumer = Consumer::ready(proc, &longest, &answer, output);
        consumer.send_shutdown()?;
        consumer.serve()?;
    }
    existing_name(run, 0, false)?;
    existing_name(run, 1, false)?;
    spaces_kept(run)?;
    super::open_errors::open_refused(run)?;
    super::open_errors::create_refused(run)?;
    created_while_creating(run)?;
    existing_name(run, 1, true)?;
    super::dot_names::dot_names_reach_the_kernel(run)?;
    super::dot_names_errno::dot_names_errno_is_the_kernels(run)?;
    super::existing_unheld::existing_queue_nobody_holds(run)?;
    Ok(
        "bad names were bad-name (256 bytes after the slash too, in multi-byte characters too), \
        a 255-byte name worked, a missing queue was not-found, an existing one exists and was \
        left as it was"
            .into(),
    )
}

/// A consumer asked to create a queue that exists (the grader's, with other attributes, empty
/// and then with a message in it) must refuse with kind=exists and leave that queue alone: an
/// empty queue is no more a leftover to replace than a full one. When `locked`, the consumer's
/// every `mq_open()` without `O_CREAT` (a look-up) is made to fail with `EACCES`, as for a queue
/// of another user: a name taken by a queue it may not open is still `exists`.
fn existing_name(run: &mut Run, held: i64, locked: bool) -> Result<(), Fail> {
    let name = run.ipc_name(if held == 0 { "empty" } else { "taken" });
    let (queue, capacity, msg_size) = take_name(run, &name, held)?;
    // The consumer asks for the very attributes of the grader's queue: a queue that looks like
    // the one it would create, messages in it, is still not its own.
    let asked = super::protocol::sized(capacity as u64, msg_size as u64);
    let whose = match (held, locked) {
        (0, _) => "the grader's own queue, empty",
        (_, false) => "the grader's own queue, with a message in it",
        (_, true) => {
            "the grader's own queue, with a message in it, which the consumer may not open: its \
             mq_open() without O_CREAT made to fail with EACCES, as for a queue of another user"
        }
    };
    let outcome = (|| {
        let mut proc = spawn_consumer_stopped_with(run, &name, &asked)?;
        let pid = proc.pid.as_raw();
        let lookup = Call::bits(libc::SYS_mq_open, 1, libc::O_CREAT as u64, 0);
        let tracer = match locked {
            true => Tracer::attach(pid, lookup, Action::Fail(libc::EACCES))?,
            false => None,
        };
        force::resume(pid)?;
        let answer = proc.recv_any()?;
        let looked_up = match tracer {
            Some(mut tracer) => tracer.failed_the_call()?,
            None => false,
        };
        if looked_up && !failed_with(&answer, "exists") {
            release(&mut proc)?;
            return Err(Fail::failed(format!(
                "creating a queue whose name exists ({whose}), the consumer first opened the \
                 name without O_CREAT (a look-up), and with that mq_open() failed it said {}, \
                 not `failed` with kind=exists: a name taken by a queue it may not open is still \
                 taken. Do not look the name up: create with one mq_open(O_CREAT | O_EXCL) and \
                 map its EEXIST, and only that, to QueueError::Exists",
                said(&answer)
            )));
        }
        if !failed_with(&answer, "exists") {
            let same = if answer.kind == "ready" {
                same_queue(&queue, &name)
            } else {
                None
            };
            let reports = (field(&answer, "capacity"), field(&answer, "msg_size"));
            let hint = match same {
                Some(true) if reports == (capacity as u64, msg_size as u64) => format!(
                    ": the queue under the name is still the grader's (the same inode), and it \
                     reports its {capacity} messages of {msg_size} bytes, so it opened that \
                     queue instead of creating its own (a queue with the attributes asked for, \
                     {held} message(s) in it, is still not its own to take over or serve)"
                ),
                Some(false) => format!(
                    ": the queue now under the name is another than the grader's (another inode; \
                     it reports {} messages of {} bytes, not the existing queue's {capacity} of \
                     {msg_size}), so it removed that queue (mq_unlink) and created its own; a \
                     queue under the name is never another program's to remove, empty or not",
                    reports.0, reports.1
                ),
                _ => String::new(),
            };
            return Err(Fail::failed(format!(
                "creating a queue whose name exists ({whose}), the consumer said {}, not \
                 `failed` with kind=exists{hint}: create with O_CREAT | O_EXCL and map EEXIST \
                 to QueueError::Exists",
                said(&answer)
            )));
        }
        release(&mut proc)?;
        let left = mq_getattr(&queue).map(|a| a.curmsgs()).unwrap_or(0);
        if same_queue(&queue, &name) != Some(true) || left != held {
            return Err(Fail::failed(format!(
                "after it failed with kind=exists, the consumer had removed or emptied the queue \
                 it did not create ({whose}: {}): a consumer that cannot create its queue leaves \
                 the existing one alone (no mq_unlink, no receive)",
                match same_queue(&queue, &name) {
                    Some(true) => format!("{left} of its {held} message(s) left"),
                    Some(false) => "another queue is under its name".to_string(),
                    None => "its name is gone".to_string(),
                }
            )));
        }
        Ok(())
    })();
    let _ = mq_close(queue);
    let _ = mq_unlink(name.as_str());
    outcome
}

/// Valid names are used as given: one that ends with a space (`/name `), one with control
/// characters (tab, newline, escape, DEL, and U+0085, a two-byte one) in it, and one whose bytes
/// after the slash are all spaces and tabs: a slash, then bytes none of which is a slash. The
/// consumer creates exactly that queue, not the name trimmed, and refuses none of them.
fn spaces_kept(run: &mut Run) -> Result<(), Fail> {
    let cases = [
        ("trailing", " ", "with a space at its end"),
        (
            "controls",
            "\t\n\x1b\x7f\u{85}",
            "with control characters in it (tab, newline, ESC, DEL, U+0085)",
        ),
        ("", "", "of spaces and tabs alone after its slash"),
    ];
    for (what, suffix, described) in cases {
        let (bare, name) = if what.is_empty() {
            // Trimmed, nothing is left of it: the bare name is the empty one, never a queue.
            (String::new(), run.blank_ipc_name("b"))
        } else {
            let bare = run.ipc_name(what);
            let name = format!("{bare}{suffix}");
            (bare, name)
        };
        let (proc, answer, output) = spawn_consumer(run, &name, &[], None)?;
        let exact = message_queue_exists(&name);
        let trimmed = !bare.is_empty() && message_queue_exists(&bare);
        if answer.kind == "ready" && exact && !trimmed {
            let mut consumer = Consumer::ready(proc, &name, &answer, output);
            consumer.send_shutdown()?;
            consumer.serve()?;
            continue;
        }
        let mut proc = proc;
        if trimmed {
            let _ = grader_send(&bare, &[super::protocol::shutdown_message()]);
            let _ = proc.send("go", &[]);
            let _ = proc.recv_any();
            let _ = mq_unlink(bare.as_str());
        }
        release(&mut proc)?;
        let found = if trimmed {
            format!("{bare:.40} (the name without them) exists instead: it trims the name")
        } else if exact {
            "the queue exists under the exact name".to_string()
        } else if failed_with(&answer, "bad-name") {
            "check_name() refuses only what the rules say (no leading slash, nothing after it, \
             another '/', more than 255 bytes): every other byte is allowed, control \
             characters too, and blanks alone after the slash are not an empty name (a \
             trim() before the emptiness test refuses them)"
                .to_string()
        } else {
            "no queue of that name exists".to_string()
        };
        return Err(Fail::failed(format!(
            "creating a queue named {name:?}, {described} (valid: a slash, then bytes none of \
             which is a slash), the consumer said {}; {found}. A name is used as given: do not \
             trim or filter it before checking or using it",
            said(&answer)
        )));
    }
    Ok(())
}

/// Whether the queue under `name` is `queue` (the same inode); `None` if no queue has the name.
fn same_queue(queue: &MqdT, name: &str) -> Option<bool> {
    let mine = fstat(queue.as_fd()).ok()?;
    let named = super::observe::open_to_look(name)?;
    let theirs = fstat(named.as_fd()).ok();
    let _ = mq_close(named);
    Some(theirs?.st_ino == mine.st_ino)
}

/// The grader's own queue under `name`, as another program of the user would create it: 3
/// messages of a random size, `held` messages in it. Returns it with its capacity and message
/// size.
pub(super) fn take_name(run: &mut Run, name: &str, held: i64) -> Result<(MqdT, i64, i64), Fail> {
    let (capacity, msg_size) = (3, run.rng().random_range(40..90));
    let queue = mq_open(
        name,
        MQ_OFlag::O_CREAT | MQ_OFlag::O_EXCL | MQ_OFlag::O_RDWR | MQ_OFlag::O_NONBLOCK,
        Mode::S_IRUSR | Mode::S_IWUSR,
        Some(&MqAttr::new(0, capacity, msg_size, 0)),
    )
    .map_err(|e| Fail::Grader(format!("creating a queue for the consumer to find: {e}")))?;
    let given = match run.program_user() {
        Some((uid, gid)) => fchown(&queue, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
            .map_err(|e| Fail::Grader(format!("giving the queue to the program user: {e}"))),
        None => Ok(()),
    };
    let sent = given.and_then(|()| {
        (0..held).try_for_each(|_| {
            mq_send(&queue, b"Jkept", 1).map_err(|e| Fail::Grader(format!("mq_send: {e}")))
        })
    });
    if let Err(fail) = sent {
        let _ = mq_close(queue);
        let _ = mq_unlink(name);
        return Err(fail);
    }
    Ok((queue, capacity, msg_size))
}

/// The consumer is held as its first `mq_open()` returns. If its queue does not exist then (a
/// look-up, not the creation), the grader creates one under the name, as another program may at
/// that moment; the consumer must then say `exists`: only `O_CREAT | O_EXCL` in one call
/// creates a queue of its own or fails.
fn created_while_creating(run: &mut Run) -> Result<(), Fail> {
    let name = run.ipc_name("raced");
    let mut proc = spawn_consumer_stopped(run, &name)?;
    let pid = proc.pid.as_raw();
    let tracer = Tracer::attach(pid, Call::any(libc::SYS_mq_open), Action::HoldAfter)?;
    force::resume(pid)?;
    let Some(mut tracer) = tracer else {
        run.note("no ptrace here: a queue created while the consumer creates its own not tried");
        let answer = proc.recv_any()?;
        return end_consumer(proc, &name, &answer);
    };
    let mut taken = None;
    let mut creating_mode = None;
    let first = match tracer.wait(&mut proc, Instant::now() + Duration::from_secs(5))? {
        Reached::Call => {
            if message_queue_exists(&name) {
                // mq_open(name, flags, mode, attr): the mode it was created with, read at the
                // call, before anything the program does afterwards (an fchmod) narrows it.
                let flags = held_call_argument(pid, 1).unwrap_or(0);
                if flags & libc::O_CREAT as u64 != 0 {
                    creating_mode = held_call_argument(pid, 2).map(|mode| mode as u32 & 0o7777);
                }
            } else {
                taken = Some(take_name(run, &name, 1)?);
            }
            None
        }
        Reached::Passed(message) => message,
    };
    tracer.release();
    let answer = match first {
        Some(message) => message,
        None => proc.recv_any()?,
    };
    let Some((queue, capacity, msg_size)) = taken else {
        end_consumer(proc, &name, &answer)?;
        return match creating_mode {
            Some(mode) if mode != 0o600 => Err(Fail::failed(format!(
                "the consumer's create() called mq_open() with O_CREAT and mode {mode:o} (the \
                 grader read it at the call): from that moment the queue {name:.40} exists with \
                 that mode (less the umask), so {}, until a later change of its mode; a \
                 descriptor opened in between keeps its access. Pass S_IRUSR | S_IWUSR (0600) \
                 to mq_open() itself",
                super::ordering::what_mode_allows(mode)
            ))),
            _ => Ok(()),
        };
    };
    let _ = mq_close(queue);
    if failed_with(&answer, "exists") {
        let _ = mq_unlink(name.as_str());
        return release(&mut proc);
    }
    let opened = answer.kind == "ready"
        && (field(&answer, "capacity"), field(&answer, "msg_size"))
            == (capacity as u64, msg_size as u64);
    let _ = mq_unlink(name.as_str());
    let what = if opened {
        format!(
            ", and reports that queue's {capacity} messages of {msg_size} bytes: it opened \
             the queue another program had just created"
        )
    } else {
        String::new()
    };
    Err(Fail::failed(format!(
        "the consumer's first mq_open() naming {name:.40} returned while no queue had that \
         name, so it was not the creation; the grader then created a queue under the name, as \
         another program may at that moment, and the consumer said {}, not `failed` with \
         kind=exists{what}. Looking first, then creating, leaves that window open: create with \
         one mq_open(O_CREAT | O_EXCL) and map EEXIST to QueueError::Exists",
        said(&answer)
    )))
}

/// A producer is held as its first `mq_open()` returns, on a name nobody created (ENOENT); the
/// grader then creates a queue under the name. The producer must still say `not-found`: ENOENT
/// is `NotFound` at once, and a producer that calls `mq_open()` again (waiting for a consumer
/// that may come) opens the queue instead.
fn appeared_after_not_found(run: &mut Run) -> Result<(), Fail> {
    let name = run.ipc_name("late");
    let mut proc = spawn_producer_stopped(run, &name)?;
    let pid = proc.pid.as_raw();
    let tracer = Tracer::attach(pid, Call::any(libc::SYS_mq_open), Action::HoldAfter)?;
    force::resume(pid)?;
    let Some(mut tracer) = tracer else {
        run.note("no ptrace here: a queue created after the producer's ENOENT not tried");
        let _ = proc.recv_any()?;
        return release(&mut proc);
    };
    let mut taken = None;
    let reached = tracer.wait(&mut proc, Instant::now() + Duration::from_secs(5))?;
    // The flags open() gave its mq_open(), read while the call is held (its second argument).
    let flags = (reached == Reached::Call)
        .then(|| held_call_argument(pid, 1))
        .flatten();
    let first = match reached {
        Reached::Call if !message_queue_exists(&name) => {
            taken = Some(take_name(run, &name, 0)?);
            None
        }
        Reached::Call => None,
        Reached::Passed(message) => message,
    };
    tracer.release();
    let answer = match first {
        Some(message) => message,
        None => proc.recv_any()?,
    };
    let created = taken.is_some();
    if let Some((queue, _, _)) = taken {
        let _ = mq_close(queue);
        let _ = mq_unlink(name.as_str());
    }
    if let Some(flags) = flags
        && flags & libc::O_NONBLOCK as u64 != 0
    {
        release(&mut proc)?;
        return Err(Fail::failed(format!(
            "a producer's open() called mq_open() naming {name:.40} with O_NONBLOCK in its flags \
             ({flags:#o}; the grader read them at the call): open() opens the queue with \
             O_WRONLY alone, blocking, so that submit() on a full queue waits; only \
             set_nonblocking(true) makes the descriptor non-blocking (main.rs calling it after \
             open() hides this, a library user does not)"
        )));
    }
    if failed_with(&answer, "not-found") || !created {
        return release(&mut proc);
    }
    let how = if answer.kind == "ready" {
        "it calls mq_open() again after ENOENT (waiting for the queue to appear) and opened \
         the grader's queue"
            .to_string()
    } else {
        "not not-found: it does not report ENOENT as it comes".to_string()
    };
    Err(Fail::failed(format!(
        "a producer's first mq_open() naming {name:.40} returned while no queue had that name \
         (ENOENT; the grader held it as the call returned), the grader then created a queue \
         under the name, and the producer said {}: {how}. open() of a missing queue is \
         QueueError::NotFound at once: map ENOENT to it, do not retry or wait for the name",
        said(&answer)
    )))
}

/// Argument `index` (from 0) of the call the main thread of `pid` is held at (by a tracer, at the
/// call's entry or its return), from `/proc/PID/syscall`.
fn held_call_argument(pid: i32, index: usize) -> Option<u64> {
    let syscall = std::fs::read_to_string(format!("/proc/{pid}/syscall")).ok()?;
    let arg = syscall.split_whitespace().nth(1 + index)?;
    u64::from_str_radix(arg.strip_prefix("0x")?, 16).ok()
}

/// Ends a consumer of `name` that gave `answer`, with the grader's shutdown if it is ready.
pub(super) fn end_consumer(
    mut proc: crate::engine::Proc,
    name: &str,
    answer: &ipc_labs_driver::Message,
) -> Result<(), Fail> {
    if answer.kind != "ready" {
        return Err(Fail::failed(format!(
            "the consumer said {} where it should have created {name}",
            said(answer)
        )));
    }
    grader_send(name, &[super::protocol::shutdown_message()])?;
    proc.send("go", &[])?;
    let done = proc.recv_any()?;
    if done.kind != "done" {
        return Err(Fail::failed(format!(
            "the consumer said {} instead of `done` after the shutdown message",
            said(&done)
        )));
    }
    release(&mut proc)
}
