//! `cargo grade export DIR --classroom50 CONFIG_DIR`: the files an instructor puts into the
//! Classroom 50 config repository, in the assignment's folder: `autograder.py` (grades the
//! student's checkout with `cargo grade --write classroom50=result.json`), `labs` (what it
//! grades), `runtime.json` (the runtime settings that install Rust) and `HOWTO.md`.

use std::path::{Path, PathBuf};

/// Where the static files are kept in the workspace.
pub const TEMPLATE: &str = "grader/template/classroom50";
/// The static files, copied as they are.
const FILES: &[&str] = &["autograder.py", "runtime.json", "HOWTO.md"];
/// The file beside `autograder.py` that lists the labs graded.
const LABS: &str = "labs";

/// Why the config files were not written.
#[derive(Debug, thiserror::Error)]
pub enum Classroom50Error {
    #[error("{0} exists; --force replaces it")]
    Exists(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The files [`write`] writes into `config_dir`.
fn targets(config_dir: &Path) -> impl Iterator<Item = PathBuf> + '_ {
    FILES
        .iter()
        .chain(std::iter::once(&LABS))
        .map(|name| config_dir.join(name))
}

/// Refuses, before anything is exported, to overwrite config files without `force`.
pub fn check(config_dir: &Path, force: bool) -> Result<(), Classroom50Error> {
    match targets(config_dir).find(|path| path.symlink_metadata().is_ok()) {
        Some(existing) if !force => Err(Classroom50Error::Exists(existing)),
        _ => Ok(()),
    }
}

/// Writes the config files of an assignment grading `labs` into `config_dir`.
pub fn write(
    workspace: &Path,
    config_dir: &Path,
    labs: &[&str],
    force: bool,
) -> Result<Vec<PathBuf>, Classroom50Error> {
    use std::os::unix::fs::PermissionsExt;
    check(config_dir, force)?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Classroom50Error::Io { path, source }
    };
    std::fs::create_dir_all(config_dir).map_err(io(config_dir))?;
    let mut written = Vec::new();
    for name in FILES {
        let from = workspace.join(TEMPLATE).join(name);
        let to = config_dir.join(name);
        std::fs::copy(&from, &to).map_err(io(&from))?;
        let mode = if name.ends_with(".py") { 0o755 } else { 0o644 };
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode)).map_err(io(&to))?;
        written.push(to);
    }
    let to = config_dir.join(LABS);
    std::fs::write(&to, format!("{}\n", labs.join(" "))).map_err(io(&to))?;
    written.push(to);
    Ok(written)
}
