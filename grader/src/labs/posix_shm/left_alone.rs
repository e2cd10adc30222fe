//! What create and open must leave as they found it besides the table: the process's umask on
//! every path of a create that fails, the mode of another program's object an opener maps, and
//! descriptors in `/dev/shm` the process holds that are not the table's.

use std::time::{Duration, Instant};

use crate::engine::tracer::Tracer;
use crate::engine::{Fail, Proc, Run, inspect};

use super::driver::{CREATOR, OPENER, await_answer, mapped, said};
use super::probes::{attribute_change, attributes, dev_shm, object_fds, plant_object};

/// The descriptors of the object `name` that `proc` still holds as it exits, and its umask
/// then, held there by `tracer` (which must hold it at its `exit_group()` next); then lets it
/// exit. Nothing if it was not held there.
pub fn held_at_exit(
    proc: &Proc,
    mut tracer: Tracer,
    name: &str,
) -> Result<(Vec<i32>, Option<u32>), Fail> {
    let held = tracer.held_before(Instant::now() + Duration::from_secs(2))?;
    let pid = proc.pid.as_raw();
    let seen = if held {
        (object_fds(pid, name), inspect::umask(pid))
    } else {
        (Vec::new(), None)
    };
    tracer.release();
    Ok(seen)
}

/// Fails if a creator whose create failed (`what`, answered with `kind`) has, as it exits,
/// another umask (`umask`, when read) than the grader's own, which it was started with: a
/// umask set around a call and restored only on the way that succeeds.
pub fn umask_kept_on_failure(what: &str, kind: &str, umask: Option<u32>) -> Result<(), Fail> {
    let started = inspect::umask(std::process::id() as i32);
    let (Some(started), Some(now)) = (started, umask) else {
        return Ok(());
    };
    if started == now {
        return Ok(());
    }
    Err(Fail::failed(format!(
        "{what}: it said kind={kind}, but held as it exits (after that answer) its umask is \
         {now:04o}, not the {started:04o} it was started with (/proc/PID/status): create() \
         changed the process's umask and a failing path returned before putting it back (an \
         early return, `?`, between the umask() call and its restore); the umask is the whole \
         process's, and a library caller that goes on after the error makes every later file \
         with it; leave the umask alone (shm_open()'s mode 0600 is all the object needs), or \
         restore it on every path"
    )))
}

/// The mode of [`open_keeps_the_object`]'s object: another program's, group readable.
const ANOTHER_PROGRAMS_MODE: u32 = 0o640;

/// An opener of a mappable object another program made (mode 640, with bytes) says `mapped`,
/// and the object keeps its mode, owner, size and status (its ctime) while it is mapped and
/// after the opener closed it: open() never changes an object.
pub fn open_keeps_the_object(run: &mut Run) -> Result<(), Fail> {
    let name = run.ipc_name("theirs");
    let bytes = run.random_bytes(4096);
    let planted = plant_object(run, &name, &bytes)?;
    planted.set_mode(ANOTHER_PROGRAMS_MODE)?;
    let before = attributes(&name).expect("the object just planted");
    let what = format!(
        "opening {}, a 4096-byte object another program made (mode {ANOTHER_PROGRAMS_MODE:o})",
        dev_shm(&name).display()
    );
    let mut proc = super::driver::start(run, &name, None, OPENER)?;
    let first = await_answer(&mut proc, OPENER, &what, Some("mapped"))?;
    let table = mapped(proc, first, &name, OPENER)?;
    let changed = |when: &str| {
        attribute_change(&before, attributes(&name).as_ref()).map(|change| {
            Fail::failed(format!(
                "{what}, {when}, {change}: open() never changes an object it opens (its mode, \
                 owner and size are its maker's); it is shm_open(O_RDWR), fstat() and \
                 mmap(MAP_SHARED), nothing more (no fchmod(), fchown() or ftruncate() of it)"
            ))
        })
    };
    if let Some(fail) = changed("once the opener said `mapped`") {
        return Err(fail);
    }
    table.close()?;
    if let Some(fail) = changed("after the opener closed the table and exited") {
        return Err(fail);
    }
    drop(planted);
    Ok(())
}

/// Descriptors the programs find open as they start (the first free number and a high one),
/// each an unnamed file in `/dev/shm`: not the table's, so not the lab's to close.
const FOREIGN: &[i32] = &[4, 200];

/// The descriptors of [`FOREIGN`] that `pid` no longer holds in `/dev/shm`.
fn closed_foreign(pid: i32) -> Vec<i32> {
    FOREIGN
        .iter()
        .copied()
        .filter(|fd| {
            std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
                .map_or(true, |target| !target.starts_with("/dev/shm/"))
        })
        .collect()
}

/// A creator and an opener, each started holding descriptors 4 and 200 on unnamed files in
/// `/dev/shm` (inherited, another library's), still hold both once mapped, and after an
/// `op=open` of a name that does not exist (a failed open): create and open close the
/// descriptor shm_open() gave them, and no other.
pub fn foreign_descriptors_kept(run: &mut Run) -> Result<(), Fail> {
    let name = run.ipc_name("beside");
    let missing = run.ipc_name("beside-missing");
    let args = |create: Option<usize>| {
        let mut args = vec!["open".to_string(), "--name".into(), name.clone()];
        if let Some(size) = create {
            args.extend(["--create".into(), "--size".into(), size.to_string()]);
        }
        args
    };
    let mut tables = Vec::new();
    for (who, create) in [(CREATOR, Some(4096)), (OPENER, None)] {
        let what = if create.is_some() {
            format!("creating {name}")
        } else {
            format!("opening {name}")
        };
        let mut proc = run.spawn_holding_in(&args(create), FOREIGN, c"/dev/shm")?;
        proc.set_roles(move |_| who.into());
        let first = await_answer(&mut proc, who, &what, Some("mapped"))?;
        let mut table = mapped(proc, first, &name, who)?;
        let pid = table.pid();
        let closed = closed_foreign(pid);
        if !closed.is_empty() {
            table.proc.kill_tree();
            let _ = std::fs::remove_file(dev_shm(&name));
            return Err(foreign_closed(who, &what, "said `mapped`", &closed));
        }
        let answer = table.command(&[("op", "open".into()), ("name", missing.clone())])?;
        let closed = closed_foreign(pid);
        if !closed.is_empty() {
            table.proc.kill_tree();
            let _ = std::fs::remove_file(dev_shm(&name));
            let after = format!(
                "was asked to open {missing}, which does not exist, and said {}",
                said(&answer)
            );
            return Err(foreign_closed(who, &what, &after, &closed));
        }
        tables.push(table);
    }
    super::driver::close_all(tables)?;
    let _ = std::fs::remove_file(dev_shm(&name));
    Ok(())
}

/// The failure of a program that closed descriptors it did not open.
fn foreign_closed(who: &str, what: &str, after: &str, closed: &[i32]) -> Fail {
    Fail::failed(format!(
        "{who}, started holding descriptors {FOREIGN:?} on files in /dev/shm that are not the \
         table's (as a program may inherit them, or another library of it open), {what} and \
         {after}, and descriptor(s) {closed:?} are closed now (/proc/PID/fd): it closes \
         descriptors it did not open (a sweep of /proc/self/fd for /dev/shm, say); create() \
         and open() close the one descriptor shm_open() gave them (an OwnedFd, dropped when \
         they return), on every path, and no other"
    ))
}
