//! `once` and `run` for several slaves of one master in one process
//! (`dbmirror-export --config a.toml --config b.toml once`): each transaction is read from the
//! master and rendered once, and written into the outbox of every slave that needs it.
//!
//! Each slave keeps everything of its own exactly as when it is exported alone: its session on
//! the master (with its lock), its batches (what a crash left unwritten, else an assignment),
//! its outbox with its state file, and the record of what it was sent. What is shared is the
//! reading and the rendering. Per batch, the slaves whose batches hold the same transactions,
//! in the same order, and that leave none of their changes out (a slave given a copy of a
//! table by `dbmirror-export snapshot --table` leaves out the changes its copy holds, and all
//! of the table's while it awaits the copy) form a group: one of
//! their sessions streams the changes, and each transaction's body is rendered once into a
//! [`Tee`] over the slaves' files; the header and guard at its start and the sequences and
//! COMMIT at its end, which differ between slaves, are written into each file on its own. Any
//! other slave is exported alone, as [`crate::export::once`] would. Slaves registered and
//! exported together assign the same transactions, so the usual case is one group.
//!
//! A group's files are all written first, then each slave's batch is made durable and
//! published ([`Files`]' end of batch), then each is recorded as written. A crash anywhere
//! leaves each slave with its batch either assigned and unwritten, which the next start writes
//! again byte for byte (a file rendered for a group is the file rendered for its slave alone),
//! or written.
//!
//! Settings of the process, not of a slave (sleep_interval, batch_size, alert_command,
//! log_format, metrics_file, metrics_interval), are taken from the first configuration.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dbmirror_cli::configuration::Reload;
use dbmirror_cli::metrics::MetricsFile;
use dbmirror_cli::{log, signals};
use dbmirror_spool::{Checksum, SqlWriter};

use crate::config::{Config, Output};
use crate::error::{Error, Kind};
use crate::export::{self, CaptureProblems, Destination, Failing, Files, Summary};
use crate::fault;
use crate::master::{Assigned, Master, Read};
use crate::sql::FileWriter;
use crate::status;
use crate::tee::Tee;

/// Checks, before connecting, that `configs` can be served by one process: every slave in file
/// mode, each slave and each outbox named once.
pub fn check(configs: &[Config]) -> Result<(), Error> {
    for (i, config) in configs.iter().enumerate() {
        let Output::Files { directory, .. } = &config.output else {
            return Err(Error::config(format!(
                "slave \"{}\" is configured for direct mode, which one process serves for one slave only",
                config.slave_name
            ))
            .with_hint("Run the direct-mode slave in a dbmirror-export of its own; several configurations must all write files."));
        };
        for earlier in &configs[..i] {
            if earlier.slave_name == config.slave_name {
                return Err(Error::config(format!("slave \"{}\" is configured twice", config.slave_name))
                    .with_hint("Give each slave's configuration once."));
            }
            if let Output::Files { directory: other, .. } = &earlier.output {
                if other == directory {
                    return Err(Error::config(format!(
                        "slaves \"{}\" and \"{}\" have the same transaction_file_directory \"{}\"",
                        earlier.slave_name,
                        config.slave_name,
                        directory.display()
                    ))
                    .with_hint("Each slave needs an outbox of its own."));
                }
            }
        }
    }
    Ok(())
}

/// Each slave's session on the master, checked to reach the first one's master: the same
/// cluster (system identifier) and database.
fn connect_all(configs: &[Config]) -> Result<Vec<Master>, Error> {
    let mut masters: Vec<Master> = Vec::with_capacity(configs.len());
    for config in configs {
        let master = export::start(config)?;
        if let Some(first) = masters.first() {
            let (a, b) = (&first.identity, &master.identity);
            if a.system_identifier != b.system_identifier || a.database != b.database {
                return Err(Error::config(format!(
                    "slave \"{}\" is configured with master database \"{}\" of cluster {}, but slave \"{}\" with database \
                     \"{}\" of cluster {}",
                    configs[0].slave_name,
                    a.database,
                    a.system_identifier,
                    config.slave_name,
                    b.database,
                    b.system_identifier
                ))
                .with_hint("One dbmirror-export serves the slaves of one master database; run one for each master."));
            }
        }
        masters.push(master);
    }
    Ok(masters)
}

