//! The attributes the bank's mutex was initialized with, seen where they are handed over: glibc
//! marks every robust mutex process-shared in its kind word, whatever the attribute said, so
//! the mutex in the segment cannot tell whether `PTHREAD_PROCESS_SHARED` was asked for. A
//! hardware breakpoint on `pthread_mutex_init()` in the coordinator shows the attribute itself.
//! Three more, on `pthread_cond_init()`, `pthread_mutexattr_destroy()` and
//! `pthread_condattr_destroy()`, show that the condition variable was initialized by the C
//! library (not written by hand to look so) and that both attribute objects were destroyed; and
//! the coordinator's I/O counters, from its `shm_open()` of the bank to those calls, that it
//! filled the bank through the mapping (no write through a descriptor).

use std::os::unix::fs::FileExt;
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::probe;
use super::segment::{dev_shm, stopped_after_shm_open};
use super::session::Session;
use crate::engine::inspect::IoCounters;
use crate::engine::tracer::{Breakpoint, Tracer};
use crate::engine::{Fail, Proc, force, inspect};

/// glibc's flags in a mutex attribute's word (`struct pthread_mutexattr`'s `mutexkind`).
const ATTR_PSHARED: u32 = 0x8000_0000;
const ATTR_ROBUST: u32 = 0x4000_0000;
/// glibc's flag in a condition attribute's word (`struct pthread_condattr`'s `value`).
const CONDATTR_PSHARED: u32 = 1;
/// How long the calls of `create()` are watched at most.
const WATCH_LIMIT: Duration = Duration::from_secs(10);

/// The functions watched, in the order of the breakpoints.
const FUNCTIONS: [&std::ffi::CStr; 4] = [
    c"pthread_mutex_init",
    c"pthread_cond_init",
    c"pthread_mutexattr_destroy",
    c"pthread_condattr_destroy",
];
const MUTEX_INIT: usize = 0;
const COND_INIT: usize = 1;
const MUTEXATTR_DESTROY: usize = 2;
const CONDATTR_DESTROY: usize = 3;

/// One call of a watched function: which ([`FUNCTIONS`]), its first two arguments, for an
/// init the word of its attribute (`None`: no attribute, the defaults), and the caller's I/O
/// counters then.
struct Seen {
    function: usize,
    args: [u64; 2],
    flags: Option<u32>,
    io: Option<IoCounters>,
}

/// The coordinator's calls of `pthread_mutex_init()`, `pthread_cond_init()` and the attribute
/// destroys, watched.
pub(super) struct MutexInits {
    watching: Watching<Seen>,
    /// Its I/O counters at its `shm_open()` of the bank.
    opened_io: Option<IoCounters>,
    /// Whether every one of the four functions is watched (else only what is seen is judged).
    all_watched: bool,
}

impl MutexInits {
    /// Given the program stopped before its first instruction: lets it run to its
    /// `shm_open()` of the bank (the C library is loaded by then, the mutex not yet
    /// initialized), stops it just after, sets the breakpoint, and lets it go on. `None` (the
    /// program going on unwatched) if the machine does not allow it.
    pub fn watch(proc: &mut Proc, name: &str) -> Result<Option<MutexInits>, Fail> {
        let pid = proc.pid.as_raw();
        if !stopped_after_shm_open(pid, name)? {
            return Ok(None);
        }
        // Stopped just after the call: its counters are those of the call's return.
        let opened_io = inspect::io(pid);
        let addresses = FUNCTIONS.map(|f| inspect::library_function_in(pid, f).unwrap_or(0));
        let all_watched = addresses.iter().all(|&a| a != 0);
        let breaking = match addresses[MUTEX_INIT] {
            0 => None,
            _ => Tracer::break_at_each(pid, addresses)?,
        };
        let Some(tracer) = breaking else {
            force::resume(pid)?;
            return Ok(None);
        };
        let watching = Watching::start(tracer, move |tracer, args| {
            let function = tracer.last_break();
            let attr = args[1];
            let flags = (matches!(function, MUTEX_INIT | COND_INIT) && attr != 0)
                .then(|| attribute_word(pid, attr))
                .flatten();
            Seen {
                function,
                args,
                flags,
                io: inspect::io(pid),
            }
        });
        force::resume(pid)?;
        Ok(Some(MutexInits {
            watching,
            opened_io,
            all_watched,
        }))
    }

