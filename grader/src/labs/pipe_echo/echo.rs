//! Checks of the echo itself: it comes back whole, whatever its length, and its length is
//! compared with the input's, both ways; a second `exchange()` is refused.

use std::io::Write;
use std::time::{Duration, Instant};

use rand::RngExt;

use super::child_stopped::PAGE;
use super::outside;
use super::returned::{Returned, refused_again};
use super::session::{Done, Flags, Spawned, launch, settle_in_read, start};
use crate::engine::tracer::{Action, Call, Tracer};
use crate::engine::{Fail, Run, force};

/// 125 × 64 KiB: every power-of-two block up to 64 KiB divides it, and so do the decimal 1000,
/// 64 000 and 128 000, so a last block as long as the others is the one a program must not drop.
const BLOCK_MULTIPLE: usize = 125 << 16;

/// 16 MiB and an odd number of bytes more, at least half a page past a page boundary: no block
/// size a program might send in (a page, 64 KiB, a MiB) divides it, and a last block left
/// unsent is too large to hide among the other bytes the parent writes. Then
/// [`BLOCK_MULTIPLE`] bytes, where the last block is a whole one.
pub fn echo_large(run: &mut Run) -> Result<String, Fail> {
    let pages = run.rng().random_range(1..16usize);
    let rest = run.rng().random_range(1024..2048usize) * 2 + 1;
    let odd = (16 << 20) + pages * PAGE as usize + rest;
    echo(run, odd)?;
    echo_pipe_size_refused(run)?;
    Ok(format!(
        "{odd} bytes, then {BLOCK_MULTIPLE}, echoed byte for byte"
    ))
}

pub fn echo(run: &mut Run, len: usize) -> Result<String, Fail> {
    let input = run.random_bytes(len);
    let mut session = start(run, input, Flags::default())?;
    let done = session.exchange()?;
    session.verify_echo(&done)?;
    session.finish()?;
    if len == 0 {
        empty_read_to_end(run)?;
    }
    Ok(format!("{len} bytes echoed byte for byte"))
}

/// An empty input is still read back to end-of-file: with the echo child held (`SIGSTOP`)
/// before the exchange, so that pipe B's write end stays open, the parent must wait for that
/// end-of-file (in `read()` or `poll()`), not go on to `wait()` having looked at the pipe
/// another way (`FIONREAD`) and found it empty.
fn empty_read_to_end(run: &mut Run) -> Result<(), Fail> {
    let mut session = start(run, Vec::new(), Flags::default())?;
    force::hold(session.child)?;
    session.go()?;
    let parent = session.parent;
    let until = Instant::now() + Duration::from_secs(1);
    const READING: [i64; 6] = [
        libc::SYS_read,
        libc::SYS_readv,
        libc::SYS_poll,
        libc::SYS_ppoll,
        libc::SYS_pselect6,
        libc::SYS_epoll_wait,
    ];
    let mut reaping = false;
    let mut reading = false;
    while Instant::now() < until && !reaping && !reading {
        std::thread::sleep(Duration::from_millis(5));
        let calls: Vec<i64> = crate::engine::inspect::view(parent)
            .map(|view| {
                view.threads
                    .iter()
                    .filter_map(|t| t.syscall)
                    .map(|c| c.0)
                    .collect()
            })
            .unwrap_or_default();
        reaping = calls
            .iter()
            .any(|&call| call == libc::SYS_wait4 || call == libc::SYS_waitid);
        reading = calls.iter().any(|call| READING.contains(call));
    }
    force::resume(session.child)?;
    let done = session.recv_done()?;
    session.verify_echo(&done)?;
    session.finish()?;
    if reaping {
        return Err(Fail::failed(
            "with an empty input and the echo child held by the grader before it read pipe A \
             (so that it still held pipe B's write end), the parent went on to wait for the \
             child (waitpid) without reading pipe B to end-of-file: exchange() took pipe B for \
             empty from a look (FIONREAD, a non-blocking read) instead of reading it until \
             read() returns 0, which comes only once the child has closed its end. An empty \
             input is a whole exchange: close pipe A's write end, then read pipe B until \
             end-of-file",
        ));
    }
    Ok(())
}

