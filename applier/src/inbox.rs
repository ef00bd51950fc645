//! The inbound spool as the applier sees it: which file comes next, whether it has fully
//! arrived and is intact, and moving files to the archive or to quarantine.
//!
//! A file is a candidate only when a complete manifest covers it and the file's checksum
//! matches the manifest. A file whose checksum does not match is taken for a copy in progress
//! while it was modified less than `settle_seconds` ago, and for damage after that. Nothing is
//! ever deleted: applied files go to the archive, bad ones to quarantine with a `.reason` file
//! beside them.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use chrono::SecondsFormat;
use dbmirror_cli::error::{Error, Kind};
use dbmirror_cli::log;
use dbmirror_replay::grammar::DdlPolicy;
use dbmirror_replay::slave::{self, AppliedFile};
use dbmirror_spool::{
    open_sql, sha256_of, Checksum, Entry, HashingReader, Header, Manifest, ManifestEntry, TransactionFileName,
    REASON_SUFFIX,
};

use crate::config::Config;

/// Largest manifest read; a manifest for 1,000 files is about 130 kB.
const MAX_MANIFEST_BYTES: u64 = 64 << 20;

/// A file ready to apply: complete, intact, and with a well-formed header.
#[derive(Debug)]
pub struct Verified {
    pub path: PathBuf,
    pub name: TransactionFileName,
    pub header: Header,
    /// sha256 of the file's SQL text (what the next file's `previous-sha256` names).
    pub sql_sha256: Checksum,
}

/// Why a file must not be applied, and what an operator can do about it.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// What is wrong with the file, in a few words.
    pub reason: String,
    /// What to do, in sentences.
    pub hint: String,
}

impl Refusal {
    /// The file was damaged on its way: a good copy of it cures that.
    pub fn damaged(number: u64, reason: String) -> Self {
        Self {
            reason,
            hint: format!(
                "Put a good copy of file {number} (and its manifest, if that was the problem) into the spool, then run the applier again."
            ),
        }
    }

    /// A copy of an applied file, damaged on its way or changed since.
    pub fn damaged_copy(number: u64, reason: String) -> Self {
        Self {
            reason,
            hint: format!(
                "File {number} was applied already, so this copy is not needed; but something damaged or changed it: \
                 compare it with the exporter's outbox, and check the transfer."
            ),
        }
    }

    /// The file belongs to another slave's or another master's spool.
    pub fn misplaced(number: u64, reason: String) -> Self {
        Self {
            reason,
            hint: format!(
                "The file belongs to another spool: check where it was copied from, and put this slave's own file {number} into the spool."
            ),
        }
    }

    /// The file matches its manifest, but is not a transaction file this applier reads.
    pub fn unreadable(reason: String) -> Self {
        Self {
            reason,
            hint: "The file matches its manifest, yet this applier cannot read it as a transaction file: compare it \
                   with the exporter's outbox, and check that exporter and applier are of the same version."
                .into(),
        }
    }

    /// The file's SQL is not what the exporter writes.
    pub fn foreign(reason: String) -> Self {
        Self {
            reason,
            hint: "The file holds SQL that dbmirror-export never writes: compare it with the exporter's outbox, and treat it as an attack or a corrupted export.".into(),
        }
    }

    /// The file is intact, but its SQL failed on the slave.
    pub fn failed_on_slave(reason: String, quarantine: &Path, spool: &Path) -> Self {
        Self {
            reason,
            hint: format!(
                "The file is intact (its checksum matches its manifest): the slave differs from the master, or lacks a table or \
                 column the file uses. Repair the slave (dbmirror-export verify compares it with the master), then move it from \
                 quarantine back into the spool (from \"{}\" to \"{}\").",
                quarantine.display(),
                spool.display()
            ),
        }
    }

