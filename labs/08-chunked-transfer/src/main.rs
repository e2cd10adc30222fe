//! The chunked-transfer program. The grader runs it; you can too, in two terminals:
//!
//! ```text
//! cargo run -p chunked-transfer -- send --name /demo --size 4096 --seed 7 --lens 0,10000,5
//! cargo run -p chunked-transfer -- recv --name /demo --count 3 --save
//! ```
//!
//! (start the sender first: it creates the segment; the receiver unlinks its name once it has
//! mapped it). Subcommands:
//!
//! - `send`: creates the segment, says `ready` (with `capacity`), waits for `go`, sends one
//!   message per length in `--lens`, says `done`, and waits for `exit`. With `--progress-after
//!   B` it says `progress` once B bytes of data have gone into the segment; with `--hold-at B`
//!   it says `holding` (with `into` and `room`: the address and length of the buffer its data
//!   source was given) and waits for `release` before it reads byte B of the first message from
//!   its data source; `--slow-ms` makes its data source take that long before each read (a slow
//!   producer).
//! - `recv`: opens the segment, unlinks its name, says `ready`, waits for `go`, receives
//!   `--count` messages, saying `message` (`index`, `len`, `hash`) after each, then `done`, and
//!   waits for `exit`. `--save` also writes message i to `message-<i>.bin`; `--slow-ms` makes
//!   its writer take that long before each write (a slow disk); with `--hold-at B,...` the
//!   writer says `holding` (with `from` and `len`: the address and length of the buffer it was
//!   given) and waits for `release` before the write that reaches each byte B of the stream (the
//!   messages one after the other); with `--short-writes` each write takes at most half of what
//!   it is given (as a pipe or a socket may).
//! - `pool`: creates a pool, says `ready`, and at `finish` says `state` (`free`), destroys the
//!   pool and says `done`.
//! - `pair`: opens a pool, says `ready`, at `go` takes a segment (`took`, `id`, and `free`, the
//!   pool's free count after the take), forks a receiver child, and sends one message through
//!   the segment, saying `sent` when its send has returned; the child says `message` and gives
//!   the segment back; the parent says `done`. With `--hold-at B,...`, the child says `holding`
//!   and waits for `release` before the write that reaches each byte B of the message; with
//!   `--hold-sender-at B`, the parent does so before it reads byte B from its data source.
//!   With `--count-again`, after `took` it waits for `count` and says `state` (`free`, the
//!   pool's free count asked again) before it forks; with `--fail-write-at B`, the child's
//!   writer fails (`StorageFull`, as a full disk) at the write that reaches byte B.
//! - `pipe`: the same data through a pipe, for comparison: a child reads and hashes, the parent
//!   writes at `go`; the child says `message` and waits for `exit`; the parent says `done`.
//!
//! Errors are `failed` with `kind=` from [`TransferError::kind`] (and `received=`, the bytes
//! the writer got). SIGUSR1 has a handler that does nothing (without `SA_RESTART`), so that the
//! grader can interrupt a wait. The data of message `index` is [`Pattern`]; `hash` is
//! [`Fnv64`]. Keep this file as it is.

use std::fs::File;
use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use chunked_transfer::{Pool, Segment, TransferError, unlink};
use clap::{Parser, Subcommand};
use ipc_labs_driver::bench::{Bench, Side};
use ipc_labs_driver::{Control, install_noop_handler};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork, pipe};

