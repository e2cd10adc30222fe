//! Who removes the socket file: only `Listener::remove`, at the server's stop. A file already
//! gone by then is `kind=remove`, a copy of the listener dropped in another process leaves the
//! file to the server that still listens on it, and a dead server's socket file, however old,
//! is `EADDRINUSE` and left alone.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};

use super::Transport;
use super::binding::ended_after_remove;
use super::forced;
use super::programs::{Server, said, spawn_server, spawn_stopped_server};
use crate::engine::inspect;
use crate::engine::tracer::{Action, Call, Reached, Tracer};
use crate::engine::{Fail, Run};

pub fn socket_file_owner(run: &mut Run) -> Result<String, Fail> {
    gone_at_the_stop(run)?;
    forked_copy_dropped(run)?;
    old_dead_socket(run)?;
    Ok(
        "a socket file removed just as the stop first named it was reported kind=remove with \
         ENOENT; main.rs's bench, whose parent drops its copy of the listener after forking \
         the server, made no unlink() of the path and its calls were answered; a dead \
         server's socket file dated 2001 failed with kind=bind and stayed, not unlinked"
            .into(),
    )
}

/// The server's main thread is held at the stop's first call that names the socket's path (the
/// wake-up connection to the path made by then), and the grader removes the file there: the
/// file is really gone, as when someone removed it while the server ran. Whatever the server
/// then does (`unlink()` it, or look whether it exists first), the removal has failed, which is
/// `failed kind=remove` carrying `ENOENT`, not `done`. Skipped (with a note) when the machine
/// allows no tracing or the main thread never names the path.
fn gone_at_the_stop(run: &mut Run) -> Result<(), Fail> {
    let path = run.path("gone.sock");
    let (proc, first) = spawn_server(run, &["--unix".to_string(), path.display().to_string()])?;
    let server = Server::ready(run, proc, first, Transport::Unix, path.clone())?;
    server.ping()?;
    let pid = server.pid();
    let named: &'static str = path.display().to_string().leak();
    let tracer = Tracer::attach(pid, Call::naming(named), Action::Hold)?;
    let mut proc = server.proc;
    let cleanup = |proc: &crate::engine::Proc| {
        proc.kill_tree();
        let _ = std::fs::remove_file(&path);
    };
    let Some(mut tracer) = tracer else {
        run.note("the socket file could not be removed at the stop: no tracing on this machine");
        let _ = kill(proc.pid, Signal::SIGTERM);
        let _ = proc.recv_before(Instant::now() + Duration::from_secs(5));
        cleanup(&proc);
        return Ok(());
    };
    let _ = kill(proc.pid, Signal::SIGTERM);
    let early = match tracer.wait(&mut proc, Instant::now() + Duration::from_secs(5))? {
        Reached::Call => None,
        Reached::Passed(message) => Some(message),
    };
    if let Some(message) = early {
        tracer.release();
        run.note(format!(
            "the server's main thread named no socket path at the stop before it said {}: the \
             file was not removed under it",
            message.as_ref().map_or("nothing".into(), said)
        ));
        cleanup(&proc);
        return Ok(());
    }
    let call = inspect::call_of(pid, pid).map(|(number, _)| number);
    std::fs::remove_file(&path)?;
    tracer.release();
    let message = proc.recv_before(Instant::now() + Duration::from_secs(5))?;
    let situation = "with its socket file removed by the grader at the stop (the server's main \
                     thread held at its first call naming the path, after any wake-up \
                     connection)";
    let rule = "a socket file that cannot be removed is RpcError::Remove carrying the io::Error \
                remove_file returned, whatever it is: a file already gone (NotFound) is no \
                success, as the server's own file gone means someone else removed it";
    let unlinking = matches!(call, Some(n) if n == libc::SYS_unlink || n == libc::SYS_unlinkat);
    let verdict = match message {
        Some(m) if m.kind == "failed" && m.get("kind") == Some("remove") => {
            let error = m.get("error").unwrap_or("");
            if forced::carries_errno(error, libc::ENOENT) {
                Ok(())
            } else {
                Err(Fail::failed(format!(
                    "{situation}, the server reported kind=remove as it should, but not the \
                     error of the removal (ENOENT, os error 2): `{error}` carries {}; {rule}",
                    forced::errnos_in(error)
                )))
            }
        }
        Some(m) if m.kind == "done" => {
            let how = if unlinking {
                "its unlink() of the path failed with ENOENT and it said `done` all the same: \
                 the NotFound error was taken for success"
                    .to_string()
            } else {
                format!(
                    "it first looked whether the file exists ({}: Path::exists, metadata), and, \
                     finding it gone, skipped remove_file and said `done`: Listener::remove \
                     took a file already gone for one removed",
                    call.map_or("a call naming the path", looking_call)
                )
            };
            Err(Fail::failed(format!("{situation}, {how}; {rule}")))
        }
        Some(m) => Err(Fail::failed(format!(
            "{situation}, the server said {} where `failed` with kind=remove is expected: {rule}",
            said(&m)
        ))),
        None => Err(Fail::failed(format!(
            "{situation}, the server said nothing within 5 s, where `failed` with kind=remove is \
             expected: {rule}"
        ))),
    };
    ended_after_remove(&mut proc, &path, situation, verdict)
}