/// As [`echo`] of [`BLOCK_MULTIPLE`] bytes, with every `fcntl(F_SETPIPE_SZ)` of the program
/// refused with `EPERM`, as the kernel refuses a user past its pipe-memory limits
/// (`fs.pipe-max-size`, `fs.pipe-user-pages-soft`): in the parent, on any of its threads (a
/// writer thread may resize the pipe it writes), and in the echo child, traced from its fork (it
/// may resize pipe B as `echo_loop()` starts). A pipe that keeps its size is no error, and the
/// echo must come back all the same. A program that never resizes a pipe meets nothing.
fn echo_pipe_size_refused(run: &mut Run) -> Result<(), Fail> {
    let input = run.random_bytes(BLOCK_MULTIPLE);
    let launched = launch(run, input, Flags::default())?;
    let resize = Call::arg_is(libc::SYS_fcntl, 1, libc::F_SETPIPE_SZ as u64);
    let refusing = Tracer::attach(
        launched.parent,
        resize,
        Action::FailInEveryProcess(libc::EPERM),
    )?;
    let mut session = match launched.spawn()? {
        Spawned::Ready(session) => session,
        Spawned::Failed(_, error) => {
            return Err(Fail::failed(format!("spawn() failed: {error}")));
        }
    };
    let done = session.exchange()?;
    let refused = match refusing {
        Some(tracer) => tracer.failed_count(Instant::now())?,
        None => 0,
    };
    let whole = matches!(Returned::parse(&done.exchange), Returned::Ok(_));
    if refused > 0 && (!whole || done.wait != "ok") {
        let child_failed = if Returned::parse(&done.wait) == Returned::ChildFailed {
            "; the echo child failed (wait() returned ChildFailed) although no write() or read() \
             of its failed: an echo_loop() that returns an error for a refused resize makes the \
             child _exit(1) before it echoes a byte"
        } else {
            ""
        };
        return Err(Fail::failed(format!(
            "with {BLOCK_MULTIPLE} bytes to send, the program resized a pipe \
             (fcntl(F_SETPIPE_SZ), {refused} call(s), in the parent, on whichever of its \
             threads, or in the echo child), the grader's tracer made every such call fail with EPERM, as the kernel does for a user \
             past its pipe-memory limits (fs.pipe-max-size, fs.pipe-user-pages-soft), and \
             exchange() returned `{}`, wait() `{}`{child_failed}: a refused F_SETPIPE_SZ leaves \
             the pipe as it was, which still works: go on with it, in either process and on \
             any thread (PipeEchoError::Write and Read carry the errors of write() and read() \
             only)",
            done.exchange, done.wait
        )));
    }
    session.verify_echo(&done).map_err(|fail| match fail {
        Fail::Failed(message) => Fail::failed(format!(
            "with an input of {BLOCK_MULTIPLE} bytes (125 × 64 KiB: a whole number of blocks \
             of any power of two up to 64 KiB, of 1000 or of 64000 bytes), {message}"
        )),
        other => other,
    })?;
    session.finish()
}

