//! A student's submission taken into a pristine workspace: a directory, a `.zip` or a `.tar.gz`
//! (a repository upload or a download of one, where `labs/` may sit at any depth), of which only
//! the regular files under `labs/<lab>/src/` are copied. Everything else it holds (build
//! scripts, manifests, the grader, results files) is ignored, and anything that could reach
//! outside the workspace (symbolic links, absolute paths, `..`) is refused.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

/// How much of a submission is read before it is refused.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Files under `labs/*/src/`, all labs together.
    pub max_files: usize,
    /// Bytes of the files under `labs/*/src/`, all labs together.
    pub max_bytes: u64,
    /// Entries of a directory tree or an archive, whatever they are.
    pub max_entries: usize,
    /// Bytes a compressed archive may expand to (a `.tar.gz` is read whole to be listed).
    pub max_expanded: u64,
    /// Directories nested in a submission directory.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_files: 1000,
            max_bytes: 16 << 20,
            max_entries: 200_000,
            max_expanded: 1 << 30,
            max_depth: 32,
        }
    }
}

/// Why a submission was not taken.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}: no such file or directory")]
    Missing(PathBuf),
    #[error("{0} is neither a directory, a .zip nor a .tar.gz")]
    UnknownKind(PathBuf),
    #[error(
        "the submission holds no lab: no labs/<lab>/src/ with a file in it (expected, for \
         example, labs/01-pipe-echo/src/lib.rs)"
    )]
    NoLabs,
    #[error("the submission holds two labs/ directories at the same depth: {0} and {1}")]
    TwoLabsDirectories(String, String),
    #[error("the submission holds no labs/ directory but several archives: {0} and {1}")]
    SeveralArchives(String, String),
    #[error("refused `{path}`: {why}")]
    Unsafe { path: String, why: &'static str },
    #[error("the submission holds more than {0} files under labs/*/src/")]
    TooManyFiles(usize),
    #[error("the submission's files under labs/*/src/ exceed {0} bytes")]
    TooLarge(u64),
    #[error("the submission holds more than {0} entries")]
    TooManyEntries(usize),
    #[error("the archive expands to more than {0} bytes")]
    ExpandsTooMuch(u64),
    #[error("the submission nests directories deeper than {0}")]
    TooDeep(usize),
    #[error("reading the submission at {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the zip archive is unreadable: {0}")]
    Zip(#[from] zip::result::ZipError),
    #[error("{0} is not a workspace: it has no labs/ directory")]
    NotAWorkspace(PathBuf),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// `cargo grade import`'s arguments.
#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// The submission: a directory, a .zip or a .tar.gz holding labs/ (at any depth).
    pub submission: PathBuf,
    /// The workspace whose labs receive the submission's labs/*/src.
    #[arg(long, value_name = "WORKSPACE")]
    pub into: PathBuf,
}

/// Runs `cargo grade import`: exit status 2 when the submission is refused, with nothing written.
pub fn command(args: ImportArgs) -> std::process::ExitCode {
    match import(&args.submission, &args.into, Limits::default()) {
        Ok(imported) => {
            print!("{imported}");
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("cargo grade import: {error}");
            std::process::ExitCode::from(2)
        }
    }
}

/// What [`import`] took.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Imported {
    /// Where `labs/` was found in the submission (`.` for its top).
    pub found_at: String,
    /// Each lab directory taken (`01-pipe-echo`) and the files copied into its `src/`.
    pub labs: BTreeMap<String, Vec<String>>,
    /// Lab directories of the submission the workspace does not have, ignored.
    pub unknown: Vec<String>,
    /// Lab directories of the workspace the submission lacks: their skeletons stay.
    pub missing: Vec<String>,
}

impl std::fmt::Display for Imported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "labs/ found at {}", self.found_at)?;
        for (lab, files) in &self.labs {
            writeln!(f, "labs/{lab}/src: {} file(s) taken", files.len())?;
        }
        for lab in &self.unknown {
            writeln!(f, "labs/{lab}: not a lab of this course, ignored")?;
        }
        for lab in &self.missing {
            writeln!(
                f,
                "labs/{lab}: not in the submission; its skeleton is graded"
            )?;
        }
        Ok(())
    }
}

