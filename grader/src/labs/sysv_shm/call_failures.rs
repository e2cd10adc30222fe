//! The check that every failing system call is reported with its own kind: `ShmError` names
//! which call failed, and a reader that says `not-found` for a segment it found, or a publisher
//! that says `exists` when shmget() failed for another reason, sends whoever runs it the wrong
//! way. So does a publisher whose failing clean-up (after `no-room`) hides why it failed, or
//! stops the removal of its segment.
//!
//! Most of these failures cannot be brought about from outside (root may do anything, and the
//! machine has room): the grader makes the call fail itself, by tracing the program and giving
//! the call the error the kernel would give. Where it may not trace (an unprivileged grader), it
//! brings about the one failure it can: a segment the reader may not read. That, and a segment
//! the reader may only read, it tries everywhere: a reader run as root lacks the capability with
//! which root reads any segment.

use std::time::{Duration, Instant};

use rand::RngExt;

use crate::engine::{Fail, Proc, Run};

use super::HEADER_LEN;
use super::injected::{Injected, Then, Who, injected, shmget_creating};
use super::open_files::left_open_at_exit;
use super::protocol::{
    Name, exits_cleanly, expect, fresh_name, spawn_held_reader, spawn_publisher,
    spawn_reader_bound_by_modes, verify_read, with_context,
};
use super::segments::{
    Attached, Planted, RemoveKeyOnDrop, full_record, last_attacher, mapping_of, segment,
};
use crate::engine::tracer::{Action, Call, Match, Step, Tracer};

const SHMMAX: &str = "/proc/sys/kernel/shmmax";

const NOT_FOUND_IS_ENOENT: &str = "only shmget()'s ENOENT (no segment has the key) is NotFound";

pub fn system_call_failures(run: &mut Run) -> Result<String, Fail> {
    // Root reads any segment whatever its mode: these readers run without that power.
    read_only_segment(run)?;
    let mut tried = vec!["a reader on a segment it may only read (mode 400)".to_string()];
    let mut every_call_failed = true;
    let reader_name = fresh_name(run)?;
    let payload = run.random_bytes(200);
    let planted = Planted::new(run, reader_name.key, 4096, &full_record(7, &payload))?;
    // Calls already reported right with another errno: a failure now is about this errno.
    let mut reported: Vec<(&str, nix::errno::Errno)> = Vec::new();
    for (n, case) in (1..).zip(injected()) {
        let errno = nix::errno::Errno::from_raw(case.errno);
        let outcome = fail_one_call(run, &case, (&reader_name, planted.id), n).map_err(|fail| {
            match (
                fail,
                reported.iter().find(|(short, _)| *short == case.short),
            ) {
                (Fail::Failed(m), Some((_, earlier))) => Fail::Failed(format!(
                    "{m} (made to fail with {earlier:?} instead, the same call was reported \
                     right: the program treats {errno:?} apart; a -1 is an error whatever errno \
                     comes with it)"
                )),
                (other, _) => other,
            }
        })?;
        reported.push((case.short, errno));
        if !outcome {
            run.note(
                "the grader may not trace the programs here (ptrace), or not make a call fail \
                 on this architecture: no call was made to fail",
            );
            every_call_failed = false;
            break;
        }
        let who = if matches!(
            case.who,
            Who::Publisher
                | Who::SharingPublisher
                | Who::DetachingPublisher
                | Who::CleaningPublisher
                | Who::ZeroSizePublisher
        ) {
            "the publisher's"
        } else {
            "the reader's"
        };
        tried.push(format!("{who} {} ({errno:?})", case.short));
    }
    if every_call_failed {
        open_failing_after_attach(run, (&reader_name, planted.id))?;
        tried.push("the reader's first shmctl() after its shmat(), if it makes one".into());
        limit_read_failing(run)?;
        tried.push("the publisher's read of /proc/sys/kernel/shmmax".into());
        if super::second_create_limit::limit_failing_at_second_create(run)? {
            tried.push("the open and the read of shmmax for a process's second create".into());
        }
        if super::failed_after_shmget::shmctl_failing_after_creation(run)? {
            tried.push("the publisher's shmctl() after its shmget(), if it makes one".into());
        }
    }
    super::shmmax_closed::closed_after_a_good_read(run)?;
    // Last: a kind=shmget here has two causes, which the failing calls above tell apart.
    unreadable_segment(run, every_call_failed)?;
    tried.push("a reader on a segment it may not read (mode 000)".into());
    Ok(format!(
        "each failing call was reported with its kind: {}",
        tried.join(", ")
    ))
}

