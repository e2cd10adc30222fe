//! Checks of lab 5, POSIX shared memory: a table in `/dev/shm` that one run of the program
//! creates and other, independent runs open; all map it and read and write it in place.
//!
//! `posix-shm open --name N [--create --size S]` says `mapped` (with `len`) once the table is
//! mapped, then does what each `cmd` message says (`op=write|read|unlink|close`) and answers
//! `done`, or `failed` with `kind=` (the error variant); after `close` it waits for `exit`. What
//! the object is (mode, size, bytes) the grader reads from `/dev/shm`, and who maps it from
//! `/proc/PID/maps`.

use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::PathBuf;
use std::time::Duration;

use rand::RngExt;

use crate::engine::diagnose::Hang;
use crate::engine::{Check, Fail, Lab, Proc, Run};

pub static LAB: Lab = Lab {
    number: 5,
    slug: "posix-shm",
    title: "POSIX shared memory: a table in /dev/shm mapped by independent processes",
    cleanup_points: 2,
    explain_hang,
    checks: &[
        Check {
            name: "owner-only-mode",
            points: 2,
            timeout: Duration::from_secs(10),
            description: "/dev/shm/<name> exists with mode 0600 while the table is in use",
            exclusive: false,
            run: owner_only_mode,
        },
        Check {
            name: "odd-sizes",
            points: 3,
            timeout: Duration::from_secs(10),
            description: "tables of 1, 4097 and 10000 bytes have exactly that size in /dev/shm \
                          and every byte goes from one process to another",
            exclusive: false,
            run: odd_sizes,
        },
        Check {
            name: "mapped-by-each",
            points: 3,
            timeout: Duration::from_secs(10),
            description: "the creator and an independent opener both map /dev/shm/<name> \
                          shared, and unmap it on close (read from /proc/PID/maps)",
            exclusive: false,
            run: mapped_by_each,
        },
        Check {
            name: "shared-updates",
            points: 3,
            timeout: Duration::from_secs(10),
            description: "what one process writes in place, the other reads, both ways",
            exclusive: false,
            run: shared_updates,
        },
        Check {
            name: "bytes-in-the-object",
            points: 3,
            timeout: Duration::from_secs(10),
            description: "the bytes are in the object itself: the grader sees the creator's \
                          writes in /dev/shm/<name>, and the opener reads the grader's",
            exclusive: false,
            run: bytes_in_the_object,
        },
        Check {
            name: "unlinked-but-mapped",
            points: 4,
            timeout: Duration::from_secs(10),
            description: "after shm_unlink the name is gone and cannot be opened, but the two \
                          processes that map it still share the memory",
            exclusive: false,
            run: unlinked_but_mapped,
        },
        Check {
            name: "invalid-names",
            points: 3,
            timeout: Duration::from_secs(10),
            description: "a name without a leading slash, with another slash, empty or longer \
                          than 255 bytes is refused with kind=bad-name",
            exclusive: false,
            run: invalid_names,
        },
        Check {
            name: "typed-errors",
            points: 3,
            timeout: Duration::from_secs(10),
            description: "size 0, an existing name, and accesses past the end are typed errors \
                          (zero-size, exists, out-of-range)",
            exclusive: false,
            run: typed_errors,
        },
    ],
};

/// Where the object named `name` (`/...`) lives.
fn dev_shm(name: &str) -> PathBuf {
    PathBuf::from("/dev/shm").join(name.trim_start_matches('/'))
}

/// One running `posix-shm open`, with the table mapped.
struct Table {
    proc: Proc,
    name: String,
    who: &'static str,
    /// Size the program reported at `mapped`.
    len: usize,
}

/// Starts `posix-shm open` and returns its first answer, whatever it is.
fn spawn_open(
    run: &mut Run,
    name: &str,
    create: Option<usize>,
    who: &'static str,
) -> Result<(Proc, ipc_labs_driver::Message), Fail> {
    let mut args = vec!["open".to_string(), "--name".into(), name.into()];
    if let Some(size) = create {
        args.extend(["--create".into(), "--size".into(), size.to_string()]);
    }
    let mut proc = run.spawn(&args)?;
    proc.set_roles(move |_| who.into());
    let first = proc.recv_any()?;
    Ok((proc, first))
}

