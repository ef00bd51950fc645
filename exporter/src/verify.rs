//! `verify`: compares every mirrored table of the master with the slave, when both can be
//! reached: per table, the row count and an order-independent hash of the rows, each computed
//! by one query on each side.
//!
//! A row's text is `ROW(columns...)::text` over the master's columns, in the master's order,
//! read under the canonical settings on both sides, so the comparison does not depend on either
//! side's defaults or on the slave's column order; the hash is the sum of the first 64 bits of
//! each row's md5. Run it when the slave has applied everything exported and the master is
//! quiet: it compares two moments, one on each side.

use dbmirror_cli::conninfo::Connection;
use postgres::Client;

use dbmirror_sql::CANONICAL_SETTINGS;

use crate::error::{Error, Kind};
use crate::master::{CaptureProblem, Master};
use dbmirror_sql::{quote_identifier, quote_literal};

/// One table's figures on one side.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Figures {
    pub rows: i64,
    pub hash: String,
}

/// The comparison of one table.
#[derive(Debug, serde::Serialize)]
pub struct Comparison {
    pub table: String,
    pub master: Figures,
    /// `None` when the table is missing on the slave or cannot be read there.
    pub slave: Option<Figures>,
    pub error: Option<String>,
}

impl Comparison {
    pub fn equal(&self) -> bool {
        self.slave.as_ref() == Some(&self.master)
    }
}

fn canonical(client: &mut Client) -> Result<(), Error> {
    let settings: String =
        CANONICAL_SETTINGS.iter().map(|(name, value)| format!("SET {name} = {};", quote_literal(value))).collect();
    Ok(client.batch_execute(&settings)?)
}

fn figures(client: &mut Client, table: &str, columns: &[String]) -> Result<Figures, postgres::Error> {
    // An alias no mirrored table will have a column of.
    let row = columns.iter().map(|c| format!("dbmirror_row.{}", quote_identifier(c))).collect::<Vec<_>>().join(", ");
    let query = format!(
        "SELECT count(*), coalesce(sum(('x' || substr(md5(ROW({row})::text), 1, 16))::bit(64)::bigint::numeric), 0)::text \
           FROM {table} dbmirror_row"
    );
    let result = client.query_one(&query, &[])?;
    Ok(Figures { rows: result.get(0), hash: result.get(1) })
}

/// Compares every mirrored table; the master's session is `master`, the slave is reached with
/// `slave`.
pub fn compare(master: &mut Master, slave: &Connection) -> Result<Vec<Comparison>, Error> {
    let mut slave = slave.connect("the slave", "dbmirror-export verify")?;
    canonical(&mut slave)?;
    let schema = master.schema().to_string();
    let client = master.client();
    canonical(client)?;
    let tables = client.query(
        &format!(
            "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname), \
                    ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a \
                           WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum) \
               FROM {schema}.dbmirror_mirrored_tables() m(tbl) \
               JOIN pg_catalog.pg_class c ON c.oid = m.tbl JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
              ORDER BY 1"
        ),
        &[],
    )?;
    let mut comparisons = Vec::with_capacity(tables.len());
    for row in tables {
        let (table, columns): (String, Vec<String>) = (row.get(0), row.get(1));
        let on_master = figures(master.client(), &table, &columns)?;
        let (on_slave, error) = match figures(&mut slave, &table, &columns) {
            Ok(figures) => (Some(figures), None),
            Err(e) if e.as_db_error().is_some() => {
                (None, Some(e.as_db_error().map(|d| d.message().to_string()).unwrap_or_default()))
            }
            Err(e) => return Err(Error::from(e).context("lost the slave")),
        };
        comparisons.push(Comparison { table, master: on_master, slave: on_slave, error });
    }
    Ok(comparisons)
}

/// Prints the comparisons and the master's capture problems; fails with [`Kind::Differs`] if any
/// table differs or any capture is incomplete (a table equal now can differ after the next
/// change that is not captured).
pub fn report(comparisons: &[Comparison], problems: &[CaptureProblem], json: bool) -> Result<(), Error> {
    let differing = comparisons.iter().filter(|c| !c.equal()).count();
    if json {
        #[derive(serde::Serialize)]
        struct Report<'a> {
            tables: &'a [Comparison],
            capture_problems: &'a [CaptureProblem],
        }
        let report = Report { tables: comparisons, capture_problems: problems };
        println!("{}", serde_json::to_string_pretty(&report).expect("comparisons always serialise"));
    } else {
        for problem in problems {
            println!("CAPTURE  {}", problem.problem);
        }
        for c in comparisons {
            match (&c.slave, &c.error) {
                (Some(slave), _) if c.equal() => {
                    println!("equal    {} ({} rows)", c.table, slave.rows)
                }
                (Some(slave), _) => println!(
                    "DIFFERS  {}: master {} rows (hash {}), slave {} rows (hash {})",
                    c.table, c.master.rows, c.master.hash, slave.rows, slave.hash
                ),
                (None, error) => println!(
                    "DIFFERS  {}: cannot read it on the slave: {}",
                    c.table,
                    error.as_deref().unwrap_or("unknown error")
                ),
            }
        }
    }
    if differing > 0 {
        return Err(Error::new(Kind::Differs, format!("{differing} of {} mirrored tables differ", comparisons.len()))
            .with_hint("Check that the slave has applied every file exported so far and that the master was quiet."));
    }
    if let Some(problem) = problems.first() {
        return Err(Error::new(
            Kind::Differs,
            format!("capture is incomplete on the master ({} problems): {}", problems.len(), problem.problem),
        )
        .with_hint(problem.hint.clone().unwrap_or_else(|| "See dbmirror_capture_problems() on the master.".into())));
    }
    Ok(())
}
