//! The limits in `/proc/sys/fs/mqueue` are read by the program itself, whole, and again at each
//! create: a consumer whose opens of the files fail, and a consumer in an IPC namespace of its
//! own, whose limits the grader sets and then changes.

use rand::RngExt;

use super::limits::{OwnLimits, in_namespace_of, shutdown_in_namespace_of, spawn_with_sysctls};
use super::protocol::{failed_with, grader_send, release, said, sized};
use crate::engine::audit::message_queue_exists;
use crate::engine::{Fail, Run};

/// `msgsize_max` here has 7 digits (the machine's usually 4): a message size over its first 6
/// digits and within it must be accepted, which a read of the file that stops early (a small
/// buffer, or one `read()` taken for the whole file) refuses. The consumer serves that queue and
/// is told to create it again (`--again`) once the grader has lowered `msgsize_max` under its
/// message size: it must refuse the second queue as over-limit, before `mq_open()`, which one
/// that keeps the limits it read for the first does not. Root only.
pub fn read_whole_at_each_create(run: &mut Run, msg_max: u64) -> Result<(), Fail> {
    let msgsize_max = run.rng().random_range(1_000_000..1_090_000);
    let msg_size = msgsize_max / 10 + run.rng().random_range(1..=1000);
    let own = OwnLimits {
        msg_max,
        msgsize_max,
        msg_default: msg_max.min(10),
    };
    let name = run.ipc_name("proc-limits");
    let mut args = sized(1, msg_size);
    args.push("--again".into());
    let Some((mut proc, answer)) = spawn_with_sysctls(run, &name, &args, &own)? else {
        run.note(
            "no IPC namespace of its own for the consumer here (root only): limits read whole \
             and at each create not tried",
        );
        return Ok(());
    };
    let pid = proc.pid.as_raw();
    let limits = format!(
        "in an IPC namespace of its own whose /proc/sys/fs/mqueue/msgsize_max is {msgsize_max} \
         (7 digits)"
    );
    if answer.kind != "ready" {
        release(&mut proc)?;
        if failed_with(&answer, "mq-open") {
            // The kernel's refusal (this user's other queues, say): nothing of the check's.
            run.note(format!(
                "{limits}, a queue of 1 x {msg_size} bytes: {}",
                said(&answer)
            ));
            return Ok(());
        }
        return Err(Fail::failed(format!(
            "{limits}, asked for 1 message of {msg_size} bytes, the consumer said {}: \
             {msg_size} is within msgsize_max{}",
            said(&answer),
            cut_limit(&answer, msgsize_max)
        )));
    }
    shutdown_in_namespace_of(pid, &name)?;
    proc.send("go", &[])?;
    let done = proc.recv_any()?;
    if done.kind != "done" {
        release(&mut proc)?;
        return Err(Fail::failed(format!(
            "{limits}, with a queue of 1 x {msg_size} bytes, the consumer said {} instead of \
             `done` after the shutdown message",
            said(&done)
        )));
    }
    let lowered = msg_size - run.rng().random_range(1..=100);
    in_namespace_of(pid, move || {
        std::fs::write("/proc/sys/fs/mqueue/msgsize_max", lowered.to_string())
            .map_err(|e| Fail::Grader(format!("writing the namespace's msgsize_max: {e}")))
    })?;
    proc.send("again", &[])?;
    let again = proc.recv_any()?;
    if again.kind == "ready" {
        // Created after all (root passes the kernel's check): served, so that it goes.
        shutdown_in_namespace_of(pid, &name)?;
        proc.send("go", &[])?;
        let _ = proc.recv_any()?;
    }
    release(&mut proc)?;
    if failed_with(&again, "over-limit") {
        return Ok(());
    }
    Err(Fail::failed(format!(
        "{limits}, the consumer created and served a queue of 1 message of {msg_size} bytes; \
         the grader then lowered that msgsize_max to {lowered} and told it to create the queue \
         again (`--again`): it said {}, not `failed` with kind=over-limit before mq_open(): it \
         checked the second queue against the msgsize_max it read for the first. \
         system_limits() reads /proc/sys/fs/mqueue/msg_max and msgsize_max at each create, as \
         it reads RLIMIT_MSGQUEUE",
        said(&again)
    )))
}