/// Runs the program of `case` with its call made to fail; `false` if the grader may not.
/// `planted` is the segment the readers find.
fn fail_one_call(
    run: &mut Run,
    case: &Injected,
    (reader, planted): (&Name, i32),
    n: u32,
) -> Result<bool, Fail> {
    let error = nix::errno::Errno::from_raw(case.errno);
    let mut context = format!("with {} made to fail ({error})", case.what);
    if let Then::Fail(_, errno, what) = case.then {
        let errno = nix::errno::Errno::from_raw(errno);
        context.push_str(&format!(", then {what} ({errno})"));
    }
    let (mut proc, publisher_key) = match case.who {
        Who::Publisher | Who::SharingPublisher | Who::DetachingPublisher => {
            let name = fresh_name(run)?;
            let payload = run.random_bytes(100);
            let proc = spawn_publisher(run, &name.path, name.id, 4096, n, &payload)?;
            (proc, Some(name.key))
        }
        Who::ZeroSizePublisher => {
            let name = fresh_name(run)?;
            let payload = run.random_bytes(100);
            let proc = spawn_publisher(run, &name.path, name.id, 0, n, &payload)?;
            (proc, Some(name.key))
        }
        Who::CleaningPublisher => {
            let name = fresh_name(run)?;
            let size = run.rng().random_range(64..4096usize);
            let too_big = run.random_bytes(size - HEADER_LEN + 1);
            let proc = spawn_publisher(run, &name.path, name.id, size as u64, n, &too_big)?;
            (proc, Some(name.key))
        }
        Who::Reader | Who::RemovingReader => {
            let remove = case.who == Who::RemovingReader;
            (spawn_held_reader(run, reader, remove, n)?.0, None)
        }
    };
    let _removed = RemoveKeyOnDrop(publisher_key);
    let pid = proc.pid.as_raw();
    let first = (case.call, Step::Fail(case.errno));
    let creating = Call {
        number: libc::SYS_shmget,
        matching: shmget_creating(true),
    };
    let traced = match case.then {
        Then::Nothing if case.who == Who::SharingPublisher => {
            Tracer::in_turn(pid, [(creating, Step::HoldAfter), first])?
        }
        Then::Nothing => Tracer::attach(pid, case.call, Action::Fail(case.errno))?,
        Then::Fail(call, errno, _) => Tracer::in_turn(pid, [first, (call, Step::Fail(errno))])?,
        Then::HoldAtExit => Tracer::in_turn(pid, [first, (exit(), Step::Hold)])?,
    };
    let Some(mut tracer) = traced else {
        proc.kill_tree();
        return Ok(false);
    };
    proc.send("go", &[])?;
    // The grader's attachment, as a reader's: the publisher must remove the segment anyway.
    let mut shared = None;
    if case.who == Who::SharingPublisher
        && tracer.held_before(Instant::now() + Duration::from_secs(5))?
    {
        if let Some(made) = publisher_key.and_then(segment) {
            shared = Some(Attached::new(made.id, libc::SHM_RDONLY)?);
        }
        tracer.go_on();
    }
    let before = match case.who {
        Who::DetachingPublisher => Some("ready"),
        Who::RemovingReader => Some("attached"),
        _ => None,
    };
    if let Some(step) = before {
        let who = if step == "ready" {
            "publisher"
        } else {
            "reader"
        };
        expect(&mut proc, who, step).map_err(with_context(&context))?;
        proc.send("go", &[])?;
    }
    let message = proc.recv_any().map_err(with_context(&context))?;
    let failed = tracer.failed_the_call()?;
    match case.then {
        Then::Fail(_, _, what) if failed => {
            let second = tracer.failed_the_call()?;
            drop(tracer);
            let gone = publisher_key.is_some_and(|key| segment(key).is_none());
            return judge_second_failure(
                &mut proc,
                case,
                (&context, what),
                &message,
                (second, gone),
            );
        }
        Then::HoldAtExit if failed && message.kind == "failed" => {
            let until = Instant::now() + Duration::from_secs(5);
            let (left, attached) = if tracer.held_before(until)? {
                let attached = last_attacher(planted) == Some(pid);
                (mapping_of(pid, planted), attached)
            } else {
                (None, false)
            };
            tracer.release();
            // Its shmat() was the call made to fail (skipped): that one attached nothing.
            if attached && left.is_none() && case.call.number != libc::SYS_shmat {
                proc.wait()?;
                return Err(Fail::failed(format!(
                    "{context}, the reader said kind={} and held nothing attached as it exited, \
                     but it had attached the segment (id {planted}) in the meantime: \
                     /proc/sysvipc/shm names it the last process to attach or detach it (lpid), \
                     though its open() failed; it attached before it made {} (and detached \
                     again); open() is shmget(), the size from shmctl(IPC_STAT), then shmat() \
                     last, so that an open that fails attaches nothing",
                    message.get("kind").unwrap_or("none"),
                    case.short
                )));
            }
            if let Some(perms) = left {
                proc.wait()?;
                return Err(Fail::failed(format!(
                    "{context}, the reader said kind={}, but as it exited it still had the \
                     segment (id {planted}) attached (its /proc/PID/maps maps it {perms}): it \
                     attached the segment though open() failed, and never detached it; open() \
                     is shmget(), the size from shmctl(IPC_STAT), then shmat() last, and leaves \
                     nothing attached when it fails",
                    message.get("kind").unwrap_or("none")
                )));
            }
        }
        _ => drop(tracer),
    }
    if case.who == Who::CleaningPublisher {
        return judge_clean_up(&mut proc, case, &context, &message, (failed, publisher_key));
    }
    // The failed shmget() made nothing: a segment with the key now is another call's.
    if failed
        && message.kind == "ready"
        && case.call.number == libc::SYS_shmget
        && let Some(made) = publisher_key.and_then(segment)
    {
        return Err(Fail::failed(format!(
            "{context}, the publisher said `ready` with segment {} at its key, which the failed \
             call did not make: it called shmget() again after the failure and went on with \
             what that call made; a failing call is reported (kind={}) at once, not retried",
            made.id, case.kind
        )));
    }
    let judged = judge(&mut proc, case, &context, &message, failed)?;
    // A publisher that failed before `ready` leaves no segment (it has exited: judged).
    if matches!(case.who, Who::Publisher | Who::SharingPublisher)
        && let Some(left) = publisher_key.and_then(segment)
    {
        let advice = if shared.is_some() {
            "when shmat() fails, remove the segment shmget() just made (shmctl(IPC_RMID)), \
             whoever else has it attached (the grader did, as a reader that found the key may: \
             nattch 1): IPC_RMID takes its key away at once, and the kernel frees it at the \
             last detach; left alone, nobody ever removes it"
        } else if case.call.number == libc::SYS_shmat {
            "when shmat() fails, remove the segment shmget() just made (shmctl(IPC_RMID))"
        } else {
            "remove what you created on the error path"
        };
        return Err(Fail::failed(format!(
            "{context}, the publisher reported kind={} but left segment {} behind as it \
             exited: {advice}",
            case.kind, left.id
        )));
    }
    Ok(judged)
}

