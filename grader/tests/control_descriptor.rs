//! The graded program finds its control socket open on descriptor 3 even when the grader's
//! socketpair() hands out descriptor 3 as the program's end (here: stdin closed, so the pair is
//! 0 and 3; in a grader with many threads, another thread freeing 3 in between). A dup2() of 3
//! onto itself keeps close-on-exec, and the program met a closed control channel (EBADF).
//!
//! Its own test binary: it closes this process's stdin, which no other test may share.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use ipc_grader::engine::process::{Limits, spawn};

#[test]
fn control_socket_is_open_in_the_program_when_the_pair_gets_descriptor_3() {
    // Descriptors 0 and 3 free, so that socketpair() returns (0, 3).
    // SAFETY: this binary's only test; nothing else uses these descriptors.
    unsafe {
        libc::close(0);
        libc::close(3);
    }
    let lab = ipc_grader::labs::all()[0];
    let script = std::ffi::OsStr::from_bytes(b"test -S /proc/$$/fd/3");
    let mut program = spawn(
        Path::new("/bin/sh"),
        &["-c".as_ref(), script],
        Path::new("/"),
        Limits::for_user(None),
        Instant::now() + Duration::from_secs(10),
        lab,
    )
    .expect("the program starts");
    let status = program.wait().expect("the program exits");
    assert!(
        status.success(),
        "descriptor 3 of the program is not its control socket ({status})"
    );
}
