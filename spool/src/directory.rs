//! Listing a spool directory in order.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::manifest::ManifestName;
use crate::name::TransactionFileName;
use crate::{MANIFEST_EXTENSION, SQL_EXTENSION, TEMPORARY_SUFFIX, ZSTD_EXTENSION};

/// One entry of a spool directory.
#[derive(Debug)]
pub enum Entry {
    Transaction {
        name: TransactionFileName,
        path: PathBuf,
    },
    Manifest {
        name: ManifestName,
        path: PathBuf,
    },
    /// A file being written (or left behind by a crash).
    Temporary(PathBuf),
    /// A name that claims to be a spool file (by its extension) but is not well formed, such
    /// as a renamed file. Never read; worth reporting.
    Unrecognized {
        path: PathBuf,
        error: Error,
    },
}

impl Entry {
    pub fn path(&self) -> &Path {
        match self {
            Entry::Transaction { path, .. } | Entry::Manifest { path, .. } => path,
            Entry::Temporary(path) | Entry::Unrecognized { path, .. } => path,
        }
    }
}

/// The spool entries of `dir`, sorted by file name. Subdirectories, names starting with a dot
/// (rsync's temporary files) and files with other extensions are not part of the spool and are
/// left out.
pub fn scan(dir: &Path) -> Result<Vec<Entry>, Error> {
    let mut entries = Vec::new();
    for item in fs::read_dir(dir).map_err(|e| Error::io(dir, "read directory", e))? {
        let item = item.map_err(|e| Error::io(dir, "read directory", e))?;
        let path = item.path();
        let file_type = item.file_type().map_err(|e| Error::io(&path, "stat", e))?;
        if !file_type.is_file() {
            continue;
        }
        let Some(name) = item.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        if name.ends_with(TEMPORARY_SUFFIX) {
            entries.push(Entry::Temporary(path));
        } else if name.ends_with(&format!(".{SQL_EXTENSION}"))
            || name.ends_with(&format!(".{SQL_EXTENSION}.{ZSTD_EXTENSION}"))
        {
            entries.push(match TransactionFileName::parse(&name) {
                Ok(name) => Entry::Transaction { name, path },
                Err(error) => Entry::Unrecognized { error: error.at(&path), path },
            });
        } else if name.ends_with(&format!(".{MANIFEST_EXTENSION}")) {
            entries.push(match ManifestName::parse(&name) {
                Ok(name) => Entry::Manifest { name, path },
                Err(error) => Entry::Unrecognized { error: error.at(&path), path },
            });
        }
    }
    entries.sort_by(|a, b| a.path().file_name().cmp(&b.path().file_name()));
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_and_sorts_entries() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "00000000000000000002_20261201T000000Z_9.sql.zst",
            "00000000000000000001_20261201T000000Z_8.sql",
            "00000000000000000001-00000000000000000002.sha256",
            "00000000000000000003_20261201T000000Z_10.sql.tmp",
            ".00000000000000000003_20261201T000000Z_10.sql.Xy12ab",
            "renamed.sql",
            "notes.txt",
        ] {
            fs::write(dir.path().join(name), b"").unwrap();
        }
        fs::create_dir(dir.path().join("archive")).unwrap();
        let entries = scan(dir.path()).unwrap();
        let kinds: Vec<String> = entries
            .iter()
            .map(|e| match e {
                Entry::Transaction { name, .. } => format!("transaction {}", name.number),
                Entry::Manifest { name, .. } => format!("manifest {}-{}", name.first, name.last),
                Entry::Temporary(p) => {
                    format!("temporary {}", p.file_name().unwrap().to_string_lossy())
                }
                Entry::Unrecognized { path, .. } => {
                    format!("unrecognized {}", path.file_name().unwrap().to_string_lossy())
                }
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "manifest 1-2",
                "transaction 1",
                "transaction 2",
                "temporary 00000000000000000003_20261201T000000Z_10.sql.tmp",
                "unrecognized renamed.sql",
            ]
        );
    }
}
