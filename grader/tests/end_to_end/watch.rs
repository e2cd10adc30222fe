//! `cargo grade --watch` as a student uses it, on a terminal: the first result, a save that
//! does not compile, a save that passes, then `q`; in a copy of the workspace, so that the real
//! labs are never touched.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rexpect::process::wait::WaitStatus;

/// Copies what a build of the labs needs: the workspace's sources, and the labs' build
/// directory when there is one (so that only the lab itself is compiled again).
fn copy_workspace(to: &Path) {
    let here = ipc_grader::workspace_root().expect("the tests run in a workspace");
    for item in ["Cargo.toml", "Cargo.lock", ".cargo", "labs", "grader"] {
        copy(&here.join(item), to);
    }
    let _ = std::fs::remove_dir_all(to.join("grader").join("target"));
    let built = here.join("target").join("grade").join("labs");
    if built.is_dir() {
        std::fs::create_dir_all(to.join("target").join("grade")).expect("target/grade");
        copy(&built, &to.join("target").join("grade"));
    }
}

fn copy(from: &Path, into: &Path) {
    let status = Command::new("cp")
        .arg("-r")
        .arg(from)
        .arg(into)
        .status()
        .expect("cp runs");
    assert!(status.success(), "copying {}", from.display());
}

/// The processes still in the session the grader led, or running from the copy.
fn leftovers(session: i32, copy: &Path) -> Vec<String> {
    let copy = copy.to_string_lossy().to_string();
    procfs::process::all_processes()
        .expect("/proc")
        .flatten()
        .filter_map(|process| {
            let stat = process.stat().ok()?;
            let cmdline = process.cmdline().unwrap_or_default().join(" ");
            let cwd = process.cwd().map(|c| c.display().to_string());
            let ours = stat.session == session
                || cmdline.contains(&copy)
                || cwd.is_ok_and(|c| c.starts_with(&copy));
            ours.then(|| format!("pid {} ({cmdline})", stat.pid))
        })
        .collect()
}

#[test]
fn watch_regrades_on_save_shows_compiler_errors_and_leaves_on_q() {
    let copy = tempfile::tempdir().expect("a temp dir");
    copy_workspace(copy.path());
    let lib = copy.path().join("labs/01-pipe-echo/src/lib.rs");
    let skeleton = std::fs::read_to_string(&lib).expect("the skeleton");
    let solution = ipc_grader::workspace_root()
        .expect("the workspace")
        .join("solutions/01-pipe-echo/src/lib.rs");

    let mut command = Command::new(env!("CARGO_BIN_EXE_cargo-grade"));
    command
        .args(["--watch", "pipe-echo/echo-0-bytes", "--seed", "1"])
        .current_dir(copy.path())
        .env("IPC_LABS_WORKSPACE", copy.path())
        .env("NO_COLOR", "1")
        .env_remove("IPC_LABS_PREBUILT")
        .env_remove("CARGO_MANIFEST_DIR");
    // Long enough for the first build of the lab on a loaded machine.
    let mut grader = rexpect::session::spawn_command(command, Some(300_000)).expect("a pty");
    let session = grader.process().child_pid.as_raw();

    grader
        .exp_string("TODO  pipe-echo/echo-0-bytes")
        .expect("the skeleton's first result");
    grader
        .exp_string("watching labs/01-pipe-echo/src/")
        .expect("the watch prompt");

    std::fs::write(&lib, format!("{skeleton}\nfn broken( {{\n")).expect("a save");
    grader
        .exp_string("the lab does not compile")
        .expect("the compiler's message at once");
    let shown = grader
        .exp_string("watching labs/01-pipe-echo/src/")
        .expect("the watch prompt again");
    assert!(
        !shown.contains("pipe-echo/echo-0-bytes"),
        "checks ran on a lab that does not compile:\n{shown}"
    );
    // The compiler's own message, with the place of the error, not just that it failed.
    assert!(
        shown.contains("error") && shown.contains("src/lib.rs:"),
        "no compiler message:\n{shown}"
    );

    std::fs::copy(&solution, &lib).expect("a save of a working lib.rs");
    let shown = grader
        .exp_string("PASS  pipe-echo/echo-0-bytes")
        .expect("the new result");
    assert!(!shown.contains("TODO  "), "{shown}");
    grader
        .exp_string("watching labs/01-pipe-echo/src/")
        .expect("the watch prompt again");
    // Without a save, the result stays: the compiler reading the sources is no save.
    let mut after = String::new();
    let quiet_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < quiet_until {
        match grader.try_read() {
            Some(c) => after.push(c),
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    assert!(
        !after.contains("building and grading"),
        "graded again without a save: {after}"
    );

    grader.send("q").expect("q");
    grader.flush().expect("flush");
    let until = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = grader.process().status()
            && status != WaitStatus::StillAlive
        {
            break status;
        }
        assert!(Instant::now() < until, "q did not end the grader");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        matches!(status, WaitStatus::Exited(_, 0)),
        "q ended the grader with {status:?}"
    );
    let left = leftovers(session, copy.path());
    assert!(left.is_empty(), "left running: {left:?}");
}
