//! Writing the SQL of one transaction file: the header, the preamble that fixes the session
//! settings and runs the guard, one statement per change, the sequences, and COMMIT.
//!
//! Every identifier is double-quoted and every value is a single-quoted literal (or NULL)
//! that the column's input function reads back, under the canonical settings the preamble
//! sets (the same under which the master rendered the values). Runs of inserts into one table
//! become `COPY ... FROM STDIN`, which psql and the applier both stream. UPDATE and DELETE are
//! wrapped so that a statement that does not find exactly one row fails the file.
//! docs/format.md shows a complete file.

use std::io::{self, Write};
use std::rc::Rc;

use dbmirror_spool::sql::{
    APPLY_SETTINGS, CANONICAL_SETTINGS, GUARD_FUNCTION, ONE_ROW_FUNCTION, SEQUENCE_FUNCTION, SESSION_SETTINGS,
};
use dbmirror_spool::Header;

/// Inserts in a row into one table from which on COPY is used instead of INSERT: below it,
/// the extra round trips of COPY cost more than parsing a few INSERTs.
pub const COPY_THRESHOLD: usize = 4;

/// A mirrored table, as the SQL names it.
#[derive(Debug)]
pub struct Table {
    /// Schema-qualified, quoted name.
    pub name: String,
    /// Quoted column names, in shape order.
    pub columns: Vec<String>,
    /// Key columns, as positions in `columns`.
    pub key: Vec<usize>,
}

impl Table {
    pub fn new(schema: &str, table: &str, columns: &[String], key: &[usize]) -> Self {
        Self {
            name: format!("{}.{}", quote_identifier(schema), quote_identifier(table)),
            columns: columns.iter().map(|c| quote_identifier(c)).collect(),
            key: key.to_vec(),
        }
    }
}

/// Text values of a row; `None` is SQL NULL.
pub type Values = Vec<Option<String>>;

/// One captured change, decoded.
#[derive(Debug)]
pub enum Change {
    Insert {
        table: Rc<Table>,
        values: Values,
    },
    /// `values` holds the key columns and the changed columns; `unchanged` marks the others.
    /// `old_key` is set when the key itself changed.
    Update {
        table: Rc<Table>,
        old_key: Option<Values>,
        values: Values,
        unchanged: Option<Vec<u8>>,
    },
    Delete {
        table: Rc<Table>,
        key: Values,
    },
    Truncate {
        table: Rc<Table>,
    },
}

/// A sequence position to mirror.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SequenceValue {
    /// Schema-qualified, quoted name.
    pub sequence: String,
    pub value: i64,
}

/// `name` as a double-quoted SQL identifier.
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `value` as a single-quoted SQL literal (standard_conforming_strings is on in every file).
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

fn literal(value: &Option<String>) -> String {
    value.as_deref().map_or_else(|| "NULL".to_string(), quote_literal)
}

/// Appends `value` escaped for COPY's text format.
fn copy_field(out: &mut Vec<u8>, value: &Option<String>) {
    let Some(value) = value else {
        out.extend_from_slice(b"\\N");
        return;
    };
    for &b in value.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => out.push(b),
        }
    }
}

/// A run of inserts into one table, held back until we know whether it is long enough for
/// COPY. Once it is, rows are streamed straight into the COPY block.
struct InsertRun {
    table: Rc<Table>,
    held: Vec<Values>,
    copying: bool,
}

/// Writes one transaction file.
pub struct FileWriter<W: Write> {
    out: W,
    run: Option<InsertRun>,
    truncates: Vec<Rc<Table>>,
    line: Vec<u8>,
}

impl<W: Write> FileWriter<W> {
    /// Writes the header and the preamble: settings, BEGIN, and the guard.
    pub fn begin(mut out: W, header: &Header) -> io::Result<Self> {
        out.write_all(header.render().as_bytes())?;
        out.write_all(b"\\set ON_ERROR_STOP on\n")?;
        for (name, value) in SESSION_SETTINGS {
            writeln!(out, "SET {name} = {};", quote_literal(value))?;
        }
        out.write_all(b"BEGIN;\n")?;
        for (name, value) in CANONICAL_SETTINGS.iter().chain(APPLY_SETTINGS) {
            writeln!(out, "SET LOCAL {name} = {};", quote_literal(value))?;
        }
        let previous = header.previous_sha256.map_or_else(|| "NULL".to_string(), |c| quote_literal(&c.to_string()));
        writeln!(
            out,
            "SELECT {GUARD_FUNCTION}({}, {}, {}, {}, {previous});",
            quote_literal(&header.slave),
            quote_literal(&header.master.to_string()),
            header.number,
            header.xid,
        )?;
        Ok(Self { out, run: None, truncates: Vec::new(), line: Vec::new() })
    }

