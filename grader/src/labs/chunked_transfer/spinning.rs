//! How a wait is made, counted at the semaphore itself: a receiver waits on a segment where
//! nothing is ever posted, and a sender on a full ring nobody empties, each with a hardware
//! watchpoint (loads included) on the count word of the semaphore it waits on.
//! The C library's `sem_timedwait()` looks at the word a few times and sleeps in the kernel;
//! a program that tries the semaphore in a loop first (`sem_trywait()`, `sem_getvalue()`), or
//! instead, touches it at every try. Where it then blocks, /proc finds nothing wrong: only the
//! count of accesses tells. And a receiver's deadline, read from its memory, bounded from above:
//! a timeout rounded up lies past now + the timeout.

use std::time::{Duration, Instant};

use crate::engine::tracer::{Call, Field, Tracer, Watched};
use crate::engine::{Fail, Run, force};

use super::layout::{MIN_SEGMENT, Mapped};

/// The count word of `empty` (the first `sem_t`), watched for loads and stores.
const EMPTY_WORD: &[Field] = &[Field {
    offset: 0,
    len: 8,
    loads: true,
}];

/// The count word of `full` (the second `sem_t`, at offset 32), watched for loads and stores.
const FULL_WORD: &[Field] = &[Field {
    offset: 32,
    len: 8,
    loads: true,
}];

/// The timeout of the program watched here: its wait that blocks ends with it.
const TIMEOUT_MS: u64 = 300;

/// The most accesses to its semaphore the receiver's one wait may make here: it blocks and
/// times out. glibc's `sem_timedwait()` makes 3 (a look, a waiter registered, the waiter
/// removed: the futex wait is the kernel's); a look of the program's own before it (one
/// `sem_trywait()`) fits, a loop of tries, one access per try, does not.
const RECEIVER_MOST_ACCESSES: u64 = 6;

/// The same for the sender's three waits: two that succeed at once (2 each: a look, the
/// decrement) and one that blocks and times out (3), with the same room.
const SENDER_MOST_ACCESSES: u64 = 10;

/// Past this many, the grader stops counting: the verdict is the same.
const ENOUGH: u64 = 2000;

/// A receiver on a 4 KiB segment of the grader's where nothing is posted, and a sender of three
/// chunks with no receiver: from its `go` until it says it timed out, each side's accesses to
/// the semaphore it waits on must be few (waits that block), not one per try of a loop. The
/// counts, for the check's message (`None` where the machine does not allow the watchpoint).
pub fn wait_accesses(run: &mut Run) -> Result<[Option<u64>; 2], Fail> {
    // The receiver's segment, made by the grader; the sender makes its own.
    let receiving = run.ipc_name("spin-receiver");
    let mapped = Mapped::create(run, &receiving, MIN_SEGMENT, true)?;
    let receiver_args = super::headers::one_message_receiver(&receiving, TIMEOUT_MS);
    let sending = run.ipc_name("spin-sender");
    let len = (3 * super::layout::expected_capacity(MIN_SEGMENT)).to_string();
    let sender_args = [
        "send",
        "--name",
        &sending,
        "--size",
        &MIN_SEGMENT.to_string(),
        "--seed",
        "1",
        "--lens",
        &len,
        "--timeout-ms",
        &TIMEOUT_MS.to_string(),
    ]
    .map(String::from);
    let receiver = "a receiver given `go` on a segment where nothing is ever posted";
    let sender = "a sender given `go` with a message of three chunks and no receiver (it fills \
                  both slots, then waits for one to be freed)";
    // Both watched at once: each waits out its timeout.
    let watched_receiver = start_watched(run, &receiver_args, FULL_WORD, receiver);
    let watched_sender = start_watched(run, &sender_args, EMPTY_WORD, sender);
    let counted = std::thread::scope(|scope| {
        [
            (watched_receiver, receiver, RECEIVER_MOST_ACCESSES),
            (watched_sender, sender, SENDER_MOST_ACCESSES),
        ]
        .map(|(started, who, most)| {
            scope.spawn(move || {
                let (mut proc, watch) = started?;
                let counted = count_accesses(&mut proc, watch, who, most);
                proc.kill_tree();
                counted
            })
        })
        .map(|counting| counting.join().expect("a counting thread panicked"))
    });
    drop(mapped);
    let _ = nix::sys::mman::shm_unlink(receiving.as_str());
    let _ = nix::sys::mman::shm_unlink(sending.as_str());
    let [received, sent] = counted;
    let receiver = judge(received?, receiver, "`full`", "the receiver", "its sender")?;
    let sender = judge(sent?, sender, "`empty`", "the sender", "its receiver")?;
    deadline_within_timeout(run)?;
    Ok([receiver, sender])
}

