//! `cargo grade --watch LAB`: grades, then grades again whenever a file under the lab's `src/`
//! is saved, showing on a cleared screen the result of the last run with the first failing
//! check's diagnosis in full. A lab that does not compile shows the compiler's message at once,
//! without running checks. Saves made during a grading start one new grading once it is done
//! (a grading is never cut short by a save: its checks clean up after themselves as usual).
//! `q` or Ctrl-C leaves: a running grading is stopped first, its checks cleaned up after.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

use nix::sys::termios::{self, LocalFlags, SetArg, SpecialCharacterIndices, Termios};
use notify_debouncer_mini::notify::{self, RecommendedWatcher, RecursiveMode};
use notify_debouncer_mini::{DebounceEventResult, Debouncer, new_debouncer};

use crate::engine::compile::{self, DOES_NOT_COMPILE};
use crate::engine::{self, Options, Plan, Progress, Report, Status};
use crate::live::Live;
use crate::report;

/// How long saves are gathered into one before grading again (an editor's save is often a
/// burst of writes, renames and removals).
const DEBOUNCE: Duration = Duration::from_millis(300);

/// Why watching could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("there is no {0} to watch")]
    NoSources(PathBuf),
    #[error("cannot watch {0}: {1}")]
    Watcher(PathBuf, notify::Error),
}

/// What the watch loop waits for.
enum Event {
    /// A file under a watched `src/` was saved.
    Saved,
    /// `q` was pressed.
    Quit,
}

/// Set once `q` was pressed: leaving is then no interruption, and exits with status 0.
static QUIT: AtomicBool = AtomicBool::new(false);

pub fn run(workspace: &Path, plans: &[Plan], options: Options, flags: String) -> ExitCode {
    let (events, incoming) = std::sync::mpsc::channel();
    let (_watcher, dirs) = match watch_sources(workspace, plans, &options, events.clone()) {
        Ok(watching) => watching,
        Err(error) => return crate::cli::usage_error(&error.to_string()),
    };
    let watched: Vec<String> = dirs
        .iter()
        .map(|dir| format!("{}/", dir.strip_prefix(workspace).unwrap_or(dir).display()))
        .collect();
    let keys = Keys::listen(events);
    // `q` leaves with 0; a signal (its handler has said so) with 128 + its number.
    let leave = || match (QUIT.load(Ordering::SeqCst), engine::run::interrupted()) {
        (true, _) => Some(ExitCode::SUCCESS),
        (false, Some(signal)) => Some(ExitCode::from(128 + signal as u8)),
        (false, None) => None,
    };
    let code = loop {
        let graded = Sources::read(&dirs);
        let screen = grade_once(workspace, plans, &options, &flags);
        if let Some(code) = leave() {
            break code;
        }
        clear_screen();
        print!("{screen}");
        println!(
            "\nwatching {}: save a file to grade again; {} to leave",
            watched.join(", "),
            if keys.is_some() {
                "q or Ctrl-C"
            } else {
                "Ctrl-C"
            }
        );
        let _ = std::io::stdout().flush();
        if let Some(code) = wait_for_save(&incoming, &dirs, &graded) {
            break code;
        }
        if let Some(code) = leave() {
            break code;
        }
    };
    drop(keys);
    code
}

/// Watches the `src/` of every planned lab; returns the watcher (watching stops when it is
/// dropped) and the directories.
fn watch_sources(
    workspace: &Path,
    plans: &[Plan],
    options: &Options,
    events: Sender<Event>,
) -> Result<(Debouncer<RecommendedWatcher>, Vec<PathBuf>), WatchError> {
    let mut dirs = Vec::new();
    for plan in plans {
        let dir = compile::crate_dir(workspace, options.variant, plan.lab.slug)
            .map(|dir| dir.join("src"))
            .filter(|src| src.is_dir())
            .ok_or_else(|| {
                WatchError::NoSources(
                    Path::new(options.variant.dir()).join(format!("NN-{}/src", plan.lab.slug)),
                )
            })?;
        dirs.push(dir);
    }
    let on_change = move |result: DebounceEventResult| {
        let saved = result.is_ok_and(|changes| changes.iter().any(|c| is_source(&c.path)));
        if saved {
            let _ = events.send(Event::Saved);
        }
    };
    let mut debouncer = new_debouncer(DEBOUNCE, on_change)
        .map_err(|error| WatchError::Watcher(workspace.to_path_buf(), error))?;
    for dir in &dirs {
        debouncer
            .watcher()
            .watch(dir, RecursiveMode::Recursive)
            .map_err(|error| WatchError::Watcher(dir.clone(), error))?;
    }
    Ok((debouncer, dirs))
}

/// Whether a changed path is one of the lab's files, not an editor's swap or backup file.
fn is_source(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    !name.is_empty() && !name.starts_with('.') && !name.ends_with('~')
}

/// The files under the watched directories as they were graded: a change is a save only if it
/// changes this (the watcher also reports files merely opened, as the compiler opens them).
#[derive(PartialEq, Eq)]
struct Sources(Vec<(PathBuf, u64, Option<std::time::SystemTime>)>);

