//! accept() errors beyond those the grader also brings about with a client: a failed accept()
//! costs that connection only, whatever its error, so the grader forces every error accept(2)
//! documents for a connection that cannot be taken on, one after the other on the same server,
//! and one more the seed chooses among the errors no such list holds.

use std::time::{Duration, Instant};

use nix::errno::Errno;
use rand::RngExt;

use super::OP_ECHO;
use super::forced::ACCEPTS;
use super::observe;
use super::programs::Server;
use super::protocol::{frame, read_response, verify};
use crate::engine::tracer::{Action, Call, MAX_STEPS, Step, Tracer};
use crate::engine::{Fail, Run};

const PENDING: &str = "a network error pending on the new connection gives it (accept(2))";
const OTHER_KERNELS: &str = "some kernels give it for one connection (accept(2))";

/// Errors accept() returns for one connection (accept(2): a shortage of kernel memory or
/// descriptors, the network errors already pending on the new socket that Linux passes on,
/// and those other kernels give), with what brings each about.
const DOCUMENTED: [(i32, &str, &str); 15] = [
    (
        libc::ENOBUFS,
        "ENOBUFS",
        "the kernel short of socket buffers for a moment gives it",
    ),
    (
        libc::ENOMEM,
        "ENOMEM",
        "the kernel short of memory for a moment gives it",
    ),
    (
        libc::ENFILE,
        "ENFILE",
        "the system's limit on open files, reached for a moment, gives it",
    ),
    (
        libc::EPROTO,
        "EPROTO",
        "a protocol error on the new connection gives it (accept(2))",
    ),
    (libc::ENETDOWN, "ENETDOWN", PENDING),
    (libc::ENOPROTOOPT, "ENOPROTOOPT", PENDING),
    (libc::EHOSTDOWN, "EHOSTDOWN", PENDING),
    (libc::ENONET, "ENONET", PENDING),
    (libc::EHOSTUNREACH, "EHOSTUNREACH", PENDING),
    (libc::EOPNOTSUPP, "EOPNOTSUPP", PENDING),
    (libc::ENETUNREACH, "ENETUNREACH", PENDING),
    (libc::ENOSR, "ENOSR", OTHER_KERNELS),
    (libc::ESOCKTNOSUPPORT, "ESOCKTNOSUPPORT", OTHER_KERNELS),
    (libc::EPROTONOSUPPORT, "EPROTONOSUPPORT", OTHER_KERNELS),
    (libc::ETIMEDOUT, "ETIMEDOUT", OTHER_KERNELS),
];

/// Errors that say the listener itself is unusable (or the call's arguments wrong), and
/// `EAGAIN`, which a blocking listener never sees: not chosen as an error no list names.
const NOT_CHOSEN: [i32; 5] = [
    libc::EBADF,
    libc::EINVAL,
    libc::ENOTSOCK,
    libc::EFAULT,
    libc::EAGAIN,
];

/// The name of one of [`DOCUMENTED`] and what brings it about.
pub fn name_and_cause(errno: i32) -> Option<(&'static str, &'static str)> {
    DOCUMENTED
        .iter()
        .find(|(e, ..)| *e == errno)
        .map(|&(_, name, cause)| (name, cause))
}

/// An error of Linux's that neither accept(2) nor the other checks name, by the seed.
fn one_no_list_holds(run: &mut Run) -> i32 {
    let named = |errno: i32| format!("{:?}", Errno::from_raw(errno)) != "UnknownErrno";
    let candidates: Vec<i32> = (1..=133)
        .filter(|&e| named(e) && !NOT_CHOSEN.contains(&e))
        .filter(|&e| name_and_cause(e).is_none())
        .filter(|&e| ![libc::ECONNABORTED, libc::EMFILE, libc::EPERM, libc::EINTR].contains(&e))
        .collect();
    candidates[run.rng().random_range(0..candidates.len())]
}