/// A table the program created (`create` with a size) or opened, mapped.
fn table(
    run: &mut Run,
    name: &str,
    create: Option<usize>,
    who: &'static str,
) -> Result<Table, Fail> {
    let (proc, first) = spawn_open(run, name, create, who)?;
    if first.kind != "mapped" {
        return Err(Fail::failed(format!(
            "{who} said `{}` (kind={}: {}) where it should have mapped {name}",
            first.kind,
            first.get("kind").unwrap_or("none"),
            first.get("error").unwrap_or("")
        )));
    }
    let len = first.get("len").and_then(|l| l.parse().ok()).unwrap_or(0);
    Ok(Table {
        proc,
        name: name.to_string(),
        who,
        len,
    })
}

impl Table {
    /// Sends a command and returns the answer (`done` or `failed`).
    fn command(&mut self, fields: &[(&str, String)]) -> Result<ipc_labs_driver::Message, Fail> {
        self.proc.send("cmd", fields)?;
        self.proc.recv_any()
    }

    /// A command that must succeed.
    fn must(&mut self, what: &str, fields: &[(&str, String)]) -> Result<(), Fail> {
        let answer = self.command(fields)?;
        if answer.kind == "done" {
            return Ok(());
        }
        Err(Fail::failed(format!(
            "{} could not {what}: said `{}` (kind={}: {})",
            self.who,
            answer.kind,
            answer.get("kind").unwrap_or("none"),
            answer.get("error").unwrap_or("")
        )))
    }

    fn write(&mut self, run: &mut Run, offset: usize, data: &[u8]) -> Result<(), Fail> {
        let file = run.path(&format!("write-{}-{offset}.bin", self.proc.pid));
        std::fs::write(&file, data)?;
        let what = format!("write {} bytes at offset {offset}", data.len());
        let written = self.must(
            &what,
            &[
                ("op", "write".into()),
                ("offset", offset.to_string()),
                ("file", file.display().to_string()),
            ],
        );
        // Read by now: no other process may find the data anywhere but in the table.
        std::fs::remove_file(&file)?;
        written
    }

    fn read(&mut self, run: &mut Run, offset: usize, len: usize) -> Result<Vec<u8>, Fail> {
        let file = run.path(&format!("read-{}-{offset}.bin", self.proc.pid));
        let what = format!("read {len} bytes at offset {offset}");
        self.must(
            &what,
            &[
                ("op", "read".into()),
                ("offset", offset.to_string()),
                ("len", len.to_string()),
                ("file", file.display().to_string()),
            ],
        )?;
        Ok(std::fs::read(&file)?)
    }

    fn unlink(&mut self) -> Result<(), Fail> {
        self.must("unlink the name", &[("op", "unlink".into())])
    }

    /// Unmaps; the program then waits for `exit`.
    fn unmap(&mut self) -> Result<(), Fail> {
        self.must("unmap the table", &[("op", "close".into())])
    }

    /// Lets the program, which has unmapped the table, exit, and wants a clean exit.
    fn exit(mut self) -> Result<(), Fail> {
        self.proc.send("exit", &[])?;
        let status = self.proc.wait()?;
        if status.success() {
            Ok(())
        } else {
            Err(Fail::failed(format!("{} exited with {status}", self.who)))
        }
    }

    /// Unmaps, and waits for a clean exit.
    fn close(mut self) -> Result<(), Fail> {
        self.unmap()?;
        self.exit()
    }

    /// The permissions column of the mapping of `/dev/shm/<name>` in `/proc/PID/maps`, if any
    /// (an unlinked object's mapping is followed by ` (deleted)`).
    fn mapped_as(&self) -> Result<Option<String>, Fail> {
        let pid = self.proc.pid;
        let path = dev_shm(&self.name).display().to_string();
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
        Ok(maps
            .lines()
            .find(|line| {
                line.split_whitespace()
                    .nth(5)
                    .is_some_and(|mapped| mapped == path)
            })
            .and_then(|line| line.split_whitespace().nth(1).map(str::to_string)))
    }

    /// The permissions column of the mapping, which must be there.
    fn mapping(&self) -> Result<String, Fail> {
        self.mapped_as()?.ok_or_else(|| {
            let pid = self.proc.pid;
            Fail::failed(format!(
                "{} (pid {pid}) says it has the table mapped, but /proc/{pid}/maps has no \
                 mapping of {}: map the object with mmap(MAP_SHARED) and keep it mapped",
                self.who,
                dev_shm(&self.name).display()
            ))
        })
    }
}

