//! Checks of the publisher's error paths: a segment that is already there (or appears just as it
//! calls shmget()), input the lab names an error for, and what a failed publisher leaves behind
//! (nothing). The size limit is `size_limit`'s.

use std::path::Path;
use std::time::{Duration, Instant};

use rand::RngExt;

use crate::engine::process::Limits;
use crate::engine::{Fail, Run};

use super::HEADER_LEN;
use super::protocol::{
    Name, fresh_name, fresh_name_in, fresh_name_with_id, ftok, publish_record, run_create_step,
    spawn_publisher, spawn_reader, start_publisher, start_publisher_with, with_context,
};
use super::segments::{Planted, full_record, last_attacher, record, rmid, segment, segment_by_id};
use crate::engine::tracer::{Action, Call, Reached, Tracer};

/// A stale segment: a complete record an earlier publication left.
fn stale_record(run: &mut Run) -> Vec<u8> {
    let payload = run.random_bytes(3000);
    full_record(1, &payload)
}

/// What a publisher killed before its magic leaves: payload, length and sequence, no magic.
fn record_without_magic(run: &mut Run) -> Vec<u8> {
    let payload = run.random_bytes(3000);
    record(0, 1, payload.len() as u64, &payload)
}

/// Judges a publisher that met a segment with its key (`planted`, holding `before`): it must
/// fail with kind=exists and leave the segment as it was. `how` says how the segment came.
pub(super) fn refused_existing(
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
            let unchanged = took_over && planted.contents(size)? == before;
            return Err(Fail::failed(if unchanged {
                format!(
                    "{how}, and the publisher attached it (segment {}) and said `ready` with its \
                     bytes as they were: it took that segment for its own publication; a \
                     segment that has the key is never reused, whatever it holds: report EEXIST \
                     as ShmError::Exists and leave the segment alone",
                    planted.id
                )
            } else if took_over {
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
            // Its own shmat() or shmdt() of the segment makes the publisher its `lpid`.
            let looked_inside = last_attacher(planted.id) == Some(proc.pid.as_raw());
            let why = if looked_inside {
                format!(
                    ", yet it had attached that segment (the publisher is its lpid in \
                     /proc/sysvipc/shm) and reported the error `{}`: after EEXIST it went on \
                     to look into a segment that is not its own, and reported another error \
                     than EEXIST; on EEXIST, return ShmError::Exists at once and leave the \
                     segment alone",
                    message.get("error").unwrap_or("?")
                )
            } else {
                ": map EEXIST to ShmError::Exists".into()
            };
            return Err(Fail::failed(format!(
                "{how}; the publisher said `{kind}` (kind={}), not `failed` with kind=exists{why}",
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
    let stale = record_without_magic(run);
    let planted = Planted::left_by_exited_process(run, name.key, size, &stale)?;
    let before = planted.contents(size)?;
    planted.unattached()?;
    let mut proc = start_publisher(run, (&name.path, name.id, size as u64), 2, &payload)?;
    let message = proc.recv_any()?;
    let how = "a segment with the key was already there (not attached, its creator exited, a \
               record in it but no magic: its writer was killed), as a crashed run leaves it";
    refused_existing(&mut proc, message, (&planted, &before, size), name.key, how)?;
    let stale_id = planted.id;
    drop(planted);
    // A crashed run of this very publication: the segment already holds the record the
    // publisher is asked to write, and is still not its own.
    let name = fresh_name_with_id(run, name.id)?;
    let same = full_record(2, &payload);
    let planted = Planted::left_by_exited_process(run, name.key, size, &same)?;
    let before = planted.contents(size)?;
    planted.unattached()?;
    let mut proc = start_publisher(run, (&name.path, name.id, size as u64), 2, &payload)?;
    let message = proc.recv_any()?;
    let how = "a segment with the key was already there (not attached, its creator exited) \
               holding the very record the publisher was asked to write (same size, sequence \
               and payload), as a crash of the same publication after its magic leaves it";
    refused_existing(&mut proc, message, (&planted, &before, size), name.key, how)?;
    drop(planted);
    super::taken_key::blank_segment_refused_at_once(run)?;
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
    let (planted, before) = match stop.wait(&mut proc, until)? {
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
            // Read before the publisher goes on: it may remove the segment.
            let before = planted.contents(size)?;
            stop.release();
            (planted, before)
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
    let message = proc.recv_any()?;
    let how = "a segment with the key appeared only once the publisher had started, just as it \
               called shmget() with IPC_CREAT (the grader made it then, as another process may), \
               holding a complete record of an older publication (sequence 1; the publisher's \
               is 3)";
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
    super::older_publication::older_record_refused_unlooked(run)?;
    Ok(
        "the publisher refused a stale segment, one that appeared at its shmget() and an \
        older publication's record, each at once (kind=exists), and left them as they were"
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
    /// More of `publish`'s options, which shape the input (`--nul-in-path`).
    options: &'a [&'a str],
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
        options,
    } = refusal;
    let context = format!("with {what}");
    let mut proc = start_publisher_with(run, (path, id, size), 1, payload, options)?;
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
        options: &[],
    }
}

/// A fresh name whose path with id 0 gives a key no other check holds, declared too: a
/// publisher that does not validate the id might create it.
fn fresh_name_and_zero(run: &mut Run) -> Result<Name, Fail> {
    for attempt in 0..64 {
        let name = fresh_name_in(run, format!("anchor-{attempt}").as_ref())?;
        if run.ipc_key(ftok(&name.path, 0)?) {
            return Ok(name);
        }
    }
    Err(Fail::Grader(
        "every ftok key tried with id 0 is held by another check".into(),
    ))
}

pub fn bad_input(run: &mut Run) -> Result<String, Fail> {
    let name = fresh_name_and_zero(run)?;
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
    // No file name holds a NUL byte, and ftok() takes a C string: key_for cannot hand it on.
    let nul = Refusal {
        options: &["--nul-in-path"],
        ..refusal(
            "an existing file's path with a NUL byte and `x` added (no file name holds a NUL; \
             ftok() takes a C string, which ends at the first one)",
            "ftok",
            key,
        )
    };
    publisher_refuses(run, ok, &payload, nul)?;
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
