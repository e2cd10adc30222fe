//! The sysv-shm program. The grader runs it; you can too, in two terminals or one after the
//! other:
//!
//! ```text
//! cargo run -p sysv-shm -- publish --path Cargo.toml --id 7 --size 4096 --payload-file Cargo.toml
//! ipcs -m
//! cargo run -p sysv-shm -- read --path Cargo.toml --id 7 --output /tmp/record --remove
//! cmp Cargo.toml /tmp/record
//! ```
//!
//! Each run tells the grader what it did: `started` (it has its arguments, the publisher its
//! payload, and has not called the library yet), `ready` (the publisher holds the segment
//! attached), `attached` (the reader does), `done`, or `failed` with `kind=` from
//! [`ShmError::kind`]. It waits for `go` at `started`, `ready` and `attached`, and the
//! publisher, detached, for `exit` after its `done`. `create` calls [`Segment::create`] alone
//! (no `publish()` around it) and removes what it made. Three steps use the library again in one
//! process, with a pause between for the grader to change the world: `create --then-id` says
//! `created` and waits for `go` before it creates a second segment, `read --first-output` says
//! `read` and waits for `go` before it reads the record again, and `publish --rewrite` writes
//! the record twice more from one buffer refilled in place, saying `rewritten` and waiting for
//! `go` after each. `publish --nul-in-path` hands the library a path with a NUL byte. Keep this
//! file as it is.

use std::ffi::OsString;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ipc_labs_driver::Control;
use ipc_labs_driver::bench::{Bench, CopyReader};
use sysv_shm::{HEADER_LEN, Key, Segment, ShmError, key_for, publish, remove};

/// Publishes a record in a SysV shared memory segment, or reads it back.
#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Creates the segment for (path, id), writes the payload into it, and detaches.
    Publish {
        /// An existing file: with the id, it names the segment (ftok).
        #[arg(long)]
        path: PathBuf,
        /// The ftok id, 1 to 255.
        #[arg(long)]
        id: u32,
        /// The segment's size in bytes, header included.
        #[arg(long)]
        size: u64,
        /// The file whose bytes are published.
        #[arg(long)]
        payload_file: PathBuf,
        /// The publication's sequence number, stored in the header.
        #[arg(long, default_value_t = 1)]
        sequence: u32,
        /// Adds a NUL byte and `x` to the path: no file name holds one, and a program's arguments
        /// cannot carry one, so this is how such a path reaches `key_for`.
        #[arg(long)]
        nul_in_path: bool,
        /// After `ready` and `go`, writes the record twice more into the segment, as publications
        /// `sequence + 1` and `sequence + 2`, from one buffer of its own (the same address, the
        /// same length), each time filled anew with the payload file's bytes: it says `rewritten`
        /// after each and waits for `go`.
        #[arg(long)]
        rewrite: bool,
    },
    /// Only creates the segment for (path, id) with `Segment::create`, then removes it again.
    Create {
        #[arg(long)]
        path: PathBuf,
        #[arg(long)]
        id: u32,
        #[arg(long)]
        size: u64,
        /// Then, after `created` and `go`, does the same for (path, this id) in the same process.
        #[arg(long)]
        then_id: Option<u32>,
    },
    /// Finds the segment for (path, id), validates the record and writes its payload to a file.
    Read {
        /// The same file the publisher was given.
        #[arg(long)]
        path: PathBuf,
        /// The same id.
        #[arg(long)]
        id: u32,
        /// Where the payload is written.
        #[arg(long)]
        output: PathBuf,
        /// Remove the segment after reading it.
        #[arg(long)]
        remove: bool,
        /// Read the record twice: first into this file, then, after `read` and `go`, from the
        /// same attached segment again into `--output`.
        #[arg(long)]
        first_output: Option<PathBuf>,
    },
}

