//! A record of many megabytes, copied out by the reader's own loads as a small one is: no
//! payload is big enough for the kernel to copy it instead (`process_vm_readv()` on itself, a
//! read of `/proc/self/mem`), since after setup the kernel is out of the way.

use rand::RngExt;

use crate::engine::{Fail, Run};

use super::HEADER_LEN;
use super::protocol::Name;
use super::reader::reader_copies_itself;
use super::segments::{Planted, full_record};

/// The smallest payload tried: past the sizes at which a copy by a call starts to pay.
const BIG: usize = 8 << 20;

/// The reader on a planted record of [`BIG`] bytes and a little more (not a whole number of
/// pages), traced from its `shmat()` to its `shmdt()`: a call that moves bytes in between, as
/// [`reader_copies_itself`] judges it, after `small` bytes were copied without one.
pub fn big_record_copied_by_loads(
    run: &mut Run,
    name: &Name,
    small: usize,
) -> Result<Option<Fail>, Fail> {
    let len = BIG + run.rng().random_range(1..4096usize);
    let sequence = run.rng().random_range(2..1_000_000u32);
    // A random block over and over (its length prime, so not page-aligned): random bytes of
    // this many megabytes take the grader longer to make than the reader to copy.
    let block = run.random_bytes(4093);
    let mut payload = block.repeat(len / block.len() + 1);
    payload.truncate(len);
    let _planted = Planted::new(
        run,
        name.key,
        HEADER_LEN + len,
        &full_record(sequence, &payload),
    )?;
    let what = format!(
        "a {len}-byte payload ({} MiB) the grader planted",
        len >> 20
    );
    let copied = reader_copies_itself(run, name, (sequence, &payload), &what)?;
    Ok(copied.map(|fail| match fail {
        Fail::Failed(m) => Fail::Failed(format!(
            "{m}. A {small}-byte payload it had copied out by its own loads: it hands only big \
             payloads to the kernel, above some size; no size is big enough for that"
        )),
        other => other,
    }))
}
