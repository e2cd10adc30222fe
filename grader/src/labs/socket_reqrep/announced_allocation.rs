//! A server that died after an absurd length prefix, told apart: the grader starts it with a
//! 4 GiB address space (`RLIMIT_AS`), so reserving the announced length before comparing it to
//! the limit aborts it, and Rust's allocator says so in its log.

use super::programs::Server;
use crate::engine::Fail;

/// `fail`, naming the allocation when the server's log shows it aborted reserving `announced`
/// bytes (or close to it: a head byte less, a rounding more) after the client announced them.
pub fn named_if_the_length_was_allocated(server: &Server, announced: u64, fail: Fail) -> Fail {
    let log = server.log();
    let Some(bytes) = log.lines().find_map(|line| {
        let rest = line.split_once("memory allocation of ")?.1;
        rest.split_once(" bytes failed")?
            .0
            .trim()
            .parse::<u64>()
            .ok()
    }) else {
        return fail;
    };
    if bytes.abs_diff(announced) > 64 {
        return fail;
    }
    Fail::failed(format!(
        "the server died after a length prefix of {announced:#x} bytes: it aborted allocating \
         {bytes} bytes (its log: `memory allocation of {bytes} bytes failed`), the length the \
         client announced: read_frame reserved the announced length (Vec::with_capacity(len), \
         vec![0; len], reserve) before comparing it to max. A length above max is \
         RpcError::TooLong, found before anything is allocated: compare first, then allocate \
         no more than has come"
    ))
}
