//! The protocol driver: starts `posix-shm open`, sends it `cmd` messages and reads its answers.
//! Nothing in this lab waits, so every answer is due at once: a program seen asleep between
//! looks while the grader waits for it fails then and there, instead of at the timeout.

use std::time::{Duration, Instant};

use ipc_labs_driver::Message;

use crate::engine::diagnose::{Activity, classify};
use crate::engine::tracer::{Action, Breakpoint, Call, Tracer, Watched};
use crate::engine::{Fail, Proc, Run, force, inspect};

pub const CREATOR: &str = "the creator";
pub const OPENER: &str = "the opener";

/// One running `posix-shm open`, with the table mapped.
pub struct Table {
    pub proc: Proc,
    pub name: String,
    pub who: &'static str,
    /// Size the program reported at `mapped`.
    pub len: usize,
    /// What this process was told to write, in order, as (offset, bytes): a read answered from a
    /// copy of its own writes gives one of these back.
    pub wrote: Vec<(usize, Vec<u8>)>,
    /// What this process's reads returned, in order, as (offset, bytes): a read answered from
    /// a copy of an earlier one gives one of these back.
    pub read_back: Vec<(usize, Vec<u8>)>,
}

/// What [`Table::command_watched`] saw.
pub struct WatchedCommand {
    pub answer: Option<Message>,
    pub armed: bool,
    pub hit: bool,
}

/// The arguments of `posix-shm open`.
fn args(name: &str, create: Option<usize>) -> Vec<String> {
    let mut args = vec!["open".to_string(), "--name".into(), name.into()];
    if let Some(size) = create {
        args.extend(["--create".into(), "--size".into(), size.to_string()]);
    }
    args
}

/// Starts `posix-shm open` without waiting for its first answer (several can start at once).
pub fn start(
    run: &mut Run,
    name: &str,
    create: Option<usize>,
    who: &'static str,
) -> Result<Proc, Fail> {
    let mut proc = run.spawn(&args(name, create))?;
    proc.set_roles(move |_| who.into());
    Ok(proc)
}

/// Starts `posix-shm open` stopped before its first instruction (see [`Run::spawn_stopped`]).
pub fn start_stopped(
    run: &mut Run,
    name: &str,
    create: Option<usize>,
    who: &'static str,
) -> Result<Proc, Fail> {
    let mut proc = run.spawn_stopped(&args(name, create))?;
    proc.set_roles(move |_| who.into());
    Ok(proc)
}

/// Starts `posix-shm open` traced from its first instruction, to be held at the entry of the
/// first waiting call it makes (a sleep, a poll, a yield): [`await_answer_watching`] given the
/// tracer fails it there, whatever the machine's load, where looks between its steps could
/// miss a short wait. Without the tracer where the grader may not trace it (the looks remain).
pub fn start_watched(
    run: &mut Run,
    name: &str,
    create: Option<usize>,
    who: &'static str,
) -> Result<(Proc, Option<Tracer>), Fail> {
    start_traced(run, name, create, who, Call::waiting())
}

/// Starts `posix-shm open` traced from its first instruction, to be held at the entry of its
/// first `call`; no tracer where the grader may not trace it.
fn start_traced(
    run: &mut Run,
    name: &str,
    create: Option<usize>,
    who: &'static str,
    call: Call,
) -> Result<(Proc, Option<Tracer>), Fail> {
    let proc = start_stopped(run, name, create, who)?;
    let pid = proc.pid.as_raw();
    let tracer = Tracer::attach(pid, call, Action::Hold)?;
    force::resume(pid)?;
    Ok((proc, tracer))
}

/// The `shm_open()` that creates an object: glibc's `openat()` with `O_CREAT`.
pub const fn creating_open() -> Call {
    Call::flag_set(libc::SYS_openat, 2, libc::O_CREAT as u64)
}

