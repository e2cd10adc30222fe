//! # Lab 7: semaphores
//!
//! A producer hands records to a consumer, one at a time, through a one-slot buffer in shared
//! memory. Two signals keep them in step: the producer writes the record and signals *ready*;
//! the consumer waits for *ready*, copies the record out and signals *ok*; the producer waits
//! for *ok* before it overwrites the slot with the next record.
//!
//! ```text
//!   producer:  write slot -> post(ready) -> wait(ok)      (repeat)
//!   consumer:  wait(ready) -> read slot -> post(ok)       (repeat)
//! ```
//!
//! The signals are either two named POSIX semaphores (`sem_open`, both starting at 0) or two
//! POSIX message queues carrying `"ready"` and `"ok"` messages: the same protocol, two ways to
//! block until the other side has done its part.
//!
//! What this lab is about:
//! - Order: the data is written *before* the signal that says it is there. A consumer woken
//!   by a `post` made before the write reads the previous record, or half of the new one.
//! - A wait blocks in the kernel (`sem_wait` sleeps on a futex, `mq_receive` on the queue); it
//!   never spins on the CPU.
//! - `EINTR`: a signal whose handler runs while a process waits makes the wait fail with
//!   `EINTR` (handlers installed without `SA_RESTART`; `sem_wait` is never restarted anyway).
//!   That is not an error: wait again.
//! - A peer that dies never posts again. Waiting for ever is a hang; wait in slices
//!   (`sem_timedwait`, `mq_timedreceive`) and, when a slice runs out, check that the peer is
//!   still there.
//! - Named semaphores and queues live in the kernel until unlinked (`sem_unlink`, `mq_unlink`),
//!   like files. Processes that have them open keep using them after the unlink, so the
//!   program unlinks the names as soon as both sides hold the objects: no crash can leave them
//!   behind.
//!
//! The program in `main.rs` creates the [`Handoff`], forks the producer and the consumer,
//! unlinks the names, and checks every record the consumer receives. Keep `main.rs` as it is:
//! the grader talks to it.

use std::ptr::NonNull;
use std::time::Duration;
// SOLUTION
use std::ffi::CString;
use std::num::NonZeroUsize;

use nix::mqueue::{MQ_OFlag, MqAttr, mq_close, mq_open, mq_send, mq_timedreceive, mq_unlink};
use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous, munmap};
use nix::sys::stat::Mode;
use nix::sys::time::TimeSpec;
use nix::time::{ClockId, clock_gettime};
// END SOLUTION

use nix::errno::Errno;
use nix::mqueue::MqdT;
use nix::sys::signal::kill;
use nix::unistd::Pid;

/// Payload bytes in a record.
pub const PAYLOAD: usize = 4080;

/// How long one timed wait lasts before the waiter checks that its peer is still there.
pub const WAIT_SLICE: Duration = Duration::from_millis(100);

/// The largest message a signal queue carries (`"ready"`, `"ok"`).
pub const SIGNAL_SIZE: usize = 8;

/// One record, as it lies in the slot: 4 KiB. Given.
#[repr(C)]
#[derive(Clone)]
pub struct Record {
    /// Which record this is: 0, 1, 2, ...
    pub seq: u64,
    /// The data.
    pub payload: [u8; PAYLOAD],
    /// [`Record::checksum_of`] of the above, written last.
    pub checksum: u64,
}

impl Record {
    /// An all-zero record.
    pub fn zeroed() -> Record {
        Record {
            seq: 0,
            payload: [0; PAYLOAD],
            checksum: 0,
        }
    }

    /// Record number `seq` of the stream drawn from `seed`: its payload is a function of both,
    /// so that the consumer can tell this record from any other.
    pub fn generate(seq: u64, seed: u64) -> Record {
        let mut state = (seed ^ seq.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1;
        let mut record = Record {
            seq,
            payload: [0; PAYLOAD],
            checksum: 0,
        };
        for chunk in record.payload.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        record.checksum = record.checksum_of();
        record
    }

    /// FNV-1a over the sequence number and the payload.
    pub fn checksum_of(&self) -> u64 {
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        for byte in self.seq.to_le_bytes().iter().chain(&self.payload) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        hash
    }

    /// Whether the checksum matches: a record copied while it was being written does not.
    pub fn is_intact(&self) -> bool {
        self.checksum == self.checksum_of()
    }
}

/// Which kernel object carries the signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// Two named POSIX semaphores.
    Semaphores,
    /// Two POSIX message queues.
    Queues,
}

