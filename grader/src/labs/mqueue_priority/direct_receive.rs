//! `receive()` itself retries `EINTR`, not only `serve()`'s loop: seen in the one caller of
//! `receive()` outside `serve()` that main.rs has, the child of its `bench jobs` mode, which
//! echoes each job it receives.

use std::time::{Duration, Instant};

use ipc_labs_driver::bench::{BENCH, BENCH_DONE, BENCH_READY};
use nix::sys::signal::Signal;

use super::observe::{interrupt, sleeps_in};
use super::protocol::said;
use crate::engine::inspect;
use crate::engine::tracer::{Action, Call, Reached, Tracer};
use crate::engine::{Fail, Run};

/// How process `pid` ended, a zombie its held parent has not reaped: `exit status N`, or
/// `killed by signal N`; `None` while it runs.
fn ended(pid: i32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    if fields.first() != Some(&"Z") {
        return None;
    }
    // Field 52, the wait status, counted from the state (field 3).
    let status: i32 = fields.get(52 - 3)?.parse().ok()?;
    Some(if status & 0x7f == 0 {
        format!("exit status {}", status >> 8)
    } else {
        format!("killed by signal {}", status & 0x7f)
    })
}

/// The program in `bench jobs` mode is held at its first `mq_send` (ptrace), by when its child
/// waits in `receive()` on the empty queue; SIGUSR1 (caught by main.rs's handler, which the
/// child inherits) interrupts that wait, and the child must wait again, then echo the rounds.
pub fn receive_retries_eintr(run: &mut Run) -> Result<(), Fail> {
    let names = [run.ipc_name("echo-there"), run.ipc_name("echo-back")];
    let mut proc = run.spawn(&[BENCH, "jobs"])?;
    proc.recv(BENCH_READY)?;
    let pid = proc.pid.as_raw();
    let Some(mut tracer) = Tracer::attach(pid, Call::any(libc::SYS_mq_timedsend), Action::Hold)?
    else {
        run.note("no ptrace here: receive() interrupted outside serve() not tried");
        proc.kill_tree();
        return Ok(());
    };
    let fields = [
        ("name", names[0].clone()),
        ("name2", names[1].clone()),
        ("warmup", "0".to_string()),
        ("samples", "3".to_string()),
        ("sizes", "64".to_string()),
        ("out", run.path("samples").display().to_string()),
    ];
    proc.send(BENCH, &fields)?;
    let outcome = (|| {
        if tracer.wait(&mut proc, Instant::now() + Duration::from_secs(5))? != Reached::Call {
            return Ok(Some(None));
        }
        let until = Instant::now() + Duration::from_secs(2);
        let child = loop {
            let waiting = inspect::children(proc.pid)
                .into_iter()
                .find(|&child| sleeps_in(child, libc::SYS_mq_timedreceive));
            match waiting {
                Some(child) => break child,
                None if Instant::now() > until => return Ok(Some(None)),
                None => std::thread::sleep(Duration::from_millis(1)),
            }
        };
        if !interrupt(child, Signal::SIGUSR1, Duration::from_secs(1)) {
            return Ok(Some(None));
        }
        let until = Instant::now() + Duration::from_secs(1);
        while !sleeps_in(child, libc::SYS_mq_timedreceive) {
            if let Some(how) = ended(child) {
                return Ok(Some(Some((child, how))));
            }
            if Instant::now() > until {
                return Ok(Some(None));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok::<_, Fail>(None)
    })();
    tracer.release();
    // Some(None): the child not seen waiting, or not seen after the signal.
    let ended_child = match outcome {
        Ok(Some(None)) => {
            run.note("the bench child not seen waiting in receive(): its EINTR not tried");
            None
        }
        Ok(ended_child) => ended_child.flatten(),
        Err(fail) => {
            proc.kill_tree();
            return Err(fail);
        }
    };
    if let Some((child, how)) = ended_child {
        // Its peer gone, the program waits for an echo that never comes.
        proc.kill_tree();
        return Err(Fail::failed(format!(
            "in `bench jobs` mode (main.rs), the program's child (pid {child}), which calls \
             receive() itself, outside serve(), waited in mq_receive on an empty queue; \
             SIGUSR1 (main.rs's handler, inherited) interrupted it, and the child ended instead \
             of waiting again ({how}): receive() itself retries EINTR (\"blocking while the \
             queue is empty (retry EINTR)\"), not only serve()'s loop around it"
        )));
    }
    let answer = proc.recv_any()?;
    if answer.kind != BENCH_DONE {
        proc.kill_tree();
        return Err(Fail::failed(format!(
            "in `bench jobs` mode (main.rs), its child interrupted by SIGUSR1 while it waited in \
             receive(), the program said {}, not `{BENCH_DONE}`",
            said(&answer)
        )));
    }
    super::protocol::release(&mut proc)
}
