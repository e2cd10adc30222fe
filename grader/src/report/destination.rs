//! `--write FORMAT=PATH`: a report written to a file besides the one printed, from the same
//! grading.

use std::io::{Seek, Write};
use std::path::PathBuf;
use std::str::FromStr;

use super::Format;

/// One `--write FORMAT=PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub format: Format,
    pub path: PathBuf,
}

/// Why a `--write` cannot be honoured; found before grading.
#[derive(Debug, thiserror::Error)]
pub enum DestinationError {
    #[error("--write wants FORMAT=PATH, e.g. junit=junit.xml; got `{0}`")]
    NoEquals(String),
    #[error("--write: unknown format `{0}`; the formats are: {1}")]
    UnknownFormat(String, String),
    #[error("--write {0}: the path is empty")]
    EmptyPath(String),
    #[error("--write: {} is named twice; one report would overwrite the other", .0.display())]
    Twice(PathBuf),
    #[error("--write: cannot write {path}: {1}", path = .0.display())]
    Unwritable(PathBuf, std::io::Error),
}

impl FromStr for Destination {
    type Err = DestinationError;

    fn from_str(word: &str) -> Result<Destination, DestinationError> {
        let (name, path) = word
            .split_once('=')
            .ok_or_else(|| DestinationError::NoEquals(word.to_string()))?;
        let format = <Format as clap::ValueEnum>::from_str(name, false).map_err(|_| {
            let known: Vec<String> = <Format as clap::ValueEnum>::value_variants()
                .iter()
                .map(|f| f.name())
                .collect();
            DestinationError::UnknownFormat(name.to_string(), known.join(", "))
        })?;
        if path.is_empty() {
            return Err(DestinationError::EmptyPath(name.to_string()));
        }
        Ok(Destination {
            format,
            path: PathBuf::from(path),
        })
    }
}

/// A destination whose file is open, so that grading does not start when it cannot be written.
#[derive(Debug)]
pub struct OpenDestination {
    pub format: Format,
    pub path: PathBuf,
    file: std::fs::File,
}

impl OpenDestination {
    /// Replaces the file's content with `text`.
    pub fn write(mut self, text: &str) -> Result<(), DestinationError> {
        let unwritable = |error| DestinationError::Unwritable(self.path.clone(), error);
        // A device or a pipe (`/dev/stdout`) has no content to replace.
        if self.file.metadata().is_ok_and(|m| m.is_file()) {
            self.file.set_len(0).map_err(unwritable)?;
            self.file.rewind().map_err(unwritable)?;
        }
        self.file.write_all(text.as_bytes()).map_err(unwritable)?;
        self.file.flush().map_err(unwritable)
    }
}

/// Opens every destination (creating the files, leaving their content until the report is
/// written), or says which one cannot be written.
pub fn open_all(destinations: &[Destination]) -> Result<Vec<OpenDestination>, DestinationError> {
    let mut open: Vec<OpenDestination> = Vec::new();
    for destination in destinations {
        if open.iter().any(|o| o.path == destination.path) {
            return Err(DestinationError::Twice(destination.path.clone()));
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&destination.path)
            .map_err(|error| DestinationError::Unwritable(destination.path.clone(), error))?;
        open.push(OpenDestination {
            format: destination.format,
            path: destination.path.clone(),
            file,
        });
    }
    Ok(open)
}