/// Starts `posix-shm open` traced from its start, to be held as it exits (at the entry of its
/// `exit_group()`), where the grader sees what it still holds once it has answered; without
/// the tracer where the grader may not trace it.
pub fn start_held_at_exit(
    run: &mut Run,
    name: &str,
    create: Option<usize>,
    who: &'static str,
) -> Result<(Proc, Option<Tracer>), Fail> {
    let (proc, tracer) = start_traced(run, name, create, who, Call::any(libc::SYS_exit_group))?;
    if tracer.is_none() {
        run.note(
            "the grader may not trace the program here (ptrace): what it holds as it exits was \
             not seen",
        );
    }
    Ok((proc, tracer))
}

/// The descriptors of the object `name` that `proc` still holds as it exits, held there by
/// `tracer` (which must hold it at its `exit_group()` next); then lets it exit. Empty if it was
/// not held there.
pub fn descriptors_at_exit(
    proc: &Proc,
    tracer: Option<Tracer>,
    name: &str,
) -> Result<Vec<i32>, Fail> {
    let Some(mut tracer) = tracer else {
        return Ok(Vec::new());
    };
    let held = tracer.held_before(Instant::now() + Duration::from_secs(2))?;
    let fds = if held {
        super::probes::object_fds(proc.pid.as_raw(), name)
    } else {
        Vec::new()
    };
    tracer.release();
    Ok(fds)
}

/// Starts `posix-shm open` and returns its first answer, whatever it is.
pub fn spawn_open(
    run: &mut Run,
    name: &str,
    create: Option<usize>,
    who: &'static str,
) -> Result<(Proc, Message), Fail> {
    let mut proc = start(run, name, create, who)?;
    let verb = if create.is_some() {
        "creating"
    } else {
        "opening"
    };
    let first = await_answer(&mut proc, who, &format!("{verb} {name:.60}"), None)?;
    Ok((proc, first))
}

/// How many looks, 10 ms apart, may find a program asleep in `nanosleep()` before the grader
/// calls it polling: a program that answers at once is never seen there.
const ASLEEP_LOOKS: u32 = 3;

/// How long the grader looks for a program asleep while it waits for its answer; after that it
/// just waits, until the check's deadline (the lab's `explain_hang` names a sleeper then).
const LOOKING: Duration = Duration::from_secs(2);

/// The next message of `proc` (`who`), which is busy with `what` and has nothing to wait for.
/// Fails as soon as it is seen asleep in `nanosleep()` again and again; `due` says what it
/// should have answered, when the check knows. Otherwise waits until the check's deadline.
pub fn await_answer(
    proc: &mut Proc,
    who: &str,
    what: &str,
    due: Option<&str>,
) -> Result<Message, Fail> {
    await_answer_watching(proc, None, who, what, due, &mut || {})
}

