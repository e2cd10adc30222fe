//! `cargo grade export DIR`: a fresh git repository for students, the template of their
//! assignment: the lab skeletons, the grader, the handouts, a student README and a GitHub
//! Actions workflow that grades each push. Nothing of the solutions goes in: no `solutions/`, no
//! mutants, no CI of this repository, and of the grader's tests only those that need no
//! solutions ([`STUDENT_TESTS`]).
//!
//! The export is deterministic: the same workspace gives the same files and the same git tree
//! (only the commit's date differs).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use sha2::{Digest, Sha256};

use crate::engine::compile::{self, Variant};

/// The static files of the student repository, kept where they are in it (`README.md`,
/// `.gitignore`, `.github/workflows/classroom.yml`, ...). Not exported as part of the grader.
pub const STUDENT_TEMPLATE: &str = "grader/template/student";
/// The SHA-256 of every file of the grader, `.cargo/`, the root `Cargo.toml` and the workflow,
/// in `sha256sum` format (byte-sorted paths): the workflow recomputes them to see what changed.
pub const MANIFEST: &str = ".github/grader.sha256";
/// The workflow that grades each push in the student repository.
pub const WORKFLOW: &str = ".github/workflows/classroom.yml";
/// The grader's integration tests that belong in the template: they need no `solutions/`, and
/// pass once every lab is correct (`checks.rs` wants every check to pass on `labs/` when there
/// is no `solutions/`). The others test this repository and need its solutions and mutants.
pub const STUDENT_TESTS: &[&str] = &["checks.rs", "control_descriptor.rs"];
/// Directories of the grader that are for instructors only: the templates, the mutant scripts.
const INSTRUCTOR_ONLY: &[&str] = &["grader/template", "grader/scripts"];
/// The message of the template's single commit.
const COMMIT_MESSAGE: &str = "The labs, the grader and the handouts";

/// What to export.
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// The labs to export, by slug; every lab if empty.
    pub labs: Vec<String>,
    /// Replace the destination if it exists and is not empty.
    pub force: bool,
}

/// What was exported.
#[derive(Debug)]
pub struct Exported {
    /// The labs, in course order.
    pub labs: Vec<&'static str>,
    /// How many files the repository holds.
    pub files: usize,
    /// The id of its commit.
    pub commit: String,
}

/// Why an export failed. Usage errors ([`ExportError::is_usage`]) are found before anything is
/// written; on any error the destination is left as it was.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("unknown lab `{0}`; the labs are: {1}")]
    UnknownLab(String, String),
    #[error("{0} exists and is not empty; --force replaces it")]
    NotEmpty(PathBuf),
    #[error("{0} holds the workspace being exported; choose a directory outside it")]
    HoldsWorkspace(PathBuf),
    #[error("lab `{0}` has no crate under labs/")]
    NoCrate(String),
    #[error("{0} is missing: export from the instructors' repository, not from a student's copy")]
    NoTemplate(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: a file name that is not UTF-8 cannot go into the manifest")]
    NotUtf8(PathBuf),
    #[error("{path}: {source}")]
    Toml {
        path: PathBuf,
        source: toml_edit::TomlError,
    },
    #[error("git {args} failed: {why}")]
    Git { args: String, why: String },
    #[error("cargo could not fit Cargo.lock to the template's labs: {0}")]
    Lock(String),
}

impl ExportError {
    /// Whether the command line asked for something impossible (exit status 2).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            ExportError::UnknownLab(..) | ExportError::NotEmpty(_) | ExportError::HoldsWorkspace(_)
        )
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
    move |source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `cargo grade export`'s arguments.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// The directory to create: a new git repository with one commit.
    pub dir: PathBuf,
    /// Only these labs (comma-separated slugs, e.g. `pipe-echo,sysv-shm`); all if not given.
    #[arg(long, value_delimiter = ',', value_name = "LAB,...")]
    pub labs: Vec<String>,
    /// Replace DIR if it exists and is not empty.
    #[arg(long)]
    pub force: bool,
    /// Also write the Classroom 50 config files of the assignment (autograder.py, runtime
    /// settings, HOWTO.md) into this directory.
    #[arg(long, value_name = "CONFIG_DIR")]
    pub classroom50: Option<PathBuf>,
}

