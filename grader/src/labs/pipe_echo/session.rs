//! The protocol driver. The program says `started` and waits for `spawn`; it calls `spawn()`
//! and says `ready` (with the child's pid) or `failed`; it waits for `go`, exchanges (twice with
//! `--twice`), reaps the child, says `done` (with what `exchange` and `wait` returned, and with
//! `--other-child` how it reaped a child of its own forked before `spawn()`) and waits for `exit`;
//! with `--wait-only` it calls `wait()` at `go`, with no exchange, and reports only `wait`; with
//! `--again`, once the first child is reaped, it spawns a second, says `again-ready` (with its
//! pid), waits for `again-go` and exchanges with it too.
//! Between those messages the grader looks at both processes in `/proc`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ipc_labs_driver::Message;

use super::returned::Returned;
use crate::engine::diagnose::{Activity, classify};
use crate::engine::inspect::{self, ProcessView, SignalMask, fd_writable, pipe_inode};
use crate::engine::{Fail, Proc, Run};

pub const PARENT: &str = "the parent";
pub const CHILD: &str = "the echo child";

/// How the program is started.
#[derive(Debug, Clone, Copy, Default)]
pub struct Flags {
    /// `--interruptible`: a SIGUSR1 handler without `SA_RESTART`, inherited by the child.
    pub interruptible: bool,
    /// `--twice`: `exchange()` is called a second time, and its result reported as `again`.
    pub twice: bool,
    /// `--other-child`: the program forks a child of its own before `spawn()`, which exits at
    /// once, and reaps it after `wait()`, reporting how as `other-child`.
    pub other_child: bool,
    /// `--wait-only`: no `exchange()` at all: at `go` the program calls `wait()` right away and
    /// reports only what it returned, as `wait`.
    pub wait_only: bool,
    /// `--own-files`: the program opens the input file twice after `spawn()` and reports after
    /// `wait()` whether both descriptors still refer to it, as `own-files`.
    pub own_files: bool,
    /// `--again`: once the first child is reaped, the program spawns a second one and sends it
    /// the same input; `exchange` and `wait` are then the second child's, the first's are
    /// reported as `first-exchange` and `first-wait`.
    pub again: bool,
    /// The program starts holding descriptors of its own besides stdio and the control channel
    /// ([`HELD_DESCRIPTORS`]): files it opened before `spawn()`, which the lab's code must leave
    /// open in both processes.
    pub holding: bool,
    /// Signals the program starts with blocked (signal N at bit N - 1), as if it had blocked
    /// them before `spawn()`: they must stay blocked, in both processes.
    pub blocked_signals: u64,
    /// The program starts holding a pipe of its own ([`HELD_PIPE`]), which the lab's code must
    /// leave open in both processes.
    pub holding_pipe: bool,
}

/// The read end of the pipe a program started with [`Flags::holding_pipe`] holds; its write end
/// is the next number. Above the pipe ends `spawn()` makes.
pub const HELD_PIPE: i32 = 60;

/// The descriptors a program started with [`Flags::holding`] holds: the first number free after
/// the control channel, and one far above the pipe ends `spawn()` makes.
pub const HELD_DESCRIPTORS: &[i32] = &[4, 200];

/// The program before `spawn()`.
pub struct Launched {
    pub proc: Proc,
    pub parent: i32,
    /// The parent's descriptors before `spawn()`: the program's own, not the student's.
    pub fds_before: BTreeMap<i32, String>,
    input: Vec<u8>,
    output: PathBuf,
}

/// The program once `spawn()` has returned the child.
pub struct Session {
    pub proc: Proc,
    pub parent: i32,
    pub child: i32,
    pub input: Vec<u8>,
    pub output: PathBuf,
    pub fds_before: BTreeMap<i32, String>,
    /// The parent's I/O counters when it was told to exchange.
    io_at_go: Option<inspect::IoCounters>,
    /// The child's, at the same moment.
    child_io_at_go: Option<inspect::IoCounters>,
    /// What each process had moved since `go` when last looked at, by [`Session::watch_done`]:
    /// still known once a process has died.
    traffic: Traffic,
    /// The errno the grader's tracer made a `write()` of the parent to pipe A fail with, if it
    /// did: a hang after it is the write end kept open past the error.
    pub write_failed_with: Option<&'static str>,
}

