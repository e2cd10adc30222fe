//! For the labs' unit tests: names that no other test uses, and removal that happens even when
//! a test fails.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

/// How the name of every object a unit test creates begins, after its `/`.
pub const TEST_NAME_PREFIX: &str = "ipc-labs-test-";

/// A name for a named IPC object (a queue, a shared memory object, a semaphore) that no other
/// test of this run or of a run in parallel uses: `/ipc-labs-test-<what>-<pid>-<n>`.
pub fn unique_name(what: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("/{TEST_NAME_PREFIX}{what}-{}-{n}", std::process::id())
}

/// The process that made `name` with [`unique_name`], or `None` if it is not such a name.
pub fn creator_of(name: &str) -> Option<u32> {
    let rest = name
        .trim_start_matches('/')
        .strip_prefix(TEST_NAME_PREFIX)?;
    let (before_n, _n) = rest.rsplit_once('-')?;
    let (_what, pid) = before_n.rsplit_once('-')?;
    pid.parse().ok()
}

/// Runs `remove` when it goes out of scope, also when the test panics: a failed test must not
/// leave its IPC objects on the machine. Removing what is already gone is not an error here.
pub struct Cleanup<F: FnMut()> {
    remove: F,
}

impl<F: FnMut()> Cleanup<F> {
    pub fn new(remove: F) -> Cleanup<F> {
        Cleanup { remove }
    }
}

impl<F: FnMut()> Drop for Cleanup<F> {
    fn drop(&mut self) {
        (self.remove)();
    }
}

/// Ends the whole test process (status 101), saying what was blocked, unless it is dropped
/// within `limit`: a test that would block for ever (a lock nobody releases, a pipe nobody
/// reads) fails with a reason instead of hanging `cargo test`. Made by [`watchdog`].
pub struct Watchdog {
    _finished: mpsc::Sender<()>,
}

/// A [`Watchdog`] for `what`, which must be done within `limit`.
pub fn watchdog(what: &str, limit: Duration) -> Watchdog {
    let (finished, wait) = mpsc::channel::<()>();
    let what = what.to_string();
    std::thread::spawn(move || {
        if let Err(RecvTimeoutError::Timeout) = wait.recv_timeout(limit) {
            // Straight to stderr: the test's captured output is lost when the process exits.
            let _ = writeln!(
                std::io::stderr(),
                "{what} was still blocked after {limit:?}: ending the tests"
            );
            std::process::exit(101);
        }
    });
    Watchdog {
        _finished: finished,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_differ_and_carry_the_pid() {
        let (a, b) = (unique_name("mq"), unique_name("mq"));
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("/ipc-labs-test-mq-{}-", std::process::id())));
    }

    #[test]
    fn the_creator_of_a_test_name_is_its_pid() {
        assert_eq!(creator_of(&unique_name("sem")), Some(std::process::id()));
        assert_eq!(creator_of("ipc-labs-test-shm-a-b-42-7"), Some(42));
        assert_eq!(creator_of("/ipclabs-1f-3"), None);
        assert_eq!(creator_of("/ipc-labs-test-shm-x-7"), None);
    }

    #[test]
    fn cleanup_runs_when_the_scope_unwinds() {
        let ran = std::cell::Cell::new(false);
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _cleanup = Cleanup::new(|| ran.set(true));
            panic!("a failing test");
        }));
        assert!(unwound.is_err());
        assert!(ran.get());
    }

    #[test]
    fn a_watchdog_dropped_in_time_lets_the_process_live() {
        let guard = watchdog("nothing", Duration::from_millis(50));
        drop(guard);
        // Were it still armed, the process would end here and this test with it.
        std::thread::sleep(Duration::from_millis(150));
    }
}
