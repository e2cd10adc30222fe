//! Each wait's deadline is a valid time, now + the timeout, its nanoseconds carried into the
//! seconds from exactly 10^9 on. The grader stops the sender and the receiver at every call of
//! the C library's `clock_gettime()` and makes each `CLOCK_REALTIME` read return the real
//! second with nanoseconds of its choosing (ptrace: the time written where the call puts it,
//! the call returned at once): first exactly 10^9 minus the timeout's fraction of a second, so
//! that the sum is exactly one second, then one nanosecond below and above. It reads the
//! deadline each `sem_timedwait()` is given: its `tv_nsec` must be below 10^9.

use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use rand::RngExt;

use super::layout::{MIN_SEGMENT, chunks_of, expected_capacity};
use super::transfer::{Setup, check_messages, start};
use crate::engine::tracer::{Breakpoint, Tracer};
use crate::engine::{Fail, Proc, Run};

/// The functions the tracer stops at, in this order ([`Tracer::last_break`]).
const FUNCTIONS: [&std::ffi::CStr; 2] = [c"clock_gettime", c"sem_timedwait"];
const READ: usize = 0;
const TIMED_WAIT: usize = 1;
/// How the forged nanoseconds lie against the edge, read after read.
const AROUND_THE_EDGE: [i64; 3] = [0, -1, 1];
/// How long the grader follows the two at most.
const FOLLOWED: Duration = Duration::from_secs(4);

/// One side, stopped at its clock reads and timed waits.
struct Followed {
    who: &'static str,
    pid: i32,
    tracer: Option<Tracer>,
    /// `CLOCK_REALTIME` reads forged so far.
    forged: usize,
    /// The last time forged: the next deadline counts from it.
    last: Option<(i64, i64)>,
    waits: u32,
    /// The waits it makes in all (one per chunk): once seen, it goes on untraced.
    wanted: u32,
    /// The first deadline out of range: the time read, the deadline.
    invalid: Option<((i64, i64), (i64, i64))>,
}

pub fn deadline_carry(run: &mut Run) -> Result<String, Fail> {
    // A timeout with a fraction of a second, drawn from the seed.
    let timeout_ms = run.rng().random_range(2001..=2999u64);
    let fraction = (timeout_ms % 1000) as i64 * 1_000_000;
    let edge = 1_000_000_000 - fraction;
    let size = MIN_SEGMENT;
    let c = expected_capacity(size) as u64;
    // A message of four chunks, an empty one and a full one: six waits on each side.
    let mut setup = Setup::new(size, vec![3 * c + 5, 0, c]);
    setup.timeout_ms = timeout_ms;
    setup.save = false;
    let mut transfer = start(run, &setup)?;
    let chunks = setup.lens.iter().map(|&len| chunks_of(len, c)).sum::<u64>() as u32;
    let mut sides = [
        follow("the sender", &transfer.sender, chunks)?,
        follow("the receiver", &transfer.receiver, chunks)?,
    ];
    if sides.iter().all(|side| side.tracer.is_none()) {
        // Not traced here: the transfer is judged as any other.
        transfer.go()?;
        check_messages(run, &mut transfer, &setup)?;
        transfer.finish()?;
        return Ok("the clock reads could not be followed here (no ptrace)".into());
    }
    transfer.started = Some(Instant::now());
    transfer.receiver.send("go", &[])?;
    transfer.sender.send("go", &[])?;
    let until = Instant::now() + FOLLOWED;
    while Instant::now() < until && sides.iter().any(|side| side.tracer.is_some()) {
        for side in &mut sides {
            side.next(edge)?;
        }
    }
    for side in &mut sides {
        if let Some(tracer) = side.tracer.take() {
            tracer.release();
        }
    }
    let timeout = format!("{}.{:03} s", timeout_ms / 1000, timeout_ms % 1000);
    for side in &sides {
        if let Some(((s, ns), (ds, dns))) = side.invalid {
            transfer.sender.kill_tree();
            transfer.receiver.kill_tree();
            return Err(Fail::failed(format!(
                "the grader made {who}'s clock_gettime(CLOCK_REALTIME) read {s}.{ns:09} s \
                 (ptrace; the real second, nanoseconds of its choosing), and with its timeout \
                 of {timeout} {who} then called sem_timedwait() with the deadline tv_sec = \
                 {ds}, tv_nsec = {dns}: a tv_nsec of 10^9 or more, which sem_timedwait() (and \
                 mq_timedreceive()) refuse with EINVAL. The nanoseconds of now + the timeout \
                 were not carried into the seconds when they summed to {}: carry whenever they \
                 reach 1_000_000_000 (>=, not >), or add with TimeSpec (now + \
                 TimeSpec::from_duration(timeout)), which normalizes",
                if dns == 1_000_000_000 {
                    "exactly one second".to_string()
                } else {
                    format!("{dns} ns")
                },
                who = side.who
            )));
        }
    }
    let forged: Vec<String> = sides
        .iter()
        .map(|side| {
            format!(
                "{} {} read(s), {} wait(s)",
                side.who, side.forged, side.waits
            )
        })
        .collect();
    check_messages(run, &mut transfer, &setup).map_err(|fail| match fail {
        Fail::Failed(what) => Fail::failed(format!(
            "with each CLOCK_REALTIME read made to return nanoseconds at and around {edge} \
             (so that now + the timeout of {timeout} sums to one second, one nanosecond less, \
             one more): {what}"
        )),
        fail => fail,
    })?;
    transfer.finish()?;
    Ok(format!(
        "with CLOCK_REALTIME reads made to return nanoseconds of {edge} and one either side \
         ({}), and a timeout of {timeout}, every sem_timedwait() deadline had its nanoseconds \
         carried (tv_nsec below 10^9) and the messages arrived",
        forged.join(", ")
    ))
}

