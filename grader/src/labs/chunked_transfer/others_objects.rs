//! Objects that are not the program's own, under names it uses: a segment name another process
//! takes while a pool's creator is at that segment's create (only that create's `O_EXCL` sees
//! it, and the clean-up must leave it); objects under a pool's names past its count, which
//! `destroy()` must leave; and a segment's name that is a symbolic link, or a path with a `/`
//! inside, which `Segment::open` (through `shm_open()`) must refuse, never mapping what lies
//! behind it.

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use super::MAX_POOL;
use super::headers::spawn_one_message_receiver;
use super::layout::{MIN_SEGMENT, Mapped};
use super::observe::dev_shm;
use super::pool::{PoolNames, destroy_pool, pool_args, pool_ready, spawn_pool};
use super::transfer::said;
use crate::engine::tracer::{Action, Call, Reached, Tracer};
use crate::engine::{Fail, Run, force};

pub fn others_objects_left_alone(run: &mut Run) -> Result<(), Fail> {
    let past_count = PastCount::start(run)?;
    segment_made_meanwhile(run)?;
    past_count.judge()?;
    open_refuses_what_is_not_a_segment(run)
}

/// A pool of 2 segments, and objects of the grader's under its names past its count: id 2
/// (one past it), 9 (the last id a pool may have) and 10 (one past that).
struct PastCount {
    pool: crate::engine::Proc,
    names: PoolNames,
    others: Vec<(usize, String, Mapped)>,
}

const PAST_COUNT_POOL: usize = 2;

impl PastCount {
    fn start(run: &mut Run) -> Result<PastCount, Fail> {
        let names = PoolNames::new(run, "counted", PAST_COUNT_POOL);
        let mut others = Vec::new();
        for id in [PAST_COUNT_POOL, MAX_POOL - 1, MAX_POOL] {
            let name = run.ipc_name(&format!("counted-seg-{id}"));
            let object = Mapped::create(run, &name, MIN_SEGMENT, true)?;
            others.push((id, name, object));
        }
        let mut pool = spawn_pool(run, &names, MIN_SEGMENT)?;
        pool.set_roles(|_| "the pool's creator".into());
        Ok(PastCount {
            pool,
            names,
            others,
        })
    }

    fn judge(mut self) -> Result<(), Fail> {
        let destroyed = pool_ready(&mut self.pool, &self.names, MIN_SEGMENT).and_then(|()| {
            destroy_pool(
                &mut self.pool,
                &self.names,
                "a pool of 2 segments with objects of the grader's past its ids",
                PAST_COUNT_POOL,
            )
        });
        let gone: Vec<String> = self
            .others
            .iter()
            .filter(|(_, name, _)| !dev_shm(name).exists())
            .map(|(id, name, _)| format!("id {id} ({})", dev_shm(name).display()))
            .collect();
        for (_, name, _) in &self.others {
            let _ = nix::sys::mman::shm_unlink(name.as_str());
        }
        if destroyed.is_err() {
            self.pool.kill_tree();
            self.names.remove();
        }
        destroyed?;
        if !gone.is_empty() {
            return Err(Fail::failed(format!(
                "a pool of {PAST_COUNT_POOL} segments ({}) was created and destroyed while \
                 objects of the grader's had its names past its ids (ids {PAST_COUNT_POOL}, {} \
                 and {MAX_POOL}); afterwards these are gone: {}. destroy() unlinked names that \
                 are not the pool's (a sweep of every id up to MAX_POOL_SEGMENTS, or of what \
                 /dev/shm lists under the prefix): it removes the pool's own segments, ids \
                 0..count, and its queue, nothing else",
                self.names.prefix,
                MAX_POOL - 1,
                gone.join(", ")
            )));
        }
        Ok(())
    }
}