    /// Once the program is ready: the bank's mutex (where the coordinator maps it) must have
    /// been initialized with an attribute that says `PTHREAD_PROCESS_SHARED`.
    pub fn judge(self, session: &Session) -> Result<(), Fail> {
        let seen = self.watching.finish();
        let Some(map) = probe::mappings(session.coordinator, &session.name)
            .into_iter()
            .find(|m| m.offset == 0)
        else {
            return Ok(());
        };
        let mutex = map.start + session.segment.layout.mutex_at as u64;
        let cond = map.start + session.segment.layout.cond_at as u64;
        let Some(at) = seen
            .iter()
            .position(|s| s.function == MUTEX_INIT && s.args[0] == mutex)
        else {
            // A mutex initialized elsewhere and copied into the segment: the bytes look the
            // same, but the mutex the C library initialized is not the bank's.
            if let Some(elsewhere) = seen.iter().find(|s| s.function == MUTEX_INIT) {
                return Err(initialized_elsewhere(
                    session.coordinator,
                    elsewhere.args[0],
                    mutex,
                    "pthread_mutex_init()",
                    "mutex",
                ));
            }
            if self.all_watched {
                return Err(Fail::failed(
                    "the coordinator's create() never called pthread_mutex_init() on the bank's \
                     mutex (a breakpoint at that function, set at its shm_open(), was never \
                     hit), yet the mutex in the segment says process-shared (its kind word): a \
                     mutex written by hand (zeroed, its kind word set) copies one C library's \
                     private layout and is not initialized; init_mutex() makes a robust, \
                     process-shared attribute and calls pthread_mutex_init() with it",
                ));
            }
            // Not watched: the kind word is judged.
            return Ok(());
        };
        let flags = seen[at].flags;
        if flags.is_some_and(|f| f & ATTR_PSHARED != 0) {
            judge_the_rest(self.all_watched, self.opened_io, &seen, at, cond, session)?;
            return filled_before_ready(self.opened_io, session.io_at_ready);
        }
        let given = match flags {
            None => "no attribute at all (the defaults: process-private, not robust)".to_string(),
            Some(f) if f & ATTR_ROBUST != 0 => {
                format!(
                    "an attribute with PTHREAD_MUTEX_ROBUST but not PTHREAD_PROCESS_SHARED (its flags {f:#x})"
                )
            }
            Some(f) => format!("an attribute without PTHREAD_PROCESS_SHARED (its flags {f:#x})"),
        };
        Err(Fail::failed(format!(
            "the coordinator's pthread_mutex_init() of the bank's mutex (seen with a breakpoint \
             at that function) was given {given}: glibc marks every robust mutex process-shared \
             anyway, so the mutex works here, but POSIX does not promise it, and elsewhere such \
             a mutex is private to its process (an unlock there wakes no waiter in another); \
             set pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED) on the attribute, \
             with pthread_mutexattr_setrobust(), before pthread_mutex_init()"
        )))
    }
}

/// The coordinator's `pthread_mutex_init()` (or `pthread_cond_init()`) of the bank's `what`
/// was given `address`, not the object's place `wanted` in the mapping: it was initialized
/// elsewhere (on the stack, in a local `Bank`) and copied in.
fn initialized_elsewhere(pid: i32, address: u64, wanted: u64, call: &str, what: &str) -> Fail {
    let place = match inspect::mapped_file(pid, address) {
        Some(file) => format!("memory mapped from {file}"),
        None if on_stack(pid, address) => "the coordinator's stack".to_string(),
        None => "memory that is not the bank's mapping (anonymous memory or the heap)".to_string(),
    };
    Fail::failed(format!(
        "the coordinator's {call} (seen with a breakpoint at that function) was given \
         {address:#x}, in {place}, never the bank's {what} in the mapping ({wanted:#x}): \
         create() built the {what} somewhere else and copied it into the segment; a mutex or \
         condition variable must not move once initialized (a copy is not the object the C \
         library initialized, and elsewhere than glibc an idle one may hold its own address); \
         mmap() the segment first and call init_mutex(&raw mut bank.lock) and \
         init_cond(&raw mut bank.all_done) on the bank in place"
    ))
}

