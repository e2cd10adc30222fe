//! The baselines: the same measurements done with the raw system calls in a few lines each, by
//! the grader's own binary started as `cargo-grade bench --baseline KIND` (through the engine,
//! like a lab program, and speaking the same `bench` protocol). Each forks its peer, so that
//! both sides are real processes, pinned as the grader says.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::ValueEnum;
use ipc_labs_driver::Control;
use ipc_labs_driver::bench::{Bench, Side};
use nix::sys::time::TimeSpec;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::time::{ClockId, clock_gettime};
use nix::unistd::{ForkResult, Pid, fork};

/// A baseline's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Baseline {
    /// Two pipes; the peer answers each message with its first 64 bytes at most.
    Pipe,
    /// A Unix stream socket pair, answered the same way.
    Unix,
    /// A TCP connection on loopback (TCP_NODELAY), answered the same way.
    Tcp,
    /// Two POSIX message queues, 64-byte messages back and forth.
    Mqueue,
    /// Two named POSIX semaphores posted back and forth.
    Semaphore,
    /// The same, each wait with a timeout (`sem_timedwait`, 100 ms ahead), as a wait that must
    /// notice a dead peer does.
    SemaphoreTimed,
    /// Three process-shared, robust pthread mutexes in shared memory, a lock handed to the
    /// peer and back as shared-mutex's benchmark hands it.
    Mutex,
    /// A counter in shared memory that each side spins on, then bumps.
    Spin,
    /// memcpy() between two buffers of one process.
    Memcpy,
}

impl Baseline {
    /// The name used on the command line and in reports (`pipe`, `spin`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Baseline::Pipe => "pipe",
            Baseline::Unix => "unix",
            Baseline::Tcp => "tcp",
            Baseline::Mqueue => "mqueue",
            Baseline::Semaphore => "semaphore",
            Baseline::SemaphoreTimed => "semaphore-timed",
            Baseline::Mutex => "mutex",
            Baseline::Spin => "spin",
            Baseline::Memcpy => "memcpy",
        }
    }
}

/// The most bytes a peer sends back: a round trip's answer, or a transfer's acknowledgement.
const ANSWER: usize = 64;

/// `cargo-grade bench --baseline KIND`: receives the grader's plan, measures, reports.
pub fn serve(kind: Baseline) -> ExitCode {
    let control = Control::start("baseline");
    let bench = Bench::receive(&control, kind.name());
    let samples = match kind {
        Baseline::Pipe => pipes(&bench),
        Baseline::Unix => UnixStream::pair()
            .map_err(|e| format!("socketpair: {e}"))
            .and_then(|(a, b)| streams(&bench, a, b)),
        Baseline::Tcp => tcp(&bench),
        Baseline::Mqueue => queues(&bench),
        Baseline::Semaphore => semaphores(&bench, None),
        Baseline::SemaphoreTimed => semaphores(&bench, Some(Duration::from_millis(100))),
        Baseline::Mutex => mutexes(&bench),
        Baseline::Spin => spin(&bench),
        Baseline::Memcpy => memcpy(&bench),
    };
    let ok = bench.finish(&control, samples);
    control.wait_for("exit");
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

type Samples = Result<Vec<(usize, u64)>, String>;

/// Forks the peer, which runs `peer` pinned to its CPU and exits with its result; the parent
/// pins itself, runs `timer`, and waits for the peer.
fn with_peer(
    bench: &Bench,
    peer: impl FnOnce() -> Result<(), String>,
    timer: impl FnOnce() -> Samples,
) -> Samples {
    // SAFETY: the baseline's process is single-threaded here (the grader's binary started anew);
    // the child runs `peer` and exits without returning.
    let child = match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            let code = match bench
                .pin(Side::Peer, Pid::from_raw(0))
                .map_err(|e| format!("sched_setaffinity: {e}"))
                .and_then(|()| peer())
            {
                Ok(()) => 0,
                Err(error) => {
                    eprintln!("baseline peer: {error}");
                    1
                }
            };
            std::process::exit(code);
        }
        ForkResult::Parent { child } => {
            // What the peer's closure owns (a pipe's write end, say) is the peer's alone.
            drop(peer);
            child
        }
    };
    let samples = bench
        .pin(Side::Timer, Pid::from_raw(0))
        .map_err(|e| format!("sched_setaffinity: {e}"))
        .and_then(|()| timer());
    let ended = waitpid(child, None);
    let samples = samples?;
    match ended {
        Ok(WaitStatus::Exited(_, 0)) => Ok(samples),
        other => Err(format!("the peer ended with {other:?}")),
    }
}

