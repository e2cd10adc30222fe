//! The error paths of `create()` and `unlink()`: a name already taken, a name taken right after
//! the program's first look at it, a name the system refuses or one exactly at its limit, a
//! clean-up that fails in its turn, a name removed behind the program's back.

use std::ffi::CString;
use std::time::{Duration, Instant};

use rand::RngExt;

use super::SIGNAL_SIZE;
use super::create_cleanup::{CleanupStep, create_cleanup_fails};
use super::handover::{Launch, arguments, report_failure, run_through_removing, spawn_traced};
use super::names::held_by;
use super::probe;
use crate::engine::tracer::{Action, Call, Match, Reached, Tracer};
use crate::engine::{Fail, Run, force};

/// An object the grader made under one of the check's names before the program ran, removed
/// when dropped.
pub(super) struct Planted {
    mechanism: &'static str,
    name: String,
    /// A planted semaphore's value.
    value: u32,
    /// A planted semaphore's file: a process that maps it uses the grader's semaphore.
    pub(super) inode: Option<u64>,
}

/// The values a planted semaphore has: 0, as a semaphore the program makes itself starts (so
/// that only `O_EXCL` tells it from a new one: a look at its value after an open without
/// `O_EXCL` takes it for the program's own), or 3, so that a program that posts it or takes
/// from it shows. The message a planted queue holds: an object the program must leave as it
/// found it.
const LIKE_NEW: u32 = 0;
pub(super) const PLANTED_VALUE: u32 = 3;
const PLANTED_MESSAGE: &[u8] = b"grader";
/// How old a planted semaphore's file is made: a day, older than any "left over from a crashed
/// run" a program may guess from a file's time.
const PLANTED_AGE: Duration = Duration::from_secs(24 * 3600);

impl Planted {
    /// A planted object; a semaphore at `value`.
    pub(super) fn with_value(
        mechanism: &'static str,
        name: &str,
        value: u32,
    ) -> Result<Planted, Fail> {
        let c_name = CString::new(name).map_err(|e| Fail::Grader(e.to_string()))?;
        let failed =
            |what: &str| Fail::Grader(format!("{what} {name}: {}", nix::errno::Errno::last()));
        if mechanism == "semaphores" {
            // SAFETY: a valid C string; mode and value are the variadic arguments O_CREAT reads.
            let sem = unsafe {
                libc::sem_open(
                    c_name.as_ptr(),
                    libc::O_CREAT | libc::O_EXCL,
                    0o600 as libc::c_uint,
                    value as libc::c_uint,
                )
            };
            if sem == libc::SEM_FAILED {
                return Err(failed("sem_open"));
            }
            // SAFETY: opened just above.
            unsafe { libc::sem_close(sem) };
            // Made long ago, as by a program that still runs: its age does not make it the
            // program's.
            let long_ago = std::time::SystemTime::now() - PLANTED_AGE;
            std::fs::File::options()
                .write(true)
                .open(probe::semaphore_file(name))
                .and_then(|file| {
                    file.set_times(
                        std::fs::FileTimes::new()
                            .set_accessed(long_ago)
                            .set_modified(long_ago),
                    )
                })
                .map_err(|e| Fail::Grader(format!("dating {name} back: {e}")))?;
        } else {
            // SAFETY: a zeroed mq_attr, then filled in.
            let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
            attr.mq_maxmsg = 1;
            attr.mq_msgsize = SIGNAL_SIZE as i64;
            // SAFETY: a valid C string and attributes; mode and attributes are what O_CREAT
            // reads.
            let mqd = unsafe {
                libc::mq_open(
                    c_name.as_ptr(),
                    libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                    0o600 as libc::mode_t,
                    &attr as *const libc::mq_attr,
                )
            };
            if mqd < 0 {
                return Err(failed("mq_open"));
            }
            // SAFETY: mqd is open; the message is a valid buffer.
            let sent = unsafe {
                libc::mq_send(
                    mqd,
                    PLANTED_MESSAGE.as_ptr().cast(),
                    PLANTED_MESSAGE.len(),
                    0,
                )
            };
            // SAFETY: opened above.
            unsafe { libc::mq_close(mqd) };
            if sent != 0 {
                return Err(failed("mq_send"));
            }
        }
        let inode = std::fs::metadata(probe::semaphore_file(name))
            .ok()
            .filter(|_| mechanism == "semaphores")
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m));
        Ok(Planted {
            mechanism,
            name: name.to_string(),
            value,
            inode,
        })
    }

    /// Whether it is still there as the grader made it; what became of it otherwise.
    pub(super) fn changed(&self) -> Option<String> {
        if self.mechanism == "semaphores" {
            match probe::semaphore_value(&self.name) {
                None => Some("was removed".into()),
                Some(value) if value == self.value => None,
                Some(value) => Some(format!("went from {} to {value}", self.value)),
            }
        } else {
            match probe::queue_attributes(&self.name) {
                None => Some("was removed".into()),
                Some(a) if a.messages == 1 => None,
                Some(a) => Some(format!("held {} messages instead of 1", a.messages)),
            }
        }
    }
}

