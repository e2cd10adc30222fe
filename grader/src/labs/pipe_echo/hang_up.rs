//! Reading until end-of-file, whatever pipe B holds when its writer is gone: the parent is held
//! while the child echoes into an enlarged pipe B and exits, so that the parent finds the whole
//! echo waiting behind a hang-up (`POLLHUP`), more than any one `read()` of it takes.

use std::time::{Duration, Instant};

use super::outside;
use super::returned::Returned;
use super::session::{Flags, pipes_of, settle_in_read, start};
use crate::engine::{Fail, Run, force};

/// What the grader enlarges both pipes to: the most an unprivileged process may ask for
/// (`/proc/sys/fs/pipe-max-size`), sixteen times the default.
const ENLARGED: i32 = 1 << 20;

/// Half a MiB and a byte: the echo waiting in pipe B at its hang-up, more than a default pipe
/// holds and than the buffers a program reads into (64 KiB, 128 KiB).
const ECHO_AT_HANG_UP: usize = (512 << 10) + 1;

/// With both pipes enlarged and the child stopped, the parent writes the whole input into pipe
/// A and closes it; the grader then stops the parent, lets the child echo everything into pipe
/// B and exit, and resumes the parent: the echo must come back whole. Returns what was
/// established, or the step not tried.
pub fn reads_past_hang_up(run: &mut Run) -> Result<String, Fail> {
    let input = run.random_bytes(ECHO_AT_HANG_UP);
    let mut session = start(run, input, Flags::default())?;
    let (parent, child) = (session.parent, session.child);
    settle_in_read(child);
    let pipes = session.pipes()?;
    // A user over its pipe memory may not enlarge a pipe: then there is nothing to try.
    let enlarged = force::set_pipe_capacity(child, pipes.child_reads_a, ENLARGED)
        .and_then(|_| force::set_pipe_capacity(child, pipes.child_writes_b, ENLARGED));
    let Ok(capacity) = enlarged else {
        let done = session.exchange()?;
        session.verify_echo(&done)?;
        session.finish()?;
        return Ok("an echo waiting behind a hang-up not tried (the pipes kept their size)".into());
    };
    outside::hold_stopped(child)?;
    session.go()?;
    // Every byte in pipe A and the write end closed: nothing is left for the parent but pipe B.
    let until = Instant::now() + Duration::from_secs(3);
    let all_sent = loop {
        let holds_a = pipes_of(&session.proc, parent)
            .get(&pipes.a)
            .is_some_and(|(_, writes)| !writes.is_empty());
        if !holds_a {
            break true;
        }
        if Instant::now() > until {
            break false;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    if all_sent {
        force::hold(parent)?;
        force::resume(child)?;
        outside::zombie_status_within(child, Duration::from_secs(3));
    }
    let child_ended = outside::zombie_status(child).is_some();
    force::resume(child)?;
    force::resume(parent)?;
    let done = session.recv_done()?;
    if !(all_sent && child_ended) {
        // The parent kept pipe A past its input: other checks name why.
        session.verify_echo(&done)?;
        session.finish()?;
        return Ok("an echo waiting behind a hang-up not tried (pipe A kept open)".into());
    }
    if let Returned::ShortEcho { sent, echoed } = Returned::parse(&done.exchange)
        && sent == ECHO_AT_HANG_UP
        && echoed < sent
    {
        return Err(Fail::failed(format!(
            "the grader enlarged pipe B to {capacity} bytes (as any process holding it may), \
             held the parent once it had sent all {sent} bytes and closed pipe A, and let the \
             echo child echo them all into pipe B and exit: the parent, resumed, found the \
             whole echo in pipe B and its writer gone (POLLHUP), and exchange() returned `{}`: \
             it stopped reading after {echoed} bytes, before end-of-file; a hang-up says that \
             no more bytes will come, not that one read() takes what is left: read pipe B until \
             read() returns 0",
            done.exchange
        )));
    }
    session.verify_echo(&done)?;
    session.finish()?;
    Ok(format!(
        "{ECHO_AT_HANG_UP} bytes waiting in pipe B ({capacity} bytes) at its hang-up were all read"
    ))
}