/// A publisher that failed to write and met a failing call as it cleaned up: it must report
/// `no-room` and, unless its `shmctl(IPC_RMID)` was the call that failed, leave no segment.
fn judge_clean_up(
    proc: &mut Proc,
    case: &Injected,
    context: &str,
    message: &ipc_labs_driver::Message,
    (failed, key): (bool, Option<i32>),
) -> Result<bool, Fail> {
    let said = (message.kind.as_str(), message.get("kind"));
    if said.0 == "failed" {
        proc.wait()?;
    }
    let removal_failed = case.call.number == libc::SYS_shmctl;
    let left = key.and_then(segment).filter(|_| failed && !removal_failed);
    let left_note = left
        .as_ref()
        .map(|s| {
            format!(
                "; and it never removed its segment (segment {} is still there after it exited): \
                 remove it even when detaching fails",
                s.id
            )
        })
        .unwrap_or_default();
    if said == ("failed", Some(case.kind)) && failed && left.is_none() {
        return Ok(true);
    }
    if said == ("failed", Some(case.kind)) && failed {
        return Err(Fail::failed(format!(
            "{context}, the publisher reported kind={} but never removed its segment (segment \
             {} is still there after it exited): remove it even when detaching fails",
            case.kind,
            left.map(|s| s.id).unwrap_or_default()
        )));
    }
    judge(proc, case, context, message, failed).map_err(|fail| match fail {
        Fail::Failed(m) => Fail::Failed(format!("{m}{left_note}")),
        other => other,
    })
}

