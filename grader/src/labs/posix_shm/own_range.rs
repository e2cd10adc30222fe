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
/// The writes' offset: in the middle of an 8-byte word, as are their ends, so that a copy by
/// whole aligned words must store bytes on both sides of the range.
const OFFSET: usize = BASE + 3;

/// The byte right before a range of `len` bytes at [`OFFSET`] and the byte right after it,
/// watched for stores.
const fn neighbours(len: usize) -> [Field; 2] {
    [
        Field {
            offset: OFFSET - 1 - BASE,
            len: 1,
            loads: false,
        },
        Field {
            offset: OFFSET + len - BASE,
            len: 1,
            loads: false,
        },
    ]
}

/// The lengths written, each with its neighbours: short, and past a page (a copy may take
/// another way from some length on), all ending mid-word.
static LENGTHS: [(usize, [Field; 2]); 3] = [
    (250, neighbours(250)),
    (4099, neighbours(4099)),
    (9005, neighbours(9005)),
];

/// The length written in a table of the bench's size or more: past a mebibyte, mid-word.
pub static LARGE: (usize, [Field; 2]) = (BIG, neighbours(BIG));
const BIG: usize = (1 << 20) + 5;

/// Every length of [`LENGTHS`] that fits in `table` (with a byte after it), each written as
/// [`stores_only_its_range`] says.
pub fn stores_only_its_ranges(run: &mut Run, table: &mut Table) -> Result<(), Fail> {
    for (len, fields) in &LENGTHS {
        if OFFSET + len < table.len {
            stores_only_its_range(run, table, *len, fields)?;
        }
    }
    Ok(())
}

/// `table`'s process writes `len` bytes at [`OFFSET`] with both neighbouring bytes watched
/// (`neighbours`): `done`, with no store into either before it. Nothing where the grader cannot
/// watch.
pub fn stores_only_its_range(
    run: &mut Run,
    table: &mut Table,
    len: usize,
    neighbours: &'static [Field],
) -> Result<(), Fail> {
    let Some(mapping) = table_mapping(table.pid(), &table.name) else {
        return Ok(());
    };
    let Some(tracer) = Tracer::watch_at(table.pid(), mapping.start + BASE as u64, neighbours)?
    else {
        return Ok(());
    };
    let data = run.random_bytes(len);
    let fields = table.write_fields(run, OFFSET, &data)?;
    let what = format!(
        "writing {len} bytes at offset {OFFSET} of the table ({}, its bytes {OFFSET}..{}), with \
         a hardware watchpoint on byte {} and on byte {}, right before and right after the \
         range",
        table.who,
        OFFSET + len,
        OFFSET - 1,
        OFFSET + len
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
             written in between, and the store undoes that write (a lost update); a write of \
             any length, short or long, copies exactly the range (copy_nonoverlapping), \
             nothing around it",
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
