#![allow(dead_code)] // each test binary uses its part
//! What the tests that build a copy of this workspace share (an exported template, the mutant
//! suite's scratch workspaces): their builds start from a build already made, so that a copy
//! compiles its own crates and not the registry crates again (the same, by the same lock file),
//! and the templates (the same grader each) compile their grader once between them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub fn workspace() -> PathBuf {
    ipc_grader::workspace_root().expect("the tests run in an ipc-labs workspace")
}

/// The `CARGO_TARGET_DIR` of the template at `template`, built by the test `name`. One per test,
/// so that tests building templates run side by side: cargo keys a package's build script output
/// by package, not by path, so two templates in one target directory would share it.
///
/// Every template test exports the same labs, so their graders are one build: on first use in
/// this process, the target directory receives a copy of the reference template's (built once,
/// see [`reference`]), and the files of `template`'s grader that are the reference's, byte for
/// byte, get the reference's modification times. Cargo then finds that build up to date, as in a
/// checkout moved with its target directory, and compiles again what differs, since a file
/// that differs keeps the time it was written.
pub fn template_target(name: &str, template: &Path) -> PathBuf {
    static SEEDED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    static AGED: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());
    let reference = reference();
    let target = workspace().join("target").join("template-tests").join(name);
    if SEEDED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(name.to_string())
    {
        // Fresh in each process: an older build here may be of other sources, timed after them.
        let _ = std::fs::remove_dir_all(&target);
        ipc_grader::deliver::batch::copy_tree(&reference.target, &target, &|relative| {
            relative.starts_with("debug/incremental")
        })
        .unwrap_or_else(|e| panic!("copying the reference build to {}: {e}", target.display()));
    }
    if AGED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(template.to_path_buf())
    {
        let grader = Path::new("grader");
        times_of_equal_files(&reference.template.join(grader), &template.join(grader));
    }
    target
}

/// The labs every template test exports.
pub const TEMPLATE_LABS: &str = "pipe-echo";

/// The reference template: this workspace exported with [`TEMPLATE_LABS`], its grader built.
pub struct Reference {
    pub template: PathBuf,
    pub target: PathBuf,
}

/// The reference template, exported and built on first use (the other tests wait for it). Its
/// files keep their times while their contents stay the same, so that a second run of the
/// tests builds nothing again.
pub fn reference() -> &'static Reference {
    static REFERENCE: std::sync::OnceLock<Reference> = std::sync::OnceLock::new();
    REFERENCE.get_or_init(|| {
        let root = workspace()
            .join("target")
            .join("template-tests")
            .join("reference");
        let exported = root.join("exported");
        let template = root.join("template");
        let target = root.join("target");
        let _ = std::fs::remove_dir_all(&exported);
        use assert_cmd::cargo::CommandCargoExt;
        let status = std::process::Command::cargo_bin("cargo-grade")
            .expect("the grader is built")
            .args(["export", "--labs", TEMPLATE_LABS])
            .arg(&exported)
            .env("IPC_LABS_WORKSPACE", workspace())
            .status()
            .expect("the grader runs");
        assert!(status.success(), "exporting the reference template failed");
        sync_tree(&exported, &template);
        copy_registry_builds(
            &workspace().join("target").join("debug"),
            &target.join("debug"),
        );
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let output = std::process::Command::new(cargo)
            .args(["build", "--locked", "--package", "ipc-grader"])
            .args(["--bin", "cargo-grade"])
            .current_dir(&template)
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("IPC_LABS_WORKSPACE")
            .env_remove("IPC_LABS_PREBUILT")
            .env_remove("CARGO_MANIFEST_DIR")
            .output()
            .expect("cargo runs");
        assert!(
            output.status.success(),
            "building the reference template's grader failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Reference { template, target }
    })
}

/// Makes `to` hold what `from` holds, writing only the files whose contents differ (the others
/// keep their times) and removing what `from` lacks.
fn sync_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("creating a directory");
    let names = |dir: &Path| -> BTreeSet<std::ffi::OsString> {
        std::fs::read_dir(dir)
            .map(|entries| entries.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default()
    };
    for gone in names(to).difference(&names(from)) {
        let path = to.join(gone);
        let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
    }
    for name in names(from) {
        let (source, copy) = (from.join(&name), to.join(&name));
        let kind = std::fs::symlink_metadata(&source)
            .expect("an entry")
            .file_type();
        if kind.is_dir() {
            if !copy.is_dir() {
                let _ = std::fs::remove_file(&copy);
            }
            sync_tree(&source, &copy);
        } else if kind.is_file() {
            let content = std::fs::read(&source).expect("reading an exported file");
            if std::fs::read(&copy).ok().as_deref() != Some(content.as_slice()) {
                let _ = std::fs::remove_dir_all(&copy);
                std::fs::write(&copy, &content).expect("writing a file");
            }
            let mode = std::fs::metadata(&source).expect("an entry").permissions();
            std::fs::set_permissions(&copy, mode).expect("setting a mode");
        }
    }
}

