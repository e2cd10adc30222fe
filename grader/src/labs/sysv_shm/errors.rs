//! Checks of the publisher's error paths: a segment that is already there (or appears just as it
//! calls shmget()), input the lab names an error for, the size limit, and what a failed
//! publisher leaves behind (nothing).

use std::path::Path;
use std::time::{Duration, Instant};

use rand::RngExt;

use crate::engine::process::Limits;
use crate::engine::{Fail, Run};

use super::HEADER_LEN;
use super::private_ipc::PrivateIpc;
use super::protocol::{
    Name, expect, fresh_name, fresh_name_with_id, ftok, publish_record, run_create_step,
    spawn_publisher, spawn_reader, start_publisher, with_context,
};
use super::segments::{Planted, full_record, rmid, segment, segment_by_id};
use crate::engine::tracer::{Action, Call, Reached, Tracer};

/// A stale segment: a complete record an earlier publication left.
fn stale_record(run: &mut Run) -> Vec<u8> {
    let payload = run.random_bytes(3000);
    full_record(1, &payload)
}

/// Judges a publisher that met a segment with its key (`planted`, holding `before`): it must
/// fail with kind=exists and leave the segment as it was. `how` says how the segment came.
fn refused_existing(
    proc: &mut crate::engine::Proc,
    message: ipc_labs_driver::Message,
    (planted, before, size): (&Planted, &[u8], usize),
    key: i32,
    how: &str,
) -> Result<(), Fail> {
    match (message.kind.as_str(), message.get("kind")) {
        ("failed", Some("exists")) => {}
        ("ready", _) => {
            let planted_now = segment_by_id(planted.id);
            let took_over = planted_now.as_ref().is_some_and(|s| s.attached > 0);
            let replacement = segment(key).filter(|s| s.id != planted.id);
            return Err(Fail::failed(if took_over {
                format!(
                    "{how}, and the publisher attached it (segment {}) and wrote over it: \
                     create with IPC_CREAT | IPC_EXCL and report EEXIST as ShmError::Exists",
                    planted.id
                )
            } else if let (None, Some(made)) = (planted_now, replacement) {
                format!(
                    "{how}, and the publisher removed it (segment {} is gone, with its bytes) \
                     and made its own (segment {}) in its place: a segment that has the key is \
                     not the publisher's to remove or reuse, stale or not; report EEXIST as \
                     ShmError::Exists and leave the segment to whoever runs the program",
                    planted.id, made.id
                )
            } else {
                format!(
                    "{how}, yet the publisher said `ready`: create with IPC_CREAT | IPC_EXCL \
                     and report EEXIST as ShmError::Exists"
                )
            }));
        }
        (kind, error) => {
            return Err(Fail::failed(format!(
                "{how}; the publisher said `{kind}` (kind={}), not `failed` with kind=exists: \
                 map EEXIST to ShmError::Exists",
                error.unwrap_or("none")
            )));
        }
    }
    proc.wait()?;
    if segment(key).map(|s| s.id) != Some(planted.id) {
        return Err(Fail::failed(format!(
            "{how}; the publisher reported kind=exists but removed or replaced it: leave a \
             segment you did not create alone"
        )));
    }
    if planted.contents(size)? != before {
        return Err(Fail::failed(format!(
            "{how}; the publisher reported kind=exists but changed its bytes"
        )));
    }
    Ok(())
}

pub fn stale_segment_refused(run: &mut Run) -> Result<String, Fail> {
    let size = 8192;
    let payload = run.random_bytes(1000);
    // What a crashed run of an older publication left, before the publisher starts.
    let name = fresh_name(run)?;
    let stale = stale_record(run);
    let planted = Planted::left_by_exited_process(run, name.key, size, &stale)?;
    let before = planted.contents(size)?;
    let mut proc = start_publisher(run, (&name.path, name.id, size as u64), 2, &payload)?;
    let message = proc.recv_any()?;
    let how = "a segment with the key was already there (not attached, its creator exited), \
               as a crashed run leaves it";
    refused_existing(&mut proc, message, (&planted, &before, size), name.key, how)?;
    let stale_id = planted.id;
    drop(planted);
    // The same, but the segment appears only once the publisher has started, just as it calls
    // shmget(): what it may have looked up before saw nothing.
    let name = fresh_name_with_id(run, name.id)?;
    let rival = stale_record(run);
    let mut proc = spawn_publisher(run, &name.path, name.id, size as u64, 3, &payload)?;
    // The shmget() that creates: a look with shmget(key, 0, 0) before it must see nothing.
    let shmget = Call::flag_set(libc::SYS_shmget, 2, libc::IPC_CREAT as u64);
    let Some(mut stop) = Tracer::attach(proc.pid.as_raw(), shmget, Action::Hold)? else {
        proc.kill_tree();
        run.note(
            "the grader may not trace the publisher here (ptrace): a segment appearing at its \
             shmget() was not tried",
        );
        return Ok(format!(
            "the publisher refused the stale segment {stale_id} (kind=exists) and left it as it \
             was"
        ));
    };
    proc.send("go", &[])?;
    let until = Instant::now() + Duration::from_secs(5);
    let planted = match stop.wait(&mut proc, until)? {
        Reached::Call => {
            // A create without IPC_EXCL opens a segment that is there; a look afterwards (its
            // creator, its attachments) cannot tell the two cases apart in one step.
            let flags = crate::engine::inspect::call_of(proc.pid.as_raw(), proc.pid.as_raw())
                .map(|(_, args)| args[2]);
            if let Some(flags) = flags
                && flags & libc::IPC_EXCL as u64 == 0
            {
                stop.release();
                proc.kill_tree();
                return Err(Fail::failed(format!(
                    "the publisher's shmget() that creates its segment had IPC_CREAT without \
                     IPC_EXCL (flags {flags:#o}): it then opens a segment that is already \
                     there, and one smaller than its size or that it may not access fails \
                     with EINVAL or EACCES instead of EEXIST; create with IPC_CREAT | IPC_EXCL \
                     | 0600 and report EEXIST as ShmError::Exists"
                )));
            }
            let planted = Planted::new(run, name.key, size, &rival)?;
            stop.release();
            planted
        }
        Reached::Passed(message) => {
            drop(stop);
            // The tracer lost the program: what the program says (or how it ended) tells why.
            let message = match message {
                Some(message) => message,
                None => proc.recv_any()?,
            };
            return Err(match message {
                m if m.kind == "failed" => Fail::failed(format!(
                    "with no segment of its key yet, the publisher failed (kind={}) before it \
                     called shmget(): {}",
                    m.get("kind").unwrap_or("?"),
                    m.get("error").unwrap_or("?")
                )),
                _ => Fail::failed(
                    "the publisher made its segment without calling shmget() with IPC_CREAT on \
                     its main thread, where the grader watches for it: create the segment from \
                     the thread that calls publish()",
                ),
            });
        }
    };
    let before = planted.contents(size)?;
    let message = proc.recv_any()?;
    let how = "a segment with the key appeared only once the publisher had started, just as it \
               called shmget() with IPC_CREAT (the grader made it then, as another process may)";
    refused_existing(&mut proc, message, (&planted, &before, size), name.key, how).map_err(
        |fail| match fail {
            Fail::Failed(m) if m.contains("wrote over it") => Fail::Failed(format!(
                "{m}. With the segment there from the start it said kind=exists: it decides \
                 from a look before shmget() (the look and the creation are two steps, and \
                 another process can come between them); only IPC_EXCL makes shmget() create \
                 or fail in one step"
            )),
            other => other,
        },
    )?;
    Ok(
        "the publisher refused a stale segment and one that appeared at its shmget() \
        (kind=exists), and left both as they were"
            .into(),
    )
}

