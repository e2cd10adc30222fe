//! A key taken by a complete record of an older publication (a smaller sequence), its
//! publisher exited: a record still waiting for its reader, not one the new publication
//! supersedes. It is refused (`Exists`), and at once: after its `shmget()` with `IPC_CREAT`
//! failed, the publisher makes no other call on the key or the segment (a look with `shmget()`,
//! `shmctl()` or `shmat()`) before it reports. What a look finds (how old the segment is, who
//! is attached, what it holds) decides nothing, and a look taken to decide whether to remove
//! the segment is the bug whatever it found this time.

use rand::RngExt;

use crate::engine::tracer::{Call, Step, Tracer};
use crate::engine::{Fail, Run, inspect};

use super::errors::refused_existing;
use super::protocol::{fresh_name, spawn_publisher};
use super::segments::{Planted, RemoveKeyOnDrop, full_record};

/// The calls that look at a segment, and the `failed` that ends the look-out.
const LOOKING_OR_REPORTING: [i64; 5] = [
    libc::SYS_shmget,
    libc::SYS_shmctl,
    libc::SYS_shmat,
    libc::SYS_shmdt,
    libc::SYS_sendto,
];

pub fn older_record_refused_unlooked(run: &mut Run) -> Result<(), Fail> {
    let size = 8192;
    let name = fresh_name(run)?;
    let sequence = run.rng().random_range(10..1_000_000u32);
    let older = sequence - run.rng().random_range(1..10u32);
    let payload = run.random_bytes(2000);
    let waiting = full_record(older, &run.random_bytes(3000));
    let planted = Planted::left_by_exited_process(run, name.key, size, &waiting)?;
    let before = planted.contents(size)?;
    planted.unattached()?;
    let mut proc = spawn_publisher(run, &name.path, name.id, size as u64, sequence, &payload)?;
    // A publisher that removed the planted segment made its own with the key.
    let _removed = RemoveKeyOnDrop(Some(name.key));
    let pid = proc.pid.as_raw();
    let creating = Call::flag_set(libc::SYS_shmget, 2, libc::IPC_CREAT as u64);
    let traced = Tracer::in_turn(
        pid,
        [
            (creating, Step::Pass),
            (Call::one_of(&LOOKING_OR_REPORTING), Step::Hold),
        ],
    )?;
    proc.send("go", &[])?;
    let next_call = match traced {
        Some(mut tracer) => {
            let held = if tracer.held_before(run.deadline())? {
                inspect::call_of(pid, pid)
            } else {
                None
            };
            tracer.release();
            held
        }
        None => {
            run.note(
                "the grader may not trace the publisher here (ptrace): what it did after its \
                 shmget() failed with EEXIST was not seen",
            );
            None
        }
    };
    let message = proc.recv_any()?;
    let how = format!(
        "a segment with the key was already there (not attached, its creator exited) holding a \
         complete record of an older publication (sequence {older}; the publisher's is \
         {sequence}): a record still waiting for its reader"
    );
    refused_existing(
        &mut proc,
        message,
        (&planted, &before, size),
        name.key,
        &how,
    )?;
    let Some((number, args)) = next_call else {
        return Ok(());
    };
    let look = match number {
        libc::SYS_shmget => format!("shmget({:#x}, {}, {:#o})", args[0] as i32, args[1], args[2]),
        libc::SYS_shmctl => format!(
            "shmctl({}, {})",
            args[0] as i32,
            // Without the IPC_64 flag the C library may add.
            command_name(args[1] as i32 & !0x100)
        ),
        libc::SYS_shmat => format!("shmat({}, ..)", args[0] as i32),
        libc::SYS_shmdt => "shmdt()".to_string(),
        _ => return Ok(()),
    };
    Err(Fail::failed(format!(
        "{how}; the publisher reported kind=exists and left the segment as it was, but after \
         its shmget() with IPC_CREAT failed (EEXIST) its next call was {look} (the grader held \
         it there with ptrace): it looks at a segment that is not its own before it reports, \
         as a publisher does that judges whether it may take or remove the segment (by how long \
         it went unused, who is attached, which sequence it holds); whatever the look is for, \
         what it finds decides nothing: EEXIST is ShmError::Exists at once, with no other call \
         on the key or the segment"
    )))
}

fn command_name(command: i32) -> String {
    match command {
        libc::IPC_STAT => "IPC_STAT".into(),
        libc::IPC_RMID => "IPC_RMID".into(),
        libc::IPC_SET => "IPC_SET".into(),
        13 => "SHM_STAT".into(),
        other => other.to_string(),
    }
}
