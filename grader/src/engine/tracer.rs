//! Acting on a program at one of its system calls, from outside: holding it at the call's entry
//! so that the check can change the world exactly then (make the object the call is about
//! appear) before the call goes on, holding it right after the call returned (to see what the
//! call made before the program does anything more to it), or making the call fail with a chosen
//! error, as the kernel would for a reason the check cannot otherwise bring about (root may read
//! any segment). A race a program loses only now and then, or an error path it rarely meets,
//! happens every time.
//!
//! It can also watch the program's own loads and stores in a System V segment it attaches: from the
//! return of its `shmat()`, hardware watchpoints on chosen fields of the record stop it right
//! after each access, so that the check sees the segment (or changes it) at exactly that step of
//! the program's work: what else it had written when it stored the magic, or what it had read
//! when the record was completed under it.
//!
//! A tracer process (forked from the grader, so that the grader's own wait for the program is
//! not disturbed) seizes the program's main thread with ptrace, stops it at every system call
//! until the one wanted, acts, and detaches. Where ptrace is not allowed (an unprivileged grader
//! under Yama's `ptrace_scope` 1), or a call cannot be made to fail (only x86-64 is supported),
//! [`Tracer::attach`] says so and the check does without.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::unistd::pipe2;

use crate::engine::{Fail, Proc, process};

/// What the tracer tells the check, one byte each.
const ATTACHED: u8 = b'A';
const HELD: u8 = b'S';
const FAILED: u8 = b'F';
const GONE: u8 = b'X';
const REFUSED: u8 = b'E';
/// Watching: the watchpoints are set, the program stopped at an access to a field, or the
/// machine would not set them (the program goes on, untraced).
const ARMED: u8 = b'W';
const HIT: u8 = b'H';
const NO_WATCHPOINTS: u8 = b'N';
/// What the check tells a watching tracer: go on watching (any other byte, or the pipe's end:
/// stop watching, clear the watchpoints and let the program go).
const GO_ON: u8 = b'c';
/// What the check tells a tracer stopped at a breakpoint: return from the function at once,
/// with the 8-byte value that follows (in `rax`), without running it, then go on watching.
const RETURN: u8 = b'r';
/// [`Action::Signal`]: the interrupted call was restarted, or failed with `EINTR`.
const RESTARTED: u8 = b'R';
const INTERRUPTED: u8 = b'I';
/// [`Action::ReadRealTimer`]'s answers.
const TIMER_ARMED: u8 = b'T';
const NO_TIMER: u8 = b'0';

/// Which call: its number, and what its arguments must be.
#[derive(Debug, Clone, Copy)]
pub struct Call {
    pub number: i64,
    pub matching: Match,
}