pub fn exchange_errors(run: &mut Run) -> Result<String, Fail> {
    let len = 4 << 10;
    let flags = Flags {
        twice: true,
        ..Flags::default()
    };
    // One byte missing: the grader takes the first byte off pipe A before the child reads it.
    let input = run.random_bytes(len);
    let mut session = start(run, input, flags)?;
    settle_in_read(session.child);
    let pipes = session.pipes()?;
    let mut pipe_a = outside::open_pipe(session.child, pipes.child_reads_a, false)?;
    outside::hold_stopped(session.child)?;
    session.go()?;
    let until = Instant::now() + Duration::from_secs(3);
    let mut taken = Vec::new();
    while taken.is_empty() && Instant::now() < until {
        taken = outside::take_bytes(&mut pipe_a, 1)?;
        if taken.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    drop(pipe_a);
    force::resume(session.child)?;
    if taken.is_empty() {
        return Err(Fail::failed(
            "with the echo child stopped, the parent wrote nothing into pipe A: exchange() must \
             send the input through pipe A",
        ));
    }
    let done = session.recv_done()?;
    length_compared(&done, len, len - 1, "took one byte off pipe A")?;
    refused_again(&done)?;
    session.finish()?;

    // One byte too many: the grader puts a byte into pipe B before the child echoes.
    let input = run.random_bytes(len);
    let mut session = start(run, input, flags)?;
    settle_in_read(session.child);
    let pipes = session.pipes()?;
    let mut pipe_b = outside::open_pipe(session.child, pipes.child_writes_b, true)?;
    let extra = run.random_bytes(1);
    outside::put_bytes(&mut pipe_b, &extra)?;
    drop(pipe_b);
    let done = session.exchange()?;
    length_compared(&done, len, len + 1, "put one byte into pipe B")?;
    refused_again(&done)?;
    session.finish()?;

    // An empty input, the edge: nothing to send, yet the write end must be closed and pipe B
    // read to end-of-file. Two bytes, not one: a single read() of one byte takes one only. The
    // grader's own read end of pipe B, never read from, shows afterwards whether the parent
    // read the bytes the grader put there.
    let mut session = start(run, Vec::new(), flags)?;
    settle_in_read(session.child);
    let pipes = session.pipes()?;
    let probe_b = outside::open_pipe(session.child, pipes.child_writes_b, false)?;
    let mut pipe_b = outside::open_pipe(session.child, pipes.child_writes_b, true)?;
    let stray = run.random_bytes(2);
    outside::put_bytes(&mut pipe_b, &stray)?;
    drop(pipe_b);
    let done = session.exchange()?;
    let unread = outside::bytes_in_pipe(&probe_b) == Some(stray.len());
    drop(probe_b);
    if unread && Returned::parse(&done.exchange) == Returned::Ok(0) {
        let again = match done.again.as_deref() {
            Some(again) if Returned::parse(again) != Returned::AlreadyExchanged => {
                format!(", and a second call returned `{again}`")
            }
            _ => String::new(),
        };
        session.finish()?;
        let how = empty_input_read(run, &stray, flags)?;
        return Err(Fail::failed(format!(
            "with an empty input, exchange() returned `{}` without taking anything off pipe B \
             (the bytes the grader had put there were still in it){again}: {how}: an empty input \
             is no shortcut: exchange() must still take and close the write end (the child's \
             end-of-file; a second call is then AlreadyExchanged) and read pipe B into a buffer \
             of its own size (not the input's) until read() returns 0, which here gives \
             ShortEcho {{ sent: 0, echoed: 2 }}",
            done.exchange
        )));
    }
    length_compared(
        &done,
        0,
        2,
        "put two bytes into pipe B, the input being empty",
    )?;
    refused_again(&done)?;
    session.finish()?;

    // More than the input ahead of the echo, one byte past its length: with the child held,
    // the grader puts len + 1 bytes into pipe B and lets the child go only once the parent has
    // read them. The echo is still to come: the count that exceeds the input is no end, only
    // end-of-file is. The grader's own read end of pipe B shows what was left unread.
    let input = run.random_bytes(len);
    let mut session = start(run, input, flags)?;
    settle_in_read(session.child);
    let pipes = session.pipes()?;
    let probe_b = outside::open_pipe(session.child, pipes.child_writes_b, false)?;
    let mut pipe_b = outside::open_pipe(session.child, pipes.child_writes_b, true)?;
    let ahead = run.random_bytes(len + 1);
    outside::hold_stopped(session.child)?;
    outside::put_bytes(&mut pipe_b, &ahead)?;
    drop(pipe_b);
    session.go()?;
    let until = Instant::now() + Duration::from_secs(2);
    while outside::bytes_in_pipe(&probe_b) != Some(0) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
    }
    force::resume(session.child)?;
    let done = session.recv_done()?;
    let unread = outside::bytes_in_pipe(&probe_b).unwrap_or(0);
    drop(probe_b);
    let came = 2 * len + 1;
    if let Returned::ShortEcho { sent, echoed } = Returned::parse(&done.exchange)
        && sent == len
        && echoed < came
        && unread > 0
    {
        let stopped = if echoed > len {
            format!(
                "it stopped reading pipe B once more bytes had come than were sent ({echoed} of \
                 {len}), before end-of-file"
            )
        } else {
            "it stopped reading pipe B before end-of-file".to_string()
        };
        return Err(Fail::failed(format!(
            "{len} bytes were sent and {came} came back (the grader put {} bytes into pipe B \
             ahead of the echo, and held the child until the parent had read them), and \
             exchange() returned `{}`: {stopped}, and {unread} bytes of the echo were left \
             unread in pipe B; more bytes than were sent is no end: read pipe B until read() \
             returns 0, and report every byte that came back (ShortEcho {{ sent: {len}, \
             echoed: {came} }})",
            len + 1,
            done.exchange
        )));
    }
    length_compared(
        &done,
        len,
        came,
        &format!("put {} bytes into pipe B ahead of the echo", len + 1),
    )?;
    refused_again(&done)?;
    session.finish()?;

    // Far more over than a pipe holds, and past the caps a program might set on what it keeps
    // ([`BEYOND_CAPS`]): the grader writes them into pipe B while the parent reads it, then lets
    // it end. Every byte that came back before end-of-file counts, however many: `echoed` is
    // exact, not capped at what was kept. The bytes are one random block over and over: only
    // their number matters.
    let input = run.random_bytes(len);
    let mut session = start(run, input, flags)?;
    settle_in_read(session.child);
    let pipes = session.pipes()?;
    let pipe_b = outside::open_pipe(session.child, pipes.child_writes_b, true)?;
    let pipe_b = std::os::fd::OwnedFd::from(pipe_b);
    force::set_nonblocking(&pipe_b)?;
    let mut pipe_b = std::fs::File::from(pipe_b);
    let block = run.random_bytes(128 << 10);
    let beyond = run.rng().random_range(BEYOND_CAPS) | 1;
    session.go()?;
    let mut put = 0;
    let until = Instant::now() + Duration::from_secs(5);
    while put < beyond && Instant::now() < until {
        let at = put % block.len();
        let end = block.len().min(at + beyond - put);
        match pipe_b.write(&block[at..end]) {
            Ok(n) => put += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                outside::until_writable(&pipe_b, Duration::from_millis(100));
            }
            Err(_) => break,
        }
    }
    drop(pipe_b);
    let done = session.recv_done()?;
    let came = len + put;
    if let Returned::ShortEcho { sent, echoed } = Returned::parse(&done.exchange)
        && sent == len
        && echoed > len
        && echoed < came
    {
        if put < beyond {
            return Err(Fail::failed(format!(
                "{len} bytes were sent, and the grader was writing {beyond} more into \
                 pipe B while the parent read it; the parent stopped reading after {} of them, \
                 before end-of-file ({} were left unread in pipe B, the rest never written), and \
                 exchange() returned `{}`: read pipe B until read() returns 0, however much \
                 comes back (no cap on what is kept or counted)",
                echoed - len,
                came - echoed,
                done.exchange
            )));
        }
        return Err(Fail::failed(format!(
            "{len} bytes were sent and {came} came back through pipe B (the grader wrote {put} \
             bytes into it while the parent read it), all of them taken out of pipe B (the grader's \
             writes went through), and exchange() returned `{}`: \
             ShortEcho counts {echoed}, {} fewer than came back: `echoed` is every byte that \
             came back before end-of-file, however many (no cap on what is kept or counted)",
            done.exchange,
            came - echoed
        )));
    }
    length_compared(
        &done,
        len,
        came,
        &format!("wrote {put} bytes into pipe B while the parent read it"),
    )?;
    session.finish()?;

    // A first call that succeeded: a second is refused all the same, whatever the first
    // returned (the child has gone, so nothing can come back through it again).
    let input = run.random_bytes(len);
    let mut session = start(run, input, flags)?;
    let done = session.exchange()?;
    session.verify_echo(&done)?;
    refused_again(&done)?;
    session.finish()?;
    let hang_up = super::hang_up::reads_past_hang_up(run)?;
    Ok(format!(
        "{hang_up}; one byte short and one byte over ({len} bytes), two bytes over an empty \
         input, {} \
         bytes ahead of the echo and {beyond} bytes over, exchange() returned ShortEcho \
         with the right counts; a second \
         call returned AlreadyExchanged, after those and after an exchange that succeeded",
        len + 1
    ))
}

