//! `once` and `watch`: apply every file that is next in order, verified, exactly once.
//!
//! The slave's own `dbmirror.slave_state` says which number comes next; the spool is scanned,
//! and files are applied one after the other, each in one slave transaction (the guard inside
//! the file makes that exactly-once even against a concurrent `psql -f`), then moved to the
//! archive. The applier stops at the first file that must not be applied, after moving it to
//! quarantine with the reason beside it; files that are only incomplete or missing are waited for.

use std::collections::BTreeMap;
use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dbmirror_cli::configuration::Reload;
use dbmirror_cli::error::{Error, Kind};
use dbmirror_cli::metrics::MetricsFile;
use dbmirror_cli::{log, signals};
use dbmirror_replay::grammar::DdlPolicy;
use dbmirror_replay::replay::{replay, ReplayError};
use dbmirror_replay::slave;
use dbmirror_replay::slave::AppliedFile;
use dbmirror_spool::open_sql;
use dbmirror_sql::{ALREADY_APPLIED, DIVERGED, OUT_OF_ORDER, SCHEMA_DIFFERS};
use postgres::Client;

use crate::config::Config;
use crate::inbox::{quarantine, Inbox, Next, Refusal, SetAside, Verified};
use crate::retention;
use crate::status;

/// Name of the lock file in the spool that keeps a second applier away (dot-files are not part
/// of the spool).
pub const LOCK_FILE: &str = ".dbmirror-apply.lock";

/// What one pass did.
#[derive(Debug, Default)]
pub struct Summary {
    pub applied: u64,
    pub last: u64,
    /// Why the pass stopped without reaching the end, if it waits for something.
    pub waiting: Option<String>,
}