    /// The file is intact, but the slave's table differs from the master's (`check_table`): not
    /// the file's fault, the slave's schema must be repaired.
    pub fn schema_differs(reason: String, quarantine: &Path, spool: &Path) -> Self {
        Self {
            reason,
            hint: format!(
                "The file is intact (its checksum matches its manifest): a schema change reached the master or the slave \
                 only (DDL outside the stream, or the slave altered by hand), and the message names what differs. Bring \
                 the slave's table to the master's shape, then move the file from quarantine back into the spool (from \
                 \"{}\" to \"{}\").",
                quarantine.display(),
                spool.display()
            ),
        }
    }

    /// The file is intact, but carries DDL that the slave, under its `ddl` setting `policy`,
    /// does not run.
    pub fn ddl_refused(reason: String, policy: DdlPolicy, quarantine: &Path, spool: &Path) -> Self {
        let (why, change) = match policy {
            DdlPolicy::Refuse => ("", "ddl = \"mirrored\" (DDL on the tables the file names) or ddl = \"any\""),
            DdlPolicy::Mirrored | DdlPolicy::Any => (
                ": it reaches beyond the tables the file names, or the slave lacks the event triggers that check it \
                 (the message says which; dbmirror-apply init run as a superuser creates them)",
                "ddl = \"any\"",
            ),
        };
        Self {
            reason,
            hint: format!(
                "The file is intact (its checksum matches its manifest) and carries a schema change of the master, which \
                 this slave's ddl setting (\"{policy}\") does not let run{why}. If the slave should take it, set {change} \
                 in the applier's configuration, then move the file from quarantine back into the spool (from \"{}\" to \
                 \"{}\").",
                quarantine.display(),
                spool.display()
            ),
        }
    }

    /// A file numbered like one already applied, but not the same export of it.
    pub fn diverged(reason: String) -> Self {
        Self { reason, hint: slave::DIVERGED_HINT.into() }
    }
}

/// What the spool offers as file number `n`.
#[derive(Debug)]
pub enum Next {
    Ready(Box<Verified>),
    /// Not (yet) there; the reason says what is awaited, `None` when nothing later is in the spool.
    Waiting(Option<String>),
    /// The file must not be applied; it is in quarantine now.
    Quarantined {
        path: PathBuf,
        refusal: Refusal,
    },
}

/// A file numbered like an applied one that was moved to quarantine.
#[derive(Debug)]
pub struct SetAside {
    pub number: u64,
    pub path: PathBuf,
    pub refusal: Refusal,
}

/// What one scan of the spool found.
pub struct Inbox<'a> {
    config: &'a Config,
    /// Manifest entries by file number, with the manifest that lists them.
    covered: BTreeMap<u64, (ManifestEntry, PathBuf)>,
    /// Transaction files by number (more than one if names disagree).
    files: BTreeMap<u64, Vec<(TransactionFileName, PathBuf)>>,
    manifests: Vec<(dbmirror_spool::ManifestName, PathBuf)>,
    /// Manifests still arriving, and other things worth saying while waiting.
    notes: Vec<String>,
    /// Numbers covered by manifests that disagree with each other.
    disputed: BTreeMap<u64, String>,
    /// Only look (for `status`): move nothing.
    inspect: bool,
    /// Manifests this scan moved to quarantine, with the reason.
    refused: Vec<String>,
}

impl<'a> Inbox<'a> {
    /// Reads the spool directory and its manifests. Manifests that are damaged (and no longer
    /// arriving) go to quarantine, unless `inspect` is set: then nothing is moved.
    pub fn scan(config: &'a Config, inspect: bool) -> Result<Self, Error> {
        let mut inbox = Inbox {
            inspect,
            refused: Vec::new(),
            config,
            covered: BTreeMap::new(),
            files: BTreeMap::new(),
            manifests: Vec::new(),
            notes: Vec::new(),
            disputed: BTreeMap::new(),
        };
        for entry in dbmirror_spool::scan(&config.spool)? {
            match entry {
                Entry::Transaction { name, path } => inbox.files.entry(name.number).or_default().push((name, path)),
                Entry::Manifest { name, path } => inbox.read_manifest(name, path)?,
                Entry::Temporary(path) => {
                    inbox.notes.push(format!("ignoring temporary file \"{}\"", path.display()));
                }
                Entry::Unrecognized { path, error } => {
                    inbox.notes.push(format!("ignoring \"{}\": {error}", path.display()));
                }
            }
        }
        Ok(inbox)
    }

