//! Checks of lab 1, pipe echo: the program forks an echo child, streams a file through it over
//! two pipes and writes the echo to another file.
//!
//! The program says `ready` (with the child's pid) once the child is forked, waits for `go`,
//! exchanges, reaps the child, says `done` (with the outcome of `exchange` and `wait`) and waits
//! for `exit`. Between those messages the grader looks at both processes in `/proc`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::engine::diagnose::{Activity, Hang, Stuck};
use crate::engine::force;
use crate::engine::inspect::{self, fd_writable, pipe_inode};
use crate::engine::{Check, Fail, Lab, Proc, Run};

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
            run: |run| echo(run, 0),
        },
        Check {
            name: "echo-1-byte",
            points: 1,
            timeout: Duration::from_secs(5),
            description: "one random byte comes back",
            exclusive: false,
            run: |run| echo(run, 1),
        },
        Check {
            name: "echo-4-kib",
            points: 2,
            timeout: Duration::from_secs(5),
            description: "4 KiB of random bytes come back byte for byte",
            exclusive: false,
            run: |run| echo(run, 4 << 10),
        },
        Check {
            name: "echo-16-mib",
            points: 4,
            timeout: Duration::from_secs(15),
            description: "16 MiB, far beyond the pipe's capacity, come back without deadlock",
            exclusive: false,
            run: |run| echo(run, 16 << 20),
        },
        Check {
            name: "real-pipes",
            points: 3,
            timeout: Duration::from_secs(5),
            description: "the child is a separate process, joined to the parent by two pipes \
                          whose unused ends are closed (read from /proc)",
            exclusive: false,
            run: real_pipes,
        },
        Check {
            name: "child-exits-at-eof",
            points: 2,
            timeout: Duration::from_secs(5),
            description: "closing the write end lets the child see end-of-file and exit(0)",
            exclusive: false,
            run: child_exits_at_eof,
        },
        Check {
            name: "reaped-no-fd-leak",
            points: 2,
            timeout: Duration::from_secs(5),
            description: "after wait() the child is reaped and the parent holds no pipe end",
            exclusive: false,
            run: reaped_no_fd_leak,
        },
        Check {
            name: "child-dies-early",
            points: 2,
            timeout: Duration::from_secs(10),
            description: "a child killed before the transfer is an error for the parent, not a \
                          hang or a crash",
            exclusive: false,
            run: child_dies_early,
        },
        Check {
            name: "through-the-child",
            points: 3,
            timeout: Duration::from_secs(10),
            description: "the echo really goes through the child: with the child stopped \
                          (SIGSTOP), the parent waits instead of finishing",
            exclusive: false,
            run: through_the_child,
        },
        Check {
            name: "signals-during-transfer",
            points: 3,
            timeout: Duration::from_secs(30),
            description: "32 MiB come back intact while SIGUSR1 interrupts every thread of both \
                          processes every 0.2 ms (short writes and EINTR handled)",
            exclusive: false,
            run: signals_during_transfer,
        },
        Check {
            name: "interrupted-while-blocked",
            points: 2,
            timeout: Duration::from_secs(15),
            description: "SIGUSR1 lands on each process while it is blocked reading or writing \
                          its pipes (the child waiting for input, the parent with the child \
                          stopped): every interrupted call is retried (EINTR)",
            exclusive: false,
            run: interrupted_while_blocked,
        },
    ],
};

const PARENT: &str = "the parent";
const CHILD: &str = "the echo child";

/// One run of the program, between `ready` and `done`.
struct Session {
    proc: Proc,
    parent: i32,
    child: i32,
    input: Vec<u8>,
    output: std::path::PathBuf,
}

/// What the program reported at `done`.
struct Done {
    exchange: String,
    wait: String,
}