/// One entry of a submission, its path split into components.
struct Entry {
    path: Vec<String>,
    kind: Kind,
}

enum Kind {
    /// A regular file under some `labs/<lab>/src/`, read.
    Source(Vec<u8>),
    /// Anything else that is harmless where it is: a directory, or a file elsewhere.
    Other,
    /// A symbolic link, hard link or special file under some `labs/<lab>/src/`.
    Unsafe(&'static str),
}

/// Where `labs` begins in `path` when `path` is a file under `labs/<lab>/src/`.
fn labs_index(path: &[String]) -> Option<usize> {
    (0..path.len().saturating_sub(3)).find(|&i| path[i] == "labs" && path[i + 2] == "src")
}

/// Gathers the entries of a submission, reading the files that may be sources within limits.
struct Gatherer {
    limits: Limits,
    entries: Vec<Entry>,
    files: usize,
    bytes: u64,
}

impl Gatherer {
    fn new(limits: Limits) -> Gatherer {
        Gatherer {
            limits,
            entries: Vec::new(),
            files: 0,
            bytes: 0,
        }
    }

    /// The components of an archive's entry name, refusing names that leave the archive.
    fn split(name: &str) -> Result<Vec<String>, ImportError> {
        let unsafe_path = |why| ImportError::Unsafe {
            path: name.to_string(),
            why,
        };
        if name.starts_with('/') || name.starts_with('\\') {
            return Err(unsafe_path("an absolute path"));
        }
        let mut parts = Vec::new();
        for part in name.split(['/', '\\']) {
            match part {
                "" | "." => {}
                ".." => return Err(unsafe_path("a path that climbs out with `..`")),
                _ if part.contains('\0') => return Err(unsafe_path("a NUL in a name")),
                _ => parts.push(part.to_string()),
            }
        }
        Ok(parts)
    }

    fn count_entry(&mut self) -> Result<(), ImportError> {
        if self.entries.len() >= self.limits.max_entries {
            return Err(ImportError::TooManyEntries(self.limits.max_entries));
        }
        Ok(())
    }

    /// Adds a regular file, reading it if it lies under `labs/<lab>/src/`.
    fn file(&mut self, path: Vec<String>, content: &mut dyn Read) -> Result<(), ImportError> {
        self.count_entry()?;
        if labs_index(&path).is_none() {
            self.entries.push(Entry {
                path,
                kind: Kind::Other,
            });
            return Ok(());
        }
        self.files += 1;
        if self.files > self.limits.max_files {
            return Err(ImportError::TooManyFiles(self.limits.max_files));
        }
        // Read no more than the budget allows, whatever size the entry claims.
        let budget = self.limits.max_bytes - self.bytes;
        let mut data = Vec::new();
        content
            .take(budget + 1)
            .read_to_end(&mut data)
            .map_err(|source| ImportError::Read {
                path: path.join("/"),
                source,
            })?;
        if data.len() as u64 > budget {
            return Err(ImportError::TooLarge(self.limits.max_bytes));
        }
        self.bytes += data.len() as u64;
        self.entries.push(Entry {
            path,
            kind: Kind::Source(data),
        });
        Ok(())
    }

    /// Adds a directory: its files are judged one by one.
    fn directory_entry(&mut self, path: Vec<String>) -> Result<(), ImportError> {
        self.count_entry()?;
        self.entries.push(Entry {
            path,
            kind: Kind::Other,
        });
        Ok(())
    }

    /// Adds a link or special file: harmless unless it lies under a `src/`.
    fn other(&mut self, path: Vec<String>, what: &'static str) -> Result<(), ImportError> {
        self.count_entry()?;
        let kind = if labs_index(&path).is_some() {
            Kind::Unsafe(what)
        } else {
            Kind::Other
        };
        self.entries.push(Entry { path, kind });
        Ok(())
    }

