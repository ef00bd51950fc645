//! `once` and `run`: export everything pending for the slave, in batches.
//!
//! Each batch goes through three steps (see [`crate::master`] for why): assign numbers on the
//! master; write the files, fsync them, rename them into place, fsync the directory, and write
//! the manifest the same way (or, in direct mode, apply each transaction to the slave); then
//! record the batch as written and purge what every slave has. A crash anywhere leaves either
//! an unwritten assignment, which the next start writes again byte for byte, or a written one.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dbmirror_spool::{
    sync_dir, AtomicFile, Checksum, Header, Manifest, ManifestEntry, SigningKey, SqlWriter, TransactionFileName,
    FORMAT_VERSION,
};

use crate::config::{Config, Output};
use crate::direct::Direct;
use crate::error::{Error, Kind};
use crate::fault;
use crate::master::{Assigned, Master};
use crate::sql::FileWriter;
use dbmirror_apply::{log, signals};

/// What one `once` did.
#[derive(Debug, Default)]
pub struct Summary {
    pub transactions: u64,
    pub changes: u64,
    pub purged: i64,
}

/// Exports until nothing is pending (or `stop` is set between batches).
pub fn once(config: &Config, stop: &AtomicBool) -> Result<Summary, Error> {
    let mut master = Master::connect(&config.master, &config.slave_name)?;
    master.lock()?;
    master.slave_row()?;
    let mut direct = match &config.output {
        Output::Direct { slave } => Some(Direct::connect(slave, &config.slave_name)?),
        Output::Files { .. } => None,
    };
    let mut summary = Summary::default();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let mut batch = master.unwritten()?;
        if batch.is_empty() {
            batch = master.assign(config.batch_size)?;
            fault::point("after-assign");
        }
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            break;
        };
        let (first, last) = (first.number, last.number);
        let (_, previous) = master.slave_row()?;
        let written = match (&config.output, direct.as_mut()) {
            (Output::Files { directory, compress, signing_key }, _) => {
                let files = Files { directory, compress: *compress, signing_key: signing_key.as_deref() };
                write_files(&mut master, config, &files, &batch, previous)?
            }
            (Output::Direct { .. }, Some(direct)) => apply_direct(&mut master, config, direct, &batch, previous)?,
            (Output::Direct { .. }, None) => {
                unreachable!("direct mode always connects to the slave first")
            }
        };
        fault::point("before-mark-written");
        let purged = master.mark_written(&written)?;
        let changes: i64 = batch.iter().map(|a| a.changes).sum();
        summary.transactions += batch.len() as u64;
        summary.changes += changes as u64;
        summary.purged += purged;
        log::info(&format!(
            "exported files {first}-{last} for slave \"{}\": {} transactions, {changes} changes, {:.1}s",
            config.slave_name,
            batch.len(),
            started.elapsed().as_secs_f64()
        ));
    }
    Ok(summary)
}

fn header(master: &Master, config: &Config, assigned: &Assigned, previous: Option<Checksum>) -> Header {
    Header {
        format: FORMAT_VERSION,
        master: master.identity.system_identifier,
        database: master.identity.database.clone(),
        slave: config.slave_name.clone(),
        number: assigned.number as u64,
        xid: assigned.xid as u64,
        changes: assigned.changes as u64,
        exported_at: assigned.assigned_at,
        previous_sha256: previous,
    }
}

/// Renders one transaction into `out`, checking that every captured change arrived.
pub fn render<W: Write>(master: &mut Master, header: &Header, assigned: &Assigned, out: W) -> Result<W, Error> {
    let mut writer = FileWriter::begin(out, header)?;
    let count = master.changes(assigned.xid, |change| Ok(writer.change(change)?))?;
    if count != assigned.changes {
        return Err(Error::runtime(format!(
            "transaction {} has {count} captured changes, but dbmirror_Pending says {}",
            assigned.xid, assigned.changes
        )));
    }
    Ok(writer.finish(&assigned.sequences)?)
}

/// Where and how file mode writes.
struct Files<'a> {
    directory: &'a Path,
    compress: bool,
    signing_key: Option<&'a SigningKey>,
}

