//! Running one measurement through the engine, as a check runs a lab program: the program (the
//! lab's, or the grader's own in a baseline mode) is started with its control channel, told what
//! to measure, and bounded by the check's deadline; its IPC objects are audited and removed.

use std::path::Path;
use std::sync::Mutex;

use ipc_labs_driver::bench::{BENCH, BENCH_DONE, BENCH_READY};

use crate::engine::{Fail, Run};

use super::{Measure, Placement, Program, Settings};

/// What the engine's check (a plain `fn`) is to measure, and what it measured: the checks run
/// one at a time, so one slot carries both.
pub static SLOT: Mutex<Slot> = Mutex::new(Slot {
    job: None,
    samples: None,
});

pub struct Slot {
    pub job: Option<Job>,
    pub samples: Option<Samples>,
}

/// One measurement: which, where, and how.
#[derive(Clone)]
pub struct Job {
    pub measure: &'static Measure,
    pub placement: Placement,
    pub settings: Settings,
}

/// `(message size, nanoseconds)`, one per timed round.
pub type Samples = Vec<(usize, u64)>;

/// The engine's check for a measurement: runs the job in [`SLOT`] and leaves its samples there.
pub fn check(run: &mut Run) -> Result<String, Fail> {
    let job = SLOT
        .lock()
        .expect("slot lock")
        .job
        .clone()
        .ok_or_else(|| Fail::Grader("no measurement was set up".into()))?;
    let samples = measure(run, &job)?;
    let message = format!("{} samples", samples.len());
    SLOT.lock().expect("slot lock").samples = Some(samples);
    Ok(message)
}

fn measure(run: &mut Run, job: &Job) -> Result<Samples, Fail> {
    let out = run.path("samples");
    let socket = run.path("bench.sock");
    let names = [run.ipc_name("bench-a"), run.ipc_name("bench-b")];
    let args: Vec<&str> = match job.measure.program {
        Program::Lab(_) => vec![BENCH, job.measure.what],
        Program::Baseline(kind) => vec![BENCH, "--baseline", kind.name()],
    };
    let mut proc = run.spawn(&args)?;
    proc.recv(BENCH_READY)?;
    let sizes = job.settings.sizes(job.measure.metric);
    let sizes: Vec<String> = sizes.iter().map(ToString::to_string).collect();
    let [timer, peer] = job.placement.cpus;
    let mut fields = vec![
        ("name", names[0].clone()),
        ("name2", names[1].clone()),
        ("path", socket.display().to_string()),
        ("warmup", job.settings.warmup.to_string()),
        ("samples", job.settings.samples.to_string()),
        ("budget", job.settings.budget.to_string()),
        ("sizes", sizes.join(",")),
        ("out", out.display().to_string()),
        ("timer-cpu", timer.to_string()),
        ("peer-cpu", peer.to_string()),
    ];
    fields.retain(|(_, value)| !value.is_empty());
    proc.send(BENCH, &fields)?;
    let answer = proc.recv_any()?;
    match answer.kind.as_str() {
        BENCH_DONE => {}
        "failed" => {
            return Err(Fail::failed(format!(
                "the program could not be measured: {}",
                answer.get("error").unwrap_or("(no reason given)")
            )));
        }
        other => {
            return Err(Fail::failed(format!(
                "the program said `{other}` where the grader expected `{BENCH_DONE}`"
            )));
        }
    }
    proc.send("exit", &[])?;
    let status = proc.wait()?;
    if !status.success() {
        return Err(Fail::failed(format!(
            "the program ended with {status} after its measurement"
        )));
    }
    read_samples(&out)
}

/// Reads the `size nanoseconds` lines a program wrote.
fn read_samples(path: &Path) -> Result<Samples, Fail> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Fail::failed(format!("the program's samples cannot be read: {e}")))?;
    let samples: Samples = text
        .lines()
        .map(|line| {
            let (size, nanos) = line.split_once(' ')?;
            Some((size.parse().ok()?, nanos.parse().ok()?))
        })
        .collect::<Option<_>>()
        .ok_or_else(|| Fail::failed("the program's samples are not `size nanoseconds` lines"))?;
    if samples.is_empty() {
        return Err(Fail::failed("the program measured nothing"));
    }
    Ok(samples)
}