/// Streams messages of any size through a fixed-size shared memory segment.
#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Creates the segment and sends messages through it.
    Send {
        /// The segment's name: `/` and more characters, no other `/`.
        #[arg(long)]
        name: String,
        /// The segment's size in bytes.
        #[arg(long)]
        size: usize,
        /// The seed of the messages' data.
        #[arg(long)]
        seed: u64,
        /// The messages' lengths, comma-separated.
        #[arg(long, value_delimiter = ',')]
        lens: Vec<u64>,
        /// How long to wait for the receiver at most, in milliseconds.
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
        /// Say `progress` once this many bytes have been sent.
        #[arg(long)]
        progress_after: Option<u64>,
        /// Say `holding` and wait for `release` before reading this byte of message 0.
        #[arg(long)]
        hold_at: Option<u64>,
        /// Sleep this long before each read of the data source (a slow producer).
        #[arg(long, default_value_t = 0)]
        slow_ms: u64,
        /// The data source gives at most half the bytes asked for in each read (as a pipe or a
        /// socket may): short reads that are not the end of the data.
        #[arg(long)]
        short_reads: bool,
    },
    /// Opens the segment and receives messages from it.
    Recv {
        /// The segment's name.
        #[arg(long)]
        name: String,
        /// How many messages to receive.
        #[arg(long)]
        count: usize,
        /// How long to wait for the sender at most, in milliseconds.
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
        /// Also write message i to `message-<i>.bin`.
        #[arg(long)]
        save: bool,
        /// Sleep this long before each write (a slow writer).
        #[arg(long, default_value_t = 0)]
        slow_ms: u64,
        /// Say `holding` and wait for `release` before the write that reaches each of these
        /// bytes of the stream (the messages one after the other).
        #[arg(long, value_delimiter = ',')]
        hold_at: Vec<u64>,
        /// Each write takes at most half the bytes it is given (as a pipe or a socket may):
        /// short writes that the receiver must finish.
        #[arg(long)]
        short_writes: bool,
    },
    /// Creates a pool of segments and removes it at `finish`.
    Pool {
        /// The names' prefix.
        #[arg(long)]
        prefix: String,
        /// How many segments.
        #[arg(long)]
        count: usize,
        /// Each segment's size in bytes.
        #[arg(long)]
        size: usize,
    },
    /// One sender/receiver pair through a segment of the pool.
    Pair {
        /// The pool's prefix.
        #[arg(long)]
        prefix: String,
        /// This pair's number: its data is message `index` of the seed.
        #[arg(long)]
        index: u64,
        /// The seed of the data.
        #[arg(long)]
        seed: u64,
        /// The message's length.
        #[arg(long)]
        len: u64,
        /// How long to wait for a segment or the peer at most, in milliseconds.
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
        /// The receiver says `holding` and waits for `release` before the write that reaches
        /// each of these bytes of the message.
        #[arg(long, value_delimiter = ',')]
        hold_at: Vec<u64>,
        /// The sender says `holding` and waits for `release` before it reads this byte of the
        /// message from its data source.
        #[arg(long)]
        hold_sender_at: Option<u64>,
        /// After `took`, wait for `count` and say `state` with the pool's free count asked
        /// again.
        #[arg(long)]
        count_again: bool,
        /// The receiver's writer fails (a full disk) at the write that reaches this byte of the
        /// message.
        #[arg(long)]
        fail_write_at: Option<u64>,
    },
    /// The same data through a pipe, for comparison.
    Pipe {
        /// The seed of the data.
        #[arg(long)]
        seed: u64,
        /// How many bytes.
        #[arg(long)]
        len: u64,
    },
}

/// The data of message `index` for `seed`: a block of 8192 words made by splitmix64 started at
/// `seed + index * 2^32`; word `i` of the message is `block[i % 8192] ^ (i / 8192)`, as 8
/// little-endian bytes, the whole cut to `left` bytes. (A block, so that making the data costs
/// little next to moving it.)
struct Pattern {
    block: Vec<u64>,
    next: u64,
    word: [u8; 8],
    used: usize,
    left: u64,
}

/// Words in a [`Pattern`]'s block.
const BLOCK_WORDS: u64 = 8192;

impl Pattern {
    fn new(seed: u64, index: u64, len: u64) -> Pattern {
        let mut state = seed.wrapping_add(index << 32);
        let block = (0..BLOCK_WORDS)
            .map(|_| {
                state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^ (z >> 31)
            })
            .collect();
        Pattern {
            block,
            next: 0,
            word: [0; 8],
            used: 8,
            left: len,
        }
    }

    fn next_word(&mut self) -> [u8; 8] {
        let word = self.block[(self.next % BLOCK_WORDS) as usize] ^ (self.next / BLOCK_WORDS);
        self.next += 1;
        word.to_le_bytes()
    }
}