/// [`await_answer`], calling `look` before it waits and at every look (10 ms apart) until the
/// answer comes: what a check must read of a process while it runs (once it has exited, the
/// engine reaps it at any moment). Fails at once if `held` (of [`start_watched`]) holds it at a
/// waiting call.
pub fn await_answer_watching(
    proc: &mut Proc,
    mut held: Option<&mut Tracer>,
    who: &str,
    what: &str,
    due: Option<&str>,
    look: &mut dyn FnMut(),
) -> Result<Message, Fail> {
    let pid = proc.pid.as_raw();
    let mut asleep = 0;
    // Looks that found it blocked in another call than a read of its commands, and the call.
    let mut blocked = 0;
    let mut blocked_in = String::new();
    let until = Instant::now() + LOOKING;
    look();
    while Instant::now() < until {
        if let Some(message) = proc.recv_before(Instant::now() + Duration::from_millis(10))? {
            look();
            return Ok(message);
        }
        look();
        let due = || {
            due.map_or_else(
                || "every call answers at once".to_string(),
                |due| format!("it must fail at once with kind={due}"),
            )
        };
        if let Some(tracer) = held.as_deref_mut()
            && tracer.held_before(Instant::now())?
        {
            let number = inspect::call_of(pid, pid).map_or(-1, |(number, _)| number);
            return Err(Fail::failed(format!(
                "{what}, {who} did not answer at once: before it answered, it entered {}, \
                 where the grader held it: {}; nothing in this lab waits: {}",
                waiting_call(number),
                waits_how(number),
                due()
            )));
        }
        let view = inspect::view(pid);
        let sleeping = view.as_ref().is_some_and(|view| {
            view.threads
                .iter()
                .any(|t| t.state == 'S' && classify(view, t.syscall) == Activity::Sleep)
        });
        asleep += u32::from(sleeping);
        let waiting = view.as_ref().and_then(|view| {
            view.threads
                .iter()
                .filter(|t| t.state == 'S')
                .find_map(|t| waiting_in(view, t.syscall?))
        });
        if let Some(call) = waiting.filter(|_| !sleeping) {
            blocked += 1;
            blocked_in = call;
        }
        if asleep >= ASLEEP_LOOKS {
            return Err(Fail::failed(format!(
                "{what}, {who} did not answer: it was asleep in nanosleep() at {ASLEEP_LOOKS} \
                 looks, 10 ms apart, waiting for something to change; nothing in this lab \
                 waits: {}",
                due()
            )));
        }
        if blocked >= ASLEEP_LOOKS {
            return Err(Fail::failed(format!(
                "{what}, {who} did not answer: it was blocked in {blocked_in} at \
                 {ASLEEP_LOOKS} looks, 10 ms apart, waiting for something to happen (the \
                 grader's commands come on descriptor {CONTROL_FD}, which it was not reading); \
                 nothing in this lab waits, with or without a timeout: {}",
                due()
            )));
        }
    }
    proc.recv_any()
}

/// The name of a call that waits ([`Call::waiting`]).
fn waiting_call(number: i64) -> &'static str {
    match number {
        libc::SYS_nanosleep => "nanosleep()",
        libc::SYS_clock_nanosleep => "clock_nanosleep()",
        libc::SYS_poll => "poll()",
        libc::SYS_ppoll => "ppoll()",
        libc::SYS_select => "select()",
        libc::SYS_pselect6 => "pselect()",
        libc::SYS_epoll_wait | libc::SYS_epoll_pwait => "epoll_wait()",
        libc::SYS_pause => "pause()",
        libc::SYS_rt_sigsuspend => "sigsuspend()",
        libc::SYS_rt_sigtimedwait => "sigtimedwait()",
        libc::SYS_wait4 | libc::SYS_waitid => "a wait for a child",
        libc::SYS_sched_yield => "sched_yield()",
        _ => "a waiting call",
    }
}

/// What entering a call that waits ([`Call::waiting`]) before an answer says of the program.
fn waits_how(number: i64) -> &'static str {
    match number {
        libc::SYS_nanosleep | libc::SYS_clock_nanosleep => {
            "it sleeps (a pause, a retry later) instead of answering"
        }
        libc::SYS_sched_yield => {
            "it gives the CPU away, as a loop that busy-waits for something to change does"
        }
        _ => "it blocks there, waiting for something to happen",
    }
}

/// The program's end of the control socket, where its commands come from.
const CONTROL_FD: i32 = 3;

