//! # Lab 1: pipe echo
//!
//! A parent process forks an *echo child* and talks to it through two pipes: one carries bytes
//! from the parent to the child, the other carries them back. The child copies everything it
//! reads to its output until it sees end-of-file, then exits.
//!
//! ```text
//!   parent ──to_child──▶ [pipe A] ──▶ echo child
//!   parent ◀─from_child─ [pipe B] ◀── echo child
//! ```
//!
//! What this lab is about:
//! - `pipe()` gives two file descriptors, a read end and a write end; `fork()` copies every
//!   descriptor into the child, so each process must close the ends it does not use.
//! - A pipe is a byte stream: a `read()` returns whatever is there, not "a message".
//! - End-of-file reaches a reader only when *every* write end of the pipe is closed, in every
//!   process. One forgotten copy and the reader waits forever.
//! - A pipe holds a limited number of bytes (64 KiB by default on Linux). Writing more blocks
//!   until the other side reads, so a parent that writes everything before reading anything
//!   deadlocks with a child that is itself blocked writing the echo back.
//! - `write()` may write less than it was asked, and a signal may interrupt it (`EINTR`).
//! - Writing to a pipe nobody reads fails with `EPIPE` (Rust programs ignore `SIGPIPE`, so you get
//!   the error instead of dying).
//! - A child that exited stays a zombie until its parent reaps it with `waitpid()`.
//!
//! The program in `main.rs` calls [`EchoChild::spawn`], then [`EchoChild::exchange`], then
//! [`EchoChild::wait`]. Keep `main.rs` as it is: the grader talks to it.

use std::os::fd::{BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::unistd::Pid;

// SOLUTION
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork, pipe, read, write};
use std::os::fd::AsFd;
// END SOLUTION

/// Everything that can go wrong between the parent and its echo child.
#[derive(Debug, thiserror::Error)]
pub enum PipeEchoError {
    /// `pipe()` failed, for example because the process has too many open files.
    #[error("pipe() failed: {0}")]
    Pipe(Errno),
    /// `fork()` failed, for example because of a process limit.
    #[error("fork() failed: {0}")]
    Fork(Errno),
    /// Writing to a pipe failed: the error `write()` returned. `EPIPE` means nobody holds the
    /// read end any more: the reader exited or closed it.
    #[error("writing to a pipe failed: {0}")]
    Write(Errno),
    /// Reading from a pipe failed.
    #[error("reading from a pipe failed: {0}")]
    Read(Errno),
    /// The echo child sent back fewer (or more) bytes than it was sent.
    #[error("the echo child sent back {echoed} bytes, but it was sent {sent}")]
    ShortEcho {
        /// Bytes the parent sent.
        sent: usize,
        /// Bytes that came back before end-of-file.
        echoed: usize,
    },
    /// `exchange()` was called twice: the first call took the write end and closed it, whatever
    /// it returned.
    #[error("exchange() was already called: the pipe to the child is closed")]
    AlreadyExchanged,
    /// `waitpid()` failed.
    #[error("waitpid() failed: {0}")]
    Wait(Errno),
    /// The child ended some other way than `exit(0)`: a non-zero status or a signal.
    #[error("the echo child did not exit with status 0: {0}")]
    ChildFailed(String),
}

/// The parent's handle on a running echo child: its pid and the parent's ends of both pipes.
#[derive(Debug)]
pub struct EchoChild {
    /// The child's process id, from `fork()`.
    pub pid: Pid,
    /// The parent's write end of pipe A (parent to child). `None` once it is closed: closing it
    /// is how the child learns that no more bytes will come.
    pub to_child: Option<OwnedFd>,
    /// The parent's read end of pipe B (child to parent).
    pub from_child: OwnedFd,
}