/// What a publisher's input is, and what it must answer.
struct Refusal<'a> {
    /// `with ...`: the input, for the messages.
    what: &'a str,
    kind: &'a str,
    /// The key a segment it made would have: none may be left.
    key: Option<i32>,
    /// Another kind the check knows the cause of, with that cause.
    known: Option<(&'a str, &'a str)>,
    /// What a publisher that said `ready` did, when a segment with `key` is there.
    made: Option<String>,
}

/// Runs a publisher with bad input and requires `failed` with the refusal's kind, and no
/// segment with its key afterwards.
fn publisher_refuses(
    run: &mut Run,
    (path, id, size): (&Path, u32, u64),
    payload: &[u8],
    refusal: Refusal,
) -> Result<(), Fail> {
    let Refusal {
        what,
        kind,
        key,
        known,
        made,
    } = refusal;
    let context = format!("with {what}");
    let mut proc = start_publisher(run, (path, id, size), 1, payload)?;
    let message = proc.recv_any().map_err(|fail| match fail {
        Fail::Crashed(m) if m.contains("overflow") => Fail::Crashed(format!(
            "{context}, the publisher crashed: {m}; an arithmetic overflow: compute the room so \
             that nothing can overflow or underflow (a segment may be smaller than the header)"
        )),
        other => with_context(&context)(other),
    })?;
    match (message.kind.as_str(), message.get("kind")) {
        ("failed", Some(k)) if k == kind => {}
        ("ready", _) => {
            let made = made
                .filter(|_| key.and_then(segment).is_some())
                .map(|m| format!(" ({m})"))
                .unwrap_or_default();
            return Err(Fail::failed(format!(
                "{context}, the publisher created a segment{made} and said `ready`: reject it \
                 with kind={kind}"
            )));
        }
        ("failed", Some(k)) if known.is_some_and(|(wrong, _)| wrong == k) => {
            let cause = known.map(|(_, cause)| cause).unwrap_or_default();
            return Err(Fail::failed(format!(
                "{context}, the publisher said kind={k}, the lab wants kind={kind}: {cause}"
            )));
        }
        (said, got) => {
            return Err(Fail::failed(format!(
                "{context}, the publisher said `{said}` (kind={}: {}), the lab wants `failed` \
                 with kind={kind}",
                got.unwrap_or("none"),
                message.get("error").unwrap_or("")
            )));
        }
    }
    proc.wait()?;
    if let Some(left) = key.and_then(segment) {
        rmid(left.id);
        let advice = if kind == "shmat" {
            "when shmat() fails, remove the segment shmget() just made"
        } else {
            "remove what you created on the error path"
        };
        return Err(Fail::failed(format!(
            "{context}, the publisher failed (kind={kind}) but left segment {} behind: {advice}",
            left.id
        )));
    }
    Ok(())
}

/// `Segment::create(key, 0)` itself is `ZeroSize`, not only `publish()`: the program's `create`
/// step calls it with no `publish()` around it (the key free, so that a size 0 handed on to
/// `shmget()` comes back as its `EINVAL`).
fn create_refuses_zero(run: &mut Run, name: &Name) -> Result<(), Fail> {
    let what = "Segment::create(key, 0) called alone (`sysv-shm create --size 0`: no publish() \
                around it, the key free)";
    let (message, left) = run_create_step(run, name, 0, what)?;
    let fault = "the size check is in publish() only (a publisher asked for size 0 said \
                 zero-size), yet Segment::create() is the API's door for every caller: check \
                 size 0 first in Segment::create itself, before the limit is read and before \
                 shmget()";
    match (message.kind.as_str(), message.get("kind")) {
        ("failed", Some("zero-size")) => {}
        ("failed", Some(k)) => {
            return Err(Fail::failed(format!(
                "with {what}, it said kind={k} ({}), the lab wants kind=zero-size: \
                 create() let size 0 through{}; {fault}",
                message.get("error").unwrap_or(""),
                if k == "shmget" {
                    " to shmget(), which refuses it (EINVAL)"
                } else {
                    ""
                }
            )));
        }
        (said, _) => {
            let made = left
                .map(|s| format!(" (segment {} of {} bytes)", s.id, s.size))
                .unwrap_or_default();
            return Err(Fail::failed(format!(
                "with {what}, it said `{said}`{made}, the lab wants `failed` with \
                 kind=zero-size; {fault}"
            )));
        }
    }
    if let Some(left) = left {
        return Err(Fail::failed(format!(
            "with {what}, it said kind=zero-size but segment {} is there: refuse size 0 before \
             shmget()",
            left.id
        )));
    }
    Ok(())
}