impl Drop for Planted {
    fn drop(&mut self) {
        if self.mechanism == "semaphores" {
            let _ = std::fs::remove_file(probe::semaphore_file(&self.name));
        } else {
            let _ = nix::mqueue::mq_unlink(self.name.as_str());
        }
    }
}

/// What is wrong with the name `create_fails` gives.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// Nothing: an object the grader made has it (`EEXIST`).
    Taken,
    /// One character past the system's limit (`ENAMETOOLONG`): NAME_MAX (255) after the slash
    /// for a queue, 251 for a semaphore (its file is `sem.` and the name).
    TooLong,
    /// A short name with a second slash: glibc's `sem_open()` says `EINVAL`, `mq_open()`
    /// `EACCES`. Neither is `EEXIST`, and the name is far below any length limit: only its
    /// errno tells the kind.
    Slashed,
}

/// `create()` with the name at `taken` (0 ready, 1 ok) already in use, or refused by the system
/// (`refused`: a name longer than NAME_MAX, or one with a second slash): the parent must report
/// `kind`, remove what it made, leave the other object alone and release what it holds.
fn create_fails(
    run: &mut Run,
    mechanism: &'static str,
    taken: usize,
    refused: Refused,
) -> Result<String, Fail> {
    let roles = ["ready", "ok"];
    let planted = refused == Refused::Taken;
    let mut names = [run.ipc_name("ready"), run.ipc_name("ok")];
    match refused {
        Refused::Taken => {}
        Refused::TooLong => {
            names[taken] = name_of_length(run, roles[taken], longest_name(mechanism) + 1);
        }
        Refused::Slashed => names[taken] = format!("{}/x", run.ipc_name(roles[taken])),
    }
    // The ok name is taken by a semaphore at 0, the program's own user's, as a semaphore it
    // made itself would be: only O_EXCL tells them apart. The ready name by one at 3.
    let like_new = planted && mechanism == "semaphores" && taken == 1;
    let plant = if planted {
        let value = if like_new { LIKE_NEW } else { PLANTED_VALUE };
        let plant = Planted::with_value(mechanism, &names[taken], value)?;
        if like_new && let Some((uid, gid)) = run.program_user() {
            std::os::unix::fs::chown(probe::semaphore_file(&names[taken]), Some(uid), Some(gid))?;
        }
        Some(plant)
    } else {
        None
    };
    let (name, other) = (names[taken].clone(), names[1 - taken].clone());
    let (want, situation) = if like_new {
        (
            "exists",
            format!("with {name} already there (a semaphore at 0, the program user's)"),
        )
    } else if planted {
        ("exists", format!("with {name} already there"))
    } else if refused == Refused::TooLong {
        (
            "open",
            format!(
                "with a name one character past the limit ({}..., {} characters after the \
                 slash: ENAMETOOLONG)",
                &name[..24],
                name.len() - 1
            ),
        )
    } else {
        let errno = if mechanism == "semaphores" {
            "sem_open() says EINVAL"
        } else {
            "mq_open() says EACCES"
        };
        (
            "open",
            format!(
                "with a short name that has a second slash ({name}, {} characters: {errno}, \
                 not EEXIST)",
                name.len()
            ),
        )
    };
    let mut launch = Launch::new(run, mechanism, names.clone(), 10, &[])?;
    let message = launch.proc.recv_any()?;
    // At `ready` the parent still maps the semaphores it uses: the grader's, shared, or one
    // made in its stead.
    let replaced = message.kind == "ready"
        && plant.as_ref().and_then(|p| p.inode).is_some_and(|inode| {
            probe::mappings(launch.proc.pid.as_raw())
                .iter()
                .all(|m| !(m.named_semaphore() && m.inode == inode))
        });
    if replaced {
        return Err(Fail::failed(format!(
            "{situation} ({mechanism}), Handoff::create() did not fail (the program said \
             `ready`), and the parent did not map the grader's semaphore (its file, dated a day \
             back, as one another program made long ago would be): create() removed the \
             existing {name} and made its own in its place. sem_open(O_CREAT | O_EXCL) says \
             EEXIST for it, and EEXIST is HandoffError::Exists, however old or unused the \
             semaphore looks: a name that existed before is not yours to remove"
        )));
    }
    if message.kind != "failed" {
        let what = if like_new {
            "open each name with O_CREAT | O_EXCL, so that a name in use is an error, not \
             shared. Opened without O_EXCL, sem_open() opens the existing semaphore; and its \
             value tells nothing: this one was at 0, as a new one is"
        } else if planted {
            "open each name with O_CREAT | O_EXCL, so that a name in use is an error, not shared"
        } else {
            "report the error of sem_open() or mq_open() as HandoffError::Open"
        };
        return Err(Fail::failed(format!(
            "{situation} ({mechanism}), Handoff::create() did not fail (the program said `{}`): \
             {what}",
            message.kind
        )));
    }
    let kind = message.get("kind").unwrap_or("none");
    if kind != want || message.get("role") != Some("parent") {
        let rule = if planted {
            "EEXIST is HandoffError::Exists (kind=exists)"
        } else if kind == "exists" {
            "an error other than EEXIST is HandoffError::Open (kind=open): choose the kind by \
             the errno of the failed call (not by the name, its length or its look, nor Exists \
             for every failure)"
        } else {
            "an error other than EEXIST is HandoffError::Open (kind=open)"
        };
        return Err(Fail::failed(format!(
            "{situation} ({mechanism}), the {} failed with kind={kind} ({}) instead of \
             kind={want}: {rule}",
            message.get("role").unwrap_or("?"),
            message.get("error").unwrap_or("")
        )));
    }
    // The error names the name that failed, so that the user knows which one to look at.
    let error = message.get("error").unwrap_or("");
    if !error.contains(name.as_str()) || error.contains(other.as_str()) {
        return Err(Fail::failed(format!(
            "{situation} ({mechanism}), the parent reported kind={kind} as it should, but its \
             error `{error}` does not name {name}, whose open failed{}: the error carries the \
             name of the call that failed",
            if error.contains(other.as_str()) {
                format!(" (it names {other}, which create() had made)")
            } else {
                String::new()
            }
        )));
    }
    // The parent waits for `exit`: what it made must be gone, what it holds released.
    let left = probe::name_exists(&other);
    let change = plant.as_ref().and_then(Planted::changed);
    if left && let Some(change) = &change {
        return Err(Fail::failed(format!(
            "{situation} ({mechanism}), Handoff::create() failed as it should, but left behind \
             {other}, which it had created, and the existing {name}, which was not the \
             program's, {change}: the clean-up removed the name that failed instead of the one \
             create() had made. Remove only what was already created (sem_unlink or mq_unlink \
             of that name, then close)"
        )));
    }
    if left {
        return Err(Fail::failed(format!(
            "{situation} ({mechanism}), Handoff::create() failed as it should, but left behind \
             {other}, which it had created: when a step fails, remove what was already created \
             (sem_unlink or mq_unlink, then close)"
        )));
    }
    if let Some(change) = change {
        return Err(Fail::failed(format!(
            "{situation} ({mechanism}), the existing {name}, which was not the program's, {change}: \
             when create() fails, remove only what it created itself"
        )));
    }
    let held = held_by(launch.proc.pid.as_raw(), &names);
    if !held.is_empty() {
        // With the ok name taken, the one semaphore create() made is the ready one, its name
        // already removed (checked above): a semaphore still mapped was not closed.
        let which = if mechanism == "semaphores"
            && taken == 1
            && held.iter().any(|h| h.starts_with("a named semaphore"))
        {
            format!(
                " (the semaphore {other}, which create() had made: its name was removed, but \
                 the semaphore was not closed with sem_close())"
            )
        } else {
            String::new()
        };
        return Err(Fail::failed(format!(
            "{situation} ({mechanism}), Handoff::create() failed as it should, but the parent \
             still held {}{which}: when a step fails, close and unmap what was already made",
            held.join(", ")
        )));
    }
    launch.proc.send("exit", &[])?;
    launch.proc.wait()?;
    drop(plant);
    Ok(format!(
        "{mechanism}, {} {}: kind={want}",
        roles[taken],
        match refused {
            Refused::Taken => "taken",
            Refused::TooLong => "too long",
            Refused::Slashed => "with a second slash",
        }
    ))
}

