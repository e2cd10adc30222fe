//! A clock the grader sets: a deadline built by hand goes wrong at one moment of each second
//! (a carry of the nanoseconds made only past 1,000,000,000, not at it), which no run meets by
//! chance. So the program is started with the vDSO hidden from its C library (the auxiliary
//! vector's `AT_SYSINFO_EHDR`, on its stack, made `AT_IGNORE` as `execve()` returns): every
//! `clock_gettime()` is then a system call, and the grader holds the waiting side as one of them
//! returns and writes the time it chooses in its place.

use std::time::{Duration, Instant};

use ipc_labs_driver::Message;
use rand::RngExt;

use super::forced_waits::{realtime, the_wait, waiting_in};
use super::handover::{Launch, arguments, report_failure};
use super::{PRODUCER, WAIT_SLICE};
use crate::engine::diagnose::clock_name;
use crate::engine::tracer::{Action, Call, Reached, Step, Tracer};
use crate::engine::{Fail, Proc, Run, force, inspect};

/// Types of the auxiliary vector's entries (`<elf.h>`).
const AT_NULL: u64 = 0;
const AT_IGNORE: u64 = 1;
const AT_SYSINFO_EHDR: u64 = 33;

/// How much of the new program's stack, from its start (`argc`), the grader searches for the
/// auxiliary vector: the pointers to the arguments and the environment come first.
const STACK_SEARCHED: usize = 64 * 1024;

/// The nanoseconds the grader sets the clock to: one short of the read whose deadline (+
/// WAIT_SLICE, 100 ms) falls exactly on a whole second, that read, and one past.
const EDGES: [u32; 3] = [899_999_999, 900_000_000, 900_000_001];

/// How far the grader moves the producer's clock forward for one slice, as NTP or a resume
/// from suspend can step it; that slice is made to time out at once. The consumer is alive: the
/// producer must wait on, however far the clock went.
const JUMP: Duration = Duration::from_secs(100);

/// Starts the program like [`Launch::new`], its C library shown no vDSO: each clock read is a
/// system call. The flag says whether the vDSO was hidden (the grader may not trace here, or
/// did not find the auxiliary vector): if not, the program runs as usual.
pub fn launch_without_vdso(
    run: &mut Run,
    mechanism: &'static str,
    names: [String; 2],
    rounds: u64,
    extra: &[&str],
) -> Result<(Launch, bool), Fail> {
    let seed: u64 = run.rng().random();
    let mut proc = run.spawn_stopped(&arguments(mechanism, &names, rounds, extra))?;
    let pid = proc.pid.as_raw();
    let exec = Call::one_of(&[libc::SYS_execve, libc::SYS_execveat]);
    let tracer = Tracer::attach(pid, exec, Action::HoldAfter)?;
    force::resume(pid)?;
    let mut hidden = false;
    if let Some(mut tracer) = tracer {
        match tracer.wait(&mut proc, Instant::now() + Duration::from_secs(5))? {
            Reached::Call => {
                hidden = hide_vdso(pid);
                tracer.release();
            }
            Reached::Passed(Some(message)) => {
                return Err(Fail::Grader(format!(
                    "the program said `{}` before its exec",
                    message.kind
                )));
            }
            Reached::Passed(None) => {}
        }
    }
    let launch = Launch {
        proc,
        names,
        mechanism,
        rounds,
        seed,
    };
    Ok((launch, hidden))
}

/// In `pid`, held as its `execve()` returns (the new program's stack made, none of its code
/// run): turns the auxiliary vector's `AT_SYSINFO_EHDR` into `AT_IGNORE`, so that the dynamic
/// loader finds no vDSO. Whether it did.
fn hide_vdso(pid: i32) -> bool {
    let Ok(auxv) = std::fs::read(format!("/proc/{pid}/auxv")) else {
        return false;
    };
    let words: Vec<u64> = auxv
        .chunks_exact(8)
        .map(|w| u64::from_ne_bytes(w.try_into().expect("8 bytes")))
        .collect();
    let Some(entry) = words
        .chunks_exact(2)
        .take_while(|pair| pair[0] != AT_NULL)
        .position(|pair| pair[0] == AT_SYSINFO_EHDR)
    else {
        return false;
    };
    // The start of the stack (`startstack`, the 28th field of /proc/PID/stat): argc.
    let Some(start) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let (_, rest) = stat.rsplit_once(") ")?;
            rest.split_whitespace().nth(25)?.parse::<u64>().ok()
        })
    else {
        return false;
    };
    // The stack above `start` may be shorter than the length searched.
    let mut len = STACK_SEARCHED;
    let memory = loop {
        if let Some(memory) = super::probe::peek(pid, start, len) {
            break memory;
        }
        len /= 2;
        if len < auxv.len() {
            return false;
        }
    };
    let Some(at) = memory.windows(auxv.len()).position(|w| w == auxv) else {
        return false;
    };
    let address = start + (at + 16 * entry) as u64;
    super::probe::poke(pid, address, &AT_IGNORE.to_ne_bytes()).is_ok()
}

