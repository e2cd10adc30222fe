//! `create-failures`: the ways `create()` fails (a name taken, see `taken_names`; a name too
//! long; a segment that cannot be sized or mapped; an initialization that fails), each with its
//! kind and with nothing left behind.

use std::time::{Duration, Instant};

use ipc_labs_driver::Message;

use super::bank_view::ordinal;
use super::errors::{first_message, release};
use super::probe;
use super::segment::dev_shm;
use super::taken_names::{
    names_at_the_edge, refuses_dangling_link, taken_at_the_open, taken_by_a_bank_in_use,
};
use crate::engine::tracer::{Action, Breakpoint, Call, Step, Tracer};
use crate::engine::{Fail, Run, force};

pub(super) fn create_failures(run: &mut Run) -> Result<String, Fail> {
    let name = taken_at_the_open(run)?;
    refuses_dangling_link(run)?;
    taken_by_a_bank_in_use(run)?;
    super::abandoned_bank::abandoned_bank_left_alone(run)?;

    // A valid name too long for the system: shm_open() fails, kind=shm-open.
    let long = format!("{}-{}", run.ipc_name("long"), "x".repeat(300));
    let mut proc = run.spawn(&["--name", long.as_str(), "--work", "1"])?;
    let message = first_message(&mut proc)?;
    expect_kind(
        &message,
        "shm-open",
        "SharedBank::create() of a valid name 300 characters long",
        "the name rule has no length limit, so the name is valid, and it is shm_open() that \
         refuses it (glibc says EINVAL for a name past NAME_MAX), which is BankError::Open \
         with that errno: a bad-name here comes from a length limit in the name check, or from \
         an shm_open() error (EINVAL) turned into BadName; only the name rule's own refusals \
         are BadName",
    )?;
    release(&mut proc)?;
    names_at_the_edge(run)?;
    super::unusual_names::long_names_reach_shm_open(run)?;

    // The segment cannot be sized: kind=ftruncate, and create() leaves nothing behind.
    let unsizable = run.ipc_name("unsizable");
    let mut proc = run.spawn(&[
        "--name",
        unsizable.as_str(),
        "--work",
        "1",
        "--file-size-limit",
        "0",
    ])?;
    let message = first_message(&mut proc)?;
    expect_kind(
        &message,
        "ftruncate",
        "with files limited to 0 bytes (RLIMIT_FSIZE), SharedBank::create()",
        "ftruncate() fails with EFBIG, which is BankError::Truncate",
    )?;
    let pid = proc.pid.as_raw();
    let left = left_by_failed_create(pid, &unsizable);
    release(&mut proc)?;
    if !left.is_empty() {
        return Err(Fail::failed(format!(
            "SharedBank::create() failed at ftruncate(), as it should here, but {}: when a step \
             after shm_open() fails, undo the steps before it",
            left.join(", ")
        )));
    }
    let forced = if forced_ftruncate_failure(run)? && ftruncate_failure_outlives_cleanup(run)? {
        "; the grader failing ftruncate() itself: kind=ftruncate, also when the clean-up's \
         shm_unlink() fails too"
    } else {
        ""
    };
    let mapped = if forced_mmap_failure(run)? {
        "; the grader failing the shared mmap(): kind=mmap, the name removed"
    } else {
        ""
    };
    let initialized = if forced_init_failure(run)? && init_failure_outlives_failed_unmap(run)? {
        "; the grader failing each pthread call of the initializations in turn \
         (pthread_mutexattr_init(), _setpshared(), _setrobust(), pthread_mutex_init(), \
         pthread_condattr_init(), _setpshared(), pthread_cond_init()): kind=init, the \
         attribute destroyed, the name removed and no descriptor or mapping left, the segment \
         made by shm_open(); with the clean-up's munmap() failed too, still kind=init and \
         the name removed"
    } else {
        ""
    };
    Ok(format!(
        "{name:?} taken at the program's shm_open(): kind=exists, the segment there untouched; \
         a bank whose holder died: kind=exists, the bank untouched; a name of {} characters: \
         kind=shm-open; names of '/' and 255 characters and of characters other than letters \
         and digits (':', ' ', '#', 'ä', a blank at the end) reach shm_open() (kind=exists, taken by the grader), \
         '/' and 256 is kind=shm-open; ftruncate() failing: kind=ftruncate, with the name removed and no \
         descriptor or mapping left{forced}{mapped}{initialized}",
        long.len()
    ))
}

