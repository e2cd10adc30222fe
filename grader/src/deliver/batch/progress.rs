//! What a batch shows while it runs: on a terminal, a bar on stderr with the submissions done,
//! running and failed and an estimate of the time left; otherwise a plain line per submission
//! on stdout, for a log.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use super::Row;

pub struct BatchProgress {
    bar: ProgressBar,
    total: usize,
    running: AtomicUsize,
    done: AtomicUsize,
    failed: AtomicUsize,
}

impl BatchProgress {
    /// Progress over `total` submissions to grade (`skipped` more were graded before).
    pub fn new(total: usize, skipped: usize) -> BatchProgress {
        // Until the first submission starts: the shared build, with no count yet.
        let bar = crate::live::spinner_bar(total as u64, true);
        bar.set_message("building the skeletons once ...");
        if skipped > 0 {
            bar.println(format!(
                "{skipped} submission(s) already graded in the results: skipped (--resume)"
            ));
            if bar.is_hidden() {
                println!("{skipped} submission(s) already graded in the results: skipped");
            }
        }
        BatchProgress {
            bar,
            total,
            running: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
        }
    }

    /// A line above the bar, or on stderr.
    pub fn note(&self, line: &str) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    /// The spinner turns while the skeletons are built.
    pub fn tick(&self) {
        self.bar.enable_steady_tick(Duration::from_millis(200));
    }

    /// Grading begins: the bar counts submissions from now on.
    pub fn start(&self) {
        self.bar.set_style(
            ProgressStyle::with_template("  {wide_bar} {pos}/{len} submissions  {msg}  ETA {eta}")
                .expect("a valid progress template"),
        );
        self.bar.enable_steady_tick(Duration::from_millis(500));
        self.refresh();
    }

    fn refresh(&self) {
        self.bar.set_message(format!(
            "{} running, {} failed",
            self.running.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst)
        ));
    }

    pub fn started(&self) {
        self.running.fetch_add(1, Ordering::SeqCst);
        self.refresh();
    }

    pub fn finished(&self, row: &Row) {
        self.running.fetch_sub(1, Ordering::SeqCst);
        let done = self.done.fetch_add(1, Ordering::SeqCst) + 1;
        if row.outcome.failed() {
            self.failed.fetch_add(1, Ordering::SeqCst);
        }
        let mut line = format!(
            "[{done}/{}] {}: {}/{} {} in {:.1} s",
            self.total,
            row.id,
            row.total,
            row.max_total,
            row.outcome.as_str(),
            row.wall_seconds
        );
        if !row.reason.is_empty() {
            line.push_str(&format!(" ({})", row.reason));
        }
        if self.bar.is_hidden() {
            println!("{line}");
        } else {
            self.bar.println(line);
        }
        self.bar.inc(1);
        self.refresh();
    }

    pub fn clear(&self) {
        self.bar.finish_and_clear();
    }
}
