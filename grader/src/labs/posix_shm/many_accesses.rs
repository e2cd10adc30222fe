//! No access makes a system call, however many come: a flush made "now and then" (every 64th
//! write, say) is a call inside the access that made it. Hardware breakpoints at the C
//! library's flushing functions stay set across a run of writes and reads, at no cost to the
//! accesses that do not call them.

use std::time::{Duration, Instant};

use crate::engine::tracer::{Breakpoint, Tracer};
use crate::engine::{Fail, Run};

use super::driver::{Table, said};

/// How many writes, then how many reads: past any "every so many" a program may pick to flush
/// at (64, 100, 128) up to this.
const WRITES: usize = 130;
const READS: usize = 130;

/// The C library's functions that push a mapping's bytes to its file.
const FLUSHES: [&std::ffi::CStr; 4] = [c"msync", c"fsync", c"fdatasync", c"sync_file_range"];

/// `table` writes 16 bytes at `at` [`WRITES`] times, then reads them [`READS`] times, with a
/// hardware breakpoint at each of [`FLUSHES`]: no access may enter one before it answers.
pub fn no_flush_in_many_accesses(run: &mut Run, table: &mut Table, at: usize) -> Result<(), Fail> {
    let pid = table.pid();
    let Some(mut tracer) = Tracer::break_at_functions(pid, &FLUSHES)? else {
        return Ok(());
    };
    let armed_by = Instant::now() + Duration::from_secs(5);
    loop {
        match tracer.next_break(armed_by)? {
            Some(Breakpoint::Armed) => break,
            None if Instant::now() < armed_by => {}
            _ => return Ok(()),
        }
    }
    let data = run.random_bytes(16);
    let write = table.write_fields(run, at, &data)?;
    let (read, result) = table.read_fields(run, at, data.len());
    let mut outcome = Ok(());
    'accesses: for n in 0..WRITES + READS {
        let (fields, doing, nth) = if n < WRITES {
            (&write, "write", n + 1)
        } else {
            (&read, "read", n + 1 - WRITES)
        };
        table.proc.send("cmd", fields)?;
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            let soon = Instant::now() + Duration::from_millis(2);
            match table.proc.recv_before(soon)? {
                Some(answer) if answer.kind == "done" => continue 'accesses,
                Some(answer) => {
                    outcome = Err(Fail::failed(format!(
                        "{} could not {doing} 16 bytes at offset {at} ({doing} number {nth} in \
                         a row): it said {}",
                        table.who,
                        said(&answer)
                    )));
                    break 'accesses;
                }
                None => {}
            }
            if let Some(Breakpoint::At(_)) = tracer.next_break(Instant::now())? {
                let function = FLUSHES[tracer.last_break()].to_string_lossy();
                outcome = Err(Fail::failed(format!(
                    "{} was to write 16 bytes at offset {at}, {WRITES} times in a row, then \
                     read them {READS} times: {doing} number {nth} called {function}() before it answered \
                     (a hardware breakpoint at the C library's {function}() stopped it there), \
                     a system call inside {doing}() itself, which the accesses before it did \
                     not make: a flush now and then (every so many accesses, say); a \
                     MAP_SHARED mapping is the object's own pages, which every process sees at \
                     once: nothing needs flushing (msync() and fsync() are for files on a \
                     disk); every access copies in place, with no system call at all",
                    table.who
                )));
                break 'accesses;
            }
            if Instant::now() >= until {
                outcome = Err(Fail::TimedOut(format!(
                    "timed out: {} did not answer its {doing} number {nth} of 16 bytes at \
                     offset {at} (after {n} accesses in a row) within 5 s.{}",
                    table.who,
                    table.proc.diagnose()
                )));
                break 'accesses;
            }
        }
    }
    drop(tracer);
    if outcome.is_err() {
        table.proc.kill_tree();
    }
    let _ = std::fs::remove_file(&write[2].1);
    let _ = std::fs::remove_file(result);
    outcome
}