/// What the parent and the child had read and written since `go`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Traffic {
    pub parent: inspect::IoCounters,
    pub child: inspect::IoCounters,
}

/// What a `write_all()` that wrote bytes more than once must do instead: either cause.
pub const WRITTEN_TWICE: &str = "write_all() must go on with the bytes not yet written, and \
                                 never write a byte twice: after a short write, advance by what \
                                 each write() returned (added to what was written before, not \
                                 in place of it), and after a write() that failed with EINTR, \
                                 retry that same rest (not the whole buffer from its start)";

/// What `main.rs` prints without a newline just before `spawn()` (its `BEFORE_SPAWN`).
const BEFORE_SPAWN: &str = "pipe-echo: spawning the echo child; ";

/// Bytes a process writes besides its pipe: the control messages, an error on stderr.
const BESIDES_PIPES: u64 = 4096;

/// What `spawn()` returned.
pub enum Spawned {
    Ready(Session),
    Failed(Launched, String),
}

/// What the program reported at `done`: each field as `ok N` or `error MESSAGE`.
pub struct Done {
    pub exchange: String,
    pub wait: String,
    pub again: Option<String>,
    /// How `main.rs` reaped its other child (`--other-child`): `ok STATUS` or `error ERRNO`.
    pub other_child: Option<String>,
    /// Whether the program's own files survived (`--own-files`): `ok` or `lost FD,FD`.
    pub own_files: Option<String>,
    /// What the first child's `exchange()` and `wait()` returned, with `--again`.
    pub first_exchange: Option<String>,
    pub first_wait: Option<String>,
}

/// Names the processes of the program in diagnoses.
pub fn role_of(parent: i32) -> impl Fn(&ProcessView) -> String + Send + Sync + 'static {
    move |view: &ProcessView| {
        if view.pid == parent {
            PARENT.into()
        } else if view.ppid == parent {
            CHILD.into()
        } else {
            "another process".into()
        }
    }
}

/// Starts the program on `input` and waits until it is about to call `spawn()`.
pub fn launch(run: &mut Run, input: Vec<u8>, flags: Flags) -> Result<Launched, Fail> {
    let input_path = run.path("input.bin");
    let output = run.path("output.bin");
    std::fs::write(&input_path, &input)?;
    let mut args = vec![
        "--input".into(),
        input_path.into_os_string(),
        "--output".into(),
        output.clone().into_os_string(),
    ];
    if flags.interruptible {
        args.push("--interruptible".into());
    }
    if flags.twice {
        args.push("--twice".into());
    }
    if flags.own_files {
        args.push("--own-files".into());
    }
    if flags.other_child {
        args.push("--other-child".into());
    }
    if flags.wait_only {
        args.push("--wait-only".into());
    }
    if flags.again {
        args.push("--again".into());
    }
    let mut proc = if flags.blocked_signals != 0 || flags.holding_pipe {
        run.spawn_with_state(
            &args,
            flags.blocked_signals,
            flags.holding_pipe.then_some(HELD_PIPE),
        )?
    } else if flags.holding {
        run.spawn_holding(&args, HELD_DESCRIPTORS)?
    } else {
        run.spawn(&args)?
    };
    let parent = proc.pid.as_raw();
    proc.set_roles(role_of(parent));
    let started = proc.recv_any()?;
    from_parent(&started, parent)?;
    if started.kind != "started" {
        return Err(Fail::failed(format!(
            "expected `started`, got `{}`",
            started.kind
        )));
    }
    let fds_before = inspect::view(parent).map(|v| v.fds).unwrap_or_default();
    Ok(Launched {
        proc,
        parent,
        fds_before,
        input,
        output,
    })
}

/// A session of `--twice` (a second `exchange()` after the first) whose child has settled in
/// its read of pipe A, with the pipe ends of both processes.
pub fn started_twice_in_read(run: &mut Run, input: Vec<u8>) -> Result<(Session, Pipes), Fail> {
    let twice = Flags {
        twice: true,
        ..Flags::default()
    };
    let session = start(run, input, twice)?;
    settle_in_read(session.child);
    let pipes = session.pipes()?;
    Ok((session, pipes))
}