    fn read_manifest(&mut self, name: dbmirror_spool::ManifestName, path: PathBuf) -> Result<(), Error> {
        let mut text = Vec::new();
        fs::File::open(&path).and_then(|f| f.take(MAX_MANIFEST_BYTES + 1).read_to_end(&mut text)).map_err(|e| {
            Error::caused_by(Kind::Runtime, &format!("could not read manifest \"{}\"", path.display()), e)
        })?;
        let manifest = if text.len() as u64 > MAX_MANIFEST_BYTES {
            Err(format!("manifest is larger than {MAX_MANIFEST_BYTES} bytes"))
        } else {
            Manifest::parse(&name, &text).map_err(|e| e.to_string())
        };
        // A complete manifest that fails its signature is refused at once; an incomplete one
        // may still be arriving.
        let (manifest, complete) = match manifest {
            Ok(manifest) => match self.config.public_key.as_ref().map(|key| manifest.verify(key)) {
                Some(Err(e)) => (Err(e.to_string()), true),
                _ => (Ok(manifest), true),
            },
            Err(reason) => (Err(reason), false),
        };
        match manifest {
            Ok(manifest) => {
                for entry in manifest.entries {
                    let number = entry.file.number;
                    match self.covered.get(&number) {
                        Some((other, other_path)) if *other != entry => {
                            self.disputed.insert(
                                number,
                                format!(
                                    "manifests \"{}\" and \"{}\" disagree about file {number}",
                                    other_path.display(),
                                    path.display()
                                ),
                            );
                        }
                        Some(_) => {}
                        None => {
                            self.covered.insert(number, (entry, path.clone()));
                        }
                    }
                }
                self.manifests.push((name, path));
            }
            Err(reason) if self.inspect => {
                self.notes.push(format!("manifest \"{}\" is unusable: {reason}", path.display()))
            }
            Err(reason) if complete || self.settled(&path)? => {
                quarantine(self.config, &path, &reason, MANIFEST_HINT)?;
                self.refused.push(format!("manifest \"{}\" was moved to quarantine: {reason}", path.display()));
            }
            Err(_) => self.notes.push(format!("manifest \"{}\" is still arriving", path.display())),
        }
        Ok(())
    }

    /// Whether `path` has been left alone long enough to be taken as complete.
    fn settled(&self, path: &Path) -> Result<bool, Error> {
        let modified = fs::metadata(path)
            .and_then(|m| m.modified())
            .map_err(|e| Error::caused_by(Kind::Runtime, &format!("could not stat \"{}\"", path.display()), e))?;
        Ok(SystemTime::now().duration_since(modified).unwrap_or_default() >= self.config.settle)
    }

    /// Numbers of the files in the spool numbered up to `last`: applied already.
    pub fn applied_numbers(&self, last: u64) -> Vec<u64> {
        self.files.range(..=last).map(|(n, _)| *n).collect()
    }

    /// Moves `file`, just applied, to the archive.
    pub fn archive_applied(&mut self, file: &Verified) -> Result<(), Error> {
        if let Some(files) = self.files.get_mut(&file.header.number) {
            files.retain(|(_, path)| *path != file.path);
            if files.is_empty() {
                self.files.remove(&file.header.number);
            }
        }
        archive(self.config, &file.path)?;
        Ok(())
    }

