//! The inbound spool on a temporary directory: what is taken as ready, what is waited for,
//! what goes to quarantine (and what its reason file says), and where files numbered like
//! applied ones end up. No database: the slave's state is given as the numbers and records the
//! applier would have read from it.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, TimeZone, Utc};
use dbmirror_cli::error::Kind;
use dbmirror_replay::slave::AppliedFile;
use dbmirror_spool::{
    Checksum, Header, Manifest, ManifestEntry, SigningKey, TransactionFileName, FORMAT_VERSION, REASON_SUFFIX,
};

use super::{quarantine, quarantined, Inbox, Next};
use crate::config::Config;

const SLAVE: &str = "backup_system";
const MASTER: u64 = 7_449_123_456_789_012_345;

/// An inbound spool in a temporary directory, and the applier's configuration for it.
struct Spool {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    config: Config,
}

/// A transaction file as the exporter would have written it: its name and its bytes.
#[derive(Clone)]
struct File {
    name: TransactionFileName,
    bytes: Vec<u8>,
}

fn exported_at(number: u64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 1, 2, 3).unwrap() + chrono::Duration::seconds(number as i64)
}

fn header(number: u64) -> Header {
    Header {
        format: FORMAT_VERSION,
        master: MASTER,
        database: "shop".into(),
        slave: SLAVE.into(),
        number,
        xid: 1000 + number,
        changes: 1,
        exported_at: exported_at(number),
        committed_at: Some(exported_at(number) - chrono::Duration::seconds(1)),
        previous_sha256: None,
    }
}

/// File `number` of this slave's stream, with `header` as written in it.
fn file_with(header: &Header) -> File {
    let name =
        TransactionFileName { number: header.number, time: header.exported_at, xid: header.xid, compressed: false };
    let bytes = format!("{}INSERT INTO public.item (id) VALUES ({});\n", header.render(), header.number).into_bytes();
    File { name, bytes }
}

fn file(number: u64) -> File {
    file_with(&header(number))
}

/// A complete manifest listing `files` (consecutive numbers), unsigned or signed by `key`.
fn manifest_text(files: &[&File], key: Option<&SigningKey>) -> (String, String) {
    let entries = files.iter().map(|f| ManifestEntry { checksum: Checksum::of(&f.bytes), file: f.name.clone() });
    let mut manifest = Manifest::new(entries.collect()).expect("consecutive files make a manifest");
    if let Some(key) = key {
        manifest.sign(key);
    }
    (manifest.name.file_name(), manifest.render())
}

/// A time long enough ago for any file to count as settled.
fn long_ago() -> SystemTime {
    SystemTime::now() - Duration::from_secs(600)
}

impl Spool {
    /// A spool whose files settle after `settle_seconds = 60`, with `extra` configuration lines.
    fn new(extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory can be created");
        let spool = dir.path().join("inbound");
        fs::create_dir(&spool).unwrap();
        let config = Config::parse(&format!(
            "slave_name = \"{SLAVE}\"\nslave = \"host=/nonexistent dbname=slave\"\nspool = \"{}\"\nsettle_seconds = 60\n{extra}\n",
            spool.display()
        ))
        .expect("the test configuration is valid");
        Self { dir: spool, _dir: dir, config }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes `bytes` under `name` in the spool, modified long ago: fully arrived.
    fn put_settled(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.put_arriving(name, bytes);
        set_modified(&path, long_ago());
        path
    }

    /// Writes `bytes` under `name` in the spool, modified just now: possibly still arriving.
    fn put_arriving(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.path(name);
        fs::write(&path, bytes).unwrap();
        path
    }

    fn put_file(&self, file: &File) -> PathBuf {
        self.put_settled(&file.name.file_name(), &file.bytes)
    }

    fn put_manifest(&self, files: &[&File]) -> PathBuf {
        let (name, text) = manifest_text(files, None);
        self.put_settled(&name, text.as_bytes())
    }

    fn scan(&self) -> Inbox<'_> {
        Inbox::scan(&self.config, false).expect("the spool can be scanned")
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = match fs::read_dir(dir) {
            Ok(entries) => entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
            Err(_) => Vec::new(),
        };
        names.sort();
        names
    }

