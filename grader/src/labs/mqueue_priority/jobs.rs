//! The jobs of the lab's protocol: the job files the grader writes for producers and reads from
//! consumers, and the order a correct consumer serves them in.

use rand::RngExt;
use rand::seq::SliceRandom;

use crate::engine::{Fail, Run};

/// How the payloads the grader writes into a producer's job file after the producer read it
/// begin: nobody submits them, so a consumer that serves one read the file, not the queue.
pub const DECOY: &[u8] = b"never-submitted-";

/// A job as the grader writes it for a producer and reads it from a consumer's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub priority: u32,
    pub payload: Vec<u8>,
}

pub fn encode_jobs(jobs: &[Job]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for job in jobs {
        bytes.extend_from_slice(&job.priority.to_le_bytes());
        bytes.extend_from_slice(&(job.payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&job.payload);
    }
    bytes
}

fn decode_jobs(bytes: &[u8]) -> Result<Vec<Job>, Fail> {
    let mut jobs = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let header = rest
            .get(..8)
            .ok_or_else(|| Fail::Grader("a cut output file".into()))?;
        let priority = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
        let len = u32::from_le_bytes(header[4..].try_into().expect("4 bytes")) as usize;
        let payload = rest[8..]
            .get(..len)
            .ok_or_else(|| Fail::Grader("a cut output file".into()))?;
        jobs.push(Job {
            priority,
            payload: payload.to_vec(),
        });
        rest = &rest[8 + len..];
    }
    Ok(jobs)
}

/// The jobs a consumer wrote to its output file, which must all have come through the queue.
pub fn served_jobs(output: &std::path::Path) -> Result<Vec<Job>, Fail> {
    let served = decode_jobs(&std::fs::read(output).unwrap_or_default())?;
    if let Some(decoy) = served.iter().find(|job| job.payload.starts_with(DECOY)) {
        return Err(Fail::failed(format!(
            "the consumer served a job that nobody submitted ({}): the grader wrote it into a \
             producer's job file after the producer had read its jobs. The consumer must serve \
             the messages it receives from the queue, not read the producers' files",
            show(&decoy.payload)
        )));
    }
    Ok(served)
}

/// A short, printable picture of a payload.
pub fn show(payload: &[u8]) -> String {
    let text: String = payload
        .iter()
        .take(24)
        .map(|&b| if b.is_ascii_graphic() { b as char } else { '.' })
        .collect();
    format!("{} bytes {text:?}", payload.len())
}

/// What became of a payload `sent` that came out as `got`, byte for byte: which bytes are
/// missing, added or changed, and, for trailing NUL bytes dropped, that a payload is opaque.
pub fn payload_change(sent: &[u8], got: &[u8]) -> String {
    let same = sent.iter().zip(got).take_while(|(a, b)| a == b).count();
    if got.len() < sent.len() && same == got.len() {
        let cut = &sent[same..];
        if cut.iter().all(|&b| b == 0) {
            return format!(
                "its first {same} bytes came out as sent, its last {} byte(s), all NUL (0x00), \
                 are missing: trailing NUL bytes were stripped from the payload. A payload is \
                 opaque bytes, NUL bytes at its end included (not a C string): keep exactly the \
                 bytes mq_receive returned (its return value), after the tag",
                cut.len()
            );
        }
        return format!(
            "its first {same} bytes came out as sent, its last {} byte(s) ({}) are missing: \
             a job travels whole in its message, the tag 'J' and then exactly its payload",
            cut.len(),
            show(cut)
        );
    }
    if got.len() > sent.len() && same == sent.len() {
        return format!(
            "it came out whole, then {} more byte(s) ({}): keep exactly the bytes mq_receive \
             returned (its return value), not more of the buffer",
            got.len() - sent.len(),
            show(&got[same..])
        );
    }
    format!(
        "the bytes first differ at byte {same} (sent {}, served {}): a job travels whole in its \
         message, the tag 'J' and then exactly its payload (no file name, no other encoding)",
        sent.get(same)
            .map_or("nothing".to_string(), |b| format!("0x{b:02x}")),
        got.get(same)
            .map_or("nothing".to_string(), |b| format!("0x{b:02x}")),
    )
}

/// `n` jobs with priorities drawn from a few values (so that several share one) and payloads
/// that name the job.
pub fn random_jobs(run: &mut Run, n: usize, tag: &str) -> Vec<Job> {
    let levels: Vec<u32> = (0..3).map(|_| run.rng().random_range(0..100)).collect();
    jobs_at(run, n, tag, &levels)
}

