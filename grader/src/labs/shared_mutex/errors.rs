//! Typed errors: inputs the bank refuses (names, accounts), at their edges, and the ways
//! `create()` fails (a name taken, a name too long, a segment that cannot be sized), each with
//! its kind and with nothing left behind.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::PathBuf;
use std::time::Duration;

use ipc_labs_driver::Message;
use rand::RngExt;

use super::ACCOUNTS;
use super::messages::{failure, layout_of};
use super::probe;
use super::segment::{Segment, dev_shm, open_segment};
use super::session::Session;
use super::totals::{delta_of, verify};
use crate::engine::inspect;
use crate::engine::tracer::{Action, Call, Match, Reached, Tracer};
use crate::engine::{Fail, Proc, Run, force};

/// A segment the grader creates before the program runs, to take its name: removed when
/// dropped, if it is still the grader's.
struct Taken {
    path: PathBuf,
    inode: u64,
    content: Vec<u8>,
}

impl Taken {
    /// Creates `path` (mode 600, given to the programs' user) holding `content`; `None` if
    /// something is there already.
    fn create(
        path: PathBuf,
        user: Option<(u32, u32)>,
        content: &[u8],
    ) -> Result<Option<Taken>, Fail> {
        let mut file = match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(None),
            Err(e) => return Err(Fail::Grader(format!("creating {}: {e}", path.display()))),
        };
        file.write_all(content)?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
        }
        let inode = file.metadata()?.ino();
        Ok(Some(Taken {
            path,
            inode,
            content: content.to_vec(),
        }))
    }

    /// Whether it is still there as the grader made it: `None` if so, else what happened.
    fn disturbed(&self) -> Option<&'static str> {
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return Some("removed");
        };
        let mut now = Vec::new();
        let same = file.metadata().is_ok_and(|m| m.ino() == self.inode)
            && file.read_to_end(&mut now).is_ok()
            && now == self.content;
        (!same).then_some("replaced or changed")
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        if std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The first message of a program that should fail to create the bank.
fn first_message(proc: &mut Proc) -> Result<Message, Fail> {
    proc.recv_any()
}

/// Lets a program that reported a failed `create()` go, and waits for it.
fn release(proc: &mut Proc) -> Result<(), Fail> {
    proc.send("exit", &[])?;
    proc.wait()?;
    Ok(())
}

/// Starts the program on a bad segment name: the coordinator must refuse it with
/// `kind=bad-name` before it creates anything.
fn refuses_name(run: &mut Run, name: &str) -> Result<(), Fail> {
    let mut proc = run.spawn(&["--name", name, "--work", "1"])?;
    let message = first_message(&mut proc)?;
    let kind = message.get("kind").unwrap_or("none");
    match message.kind.as_str() {
        "failed" if kind == "bad-name" => {}
        "failed" => {
            return Err(Fail::failed(format!(
                "SharedBank::create({name:?}) failed with kind={kind} ({}), not bad-name: check \
                 the name first (a '/' followed by at least one character, no other '/') and \
                 return BankError::BadName",
                message.get("error").unwrap_or("")
            )));
        }
        _ => {
            let leading = if name.starts_with("//") {
                " (a second '/' at the start is one of those: do not strip the leading '/'s \
                 as shm_open() does, remove exactly one)"
            } else {
                ""
            };
            return Err(Fail::failed(format!(
                "SharedBank::create accepted the name {name:?}: a segment's name is a '/' \
                 followed by at least one character and no other '/'{leading}; return \
                 BankError::BadName for any other"
            )));
        }
    }
    release(&mut proc)
}

