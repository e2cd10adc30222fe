//! `create()` of a name that is taken: by a segment that appears as its `shm_open()` begins,
//! by a dangling link, by the grader at the edges of what a name may be, and by a bank whose
//! holder died: each is kind=exists, and what is at the name is left as it was.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use super::create_failures::expect_kind;
use super::errors::{Taken, first_message, release};
use super::messages::{failure, layout_of};
use super::probe;
use super::segment::{dev_shm, open_segment, told_transfer};
use crate::engine::inspect;
use crate::engine::tracer::{Action, Call, Reached, Tracer};
use crate::engine::{Fail, Run, force};

/// Valid names at the edges of what a file of `/dev/shm` can be called: `/` and 255 characters
/// (NAME_MAX counts the part after the `/`, the file's name), and a name of characters other
/// than letters and digits (`:`, a space, `#`, a non-ASCII letter: the name rule forbids only
/// `/`; a tab, a control character, DEL too). The grader takes each name first (a segment of its own there), so `create()` must get
/// as far as `shm_open()` and say kind=exists, and creates nothing, even under a file size limit
/// no bank fits in (`ftruncate()` comes after). `/` and 256 characters, one
/// past, is too long for the file system: `shm_open()` fails (ENAMETOOLONG), kind=shm-open.
pub(super) fn names_at_the_edge(run: &mut Run) -> Result<(), Fail> {
    let base = run.ipc_name("edge");
    let padded = |len: usize| format!("{base}-{}", "x".repeat(len - base.len() - 1));
    let longest = padded(256);
    let characters = format!("{}:1 #\u{e4}", run.ipc_name("chars"));
    let blank_last = format!("{} ", run.ipc_name("blank"));
    // A tab, a control character and DEL: the control channel's fields end at a newline only.
    let control = format!("{}\t\u{1}\u{7f}", run.ipc_name("control"));
    for (name, what) in [
        (
            &longest,
            "a name of '/' and 255 characters: the file /dev/shm/<255 characters> is within \
             NAME_MAX (255 bytes, the '/' is not part of it); the name rule has no length \
             limit of its own, and only shm_open() may say a name is too long",
        ),
        (
            &characters,
            "a name holding ':', ' ', '#' and a non-ASCII letter ('\u{e4}'): the name rule is \
             a '/' and at least one character, none of them '/'; any other character (not \
             only letters, digits, '.', '_' and '-') is allowed",
        ),
        (
            &blank_last,
            "a name that ends in a blank: the name is taken as given, and trimmed it would be \
             another name, another segment",
        ),
        (
            &control,
            "a name holding a tab, a control character (0x01) and DEL: the name rule forbids \
             only '/', and a file name may hold any byte but '/' and NUL",
        ),
    ] {
        let path = dev_shm(name);
        let Some(_taken) = Taken::create(path.clone(), run.program_user(), b"taken")? else {
            return Err(Fail::Grader(format!("{} exists already", path.display())));
        };
        run.made_by_grader(&path);
        // A size limit no bank fits in changes nothing: shm_open() comes first, and its EEXIST
        // is the answer.
        let mut proc = run.spawn(&[
            "--name",
            name.as_str(),
            "--work",
            "1",
            "--file-size-limit",
            "0",
        ])?;
        let message = first_message(&mut proc)?;
        let judged = expect_kind(
            &message,
            "exists",
            &format!(
                "with the grader's segment at that name already (and a file size limit of 0 \
                 bytes), SharedBank::create() of {what}, so create() must hand it to \
                 shm_open(O_CREAT | O_EXCL), whose EEXIST is BankError::Exists; it"
            ),
            if message.get("kind") == Some("ftruncate") {
                "a valid name that is taken is kind=exists; create()'s steps come in their \
                 order (shm_open(), then ftruncate()), and each error is what that call \
                 returned, so a size that will not fit is found by ftruncate() once the segment \
                 is created, never predicted before shm_open()"
            } else {
                "a valid name that is taken is kind=exists"
            },
        );
        if judged.is_err() {
            proc.kill_tree();
            return judged;
        }
        release(&mut proc)?;
    }
    let past = padded(257);
    let mut proc = run.spawn(&["--name", past.as_str(), "--work", "1"])?;
    let message = first_message(&mut proc)?;
    let judged = expect_kind(
        &message,
        "shm-open",
        "SharedBank::create() of a name of '/' and 256 characters",
        "the name is valid, and one byte past NAME_MAX for the file /dev/shm/<name>: shm_open() \
         fails (ENAMETOOLONG), which is BankError::Open",
    );
    if judged.is_err() {
        proc.kill_tree();
        let _ = std::fs::remove_file(dev_shm(&past));
        return judged;
    }
    release(&mut proc)
}

