//! The echo child's `write()` calls carry every byte it puts into pipe B: a copy that moves part
//! of a large transfer from pipe to pipe in the kernel (`splice()`) writes fewer bytes than
//! went through it.

use super::session::Pipes;
use crate::engine::{Fail, Run, force, inspect};

/// Makes pipe B hold `len` bytes, the whole input: the child always finds room there, which is
/// when a copy may move what waits in pipe A by a faster way than `write()`. Pipe A keeps its
/// size: a read of exactly a full default pipe, with nothing after it, must be echoed too.
pub(super) fn room_for_the_whole_input(run: &mut Run, child: i32, pipes: &Pipes, len: usize) {
    if force::set_pipe_capacity(child, pipes.child_writes_b, len as i32).is_err() {
        run.note("pipe B could not be enlarged here: the echo went back in pieces");
    }
}

/// `copied`: the child's I/O counters over a transfer in which `echoed` bytes went from pipe A
/// through it into pipe B. Every one of them must have been written by a `write()` (counted in
/// `wchar`); bytes moved by `splice()` count in neither `rchar` nor `wchar`.
pub(super) fn every_byte_written(copied: inspect::IoCounters, echoed: u64) -> Result<(), Fail> {
    if copied.written_bytes >= echoed {
        return Ok(());
    }
    Err(Fail::failed(format!(
        "with every byte sent and end-of-file held back (pipe B enlarged to hold the whole \
         input), \
         {echoed} bytes had gone from pipe A through the echo child into pipe B, but the \
         child's write() calls had written only {} bytes in all (read(): {}): the rest reached \
         pipe B without a write(), moved from pipe to pipe by the kernel (splice(), tee(), \
         sendfile(), copy_file_range()); echo_loop() must read() into a buffer and write the \
         echo with write() (write_all()), every byte, on every path, a large transfer's too",
        copied.written_bytes, copied.read_bytes
    )))
}
