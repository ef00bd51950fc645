//! Writing the SQL of one transaction file: the header, the preamble that fixes the session
//! settings and runs the guard, one statement per change, the sequences, and COMMIT.
//!
//! Every identifier is double-quoted and every value is a single-quoted literal (or NULL)
//! that the column's input function reads back, under the canonical settings the preamble
//! sets (the same under which the master rendered the values). Runs of inserts into one table
//! become `COPY ... FROM STDIN`, which psql and the applier both stream; the master renders
//! each row in COPY's text format, so such rows go into the file as they come. UPDATE and
//! DELETE name `ONLY` the table (a row of an inheritance child with the same key is another
//! row) and are wrapped so that a statement that does not find exactly one row fails the file;
//! for tables mirrored with `check_conflicts` they also require the row's old values. An update
//! that sets a GENERATED ALWAYS identity column, which the slave can set only on INSERT, is a
//! delete and an insert of the whole row. docs/format.md shows a complete file.

use std::borrow::Cow;
use std::io::{self, Write};
use std::rc::Rc;

use chrono::SecondsFormat;
use dbmirror_spool::Header;
use dbmirror_sql::{
    push_literal, quote_identifier, quote_literal, APPLY_SETTINGS, CANONICAL_SETTINGS, CHECK_TABLE_FUNCTION,
    DDL_FUNCTION, GUARD_FUNCTION, OLD_VALUE_FUNCTION, ONE_ROW_FUNCTION, SEQUENCE_FUNCTION, SESSION_SETTINGS,
    SNAPSHOT_TABLES_FUNCTION, START_FUNCTION,
};

/// Inserts in a row into one table from which on COPY is used instead of INSERT: below it,
/// the extra round trips of COPY cost more than parsing a few INSERTs.
pub const COPY_THRESHOLD: usize = 4;

/// A mirrored table, as the SQL names it. The pieces every statement on it repeats are
/// quoted once, here.
#[derive(Debug)]
pub struct Table {
    /// The table's oid on the master, where known (0 otherwise).
    pub relid: u32,
    /// Schema-qualified, quoted name.
    pub name: String,
    /// Quoted column names, in shape order.
    pub columns: Vec<String>,
    /// Key columns, as positions in `columns`.
    pub key: Vec<usize>,
    /// Identity columns GENERATED ALWAYS, as positions in `columns`.
    pub identity_always: Vec<usize>,
    /// The quoted column names, comma-separated.
    column_list: String,
    /// What the row-count checks of updates and deletes name, as literals.
    update_label: String,
    delete_label: String,
    /// `SELECT dbmirror.check_table(...);`: the slave's check that the table has the columns,
    /// types and key the changes were captured with. None where the definitions are unknown
    /// (a snapshot's tables, read from the catalog as they are now).
    check: Option<String>,
}

impl Table {
    /// A table of the shape `columns` (names), `definitions` (each column's `"name" type` as
    /// the slave checks it; empty for no check), `key` and `identity_always`.
    pub fn new(
        schema: &str,
        table: &str,
        columns: &[String],
        definitions: &[String],
        key: &[usize],
        identity_always: &[usize],
    ) -> Self {
        let name = format!("{}.{}", quote_identifier(schema), quote_identifier(table));
        let columns: Vec<String> = columns.iter().map(|c| quote_identifier(c)).collect();
        let array = |items: &mut dyn Iterator<Item = &str>| items.map(quote_literal).collect::<Vec<_>>().join(", ");
        let check = (!definitions.is_empty() && !key.is_empty()).then(|| {
            format!(
                "SELECT {CHECK_TABLE_FUNCTION}({}, ARRAY[{}], ARRAY[{}]);\n",
                quote_literal(&name),
                array(&mut definitions.iter().map(String::as_str)),
                array(&mut key.iter().map(|&k| columns[k].as_str())),
            )
        });
        Self {
            relid: 0,
            check,
            column_list: columns.join(", "),
            update_label: quote_literal(&format!("update of {name}")),
            delete_label: quote_literal(&format!("delete from {name}")),
            name,
            columns,
            key: key.to_vec(),
            identity_always: identity_always.to_vec(),
        }
    }
}

/// Text values of a row, mostly borrowed from the master's result; `None` is SQL NULL.
pub type Values<'a> = Vec<Option<Cow<'a, str>>>;

