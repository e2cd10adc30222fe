//! Building the lab programs that are graded: `labs/` (the student's) or `solutions/`.
//!
//! Each variant has a target directory of its own under `target/grade/`, because a lab and its
//! solution are packages of the same name. A lab that does not compile costs that lab only.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::run::RunAs;

/// Which sources are graded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// `labs/`: the student's work.
    Labs,
    /// `solutions/`: the reference solutions.
    Solutions,
}

impl Variant {
    pub fn dir(self) -> &'static str {
        match self {
            Variant::Labs => "labs",
            Variant::Solutions => "solutions",
        }
    }
}

/// The cargo profile lab programs are built with (see the workspace's `Cargo.toml`).
pub const PROFILE: &str = "grade";

/// Set to use the programs already built under `target/grade/` without running cargo (for
/// running the grader where cargo is not available, such as as another user).
pub const PREBUILT_ENV: &str = "IPC_LABS_PREBUILT";

/// How the message of every check of a lab that does not compile begins.
pub const DOES_NOT_COMPILE: &str = "the lab does not compile";

/// The program of each lab, or why it could not be built.
pub type Programs = BTreeMap<&'static str, Result<PathBuf, String>>;

/// The directory of `slug`'s crate under `labs/` or `solutions/`: `NN-slug` or `slug`.
pub fn crate_dir(workspace: &Path, variant: Variant, slug: &str) -> Option<PathBuf> {
    let entries = std::fs::read_dir(workspace.join(variant.dir())).ok()?;
    entries.flatten().map(|e| e.path()).find(|path| {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let stripped = name.trim_start_matches(|c: char| c.is_ascii_digit() || c == '-');
        (name == slug || stripped == slug) && path.join("Cargo.toml").is_file()
    })
}

/// Where the programs of `variant` are built (and the labs' unit tests run by the tests).
pub fn target_dir(workspace: &Path, variant: Variant) -> PathBuf {
    workspace.join("target").join("grade").join(variant.dir())
}

/// What cargo says it is building (`Compiling nix v0.32.0`), line by line, for a progress
/// display.
pub type OnProgress<'a> = &'a (dyn Fn(&str) + Sync);

/// Builds the programs of `slugs`, in the variant's directory under `target/grade/`.
pub fn build(workspace: &Path, variant: Variant, slugs: &[&'static str]) -> Programs {
    build_reporting(workspace, variant, slugs, None, &|_| {})
}

/// [`build`], as the user `builder` when one is given (the student's build scripts and
/// procedural macros then run as that user, never as the grader's), telling `progress` what
/// cargo is compiling.
pub fn build_reporting(
    workspace: &Path,
    variant: Variant,
    slugs: &[&'static str],
    builder: Option<&RunAs>,
    progress: OnProgress,
) -> Programs {
    let Some(user) = builder else {
        let target = target_dir(workspace, variant);
        return build_in(workspace, variant, slugs, &target, None, progress);
    };
    // A target directory of the user's own: it writes there, and nowhere else of the checkout.
    let target =
        workspace
            .join("target")
            .join("grade")
            .join(format!("{}-as-{}", variant.dir(), user.name));
    if let Err(error) = give_to(&target, user) {
        let why = format!("cannot give {} to {}: {error}", target.display(), user.name);
        return slugs.iter().map(|&slug| (slug, Err(why.clone()))).collect();
    }
    build_in(workspace, variant, slugs, &target, Some(user), progress)
}

/// Creates `dir` (and what leads to it) and makes it, and all it holds, `user`'s.
fn give_to(dir: &Path, user: &RunAs) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        std::os::unix::fs::lchown(&path, Some(user.uid), Some(user.gid))?;
        if path.is_dir() && !path.is_symlink() {
            for entry in std::fs::read_dir(&path)?.flatten() {
                stack.push(entry.path());
            }
        }
    }
    Ok(())
}

/// The cargo the grader runs: the one that ran it (`CARGO`), or the first on `PATH`.
pub fn cargo_program() -> PathBuf {
    if let Some(cargo) = std::env::var_os("CARGO") {
        return cargo.into();
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("cargo"))
                .find(|candidate| candidate.is_file())
        })
        .unwrap_or_else(|| "cargo".into())
}