/// `n` jobs with priorities drawn from `levels`, each level at least once when `n` allows.
pub fn jobs_at(run: &mut Run, n: usize, tag: &str, levels: &[u32]) -> Vec<Job> {
    let mut priorities: Vec<u32> = (0..n)
        .map(|i| match levels.get(i) {
            Some(&level) => level,
            None => levels[run.rng().random_range(0..levels.len())],
        })
        .collect();
    priorities.shuffle(run.rng());
    priorities
        .into_iter()
        .enumerate()
        .map(|(i, priority)| {
            let mut payload = format!("{tag}-{i:03}-").into_bytes();
            let extra = run.rng().random_range(0..24);
            payload.extend(run.random_bytes(extra));
            Job { priority, payload }
        })
        .collect()
}

pub fn total_payload(jobs: &[Job]) -> u64 {
    jobs.iter().map(|j| j.payload.len() as u64).sum()
}

/// The order a correct consumer serves jobs that were all queued before it started: highest
/// priority first, and the order of submission within a priority (a stable sort).
fn served_order(jobs: &[Job]) -> Vec<Job> {
    let mut sorted = jobs.to_vec();
    sorted.sort_by_key(|job| std::cmp::Reverse(job.priority));
    sorted
}

/// Compares what was served with the order a correct consumer serves `submitted` in.
pub fn same_order(served: &[Job], submitted: &[Job], who: &str) -> Result<(), Fail> {
    let expected = served_order(submitted);
    if served == expected {
        return Ok(());
    }
    let sorted = |jobs: &[Job]| {
        let mut payloads: Vec<Vec<u8>> = jobs.iter().map(|j| j.payload.clone()).collect();
        payloads.sort();
        payloads
    };
    if sorted(served) != sorted(submitted) {
        let unknown = |job: &Job| !submitted.iter().any(|s| s.payload == job.payload);
        let changed = served
            .iter()
            .zip(&expected)
            .find(|(got, sent)| unknown(got) && got.priority == sent.priority);
        if served.len() == expected.len()
            && let Some((got, sent)) = changed
        {
            return Err(Fail::failed(format!(
                "{who}: a job of {} came out as {}: {}",
                show(&sent.payload),
                show(&got.payload),
                payload_change(&sent.payload, &got.payload)
            )));
        }
        if served.len() < expected.len() && served == &expected[..served.len()] {
            let left: Vec<u32> = expected[served.len()..]
                .iter()
                .map(|j| j.priority)
                .collect();
            return Err(Fail::failed(format!(
                "{who}: the consumer ended after serving {} of the {} jobs, in the right order; \
                 the rest, of priorities {left:?}, were not served: the shutdown came out of the \
                 queue before them, so it went in with a higher priority than theirs (send it at \
                 priority 0, the lowest), or serve() stopped before the shutdown",
                served.len(),
                expected.len()
            )));
        }
        return Err(Fail::failed(format!(
            "{who}: {} jobs came out, not the {} submitted, or their payloads changed on the way",
            served.len(),
            submitted.len()
        )));
    }
    if let Some(job) = served.iter().find(|j| {
        !submitted
            .iter()
            .any(|s| s.payload == j.payload && s.priority == j.priority)
    }) {
        let sent = submitted
            .iter()
            .find(|s| s.payload == job.payload)
            .map_or(0, |s| s.priority);
        return Err(Fail::failed(format!(
            "{who}: a job submitted with priority {sent} came out with priority {}: send each \
             job with its own priority (mq_send's last argument) and keep the priority \
             mq_receive reports",
            job.priority
        )));
    }
    let priorities: Vec<u32> = served.iter().map(|j| j.priority).collect();
    let wanted: Vec<u32> = expected.iter().map(|j| j.priority).collect();
    let hint = if served == submitted {
        "they came out in the order submitted: the queue orders by the priority given to mq_send, \
         so send each job with its priority"
    } else if priorities.windows(2).all(|w| w[0] <= w[1]) {
        "lowest first: mq_receive returns the highest priority first, do not invert or re-sort"
    } else if priorities == wanted {
        "the priorities are right but jobs of one priority were reordered: within a priority \
         the queue is FIFO, keep that order"
    } else {
        "serve each job as mq_receive returns it: highest priority first, FIFO within one"
    };
    Err(Fail::failed(format!(
        "{who}: served with priorities {priorities:?}, expected {wanted:?}: {hint}"
    )))
}