    /// Names in the spool itself, without the archive and quarantine folders.
    fn in_spool(&self) -> Vec<String> {
        Self::names(&self.dir).into_iter().filter(|n| self.path(n).is_file()).collect()
    }

    fn in_quarantine(&self) -> Vec<String> {
        Self::names(&self.config.quarantine)
    }

    fn in_archive(&self) -> Vec<String> {
        Self::names(&self.config.archive)
    }

    /// The reason file beside the quarantined file `name`.
    fn reason(&self, name: &str) -> String {
        fs::read_to_string(self.config.quarantine.join(format!("{name}{REASON_SUFFIX}")))
            .unwrap_or_else(|e| panic!("no reason file beside quarantined \"{name}\": {e}"))
    }
}

fn set_modified(path: &Path, at: SystemTime) {
    fs::File::options().write(true).open(path).and_then(|f| f.set_modified(at)).unwrap();
}

#[track_caller]
fn ready(next: Next) -> super::Verified {
    match next {
        Next::Ready(file) => *file,
        other => panic!("expected a file ready to apply, got {other:?}"),
    }
}

#[track_caller]
fn waiting(next: Next) -> Option<String> {
    match next {
        Next::Waiting(reason) => reason,
        other => panic!("expected to wait, got {other:?}"),
    }
}