/// The bytes of the payload file, mapped rather than read (other files are read): were the file
/// cut short while the publisher copies it, the copy would stop with SIGBUS, as a publisher
/// that crashes mid-write does. The grader does this to see what such a crash leaves behind.
fn map_payload(path: &Path) -> std::io::Result<&'static [u8]> {
    let file = std::fs::File::open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Ok(std::fs::read(path)?.leak());
    }
    let Ok(len) = usize::try_from(metadata.len()) else {
        return Err(std::io::Error::from(std::io::ErrorKind::FileTooLarge));
    };
    if len == 0 {
        return Ok(&[]);
    }
    // SAFETY: a private, read-only mapping of the whole file, never unmapped, so the slice is
    // valid for the rest of the process.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            file.as_raw_fd(),
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the mapping is `len` bytes long and lives as long as the process.
    Ok(unsafe { std::slice::from_raw_parts(addr.cast::<u8>(), len) })
}

/// `Segment::create` alone for (path, id), then `remove()` and `detach()`; the segment's id.
fn create_and_remove(path: &Path, id: u32, size: u64) -> Result<i32, ShmError> {
    let segment = key_for(path, id).and_then(|key| Segment::create(key, size))?;
    let shmid = segment.id;
    remove(shmid).and(segment.detach())?;
    Ok(shmid)
}

/// Reports `error` to the grader and on stderr.
fn fail(control: &Control, error: &ShmError) -> ExitCode {
    eprintln!("sysv-shm: {error}");
    control.send(
        "failed",
        &[
            ("kind", error.kind().to_string()),
            ("error", error.to_string()),
        ],
    );
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let control = Control::start("sysv-shm");
    if let Some(bench) = Bench::requested(&control) {
        return bench_publish(&control, &bench);
    }
    match Args::parse().command {
        Command::Publish {
            path,
            id,
            size,
            payload_file,
            sequence,
            nul_in_path,
            rewrite,
        } => {
            let path = if nul_in_path {
                let mut bytes = path.into_os_string().into_vec();
                bytes.extend_from_slice(b"\0x");
                PathBuf::from(OsString::from_vec(bytes))
            } else {
                path
            };
            let payload = match map_payload(&payload_file) {
                Ok(bytes) => bytes,
                Err(error) => {
                    eprintln!("sysv-shm: cannot read {}: {error}", payload_file.display());
                    return ExitCode::from(2);
                }
            };
            // Nothing of the library has run yet: the grader may set the stage before `go`.
            control.send("started", &[("bytes", payload.len().to_string())]);
            control.wait_for("go");
            let mut segment = match publish(&path, id, size, sequence, payload) {
                Ok(segment) => segment,
                Err(error) => return fail(&control, &error),
            };
            control.send("ready", &[("shmid", segment.id.to_string())]);
            control.wait_for("go");
            if rewrite {
                let mut buffer = payload.to_vec();
                for step in 1..=2 {
                    let refilled = std::fs::File::open(&payload_file)
                        .and_then(|mut file| file.read_exact(&mut buffer));
                    if let Err(error) = refilled {
                        eprintln!("sysv-shm: cannot read {}: {error}", payload_file.display());
                        return ExitCode::from(2);
                    }
                    if let Err(error) = segment.write_record(sequence.wrapping_add(step), &buffer) {
                        return fail(&control, &error);
                    }
                    control.send("rewritten", &[]);
                    control.wait_for("go");
                }
            }
            if let Err(error) = segment.detach() {
                return fail(&control, &error);
            }
            // Still running, so that the grader sees the detach itself, not the exit's.
            control.send("done", &[]);
            control.wait_for("exit");
            ExitCode::SUCCESS
        }
        Command::Create {
            path,
            id,
            size,
            then_id,
        } => {
            control.send("started", &[]);
            control.wait_for("go");
            let mut made = create_and_remove(&path, id, size);
            if let (Some(then_id), Ok(shmid)) = (then_id, &made) {
                // What the first create left in the process must hold for the second one too.
                control.send("created", &[("shmid", shmid.to_string())]);
                control.wait_for("go");
                made = create_and_remove(&path, then_id, size);
            }
            match made {
                Ok(shmid) => {
                    control.send("done", &[("shmid", shmid.to_string())]);
                    ExitCode::SUCCESS
                }
                Err(error) => fail(&control, &error),
            }
        }
        Command::Read {
            path,
            id,
            output,
            remove: remove_after,
            first_output,
        } => {
            control.send("started", &[]);
            control.wait_for("go");
            let segment = match key_for(&path, id).and_then(Segment::open) {
                Ok(segment) => segment,
                Err(error) => return fail(&control, &error),
            };
            control.send(
                "attached",
                &[
                    ("shmid", segment.id.to_string()),
                    ("size", segment.size.to_string()),
                ],
            );
            control.wait_for("go");
            let shmid = segment.id;
            let mut record = segment.read_record();
            if let (Some(first_output), Ok(first)) = (first_output, &record) {
                if let Err(error) = std::fs::write(&first_output, &first.payload) {
                    eprintln!("sysv-shm: cannot write {}: {error}", first_output.display());
                    return ExitCode::from(2);
                }
                // The same segment, read again: the grader may have changed it in between.
                control.send("read", &[("sequence", first.sequence.to_string())]);
                control.wait_for("go");
                record = segment.read_record();
            }
            if let Err(error) = segment.detach() {
                return fail(&control, &error);
            }
            let removed = if remove_after { remove(shmid) } else { Ok(()) };
            let record = match record {
                Ok(record) => record,
                Err(error) => return fail(&control, &error),
            };
            if let Err(error) = removed {
                return fail(&control, &error);
            }
            if let Err(error) = std::fs::write(&output, &record.payload) {
                eprintln!("sysv-shm: cannot write {}: {error}", output.display());
                return ExitCode::from(2);
            }
            control.send(
                "done",
                &[
                    ("sequence", record.sequence.to_string()),
                    ("length", record.payload.len().to_string()),
                ],
            );
            ExitCode::SUCCESS
        }
    }
}