    /// Moves every file numbered up to `last` (applied already) out of the way, comparing it
    /// with what the slave recorded of the file applied under its number (`applied`): the same
    /// file, sent again, goes to the archive; another one goes to quarantine and is returned.
    /// A file that differs but may still be arriving is left for a later pass. Manifests whose
    /// files are all applied go to the archive, or to quarantine with the files they list.
    pub fn set_aside_applied(
        &mut self,
        last: u64,
        applied: &BTreeMap<u64, AppliedFile>,
    ) -> Result<Vec<SetAside>, Error> {
        let mut set_aside = Vec::new();
        for number in self.applied_numbers(last) {
            for (name, path) in self.files.remove(&number).unwrap_or_default() {
                match self.compare_with_applied(number, &name, &path, applied.get(&number))? {
                    Comparison::Same => {
                        archive(self.config, &path)?;
                    }
                    Comparison::Arriving => {
                        self.notes.push(format!(
                            "file {number} arrived again and is still arriving; it is compared with the applied one once complete"
                        ));
                        self.files.entry(number).or_default().push((name, path));
                    }
                    Comparison::Other(refusal) => {
                        quarantine(self.config, &path, &refusal.reason, &refusal.hint)?;
                        set_aside.push(SetAside { number, path, refusal });
                    }
                }
            }
        }
        for (name, path) in std::mem::take(&mut self.manifests) {
            let listed = set_aside.iter().map(|s| s.number).find(|n| (name.first..=name.last).contains(n));
            if let Some(number) = listed {
                let reason = format!("it lists file {number}, which was moved to quarantine");
                quarantine(self.config, &path, &reason, "Keep it with the files it lists.")?;
            } else if name.last <= last && self.files.range(name.first..=name.last).next().is_none() {
                archive(self.config, &path)?;
            } else {
                self.manifests.push((name, path));
            }
        }
        Ok(set_aside)
    }

    /// Whether the file `path`, numbered like an applied file, is that file sent again.
    fn compare_with_applied(
        &self,
        number: u64,
        name: &TransactionFileName,
        path: &Path,
        applied: Option<&AppliedFile>,
    ) -> Result<Comparison, Error> {
        let entry = self.covered.get(&number).map(|(entry, _)| entry).filter(|entry| entry.file == *name);
        let other = match read_header(path, name) {
            Err(reason) => {
                Refusal::damaged_copy(number, format!("file {number} was applied already, and this copy {reason}"))
            }
            Ok((header, _)) if header.slave != self.config.slave_name => Refusal::misplaced(
                number,
                format!("it is for slave \"{}\", this applier serves \"{}\"", header.slave, self.config.slave_name),
            ),
            Ok((header, sha256)) => match applied {
                // Applied before the slave kept a history, or its record was deleted: only the
                // name the manifest gives can tell.
                None => match self.covered.get(&number) {
                    Some((listed, _)) if listed.file != *name => Refusal::diverged(format!(
                        "it is not the file {number} that was applied (that was \"{}\"): the master's history diverged",
                        listed.file.file_name()
                    )),
                    _ => return Ok(Comparison::Same),
                },
                Some(applied) => {
                    let same_export = header.xid as i64 == applied.xid
                        && applied.exported_at.is_none_or(|at| at == header.exported_at);
                    let same_text = applied.sha256.as_deref().is_none_or(|known| known == sha256.to_string());
                    match (same_export, same_text) {
                        (true, true) => return Ok(Comparison::Same),
                        (true, false) => Refusal::damaged_copy(
                            number,
                            format!(
                                "its SQL differs from the file {number} that was applied, though both are master transaction {} \
                                 (sha256 {} applied, {sha256} here)",
                                applied.xid,
                                applied.sha256.as_deref().unwrap_or("unknown")
                            ),
                        ),
                        (false, _) => Refusal::diverged(format!(
                            "it is not the file {number} that was applied: the master's history diverged \
                             (applied: master transaction {} exported at {}; this one: master transaction {} exported at {})",
                            applied.xid,
                            applied.exported_at.map_or_else(|| "an unrecorded time".into(), time),
                            header.xid,
                            time(header.exported_at)
                        )),
                    }
                }
            },
        };
        // A copy in progress differs too: judge a file only once it is complete.
        let stored = match entry {
            Some(_) => Some(
                fs::File::open(path)
                    .and_then(sha256_of)
                    .map_err(|e| Error::caused_by(Kind::Runtime, &format!("could not read \"{}\"", path.display()), e))?
                    .0,
            ),
            None => None,
        };
        let intact = entry.zip(stored).is_some_and(|(entry, stored)| entry.checksum == stored);
        if !intact && !self.settled(path)? {
            return Ok(Comparison::Arriving);
        }
        Ok(Comparison::Other(match entry.zip(stored) {
            Some((entry, stored)) if entry.checksum != stored => Refusal::damaged_copy(
                number,
                format!(
                    "file {number} was applied already, and this copy has a checksum mismatch: the manifest says sha256 {}, the file has {stored}",
                    entry.checksum
                ),
            ),
            _ => other,
        }))
    }

