//! Pages come in as reads and writes touch them, at every size: a table of the bench's size or
//! more, mapped and not yet touched, holds next to nothing resident, in its creator and in an
//! opener (`MAP_POPULATE`, or a pass over every page, faults it all in at map time).

use crate::engine::{Fail, Run};

use super::driver::{OPENER, Table, table};
use super::probes::resident_bytes;

/// More than this resident in a mapping nothing has accessed yet is faulted in at map time.
const UNTOUCHED_RESIDENT: u64 = 256 << 10;

/// `large`, a table no access has touched yet, and an opener of it, each hold at most
/// [`UNTOUCHED_RESIDENT`] bytes of it resident once mapped.
pub fn large_table_mapped_lazily(run: &mut Run, large: &Table) -> Result<(), Fail> {
    populated(large)?;
    let opener = table(run, &large.name, None, OPENER)?;
    let outcome = populated(&opener);
    opener.proc.kill_tree();
    outcome
}

/// Fails if `table`'s mapping is mostly resident.
fn populated(table: &Table) -> Result<(), Fail> {
    let pid = table.pid();
    let Some(resident) = resident_bytes(pid, &table.name) else {
        return Ok(());
    };
    if resident <= UNTOUCHED_RESIDENT {
        return Ok(());
    }
    Err(Fail::failed(format!(
        "{} (pid {pid}) of a {}-byte table has {resident} bytes of it resident (Rss of its \
         mapping in /proc/{pid}/smaps) once mapped, before any read() or write() was asked: it \
         faulted the table in at map time (MAP_POPULATE, or a pass over every page), for a \
         table this large though not for small ones; mapping is the same at every size: \
         mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), no other flag, and pages \
         come in as read() and write() touch them",
        table.who, table.len
    )))
}
