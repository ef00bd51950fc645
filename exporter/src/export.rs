//! `once` and `run`: export everything pending for the slave, or for each of several slaves of
//! one master (see [`crate::group`]), in batches.
//!
//! Each batch goes through three steps (see [`crate::master`] for why): assign numbers on the
//! master; write the files, fsync them, rename them into place, fsync the directory, and write
//! the manifest the same way (or, in direct mode, apply each transaction to the slave); then
//! record the batch as written and purge what every slave has. In file mode one batch's files
//! are made durable and published while the next batch is assigned and written (see [`once`]).
//! A crash anywhere leaves either an unwritten assignment, which the next start writes again
//! byte for byte, or a written one.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dbmirror_spool::{
    sync_dir, sync_filesystem, AtomicFile, Checksum, Header, Manifest, ManifestEntry, SigningKey, SqlWriter, Staged,
    Syncer, TransactionFileName, FORMAT_VERSION,
};

use crate::config::{Config, Output, SyncMethod};
use crate::direct::Direct;
use crate::error::{Error, Kind};
use crate::fault;
use crate::group;
use crate::master::{Assigned, CaptureProblem, Identity, Master, Read};
use crate::outbox;
use crate::sql::FileWriter;
use crate::status;
use crate::tee::Tee;
use dbmirror_cli::configuration::Reload;
use dbmirror_cli::metrics::MetricsFile;
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
    pub(crate) fn report(&mut self, master: &mut Master, alert: &dyn Fn(&str)) -> Result<(), Error> {
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
            alert(&error.to_string());
        }
        self.last = Some(problems);
        Ok(())
    }
}

/// Exports until nothing is pending for any of the slaves of `configs` (or `stop` is set
/// between batches): one slave, in file or direct mode, or several slaves of one master in
/// file mode (see [`crate::group`]). The master's capture problems are the same for every
/// slave: they are reported once.
///
/// Batches overlap: while one batch's files are made durable and published on threads of their
/// own, the next batch is assigned and streamed into files under temporary names; then the
/// first is recorded as written. So the master's session and the file system are seldom idle
/// together. The order that makes a crash safe stays the same for each batch (durable before
/// named, named before recorded), and a batch is published only after the one before it. A
/// crash can leave two batches assigned and unwritten; the next start writes them again in
/// turn, each as it was.
pub fn once(
    configs: &[Config],
    stop: &AtomicBool,
    problems: &mut CaptureProblems,
    alert: &dyn Fn(&str),
) -> Result<Summary, Error> {
    group::check(configs)?;
    let mut masters = group::connect_all(configs)?;
    problems.report(&mut masters[0], alert)?;
    // Direct mode serves one slave (group::check refuses it among several).
    let mut direct = match &configs[0].output {
        Output::Direct { slave } => Some(Direct::connect(slave, &configs[0].slave_name)?),
        Output::Files { .. } => None,
    };
    // Each slave's checksum of the SQL of its last file, for the guard of its next one.
    let mut previous = Vec::with_capacity(masters.len());
    for master in &mut masters {
        previous.push(master.slave_row()?.last_sha256);
    }
    let batch_size = configs[0].batch_size;
    let mut summary = Summary::default();
    std::thread::scope(|scope| {
        // The batches of the last pass still ending, one per slave that had one.
        let mut ending: Vec<Ending<'_>> = Vec::new();
        let mut pass = || -> Result<bool, Error> {
            let started = Instant::now();
            // The slaves' batches are taken one right after the other, so that transactions
            // committing meanwhile seldom make them differ.
            let mut batches = Vec::with_capacity(masters.len());
            for (i, master) in masters.iter_mut().enumerate() {
                let after = ending.iter().find(|e| e.slave == i).and_then(|e| e.batch.last()).map(|a| a.number);
                batches.push(next_batch(master, batch_size, after)?);
            }
            if batches.iter().all(Vec::is_empty) {
                return Ok(false);
            }
            let mut ends = Vec::new();
            for group in group::groups(&mut masters, &batches)? {
                let mut members = Vec::with_capacity(group.len());
                let mut direct = direct.as_mut();
                for &i in &group {
                    let config = &configs[i];
                    let destination = match &config.output {
                        Output::Files { directory, compress, signing_key } => {
                            Target::Files(Files::new(directory, *compress, signing_key.as_deref(), config.sync_method))
                        }
                        Output::Direct { .. } => Target::Direct(direct.take().expect("direct mode serves one slave")),
                    };
                    let batch = &batches[i][..];
                    members.push(Member {
                        config,
                        batch,
                        destination,
                        previous: previous[i],
                        written: Vec::with_capacity(batch.len()),
                    });
                }
                export_batch(&mut masters[group[0]], &mut members)?;
                for (member, &i) in members.into_iter().zip(&group) {
                    previous[i] = member.previous;
                    match member.destination {
                        Target::Files(files) => ends.push((i, files, member.written)),
                        // The slave's session is the next batch's too: the batch ends and is
                        // recorded here (direct mode serves one slave: nothing else is ending).
                        Target::Direct(direct) => {
                            direct.end()?;
                            record(&mut masters[i], &configs[i], &batches[i], &member.written, started, &mut summary)?;
                        }
                    }
                }
            }
            // The last pass's batches are published and recorded before this one's are
            // published, and this one's only if every one of those was: a batch is never
            // recorded after one before it failed (the next start must find the stream
            // recorded up to where its files continue).
            let ended = join(&mut ending)?;
            record_all(&mut masters, configs, ended, &mut summary)?;
            for (slave, mut files, written) in ends {
                let end = scope.spawn(move || files.end());
                ending.push(Ending { slave, batch: std::mem::take(&mut batches[slave]), written, started, end });
            }
            Ok(true)
        };
        let mut result = Ok(true);
        while !stop.load(Ordering::Relaxed) && matches!(result, Ok(true)) {
            result = pass();
        }
        // Whatever stopped the passes, what is still ending follows a recorded batch: it is
        // recorded if it ended well.
        let last = join(&mut ending).and_then(|ended| record_all(&mut masters, configs, ended, &mut summary));
        match (result, last) {
            (Err(e), Err(also)) => {
                log::error(&also.to_string());
                Err(e)
            }
            (result, last) => result.and(last),
        }
    })?;
    Ok(summary)
}