/// Starts the program and waits until `spawn()` has returned the child.
pub fn start(run: &mut Run, input: Vec<u8>, flags: Flags) -> Result<Session, Fail> {
    match launch(run, input, flags)?.spawn()? {
        Spawned::Ready(session) => Ok(session),
        Spawned::Failed(_, error) => Err(Fail::failed(format!("spawn() failed: {error}"))),
    }
}

impl Launched {
    /// Lets the program call `spawn()`, and reads what it returned.
    pub fn spawn(self) -> Result<Spawned, Fail> {
        self.spawn_with(&[])
    }

    /// Lets the program run to its end, whatever `spawn()` returns: a probe the grader could
    /// not make, the program judged by other checks.
    pub fn run_out(self) -> Result<(), Fail> {
        match self.spawn()? {
            Spawned::Ready(mut session) => {
                session.exchange()?;
                session.finish()
            }
            Spawned::Failed(launched, _) => launched.finish(),
        }
    }

    /// Lets the program call `spawn()` with `fields` in the go-ahead (`descriptor-limit=N`:
    /// `main.rs` first lowers its `RLIMIT_NOFILE` to N, which needs no privilege, where setting
    /// it from outside would need `CAP_SYS_RESOURCE` for a program run as another user).
    pub fn spawn_with(mut self, fields: &[(&str, String)]) -> Result<Spawned, Fail> {
        self.proc.send("spawn", fields)?;
        let ready = self.proc.recv_any()?;
        from_parent(&ready, self.parent)?;
        if ready.kind == "failed" {
            let error = ready.get("error").unwrap_or("?").to_string();
            return Ok(Spawned::Failed(self, error));
        }
        if ready.kind != "ready" {
            return Err(Fail::failed(format!(
                "expected `ready`, got `{}`",
                ready.kind
            )));
        }
        let parent = self.parent;
        let child = child_of(&ready, parent)?;
        Ok(Spawned::Ready(Session {
            proc: self.proc,
            parent,
            child,
            input: self.input,
            output: self.output,
            fds_before: self.fds_before,
            io_at_go: None,
            child_io_at_go: None,
            traffic: Traffic::default(),
            write_failed_with: None,
        }))
    }

    /// Lets a program whose `spawn()` failed exit.
    pub fn finish(mut self) -> Result<(), Fail> {
        self.proc.send("exit", &[])?;
        self.proc.wait()?;
        Ok(())
    }
}

/// The child's pid in a `ready` message: a pid other than the parent's.
fn child_of(ready: &Message, parent: i32) -> Result<i32, Fail> {
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
    Ok(child)
}

/// A message from a process other than the one the grader started means the forked child went
/// on running the parent's code, or ran its exit handlers.
pub fn from_parent(message: &Message, parent: i32) -> Result<(), Fail> {
    let sender: i32 = message.get("pid").and_then(|p| p.parse().ok()).unwrap_or(0);
    if sender == parent {
        return Ok(());
    }
    if message.kind == "exit-in-child" {
        return Err(Fail::failed(format!(
            "the echo child (pid {sender}) ended with exit(), which ran the parent's exit \
             handlers (main.rs registers one that reports it): end the child with \
             nix::libc::_exit(), which ends the process at once"
        )));
    }
    Err(Fail::failed(format!(
        "pid {sender}, not the parent {parent}, said `{}`: the forked child returned from \
         spawn() and ran the parent's code; end the child with _exit()",
        message.kind
    )))
}

impl Session {
    /// Tells the program to exchange.
    pub fn go(&mut self) -> Result<(), Fail> {
        self.go_as("go")
    }

    /// Sends the go-ahead `kind`, noting both processes' I/O counters.
    fn go_as(&mut self, kind: &str) -> Result<(), Fail> {
        self.io_at_go = inspect::io(self.parent);
        self.child_io_at_go = inspect::io(self.child);
        self.proc.send(kind, &[])
    }