/// Holds the spool's lock for as long as it lives.
pub struct Lock(#[allow(dead_code)] File);

/// Takes the spool's lock, or fails with [`Kind::Busy`].
pub fn lock(config: &Config) -> Result<Lock, Error> {
    let path = config.spool.join(LOCK_FILE);
    let file =
        File::options().create(true).truncate(false).write(true).open(&path).map_err(|e| {
            Error::caused_by(Kind::Runtime, &format!("could not open lock file \"{}\"", path.display()), e)
        })?;
    match file.try_lock() {
        Ok(()) => Ok(Lock(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::new(
            Kind::Busy,
            format!("another dbmirror-apply is running on spool \"{}\"", config.spool.display()),
        )
        .with_hint("Only one applier may run per spool; stop the other one or wait for it.")),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(Error::caused_by(Kind::Runtime, &format!("could not lock \"{}\"", path.display()), e))
        }
    }
}

/// Connects to the slave and checks that it is prepared.
pub fn connect(config: &Config) -> Result<Client, Error> {
    slave::connect(&config.slave, "dbmirror-apply")
}

/// `init`: prepares the slave, with the same SQL as `sql/slave_setup.sql`.
pub fn init(config: &Config) -> Result<(), Error> {
    let mut client = slave::connect_unchecked(&config.slave, "dbmirror-apply")?;
    client.batch_execute(slave::SLAVE_SETUP_SQL)?;
    // The script leaves out what only a superuser may create, and says so in a NOTICE that a
    // batch does not show.
    if config.ddl == DdlPolicy::Mirrored && !slave::checks_ddl(&mut client)? {
        log::warning(&format!(
            "the slave lacks the event triggers {} (only a superuser can create them): under ddl = \"mirrored\", \
             files that carry DDL will be refused; run init as a superuser, or set ddl to \"refuse\" or \"any\"",
            dbmirror_sql::DDL_EVENT_TRIGGERS.join(" and ")
        ));
    }
    Ok(())
}

/// `once`: one pass over the spool.
pub fn once(config: &Config, stop: &AtomicBool) -> Result<Summary, Error> {
    let _lock = lock(config)?;
    let mut client = connect(config)?;
    pass(config, &mut client, stop)
}

/// Applies every file that is next in order, until one is missing or bad, or `stop` is set.
pub fn pass(config: &Config, client: &mut Client, stop: &AtomicBool) -> Result<Summary, Error> {
    let mut last = slave::last_applied(client, &config.slave_name)?.map_or(0, |n| n as u64);
    let mut inbox = Inbox::scan(config, false)?;
    let again = inbox.applied_numbers(last);
    let applied =
        if again.is_empty() { BTreeMap::new() } else { slave::applied_files(client, &config.slave_name, &again)? };
    came_again(inbox.set_aside_applied(last, &applied)?)?;
    let mut summary = Summary { last, ..Summary::default() };
    let mut progress = Progress::new(last);
    // A snapshot that has arrived starts the stream again: what the slave has not applied
    // before it is superseded, and is set aside once the snapshot's first file is applied.
    if let Some(start) = inbox.stream_start_after(last) {
        if start > last + 1 {
            log::info(&format!(
                "file {start} starts a new stream (a snapshot): files {} to {} are not applied",
                last + 1,
                start - 1
            ));
        }
        last = start - 1;
    }
    while !stop.load(Ordering::Relaxed) {
        let number = last + 1;
        match inbox.next(number)? {
            Next::Ready(file) => {
                apply_file(config, client, &file)?;
                last = number;
                summary.applied += 1;
                summary.last = last;
                progress.applied(last, file.header.changes);
                inbox.archive_applied(&file)?;
                // Other copies of this number, under other names, are compared with it.
                let applied = BTreeMap::from([(
                    number,
                    AppliedFile {
                        xid: file.header.xid as i64,
                        exported_at: Some(file.header.exported_at),
                        sha256: Some(file.sql_sha256.to_string()),
                    },
                )]);
                came_again(inbox.set_aside_applied(last, &applied)?)?;
            }
            Next::Waiting(reason) => {
                summary.waiting = reason;
                break;
            }
            Next::Quarantined { path, refusal } => {
                progress.report();
                return Err(stopped_at(number, &path, &refusal));
            }
        }
    }
    progress.report();
    if summary.applied > 0 {
        retention::prune(&config.archive, config.retention, summary.last)?;
    }
    if let Some(first) = inbox.refused().first() {
        return Err(Error::new(Kind::BadFile, first.clone()).with_hint(
            "The files it lists wait for a good manifest: put one into the spool (from the exporter's outbox), then run the applier again.",
        ));
    }
    Ok(summary)
}

/// Stops at files numbered like applied ones that were not those files.
fn came_again(set_aside: Vec<SetAside>) -> Result<(), Error> {
    let Some(first) = set_aside.first() else {
        return Ok(());
    };
    let more = match set_aside.len() {
        1 => String::new(),
        n => format!(" (and {} more files numbered like applied ones; see their .reason files)", n - 1),
    };
    Err(Error::new(
        Kind::BadFile,
        format!(
            "file {} came again and \"{}\" was moved to quarantine: {}{more}",
            first.number,
            first.path.display(),
            first.refusal.reason
        ),
    )
    .with_hint(first.refusal.hint.clone()))
}

/// Progress lines: at most one every few seconds, so a large backlog shows it moves without a
/// line per file.
struct Progress {
    first: u64,
    last: u64,
    changes: u64,
    since: Instant,
}

impl Progress {
    const EVERY: Duration = Duration::from_secs(5);

    fn new(last: u64) -> Self {
        Self { first: last + 1, last, changes: 0, since: Instant::now() }
    }

    fn applied(&mut self, number: u64, changes: u64) {
        self.last = number;
        self.changes += changes;
        if self.since.elapsed() >= Self::EVERY {
            self.report();
        }
    }

    fn report(&mut self) {
        if self.last >= self.first {
            let count = self.last - self.first + 1;
            let seconds = self.since.elapsed().as_secs_f64();
            log::info(&format!(
                "applied files {}-{} ({count} files, {} changes, {:.0} files/s)",
                self.first,
                self.last,
                self.changes,
                count as f64 / seconds.max(1e-6)
            ));
        }
        *self = Self::new(self.last);
    }
}

fn stopped_at(number: u64, path: &std::path::Path, refusal: &Refusal) -> Error {
    Error::new(
        Kind::BadFile,
        format!("stopped at file {number}: \"{}\" was moved to quarantine: {}", path.display(), refusal.reason),
    )
    .with_hint(refusal.hint.clone())
}

fn apply_file(config: &Config, client: &mut Client, file: &Verified) -> Result<(), Error> {
    let number = file.header.number;
    let record = slave::record_checksum_sql(&config.slave_name, &file.sql_sha256);
    let open = || open_sql(&file.path, &file.name).map_err(|e| std::io::Error::other(e.to_string()));
    let error = match replay(client, open, Some(&record), config.ddl) {
        Ok(_) => return Ok(()),
        Err(error) => error,
    };
    let code = error.code().unwrap_or("");
    if error.is_transient() {
        return Err(Error::runtime(format!("file {number} could not be applied, and will be tried again: {error}")));
    }
    if matches!(error, ReplayError::Open(_)) {
        return Err(Error::runtime(format!("file {number} could not be applied: {error}")));
    }
    if [ALREADY_APPLIED, OUT_OF_ORDER, DIVERGED].contains(&code) {
        // Someone applied files by hand meanwhile; the next pass starts from the new state, and
        // compares this file with the one applied under its number.
        return Err(Error::runtime(format!("the slave's state changed while applying file {number}: {error}")));
    }
    let refusal = match &error {
        // Before the other failures: DDL refused by the grammar is a refused statement too.
        _ if error.is_ddl_refused() => Refusal::ddl_refused(
            format!("it carries DDL that this slave does not run: {error}"),
            config.ddl,
            &config.quarantine,
            &config.spool,
        ),
        ReplayError::Statement { .. } | ReplayError::Batch { .. } if code == SCHEMA_DIFFERS => Refusal::schema_differs(
            format!("it failed on the slave and was rolled back: {error}"),
            &config.quarantine,
            &config.spool,
        ),
        ReplayError::Statement { .. } | ReplayError::Batch { .. } => Refusal::failed_on_slave(
            format!("it failed on the slave and was rolled back: {error}"),
            &config.quarantine,
            &config.spool,
        ),
        _ => Refusal::foreign(format!("it could not be read as SQL: {error}")),
    };
    quarantine(config, &file.path, &refusal.reason, &refusal.hint)?;
    Err(stopped_at(number, &file.path, &refusal))
}

/// `watch`: applies files as they arrive, until SIGTERM or SIGINT. File-system events from
/// `notify` start a pass at once; a rescan every `poll_interval` catches what events miss (USB
/// mounts, network file systems). A lost slave connection is retried with a growing pause. On
/// SIGHUP the configuration is read again with `parse` between passes (see [`Reload`]).
pub fn watch(
    mut config: Config,
    reload: &mut Reload,
    parse: &dyn Fn(&str) -> Result<Config, Error>,
    stop: &AtomicBool,
) -> Result<(), Error> {
    let _lock = lock(&config)?;
    let (events, arrived) = mpsc::channel();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.as_ref().map_or(true, is_news) {
            let _ = events.send(());
        }
    })
    .and_then(|mut watcher| {
        notify::Watcher::watch(&mut watcher, &config.spool, notify::RecursiveMode::NonRecursive).map(|()| watcher)
    });
    let _watcher = match watcher {
        Ok(watcher) => Some(watcher),
        Err(e) => {
            log::warning(&format!(
                "cannot watch \"{}\" for events ({e}); rescanning every {:?}",
                config.spool.display(),
                config.poll_interval
            ));
            None
        }
    };
    let mut client: Option<Client> = None;
    let mut failures = 0u32;
    let mut said: Option<String> = None;
    let mut metrics = Metrics::new(&config);
    log::info(&format!("watching \"{}\" for slave \"{}\"", config.spool.display(), config.slave_name));
    while !stop.load(Ordering::Relaxed) {
        if let Some(reloaded) = reload.take(parse) {
            config = reloaded;
            log::configure(config.log_format, &config.slave_name);
            // The slave's connection string or ddl setting may have changed: connect anew.
            client = None;
            said = None;
            metrics = Metrics::new(&config);
        }
        let result = match client.as_mut().filter(|c| !c.is_closed()) {
            Some(client) => pass(&config, client, stop),
            None => connect(&config).and_then(|mut c| {
                let result = pass(&config, &mut c, stop);
                client = Some(c);
                result
            }),
        };
        metrics.after_pass(&config, client.as_mut(), result.is_ok(), false);
        match result {
            Ok(summary) => {
                failures = 0;
                if summary.waiting != said {
                    if let Some(reason) = &summary.waiting {
                        log::info(reason);
                    }
                    said = summary.waiting;
                }
                wait(&arrived, config.poll_interval, &[stop, reload.requested()]);
            }
            Err(e) if e.kind() == Kind::Runtime => {
                failures += 1;
                client = None;
                let pause = Duration::from_secs(1u64 << failures.min(6));
                log::retrying(&e.to_string(), failures, pause.as_secs());
                // The pause is what the log says: news in the spool cannot cure what failed,
                // so only a stop signal ends it, or a reload, which may.
                signals::sleep_unless(pause, &[stop, reload.requested()]);
                while arrived.try_recv().is_ok() {}
            }
            Err(e) => {
                metrics.after_pass(&config, client.as_mut(), false, true);
                return Err(e);
            }
        }
    }
    metrics.after_pass(&config, client.as_mut(), true, true);
    log::info("stopping on signal");
    Ok(())
}