/// `/dev/shm/<name>` must be there; its metadata.
fn stat(name: &str) -> Result<std::fs::Metadata, Fail> {
    std::fs::metadata(dev_shm(name)).map_err(|_| {
        Fail::failed(format!(
            "{} does not exist while the creator says it has the table mapped: create the \
             object with shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600)",
            dev_shm(name).display()
        ))
    })
}

/// A creator and an opener of a fresh table of `size` bytes, named after `what`. Before anyone
/// opens it the object must have been sized (its exact size is `odd-sizes`'s business).
fn pair(run: &mut Run, what: &str, size: usize) -> Result<(Table, Table), Fail> {
    let name = run.ipc_name(what);
    let creator = table(run, &name, Some(size), "the creator")?;
    if stat(&name)?.len() == 0 {
        return Err(Fail::failed(format!(
            "the {size}-byte table is 0 bytes in /dev/shm: a new object is empty until \
             ftruncate(fd, size); touching its mapping then raises SIGBUS"
        )));
    }
    let opener = table(run, &name, None, "the opener")?;
    Ok((creator, opener))
}

/// Whether `got` is `want`, with the first difference named.
fn same(got: &[u8], want: &[u8], what: &str) -> Result<(), Fail> {
    match difference(got, want) {
        None => Ok(()),
        Some(differs) => Err(Fail::failed(format!(
            "{what}: {differs}; both processes must map the object with MAP_SHARED and access \
             the mapping itself"
        ))),
    }
}

/// How `got` differs from `want`, if it does.
fn difference(got: &[u8], want: &[u8]) -> Option<String> {
    if got == want {
        return None;
    }
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let differ = got.iter().zip(want).filter(|(a, b)| a != b).count();
    let missing = got.len().abs_diff(want.len());
    Some(format!(
        "{} byte(s) differ from what was written, first at byte {first}",
        differ + missing
    ))
}

fn owner_only_mode(run: &mut Run) -> Result<String, Fail> {
    let name = run.ipc_name("table");
    let mut creator = table(run, &name, Some(10_000), "the creator")?;
    let mode = stat(&name)?.permissions().mode() & 0o777;
    if mode != 0o600 {
        return Err(Fail::failed(format!(
            "{} has mode {mode:03o}: create it with mode 0600, or other users may read{} the \
             table",
            dev_shm(&name).display(),
            if mode & 0o022 != 0 { " and change" } else { "" }
        )));
    }
    creator.unlink()?;
    creator.close()?;
    Ok(format!("{} has mode 600", dev_shm(&name).display()))
}

fn odd_sizes(run: &mut Run) -> Result<String, Fail> {
    for size in [1, 4097, 10_000] {
        let (mut creator, mut opener) = pair(run, &format!("table-{size}"), size)?;
        let on_disk = stat(&creator.name)?.len();
        if on_disk != size as u64 {
            return Err(Fail::failed(format!(
                "the {size}-byte table is {on_disk} bytes in /dev/shm: ftruncate() to the size \
                 asked for, not rounded to pages"
            )));
        }
        if opener.len != size {
            return Err(Fail::failed(format!(
                "the opener says the {size}-byte table is {} bytes: take the size from fstat()",
                opener.len
            )));
        }
        let data = run.random_bytes(size);
        creator.write(run, 0, &data)?;
        let read = opener.read(run, 0, size)?;
        same(
            &read,
            &data,
            &format!("the opener's copy of a {size}-byte table"),
        )?;
        creator.unlink()?;
        opener.close()?;
        creator.close()?;
    }
    Ok("1, 4097 and 10000-byte tables have their exact sizes and carry every byte".into())
}

fn mapped_by_each(run: &mut Run) -> Result<String, Fail> {
    let (mut creator, opener) = pair(run, "table", 10_000)?;
    for table in [&creator, &opener] {
        let perms = table.mapping()?;
        if !perms.ends_with('s') {
            return Err(Fail::failed(format!(
                "{} maps the table privately ({perms}): its writes stay its own; map it with \
                 MAP_SHARED",
                table.who
            )));
        }
        if !perms.starts_with("rw") {
            return Err(Fail::failed(format!(
                "{} maps the table {perms}: map it for reading and writing",
                table.who
            )));
        }
    }
    creator.unlink()?;
    for mut table in [opener, creator] {
        table.unmap()?;
        // It still runs: only its munmap() can have removed the mapping.
        if let Some(perms) = table.mapped_as()? {
            return Err(Fail::failed(format!(
                "{} said `done` to close, yet /proc/{}/maps still shows the table mapped \
                 ({perms}) while it runs: close() must munmap() it",
                table.who, table.proc.pid
            )));
        }
        table.exit()?;
    }
    Ok("both processes map the object shared, read-write, and unmap it on close".into())
}

