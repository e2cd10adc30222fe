//! Files the programs of a check create where the check gave them no path: in every lab the
//! data must travel through the lab's IPC mechanism, so a file of the program's own (a copy of
//! the data, an id written for the other side) is a way around it.
//!
//! The check's directory is the programs' working directory and their `TMPDIR`; only the check
//! and its programs write there, so whatever appears in it under a name the check did not give
//! is the programs'. The shared places a program could use instead (the temporary directories,
//! `/dev/shm`, the home directory) are watched too, and what appears there is the check's when
//! one of its processes holds it open or mapped when the grader looks, when a process of the
//! check opened it (seen with fanotify, which needs root: a file written and closed at once is
//! held by nobody when the grader looks), or when it belongs to the user the programs run as.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use nix::fcntl::{AT_FDCWD, OFlag};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::fanotify::{EventFFlags, Fanotify, MarkFlags, MaskFlags};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use super::inspect;

/// A file that appeared while the check ran.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Created {
    pub path: PathBuf,
    /// The process of the check that held it open or mapped, when one was found.
    pub by: Option<i32>,
}

impl std::fmt::Display for Created {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.by {
            Some(pid) => write!(f, "{} (by pid {pid})", self.path.display()),
            None => write!(f, "{}", self.path.display()),
        }
    }
}

/// Watches for files created while a check runs.
pub struct FileWatch {
    dir: PathBuf,
    stop: Option<Arc<EventFd>>,
    thread: Option<JoinHandle<BTreeSet<Created>>>,
}

/// The shared places a program could leave a file in, besides its own directory.
fn shared_places() -> Vec<PathBuf> {
    let mut places: Vec<PathBuf> = vec![
        std::env::temp_dir(),
        "/tmp".into(),
        "/var/tmp".into(),
        "/dev/shm".into(),
    ];
    if let Some(home) = std::env::var_os("HOME").map(PathBuf::from)
        && home != Path::new("/")
    {
        places.push(home);
    }
    let mut seen = BTreeSet::new();
    places.retain(|p| p.is_dir() && seen.insert(p.canonicalize().unwrap_or(p.clone())));
    places
}

const EVENTS: AddWatchFlags = AddWatchFlags::IN_CREATE.union(AddWatchFlags::IN_MOVED_TO);

impl FileWatch {
    /// Starts watching the check's directory `dir` and the shared places. `roots` are the
    /// programs the check starts (filled as it starts them); `owner` is the user they run as,
    /// when it is not the grader's; `anothers` tells a file of that user that belongs to
    /// another check running alongside, asked when the file appears.
    pub fn start(
        dir: &Path,
        roots: Arc<Mutex<Vec<i32>>>,
        owner: Option<u32>,
        anothers: impl Fn(&Path) -> bool + Send + 'static,
    ) -> FileWatch {
        let stop = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .ok()
            .map(Arc::new);
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok();
        let mut watches: Vec<(WatchDescriptor, PathBuf, bool)> = Vec::new();
        if let Some(inotify) = &inotify {
            if let Ok(wd) = inotify.add_watch(dir, EVENTS) {
                watches.push((wd, dir.to_path_buf(), true));
            }
            for place in shared_places() {
                if place.starts_with(dir) {
                    continue;
                }
                if let Ok(wd) = inotify.add_watch(&place, EVENTS) {
                    watches.push((wd, place, false));
                }
            }
        }
        let openings = OpenWatch::get().map(|group| group.subscribe(roots.clone()));
        let thread = inotify.zip(stop.clone()).map(|(inotify, stop)| {
            std::thread::spawn(move || {
                let owned = |path: &Path| {
                    owner.is_some()
                        && owner == owner_of(path)
                        && !made_by_the_grader(path)
                        && !anothers(path)
                };
                watch(inotify, openings, watches, &stop, &roots, owned)
            })
        });
        FileWatch {
            dir: dir.to_path_buf(),
            stop,
            thread,
        }
    }

    /// Stops watching; returns what appeared, with whatever is in the check's directory now.
    pub fn finish(mut self) -> Vec<Created> {
        self.wake();
        let mut created = self
            .thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        for path in files_under(&self.dir) {
            if !created.iter().any(|c| c.path == path) {
                created.insert(Created { path, by: None });
            }
        }
        created.into_iter().collect()
    }

