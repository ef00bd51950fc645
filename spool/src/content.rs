//! Writing and reading the SQL content of transaction files, compressed or not.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use crate::atomic::{AtomicFile, Staged};
use crate::checksum::{Checksum, HashingWriter};
use crate::error::Error;
use crate::name::TransactionFileName;
use crate::ZSTD_LEVEL;

/// Where the SQL text goes. A plain file stores the SQL text itself, so the checksum of the
/// SQL is the checksum of the file; only a compressed file needs a second one.
enum Stored {
    Plain(AtomicFile),
    Zstd(zstd::stream::write::Encoder<'static, HashingWriter<AtomicFile>>),
}

impl Write for Stored {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stored::Plain(w) => w.write(buf),
            Stored::Zstd(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stored::Plain(w) => w.flush(),
            Stored::Zstd(w) => w.flush(),
        }
    }
}

/// A transaction file being written: SQL text in, compressed if the name says so, written
/// atomically, with the checksums of both the SQL text and the stored bytes.
pub struct SqlWriter {
    sql: HashingWriter<Stored>,
    path: PathBuf,
}

/// What [`SqlWriter::finish`] wrote.
#[derive(Debug, Clone)]
pub struct Written {
    pub path: PathBuf,
    /// sha256 of the SQL text (what the next file's `previous-sha256` names).
    pub sql_sha256: Checksum,
    /// sha256 of the file as stored (what the manifest lists).
    pub stored_sha256: Checksum,
    pub stored_bytes: u64,
}

impl SqlWriter {
    /// Starts writing the file `name` in `dir`.
    pub fn create(dir: &Path, name: &TransactionFileName) -> Result<Self, Error> {
        let file = AtomicFile::create(dir, &name.file_name())?;
        let path = file.path().to_owned();
        let stored = if name.compressed {
            let encoder = zstd::stream::write::Encoder::new(HashingWriter::new(file), ZSTD_LEVEL)
                .map_err(|e| Error::io(&path, "start compressing", e))?;
            Stored::Zstd(encoder)
        } else {
            Stored::Plain(file)
        };
        Ok(Self { sql: HashingWriter::new(stored), path })
    }

    /// SQL bytes written so far.
    pub fn sql_bytes(&self) -> u64 {
        self.sql.byte_count()
    }

    /// Completes the file: flushes it and stages it under its temporary name (see
    /// [`Staged`]): sync and publish it to give it its final name. Publishing never replaces a
    /// file with different content: that is a [`ErrorKind::Conflict`](crate::ErrorKind).
    pub fn finish(self) -> Result<(Written, Staged), Error> {
        let path = self.path.clone();
        let sql_bytes = self.sql.byte_count();
        let (stored, sql_sha256) = self.sql.finish();
        let (file, stored_sha256, stored_bytes) = match stored {
            Stored::Plain(file) => (file, sql_sha256, sql_bytes),
            Stored::Zstd(encoder) => {
                let hashing = encoder.finish().map_err(|e| Error::io(&path, "finish compressing", e))?;
                let stored_bytes = hashing.byte_count();
                let (file, stored_sha256) = hashing.finish();
                (file, stored_sha256, stored_bytes)
            }
        };
        let mut staged = file.close()?;
        staged.set_checksum(stored_sha256);
        Ok((Written { path, sql_sha256, stored_sha256, stored_bytes }, staged))
    }
}

impl Write for SqlWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sql.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.sql.flush()
    }
}

/// Opens a transaction file for reading its SQL text, decompressing `.zst` files on the fly.
pub fn open_sql(path: &Path, name: &TransactionFileName) -> Result<Box<dyn BufRead + Send>, Error> {
    let file = File::open(path).map_err(|e| Error::io(path, "open", e))?;
    if name.compressed {
        let decoder = zstd::stream::read::Decoder::new(file).map_err(|e| Error::io(path, "start decompressing", e))?;
        Ok(Box::new(BufReader::with_capacity(1 << 16, decoder)))
    } else {
        Ok(Box::new(BufReader::with_capacity(1 << 16, file)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use std::io::Read;

    /// Finishes, fsyncs and publishes a file, as the exporter does for a batch.
    fn commit(writer: SqlWriter) -> Result<Written, Error> {
        let (written, mut staged) = writer.finish()?;
        if let Some((_, file)) = staged.take_file() {
            file.sync_all().unwrap();
        }
        staged.publish()?;
        Ok(written)
    }

    #[test]
    fn writes_plain_and_compressed_files_with_both_checksums() {
        let dir = tempfile::tempdir().unwrap();
        let sql = "BEGIN;\nSELECT 1;\nCOMMIT;\n".repeat(1000);
        for compressed in [false, true] {
            let name = TransactionFileName {
                number: 1,
                time: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
                xid: 5,
                compressed,
            };
            let mut writer = SqlWriter::create(dir.path(), &name).unwrap();
            writer.write_all(sql.as_bytes()).unwrap();
            let written = commit(writer).unwrap();
            assert_eq!(written.path, dir.path().join(name.file_name()));
            assert_eq!(written.sql_sha256, Checksum::of(sql.as_bytes()));
            let stored = std::fs::read(&written.path).unwrap();
            assert_eq!(written.stored_sha256, Checksum::of(&stored));
            assert_eq!(written.stored_bytes, stored.len() as u64);
            assert_eq!(compressed, stored.len() < sql.len());
            let mut back = String::new();
            open_sql(&written.path, &name).unwrap().read_to_string(&mut back).unwrap();
            assert_eq!(back, sql);
        }
    }

    #[test]
    fn never_replaces_a_file_with_different_content() {
        let dir = tempfile::tempdir().unwrap();
        let name = TransactionFileName {
            number: 1,
            time: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            xid: 5,
            compressed: false,
        };
        let write = |text: &str| {
            let mut writer = SqlWriter::create(dir.path(), &name).unwrap();
            writer.write_all(text.as_bytes()).unwrap();
            commit(writer)
        };
        let first = write("SELECT 1;\n").unwrap();
        // The same bytes again: fine.
        write("SELECT 1;\n").unwrap();
        let err = write("SELECT 2;\n").unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Conflict);
        assert_eq!(std::fs::read_to_string(&first.path).unwrap(), "SELECT 1;\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "the temporary file is removed");
    }
}
