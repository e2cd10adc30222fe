//! How a new segment's semaphores were made: the stores to their count words watched from the
//! sender's `mmap()` of the segment until its `ready`, each placed in the code that made it (the
//! C library's `sem_init()`, other code of the C library, the program's own), and their bytes
//! right after `create()`.

use ipc_labs_driver::Message;

use super::layout::{Mapped, Sem, SemInit};
use crate::engine::tracer::{Call, Field, Tracer, Watched};
use crate::engine::{Fail, Proc, Run, force, inspect};

/// The count words of the two semaphores (`empty` at offset 0, `full` at 32), watched for
/// stores.
const SEMAPHORE_COUNTS: &[Field] = &[
    Field {
        offset: 0,
        len: 8,
        loads: false,
    },
    Field {
        offset: 32,
        len: 8,
        loads: false,
    },
];

/// Where a store to a semaphore came from: the program's own code (its executable), with the
/// instruction's address, or a shared library, with the exported function whose code made it
/// (`sem_init`; `None` for an internal one, such as the C library's `memcpy()` variants).
#[derive(Debug)]
pub(super) enum StoreBy {
    Program(String, u64),
    Library(String, Option<String>),
    Unknown,
}

impl StoreBy {
    fn by_sem_init(&self) -> bool {
        matches!(self, StoreBy::Library(_, Some(function)) if function == "sem_init")
    }
}

/// Lets the sender (spawned stopped) go with its stores to the semaphores' count words
/// watched from the return of its mmap() of the `size`-byte segment (shared) until it says
/// something; returns what it said and where each store came from (none where the grader may
/// not watch).
pub(super) fn watch_semaphore_stores(
    run: &Run,
    sender: &mut Proc,
    size: usize,
) -> Result<(Message, Vec<StoreBy>), Fail> {
    let pid = sender.pid.as_raw();
    let mmap = Call::mapping_shared(size);
    let watch = Tracer::watch_returned(pid, mmap, SEMAPHORE_COUNTS)?;
    force::resume(pid)?;
    let Some(mut watch) = watch else {
        return Ok((sender.recv_any()?, Vec::new()));
    };
    let mut stores = Vec::new();
    let said = loop {
        match watch.next(sender, run.deadline())? {
            Watched::Armed => {}
            Watched::Hit => {
                // Read now: spawned stopped before its exec, it was the grader until then.
                let program = std::fs::read_link(format!("/proc/{pid}/exe"))
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                let pc = inspect::stopped_at(pid, pid);
                stores.push(match pc.map(|pc| (pc, inspect::mapped_file(pid, pc))) {
                    Some((pc, Some(file))) if file == program => StoreBy::Program(file, pc),
                    Some((pc, Some(file))) => {
                        StoreBy::Library(file, inspect::library_function_at(pid, pc))
                    }
                    _ => StoreBy::Unknown,
                });
                watch.go_on();
            }
            Watched::Said(message) => break message,
            Watched::Unavailable => {
                drop(watch);
                return Ok((sender.recv_any()?, Vec::new()));
            }
            Watched::Lost => {
                drop(watch);
                return Ok((sender.recv_any()?, stores));
            }
        }
    };
    drop(watch);
    Ok((said, stores))
}

/// Fails unless the C library's `sem_init()` initialized both semaphores' count words after
/// the segment was mapped (`sem_init()` stores each count once): not the program's own code,
/// nor other code of the C library (a copy of semaphores made elsewhere).
pub(super) fn initialized_by_library(pid: i32, stores: &[StoreBy]) -> Result<(), Fail> {
    let by_sem_init = stores.iter().filter(|s| s.by_sem_init()).count();
    if by_sem_init >= 2 || stores.is_empty() {
        return Ok(());
    }
    let by_library = stores
        .iter()
        .filter(|s| matches!(s, StoreBy::Library(..)))
        .count();
    let Some(StoreBy::Program(file, pc)) =
        stores.iter().find(|s| matches!(s, StoreBy::Program(..)))
    else {
        return copied_in(pid, stores, by_sem_init);
    };
    if by_library >= 2 {
        return copied_in(pid, stores, by_sem_init);
    }
    let by_program = stores.len() - by_library;
    let name = std::path::Path::new(file)
        .file_name()
        .map_or(file.clone(), |n| n.to_string_lossy().into_owned());
    let library = match stores.iter().find_map(|s| match s {
        StoreBy::Library(file, _) => Some(file.as_str()),
        _ => None,
    }) {
        Some(file) => format!("{by_library} from a library ({file})"),
        None => "none from the C library".into(),
    };
    Err(Fail::failed(format!(
        "with the stores to the count words of the segment's semaphores (`empty` at offset 0, \
         `full` at 32) watched from the return of the sender's mmap() of the segment until it \
         said `ready` (hardware watchpoints), create() wrote them {by_program} time(s) from the \
         program's own code (its executable {name}, just before {pc:#x}) and {library}: it \
         sets the \
         semaphores' bytes by hand instead of initializing them with sem_init(). A sem_t is \
         opaque, its layout the C library's own: sem_init(empty, 1, 2) and sem_init(full, 1, \
         0)"
    )))
}