    /// With `--again`, after [`Session::go`]: waits until the program, its first child reaped,
    /// has spawned the second, which the session follows from then on (its pid is returned).
    pub fn second_child(&mut self) -> Result<i32, Fail> {
        let ready = match self.proc.recv_any() {
            Ok(ready) => ready,
            Err(Fail::TimedOut(hang)) => return Err(Fail::TimedOut(self.stopped_reading(hang))),
            Err(fail) => return Err(fail),
        };
        from_parent(&ready, self.parent)?;
        if ready.kind == "failed" {
            return Err(Fail::failed(format!(
                "spawn() called a second time, once the first child was reaped, failed: {}",
                ready.get("error").unwrap_or("?")
            )));
        }
        if ready.kind != "again-ready" {
            return Err(Fail::failed(format!(
                "expected `again-ready`, got `{}`",
                ready.kind
            )));
        }
        self.child = child_of(&ready, self.parent)?;
        Ok(self.child)
    }

    /// With `--again`: lets the program exchange with its second child.
    pub fn go_again(&mut self) -> Result<(), Fail> {
        self.go_as("again-go")
    }

    /// Waits for the program's report.
    pub fn recv_done(&mut self) -> Result<Done, Fail> {
        let done = match self.proc.recv_any() {
            Ok(done) => done,
            Err(Fail::TimedOut(hang)) => return Err(Fail::TimedOut(self.stopped_reading(hang))),
            Err(fail) => return Err(fail),
        };
        self.done(done)
    }

    /// Rewrites a hang's diagnosis when the parent read some of the echo and then stopped: no
    /// thread of it reads the pipe it still holds, and not all the echo has come.
    pub fn stopped_reading(&self, hang: String) -> String {
        let (Some(then), Some(now)) = (self.io_at_go, inspect::io(self.parent)) else {
            return hang;
        };
        let read = now.since(then).read_bytes;
        let written = now.since(then).written_bytes;
        let len = self.input.len() as u64;
        if let Some((first, processes)) = hang.split_once('\n')
            && first.contains(super::PARENT_HOLDS_A)
        {
            let cause = if let Some(errno) = self.write_failed_with {
                format!(
                    "its write() to pipe A failed with {errno} (the grader's tracer made it \
                     fail) after {written} of the input's {len} bytes, and the parent still holds \
                     the write end: a failed write ends the sending, and the write end must be \
                     closed on that path too (a `?` that returns before the close, or a raw \
                     descriptor nobody owns, leaves it open), so that the child sees \
                     end-of-file; exchange() then returns Write({errno})"
                )
            } else if written >= len {
                format!(
                    "the parent wrote all {len} bytes and kept the write end: close it (drop \
                     to_child) right after the last byte, and read the echo until end-of-file \
                     rather than waiting for as many bytes as you sent"
                )
            } else {
                format!(
                    "the parent wrote {written} of the input's {len} bytes and stopped: \
                     exchange() must send all of the input, and close the write end after the \
                     last byte"
                )
            };
            let start = first.find(super::PARENT_HOLDS_A).unwrap_or(0);
            return format!(
                "{}{}: nobody writes; {cause}.\n{processes}",
                &first[..start],
                super::PARENT_HOLDS_A
            );
        }
        let Some(view) = inspect::view(self.parent) else {
            return hang;
        };
        let reading = view.threads.iter().any(|t| {
            matches!(
                classify(&view, t.syscall),
                Activity::PipeRead { .. } | Activity::Poll | Activity::Busy
            ) || t.state == 'R'
        });
        let holds_pipe = !pipes_of(&self.proc, self.parent).is_empty();
        if read == 0 || reading || !holds_pipe || read >= self.input.len() as u64 {
            return hang;
        }
        // The engine's sentence would blame the parent for not reading at all.
        let processes = hang.split_once('\n').map_or("", |(_, rest)| rest);
        format!(
            "timed out: the parent read {read} bytes of the echo, then stopped reading pipe B \
             before end-of-file, and nobody reads it now: keep reading until read() returns 0, \
             while the writing goes on (a read() that returns less than asked is not the end, \
             and one that fails with EINTR must be retried).\n{processes}"
        )
    }

