//! The kind of error the echo child reports for a call the grader made fail: a `write()` to
//! pipe B that failed is `PipeEchoError::Write`, a `read()` of pipe A `Read`. The child says it on
//! stderr (the parent's lines start with `pipe-echo:`); a child that says nothing is not judged.

use std::time::{Duration, Instant};

use super::session::Session;
use crate::engine::Fail;

/// The text of each kind, as `PipeEchoError`'s `Display` writes it.
const READ_FAILED: &str = "reading from a pipe failed";
const WRITE_FAILED: &str = "writing to a pipe failed";

/// After the child's `write()` to pipe B failed with `errno` (`setting` says how) and the child
/// ended: no line of the child's calls it a failed read.
pub fn write_error_reported_as_write(
    session: &Session,
    errno: &str,
    setting: &str,
) -> Result<(), Fail> {
    let Some(line) = child_line(session, &format!("{READ_FAILED}: {errno}")) else {
        return Ok(());
    };
    Err(Fail::failed(format!(
        "{setting}, and the child reported `{line}` on stderr before it exited with status 1: \
         echo_loop() returned PipeEchoError::Read for the failed write(); a write() to pipe B \
         that fails is PipeEchoError::Write(errno) (`{WRITE_FAILED}: {errno}`), Read is for the \
         reads of pipe A: map write_all()'s error with PipeEchoError::Write"
    )))
}

/// The first line of the child's stderr that holds `words`, waited for briefly: the child wrote
/// it before it exited, but the grader's copy of stderr may lag.
fn child_line(session: &Session, words: &str) -> Option<String> {
    let until = Instant::now() + Duration::from_millis(20);
    loop {
        let text = session.proc.stderr.lock().expect("capture lock").text();
        let found = text
            .lines()
            .find(|l| !l.starts_with("pipe-echo:") && l.contains(words))
            .map(|l| l.trim().to_string());
        // Either kind said: the child's line is there, no need to wait for more.
        let said = text.lines().any(|l| {
            !l.starts_with("pipe-echo:") && (l.contains(READ_FAILED) || l.contains(WRITE_FAILED))
        });
        if found.is_some() || said || Instant::now() >= until {
            return found;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
