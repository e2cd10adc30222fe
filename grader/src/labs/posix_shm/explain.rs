//! Why a read did not return what was written: the grader looks at how each process maps the
//! object and at what its mapping holds, and names the cause it established.

use std::time::{Duration, Instant};

use crate::engine::Fail;

use super::driver::Table;
use super::probes::{
    dev_shm, difference, find, mapped_bytes, object_bytes, other_threads, table_mapping,
};

/// Who wrote the bytes a read should have returned.
pub enum Writer<'a> {
    /// A program, through its table.
    Program(&'a Table),
    /// Someone, named, through the object's file or a mapping gone since: the grader, or a
    /// program that has exited.
    Object(&'static str),
}

/// Fails unless `got`, what `reader` read at `at`, is `want`, what `writer` wrote there.
/// `context` opens the message; `new_object` is the content of another object that took the
/// name since (after an unlink), if the check made one.
pub fn expect_read(
    reader: &Table,
    writer: Writer<'_>,
    at: usize,
    got: &[u8],
    want: &[u8],
    context: &str,
    new_object: Option<&[u8]>,
) -> Result<(), Fail> {
    let Some(differs) = difference(got, want) else {
        return Ok(());
    };
    let cause = cause(reader, &writer, at, got, want, new_object);
    Err(Fail::failed(format!("{context}: {differs}; {cause}")))
}

fn cause(
    reader: &Table,
    writer: &Writer<'_>,
    at: usize,
    got: &[u8],
    want: &[u8],
    new_object: Option<&[u8]>,
) -> String {
    let name = &reader.name;
    let path = dev_shm(name).display().to_string();
    let mut programs = vec![reader];
    if let Writer::Program(writer) = writer {
        programs.push(writer);
    }
    for table in &programs {
        match table_mapping(table.pid(), name) {
            None => {
                return format!(
                    "{} (pid {}) has no mapping of {path}: map the object itself with \
                     mmap(MAP_SHARED) and keep it mapped until close",
                    table.who,
                    table.pid()
                );
            }
            Some(m) if !m.perms.ends_with('s') => {
                return format!(
                    "{} maps the table privately ({}, MAP_PRIVATE): its writes go to its own \
                     copy-on-write pages and it misses the others' writes; map it with \
                     MAP_SHARED",
                    table.who, m.perms
                );
            }
            Some(_) => {}
        }
    }
    let reader_sees = mapped_bytes(reader.pid(), name, at, want.len());
    if reader_sees.as_deref() == Some(want)
        && let Writer::Program(writer) = writer
        && writer.pid() != reader.pid()
    {
        let threads = other_threads(writer.pid());
        if !threads.is_empty() {
            return format!(
                "{}'s own mapping of the object holds the bytes now, and {} runs threads \
                 besides the one that answers ({threads:?}): either {}'s read() copies from \
                 somewhere else than the mapping, or one of {}'s threads stored the bytes after \
                 its write() had said `done`; write() copies into the mapping, and read() out of \
                 it, each itself, before it answers",
                reader.who, writer.who, reader.who, writer.who
            );
        }
    }
    if reader_sees.as_deref() == Some(want) {
        let own = reader
            .wrote
            .iter()
            .rev()
            .find(|(offset, bytes)| *offset == at && bytes.len() == got.len())
            .is_some_and(|(_, bytes)| bytes == got);
        if own {
            return format!(
                "{} got back the bytes it had itself written there before, although its own \
                 mapping now holds the newer ones: its read() answers from a copy of its own \
                 writes; copy out of the mapping on every read",
                reader.who
            );
        }
        // The last read recorded is this one.
        let earlier = reader
            .read_back
            .iter()
            .rev()
            .skip(1)
            .any(|(offset, bytes)| *offset == at && bytes.as_slice() == got);
        if earlier {
            return format!(
                "{} got back what an earlier read of the same range had returned, although its \
                 own mapping now holds the newer bytes: its read() answers from a copy of an \
                 earlier read (a change that leaves some bytes, the range's ends say, as they \
                 were is still a change); copy out of the mapping on every read",
                reader.who
            );
        }
        let from_new = new_object
            .and_then(|bytes| bytes.get(at..at + got.len()))
            .is_some_and(|bytes| bytes == got);
        if from_new {
            return format!(
                "{} read the bytes of the new object that has the name now (the grader created \
                 it after the unlink), not those of the table it maps: its read() opens {path} \
                 by its path; copy out of its own mapping instead",
                reader.who
            );
        }
        let whole = mapped_bytes(reader.pid(), name, 0, reader.len).unwrap_or_default();
        if let Some(from) = find(&whole, got).filter(|&from| from != at) {
            return format!(
                "{} returned the bytes that are at offset {from} of the table, not those at \
                 {at}: read() must copy from the mapping's address plus the offset asked for",
                reader.who
            );
        }
        if let Some(part) = partly(got, want) {
            return format!(
                "{}'s own mapping holds all the bytes that were written, but its read() \
                 returned only {part}: read() must copy all of them, from the mapping's address \
                 plus the offset",
                reader.who
            );
        }
        return format!(
            "{}'s own mapping of the object holds the bytes that were written, but its read() \
             returned others: read() must copy out of the mapping, not out of a copy or a file",
            reader.who
        );
    }
    if let (Writer::Program(writer), Some(_)) = (writer, &reader_sees) {
        let whole = mapped_bytes(reader.pid(), name, 0, reader.len).unwrap_or_default();
        if let Some(to) = find(&whole, want).filter(|&to| to != at) {
            return format!(
                "the bytes {} wrote are at offset {to} of the table, not at {at}: write() must \
                 copy to the mapping's address plus the offset asked for",
                writer.who
            );
        }
    }
    match (writer, reader_sees) {
        (Writer::Program(writer), Some(_)) => {
            match mapped_bytes(writer.pid(), name, at, want.len()) {
                Some(bytes) if bytes == want => format!(
                    "{}'s mapping holds the bytes but {}'s does not: the two do not map the \
                     same object",
                    writer.who, reader.who
                ),
                Some(bytes) if partly(&bytes, want).is_some() => format!(
                    "{} said it wrote them, but its own mapping holds only {}: write() must \
                     copy all of them, to the mapping's address plus the offset",
                    writer.who,
                    partly(&bytes, want).unwrap_or_default()
                ),
                Some(_) => format!(
                    "{} said it wrote them, but its own mapping does not hold them: write() \
                     must copy into the mapping, not into a copy or a file of its own",
                    writer.who
                ),
                None => unknown(),
            }
        }
        (Writer::Object(who), Some(_)) => format!(
            "{who} put them into {path}, but {}'s mapping does not hold them: it does not map \
             that object",
            reader.who
        ),
        (_, None) => {
            // The mappings cannot be read (no permission): judge by the object alone.
            match object_bytes(name, at, want.len()) {
                Some(bytes) if bytes == want => format!(
                    "{path} holds the bytes that were written, but {}'s read() returned others: \
                     read() must copy out of the mapping, not out of a copy or a file",
                    reader.who
                ),
                Some(_) => "the bytes written are not in the object: write() must copy into the \
                            mapping of the object itself"
                    .into(),
                None => unknown(),
            }
        }
    }
}

/// Fails if `table`'s mapping, looked at right after its `done` to a write of `data` at
/// `offset`, lacks some of the bytes and holds them all a moment later: they were stored after
/// write() returned. Bytes that never arrive are left to the reads that miss them.
pub fn stored_before_done(table: &Table, offset: usize, data: &[u8]) -> Result<(), Fail> {
    let lacking = |bytes: Option<Vec<u8>>| {
        bytes.map(|bytes| bytes.iter().zip(data).filter(|(a, b)| a != b).count())
    };
    let pid = table.pid();
    let Some(missing) = lacking(mapped_bytes(pid, &table.name, offset, data.len())) else {
        return Ok(());
    };
    if missing == 0 {
        return Ok(());
    }
    let until = Instant::now() + LATE_STORE;
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
        if lacking(mapped_bytes(pid, &table.name, offset, data.len())) == Some(0) {
            return Err(Fail::failed(format!(
                "{} said `done` to a write of {} bytes at offset {offset}, but its own mapping, \
                 which the grader read right after the `done` (/proc/{pid}/mem), lacked {missing} \
                 of them, and a moment later held them all: they were stored after write() had \
                 returned (by another thread of the program, or code that runs later), so a \
                 process that reads right after the `done` finds the old bytes; write() copies \
                 the bytes into the mapping itself, before it returns",
                table.who,
                data.len()
            )));
        }
    }
    Ok(())
}

/// How long the grader looks for the bytes of a write that its mapping lacked at `done`.
const LATE_STORE: Duration = Duration::from_millis(200);

/// "N of the L bytes, the others differ from byte F", when most of `got` is `want` but not all.
pub fn partly(got: &[u8], want: &[u8]) -> Option<String> {
    let same = got.iter().zip(want).filter(|(a, b)| a == b).count();
    if same == want.len() && got.len() == want.len() || same * 2 < want.len() {
        return None;
    }
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(same);
    Some(format!(
        "{same} of the {} bytes, the others differing from byte {first}",
        want.len()
    ))
}

fn unknown() -> String {
    "the bytes did not travel through shared pages: both processes must map the object with \
     MAP_SHARED, write() must copy into the mapping and read() out of it"
        .into()
}
