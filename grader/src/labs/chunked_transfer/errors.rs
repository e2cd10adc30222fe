//! The errors a program must report by kind, each provoked at its edge, and what each error
//! path must leave behind: nothing it made, and everything that was there before.

use super::MAX_POOL;
use super::failures::HalfWay;
use super::headers::spawn_one_message_receiver;
use super::layout::{MIN_SEGMENT, Mapped};
use super::observe::dev_shm;
use super::pool::{
    PairOptions, PoolNames, destroy_pool, pool_ready, spawn_pair, spawn_pool,
    spawn_pool_with_msg_max,
};
use super::transfer::{Setup, check_messages, failure, said, start_receiver, start_sender};
use crate::engine::audit::message_queue_exists;
use crate::engine::tracer::{Action, Call, Tracer};
use crate::engine::{Fail, Proc, Run};

pub fn typed_errors(run: &mut Run) -> Result<String, Fail> {
    // What must be refused on its own starts at once (each program has names of its own), and
    // is judged in turn; then the cases that need another object first.
    let mut alone = Refusals::start(run)?;
    alone.judge()?;
    existing_segment(run)?;
    super::aged_objects::old_objects_left_alone(run)?;
    dangling_link(run)?;
    empty_object(run)?;
    super::missing_name::missing_name_reported_at_once(run)?;
    super::creation_modes::segments_created_with_their_mode(run)?;
    super::pool_creation::pool_made_and_removed(run)?;
    pool_errors(run)?;
    super::failures::forced_failures(run)?;
    super::failures::queue_made_meanwhile(run)?;
    super::failures::ids_after_their_segments(run)?;
    super::held_after_create::failed_steps_leave_nothing(run)?;
    super::failed_opens::failed_opens_leave_nothing(run)?;
    super::failed_pool_creates::failed_pool_creates_hold_nothing(run)?;
    super::destroy_queue::destroy_reports_the_queue(run)?;
    super::others_objects::others_objects_left_alone(run)?;
    Ok(
        "a 4095-byte segment, an existing name, a name taken by a dangling link or an empty \
         object, a missing name, a segment whose ftruncate() or mmap() fails, a missing pool, pools of 0 and 11 \
         segments, of 4095-byte segments, over an existing pool, segment or queue alone were \
         refused with their errors, leaving nothing of their own and everything that was there; \
         pools of 1 and 10 segments of 4096 bytes worked, and destroy() went on past two \
         missing segments and reported the first; ftruncate(), mmap(), shm_open() (creating \
         and opening), the creating mq_open() and mq_send() made to fail each gave its kind \
         and errno and left nothing; a 4095-byte pool on a taken queue was bad-size; a queue \
         made while the creator was at its mq_open() was refused; segment 0 was there, \
         initialized, at the first id's mq_send(); with ftruncate(), mmap() and each sem_init() \
         made to fail, the sender held no descriptor or mapping of the segment at its exit; the \
         pool's creator held none of its segments; a segment name taken while the creator was at \
         its shm_open() was refused and left; destroy() left names past the pool's ids; a link \
         and a name with a `/` inside were refused by open; names held by segments of the \
         grader's last changed 61 s and 30 days ago were refused as existing and left as they were"
            .into(),
    )
}

/// Starts a sender that creates `name` of `size` bytes and sends one empty message.
fn spawn_sender(run: &mut Run, name: &str, size: u64, role: &'static str) -> Result<Proc, Fail> {
    let size = size.to_string();
    let mut sender = run.spawn(&[
        "send", "--name", name, "--size", &size, "--seed", "1", "--lens", "0",
    ])?;
    sender.set_roles(move |_| role.into());
    Ok(sender)
}