/// `socket-reqrep bench unix` (main.rs): Listener::bind, fork(), the child runs run_server on
/// the listener and the parent drops its own copy, then connects as a client. The parent's
/// main thread is traced for an unlink() of the socket's path: dropping a Listener removes
/// nothing, so the bench's calls are answered and only the server, at its stop, removes the
/// file. Without tracing, only the bench's outcome is judged.
fn forked_copy_dropped(run: &mut Run) -> Result<(), Fail> {
    let path = run.path("bench.sock");
    let out = run.path("bench.samples");
    let mut proc = run.spawn(&["bench", "unix"])?;
    proc.set_roles(|_| "the bench (a forked server and a client)".into());
    let first = proc.recv_any()?;
    if first.kind != ipc_labs_driver::bench::BENCH_READY {
        proc.kill_tree();
        return Err(Fail::failed(format!(
            "started as `socket-reqrep bench unix`, the program said {} where main.rs says \
             `bench-ready`",
            said(&first)
        )));
    }
    let pid = proc.pid.as_raw();
    let mut tracer = Tracer::attach(pid, Call::unlinking(&path), Action::Report)?;
    proc.send(
        ipc_labs_driver::bench::BENCH,
        &[
            ("path", path.display().to_string()),
            ("sizes", "1,100".into()),
            ("warmup", "0".into()),
            ("samples", "3".into()),
            ("out", out.display().to_string()),
        ],
    )?;
    // Once the parent has unlinked the path, the forked server may never stop (its wake-up
    // connection has no path to go to), nor the bench end: the grader waits no longer then.
    let until = Instant::now() + Duration::from_secs(5);
    let mut ended = None;
    let mut unlinked = false;
    while ended.is_none() && !unlinked && Instant::now() < until {
        ended = proc.recv_before(Instant::now() + Duration::from_millis(5))?;
        if let Some(tracer) = tracer.as_mut() {
            unlinked = tracer.failed_before(Instant::now() + Duration::from_millis(5))?;
        }
    }
    if unlinked && ended.is_none() {
        ended = proc.recv_before(Instant::now() + Duration::from_millis(300))?;
    } else if let Some(tracer) = tracer.as_mut()
        && !unlinked
    {
        unlinked = tracer.failed_before(Instant::now() + Duration::from_millis(50))?;
    }
    // The program waits for `exit` blocked in a read: it makes a call again, at which the
    // tracer detaches, once told.
    if ended.is_some() {
        let _ = proc.send("exit", &[]);
    } else {
        proc.kill_tree();
    }
    if let Some(tracer) = tracer {
        tracer.release();
    }
    let _ = proc.wait_until(Instant::now() + Duration::from_secs(3));
    proc.kill_tree();
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(&out);
    let situation = "in `socket-reqrep bench unix` (main.rs binds the socket, fork()s a child \
                     that runs run_server on the listener, and the parent drops its copy of the \
                     listener and connects as a client)";
    let rule = "only Listener::remove, which the server calls at its stop, removes the socket \
                file: dropping a Listener must not (no Drop that removes it), as a copy dropped \
                in another process, after a fork(), would cut the server that still listens \
                off from every new client";
    let outcome = match &ended {
        Some(m) if m.kind == ipc_labs_driver::bench::BENCH_DONE => None,
        Some(m) => Some(format!(
            "the bench said {} (error: {})",
            said(m),
            m.get("error").unwrap_or("none given")
        )),
        None => Some("the bench said nothing within 5 s".to_string()),
    };
    match (unlinked, outcome) {
        (true, outcome) => Err(Fail::failed(format!(
            "{situation}, the parent process unlinked the socket file (an unlink() of its path, \
             seen by the grader) while the forked server still listened on it{}; {rule}",
            outcome.map_or(String::new(), |o| format!(", and {o}"))
        ))),
        (false, Some(outcome)) => Err(Fail::failed(format!(
            "{situation}, {outcome}; the parent made no unlink() of the path that the grader \
             saw: the forked server did not answer the parent's calls (run_server on a \
             listener bound in another process must serve; {rule})"
        ))),
        (false, None) => Ok(()),
    }
}