/// The call a thread blocked in `syscall` (number, first argument) waits in, in words, unless it
/// reads its commands (the one wait the program has) or the call is unknown (a page fault).
fn waiting_in(view: &inspect::ProcessView, (number, arg0): (i64, u64)) -> Option<String> {
    let fd = arg0 as i32;
    let reads = [
        libc::SYS_read,
        libc::SYS_readv,
        libc::SYS_recvfrom,
        libc::SYS_recvmsg,
    ];
    if number < 0 || (reads.contains(&number) && fd == CONTROL_FD) {
        return None;
    }
    let on = |call: &str| {
        let target = view.fds.get(&fd).map_or("", String::as_str);
        if target.is_empty() {
            format!("{call}() of descriptor {fd}")
        } else {
            format!("{call}() of descriptor {fd} ({target})")
        }
    };
    Some(match number {
        libc::SYS_poll => "poll()".into(),
        libc::SYS_ppoll => "ppoll()".into(),
        libc::SYS_select => "select()".into(),
        libc::SYS_pselect6 => "pselect()".into(),
        libc::SYS_epoll_wait | libc::SYS_epoll_pwait => "epoll_wait()".into(),
        libc::SYS_futex => "a futex wait".into(),
        libc::SYS_nanosleep => "nanosleep()".into(),
        libc::SYS_clock_nanosleep => "clock_nanosleep()".into(),
        libc::SYS_rt_sigtimedwait => "sigtimedwait()".into(),
        libc::SYS_pause => "pause()".into(),
        libc::SYS_wait4 | libc::SYS_waitid => "a wait for a child".into(),
        libc::SYS_read => on("read"),
        libc::SYS_readv => on("readv"),
        libc::SYS_recvfrom => on("recvfrom"),
        libc::SYS_recvmsg => on("recvmsg"),
        libc::SYS_write => on("write"),
        libc::SYS_flock => on("flock"),
        libc::SYS_fcntl => on("fcntl"),
        other => format!("system call {other}"),
    })
}

/// What an answer said, for a message: "`mapped`", "`failed` (kind=exists: ...)".
pub fn said(answer: &Message) -> String {
    match answer.kind.as_str() {
        "failed" => format!(
            "`failed` (kind={}: {})",
            answer.get("kind").unwrap_or("none"),
            answer.get("error").unwrap_or("")
        ),
        kind => format!("`{kind}`"),
    }
}

/// Whether an answer is `failed` with `kind`.
pub fn is_refusal(answer: &Message, kind: &str) -> bool {
    answer.kind == "failed" && answer.get("kind") == Some(kind)
}

/// The answer to a command or a start that must be `failed` with `kind`.
pub fn refused(answer: &Message, kind: &str, what: &str, hint: &str) -> Result<(), Fail> {
    if is_refusal(answer, kind) {
        return Ok(());
    }
    Err(Fail::failed(format!(
        "{what}: the program said {}, not `failed` with kind={kind}: {hint}",
        said(answer)
    )))
}

/// A table the program created (`create` with a size) or opened, mapped.
pub fn table(
    run: &mut Run,
    name: &str,
    create: Option<usize>,
    who: &'static str,
) -> Result<Table, Fail> {
    let (proc, first) = spawn_open(run, name, create, who)?;
    mapped(proc, first, name, who)
}

/// The [`Table`] of a program whose first answer was `first`, which must be `mapped`.
pub fn mapped(proc: Proc, first: Message, name: &str, who: &'static str) -> Result<Table, Fail> {
    if first.kind != "mapped" {
        let what = if who == CREATOR { "create" } else { "open" };
        return Err(Fail::failed(format!(
            "{who} could not {what} {name}: it said {}",
            said(&first)
        )));
    }
    let len = first.get("len").and_then(|l| l.parse().ok()).unwrap_or(0);
    Ok(Table {
        proc,
        name: name.to_string(),
        who,
        len,
        wrote: Vec::new(),
        read_back: Vec::new(),
    })
}

impl Table {
    pub fn pid(&self) -> i32 {
        self.proc.pid.as_raw()
    }

    /// Sends a command and returns the answer (`done` or `failed`).
    pub fn command(&mut self, fields: &[(&str, String)]) -> Result<Message, Fail> {
        self.proc.send("cmd", fields)?;
        let what: Vec<String> = fields
            .iter()
            .filter(|(key, _)| *key != "file")
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        let what = format!("asked for {}", what.join(" "));
        await_answer(&mut self.proc, self.who, &what, None)
    }

