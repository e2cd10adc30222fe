//! Checks of lab 1, pipe echo: the program forks an echo child, streams a file through it over
//! two pipes and writes the echo to another file.
//!
//! The protocol driver is in `session`, and what the API's functions returned, read from the
//! program's report, in `returned`; what the grader does to the processes from outside (its own
//! pipe ends, a shared descriptor, a descriptor limit, a hold at exit, repeated signals) in
//! `outside`; the checks, by what they look at, in the other modules.

mod by_hand;
mod child_dies;
mod child_exit;
mod child_fails;
mod child_killed;
mod child_stopped;
mod child_timers;
mod child_writing_interrupted;
mod descriptors;
mod echo;
mod error_kinds;
mod failing_calls;
mod hang_up;
mod outside;
mod parent_would_block;
mod program_state;
mod returned;
mod session;
mod signal_mask;
mod signals;
mod small_inputs;
mod wait_probes;
mod written_by_child;

use std::time::Duration;

use crate::engine::diagnose::{Activity, Hang, Stuck};
use crate::engine::{Check, Lab};
use session::{CHILD, PARENT};

pub static LAB: Lab = Lab {
    number: 1,
    slug: "pipe-echo",
    title: "Pipe echo: a parent and an echo child over two pipes",
    cleanup_points: 0,
    explain_hang,
    checks: &[
        Check {
            name: "echo-0-bytes",
            points: 1,
            timeout: Duration::from_secs(5),
            description: "an empty input comes back empty, and the child still exits",
            exclusive: false,
            hint: Some(
                "An empty input is still a whole exchange: the write end is closed and pipe B read until end-of-file, and the child exits. See docs/labs/01-pipe-echo.md, rubric and the rules table (\"the echo comes back byte for byte\").",
            ),
            run: |run| echo::echo(run, 0),
        },
        Check {
            name: "echo-1-byte",
            points: 1,
            timeout: Duration::from_secs(5),
            description: "one random byte comes back",
            exclusive: false,
            hint: Some(
                "The echo is every byte that came back through pipe B, read until end-of-file. See docs/labs/01-pipe-echo.md, the rules table (\"the echo comes back byte for byte\").",
            ),
            run: |run| echo::echo(run, 1),
        },
        Check {
            name: "echo-4-kib",
            points: 2,
            timeout: Duration::from_secs(5),
            description: "4 KiB of random bytes come back byte for byte",
            exclusive: false,
            hint: Some(
                "The echo is every byte that came back through pipe B, in order, read until end-of-file. See docs/labs/01-pipe-echo.md, the rules table (\"the echo comes back byte for byte\").",
            ),
            run: |run| echo::echo(run, 4 << 10),
        },
        Check {
            name: "echo-16-mib",
            points: 4,
            timeout: Duration::from_secs(15),
            description: "16 MiB and some KiB (a length no block size divides), far beyond \
                          the pipe's capacity, come back whole without deadlock; then 125 × \
                          64 KiB, a whole number of blocks, with F_SETPIPE_SZ refused (EPERM) \
                          on every thread of the parent and in the echo child from its fork",
            exclusive: false,
            hint: Some(
                "Far more than a pipe holds: the parent must read the echo while it writes, and send every byte, the last short block too. See docs/labs/01-pipe-echo.md, Hints (\"Reading while writing\", \"A pipe's capacity is not a constant\") and \"Which common bug each check catches\".",
            ),
            run: echo::echo_large,
        },
        Check {
            name: "real-pipes",
            points: 3,
            timeout: Duration::from_secs(5),
            description: "the child is a separate process, joined to the parent by two pipes \
                          (byte streams, no O_DIRECT) whose unused ends are closed, and holding \
                          the program's descriptors (read from /proc), with the program holding \
                          descriptors of its own (fd 4 and fd 200) in both processes",
            exclusive: false,
            hint: Some(
                "Right after fork() each process closes the two pipe ends it does not use, and only those: close only what you opened. See docs/labs/01-pipe-echo.md, the rules table (the first three rules) and Hints (\"Closing is dropping\").",
            ),
            run: descriptors::real_pipes,
        },
        Check {
            name: "spawn-errors",
            points: 2,
            timeout: Duration::from_secs(10),
            description: "with too few descriptors for the first or the second pipe, spawn() \
                          returns Pipe(EMFILE) (the error of a pipe() call, traced), forks \
                          nothing and leaves nothing open; with exactly four free it \
                          succeeds; the first or the second pipe() failed with ENFILE is \
                          Pipe(ENFILE); when fork() fails, Fork(EAGAIN), then Fork(ENOMEM), \
                          with both pipes closed; failed or not, the program's signal mask is \
                          as it was before spawn()",
            exclusive: false,
            hint: Some(
                "When pipe() fails, spawn() returns Pipe with its errno, forks nothing and closes what it already created; when fork() fails, Fork with its errno, both pipes closed. See docs/labs/01-pipe-echo.md, the rules table (\"pipe() failing is Pipe(errno)\", \"Fork(errno) when fork() fails\").",
            ),
            run: descriptors::spawn_errors,
        },
        Check {
            name: "child-exits-at-eof",
            points: 2,
            timeout: Duration::from_secs(5),
            description: "closing the write end lets the child see end-of-file and exit(0)",
            exclusive: false,
            hint: Some(
                "The child leaves echo_loop() at end-of-file (read() returns 0) and ends with _exit(0). See docs/labs/01-pipe-echo.md, the rules table (\"The child exits with status 0 after end-of-file\", \"The child ends in spawn() with _exit()\").",
            ),
            run: child_exit::child_exits_at_eof,
        },
        Check {
            name: "reaped-no-fd-leak",
            points: 2,
            timeout: Duration::from_secs(5),
            description: "after wait() the child is reaped (the echo child, not another child of \
                          the program) and the parent holds no descriptor it did not hold before \
                          spawn(); files main.rs opened after spawn() are still open",
            exclusive: false,
            hint: Some(
                "wait() reaps the echo child with waitpid(self.pid) (not any child) and the parent ends holding exactly the descriptors it held before spawn(). See docs/labs/01-pipe-echo.md, the rules table (\"No zombie after wait()\", \"Close only the descriptors you opened\").",
            ),
            run: descriptors::reaped_no_fd_leak,
        },
        Check {
            name: "waits-for-exit",
            points: 2,
            timeout: Duration::from_secs(10),
            description: "with the child held at its exit, wait() is blocked in waitpid() with \
                          both pipe ends closed, retries it at once when signals interrupt it \
                          (then 2049 to 4096 forced EINTRs, drawn anew each run), goes \
                          on waiting while the child is only stopped or continued (and \
                          leaves it so), and reaps the child once it exits; a waitpid() failed with ECHILD is \
                          Wait(ECHILD); called right after spawn(), with no exchange(), \
                          wait() closes pipe A before waitpid()",
            exclusive: false,
            hint: Some(
                "wait() closes both pipe ends (to_child too, when exchange() has not taken it), then blocks in waitpid() (no WNOHANG, no sleep) and calls it again after EINTR. See docs/labs/01-pipe-echo.md, the rules table (the wait() rules) and Hints (\"Wait by blocking\").",
            ),
            run: child_exit::waits_for_exit,
        },
        Check {
            name: "child-dies-early",
            points: 2,
            timeout: Duration::from_secs(10),
            description: "a child killed before the transfer: exchange() returns Write(EPIPE) \
                          (from a write(): none with pipe A still read by the grader), a \
                          second exchange() AlreadyExchanged, and wait() ChildFailed, without a \
                          hang or a crash; a write() failed with EIO is Write(EIO), a read() of \
                          pipe B failed with EIO Read(EIO), the write end closed by then, even \
                          with input unsent, and one failed with EAGAIN Read(EAGAIN); a child \
                          killed by SIGPIPE is ChildFailed; with pipe B at end-of-file and \
                          the writer blocked on a full pipe A, exchange() waits for the \
                          writer by blocking; a 1-byte input to a dead child is Write(EPIPE) \
                          too",
            exclusive: false,
            hint: Some(
                "Check every write() and read(): a dead child makes writes fail with EPIPE, which exchange() returns (the error write() gave, not one guessed from the child's state); the write end is taken and closed whatever exchange() returns, so a second call is AlreadyExchanged; wait() succeeds only for Exited(_, 0); once pipe B is at end-of-file, exchange() waits for its writer by blocking in join(), no sleep-and-retry. See docs/labs/01-pipe-echo.md, the rules table (\"Write(EPIPE) when the child is gone\", \"AlreadyExchanged when exchange() is called a second time\", \"Waiting means blocking in a call\").",
            ),
            run: child_dies::child_dies_early,
        },
        Check {
            name: "killed-child-fails",
            points: 1,
            timeout: Duration::from_secs(10),
            description: "a child killed by SIGTERM, SIGINT, SIGHUP, SIGUSR2 or SIGALRM (one \
                          run each) is ChildFailed: only exit(0) is success",
            exclusive: false,
            hint: Some(
                "waitpid() tells how the child ended: Ok only for Exited(_, 0); a child killed by any signal, a request to stop such as SIGTERM included, is ChildFailed. See docs/labs/01-pipe-echo.md, the rules table (\"wait() is Ok only for Exited(_, 0)\").",
            ),
            run: child_killed::killed_child_fails,
        },
        Check {
            name: "child-fails",
            points: 2,
            timeout: Duration::from_secs(10),
            description: "when the child's write to pipe B fails (EAGAIN, EPIPE), echo_loop() \
                          returns the error, the child exits with status 1, wait() returns \
                          ChildFailed and a second exchange() AlreadyExchanged; a read() failed \
                          with EIO or EAGAIN is no end-of-file, and echo_loop() closes both ends \
                          on every error; a failed write the child reports is Write, not Read",
            exclusive: false,
            hint: Some(
                "write_all() returns every error but EINTR, echo_loop() passes it on, the child then _exit(1)s, and wait() reports ChildFailed. See docs/labs/01-pipe-echo.md, the rules table (\"The child exits with status 1 when echo_loop() fails\").",
            ),
            run: child_fails::child_fails,
        },
        Check {
            name: "exchange-errors",
            points: 2,
            timeout: Duration::from_secs(10),
            description: "an echo one byte short, one byte over or over 128 MiB over is ShortEcho \
                          with both exact counts; a second exchange() is AlreadyExchanged; an \
                          echo waiting whole in an enlarged pipe B behind its hang-up is read \
                          to end-of-file",
            exclusive: false,
            hint: Some(
                "Compare the echo's length with the input's, both ways, after reading pipe B to end-of-file; a second exchange() is AlreadyExchanged. See docs/labs/01-pipe-echo.md, the rules table (the ShortEcho and AlreadyExchanged rules).",
            ),
            run: echo::exchange_errors,
        },
        Check {
            name: "reads-while-writing",
            points: 3,
            timeout: Duration::from_secs(10),
            description: "with the child stopped, pipes of one page (pipe A set back to one \
                          page if the parent enlarges it) and the parent on one CPU, the \
                          parent waits on pipe B while it writes pipe A, even for an input \
                          that fits pipe A (1 byte, PIPE_BUF - 1 and PIPE_BUF bytes, pipe A \
                          filled by the grader first); resumed, 64 KiB, then 1 MiB come back; \
                          with pipe B's read end made non-blocking and the echo held, the \
                          parent does not spin on EAGAIN",
            exclusive: false,
            hint: Some(
                "A pipe may hold a single page, and an enlarged one may be shrunk again: the parent must wait on pipe B while it writes pipe A (a second thread, or poll()), and block rather than spin or sleep. See docs/labs/01-pipe-echo.md, Hints (\"Reading while writing\", \"Wait by blocking\").",
            ),
            run: child_stopped::reads_while_writing,
        },
        Check {
            name: "through-the-child",
            points: 3,
            timeout: Duration::from_secs(10),
            description: "the echo is what came back through pipe B, copied by the child as it \
                          read it, also for a second child of the same process given the same \
                          input after a first exchange that failed; the child's write() calls \
                          carry every byte it echoes (none spliced, pipe B enlarged to the \
                          input); with nothing to do, both processes block, with no timer \
                          armed, and no alarm() pending in the child (read by the tracer) \
                          however early it was armed",
            exclusive: false,
            hint: Some(
                "The echo is what the child copied back through pipe B as it read it, for every exchange (keep no echo for a later one); the parent closes its write end after the last byte and waits by blocking. See docs/labs/01-pipe-echo.md, the rules table (\"What exchange() returns is what came back through pipe B\").",
            ),
            run: child_stopped::through_the_child,
        },
        Check {
            name: "signals-during-transfer",
            points: 3,
            timeout: Duration::from_secs(30),
            description: "4 MiB through pipes of one page come back intact while SIGUSR1 \
                          interrupts every thread of both processes every 0.2 ms (short writes \
                          and EINTR handled); a write() cut to one byte by a tracer is continued",
            exclusive: false,
            hint: Some(
                "A signal can cut a read() or write() short or make it fail with EINTR: retry, and go on from where the last write stopped. See docs/labs/01-pipe-echo.md, the rules table (the EINTR and short-write rules).",
            ),
            run: signals::signals_during_transfer,
        },
        Check {
            name: "interrupted-while-blocked",
            points: 2,
            timeout: Duration::from_secs(15),
            description: "SIGUSR1 lands 40 times on each process while it is blocked reading or \
                          writing its pipes (the child waiting for input, the parent with the \
                          child stopped), then the tracer fails 1000 times in a row each call \
                          they wait in with EINTR (the child's read of pipe A and write to pipe \
                          B, the parent's write to pipe A and read of pipe B), the child's write \
                          10001 to 16384 times: every interrupted call is retried, with no limit",
            exclusive: false,
            hint: Some(
                "A call interrupted by a signal fails with EINTR; that is no error: call it again, with no limit on retries. See docs/labs/01-pipe-echo.md, the rules table (\"EINTR is retried and short writes continued, with no limit\").",
            ),
            run: signals::interrupted_while_blocked,
        },
        Check {
            name: "program-state-kept",
            points: 1,
            timeout: Duration::from_secs(10),
            description: "with SIGUSR2 and SIGWINCH blocked and a pipe of its own before \
                          spawn(), both processes still block them, ignore and catch the \
                          signals the program did, and hold the pipe, and the parent blocks \
                          them still when fork() failed; with the soft \
                          descriptor limit one short of each pipe and the hard one above it, \
                          spawn() returns Pipe(EMFILE) and leaves both limits as they were",
            exclusive: false,
            hint: Some(
                "spawn() changes nothing of the program's for good: a mask it blocks is put back as it was (SIG_SETMASK with the saved mask, not SIG_UNBLOCK), the limits are not raised, and only the two pipes' ends are closed. See docs/labs/01-pipe-echo.md, the rules table (\"A spawn() leaves the program as it found it\").",
            ),
            run: program_state::program_state_kept,
        },
        Check {
            name: "child-interrupted-writing",
            points: 1,
            timeout: Duration::from_secs(10),
            description: "SIGUSR1 lands 12 times on the echo child while it is blocked writing \
                          a full pipe B (one page, fed by the grader): each interrupts it, and \
                          it goes back to writing",
            exclusive: false,
            hint: Some(
                "A signal must reach the child wherever it waits, its writes too: block no signal around them, and go on after a short write or EINTR. See docs/labs/01-pipe-echo.md, the rules table (\"EINTR is retried and short writes continued, with no limit\").",
            ),
            run: child_writing_interrupted::child_interrupted_writing,
        },
        Check {
            name: "same-by-hand",
            points: 1,
            timeout: Duration::from_secs(10),
            description: "run without the grader's control channel in its environment, as by \
                          hand, the echo child has no timer pending when it goes back to read \
                          pipe A (read by the tracer), and a 32 KiB input comes through pipes \
                          of one page each",
            exclusive: false,
            hint: Some(
                "The program does what it does whoever runs it: no deadline on the child's waits, graded or not. See docs/labs/01-pipe-echo.md, the rules table (\"Waiting means blocking in a call\").",
            ),
            run: by_hand::watchdog_by_hand,
        },
    ],
};

