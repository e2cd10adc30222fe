//! Readers led under a hardware watch of their loads, and records the grader changes at a watched
//! load: completed under the reader, a length changed after its load, a magic stored after its look.

use rand::RngExt;

use ipc_labs_driver::Message;

use crate::engine::{Fail, Proc, Run};

use super::protocol::{Name, spawn_held_reader, with_context};
use super::segments::{Planted, full_record, overwrite, record};
use super::{HEADER_LEN, MAGIC};
use crate::engine::tracer::{Field, Tracer, Watched};

/// What the grader does once a watched load has stopped the reader.
pub(super) enum AtLoad {
    /// Let it run on, still watched.
    GoOn,
    /// Stop watching: it runs on untraced.
    Release,
}

/// A watched reader's last word (`Err` if it ended without one) and the watched loads seen.
pub(super) struct WatchedRead {
    pub(super) said: Result<Message, Fail>,
    pub(super) loads: u32,
}

/// Leads a held reader under a watch of `fields`: `go` now and at its `attached`, `at_load`
/// (given the loads so far) at each watched load, until its last word (`Err` if it ended
/// without one). Returns that word and the loads seen; `None`, noted as `unwatched`, where the
/// grader may not watch.
pub(super) fn watched_reader(
    run: &mut Run,
    reader: &mut Proc,
    fields: &'static [Field],
    unwatched: &str,
    mut at_load: impl FnMut(u32) -> Result<AtLoad, Fail>,
) -> Result<Option<WatchedRead>, Fail> {
    let Some(mut watch) = Tracer::watch(reader.pid.as_raw(), fields)? else {
        run.note(unwatched);
        reader.kill_tree();
        return Ok(None);
    };
    reader.send("go", &[])?;
    let mut loads = 0;
    let said = loop {
        match watch.next(reader, run.deadline())? {
            Watched::Armed => {}
            Watched::Unavailable => {
                drop(watch);
                run.note(unwatched);
                reader.kill_tree();
                return Ok(None);
            }
            Watched::Said(message) if message.kind == "attached" => reader.send("go", &[])?,
            Watched::Said(message) => break Ok(message),
            Watched::Hit => {
                loads += 1;
                match at_load(loads)? {
                    AtLoad::GoOn => watch.go_on(),
                    AtLoad::Release => {
                        drop(watch);
                        return Ok(Some(WatchedRead {
                            said: reader.recv_any(),
                            loads,
                        }));
                    }
                }
            }
            Watched::Lost => break reader.recv_any(),
        }
    };
    drop(watch);
    Ok(Some(WatchedRead { said, loads }))
}

/// The sequence and the length fields, watched for loads (and stores).
const FIELDS_AFTER_MAGIC: &[Field] = &[
    Field {
        offset: 4,
        len: 4,
        loads: true,
    },
    Field {
        offset: 8,
        len: 8,
        loads: true,
    },
];

