//! A take's deadline is read from `CLOCK_REALTIME` as the take begins: the grader stops a pair
//! on an empty pool at each `clock_gettime()` from its `go` to its take's `mq_timedreceive()`
//! and makes each `CLOCK_REALTIME` read return the real time less [`SET_BACK`] (the wall clock
//! set back, as an administrator or NTP may). The deadline `mq_timedreceive()` is given must
//! be that time + the timeout: one counted on from an earlier read (at `Pool::open`) with
//! `CLOCK_MONOTONIC`'s time since is off by the whole step. The timeout is that of the take,
//! short ones too ([`TIMEOUTS_MS`]): a deadline the read + another span waits another time.

use std::time::{Duration, Instant};

use super::deadline_carry::{read_timespec, write_memory};
use super::pool::{PairOptions, pair_ready, spawn_pair};
use crate::engine::tracer::{AT_CALL, Breakpoint, Call, Tracer};
use crate::engine::{Fail, Run, inspect};

/// How far back the grader sets the pair's wall clock, in seconds.
const SET_BACK: i64 = 3600;
/// The pairs' timeouts: short, as the pool stays empty; one well under a second, and the
/// shortest a pair is given.
const TIMEOUTS_MS: [u64; 2] = [400, 1];
/// How far from the read + the timeout a deadline counted from a clock not set back lies, at
/// most (the time the pair took from its read to its call, stopped at each).
const OTHER_CLOCK_SLACK_S: i64 = 30;
/// How far a deadline may lie from the read + the timeout (the read's own rounding).
const SLACK_NS: i64 = 1_000_000;

/// The calls the pair is stopped at besides the C library's `clock_gettime()`: the clock read
/// that bypasses it, and the take's wait.
const CALLS: &[Call] = &[
    Call::any(libc::SYS_clock_gettime),
    Call::any(libc::SYS_mq_timedreceive),
];

/// Pairs on the pool `prefix`, whose ids the grader holds, take with their clock set back, one
/// for each of [`TIMEOUTS_MS`].
pub fn take_reads_the_wall_clock(run: &mut Run, prefix: &str, seed: u64) -> Result<(), Fail> {
    for (index, timeout_ms) in (150..).zip(TIMEOUTS_MS) {
        take_with_clock_set_back(run, prefix, seed, index, timeout_ms)?;
    }
    Ok(())
}

