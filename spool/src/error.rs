//! The spool library's error: what went wrong, with which file, and the I/O cause if any.

use std::fmt;
use std::path::{Path, PathBuf};

/// What kind of problem an [`Error`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Reading or writing failed.
    Io,
    /// A file name is not one of the spool's names.
    BadName,
    /// A transaction file's header is missing or malformed.
    BadHeader,
    /// A manifest is malformed, incomplete, or does not cover what its name says.
    BadManifest,
    /// A file's content does not match its manifest checksum.
    ChecksumMismatch,
    /// A file already exists under the name being written, with other content.
    Conflict,
    /// A manifest is unsigned, or its signature or a key file is not valid.
    BadSignature,
}

/// An error of the spool library.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    path: Option<PathBuf>,
    message: String,
    source: Option<std::io::Error>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, path: None, message: message.into(), source: None }
    }

    pub(crate) fn io(path: &Path, action: &str, source: std::io::Error) -> Self {
        Self {
            kind: ErrorKind::Io,
            path: Some(path.to_owned()),
            message: format!("could not {action}"),
            source: Some(source),
        }
    }

    pub(crate) fn at(mut self, path: &Path) -> Self {
        self.path = Some(path.to_owned());
        self
    }

    /// The kind of problem.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The file concerned, if one is known.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Whether a file's content did not match its checksum.
    pub fn is_checksum_mismatch(&self) -> bool {
        self.kind == ErrorKind::ChecksumMismatch
    }

    /// Whether the cause is an I/O error.
    pub fn is_io(&self) -> bool {
        self.kind == ErrorKind::Io
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(f, "{} \"{}\"", self.message, path.display())?,
            None => f.write_str(&self.message)?,
        }
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}
