//! The error paths of `create()`: a name already taken, a name
//! taken right after the program's first look at it, a name the system refuses, a failed
//! `mmap()` of the slot, an open failing with `EACCES` while the name is taken.

use std::time::{Duration, Instant};

use rand::RngExt;

use super::handover::{Launch, arguments, report_failure, spawn_traced};
use super::name_limits::{longest_name, name_of_length};
use super::names::held_by;
use super::planted::{LIKE_NEW, PLANTED_VALUE, Planted};
use super::probe;
use super::process_left::signals_as_main_set;
use crate::engine::tracer::{Action, Call, Match, Reached, Tracer};
use crate::engine::{Fail, Run, force};

/// What is wrong with the name `create_fails` gives.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
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
pub(super) fn create_fails(
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
    let failed = format!("{situation} ({mechanism}), once Handoff::create() had failed");
    signals_as_main_set(launch.proc.pid.as_raw(), &failed, false)?;
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
pub(super) fn create_races(run: &mut Run) -> Result<String, Fail> {
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

/// `create()` whose `mmap()` of the slot fails (the grader makes it say `ENOMEM`, as an
/// address-space limit would): the parent must report `kind=mmap` and have nothing left, in
/// whatever order create() makes the slot and the signals: no name, no semaphore, no queue.
pub(super) fn create_map_fails(run: &mut Run, mechanism: &'static str) -> Result<String, Fail> {
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
    let failed = format!("{situation}, once Handoff::create() had failed with kind=mmap");
    signals_as_main_set(proc.pid.as_raw(), &failed, false)?;
    proc.send("exit", &[])?;
    proc.wait()?;
    Ok(format!(
        "{mechanism}, the slot's mmap() failing: kind=mmap, nothing left"
    ))
}

/// `create()` whose open of one name (`failing`: 0 ready, 1 ok) fails with `EACCES` while an
/// object of that name exists (the grader planted one, and makes the call that would create
/// the new one fail with `EACCES`: the `link()` by which glibc's `sem_open()` puts a new
/// semaphore under its name, or `mq_open()`): the kind is the errno's, `open`, whatever is
/// under the name; what create() made before is removed, the planted object left as it was.
/// A failed `O_CREAT | O_EXCL` open made nothing: the name that failed is never create()'s
/// to remove.
pub(super) fn create_fails_eacces_while_taken(
    run: &mut Run,
    mechanism: &'static str,
    failing: usize,
) -> Result<String, Fail> {
    let names = [run.ipc_name("ready"), run.ipc_name("ok")];
    let (name, other) = (names[failing].clone(), names[1 - failing].clone());
    let which = ["ready", "ok"][failing];
    let plant = Planted::with_value(mechanism, &name, PLANTED_VALUE)?;
    let (call, creating) = if mechanism == "semaphores" {
        let file: &'static str = probe::semaphore_file(&name).leak();
        let call = Call {
            number: libc::SYS_link,
            matching: Match::Names(file),
        };
        (
            call,
            "the link() by which sem_open(O_CREAT | O_EXCL) puts the new semaphore under its name",
        )
    } else {
        // glibc's mq_open() passes the name without its leading slash.
        let bare: &'static str = name[1..].to_string().leak();
        let call = Call {
            number: libc::SYS_mq_open,
            matching: Match::Names(bare),
        };
        (call, "its mq_open(O_CREAT | O_EXCL)")
    };
    let args = arguments(mechanism, &names, 10, &[]);
    let proc = run.spawn_stopped(&args)?;
    let tracer = Tracer::attach(proc.pid.as_raw(), call, Action::Fail(libc::EACCES))?;
    force::resume(proc.pid.as_raw())?;
    let mut proc = proc;
    let remove_other = || {
        if mechanism == "semaphores" {
            let _ = std::fs::remove_file(probe::semaphore_file(&other));
        } else {
            let _ = nix::mqueue::mq_unlink(other.as_str());
        }
    };
    let Some(mut tracer) = tracer else {
        proc.kill_tree();
        remove_other();
        return Ok("an open failing with EACCES on a taken name: not tried (no ptrace)".into());
    };
    let message = proc.recv_any()?;
    let failed = tracer.failed_before(Instant::now() + Duration::from_millis(500))?;
    if !failed {
        // No such call for that name: create() made it some other way, or not at all.
        proc.kill_tree();
        remove_other();
        if message.kind == "failed" && message.get("kind") != Some("exists") {
            return Err(report_failure(&message, mechanism));
        }
        return Ok(format!(
            "{mechanism}: no creating call of the {which} name seen"
        ));
    }
    let kind = message.get("kind").unwrap_or("none");
    let situation = format!(
        "with {name} already there (the grader's), the grader made {creating} for the {which} \
         name fail with EACCES, not EEXIST ({mechanism})"
    );
    if message.kind != "failed" || kind != "open" || message.get("role") != Some("parent") {
        proc.kill_tree();
        remove_other();
        let under = if mechanism == "semaphores" {
            "a file is under the name in /dev/shm"
        } else {
            "a queue has the name"
        };
        let rule = if kind == "exists" {
            format!(
                "the kind must come from the errno of the failed open (EACCES: \
                 HandoffError::Open), not from whether {under}: something being there does not \
                 say why the open failed"
            )
        } else {
            "an error other than EEXIST is HandoffError::Open (kind=open), with that errno".into()
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
        remove_other();
        return Err(Fail::failed(format!(
            "{situation}: create() reported `{error}`, not EACCES: report the errno of the \
             failed call (HandoffError::Open {{ name, errno }})"
        )));
    }
    let left = probe::name_exists(&other);
    let change = plant.changed();
    if left || change.is_some() {
        proc.kill_tree();
        remove_other();
        let what = match (left, change) {
            (true, _) => format!("left behind {other}, which it had created"),
            (false, Some(change)) => format!(
                "the existing {name}, which was not the program's, {change}: create() removed \
                 the name whose open had failed. An open with O_CREAT | O_EXCL that fails has \
                 made nothing, whatever the errno, so there is nothing of create()'s under that \
                 name; what is there belongs to someone else"
            ),
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
    Ok(format!(
        "{mechanism}, {which} open failing with EACCES on a taken name: kind=open, the existing \
         object left"
    ))
}
