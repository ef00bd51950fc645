//! A writer that copies every byte written to it into several outputs: how one exporter
//! renders a transaction's changes once for several slaves (see [`crate::group`]).
//!
//! The bytes go through as they are written, to every output in turn: nothing is held back,
//! so a transaction of millions of rows needs no more memory for ten slaves than for one. Each
//! output does its own work on them (a transaction file hashes, compresses and writes its own
//! copy). It is not a buffer either: what a writer wants buffered, it buffers itself.

use std::io::{self, Write};

/// Copies what is written into each of its outputs.
pub struct Tee<W> {
    outputs: Vec<W>,
    /// The output that failed, if one did: which slave's file a write error belongs to.
    failed: Option<usize>,
}

impl<W: Write> Tee<W> {
    pub fn new(outputs: Vec<W>) -> Self {
        Self { outputs, failed: None }
    }

    /// The position of the output whose write failed, if one did.
    pub fn failed(&self) -> Option<usize> {
        self.failed
    }

    /// The outputs, in the order given.
    pub fn into_inner(self) -> Vec<W> {
        self.outputs
    }
}

impl<W: Write> Write for Tee<W> {
    /// Writes all of `buf` into every output (or fails): the outputs never fall out of step,
    /// which a partial write into one of them would make them.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for (i, output) in self.outputs.iter_mut().enumerate() {
            if let Err(e) = output.write_all(buf) {
                self.failed = Some(i);
                return Err(e);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        for (i, output) in self.outputs.iter_mut().enumerate() {
            if let Err(e) = output.flush() {
                self.failed = Some(i);
                return Err(e);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::rc::Rc;

    use chrono::{TimeZone, Utc};
    use dbmirror_spool::{Checksum, Header, FORMAT_VERSION};

    use super::*;
    use crate::sql::{Change, FileWriter, SequenceValue, Table};

    fn header(slave: &str, number: u64, previous: Option<Checksum>) -> Header {
        Header {
            format: FORMAT_VERSION,
            master: 7,
            database: "db".into(),
            slave: slave.into(),
            number,
            xid: 900,
            changes: 9,
            exported_at: Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap()
                + chrono::Duration::microseconds(number as i64),
            committed_at: Some(Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 1).unwrap()),
            previous_sha256: previous,
        }
    }

    /// A transaction with every kind of state the body keeps across changes: a run of inserts
    /// long enough for COPY, a short one held back to the end, truncates, shape checks.
    fn changes(table: &Rc<Table>, other: &Rc<Table>) -> Vec<Change<'static>> {
        let mut changes: Vec<Change<'static>> =
            (0..6).map(|_| Change::Insert { table: table.clone(), row: "1\tone\t\\N" }).collect();
        changes.push(Change::Truncate { table: other.clone() });
        changes.push(Change::Delete { table: table.clone(), key: vec![Some(Cow::Borrowed("1"))], old: None });
        changes.push(Change::Insert { table: other.clone(), row: "2\ttwo" });
        changes
    }

    fn tables() -> (Rc<Table>, Rc<Table>) {
        let definitions = |columns: &[&str]| columns.iter().map(|c| format!("\"{c}\" text")).collect::<Vec<_>>();
        let names = |columns: &[&str]| columns.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        let a = ["id", "Name", "n"];
        let b = ["id", "v"];
        (
            Rc::new(Table::new("public", "a", &names(&a), &definitions(&a), &[0], &[])),
            Rc::new(Table::new("public", "b", &names(&b), &definitions(&b), &[0], &[])),
        )
    }

    /// What a lone export writes for one slave.
    fn alone(header: &Header, sequences: &[SequenceValue]) -> Vec<u8> {
        let (table, other) = tables();
        let mut writer = FileWriter::begin(Vec::new(), header).unwrap();
        for change in changes(&table, &other) {
            writer.change(change).unwrap();
        }
        writer.finish(sequences).unwrap()
    }

    /// The file of each slave of a group is byte for byte the file a lone export writes for it:
    /// its own header, guard, sequences and COMMIT around the body rendered once for all.
    #[test]
    fn a_body_rendered_once_for_several_slaves_gives_each_the_file_it_would_get_alone() {
        let slaves = [
            (header("a", 5, None), vec![]),
            (
                header("b", 17, Some(Checksum::of(b"b16"))),
                vec![SequenceValue { sequence: "\"public\".\"s\"".into(), value: 3 }],
            ),
            (
                header("o'brien", 2, Some(Checksum::of(b"1"))),
                vec![SequenceValue { sequence: "\"public\".\"s\"".into(), value: 4 }],
            ),
        ];
        let mut outputs: Vec<Vec<u8>> = Vec::new();
        for (header, _) in &slaves {
            let mut out = Vec::new();
            FileWriter::head(&mut out, header).unwrap();
            outputs.push(out);
        }
        let (table, other) = tables();
        let mut body = FileWriter::body(Tee::new(outputs));
        for change in changes(&table, &other) {
            body.change(change).unwrap();
        }
        body.end_body().unwrap();
        let outputs = body.into_inner().into_inner();
        for ((header, sequences), mut out) in slaves.iter().zip(outputs) {
            FileWriter::tail(&mut out, sequences).unwrap();
            let expected = alone(header, sequences);
            assert_eq!(String::from_utf8(out).unwrap(), String::from_utf8(expected).unwrap(), "slave {}", header.slave);
        }
    }

    /// An output that fails: after `left` bytes, as a full disk would.
    struct Full {
        left: usize,
        written: Vec<u8>,
    }

    impl Write for Full {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if buf.len() > self.left {
                return Err(io::Error::from_raw_os_error(28));
            }
            self.left -= buf.len();
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Every output gets every byte, in the order written; a failing output fails the write
    /// and is named, so that the error can name its slave's file.
    #[test]
    fn every_output_gets_every_byte_and_a_failure_names_its_output() {
        let mut tee = Tee::new(vec![Full { left: 100, written: Vec::new() }, Full { left: 10, written: Vec::new() }]);
        tee.write_all(b"12345").unwrap();
        tee.write_all(b"678").unwrap();
        assert_eq!(tee.failed(), None);
        let error = tee.write_all(b"abc").unwrap_err();
        assert_eq!(error.raw_os_error(), Some(28));
        assert_eq!(tee.failed(), Some(1));
        let outputs = tee.into_inner();
        assert_eq!(outputs[0].written, b"12345678abc");
        assert_eq!(outputs[1].written, b"12345678");
    }
}