    /// What the spool offers as file number `number`.
    pub fn next(&mut self, number: u64) -> Result<Next, Error> {
        if let Some(reason) = self.disputed.get(&number) {
            return Err(Error::new(Kind::BadFile, reason.clone())
                .with_hint("Someone changed a manifest: compare both with the exporter's outbox, and keep only the right one in the spool."));
        }
        let Some((entry, _manifest)) = self.covered.get(&number).cloned() else {
            let waiting = if self.files.contains_key(&number) {
                Some(format!("waiting for the manifest of file {number}"))
            } else if self.files.range(number..).next().is_some() || self.covered.range(number..).next().is_some() {
                Some(format!("waiting for file {number}"))
            } else {
                self.notes.first().cloned()
            };
            return Ok(Next::Waiting(waiting));
        };
        let path = self.config.spool.join(entry.file.file_name());
        if !path.is_file() {
            let mut reason =
                format!("waiting for file {number} (\"{}\"; its manifest has arrived)", entry.file.file_name());
            if let Some((other, _)) = self.files.get(&number).and_then(|files| files.first()) {
                reason.push_str(&format!(
                    "; \"{}\" has that number but is not the file the manifest names",
                    other.file_name()
                ));
            }
            return Ok(Next::Waiting(Some(reason)));
        }
        let (stored, _) = sha256_of(fs::File::open(&path)?)
            .map_err(|e| Error::caused_by(Kind::Runtime, &format!("could not read \"{}\"", path.display()), e))?;
        if stored != entry.checksum {
            if !self.settled(&path)? {
                return Ok(Next::Waiting(Some(format!(
                    "file {number} is still arriving (its checksum does not match yet)"
                ))));
            }
            let reason =
                format!("checksum mismatch: the manifest says sha256 {}, the file has {stored}", entry.checksum);
            return self.refuse(&path, Refusal::damaged(number, reason));
        }
        let (header, sql_sha256) = match read_header(&path, &entry.file) {
            Ok(read) => read,
            Err(reason) => return self.refuse(&path, Refusal::unreadable(format!("it {reason}"))),
        };
        if header.number != number {
            return self.refuse(
                &path,
                Refusal::unreadable(format!("its header says it is file {}, its name says {number}", header.number)),
            );
        }
        if header.slave != self.config.slave_name {
            return self.refuse(
                &path,
                Refusal::misplaced(
                    number,
                    format!("it is for slave \"{}\", this applier serves \"{}\"", header.slave, self.config.slave_name),
                ),
            );
        }
        if let Some(master) = self.config.master.filter(|m| *m != header.master) {
            return self.refuse(
                &path,
                Refusal::misplaced(
                    number,
                    format!("it comes from master {}, this slave follows master {master}", header.master),
                ),
            );
        }
        Ok(Next::Ready(Box::new(Verified { path, name: entry.file, header, sql_sha256 })))
    }