    fn directory(&mut self, root: &Path) -> Result<(), ImportError> {
        let read_error = |path: &Path| {
            let path = path.display().to_string();
            move |source| ImportError::Read { path, source }
        };
        let mut stack: Vec<(PathBuf, Vec<String>)> = vec![(root.to_path_buf(), Vec::new())];
        while let Some((dir, parts)) = stack.pop() {
            if parts.len() > self.limits.max_depth {
                return Err(ImportError::TooDeep(self.limits.max_depth));
            }
            let mut entries: Vec<std::fs::DirEntry> = std::fs::read_dir(&dir)
                .map_err(read_error(&dir))?
                .collect::<Result<_, _>>()
                .map_err(read_error(&dir))?;
            entries.sort_by_key(|e| e.file_name());
            for entry in entries {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                let mut inner = parts.clone();
                inner.push(name);
                let file_type = entry.file_type().map_err(read_error(&path))?;
                if file_type.is_dir() {
                    self.directory_entry(inner.clone())?;
                    stack.push((path, inner));
                } else if file_type.is_file() {
                    let mut file = std::fs::File::open(&path).map_err(read_error(&path))?;
                    self.file(inner, &mut file)?;
                } else if file_type.is_symlink() {
                    self.other(inner, "a symbolic link")?;
                } else {
                    self.other(inner, "a special file")?;
                }
            }
        }
        Ok(())
    }

    fn zip(&mut self, archive: &Path) -> Result<(), ImportError> {
        let file = std::fs::File::open(archive).map_err(|source| ImportError::Read {
            path: archive.display().to_string(),
            source,
        })?;
        let mut zip = zip::ZipArchive::new(file)?;
        if zip.len() > self.limits.max_entries {
            return Err(ImportError::TooManyEntries(self.limits.max_entries));
        }
        for index in 0..zip.len() {
            let mut entry = zip.by_index(index)?;
            let path = Self::split(&String::from_utf8_lossy(entry.name_raw()))?;
            if entry.is_symlink() {
                self.other(path, "a symbolic link")?;
            } else if entry.is_dir() {
                self.directory_entry(path)?;
            } else {
                self.file(path, &mut entry)?;
            }
        }
        Ok(())
    }

    fn tar_gz(&mut self, archive: &Path) -> Result<(), ImportError> {
        let read_error = |source| ImportError::Read {
            path: archive.display().to_string(),
            source,
        };
        let file = std::fs::File::open(archive).map_err(read_error)?;
        // Bounds what decompression yields: listing the archive reads it whole.
        let expanded = flate2::read::GzDecoder::new(file).take(self.limits.max_expanded + 1);
        let mut tar = tar::Archive::new(expanded);
        let listed = self.tar_entries(&mut tar);
        // A cut-off stream may read as an error or as an early end: either is the bound's.
        if tar.into_inner().limit() == 0 {
            return Err(ImportError::ExpandsTooMuch(self.limits.max_expanded));
        }
        listed.map_err(|error| match error {
            ImportError::Read { source, .. } => read_error(source),
            other => other,
        })
    }

    fn tar_entries(&mut self, tar: &mut tar::Archive<impl Read>) -> Result<(), ImportError> {
        let read_error = |source| ImportError::Read {
            path: String::new(),
            source,
        };
        for entry in tar.entries().map_err(read_error)? {
            let mut entry = entry.map_err(read_error)?;
            let path = Self::split(&String::from_utf8_lossy(&entry.path_bytes()))?;
            match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    self.file(path, &mut entry)?
                }
                tar::EntryType::Directory => self.directory_entry(path)?,
                tar::EntryType::Symlink => self.other(path, "a symbolic link")?,
                tar::EntryType::Link => self.other(path, "a hard link")?,
                _ => self.other(path, "a special file")?,
            }
        }
        Ok(())
    }
}

enum SubmissionKind {
    Directory,
    Zip,
    TarGz,
}

fn kind_of(path: &Path) -> Option<SubmissionKind> {
    let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
    if path.is_dir() {
        Some(SubmissionKind::Directory)
    } else if name.ends_with(".zip") {
        Some(SubmissionKind::Zip)
    } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        Some(SubmissionKind::TarGz)
    } else {
        None
    }
}

fn gather(submission: &Path, limits: Limits) -> Result<Vec<Entry>, ImportError> {
    let mut gatherer = Gatherer::new(limits);
    match kind_of(submission) {
        Some(SubmissionKind::Directory) => gatherer.directory(submission)?,
        Some(SubmissionKind::Zip) => gatherer.zip(submission)?,
        Some(SubmissionKind::TarGz) => gatherer.tar_gz(submission)?,
        None => return Err(ImportError::UnknownKind(submission.to_path_buf())),
    }
    Ok(gatherer.entries)
}