/// Runs `cargo grade export`.
pub fn command(args: ExportArgs) -> ExitCode {
    let options = ExportOptions {
        labs: args.labs,
        force: args.force,
    };
    let exported = crate::workspace_root()
        .map_err(|error| (2, error.to_string()))
        .and_then(|workspace| {
            if let Some(config) = &args.classroom50 {
                super::classroom50::check(config, args.force).map_err(|e| (2, e.to_string()))?;
            }
            let exported = export(&workspace, &args.dir, &options)
                .map_err(|error| (if error.is_usage() { 2 } else { 1 }, error.to_string()))?;
            if let Some(config) = &args.classroom50 {
                super::classroom50::write(&workspace, config, &exported.labs, args.force)
                    .map_err(|e| (1, e.to_string()))?;
                println!(
                    "wrote the Classroom 50 config files to {}",
                    config.display()
                );
            }
            Ok(exported)
        });
    match exported {
        Ok(exported) => {
            println!(
                "exported {} ({} files, commit {}) to {}",
                exported.labs.join(", "),
                exported.files,
                exported.commit,
                args.dir.display()
            );
            ExitCode::SUCCESS
        }
        Err((status, message)) => {
            eprintln!("cargo grade export: {message}");
            ExitCode::from(status)
        }
    }
}

/// One file of the template.
struct File {
    bytes: Vec<u8>,
    executable: bool,
}

