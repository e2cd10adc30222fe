//! What the creating calls ask for, read as they are made: `sem_open()`'s flags, the mode of
//! the call that creates each object, the slot's length, and each semaphore's value as it is put
//! under its name.

use std::time::{Duration, Instant};

use rand::RngExt;

use super::RECORD_SIZE;
use super::handover::{Launch, arguments, report_failure, run_through_removing, spawn_traced};
use super::names::{DECIMAL_600, decimal_600};
use super::probe;
use crate::engine::tracer::{Action, Breakpoint, Call, Reached, Tracer};
use crate::engine::{Fail, Run, force};

/// Each semaphore is made by `sem_open(O_CREAT | O_EXCL)`: with a breakpoint at the C
/// library's `sem_open()` from the program's start, the grader reads the flags of the first call
/// for each name. A first `sem_open()` of a name without both flags opens a semaphore made
/// before it some other way (its file written by hand and linked in place, say), or looks the
/// name up before it creates it: either way, what is under the name at that moment is used.
pub fn created_by_sem_open(run: &mut Run) -> Result<String, Fail> {
    let names = [run.ipc_name("ready"), run.ipc_name("ok")];
    let seed: u64 = run.rng().random();
    let mut proc = run.spawn_stopped(&arguments("semaphores", &names, 10, &[]))?;
    let pid = proc.pid.as_raw();
    let tracer = Tracer::break_from_main(&mut proc, &[c"sem_open"])?;
    let what = "10 rounds with semaphores, sem_open() watched";
    let Some(mut tracer) = tracer else {
        run_through_removing(proc, &names, seed, what)?;
        return Ok("the flags of sem_open() not read (no ptrace)".into());
    };
    let until = Instant::now() + Duration::from_secs(5);
    let mut first: Vec<(String, u64)> = Vec::new();
    let said = loop {
        match tracer.next_break(Instant::now() + Duration::from_millis(2))? {
            Some(Breakpoint::At([name, flags])) => {
                let name = probe::peek(pid, name, 256)
                    .map(|bytes| {
                        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
                        String::from_utf8_lossy(&bytes[..end]).into_owned()
                    })
                    .unwrap_or_default();
                let ours = names
                    .iter()
                    .any(|n| n.trim_start_matches('/') == name.trim_start_matches('/'));
                if ours && !first.iter().any(|(seen, _)| *seen == name) {
                    first.push((name, flags));
                }
                tracer.go_on();
                if first.len() == names.len() {
                    break None;
                }
            }
            Some(Breakpoint::Armed) | None => {}
            Some(Breakpoint::Lost | Breakpoint::Unavailable) => break None,
        }
        if let Some(message) = proc.recv_before(Instant::now())? {
            break Some(message);
        }
        if Instant::now() >= until {
            break None;
        }
    };
    tracer.release();
    if let Some(message) = said {
        proc.put_back(message);
    }
    const CREATE: u64 = (libc::O_CREAT | libc::O_EXCL) as u64;
    if let Some((name, flags)) = first.iter().find(|(_, flags)| flags & CREATE != CREATE) {
        proc.kill_tree();
        probe::remove_semaphores(&names);
        let missing = match (
            flags & libc::O_CREAT as u64 != 0,
            flags & libc::O_EXCL as u64 != 0,
        ) {
            (false, false) => "neither O_CREAT nor O_EXCL",
            (false, true) => "O_EXCL without O_CREAT",
            (true, false) => "O_CREAT without O_EXCL",
            (true, true) => unreachable!("both flags set"),
        };
        return Err(Fail::failed(format!(
            "the grader stopped the parent at each sem_open() from its start: the first \
             sem_open() of {name} had flags {flags:#o}, {missing}. Without O_CREAT | O_EXCL it \
             creates nothing: it opens whatever is under the name at that moment (a semaphore \
             made some other way before it, its file written and linked in place by hand, or \
             another process's), or it looks the name up before creating it. Create each \
             semaphore in one call, sem_open(name, O_CREAT | O_EXCL, 0600, 0), and take EEXIST \
             as Exists"
        )));
    }
    run_through_removing(proc, &names, seed, what)?;
    Ok(if first.is_empty() {
        "no sem_open() of the names seen".into()
    } else {
        "each semaphore's first sem_open() asked for O_CREAT | O_EXCL".into()
    })
}

