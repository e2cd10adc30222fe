//! Checks of lab 4, SysV shared memory: a publisher leaves a record in a segment named by
//! `ftok(path, id)`; a reader, started as a separate run of the program, finds it, validates it,
//! copies it out and removes it when asked.
//!
//! `sysv-shm publish ...` says `ready` (with `shmid`) while it holds the segment attached and
//! waits for `go`, then detaches, says `done` and waits for `exit`. `sysv-shm read ...` says
//! `attached` while attached and waits for `go`, then reads, detaches, removes (with
//! `--remove`), writes the payload and says `done` (with `sequence` and `length`). Either says
//! `failed` with `kind=` (the error variant) and exits. What the segment is (key, size, mode,
//! attachments) the grader reads from `/proc/sysvipc/shm`, and what it holds by attaching it
//! itself, never from the program.

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
            description: "publisher and reader are attached at the same time (nattch 2), the \
                          reader reads the record, and the publisher's detach drops nattch to 0",
            exclusive: false,
            run: attached_together,
        },
        Check {
            name: "record-in-segment",
            points: 3,
            timeout: Duration::from_secs(10),
            description: "the grader attaches the publisher's segment itself and finds the \
                          record in it, with a payload that fills it to the last byte",
            exclusive: false,
            run: record_in_segment,
        },
        Check {
            name: "reader-reads-segment",
            points: 3,
            timeout: Duration::from_secs(10),
            description: "the reader copies out records the grader planted itself: one that \
                          fills its segment, and an empty one in a 16-byte segment",
            exclusive: false,
            run: reader_reads_segment,
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
                          and a segment smaller than a header (bad-length), and a missing \
                          segment (not-found)",
            exclusive: false,
            run: reader_validates,
        },
        Check {
            name: "bad-input",
            points: 3,
            timeout: Duration::from_secs(10),
            description: "a missing path, id 0 or 256, size 0, a size over shmmax and a payload \
                          that does not fit are typed errors, and leave no segment; id 255 works",
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
        if let Some(name) = free_name(run, &path, id)? {
            return Ok(name);
        }
    }
    Err(Fail::Grader("every ftok key tried is taken".into()))
}

/// A fresh name with the given id: when its key is taken, another file (another inode) is tried.
fn fresh_name_with_id(run: &mut Run, id: u32) -> Result<Name, Fail> {
    for attempt in 0..64 {
        let path = run.path(&format!("anchor-{id}-{attempt}"));
        std::fs::write(&path, b"ftok anchor\n")?;
        if let Some(name) = free_name(run, &path, id)? {
            return Ok(name);
        }
    }
    Err(Fail::Grader(format!("every ftok key tried with id {id} is taken")))
}

