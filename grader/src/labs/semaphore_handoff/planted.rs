//! The objects the grader plants under a check's names before the program runs: a semaphore at a given value, dated a day back, or a queue holding one
//! message, removed when dropped.

use std::ffi::CString;
use std::time::Duration;

use super::SIGNAL_SIZE;
use super::probe;
use crate::engine::Fail;

/// An object the grader made under one of the check's names before the program ran, removed
/// when dropped.
pub(super) struct Planted {
    mechanism: &'static str,
    name: String,
    /// A planted semaphore's value.
    value: u32,
    /// A planted semaphore's file: a process that maps it uses the grader's semaphore.
    pub(super) inode: Option<u64>,
}

/// The values a planted semaphore has: 0, as a semaphore the program makes itself starts (so
/// that only `O_EXCL` tells it from a new one: a look at its value after an open without
/// `O_EXCL` takes it for the program's own), or 3, so that a program that posts it or takes
/// from it shows. The message a planted queue holds: an object the program must leave as it
/// found it.
pub(super) const LIKE_NEW: u32 = 0;
pub(super) const PLANTED_VALUE: u32 = 3;
const PLANTED_MESSAGE: &[u8] = b"grader";
/// How old a planted semaphore's file is made: a day, older than any "left over from a crashed
/// run" a program may guess from a file's time.
const PLANTED_AGE: Duration = Duration::from_secs(24 * 3600);

impl Planted {
    /// A planted object; a semaphore at `value`.
    pub(super) fn with_value(
        mechanism: &'static str,
        name: &str,
        value: u32,
    ) -> Result<Planted, Fail> {
        let c_name = CString::new(name).map_err(|e| Fail::Grader(e.to_string()))?;
        let failed =
            |what: &str| Fail::Grader(format!("{what} {name}: {}", nix::errno::Errno::last()));
        if mechanism == "semaphores" {
            // SAFETY: a valid C string; mode and value are the variadic arguments O_CREAT reads.
            let sem = unsafe {
                libc::sem_open(
                    c_name.as_ptr(),
                    libc::O_CREAT | libc::O_EXCL,
                    0o600 as libc::c_uint,
                    value as libc::c_uint,
                )
            };
            if sem == libc::SEM_FAILED {
                return Err(failed("sem_open"));
            }
            // SAFETY: opened just above.
            unsafe { libc::sem_close(sem) };
            // Made long ago, as by a program that still runs: its age does not make it the
            // program's.
            let long_ago = std::time::SystemTime::now() - PLANTED_AGE;
            std::fs::File::options()
                .write(true)
                .open(probe::semaphore_file(name))
                .and_then(|file| {
                    file.set_times(
                        std::fs::FileTimes::new()
                            .set_accessed(long_ago)
                            .set_modified(long_ago),
                    )
                })
                .map_err(|e| Fail::Grader(format!("dating {name} back: {e}")))?;
        } else {
            // SAFETY: a zeroed mq_attr, then filled in.
            let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
            attr.mq_maxmsg = 1;
            attr.mq_msgsize = SIGNAL_SIZE as i64;
            // SAFETY: a valid C string and attributes; mode and attributes are what O_CREAT
            // reads.
            let mqd = unsafe {
                libc::mq_open(
                    c_name.as_ptr(),
                    libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                    0o600 as libc::mode_t,
                    &attr as *const libc::mq_attr,
                )
            };
            if mqd < 0 {
                return Err(failed("mq_open"));
            }
            // SAFETY: mqd is open; the message is a valid buffer.
            let sent = unsafe {
                libc::mq_send(
                    mqd,
                    PLANTED_MESSAGE.as_ptr().cast(),
                    PLANTED_MESSAGE.len(),
                    0,
                )
            };
            // SAFETY: opened above.
            unsafe { libc::mq_close(mqd) };
            if sent != 0 {
                return Err(failed("mq_send"));
            }
        }
        let inode = std::fs::metadata(probe::semaphore_file(name))
            .ok()
            .filter(|_| mechanism == "semaphores")
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m));
        Ok(Planted {
            mechanism,
            name: name.to_string(),
            value,
            inode,
        })
    }

    /// Whether it is still there as the grader made it; what became of it otherwise.
    pub(super) fn changed(&self) -> Option<String> {
        if self.mechanism == "semaphores" {
            match probe::semaphore_value(&self.name) {
                None => Some("was removed".into()),
                Some(value) if value == self.value => None,
                Some(value) => Some(format!("went from {} to {value}", self.value)),
            }
        } else {
            match probe::queue_attributes(&self.name) {
                None => Some("was removed".into()),
                Some(a) if a.messages == 1 => None,
                Some(a) => Some(format!("held {} messages instead of 1", a.messages)),
            }
        }
    }
}

impl Drop for Planted {
    fn drop(&mut self) {
        if self.mechanism == "semaphores" {
            let _ = std::fs::remove_file(probe::semaphore_file(&self.name));
        } else {
            let _ = nix::mqueue::mq_unlink(self.name.as_str());
        }
    }
}