/// `O_CREAT`, `O_EXCL` and the permission bits, in an `openat()`'s flags and mode.
const CREATE: u64 = libc::O_CREAT as u64;
const EXCLUSIVE: u64 = libc::O_EXCL as u64;
const PERMISSIONS: u64 = 0o7777;

/// A name someone else takes while the program creates it: the program is held at its
/// `shm_open()` of the name (glibc's `openat()` of `/dev/shm/<name>`), after any look it took
/// at whether the name was free, and the grader creates a segment there before letting it go.
/// Only `O_CREAT | O_EXCL` in that very call refuses the name then: kind=exists, and the
/// grader's segment stays as it was. The same call must ask for mode 0600 itself. Without
/// ptrace the segment is there before the program starts. Returns the name.
pub(super) fn taken_at_the_open(run: &mut Run) -> Result<String, Fail> {
    let name = run.ipc_name("taken");
    // Empty, as another creator's segment is between its shm_open() and its ftruncate(): it is
    // that creator's all the same.
    let content: Vec<u8> = Vec::new();
    let path = dev_shm(&name);
    let mut proc = run.spawn_stopped(&["--name", name.as_str(), "--work", "1"])?;
    let pid = proc.pid.as_raw();
    let opening = Call::opening(&path);
    let tracer = Tracer::attach(pid, opening, Action::Hold)?;
    let mut taken = None;
    // What the program's open of the name asked for: its flags and mode.
    let mut asked = None;
    let mut early = None;
    match tracer {
        Some(mut tracer) => {
            force::resume(pid)?;
            let until = std::time::Instant::now() + Duration::from_secs(5);
            match tracer.wait(&mut proc, until)? {
                Reached::Call => {
                    asked = inspect::call_of(pid, pid).map(|(_, args)| (args[2], args[3]));
                    taken = Taken::create(path.clone(), run.program_user(), &content)?;
                }
                Reached::Passed(message) => early = message,
            }
            tracer.release();
        }
        None => {
            run.note(
                "the grader may not trace the program here (ptrace): the name was taken \
                 before it started, not at its shm_open()",
            );
            taken = Taken::create(path.clone(), run.program_user(), &content)?;
            force::resume(pid)?;
        }
    }
    let message = match early {
        Some(message) => message,
        None => first_message(&mut proc)?,
    };
    let Some(taken) = taken else {
        proc.kill_tree();
        return Err(match asked {
            None if message.kind == "failed" => failure(&message),
            None => Fail::failed(format!(
                "SharedBank::create({name:?}) said `{}` without ever opening {} (no openat() of \
                 it): create the segment with shm_open()",
                message.kind,
                path.display()
            )),
            Some(_) => Fail::Grader(format!("{name} exists already")),
        });
    };
    let refused = message.kind == "failed" && message.get("kind") == Some("exists");
    let disturbed = taken.disturbed();
    if let Some((flags, _)) = asked
        && !refused
        && flags & EXCLUSIVE == 0
    {
        let outcome = match message.kind.as_str() {
            "failed" => format!("failed with kind={}", message.get("kind").unwrap_or("none")),
            said => format!("went on (it said `{said}`)"),
        };
        let took = match disturbed {
            Some(what) => format!(", and the grader's segment was {what}"),
            None => String::new(),
        };
        proc.kill_tree();
        return Err(Fail::failed(format!(
            "the grader held the program at its shm_open() of {} (its openat() of the name) and \
             created a segment there just before the call; SharedBank::create({name:?}) \
             {outcome}{took}: its openat() of the name had flags {flags:#o}, without O_EXCL \
             ({:#o}), so it opened the segment that was there instead of failing; a look at \
             the name before the open (stat(), a probe) cannot see a name taken between the \
             look and the open; only shm_open(O_CREAT | O_EXCL) makes the test and the \
             creation one step, and its EEXIST is BankError::Exists, with the segment there \
             left alone",
            path.display(),
            libc::O_EXCL
        )));
    }
    if !refused && let Some(what) = disturbed {
        let outcome = match message.kind.as_str() {
            "failed" => format!("failed with kind={}", message.get("kind").unwrap_or("none")),
            said => format!("went on (it said `{said}`)"),
        };
        proc.kill_tree();
        return Err(Fail::failed(format!(
            "the grader held the program at its shm_open() of {} and created an empty segment \
             there (0 bytes, as another creator's is between its shm_open() and its \
             ftruncate()) just before the call; SharedBank::create({name:?}) {outcome}, and \
             the grader's segment was {what}: an EEXIST makes the name someone else's whatever \
             its size or contents (an empty segment is not a leftover to reclaim: its creator \
             may be about to size it); return BankError::Exists and leave it alone",
            path.display()
        )));
    }
    expect_kind(
        &message,
        "exists",
        &format!(
            "with {} already there, SharedBank::create({name:?})",
            path.display()
        ),
        "shm_open(O_CREAT | O_EXCL) fails with EEXIST, which is BankError::Exists",
    )?;
    release(&mut proc)?;
    if let Some(what) = disturbed {
        return Err(Fail::failed(format!(
            "SharedBank::create({name:?}) reported kind=exists, but the segment that was \
             already there was {what}: a name shm_open(O_CREAT | O_EXCL) refused is someone \
             else's; unlink the name only when a step after your own shm_open() fails"
        )));
    }
    if let Some((flags, mode)) = asked
        && flags & CREATE != 0
        && mode & PERMISSIONS != 0o600
    {
        return Err(Fail::failed(format!(
            "the program's shm_open() that creates {} asked for mode {:o}, not 600: the \
             segment is created with those permissions (less the umask) and stays so until a \
             later chmod, open to other users meanwhile, who keep what they opened; give mode \
             0600 (S_IRUSR | S_IWUSR) in the shm_open(O_CREAT | O_EXCL) itself",
            path.display(),
            mode & PERMISSIONS
        )));
    }
    drop(taken);
    Ok(name)
}