/// `create()` when the ready name is free at the program's first look and taken right after:
/// the grader holds the parent as its first system call naming `/dev/shm/sem.READY` returns
/// and, if that call did not make the semaphore, makes it then. `sem_open(O_CREAT | O_EXCL)`
/// fails with `EEXIST` whatever came before; a look first (the name is free) and an open without
/// `O_EXCL` shares the grader's semaphore.
fn create_races(run: &mut Run) -> Result<String, Fail> {
    let names = [run.ipc_name("ready"), run.ipc_name("ok")];
    let ready = names[0].clone();
    // Kept for the life of the grader (a few bytes a run).
    let file: &'static str = probe::semaphore_file(&ready).leak();
    let seed: u64 = run.rng().random();
    let (mut proc, tracer) = spawn_traced(run, &names, Call::naming(file), Action::HoldAfter)?;
    let Some(mut tracer) = tracer else {
        run.note(
            "the grader may not trace the parent here (ptrace): a name taken right after a \
             look was not tried",
        );
        proc.kill_tree();
        return Ok("a name taken after a look: not tried (no ptrace)".into());
    };
    let mut plant = None;
    let mut said = None;
    match tracer.wait(&mut proc, Instant::now() + Duration::from_secs(5))? {
        Reached::Call if !std::path::Path::new(file).exists() => {
            // At 0, as the program's own would be: its value tells nothing.
            let planted = Planted::with_value("semaphores", &ready, LIKE_NEW)?;
            if let Some((uid, gid)) = run.program_user() {
                std::os::unix::fs::chown(file, Some(uid), Some(gid))?;
            }
            plant = Some(planted);
        }
        Reached::Call => {}
        Reached::Passed(message) => said = message,
    }
    tracer.release();
    let Some(plant) = plant else {
        // The first call naming the semaphore made it: no window to try. The run goes on.
        if let Some(message) = said {
            return Err(match message.kind.as_str() {
                "failed" => report_failure(&message, "semaphores"),
                kind => Fail::failed(format!(
                    "the program said `{kind}` before it created {ready}"
                )),
            });
        }
        let launch = Launch {
            proc,
            names,
            mechanism: "semaphores",
            rounds: 10,
            seed,
        };
        launch.run_through("10 rounds with semaphores, the creation traced")?;
        return Ok("semaphores: the first call naming the ready semaphore created it".into());
    };
    let situation = format!(
        "the grader held the parent as its first system call naming {file} returned, which had \
         not created it, and created the semaphore {ready} then (semaphores)"
    );
    let message = proc.recv_any()?;
    if message.kind != "failed" {
        proc.kill_tree();
        return Err(Fail::failed(format!(
            "{situation}: Handoff::create() did not fail (the program said `{}`), it shared the \
             grader's semaphore (at 0, as a new one is). Looking whether the name is free, then \
             opening it, is a race another process can win between the two; and sem_open() \
             without O_EXCL opens a semaphore that comes to exist meanwhile: open with O_CREAT | \
             O_EXCL and take EEXIST as Exists",
            message.kind
        )));
    }
    let kind = message.get("kind").unwrap_or("none");
    if kind != "exists" {
        return Err(Fail::failed(format!(
            "{situation}: Handoff::create() failed with kind={kind} ({}) instead of \
             kind=exists: EEXIST is HandoffError::Exists",
            message.get("error").unwrap_or("")
        )));
    }
    if let Some(change) = plant.changed() {
        return Err(Fail::failed(format!(
            "{situation}: Handoff::create() failed with kind=exists, but the grader's \
             semaphore, which was not the program's, {change}: when create() fails, remove only \
             what it created itself"
        )));
    }
    proc.send("exit", &[])?;
    proc.wait()?;
    drop(plant);
    Ok("semaphores, ready taken right after a look: kind=exists".into())
}

