//! The on-disk contract shared by `dbmirror-export` and `dbmirror-apply`: what a spool
//! directory holds, how its files are named, what their headers say, how manifests cover them,
//! and how files are written so that a crash never leaves a half-written file under a final
//! name. It knows nothing about PostgreSQL and never panics on what it reads from disk.
//!
//! # The spool format (version 1)
//!
//! A spool is one flat directory per slave. The exporter writes into the slave's
//! `transaction_file_directory` (the *outbox*); the files are carried (rsync, USB stick, data
//! diode) to the applier's inbound spool unchanged. It holds:
//!
//! * **Transaction files**, one per master transaction, named
//!   `NNNNNNNNNNNNNNNNNNNN_YYYYMMDDTHHMMSSZ_XID.sql`, for example
//!   `00000000000000000042_20261201T010203Z_7731.sql`. `N…` is the file number: gapless per
//!   slave, starting at 1, zero-padded to 20 digits (every 64-bit number fits), so the lexical
//!   order of names is the number order is the apply order, even if the clock went backwards.
//!   The time is when the number was assigned (UTC), and `XID` the 64-bit id of the master
//!   transaction. With `compression = "zstd"` the file is a zstd frame of the same SQL and its
//!   name ends in `.sql.zst`.
//! * **Manifests**, named `FIRST-LAST.sha256` with both numbers padded as above, written after
//!   every file they cover. A manifest lists one line per file numbered FIRST to LAST, in
//!   `sha256sum` format (`<64 lowercase hex digits><2 spaces><file name>`), the checksum being of
//!   the file as stored (compressed if it is), then, when the exporter holds a signing key, a
//!   line `# signature ed25519 <128 hex digits>` (the Ed25519 signature of the file lines, see
//!   [`SigningKey`]), then a last line `# end <sha256>` whose checksum is of every byte before
//!   that line. `sha256sum -c --strict` accepts a manifest as it is (it
//!   ignores `#` lines); the end line lets the applier tell a complete manifest from one that is
//!   still being copied.
//! * **Temporary files**, whose names end in `.tmp`: files being written. They are never read;
//!   a crash can leave one behind, and the next write of the same file replaces it.
//!
//! Anything else, including names starting with a dot (rsync's own temporary files), is not
//! part of the spool and is ignored.
//!
//! # Transaction file content
//!
//! Plain SQL that `psql -v ON_ERROR_STOP=1 -f FILE` runs, UTF-8, starting with a header of
//! comment lines in this order (see [`Header`]):
//!
//! ```text
//! -- dbmirror transaction file
//! -- format: 1
//! -- master: 7449123456789012345
//! -- database: "shop"
//! -- slave: "backup_system"
//! -- number: 42
//! -- xid: 7731
//! -- changes: 3
//! -- exported-at: 2026-12-01T01:02:03.123456Z
//! -- committed-at: 2026-12-01T01:01:59.000007Z
//! -- previous-sha256: 3a7b…  (or none for file 1)
//! ```
//!
//! `master` is the master cluster's system identifier, `database` and `slave` are JSON
//! strings, `changes` the number of captured changes, `exported-at` the time the master
//! assigned the file its number and `committed-at` the master's commit time of the transaction
//! (the time the snapshot was taken, in a snapshot's files), both RFC 3339 with microseconds in
//! UTC. `committed-at` is always written; files written before it existed lack the line and
//! still read. `previous-sha256` is the sha256 of the SQL text (uncompressed) of the file numbered one
//! less, which chains the files together. The statements that follow are described in the
//! exporter's documentation (docs/format.md).

mod atomic;
mod checksum;
mod content;
mod directory;
mod error;
mod header;
mod manifest;
mod name;
mod signature;

pub use atomic::{move_into, sync_dir, sync_filesystem, AtomicFile, Staged, Syncer};
pub use checksum::{sha256_of, Checksum, HashingReader, HashingWriter};
pub use content::{open_sql, SqlWriter, Written};
pub use directory::{scan, Entry};
pub use error::{Error, ErrorKind};
pub use header::Header;
pub use manifest::{Manifest, ManifestEntry, ManifestName};
pub use name::TransactionFileName;
pub use signature::{PublicKey, Signature, SigningKey};

/// Version of the spool format written by this library.
pub const FORMAT_VERSION: u32 = 1;
/// Extension of transaction files.
pub const SQL_EXTENSION: &str = "sql";
/// Extension added to compressed transaction files.
pub const ZSTD_EXTENSION: &str = "zst";
/// Extension of manifests.
pub const MANIFEST_EXTENSION: &str = "sha256";
/// Suffix of files being written.
pub const TEMPORARY_SUFFIX: &str = ".tmp";
/// Digits of a zero-padded file number.
pub const NUMBER_WIDTH: usize = 20;
/// Default folder, inside the inbound spool, for files that were applied.
pub const ARCHIVE_DIR: &str = "archive";
/// Default folder, inside the inbound spool, for files that must not be applied.
pub const QUARANTINE_DIR: &str = "quarantine";
/// The exporter's state file in its outbox: the last file written (a dot-file, so not part of
/// the spool).
pub const EXPORT_STATE_FILE: &str = ".dbmirror-export.state";
/// Suffix of the file written beside a quarantined file to say why it is there.
pub const REASON_SUFFIX: &str = ".reason";
/// Compression level of `.zst` files: zstd's default, a good speed/size balance for SQL text.
pub const ZSTD_LEVEL: i32 = 3;