impl Read for Pattern {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let mut filled = 0;
        while filled < n && self.used < 8 {
            buf[filled] = self.word[self.used];
            self.used += 1;
            filled += 1;
        }
        let mut words = buf[filled..n].chunks_exact_mut(8);
        for word in &mut words {
            word.copy_from_slice(&self.next_word());
        }
        let rest = words.into_remainder();
        if !rest.is_empty() {
            self.word = self.next_word();
            rest.copy_from_slice(&self.word[..rest.len()]);
            self.used = rest.len();
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// FNV-1a over 64-bit words, in four lanes: the stream is cut into 8-byte little-endian words
/// (the last one padded with zeros); word `i` is folded into lane `i % 4` as
/// `lane = (lane ^ word) * 0x100000001b3`, every lane starting from the FNV offset basis; at
/// the end the four lanes, then the length in bytes, are folded the same way into one hash
/// that starts from the basis. (Four lanes, so that hashing is not what limits the speed.)
struct Fnv64 {
    lanes: [u64; 4],
    words: u64,
    pending: [u8; 8],
    filled: usize,
    len: u64,
}

const FNV_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

impl Fnv64 {
    fn new() -> Fnv64 {
        Fnv64 {
            lanes: [FNV_BASIS; 4],
            words: 0,
            pending: [0; 8],
            filled: 0,
            len: 0,
        }
    }

    fn fold(&mut self, word: u64) {
        let lane = &mut self.lanes[(self.words % 4) as usize];
        *lane = (*lane ^ word).wrapping_mul(FNV_PRIME);
        self.words += 1;
    }

    fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.filled > 0 {
            let take = (8 - self.filled).min(data.len());
            self.pending[self.filled..self.filled + take].copy_from_slice(&data[..take]);
            self.filled += take;
            data = &data[take..];
            if self.filled < 8 {
                return;
            }
            self.fold(u64::from_le_bytes(self.pending));
            self.filled = 0;
        }
        // Whole groups of four words, one per lane, while the lanes are in step.
        while !self.words.is_multiple_of(4) && data.len() >= 8 {
            self.fold(u64::from_le_bytes(data[..8].try_into().expect("8 bytes")));
            data = &data[8..];
        }
        let mut groups = data.chunks_exact(32);
        for group in &mut groups {
            for (lane, word) in self.lanes.iter_mut().zip(group.chunks_exact(8)) {
                let word = u64::from_le_bytes(word.try_into().expect("8 bytes"));
                *lane = (*lane ^ word).wrapping_mul(FNV_PRIME);
            }
            self.words += 4;
        }
        let mut words = groups.remainder().chunks_exact(8);
        for word in &mut words {
            self.fold(u64::from_le_bytes(word.try_into().expect("8 bytes")));
        }
        let rest = words.remainder();
        self.pending[..rest.len()].copy_from_slice(rest);
        self.filled = rest.len();
    }

    fn finish(mut self) -> u64 {
        if self.filled > 0 {
            self.pending[self.filled..].fill(0);
            self.fold(u64::from_le_bytes(self.pending));
        }
        let mut hash = FNV_BASIS;
        for word in self.lanes.into_iter().chain([self.len]) {
            hash = (hash ^ word).wrapping_mul(FNV_PRIME);
        }
        hash
    }
}

/// Where the receiver writes: hashed, optionally saved to a file, optionally slow, optionally
/// held by the grader.
struct Sink<'a> {
    hash: Fnv64,
    file: Option<File>,
    slow: Duration,
    control: &'a Control,
    /// Before the write that reaches each of these bytes of the stream, say `holding` and wait
    /// for `release`, so that the grader can look at the segment or the pool while a chunk is
    /// being written out. Ascending; those reached are removed.
    holds: Vec<u64>,
    /// The stream's bytes before this message.
    base: u64,
    /// Take at most half of each write (at least one byte).
    short: bool,
    /// Fail the write that reaches this byte of the stream, as a full disk would.
    fail_at: Option<u64>,
}

impl<'a> Sink<'a> {
    fn new(file: Option<File>, slow: Duration, control: &'a Control) -> Sink<'a> {
        Sink {
            hash: Fnv64::new(),
            file,
            slow,
            control,
            holds: Vec::new(),
            base: 0,
            short: false,
            fail_at: None,
        }
    }

    /// Takes at most half of each write, as a pipe or a socket may.
    fn short_writes(mut self, short: bool) -> Sink<'a> {
        self.short = short;
        self
    }