/// `unlink()` when one name is already gone (the grader removes it while the parent is paused
/// after `create()`; `gone`: 0 the ready name, 1 the ok name): the other name must still be
/// unlinked, and the error reported, whichever of the two failed.
fn unlink_fails(run: &mut Run, gone: usize) -> Result<String, Fail> {
    let names = [run.ipc_name("ready"), run.ipc_name("ok")];
    let mut launch = Launch::new(run, "semaphores", names, 10, &["--pause-after-create"])?;
    let created = launch.proc.recv_any()?;
    if created.kind != "created" {
        return Err(match created.kind.as_str() {
            "failed" => report_failure(&created, "semaphores"),
            kind => Fail::failed(format!(
                "the program said `{kind}` where it should have said `created`"
            )),
        });
    }
    let (removed, other) = (launch.names[gone].clone(), launch.names[1 - gone].clone());
    let which = ["ready", "ok"][gone];
    std::fs::remove_file(probe::semaphore_file(&removed))
        .map_err(|e| Fail::Grader(format!("removing {removed}: {e}")))?;
    launch.proc.send("go", &[])?;
    let message = launch.proc.recv_any()?;
    let reported = message.kind == "failed" && message.get("kind") == Some("unlink");
    if message.kind == "failed" && !reported {
        return Err(report_failure(&message, "semaphores"));
    }
    if probe::name_exists(&other) && reported {
        return Err(Fail::failed(format!(
            "when unlinking {removed} failed (the grader had removed it), Handoff::unlink() left \
             {other} in place: try both names, then return the first error"
        )));
    }
    if probe::name_exists(&other) {
        return Err(Fail::failed(format!(
            "Handoff::unlink() returned without an error and left {other} in place (the grader \
             had removed {removed} itself): unlink both names there, with sem_unlink(), and \
             return the first error"
        )));
    }
    if !reported {
        let second = if gone == 1 {
            format!(
                " The ready name {other} was unlinked, and only the ok name's sem_unlink() \
                 failed: its error was dropped. Keep the result of both unlinks and return the \
                 first that failed, whichever name it was"
            )
        } else {
            String::new()
        };
        return Err(Fail::failed(format!(
            "Handoff::unlink() reported no error although the {which} name {removed} was \
             already gone (sem_unlink said ENOENT): return the first error, as \
             HandoffError::Unlink (kind=unlink).{second}"
        )));
    }
    let error = message.get("error").unwrap_or("");
    if !error.contains(removed.as_str()) {
        return Err(Fail::failed(format!(
            "the grader removed the {which} name {removed} before Handoff::unlink(): unlink() \
             reported `{error}`, which does not name it: report the unlink that failed, as \
             HandoffError::Unlink with its name and errno"
        )));
    }
    launch.run_through(&format!(
        "10 rounds with semaphores after a failed unlink of the {which} name"
    ))?;
    Ok(format!(
        "unlink with the {which} name gone: kind=unlink, the other name unlinked"
    ))
}