/// The C library functions that `create()` must go through, watched with breakpoints while one
/// initialization call is made to fail: `shm_open()` itself, the call failed, and the two
/// attribute destroys.
const SHM_OPEN: usize = 0;
const FAILED: usize = 1;
const MUTEXATTR_DESTROY: usize = 2;
const CONDATTR_DESTROY: usize = 3;

/// One initialization call of `create()` failed by the grader, and the attribute destroy that
/// must follow it.
struct InitFailure {
    function: &'static std::ffi::CStr,
    errno: i32,
    errno_name: &'static str,
    /// Which attribute destroy must follow ([`MUTEXATTR_DESTROY`] or [`CONDATTR_DESTROY`]);
    /// none when the attribute object's own initialization failed (there is nothing to destroy).
    destroy: Option<usize>,
    /// The destroy of the attribute object this call belongs to: after its own `*attr_init()`
    /// failed, never called (the object was never initialized).
    attribute_destroy: usize,
    what: &'static str,
}

/// Every pthread call of `create()`'s initializations, each failed alone (the three whose
/// failures were judged first, then the rest): the attribute object must be destroyed after a
/// failure at any call after its own `*_init()`.
const INIT_FAILURES: [InitFailure; 7] = [
    InitFailure {
        function: c"pthread_mutex_init",
        errno: libc::EAGAIN,
        errno_name: "EAGAIN",
        destroy: Some(MUTEXATTR_DESTROY),
        what: "mutex",
        attribute_destroy: MUTEXATTR_DESTROY,
    },
    InitFailure {
        function: c"pthread_mutexattr_setrobust",
        errno: libc::ENOTSUP,
        errno_name: "ENOTSUP",
        destroy: Some(MUTEXATTR_DESTROY),
        what: "mutex",
        attribute_destroy: MUTEXATTR_DESTROY,
    },
    InitFailure {
        function: c"pthread_cond_init",
        errno: libc::EAGAIN,
        errno_name: "EAGAIN",
        destroy: Some(CONDATTR_DESTROY),
        what: "condition variable",
        attribute_destroy: CONDATTR_DESTROY,
    },
    InitFailure {
        function: c"pthread_mutexattr_init",
        errno: libc::ENOMEM,
        errno_name: "ENOMEM",
        destroy: None,
        what: "mutex",
        attribute_destroy: MUTEXATTR_DESTROY,
    },
    InitFailure {
        function: c"pthread_mutexattr_setpshared",
        errno: libc::EINVAL,
        errno_name: "EINVAL",
        destroy: Some(MUTEXATTR_DESTROY),
        what: "mutex",
        attribute_destroy: MUTEXATTR_DESTROY,
    },
    InitFailure {
        function: c"pthread_condattr_init",
        errno: libc::ENOMEM,
        errno_name: "ENOMEM",
        destroy: None,
        what: "condition variable",
        attribute_destroy: CONDATTR_DESTROY,
    },
    InitFailure {
        function: c"pthread_condattr_setpshared",
        errno: libc::EINVAL,
        errno_name: "EINVAL",
        destroy: Some(CONDATTR_DESTROY),
        what: "condition variable",
        attribute_destroy: CONDATTR_DESTROY,
    },
];

/// Each initialization call of `create()` in [`INIT_FAILURES`] made to fail (to return at once
/// with its errno, at a breakpoint on that function, in a program held before it creates
/// anything): `create()` must say `init`, destroy the attribute object it had initialized (and
/// not one whose own `*attr_init()` failed), and,
/// as for any step after `shm_open()`, leave neither the name nor a descriptor nor a mapping
/// behind. The same breakpoints see whether `create()` called `shm_open()` at all. `false` if
/// the grader may not trace the program, or the program made none of these calls (judged
/// elsewhere).
fn forced_init_failure(run: &mut Run) -> Result<bool, Fail> {
    let mut all = true;
    for failure in &INIT_FAILURES {
        all &= forced_one_init_failure(run, failure, 1)?;
    }
    // A second call of the bank's initializations, if there is one (the reference makes none):
    // whichever call fails, the failure is undone; an earlier one may have been a rehearsal.
    for failure in [&INIT_FAILURES[0], &INIT_FAILURES[2]] {
        forced_one_init_failure(run, failure, 2)?;
    }
    Ok(all)
}