/// A receiver on a 4 KiB segment of the grader's where nothing is posted, given a timeout of
/// [`TIMEOUT_MS`] (a part of a second): once it sleeps in its timed wait, the deadline read from
/// its memory is at most the grader's clock now + the timeout, since the program took it before
/// now. Past that, the wait is longer than its timeout (rounded up to whole seconds).
fn deadline_within_timeout(run: &mut Run) -> Result<(), Fail> {
    let name = run.ipc_name("deadline");
    let mapped = Mapped::create(run, &name, MIN_SEGMENT, true)?;
    let args = super::headers::one_message_receiver(&name, TIMEOUT_MS);
    let mut receiver = run.spawn(&args)?;
    receiver.set_roles(|_| "a receiver waiting on a segment where nothing is posted".into());
    let judged = judge_deadline(&mut receiver);
    receiver.kill_tree();
    drop(mapped);
    let _ = nix::sys::mman::shm_unlink(name.as_str());
    judged
}

fn judge_deadline(receiver: &mut crate::engine::Proc) -> Result<(), Fail> {
    let ready = receiver.recv_any()?;
    if ready.kind != "ready" {
        return Ok(());
    }
    receiver.send("go", &[])?;
    let pid = receiver.pid.as_raw();
    let until = Instant::now() + Duration::from_millis(TIMEOUT_MS);
    while Instant::now() < until {
        if let Some(wait) = super::signals::timed_wait(pid) {
            let timeout = Duration::from_millis(TIMEOUT_MS);
            let latest = super::signals::realtime() + timeout;
            // Clocks read a microsecond apart.
            if wait.deadline > latest + Duration::from_millis(2) {
                return Err(Fail::failed(format!(
                    "a receiver given a timeout of {TIMEOUT_MS} ms, asleep in its timed wait \
                     (nothing posted), had a deadline {} ms past the grader's clock now + \
                     {TIMEOUT_MS} ms, later than any deadline of this wait could be (it was \
                     taken before now): the wait is longer than its timeout (a timeout rounded \
                     up, to whole seconds or otherwise, or added twice). A wait's deadline is \
                     CLOCK_REALTIME now + exactly the timeout",
                    (wait.deadline - latest).as_millis()
                )));
            }
            return Ok(());
        }
        if receiver
            .recv_before(Instant::now() + Duration::from_millis(1))?
            .is_some()
        {
            return Ok(());
        }
    }
    Ok(())
}

/// Starts `args` stopped, with `word` of its 4 KiB segment to be watched from its mapping.
fn start_watched(
    run: &mut Run,
    args: &[String],
    word: &'static [Field],
    who: &'static str,
) -> Result<(crate::engine::Proc, Option<Tracer>), Fail> {
    let mut proc = run.spawn_stopped(args)?;
    proc.set_roles(|_| who.into());
    let pid = proc.pid.as_raw();
    let watch = Tracer::watch_returned(pid, Call::mapping_shared(MIN_SEGMENT), word)?;
    force::resume(pid)?;
    Ok((proc, watch))
}

/// What a side's waits were counted at, against the most they may make.
struct Counted {
    accesses: u64,
    most: u64,
    /// What it said once they were over.
    answer: String,
}

fn judge(
    counted: Option<Counted>,
    who: &str,
    semaphore: &str,
    side: &str,
    peer: &str,
) -> Result<Option<u64>, Fail> {
    let Some(Counted {
        accesses,
        most,
        answer,
    }) = counted
    else {
        return Ok(None);
    };
    if accesses <= most {
        return Ok(Some(accesses));
    }
    let counted = if accesses >= ENOUGH {
        format!("{accesses} times (where the grader stopped counting)")
    } else {
        format!("{accesses} times")
    };
    Err(Fail::failed(format!(
        "{who} (its timeout {TIMEOUT_MS} ms) touched the count word of {semaphore} {counted} \
         before it said {answer} (a hardware watchpoint on the word, loads included), more \
         than the {most} its waits here may make: one sem_timedwait() touches it 3 times when \
         it blocks (2 when it succeeds at once), sleeping in the kernel until a post or its \
         deadline: {side} tries the semaphore again and again (sem_trywait() or \
         sem_getvalue() in a loop, with or without sleeps between tries) before it blocks, or \
         instead of blocking: that is spinning or polling, and takes the CPU {peer} needs. \
         Wait in one sem_timedwait() with the whole timeout"
    )))
}