    /// Tells the watcher to read what is queued and stop.
    fn wake(&self) {
        if let Some(stop) = &self.stop {
            let _ = stop.write(1);
        }
    }
}

impl Drop for FileWatch {
    /// A check abandoned on the way (its own code hung) stops its watcher too.
    fn drop(&mut self) {
        self.wake();
    }
}

/// Who opened which file of the shared places, for one check: the paths opened by a process
/// of the check's tree, with its pid.
struct Openings {
    /// The programs the check started.
    roots: Arc<Mutex<Vec<i32>>>,
    /// Every pid seen in the check's tree, so that a process killed since still counts.
    members: BTreeSet<i32>,
    opened: BTreeMap<PathBuf, i32>,
}

/// The fanotify group that reports who opens the files of the shared places, one for the
/// grader's whole run when it may have one (root): marking a directory walks its cached
/// entries, which in a busy `/tmp` takes tens of milliseconds, too long to pay for each check.
struct OpenWatch {
    group: Fanotify,
    /// The checks watching now. Held while events are read and handed out, so that once a
    /// check has taken it, every open made before was handed out.
    checks: Mutex<Vec<std::sync::Weak<Mutex<Openings>>>>,
}

impl OpenWatch {
    /// The grader's group, made (and read by a thread of its own) on first use.
    fn get() -> Option<&'static OpenWatch> {
        static GROUP: OnceLock<Option<OpenWatch>> = OnceLock::new();
        GROUP
            .get_or_init(|| {
                let group = OpenWatch {
                    group: open_group()?,
                    checks: Mutex::new(Vec::new()),
                };
                Some(group)
            })
            .as_ref()
            .inspect(|&group| {
                static READER: std::sync::Once = std::sync::Once::new();
                READER.call_once(|| {
                    std::thread::spawn(move || group.read_for_ever());
                });
            })
    }

    fn subscribe(&self, roots: Arc<Mutex<Vec<i32>>>) -> Arc<Mutex<Openings>> {
        let openings = Arc::new(Mutex::new(Openings {
            roots,
            members: BTreeSet::new(),
            opened: BTreeMap::new(),
        }));
        let mut checks = self.checks.lock().expect("checks lock");
        checks.retain(|check| check.strong_count() > 0);
        checks.push(Arc::downgrade(&openings));
        openings
    }

    fn read_for_ever(&self) {
        loop {
            let mut fds = [PollFd::new(self.group.as_fd(), PollFlags::POLLIN)];
            if poll(&mut fds, PollTimeout::NONE).is_ok() {
                self.read();
            }
        }
    }

    /// Reads until no event is left, handing each open to the check whose tree made it.
    fn read(&self) {
        let checks = self.checks.lock().expect("checks lock");
        let checks: Vec<Arc<Mutex<Openings>>> =
            checks.iter().filter_map(std::sync::Weak::upgrade).collect();
        while let Ok(events) = self.group.read_events() {
            if events.is_empty() {
                break;
            }
            let mut refreshed = vec![false; checks.len()];
            for event in events {
                let Some(fd) = event.fd() else { continue };
                let pid = event.pid();
                let mut path = None;
                for (check, refreshed) in checks.iter().zip(&mut refreshed) {
                    let mut check = check.lock().expect("openings lock");
                    if !check.members.contains(&pid) && !*refreshed {
                        let roots = check.roots.lock().expect("roots lock").clone();
                        let tree = inspect::tree(&roots, &roots).into_iter().map(|r| r.pid);
                        check.members.extend(tree);
                        // A program that has ended is no longer in the tree, but was the check's.
                        check.members.extend(roots);
                        *refreshed = true;
                    }
                    // A member that has ended may have left its pid to a program of another's.
                    if !check.members.contains(&pid) || inspect::is_anothers(pid) {
                        continue;
                    }
                    let path = path.get_or_insert_with(|| {
                        let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
                        std::fs::read_link(link).ok()
                    });
                    if let Some(path) = path {
                        check.opened.entry(path.clone()).or_insert(pid);
                    }
                }
            }
        }
    }
}