/// The lab directories of the workspace (`01-pipe-echo`, ...).
fn workspace_labs(workspace: &Path) -> Result<BTreeSet<String>, ImportError> {
    let labs = workspace.join("labs");
    let entries =
        std::fs::read_dir(&labs).map_err(|_| ImportError::NotAWorkspace(workspace.into()))?;
    Ok(entries
        .flatten()
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect())
}

/// Copies the sources of `submission` (a directory, a `.zip` or a `.tar.gz`) into the labs of
/// `workspace`: each lab the submission has gets its `src/` replaced by the submission's; the
/// labs it lacks keep theirs. Nothing is written unless the whole submission is acceptable.
pub fn import(
    submission: &Path,
    workspace: &Path,
    limits: Limits,
) -> Result<Imported, ImportError> {
    if !submission.exists() {
        return Err(ImportError::Missing(submission.to_path_buf()));
    }
    let known = workspace_labs(workspace)?;
    let entries = gather(submission, limits)?;
    let sources: Vec<(usize, &Entry)> = entries
        .iter()
        .filter_map(|e| labs_index(&e.path).map(|at| (at, e)))
        .collect();
    if sources.is_empty() && matches!(kind_of(submission), Some(SubmissionKind::Directory)) {
        // An upload of the archive itself, such as a zip of the repository.
        let archives: Vec<&Entry> = entries
            .iter()
            .filter(|e| {
                let name = e
                    .path
                    .last()
                    .map(|n| n.to_ascii_lowercase())
                    .unwrap_or_default();
                name.ends_with(".zip") || name.ends_with(".tar.gz") || name.ends_with(".tgz")
            })
            .collect();
        return match archives.as_slice() {
            [archive] => import(&submission.join(archive.path.join("/")), workspace, limits),
            [first, second, ..] => Err(ImportError::SeveralArchives(
                first.path.join("/"),
                second.path.join("/"),
            )),
            [] => Err(ImportError::NoLabs),
        };
    }
    // The shallowest labs/ is the submission's; one deeper is a copy it happens to hold.
    let depth = sources
        .iter()
        .map(|(at, _)| *at)
        .min()
        .ok_or(ImportError::NoLabs)?;
    let mut prefixes: Vec<&[String]> = sources
        .iter()
        .filter(|(at, _)| *at == depth)
        .map(|(at, e)| &e.path[..*at])
        .collect();
    prefixes.dedup();
    let prefix = prefixes[0];
    if let Some(other) = prefixes.iter().find(|p| *p != &prefix) {
        return Err(ImportError::TwoLabsDirectories(
            display_prefix(prefix),
            display_prefix(other),
        ));
    }
    let mut imported = Imported {
        found_at: display_prefix(prefix),
        ..Imported::default()
    };
    let mut files: Vec<(&str, &[String], &[u8])> = Vec::new();
    for (at, entry) in &sources {
        if &entry.path[..*at] != prefix {
            continue;
        }
        let lab = entry.path[at + 1].as_str();
        let inside = &entry.path[at + 3..];
        let data = match &entry.kind {
            Kind::Unsafe(what) => {
                return Err(ImportError::Unsafe {
                    path: entry.path.join("/"),
                    why: what,
                });
            }
            Kind::Other => continue,
            Kind::Source(data) => data,
        };
        if !known.contains(lab) {
            if !imported.unknown.iter().any(|l| l == lab) {
                imported.unknown.push(lab.to_string());
            }
            continue;
        }
        files.push((lab, inside, data));
        imported
            .labs
            .entry(lab.to_string())
            .or_default()
            .push(inside.join("/"));
    }
    for files in imported.labs.values_mut() {
        files.sort();
    }
    if imported.labs.is_empty() && imported.unknown.is_empty() {
        return Err(ImportError::NoLabs);
    }
    imported.missing = known
        .iter()
        .filter(|lab| !imported.labs.contains_key(*lab))
        .cloned()
        .collect();
    write(workspace, &imported, &files)?;
    Ok(imported)
}

