//! Driving the program: the names (a file and an id) it derives keys from, publishers and readers
//! started and led through their messages, and what a reader read checked against a record.
//!
//! Both programs say `started` before they call the library and wait for `go`, so that the
//! check can set the stage (trace them, cut the payload short). Then `sysv-shm publish ...` says
//! `ready` (with `shmid`) while it holds the segment attached, waits for `go`, detaches, says
//! `done` and waits for `exit`. `sysv-shm read ...` says `attached` while attached and waits for
//! `go`, then reads, detaches, removes (with `--remove`), writes the payload and says `done`
//! (with `sequence` and `length`). Either says `failed` with `kind=` (the error variant) and
//! exits. Two steps use the library twice in one process: `create --then-id` says `created`
//! and waits for `go` between its two creates, `read --first-output` says `read` (with
//! `sequence`) and waits for `go` between its two reads of the same segment.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use ipc_labs_driver::Message;
use rand::RngExt;

use crate::engine::audit::{ShmSegment, shm_segments};
use crate::engine::{Fail, Proc, Run};

use super::HEADER_LEN;
use super::segments::{rmid, segment};
use crate::engine::audit::SHM_DEST;

/// The file and id the programs derive the key from.
pub struct Name {
    pub path: PathBuf,
    pub id: u32,
    pub key: i32,
    /// The key the path had before the check replaced its file by another one.
    pub replaced: Option<i32>,
}