/// One direction of signalling: *ready* (producer to consumer) or *ok* (back).
#[derive(Debug)]
pub enum Signal {
    /// A named semaphore, as `sem_open()` returned it; starts at 0.
    Semaphore(NonNull<libc::sem_t>),
    /// A message queue: one message per signal.
    Queue(MqdT),
}

/// The other side of the handoff, to tell whether it is still there. Given.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// Its process id.
    pub pid: Pid,
}

impl Peer {
    /// Whether the peer process no longer exists (it exited and was reaped).
    pub fn gone(&self) -> bool {
        kill(self.pid, None) == Err(Errno::ESRCH)
    }
}

/// Everything that can go wrong in the handoff.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    /// `mmap()` of the slot failed.
    #[error("mmap() failed: {0}")]
    Map(Errno),
    /// A semaphore or queue with this name already exists.
    #[error("{0} already exists")]
    Exists(String),
    /// `sem_open()` or `mq_open()` failed for another reason.
    #[error("opening {name} failed: {errno}")]
    Open {
        /// The name.
        name: String,
        /// Why.
        errno: Errno,
    },
    /// `sem_post()` or `mq_send()` failed, with that call's errno (`Errno::last()` after
    /// `sem_post()`, which returns -1).
    #[error("signalling failed: {0}")]
    Post(Errno),
    /// `sem_timedwait()` or `mq_timedreceive()` failed with something other than `EINTR` or
    /// `ETIMEDOUT`.
    #[error("waiting failed: {0}")]
    Wait(Errno),
    /// The peer process is gone: it will never signal again.
    #[error("the other side is gone")]
    PeerGone,
    /// `sem_unlink()` or `mq_unlink()` failed.
    #[error("unlinking {name} failed: {errno}")]
    Unlink {
        /// The name.
        name: String,
        /// Why.
        errno: Errno,
    },
    /// `sem_close()` or `mq_close()` failed.
    #[error("closing failed: {0}")]
    Close(Errno),
    /// `munmap()` failed.
    #[error("munmap() failed: {0}")]
    Unmap(Errno),
}

impl HandoffError {
    /// A stable one-word name for the variant, which the program reports as `kind=` (the
    /// grader checks it). Given; do not change.
    pub fn kind(&self) -> &'static str {
        match self {
            HandoffError::Map(_) => "mmap",
            HandoffError::Exists(_) => "exists",
            HandoffError::Open { .. } => "open",
            HandoffError::Post(_) => "post",
            HandoffError::Wait(_) => "wait",
            HandoffError::PeerGone => "peer-gone",
            HandoffError::Unlink { .. } => "unlink",
            HandoffError::Close(_) => "close",
            HandoffError::Unmap(_) => "munmap",
        }
    }
}

/// The slot and the two signals, created before `fork()` so that both sides inherit them.
#[derive(Debug)]
pub struct Handoff {
    /// The one-record buffer: a shared anonymous mapping, inherited across `fork()`.
    pub slot: NonNull<Record>,
    /// Producer to consumer: "a record is in the slot".
    pub ready: Signal,
    /// Consumer to producer: "the slot is free again".
    pub ok: Signal,
    /// The names of `ready` and `ok`, for [`Handoff::unlink`].
    pub names: [String; 2],
}

/// Sends one signal: `sem_post()`, or `mq_send()` of a short message (`"ready"` or `"ok"`,
/// priority 0). Errors are [`HandoffError::Post`]. Signals stay unblocked meanwhile: a handler
/// runs when its signal comes (an `mq_send()` it interrupts returns `EINTR`, having sent nothing),
/// and so during a send made again after one.
pub fn post(signal: &Signal, message: &str) -> Result<(), HandoffError> {
    // SOLUTION todo(signal, message): sem_post, or mq_send of the message
    match signal {
        // SAFETY: the semaphore was opened by sem_open() and is not closed yet.
        Signal::Semaphore(sem) => match unsafe { libc::sem_post(sem.as_ptr()) } {
            0 => Ok(()),
            _ => Err(HandoffError::Post(Errno::last())),
        },
        Signal::Queue(queue) => mq_send(queue, message.as_bytes(), 0).map_err(HandoffError::Post),
    }
    // END SOLUTION
}

