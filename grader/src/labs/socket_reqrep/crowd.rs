//! How many idle clients it takes to show that a server serves every client at once: more than
//! a small pool of threads holds, and more than the threads the server has before they come, so
//! that a pool of threads started in advance, however large, is full before the last client.

use super::observe;

/// The fewest idle clients the grader connects: past 256, a cap picked as a power of two that
/// also passes a crowd of a hundred or two.
pub const LEAST: usize = 300;

/// The most idle clients the grader connects: a pool larger than this is named for its size.
pub const MOST: usize = 2000;

/// The number of idle clients to connect (at least [`LEAST`], and more than the server's
/// threads now), and the server's threads now.
pub fn idle_clients_past_the_threads(pid: i32) -> (usize, usize) {
    let threads = observe::thread_ids(pid).len();
    (LEAST.max(threads + 8).min(MOST), threads)
}

/// What the failure adds when the server had more threads than a thread per client explains.
pub fn pool_note(idle: usize, threads: usize) -> String {
    if threads + 8 <= idle.min(LEAST) {
        return String::new();
    }
    format!(
        " (more than the {threads} threads the server had before they came, with none of \
         its clients connected but the grader's last few: a fixed pool of handler threads, \
         whatever its size, is full once that many clients are connected)"
    )
}