/// One captured change, decoded.
#[derive(Debug)]
pub enum Change<'a> {
    /// `row` is the new row in COPY's text format, as the master rendered it.
    Insert {
        table: Rc<Table>,
        row: &'a str,
    },
    /// `values` holds the key columns and the changed columns; `unchanged` marks the others.
    /// `old_key` is set when the key itself changed; `old`, for tables mirrored with
    /// `check_conflicts`, holds the old values of the changed columns.
    Update {
        table: Rc<Table>,
        old_key: Option<Values<'a>>,
        values: Values<'a>,
        unchanged: Option<&'a [u8]>,
        old: Option<Values<'a>>,
    },
    /// `old`, for tables mirrored with `check_conflicts`, holds the whole old row.
    Delete {
        table: Rc<Table>,
        key: Values<'a>,
        old: Option<Values<'a>>,
    },
    Truncate {
        table: Rc<Table>,
    },
    /// A schema change: the statement as the master ran it, under `search_path`, and the
    /// tables it changes (quoted names, and their oids on the master).
    Ddl {
        statement: &'a str,
        search_path: &'a str,
        tables: Vec<&'a str>,
        relids: Vec<u32>,
    },
}

impl Change<'_> {
    /// The oids of the tables changed, on the master.
    pub fn relids(&self) -> Vec<u32> {
        match self {
            Change::Insert { table, .. }
            | Change::Update { table, .. }
            | Change::Delete { table, .. }
            | Change::Truncate { table } => vec![table.relid],
            Change::Ddl { relids, .. } => relids.clone(),
        }
    }
}

/// A sequence position to mirror.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SequenceValue {
    /// Schema-qualified, quoted name.
    pub sequence: String,
    pub value: i64,
}

/// The fields of a row in COPY's text format, for the held inserts of a short run.
fn copy_fields(row: &str) -> io::Result<Values<'_>> {
    dbmirror_sql::copy_text::fields(row).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// `'slave', 'master', number, xid`: how the guard and the start of a stream name the file.
fn file_identity(header: &Header) -> String {
    format!(
        "{}, {}, {}, {}",
        quote_literal(&header.slave),
        quote_literal(&header.master.to_string()),
        header.number,
        header.xid
    )
}

/// A run of inserts into one table, held back until we know whether it is long enough for
/// COPY. Once it is, rows are streamed straight into the COPY block. Held rows are owned: a
/// change lives only as long as the master's result row.
struct InsertRun {
    table: Rc<Table>,
    held: Vec<String>,
    copying: bool,
}

/// Writes one transaction file.
pub struct FileWriter<W: Write> {
    out: W,
    run: Option<InsertRun>,
    truncates: Vec<Rc<Table>>,
    /// Tables (shapes) the slave has been asked to check in this file.
    checked: Vec<Rc<Table>>,
    /// The statement or COPY row being formed, written out whole.
    line: Vec<u8>,
}

impl<W: Write> FileWriter<W> {
    /// Writes the header and the preamble: settings, BEGIN, and the guard.
    pub fn begin(mut out: W, header: &Header) -> io::Result<Self> {
        Self::head(&mut out, header)?;
        Ok(Self::body(out))
    }

    /// Writes what is particular to one slave's file at its start: the header, the preamble
    /// and the guard (the slave's name, the file's number, the checksum of the slave's previous
    /// file). [`begin`](Self::begin) is this and [`body`](Self::body); a file rendered for
    /// several slaves at once has this written into each slave's output, and its body once.
    pub fn head(out: &mut W, header: &Header) -> io::Result<()> {
        Self::preamble(out, header)?;
        let previous = header.previous_sha256.map_or_else(|| "NULL".to_string(), |c| quote_literal(&c.to_string()));
        // The assignment time, as the header gives it (microseconds, UTC): it tells two exports
        // of one number apart even where a master restored from an older copy reuses the xid,
        // and a file written again after a crash keeps it. The master's commit time follows,
        // for the slave's lag.
        let time = |t: &chrono::DateTime<chrono::Utc>| quote_literal(&t.to_rfc3339_opts(SecondsFormat::Micros, true));
        writeln!(
            out,
            "SELECT {GUARD_FUNCTION}({}, {previous}, {}, {});",
            file_identity(header),
            time(&header.exported_at),
            header.committed_at.as_ref().map_or_else(|| "NULL".to_string(), time),
        )
    }

    /// A writer of the changes of a file whose [`head`](Self::head) is written already: the
    /// part of a transaction file that is the same for every slave (the changes, with the
    /// state they need: runs of inserts, truncates, shape checks). Writes nothing yet.
    pub fn body(out: W) -> Self {
        Self { out, run: None, truncates: Vec::new(), checked: Vec::new(), line: Vec::new() }
    }

    /// Writes the header and the preamble of the first file of a snapshot, which starts the
    /// slave's stream (in the guard's place) and empties or checks the snapshot's `tables`.
    pub fn begin_snapshot(mut out: W, header: &Header, tables: &[Rc<Table>]) -> io::Result<Self> {
        Self::preamble(&mut out, header)?;
        let names: Vec<String> = tables.iter().map(|t| quote_literal(&t.name)).collect();
        writeln!(
            out,
            "SELECT {START_FUNCTION}({}, {}, ARRAY[{}]);",
            file_identity(header),
            quote_literal(&header.exported_at.to_rfc3339_opts(SecondsFormat::Micros, true)),
            names.join(", "),
        )?;
        Ok(Self { out, run: None, truncates: Vec::new(), checked: Vec::new(), line: Vec::new() })
    }

