//! A bank whose program was killed right after `create()`: nobody maps it or holds it open any
//! more, and it is exactly one bank, owned by the programs' user. It is no leftover that
//! another `create()` may reclaim either: kind=exists, and the segment stays as it was.

use std::io::Read;
use std::os::unix::fs::MetadataExt;

use super::errors::{first_message, release};
use super::messages::failure;
use super::segment::{dev_shm, told_transfer};
use crate::engine::{Fail, Run};

pub(super) fn abandoned_bank_left_alone(run: &mut Run) -> Result<(), Fail> {
    told_transfer(run, 1, (0, 1, 1), |run, proc, name| {
        let message = first_message(proc)?;
        if message.kind != "created" {
            return Err(failure(&message));
        }
        proc.kill_tree();
        // Reaped: its mapping and descriptor are gone with it.
        let _ = proc.wait();
        let path = dev_shm(name);
        let (inode, before) = contents(&path)?.ok_or_else(|| {
            Fail::failed(format!(
                "{} was gone once the program that created it was killed: only destroy() \
                 removes the name",
                path.display()
            ))
        })?;
        let mut second = run.spawn(&["--name", name, "--work", "1"])?;
        let said = first_message(&mut second)?;
        let refused = said.kind == "failed" && said.get("kind") == Some("exists");
        if refused {
            release(&mut second)?;
        } else {
            second.kill_tree();
        }
        let left = match contents(&path)? {
            None => ", and the killed program's bank was removed".to_string(),
            Some((now, _)) if now != inode => format!(
                ", and {} now names another segment (the killed program's bank was unlinked)",
                path.display()
            ),
            Some((_, after)) if after != before => {
                ", and the killed program's bank was changed".to_string()
            }
            Some(_) => String::new(),
        };
        if refused && left.is_empty() {
            return Ok(());
        }
        let outcome = super::taken_names::create_outcome(&said);
        Err(Fail::failed(format!(
            "a program was killed right after its create(), leaving its bank at {} (exactly \
             one bank, owned by the programs' user, no process mapping it or holding it open); \
             a second SharedBank::create({name:?}) {outcome}{left}: that nobody maps a segment \
             now (/proc/*/maps), its size, owner or bytes do not make it a leftover to \
             reclaim (its creator may map it again, or look at what the crash left); \
             shm_open(O_CREAT | O_EXCL)'s EEXIST is BankError::Exists, and the segment at the \
             name is left as it is",
            path.display()
        )))
    })
}

/// The segment's inode and bytes, read without mapping it; `None` if the name is gone.
fn contents(path: &std::path::Path) -> Result<Option<(u64, Vec<u8>)>, Fail> {
    let Ok(mut file) = std::fs::File::open(path) else {
        return Ok(None);
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(Some((file.metadata()?.ino(), bytes)))
}