/// The programs that must refuse what they are asked, each on names of its own.
struct Refusals {
    /// A sender asked for 4095 bytes, and the name it was given.
    small: (Proc, String),
    /// A sender asked for 4095 bytes on a name that an object of the grader's has.
    small_taken: (Proc, String, Mapped),
    /// Senders whose `ftruncate()`, then `mmap()`, fails.
    half_way: Vec<HalfWay>,
    /// A receiver of a segment that does not exist.
    missing: Proc,
    /// A pair on a pool that does not exist.
    no_pool: Proc,
    /// Pools of a count or size out of range, and the error each must give.
    bad_pools: Vec<(Proc, PoolNames, usize, usize, &'static str)>,
    /// A pool of `MAX_POOL + 1` segments in an IPC namespace whose `msg_max` would let its
    /// queue be made (as root only).
    over_count: Option<(Proc, PoolNames)>,
}

impl Refusals {
    fn start(run: &mut Run) -> Result<Refusals, Fail> {
        let name = run.ipc_name("small");
        let small = (
            spawn_sender(run, &name, MIN_SEGMENT as u64 - 1, "the sender")?,
            name,
        );
        // The size is the first thing create() judges: on a name that exists, a size below
        // the minimum is still BadSize, not Exists.
        let name = run.ipc_name("small-taken");
        let object = Mapped::create(run, &name, MIN_SEGMENT, false)?;
        let small_taken = (
            spawn_sender(run, &name, MIN_SEGMENT as u64 - 1, "the sender")?,
            name,
            object,
        );
        let half_way = HalfWay::start(run)?;
        let name = run.ipc_name("missing");
        let missing = spawn_one_message_receiver(run, &name, 1000)?;
        let name = run.ipc_name("nopool");
        let no_pool = spawn_pair(run, &name, 0, 1, 100, &PairOptions::default())?;
        let mut bad_pools = Vec::new();
        for (count, size, error) in [
            (0, 65_536, "BadCount"),
            (MAX_POOL + 1, 65_536, "BadCount"),
            (2, MIN_SEGMENT - 1, "BadSize"),
        ] {
            let names = PoolNames::new(run, &format!("pool{count}"), count);
            let pool = spawn_pool(run, &names, size)?;
            bad_pools.push((pool, names, count, size, error));
        }
        let names = PoolNames::new(run, "pool-over", MAX_POOL + 1);
        let over_count =
            spawn_pool_with_msg_max(run, &names, 65_536, ROOMY_MSG_MAX)?.map(|pool| (pool, names));
        Ok(Refusals {
            small,
            small_taken,
            half_way,
            missing,
            no_pool,
            bad_pools,
            over_count,
        })
    }