/// The exit of a program, where a [`Then::HoldAtExit`] holds it.
/// A reader whose first `shmctl()` after its `shmat()` fails (as it does for a segment removed
/// meanwhile): an open() that fails there must detach what it attached. The lab's open() makes
/// no call after `shmat()`, and says `attached`.
fn open_failing_after_attach(run: &mut Run, (reader, planted): (&Name, i32)) -> Result<(), Fail> {
    let (mut proc, _) = spawn_held_reader(run, reader, false, 40)?;
    let pid = proc.pid.as_raw();
    let steps = [
        (Call::any(libc::SYS_shmat), Step::Pass),
        (Call::any(libc::SYS_shmctl), Step::Fail(libc::EIDRM)),
        (exit(), Step::Hold),
    ];
    let Some(mut tracer) = Tracer::in_turn(pid, steps)? else {
        proc.kill_tree();
        return Ok(());
    };
    proc.send("go", &[])?;
    let context = "with the reader's first shmctl() after its shmat() made to fail (EIDRM, as \
                   for a segment removed meanwhile)";
    let message = proc.recv_any().map_err(with_context(context))?;
    if message.kind != "failed" || !tracer.failed_the_call()? {
        drop(tracer);
        proc.kill_tree();
        return Ok(());
    }
    let until = Instant::now() + Duration::from_secs(5);
    let left = if tracer.held_before(until)? {
        mapping_of(pid, planted)
    } else {
        None
    };
    tracer.release();
    proc.wait()?;
    match left {
        Some(perms) => Err(Fail::failed(format!(
            "{context}, the reader said kind={}, but as it exited it still had the segment (id \
             {planted}) attached (its /proc/PID/maps maps it {perms}): its open() attached the \
             segment, then failed at a shmctl() after shmat() and returned without detaching; \
             an open() that fails leaves nothing attached (shmat() last, or shmdt() before it \
             returns the error)",
            message.get("kind").unwrap_or("none")
        ))),
        None => Ok(()),
    }
}

/// A publisher whose first read after its open of `shmmax` fails (`EIO`): the limit is read
/// from that file, and a failure to read it is `limit`.
fn limit_read_failing(run: &mut Run) -> Result<(), Fail> {
    const READS: &[i64] = &[
        libc::SYS_read,
        libc::SYS_pread64,
        libc::SYS_readv,
        libc::SYS_preadv,
    ];
    let name = fresh_name(run)?;
    let payload = run.random_bytes(100);
    let mut proc = spawn_publisher(run, &name.path, name.id, 4096, 41, &payload)?;
    let _removed = RemoveKeyOnDrop(Some(name.key));
    let steps = [
        (
            Call {
                number: libc::SYS_openat,
                matching: Match::Path(SHMMAX),
            },
            Step::Pass,
        ),
        (Call::one_of(READS), Step::Fail(libc::EIO)),
        (exit(), Step::Hold),
    ];
    let pid = proc.pid.as_raw();
    let Some(mut tracer) = Tracer::in_turn(pid, steps)? else {
        proc.kill_tree();
        return Ok(());
    };
    proc.send("go", &[])?;
    let context = "with the publisher's first read after its open of /proc/sys/kernel/shmmax \
                   made to fail (EIO)";
    let message = proc.recv_any().map_err(with_context(context))?;
    // The failure is reported before the program goes on: one made before `ready` is seen.
    let read_failed = tracer.failed_the_call()?;
    let failed = message.kind == "failed";
    let left_open = left_open_at_exit(tracer, read_failed && failed, pid, SHMMAX)?;
    proc.kill_tree();
    match (message.kind.as_str(), message.get("kind")) {
        ("failed", Some("limit")) if let Some(fd) = left_open => Err(Fail::failed(format!(
            "{context}, the publisher reported kind=limit, but as it exited (held there by the \
             grader, before the kernel closes its files) it still had {SHMMAX} open (descriptor \
             {fd}): max_segment_size() returned its error without closing the file it opened; \
             close it on every path (a std::fs::File, which closes on drop, or close() before \
             returning), or a long-lived caller that meets the failure again runs out of \
             descriptors"
        ))),
        ("failed", Some("limit")) => Ok(()),
        ("ready", _) if !read_failed => Err(Fail::failed(format!(
            "{context}, the publisher said `ready`, its main thread having read nothing after that open: it \
             opens shmmax but takes the limit from elsewhere (shmctl(IPC_INFO), say); \
             max_segment_size() reads /proc/sys/kernel/shmmax as it is now, and a failure to \
             read it is ShmError::Limit"
        ))),
        ("ready", _) => Err(Fail::failed(format!(
            "{context}, the publisher said `ready`: it went on after the failed read, or the \
             read that failed was of another file (it never reads shmmax); a failure to read \
             the limit is ShmError::Limit (kind=limit)"
        ))),
        (said, kind) => Err(Fail::failed(format!(
            "{context}, the publisher said `{said}` (kind={}), the lab wants kind=limit: a \
             failure to read the limit is ShmError::Limit",
            kind.unwrap_or("none")
        ))),
    }
}

