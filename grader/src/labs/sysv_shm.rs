//! Checks of lab 4, SysV shared memory: a publisher leaves a record in a segment named by
//! `ftok(path, id)`; a reader, started as a separate run of the program, finds it, validates it,
//! copies it out and removes it when asked.
//!
//! `sysv-shm publish ...` says `ready` (with `shmid`) while it holds the segment attached and
//! waits for `go`, then detaches, says `done` and exits. `sysv-shm read ...` says `attached`
//! while attached and waits for `go`, then reads, detaches, removes (with `--remove`), writes
//! the payload and says `done` (with `sequence` and `length`). Either says `failed` with `kind=`
//! (the error variant) and exits. What the segment is (key, size, mode, attachments) the grader
//! reads from `/proc/sysvipc/shm`, never from the program.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::RngExt;

use crate::engine::audit::{ShmSegment, shm_segments};
use crate::engine::diagnose::Hang;
use crate::engine::{Check, Fail, Lab, Proc, Run};

pub static LAB: Lab = Lab {
    number: 4,
    slug: "sysv-shm",
    title: "SysV shared memory: a record left in a segment found by ftok()",
    cleanup_points: 2,
    explain_hang,
    checks: &[
        Check {
            name: "segment-key-and-size",
            points: 3,
            timeout: Duration::from_secs(10),
            description: "the publisher's segment has key ftok(path, id) and the requested size \
                          (read from /proc/sysvipc/shm)",
            exclusive: false,
            run: segment_key_and_size,
        },
        Check {
            name: "owner-only-permissions",
            points: 2,
            timeout: Duration::from_secs(10),
            description: "the segment is created with mode 0600",
            exclusive: false,
            run: owner_only_permissions,
        },
        Check {
            name: "attached-together",
            points: 2,
            timeout: Duration::from_secs(10),
            description: "publisher and reader are attached at the same time (nattch 2), and \
                          the reader reads the record",
            exclusive: false,
            run: attached_together,
        },
        Check {
            name: "outlives-publisher",
            points: 3,
            timeout: Duration::from_secs(10),
            description: "after the publisher exited, two readers in turn find the record, byte \
                          for byte",
            exclusive: false,
            run: outlives_publisher,
        },
        Check {
            name: "removal",
            points: 2,
            timeout: Duration::from_secs(10),
            description: "after `read --remove` the segment is gone",
            exclusive: false,
            run: removal,
        },
        Check {
            name: "stale-segment-refused",
            points: 3,
            timeout: Duration::from_secs(10),
            description: "a segment with the same key left by a crashed run is reported \
                          (kind=exists) and left untouched, never written over",
            exclusive: false,
            run: stale_segment_refused,
        },
        Check {
            name: "reader-validates",
            points: 3,
            timeout: Duration::from_secs(10),
            description: "the reader rejects random bytes (bad-magic), a length past the end \
                          (bad-length) and a missing segment (not-found)",
            exclusive: false,
            run: reader_validates,
        },
        Check {
            name: "bad-input",
            points: 3,
            timeout: Duration::from_secs(10),
            description: "a missing path, id 0 or 256, size 0, a size over shmmax and a payload \
                          that does not fit are typed errors, and leave no segment",
            exclusive: false,
            run: bad_input,
        },
    ],
};

/// The record layout the lab prescribes: magic, sequence, length, payload.
const MAGIC: u32 = u32::from_le_bytes(*b"IPCR");
const HEADER_LEN: usize = 16;
/// `SHM_DEST` in the mode column: the segment was marked for removal while still attached.
const SHM_DEST: u32 = 0o1000;

/// The file and id the programs derive the key from.
struct Name {
    path: PathBuf,
    id: u32,
    key: i32,
}