    /// Prepares the tables that a copy fills, in a running slave's stream (the first file of a
    /// whole snapshot does it in [`FileWriter::begin_snapshot`]).
    pub fn snapshot_tables(&mut self, tables: &[Rc<Table>]) -> io::Result<()> {
        self.flush_pending()?;
        let names: Vec<String> = tables.iter().map(|t| quote_literal(&t.name)).collect();
        writeln!(self.out, "SELECT {SNAPSHOT_TABLES_FUNCTION}(ARRAY[{}]);", names.join(", "))
    }

    /// The header, the session settings, BEGIN and the transaction's settings.
    fn preamble(out: &mut W, header: &Header) -> io::Result<()> {
        out.write_all(header.render().as_bytes())?;
        out.write_all(b"\\set ON_ERROR_STOP on\n")?;
        for (name, value) in SESSION_SETTINGS {
            writeln!(out, "SET {name} = {};", quote_literal(value))?;
        }
        out.write_all(b"BEGIN;\n")?;
        for (name, value) in CANONICAL_SETTINGS.iter().chain(APPLY_SETTINGS) {
            writeln!(out, "SET LOCAL {name} = {};", quote_literal(value))?;
        }
        Ok(())
    }

    /// Bytes of SQL written so far into a file whose output counts them.
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// Writes one change.
    pub fn change(&mut self, change: Change) -> io::Result<()> {
        match change {
            Change::Insert { table, row } => {
                self.flush_truncates()?;
                if self.run.as_ref().is_some_and(|run| !Rc::ptr_eq(&run.table, &table)) {
                    self.flush_run()?;
                }
                self.check(&table)?;
                self.insert(table, row)
            }
            Change::Truncate { table } => {
                self.flush_run()?;
                self.truncates.push(table);
                Ok(())
            }
            Change::Ddl { statement, search_path, tables, relids: _ } => {
                self.flush_pending()?;
                let tables: Vec<String> = tables.into_iter().map(quote_literal).collect();
                let tables = if tables.is_empty() { String::new() } else { format!(", ARRAY[{}]", tables.join(", ")) };
                writeln!(
                    self.out,
                    "SELECT {DDL_FUNCTION}({}, {}{tables});",
                    quote_literal(statement),
                    quote_literal(search_path)
                )
            }
            Change::Update { table, old_key, values, unchanged, old } => {
                self.flush_pending()?;
                self.check(&table)?;
                let is_unchanged =
                    |i: usize| unchanged.is_some_and(|bits| bits.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0));
                if table.identity_always.iter().any(|&i| !is_unchanged(i)) {
                    return self.replace(&table, old_key.as_ref(), &values, &is_unchanged, old.as_ref());
                }
                self.update(&table, old_key.as_ref(), &values, is_unchanged, old.as_ref())
            }
            Change::Delete { table, key, old } => {
                self.flush_pending()?;
                self.check(&table)?;
                self.delete(&table, key.iter().map(Option::as_deref), None, old.as_ref())
            }
        }
    }

    /// Writes the sequences and COMMIT, and returns the output.
    pub fn finish(mut self, sequences: &[SequenceValue]) -> io::Result<W> {
        self.end_body()?;
        Self::tail(&mut self.out, sequences)?;
        Ok(self.out)
    }

    /// Writes what the body still holds back (a short run of inserts, truncates), so that
    /// [`into_inner`](Self::into_inner) gives an output for [`tail`](Self::tail) to end.
    pub fn end_body(&mut self) -> io::Result<()> {
        self.flush_pending()
    }

    /// The output, once [`end_body`](Self::end_body) has written everything held back.
    pub fn into_inner(self) -> W {
        self.out
    }

    /// Writes what is particular to one slave's file at its end: the sequences (read for each
    /// slave when its numbers were assigned) and COMMIT.
    pub fn tail(out: &mut W, sequences: &[SequenceValue]) -> io::Result<()> {
        for s in sequences {
            writeln!(out, "SELECT {SEQUENCE_FUNCTION}({}, {}, true);", quote_literal(&s.sequence), s.value)?;
        }
        out.write_all(b"COMMIT;\n")?;
        out.flush()
    }

    /// Asks the slave to check `table`'s shape, the first time the file changes it: before its
    /// first change, the slave stops on a table that differs with a message naming the
    /// difference, not with an error in the middle of a statement. (A DDL change gives the
    /// table a new shape, checked again before the next change.)
    fn check(&mut self, table: &Rc<Table>) -> io::Result<()> {
        let Some(check) = &table.check else {
            return Ok(());
        };
        if self.checked.iter().any(|t| Rc::ptr_eq(t, table)) {
            return Ok(());
        }
        self.checked.push(table.clone());
        self.out.write_all(check.as_bytes())
    }

    fn insert(&mut self, table: Rc<Table>, row: &str) -> io::Result<()> {
        let run = self.run.get_or_insert_with(|| InsertRun { table, held: Vec::new(), copying: false });
        if run.copying {
            return write_copy_row(&mut self.out, &mut self.line, row);
        }
        run.held.push(row.to_string());
        if run.held.len() >= COPY_THRESHOLD {
            run.copying = true;
            writeln!(self.out, "COPY {} ({}) FROM STDIN;", run.table.name, run.table.column_list)?;
            for row in std::mem::take(&mut run.held) {
                write_copy_row(&mut self.out, &mut self.line, &row)?;
            }
        }
        Ok(())
    }

    fn update(
        &mut self,
        table: &Table,
        old_key: Option<&Values<'_>>,
        values: &Values<'_>,
        is_unchanged: impl Fn(usize) -> bool,
        old: Option<&Values<'_>>,
    ) -> io::Result<()> {
        let line = &mut self.line;
        line.clear();
        line.extend_from_slice(b"WITH m AS (UPDATE ONLY ");
        line.extend_from_slice(table.name.as_bytes());
        let mut separator: &[u8] = b" SET ";
        for i in (0..table.columns.len()).filter(|&i| !is_unchanged(i)) {
            line.extend_from_slice(separator);
            line.extend_from_slice(table.columns[i].as_bytes());
            line.extend_from_slice(b" = ");
            push_literal(line, values[i].as_deref());
            separator = b", ";
        }
        match old_key {
            Some(old) => push_key_condition(line, table, old.iter().map(Option::as_deref)),
            None => push_key_condition(line, table, table.key.iter().map(|&k| values[k].as_deref())),
        }
        if let Some(old) = old {
            push_old_values(line, table, old, |i| !is_unchanged(i));
        }
        push_row_check(line, &table.update_label);
        self.out.write_all(line)
    }

    /// A delete found by `key`; with `old`, only if the row still has the old values of the
    /// columns `checked` selects (all of them when None).
    fn delete<'v>(
        &mut self,
        table: &Table,
        key: impl Iterator<Item = Option<&'v str>>,
        checked: Option<&dyn Fn(usize) -> bool>,
        old: Option<&Values<'_>>,
    ) -> io::Result<()> {
        let line = &mut self.line;
        line.clear();
        line.extend_from_slice(b"WITH m AS (DELETE FROM ONLY ");
        line.extend_from_slice(table.name.as_bytes());
        push_key_condition(line, table, key);
        if let Some(old) = old {
            match checked {
                Some(checked) => push_old_values(line, table, old, checked),
                None => push_old_values(line, table, old, |i| !table.key.contains(&i)),
            }
        }
        push_row_check(line, &table.delete_label);
        self.out.write_all(line)
    }

    /// An update that sets an always-identity column: the old row is deleted and the new one
    /// inserted whole (capture records every column of such an update, the unchanged ones too).
    fn replace(
        &mut self,
        table: &Table,
        old_key: Option<&Values<'_>>,
        values: &Values<'_>,
        is_unchanged: &dyn Fn(usize) -> bool,
        old: Option<&Values<'_>>,
    ) -> io::Result<()> {
        let key: Vec<Option<&str>> = match old_key {
            Some(old) => old.iter().map(Option::as_deref).collect(),
            None => table.key.iter().map(|&k| values[k].as_deref()).collect(),
        };
        let changed = |i: usize| !is_unchanged(i);
        self.delete(table, key.into_iter(), Some(&changed), old)?;
        push_insert(&mut self.line, table, values);
        self.out.write_all(&self.line)
    }

    fn flush_pending(&mut self) -> io::Result<()> {
        self.flush_run()?;
        self.flush_truncates()
    }

    fn flush_run(&mut self) -> io::Result<()> {
        let Some(run) = self.run.take() else {
            return Ok(());
        };
        if run.copying {
            return self.out.write_all(b"\\.\n");
        }
        for row in run.held {
            push_insert(&mut self.line, &run.table, &copy_fields(&row)?);
            self.out.write_all(&self.line)?;
        }
        Ok(())
    }

    /// Consecutive truncates become one TRUNCATE, as `TRUNCATE a, b` or `TRUNCATE ... CASCADE`
    /// did on the master: tables that reference each other can only be truncated together.
    /// Each table is named with its own ONLY (in `TRUNCATE ONLY a, b`, ONLY binds to `a`
    /// alone, and `b` would take its inheritance children with it): every table truncated on
    /// the master was captured on its own.
    fn flush_truncates(&mut self) -> io::Result<()> {
        if self.truncates.is_empty() {
            return Ok(());
        }
        for table in std::mem::take(&mut self.truncates) {
            self.check(&table)?;
            self.truncates.push(table);
        }
        let names: Vec<String> = self.truncates.iter().map(|t| format!("ONLY {}", t.name)).collect();
        writeln!(self.out, "TRUNCATE {};", names.join(", "))?;
        self.truncates.clear();
        Ok(())
    }
}