/// `sysv-shm bench publish`: times a record of each size written into a segment with
/// [`Segment::write_record`] and read back by a forked reader with [`Segment::read_record`] (a
/// copy into the segment, a copy out of it), for `cargo grade bench`. The segment is made and
/// attached once, before: the mapping is a one-time cost. A byte on a pipe tells the reader
/// that the record is there, and one back says that it holds the payload.
fn bench_publish(control: &Control, bench: &Bench) -> ExitCode {
    let samples = (|| {
        // The file the key comes from; the key outlives it.
        std::fs::write(&bench.path, b"").map_err(|e| format!("{}: {e}", bench.path.display()))?;
        let key = key_for(&bench.path, 1);
        let _ = std::fs::remove_file(&bench.path);
        let key = key.map_err(|e| e.to_string())?;
        let size = (HEADER_LEN + bench.largest()) as u64;
        let mut segment = Segment::create(key, size).map_err(|e| e.to_string())?;
        let id = segment.id;
        let measured = publications(bench, key, &mut segment);
        let removed = remove(id).map_err(|e| e.to_string());
        let detached = segment.detach().map_err(|e| e.to_string());
        let samples = measured?;
        removed.and(detached).map(|()| samples)
    })();
    let ok = bench.finish(control, samples);
    control.wait_for("exit");
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The rounds of [`bench_publish`]: the publisher's samples, a forked reader's copies.
fn publications(
    bench: &Bench,
    key: Key,
    segment: &mut Segment,
) -> Result<Vec<(usize, u64)>, String> {
    let message = vec![0x5a; bench.largest()];
    let mut sequence = 0u32;
    let open_reader = || {
        Segment::open(key)
            .map(RecordReader)
            .map_err(|e| e.to_string())
    };
    // SAFETY: the program is single-threaded.
    unsafe {
        bench.time_copies(open_reader, |size| {
            sequence = sequence.wrapping_add(1);
            segment
                .write_record(sequence, &message[..size])
                .map_err(|e| e.to_string())
        })
    }
}

/// The reader of [`bench_publish`]: reads a record each time it is told to.
struct RecordReader(Segment);

impl CopyReader for RecordReader {
    fn copy_out(&mut self, size: usize) -> Result<(), String> {
        // The payload counts as used: the copy is what is timed.
        let record = std::hint::black_box(self.0.read_record().map_err(|e| e.to_string())?);
        if record.payload.len() != size {
            return Err(format!(
                "a record of {} bytes where {size} were written",
                record.payload.len()
            ));
        }
        Ok(())
    }

    fn close(self) -> Result<(), String> {
        self.0.detach().map_err(|e| e.to_string())
    }
}