/// A record completed while the reader reads it: the segment holds the payload but no header
/// yet, as a publisher leaves it halfway, and the grader writes the length, the sequence and the
/// magic the moment the reader first loads the length or the sequence. A reader that checks the
/// magic first finds none (`bad-magic`); one that loads the other fields first reports them as
/// they were, under the magic it finds afterwards. `None` where the grader may not watch.
pub(super) fn record_completed_while_read(
    run: &mut Run,
    name: &Name,
    n: u32,
) -> Result<Option<()>, Fail> {
    let size = 4096 + run.rng().random_range(100..3000usize);
    let len = run.rng().random_range(100..size - HEADER_LEN);
    let sequence = run.rng().random_range(2..1_000_000u32);
    let payload = run.random_bytes(len);
    let planted = Planted::new(run, name.key, size, &record(0, 0, 0, &payload))?;
    let (mut reader, output) = spawn_held_reader(run, name, false, n)?;
    let unwatched = "the grader may not watch the reader's loads here (ptrace, hardware \
                     watchpoints, x86-64): a record completed under it was not tried";
    let header = full_record(sequence, &payload);
    let Some(WatchedRead { said, loads }) =
        watched_reader(run, &mut reader, FIELDS_AFTER_MAGIC, unwatched, |_| {
            overwrite(planted.id, 0, &header[..HEADER_LEN])?;
            Ok(AtLoad::Release)
        })?
    else {
        return Ok(None);
    };
    let completed = loads > 0;
    let what = format!(
        "a segment holding a {len}-byte payload but no header yet, as a publisher leaves it \
         halfway, whose length, sequence ({sequence}) and magic the grader wrote as soon as the \
         reader loaded the length or the sequence field"
    );
    let outcome = said.map_err(with_context(&format!("on {what}")))?;
    if matches!(outcome.kind.as_str(), "failed" | "done") {
        reader.wait()?;
    }
    let reported = |m: &ipc_labs_driver::Message| {
        format!(
            "sequence {}, {} bytes",
            m.get("sequence").unwrap_or("?"),
            m.get("length").unwrap_or("?")
        )
    };
    Err(Fail::failed(
        match (outcome.kind.as_str(), outcome.get("kind")) {
            ("failed", Some("bad-magic")) => return Ok(Some(())),
            ("done", _) if completed => {
                let read = std::fs::read(&output)?;
                if outcome.get("sequence") == Some(sequence.to_string().as_str()) && read == payload
                {
                    return Ok(Some(()));
                }
                let stale: Vec<&str> = [
                    (
                        outcome.get("length") != Some(len.to_string().as_str()),
                        "length",
                    ),
                    (
                        outcome.get("sequence") != Some(sequence.to_string().as_str()),
                        "sequence",
                    ),
                ]
                .into_iter()
                .filter_map(|(stale, field)| stale.then_some(field))
                .collect();
                let stale = match stale.as_slice() {
                    [] => "payload".to_string(),
                    fields => fields.join(" and "),
                };
                format!(
                    "on {what}: the reader loaded the length or the sequence while the segment had \
                 no magic yet, then found the magic, and reported a record ({}) whose {stale} \
                 is from before the record was complete (the complete one is sequence \
                 {sequence}, {len} bytes): it reads the fields before it checks the magic; load \
                 the magic first, then an acquire fence, then the length and the sequence",
                    reported(&outcome)
                )
            }
            ("done", _) => format!(
                "on {what}, the reader reported a record ({}) although the segment had no magic \
             and it never loaded the length or the sequence: check the magic, and refuse a \
             segment without it (kind=bad-magic)",
                reported(&outcome)
            ),
            ("failed", kind) if completed => format!(
                "on {what}, the reader said kind={}: neither kind=bad-magic (there was no magic \
             until it loaded the length or the sequence) nor the complete record",
                kind.unwrap_or("none")
            ),
            ("failed", kind) => format!(
                "on {what}, the reader said kind={}, the lab wants kind=bad-magic: the segment had \
             no magic when it looked",
                kind.unwrap_or("none")
            ),
            (said, _) => format!(
                "on {what}, the reader said `{said}` where the grader expected `done` or `failed`"
            ),
        },
    ))
}

/// The length field, watched for loads.
const LENGTH_LOADS: &[Field] = &[Field {
    offset: 8,
    len: 8,
    loads: true,
}];

/// A record whose length field the grader changes to one far past the segment's end right
/// after the reader's first load of it (after the magic): the reader must copy the length it
/// loaded and checked (or, if it loads the field again, check that one too), never a length
/// it loads anew for the copy. `None` where the grader may not watch.
pub(super) fn length_changed_after_its_load(
    run: &mut Run,
    name: &Name,
    n: u32,
) -> Result<Option<()>, Fail> {
    let size = 4096 + run.rng().random_range(100..3000usize);
    let len = run.rng().random_range(100..=size - HEADER_LEN);
    let sequence = run.rng().random_range(2..1_000_000u32);
    let payload = run.random_bytes(len);
    let planted = Planted::new(run, name.key, size, &full_record(sequence, &payload))?;
    let (mut reader, output) = spawn_held_reader(run, name, false, n)?;
    let unwatched = "the grader may not watch the reader's loads here (ptrace, hardware \
                     watchpoints, x86-64): a length changed after the reader loaded it was not \
                     tried";
    let forged = (1u64 << 40) + run.rng().random_range(0..1u64 << 20);
    let Some(WatchedRead {
        said: outcome,
        loads,
    }) = watched_reader(run, &mut reader, LENGTH_LOADS, unwatched, |loads| {
        if loads == 1 {
            overwrite(planted.id, 8, &forged.to_ne_bytes())?;
        }
        Ok(AtLoad::GoOn)
    })?
    else {
        return Ok(None);
    };
    let what = format!(
        "a {len}-byte record in a {size}-byte segment whose length field the grader changed to \
         {forged} (far past the segment's end) right after the reader's first load of it"
    );
    if let Ok(message) = &outcome
        && matches!(message.kind.as_str(), "failed" | "done")
    {
        reader.wait()?;
    }
    let did = match &outcome {
        Ok(m) if m.kind == "done" => {
            let read = std::fs::read(&output)?;
            if m.get("sequence") == Some(sequence.to_string().as_str()) && read == payload {
                return Ok(Some(()));
            }
            format!(
                "reported a record of {} bytes and wrote {} bytes (the record holds {len})",
                m.get("length").unwrap_or("?"),
                read.len()
            )
        }
        // The field loaded again, and checked: refusing the new length is safe.
        Ok(m) if m.kind == "failed" && m.get("kind") == Some("bad-length") && loads > 1 => {
            return Ok(Some(()));
        }
        Ok(m) => format!(
            "said `{}` (kind={})",
            m.kind,
            m.get("kind").unwrap_or("none")
        ),
        Err(Fail::Crashed(_)) => "crashed".to_string(),
        Err(other) => return Err(with_context(&format!("on {what}"))(other.clone())),
    };
    let crash = match &outcome {
        Err(Fail::Crashed(m)) => format!(" ({m})"),
        _ => String::new(),
    };
    let text = if loads > 1 {
        format!(
            "on {what}: the reader loaded the length field again ({loads} loads of it in all) \
             and {did}: it copies with a length loaded anew, which it never checked (a double \
             fetch: another process may change the field between the two loads); load the \
             length once, after the magic, check it, and copy exactly that many bytes{crash}"
        )
    } else {
        format!(
            "on {what}: the reader {did}; it was to copy the {len} bytes of the length it had \
             loaded and checked{crash}"
        )
    };
    Err(match outcome {
        Err(Fail::Crashed(_)) => Fail::Crashed(text),
        _ => Fail::failed(text),
    })
}