/// How much the grader writes into pipe B past the echo, drawn anew each run: past 128 MiB, any
/// cap of 27 bits a program might set on what it keeps or counts (none is allowed: 64 MiB, 100
/// MB, twice the largest input the handout names), by up to 4 MiB more, and never the same
/// count, so that no cap can be set just above the one a failure message showed. Made odd: no
/// multiple of a block size.
const BEYOND_CAPS: std::ops::RangeInclusive<usize> = (1 << 27) + 1..=(1 << 27) + (4 << 20);

/// Whether `exchange()` returned `ShortEcho { sent, echoed }` for an echo the grader made
/// `echoed` bytes long.
fn length_compared(done: &Done, sent: usize, echoed: usize, how: &str) -> Result<(), Fail> {
    let setting = format!(
        "{sent} bytes were sent and {echoed} came back (the grader {how}), and exchange() \
         returned `{}`",
        done.exchange
    );
    match Returned::parse(&done.exchange) {
        Returned::ShortEcho { sent: s, echoed: e } if s == sent && e == echoed => Ok(()),
        Returned::ShortEcho { sent: s, echoed: e } if s == sent && e < echoed => {
            Err(Fail::failed(format!(
                "{setting}: ShortEcho reports {e} bytes where {echoed} came back through pipe B; \
             read pipe B until read() returns 0, and report what came back"
            )))
        }
        Returned::ShortEcho { .. } => Err(Fail::failed(format!(
            "{setting}: ShortEcho must carry the bytes sent and the bytes that came back"
        ))),
        Returned::Ok(n) if echoed > sent && n == sent => Err(Fail::failed(format!(
            "{setting}: it stopped at as many bytes as were sent; read pipe B until read() \
             returns 0 (end-of-file), and return ShortEcho whenever the lengths differ"
        ))),
        Returned::Ok(_) if echoed > sent => Err(Fail::failed(format!(
            "{setting}: return ShortEcho whenever the lengths differ, also when more bytes come \
             back than were sent"
        ))),
        Returned::Ok(_) => Err(Fail::failed(format!(
            "{setting}: compare the echo's length with the input's, and return ShortEcho when \
             they differ"
        ))),
        _ => Err(Fail::failed(format!(
            "{setting}: what is wrong with this echo is its length, and that is ShortEcho {{ \
             sent: {sent}, echoed: {echoed} }}"
        ))),
    }
}