/// Fails the `nth` call of `failure`'s function (from 1); `false` if there was none.
fn forced_one_init_failure(run: &mut Run, failure: &InitFailure, nth: usize) -> Result<bool, Fail> {
    let name = run.ipc_name("uninitializable");
    let mut proc = spawn_stopped_with_file_size_limit(run, &name)?;
    let pid = proc.pid.as_raw();
    let outcome = fail_init_call(&mut proc, failure, nth);
    let Ok(Some((message, seen))) = outcome else {
        proc.kill_tree();
        let _ = std::fs::remove_file(dev_shm(&name));
        return outcome.map(|_| false);
    };
    let call = format!(
        "{}(){} (the grader made it return {}, with a breakpoint at that function)",
        failure.function.to_str().unwrap_or("?"),
        if nth > 1 {
            format!(", its {} call", ordinal(nth))
        } else {
            String::new()
        },
        failure.errno_name
    );
    let judged = expect_kind(
        &message,
        "init",
        &format!("with the grader making its {call}, SharedBank::create()"),
        &format!(
            "the step that failed is part of the {}'s initialization, which is BankError::Init",
            failure.what
        ),
    );
    let judged = judged.and_then(|()| {
        let doing =
            format!("SharedBank::create() failed at {call} with kind=init, as it should, but");
        expect_errno(&message, failure.errno, &doing)
            .and_then(|()| expect_object(&message, failure.what, &doing))
    });
    let left = left_by_failed_create(pid, &name);
    let path = dev_shm(&name);
    if judged.is_err() {
        proc.kill_tree();
    } else {
        release(&mut proc)?;
    }
    let _ = std::fs::remove_file(&path);
    judged?;
    if !seen.contains(&SHM_OPEN) {
        return Err(Fail::failed(format!(
            "SharedBank::create() made the segment {} without calling shm_open() (a \
             breakpoint at that function, set before create() began, was never hit): it opened \
             the file under /dev/shm itself, which copies where one C library keeps its \
             segments; create() calls shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600)",
            path.display()
        )));
    }
    if !left.is_empty() {
        return Err(Fail::failed(format!(
            "SharedBank::create() failed at {call} with kind=init, as it should, but {}: when \
             any step after shm_open() fails (ftruncate(), mmap(), the initializations of the \
             mutex and of the condition variable), undo the steps before it (munmap() the \
             bank, close the descriptor) and shm_unlink() the name",
            left.join(", ")
        )));
    }
    let failed_at = seen
        .iter()
        .enumerate()
        .filter(|&(_, &s)| s == FAILED)
        .nth(nth - 1)
        .map(|(at, _)| at);
    let attr = |destroy| {
        if destroy == MUTEXATTR_DESTROY {
            "pthread_mutexattr_destroy()"
        } else {
            "pthread_condattr_destroy()"
        }
    };
    let Some(destroy) = failure.destroy else {
        let uninitialized = failure.attribute_destroy;
        if failed_at.is_some_and(|at| seen[at..].contains(&uninitialized)) {
            return Err(Fail::failed(format!(
                "SharedBank::create() failed at {call} with kind=init and removed the \
                 segment, as it should, but then called {} (a breakpoint at that function): \
                 the attribute object was never initialized, and destroying one that was not \
                 is undefined behaviour; when *attr_init() fails, return at once, and destroy \
                 the object only once its *attr_init() succeeded",
                attr(uninitialized)
            )));
        }
        return Ok(true);
    };
    let destroyed = failed_at.is_some_and(|at| seen[at..].contains(&destroy));
    if !destroyed {
        let attr = attr(destroy);
        return Err(Fail::failed(format!(
            "SharedBank::create() failed at {call} with kind=init and removed the segment, as \
             it should, but never called {attr} after the failure (a breakpoint at that \
             function): the attribute object initialized before the failed call is leaked; \
             destroy it on the way out whether the initialization succeeded or failed"
        )));
    }
    Ok(true)
}