/// `watch`'s metrics file (`metrics_file`), written when a pass ends and `metrics_interval` has
/// passed since the last write, and when `watch` ends. A failure to write it is logged, never
/// fatal: monitoring must not stop the applying.
struct Metrics(Option<MetricsFile>);

impl Metrics {
    fn new(config: &Config) -> Self {
        Self(config.metrics_file.clone().map(|path| MetricsFile::new(path, config.metrics_interval)))
    }

    /// `up` says whether the pass succeeded; `last` forces the write at the end.
    fn after_pass(&mut self, config: &Config, client: Option<&mut Client>, up: bool, last: bool) {
        let Some(file) = self.0.as_mut().filter(|file| last || file.due()) else {
            return;
        };
        let gauges = match client.filter(|c| !c.is_closed()).map(|c| status::gather(config, c)) {
            Some(Ok(status)) => status.gauges(up),
            Some(Err(_)) | None => status::gauges_when_down(config),
        };
        if let Err(e) = file.write(&config.slave_name, &gauges) {
            log::warning(&e.to_string());
        }
    }
}

/// Whether a file-system event in the spool may mean something new to apply: a file created,
/// written, or renamed into it. Files opened and read (as every pass does) and files leaving
/// (as the applier's own moves do) are not news.
fn is_news(event: &notify::Event) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind, RenameMode};
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Remove(_) => false,
        EventKind::Modify(ModifyKind::Name(RenameMode::From)) => false,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Any | EventKind::Other => true,
    }
}

