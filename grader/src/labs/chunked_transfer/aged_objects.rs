//! Old objects under a segment's name: the grader makes a segment of its own and sets its
//! times back (a minute and a bit, then thirty days), as a long transfer's or another user's
//! segment may be, then asks a sender to create that name. `EEXIST` is `Exists` whatever the
//! object's age: the sender must refuse, and the object stay as it was (same inode, same
//! times).

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime};

use super::layout::{MIN_SEGMENT, Mapped};
use super::observe::dev_shm;
use super::transfer::said;
use crate::engine::{Fail, Proc, Run};

/// How old the grader's objects look: just past a minute, and a month.
const AGES: [Duration; 2] = [Duration::from_secs(61), Duration::from_secs(30 * 24 * 3600)];

pub fn old_objects_left_alone(run: &mut Run) -> Result<(), Fail> {
    let mut planted = Vec::new();
    for (index, age) in AGES.into_iter().enumerate() {
        let name = run.ipc_name(&format!("aged-{index}"));
        let object = Mapped::create(run, &name, MIN_SEGMENT, true)?;
        let then = SystemTime::now() - age;
        std::fs::File::options()
            .write(true)
            .open(dev_shm(&name))?
            .set_times(
                std::fs::FileTimes::new()
                    .set_accessed(then)
                    .set_modified(then),
            )?;
        let inode = std::fs::metadata(dev_shm(&name))?.ino();
        let size = MIN_SEGMENT.to_string();
        let mut sender = run.spawn(&[
            "send", "--name", &name, "--size", &size, "--seed", "1", "--lens", "0",
        ])?;
        sender.set_roles(|_| "the sender".into());
        planted.push((age, name, object, inode, then, sender));
    }
    let mut verdict = Ok(());
    for (age, name, object, inode, then, mut sender) in planted {
        if verdict.is_ok() {
            verdict = judge(&mut sender, age, &name, inode, then);
        }
        sender.kill_tree();
        drop(object);
        let _ = nix::sys::mman::shm_unlink(name.as_str());
    }
    verdict
}

fn judge(
    sender: &mut Proc,
    age: Duration,
    name: &str,
    inode: u64,
    then: SystemTime,
) -> Result<(), Fail> {
    let answer = sender.recv_any()?;
    let path = dev_shm(name);
    let now = std::fs::metadata(&path).ok();
    let asked = format!(
        "asked to create a segment whose name {} a segment of the grader's has, last changed \
         {} s ago (its times set back, as a long transfer's or another user's may be)",
        path.display(),
        age.as_secs()
    );
    let taken_over = match &now {
        None => "the grader's object is gone".to_string(),
        Some(meta) if meta.ino() != inode => {
            "the name now holds another object (a new inode): the grader's was unlinked".into()
        }
        Some(meta) if meta.modified().ok() != Some(then) => {
            "the grader's object was changed (its time of change moved)".into()
        }
        Some(_) => String::new(),
    };
    let refused = answer.kind == "failed" && answer.get("kind") == Some("exists");
    if refused && taken_over.is_empty() {
        sender.wait()?;
        return Ok(());
    }
    let what = if taken_over.is_empty() {
        String::new()
    } else {
        format!(", and {taken_over}")
    };
    Err(Fail::failed(format!(
        "{asked}, the program said {}{what}: it takes over names it judges left behind by \
         their age (an object unchanged for a while taken for a crashed run's). An object's \
         age says nothing of whether it is in use: EEXIST from shm_open(O_CREAT | O_EXCL) is \
         TransferError::Exists (kind=exists), whatever the object, which stays untouched",
        said(&answer)
    )))
}
