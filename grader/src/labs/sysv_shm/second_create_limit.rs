//! The limit's failure at a later call: `max_segment_size()` reads `shmmax` at every call, so a
//! failure to open or read it is `limit` at every call too, not only at a process's first. A
//! limit kept from an earlier call (the last one read, "for when /proc has a hiccup") is a
//! limit an administrator may have changed since.

use crate::engine::tracer::{Call, Match, Step, Tracer};
use crate::engine::{Fail, Run};

use super::protocol::{as_expected, fresh_name, ftok, start_create_step, with_context};
use super::segments::{rmid, segment};

const SHMMAX: &str = "/proc/sys/kernel/shmmax";

const READS: &[i64] = &[
    libc::SYS_read,
    libc::SYS_pread64,
    libc::SYS_readv,
    libc::SYS_preadv,
];

/// The program's `create` step with `--then-id`: its first `Segment::create` reads the limit
/// as the machine has it; then the open of `shmmax` for its second (`EACCES`), and in another
/// run the first read after that open (`EIO`), is made to fail. Each must be `limit`. `false`
/// if the grader may not trace the program.
pub fn limit_failing_at_second_create(run: &mut Run) -> Result<bool, Fail> {
    let open = Call {
        number: libc::SYS_openat,
        matching: Match::Path(SHMMAX),
    };
    let opening = "its open of /proc/sys/kernel/shmmax made to fail (EACCES)";
    if !second_create_fails(run, opening, [(open, Step::Fail(libc::EACCES))])? {
        return Ok(false);
    }
    let reading = "its first read after its open of /proc/sys/kernel/shmmax made to fail (EIO)";
    second_create_fails(
        run,
        reading,
        [
            (open, Step::Pass),
            (Call::one_of(READS), Step::Fail(libc::EIO)),
        ],
    )
}

fn second_create_fails<const N: usize>(
    run: &mut Run,
    failing: &str,
    steps: [(Call, Step); N],
) -> Result<bool, Fail> {
    let name = fresh_name(run)?;
    let then_id = name.id % 255 + 1;
    let what = format!(
        "`sysv-shm create --size 4096 --then-id {then_id}` (two Segment::create calls in one \
         process)"
    );
    let mut proc = start_create_step(run, &name, 4096, Some(then_id), &what)?;
    let first = proc.recv_any();
    let keys = [name.key, ftok(&name.path, then_id)?];
    let clean_up = || {
        keys.into_iter()
            .filter_map(segment)
            .for_each(|s| rmid(s.id))
    };
    if let Err(fail) = first.and_then(|m| as_expected(m, "create step", "created")) {
        proc.kill_tree();
        clean_up();
        return Err(with_context(&format!("{what}, its first create"))(fail));
    }
    let Some(mut tracer) = Tracer::in_turn(proc.pid.as_raw(), steps)? else {
        proc.kill_tree();
        clean_up();
        return Ok(false);
    };
    proc.send("go", &[])?;
    let context = format!("{what}, its first create done, its second create with {failing}");
    let message = proc.recv_any().map_err(with_context(&context));
    // The failure is reported before the program goes on: one made before its answer is seen.
    let made_to_fail = message.is_ok() && tracer.failed_the_call()?;
    drop(tracer);
    proc.kill_tree();
    clean_up();
    let message = message?;
    match (message.kind.as_str(), message.get("kind")) {
        ("failed", Some("limit")) => Ok(true),
        ("done", _) if made_to_fail => Err(Fail::failed(format!(
            "{context}, the create step said `done`: its second create went on with a limit \
             it had kept from an earlier call (the last one it read, say) where the read of the \
             limit failed; max_segment_size() reads /proc/sys/kernel/shmmax at every call, and \
             a failure to open or read it is ShmError::Limit (kind=limit) at every call, not \
             only at a process's first: an administrator may have changed the limit since"
        ))),
        ("done", _) => Err(Fail::failed(format!(
            "{context}, the create step said `done`, its second create never having made that \
             call: it judged the size by a limit kept from its first create (a OnceLock, a \
             static) or taken from elsewhere; max_segment_size() reads \
             /proc/sys/kernel/shmmax at every call, and a failure to read it is ShmError::Limit"
        ))),
        (said, kind) => Err(Fail::failed(format!(
            "{context}, the create step said `{said}` (kind={}: {}), the lab wants kind=limit: \
             a failure to open or read the limit is ShmError::Limit",
            kind.unwrap_or("none"),
            message.get("error").unwrap_or("")
        ))),
    }
}