/// Whether `address` lies in `pid`'s main stack.
fn on_stack(pid: i32, address: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/maps")).is_ok_and(|maps| {
        maps.lines().any(|line| {
            line.ends_with("[stack]")
                && line
                    .split_whitespace()
                    .next()
                    .and_then(|range| range.split_once('-'))
                    .and_then(|(s, e)| {
                        Some((
                            u64::from_str_radix(s, 16).ok()?,
                            u64::from_str_radix(e, 16).ok()?,
                        ))
                    })
                    .is_some_and(|(s, e)| (s..e).contains(&address))
        })
    })
}

/// No write call from the coordinator's `shm_open()` of the bank to its `ready` (its messages
/// go by `send()`, which the write counters do not count): the bank is filled through the
/// mapping, also after the mutex and condition variable are initialized.
fn filled_before_ready(opened: Option<IoCounters>, ready: Option<IoCounters>) -> Result<(), Fail> {
    let (Some(opened), Some(ready)) = (opened, ready) else {
        return Ok(());
    };
    let wrote = ready.since(opened);
    if wrote.write_calls == 0 {
        return Ok(());
    }
    Err(Fail::failed(format!(
        "between its shm_open() of the bank and its `ready` (create() and the forks), the \
         coordinator made {} write system call(s) ({} bytes; workers and the accounts are {} \
         bytes), after initializing the mutex and condition variable: it filled the bank \
         through a descriptor (a write() or pwrite() to the segment) instead of through the \
         mapping (or, if those bytes are not the bank's, it printed from inside create()); \
         set workers and the accounts in place, through the pointer to the mapped Bank",
        wrote.write_calls,
        wrote.written_bytes,
        4 + 8 * super::ACCOUNTS
    )))
}