/// A dangling symbolic link at the name (given to the programs' user, so that the program may
/// follow it): `shm_open(O_CREAT | O_EXCL)` refuses it with `EEXIST` without following it; a
/// create without `O_EXCL` follows it and creates the file it names, a probe that opens the name
/// first (`ENOENT` through the link) does not see it: the create must rely on `O_EXCL` alone.
pub(super) fn refuses_dangling_link(run: &mut Run) -> Result<(), Fail> {
    let linked = run.ipc_name("linked");
    let target = dev_shm(&run.ipc_name("link-target"));
    let link = dev_shm(&linked);
    std::os::unix::fs::symlink(&target, &link)
        .map_err(|e| Fail::Grader(format!("making {}: {e}", link.display())))?;
    if let Some((uid, gid)) = run.program_user() {
        std::os::unix::fs::lchown(&link, Some(uid), Some(gid))?;
    }
    let spawned = run.spawn(&["--name", linked.as_str(), "--work", "1"]);
    let outcome = spawned.and_then(|mut proc| {
        let message = first_message(&mut proc)?;
        let created = target.symlink_metadata().is_ok();
        if created {
            return Err(Fail::failed(format!(
                "with a symbolic link at {} naming a file that does not exist, \
                 SharedBank::create({linked:?}) {} and created {}, the file the link names: \
                 the segment was opened with O_CREAT but without O_EXCL (an existence probe \
                 before it does not see a name that is there, or appears, in between); create \
                 it with one shm_open(O_CREAT | O_EXCL), which fails with EEXIST (Exists) \
                 whatever is at the name",
                link.display(),
                if message.kind == "failed" {
                    format!("failed with kind={}", message.get("kind").unwrap_or("none"))
                } else {
                    "went on".to_string()
                },
                target.display()
            )));
        }
        if message.kind == "failed" && message.get("error").is_some_and(|e| e.contains("ELOOP")) {
            return Err(Fail::failed(format!(
                "with a symbolic link at {} (naming no file), SharedBank::create({linked:?}) \
                 failed with kind={} ({}), not exists: ELOOP comes from a shm_open() of the \
                 name without O_EXCL (shm_open() does not follow links), such as a probe \
                 whether the name exists, or a create with O_CREAT alone; with O_CREAT | \
                 O_EXCL it fails with EEXIST for any name that is taken. Create it with one \
                 shm_open(O_CREAT | O_EXCL): a probe first cannot see a name that appears \
                 between the probe and the create",
                link.display(),
                message.get("kind").unwrap_or("none"),
                message.get("error").unwrap_or("")
            )));
        }
        expect_kind(
            &message,
            "exists",
            &format!(
                "with a symbolic link already at {}, SharedBank::create({linked:?})",
                link.display()
            ),
            "shm_open(O_CREAT | O_EXCL) fails with EEXIST for any name that is taken, a link \
             too, which is BankError::Exists",
        )?;
        release(&mut proc)
    });
    let _ = std::fs::remove_file(&target);
    let _ = std::fs::remove_file(&link);
    outcome
}