/// Waits for one signal from `peer`, blocking (never spinning), in slices of [`WAIT_SLICE`]:
/// `sem_timedwait()` or `mq_timedreceive()` with an absolute `CLOCK_REALTIME` deadline, now +
/// `WAIT_SLICE`, computed anew for each slice. `EINTR` (a signal handler ran): wait again, at
/// once (no sleep, poll or yield first).
/// `ETIMEDOUT`: if `peer` is [`Peer::gone`], [`HandoffError::PeerGone`], else wait again. A
/// signal already there is taken, even from a peer that is gone since: `PeerGone` only after a
/// slice has timed out. Other errors are [`HandoffError::Wait`]: `EINVAL` too (a deadline or
/// semaphore the call refuses is refused again), and a failed clock read (returned, never a
/// panic). Signals stay unblocked meanwhile, each with the
/// action the program set (its handler, its default, ignored): a handler runs when its signal
/// comes, and the wait it interrupts returns `EINTR`, whenever it comes.
pub fn wait(signal: &Signal, peer: &Peer) -> Result<(), HandoffError> {
    // SOLUTION todo(signal, peer): loop: timed wait with deadline now + WAIT_SLICE; EINTR again; ETIMEDOUT: PeerGone if peer.gone(), else again
    loop {
        let now = clock_gettime(ClockId::CLOCK_REALTIME).map_err(HandoffError::Wait)?;
        let deadline = now + TimeSpec::from_duration(WAIT_SLICE);
        let result = match signal {
            // SAFETY: the semaphore was opened by sem_open() and is not closed yet; the deadline
            // is a valid timespec.
            Signal::Semaphore(sem) => {
                match unsafe { libc::sem_timedwait(sem.as_ptr(), deadline.as_ref()) } {
                    0 => Ok(()),
                    _ => Err(Errno::last()),
                }
            }
            Signal::Queue(queue) => {
                let mut message = [0u8; SIGNAL_SIZE];
                mq_timedreceive(queue, &mut message, &mut 0, &deadline).map(drop)
            }
        };
        match result {
            Ok(()) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(Errno::ETIMEDOUT) if peer.gone() => return Err(HandoffError::PeerGone),
            Err(Errno::ETIMEDOUT) => continue,
            Err(errno) => return Err(HandoffError::Wait(errno)),
        }
    }
    // END SOLUTION
}
// SOLUTION

/// Opens a new signal called `name`: a semaphore at 0, or a queue of one message of up to
/// SIGNAL_SIZE bytes; `O_CREAT | O_EXCL`, mode 0600.
fn open_signal(mechanism: Mechanism, name: &str) -> Result<Signal, HandoffError> {
    let failed = |errno| match errno {
        Errno::EEXIST => HandoffError::Exists(name.to_string()),
        errno => HandoffError::Open {
            name: name.to_string(),
            errno,
        },
    };
    match mechanism {
        Mechanism::Semaphores => {
            let c_name = CString::new(name).map_err(|_| failed(Errno::EINVAL))?;
            // SAFETY: a valid C string; mode and initial value are passed as the variadic
            // arguments sem_open() expects with O_CREAT.
            let sem = unsafe {
                libc::sem_open(
                    c_name.as_ptr(),
                    libc::O_CREAT | libc::O_EXCL,
                    0o600 as libc::c_uint,
                    0 as libc::c_uint,
                )
            };
            if sem == libc::SEM_FAILED {
                return Err(failed(Errno::last()));
            }
            Ok(Signal::Semaphore(
                NonNull::new(sem).ok_or(failed(Errno::EINVAL))?,
            ))
        }
        Mechanism::Queues => {
            let attr = MqAttr::new(0, 1, SIGNAL_SIZE as i64, 0);
            mq_open(
                name,
                MQ_OFlag::O_CREAT | MQ_OFlag::O_EXCL | MQ_OFlag::O_RDWR,
                Mode::S_IRUSR | Mode::S_IWUSR,
                Some(&attr),
            )
            .map(Signal::Queue)
            .map_err(failed)
        }
    }
}

