//! How a new segment's semaphores were made: the stores to their count words watched from the
//! sender's `mmap()` of the segment until its `ready`, each placed in the code that made it (the
//! C library's `sem_init()`, other code of the C library, the program's own), and their bytes
//! right after `create()`; and, for a pool, the calls of `sem_init()` on each of its segments.

use ipc_labs_driver::Message;

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use super::layout::{MIN_SEGMENT, Mapped, Sem, SemInit};
use super::observe::{dev_shm, segment_mappings};
use super::pool::{PoolNames, destroy_pool, pool_args, pool_ready};
use crate::engine::tracer::{Breakpoint, Call, Field, Tracer, Watched};
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

/// A pool of [`POOL_WATCHED`] segments created with a breakpoint at the C library's
/// `sem_init()` (ptrace): each segment's two semaphores (offsets 0 and 32 of the object) must
/// be made by `sem_init()` on them, not copied from a segment made before.
pub(super) fn pool_semaphores_by_sem_init(run: &mut Run) -> Result<(), Fail> {
    let names = PoolNames::new(run, "initialized", POOL_WATCHED);
    let args = pool_args(&names, MIN_SEGMENT)?;
    let mut pool = run.spawn_stopped(&args)?;
    pool.set_roles(|_| "the pool's creator".into());
    let pid = pool.pid.as_raw();
    let tracer = Tracer::break_from_main(&mut pool, &[c"sem_init"])?;
    // Per segment, the offsets in it that sem_init() was called on.
    let mut initialized: Vec<Vec<u64>> = vec![Vec::new(); POOL_WATCHED];
    if let Some(mut tracer) = tracer {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            match tracer.next_break(Instant::now() + Duration::from_millis(5))? {
                Some(Breakpoint::At([semaphore, _])) => {
                    if let Some((id, offset)) = segment_offset(pid, &names, semaphore) {
                        initialized[id].push(offset);
                    }
                    tracer.go_on();
                }
                Some(Breakpoint::Armed) => {}
                Some(Breakpoint::Lost | Breakpoint::Unavailable) => {
                    initialized.clear();
                    break;
                }
                None => {
                    if let Some(said) = pool.recv_before(Instant::now())? {
                        pool.put_back(said);
                        break;
                    }
                    if Instant::now() >= until {
                        break;
                    }
                }
            }
        }
    } else {
        initialized.clear();
    }
    pool_ready(&mut pool, &names, MIN_SEGMENT)?;
    let skipped: Vec<String> = initialized
        .iter()
        .enumerate()
        .filter(|(_, offsets)| !(offsets.contains(&0) && offsets.contains(&32)))
        .map(|(id, offsets)| format!("segment {id} ({} call(s) on it)", offsets.len()))
        .collect();
    let made_by_sem_init = initialized.iter().any(|offsets| offsets.len() >= 2);
    if !skipped.is_empty() && made_by_sem_init {
        return Err(Fail::failed(format!(
            "the creator of a pool of {POOL_WATCHED} segments of {MIN_SEGMENT} bytes ({}), \
             with a breakpoint at the C library's sem_init() (ptrace), called it on the \
             semaphores of some segments but not on those of {}: their `empty` and `full` were \
             made otherwise (a copy of another segment's fresh semaphores is not an \
             initialization: a sem_t may hold more than its bytes). Every segment is made by \
             Segment::create: sem_init(empty, 1, 2) and sem_init(full, 1, 0) on its own \
             semaphores",
            names.prefix,
            skipped.join(", ")
        )));
    }
    destroy_pool(
        &mut pool,
        &names,
        "whose segments' semaphores were watched",
        POOL_WATCHED,
    )
}

/// Segments in the pool whose initialization is watched: the first, and two made after it.
const POOL_WATCHED: usize = 3;

/// Which segment of the pool `names` the address `addr` of `pid` lies in (its id), and at
/// which offset of the object.
fn segment_offset(pid: i32, names: &PoolNames, addr: u64) -> Option<(usize, u64)> {
    names.segments.iter().enumerate().find_map(|(id, name)| {
        let inode = std::fs::metadata(dev_shm(name)).ok()?.ino();
        segment_mappings(pid, inode)
            .ok()?
            .into_iter()
            .find(|(start, end, _)| (*start..*end).contains(&addr))
            .map(|(start, _, offset)| (id, addr - start + offset))
    })
}