/// Writes the student repository of `workspace` to `dest`: built beside it, committed, then
/// moved into place, so that a failure leaves `dest` as it was.
pub fn export(
    workspace: &Path,
    dest: &Path,
    options: &ExportOptions,
) -> Result<Exported, ExportError> {
    let labs = select(&options.labs)?;
    check_destination(workspace, dest, options.force)?;
    let files = template_files(workspace, &labs)?;
    let parent = match dest.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let staging = tempfile::Builder::new()
        .prefix(".ipc-labs-export-")
        .tempdir_in(parent)
        .map_err(io(parent))?;
    for (name, file) in &files {
        let path = staging.path().join(name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        std::fs::write(&path, &file.bytes).map_err(io(&path))?;
        let mode = if file.executable { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(io(&path))?;
    }
    settle_lock(staging.path())?;
    // The staging directory is private (0700); the repository is not.
    std::fs::set_permissions(staging.path(), std::fs::Permissions::from_mode(0o755))
        .map_err(io(staging.path()))?;
    let commit = commit(staging.path())?;
    if dest.is_dir() {
        std::fs::remove_dir_all(dest).map_err(io(dest))?;
    } else if dest.symlink_metadata().is_ok() {
        std::fs::remove_file(dest).map_err(io(dest))?;
    }
    let staged = staging.keep();
    std::fs::rename(&staged, dest).map_err(io(dest))?;
    Ok(Exported {
        labs: labs.iter().map(|l| l.slug).collect(),
        files: files.len(),
        commit,
    })
}

/// The labs named, in course order; every lab if none is.
fn select(names: &[String]) -> Result<Vec<&'static crate::engine::Lab>, ExportError> {
    let all = crate::labs::all();
    if names.is_empty() {
        return Ok(all);
    }
    let mut chosen: Vec<&'static crate::engine::Lab> = Vec::new();
    for name in names {
        let lab = crate::labs::find(name).ok_or_else(|| {
            let known: Vec<&str> = all.iter().map(|l| l.slug).collect();
            ExportError::UnknownLab(name.clone(), known.join(", "))
        })?;
        if !chosen.iter().any(|l| std::ptr::eq(*l, lab)) {
            chosen.push(lab);
        }
    }
    chosen.sort_by_key(|l| l.number);
    Ok(chosen)
}

fn check_destination(workspace: &Path, dest: &Path, force: bool) -> Result<(), ExportError> {
    let occupied = match std::fs::read_dir(dest) {
        Ok(mut entries) => entries.next().is_some(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => false,
        // A file, or a directory that cannot be read: not empty as far as we know.
        Err(_) => true,
    };
    if !occupied {
        return Ok(());
    }
    if !force {
        return Err(ExportError::NotEmpty(dest.to_path_buf()));
    }
    let workspace = workspace.canonicalize().map_err(io(workspace))?;
    let dest_real = dest.canonicalize().map_err(io(dest))?;
    if workspace.starts_with(&dest_real) {
        return Err(ExportError::HoldsWorkspace(dest.to_path_buf()));
    }
    Ok(())
}

/// Every file of the template, by path in it (byte order, as `sort` with `LC_ALL=C`).
fn template_files(
    workspace: &Path,
    labs: &[&'static crate::engine::Lab],
) -> Result<BTreeMap<String, File>, ExportError> {
    let mut files = BTreeMap::new();
    for name in ["Cargo.toml", "Cargo.lock"] {
        add_file(&mut files, &workspace.join(name), name.to_string())?;
    }
    let modules: Vec<String> = labs.iter().map(|l| l.slug.replace('-', "_")).collect();
    let in_grader = |relative: &str| -> bool {
        if INSTRUCTOR_ONLY
            .iter()
            .any(|dir| relative == *dir || relative.starts_with(&format!("{dir}/")))
        {
            return false;
        }
        if let Some(test) = relative.strip_prefix("grader/tests/") {
            let top = test.split('/').next().unwrap_or(test);
            return STUDENT_TESTS.contains(&top);
        }
        if let Some(module) = relative.strip_prefix("grader/src/labs/") {
            let top = module.split('/').next().unwrap_or(module);
            let name = top.strip_suffix(".rs").unwrap_or(top);
            return top == "mod.rs" || modules.iter().any(|m| m == name);
        }
        true
    };
    add_tree(&mut files, workspace, ".cargo", &|_| true)?;
    add_tree(&mut files, workspace, "grader", &in_grader)?;
    for lab in labs {
        let dir = compile::crate_dir(workspace, Variant::Labs, lab.slug)
            .ok_or_else(|| ExportError::NoCrate(lab.slug.to_string()))?;
        let dir_name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| ExportError::NotUtf8(dir.clone()))?
            .to_string();
        add_tree(&mut files, workspace, &format!("labs/{dir_name}"), &|_| {
            true
        })?;
        let handout = format!("docs/labs/{dir_name}.md");
        if workspace.join(&handout).is_file() {
            add_file(&mut files, &workspace.join(&handout), handout.clone())?;
            // Its pictures go with it, or the students' copy shows broken images.
            let text = String::from_utf8_lossy(&files[&handout].bytes).into_owned();
            for picture in pictures(&text) {
                let name = format!("docs/images/{picture}");
                add_file(&mut files, &workspace.join(&name), name)?;
            }
        }
    }
    let template = workspace.join(STUDENT_TEMPLATE);
    if !template.is_dir() {
        return Err(ExportError::NoTemplate(template));
    }
    let mut statics = BTreeMap::new();
    add_tree(&mut statics, &template, ".", &|_| true)?;
    for (name, file) in statics {
        files.insert(name.trim_start_matches("./").to_string(), file);
    }
    let grader_manifest = "grader/Cargo.toml";
    let kept = only_student_tests(
        &files[grader_manifest].bytes,
        &workspace.join(grader_manifest),
    )?;
    files.get_mut(grader_manifest).expect("read above").bytes = kept;
    let manifest = manifest(&files);
    files.insert(
        MANIFEST.to_string(),
        File {
            bytes: manifest.into_bytes(),
            executable: false,
        },
    );
    Ok(files)
}

/// Adds every file under `workspace/top` that `keep` accepts (by its path relative to
/// `workspace`), skipping build output (`target/`).
fn add_tree(
    files: &mut BTreeMap<String, File>,
    workspace: &Path,
    top: &str,
    keep: &dyn Fn(&str) -> bool,
) -> Result<(), ExportError> {
    let walk = walkdir::WalkDir::new(workspace.join(top))
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|entry| {
            entry.file_name() != "target"
                && entry
                    .path()
                    .strip_prefix(workspace)
                    .ok()
                    .and_then(Path::to_str)
                    .is_none_or(keep)
        });
    for entry in walk {
        let entry = entry.map_err(|error| ExportError::Io {
            path: workspace.join(top),
            source: error.into(),
        })?;
        if entry.file_type().is_dir() {
            continue;
        }
        let relative = entry
            .path()
            .strip_prefix(workspace)
            .expect("walked under the workspace");
        let name = relative
            .to_str()
            .ok_or_else(|| ExportError::NotUtf8(entry.path().to_path_buf()))?;
        add_file(files, entry.path(), name.to_string())?;
    }
    Ok(())
}

/// The files of `docs/images/` a handout shows: its links `](../images/NAME)`.
fn pictures(handout: &str) -> Vec<&str> {
    handout
        .split("](../images/")
        .skip(1)
        .filter_map(|rest| rest.split_once(')').map(|(name, _)| name.trim()))
        .collect()
}

fn add_file(
    files: &mut BTreeMap<String, File>,
    path: &Path,
    name: String,
) -> Result<(), ExportError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    let mode = std::fs::metadata(path)
        .map_err(io(path))?
        .permissions()
        .mode();
    files.insert(
        name,
        File {
            bytes,
            executable: mode & 0o111 != 0,
        },
    );
    Ok(())
}