/// `CARGO_HOME` and `RUSTUP_HOME`, as cargo and rustup find them (under `$HOME` when unset).
fn toolchain_homes() -> [(&'static str, PathBuf); 2] {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let dir = |var: &str, default: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(default))
    };
    [
        ("CARGO_HOME", dir("CARGO_HOME", ".cargo")),
        ("RUSTUP_HOME", dir("RUSTUP_HOME", ".rustup")),
    ]
}

/// Why `user` could not build the workspace's programs: a directory of the toolchain or of the
/// workspace it cannot enter. `None` when it can, or when nothing is built.
pub fn cannot_build_as(user: &RunAs, workspace: &Path) -> Option<String> {
    if prebuilt() {
        return None;
    }
    let mut places: Vec<PathBuf> = toolchain_homes()
        .into_iter()
        .map(|(_, dir)| dir)
        .filter(|dir| dir.is_dir())
        .collect();
    if let Some(dir) = cargo_program()
        .canonicalize()
        .ok()
        .and_then(|c| c.parent().map(Path::to_path_buf))
    {
        places.push(dir);
    }
    places.push(workspace.to_path_buf());
    places.iter().find_map(|place| {
        user.cannot_reach(place).map(|why| {
            format!(
                "--run-as {name}: the student's code is built as {name} too, so that its build \
                 scripts and procedural macros never run as root, but {why}. Install a Rust \
                 toolchain {name} can run (for example with RUSTUP_HOME and CARGO_HOME under \
                 /opt, readable by all) and keep the checkout where {name} can read it; or build \
                 first as an unprivileged user and grade those programs with {PREBUILT_ENV}=1",
                name = user.name
            )
        })
    })
}

/// Makes `command` (cargo) run as `user`, offline, with the grader's toolchain and a home of
/// its own inside `target`.
fn run_as_builder(command: &mut Command, user: &RunAs, target: &Path) {
    use std::os::unix::process::CommandExt;
    let home = target.join("home");
    let _ = std::fs::create_dir_all(&home);
    let _ = std::os::unix::fs::chown(&home, Some(user.uid), Some(user.gid));
    command.arg("--offline").env("HOME", &home);
    for (var, dir) in toolchain_homes() {
        command.env(var, dir);
    }
    let (uid, gid) = (user.uid, user.gid);
    // SAFETY: between fork and exec only async-signal-safe calls are made.
    unsafe {
        command.pre_exec(move || {
            nix::unistd::setgroups(&[])?;
            nix::unistd::setgid(nix::unistd::Gid::from_raw(gid))?;
            nix::unistd::setuid(nix::unistd::Uid::from_raw(uid))?;
            Ok(())
        });
    }
}

/// Whether the programs are taken as already built (`IPC_LABS_PREBUILT`), not built by cargo.
pub fn prebuilt() -> bool {
    std::env::var_os(PREBUILT_ENV).is_some()
}

