//! `cargo grade bench` times put() in the `bench semaphores` mode of main.rs, with a consumer it
//! forks: a round is a record handed over and its ok back. put() is the same code there: with
//! that consumer stopped, the producer must wait in its put() for an ok that does not come, not
//! finish the rounds (a put() that returns without its ok makes the round trip a post).

use std::time::{Duration, Instant};

use ipc_labs_driver::bench::{BENCH, BENCH_DONE, BENCH_READY};
use nix::sys::signal::{Signal, kill};

use crate::engine::tracer::{Action, Call, Reached, Tracer};
use crate::engine::{Fail, Run, inspect};

/// The bench's timed rounds: far more than a stopped consumer lets through.
const ROUNDS: u64 = 200;
/// How long the consumer stays stopped once it is.
const STOPPED: Duration = Duration::from_millis(400);

pub fn bench_put_waits_for_ok(run: &mut Run) -> Result<String, Fail> {
    let names = [run.ipc_name("bench-ready"), run.ipc_name("bench-ok")];
    let mut proc = run.spawn(&[BENCH, "semaphores"])?;
    proc.set_roles(|_| "the bench's producer".into());
    proc.recv(BENCH_READY)?;
    let fields = [
        ("name", names[0].clone()),
        ("name2", names[1].clone()),
        ("warmup", "0".to_string()),
        ("samples", ROUNDS.to_string()),
        ("sizes", "64".to_string()),
        ("out", run.path("samples").display().to_string()),
    ];
    // Held as its fork() returns: the consumer is stopped before it takes a record.
    let pid = proc.pid.as_raw();
    let Some(mut forked) = Tracer::attach(pid, Call::any(libc::SYS_clone), Action::HoldAfter)?
    else {
        proc.kill_tree();
        return Ok("no ptrace here: the bench's put() not tried".into());
    };
    proc.send(BENCH, &fields)?;
    if forked.wait(&mut proc, Instant::now() + Duration::from_secs(5))? != Reached::Call {
        drop(forked);
        proc.kill_tree();
        return Ok("the bench's producer did not fork: the bench not tried".into());
    }
    let Some(&consumer) = inspect::children(proc.pid).first() else {
        drop(forked);
        proc.kill_tree();
        return Ok("the bench's consumer was not seen: the bench not tried".into());
    };
    let stop = |signal| kill(nix::unistd::Pid::from_raw(consumer), signal);
    stop(Signal::SIGSTOP).map_err(|e| Fail::Grader(format!("kill: {e}")))?;
    forked.release();
    // Where the producer waits while no ok can come: in put()'s wait (a futex), or, its rounds
    // done, in main.rs's waitpid() for the stopped consumer.
    let until = Instant::now() + STOPPED;
    let mut reaping = false;
    while Instant::now() < until && !reaping {
        reaping = inspect::sleeps_in(pid, libc::SYS_wait4);
        std::thread::sleep(Duration::from_millis(5));
    }
    if reaping {
        let _ = stop(Signal::SIGCONT);
        proc.kill_tree();
        return Err(Fail::failed(format!(
            "in `bench semaphores` mode (main.rs, what `cargo grade bench` times), the grader \
             stopped the forked consumer (SIGSTOP) as fork() returned, and the producer still \
             got through its {ROUNDS} rounds of put(), to main.rs's waitpid() for the consumer, \
             while no ok could come: put() returned without waiting for the consumer's ok, so \
             each timed round trip was a post alone. put() copies the record, posts ready, then \
             waits for ok, in every mode"
        )));
    }
    let answered = proc.recv_before(Instant::now());
    let _ = stop(Signal::SIGCONT);
    match answered? {
        Some(answer) if answer.kind == BENCH_DONE => {
            proc.kill_tree();
            Err(Fail::failed(format!(
                "in `bench semaphores` mode (main.rs, what `cargo grade bench` times), the \
                 grader stopped the forked consumer (SIGSTOP) as fork() returned, and the producer \
                 still finished its {ROUNDS} rounds of put() within {} ms, while no ok could \
                 come: put() returned without waiting for the consumer's ok, so each timed \
                 round trip was a post alone. put() copies the record, posts ready, then waits \
                 for ok, in every mode",
                STOPPED.as_millis()
            )))
        }
        Some(answer) => {
            proc.kill_tree();
            Err(Fail::failed(format!(
                "in `bench semaphores` mode (main.rs), its consumer stopped for a moment, the \
                 program said `{}`{}, not `{BENCH_DONE}`",
                answer.kind,
                answer
                    .get("error")
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            )))
        }
        None => {
            let done = proc.recv_before(Instant::now() + Duration::from_secs(10))?;
            match done {
                Some(answer) if answer.kind == BENCH_DONE => {
                    proc.send("exit", &[])?;
                    let _ = proc.wait_until(Instant::now() + Duration::from_secs(5))?;
                    Ok(format!(
                        "in bench mode, put() waited for the ok of a consumer stopped for {} ms",
                        STOPPED.as_millis()
                    ))
                }
                other => {
                    proc.kill_tree();
                    Err(Fail::failed(format!(
                        "in `bench semaphores` mode (main.rs), once its consumer, stopped for \
                         {} ms, went on, the program did not finish its {ROUNDS} rounds within \
                         10 s (it said {:?})",
                        STOPPED.as_millis(),
                        other.map(|m| m.kind)
                    )))
                }
            }
        }
    }
}