/// The shortest valid name, `/` and one character: taken by the grader first, so that the
/// program meets `EEXIST` (and creates nothing under a name the grader cannot audit).
fn accepts_one_character(run: &mut Run) -> Result<String, Fail> {
    const CHARACTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let start = run.rng().random_range(0..CHARACTERS.len());
    let mut taken = None;
    for i in 0..CHARACTERS.len() {
        let c = char::from(CHARACTERS[(start + i) % CHARACTERS.len()]);
        let path = dev_shm(&format!("/{c}"));
        if let Some(t) = Taken::create(path.clone(), None, b"taken")? {
            run.made_by_grader(&path);
            taken = Some((c, t));
            break;
        }
    }
    let Some((c, _taken)) = taken else {
        return Err(Fail::Grader(
            "every one-character name in /dev/shm is taken".into(),
        ));
    };
    let name = format!("/{c}");
    let mut proc = run.spawn(&["--name", name.as_str(), "--work", "1"])?;
    let message = first_message(&mut proc)?;
    let kind = message.get("kind").unwrap_or("none");
    match (message.kind.as_str(), kind) {
        ("failed", "exists") => release(&mut proc)?,
        ("failed", "bad-name") => {
            return Err(Fail::failed(format!(
                "SharedBank::create({name:?}) refused a valid name with kind=bad-name: a name \
                 is a '/' followed by at least one character, none of them '/', so one \
                 character is enough"
            )));
        }
        ("failed", _) => {
            return Err(Fail::failed(format!(
                "with /dev/shm/{c} already there, SharedBank::create({name:?}) failed with \
                 kind={kind} ({}), not exists: shm_open()'s EEXIST is BankError::Exists",
                message.get("error").unwrap_or("")
            )));
        }
        _ => {
            return Err(Fail::failed(format!(
                "SharedBank::create({name:?}) succeeded although /dev/shm/{c} already existed: \
                 open with O_CREAT | O_EXCL, and return BankError::Exists on EEXIST"
            )));
        }
    }
    Ok(name)
}

/// Names at the edge of the rule: a `/` and then only dots. They are names like any other
/// (no `/` after the first), so create() hands them to `shm_open()`, which finds `/dev/shm/.`
/// and `/dev/shm/..` there (the directories): `EEXIST`, kind=exists.
const DOT_NAMES: [&str; 2] = ["/.", "/.."];

fn dot_name_is_a_name(run: &mut Run, name: &str) -> Result<(), Fail> {
    let mut proc = run.spawn(&["--name", name, "--work", "1"])?;
    let message = first_message(&mut proc)?;
    let kind = message.get("kind").unwrap_or("none");
    match (message.kind.as_str(), kind) {
        ("failed", "exists") => release(&mut proc),
        ("failed", "bad-name") => {
            proc.kill_tree();
            Err(Fail::failed(format!(
                "SharedBank::create({name:?}) refused the name with kind=bad-name, but it is a \
                 valid name: a '/' followed by at least one character, none of them '/' (the \
                 rule makes no exception for \".\" or \"..\"); shm_open() of it then fails \
                 with EEXIST (/dev/shm/{} is there), which is BankError::Exists",
                &name[1..]
            )))
        }
        (said, _) => {
            proc.kill_tree();
            Err(Fail::failed(format!(
                "SharedBank::create({name:?}) {}, not kind=exists: the name is valid (a '/' and \
                 characters none of which is '/'), and shm_open(O_CREAT | O_EXCL) of it fails \
                 with EEXIST, as /dev/shm/{} is there, which is BankError::Exists",
                if said == "failed" {
                    format!(
                        "failed with kind={kind} ({})",
                        message.get("error").unwrap_or("")
                    )
                } else {
                    format!("went on (it said `{said}`)")
                },
                &name[1..]
            )))
        }
    }
}

