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
    // Read as bytes: a file that is not even UTF-8 is as damaged as one that is not JSON, and
    // retrying cannot cure either.
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::caused_by(Kind::Runtime, &format!("could not read \"{}\"", path.display()), e)),
    };
    serde_json::from_slice(&text).map(Some).map_err(|e| {
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
                If the master must go on from here, seed the slave again from it with dbmirror-export snapshot (its files are numbered \
                after everything this outbox has seen; apply them with dbmirror-apply --replace), and keep this outbox and its state file.";
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

#[cfg(test)]
mod tests {
    use super::*;

    const SLAVE: &str = "backup_system";

    fn identity() -> Identity {
        Identity { system_identifier: 7_449_123_456_789_012_345, database: "shop".into() }
    }

    fn written(number: i64, sql: &[u8]) -> Written {
        Written {
            master: identity().system_identifier.to_string(),
            database: identity().database,
            slave: SLAVE.into(),
            number,
            sql_sha256: Checksum::of(sql).to_string(),
        }
    }

    fn outbox() -> tempfile::TempDir {
        tempfile::tempdir().expect("a temporary directory can be created")
    }

    #[track_caller]
    fn refused(result: Result<(), Error>, says: &str) -> String {
        let error = result.expect_err("the exporter must refuse to go on");
        assert_eq!(error.kind(), Kind::Diverged, "{error}");
        let text = error.to_string();
        assert!(text.contains(says), "{text}");
        text
    }

    #[test]
    fn an_outbox_without_a_state_file_has_no_state_and_anything_goes() {
        let outbox = outbox();
        assert_eq!(read(outbox.path()).unwrap(), None);
        check(outbox.path(), &identity(), SLAVE, 0, None).unwrap();
        check(outbox.path(), &identity(), SLAVE, 9, Some((9, Checksum::of(b"nine")))).unwrap();
    }

    #[test]
    fn the_state_recorded_is_the_state_read_back() {
        let outbox = outbox();
        record(outbox.path(), &written(3, b"three")).unwrap();
        assert_eq!(read(outbox.path()).unwrap(), Some(written(3, b"three")));
        record(outbox.path(), &written(4, b"four")).unwrap();
        assert_eq!(read(outbox.path()).unwrap(), Some(written(4, b"four")), "the last record replaces the one before");
    }

    /// Prevents the state file from being carried to the slave with the spool, or a crash from
    /// leaving a temporary copy of it where the spool is.
    #[test]
    fn the_state_file_is_a_dot_file_outside_the_spool_and_leaves_nothing_else() {
        let outbox = outbox();
        record(outbox.path(), &written(1, b"one")).unwrap();
        let names: Vec<String> = std::fs::read_dir(outbox.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into())
            .collect();
        assert_eq!(names, [EXPORT_STATE_FILE]);
        assert!(EXPORT_STATE_FILE.starts_with('.'));
        assert!(dbmirror_spool::scan(outbox.path()).unwrap().is_empty());
        let text = std::fs::read_to_string(outbox.path().join(EXPORT_STATE_FILE)).unwrap();
        assert!(text.ends_with("}\n") && text.contains("\"number\": 1"), "readable JSON: {text}");
    }

    #[test]
    fn a_master_that_continues_its_outbox_may_go_on() {
        let outbox = outbox();
        record(outbox.path(), &written(5, b"five")).unwrap();
        // Exactly where the outbox is, with the same last file.
        check(outbox.path(), &identity(), SLAVE, 5, Some((5, Checksum::of(b"five")))).unwrap();
        // Numbers assigned past it, not yet written (a crash before the state was recorded).
        check(outbox.path(), &identity(), SLAVE, 8, Some((5, Checksum::of(b"five")))).unwrap();
        // Files written past it (the state file was recorded before a later batch was lost).
        check(outbox.path(), &identity(), SLAVE, 8, Some((7, Checksum::of(b"seven")))).unwrap();
    }

    /// Prevents a master restored from an older copy from assigning again numbers the outbox
    /// saw written: the slave may have applied them with other contents.
    #[test]
    fn a_master_behind_its_outbox_is_refused() {
        let outbox = outbox();
        record(outbox.path(), &written(5, b"five")).unwrap();
        let text = refused(
            check(outbox.path(), &identity(), SLAVE, 3, Some((3, Checksum::of(b"three")))),
            "the master is behind its outbox",
        );
        assert!(text.contains("says file 5 was written, but the master has assigned numbers only up to 3"), "{text}");
        assert!(text.contains("HINT:  The master's database was probably restored from an older copy"), "{text}");
    }

    /// Prevents one file number from being written with two different contents (a master
    /// restored to just before its last batch reassigns that number to other transactions).
    #[test]
    fn a_file_number_written_again_with_other_content_is_refused() {
        let outbox = outbox();
        record(outbox.path(), &written(5, b"five")).unwrap();
        let other = Checksum::of(b"another five");
        let text =
            refused(check(outbox.path(), &identity(), SLAVE, 5, Some((5, other))), "the master's file 5 differs");
        assert!(text.contains(&format!("sha256 {other}, not {}", Checksum::of(b"five"))), "{text}");
    }

    /// Prevents an outbox from being shared by two streams: another master, another database of
    /// it, or another slave.
    #[test]
    fn an_outbox_of_another_stream_is_refused() {
        let outbox = outbox();
        for state in [
            Written { master: "1".into(), ..written(1, b"one") },
            Written { database: "other".into(), ..written(1, b"one") },
            Written { slave: "other_slave".into(), ..written(1, b"one") },
        ] {
            record(outbox.path(), &state).unwrap();
            refused(check(outbox.path(), &identity(), SLAVE, 1, Some((1, Checksum::of(b"one")))), "not of this one");
        }
    }

    /// Prevents a damaged state file from being taken for no state at all (which would let a
    /// restored master go on) or for a passing failure that retrying cures: whatever it holds,
    /// the exporter stops and says how to recover.
    #[test]
    fn a_torn_empty_or_garbage_state_file_is_refused_as_damaged() {
        let outbox = outbox();
        let whole = serde_json::to_vec(&written(1, b"one")).unwrap();
        for damaged in [&whole[..whole.len() / 2], b"", &[0u8; 64], &[0xff, 0xfe, 0x00, 0x80], b"{\"number\": 1}"] {
            std::fs::write(outbox.path().join(EXPORT_STATE_FILE), damaged).unwrap();
            let error = read(outbox.path()).expect_err("a damaged state file is no state");
            assert_eq!(error.kind(), Kind::Diverged, "{damaged:?}: {error}");
            assert!(error.to_string().contains("is damaged: "), "{error}");
            assert!(error.to_string().contains("HINT:  Move it away once the outbox's files are carried"), "{error}");
            refused(check(outbox.path(), &identity(), SLAVE, 1, None), "is damaged");
        }
    }

    #[test]
    fn a_state_file_that_cannot_be_read_is_a_failure_retrying_may_cure() {
        let outbox = outbox();
        std::fs::create_dir(outbox.path().join(EXPORT_STATE_FILE)).unwrap();
        let error = read(outbox.path()).unwrap_err();
        assert_eq!(error.kind(), Kind::Runtime, "{error}");
        assert!(error.to_string().starts_with("could not read "), "{error}");
    }
}