    /// Holds before the writes that reach `holds` (bytes of the stream, of which `base` came
    /// before this message).
    fn held_at(mut self, mut holds: Vec<u64>, base: u64) -> Sink<'a> {
        holds.sort_unstable();
        self.holds = holds;
        self.base = base;
        self
    }
}

impl Write for Sink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let at = self.base + self.hash.len;
        let end = at + buf.len() as u64;
        if self.holds.first().is_some_and(|&byte| end > byte) {
            self.holds.retain(|&byte| byte >= end);
            // What the writer was given: the grader checks it is the slot.
            self.control.send(
                "holding",
                &[
                    ("at", at.to_string()),
                    ("from", format!("{:#x}", buf.as_ptr() as usize)),
                    ("len", buf.len().to_string()),
                ],
            );
            self.control.wait_for("release");
        }
        if self.fail_at.is_some_and(|byte| end > byte) {
            return Err(std::io::ErrorKind::StorageFull.into());
        }
        if !self.slow.is_zero() {
            std::thread::sleep(self.slow);
        }
        let buf = if self.short && buf.len() > 1 {
            &buf[..buf.len() / 2]
        } else {
            buf
        };
        if let Some(file) = &mut self.file {
            file.write_all(buf)?;
        }
        self.hash.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What the sender tells the grader on the way, and how fast its data comes.
struct Marks {
    /// Say `progress` once this many bytes have been read from the data source.
    progress_after: Option<u64>,
    /// Say `holding` and wait for `release` before reading this byte of the first message.
    hold_at: Option<u64>,
    /// Sleep this long before each read of the data source.
    slow: Duration,
    /// Give at most half the bytes asked for in each read.
    short: bool,
}

/// The sender's data, which says `progress` once `after` bytes have been read from it, and
/// holds before it reads byte `hold`, so that the grader can look at the segment while the
/// sender stands still.
struct Progress<'a> {
    data: Pattern,
    control: &'a Control,
    read: u64,
    after: Option<u64>,
    hold: Option<u64>,
    /// How long to sleep before each read.
    slow: Duration,
    /// Give at most half the bytes asked for in each read (at least one).
    short: bool,
}

impl Read for Progress<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.slow.is_zero() {
            std::thread::sleep(self.slow);
        }
        if let Some(hold) = self.hold
            && self.read + buf.len() as u64 > hold
        {
            // Where the data source is asked to put the data: the grader checks it is the slot.
            self.control.send(
                "holding",
                &[
                    ("at", self.read.to_string()),
                    ("into", format!("{:#x}", buf.as_ptr() as usize)),
                    ("room", buf.len().to_string()),
                ],
            );
            self.control.wait_for("release");
            self.hold = None;
        }
        let buf = if self.short && buf.len() > 1 {
            let half = buf.len() / 2;
            &mut buf[..half]
        } else {
            buf
        };
        let n = self.data.read(buf)?;
        self.read += n as u64;
        if let Some(after) = self.after
            && self.read >= after
        {
            self.control
                .send("progress", &[("sent", self.read.to_string())]);
            self.after = None;
        }
        Ok(n)
    }
}

/// Reports `error` to the grader and on stderr, with the bytes received so far.
fn report(control: &Control, error: &TransferError, received: u64) {
    eprintln!("chunked-transfer: {error}");
    control.send(
        "failed",
        &[
            ("kind", error.kind().to_string()),
            ("error", error.to_string()),
            ("received", received.to_string()),
        ],
    );
}