#[track_caller]
fn quarantined_as(next: Next) -> (PathBuf, String) {
    match next {
        Next::Quarantined { path, refusal } => (path, refusal.reason),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

// Coverage by manifests.

#[test]
fn an_intact_file_listed_by_a_complete_manifest_is_ready_with_its_header() {
    let spool = Spool::new("");
    let one = file(1);
    spool.put_file(&one);
    spool.put_manifest(&[&one]);
    let verified = ready(spool.scan().next(1).unwrap());
    assert_eq!(verified.header, header(1));
    assert_eq!(verified.name, one.name);
    assert_eq!(verified.path, spool.path(&one.name.file_name()));
    assert_eq!(verified.sql_sha256, Checksum::of(&one.bytes), "the checksum the next file's header chains to");
}

/// Prevents applying a file before its manifest has arrived to vouch for it.
#[test]
fn a_file_without_a_manifest_is_waited_for_never_applied() {
    let spool = Spool::new("");
    spool.put_file(&file(1));
    let mut inbox = spool.scan();
    assert_eq!(waiting(inbox.next(1).unwrap()).as_deref(), Some("waiting for the manifest of file 1"));
    assert!(!inbox.is_covered(1));
    assert_eq!(spool.in_quarantine(), Vec::<String>::new());
}

/// Prevents a manifest for some files from being taken to vouch for the next ones.
#[test]
fn a_file_past_the_last_manifest_waits_for_its_own_manifest() {
    let spool = Spool::new("");
    let (one, two) = (file(1), file(2));
    spool.put_file(&one);
    spool.put_file(&two);
    spool.put_manifest(&[&one]);
    let mut inbox = spool.scan();
    assert!(inbox.is_covered(1) && !inbox.is_covered(2));
    ready(inbox.next(1).unwrap());
    assert_eq!(waiting(inbox.next(2).unwrap()).as_deref(), Some("waiting for the manifest of file 2"));
}

#[test]
fn a_manifest_whose_file_has_not_arrived_waits_for_the_file() {
    let spool = Spool::new("");
    let one = file(1);
    spool.put_manifest(&[&one]);
    let reason = waiting(spool.scan().next(1).unwrap()).unwrap();
    assert!(reason.starts_with("waiting for file 1"), "{reason}");
    assert!(reason.contains("its manifest has arrived"), "{reason}");
}

/// Prevents a file with the right number but another name (another export of that number)
/// from being applied on the strength of a manifest that names a different file.
#[test]
fn a_file_with_the_number_but_not_the_name_the_manifest_gives_is_not_taken_for_it() {
    let spool = Spool::new("");
    let listed = file(1);
    let other = file_with(&Header { xid: 4242, ..header(1) });
    spool.put_file(&other);
    spool.put_manifest(&[&listed]);
    let reason = waiting(spool.scan().next(1).unwrap()).unwrap();
    assert!(
        reason.contains(&format!(
            "\"{}\" has that number but is not the file the manifest names",
            other.name.file_name()
        )),
        "{reason}"
    );
    assert!(spool.path(&other.name.file_name()).is_file(), "the other file stays in the spool");
}

/// Prevents the applier from going on when someone changed one of two manifests that list the
/// same file: it cannot know which one to believe.
#[test]
fn two_manifests_that_disagree_about_a_file_stop_the_applier() {
    let spool = Spool::new("");
    let (one, two) = (file(1), file(2));
    spool.put_file(&one);
    spool.put_file(&two);
    spool.put_manifest(&[&one, &two]);
    let changed = File { bytes: b"something else".to_vec(), ..one.clone() };
    spool.put_manifest(&[&changed]);
    let error = spool.scan().next(1).unwrap_err();
    assert_eq!(error.kind(), Kind::BadFile);
    assert!(error.to_string().contains("disagree about file 1"), "{error}");
    assert!(error.to_string().contains("HINT:  Someone changed a manifest"), "{error}");
}

// Settling: a copy in progress against damage.

/// Prevents a file that is still being copied into the spool (rsync, a USB stick) from being
/// quarantined as damaged.
#[test]
fn a_file_still_being_copied_is_waited_for_and_left_in_the_spool() {
    let spool = Spool::new("");
    let one = file(1);
    spool.put_manifest(&[&one]);
    spool.put_arriving(&one.name.file_name(), &one.bytes[..one.bytes.len() / 2]);
    let reason = waiting(spool.scan().next(1).unwrap()).unwrap();
    assert_eq!(reason, "file 1 is still arriving (its checksum does not match yet)");
    assert!(spool.in_spool().contains(&one.name.file_name()));
    assert_eq!(spool.in_quarantine(), Vec::<String>::new());
}

/// Prevents both applying a damaged file and deleting it: it goes to quarantine, with a reason
/// file that names it, says what is wrong and what to do.
#[test]
fn a_file_that_stays_different_from_its_manifest_goes_to_quarantine_with_its_reason() {
    let spool = Spool::new("");
    let one = file(1);
    spool.put_manifest(&[&one]);
    let mut damaged = one.bytes.clone();
    damaged[40] ^= 1;
    spool.put_settled(&one.name.file_name(), &damaged);
    let (path, reason) = quarantined_as(spool.scan().next(1).unwrap());
    assert_eq!(path, spool.path(&one.name.file_name()));
    assert!(reason.starts_with("checksum mismatch: the manifest says sha256 "), "{reason}");
    assert!(reason.ends_with(&format!("the file has {}", Checksum::of(&damaged))), "{reason}");

    let name = one.name.file_name();
    assert!(!spool.in_spool().contains(&name), "the damaged file left the spool");
    assert_eq!(spool.in_quarantine(), vec![name.clone(), format!("{name}{REASON_SUFFIX}")]);
    assert_eq!(fs::read(spool.config.quarantine.join(&name)).unwrap(), damaged, "kept as it arrived");
    let text = spool.reason(&name);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], name);
    assert!(lines[1].starts_with("quarantined at ") && lines[1].ends_with(&format!("by dbmirror-apply: {reason}")));
    assert!(lines[2].starts_with("HINT:  Put a good copy of file 1"), "{text}");
    assert_eq!(quarantined(&spool.config), vec![(name, lines[1].to_string())]);
}

/// Prevents a manifest that is still being copied from being quarantined, or from vouching
/// for anything.
#[test]
fn a_manifest_still_being_copied_is_left_alone() {
    let spool = Spool::new("");
    let one = file(1);
    spool.put_file(&one);
    let (name, text) = manifest_text(&[&one], None);
    spool.put_arriving(&name, &text.as_bytes()[..text.len() - 10]);
    let mut inbox = spool.scan();
    assert_eq!(inbox.notes(), [format!("manifest \"{}\" is still arriving", spool.path(&name).display())]);
    assert!(inbox.refused().is_empty());
    assert_eq!(waiting(inbox.next(1).unwrap()).as_deref(), Some("waiting for the manifest of file 1"));
    assert!(spool.in_spool().contains(&name));
}