/// A create whose `pthread_mutex_init()` the grader makes fail (`EAGAIN`), and then the
/// `munmap()` of the bank in its clean-up (made to return -1 at once, at a breakpoint on that
/// function): the clean-up goes on past a step that fails (the name is still unlinked), and the
/// error is still the initialization's, kind=init. `false` if the grader may not trace the
/// program, or it made no such calls (judged elsewhere).
fn init_failure_outlives_failed_unmap(run: &mut Run) -> Result<bool, Fail> {
    let name = run.ipc_name("unmappable-init");
    let path = dev_shm(&name);
    let mut proc = spawn_stopped_with_file_size_limit(run, &name)?;
    let outcome = fail_init_then_unmap(&mut proc, &path);
    let Ok(Some(message)) = outcome else {
        proc.kill_tree();
        let _ = std::fs::remove_file(&path);
        return outcome.map(|_| false);
    };
    let left = path.exists();
    let doing = "with the grader making its pthread_mutex_init() return EAGAIN and then the \
                 munmap() of the bank in the clean-up fail (it returned -1), \
                 SharedBank::create()";
    let judged = expect_kind(
        &message,
        "init",
        doing,
        &format!(
            "the error create() returns is the failed step's, the initialization's \
             BankError::Init; a clean-up call that fails does not replace it{}",
            if left {
                format!(
                    ", and {} was left: the clean-up stopped at the failed munmap() (a `?` on \
                     each clean-up step); undo what can be undone whatever fails (shm_unlink() \
                     the name all the same), then return the step's error",
                    path.display()
                )
            } else {
                String::new()
            }
        ),
    );
    let judged = judged.and_then(|()| {
        if !left {
            return Ok(());
        }
        Err(Fail::failed(format!(
            "{doing} failed with kind=init, as it should, but {} was left: the clean-up stopped \
             at the failed munmap(); undo what can be undone whatever fails (shm_unlink() the \
             name all the same), then return the step's error",
            path.display()
        )))
    });
    if judged.is_err() || message.kind != "failed" {
        proc.kill_tree();
    } else {
        release(&mut proc)?;
    }
    let _ = std::fs::remove_file(&path);
    judged.map(|()| true)
}

/// Runs the stopped program to its `prlimit64()`, fails its first `pthread_mutex_init()`, then
/// its first `munmap()` of the segment at `path` (a length of the segment's size: the C library
/// unmaps memory of its own through the same function), and returns what it said next. `None`
/// if it could not be traced or made no such calls.
fn fail_init_then_unmap(
    proc: &mut crate::engine::Proc,
    path: &std::path::Path,
) -> Result<Option<Message>, Fail> {
    const INIT: usize = 0;
    const UNMAP: usize = 1;
    let pid = proc.pid.as_raw();
    if !stopped_at_file_size_limit(pid)? {
        return Ok(None);
    }
    let functions = [c"pthread_mutex_init", c"munmap"];
    let Some(mut breaking) = Tracer::break_at_functions(pid, &functions)? else {
        force::resume(pid)?;
        return Ok(None);
    };
    force::resume(pid)?;
    let (mut init_failed, mut unmap_failed) = (false, false);
    let message = run_to_message(proc, &mut breaking, |breaking, [_, length]| {
        let which = breaking.last_break();
        let size = std::fs::metadata(path).map_or(u64::MAX, |m| m.len());
        if which == INIT && !init_failed {
            init_failed = true;
            breaking.return_now(i64::from(libc::EAGAIN));
        } else if which == UNMAP && init_failed && !unmap_failed && length == size {
            unmap_failed = true;
            breaking.return_now(-1);
        } else {
            breaking.go_on();
        }
    })?;
    drop(breaking);
    Ok(message.filter(|_| init_failed && unmap_failed))
}

/// Lets the program run from breakpoint to breakpoint, each handled by `on_break` (which makes
/// the function return at once or lets it go on), until it says something. `None` if the
/// breakpoints were lost or it said nothing within 5 s.
fn run_to_message(
    proc: &mut crate::engine::Proc,
    breaking: &mut Tracer,
    mut on_break: impl FnMut(&mut Tracer, [u64; 2]),
) -> Result<Option<Message>, Fail> {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        match breaking.next_break(Instant::now() + Duration::from_millis(5))? {
            Some(Breakpoint::At(arguments)) => {
                on_break(breaking, arguments);
                continue;
            }
            Some(Breakpoint::Armed) | None => {}
            Some(Breakpoint::Lost | Breakpoint::Unavailable) => return Ok(None),
        }
        if let Some(message) = proc.recv_before(Instant::now())? {
            return Ok(Some(message));
        }
        if Instant::now() > until {
            return Ok(None);
        }
    }
}