    /// Writes one change.
    pub fn change(&mut self, change: Change) -> io::Result<()> {
        match change {
            Change::Insert { table, values } => {
                self.flush_truncates()?;
                self.insert(table, values)
            }
            Change::Truncate { table } => {
                self.flush_run()?;
                self.truncates.push(table);
                Ok(())
            }
            Change::Update { table, old_key, values, unchanged } => {
                self.flush_pending()?;
                self.update(&table, old_key.as_ref(), &values, unchanged.as_deref())
            }
            Change::Delete { table, key } => {
                self.flush_pending()?;
                let what = quote_literal(&format!("delete from {}", table.name));
                writeln!(
                    self.out,
                    "WITH m AS (DELETE FROM {} WHERE {} RETURNING 1) SELECT {ONE_ROW_FUNCTION}(count(*), {what}) FROM m;",
                    table.name,
                    key_condition(&table, &key),
                )
            }
        }
    }

    /// Writes the sequences and COMMIT, and returns the output.
    pub fn finish(mut self, sequences: &[SequenceValue]) -> io::Result<W> {
        self.flush_pending()?;
        for s in sequences {
            writeln!(self.out, "SELECT {SEQUENCE_FUNCTION}({}, {}, true);", quote_literal(&s.sequence), s.value)?;
        }
        self.out.write_all(b"COMMIT;\n")?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn insert(&mut self, table: Rc<Table>, values: Values) -> io::Result<()> {
        if self.run.as_ref().is_some_and(|run| !Rc::ptr_eq(&run.table, &table)) {
            self.flush_run()?;
        }
        let run = self.run.get_or_insert_with(|| InsertRun { table, held: Vec::new(), copying: false });
        if run.copying {
            return write_copy_row(&mut self.out, &mut self.line, &values);
        }
        run.held.push(values);
        if run.held.len() >= COPY_THRESHOLD {
            run.copying = true;
            writeln!(self.out, "COPY {} ({}) FROM STDIN;", run.table.name, run.table.columns.join(", "))?;
            for values in std::mem::take(&mut run.held) {
                write_copy_row(&mut self.out, &mut self.line, &values)?;
            }
        }
        Ok(())
    }

    fn update(
        &mut self,
        table: &Table,
        old_key: Option<&Values>,
        values: &Values,
        unchanged: Option<&[u8]>,
    ) -> io::Result<()> {
        let is_unchanged =
            |i: usize| unchanged.is_some_and(|bits| bits.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0));
        let set: Vec<String> = (0..table.columns.len())
            .filter(|&i| !is_unchanged(i))
            .map(|i| format!("{} = {}", table.columns[i], literal(&values[i])))
            .collect();
        let key: Values = match old_key {
            Some(old) => old.clone(),
            None => table.key.iter().map(|&k| values[k].clone()).collect(),
        };
        let what = quote_literal(&format!("update of {}", table.name));
        writeln!(
            self.out,
            "WITH m AS (UPDATE {} SET {} WHERE {} RETURNING 1) SELECT {ONE_ROW_FUNCTION}(count(*), {what}) FROM m;",
            table.name,
            set.join(", "),
            key_condition(table, &key),
        )
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
        for values in run.held {
            let list: Vec<String> = values.iter().map(literal).collect();
            writeln!(
                self.out,
                "INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE VALUES ({});",
                run.table.name,
                run.table.columns.join(", "),
                list.join(", ")
            )?;
        }
        Ok(())
    }

    /// Consecutive truncates become one TRUNCATE, as `TRUNCATE a, b` or `TRUNCATE ... CASCADE`
    /// did on the master: tables that reference each other can only be truncated together.
    fn flush_truncates(&mut self) -> io::Result<()> {
        if self.truncates.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = self.truncates.iter().map(|t| t.name.as_str()).collect();
        writeln!(self.out, "TRUNCATE ONLY {};", names.join(", "))?;
        self.truncates.clear();
        Ok(())
    }
}

