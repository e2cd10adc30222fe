//! Copies of directory trees for the batch's pristine workspaces, readable by every user (the
//! programs may be built and run as another), with their files' modification times kept: cargo
//! then finds the copied build up to date, and rebuilds only the labs a submission replaced.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// What a pristine workspace leaves out of this one: the builds, the reference solutions, the
/// version history and the mutant suite (wrong solutions, of no use to grading).
const LEFT_OUT: &[&str] = &["target", "solutions", ".git", "grader/tests/mutants"];

/// Copies `from` into `to` (created), but the entries `skip` names by their path relative to
/// `from`. Directories become mode 755, files 755 or 644 as they were executable or not.
pub fn copy_tree(from: &Path, to: &Path, skip: &dyn Fn(&Path) -> bool) -> std::io::Result<()> {
    let walk = walkdir::WalkDir::new(from)
        .follow_links(false)
        .into_iter()
        .filter_entry(|entry| {
            entry
                .path()
                .strip_prefix(from)
                .map(|relative| relative.as_os_str().is_empty() || !skip(relative))
                .unwrap_or(false)
        });
    for entry in walk {
        let entry = entry.map_err(std::io::Error::other)?;
        let relative = entry.path().strip_prefix(from).expect("inside the tree");
        let target = to.join(relative);
        let kind = entry.file_type();
        if kind.is_dir() {
            std::fs::create_dir_all(&target)?;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &target)?;
        } else if kind.is_file() {
            let meta = entry.metadata().map_err(std::io::Error::other)?;
            std::fs::copy(entry.path(), &target)?;
            let mode = if meta.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            };
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))?;
            let file = std::fs::File::options().write(true).open(&target)?;
            file.set_modified(meta.modified()?)?;
        }
    }
    // A directory's time changed as its entries were made: set last, deepest first.
    let mut dirs: Vec<walkdir::DirEntry> = walkdir::WalkDir::new(from)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_dir())
        .collect();
    dirs.reverse();
    for dir in dirs {
        let relative = dir.path().strip_prefix(from).expect("inside the tree");
        let target = to.join(relative);
        if let (Ok(meta), Ok(handle)) = (dir.metadata(), std::fs::File::open(&target))
            && let Ok(modified) = meta.modified()
        {
            let _ = handle.set_modified(modified);
        }
    }
    Ok(())
}

/// A pristine workspace at `to`: this `workspace` without what [`LEFT_OUT`] names, and with a
/// copy of the labs' builds under `target/grade/` when there are some, so that the first build
/// of the batch compiles only what they lack.
pub fn pristine_copy(workspace: &Path, to: &Path) -> std::io::Result<()> {
    copy_tree(workspace, to, &|relative| {
        LEFT_OUT.iter().any(|left| relative == Path::new(left))
    })?;
    copy_lab_builds(workspace, to)
}

/// Copies `workspace`'s builds of the labs' programs (`target/grade/labs*/`, their profile
/// only) into the workspace `to`, times kept: a build there then compiles only the crates
/// that differ, not the dependencies again.
pub fn copy_lab_builds(workspace: &Path, to: &Path) -> std::io::Result<()> {
    let builds = workspace.join("target").join("grade");
    let Ok(entries) = std::fs::read_dir(&builds) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        // labs/ and labs-as-USER/: the builds of the labs' crates, which submissions replace.
        if name.to_string_lossy().starts_with("labs") && entry.path().is_dir() {
            // Only the programs' profile: the unit tests' builds are of no use here.
            copy_tree(
                &entry.path(),
                &to.join("target").join("grade").join(&name),
                &|relative| {
                    relative.components().count() == 1
                        && relative != Path::new(crate::engine::compile::PROFILE)
                        && !relative.to_string_lossy().starts_with('.')
                        && relative.extension().is_none()
                },
            )?;
        }
    }
    Ok(())
}

/// Makes `dir` enterable and readable by every user (mode 755).
pub fn open_to_all(dir: &Path) -> std::io::Result<()> {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
}

/// Creates `dir` as a temporary directory every user may write in (mode 1777, as `/tmp`).
pub fn make_tmp(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o1777))
}