/// Runs the stopped program to its `prlimit64()` (`--file-size-limit`, before `create()`: the C
/// library is loaded, nothing is created yet), sets breakpoints at `shm_open()`, the function
/// to fail and the two attribute destroys, makes the one to fail return its
/// errno at its `nth` call, and returns what the program said next and which breakpoints were
/// hit, in order. `None` if it could not be traced or made no such call.
fn fail_init_call(
    proc: &mut crate::engine::Proc,
    failure: &InitFailure,
    nth: usize,
) -> Result<Option<(Message, Vec<usize>)>, Fail> {
    let pid = proc.pid.as_raw();
    if !stopped_at_file_size_limit(pid)? {
        return Ok(None);
    }
    let functions = [
        c"shm_open",
        failure.function,
        c"pthread_mutexattr_destroy",
        c"pthread_condattr_destroy",
    ];
    let Some(mut breaking) = Tracer::break_at_functions(pid, &functions)? else {
        force::resume(pid)?;
        return Ok(None);
    };
    force::resume(pid)?;
    let mut seen = Vec::new();
    let mut calls = 0;
    let mut failed = false;
    let message = run_to_message(proc, &mut breaking, |breaking, _| {
        let which = breaking.last_break();
        seen.push(which);
        calls += usize::from(which == FAILED);
        if which == FAILED && calls == nth {
            failed = true;
            breaking.return_now(i64::from(failure.errno));
        } else {
            breaking.go_on();
        }
    })?;
    let Some(message) = message else {
        return Ok(None);
    };
    // Whatever the tracer still has to say of the calls before the message.
    while let Some(Breakpoint::At(_)) =
        breaking.next_break(Instant::now() + Duration::from_millis(20))?
    {
        seen.push(breaking.last_break());
        breaking.go_on();
    }
    drop(breaking);
    if !failed {
        // It said something before making the call: judged elsewhere.
        return Ok(None);
    }
    Ok(Some((message, seen)))
}

/// A program for the bank `name`, stopped before its first instruction, that sets a file size
/// limit (1 MiB, ample) before it creates the bank: its `prlimit64()` is where
/// [`stopped_at_file_size_limit`] stops it, the C library loaded and nothing created yet.
fn spawn_stopped_with_file_size_limit(
    run: &mut Run,
    name: &str,
) -> Result<crate::engine::Proc, Fail> {
    run.spawn_stopped(&[
        "--name",
        name,
        "--work",
        "1",
        "--file-size-limit",
        "1048576",
    ])
}

/// Runs the program, stopped before its first instruction, to its `prlimit64()` (it sets the
/// file size limit, before it creates the bank) and stops it there. `false` if it could not be
/// traced.
fn stopped_at_file_size_limit(pid: i32) -> Result<bool, Fail> {
    super::segment::stopped_after(pid, Call::any(libc::SYS_prlimit64))
}

/// What a `create()` that failed left of the bank `name`: its name in `/dev/shm`, descriptors
/// on it, a mapping of it.
fn left_by_failed_create(pid: i32, name: &str) -> Vec<String> {
    let path = dev_shm(name);
    let mut left = Vec::new();
    if path.exists() {
        left.push(format!("{} still exists (shm_unlink() it)", path.display()));
    }
    let fds = probe::descriptors(pid, name);
    if !fds.is_empty() {
        left.push(format!("descriptor {fds:?} is still open on it (close it)"));
    }
    if !probe::mappings(pid, name).is_empty() {
        left.push(format!(
            "the program still maps the segment (/proc/{pid}/maps lists {}): munmap() it",
            path.display()
        ));
    }
    left
}