/// Builds the programs of `slugs` in the target directory `target`, as `builder` if given.
pub fn build_in(
    workspace: &Path,
    variant: Variant,
    slugs: &[&'static str],
    target: &Path,
    builder: Option<&RunAs>,
    progress: OnProgress,
) -> Programs {
    let target = target.to_path_buf();
    if prebuilt() {
        return slugs
            .iter()
            .map(|&slug| {
                let path = target.join(PROFILE).join(slug);
                let found = if path.is_file() {
                    Ok(path)
                } else {
                    Err(format!(
                        "{PREBUILT_ENV} is set but {} is missing",
                        path.display()
                    ))
                };
                (slug, found)
            })
            .collect();
    }
    let mut programs = Programs::new();
    let present: Vec<&'static str> = slugs
        .iter()
        .copied()
        .filter(|slug| {
            let found = crate_dir(workspace, variant, slug).is_some();
            if !found {
                let missing = format!("there is no {}/NN-{slug} crate to build", variant.dir());
                programs.insert(slug, Err(missing));
            }
            found
        })
        .collect();
    if present.is_empty() {
        return programs;
    }
    // One cargo run for all: fast when everything compiles.
    match cargo_build(workspace, variant, &present, &target, builder, progress) {
        Ok(built) => {
            for slug in &present {
                let result = built
                    .get(*slug)
                    .cloned()
                    .ok_or_else(|| format!("cargo built no program named {slug}"));
                programs.insert(slug, result);
            }
        }
        // Something does not compile: build each alone to tell which.
        Err(_) if present.len() > 1 => {
            for slug in present {
                let result = cargo_build(workspace, variant, &[slug], &target, builder, progress)
                    .and_then(|built| {
                        built
                            .get(slug)
                            .cloned()
                            .ok_or_else(|| format!("cargo built no program named {slug}"))
                    });
                programs.insert(slug, result);
            }
        }
        Err(error) => {
            programs.insert(present[0], Err(error));
        }
    }
    programs
}

/// The lock a build in `target` holds: one cargo at a time in a target directory (two would
/// only wait for each other's file locks), while builds in different ones run side by side.
fn target_lock(target: &Path) -> std::sync::Arc<std::sync::Mutex<()>> {
    type Locks = BTreeMap<PathBuf, std::sync::Arc<std::sync::Mutex<()>>>;
    static LOCKS: std::sync::Mutex<Locks> = std::sync::Mutex::new(BTreeMap::new());
    LOCKS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(target.to_path_buf())
        .or_default()
        .clone()
}

/// Runs cargo; on success, the executable of each package built.
fn cargo_build(
    workspace: &Path,
    variant: Variant,
    slugs: &[&str],
    target: &Path,
    builder: Option<&RunAs>,
    progress: OnProgress,
) -> Result<BTreeMap<String, PathBuf>, String> {
    let manifest = match variant {
        Variant::Labs => workspace.join("Cargo.toml"),
        Variant::Solutions => workspace.join("solutions").join("Cargo.toml"),
    };
    let mut command = Command::new(cargo_program());
    command
        .arg("build")
        .arg("--manifest-path")
        .arg(&manifest)
        .args([
            "--profile",
            PROFILE,
            "--message-format",
            "json-render-diagnostics",
        ])
        .arg("--target-dir")
        .arg(target)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for slug in slugs {
        command.args(["--package", slug, "--bin", slug]);
    }
    if let Some(user) = builder {
        run_as_builder(&mut command, user, target);
    }
    let lock = target_lock(target);
    let _one_at_a_time = lock.lock().unwrap_or_else(|e| e.into_inner());
    let mut child =
        super::process::spawn_helper(&mut command).map_err(|e| format!("cannot run cargo: {e}"))?;
    let pid = child.id();
    let stderr = child.stderr.take().expect("piped");
    let built = std::thread::scope(|scope| {
        // cargo's stderr: its progress, passed on as it comes, and its errors, kept.
        let errors = scope.spawn(|| {
            let mut kept = Vec::new();
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let status = line.trim_start();
                if status.starts_with("Compiling") || status.starts_with("Blocking") {
                    progress(status);
                } else {
                    kept.push(line);
                }
            }
            kept
        });
        let mut built = BTreeMap::new();
        let stdout = child.stdout.take().expect("piped");
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if message["reason"] != "compiler-artifact" {
                continue;
            }
            if let (Some(name), Some(executable)) = (
                message["target"]["name"].as_str(),
                message["executable"].as_str(),
            ) {
                built.insert(name.to_string(), PathBuf::from(executable));
            }
        }
        (built, errors.join().unwrap_or_default())
    });
    let status = child.wait();
    super::process::forget(pid);
    let status = status.map_err(|e| format!("cargo: {e}"))?;
    let (built, errors) = built;
    if status.success() {
        Ok(built)
    } else {
        let errors: Vec<&str> = errors.iter().map(String::as_str).take(60).collect();
        Err(format!(
            "{DOES_NOT_COMPILE} (cargo exited with {status}):\n{}",
            errors.join("\n")
        ))
    }
}
