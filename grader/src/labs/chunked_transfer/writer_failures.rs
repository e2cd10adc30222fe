//! A writer that fails: the receiver saves the message (`recv --save`) and the grader makes one
//! `write()` of the saved file fail (ptrace), that of the first chunk, then that of the last.
//! The receiver must report `Write`, after only the bytes its writer took, never the message.

use std::path::Path;

use rand::RngExt;

use super::headers::{one_message_receiver, ready_on_grader_segment};
use super::layout::{Header, MIN_SEGMENT, Mapped};
use super::transfer::failure;
use crate::engine::tracer::{Call, Step, Tracer};
use crate::engine::{Fail, Run};

/// The errno the failing write returns: a full disk.
const ERRNO: i32 = libc::ENOSPC;

pub fn writer_fails(run: &mut Run) -> Result<String, Fail> {
    let mut followed = 0;
    // The write of chunk 0 (nothing taken yet), then that of chunk 1, the message's last.
    for failing in 0..2u64 {
        if fail_one_write(run, failing)? {
            followed += 1;
        }
    }
    Ok(if followed == 2 {
        "with the write of the saved message's first chunk, then of its last, made to fail \
         (ENOSPC), the receiver reported kind=write after only the bytes its writer took"
            .into()
    } else {
        "the receiver's writes could not be made to fail here (no ptrace)".into()
    })
}

/// Plays the sender of a two-chunk message and fails the receiver's write of chunk `failing`;
/// false if the machine does not allow tracing.
fn fail_one_write(run: &mut Run, failing: u64) -> Result<bool, Fail> {
    let size = MIN_SEGMENT;
    let name = run.ipc_name(&format!("writer-fails-{failing}"));
    let planted = Mapped::create(run, &name, size, true)?;
    let c = planted.capacity();
    let rest = run.rng().random_range(1..=c);
    let total = c + rest;
    // Both chunks fit the two slots: the grader puts them in before the receiver starts.
    planted.put(
        0,
        Header {
            seq: 0,
            total,
            len: c,
            end: 0,
        },
        &run.random_bytes(c as usize),
    );
    planted.put(
        1,
        Header {
            seq: 1,
            total,
            len: rest,
            end: 1,
        },
        &run.random_bytes(rest as usize),
    );
    let mut args = one_message_receiver(&name, 3000);
    args.push("--save".into());
    // The file it saves the message to is the grader's to give.
    run.path("message-0.bin");
    let mut receiver = run.spawn(&args)?;
    receiver.set_roles(|_| "the receiver".into());
    ready_on_grader_segment(&mut receiver)?;
    // The saved file is opened at the start of the message; then each chunk is one write.
    let opening = Call::opening(Path::new("message-0.bin"));
    let write = Call::any(libc::SYS_write);
    let pid = receiver.pid.as_raw();
    let tracer = if failing == 0 {
        Tracer::in_turn(pid, [(opening, Step::Pass), (write, Step::Fail(ERRNO))])?
    } else {
        Tracer::in_turn(
            pid,
            [
                (opening, Step::Pass),
                (write, Step::Pass),
                (write, Step::Fail(ERRNO)),
            ],
        )?
    };
    let Some(mut tracer) = tracer else {
        receiver.kill_tree();
        return Ok(false);
    };
    receiver.send("go", &[])?;
    let answer = receiver.recv_any()?;
    let failed_write = tracer.failed_the_call()?;
    tracer.release();
    let taken = failing * c;
    let which = if failing == 0 {
        format!("chunk 0 ({c} bytes, the first)")
    } else {
        format!("chunk 1 ({rest} bytes, the last; chunk 0's {c} went through)")
    };
    let setting = format!(
        "the grader played the sender of a {total}-byte message in two chunks and made the \
         receiver's write() of {which} to its saved file fail with ENOSPC (ptrace; `recv \
         --save`)"
    );
    if answer.kind == "failed" && answer.get("kind") == Some("write") {
        let received = answer.get("received").and_then(|r| r.parse::<u64>().ok());
        if received != Some(taken) {
            return Err(Fail::failed(format!(
                "{setting}: the receiver reported kind=write, rightly, but its writer had taken \
                 {} bytes where {taken} went through before the failing write",
                received.map_or("?".into(), |r| r.to_string())
            )));
        }
        receiver.wait()?;
        return Ok(true);
    }
    receiver.kill_tree();
    if !failed_write {
        // The write was never made: whatever went wrong, it is not the writer's error.
        return Err(Fail::failed(format!(
            "the grader played the sender of a {total}-byte message in two chunks, to make the \
             receiver's write of chunk {failing} to its saved file fail; the receiver said `{}` \
             ({}) before any such write",
            answer.kind,
            failure(&answer)
        )));
    }
    let said = if answer.kind == "failed" {
        format!(
            "said `failed` ({}): a writer that fails is TransferError::Write (kind=write), \
             whatever the segment holds",
            failure(&answer)
        )
    } else {
        format!(
            "said `{}` (len={}): it went on past its writer's error, as if the chunk had been \
             written out (the error of write_all() dropped, or the write tried again until it \
             passed). A writer that fails ends the receive with TransferError::Write \
             (kind=write): the message did not get out whole",
            answer.kind,
            answer.get("len").unwrap_or("?")
        )
    };
    Err(Fail::failed(format!("{setting}, and the receiver {said}")))
}
