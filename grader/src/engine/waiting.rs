//! How a check's processes wait when they have nothing to do: blocked in a system call until
//! the other side acts, as every lab requires, or spinning on the CPU, or polling (sleeping and
//! checking again). Told apart from what `/proc` counts for each thread over a short window: its
//! time on a CPU, how often it woke up, and the calls it was seen in.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::diagnose::{Activity, classify};
use super::inspect::{self, ProcessView, ThreadTimes};
use super::model::Fail;

/// How long the threads are watched once they have settled.
const WINDOW: Duration = Duration::from_millis(400);
/// How often their calls are sampled in the window.
const SAMPLE_EVERY: Duration = Duration::from_millis(10);
/// A thread on a CPU for more than this share of the window is spinning.
const SPIN_SHARE: f64 = 0.25;
/// The CPU share a thread runnable at most looks must also have used to be judged spinning: a
/// spinning thread gets its share of the CPUs (4% at a load of 50 on 2 cores); a blocked one,
/// woken ten times a second, runs for well under 0.1%.
const RUNNABLE_SPIN_SHARE: f64 = 0.01;

/// One thread found waiting as it should: blocked, in this call.
#[derive(Debug, Clone)]
pub struct Waiter {
    pub pid: i32,
    pub tid: i32,
    pub role: String,
    pub activity: Activity,
}

/// What a lab allows a waiting thread.
#[derive(Debug, Clone, Copy)]
pub struct WaitRules {
    /// Wake-ups per second a blocked wait may have (a timed wait that re-checks a condition
    /// every 100 ms wakes 10 times a second).
    pub wakeups_per_second: f64,
    /// Whether a wait may have a timeout at all. Where the lab asks for waits that end only
    /// when there is something to do, a timeout is a poll however long it is: a thread seen in
    /// `poll(..., 250)` wakes too seldom for the count of wake-ups to tell.
    pub timeouts: bool,
}

impl Default for WaitRules {
    fn default() -> WaitRules {
        WaitRules {
            wakeups_per_second: 10.0,
            timeouts: true,
        }
    }
}

impl WaitRules {
    /// Waits that end only when there is something to do: no timeout, however long.
    pub fn untimed() -> WaitRules {
        WaitRules {
            timeouts: false,
            ..WaitRules::default()
        }
    }
}

/// The timeout of the wait thread `tid` of `pid` is asleep in, in words, if it is one of the
/// waiting calls with a finite timeout (`/proc/PID/task/TID/syscall` gives its arguments).
fn timed_wait(pid: i32, tid: i32) -> Option<String> {
    let line = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).ok()?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let number: i64 = words.first()?.parse().ok()?;
    let arg = |n: usize| -> Option<u64> {
        u64::from_str_radix(words.get(n + 1)?.trim_start_matches("0x"), 16).ok()
    };
    // An int timeout in milliseconds, negative for none.
    let millis = |n: usize| arg(n).map(|v| v as u32 as i32).filter(|ms| *ms >= 0);
    let pointer = |n: usize| arg(n).filter(|p| *p != 0);
    match number {
        libc::SYS_poll => millis(2).map(|ms| format!("poll() with a timeout of {ms} ms")),
        libc::SYS_epoll_wait | libc::SYS_epoll_pwait => {
            millis(3).map(|ms| format!("epoll_wait() with a timeout of {ms} ms"))
        }
        libc::SYS_ppoll => pointer(2).map(|_| "ppoll() with a timeout".into()),
        libc::SYS_select => pointer(4).map(|_| "select() with a timeout".into()),
        libc::SYS_pselect6 => pointer(4).map(|_| "pselect() with a timeout".into()),
        libc::SYS_nanosleep | libc::SYS_clock_nanosleep => Some("a sleep".into()),
        libc::SYS_rt_sigtimedwait => pointer(2).map(|_| "sigtimedwait() with a timeout".into()),
        libc::SYS_mq_timedreceive | libc::SYS_mq_timedsend => {
            pointer(4).map(|_| "a message queue wait with a timeout".into())
        }
        libc::SYS_futex => {
            // FUTEX_WAIT and FUTEX_WAIT_BITSET with a timespec; the rest (a wake) is no wait.
            let op = arg(1)? as u32 & 0x7f;
            (matches!(op, 0 | 9) && pointer(3).is_some())
                .then(|| "a futex wait with a timeout".into())
        }
        _ => None,
    }
}