/// Unlinks a signal's name.
fn unlink_signal(signal: &Signal, name: &str) -> Result<(), HandoffError> {
    let failed = |errno| HandoffError::Unlink {
        name: name.to_string(),
        errno,
    };
    match signal {
        Signal::Semaphore(_) => {
            let c_name = CString::new(name).map_err(|_| failed(Errno::EINVAL))?;
            // SAFETY: a valid C string.
            match unsafe { libc::sem_unlink(c_name.as_ptr()) } {
                0 => Ok(()),
                _ => Err(failed(Errno::last())),
            }
        }
        Signal::Queue(_) => mq_unlink(name).map_err(failed),
    }
}

/// Closes a signal.
fn close_signal(signal: Signal) -> Result<(), HandoffError> {
    match signal {
        // SAFETY: opened by sem_open(); consumed, so never used again.
        Signal::Semaphore(sem) => match unsafe { libc::sem_close(sem.as_ptr()) } {
            0 => Ok(()),
            _ => Err(HandoffError::Close(Errno::last())),
        },
        Signal::Queue(queue) => mq_close(queue).map_err(HandoffError::Close),
    }
}
// END SOLUTION

impl Handoff {
    /// Creates the slot (a `MAP_SHARED | MAP_ANONYMOUS` mapping of one [`Record`], which
    /// `fork()` shares) and the two signals named `ready_name` and `ok_name`: with
    /// [`Mechanism::Semaphores`], `sem_open(O_CREAT | O_EXCL, 0600, 0)`; with
    /// [`Mechanism::Queues`], `mq_open(O_CREAT | O_EXCL | O_RDWR, 0600)` with room for one
    /// message of [`SIGNAL_SIZE`] bytes. `EEXIST` is [`HandoffError::Exists`], any other errno
    /// [`HandoffError::Open`], whichever it is. If a step fails,
    /// remove what was already created (unlink and close it, unmap the slot), and only that: a
    /// name that existed before is not this handoff's. A failed step ends the creation: nothing
    /// is opened after it, not even to be removed again. The processes' CPU affinity is left as
    /// it is, by this call and every other of the handoff, of this process and of the peer:
    /// where the sides run is `main.rs`'s to say (`--cpu`). The signal mask and every signal's
    /// action are left as `main.rs` set them too, whether this call succeeds or fails. The
    /// queues stay blocking: no call
    /// sets `O_NONBLOCK` on a queue both sides hold (`mq_setattr()`, `fcntl()`).
    pub fn create(
        mechanism: Mechanism,
        ready_name: &str,
        ok_name: &str,
    ) -> Result<Handoff, HandoffError> {
        // SOLUTION todo(mechanism, ready_name, ok_name): mmap a shared anonymous slot; sem_open or mq_open both names with O_CREAT | O_EXCL, 0600
        let size = NonZeroUsize::new(std::mem::size_of::<Record>()).expect("a record has bytes");
        // SAFETY: a new anonymous mapping replaces nothing.
        let slot = unsafe {
            mmap_anonymous(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )
        }
        .map_err(HandoffError::Map)?
        .cast::<Record>();
        let unmap = || {
            // SAFETY: the mapping was made above and nothing else uses it.
            let _ = unsafe { munmap(slot.cast(), size.get()) };
        };
        let ready = match open_signal(mechanism, ready_name) {
            Ok(signal) => signal,
            Err(error) => {
                unmap();
                return Err(error);
            }
        };
        let ok = match open_signal(mechanism, ok_name) {
            Ok(signal) => signal,
            Err(error) => {
                let _ = unlink_signal(&ready, ready_name);
                let _ = close_signal(ready);
                unmap();
                return Err(error);
            }
        };
        Ok(Handoff {
            slot,
            ready,
            ok,
            names: [ready_name.to_string(), ok_name.to_string()],
        })
        // END SOLUTION
    }

