//! The SQL contract of dbmirror, in one dependency-free place: the names of dbmirror's objects
//! on a slave, the settings under which values become text and are read back, the SQL scripts
//! in this directory, identifier and literal quoting, and the text format of `COPY`.
//!
//! The capture extension renders values under [`CANONICAL_SETTINGS`] and escapes them with
//! [`copy_text::escape_into`]; the exporter quotes names and values with [`quote`] and writes
//! the settings into every file; the applier's grammar check accepts exactly these names and
//! settings. Each fact lives here once so that the three cannot drift apart. What is not here:
//! parsing of whole statements (`dbmirror-replay`'s grammar) and the spool's files
//! (`dbmirror-spool`).

pub mod copy_text;
pub mod quote;

pub use quote::{push_literal, quote_identifier, quote_literal};

/// The SQL that prepares a slave (`dbmirror-apply init`), the same file an operator runs with
/// `psql -f sql/slave_setup.sql`.
pub const SLAVE_SETUP_SQL: &str = include_str!("../slave_setup.sql");

/// Schema of dbmirror's objects on a slave.
pub const SLAVE_SCHEMA: &str = "dbmirror";
/// Table with one row per slave name: the last applied file.
pub const SLAVE_STATE_TABLE: &str = "dbmirror.slave_state";
/// Table with one row per applied file: its number, master xid, export time and checksum.
pub const APPLIED_FILE_TABLE: &str = "dbmirror.applied_file";
/// `guard(slave, master, number, xid, previous_sha256, exported_at, committed_at)`: aborts a
/// file unless it is the next one, and records it. Files written before the guard took
/// `committed_at` call it with six arguments, and before it took `exported_at` with five.
pub const GUARD_FUNCTION: &str = "dbmirror.guard";
/// The current guard's signature, as `to_regprocedure` reads it: a slave without it was
/// prepared by an earlier version and needs `sql/slave_setup.sql` run again.
pub const GUARD_SIGNATURE: &str = "dbmirror.guard(text, text, bigint, bigint, text, timestamptz, timestamptz)";
/// `start_stream(slave, master, number, xid, exported_at, tables)`: takes the guard's place in
/// the first file of a snapshot; the slave follows the master from that file on, into empty
/// tables (or emptied ones, with [`REPLACE_SETTING`] on).
pub const START_FUNCTION: &str = "dbmirror.start_stream";
/// `snapshot_tables(tables)`: prepares the tables a snapshot fills (empty, or emptied with
/// [`REPLACE_SETTING`] on); after the guard in the first file of a copy of tables added to a
/// running slave.
pub const SNAPSHOT_TABLES_FUNCTION: &str = "dbmirror.snapshot_tables";
/// The session setting that lets a snapshot replace the rows of non-empty tables.
pub const REPLACE_SETTING: &str = "dbmirror.replace";
/// `one_row(count, what)`: fails a file when an UPDATE or DELETE did not find exactly one row.
pub const ONE_ROW_FUNCTION: &str = "dbmirror.one_row";
/// `old_value(column, 'old')`: whether a column still holds the value the master's row had
/// before the change (tables mirrored with `check_conflicts`).
pub const OLD_VALUE_FUNCTION: &str = "dbmirror.old_value";
/// `advance_sequence(sequence, value, is_called)`: moves a sequence forward, never back.
pub const SEQUENCE_FUNCTION: &str = "dbmirror.advance_sequence";
/// `check_table(table, columns, key)`: fails a file unless the slave's table has the master's
/// captured columns (`"name" TYPE`, in any order) and primary key (in key order).
pub const CHECK_TABLE_FUNCTION: &str = "dbmirror.check_table";
/// `ddl(statement, search_path [, tables])`: runs a schema change of the master as far as the
/// session's [`DDL_SETTING`] allows.
pub const DDL_FUNCTION: &str = "dbmirror.ddl";
/// `ddl`'s signature, as `to_regprocedure` reads it: a slave without it was prepared by an
/// earlier version, and would fail every file that checks a table's shape or carries DDL.
pub const DDL_SIGNATURE: &str = "dbmirror.ddl(text, text, text[])";
/// The session setting that says what DDL a slave runs: `refuse`, `mirrored` (the default:
/// only DDL on the tables the file names) or `any`.
pub const DDL_SETTING: &str = "dbmirror.ddl";
/// The slave's event triggers that hold DDL to the tables a file names under `mirrored`; only
/// a superuser can create them, and without them `mirrored` refuses all DDL.
pub const DDL_EVENT_TRIGGERS: [&str; 2] = ["dbmirror_slave_ddl_command_end", "dbmirror_slave_sql_drop"];

