//! A queue post that sends again after an `EINTR`: its signals stay unblocked for every send,
//! the retries too. The grader has filled the ready queue and held the consumer, so that the
//! producer's `post(ready)` blocks in `mq_send()`, and has seen the `SIGUSR1` it sent there
//! handled; the producer, back in a send, is sent `SIGUSR1` again, and that one too must be
//! handled (a retry made with the signals blocked keeps every later signal, `SIGINT` and
//! `SIGTERM` as well, waiting for as long as the queue stays full).

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::handover::Handover;
use super::order::{comes_to_within, sending};
use super::probe;
use crate::engine::Fail;
use crate::engine::inspect::{self, SignalMask};

/// The signals sent after the first, one at a time, each once the producer sends again.
const LATER_SIGNALS: u32 = 2;

/// The producer's first `SIGUSR1` was handled, and it went on posting: each later one, sent
/// while it is back in `mq_send()` on the full `ready` queue, must be handled too (or the post
/// report `kind=post`).
pub(super) fn later_signals_handled(
    handover: &mut Handover,
    producer: i32,
    ready: &str,
) -> Result<String, Fail> {
    let usr1 = Signal::SIGUSR1 as i32;
    for nth in 1..=LATER_SIGNALS {
        if !comes_to_within(producer, sending, Duration::from_millis(300)) {
            return Ok(format!(
                "post(ready) interrupted in mq_send(): still posting ({nth} signal(s) handled)"
            ));
        }
        kill(Pid::from_raw(producer), Signal::SIGUSR1)
            .map_err(|e| Fail::Grader(format!("kill: {e}")))?;
        // A loaded machine is given a second for the handler to run.
        let until = Instant::now() + Duration::from_secs(1);
        while probe::pending(producer, usr1) && Instant::now() < until {
            if let Some(message) = handover.proc.recv_before(Instant::now())? {
                return match (message.kind.as_str(), message.get("kind")) {
                    ("failed", Some("post")) => Ok(format!(
                        "post(ready) interrupted in mq_send() again: reported ({})",
                        message.get("error").unwrap_or("")
                    )),
                    ("failed", _) => Err(handover.failure(&message)),
                    (kind, _) => Err(Fail::failed(format!(
                        "the program said an unexpected `{kind}`"
                    ))),
                };
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if probe::pending(producer, usr1) {
            let blocked = if inspect::has_signal(producer, producer, SignalMask::Blocked, usr1) {
                ", blocked in its signal mask (SigBlk in /proc/PID/task/TID/status)"
            } else {
                ""
            };
            let ordinal = if nth == 1 { "second" } else { "third" };
            return Err(Fail::failed(format!(
                "the grader filled {ready} and held the consumer, so that the producer's \
                 post(ready) blocked in mq_send(), and sent the producer SIGUSR1 (its handler \
                 installed): that first signal was handled and the producer sent again; the \
                 {ordinal} SIGUSR1, sent while it was back in mq_send(), was still pending more \
                 than a second later, not handled{blocked}: post() sends again with signals \
                 blocked after an EINTR, so that every later signal (SIGINT and SIGTERM too) \
                 waits for as long as the queue stays full. Signals stay unblocked in post(), \
                 retries included: send again with the signal mask as the program set it, or \
                 report the EINTR (HandoffError::Post)"
            )));
        }
    }
    Ok(format!(
        "post(ready) interrupted in mq_send() {} times: each signal handled, still posting",
        LATER_SIGNALS + 1
    ))
}
