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
    sync_dir, AtomicFile, Checksum, Header, Manifest, ManifestEntry, SigningKey, SqlWriter, Staged, Syncer,
    TransactionFileName, FORMAT_VERSION,
};

use crate::config::{Config, Output};
use crate::direct::Direct;
use crate::error::{Error, Kind};
use crate::fault;
use crate::master::{Assigned, CaptureProblem, Identity, Master};
use crate::outbox;
use crate::sql::FileWriter;
use dbmirror_cli::{log, signals};

/// What one `once` did.
#[derive(Debug, Default)]
pub struct Summary {
    pub transactions: u64,
    pub changes: u64,
    pub purged: i64,
}

/// What keeps the master's capture from being complete, as last reported: reported again only
/// when it changes, so that `run` says it once per change, not once per poll.
#[derive(Debug, Default)]
pub struct CaptureProblems {
    last: Option<Vec<CaptureProblem>>,
}

impl CaptureProblems {
    /// Logs (and alerts) the master's capture problems if they differ from the last report.
    fn report(&mut self, master: &mut Master, alert: &dyn Fn(&Error)) -> Result<(), Error> {
        let problems = master.capture_problems()?;
        if self.last.as_ref() == Some(&problems) {
            return Ok(());
        }
        if problems.is_empty() && self.last.is_some() {
            log::info("capture is complete again on every mirrored table");
        }
        for problem in &problems {
            let error = Error::new(Kind::Runtime, format!("capture is incomplete: {}", problem.problem))
                .with_hint(problem.hint.clone().unwrap_or_default());
            log::error(&error.to_string());
            alert(&error);
        }
        self.last = Some(problems);
        Ok(())
    }
}

/// Exports until nothing is pending (or `stop` is set between batches).
pub fn once(
    config: &Config,
    stop: &AtomicBool,
    problems: &mut CaptureProblems,
    alert: &dyn Fn(&Error),
) -> Result<Summary, Error> {
    let mut master = Master::connect(&config.master, &config.slave_name)?;
    master.lock()?;
    let stream = master.slave_row()?;
    if let Output::Files { directory, .. } = &config.output {
        outbox::check(directory, &master.identity, &config.slave_name, stream.last_number, stream.last_written())?;
    }
    problems.report(&mut master, alert)?;
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
        let previous = master.slave_row()?.last_sha256;
        let written = match (&config.output, direct.as_mut()) {
            (Output::Files { directory, compress, signing_key }, _) => {
                let mut files = Files {
                    directory,
                    compress: *compress,
                    signing_key: signing_key.as_deref(),
                    entries: Vec::new(),
                    staged: Vec::new(),
                    syncer: None,
                };
                export_batch(&mut master, config, &mut files, &batch, previous)?
            }
            (Output::Direct { .. }, Some(direct)) => export_batch(&mut master, config, direct, &batch, previous)?,
            (Output::Direct { .. }, None) => unreachable!("direct mode always connects to the slave first"),
        };
        fault::point("before-mark-written");
        let purged = master.mark_written(&written)?;
        if let (Output::Files { directory, .. }, Some((_, sha))) = (&config.output, written.last()) {
            let state = outbox::Written {
                master: master.identity.system_identifier.to_string(),
                database: master.identity.database.clone(),
                slave: config.slave_name.clone(),
                number: last,
                sql_sha256: sha.to_string(),
            };
            outbox::record(directory, &state)?;
        }
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

fn header(identity: &Identity, config: &Config, assigned: &Assigned, previous: Option<Checksum>) -> Header {
    Header {
        format: FORMAT_VERSION,
        master: identity.system_identifier,
        database: identity.database.clone(),
        slave: config.slave_name.clone(),
        number: assigned.number as u64,
        xid: assigned.xid as u64,
        changes: assigned.changes as u64,
        exported_at: assigned.assigned_at,
        previous_sha256: previous,
    }
}

/// Where the transactions of a batch go, one after the other: files, or the slave itself.
pub trait Destination {
    /// What a transaction's SQL is written to.
    type Out: Write;
    fn open(&mut self, assigned: &Assigned) -> Result<Self::Out, Error>;
    /// Completes a transaction; returns the checksum of its SQL.
    fn close(&mut self, assigned: &Assigned, out: Self::Out) -> Result<Checksum, Error>;
    /// Completes the batch.
    fn end(&mut self) -> Result<(), Error>;
    /// Says where a failure to write `assigned` happened.
    fn write_error(&self, _assigned: &Assigned, e: Error) -> Error {
        e
    }
}

/// Renders a batch into `destination`, streaming its changes from the master in one query, and
/// checks that every transaction arrived with all its captured changes. Returns each
/// transaction's xid with the checksum of its SQL.
fn export_batch<D: Destination>(
    master: &mut Master,
    config: &Config,
    destination: &mut D,
    batch: &[Assigned],
    mut previous: Option<Checksum>,
) -> Result<Vec<(i64, Checksum)>, Error> {
    struct Open<W: Write> {
        position: usize,
        writer: FileWriter<W>,
        changes: i64,
    }
    let identity = master.identity.clone();
    let mut written: Vec<(i64, Checksum)> = Vec::with_capacity(batch.len());
    let mut open: Option<Open<D::Out>> = None;
    let close = |open: Open<D::Out>, destination: &mut D, written: &mut Vec<(i64, Checksum)>| {
        let assigned = &batch[open.position];
        if open.changes != assigned.changes {
            return Err(Error::runtime(format!(
                "transaction {} has {} captured changes, but dbmirror_Pending says {}",
                assigned.xid, open.changes, assigned.changes
            )));
        }
        let out = open.writer.finish(&assigned.sequences).map_err(|e| destination.write_error(assigned, e.into()))?;
        let sha = destination.close(assigned, out)?;
        written.push((assigned.xid, sha));
        Ok::<_, Error>(sha)
    };
    master.stream_batch(batch, |position, change| {
        if open.as_ref().is_none_or(|o| o.position != position) {
            if let Some(done) = open.take() {
                previous = Some(close(done, destination, &mut written)?);
            }
            if position != written.len() {
                return Err(missing(&batch[written.len()]));
            }
            let assigned = &batch[position];
            let header = header(&identity, config, assigned, previous);
            let writer = FileWriter::begin(destination.open(assigned)?, &header)
                .map_err(|e| destination.write_error(assigned, e.into()))?;
            open = Some(Open { position, writer, changes: 0 });
        }
        let current = open.as_mut().expect("a transaction is open");
        if let Err(e) = current.writer.change(change) {
            return Err(destination.write_error(&batch[current.position], e.into()));
        }
        current.changes += 1;
        Ok(())
    })?;
    if let Some(done) = open.take() {
        close(done, destination, &mut written)?;
    }
    if let Some(assigned) = batch.get(written.len()) {
        return Err(missing(assigned));
    }
    destination.end()?;
    Ok(written)
}

fn missing(assigned: &Assigned) -> Error {
    Error::runtime(format!("transaction {} has no captured changes in dbmirror_PendingData", assigned.xid))
}

/// File mode: one file per transaction, and a manifest for the batch.
///
/// A batch's files are written under temporary names while background threads fsync the ones
/// done (concurrent fsyncs share journal commits); once all are durable they are renamed into
/// place, the directory is fsynced, and the manifest follows the same way. Renaming never
/// replaces a file: after a crash the same numbers are written again, and a file already
/// carrying one must have the very same bytes (see [`Staged::publish`]).
struct Files<'a> {
    directory: &'a Path,
    compress: bool,
    signing_key: Option<&'a SigningKey>,
    entries: Vec<ManifestEntry>,
    staged: Vec<(TransactionFileName, Staged)>,
    syncer: Option<Syncer>,
}