/// The magic, watched for loads.
const MAGIC_LOADS: &[Field] = &[Field {
    offset: 0,
    len: 4,
    loads: true,
}];

/// A record complete but for its magic, which the grader stores right after the reader's first
/// load of it (which found none): the reader judges what it found, `bad-magic` at once; one
/// that waits for the magic (sleeps and loads it again, "a publisher may still be writing")
/// reports the record. `None` where the grader may not watch.
pub(super) fn magic_stored_after_its_look(
    run: &mut Run,
    name: &Name,
    n: u32,
) -> Result<Option<()>, Fail> {
    let size = 4096 + run.rng().random_range(100..3000usize);
    let len = run.rng().random_range(100..size - HEADER_LEN);
    let sequence = run.rng().random_range(2..1_000_000u32);
    let payload = run.random_bytes(len);
    let mut unfinished = full_record(sequence, &payload);
    unfinished[..4].fill(0);
    let planted = Planted::new(run, name.key, size, &unfinished)?;
    let (mut reader, _) = spawn_held_reader(run, name, false, n)?;
    let unwatched = "the grader may not watch the reader's loads here (ptrace, hardware \
                     watchpoints, x86-64): a magic stored after the reader's look was not tried";
    let Some(WatchedRead { said, loads }) =
        watched_reader(run, &mut reader, MAGIC_LOADS, unwatched, |loads| {
            if loads == 1 {
                overwrite(planted.id, 0, &MAGIC.to_ne_bytes())?;
            }
            Ok(AtLoad::GoOn)
        })?
    else {
        return Ok(None);
    };
    let what = format!(
        "a {len}-byte record complete but for its magic (0), which the grader stored right \
         after the reader's first load of the magic field (a hardware watchpoint)"
    );
    let context = format!("on {what}");
    let outcome = said.map_err(with_context(&context))?;
    if matches!(outcome.kind.as_str(), "failed" | "done") {
        reader.wait()?;
    }
    match (outcome.kind.as_str(), outcome.get("kind")) {
        ("failed", Some("bad-magic")) => Ok(Some(())),
        ("done", _) if loads > 1 => Err(Fail::failed(format!(
            "{context}: its first load found no magic, yet it loaded the magic again ({loads} \
             loads of it in all) and reported the record (sequence {}) once the grader had \
             stored the magic: it waits for the magic to appear (a publisher still writing, it \
             supposes) instead of judging what it found; a segment that does not start with \
             MAGIC is BadMagic at once: load the magic once and refuse the segment if it is not \
             there",
            outcome.get("sequence").unwrap_or("?")
        ))),
        ("done", _) => Err(Fail::failed(format!(
            "{context}: the reader reported the record (sequence {}) though its only load of \
             the magic found none: check the magic you loaded, and refuse a segment without it \
             (kind=bad-magic)",
            outcome.get("sequence").unwrap_or("?")
        ))),
        (said, kind) => Err(Fail::failed(format!(
            "{context}, the reader said `{said}` (kind={}), the lab wants `failed` with \
             kind=bad-magic: the segment had no magic when it looked",
            kind.unwrap_or("none")
        ))),
    }
}