    fn judge(&mut self) -> Result<(), Fail> {
        // A segment below the minimum: refused before anything is made.
        let (small, name) = &mut self.small;
        refused(small, "asked for a segment of 4095 bytes", "BadSize")?;
        if dev_shm(name).exists() {
            return Err(Fail::failed(format!(
                "a sender refused a segment of 4095 bytes, but {} exists: check the size before \
                 shm_open()",
                dev_shm(name).display()
            )));
        }
        let (sender, name, _object) = &mut self.small_taken;
        let judged = small_on_a_taken_name(sender, name);
        let still_there = dev_shm(name).exists();
        let _ = nix::sys::mman::shm_unlink(name.as_str());
        judged?;
        if !still_there {
            return Err(Fail::failed(format!(
                "a sender asked for a segment of 4095 bytes on the name {}, which an object of \
                 the grader's had, refused it with bad-size, but the grader's object is gone: a \
                 refused create() touches nothing that was there",
                dev_shm(name).display()
            )));
        }
        for sender in &mut self.half_way {
            sender.judge()?;
        }
        refused(
            &mut self.missing,
            "asked to open a segment that does not exist",
            "NotFound",
        )?;
        refused(
            &mut self.no_pool,
            "asked to open a pool that does not exist",
            "NotFound",
        )?;
        // Counts and sizes out of range: refused, nothing left.
        for (pool, names, count, size, error) in &mut self.bad_pools {
            refused(
                pool,
                &format!("asked for a pool of {count} segments of {size} bytes"),
                error,
            )?;
            names.none_left("a refused pool")?;
        }
        if let Some((pool, names)) = &mut self.over_count {
            over_count_refused(pool, names)?;
        }
        Ok(())
    }
}

/// The `msg_max` of the namespace of [`Refusals::over_count`]: room for a queue of more
/// messages than a pool may have segments.
const ROOMY_MSG_MAX: u64 = 64;

/// A pool of `MAX_POOL + 1` segments, asked where the kernel would make its queue
/// ([`ROOMY_MSG_MAX`]): the count is the lab's limit, refused before anything is made, not
/// what `mq_open()` happens to refuse.
fn over_count_refused(pool: &mut Proc, names: &PoolNames) -> Result<(), Fail> {
    let count = MAX_POOL + 1;
    let answer = pool.recv_any()?;
    if answer.kind == "failed" && answer.get("kind") == Some("bad-count") {
        pool.wait()?;
        return names.none_left("a refused pool");
    }
    pool.kill_tree();
    for name in &names.segments {
        let _ = nix::sys::mman::shm_unlink(name.as_str());
    }
    let said = said(&answer);
    Err(Fail::failed(format!(
        "asked for a pool of {count} segments in an IPC namespace whose msg_max is \
         {ROOMY_MSG_MAX} (so that mq_open() can make a queue of {count} messages), the program \
         said {said}: the limit of 1..=MAX_POOL_SEGMENTS ({MAX_POOL}) is the lab's, checked by \
         Pool::create() before it makes anything (TransferError::BadCount), not whatever \
         mq_open() refuses on a given machine (msg_max, or a privilege that passes it)"
    )))
}

/// A sender asked for 4095 bytes on `name`, which the grader's object has: it must say
/// `bad-size` (the size is judged first, before shm_open() or any look at the name), and exit.
fn small_on_a_taken_name(sender: &mut Proc, name: &str) -> Result<(), Fail> {
    let answer = sender.recv_any()?;
    if answer.kind == "failed" && answer.get("kind") == Some("bad-size") {
        sender.wait()?;
        return Ok(());
    }
    let asked = format!(
        "asked for a segment of 4095 bytes on a name that exists ({}, an object of the \
         grader's)",
        dev_shm(name).display()
    );
    let said = said(&answer);
    let why = if answer.get("kind") == Some("exists") {
        ": it tries the name (shm_open() with O_CREAT | O_EXCL, or a look at it) before it \
         checks the size; with shm_open() first, a free name is made for a moment at a size \
         that is then refused. Check the size first: a refused size makes and tries nothing"
    } else {
        ""
    };
    Err(Fail::failed(format!(
        "{asked}, the program said {said}: this must fail with TransferError::BadSize \
         (kind=bad-size), whatever the name{why}"
    )))
}

/// A name that exists: refused, and the segment of that name still works.
fn existing_segment(run: &mut Run) -> Result<(), Fail> {
    let setup = Setup::new(MIN_SEGMENT, vec![7, 0]);
    let first = start_sender(run, &setup)?;
    let mut second = spawn_sender(run, &first.name, MIN_SEGMENT as u64, "the second sender")?;
    refused(
        &mut second,
        "asked to create a segment whose name another sender has",
        "Exists",
    )?;
    if !dev_shm(&first.name).exists() {
        return Err(Fail::failed(
            "a second sender refused an existing name, and the name is gone: it removed the \
             first sender's segment. Unlink only a segment this call created",
        ));
    }
    let mut transfer = start_receiver(run, &setup, first)?;
    transfer.go()?;
    check_messages(run, &mut transfer, &setup)?;
    transfer.finish()
}

/// A name taken by a dangling symbolic link: a look at the name (stat, `Path::exists`) finds
/// nothing there, and only `shm_open(O_CREAT | O_EXCL)` tells that the name is taken (EEXIST),
/// as it does when another process creates the name between a look and a create.
fn dangling_link(run: &mut Run) -> Result<(), Fail> {
    let name = run.ipc_name("linked");
    let target = run.ipc_name("link-target");
    let link = dev_shm(&name);
    std::os::unix::fs::symlink(dev_shm(&target), &link)?;
    if let Some((uid, gid)) = run.program_user() {
        std::os::unix::fs::lchown(&link, Some(uid), Some(gid))?;
    }
    let mut sender = spawn_sender(run, &name, MIN_SEGMENT as u64, "the sender")?;
    let answer = sender.recv_any();
    let created = dev_shm(&target).exists();
    let kept = link.symlink_metadata().is_ok();
    let _ = std::fs::remove_file(&link);
    let _ = nix::sys::mman::shm_unlink(target.as_str());
    let answer = answer?;
    let asked = format!(
        "asked to create a segment whose name {} is a symbolic link to a name that does not \
         exist (a dangling link: a look at the name finds nothing, yet the name is taken)",
        link.display()
    );
    if answer.kind != "failed" || answer.get("kind") != Some("exists") {
        let said = said(&answer);
        // glibc's shm_open() adds O_NOFOLLOW: without O_EXCL the link is refused with ELOOP;
        // with it, EEXIST comes first.
        let why = if answer.get("error").is_some_and(|e| e.contains("ELOOP")) {
            ": it opened the name without O_EXCL (shm_open() then refuses the link with \
             ELOOP; with O_EXCL it says EEXIST). A create that does not rely on O_EXCL, \
             looking first whether the name exists, has a gap between the look and the \
             create in which another process can make the name. Create with O_CREAT | O_EXCL \
             and let EEXIST say the name is taken"
        } else {
            ""
        };
        return Err(Fail::failed(format!(
            "{asked}, the program said {said}: this must fail with TransferError::Exists \
             (kind=exists){why}"
        )));
    }
    if created {
        return Err(Fail::failed(format!(
            "{asked}, the program said kind=exists, but {} (the link's target) was created: \
             shm_open(O_CREAT | O_EXCL) never follows a link",
            dev_shm(&target).display()
        )));
    }
    if !kept {
        return Err(Fail::failed(format!(
            "{asked}, the program said kind=exists, rightly, but removed the link: a create \
             that fails unlinks only a name it made itself"
        )));
    }
    sender.wait()?;
    Ok(())
}

/// A name taken by an object of 0 bytes (the program's user's), as a segment is between its
/// creator's `shm_open()` and `ftruncate()`: `EEXIST` is `Exists` whatever the object holds,
/// and the object is left as it was.
fn empty_object(run: &mut Run) -> Result<(), Fail> {
    use std::os::unix::fs::MetadataExt;
    let name = run.ipc_name("empty-object");
    let object = nix::sys::mman::shm_open(
        name.as_str(),
        nix::fcntl::OFlag::O_CREAT | nix::fcntl::OFlag::O_EXCL | nix::fcntl::OFlag::O_RDWR,
        nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
    )
    .map_err(|errno| Fail::Grader(format!("shm_open({name}): {errno}")))?;
    if let Some((uid, gid)) = run.program_user() {
        std::os::unix::fs::fchown(&object, Some(uid), Some(gid))?;
    }
    let inode = std::fs::metadata(dev_shm(&name))?.ino();
    let mut sender = match spawn_sender(run, &name, MIN_SEGMENT as u64, "the sender") {
        Ok(sender) => sender,
        Err(fail) => {
            let _ = nix::sys::mman::shm_unlink(name.as_str());
            return Err(fail);
        }
    };
    let answer = sender.recv_any();
    let now = std::fs::metadata(dev_shm(&name)).ok();
    let _ = nix::sys::mman::shm_unlink(name.as_str());
    let answer = answer?;
    let asked = format!(
        "asked to create a segment whose name {} an object of 0 bytes has (as a segment has \
         between its creator's shm_open() and its ftruncate())",
        dev_shm(&name).display()
    );
    let same = now.is_some_and(|now| now.ino() == inode && now.len() == 0);
    if answer.kind != "failed" || answer.get("kind") != Some("exists") {
        let said = said(&answer);
        let took_over = if same {
            ""
        } else {
            ", and the object is gone or replaced: it removed another's object and took the \
             name over. An empty object is not left over: its creator may be about to give it \
             its size"
        };
        return Err(Fail::failed(format!(
            "{asked}, the program said {said}{took_over}. EEXIST from shm_open(O_CREAT | \
             O_EXCL) is TransferError::Exists (kind=exists), whatever the object holds"
        )));
    }
    if !same {
        return Err(Fail::failed(format!(
            "{asked}, the program said kind=exists, rightly, but the object is gone or \
             changed: a create that fails touches nothing that was there"
        )));
    }
    sender.wait()?;
    Ok(())
}

fn pool_errors(run: &mut Run) -> Result<(), Fail> {
    // Three pools at once, on prefixes of their own: the smallest, one with a segment's name
    // taken by another object, the largest of the smallest segments.
    let names = PoolNames::new(run, "pool1", 1);
    let mut first = spawn_pool(run, &names, MIN_SEGMENT)?;
    let names4 = PoolNames::new(run, "pool4", 4);
    // Segments 2 and 3 taken by other objects: the pool fails at 2 and never reaches 3.
    let in_the_way = [2, 3].map(|id| Mapped::create(run, &names4.segments[id], MIN_SEGMENT, false));
    let in_the_way = in_the_way.into_iter().collect::<Result<Vec<_>, _>>()?;
    let mut pool4 = spawn_pool(run, &names4, MIN_SEGMENT)?;
    let names10 = PoolNames::new(run, "pool10", MAX_POOL);
    let pool10 = spawn_pool(run, &names10, MIN_SEGMENT)?;
    // A pool whose free queue alone exists already (the grader's, with a message of its own):
    // the queue is the first step, so that nothing of the pool may be left.
    let names_q = PoolNames::new(run, "queued", 3);
    let taken_queue = GraderQueue::create(&names_q.queue)?;
    let pool_q = spawn_pool(run, &names_q, MIN_SEGMENT)?;
    // A pool of too small segments on a prefix whose queue exists: the size is judged first.
    let names_qs = PoolNames::new(run, "queuedsmall", 2);
    let taken_small = GraderQueue::create(&names_qs.queue)?;
    let pool_qs = spawn_pool(run, &names_qs, MIN_SEGMENT - 1)?;

    // The smallest pool works; a second one over its names is refused and leaves it whole.
    pool_ready(&mut first, &names, MIN_SEGMENT)?;
    let mut second = spawn_pool(run, &names, MIN_SEGMENT)?;
    refused(
        &mut second,
        "asked for a pool whose free queue exists (another pool has its prefix)",
        "Exists",
    )?;
    let gone: Vec<&String> = names
        .segments
        .iter()
        .chain([&names.queue])
        .filter(|name| !names.left().contains(name))
        .collect();
    if !gone.is_empty() {
        return Err(Fail::failed(format!(
            "a second pool with the prefix of an existing one was refused, and these of the \
             first pool are gone: {gone:?}. A failed create() removes only what it made itself"
        )));
    }
    destroy_pool(&mut first, &names, "with its only segment free", 1)?;

    // A segment in the way half-way: what the pool made before it must go, the segment in the
    // way must stay.
    let names = names4;
    refused(
        &mut pool4,
        &format!(
            "asked for a pool of 4 segments while {} exists",
            names.segments[2]
        ),
        "Exists",
    )?;
    drop(in_the_way);
    let left = names.left();
    let others = [&names.segments[2], &names.segments[3]];
    for name in others {
        let _ = nix::sys::mman::shm_unlink(name.as_str());
    }
    if left.contains(&others[0]) && !left.contains(&others[1]) {
        return Err(Fail::failed(format!(
            "a pool of 4 segments failed at segment 2, whose name another object had, and \
             removed {}, another object's, which it never reached (it left {left:?}): a create() \
             that fails part-way removes what it made itself (the queue, the segments before \
             the failure), not every name of the pool's range",
            others[1]
        )));
    }
    if left != others {
        return Err(Fail::failed(format!(
            "a pool of 4 segments failed at segment 2, whose name another object had (as had \
             segment 3's), and left {left:?} where only those objects ({}, {}) should be: a \
             create() that fails part-way removes everything it made (the queue, the segments \
             before), and nothing else",
            others[0], others[1]
        )));
    }

    queue_taken(pool_q, &names_q, taken_queue)?;
    small_pool_on_a_taken_queue(pool_qs, &names_qs, taken_small)?;

    // The largest pool of the smallest segments works; destroy() goes on past two segments
    // that are already gone and a queue whose mq_unlink() fails (EACCES, with ptrace, as
    // another user's queue), and reports the first error, segment 3's.
    let (names, mut pool) = (names10, pool10);
    pool_ready(&mut pool, &names, MIN_SEGMENT)?;
    super::held_after_create::pool_creator_holds_no_segment(&pool, &names)?;
    let (first_gone, second_gone) = (3, MAX_POOL / 2);
    for gone in [&names.segments[first_gone], &names.segments[second_gone]] {
        nix::sys::mman::shm_unlink(gone.as_str())
            .map_err(|errno| Fail::Grader(format!("shm_unlink({gone}): {errno}")))?;
    }
    let unlinking_queue = Call::any(libc::SYS_mq_unlink);
    let mut tracer = Tracer::attach(
        pool.pid.as_raw(),
        unlinking_queue,
        Action::Fail(libc::EACCES),
    )?;
    pool.send("finish", &[])?;
    let state = pool.recv_any()?;
    if state.kind != "state" {
        return Err(Fail::failed(format!(
            "asked for the free count of a pool of {MAX_POOL} segments, the pool said `{}` ({})",
            state.kind,
            failure(&state)
        )));
    }
    let answer = pool.recv_any()?;
    let queue_tried = match &mut tracer {
        Some(tracer) => Some(tracer.failed_the_call()?),
        None => None,
    };
    drop(tracer);
    pool.wait()?;
    let asked = format!(
        "destroy() of a pool of {MAX_POOL} segments whose segments {first_gone} and \
         {second_gone} the grader had unlinked{}",
        if queue_tried.is_some() {
            format!(
                ", the grader making the mq_unlink() of its free queue {} fail with EACCES \
                 (with ptrace, as another user's queue does)",
                names.queue
            )
        } else {
            String::new()
        }
    );
    let left = names.left();
    let queue_left = left.contains(&&names.queue);
    let _ = nix::mqueue::mq_unlink(names.queue.as_str());
    let segments_left: Vec<&String> = left.into_iter().filter(|n| **n != names.queue).collect();
    if !segments_left.is_empty() && answer.get("kind") == Some("mqueue") {
        return Err(Fail::failed(format!(
            "{asked} said `{}` ({}), the queue's error, and left {segments_left:?}: it stops at \
             the queue's failure. destroy() unlinks the segments (ids 0 to {}, in order), then \
             the queue, trying every one whatever fails, and returns the first error: segment \
             {first_gone}'s, kind=not-found",
            answer.kind,
            failure(&answer),
            MAX_POOL - 1
        )));
    }
    if queue_tried == Some(true) && answer.get("kind") == Some("mqueue") {
        return Err(Fail::failed(format!(
            "{asked} said `failed` ({}), the queue's error, not segment {first_gone}'s, which \
             comes first: either it keeps the last error it met instead of the first, or it \
             does not take a segment already gone for an error, where unlinking a segment \
             that is not there fails with ENOENT, TransferError::NotFound (kind=not-found). \
             destroy() tries every segment (0 to {}) and the queue, then returns the first \
             error, segment {first_gone}'s",
            failure(&answer),
            MAX_POOL - 1
        )));
    }
    if answer.kind != "failed" || answer.get("kind") != Some("not-found") {
        return Err(Fail::failed(format!(
            "{asked} said `{}` ({}): unlinking a segment that is not there fails with ENOENT, \
             TransferError::NotFound (kind=not-found), and destroy() returns the first error",
            answer.kind,
            failure(&answer)
        )));
    }
    let queue_kept = queue_tried.map_or(queue_left, |tried| !tried);
    if !segments_left.is_empty() || queue_kept {
        let left = match (segments_left.is_empty(), queue_tried) {
            (false, _) => format!("{segments_left:?}"),
            (true, Some(_)) => "the queue, which it never tried to unlink (no mq_unlink())".into(),
            (true, None) => format!("the queue {}", names.queue),
        };
        return Err(Fail::failed(format!(
            "{asked} reported kind=not-found, rightly, but left {left}: destroy() tries every \
             segment and the queue, then returns the first error"
        )));
    }
    // The error names its object (TransferError::NotFound's name): the first one's, not the
    // last's. An error that names neither is not judged here.
    let error = answer.get("error").unwrap_or("");
    let (first, last) = (&names.segments[first_gone], &names.segments[second_gone]);
    if error.contains(last.as_str()) && !error.contains(first.as_str()) {
        return Err(Fail::failed(format!(
            "{asked} reported kind=not-found, but for segment {second_gone} ({}), the last \
             missing one: destroy() tries every segment (0 to {}) and the queue, then returns \
             the first error, segment {first_gone}'s ({first}), not the last",
            failure(&answer),
            MAX_POOL - 1
        )));
    }
    Ok(())
}

/// A queue the grader makes under a pool's queue name before the pool: attributes and a
/// message no pool makes, so that a queue removed and made again shows.
pub(super) struct GraderQueue {
    queue: Option<nix::mqueue::MqdT>,
}

impl Drop for GraderQueue {
    fn drop(&mut self) {
        if let Some(queue) = self.queue.take() {
            let _ = nix::mqueue::mq_close(queue);
        }
    }
}

/// The attributes and the message of a [`GraderQueue`].
const GRADER_QUEUE_MAXMSG: libc::c_long = 5;
const GRADER_QUEUE_MSGSIZE: libc::c_long = 8;
const GRADER_QUEUE_MESSAGE: &[u8] = b"grader!!";

impl GraderQueue {
    pub(super) fn create(name: &str) -> Result<GraderQueue, Fail> {
        use nix::mqueue::{MQ_OFlag, MqAttr, mq_open, mq_send};
        let attr = MqAttr::new(0, GRADER_QUEUE_MAXMSG, GRADER_QUEUE_MSGSIZE, 0);
        let queue = mq_open(
            name,
            MQ_OFlag::O_CREAT | MQ_OFlag::O_EXCL | MQ_OFlag::O_RDWR | MQ_OFlag::O_NONBLOCK,
            nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
            Some(&attr),
        )
        .map_err(|errno| Fail::Grader(format!("mq_open({name}): {errno}")))?;
        mq_send(&queue, GRADER_QUEUE_MESSAGE, 0)
            .map_err(|errno| Fail::Grader(format!("mq_send({name}): {errno}")))?;
        Ok(GraderQueue { queue: Some(queue) })
    }

