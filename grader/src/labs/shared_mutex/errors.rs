//! Typed errors: inputs the bank refuses (names, accounts), at their edges, each with its kind
//! and with nothing left behind. The ways `create()` fails are in `create_failures`.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::PathBuf;

use ipc_labs_driver::Message;
use rand::RngExt;

use super::ACCOUNTS;
use super::messages::{failure, layout_of};
use super::segment::{dev_shm, open_segment};
use super::session::Session;
use super::taken_names::refuses_dangling_link;
use super::totals::{delta_of, verify};
use crate::engine::{Fail, Proc, Run};

/// A segment the grader creates before the program runs, to take its name: removed when
/// dropped, if it is still the grader's.
pub(super) struct Taken {
    path: PathBuf,
    inode: u64,
    content: Vec<u8>,
}

impl Taken {
    /// Creates `path` (mode 600, given to the programs' user) holding `content`; `None` if
    /// something is there already.
    pub(super) fn create(
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
    pub(super) fn disturbed(&self) -> Option<&'static str> {
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
pub(super) fn first_message(proc: &mut Proc) -> Result<Message, Fail> {
    proc.recv_any()
}

/// Lets a program that reported a failed `create()` go, and waits for it.
pub(super) fn release(proc: &mut Proc) -> Result<(), Fail> {
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
            } else if name.starts_with(char::is_whitespace) {
                " (the name is checked as given: its first character is a blank, not a '/'; \
                 trimming it checks, and creates, another name)"
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

/// Names whose every character after the `/` is a blank: valid names (the rule counts
/// characters, blanks among them, and the name is checked as given, not trimmed). Each is taken
/// by the grader first, so that the program meets `EEXIST`, kind=exists.
fn blank_name_is_a_name(run: &mut Run, blanks: &[&str]) -> Result<String, Fail> {
    let mut taken = None;
    for tail in blanks {
        let path = dev_shm(&format!("/{tail}"));
        if let Some(t) = Taken::create(path.clone(), None, b"taken")? {
            run.made_by_grader(&path);
            taken = Some((*tail, t));
            break;
        }
    }
    let Some((tail, _taken)) = taken else {
        return Err(Fail::Grader(format!(
            "every name of blanks {blanks:?} in /dev/shm is taken"
        )));
    };
    let name = format!("/{tail}");
    let mut proc = run.spawn(&["--name", name.as_str(), "--work", "1"])?;
    let message = first_message(&mut proc)?;
    let kind = message.get("kind").unwrap_or("none");
    match (message.kind.as_str(), kind) {
        ("failed", "exists") => release(&mut proc)?,
        ("failed", "bad-name") => {
            proc.kill_tree();
            return Err(Fail::failed(format!(
                "SharedBank::create({name:?}) refused a valid name with kind=bad-name: a name \
                 is a '/' followed by at least one character, none of them '/', and a blank \
                 is a character; the name is checked as given (a check of the part after the \
                 '/' trimmed, or of its non-blank characters, refuses it)"
            )));
        }
        ("failed", _) => {
            proc.kill_tree();
            return Err(Fail::failed(format!(
                "with /dev/shm/{tail:?} already there, SharedBank::create({name:?}) failed \
                 with kind={kind} ({}), not exists: shm_open()'s EEXIST is BankError::Exists",
                message.get("error").unwrap_or("")
            )));
        }
        (said, _) => {
            proc.kill_tree();
            return Err(Fail::failed(format!(
                "SharedBank::create({name:?}) went on (it said `{said}`) although \
                 /dev/shm/{tail:?} already existed: open with O_CREAT | O_EXCL, and return \
                 BankError::Exists on EEXIST"
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
        // Taken as given: a blank first is not a '/'.
        format!(" {good}"),
    ];
    for name in &bad_names {
        refuses_name(run, name)?;
    }
    super::unusual_names::wide_first_characters_are_bad_names(run)?;
    // Before the name the grader takes below: a create that opens a name without O_EXCL first
    // is told by a link, not by its open of the grader's segment.
    refuses_dangling_link(run)?;
    let short = accepts_one_character(run)?;
    for name in DOT_NAMES {
        dot_name_is_a_name(run, name)?;
    }
    let blank = [
        blank_name_is_a_name(run, &[" ", "  ", "   "])?,
        blank_name_is_a_name(run, &["\t", " \t", "\t "])?,
    ];
    // The first and last accounts work; one past the last, further out, and the same account
    // twice do not.
    let mut account = || run.rng().random_range(0..ACCOUNTS);
    let (a, b, same) = (account(), account(), account());
    let beyond = ACCOUNTS + run.rng().random_range(1..1000usize);
    let last = ACCOUNTS - 1;
    let good_transfers = [(0, last), (last, run.rng().random_range(1..last))];
    // Amounts are not limited: 0 moves nothing and a negative amount moves money the other way
    // (a refund), between two good accounts both go through. The first two are of 1.
    let (c, d) = (
        run.rng().random_range(1..4),
        run.rng().random_range(4..last),
    );
    let refund = -run.rng().random_range(1..50i64);
    let amounts = [1, 1, 0, refund];
    let good_transfers = [good_transfers[0], good_transfers[1], (c, d), (d, c)];
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
    let extra = [
        "--try-transfers".to_string(),
        pairs.join(","),
        "--try-amounts".to_string(),
        amounts.map(|a| a.to_string()).join(","),
    ];
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
    for (i, (&(from, to), result)) in tried.iter().zip(&session.tried).enumerate() {
        let exists = from < ACCOUNTS && to < ACCOUNTS && from != to;
        let wanted = if exists { "ok" } else { "bad-accounts" };
        if result == wanted {
            continue;
        }
        let what = match result.as_str() {
            "ok" => "went through".to_string(),
            kind => format!("failed with kind={kind}"),
        };
        return Err(Fail::failed(if exists && i >= 2 {
            format!(
                "a transfer of {} from account {from} to account {to} {what}: nothing limits \
                 the amount (0 moves nothing, a negative amount moves money the other way); \
                 only accounts that do not exist or are the same are BankError::BadAccounts",
                amounts[i]
            )
        } else if exists {
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
    // A BadAccounts names the accounts tried, `from` then `to` (its fields' docs).
    for (&(from, to), named) in tried.iter().zip(&session.refused) {
        let exists = from < ACCOUNTS && to < ACCOUNTS && from != to;
        if exists || *named == format!("{from}>{to}") {
            continue;
        }
        let swapped = if *named == format!("{to}>{from}") {
            " (the two the other way round)"
        } else {
            ""
        };
        let named = named.replace('>', " and to = ");
        return Err(Fail::failed(format!(
            "a transfer from account {from} to account {to} was refused with kind=bad-accounts, \
             as it should, but its BankError::BadAccounts says from = {named}{swapped}: its \
             fields are the accounts tried, `from` the account to debit and `to` the account \
             to credit, as transfer() was given them"
        )));
    }
    // The coordinator's transfers, before any worker started: nothing overlapped.
    let done: Vec<(u64, Vec<i64>)> = good_transfers
        .iter()
        .zip(amounts)
        .map(|(&(from, to), amount)| (1, delta_of(from, to, amount)))
        .collect();
    let opening = session.segment.layout.opening;
    let mut want = vec![opening; ACCOUNTS];
    for (_, delta) in &done {
        for (balance, change) in want.iter_mut().zip(delta) {
            *balance += change;
        }
    }
    let (count, balances) = session.segment.bank()?;
    if count != good_transfers.len() as u64 || balances != want {
        let made: Vec<String> = good_transfers
            .iter()
            .zip(amounts)
            .map(|(&(from, to), amount)| format!("{amount} from {from} to {to}"))
            .collect();
        return Err(Fail::failed(format!(
            "after the coordinator's transfers ({}), before any worker started, the bank in the \
             segment holds {count} transfers and balances {balances:?}, not {} and {want:?}: a \
             transfer takes `amount` from `from`, gives it to `to`, and counts one",
            made.join(", "),
            good_transfers.len()
        )));
    }
    session.go()?;
    let outcome = session.finish(0, |_| Ok(()))?;
    verify(&session, &outcome, &done, 0)?;
    drop(session);
    refused_before_lock(run, &bad_transfers)?;
    Ok(format!(
        "names {bad_names:?} refused with kind=bad-name, {short:?} and {blank:?} accepted; transfers \
         {bad_transfers:?} refused with kind=bad-accounts, {good_transfers:?} done (amounts \
         {amounts:?}), the bank \
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
                let opened = open_segment(&name, layout_of(&message)?, proc.pid.as_raw())?;
                outcome = super::unrecoverable::make_unrecoverable(&opened);
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
            super::unrecoverable::went_on_anyway,
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