/// `path` and `id` as a name, declared for the audit, unless a segment has their key already.
fn free_name(run: &mut Run, path: &Path, id: u32) -> Result<Option<Name>, Fail> {
    let key = ftok(path, id)?;
    if segment(key).is_some() {
        return Ok(None);
    }
    run.ipc_key(key);
    Ok(Some(Name {
        path: path.to_path_buf(),
        id,
        key,
    }))
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

/// The file a publisher of publication `sequence` reads its payload from.
fn payload_file(run: &Run, sequence: u32) -> PathBuf {
    run.path(&format!("payload-{sequence}.bin"))
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
    let payload_file = payload_file(run, sequence);
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

/// Puts the circumstances (`on ...`, `with ...`) before the message of a failure or a crash.
fn with_context(context: &str) -> impl Fn(Fail) -> Fail + '_ {
    move |fail| match fail {
        Fail::Failed(m) => Fail::Failed(format!("{context}: {m}")),
        Fail::Crashed(m) => Fail::Crashed(format!("{context}: {m}")),
        other => other,
    }
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
    publish_record(run, discard, name, size, size as usize - HEADER_LEN - 100)
}

/// Starts a publisher of a random record of `len` bytes in a segment of `size` bytes, and waits
/// until it holds the segment.
fn publish_record(
    run: &mut Run,
    discard: bool,
    name: Name,
    size: u64,
    len: usize,
) -> Result<Published, Fail> {
    let sequence = run.rng().random_range(2..1_000_000u32);
    let payload = run.random_bytes(len);
    let mut proc = spawn_publisher(run, &name.path, name.id, size, sequence, &payload)?;
    expect(&mut proc, "publisher", "ready")?;
    // The publisher has read it: no reader may find the payload anywhere but in the segment.
    std::fs::remove_file(payload_file(run, sequence))?;
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

    /// Lets the publisher detach; it then waits for `exit`.
    fn detach(&mut self) -> Result<(), Fail> {
        self.proc.send("go", &[])?;
        expect(&mut self.proc, "publisher", "done").map(drop)
    }

    /// Lets the detached publisher exit.
    fn exit(&mut self) -> Result<(), Fail> {
        self.proc.send("exit", &[])?;
        exits_cleanly(&mut self.proc, "publisher")
    }

    /// Lets the publisher detach and exit.
    fn finish(&mut self) -> Result<(), Fail> {
        self.detach()?;
        self.exit()
    }

    /// Runs a reader to its end and checks what it read.
    fn read_back(&self, run: &mut Run, remove: bool, n: u32) -> Result<(), Fail> {
        let (done, output) = read_to_end(run, &self.name, remove, n)?;
        self.verify(&done, &output)
    }

    /// The reader's report and output against what was published.
    fn verify(&self, done: &ipc_labs_driver::Message, output: &Path) -> Result<(), Fail> {
        verify_read(done, output, self.sequence, &self.payload, "published")
    }
}

/// Runs a reader to its end: its `done` message and its output file.
fn read_to_end(
    run: &mut Run,
    name: &Name,
    remove: bool,
    n: u32,
) -> Result<(ipc_labs_driver::Message, PathBuf), Fail> {
    let (mut reader, output) = spawn_reader(run, name, remove, n)?;
    expect(&mut reader, "reader", "attached")?;
    reader.send("go", &[])?;
    let done = expect(&mut reader, "reader", "done")?;
    exits_cleanly(&mut reader, "reader")?;
    Ok((done, output))
}

/// The reader's report and output against the record (`sequence`, `payload`) that was `how`
/// (published, planted).
fn verify_read(
    done: &ipc_labs_driver::Message,
    output: &Path,
    sequence: u32,
    payload: &[u8],
    how: &str,
) -> Result<(), Fail> {
    let read_sequence = done.get("sequence").unwrap_or("?");
    if read_sequence != sequence.to_string() {
        return Err(Fail::failed(format!(
            "the reader read sequence {read_sequence}, the {how} record has {sequence}"
        )));
    }
    let read = std::fs::read(output)?;
    if read != payload {
        let first = read
            .iter()
            .zip(payload)
            .position(|(a, b)| a != b)
            .unwrap_or(read.len().min(payload.len()));
        return Err(Fail::failed(format!(
            "the reader's payload is not the {how} one: {} bytes for {}, first difference at \
             byte {first}; copy the payload out of the segment, `length` bytes after the header",
            read.len(),
            payload.len()
        )));
    }
    Ok(())
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
    published.detach()?;
    // The publisher still runs: only its shmdt() can have dropped the count.
    let detached = published.segment()?;
    if detached.attached != 0 {
        return Err(Fail::failed(format!(
            "the reader exited and the publisher said `done` after detach(), yet nattch is {} \
             while the publisher still runs: detach() must call shmdt()",
            detached.attached
        )));
    }
    published.exit()?;
    Ok("nattch went 1, 2, and 0 at the publisher's detach, and the reader read the record".into())
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

fn record_in_segment(run: &mut Run) -> Result<String, Fail> {
    let name = fresh_name(run)?;
    // The payload fills the segment to its last byte: header + payload = size fits.
    let len = run.rng().random_range(3000..12000usize);
    let size = (HEADER_LEN + len) as u64;
    let context =
        format!("with a {len}-byte payload in a {size}-byte segment, which it fills exactly");
    let mut published =
        publish_record(run, true, name, size, len).map_err(with_context(&context))?;
    let found = published.segment()?;
    let bytes = segment_bytes(found.id, (found.size as usize).min(size as usize))?;
    let field = |at: usize, len: usize| bytes.get(at..at + len).unwrap_or_default();
    let magic = field(0, 4);
    if magic != MAGIC.to_ne_bytes() {
        return Err(Fail::failed(format!(
            "the publisher says `ready`, but the segment holds no record: its first 4 bytes are \
             {magic:02x?}, not the magic {:02x?} (\"IPCR\"); write the record into the segment \
             itself, through the address shmat() returned",
            MAGIC.to_ne_bytes()
        )));
    }
    let header = [
        ("sequence", field(4, 4), published.sequence.to_ne_bytes().to_vec()),
        ("length", field(8, 8), (len as u64).to_ne_bytes().to_vec()),
    ];
    for (what, found, want) in header {
        if found != want {
            return Err(Fail::failed(format!(
                "the segment's {what} field holds {found:02x?}, the record's {what} is \
                 {want:02x?}: lay the header out as magic (u32), sequence (u32), length (u64)"
            )));
        }
    }
    if field(HEADER_LEN, len) != published.payload {
        return Err(Fail::failed(
            "the segment's header is right but its payload bytes are not the published ones: \
             copy the payload into the segment right after the 16-byte header",
        ));
    }
    published.finish()?;
    Ok(format!(
        "the grader found the record (sequence {}, {len} bytes) in the {size}-byte segment itself",
        published.sequence
    ))
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
        segment_bytes(self.id, size)
    }
}

/// The first `size` bytes (no more than its size) of segment `id`, as the grader itself sees
/// them.
fn segment_bytes(id: i32, size: usize) -> Result<Vec<u8>, Fail> {
    // SAFETY: attached read-only, read `size` bytes (no more than its size), detached.
    unsafe {
        let addr = libc::shmat(id, std::ptr::null(), libc::SHM_RDONLY);
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

/// Runs a reader on a record the check planted and requires it read back as it is.
fn reader_accepts(
    run: &mut Run,
    name: &Name,
    (sequence, payload): (u32, &[u8]),
    n: u32,
    what: &str,
) -> Result<(), Fail> {
    let context = format!("on {what}");
    let (done, output) = read_to_end(run, name, false, n).map_err(with_context(&context))?;
    verify_read(&done, &output, sequence, payload, "planted").map_err(with_context(&context))
}

fn reader_reads_segment(run: &mut Run) -> Result<String, Fail> {
    let name = fresh_name(run)?;
    // Not a multiple of the page size, and the payload fills the segment to its last byte.
    let size = run.rng().random_range(5000..20000usize);
    let sequence = run.rng().random_range(2..1_000_000u32);
    let payload = run.random_bytes(size - HEADER_LEN);
    {
        let full = record(MAGIC, sequence, payload.len() as u64, &payload);
        let _planted = Planted::new(run, name.key, size, &full)?;
        let what = format!(
            "a {}-byte payload the grader planted in a {size}-byte segment, which it fills \
             exactly",
            payload.len()
        );
        reader_accepts(run, &name, (sequence, &payload), 1, &what)?;
    }
    let empty_sequence = run.rng().random_range(2..1_000_000u32);
    {
        let empty = record(MAGIC, empty_sequence, 0, &[]);
        let _planted = Planted::new(run, name.key, HEADER_LEN, &empty)?;
        let what = "an empty record the grader planted in a segment of just a 16-byte header";
        reader_accepts(run, &name, (empty_sequence, &[]), 2, what)?;
    }
    Ok(format!(
        "the reader copied out planted records: {} bytes filling a {size}-byte segment, and an \
         empty one in 16 bytes",
        payload.len()
    ))
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
    {
        // The magic and the sequence, but no room for the length: the header does not fit.
        let cut = record(MAGIC, 9, 0, &[]);
        let _planted = Planted::new(run, name.key, 8, &cut)?;
        reader_refuses(
            run,
            &name,
            "bad-length",
            3,
            "an 8-byte segment, too small for the 16-byte header",
        )?;
    }
    reader_refuses(run, &name, "not-found", 4, "a key with no segment")?;
    Ok(
        "the reader rejected random bytes, a lying length, a segment smaller than a header and \
        a missing segment"
            .into(),
    )
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
    // The largest id is valid: ftok() keeps all of its 8 bits.
    let largest = fresh_name_with_id(run, 255)?;
    let mut published = publish_record(run, true, largest, 4096, 64)
        .map_err(with_context("with id 255, the largest valid one"))?;
    published.finish()?;
    Ok(format!(
        "{tried} and a payload that does not fit were refused, with nothing left behind; id 255 \
         was accepted"
    ))
}

fn explain_hang(_: &Hang) -> Option<String> {
    None
}
