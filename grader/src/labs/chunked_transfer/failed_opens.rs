//! What a failed open leaves, and how it says why. `recv` opens a segment of the grader's whose
//! every step after `shm_open()` fails in turn: an object of 4095 bytes (`bad-size`), its
//! `fstat()` made to fail with `EIO` (`fstat`), its `mmap()` with `ENODEV` (`mmap`), with ptrace.
//! Each must be that step's kind carrying that errno, and, with the receiver stopped at its
//! `exit_group()`, no descriptor or mapping of the object may be left in it.

use std::time::{Duration, Instant};

use super::held_after_create::held_of;
use super::layout::{MIN_SEGMENT, Mapped};
use super::observe::dev_shm;
use super::transfer::said;
use crate::engine::tracer::{Call, Step, Tracer};
use crate::engine::{Fail, Proc, Run, force};

/// The calls that read a descriptor's size: `fstat()`, and `newfstatat()` or `statx()` on an
/// empty path (`AT_EMPTY_PATH`: glibc's `fstat()`, Rust's `File::metadata()`); not a `stat()`
/// of a path, which reads whatever has the name by then.
const SIZE_READS: &[Call] = &[
    Call::any(libc::SYS_fstat),
    Call::flag_set(libc::SYS_newfstatat, 3, libc::AT_EMPTY_PATH as u64),
    Call::flag_set(libc::SYS_statx, 2, libc::AT_EMPTY_PATH as u64),
];

/// A receiver opening an object of the grader's, one step of its open made to fail.
struct FailingOpen {
    receiver: Proc,
    tracer: Tracer,
    name: String,
    _object: Mapped,
    /// The object's size, the step made to fail in words, the kind it must be and the errno's
    /// name it must carry (`None`: no call is made to fail).
    size: usize,
    step: &'static str,
    kind: &'static str,
    errno: Option<&'static str>,
    rule: &'static str,
}

pub fn failed_opens_leave_nothing(run: &mut Run) -> Result<(), Fail> {
    let exiting = (Call::any(libc::SYS_exit_group), Step::Hold);
    let mut opens = Vec::new();
    for (tag, size, errno) in [
        ("open-small", MIN_SEGMENT - 1, None),
        ("open-stat", MIN_SEGMENT, Some(libc::EIO)),
        ("open-map", MIN_SEGMENT, Some(libc::ENODEV)),
    ] {
        let name = run.ipc_name(tag);
        let object = Mapped::create(run, &name, size, size >= MIN_SEGMENT)?;
        let args = super::headers::one_message_receiver(&name, 1000);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let receiver = run.spawn_stopped(&args)?;
        let pid = receiver.pid.as_raw();
        let opening = (Call::opening(&dev_shm(&name)), Step::Pass);
        let tracer = match errno {
            None => Tracer::in_turn(pid, [exiting])?,
            Some(libc::EIO) => Tracer::in_turn(
                pid,
                [
                    opening,
                    (Call::any_of(SIZE_READS), Step::Fail(libc::EIO)),
                    exiting,
                ],
            )?,
            Some(errno) => Tracer::in_turn(
                pid,
                [
                    opening,
                    (
                        Call::flag_set(libc::SYS_mmap, 3, libc::MAP_SHARED as u64),
                        Step::Fail(errno),
                    ),
                    exiting,
                ],
            )?,
        };
        let Some(tracer) = tracer else {
            receiver.kill_tree();
            drop(object);
            let _ = nix::sys::mman::shm_unlink(name.as_str());
            for open in opens {
                FailingOpen::abandon(open);
            }
            return Ok(());
        };
        force::resume(pid)?;
        let (step, kind, errno, rule) = match errno {
            None => (
                "size (4095 bytes: under the 4096 a segment has at least)",
                "bad-size",
                None,
                "an object smaller than 4096 bytes is TransferError::BadSize, judged from \
                 fstat()'s size before mapping it",
            ),
            Some(libc::EIO) => (
                "fstat() (made to fail with EIO, ptrace)",
                "fstat",
                Some("EIO"),
                "fstat() failing is TransferError::Stat with its errno; TransferError::Open \
                 (kind=shm-open) is shm_open()'s failure alone",
            ),
            Some(_) => (
                "mmap(MAP_SHARED) (made to fail with ENODEV, ptrace)",
                "mmap",
                Some("ENODEV"),
                "mmap() failing is TransferError::Map with its errno; TransferError::Open \
                 (kind=shm-open) is shm_open()'s failure alone",
            ),
        };
        opens.push(FailingOpen {
            receiver,
            tracer,
            name,
            _object: object,
            size,
            step,
            kind,
            errno,
            rule,
        });
    }
    let mut judged = Ok(());
    for open in opens {
        let name = open.name.clone();
        let verdict = open.judge();
        let _ = nix::sys::mman::shm_unlink(name.as_str());
        judged = judged.and(verdict);
    }
    judged
}