/// A pool of 3 segments whose creator the grader holds at the creating `shm_open()` of segment
/// 1 (its `openat()` with `O_CREAT`, ptrace: after any look it took at the names), while it
/// makes an object of that name itself, as another process could: the create must fail with
/// `exists`, remove segment 0 and the queue, and leave the grader's object (and segment 2's
/// name, never reached).
fn segment_made_meanwhile(run: &mut Run) -> Result<(), Fail> {
    const TAKEN: usize = 1;
    let names = PoolNames::new(run, "overtaken", 3);
    let args = pool_args(&names, MIN_SEGMENT)?;
    let mut proc = run.spawn_stopped(&args)?;
    proc.set_roles(|_| "the pool's creator".into());
    let pid = proc.pid.as_raw();
    let taken = names.segments[TAKEN].clone();
    let creating: &'static [Call] = Vec::leak(vec![
        Call::opening(&dev_shm(&taken)),
        Call::flag_set(libc::SYS_openat, 2, libc::O_CREAT as u64),
    ]);
    let Some(mut tracer) = Tracer::attach(pid, Call::all_of(creating), Action::Hold)? else {
        proc.kill_tree();
        return Ok(());
    };
    force::resume(pid)?;
    let reached = tracer.wait(&mut proc, Instant::now() + Duration::from_secs(5));
    let cleanup = |proc: &crate::engine::Proc| {
        proc.kill_tree();
        names.remove();
    };
    match reached {
        Ok(Reached::Call) => {}
        Ok(Reached::Passed(_)) => {
            // It said something first, or made no such segment (judged elsewhere).
            drop(tracer);
            cleanup(&proc);
            return Ok(());
        }
        Err(error) => {
            drop(tracer);
            cleanup(&proc);
            return Err(error);
        }
    }
    let object = Mapped::create(run, &taken, MIN_SEGMENT, true);
    let inode = std::fs::metadata(dev_shm(&taken)).map(|m| m.ino()).ok();
    tracer.release();
    let object = match object {
        Ok(object) => object,
        Err(error) => {
            cleanup(&proc);
            return Err(error);
        }
    };
    // Its clean-up runs before it reports the failure.
    let answer = proc.recv_any();
    let kept = std::fs::metadata(dev_shm(&taken)).map(|m| m.ino()).ok() == inode;
    let left: Vec<String> = names
        .left()
        .into_iter()
        .filter(|name| **name != taken)
        .cloned()
        .collect();
    drop(object);
    cleanup(&proc);
    let answer = answer?;
    let asked = format!(
        "the grader held a pool's creator (a pool of 3 segments, {}) at its creating \
         shm_open() of segment {TAKEN} (its openat() with O_CREAT, ptrace: after any look it \
         took at the names) and made an object of that name ({}) itself meanwhile, as another \
         process could",
        names.prefix,
        dev_shm(&taken).display()
    );
    if answer.kind != "failed" || answer.get("kind") != Some("exists") {
        let said = said(&answer);
        return Err(Fail::failed(format!(
            "{asked}; then the program said {said}: this must fail with TransferError::Exists \
             (kind=exists), which only shm_open(O_CREAT | O_EXCL) of that very name tells"
        )));
    }
    if !kept {
        return Err(Fail::failed(format!(
            "{asked}; the program said kind=exists, rightly, but then removed the grader's \
             object: its clean-up unlinked a name it never made (the whole range of the \
             pool's names, taken for its own because a look before the create found them \
             free). A look and a create are two steps another process can come between: a \
             create() that fails part-way removes what it made itself (the queue, segments \
             before the failure), counted as it goes, and nothing else"
        )));
    }
    if !left.is_empty() {
        return Err(Fail::failed(format!(
            "{asked}; the program said kind=exists, rightly, but left {left:?}: a create() \
             that fails part-way removes everything it made (the queue, segment 0)"
        )));
    }
    Ok(())
}