/// `create()` whose `mmap()` of the slot fails (the grader makes it say `ENOMEM`, as an
/// address-space limit would): the parent must report `kind=mmap` and have nothing left, in
/// whatever order create() makes the slot and the signals: no name, no semaphore, no queue.
fn create_map_fails(run: &mut Run, mechanism: &'static str) -> Result<String, Fail> {
    let names = [run.ipc_name("ready"), run.ipc_name("ok")];
    // The slot's mapping: MAP_SHARED | MAP_ANONYMOUS (glibc maps a semaphore's file, not
    // anonymous memory).
    let flags = (libc::MAP_SHARED | libc::MAP_ANONYMOUS) as u64;
    let mask = flags | libc::MAP_PRIVATE as u64;
    let call = Call::bits(libc::SYS_mmap, 3, mask, flags);
    let mut proc = run.spawn_stopped(&arguments(mechanism, &names, 10, &[]))?;
    let pid = proc.pid.as_raw();
    let tracer = Tracer::attach(pid, call, Action::Fail(libc::ENOMEM))?;
    force::resume(pid)?;
    let Some(mut tracer) = tracer else {
        proc.kill_tree();
        return Ok(format!(
            "{mechanism}: a failing mmap() not tried (no ptrace)"
        ));
    };
    let message = proc.recv_any()?;
    let failed = tracer.failed_before(Instant::now() + Duration::from_millis(500))?;
    let remove = || {
        for name in &names {
            if mechanism == "semaphores" {
                let _ = std::fs::remove_file(probe::semaphore_file(name));
            } else {
                let _ = nix::mqueue::mq_unlink(name.as_str());
            }
        }
    };
    if !failed {
        proc.kill_tree();
        remove();
        return Ok(format!(
            "{mechanism}: no shared anonymous mmap() in create() seen"
        ));
    }
    let situation = format!(
        "the grader made the parent's mmap() of the slot (MAP_SHARED | MAP_ANONYMOUS) fail \
         with ENOMEM ({mechanism})"
    );
    if message.kind != "failed" {
        proc.kill_tree();
        remove();
        return Err(Fail::failed(format!(
            "{situation}: the program went on and said `{}`: a failed mmap() is \
             HandoffError::Map (kind=mmap)",
            message.kind
        )));
    }
    let kind = message.get("kind").unwrap_or("none");
    if kind != "mmap" {
        remove();
        return Err(Fail::failed(format!(
            "{situation}: Handoff::create() failed with kind={kind} ({}) instead of kind=mmap: \
             a failed mmap() is HandoffError::Map",
            message.get("error").unwrap_or("")
        )));
    }
    let left: Vec<&String> = names.iter().filter(|n| probe::name_exists(n)).collect();
    let held = held_by(pid, &names);
    if !left.is_empty() {
        let left = left
            .iter()
            .map(|n| n.as_str())
            .collect::<Vec<_>>()
            .join(" and ");
        let and_held = if held.is_empty() {
            String::new()
        } else {
            format!(", and the parent still held {}", held.join(", "))
        };
        remove();
        return Err(Fail::failed(format!(
            "{situation}: Handoff::create() failed with kind=mmap as it should, but left behind \
             {left}, which it had created before the mapping failed{and_held}: when a step \
             fails, remove what was already made (sem_unlink or mq_unlink, then close), the \
             mapping's failure as much as an open's; a rerun with the same names would find \
             them taken"
        )));
    }
    if !held.is_empty() {
        return Err(Fail::failed(format!(
            "{situation}: Handoff::create() failed with kind=mmap as it should, but the parent \
             still held {}: when a step fails, close what was already made",
            held.join(", ")
        )));
    }
    proc.send("exit", &[])?;
    proc.wait()?;
    Ok(format!(
        "{mechanism}, the slot's mmap() failing: kind=mmap, nothing left"
    ))
}