/// A fanotify group on the shared places, when the grader may have one (root).
fn open_group() -> Option<Fanotify> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let group = Fanotify::init(
        nix::sys::fanotify::InitFlags::FAN_CLASS_NOTIF
            | nix::sys::fanotify::InitFlags::FAN_CLOEXEC
            | nix::sys::fanotify::InitFlags::FAN_NONBLOCK,
        // Non-blocking: the grader opens each file reported, and a FIFO would block an open.
        EventFFlags::from_bits_truncate(
            (OFlag::O_RDONLY | OFlag::O_LARGEFILE | OFlag::O_NONBLOCK).bits() as u32,
        ),
    )
    .ok()?;
    let mask = MaskFlags::FAN_OPEN | MaskFlags::FAN_EVENT_ON_CHILD;
    for place in shared_places() {
        let _ = group.mark(
            MarkFlags::FAN_MARK_ADD,
            mask,
            AT_FDCWD,
            Some(place.as_path()),
        );
    }
    Some(group)
}

fn watch(
    inotify: Inotify,
    openings: Option<Arc<Mutex<Openings>>>,
    mut watches: Vec<(WatchDescriptor, PathBuf, bool)>,
    stop: &EventFd,
    roots: &Mutex<Vec<i32>>,
    owned: impl Fn(&Path) -> bool,
) -> BTreeSet<Created> {
    let mut created = BTreeSet::new();
    // Files that appeared in the shared places with no process of the check holding them, and
    // the files of the shared places that a process of the check opened.
    let mut unclaimed: BTreeSet<PathBuf> = BTreeSet::new();
    let mut stopping = false;
    loop {
        // Once stopped, what is queued is still read: the last files a program made count.
        let mut fds = [
            PollFd::new(inotify.as_fd(), PollFlags::POLLIN),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
        ];
        let wait = if stopping {
            PollTimeout::ZERO
        } else {
            PollTimeout::NONE
        };
        let ready = poll(&mut fds, wait);
        if fds[1].any().unwrap_or(false) {
            stopping = true;
        }
        if !matches!(fds[0].any(), Some(true)) {
            if stopping && ready.is_ok() {
                break;
            }
            continue;
        }
        while let Ok(events) = inotify.read_events() {
            if events.is_empty() {
                break;
            }
            for event in events {
                let Some((_, dir, private)) = watches.iter().find(|(wd, _, _)| *wd == event.wd)
                else {
                    continue;
                };
                let Some(name) = event.name else { continue };
                let (path, private) = (dir.join(name), *private);
                if private {
                    if event.mask.contains(AddWatchFlags::IN_ISDIR)
                        && let Ok(wd) = inotify.add_watch(&path, EVENTS)
                    {
                        watches.push((wd, path.clone(), true));
                    }
                    created.insert(Created { path, by: None });
                    continue;
                }
                let roots = roots.lock().expect("roots lock").clone();
                if let Some(by) = holder(&roots, &path) {
                    created.insert(Created { path, by: Some(by) });
                } else if owned(&path) {
                    created.insert(Created { path, by: None });
                } else {
                    unclaimed.insert(path);
                }
            }
        }
    }
    let opened = match (openings, OpenWatch::get()) {
        (Some(openings), Some(group)) => {
            group.read();
            std::mem::take(&mut openings.lock().expect("openings lock").opened)
        }
        _ => BTreeMap::new(),
    };
    for path in unclaimed {
        if let Some(&by) = opened.get(&path) {
            created.insert(Created { path, by: Some(by) });
        }
    }
    // Closing an inotify instance waits for the kernel to retire its watches, tens of
    // milliseconds: the check need not wait for it.
    std::thread::spawn(move || drop(inotify));
    created
}

/// Whether the grader made `path` for a check (its directory, given to the programs' user, or
/// the programs staged for that user): with `--jobs`, other checks make them while this one
/// runs.
fn made_by_the_grader(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("ipc-labs-"))
}

/// The process of the check's tree that holds `path` open or mapped.
fn holder(roots: &[i32], path: &Path) -> Option<i32> {
    let wanted = path.to_string_lossy();
    let forks = inspect::grader_forks();
    inspect::tree(roots, roots).into_iter().find_map(|row| {
        if forks(row.pid) {
            return None;
        }
        let open = std::fs::read_dir(format!("/proc/{}/fd", row.pid))
            .ok()?
            .flatten()
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .any(|target| target == path);
        let mapped = std::fs::read_to_string(format!("/proc/{}/maps", row.pid))
            .is_ok_and(|maps| maps.lines().any(|l| l.ends_with(wanted.as_ref())));
        (open || mapped).then_some(row.pid)
    })
}