    fn refuse(&mut self, path: &Path, refusal: Refusal) -> Result<Next, Error> {
        quarantine(self.config, path, &refusal.reason, &refusal.hint)?;
        Ok(Next::Quarantined { path: path.to_owned(), refusal })
    }

    /// The last file after `number` that starts a new stream (the first file of a snapshot),
    /// if one has arrived with its manifest: it supersedes every file before it that the slave
    /// has not applied. A snapshot's first file is the first its manifest lists, so only those
    /// are looked into.
    pub fn stream_start_after(&self, number: u64) -> Option<u64> {
        let mut firsts: Vec<u64> = self.manifests.iter().map(|(name, _)| name.first).filter(|&n| n > number).collect();
        firsts.sort_unstable_by(|a, b| b.cmp(a));
        firsts.dedup();
        firsts.into_iter().find(|&first| {
            let Some((entry, _)) = self.covered.get(&first) else {
                return false;
            };
            let path = self.config.spool.join(entry.file.file_name());
            // Only a file that is complete and intact counts; its first lines are read before
            // the whole of it, so that an ordinary file costs a few lines, not a checksum.
            starts_stream(&path, &entry.file)
                && fs::File::open(&path)
                    .ok()
                    .and_then(|file| sha256_of(file).ok())
                    .is_some_and(|(stored, _)| stored == entry.checksum)
        })
    }

    /// Numbers of the transaction files present.
    pub fn present(&self) -> Vec<u64> {
        self.files.keys().copied().collect()
    }

    /// Number of manifests present.
    pub fn manifest_count(&self) -> usize {
        self.manifests.len()
    }

    /// What this scan refused (manifests it moved to quarantine).
    pub fn refused(&self) -> &[String] {
        &self.refused
    }

    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    pub fn is_covered(&self, number: u64) -> bool {
        self.covered.contains_key(&number)
    }
}

/// What a file numbered like an applied one is.
enum Comparison {
    /// That file, sent again.
    Same,
    /// Not that file as far as it arrived, but it may still be arriving.
    Arriving,
    /// Another file.
    Other(Refusal),
}

/// What an operator can do about a manifest that was moved to quarantine.
const MANIFEST_HINT: &str =
    "The files it lists wait for a good manifest: put one into the spool (from the exporter's outbox), then run the applier again.";

/// A time as file headers write it.
fn time(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Why a transaction file's header or text could not be read; as text, it completes "it ...".
#[derive(Debug)]
enum Unreadable {
    Open(dbmirror_spool::Error),
    Header(dbmirror_spool::Error),
    Text(std::io::Error),
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unreadable::Open(e) => write!(f, "could not be opened: {e}"),
            Unreadable::Header(e) => write!(f, "could not be read: {e}"),
            Unreadable::Text(e) => write!(f, "could not be read: {e}"),
        }
    }
}

impl std::error::Error for Unreadable {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Unreadable::Open(e) | Unreadable::Header(e) => Some(e),
            Unreadable::Text(e) => Some(e),
        }
    }
}

/// Reads a file's header and the checksum of its SQL text, decompressing if needed.
fn read_header(path: &Path, name: &TransactionFileName) -> Result<(Header, Checksum), Unreadable> {
    let sql = open_sql(path, name).map_err(Unreadable::Open)?;
    let mut reader = std::io::BufReader::new(HashingReader::new(sql));
    let header = Header::read(&mut reader).map_err(Unreadable::Header)?;
    std::io::copy(&mut reader, &mut std::io::sink()).map_err(Unreadable::Text)?;
    Ok((header, reader.get_ref().checksum()))
}