    /// Whether the queue open here is still the one the grader made, as it made it: its
    /// attributes and its one message.
    pub(super) fn untouched(&self) -> bool {
        let Some(queue) = &self.queue else {
            return false;
        };
        nix::mqueue::mq_getattr(queue).is_ok_and(|attr| {
            (attr.maxmsg(), attr.msgsize(), attr.curmsgs())
                == (GRADER_QUEUE_MAXMSG, GRADER_QUEUE_MSGSIZE, 1)
        })
    }
}

/// A pool on a prefix whose free queue alone exists (the grader's): refused with `exists`,
/// none of its segments left, the grader's queue still there, as it was.
fn queue_taken(mut pool: Proc, names: &PoolNames, queue: GraderQueue) -> Result<(), Fail> {
    let count = names.segments.len();
    let asked = format!(
        "asked for a pool of {count} segments whose free queue {} alone existed (made by the \
         grader; no segment of the prefix existed)",
        names.queue
    );
    refused(&mut pool, &asked, "Exists")?;
    let segments: Vec<&String> = names
        .segments
        .iter()
        .filter(|name| dev_shm(name).exists())
        .collect();
    let same_queue = queue.untouched() && message_queue_exists(&names.queue);
    let _ = nix::mqueue::mq_unlink(names.queue.as_str());
    drop(queue);
    if !segments.is_empty() {
        return Err(Fail::failed(format!(
            "{asked}, the program said kind=exists, rightly, but left {segments:?}: segments \
             it made before it found the queue taken. A create() that fails part-way removes \
             everything it made (here its segments), and nothing else; the queue, which the \
             handout's API makes first, fails before any segment is made"
        )));
    }
    if !same_queue {
        return Err(Fail::failed(format!(
            "{asked}, the program said kind=exists, rightly, but the grader's queue is gone or \
             changed: A failed create() removes only what it made itself"
        )));
    }
    Ok(())
}

/// A pool of 4095-byte segments on a prefix whose free queue exists (the grader's): the size
/// is judged before anything is made or tried, so it is `bad-size`, not `exists`.
fn small_pool_on_a_taken_queue(
    mut pool: Proc,
    names: &PoolNames,
    queue: GraderQueue,
) -> Result<(), Fail> {
    let answer = pool.recv_any();
    let same_queue = queue.untouched() && message_queue_exists(&names.queue);
    let _ = nix::mqueue::mq_unlink(names.queue.as_str());
    drop(queue);
    let answer = answer?;
    let asked = format!(
        "asked for a pool of {} segments of {} bytes on a prefix whose free queue {} existed (made by the grader)",
        names.segments.len(),
        MIN_SEGMENT - 1,
        names.queue
    );
    if answer.kind != "failed" || answer.get("kind") != Some("bad-size") {
        let said = said(&answer);
        let why = if answer.get("kind") == Some("exists") {
            ": it tried the queue (mq_open(O_CREAT | O_EXCL)) before it judged the size, \
             leaving the size to Segment::create. Pool::create judges the count and the size \
             first: a refused pool makes and tries nothing"
        } else {
            ""
        };
        pool.kill_tree();
        return Err(Fail::failed(format!(
            "{asked}, the program said {said}: this must fail with TransferError::BadSize \
             (kind=bad-size), whatever the names{why}"
        )));
    }
    pool.wait()?;
    if !same_queue {
        return Err(Fail::failed(format!(
            "{asked}, the program said kind=bad-size, rightly, but the grader's queue is gone \
             or changed: a refused create() touches nothing that was there"
        )));
    }
    names.none_left(&format!("{asked} and refused"))
}

/// Waits for `proc` to refuse what it was asked (`asked`) with `failed` and the kind of
/// `TransferError::<error>`, and to exit.
pub fn refused(proc: &mut Proc, asked: &str, error: &str) -> Result<(), Fail> {
    let kind = match error {
        "BadSize" => "bad-size",
        "BadCount" => "bad-count",
        "Exists" => "exists",
        "NotFound" => "not-found",
        _ => return Err(Fail::Grader(format!("no kind for {error}"))),
    };
    let answer = proc.recv_any()?;
    if answer.kind != "failed" || answer.get("kind") != Some(kind) {
        let said = said(&answer);
        return Err(Fail::failed(format!(
            "{asked}, the program said {said}: this must fail with TransferError::{error} \
             (kind={kind})"
        )));
    }
    proc.wait()?;
    Ok(())
}