    /// Reads what each process has moved since `go`, keeping the last counters of a process
    /// that is gone. The parent's are kept only while the child is there: once reaped, the
    /// child's counters are added to its parent's.
    pub fn sample_traffic(&mut self) {
        let since =
            |pid: i32, then: Option<inspect::IoCounters>| Some(inspect::io(pid)?.since(then?));
        let Some(child) = since(self.child, self.child_io_at_go) else {
            return;
        };
        self.traffic.child = child;
        let parent = since(self.parent, self.io_at_go);
        if let Some(parent) = parent
            && inspect::io(self.child).is_some()
        {
            self.traffic.parent = parent;
        }
    }

    /// Waits for the report until `until`, looking at both processes' I/O counters as it goes.
    pub fn watch_done(&mut self, until: Instant) -> Result<Done, Fail> {
        while Instant::now() < until {
            self.sample_traffic();
            if let Some(message) = self.message_within(Duration::from_millis(20))? {
                return self.done(message);
            }
        }
        self.sample_traffic();
        Err(Fail::TimedOut(String::new()))
    }

    /// A `write_all()` that wrote bytes more than once, established from the I/O counters
    /// [`Session::watch_done`] sampled: the parent wrote more than the input (and the echo it
    /// saved), or the child more than it read.
    pub fn resent(&self) -> Option<String> {
        let saved = std::fs::metadata(&self.output).map_or(0, |m| m.len());
        let len = self.input.len() as u64;
        let Traffic { parent, child } = self.traffic;
        let advice = WRITTEN_TWICE;
        if parent.written_bytes > len + saved + BESIDES_PIPES {
            return Some(format!(
                "the parent wrote {} bytes for an input of {len}: it wrote some bytes more than \
                 once; {advice}",
                parent.written_bytes.saturating_sub(saved)
            ));
        }
        if child.written_bytes > child.read_bytes + BESIDES_PIPES {
            return Some(format!(
                "the echo child wrote {} bytes to pipe B after reading {} from pipe A: it wrote \
                 some bytes more than once; {advice}",
                child.written_bytes, child.read_bytes
            ));
        }
        None
    }

    /// Lets the program exchange and reap, and reads its report.
    pub fn exchange(&mut self) -> Result<Done, Fail> {
        self.go()?;
        self.recv_done()
    }

    /// Checks that `done` is the parent's report, and reads it.
    pub fn done(&self, done: Message) -> Result<Done, Fail> {
        from_parent(&done, self.parent)?;
        if done.kind != "done" {
            return Err(Fail::failed(format!(
                "expected `done`, got `{}`",
                done.kind
            )));
        }
        Ok(Done {
            exchange: done.get("exchange").unwrap_or("?").to_string(),
            wait: done.get("wait").unwrap_or("?").to_string(),
            again: done.get("again").map(str::to_string),
            other_child: done.get("other-child").map(str::to_string),
            own_files: done.get("own-files").map(str::to_string),
            first_exchange: done.get("first-exchange").map(str::to_string),
            first_wait: done.get("first-wait").map(str::to_string),
        })
    }

    /// The program's next message if one comes within `wait`.
    pub fn message_within(&mut self, wait: Duration) -> Result<Option<Message>, Fail> {
        let message = self.proc.recv_before(Instant::now() + wait)?;
        if let Some(message) = &message {
            from_parent(message, self.parent)?;
        }
        Ok(message)
    }

    /// Lets the program exit, and checks that it did so cleanly.
    pub fn finish(mut self) -> Result<(), Fail> {
        self.proc.send("exit", &[])?;
        let status = self.proc.wait()?;
        if status.code().is_none() {
            return Err(Fail::Crashed(format!("the parent died: {status}")));
        }
        self.printed_once()
    }

