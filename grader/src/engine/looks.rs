//! Whether a traced program looked to see if it is traced: an `openat()` of its own
//! `/proc/self/status` (whose `TracerPid` says so), or a `ptrace(PTRACE_TRACEME)` (which fails
//! under a tracer). A program that looks may do one thing when graded and another when not, and
//! nothing in a lab needs either call, so the check that traced it fails.
//!
//! The tracer (a forked child of the grader, see [`super::tracer`]) sees every call the program
//! makes while it waits for the one it wants; at each, [`note`] writes what it saw to a file of
//! the program's process group in the user's ledger directory. The check's end reads it with
//! [`take`]. A file of that name left by an earlier program of the same pid is removed when
//! the program starts ([`forget`]).

use std::ffi::CString;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, Ordering};

use super::process::decimal;

/// The directory of the notes, made before any tracer is forked (the child only reads it).
static DIR: OnceLock<Option<CString>> = OnceLock::new();

/// In a tracer child: the process group it traces and the program's pid (unset in the grader).
static GROUP: AtomicI32 = AtomicI32::new(0);
static PROGRAM: AtomicI32 = AtomicI32::new(0);

fn dir() -> Option<&'static CString> {
    DIR.get_or_init(|| {
        let dir = super::ledger::ledger_dir();
        super::ledger::private_dir(&dir).ok()?;
        CString::new(dir.into_os_string().into_encoded_bytes()).ok()
    })
    .as_ref()
}

fn path(group: i32) -> Option<PathBuf> {
    let dir = dir()?;
    Some(PathBuf::from(dir.to_str().ok()?).join(format!("looked-{group}")))
}

/// Makes the directory ready; called by the grader before it forks a tracer.
pub fn prepare() {
    let _ = dir();
}

/// Removes a note left for `group` by an earlier program with the same number.
pub fn forget(group: i32) {
    if let Some(path) = path(group) {
        let _ = std::fs::remove_file(path);
    }
}

/// What the program of `group` was seen to do to learn whether it is traced, one call a line;
/// the note is removed.
pub fn take(group: i32) -> Option<String> {
    let path = path(group)?;
    let text = std::fs::read_to_string(&path).ok()?;
    let _ = std::fs::remove_file(&path);
    (!text.is_empty()).then_some(text)
}

/// In the tracer child, before it traces: whom it traces.
pub fn tracing(group: i32, program: i32) {
    GROUP.store(group, Ordering::Relaxed);
    PROGRAM.store(program, Ordering::Relaxed);
}

