//! Direct mode (the seed's mode A): each transaction goes straight into the slave database.
//!
//! The transaction is rendered exactly as its file would be, into an anonymous temporary file
//! (memory stays bounded however large the transaction), and replayed with the applier's own
//! replay, guard included. So a number is applied at most once on the slave: when the exporter
//! restarts after a crash between applying and recording, the slave already has the number and
//! the file is only rendered again, to carry its checksum forward in the chain. A transaction
//! the slave refuses (its SQL fails) stops the exporter with exit code 5 rather than being
//! retried forever; a lost connection is retried.

use std::io::{BufReader, BufWriter, Seek, SeekFrom};

use dbmirror_replay::grammar::DdlPolicy;
use dbmirror_replay::{replay, slave};
use dbmirror_spool::{Checksum, HashingWriter};
use postgres::Client;

use crate::error::{Error, Kind};
use crate::master::Assigned;

pub struct Direct {
    client: Client,
    slave: String,
}

impl Direct {
    pub fn connect(config: &dbmirror_cli::conninfo::Connection, slave_name: &str) -> Result<Self, Error> {
        Ok(Self { client: slave::connect(config, "dbmirror-export")?, slave: slave_name.to_string() })
    }
}

impl crate::export::Destination for Direct {
    type Out = HashingWriter<BufWriter<std::fs::File>>;

    fn open(&mut self, _assigned: &Assigned) -> Result<Self::Out, Error> {
        let file = tempfile::tempfile()
            .map_err(|e| Error::caused_by(Kind::Runtime, "could not create a temporary file", e))?;
        Ok(HashingWriter::new(BufWriter::new(file)))
    }

    /// Applies the rendered transaction, unless the slave has its number already: a crash came
    /// between applying and recording it, if the slave applied this very transaction; if it
    /// applied another one under this number, the master's history diverged.
    fn close(&mut self, assigned: &Assigned, out: Self::Out) -> Result<Checksum, Error> {
        let (out, sha) = out.finish();
        let file =
            out.into_inner().map_err(|e| Error::caused_by(Kind::Runtime, "could not write a temporary file", e))?;
        if slave::last_applied(&mut self.client, &self.slave)?.is_some_and(|n| n >= assigned.number) {
            let number = assigned.number as u64;
            let applied = slave::applied_files(&mut self.client, &self.slave, &[number])?;
            if let Some(applied) = applied.get(&number) {
                let same = match &applied.sha256 {
                    Some(known) => *known == sha.to_string(),
                    None => {
                        applied.xid == assigned.xid && applied.exported_at.is_none_or(|at| at == assigned.assigned_at)
                    }
                };
                if !same {
                    return Err(Error::new(
                        Kind::BadFile,
                        format!(
                            "the slave applied another transaction as number {number}: the master's history diverged \
                             (applied: master transaction {}; now: master transaction {} assigned at {})",
                            applied.xid, assigned.xid, assigned.assigned_at
                        ),
                    )
                    .with_hint(slave::DIVERGED_HINT));
                }
            }
            return Ok(sha);
        }
        let record = slave::record_checksum_sql(&self.slave, &sha);
        // Read from the start, and again from the start should a failure have to be located.
        let file = &file;
        let open = || {
            let mut start = file;
            start.seek(SeekFrom::Start(0))?;
            Ok(BufReader::new(file))
        };
        // DDL passes the grammar, and the slave's dbmirror.ddl() holds it to the tables the
        // transaction names (its default, unless the slave connection's options set dbmirror.ddl).
        replay::replay(&mut self.client, open, Some(&record), DdlPolicy::Mirrored).map_err(|e| {
            let message = format!(
                "transaction {} (number {}) could not be applied to the slave: {e}",
                assigned.xid, assigned.number
            );
            if e.is_transient() {
                return Error::runtime(message);
            }
            // The slave refused the transaction itself: retrying would fail the same way
            // forever, and every later transaction would wait behind it.
            let hint = if e.code() == Some(dbmirror_sql::DDL_REFUSED) {
                "Nothing of it was applied. The slave refuses the schema change it carries (its dbmirror.ddl setting): \
                 allow it there (ALTER DATABASE ... SET dbmirror.ddl = 'any'), then run the exporter again."
            } else {
                "Nothing of it was applied. The slave differs from the master, or lacks a table or column: repair it \
                 (dbmirror-export verify compares them), then run the exporter again."
            };
            Error::new(Kind::BadFile, message).with_hint(hint)
        })?;
        Ok(sha)
    }

    fn end(&mut self) -> Result<(), Error> {
        Ok(())
    }
}
