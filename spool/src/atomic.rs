//! Atomic file writes, as pgBackRest does them: write `NAME.tmp`, fsync it, rename it to
//! `NAME`, and fsync the directory (see [`sync_dir`]) so the rename itself is durable. A
//! reader therefore sees either no file or the whole file, even across a power failure.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::TEMPORARY_SUFFIX;

/// A file being written under its temporary name. Dropped without [`commit`](Self::commit)
/// (after an error), it removes its temporary file: a failed write leaves nothing behind and
/// frees the space it took, which matters when the failure was a full disk.
pub struct AtomicFile {
    /// `None` once committed.
    file: Option<io::BufWriter<File>>,
    temporary: PathBuf,
    path: PathBuf,
}

impl AtomicFile {
    /// Starts writing `dir/name`. A temporary file left by an earlier crash is replaced.
    pub fn create(dir: &Path, name: &str) -> Result<Self, Error> {
        let path = dir.join(name);
        let temporary = dir.join(format!("{name}{TEMPORARY_SUFFIX}"));
        let file = File::create(&temporary).map_err(|e| Error::io(&temporary, "create", e))?;
        Ok(Self { file: Some(io::BufWriter::with_capacity(1 << 16, file)), temporary, path })
    }

    /// The final path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn writer(&mut self) -> io::Result<&mut io::BufWriter<File>> {
        self.file.as_mut().ok_or_else(|| io::Error::other("the file was committed already"))
    }

    /// Flushes and fsyncs the file, then renames it to its final name. The caller fsyncs the
    /// directory (once for a batch of files) with [`sync_dir`] before relying on the name.
    pub fn commit(mut self) -> Result<PathBuf, Error> {
        let writer = self.file.take().expect("an uncommitted file has its writer");
        let file = writer.into_inner().map_err(|e| Error::io(&self.temporary, "write", e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&self.temporary, "fsync", e))?;
        drop(file);
        fs::rename(&self.temporary, &self.path).map_err(|e| Error::io(&self.path, "rename a temporary file to", e))?;
        Ok(self.path.clone())
    }

    /// Removes the temporary file (after a failed write); the same as dropping it.
    pub fn abandon(self) {}
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.temporary);
        }
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer()?.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer()?.flush()
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
    fn a_file_dropped_before_commit_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = AtomicFile::create(dir.path(), "c.sql").unwrap();
        file.write_all(b"x").unwrap();
        drop(file);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
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
