//! The pool as the grader drives it: its names, its free queue as the grader sees it, and the
//! `pool` and `pair` programs.

use std::ops::RangeInclusive;

use super::layout::MIN_SEGMENT;
use super::observe::dev_shm;
use super::transfer::failure;
use super::{MAX_POOL, PEER_TIMEOUT_MS};
use crate::engine::audit::message_queue_exists;
use crate::engine::{Fail, Proc, Run};
use nix::mqueue::{MQ_OFlag, MqdT, mq_close, mq_getattr, mq_open, mq_receive, mq_send};

/// The names a pool makes from its prefix, registered with the check so that the audit finds
/// what is left of them.
pub struct PoolNames {
    pub prefix: String,
    pub queue: String,
    pub segments: Vec<String>,
}

impl PoolNames {
    pub fn new(run: &mut Run, what: &str, count: usize) -> PoolNames {
        PoolNames {
            prefix: run.ipc_name(what),
            queue: run.ipc_name(&format!("{what}-free")),
            segments: (0..count)
                .map(|i| run.ipc_name(&format!("{what}-seg-{i}")))
                .collect(),
        }
    }

    /// The names of the pool's objects that still exist.
    pub fn left(&self) -> Vec<&String> {
        self.segments
            .iter()
            .filter(|name| dev_shm(name).exists())
            .chain(std::iter::once(&self.queue).filter(|q| message_queue_exists(q)))
            .collect()
    }

    /// Removes every segment and the queue of these names that is there.
    pub fn remove(&self) {
        for name in &self.segments {
            let _ = nix::sys::mman::shm_unlink(name.as_str());
        }
        let _ = nix::mqueue::mq_unlink(self.queue.as_str());
    }

    /// Fails if a segment or the queue is still there, `after` something.
    pub fn none_left(&self, after: &str) -> Result<(), Fail> {
        let left = self.left();
        if !left.is_empty() {
            return Err(Fail::failed(format!(
                "{after}, these are still there: {left:?}; unlink every segment and the free \
                 queue you made"
            )));
        }
        Ok(())
    }
}

/// A pool's free queue, opened by the grader to look at it and to play a pair of its own.
pub struct FreeQueue {
    name: String,
    queue: Option<MqdT>,
}

impl FreeQueue {
    pub fn open(name: &str) -> Result<FreeQueue, Fail> {
        let queue = mq_open(
            name,
            MQ_OFlag::O_RDWR | MQ_OFlag::O_NONBLOCK,
            nix::sys::stat::Mode::empty(),
            None,
        )
        .map_err(|errno| {
            Fail::failed(format!(
                "the pool's free queue {name} cannot be opened ({errno}): it must exist until \
                 destroy()"
            ))
        })?;
        Ok(FreeQueue {
            name: name.to_string(),
            queue: Some(queue),
        })
    }

    fn queue(&self) -> &MqdT {
        self.queue.as_ref().expect("open until dropped")
    }

    /// `mq_maxmsg`, `mq_msgsize` and `mq_curmsgs`.
    pub fn attributes(&self) -> Result<(i64, i64, i64), Fail> {
        let attr = mq_getattr(self.queue())
            .map_err(|errno| Fail::Grader(format!("mq_getattr({}): {errno}", self.name)))?;
        Ok((
            attr.maxmsg() as i64,
            attr.msgsize() as i64,
            attr.curmsgs() as i64,
        ))
    }

    /// How many ids are on the queue now.
    pub fn len(&self) -> Result<usize, Fail> {
        Ok(self.attributes()?.2 as usize)
    }

    /// The queue's permission bits.
    pub fn mode(&self) -> Result<u32, Fail> {
        let stat = nix::sys::stat::fstat(self.queue())
            .map_err(|errno| Fail::Grader(format!("fstat({}): {errno}", self.name)))?;
        Ok(stat.st_mode & 0o777)
    }

    /// Takes every message off the queue, in order.
    pub fn take_all(&self) -> Result<Vec<Vec<u8>>, Fail> {
        let (_, msgsize, _) = self.attributes()?;
        let mut taken = Vec::new();
        loop {
            let mut buffer = vec![0u8; msgsize.max(1) as usize];
            let mut priority = 0;
            match mq_receive(self.queue(), &mut buffer, &mut priority) {
                Ok(n) => {
                    buffer.truncate(n);
                    taken.push(buffer);
                }
                Err(nix::errno::Errno::EAGAIN) => return Ok(taken),
                Err(errno) => {
                    return Err(Fail::Grader(format!("mq_receive({}): {errno}", self.name)));
                }
            }
        }
    }