pub fn ftok(path: &Path, id: u32) -> Result<i32, Fail> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Fail::Grader("path with a NUL byte".into()))?;
    // SAFETY: c_path is a valid C string for the duration of the call.
    let key = unsafe { libc::ftok(c_path.as_ptr(), id as libc::c_int) };
    if key == -1 {
        return Err(Fail::Grader(format!(
            "ftok: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(key)
}

/// A fresh file and an id whose key no segment on the machine has yet (ftok keys can collide:
/// they keep only some bits of the inode), declared for the audit.
pub fn fresh_name(run: &mut Run) -> Result<Name, Fail> {
    fresh_name_in(run, "anchor".as_ref())
}

/// A fresh name as [`fresh_name`], in a file called `file_name` (any bytes a file name may hold).
pub fn fresh_name_in(run: &mut Run, file_name: &std::ffi::OsStr) -> Result<Name, Fail> {
    let path = run.path_of_bytes(file_name);
    std::fs::write(&path, b"ftok anchor\n")?;
    for _ in 0..64 {
        let id = run.rng().random_range(1..=255u32);
        if let Some(name) = free_name(run, &path, id)? {
            return Ok(name);
        }
    }
    Err(Fail::Grader("every ftok key tried is taken".into()))
}

/// A fresh name as [`fresh_name`], whose file is a FIFO: `ftok()` only looks the path up
/// (`stat()`), whereas an `open()` of it waits for a writer that never comes.
pub fn fresh_fifo_name(run: &mut Run) -> Result<Name, Fail> {
    let path = run.path("anchor-fifo");
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(|e| Fail::Grader(format!("mkfifo: {e}")))?;
    for _ in 0..64 {
        let id = run.rng().random_range(1..=255u32);
        if let Some(name) = free_name(run, &path, id)? {
            return Ok(name);
        }
    }
    Err(Fail::Grader("every ftok key tried is taken".into()))
}

/// A fresh name with the given id: when its key is taken, another file (another inode) is tried.
pub fn fresh_name_with_id(run: &mut Run, id: u32) -> Result<Name, Fail> {
    for attempt in 0..64 {
        let path = run.path(&format!("anchor-{id}-{attempt}"));
        std::fs::write(&path, b"ftok anchor\n")?;
        if let Some(name) = free_name(run, &path, id)? {
            return Ok(name);
        }
    }
    Err(Fail::Grader(format!(
        "every ftok key tried with id {id} is taken"
    )))
}

/// `path` and `id` as a name, declared for the audit, unless a segment has their key already
/// or another check running alongside holds it.
fn free_name(run: &mut Run, path: &Path, id: u32) -> Result<Option<Name>, Fail> {
    let key = ftok(path, id)?;
    if segment(key).is_some() || !run.ipc_key(key) {
        return Ok(None);
    }
    Ok(Some(Name {
        path: path.to_path_buf(),
        id,
        key,
        replaced: None,
    }))
}

/// Replaces the file at `name.path` by a new one (a new inode: the old file is kept under
/// another name, so that its inode number cannot come back) until the path's key is another
/// free one; the same path and id then name another segment.
pub fn replace_file(run: &mut Run, name: &Name) -> Result<Name, Fail> {
    let kept = format!("anchor-before-replacement-{:x}", name.key);
    std::fs::hard_link(&name.path, run.path(&kept))?;
    for attempt in 0..64 {
        let new = run.path(&format!("anchor-replacement-{:x}-{attempt}", name.key));
        std::fs::write(&new, b"another ftok anchor\n")?;
        std::fs::rename(&new, &name.path)?;
        let key = ftok(&name.path, name.id)?;
        if key != name.key && segment(key).is_none() && run.ipc_key(key) {
            return Ok(Name {
                path: name.path.clone(),
                id: name.id,
                key,
                replaced: Some(name.key),
            });
        }
    }
    Err(Fail::Grader("no replacement file gave a free key".into()))
}

/// The file a publisher of publication `sequence` reads its payload from.
pub fn payload_file(run: &Run, sequence: u32) -> PathBuf {
    run.path(&format!("payload-{sequence}.bin"))
}

/// Starts `sysv-shm publish` with a payload file and waits for its `started`: it has the
/// payload and waits for `go` before it calls the library.
pub fn spawn_publisher(
    run: &mut Run,
    path: &Path,
    id: u32,
    size: u64,
    sequence: u32,
    payload: &[u8],
) -> Result<Proc, Fail> {
    spawn_publisher_with(run, (path, id, size), sequence, payload, &[])
}

/// [`spawn_publisher`] with more of `publish`'s options (`--rewrite`, `--nul-in-path`).
pub fn spawn_publisher_with(
    run: &mut Run,
    (path, id, size): (&Path, u32, u64),
    sequence: u32,
    payload: &[u8],
    options: &[&str],
) -> Result<Proc, Fail> {
    let payload_file = payload_file(run, sequence);
    std::fs::write(&payload_file, payload)?;
    let mut args: Vec<OsString> = vec![
        "publish".into(),
        "--path".into(),
        path.into(),
        "--id".into(),
        id.to_string().into(),
        "--size".into(),
        size.to_string().into(),
        "--sequence".into(),
        sequence.to_string().into(),
        "--payload-file".into(),
        payload_file.into(),
    ];
    args.extend(options.iter().map(OsString::from));
    let mut proc = run.spawn(&args)?;
    proc.set_roles(|_| "the publisher".into());
    expect(&mut proc, "publisher", "started")?;
    Ok(proc)
}

/// Starts a publisher and lets it publish at once.
pub fn start_publisher(
    run: &mut Run,
    name: (&Path, u32, u64),
    sequence: u32,
    payload: &[u8],
) -> Result<Proc, Fail> {
    start_publisher_with(run, name, sequence, payload, &[])
}

/// [`start_publisher`] with more of `publish`'s options.
pub fn start_publisher_with(
    run: &mut Run,
    name: (&Path, u32, u64),
    sequence: u32,
    payload: &[u8],
    options: &[&str],
) -> Result<Proc, Fail> {
    let mut proc = spawn_publisher_with(run, name, sequence, payload, options)?;
    proc.send("go", &[])?;
    Ok(proc)
}

/// Runs the program's `create` step (`Segment::create` alone, no `publish()` around it, then
/// `remove()` and `detach()`) to its last word; `what` names the call in diagnoses. Returns
/// that word and the segment with the key left as it exited, which the grader removes.
pub fn run_create_step(
    run: &mut Run,
    name: &Name,
    size: u64,
    what: &str,
) -> Result<(Message, Option<ShmSegment>), Fail> {
    let mut proc = start_create_step(run, name, size, None, what)?;
    let message = proc.recv_any().map_err(with_context(what))?;
    proc.wait()?;
    let left = segment(name.key);
    if let Some(left) = &left {
        rmid(left.id);
    }
    Ok((message, left))
}

/// Starts the program's `create` step and lets it go on; with `then_id`, once it says `created`
/// and is told `go`, the same process creates (and removes) a segment for that id too.
pub fn start_create_step(
    run: &mut Run,
    name: &Name,
    size: u64,
    then_id: Option<u32>,
    what: &str,
) -> Result<Proc, Fail> {
    let mut args: Vec<OsString> = vec![
        "create".into(),
        "--path".into(),
        name.path.clone().into(),
        "--id".into(),
        name.id.to_string().into(),
        "--size".into(),
        size.to_string().into(),
    ];
    if let Some(id) = then_id {
        args.extend(["--then-id".into(), id.to_string().into()]);
    }
    let mut proc = run.spawn(&args)?;
    proc.set_roles(|_| "the create step".into());
    expect(&mut proc, "create step", "started").map_err(with_context(what))?;
    proc.send("go", &[])?;
    Ok(proc)
}

/// Starts `sysv-shm read --first-output` (with `--remove` if `remove`) and waits for its
/// `started`: told `go`, it reads the record twice from the same attached segment, saying
/// `read` and waiting for `go` in between. Returns it and its output files, of the first read
/// and of the second.
pub fn spawn_reader_reading_twice(
    run: &mut Run,
    name: &Name,
    remove: bool,
    n: u32,
) -> Result<(Proc, PathBuf, PathBuf), Fail> {
    let (mut args, output) = reader_args(run, name, remove, n);
    let first_output = run.path(&format!("read-{n}-first.bin"));
    args.extend(["--first-output".into(), first_output.clone().into()]);
    Ok((spawn_started_reader(run, &args)?, first_output, output))
}

/// Starts `sysv-shm read` and lets it go on; returns it and its output file.
pub fn spawn_reader(
    run: &mut Run,
    name: &Name,
    remove: bool,
    n: u32,
) -> Result<(Proc, PathBuf), Fail> {
    let (mut proc, output) = spawn_held_reader(run, name, remove, n)?;
    proc.send("go", &[])?;
    Ok((proc, output))
}

/// Starts `sysv-shm read` and waits for its `started`: it waits for `go` before it calls the
/// library.
pub fn spawn_held_reader(
    run: &mut Run,
    name: &Name,
    remove: bool,
    n: u32,
) -> Result<(Proc, PathBuf), Fail> {
    let (args, output) = reader_args(run, name, remove, n);
    Ok((spawn_started_reader(run, &args)?, output))
}

/// Starts `sysv-shm` with the reader's `args` and waits for its `started`.
fn spawn_started_reader(run: &mut Run, args: &[OsString]) -> Result<Proc, Fail> {
    let mut proc = run.spawn(args)?;
    proc.set_roles(|_| "the reader".into());
    expect(&mut proc, "reader", "started")?;
    Ok(proc)
}

/// Starts `sysv-shm read` (without `--remove`) as a reader that the modes of segments apply to,
/// as they do to any user but root: run as root, it lacks the capability that lets root read
/// any segment (`CAP_IPC_OWNER`). Lets it go on; returns it and its output file.
pub fn spawn_reader_bound_by_modes(
    run: &mut Run,
    name: &Name,
    n: u32,
) -> Result<(Proc, PathBuf), Fail> {
    let (args, output) = reader_args(run, name, false, n);
    let mut proc = match run.spawn_without_ipc_owner(&args)? {
        Some(proc) => proc,
        None => run.spawn(&args)?,
    };
    proc.set_roles(|_| "the reader".into());
    expect(&mut proc, "reader", "started")?;
    proc.send("go", &[])?;
    Ok((proc, output))
}

/// The arguments of `sysv-shm read`, and its output file.
fn reader_args(run: &mut Run, name: &Name, remove: bool, n: u32) -> (Vec<OsString>, PathBuf) {
    let output = run.path(&format!("read-{n}.bin"));
    let mut args: Vec<OsString> = vec![
        "read".into(),
        "--path".into(),
        name.path.clone().into(),
        "--id".into(),
        name.id.to_string().into(),
        "--output".into(),
        output.clone().into(),
    ];
    if remove {
        args.push("--remove".into());
    }
    (args, output)
}

/// The next message must be `expected`; a `failed` is reported with its kind and error.
pub fn expect(proc: &mut Proc, who: &str, expected: &str) -> Result<Message, Fail> {
    as_expected(proc.recv_any()?, who, expected)
}

/// `message` must be `expected`; a `failed` is reported with its kind and error.
pub fn as_expected(message: Message, who: &str, expected: &str) -> Result<Message, Fail> {
    if message.kind == "failed" {
        return Err(Fail::failed(format!(
            "the {who} failed (kind={}): {}",
            message.get("kind").unwrap_or("?"),
            message.get("error").unwrap_or("?")
        )));
    }
    if message.kind != expected {
        return Err(Fail::failed(format!(
            "the {who} said `{}` where the grader expected `{expected}`",
            message.kind
        )));
    }
    Ok(message)
}

/// A publisher's `failed kind=shmget` while a segment its own process created is there: its
/// `shmget()` succeeded, and the program took the id it returned for a failure.
pub fn failed_after_creating(message: &Message, pid: i32) -> Option<Fail> {
    if message.kind != "failed" || message.get("kind") != Some("shmget") {
        return None;
    }
    let made = shm_segments().into_iter().find(|s| s.creator == pid)?;
    let zero = if made.id == 0 {
        " (id 0, the first id an IPC namespace hands out, is a valid one)"
    } else {
        ""
    };
    Some(Fail::failed(format!(
        "the publisher failed (kind=shmget: {}), yet segment {} (key {:#x}), made by the \
         publisher's own process, is there: its shmget() succeeded and returned {}{zero}; \
         shmget() fails only with -1, every other value is the segment's id",
        message.get("error").unwrap_or("?"),
        made.id,
        made.key,
        made.id
    )))
}

/// Puts the circumstances (`on ...`, `with ...`) before the message of a failure or a crash.
pub fn with_context(context: &str) -> impl Fn(Fail) -> Fail + '_ {
    move |fail| match fail {
        Fail::Failed(m) => Fail::Failed(format!("{context}: {m}")),
        Fail::Crashed(m) => Fail::Crashed(format!("{context}: {m}")),
        other => other,
    }
}

/// Waits for the program's exit and requires status 0.
pub fn exits_cleanly(proc: &mut Proc, who: &str) -> Result<(), Fail> {
    let status = proc.wait()?;
    if status.success() {
        Ok(())
    } else {
        Err(Fail::failed(format!("the {who} exited with {status}")))
    }
}

/// A publisher that said `ready`: it holds its segment attached and waits for `go`.
pub struct Published {
    /// Whether the check removes the segment itself when it is done with it: its protocol
    /// never asks the program to.
    pub discard: bool,
    pub proc: Proc,
    pub name: Name,
    pub size: u64,
    pub sequence: u32,
    pub payload: Vec<u8>,
}

/// Starts a publisher of a random record and waits until it holds the segment.
pub fn publish(run: &mut Run, discard: bool) -> Result<Published, Fail> {
    let name = fresh_name(run)?;
    // Not a multiple of the page size: the kernel must report exactly what was asked for.
    let size = run.rng().random_range(5000..20000u64);
    publish_record(run, discard, name, size, size as usize - HEADER_LEN - 100)
}

/// Starts a publisher of a random record of `len` bytes in a segment of `size` bytes, and waits
/// until it holds the segment.
pub fn publish_record(
    run: &mut Run,
    discard: bool,
    name: Name,
    size: u64,
    len: usize,
) -> Result<Published, Fail> {
    let sequence = run.rng().random_range(2..1_000_000u32);
    let payload = run.random_bytes(len);
    let proc = start_publisher(run, (&name.path, name.id, size), sequence, &payload)?;
    Published {
        discard,
        proc,
        name,
        size,
        sequence,
        payload,
    }
    .once_ready(run, None)
}

impl Published {
    /// Once the publisher says `ready` (`first`, when the check has read that message already),
    /// removes its payload file: from then no reader may find the payload anywhere but in the
    /// segment.
    pub fn once_ready(mut self, run: &Run, first: Option<Message>) -> Result<Published, Fail> {
        let message = match first {
            Some(message) => message,
            None => self.proc.recv_any()?,
        };
        if let Some(fail) = failed_after_creating(&message, self.proc.pid.as_raw()) {
            return Err(fail);
        }
        as_expected(message, "publisher", "ready")?;
        std::fs::remove_file(payload_file(run, self.sequence))?;
        Ok(self)
    }

    /// The publisher's segment, found by its key; a diagnosis if there is none.
    pub fn segment(&self) -> Result<ShmSegment, Fail> {
        if let Some(found) = segment(self.name.key) {
            return Ok(found);
        }
        let pid = self.proc.pid.as_raw();
        let own = shm_segments().into_iter().find(|s| s.creator == pid);
        let name = &self.name;
        Err(Fail::failed(match own {
            Some(s) if s.mode & SHM_DEST != 0 => format!(
                "the publisher's segment (id {}) is already marked for removal: IPC_RMID makes \
                 its key private, so no reader can find it; remove it only when done",
                s.id
            ),
            Some(s) if Some(s.key) == name.replaced => format!(
                "the publisher's segment (id {}) has key {:#x}, the key of the file that was at \
                 the path before the grader replaced it by a new file; ftok(path, {}) is now \
                 {:#x}: call ftok() every time, the key comes from the file's inode, not from \
                 the path's name (never keep a key from an earlier run)",
                s.id, s.key, name.id, name.key
            ),
            Some(s) => format!(
                "the publisher's segment (id {}) has key {:#x}, not ftok(path, {}) = {:#x}: \
                 derive the key with ftok() from the given path and id (IPC_PRIVATE is 0)",
                s.id, s.key, name.id, name.key
            ),
            None => format!(
                "no segment has key ftok(path, {}) = {:#x} while the publisher says it holds \
                 one, and the publisher created none: create it with shmget(key, size, \
                 IPC_CREAT | IPC_EXCL | 0600)",
                name.id, name.key
            ),
        }))
    }

    /// Lets the publisher detach; it then waits for `exit`.
    pub fn detach(&mut self) -> Result<(), Fail> {
        self.proc.send("go", &[])?;
        expect(&mut self.proc, "publisher", "done").map(drop)
    }

    /// Lets the detached publisher exit.
    pub fn exit(&mut self) -> Result<(), Fail> {
        self.proc.send("exit", &[])?;
        exits_cleanly(&mut self.proc, "publisher")
    }

    /// Lets the publisher detach and exit.
    pub fn finish(&mut self) -> Result<(), Fail> {
        self.detach()?;
        self.exit()
    }

    /// Runs a reader to its end and checks what it read.
    pub fn read_back(&self, run: &mut Run, remove: bool, n: u32) -> Result<(), Fail> {
        let (done, output) = read_to_end(run, &self.name, remove, n)?;
        self.verify(&done, &output)
    }

    /// The reader's report and output against what was published.
    pub fn verify(&self, done: &Message, output: &Path) -> Result<(), Fail> {
        verify_read(done, output, self.sequence, &self.payload, "published")
    }
}

impl Drop for Published {
    fn drop(&mut self) {
        if self.discard
            && let Some(s) = segment(self.name.key)
        {
            rmid(s.id);
        }
    }
}

/// Runs a reader to its end: its `done` message and its output file.
pub fn read_to_end(
    run: &mut Run,
    name: &Name,
    remove: bool,
    n: u32,
) -> Result<(Message, PathBuf), Fail> {
    let (mut reader, output) = spawn_reader(run, name, remove, n)?;
    expect(&mut reader, "reader", "attached")?;
    reader.send("go", &[])?;
    let done = expect(&mut reader, "reader", "done")?;
    exits_cleanly(&mut reader, "reader")?;
    Ok((done, output))
}

/// The reader's report and output against the record (`sequence`, `payload`) that was `how`
/// (published, planted).
pub fn verify_read(
    done: &Message,
    output: &Path,
    sequence: u32,
    payload: &[u8],
    how: &str,
) -> Result<(), Fail> {
    let read_sequence = done.get("sequence").unwrap_or("?");
    if read_sequence != sequence.to_string() {
        return Err(Fail::failed(format!(
            "the reader read sequence {read_sequence}, the {how} record has {sequence}: read \
             the sequence from offset 4 of the segment"
        )));
    }
    let read = std::fs::read(output)?;
    if read != payload {
        return Err(Fail::failed(format!(
            "the reader's payload is not the {how} one: {} bytes for {}, first difference at \
             byte {}; copy the payload out of the segment, `length` bytes after the header",
            read.len(),
            payload.len(),
            first_difference(&read, payload)
        )));
    }
    Ok(())
}

/// Where `a` and `b` first differ (the shorter one's length if one is a prefix of the other).
pub fn first_difference(a: &[u8], b: &[u8]) -> usize {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()))
}
