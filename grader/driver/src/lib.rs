//! The grader's end of a lab program.
//!
//! Every lab ships a small `main.rs` that calls the student's library. When the grader starts
//! that program it passes one end of a `SOCK_SEQPACKET` socket pair, whose number is in the
//! environment variable [`CONTROL_FD_ENV`]. Over it the program tells the grader what it is doing
//! (`ready`, `done`, ...) and waits for the grader's go-ahead, so the grader can look at the
//! processes in `/proc` at known moments instead of guessing with sleeps.
//!
//! Run by hand (no grader), [`Control`] does nothing and the program just runs.
//!
//! A message is its kind on the first line, then one `key=value` per line.

pub mod testing;

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use nix::sys::socket::{MsgFlags, recv, send};

pub mod bench;

/// The environment variable that carries the control socket's file descriptor number.
pub const CONTROL_FD_ENV: &str = "IPC_LABS_CONTROL_FD";

/// The kind of message a panic hook sends when the student's code reached a `todo!()`.
pub const NOT_IMPLEMENTED: &str = "not-implemented";
/// The kind of message a panic hook sends for any other panic.
pub const PANICKED: &str = "panicked";

/// The largest control message; longer values are cut.
const MAX_MESSAGE: usize = 4096;

/// The control socket as a raw number, for the panic hook (which may run in a forked child).
static CONTROL_RAW_FD: AtomicI32 = AtomicI32::new(-1);

/// The program's control channel to the grader.
pub struct Control {
    fd: Option<OwnedFd>,
}

/// A message from the grader: its kind and its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub kind: String,
    pub fields: Vec<(String, String)>,
}

impl Message {
    /// The value of field `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Encodes a message: the kind, then `key=value` lines; newlines in values become spaces.
    pub fn encode(kind: &str, fields: &[(&str, String)]) -> Vec<u8> {
        let mut text = String::from(kind);
        for (key, value) in fields {
            text.push('\n');
            text.push_str(key);
            text.push('=');
            text.push_str(&value.replace('\n', " "));
        }
        let mut bytes = text.into_bytes();
        bytes.truncate(MAX_MESSAGE);
        bytes
    }

    /// Decodes what [`Message::encode`] wrote. Lines without `=` are ignored.
    pub fn decode(bytes: &[u8]) -> Message {
        let text = String::from_utf8_lossy(bytes);
        let mut lines = text.split('\n');
        let kind = lines.next().unwrap_or_default().to_string();
        let fields = lines
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Message { kind, fields }
    }
}

impl Control {
    /// Takes the control socket from the environment (if the grader started this program) and
    /// installs the panic hook that reports `todo!()` and panics to the grader in one line.
    pub fn start(program: &'static str) -> Control {
        let fd = std::env::var(CONTROL_FD_ENV)
            .ok()
            .and_then(|v| v.parse::<RawFd>().ok())
            // SAFETY: the grader opened this descriptor for us and nothing else in the program
            // owns it; it is taken once, here.
            .map(|raw| unsafe { OwnedFd::from_raw_fd(raw) });
        if let Some(fd) = &fd {
            CONTROL_RAW_FD.store(fd.as_raw_fd(), Ordering::SeqCst);
        }
        install_panic_hook(program);
        Control { fd }
    }

    /// Whether the grader started this program.
    pub fn is_graded(&self) -> bool {
        self.fd.is_some()
    }

    /// Tells the grader `kind`, with `fields` and this process's pid.
    pub fn send(&self, kind: &str, fields: &[(&str, String)]) {
        if let Some(fd) = &self.fd {
            let mut all = vec![("pid", std::process::id().to_string())];
            all.extend(fields.iter().cloned());
            send_raw(fd.as_raw_fd(), &Message::encode(kind, &all));
        }
    }

    /// Waits for the grader's message of kind `kind` and returns it. Run by hand, returns an
    /// empty message at once. Exits the program if the grader goes away or says something else.
    pub fn wait_for(&self, kind: &str) -> Message {
        let Some(fd) = &self.fd else {
            return Message {
                kind: kind.to_string(),
                fields: Vec::new(),
            };
        };
        let mut buf = vec![0u8; MAX_MESSAGE];
        loop {
            match recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(0) => {
                    eprintln!("the grader closed the control channel while we waited for {kind}");
                    std::process::exit(3);
                }
                Ok(n) => {
                    let message = Message::decode(&buf[..n]);
                    if message.kind != kind {
                        eprintln!(
                            "the grader said {} while we waited for {kind}",
                            message.kind
                        );
                        std::process::exit(3);
                    }
                    return message;
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    eprintln!("reading the control channel failed: {e}");
                    std::process::exit(3);
                }
            }
        }
    }

    /// The control socket, so that a check can see it is not one of the lab's own descriptors.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(|fd| {
            use std::os::fd::AsFd;
            fd.as_fd()
        })
    }
}

fn send_raw(fd: RawFd, bytes: &[u8]) {
    loop {
        match send(fd, bytes, MsgFlags::MSG_NOSIGNAL) {
            Err(nix::errno::Errno::EINTR) => continue,
            // The grader is gone or the socket is closed: nobody to tell.
            _ => return,
        }
    }
}

/// Reports panics in one line: to the grader (if any) and to stderr, without a backtrace.
fn install_panic_hook(program: &'static str) {
    std::panic::set_hook(Box::new(move |info| {
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".to_string());
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let kind = if payload.starts_with("not yet implemented")
            || payload.starts_with("not implemented")
        {
            NOT_IMPLEMENTED
        } else {
            PANICKED
        };
        eprintln!("{program}: {kind} at {location}: {payload}");
        let raw = CONTROL_RAW_FD.load(Ordering::SeqCst);
        if raw >= 0 {
            let fields = [
                ("pid", std::process::id().to_string()),
                ("location", location),
                ("message", payload),
            ];
            send_raw(raw, &Message::encode(kind, &fields));
        }
    }));
}

/// Installs a handler for `signal` that does nothing, without `SA_RESTART`: a blocking system
/// call that the signal interrupts then fails with `EINTR` or returns a short count, as it can
/// in any real program. The handler survives `fork()`.
pub fn install_noop_handler(signal: Signal) -> nix::Result<()> {
    extern "C" fn noop(_: nix::libc::c_int) {}
    let action = SigAction::new(SigHandler::Handler(noop), SaFlags::empty(), SigSet::empty());
    // SAFETY: the handler is async-signal-safe: it does nothing.
    unsafe { sigaction(signal, &action) }.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_round_trips_and_flattens_newlines() {
        let bytes = Message::encode(
            "done",
            &[("error", "broken\npipe".into()), ("n", "3".into())],
        );
        let message = Message::decode(&bytes);
        assert_eq!(message.kind, "done");
        assert_eq!(message.get("error"), Some("broken pipe"));
        assert_eq!(message.get("n"), Some("3"));
        assert_eq!(message.get("missing"), None);
    }

    #[test]
    fn oversized_message_is_cut_not_rejected() {
        let bytes = Message::encode("x", &[("v", "a".repeat(10_000))]);
        assert_eq!(bytes.len(), MAX_MESSAGE);
        assert_eq!(Message::decode(&bytes).kind, "x");
    }
}