/// Exports until nothing is pending for any of the slaves (or `stop` is set between batches).
/// The master's capture problems are the same for every slave: they are reported once.
pub fn once(
    configs: &[Config],
    stop: &AtomicBool,
    problems: &mut CaptureProblems,
    alert: &dyn Fn(&str),
) -> Result<Summary, Error> {
    check(configs)?;
    let mut masters = connect_all(configs)?;
    problems.report(&mut masters[0], alert)?;
    let batch_size = configs[0].batch_size;
    let mut summary = Summary::default();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        // The slaves' batches are taken one right after the other, so that transactions
        // committing meanwhile seldom make them differ.
        let mut batches = Vec::with_capacity(masters.len());
        for master in &mut masters {
            batches.push(export::next_batch(master, batch_size)?);
        }
        if batches.iter().all(Vec::is_empty) {
            break;
        }
        for group in groups(&mut masters, &batches)? {
            let [alone] = group[..] else {
                write_group(&mut masters, configs, &batches, &group, started, &mut summary)?;
                continue;
            };
            let (master, config, batch) = (&mut masters[alone], &configs[alone], &batches[alone]);
            let Output::Files { directory, compress, signing_key } = &config.output else {
                unreachable!("check() admits file mode only");
            };
            let previous = master.slave_row()?.last_sha256;
            let mut files = Files::new(directory, *compress, signing_key.as_deref(), config.sync_method);
            let written = export::export_batch(master, config, &mut files, batch, previous)?;
            export::record(master, config, batch, &written, started, &mut summary)?;
        }
    }
    Ok(summary)
}

/// The slaves with a batch, in groups (positions in `batches`) that share their transactions:
/// the same xids in the same order, and none of their changes left out by a table filter. A
/// slave that shares with none is a group of one.
fn groups(masters: &mut [Master], batches: &[Vec<Assigned>]) -> Result<Vec<Vec<usize>>, Error> {
    let same = |a: &[Assigned], b: &[Assigned]| a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.xid == b.xid);
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut alone: Vec<Vec<usize>> = Vec::new();
    for (i, batch) in batches.iter().enumerate().filter(|(_, batch)| !batch.is_empty()) {
        // A slave that takes a table from a copy of its own leaves the changes that the copy
        // holds out of its files (or all of the table's, while it awaits the copy): while it
        // may leave out any of this batch, it is exported alone.
        let xids: Vec<i64> = batch.iter().map(|a| a.xid).collect();
        if !masters[i].table_filter()?.keeps_all(&xids) {
            alone.push(vec![i]);
            continue;
        }
        match groups.iter_mut().find(|group| same(&batches[group[0]], batch)) {
            Some(group) => group.push(i),
            None => groups.push(vec![i]),
        }
    }
    groups.append(&mut alone);
    Ok(groups)
}

/// One slave of a group, while its files are written.
struct Member<'a> {
    config: &'a Config,
    batch: &'a [Assigned],
    files: Files<'a>,
    /// Checksum of the SQL of the slave's last file, for the guard of its next one.
    previous: Option<Checksum>,
    written: Vec<(i64, Checksum)>,
}

/// The transaction being written for every slave of a group.
struct Open {
    position: usize,
    body: FileWriter<Tee<fault::Budget<SqlWriter>>>,
    changes: i64,
}