/// A slave's batch whose files are being made durable and published on a thread of its own
/// (`end`), to be recorded as written.
struct Ending<'scope> {
    slave: usize,
    batch: Vec<Assigned>,
    written: Vec<(i64, Checksum)>,
    started: Instant,
    end: std::thread::ScopedJoinHandle<'scope, Result<(), Error>>,
}

/// A slave's batch whose files are durable and published, to be recorded as written.
struct Ended {
    slave: usize,
    batch: Vec<Assigned>,
    written: Vec<(i64, Checksum)>,
    started: Instant,
}

/// Waits for every batch of `ending` to end: all of them, to record, or the first failure (a
/// batch is recorded only if every one before it was).
fn join(ending: &mut Vec<Ending<'_>>) -> Result<Vec<Ended>, Error> {
    let mut result = Ok(Vec::with_capacity(ending.len()));
    for Ending { slave, batch, written, started, end } in ending.drain(..) {
        let end = end.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        match (&mut result, end) {
            (Ok(ended), Ok(())) => ended.push(Ended { slave, batch, written, started }),
            (Ok(_), Err(e)) => result = Err(e),
            (Err(_), _) => {}
        }
    }
    result
}

/// Records each batch of `ended` for its slave, in order.
fn record_all(
    masters: &mut [Master],
    configs: &[Config],
    ended: Vec<Ended>,
    summary: &mut Summary,
) -> Result<(), Error> {
    for batch in ended {
        let i = batch.slave;
        record(&mut masters[i], &configs[i], &batch.batch, &batch.written, batch.started, summary)?;
    }
    Ok(())
}

/// Connects to the master for the slave of `config`, takes its lock, and checks that the
/// slave's stream can go on: registered, no snapshot unfinished, the outbox (in file mode)
/// continuing the master's record.
pub(crate) fn start(config: &Config) -> Result<Master, Error> {
    let mut master = Master::connect(&config.master, &config.slave_name)?;
    master.lock()?;
    let stream = master.slave_row()?;
    stream.check_not_seeding(&config.slave_name)?;
    if let Output::Files { directory, .. } = &config.output {
        outbox::check(directory, &master.identity, &config.slave_name, stream.last_number, stream.last_written())?;
    }
    Ok(master)
}