/// Prevents the files a torn manifest lists from waiting silently forever: once it has been
/// left alone past the settle time, it goes to quarantine and the pass reports it.
#[test]
fn a_torn_manifest_left_alone_past_the_settle_time_goes_to_quarantine() {
    let spool = Spool::new("");
    let one = file(1);
    spool.put_file(&one);
    let (name, text) = manifest_text(&[&one], None);
    spool.put_settled(&name, &text.as_bytes()[..text.len() - 10]);
    let inbox = spool.scan();
    assert_eq!(inbox.refused().len(), 1);
    assert!(inbox.refused()[0].contains("was moved to quarantine: "), "{:?}", inbox.refused());
    assert!(inbox.refused()[0].contains("it is incomplete (no end line)"), "{:?}", inbox.refused());
    assert_eq!(spool.in_quarantine(), vec![name.clone(), format!("{name}{REASON_SUFFIX}")]);
    assert!(spool.reason(&name).contains("HINT:  The files it lists wait for a good manifest"));
    assert!(spool.in_spool().contains(&one.name.file_name()), "the file it listed stays, waiting");
}

/// Prevents a manifest changed after it was written (its end line no longer matches its
/// lines) from vouching for a file.
#[test]
fn a_manifest_whose_end_checksum_does_not_match_its_lines_goes_to_quarantine() {
    let spool = Spool::new("");
    let one = file(1);
    spool.put_file(&one);
    let (name, text) = manifest_text(&[&one], None);
    // Another checksum for the file, the end line left as it was.
    let first = text.chars().next().unwrap();
    let forged = format!("{}{}", if first == '0' { '1' } else { '0' }, &text[1..]);
    spool.put_settled(&name, forged.as_bytes());
    let mut inbox = spool.scan();
    assert!(inbox.refused()[0].contains("its end line does not match its content"), "{:?}", inbox.refused());
    assert!(!inbox.is_covered(1));
    assert_eq!(waiting(inbox.next(1).unwrap()).as_deref(), Some("waiting for the manifest of file 1"));
    assert!(spool.in_quarantine().contains(&name));
}

/// Prevents `status` from changing the spool: inspecting moves nothing, not even a manifest
/// that a pass would quarantine.
#[test]
fn inspecting_the_spool_moves_nothing() {
    let spool = Spool::new("");
    let one = file(1);
    spool.put_file(&one);
    let (name, text) = manifest_text(&[&one], None);
    spool.put_settled(&name, &text.as_bytes()[..10]);
    let inbox = Inbox::scan(&spool.config, true).unwrap();
    assert!(inbox.refused().is_empty());
    assert!(inbox.notes()[0].contains("is unusable: "), "{:?}", inbox.notes());
    assert_eq!(spool.in_quarantine(), Vec::<String>::new());
    assert!(spool.in_spool().contains(&name));
}

// Signatures.

fn signed_spool() -> (Spool, SigningKey) {
    let (key, public) = SigningKey::generate().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let public_path = keys.path().join("exporter.pub");
    public.save(&public_path).unwrap();
    let spool = Spool::new(&format!("public_key = \"{}\"", public_path.display()));
    (spool, key)
}

#[test]
fn with_a_public_key_a_manifest_the_exporter_signed_vouches_for_its_files() {
    let (spool, key) = signed_spool();
    let one = file(1);
    spool.put_file(&one);
    let (name, text) = manifest_text(&[&one], Some(&key));
    spool.put_settled(&name, text.as_bytes());
    ready(spool.scan().next(1).unwrap());
}

/// Prevents an attacker who can write into the spool from getting a file applied by writing
/// its manifest too: unsigned manifests are refused at once, fresh or not.
#[test]
fn with_a_public_key_an_unsigned_manifest_is_quarantined_at_once() {
    let (spool, _) = signed_spool();
    let one = file(1);
    spool.put_file(&one);
    let (name, text) = manifest_text(&[&one], None);
    spool.put_arriving(&name, text.as_bytes());
    let mut inbox = spool.scan();
    assert!(inbox.refused()[0].contains("is not signed, and a public key is configured"), "{:?}", inbox.refused());
    assert_eq!(waiting(inbox.next(1).unwrap()).as_deref(), Some("waiting for the manifest of file 1"));
    assert!(spool.reason(&name).contains("is not signed"));
}