/// Writes the batches of a group (slaves whose batches hold the same transactions): streams
/// the changes once on the first slave's session and renders each once, then makes each
/// slave's files durable, then records each slave's batch as written.
fn write_group(
    masters: &mut [Master],
    configs: &[Config],
    batches: &[Vec<Assigned>],
    group: &[usize],
    started: Instant,
    summary: &mut Summary,
) -> Result<(), Error> {
    let mut members = Vec::with_capacity(group.len());
    for &i in group {
        let Output::Files { directory, compress, signing_key } = &configs[i].output else {
            unreachable!("check() admits file mode only");
        };
        members.push(Member {
            config: &configs[i],
            batch: &batches[i],
            files: Files::new(directory, *compress, signing_key.as_deref(), configs[i].sync_method),
            previous: masters[i].slave_row()?.last_sha256,
            written: Vec::with_capacity(batches[i].len()),
        });
    }
    let (first, last) = (batches[group[0]][0].xid, batches[group[0]].len());
    log::info(&format!(
        "rendering {last} transactions once for slaves {} (from xid {first})",
        group.iter().map(|&i| format!("\"{}\"", configs[i].slave_name)).collect::<Vec<_>>().join(", ")
    ));
    let streamer = &mut masters[group[0]];
    let identity = streamer.identity.clone();
    let batch = &batches[group[0]];
    let mut open: Option<Open> = None;
    let mut done = 0;
    // Read physically first, sorted from a transaction out of place (as export_batch does).
    let mut read = streamer.next_read();
    let mut start = 0;
    loop {
        let stopped = streamer.stream_batch(&batch[start..], read, |position, change| {
            let position = start + position;
            if open.as_ref().is_none_or(|o| o.position != position) {
                if let Some(finished) = open.take() {
                    close(finished, &mut members)?;
                    done += 1;
                }
                if position != done {
                    return Err(export::missing(&batch[done]));
                }
                let mut outputs = Vec::with_capacity(members.len());
                for member in &mut members {
                    let assigned = &member.batch[position];
                    let header = export::header(&identity, member.config, assigned, member.previous);
                    let mut out = member.files.open(assigned)?;
                    FileWriter::head(&mut out, &header).map_err(|e| member.files.write_error(assigned, e.into()))?;
                    outputs.push(out);
                }
                open = Some(Open { position, body: FileWriter::body(Tee::new(outputs)), changes: 0 });
            }
            let current = open.as_mut().expect("a transaction is open");
            current.changes += 1;
            current.body.change(change).map_err(|e| failure(&members, &current.body, current.position, e))
        })?;
        let Some(broken) = stopped else { break };
        let broken = start + broken;
        if broken < done {
            return Err(export::one_too_many(&batch[broken]));
        }
        // The transaction out of place is dropped unwritten (its files removed); one before it
        // is whole.
        if let Some(finished) = open.take().filter(|o| o.position != broken) {
            close(finished, &mut members)?;
            done += 1;
        }
        log::info(&format!(
            "changes of transaction {} lie out of change order on disk: reading it and the rest of its batch sorted",
            batch[broken].xid
        ));
        streamer.out_of_order();
        (start, read) = (broken, Read::Sorted);
    }
    if let Some(finished) = open.take() {
        close(finished, &mut members)?;
        done += 1;
    }
    if let Some(assigned) = batch.get(done) {
        return Err(export::missing(assigned));
    }
    // Each slave's batch is made durable and published on a thread of its own: the waits for
    // fsyncs of the slaves' directories and manifests overlap instead of adding up. Nothing is
    // recorded as written until every one has ended.
    std::thread::scope(|scope| {
        let ends: Vec<_> = members.iter_mut().map(|member| scope.spawn(move || member.files.end())).collect();
        ends.into_iter().try_for_each(|end| end.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
    })?;
    for (member, &i) in members.iter().zip(group) {
        export::record(&mut masters[i], member.config, member.batch, &member.written, started, summary)?;
    }
    Ok(())
}

/// Ends a transaction in every slave's file: the rest of the body, once, then each slave's
/// sequences and COMMIT.
fn close(mut open: Open, members: &mut [Member<'_>]) -> Result<(), Error> {
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
        FileWriter::tail(&mut out, &assigned.sequences).map_err(|e| member.files.write_error(assigned, e.into()))?;
        let sha = member.files.close(assigned, out)?;
        member.written.push((assigned.xid, sha));
        member.previous = Some(sha);
    }
    Ok(())
}

/// A failure to write a group's body, naming the file of the slave whose write failed.
fn failure(
    members: &[Member<'_>],
    body: &FileWriter<Tee<fault::Budget<SqlWriter>>>,
    position: usize,
    e: std::io::Error,
) -> Error {
    let member = &members[body.get_ref().failed().unwrap_or(0)];
    member.files.write_error(&member.batch[position], e.into())
}

/// `run` for several slaves: [`export::run`]'s loop (sleep when idle, retry what retrying may
/// cure, metrics, reload on SIGHUP, stop on SIGTERM), around [`once`] for all of them.
/// `reloads` holds one per configuration, all on the same SIGHUP flag.
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
            log::configure(configs[0].log_format, &names(&configs));
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

/// The slaves' names, for log lines: `a, b, c`.
pub fn names(configs: &[Config]) -> String {
    configs.iter().map(|c| c.slave_name.as_str()).collect::<Vec<_>>().join(", ")
}

/// Writes the metrics of every slave into the one metrics file, as [`export::run`] does for one.
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