    /// Puts `messages` on the queue, in order.
    pub fn put_all(&self, messages: &[Vec<u8>]) -> Result<(), Fail> {
        for message in messages {
            mq_send(self.queue(), message, 0)
                .map_err(|errno| Fail::Grader(format!("mq_send({}): {errno}", self.name)))?;
        }
        Ok(())
    }
}

impl Drop for FreeQueue {
    fn drop(&mut self) {
        if let Some(queue) = self.queue.take() {
            let _ = mq_close(queue);
        }
    }
}

/// An id as the free queue carries it: 4 little-endian bytes.
pub fn id_message(id: u32) -> Vec<u8> {
    id.to_le_bytes().to_vec()
}

/// Starts a `pool` process that creates the pool `names` of segments of `size` bytes.
pub fn spawn_pool(run: &mut Run, names: &PoolNames, size: usize) -> Result<Proc, Fail> {
    let args = pool_args(names, size)?;
    let mut pool = run.spawn(&args)?;
    pool.set_roles(|_| "the pool's creator".into());
    Ok(pool)
}

/// As [`spawn_pool`], in an IPC namespace of its own whose `msg_max` is `msg_max` (a queue of
/// more messages than the machine allows): `None` where the grader may not make one (not root).
pub fn spawn_pool_with_msg_max(
    run: &mut Run,
    names: &PoolNames,
    size: usize,
    msg_max: u64,
) -> Result<Option<Proc>, Fail> {
    let args = pool_args(names, size)?;
    let Some(mut pool) = run.spawn_with_message_queue_sysctls(&args, msg_max, 8192)? else {
        return Ok(None);
    };
    pool.set_roles(|_| "the pool's creator".into());
    Ok(Some(pool))
}

pub fn pool_args(names: &PoolNames, size: usize) -> Result<Vec<String>, Fail> {
    if names.queue != format!("{}-free", names.prefix)
        || names
            .segments
            .first()
            .is_some_and(|s| *s != format!("{}-seg-0", names.prefix))
    {
        return Err(Fail::Grader(
            "the pool's names do not derive from its prefix".into(),
        ));
    }
    Ok(vec![
        "pool".into(),
        "--prefix".into(),
        names.prefix.clone(),
        "--count".into(),
        names.segments.len().to_string(),
        "--size".into(),
        size.to_string(),
    ])
}

/// Waits for the pool's `ready` and checks what it made: its segments (`size` bytes each), and
/// its free queue (mode 600, room for one 4-byte id per segment, holding the ids 0..count once
/// each).
pub fn pool_ready(pool: &mut Proc, names: &PoolNames, size: usize) -> Result<(), Fail> {
    let count = names.segments.len();
    let ready = pool.recv_any()?;
    if ready.kind != "ready" {
        let rule = match ready.get("kind") {
            Some("bad-count") => format!(
                ": BadCount is for a count outside 1..=MAX_POOL_SEGMENTS ({MAX_POOL}), and \
                 {count} is inside"
            ),
            Some("bad-size") => format!(
                ": BadSize is for segments below MIN_SEGMENT_SIZE ({MIN_SEGMENT}), and {size} \
                 is not"
            ),
            _ => String::new(),
        };
        return Err(Fail::failed(format!(
            "the pool of {count} segments of {size} bytes could not be created: `{}` ({}){rule}",
            ready.kind,
            failure(&ready)
        )));
    }
    for name in &names.segments {
        let path = dev_shm(name);
        match std::fs::metadata(&path) {
            Ok(meta) if meta.len() == size as u64 => {}
            Ok(meta) => {
                // A size rounded up (to a page, to an alignment) is the common way to miss it.
                // SAFETY: sysconf() only reads a setting.
                let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
                let rounded = if meta.len() > size as u64 {
                    let to = if meta.len().is_multiple_of(page) {
                        format!("a whole page, a multiple of {page}")
                    } else {
                        "an alignment".into()
                    };
                    format!(
                        ": Pool::create rounds the size up, to {to}. Its segments are exactly \
                         the size asked, as Segment::create makes them: ftruncate() to `size` \
                         itself"
                    )
                } else {
                    String::new()
                };
                return Err(Fail::failed(format!(
                    "the pool's segment {} is {} bytes, not {size}{rounded}",
                    path.display(),
                    meta.len()
                )));
            }
            Err(_) => {
                return Err(Fail::failed(format!(
                    "the pool says it is ready, but its segment {} does not exist: create all \
                     {count} segments up front",
                    path.display()
                )));
            }
        }
    }
    if !message_queue_exists(&names.queue) {
        return Err(Fail::failed(format!(
            "the pool says it is ready, but its free queue {} does not exist",
            names.queue
        )));
    }
    nonblocking_queue(pool.pid.as_raw(), names)?;
    let queue = FreeQueue::open(&names.queue)?;
    let mode = queue.mode()?;
    if mode != 0o600 {
        return Err(Fail::failed(format!(
            "the pool's free queue {} has mode {mode:03o}: create it with mode 0600 (S_IRUSR | \
             S_IWUSR), read and write for its owner only",
            names.queue
        )));
    }
    let (maxmsg, msgsize, _) = queue.attributes()?;
    if maxmsg != count as i64 || msgsize != 4 {
        return Err(Fail::failed(format!(
            "the free queue of a pool of {count} segments holds at most {maxmsg} messages of \
             {msgsize} bytes: create it with maxmsg = {count} (one id per segment) and msgsize \
             = 4 (an id is 4 little-endian bytes); Pool::open takes the count from maxmsg"
        )));
    }
    let ids = queue.take_all()?;
    queue.put_all(&ids)?;
    let mut seen: Vec<Option<u32>> = ids
        .iter()
        .map(|m| {
            <[u8; 4]>::try_from(m.as_slice())
                .ok()
                .map(u32::from_le_bytes)
        })
        .collect();
    seen.sort();
    let want: Vec<Option<u32>> = (0..count as u32).map(Some).collect();
    if seen != want {
        let shown: Vec<String> = ids.iter().map(|m| format!("{m:?}")).collect();
        return Err(Fail::failed(format!(
            "a new pool of {count} segments must have each id 0..{count} on its free queue once, \
             as 4 little-endian bytes; the grader found {} message(s): {}",
            ids.len(),
            shown.join(", ")
        )));
    }
    Ok(())
}

