//! Atomic file writes, as pgBackRest does them: write `NAME.tmp`, fsync it, rename it to
//! `NAME`, and fsync the directory (see [`sync_dir`]) so the rename itself is durable. A
//! reader therefore sees either no file or the whole file, even across a power failure.
//!
//! For many files, [`AtomicFile::close`] stages a written file, a [`Syncer`] fsyncs staged files
//! on background threads while the next ones are written (concurrent fsyncs also share journal
//! commits), and [`Staged::publish`] renames each once all are synced.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::checksum::Checksum;
use crate::error::{Error, ErrorKind};
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

    /// Flushes the file, not yet durable, under its temporary name: fsync it (see [`Syncer`])
    /// before [`Staged::publish`].
    pub fn close(mut self) -> Result<Staged, Error> {
        let writer = self.file.take().expect("an uncommitted file has its writer");
        let file = writer.into_inner().map_err(|e| Error::io(&self.temporary, "write", e.into_error()))?;
        Ok(Staged {
            file: Some(file),
            temporary: self.temporary.clone(),
            path: self.path.clone(),
            checksum: None,
            published: false,
        })
    }

    /// Removes the temporary file (after a failed write); the same as dropping it.
    pub fn abandon(self) {}
}

/// A written file under its temporary name, waiting to be synced and renamed. Dropped before
/// [`publish`](Self::publish), it removes its temporary file.
pub struct Staged {
    file: Option<File>,
    temporary: PathBuf,
    path: PathBuf,
    /// The checksum of the content, when known: a file already under the final name with the
    /// same checksum is the same file, written before a crash.
    checksum: Option<Checksum>,
    published: bool,
}

impl Staged {
    /// The open file, to hand to a [`Syncer`]; `None` if taken already.
    pub fn take_file(&mut self) -> Option<(PathBuf, File)> {
        self.file.take().map(|file| (self.temporary.clone(), file))
    }

    pub(crate) fn set_checksum(&mut self, checksum: Checksum) {
        self.checksum = Some(checksum);
    }

    /// Renames the file to its final name, never replacing a file there: the kernel refuses
    /// the rename when the name exists (`RENAME_NOREPLACE`), and only then is the existing
    /// file read. One with this file's checksum is the same file, written before a crash, and
    /// the new copy is dropped; any other is a [`ErrorKind::Conflict`] and stays as it is.
    ///
    /// The data must be durable already (synced by a [`Syncer`] that finished without error);
    /// the caller fsyncs the directory afterwards.
    pub fn publish(mut self) -> Result<PathBuf, Error> {
        drop(self.file.take());
        match rename_noreplace(&self.temporary, &self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let found = File::open(&self.path)
                    .and_then(|file| crate::sha256_of(io::BufReader::new(file)))
                    .map_err(|e| Error::io(&self.path, "read", e))?
                    .0;
                if Some(found) != self.checksum {
                    let written = self.checksum.map_or_else(|| "unknown".to_string(), |c| c.to_string());
                    return Err(Error::new(
                        ErrorKind::Conflict,
                        format!(
                            "a different file already exists under this name (sha256 {written} written, {found} found)"
                        ),
                    )
                    .at(&self.path));
                }
                // Dropping self removes the duplicate.
                return Ok(self.path.clone());
            }
            Err(e) => return Err(Error::io(&self.path, "rename a temporary file to", e)),
        }
        self.published = true;
        Ok(self.path.clone())
    }
}

/// `rename(2)` that fails with `AlreadyExists` instead of replacing `to`. On a file system
/// without `RENAME_NOREPLACE` it checks first, which is enough for a single writer (one
/// exporter runs per slave, by an advisory lock on the master).
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    use rustix::io::Errno;
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
            if to.try_exists()? {
                return Err(io::Error::from(io::ErrorKind::AlreadyExists));
            }
            fs::rename(from, to)
        }
        Err(e) => Err(e.into()),
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.published {
            drop(self.file.take());
            let _ = fs::remove_file(&self.temporary);
        }
    }
}

