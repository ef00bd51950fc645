//! Direct mode (the seed's mode A): each transaction goes straight into the slave database.
//!
//! The transaction is rendered exactly as its file would be, into an anonymous temporary file
//! (memory stays bounded however large the transaction), and replayed with the applier's own
//! replay, guard included. So a number is applied at most once on the slave: when the exporter
//! restarts after a crash between applying and recording, the slave already has the number and
//! the file is only rendered again, to carry its checksum forward in the chain.

use std::io::{BufReader, BufWriter, Seek, SeekFrom};

use dbmirror_apply::{replay, slave};
use dbmirror_spool::{Checksum, HashingWriter, Header};
use postgres::Client;

use crate::error::Error;

pub struct Direct {
    client: Client,
    slave: String,
}

impl Direct {
    pub fn connect(config: &postgres::Config, slave_name: &str) -> Result<Self, Error> {
        Ok(Self { client: slave::connect(config, "dbmirror-export")?, slave: slave_name.to_string() })
    }

    /// Renders the transaction with `render` and applies it; returns the checksum of its SQL.
    pub fn apply(
        &mut self,
        header: &Header,
        render: impl FnOnce(
            HashingWriter<BufWriter<std::fs::File>>,
        ) -> Result<HashingWriter<BufWriter<std::fs::File>>, Error>,
    ) -> Result<Checksum, Error> {
        let file =
            tempfile::tempfile().map_err(|e| Error::runtime(format!("could not create a temporary file: {e}")))?;
        let out = render(HashingWriter::new(BufWriter::new(file)))?;
        let (out, sha) = out.finish();
        let mut file =
            out.into_inner().map_err(|e| Error::runtime(format!("could not write a temporary file: {e}")))?;
        let applied = slave::last_applied(&mut self.client, &self.slave)?;
        if applied.is_some_and(|n| n >= header.number as i64) {
            return Ok(sha);
        }
        file.seek(SeekFrom::Start(0))?;
        let record = slave::record_checksum_sql(&self.slave, &sha);
        replay::replay(&mut self.client, BufReader::new(file), Some(&record))
            .map_err(|e| Error::runtime(format!("file {} could not be applied to the slave: {e}", header.number)))?;
        Ok(sha)
    }
}