impl FailingOpen {
    fn abandon(self) {
        self.receiver.kill_tree();
        let _ = nix::sys::mman::shm_unlink(self.name.as_str());
    }

    fn judge(mut self) -> Result<(), Fail> {
        let pid = self.receiver.pid.as_raw();
        let answer = self.receiver.recv_any()?;
        let forced = match self.errno {
            Some(_) => self
                .tracer
                .failed_before(Instant::now() + Duration::from_secs(2))?,
            None => true,
        };
        let exiting = answer.kind == "failed"
            && self
                .tracer
                .held_before(Instant::now() + Duration::from_secs(3))?;
        let held = exiting.then(|| held_of(pid, &self.name));
        self.tracer.release();
        if answer.kind == "failed" {
            let _ = self.receiver.wait();
        } else {
            self.receiver.kill_tree();
        }
        let (kind, step) = (self.kind, self.step);
        let asked = format!(
            "opening the grader's object {} of {} bytes in `recv` (Segment::open), its {step}",
            dev_shm(&self.name).display(),
            self.size
        );
        if !forced {
            // The size read of the descriptor never came: an open that got past its size
            // took it another way; one that failed before is judged elsewhere.
            let past_size = answer.kind != "failed"
                || matches!(answer.get("kind"), Some("fstat" | "bad-size" | "mmap"));
            if kind == "fstat" && past_size {
                return Err(Fail::failed(format!(
                    "{asked}: the receiver (pid {pid}) made no fstat() of the descriptor \
                     shm_open() gave it (nor newfstatat() or statx() on it), and said {}: it \
                     took the object's size another way, such as a stat() of /dev/shm/NAME, \
                     which reads whatever has the name by then, not the object opened; take \
                     the size from fstat() of the descriptor (its failure is TransferError::Stat)",
                    said(&answer)
                )));
            }
            return Ok(());
        }
        let errno_ok = self
            .errno
            .is_none_or(|errno| answer.get("error").is_some_and(|e| e.contains(errno)));
        if answer.kind != "failed" || answer.get("kind") != Some(kind) || !errno_ok {
            let with = self.errno.map(|e| format!(" with {e}")).unwrap_or_default();
            return Err(Fail::failed(format!(
                "{asked}, the receiver (pid {pid}) said {}: this must be kind={kind}{with} ({}). \
                 Each step of Segment::open reports its own error",
                said(&answer),
                self.rule
            )));
        }
        if let Some(held) = held.filter(|held| !held.is_empty()) {
            return Err(Fail::failed(format!(
                "{asked}, the receiver said kind={kind}, rightly, but stopped by the grader at \
                 its exit_group() it still held {}: Segment::open closes the descriptor on \
                 every path, its failures after shm_open() (fstat(), BadSize, mmap()) too, not \
                 only once mapped. A raw descriptor closed at the end of the happy path leaks on \
                 each early return; keep it in an OwnedFd, which closes it when dropped",
                held.join(", ")
            )));
        }
        Ok(())
    }
}