/// Whether the file starts a new stream: the statement in its guard's place is
/// `dbmirror.start_stream`. Unreadable files do not; the normal checks deal with them.
fn starts_stream(path: &Path, name: &TransactionFileName) -> bool {
    use std::io::BufRead;
    let Ok(sql) = open_sql(path, name) else {
        return false;
    };
    let mut reader = std::io::BufReader::new(sql);
    if Header::read(&mut reader).is_err() {
        return false;
    }
    let start = format!("SELECT {}(", dbmirror_sql::START_FUNCTION);
    // The guard's place is the first statement after ON_ERROR_STOP, the session settings,
    // BEGIN and the transaction's settings; nothing later (a row's text, say) counts.
    reader
        .lines()
        .take(64)
        .map_while(Result::ok)
        .find(|line| !(line.starts_with("\\set ") || line.starts_with("SET ") || line == "BEGIN;"))
        .is_some_and(|line| line.starts_with(&start))
}

/// Moves `path` into `dir` (created if need be), under its own name or, if that is taken, with
/// `.1`, `.2`... added; also across file systems. A move under another name is logged: two
/// files of one name mean the same file arrived twice, or two different ones did.
fn move_into(dir: &Path, path: &Path, what: &str) -> Result<PathBuf, Error> {
    fs::create_dir_all(dir)
        .map_err(|e| Error::caused_by(Kind::Runtime, &format!("could not create \"{}\"", dir.display()), e))?;
    let target = dbmirror_spool::move_into(path, dir)?;
    if target.file_name() != path.file_name() {
        log::warning(&format!(
            "\"{}\" was in the {what} already: moved \"{}\" there as \"{}\"",
            dir.join(path.file_name().unwrap_or_default()).display(),
            path.display(),
            target.display()
        ));
    }
    Ok(target)
}

/// Moves an applied file (or manifest) to the archive. A `.reason` file left in quarantine
/// for a file of the same name that is no longer there goes: the file was moved back into the
/// spool, as the hints say to do once the cause is repaired, and has now been applied.
pub fn archive(config: &Config, path: &Path) -> Result<PathBuf, Error> {
    let target = move_into(&config.archive, path, "archive")?;
    if let Some(name) = path.file_name() {
        let quarantined = config.quarantine.join(name);
        let reason = PathBuf::from(format!("{}{REASON_SUFFIX}", quarantined.display()));
        if reason.is_file() && !quarantined.exists() {
            fs::remove_file(&reason).map_err(|e| {
                Error::caused_by(Kind::Runtime, &format!("could not delete \"{}\"", reason.display()), e)
            })?;
            log::info(&format!("deleted \"{}\": its file has been applied", reason.display()));
        }
    }
    Ok(target)
}

/// Moves a file that must not be applied to quarantine, and writes beside it why, and what an
/// operator can do about it.
pub fn quarantine(config: &Config, path: &Path, reason: &str, hint: &str) -> Result<PathBuf, Error> {
    let target = move_into(&config.quarantine, path, "quarantine")?;
    let reason_path = PathBuf::from(format!("{}{REASON_SUFFIX}", target.display()));
    let text = format!(
        "{}\nquarantined at {} by dbmirror-apply: {reason}\nHINT:  {hint}\n",
        target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );
    fs::File::create(&reason_path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| Error::caused_by(Kind::Runtime, &format!("could not write \"{}\"", reason_path.display()), e))?;
    log::warning(&format!("moved \"{}\" to quarantine: {reason}", path.display()));
    Ok(target)
}

/// The quarantined files and the first line of their reason.
pub fn quarantined(config: &Config) -> Vec<(String, String)> {
    let Ok(entries) = fs::read_dir(&config.quarantine) else {
        return Vec::new();
    };
    let mut found: Vec<(String, String)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| !p.to_string_lossy().ends_with(REASON_SUFFIX))
        // Dot-names are copies in progress (see dbmirror_spool::move_into).
        .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
        .map(|p| {
            let reason = fs::read_to_string(format!("{}{REASON_SUFFIX}", p.display()))
                .ok()
                .and_then(|text| text.lines().nth(1).map(str::to_string))
                .unwrap_or_default();
            (p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), reason)
        })
        .collect();
    found.sort();
    found
}

#[cfg(test)]
mod tests;