    /// Sends a command once `tracer`'s watchpoint is set (or, where it cannot be, without it),
    /// and watches until the first hit or the answer. The answer, unless the watch ended first
    /// (then the caller awaits it), whether the watchpoint was set, and whether it was hit (one
    /// hit is enough: the rest runs unwatched).
    pub fn command_watched(
        &mut self,
        mut tracer: Tracer,
        fields: &[(&str, String)],
    ) -> Result<WatchedCommand, Fail> {
        let until = Instant::now() + Duration::from_secs(5);
        let (mut sent, mut armed, mut hit) = (false, false, false);
        let answer = loop {
            match tracer.next(&mut self.proc, until)? {
                Watched::Armed => {
                    armed = true;
                    self.proc.send("cmd", fields)?;
                    sent = true;
                }
                Watched::Hit => {
                    hit = true;
                    break None;
                }
                Watched::Said(message) => break Some(message),
                Watched::Lost | Watched::Unavailable => {
                    armed = false;
                    break None;
                }
            }
        };
        drop(tracer);
        if !sent {
            self.proc.send("cmd", fields)?;
        }
        Ok(WatchedCommand { answer, armed, hit })
    }

    /// A command that must succeed.
    pub fn must(&mut self, what: &str, fields: &[(&str, String)]) -> Result<(), Fail> {
        let answer = self.command(fields)?;
        if answer.kind == "done" {
            return Ok(());
        }
        Err(Fail::failed(format!(
            "{} could not {what}: it said {}",
            self.who,
            said(&answer)
        )))
    }

    /// The fields of `op=write` of `data` at `offset`, through a file the program reads.
    pub fn write_fields(
        &self,
        run: &Run,
        offset: usize,
        data: &[u8],
    ) -> Result<Vec<(&'static str, String)>, Fail> {
        let file = run.path(&format!("write-{}-{offset}.bin", self.pid()));
        std::fs::write(&file, data)?;
        Ok(vec![
            ("op", "write".into()),
            ("offset", offset.to_string()),
            ("file", file.display().to_string()),
        ])
    }