fn exit() -> Call {
    Call::one_of(&[libc::SYS_exit_group, libc::SYS_exit])
}

/// A program whose call failed, and then the call it made to clean up after it (`what`): it
/// must report the first failure, and have made the second call.
fn judge_second_failure(
    proc: &mut Proc,
    case: &Injected,
    (context, what): (&str, &str),
    message: &ipc_labs_driver::Message,
    (second, gone): (bool, bool),
) -> Result<bool, Fail> {
    let said = (message.kind.as_str(), message.get("kind"));
    if said == ("failed", Some(case.kind)) && second {
        super::first_errno::first_errno_kept(case, (context, what), message)?;
    }
    if said == ("failed", Some(case.kind)) && !second && gone {
        proc.wait()?;
        return Err(Fail::failed(format!(
            "{context}: the program reported kind={}, and its segment is gone, but its main \
             thread never made {what}: the segment was removed some other way, by another \
             process (a child running `ipcrm`, say) or another thread, whose failure the \
             program cannot report with its own errno (and which the grader's failing \
             shmctl(IPC_RMID) never reached); remove() is shmctl(id, IPC_RMID), made by the \
             program itself",
            case.kind
        )));
    }
    if said == ("failed", Some(case.kind)) && !second {
        proc.wait()?;
        return Err(Fail::failed(format!(
            "{context}: the program reported kind={}, but it never made {what}: when shmat() \
             fails, remove the segment shmget() just made",
            case.kind
        )));
    }
    judge(proc, case, context, message, true)
}

/// What the program said after its call failed, against what the case wants.
fn judge(
    proc: &mut Proc,
    case: &Injected,
    context: &str,
    message: &ipc_labs_driver::Message,
    failed: bool,
) -> Result<bool, Fail> {
    let kind = message.get("kind");
    // A publisher asked for size 0 need not make the call at all.
    let may_skip = case.who == Who::ZeroSizePublisher;
    if message.kind == "failed" && kind == Some(case.kind) && (failed || may_skip) {
        proc.wait()?;
        return Ok(true);
    }
    if !failed && may_skip {
        return Err(Fail::failed(format!(
            "with size 0, the publisher said `{}`{}, the lab wants `failed` with kind={}",
            message.kind,
            kind.map(|k| format!(" (kind={k})")).unwrap_or_default(),
            case.kind
        )));
    }
    if !failed {
        return Err(Fail::failed(format!(
            "the grader waited for {} to make it fail, but {} (it said `{}`{})",
            case.what,
            case.not_made,
            message.kind,
            kind.map(|k| format!(", kind={k}")).unwrap_or_default()
        )));
    }
    Err(Fail::failed(match (message.kind.as_str(), kind) {
        ("failed", Some(k)) if case.known.is_some_and(|(wrong, _)| wrong == k) => format!(
            "{context}, the program said kind={k}, the lab wants kind={}: {}",
            case.kind,
            case.known.map(|(_, cause)| cause).unwrap_or_default()
        ),
        ("failed", got) => format!(
            "{context}, the program said kind={}, the lab wants kind={}: each failing call has \
             its own kind",
            got.unwrap_or("none"),
            case.kind
        ),
        (said, _) => format!(
            "{context}, the program said `{said}` as if the call had succeeded: return its \
             error (kind={}) instead of going on without it (ignoring it, or making the call \
             again until it works)",
            case.kind
        ),
    }))
}

/// What a reader that asks `shmget()` for access (permission bits in its flags) gets told: the
/// kernel checks them against the segment's mode even without `IPC_CREAT`.
const SHMGET_ASKS_NO_ACCESS: &str = "shmget() itself refused the segment, which it does to a \
                                     reader that asks it for access: the low 9 bits of its flags \
                                     (0600, say) are the access wanted, checked against the \
                                     segment's mode even without IPC_CREAT; find the segment with \
                                     shmget(key, 0, 0), which asks for none, and attach it with \
                                     SHM_RDONLY, which asks only to read";

