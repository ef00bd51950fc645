//! Errors of the dbmirror tools and the exit codes they map to, shared by `dbmirror-export`
//! and `dbmirror-apply` so that both speak the same way: one message naming the object, an
//! optional HINT, the cause kept as the error's source, and one exit code per kind of failure.
//!
//! The exit codes are stated once: [`Kind::exit_code`] gives each kind its number, and each
//! tool's table of [`Exit`] rows says what the code means for that tool. `--help` is rendered
//! from the table ([`help`]), and a test holds the README's tables to the same text.

use std::fmt;

/// What kind of failure, which decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Retrying may cure it: connection lost, database or I/O error.
    Runtime,
    /// Bad command line or configuration.
    Config,
    /// The database is not prepared for dbmirror.
    NotPrepared,
    /// Another instance holds the lock.
    Busy,
    /// A file on disk (or a transaction for the slave) is wrong and needs an operator.
    BadFile,
    /// A comparison found differences.
    Differs,
    /// The master's state does not continue the stream written so far (it was restored from a
    /// dump or an older copy).
    Diverged,
    /// The database refused the configured role: a wrong password, an unknown role or database,
    /// or privileges missing. Like [`Kind::Config`], only an operator can cure it, so `run` and
    /// `watch` stop instead of retrying; unlike it, the file may be right and the database not.
    Access,
}

impl Kind {
    /// The process exit code of this kind of failure; 0 is success.
    pub const fn exit_code(self) -> u8 {
        match self {
            Kind::Runtime => 1,
            Kind::Config => 2,
            Kind::NotPrepared => 3,
            Kind::Busy => 4,
            Kind::BadFile => 5,
            Kind::Differs => 6,
            Kind::Diverged => 7,
            Kind::Access => 8,
        }
    }
}

/// One row of a tool's exit-code table: a code and what it means for that tool.
#[derive(Debug, Clone, Copy)]
pub struct Exit {
    kind: Option<Kind>,
    meaning: &'static str,
}

impl Exit {
    /// Exit code 0.
    pub const fn success(meaning: &'static str) -> Self {
        Self { kind: None, meaning }
    }

    /// The exit code of `kind`.
    pub const fn failure(kind: Kind, meaning: &'static str) -> Self {
        Self { kind: Some(kind), meaning }
    }

    pub const fn code(&self) -> u8 {
        match self.kind {
            Some(kind) => kind.exit_code(),
            None => 0,
        }
    }

    pub const fn meaning(&self) -> &'static str {
        self.meaning
    }
}

/// The exit-code table as `--help` shows it after the options: one line per code.
pub fn help(table: &[Exit]) -> String {
    let mut out = String::from("Exit codes:");
    for row in table {
        out.push_str(&format!("\n  {}  {}", row.code(), row.meaning()));
    }
    out
}

/// The cause of an error, kept for whoever wants to look into it (its text is already part of
/// the message).
type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error with one message and an optional hint, in PostgreSQL's style, and its cause.
///
/// The message is complete as it stands (it includes the cause's text where that helps the
/// reader), so printing it never walks the chain; [`std::error::Error::source`] gives the cause
/// itself, for code that needs its structure (a spool error's kind and path, a database
/// error's SQLSTATE).
#[derive(Debug)]
pub struct Error {
    kind: Kind,
    message: String,
    hint: Option<String>,
    source: Option<Source>,
}

impl Error {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), hint: None, source: None }
    }

    /// An error of `kind` whose message is `context: cause`, keeping `cause` as its source.
    pub fn caused_by(kind: Kind, context: &str, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self { kind, message: format!("{context}: {cause}"), hint: None, source: Some(Box::new(cause)) }
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

    /// The same error with another message: for a caller that can say more than the cause's
    /// own text (which host, which port), keeping the cause as the source.
    pub(crate) fn with_message(mut self, message: String) -> Self {
        self.message = message;
        self
    }

    pub fn context(mut self, context: &str) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The hint, if any.
    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    /// The cause as the spool library reported it, if it was a spool error.
    pub fn spool_error(&self) -> Option<&dbmirror_spool::Error> {
        self.source.as_ref()?.downcast_ref()
    }

    /// The cause as the database reported it, if it was a database error.
    pub fn database_error(&self) -> Option<&postgres::error::DbError> {
        self.source.as_ref()?.downcast_ref::<postgres::Error>()?.as_db_error()
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

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}

/// What the database's refusal of the configured role means to an operator: for each SQLSTATE
/// that no retry can cure (PostgreSQL's Appendix A, classes 28, 3D and 42501), the hint that
/// says what to fix. Everything else a database reports may pass, and is [`Kind::Runtime`].
fn access_hint(code: &postgres::error::SqlState) -> Option<&'static str> {
    use postgres::error::SqlState;
    Some(match *code {
        SqlState::INVALID_PASSWORD => {
            "Check the password of the connection string in the configuration (or in the .pgpass file of the user the tool runs as)."
        }
        SqlState::INVALID_AUTHORIZATION_SPECIFICATION => {
            "Check the user of the connection string in the configuration: the role must exist and pg_hba.conf must let it in."
        }
        SqlState::INVALID_CATALOG_NAME => {
            "Check dbname in the connection string of the configuration: the database does not exist on that server."
        }
        SqlState::INSUFFICIENT_PRIVILEGE => {
            "Grant the configured role what it needs on the dbmirror tables (the README's quick start lists it for the exporter; sql/applier_role.sql makes the applier's role), or connect as another role."
        }
        _ => return None,
    })
}

impl From<postgres::Error> for Error {
    fn from(e: postgres::Error) -> Self {
        let (kind, message, hint) = match e.as_db_error() {
            Some(db) => {
                let message = match db.detail() {
                    Some(detail) => format!("{}\nDETAIL:  {detail}", db.message()),
                    None => db.message().to_string(),
                };
                match access_hint(db.code()) {
                    // The server's own hint, if it gave one, says more than ours.
                    Some(hint) => (Kind::Access, message, Some(db.hint().unwrap_or(hint).to_string())),
                    None => (Kind::Runtime, message, db.hint().map(str::to_string)),
                }
            }
            None => (Kind::Runtime, format!("database connection: {e}"), None),
        };
        Error { kind, message, hint, source: Some(Box::new(e)) }
    }
}

impl From<dbmirror_spool::Error> for Error {
    fn from(e: dbmirror_spool::Error) -> Self {
        Error { kind: Kind::Runtime, message: e.to_string(), hint: None, source: Some(Box::new(e)) }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::caused_by(Kind::Runtime, "I/O error", e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_lists_each_code_once_from_the_kinds() {
        let table = [
            Exit::success("success"),
            Exit::failure(Kind::Runtime, "retry"),
            Exit::failure(Kind::Diverged, "restored"),
        ];
        assert_eq!(help(&table), "Exit codes:\n  0  success\n  1  retry\n  7  restored");
    }

    #[test]
    fn the_cause_stays_reachable_behind_the_message() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let e = Error::caused_by(Kind::Runtime, "could not read \"x\"", io).with_hint("Look.");
        assert_eq!(e.to_string(), "could not read \"x\": gone\nHINT:  Look.");
        let source = std::error::Error::source(&e).expect("the cause is kept");
        assert_eq!(source.downcast_ref::<std::io::Error>().map(|e| e.kind()), Some(std::io::ErrorKind::NotFound));
    }
}