fn take_with_clock_set_back(
    run: &mut Run,
    prefix: &str,
    seed: u64,
    index: u64,
    timeout_ms: u64,
) -> Result<(), Fail> {
    let options = PairOptions {
        timeout_ms: Some(timeout_ms),
        ..Default::default()
    };
    let mut pair = spawn_pair(run, prefix, index, seed, 1000, &options)?;
    pair_ready(&mut pair, index)?;
    let pid = pair.pid.as_raw();
    let Some(mut tracer) =
        Tracer::break_at_functions_and_call(pid, &[c"clock_gettime"], Call::any_of(CALLS))?
    else {
        pair.kill_tree();
        return Ok(());
    };
    pair.send("go", &[])?;
    let until = Instant::now() + Duration::from_secs(3);
    // The last CLOCK_REALTIME read forged; a read the grader could not forge (the system call).
    let mut forged: Option<(i64, i64)> = None;
    let mut unforged = false;
    let mut deadline: Option<(i64, i64)> = None;
    while Instant::now() < until {
        let [first, second] = match tracer.next_break(Instant::now() + Duration::from_millis(5))? {
            Some(Breakpoint::At(args)) => args,
            Some(Breakpoint::Armed) | None => continue,
            Some(Breakpoint::Lost | Breakpoint::Unavailable) => break,
        };
        if tracer.last_break() == AT_CALL {
            match inspect::call_of(pid, pid) {
                Some((number, args)) if number == libc::SYS_mq_timedreceive => {
                    deadline = read_timespec(pid, args[4]);
                    break;
                }
                Some((_, args)) if args[0] as i32 == libc::CLOCK_REALTIME => unforged = true,
                _ => {}
            }
            tracer.go_on();
            continue;
        }
        if first as i32 == libc::CLOCK_REALTIME && second != 0 {
            let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME)
                .map_err(|e| Fail::Grader(format!("clock_gettime: {e}")))?;
            let set_back = (now.tv_sec() - SET_BACK, now.tv_nsec());
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&set_back.0.to_ne_bytes());
            bytes[8..].copy_from_slice(&set_back.1.to_ne_bytes());
            if write_memory(pid, second, &bytes) {
                forged = Some(set_back);
                tracer.return_now(0);
                continue;
            }
            unforged = true;
        }
        tracer.go_on();
    }
    tracer.release();
    let answer = pair.recv_any();
    pair.kill_tree();
    answer?;
    let (Some(deadline), false) = (deadline, unforged) else {
        // No take's mq_timedreceive() seen (judged elsewhere), or a read the grader could not
        // set back: nothing to compare.
        return Ok(());
    };
    let nanos = |(s, ns): (i64, i64)| i128::from(s) * 1_000_000_000 + i128::from(ns);
    let timeout = i128::from(timeout_ms) * 1_000_000;
    let setting = format!(
        "the grader stopped a pair on an empty pool (ptrace) at each clock_gettime() from its \
         `go` to its take's mq_timedreceive(), and made each CLOCK_REALTIME read return the \
         real time less {SET_BACK} s (the wall clock set back, as an administrator or NTP may); \
         its timeout was {timeout_ms} ms"
    );
    let Some(read) = forged else {
        return Err(Fail::failed(format!(
            "{setting}: it read no CLOCK_REALTIME at all before its mq_timedreceive(), whose \
             deadline was {}.{:09}: the take's deadline was not read from the real-time clock \
             as the take began (counted on from an earlier read, at Pool::open, with \
             CLOCK_MONOTONIC's time since, or kept from before), which is wrong once the wall \
             clock is set. A take's deadline is clock_gettime(CLOCK_REALTIME) + the timeout, \
             read as the take begins",
            deadline.0, deadline.1
        )));
    };
    let off = nanos(deadline) - (nanos(read) + timeout);
    if off.abs() <= i128::from(SLACK_NS) {
        return Ok(());
    }
    let found = format!(
        "{setting}: its last read said {}.{:09}, and its mq_timedreceive() deadline was \
         {}.{:09}",
        read.0, read.1, deadline.0, deadline.1
    );
    let waited = nanos(deadline) - nanos(read);
    let step = i128::from(SET_BACK) * 1_000_000_000;
    let other_clock = (off - step).abs() <= i128::from(OTHER_CLOCK_SLACK_S) * 1_000_000_000;
    let why = if !other_clock && waited > 0 && off.abs() < step / 2 {
        // Counted from this read, but not with this timeout: the take waits another time.
        format!(
            "{found}, {:.3} s after that read, where the timeout was {:.3} s: the deadline was \
             counted from the CLOCK_REALTIME read of this take, but with another span than its \
             timeout ({}): take() waits {} than it was asked. A take's deadline is \
             clock_gettime(CLOCK_REALTIME) + the timeout itself, short ones too",
            waited as f64 / 1e9,
            timeout as f64 / 1e9,
            if waited > timeout {
                "a floor under short timeouts, or one rounded up"
            } else {
                "a part of it dropped, or one rounded down"
            },
            if waited > timeout { "longer" } else { "less" },
        )
    } else {
        let which = if other_clock {
            "it is the time of a clock the grader did not set back (the real time, or an \
             earlier read moved on with CLOCK_MONOTONIC's time) + the timeout"
        } else {
            "another clock's time added, or an earlier read kept"
        };
        format!(
            "{found}, {:.3} s from that + the timeout: the deadline was not counted from the \
             CLOCK_REALTIME read of this take ({which}), which is wrong once the wall clock is \
             set. A take's deadline is clock_gettime(CLOCK_REALTIME) + the timeout, read as the \
             take begins",
            off as f64 / 1e9
        )
    };
    Err(Fail::failed(why))
}