/// Waits up to `pause` for news in the spool, waking early when one of `flags` (a stop, a
/// reload) is set.
fn wait(arrived: &mpsc::Receiver<()>, pause: Duration, flags: &[&AtomicBool]) {
    let until = Instant::now() + pause;
    while !flags.iter().any(|flag| flag.load(Ordering::Relaxed)) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        if arrived.recv_timeout(left.min(Duration::from_millis(100))).is_ok() {
            // Let a burst of events (a copy in progress) settle into one pass.
            std::thread::sleep(Duration::from_millis(50));
            while arrived.try_recv().is_ok() {}
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use notify::event::{
        AccessKind, AccessMode, CreateKind, DataChange, EventKind, ModifyKind, RemoveKind, RenameMode,
    };

    use super::*;

    fn config(spool: &std::path::Path) -> Config {
        Config::parse(&format!(
            "slave_name = \"backup_system\"\nslave = \"host=/nonexistent dbname=slave\"\nspool = \"{}\"\n",
            spool.display()
        ))
        .expect("the test configuration is valid")
    }

    /// Prevents two appliers on one spool from applying and moving the same files.
    #[test]
    fn a_second_applier_on_the_same_spool_is_refused_as_busy_until_the_first_ends() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let first = lock(&config).expect("the first applier takes the lock");
        let error = lock(&config).err().expect("a second applier must not take it too");
        assert_eq!(error.kind(), Kind::Busy);
        assert!(error.to_string().contains("another dbmirror-apply is running on spool"), "{error}");
        assert!(error.to_string().contains("HINT:  Only one applier may run per spool"), "{error}");
        drop(first);
        lock(&config).expect("the lock is free once the first applier ends");
        assert!(dir.path().join(LOCK_FILE).is_file());
        assert!(dbmirror_spool::scan(dir.path()).unwrap().is_empty(), "the lock file is not part of the spool");
    }

    fn event(kind: EventKind) -> notify::Event {
        notify::Event::new(kind).add_path(PathBuf::from("/spool/00000000000000000001_20261201T010203Z_7.sql"))
    }

    /// Prevents `watch` from waking itself up forever: its own reads and moves out of the spool
    /// are not news.
    #[test]
    fn reading_the_spool_or_moving_files_out_of_it_is_no_news() {
        for kind in [
            EventKind::Access(AccessKind::Open(AccessMode::Read)),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Remove(RemoveKind::File),
            EventKind::Modify(ModifyKind::Name(RenameMode::From)),
        ] {
            assert!(!is_news(&event(kind)), "{kind:?} is not news");
        }
    }

    /// Prevents `watch` from missing a file that arrives: written, created or renamed into the
    /// spool, it starts a pass at once.
    #[test]
    fn a_file_written_created_or_renamed_into_the_spool_is_news() {
        for kind in [
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
            EventKind::Any,
            EventKind::Other,
        ] {
            assert!(is_news(&event(kind)), "{kind:?} is news");
        }
    }

    fn set_aside(number: u64, reason: &str) -> SetAside {
        SetAside {
            number,
            path: PathBuf::from(format!("/spool/quarantine/{number}.sql")),
            refusal: Refusal::diverged(reason.into()),
        }
    }

    #[test]
    fn nothing_set_aside_lets_the_pass_go_on() {
        came_again(Vec::new()).expect("no file came again");
    }

    /// Prevents a file numbered like an applied one from being set aside silently: the pass
    /// stops, names the first such file, and counts the others.
    #[test]
    fn files_that_came_again_stop_the_pass_naming_the_first_and_counting_the_others() {
        let error = came_again(vec![set_aside(3, "it is not the file 3 that was applied")]).unwrap_err();
        assert_eq!(error.kind(), Kind::BadFile);
        assert_eq!(
            error.to_string(),
            format!(
                "file 3 came again and \"/spool/quarantine/3.sql\" was moved to quarantine: it is not the file 3 that was applied\nHINT:  {}",
                slave::DIVERGED_HINT
            )
        );
        let error = came_again(vec![set_aside(3, "a"), set_aside(4, "b"), set_aside(5, "c")]).unwrap_err();
        assert!(
            error.to_string().contains(": a (and 2 more files numbered like applied ones; see their .reason files)"),
            "{error}"
        );
    }

    #[test]
    fn stopping_at_a_file_names_it_and_keeps_the_refusal_hint() {
        let refusal = Refusal::damaged(7, "checksum mismatch".into());
        let error = stopped_at(7, std::path::Path::new("/spool/7.sql"), &refusal);
        assert_eq!(error.kind(), Kind::BadFile);
        assert_eq!(
            error.to_string(),
            format!(
                "stopped at file 7: \"/spool/7.sql\" was moved to quarantine: checksum mismatch\nHINT:  {}",
                refusal.hint
            )
        );
    }
}