    /// Removes both names (`sem_unlink()` or `mq_unlink()`); the processes that have the
    /// objects open go on using them. Try both, return the first error. Only the names: the
    /// handoff stays whole (slot mapped, both signals open) until [`Handoff::close`]. The names
    /// are removed here, once, and nowhere else, not even at exit: once unlinked they belong to
    /// nobody, and another program may make objects under them. Objects under other names are
    /// not the handoff's, however old they look: nothing here removes them.
    pub fn unlink(&self) -> Result<(), HandoffError> {
        // SOLUTION todo: sem_unlink or mq_unlink both names; first error wins
        let ready = unlink_signal(&self.ready, &self.names[0]);
        let ok = unlink_signal(&self.ok, &self.names[1]);
        ready.and(ok)
        // END SOLUTION
    }

    /// The producer's half of a round: copy `record` into the slot, [`post`] *ready*, then
    /// [`wait`] for *ok* from `consumer`.
    pub fn put(&self, record: &Record, consumer: &Peer) -> Result<(), HandoffError> {
        // SOLUTION todo(record, consumer): copy the record into the slot; post(ready); wait(ok)
        // SAFETY: the slot is a live mapping of one Record; the consumer does not touch it
        // until ready is posted.
        unsafe { std::ptr::copy_nonoverlapping(record, self.slot.as_ptr(), 1) };
        post(&self.ready, "ready")?;
        wait(&self.ok, consumer)
        // END SOLUTION
    }

    /// The consumer's half of a round: [`wait`] for *ready* from `producer`, copy the slot
    /// into `record`, then [`post`] *ok*. Only a record whose ready was posted is taken: when
    /// the wait gives up ([`HandoffError::PeerGone`]), so does `take()`, whatever the slot holds.
    /// The slot is only read here: nothing but [`Handoff::put`] writes it, and the producer
    /// learns that its record was taken from *ok* alone.
    pub fn take(&self, record: &mut Record, producer: &Peer) -> Result<(), HandoffError> {
        // SOLUTION todo(record, producer): wait(ready); copy the slot into record; post(ok)
        wait(&self.ready, producer)?;
        // SAFETY: the slot is a live mapping of one Record; the producer does not touch it
        // until ok is posted.
        unsafe { std::ptr::copy_nonoverlapping(self.slot.as_ptr(), record, 1) };
        post(&self.ok, "ok")
        // END SOLUTION
    }

    /// Closes both signals (`sem_close()` or `mq_close()`) and unmaps the slot. Try every
    /// step, return the first error.
    pub fn close(self) -> Result<(), HandoffError> {
        // SOLUTION todo: sem_close or mq_close both signals; munmap the slot; first error wins
        let ready = close_signal(self.ready);
        let ok = close_signal(self.ok);
        // SAFETY: the slot was mapped by create(); `self` is consumed, so it is not used again.
        let unmapped = unsafe { munmap(self.slot.cast(), std::mem::size_of::<Record>()) }
            .map_err(HandoffError::Unmap);
        ready.and(ok).and(unmapped)
        // END SOLUTION
    }
}

/// Fast checks of the rules above, without the grader: `cargo test -p semaphore-handoff`.
#[cfg(test)]
mod tests {
    use super::*;
    use ipc_labs_driver::testing::{Cleanup, unique_name, watchdog};
    use rstest::rstest;
    use serial_test::serial;

    /// Two fresh signal names, removed with the system calls (not the code under test) at the
    /// end, whichever mechanism made them.
    fn signal_names() -> ([String; 2], Cleanup<impl FnMut()>) {
        let names = [unique_name("ready"), unique_name("ok")];
        let removed = names.clone();
        let cleanup = Cleanup::new(move || {
            for name in &removed {
                let c_name = std::ffi::CString::new(name.as_str()).unwrap();
                // SAFETY: c_name is a valid NUL-terminated string.
                unsafe { libc::sem_unlink(c_name.as_ptr()) };
                let _ = nix::mqueue::mq_unlink(name.as_str());
            }
        });
        (names, cleanup)
    }

    /// Whether a semaphore or a queue has this name.
    fn exists(name: &str) -> bool {
        let semaphore = std::path::Path::new("/dev/shm").join(format!("sem.{}", &name[1..]));
        let queue = nix::mqueue::mq_open(
            name,
            nix::mqueue::MQ_OFlag::O_RDONLY,
            nix::sys::stat::Mode::empty(),
            None,
        );
        semaphore.exists() || queue.is_ok_and(|q| nix::mqueue::mq_close(q).is_ok())
    }

    fn me() -> Peer {
        Peer { pid: Pid::this() }
    }

