//! Errors of the dbmirror tools and the exit codes they map to, shared by `dbmirror-export`
//! and `dbmirror-apply` so that both speak the same way: one message naming the object, an
//! optional HINT, and one exit code per kind of failure (each tool's `--help` lists them).

use std::fmt;

/// What kind of failure, which decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Retrying may cure it: connection lost, database or I/O error. Exit code 1.
    Runtime,
    /// Bad command line or configuration. Exit code 2.
    Config,
    /// The database is not prepared for dbmirror. Exit code 3.
    NotPrepared,
    /// Another instance holds the lock. Exit code 4.
    Busy,
    /// A file on disk is wrong and needs an operator. Exit code 5.
    BadFile,
    /// A comparison found differences. Exit code 6.
    Differs,
    /// The master's state does not continue the stream written so far (it was restored from a
    /// dump or an older copy). Exit code 7.
    Diverged,
}

impl Kind {
    pub fn exit_code(self) -> u8 {
        match self {
            Kind::Runtime => 1,
            Kind::Config => 2,
            Kind::NotPrepared => 3,
            Kind::Busy => 4,
            Kind::BadFile => 5,
            Kind::Differs => 6,
            Kind::Diverged => 7,
        }
    }
}

/// An error with one message and an optional hint, in PostgreSQL's style.
#[derive(Debug)]
pub struct Error {
    kind: Kind,
    message: String,
    hint: Option<String>,
}

impl Error {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), hint: None }
    }

    pub fn config(message: impl Into<String>) -> Self {
        Self::new(Kind::Config, message)
    }

    pub fn runtime(message: impl Into<String>) -> Self {
        Self::new(Kind::Runtime, message)
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn context(mut self, context: &str) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\nHINT:  {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl From<postgres::Error> for Error {
    fn from(e: postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => Error {
                kind: Kind::Runtime,
                message: match db.detail() {
                    Some(detail) => format!("{}\nDETAIL:  {detail}", db.message()),
                    None => db.message().to_string(),
                },
                hint: db.hint().map(str::to_string),
            },
            None => Error::runtime(format!("database connection: {e}")),
        }
    }
}

impl From<dbmirror_spool::Error> for Error {
    fn from(e: dbmirror_spool::Error) -> Self {
        Error::runtime(e.to_string())
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::runtime(format!("I/O error: {e}"))
    }
}
