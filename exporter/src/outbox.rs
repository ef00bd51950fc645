//! The outbox's own record of the stream written into it: a small state file beside the
//! transaction files, holding the master, the slave, and the number and SQL checksum of the
//! last file written.
//!
//! The master's database records the same, but a database can be restored from an older copy
//! (a physical backup, a snapshot of its volume) to a point before files it had already
//! written; it would then assign those numbers again, to different transactions, and a slave
//! that applied the first files would be silently wrong. The outbox is not restored with the
//! database, so before each run the exporter compares the two and refuses to write a number the
//! outbox has seen with other content (exit code 7).
//!
//! The file is a dot-file, which is not part of the spool: the applier ignores it, and a
//! transfer should leave it in the outbox (for example `rsync --exclude='.*'`). When it is
//! missing, it is written again after the next batch.

use std::io::Write;
use std::path::Path;

use dbmirror_spool::{sync_dir, AtomicFile, Checksum, EXPORT_STATE_FILE};

use crate::error::{Error, Kind};
use crate::master::Identity;

/// What the state file says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Written {
    pub master: String,
    pub database: String,
    pub slave: String,
    pub number: i64,
    pub sql_sha256: String,
}

/// Reads the outbox's state, if it has one.
pub fn read(directory: &Path) -> Result<Option<Written>, Error> {
    let path = directory.join(EXPORT_STATE_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::caused_by(Kind::Runtime, &format!("could not read \"{}\"", path.display()), e)),
    };
    serde_json::from_str(&text).map(Some).map_err(|e| {
        Error::new(Kind::Diverged, format!("outbox state file \"{}\" is damaged: {e}", path.display()))
            .with_hint("Move it away once the outbox's files are carried to the slave; the exporter writes it again.")
    })
}

/// Records the last file written, durably.
pub fn record(directory: &Path, written: &Written) -> Result<(), Error> {
    let mut file = AtomicFile::create(directory, EXPORT_STATE_FILE)?;
    let text = serde_json::to_string_pretty(written).expect("the state always serialises");
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.commit()?;
    sync_dir(directory)?;
    Ok(())
}

/// Refuses to go on when the master is behind the outbox: its last assigned number is below
/// the last one the outbox has seen written, or the same file number was written with other
/// content. `last_assigned` and `last_written` come from the master (the latter with its
/// checksum, if the master has written any file).
pub fn check(
    directory: &Path,
    identity: &Identity,
    slave: &str,
    last_assigned: i64,
    last_written: Option<(i64, Checksum)>,
) -> Result<(), Error> {
    let Some(state) = read(directory)? else {
        return Ok(());
    };
    let path = directory.join(EXPORT_STATE_FILE);
    let hint = "The master's database was probably restored from an older copy, or the outbox belongs to another stream. \
                Files the slave may have applied would get other contents under the same numbers, so nothing is written. \
                If the master must go on from here, start a new stream with SELECT dbmirror_reset(); on it, seed the slaves again, \
                and empty this outbox (its state file too) once its files are carried.";
    if state.slave != slave
        || state.master != identity.system_identifier.to_string()
        || state.database != identity.database
    {
        return Err(Error::new(
            Kind::Diverged,
            format!(
                "outbox \"{}\" holds the stream of master {} database \"{}\" for slave \"{}\", not of this one (master {}, database \"{}\", slave \"{slave}\")",
                directory.display(),
                state.master,
                state.database,
                state.slave,
                identity.system_identifier,
                identity.database,
            ),
        )
        .with_hint(hint));
    }
    if state.number > last_assigned {
        return Err(Error::new(
            Kind::Diverged,
            format!(
                "the master is behind its outbox: \"{}\" says file {} was written, but the master has assigned numbers only up to {last_assigned}",
                path.display(),
                state.number
            ),
        )
        .with_hint(hint));
    }
    if let Some((number, sha)) = last_written {
        if number == state.number && sha.to_string() != state.sql_sha256 {
            return Err(Error::new(
                Kind::Diverged,
                format!(
                    "the master's file {number} differs from the one its outbox saw written: sha256 {sha}, not {}",
                    state.sql_sha256
                ),
            )
            .with_hint(hint));
        }
    }
    Ok(())
}