/// With the mutex's `pthread_mutex_init()` seen (`seen[at]`): the condition variable at
/// `cond` initialized by `pthread_cond_init()` with a process-shared attribute, both
/// attribute objects destroyed after use, and no write call made since the `shm_open()`.
fn judge_the_rest(
    all_watched: bool,
    opened_io: Option<IoCounters>,
    seen: &[Seen],
    at: usize,
    cond: u64,
    session: &Session,
) -> Result<(), Fail> {
    if !all_watched {
        return Ok(());
    }
    let mutex_attr = seen[at].args[1];
    let cond_init = seen
        .iter()
        .position(|s| s.function == COND_INIT && s.args[0] == cond);
    if cond_init.is_none()
        && let Some(elsewhere) = seen.iter().find(|s| s.function == COND_INIT)
    {
        return Err(initialized_elsewhere(
            session.coordinator,
            elsewhere.args[0],
            cond,
            "pthread_cond_init()",
            "condition variable",
        ));
    }
    let Some(cond_at) = cond_init else {
        return Err(Fail::failed(
            "the coordinator's create() never called pthread_cond_init() on the bank's \
                 condition variable (a breakpoint at that function saw the mutex's \
                 pthread_mutex_init() but no pthread_cond_init() of all_done): a condition \
                 variable written by hand (zeroed, a flag set in its words) copies one C \
                 library's private layout and is not initialized; init_cond() makes a \
                 pthread_condattr_t with pthread_condattr_setpshared(PTHREAD_PROCESS_SHARED), \
                 calls pthread_cond_init(&raw mut bank.all_done, &attr) and destroys the \
                 attribute",
        ));
    };
    let cond_attr = seen[cond_at].args[1];
    if seen[cond_at]
        .flags
        .is_none_or(|f| f & CONDATTR_PSHARED == 0)
    {
        return Err(Fail::failed(format!(
            "the coordinator's pthread_cond_init() of the bank's condition variable (seen \
                 with a breakpoint at that function) was given {}: set \
                 pthread_condattr_setpshared(&attr, PTHREAD_PROCESS_SHARED) on the attribute \
                 before pthread_cond_init()",
            match seen[cond_at].flags {
                None => "no attribute at all (the defaults: process-private)".to_string(),
                Some(f) => format!("an attribute without PTHREAD_PROCESS_SHARED (its word {f:#x})"),
            }
        )));
    }
    let destroyed = |function: usize, attr: u64, after: usize| {
        seen[after..]
            .iter()
            .any(|s| s.function == function && s.args[0] == attr)
    };
    let mut kept = Vec::new();
    if mutex_attr != 0 && !destroyed(MUTEXATTR_DESTROY, mutex_attr, at) {
        kept.push("the mutex's attribute object (no pthread_mutexattr_destroy() of it)");
    }
    if cond_attr != 0 && !destroyed(CONDATTR_DESTROY, cond_attr, cond_at) {
        kept.push(
            "the condition variable's attribute object (no pthread_condattr_destroy() of it)",
        );
    }
    if !kept.is_empty() {
        return Err(Fail::failed(format!(
            "the coordinator's create() initialized the bank's mutex and condition variable \
                 but never destroyed {} (breakpoints at the two destroy functions watched \
                 every call of them): an attribute object initialized with pthread_*attr_init() is destroyed \
                 once the mutex or condition variable is initialized (some C libraries \
                 allocate in it); init_mutex() and init_cond() destroy their attribute, also \
                 when a step fails",
            kept.join(" and ")
        )));
    }
    // The bank's fields are filled through the mapping: no write call between the
    // shm_open() and the last of these calls.
    let last_io = seen.iter().rev().find_map(|s| s.io);
    if let (Some(opened), Some(last)) = (opened_io, last_io) {
        let wrote = last.since(opened);
        if wrote.write_calls > 0 {
            return Err(Fail::failed(format!(
                "between its shm_open() of the bank and its initialization of the mutex \
                     and condition variable, the coordinator's create() made {} write system \
                     call(s) ({} bytes; workers and the accounts are {} bytes): it filled the \
                     bank through a descriptor (a write() or pwrite() to the segment) instead \
                     of through the mapping (or, if those bytes are not the bank's, it \
                     printed from inside create(), which writes nothing but the mapping); \
                     mmap() the segment and set workers and the accounts in place, through \
                     the pointer",
                wrote.write_calls,
                wrote.written_bytes,
                4 + 8 * super::ACCOUNTS
            )));
        }
    }
    Ok(())
}

/// The word of the attribute at `address` in `pid` (stopped), from its memory.
fn attribute_word(pid: i32, address: u64) -> Option<u32> {
    let memory = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut word = [0u8; 4];
    memory.read_exact_at(&mut word, address).ok()?;
    Some(u32::from_ne_bytes(word))
}

/// A worker's calls of `pthread_cond_broadcast()` (in `finish()`), watched with a breakpoint:
/// at each, the condition variable it was given and the bank's owner word then (read from the
/// segment while the worker is stopped there); and its calls of `pthread_mutex_lock()` and
/// `pthread_mutex_unlock()`, in order, so that a worker with no transfer to make (whose only
/// locking is its `finish()`) shows whether it let go of the lock before broadcasting.
pub(super) struct Broadcasts {
    worker: i32,
    cond: u64,
    mutex: u64,
    watching: Watching<(usize, u64, i32)>,
}

/// The functions of [`Broadcasts`], in the order of its breakpoints.
const BROADCAST: usize = 0;
const LOCK: usize = 1;
const UNLOCK: usize = 2;