/// Fsyncs files on a few background threads. The queue is short: [`push`](Self::push) waits
/// when it is full, so a slow disk holds back the writer instead of piling up open files.
pub struct Syncer {
    files: Option<std::sync::mpsc::SyncSender<(PathBuf, File)>>,
    workers: Vec<std::thread::JoinHandle<Result<(), Error>>>,
}

impl Syncer {
    /// Threads that fsync at once: enough for the file system to group their journal commits.
    const THREADS: usize = 8;
    /// Files written but not yet taken by a thread.
    const QUEUE: usize = 4 * Self::THREADS;

    pub fn new() -> Self {
        let (sender, receiver) = std::sync::mpsc::sync_channel::<(PathBuf, File)>(Self::QUEUE);
        let receiver = std::sync::Arc::new(std::sync::Mutex::new(receiver));
        let workers = (0..Self::THREADS)
            .map(|_| {
                let receiver = receiver.clone();
                std::thread::spawn(move || loop {
                    let next = receiver.lock().map_err(|_| Error::new(ErrorKind::Io, "fsync worker failed"))?.recv();
                    let Ok((path, file)) = next else { return Ok(()) };
                    file.sync_all().map_err(|e| Error::io(&path, "fsync", e))?;
                })
            })
            .collect();
        Self { files: Some(sender), workers }
    }

    /// Queues a file to fsync, waiting while the queue is full.
    pub fn push(&self, path: PathBuf, file: File) {
        if let Some(files) = &self.files {
            // A send fails only when every worker stopped on an error, which finish() reports.
            let _ = files.send((path, file));
        }
    }

    /// Waits until every queued file is synced; the first failure, if any.
    pub fn finish(mut self) -> Result<(), Error> {
        drop(self.files.take());
        let mut result = Ok(());
        for worker in self.workers.drain(..) {
            let outcome = worker.join().unwrap_or_else(|_| Err(Error::new(ErrorKind::Io, "fsync worker panicked")));
            if result.is_ok() {
                result = outcome;
            }
        }
        result
    }
}

impl Default for Syncer {
    fn default() -> Self {
        Self::new()
    }
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

/// Moves the file `path` into the directory `dir`, under its own name or, where that is taken,
/// with `.1`, `.2`... added: an existing file is never replaced. Returns the new path.
///
/// Within one file system this is one rename. Across file systems (where rename fails with
/// `EXDEV`) the file is copied to a temporary name in `dir` (a dot-name, so no spool takes it
/// for one of its files), synced, renamed into place and `dir` synced, and only then is the
/// original removed and its directory synced: a crash leaves the file where it was, or in both
/// places, but never lost and never half-written under its final name.
pub fn move_into(path: &Path, dir: &Path) -> Result<PathBuf, Error> {
    let name =
        path.file_name().ok_or_else(|| Error::new(ErrorKind::Io, "a file to move has a name").at(path))?.to_owned();
    for n in 0.. {
        let target = numbered(dir, &name, n);
        match rename_noreplace(path, &target) {
            Ok(()) => return Ok(target),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) if e.kind() == io::ErrorKind::CrossesDevices => break,
            Err(e) => return Err(Error::io(path, &format!("move into \"{}\"", dir.display()), e)),
        }
    }
    copy_into(path, dir, &name)
}

/// `dir/name`, or `dir/name.n` for n > 0.
fn numbered(dir: &Path, name: &std::ffi::OsStr, n: u32) -> PathBuf {
    let mut numbered = name.to_owned();
    if n > 0 {
        numbered.push(format!(".{n}"));
    }
    dir.join(numbered)
}