    /// The fields of `op=read` of `len` bytes at `offset`, and the file the program writes.
    pub fn read_fields(
        &self,
        run: &Run,
        offset: usize,
        len: usize,
    ) -> (Vec<(&'static str, String)>, std::path::PathBuf) {
        let file = run.path(&format!("read-{}-{offset}-{len}.bin", self.pid()));
        let fields = vec![
            ("op", "read".into()),
            ("offset", offset.to_string()),
            ("len", len.to_string()),
            ("file", file.display().to_string()),
        ];
        (fields, file)
    }

    pub fn write(&mut self, run: &mut Run, offset: usize, data: &[u8]) -> Result<(), Fail> {
        let fields = self.write_fields(run, offset, data)?;
        let file = fields[2].1.clone();
        let what = format!("write {} bytes at offset {offset}", data.len());
        let seen = self.mapping_now();
        let written = self
            .must(&what, &fields)
            .map_err(|fail| self.died_in(fail, seen, "writing", offset, data.len()));
        // Read by now: no other process may find the data anywhere but in the table.
        std::fs::remove_file(&file)?;
        self.wrote.push((offset, data.to_vec()));
        written?;
        super::explain::stored_before_done(self, offset, data)
    }

    pub fn read(&mut self, run: &mut Run, offset: usize, len: usize) -> Result<Vec<u8>, Fail> {
        let (fields, file) = self.read_fields(run, offset, len);
        let what = format!("read {len} bytes at offset {offset}");
        let seen = self.mapping_now();
        self.must(&what, &fields)
            .map_err(|fail| self.died_in(fail, seen, "reading", offset, len))?;
        let bytes = std::fs::read(&file)?;
        std::fs::remove_file(&file)?;
        self.read_back.push((offset, bytes.clone()));
        Ok(bytes)
    }

    /// The process's mapping of the table now: looked at before an access, since a process
    /// that dies of it no longer shows its mappings.
    fn mapping_now(&self) -> Option<super::probes::Mapping> {
        super::probes::table_mapping(self.pid(), &self.name)
    }

    /// Says why the process died `doing` `len` bytes at `offset`, when its mapping (`seen`
    /// just before) tells: no mapping, one that cannot be written, one too short.
    fn died_in(
        &self,
        fail: Fail,
        seen: Option<super::probes::Mapping>,
        doing: &str,
        offset: usize,
        len: usize,
    ) -> Fail {
        let Fail::Crashed(message) = fail else {
            return fail;
        };
        let who = self.who;
        let why = match seen {
            None => "it no longer mapped the table (not in /proc/PID/maps) when it was asked \
                     for that: only close() unmaps it"
                .to_string(),
            Some(m) if doing == "writing" && !m.perms.starts_with("rw") => format!(
                "its mapping of the table is {}: map it PROT_READ | PROT_WRITE",
                m.perms
            ),
            Some(m) if m.end - m.start < (offset + len) as u64 => format!(
                "its mapping of the table is {} bytes, fewer than the {} the table has: map all \
                 of it (the size from fstat())",
                m.end - m.start,
                self.len
            ),
            Some(_) => return Fail::Crashed(message),
        };
        Fail::Crashed(format!(
            "{who} died {doing} {len} bytes at offset {offset}: {why} ({message})"
        ))
    }

    pub fn unlink(&mut self) -> Result<(), Fail> {
        self.must("unlink the name", &[("op", "unlink".into())])
    }

    /// Unmaps; the program then waits for `exit`.
    pub fn unmap(&mut self) -> Result<(), Fail> {
        let who = self.who;
        self.must("unmap the table", &[("op", "close".into())])
            .map_err(|fail| match fail {
                Fail::Crashed(message) => Fail::Crashed(format!(
                    "{who} died closing the table (asked for op=close, before its answer): \
                     after munmap() it touched memory that is no longer mapped, the table \
                     itself (used after close()) or memory past it, which munmap() unmaps too \
                     when given a length larger than the table's (every page the range \
                     touches) ({message})"
                )),
                other => other,
            })
    }

    /// Lets the program, which has unmapped the table, exit, and wants a clean exit.
    pub fn exit(mut self) -> Result<(), Fail> {
        self.proc.send("exit", &[])?;
        let status = self.proc.wait()?;
        if status.success() {
            Ok(())
        } else {
            Err(Fail::failed(format!("{} exited with {status}", self.who)))
        }
    }

    /// Unmaps, and waits for a clean exit.
    pub fn close(mut self) -> Result<(), Fail> {
        self.unmap()?;
        self.exit()
    }
}

/// Unmaps every table, then lets them all exit, and wants clean exits.
pub fn close_all(tables: Vec<Table>) -> Result<(), Fail> {
    let mut tables = tables;
    for table in &mut tables {
        table.unmap()?;
    }
    for table in &mut tables {
        table.proc.send("exit", &[])?;
    }
    for mut table in tables {
        let status = table.proc.wait()?;
        if !status.success() {
            return Err(Fail::failed(format!("{} exited with {status}", table.who)));
        }
    }
    Ok(())
}

/// Creators of fresh tables, one per (name, size), started at once (they do not depend on
/// each other); each must have mapped its table and sized the object.
pub fn creators(run: &mut Run, tables: &[(String, usize)]) -> Result<Vec<Table>, Fail> {
    let mut procs = Vec::new();
    for (name, size) in tables {
        procs.push(start(run, name, Some(*size), CREATOR)?);
    }
    let mut created = Vec::new();
    for (mut proc, (name, size)) in procs.into_iter().zip(tables) {
        let first = await_answer(&mut proc, CREATOR, &format!("creating {name}"), None)?;
        let creator = mapped(proc, first, name, CREATOR)?;
        if super::probes::object_size(name, CREATOR)? == 0 {
            return Err(Fail::failed(format!(
                "the {size}-byte table is 0 bytes in /dev/shm: a new object is empty until \
                 ftruncate(fd, size); touching its mapping then raises SIGBUS"
            )));
        }
        created.push(creator);
    }
    Ok(created)
}

/// Openers of existing, sized tables, started at once; each must have mapped its table and
/// left the object as it was.
pub fn openers(run: &mut Run, names: &[String]) -> Result<Vec<Table>, Fail> {
    let mut procs = Vec::new();
    for name in names {
        procs.push(start(run, name, None, OPENER)?);
    }
    let mut opened = Vec::new();
    for (mut proc, name) in procs.into_iter().zip(names) {
        let first = await_answer(&mut proc, OPENER, &format!("opening {name}"), None)?;
        if first.kind != "mapped" && super::probes::object_size(name, CREATOR)? == 0 {
            return Err(Fail::failed(format!(
                "the table is 0 bytes since the opener opened it (it said {}): open() truncated \
                 the object; open it with O_RDWR alone (no O_TRUNC, no ftruncate)",
                said(&first)
            )));
        }
        let opener = mapped(proc, first, name, OPENER)?;
        super::probes::name_still_there(name, "the opener opened it")?;
        opened.push(opener);
    }
    Ok(opened)
}

/// A creator and an opener of a fresh table of `size` bytes, named after `what`. Before anyone
/// opens it the object must have been sized (its exact size is `odd-sizes`'s business).
pub fn pair(run: &mut Run, what: &str, size: usize) -> Result<(Table, Table), Fail> {
    let name = run.ipc_name(what);
    let creator = creators(run, &[(name.clone(), size)])?.remove(0);
    let opener = openers(run, &[name])?.remove(0);
    Ok((creator, opener))
}

/// Starts `posix-shm open` with a breakpoint at the C library's `function`, set before its
/// `main()` runs ([`Tracer::break_from_main`]). No tracer (the program running untraced) where
/// the grader cannot set it.
pub fn start_breaking_at(
    run: &mut Run,
    name: &str,
    create: Option<usize>,
    who: &'static str,
    function: &std::ffi::CStr,
) -> Result<(Proc, Option<Tracer>), Fail> {
    let mut proc = start_stopped(run, name, create, who)?;
    let tracer = Tracer::break_from_main(&mut proc, &[function])?;
    Ok((proc, tracer))
}

/// How long an answer sent just before the program exited may take to reach the grader.
const ANSWER_AFTER_EXIT: Duration = Duration::from_secs(1);

/// The program's next answer, read for up to 5 s while `tracer`'s breakpoint watches it (each
/// stop let go on), and whether the program stopped at the breakpoint before it answered. The
/// answer is `None` if none came in time, or the tracer lost the program before it answered;
/// the tracer is let go.
pub fn answer_past_breakpoint(
    mut tracer: Tracer,
    proc: &mut Proc,
) -> Result<(Option<Message>, bool), Fail> {
    let until = Instant::now() + Duration::from_secs(5);
    let mut entered = false;
    let answer = loop {
        match tracer.next_break(Instant::now() + Duration::from_millis(2))? {
            Some(Breakpoint::At(_)) => {
                entered = true;
                tracer.go_on();
            }
            Some(Breakpoint::Armed) | None => {}
            // Its stops are reported before its exit: an answer it sent before it exited was
            // watched all the way, though it may reach the grader after the exit is seen.
            Some(Breakpoint::Lost) => {
                break proc.recv_before(Instant::now() + ANSWER_AFTER_EXIT)?;
            }
            Some(Breakpoint::Unavailable) => break None,
        }
        if let Some(answer) = proc.recv_before(Instant::now())? {
            break Some(answer);
        }
        if Instant::now() >= until {
            break None;
        }
    };
    // The stop at the breakpoint is reported before the program goes on to answer.
    if let Some(Breakpoint::At(_)) = tracer.next_break(Instant::now())? {
        entered = true;
        tracer.go_on();
    }
    drop(tracer);
    Ok((answer, entered))
}