/// Writes `to` as the `timespec` at `addr` in `pid`: the time a clock read held as it returns
/// gives the program.
fn write_time(pid: i32, addr: u64, to: Duration) -> Result<(), Fail> {
    let mut time = [0u8; 16];
    time[..8].copy_from_slice(&(to.as_secs() as i64).to_ne_bytes());
    time[8..].copy_from_slice(&i64::from(to.subsec_nanos()).to_ne_bytes());
    super::probe::poke(pid, addr, &time)
}

/// What came of a clock read the grader waited for.
enum ClockRead {
    /// Held as it returned (and changed, if asked).
    Read,
    /// The program said this first.
    Said(Message),
    /// Not seen: the program made no such system call in time, or the grader may not trace.
    NotSeen,
}

/// Holds `pid` as its next `clock_gettime(CLOCK_REALTIME)` returns and, with `to`, writes that
/// time in the `timespec` it returns.
fn next_clock_read(proc: &mut Proc, pid: i32, to: Option<Duration>) -> Result<ClockRead, Fail> {
    let call = Call::arg_is(libc::SYS_clock_gettime, 0, libc::CLOCK_REALTIME as u64);
    let Some(mut tracer) = Tracer::attach(pid, call, Action::HoldAfter)? else {
        return Ok(ClockRead::NotSeen);
    };
    match tracer.wait(proc, Instant::now() + WAIT_SLICE * 10) {
        Ok(Reached::Call) => {}
        Ok(Reached::Passed(Some(message))) => return Ok(ClockRead::Said(message)),
        Ok(Reached::Passed(None)) | Err(Fail::TimedOut(_)) => return Ok(ClockRead::NotSeen),
        Err(other) => return Err(other),
    }
    if let Some(to) = to {
        // Held at the call's exit, its arguments still in the registers.
        let Some((_, args)) = inspect::call_of(pid, pid) else {
            tracer.release();
            return Ok(ClockRead::NotSeen);
        };
        write_time(pid, args[1], to)?;
    }
    tracer.release();
    Ok(ClockRead::Read)
}

/// With no `CLOCK_REALTIME` read seen, holds `pid` as its next `clock_gettime()` of any clock
/// returns: that clock, if it is not on `CLOCK_REALTIME`'s time (`CLOCK_REALTIME_COARSE` is).
fn other_clock_read(proc: &mut Proc, pid: i32) -> Result<Option<u64>, Fail> {
    let Some(mut tracer) =
        Tracer::attach(pid, Call::any(libc::SYS_clock_gettime), Action::HoldAfter)?
    else {
        return Ok(None);
    };
    match tracer.wait(proc, Instant::now() + WAIT_SLICE * 5) {
        Ok(Reached::Call) => {}
        Ok(Reached::Passed(Some(message))) => {
            proc.put_back(message);
            return Ok(None);
        }
        Ok(Reached::Passed(None)) | Err(Fail::TimedOut(_)) => return Ok(None),
        Err(other) => return Err(other),
    }
    let clock = inspect::call_of(pid, pid).map(|(_, args)| args[0]);
    tracer.release();
    Ok(clock.filter(|&clock| {
        clock != libc::CLOCK_REALTIME as u64 && clock != libc::CLOCK_REALTIME_COARSE as u64
    }))
}

/// `secs.nanos`, as a time is written.
fn time(at: Duration) -> String {
    format!("{}.{:09}", at.as_secs(), at.subsec_nanos())
}

