//! The order of a round, forced: the producer writes the record before it posts ready, the
//! consumer copies it out before it posts ok. The grader makes one post wait in the middle: it
//! fills the queue the post goes to (a queue of one message is full with one), so that the
//! poster blocks inside its post, then looks at the slot (the producer's record must be there
//! already) or changes it (the consumer must have copied it already). The order is `put()`'s
//! and `take()`'s, the same with either mechanism; only a queue can be made to hold a post.
//! And for a post to block on a full queue at all, the queue descriptions both sides share
//! must stay blocking: a side that makes one `O_NONBLOCK`, even for a moment, is held there.

use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rand::RngExt;

use super::forced_waits::realtime;
use super::handover::{Handover, expected_digest, expected_record, whole_record};
use super::probe::{self, Seen};
use super::slot::slot_holding;
use super::{CONSUMER, PRODUCER};
use crate::engine::inspect::{self, ProcessView, SignalMask};
use crate::engine::tracer::{Action, Call, Tracer};
use crate::engine::waiting::{self, WaitRules};
use crate::engine::{Fail, Run, force};

/// Rounds of each run; the forced round is drawn among the middle ones.
const ROUNDS: u64 = 60;

/// Opens the queue behind descriptor `fd` of `pid`, through `/proc/PID/fd`.
fn open_queue(pid: i32, fd: i32, write: bool) -> Result<std::fs::File, Fail> {
    let path = format!("/proc/{pid}/fd/{fd}");
    std::fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .map_err(|e| Fail::Grader(format!("opening {path}: {e}")))
}

/// Fills the queue behind descriptor `fd` of `pid` with one-byte messages; returns how many.
fn fill(pid: i32, fd: i32) -> Result<usize, Fail> {
    let queue = open_queue(pid, fd, true)?;
    let mut sent = 0;
    // SAFETY: an open queue descriptor and a one-byte buffer.
    while unsafe { libc::mq_send(queue.as_raw_fd(), c"-".as_ptr(), 1, 0) } == 0 {
        sent += 1;
    }
    Ok(sent)
}