/// Starts the program on `input` and waits until it has forked the child.
fn start(run: &mut Run, input: Vec<u8>, interruptible: bool) -> Result<Session, Fail> {
    let input_path = run.path("input.bin");
    let output = run.path("output.bin");
    std::fs::write(&input_path, &input)?;
    let mut args = vec![
        "--input".into(),
        input_path.into_os_string(),
        "--output".into(),
        output.clone().into_os_string(),
    ];
    if interruptible {
        args.push("--interruptible".into());
    }
    let mut proc = run.spawn(&args)?;
    let parent = proc.pid.as_raw();
    proc.set_roles(move |view| {
        if view.pid == parent {
            PARENT.into()
        } else if view.ppid == parent {
            CHILD.into()
        } else {
            "another process".into()
        }
    });
    let ready = proc.recv_any()?;
    from_parent(&ready, parent)?;
    if ready.kind == "failed" {
        let error = ready.get("error").unwrap_or("?");
        return Err(Fail::failed(format!("spawn() failed: {error}")));
    }
    if ready.kind != "ready" {
        return Err(Fail::failed(format!("expected `ready`, got `{}`", ready.kind)));
    }
    let child = ready
        .get("child")
        .and_then(|c| c.parse::<i32>().ok())
        .ok_or_else(|| Fail::failed("spawn() returned no child pid"))?;
    if child <= 0 || child == parent {
        return Err(Fail::failed(format!(
            "spawn() says the child is pid {child}, but the parent is pid {parent}: fork() \
             returns the child's pid in the parent"
        )));
    }
    Ok(Session {
        proc,
        parent,
        child,
        input,
        output,
    })
}

/// A message from a process other than the one the grader started means the forked child went
/// on running the parent's code.
fn from_parent(message: &ipc_labs_driver::Message, parent: i32) -> Result<(), Fail> {
    let sender: i32 = message.get("pid").and_then(|p| p.parse().ok()).unwrap_or(0);
    if sender == parent {
        Ok(())
    } else {
        Err(Fail::failed(format!(
            "pid {sender}, not the parent {parent}, said `{}`: the forked child returned from \
             spawn() and ran the parent's code; end the child with _exit()",
            message.kind
        )))
    }
}

impl Session {
    /// Lets the program exchange and reap, and reads its report.
    fn exchange(&mut self) -> Result<Done, Fail> {
        self.proc.send("go", &[])?;
        let done = self.proc.recv_any()?;
        self.done(done)
    }

    /// Checks that `done` is the parent's report, and reads it.
    fn done(&self, done: ipc_labs_driver::Message) -> Result<Done, Fail> {
        from_parent(&done, self.parent)?;
        if done.kind != "done" {
            return Err(Fail::failed(format!("expected `done`, got `{}`", done.kind)));
        }
        Ok(Done {
            exchange: done.get("exchange").unwrap_or("?").to_string(),
            wait: done.get("wait").unwrap_or("?").to_string(),
        })
    }

    /// Lets the program exit, and checks that it did so cleanly.
    fn finish(mut self) -> Result<(), Fail> {
        self.proc.send("exit", &[])?;
        let status = self.proc.wait()?;
        match status.code() {
            Some(_) => Ok(()),
            None => Err(Fail::Crashed(format!("the parent died: {status}"))),
        }
    }

    /// Whether the echo written to the output file is the input, byte for byte.
    fn verify_echo(&self, done: &Done) -> Result<(), Fail> {
        if !done.exchange.starts_with("ok") {
            return Err(Fail::failed(format!("exchange() failed: {}", done.exchange)));
        }
        let echoed = std::fs::read(&self.output)?;
        if echoed == self.input {
            return Ok(());
        }
        let first = echoed
            .iter()
            .zip(&self.input)
            .position(|(a, b)| a != b)
            .unwrap_or(echoed.len().min(self.input.len()));
        Err(Fail::failed(format!(
            "the echo is not the input: {} bytes came back for {} sent, first difference at byte \
             {first}; a write() that writes less than asked must be continued with the rest",
            echoed.len(),
            self.input.len()
        )))
    }
}

fn echo(run: &mut Run, len: usize) -> Result<String, Fail> {
    let input = run.random_bytes(len);
    let mut session = start(run, input, false)?;
    let done = session.exchange()?;
    session.verify_echo(&done)?;
    session.finish()?;
    Ok(format!("{len} bytes echoed byte for byte"))
}

