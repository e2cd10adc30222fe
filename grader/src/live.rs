//! What a grading shows while it runs on a terminal: a progress bar on stderr (cargo's line
//! while the labs build, then the running check and how many of the checks are done). When
//! stderr is not a terminal the bar draws nothing.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The progress of one grading.
pub struct Live {
    bar: ProgressBar,
    counting: AtomicBool,
}

impl Live {
    /// A bar for the checks `plans` report (each lab's `cleanup` included), drawn on stderr when
    /// `wanted` and stderr is a terminal.
    pub fn for_plans(plans: &[crate::engine::Plan], wanted: bool) -> Live {
        let total: usize = plans
            .iter()
            .map(|p| p.checks.len() + usize::from(p.cleanup))
            .sum();
        let bar = spinner_bar(total as u64, wanted);
        Live {
            bar,
            counting: AtomicBool::new(false),
        }
    }

    /// Whether the bar is drawn (stderr is a terminal).
    pub fn is_drawn(&self) -> bool {
        !self.bar.is_hidden()
    }

    /// A line of cargo's progress, while the labs build.
    pub fn compiling(&self, line: &str) {
        self.bar.set_message(line.to_string());
        self.bar.tick();
    }

    /// A check has started: it becomes the bar's message, and the bar counts checks from now on.
    pub fn started(&self, lab: &str, check: &str) {
        if !self.counting.swap(true, Ordering::SeqCst) {
            self.bar.set_style(
                ProgressStyle::with_template("  {wide_bar} {pos}/{len} checks  {msg}")
                    .expect("a valid progress template"),
            );
            self.bar.enable_steady_tick(Duration::from_millis(200));
        }
        self.bar.set_message(format!("{lab}/{check}"));
    }

    /// A check is done: `text` (its lines of the report) goes to stdout above the bar.
    pub fn finished(&self, text: &str) {
        self.bar.suspend(|| {
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(text.as_bytes());
            let _ = stdout.flush();
        });
        self.bar.inc(1);
    }

    /// Grading is over: the bar goes away.
    pub fn clear(&self) {
        self.bar.finish_and_clear();
    }
}

/// A bar of `total` steps that shows a spinner and a message on stderr when `wanted` and stderr
/// is a terminal, and nothing otherwise.
pub fn spinner_bar(total: u64, wanted: bool) -> ProgressBar {
    let target = if wanted && std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(total), target);
    bar.set_style(
        ProgressStyle::with_template("  {spinner} {msg}").expect("a valid progress template"),
    );
    bar
}