/// Checks that the free queue holds `free` ids (`when` something), asks the pool for its free
/// count, which must say as much, has it destroyed, and checks that nothing of it is left.
pub fn destroy_pool(
    pool: &mut Proc,
    names: &PoolNames,
    when: &str,
    free: usize,
) -> Result<(), Fail> {
    let count = names.segments.len();
    let on_queue = FreeQueue::open(&names.queue)?.len()?;
    if on_queue != free {
        return Err(Fail::failed(format!(
            "{when}, the free queue holds {on_queue} of the pool's {count} ids, where {free} \
             should be: every segment taken must be given back once, after a whole message"
        )));
    }
    pool.send("finish", &[])?;
    let state = pool.recv_any()?;
    if state.kind != "state" {
        return Err(Fail::failed(format!(
            "asked for the free count, the pool said `{}` ({})",
            state.kind,
            failure(&state)
        )));
    }
    let said = state.get("free").unwrap_or("?");
    if said != free.to_string() {
        return Err(Fail::failed(format!(
            "{when}, free_count() said {said} of the pool's {count} segments are free, where \
             the free queue held {free}: count the ids on the free queue (mq_getattr's \
             mq_curmsgs), not a number of your own"
        )));
    }
    let done = pool.recv_any()?;
    if done.kind != "done" {
        return Err(Fail::failed(format!(
            "destroying the pool failed: `{}` ({})",
            done.kind,
            failure(&done)
        )));
    }
    pool.wait()?;
    names.none_left("after destroy()")
}

/// Where the grader holds a pair, and its timeout.
#[derive(Default)]
pub struct PairOptions {
    /// The receiver holds before the writes that reach these bytes.
    pub hold_at: Vec<u64>,
    /// The sender holds before it reads this byte.
    pub hold_sender_at: Option<u64>,
    /// The timeout of every wait (the programs' default when `None`).
    pub timeout_ms: Option<u64>,
    /// After `took`, the pair waits for `count` and says `state` with its free count again.
    pub count_again: bool,
    /// The receiver's writer fails at the write that reaches this byte.
    pub fail_write_at: Option<u64>,
}