fn write_files(
    master: &mut Master,
    config: &Config,
    files: &Files<'_>,
    batch: &[Assigned],
    mut previous: Option<Checksum>,
) -> Result<Vec<(i64, Checksum)>, Error> {
    let mut written = Vec::with_capacity(batch.len());
    let mut entries = Vec::with_capacity(batch.len());
    for assigned in batch {
        let name = TransactionFileName {
            number: assigned.number as u64,
            time: assigned.assigned_at,
            xid: assigned.xid as u64,
            compressed: files.compress,
        };
        // A file already under this name was written before a crash (and may have been
        // carried off already): what we write now must be the very same bytes.
        let existing = existing_checksum(&files.directory.join(name.file_name()))?;
        let header = header(master, config, assigned, previous);
        let out = fault::Budget::new(SqlWriter::create(files.directory, &name)?);
        let out =
            render(master, &header, assigned, out).map_err(|e| outbox_failure(e, files.directory, &name))?.into_inner();
        fault::point("before-rename");
        let file = out.finish(existing).map_err(|e| {
            if e.kind() == dbmirror_spool::ErrorKind::Conflict {
                Error::new(Kind::BadFile, e.to_string()).with_hint(
                    "The outbox holds a different file under this number. Keep both for inspection, and report this as a bug.",
                )
            } else {
                e.into()
            }
        })?;
        fault::point("after-rename");
        previous = Some(file.sql_sha256);
        written.push((assigned.xid, file.sql_sha256));
        entries.push(ManifestEntry { checksum: file.stored_sha256, file: name });
    }
    sync_dir(files.directory)?;
    let mut manifest = Manifest::new(entries)?;
    if let Some(key) = files.signing_key {
        manifest.sign(key);
    }
    let mut file = AtomicFile::create(files.directory, &manifest.name.file_name())?;
    file.write_all(manifest.render().as_bytes())?;
    file.commit()?;
    sync_dir(files.directory)?;
    fault::point("after-manifest");
    Ok(written)
}

/// A failure while writing a file: name the file, and say that nothing was recorded as sent.
fn outbox_failure(e: Error, directory: &Path, name: &TransactionFileName) -> Error {
    if e.kind() != Kind::Runtime || !e.to_string().starts_with("I/O error") {
        return e;
    }
    e.context(&format!("could not write \"{}\"", directory.join(name.file_name()).display())).with_hint(
        "Nothing was recorded as sent. Make room in the outbox (carry files away) or fix it, then run the exporter again.",
    )
}

fn existing_checksum(path: &Path) -> Result<Option<Checksum>, Error> {
    match std::fs::File::open(path) {
        Ok(file) => Ok(Some(dbmirror_spool::sha256_of(std::io::BufReader::new(file))?.0)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::runtime(format!("could not read \"{}\": {e}", path.display()))),
    }
}

fn apply_direct(
    master: &mut Master,
    config: &Config,
    direct: &mut Direct,
    batch: &[Assigned],
    mut previous: Option<Checksum>,
) -> Result<Vec<(i64, Checksum)>, Error> {
    let mut written = Vec::with_capacity(batch.len());
    for assigned in batch {
        let header = header(master, config, assigned, previous);
        let sha = direct.apply(&header, |out| render(master, &header, assigned, out))?;
        previous = Some(sha);
        written.push((assigned.xid, sha));
    }
    Ok(written)
}

/// `run`: exports, sleeps `sleep_interval` when idle, retries failures that retrying may cure
/// with a growing pause (alerting each one), and stops between batches on SIGTERM or SIGINT.
pub fn run(config: &Config, stop: &AtomicBool, alert: &dyn Fn(&Error)) -> Result<(), Error> {
    let mut failures = 0u32;
    while !stop.load(Ordering::Relaxed) {
        match once(config, stop) {
            Ok(summary) => {
                failures = 0;
                if summary.transactions == 0 {
                    signals::sleep(config.sleep_interval, stop);
                }
            }
            Err(e) if e.kind() == Kind::Runtime => {
                failures += 1;
                let pause = Duration::from_secs(1u64 << failures.min(8)).min(Duration::from_secs(300));
                log::error(&format!("{e}\n(attempt {failures}; retrying in {}s)", pause.as_secs()));
                alert(&e);
                signals::sleep(pause, stop);
            }
            Err(e) => return Err(e),
        }
    }
    log::info("stopping on signal");
    Ok(())
}
