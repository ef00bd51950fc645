//! Keeping the archive from growing without limit: after each pass that applied files, the
//! oldest applied files are deleted from the archive as `archive_keep_files` (keep the newest
//! N files) and `archive_keep_days` (keep files exported less than D days ago) say. A file
//! goes when either setting lets it go; without them nothing is ever deleted.
//!
//! Only what the slave has applied (or what a snapshot superseded) is in the archive, and a
//! file numbered above the last applied one is kept whatever the settings say. A file's age is
//! its export time, from its name, so that copying the spool (which may change modification
//! times) changes nothing. A manifest goes once every file it lists has gone; copies that were
//! archived under a taken name (`NAME.1`) go with their number.

use std::fs;
use std::path::{Path, PathBuf};

use dbmirror_cli::error::{Error, Kind};
use dbmirror_cli::log;
use dbmirror_spool::{ManifestName, TransactionFileName};

/// How much of the archive to keep; `None` keeps everything.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Retention {
    pub keep_files: Option<u64>,
    pub keep_days: Option<f64>,
}

/// What an archived name is.
enum Archived {
    File(TransactionFileName),
    Manifest(ManifestName),
}

/// `name` without the `.N` that a move under a taken name adds.
fn base_name(name: &str) -> &str {
    match name.rsplit_once('.') {
        Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => name,
    }
}

fn archived(name: &str) -> Option<Archived> {
    let base = base_name(name);
    TransactionFileName::parse(base)
        .map(Archived::File)
        .or_else(|_| ManifestName::parse(base).map(Archived::Manifest))
        .ok()
}

/// Deletes from `archive` what `retention` lets go, never a file numbered above `last_applied`.
/// Returns how many files it deleted.
pub fn prune(archive: &Path, retention: Retention, last_applied: u64) -> Result<usize, Error> {
    if retention == Retention::default() {
        return Ok(0);
    }
    let entries = match fs::read_dir(archive) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => {
            return Err(Error::caused_by(
                Kind::Runtime,
                &format!("could not read archive \"{}\"", archive.display()),
                e,
            ))
        }
    };
    let mut files: Vec<(TransactionFileName, PathBuf)> = Vec::new();
    let mut manifests: Vec<(ManifestName, PathBuf)> = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        match archived(&entry.file_name().to_string_lossy()) {
            Some(Archived::File(name)) => files.push((name, path)),
            Some(Archived::Manifest(name)) => manifests.push((name, path)),
            None => {}
        }
    }
    let mut numbers: Vec<u64> = files.iter().map(|(name, _)| name.number).collect();
    numbers.sort_unstable();
    numbers.dedup();
    // The newest `keep_files` numbers stay, and so does whatever was exported within `keep_days`.
    let kept_from_count = retention
        .keep_files
        .map_or(0, |keep| numbers.len().saturating_sub(usize::try_from(keep).unwrap_or(usize::MAX)))
        .min(numbers.len());
    let first_kept_by_count = numbers.get(kept_from_count).copied().unwrap_or(u64::MAX);
    let oldest_kept_time = retention.keep_days.map(|days| {
        chrono::Utc::now() - chrono::Duration::milliseconds((days * 86_400_000.0).min(i64::MAX as f64) as i64)
    });
    let goes = |name: &TransactionFileName| {
        name.number <= last_applied
            && (retention.keep_files.is_some() && name.number < first_kept_by_count
                || oldest_kept_time.is_some_and(|oldest| name.time < oldest))
    };
    let mut deleted = 0;
    let mut remaining: Vec<u64> = Vec::new();
    for (name, path) in &files {
        if goes(name) {
            remove(path)?;
            deleted += 1;
        } else {
            remaining.push(name.number);
        }
    }
    for (name, path) in &manifests {
        // Once no file up to its last one remains, nothing it lists can be looked up again.
        if name.last <= last_applied && remaining.iter().all(|n| *n > name.last) {
            remove(path)?;
            deleted += 1;
        }
    }
    if deleted > 0 {
        log::info(&format!(
            "deleted {deleted} files from archive \"{}\" as its retention settings say",
            archive.display()
        ));
    }
    Ok(deleted)
}

fn remove(path: &Path) -> Result<(), Error> {
    fs::remove_file(path)
        .map_err(|e| Error::caused_by(Kind::Runtime, &format!("could not delete \"{}\"", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(number: u64, days_ago: i64) -> String {
        TransactionFileName {
            number,
            time: chrono::Utc::now() - chrono::Duration::days(days_ago),
            xid: 100 + number,
            compressed: false,
        }
        .file_name()
    }

    fn manifest(first: u64, last: u64) -> String {
        ManifestName { first, last }.file_name()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        names.sort();
        names
    }

    fn archive(files: &[String]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for file in files {
            fs::write(dir.path().join(file), "").unwrap();
        }
        dir
    }

    #[test]
    fn keep_files_keeps_the_newest_and_their_manifests() {
        let files = [name(1, 0), name(2, 0), format!("{}.1", name(2, 0)), name(3, 0), name(4, 0)];
        let mut all = files.to_vec();
        all.extend([manifest(1, 2), manifest(3, 4), "note.txt".to_string()]);
        let dir = archive(&all);
        let retention = Retention { keep_files: Some(2), keep_days: None };
        assert_eq!(prune(dir.path(), retention, 4).unwrap(), 4);
        assert_eq!(names(dir.path()), [manifest(3, 4), name(3, 0), name(4, 0), "note.txt".into()]);
    }

    /// Prevents retention from deleting what the slave has not applied.
    #[test]
    fn nothing_numbered_above_the_last_applied_file_goes() {
        let dir = archive(&[name(1, 30), name(2, 30), name(3, 30)]);
        let retention = Retention { keep_files: Some(1), keep_days: Some(1.0) };
        prune(dir.path(), retention, 1).unwrap();
        assert_eq!(names(dir.path()), [name(2, 30), name(3, 30)]);
    }

    #[test]
    fn keep_days_deletes_files_exported_longer_ago() {
        let dir = archive(&[name(1, 10), name(2, 3), name(3, 0)]);
        prune(dir.path(), Retention { keep_files: None, keep_days: Some(5.0) }, 3).unwrap();
        assert_eq!(names(dir.path()), [name(2, 3), name(3, 0)]);
        prune(dir.path(), Retention::default(), 3).unwrap();
        assert_eq!(names(dir.path()).len(), 2, "without settings nothing goes");
    }
}