/// `Segment::create` itself removes the segment it just made when its `shmat()` fails, not
/// only `publish()` around it: the program's `create` step calls it alone with a size the
/// program may not map (`huge`).
fn create_cleans_up_failed_attach(run: &mut Run, name: &Name, huge: u64) -> Result<(), Fail> {
    let what = format!(
        "Segment::create() called alone (`sysv-shm create`, no publish() around it) for \
         {huge} bytes, more than the program's address space, so that shmat() fails (ENOMEM) \
         after shmget() made the segment"
    );
    let (message, left) = run_create_step(run, name, huge, &what)?;
    match (message.kind.as_str(), message.get("kind"), left) {
        ("failed", Some("shmat"), None) => Ok(()),
        ("failed", Some("shmat"), Some(left)) => Err(Fail::failed(format!(
            "with {what}, it said kind=shmat but left segment {} behind (a publisher given the \
             same size left none): the clean-up is in publish(), yet Segment::create is the \
             API's door for every caller; when its shmat() fails, Segment::create itself \
             removes the segment its shmget() just made, before returning Attach",
            left.id
        ))),
        (said, kind, _) => Err(Fail::failed(format!(
            "with {what}, it said `{said}` (kind={}: {}), the lab wants `failed` with kind=shmat",
            kind.unwrap_or("none"),
            message.get("error").unwrap_or("")
        ))),
    }
}

/// A refusal the check knows no other cause for.
fn refusal<'a>(what: &'a str, kind: &'a str, key: Option<i32>) -> Refusal<'a> {
    Refusal {
        what,
        kind,
        key,
        known: None,
        made: None,
    }
}

pub fn bad_input(run: &mut Run) -> Result<String, Fail> {
    let name = fresh_name(run)?;
    // A publisher that does not validate the id might create these: audit them too.
    let zero = ftok(&name.path, 0)?;
    run.ipc_key(zero);
    let payload = run.random_bytes(64);
    let ok = (name.path.as_path(), name.id, 4096u64);
    let missing = run.path("does-not-exist");
    let key = Some(name.key);
    publisher_refuses(
        run,
        (&missing, ok.1, ok.2),
        &payload,
        refusal("a path that does not exist", "ftok", None),
    )?;
    publisher_refuses(
        run,
        (ok.0, 0, ok.2),
        &payload,
        refusal("id 0", "bad-id", None),
    )?;
    let what = "id 256 (ftok keeps 8 bits: it would mean 0)";
    publisher_refuses(
        run,
        (ok.0, 256, ok.2),
        &payload,
        refusal(what, "bad-id", None),
    )?;
    // With an existing path id 0 was bad-id: a kind=ftok now means ftok() ran first.
    let first = Refusal {
        known: Some((
            "ftok",
            "it calls ftok() before it checks the id; reject a bad id first, whatever the path",
        )),
        ..refusal("id 0 and a path that does not exist", "bad-id", None)
    };
    publisher_refuses(run, (&missing, 0, ok.2), &payload, first)?;
    // Past 256, ids whose low 8 bits are not 0: ftok() would take them for ids 1..=255. 257 is
    // one past the edge; the other lies anywhere above.
    let far = 256 * run.rng().random_range(2..1u32 << 23) + run.rng().random_range(1..=255u32);
    for (id, refused) in [(257, "256"), (far, "256 and 257")] {
        let alias = fresh_name_with_id(run, id & 0xff)?;
        let what = format!("id {id}");
        let aliased = Refusal {
            made: Some(format!(
                "with key ftok(path, {}): ftok() keeps only the low 8 bits of the id, so {id} \
                 silently means {}; it refused {refused}, but an id is valid only in 1..=255, \
                 so every id above 255 is bad-id, whatever its low 8 bits",
                id & 0xff,
                id & 0xff
            )),
            ..refusal(&what, "bad-id", Some(alias.key))
        };
        publisher_refuses(run, (&alias.path, id, ok.2), &payload, aliased)?;
    }
    reader_refuses_ids(run, &missing)?;
    publisher_refuses(
        run,
        (ok.0, ok.1, 0),
        &payload,
        refusal("size 0", "zero-size", key),
    )?;
    // Size 0 is judged before shmget(): with the key taken, shmget() would report EEXIST
    // before it looks at the size.
    {
        let _planted = Planted::new(run, name.key, 64, &[])?;
        let taken = Refusal {
            known: Some((
                "exists",
                "with the key free it said zero-size, so it learned that the key was taken \
                 before it refused size 0: it leaves size 0 to shmget() (taking its EINVAL for \
                 ZeroSize), which reports a taken key before it looks at the size, or it looks \
                 for the key first; refuse size 0 first, before shmget()",
            )),
            ..refusal("size 0 and a segment already at the key", "zero-size", None)
        };
        publisher_refuses(run, (ok.0, ok.1, 0), &payload, taken)?;
    }
    create_refuses_zero(run, &name)?;
    // One byte more than fits: the header counts.
    let size = run.rng().random_range(100..4000u64);
    let too_big = run.random_bytes(size as usize - HEADER_LEN + 1);
    let what = format!(
        "a {}-byte payload for a {size}-byte segment (one byte more than fits after the 16-byte \
         header)",
        too_big.len()
    );
    publisher_refuses(
        run,
        (ok.0, ok.1, size),
        &too_big,
        refusal(&what, "no-room", key),
    )?;
    let what = "an empty payload for a 15-byte segment (smaller than the 16-byte header)";
    let header_only = Refusal {
        made: Some("not even the header fits: 16 + 0 > 15".into()),
        ..refusal(what, "no-room", key)
    };
    publisher_refuses(run, (ok.0, ok.1, 15), &[], header_only)?;
    let mut tried = "a missing path, ids 0, 256, 257 and one far above (0 also with a missing \
                     path; 0 and 257 given to a reader too), size 0 (also with the key taken), a payload one byte too big, a segment smaller than a header"
        .to_string();
    // More than the publisher may map (its address space is limited): shmget() succeeds, the
    // segment's memory is not used yet, and shmat() fails.
    let address_space = Limits::for_user(run.program_user()).address_space;
    let huge = address_space + 1;
    if machine_allows_segment(huge) {
        let what = format!(
            "size {huge}, more than the publisher's address space ({} GiB), so that shmat() \
             fails (ENOMEM) after shmget() made the segment",
            address_space >> 30
        );
        publisher_refuses(
            run,
            (ok.0, ok.1, huge),
            &payload,
            refusal(&what, "shmat", key),
        )?;
        create_cleans_up_failed_attach(run, &name, huge)?;
        tried.push_str(", a segment too big to attach (by the publisher and by create alone)");
    } else {
        run.note(format!(
            "the machine's memory does not allow a {huge}-byte segment: a failing shmat() was not \
             tried"
        ));
    }
    // The largest id is valid: ftok() keeps all of its 8 bits. And a segment of just a header
    // holds an empty record: 16 + 0 <= 16.
    let largest = fresh_name_with_id(run, 255)?;
    let mut published =
        publish_record(run, true, largest, HEADER_LEN as u64, 0).map_err(|fail| match fail {
            Fail::Failed(m) if m.contains("kind=no-room") => Fail::Failed(format!(
                "with an empty payload in a 16-byte segment, which a header fills exactly \
                 (16 + 0 <= 16): {m}"
            )),
            other => with_context("with id 255, the largest valid one")(other),
        })?;
    published.finish()?;
    Ok(format!(
        "{tried} were refused with their kinds, with nothing left behind; id 255 and an empty \
         payload in a 16-byte segment were accepted"
    ))
}

