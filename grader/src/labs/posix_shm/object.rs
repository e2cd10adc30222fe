//! The object itself: its mode and its exact size, which an opener learns from it.

use std::os::unix::fs::PermissionsExt;

use rand::RngExt;

use crate::engine::{Fail, Run};

use super::driver::{CREATOR, close_all, creators, openers, table};
use super::explain::{Writer, expect_read};
use super::probes::{dev_shm, object_bytes, object_size};

const PAGE: usize = 4096;

pub fn owner_only_mode(run: &mut Run) -> Result<String, Fail> {
    let name = run.ipc_name("table");
    let mut creator = table(run, &name, Some(10_000), CREATOR)?;
    let path = dev_shm(&name);
    let mode = std::fs::metadata(&path)
        .map_err(|_| {
            Fail::failed(format!(
                "{} does not exist while the creator says it has the table mapped: create the \
                 object under that very name with shm_open(O_CREAT | O_EXCL | O_RDWR, 0600)",
                path.display()
            ))
        })?
        .permissions()
        .mode()
        & 0o777;
    if mode != 0o600 {
        let mut wrong = Vec::new();
        if mode & 0o044 != 0 {
            wrong.push("users other than its owner can read the table");
        }
        if mode & 0o022 != 0 {
            wrong.push("they can change it");
        }
        if mode & 0o600 != 0o600 {
            wrong.push("its owner cannot both read and write it");
        }
        if mode & 0o111 != 0 {
            wrong.push("it is marked executable");
        }
        return Err(Fail::failed(format!(
            "{} has mode {mode:03o}: {}; create it with mode 0600 (S_IRUSR | S_IWUSR)",
            path.display(),
            wrong.join(", ")
        )));
    }
    run.expect_owner_only()?;
    creator.unlink()?;
    creator.close()?;
    Ok(format!("{} has mode 600", path.display()))
}

pub fn odd_sizes(run: &mut Run) -> Result<String, Fail> {
    // A single byte, and a page and a byte: neither a whole page, and the second grows to
    // several pages below.
    let sizes = [1, 4097];
    let tables: Vec<(String, usize)> = sizes
        .iter()
        .map(|size| (run.ipc_name(&format!("table-{size}")), *size))
        .collect();
    // The tables do not depend on each other: their programs start at once.
    let mut creators = creators(run, &tables)?;
    for (name, size) in &tables {
        let size = *size;
        let on_disk = object_size(name, CREATOR)?;
        if on_disk != size as u64 {
            let how = if on_disk == size.next_multiple_of(PAGE) as u64 {
                "rounded up to whole pages: ftruncate() to the size asked for; only the mapping \
                 is made of whole pages"
            } else {
                "ftruncate(fd, size) with the size asked for"
            };
            return Err(Fail::failed(format!(
                "the {size}-byte table is {on_disk} bytes in /dev/shm: {how}"
            )));
        }
        let fresh = object_bytes(name, 0, size).unwrap_or_default();
        if let Some(at) = fresh.iter().position(|&b| b != 0) {
            return Err(Fail::failed(format!(
                "a new {size}-byte table already holds a nonzero byte at offset {at} (in \
                 /dev/shm) before anyone wrote to it: the new bytes must be zero, as ftruncate() \
                 leaves them; do not fill the table"
            )));
        }
    }
    // The size is the object's, whoever set it: the grader grows the last table after its
    // creator sized it, before its opener opens it.
    let (last, first) = tables[tables.len() - 1].clone();
    let grown = first + run.rng().random_range(64..8000);
    let object = std::fs::OpenOptions::new()
        .write(true)
        .open(dev_shm(&last))?;
    object.set_len(grown as u64)?;
    let tail = run.random_bytes(64);
    std::os::unix::fs::FileExt::write_all_at(&object, &tail, (grown - tail.len()) as u64)?;
    let names: Vec<String> = tables.iter().map(|(name, _)| name.clone()).collect();
    let mut openers = openers(run, &names)?;
    for ((creator, opener), size) in creators.iter_mut().zip(&mut openers).zip(sizes) {
        let now = if creator.name == last { grown } else { size };
        if opener.len != now && now == grown {
            let how = if opener.len == first {
                format!(
                    "the size the creator was asked for: the opener learned it some other way \
                     than from the object; take it from fstat() of the descriptor (st_size), \
                     which says {grown}"
                )
            } else {
                format!(
                    "take the size from fstat() of the descriptor (st_size), which says {grown}"
                )
            };
            return Err(Fail::failed(format!(
                "the grader grew a {first}-byte table to {grown} bytes before the opener opened \
                 it, but the opener says it is {} bytes: {how}",
                opener.len
            )));
        }
        if opener.len != now {
            let how = if opener.len == size.next_multiple_of(PAGE) {
                "rounded up to whole pages; the table is st_size bytes, exactly"
            } else {
                "take the size from fstat() of the object (st_size)"
            };
            return Err(Fail::failed(format!(
                "the opener says the {size}-byte table is {} bytes: {how}",
                opener.len
            )));
        }
        let data = run.random_bytes(size);
        creator.write(run, 0, &data)?;
        let read = opener.read(run, 0, size)?;
        expect_read(
            opener,
            Writer::Program(creator),
            0,
            &read,
            &data,
            &format!("the opener's copy of a {size}-byte table"),
            None,
        )?;
        if now == grown {
            let at = grown - tail.len();
            let read = opener.read(run, at, tail.len())?;
            expect_read(
                opener,
                Writer::Object("the grader"),
                at,
                &read,
                &tail,
                "the last bytes of a table the grader grew, as the opener read them",
                None,
            )?;
        }
    }
    for creator in &mut creators {
        creator.unlink()?;
    }
    close_all(openers.into_iter().chain(creators).collect())?;
    Ok(format!(
        "1 and 4097-byte tables have their exact sizes, start zeroed and carry every byte; the \
         second, grown to {grown} bytes, was opened at that size"
    ))
}