#[test]
fn with_a_public_key_a_manifest_signed_by_another_key_is_quarantined() {
    let (spool, _) = signed_spool();
    let (stranger, _) = SigningKey::generate().unwrap();
    let one = file(1);
    spool.put_file(&one);
    let (name, text) = manifest_text(&[&one], Some(&stranger));
    spool.put_arriving(&name, text.as_bytes());
    let inbox = spool.scan();
    assert!(inbox.refused()[0].contains("does not verify with the configured public key"), "{:?}", inbox.refused());
    assert!(!inbox.is_covered(1));
    assert!(spool.in_quarantine().contains(&name));
}

// What an intact file says about itself.

/// Prevents a file meant for another slave, copied into the wrong spool, from being applied.
#[test]
fn a_file_for_another_slave_is_quarantined_as_misplaced() {
    let spool = Spool::new("");
    let foreign = file_with(&Header { slave: "other_slave".into(), ..header(1) });
    spool.put_file(&foreign);
    spool.put_manifest(&[&foreign]);
    let (_, reason) = quarantined_as(spool.scan().next(1).unwrap());
    assert_eq!(reason, format!("it is for slave \"other_slave\", this applier serves \"{SLAVE}\""));
    assert!(spool.reason(&foreign.name.file_name()).contains("HINT:  The file belongs to another spool"));
}

/// Prevents a slave pinned to one master from taking the first file of another master.
#[test]
fn a_file_from_another_master_is_refused_when_the_master_is_pinned() {
    let spool = Spool::new(&format!("master = \"{}\"", MASTER + 1));
    let one = file(1);
    spool.put_file(&one);
    spool.put_manifest(&[&one]);
    let (_, reason) = quarantined_as(spool.scan().next(1).unwrap());
    assert_eq!(reason, format!("it comes from master {MASTER}, this slave follows master {}", MASTER + 1));
}

/// Prevents a file renamed to another number from being applied as that number.
#[test]
fn a_file_whose_header_number_disagrees_with_its_name_is_quarantined() {
    let spool = Spool::new("");
    let mut renamed = file(2);
    renamed.name.number = 1;
    spool.put_file(&renamed);
    spool.put_manifest(&[&renamed]);
    let (_, reason) = quarantined_as(spool.scan().next(1).unwrap());
    assert_eq!(reason, "its header says it is file 2, its name says 1");
}

#[test]
fn a_file_that_matches_its_manifest_but_is_no_transaction_file_is_quarantined_as_unreadable() {
    let spool = Spool::new("");
    let one = File { bytes: b"SELECT 1;\n".to_vec(), ..file(1) };
    spool.put_file(&one);
    spool.put_manifest(&[&one]);
    let (_, reason) = quarantined_as(spool.scan().next(1).unwrap());
    assert!(reason.starts_with("it could not be read: "), "{reason}");
    assert!(spool.reason(&one.name.file_name()).contains("HINT:  The file matches its manifest"));
}

// Order and gaps.

/// Prevents a later file from being applied across a gap.
#[test]
fn files_are_offered_in_number_order_and_a_gap_is_waited_for() {
    let spool = Spool::new("");
    let files: Vec<File> = [1, 2, 4].into_iter().map(file).collect();
    for f in &files {
        spool.put_file(f);
    }
    spool.put_manifest(&[&files[0], &files[1]]);
    spool.put_manifest(&[&files[2]]);
    let mut inbox = spool.scan();
    assert_eq!(inbox.present(), [1, 2, 4]);
    assert_eq!(inbox.manifest_count(), 2);
    assert_eq!(ready(inbox.next(1).unwrap()).header.number, 1);
    assert_eq!(ready(inbox.next(2).unwrap()).header.number, 2);
    assert_eq!(waiting(inbox.next(3).unwrap()).as_deref(), Some("waiting for file 3"));
    assert_eq!(waiting(inbox.next(5).unwrap()), None, "nothing later: nothing to wait for");
}