/// The slave's next batch: the first assignment numbered above `after` (the batch still
/// ending, if any) that a crash left unwritten, else up to `batch_size` transactions assigned
/// now. Empty when nothing is pending.
fn next_batch(master: &mut Master, batch_size: usize, after: Option<i64>) -> Result<Vec<Assigned>, Error> {
    let batch = master.unwritten(after.unwrap_or(i64::MIN))?;
    if !batch.is_empty() {
        return Ok(batch);
    }
    let batch = master.assign(batch_size)?;
    if !batch.is_empty() {
        fault::point("after-assign");
    }
    Ok(batch)
}

/// Records a batch whose files are durable (or, in direct mode, applied): on the master, which
/// purges what every slave now has, then in the outbox's state file; counts it in `summary`
/// and logs it.
pub(crate) fn record(
    master: &mut Master,
    config: &Config,
    batch: &[Assigned],
    written: &[(i64, Checksum)],
    started: Instant,
    summary: &mut Summary,
) -> Result<(), Error> {
    let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
        return Ok(());
    };
    let (first, last) = (first.number, last.number);
    fault::point("before-mark-written");
    let purged = master.mark_written(written)?;
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
    Ok(())
}

pub(crate) fn header(identity: &Identity, config: &Config, assigned: &Assigned, previous: Option<Checksum>) -> Header {
    Header {
        format: FORMAT_VERSION,
        master: identity.system_identifier,
        database: identity.database.clone(),
        slave: config.slave_name.clone(),
        number: assigned.number as u64,
        xid: assigned.xid as u64,
        changes: assigned.changes as u64,
        exported_at: assigned.assigned_at,
        committed_at: Some(assigned.committed_at),
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

/// Where one slave's transactions go in [`once`]: its outbox, or (one slave alone) the slave
/// itself. The outbox's settings are the configuration's (`'c`) and outlive the batch; the slave
/// is borrowed for one batch (`'d`).
enum Target<'c, 'd> {
    Files(Files<'c>),
    Direct(&'d mut Direct),
}

/// What a transaction's SQL is written to, for either [`Target`].
#[expect(clippy::large_enum_variant, reason = "one per slave and transaction, moved only into the tee")]
enum TargetOut {
    Files(<Files<'static> as Destination>::Out),
    Direct(<Direct as Destination>::Out),
}

impl Write for TargetOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            TargetOut::Files(out) => out.write(buf),
            TargetOut::Direct(out) => out.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            TargetOut::Files(out) => out.flush(),
            TargetOut::Direct(out) => out.flush(),
        }
    }
}

impl Destination for Target<'_, '_> {
    type Out = TargetOut;

    fn open(&mut self, assigned: &Assigned) -> Result<Self::Out, Error> {
        Ok(match self {
            Target::Files(files) => TargetOut::Files(files.open(assigned)?),
            Target::Direct(direct) => TargetOut::Direct(direct.open(assigned)?),
        })
    }

    fn close(&mut self, assigned: &Assigned, out: Self::Out) -> Result<Checksum, Error> {
        match (self, out) {
            (Target::Files(files), TargetOut::Files(out)) => files.close(assigned, out),
            (Target::Direct(direct), TargetOut::Direct(out)) => direct.close(assigned, out),
            _ => unreachable!("a target closes only what it opened"),
        }
    }

    fn end(&mut self) -> Result<(), Error> {
        match self {
            Target::Files(files) => files.end(),
            Target::Direct(direct) => direct.end(),
        }
    }

    fn write_error(&self, assigned: &Assigned, e: Error) -> Error {
        match self {
            Target::Files(files) => files.write_error(assigned, e),
            Target::Direct(direct) => direct.write_error(assigned, e),
        }
    }
}

/// One slave of a batch being written.
struct Member<'a, D> {
    config: &'a Config,
    batch: &'a [Assigned],
    destination: D,
    /// Checksum of the SQL of the slave's last file, for the guard of its next one.
    previous: Option<Checksum>,
    /// Each transaction written, with the checksum of its SQL.
    written: Vec<(i64, Checksum)>,
}

/// The transaction being written, for every member at once.
struct Open<W: Write> {
    position: usize,
    body: FileWriter<Tee<W>>,
    changes: i64,
}

/// Writes the batches of `members`: one slave, or slaves whose batches hold the same
/// transactions in the same order and leave none of their changes out (see
/// [`group::groups`]). The changes stream once, in one query on `master` (the first member's
/// session), and each transaction's body is rendered once into a [`Tee`] over the members'
/// outputs; the header and guard at its start and the sequences and COMMIT at its end, which
/// differ between slaves, are written into each output on its own. Checks that every
/// transaction arrives with all its captured changes; each member's `written` then lists its
/// transactions. Ending each member's batch (files made durable and published, see [`Files`])
/// and recording it are the caller's.
fn export_batch<D: Destination>(master: &mut Master, members: &mut [Member<'_, D>]) -> Result<(), Error> {
    let Some(first) = members.first() else {
        return Ok(());
    };
    let batch = first.batch;
    if members.len() > 1 {
        log::info(&format!(
            "rendering {} transactions once for slaves {} (from xid {})",
            batch.len(),
            members.iter().map(|m| format!("\"{}\"", m.config.slave_name)).collect::<Vec<_>>().join(", "),
            batch.first().map_or(0, |a| a.xid)
        ));
    }
    let identity = master.identity.clone();
    // A table the slave takes from a copy of its own leaves out the changes the copy has (or
    // all of the table's, while the copy is still to come). Only a slave alone may leave
    // anything out: a group forms only of slaves that keep every change of the batch.
    let filter = master.table_filter()?;
    let mut open: Option<Open<D::Out>> = None;
    let mut done = 0;
    // Read physically first; if the rows lie out of order, drop the transaction that broke it
    // (its files are not closed, so nothing of it stays) and read it and the rest sorted.
    let mut read = master.next_read();
    let mut start = 0;
    loop {
        let stopped = master.stream_batch(&batch[start..], read, |position, change| {
            let position = start + position;
            if open.as_ref().is_none_or(|o| o.position != position) {
                if let Some(finished) = open.take() {
                    close(finished, members)?;
                    done += 1;
                }
                if position != done {
                    return Err(missing(&batch[done]));
                }
                let mut outputs = Vec::with_capacity(members.len());
                for member in members.iter_mut() {
                    let assigned = &member.batch[position];
                    let header = header(&identity, member.config, assigned, member.previous);
                    let mut out = member.destination.open(assigned)?;
                    FileWriter::head(&mut out, &header)
                        .map_err(|e| member.destination.write_error(assigned, e.into()))?;
                    outputs.push(out);
                }
                open = Some(Open { position, body: FileWriter::body(Tee::new(outputs)), changes: 0 });
            }
            let current = open.as_mut().expect("a transaction is open");
            current.changes += 1;
            if filter.leaves_out_change(&change, batch[current.position].xid) {
                return Ok(());
            }
            current.body.change(change).map_err(|e| failure(members, &current.body, current.position, e))
        })?;
        let Some(broken) = stopped else { break };
        let broken = start + broken;
        if broken < done {
            return Err(one_too_many(&batch[broken]));
        }
        // The transaction out of place is dropped unwritten (its files removed); one before it
        // is whole.
        if let Some(finished) = open.take().filter(|o| o.position != broken) {
            close(finished, members)?;
            done += 1;
        }
        log::info(&format!(
            "changes of transaction {} lie out of change order on disk: reading it and the rest of its batch sorted",
            batch[broken].xid
        ));
        master.out_of_order();
        (start, read) = (broken, Read::Sorted);
    }
    if let Some(finished) = open.take() {
        close(finished, members)?;
        done += 1;
    }
    if let Some(assigned) = batch.get(done) {
        return Err(missing(assigned));
    }
    Ok(())
}

/// Ends a transaction in every member's output: the rest of the body, once, then each slave's
/// sequences and COMMIT.
fn close<D: Destination>(mut open: Open<D::Out>, members: &mut [Member<'_, D>]) -> Result<(), Error> {
    let position = open.position;
    let expected = members[0].batch[position].changes;
    if open.changes != expected {
        return Err(Error::runtime(format!(
            "transaction {} has {} captured changes, but dbmirror_Pending says {expected}",
            members[0].batch[position].xid, open.changes
        )));
    }
    open.body.end_body().map_err(|e| failure(members, &open.body, position, e))?;
    for (member, mut out) in members.iter_mut().zip(open.body.into_inner().into_inner()) {
        let assigned = &member.batch[position];
        FileWriter::tail(&mut out, &assigned.sequences)
            .map_err(|e| member.destination.write_error(assigned, e.into()))?;
        let sha = member.destination.close(assigned, out)?;
        member.written.push((assigned.xid, sha));
        member.previous = Some(sha);
    }
    Ok(())
}

/// A failure to write a body, naming the file of the slave whose write failed.
fn failure<D: Destination>(
    members: &[Member<'_, D>],
    body: &FileWriter<Tee<D::Out>>,
    position: usize,
    e: std::io::Error,
) -> Error {
    let member = &members[body.get_ref().failed().unwrap_or(0)];
    member.destination.write_error(&member.batch[position], e.into())
}

/// A change of a transaction whose file was closed with all the changes dbmirror_Pending counts.
pub(crate) fn one_too_many(assigned: &Assigned) -> Error {
    Error::runtime(format!(
        "transaction {} has more captured changes than dbmirror_Pending says ({})",
        assigned.xid, assigned.changes
    ))
}

pub(crate) fn missing(assigned: &Assigned) -> Error {
    Error::runtime(format!("transaction {} has no captured changes in dbmirror_PendingData", assigned.xid))
}

/// File mode: one file per transaction, and a manifest for the batch.
///
/// A batch's files are written under temporary names and made durable there: by background
/// threads that fsync the ones done while the next are written (concurrent fsyncs share journal
/// commits), or, with `sync_method = "syncfs"`, by one syncfs of the outbox's file system once
/// all are written. Then they are renamed into place, the directory is fsynced, and the
/// manifest follows the same way; only then is the batch recorded as written. Renaming never
/// replaces a file: after a crash the same numbers are written again, and a file already
/// carrying one must have the very same bytes (see [`Staged::publish`]).
pub(crate) struct Files<'a> {
    directory: &'a Path,
    compress: bool,
    signing_key: Option<&'a SigningKey>,
    entries: Vec<ManifestEntry>,
    staged: Vec<(TransactionFileName, Staged)>,
    sync_method: SyncMethod,
    syncer: Option<Syncer>,
    /// Files written since the file system was last synced (syncfs).
    unsynced: bool,
}

impl<'a> Files<'a> {
    /// Waits until every file written so far is durable (under its temporary name).
    pub(crate) fn make_durable(&mut self) -> Result<(), Error> {
        if let Some(syncer) = self.syncer.take() {
            syncer.finish()?;
        }
        if std::mem::take(&mut self.unsynced) {
            sync_filesystem(self.directory)?;
        }
        Ok(())
    }

    pub(crate) fn new(
        directory: &'a Path,
        compress: bool,
        signing_key: Option<&'a SigningKey>,
        sync_method: SyncMethod,
    ) -> Self {
        Self {
            directory,
            compress,
            signing_key,
            entries: Vec::new(),
            staged: Vec::new(),
            sync_method,
            syncer: None,
            unsynced: false,
        }
    }

    pub(crate) fn name(&self, assigned: &Assigned) -> TransactionFileName {
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
            match self.sync_method {
                SyncMethod::Fsync => self.syncer.get_or_insert_with(Syncer::new).push(path, handle),
                SyncMethod::Syncfs => self.unsynced = true,
            }
        }
        self.entries.push(ManifestEntry { checksum: file.stored_sha256, file: name.clone() });
        self.staged.push((name, staged));
        Ok(file.sql_sha256)
    }

    fn write_error(&self, assigned: &Assigned, e: Error) -> Error {
        outbox_failure(e, self.directory, &self.name(assigned))
    }

    fn end(&mut self) -> Result<(), Error> {
        self.make_durable()?;
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
pub(crate) fn outbox_failure(e: Error, directory: &Path, name: &TransactionFileName) -> Error {
    if e.kind() != Kind::Runtime || !e.to_string().starts_with("I/O error") {
        return e;
    }
    e.context(&format!("could not write \"{}\"", directory.join(name.file_name()).display())).with_hint(
        "Nothing was recorded as sent. Make room in the outbox (carry files away) or fix it, then run the exporter again.",
    )
}

/// `run`: exports, sleeps `sleep_interval` when idle, retries failures that retrying may cure
/// with a growing pause (alerting when the failure starts or changes, and when it ends), writes
/// its metrics, reloads the configurations between batches on SIGHUP, and stops between
/// batches on SIGTERM or SIGINT. `reloads` holds one per configuration, all on the same SIGHUP
/// flag. `alert` gets the first configuration in force, a reloaded one included: settings of
/// the process, not of a slave (sleep_interval, batch_size, alert_command, log_format,
/// metrics_file, metrics_interval), are the first configuration's.
pub fn run(
    mut configs: Vec<Config>,
    reloads: &mut [Reload],
    stop: &AtomicBool,
    alert: &dyn Fn(&Config, &str),
) -> Result<(), Error> {
    let mut failures = 0u32;
    let mut problems = CaptureProblems::default();
    let mut failing = Failing::default();
    let metrics_file =
        |config: &Config| config.metrics_file.clone().map(|path| MetricsFile::new(path, config.metrics_interval));
    let mut metrics = metrics_file(&configs[0]);
    while !stop.load(Ordering::Relaxed) {
        // One SIGHUP rereads every configuration; each is replaced if valid and its slave and
        // outbox stay (a reload cannot change them: the process holds their locks and state).
        if reloads[0].requested().swap(false, Ordering::Relaxed) {
            for (config, reload) in configs.iter_mut().zip(reloads.iter_mut()) {
                if let Some(reloaded) = reload.reread(Config::parse) {
                    *config = reloaded;
                }
            }
            log::configure(configs[0].log_format, &group::names(&configs));
            metrics = metrics_file(&configs[0]);
        }
        let alert_now = |text: &str| alert(&configs[0], text);
        let result = once(&configs, stop, &mut problems, &alert_now);
        write_metrics(&configs, metrics.as_mut(), result.is_ok(), false);
        match result {
            Ok(summary) => {
                failures = 0;
                failing.recovered(&alert_now);
                if summary.transactions == 0 {
                    signals::sleep_unless(configs[0].sleep_interval, &[stop, reloads[0].requested()]);
                }
            }
            Err(e) if e.kind() == Kind::Runtime => {
                failures += 1;
                let pause = Duration::from_secs(1u64 << failures.min(8)).min(Duration::from_secs(300));
                log::retrying(&e.to_string(), failures, pause.as_secs());
                failing.failed(&e, &alert_now);
                // A reload may cure what failed (a wrong host, say), so it ends the pause too.
                signals::sleep_unless(pause, &[stop, reloads[0].requested()]);
            }
            Err(e) => {
                write_metrics(&configs, metrics.as_mut(), false, true);
                return Err(e);
            }
        }
    }
    write_metrics(&configs, metrics.as_mut(), true, true);
    log::info("stopping on signal");
    Ok(())
}

/// The failure `run` is retrying, if any, so that `alert_command` hears of a change of state
/// (failing, failing for another reason, recovered) and not of every retry.
#[derive(Debug, Default)]
pub(crate) struct Failing {
    /// The first line of the failure's message: what it is, without the hint.
    reason: Option<String>,
}

impl Failing {
    pub(crate) fn failed(&mut self, e: &Error, alert: &dyn Fn(&str)) {
        let text = e.to_string();
        let reason = text.lines().next().unwrap_or_default().to_string();
        if self.reason.as_ref() != Some(&reason) {
            alert(&text);
            self.reason = Some(reason);
        }
    }

    pub(crate) fn recovered(&mut self, alert: &dyn Fn(&str)) {
        if let Some(reason) = self.reason.take() {
            let text = format!("recovered: exporting again after failing with: {reason}");
            log::info(&text);
            alert(&text);
        }
    }
}

/// Writes `run`'s metrics, every slave's in the one file, when `metrics_interval` has passed
/// (or at the end, `last`), reading the figures on connections of their own; `up` says whether
/// the last pass succeeded. A failure to write them is logged, never fatal: monitoring must
/// not stop the exporting.
fn write_metrics(configs: &[Config], file: Option<&mut MetricsFile>, up: bool, last: bool) {
    let Some(file) = file.filter(|file| last || file.due()) else {
        return;
    };
    let slaves: Vec<(String, Vec<dbmirror_cli::metrics::Gauge>)> = configs
        .iter()
        .map(|config| {
            let figures =
                Master::connect(&config.master, &config.slave_name).and_then(|mut master| master.status()).ok();
            (config.slave_name.clone(), status::gauges(figures.as_ref(), up))
        })
        .collect();
    if let Err(e) = file.write_several(&slaves) {
        log::warning(&e.to_string());
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use chrono::TimeZone;
    use dbmirror_spool::{ManifestName, PublicKey};

    use super::*;

    fn assigned(number: i64) -> Assigned {
        Assigned {
            xid: 1000 + number,
            number,
            assigned_at: chrono::Utc.with_ymd_and_hms(2026, 12, 1, 1, 2, 3).unwrap(),
            committed_at: chrono::Utc.with_ymd_and_hms(2026, 12, 1, 1, 2, 1).unwrap(),
            changes: 1,
            sequences: Vec::new(),
        }
    }

    fn files<'a>(directory: &'a Path, compress: bool, signing_key: Option<&'a SigningKey>) -> Files<'a> {
        Files::new(directory, compress, signing_key, SyncMethod::Fsync)
    }

    /// Writes a batch through the file destination as `export_batch` does: each transaction's
    /// SQL (here `sql(number)`), then the end of the batch. Returns each file's SQL checksum.
    fn write_batch(
        files: &mut Files<'_>,
        numbers: std::ops::RangeInclusive<i64>,
        sql: impl Fn(i64) -> String,
    ) -> Result<Vec<Checksum>, Error> {
        let mut checksums = Vec::new();
        for number in numbers {
            let assigned = assigned(number);
            let mut out = files.open(&assigned)?;
            out.write_all(sql(number).as_bytes())?;
            checksums.push(files.close(&assigned, out)?);
        }
        files.end()?;
        Ok(checksums)
    }

    fn sql(number: i64) -> String {
        format!("-- file {number}\nINSERT INTO public.item (id) VALUES ({number});\n")
    }

    fn names(directory: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(directory).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        names.sort();
        names
    }

    fn read_manifest(directory: &Path, first: u64, last: u64) -> Manifest {
        let name = ManifestName { first, last };
        Manifest::parse(&name, &std::fs::read(directory.join(name.file_name())).unwrap()).expect("a complete manifest")
    }

    /// The spool format: one file per transaction under its final name, and a manifest that
    /// lists each with the checksum of its stored bytes; no temporary file left behind.
    #[test]
    fn a_batch_becomes_its_files_and_a_manifest_listing_each_checksum() {
        let outbox = tempfile::tempdir().unwrap();
        let checksums = write_batch(&mut files(outbox.path(), false, None), 1..=3, sql).unwrap();
        let manifest = read_manifest(outbox.path(), 1, 3);
        assert_eq!(manifest.signature, None);
        let mut expected: Vec<String> = manifest.entries.iter().map(|e| e.file.file_name()).collect();
        expected.push(manifest.name.file_name());
        expected.sort();
        assert_eq!(names(outbox.path()), expected);
        for (number, (entry, sql_sha256)) in (1..=3).zip(manifest.entries.iter().zip(&checksums)) {
            let stored = std::fs::read(outbox.path().join(entry.file.file_name())).unwrap();
            assert_eq!(stored, sql(number).as_bytes());
            assert_eq!(entry.checksum, Checksum::of(&stored));
            assert_eq!(*sql_sha256, Checksum::of(sql(number).as_bytes()));
            assert_eq!(
                entry.file,
                TransactionFileName {
                    number: number as u64,
                    time: assigned(number).assigned_at,
                    xid: 1000 + number as u64,
                    compressed: false
                }
            );
        }
    }

    /// A compressed file is listed with the checksum of what is stored, so that `sha256sum -c`
    /// checks it as it lies; the next file chains to the checksum of its SQL text.
    #[test]
    fn a_compressed_batch_lists_the_stored_bytes_and_chains_the_sql_text() {
        let outbox = tempfile::tempdir().unwrap();
        let checksums = write_batch(&mut files(outbox.path(), true, None), 1..=1, sql).unwrap();
        let entry = &read_manifest(outbox.path(), 1, 1).entries[0];
        assert!(entry.file.file_name().ends_with(".sql.zst"));
        let stored = std::fs::read(outbox.path().join(entry.file.file_name())).unwrap();
        assert_eq!(entry.checksum, Checksum::of(&stored));
        let mut text = Vec::new();
        dbmirror_spool::open_sql(&outbox.path().join(entry.file.file_name()), &entry.file)
            .unwrap()
            .read_to_end(&mut text)
            .unwrap();
        assert_ne!(stored, text, "stored compressed");
        assert_eq!(text, sql(1).as_bytes());
        assert_eq!(checksums, [Checksum::of(sql(1).as_bytes())]);
    }

    #[test]
    fn with_a_signing_key_the_manifest_is_signed_for_the_applier_to_verify() {
        let outbox = tempfile::tempdir().unwrap();
        let (key, public): (SigningKey, PublicKey) = SigningKey::generate().unwrap();
        write_batch(&mut files(outbox.path(), false, Some(&key)), 1..=2, sql).unwrap();
        let manifest = read_manifest(outbox.path(), 1, 2);
        manifest.verify(&public).expect("the exporter's public key verifies its manifests");
    }

    /// After a crash between writing a batch and recording it, the same numbers are written
    /// again, byte for byte: that is accepted, and leaves one copy of each file.
    #[test]
    fn a_batch_written_again_with_the_same_bytes_after_a_crash_is_accepted() {
        let outbox = tempfile::tempdir().unwrap();
        write_batch(&mut files(outbox.path(), false, None), 1..=2, sql).unwrap();
        let before = names(outbox.path());
        write_batch(&mut files(outbox.path(), false, None), 1..=2, sql).unwrap();
        assert_eq!(names(outbox.path()), before);
    }

    /// Prevents one file number from ever having two contents: a file already in the outbox
    /// under the name is never replaced by a different one, and the exporter stops.
    #[test]
    fn a_file_number_written_again_with_other_bytes_is_refused_and_the_first_file_kept() {
        let outbox = tempfile::tempdir().unwrap();
        write_batch(&mut files(outbox.path(), false, None), 1..=1, sql).unwrap();
        let name = assigned(1);
        let path = outbox.path().join(files(outbox.path(), false, None).name(&name).file_name());
        let error = write_batch(&mut files(outbox.path(), false, None), 1..=1, |_| "-- another file 1\n".into())
            .expect_err("another content under a written number is refused");
        assert_eq!(error.kind(), Kind::BadFile, "{error}");
        assert!(error.to_string().contains("a different file already exists under this name"), "{error}");
        assert!(error.to_string().contains("HINT:  The outbox holds a different file under this number."), "{error}");
        assert_eq!(std::fs::read(path).unwrap(), sql(1).as_bytes(), "the first file stays as it was");
        assert!(names(outbox.path()).iter().all(|n| !n.ends_with(".tmp")), "{:?}", names(outbox.path()));
    }

    /// Prevents a half-written batch from looking complete: until the end of the batch, its
    /// files exist only under temporary names, and there is no manifest.
    #[test]
    fn until_the_batch_ends_its_files_have_only_temporary_names() {
        let outbox = tempfile::tempdir().unwrap();
        let mut files = files(outbox.path(), false, None);
        let assigned = assigned(1);
        let mut out = files.open(&assigned).unwrap();
        out.write_all(sql(1).as_bytes()).unwrap();
        files.close(&assigned, out).unwrap();
        assert!(dbmirror_spool::scan(outbox.path())
            .unwrap()
            .iter()
            .all(|entry| matches!(entry, dbmirror_spool::Entry::Temporary(_))));
        files.end().unwrap();
        assert_eq!(names(outbox.path()).len(), 2, "the file and its manifest");
    }

    /// A write that fails for lack of room names the file and says that nothing was recorded as
    /// sent, so the operator knows that making room and running again is safe.
    #[test]
    fn a_failed_write_names_the_file_and_says_nothing_was_recorded_as_sent() {
        let outbox = Path::new("/outbox");
        let name = files(outbox, false, None).name(&assigned(1));
        let full = Error::from(std::io::Error::from_raw_os_error(28));
        let error = outbox_failure(full, outbox, &name);
        assert_eq!(error.kind(), Kind::Runtime);
        let text = error.to_string();
        assert!(text.starts_with(&format!("could not write \"/outbox/{}\": I/O error: ", name.file_name())), "{text}");
        assert!(text.contains("HINT:  Nothing was recorded as sent."), "{text}");
        // Other failures keep their own words.
        let other = outbox_failure(Error::new(Kind::BadFile, "conflict"), outbox, &name);
        assert_eq!(other.to_string(), "conflict");
    }
}