/// Why an empty input's exchange left pipe B unread, found in a second exchange of an empty
/// input (only a program that left it unread pays for it): the parent's main thread held by the
/// grader's tracer at its first read() of pipe B, whose byte count is read from
/// `/proc/PID/syscall`. A read() of 0 bytes returns 0 at once, whatever the pipe holds.
fn empty_input_read(run: &mut Run, extra: &[u8], flags: Flags) -> Result<String, Fail> {
    let mut session = start(run, Vec::new(), flags)?;
    settle_in_read(session.child);
    let pipes = session.pipes()?;
    let mut pipe_b = outside::open_pipe(session.child, pipes.child_writes_b, true)?;
    outside::put_bytes(&mut pipe_b, extra)?;
    drop(pipe_b);
    let parent = session.parent;
    let read_b = Call::one_of_on(&[libc::SYS_read, libc::SYS_readv], pipes.parent_reads_b);
    let Some(mut tracer) = Tracer::attach(parent, read_b, Action::Hold)? else {
        session.exchange()?;
        session.finish()?;
        return Ok(
            "it either returned before any read() of pipe B or read it into an empty \
                   buffer (a read() of 0 bytes returns 0 at once, taken for end-of-file)"
                .into(),
        );
    };
    session.go()?;
    let held = tracer.held_before(Instant::now() + Duration::from_secs(1))?;
    let count = held
        .then(|| std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/syscall")).ok())
        .flatten()
        .and_then(|line| {
            let count = line.split_whitespace().nth(3)?;
            u64::from_str_radix(count.trim_start_matches("0x"), 16).ok()
        });
    tracer.release();
    session.recv_done()?;
    session.finish()?;
    Ok(match (held, count) {
        (true, Some(0)) => "its read() of pipe B asked for 0 bytes (the grader held it there \
                            and read its count in /proc/PID/syscall): a read() of 0 bytes \
                            returns 0 at once, whatever the pipe holds, and exchange() took that \
                            0 for end-of-file (a buffer sized by the \
                            input is empty for an empty input)"
            .into(),
        (true, _) => "its main thread did call read() on pipe B, with a buffer, yet took \
                      nothing off it"
            .into(),
        (false, _) => "its main thread made no read() of pipe B at all (the grader's tracer \
                       waited for one): it returned before reading the echo"
            .into(),
    })
}