fn bytes_in_the_object(run: &mut Run) -> Result<String, Fail> {
    let size = 10_000;
    let (mut creator, mut opener) = pair(run, "table", size)?;
    let path = dev_shm(&creator.name);
    // read() and write() on the object reach the very pages the programs map, and, unlike a
    // mapping, cannot fault if a program shrinks the object.
    let object = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)?;
    let held = object.metadata()?.len();
    if held != size as u64 {
        return Err(Fail::failed(format!(
            "the {size}-byte table is {held} bytes in /dev/shm: ftruncate() it to its size"
        )));
    }
    let data = run.random_bytes(1000);
    let at = run.rng().random_range(0..4000);
    creator.write(run, at, &data)?;
    let mut seen = vec![0u8; data.len()];
    object.read_exact_at(&mut seen, at as u64).map_err(|e| {
        Fail::failed(format!(
            "the grader cannot read {} at offset {at}: {e}; leave the object its size",
            path.display()
        ))
    })?;
    if let Some(differs) = difference(&seen, &data) {
        return Err(Fail::failed(format!(
            "the creator said it wrote {} bytes at offset {at}, but {} holds other bytes there \
             ({differs}): write into the mapping of the object itself, not into a copy or a \
             file of your own",
            data.len(),
            path.display()
        )));
    }
    let mine = run.random_bytes(1000);
    let back = run.rng().random_range(5000..9000);
    object.write_all_at(&mine, back as u64)?;
    let read = opener.read(run, back, mine.len())?;
    if let Some(differs) = difference(&read, &mine) {
        return Err(Fail::failed(format!(
            "the grader wrote {} bytes at offset {back} of {}, but the opener read other bytes \
             ({differs}): read from the mapping of the object itself, not from a copy or a file \
             of your own",
            mine.len(),
            path.display()
        )));
    }
    creator.unlink()?;
    opener.close()?;
    creator.close()?;
    Ok(format!(
        "the grader saw the creator's write in {} and the opener read the grader's",
        path.display()
    ))
}

fn shared_updates(run: &mut Run) -> Result<String, Fail> {
    let (mut creator, mut opener) = pair(run, "table", 10_000)?;
    let first = run.random_bytes(1000);
    let at = run.rng().random_range(0..4000);
    creator.write(run, at, &first)?;
    same(
        &opener.read(run, at, 1000)?,
        &first,
        "what the creator wrote, as the opener read it",
    )?;
    let second = run.random_bytes(1000);
    let back = run.rng().random_range(5000..9000);
    opener.write(run, back, &second)?;
    same(
        &creator.read(run, back, 1000)?,
        &second,
        "what the opener wrote, as the creator read it",
    )?;
    creator.unlink()?;
    opener.close()?;
    creator.close()?;
    Ok("writes went both ways in place".into())
}

fn unlinked_but_mapped(run: &mut Run) -> Result<String, Fail> {
    let (mut creator, mut opener) = pair(run, "table", 10_000)?;
    creator.unlink()?;
    if dev_shm(&creator.name).exists() {
        return Err(Fail::failed(format!(
            "{} still exists after the creator's unlink: remove the name with shm_unlink()",
            dev_shm(&creator.name).display()
        )));
    }
    let name = creator.name.clone();
    let (_late, answer) = spawn_open(run, &name, None, "a late opener")?;
    match (answer.kind.as_str(), answer.get("kind")) {
        ("failed", Some("not-found")) => {}
        (said, kind) => {
            return Err(Fail::failed(format!(
                "opening {name} after it was unlinked, the program said `{said}` (kind={}), \
                 not `failed` with kind=not-found: map ENOENT to TableError::NotFound",
                kind.unwrap_or("none")
            )));
        }
    }
    let data = run.random_bytes(2000);
    let at = run.rng().random_range(0..8000);
    opener.write(run, at, &data)?;
    same(
        &creator.read(run, at, 2000)?,
        &data,
        "after unlink, what the opener wrote, as the creator read it (the memory lives on while \
         mapped)",
    )?;
    let reply = run.random_bytes(2000);
    creator.write(run, at, &reply)?;
    same(
        &opener.read(run, at, 2000)?,
        &reply,
        "after unlink, the creator's write as the opener read it",
    )?;
    opener.close()?;
    creator.close()?;
    Ok("the name went, the shared memory stayed while mapped".into())
}