/// Prevents temporary files (a write in progress, rsync's dot-files), renamed files and
/// strangers from being read as spool files; the ones that look like spool files are named in
/// what the applier says while it waits.
#[test]
fn temporary_renamed_and_unknown_files_in_the_spool_are_ignored() {
    let spool = Spool::new("");
    spool.put_settled("00000000000000000001_20261201T010204Z_1001.sql.tmp", b"half");
    spool.put_settled(".00000000000000000001_20261201T010204Z_1001.sql.Xy12", b"half");
    spool.put_settled("copy of file 1.sql", &file(1).bytes);
    spool.put_settled("notes.txt", b"hello");
    let mut inbox = spool.scan();
    assert!(inbox.present().is_empty());
    assert_eq!(inbox.manifest_count(), 0);
    let notes = inbox.notes().to_vec();
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(notes.iter().any(|n| n.starts_with("ignoring temporary file")), "{notes:?}");
    assert!(notes.iter().any(|n| n.contains("copy of file 1.sql\": ")), "{notes:?}");
    assert!(waiting(inbox.next(1).unwrap()).is_some_and(|r| r.starts_with("ignoring")));
    assert_eq!(spool.in_spool().len(), 4, "nothing moved");
}

// Files numbered like applied ones.

fn applied_record(file: &File) -> AppliedFile {
    let header = header(file.name.number);
    AppliedFile {
        xid: header.xid as i64,
        exported_at: Some(header.exported_at),
        sha256: Some(Checksum::of(&file.bytes).to_string()),
    }
}

#[test]
fn an_applied_file_is_moved_to_the_archive() {
    let spool = Spool::new("");
    let one = file(1);
    spool.put_file(&one);
    spool.put_manifest(&[&one]);
    let mut inbox = spool.scan();
    let verified = ready(inbox.next(1).unwrap());
    inbox.archive_applied(&verified).unwrap();
    assert_eq!(spool.in_archive(), vec![one.name.file_name()]);
    assert!(inbox.present().is_empty());
}

/// Prevents a file sent twice (a repeated transfer) from stopping the applier: the same file
/// again goes to the archive, with its manifest once all it lists is applied.
#[test]
fn an_applied_file_sent_again_unchanged_goes_to_the_archive_with_its_manifest() {
    let spool = Spool::new("");
    let (one, two) = (file(1), file(2));
    spool.put_file(&one);
    spool.put_file(&two);
    let manifest = spool.put_manifest(&[&one, &two]);
    let mut inbox = spool.scan();
    assert_eq!(inbox.applied_numbers(2), [1, 2]);
    let applied = BTreeMap::from([(1, applied_record(&one)), (2, applied_record(&two))]);
    assert!(inbox.set_aside_applied(2, &applied).unwrap().is_empty());
    let mut archived = vec![one.name.file_name(), two.name.file_name()];
    archived.push(manifest.file_name().unwrap().to_string_lossy().into_owned());
    archived.sort();
    assert_eq!(spool.in_archive(), archived);
    assert_eq!(spool.in_spool(), Vec::<String>::new());
}

/// Prevents a manifest from leaving the spool while a file it lists still waits to be applied.
#[test]
fn a_manifest_stays_while_a_file_it_lists_is_not_applied() {
    let spool = Spool::new("");
    let (one, two) = (file(1), file(2));
    spool.put_file(&one);
    spool.put_file(&two);
    let manifest = spool.put_manifest(&[&one, &two]);
    let mut inbox = spool.scan();
    assert!(inbox.set_aside_applied(1, &BTreeMap::from([(1, applied_record(&one))])).unwrap().is_empty());
    assert!(manifest.is_file());
    assert_eq!(spool.in_archive(), vec![one.name.file_name()]);
    assert_eq!(ready(inbox.next(2).unwrap()).header.number, 2);
}