/// The reader derives its key with the same `key_for()`, which refuses an id outside `1..=255`
/// first: id 0 with a path that does not exist is `bad-id` (not `ftok`), and id 257 is `bad-id`
/// even with a record in the segment of `ftok(path, 1)`, which `ftok()` would take it for (the
/// reader is given `--remove`: one that takes 257 for 1 reads that record and removes it).
fn reader_refuses_ids(run: &mut Run, missing: &Path) -> Result<(), Fail> {
    let publisher_too = "(the publisher refused this id: the id is checked on the publisher's path \
                         only); key_for() refuses every id outside 1..=255, first, for every \
                         caller: the reader derives its key with it too";
    let zero = Name {
        path: missing.to_path_buf(),
        id: 0,
        key: 0,
        replaced: None,
    };
    let what = "a reader given id 0 and a path that does not exist";
    let message = reader_verdict(run, &zero, what)?;
    match (message.kind.as_str(), message.get("kind")) {
        ("failed", Some("bad-id")) => {}
        ("failed", Some(k)) => {
            return Err(Fail::failed(format!(
                "with {what}, the reader said kind={k}, the lab wants kind=bad-id: its \
                 key_for() handed id 0 to ftok() {publisher_too}"
            )));
        }
        (said, _) => {
            return Err(Fail::failed(format!(
                "with {what}, the reader said `{said}`, the lab wants `failed` with kind=bad-id"
            )));
        }
    }
    let alias = fresh_name_with_id(run, 1)?;
    let sequence = run.rng().random_range(2..1_000_000u32);
    let payload = run.random_bytes(64);
    let planted = Planted::new(run, alias.key, 4096, &full_record(sequence, &payload))?;
    let name = Name { id: 257, ..alias };
    let what = "a reader given id 257 (and --remove), with a record in the segment of \
                ftok(path, 1)";
    let message = reader_verdict(run, &name, what)?;
    match (message.kind.as_str(), message.get("kind")) {
        ("failed", Some("bad-id")) => Ok(()),
        ("done", _) => {
            let removed = if segment_by_id(planted.id).is_none() {
                " and removed it"
            } else {
                ""
            };
            Err(Fail::failed(format!(
                "with {what}, the reader read that record (sequence {}){removed}: ftok() keeps \
                 only the low 8 bits of the id, so 257 silently means 1 {publisher_too}",
                message.get("sequence").unwrap_or("?")
            )))
        }
        (said, got) => Err(Fail::failed(format!(
            "with {what}, the reader said `{said}` (kind={}), the lab wants `failed` with \
             kind=bad-id {publisher_too}",
            got.unwrap_or("none")
        ))),
    }
}

/// A reader with `--remove` led to its end: its last message.
fn reader_verdict(
    run: &mut Run,
    name: &Name,
    what: &str,
) -> Result<ipc_labs_driver::Message, Fail> {
    let n = 200 + name.id;
    let (mut reader, _) = spawn_reader(run, name, true, n)?;
    let context = format!("with {what}");
    let mut message = reader.recv_any().map_err(with_context(&context))?;
    if message.kind == "attached" {
        reader.send("go", &[])?;
        message = reader.recv_any().map_err(with_context(&context))?;
    }
    if matches!(message.kind.as_str(), "failed" | "done") {
        reader.wait()?;
    }
    Ok(message)
}