/// Forms `INSERT INTO table (columns) OVERRIDING SYSTEM VALUE VALUES (values);` in `line`.
fn push_insert(line: &mut Vec<u8>, table: &Table, values: &Values<'_>) {
    line.clear();
    line.extend_from_slice(b"INSERT INTO ");
    line.extend_from_slice(table.name.as_bytes());
    line.extend_from_slice(b" (");
    line.extend_from_slice(table.column_list.as_bytes());
    line.extend_from_slice(b") OVERRIDING SYSTEM VALUE VALUES (");
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            line.extend_from_slice(b", ");
        }
        push_literal(line, value.as_deref());
    }
    line.extend_from_slice(b");\n");
}

/// Writes a row of COPY text and its newline in one write.
fn write_copy_row(out: &mut impl Write, line: &mut Vec<u8>, row: &str) -> io::Result<()> {
    line.clear();
    line.extend_from_slice(row.as_bytes());
    line.push(b'\n');
    out.write_all(line)
}

/// Appends ` WHERE k1 = 'v1' AND k2 = 'v2'`, the key values given in key order.
fn push_key_condition<'a>(line: &mut Vec<u8>, table: &Table, key: impl Iterator<Item = Option<&'a str>>) {
    let mut separator: &[u8] = b" WHERE ";
    for (&k, value) in table.key.iter().zip(key) {
        line.extend_from_slice(separator);
        line.extend_from_slice(table.columns[k].as_bytes());
        line.extend_from_slice(b" = ");
        push_literal(line, value);
        separator = b" AND ";
    }
}

