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

/// Statements sent together in one round trip, at most: a file of many small statements costs
/// a few round trips instead of one per statement, and memory stays bounded.
const BATCH_STATEMENTS: usize = 256;
const BATCH_BYTES: usize = 64 << 10;

/// Checked statements waiting to be sent as one simple-query message. They run one after the
/// other in the file's transaction, stopping at the first error, exactly as if sent one by one,
/// with one exception that the caller avoids: the server lexes a whole message before running
/// it, so a statement that changes how literals are lexed (`standard_conforming_strings`) is
/// never batched with the statements after it.
#[derive(Default)]
struct Batch {
    sql: String,
    first_line: u64,
    last_line: u64,
    statements: usize,
}

impl Batch {
    fn push(&mut self, sql: &str, line: u64) {
        if self.statements == 0 {
            self.first_line = line;
        }
        self.last_line = line;
        self.statements += 1;
        self.sql.push_str(sql);
        self.sql.push('\n');
    }

    fn full(&self) -> bool {
        self.statements >= BATCH_STATEMENTS || self.sql.len() >= BATCH_BYTES
    }

    fn send(&mut self, client: &mut Client) -> Result<(), ReplayError> {
        if self.statements == 0 {
            return Ok(());
        }
        let result = client.batch_execute(&self.sql);
        let statement = if self.statements == 1 {
            shown(self.sql.trim_end())
        } else {
            format!("one of the statements on lines {} to {}", self.first_line, self.last_line)
        };
        let line = self.first_line;
        *self = Batch::default();
        result.map_err(|error| ReplayError::Statement { line, statement, error })
    }
}

fn run(client: &mut Client, script: impl BufRead, before_commit: Option<&str>) -> Result<Replayed, ReplayError> {
    let mut reader = ScriptReader::new(script);
    let mut checker = Checker::default();
    let mut batch = Batch::default();
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
                done.statements += 1;
                match kind {
                    Kind::Copy => {
                        batch.send(client)?;
                        let fail = |error| ReplayError::Statement { line, statement: shown(&sql), error };
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
                            batch.push(&format!("{extra};"), line);
                        }
                        batch.push(&sql, line);
                        batch.send(client)?;
                    }
                    Kind::Session => {
                        batch.push(&sql, line);
                        batch.send(client)?;
                    }
                    Kind::Other => {
                        batch.push(&sql, line);
                        if batch.full() {
                            batch.send(client)?;
                        }
                    }
                }
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
