//! A TCP port already listened on: a server given it (`--tcp PORT`) fails to bind with
//! `EADDRINUSE`, even when the listener there lets others share the port (`SO_REUSEPORT`),
//! which only a listener that sets `SO_REUSEPORT` too would join.

use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, listen, setsockopt, socket, sockopt,
};

use super::forced;
use super::programs::{said, spawn_server};
use crate::engine::{Fail, Run};

/// The grader's own listener on 127.0.0.1, on a port the system chose, with `SO_REUSEPORT`
/// set: the port of a server that is running.
fn sharing_listener() -> Result<TcpListener, Fail> {
    let grader = |what: &str, e: nix::Error| Fail::Grader(format!("{what}: {e}"));
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| grader("socket", e))?;
    setsockopt(&fd, sockopt::ReusePort, &true).map_err(|e| grader("SO_REUSEPORT", e))?;
    let loopback = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: a sockaddr_in of the length passed.
    let bound = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const loopback).cast::<libc::sockaddr>(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if bound != 0 {
        return Err(Fail::Grader(format!(
            "bind: {}",
            std::io::Error::last_os_error()
        )));
    }
    listen(&fd, Backlog::new(8).map_err(|e| grader("backlog", e))?)
        .map_err(|e| grader("listen", e))?;
    Ok(TcpListener::from(fd))
}

pub fn port_in_use(run: &mut Run) -> Result<String, Fail> {
    let taken = sharing_listener()?;
    let port = taken.local_addr()?.port();
    let (mut proc, first) = spawn_server(run, &["--tcp".to_string(), port.to_string()])?;
    let situation = format!(
        "given --tcp {port}, a port the grader already listens on (127.0.0.1:{port}, its \
         listening socket with SO_REUSEPORT set, as a running server's)"
    );
    let rule = "a port in use is EADDRINUSE: every failure of Listener::bind is RpcError::Bind \
                carrying the io::Error bind() returned";
    let verdict = if first.kind == "ready" {
        let reported = first.get("port").unwrap_or("");
        if reported == port.to_string() {
            Err(Fail::failed(format!(
                "{situation}, the server said ready on that same port: its bind() succeeded \
                 where it must fail with EADDRINUSE. Linux lets a second listener bind a port \
                 in use only when both set SO_REUSEPORT: the server's listener sets it, and so \
                 joins the running one and takes a share of its clients. TcpListener::bind \
                 sets SO_REUSEADDR, all that a restarted server needs; {rule}"
            )))
        } else {
            Err(Fail::failed(format!(
                "{situation}, the server said ready on port {reported}: it bound another port \
                 than the one given; bind 127.0.0.1:PORT as given, and {rule}"
            )))
        }
    } else if first.kind == "failed" && first.get("kind") == Some("bind") {
        let error = first.get("error").unwrap_or("");
        if forced::carries_errno(error, libc::EADDRINUSE) {
            Ok(())
        } else {
            Err(Fail::failed(format!(
                "{situation}, the server reported kind=bind as it should, but not the error \
                 bind() returned (EADDRINUSE, os error 98): `{error}` carries {}; {rule}",
                forced::errnos_in(error)
            )))
        }
    } else {
        Err(Fail::failed(format!(
            "{situation}, the server said {} where `failed` with kind=bind is expected: {rule}",
            said(&first)
        )))
    };
    if verdict.is_ok()
        && proc
            .wait_until(Instant::now() + Duration::from_secs(5))?
            .is_none()
    {
        proc.kill_tree();
        return Err(Fail::failed(format!(
            "{situation}, the server reported kind=bind but did not exit"
        )));
    }
    proc.kill_tree();
    let _ = proc.wait_until(Instant::now() + Duration::from_secs(2));
    drop(taken);
    verdict.map(|()| {
        "a server given --tcp PORT for a port the grader listens on (with SO_REUSEPORT) failed \
         with kind=bind carrying EADDRINUSE (os error 98)"
            .to_string()
    })
}
