//! Atomic file writes, as pgBackRest does them: write `NAME.tmp`, fsync it, rename it to
//! `NAME`, and fsync the directory (see [`sync_dir`]) so the rename itself is durable. A
//! reader therefore sees either no file or the whole file, even across a power failure.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::TEMPORARY_SUFFIX;

/// A file being written under its temporary name.
pub struct AtomicFile {
    file: io::BufWriter<File>,
    temporary: PathBuf,
    path: PathBuf,
}

impl AtomicFile {
    /// Starts writing `dir/name`. A temporary file left by an earlier crash is replaced.
    pub fn create(dir: &Path, name: &str) -> Result<Self, Error> {
        let path = dir.join(name);
        let temporary = dir.join(format!("{name}{TEMPORARY_SUFFIX}"));
        let file = File::create(&temporary).map_err(|e| Error::io(&temporary, "create", e))?;
        Ok(Self { file: io::BufWriter::with_capacity(1 << 16, file), temporary, path })
    }

    /// The final path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes and fsyncs the file, then renames it to its final name. The caller fsyncs the
    /// directory (once for a batch of files) with [`sync_dir`] before relying on the name.
    pub fn commit(self) -> Result<PathBuf, Error> {
        let file = self.file.into_inner().map_err(|e| Error::io(&self.temporary, "write", e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&self.temporary, "fsync", e))?;
        drop(file);
        fs::rename(&self.temporary, &self.path).map_err(|e| Error::io(&self.path, "rename a temporary file to", e))?;
        Ok(self.path)
    }

    /// Removes the temporary file (after a failed write).
    pub fn abandon(self) {
        drop(self.file);
        let _ = fs::remove_file(&self.temporary);
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Makes the entries of `dir` (new names, renames) durable.
pub fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(dir, "fsync directory", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_final_name_appears_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        // A stale temporary file from an earlier crash is simply replaced.
        fs::write(dir.path().join("a.sql.tmp"), b"stale").unwrap();
        let mut file = AtomicFile::create(dir.path(), "a.sql").unwrap();
        file.write_all(b"SELECT 1;\n").unwrap();
        assert!(!dir.path().join("a.sql").exists());
        let path = file.commit().unwrap();
        sync_dir(dir.path()).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"SELECT 1;\n");
        assert!(!dir.path().join("a.sql.tmp").exists());
    }

    #[test]
    fn abandon_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = AtomicFile::create(dir.path(), "b.sql").unwrap();
        file.write_all(b"x").unwrap();
        file.abandon();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