fn display_prefix(prefix: &[String]) -> String {
    if prefix.is_empty() {
        ".".into()
    } else {
        prefix.join("/")
    }
}

/// Replaces the `src/` of each imported lab with its files, readable by all (the programs are
/// built as another user).
fn write(
    workspace: &Path,
    imported: &Imported,
    files: &[(&str, &[String], &[u8])],
) -> Result<(), ImportError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let write_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ImportError::Write { path, source }
    };
    for lab in imported.labs.keys() {
        let src = workspace.join("labs").join(lab).join("src");
        if src.exists() {
            std::fs::remove_dir_all(&src).map_err(write_error(&src))?;
        }
    }
    let mut dirs = std::fs::DirBuilder::new();
    dirs.recursive(true).mode(0o755);
    for (lab, inside, data) in files {
        let mut path = workspace.join("labs").join(lab).join("src");
        path.extend(inside.iter());
        let parent = path.parent().expect("a file has a parent");
        dirs.create(parent).map_err(write_error(parent))?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)
            .map_err(write_error(&path))?;
        std::io::Write::write_all(&mut file, data).map_err(write_error(&path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn workspace() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for lab in ["01-pipe-echo", "02-mqueue-priority"] {
            let crate_dir = dir.path().join("labs").join(lab);
            std::fs::create_dir_all(crate_dir.join("src")).unwrap();
            std::fs::write(crate_dir.join("Cargo.toml"), "[package]\n").unwrap();
            std::fs::write(crate_dir.join("src/lib.rs"), "skeleton").unwrap();
            std::fs::write(crate_dir.join("src/main.rs"), "skeleton main").unwrap();
        }
        dir
    }

    fn read(workspace: &Path, file: &str) -> String {
        std::fs::read_to_string(workspace.join(file)).unwrap()
    }

    fn put(root: &Path, file: &str, content: &str) {
        let path = root.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    #[test]
    fn a_nested_directory_gives_only_its_sources_and_other_labs_keep_their_skeletons() {
        let ws = workspace();
        let sub = tempfile::tempdir().unwrap();
        put(sub.path(), "repo-main/labs/01-pipe-echo/src/lib.rs", "mine");
        put(
            sub.path(),
            "repo-main/labs/01-pipe-echo/src/extra/mod.rs",
            "more",
        );
        put(sub.path(), "repo-main/labs/01-pipe-echo/build.rs", "evil");
        put(sub.path(), "repo-main/labs/01-pipe-echo/Cargo.toml", "evil");
        put(sub.path(), "repo-main/grader/src/lib.rs", "evil");
        put(sub.path(), "repo-main/labs/99-extra/src/lib.rs", "x");
        let imported = import(sub.path(), ws.path(), Limits::default()).unwrap();
        assert_eq!(imported.found_at, "repo-main");
        assert_eq!(
            imported.labs["01-pipe-echo"],
            ["extra/mod.rs".to_string(), "lib.rs".to_string()]
        );
        assert_eq!(imported.unknown, ["99-extra"]);
        assert_eq!(imported.missing, ["02-mqueue-priority"]);
        assert_eq!(read(ws.path(), "labs/01-pipe-echo/src/lib.rs"), "mine");
        assert_eq!(
            read(ws.path(), "labs/01-pipe-echo/src/extra/mod.rs"),
            "more"
        );
        // The submission's src/ replaces the skeleton's whole.
        assert!(!ws.path().join("labs/01-pipe-echo/src/main.rs").exists());
        assert!(!ws.path().join("labs/01-pipe-echo/build.rs").exists());
        assert_eq!(
            read(ws.path(), "labs/01-pipe-echo/Cargo.toml"),
            "[package]\n"
        );
        assert!(!ws.path().join("grader").exists());
        assert_eq!(
            read(ws.path(), "labs/02-mqueue-priority/src/lib.rs"),
            "skeleton"
        );
    }

    #[test]
    fn the_shallowest_labs_directory_wins_and_two_at_one_depth_are_refused() {
        let ws = workspace();
        let sub = tempfile::tempdir().unwrap();
        put(sub.path(), "labs/01-pipe-echo/src/lib.rs", "top");
        put(sub.path(), "old/labs/01-pipe-echo/src/lib.rs", "old");
        import(sub.path(), ws.path(), Limits::default()).unwrap();
        assert_eq!(read(ws.path(), "labs/01-pipe-echo/src/lib.rs"), "top");

        let two = tempfile::tempdir().unwrap();
        put(two.path(), "a/labs/01-pipe-echo/src/lib.rs", "a");
        put(two.path(), "b/labs/01-pipe-echo/src/lib.rs", "b");
        let error = import(two.path(), ws.path(), Limits::default()).unwrap_err();
        assert!(
            matches!(error, ImportError::TwoLabsDirectories(..)),
            "{error}"
        );
    }

    #[test]
    fn an_empty_or_unrelated_submission_holds_no_lab() {
        let ws = workspace();
        let sub = tempfile::tempdir().unwrap();
        let error = import(sub.path(), ws.path(), Limits::default()).unwrap_err();
        assert!(matches!(error, ImportError::NoLabs), "{error}");
        put(sub.path(), "README.md", "hello");
        put(sub.path(), "labs/01-pipe-echo/Cargo.toml", "no src");
        let error = import(sub.path(), ws.path(), Limits::default()).unwrap_err();
        assert!(matches!(error, ImportError::NoLabs), "{error}");
        assert_eq!(read(ws.path(), "labs/01-pipe-echo/src/lib.rs"), "skeleton");
    }

    #[test]
    fn a_symbolic_link_under_src_is_refused_and_nothing_is_written() {
        let ws = workspace();
        let sub = tempfile::tempdir().unwrap();
        put(sub.path(), "labs/01-pipe-echo/src/lib.rs", "mine");
        std::os::unix::fs::symlink("/etc/passwd", sub.path().join("labs/01-pipe-echo/src/x.rs"))
            .unwrap();
        let error = import(sub.path(), ws.path(), Limits::default()).unwrap_err();
        assert!(
            matches!(
                error,
                ImportError::Unsafe {
                    why: "a symbolic link",
                    ..
                }
            ),
            "{error}"
        );
        assert_eq!(read(ws.path(), "labs/01-pipe-echo/src/lib.rs"), "skeleton");
    }

    fn zip_of(entries: &[(&str, &[u8])], symlink: Option<(&str, &str)>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::create(dir.path().join("sub.zip")).unwrap();
        let mut zip = zip::ZipWriter::new(file);
        let options = zip::write::SimpleFileOptions::default();
        for (name, data) in entries {
            zip.start_file(*name, options).unwrap();
            zip.write_all(data).unwrap();
        }
        if let Some((name, target)) = symlink {
            zip.add_symlink(name, target, options).unwrap();
        }
        zip.finish().unwrap();
        dir
    }

    #[test]
    fn a_zip_found_in_the_submission_directory_is_read() {
        let ws = workspace();
        let dir = zip_of(
            &[("ipc-labs-main/labs/01-pipe-echo/src/lib.rs", b"zipped")],
            None,
        );
        let imported = import(dir.path(), ws.path(), Limits::default()).unwrap();
        assert_eq!(imported.found_at, "ipc-labs-main");
        assert_eq!(read(ws.path(), "labs/01-pipe-echo/src/lib.rs"), "zipped");
    }

    #[test]
    fn zip_entries_that_leave_the_archive_are_refused() {
        let ws = workspace();
        for name in [
            "/labs/01-pipe-echo/src/lib.rs",
            "labs/01-pipe-echo/src/../../../x",
        ] {
            let dir = zip_of(&[(name, b"x")], None);
            let error = import(&dir.path().join("sub.zip"), ws.path(), Limits::default());
            assert!(
                matches!(error, Err(ImportError::Unsafe { .. })),
                "{name}: {error:?}"
            );
        }
        let dir = zip_of(
            &[("labs/01-pipe-echo/src/lib.rs", b"x")],
            Some(("labs/01-pipe-echo/src/link.rs", "/etc/passwd")),
        );
        let error = import(&dir.path().join("sub.zip"), ws.path(), Limits::default());
        assert!(
            matches!(
                error,
                Err(ImportError::Unsafe {
                    why: "a symbolic link",
                    ..
                })
            ),
            "{error:?}"
        );
        assert_eq!(read(ws.path(), "labs/01-pipe-echo/src/lib.rs"), "skeleton");
    }

    #[test]
    fn a_zip_bomb_stops_at_the_byte_bound_and_too_many_files_are_refused() {
        let ws = workspace();
        let zeros = vec![0u8; 4 << 20];
        let dir = zip_of(&[("labs/01-pipe-echo/src/lib.rs", &zeros)], None);
        let compressed = std::fs::metadata(dir.path().join("sub.zip")).unwrap().len();
        assert!(
            compressed < 64 << 10,
            "the test's zip compresses: {compressed}"
        );
        let limits = Limits {
            max_bytes: 1 << 20,
            ..Limits::default()
        };
        let error = import(&dir.path().join("sub.zip"), ws.path(), limits).unwrap_err();
        assert!(matches!(error, ImportError::TooLarge(_)), "{error}");

        let names: Vec<String> = (0..5)
            .map(|i| format!("labs/01-pipe-echo/src/f{i}.rs"))
            .collect();
        let entries: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b""[..])).collect();
        let dir = zip_of(&entries, None);
        let limits = Limits {
            max_files: 4,
            ..Limits::default()
        };
        let error = import(&dir.path().join("sub.zip"), ws.path(), limits).unwrap_err();
        assert!(matches!(error, ImportError::TooManyFiles(4)), "{error}");
    }

    fn tar_gz_of(
        build: impl FnOnce(&mut tar::Builder<flate2::write::GzEncoder<std::fs::File>>),
    ) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::create(dir.path().join("sub.tar.gz")).unwrap();
        let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        build(&mut tar);
        tar.into_inner().unwrap().finish().unwrap();
        dir
    }

    fn tar_file(
        tar: &mut tar::Builder<flate2::write::GzEncoder<std::fs::File>>,
        name: &str,
        data: &[u8],
    ) {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        // Written raw: the tar crate refuses to build `..` paths itself.
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_cksum();
        tar.append(&header, data).unwrap();
    }

    #[test]
    fn a_tar_gz_is_read_and_its_escapes_and_bombs_refused() {
        let ws = workspace();
        let dir = tar_gz_of(|tar| {
            tar_file(
                tar,
                "ipc-labs-1.0/labs/02-mqueue-priority/src/lib.rs",
                b"tarred",
            );
            tar_file(tar, "ipc-labs-1.0/target/big", &vec![0u8; 1 << 20]);
        });
        let archive = dir.path().join("sub.tar.gz");
        import(&archive, ws.path(), Limits::default()).unwrap();
        assert_eq!(
            read(ws.path(), "labs/02-mqueue-priority/src/lib.rs"),
            "tarred"
        );
        let limits = Limits {
            max_expanded: 256 << 10,
            ..Limits::default()
        };
        let error = import(&archive, ws.path(), limits).unwrap_err();
        assert!(matches!(error, ImportError::ExpandsTooMuch(_)), "{error}");

        let dir = tar_gz_of(|tar| tar_file(tar, "labs/01-pipe-echo/src/../../../../x", b"x"));
        let error = import(&dir.path().join("sub.tar.gz"), ws.path(), Limits::default());
        assert!(
            matches!(error, Err(ImportError::Unsafe { .. })),
            "{error:?}"
        );
        let dir = tar_gz_of(|tar| {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            tar.append_link(&mut header, "labs/01-pipe-echo/src/lib.rs", "/etc/shadow")
                .unwrap();
        });
        let error = import(&dir.path().join("sub.tar.gz"), ws.path(), Limits::default());
        assert!(
            matches!(
                error,
                Err(ImportError::Unsafe {
                    why: "a symbolic link",
                    ..
                })
            ),
            "{error:?}"
        );
    }

    #[test]
    fn other_files_are_refused_as_unknown_kinds() {
        let ws = workspace();
        let dir = tempfile::tempdir().unwrap();
        put(dir.path(), "sub.rar", "x");
        let error = import(&dir.path().join("sub.rar"), ws.path(), Limits::default());
        assert!(
            matches!(error, Err(ImportError::UnknownKind(_))),
            "{error:?}"
        );
        let error = import(&dir.path().join("nope"), ws.path(), Limits::default());
        assert!(matches!(error, Err(ImportError::Missing(_))), "{error:?}");
    }
}