/// A create whose `ftruncate()` the tracer makes fail (`EFBIG`), with no file-size limit: it
/// must say `ftruncate` and leave the name gone. One that goes on without the tracer having
/// seen any `ftruncate()` sized the segment another way (a `write()` of the bank's bytes).
/// `false` if the grader may not trace the program.
fn forced_ftruncate_failure(run: &mut Run) -> Result<bool, Fail> {
    let name = run.ipc_name("forced");
    let mut proc = run.spawn_stopped(&["--name", name.as_str(), "--work", "1"])?;
    let pid = proc.pid.as_raw();
    let tracer = Tracer::attach(
        pid,
        Call::any(libc::SYS_ftruncate),
        Action::Fail(libc::EFBIG),
    )?;
    force::resume(pid)?;
    let Some(mut tracer) = tracer else {
        run.note("the grader may not trace the program here (ptrace): no ftruncate() was failed");
        proc.kill_tree();
        return Ok(false);
    };
    let message = first_message(&mut proc)?;
    let failed = tracer.failed_the_call()?;
    drop(tracer);
    let path = dev_shm(&name);
    if !failed {
        let size = std::fs::metadata(&path).map(|m| m.len());
        proc.kill_tree();
        let _ = std::fs::remove_file(&path);
        return Err(Fail::failed(format!(
            "while the grader failed the program's next ftruncate() (EFBIG), \
             SharedBank::create({name:?}) made no ftruncate() call before it said `{}`{}: the \
             segment was sized another way, such as a write() of the bank's bytes to the new \
             descriptor; size it with ftruncate(fd, size_of::<Bank>()) (a failure is \
             kind=ftruncate) and fill the bank through the mapping",
            message.kind,
            match size {
                Ok(size) => format!(", yet {} is {size} bytes", path.display()),
                Err(_) => String::new(),
            }
        )));
    }
    expect_kind(
        &message,
        "ftruncate",
        "with the grader failing its ftruncate() (EFBIG), SharedBank::create()",
        "the step that failed is ftruncate(), which is BankError::Truncate",
    )?;
    let left = path.exists();
    release(&mut proc)?;
    if left {
        return Err(Fail::failed(format!(
            "SharedBank::create() failed at ftruncate() (the grader made it fail), but {} \
             still exists: when a step after shm_open() fails, shm_unlink() the name",
            path.display()
        )));
    }
    Ok(true)
}

/// A create whose `ftruncate()` the tracer makes fail (`EFBIG`), and then the `shm_unlink()` of
/// its clean-up (`EACCES`): the error is still the step's, kind=ftruncate; a clean-up that fails
/// leaves nothing more to do, and must not replace the error that made it run. `false` if the
/// grader may not trace the program, or it made no such calls (judged elsewhere).
fn ftruncate_failure_outlives_cleanup(run: &mut Run) -> Result<bool, Fail> {
    let name = run.ipc_name("uncleanable");
    let path = dev_shm(&name);
    // The path a glibc shm_unlink() unlinks, kept for the life of the grader (a few bytes).
    let unlinked: &'static str = path.display().to_string().leak();
    let mut proc = run.spawn_stopped(&["--name", name.as_str(), "--work", "1"])?;
    let pid = proc.pid.as_raw();
    let steps = [
        (Call::any(libc::SYS_ftruncate), Step::Fail(libc::EFBIG)),
        (Call::naming(unlinked), Step::Fail(libc::EACCES)),
    ];
    let tracer = Tracer::in_turn(pid, steps)?;
    force::resume(pid)?;
    let Some(mut tracer) = tracer else {
        proc.kill_tree();
        return Ok(false);
    };
    let message = first_message(&mut proc)?;
    let both = tracer.failed_the_call()? && tracer.failed_the_call()?;
    drop(tracer);
    let judged = if both {
        expect_kind(
            &message,
            "ftruncate",
            "with the grader failing its ftruncate() (EFBIG) and then the shm_unlink() of its \
             clean-up (EACCES), SharedBank::create()",
            "the error create() returns is the failed step's, ftruncate()'s BankError::Truncate; \
             a clean-up call that fails as well does not replace it (undo what can be undone, \
             then return the step's error)",
        )
    } else {
        Ok(())
    };
    if judged.is_err() || message.kind != "failed" {
        proc.kill_tree();
    } else {
        release(&mut proc)?;
    }
    // The grader's failed unlink left the name.
    let _ = std::fs::remove_file(&path);
    judged.map(|()| both)
}

