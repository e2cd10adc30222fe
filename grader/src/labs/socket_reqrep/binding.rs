//! The socket's path: the longest one sun_path holds binds, one byte more does not, and a path
//! where a file already is fails with EADDRINUSE and leaves that file alone.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use ipc_labs_driver::Message;

use super::forced;
use super::observe;
use super::programs::{Server, said, spawn_server, spawn_stopped_server};
use super::protocol::{frame, read_response};
use super::{OP_ECHO, Transport};
use crate::engine::tracer::{Action, Call, Step, Tracer};
use crate::engine::{Fail, Proc, Run};

/// A server that was to fail: it must say `failed` with kind=bind, then exit.
fn expect_bind_failure(
    mut proc: Proc,
    first: Message,
    situation: &str,
    rule: &str,
) -> Result<(), Fail> {
    if first.kind == "failed" && first.get("kind") == Some("bind") {
        if proc
            .wait_until(Instant::now() + Duration::from_secs(5))?
            .is_none()
        {
            return Err(Fail::failed(format!(
                "{situation}, the server reported kind=bind but did not exit"
            )));
        }
        return Ok(());
    }
    proc.kill_tree();
    Err(Fail::failed(format!(
        "{situation}, the server said {} where `failed` with kind=bind is expected: {rule}",
        said(&first)
    )))
}