impl EchoChild {
    /// Creates both pipes and forks the echo child.
    ///
    /// In the child: close the parent's ends of both pipes, run [`echo_loop`] on the child's
    /// ends, and leave with `_exit()`: status 0 if the loop succeeded, 1 if not. The child must
    /// never return from this function, or it would go on running the parent's code.
    ///
    /// In the parent: close the child's ends and return the handle.
    ///
    /// A `spawn()` that fails leaves the program as it found it: nothing forked, nothing left
    /// open, and its signal mask as it was (a mask changed around `fork()` is put back on every
    /// way out, the error returns too).
    ///
    /// Whatever it returns, `spawn()` leaves the program's process-wide state as it found it, in
    /// the parent and in the child: the signals it blocked stay blocked (put back the saved mask
    /// with `SIG_SETMASK`; `SIG_UNBLOCK` of what you blocked unblocks theirs too), its limits
    /// are not raised (when `pipe()` fails with `EMFILE`, that is `Pipe(EMFILE)`), and every
    /// descriptor it did not open stays open, pipes included.
    ///
    /// ```no_run
    /// let child = pipe_echo::EchoChild::spawn()?;
    /// println!("echo child is pid {}", child.pid);
    /// # Ok::<(), pipe_echo::PipeEchoError>(())
    /// ```
    pub fn spawn() -> Result<EchoChild, PipeEchoError> {
        // SOLUTION todo: create pipe A and pipe B with pipe(), then fork(); each side closes the ends it does not use; the child runs echo_loop() and _exit()s
        let (child_reads, parent_writes) = pipe().map_err(PipeEchoError::Pipe)?;
        let (parent_reads, child_writes) = pipe().map_err(PipeEchoError::Pipe)?;
        // SAFETY: the lab program is single-threaded when it forks, so no lock (of the allocator,
        // of stdio) can be held by a thread that does not exist in the child.
        match unsafe { fork() }.map_err(PipeEchoError::Fork)? {
            ForkResult::Child => {
                drop(parent_writes);
                drop(parent_reads);
                let status = match echo_loop(child_reads, child_writes) {
                    Ok(_) => 0,
                    Err(error) => {
                        eprintln!("echo child: {error}");
                        1
                    }
                };
                // SAFETY: _exit ends the child at once, without running the parent's atexit handlers or
                // destructors, which belong to the parent.
                unsafe { nix::libc::_exit(status) }
            }
            ForkResult::Parent { child } => {
                drop(child_reads);
                drop(child_writes);
                Ok(EchoChild {
                    pid: child,
                    to_child: Some(parent_writes),
                    from_child: parent_reads,
                })
            }
        }
        // END SOLUTION
    }

    /// Sends all of `input` to the child and returns everything it echoed back.
    ///
    /// The parent must read while it writes: once pipe B is full the child blocks writing the
    /// echo, stops reading pipe A, and a parent that only writes blocks too, for ever. Write from
    /// a second thread (`std::thread::scope`) or interleave with `poll()`.
    ///
    /// After the last byte, close the write end (take it out of `to_child`), so the child sees
    /// end-of-file; then read until end-of-file. Returns [`PipeEchoError::ShortEcho`] if the
    /// echo is not as long as the input, and the write error if the child went away. Only
    /// `EINTR` is retried: a `read()` of pipe B failing with `EAGAIN` (its read end made
    /// non-blocking) is `Read(EAGAIN)`, not a cue to read again.
    pub fn exchange(&mut self, input: &[u8]) -> Result<Vec<u8>, PipeEchoError> {
        // SOLUTION todo(input): take to_child, write input from a scoped thread with write_all() and drop the fd when done, read from_child until read() returns 0 (retry EINTR), then compare lengths
        let to_child = self
            .to_child
            .take()
            .ok_or(PipeEchoError::AlreadyExchanged)?;
        let from_child = self.from_child.as_fd();
        std::thread::scope(|scope| {
            let writer = scope.spawn(move || {
                let written = write_all(to_child.as_fd(), input);
                drop(to_child);
                written
            });
            let echoed = read_to_end(from_child);
            let written = writer.join().expect("the writer thread panicked");
            let echoed = echoed?;
            written.map_err(PipeEchoError::Write)?;
            if echoed.len() != input.len() {
                return Err(PipeEchoError::ShortEcho {
                    sent: input.len(),
                    echoed: echoed.len(),
                });
            }
            Ok(echoed)
        })
        // END SOLUTION
    }

    /// Reaps the child with `waitpid()`; an error unless it exited with status 0.
    ///
    /// A child stopped or continued (by a debugger, by Ctrl-Z) has not exited: go on waiting.
    /// `wait()` sends the child no signal: whoever stopped it is the one to continue it. Call it
    /// whatever `exchange()` returned, so that no zombie is left.
    pub fn wait(self) -> Result<(), PipeEchoError> {
        // SOLUTION todo: close the parent's pipe ends (drop them), then waitpid(self.pid) and turn anything but Exited(_, 0) into ChildFailed
        drop(self.to_child);
        drop(self.from_child);
        loop {
            match waitpid(self.pid, None) {
                Ok(WaitStatus::Exited(_, 0)) => return Ok(()),
                Ok(status) => return Err(PipeEchoError::ChildFailed(format!("{status:?}"))),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(PipeEchoError::Wait(e)),
            }
        }
        // END SOLUTION
    }
}