/// [`move_into`] by copying, for a `dir` on another file system than `path`.
fn copy_into(path: &Path, dir: &Path, name: &std::ffi::OsStr) -> Result<PathBuf, Error> {
    let mut temporary_name = std::ffi::OsString::from(".");
    temporary_name.push(name);
    temporary_name.push(TEMPORARY_SUFFIX);
    let temporary = dir.join(temporary_name);
    let copied = (|| {
        let mut from = File::open(path)?;
        // A temporary file left by a crash during an earlier copy is simply replaced.
        let mut to = File::create(&temporary)?;
        io::copy(&mut from, &mut to)?;
        to.set_permissions(from.metadata()?.permissions())?;
        to.sync_all()
    })();
    if let Err(e) = copied {
        let _ = fs::remove_file(&temporary);
        return Err(Error::io(path, &format!("copy into \"{}\"", dir.display()), e));
    }
    let mut n = 0;
    let target = loop {
        let target = numbered(dir, name, n);
        match rename_noreplace(&temporary, &target) {
            Ok(()) => break target,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => n += 1,
            Err(e) => {
                let _ = fs::remove_file(&temporary);
                return Err(Error::io(&target, "rename a temporary file to", e));
            }
        }
    };
    sync_dir(dir)?;
    fs::remove_file(path).map_err(|e| Error::io(path, "remove the moved file", e))?;
    sync_dir(path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")))?;
    Ok(target)
}

/// Makes everything written to the file system that holds `dir` durable at once (`syncfs(2)`):
/// the data of every file written there, by this process or any other, and their names. One
/// call replaces an fsync per file, and costs what the file system has to write: little on a
/// file system of the outbox's own, more where busy files share it (a database's, say).
pub fn sync_filesystem(dir: &Path) -> Result<(), Error> {
    let directory = File::open(dir).map_err(|e| Error::io(dir, "open", e))?;
    rustix::fs::syncfs(&directory).map_err(|e| Error::io(dir, "syncfs", e.into()))
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
    fn staged_files_appear_only_when_published() {
        let dir = tempfile::tempdir().unwrap();
        let syncer = Syncer::new();
        let mut staged = Vec::new();
        for name in ["a.sql", "b.sql"] {
            let mut file = AtomicFile::create(dir.path(), name).unwrap();
            file.write_all(name.as_bytes()).unwrap();
            let mut file = file.close().unwrap();
            let (path, handle) = file.take_file().unwrap();
            syncer.push(path, handle);
            staged.push(file);
        }
        syncer.finish().unwrap();
        assert!(!dir.path().join("a.sql").exists());
        let first = staged.remove(0).publish().unwrap();
        assert_eq!(fs::read(first).unwrap(), b"a.sql");
        // The other one is dropped unpublished: nothing of it stays.
        drop(staged);
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["a.sql"]);
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
    fn moves_never_replace_a_file() {
        let (from, to) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        for content in ["first", "second", "third"] {
            fs::write(from.path().join("a.sql"), content).unwrap();
            move_into(&from.path().join("a.sql"), to.path()).unwrap();
        }
        assert_eq!(fs::read_to_string(to.path().join("a.sql")).unwrap(), "first");
        assert_eq!(fs::read_to_string(to.path().join("a.sql.1")).unwrap(), "second");
        assert_eq!(fs::read_to_string(to.path().join("a.sql.2")).unwrap(), "third");
        assert_eq!(fs::read_dir(from.path()).unwrap().count(), 0);
    }

    /// The way across file systems, taken here within one: the tests cannot count on a second
    /// file system (the end-to-end tests mount one).
    #[test]
    fn copies_across_file_systems_never_replace_and_leave_nothing_behind() {
        let (from, to) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        fs::write(to.path().join("a.sql"), "there before").unwrap();
        // Left by a crash during an earlier copy.
        fs::write(to.path().join(".a.sql.tmp"), "half").unwrap();
        fs::write(from.path().join("a.sql"), "moved").unwrap();
        let moved = copy_into(&from.path().join("a.sql"), to.path(), std::ffi::OsStr::new("a.sql")).unwrap();
        assert_eq!(moved, to.path().join("a.sql.1"));
        assert_eq!(fs::read_to_string(&moved).unwrap(), "moved");
        assert_eq!(fs::read_to_string(to.path().join("a.sql")).unwrap(), "there before");
        let mut names: Vec<_> = fs::read_dir(to.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names, ["a.sql", "a.sql.1"]);
        assert_eq!(fs::read_dir(from.path()).unwrap().count(), 0);
        // A file that cannot be read is not moved, and nothing is left in the target.
        let missing = copy_into(&from.path().join("b.sql"), to.path(), std::ffi::OsStr::new("b.sql"));
        assert!(missing.is_err());
        assert_eq!(fs::read_dir(to.path()).unwrap().count(), 2);
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