/// Prevents a master restored from an older copy from making the slave take another file
/// under a number it applied: that file goes to quarantine, and the manifest listing it too.
#[test]
fn a_file_numbered_like_an_applied_one_from_another_history_is_quarantined_as_diverged() {
    let spool = Spool::new("");
    let applied = file(1);
    let again = file_with(&Header { xid: 5555, ..header(1) });
    spool.put_file(&again);
    let manifest = spool.put_manifest(&[&again]);
    let mut inbox = spool.scan();
    let set_aside = inbox.set_aside_applied(1, &BTreeMap::from([(1, applied_record(&applied))])).unwrap();
    assert_eq!(set_aside.len(), 1);
    assert_eq!(set_aside[0].number, 1);
    assert!(set_aside[0].refusal.reason.contains("the master's history diverged"), "{}", set_aside[0].refusal.reason);
    assert!(set_aside[0].refusal.reason.contains("this one: master transaction 5555"));
    let manifest = manifest.file_name().unwrap().to_string_lossy().into_owned();
    assert!(spool.in_quarantine().contains(&again.name.file_name()));
    assert!(spool.in_quarantine().contains(&manifest));
    assert!(spool.reason(&manifest).contains("it lists file 1, which was moved to quarantine"));
    assert_eq!(spool.in_archive(), Vec::<String>::new());
}

/// Prevents a copy of an applied file whose SQL was changed (same transaction, other text)
/// from passing for the applied one.
#[test]
fn a_changed_copy_of_an_applied_file_is_quarantined_as_damaged() {
    let spool = Spool::new("");
    let one = file(1);
    spool.put_file(&one);
    spool.put_manifest(&[&one]);
    let mut record = applied_record(&one);
    record.sha256 = Some(Checksum::of(b"what was applied").to_string());
    let set_aside = spool.scan().set_aside_applied(1, &BTreeMap::from([(1, record)])).unwrap();
    assert!(set_aside[0].refusal.reason.starts_with("its SQL differs from the file 1 that was applied"));
    assert!(set_aside[0].refusal.hint.contains("this copy is not needed"));
}

/// Prevents a copy of an applied file that is still arriving from being judged (and
/// quarantined) before it is complete.
#[test]
fn a_copy_of_an_applied_file_still_arriving_is_left_for_a_later_pass() {
    let spool = Spool::new("");
    let one = file(1);
    spool.put_manifest(&[&one]);
    spool.put_arriving(&one.name.file_name(), &one.bytes[..20]);
    let mut inbox = spool.scan();
    assert!(inbox.set_aside_applied(1, &BTreeMap::from([(1, applied_record(&one))])).unwrap().is_empty());
    assert!(inbox.notes().iter().any(|n| n.contains("file 1 arrived again and is still arriving")));
    assert_eq!(inbox.present(), [1]);
    assert!(spool.in_spool().contains(&one.name.file_name()));
    assert_eq!(spool.in_quarantine(), Vec::<String>::new());
}

/// Files applied before the slave kept a history, or by hand, have no record: the name their
/// manifest gives is what tells the same file from another export of the number.
#[test]
fn an_applied_file_without_a_record_is_judged_by_the_name_its_manifest_gives() {
    let spool = Spool::new("");
    let one = file(1);
    spool.put_file(&one);
    spool.put_manifest(&[&one]);
    assert!(spool.scan().set_aside_applied(1, &BTreeMap::new()).unwrap().is_empty());
    assert!(spool.in_archive().contains(&one.name.file_name()));

    let spool = Spool::new("");
    let listed = file(1);
    let other = file_with(&Header { xid: 5555, ..header(1) });
    spool.put_file(&other);
    spool.put_manifest(&[&listed]);
    let set_aside = spool.scan().set_aside_applied(1, &BTreeMap::new()).unwrap();
    assert!(set_aside[0].refusal.reason.contains("it is not the file 1 that was applied"));
    assert!(spool.in_quarantine().contains(&other.name.file_name()));
}

// Quarantine.