fn owner_of(path: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).ok().map(|m| m.uid())
}

/// Every file and directory under `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path.clone());
            }
            found.push(path);
        }
    }
    found
}

/// Removes the files in `created` that lie outside the check's directory `dir` (which is
/// removed with the check): a program's own file in a shared place would otherwise stay there
/// after the check. Returns what was removed.
pub fn remove_outside(created: &[Created], dir: &Path) -> Vec<PathBuf> {
    created
        .iter()
        .filter(|file| !file.path.starts_with(dir))
        .filter(|file| {
            let removed = match std::fs::symlink_metadata(&file.path) {
                Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&file.path),
                Ok(_) => std::fs::remove_file(&file.path),
                Err(_) => return false,
            };
            removed.is_ok()
        })
        .map(|file| file.path.clone())
        .collect()
}

/// Whether glibc made `path` for a moment: `sem_open()` builds a new semaphore in a file
/// `/dev/shm/sem.XXXXXX` and then links it to its name.
pub fn glibc_temporary(path: &Path) -> bool {
    path.parent() == Some(Path::new("/dev/shm"))
        && path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(super::audit::glibc_temporary_name)
        && !path.exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_of_the_check_are_seen_with_who_made_them() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let shared =
            std::env::temp_dir().join(format!("ipc-labs-files-test-{}", std::process::id()));
        let roots = Arc::new(Mutex::new(Vec::new()));
        let watch = FileWatch::start(dir.path(), roots.clone(), None, |_| false);
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "touch own.txt; sleep 0.5 > {}; :",
                shared.display()
            ))
            .current_dir(dir.path())
            .spawn()
            .expect("sh starts");
        roots.lock().unwrap().push(child.id() as i32);
        child.wait().expect("sh ends");
        let created = watch.finish();
        let _ = std::fs::remove_file(&shared);
        assert!(
            created.iter().any(|c| c.path == dir.path().join("own.txt")),
            "{created:?}"
        );
        let made = created.iter().find(|c| c.path == shared);
        assert!(made.is_some_and(|c| c.by.is_some()), "{created:?}");
    }

    #[test]
    fn a_file_written_and_closed_at_once_is_the_checks_when_root_saw_who_opened_it() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let shared =
            std::env::temp_dir().join(format!("ipc-labs-files-quick-{}", std::process::id()));
        let roots = Arc::new(Mutex::new(Vec::new()));
        let watch = FileWatch::start(dir.path(), roots.clone(), None, |_| false);
        // The shell waits for its parent to list it before it writes.
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("read go; echo x > {}", shared.display()))
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("sh starts");
        roots.lock().unwrap().push(child.id() as i32);
        drop(child.stdin.take());
        child.wait().expect("sh ends");
        let created = watch.finish();
        let _ = std::fs::remove_file(&shared);
        let made = created.iter().find(|c| c.path == shared);
        if nix::unistd::geteuid().is_root() {
            assert!(made.is_some_and(|c| c.by.is_some()), "{created:?}");
        } else {
            // Without fanotify nobody held it when the grader looked: not claimed.
            assert!(made.is_none(), "{created:?}");
        }
    }

    #[test]
    fn files_left_outside_the_check_directory_are_removed_and_its_own_are_not() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let shared = tempfile::tempdir().expect("another temp dir");
        let inside = dir.path().join("own.txt");
        let outside_file = shared.path().join(".cache-1");
        let outside_dir = shared.path().join("work");
        std::fs::write(&inside, "x").unwrap();
        std::fs::write(&outside_file, "x").unwrap();
        std::fs::create_dir(&outside_dir).unwrap();
        std::fs::write(outside_dir.join("part"), "x").unwrap();
        let created: Vec<Created> = [&inside, &outside_file, &outside_dir]
            .into_iter()
            .map(|path| Created {
                path: path.clone(),
                by: None,
            })
            .collect();
        let removed = remove_outside(&created, dir.path());
        assert_eq!(removed, [outside_file.clone(), outside_dir.clone()]);
        assert!(inside.exists());
        assert!(!outside_file.exists() && !outside_dir.exists());
    }
}
