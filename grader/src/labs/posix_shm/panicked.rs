//! Processes ended by a panic, which unwinds the stack: only `unlink()` removes the name, so
//! the object outlives them as it outlives one that exits or is killed, whatever runs as the
//! stack unwinds (a `Drop` of the table).

use std::time::{Duration, Instant};

use crate::engine::{Fail, Run};

use super::driver::{Table, creators, openers};
use super::probes::{dev_shm, exists};

/// An opener, then the creator, of one table, each made to panic once mapped (a write from a
/// data file the grader never made: `main.rs`'s `expect()`): the name stays.
pub fn panicked_processes_leave_the_name(run: &mut Run) -> Result<(), Fail> {
    let name = run.ipc_name("panicked");
    let creator = creators(run, &[(name.clone(), 4096)])?.remove(0);
    let opener = openers(run, std::slice::from_ref(&name))?.remove(0);
    let outcome = panic_keeps_the_name(run, opener);
    let outcome = outcome.and_then(|()| panic_keeps_the_name(run, creator));
    // Nobody unlinks it in this check: the grader removes it.
    let _ = std::fs::remove_file(dev_shm(&name));
    outcome
}

/// `table`'s process is made to panic; once it has died, the name must still be there.
fn panic_keeps_the_name(run: &mut Run, mut table: Table) -> Result<(), Fail> {
    let missing = run.path(&format!("never-made-{}.bin", table.pid()));
    let fields = [
        ("op", "write".to_string()),
        ("offset", "0".to_string()),
        ("file", missing.display().to_string()),
    ];
    table.proc.send("cmd", &fields)?;
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let soon = Instant::now() + Duration::from_millis(5);
        match table.proc.recv_before(soon) {
            // Its panic, reported by the hook before the stack unwinds.
            Err(Fail::Crashed(_)) => break,
            Err(other) => return Err(other),
            Ok(None) if Instant::now() < until => {}
            // It answered instead (its main.rs is not the given one), or never: no panic.
            Ok(_) => {
                table.proc.kill_tree();
                return Ok(());
            }
        }
    }
    let by = Instant::now() + Duration::from_secs(5);
    let Some(status) = table.proc.wait_until(by)? else {
        table.proc.kill_tree();
        return Ok(());
    };
    if exists(&table.name) {
        return Ok(());
    }
    Err(Fail::failed(format!(
        "{}, made to panic once it had said `mapped` (asked to write from a data file that \
         does not exist, main.rs's expect() panicked and unwound its stack; it ended with \
         {status}), had died, and {} was gone, and nobody had asked for an unlink: something \
         that runs as the stack unwinds removed it (a Drop of the table that calls \
         shm_unlink(), say); only unlink() removes the name: an object stays in /dev/shm until \
         an unlink, however the processes that mapped it end (a panic, a signal, an exit)",
        table.who,
        dev_shm(&table.name).display()
    )))
}