/// The hang where the parent keeps pipe A open without writing; `session` says which of its two
/// causes it is when it knows how much the parent wrote.
const PARENT_HOLDS_A: &str = "the echo child waits for more input on pipe A while the parent, \
                              which still holds pipe A's write end but is not writing, waits \
                              for the echo on pipe B";

fn writes_pipe(process: &Stuck) -> bool {
    process
        .activities
        .iter()
        .any(|a| matches!(a, Activity::PipeWrite { .. }))
}

fn reads_pipe(process: &Stuck) -> bool {
    process
        .activities
        .iter()
        .any(|a| matches!(a, Activity::PipeRead { .. }))
}

/// The two hangs of this lab: both sides blocked writing, nobody reading; and the child waiting
/// for input that the parent, still holding pipe A, never sends, while it waits for the echo.
fn explain_hang(hang: &Hang) -> Option<String> {
    let parent = hang.by_role(PARENT)?;
    let child = hang.by_role(CHILD)?;
    if writes_pipe(parent) && writes_pipe(child) && !reads_pipe(parent) {
        return Some(
            "the echo child is blocked writing a full pipe while the parent is blocked writing \
             too: nobody reads. Read the echo while you write (write from a second thread, or \
             use poll())"
                .into(),
        );
    }
    let child_waits_on = child.activities.iter().find_map(|a| match a {
        Activity::PipeRead { inode, .. } => Some(*inode),
        _ => None,
    })?;
    let parent_feeds = hang
        .pipe_writers(child_waits_on)
        .iter()
        .any(|p| p.role == PARENT);
    if reads_pipe(parent) && !writes_pipe(parent) && parent_feeds {
        return Some(format!(
            "{PARENT_HOLDS_A}: nobody writes. Either the parent sent every byte and kept the \
             write end (close it, drop to_child, right after the last byte, and read the echo \
             until end-of-file rather than waiting for as many bytes as you sent), or its \
             writing stopped before the end of the input"
        ));
    }
    None
}