/// What the grader makes of a bank before another `create()` of its name: none makes it a
/// leftover that `create()` may reclaim.
#[derive(Clone, Copy)]
enum BankState {
    /// Its mutex's holder died with the lock held (a thread of the grader's, ended holding it,
    /// as a worker killed in the middle of a transfer leaves it).
    HolderDied,
    /// Idle and finished: no holder, no journal active, every worker counted finished (as a
    /// coordinator leaves it between its `done` and its `destroy()`, or someone keeping it to
    /// look at).
    Finished,
    /// Just created and left as it is, its times set a year back: tmpfs does not update a
    /// segment's times on stores made through a mapping, so a bank in use for long looks that
    /// old.
    LongUntouched,
}

/// How far back the grader sets the times of a [`BankState::LongUntouched`] bank.
const LONG_AGO: Duration = Duration::from_secs(365 * 24 * 3600);

/// A bank at the name, its creator alive, made [`BankState::HolderDied`],
/// [`BankState::Finished`] or [`BankState::LongUntouched`]: another `create()` of its name is kind=exists, and the bank stays
/// exactly as it was (the name its segment's, every byte unchanged; after a dead holder, the
/// mutex still marked owner-dead, so that the bank's own next locker meets `EOWNERDEAD` and
/// repairs it). Neither what a segment holds nor its age makes it a leftover: `O_EXCL` decides.
pub(super) fn taken_by_a_bank_in_use(run: &mut Run) -> Result<(), Fail> {
    taken_by_a_bank(run, BankState::HolderDied)?;
    taken_by_a_bank(run, BankState::Finished)?;
    taken_by_a_bank(run, BankState::LongUntouched)
}