/// Starts a `pair` process: pair `index` of `seed`, a message of `len` bytes.
pub fn spawn_pair(
    run: &mut Run,
    prefix: &str,
    index: u64,
    seed: u64,
    len: u64,
    options: &PairOptions,
) -> Result<Proc, Fail> {
    let mut args = vec![
        "pair".to_string(),
        "--prefix".into(),
        prefix.into(),
        "--index".into(),
        index.to_string(),
        "--seed".into(),
        seed.to_string(),
        "--len".into(),
        len.to_string(),
        "--timeout-ms".into(),
        options.timeout_ms.unwrap_or(PEER_TIMEOUT_MS).to_string(),
    ];
    if !options.hold_at.is_empty() {
        let holds: Vec<String> = options.hold_at.iter().map(u64::to_string).collect();
        args.extend(["--hold-at".into(), holds.join(",")]);
    }
    if let Some(byte) = options.hold_sender_at {
        args.extend(["--hold-sender-at".into(), byte.to_string()]);
    }
    if options.count_again {
        args.push("--count-again".into());
    }
    if let Some(byte) = options.fail_write_at {
        args.extend(["--fail-write-at".into(), byte.to_string()]);
    }
    let mut pair = run.spawn(&args)?;
    let root = pair.pid.as_raw();
    pair.set_roles(move |view| {
        if view.pid == root {
            format!("pair {index}'s sender")
        } else {
            format!("pair {index}'s receiver")
        }
    });
    Ok(pair)
}

/// Waits for a pair's `ready`: it has opened the pool.
pub fn pair_ready(pair: &mut Proc, index: u64) -> Result<(), Fail> {
    let ready = pair.recv_any()?;
    if ready.kind != "ready" {
        return Err(Fail::failed(format!(
            "pair {index} could not open the pool: `{}` ({})",
            ready.kind,
            failure(&ready)
        )));
    }
    Ok(())
}

/// What a pair has said so far.
#[derive(Default)]
pub struct PairSeen {
    /// The id of the segment it took.
    pub took: Option<String>,
    /// The sender's send has returned.
    pub sent: bool,
    /// The receiver waits for `release` (at this byte) and has not been released.
    pub holding: Option<u64>,
    /// The receiver's last `holding` (its pid, and the buffer its writer was given: `from`,
    /// `len`).
    pub holding_said: Option<ipc_labs_driver::Message>,
    /// The sender waits for `release` (at this byte).
    pub sender_holding: Option<u64>,
    /// The receiver reported its sender's message.
    pub delivered: bool,
    /// The `failed` messages, when failures are expected, and whether each came from the
    /// sender.
    pub failed: Vec<(bool, ipc_labs_driver::Message)>,
    /// The sender said `done`.
    pub done: bool,
}

impl PairSeen {
    /// The `failed` of the pair's receiver (`false`) or of its sender (`true`), if it came.
    pub fn failure_of(&self, sender: bool) -> Option<&ipc_labs_driver::Message> {
        self.failed
            .iter()
            .find(|(from_sender, _)| *from_sender == sender)
            .map(|(_, message)| message)
    }
}

/// How a pair is followed.
pub struct Follow<'a> {
    pub index: u64,
    /// The hash its receiver must report.
    pub want: &'a str,
    /// What `free_count()` may say right after the take.
    pub free_after_take: RangeInclusive<usize>,
    /// The pool's segment count, for messages.
    pub segments: usize,
    /// Whether a `failed` is noted (the check provoked it) rather than a failure.
    pub failures_expected: bool,
}

/// Follows what a pair says until `until(seen)`: its `took` (with a free count in
/// `free_after_take`), holds, its receiver's message (whose hash must be `want`), its sender's
/// `done`.
pub fn follow_pair(
    pair: &mut Proc,
    how: &Follow,
    seen: &mut PairSeen,
    until: impl Fn(&PairSeen) -> bool,
) -> Result<(), Fail> {
    let index = how.index;
    let segments = how.segments;
    let root = pair.pid.as_raw().to_string();
    while !until(seen) {
        let message = pair.recv_any()?;
        let from_sender = message.get("pid") == Some(root.as_str());
        match message.kind.as_str() {
            "took" => {
                let id = message.get("id").unwrap_or("?").to_string();
                let free: Option<usize> = message.get("free").and_then(|f| f.parse().ok());
                let range = &how.free_after_take;
                if !free.is_some_and(|free| range.contains(&free)) {
                    return Err(Fail::failed(format!(
                        "right after pair {index} took segment {id}, free_count() said {} of \
                         the pool's {segments} segments are free, where {}",
                        message.get("free").unwrap_or("nothing"),
                        if range.start() == range.end() {
                            format!(
                                "exactly {} can be (the grader knows how many ids it left there, \
                                 and no other pair ran): count the ids on the free queue \
                                 (mq_getattr's mq_curmsgs), not a number of your own",
                                range.start()
                            )
                        } else {
                            // Other pairs run: an id given back twice fits as well.
                            format!(
                                "at most {} can be: either free_count() does not count the ids \
                                 on the free queue (mq_getattr's mq_curmsgs), or an id went back \
                                 on the queue that should not have (given back twice, or after a \
                                 failed transfer)",
                                range.end()
                            )
                        }
                    )));
                }
                seen.took = Some(id);
            }
            "sent" if from_sender => seen.sent = true,
            "holding" => {
                let at = message.get("at").and_then(|a| a.parse().ok());
                if from_sender {
                    seen.sender_holding = at;
                } else {
                    seen.holding = at;
                    seen.holding_said = Some(message.clone());
                }
            }
            "message" => {
                if message.get("hash") != Some(how.want) {
                    return Err(Fail::failed(format!(
                        "pair {index}'s receiver got {} bytes that are not its sender's \
                         message (segment {}): two pairs used one segment at once. Take a \
                         segment from the free queue for each pair, and give it back only after \
                         its receiver has read the end of the message",
                        message.get("len").unwrap_or("?"),
                        message.get("id").unwrap_or("?")
                    )));
                }
                seen.delivered = true;
            }
            "failed" if how.failures_expected => seen.failed.push((from_sender, message)),
            "failed" => return Err(pair_failed(index, segments, &message, from_sender)),
            "done" if from_sender => {
                if !seen.delivered {
                    return Err(Fail::failed(format!(
                        "pair {index}'s sender finished but its receiver reported no message"
                    )));
                }
                seen.done = true;
            }
            other => {
                return Err(Fail::failed(format!(
                    "pair {index} said `{other}` unexpectedly"
                )));
            }
        }
    }
    Ok(())
}