/// Watches every thread of `pids` while none of them has anything to do (the check has made
/// sure of that: the other side is held, or has nothing to send), and fails, naming the thread,
/// if one spins on the CPU or polls instead of blocking. `advice` ends the message: what the
/// lab's code should block in. On success, returns where each thread was blocked.
pub fn expect_blocked(
    pids: &[i32],
    role_of: &dyn Fn(&ProcessView) -> String,
    rules: WaitRules,
    advice: &str,
) -> Result<Vec<Waiter>, Fail> {
    settle(pids, Instant::now() + Duration::from_secs(1));
    let before: BTreeMap<i32, BTreeMap<i32, ThreadTimes>> = pids
        .iter()
        .map(|&p| (p, inspect::thread_times(p)))
        .collect();
    let started = Instant::now();
    let mut seen: BTreeMap<(i32, i32), Vec<Activity>> = BTreeMap::new();
    // Per thread: in how many samples it was runnable, out of how many.
    let mut runnable: BTreeMap<(i32, i32), (u32, u32)> = BTreeMap::new();
    let mut views: BTreeMap<i32, ProcessView> = BTreeMap::new();
    // Per thread: the timed wait it was seen in, where the lab allows none.
    let mut timed: BTreeMap<(i32, i32), String> = BTreeMap::new();
    while started.elapsed() < WINDOW {
        for &pid in pids {
            let Some(view) = inspect::view(pid) else {
                continue;
            };
            for thread in &view.threads {
                if !rules.timeouts
                    && thread.state == 'S'
                    && let Some(how) = timed_wait(pid, thread.tid)
                {
                    timed.entry((pid, thread.tid)).or_insert(how);
                }
                let counts = runnable.entry((pid, thread.tid)).or_default();
                counts.1 += 1;
                if thread.state == 'R' {
                    counts.0 += 1;
                }
                if thread.state == 'S' || thread.state == 'D' {
                    let activity = classify(&view, thread.syscall);
                    let calls = seen.entry((pid, thread.tid)).or_default();
                    if !calls.contains(&activity) {
                        calls.push(activity);
                    }
                }
            }
            views.insert(pid, view);
        }
        std::thread::sleep(SAMPLE_EVERY);
    }
    let window = started.elapsed();
    let mut waiters = Vec::new();
    for &pid in pids {
        let (Some(view), Some(first)) = (views.get(&pid), before.get(&pid)) else {
            continue;
        };
        if view.state == 'Z' {
            continue;
        }
        let role = role_of(view);
        for (tid, now) in inspect::thread_times(pid) {
            let Some(then) = first.get(&tid) else {
                continue;
            };
            let share = now.run_ns.saturating_sub(then.run_ns) as f64 / window.as_nanos() as f64;
            let wakeups = now.sleeps.saturating_sub(then.sleeps);
            // On a busy machine a spinning thread gets little CPU, but it is always runnable.
            // A blocked one woken by its timeouts may wait long for a CPU on an overloaded
            // machine, runnable too, but it then runs for microseconds: it must also have run.
            let (ready, samples) = runnable.get(&(pid, tid)).copied().unwrap_or_default();
            let mostly_runnable = samples > 0
                && f64::from(ready) / f64::from(samples) > 0.5
                && share > RUNNABLE_SPIN_SHARE;
            let calls = seen.get(&(pid, tid)).cloned().unwrap_or_default();
            let who = if view.threads.len() > 1 {
                format!("{role} (pid {pid}, thread {tid})")
            } else {
                format!("{role} (pid {pid})")
            };
            let ms = window.as_millis();
            let slept = calls.contains(&Activity::Sleep);
            // A thread seen in nanosleep() that woke again and again polls, however runnable a
            // busy machine keeps it between its sleeps.
            let polls_by_sleeping = slept && wakeups >= 2;
            if !polls_by_sleeping && (share > SPIN_SHARE || mostly_runnable) {
                return Err(Fail::failed(format!(
                    "{who} was running or ready to run in {ready} of {samples} looks over {ms} ms \
                     ({:.0}% of a CPU) while it had nothing to do: it spins (checks again and \
                     again) instead of blocking; {advice}",
                    share * 100.0
                )));
            }
            let allowed = rules.wakeups_per_second * window.as_secs_f64();
            if polls_by_sleeping || wakeups as f64 > allowed.max(2.0) {
                let how = if slept {
                    "sleeping (nanosleep) between looks".to_string()
                } else if calls.is_empty() {
                    "never seen blocked".to_string()
                } else {
                    let calls: Vec<String> = calls.iter().map(Activity::describe).collect();
                    format!("seen {}", calls.join(", "))
                };
                return Err(Fail::failed(format!(
                    "{who} woke up {wakeups} times in {ms} ms while it had nothing to do \
                     ({how}): it polls, checking again and again, instead of blocking until there \
                     is something to do; {advice}"
                )));
            }
            if let Some(how) = timed.get(&(pid, tid)) {
                return Err(Fail::failed(format!(
                    "{who} waited in {how} while it had nothing to do: a wait with a timeout \
                     wakes up to check again, which is polling, however long the timeout; \
                     {advice}"
                )));
            }
            let activity = calls
                .into_iter()
                .find(|a| *a != Activity::Blocked)
                .unwrap_or(Activity::Blocked);
            waiters.push(Waiter {
                pid,
                tid,
                role: role.clone(),
                activity,
            });
        }
    }
    Ok(waiters)
}