/// The child's work: copies everything from `input` to `output` until end-of-file on `input`,
/// and returns the number of bytes copied. Both descriptors are closed when it returns.
pub fn echo_loop(input: OwnedFd, output: OwnedFd) -> Result<u64, PipeEchoError> {
    // SOLUTION todo(input, output): read() into a buffer until it returns 0 (retry EINTR), and write_all() what each read returned
    let mut buffer = vec![0u8; 64 * 1024];
    let mut copied = 0u64;
    loop {
        let n = match read(input.as_fd(), &mut buffer) {
            Ok(0) => return Ok(copied),
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(PipeEchoError::Read(e)),
        };
        write_all(output.as_fd(), &buffer[..n]).map_err(PipeEchoError::Write)?;
        copied += n as u64;
    }
    // END SOLUTION
}

/// Writes all of `buf` to `fd`, however many `write()` calls it takes.
///
/// `write()` may write fewer bytes than asked, for example when a signal arrives during a large
/// write to a pipe, and fails with `EINTR` when a signal handler ran before anything was
/// written. Neither is an error: go on with what is left.
pub fn write_all(fd: BorrowedFd<'_>, buf: &[u8]) -> Result<(), Errno> {
    // SOLUTION todo(fd, buf): call write() until nothing is left, advancing past short writes and retrying EINTR
    let mut rest = buf;
    while !rest.is_empty() {
        match write(fd, rest) {
            Ok(n) => rest = &rest[n..],
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
    // END SOLUTION
}

// SOLUTION
/// Reads `fd` until end-of-file, retrying `EINTR`.
fn read_to_end(fd: BorrowedFd<'_>) -> Result<Vec<u8>, PipeEchoError> {
    let mut echoed = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match read(fd, &mut buffer) {
            Ok(0) => return Ok(echoed),
            Ok(n) => echoed.extend_from_slice(&buffer[..n]),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(PipeEchoError::Read(e)),
        }
    }
}
// END SOLUTION

/// Fast checks of the rules above, without the grader: `cargo test -p pipe-echo`.
#[cfg(test)]
mod tests {
    use super::*;
    use ipc_labs_driver::testing::watchdog;
    use rstest::rstest;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::time::Duration;

    /// Longer than a pipe holds (64 KiB), so that a writer must wait for its reader.
    const MORE_THAN_A_PIPE: usize = 64 * 1024 + 1;
    /// Far longer than any of these tests takes when nothing blocks.
    const LIMIT: Duration = Duration::from_secs(10);

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    /// Reads a pipe's read end to its end-of-file on a thread of its own.
    fn read_on_a_thread(read_end: OwnedFd) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut all = Vec::new();
            std::fs::File::from(read_end).read_to_end(&mut all).unwrap();
            all
        })
    }

    #[rstest]
    #[case::nothing(0)]
    #[case::one_byte(1)]
    #[case::more_than_a_pipe_holds(MORE_THAN_A_PIPE)]
    fn write_all_writes_every_byte_in_order(#[case] len: usize) {
        let (read_end, write_end) = nix::unistd::pipe().unwrap();
        let reader = read_on_a_thread(read_end);
        let data = pattern(len);
        let sent = data.clone();
        let _watchdog = watchdog("write_all to a pipe being read", LIMIT);
        write_all(write_end.as_fd(), &sent).unwrap();
        drop(write_end);
        assert_eq!(reader.join().unwrap(), data);
    }

    #[test]
    fn writing_to_a_pipe_nobody_reads_is_epipe() {
        let (read_end, write_end) = nix::unistd::pipe().unwrap();
        drop(read_end);
        assert_eq!(write_all(write_end.as_fd(), b"lost"), Err(Errno::EPIPE));
    }

    #[rstest]
    #[case::nothing(0)]
    #[case::one_byte(1)]
    #[case::more_than_a_pipe_holds(MORE_THAN_A_PIPE)]
    fn echo_loop_copies_everything_until_end_of_file(#[case] len: usize) {
        let (loop_reads, feed) = nix::unistd::pipe().unwrap();
        let (echo, loop_writes) = nix::unistd::pipe().unwrap();
        let data = pattern(len);
        let sent = data.clone();
        let feeder = std::thread::spawn(move || std::fs::File::from(feed).write_all(&sent));
        let reader = read_on_a_thread(echo);
        let _watchdog = watchdog("echo_loop", LIMIT);
        let copied = echo_loop(loop_reads, loop_writes).unwrap();
        feeder.join().unwrap().unwrap();
        assert_eq!(copied, len as u64);
        // The echo ends (end-of-file) only if echo_loop closed its write end.
        assert_eq!(reader.join().unwrap(), data);
    }

    /// A handle on a "child" played by a thread of this process: `echo` gets what the parent
    /// sends and returns what goes back.
    fn played_child(echo: fn(Vec<u8>) -> Vec<u8>) -> EchoChild {
        let (child_reads, to_child) = nix::unistd::pipe().unwrap();
        let (from_child, child_writes) = nix::unistd::pipe().unwrap();
        std::thread::spawn(move || {
            let mut input = Vec::new();
            let mut reads = std::fs::File::from(child_reads);
            let mut writes = std::fs::File::from(child_writes);
            // Echo as it comes, as the real child does: a full pipe B blocks the writer.
            let mut buffer = vec![0u8; 4096];
            loop {
                let n = reads.read(&mut buffer).unwrap();
                if n == 0 {
                    break;
                }
                input.extend_from_slice(&buffer[..n]);
                if input.len() > 16 * 4096 {
                    let done = std::mem::take(&mut input);
                    let _ = writes.write_all(&echo(done));
                }
            }
            let _ = writes.write_all(&echo(input));
        });
        EchoChild {
            pid: Pid::this(),
            to_child: Some(to_child),
            from_child,
        }
    }

    #[test]
    fn exchange_reads_while_it_writes() {
        let input = pattern(16 * MORE_THAN_A_PIPE);
        let expected = input.clone();
        let _watchdog = watchdog("exchange (does it read while it writes?)", LIMIT);
        let echoed = played_child(|bytes| bytes).exchange(&input);
        assert_eq!(echoed.unwrap(), expected);
    }

    #[test]
    fn an_echo_shorter_than_the_input_is_short_echo() {
        let _watchdog = watchdog("exchange", LIMIT);
        let echoed = played_child(|mut bytes| {
            bytes.pop();
            bytes
        })
        .exchange(b"hello");
        match echoed {
            Err(PipeEchoError::ShortEcho { sent, echoed }) => assert_eq!((sent, echoed), (5, 4)),
            other => panic!("expected ShortEcho, got {other:?}"),
        }
    }

    #[test]
    fn a_second_exchange_is_already_exchanged() {
        let mut child = played_child(|bytes| bytes);
        let _watchdog = watchdog("exchange", LIMIT);
        let echoed = (child.exchange(b"once"), child.exchange(b"twice"));
        assert_eq!(echoed.0.unwrap(), b"once");
        assert!(
            matches!(echoed.1, Err(PipeEchoError::AlreadyExchanged)),
            "{:?}",
            echoed.1
        );
    }

    /// A real child that exits at once with `status`.
    fn child_exiting_with(status: i32) -> EchoChild {
        let (from_child, _unused) = nix::unistd::pipe().unwrap();
        // SAFETY: the child only calls _exit, which is async-signal-safe, so the other threads
        // of the test process cannot leave it holding a lock.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => unsafe { nix::libc::_exit(status) },
            nix::unistd::ForkResult::Parent { child } => EchoChild {
                pid: child,
                to_child: None,
                from_child,
            },
        }
    }

    #[rstest]
    #[case::success(0, true)]
    #[case::failure(1, false)]
    fn wait_reaps_the_child_and_wants_status_0(#[case] status: i32, #[case] ok: bool) {
        let child = child_exiting_with(status);
        let pid = child.pid;
        let waited = child.wait();
        assert_eq!(waited.is_ok(), ok, "{waited:?}");
        if !ok {
            assert!(
                matches!(waited, Err(PipeEchoError::ChildFailed(_))),
                "{waited:?}"
            );
        }
        // Reaped: no zombie is left to wait for.
        assert_eq!(nix::sys::wait::waitpid(pid, None), Err(Errno::ECHILD));
    }
}