/// Prevents a second bad file of the same name from replacing the first in quarantine, or
/// their reasons from mixing.
#[test]
fn quarantining_a_name_twice_keeps_both_files_and_both_reasons() {
    let spool = Spool::new("");
    let name = file(1).name.file_name();
    spool.put_settled(&name, b"first");
    let first = quarantine(&spool.config, &spool.path(&name), "first reason", "first hint").unwrap();
    spool.put_settled(&name, b"second");
    let second = quarantine(&spool.config, &spool.path(&name), "second reason", "second hint").unwrap();
    assert_eq!(first, spool.config.quarantine.join(&name));
    assert_eq!(second, spool.config.quarantine.join(format!("{name}.1")));
    assert_eq!(fs::read(&first).unwrap(), b"first");
    assert_eq!(fs::read(&second).unwrap(), b"second");
    assert!(spool.reason(&name).contains("first reason\nHINT:  first hint\n"));
    assert!(spool.reason(&format!("{name}.1")).contains("second reason\nHINT:  second hint\n"));
    let listed: Vec<(String, String)> = quarantined(&spool.config);
    assert_eq!(listed.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(), [name.clone(), format!("{name}.1")]);
    assert!(listed[0].1.ends_with("first reason") && listed[1].1.ends_with("second reason"), "{listed:?}");
}

/// Copies into quarantine still in progress (dot-names) are not reported as quarantined files.
#[test]
fn the_quarantine_listing_leaves_out_reason_files_and_copies_in_progress() {
    let spool = Spool::new("");
    fs::create_dir_all(&spool.config.quarantine).unwrap();
    fs::write(spool.config.quarantine.join(".x.sql.tmp"), b"").unwrap();
    fs::write(spool.config.quarantine.join("x.sql"), b"").unwrap();
    fs::write(spool.config.quarantine.join(format!("x.sql{REASON_SUFFIX}")), "x.sql\nwhy\nHINT:  what\n").unwrap();
    assert_eq!(quarantined(&spool.config), [("x.sql".to_string(), "why".to_string())]);
}

#[test]
fn an_empty_or_missing_quarantine_lists_nothing() {
    let spool = Spool::new("");
    assert!(quarantined(&spool.config).is_empty());
}

/// File `number` with `body` after the header (statements as the exporter writes them).
fn file_with_body(number: u64, body: &str) -> File {
    let header = header(number);
    let name =
        TransactionFileName { number: header.number, time: header.exported_at, xid: header.xid, compressed: false };
    File { name, bytes: format!("{}{body}", header.render()).into_bytes() }
}

const PREAMBLE: &str = "\\set ON_ERROR_STOP on\nSET client_encoding = 'UTF8';\nBEGIN;\nSET LOCAL TimeZone = 'UTC';\n";

/// A snapshot's first file starts a new stream, and the applier may jump to it; a row whose
/// text looks like that statement, or a start file that has not fully arrived, must not make
/// it skip anything.
#[test]
fn only_an_intact_snapshot_start_in_the_guards_place_starts_a_new_stream() {
    let spool = Spool::new("");
    let old = file(3);
    spool.put_file(&old);
    spool.put_manifest(&[&old]);
    let start = file_with_body(
        5,
        &format!("{PREAMBLE}SELECT dbmirror.start_stream('{SLAVE}', '{MASTER}', 5, 1005, 'x', ARRAY['\"public\".\"item\"']);\nCOMMIT;\n"),
    );
    let fake = file_with_body(
        7,
        &format!(
            "{PREAMBLE}SELECT dbmirror.guard('{SLAVE}', '{MASTER}', 7, 1007, NULL, 'x');\nCOPY \"public\".\"item\" (\"id\") FROM STDIN;\nSELECT dbmirror.start_stream(x\n\\.\nCOMMIT;\n"
        ),
    );
    spool.put_file(&fake);
    spool.put_manifest(&[&fake]);
    assert_eq!(spool.scan().stream_start_after(2), None, "a row's text is not a stream start");

    // The start's manifest has arrived, the file not yet in full.
    spool.put_manifest(&[&start]);
    spool.put_arriving(&start.name.file_name(), &start.bytes[..start.bytes.len() / 2]);
    assert_eq!(spool.scan().stream_start_after(2), None, "a start still arriving is not taken yet");
    spool.put_file(&start);
    assert_eq!(spool.scan().stream_start_after(2), Some(5));
    assert_eq!(spool.scan().stream_start_after(5), None, "an applied start starts nothing again");
}
