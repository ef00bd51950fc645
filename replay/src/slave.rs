//! The slave's applied state, as kept by `sql/slave_setup.sql`'s tables and guard: the last
//! applied file per slave name, and the history of applied files.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use dbmirror_cli::conninfo::Connection;
use dbmirror_spool::Checksum;
use dbmirror_sql::quote_literal;
use dbmirror_sql::{APPLIED_FILE_TABLE, DDL_EVENT_TRIGGERS, DDL_SIGNATURE, GUARD_SIGNATURE, SLAVE_STATE_TABLE};
use postgres::Client;

use dbmirror_cli::error::{Error, Kind};

/// The SQL setup of a slave, the same file an operator runs with psql.
pub use dbmirror_sql::SLAVE_SETUP_SQL;

/// SQL that records, in the file's own transaction, the checksum of the file being applied: in
/// the slave's state, so that the next file's `previous-sha256` can be checked against it, and
/// in the history, so that a file arriving again under this number can be compared with it.
/// The guard has just made the file's number the last one.
pub fn record_checksum_sql(slave: &str, sql_sha256: &Checksum) -> String {
    let (sha256, slave) = (quote_literal(&sql_sha256.to_string()), quote_literal(slave));
    format!(
        "UPDATE {SLAVE_STATE_TABLE} SET last_sha256 = {sha256} WHERE slave_name = {slave}; \
         UPDATE {APPLIED_FILE_TABLE} a SET sha256 = {sha256} FROM {SLAVE_STATE_TABLE} s \
          WHERE a.slave_name = {slave} AND s.slave_name = {slave} AND a.number = s.last_number"
    )
}

/// What to do when a file numbered like an applied one is another export of that number.
pub const DIVERGED_HINT: &str = "Was the master restored from an older copy? The slave has applied changes that the \
                                 master's history no longer has: make the slave a copy of the master again before \
                                 applying its files.";

/// How far a slave database is prepared for dbmirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preparation {
    /// No dbmirror objects.
    None,
    /// Prepared by an earlier version: `sql/slave_setup.sql` must run again to upgrade it.
    Outdated,
    Current,
}

/// How far the slave database is prepared.
pub fn preparation(client: &mut Client) -> Result<Preparation, postgres::Error> {
    let row = client.query_one(
        "SELECT pg_catalog.to_regclass($1) IS NOT NULL, \
                pg_catalog.to_regclass($2) IS NOT NULL AND pg_catalog.to_regprocedure($3) IS NOT NULL \
                AND pg_catalog.to_regprocedure($4) IS NOT NULL",
        &[&SLAVE_STATE_TABLE, &APPLIED_FILE_TABLE, &GUARD_SIGNATURE, &DDL_SIGNATURE],
    )?;
    Ok(match (row.get(0), row.get(1)) {
        (false, _) => Preparation::None,
        (true, false) => Preparation::Outdated,
        (true, true) => Preparation::Current,
    })
}

/// Whether the slave has the event triggers that hold DDL to the tables a file names (see
/// [`dbmirror_sql::DDL_EVENT_TRIGGERS`]), enabled as files need them.
pub fn checks_ddl(client: &mut Client) -> Result<bool, postgres::Error> {
    let row = client.query_one(
        "SELECT pg_catalog.count(*) FROM pg_catalog.pg_event_trigger \
          WHERE evtname::text = ANY ($1::text[]) AND evtenabled = 'A'",
        &[&DDL_EVENT_TRIGGERS.as_slice()],
    )?;
    Ok(row.get::<_, i64>(0) == DDL_EVENT_TRIGGERS.len() as i64)
}

/// The last file number applied for `slave`, if any.
pub fn last_applied(client: &mut Client, slave: &str) -> Result<Option<i64>, postgres::Error> {
    let row =
        client.query_opt(&format!("SELECT last_number FROM {SLAVE_STATE_TABLE} WHERE slave_name = $1"), &[&slave])?;
    Ok(row.map(|r| r.get(0)))
}

/// What the slave recorded about one applied file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedFile {
    pub xid: i64,
    /// When the master assigned the number; unknown for files whose guard did not say.
    pub exported_at: Option<DateTime<Utc>>,
    /// The checksum of the file's SQL text; unknown for files applied by hand.
    pub sha256: Option<String>,
}

/// What the slave recorded about the applied files numbered `numbers`, by number. Numbers
/// without a record (deleted, or applied before the slave kept a history) are left out.
pub fn applied_files(
    client: &mut Client,
    slave: &str,
    numbers: &[u64],
) -> Result<BTreeMap<u64, AppliedFile>, postgres::Error> {
    let numbers: Vec<i64> = numbers.iter().filter_map(|n| i64::try_from(*n).ok()).collect();
    let rows = client.query(
        &format!(
            "SELECT number, xid, exported_at, sha256 FROM {APPLIED_FILE_TABLE} \
              WHERE slave_name = $1 AND number = ANY($2)"
        ),
        &[&slave, &numbers],
    )?;
    Ok(rows
        .iter()
        .map(|row| {
            let number: i64 = row.get(0);
            (number as u64, AppliedFile { xid: row.get(1), exported_at: row.get(2), sha256: row.get(3) })
        })
        .collect())
}

/// Connects to a slave database as `application_name` and checks that it is prepared, and
/// prepared by this version.
pub fn connect(config: &Connection, application_name: &str) -> Result<Client, Error> {
    let mut client = connect_unchecked(config, application_name)?;
    match preparation(&mut client)? {
        Preparation::Current => Ok(client),
        Preparation::None => Err(Error::new(Kind::NotPrepared, "the slave database is not prepared for dbmirror")
            .with_hint("Run dbmirror-apply init (or psql -f sql/slave_setup.sql) on the slave database.")),
        Preparation::Outdated => Err(Error::new(
            Kind::NotPrepared,
            "the slave database was prepared by an earlier version of dbmirror: it lacks the history of applied files, or the \
             functions that check a table's shape and run the master's DDL",
        )
        .with_hint(
            "Run dbmirror-apply init (or psql -f sql/slave_setup.sql) on the slave database: it upgrades it in place and keeps what was applied.",
        )),
    }
}

/// Connects to a slave database as `application_name`, prepared or not.
pub fn connect_unchecked(config: &Connection, application_name: &str) -> Result<Client, Error> {
    config.connect("the slave", application_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The guard says the same when psql runs a file.
    #[test]
    fn the_guard_gives_the_same_hint_for_a_diverged_history() {
        assert!(SLAVE_SETUP_SQL.contains(&format!("HINT = '{}'", DIVERGED_HINT.replace('\'', "''"))));
    }
}
