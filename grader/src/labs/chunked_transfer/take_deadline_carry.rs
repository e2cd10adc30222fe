//! A take's deadline is a valid time too: `mq_timedreceive()` is given now + the timeout, its
//! nanoseconds carried into the seconds from exactly 10^9 on. Three pairs on a pool of three,
//! each stopped at every call of the C library's `clock_gettime()` from its `go` to the entry of
//! its `mq_timedreceive()`; each `CLOCK_REALTIME` read returns the real second with nanoseconds
//! that, with the timeout's fraction of a second, sum to exactly one second (one pair), one
//! nanosecond less and one more (the others). The deadline read at the call's entry must have
//! `tv_nsec` below 10^9, and the take must give the pair its id.

use std::time::{Duration, Instant};

use super::deadline_carry::{read_timespec, write_memory};
use super::layout::MIN_SEGMENT;
use super::pool::{PairOptions, PoolNames, pair_ready, pool_ready, spawn_pair, spawn_pool};
use super::transfer::said;
use crate::engine::tracer::{AT_CALL, Breakpoint, Call, Tracer};
use crate::engine::{Fail, Proc, Run, inspect};

/// How the forged nanoseconds of each pair lie against the edge.
const AROUND_THE_EDGE: [i64; 3] = [0, -1, 1];
/// How long a pair may take from its `go` to its `mq_timedreceive()`, stopped at each read.
const SET_UP: Duration = Duration::from_secs(5);

/// What one pair's take was seen doing.
struct Take {
    /// The last `CLOCK_REALTIME` read forged: seconds, nanoseconds.
    forged: Option<(i64, i64)>,
    /// The deadline `mq_timedreceive()` was given.
    deadline: Option<(i64, i64)>,
}

pub fn take_deadline_carry(run: &mut Run, timeout_ms: u64, edge: i64) -> Result<String, Fail> {
    let names = PoolNames::new(run, "carry", AROUND_THE_EDGE.len());
    let mut pool = spawn_pool(run, &names, MIN_SEGMENT)?;
    let judged = takes_at_the_edge(run, &names, &mut pool, timeout_ms, edge);
    pool.kill_tree();
    names.remove();
    judged
}

fn takes_at_the_edge(
    run: &mut Run,
    names: &PoolNames,
    pool: &mut Proc,
    timeout_ms: u64,
    edge: i64,
) -> Result<String, Fail> {
    pool_ready(pool, names, MIN_SEGMENT)?;
    let options = PairOptions {
        timeout_ms: Some(timeout_ms),
        ..PairOptions::default()
    };
    let mut pairs = Vec::new();
    for index in 0..AROUND_THE_EDGE.len() as u64 {
        let mut pair = spawn_pair(run, &names.prefix, index, index + 1, 0, &options)?;
        pair_ready(&mut pair, index)?;
        const CALLS: &[i64] = &[libc::SYS_mq_timedreceive];
        let Some(tracer) = Tracer::break_at_functions_and_call(
            pair.pid.as_raw(),
            &[c"clock_gettime"],
            Call::one_of(CALLS),
        )?
        else {
            pair.kill_tree();
            for (pair, _) in pairs {
                Proc::kill_tree(&pair);
            }
            return Ok("a take's deadline could not be followed here (no ptrace)".into());
        };
        pairs.push((pair, tracer));
    }
    let timeout = format!("{}.{:03} s", timeout_ms / 1000, timeout_ms % 1000);
    let fraction = (timeout_ms % 1000) as i64 * 1_000_000;
    let mut verdict = Ok(());
    for (index, (mut pair, tracer)) in pairs.into_iter().enumerate() {
        pair.send("go", &[])?;
        let take = follow_take(&mut pair, tracer, edge + AROUND_THE_EDGE[index])?;
        let answer = pair.recv_before(Instant::now() + SET_UP)?;
        pair.kill_tree();
        if verdict.is_err() {
            continue;
        }
        let (Some((s, ns)), Some((ds, dns))) = (take.forged, take.deadline) else {
            // Never seen reading the clock or entering its wait: judged by the other checks.
            continue;
        };
        let sum = match ns + fraction {
            1_000_000_000 => "exactly one second".to_string(),
            sum => format!("{sum} ns"),
        };
        let asked = format!(
            "the grader made a pair's clock_gettime(CLOCK_REALTIME) read {s}.{ns:09} s (ptrace; \
             the real second, nanoseconds of its choosing), and with its timeout of {timeout} \
             its take() then called mq_timedreceive() with the deadline tv_sec = {ds}, tv_nsec = \
             {dns}"
        );
        if !(0..1_000_000_000).contains(&dns) {
            verdict = Err(Fail::failed(format!(
                "{asked}: a tv_nsec of 10^9 or more, which mq_timedreceive() refuses with \
                 EINVAL (the pair said {}). The nanoseconds of now + the timeout, summing to \
                 {sum}, were not carried into the seconds: carry whenever they reach \
                 1_000_000_000 (>=, not >), or add with TimeSpec (now + \
                 TimeSpec::from_duration(timeout)), which normalizes; take() and the semaphore \
                 waits alike",
                answer.as_ref().map_or("nothing".into(), said)
            )));
            continue;
        }
        if let Some(answer) = answer.filter(|answer| answer.kind != "took") {
            verdict = Err(Fail::failed(format!(
                "{asked}, a valid time, and the pool had a free id for it, but the pair said {}: \
                 take() returns the id on the queue",
                said(&answer)
            )));
        }
    }
    verdict?;
    Ok(format!(
        "three takes whose CLOCK_REALTIME reads were made to return nanoseconds of {edge} and one \
         either side, with a timeout of {timeout}, gave mq_timedreceive() deadlines with their \
         nanoseconds carried, and took their ids"
    ))
}

/// Lets the pair run to the entry of its `mq_timedreceive()`, making each `CLOCK_REALTIME` read
/// return the real second and `nanos`; reads the deadline there, then lets it go.
fn follow_take(pair: &mut Proc, mut tracer: Tracer, nanos: i64) -> Result<Take, Fail> {
    let pid = pair.pid.as_raw();
    let until = Instant::now() + SET_UP;
    let mut take = Take {
        forged: None,
        deadline: None,
    };
    while Instant::now() < until {
        let Some(stop) = tracer.next_break(Instant::now() + Duration::from_millis(2))? else {
            continue;
        };
        let [clock, into] = match stop {
            Breakpoint::At(args) => args,
            Breakpoint::Armed => continue,
            Breakpoint::Lost | Breakpoint::Unavailable => break,
        };
        if tracer.last_break() == AT_CALL {
            take.deadline = inspect::call_of(pid, pid)
                .filter(|(nr, args)| *nr == libc::SYS_mq_timedreceive && args[4] != 0)
                .and_then(|(_, args)| read_timespec(pid, args[4]));
            break;
        }
        if clock as i32 == libc::CLOCK_REALTIME && into != 0 {
            let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME)
                .map_err(|e| Fail::Grader(format!("clock_gettime: {e}")))?;
            let forged = (now.tv_sec(), nanos);
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&forged.0.to_ne_bytes());
            bytes[8..].copy_from_slice(&forged.1.to_ne_bytes());
            if write_memory(pid, into, &bytes) {
                take.forged = Some(forged);
                tracer.return_now(0);
                continue;
            }
        }
        tracer.go_on();
    }
    tracer.release();
    Ok(take)
}