    #[rstest]
    #[case::semaphores(Mechanism::Semaphores)]
    #[case::queues(Mechanism::Queues)]
    #[serial(handoff)]
    fn a_record_goes_through_the_slot_whole(#[case] mechanism: Mechanism) {
        let ([ready, ok], _cleanup) = signal_names();
        let handoff = Handoff::create(mechanism, &ready, &ok).unwrap();
        let sent = Record::generate(3, 42);
        let _watchdog = watchdog("put and take", 100 * WAIT_SLICE);
        // One thread plays both sides: the consumer's "ok" is posted ahead, so that put()
        // finds it at once.
        post(&handoff.ok, "ok").unwrap();
        handoff.put(&sent, &me()).unwrap();
        let mut received = Record::zeroed();
        handoff.take(&mut received, &me()).unwrap();
        assert!(received.is_intact(), "the record was torn");
        assert_eq!((received.seq, received.payload), (sent.seq, sent.payload));
        // take() answered with "ok": a wait for it ends at once.
        wait(&handoff.ok, &me()).unwrap();
        handoff.unlink().unwrap();
        handoff.close().unwrap();
    }

    #[rstest]
    #[case::semaphores(Mechanism::Semaphores)]
    #[case::queues(Mechanism::Queues)]
    #[serial(handoff)]
    fn a_name_that_exists_is_exists_and_stays_its_owners(#[case] mechanism: Mechanism) {
        let ([ready, ok], _cleanup) = signal_names();
        let ([fresh, _], _more_cleanup) = signal_names();
        let first = Handoff::create(mechanism, &ready, &ok).unwrap();
        let error = Handoff::create(mechanism, &fresh, &ok).unwrap_err();
        assert_eq!(error.kind(), "exists", "{error}");
        assert!(!exists(&fresh), "the failed create left {fresh}");
        assert!(
            exists(&ok),
            "the failed create removed a name it did not make"
        );
        first.unlink().unwrap();
        assert!(!exists(&ready) && !exists(&ok), "unlink() left a name");
        let again = first.unlink().unwrap_err();
        assert_eq!(again.kind(), "unlink", "{again}");
        first.close().unwrap();
    }

    #[test]
    #[serial(handoff)]
    fn a_queue_signal_is_one_message_of_its_text() {
        let ([ready, ok], _cleanup) = signal_names();
        let handoff = Handoff::create(Mechanism::Queues, &ready, &ok).unwrap();
        post(&handoff.ready, "ready").unwrap();
        let Signal::Queue(queue) = &handoff.ready else {
            panic!("Mechanism::Queues made a semaphore");
        };
        let attributes = nix::mqueue::mq_getattr(queue).unwrap();
        assert_eq!(attributes.msgsize(), SIGNAL_SIZE as _);
        let mut buffer = [0u8; SIGNAL_SIZE];
        let mut priority = 1;
        let len = nix::mqueue::mq_receive(queue, &mut buffer, &mut priority).unwrap();
        assert_eq!((&buffer[..len], priority), (b"ready".as_slice(), 0));
        handoff.close().unwrap();
    }

    #[rstest]
    #[case::semaphores(Mechanism::Semaphores)]
    #[case::queues(Mechanism::Queues)]
    #[serial(handoff)]
    fn waiting_for_a_peer_that_is_gone_is_peer_gone(#[case] mechanism: Mechanism) {
        let ([ready, ok], _cleanup) = signal_names();
        let handoff = Handoff::create(mechanism, &ready, &ok).unwrap();
        // SAFETY: the child only calls _exit, which is async-signal-safe.
        let gone = match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => unsafe { libc::_exit(0) },
            nix::unistd::ForkResult::Parent { child } => child,
        };
        nix::sys::wait::waitpid(gone, None).unwrap();
        let _watchdog = watchdog("wait for a peer that is gone", 100 * WAIT_SLICE);
        let started = std::time::Instant::now();
        let error = wait(&handoff.ready, &Peer { pid: gone }).unwrap_err();
        assert_eq!(error.kind(), "peer-gone", "{error}");
        assert!(
            started.elapsed() < 20 * WAIT_SLICE,
            "noticed only after {:?}",
            started.elapsed()
        );
        handoff.close().unwrap();
    }
}