    /// Whether `main.rs`'s [`BEFORE_SPAWN`], left in stdout's buffer when the child was forked,
    /// was printed once: by the parent, not also by a child that flushed its copy.
    fn printed_once(&self) -> Result<(), Fail> {
        // Both processes have ended: the stream ends once the grader has read it all.
        let until = Instant::now() + Duration::from_secs(1);
        while !self.proc.stdout.lock().expect("capture lock").ended && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(2));
        }
        let printed = self
            .proc
            .stdout
            .lock()
            .expect("capture lock")
            .text()
            .matches(BEFORE_SPAWN)
            .count();
        if printed > 1 {
            return Err(Fail::failed(format!(
                "main.rs prints `{BEFORE_SPAWN}` without a newline just before spawn(), so the \
                 text is still in stdout's buffer when the child is forked, and stdout has it \
                 {printed} times: the echo child flushed its copy of the parent's buffer \
                 before it ended; the child must end with _exit() and flush no stdio buffer \
                 before it: the buffers belong to the parent"
            )));
        }
        Ok(())
    }

    /// Whether `exchange()` succeeded and the echo written to the output file is the input,
    /// byte for byte.
    pub fn verify_echo(&self, done: &Done) -> Result<(), Fail> {
        let expected = &self.input[..];
        if !done.exchange.starts_with("ok") {
            let returned = Returned::parse(&done.exchange);
            if returned == Returned::Write("EPIPE".into()) && done.wait == "ok" {
                return Err(Fail::failed(format!(
                    "exchange() failed: {}, and the echo child exited with status 0: it stopped \
                     reading pipe A before end-of-file, while the parent was still writing; \
                     echo_loop() must read until read() returns 0 (a read() that returns less \
                     than asked is not the end, and one that fails with EINTR must be retried)",
                    done.exchange
                )));
            }
            if let Returned::ShortEcho { sent, echoed } = returned
                && echoed < sent
                && sent == expected.len()
            {
                return Err(self.came_back_short(done, sent, echoed));
            }
            return Err(Fail::failed(format!(
                "exchange() failed: {}",
                done.exchange
            )));
        }
        let echoed = std::fs::read(&self.output)?;
        if echoed == expected {
            return Ok(());
        }
        let first = first_difference(&echoed, expected);
        let (got, sent) = (echoed.len(), expected.len());
        if got == sent {
            return Err(Fail::failed(format!(
                "the echo is not the input: {got} bytes came back for {sent} sent, but they \
                 differ from byte {first} on: the child must write exactly the bytes each read() \
                 returned, in order, and the parent keep them in the order it read them"
            )));
        }
        let lost = if got < sent {
            "; bytes were lost on the way: a write() that writes less than asked must be \
             continued with the rest"
        } else {
            ""
        };
        Err(Fail::failed(format!(
            "the echo is not the input: {got} bytes came back for {sent} sent (first difference \
             at byte {first}), yet exchange() returned ok: compare the echo's length with the \
             input's (ShortEcho){lost}"
        )))
    }

    /// An echo shorter than the input, told apart by what the parent wrote since `go` (its
    /// I/O counters, which also count its report and its stderr): the input not all sent, or
    /// sent and not all back.
    fn came_back_short(&self, done: &Done, sent: usize, echoed: usize) -> Fail {
        let written = match (self.io_at_go, inspect::io(self.parent)) {
            (Some(then), Some(now)) => now.since(then).written_bytes,
            _ => return Fail::failed(format!("exchange() failed: {}", done.exchange)),
        };
        // A child its parent reaped added its own counters to the parent's: what it wrote to
        // pipe B, at least the echo the parent read there.
        let reaped = inspect::view(self.child).is_none() && !ignores_sigchld(self.parent);
        let written = if reaped {
            written.saturating_sub(echoed as u64)
        } else {
            written
        };
        let returned = format!(
            "exchange() returned `{}` (ShortEcho {{ sent: {sent}, echoed: {echoed} }})",
            done.exchange
        );
        // The child's own end comes first: whatever the parent did, an echo child that died or
        // failed cannot have echoed the rest.
        if done.wait != "ok" {
            return Fail::failed(format!(
                "exchange() failed: it returned `{}` (ShortEcho {{ sent: {sent}, echoed: \
                 {echoed} }}), and wait() then reported `{}`: the echo child did not end \
                 normally before it had echoed the whole input (its stderr is in the log)",
                done.exchange, done.wait
            ));
        }
        if written + BESIDES_PIPES / 4 < sent as u64 {
            return Fail::failed(format!(
                "{returned}, and the parent wrote at most {written} bytes since it was told to \
                 exchange (its I/O counters), {} short of the input: exchange() did not send all \
                 of the input; send every byte (the last block too, shorter than the others \
                 or, for a length that is a multiple of the block size, as long as them, and \
                 the rest of each short write)",
                sent as u64 - written
            ));
        }
        Fail::failed(format!(
            "{returned}, although the parent wrote the whole input into pipe A: bytes were lost \
             on the way back (the child must write all that each read() returned, continuing \
             after short writes) or the parent stopped reading pipe B before end-of-file"
        ))
    }

    /// The echo `exchange()` returned (what `main.rs` wrote to the output file).
    pub fn echoed(&self) -> Result<Vec<u8>, Fail> {
        Ok(std::fs::read(&self.output)?)
    }

    /// The two pipes between parent and child, read from `/proc`. Call it while the child
    /// waits for input, once [`settle_in_read`] has let it close the ends it does not use.
    pub fn pipes(&self) -> Result<Pipes, Fail> {
        let parent_pipes = pipes_of(&self.proc, self.parent);
        let child_pipes = pipes_of(&self.proc, self.child);
        let shared: Vec<u64> = parent_pipes
            .keys()
            .filter(|inode| child_pipes.contains_key(inode))
            .copied()
            .collect();
        // Pipe A: the parent writes, the child reads. Pipe B: the child writes, the parent reads.
        let pipe_a = shared
            .iter()
            .find(|i| !parent_pipes[i].1.is_empty() && !child_pipes[i].0.is_empty());
        let pipe_b = shared
            .iter()
            .find(|i| !child_pipes[i].1.is_empty() && !parent_pipes[i].0.is_empty());
        let (Some(&a), Some(&b)) = (pipe_a, pipe_b) else {
            return Err(Fail::failed(format!(
                "the parent and the echo child are not joined by two pipes, one each way \
                 (parent's pipes: {parent_pipes:?}, child's: {child_pipes:?}, as inode: (read \
                 fds, write fds)): create both with pipe() before fork()"
            )));
        };
        Ok(Pipes {
            a,
            b,
            parent_writes_a: parent_pipes[&a].1[0],
            parent_reads_b: parent_pipes[&b].0[0],
            child_reads_a: child_pipes[&a].0[0],
            child_writes_b: child_pipes[&b].1[0],
            parent: parent_pipes,
            child: child_pipes,
        })
    }
}