pub(super) fn typed_errors(run: &mut Run) -> Result<String, Fail> {
    // Built on a name the grader handed out, so that a segment created despite a bad name is
    // audited and removed.
    let good = run.ipc_name("bank");
    let bare = good.trim_start_matches('/');
    let bad_names = [
        bare.to_string(),
        "/".to_string(),
        format!("{good}/{}", run.rng().random_range(0..1000u32)),
        format!("{good}/"),
        // One '/', but not first: in the middle, or last.
        format!("{bare}/{}", run.rng().random_range(0..1000u32)),
        format!("{bare}/"),
        // glibc strips every leading '/', but the rule allows exactly one.
        format!("/{good}"),
    ];
    for name in &bad_names {
        refuses_name(run, name)?;
    }
    // Before the name the grader takes below: a create that opens a name without O_EXCL first
    // is told by a link, not by its open of the grader's segment.
    refuses_dangling_link(run)?;
    let short = accepts_one_character(run)?;
    for name in DOT_NAMES {
        dot_name_is_a_name(run, name)?;
    }
    // The first and last accounts work; one past the last, further out, and the same account
    // twice do not.
    let mut account = || run.rng().random_range(0..ACCOUNTS);
    let (a, b, same) = (account(), account(), account());
    let beyond = ACCOUNTS + run.rng().random_range(1..1000usize);
    let last = ACCOUNTS - 1;
    let good_transfers = [(0, last), (last, run.rng().random_range(1..last))];
    // 2^32 + k narrowed to u32 (the journal's type) is account k: a check made after
    // narrowing lets it through.
    let wide = |k: usize| (1usize << 32) + k;
    let bad_transfers = [
        (ACCOUNTS, a),
        (b, ACCOUNTS),
        (beyond, a),
        (same, same),
        (wide((a + 1) % ACCOUNTS), a),
        (b, wide((b + 1) % ACCOUNTS)),
    ];
    let tried: Vec<(usize, usize)> = good_transfers
        .iter()
        .chain(&bad_transfers)
        .copied()
        .collect();
    let pairs: Vec<String> = tried
        .iter()
        .flat_map(|(from, to)| [from.to_string(), to.to_string()])
        .collect();
    let extra = ["--try-transfers".to_string(), pairs.join(",")];
    let mut session = Session::start(run, &[1000; 2], &extra).map_err(|fail| match fail {
        Fail::Crashed(m) => Fail::Crashed(format!(
            "the coordinator crashed while it tried the transfers {tried:?} ({m}): an account \
             that does not exist ({ACCOUNTS} or more) must be refused with \
             BankError::BadAccounts before it is used as an index"
        )),
        other => other,
    })?;
    if session.tried.len() != tried.len() {
        return Err(Fail::Grader(format!(
            "the coordinator reported {} tried transfers for {}",
            session.tried.len(),
            tried.len()
        )));
    }
    for (&(from, to), result) in tried.iter().zip(&session.tried) {
        let exists = from < ACCOUNTS && to < ACCOUNTS && from != to;
        let wanted = if exists { "ok" } else { "bad-accounts" };
        if result == wanted {
            continue;
        }
        let what = match result.as_str() {
            "ok" => "went through".to_string(),
            kind => format!("failed with kind={kind}"),
        };
        return Err(Fail::failed(if exists {
            format!(
                "a transfer from account {from} to account {to} {what}: accounts 0 to {} \
                 exist, and a transfer between two different ones goes through",
                ACCOUNTS - 1
            )
        } else {
            let narrowed = if from.max(to) > u32::MAX as usize && result == "ok" {
                format!(
                    " (as u32 they are {} and {}: compare the usize values before narrowing \
                     them to the journal's u32)",
                    from as u32, to as u32
                )
            } else {
                String::new()
            };
            format!(
                "a transfer from account {from} to account {to} {what}{narrowed}: the accounts \
                 must exist (below {ACCOUNTS}) and differ; return BankError::BadAccounts before \
                 taking the lock"
            )
        }));
    }
    // The coordinator's two transfers of 1, before any worker started: nothing overlapped.
    let done: Vec<(u64, Vec<i64>)> = good_transfers
        .iter()
        .map(|&(from, to)| (1, delta_of(from, to, 1)))
        .collect();
    let opening = session.segment.layout.opening;
    let mut want = vec![opening; ACCOUNTS];
    for (_, delta) in &done {
        for (balance, change) in want.iter_mut().zip(delta) {
            *balance += change;
        }
    }
    let (count, balances) = session.segment.bank()?;
    if count != 2 || balances != want {
        return Err(Fail::failed(format!(
            "after the coordinator's transfers of 1 from account {} to account {} and from {} to \
             {}, before any worker started, the bank in the segment holds {count} transfers and \
             balances {balances:?}, not 2 and {want:?}: a transfer takes `amount` from `from`, \
             gives it to `to`, and counts one",
            good_transfers[0].0, good_transfers[0].1, good_transfers[1].0, good_transfers[1].1
        )));
    }
    session.go()?;
    let outcome = session.finish(0, |_| Ok(()))?;
    verify(&session, &outcome, &done, 0)?;
    drop(session);
    refused_before_lock(run, &bad_transfers)?;
    Ok(format!(
        "names {bad_names:?} refused with kind=bad-name, {short:?} accepted; transfers \
         {bad_transfers:?} refused with kind=bad-accounts, {good_transfers:?} done, the bank \
         otherwise unchanged"
    ))
}