/// Settings a file sets for the session before its transaction starts: the encoding of the
/// file, and how psql must read its string literals.
pub const SESSION_SETTINGS: &[(&str, &str)] = &[("client_encoding", "UTF8"), ("standard_conforming_strings", "on")];

/// The canonical settings: the master renders values under them (the capture extension's
/// `dbmirror_values()` refuses to run without them), and every file sets them for its own
/// transaction (`SET LOCAL`), so that the slave's input functions read back exactly the values
/// the master had, whatever either side's defaults.
pub const CANONICAL_SETTINGS: &[(&str, &str)] = &[
    ("DateStyle", "ISO, YMD"),
    ("IntervalStyle", "postgres"),
    ("TimeZone", "UTC"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
    ("lc_monetary", "C"),
];

/// Further settings a file sets for its own transaction: how XML values are read, and the
/// replica role, so that the slave's own triggers and foreign-key actions do not fire a second
/// time for changes the master's already made.
pub const APPLY_SETTINGS: &[(&str, &str)] = &[("xmloption", "content"), ("session_replication_role", "replica")];

/// SQLSTATE of the guard's "already applied".
pub const ALREADY_APPLIED: &str = "DM001";
/// SQLSTATE of the guard's "out of order".
pub const OUT_OF_ORDER: &str = "DM002";
/// SQLSTATE of the guard's "another master".
pub const OTHER_MASTER: &str = "DM003";
/// SQLSTATE of the guard's "does not follow the previous file".
pub const BROKEN_CHAIN: &str = "DM004";
/// SQLSTATE of `one_row()`: the slave has drifted.
pub const DRIFT: &str = "DM005";
/// SQLSTATE of the guard's "not the file that was applied under this number": the master's
/// history diverged (restored from an older copy, say).
pub const DIVERGED: &str = "DM006";
/// SQLSTATE of `start_stream()`: a snapshot found a table that is not empty.
pub const NOT_EMPTY: &str = "DM007";
/// SQLSTATE of `check_table()`: the slave's table differs from the master's (or is missing).
pub const SCHEMA_DIFFERS: &str = "DM008";
/// SQLSTATE of `ddl()`: the slave's [`DDL_SETTING`] does not let the file's DDL run.
pub const DDL_REFUSED: &str = "DM009";

#[cfg(test)]
mod tests {
    use super::*;

    /// The names the tools use are the names `slave_setup.sql` creates: a rename on one side
    /// alone fails here rather than on a slave.
    #[test]
    fn every_slave_name_is_created_by_the_setup_script() {
        let setup = SLAVE_SETUP_SQL;
        for name in [
            SLAVE_STATE_TABLE,
            APPLIED_FILE_TABLE,
            GUARD_FUNCTION,
            START_FUNCTION,
            SNAPSHOT_TABLES_FUNCTION,
            ONE_ROW_FUNCTION,
            OLD_VALUE_FUNCTION,
            SEQUENCE_FUNCTION,
            CHECK_TABLE_FUNCTION,
            DDL_FUNCTION,
        ] {
            assert!(
                setup.contains(&format!("{name}(")) || setup.contains(&format!("{name} (")),
                "{name} is not created by slave_setup.sql"
            );
        }
        assert!(setup.contains(&format!("CREATE SCHEMA IF NOT EXISTS {SLAVE_SCHEMA}")));
        assert!(setup.contains(&format!("'{REPLACE_SETTING}'")));
        assert!(setup.contains(&format!("current_setting('{DDL_SETTING}', true)")));
        assert!(setup.contains(&format!("FUNCTION {DDL_FUNCTION}(statement text, search_path text, tables text[]")));
        assert_eq!(DDL_SIGNATURE, format!("{DDL_FUNCTION}(text, text, text[])"));
        for trigger in DDL_EVENT_TRIGGERS {
            assert!(setup.contains(&format!("CREATE EVENT TRIGGER {trigger} ")), "{trigger}");
            assert!(setup.contains(&format!("ALTER EVENT TRIGGER {trigger} ENABLE ALWAYS")), "{trigger}");
        }
        for state in [
            ALREADY_APPLIED,
            OUT_OF_ORDER,
            OTHER_MASTER,
            BROKEN_CHAIN,
            DRIFT,
            DIVERGED,
            NOT_EMPTY,
            SCHEMA_DIFFERS,
            DDL_REFUSED,
        ] {
            assert!(setup.contains(&format!("'{state}'")), "SQLSTATE {state} is not raised by slave_setup.sql");
        }
    }
}