/// What a refusal's message says of the limit it compared with, when that is `msgsize_max`
/// cut to its first digits.
fn cut_limit(answer: &ipc_labs_driver::Message, msgsize_max: u64) -> String {
    let error = answer.get("error").unwrap_or_default();
    let numbers: Vec<u64> = error
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|word| word.parse().ok())
        .collect();
    let digits = msgsize_max.to_string().len();
    let cut = (1..digits).find_map(|dropped| {
        let prefix = msgsize_max / 10u64.pow(dropped as u32);
        numbers
            .contains(&prefix)
            .then_some((prefix, digits - dropped))
    });
    match cut {
        Some((prefix, kept)) => format!(
            "; its limit, {prefix}, is the first {kept} digits of msgsize_max: it read the \
             file only in part (a buffer too small for the number, or one read() taken for \
             the whole file). Read /proc/sys/fs/mqueue/msgsize_max to its end"
        ),
        None => ": the limit it compared with is not this namespace's msgsize_max (read in \
                  part, or taken from elsewhere): system_limits() reads \
                  /proc/sys/fs/mqueue/msgsize_max whole, at each create"
            .to_string(),
    }
}

/// The limit files, each made unreadable in turn: the consumer's `openat()` of it fails with
/// `EACCES`, then with `ENOENT` (with ptrace). system_limits() must fail with kind=limits, not guess a value.
pub fn unreadable_limits(run: &mut Run) -> Result<(), Fail> {
    use crate::engine::force;
    use crate::engine::tracer::{Action, Call, Match, Tracer};
    const FILES: [&str; 2] = [
        "/proc/sys/fs/mqueue/msg_max",
        "/proc/sys/fs/mqueue/msgsize_max",
    ];
    // EACCES as for a file others may not read, ENOENT as where /proc lacks the sysctls.
    let failures = [("EACCES", libc::EACCES), ("ENOENT", libc::ENOENT)];
    for (path, (errno_name, errno)) in FILES
        .into_iter()
        .flat_map(|path| failures.map(|failure| (path, failure)))
    {
        let name = run.ipc_name("unreadable-limits");
        let mut proc = super::protocol::spawn_consumer_stopped(run, &name)?;
        let pid = proc.pid.as_raw();
        let open = Call {
            number: libc::SYS_openat,
            matching: Match::Path(path),
        };
        let tracer = Tracer::attach(pid, open, Action::Fail(errno))?;
        force::resume(pid)?;
        let answer = proc.recv_any()?;
        let Some(mut tracer) = tracer else {
            run.note("unreadable limit files not tried (no ptrace)");
            if answer.kind == "ready" {
                grader_send(&name, &[super::protocol::shutdown_message()])?;
                proc.send("go", &[])?;
                let _ = proc.recv_any()?;
            }
            return release(&mut proc);
        };
        let failed = tracer.failed_the_call()?;
        drop(tracer);
        let created = message_queue_exists(&name);
        let children_faults = (!failed).then(|| waited_children_faults(pid)).flatten();
        if answer.kind == "ready" {
            grader_send(&name, &[super::protocol::shutdown_message()])?;
            proc.send("go", &[])?;
            let _ = proc.recv_any()?;
        }
        release(&mut proc)?;
        if let Some(faults) = children_faults.filter(|&faults| faults > 0) {
            return Err(Fail::failed(format!(
                "the grader was to make the consumer's open of {path} fail with {errno_name} \
                 (with ptrace), but the consumer never opened it, and said {}; it waited for a \
                 child process meanwhile (its ended children's page faults, cminflt in \
                 /proc/PID/stat, are {faults}): the limit was read by another process (a `cat`, \
                 a shell), whose errors are not the program's. system_limits() reads the files \
                 itself, in the program's own process",
                said(&answer)
            )));
        }
        if !failed || failed_with(&answer, "limits") {
            continue;
        }
        let created = if created {
            ", and created the queue"
        } else {
            ""
        };
        let opens = super::limit_retries::opens_of_failing_file(run, path, errno)?;
        let cause = match opens {
            Some(opens) if opens > 1 => format!(
                "; a consumer whose every open of {path} failed opened it {opens} times: it \
                 retries a failed read, which hides a failure that passes. Any failure is \
                 QueueError::Limits at once, never retried"
            ),
            _ => format!(
                ": it never puts another value in its place: a default, a constant, or the same \
                 file read again by another path (/proc/self/root{path}, say) after the first \
                 failed"
            ),
        };
        return Err(Fail::failed(format!(
            "the grader made the consumer's open of {path} fail with {errno_name} (with \
             ptrace), and it said {}{created}, not `failed` with kind=limits: system_limits() \
             fails with QueueError::Limits when a limit cannot be read, whatever the error{cause}",
            said(&answer)
        )));
    }
    Ok(())
}

/// The page faults of the children `pid` has waited for (`cminflt` in `/proc/PID/stat`): more than
/// 0 once it ran a program and waited for it.
fn waited_children_faults(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command's closing parenthesis start at the state (field 3).
    let after_command = &stat[stat.rfind(')')? + 1..];
    after_command.split_whitespace().nth(11 - 3)?.parse().ok()
}