/// Waits until every thread of `pids` sleeps, or `until`: a process may still be finishing what
/// it did before it had nothing left to do.
fn settle(pids: &[i32], until: Instant) {
    while Instant::now() < until {
        let asleep = pids.iter().all(|&pid| {
            inspect::view(pid).is_none_or(|view| {
                view.state == 'Z'
                    || view
                        .threads
                        .iter()
                        .all(|t| matches!(t.state, 'S' | 'D' | 'T' | 't'))
            })
        });
        if asleep {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judge(script: &str) -> Result<Vec<Waiter>, Fail> {
        let mut child = std::process::Command::new("sh")
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("sh starts");
        let pid = child.id() as i32;
        std::thread::sleep(Duration::from_millis(50));
        let verdict = expect_blocked(&[pid], &|_| "the shell".into(), WaitRules::default(), "x");
        let _ = child.kill();
        let _ = child.wait();
        verdict
    }

    #[test]
    fn a_blocked_process_passes_and_says_where_it_waits() {
        let waiters = judge("exec cat").unwrap_or_else(|f| panic!("{f:?}"));
        assert!(matches!(
            waiters[0].activity,
            Activity::Syscall(_) | Activity::PipeRead { .. }
        ));
        let blocked = judge("exec sleep 10").expect("a sleep without wake-ups is blocked");
        assert_eq!(blocked[0].activity, Activity::Sleep);
    }

    #[test]
    fn spinning_and_polling_are_told_apart() {
        let spin = judge("while :; do :; done").expect_err("a spinning shell");
        assert!(spin.message().contains("spins"), "{}", spin.message());
        let poll = judge("while :; do sleep 0.01; done").expect_err("a polling shell");
        assert!(poll.message().contains("polls"), "{}", poll.message());
    }
}