/// Round trips over a stream: the timer writes a message, the peer reads it whole and answers
/// with its first [`ANSWER`] bytes at most.
fn streams(
    bench: &Bench,
    mut timer_end: impl Read + Write,
    mut peer_end: impl Read + Write,
) -> Samples {
    let largest = bench.largest().max(1);
    with_peer(
        bench,
        || {
            let mut buffer = vec![0u8; largest];
            for size in bench.peer_rounds() {
                peer_end
                    .read_exact(&mut buffer[..size])
                    .map_err(|e| format!("read: {e}"))?;
                peer_end
                    .write_all(&buffer[..size.min(ANSWER)])
                    .map_err(|e| format!("write: {e}"))?;
            }
            Ok(())
        },
        || {
            let message = vec![0x5au8; largest];
            let mut answer = [0u8; ANSWER];
            bench.time(|size| {
                timer_end
                    .write_all(&message[..size])
                    .map_err(|e| format!("write: {e}"))?;
                timer_end
                    .read_exact(&mut answer[..size.min(ANSWER)])
                    .map_err(|e| format!("read: {e}"))
            })
        },
    )
}

/// Two pipes joined into one stream for each side.
struct PipePair {
    reads: std::fs::File,
    writes: std::fs::File,
}

impl Read for PipePair {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.reads.read(buf)
    }
}