/// Gives each file under `to` whose content is that of the file at the same place under `from`
/// the time `from`'s was modified, and each directory whose entries have the same names its
/// time, deepest first (cargo compares a directory's time too, for a build script that watches
/// it).
fn times_of_equal_files(from: &Path, to: &Path) {
    let entries: Vec<walkdir::DirEntry> = walkdir::WalkDir::new(to)
        .contents_first(true)
        .into_iter()
        .filter_map(Result::ok)
        .collect();
    for entry in entries {
        let relative = entry.path().strip_prefix(to).expect("inside the tree");
        let reference = from.join(relative);
        let same = if entry.file_type().is_dir() {
            let names = |dir: &Path| -> Option<BTreeSet<std::ffi::OsString>> {
                let entries = std::fs::read_dir(dir).ok()?;
                Some(entries.flatten().map(|e| e.file_name()).collect())
            };
            names(&reference).is_some() && names(&reference) == names(entry.path())
        } else if entry.file_type().is_file() {
            std::fs::read(&reference).ok() == std::fs::read(entry.path()).ok()
        } else {
            false
        };
        let modified = std::fs::metadata(&reference).and_then(|m| m.modified());
        if let (true, Ok(modified), Ok(handle)) =
            (same, modified, std::fs::File::open(entry.path()))
        {
            let _ = handle.set_modified(modified);
        }
    }
}

/// Copies the registry crates' builds of the profile directory `from` (`target/debug`, say)
/// into the profile directory `to`, times kept, unless `to` exists. Without the copy, cargo
/// builds them again there: slower, not wrong.
pub fn copy_registry_builds(from: &Path, to: &Path) {
    if to.exists() || !from.is_dir() {
        return;
    }
    let workspace = workspace();
    let mut registry = registry_crates(&workspace.join("Cargo.lock"));
    registry.extend(registry_crates(
        &workspace.join("solutions").join("Cargo.lock"),
    ));
    let staged = to.with_extension("part");
    let _ = std::fs::remove_dir_all(&staged);
    // deps/, build/ and .fingerprint/ name each unit after its crate, with a hash.
    let result = ipc_grader::deliver::batch::copy_tree(from, &staged, &|relative| {
        let mut parts = relative.components();
        let top = parts
            .next()
            .map(|c| c.as_os_str().to_string_lossy().into_owned());
        match (top.as_deref(), parts.next()) {
            (Some("deps" | "build" | ".fingerprint"), None) => false,
            (Some("deps" | "build" | ".fingerprint"), Some(unit)) => {
                let unit = unit.as_os_str().to_string_lossy();
                !registry.contains(&crate_of(&unit))
            }
            _ => true,
        }
    });
    if result.is_ok() {
        let _ = std::fs::rename(&staged, to);
    }
}

/// Gives the template at `template` a copy of this workspace's builds of the labs' programs.
pub fn start_lab_builds(template: &Path) {
    ipc_grader::deliver::batch::copy_lab_builds(&workspace(), template)
        .expect("copying the labs' builds into the template");
}

/// The crates of the lock file `lock` that come from a registry, with `-` written `_`.
fn registry_crates(lock: &Path) -> BTreeSet<String> {
    let lock = std::fs::read_to_string(lock).unwrap_or_default();
    let mut crates = BTreeSet::new();
    for package in lock.split("[[package]]") {
        let field = |key: &str| {
            package.lines().find_map(|line| {
                let value = line.strip_prefix(key)?.trim().strip_prefix('=')?.trim();
                Some(value.trim_matches('"').to_string())
            })
        };
        if let (Some(name), Some(source)) = (field("name"), field("source"))
            && source.starts_with("registry+")
        {
            crates.insert(name.replace('-', "_"));
        }
    }
    crates
}

/// The crate a unit's file or directory is named after: `libserde_json-0a1b.rlib` and
/// `serde-json-0a1b` both give `serde_json`.
fn crate_of(unit: &str) -> String {
    let stem = unit.split('.').next().unwrap_or(unit);
    let name = stem.rsplit_once('-').map_or(stem, |(name, _hash)| name);
    let name = name.replace('-', "_");
    // `liblibc-…` is libc's library; `libc-…` its dep-info.
    match name.strip_prefix("lib") {
        Some(rest)
            if unit.ends_with(".rlib") || unit.ends_with(".rmeta") || unit.ends_with(".so") =>
        {
            rest.to_string()
        }
        _ => name,
    }
}