/// Fails for stores to the count words made by the C library, but not from within
/// `sem_init()`: the semaphores were initialized elsewhere and their bytes copied in.
fn copied_in(pid: i32, stores: &[StoreBy], by_sem_init: usize) -> Result<(), Fail> {
    // Only where the grader can place sem_init()'s own code in the program.
    let placed = inspect::library_function_in(pid, c"sem_init")
        .and_then(|entry| inspect::library_function_at(pid, entry));
    if placed.as_deref() != Some("sem_init") {
        return Ok(());
    }
    let from: Vec<String> = stores
        .iter()
        .filter(|s| !s.by_sem_init())
        .map(|s| match s {
            StoreBy::Library(file, Some(function)) => format!("{function}() in {file}"),
            StoreBy::Library(file, None) => format!(
                "an internal function of {file} (such as the variants of memcpy() or memset())"
            ),
            StoreBy::Program(file, pc) => format!("the program's own code ({file}, {pc:#x})"),
            StoreBy::Unknown => "code the grader could not place".into(),
        })
        .collect();
    let elsewhere = from.len();
    let mut from = from;
    from.dedup();
    Err(Fail::failed(format!(
        "with the stores to the count words of the segment's semaphores (`empty` at offset 0, \
         `full` at 32) watched from the return of the sender's mmap() of the segment until it \
         said `ready` (hardware watchpoints), {by_sem_init} came from sem_init() and \
         {elsewhere} from elsewhere: {}. The semaphores in the segment were not initialized by sem_init() on \
         them: semaphores initialized elsewhere (on the stack, say) and copied in are not the \
         segment's (POSIX leaves a copy of a sem_t undefined). Call sem_init(empty, 1, 2) and \
         sem_init(full, 1, 0) on the segment's own semaphores",
        from.join("; ")
    )))
}

/// Fails unless the semaphores of a segment nobody has used yet are as `create()` must leave
/// them: `empty` 2 at offset 0, `full` 0 at offset 32, both process-shared.
pub(super) fn fresh_semaphores(mapped: &Mapped) -> Result<(), Fail> {
    for (sem, want) in [(Sem::Empty, 2), (Sem::Full, 0)] {
        match mapped.init_kind(sem, want) {
            SemInit::Shared => {}
            SemInit::Private => {
                return Err(Fail::failed(format!(
                    "right after create(), the segment's `{}` semaphore holds {want} but was \
                     initialized for the threads of one process (sem_init's pshared = 0): a \
                     post in one process would never wake a waiter in the other. Initialize \
                     both semaphores with pshared = 1",
                    sem.name()
                )));
            }
            SemInit::Zeros if want > 0 => {
                return Err(Fail::failed(format!(
                    "right after create(), the bytes of the segment's `{}` semaphore (at the \
                     start of the segment) are all zeros: create() must sem_init() it there, \
                     process-shared, to SLOTS (2)",
                    sem.name()
                )));
            }
            SemInit::Zeros => {
                return Err(Fail::failed(format!(
                    "right after create(), the bytes of the segment's `{}` semaphore (offset \
                     32) are all zeros, as sem_init() leaves them only with pshared = 0 (one \
                     process) or not at all: sem_init(full, 1, 0)",
                    sem.name()
                )));
            }
            SemInit::Other => {
                let (empty, full) = (mapped.value(Sem::Empty), mapped.value(Sem::Full));
                if (empty, full) != (2, 0) {
                    return Err(Fail::failed(format!(
                        "right after create(), the segment's semaphores hold empty = {empty} \
                         and full = {full}: create() must initialize `empty` (offset 0) to \
                         SLOTS (2) and `full` (offset 32) to 0, process-shared, as \
                         SegmentHeader lays them out"
                    )));
                }
            }
        }
    }
    Ok(())
}
