//! The posix-shm program. The grader runs it; you can too:
//!
//! ```text
//! cargo run -p posix-shm -- open --name /demo --create --size 10000
//! ls -l /dev/shm/demo
//! ```
//!
//! Run by hand it creates or opens the table, maps it, says how big it is, and closes it (it
//! does not unlink it: `rm /dev/shm/demo`). Run by the grader it says `mapped` and then does
//! what the grader's `cmd` messages say, one at a time:
//!
//! - `op=write offset=O file=F`: writes F's bytes into the table at O;
//! - `op=read offset=O len=L file=F`: writes L bytes of the table from O to F;
//! - `op=open name=N`: opens the table N as well ([`SharedTable::open`]) and keeps it mapped
//!   beside the first one, as table 1 (the next as table 2, ...), answering with its `len`;
//! - `op=unlink`: unlinks the table's name (the mapping stays);
//! - `op=close`: unmaps the table, answers, waits for `exit` and exits.
//!
//! A `write` or `read` with `table=K` works on table K (0, the table the program started with,
//! when not given). Each answer is `done`, or `failed` with `kind=` from [`TableError::kind`].
//! Keep this file as it is.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ipc_labs_driver::bench::{Bench, CopyReader};
use ipc_labs_driver::{Control, Message};
use posix_shm::{SharedTable, TableError, unlink};

/// Creates or opens a POSIX shared memory table and works on it.
#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Maps the table `name`, creating it first with `--create`.
    Open {
        /// The object's name: `/` and up to 254 more characters, no other `/`.
        #[arg(long)]
        name: String,
        /// Create the object (it must not exist).
        #[arg(long, requires = "size")]
        create: bool,
        /// The size of the object to create, in bytes.
        #[arg(long)]
        size: Option<usize>,
    },
}

/// Reports `error` to the grader and on stderr.
fn report(control: &Control, error: &TableError) {
    eprintln!("posix-shm: {error}");
    control.send(
        "failed",
        &[
            ("kind", error.kind().to_string()),
            ("error", error.to_string()),
        ],
    );
}

/// A numeric field of a command; a missing or bad one is the grader's mistake.
fn number(message: &Message, key: &str) -> usize {
    message
        .get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("the grader's command has no number `{key}`"))
}

fn main() -> ExitCode {
    let control = Control::start("posix-shm");
    if let Some(bench) = Bench::requested(&control) {
        return bench_table(&control, &bench);
    }
    let Command::Open { name, create, size } = Args::parse().command;
    let opened = match (create, size) {
        (true, Some(size)) => SharedTable::create(&name, size),
        _ => SharedTable::open(&name),
    };
    let table = match opened {
        Ok(table) => table,
        Err(error) => {
            report(&control, &error);
            return ExitCode::FAILURE;
        }
    };
    control.send("mapped", &[("len", table.len().to_string())]);
    if !control.is_graded() {
        println!("{name}: {} bytes mapped", table.len());
        return match table.close() {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                report(&control, &error);
                ExitCode::FAILURE
            }
        };
    }
    // Table 0 is the one the program started with; `op=open` adds the others.
    let mut tables = vec![table];
    loop {
        let command = control.wait_for("cmd");
        let file = command.get("file").unwrap_or_default().to_string();
        let which = command
            .get("table")
            .map_or(0, |_| number(&command, "table"));
        let outcome = match command.get("op").unwrap_or_default() {
            "write" => {
                let data = std::fs::read(&file).expect("the grader's data file");
                tables[which]
                    .write(number(&command, "offset"), &data)
                    .map(|()| Vec::new())
            }
            "read" => {
                let mut buf = vec![0u8; number(&command, "len")];
                tables[which]
                    .read(number(&command, "offset"), &mut buf)
                    .map(|()| {
                        std::fs::write(&file, &buf).expect("writing the grader's file");
                        Vec::new()
                    })
            }
            "open" => {
                let other = command
                    .get("name")
                    .expect("the grader's command has no `name`");
                SharedTable::open(other).map(|table| {
                    let len = table.len().to_string();
                    tables.push(table);
                    vec![("len", len)]
                })
            }
            "unlink" => unlink(&name).map(|()| Vec::new()),
            "close" => {
                return match tables.swap_remove(0).close() {
                    Ok(()) => {
                        // Still running, so that the grader sees the munmap itself, not the
                        // exit's.
                        control.send("done", &[]);
                        control.wait_for("exit");
                        ExitCode::SUCCESS
                    }
                    Err(error) => {
                        report(&control, &error);
                        ExitCode::FAILURE
                    }
                };
            }
            other => panic!("the grader sent an unknown command {other:?}"),
        };
        match outcome {
            Ok(fields) => control.send("done", &fields),
            Err(error) => report(&control, &error),
        }
    }
}

/// `posix-shm bench table`: times the bytes of each size written into a table with
/// [`SharedTable::write`] and read out by a forked process that opened it with
/// [`SharedTable::read`] (a copy into the mapping, a copy out of it), for `cargo grade bench`.
/// The table is made and mapped once, before: the mapping is a one-time cost. A byte on a pipe
/// tells the reader that the bytes are there, and one back says that it holds them.
fn bench_table(control: &Control, bench: &Bench) -> ExitCode {
    let name = &bench.names[0];
    let samples = SharedTable::create(name, bench.largest())
        .map_err(|e| e.to_string())
        .and_then(|mut table| {
            let measured = table_rounds(bench, &mut table);
            let unlinked = unlink(name).map_err(|e| e.to_string());
            let closed = table.close().map_err(|e| e.to_string());
            let samples = measured?;
            unlinked.and(closed).map(|()| samples)
        });
    let ok = bench.finish(control, samples);
    control.wait_for("exit");
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The rounds of [`bench_table`]: the writer's samples, a forked reader's copies.
fn table_rounds(bench: &Bench, table: &mut SharedTable) -> Result<Vec<(usize, u64)>, String> {
    let message = vec![0x5a; bench.largest()];
    let open_reader = || {
        SharedTable::open(&bench.names[0])
            .map(|table| TableReader {
                table,
                buffer: vec![0u8; bench.largest()],
            })
            .map_err(|e| e.to_string())
    };
    // SAFETY: the program is single-threaded.
    unsafe {
        bench.time_copies(open_reader, |size| {
            table.write(0, &message[..size]).map_err(|e| e.to_string())
        })
    }
}

/// The reader of [`bench_table`]: copies the bytes out each time it is told to.
struct TableReader {
    table: SharedTable,
    buffer: Vec<u8>,
}

impl CopyReader for TableReader {
    fn copy_out(&mut self, size: usize) -> Result<(), String> {
        self.table
            .read(0, &mut self.buffer[..size])
            .map_err(|e| e.to_string())?;
        // The bytes count as used: the copy is what is timed.
        std::hint::black_box(&self.buffer);
        Ok(())
    }

    fn close(self) -> Result<(), String> {
        self.table.close().map_err(|e| e.to_string())
    }
}