pub fn socket_paths(run: &mut Run) -> Result<String, Fail> {
    // Relative to the check's directory, the programs' working directory: a path of exactly
    // 107 bytes whatever the directory's own length.
    let longest = format!("{}.sock", "p".repeat(102));
    let too_long = format!("{}.sock", "q".repeat(103));
    debug_assert_eq!((longest.len(), too_long.len()), (107, 108));

    let bound = run.path(&longest);
    let (proc, first) = spawn_server(run, &["--unix".to_string(), longest.clone()])?;
    if first.kind != "ready" {
        proc.kill_tree();
        return Err(Fail::failed(format!(
            "a server given a socket path of 107 bytes, the most sun_path holds, said {}: a path \
             of up to 107 bytes must bind; only a longer one is refused",
            said(&first)
        )));
    }
    // The grader's own paths are longer: it reaches the socket through a short link.
    let link = run.path("s107");
    std::os::unix::fs::symlink(&longest, &link)?;
    let longest_server = Server::ready(run, proc, first, Transport::Unix, link.clone())?;
    if !bound.exists() {
        return Err(Fail::failed(format!(
            "the server said ready, but there is no socket file at the 107-byte path it was \
             given ({})",
            bound.display()
        )));
    }
    // A second server on the path of this one, still running.
    let inode = |path: &Path| std::fs::symlink_metadata(path).ok().map(|m| m.ino());
    let live_inode = inode(&bound);
    let (proc, first) = spawn_server(run, &["--unix".to_string(), longest.clone()])?;
    expect_bind_failure(
        proc,
        first,
        "started on the path of a server still running",
        "bind() fails there with EADDRINUSE (RpcError::Bind): never remove what is at the path; \
         removing that file would cut the running server off from every new client",
    )?;
    let now = inode(&bound);
    if now != live_inode {
        let fate = match now {
            None => "is gone: nothing is at the path any more",
            Some(_) => "was replaced by another file",
        };
        return Err(Fail::failed(format!(
            "a second server started on the path of a server still running failed with \
             kind=bind, as it should, but the running server's socket file {fate}, so that no new \
             client can reach the first server: the failed Listener::bind removed what was at \
             the path. A file already at the path is \
             EADDRINUSE, left alone: never remove it, on success or on failure"
        )));
    }
    longest_server.ping().map_err(|fail| match fail {
        Fail::Failed(m) => Fail::failed(format!(
            "after a second server failed to bind its path, the first server no longer answers: \
             {m}"
        )),
        other => other,
    })?;
    longest_server.stop()?;
    let _ = std::fs::remove_file(&link);

    run.path(&too_long);
    let (proc, first) = spawn_server(run, &["--unix".to_string(), too_long])?;
    expect_bind_failure(
        proc,
        first,
        "given a socket path of 108 bytes",
        "sun_path holds 107 bytes and a NUL; a longer path cannot be bound (binding a shortened \
         one would be binding another path): that is RpcError::Bind",
    )?;

    let taken = run.path("taken.sock");
    let content = b"a regular file: not a socket, and not the server's".to_vec();
    std::fs::write(&taken, &content)?;
    let (proc, first) = spawn_server(run, &["--unix".to_string(), taken.display().to_string()])?;
    let intact = |path: &Path| std::fs::read(path).ok() == Some(content.clone());
    let fate = if intact(&taken) {
        ""
    } else {
        ", and the file that was there is gone"
    };
    expect_bind_failure(
        proc,
        first,
        &format!("on a path where a regular file already was{fate}"),
        "Listener::bind must fail there with EADDRINUSE (RpcError::Bind), never remove what is \
         at the path: it may be anything, or another server's socket",
    )?;
    if !intact(&taken) {
        return Err(Fail::failed(
            "the server failed to bind a path where a regular file already was, as it should, \
             but that file was changed or removed: never remove what is at the path",
        ));
    }

    // A socket file nobody listens on any more, as a killed server leaves it: still a file
    // already at the path.
    let stale = run.path("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale)?);
    let stale_inode = inode(&stale);
    let (proc, first) = spawn_server(run, &["--unix".to_string(), stale.display().to_string()])?;
    let replaced = inode(&stale) != stale_inode;
    if first.kind == "ready" {
        proc.kill_tree();
        let _ = std::fs::remove_file(&stale);
        return Err(Fail::failed(
            "on a path where a socket file nobody listens on already was (as a killed server \
             leaves it), the server said ready: it removed that file and bound again. A file \
             already at the path is EADDRINUSE (RpcError::Bind), left alone, whatever it is: \
             never remove it, not even when a connect() to it is refused",
        ));
    }
    let fate = if replaced {
        ", and the socket file that was there is gone"
    } else {
        ""
    };
    expect_bind_failure(
        proc,
        first,
        &format!("on a path where a socket file nobody listens on already was{fate}"),
        "Listener::bind must fail there with EADDRINUSE (RpcError::Bind) and leave the file alone",
    )?;
    // The grader's file, which the audit would otherwise count against the program.
    let _ = std::fs::remove_file(&stale);
    if replaced {
        return Err(Fail::failed(
            "the server failed to bind a path where a socket file nobody listens on already \
             was, as it should, but that file was removed or replaced: never remove what is at \
             the path",
        ));
    }

    in_missing_directory(run)?;
    failed_bind(run, Transport::Unix)?;
    failed_bind(run, Transport::Tcp)?;
    failed_remove(run)?;
    Ok(
        "a 107-byte socket path bound and a 108-byte one failed with kind=bind; a path with a \
        file, a live server's socket or a dead server's socket on it failed with kind=bind and \
        the file stayed; a bind() failed with EACCES (Unix) or EADDRINUSE (TCP) was reported \
        kind=bind with it, and an unlink() failed with ENOENT at the stop kind=remove with it"
            .into(),
    )
}

/// A path in a directory that does not exist: bind() fails there with ENOENT, which the server
/// reports (`kind=bind`, os error 2), creating nothing: the programs may create only the files
/// they are given, and the directory is none of them.
fn in_missing_directory(run: &mut Run) -> Result<(), Fail> {
    let directory = run.path("absent");
    let path = directory.join("rpc.sock");
    let (proc, first) = spawn_server(run, &["--unix".to_string(), path.display().to_string()])?;
    let made = directory.exists();
    let situation = "given a socket path in a directory that does not exist";
    let rule = "bind() fails there with ENOENT (RpcError::Bind carrying it); Listener::bind \
                creates the socket file and nothing else: the programs may create only the \
                files they are given, and the directory is not one of them";
    let error = first.get("error").unwrap_or("").to_string();
    let outcome = if made {
        proc.kill_tree();
        Err(Fail::failed(format!(
            "{situation} ({}), the server created that directory (and said {}): {rule}",
            directory.display(),
            said(&first)
        )))
    } else if first.get("kind") == Some("bind") && !forced::carries_errno(&error, libc::ENOENT) {
        proc.kill_tree();
        Err(Fail::failed(format!(
            "{situation}, the server reported kind=bind as it should, but not the error bind() \
             returned (ENOENT, os error 2): `{error}` carries {}; every failure of \
             Listener::bind is RpcError::Bind carrying the io::Error the call returned",
            forced::errnos_in(&error)
        )))
    } else {
        expect_bind_failure(proc, first, situation, rule)
    };
    // Whatever the server made there, gone before the next case.
    let _ = std::fs::remove_dir_all(&directory);
    outcome
}

/// The server's bind() is made to fail (the server started stopped, traced from its first
/// instruction): over a Unix socket with EACCES, an error no path of the check's gives (a file
/// at the path is EADDRINUSE, a long path is refused before any bind()); over TCP with
/// EADDRINUSE, as a port already taken gives it (`--tcp 0` never fails on its own). The server
/// must report `failed kind=bind` with that errno, leave no file at the path, and exit. Skipped
/// (with a note) when the machine allows no tracing or the server makes no bind().
fn failed_bind(run: &mut Run, transport: Transport) -> Result<(), Fail> {
    let path = run.path("denied.sock");
    let (args, errno, name, situation) = match transport {
        Transport::Unix => (
            ["--unix".to_string(), path.display().to_string()],
            libc::EACCES,
            "EACCES",
            "with the bind() of its Unix socket made to fail with EACCES (os error 13, forced by \
             the grader: a directory the server may not write to gives it)",
        ),
        Transport::Tcp => (
            ["--tcp".to_string(), "0".to_string()],
            libc::EADDRINUSE,
            "EADDRINUSE",
            "started with --tcp 0 and the bind() of its TCP socket made to fail with EADDRINUSE \
             (os error 98, forced by the grader: a port already taken gives it)",
        ),
    };
    let (mut proc, pid) = spawn_stopped_server(run, args)?;
    let tracer = Tracer::attach(pid, Call::any(libc::SYS_bind), Action::Fail(errno))?;
    crate::engine::force::resume(pid)?;
    let failed = match tracer {
        Some(mut tracer) => tracer.failed_before(Instant::now() + Duration::from_secs(5))?,
        None => false,
    };
    let first = proc.recv_any()?;
    if !failed {
        run.note(format!(
            "the server's bind() over {} could not be made to fail: {} not forced",
            transport.describe(),
            name
        ));
        proc.kill_tree();
        let _ = std::fs::remove_file(&path);
        return Ok(());
    }
    let rule = "every failure of Listener::bind, over a Unix socket or TCP, is RpcError::Bind \
                carrying the io::Error the call returned (map_err with source: the error), not \
                a made-up or fixed one, nor Io";
    if first.kind == "failed" && first.get("kind") == Some("bind") {
        let error = first.get("error").unwrap_or("");
        if !forced::carries_errno(error, errno) {
            proc.kill_tree();
            return Err(Fail::failed(format!(
                "{situation}, the server reported kind=bind as it should, but not the error \
                 bind() returned: `{error}` carries {}; {rule}",
                forced::errnos_in(error)
            )));
        }
    } else {
        proc.kill_tree();
        return Err(Fail::failed(format!(
            "{situation}, the server said {} where `failed` with kind=bind is expected: {rule}",
            said(&first)
        )));
    }
    if proc
        .wait_until(Instant::now() + Duration::from_secs(5))?
        .is_none()
    {
        proc.kill_tree();
        return Err(Fail::failed(format!(
            "{situation}, the server reported kind=bind but did not exit"
        )));
    }
    if std::fs::symlink_metadata(&path).is_ok() {
        let _ = std::fs::remove_file(&path);
        return Err(Fail::failed(format!(
            "{situation}, the server reported kind=bind but left a file at its path: a bind() \
             that failed created nothing, and a failing Listener::bind creates nothing either"
        )));
    }
    Ok(())
}

/// At the stop, the server's unlink() of its socket file is made to fail with ENOENT (forced:
/// the file gone, as when someone removed it while the server ran, which a server that wakes
/// its accepting thread through the path cannot live through). `Listener::remove` must report it as RpcError::Remove carrying
/// that errno, and run_server return it: the server says `failed kind=remove`, not `done`. A
/// client is still connected (idle, between requests) at the signal: the failed removal must
/// not cut the stop short, so at the server's exit (its main thread held by the grader at
/// exit_group()) that client's connection has been shut (it sees end-of-file) and its
/// handler's thread has ended. Skipped (with a note) when the machine allows no tracing or the
/// server removes its file with no unlink().
fn failed_remove(run: &mut Run) -> Result<(), Fail> {
    const UNLINKS: [i64; 2] = [libc::SYS_unlink, libc::SYS_unlinkat];
    let path = run.path("kept.sock");
    let (proc, first) = spawn_server(run, &["--unix".to_string(), path.display().to_string()])?;
    let server = Server::ready(run, proc, first, Transport::Unix, path.clone())?;
    server.ping()?;
    let pid = server.pid();
    let ids = observe::thread_ids(pid);
    let mut idle = server.connect()?;
    idle.send(&frame(OP_ECHO, b"still here"), 0)?;
    read_response(&mut idle)
        .map_err(|e| Fail::failed(format!("no response to a first request: {e}")))?;
    let handler = observe::new_thread_in(
        pid,
        &ids,
        &forced::READS,
        Instant::now() + Duration::from_secs(2),
    )
    .map(|(tid, _)| tid)
    .filter(|&tid| tid != pid);
    let steps = [
        (Call::one_of(&UNLINKS), Step::Fail(libc::ENOENT)),
        (Call::any(libc::SYS_exit_group), Step::Hold),
    ];
    let tracer = Tracer::in_turn(pid, steps)?;
    let mut proc = server.proc;
    let _ = nix::sys::signal::kill(proc.pid, nix::sys::signal::Signal::SIGTERM);
    let (failed, mut tracer) = match tracer {
        Some(mut tracer) => (
            tracer.failed_before(Instant::now() + Duration::from_secs(5))?,
            Some(tracer),
        ),
        None => (false, None),
    };
    let message = proc.recv_before(Instant::now() + Duration::from_secs(5))?;
    let cleanup = |proc: &Proc| {
        proc.kill_tree();
        let _ = std::fs::remove_file(&path);
    };
    if !failed {
        run.note(
            "the server's unlink() of its socket file could not be made to fail: ENOENT not forced",
        );
        if let Some(tracer) = tracer {
            tracer.release();
        }
        cleanup(&proc);
        return Ok(());
    }
    let situation = "when, at the stop, the server's unlink() of its socket file failed with \
                     ENOENT (os error 2, forced by the grader: the file gone)";
    let rule = "a socket file that cannot be removed is RpcError::Remove carrying the io::Error \
                remove_file returned, whatever the error, NotFound included (the server's own \
                file gone is no success), and run_server returns it (`?`): the caller must learn \
                that the removal failed";
    let verdict = match message {
        Some(m) if m.kind == "failed" && m.get("kind") == Some("remove") => {
            let error = m.get("error").unwrap_or("");
            if forced::carries_errno(error, libc::ENOENT) {
                Ok(())
            } else {
                Err(Fail::failed(format!(
                    "{situation}, the server reported kind=remove as it should, but not the \
                     error unlink() returned: `{error}` carries {}; {rule}",
                    forced::errnos_in(error)
                )))
            }
        }
        Some(m) if m.kind == "done" => Err(Fail::failed(format!(
            "{situation}, the server said `done` as if it had removed its socket file (it is \
             still there): the error was ignored; {rule}"
        ))),
        Some(m) => Err(Fail::failed(format!(
            "{situation}, the server said {} where `failed` with kind=remove is expected: {rule}",
            said(&m)
        ))),
        None => Err(Fail::failed(format!(
            "{situation}, the server said nothing within 5 s, where `failed` with kind=remove is \
             expected: {rule}"
        ))),
    };
    // Held at its exit_group(): what the stop left running or open.
    let mut left = Vec::new();
    if verdict.is_ok()
        && let Some(tracer) = tracer.as_mut()
        && tracer.held_before(Instant::now() + Duration::from_secs(3))?
    {
        if !idle.peer_closed() {
            left.push(
                "the connection of a client still connected at the signal was never shut (the \
                 client saw no end-of-file)"
                    .to_string(),
            );
        }
        if let Some(tid) = handler
            && observe::thread_ids(pid).contains(&tid)
        {
            left.push(format!(
                "that client's handler thread (tid {tid}) was still running"
            ));
        }
    }
    if let Some(tracer) = tracer {
        tracer.release();
    }
    if !left.is_empty() {
        cleanup(&proc);
        return Err(Fail::failed(format!(
            "{situation}, with a client still connected at the signal, the server reported \
             kind=remove as it should, but at its exit (held by the grader at exit_group(), \
             after run_server had returned) {}: the failed removal cut the stop short, \
             returning before the open connections were shut and their handlers joined. The \
             stop stops accepting, shuts the open connections, joins the handlers, and only \
             then removes the listener, whose error comes last: when run_server returns, \
             nothing it started runs or is open, error or not",
            left.join(", and ")
        )));
    }
    ended_after_remove(&mut proc, &path, situation, verdict)
}

/// The end of a case whose server reported (or should have) `kind=remove`: once it has, it must
/// exit; the server is then killed and its socket file removed, whatever the verdict.
pub(super) fn ended_after_remove(
    proc: &mut Proc,
    path: &Path,
    situation: &str,
    verdict: Result<(), Fail>,
) -> Result<(), Fail> {
    let exited = verdict.is_err()
        || proc
            .wait_until(Instant::now() + Duration::from_secs(5))?
            .is_some();
    proc.kill_tree();
    let _ = std::fs::remove_file(path);
    if !exited {
        return Err(Fail::failed(format!(
            "{situation}, the server reported kind=remove but did not exit"
        )));
    }
    verdict
}
