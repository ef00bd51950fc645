//! The slave's applied state, as kept by `sql/slave_setup.sql`'s table and guard.

use dbmirror_spool::sql::SLAVE_STATE_TABLE;
use dbmirror_spool::Checksum;
use postgres::{Client, NoTls};

use crate::error::{Error, Kind};

/// The SQL setup of a slave, the same file an operator runs with psql.
pub const SLAVE_SETUP_SQL: &str = include_str!("../../sql/slave_setup.sql");

fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// SQL that records, in the file's own transaction, the checksum of the file being applied, so
/// that the next file's `previous-sha256` can be checked against it.
pub fn record_checksum_sql(slave: &str, sql_sha256: &Checksum) -> String {
    format!(
        "UPDATE {SLAVE_STATE_TABLE} SET last_sha256 = {} WHERE slave_name = {}",
        quote_literal(&sql_sha256.to_string()),
        quote_literal(slave)
    )
}

/// Whether the slave has been prepared (the guard exists).
pub fn is_prepared(client: &mut Client) -> Result<bool, postgres::Error> {
    let row = client.query_one("SELECT pg_catalog.to_regclass($1) IS NOT NULL", &[&SLAVE_STATE_TABLE])?;
    Ok(row.get(0))
}

/// The last file number applied for `slave`, if any.
pub fn last_applied(client: &mut Client, slave: &str) -> Result<Option<i64>, postgres::Error> {
    let row =
        client.query_opt(&format!("SELECT last_number FROM {SLAVE_STATE_TABLE} WHERE slave_name = $1"), &[&slave])?;
    Ok(row.map(|r| r.get(0)))
}

/// Connects to a slave database as `application_name` and checks that it is prepared.
pub fn connect(config: &postgres::Config, application_name: &str) -> Result<Client, Error> {
    let mut client = connect_unchecked(config, application_name)?;
    if !is_prepared(&mut client)? {
        return Err(Error::new(Kind::NotPrepared, "the slave database is not prepared for dbmirror")
            .with_hint("Run dbmirror-apply init (or psql -f sql/slave_setup.sql) on the slave database."));
    }
    Ok(client)
}

/// Connects to a slave database as `application_name`, prepared or not.
pub fn connect_unchecked(config: &postgres::Config, application_name: &str) -> Result<Client, Error> {
    let mut config = config.clone();
    config.application_name(application_name);
    config.connect(NoTls).map_err(|e| Error::from(e).context("could not connect to the slave"))
}