/// A reader on a segment it may read but not write: it reads the record, for it asks for no
/// more than reading (`shmget(key, 0, 0)`, `IPC_STAT`, `SHM_RDONLY`).
fn read_only_segment(run: &mut Run) -> Result<(), Fail> {
    let name = fresh_name(run)?;
    let payload = run.random_bytes(100);
    let size = 4096 + run.rng().random_range(0..4096usize);
    let sequence = run.rng().random_range(2..1_000_000u32);
    let _planted =
        Planted::with_mode(run, name.key, size, &full_record(sequence, &payload), 0o400)?;
    let context = "on a segment that the reader may read but not write (mode 400), the grader's \
                   record in it";
    let (mut reader, output) = spawn_reader_bound_by_modes(run, &name, 101)?;
    let message = reader.recv_any().map_err(with_context(context))?;
    match (message.kind.as_str(), message.get("kind")) {
        ("attached", _) => {
            reader.send("go", &[])?;
            let done = expect(&mut reader, "reader", "done").map_err(with_context(context))?;
            exits_cleanly(&mut reader, "reader")?;
            verify_read(&done, &output, sequence, &payload, "planted")
                .map_err(with_context(context))
        }
        ("failed", Some("shmget")) => Err(Fail::failed(format!(
            "{context}, the reader said kind=shmget ({}): {SHMGET_ASKS_NO_ACCESS}",
            message.get("error").unwrap_or("?")
        ))),
        ("failed", got) => Err(Fail::failed(format!(
            "{context}, the reader said kind={} ({}), the lab wants the record: a reader that \
             may read a segment reads it, for shmget(key, 0, 0), shmctl(IPC_STAT) and \
             shmat(SHM_RDONLY) ask for no more",
            got.unwrap_or("none"),
            message.get("error").unwrap_or("?")
        ))),
        (said, _) => Err(Fail::failed(format!(
            "{context}, the reader said `{said}` where the grader expected `attached`"
        ))),
    }
}

/// A reader on a segment it may not read: the kernel itself refuses IPC_STAT and shmat().
/// `calls_judged`: the reader's failing IPC_STAT and shmat() were made to fail before, and
/// reported with their kinds.
fn unreadable_segment(run: &mut Run, calls_judged: bool) -> Result<(), Fail> {
    let name = fresh_name(run)?;
    let payload = run.random_bytes(100);
    let size = 4096 + run.rng().random_range(0..4096usize);
    let _planted = Planted::with_mode(run, name.key, size, &full_record(9, &payload), 0)?;
    let what = "a segment that exists but that the reader may not read (mode 000: \
                shmctl(IPC_STAT) and shmat() fail with EACCES)";
    let (mut reader, _) = spawn_reader_bound_by_modes(run, &name, 100)?;
    let context = format!("on {what}");
    let message = reader.recv_any().map_err(with_context(&context))?;
    match (message.kind.as_str(), message.get("kind")) {
        ("failed", Some("shmctl" | "shmat")) => {
            reader.wait()?;
            Ok(())
        }
        ("failed", Some("shmget")) if calls_judged => Err(Fail::failed(format!(
            "{context}, the reader said kind=shmget ({}), though its shmctl(IPC_STAT) and its \
             shmat(), made to fail with EACCES before, were reported with their own kinds: \
             {SHMGET_ASKS_NO_ACCESS}; the kernel then refuses shmctl(IPC_STAT) (kind=shmctl) \
             or shmat() (kind=shmat)",
            message.get("error").unwrap_or("?")
        ))),
        ("failed", Some("shmget")) => Err(Fail::failed(format!(
            "{context}, the reader said kind=shmget ({}), the lab wants kind=shmctl or shmat: \
             either its shmget() asked for access it may not have (permission bits in its \
             flags, checked against the segment's mode even without IPC_CREAT: find with \
             shmget(key, 0, 0)), or it reports the failing shmctl(IPC_STAT) or shmat() as \
             ShmError::Get (they are Control and Attach)",
            message.get("error").unwrap_or("?")
        ))),
        ("failed", Some("not-found")) => Err(Fail::failed(format!(
            "{context}, the reader said kind=not-found, but shmget() had found the segment: \
             {NOT_FOUND_IS_ENOENT}; report a failing shmctl() as ShmError::Control \
             (kind=shmctl) and a failing shmat() as ShmError::Attach (kind=shmat)"
        ))),
        (said, got) => Err(Fail::failed(format!(
            "{context}, the reader said `{said}` (kind={}), the lab wants `failed` with the kind \
             of the call that failed (shmctl, or shmat)",
            got.unwrap_or("none")
        ))),
    }
}
