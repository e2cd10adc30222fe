//! What a grader run hands out and starts, written down as it goes, so that `cargo grade clean`
//! can remove what a run that died left behind.
//!
//! Every name is `ipclabs-<grader pid in hex>-<n>-<what>`. A run keeps its list in
//! `$TMPDIR/ipc-labs-ledgers-<uid>/<pid>-<n>` (a directory of the user's own, mode 700) and
//! deletes it when it finishes normally. One line per entry:
//!
//! ```text
//! /ipclabs-1f2a-3-queue              a POSIX name handed out
//! key 0x5102e6d1                     a SysV key declared
//! group 48211 1234567 1000           a program started: its process group, the start time of
//!                                    its leader (clock ticks since boot) and its uid
//! ```

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::audit::{self, IpcObject};

/// The prefix of every IPC name the grader hands out.
pub const PREFIX: &str = "ipclabs-";

pub struct Ledger {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

/// Tags and ledgers are numbered process-wide: several runs in one process (the test harness)
/// must not hand out the same name.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The directory of this user's ledgers.
pub fn ledger_dir() -> PathBuf {
    std::env::temp_dir().join(format!("ipc-labs-ledgers-{}", nix::unistd::getuid()))
}

/// Creates `dir` for this user alone (mode 700), or checks that it is already that: a directory
/// another user made first would leave this user's files unwritten, or readable by others.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(dir)?;
    let me = nix::unistd::getuid().as_raw();
    if !meta.is_dir() || meta.uid() != me {
        return Err(std::io::Error::other(format!(
            "{} exists but is not a directory of user {me}",
            dir.display()
        )));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

impl Ledger {
    /// Starts this process's ledger; an error says where it could not be written.
    pub fn open() -> Result<Ledger, String> {
        let dir = ledger_dir();
        let fail = |e: std::io::Error| format!("cannot write the ledger in {}: {e}", dir.display());
        private_dir(&dir).map_err(fail)?;
        let instance = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = dir.join(format!("{}-{instance}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(fail)?;
        Ok(Ledger {
            path,
            file: Mutex::new(file),
        })
    }

    /// A tag no other check of any run on this machine uses.
    pub fn new_tag(&self) -> String {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        format!("{PREFIX}{:x}-{n}", std::process::id())
    }

    /// Writes down a handed-out name, a key (`key 0x...`) or a group (`group ...`).
    pub fn record(&self, entry: &str) {
        let mut file = self.file.lock().expect("ledger lock");
        if let Err(e) = writeln!(file, "{entry}") {
            // The run goes on; what `clean` could not learn is said now, not never.
            eprintln!(
                "cargo grade: could not write to the ledger {}: {e}; if this run dies, \
                 `cargo grade clean` will not know about {entry}",
                self.path.display()
            );
        }
    }

    /// Writes down a started program: its process group (it leads one), so that `clean` can
    /// end what is left of it.
    pub fn record_group(&self, leader: i32) {
        if let Some((start, uid)) = start_and_uid(leader) {
            self.record(&format!("group {leader} {start} {uid}"));
        }
    }

    /// Removes the objects named after `tag` (see [`Ledger::new_tag`]): what a check that
    /// never returned made, since it cannot clean up after itself. The names under `/dev/shm`,
    /// and the message queues among the names the ledger lists. Returns what was removed.
    pub fn remove_tagged(&self, tag: &str) -> Vec<String> {
        let ours = |name: &str| {
            let name = name.trim_start_matches('/');
            let spelled = from_blanks(name);
            spelled
                .as_deref()
                .unwrap_or(name)
                .strip_prefix(tag)
                .is_some_and(|rest| rest.starts_with('-'))
        };
        let mut removed = Vec::new();
        for object in audit::snapshot() {
            if object.name().is_some_and(ours) && object.remove().is_ok() {
                removed.push(object.to_string());
            }
        }
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        for name in text.lines().filter(|l| l.starts_with('/') && ours(l)) {
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
        removed
    }

    /// The run is over and cleaned up after: the ledger goes.
    pub fn close(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A process's start time (clock ticks since boot) and its uid.
fn start_and_uid(pid: i32) -> Option<(u64, u32)> {
    let process = procfs::process::Process::new(pid).ok()?;
    Some((process.stat().ok()?.starttime, process.uid().ok()?))
}

fn pid_alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// `text` spelled in whitespace: each byte's bits, high first, a tab for 1 and a space for 0.
pub fn in_blanks(text: &str) -> String {
    text.bytes()
        .flat_map(|byte| (0..8).rev().map(move |bit| byte >> bit & 1))
        .map(|bit| if bit == 1 { '\t' } else { ' ' })
        .collect()
}

/// What [`in_blanks`] spelled, if `blanks` is such a spelling.
fn from_blanks(blanks: &str) -> Option<String> {
    if blanks.is_empty() || !blanks.len().is_multiple_of(8) {
        return None;
    }
    let bits = blanks.bytes().map(|b| match b {
        b'\t' => Some(1u8),
        b' ' => Some(0),
        _ => None,
    });
    let bits: Option<Vec<u8>> = bits.collect();
    let bytes = bits?
        .chunks(8)
        .map(|byte| byte.iter().fold(0, |acc, bit| acc << 1 | bit))
        .collect();
    String::from_utf8(bytes).ok()
}

/// The grader pid inside a handed-out name, if it is one (a name of blanks: the name they spell).
fn grader_pid(name: &str) -> Option<i32> {
    let name = name.trim_start_matches('/');
    let spelled = from_blanks(name);
    let rest = spelled.as_deref().unwrap_or(name).strip_prefix(PREFIX)?;
    i32::from_str_radix(rest.split('-').next()?, 16).ok()
}

/// The grader pid of a ledger file, named `<pid>-<n>`.
fn ledger_pid(file_name: &str) -> Option<i32> {
    file_name.split_once('-')?.0.parse().ok()
}

/// Removes what grader runs that are no longer running left behind: their processes (those
/// still in the process groups of the programs they started), every object whose name they
/// handed out or whose key they declared, and their ledgers. Returns what was done.
pub fn clean() -> Vec<String> {
    let mut done = Vec::new();
    if let Ok(entries) = std::fs::read_dir(ledger_dir()) {
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(ledger_pid) else {
                continue;
            };
            if pid_alive(pid) {
                continue;
            }
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            done.extend(end_groups(&text));
            let keys: Vec<i32> = text
                .lines()
                .filter_map(|l| l.strip_prefix("key 0x"))
                .filter_map(|hex| u32::from_str_radix(hex, 16).ok())
                .map(|key| key as i32)
                .collect();
            for object in audit::snapshot() {
                if object.key().is_some_and(|key| keys.contains(&key)) && object.remove().is_ok() {
                    done.push(format!("removed {object}"));
                }
            }
            for name in text.lines().filter(|l| l.starts_with('/')) {
                // Message queues cannot be listed where the mqueue file system is not mounted.
                if audit::message_queue_exists(name) {
                    let queue = IpcObject::MessageQueue {
                        name: name.trim_start_matches('/').to_string(),
                    };
                    if queue.remove().is_ok() {
                        done.push(format!("removed {queue}"));
                    }
                }
            }
            if std::fs::remove_file(entry.path()).is_ok() {
                done.push(format!("removed the ledger {}", entry.path().display()));
            }
        }
    }
    let stale = |name: &str| grader_pid(name).is_some_and(|pid| !pid_alive(pid));
    for object in audit::snapshot() {
        if object.name().is_some_and(stale) && object.remove().is_ok() {
            done.push(format!("removed {object}"));
        }
    }
    done
}

/// Kills the processes left in the groups a ledger lists: same uid, and started no earlier than
/// the group's leader (a group id is not reused while a member lives, and the start time keeps
/// a later group that took the number, once all were gone, out of reach).
fn end_groups(ledger: &str) -> Vec<String> {
    let groups: Vec<(i32, u64, u32)> = ledger
        .lines()
        .filter_map(|l| {
            let mut words = l.strip_prefix("group ")?.split_whitespace();
            Some((
                words.next()?.parse().ok()?,
                words.next()?.parse().ok()?,
                words.next()?.parse().ok()?,
            ))
        })
        .collect();
    let mut ended = Vec::new();
    let mut killed = Vec::new();
    if groups.is_empty() {
        return ended;
    }
    for row in super::inspect::process_table() {
        let Some(&(group, start, uid)) = groups.iter().find(|(g, _, _)| *g == row.pgrp) else {
            continue;
        };
        let Some((started, owner)) = start_and_uid(row.pid) else {
            continue;
        };
        if owner == uid && started >= start && kill(Pid::from_raw(row.pid), Signal::SIGKILL).is_ok()
        {
            killed.push(row.pid);
            ended.push(format!(
                "ended process {} (left in group {group} by a grader run that died)",
                row.pid
            ));
        }
    }
    // SIGKILL takes effect when the process next runs, which on a busy machine is not at once:
    // "ended" is said of a process that is gone, or a zombie left for its parent to reap.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < until
        && killed.iter().any(|&pid| {
            super::inspect::view(pid).is_some_and(|view| view.state != 'Z' && view.state != 'X')
        })
    {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    ended
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_abandoned_checks_objects_are_removed_by_its_tag_and_no_others() {
        let ledger = Ledger::open().expect("a ledger");
        let tag = ledger.new_tag();
        let next = ledger.new_tag();
        let own = format!("/{tag}-table");
        let blank = format!("/{}", in_blanks(&format!("{tag}-blank")));
        let other = format!("/{next}-table");
        // A longer tag that starts with this one (tag 1 and tag 10) is another check's.
        let longer = format!("/{tag}0-table");
        let make = |name: &str| {
            let fd = nix::sys::mman::shm_open(
                name,
                nix::fcntl::OFlag::O_CREAT | nix::fcntl::OFlag::O_RDWR,
                nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
            )
            .expect("shm_open");
            drop(fd);
        };
        for name in [&own, &blank, &other, &longer] {
            make(name);
        }
        let removed = ledger.remove_tagged(&tag);
        let exists = |name: &str| Path::new("/dev/shm").join(&name[1..]).exists();
        let left = (
            exists(&own),
            exists(&blank),
            exists(&other),
            exists(&longer),
        );
        for name in [&other, &longer, &own, &blank] {
            let _ = nix::sys::mman::shm_unlink(name.as_str());
        }
        ledger.close();
        assert_eq!(left, (false, false, true, true), "{removed:?}");
        assert_eq!(removed.len(), 2, "{removed:?}");
    }

    #[test]
    fn grader_pids_are_read_back_from_names_and_ledgers() {
        assert_eq!(grader_pid("/ipclabs-1f-3-queue"), Some(0x1f));
        assert_eq!(grader_pid("sem.other"), None);
        assert_eq!(
            grader_pid(&format!("/{}", in_blanks("ipclabs-2a-1-b"))),
            Some(0x2a)
        );
        assert_eq!(ledger_pid("4242-7"), Some(4242));
        assert_eq!(ledger_pid("notes"), None);
    }
}