/// The pipes a process holds, but for the grader's stdout and stderr pipes: inode to (read
/// ends, write ends) as descriptor numbers.
fn pipes_of(session: &Session, pid: i32) -> BTreeMap<u64, (Vec<i32>, Vec<i32>)> {
    let mut pipes: BTreeMap<u64, (Vec<i32>, Vec<i32>)> = BTreeMap::new();
    let Some(view) = inspect::view(pid) else {
        return pipes;
    };
    for (fd, target) in &view.fds {
        if let Some(inode) = pipe_inode(target).filter(|i| !session.proc.grader_pipes.contains(i)) {
            let entry = pipes.entry(inode).or_default();
            if fd_writable(pid, *fd) == Some(true) {
                entry.1.push(*fd);
            } else {
                entry.0.push(*fd);
            }
        }
    }
    pipes
}

fn real_pipes(run: &mut Run) -> Result<String, Fail> {
    let input = run.random_bytes(64 << 10);
    let mut session = start(run, input, false)?;
    let (parent, child) = (session.parent, session.child);
    settle_in_read(child);
    let child_view = inspect::view(child).ok_or_else(|| {
        Fail::failed(format!("the child pid {child} that spawn() returned does not exist"))
    })?;
    if child_view.ppid != parent {
        return Err(Fail::failed(format!(
            "pid {child} is not a child of the parent (its parent is {}): fork() the echo child \
             from the parent",
            child_view.ppid
        )));
    }
    let parent_pipes = pipes_of(&session, parent);
    let child_pipes = pipes_of(&session, child);
    // Pipe A: the parent writes, the child reads. Pipe B: the child writes, the parent reads.
    let shared: Vec<u64> = parent_pipes
        .keys()
        .filter(|inode| child_pipes.contains_key(inode))
        .copied()
        .collect();
    let pipe_a = shared
        .iter()
        .find(|i| !parent_pipes[i].1.is_empty() && !child_pipes[i].0.is_empty());
    let pipe_b = shared
        .iter()
        .find(|i| !child_pipes[i].1.is_empty() && !parent_pipes[i].0.is_empty());
    let (Some(a), Some(b)) = (pipe_a, pipe_b) else {
        return Err(Fail::failed(format!(
            "the parent and the echo child are not joined by two pipes, one each way (parent's \
             pipes: {parent_pipes:?}, child's: {child_pipes:?}, as inode: (read fds, write fds)): \
             create both with pipe() before fork()"
        )));
    };
    let mut problems = Vec::new();
    for (who, pipes, pipe, end, fds) in [
        (PARENT, &parent_pipes, a, "read", &parent_pipes[a].0),
        (PARENT, &parent_pipes, b, "write", &parent_pipes[b].1),
        (CHILD, &child_pipes, a, "write", &child_pipes[a].1),
        (CHILD, &child_pipes, b, "read", &child_pipes[b].0),
    ] {
        let _ = pipes;
        if !fds.is_empty() {
            let name = if pipe == a { "parent-to-child" } else { "child-to-parent" };
            problems.push(format!(
                "{who} still holds the {end} end of the {name} pipe (fd {fds:?})"
            ));
        }
    }
    if !problems.is_empty() {
        return Err(Fail::failed(format!(
            "{}: after fork() each process must close the pipe ends it does not use, or \
             end-of-file and EPIPE never come",
            problems.join("; ")
        )));
    }
    let done = session.exchange()?;
    session.verify_echo(&done)?;
    session.finish()?;
    Ok(format!(
        "parent {parent} and child {child} are joined by pipe:[{a}] and pipe:[{b}], unused ends \
         closed"
    ))
}

