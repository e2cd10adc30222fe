//! The ipc-labs grader: the engine, the checks of every lab, and what `cargo grade` does.

pub mod cli;
pub mod deliver;
pub mod engine;
pub mod labs;
pub mod report;
pub mod skeleton;

/// Why no workspace to grade was found.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("IPC_LABS_WORKSPACE names {0}, which is not a directory")]
    NotAWorkspace(std::path::PathBuf),
    #[error(
        "no ipc-labs workspace here: run cargo grade inside a checkout (a directory with \
         Cargo.toml, grader/ and labs/, or below one), or set IPC_LABS_WORKSPACE"
    )]
    NotFound,
}

/// The workspace to grade, found when the grader runs, never fixed when it is compiled (a
/// shared `CARGO_TARGET_DIR` or a copied `target/` would make one checkout grade another's
/// labs): `IPC_LABS_WORKSPACE` if set; else the workspace of the grader crate that `cargo run`
/// ran (cargo passes its directory as `CARGO_MANIFEST_DIR`); else the nearest directory, from the
/// current one upward, that is an ipc-labs workspace.
pub fn workspace_root() -> Result<std::path::PathBuf, WorkspaceError> {
    use std::path::Path;
    if let Some(root) = std::env::var_os("IPC_LABS_WORKSPACE") {
        let root = std::path::PathBuf::from(root);
        return if root.is_dir() {
            Ok(root)
        } else {
            Err(WorkspaceError::NotAWorkspace(root))
        };
    }
    if let Some(manifest_dir) = std::env::var_os("CARGO_MANIFEST_DIR")
        && let Some(root) = Path::new(&manifest_dir).parent()
        && is_workspace(root)
    {
        return Ok(root.to_path_buf());
    }
    let here = std::env::current_dir().map_err(|_| WorkspaceError::NotFound)?;
    here.ancestors()
        .find(|dir| is_workspace(dir))
        .map(Path::to_path_buf)
        .ok_or(WorkspaceError::NotFound)
}

/// Whether `dir` is the root of an ipc-labs workspace.
fn is_workspace(dir: &std::path::Path) -> bool {
    dir.join("grader").join("Cargo.toml").is_file()
        && dir.join("labs").is_dir()
        && std::fs::read_to_string(dir.join("Cargo.toml")).is_ok_and(|t| t.contains("[workspace]"))
}
