//! The attributes the bank's mutex was initialized with, seen where they are handed over: glibc
//! marks every robust mutex process-shared in its kind word, whatever the attribute said, so
//! the mutex in the segment cannot tell whether `PTHREAD_PROCESS_SHARED` was asked for. A
//! hardware breakpoint on `pthread_mutex_init()` in the coordinator shows the attribute itself.

use std::os::unix::fs::FileExt;
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::probe;
use super::segment::dev_shm;
use super::session::Session;
use crate::engine::tracer::{Action, Breakpoint, Call, Match, Tracer};
use crate::engine::{Fail, Proc, force, inspect};

/// glibc's flags in a mutex attribute's word (`struct pthread_mutexattr`'s `mutexkind`).
const ATTR_PSHARED: u32 = 0x8000_0000;
const ATTR_ROBUST: u32 = 0x4000_0000;
/// How long the calls of `create()` are watched at most.
const WATCH_LIMIT: Duration = Duration::from_secs(10);

/// The coordinator's calls of `pthread_mutex_init()`, watched: each one's mutex and the flags
/// of its attribute (`None`: no attribute, the defaults).
pub(super) struct MutexInits {
    seen: Receiver<(u64, Option<u32>)>,
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl MutexInits {
    /// Given the program stopped before its first instruction: lets it run to its
    /// `shm_open()` of the bank (the C library is loaded by then, the mutex not yet
    /// initialized), stops it just after, sets the breakpoint, and lets it go on. `None` (the
    /// program going on unwatched) if the machine does not allow it.
    pub fn watch(proc: &mut Proc, name: &str) -> Result<Option<MutexInits>, Fail> {
        let pid = proc.pid.as_raw();
        // The path a glibc shm_open() opens, kept for the life of the grader (a few bytes a run).
        let opened: &'static str = dev_shm(name).display().to_string().leak();
        let opening = Call {
            number: libc::SYS_openat,
            matching: Match::Path(opened),
        };
        let Some(mut tracer) = Tracer::attach(pid, opening, Action::Hold)? else {
            force::resume(pid)?;
            return Ok(None);
        };
        force::resume(pid)?;
        if !tracer.held_before(Instant::now() + Duration::from_secs(5))? {
            return Ok(None);
        }
        // Stopped as it comes back from the call, once the tracer has let go.
        kill(Pid::from_raw(pid), Signal::SIGSTOP)
            .map_err(|e| Fail::Grader(format!("SIGSTOP: {e}")))?;
        tracer.release();
        let until = Instant::now() + Duration::from_secs(1);
        while inspect::view(pid).is_some_and(|v| v.state != 'T') && Instant::now() < until {
            std::thread::sleep(Duration::from_micros(200));
        }
        let function = inspect::library_function_in(pid, c"pthread_mutex_init");
        let breaking = match function {
            Some(address) => Tracer::break_at(pid, address)?,
            None => None,
        };
        let Some(mut tracer) = breaking else {
            force::resume(pid)?;
            return Ok(None);
        };
        let (seen_tx, seen) = channel();
        let (stop, stopped) = channel::<()>();
        let thread = std::thread::spawn(move || {
            let until = Instant::now() + WATCH_LIMIT;
            while Instant::now() < until {
                if !matches!(stopped.try_recv(), Err(TryRecvError::Empty)) {
                    break;
                }
                let next = tracer.next_break(Instant::now() + Duration::from_millis(5));
                match next {
                    Ok(None | Some(Breakpoint::Armed)) => {}
                    Ok(Some(Breakpoint::At([mutex, attr]))) => {
                        let flags = (attr != 0).then(|| attribute_word(pid, attr)).flatten();
                        let _ = seen_tx.send((mutex, flags));
                        tracer.go_on();
                    }
                    _ => break,
                }
            }
            // Dropped here: the breakpoint is cleared and the program let go.
            drop(tracer);
        });
        force::resume(pid)?;
        Ok(Some(MutexInits { seen, stop, thread }))
    }

    /// Once the program is ready: the bank's mutex (where the coordinator maps it) must have
    /// been initialized with an attribute that says `PTHREAD_PROCESS_SHARED`.
    pub fn judge(self, session: &Session) -> Result<(), Fail> {
        let _ = self.stop.send(());
        let _ = self.thread.join();
        let Some(map) = probe::mappings(session.coordinator, &session.name)
            .into_iter()
            .find(|m| m.offset == 0)
        else {
            return Ok(());
        };
        let mutex = map.start + session.segment.layout.mutex_at as u64;
        let Some((_, flags)) = self.seen.try_iter().find(|(m, _)| *m == mutex) else {
            // Not seen (initialized another way, or not watched): the kind word is judged.
            return Ok(());
        };
        if flags.is_some_and(|f| f & ATTR_PSHARED != 0) {
            return Ok(());
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

/// The word of the attribute at `address` in `pid` (stopped), from its memory.
fn attribute_word(pid: i32, address: u64) -> Option<u32> {
    let memory = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut word = [0u8; 4];
    memory.read_exact_at(&mut word, address).ok()?;
    Some(u32::from_ne_bytes(word))
}