/// The most characters after the slash that the system accepts in a name: NAME_MAX (255) for
/// a queue; for a semaphore 251, as its file `/dev/shm/sem.NAME` must fit in NAME_MAX.
fn longest_name(mechanism: &str) -> usize {
    if mechanism == "semaphores" { 251 } else { 255 }
}

/// A name of `role` with `length` characters after its slash.
fn name_of_length(run: &mut Run, role: &str, length: usize) -> String {
    let prefix = run.ipc_name(role).len() - role.len();
    let name = run.ipc_name(&format!(
        "{role}-{}",
        "x".repeat(length + 1 - prefix - role.len() - 1)
    ));
    debug_assert_eq!(name.len(), length + 1);
    name
}

/// `create()` with names at the exact edge of what the system accepts (`longest_name`): the
/// handoff must be made and work; one character more is refused by the system (`create_fails`).
fn names_at_the_edge(run: &mut Run, mechanism: &'static str) -> Result<String, Fail> {
    let longest = longest_name(mechanism);
    let names = [
        name_of_length(run, "ready", longest),
        name_of_length(run, "ok", longest),
    ];
    let mut launch = Launch::new(run, mechanism, names, 10, &[])?;
    let first = launch.proc.recv_any()?;
    if first.kind == "failed" {
        let kind = first.get("kind").unwrap_or("none");
        let (call, limit) = if mechanism == "semaphores" {
            (
                "sem_open()",
                "its file /dev/shm/sem.NAME, of NAME_MAX characters, is within the limit",
            )
        } else {
            (
                "mq_open()",
                "NAME_MAX bounds the name without its leading slash",
            )
        };
        return Err(Fail::failed(format!(
            "with {mechanism} names of exactly {longest} characters after their slash ({}...), \
             which {call} accepts, Handoff::create() failed with kind={kind} ({}): {limit}. \
             Leave the limit to {call} and report its error; a length checked by hand must \
             match the system's",
            &launch.names[0][..24],
            first.get("error").unwrap_or("")
        )));
    }
    if first.kind != "ready" {
        return Err(Fail::failed(format!(
            "the program said `{}` where it should have been ready",
            first.kind
        )));
    }
    launch.proc.put_back(first);
    launch.run_through(&format!(
        "10 rounds with {mechanism} named by {longest} characters after the slash"
    ))?;
    Ok(format!(
        "{mechanism}, names of {longest} characters: created and used"
    ))
}

/// `unlink()` when both names are already gone (the grader removes them while the parent is
/// paused after `create()`): both `sem_unlink()` calls fail, and the error reported must be the
/// first, the ready name's.
fn unlink_both_fail(run: &mut Run) -> Result<String, Fail> {
    let names = [run.ipc_name("ready"), run.ipc_name("ok")];
    let mut launch = Launch::new(run, "semaphores", names, 10, &["--pause-after-create"])?;
    let created = launch.proc.recv_any()?;
    if created.kind != "created" {
        return Err(match created.kind.as_str() {
            "failed" => report_failure(&created, "semaphores"),
            kind => Fail::failed(format!(
                "the program said `{kind}` where it should have said `created`"
            )),
        });
    }
    let (ready, ok) = (launch.names[0].clone(), launch.names[1].clone());
    for name in [&ready, &ok] {
        std::fs::remove_file(probe::semaphore_file(name))
            .map_err(|e| Fail::Grader(format!("removing {name}: {e}")))?;
    }
    launch.proc.send("go", &[])?;
    let message = launch.proc.recv_any()?;
    if message.kind != "failed" || message.get("kind") != Some("unlink") {
        if message.kind == "failed" {
            return Err(report_failure(&message, "semaphores"));
        }
        return Err(Fail::failed(format!(
            "Handoff::unlink() reported no error although the grader had removed both {ready} \
             and {ok} (each sem_unlink() said ENOENT; the program said `{}`): return the first \
             error, as HandoffError::Unlink (kind=unlink)",
            message.kind
        )));
    }
    let error = message.get("error").unwrap_or("");
    if !error.contains(ready.as_str()) || error.contains(ok.as_str()) {
        return Err(Fail::failed(format!(
            "the grader removed both {ready} and {ok} before Handoff::unlink(), so that both \
             sem_unlink() calls failed: unlink() reported `{error}`, not the first failure (of \
             the ready name {ready}). Try both names in order, then return the first error, \
             not the last"
        )));
    }
    launch.run_through("10 rounds with semaphores after two failed unlinks")?;
    Ok("unlink of two names gone: the first error, the ready name's".into())
}