fn ftok(path: &Path, id: u32) -> Result<i32, Fail> {
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
fn fresh_name(run: &mut Run) -> Result<Name, Fail> {
    let path = run.path("anchor");
    std::fs::write(&path, b"ftok anchor\n")?;
    for _ in 0..64 {
        let id = run.rng().random_range(1..=255u32);
        let key = ftok(&path, id)?;
        if segment(key).is_none() {
            run.ipc_key(key);
            return Ok(Name { path, id, key });
        }
    }
    Err(Fail::Grader("every ftok key tried is taken".into()))
}

fn segment(key: i32) -> Option<ShmSegment> {
    shm_segments().into_iter().find(|s| s.key == key)
}

fn segment_by_id(id: i32) -> Option<ShmSegment> {
    shm_segments().into_iter().find(|s| s.id == id)
}

fn rmid(id: i32) {
    // SAFETY: IPC_RMID takes no buffer.
    unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
}

/// Starts `sysv-shm publish` with a payload file.
fn spawn_publisher(
    run: &mut Run,
    path: &Path,
    id: u32,
    size: u64,
    sequence: u32,
    payload: &[u8],
) -> Result<Proc, Fail> {
    let payload_file = run.path(&format!("payload-{sequence}.bin"));
    std::fs::write(&payload_file, payload)?;
    let args: Vec<OsString> = vec![
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
    let mut proc = run.spawn(&args)?;
    proc.set_roles(|_| "the publisher".into());
    Ok(proc)
}

/// Starts `sysv-shm read`; returns it and its output file.
fn spawn_reader(run: &mut Run, name: &Name, remove: bool, n: u32) -> Result<(Proc, PathBuf), Fail> {
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
    let mut proc = run.spawn(&args)?;
    proc.set_roles(|_| "the reader".into());
    Ok((proc, output))
}

/// The next message must be `expected`; a `failed` is reported with its kind and error.
fn expect(proc: &mut Proc, who: &str, expected: &str) -> Result<ipc_labs_driver::Message, Fail> {
    let message = proc.recv_any()?;
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

/// Waits for the program's exit and requires status 0.
fn exits_cleanly(proc: &mut Proc, who: &str) -> Result<(), Fail> {
    let status = proc.wait()?;
    if status.success() {
        Ok(())
    } else {
        Err(Fail::failed(format!("the {who} exited with {status}")))
    }
}

/// A publisher that said `ready`: it holds its segment attached and waits for `go`.
struct Published {
    /// Whether the check removes the segment itself when it is done with it: its protocol
    /// never asks the program to.
    discard: bool,
    proc: Proc,
    name: Name,
    size: u64,
    sequence: u32,
    payload: Vec<u8>,
}

/// Starts a publisher of a random record and waits until it holds the segment.
fn publish(run: &mut Run, discard: bool) -> Result<Published, Fail> {
    let name = fresh_name(run)?;
    // Not a multiple of the page size: the kernel must report exactly what was asked for.
    let size = run.rng().random_range(5000..20000u64);
    let sequence = run.rng().random_range(2..1_000_000u32);
    let payload = run.random_bytes(size as usize - HEADER_LEN - 100);
    let mut proc = spawn_publisher(run, &name.path, name.id, size, sequence, &payload)?;
    expect(&mut proc, "publisher", "ready")?;
    Ok(Published {
        discard,
        proc,
        name,
        size,
        sequence,
        payload,
    })
}

impl Published {
    /// The publisher's segment, found by its key; a diagnosis if there is none.
    fn segment(&self) -> Result<ShmSegment, Fail> {
        if let Some(found) = segment(self.name.key) {
            return Ok(found);
        }
        let pid = self.proc.pid.as_raw();
        let own = shm_segments().into_iter().find(|s| s.creator == pid);
        Err(Fail::failed(match own {
            Some(s) if s.mode & SHM_DEST != 0 => format!(
                "the publisher's segment (id {}) is already marked for removal: IPC_RMID makes \
                 its key private, so no reader can find it; remove it only when done",
                s.id
            ),
            Some(s) => format!(
                "the publisher's segment (id {}) has key {:#x}, not ftok(path, {}) = {:#x}: \
                 derive the key with ftok() from the given path and id (IPC_PRIVATE is 0)",
                s.id, s.key, self.name.id, self.name.key
            ),
            None => format!(
                "no segment has key ftok(path, {}) = {:#x} while the publisher says it holds \
                 one: create it with shmget(key, size, IPC_CREAT | IPC_EXCL | 0600)",
                self.name.id, self.name.key
            ),
        }))
    }

    /// Lets the publisher detach and exit.
    fn finish(&mut self) -> Result<(), Fail> {
        self.proc.send("go", &[])?;
        expect(&mut self.proc, "publisher", "done")?;
        exits_cleanly(&mut self.proc, "publisher")
    }

    /// Runs a reader to its end and checks what it read.
    fn read_back(&self, run: &mut Run, remove: bool, n: u32) -> Result<(), Fail> {
        let (mut reader, output) = spawn_reader(run, &self.name, remove, n)?;
        expect(&mut reader, "reader", "attached")?;
        reader.send("go", &[])?;
        let done = expect(&mut reader, "reader", "done")?;
        exits_cleanly(&mut reader, "reader")?;
        self.verify(&done, &output)
    }

    /// The reader's report and output against what was published.
    fn verify(&self, done: &ipc_labs_driver::Message, output: &Path) -> Result<(), Fail> {
        let sequence = done.get("sequence").unwrap_or("?");
        if sequence != self.sequence.to_string() {
            return Err(Fail::failed(format!(
                "the reader read sequence {sequence}, the publisher wrote {}",
                self.sequence
            )));
        }
        let read = std::fs::read(output)?;
        if read != self.payload {
            let first = read
                .iter()
                .zip(&self.payload)
                .position(|(a, b)| a != b)
                .unwrap_or(read.len().min(self.payload.len()));
            return Err(Fail::failed(format!(
                "the reader's payload is not the published one: {} bytes for {}, first \
                 difference at byte {first}",
                read.len(),
                self.payload.len()
            )));
        }
        Ok(())
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

fn segment_key_and_size(run: &mut Run) -> Result<String, Fail> {
    let mut published = publish(run, true)?;
    let found = published.segment()?;
    if found.size != published.size {
        return Err(Fail::failed(format!(
            "the segment is {} bytes, the publisher was asked for {}: pass the requested size to \
             shmget() as it is (the header is part of it)",
            found.size, published.size
        )));
    }
    published.finish()?;
    Ok(format!(
        "segment {} has key {:#x} = ftok(path, {}) and {} bytes",
        found.id, found.key, published.name.id, found.size
    ))
}

fn owner_only_permissions(run: &mut Run) -> Result<String, Fail> {
    let mut published = publish(run, true)?;
    let found = published.segment()?;
    let mode = found.mode & 0o777;
    if mode != 0o600 {
        return Err(Fail::failed(format!(
            "the segment's mode is {mode:03o}: create it with 0600, or any other user on the \
             machine may read{} the record",
            if mode & 0o022 != 0 {
                " and overwrite"
            } else {
                ""
            }
        )));
    }
    published.finish()?;
    Ok("the segment's mode is 600".into())
}

fn attached_together(run: &mut Run) -> Result<String, Fail> {
    let mut published = publish(run, true)?;
    let alone = published.segment()?;
    if alone.attached != 1 {
        return Err(Fail::failed(format!(
            "while the publisher says `ready` (holding the segment), nattch is {}, not 1: stay \
             attached from shmat() until detach() is called",
            alone.attached
        )));
    }
    let (mut reader, output) = spawn_reader(run, &published.name, false, 1)?;
    expect(&mut reader, "reader", "attached")?;
    let both = published.segment()?;
    if both.attached != 2 {
        return Err(Fail::failed(format!(
            "with the publisher and the reader both saying they are attached, nattch is {}, \
             not 2: each must shmat() the same segment and stay attached",
            both.attached
        )));
    }
    reader.send("go", &[])?;
    let done = expect(&mut reader, "reader", "done")?;
    exits_cleanly(&mut reader, "reader")?;
    published.verify(&done, &output)?;
    if segment(published.name.key).is_none() {
        return Err(Fail::failed(
            "the segment lost its key when the reader (without --remove) detached: remove it \
             only when asked, and detach with shmdt() alone",
        ));
    }
    published.finish()?;
    let after = published.segment()?;
    if after.attached != 0 {
        return Err(Fail::failed(format!(
            "both programs exited, yet nattch is {}",
            after.attached
        )));
    }
    Ok("nattch went 1, 2, 0, and the reader read the record".into())
}

fn outlives_publisher(run: &mut Run) -> Result<String, Fail> {
    let mut published = publish(run, false)?;
    published.finish()?;
    let Some(left) = segment(published.name.key) else {
        return Err(Fail::failed(
            "the segment is gone once the publisher exited: a SysV segment lives until \
             IPC_RMID, so do not remove it in the publisher",
        ));
    };
    if left.attached != 0 {
        return Err(Fail::failed(format!(
            "the publisher exited, yet nattch is {}",
            left.attached
        )));
    }
    published.read_back(run, false, 1)?;
    if segment(published.name.key).is_none() {
        return Err(Fail::failed(
            "the segment is gone after a `read` without --remove: remove it only when asked",
        ));
    }
    published.read_back(run, true, 2)?;
    Ok(format!(
        "the record ({} bytes, sequence {}) outlived its publisher and was read twice",
        published.payload.len(),
        published.sequence
    ))
}

fn removal(run: &mut Run) -> Result<String, Fail> {
    let mut published = publish(run, false)?;
    let id = published.segment()?.id;
    published.finish()?;
    published.read_back(run, true, 1)?;
    if let Some(left) = segment(published.name.key).or_else(|| segment_by_id(id)) {
        return Err(Fail::failed(format!(
            "segment {} (key {:#x}, nattch {}) still exists after `read --remove` exited: \
             call shmctl(id, IPC_RMID) to remove it",
            left.id, left.key, left.attached
        )));
    }
    Ok(format!("segment {id} is gone after `read --remove`"))
}

/// A segment the check made itself; removed when the check ends, whatever happens.
struct Planted {
    id: i32,
}

impl Planted {
    /// Creates a segment of `size` bytes with key `key` and mode 0600 holding `bytes`, owned by
    /// the user the lab's programs run as.
    fn new(run: &Run, key: i32, size: usize, bytes: &[u8]) -> Result<Planted, Fail> {
        let os = |what: &str| Fail::Grader(format!("{what}: {}", std::io::Error::last_os_error()));
        // SAFETY: shmget takes no pointers.
        let id = unsafe { libc::shmget(key, size, libc::IPC_CREAT | libc::IPC_EXCL | 0o600) };
        if id == -1 {
            return Err(os("shmget"));
        }
        let planted = Planted { id };
        if let Some((uid, gid)) = run.program_user() {
            // SAFETY: IPC_STAT fills the zeroed shmid_ds; IPC_SET reads it back.
            unsafe {
                let mut info: libc::shmid_ds = std::mem::zeroed();
                if libc::shmctl(id, libc::IPC_STAT, &mut info) == -1 {
                    return Err(os("shmctl(IPC_STAT)"));
                }
                info.shm_perm.uid = uid;
                info.shm_perm.gid = gid;
                if libc::shmctl(id, libc::IPC_SET, &mut info) == -1 {
                    return Err(os("shmctl(IPC_SET)"));
                }
            }
        }
        // SAFETY: a null address lets the kernel choose; the segment is `size` bytes long.
        let addr = unsafe { libc::shmat(id, std::ptr::null(), 0) };
        if addr as isize == -1 {
            return Err(os("shmat"));
        }
        // SAFETY: the segment is attached read-write and at least bytes.len() long.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), addr.cast::<u8>(), bytes.len().min(size));
            libc::shmdt(addr);
        }
        Ok(planted)
    }

    /// Its bytes now.
    fn contents(&self, size: usize) -> Result<Vec<u8>, Fail> {
        // SAFETY: attached read-only, read `size` bytes (its size), detached.
        unsafe {
            let addr = libc::shmat(self.id, std::ptr::null(), libc::SHM_RDONLY);
            if addr as isize == -1 {
                return Err(Fail::Grader(format!(
                    "shmat: {}",
                    std::io::Error::last_os_error()
                )));
            }
            let bytes = std::slice::from_raw_parts(addr.cast::<u8>(), size).to_vec();
            libc::shmdt(addr);
            Ok(bytes)
        }
    }
}

impl Drop for Planted {
    fn drop(&mut self) {
        rmid(self.id);
    }
}

/// A record as the lab lays it out.
fn record(magic: u32, sequence: u32, length: u64, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len());
    bytes.extend_from_slice(&magic.to_ne_bytes());
    bytes.extend_from_slice(&sequence.to_ne_bytes());
    bytes.extend_from_slice(&length.to_ne_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

fn stale_segment_refused(run: &mut Run) -> Result<String, Fail> {
    let name = fresh_name(run)?;
    let size = 8192;
    // What a crashed run of an older publication left: a complete record, sequence 1.
    let old_payload = run.random_bytes(3000);
    let stale = record(MAGIC, 1, old_payload.len() as u64, &old_payload);
    let planted = Planted::new(run, name.key, size, &stale)?;
    let before = planted.contents(size)?;
    let payload = run.random_bytes(1000);
    let mut proc = spawn_publisher(run, &name.path, name.id, size as u64, 2, &payload)?;
    let message = proc.recv_any()?;
    match (message.kind.as_str(), message.get("kind")) {
        ("failed", Some("exists")) => {}
        ("ready", _) => {
            let took_over = segment_by_id(planted.id).is_some_and(|s| s.attached > 0);
            return Err(Fail::failed(if took_over {
                format!(
                    "the publisher attached to segment {} that a crashed run left with the same \
                     key, and wrote over it: create with IPC_CREAT | IPC_EXCL and report \
                     EEXIST as ShmError::Exists",
                    planted.id
                )
            } else {
                "a segment with the key already existed, yet the publisher said `ready`: \
                 create with IPC_CREAT | IPC_EXCL and report EEXIST as ShmError::Exists"
                    .to_string()
            }));
        }
        (kind, error) => {
            return Err(Fail::failed(format!(
                "with a segment of the same key already there, the publisher said `{kind}` \
                 (kind={}), not `failed` with kind=exists: map EEXIST to ShmError::Exists",
                error.unwrap_or("none")
            )));
        }
    }
    proc.wait()?;
    if segment(name.key).map(|s| s.id) != Some(planted.id) {
        return Err(Fail::failed(
            "the publisher reported kind=exists but removed or replaced the existing segment: \
             leave a segment you did not create alone",
        ));
    }
    if planted.contents(size)? != before {
        return Err(Fail::failed(
            "the publisher reported kind=exists but changed the existing segment's bytes",
        ));
    }
    Ok(format!(
        "the publisher refused the stale segment {} (kind=exists) and left it as it was",
        planted.id
    ))
}

/// Runs a reader on what the check planted and requires `failed` with `kind`.
fn reader_refuses(run: &mut Run, name: &Name, kind: &str, n: u32, what: &str) -> Result<(), Fail> {
    let (mut reader, _) = spawn_reader(run, name, false, n)?;
    let mut message = reader.recv_any().map_err(|fail| match fail {
        Fail::Crashed(m) => Fail::Crashed(format!("on {what}: {m}")),
        other => other,
    })?;
    if message.kind == "attached" {
        reader.send("go", &[])?;
        message = reader.recv_any().map_err(|fail| match fail {
            Fail::Crashed(m) => Fail::Crashed(format!(
                "on {what}, the reader crashed: {m}; check the header before you trust it"
            )),
            other => other,
        })?;
    }
    match (message.kind.as_str(), message.get("kind")) {
        ("failed", Some(k)) if k == kind => {
            reader.wait()?;
            Ok(())
        }
        ("done", _) => Err(Fail::failed(format!(
            "on {what}, the reader reported a record (sequence {}, {} bytes) instead of \
             kind={kind}: validate the magic and the length before you trust the data",
            message.get("sequence").unwrap_or("?"),
            message.get("length").unwrap_or("?")
        ))),
        (said, got) => Err(Fail::failed(format!(
            "on {what}, the reader said `{said}` (kind={}), the lab wants `failed` with \
             kind={kind}",
            got.unwrap_or("none")
        ))),
    }
}

fn reader_validates(run: &mut Run) -> Result<String, Fail> {
    let name = fresh_name(run)?;
    let size = 4096;
    // Random bytes, but for a plausible length: only the magic tells them from a record.
    let mut garbage = run.random_bytes(size);
    if garbage[..4] == MAGIC.to_ne_bytes() {
        garbage[0] ^= 0xff;
    }
    garbage[8..16].copy_from_slice(&100u64.to_ne_bytes());
    {
        let _planted = Planted::new(run, name.key, size, &garbage)?;
        reader_refuses(run, &name, "bad-magic", 1, "a segment of random bytes")?;
    }
    {
        let payload = run.random_bytes(100);
        let lying = record(MAGIC, 9, 1 << 30, &payload);
        let _planted = Planted::new(run, name.key, size, &lying)?;
        reader_refuses(
            run,
            &name,
            "bad-length",
            2,
            "a header that claims 1 GiB in a 4 KiB segment",
        )?;
    }
    reader_refuses(run, &name, "not-found", 3, "a key with no segment")?;
    Ok("the reader rejected random bytes, a lying length and a missing segment".into())
}

/// Runs a publisher with bad input and requires `failed` with `kind`, and no segment with `key`
/// afterwards.
fn publisher_refuses(
    run: &mut Run,
    (path, id, size): (&Path, u32, u64),
    payload: &[u8],
    kind: &str,
    what: &str,
    key: Option<i32>,
) -> Result<(), Fail> {
    let mut proc = spawn_publisher(run, path, id, size, 1, payload)?;
    let message = proc.recv_any()?;
    match (message.kind.as_str(), message.get("kind")) {
        ("failed", Some(k)) if k == kind => {}
        ("ready", _) => {
            return Err(Fail::failed(format!(
                "with {what} the publisher created a segment and said `ready`: reject it with \
                 kind={kind}"
            )));
        }
        (said, got) => {
            return Err(Fail::failed(format!(
                "with {what} the publisher said `{said}` (kind={}: {}), the lab wants `failed` \
                 with kind={kind}",
                got.unwrap_or("none"),
                message.get("error").unwrap_or("")
            )));
        }
    }
    proc.wait()?;
    if let Some(left) = key.and_then(segment) {
        return Err(Fail::failed(format!(
            "with {what} the publisher failed (kind={kind}) but left segment {} behind: remove \
             what you created on the error path",
            left.id
        )));
    }
    Ok(())
}

fn bad_input(run: &mut Run) -> Result<String, Fail> {
    let name = fresh_name(run)?;
    // A publisher that does not validate the id might create these: audit them too.
    let zero = ftok(&name.path, 0)?;
    run.ipc_key(zero);
    let payload = run.random_bytes(64);
    let ok = (name.path.as_path(), name.id, 4096u64);
    let missing = run.path("does-not-exist");
    let key = Some(name.key);
    publisher_refuses(
        run,
        (&missing, ok.1, ok.2),
        &payload,
        "ftok",
        "a path that does not exist",
        None,
    )?;
    publisher_refuses(run, (ok.0, 0, ok.2), &payload, "bad-id", "id 0", None)?;
    publisher_refuses(
        run,
        (ok.0, 256, ok.2),
        &payload,
        "bad-id",
        "id 256 (ftok keeps 8 bits: it would mean 0)",
        None,
    )?;
    publisher_refuses(run, (ok.0, ok.1, 0), &payload, "zero-size", "size 0", key)?;
    let shmmax: u64 = std::fs::read_to_string("/proc/sys/kernel/shmmax")?
        .trim()
        .parse()
        .map_err(|e| Fail::Grader(format!("shmmax: {e}")))?;
    let mut tried = "a missing path, ids 0 and 256, size 0".to_string();
    if let Some(over) = shmmax.checked_add(1) {
        let what = format!("size {over} (shmmax + 1)");
        publisher_refuses(run, (ok.0, ok.1, over), &payload, "too-large", &what, key)?;
        tried.push_str(", shmmax + 1");
    }
    publisher_refuses(
        run,
        (ok.0, ok.1, 32),
        &payload,
        "no-room",
        "a 64-byte payload for a 32-byte segment",
        key,
    )?;
    Ok(format!(
        "{tried} and a payload that does not fit were refused, with nothing left behind"
    ))
}

fn explain_hang(_: &Hang) -> Option<String> {
    None
}
