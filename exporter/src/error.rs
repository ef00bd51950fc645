//! The exporter's errors and the exit codes they map to.

use std::fmt;

/// The exit codes of `dbmirror-export`, as documented in `--help` and the README.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  failure that retrying may cure: connection lost, database or I/O error
  2  bad command line or configuration
  3  the master is not prepared: extension missing, or slave not in dbmirror_MirrorHost
  4  another exporter is running for this slave
  5  the outbox holds a file that differs from what its number must contain";

/// What kind of failure, which decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Runtime,
    Config,
    NotPrepared,
    Busy,
    Inconsistent,
}

impl Kind {
    pub fn exit_code(self) -> u8 {
        match self {
            Kind::Runtime => 1,
            Kind::Config => 2,
            Kind::NotPrepared => 3,
            Kind::Busy => 4,
            Kind::Inconsistent => 5,
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
        Self {
            kind,
            message: message.into(),
            hint: None,
        }
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

    /// Prefixes the message with where it happened.
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