/// Takes `count` messages out of the queue behind descriptor `fd` of `pid`.
fn drain(pid: i32, fd: i32, count: usize) -> Result<(), Fail> {
    let queue = open_queue(pid, fd, false)?;
    let mut buffer = vec![0u8; 1 << 16];
    for _ in 0..count {
        // SAFETY: an open queue descriptor and a buffer of its length (larger than any
        // message a user may make).
        let got = unsafe {
            libc::mq_receive(
                queue.as_raw_fd(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                std::ptr::null_mut(),
            )
        };
        if got < 0 {
            return Err(Fail::Grader(format!(
                "taking the grader's messages back: {}",
                nix::errno::Errno::last()
            )));
        }
    }
    Ok(())
}

/// Once the held post has gone into the queue behind descriptor `fd` of `pid` (the grader's
/// messages taken back), takes the program's message out, reads it, and puts it back as it
/// was: what the post said, trimmed of trailing NULs, and its priority; `None` if it did not
/// come within a second.
fn relay(pid: i32, fd: i32) -> Result<Option<(Vec<u8>, u32)>, Fail> {
    let until = Instant::now() + Duration::from_secs(1);
    while probe::queue_messages(pid, fd) != Some(1) {
        if Instant::now() >= until {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let reader = open_queue(pid, fd, false)?;
    let mut buffer = vec![0u8; 1 << 16];
    let mut priority = 0u32;
    // SAFETY: an open queue descriptor and a buffer of its length.
    let got = unsafe {
        libc::mq_receive(
            reader.as_raw_fd(),
            buffer.as_mut_ptr().cast(),
            buffer.len(),
            &mut priority,
        )
    };
    if got < 0 {
        return Ok(None);
    }
    let message = buffer[..got as usize].to_vec();
    let writer = open_queue(pid, fd, true)?;
    // SAFETY: an open queue descriptor and the message just taken out.
    if unsafe {
        libc::mq_send(
            writer.as_raw_fd(),
            message.as_ptr().cast(),
            message.len(),
            priority,
        )
    } != 0
    {
        return Err(Fail::Grader(format!(
            "putting the program's message back: {}",
            nix::errno::Errno::last()
        )));
    }
    let end = message.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    Ok(Some((message[..end].to_vec(), priority)))
}

/// A post's message must be its signal's text (`"ready"` or `"ok"`), sent with priority 0.
fn judge_text(
    said: Option<(Vec<u8>, u32)>,
    queue: &str,
    want: &str,
    poster: &str,
) -> Result<(), Fail> {
    match said {
        Some((_, priority)) if priority != 0 => Err(Fail::failed(format!(
            "the grader held {poster}'s post on {queue} (the queue was full), then let it go \
             and read the message it put there: mq_receive() gave its priority as {priority}, \
             not 0: post() sends \"ready\" and \"ok\" alike with priority 0 (mq_send()'s \
             last argument)"
        ))),
        Some((text, _)) if text != want.as_bytes() => Err(Fail::failed(format!(
            "the grader held {poster}'s post on {queue} (the queue was full), then let it go \
             and read the message it put there: `{}`, not `{want}`: post({queue}) sends \
             \"{want}\" (the ready queue carries \"ready\", the ok queue \"ok\"); check which \
             text each post() call passes",
            String::from_utf8_lossy(&text).escape_debug()
        ))),
        _ => Ok(()),
    }
}

/// Stops `pid` and waits until it is stopped.
fn stop(pid: i32) -> Result<(), Fail> {
    force::hold(pid)?;
    let until = Instant::now() + Duration::from_secs(2);
    while probe::state(pid) != Some('T') && Instant::now() < until {
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(())
}

/// Whether `pid` comes to block in a call `is` within 2 s.
fn comes_to(pid: i32, is: impl Fn(Seen) -> bool) -> bool {
    comes_to_within(pid, is, Duration::from_secs(2))
}

/// Whether `pid` comes to block in a call `is` within `within`.
pub(super) fn comes_to_within(pid: i32, is: impl Fn(Seen) -> bool, within: Duration) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if probe::state(pid) == Some('S') && probe::sample(pid).is_some_and(&is) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

/// A post into a full queue.
pub(super) fn sending(seen: Seen) -> bool {
    seen.is_call(libc::SYS_mq_timedsend)
}

/// A wait for a message.
fn receiving(seen: Seen) -> bool {
    matches!(seen, Seen::Receive { .. })
}

/// The poster sits in its send on the full queue: it must be `mq_send()`, with no deadline. A
/// timed send is followed past its deadline to tell what it does there: send again (polling
/// for room in slices) or leave its post with nothing sent.
fn post_untimed(pid: i32, poster: &'static str, post: &str, queue: &str) -> Result<(), Fail> {
    let Some(deadline) = probe::send_deadline(pid) else {
        return Ok(());
    };
    let lead = deadline.saturating_sub(realtime());
    std::thread::sleep(lead.min(Duration::from_secs(1)) + Duration::from_millis(30));
    let after = if realtime() < deadline {
        "".to_string()
    } else {
        // Under load the next send may come a little after the deadline: look a while.
        let until = Instant::now() + Duration::from_millis(200);
        let mut next = probe::send_deadline(pid);
        while next.is_none_or(|next| next <= deadline) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(2));
            next = probe::send_deadline(pid);
        }
        match next {
            Some(next) if next > deadline => format!(
                "; at that deadline it sent again, with a new deadline {} ms later: it polls \
                 for room in timed slices, waking up for nothing while the queue stays full",
                (next - deadline).as_millis()
            ),
            _ if probe::alive(pid) && !probe::sample(pid).is_some_and(sending) => {
                "; at that deadline it left its send with the queue still full, its message \
                 never sent"
                    .into()
            }
            _ => "".into(),
        }
    };
    Err(Fail::failed(format!(
        "the grader filled {queue} (its one message), so that {poster}'s {post} would block in \
         mq_send() until there was room, and held the reader: {poster} sent with \
         mq_timedsend() and a deadline {} ms ahead, not with mq_send(){after}. post() is one \
         mq_send(), which sleeps in the kernel on a full queue until there is room, for as long \
         as it takes: no deadline, no retries",
        lead.as_millis()
    )))
}

/// The queue behind `poster`'s post was full (the grader filled it) and the poster did not come
/// to block in `mq_send()` on it: how it waits instead (spinning, polling) or what it is in.
/// A poster that ended is left to the reports. `full` is the queue, as (a holder's pid, its
/// descriptor, the grader's messages in it).
fn post_not_held(
    pid: i32,
    poster: &'static str,
    post: &str,
    queue: &str,
    full: (i32, i32, usize),
) -> Result<(), Fail> {
    if !probe::alive(pid) || probe::sample(pid).is_some_and(sending) {
        return Ok(());
    }
    let situation = format!(
        "the grader filled {queue} (its one message), so that {poster}'s {post} would block in \
         mq_send() until there was room, and held the reader"
    );
    // Past its post, waiting for the answer, while the queue still holds the grader's
    // messages alone: the post returned with nothing sent (no room came: the reader is held).
    let (holder, fd, filled) = full;
    if comes_to_within(pid, receiving, Duration::from_millis(300))
        && probe::queue_messages(holder, fd) == Some(filled as i64)
    {
        let waits = match probe::sample(pid) {
            Some(seen) => probe::describe_call(pid, seen),
            None => "its next wait".into(),
        };
        return Err(Fail::failed(format!(
            "{situation}: {poster} went past its {post} to wait for the answer ({waits}), \
             while {queue} still held only the grader's {filled} message(s): its post returned \
             with nothing sent, without waiting for room, so the signal was lost and the \
             handoff would wait for ever. post() is one mq_send(), which sleeps in the kernel \
             on a full queue until there is room, then sends: never skip a post, nor give up \
             on a full queue"
        )));
    }
    let roles = move |_: &ProcessView| poster.to_string();
    let advice = "post() is one mq_send(), which sleeps in the kernel on a full queue until \
                  there is room: no looking at the queue (mq_getattr) first, no sleeps between \
                  looks";
    match waiting::expect_blocked(&[pid], &roles, WaitRules::default(), advice) {
        Err(Fail::Failed(how)) => Err(Fail::failed(format!("{situation}: {how}"))),
        Err(other) => Err(other),
        Ok(_) if probe::sample(pid).is_some_and(sending) => Ok(()),
        Ok(_) => {
            let doing = match probe::sample(pid) {
                Some(seen) => format!("in {}", probe::describe_call(pid, seen)),
                None => "running".into(),
            };
            Err(Fail::failed(format!(
                "{situation}: 2 s later it was {doing}, not in mq_send() on the queue: {advice}"
            )))
        }
    }
}

/// The producer's post(ready) for record K is held (the ready queue full, the consumer stopped
/// so that it takes nothing): the slot must already hold record K.
fn write_before_ready(run: &mut Run) -> Result<String, Fail> {
    let seq = run.rng().random_range(10..50u64);
    let at = seq.to_string();
    let mut handover = Handover::start(run, "queues", ROUNDS, &["--pause-producer-at", &at])?;
    let (producer, consumer, seed) = (handover.producer, handover.consumer, handover.seed);
    let ready = handover.names[0].clone();
    let mut note = String::from("the post was not held");
    let reports = handover.finish(|proc, _| {
        let previous = expected_record(seed, seq - 1);
        let slot = slot_holding(producer, &previous, Duration::from_secs(1));
        // Stopped in its wait for ready, the consumer takes none of the grader's messages.
        let fd = probe::queue_descriptors(consumer, &ready).first().copied();
        let Some(fd) = fd.filter(|_| comes_to(consumer, receiving)) else {
            return proc.send("go", &[]);
        };
        stop(consumer)?;
        let filled = fill(consumer, fd)?;
        proc.send("go", &[])?;
        let held = filled > 0 && comes_to(producer, sending);
        if filled > 0 && !held {
            post_not_held(
                producer,
                PRODUCER,
                "post(ready)",
                &ready,
                (consumer, fd, filled),
            )?;
        }
        if held {
            post_untimed(producer, PRODUCER, "post(ready)", &ready)?;
        }
        if held
            && let Some(slot) = slot
            && let Some(now) = probe::peek(producer, slot, previous.len())
        {
            if now == previous {
                return Err(Fail::failed(format!(
                    "the grader held the producer's post(ready) for record {seq} (the ready \
                     queue was full): the slot still held record {}: put() posted ready before \
                     it wrote the record. Write the record into the slot first, then post ready",
                    seq - 1
                )));
            }
            note = format!("record {seq} was in the slot while its post(ready) was held");
        }
        drain(consumer, fd, filled)?;
        if filled > 0 {
            judge_text(relay(consumer, fd)?, &ready, "ready", "the producer")?;
        }
        force::resume(consumer)
    })?;
    handover.verify(&reports, &format!("{ROUNDS} rounds with queues"))?;
    Ok(note)
}

/// The consumer's post(ok) for record K is held (the ok queue full, the producer stopped): the
/// grader replaces record K in the slot meanwhile, which the consumer must have copied already.
fn copy_before_ok(run: &mut Run) -> Result<String, Fail> {
    let seq = run.rng().random_range(10..50u64);
    let mut other: u64 = run.rng().random();
    let at = seq.to_string();
    let mut handover = Handover::start(run, "queues", ROUNDS, &["--pause-consumer-at", &at])?;
    let (producer, consumer, seed) = (handover.producer, handover.consumer, handover.seed);
    if other == seed {
        other ^= 1;
    }
    let ok = handover.names[1].clone();
    let mut swapped = false;
    let mut said = None;
    let reports = handover.finish(|proc, _| {
        let slot = slot_holding(
            producer,
            &expected_record(seed, seq),
            Duration::from_secs(1),
        );
        // Stopped in its wait for ok, the producer takes none of the grader's messages.
        let fd = probe::queue_descriptors(producer, &ok).first().copied();
        let Some(fd) = fd.filter(|_| comes_to(producer, receiving)) else {
            return proc.send("go", &[]);
        };
        stop(producer)?;
        let filled = fill(producer, fd)?;
        proc.send("go", &[])?;
        let held = filled > 0 && comes_to(consumer, sending);
        if filled > 0 && !held {
            post_not_held(consumer, CONSUMER, "post(ok)", &ok, (producer, fd, filled))?;
        }
        if held {
            post_untimed(consumer, CONSUMER, "post(ok)", &ok)?;
        }
        if held && let Some(slot) = slot {
            probe::poke(producer, slot, &whole_record(other, seq))?;
            swapped = true;
        }
        drain(producer, fd, filled)?;
        if filled > 0 {
            said = relay(producer, fd)?;
        }
        force::resume(producer)
    })?;
    if swapped && reports.digest == expected_digest(seed, ROUNDS, Some((seq, other))) {
        return Err(Fail::failed(format!(
            "the grader held the consumer's post(ok) for record {seq} (the ok queue was full) \
             and meanwhile wrote another record {seq} into the slot: the consumer took that \
             one, so it copied the slot after posting ok. take() must post ok only after \
             copying the slot"
        )));
    }
    handover.verify(&reports, &format!("{ROUNDS} rounds with queues"))?;
    judge_text(said, &ok, "ok", "the consumer")?;
    Ok(if swapped {
        format!("record {seq} was copied before its post(ok), which the grader held")
    } else {
        "the post was not held".into()
    })
}

/// The producer's post(ready), blocked in `mq_send()` on the ready queue the grader filled, is
/// interrupted by `SIGUSR1` (its handler installed without `SA_RESTART`): `mq_send()` returns
/// `EINTR` with nothing sent. `post()` may report it (`kind=post`) or send again; it must not
/// return as if it had sent, which loses the signal: both sides would then wait for ever.
fn post_interrupted(run: &mut Run) -> Result<String, Fail> {
    let seq = run.rng().random_range(10..50u64);
    let at = seq.to_string();
    let extra = ["--interruptible", "--pause-producer-at", &at];
    let mut handover = Handover::start(run, "queues", ROUNDS, &extra)?;
    let (producer, consumer) = (handover.producer, handover.consumer);
    let ready = handover.names[0].clone();
    let result = interrupt_post(&mut handover, producer, consumer, &ready);
    handover.proc.kill_tree();
    let _ = handover.proc.wait();
    result
}

/// The body of [`post_interrupted`]; the caller ends the program whatever comes of it.
fn interrupt_post(
    handover: &mut Handover,
    producer: i32,
    consumer: i32,
    ready: &str,
) -> Result<String, Fail> {
    handover.go()?;
    let paused = handover.proc.recv_any()?;
    if paused.kind != "paused" {
        return Err(match paused.kind.as_str() {
            "failed" => handover.failure(&paused),
            kind => Fail::failed(format!(
                "the program said `{kind}` where the producer should have paused"
            )),
        });
    }
    // Stopped in its wait for ready, the consumer takes none of the grader's messages.
    let fd = probe::queue_descriptors(consumer, ready).first().copied();
    let Some(fd) = fd.filter(|_| comes_to(consumer, receiving)) else {
        return Ok("an interrupted post(ready) not tried".into());
    };
    stop(consumer)?;
    let filled = fill(consumer, fd)?;
    handover.proc.send("go", &[])?;
    if filled == 0 || !comes_to(producer, sending) {
        // A post that does not block on a full queue is judged by `write_before_ready`.
        return Ok("an interrupted post(ready) not tried (it did not block)".into());
    }
    kill(Pid::from_raw(producer), Signal::SIGUSR1)
        .map_err(|e| Fail::Grader(format!("kill: {e}")))?;
    let said = handover
        .proc
        .recv_before(Instant::now() + Duration::from_millis(300))?;
    if let Some(message) = said {
        return match (message.kind.as_str(), message.get("kind")) {
            ("failed", Some("post")) => Ok(format!(
                "post(ready) interrupted in mq_send(): reported ({})",
                message.get("error").unwrap_or("")
            )),
            ("failed", _) => Err(handover.failure(&message)),
            (kind, _) => Err(Fail::failed(format!(
                "the program said an unexpected `{kind}`"
            ))),
        };
    }
    if comes_to_within(producer, receiving, Duration::from_millis(300))
        && probe::queue_messages(consumer, fd) == Some(filled as i64)
    {
        let waits = match probe::sample(producer) {
            Some(seen) => probe::describe_call(producer, seen),
            None => "its next wait".into(),
        };
        return Err(Fail::failed(format!(
            "the grader filled {ready} (its one message) and held the consumer, so that the \
             producer's post(ready) blocked in mq_send(), then sent the producer SIGUSR1 (its \
             handler installed without SA_RESTART): mq_send() returned EINTR, having sent \
             nothing, and the producer went on to wait for ok ({waits}) while {ready} still \
             held only the grader's {filled} message(s): post() took the EINTR of mq_send() \
             for a sent message, and the signal was lost. An interrupted mq_send() sent \
             nothing: report it (HandoffError::Post) or send again"
        )));
    }
    let usr1 = Signal::SIGUSR1 as i32;
    // A handler that may run runs once the producer gets a CPU: a loaded machine is given a
    // second for that.
    let until = Instant::now() + Duration::from_secs(1);
    while probe::pending(producer, usr1) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    if probe::pending(producer, usr1) {
        let blocked = if inspect::has_signal(producer, producer, SignalMask::Blocked, usr1) {
            ", blocked in its signal mask (SigBlk in /proc/PID/task/TID/status)"
        } else {
            ""
        };
        return Err(Fail::failed(format!(
            "the grader filled {ready} and held the consumer, so that the producer's \
             post(ready) blocked in mq_send(), then sent the producer SIGUSR1 (its handler \
             installed): more than a second later the signal was still pending, not \
             handled{blocked}: post() holds signals back while it sends. Signals stay \
             unblocked in post() as in wait(): the handler runs when its signal comes, and an \
             mq_send() it interrupts returns EINTR (report it or send again)"
        )));
    }
    super::resent_post::later_signals_handled(handover, producer, ready)
}

pub fn posts_in_order(run: &mut Run) -> Result<String, Fail> {
    let write = write_before_ready(run)?;
    let copy = copy_before_ok(run)?;
    let interrupted = post_interrupted(run)?;
    let blocking = queues_stay_blocking(run)?;
    Ok(format!("{write}; {copy}; {interrupted}; {blocking}"))
}

/// Every call that makes a descriptor `O_NONBLOCK`: `mq_setattr()` (the `mq_getsetattr` call),
/// `fcntl(F_SETFL)` (a queue descriptor is a file descriptor) and `ioctl(FIONBIO)`. All three set
/// the flag on the open description, not on the descriptor alone.
const SETTING_NONBLOCK: Call = Call::any_of(&[
    Call::pointed_flag_set(libc::SYS_mq_getsetattr, 1, libc::O_NONBLOCK as u64),
    Call::all_of(&[
        Call::arg_is(libc::SYS_fcntl, 1, libc::F_SETFL as u64),
        Call::flag_set(libc::SYS_fcntl, 2, libc::O_NONBLOCK as u64),
    ]),
    Call::all_of(&[
        Call::arg_is(libc::SYS_ioctl, 1, libc::FIONBIO),
        Call::pointed_flag_set(libc::SYS_ioctl, 2, 1),
    ]),
]);

/// Rounds of the run in which each side is traced for an `O_NONBLOCK` set on a queue.
const BLOCKING_ROUNDS: u64 = 20;

/// With queues, each side is traced from `ready` and held as a call that sets `O_NONBLOCK`
/// ([`SETTING_NONBLOCK`]: `mq_setattr()`, nix's `mq_set_nonblock()`, `fcntl()`) returns: the queues were opened
/// before `fork()`, so both sides hold the same open descriptions, and the flag set by one is
/// then on the other's descriptor too, where it makes a post to a full queue fail with
/// `EAGAIN` instead of blocking. Judged on the other side's `/proc/PID/fdinfo` while held.
fn queues_stay_blocking(run: &mut Run) -> Result<String, Fail> {
    let mut handover = Handover::start(run, "queues", BLOCKING_ROUNDS, &[])?;
    let (producer, consumer) = (handover.producer, handover.consumer);
    let setting = SETTING_NONBLOCK;
    let mut watchers = Vec::new();
    for (role, pid, other_role, other) in [
        (PRODUCER, producer, CONSUMER, consumer),
        (CONSUMER, consumer, PRODUCER, producer),
    ] {
        let Some(tracer) = Tracer::attach(pid, setting, Action::HoldAfter)? else {
            continue;
        };
        // Each side's tracer is waited on in a thread of its own: a side held there keeps the
        // other waiting for it, and the handover below waits for both.
        watchers.push(std::thread::spawn(move || {
            held_nonblocking(tracer, pid, role, other, other_role)
        }));
    }
    let traced = watchers.len();
    let reports = handover.finish(|proc, _| proc.send("go", &[]));
    let mut verdict = None;
    for watcher in watchers {
        let seen = watcher
            .join()
            .map_err(|_| Fail::Grader("a tracing thread panicked".into()))??;
        verdict = verdict.or(seen);
    }
    if let Some(verdict) = verdict {
        return Err(Fail::failed(verdict));
    }
    let reports = reports?;
    let what = format!("{BLOCKING_ROUNDS} rounds with queues, every mq_setattr() traced");
    handover.verify(&reports, &what)?;
    if traced < 2 {
        return Ok("queues' O_NONBLOCK not traced".into());
    }
    Ok(format!(
        "{BLOCKING_ROUNDS} rounds with queues: neither side made a shared queue non-blocking"
    ))
}

/// Waits (up to 5 s, or until `pid` ends) for `pid` to be held at a call that set
/// `O_NONBLOCK`, judges it there, then lets it go: the verdict, if a shared queue was made
/// non-blocking.
fn held_nonblocking(
    mut tracer: Tracer,
    pid: i32,
    role: &str,
    other: i32,
    other_role: &str,
) -> Result<Option<String>, Fail> {
    if !tracer.held_before(Instant::now() + Duration::from_secs(5))? {
        return Ok(None);
    }
    let verdict = shared_nonblock(pid, role, other, other_role);
    tracer.release();
    Ok(verdict)
}

/// `pid` is held as its `mq_getsetattr()` that set `O_NONBLOCK` returns: what that did to
/// `other`'s descriptor of the same queue, if it is non-blocking now too.
fn shared_nonblock(pid: i32, role: &str, other: i32, other_role: &str) -> Option<String> {
    let (number, args) = inspect::call_of(pid, pid)?;
    let call = match number {
        libc::SYS_fcntl => "fcntl(F_SETFL)",
        libc::SYS_ioctl => "ioctl(FIONBIO)",
        _ => "mq_setattr() (the mq_getsetattr call)",
    };
    let fd = i32::try_from(args[0]).ok()?;
    let target = probe::descriptor(pid, fd);
    let queue = target.trim_end_matches(" (deleted)");
    let nonblock = libc::O_NONBLOCK as u32;
    let (other_fd, flags) = probe::queue_descriptors(other, queue)
        .into_iter()
        .find_map(|other_fd| {
            let flags = inspect::fd_flags(other, other_fd)?;
            (flags & nonblock != 0).then_some((other_fd, flags))
        })?;
    Some(format!(
        "the grader stopped {role} as its {call} setting O_NONBLOCK on {queue} (fd {fd}) \
         returned: {other_role}'s own descriptor of {queue} (fd {other_fd}) was then non-blocking too (flags 0{flags:o} in \
         /proc/{other}/fdinfo/{other_fd}). O_NONBLOCK is a flag of the open queue description, \
         which both processes share since fork(): while it is set, a post to {queue} when it is \
         full fails at once with EAGAIN instead of blocking in mq_send(), and a side stopped or \
         killed there leaves the queue non-blocking for good. The queues stay blocking: wait \
         with mq_timedreceive() (a signal already there is taken at once), and never change \
         the flags of a queue both sides hold"
    ))
}