/// The deadline of each timed wait is valid whatever the clock shows: the grader holds the
/// consumer before a record and sets the clock the producer reads in its wait for ok to
/// S.899999999, S.900000000 and S.900000001 (S two seconds back, so that each wait times out
/// at once and reads the clock again): now + WAIT_SLICE is a whole second at the middle one,
/// whose nanoseconds a carry made only past 1,000,000,000 leaves at 1,000,000,000, which
/// `sem_timedwait()` refuses (EINVAL). The producer must wait on through all three.
pub fn deadline_edges(run: &mut Run) -> Result<String, Fail> {
    let names = [run.ipc_name("ready"), run.ipc_name("ok")];
    let at = run.rng().random_range(5..20u64);
    let held = at.to_string();
    let extra = ["--pause-consumer-at", held.as_str()];
    let (launch, hidden) = launch_without_vdso(run, "semaphores", names, at + 5, &extra)?;
    let mut handover = launch.ready()?;
    let producer = handover.producer;
    let mut note = "the clock was not set (the grader may not trace here)".to_string();
    let reports = handover.finish(|proc, _| {
        if hidden {
            note = set_edges(proc, producer)?;
        }
        proc.send("go", &[])
    })?;
    handover.verify(
        &reports,
        "semaphores, the producer's clock set by the grader",
    )?;
    Ok(note)
}