/// Every error of [`DOCUMENTED`] and one the seed chooses, each forced on one accept() of the
/// accepting thread in turn, three calls in a row per tracing: after each, the thread must call
/// accept() again, and after each three be back in it (when it is not seen there, a new client
/// must be served). `gone_past`: the errors of the accept() calls made to fail before, with a
/// client served after each. Skipped (with a note) when no thread of the server is seen in
/// accept(), or the machine allows no tracing.
pub fn every_error_costs_one_connection(
    run: &mut Run,
    server: &Server,
    gone_past: &[i32],
) -> Result<(), Fail> {
    let unlisted = one_no_list_holds(run);
    let unlisted_name = format!("{:?}", Errno::from_raw(unlisted));
    let mut errors: Vec<(i32, String, &str)> = DOCUMENTED
        .iter()
        .map(|&(errno, name, cause)| (errno, name.to_string(), cause))
        .collect();
    errors.push((
        unlisted,
        unlisted_name,
        "an error accept(2) does not list, which another kernel or protocol may give",
    ));
    let pid = server.pid();
    let soon = || Instant::now() + Duration::from_secs(1);
    let mut past: Vec<String> = gone_past
        .iter()
        .map(|&e| format!("{:?}", Errno::from_raw(e)))
        .collect();
    for group in errors.chunks(MAX_STEPS) {
        let Some((acceptor, accept)) = observe::new_thread_in(pid, &[], &ACCEPTS, soon()) else {
            if !served_next(server, "the errors forced on accept()")? {
                return Err(ended_by(
                    server,
                    past.last(),
                    &past[..past.len().saturating_sub(1)],
                    gone_past.len(),
                ));
            }
            run.note(format!(
                "no thread of the server was seen in accept(): {} not forced",
                group[0].1
            ));
            return Ok(());
        };
        let mut steps = [None; MAX_STEPS];
        for (step, &(errno, ..)) in steps.iter_mut().zip(group) {
            *step = Some((Call::any(accept), Step::Fail(errno)));
        }
        let Some(mut tracer) =
            Tracer::attach_thread(pid, acceptor, Call::any(accept), Action::InTurn(steps))?
        else {
            run.note(format!(
                "the server's accept() could not be made to fail: {} not forced",
                group[0].1
            ));
            return Ok(());
        };
        // Attaching interrupts the blocked call, which the kernel restarts: the restart fails,
        // then each accept() the thread makes after it, as long as it makes one.
        for (step, (_, name, _)) in group.iter().enumerate() {
            if !tracer.failed_before(soon())? {
                drop(tracer);
                // The first step's accept() was seen blocked: it could not be made to fail.
                if step == 0 {
                    run.note(format!(
                        "the server's accept() could not be made to fail: {name} not forced"
                    ));
                    return Ok(());
                }
                if served_next(server, name)? {
                    run.note(format!(
                        "the accepting thread made no accept() at once after a failed one, yet \
                         a new client was served: {name} not forced"
                    ));
                    return Ok(());
                }
                return Err(ended_by(
                    server,
                    past.last(),
                    &past[..past.len() - 1],
                    gone_past.len(),
                ));
            }
            past.push(name.clone());
        }
    }
    if observe::new_thread_in(pid, &[], &ACCEPTS, soon()).is_none()
        && !served_next(server, "the errors forced on accept()")?
    {
        return Err(ended_by(
            server,
            past.last(),
            &past[..past.len() - 1],
            gone_past.len(),
        ));
    }
    Ok(())
}

/// The verdict on an accepting loop that ended after accept() failed with `last`, having gone
/// on after `before`, of which the first `served_between` had a client served after each.
fn ended_by(
    server: &Server,
    last: Option<&String>,
    before: &[String],
    served_between: usize,
) -> Fail {
    let Some(last) = last else {
        return Fail::failed(format!(
            "no thread of the server was in accept() and a new client got no response{}: a \
             failed accept() costs that connection only, whatever its error",
            server.alive_note()
        ));
    };
    let cause = DOCUMENTED
        .iter()
        .find(|e| e.1 == last)
        .map(|e| e.2)
        .unwrap_or("an error accept(2) does not list, which another kernel or protocol may give");
    let before = if before.is_empty() {
        String::new()
    } else {
        let in_a_row = before.len().saturating_sub(served_between);
        if in_a_row == 0 {
            return Fail::failed(format!(
                "after one of the server's accept() calls failed with {last} (forced by the \
                 grader: {cause}), the accepting thread called accept() no more and the next \
                 client got no response{}; it had gone on after accept() calls that failed with \
                 {} before, a client served after each, so the loop ends on some errors only (a \
                 list of errors to retry): a failed accept() costs that connection only, \
                 whatever its error; log it and go on accepting",
                server.alive_note(),
                before.join(", ")
            ));
        }
        format!(
            "; it had gone on after accept() calls that failed with {} before ({in_a_row} of \
             them in a row, just before this one): so the loop ends on some errors only (a list \
             of errors to retry), or after {} failures in a row (a cap on retries)",
            before.join(", "),
            in_a_row + 1
        )
    };
    Fail::failed(format!(
        "after one of the server's accept() calls failed with {last} (forced by the grader: \
         {cause}), the accepting thread called accept() no more and the next client got no \
         response{}{before}: a failed accept() costs that connection only, whatever its error; \
         log it and go on accepting",
        server.alive_note()
    ))
}

/// Whether a new client is answered within 2 s.
fn served_next(server: &Server, after: &str) -> Result<bool, Fail> {
    let mut conn = server.connect()?;
    conn.timeouts(Duration::from_secs(2));
    let payload = format!("served after a failed accept ({after})?").into_bytes();
    if conn.send(&frame(OP_ECHO, &payload), 0).is_err() {
        return Ok(false);
    }
    match read_response(&mut conn) {
        Ok(got) => {
            verify(got, OP_ECHO, &payload, "a client after a failed accept()")?;
            Ok(true)
        }
        Err(_) => Ok(false),
    }
}