/// Waits (up to a second) until the child is blocked in a system call, as it is once it waits
/// for input: by then a correct child has closed the ends it does not use, and `/proc` shows
/// its descriptors as they will stay.
fn settle_in_read(child: i32) {
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        let blocked = inspect::view(child).is_some_and(|view| {
            view.threads
                .iter()
                .any(|t| t.state == 'S' && t.syscall.is_some())
        });
        if blocked {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn child_exits_at_eof(run: &mut Run) -> Result<String, Fail> {
    let input = run.random_bytes(1000);
    let mut session = start(run, input, false)?;
    let done = session.exchange()?;
    session.verify_echo(&done)?;
    if done.wait != "ok" {
        return Err(Fail::failed(format!(
            "the echo child did not exit with status 0 after end-of-file: wait() said {}",
            done.wait
        )));
    }
    session.finish()?;
    Ok("the child saw end-of-file and exited with status 0".into())
}

fn reaped_no_fd_leak(run: &mut Run) -> Result<String, Fail> {
    let input = run.random_bytes(100 << 10);
    let mut session = start(run, input, false)?;
    let done = session.exchange()?;
    session.verify_echo(&done)?;
    let parent = session.parent;
    let children = inspect::children(Pid::from_raw(parent));
    if !children.is_empty() {
        let states: Vec<String> = children
            .iter()
            .filter_map(|&pid| inspect::view(pid))
            .map(|v| format!("pid {} in state {}", v.pid, v.state))
            .collect();
        return Err(Fail::failed(format!(
            "after wait() the parent still has children ({}): reap the echo child with waitpid(); \
             a child that exited stays a zombie (state Z) until then",
            states.join(", ")
        )));
    }
    let leaked: Vec<String> = pipes_of(&session, parent)
        .iter()
        .map(|(inode, (r, w))| format!("pipe:[{inode}] (read fds {r:?}, write fds {w:?})"))
        .collect();
    if !leaked.is_empty() {
        return Err(Fail::failed(format!(
            "after wait() the parent still holds {}: close both pipe ends when you are done",
            leaked.join(", ")
        )));
    }
    session.finish()?;
    Ok("the child was reaped and the parent holds no pipe".into())
}

fn child_dies_early(run: &mut Run) -> Result<String, Fail> {
    let input = run.random_bytes(4 << 20);
    let mut session = start(run, input, false)?;
    let child = Pid::from_raw(session.child);
    kill(child, Signal::SIGKILL).map_err(|e| Fail::Grader(format!("kill: {e}")))?;
    // Let the kill land before the transfer starts.
    let settle = Instant::now() + Duration::from_secs(1);
    while Instant::now() < settle && inspect::view(session.child).is_some_and(|v| v.state != 'Z') {
        std::thread::sleep(Duration::from_millis(5));
    }
    let done = session.exchange()?;
    if done.exchange.starts_with("ok") {
        return Err(Fail::failed(
            "the echo child was killed before the transfer, yet exchange() reported success: \
             check the result of every write() and read(), and compare the echo's length",
        ));
    }
    if done.wait == "ok" {
        return Err(Fail::failed(
            "the echo child was killed by SIGKILL, yet wait() reported a clean exit: only \
             Exited(_, 0) is success",
        ));
    }
    session.finish()?;
    Ok(format!(
        "the parent reported the dead child: exchange: {}; wait: {}",
        done.exchange, done.wait
    ))
}

fn through_the_child(run: &mut Run) -> Result<String, Fail> {
    // More than both pipes hold: a parent whose bytes go through the child must wait for it.
    let input = run.random_bytes(1 << 20);
    let mut session = start(run, input, false)?;
    let child = Pid::from_raw(session.child);
    kill(child, Signal::SIGSTOP).map_err(|e| Fail::Grader(format!("SIGSTOP: {e}")))?;
    session.proc.send("go", &[])?;
    let settle = Instant::now() + Duration::from_secs(3);
    let mut early = None;
    let mut waiting = false;
    while Instant::now() < settle && early.is_none() && !waiting {
        early = session
            .proc
            .recv_before(Instant::now() + Duration::from_millis(5))?;
        waiting = waits_on_own_pipes(&session, session.parent);
    }
    let doing = inspect::view(session.parent)
        .map(|view| format!("{:?}", view.threads.iter().map(|t| t.syscall).collect::<Vec<_>>()))
        .unwrap_or_default();
    kill(child, Signal::SIGCONT).map_err(|e| Fail::Grader(format!("SIGCONT: {e}")))?;
    if let Some(message) = &early {
        from_parent(message, session.parent)?;
    }
    if !waiting {
        let seen = match &early {
            Some(message) => format!("said `{}`", message.kind),
            None => format!("was not waiting on its pipes (system calls: {doing})"),
        };
        return Err(Fail::failed(format!(
            "with the echo child stopped (SIGSTOP) the parent {seen}: the bytes did not go \
             through the child; send them through pipe A, let the child copy them to pipe B, and \
             read them back from there"
        )));
    }
    let done = session.proc.recv_any()?;
    let done = session.done(done)?;
    session.verify_echo(&done)?;
    session.finish()?;
    Ok("with the child stopped, the parent waited on its pipes; resumed, 1 MiB came back".into())
}

fn signals_during_transfer(run: &mut Run) -> Result<String, Fail> {
    let input = run.random_bytes(32 << 20);
    let mut session = start(run, input, true)?;
    let pids = [session.parent, session.child];
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    // Every thread of every process gets the signal: a process-directed signal would mostly
    // interrupt one thread (the one reading), never the one writing.
    let signaller = {
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                // The two processes are known: reading the whole process table each round
                // would leave far fewer signals per second than intended.
                for pid in pids {
                    sent.fetch_add(force::signal_every_thread(pid, Signal::SIGUSR1), Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    let done = session.exchange();
    stop.store(true, Ordering::SeqCst);
    let _ = signaller.join();
    let done = done?;
    if let Err(fail) = session.verify_echo(&done) {
        return Err(name_signal_bug(&session, &done, fail));
    }
    session.finish()?;
    Ok(format!(
        "32 MiB echoed intact through {} SIGUSR1 signals",
        sent.load(Ordering::SeqCst)
    ))
}

/// How many times each thread of `pid` has been switched out; a thread that slept, was woken
/// by a signal and went back to sleep has a higher count.
fn context_switches(pid: i32) -> BTreeMap<i32, u64> {
    inspect::thread_times(pid)
        .into_iter()
        .map(|(tid, times)| (tid, times.switches))
        .collect()
}

/// The threads of `pid` asleep in a read or write on one of its own pipes (not the grader's
/// stdout and stderr pipes), or in poll/select, with the call they are in.
fn threads_on_own_pipes(session: &Session, pid: i32) -> BTreeMap<i32, &'static str> {
    let Some(view) = inspect::view(pid) else {
        return BTreeMap::new();
    };
    let own_pipe = |fd: u64| {
        view.fds
            .get(&(fd as i32))
            .and_then(|target| pipe_inode(target))
            .is_some_and(|inode| !session.proc.grader_pipes.contains(&inode))
    };
    let call = |number: i64, fd: u64| match number {
        libc::SYS_read | libc::SYS_readv if own_pipe(fd) => Some("read()"),
        libc::SYS_write | libc::SYS_writev if own_pipe(fd) => Some("write()"),
        libc::SYS_poll
        | libc::SYS_ppoll
        | libc::SYS_select
        | libc::SYS_pselect6
        | libc::SYS_epoll_wait
        | libc::SYS_epoll_pwait => Some("poll()"),
        _ => None,
    };
    view.threads
        .iter()
        .filter(|t| t.state == 'S')
        .filter_map(|t| Some((t.tid, t.syscall.and_then(|(n, fd)| call(n, fd))?)))
        .collect()
}

/// Whether every thread of `pid` is asleep and one of them waits on its own pipes.
fn waits_on_own_pipes(session: &Session, pid: i32) -> bool {
    let all_asleep = inspect::view(pid).is_some_and(|v| v.threads.iter().all(|t| t.state == 'S'));
    all_asleep && !threads_on_own_pipes(session, pid).is_empty()
}

/// Waits until `pid` waits on its own pipes, then interrupts it with SIGUSR1 `rounds` times,
/// each time while it is blocked again: every thread blocked on a pipe before a signal must be
/// blocked on a pipe after it. Fails, naming the call, if one gave up or went away instead.
fn interrupt_while_blocked(
    session: &Session,
    pid: i32,
    who: &str,
    rounds: u32,
) -> Result<(), Fail> {
    let settle = Instant::now() + Duration::from_secs(3);
    while !waits_on_own_pipes(session, pid) {
        if Instant::now() > settle {
            return Err(Fail::failed(format!(
                "{who} (pid {pid}) never waited on its pipes, so the grader could not interrupt \
                 it there"
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    for _ in 0..rounds {
        let blocked = threads_on_own_pipes(session, pid);
        let before = context_switches(pid);
        force::signal_every_thread(pid, Signal::SIGUSR1);
        // A thread that retries goes back to sleep on its pipe within microseconds; the margin
        // is for a loaded machine.
        let until = Instant::now() + Duration::from_secs(2);
        loop {
            let after = context_switches(pid);
            let now = threads_on_own_pipes(session, pid);
            let back = |tid: &i32| now.contains_key(tid) && after.get(tid) > before.get(tid);
            if blocked.keys().all(back) {
                break;
            }
            let exited = inspect::view(pid).is_none_or(|view| view.state == 'Z');
            let ended = blocked.keys().any(|tid| !after.contains_key(tid));
            if exited || ended || Instant::now() > until {
                let gave_up: Vec<String> = blocked
                    .iter()
                    .filter(|(tid, _)| !back(tid))
                    .map(|(tid, call)| {
                        let fate = match (exited, after.contains_key(tid)) {
                            (true, _) => "and the process exited",
                            (false, true) => "stopped waiting on its pipes",
                            (false, false) => "ended",
                        };
                        format!("thread {tid}, blocked in {call}, {fate}")
                    })
                    .collect();
                return Err(Fail::failed(format!(
                    "SIGUSR1 interrupted {who} (pid {pid}) while it was blocked on its pipes, and \
                     it gave up ({}): a read() or write() interrupted by a signal fails with \
                     EINTR (or, for a write, writes less than asked); that is no error, retry the \
                     call",
                    gave_up.join("; ")
                )));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    Ok(())
}

fn interrupted_while_blocked(run: &mut Run) -> Result<String, Fail> {
    // Far more than both pipes hold, even enlarged to pipe-max-size: with the child stopped,
    // a correct parent cannot finish its read or its write.
    let input = run.random_bytes(4 << 20);
    let mut session = start(run, input, true)?;
    // Before `go` the child waits for input in read() on an empty pipe: a signal there can only
    // mean EINTR.
    interrupt_while_blocked(&session, session.child, CHILD, 3)?;
    let child = Pid::from_raw(session.child);
    kill(child, Signal::SIGSTOP).map_err(|e| Fail::Grader(format!("SIGSTOP: {e}")))?;
    session.proc.send("go", &[])?;
    // The first signal may cut a write short; the next ones find it blocked with nothing
    // written, which is EINTR.
    let parent = interrupt_while_blocked(&session, session.parent, PARENT, 3);
    kill(child, Signal::SIGCONT).map_err(|e| Fail::Grader(format!("SIGCONT: {e}")))?;
    parent?;
    let done = session.proc.recv_any()?;
    let done = session.done(done)?;
    session.verify_echo(&done)?;
    session.finish()?;
    Ok("interrupted 3 times while blocked on its pipes, each process retried; 4 MiB came back"
        .into())
}

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

/// Says which of the two signal bugs broke the transfer, from the parent's report and what the
/// processes wrote to stderr.
fn name_signal_bug(session: &Session, done: &Done, fail: Fail) -> Fail {
    let stderr = session.proc.stderr.lock().expect("capture lock").text();
    let seen = format!("{} {stderr}", done.exchange);
    let mut bugs = Vec::new();
    if seen.contains("EINTR") {
        bugs.push(
            "a signal interrupted a read() or write() (EINTR) and the program gave up: retry the \
             call",
        );
    }
    if seen.contains("sent back") || fail.message().contains("the echo is not the input") {
        bugs.push(
            "bytes were lost: a write() interrupted by a signal writes less than asked (a short \
             write), and the rest must be written by the next call",
        );
    }
    if bugs.is_empty() {
        return fail;
    }
    Fail::failed(format!("{}; {}", fail.message(), bugs.join("; ")))
}

/// The classic deadlock: both sides blocked writing, nobody reading.
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
    None
}