fn taken_by_a_bank(run: &mut Run, state: BankState) -> Result<(), Fail> {
    told_transfer(run, 1, (0, 1, 1), |run, proc, name| {
        let message = first_message(proc)?;
        if message.kind != "created" {
            return Err(failure(&message));
        }
        let segment = open_segment(name, layout_of(&message)?, proc.pid.as_raw())?;
        match state {
            BankState::HolderDied => probe::DyingHolder::start(&segment, false)?.die(),
            BankState::Finished => {
                // workers = finished = 1, dead = 0: as its one worker leaves it.
                let counts = [1u32, 1, 0].map(u32::to_ne_bytes).concat();
                segment.write_at(segment.layout.counts_at, &counts)?;
            }
            BankState::LongUntouched => {
                let long_ago = std::time::SystemTime::now() - LONG_AGO;
                let times = std::fs::FileTimes::new()
                    .set_accessed(long_ago)
                    .set_modified(long_ago);
                segment.file().set_times(times)?;
            }
        }
        let path = dev_shm(name);
        let inode = segment.file().metadata()?.ino();
        let before = segment.all_bytes()?;
        let mut second = run.spawn(&["--name", name, "--work", "1"])?;
        let said = first_message(&mut second)?;
        let after = segment.all_bytes()?;
        let refused = said.kind == "failed" && said.get("kind") == Some("exists");
        if refused {
            release(&mut second)?;
        } else {
            second.kill_tree();
        }
        let mut changed = Vec::new();
        match std::fs::metadata(&path) {
            Err(_) => changed.push(format!("{} was removed", path.display())),
            Ok(now) if now.ino() != inode => changed.push(format!(
                "{} now names another segment (the bank's was unlinked)",
                path.display()
            )),
            Ok(_) => {}
        }
        let mutex = segment.layout.mutex_at..segment.layout.mutex_at + MUTEX_SIZE;
        // The futex word: FUTEX_OWNER_DIED once the kernel found the holder dead.
        let lock_at = segment.layout.mutex_at;
        let lock_word = |bytes: &[u8]| {
            bytes
                .get(lock_at..lock_at + 4)
                .and_then(|word| word.try_into().ok())
                .map_or(0, u32::from_ne_bytes)
        };
        if before.get(mutex.clone()) != after.get(mutex) {
            changed.push(format!(
                "the bank's mutex was changed: its lock word went from {:#x} to {:#x}{}",
                lock_word(&before),
                lock_word(&after),
                match state {
                    BankState::HolderDied => {
                        " (FUTEX_OWNER_DIED, set by the kernel when the holder died, is gone), \
                         so the bank's next locker no longer meets the EOWNERDEAD it needs to \
                         repair the bank"
                    }
                    BankState::Finished | BankState::LongUntouched => "",
                }
            ));
        } else if before != after {
            changed.push("the bank's bytes were changed".to_string());
        }
        if refused && changed.is_empty() {
            return Ok(());
        }
        let outcome = create_outcome(&said);
        let left = if changed.is_empty() {
            String::new()
        } else {
            format!(", and {}", changed.join("; "))
        };
        let (bank, not_leftover) = match state {
            BankState::HolderDied => (
                format!(
                    "a bank was in use at {} (its creator alive) when its mutex's holder died \
                     with the lock held, as a worker killed in the middle of a transfer does \
                     (the kernel marked the mutex's lock word FUTEX_OWNER_DIED: {:#x})",
                    path.display(),
                    lock_word(&before)
                ),
                "a bank whose holder died is not a leftover to reclaim, its processes go on \
                 with it and its next locker repairs it (EOWNERDEAD)",
            ),
            BankState::Finished => (
                format!(
                    "a finished bank was at {} (its creator alive, its mutex free, no journal \
                     active, workers = finished = 1, as a coordinator leaves it between its \
                     wait and its destroy())",
                    path.display()
                ),
                "a finished bank is not a leftover to reclaim either, its creator may still \
                 read it or destroy it, and create() may not judge another's segment from its \
                 bytes",
            ),
            BankState::LongUntouched => (
                format!(
                    "a bank was at {} (its creator alive, just created), its access and \
                     modification times set a year back, as tmpfs leaves a segment used for \
                     long only through its mapping (stores to a mapping do not touch the \
                     times)",
                    path.display()
                ),
                "a segment's age is no sign that it is a leftover (judging by its times, \
                 create() takes the name of a bank in use), and a create() that unlinks a \
                 segment it did not make breaks it for the processes using it",
            ),
        };
        Err(Fail::failed(format!(
            "{bank}; a second SharedBank::create({name:?}) {outcome}{left}: {not_leftover}; \
             shm_open(O_CREAT | O_EXCL)'s EEXIST is BankError::Exists, and the segment at the \
             name is left as it is"
        )))
    })
}

/// A `pthread_mutex_t`'s bytes.
const MUTEX_SIZE: usize = std::mem::size_of::<libc::pthread_mutex_t>();

/// What a `create()` under a taken name did, as its first answer says: failed (with its kind
/// and error), or went on with a bank of its own.
pub(super) fn create_outcome(said: &ipc_labs_driver::Message) -> String {
    match said.kind.as_str() {
        "failed" => format!(
            "failed with kind={} ({})",
            said.get("kind").unwrap_or("none"),
            said.get("error").unwrap_or("")
        ),
        other => format!("went on (it said `{other}`): it made a bank of its own"),
    }
}