fn write_copy_row(out: &mut impl Write, line: &mut Vec<u8>, values: &Values) -> io::Result<()> {
    line.clear();
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            line.push(b'\t');
        }
        copy_field(line, value);
    }
    line.push(b'\n');
    out.write_all(line)
}

fn key_condition(table: &Table, key: &Values) -> String {
    table
        .key
        .iter()
        .zip(key)
        .map(|(&k, value)| format!("{} = {}", table.columns[k], literal(value)))
        .collect::<Vec<_>>()
        .join(" AND ")
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
            previous_sha256: Some(Checksum::of(b"1")),
        }
    }

    fn table() -> Rc<Table> {
        Rc::new(Table::new("public", "My \"T\"", &["id".into(), "Name".into(), "n".into()], &[0]))
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

    fn row(values: &[Option<&str>]) -> Values {
        values.iter().map(|v| v.map(str::to_string)).collect()
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
             SELECT dbmirror.guard('o''brien', '7', 2, 900, '6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b');\n\
             TRUNCATE ONLY \"public\".\"My \"\"T\"\"\";\nCOMMIT;\n"
        );
    }

    #[test]
    fn short_insert_runs_are_inserts_and_long_ones_copy() {
        let t = table();
        let ins = |id: &str, name: Option<&str>| Change::Insert {
            table: t.clone(),
            values: row(&[Some(id), name, Some("1.5")]),
        };
        let text = body(vec![ins("1", Some("a'b")), ins("2", None)]);
        assert_eq!(
            text.lines().skip(1).take(2).collect::<Vec<_>>(),
            [
                "INSERT INTO \"public\".\"My \"\"T\"\"\" (\"id\", \"Name\", \"n\") OVERRIDING SYSTEM VALUE VALUES ('1', 'a''b', '1.5');",
                "INSERT INTO \"public\".\"My \"\"T\"\"\" (\"id\", \"Name\", \"n\") OVERRIDING SYSTEM VALUE VALUES ('2', NULL, '1.5');",
            ]
        );
        let text = body(vec![
            ins("1", Some("tab\there")),
            ins("2", Some("back\\slash")),
            ins("3", Some("new\nline\r")),
            ins("4", None),
            ins("5", Some("\\.")),
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
                unchanged: Some(vec![0b010]),
            },
            Change::Update {
                table: t.clone(),
                old_key: Some(row(&[Some("1")])),
                values: row(&[Some("9"), None, None]),
                unchanged: Some(vec![0b110]),
            },
            Change::Delete { table: t.clone(), key: row(&[Some("9")]) },
        ]);
        let q = "\"public\".\"My \"\"T\"\"\"";
        assert_eq!(
            text.lines().skip(1).take(3).collect::<Vec<_>>(),
            [
                format!("WITH m AS (UPDATE {q} SET \"id\" = '1', \"n\" = '2' WHERE \"id\" = '1' RETURNING 1) SELECT dbmirror.one_row(count(*), 'update of \"public\".\"My \"\"T\"\"\"') FROM m;"),
                format!("WITH m AS (UPDATE {q} SET \"id\" = '9' WHERE \"id\" = '1' RETURNING 1) SELECT dbmirror.one_row(count(*), 'update of \"public\".\"My \"\"T\"\"\"') FROM m;"),
                format!("WITH m AS (DELETE FROM {q} WHERE \"id\" = '9' RETURNING 1) SELECT dbmirror.one_row(count(*), 'delete from \"public\".\"My \"\"T\"\"\"') FROM m;"),
            ]
        );
        assert!(text.ends_with("SELECT dbmirror.advance_sequence('\"public\".\"s\"', 41, true);\nCOMMIT;\n"));
    }

    #[test]
    fn consecutive_truncates_become_one_statement() {
        let a = table();
        let b = Rc::new(Table::new("s", "b", &["k".into()], &[0]));
        let text = body(vec![
            Change::Truncate { table: a.clone() },
            Change::Truncate { table: b.clone() },
            Change::Insert { table: b.clone(), values: row(&[Some("1")]) },
            Change::Truncate { table: b },
        ]);
        let lines: Vec<&str> = text.lines().skip(1).take(3).collect();
        assert_eq!(lines[0], "TRUNCATE ONLY \"public\".\"My \"\"T\"\"\", \"s\".\"b\";");
        assert!(lines[1].starts_with("INSERT INTO \"s\".\"b\""));
        assert_eq!(lines[2], "TRUNCATE ONLY \"s\".\"b\";");
    }
}
