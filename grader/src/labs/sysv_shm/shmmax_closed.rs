//! The limit's file closed after a read that went well, as after one that failed: a publisher
//! at `ready` has read `/proc/sys/kernel/shmmax` and is done with it, so nothing may hold it
//! open any more (a long-lived caller would run out of descriptors, one per create).

use crate::engine::{Fail, Run};

use super::open_files::descriptor_on;
use super::protocol::publish;

const SHMMAX: &str = "/proc/sys/kernel/shmmax";

pub fn closed_after_a_good_read(run: &mut Run) -> Result<(), Fail> {
    let mut published = publish(run, true)?;
    let open = descriptor_on(published.proc.pid.as_raw(), SHMMAX);
    published.finish()?;
    match open {
        None => Ok(()),
        Some(fd) => Err(Fail::failed(format!(
            "the publisher said `ready`, its create done (the limit read and compared), with \
             {SHMMAX} still open (descriptor {fd}, seen in /proc/PID/fd while it waited for \
             `go`): max_segment_size() does not close the file after a read that went well (it \
             closes it on an error path only, or keeps it open to read again); close it before \
             returning on every path (a std::fs::File, or std::fs::read_to_string, closes it), \
             or a long-lived caller runs out of descriptors, one per create"
        ))),
    }
}
