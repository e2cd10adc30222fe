//! A small input to a child killed before the transfer: the write error comes back whatever the
//! input's length. One byte, the least: it fits in a pipe, and in the buffer of any buffered
//! writer, whose error a flush at its drop throws away.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::returned::Returned;
use super::session::{Flags, start};
use crate::engine::inspect;
use crate::engine::{Fail, Run};

pub fn small_input_to_dead_child(run: &mut Run) -> Result<String, Fail> {
    let input = run.random_bytes(1);
    let mut session = start(run, input, Flags::default())?;
    let child = session.child;
    kill(Pid::from_raw(child), Signal::SIGKILL).map_err(|e| Fail::Grader(format!("kill: {e}")))?;
    let settle = Instant::now() + Duration::from_secs(1);
    while Instant::now() < settle && inspect::view(child).is_some_and(|v| v.state != 'Z') {
        std::thread::sleep(Duration::from_millis(1));
    }
    let done = session.exchange()?;
    session.finish()?;
    let setting = format!(
        "the echo child was killed before the transfer of a 1-byte input (less than a pipe or \
         any buffer holds), and exchange() returned `{}`",
        done.exchange
    );
    match Returned::parse(&done.exchange) {
        Returned::Write(errno) if errno == "EPIPE" => {
            Ok("an input of 1 byte to a dead child gave Write(EPIPE) too".into())
        }
        Returned::ShortEcho { .. } => Err(Fail::failed(format!(
            "{setting} (ShortEcho): the write() of that byte to pipe A failed with EPIPE, and \
             that error was lost; with a larger input it is not: the bytes were held in a \
             buffer (a BufWriter, say) and written only when it was dropped, whose error nobody \
             sees; flush it and return the flush's error, or write with write() (write_all()) \
             directly: exchange() must return PipeEchoError::Write(EPIPE)"
        ))),
        _ => Err(Fail::failed(format!(
            "{setting}: with nobody left to read pipe A, write() fails with EPIPE whatever the \
             input's length, and exchange() must return that write error \
             (PipeEchoError::Write(EPIPE))"
        ))),
    }
}