/// A socket file nobody listens on, dated 2001 (its access and modification times), as a
/// server killed long ago leaves it: still a file already at the path, `EADDRINUSE`, left
/// alone, whatever its age. The server's main thread is traced for an unlink() of the path.
fn old_dead_socket(run: &mut Run) -> Result<(), Fail> {
    const IN_2001: libc::timespec = libc::timespec {
        tv_sec: 1_000_000_000,
        tv_nsec: 0,
    };
    let stale = run.path("old.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale)?);
    let c_path = std::ffi::CString::new(stale.display().to_string())
        .map_err(|e| Fail::Grader(format!("socket path: {e}")))?;
    let times = [IN_2001, IN_2001];
    // SAFETY: a valid C string and two timespecs.
    let set = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c_path.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if set != 0 {
        return Err(Fail::Grader(format!(
            "utimensat: {}",
            std::io::Error::last_os_error()
        )));
    }
    let inode = |path: &Path| std::fs::symlink_metadata(path).ok().map(|m| m.ino());
    let stale_inode = inode(&stale);
    let (mut proc, pid) =
        spawn_stopped_server(run, ["--unix".to_string(), stale.display().to_string()])?;
    let tracer = Tracer::attach(pid, Call::unlinking(&stale), Action::Report)?;
    crate::engine::force::resume(pid)?;
    let first = proc.recv_any()?;
    let unlinked = match tracer {
        Some(mut tracer) => {
            let seen = tracer.failed_before(Instant::now() + Duration::from_millis(100))?;
            tracer.release();
            seen
        }
        None => false,
    };
    let replaced = inode(&stale) != stale_inode;
    let bind_failed = first.kind == "failed" && first.get("kind") == Some("bind");
    if bind_failed {
        let _ = proc.wait_until(Instant::now() + Duration::from_secs(5));
    }
    proc.kill_tree();
    let _ = std::fs::remove_file(&stale);
    if !(unlinked || replaced || first.kind == "ready") && bind_failed {
        return Ok(());
    }
    let mut what = Vec::new();
    if unlinked {
        what.push("unlinked it (an unlink() of the path, seen by the grader)".to_string());
    } else if replaced {
        what.push("removed or replaced it (its inode changed)".to_string());
    }
    what.push(format!("said {}", said(&first)));
    Err(Fail::failed(format!(
        "on a path where a socket file nobody listens on already was, dated 2001 (as a server \
         killed long ago leaves it), the server {}: a file already at the path is EADDRINUSE \
         (RpcError::Bind), left alone, however old it is and whether or not anyone answers on \
         it; never remove what is at the path (a file that only looks stale may belong to \
         someone else)",
        what.join(" and ")
    )))
}

/// What a call that names a path and is no unlink() does, for a message.
fn looking_call(number: i64) -> &'static str {
    match number {
        libc::SYS_statx | libc::SYS_newfstatat | libc::SYS_stat | libc::SYS_lstat => {
            "a stat of the path"
        }
        libc::SYS_access | libc::SYS_faccessat | libc::SYS_faccessat2 => "an access() of the path",
        libc::SYS_openat | libc::SYS_open => "an open() of the path",
        _ => "a call naming the path",
    }
}