/// How long past its timeout a watched program may take to say it timed out, on a loaded
/// machine with its accesses watched: a wait of the given timeout ends within milliseconds of
/// it.
const MARGIN: Duration = Duration::from_millis(3000);

/// What a watched program that has said nothing [`MARGIN`] after its timeout of [`TIMEOUT_MS`]
/// (counted from `go`, sent at `went`, `realtime` on `CLOCK_REALTIME`) is doing: the deadline
/// of the timed wait it sleeps in, read from its memory, tells how long a wait it made.
fn outlived_timeout(
    proc: &crate::engine::Proc,
    who: &str,
    went: Instant,
    realtime: Duration,
) -> Fail {
    let pid = proc.pid.as_raw();
    let past = went
        .elapsed()
        .saturating_sub(Duration::from_millis(TIMEOUT_MS));
    let still = format!(
        "{who} (pid {pid}), given a timeout of {TIMEOUT_MS} ms, was still waiting {} ms after \
         that timeout (nothing posted, no answer)",
        past.as_millis()
    );
    let doing = if let Some(wait) = super::signals::timed_wait(pid) {
        let after = wait.deadline.saturating_sub(realtime);
        format!(
            ", asleep in a timed wait whose deadline lies {} ms after the grader's `go`: the \
             wait was given a timeout of its own of about {} ms, not the {TIMEOUT_MS} ms asked \
             for (a fixed or default timeout, a timeout rounded up or added twice)",
            after.as_millis(),
            after.as_millis()
        )
    } else if super::signals::waits_untimed(pid) {
        ", asleep in a futex wait with no deadline at all (sem_wait() instead of \
         sem_timedwait())"
            .to_string()
    } else {
        String::new()
    };
    Fail::failed(format!(
        "{still}{doing}. A wait's deadline is CLOCK_REALTIME now + the timeout it is given; \
         once it passes, the wait ends with TransferError::Timeout"
    ))
}

/// Lets the watched program say `ready`, gives it `go`, and counts the accesses to the watched
/// word until it says something else: `None` where it could not be watched.
fn count_accesses(
    proc: &mut crate::engine::Proc,
    watch: Option<Tracer>,
    who: &str,
    most: u64,
) -> Result<Option<Counted>, Fail> {
    let counted = |accesses, answer: String| {
        Some(Counted {
            accesses,
            most,
            answer,
        })
    };
    let Some(mut watch) = watch else {
        return Ok(None);
    };
    let until = Instant::now() + Duration::from_secs(5);
    let mut accesses = 0;
    let mut started = false;
    // When `go` was sent (the grader's clocks): the wait, and its timeout, begin after it.
    let mut went: Option<(Instant, Duration)> = None;
    loop {
        let bound = went.map_or(until, |(at, _)| {
            at + Duration::from_millis(TIMEOUT_MS) + MARGIN
        });
        let next = watch.next(proc, bound);
        if let (Err(Fail::TimedOut(_)), Some((at, realtime))) = (&next, went) {
            // Many accesses meanwhile: it was slowed by the watchpoint's stops on a loop of
            // tries, which is the verdict.
            if accesses > most {
                return Ok(counted(
                    accesses,
                    "anything within its timeout + 3 s".into(),
                ));
            }
            return Err(outlived_timeout(proc, who, at, realtime));
        }
        match next? {
            Watched::Armed => {}
            Watched::Hit => {
                accesses += u64::from(started);
                if accesses >= ENOUGH {
                    return Ok(counted(accesses, "anything".into()));
                }
                watch.go_on();
            }
            Watched::Said(message) if message.kind == "ready" && !started => {
                started = true;
                went = Some((Instant::now(), super::signals::realtime()));
                proc.send("go", &[])?;
            }
            Watched::Said(message) if started => {
                return Ok(counted(accesses, format!("`{}`", message.kind)));
            }
            Watched::Said(message) => {
                return Err(Fail::failed(format!(
                    "a program starting on a 4 KiB segment said `{}` before `ready`: {}",
                    message.kind,
                    super::transfer::failure(&message)
                )));
            }
            // It ended (its answer may still be on its way): the count is whole.
            Watched::Lost if started => {
                drop(watch);
                let answer = proc.recv_before(Instant::now() + Duration::from_secs(1))?;
                let said = answer.map_or("anything".to_string(), |m| format!("`{}`", m.kind));
                return Ok(counted(accesses, said));
            }
            Watched::Unavailable | Watched::Lost => return Ok(None),
        }
    }
}