/// The failure for a `failed` that pair `index` (of a pool of `segments`) said where none was
/// provoked, from its sender (`from_sender`) or its receiver.
pub fn pair_failed(
    index: u64,
    segments: usize,
    message: &ipc_labs_driver::Message,
    from_sender: bool,
) -> Fail {
    match message.get("kind") {
        Some("bad-id") => Fail::failed(format!(
            "pair {index} said `failed` ({}), though every id the grader let on the free \
             queue is one of the pool's (0 to {}): Pool::open takes the pool's count from \
             the queue's mq_maxmsg, and take() refuses only an id outside 0..count",
            failure(message),
            segments - 1
        )),
        Some("pool-empty") => Fail::failed(format!(
            "pair {index} found no free segment for {PEER_TIMEOUT_MS} ms, though the \
             pairs before it had finished with the pool's segments: a segment was \
             never given back. The receiver gives its segment back once it has read \
             the end of the message"
        )),
        Some("semaphore") if message.get("error").is_some_and(|e| e.contains("EINVAL")) => {
            let who = if from_sender { "sender" } else { "receiver" };
            Fail::failed(format!(
                "pair {index}'s {who} said `failed` ({}): {}",
                failure(message),
                super::transfer::SEM_EINVAL
            ))
        }
        _ => {
            let who = if from_sender { "sender" } else { "receiver" };
            Fail::failed(format!(
                "pair {index}'s {who} said `failed` ({}): if another pair's chunks \
                 reached it, its segment was given back too early (only the receiver, \
                 after the end of the message, may give it back)",
                failure(message)
            ))
        }
    }
}

/// The creator's descriptor of the free queue (the one its `Pool` keeps, from `mq_open()`)
/// must not be `O_NONBLOCK`: a `take()` on that `Pool` from an empty queue would fail at once
/// with `EAGAIN` instead of waiting up to its timeout. Read from `/proc/PID/fdinfo`.
fn nonblocking_queue(pid: i32, names: &PoolNames) -> Result<(), Fail> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Ok(());
    };
    for fd in fds.flatten() {
        let Ok(target) = std::fs::read_link(fd.path()) else {
            continue;
        };
        if target.to_str() != Some(names.queue.as_str()) {
            continue;
        }
        let fd = fd.file_name().to_string_lossy().into_owned();
        let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap_or_default();
        let flags = info
            .lines()
            .find_map(|line| line.strip_prefix("flags:"))
            .and_then(|f| u32::from_str_radix(f.trim(), 8).ok());
        if let Some(flags) = flags
            && flags & libc::O_NONBLOCK as u32 != 0
        {
            return Err(Fail::failed(format!(
                "the pool's creator (pid {pid}) holds its free queue {} open with O_NONBLOCK \
                 (fd {fd}, flags 0{flags:o} in /proc/{pid}/fdinfo/{fd}): a take() on the Pool \
                 that Pool::create returned fails at once with EAGAIN when the queue is empty, \
                 instead of waiting in mq_timedreceive() up to its timeout for an id to come \
                 back. Open the queue blocking (no O_NONBLOCK) in Pool::create as in Pool::open",
                names.queue
            )));
        }
    }
    Ok(())
}
