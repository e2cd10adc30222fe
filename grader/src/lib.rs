//! The ipc-labs grader: the engine, the checks of every lab, and what `cargo grade` does.

pub mod cli;
pub mod engine;
pub mod labs;
pub mod report;
pub mod skeleton;

/// The workspace this grader belongs to: `IPC_LABS_WORKSPACE` if set, else the parent of the
/// grader crate's directory.
pub fn workspace_root() -> std::path::PathBuf {
    if let Some(root) = std::env::var_os("IPC_LABS_WORKSPACE") {
        return root.into();
    }
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the grader crate sits inside the workspace")
        .to_path_buf()
}
