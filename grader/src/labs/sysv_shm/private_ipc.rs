//! An IPC namespace of the check's own, with limits the check chooses: the machine's `shmmax`
//! is far beyond any segment a machine can make, so a size at the limit and one past it can be
//! tried only under a lower one, which nobody should set on a shared machine.
//!
//! Namespaces belong to threads: the check's thread moves into a new IPC namespace, sets its
//! limits there, and the programs it starts from then on live in it (with their own
//! `/proc/sysvipc/shm` and `/proc/sys/kernel/shm*`), while the rest of the grader stays where it
//! was. When the thread moves back and the programs are gone, the kernel destroys the namespace
//! and every segment in it: nothing made there can be left behind. It takes `CAP_SYS_ADMIN`
//! (a grader run as root); elsewhere [`PrivateIpc::enter`] says so.

use std::fs::File;
use std::os::fd::AsRawFd;

use crate::engine::Fail;

/// The check's thread in an IPC namespace of its own, until dropped.
pub struct PrivateIpc {
    original: File,
}

impl PrivateIpc {
    /// Moves the calling thread into a new IPC namespace and sets `limits` there (the names of
    /// files under `/proc/sys/kernel/` and their values); `None` if the grader may not.
    pub fn enter(limits: &[(&str, u64)]) -> Result<Option<PrivateIpc>, Fail> {
        let original = File::open("/proc/thread-self/ns/ipc")
            .map_err(|e| Fail::Grader(format!("opening /proc/thread-self/ns/ipc: {e}")))?;
        // SAFETY: unshare takes no pointers; it affects the calling thread only.
        if unsafe { libc::unshare(libc::CLONE_NEWIPC) } != 0 {
            return Ok(None);
        }
        let namespace = PrivateIpc { original };
        for (name, value) in limits {
            namespace.set(name, *value)?;
        }
        Ok(Some(namespace))
    }

    /// Sets the limit `/proc/sys/kernel/<name>` of the namespace to `value`.
    pub fn set(&self, name: &str, value: u64) -> Result<(), Fail> {
        let path = format!("/proc/sys/kernel/{name}");
        std::fs::write(&path, value.to_string())
            .map_err(|e| Fail::Grader(format!("writing {path}: {e}")))
    }
}

impl Drop for PrivateIpc {
    fn drop(&mut self) {
        // SAFETY: setns with a namespace descriptor we opened; affects the calling thread only.
        unsafe { libc::setns(self.original.as_raw_fd(), libc::CLONE_NEWIPC) };
    }
}