/// A condition on the arguments of a call.
#[derive(Debug, Clone, Copy)]
pub enum Match {
    Any,
    /// Argument `arg` (from 0) masked with `mask` is `value`: `shmctl`'s command (glibc may add
    /// flags above its low 8 bits), `shmget`'s `IPC_CREAT`.
    Bits {
        arg: usize,
        mask: u64,
        value: u64,
    },
    /// Two arguments, each masked as in [`Match::Bits`], have these values (`arg`, `mask`,
    /// `value`), both at once: `futex()`'s address and its operation.
    BothBits([(usize, u64, u64); 2]),
    /// Argument `arg` points to a 64-bit word that, masked with `mask`, is `value` (a null
    /// pointer never matches): a flag in the first field of a structure passed in, as
    /// `mq_getsetattr()`'s new attributes.
    PointsToBits {
        arg: usize,
        mask: u64,
        value: u64,
    },
    /// The second argument points to this path (`openat`'s).
    Path(&'static str),
    /// The first or the second argument points to this path: with [`Call::naming`], the first
    /// call of any kind that names the file (`statx`, `access`, `link`, `openat`, ...).
    Names(&'static str),
    /// The call is one of these: with [`Call::one_of`], the first of several calls that do the
    /// same thing (`write`, `sendto`, `writev`).
    Numbers(&'static [i64]),
    /// One of these calls, on this descriptor (its first argument): with [`Call::one_of_on`],
    /// the first write of any kind to one socket.
    NumbersOn(&'static [i64], u64),
    /// A call that may wait (for time, a descriptor, a signal, a child) or gives the CPU away:
    /// a sleep, `pause()`, `sigsuspend()`, `sched_yield()`, and `poll()`, `select()`,
    /// `epoll_wait()`, `sigtimedwait()`, `wait4()` unless they are told not to wait (a zero
    /// timeout, `WNOHANG`: Rust's runtime polls its standard descriptors so as it starts).
    Waits,
    /// Any of these calls, each with its own condition: with [`Call::any_of`], the first of
    /// several calls told apart by their arguments (a sleep, or a creating `openat()`).
    AnyOf(&'static [Call]),
    /// Every one of these conditions at once (the calls' numbers must agree): with
    /// [`Call::all_of`], a call told apart by two arguments of which one points to something
    /// (`rt_sigaction()` of one signal that sets a disposition, not one that only reads it).
    AllOf(&'static [Call]),
}

/// [`Tracer::last_break`] of a stop at the entry of the system call of
/// [`Tracer::break_at_functions_and_call`], past the four breakpoints.
pub const AT_CALL: usize = 4;

/// The calls that arm (or disarm) a timer, for [`Call::one_of`]: a deadline set on a wait, or
/// a tick that wakes the program up by itself.
pub const TIMERS: &[i64] = &[
    libc::SYS_alarm,
    libc::SYS_setitimer,
    libc::SYS_timer_settime,
    libc::SYS_timerfd_settime,
];

/// A call number that stands for every call.
const ANY_NUMBER: i64 = -1;

impl Call {
    pub const fn any(number: i64) -> Call {
        Call {
            number,
            matching: Match::Any,
        }
    }

    /// Argument `arg` (from 0) is `value`: a descriptor, an address, a command.
    pub const fn arg_is(number: i64, arg: usize, value: u64) -> Call {
        Call::bits(number, arg, u64::MAX, value)
    }

    /// Argument `arg` has every bit of `flag` set: `IPC_CREAT`, `O_CREAT`, `MAP_SHARED`.
    pub const fn flag_set(number: i64, arg: usize, flag: u64) -> Call {
        Call::bits(number, arg, flag, flag)
    }

    /// Argument `arg` masked with `mask` is `value` ([`Match::Bits`]).
    pub const fn bits(number: i64, arg: usize, mask: u64, value: u64) -> Call {
        Call {
            number,
            matching: Match::Bits { arg, mask, value },
        }
    }

    /// Argument `arg` points to a word with every bit of `flag` set ([`Match::PointsToBits`]):
    /// `O_NONBLOCK` in the attributes an `mq_getsetattr()` sets.
    pub const fn pointed_flag_set(number: i64, arg: usize, flag: u64) -> Call {
        Call {
            number,
            matching: Match::PointsToBits {
                arg,
                mask: flag,
                value: flag,
            },
        }
    }

    /// The first of any of these calls.
    pub const fn one_of(numbers: &'static [i64]) -> Call {
        Call {
            number: ANY_NUMBER,
            matching: Match::Numbers(numbers),
        }
    }

    /// The first of any of these calls whose first argument is descriptor `fd`.
    pub fn one_of_on(numbers: &'static [i64], fd: i32) -> Call {
        Call {
            number: ANY_NUMBER,
            matching: Match::NumbersOn(numbers, fd as u64),
        }
    }

    /// The first call that may wait ([`Match::Waits`]).
    pub const fn waiting() -> Call {
        Call {
            number: ANY_NUMBER,
            matching: Match::Waits,
        }
    }

    /// The first call that is any of these, each matched as it says.
    pub const fn any_of(calls: &'static [Call]) -> Call {
        Call {
            number: ANY_NUMBER,
            matching: Match::AnyOf(calls),
        }
    }

    /// A call that is each of these at once.
    pub const fn all_of(calls: &'static [Call]) -> Call {
        Call {
            number: ANY_NUMBER,
            matching: Match::AllOf(calls),
        }
    }

    /// An `mmap()` of `len` bytes, shared (`MAP_SHARED`, not `MAP_PRIVATE`): a program's mapping
    /// of a shared object, told from its allocator's.
    pub const fn mapping_shared(len: usize) -> Call {
        let shared = (libc::MAP_SHARED | libc::MAP_PRIVATE) as u64;
        Call {
            number: libc::SYS_mmap,
            matching: Match::BothBits([
                (1, u64::MAX, len as u64),
                (3, shared, libc::MAP_SHARED as u64),
            ]),
        }
    }

    /// The `openat()` of `path` that glibc's `shm_open()` and `sem_open()` make. The path is
    /// kept for the life of the grader, as the tracer matches against it: a few bytes a call.
    pub fn opening(path: &std::path::Path) -> Call {
        Call {
            number: libc::SYS_openat,
            matching: Match::Path(path.display().to_string().leak()),
        }
    }

    /// The `unlink()` (or `unlinkat()`) of `path` that glibc's `shm_unlink()` makes. The path
    /// and the pair of calls are kept for the life of the grader, as for [`Call::opening`].
    pub fn unlinking(path: &std::path::Path) -> Call {
        let path: &'static str = path.display().to_string().leak();
        Call::any_of(Vec::leak(vec![
            Call {
                number: libc::SYS_unlink,
                matching: Match::Names(path),
            },
            Call {
                number: libc::SYS_unlinkat,
                matching: Match::Names(path),
            },
        ]))
    }

    /// The `openat()` of a status file of `pid`'s own (`/proc/self/status`, its thread's, or
    /// `/proc/PID/status`), where `TracerPid` says whether a tracer watches it: a program that
    /// looks there may behave one way when graded and another when not. The paths are kept for
    /// the life of the grader, as for [`Call::opening`].
    pub fn opening_own_status(pid: i32) -> Call {
        let paths = [
            "/proc/self/status".to_string(),
            "/proc/thread-self/status".to_string(),
            format!("/proc/{pid}/status"),
        ];
        Call::any_of(Vec::leak(
            paths
                .iter()
                .map(|path| Call::opening(std::path::Path::new(path)))
                .collect(),
        ))
    }

    /// Any call whose first or second argument is `path`.
    pub fn naming(path: &'static str) -> Call {
        Call {
            number: ANY_NUMBER,
            matching: Match::Names(path),
        }
    }
}

/// What to do at the call.
#[derive(Debug, Clone, Copy)]
pub enum Action {
    /// Hold the program at the call's entry until [`Tracer::release`].
    Hold,
    /// Let the call run, and hold the program as it returns, before it does anything with the
    /// result, until [`Tracer::release`].
    HoldAfter,
    /// Hold the program at the call's entry until [`Tracer::go_on`], then again as the call
    /// returns, until [`Tracer::release`]: the check may change the world just before the call
    /// and just after it.
    HoldAround,
    /// Skip the call and make it return this errno.
    Fail(i32),
    /// As [`Action::Fail`] (this errno), and raise this signal in the thread as the call
    /// returns, as the kernel raises `SIGPIPE` in a writer whose `write()` to a pipe fails with
    /// `EPIPE`: a program that ignores the signal sees only the error, one that does not is
    /// ended (or interrupted) by it. Reported as [`Action::Fail`] is.
    FailRaising(i32, i32),
    /// Skip this many of the calls in a row, each returning this errno, then let the program
    /// go on untraced ([`Tracer::fail_times`]). Each failure is reported: read one at a time
    /// ([`Tracer::failed_before`]) or counted ([`Tracer::failed_count`]).
    FailTimes(i32, u32),
    /// Let the call run with its third argument cut to at most this: the byte count of a
    /// `write()`, `sendto()` or `read()`, the number of buffers of a `writev()`. The call then
    /// moves fewer bytes and returns a short count, as a stop or a full buffer can make it.
    Shorten(u64),
    /// Let the call (a `shmat()` or an `mmap()`) go on and, once one has returned an address,
    /// stop the program right after each access to these fields of what it attached or mapped
    /// (at most four), until the check says no more ([`Tracer::watch`],
    /// [`Tracer::watch_returned`]).
    Watch(&'static [Field]),
    /// Stop the program right after each access to these fields of the memory at this address
    /// (at most four), from now on, until the check says no more ([`Tracer::watch_at`]).
    WatchAt(u64, &'static [Field]),
    /// At the next entry of the first call, do its step; then at the next entry of the second
    /// call, do its step; then let the program go on untraced ([`Tracer::in_turn`]): a call made
    /// to fail and the one the program makes to clean up after it made to fail too, or a call
    /// made to fail and the program held as it exits, to see what it still holds. Up to three
    /// calls ([`MAX_STEPS`]); the unused places are `None`.
    InTurn([Option<(Call, Step)>; MAX_STEPS]),
    /// Stop the program at each entry of the code at these addresses (functions' first
    /// instructions: hardware breakpoints, at most four; 0 is none), from now on, until the
    /// check says no more ([`Tracer::break_at`], [`Tracer::break_at_each`]); each stop reports
    /// the call's first two arguments and which address it is ([`Tracer::last_break`]). With a
    /// call, the program also stops at each entry of that system call, reported as a stop at
    /// [`AT_CALL`] ([`Tracer::break_at_functions_and_call`]): a function and the system call
    /// that bypasses it, or what a function's result goes into.
    BreakAt([u64; 4], Option<Call>),
    /// Let the call run untouched, and report that it was made (read as a failure is:
    /// [`Tracer::failed_the_call`], [`Tracer::failed_before`]): whether the program made the
    /// call at all, where the error it returns must be that call's.
    Report,
    /// Let every one of the calls run untouched and report each, until the check says no more
    /// ([`Tracer::count_calls`], read with [`Tracer::failed_count`]): how many times the
    /// program asked the kernel, where an answer it keeps would make fewer calls.
    ReportEach,
    /// At the call's entry, set this signal's disposition back to its default in the program
    /// (an `rt_sigaction(signal, SIG_DFL)` made in the call's place), then make the call itself
    /// as it was: a signal the program inherited ignored (Rust ignores `SIGPIPE`) can then end
    /// it, as it ends a C program, when the check sends it. Reported as [`Action::Fail`] is.
    DefaultDisposition(i32),
    /// At the call's entry, read the program's real-time interval timer (a `getitimer
    /// (ITIMER_REAL)` made in the call's place), then make the call itself as it was: whether an
    /// `alarm()` or `setitimer()` is pending, which nothing in `/proc` shows (read with
    /// [`Tracer::real_timer_armed`]).
    ReadRealTimer,
    /// Send this signal (caught by a handler) to the thread, blocked in a call, and see what
    /// the kernel did with the call once the handler returned: made it fail with `EINTR`, or
    /// restarted it (`SA_RESTART`) ([`Tracer::signal_restarts`]).
    Signal(i32),
    /// As [`Action::Fail`] (this errno), or as [`Action::HoldAfter`] (`None`), at the call made
    /// on any thread of the program, those it creates from now on too (each traced from its
    /// first instruction): a call a program makes on a thread it starts for the work.
    OnAnyThread(Option<i32>),
    /// Skip every one of the calls and make each return this errno, on every thread of the
    /// program and in every process it forks from now on (each traced from its first
    /// instruction), until the tracer is dropped; each failure reported as [`Action::Fail`]'s
    /// is: a call an echo child makes right after `fork()`, before anything could attach to it.
    FailInEveryProcess(i32),
    /// Hold, as the call returns, the first thread the traced thread starts from now on that
    /// makes the call (`rseq()` or `set_robust_list()`, which the C library makes in a new
    /// thread before any of the program's code), and let every other thread go on untraced
    /// meanwhile: a thread just started, held before it does anything, while the one that
    /// started it goes on.
    OnNewThread,
}

/// The most calls [`Action::InTurn`] acts at.
pub const MAX_STEPS: usize = 3;

/// What [`Action::InTurn`] does at one of its calls.
#[derive(Debug, Clone, Copy)]
pub enum Step {
    /// Skip the call and make it return this errno (reported as [`Tracer::failed_before`]
    /// reads it).
    Fail(i32),
    /// As [`Step::Fail`] (this errno), and raise this signal in the thread as the call returns,
    /// as [`Action::FailRaising`] does.
    FailRaising(i32, i32),
    /// Let the call run untouched: the step only counts it, so that the next step is done at
    /// the next such call (the second `pipe()`, not the first). Not reported.
    Pass,
    /// Hold the program at the call's entry ([`Tracer::held_before`]) until the check says go
    /// on ([`Tracer::go_on`], or [`Tracer::release`] at the last step).
    Hold,
    /// Let the call run, and hold the program as it returns, before it does anything with the
    /// result ([`Tracer::held_before`]), until the check says go on: the check changes the
    /// world right after the call saw it.
    HoldAfter,
}

/// A field of the segment to watch: its offset from where the segment is attached, its length
/// (1, 2, 4 or 8 bytes, at an offset that is a multiple of it), and whether loads count too
/// (stores always do).
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub offset: usize,
    pub len: usize,
    pub loads: bool,
}

/// What a watching tracer saw next, or what the program said first.
#[derive(Debug)]
pub enum Watched {
    /// Its `shmat()` returned: the watchpoints are set.
    Armed,
    /// It is stopped right after an access to a watched field; it stays so until
    /// [`Tracer::go_on`] or [`Tracer::release`].
    Hit,
    /// It sent this message.
    Said(ipc_labs_driver::Message),
    /// The tracer lost it: it exited.
    Lost,
    /// The machine would not set the watchpoints: the program goes on, unwatched.
    Unavailable,
}

/// What a tracer with a breakpoint ([`Tracer::break_at`]) saw next.
#[derive(Debug, PartialEq, Eq)]
pub enum Breakpoint {
    /// The breakpoint is set.
    Armed,
    /// The program is stopped at the breakpoint, with these first two arguments (`rdi`,
    /// `rsi`); it stays so until [`Tracer::go_on`] or the tracer's end. Which of the addresses
    /// it is: [`Tracer::last_break`].
    At([u64; 2]),
    /// The tracer lost it: it exited.
    Lost,
    /// The machine would not set the breakpoint: the program goes on, untraced.
    Unavailable,
}

/// A program traced until it makes a given system call.
pub struct Tracer {
    tracer: i32,
    from_tracer: OwnedFd,
    to_tracer: OwnedFd,
    released: bool,
    /// Watchpoints may be set: they outlive the tracer, and a program that meets one untraced
    /// dies of SIGTRAP, so the tracer must clear them itself before it goes.
    watching: bool,
    /// Which breakpoint (its index among [`Action::BreakAt`]'s addresses) the last
    /// [`Breakpoint::At`] was.
    last_break: usize,
    /// Which watched field (its index among the fields given) the last [`Watched::Hit`] was.
    last_hit: usize,
}

/// Where the program was when [`Tracer::wait`] returned.
#[derive(Debug, PartialEq, Eq)]
pub enum Reached {
    /// Held at the entry of the call (or at its return, for [`Action::HoldAfter`]).
    Call,
    /// It talked to the grader first (the message is returned), or the tracer lost it (it
    /// exited, or made the call on another thread).
    Passed(Option<ipc_labs_driver::Message>),
}

impl Tracer {
    /// Starts tracing `pid` (its main thread) until its next `call`, where the tracer does
    /// `action`. Returns once every call the program makes passes by the tracer; `None` if the
    /// machine does not allow it.
    pub fn attach(pid: i32, call: Call, action: Action) -> Result<Option<Tracer>, Fail> {
        Tracer::attach_thread(pid, pid, call, action)
    }

    /// As [`Tracer::attach`], but traces thread `tid` of `pid` (a server's handler or
    /// accepting thread) instead of its main thread.
    pub fn attach_thread(
        pid: i32,
        tid: i32,
        call: Call,
        action: Action,
    ) -> Result<Option<Tracer>, Fail> {
        if !matches!(
            action,
            Action::Hold | Action::HoldAfter | Action::HoldAround
        ) && !cfg!(target_arch = "x86_64")
        {
            return Ok(None);
        }
        let grader = |e: nix::Error| Fail::Grader(format!("pipe: {e}"));
        let (from_tracer, tracer_writes) = pipe2(OFlag::O_CLOEXEC).map_err(grader)?;
        let (tracer_reads, to_tracer) = pipe2(OFlag::O_CLOEXEC).map_err(grader)?;
        let pipes = Pipes {
            report: tracer_writes.as_raw_fd(),
            resume: tracer_reads.as_raw_fd(),
            grader_ends: [from_tracer.as_raw_fd(), to_tracer.as_raw_fd()],
        };
        // The program's process group (its leader's, for a child of it), which the tracer joins.
        // SAFETY: a plain system call.
        let group = match unsafe { libc::getpgid(pid) } {
            -1 => pid,
            group => group,
        };
        super::looks::prepare();
        // SAFETY: the child runs only `trace`, which makes async-signal-safe system calls and
        // never returns.
        let tracer = unsafe { process::fork_registered() };
        if tracer == -1 {
            return Err(Fail::Grader(format!(
                "fork: {}",
                std::io::Error::last_os_error()
            )));
        }
        if tracer == 0 {
            super::looks::tracing(group, pid);
            // SAFETY: in the forked child, see above.
            unsafe { trace(group, tid, call, action, pipes) }
        }
        // In the program's process group, as the child does first thing too, so that the
        // check's end kills it with the program. It is registered as well: a grading run
        // ending in another thread kills the grader's children in no running check's group,
        // and killed it would leave its watchpoints or a skipped call behind.
        // SAFETY: a plain system call on our own child.
        unsafe { libc::setpgid(tracer, group) };
        drop((tracer_writes, tracer_reads));
        let mut traced = Tracer {
            tracer,
            from_tracer,
            to_tracer,
            released: false,
            watching: matches!(
                action,
                Action::Watch(_) | Action::WatchAt(..) | Action::BreakAt(..)
            ),
            last_break: 0,
            last_hit: 0,
        };
        // Attaching takes milliseconds; a loaded machine may hold the tracer back for seconds.
        match traced.next_byte(Instant::now() + Duration::from_secs(10))? {
            Some(ATTACHED) => Ok(Some(traced)),
            Some(REFUSED) => Ok(None),
            other => Err(Fail::Grader(format!(
                "the tracer did not attach (it said {other:?})"
            ))),
        }
    }

    /// Waits until the program is held at the call, or says something to the grader first, or
    /// `until`.
    pub fn wait(&mut self, program: &mut Proc, until: Instant) -> Result<Reached, Fail> {
        loop {
            if let Some(message) = program.recv_before(Instant::now())? {
                return Ok(Reached::Passed(Some(message)));
            }
            match self.next_byte(Instant::now() + Duration::from_millis(2))? {
                Some(HELD) => return Ok(Reached::Call),
                Some(_) => return Ok(Reached::Passed(None)),
                None if Instant::now() >= until => {
                    return Err(Fail::TimedOut(format!(
                        "timed out: the program did not reach the system call the grader waits \
                         for.{}",
                        program.diagnose()
                    )));
                }
                None => {}
            }
        }
    }

    /// Waits until the program is held at the call (true), or the tracer lost it, or `until`
    /// (false), without reading the program's messages (the check's own loop reads them).
    pub fn held_before(&mut self, until: Instant) -> Result<bool, Fail> {
        loop {
            match self.next_byte(until)? {
                Some(HELD) => return Ok(true),
                Some(_) => return Ok(false),
                None if Instant::now() >= until => return Ok(false),
                None => {}
            }
        }
    }

    /// Starts tracing `pid` (its main thread) to make its next `times` calls `call` fail with
    /// `errno`, one after the other: a timed wait made to time out again and again, at once, as
    /// if that many slices had passed. [`Tracer::failed_count`] follows; `None` if the machine
    /// does not allow it.
    pub fn fail_times(
        pid: i32,
        call: Call,
        errno: i32,
        times: u32,
    ) -> Result<Option<Tracer>, Fail> {
        Tracer::attach(pid, call, Action::FailTimes(errno, times))
    }

    /// Starts tracing `pid` (its main thread) to count its calls `call`, each let run
    /// ([`Action::ReportEach`]); [`Tracer::failed_count`] reads the count. `None` if the machine
    /// does not allow it.
    pub fn count_calls(pid: i32, call: Call) -> Result<Option<Tracer>, Fail> {
        Tracer::attach(pid, call, Action::ReportEach)
    }

    /// How many calls a [`Tracer::count_calls`] tracer has seen so far (those reported by
    /// `until`), the tracer still counting: [`Tracer::failed_count`] then gives the rest.
    pub fn counted_so_far(&mut self, until: Instant) -> Result<u32, Fail> {
        let mut count = 0;
        while let Some(byte) = self.next_byte(until)? {
            if byte != FAILED {
                break;
            }
            count += 1;
        }
        Ok(count)
    }

    /// How many calls a [`Tracer::fail_times`] tracer has made fail (or a
    /// [`Tracer::count_calls`] tracer has seen), waiting until it has made
    /// them all fail, or lost the program (it exited, or made no such call before the check
    /// let it go), or `until`; then lets the program go on untraced.
    pub fn failed_count(mut self, until: Instant) -> Result<u32, Fail> {
        let mut count = 0;
        loop {
            match self.next_byte(until)? {
                Some(FAILED) => count += 1,
                Some(_) => break,
                None if Instant::now() >= until => break,
                None => {}
            }
        }
        // Told to stop, the tracer detaches at the program's next system call stop.
        // SAFETY: one byte from a live buffer to our own pipe.
        unsafe { libc::write(self.to_tracer.as_raw_fd(), [0u8].as_ptr().cast(), 1) };
        self.released = true;
        Ok(count)
    }

    /// Starts tracing `pid` (its main thread) to act at these calls in turn, at most
    /// [`MAX_STEPS`] ([`Action::InTurn`]); `None` if the machine does not allow it.
    pub fn in_turn<const N: usize>(
        pid: i32,
        steps: [(Call, Step); N],
    ) -> Result<Option<Tracer>, Fail> {
        const { assert!(N >= 1 && N <= MAX_STEPS) };
        let mut turns = [None; MAX_STEPS];
        for (turn, step) in turns.iter_mut().zip(steps) {
            *turn = Some(step);
        }
        Tracer::attach(pid, steps[0].0, Action::InTurn(turns))
    }

    /// Sends `signal` to thread `tid` of `pid`, blocked in a system call, traced, and tells
    /// what became of the call once the signal's handler returned: `Some(true)` if the kernel
    /// restarted it (the handler was installed with `SA_RESTART`), `Some(false)` if it returned
    /// `EINTR` to the program; `None` if the machine does not allow tracing, or nothing came
    /// of the signal before `until` (blocked, ignored, or no handler ran).
    pub fn signal_restarts(
        pid: i32,
        tid: i32,
        signal: i32,
        until: Instant,
    ) -> Result<Option<bool>, Fail> {
        let Some(mut tracer) =
            Tracer::attach_thread(pid, tid, Call::any(0), Action::Signal(signal))?
        else {
            return Ok(None);
        };
        tracer.yes_or_no(until, RESTARTED, INTERRUPTED)
    }

    /// With [`Action::ReadRealTimer`]: whether the program's real-time interval timer
    /// (`alarm()`, `setitimer(ITIMER_REAL)`) was armed at the call's entry; `None` if the call was
    /// not made before `until`.
    pub fn real_timer_armed(&mut self, until: Instant) -> Result<Option<bool>, Fail> {
        self.yes_or_no(until, TIMER_ARMED, NO_TIMER)
    }

    /// The tracer's one-byte answer before `until`: `yes`, `no`, or `None` (no answer, or
    /// another byte).
    fn yes_or_no(&mut self, until: Instant, yes: u8, no: u8) -> Result<Option<bool>, Fail> {
        let outcome = match self.next_byte(until)? {
            Some(byte) if byte == yes => Some(true),
            Some(byte) if byte == no => Some(false),
            _ => None,
        };
        // The tracer detached after its answer; without one it is killed, which detaches too.
        self.released = outcome.is_some();
        Ok(outcome)
    }

    /// Starts watching `fields` of the segment `pid` attaches next (with `shmat()` on its main
    /// thread); `None` if the machine does not allow it (no ptrace, or not x86-64).
    pub fn watch(pid: i32, fields: &'static [Field]) -> Result<Option<Tracer>, Fail> {
        Tracer::watch_returned(pid, Call::any(libc::SYS_shmat), fields)
    }

    /// As [`Tracer::watch`], for the memory at the address the next `call` returns on `pid`'s
    /// main thread (an `mmap()` of a shared object, chosen by its arguments).
    pub fn watch_returned(
        pid: i32,
        call: Call,
        fields: &'static [Field],
    ) -> Result<Option<Tracer>, Fail> {
        Tracer::attach(pid, call, Action::Watch(fields))
    }

    /// Starts watching `fields` of the memory at `address` in `pid` (its main thread), from
    /// now on: a word the program shares, such as a named semaphore's. Then as
    /// [`Tracer::watch`]: [`Watched::Armed`], then a [`Watched::Hit`] at each access. `None` if
    /// the machine does not allow it.
    pub fn watch_at(
        pid: i32,
        address: u64,
        fields: &'static [Field],
    ) -> Result<Option<Tracer>, Fail> {
        Tracer::watch_at_in(pid, pid, address, fields)
    }

    /// As [`Tracer::watch_at`], in thread `tid` of `pid` (debug registers are per thread): to
    /// see which thread makes an access.
    pub fn watch_at_in(
        pid: i32,
        tid: i32,
        address: u64,
        fields: &'static [Field],
    ) -> Result<Option<Tracer>, Fail> {
        Tracer::attach_thread(
            pid,
            tid,
            Call::any(ANY_NUMBER),
            Action::WatchAt(address, fields),
        )
    }

    /// What comes next from a watching tracer or from the program, before `until`.
    pub fn next(&mut self, program: &mut Proc, until: Instant) -> Result<Watched, Fail> {
        loop {
            // The tracer first: it speaks while the program is stopped, before anything the
            // program says after. Waited for, so that a run of hits (a loop on a watched field)
            // is counted as fast as it comes; a message waits at most this short while.
            match self.next_byte(Instant::now() + Duration::from_millis(2))? {
                Some(ARMED) => return Ok(Watched::Armed),
                Some(HIT) => return self.hit(),
                Some(NO_WATCHPOINTS) => return Ok(Watched::Unavailable),
                Some(_) => return Ok(Watched::Lost),
                None => {}
            }
            if let Some(message) = program.recv_before(Instant::now())? {
                return Ok(Watched::Said(message));
            }
            if Instant::now() >= until {
                return Err(Fail::TimedOut(format!(
                    "timed out: the program neither touched the watched fields of its segment \
                     nor said anything.{}",
                    program.diagnose()
                )));
            }
        }
    }

    /// Starts stopping `pid` (its main thread) at each entry of the code at `address`, from
    /// now on: [`Breakpoint::Armed`], then a [`Breakpoint::At`] at each entry. `None` if the
    /// machine does not allow it.
    pub fn break_at(pid: i32, address: u64) -> Result<Option<Tracer>, Fail> {
        Tracer::break_at_each(pid, [address, 0, 0, 0])
    }

    /// A breakpoint at the entry of the C library's function `name` in `pid`, once it is set
    /// (waited for up to 5 s): `None` where the function is not found or the machine does not
    /// allow the breakpoint.
    pub fn break_at_function(pid: i32, name: &std::ffi::CStr) -> Result<Option<Tracer>, Fail> {
        Tracer::break_at_function_in(pid, pid, name)
    }

    /// As [`Tracer::break_at_function`], in thread `tid` of `pid` (an accepting thread, say)
    /// instead of its main thread.
    pub fn break_at_function_in(
        pid: i32,
        tid: i32,
        name: &std::ffi::CStr,
    ) -> Result<Option<Tracer>, Fail> {
        let Some(address) = crate::engine::inspect::library_function_in(pid, name) else {
            return Ok(None);
        };
        let breaking = Action::BreakAt([address, 0, 0, 0], None);
        match Tracer::attach_thread(pid, tid, Call::any(ANY_NUMBER), breaking)? {
            Some(tracer) => tracer.armed(),
            None => Ok(None),
        }
    }

    /// As [`Tracer::break_at_each`], at the entries of the C library's functions `names` (at
    /// most 4; [`Tracer::last_break`] is an index into `names`): `None` where one of them is not
    /// found or the machine does not allow the breakpoints.
    pub fn break_at_functions(pid: i32, names: &[&std::ffi::CStr]) -> Result<Option<Tracer>, Fail> {
        match library_functions(pid, names) {
            Some(addresses) => Tracer::break_at_each(pid, addresses),
            None => Ok(None),
        }
    }

    /// For a program spawned stopped (`Run::spawn_stopped`), a breakpoint at the entries of the
    /// C library's functions `names` (as [`Tracer::break_at_functions`]) set before its `main()`
    /// runs: held first at the Rust runtime's `sigaltstack()` (the C library is loaded by then,
    /// the program's own work not begun), it is stopped there (`SIGSTOP`) so that the
    /// breakpoint's tracer, which replaces the first, finds it where it was; then let go. `None`
    /// (the program running untraced) where the grader cannot set it.
    pub fn break_from_main(
        program: &mut super::Proc,
        names: &[&std::ffi::CStr],
    ) -> Result<Option<Tracer>, Fail> {
        let pid = program.pid.as_raw();
        if !Tracer::stopped_before_main(program)? {
            return Ok(None);
        }
        let tracer = Tracer::break_at_functions(pid, names)?;
        super::force::resume(pid)?;
        Ok(tracer)
    }

    /// As [`Tracer::break_from_main`], and the program also stops at each entry of the system
    /// call `call` ([`AT_CALL`], as [`Tracer::break_at_functions_and_call`]): a C library
    /// function made to fail from the start, and the program stopped at its `exit_group()` to
    /// see what it still holds.
    pub fn break_from_main_and_call(
        program: &mut super::Proc,
        names: &[&std::ffi::CStr],
        call: Call,
    ) -> Result<Option<Tracer>, Fail> {
        let pid = program.pid.as_raw();
        if !Tracer::stopped_before_main(program)? {
            return Ok(None);
        }
        let tracer = match library_functions(pid, names) {
            Some(addresses) => Tracer::attach(
                pid,
                Call::any(ANY_NUMBER),
                Action::BreakAt(addresses, Some(call)),
            )?,
            None => None,
        };
        super::force::resume(pid)?;
        Ok(tracer)
    }

    /// Lets a program spawned stopped run to the Rust runtime's `sigaltstack()` (the C library
    /// is loaded by then, the program's own work not begun) and leaves it stopped there
    /// (`SIGSTOP`), untraced; false (the program running untraced) where the grader cannot.
    fn stopped_before_main(program: &mut super::Proc) -> Result<bool, Fail> {
        let pid = program.pid.as_raw();
        let early = Tracer::attach(pid, Call::any(libc::SYS_sigaltstack), Action::Hold)?;
        super::force::resume(pid)?;
        let Some(mut early) = early else {
            return Ok(false);
        };
        let until = Instant::now() + Duration::from_secs(5);
        if early.wait(program, until)? != Reached::Call {
            drop(early);
            return Ok(false);
        }
        // Stopped as soon as the first tracer lets it go (a signal pending while it is held).
        early.release_stopped(pid)?;
        Ok(true)
    }

    /// As [`Tracer::break_at`], at each of these addresses (0: none); [`Tracer::last_break`]
    /// says which one a stop is at.
    pub fn break_at_each(pid: i32, addresses: [u64; 4]) -> Result<Option<Tracer>, Fail> {
        Tracer::attach(pid, Call::any(ANY_NUMBER), Action::BreakAt(addresses, None))
    }

    /// As [`Tracer::break_at_functions`], and the program also stops at each entry of the
    /// system call `call`, a stop whose [`Tracer::last_break`] is [`AT_CALL`] (its arguments
    /// are in `/proc/PID/syscall` meanwhile); returns once the breakpoints are set (waited for
    /// up to 5 s). `None` where a function is not found or the machine does not allow it.
    pub fn break_at_functions_and_call(
        pid: i32,
        names: &[&std::ffi::CStr],
        call: Call,
    ) -> Result<Option<Tracer>, Fail> {
        let Some(addresses) = library_functions(pid, names) else {
            return Ok(None);
        };
        let breaking = Action::BreakAt(addresses, Some(call));
        match Tracer::attach(pid, Call::any(ANY_NUMBER), breaking)? {
            Some(tracer) => tracer.armed(),
            None => Ok(None),
        }
    }

    /// This breaking tracer once its breakpoints are set (waited for up to 5 s); `None` if
    /// they could not be.
    fn armed(mut self) -> Result<Option<Tracer>, Fail> {
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            match self.next_break(until)? {
                Some(Breakpoint::Armed) => return Ok(Some(self)),
                None if Instant::now() < until => {}
                _ => return Ok(None),
            }
        }
    }

    /// The index (among the addresses given) of the breakpoint of the last
    /// [`Breakpoint::At`].
    pub fn last_break(&self) -> usize {
        self.last_break
    }

    /// What comes next from a tracer with a breakpoint before `until` (`None`: nothing yet),
    /// without reading the program's messages.
    pub fn next_break(&mut self, until: Instant) -> Result<Option<Breakpoint>, Fail> {
        Ok(match self.next_byte(until)? {
            None => None,
            Some(ARMED) => Some(Breakpoint::Armed),
            Some(HIT) => {
                let mut bytes = [0u8; 17];
                let mut got = 0;
                while got < bytes.len() {
                    // SAFETY: reads into the rest of a live buffer.
                    let n = unsafe {
                        libc::read(
                            self.from_tracer.as_raw_fd(),
                            bytes[got..].as_mut_ptr().cast(),
                            bytes.len() - got,
                        )
                    };
                    if n <= 0 {
                        return Ok(Some(Breakpoint::Lost));
                    }
                    got += n as usize;
                }
                let word =
                    |at: usize| u64::from_ne_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
                self.last_break = bytes[16] as usize;
                Some(Breakpoint::At([word(0), word(8)]))
            }
            Some(NO_WATCHPOINTS) => Some(Breakpoint::Unavailable),
            Some(_) => Some(Breakpoint::Lost),
        })
    }

    /// What comes next from a watching tracer before `until` (`None`: nothing yet), without
    /// reading the program's messages: for a thread of the check that watches one process while
    /// another thread talks to the program.
    pub fn next_watched(&mut self, until: Instant) -> Result<Option<Watched>, Fail> {
        Ok(match self.next_byte(until)? {
            None => None,
            Some(ARMED) => Some(Watched::Armed),
            Some(HIT) => Some(self.hit()?),
            Some(NO_WATCHPOINTS) => Some(Watched::Unavailable),
            Some(_) => Some(Watched::Lost),
        })
    }

    /// The index (among the fields given) of the field of the last [`Watched::Hit`]: with
    /// several fields watched, which one the program accessed.
    pub fn last_hit(&self) -> usize {
        self.last_hit
    }

    /// A hit: the tracer follows its byte with the index of the field, in the same write.
    fn hit(&mut self) -> Result<Watched, Fail> {
        match self.next_byte(Instant::now() + Duration::from_millis(500))? {
            Some(which) if which < 4 => {
                self.last_hit = which as usize;
                Ok(Watched::Hit)
            }
            _ => Ok(Watched::Lost),
        }
    }

    /// Lets a program stopped at a watched access go on, still watched; or one held at a call's
    /// entry ([`Action::HoldAround`]) go on into the call, to be held again as it returns.
    pub fn go_on(&mut self) {
        // SAFETY: one byte from a live buffer to our own pipe.
        unsafe { libc::write(self.to_tracer.as_raw_fd(), [GO_ON].as_ptr().cast(), 1) };
    }

    /// Makes a program stopped at a breakpoint ([`Breakpoint::At`]) return from the function at
    /// once with `value`, without running it (a C library call made to fail with an error it
    /// may return, where no system call can be made to), and goes on watching.
    pub fn return_now(&mut self, value: i64) {
        let mut bytes = [0u8; 9];
        bytes[0] = RETURN;
        bytes[1..].copy_from_slice(&value.to_ne_bytes());
        // SAFETY: nine bytes from a live buffer to our own pipe.
        unsafe {
            libc::write(
                self.to_tracer.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
            )
        };
    }

    /// Whether the call was made to fail, once the program has reported what followed it (the
    /// tracer says so before the program goes on).
    pub fn failed_the_call(&mut self) -> Result<bool, Fail> {
        Ok(self.next_byte(Instant::now() + Duration::from_millis(10))? == Some(FAILED))
    }

    /// Waits until the tracer has made the call fail, or cut it short for [`Action::Shorten`]
    /// (true), or lost the program, or `until` (false), without reading the program's messages.
    pub fn failed_before(&mut self, until: Instant) -> Result<bool, Fail> {
        loop {
            match self.next_byte(until)? {
                Some(FAILED) => return Ok(true),
                Some(_) => return Ok(false),
                None if Instant::now() >= until => return Ok(false),
                None => {}
            }
        }
    }

    /// Lets the held call go on, untraced from now on, and leaves the program `pid` stopped
    /// (SIGSTOP, sent while it is held) as it comes back from the call, until
    /// [`super::force::resume`].
    pub fn release_stopped(self, pid: i32) -> Result<(), Fail> {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGSTOP)
            .map_err(|e| Fail::Grader(format!("SIGSTOP: {e}")))?;
        self.release();
        // A tracer slow to let go under load: the stop comes once it has.
        super::force::until_stopped(pid, Duration::from_secs(3));
        Ok(())
    }

    /// Lets the held call go on, untraced from now on.
    pub fn release(mut self) {
        // SAFETY: one byte from a live buffer to our own pipe.
        unsafe { libc::write(self.to_tracer.as_raw_fd(), [0u8].as_ptr().cast(), 1) };
        // Drop waits for the tracer, which detaches before it exits.
        self.released = true;
    }

    /// The tracer's next byte, if one comes before `until`.
    fn next_byte(&mut self, until: Instant) -> Result<Option<u8>, Fail> {
        let wait = until.saturating_duration_since(Instant::now());
        let mut fds = [PollFd::new(self.from_tracer.as_fd(), PollFlags::POLLIN)];
        let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => return Ok(None),
            Ok(_) => {}
            Err(e) => return Err(Fail::Grader(format!("poll: {e}"))),
        }
        let mut byte = [0u8];
        // SAFETY: reads one byte into a live buffer.
        let n = unsafe { libc::read(self.from_tracer.as_raw_fd(), byte.as_mut_ptr().cast(), 1) };
        // End of file: the tracer is gone without a word.
        Ok(Some(if n == 1 { byte[0] } else { GONE }))
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        // A watching tracer is told to stop: it clears the watchpoints, then detaches.
        if self.watching && !self.released {
            // SAFETY: one byte from a live buffer to our own pipe.
            unsafe { libc::write(self.to_tracer.as_raw_fd(), [0u8].as_ptr().cast(), 1) };
            self.released = true;
        }
        // A tracer still at work (not told to release a held call, or still waiting for its
        // call) is killed: the kernel then detaches the program, which goes on. Killed only
        // while not yet reaped, so that its pid is still its own.
        // A watching tracer is given longer: killed before it has cleared its watchpoints, it
        // leaves the program to die of the next one.
        let grace = Duration::from_millis(if self.watching { 5000 } else { 500 });
        let deadline = Instant::now() + grace;
        let mut killed = false;
        let mut status = 0;
        loop {
            // SAFETY: waits for our own child without blocking.
            let r = unsafe { libc::waitpid(self.tracer, &mut status, libc::WNOHANG) };
            if r != 0 {
                process::forget(self.tracer as u32);
                return;
            }
            if !killed && (!self.released || Instant::now() >= deadline) {
                // SAFETY: signals our own child, not yet reaped.
                unsafe { libc::kill(self.tracer, libc::SIGKILL) };
                killed = true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// The tracer's descriptors: it writes to `report`, reads `resume`; `grader_ends` are the
/// grader's ends of those pipes, which it closes.
#[derive(Clone, Copy)]
struct Pipes {
    report: i32,
    resume: i32,
    grader_ends: [i32; 2],
}

/// Offsets in `struct user` (x86-64) of the registers that hold a call's number on entry and
/// its result on exit, and of the debug registers (DR0 to DR3 the watched addresses, DR6 which
/// one was hit, DR7 what each watches).
const ORIG_RAX: usize = 15 * 8;
const RAX: usize = 10 * 8;
const RIP: usize = 16 * 8;
const RSP: usize = 19 * 8;
/// The register of a call's third argument.
const RDX: usize = 12 * 8;
#[cfg(target_arch = "x86_64")]
const DEBUGREG: usize = std::mem::offset_of!(libc::user, u_debugreg);
#[cfg(not(target_arch = "x86_64"))]
const DEBUGREG: usize = 0;

/// The tracer, in the forked child: only system calls, no allocation, never returns. It traces
/// thread `tid` of process `group` (which leads its process group).
unsafe fn trace(group: i32, pid: i32, call: Call, action: Action, pipes: Pipes) -> ! {
    // SAFETY: plain system calls on our own descriptors and memory, and on the traced process.
    unsafe {
        for fd in pipes.grader_ends {
            libc::close(fd);
        }
        // Nothing else of the grader's: in the program's group, a file the grader held at the
        // fork (one another process opened, as the file audit is told) would count as the
        // program's.
        let (low, high) = (
            pipes.report.min(pipes.resume),
            pipes.report.max(pipes.resume),
        );
        for (first, last) in [(3, low - 1), (low + 1, high - 1), (high + 1, i32::MAX)] {
            if first <= last
                && libc::syscall(libc::SYS_close_range, first as u32, last as u32, 0) != 0
            {
                // Kernels before 5.9 have no close_range.
                for fd in first..=last.min(4095) {
                    libc::close(fd);
                }
            }
        }
        let say = |byte: u8| libc::write(pipes.report, [byte].as_ptr().cast(), 1);
        let gone = || -> ! {
            say(GONE);
            libc::_exit(0)
        };
        libc::setpgid(0, group);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        let follow = match action {
            Action::OnAnyThread(_) | Action::OnNewThread => libc::PTRACE_O_TRACECLONE as usize,
            Action::FailInEveryProcess(_) => {
                (libc::PTRACE_O_TRACECLONE | libc::PTRACE_O_TRACEFORK | libc::PTRACE_O_TRACEVFORK)
                    as usize
            }
            _ => 0,
        };
        let options = libc::PTRACE_O_TRACESYSGOOD as usize | follow;
        if libc::ptrace(libc::PTRACE_SEIZE, pid, 0usize, options) != 0 {
            say(REFUSED);
            libc::_exit(1);
        }
        let mut status = 0;
        if libc::ptrace(libc::PTRACE_INTERRUPT, pid, 0usize, 0usize) != 0
            || libc::waitpid(pid, &mut status, libc::__WALL) != pid
        {
            gone();
        }
        say(ATTACHED);
        if let Action::WatchAt(address, fields) = action {
            watch_from(pid, address, fields, pipes);
        }
        if let Action::InTurn(steps) = action {
            in_turn(pid, steps, pipes);
        }
        if let Action::BreakAt(addresses, call) = action {
            break_from(pid, addresses, call, pipes);
        }
        if let Action::Signal(signal) = action {
            signal_in_call(pid, signal, pipes);
        }
        if let Action::OnAnyThread(errno) = action {
            on_any_thread(pid, call, errno, false, pipes);
        }
        if let Action::OnNewThread = action {
            on_any_thread(pid, call, None, true, pipes);
        }
        if let Action::FailInEveryProcess(errno) = action {
            fail_in_every_process(pid, call, errno, pipes);
        }
        let mut signal = 0usize;
        let mut left_to_fail = match action {
            Action::FailTimes(_, times) => times,
            _ => 0,
        };
        loop {
            if libc::ptrace(libc::PTRACE_SYSCALL, pid, 0usize, signal) != 0
                || libc::waitpid(pid, &mut status, libc::__WALL) != pid
                || !libc::WIFSTOPPED(status)
            {
                gone();
            }
            signal = 0;
            let stopped_by = libc::WSTOPSIG(status);
            if stopped_by == libc::SIGTRAP | 0x80 {
                if matches!(action, Action::FailTimes(..) | Action::ReportEach)
                    && told_to_stop(pipes.resume)
                {
                    libc::ptrace(libc::PTRACE_DETACH, pid, 0usize, 0usize);
                    libc::_exit(0);
                }
                if !at_stop_for(pid, call) {
                    continue;
                }
                match action {
                    Action::FailTimes(errno, _) => {
                        if !fail_call(pid, errno, &mut status) {
                            gone();
                        }
                        say(FAILED);
                        left_to_fail = left_to_fail.saturating_sub(1);
                        if left_to_fail > 0 {
                            continue;
                        }
                    }
                    Action::Hold => {
                        say(HELD);
                        let mut byte = [0u8];
                        libc::read(pipes.resume, byte.as_mut_ptr().cast(), 1);
                    }
                    Action::HoldAfter | Action::HoldAround => {
                        let mut byte = [0u8];
                        if matches!(action, Action::HoldAround) {
                            say(HELD);
                            libc::read(pipes.resume, byte.as_mut_ptr().cast(), 1);
                        }
                        if !to_exit_stop(pid, &mut status) {
                            gone();
                        }
                        say(HELD);
                        libc::read(pipes.resume, byte.as_mut_ptr().cast(), 1);
                    }
                    Action::Watch(fields) => watch(pid, call, fields, pipes),
                    Action::WatchAt(..)
                    | Action::BreakAt(..)
                    | Action::InTurn(_)
                    | Action::Signal(_)
                    | Action::OnAnyThread(_)
                    | Action::FailInEveryProcess(_)
                    | Action::OnNewThread => {}
                    Action::Fail(errno) => {
                        if !fail_call(pid, errno, &mut status) {
                            gone();
                        }
                        // Said while the program is still stopped: the check hears it before
                        // anything the program says next.
                        say(FAILED);
                        libc::ptrace(libc::PTRACE_DETACH, pid, 0usize, 0usize);
                        libc::_exit(0);
                    }
                    Action::FailRaising(errno, raised) => {
                        if !fail_call(pid, errno, &mut status) {
                            gone();
                        }
                        // Queued while the thread is traced (so not dropped as ignored yet), it
                        // meets the thread's disposition once detached, as the kernel's would.
                        libc::syscall(libc::SYS_tkill, pid, raised);
                        say(FAILED);
                        libc::ptrace(libc::PTRACE_DETACH, pid, 0usize, 0usize);
                        libc::_exit(0);
                    }
                    Action::Report => {
                        // Said while the program is still stopped, as for a failed call.
                        say(FAILED);
                    }
                    Action::ReportEach => {
                        say(FAILED);
                        continue;
                    }
                    Action::DefaultDisposition(signal) => {
                        if !default_disposition(pid, signal, &mut status) {
                            gone();
                        }
                        say(FAILED);
                    }
                    Action::ReadRealTimer => match real_timer_armed(pid, &mut status) {
                        Some(armed) => {
                            say(if armed { TIMER_ARMED } else { NO_TIMER });
                        }
                        None => gone(),
                    },
                    Action::Shorten(most) => {
                        let third = libc::ptrace(libc::PTRACE_PEEKUSER, pid, RDX, 0usize);
                        if third as u64 > most {
                            libc::ptrace(libc::PTRACE_POKEUSER, pid, RDX, most as usize);
                        }
                        // Said while the program is still stopped, as for a failed call.
                        say(FAILED);
                    }
                }
                libc::ptrace(libc::PTRACE_DETACH, pid, 0usize, 0usize);
                libc::_exit(0);
            } else if status >> 16 == 0 && stopped_by != libc::SIGTRAP {
                // A signal on its way to the program: deliver it.
                signal = stopped_by as usize;
            }
        }
    }
}

/// [`Action::OnAnyThread`], in the forked child: `pid` is stopped, traced, and the threads it
/// creates are traced as they start. At the first entry of `call` on any of them, fails it with
/// `errno` or holds that thread as the call returns until the check lets it go; then ends,
/// which lets every thread go on untraced. With `new_only`, only a thread `pid` started is
/// acted at, and every other thread is let go before that one is held. Never returns.
unsafe fn on_any_thread(
    pid: i32,
    call: Call,
    errno: Option<i32>,
    new_only: bool,
    pipes: Pipes,
) -> ! {
    // SAFETY: plain system calls on our own descriptors and memory, and on the traced threads.
    unsafe {
        let say = |byte: u8| libc::write(pipes.report, [byte].as_ptr().cast(), 1);
        let mut traced = vec![pid];
        every_stop(pid, pipes, |tid, status| {
            if !traced.contains(&tid) {
                traced.push(tid);
            }
            let at_call = libc::WSTOPSIG(*status) == libc::SIGTRAP | 0x80;
            if !at_call || (new_only && tid == pid) || !at_stop_for(tid, call) {
                return GoOn::AsStopped;
            }
            match errno {
                Some(errno) => {
                    if !fail_call(tid, errno, status) {
                        tracer_gone(pipes);
                    }
                    say(FAILED);
                }
                None => {
                    if !to_exit_stop(tid, status) {
                        tracer_gone(pipes);
                    }
                    if new_only {
                        for &other in traced.iter().filter(|&&t| t != tid) {
                            let_go(other);
                        }
                    }
                    say(HELD);
                    let mut byte = [0u8];
                    libc::read(pipes.resume, byte.as_mut_ptr().cast(), 1);
                }
            }
            libc::ptrace(libc::PTRACE_DETACH, tid, 0usize, 0usize);
            libc::_exit(0);
        })
    }
}

/// [`Action::FailInEveryProcess`], in the forked child: `pid` is stopped, traced, and the
/// threads and processes it creates are traced as they start. Fails every entry of `call` on
/// any of them with `errno`, saying each, until `pid` is gone or the tracer is killed (which
/// lets every one go on untraced). Never returns.
unsafe fn fail_in_every_process(pid: i32, call: Call, errno: i32, pipes: Pipes) -> ! {
    // SAFETY: plain system calls on our own descriptors and memory, and on the traced threads.
    unsafe {
        every_stop(pid, pipes, |tid, status| {
            let at_call = libc::WSTOPSIG(*status) == libc::SIGTRAP | 0x80;
            if !at_call || !at_stop_for(tid, call) {
                return GoOn::AsStopped;
            }
            // A thread gone on its way out of the call is only one of several.
            if !fail_call(tid, errno, status) {
                return GoOn::Not;
            }
            libc::write(pipes.report, [FAILED].as_ptr().cast(), 1);
            GoOn::Quietly
        })
    }
}

/// Follows `pid` (stopped, traced) and every thread and process traced from it, from stop to
/// stop, each resumed to its next system call, until `pid` is gone. `at_stop` is given each
/// stop (the thread, its status) and says how the thread goes on. Never returns.
unsafe fn every_stop(pid: i32, pipes: Pipes, mut at_stop: impl FnMut(i32, &mut i32) -> GoOn) -> ! {
    // SAFETY: plain system calls on the traced threads.
    unsafe {
        let mut status = 0;
        let mut next = Some((pid, 0usize));
        loop {
            if let Some((tid, signal)) = next.take() {
                libc::ptrace(libc::PTRACE_SYSCALL, tid, 0usize, signal);
            }
            let tid = libc::waitpid(-1, &mut status, libc::__WALL);
            if tid == -1 {
                tracer_gone(pipes);
            }
            if !libc::WIFSTOPPED(status) {
                if tid == pid {
                    tracer_gone(pipes);
                }
                continue;
            }
            next = match at_stop(tid, &mut status) {
                GoOn::AsStopped => Some((tid, passed_on(status))),
                GoOn::Quietly => Some((tid, 0)),
                GoOn::Not => None,
            };
        }
    }
}

/// How a thread [`every_stop`] gave a stop goes on.
enum GoOn {
    /// Handing on a signal it was stopped for (event stops and call stops carry none).
    AsStopped,
    /// With no signal: a stop the tracer has dealt with.
    Quietly,
    /// Not at all: it is gone.
    Not,
}

/// Tells the check the program is gone, and ends the tracer.
fn tracer_gone(pipes: Pipes) -> ! {
    // SAFETY: one byte from a live buffer to our own pipe; then the tracer ends.
    unsafe {
        libc::write(pipes.report, [GONE].as_ptr().cast(), 1);
        libc::_exit(0)
    }
}

/// Stops the traced thread `tid` (running, or stopped with its stop not yet waited for) and
/// detaches it, handing on a signal it was stopped for; a thread gone is left alone.
unsafe fn let_go(tid: i32) {
    // SAFETY: plain system calls on a traced thread.
    unsafe {
        libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0usize, 0usize);
        let mut status = 0;
        if libc::waitpid(tid, &mut status, libc::__WALL) != tid || !libc::WIFSTOPPED(status) {
            return;
        }
        let by = libc::WSTOPSIG(status);
        let signal = if by != libc::SIGTRAP | 0x80 && status >> 16 == 0 && by != libc::SIGTRAP {
            by as usize
        } else {
            0
        };
        libc::ptrace(libc::PTRACE_DETACH, tid, 0usize, signal);
    }
}

/// [`Action::InTurn`], in the forked child: `pid` is stopped, traced. Does each step at the next
/// entry of its call, in turn, then detaches. Never returns.
unsafe fn in_turn(pid: i32, steps: [Option<(Call, Step)>; MAX_STEPS], pipes: Pipes) -> ! {
    // SAFETY: plain system calls on our own descriptors and memory, and on the traced process.
    unsafe {
        let say = |byte: u8| libc::write(pipes.report, [byte].as_ptr().cast(), 1);
        let gone = || -> ! {
            say(GONE);
            libc::_exit(0)
        };
        let mut status = 0;
        let mut signal = 0usize;
        let mut next = 0;
        while let Some(&Some((call, step))) = steps.get(next) {
            if libc::ptrace(libc::PTRACE_SYSCALL, pid, 0usize, signal) != 0
                || libc::waitpid(pid, &mut status, libc::__WALL) != pid
                || !libc::WIFSTOPPED(status)
            {
                gone();
            }
            signal = 0;
            let stopped_by = libc::WSTOPSIG(status);
            if stopped_by == libc::SIGTRAP | 0x80 {
                if !at_stop_for(pid, call) {
                    continue;
                }
                match step {
                    Step::Fail(errno) => {
                        if !fail_call(pid, errno, &mut status) {
                            gone();
                        }
                        say(FAILED);
                    }
                    Step::FailRaising(errno, raised) => {
                        if !fail_call(pid, errno, &mut status) {
                            gone();
                        }
                        // Queued while the thread is traced, delivered (or dropped as ignored)
                        // at its next stop, as the kernel's own would be.
                        libc::syscall(libc::SYS_tkill, pid, raised);
                        say(FAILED);
                    }
                    Step::Pass => {
                        if !to_exit_stop(pid, &mut status) {
                            gone();
                        }
                    }
                    Step::Hold => {
                        say(HELD);
                        let mut byte = [0u8];
                        libc::read(pipes.resume, byte.as_mut_ptr().cast(), 1);
                    }
                    Step::HoldAfter => {
                        if !to_exit_stop(pid, &mut status) {
                            gone();
                        }
                        say(HELD);
                        let mut byte = [0u8];
                        libc::read(pipes.resume, byte.as_mut_ptr().cast(), 1);
                    }
                }
                next += 1;
            } else if status >> 16 == 0 && stopped_by != libc::SIGTRAP {
                // A signal on its way to the program: deliver it.
                signal = stopped_by as usize;
            }
        }
        libc::ptrace(libc::PTRACE_DETACH, pid, 0usize, 0usize);
        libc::_exit(0)
    }
}

/// [`Action::Signal`], in the forked child: `pid` is stopped, traced, out of the call it was
/// blocked in (which the kernel will restart or fail once a signal is handled). Sends `signal`
/// to it and follows it through the signal's delivery and its handler to the end of the
/// handler's `rt_sigreturn()`, whose result is what the interrupted call now returns: `-EINTR`,
/// or the call's own number as the kernel makes it again. Reports which, detaches. Never
/// returns.
unsafe fn signal_in_call(pid: i32, signal: i32, pipes: Pipes) -> ! {
    // SAFETY: plain system calls on our own descriptors and memory, and on the traced process.
    unsafe {
        let say = |byte: u8| libc::write(pipes.report, [byte].as_ptr().cast(), 1);
        let gone = || -> ! {
            say(GONE);
            libc::_exit(0)
        };
        libc::syscall(libc::SYS_tkill, pid, signal);
        let mut status = 0;
        let mut pass = 0usize;
        let mut entered = -1i64;
        loop {
            if libc::ptrace(libc::PTRACE_SYSCALL, pid, 0usize, pass) != 0
                || libc::waitpid(pid, &mut status, libc::__WALL) != pid
                || !libc::WIFSTOPPED(status)
            {
                gone();
            }
            pass = 0;
            let stopped_by = libc::WSTOPSIG(status);
            if stopped_by == libc::SIGTRAP | 0x80 {
                let mut info = [0u8; 96];
                let got = libc::ptrace(
                    libc::PTRACE_GET_SYSCALL_INFO,
                    pid,
                    info.len(),
                    info.as_mut_ptr(),
                );
                if got <= 0 {
                    continue;
                }
                if info[0] == libc::PTRACE_SYSCALL_INFO_ENTRY {
                    let mut number = [0u8; 8];
                    number.copy_from_slice(&info[24..32]);
                    entered = i64::from_ne_bytes(number);
                } else if info[0] == libc::PTRACE_SYSCALL_INFO_EXIT
                    && entered == libc::SYS_rt_sigreturn
                {
                    let result = libc::ptrace(libc::PTRACE_PEEKUSER, pid, RAX, 0usize) as i64;
                    say(if result == -(libc::EINTR as i64) {
                        INTERRUPTED
                    } else {
                        RESTARTED
                    });
                    libc::ptrace(libc::PTRACE_DETACH, pid, 0usize, 0usize);
                    libc::_exit(0);
                }
            } else if status >> 16 == 0 && stopped_by != libc::SIGTRAP {
                // A signal on its way to the program (ours among them): deliver it.
                pass = stopped_by as usize;
            }
        }
    }
}

/// Whether the check has written to the tracer's pipe (or closed it): stop tracing.
unsafe fn told_to_stop(resume: i32) -> bool {
    let mut fds = [libc::pollfd {
        fd: resume,
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: one valid pollfd, no waiting.
    unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) > 0 }
}

/// At the entry stop of a call of `pid`: makes an `rt_sigaction(signal, SIG_DFL)` in its place
/// (the zeroed `struct sigaction` it reads put on the program's stack, below its red zone, where
/// nothing of the program's lives), then puts the call's registers back with the instruction
/// pointer on its `syscall` instruction, so that the program makes the call again once it goes
/// on. False if the program is gone.
#[cfg(target_arch = "x86_64")]
unsafe fn default_disposition(pid: i32, signal: i32, status: &mut i32) -> bool {
    // SAFETY: plain system calls on the traced process, and on registers of our own.
    unsafe {
        let mut regs: libc::user_regs_struct = std::mem::zeroed();
        if libc::ptrace(libc::PTRACE_GETREGS, pid, 0usize, &mut regs) != 0 {
            return false;
        }
        // The kernel's struct sigaction: handler (SIG_DFL is 0), flags, restorer, mask.
        let at = (regs.rsp - 128 - 64) & !15;
        for word in 0..4u64 {
            libc::ptrace(libc::PTRACE_POKEDATA, pid, at + 8 * word, 0usize);
        }
        let mut made = regs;
        made.orig_rax = libc::SYS_rt_sigaction as u64;
        made.rdi = signal as u64;
        made.rsi = at;
        made.rdx = 0;
        made.r10 = 8;
        if libc::ptrace(libc::PTRACE_SETREGS, pid, 0usize, &made) != 0 || !to_exit_stop(pid, status)
        {
            return false;
        }
        // The `syscall` instruction is two bytes long; rax holds the call's number again.
        let mut again = regs;
        again.rip -= 2;
        again.rax = regs.orig_rax;
        libc::ptrace(libc::PTRACE_SETREGS, pid, 0usize, &again) == 0
    }
}

/// At the entry stop of a call of `pid`: makes a `getitimer(ITIMER_REAL)` in its place (the
/// `struct itimerval` it writes put on the program's stack below its red zone, as
/// [`default_disposition`] does), reads it, then puts the call back to be made again. Whether
/// the timer's value (what is left before it fires) is not zero; `None` if the program is gone.
#[cfg(target_arch = "x86_64")]
unsafe fn real_timer_armed(pid: i32, status: &mut i32) -> Option<bool> {
    // SAFETY: plain system calls on the traced process, and on registers of our own.
    unsafe {
        let mut regs: libc::user_regs_struct = std::mem::zeroed();
        if libc::ptrace(libc::PTRACE_GETREGS, pid, 0usize, &mut regs) != 0 {
            return None;
        }
        let at = (regs.rsp - 128 - 64) & !15;
        let mut made = regs;
        made.orig_rax = libc::SYS_getitimer as u64;
        made.rdi = libc::ITIMER_REAL as u64;
        made.rsi = at;
        if libc::ptrace(libc::PTRACE_SETREGS, pid, 0usize, &made) != 0 || !to_exit_stop(pid, status)
        {
            return None;
        }
        // struct itimerval: the interval (seconds, microseconds), then the value.
        let value =
            [2u64, 3].map(|word| libc::ptrace(libc::PTRACE_PEEKDATA, pid, at + 8 * word, 0usize));
        let mut again = regs;
        again.rip -= 2;
        again.rax = regs.orig_rax;
        if libc::ptrace(libc::PTRACE_SETREGS, pid, 0usize, &again) != 0 {
            return None;
        }
        Some(value.iter().any(|word| *word != 0))
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn real_timer_armed(_pid: i32, _status: &mut i32) -> Option<bool> {
    None
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn default_disposition(_pid: i32, _signal: i32, _status: &mut i32) -> bool {
    false
}

/// Makes the call `pid` is stopped at the entry of fail with `errno`: no call at all (number -1),
/// and on its way out, the error. One way for every failing action; false if `pid` is gone.
unsafe fn fail_call(pid: i32, errno: i32, status: &mut i32) -> bool {
    // SAFETY: plain system calls on the traced process.
    unsafe {
        libc::ptrace(libc::PTRACE_POKEUSER, pid, ORIG_RAX, -1isize);
        if !to_exit_stop(pid, status) {
            return false;
        }
        libc::ptrace(libc::PTRACE_POKEUSER, pid, RAX, -(errno as isize));
        true
    }
}

/// Resumes `pid`, stopped at a call's entry, up to that call's exit stop, delivering any signal
/// that stops it on the way; false if it is gone.
unsafe fn to_exit_stop(pid: i32, status: &mut i32) -> bool {
    // SAFETY: plain system calls on the traced process.
    unsafe {
        let mut pass = 0usize;
        loop {
            if libc::ptrace(libc::PTRACE_SYSCALL, pid, 0usize, pass) != 0
                || libc::waitpid(pid, status, libc::__WALL) != pid
                || !libc::WIFSTOPPED(*status)
            {
                return false;
            }
            pass = 0;
            let by = libc::WSTOPSIG(*status);
            if by == libc::SIGTRAP | 0x80 {
                return true;
            }
            if *status >> 16 == 0 && by != libc::SIGTRAP {
                pass = by as usize;
            }
        }
    }
}

/// Watching, in the forked child: `pid` is stopped at the entry of `call` (a `shmat()` or an
/// `mmap()`). Lets it return, sets the watchpoints on `fields` of the address it returned (or
/// waits for the next such call if it failed), then stops the program at each access,
/// reporting each to the check, until the check says no more. Never returns.
unsafe fn watch(pid: i32, call: Call, fields: &[Field], pipes: Pipes) -> ! {
    // SAFETY: plain system calls on our own descriptors and memory, and on the traced process.
    unsafe {
        let say = |byte: u8| libc::write(pipes.report, [byte].as_ptr().cast(), 1);
        let gone = || -> ! {
            say(GONE);
            libc::_exit(0)
        };
        let mut status = 0;
        let address = loop {
            // To the exit of the call it is entering.
            match next_stop(pid, libc::PTRACE_SYSCALL, 0, pipes.resume, &mut status) {
                Stop::Stopped => {}
                Stop::Word => leave(pid, Left::Running, pipes),
                Stop::Gone => gone(),
            }
            let result = libc::ptrace(libc::PTRACE_PEEKUSER, pid, RAX, 0usize);
            if !(-4095..0).contains(&(result as i64)) {
                break result as u64;
            }
            // It failed: the next such call, then.
            let mut signal = 0usize;
            loop {
                match next_stop(pid, libc::PTRACE_SYSCALL, signal, pipes.resume, &mut status) {
                    Stop::Stopped => {}
                    Stop::Word => leave(pid, Left::Running, pipes),
                    Stop::Gone => gone(),
                }
                signal = 0;
                let stopped_by = libc::WSTOPSIG(status);
                if stopped_by == libc::SIGTRAP | 0x80 {
                    if at_stop_for(pid, call) {
                        break;
                    }
                } else if status >> 16 == 0 && stopped_by != libc::SIGTRAP {
                    signal = stopped_by as usize;
                }
            }
        };
        watch_from(pid, address, fields, pipes)
    }
}

/// Watching, in the forked child: `pid` is stopped. Sets the watchpoints on `fields` of the
/// memory at `address`, then stops the program at each access, reporting each to the check,
/// until the check says no more. Never returns.
unsafe fn watch_from(pid: i32, address: u64, fields: &[Field], pipes: Pipes) -> ! {
    // SAFETY: plain system calls on our own descriptors and memory, and on the traced process.
    unsafe {
        let say = |byte: u8| libc::write(pipes.report, [byte].as_ptr().cast(), 1);
        let gone = || -> ! {
            say(GONE);
            libc::_exit(0)
        };
        let mut status = 0;
        let mut control = 0u64;
        for (n, field) in fields.iter().take(4).enumerate() {
            let len_bits: u64 = match field.len {
                1 => 0b00,
                2 => 0b01,
                8 => 0b10,
                _ => 0b11,
            };
            let rw_bits: u64 = if field.loads { 0b11 } else { 0b01 };
            let at = address + field.offset as u64;
            libc::ptrace(libc::PTRACE_POKEUSER, pid, DEBUGREG + 8 * n, at as usize);
            control |= 1 << (2 * n);
            control |= (rw_bits | len_bits << 2) << (16 + 4 * n);
        }
        if libc::ptrace(
            libc::PTRACE_POKEUSER,
            pid,
            DEBUGREG + 8 * 7,
            control as usize,
        ) != 0
        {
            // No watchpoints on this machine.
            libc::ptrace(libc::PTRACE_POKEUSER, pid, DEBUGREG + 8 * 7, 0usize);
            libc::ptrace(libc::PTRACE_DETACH, pid, 0usize, 0usize);
            say(NO_WATCHPOINTS);
            libc::_exit(0);
        }
        say(ARMED);
        let mut signal = 0usize;
        loop {
            match next_stop(pid, libc::PTRACE_CONT, signal, pipes.resume, &mut status) {
                Stop::Stopped => {}
                Stop::Word => leave(pid, Left::RunningWatched, pipes),
                Stop::Gone => gone(),
            }
            signal = 0;
            let stopped_by = libc::WSTOPSIG(status);
            if status >> 16 != 0 {
                continue; // An event stop (a group stop): it goes on.
            }
            let hit = libc::ptrace(libc::PTRACE_PEEKUSER, pid, DEBUGREG + 8 * 6, 0usize);
            if stopped_by == libc::SIGTRAP && hit & 0xf != 0 {
                libc::ptrace(libc::PTRACE_POKEUSER, pid, DEBUGREG + 8 * 6, 0usize);
                // Which field: the first whose DR6 bit is set, right after the hit.
                let which = (hit as u64 & 0xf).trailing_zeros() as u8;
                libc::write(pipes.report, [HIT, which].as_ptr().cast(), 2);
                let mut word = [0u8];
                if libc::read(pipes.resume, word.as_mut_ptr().cast(), 1) != 1 || word[0] != GO_ON {
                    leave(pid, Left::Stopped(status), pipes);
                }
            } else {
                // A signal on its way to the program: deliver it.
                signal = stopped_by as usize;
            }
        }
    }
}

/// Registers of the first two arguments in `struct user` (x86-64).
const RDI: usize = 14 * 8;
const RSI: usize = 13 * 8;

/// A breakpoint, in the forked child: `pid` is stopped. Sets a hardware breakpoint on the
/// instruction at `address`, then stops the program at each execution of it (and at each entry
/// of `call`, if given), reporting each with the first two arguments, until the check says no
/// more. Never returns.
unsafe fn break_from(pid: i32, addresses: [u64; 4], call: Option<Call>, pipes: Pipes) -> ! {
    // SAFETY: plain system calls on our own descriptors and memory, and on the traced process.
    unsafe {
        let say = |byte: u8| libc::write(pipes.report, [byte].as_ptr().cast(), 1);
        let gone = || -> ! {
            say(GONE);
            libc::_exit(0)
        };
        let mut status = 0;
        let mut enabled = 0usize;
        for (n, &address) in addresses.iter().enumerate() {
            if address != 0 {
                libc::ptrace(
                    libc::PTRACE_POKEUSER,
                    pid,
                    DEBUGREG + 8 * n,
                    address as usize,
                );
                enabled |= 1 << (2 * n);
            }
        }
        // DRn enabled locally; type 00 (execution) and length 00, as instruction breakpoints
        // must be.
        if libc::ptrace(libc::PTRACE_POKEUSER, pid, DEBUGREG + 8 * 7, enabled) != 0 {
            libc::ptrace(libc::PTRACE_POKEUSER, pid, DEBUGREG + 8 * 7, 0usize);
            libc::ptrace(libc::PTRACE_DETACH, pid, 0usize, 0usize);
            say(NO_WATCHPOINTS);
            libc::_exit(0);
        }
        say(ARMED);
        // Stops at system calls too only when one is asked for.
        let request = if call.is_some() {
            libc::PTRACE_SYSCALL
        } else {
            libc::PTRACE_CONT
        };
        // The stop, reported with the first two arguments (`rdi`, `rsi`: a function's, or a
        // system call's at its entry) in one write, so that the check reads them together;
        // then the check's word.
        let report = |which: u8| {
            let mut report = [0u8; 18];
            report[17] = which;
            report[0] = HIT;
            for (n, register) in [RDI, RSI].into_iter().enumerate() {
                let value = libc::ptrace(libc::PTRACE_PEEKUSER, pid, register, 0usize) as u64;
                report[1 + 8 * n..9 + 8 * n].copy_from_slice(&value.to_ne_bytes());
            }
            libc::write(pipes.report, report.as_ptr().cast(), report.len());
            let mut word = [0u8];
            let read = libc::read(pipes.resume, word.as_mut_ptr().cast(), 1);
            (read == 1).then_some(word[0])
        };
        let mut signal = 0usize;
        loop {
            match next_stop(pid, request, signal, pipes.resume, &mut status) {
                Stop::Stopped => {}
                Stop::Word => leave(pid, Left::RunningWatched, pipes),
                Stop::Gone => gone(),
            }
            signal = 0;
            let stopped_by = libc::WSTOPSIG(status);
            if status >> 16 != 0 {
                continue; // An event stop (a group stop): it goes on.
            }
            if stopped_by == libc::SIGTRAP | 0x80 {
                // A system call's entry or exit: only the entries of `call` are reported.
                if let Some(call) = call
                    && at_stop_for(pid, call)
                    && report(AT_CALL as u8) != Some(GO_ON)
                {
                    leave(pid, Left::Stopped(status), pipes);
                }
                continue;
            }
            let hit = libc::ptrace(libc::PTRACE_PEEKUSER, pid, DEBUGREG + 8 * 6, 0usize);
            if stopped_by == libc::SIGTRAP && hit & enabled_hits(enabled) != 0 {
                libc::ptrace(libc::PTRACE_POKEUSER, pid, DEBUGREG + 8 * 6, 0usize);
                let word = report((hit & 0xf).trailing_zeros() as u8);
                if word == Some(RETURN) {
                    let mut value = [0u8; 8];
                    if libc::read(pipes.resume, value.as_mut_ptr().cast(), 8) != 8 {
                        leave(pid, Left::Stopped(status), pipes);
                    }
                    // At the function's first instruction the return address is at the top of
                    // the stack: pop it into rip, as a `ret` would.
                    let sp = libc::ptrace(libc::PTRACE_PEEKUSER, pid, RSP, 0usize) as usize;
                    *libc::__errno_location() = 0;
                    let back = libc::ptrace(libc::PTRACE_PEEKDATA, pid, sp, 0usize);
                    if *libc::__errno_location() != 0 {
                        leave(pid, Left::Stopped(status), pipes);
                    }
                    libc::ptrace(libc::PTRACE_POKEUSER, pid, RIP, back as usize);
                    libc::ptrace(libc::PTRACE_POKEUSER, pid, RSP, sp + 8);
                    let value = i64::from_ne_bytes(value);
                    libc::ptrace(libc::PTRACE_POKEUSER, pid, RAX, value as usize);
                } else if word != Some(GO_ON) {
                    leave(pid, Left::Stopped(status), pipes);
                }
            } else {
                // A signal on its way to the program: deliver it.
                signal = stopped_by as usize;
            }
        }
    }
}

/// The bits of DR6 that say which of the breakpoints enabled in DR7 (`enabled`) was hit.
fn enabled_hits(enabled: usize) -> i64 {
    (0..4)
        .filter(|n| enabled & (1 << (2 * n)) != 0)
        .fold(0, |bits, n| bits | (1 << n))
}

/// How [`next_stop`] ended.
#[derive(PartialEq, Eq)]
enum Stop {
    /// The program stopped (`status` says how).
    Stopped,
    /// The check said something first (the program was left running).
    Word,
    /// The program is gone.
    Gone,
}

/// Resumes the program with `request` (and `signal`) and waits for its next stop, looking at the
/// check's pipe meanwhile.
unsafe fn next_stop(
    pid: i32,
    request: libc::c_uint,
    signal: usize,
    resume: i32,
    status: &mut i32,
) -> Stop {
    // SAFETY: plain system calls on the traced process and our own descriptors.
    unsafe {
        if libc::ptrace(request, pid, 0usize, signal) != 0 {
            return Stop::Gone;
        }
        loop {
            let r = libc::waitpid(pid, status, libc::__WALL | libc::WNOHANG);
            if r == pid {
                return if libc::WIFSTOPPED(*status) {
                    Stop::Stopped
                } else {
                    Stop::Gone
                };
            }
            if r < 0 {
                return Stop::Gone;
            }
            let mut fds = [libc::pollfd {
                fd: resume,
                events: libc::POLLIN,
                revents: 0,
            }];
            if libc::poll(fds.as_mut_ptr(), 1, 1) > 0 {
                return Stop::Word;
            }
        }
    }
}

/// How the program is when the tracer stops watching.
#[derive(Clone, Copy)]
enum Left {
    /// Running, no watchpoint set yet.
    Running,
    /// Running, watched.
    RunningWatched,
    /// Stopped at a watched access (with this status), watched.
    Stopped(i32),
}

/// Stops watching: stops the program if it runs, clears the watchpoints, detaches and exits.
unsafe fn leave(pid: i32, left: Left, pipes: Pipes) -> ! {
    // SAFETY: plain system calls on the traced process.
    unsafe {
        let mut status = 0;
        let (armed, status) = match left {
            Left::Stopped(status) => (true, status),
            Left::Running | Left::RunningWatched => {
                if libc::ptrace(libc::PTRACE_INTERRUPT, pid, 0usize, 0usize) != 0
                    || libc::waitpid(pid, &mut status, libc::__WALL) != pid
                    || !libc::WIFSTOPPED(status)
                {
                    libc::write(pipes.report, [GONE].as_ptr().cast(), 1);
                    libc::_exit(0);
                }
                (matches!(left, Left::RunningWatched), status)
            }
        };
        let mut status = status;
        if armed {
            libc::ptrace(libc::PTRACE_POKEUSER, pid, DEBUGREG + 8 * 7, 0usize);
            // An access just before this stop may have left its SIGTRAP pending: delivered
            // after the detach, it would kill the program. It is let come while traced (a
            // signal-delivery stop, not passed on), other signals passed on before it.
            while sigtrap_pending(pid) {
                if libc::ptrace(libc::PTRACE_CONT, pid, 0usize, passed_on(status)) != 0
                    || libc::waitpid(pid, &mut status, libc::__WALL) != pid
                    || !libc::WIFSTOPPED(status)
                {
                    libc::write(pipes.report, [GONE].as_ptr().cast(), 1);
                    libc::_exit(0);
                }
            }
        }
        libc::ptrace(libc::PTRACE_DETACH, pid, 0usize, passed_on(status));
        libc::_exit(0)
    }
}

/// The signal a stop with `status` was for, to pass on to the program as it goes on: none for
/// an event stop, a watchpoint's SIGTRAP or a system call stop.
fn passed_on(status: i32) -> usize {
    let stopped_by = libc::WSTOPSIG(status);
    if status >> 16 == 0 && stopped_by != libc::SIGTRAP && stopped_by != libc::SIGTRAP | 0x80 {
        stopped_by as usize
    } else {
        0
    }
}

/// Whether a SIGTRAP waits in the queue of the (stopped, traced) thread `pid`.
unsafe fn sigtrap_pending(pid: i32) -> bool {
    /// `struct ptrace_peeksiginfo_args`.
    #[repr(C)]
    struct PeekArgs {
        off: u64,
        flags: u32,
        nr: i32,
    }
    const QUEUED: usize = 8;
    let args = PeekArgs {
        off: 0,
        flags: 0,
        nr: QUEUED as i32,
    };
    // siginfo_t is 128 bytes; si_signo is its first int.
    let mut infos = [[0i32; 32]; QUEUED];
    // SAFETY: the kernel writes at most `nr` siginfo_t into `infos`.
    let got = unsafe {
        libc::ptrace(
            libc::PTRACE_PEEKSIGINFO,
            pid,
            &args as *const PeekArgs,
            infos.as_mut_ptr(),
        )
    };
    got > 0
        && infos[..got as usize]
            .iter()
            .any(|info| info[0] == libc::SIGTRAP)
}

/// Whether `pid`, stopped at a system call, is entering `call`.
/// At a call stop of thread `tid`: whether it is the entry of `call`. Every stop the tracer
/// examines passes here, so that a look at whether the program is traced is noted too.
///
/// # Safety
///
/// `tid` is a thread this process traces, stopped.
unsafe fn at_stop_for(tid: i32, call: Call) -> bool {
    // SAFETY: as for this function.
    unsafe {
        super::looks::note(tid);
        at_entry_of(tid, call)
    }
}

/// The call thread `tid` is stopped at the entry of, as `struct ptrace_syscall_info`: op (u8) at
/// 0; the number at 24 and the arguments (u64 each) from 32. `None` at any other stop.
///
/// # Safety
///
/// `tid` is a thread this process traces, stopped.
pub(super) unsafe fn entry_info(tid: i32) -> Option<[u8; 96]> {
    let mut info = [0u8; 96];
    // SAFETY: the kernel writes at most info.len() bytes into it.
    let got = unsafe {
        libc::ptrace(
            libc::PTRACE_GET_SYSCALL_INFO,
            tid,
            info.len(),
            info.as_mut_ptr(),
        )
    };
    (got > 0 && info[0] == libc::PTRACE_SYSCALL_INFO_ENTRY).then_some(info)
}

/// Word `at` (a byte offset) of an [`entry_info`].
pub(super) fn info_word(info: &[u8; 96], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&info[at..at + 8]);
    u64::from_ne_bytes(bytes)
}

unsafe fn at_entry_of(pid: i32, call: Call) -> bool {
    // SAFETY: as for this function.
    let Some(info) = (unsafe { entry_info(pid) }) else {
        return false;
    };
    let word = |at: usize| info_word(&info, at);
    if call.number != ANY_NUMBER && word(24) != call.number as u64 {
        return false;
    }
    // Whether the string at `addr` in the program's memory is `path`, read with its NUL.
    let points_to = |addr: u64, path: &str| {
        let mut read = [0u8; 256];
        let want = path.len() + 1;
        want <= read.len()
            && read_memory(pid, addr, &mut read[..want])
            && &read[..path.len()] == path.as_bytes()
            && read[path.len()] == 0
    };
    match call.matching {
        Match::Any => true,
        // SAFETY: as for this call, on the same stopped thread.
        Match::AnyOf(calls) => calls.iter().any(|&one| unsafe { at_entry_of(pid, one) }),
        // SAFETY: as for this call, on the same stopped thread.
        Match::AllOf(calls) => calls.iter().all(|&one| unsafe { at_entry_of(pid, one) }),
        Match::Bits { arg, mask, value } => arg < 6 && word(32 + 8 * arg) & mask == value,
        Match::BothBits(both) => both
            .iter()
            .all(|&(arg, mask, value)| arg < 6 && word(32 + 8 * arg) & mask == value),
        Match::PointsToBits { arg, mask, value } => {
            let addr = if arg < 6 { word(32 + 8 * arg) } else { 0 };
            let mut pointed = [0u8; 8];
            addr != 0
                && read_memory(pid, addr, &mut pointed)
                && u64::from_ne_bytes(pointed) & mask == value
        }
        Match::Path(path) => points_to(word(40), path),
        Match::Names(path) => points_to(word(32), path) || points_to(word(40), path),
        Match::Numbers(numbers) => numbers.iter().any(|&n| word(24) == n as u64),
        Match::NumbersOn(numbers, fd) => {
            numbers.iter().any(|&n| word(24) == n as u64) && word(32) == fd
        }
        Match::Waits => {
            let arg = |n: usize| word(32 + 8 * n);
            // A timespec or timeval a timeout argument points to: zero (not null) does not wait.
            let zero_time = |addr: u64| {
                let mut time = [0u8; 16];
                addr != 0 && read_memory(pid, addr, &mut time) && time == [0; 16]
            };
            let no_hang = libc::WNOHANG as u64;
            match word(24) as i64 {
                libc::SYS_nanosleep
                | libc::SYS_clock_nanosleep
                | libc::SYS_pause
                | libc::SYS_rt_sigsuspend
                | libc::SYS_sched_yield => true,
                libc::SYS_poll => arg(2) as i32 != 0,
                libc::SYS_epoll_wait | libc::SYS_epoll_pwait => arg(3) as i32 != 0,
                libc::SYS_ppoll => !zero_time(arg(2)),
                libc::SYS_select | libc::SYS_pselect6 => !zero_time(arg(4)),
                libc::SYS_rt_sigtimedwait => !zero_time(arg(2)),
                libc::SYS_wait4 => arg(2) & no_hang == 0,
                libc::SYS_waitid => arg(3) & no_hang == 0,
                _ => false,
            }
        }
    }
}

/// The addresses in `pid` of the C library's functions `names` (at most 4; 0 for the rest);
/// `None` if one is not found.
fn library_functions(pid: i32, names: &[&std::ffi::CStr]) -> Option<[u64; 4]> {
    let mut addresses = [0u64; 4];
    for (address, name) in addresses.iter_mut().zip(names) {
        *address = crate::engine::inspect::library_function_in(pid, name)?;
    }
    Some(addresses)
}

/// Reads `into.len()` bytes at `addr` in the memory of `pid`; false unless all were read.
pub(super) fn read_memory(pid: i32, addr: u64, into: &mut [u8]) -> bool {
    let local = libc::iovec {
        iov_base: into.as_mut_ptr().cast(),
        iov_len: into.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as usize as *mut libc::c_void,
        iov_len: into.len(),
    };
    // SAFETY: reads into our own buffer, of its length; the kernel checks the remote range.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    n == into.len() as isize
}
