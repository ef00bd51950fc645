//! Running a transaction file against a slave the way `psql -v ON_ERROR_STOP=1 -f FILE` does:
//! one statement at a time in one session, with the simple query protocol, `COPY ... FROM
//! STDIN` fed from the lines that follow it, and a stop at the first error.
//!
//! Used by the applier and by the exporter's direct mode, so that a file, however it reaches
//! the slave, has one meaning. Memory is bounded by the largest single statement, not by the
//! size of the file: statements and COPY data are read and sent as they come.

use std::io::{BufRead, Write};

use dbmirror_script::{Item, ScriptError, ScriptReader};

use crate::grammar::{Checker, Kind};
use postgres::Client;

/// How a replay failed.
#[derive(Debug)]
pub enum ReplayError {
    /// The file could not be read or split into statements.
    Script(ScriptError),
    /// A statement failed on the slave; the file's transaction was rolled back.
    Statement {
        /// Line of the file where the statement starts.
        line: u64,
        /// The start of the statement.
        statement: String,
        error: postgres::Error,
    },
    /// The file holds something a transaction file never does; what it sent is rolled back.
    Unexpected { line: u64, what: String },
    /// A statement is not one the exporter writes (see [`crate::grammar`]); it was not sent,
    /// and what the file sent before it is rolled back.
    Refused { line: u64, statement: String, reason: String },
}

impl ReplayError {
    /// The SQLSTATE of a failed statement.
    pub fn code(&self) -> Option<&str> {
        match self {
            ReplayError::Statement { error, .. } => error.as_db_error().map(|db| db.code().code()),
            _ => None,
        }
    }

    /// Whether the connection itself failed (as opposed to the file or its SQL).
    pub fn is_connection(&self) -> bool {
        matches!(self, ReplayError::Statement { error, .. } if error.as_db_error().is_none())
    }
}

impl std::fmt::Display for ReplayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplayError::Script(e) => write!(f, "{e}"),
            ReplayError::Statement {
                line,
                statement,
                error,
            } => match error.as_db_error() {
                Some(db) => {
                    write!(
                        f,
                        "line {line}: {}: {}",
                        db.severity().to_lowercase(),
                        db.message()
                    )?;
                    if let Some(detail) = db.detail() {
                        write!(f, "\nDETAIL:  {detail}")?;
                    }
                    if let Some(hint) = db.hint() {
                        write!(f, "\nHINT:  {hint}")?;
                    }
                    write!(f, "\nSTATEMENT:  {statement}")
                }
                None => write!(f, "line {line}: connection to the slave failed: {error}"),
            },
            ReplayError::Unexpected { line, what } => write!(f, "line {line}: {what}"),
            ReplayError::Refused { line, statement, reason } => write!(
                f,
                "line {line}: statement refused, it is not one dbmirror-export writes: {reason}\nSTATEMENT:  {statement}"
            ),
        }
    }
}

impl std::error::Error for ReplayError {}

/// What a successful replay ran.
#[derive(Debug, Default, Clone, Copy)]
pub struct Replayed {
    pub statements: u64,
    pub copy_bytes: u64,
}

/// The longest prefix of a statement shown in messages.
const SHOWN: usize = 200;

fn shown(sql: &str) -> String {
    match sql.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}...", &sql[..cut]),
        None => sql.to_string(),
    }
}

/// Replays one file on `client`. Every statement is checked against the grammar of
/// transaction files ([`crate::grammar`]) before it is sent. `before_commit` runs in the file's
/// own transaction right before its COMMIT (the applier records the file's checksum there). On
/// any failure the transaction is rolled back and nothing of the file remains.
pub fn replay(client: &mut Client, script: impl BufRead, before_commit: Option<&str>) -> Result<Replayed, ReplayError> {
    let result = run(client, script, before_commit);
    if result.is_err() && !client.is_closed() {
        // Like psql exiting on ON_ERROR_STOP: whatever the file started does not survive.
        let _ = client.batch_execute("ROLLBACK");
    }
    result
}

fn run(client: &mut Client, script: impl BufRead, before_commit: Option<&str>) -> Result<Replayed, ReplayError> {
    let mut reader = ScriptReader::new(script);
    let mut checker = Checker::default();
    let mut done = Replayed::default();
    while let Some(item) = reader.next_item().map_err(ReplayError::Script)? {
        match item {
            Item::Meta { command, args, line } => {
                // The only meta-command the exporter writes; stopping on error is what we do anyway.
                let args = args.split_whitespace().collect::<Vec<_>>();
                if !(command == "set"
                    && args.len() == 2
                    && args[0] == "ON_ERROR_STOP"
                    && args[1].eq_ignore_ascii_case("on"))
                {
                    return Err(ReplayError::Unexpected {
                        line,
                        what: format!("unsupported psql meta-command \\{command}"),
                    });
                }
            }
            Item::Statement { sql, line } => {
                let kind = checker.check(&sql).map_err(|reason| ReplayError::Refused {
                    line,
                    statement: shown(&sql),
                    reason,
                })?;
                if (kind == Kind::Copy) != reader.awaiting_copy_data() {
                    return Err(ReplayError::Unexpected {
                        line,
                        what: "COPY statement and COPY data do not match".into(),
                    });
                }
                let fail = |error| ReplayError::Statement { line, statement: shown(&sql), error };
                match kind {
                    Kind::Copy => {
                        let mut writer = client.copy_in(sql.as_str()).map_err(fail)?;
                        loop {
                            match reader.next_item().map_err(ReplayError::Script)? {
                                Some(Item::CopyData(data)) => {
                                    done.copy_bytes += data.len() as u64;
                                    if writer.write_all(&data).is_err() {
                                        // The server says why when the COPY is finished.
                                        break;
                                    }
                                }
                                Some(Item::CopyEnd { .. }) => break,
                                other => {
                                    return Err(ReplayError::Unexpected {
                                        line,
                                        what: format!("COPY data expected, found {other:?}"),
                                    })
                                }
                            }
                        }
                        writer.finish().map_err(fail)?;
                    }
                    Kind::Commit => {
                        if let Some(extra) = before_commit {
                            client.batch_execute(extra).map_err(fail)?;
                        }
                        client.batch_execute(&sql).map_err(fail)?;
                    }
                    Kind::Other => client.batch_execute(&sql).map_err(fail)?,
                }
                done.statements += 1;
            }
            Item::CopyData(_) | Item::CopyEnd { .. } => {
                return Err(ReplayError::Unexpected {
                    line: reader.lines_read(),
                    what: "COPY data outside COPY".into(),
                })
            }
        }
    }
    if !checker.finished() {
        return Err(ReplayError::Unexpected { line: reader.lines_read(), what: "the file ends without COMMIT".into() });
    }
    Ok(done)
}