fn invalid_names(run: &mut Run) -> Result<String, Fail> {
    // Built from handed-out names, so that whatever a lax program creates is audited.
    let plain = run.ipc_name("noslash");
    let nested = run.ipc_name("dir");
    let long = run.ipc_name("long");
    let cases = [
        (
            plain.trim_start_matches('/').to_string(),
            "no leading slash",
        ),
        (format!("{nested}/table"), "a second slash"),
        ("/".to_string(), "nothing after the slash"),
        (format!("{long}{}", "x".repeat(300)), "more than 255 bytes"),
    ];
    for (name, what) in &cases {
        let (mut proc, answer) = spawn_open(run, name, Some(64), "the creator")?;
        match (answer.kind.as_str(), answer.get("kind")) {
            ("failed", Some("bad-name")) => {
                proc.wait()?;
            }
            ("mapped", _) => {
                return Err(Fail::failed(format!(
                    "a name with {what} ({name:.40}) was accepted: check the name before \
                     shm_open() (glibc quietly drops a missing leading slash)"
                )));
            }
            (said, kind) => {
                return Err(Fail::failed(format!(
                    "for a name with {what} the program said `{said}` (kind={}: {}), not \
                     `failed` with kind=bad-name: check the name before calling shm_open()",
                    kind.unwrap_or("none"),
                    answer.get("error").unwrap_or("")
                )));
            }
        }
    }
    // The longest name the lab allows (255 bytes, the slash included) must still work.
    let edge = run.ipc_name("edge");
    let longest = format!("{edge}{}", "x".repeat(255 - edge.len()));
    let mut table = table(run, &longest, Some(64), "the creator")?;
    table.unlink()?;
    table.close()?;
    Ok("names without a leading slash, with a second slash, empty or too long were refused; a \
        255-byte name worked"
        .into())
}

/// The answer to a command or start that must be `failed` with `kind`.
fn refused(
    answer: &ipc_labs_driver::Message,
    kind: &str,
    what: &str,
    hint: &str,
) -> Result<(), Fail> {
    match (answer.kind.as_str(), answer.get("kind")) {
        ("failed", Some(k)) if k == kind => Ok(()),
        (said, got) => Err(Fail::failed(format!(
            "{what}: the program said `{said}` (kind={}), not `failed` with kind={kind}: {hint}",
            got.unwrap_or("none")
        ))),
    }
}

fn typed_errors(run: &mut Run) -> Result<String, Fail> {
    let empty = run.ipc_name("empty");
    let (mut proc, answer) = spawn_open(run, &empty, Some(0), "the creator")?;
    refused(
        &answer,
        "zero-size",
        "creating a 0-byte table",
        "reject size 0 before shm_open()",
    )?;
    proc.wait()?;

    let name = run.ipc_name("table");
    let mut creator = table(run, &name, Some(4097), "the creator")?;
    let (_second, answer) = spawn_open(run, &name, Some(4097), "a second creator")?;
    refused(
        &answer,
        "exists",
        "creating a table whose name exists",
        "use O_CREAT | O_EXCL and map EEXIST to TableError::Exists",
    )?;
    let edge = run.path("edge.bin");
    std::fs::write(&edge, [1u8, 2])?;
    let answer = creator.command(&[
        ("op", "write".into()),
        ("offset", "4096".into()),
        ("file", edge.display().to_string()),
    ])?;
    refused(
        &answer,
        "out-of-range",
        "writing 2 bytes at offset 4096 of a 4097-byte table",
        "the mapping is a whole page, but only the table's bytes are yours",
    )?;
    let answer = creator.command(&[
        ("op", "read".into()),
        ("offset", (usize::MAX - 1).to_string()),
        ("len", "4".into()),
        ("file", run.path("never.bin").display().to_string()),
    ])?;
    refused(
        &answer,
        "out-of-range",
        "reading 4 bytes at offset usize::MAX - 1",
        "offset + len overflows: use checked_add",
    )?;
    creator.unlink()?;
    creator.close()?;
    Ok("size 0, an existing name and accesses past the end were typed errors".into())
}

fn explain_hang(_: &Hang) -> Option<String> {
    None
}