/// The mode the creating call asks for, read at its entry (the parent held there): the
/// `openat()` inside `sem_open()` that creates the semaphore's file, or `mq_open()`. It must be
/// 0600 itself, and a queue's `mq_open()` carries `O_EXCL`: a wider mode narrowed by the umask (set by the program around the call) leaves
/// the object's mode to the process's state, and changes it for every thread meanwhile.
pub fn mode_asked(run: &mut Run, mechanism: &'static str) -> Result<String, Fail> {
    let names = [run.ipc_name("ready"), run.ipc_name("ok")];
    let seed: u64 = run.rng().random();
    // The creating call, not a look-up before it: a call without O_CREAT asks for no mode.
    let call = if mechanism == "semaphores" {
        Call::flag_set(libc::SYS_openat, 2, libc::O_CREAT as u64)
    } else {
        Call::flag_set(libc::SYS_mq_open, 1, libc::O_CREAT as u64)
    };
    let mut proc = run.spawn_stopped(&arguments(mechanism, &names, 10, &[]))?;
    let pid = proc.pid.as_raw();
    let tracer = Tracer::attach(pid, call, Action::Hold)?;
    force::resume(pid)?;
    let Some(mut tracer) = tracer else {
        proc.kill_tree();
        return Ok(format!(
            "{mechanism}: the mode asked for not read (no ptrace)"
        ));
    };
    let reached = tracer.wait(&mut proc, Instant::now() + Duration::from_secs(5))?;
    let mut judged = None;
    if let Reached::Call = reached
        && let Some((_, args)) = crate::engine::inspect::call_of(pid, pid)
    {
        // glibc's sem_open() creates a file of its own and link()s it under the name: only
        // mq_open() carries O_EXCL itself.
        let (path_arg, mode, exclusive) = if mechanism == "semaphores" {
            (args[1], args[3], true)
        } else {
            (args[0], args[2], args[1] & libc::O_EXCL as u64 != 0)
        };
        let path = probe::peek(pid, path_arg, 300)
            .map(|bytes| {
                let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
                String::from_utf8_lossy(&bytes[..end]).into_owned()
            })
            .unwrap_or_default();
        let umask = crate::engine::inspect::umask(pid);
        let ours = if mechanism == "semaphores" {
            path.starts_with("/dev/shm/sem.")
        } else {
            true
        };
        if ours {
            judged = Some((path, mode as u32 & 0o7777, umask, exclusive));
        }
    }
    tracer.release();
    let said = match reached {
        Reached::Passed(message) => message,
        Reached::Call => None,
    };
    if let Some(message) = said {
        proc.kill_tree();
        return Err(match message.kind.as_str() {
            "failed" => report_failure(&message, mechanism),
            kind => Fail::failed(format!(
                "the program said `{kind}` before it created its first signal ({mechanism})"
            )),
        });
    }
    if let Some((path, _, _, false)) = &judged {
        proc.kill_tree();
        return Err(Fail::failed(format!(
            "the grader held the parent at its first call that creates a queue ({mechanism}): \
             mq_open() of {path} asked for O_CREAT without O_EXCL. Without O_EXCL it opens a \
             queue that exists, or that another process makes between a look at the name and \
             this call, and shares it: open with O_CREAT | O_EXCL | O_RDWR and take EEXIST as \
             Exists"
        )));
    }
    if let Some((path, mode, umask, _)) = &judged
        && *mode != 0o600
    {
        proc.kill_tree();
        let what = if mechanism == "semaphores" {
            format!("the openat() of {path} inside sem_open(), which creates the semaphore,")
        } else {
            format!("mq_open() of {path}")
        };
        let umask = match umask {
            Some(umask) => format!(" (the process's umask was then {umask:03o})"),
            None => String::new(),
        };
        let decimal = if decimal_600(*mode) {
            format!(" ({DECIMAL_600})")
        } else {
            String::new()
        };
        return Err(Fail::failed(format!(
            "the grader held the parent at its first creating call ({mechanism}): {what} asked \
             for mode {mode:o}{decimal}{umask}: ask for 0600 (S_IRUSR | S_IWUSR) in the call \
             itself. A wider mode narrowed by the umask leaves the object's mode to the \
             process's state, and a umask changed around the call changes it for every file \
             created meanwhile"
        )));
    }
    let launch = Launch {
        proc,
        names,
        mechanism,
        rounds: 10,
        seed,
    };
    launch.run_through(&format!("10 rounds with {mechanism}, the creation traced"))?;
    Ok(match judged {
        Some((_, mode, _, _)) => {
            format!("{mechanism}: the creating call asked for mode {mode:o}")
        }
        None => format!("{mechanism}: the creating call not seen"),
    })
}