pub fn error_paths(run: &mut Run) -> Result<String, Fail> {
    let mut notes = Vec::new();
    for mechanism in ["semaphores", "queues"] {
        notes.push(create_fails(run, mechanism, 1, Refused::Taken)?);
        notes.push(create_fails(run, mechanism, 0, Refused::Taken)?);
        notes.push(create_fails(run, mechanism, 1, Refused::TooLong)?);
        notes.push(create_fails(run, mechanism, 1, Refused::Slashed)?);
        notes.push(create_cleanup_fails(run, mechanism, CleanupStep::Unlink)?);
        notes.push(create_cleanup_fails(run, mechanism, CleanupStep::Close)?);
    }
    notes.push(create_map_fails(run, "semaphores")?);
    notes.push(create_races(run)?);
    notes.push(names_at_the_edge(run, "semaphores")?);
    notes.push(names_at_the_edge(run, "queues")?);
    notes.push(unlink_fails(run, 0)?);
    notes.push(unlink_fails(run, 1)?);
    notes.push(unlink_both_fail(run)?);
    notes.push(unlink_fails_with_eacces(run)?);
    notes.push(create_fails_eacces_while_taken(run)?);
    notes.push(super::forced_waits::wait_errors(run)?);
    notes.push(super::forced_waits::post_error(run)?);
    notes.push(super::forced_waits::consumer_post_error(run)?);
    Ok(format!(
        "every failure was reported by kind, removed what create() had made and left the \
         existing object alone: {}",
        notes.join("; ")
    ))
}

/// `unlink()` whose `sem_unlink()` of the ok name fails with `EACCES` (the grader makes it
/// fail, as for a name another user owns): the error reported must carry that name and that
/// errno, the one the call returned; every other test of unlink() gives `ENOENT`.
fn unlink_fails_with_eacces(run: &mut Run) -> Result<String, Fail> {
    let names = [run.ipc_name("ready"), run.ipc_name("ok")];
    let ok = names[1].clone();
    let file: &'static str = probe::semaphore_file(&ok).leak();
    let seed: u64 = run.rng().random();
    let call = Call {
        number: libc::SYS_unlink,
        matching: Match::Names(file),
    };
    let (mut proc, tracer) = spawn_traced(run, &names, call, Action::Fail(libc::EACCES))?;
    let remove = || probe::remove_semaphores(&names);
    let Some(mut tracer) = tracer else {
        proc.kill_tree();
        remove();
        return Ok("an unlink failing with EACCES: not tried (no ptrace)".into());
    };
    let message = proc.recv_any()?;
    let failed = tracer.failed_before(Instant::now() + Duration::from_millis(500))?;
    if !failed {
        proc.put_back(message);
        run_through_removing(
            proc,
            &names,
            seed,
            "10 rounds with semaphores, unlink() traced",
        )?;
        return Ok(format!("semaphores: no unlink of {ok} seen"));
    }
    let situation = format!(
        "the grader made the parent's sem_unlink() of the ok name {ok} in Handoff::unlink() fail \
         with EACCES (as for a name another user owns; the ready name's went through)"
    );
    if message.kind != "failed" || message.get("kind") != Some("unlink") {
        proc.kill_tree();
        remove();
        if message.kind == "failed" {
            return Err(report_failure(&message, "semaphores"));
        }
        return Err(Fail::failed(format!(
            "{situation}: the program said `{}`, with no error: return the first error of \
             unlink(), as HandoffError::Unlink (kind=unlink)",
            message.kind
        )));
    }
    let error = message.get("error").unwrap_or("").to_string();
    if !error.contains("EACCES") || !error.contains(ok.as_str()) {
        proc.kill_tree();
        remove();
        let why = if !error.contains("EACCES") {
            "not the errno sem_unlink() returned (EACCES): take the errno from the failed call \
             (Errno::last() right after it), do not assume one: an unlink does not fail only \
             when the name is gone"
        } else {
            "which does not name it: report the unlink that failed, with its name"
        };
        return Err(Fail::failed(format!(
            "{situation}: unlink() reported `{error}`, {why} (HandoffError::Unlink {{ name, errno \
             }})"
        )));
    }
    run_through_removing(
        proc,
        &names,
        seed,
        "10 rounds with semaphores after an unlink failing with EACCES",
    )?;
    Ok("unlink of the ok name failing with EACCES: kind=unlink, its name and EACCES".into())
}

