//! The names a grader run hands out, written down as it goes, so that `cargo grade clean` can
//! remove what a crashed run left behind.
//!
//! Every name is `ipclabs-<grader pid in hex>-<n>-<what>`; a run keeps its list in
//! `$TMPDIR/ipc-labs-ledgers/<pid>-<n>` and deletes it when it finishes normally.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::audit::{self, IpcObject};

/// The prefix of every IPC name the grader hands out.
pub const PREFIX: &str = "ipclabs-";

pub struct Ledger {
    path: PathBuf,
    file: Mutex<Option<std::fs::File>>,
}

/// Tags and ledgers are numbered process-wide: several runs in one process (the test harness)
/// must not hand out the same name.
static COUNTER: AtomicU64 = AtomicU64::new(0);

fn ledger_dir() -> PathBuf {
    std::env::temp_dir().join("ipc-labs-ledgers")
}

impl Ledger {
    /// Starts this process's ledger. Without a writable temp dir the run still works; only
    /// `clean` will have less to go on.
    pub fn open() -> Ledger {
        let dir = ledger_dir();
        let _ = std::fs::create_dir_all(&dir);
        let instance = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = dir.join(format!("{}-{instance}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .ok();
        Ledger {
            path,
            file: Mutex::new(file),
        }
    }

    /// A tag no other check of any run on this machine uses.
    pub fn new_tag(&self) -> String {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        format!("{PREFIX}{:x}-{n}", std::process::id())
    }

    /// Writes down a handed-out name.
    pub fn record(&self, name: &str) {
        if let Some(file) = self.file.lock().expect("ledger lock").as_mut() {
            let _ = writeln!(file, "{name}");
        }
    }

    /// The run is over and cleaned up after: the ledger goes.
    pub fn close(&self) {
        self.file.lock().expect("ledger lock").take();
        let _ = std::fs::remove_file(&self.path);
    }
}

fn pid_alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The grader pid inside a handed-out name, if it is one.
fn grader_pid(name: &str) -> Option<i32> {
    let rest = name.trim_start_matches('/').strip_prefix(PREFIX)?;
    i32::from_str_radix(rest.split('-').next()?, 16).ok()
}

/// Removes what grader runs that are no longer running left behind: every object whose name
/// the grader handed out, and the ledgers. Returns what was removed.
pub fn clean() -> Vec<String> {
    let mut removed = Vec::new();
    let stale = |name: &str| grader_pid(name).is_some_and(|pid| !pid_alive(pid));
    for object in audit::snapshot() {
        if object.name().is_some_and(stale) && object.remove().is_ok() {
            removed.push(object.to_string());
        }
    }
    if let Ok(entries) = std::fs::read_dir(ledger_dir()) {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            if pid_alive(pid) {
                continue;
            }
            let names = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let keys: Vec<i32> = names
                .lines()
                .filter_map(|l| l.strip_prefix("key 0x"))
                .filter_map(|hex| u32::from_str_radix(hex, 16).ok())
                .map(|key| key as i32)
                .collect();
            for object in audit::snapshot() {
                if object.key().is_some_and(|key| keys.contains(&key)) && object.remove().is_ok() {
                    removed.push(object.to_string());
                }
            }
            for name in names.lines().filter(|l| l.starts_with('/')) {
                // Message queues cannot be listed where the mqueue file system is not mounted.
                if audit::message_queue_exists(name) {
                    let queue = IpcObject::MessageQueue {
                        name: name.trim_start_matches('/').to_string(),
                    };
                    if queue.remove().is_ok() {
                        removed.push(queue.to_string());
                    }
                }
            }
            let _ = std::fs::remove_file(entry.path());
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grader_pid_is_read_back_from_a_name() {
        assert_eq!(grader_pid("/ipclabs-1f-3-queue"), Some(0x1f));
        assert_eq!(grader_pid("sem.other"), None);
    }
}