/// A create whose `mmap()` of the segment (the first shared one) the tracer makes fail
/// (`ENOMEM`): it must say `mmap` and, as for any step after `shm_open()`, leave neither the
/// name nor a descriptor behind. `false` if the grader may not trace the program, or the
/// program made no shared `mmap()` (it is judged elsewhere).
fn forced_mmap_failure(run: &mut Run) -> Result<bool, Fail> {
    let name = run.ipc_name("unmappable");
    let mut proc = run.spawn_stopped(&["--name", name.as_str(), "--work", "1"])?;
    let pid = proc.pid.as_raw();
    // MAP_SHARED (1) and MAP_SHARED_VALIDATE (3) have bit 0; the C library's and the
    // allocator's own mappings are private (2).
    let shared_map = Call::flag_set(libc::SYS_mmap, 3, libc::MAP_SHARED as u64);
    let tracer = Tracer::attach(pid, shared_map, Action::Fail(libc::ENOMEM))?;
    force::resume(pid)?;
    let Some(mut tracer) = tracer else {
        proc.kill_tree();
        return Ok(false);
    };
    let message = first_message(&mut proc)?;
    let failed = tracer.failed_the_call()?;
    drop(tracer);
    if !failed {
        proc.kill_tree();
        return Ok(false);
    }
    expect_kind(
        &message,
        "mmap",
        "with the grader failing its mmap(MAP_SHARED) of the segment (ENOMEM), \
         SharedBank::create()",
        "the step that failed is mmap(), which is BankError::Map",
    )?;
    let path = dev_shm(&name);
    let mut left = Vec::new();
    if path.exists() {
        left.push(format!("{} still exists (shm_unlink() it)", path.display()));
    }
    let fds = probe::descriptors(pid, &name);
    if !fds.is_empty() {
        left.push(format!("descriptor {fds:?} is still open on it (close it)"));
    }
    release(&mut proc)?;
    if !left.is_empty() {
        return Err(Fail::failed(format!(
            "SharedBank::create() failed at mmap() (the grader made it fail, ENOMEM), as it \
             should then, but {}: when any step after shm_open() fails (ftruncate(), mmap(), \
             the initializations), undo the steps before it and shm_unlink() the name, or the \
             next create() of the name fails with exists",
            left.join(", ")
        )));
    }
    Ok(true)
}

/// A failed pthread call's error names the object the call was for (`BankError`'s `what`:
/// "mutex" or "condition variable"): the `error=` text says "the {what} failed".
pub(super) fn expect_object(message: &Message, what: &str, doing: &str) -> Result<(), Fail> {
    let error = message.get("error").unwrap_or("");
    if error.contains(&format!("the {what} failed")) {
        return Ok(());
    }
    Err(Fail::failed(format!(
        "{doing} its error says {error:?}: the call that failed was the {what}'s, and the \
         error's `what` names the object whose call failed (what: \"{what}\")"
    )))
}

/// A pthread call's failure must carry the error number the call returned (pthread functions
/// return it and leave `errno` alone): the `error=` text names it.
pub(super) fn expect_errno(message: &Message, errno: i32, what: &str) -> Result<(), Fail> {
    let error = message.get("error").unwrap_or("");
    // By number: ENOTSUP and EOPNOTSUPP are one error, which nix names EOPNOTSUPP.
    let errno_name = format!("{:?}", nix::errno::Errno::from_raw(errno));
    if error.contains(&errno_name) {
        return Ok(());
    }
    Err(Fail::failed(format!(
        "{what} its error says {error:?}, not {errno_name}, the error number the call \
         returned: pthread functions return their error number and do not set errno, so \
         Errno::last() after one holds whatever an earlier call left there; build the error \
         from the returned number (pthread_result())"
    )))
}

/// Fails unless `message` is `failed` with `kind`; `what` is what was tried, `rule` what
/// should happen.
pub(super) fn expect_kind(
    message: &Message,
    kind: &str,
    what: &str,
    rule: &str,
) -> Result<(), Fail> {
    let got = message.get("kind").unwrap_or("none");
    match message.kind.as_str() {
        "failed" if got == kind => Ok(()),
        "failed" => Err(Fail::failed(format!(
            "{what} failed with kind={got} ({}), not {kind}: {rule}",
            message.get("error").unwrap_or("")
        ))),
        _ => Err(Fail::failed(format!(
            "{what} succeeded (the program said `{}`), where it must fail with kind={kind}: \
             {rule}",
            message.kind
        ))),
    }
}