fn send(
    control: &Control,
    name: &str,
    size: usize,
    seed: u64,
    lens: &[u64],
    timeout: Duration,
    marks: Marks,
) -> ExitCode {
    let mut segment = match Segment::create(name, size) {
        Ok(segment) => segment,
        Err(error) => {
            report(control, &error, 0);
            return ExitCode::FAILURE;
        }
    };
    control.send("ready", &[("capacity", segment.capacity().to_string())]);
    control.wait_for("go");
    let mut after = marks.progress_after;
    for (index, &len) in lens.iter().enumerate() {
        let mut data = Progress {
            data: Pattern::new(seed, index as u64, len),
            control,
            read: 0,
            after: after.take(),
            hold: marks.hold_at.filter(|_| index == 0),
            slow: marks.slow,
            short: marks.short,
        };
        if let Err(error) = segment.send(len, &mut data, timeout) {
            report(control, &error, 0);
            // If the receiver never came, the name is still there.
            let _ = unlink(name);
            return ExitCode::FAILURE;
        }
        after = data.after;
    }
    control.send("done", &[]);
    control.wait_for("exit");
    ExitCode::SUCCESS
}

/// How the receiver's writer behaves.
struct Writer {
    /// Save message i to `message-<i>.bin`.
    save: bool,
    /// Sleep this long before each write.
    slow: Duration,
    /// Hold before the writes that reach these bytes of the stream.
    holds: Vec<u64>,
    /// Take at most half of each write.
    short: bool,
}

fn recv(
    control: &Control,
    name: &str,
    count: usize,
    timeout: Duration,
    writer: Writer,
) -> ExitCode {
    let mut segment = match Segment::open(name) {
        Ok(segment) => segment,
        Err(error) => {
            report(control, &error, 0);
            return ExitCode::FAILURE;
        }
    };
    // Both sides have it mapped now: the name is no longer needed, and without it nothing is
    // left behind whatever happens next.
    if let Err(error) = unlink(name) {
        report(control, &error, 0);
        return ExitCode::FAILURE;
    }
    control.send("ready", &[]);
    control.wait_for("go");
    let mut holds = writer.holds;
    let mut base = 0;
    for index in 0..count {
        let file = writer.save.then(|| {
            File::create(format!("message-{index}.bin")).expect("creating the message file")
        });
        let mut sink = Sink::new(file, writer.slow, control)
            .held_at(holds, base)
            .short_writes(writer.short);
        let received = segment.receive(&mut sink, timeout);
        holds = std::mem::take(&mut sink.holds);
        match received {
            Ok(len) => {
                base += len;
                control.send(
                    "message",
                    &[
                        ("index", index.to_string()),
                        ("len", len.to_string()),
                        ("hash", format!("{:016x}", sink.hash.finish())),
                    ],
                );
            }
            Err(error) => {
                report(control, &error, sink.hash.len);
                return ExitCode::FAILURE;
            }
        }
    }
    control.send("done", &[]);
    control.wait_for("exit");
    ExitCode::SUCCESS
}

fn pool(control: &Control, prefix: &str, count: usize, size: usize) -> ExitCode {
    let pool = match Pool::create(prefix, count, size) {
        Ok(pool) => pool,
        Err(error) => {
            report(control, &error, 0);
            return ExitCode::FAILURE;
        }
    };
    control.send("ready", &[]);
    control.wait_for("finish");
    match pool.free_count() {
        Ok(free) => control.send("state", &[("free", free.to_string())]),
        Err(error) => report(control, &error, 0),
    }
    match pool.destroy() {
        Ok(()) => {
            control.send("done", &[]);
            ExitCode::SUCCESS
        }
        Err(error) => {
            report(control, &error, 0);
            ExitCode::FAILURE
        }
    }
}

/// Where the grader holds a pair.
struct PairHolds {
    /// The receiver holds before the writes that reach these bytes.
    receiver: Vec<u64>,
    /// The sender holds before it reads this byte.
    sender: Option<u64>,
    /// After `took`, wait for `count` and say the free count again.
    count_again: bool,
    /// The receiver's writer fails at the write that reaches this byte.
    fail_write_at: Option<u64>,
}