/// Bad accounts are refused before the lock is taken: tried while the bank's mutex is
/// unusable (ENOTRECOVERABLE), they still fail with kind=bad-accounts; a good transfer tried
/// last shows the mutex was unusable then.
fn refused_before_lock(run: &mut Run, bad: &[(usize, usize)]) -> Result<(), Fail> {
    let good = (0, ACCOUNTS - 1);
    let tried: Vec<(usize, usize)> = bad.iter().copied().chain([good]).collect();
    let pairs: Vec<String> = tried
        .iter()
        .flat_map(|(from, to)| [from.to_string(), to.to_string()])
        .collect();
    let extra = [
        "--try-transfers".to_string(),
        pairs.join(","),
        "--try-when-told".into(),
    ];
    let name = run.ipc_name("bank");
    let mut args = vec![
        "--name".to_string(),
        name.clone(),
        "--work".into(),
        "1".into(),
    ];
    args.extend(extra);
    let mut proc = run.spawn(&args)?;
    let mut results = None;
    let mut segment = None;
    let mut outcome = Ok(());
    while results.is_none() && outcome.is_ok() {
        let message = proc.recv_any()?;
        match (message.kind.as_str(), message.get("role")) {
            ("created", _) => {
                let opened = open_segment(&name, layout_of(&message)?)?;
                outcome = make_unrecoverable(&opened);
                if outcome.is_ok() {
                    proc.send("try", &[])?;
                }
                segment = Some(opened);
            }
            ("ready", Some("coordinator")) => {
                let tried: Vec<String> = message
                    .get("tried")
                    .unwrap_or("")
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
                results = Some(tried);
            }
            ("ready", _) => {}
            _ => outcome = Err(failure(&message)),
        }
    }
    // The run cannot end on its own: the grader ends it and removes the segment itself.
    proc.kill_tree();
    let _ = std::fs::remove_file(dev_shm(&name));
    outcome?;
    let results = results.unwrap_or_default();
    if results.len() != tried.len() {
        return Err(Fail::Grader(format!(
            "the coordinator reported {} tried transfers for {}",
            results.len(),
            tried.len()
        )));
    }
    for (&(from, to), result) in bad.iter().zip(&results) {
        if result != "bad-accounts" {
            return Err(Fail::failed(format!(
                "with the bank's mutex unusable (ENOTRECOVERABLE), a transfer from account \
                 {from} to account {to} gave kind={result}, not bad-accounts: the accounts are \
                 checked before the lock is taken (a transfer that cannot be made neither waits \
                 for the lock nor touches it), so its error is BadAccounts whatever the mutex's \
                 state"
            )));
        }
    }
    let last = results.last().map(String::as_str).unwrap_or("");
    if last == "ok" {
        let went_on = segment.as_ref().map_or(
            "it did not take the mutex in the segment",
            super::robust::went_on_anyway,
        );
        return Err(Fail::failed(format!(
            "with the bank's mutex unusable (ENOTRECOVERABLE), a transfer from account {} to \
             account {} went through: {}; every transfer must hold the mutex in the segment \
             (Bank::lock), and that lock fails with BankError::NotRecoverable",
            good.0, good.1, went_on
        )));
    }
    if last != "not-recoverable" {
        return Err(Fail::failed(format!(
            "with the bank's mutex unusable (ENOTRECOVERABLE), a transfer from account {} to \
             account {} gave {last}, not kind=not-recoverable: pthread_mutex_lock()'s \
             ENOTRECOVERABLE is BankError::NotRecoverable",
            good.0, good.1
        )));
    }
    Ok(())
}

/// Makes the bank's mutex unusable for good: a holder dies, and the grader meets EOWNERDEAD
/// and lets go without pthread_mutex_consistent().
fn make_unrecoverable(segment: &Segment) -> Result<(), Fail> {
    probe::DyingHolder::start(segment, false)?.die();
    let first = probe::try_lock(segment, Duration::from_secs(1))?;
    let second = probe::try_lock(segment, Duration::from_secs(1))?;
    if first != libc::EOWNERDEAD || second != libc::ENOTRECOVERABLE {
        return Err(Fail::Grader(format!(
            "making the mutex unrecoverable failed: {} then {}",
            probe::errno_name(first),
            probe::errno_name(second)
        )));
    }
    Ok(())
}