/// `create()` whose `sem_open(O_CREAT | O_EXCL)` of the ok name fails with `EACCES` while a
/// semaphore of that name exists (the grader planted one, and makes the `link()` by which
/// glibc's `sem_open()` puts the new semaphore under its name fail with `EACCES`): the kind is
/// the errno's, `open`, whatever is under the name; the ready semaphore made is removed, the
/// planted one left as it was.
fn create_fails_eacces_while_taken(run: &mut Run) -> Result<String, Fail> {
    let names = [run.ipc_name("ready"), run.ipc_name("ok")];
    let (ready, ok) = (names[0].clone(), names[1].clone());
    let plant = Planted::with_value("semaphores", &ok, PLANTED_VALUE)?;
    let file: &'static str = probe::semaphore_file(&ok).leak();
    let call = Call {
        number: libc::SYS_link,
        matching: Match::Names(file),
    };
    let (mut proc, tracer) = spawn_traced(run, &names, call, Action::Fail(libc::EACCES))?;
    let remove_ready = || {
        let _ = std::fs::remove_file(probe::semaphore_file(&ready));
    };
    let Some(mut tracer) = tracer else {
        proc.kill_tree();
        remove_ready();
        return Ok("an open failing with EACCES on a taken name: not tried (no ptrace)".into());
    };
    let message = proc.recv_any()?;
    let failed = tracer.failed_before(Instant::now() + Duration::from_millis(500))?;
    if !failed {
        // No link() of the ok name: create() made it some other way, or not at all.
        proc.kill_tree();
        remove_ready();
        if message.kind == "failed" && message.get("kind") != Some("exists") {
            return Err(report_failure(&message, "semaphores"));
        }
        return Ok("semaphores: no link() of the ok name seen".into());
    }
    let kind = message.get("kind").unwrap_or("none");
    let situation = format!(
        "with {ok} already there (the grader's), the grader made the link() by which \
         sem_open(O_CREAT | O_EXCL) puts the new ok semaphore under its name fail with EACCES, \
         not EEXIST (semaphores)"
    );
    if message.kind != "failed" || kind != "open" || message.get("role") != Some("parent") {
        proc.kill_tree();
        remove_ready();
        let rule = if kind == "exists" {
            "the kind must come from the errno of the failed sem_open() (EACCES: \
             HandoffError::Open), not from whether a file is under the name in /dev/shm: \
             something being there does not say why the open failed"
        } else {
            "an error other than EEXIST is HandoffError::Open (kind=open), with that errno"
        };
        return Err(Fail::failed(format!(
            "{situation}: the program said `{}` with kind={kind} ({}) instead of kind=open \
             (EACCES): {rule}",
            message.kind,
            message.get("error").unwrap_or("")
        )));
    }
    let error = message.get("error").unwrap_or("").to_string();
    if !error.contains("EACCES") {
        proc.kill_tree();
        remove_ready();
        return Err(Fail::failed(format!(
            "{situation}: create() reported `{error}`, not EACCES: report the errno of the \
             failed call (HandoffError::Open {{ name, errno }})"
        )));
    }
    let left = probe::name_exists(&ready);
    let change = plant.changed();
    if left || change.is_some() {
        proc.kill_tree();
        remove_ready();
        let what = match (left, change) {
            (true, _) => format!("left behind {ready}, which it had created"),
            (false, Some(change)) => {
                format!("the existing {ok}, which was not the program's, {change}")
            }
            (false, None) => unreachable!(),
        };
        return Err(Fail::failed(format!(
            "{situation}: create() failed with kind=open as it should, but {what}: remove what \
             was already created, and only that"
        )));
    }
    proc.send("exit", &[])?;
    proc.wait()?;
    drop(plant);
    Ok("semaphores, ok open failing with EACCES on a taken name: kind=open".into())
}