/// Stops `proc` at its clock reads and timed waits; no tracer where the machine does not allow
/// it.
fn follow(who: &'static str, proc: &Proc, wanted: u32) -> Result<Followed, Fail> {
    let pid = proc.pid.as_raw();
    let mut tracer = Tracer::break_at_functions(pid, &FUNCTIONS)?;
    if let Some(armed) = &mut tracer {
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            match armed.next_break(until)? {
                Some(Breakpoint::Armed) => break,
                None if Instant::now() < until => {}
                _ => {
                    tracer = None;
                    break;
                }
            }
        }
    }
    Ok(Followed {
        who,
        pid,
        tracer,
        forged: 0,
        last: None,
        waits: 0,
        wanted,
        invalid: None,
    })
}

impl Followed {
    /// Handles this side's next stop, if one comes within a moment.
    fn next(&mut self, edge: i64) -> Result<(), Fail> {
        let Some(tracer) = &mut self.tracer else {
            return Ok(());
        };
        let [first, second] = match tracer.next_break(Instant::now() + Duration::from_millis(1))? {
            Some(Breakpoint::At(args)) => args,
            Some(Breakpoint::Armed) | None => return Ok(()),
            Some(Breakpoint::Lost | Breakpoint::Unavailable) => {
                if let Some(tracer) = self.tracer.take() {
                    tracer.release();
                }
                return Ok(());
            }
        };
        match tracer.last_break() {
            READ if first as i32 == libc::CLOCK_REALTIME && second != 0 => {
                let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME)
                    .map_err(|e| Fail::Grader(format!("clock_gettime: {e}")))?;
                let nanos = edge + AROUND_THE_EDGE[self.forged % AROUND_THE_EDGE.len()];
                let forged = (now.tv_sec(), nanos);
                let mut bytes = [0u8; 16];
                bytes[..8].copy_from_slice(&forged.0.to_ne_bytes());
                bytes[8..].copy_from_slice(&forged.1.to_ne_bytes());
                if write_memory(self.pid, second, &bytes) {
                    self.forged += 1;
                    self.last = Some(forged);
                    tracer.return_now(0);
                } else {
                    tracer.go_on();
                }
            }
            TIMED_WAIT => {
                self.waits += 1;
                if self.invalid.is_none()
                    && let Some(last) = self.last
                    && let Some(deadline) = read_timespec(self.pid, second)
                    && !(0..1_000_000_000).contains(&deadline.1)
                {
                    self.invalid = Some((last, deadline));
                }
                tracer.go_on();
                if self.waits >= self.wanted
                    && let Some(tracer) = self.tracer.take()
                {
                    tracer.release();
                }
            }
            _ => tracer.go_on(),
        }
        Ok(())
    }
}

pub(super) fn write_memory(pid: i32, address: u64, bytes: &[u8]) -> bool {
    std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/mem"))
        .and_then(|memory| memory.write_all_at(bytes, address))
        .is_ok()
}

pub(super) fn read_timespec(pid: i32, address: u64) -> Option<(i64, i64)> {
    let memory = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut bytes = [0u8; 16];
    memory.read_exact_at(&mut bytes, address).ok()?;
    Some((
        i64::from_ne_bytes(bytes[..8].try_into().ok()?),
        i64::from_ne_bytes(bytes[8..].try_into().ok()?),
    ))
}