pub(super) fn create_failures(run: &mut Run) -> Result<String, Fail> {
    let name = taken_at_the_open(run)?;
    refuses_dangling_link(run)?;

    // A valid name too long for the system: shm_open() fails, kind=shm-open.
    let long = format!("{}-{}", run.ipc_name("long"), "x".repeat(300));
    let mut proc = run.spawn(&["--name", long.as_str(), "--work", "1"])?;
    let message = first_message(&mut proc)?;
    expect_kind(
        &message,
        "shm-open",
        "SharedBank::create() of a valid name 300 characters long",
        "the name rule has no length limit, so the name is valid; shm_open() then fails \
         (ENAMETOOLONG), which is BankError::Open",
    )?;
    release(&mut proc)?;

    // The segment cannot be sized: kind=ftruncate, and create() leaves nothing behind.
    let unsizable = run.ipc_name("unsizable");
    let mut proc = run.spawn(&[
        "--name",
        unsizable.as_str(),
        "--work",
        "1",
        "--file-size-limit",
        "0",
    ])?;
    let message = first_message(&mut proc)?;
    expect_kind(
        &message,
        "ftruncate",
        "with files limited to 0 bytes (RLIMIT_FSIZE), SharedBank::create()",
        "ftruncate() fails with EFBIG, which is BankError::Truncate",
    )?;
    let pid = proc.pid.as_raw();
    let path = dev_shm(&unsizable);
    let mut left = Vec::new();
    if path.exists() {
        left.push(format!("{} still exists (shm_unlink() it)", path.display()));
    }
    let fds = probe::descriptors(pid, &unsizable);
    if !fds.is_empty() {
        left.push(format!("descriptor {fds:?} is still open on it (close it)"));
    }
    if !probe::mappings(pid, &unsizable).is_empty() {
        left.push("it is still mapped (munmap() it)".to_string());
    }
    release(&mut proc)?;
    if !left.is_empty() {
        return Err(Fail::failed(format!(
            "SharedBank::create() failed at ftruncate(), as it should here, but {}: when a step \
             after shm_open() fails, undo the steps before it",
            left.join(", ")
        )));
    }
    let forced = if forced_ftruncate_failure(run)? {
        "; the grader failing ftruncate() itself: kind=ftruncate"
    } else {
        ""
    };
    let mapped = if forced_mmap_failure(run)? {
        "; the grader failing the shared mmap(): kind=mmap, the name removed"
    } else {
        ""
    };
    Ok(format!(
        "{name:?} taken at the program's shm_open(): kind=exists, the segment there untouched; a name of {} characters: \
         kind=shm-open; ftruncate() failing: kind=ftruncate, with the name removed and no \
         descriptor or mapping left{forced}{mapped}",
        long.len()
    ))
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
fn taken_at_the_open(run: &mut Run) -> Result<String, Fail> {
    let name = run.ipc_name("taken");
    // Empty, as another creator's segment is between its shm_open() and its ftruncate(): it is
    // that creator's all the same.
    let content: Vec<u8> = Vec::new();
    let path = dev_shm(&name);
    let mut proc = run.spawn_stopped(&["--name", name.as_str(), "--work", "1"])?;
    let pid = proc.pid.as_raw();
    // The path a glibc shm_open() opens, kept for the life of the grader (a few bytes a run).
    let opened: &'static str = path.display().to_string().leak();
    let opening = Call {
        number: libc::SYS_openat,
        matching: Match::Path(opened),
    };
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

/// A create whose `ftruncate()` the tracer makes fail (`EFBIG`), with no file-size limit: it
/// must say `ftruncate` and leave the name gone. One that goes on without the tracer having
/// seen any `ftruncate()` sized the segment another way (a `write()` of the bank's bytes).
/// `false` if the grader may not trace the program.
fn forced_ftruncate_failure(run: &mut Run) -> Result<bool, Fail> {
    let name = run.ipc_name("forced");
    let mut proc = run.spawn_stopped(&["--name", name.as_str(), "--work", "1"])?;
    let pid = proc.pid.as_raw();
    let tracer = Tracer::attach(
        pid,
        Call::any(libc::SYS_ftruncate),
        Action::Fail(libc::EFBIG),
    )?;
    force::resume(pid)?;
    let Some(mut tracer) = tracer else {
        run.note("the grader may not trace the program here (ptrace): no ftruncate() was failed");
        proc.kill_tree();
        return Ok(false);
    };
    let message = first_message(&mut proc)?;
    let failed = tracer.failed_the_call()?;
    drop(tracer);
    let path = dev_shm(&name);
    if !failed {
        let size = std::fs::metadata(&path).map(|m| m.len());
        proc.kill_tree();
        let _ = std::fs::remove_file(&path);
        return Err(Fail::failed(format!(
            "while the grader failed the program's next ftruncate() (EFBIG), \
             SharedBank::create({name:?}) made no ftruncate() call before it said `{}`{}: the \
             segment was sized another way, such as a write() of the bank's bytes to the new \
             descriptor; size it with ftruncate(fd, size_of::<Bank>()) (a failure is \
             kind=ftruncate) and fill the bank through the mapping",
            message.kind,
            match size {
                Ok(size) => format!(", yet {} is {size} bytes", path.display()),
                Err(_) => String::new(),
            }
        )));
    }
    expect_kind(
        &message,
        "ftruncate",
        "with the grader failing its ftruncate() (EFBIG), SharedBank::create()",
        "the step that failed is ftruncate(), which is BankError::Truncate",
    )?;
    let left = path.exists();
    release(&mut proc)?;
    if left {
        return Err(Fail::failed(format!(
            "SharedBank::create() failed at ftruncate() (the grader made it fail), but {} \
             still exists: when a step after shm_open() fails, shm_unlink() the name",
            path.display()
        )));
    }
    Ok(true)
}

/// A create whose `mmap()` of the segment (the first shared one) the tracer makes fail
/// (`ENOMEM`): it must say `mmap` and, as for any step after `shm_open()`, leave neither the
/// name nor a descriptor behind. `false` if the grader may not trace the program, or the
/// program made no shared `mmap()` (it is judged elsewhere).
fn forced_mmap_failure(run: &mut Run) -> Result<bool, Fail> {
    let name = run.ipc_name("unmappable");
    let mut proc = run.spawn_stopped(&["--name", name.as_str(), "--work", "1"])?;
    let pid = proc.pid.as_raw();
    // MAP_SHARED (1) and MAP_SHARED_VALIDATE (3) have bit 0; the C library's and the
    // allocator's own mappings are private (2).
    let shared_map = Call {
        number: libc::SYS_mmap,
        matching: Match::Bits {
            arg: 3,
            mask: libc::MAP_SHARED as u64,
            value: libc::MAP_SHARED as u64,
        },
    };
    let tracer = Tracer::attach(pid, shared_map, Action::Fail(libc::ENOMEM))?;
    force::resume(pid)?;
    let Some(mut tracer) = tracer else {
        proc.kill_tree();
        return Ok(false);
    };
    let message = first_message(&mut proc)?;
    let failed = tracer.failed_the_call()?;
    drop(tracer);
    if !failed {
        proc.kill_tree();
        return Ok(false);
    }
    expect_kind(
        &message,
        "mmap",
        "with the grader failing its mmap(MAP_SHARED) of the segment (ENOMEM), \
         SharedBank::create()",
        "the step that failed is mmap(), which is BankError::Map",
    )?;
    let path = dev_shm(&name);
    let mut left = Vec::new();
    if path.exists() {
        left.push(format!("{} still exists (shm_unlink() it)", path.display()));
    }
    let fds = probe::descriptors(pid, &name);
    if !fds.is_empty() {
        left.push(format!("descriptor {fds:?} is still open on it (close it)"));
    }
    release(&mut proc)?;
    if !left.is_empty() {
        return Err(Fail::failed(format!(
            "SharedBank::create() failed at mmap() (the grader made it fail, ENOMEM), as it \
             should then, but {}: when any step after shm_open() fails (ftruncate(), mmap(), \
             the initializations), undo the steps before it and shm_unlink() the name, or the \
             next create() of the name fails with exists",
            left.join(", ")
        )));
    }
    Ok(true)
}

/// A dangling symbolic link at the name (given to the programs' user, so that the program may
/// follow it): `shm_open(O_CREAT | O_EXCL)` refuses it with `EEXIST` without following it; a
/// create without `O_EXCL` follows it and creates the file it names, a probe that opens the name
/// first (`ENOENT` through the link) does not see it: the create must rely on `O_EXCL` alone.
fn refuses_dangling_link(run: &mut Run) -> Result<(), Fail> {
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

/// Fails unless `message` is `failed` with `kind`; `what` is what was tried, `rule` what
/// should happen.
fn expect_kind(message: &Message, kind: &str, what: &str, rule: &str) -> Result<(), Fail> {
    let got = message.get("kind").unwrap_or("none");
    match message.kind.as_str() {
        "failed" if got == kind => Ok(()),
        "failed" => Err(Fail::failed(format!(
            "{what} failed with kind={got} ({}), not {kind}: {rule}",
            message.get("error").unwrap_or("")
        ))),
        _ => Err(Fail::failed(format!(
            "{what} succeeded (the program said `{}`), where it must fail with kind={kind}: \
             {rule}",
            message.kind
        ))),
    }
}
