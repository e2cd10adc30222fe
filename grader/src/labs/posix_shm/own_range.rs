//! A write stores only the bytes of its range: the bytes on either side may be another
//! process's, written meanwhile, and a store of them, even of the value just loaded, undoes
//! that write. A hardware watchpoint on the byte before the range and on the byte after it sees
//! any store the program's own instructions make there.

use crate::engine::tracer::{Field, Tracer};
use crate::engine::{Fail, Run};

use super::driver::{Table, WatchedCommand, await_answer, said};
use super::probes::table_mapping;

/// Where the watched stretch starts in the table: a multiple of 8, as the watchpoints want.
const BASE: usize = 64;
/// The write's offset and length: both ends in the middle of an 8-byte word, so that a copy by
/// whole aligned words must store bytes on both sides of the range.
const OFFSET: usize = BASE + 3;
const LEN: usize = 250;

/// The byte right before the range and the byte right after it, watched for stores.
const NEIGHBOURS: &[Field] = &[
    Field {
        offset: OFFSET - 1 - BASE,
        len: 1,
        loads: false,
    },
    Field {
        offset: OFFSET + LEN - BASE,
        len: 1,
        loads: false,
    },
];

/// `table`'s process writes [`LEN`] bytes at [`OFFSET`] with both neighbouring bytes watched:
/// `done`, with no store into either before it. Nothing where the grader cannot watch.
pub fn stores_only_its_range(run: &mut Run, table: &mut Table) -> Result<(), Fail> {
    let Some(mapping) = table_mapping(table.pid(), &table.name) else {
        return Ok(());
    };
    let Some(tracer) = Tracer::watch_at(table.pid(), mapping.start + BASE as u64, NEIGHBOURS)?
    else {
        return Ok(());
    };
    let data = run.random_bytes(LEN);
    let fields = table.write_fields(run, OFFSET, &data)?;
    let what = format!(
        "writing {LEN} bytes at offset {OFFSET} of the table ({}, its bytes {OFFSET}..{}), with \
         a hardware watchpoint on byte {} and on byte {}, right before and right after the \
         range",
        table.who,
        OFFSET + LEN,
        OFFSET - 1,
        OFFSET + LEN
    );
    let WatchedCommand { answer, hit, .. } = table.command_watched(tracer, &fields)?;
    let answer = match answer {
        Some(answer) => answer,
        None => await_answer(&mut table.proc, table.who, &what, None)?,
    };
    if hit {
        return Err(Fail::failed(format!(
            "{what}: the watchpoint saw the program's own instructions store into a byte \
             outside the range before it answered ({}): write() stores more than its own \
             bytes (a whole word or block loaded, patched and stored back, say); even stored \
             with the value it loaded a moment earlier, that byte may be another process's, \
             written in between, and the store undoes that write (a lost update); copy exactly \
             the range, byte for byte (copy_nonoverlapping), nothing around it",
            said(&answer)
        )));
    }
    if answer.kind != "done" {
        return Err(Fail::failed(format!(
            "{what}: the program said {}",
            said(&answer)
        )));
    }
    Ok(())
}
