//! The program's messages as the grader reads them: a field, a list, a worker's index, the
//! layout the coordinator's `ready` gives, and a `failed` or an early `done` put in the
//! student's terms.

use ipc_labs_driver::Message;

use super::segment::Layout;
use crate::engine::Fail;

pub(super) fn field<T: std::str::FromStr>(message: &Message, key: &str) -> Result<T, Fail> {
    message
        .get(key)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Fail::Grader(format!("`{}` without a valid `{key}`", message.kind)))
}

pub(super) fn list<T: std::str::FromStr>(message: &Message, key: &str) -> Result<Vec<T>, Fail> {
    let text = message.get(key).unwrap_or("");
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().ok())
        .collect::<Option<Vec<T>>>()
        .ok_or_else(|| Fail::Grader(format!("`{}` with a bad list `{key}`", message.kind)))
}

pub(super) fn index_of(message: &Message) -> Result<usize, Fail> {
    field(message, "index")
}

/// A `failed` report, in the student's terms.
pub(super) fn failure(message: &Message) -> Fail {
    let kind = message.get("kind").unwrap_or("none");
    let error = message.get("error").unwrap_or("");
    let who = message.get("pid").unwrap_or("?");
    let hint = match kind {
        // Whichever call meets it first (a lock, a condition wait) reports the same cause.
        _ if kind == "not-recoverable" || error.contains("ENOTRECOVERABLE") => {
            "a holder died and the one who got EOWNERDEAD unlocked without \
             pthread_mutex_consistent(): the mutex is now unusable for good"
        }
        "lock" | "wait" if error.contains("EOWNERDEAD") => {
            "EOWNERDEAD is not a failure: the lock is yours, repair the bank (recover()) and \
             call pthread_mutex_consistent()"
        }
        "lock" | "wait" if error.contains("EINVAL") => {
            "the mutex or condition variable was not initialized, or already destroyed"
        }
        "bad-name" => {
            "the grader's name is valid ('/', more characters, none of them '/'): refuse only \
             names that break that rule"
        }
        "exists" => "no segment had the grader's name: shm_open(O_CREAT | O_EXCL) succeeds on it",
        "mmap" | "ftruncate" if error.contains("EACCES") || error.contains("EINVAL") => {
            "open the segment for reading and writing (O_RDWR) to size it and map it shared \
             with PROT_READ | PROT_WRITE"
        }
        _ => "see the error",
    };
    Fail::failed(format!(
        "pid {who} failed with kind={kind} ({error}): {hint}"
    ))
}

/// The coordinator said `done` before the workers were even released: what its snapshot shows.
pub(super) fn early_done(message: &Message, workers: usize) -> Fail {
    let count = |key| message.get(key).unwrap_or("?").to_string();
    let seen = format!(
        "the coordinator's wait ended before any worker had started (its snapshot: workers = \
         {}, finished = {}, dead = {})",
        count("workers"),
        count("finished"),
        count("dead")
    );
    if message.get("workers") != Some(workers.to_string().as_str()) {
        Fail::failed(format!(
            "{seen}: create() sets Bank::workers to the number of workers it is given \
             ({workers} here), and wait_all_done() waits until finished + dead reaches it"
        ))
    } else {
        Fail::failed(format!(
            "{seen}: wait_all_done() sleeps on all_done while finished + dead < workers"
        ))
    }
}

/// Where the coordinator says the pieces of the bank lie.
pub(super) fn layout_of(message: &Message) -> Result<Layout, Fail> {
    Ok(Layout {
        mutex_at: field(message, "mutex_at")?,
        cond_at: field(message, "cond_at")?,
        counts_at: field(message, "counts_at")?,
        transfers_at: field(message, "transfers_at")?,
        journal_at: field(message, "journal_at")?,
        accounts_at: field(message, "accounts_at")?,
        size: field(message, "size")?,
        opening: field(message, "opening")?,
    })
}