impl Broadcasts {
    /// Sets the breakpoints in `worker` (ready, waiting for its `go`). `None` if the machine does
    /// not allow it.
    pub fn watch(session: &Session, worker: i32) -> Result<Option<Broadcasts>, Fail> {
        let Some(map) = probe::mappings(worker, &session.name)
            .into_iter()
            .find(|m| m.offset == 0)
        else {
            return Ok(None);
        };
        let Some(address) = inspect::library_function_in(worker, c"pthread_cond_broadcast") else {
            return Ok(None);
        };
        let [lock, unlock] = [c"pthread_mutex_lock", c"pthread_mutex_unlock"]
            .map(|f| inspect::library_function_in(worker, f).unwrap_or(0));
        let Some(tracer) = Tracer::break_at_each(worker, [address, lock, unlock, 0])? else {
            return Ok(None);
        };
        let owner_at = (session.segment.layout.mutex_at + probe::MUTEX_OWNER_AT) as u64;
        let segment = std::fs::File::open(dev_shm(&session.name))?;
        let watching = Watching::start(tracer, move |tracer, [object, _]| {
            let mut word = [0u8; 4];
            let owner = segment
                .read_exact_at(&mut word, owner_at)
                .map(|()| i32::from_ne_bytes(word))
                .unwrap_or(-1);
            (tracer.last_break(), object, owner)
        });
        Ok(Some(Broadcasts {
            worker,
            cond: map.start + session.segment.layout.cond_at as u64,
            mutex: map.start + session.segment.layout.mutex_at as u64,
            watching,
        }))
    }

    /// Once the worker has finished: whether it called `pthread_cond_broadcast()` on the bank's
    /// `all_done` at all.
    pub fn broadcast_seen(self) -> bool {
        let cond = self.cond;
        self.watching
            .finish()
            .iter()
            .any(|&(function, object, _)| function == BROADCAST && object == cond)
    }

    /// Once the worker has finished: each broadcast of `all_done` made holding the mutex (the
    /// owner word is the worker's thread id). With `only_finish` (the worker made no
    /// transfer), the broadcast made in the one section that took the lock: no unlock of the
    /// bank's mutex before it.
    pub fn judge(self, only_finish: bool) -> Result<(), Fail> {
        let worker = self.worker;
        let seen = self.watching.finish();
        for &(function, cond, owner) in &seen {
            if function != BROADCAST || cond != self.cond || owner == worker {
                continue;
            }
            let holder = match owner {
                0 => "free".to_string(),
                -1 => continue,
                other => format!("held by thread {other}"),
            };
            return Err(Fail::failed(format!(
                "a worker (pid {worker}) called pthread_cond_broadcast(all_done) without \
                 holding the bank's mutex (its owner word, read at a breakpoint at that \
                 function, said {holder}): finish() broadcasts under the lock, finished += 1 and the \
                 broadcast both before the unlock (a broadcast after the unlock reaches a \
                 coordinator that may already have seen the count, returned and destroyed \
                 the condition variable)"
            )));
        }
        if !only_finish {
            return Ok(());
        }
        let calls: Vec<usize> = seen
            .iter()
            .filter(|&&(function, object, _)| match function {
                BROADCAST => object == self.cond,
                LOCK | UNLOCK => object == self.mutex,
                _ => false,
            })
            .map(|&(function, _, _)| function)
            .collect();
        let Some(broadcast) = calls.iter().position(|&f| f == BROADCAST) else {
            return Ok(());
        };
        let locks = calls[..broadcast].iter().filter(|&&f| f == LOCK).count();
        if locks >= 1 && calls[..broadcast].contains(&UNLOCK) {
            let said: Vec<&str> = calls
                .iter()
                .map(|&f| match f {
                    BROADCAST => "broadcast",
                    LOCK => "lock",
                    _ => "unlock",
                })
                .collect();
            return Err(Fail::failed(format!(
                "a worker (pid {worker}) with no transfer to make, whose finish() was all it \
                 did, unlocked the bank's mutex before it broadcast all_done (breakpoints at \
                 pthread_mutex_lock(), pthread_mutex_unlock() and pthread_cond_broadcast() \
                 saw: {}): finish() is one critical section, lock; finished += 1; broadcast; \
                 unlock: split in two, a worker that dies or stops between them has counted \
                 itself without waking anyone, and the coordinator sleeps on though \
                 finished + dead reached workers",
                said.join(", ")
            )));
        }
        Ok(())
    }
}

/// The coordinator's calls of `pthread_cond_destroy()`, `pthread_mutex_destroy()` and
/// `shm_unlink()` (in `destroy()`), watched with breakpoints: which function, and the object
/// (the name) it was given.
pub(super) struct Destroys {
    cond: u64,
    mutex: u64,
    watching: Watching<(usize, u64)>,
}