/// In the tracer child, at a call stop of thread `tid`: notes the call if it looks. Only system
/// calls and stack buffers: the child of a multi-threaded grader may not allocate.
///
/// # Safety
///
/// `tid` is a thread this process traces, stopped.
pub unsafe fn note(tid: i32) {
    // SAFETY: as for this function.
    let Some(info) = (unsafe { super::tracer::entry_info(tid) }) else {
        return;
    };
    let word = |at: usize| super::tracer::info_word(&info, at);
    let mut read = [0u8; 64];
    let (call, named): (&[u8], &[u8]) = match word(24) as i64 {
        libc::SYS_ptrace if word(32) == libc::PTRACE_TRACEME as u64 => {
            (b"ptrace(PTRACE_TRACEME)", b"")
        }
        number @ (libc::SYS_open | libc::SYS_openat | libc::SYS_openat2) => {
            let at = if number == libc::SYS_open { 32 } else { 40 };
            let Some(path) = string_at(tid, word(at), &mut read) else {
                return;
            };
            if !own_status(path, tid) {
                return;
            }
            (b"openat() of ", path)
        }
        _ => return,
    };
    let group = GROUP.load(Ordering::Relaxed);
    let Some(dir) = DIR.get().and_then(Option::as_ref) else {
        return;
    };
    let mut digits = [0u8; 20];
    let mut file = Bytes::<512>::new();
    file.push(dir.as_bytes());
    file.push(b"/looked-");
    file.push(decimal(group.unsigned_abs().into(), &mut digits));
    file.push(b"\0");
    let mut line = Bytes::<128>::new();
    line.push(call);
    line.push(named);
    line.push(b"\n");
    if !file.bytes[..file.len].ends_with(b"\0") {
        return;
    }
    // SAFETY: a NUL-terminated path in a live buffer; plain system calls on our own descriptor.
    unsafe {
        let fd = libc::open(
            file.bytes.as_ptr().cast(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | libc::O_CLOEXEC,
            0o600,
        );
        if fd >= 0 {
            libc::write(fd, line.bytes.as_ptr().cast(), line.len);
            libc::close(fd);
        }
    }
}

/// Bytes gathered on the stack, cut at the buffer's end.
struct Bytes<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> Bytes<N> {
    fn new() -> Self {
        Bytes {
            bytes: [0; N],
            len: 0,
        }
    }

    fn push(&mut self, more: &[u8]) {
        let end = (self.len + more.len()).min(N);
        self.bytes[self.len..end].copy_from_slice(&more[..end - self.len]);
        self.len = end;
    }
}

/// The NUL-terminated string at `addr` in `tid`'s memory, if it fits `into`; read no further
/// than its page at first, so that a string at a page's end is read.
fn string_at(tid: i32, addr: u64, into: &mut [u8; 64]) -> Option<&[u8]> {
    if addr == 0 {
        return None;
    }
    let first = (4096 - (addr % 4096) as usize).min(into.len());
    for (from, len) in [(0, first), (first, into.len() - first)] {
        if len == 0
            || !super::tracer::read_memory(tid, addr + from as u64, &mut into[from..from + len])
        {
            return None;
        }
        if let Some(end) = into[..from + len].iter().position(|&b| b == 0) {
            return Some(&into[..end]);
        }
    }
    None
}

/// Whether `path` is the status file of the traced program itself: `/proc/self/status`,
/// `/proc/thread-self/status`, `/proc/PID/status`, or a thread's under `task/`.
fn own_status(path: &[u8], tid: i32) -> bool {
    let Some(rest) = path.strip_prefix(b"/proc/") else {
        return false;
    };
    let mut digits = [0u8; 20];
    let mut tid_digits = [0u8; 20];
    let program = decimal(
        PROGRAM.load(Ordering::Relaxed).unsigned_abs().into(),
        &mut digits,
    );
    let thread = decimal(tid.unsigned_abs().into(), &mut tid_digits);
    let whose = [
        b"self".as_slice(),
        b"thread-self".as_slice(),
        program,
        thread,
    ];
    let Some(rest) = whose.iter().find_map(|who| {
        rest.strip_prefix(*who)
            .filter(|rest| rest.first() == Some(&b'/'))
    }) else {
        return false;
    };
    let rest = match rest.strip_prefix(b"/task/") {
        Some(task) => {
            let digits = task.iter().take_while(|b| b.is_ascii_digit()).count();
            if digits == 0 {
                return false;
            }
            &task[digits..]
        }
        None => rest,
    };
    rest == b"/status"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_files_of_the_program_itself_are_its_own() {
        PROGRAM.store(4242, Ordering::Relaxed);
        for own in [
            "/proc/self/status",
            "/proc/thread-self/status",
            "/proc/4242/status",
            "/proc/4243/status",
            "/proc/self/task/4243/status",
            "/proc/4242/task/4242/status",
        ] {
            assert!(own_status(own.as_bytes(), 4243), "{own}");
        }
        for other in [
            "/proc/self/stat",
            "/proc/1/status",
            "/proc/42420/status",
            "/proc/self/statusx",
            "/proc/selfish/status",
            "/proc/self/task//status",
            "/tmp/proc/self/status",
        ] {
            assert!(!own_status(other.as_bytes(), 4243), "{other}");
        }
    }
}