/// The length the parent's `mmap()` of the slot asks for, read at its entry (the parent held
/// there): at least one `Record`. The kernel rounds a mapping up to whole pages, so that
/// `/proc/PID/maps` shows a page either way; the length asked for is what the program may use.
pub fn slot_length_asked(run: &mut Run) -> Result<String, Fail> {
    let names = [run.ipc_name("ready"), run.ipc_name("ok")];
    let seed: u64 = run.rng().random();
    // The slot's mmap(MAP_SHARED | MAP_ANONYMOUS), or an openat() of /dev/zero before it: a
    // shared mapping of /dev/zero by descriptor, which /proc/PID/maps shows as it shows an
    // anonymous one ("/dev/zero (deleted)").
    const FLAGS: u64 = (libc::MAP_SHARED | libc::MAP_ANONYMOUS) as u64;
    static SLOT_OR_DEV_ZERO: [Call; 2] = [
        Call::bits(libc::SYS_mmap, 3, FLAGS | libc::MAP_PRIVATE as u64, FLAGS),
        Call {
            number: libc::SYS_openat,
            matching: crate::engine::tracer::Match::Path("/dev/zero"),
        },
    ];
    let call = Call::any_of(&SLOT_OR_DEV_ZERO);
    let (mut proc, tracer) = spawn_traced(run, &names, call, Action::Hold)?;
    let pid = proc.pid.as_raw();
    let Some(mut tracer) = tracer else {
        proc.kill_tree();
        return Ok("the slot's length asked for not read (no ptrace)".into());
    };
    let reached = tracer.wait(&mut proc, Instant::now() + Duration::from_secs(5))?;
    let at = match reached {
        Reached::Call => crate::engine::inspect::call_of(pid, pid),
        Reached::Passed(_) => None,
    };
    tracer.release();
    if let Some((number, _)) = at
        && number == libc::SYS_openat
    {
        // Let it go on to `ready`, and see what it mapped.
        let said = proc.recv_any()?;
        let slot = probe::mappings(pid)
            .into_iter()
            .any(|m| m.shared_anonymous() && m.len() >= RECORD_SIZE);
        proc.kill_tree();
        probe::remove_semaphores(&names);
        if said.kind == "failed" {
            return Err(report_failure(&said, "semaphores"));
        }
        let what = if slot {
            ", and at `ready` it had a shared mapping shown as /dev/zero (deleted), the size of \
             the slot: it mapped /dev/zero by descriptor (MAP_SHARED without MAP_ANONYMOUS)"
        } else {
            ""
        };
        return Err(Fail::failed(format!(
            "the grader traced the parent's creation of the handoff (semaphores): it opened \
             /dev/zero (openat) before any mmap(MAP_SHARED | MAP_ANONYMOUS){what}. The slot is \
             an anonymous shared mapping, mmap_anonymous(MAP_SHARED), no file, no descriptor: \
             a mapping of /dev/zero only looks like one in /proc/PID/maps"
        )));
    }
    let asked = at.map(|(_, args)| args[1]);
    if let Reached::Passed(Some(message)) = reached {
        proc.kill_tree();
        return Err(match message.kind.as_str() {
            "failed" => report_failure(&message, "semaphores"),
            kind => Fail::failed(format!(
                "the program said `{kind}` before it mapped the slot (semaphores)"
            )),
        });
    }
    if let Some(asked) = asked
        && asked < RECORD_SIZE
    {
        proc.kill_tree();
        return Err(Fail::failed(format!(
            "the grader held the parent at its mmap() of the slot (MAP_SHARED | \
             MAP_ANONYMOUS): it asked for {asked} bytes, less than one Record ({RECORD_SIZE} \
             bytes: the number, the {} bytes of payload, the checksum), which put() and take() \
             copy whole. Map size_of::<Record>() bytes: the kernel rounds the length up to a \
             page, so that it works here, but the program uses memory beyond what it asked for",
            super::PAYLOAD
        )));
    }
    let launch = Launch {
        proc,
        names,
        mechanism: "semaphores",
        rounds: 10,
        seed,
    };
    launch.run_through("10 rounds with semaphores, the slot's mmap() traced")?;
    Ok(match asked {
        Some(asked) => format!("the slot's mmap() asked for {asked} bytes"),
        None => "the slot's mmap() not seen".into(),
    })
}