fn pair(
    control: &Control,
    prefix: &str,
    index: u64,
    seed: u64,
    len: u64,
    timeout: Duration,
    holds: PairHolds,
) -> ExitCode {
    let pool = match Pool::open(prefix) {
        Ok(pool) => pool,
        Err(error) => {
            report(control, &error, 0);
            return ExitCode::FAILURE;
        }
    };
    control.send("ready", &[]);
    control.wait_for("go");
    let id = match pool.take(timeout) {
        Ok(id) => id,
        Err(error) => {
            report(control, &error, 0);
            return ExitCode::FAILURE;
        }
    };
    let free = match pool.free_count() {
        Ok(free) => free,
        Err(error) => {
            report(control, &error, 0);
            return ExitCode::FAILURE;
        }
    };
    control.send(
        "took",
        &[("id", id.to_string()), ("free", free.to_string())],
    );
    if holds.count_again {
        control.wait_for("count");
        match pool.free_count() {
            Ok(free) => control.send("state", &[("free", free.to_string())]),
            Err(error) => {
                report(control, &error, 0);
                return ExitCode::FAILURE;
            }
        }
    }
    // SAFETY: the program is single-threaded here.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            let mut sink = Sink::new(None, Duration::ZERO, control).held_at(holds.receiver, 0);
            sink.fail_at = holds.fail_write_at;
            let code = match pool.receive(id, &mut sink, timeout) {
                Ok(len) => {
                    control.send(
                        "message",
                        &[
                            ("index", index.to_string()),
                            ("len", len.to_string()),
                            ("hash", format!("{:016x}", sink.hash.finish())),
                            ("id", id.to_string()),
                        ],
                    );
                    0
                }
                Err(error) => {
                    report(control, &error, sink.hash.len);
                    1
                }
            };
            std::process::exit(code);
        }
        ForkResult::Parent { child } => {
            let mut data = Progress {
                data: Pattern::new(seed, index, len),
                control,
                read: 0,
                after: None,
                hold: holds.sender,
                slow: Duration::ZERO,
                short: false,
            };
            let sent = pool.send(id, len, &mut data, timeout);
            if sent.is_ok() {
                control.send("sent", &[]);
            }
            let status = waitpid(child, None).expect("waitpid");
            if let Err(error) = sent {
                report(control, &error, 0);
                return ExitCode::FAILURE;
            }
            if status != WaitStatus::Exited(child, 0) {
                return ExitCode::FAILURE;
            }
            control.send("done", &[]);
            ExitCode::SUCCESS
        }
    }
}

fn pipe_transfer(control: &Control, seed: u64, len: u64) -> ExitCode {
    const BUFFER: usize = 64 * 1024;
    let (reader, writer) = pipe().expect("pipe");
    // SAFETY: the program is single-threaded here.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            drop(writer);
            let mut reader = File::from(reader);
            let mut hash = Fnv64::new();
            let mut buffer = vec![0u8; BUFFER];
            loop {
                match reader.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(n) => hash.update(&buffer[..n]),
                    Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(error) => panic!("reading the pipe: {error}"),
                }
            }
            let len = hash.len;
            control.send(
                "message",
                &[
                    ("index", "0".into()),
                    ("len", len.to_string()),
                    ("hash", format!("{:016x}", hash.finish())),
                ],
            );
            control.wait_for("exit");
            std::process::exit(0);
        }
        ForkResult::Parent { child } => {
            drop(reader);
            let mut writer = File::from(writer);
            control.send("ready", &[]);
            control.wait_for("go");
            let mut data = Pattern::new(seed, 0, len);
            let mut buffer = vec![0u8; BUFFER];
            loop {
                let n = data.read(&mut buffer).expect("the pattern never fails");
                if n == 0 {
                    break;
                }
                writer.write_all(&buffer[..n]).expect("writing the pipe");
            }
            drop(writer);
            waitpid(child, None).expect("waitpid");
            control.send("done", &[]);
            ExitCode::SUCCESS
        }
    }
}