/// A limit file that holds no number: the consumer's first `read()` after its open of
/// `/proc/sys/fs/mqueue/msg_max`, then of `msgsize_max`, returns the file's length, its bytes
/// (but the newline) turned to `x`, then to blanks, in the program's buffer as the call returns
/// (ptrace). system_limits() must fail with kind=limits: a value it cannot parse, or no word at
/// all, is a limit it could not read, not a reason to panic; and it closes the file then too.
pub fn limit_not_a_number(run: &mut Run) -> Result<(), Fail> {
    for file in [
        "/proc/sys/fs/mqueue/msg_max",
        "/proc/sys/fs/mqueue/msgsize_max",
    ] {
        limit_text_replaced(run, file, b'x', "x, then the newline")?;
        limit_text_replaced(run, file, b' ', "spaces, then the newline")?;
    }
    Ok(())
}

fn limit_text_replaced(
    run: &mut Run,
    file: &'static str,
    fill: u8,
    shown: &str,
) -> Result<(), Fail> {
    use std::os::unix::fs::FileExt;

    use crate::engine::force;
    use crate::engine::tracer::{Call, Match, Step, Tracer};
    let len = std::fs::read(file).map_or(0, |text| text.len());
    let name = run.ipc_name("garbled-limit");
    let mut proc = super::protocol::spawn_consumer_stopped(run, &name)?;
    let pid = proc.pid.as_raw();
    let open = Call {
        number: libc::SYS_openat,
        matching: Match::Path(file),
    };
    let read = Call::any(libc::SYS_read);
    let tracer = Tracer::in_turn(pid, [(open, Step::Pass), (read, Step::HoldAfter)])?;
    force::resume(pid)?;
    let Some(mut tracer) = tracer else {
        run.note("a limit file that holds no number not tried (no ptrace)");
        let answer = proc.recv_any()?;
        if answer.kind == "ready" {
            grader_send(&name, &[super::protocol::shutdown_message()])?;
            proc.send("go", &[])?;
            let _ = proc.recv_any()?;
        }
        return release(&mut proc);
    };
    let held = tracer.held_before(std::time::Instant::now() + std::time::Duration::from_secs(5))?;
    let mut garbled = false;
    if held && len > 1 {
        // The buffer is read()'s second argument, still in its register as the call returns.
        let buffer = std::fs::read_to_string(format!("/proc/{pid}/syscall"))
            .ok()
            .and_then(|syscall| {
                let field = syscall.split_whitespace().nth(2)?.to_string();
                u64::from_str_radix(field.trim_start_matches("0x"), 16).ok()
            });
        let mem = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/{pid}/mem"));
        if let (Some(buffer), Ok(mem)) = (buffer, mem) {
            garbled = mem.write_all_at(&vec![fill; len - 1], buffer).is_ok();
        }
    }
    tracer.release();
    let answer = proc.recv_any();
    let created = message_queue_exists(&name);
    let answer = match answer {
        Ok(answer) => answer,
        Err(Fail::Failed(ended) | Fail::Crashed(ended)) if garbled => {
            if created {
                let _ = nix::mqueue::mq_unlink(name.as_str());
            }
            let how = if fill == b' ' {
                "the first word taken with unwrap() (split_whitespace().next(), which is None \
                 for a blank text) or a parse with expect() or unwrap() panics instead"
            } else {
                "a parse with expect() or unwrap() panics instead"
            };
            return Err(Fail::failed(format!(
                "the grader turned the text the consumer read from {file} into {len} bytes that \
                 are no number ({shown}; with ptrace, as its read() returned), and the consumer \
                 ended without an answer ({ended}): system_limits() must fail with \
                 QueueError::Limits when a limit file holds no number, a blank one too, as when \
                 it cannot be read; {how}"
            )));
        }
        Err(other) => return Err(other),
    };
    let left_open = super::limit_read_failures::limit_files_open(pid);
    if answer.kind == "ready" {
        grader_send(&name, &[super::protocol::shutdown_message()])?;
        proc.send("go", &[])?;
        let _ = proc.recv_any()?;
    }
    release(&mut proc)?;
    if garbled && failed_with(&answer, "limits") && !left_open.is_empty() {
        return Err(Fail::failed(format!(
            "the grader turned the text the consumer read from {file} into {len} bytes that are \
             no number ({shown}; with ptrace, as its read() returned); it rightly said \
             kind=limits, but then still held {} open (/proc/PID/fd): system_limits() closes \
             the files it opens on every path, a parse error's too (a close() after the parse's \
             `?` is never reached)",
            left_open.join(" and ")
        )));
    }
    if garbled && !failed_with(&answer, "limits") {
        return Err(Fail::failed(format!(
            "the grader turned the text the consumer read from {file} into {len} bytes that are \
             no number ({shown}; with ptrace, as its read() returned), and it said \
             {}, not `failed` with kind=limits: a limit file that holds no number is a limit \
             that cannot be read (QueueError::Limits), never a value guessed in its place",
            said(&answer)
        )));
    }
    Ok(())
}