/// Sets the producer's clock to each of [`EDGES`] in turn, then waits for one more read: the
/// producer has then gone through a wait with each.
fn set_edges(proc: &mut Proc, producer: i32) -> Result<String, Fail> {
    let secs = realtime().as_secs().saturating_sub(2);
    let mut set: Vec<Duration> = Vec::new();
    for to in EDGES
        .iter()
        .map(|&nanos| Some(Duration::new(secs, nanos)))
        .chain([None])
    {
        match next_clock_read(proc, producer, to)? {
            ClockRead::Read => set.extend(to),
            ClockRead::NotSeen if set.is_empty() => {
                // No CLOCK_REALTIME read while it waits: which clock does it read?
                if let Some(clock) = other_clock_read(proc, producer)? {
                    return Err(Fail::failed(format!(
                        "{PRODUCER}, waiting for ok (the consumer held), read {} before its \
                         timed waits, and never CLOCK_REALTIME: sem_timedwait() and \
                         mq_timedreceive() measure their absolute deadline on CLOCK_REALTIME, so \
                         the deadline is now + WAIT_SLICE on that clock. {}",
                        clock_name(clock as i32),
                        if clock == libc::CLOCK_TAI as u64 {
                            "CLOCK_TAI is CLOCK_REALTIME plus the kernel's TAI offset, 0 unless \
                             a time daemon sets it and 37 s when one does: every slice would \
                             then last 37 s longer, and a dead peer be noticed that late"
                        } else {
                            "A deadline on another clock is not now + WAIT_SLICE on the clock \
                             the wait reads"
                        }
                    )));
                }
                return Ok("the clock was not set (no clock read of the producer seen)".into());
            }
            // Gone before the grader could trace it again: what did it say?
            ClockRead::NotSeen => match proc.recv_before(Instant::now() + WAIT_SLICE * 5)? {
                Some(message) => return Err(judge(&message, &set)),
                None => break,
            },
            ClockRead::Said(message) => return Err(judge(&message, &set)),
        }
    }
    let exact = exact_deadline(producer)?;
    let jumped = clock_jump(proc, producer)?;
    let stopped = monotonic_jump(proc, producer)?;
    Ok(format!(
        "the producer waited on with its clock set to {}; {exact}; {jumped}; {stopped}",
        set.iter()
            .map(|&at| time(at))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// How far a deadline may be from the clock read the grader set + WAIT_SLICE: a program that
/// rounds the time to the millisecond on its way.
const DEADLINE_MARGIN: Duration = Duration::from_millis(1);

/// The deadline is now + WAIT_SLICE, from one clock read: the grader holds the producer as its
/// next `CLOCK_REALTIME` read returns, writes a time of its own there (two seconds back, with
/// nanoseconds of its choosing, so that the wait times out at once), and holds it again at the
/// entry of its timed wait: the deadline must be that time + WAIT_SLICE. A deadline on the real
/// clock (a later read used instead) is let pass.
fn exact_deadline(producer: i32) -> Result<String, Fail> {
    let Some(wait) = waiting_in(producer).and_then(the_wait) else {
        return Ok("the producer was seen in no timed wait for its deadline".into());
    };
    let read = Call::arg_is(libc::SYS_clock_gettime, 0, libc::CLOCK_REALTIME as u64);
    let Some(mut tracer) =
        Tracer::in_turn(producer, [(read, Step::HoldAfter), (wait, Step::Hold)])?
    else {
        return Ok("the deadline not read (no ptrace)".into());
    };
    if !tracer.held_before(Instant::now() + WAIT_SLICE * 10)? {
        return Ok("no clock read of the producer seen for its deadline".into());
    }
    // Nanoseconds half a second from those of the real clock.
    let real = realtime();
    let nanos = (real.subsec_nanos() + 500_000_000) % 1_000_000_000;
    let to = Duration::new(real.as_secs().saturating_sub(2), nanos);
    let Some((_, args)) = inspect::call_of(producer, producer) else {
        tracer.go_on();
        return Ok("the deadline not read (the clock read not seen)".into());
    };
    let mut time_set = [0u8; 16];
    time_set[..8].copy_from_slice(&(to.as_secs() as i64).to_ne_bytes());
    time_set[8..].copy_from_slice(&i64::from(to.subsec_nanos()).to_ne_bytes());
    super::probe::poke(producer, args[1], &time_set)?;
    tracer.go_on();
    if !tracer.held_before(Instant::now() + WAIT_SLICE * 5)? {
        return Ok("the timed wait after the clock read not seen".into());
    }
    let before = realtime();
    let deadline = super::probe::realtime_deadline(producer);
    tracer.release();
    let Some(deadline) = deadline else {
        return Ok("the deadline not read".into());
    };
    let expected = to + WAIT_SLICE;
    let off = deadline.abs_diff(expected);
    // A later read of the real clock, used for the deadline: a deadline now + WAIT_SLICE too.
    let on_real_clock = deadline + WAIT_SLICE * 10 >= before && deadline <= realtime() + WAIT_SLICE;
    if off <= DEADLINE_MARGIN || on_real_clock {
        return Ok(format!(
            "its deadline was the clock read the grader set ({}) + WAIT_SLICE",
            time(to)
        ));
    }
    let seen = format!(
        "the grader held {PRODUCER} in its wait for ok (the consumer held) as a clock read \
         (CLOCK_REALTIME) returned, set that read to {}, and held it again at the entry of its \
         timed wait: the deadline was {}",
        time(to),
        time(deadline)
    );
    // The seconds of one read, the nanoseconds of another (the real clock's).
    let same_seconds = deadline.as_secs() == expected.as_secs()
        || deadline.as_secs() == to.as_secs()
        || deadline.as_secs() == to.as_secs() + 1;
    let real_nanos = Duration::from_nanos(u64::from(
        (deadline.subsec_nanos() + 1_000_000_000 - WAIT_SLICE.subsec_nanos()) % 1_000_000_000,
    ));
    let real_now = Duration::from_nanos(u64::from(before.subsec_nanos()));
    let from_real = real_nanos.abs_diff(real_now) < Duration::from_millis(50)
        || real_nanos.abs_diff(real_now) > Duration::from_millis(950);
    if same_seconds && from_real {
        return Err(Fail::failed(format!(
            "{seen}: its seconds are those of the read the grader set, its nanoseconds those \
             of the real clock ({}.{:09} s then): the deadline was built from two clock reads \
             (tv_sec of one, tv_nsec of another), which near a second's end gives a deadline a \
             second off. Read the clock once per slice and add WAIT_SLICE to that one timespec",
            before.as_secs(),
            before.subsec_nanos()
        )));
    }
    if deadline > to && deadline - to > WAIT_SLICE && deadline - to < Duration::from_secs(1) {
        return Err(Fail::failed(format!(
            "{seen}, {} after the clock read, not WAIT_SLICE ({} ms): each slice's deadline is \
             now + WAIT_SLICE exactly; a longer slice notices a dead peer that much later",
            super::waits::millis(deadline - to),
            WAIT_SLICE.as_millis()
        )));
    }
    if deadline > to && deadline - to < WAIT_SLICE {
        return Err(Fail::failed(format!(
            "{seen}, {} after the clock read, not WAIT_SLICE ({} ms): each slice's deadline is \
             now + WAIT_SLICE exactly",
            super::waits::millis(deadline - to),
            WAIT_SLICE.as_millis()
        )));
    }
    Err(Fail::failed(format!(
        "{seen}, not that read + WAIT_SLICE ({}): the deadline was not now + WAIT_SLICE from \
         the clock read just before the wait (several reads combined, a time kept from \
         earlier, or another computation)",
        time(expected)
    )))
}

/// The producer's clock stepped forward by [`JUMP`] for one slice within its wait for ok: the
/// grader holds it as its next `CLOCK_REALTIME` read returns, writes now + JUMP there, and makes
/// the timed wait that follows time out at once (its deadline is far ahead of the real clock).
/// The consumer, held, is alive: a slice that times out is waited again, however long the wait
/// has lasted by the clock.
fn clock_jump(proc: &mut Proc, producer: i32) -> Result<String, Fail> {
    let Some(wait) = waiting_in(producer).and_then(the_wait) else {
        return Ok("the producer was seen in no timed wait for the clock's jump".into());
    };
    let read = Call::arg_is(libc::SYS_clock_gettime, 0, libc::CLOCK_REALTIME as u64);
    let Some(mut tracer) = Tracer::in_turn(
        producer,
        [(read, Step::HoldAfter), (wait, Step::Fail(libc::ETIMEDOUT))],
    )?
    else {
        return Ok("the clock's jump not tried (no ptrace)".into());
    };
    if !tracer.held_before(Instant::now() + WAIT_SLICE * 10)? {
        return Ok("no clock read of the producer seen for the clock's jump".into());
    }
    let to = realtime() + JUMP;
    let Some((_, args)) = inspect::call_of(producer, producer) else {
        tracer.go_on();
        return Ok("the clock's jump not tried (its read not seen)".into());
    };
    write_time(producer, args[1], to)?;
    tracer.go_on();
    if !tracer.failed_before(Instant::now() + WAIT_SLICE * 5)? {
        return Ok("the wait after the clock's jump not seen".into());
    }
    match proc.recv_before(Instant::now() + WAIT_SLICE * 3)? {
        Some(message) if gave_up(&message) => Err(Fail::failed(format!(
            "the grader held the consumer, alive, and moved the clock {PRODUCER} reads in \
                 its wait for ok (CLOCK_REALTIME) {} s forward for one slice, as NTP or a resume \
                 from suspend step it, and made that slice time out (ETIMEDOUT): {PRODUCER} then \
                 gave up with kind=peer-gone. When a slice times out, ask Peer::gone() and wait \
                 again while the peer is there, however long the wait has lasted by the clock: \
                 a slow or stopped peer (Ctrl-Z, a debugger) is not a dead one",
            JUMP.as_secs()
        ))),
        Some(message) => Err(judge(&message, &[])),
        None => Ok(format!(
            "and waited on after a slice with its clock {} s ahead",
            JUMP.as_secs()
        )),
    }
}

/// The clocks that measure elapsed time, on which a patience would be counted: `Instant`'s,
/// and those a program picks so that a set `CLOCK_REALTIME` or a suspend does not move it.
const ELAPSED_CLOCKS: &[Call] = &[
    Call::arg_is(libc::SYS_clock_gettime, 0, libc::CLOCK_MONOTONIC as u64),
    Call::arg_is(libc::SYS_clock_gettime, 0, libc::CLOCK_BOOTTIME as u64),
    Call::arg_is(libc::SYS_clock_gettime, 0, libc::CLOCK_MONOTONIC_RAW as u64),
    Call::arg_is(
        libc::SYS_clock_gettime,
        0,
        libc::CLOCK_MONOTONIC_COARSE as u64,
    ),
    Call::arg_is(
        libc::SYS_clock_gettime,
        0,
        libc::CLOCK_BOOTTIME_ALARM as u64,
    ),
];

/// A stop of [`JUMP`] within the producer's wait for ok, as SIGSTOP, a debugger or a paused
/// machine make one: the grader holds it as its next read of a clock of elapsed time returns
/// (`CLOCK_MONOTONIC`, which `Instant` reads, `CLOCK_BOOTTIME`, ..., once a slice has timed
/// out) and writes that clock plus JUMP there. The consumer, held, is alive: the producer must
/// wait on, however long it has waited. A wait that reads no such clock is let be.
fn monotonic_jump(proc: &mut Proc, producer: i32) -> Result<String, Fail> {
    let read = Call::any_of(ELAPSED_CLOCKS);
    let Some(mut tracer) = Tracer::attach(producer, read, Action::HoldAfter)? else {
        return Ok("the stop of the monotonic clock not tried (no ptrace)".into());
    };
    match tracer.wait(proc, Instant::now() + WAIT_SLICE * 3) {
        Ok(Reached::Call) => {}
        Ok(Reached::Passed(Some(message))) => return Err(judge(&message, &[])),
        Ok(Reached::Passed(None)) | Err(Fail::TimedOut(_)) => {
            return Ok("the producer read no clock of elapsed time in 3 slices of its wait".into());
        }
        Err(other) => return Err(other),
    }
    let Some((_, args)) = inspect::call_of(producer, producer) else {
        tracer.release();
        return Ok("the stop of the monotonic clock not tried (its read not seen)".into());
    };
    let clock = args[0] as libc::clockid_t;
    let to = Duration::from(
        nix::time::clock_gettime(nix::time::ClockId::from_raw(clock))
            .map_err(|e| Fail::Grader(format!("{}: {e}", clock_name(clock))))?,
    ) + JUMP;
    write_time(producer, args[1], to)?;
    tracer.release();
    match proc.recv_before(Instant::now() + WAIT_SLICE * 3)? {
        Some(message) if gave_up(&message) => Err(Fail::failed(format!(
            "the grader held the consumer, alive, and moved the {} {PRODUCER} read in its wait \
             for ok {} s forward, as a stop that long (Ctrl-Z, a debugger, a paused machine) \
             would: {PRODUCER} then gave up with kind=peer-gone. A wait gives up only when \
             Peer::gone() says the peer is gone, never after some time however long, on \
             whatever clock: a slow or stopped peer is not a dead one",
            clock_name(clock),
            JUMP.as_secs()
        ))),
        Some(message) => Err(judge(&message, &[])),
        None => Ok(format!(
            "waited on after its {} moved {} s forward",
            clock_name(clock),
            JUMP.as_secs()
        )),
    }
}

/// Whether the producer said it gave up on its peer (`failed`, kind=peer-gone).
fn gave_up(message: &Message) -> bool {
    message.kind == "failed"
        && message.get("role") == Some("producer")
        && message.get("kind") == Some("peer-gone")
}

/// What the program's report after a clock the grader set means.
fn judge(message: &Message, set: &[Duration]) -> Fail {
    let Some(&last) = set.last() else {
        return report_failure(message, "semaphores");
    };
    if message.kind != "failed"
        || message.get("role") != Some("producer")
        || message.get("kind") != Some("wait")
    {
        return report_failure(message, "semaphores");
    }
    let deadline = last + WAIT_SLICE;
    let before: Vec<String> = set[..set.len() - 1].iter().map(|&at| time(at)).collect();
    let went_on = if before.is_empty() {
        String::new()
    } else {
        format!(" (it had waited on after {})", before.join(" and "))
    };
    let carry = if last.subsec_nanos() == 900_000_000 {
        "when the nanoseconds of now + WAIT_SLICE reach 1,000,000,000 exactly, they carry into \
         the seconds too (>=, not >)"
    } else {
        "the nanoseconds of now + WAIT_SLICE carry into the seconds when, and only when, they \
         reach 1,000,000,000"
    };
    Fail::failed(format!(
        "the grader set the clock {PRODUCER} reads in its wait for ok (CLOCK_REALTIME) to {} s, \
         so that now + WAIT_SLICE is {}.{:09} s{went_on}: {PRODUCER} then failed with kind=wait \
         ({}). Its deadline was not a valid time: a timespec's tv_nsec must stay under \
         1,000,000,000, or sem_timedwait() says EINVAL; {carry}. Add WAIT_SLICE with TimeSpec \
         arithmetic, or carry by hand for every value the clock can show",
        time(last),
        deadline.as_secs(),
        deadline.subsec_nanos(),
        message.get("error").unwrap_or("")
    ))
}