impl Destroys {
    /// Sets the breakpoints in the coordinator (ready, waiting for the workers). `None` if the
    /// machine does not allow it.
    pub fn watch(session: &Session) -> Result<Option<Destroys>, Fail> {
        let pid = session.coordinator;
        let Some(map) = probe::mappings(pid, &session.name)
            .into_iter()
            .find(|m| m.offset == 0)
        else {
            return Ok(None);
        };
        let [cond_destroy, mutex_destroy] = super::teardown::DESTROYS;
        let functions = [cond_destroy, mutex_destroy, c"shm_unlink"];
        let Some(tracer) = Tracer::break_at_functions(pid, &functions)? else {
            return Ok(None);
        };
        let watching = Watching::start(tracer, |tracer, [object, _]| (tracer.last_break(), object));
        Ok(Some(Destroys {
            cond: map.start + session.segment.layout.cond_at as u64,
            mutex: map.start + session.segment.layout.mutex_at as u64,
            watching,
        }))
    }

    /// Once the coordinator has said `closed`: both objects were destroyed by the C library's
    /// own calls (a flag set by hand makes the bytes look destroyed, and skips what the call
    /// does: wait for the waiters still on the condition variable), and the name, gone, was
    /// removed by `shm_unlink()`.
    pub fn judge(self) -> Result<(), Fail> {
        let seen = self.watching.finish();
        let called = |function: usize, object: u64| seen.contains(&(function, object));
        if !seen.iter().any(|&(function, _)| function == 2) {
            return Err(Fail::failed(
                "the coordinator's destroy() never called shm_unlink() (a breakpoint at it \
                 watched the coordinator from its `ready` to its `closed`), yet the segment's \
                 name is gone: it was removed another way, such as an unlink() of the file in \
                 /dev/shm, where glibc happens to keep its shared memory objects; the name \
                 shm_open() made is removed with shm_unlink()",
            ));
        }
        let missing: Vec<&str> = [
            (!called(0, self.cond)).then_some("pthread_cond_destroy() of all_done"),
            (!called(1, self.mutex)).then_some("pthread_mutex_destroy() of the lock"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(Fail::failed(format!(
            "the coordinator's destroy() never called {} (breakpoints at pthread_cond_destroy() \
             and pthread_mutex_destroy() watched it from its `ready` to its `closed`), though \
             the segment looked destroyed: writing a C library's \"destroyed\" flag by hand \
             copies its private layout and skips what the call does (pthread_cond_destroy() \
             waits for the waiters still on the condition variable); destroy() calls \
             pthread_cond_destroy(), pthread_mutex_destroy(), munmap() and shm_unlink()",
            missing.join(" nor ")
        )))
    }
}

/// A tracer's breakpoints watched on a thread of the grader's until [`Watching::finish`] (or
/// [`WATCH_LIMIT`]): at each hit, `look` reads what it needs while the program is stopped there.
pub(super) struct Watching<T> {
    seen: Receiver<T>,
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl<T: Send + 'static> Watching<T> {
    pub(super) fn start(
        mut tracer: Tracer,
        mut look: impl FnMut(&Tracer, [u64; 2]) -> T + Send + 'static,
    ) -> Watching<T> {
        let (seen_tx, seen) = channel();
        let (stop, stopped) = channel::<()>();
        let thread = std::thread::spawn(move || {
            let until = Instant::now() + WATCH_LIMIT;
            while Instant::now() < until {
                if !matches!(stopped.try_recv(), Err(TryRecvError::Empty)) {
                    break;
                }
                match tracer.next_break(Instant::now() + Duration::from_millis(5)) {
                    Ok(None | Some(Breakpoint::Armed)) => {}
                    Ok(Some(Breakpoint::At(args))) => {
                        let _ = seen_tx.send(look(&tracer, args));
                        tracer.go_on();
                    }
                    _ => break,
                }
            }
            // Dropped here: the breakpoints are cleared and the program let go.
            drop(tracer);
        });
        Watching { seen, stop, thread }
    }

    /// Stops watching; what was seen, in order.
    pub(super) fn finish(self) -> Vec<T> {
        let _ = self.stop.send(());
        let _ = self.thread.join();
        self.seen.try_iter().collect()
    }
}
