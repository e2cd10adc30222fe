//! Holding a program at the entry of one system call, so that the check can change the world
//! exactly then (make the object the call is about appear, say) and let the call go on: a race
//! that a program loses only now and then, forced to happen every time.
//!
//! A tracer process (forked from the grader, so that the grader's own wait for the program is
//! not disturbed by the tracing) seizes the program's main thread with ptrace, stops it at every
//! system call until the one wanted, reports it, waits for the check, and detaches: the call then
//! runs as if nothing had happened. Where ptrace is not allowed (an unprivileged grader under
//! Yama's `ptrace_scope` 1), [`SyscallStop::attach`] says so and the check does without.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::unistd::pipe2;

use crate::engine::{Fail, Proc};

/// What the tracer tells the check, one byte each.
const ATTACHED: u8 = b'A';
const AT_CALL: u8 = b'S';
const GONE: u8 = b'X';
const REFUSED: u8 = b'E';

/// A program held by a tracer until it enters a given system call.
pub struct SyscallStop {
    tracer: i32,
    from_tracer: OwnedFd,
    to_tracer: OwnedFd,
    released: bool,
}

/// Where the program was when [`SyscallStop::wait`] returned.
#[derive(Debug, PartialEq, Eq)]
pub enum Reached {
    /// Held at the entry of the call.
    Call,
    /// It talked to the grader first (the message is returned), or the tracer lost it (it
    /// exited, or made the call on another thread).
    Passed(Option<ipc_labs_driver::Message>),
}

impl SyscallStop {
    /// Starts holding `pid` (its main thread) at its next entry into system call `number`.
    /// Returns once every call it makes passes by the tracer; `None` if the machine does not
    /// allow the grader to trace it.
    pub fn attach(pid: i32, number: i64) -> Result<Option<SyscallStop>, Fail> {
        let grader = |e: nix::Error| Fail::Grader(format!("pipe: {e}"));
        let (from_tracer, tracer_writes) = pipe2(OFlag::O_CLOEXEC).map_err(grader)?;
        let (tracer_reads, to_tracer) = pipe2(OFlag::O_CLOEXEC).map_err(grader)?;
        let (report, resume) = (tracer_writes.as_raw_fd(), tracer_reads.as_raw_fd());
        let ours = [from_tracer.as_raw_fd(), to_tracer.as_raw_fd()];
        // SAFETY: the child runs only `trace`, which makes async-signal-safe system calls and
        // never returns.
        let tracer = unsafe { libc::fork() };
        if tracer == -1 {
            return Err(Fail::Grader(format!(
                "fork: {}",
                std::io::Error::last_os_error()
            )));
        }
        if tracer == 0 {
            // SAFETY: in the forked child, see above.
            unsafe { trace(pid, number, (report, resume), ours) }
        }
        drop((tracer_writes, tracer_reads));
        let mut stop = SyscallStop {
            tracer,
            from_tracer,
            to_tracer,
            released: false,
        };
        match stop.next_byte(Instant::now() + Duration::from_secs(2))? {
            Some(ATTACHED) => Ok(Some(stop)),
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
                Some(AT_CALL) => return Ok(Reached::Call),
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
        let mut fds = [PollFd::new(
            std::os::fd::AsFd::as_fd(&self.from_tracer),
            PollFlags::POLLIN,
        )];
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

impl Drop for SyscallStop {
    fn drop(&mut self) {
        // A tracer that was not told to release the call is killed: the kernel then detaches
        // the program, which goes on.
        if !self.released {
            // SAFETY: signals our own child.
            unsafe { libc::kill(self.tracer, libc::SIGKILL) };
        }
        let deadline = Instant::now() + Duration::from_millis(500);
        let mut status = 0;
        loop {
            // SAFETY: waits for our own child without blocking.
            let r = unsafe { libc::waitpid(self.tracer, &mut status, libc::WNOHANG) };
            if r != 0 {
                return; // Reaped, or already reaped by the grader's orphan sweep.
            }
            if Instant::now() >= deadline {
                // SAFETY: signals our own child, then reaps it.
                unsafe {
                    libc::kill(self.tracer, libc::SIGKILL);
                    libc::waitpid(self.tracer, &mut status, 0);
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// The tracer, in the forked child: only system calls, no allocation, never returns. It writes
/// to `report` and reads `resume`; `grader_ends` are the grader's ends of those pipes.
unsafe fn trace(pid: i32, number: i64, (report, resume): (i32, i32), grader_ends: [i32; 2]) -> ! {
    // SAFETY: all plain system calls on our own descriptors and on the traced process.
    unsafe {
        for fd in grader_ends {
            libc::close(fd);
        }
        let say = |byte: u8| libc::write(report, [byte].as_ptr().cast(), 1);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        let seize = libc::PTRACE_SEIZE;
        let options = libc::PTRACE_O_TRACESYSGOOD as usize;
        if libc::ptrace(seize, pid, 0usize, options) != 0 {
            say(REFUSED);
            libc::_exit(1);
        }
        let mut status = 0;
        if libc::ptrace(libc::PTRACE_INTERRUPT, pid, 0usize, 0usize) != 0
            || libc::waitpid(pid, &mut status, libc::__WALL) != pid
        {
            say(GONE);
            libc::_exit(1);
        }
        say(ATTACHED);
        let mut signal = 0usize;
        loop {
            if libc::ptrace(libc::PTRACE_SYSCALL, pid, 0usize, signal) != 0
                || libc::waitpid(pid, &mut status, libc::__WALL) != pid
                || !libc::WIFSTOPPED(status)
            {
                say(GONE);
                libc::_exit(0);
            }
            signal = 0;
            let stopped_by = libc::WSTOPSIG(status);
            if stopped_by == libc::SIGTRAP | 0x80 {
                // struct ptrace_syscall_info: op (u8) at 0; at 24, for an entry, the number.
                let mut info = [0u8; 96];
                let size = info.len();
                let got = libc::ptrace(
                    libc::PTRACE_GET_SYSCALL_INFO,
                    pid,
                    size,
                    info.as_mut_ptr(),
                );
                let mut nr = [0u8; 8];
                nr.copy_from_slice(&info[24..32]);
                if got > 0
                    && info[0] == libc::PTRACE_SYSCALL_INFO_ENTRY
                    && u64::from_ne_bytes(nr) == number as u64
                {
                    say(AT_CALL);
                    let mut byte = [0u8];
                    libc::read(resume, byte.as_mut_ptr().cast(), 1);
                    libc::ptrace(libc::PTRACE_DETACH, pid, 0usize, 0usize);
                    libc::_exit(0);
                }
            } else if status >> 16 == 0 && stopped_by != libc::SIGTRAP {
                // A signal on its way to the program: deliver it.
                signal = stopped_by as usize;
            }
        }
    }
}
