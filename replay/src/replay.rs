//! Running a transaction file against a slave the way `psql -v ON_ERROR_STOP=1 -f FILE` does:
//! one statement at a time in one session, with the simple query protocol, `COPY ... FROM
//! STDIN` fed from the lines that follow it, and a stop at the first error.
//!
//! Used by the applier and by the exporter's direct mode, so that a file, however it reaches
//! the slave, has one meaning. Memory is bounded by the largest single statement, not by the
//! size of the file: statements and COPY data are read and sent as they come.

use std::io::{BufRead, Write};

use dbmirror_script::{Item, ScriptError, ScriptReader};

use crate::grammar::{Checker, DdlPolicy, Kind, Refusal};
use postgres::Client;

/// How a replay failed.
#[derive(Debug)]
pub enum ReplayError {
    /// The file could not be opened.
    Open(std::io::Error),
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
    /// One of several statements sent together failed, and running them again one by one did
    /// not show which (see [`replay`]); the file's transaction was rolled back.
    Batch {
        /// Lines where the first and the last of the statements start.
        first_line: u64,
        last_line: u64,
        error: postgres::Error,
    },
    /// The file holds something a transaction file never does; what it sent is rolled back.
    Unexpected { line: u64, what: String },
    /// A statement is not one the exporter writes (see [`crate::grammar`]); it was not sent,
    /// and what the file sent before it is rolled back.
    Refused { line: u64, statement: String, reason: Refusal },
}

/// SQLSTATE classes of failures that are not the file's fault: the slave went away, was shut
/// down, cancelled the statement, ran out of resources, or a concurrent transaction conflicted.
const TRANSIENT_CLASSES: [&str; 5] = ["08", "53", "57", "58", "40"];

impl ReplayError {
    fn database_error(&self) -> Option<&postgres::Error> {
        match self {
            ReplayError::Statement { error, .. } | ReplayError::Batch { error, .. } => Some(error),
            _ => None,
        }
    }

    /// The SQLSTATE of a failed statement.
    pub fn code(&self) -> Option<&str> {
        self.database_error().and_then(|e| e.as_db_error()).map(|db| db.code().code())
    }

    /// Whether the connection itself failed (as opposed to the file or its SQL).
    pub fn is_connection(&self) -> bool {
        self.database_error().is_some_and(|e| e.as_db_error().is_none())
    }

    /// Whether the file carries DDL that the slave's policy does not let run: refused by the
    /// grammar under [`DdlPolicy::Refuse`], or by the slave's `dbmirror.ddl()`
    /// ([`dbmirror_sql::DDL_REFUSED`]). The file is genuine; the slave's setting stops it.
    pub fn is_ddl_refused(&self) -> bool {
        match self {
            ReplayError::Refused { reason, .. } => reason.is_ddl(),
            _ => self.code() == Some(dbmirror_sql::DDL_REFUSED),
        }
    }

    /// Whether the failure is not the file's fault, and the same file may well apply later:
    /// a lost connection, or a statement that failed for a passing reason (see
    /// [`TRANSIENT_CLASSES`]).
    pub fn is_transient(&self) -> bool {
        self.is_connection() || self.code().is_some_and(|code| TRANSIENT_CLASSES.iter().any(|c| code.starts_with(c)))
    }
}

/// The parts of a server error worth showing, each on its own line as psql shows them.
fn write_db_error(f: &mut std::fmt::Formatter<'_>, db: &postgres::error::DbError) -> std::fmt::Result {
    write!(f, "{}: {}", db.severity().to_lowercase(), db.message())?;
    if let Some(detail) = db.detail() {
        write!(f, "\nDETAIL:  {detail}")?;
    }
    if let Some(hint) = db.hint() {
        write!(f, "\nHINT:  {hint}")?;
    }
    Ok(())
}

impl std::fmt::Display for ReplayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplayError::Open(e) => write!(f, "could not open the file: {e}"),
            ReplayError::Script(e) => write!(f, "{e}"),
            ReplayError::Statement { line, statement, error } => match error.as_db_error() {
                Some(db) => {
                    write!(f, "line {line}: ")?;
                    write_db_error(f, db)?;
                    write!(f, "\nSTATEMENT:  {statement}")
                }
                None => write!(f, "line {line}: connection to the slave failed: {error}"),
            },
            ReplayError::Batch { first_line, last_line, error } => match error.as_db_error() {
                Some(db) => {
                    write!(f, "one of the statements on lines {first_line} to {last_line}: ")?;
                    write_db_error(f, db)
                }
                None => write!(f, "lines {first_line} to {last_line}: connection to the slave failed: {error}"),
            },
            ReplayError::Unexpected { line, what } => write!(f, "line {line}: {what}"),
            ReplayError::Refused { line, statement, reason } if reason.is_ddl() => {
                write!(f, "line {line}: statement refused: {reason}\nSTATEMENT:  {statement}")
            }
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