impl Files<'_> {
    fn name(&self, assigned: &Assigned) -> TransactionFileName {
        TransactionFileName {
            number: assigned.number as u64,
            time: assigned.assigned_at,
            xid: assigned.xid as u64,
            compressed: self.compress,
        }
    }
}

impl Destination for Files<'_> {
    type Out = fault::Budget<SqlWriter>;

    fn open(&mut self, assigned: &Assigned) -> Result<Self::Out, Error> {
        Ok(fault::Budget::new(SqlWriter::create(self.directory, &self.name(assigned))?))
    }

    fn close(&mut self, assigned: &Assigned, out: Self::Out) -> Result<Checksum, Error> {
        let name = self.name(assigned);
        let (file, mut staged) =
            out.into_inner().finish().map_err(|e| outbox_failure(e.into(), self.directory, &name))?;
        if let Some((path, handle)) = staged.take_file() {
            self.syncer.get_or_insert_with(Syncer::new).push(path, handle);
        }
        self.entries.push(ManifestEntry { checksum: file.stored_sha256, file: name.clone() });
        self.staged.push((name, staged));
        Ok(file.sql_sha256)
    }

    fn write_error(&self, assigned: &Assigned, e: Error) -> Error {
        outbox_failure(e, self.directory, &self.name(assigned))
    }

    fn end(&mut self) -> Result<(), Error> {
        if let Some(syncer) = self.syncer.take() {
            syncer.finish()?;
        }
        fault::point("before-rename");
        for (name, staged) in self.staged.drain(..) {
            staged.publish().map_err(|e| match e.kind() {
                dbmirror_spool::ErrorKind::Conflict => Error::new(Kind::BadFile, e.to_string()).with_hint(
                    "The outbox holds a different file under this number. Keep both for inspection, and report this as a bug.",
                ),
                _ => outbox_failure(e.into(), self.directory, &name),
            })?;
        }
        fault::point("after-rename");
        sync_dir(self.directory)?;
        let mut manifest = Manifest::new(std::mem::take(&mut self.entries))?;
        if let Some(key) = self.signing_key {
            manifest.sign(key);
        }
        let mut file = AtomicFile::create(self.directory, &manifest.name.file_name())?;
        file.write_all(manifest.render().as_bytes())?;
        file.commit()?;
        sync_dir(self.directory)?;
        fault::point("after-manifest");
        Ok(())
    }
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

/// `run`: exports, sleeps `sleep_interval` when idle, retries failures that retrying may cure
/// with a growing pause (alerting each one), and stops between batches on SIGTERM or SIGINT.
pub fn run(config: &Config, stop: &AtomicBool, alert: &dyn Fn(&Error)) -> Result<(), Error> {
    let mut failures = 0u32;
    let mut problems = CaptureProblems::default();
    while !stop.load(Ordering::Relaxed) {
        match once(config, stop, &mut problems, alert) {
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
