#![allow(dead_code)] // each test binary uses its part
//! What the tests that build a copy of this workspace share (an exported template, the mutant
//! suite's scratch workspaces): their builds start from this workspace's own, so that a copy
//! compiles its own crates and not the registry crates again (the same, by the same lock file).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub fn workspace() -> PathBuf {
    ipc_grader::workspace_root().expect("the tests run in an ipc-labs workspace")
}

/// The `CARGO_TARGET_DIR` of the templates built by the test `name`: on first use, it receives
/// a copy of this workspace's dev-profile build of the registry crates. One per test, so that
/// tests building templates run side by side: cargo keys a package's build script output by
/// package, not by path, so two templates in one target directory would share it.
pub fn template_target(name: &str) -> PathBuf {
    static SEEDED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let target = workspace().join("target").join("template-tests").join(name);
    let mut seeded = SEEDED.lock().unwrap_or_else(|e| e.into_inner());
    if seeded.insert(name.to_string()) {
        copy_registry_builds(
            &workspace().join("target").join("debug"),
            &target.join("debug"),
        );
    }
    target
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