/// The value each semaphore is created with: the grader holds the parent as the `link()` by
/// which glibc's `sem_open(O_CREAT | O_EXCL)` puts the new semaphore under its name returns,
/// before create() does anything more, and reads the semaphore's value in its file. It must be
/// 0: a semaphore made at 1 and taken down afterwards announces, for that while, a post that
/// never happened to anyone who opens it. A create() that succeeds with no such `link()` did not
/// make the semaphore with `sem_open(O_CREAT)` (glibc's and musl's both link a new one in place).
pub fn created_at_zero(run: &mut Run) -> Result<String, Fail> {
    let names = [run.ipc_name("ready"), run.ipc_name("ok")];
    let ready = names[0].clone();
    let file: &'static str = probe::semaphore_file(&ready).leak();
    let seed: u64 = run.rng().random();
    let call = Call {
        number: libc::SYS_link,
        matching: crate::engine::tracer::Match::Names(file),
    };
    let (mut proc, tracer) = spawn_traced(run, &names, call, Action::HoldAfter)?;
    let remove = || probe::remove_semaphores(&names);
    let Some(mut tracer) = tracer else {
        proc.kill_tree();
        remove();
        return Ok("the creating value: not read (no ptrace)".into());
    };
    let mut value = None;
    let mut made_without_link = false;
    match tracer.wait(&mut proc, Instant::now() + Duration::from_secs(5))? {
        Reached::Call => value = probe::semaphore_value(&ready),
        Reached::Passed(Some(message)) => {
            // `ready`: create() made both semaphores, and no link() put the ready one in place.
            made_without_link = message.kind == "ready";
            proc.put_back(message);
        }
        Reached::Passed(None) => {}
    }
    tracer.release();
    if made_without_link {
        proc.kill_tree();
        remove();
        return Err(Fail::failed(format!(
            "the grader traced the parent through create() (semaphores): create() succeeded, \
             yet no link() put the ready semaphore's file {file} under its name. \
             sem_open(name, O_CREAT | O_EXCL, 0600, 0) makes a new semaphore under a temporary \
             name and link()s it into place, so that no process ever opens a half-made one: \
             the semaphore was made some other way (its file written by hand and then opened \
             with sem_open(name, 0), say). Create each semaphore with sem_open(name, O_CREAT | \
             O_EXCL, 0600, 0), and leave /dev/shm/sem.* to the C library"
        )));
    }
    if let Some(value) = value
        && value != 0
    {
        proc.kill_tree();
        remove();
        return Err(Fail::failed(format!(
            "the grader held the parent as the link() by which sem_open(O_CREAT | O_EXCL) put \
             the new semaphore {ready} under its name returned, before create() did anything \
             more: the semaphore was at {value}, not 0. Create each semaphore at 0 \
             (sem_open(name, O_CREAT | O_EXCL, 0600, 0)); one made at {value} and taken down \
             afterwards (sem_trywait) announces, meanwhile, a post that never happened"
        )));
    }
    run_through_removing(
        proc,
        &names,
        seed,
        "10 rounds with semaphores, the creation held",
    )?;
    Ok(match value {
        Some(_) => "the ready semaphore was at 0 as sem_open() made it".into(),
        None => "the ready semaphore's making not held".into(),
    })
}