impl Sources {
    fn read(dirs: &[PathBuf]) -> Sources {
        let mut files = Vec::new();
        let mut stack = dirs.to_vec();
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                match entry.metadata() {
                    Ok(meta) if meta.is_dir() => stack.push(path),
                    Ok(meta) if is_source(&path) => {
                        files.push((path, meta.len(), meta.modified().ok()));
                    }
                    _ => {}
                }
            }
        }
        files.sort();
        Sources(files)
    }
}

/// Waits for a save (`None`: grade again), `q` or a signal (the exit status).
fn wait_for_save(
    incoming: &Receiver<Event>,
    dirs: &[PathBuf],
    graded: &Sources,
) -> Option<ExitCode> {
    loop {
        if engine::run::interrupted().is_some() {
            return None;
        }
        match incoming.recv_timeout(Duration::from_millis(100)) {
            Ok(Event::Quit) => return Some(ExitCode::SUCCESS),
            // Saves that came with this one, or during the grading, make one grading.
            Ok(Event::Saved) => {
                while let Ok(event) = incoming.try_recv() {
                    if let Event::Quit = event {
                        return Some(ExitCode::SUCCESS);
                    }
                }
                if Sources::read(dirs) != *graded {
                    return None;
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Some(ExitCode::SUCCESS),
        }
    }
}

/// Builds and grades once; returns the screen to show.
fn grade_once(workspace: &Path, plans: &[Plan], options: &Options, flags: &str) -> String {
    clear_screen();
    let slugs: Vec<&'static str> = plans.iter().map(|p| p.lab.slug).collect();
    eprintln!("building and grading {} ...", slugs.join(", "));
    let live = Live::for_plans(plans, true);
    let programs = compile::build_reporting(
        workspace,
        options.variant,
        &slugs,
        options.run_as.as_ref(),
        &|line| live.compiling(line),
    );
    let broken: Vec<&str> = programs
        .values()
        .filter_map(|program| program.as_ref().err())
        .filter(|error| error.starts_with(DOES_NOT_COMPILE))
        .map(String::as_str)
        .collect();
    if !broken.is_empty() {
        live.clear();
        return format!("{}\n", broken.join("\n\n"));
    }
    let progress = |event: Progress| match event {
        Progress::Started { lab, check } => live.started(lab, check),
        Progress::Finished { .. } => live.finished(""),
        _ => {}
    };
    let mut report = engine::grade_built(plans, options, &programs, &progress);
    report.workspace = Some(workspace.to_path_buf());
    live.clear();
    screen(&report, options.seed, flags)
}

/// A line per check, the first check that did not pass in full (its diagnosis, hint, how to
/// reproduce it), and the subtotals.
fn screen(report: &Report, seed: u64, flags: &str) -> String {
    let printer = report::Printer::new(report::Style::detect(), seed, flags.to_string());
    let mut text = String::new();
    let mut diagnosed = false;
    for lab in &report.labs {
        for check in &lab.checks {
            let lines = printer.check(&lab.name, check);
            if check.status != Status::Passed && !diagnosed {
                diagnosed = true;
                text.push_str(&lines);
            } else {
                text.push_str(lines.lines().next().unwrap_or(""));
                text.push('\n');
            }
        }
    }
    text.push_str(&report::summary(report, seed, &report::Style::detect()));
    text
}

fn clear_screen() {
    if std::io::stdout().is_terminal() {
        print!("\x1b[2J\x1b[H");
        let _ = std::io::stdout().flush();
    }
}

/// Keys read one by one from the terminal (no Enter needed, not echoed); the terminal's
/// settings come back when this is dropped. Ctrl-C still raises SIGINT.
struct Keys {
    saved: Termios,
}

impl Keys {
    /// Listens for `q` on stdin; `None` when stdin is not a terminal.
    fn listen(events: Sender<Event>) -> Option<Keys> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return None;
        }
        let saved = termios::tcgetattr(&stdin).ok()?;
        let mut keys = saved.clone();
        keys.local_flags
            .remove(LocalFlags::ICANON | LocalFlags::ECHO);
        keys.control_chars[SpecialCharacterIndices::VMIN as usize] = 1;
        keys.control_chars[SpecialCharacterIndices::VTIME as usize] = 0;
        termios::tcsetattr(&stdin, SetArg::TCSANOW, &keys).ok()?;
        std::thread::spawn(move || {
            let mut key = [0u8];
            while let Ok(1) = std::io::stdin().lock().read(&mut key) {
                if key[0].eq_ignore_ascii_case(&b'q') {
                    QUIT.store(true, Ordering::SeqCst);
                    // Stops a grading under way; its checks clean up after themselves.
                    engine::run::interrupt(libc::SIGINT);
                    let _ = events.send(Event::Quit);
                    return;
                }
            }
        });
        Some(Keys { saved })
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.saved);
    }
}