/// Appends ` AND dbmirror.old_value("c", 'old')` for each column `checked` selects: the row must
/// still hold the value the master's row had before the change.
fn push_old_values(line: &mut Vec<u8>, table: &Table, old: &Values<'_>, checked: impl Fn(usize) -> bool) {
    for (i, value) in old.iter().enumerate().filter(|(i, _)| checked(*i)) {
        line.extend_from_slice(b" AND ");
        line.extend_from_slice(OLD_VALUE_FUNCTION.as_bytes());
        line.push(b'(');
        line.extend_from_slice(table.columns[i].as_bytes());
        line.extend_from_slice(b", ");
        push_literal(line, value.as_deref());
        line.push(b')');
    }
}

/// Ends an UPDATE or DELETE with the check that it touched exactly one row.
fn push_row_check(line: &mut Vec<u8>, label: &str) {
    line.extend_from_slice(b" RETURNING 1) SELECT ");
    line.extend_from_slice(ONE_ROW_FUNCTION.as_bytes());
    line.extend_from_slice(b"(count(*), ");
    line.extend_from_slice(label.as_bytes());
    line.extend_from_slice(b") FROM m;\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use dbmirror_spool::{Checksum, FORMAT_VERSION};

    fn header() -> Header {
        Header {
            format: FORMAT_VERSION,
            master: 7,
            database: "db".into(),
            slave: "o'brien".into(),
            number: 2,
            xid: 900,
            changes: 0,
            exported_at: Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
            committed_at: Some(Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 1).unwrap()),
            previous_sha256: Some(Checksum::of(b"1")),
        }
    }

    fn table() -> Rc<Table> {
        Rc::new(Table::new("public", "My \"T\"", &["id".into(), "Name".into(), "n".into()], &[], &[0], &[]))
    }

    fn body(changes: Vec<Change>) -> String {
        let mut writer = FileWriter::begin(Vec::new(), &header()).unwrap();
        for change in changes {
            writer.change(change).unwrap();
        }
        let out = writer.finish(&[SequenceValue { sequence: "\"public\".\"s\"".into(), value: 41 }]).unwrap();
        let text = String::from_utf8(out).unwrap();
        let start = text.find("SELECT dbmirror.guard").unwrap();
        text[start..].to_string()
    }

    fn row<'a>(values: &[Option<&'a str>]) -> Values<'a> {
        values.iter().map(|v| v.map(Cow::Borrowed)).collect()
    }

    fn checked_table(columns: &[&str]) -> Rc<Table> {
        let names: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
        let definitions: Vec<String> = columns.iter().map(|c| format!("\"{c}\" integer")).collect();
        Rc::new(Table::new("s", "t", &names, &definitions, &[0], &[]))
    }

    /// Each shape of a table is checked once, before its first change; a DDL change comes in its
    /// place, quoted as a literal, with the tables it names.
    #[test]
    fn shapes_are_checked_before_their_first_change_and_ddl_comes_in_its_place() {
        let before = checked_table(&["id", "v"]);
        let after = checked_table(&["id", "v", "w"]);
        let text = body(vec![
            Change::Insert { table: before.clone(), row: "1\t2" },
            Change::Delete { table: before.clone(), key: row(&[Some("1")]), old: None },
            Change::Ddl {
                statement: "ALTER TABLE t ADD w int -- it's",
                search_path: "\"$user\", public",
                tables: vec!["\"s\".\"t\""],
                relids: vec![5],
            },
            Change::Truncate { table: after.clone() },
            Change::Ddl {
                statement: "CREATE VIEW v AS SELECT 1",
                search_path: "public",
                tables: vec![],
                relids: vec![],
            },
        ]);
        let check =
            |columns: &str| format!("SELECT dbmirror.check_table('\"s\".\"t\"', ARRAY[{columns}], ARRAY['\"id\"']);\n");
        let expected = [
            check("'\"id\" integer', '\"v\" integer'"),
            "INSERT INTO \"s\".\"t\" (\"id\", \"v\") OVERRIDING SYSTEM VALUE VALUES ('1', '2');\n".into(),
            "WITH m AS (DELETE FROM ONLY \"s\".\"t\" WHERE \"id\" = '1' RETURNING 1) SELECT dbmirror.one_row(count(*), 'delete from \"s\".\"t\"') FROM m;\n".into(),
            "SELECT dbmirror.ddl('ALTER TABLE t ADD w int -- it''s', '\"$user\", public', ARRAY['\"s\".\"t\"']);\n".into(),
            check("'\"id\" integer', '\"v\" integer', '\"w\" integer'"),
            "TRUNCATE ONLY \"s\".\"t\";\n".into(),
            "SELECT dbmirror.ddl('CREATE VIEW v AS SELECT 1', 'public');\n".into(),
        ]
        .concat();
        let changes = &text[text.find('\n').unwrap() + 1..text.find("SELECT dbmirror.advance_sequence").unwrap()];
        assert_eq!(changes, expected);
        // A table read from the catalog (a snapshot's) has no definitions, and no check.
        assert!(!body(vec![Change::Truncate { table: table() }]).contains("check_table"));
    }

    /// The guard of a file written without the master's commit time passes NULL in its place.
    #[test]
    fn guard_passes_null_without_a_commit_time() {
        let header = Header { committed_at: None, ..header() };
        let text = String::from_utf8(FileWriter::begin(Vec::new(), &header).unwrap().finish(&[]).unwrap()).unwrap();
        assert!(text.contains("'2026-01-02T03:04:05.000000Z', NULL);\n"), "{text}");
    }

    #[test]
    fn preamble_sets_canonical_settings_and_guards() {
        let mut writer = FileWriter::begin(Vec::new(), &header()).unwrap();
        writer.change(Change::Truncate { table: table() }).unwrap();
        let text = String::from_utf8(writer.finish(&[]).unwrap()).unwrap();
        let after_header = &text[header().render().len()..];
        assert_eq!(
            after_header,
            "\\set ON_ERROR_STOP on\nSET client_encoding = 'UTF8';\nSET standard_conforming_strings = 'on';\nBEGIN;\n\
             SET LOCAL DateStyle = 'ISO, YMD';\nSET LOCAL IntervalStyle = 'postgres';\nSET LOCAL TimeZone = 'UTC';\n\
             SET LOCAL extra_float_digits = '3';\nSET LOCAL bytea_output = 'hex';\nSET LOCAL lc_monetary = 'C';\n\
             SET LOCAL xmloption = 'content';\nSET LOCAL session_replication_role = 'replica';\n\
             SELECT dbmirror.guard('o''brien', '7', 2, 900, '6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b', '2026-01-02T03:04:05.000000Z', '2026-01-02T03:04:01.000000Z');\n\
             TRUNCATE ONLY \"public\".\"My \"\"T\"\"\";\nCOMMIT;\n"
        );
    }

    /// Rows come from the master in COPY's text format: short runs become INSERTs with the
    /// values unescaped and quoted, long ones COPY with the rows as they came.
    #[test]
    fn short_insert_runs_are_inserts_and_long_ones_copy() {
        let t = table();
        let ins = |row: &'static str| Change::Insert { table: t.clone(), row };
        let text = body(vec![ins("1\ta'b\t1.5"), ins("2\t\\N\t1.5"), ins("3\ttab\\t, \\\\ and \\n\t1.5")]);
        assert_eq!(
            text.lines().skip(1).take(4).collect::<Vec<_>>(),
            [
                "INSERT INTO \"public\".\"My \"\"T\"\"\" (\"id\", \"Name\", \"n\") OVERRIDING SYSTEM VALUE VALUES ('1', 'a''b', '1.5');",
                "INSERT INTO \"public\".\"My \"\"T\"\"\" (\"id\", \"Name\", \"n\") OVERRIDING SYSTEM VALUE VALUES ('2', NULL, '1.5');",
                "INSERT INTO \"public\".\"My \"\"T\"\"\" (\"id\", \"Name\", \"n\") OVERRIDING SYSTEM VALUE VALUES ('3', 'tab\t, \\ and ",
                "', '1.5');",
            ]
        );
        let text = body(vec![
            ins("1\ttab\\there\t1.5"),
            ins("2\tback\\\\slash\t1.5"),
            ins("3\tnew\\nline\\r\t1.5"),
            ins("4\t\\N\t1.5"),
            ins("5\t\\\\.\t1.5"),
        ]);
        assert_eq!(
            text.lines().skip(1).take(7).collect::<Vec<_>>(),
            [
                "COPY \"public\".\"My \"\"T\"\"\" (\"id\", \"Name\", \"n\") FROM STDIN;",
                "1\ttab\\there\t1.5",
                "2\tback\\\\slash\t1.5",
                "3\tnew\\nline\\r\t1.5",
                "4\t\\N\t1.5",
                "5\t\\\\.\t1.5",
                "\\.",
            ]
        );
    }

    #[test]
    fn updates_set_changed_columns_and_find_the_row_by_key() {
        let t = table();
        let text = body(vec![
            Change::Update {
                table: t.clone(),
                old_key: None,
                values: row(&[Some("1"), None, Some("2")]),
                unchanged: Some(&[0b010]),
                old: None,
            },
            Change::Update {
                table: t.clone(),
                old_key: Some(row(&[Some("1")])),
                values: row(&[Some("9"), None, None]),
                unchanged: Some(&[0b110]),
                old: None,
            },
            Change::Delete { table: t.clone(), key: row(&[Some("9")]), old: None },
        ]);
        let q = "\"public\".\"My \"\"T\"\"\"";
        assert_eq!(
            text.lines().skip(1).take(3).collect::<Vec<_>>(),
            [
                format!("WITH m AS (UPDATE ONLY {q} SET \"id\" = '1', \"n\" = '2' WHERE \"id\" = '1' RETURNING 1) SELECT dbmirror.one_row(count(*), 'update of \"public\".\"My \"\"T\"\"\"') FROM m;"),
                format!("WITH m AS (UPDATE ONLY {q} SET \"id\" = '9' WHERE \"id\" = '1' RETURNING 1) SELECT dbmirror.one_row(count(*), 'update of \"public\".\"My \"\"T\"\"\"') FROM m;"),
                format!("WITH m AS (DELETE FROM ONLY {q} WHERE \"id\" = '9' RETURNING 1) SELECT dbmirror.one_row(count(*), 'delete from \"public\".\"My \"\"T\"\"\"') FROM m;"),
            ]
        );
        assert!(text.ends_with("SELECT dbmirror.advance_sequence('\"public\".\"s\"', 41, true);\nCOMMIT;\n"));
    }

    #[test]
    fn consecutive_truncates_become_one_statement() {
        let a = table();
        let b = Rc::new(Table::new("s", "b", &["k".into()], &[], &[0], &[]));
        let text = body(vec![
            Change::Truncate { table: a.clone() },
            Change::Truncate { table: b.clone() },
            Change::Insert { table: b.clone(), row: "1" },
            Change::Truncate { table: b },
        ]);
        let lines: Vec<&str> = text.lines().skip(1).take(3).collect();
        assert_eq!(lines[0], "TRUNCATE ONLY \"public\".\"My \"\"T\"\"\", ONLY \"s\".\"b\";");
        assert!(lines[1].starts_with("INSERT INTO \"s\".\"b\""));
        assert_eq!(lines[2], "TRUNCATE ONLY \"s\".\"b\";");
    }

    /// Everything the writer can write passes the applier's grammar check, statement by
    /// statement, as the applier reads a file: the writer and the checker agree.
    #[test]
    fn the_checker_accepts_everything_the_writer_writes() {
        let t = table();
        let identity = Rc::new(Table::new("s", "id", &["id".into(), "v".into()], &[], &[0], &[0]));
        let ins = |row: &'static str| Change::Insert { table: t.clone(), row };
        let mut changes = vec![ins("1\ta\t1"), ins("2\t\\N\t2")];
        changes.extend((3..9).map(|_| ins("3\tc\t3")));
        changes.extend([
            Change::Update {
                table: t.clone(),
                old_key: Some(row(&[Some("1")])),
                values: row(&[Some("9"), None, Some("2")]),
                unchanged: Some(&[0b010]),
                old: Some(row(&[Some("1"), None, None])),
            },
            Change::Update {
                table: identity.clone(),
                old_key: Some(row(&[Some("1")])),
                values: row(&[Some("2"), Some("kept")]),
                unchanged: Some(&[0b10]),
                old: Some(row(&[Some("1"), None])),
            },
            Change::Update {
                table: identity.clone(),
                old_key: None,
                values: row(&[Some("2"), Some("new")]),
                unchanged: Some(&[0b01]),
                old: None,
            },
            Change::Delete { table: t.clone(), key: row(&[Some("9")]), old: Some(row(&[Some("9"), Some("x"), None])) },
            Change::Delete { table: t.clone(), key: row(&[Some("8")]), old: None },
            Change::Truncate { table: t.clone() },
            Change::Truncate { table: identity.clone() },
            ins("4\td\t4"),
        ]);
        let sequences = [
            SequenceValue { sequence: "\"public\".\"s\"".into(), value: 41 },
            SequenceValue { sequence: "\"My \"\"S\"\"\".\"s\"".into(), value: -3 },
        ];
        let write = |changes: Vec<Change<'static>>, sequences: &[SequenceValue]| {
            let mut writer = FileWriter::begin(Vec::new(), &header()).unwrap();
            for change in changes {
                writer.change(change).unwrap();
            }
            String::from_utf8(writer.finish(sequences).unwrap()).unwrap()
        };
        let text = write(changes, &sequences);
        assert!(
            text.contains("DELETE FROM ONLY \"s\".\"id\" WHERE \"id\" = '1' AND dbmirror.old_value(\"id\", '1')"),
            "{text}"
        );
        assert!(
            text.contains("INSERT INTO \"s\".\"id\" (\"id\", \"v\") OVERRIDING SYSTEM VALUE VALUES ('2', 'kept');"),
            "{text}"
        );
        assert!(text.contains("COPY "), "a long run of inserts is written as COPY: {text}");
        assert!(check_file(&text) > 20);
        // The smallest files the writer writes: only sequences, only one change.
        assert!(check_file(&write(Vec::new(), &sequences[..1])) > 0);
        assert!(check_file(&write(vec![ins("5\te\t5")], &[])) > 0);
        // The first file of a snapshot.
        let mut writer = FileWriter::begin_snapshot(Vec::new(), &header(), &[t.clone(), identity.clone()]).unwrap();
        for row in ["1\ta\t1", "2\tb\t2", "3\tc\t3", "4\td\t4", "5\te\t5"] {
            writer.change(Change::Insert { table: t.clone(), row }).unwrap();
        }
        writer.change(Change::Insert { table: identity.clone(), row: "1\tx" }).unwrap();
        let text = String::from_utf8(writer.finish(&sequences).unwrap()).unwrap();
        assert!(text.contains("SELECT dbmirror.start_stream('o''brien', '7', 2, 900, "), "{text}");
        assert!(check_file(&text) > 5);
        // The first file of a copy of tables added to a running slave.
        let mut writer = FileWriter::begin(Vec::new(), &header()).unwrap();
        writer.snapshot_tables(std::slice::from_ref(&t)).unwrap();
        for row in ["1\ta\t1", "2\tb\t2", "3\tc\t3", "4\td\t4", "5\te\t5"] {
            writer.change(Change::Insert { table: t.clone(), row }).unwrap();
        }
        let text = String::from_utf8(writer.finish(&[]).unwrap()).unwrap();
        assert!(text.contains("SELECT dbmirror.snapshot_tables(ARRAY['\"public\".\"My \"\"T\"\"\"']);"), "{text}");
        assert!(check_file(&text) > 5);
    }

    /// Runs a file through the applier's grammar check as the applier reads it, and returns how
    /// many statements it holds; panics at the first statement refused.
    fn check_file(text: &str) -> usize {
        let mut reader = dbmirror_script::ScriptReader::new(text.as_bytes());
        let mut checker = dbmirror_replay::grammar::Checker::default();
        let mut statements = 0;
        while let Some(item) = reader.next_item().unwrap() {
            if let dbmirror_script::Item::Statement { sql, line } = item {
                checker.check(&sql).unwrap_or_else(|e| panic!("line {line}: {e}\n{sql}\n{text}"));
                statements += 1;
            }
        }
        assert!(checker.finished(), "the file ends before its COMMIT:\n{text}");
        statements
    }
}