/// The grader's `Cargo.toml` without the `[[test]]` targets whose files are not exported.
fn only_student_tests(manifest: &[u8], path: &Path) -> Result<Vec<u8>, ExportError> {
    let text = String::from_utf8_lossy(manifest);
    let mut document: toml_edit::DocumentMut =
        text.parse().map_err(|source| ExportError::Toml {
            path: path.to_path_buf(),
            source,
        })?;
    if let Some(tests) = document
        .get_mut("test")
        .and_then(|t| t.as_array_of_tables_mut())
    {
        tests.retain(|test| {
            let file = test
                .get("path")
                .and_then(|p| p.as_str())
                .and_then(|p| p.strip_prefix("tests/"));
            file.is_some_and(|file| STUDENT_TESTS.contains(&file))
        });
    }
    Ok(document.to_string().into_bytes())
}

/// Whether the manifest covers `name`: what decides the grade and the workflow that runs it.
pub fn guarded(name: &str) -> bool {
    name == "Cargo.toml"
        || name == WORKFLOW
        || name.starts_with("grader/")
        || name.starts_with(".cargo/")
}

/// `sha256sum` lines of the guarded files, in byte order of their paths.
fn manifest(files: &BTreeMap<String, File>) -> String {
    files
        .iter()
        .filter(|(name, _)| guarded(name))
        .map(|(name, file)| format!("{:x}  {name}\n", Sha256::digest(&file.bytes)))
        .collect()
}

/// Has cargo fit the workspace's `Cargo.lock` to the template in `dir`: a subset of the labs
/// drops the other labs' entries. Left as copied, the lock is rewritten by the first build,
/// which fails where the template is read-only to the builder (a submission built as its own
/// user). Offline: fitting only removes entries, and needs only the registry's index, not the
/// sources of crates for other platforms that a full `cargo metadata` would download.
fn settle_lock(dir: &Path) -> Result<(), ExportError> {
    let output = Command::new(compile::cargo_program())
        .args(["update", "--workspace", "--offline", "--quiet"])
        .arg("--manifest-path")
        .arg(dir.join("Cargo.toml"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .output()
        .map_err(|e| ExportError::Lock(format!("cannot run cargo: {e}")))?;
    if !output.status.success() {
        return Err(ExportError::Lock(
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
        ));
    }
    Ok(())
}

/// `git init` and one commit of every file in `dir`; returns the commit's id.
fn commit(dir: &Path) -> Result<String, ExportError> {
    let git = |args: &[&str]| -> Result<String, ExportError> {
        let failed = |why: String| ExportError::Git {
            args: args.join(" "),
            why,
        };
        let output = Command::new("git")
            .args([
                "-c",
                "user.name=ipc-labs",
                "-c",
                "user.email=ipc-labs@localhost",
            ])
            .args(["-c", "commit.gpgsign=false", "-c", "core.autocrlf=false"])
            .args(args)
            .current_dir(dir)
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .env_remove("GIT_INDEX_FILE")
            .output()
            .map_err(|e| failed(format!("cannot run git: {e}")))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
        } else {
            Err(failed(
                String::from_utf8_lossy(&output.stderr).trim().to_string(),
            ))
        }
    };
    git(&["init", "--quiet", "--initial-branch=main"])?;
    git(&["add", "--all"])?;
    git(&["commit", "--quiet", "--no-verify", "-m", COMMIT_MESSAGE])?;
    git(&["rev-parse", "HEAD"])
}