/// A receiver asked to open a name that is a symbolic link to the grader's segment, and one
/// whose name has a `/` inside (a file in a directory of /dev/shm): `shm_open()` refuses both
/// (`O_NOFOLLOW`: `ELOOP`; a name with a `/` inside: `EINVAL`), `kind=shm-open`, and the
/// receiver maps neither.
fn open_refuses_what_is_not_a_segment(run: &mut Run) -> Result<(), Fail> {
    let target = run.ipc_name("link-target-seg");
    let object = Mapped::create(run, &target, MIN_SEGMENT, true)?;
    let link = run.ipc_name("linked-seg");
    std::os::unix::fs::symlink(dev_shm(&target), dev_shm(&link))?;
    if let Some((uid, gid)) = run.program_user() {
        std::os::unix::fs::lchown(dev_shm(&link), Some(uid), Some(gid))?;
    }
    let dir = run.ipc_name("dir");
    let inside = format!("{dir}/seg");
    let made = make_file_in_dir(run, &dir, &inside);
    let cases = [
        (
            link.clone(),
            format!(
                "a symbolic link to the grader's segment {}",
                dev_shm(&target).display()
            ),
            "ELOOP",
            "shm_open() opens the object with O_NOFOLLOW, so a link at the name is refused \
             (ELOOP)",
        ),
        (
            inside.clone(),
            format!(
                "a name with a `/` inside ({}, a file of {MIN_SEGMENT} bytes in a directory of \
                 the grader's)",
                dev_shm(&inside).display()
            ),
            "EINVAL",
            "shm_open() takes one name, no `/` after the first (EINVAL)",
        ),
    ];
    let mut receivers = Vec::new();
    let started = made.and_then(|()| {
        for (name, ..) in &cases {
            receivers.push(spawn_one_message_receiver(run, name, 1000)?);
        }
        Ok(())
    });
    let mut judged = started;
    for (receiver, (name, what, errno, why)) in receivers.iter_mut().zip(&cases) {
        let answer = receiver.recv_any();
        receiver.kill_tree();
        judged = judged.and_then(|()| {
            let answer = answer?;
            if answer.kind == "failed" && answer.get("kind") == Some("shm-open") {
                return Ok(());
            }
            let said = said(&answer);
            // Any answer past the open (`ready`, or a later step's failure: the unlink of a
            // name with a `/` inside) means it opened what is behind the name.
            let opened = answer.kind == "ready"
                || matches!(
                    answer.get("kind"),
                    Some("shm-unlink" | "fstat" | "mmap" | "bad-size")
                ) && answer.kind == "failed";
            let mapped = if opened {
                ": it opened what lies behind the name. Segment::open opens the \
                 name's path itself (std::fs, or open() of /dev/shm/NAME, which follows links \
                 and takes any path) instead of shm_open(name, O_RDWR): with a link planted at a \
                 segment's name in the world-writable /dev/shm, the receiver maps, and posts \
                 semaphores into, any file its user can write"
            } else {
                ""
            };
            Err(Fail::failed(format!(
                "asked to open the segment {name}, whose name is {what}, the receiver said \
                 {said}: this must fail with TransferError::Open (kind=shm-open, {errno}): \
                 {why}{mapped}"
            )))
        });
    }
    for (name, ..) in &cases {
        let _ = std::fs::remove_file(dev_shm(name));
    }
    let _ = std::fs::remove_dir(dev_shm(&dir));
    drop(object);
    let _ = nix::sys::mman::shm_unlink(target.as_str());
    judged
}

/// A directory `dir` in /dev/shm and a file `inside` of [`MIN_SEGMENT`] bytes in it, the
/// programs' user's.
fn make_file_in_dir(run: &Run, dir: &str, inside: &str) -> Result<(), Fail> {
    std::fs::create_dir(dev_shm(dir))?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(dev_shm(inside))?;
    file.set_len(MIN_SEGMENT as u64)?;
    if let Some((uid, gid)) = run.program_user() {
        std::os::unix::fs::chown(dev_shm(dir), Some(uid), Some(gid))?;
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
    }
    Ok(())
}