impl Write for PipePair {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writes.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn pipes(bench: &Bench) -> Samples {
    let (peer_reads, timer_writes) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
    let (timer_reads, peer_writes) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
    let timer = PipePair {
        reads: std::os::fd::OwnedFd::from(timer_reads).into(),
        writes: std::os::fd::OwnedFd::from(timer_writes).into(),
    };
    let peer = PipePair {
        reads: std::os::fd::OwnedFd::from(peer_reads).into(),
        writes: std::os::fd::OwnedFd::from(peer_writes).into(),
    };
    streams(bench, timer, peer)
}

fn tcp(bench: &Bench) -> Samples {
    let listener =
        std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(|e| format!("bind: {e}"))?;
    let address = listener
        .local_addr()
        .map_err(|e| format!("local_addr: {e}"))?;
    let client = std::net::TcpStream::connect(address).map_err(|e| format!("connect: {e}"))?;
    let (server, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
    for stream in [&client, &server] {
        stream
            .set_nodelay(true)
            .map_err(|e| format!("TCP_NODELAY: {e}"))?;
    }
    streams(bench, client, server)
}

fn queues(bench: &Bench) -> Samples {
    use nix::mqueue::{MQ_OFlag, MqAttr, mq_close, mq_open, mq_receive, mq_send, mq_unlink};
    use nix::sys::stat::Mode;
    let attr = MqAttr::new(0, 1, ANSWER as _, 0);
    let open = |name: &str| {
        mq_open(
            name,
            MQ_OFlag::O_CREAT | MQ_OFlag::O_EXCL | MQ_OFlag::O_RDWR,
            Mode::S_IRUSR | Mode::S_IWUSR,
            Some(&attr),
        )
        .map_err(|e| format!("mq_open {name}: {e}"))
    };
    let there = open(&bench.names[0])?;
    let back = open(&bench.names[1]);
    let _ = mq_unlink(bench.names[0].as_str());
    let _ = mq_unlink(bench.names[1].as_str());
    let back = back?;
    let samples = with_peer(
        bench,
        || {
            let mut buffer = [0u8; ANSWER];
            let mut priority = 0;
            for _ in bench.peer_rounds() {
                let n = mq_receive(&there, &mut buffer, &mut priority)
                    .map_err(|e| format!("mq_receive: {e}"))?;
                mq_send(&back, &buffer[..n], 0).map_err(|e| format!("mq_send: {e}"))?;
            }
            Ok(())
        },
        || {
            let message = [0x5au8; ANSWER];
            let mut buffer = [0u8; ANSWER];
            let mut priority = 0;
            bench.time(|size| {
                mq_send(&there, &message[..size.min(ANSWER)], 0)
                    .map_err(|e| format!("mq_send: {e}"))?;
                mq_receive(&back, &mut buffer, &mut priority)
                    .map(drop)
                    .map_err(|e| format!("mq_receive: {e}"))
            })
        },
    );
    let _ = mq_close(there);
    let _ = mq_close(back);
    samples
}

/// A named POSIX semaphore (not in nix), closed on drop.
struct Semaphore(*mut libc::sem_t);

impl Semaphore {
    fn create(name: &str) -> Result<Semaphore, String> {
        let c_name = std::ffi::CString::new(name).map_err(|e| e.to_string())?;
        // SAFETY: a valid C string; the mode and the initial value are passed as sem_open's
        // variadic arguments require (unsigned int).
        let sem = unsafe {
            libc::sem_open(
                c_name.as_ptr(),
                libc::O_CREAT | libc::O_EXCL,
                0o600 as libc::c_uint,
                0 as libc::c_uint,
            )
        };
        // SAFETY: a valid C string; the name is not needed once both processes hold it.
        unsafe { libc::sem_unlink(c_name.as_ptr()) };
        if sem == libc::SEM_FAILED {
            return Err(format!(
                "sem_open {name}: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(Semaphore(sem))
    }

    fn post(&self) -> Result<(), String> {
        // SAFETY: an open semaphore.
        match unsafe { libc::sem_post(self.0) } {
            0 => Ok(()),
            _ => Err(format!("sem_post: {}", std::io::Error::last_os_error())),
        }
    }

    /// Waits; with `timeout`, each wait is a `sem_timedwait` that long ahead (repeated until
    /// the post comes).
    fn wait(&self, timeout: Option<Duration>) -> Result<(), String> {
        loop {
            let waited = match timeout {
                // SAFETY: an open semaphore.
                None => unsafe { libc::sem_wait(self.0) },
                Some(timeout) => {
                    let now = clock_gettime(ClockId::CLOCK_REALTIME)
                        .map_err(|e| format!("clock_gettime: {e}"))?;
                    let deadline = now + TimeSpec::from_duration(timeout);
                    // SAFETY: an open semaphore and a valid timespec.
                    unsafe { libc::sem_timedwait(self.0, deadline.as_ref()) }
                }
            };
            if waited == 0 {
                return Ok(());
            }
            let error = std::io::Error::last_os_error();
            let again = [Some(libc::EINTR), Some(libc::ETIMEDOUT)];
            if !again.contains(&error.raw_os_error()) {
                return Err(format!("sem_wait: {error}"));
            }
        }
    }
}

impl Drop for Semaphore {
    fn drop(&mut self) {
        // SAFETY: an open semaphore, closed once.
        unsafe { libc::sem_close(self.0) };
    }
}

fn semaphores(bench: &Bench, timeout: Option<Duration>) -> Samples {
    let there = Semaphore::create(&bench.names[0])?;
    let back = Semaphore::create(&bench.names[1])?;
    with_peer(
        bench,
        || {
            for _ in bench.peer_rounds() {
                there.wait(timeout)?;
                back.post()?;
            }
            Ok(())
        },
        || {
            bench.time(|_| {
                there.post()?;
                back.wait(timeout)
            })
        },
    )
}

/// A fresh shared anonymous mapping of `bytes` (zeroed), kept for the life of the process:
/// both sides inherit it.
fn shared_mapping(bytes: usize) -> Result<std::ptr::NonNull<std::ffi::c_void>, String> {
    use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous};
    let length = std::num::NonZeroUsize::new(bytes).ok_or("an empty mapping")?;
    // SAFETY: a new mapping, which nothing else refers to.
    unsafe {
        mmap_anonymous(
            None,
            length,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED,
        )
    }
    .map_err(|e| format!("mmap: {e}"))
}

/// A pthread function's result: they return the error number.
fn pthread(call: &str, rc: libc::c_int) -> Result<(), String> {
    match rc {
        0 => Ok(()),
        libc::EOWNERDEAD => Err(format!("{call}: the other side died holding the lock")),
        errno => Err(format!("{call}: {}", nix::errno::Errno::from_raw(errno))),
    }
}

/// Three process-shared, robust pthread mutexes (as shared-mutex's must be) in shared memory,
/// each at the start of a page of its own, as each of the lab's three banks is.
#[derive(Clone, Copy)]
struct Mutexes(*mut libc::pthread_mutex_t);

/// How far apart the mutexes lie.
const PAGE: usize = 4096;

impl Mutexes {
    fn new() -> Result<Mutexes, String> {
        let mutexes = shared_mapping(3 * PAGE)?
            .as_ptr()
            .cast::<libc::pthread_mutex_t>();
        let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        let attr = attr.as_mut_ptr();
        // SAFETY: the attribute is initialized before any other use and destroyed after; the
        // mutexes lie in the fresh mapping, which no process uses yet.
        unsafe {
            pthread("pthread_mutexattr_init", libc::pthread_mutexattr_init(attr))?;
            let initialized = pthread(
                "pthread_mutexattr_setpshared",
                libc::pthread_mutexattr_setpshared(attr, libc::PTHREAD_PROCESS_SHARED),
            )
            .and_then(|()| {
                pthread(
                    "pthread_mutexattr_setrobust",
                    libc::pthread_mutexattr_setrobust(attr, libc::PTHREAD_MUTEX_ROBUST),
                )
            })
            .and_then(|()| {
                (0..3).try_for_each(|i| {
                    pthread(
                        "pthread_mutex_init",
                        libc::pthread_mutex_init(mutexes.byte_add(i * PAGE), attr),
                    )
                })
            });
            libc::pthread_mutexattr_destroy(attr);
            initialized?;
        }
        Ok(Mutexes(mutexes))
    }

    /// Locks mutex `i` (modulo 3).
    fn lock(self, i: usize) -> Result<(), String> {
        // SAFETY: an initialized mutex in a mapping that is never unmapped.
        pthread("pthread_mutex_lock", unsafe {
            libc::pthread_mutex_lock(self.0.byte_add(i % 3 * PAGE))
        })
    }

    /// Unlocks mutex `i` (modulo 3), which this process holds.
    fn unlock(self, i: usize) -> Result<(), String> {
        // SAFETY: as in lock().
        pthread("pthread_mutex_unlock", unsafe {
            libc::pthread_mutex_unlock(self.0.byte_add(i % 3 * PAGE))
        })
    }
}

/// The raw form of shared-mutex's benchmark: in round `r` the timer unlocks mutex `r` (the
/// peer, asleep on it, takes it) and locks mutex `r + 2`, which the peer unlocks once it holds
/// mutex `r` (indices modulo 3).
fn mutexes(bench: &Bench) -> Samples {
    let mutexes = Mutexes::new()?;
    // The timer holds mutexes 0 and 1 before the peer exists; the peer takes mutex 2 before
    // the timer starts, and says so on the pipe.
    mutexes.lock(0)?;
    mutexes.lock(1)?;
    let (mut ready_reader, mut ready_writer) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
    with_peer(
        bench,
        move || {
            mutexes.lock(2)?;
            ready_writer
                .write_all(b"r")
                .map_err(|e| format!("write: {e}"))?;
            for (round, _) in bench.peer_rounds().enumerate() {
                mutexes.lock(round)?;
                mutexes.unlock(round + 2)?;
            }
            Ok(())
        },
        || {
            ready_reader
                .read_exact(&mut [0u8])
                .map_err(|_| "the peer could not take its lock".to_string())?;
            let mut round = 0;
            bench.time(|_| {
                mutexes.unlock(round)?;
                mutexes.lock(round + 2)?;
                round += 1;
                Ok(())
            })
        },
    )
}

/// Spins this many times on the flag before yielding the CPU: on one CPU a pure spin would hold
/// it for a whole time slice while the other side cannot run.
const SPINS_BEFORE_YIELD: u32 = 10_000;

fn spin(bench: &Bench) -> Samples {
    // Used only as one atomic counter.
    let page = shared_mapping(PAGE)?;
    // SAFETY: the page is zeroed, aligned and lives as long as the process.
    let turn: &AtomicU64 = unsafe { &*page.as_ptr().cast::<AtomicU64>() };
    let wait_for = |value: u64| {
        let mut spins = 0;
        while turn.load(Ordering::Acquire) != value {
            spins += 1;
            if spins == SPINS_BEFORE_YIELD {
                spins = 0;
                std::thread::yield_now();
            }
            std::hint::spin_loop();
        }
    };
    with_peer(
        bench,
        || {
            // The timer makes the counter odd, the peer even again.
            for (round, _) in bench.peer_rounds().enumerate() {
                let odd = 2 * round as u64 + 1;
                wait_for(odd);
                turn.store(odd + 1, Ordering::Release);
            }
            Ok(())
        },
        || {
            let mut next = 1;
            bench.time(|_| {
                turn.store(next, Ordering::Release);
                wait_for(next + 1);
                next += 2;
                Ok(())
            })
        },
    )
}

fn memcpy(bench: &Bench) -> Samples {
    bench
        .pin(Side::Timer, Pid::from_raw(0))
        .map_err(|e| format!("sched_setaffinity: {e}"))?;
    let from = vec![0x5au8; bench.largest()];
    let mut to = vec![0u8; bench.largest()];
    bench.time(|size| {
        to[..size].copy_from_slice(std::hint::black_box(&from[..size]));
        std::hint::black_box(&mut to);
        Ok::<(), String>(())
    })
}