/// Whether the kernel lets a segment of `size` bytes be made (it counts its memory against
/// what the machine has, though nothing is used until it is touched).
fn machine_allows_segment(size: u64) -> bool {
    let Ok(size) = usize::try_from(size) else {
        return false;
    };
    // SAFETY: shmget takes no pointers; the private segment is removed at once.
    let id = unsafe { libc::shmget(libc::IPC_PRIVATE, size, libc::IPC_CREAT | 0o600) };
    if id == -1 {
        return false;
    }
    rmid(id);
    true
}

pub fn size_limit(run: &mut Run) -> Result<String, Fail> {
    // A limit of its own: not a page multiple, between 3 and 16 pages. shmall (the total, in
    // pages) is set to a number of its own too, smaller than shmmax when read as bytes and
    // unlike the other limits' defaults (shmmni is 4096), so that a limit taken from it shows.
    // At least 2 past a page boundary, so that shmmax - 1 is not a page multiple either.
    let shmmax = run.rng().random_range(3..16u64) * 4096 + run.rng().random_range(2..4096u64);
    let shmall = run.rng().random_range(5000..12000u64);
    let payload = run.random_bytes(64);
    let Some(namespace) = PrivateIpc::enter(&[("shmmax", shmmax), ("shmall", shmall)])? else {
        run.note(
            "the grader may not make an IPC namespace here (it needs root): the limit was tried \
             as the machine has it",
        );
        return machine_limit(run, &payload);
    };
    let path = run.path("anchor-private");
    std::fs::write(&path, b"ftok anchor\n")?;
    // Id 1, the smallest valid one, at the limit itself.
    let name = Name {
        key: ftok(&path, 1)?,
        path,
        id: 1,
        replaced: None,
    };
    let at_limit = format!(
        "with shmmax set to {shmmax} (in a private IPC namespace) and a size of exactly {shmmax}"
    );
    let mut proc = start_publisher(run, (&name.path, 1, shmmax), 1, &payload)?;
    let message = proc.recv_any().map_err(with_context(&at_limit))?;
    match (message.kind.as_str(), message.get("kind")) {
        ("ready", _) => {
            let found = segment(name.key);
            if found.is_none_or(|s| s.size != shmmax) {
                return Err(Fail::failed(format!(
                    "{at_limit}, the publisher said `ready` but no {shmmax}-byte segment has \
                     key ftok(path, 1)"
                )));
            }
            proc.send("go", &[])?;
            expect(&mut proc, "publisher", "done")?;
            proc.send("exit", &[])?;
            proc.wait()?;
            // Its key must be free again for the next size.
            found.into_iter().for_each(|s| rmid(s.id));
        }
        ("failed", Some("too-large")) => {
            let error = message.get("error").unwrap_or("");
            let limit = error
                .split("limit of ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok());
            let why = match limit {
                Some(l) if l == shmall => format!(
                    "it compared the size with {l}, which is /proc/sys/kernel/shmall (the total \
                     of all segments, in pages), not shmmax; read /proc/sys/kernel/shmmax"
                ),
                Some(l) if l != shmmax => format!(
                    "it compared the size with {l}, not with the current shmmax; read \
                     /proc/sys/kernel/shmmax each time"
                ),
                // Its limit is shmmax, or it does not say: smaller sizes tell how it compares.
                _ => below_the_limit(run, &name, (shmmax, false), &payload)?,
            };
            return Err(Fail::failed(format!(
                "{at_limit}, the publisher said kind=too-large ({error}): {why}"
            )));
        }
        (said, kind) => {
            return Err(Fail::failed(format!(
                "{at_limit}, the publisher said `{said}` (kind={}: {}), the lab wants a segment \
                 of that size",
                kind.unwrap_or("none"),
                message.get("error").unwrap_or("")
            )));
        }
    }
    let over = shmmax + 1;
    let mut proc = start_publisher(run, (&name.path, 1, over), 2, &payload)?;
    let message = proc.recv_any()?;
    let past = format!("with shmmax set to {shmmax} (in a private IPC namespace), size {over}");
    match (message.kind.as_str(), message.get("kind")) {
        ("failed", Some("too-large")) => {}
        ("failed", Some("shmget")) => {
            return Err(Fail::failed(format!(
                "{past} got kind=shmget (the kernel refused it: {}), not too-large: the \
                 publisher let the size through to shmget(), comparing it with no limit or with \
                 one above the current shmmax (a constant, another file); read \
                 /proc/sys/kernel/shmmax in max_segment_size() each time, and refuse a size \
                 above it",
                message.get("error").unwrap_or("?")
            )));
        }
        (said, kind) => {
            return Err(Fail::failed(format!(
                "{past}, the publisher said `{said}` (kind={}), the lab wants `failed` with \
                 kind=too-large",
                kind.unwrap_or("none")
            )));
        }
    }
    proc.wait()?;
    let setting = format!("shmmax set to {shmmax} (in a private IPC namespace)");
    over_the_limit_key_taken(run, &name, (shmmax, &setting), &payload)?;
    let shmall = shmall_bounds_no_segment(run, &namespace, &name, (shmmax, &setting), &payload)?;
    let long = twenty_digit_limit(run, &namespace, &name, &payload)?;
    drop(namespace);
    Ok(format!(
        "with shmmax {shmmax}, a size of {shmmax} (id 1) was published and {over} was too-large, \
         also with the key taken; {shmall}; with shmmax set to {long} (20 digits, as the \
         default is), a size of exactly shmmax reached shmget()"
    ))
}

/// The limit read whole: with `shmmax` set to a number of 20 digits (as the kernel's default,
/// 18446744073692774399, is), a size of exactly `shmmax` is allowed and must reach `shmget()`,
/// which refuses it (`EINVAL`: more than a file may hold; `kind=shmget`, not `too-large`: that
/// is the publisher's own comparison, which a size of exactly `shmmax` passed already). Returns
/// the limit tried.
fn twenty_digit_limit(
    run: &mut Run,
    namespace: &PrivateIpc,
    name: &Name,
    payload: &[u8],
) -> Result<u64, Fail> {
    // Below the default, so that the size's pages do not wrap around; shmall back to its
    // default, so that the kernel's answer is its own EINVAL (more than a file may hold).
    let default = u64::MAX - (1 << 24);
    let shmmax = run
        .rng()
        .random_range(10_000_000_000_000_000_000u64..=default - (1 << 16));
    namespace.set("shmall", default)?;
    namespace.set("shmmax", shmmax)?;
    let what = format!(
        "with shmmax set to {shmmax} (20 digits, as the kernel's default is; in a private IPC \
         namespace) and a size of exactly {shmmax}"
    );
    // Whether its shmget() ran tells the kernel's EINVAL taken for too-large from a refusal
    // of its own.
    let (mut proc, message, shmget_ran) =
        answer_watching_shmget(run, name, (shmmax, 7), payload, &what)?;
    proc.wait()?;
    segment(name.key).into_iter().for_each(|s| rmid(s.id));
    match (message.kind.as_str(), message.get("kind")) {
        ("failed", Some("shmget")) => Ok(shmmax),
        ("failed", Some("too-large")) => {
            let error = message.get("error").unwrap_or("");
            let own_refusal = |l: u64| {
                (shmget_ran == Some(false) && l == shmmax).then(|| {
                    format!(
                        "its own message names the limit as {l}, shmmax itself, which the size \
                         does not exceed, and it never called shmget() (the grader watched): \
                         it refused the size by a check of its own that a size of exactly \
                         shmmax fails, such as a conversion to a narrower or signed type \
                         (isize, i64, u32); only the comparison size > shmmax is TooLarge, and \
                         a size within it goes to shmget() as it is"
                    )
                })
            };
            let why = limit_of(error)
                .and_then(|l| {
                    digits_cut(l, shmmax)
                        .or(own_refusal(l))
                        .or(einval_taken(l, shmmax, shmmax))
                })
                .unwrap_or_else(|| {
                    "its limit is below shmmax as the file has it now: read \
                     /proc/sys/kernel/shmmax whole, each time, and refuse only a size above it"
                        .to_string()
                });
            Err(Fail::failed(format!(
                "{what}, the publisher said kind=too-large ({error}): {why}"
            )))
        }
        (said, kind) => Err(Fail::failed(format!(
            "{what}, the publisher said `{said}` (kind={}: {}), the lab wants it let through to \
             shmget() (which refuses it: kind=shmget)",
            kind.unwrap_or("none"),
            message.get("error").unwrap_or("")
        ))),
    }
}

/// The limit a `TooLarge` message names (`... limit of N ...`).
fn limit_of(error: &str) -> Option<u64> {
    error
        .split("limit of ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
}

/// What [`below_the_limit`] calls a too-large whose message names `shmmax` itself as the limit,
/// for a size within it, where the kernel refuses such sizes (the machine's own `shmmax`).
const EINVAL_TAKEN: &str = "too-large (within the limit it named)";

/// Why a size of `size`, no more than the limit `l` the publisher's own message names (which is
/// `shmmax`), was too-large: not by its comparison with the limit, which the size passes, but
/// by `shmget()`'s refusal (`EINVAL`: the kernel will not make a segment that large) taken for
/// it.
fn einval_taken(l: u64, size: u64, shmmax: u64) -> Option<String> {
    (l == shmmax && size <= l).then(|| {
        format!(
            "its own message names the limit as {l}, shmmax itself, which the size does not \
             exceed: the refusal did not come from its comparison with shmmax but from \
             shmget(), which refuses a segment this large with EINVAL (more than a file may \
             hold): it takes shmget()'s EINVAL for TooLarge; TooLarge is only the comparison \
             with shmmax, before shmget(), and every shmget() error but EEXIST (EINVAL \
             included) is ShmError::Get (kind=shmget)"
        )
    })
}

/// Why a limit `l` that is the first digits of `shmmax` was taken for it: the file was read in
/// part.
fn digits_cut(l: u64, shmmax: u64) -> Option<String> {
    let (l, whole) = (l.to_string(), shmmax.to_string());
    (l.len() < whole.len() && whole.starts_with(&l)).then(|| {
        format!(
            "it compared the size with {l}, the first {} of the {} digits of shmmax \
             ({whole}): it read /proc/sys/kernel/shmmax only in part (one read() into a buffer \
             too small for the number: a u64 takes up to 20 decimal digits and a newline, not 8 \
             bytes); read the whole file (read_to_string, or read() until it returns 0) and \
             parse that",
            l.len(),
            whole.len()
        )
    })
}

/// Starts publisher `n` with `size` and returns its first answer, with whether its `shmget()`
/// ran (seen, not changed; `None` when it could not be watched).
fn answer_watching_shmget(
    run: &mut Run,
    name: &Name,
    (size, n): (u64, u32),
    payload: &[u8],
    what: &str,
) -> Result<(crate::engine::Proc, ipc_labs_driver::Message, Option<bool>), Fail> {
    let mut proc = spawn_publisher(run, &name.path, name.id, size, n, payload)?;
    let seen = Tracer::attach(
        proc.pid.as_raw(),
        Call::any(libc::SYS_shmget),
        Action::Report,
    )?;
    proc.send("go", &[])?;
    let message = proc.recv_any().map_err(with_context(what))?;
    let shmget_ran = match seen {
        Some(mut seen) => Some(seen.failed_the_call()?),
        None => None,
    };
    Ok((proc, message, shmget_ran))
}

/// The size is judged before `shmget()`: one past the limit is too-large even when a segment
/// has the key already (`shmget()` reports a taken key before it looks at the size).
fn over_the_limit_key_taken(
    run: &mut Run,
    name: &Name,
    (shmmax, setting): (u64, &str),
    payload: &[u8],
) -> Result<(), Fail> {
    let Some(over) = shmmax.checked_add(1) else {
        return Ok(());
    };
    let _planted = Planted::new(run, name.key, 64, &[])?;
    let what =
        format!("with {setting}, a segment already at the key and a size of {over} (shmmax + 1)");
    let mut proc = start_publisher(run, (&name.path, name.id, over), 5, payload)?;
    let message = proc.recv_any().map_err(with_context(&what))?;
    match (message.kind.as_str(), message.get("kind")) {
        ("failed", Some("too-large")) => {}
        ("failed", Some("exists")) => {
            proc.wait()?;
            return Err(Fail::failed(format!(
                "{what}, the publisher said kind=exists, the lab wants too-large (with the key \
                 free it said too-large): it learned that the key was taken before it compared the \
                 size with shmmax, or it never compares it and leaves the size to shmget(), \
                 which reports a taken key before it looks at the size; compare the size with \
                 shmmax first, before shmget()"
            )));
        }
        (said, kind) => {
            return Err(Fail::failed(format!(
                "{what}, the publisher said `{said}` (kind={}), the lab wants `failed` with \
                 kind=too-large",
                kind.unwrap_or("none")
            )));
        }
    }
    proc.wait()?;
    Ok(())
}

/// `shmall` (the total of all segments, in pages) bounds no single segment: with it lowered
/// below `shmmax`, a size one byte past it (and no more than `shmmax`) must reach `shmget()`,
/// which refuses it (`ENOSPC`: `kind=shmget`) or makes it.
fn shmall_bounds_no_segment(
    run: &mut Run,
    namespace: &PrivateIpc,
    name: &Name,
    (shmmax, setting): (u64, &str),
    payload: &[u8],
) -> Result<String, Fail> {
    // SAFETY: sysconf takes no pointers.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    let pages = run.rng().random_range(1..shmmax / page);
    namespace.set("shmall", pages)?;
    let size = pages * page + 1;
    let what = format!(
        "with {setting} and shmall lowered to {pages} pages ({} bytes), a size of {size} (one \
         byte past shmall's bytes, no more than shmmax)",
        pages * page
    );
    // Whether the publisher's shmget() ran tells a limit of its own below shmmax from the
    // kernel's refusal (ENOSPC) reported as too-large.
    let (mut proc, message, shmget_ran) =
        answer_watching_shmget(run, name, (size, 6), payload, &what)?;
    match (message.kind.as_str(), message.get("kind")) {
        ("failed", Some("shmget")) => proc.wait().map(drop)?,
        ("ready", _) => {
            proc.send("go", &[])?;
            expect(&mut proc, "publisher", "done")?;
            proc.send("exit", &[])?;
            proc.wait()?;
            segment(name.key).into_iter().for_each(|s| rmid(s.id));
        }
        ("failed", Some("too-large")) => {
            proc.wait()?;
            let error = message.get("error").unwrap_or("");
            let limit = error
                .split("limit of ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok());
            let reported = limit
                .map(|l| format!(" (it reported a limit of {l})"))
                .unwrap_or_default();
            let why = if shmget_ran == Some(true) {
                // Its own limit let the size through: the kernel refused it.
                return Err(Fail::failed(format!(
                    "{what}, the publisher said kind=too-large ({error}), though its shmget() \
                     ran (the grader saw the call), and the kernel can only have refused it \
                     with ENOSPC (the total past shmall: {size} bytes is within shmmax, and \
                     nothing else is in this IPC namespace){reported}: it takes shmget()'s \
                     ENOSPC for TooLarge; only a size above shmmax, judged before shmget(), \
                     is too-large, and every shmget() error but EEXIST is kind=shmget"
                )));
            } else if limit == Some(pages * page) {
                format!(
                    "it compared the size with {}, shmall times the page size, and never \
                     called shmget()",
                    pages * page
                )
            } else if shmget_ran == Some(false) {
                format!("it never called shmget(): its limit is below shmmax{reported}")
            } else {
                format!(
                    "its limit is below shmmax{reported}, or it takes shmget()'s ENOSPC for \
                     TooLarge (the grader may not trace it here, to see which)"
                )
            };
            return Err(Fail::failed(format!(
                "{what}, the publisher said kind=too-large ({error}): {why}; shmall is the total \
                 of all segments' pages, not a limit on one segment: only a size above shmmax \
                 is too large, and shmget() itself refuses a segment that would take the total \
                 past shmall (ENOSPC, kind=shmget)"
            )));
        }
        (said, kind) => {
            return Err(Fail::failed(format!(
                "{what}, the publisher said `{said}` (kind={}: {}), the lab wants it let \
                 through to shmget() (kind=shmget when the kernel refuses it)",
                kind.unwrap_or("none"),
                message.get("error").unwrap_or("")
            )));
        }
    }
    Ok(format!(
        "with shmall lowered to {pages} pages, a size of {size} reached shmget()"
    ))
}

/// Why a publisher refuses a size of exactly `shmmax`, from what it does with smaller ones:
/// `shmmax - 1` let through is a `>=` for `>`; refused too, with the page below let through, a
/// comparison of whole pages. Let through is `ready`, or `shmget` where the kernel refuses
/// segments that large (the machine's own shmmax).
fn below_the_limit(
    run: &mut Run,
    name: &Name,
    (shmmax, kernel_refuses): (u64, bool),
    payload: &[u8],
) -> Result<String, Fail> {
    let below = shmmax - 1;
    let page = shmmax / 4096 * 4096;
    let refusal = |run: &mut Run, size: u64, sequence: u32| -> Result<Option<String>, Fail> {
        let mut proc = start_publisher(run, (&name.path, name.id, size), sequence, payload)?;
        let message = proc.recv_any()?;
        if message.kind == "ready" {
            proc.send("go", &[])?;
            expect(&mut proc, "publisher", "done")?;
            proc.send("exit", &[])?;
            proc.wait()?;
            segment(name.key).into_iter().for_each(|s| rmid(s.id));
            return Ok(None);
        }
        proc.wait()?;
        Ok(match message.get("kind") {
            Some("shmget") => None,
            Some("too-large")
                if kernel_refuses
                    && limit_of(message.get("error").unwrap_or(""))
                        .and_then(|l| einval_taken(l, size, shmmax))
                        .is_some() =>
            {
                Some(EINVAL_TAKEN.to_string())
            }
            kind => Some(kind.unwrap_or("none").to_string()),
        })
    };
    let Some(kind) = refusal(run, below, 3)? else {
        return Ok(format!(
            "a size of {below} (shmmax - 1) was let through: a size equal to the limit is \
             allowed too: only more than shmmax is too large (size > max, not >=)"
        ));
    };
    if page >= below {
        return Ok(format!(
            "a size of {below} (shmmax - 1) was {kind} as well: its limit is below shmmax as it \
             is now, or it compares more than bytes (whole pages); read \
             /proc/sys/kernel/shmmax and refuse only a size above it"
        ));
    }
    Ok(match refusal(run, page, 4)? {
        None => format!(
            "a size of {below} (shmmax - 1) was {kind} as well, while {page}, the last whole \
             page below it, was let through: it compares whole pages (the size rounded up, or \
             shmmax rounded down); compare the sizes in bytes: only size > shmmax is too large"
        ),
        // Both within the limit the program named, where the kernel refuses sizes that
        // large: the refusals are shmget()'s.
        Some(other) if kind == EINVAL_TAKEN && other == EINVAL_TAKEN => format!(
            "sizes of {below} (shmmax - 1) and {page} (the last whole page below it) were \
             too-large as well, and for each {}",
            einval_taken(shmmax, page, shmmax).unwrap_or_default()
        ),
        Some(other) => format!(
            "sizes of {below} (shmmax - 1) and {page} were refused as well (kind={kind}, \
             kind={other}): it compares the size with a limit below shmmax; read \
             /proc/sys/kernel/shmmax and refuse only a size above it"
        ),
    })
}

/// The limit as the machine has it: shmmax itself is allowed (the kernel may still refuse a
/// segment that large: kind=shmget), shmmax + 1 is too-large.
fn machine_limit(run: &mut Run, payload: &[u8]) -> Result<String, Fail> {
    let name = fresh_name(run)?;
    let shmmax: u64 = std::fs::read_to_string("/proc/sys/kernel/shmmax")?
        .trim()
        .parse()
        .map_err(|e| Fail::Grader(format!("shmmax: {e}")))?;
    let mut proc = start_publisher(run, (&name.path, name.id, shmmax), 1, payload)?;
    let message = proc.recv_any()?;
    let at_limit = format!("with a size of exactly shmmax ({shmmax})");
    match (message.kind.as_str(), message.get("kind")) {
        ("ready", _) => {
            proc.send("go", &[])?;
            expect(&mut proc, "publisher", "done")?;
            proc.send("exit", &[])?;
            proc.wait()?;
            if let Some(made) = segment(name.key) {
                rmid(made.id);
            }
        }
        ("failed", Some("shmget")) => {
            proc.wait()?;
        }
        ("failed", Some("too-large")) => {
            proc.wait()?;
            let cut =
                limit_of(message.get("error").unwrap_or("")).and_then(|l| digits_cut(l, shmmax));
            let why = match cut {
                Some(cut) => cut,
                None => below_the_limit(run, &name, (shmmax, true), payload)?,
            };
            return Err(Fail::failed(format!(
                "{at_limit}, the publisher said kind=too-large: {why}"
            )));
        }
        (said, kind) => {
            return Err(Fail::failed(format!(
                "{at_limit}, the publisher said `{said}` (kind={}), the lab wants it tried \
                 (`ready`, or kind=shmget if the kernel refuses it)",
                kind.unwrap_or("none")
            )));
        }
    }
    let Some(over) = shmmax.checked_add(1) else {
        return Ok("a size of exactly shmmax was allowed".into());
    };
    let what = format!("size {over} (shmmax + 1)");
    let mut proc = start_publisher(run, (&name.path, name.id, over), 2, payload)?;
    let message = proc.recv_any()?;
    match (message.kind.as_str(), message.get("kind")) {
        ("failed", Some("too-large")) => {}
        ("failed", Some("shmget")) => {
            return Err(Fail::failed(format!(
                "with {what} the publisher got kind=shmget (the kernel refused it: {}), not \
                 too-large: compare the size with /proc/sys/kernel/shmmax before shmget()",
                message.get("error").unwrap_or("?")
            )));
        }
        (said, kind) => {
            return Err(Fail::failed(format!(
                "with {what} the publisher said `{said}` (kind={}), the lab wants `failed` with \
                 kind=too-large",
                kind.unwrap_or("none")
            )));
        }
    }
    proc.wait()?;
    let setting = format!("the machine's shmmax ({shmmax})");
    over_the_limit_key_taken(run, &name, (shmmax, &setting), payload)?;
    Ok(format!(
        "a size of exactly shmmax ({shmmax}) was allowed and shmmax + 1 was too-large, also \
         with the key taken"
    ))
}