fn main() -> ExitCode {
    let control = Control::start("chunked-transfer");
    // The grader may interrupt a wait with SIGUSR1: the handler does nothing, so the wait fails
    // with EINTR, as it can in any program that handles signals.
    install_noop_handler(nix::sys::signal::Signal::SIGUSR1)
        .expect("installing the SIGUSR1 handler");
    if let Some(bench) = Bench::requested(&control) {
        return bench_transfer(&control, &bench);
    }
    let ms = Duration::from_millis;
    match Args::parse().command {
        Command::Send {
            name,
            size,
            seed,
            lens,
            timeout_ms,
            progress_after,
            hold_at,
            slow_ms,
            short_reads,
        } => send(
            &control,
            &name,
            size,
            seed,
            &lens,
            ms(timeout_ms),
            Marks {
                progress_after,
                hold_at,
                slow: ms(slow_ms),
                short: short_reads,
            },
        ),
        Command::Recv {
            name,
            count,
            timeout_ms,
            save,
            slow_ms,
            hold_at,
            short_writes,
        } => recv(
            &control,
            &name,
            count,
            ms(timeout_ms),
            Writer {
                save,
                slow: ms(slow_ms),
                holds: hold_at,
                short: short_writes,
            },
        ),
        Command::Pool {
            prefix,
            count,
            size,
        } => pool(&control, &prefix, count, size),
        Command::Pair {
            prefix,
            index,
            seed,
            len,
            timeout_ms,
            hold_at,
            hold_sender_at,
            count_again,
            fail_write_at,
        } => pair(
            &control,
            &prefix,
            index,
            seed,
            len,
            ms(timeout_ms),
            PairHolds {
                receiver: hold_at,
                sender: hold_sender_at,
                count_again,
                fail_write_at,
            },
        ),
        Command::Pipe { seed, len } => pipe_transfer(&control, seed, len),
    }
}

/// The segment `cargo grade bench` measures: two slots of 1 MiB of data each.
const BENCH_SEGMENT_SIZE: usize = 2 << 20;

/// `chunked-transfer bench throughput`: the parent sends messages of the grader's sizes
/// through one segment to a forked receiver, which copies each into a buffer of its own and
/// acknowledges it with a byte on a pipe; a sample is one message sent and acknowledged.
fn bench_transfer(control: &Control, bench: &Bench) -> ExitCode {
    let timeout = Duration::from_secs(30);
    let name = &bench.names[0];
    let samples = (|| {
        let mut segment = Segment::create(name, BENCH_SEGMENT_SIZE).map_err(|e| e.to_string())?;
        let (ack_reader, ack_writer) = pipe().map_err(|e| format!("pipe: {e}"))?;
        // SAFETY: the program is single-threaded, so the child may run on after fork().
        let receiver = match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
            ForkResult::Child => {
                drop(ack_reader);
                let _ = bench.pin(Side::Peer, nix::unistd::Pid::from_raw(0));
                let mut ack = File::from(ack_writer);
                let mut opened = match Segment::open(name) {
                    Ok(segment) => segment,
                    Err(error) => {
                        eprintln!("chunked-transfer bench receiver: {error}");
                        std::process::exit(1);
                    }
                };
                let mut buffer = vec![0u8; bench.largest()];
                let _ = ack.write_all(b"o");
                for _ in bench.peer_rounds() {
                    let mut into = std::io::Cursor::new(&mut buffer[..]);
                    if let Err(error) = opened.receive(&mut into, timeout) {
                        eprintln!("chunked-transfer bench receiver: {error}");
                        std::process::exit(1);
                    }
                    if ack.write_all(b"a").is_err() {
                        std::process::exit(1);
                    }
                }
                std::process::exit(0);
            }
            ForkResult::Parent { child } => child,
        };
        drop(ack_writer);
        let mut ack = File::from(ack_reader);
        let mut byte = [0u8; 1];
        let opened = ack
            .read_exact(&mut byte)
            .map_err(|_| "the receiver could not open the segment".to_string());
        let unlinked = unlink(name).map_err(|e| e.to_string());
        let measured = opened.and(unlinked).and_then(|()| {
            bench
                .pin(Side::Timer, nix::unistd::Pid::from_raw(0))
                .map_err(|e| format!("sched_setaffinity: {e}"))?;
            let message = vec![0x5a; bench.largest()];
            bench.time(|size| {
                segment
                    .send(size as u64, &mut &message[..size], timeout)
                    .map_err(|e| e.to_string())?;
                ack.read_exact(&mut byte)
                    .map_err(|_| "the receiver stopped".to_string())
            })
        });
        drop(ack);
        let ended = waitpid(receiver, None);
        let samples = measured?;
        match ended {
            Ok(WaitStatus::Exited(_, 0)) => Ok(samples),
            other => Err(format!("the receiver ended with {other:?}")),
        }
    })();
    let ok = bench.finish(control, samples);
    control.wait_for("exit");
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
