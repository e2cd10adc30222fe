//! The grader as it meets the unexpected: interrupted from its terminal, killed outright, run on
//! a terminal, run for another checkout than the one it was built in.
//!
//! The programs graded here are stand-ins (`IPC_LABS_PREBUILT` in a workspace of the test's
//! own): shell scripts that note their pid and wait, so that the test knows a check is under way
//! when it interrupts or kills the grader.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipc_grader::engine::compile::{self, Variant};

/// A workspace of the test's own, with `programs` (lab slug to script text) standing in for the
/// built programs, and its own `TMPDIR` (check directories, ledgers).
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new(programs: &[(&str, &str)]) -> Scratch {
        let dir = tempfile::tempdir().expect("a temp dir");
        let bin = dir.path().join("target/grade/labs/grade");
        std::fs::create_dir_all(&bin).expect("the programs' directory");
        std::fs::create_dir_all(dir.path().join("tmp")).expect("the scratch TMPDIR");
        for (slug, script) in programs {
            let path = bin.join(slug);
            std::fs::write(&path, script).expect("a stand-in program");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        Scratch { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn tmp(&self) -> PathBuf {
        self.path().join("tmp")
    }

    /// The grader, on this workspace, with its stand-in programs.
    fn grade(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_cargo-grade"));
        command
            .args(args)
            .env("IPC_LABS_WORKSPACE", self.path())
            .env("IPC_LABS_PREBUILT", "1")
            .env("TMPDIR", self.tmp())
            .env("IPC_LABS_TEST_MARKS", self.path())
            .env_remove("CARGO_MANIFEST_DIR");
        command
    }

    /// The pids the stand-in programs noted, once `count` of them have.
    fn wait_for_marks(&self, count: usize) -> Vec<i32> {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let marks: Vec<i32> = std::fs::read_dir(self.path())
                .expect("the scratch workspace")
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.strip_prefix("mark-")?.parse().ok())
                .collect();
            if marks.len() >= count {
                return marks;
            }
            assert!(
                Instant::now() < until,
                "the stand-in programs never started"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn ledgers(&self) -> Vec<PathBuf> {
        let dir = self.tmp().join(format!(
            "ipc-labs-ledgers-{}",
            nix::unistd::getuid().as_raw()
        ));
        std::fs::read_dir(dir)
            .map(|entries| entries.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }

    /// What every ledger holds, one after the other.
    fn ledger_text(&self) -> String {
        self.ledgers()
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .collect()
    }
}

/// A program that notes its pid, starts a child that outlives it unless killed, and waits.
const WAITS: &str = "#!/bin/sh\n: > \"$IPC_LABS_TEST_MARKS/mark-$$\"\nsleep 600 &\n: > \"$IPC_LABS_TEST_MARKS/mark-$!\"\nwait\n";

/// Creates the queue `name` (as a check's program would) and closes it: only the name stays.
fn create_queue(name: &str) {
    let queue = nix::mqueue::mq_open(
        name,
        nix::mqueue::MQ_OFlag::O_CREAT | nix::mqueue::MQ_OFlag::O_RDWR,
        nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
        None,
    )
    .expect("mq_open");
    nix::mqueue::mq_close(queue).expect("mq_close");
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// A process on a pseudo-terminal of its own, as in a terminal window: its output, and the
/// terminal to type into.
struct OnTerminal {
    child: Child,
    master: OwnedFd,
    output: Arc<Mutex<Vec<u8>>>,
}

impl OnTerminal {
    fn start(command: &mut Command) -> OnTerminal {
        let pty = nix::pty::openpty(None, None).expect("a pseudo-terminal");
        let slave = pty.slave;
        let slave_raw = slave.as_raw_fd();
        command
            .stdin(Stdio::from(slave.try_clone().expect("dup")))
            .stdout(Stdio::from(slave.try_clone().expect("dup")))
            .stderr(Stdio::from(slave));
        // SAFETY: setsid and the ioctl are async-signal-safe.
        unsafe {
            command.pre_exec(move || {
                nix::unistd::setsid()?;
                if libc::ioctl(slave_raw, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("the grader starts");
        let output = Arc::new(Mutex::new(Vec::new()));
        let reader = pty.master.try_clone().expect("dup");
        let sink = output.clone();
        std::thread::spawn(move || {
            let mut file = std::fs::File::from(reader);
            let mut buffer = [0u8; 4096];
            while let Ok(n) = file.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .expect("output lock")
                    .extend_from_slice(&buffer[..n]);
            }
        });
        OnTerminal {
            child,
            master: pty.master,
            output,
        }
    }

    fn type_keys(&self, keys: &[u8]) {
        nix::unistd::write(&self.master, keys).expect("typing on the terminal");
    }

    /// Waits (at most `limit`) for the exit; the exit code and everything printed.
    fn finish(mut self, limit: Duration) -> (Option<i32>, String) {
        let until = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break Some(status);
            }
            if Instant::now() > until {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        std::thread::sleep(Duration::from_millis(200));
        let text = String::from_utf8_lossy(&self.output.lock().expect("output lock")).into_owned();
        (status.and_then(|s| s.code()), text)
    }
}

/// What is left of the escape sequences: plain text.
fn without_escapes(text: &str) -> String {
    let mut plain = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for next in chars.by_ref() {
                if next.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

#[test]
fn ctrl_c_stops_the_checks_cleans_up_and_reports_what_was_graded() {
    let scratch = Scratch::new(&[("pipe-echo", WAITS)]);
    let terminal = OnTerminal::start(&mut scratch.grade(&["pipe-echo"]));
    let marks = scratch.wait_for_marks(2);
    terminal.type_keys(b"\x03");
    let (code, output) = terminal.finish(Duration::from_secs(30));
    assert_eq!(code, Some(130), "{output}");
    assert!(output.contains("interrupted by SIGINT"), "{output}");
    for pid in marks {
        assert!(
            !alive(pid),
            "process {pid} of the interrupted check still runs"
        );
    }
    let left: Vec<_> = std::fs::read_dir(scratch.tmp())
        .expect("the scratch TMPDIR")
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| {
            n.to_string_lossy().starts_with("ipc-labs-")
                && !n.to_string_lossy().starts_with("ipc-labs-ledgers")
        })
        .collect();
    assert!(left.is_empty(), "left in TMPDIR: {left:?}");
    assert!(
        scratch.ledgers().is_empty(),
        "ledgers left: {:?}",
        scratch.ledgers()
    );
}

#[test]
fn sigterm_stops_grading_with_status_143() {
    let scratch = Scratch::new(&[("pipe-echo", WAITS)]);
    let grader = scratch
        .grade(&["pipe-echo", "--format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the grader starts");
    let marks = scratch.wait_for_marks(2);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(grader.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill");
    let output = grader.wait_with_output().expect("the grader ends");
    assert_eq!(output.status.code(), Some(143));
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("the report is JSON");
    assert_eq!(report["interrupted"], "SIGTERM");
    for pid in marks {
        assert!(
            !alive(pid),
            "process {pid} of the interrupted check still runs"
        );
    }
}

#[test]
fn clean_ends_what_a_killed_grader_left_and_removes_its_objects_and_ledger() {
    let scratch = Scratch::new(&[("sysv-shm", WAITS), ("mqueue-priority", WAITS)]);
    let mut grader = scratch
        .grade(&[
            "--jobs",
            "2",
            "sysv-shm/segment-key-and-size",
            "mqueue-priority/priority-order",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the grader starts");
    let marks = scratch.wait_for_marks(4);
    // The grader records a program's process group right after starting it, so a program's
    // marks may come first: the grader is killed once both groups are in the ledger.
    let until = Instant::now() + Duration::from_secs(60);
    while scratch
        .ledger_text()
        .lines()
        .filter(|l| l.starts_with("group "))
        .count()
        < 2
    {
        assert!(
            Instant::now() < until,
            "the grader never recorded the programs' groups"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // What the checks' programs would have made: a segment with the key the ledger lists, a
    // queue with a name it lists.
    let ledger = scratch.ledger_text();
    let key = ledger
        .lines()
        .find_map(|l| l.strip_prefix("key 0x"))
        .and_then(|hex| u32::from_str_radix(hex, 16).ok())
        .expect("the ledger lists the SysV key") as i32;
    let name = ledger
        .lines()
        .find(|l| l.starts_with('/'))
        .expect("the ledger lists a queue name")
        .to_string();
    // SAFETY: plain shmget; the segment is removed by `clean` below (or by the assertion's
    // clean-up if it is not).
    let segment = unsafe { libc::shmget(key, 4096, libc::IPC_CREAT | 0o600) };
    assert!(segment >= 0, "shmget: {}", std::io::Error::last_os_error());
    create_queue(&name);
    grader.kill().expect("SIGKILL to the grader");
    grader.wait().expect("the grader is gone");

    let output = scratch
        .grade(&["clean"])
        .output()
        .expect("cargo grade clean runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    let segment_left = std::fs::read_to_string("/proc/sysvipc/shm")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .any(|l| l.split_whitespace().nth(1) == Some(&segment.to_string()));
    let queue_left = nix::mqueue::mq_unlink(name.as_str()).is_ok();
    if segment_left {
        // SAFETY: IPC_RMID takes no buffer.
        unsafe { libc::shmctl(segment, libc::IPC_RMID, std::ptr::null_mut()) };
    }
    let running: Vec<i32> = marks.iter().copied().filter(|&p| alive(p)).collect();
    for &pid in &running {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert!(!segment_left, "the segment is still there: {text}");
    assert!(!queue_left, "the queue is still there: {text}");
    assert!(running.is_empty(), "still running: {running:?}: {text}");
    assert!(scratch.ledgers().is_empty(), "ledgers left: {text}");
}

#[test]
fn on_a_terminal_the_status_stands_apart_from_the_check_name() {
    let scratch = Scratch::new(&[("pipe-echo", "#!/bin/sh\nexit 3\n")]);
    let terminal = OnTerminal::start(
        scratch
            .grade(&["pipe-echo/echo-0-bytes"])
            .env_remove("NO_COLOR"),
    );
    let (code, output) = terminal.finish(Duration::from_secs(60));
    assert_eq!(code, Some(1), "{output}");
    assert!(
        output.contains("\x1b[31m"),
        "no colour on a terminal: {output:?}"
    );
    let plain = without_escapes(&output);
    assert!(
        plain.contains("FAIL  pipe-echo/echo-0-bytes"),
        "the status is glued to the name: {plain:?}"
    );
}

#[test]
fn on_a_terminal_a_progress_bar_shows_the_running_check_and_the_count() {
    let scratch = Scratch::new(&[("pipe-echo", WAITS)]);
    let terminal =
        OnTerminal::start(&mut scratch.grade(&["pipe-echo/echo-0-bytes", "pipe-echo/echo-1-byte"]));
    scratch.wait_for_marks(2);
    // The bar is redrawn every 200 ms while a check runs.
    std::thread::sleep(Duration::from_millis(800));
    terminal.type_keys(b"\x03");
    let (code, output) = terminal.finish(Duration::from_secs(30));
    assert_eq!(code, Some(130), "{output}");
    let plain = without_escapes(&output);
    assert!(
        plain.contains("0/2 checks  pipe-echo/echo-0-bytes"),
        "no progress bar with the running check: {plain:?}"
    );
}

#[test]
fn through_a_pipe_there_is_no_progress_display() {
    let scratch = Scratch::new(&[("pipe-echo", "#!/bin/sh\nexit 3\n")]);
    let output = scratch
        .grade(&["pipe-echo/echo-0-bytes"])
        .output()
        .expect("the grader runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains('\x1b') && !stderr.contains('\r') && !stderr.contains("checks"),
        "progress drawn through a pipe: {stderr:?}"
    );
}

/// `--watch` on a scratch workspace: the lab's crate (`dir` under `labs/`, package `slug`) is
/// there to be watched, its program is the stand-in. Returns the terminal once a check is under
/// way, and the pids it started.
fn watching_a_running_check(
    scratch: &Scratch,
    dir: &str,
    check: &str,
    marks: usize,
) -> (OnTerminal, Vec<i32>) {
    let slug = check.split('/').next().expect("LAB/CHECK");
    let src = scratch.path().join("labs").join(dir).join("src");
    std::fs::create_dir_all(&src).expect("the lab's src/");
    std::fs::write(src.join("lib.rs"), "").expect("lib.rs");
    std::fs::write(
        scratch.path().join("labs").join(dir).join("Cargo.toml"),
        format!("[package]\nname = \"{slug}\"\n"),
    )
    .expect("Cargo.toml");
    let terminal = OnTerminal::start(&mut scratch.grade(&["--watch", check]));
    let marks = scratch.wait_for_marks(marks);
    (terminal, marks)
}

#[test]
fn watch_leaves_on_q_or_ctrl_c_during_a_grading_and_cleans_up() {
    for (key, status) in [(b"q", 0), (b"\x03", 130)] {
        let scratch = Scratch::new(&[("mqueue-priority", WAITS)]);
        let (terminal, marks) = watching_a_running_check(
            &scratch,
            "02-mqueue-priority",
            "mqueue-priority/priority-order",
            2,
        );
        // The queue the check's program would have made, under the name the check handed out.
        let ledger = scratch.ledger_text();
        let name = ledger
            .lines()
            .find(|l| l.starts_with('/'))
            .expect("the ledger lists a queue name")
            .to_string();
        create_queue(&name);
        terminal.type_keys(key);
        let (code, output) = terminal.finish(Duration::from_secs(30));
        let queue_left = nix::mqueue::mq_unlink(name.as_str()).is_ok();
        assert_eq!(code, Some(status), "{key:?}: {output}");
        assert!(!queue_left, "{key:?}: the queue {name} was left: {output}");
        for pid in marks {
            assert!(
                !alive(pid),
                "{key:?}: process {pid} of the check still runs"
            );
        }
        assert!(
            scratch.ledgers().is_empty(),
            "{key:?}: ledgers left: {:?}",
            scratch.ledgers()
        );
    }
}

#[test]
fn watch_a_save_during_a_grading_grades_again_once_it_is_done() {
    let takes_a_second = "#!/bin/sh\n: > \"$IPC_LABS_TEST_MARKS/mark-$$\"\nsleep 1\nexit 3\n";
    let scratch = Scratch::new(&[("pipe-echo", takes_a_second)]);
    let (terminal, _) =
        watching_a_running_check(&scratch, "01-pipe-echo", "pipe-echo/echo-0-bytes", 1);
    std::fs::write(
        scratch.path().join("labs/01-pipe-echo/src/lib.rs"),
        "// saved\n",
    )
    .expect("a save");
    scratch.wait_for_marks(2);
    // What the grader printed before the second program started is read from the terminal.
    std::thread::sleep(Duration::from_millis(300));
    let output = terminal.output.lock().expect("output lock").clone();
    let plain = without_escapes(&String::from_utf8_lossy(&output));
    let gradings: Vec<&str> = plain.split("building and grading").collect();
    assert_eq!(gradings.len(), 3, "not two gradings: {plain:?}");
    assert!(
        gradings[1].contains("FAIL  pipe-echo/echo-0-bytes")
            && gradings[1].contains("watching labs/01-pipe-echo/src/"),
        "the first grading was not done and shown before the second began: {plain:?}"
    );
    terminal.type_keys(b"q");
    let (code, output) = terminal.finish(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{output}");
}

#[test]
fn watch_without_the_labs_sources_is_a_usage_error() {
    let scratch = Scratch::new(&[("pipe-echo", WAITS)]);
    let output = scratch
        .grade(&["--watch", "pipe-echo"])
        .output()
        .expect("the grader runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("there is no labs/NN-pipe-echo/src"),
        "{output:?}"
    );
}

#[test]
fn a_grader_built_in_one_checkout_grades_the_checkout_it_runs_in() {
    // A grader binary shared by checkouts (one CARGO_TARGET_DIR, or a copied target/) is this
    // one; the other checkout holds the reference solution where this one holds the skeleton.
    let here = ipc_grader::workspace_root().expect("the tests run in a workspace");
    let solution = compile::build(&here, Variant::Solutions, &["pipe-echo"])
        .remove("pipe-echo")
        .expect("pipe-echo was built")
        .expect("the solution builds");
    let other = tempfile::tempdir().expect("a temp dir");
    std::fs::write(
        other.path().join("Cargo.toml"),
        "[workspace]\nmembers = []\n",
    )
    .unwrap();
    std::fs::create_dir_all(other.path().join("grader")).unwrap();
    std::fs::write(other.path().join("grader/Cargo.toml"), "").unwrap();
    std::fs::create_dir_all(other.path().join("labs/01-pipe-echo/src")).unwrap();
    let bin = other.path().join("target/grade/labs/grade");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(&solution, bin.join("pipe-echo")).unwrap();
    let below = other.path().join("labs/01-pipe-echo/src");
    let output = Command::new(env!("CARGO_BIN_EXE_cargo-grade"))
        .args(["pipe-echo/echo-1-byte", "--format", "json"])
        .current_dir(&below)
        .env("IPC_LABS_PREBUILT", "1")
        .env_remove("IPC_LABS_WORKSPACE")
        .env_remove("CARGO_MANIFEST_DIR")
        .output()
        .expect("the grader runs");
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("the report is JSON");
    assert_eq!(
        report["workspace"].as_str().map(PathBuf::from),
        Some(other.path().to_path_buf()),
        "{report}"
    );
    assert_eq!(
        report["labs"][0]["checks"][0]["status"], "passed",
        "{report}"
    );
    // The same binary, run by `cargo run` in another checkout, grades that one.
    let output = Command::new(env!("CARGO_BIN_EXE_cargo-grade"))
        .args(["pipe-echo/echo-1-byte", "--format", "json"])
        .current_dir("/")
        .env("IPC_LABS_PREBUILT", "1")
        .env_remove("IPC_LABS_WORKSPACE")
        .env("CARGO_MANIFEST_DIR", other.path().join("grader"))
        .output()
        .expect("the grader runs");
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("the report is JSON");
    assert_eq!(
        report["workspace"].as_str().map(PathBuf::from),
        Some(other.path().to_path_buf()),
        "{report}"
    );
}
