//! A server that does not say `done` after the stop's signal: where each of its threads is, and
//! what that tells of the stop (a thread still in accept(), reading a connection that no
//! shutdown() reached or shut for writing only, writing to a client that does not read, waiting
//! for a signal, or polling).

use std::time::Duration;

use nix::sys::signal::Signal;

use super::observe;
use super::programs::{CONTROL_FD, Server};
use super::protocol::Conn;
use crate::engine::Fail;
use crate::engine::diagnose::Activity;
use crate::engine::inspect;

impl Server {
    /// The diagnosis of a server that did not say `done` within `waited` after `signal`: where
    /// each thread is.
    pub(super) fn stuck_after(
        &self,
        signal: Signal,
        idle: Option<&Conn>,
        waited: Duration,
    ) -> Fail {
        let pid = self.pid();
        let threads = observe::threads(pid);
        let list: Vec<String> = threads
            .iter()
            .map(|t| {
                let who = if t.tid == pid {
                    "main thread".to_string()
                } else {
                    format!("thread {}", t.tid)
                };
                format!("{who} {}", t.activity.describe())
            })
            .collect();
        let mut causes = Vec::new();
        // Named first: while a thread still waits for the stop signal, what else blocks may
        // only be waiting for a stop that never began.
        if threads
            .iter()
            .any(|t| t.syscall == Some(libc::SYS_rt_sigtimedwait))
        {
            causes.push(format!(
                "a thread still waits for a signal, so {0} did not end that wait: the set it \
                 waits for lacks {0} (the server stops at SIGTERM and at SIGINT, both in the set), \
                 or it went back to waiting after taking it; what else is blocked may be waiting \
                 for a stop that never began",
                signal.as_str()
            ));
        }
        let any = |f: &dyn Fn(&Activity) -> bool| threads.iter().any(|t| f(&t.activity));
        if any(&|a| matches!(a, Activity::SocketAccept { .. })) {
            causes.push(
                "a thread is still blocked in accept(): the accepting thread was not woken (a \
                 connection to the listener wakes it; was the socket file already gone?), or it \
                 went back to accept() because it was woken before it was told to stop"
                    .to_string(),
            );
        }
        let unshut: Vec<(i32, i32)> = threads
            .iter()
            .filter_map(|t| match t.activity {
                // The control channel is where the server waits for `exit`, no client's.
                Activity::SocketRead { fd } if fd != CONTROL_FD => Some((t.tid, fd)),
                _ => None,
            })
            .filter(|&(_, fd)| observe::read_side_shut(pid, fd) == Some(false))
            .collect();
        let write_only = matches!(idle.map(Conn::peek_now), Some(Some(0)));
        if !unshut.is_empty() && !write_only {
            let reading: Vec<String> = unshut
                .iter()
                .map(|(tid, fd)| format!("thread {tid} reads fd {fd}"))
                .collect();
            let held = self.at_signal.as_ref().map_or(0, |set| set.len());
            let now = observe::connections(pid, self.port).len();
            let others = if held > now {
                format!(
                    " (the server held {held} client connections at {}; all but {now} have \
                     ended since)",
                    signal.as_str()
                )
            } else {
                String::new()
            };
            causes.push(format!(
                "{}: a client's connection that no shutdown() closed for reading (a poll() of \
                 it shows it open for reading){others}. At the stop every connection still open \
                 must be shut down for reading and writing (Shutdown::Both), each one, so that \
                 its handler's read() returns: either none was shut down for reading (not at \
                 all, or for writing only, which does not wake a read), or this one was missed \
                 (left out of the connections the stop shuts: added to them too late, or its \
                 entry in a table of open connections replaced or removed by another client's \
                 handler under a key the two shared, such as a number two clients can get)",
                reading.join(", ")
            ));
        } else if any(&|a| matches!(a, Activity::SocketRead { fd } if *fd != CONTROL_FD)) {
            let seen = match idle.map(Conn::peek_now) {
                Some(Some(0)) => {
                    " (the client still connected did see end of stream: the connections were \
                     shut down for writing only, which does not wake a read)"
                }
                Some(_) => {
                    " (the client still connected saw nothing: its connection was not shut down)"
                }
                None => "",
            };
            causes.push(format!(
                "a thread is still blocked reading a client's connection{seen}: shut each open \
                 connection down for reading and writing (Shutdown::Both), so that a handler \
                 blocked in read() returns, before you wait for it"
            ));
        }
        if any(&|a| matches!(a, Activity::SocketWrite { .. })) {
            causes.push(
                "a thread is still blocked writing a response to a client that does not read \
                 it: its connection was not shut down, or only for reading, which wakes a read \
                 but not a write; shut each open connection down for reading and writing \
                 (Shutdown::Both) before you wait for its handler"
                    .to_string(),
            );
        }
        if any(&|a| matches!(a, Activity::Busy | Activity::Sleep)) {
            causes.push(
                "a thread is running or sleeping between looks: it polls for the stop instead \
                 of being woken"
                    .into(),
            );
        }
        if observe::main_receives_on(pid, CONTROL_FD) {
            causes.push(
                "its main thread waits for the grader's `exit` on its control channel, as after \
                 `done`: run_server had returned and main.rs had sent `done`, which did not \
                 reach the grader in time (a machine too loaded)"
                    .into(),
            );
        }
        if causes.is_empty()
            && let Some(cause) = join_waits_on_lock(pid, &threads)
        {
            causes.push(cause);
        }
        if causes.is_empty() {
            causes.push(
                "every thread waits on another (a join or a lock): a thread it waits for never \
                 ends"
                    .into(),
            );
        }
        Fail::failed(format!(
            "after {} the server did not say `done` within {:.1} s; {}: {}",
            signal.as_str(),
            waited.as_secs_f64(),
            list.join(", "),
            causes.join("; ")
        ))
    }
}

/// A thread that joins another (its futex wait is on that thread's id, as `pthread_join` waits)
/// while the thread it joins waits on a futex itself: what that second wait is, from its value
/// (a contended mutex's word holds 2 in Rust's and glibc's locks).
fn join_waits_on_lock(pid: i32, threads: &[observe::ThreadState]) -> Option<String> {
    let futex_value = |tid: i32| match inspect::call_of(pid, tid) {
        Some((number, args)) if number == libc::SYS_futex => Some(args[2] as u32 as i32),
        _ => None,
    };
    let tids: Vec<i32> = threads.iter().map(|t| t.tid).collect();
    let (joiner, joined) = threads.iter().find_map(|t| {
        let value = futex_value(t.tid)?;
        (value != t.tid && tids.contains(&value)).then_some((t.tid, value))
    })?;
    let joined_value = futex_value(joined)?;
    let name = |tid: i32| {
        if tid == pid {
            "the main thread".to_string()
        } else {
            format!("thread {tid}")
        }
    };
    let what = if joined_value == 2 {
        "to take a mutex that is locked (its futex word holds 2, a contended lock)"
    } else {
        "on a lock or a condition (a futex wait)"
    };
    Some(format!(
        "{} waits for thread {joined} to end (a join: its futex wait is on that thread's id), and \
         thread {joined} waits {what}: neither goes on. Most likely the joining thread holds \
         the lock the other waits for: a MutexGuard still alive across the join (a guard of the \
         table of open connections kept in a variable while the handlers are joined, say); \
         drop every guard before you join, or the other waits for a condition or a message \
         nobody will send",
        name(joiner)
    ))
}