/// Replays one file on `client`; `open` gives the file's statements. Every statement is
/// checked against the grammar of transaction files ([`crate::grammar`]) before it is sent,
/// DDL under the slave's policy `ddl`.
/// `before_commit` runs in the file's own transaction right before its COMMIT (the applier
/// records the file's checksum there). On any failure the transaction is rolled back and
/// nothing of the file remains.
///
/// Statements are sent in batches, so a failed batch does not say which of its statements
/// failed. Only then, the file is opened again and run statement by statement in a transaction
/// that is always rolled back, to name the failing statement and its line: the fast path
/// stays fast, and the error names what an operator has to look at.
pub fn replay<R: BufRead>(
    client: &mut Client,
    mut open: impl FnMut() -> std::io::Result<R>,
    before_commit: Option<&str>,
    ddl: DdlPolicy,
) -> Result<Replayed, ReplayError> {
    let script = open().map_err(ReplayError::Open)?;
    let result = run(client, script, before_commit, ddl, Mode::Apply);
    if result.is_err() && !client.is_closed() {
        // Like psql exiting on ON_ERROR_STOP: whatever the file started does not survive.
        let _ = client.batch_execute("ROLLBACK");
    }
    match result {
        Err(batch @ ReplayError::Batch { first_line, last_line, .. }) if !batch.is_transient() => {
            let lines = Mode::Pinpoint { from: first_line, to: last_line };
            Err(pinpoint(client, open, ddl, lines).unwrap_or(batch))
        }
        result => result,
    }
}

/// Runs the file again in a transaction that is rolled back whatever happens, the statements of
/// the failed batch (`mode` gives their lines) one by one, and returns the failure of the first
/// statement that fails, if one does.
fn pinpoint<R: BufRead>(
    client: &mut Client,
    mut open: impl FnMut() -> std::io::Result<R>,
    ddl: DdlPolicy,
    mode: Mode,
) -> Option<ReplayError> {
    let script = open().ok()?;
    let result = run(client, script, None, ddl, mode);
    if !client.is_closed() {
        let _ = client.batch_execute("ROLLBACK");
    }
    match result {
        Err(exact @ ReplayError::Statement { .. }) if !exact.is_connection() => Some(exact),
        _ => None,
    }
}

/// How [`run`] sends a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// In batches, committing at the file's COMMIT.
    Apply,
    /// The statements starting on lines `from` to `to` one by one (those before in batches, as
    /// they were), then stop; where the file commits, check deferred constraints instead. The
    /// caller rolls back.
    Pinpoint { from: u64, to: u64 },
}

impl Mode {
    /// Whether the statement starting on `line` is sent alone.
    fn alone(self, line: u64) -> bool {
        matches!(self, Mode::Pinpoint { from, .. } if line >= from)
    }

    /// Whether the run is over before the statement starting on `line`.
    fn done_before(self, line: u64) -> bool {
        matches!(self, Mode::Pinpoint { to, .. } if line > to)
    }
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
        let batch = std::mem::take(self);
        result.map_err(|error| match batch.statements {
            1 => ReplayError::Statement { line: batch.first_line, statement: shown(batch.sql.trim_end()), error },
            _ => ReplayError::Batch { first_line: batch.first_line, last_line: batch.last_line, error },
        })
    }
}

fn run(
    client: &mut Client,
    script: impl BufRead,
    before_commit: Option<&str>,
    ddl: DdlPolicy,
    mode: Mode,
) -> Result<Replayed, ReplayError> {
    let mut reader = ScriptReader::new(script);
    let mut checker = Checker::new(ddl);
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
                if mode.done_before(line) {
                    return Ok(done);
                }
                if mode.alone(line) {
                    batch.send(client)?;
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
                    Kind::Commit if mode != Mode::Apply => {
                        batch.send(client)?;
                        // What COMMIT would check last; the caller rolls back.
                        client
                            .batch_execute("SET CONSTRAINTS ALL IMMEDIATE")
                            .map_err(|error| ReplayError::Statement { line, statement: shown(&sql), error })?;
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
                        if batch.full() || mode.alone(line) {
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