/// Whether `pid` ignores `SIGCHLD`, so that the kernel reaps its children itself (and adds
/// nothing of theirs to its counters or its waitpid()).
pub fn ignores_sigchld(pid: i32) -> bool {
    inspect::has_signal(pid, pid, SignalMask::Ignored, libc::SIGCHLD)
}

/// Where the first difference between two byte strings is.
pub fn first_difference(a: &[u8], b: &[u8]) -> usize {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()))
}

/// Pipe ends of one process: inode to (read fds, write fds).
pub type PipeEnds = BTreeMap<u64, (Vec<i32>, Vec<i32>)>;

/// The two pipes of the lab and the descriptors each process holds of them.
pub struct Pipes {
    pub a: u64,
    pub b: u64,
    pub parent_writes_a: i32,
    pub parent_reads_b: i32,
    pub child_reads_a: i32,
    pub child_writes_b: i32,
    /// Every pipe end of each process, when they were read.
    pub parent: PipeEnds,
    pub child: PipeEnds,
}

/// The pipes a process holds, but for the grader's stdout and stderr pipes.
pub fn pipes_of(proc: &Proc, pid: i32) -> PipeEnds {
    let mut pipes = PipeEnds::new();
    let Some(view) = inspect::view(pid) else {
        return pipes;
    };
    for (fd, target) in &view.fds {
        if let Some(inode) = pipe_inode(target).filter(|i| !proc.grader_pipes.contains(i)) {
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

/// Waits (up to a second) until the child is blocked in a system call, as it is once it waits
/// for input: by then a correct child has closed the ends it does not use, and `/proc` shows
/// its descriptors as they will stay.
pub fn settle_in_read(child: i32) {
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
