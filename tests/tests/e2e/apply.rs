//! The applier, end to end: export on the master, carry the files, `dbmirror-apply` on the
//! slave, compare. Every failure case checks that the slave did not change and that the file
//! was kept.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use dbmirror_tests::tools::{
    apply, apply_command, apply_config, export_config, export_once, file_names, spool_names, transaction_files,
    transfer, Running, Workdir,
};
use dbmirror_tests::{assert_tables_equal, describe, table_rows, Cluster};

use crate::export::{setup, workload, Setup, SCHEMA, TABLES};

/// An inbound spool next to the outbox, and an applier configured for it.
struct Slave {
    inbound: PathBuf,
    config: PathBuf,
}

fn slave_side(s: &Setup, extra: &str) -> Slave {
    let inbound = s.work.dir("inbound");
    let config = apply_config(&s.work, &s.slave, "slave1", &inbound, extra);
    Slave { inbound, config }
}

fn ok(output: Output) -> String {
    assert!(output.status.success(), "dbmirror-apply failed ({}):\n{}", output.status, describe(&output));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn last_applied(slave: &Cluster) -> String {
    slave.query_value("SELECT coalesce((SELECT last_number::text FROM dbmirror.slave_state), 'none')")
}

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to.join(from.file_name().unwrap())).unwrap();
}

#[test]
fn applied_files_give_an_equal_slave_and_go_to_the_archive() {
    let s = setup("");
    let slave = slave_side(&s, "");
    workload(&s.master);
    export_once(&s.config);
    transfer(&s.outbox, &slave.inbound);
    let stderr = ok(apply(&slave.config, &["once"]));
    assert!(stderr.contains("applied 5 files; last applied: 5"), "{stderr}");
    assert_tables_equal(&s.master, &s.slave, TABLES);
    assert_eq!(file_names(&slave.inbound), [".dbmirror-apply.lock"], "everything applied left the spool");
    assert_eq!(file_names(&slave.inbound.join("archive")), spool_names(&s.outbox));
    // The chain is recorded: the slave knows the checksum of the last file it applied.
    assert_eq!(s.slave.query_value("SELECT length(last_sha256)::text FROM dbmirror.slave_state"), "64");
    // Nothing more to do is fine.
    ok(apply(&slave.config, &["once"]));
}

#[test]
fn init_prepares_a_slave_and_is_harmless_twice() {
    let master = Cluster::start("master");
    master.create_extension();
    master.execute(SCHEMA);
    master.execute("SELECT dbmirror_mirror_table('item'); INSERT INTO dbmirror_MirrorHost VALUES ('slave1');");
    let slave = Cluster::start("slave");
    slave.execute(SCHEMA);
    let work = Workdir::new("init");
    let (outbox, inbound) = (work.dir("outbox"), work.dir("inbound"));
    let config = apply_config(&work, &slave, "slave1", &inbound, "");
    let not_prepared = apply(&config, &["once"]);
    assert_eq!(not_prepared.status.code(), Some(3), "{}", describe(&not_prepared));
    assert!(String::from_utf8_lossy(&not_prepared.stderr).contains("HINT:  Run dbmirror-apply init"));
    ok(apply(&config, &["init"]));
    ok(apply(&config, &["init"]));
    master.execute("INSERT INTO item (name) VALUES ('x')");
    export_once(&export_config(&work, &master, "slave1", &outbox, ""));
    transfer(&outbox, &inbound);
    ok(apply(&config, &["once"]));
    assert_tables_equal(&master, &slave, &["item"]);
}

#[test]
fn files_wait_for_their_manifest_and_for_the_end_of_their_copy() {
    let s = setup("");
    let slave = slave_side(&s, "settle_seconds = 3600");
    s.master.execute("INSERT INTO item (name) VALUES ('one')");
    export_once(&s.config);
    let file = &transaction_files(&s.outbox)[0];
    // The file without its manifest.
    copy(file, &slave.inbound);
    let stderr = ok(apply(&slave.config, &["once"]));
    assert!(stderr.contains("waiting for the manifest of file 1"), "{stderr}");
    // A half-copied file: its checksum does not match yet, and it was modified just now.
    let bytes = std::fs::read(file).unwrap();
    std::fs::write(slave.inbound.join(file.file_name().unwrap()), &bytes[..bytes.len() / 2]).unwrap();
    transfer_manifests(&s.outbox, &slave.inbound);
    let stderr = ok(apply(&slave.config, &["once"]));
    assert!(stderr.contains("file 1 is still arriving"), "{stderr}");
    assert_eq!(last_applied(&s.slave), "none");
    assert!(file_names(&slave.inbound.join("quarantine")).is_empty());
    // The copy completes.
    copy(file, &slave.inbound);
    ok(apply(&slave.config, &["once"]));
    assert_tables_equal(&s.master, &s.slave, TABLES);
}

fn transfer_manifests(from: &Path, to: &Path) {
    for name in file_names(from).iter().filter(|n| n.ends_with(".sha256")) {
        copy(&from.join(name), to);
    }
}

#[test]
fn a_gap_is_reported_and_never_skipped() {
    let s = setup("batch_size = 1");
    let slave = slave_side(&s, "");
    for i in 1..=4 {
        s.master.execute(&format!("INSERT INTO item (name) VALUES ('row {i}')"));
    }
    export_once(&s.config);
    transfer(&s.outbox, &slave.inbound);
    let second = transaction_files(&slave.inbound)[1].clone();
    let parked = s.work.path().join(second.file_name().unwrap());
    std::fs::rename(&second, &parked).unwrap();
    let stderr = ok(apply(&slave.config, &["once"]));
    assert!(stderr.contains("waiting for file 2"), "{stderr}");
    assert_eq!(last_applied(&s.slave), "1");
    let status = String::from_utf8(apply(&slave.config, &["status", "--json"]).stdout).unwrap();
    assert!(status.contains("\"gaps\": [\n    2\n  ]"), "{status}");
    std::fs::rename(&parked, &second).unwrap();
    ok(apply(&slave.config, &["once"]));
    assert_eq!(last_applied(&s.slave), "4");
    assert_tables_equal(&s.master, &s.slave, TABLES);
}

#[test]
fn a_damaged_file_goes_to_quarantine_and_a_good_copy_lets_the_applier_go_on() {
    let s = setup("");
    let slave = slave_side(&s, "settle_seconds = 0");
    s.master.execute("INSERT INTO item (name) VALUES ('one')");
    s.master.execute("INSERT INTO item (name) VALUES ('two')");
    export_once(&s.config);
    transfer(&s.outbox, &slave.inbound);
    let second = transaction_files(&slave.inbound)[1].clone();
    let mut bytes = std::fs::read(&second).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&second, &bytes).unwrap();

    let output = apply(&slave.config, &["once"]);
    assert_eq!(output.status.code(), Some(5), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("stopped at file 2"), "{stderr}");
    assert!(stderr.contains("checksum mismatch"), "{stderr}");
    assert!(stderr.contains("HINT:  Put a good copy of file 2"), "{stderr}");
    assert_eq!(last_applied(&s.slave), "1");
    assert_eq!(table_rows(&s.slave, "item"), ["(1,one,,,)"]);
    let name = second.file_name().unwrap().to_str().unwrap().to_string();
    let quarantine = slave.inbound.join("quarantine");
    assert_eq!(file_names(&quarantine), [name.clone(), format!("{name}.reason")]);
    assert_eq!(std::fs::read(quarantine.join(&name)).unwrap(), bytes, "the damaged file is kept as it was");
    let reason = std::fs::read_to_string(quarantine.join(format!("{name}.reason"))).unwrap();
    assert!(reason.contains("checksum mismatch: the manifest says sha256"), "{reason}");

    // The operator puts a good copy into the spool.
    copy(&s.outbox.join(&name), &slave.inbound);
    ok(apply(&slave.config, &["once"]));
    assert_tables_equal(&s.master, &s.slave, TABLES);
}

#[test]
fn a_file_whose_sql_fails_is_rolled_back_and_quarantined() {
    let s = setup("");
    let slave = slave_side(&s, "");
    s.master.execute("INSERT INTO item (name) VALUES ('a'), ('b')");
    s.master.execute("UPDATE item SET name = 'B' WHERE id = 2; INSERT INTO item (name) VALUES ('c');");
    export_once(&s.config);
    transfer(&s.outbox, &slave.inbound);
    // Drift: the row the second file updates is gone from the slave.
    let first = transaction_files(&slave.inbound)[0].clone();
    std::fs::rename(&first, s.work.path().join("first.sql")).unwrap();
    assert!(dbmirror_tests::tools::psql_file(&s.slave, &s.work.path().join("first.sql")).status.success());
    s.slave.execute("DELETE FROM item WHERE id = 2");
    let before = table_rows(&s.slave, "item");

    let output = apply(&slave.config, &["once"]);
    assert_eq!(output.status.code(), Some(5), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("update of \"public\".\"item\" matched 0 rows on the slave instead of 1"), "{stderr}");
    assert_eq!(table_rows(&s.slave, "item"), before, "the file's transaction was rolled back");
    assert_eq!(last_applied(&s.slave), "1");

    // The operator repairs the slave and puts the file back.
    s.slave.execute("INSERT INTO item (id, name) VALUES (2, 'b')");
    let quarantined = slave.inbound.join("quarantine").join(transaction_files(&s.outbox)[1].file_name().unwrap());
    std::fs::rename(&quarantined, slave.inbound.join(quarantined.file_name().unwrap())).unwrap();
    ok(apply(&slave.config, &["once"]));
    assert_tables_equal(&s.master, &s.slave, TABLES);
}

#[test]
fn files_for_another_slave_or_from_another_master_are_refused() {
    let s = setup("");
    s.master.execute("INSERT INTO dbmirror_MirrorHost VALUES ('slave2')");
    let outbox2 = s.work.dir("outbox2");
    s.master.execute("INSERT INTO item (name) VALUES ('one')");
    export_once(&export_config(&s.work, &s.master, "slave2", &outbox2, ""));
    let slave = slave_side(&s, "");
    transfer(&outbox2, &slave.inbound);
    let output = apply(&slave.config, &["once"]);
    assert_eq!(output.status.code(), Some(5), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("it is for slave \"slave2\", this applier serves \"slave1\"")
    );
    assert_eq!(last_applied(&s.slave), "none");

    // A pinned master refuses files from any other one.
    export_once(&s.config);
    let pinned = s.work.dir("pinned");
    transfer(&s.outbox, &pinned);
    let config = apply_config(&s.work, &s.slave, "slave1", &pinned, "master = \"42\"");
    let output = apply(&config, &["once"]);
    assert_eq!(output.status.code(), Some(5), "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("this slave follows master 42"), "{}", describe(&output));
    assert_eq!(last_applied(&s.slave), "none");
}

#[test]
fn files_arriving_twice_are_set_aside_without_effect() {
    let s = setup("");
    let slave = slave_side(&s, "");
    workload(&s.master);
    export_once(&s.config);
    transfer(&s.outbox, &slave.inbound);
    ok(apply(&slave.config, &["once"]));
    let before = table_rows(&s.slave, "item");
    transfer(&s.outbox, &slave.inbound);
    ok(apply(&slave.config, &["once"]));
    assert_eq!(table_rows(&s.slave, "item"), before);
    assert_eq!(last_applied(&s.slave), "5");
    let archived = file_names(&slave.inbound.join("archive"));
    assert_eq!(archived.len(), 2 * spool_names(&s.outbox).len(), "both copies are kept: {archived:?}");
}

#[test]
fn compressed_files_are_applied_as_they_stream() {
    let s = setup("compression = \"zstd\"");
    let slave = slave_side(&s, "");
    workload(&s.master);
    export_once(&s.config);
    transfer(&s.outbox, &slave.inbound);
    ok(apply(&slave.config, &["once"]));
    assert_tables_equal(&s.master, &s.slave, TABLES);
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn watch_applies_files_as_they_arrive_survives_a_slave_restart_and_stops_on_sigterm() {
    let s = setup("");
    let slave = slave_side(&s, "poll_interval = 0.5");
    let watcher = Running::start(apply_command(&slave.config, &["watch"]).stderr(Stdio::piped()));
    s.master.execute("INSERT INTO item (name) VALUES ('one')");
    export_once(&s.config);
    transfer(&s.outbox, &slave.inbound);
    wait_for("file 1", || last_applied(&s.slave) == "1");

    // A second applier on the same spool is refused while this one runs.
    let second = apply(&slave.config, &["once"]);
    assert_eq!(second.status.code(), Some(4), "{}", describe(&second));

    // The slave goes down; files arrive meanwhile; it comes back.
    s.slave.crash();
    s.master.execute("INSERT INTO item (name) VALUES ('two')");
    export_once(&s.config);
    transfer(&s.outbox, &slave.inbound);
    std::thread::sleep(Duration::from_secs(2));
    s.slave.restart();
    wait_for("file 2", || last_applied(&s.slave) == "2");

    let output = watcher.terminate();
    assert!(output.status.success(), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("retrying in"), "the lost connection is reported: {stderr}");
    assert!(stderr.contains("stopping on signal"), "{stderr}");
    assert_tables_equal(&s.master, &s.slave, TABLES);
}

/// kill -9 in the middle of applying a large file, then again: the file is applied once.
#[test]
fn a_killed_applier_loses_nothing_and_applies_nothing_twice() {
    let s = setup("");
    let slave = slave_side(&s, "");
    s.master.execute("INSERT INTO item (name, price) SELECT 'bulk ' || g, g FROM generate_series(1, 300000) g");
    s.master.execute("UPDATE item SET price = price + 1 WHERE id <= 1000");
    export_once(&s.config);
    transfer(&s.outbox, &slave.inbound);
    let child = apply_command(&slave.config, &["once"]).stderr(Stdio::null()).spawn().unwrap();
    // Kill it once the COPY is under way.
    wait_for("the COPY to start", || {
        s.slave.query_value("SELECT count(*)::text FROM pg_stat_activity WHERE query LIKE 'COPY%' AND application_name = 'dbmirror-apply'") == "1"
    });
    assert!(Command::new("kill").args(["-KILL", &child.id().to_string()]).status().unwrap().success());
    let _ = child.wait_with_output();
    assert_eq!(last_applied(&s.slave), "none");
    ok(apply(&slave.config, &["once"]));
    assert_eq!(last_applied(&s.slave), "2");
    assert_tables_equal(&s.master, &s.slave, TABLES);
}

#[test]
fn status_reports_the_state_of_slave_and_spool() {
    let s = setup("");
    let slave = slave_side(&s, "");
    s.master.execute("INSERT INTO item (name) VALUES ('one')");
    export_once(&s.config);
    transfer(&s.outbox, &slave.inbound);
    let text = String::from_utf8(apply(&slave.config, &["status"]).stdout).unwrap();
    assert!(text.contains("last applied:  none yet"), "{text}");
    assert!(text.contains("in the spool:  1 files, 1 manifests"), "{text}");
    ok(apply(&slave.config, &["once"]));
    let text = String::from_utf8(apply(&slave.config, &["status"]).stdout).unwrap();
    assert!(text.contains("last applied:  file 1 (master transaction"), "{text}");
    assert!(text.contains("next file:     2"), "{text}");
}

/// A file rewritten as dbmirror-export wrote it before: its guard cut to its first `arguments`
/// (five before the guard took the export time, six before it took the commit time; the
/// arguments cut are literals), and without the shape checks files lacked then. Such files are
/// in the field and must keep working.
fn as_written_before(sql: &str, arguments: usize, shape_checks: bool) -> String {
    sql.lines()
        .filter(|line| shape_checks || !line.starts_with("SELECT dbmirror.check_table("))
        .map(|line| match line.strip_prefix("SELECT dbmirror.guard(") {
            Some(_) => {
                let mut cut = line.len() - ");".len();
                for _ in arguments..7 {
                    cut = line[..cut].rfind(", '").expect("the guard's last arguments are literals");
                }
                format!("{});\n", &line[..cut])
            }
            None => format!("{line}\n"),
        })
        .collect()
}

/// A master with `item` mirrored for slave1 and three transactions exported from it, and a
/// slave prepared by the earlier version's setup script `fixture`. Returns the master, the
/// slave, the work directory, the inbound spool and the exported files.
fn slave_of_an_earlier_version(fixture: &str, name: &str) -> (Cluster, Cluster, Workdir, PathBuf, Vec<PathBuf>) {
    let master = Cluster::start("master");
    master.create_extension();
    master.execute(SCHEMA);
    master.execute("SELECT dbmirror_mirror_table('item'); INSERT INTO dbmirror_MirrorHost VALUES ('slave1');");
    let slave = Cluster::start("slave");
    slave.execute(SCHEMA);
    let old_setup = dbmirror_tests::repository().join("tests/fixtures").join(fixture);
    let output = slave.psql(&["-v", "ON_ERROR_STOP=1", "-f", &old_setup.display().to_string()]);
    assert!(output.status.success(), "{}", describe(&output));
    let work = Workdir::new(name);
    let (outbox, inbound) = (work.dir("outbox"), work.dir("inbound"));
    for name in ["one", "two", "three"] {
        master.execute(&format!("INSERT INTO item (name) VALUES ('{name}')"));
    }
    export_once(&export_config(&work, &master, "slave1", &outbox, ""));
    let files = transaction_files(&outbox);
    transfer(&outbox, &inbound);
    (master, slave, work, inbound, files)
}

/// Regression test: a slave prepared by an earlier version (no history of applied files, a
/// guard of five arguments) is upgraded in place by `init`; until then the applier stops with
/// exit code 3 and a hint instead of quarantining files whose guard the slave lacks. Files of
/// the earlier format still apply, by hand or with the applier.
#[test]
fn a_slave_prepared_by_an_earlier_version_is_upgraded_in_place_and_old_files_still_apply() {
    let (master, slave, work, inbound, files) =
        slave_of_an_earlier_version("slave_setup-before-history.sql", "upgrade");
    let old_format = |i: usize| {
        let path = work.path().join(format!("old-format-{i}.sql"));
        std::fs::write(&path, as_written_before(&std::fs::read_to_string(&files[i]).unwrap(), 5, false)).unwrap();
        path
    };
    // File 1 as an earlier exporter wrote it, applied by hand on the slave as it was.
    let output = dbmirror_tests::tools::psql_file(&slave, &old_format(0));
    assert!(output.status.success(), "{}", describe(&output));

    let config = apply_config(&work, &slave, "slave1", &inbound, "");
    let outdated = apply(&config, &["once"]);
    assert_eq!(outdated.status.code(), Some(3), "{}", describe(&outdated));
    assert!(
        String::from_utf8_lossy(&outdated.stderr).contains("HINT:  Run dbmirror-apply init"),
        "{}",
        describe(&outdated)
    );
    assert!(file_names(&inbound.join("quarantine")).is_empty());

    ok(apply(&config, &["init"]));
    ok(apply(&config, &["init"]));
    // The upgrade kept what the slave knew: file 1 again is "already applied", in either format.
    for again in [old_format(0), files[0].clone()] {
        let output = dbmirror_tests::tools::psql_file(&slave, &again);
        assert!(String::from_utf8_lossy(&output.stderr).contains("was already applied"), "{}", describe(&output));
    }
    // File 2 in the earlier format by hand, then the applier: the genuine file 2 in the spool is
    // the same transaction (set aside), and file 3 is applied.
    let output = dbmirror_tests::tools::psql_file(&slave, &old_format(1));
    assert!(output.status.success(), "{}", describe(&output));
    let stderr = ok(apply(&config, &["once"]));
    assert!(stderr.contains("applied 1 files; last applied: 3"), "{stderr}");
    assert!(file_names(&inbound.join("quarantine")).is_empty());
    assert_tables_equal(&master, &slave, &["item"]);
}

/// Regression test: a slave prepared before the guard took the master's commit time (a guard
/// of six arguments) is upgraded in place by `init`, which must replace that guard (beside the
/// new one, whose seventh argument has a default, a six-argument call would be ambiguous); files
/// written then, with six arguments, still apply, and record no commit time.
#[test]
fn a_slave_prepared_before_commit_times_is_upgraded_and_six_argument_files_still_apply() {
    let (master, slave, work, inbound, files) =
        slave_of_an_earlier_version("slave_setup-before-commit-time.sql", "upgrade-commit-time");
    let six_arguments = |i: usize| {
        let path = work.path().join(format!("six-arguments-{i}.sql"));
        std::fs::write(&path, as_written_before(&std::fs::read_to_string(&files[i]).unwrap(), 6, true)).unwrap();
        path
    };
    let output = dbmirror_tests::tools::psql_file(&slave, &six_arguments(0));
    assert!(output.status.success(), "{}", describe(&output));

    let config = apply_config(&work, &slave, "slave1", &inbound, "");
    let outdated = apply(&config, &["once"]);
    assert_eq!(outdated.status.code(), Some(3), "{}", describe(&outdated));
    ok(apply(&config, &["init"]));
    ok(apply(&config, &["init"]));
    let output = dbmirror_tests::tools::psql_file(&slave, &six_arguments(1));
    assert!(output.status.success(), "{}", describe(&output));
    let stderr = ok(apply(&config, &["once"]));
    assert!(stderr.contains("applied 1 files; last applied: 3"), "{stderr}");
    assert_eq!(
        slave.query_value(
            "SELECT string_agg(format('%s %s', number, committed_at IS NOT NULL), ', ' ORDER BY number) \
               FROM dbmirror.applied_file"
        ),
        "1 f, 2 f, 3 t"
    );
    assert_tables_equal(&master, &slave, &["item"]);
}

/// Regression test: an archive or quarantine on another file system than the spool was
/// accepted, the first file applied, and every later run failed with "Invalid cross-device
/// link". Files now move across file systems (copied, synced, renamed into place, then
/// removed), and an archive or quarantine that is the spool, or each other, is refused at start.
#[test]
fn archive_and_quarantine_on_another_file_system_work_and_overlapping_places_are_refused() {
    let s = setup("");
    let elsewhere = s.work.path().join("elsewhere");
    let _tmpfs = dbmirror_tests::tools::Tmpfs::mount(&elsewhere, "16m");
    let (archive, quarantine) = (elsewhere.join("archive"), elsewhere.join("quarantine"));
    let slave = slave_side(
        &s,
        &format!("archive = \"{}\"\nquarantine = \"{}\"\nsettle_seconds = 0", archive.display(), quarantine.display()),
    );
    workload(&s.master);
    export_once(&s.config);
    transfer(&s.outbox, &slave.inbound);
    let stderr = ok(apply(&slave.config, &["once"]));
    assert!(stderr.contains("applied 5 files; last applied: 5"), "{stderr}");
    assert_eq!(file_names(&archive), spool_names(&s.outbox), "every file and manifest archived, none left half-copied");
    assert_eq!(file_names(&slave.inbound), [".dbmirror-apply.lock"]);
    for name in spool_names(&s.outbox) {
        assert_eq!(std::fs::read(archive.join(&name)).unwrap(), std::fs::read(s.outbox.join(&name)).unwrap());
    }

    // A damaged file goes to quarantine on the other file system, and a good copy goes on.
    for name in file_names(&s.outbox) {
        std::fs::remove_file(s.outbox.join(name)).unwrap();
    }
    s.master.execute("INSERT INTO item (name) VALUES ('six')");
    export_once(&s.config);
    transfer(&s.outbox, &slave.inbound);
    let sixth = transaction_files(&slave.inbound)[0].clone();
    let name = sixth.file_name().unwrap().to_str().unwrap().to_string();
    std::fs::write(&sixth, "damaged").unwrap();
    let output = apply(&slave.config, &["once"]);
    assert_eq!(output.status.code(), Some(5), "{}", describe(&output));
    assert_eq!(file_names(&quarantine), [name.clone(), format!("{name}.reason")]);
    assert_eq!(std::fs::read_to_string(quarantine.join(&name)).unwrap(), "damaged");
    copy(&s.outbox.join(&name), &slave.inbound);
    ok(apply(&slave.config, &["once"]));
    assert_eq!(last_applied(&s.slave), "6");
    assert_tables_equal(&s.master, &s.slave, TABLES);

    // Places that overlap are refused before anything is done.
    let spool = slave.inbound.display().to_string();
    for (extra, message) in [
        (format!("archive = \"{spool}/.\""), "archive must not be the spool"),
        (format!("quarantine = \"{spool}\""), "quarantine must not be the spool"),
        (
            format!("archive = \"{0}\"\nquarantine = \"{0}/../archive\"", archive.display()),
            "archive and quarantine must be different directories",
        ),
        (format!("archive = \"{spool}/.dbmirror-apply.lock\""), "is not a directory"),
    ] {
        let config = apply_config(&s.work, &s.slave, "slave1", &slave.inbound, &extra);
        let output = apply(&config, &["once"]);
        assert_eq!(output.status.code(), Some(2), "{extra}\n{}", describe(&output));
        assert!(String::from_utf8_lossy(&output.stderr).contains(message), "{message:?}\n{}", describe(&output));
    }
}

/// The applier's log: each failure's time and the pause it announced ("retrying in Ns").
fn announced_retries(log: &str) -> Vec<(f64, u64)> {
    let mut at = 0.0;
    let mut retries = Vec::new();
    for line in log.lines() {
        if let Some(time) = line.split(' ').next().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()) {
            at = time.timestamp_micros() as f64 / 1e6;
        }
        if let Some(rest) = line.split("; retrying in ").nth(1) {
            retries.push((at, rest.trim_end_matches("s)").parse().expect("a number of seconds")));
        }
    }
    retries
}

/// Regression test: a failure that retrying may cure was retried every few hundred
/// milliseconds while the log said "retrying in 64s", because file-system events (the
/// applier's own reads and moves among them) ended the pause. During a retry pause only a
/// stop signal ends the wait now; and when idle, the applier's own reads of the spool do not
/// start pass after pass.
#[test]
fn watch_keeps_the_retry_pause_it_announces_and_its_own_reads_do_not_wake_it() {
    let s = setup("");
    let slave = slave_side(&s, "poll_interval = 30");
    s.master.execute("INSERT INTO item (name) VALUES ('one')");
    export_once(&s.config);
    s.slave.execute("ALTER SYSTEM SET log_statement = 'all'");
    s.slave.execute("SELECT pg_reload_conf()");
    // For the applier's sessions: a statement waiting for a lock fails soon, and may be retried.
    s.slave.execute("ALTER ROLE postgres SET statement_timeout = '300ms'");
    let file = transaction_files(&s.outbox)[0].clone();
    copy(&file, &slave.inbound);
    let log = s.work.path().join("watch.log");
    let watcher = Running::start(apply_command(&slave.config, &["watch"]).stderr(std::fs::File::create(&log).unwrap()));
    let said = || std::fs::read_to_string(&log).unwrap();
    wait_for("the applier to wait for the manifest", || said().contains("waiting for the manifest of file 1"));
    let passes = || s.slave.server_log().matches("FROM dbmirror.slave_state WHERE slave_name").count();
    let before = passes();
    std::thread::sleep(Duration::from_secs(3));
    let idle_passes = passes() - before;
    assert!(idle_passes <= 1, "{idle_passes} passes in 3 s while idle with poll_interval = 30");

    // Every attempt to apply file 1 now times out: a failure that retrying may cure.
    let mut locker = s.slave.client();
    locker.batch_execute("BEGIN; LOCK TABLE item IN ACCESS EXCLUSIVE MODE").unwrap();
    transfer_manifests(&s.outbox, &slave.inbound);
    wait_for("the first failure", || said().contains("(attempt 1; retrying in 2s)"));
    // Events keep coming meanwhile: only the announced pause may pass before the next attempt.
    let until = Instant::now() + Duration::from_secs(8);
    let mut n = 0;
    while Instant::now() < until {
        n += 1;
        std::fs::write(slave.inbound.join("notes.txt"), format!("event {n}")).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let stopping = Instant::now();
    let output = watcher.terminate();
    assert!(stopping.elapsed() < Duration::from_secs(3), "a stop signal ends the pause at once");
    assert!(output.status.success(), "{}", said());
    let log_text = said();
    assert!(log_text.contains("stopping on signal"), "{log_text}");
    let retries = announced_retries(&log_text);
    assert!((2..=4).contains(&retries.len()), "{} attempts in 8 s, expected 3:\n{log_text}", retries.len());
    for pair in retries.windows(2) {
        let ((first, pause), (next, _)) = (pair[0], pair[1]);
        assert!(next - first >= pause as f64, "retried after {:.2} s, announced {pause} s:\n{log_text}", next - first);
    }

    locker.batch_execute("COMMIT").unwrap();
    s.slave.execute("ALTER ROLE postgres RESET statement_timeout");
    std::fs::remove_file(slave.inbound.join("notes.txt")).unwrap();
    ok(apply(&slave.config, &["once"]));
    assert_tables_equal(&s.master, &s.slave, TABLES);
}

/// Regression test: `settle_seconds = 1e30` made the applier panic (exit code 101, with a
/// backtrace when RUST_BACKTRACE is set). Every configuration value of both tools is checked,
/// and a bad one is refused with exit code 2 and a message that names it.
#[test]
fn extreme_configuration_values_are_refused_with_a_message_not_a_panic() {
    let s = setup("");
    let inbound = s.work.dir("inbound");
    let applier_cases = [
        ("settle_seconds = 1e30", "settle_seconds must be"),
        ("settle_seconds = nan", "settle_seconds must be"),
        ("poll_interval = 1e-300", "poll_interval must be"),
        ("poll_interval = inf", "poll_interval must be"),
        ("master = \"-1\"", "master must be a system identifier"),
    ];
    for (extra, message) in applier_cases {
        let config = apply_config(&s.work, &s.slave, "slave1", &inbound, extra);
        let output = apply_command(&config, &["once"]).env("RUST_BACKTRACE", "1").output().unwrap();
        check_refused(&output, extra, message);
    }
    let exporter_cases = [
        ("sleep_interval = 1e30", "sleep_interval must be"),
        ("sleep_interval = 1e-300", "sleep_interval must be"),
        ("batch_size = 9223372036854775807", "batch_size must be"),
    ];
    for (extra, message) in exporter_cases {
        let config = export_config(&s.work, &s.master, "slave1", &s.outbox, extra);
        let output =
            dbmirror_tests::tools::export_command(&config, &["once"]).env("RUST_BACKTRACE", "1").output().unwrap();
        check_refused(&output, extra, message);
    }
}

fn check_refused(output: &Output, what: &str, message: &str) {
    assert_eq!(output.status.code(), Some(2), "{what}\n{}", describe(output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(message), "{what}: {message:?} not in\n{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "{what}\n{stderr}");
}

/// Regression test: when a statement failed on the slave, the message said "one of the
/// statements on lines X to Y" (statements are sent in batches), and the HINT asked for "a good
/// copy" of a file that was intact. The message names the failing statement and its line, and
/// the HINT says to fix the slave and move the file back.
#[test]
fn a_failing_statement_is_named_by_its_line_and_the_hint_says_to_repair_the_slave() {
    let s = setup("");
    let slave = slave_side(&s, "");
    s.master.execute("INSERT INTO item (name) SELECT 'row ' || g FROM generate_series(1, 200) g");
    s.master.execute("UPDATE item SET price = id");
    export_once(&s.config);
    transfer(&s.outbox, &slave.inbound);
    let second = transaction_files(&slave.inbound)[1].clone();
    let name = second.file_name().unwrap().to_str().unwrap().to_string();
    let line = std::fs::read_to_string(&second)
        .unwrap()
        .lines()
        .position(|l| l.contains("WHERE \"id\" = '150' RETURNING"))
        .expect("the update of row 150")
        + 1;
    let first = transaction_files(&slave.inbound)[0].clone();
    assert!(dbmirror_tests::tools::psql_file(&s.slave, &first).status.success());
    std::fs::rename(&first, s.work.path().join("first.sql")).unwrap();
    s.slave.execute("DELETE FROM item WHERE id = 150");

    let output = apply(&slave.config, &["once"]);
    assert_eq!(output.status.code(), Some(5), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("line {line}: error: update of \"public\".\"item\" matched 0 rows")),
        "line {line}:\n{stderr}"
    );
    assert!(
        stderr.contains(
            "STATEMENT:  WITH m AS (UPDATE ONLY \"public\".\"item\" SET \"price\" = '150.00' WHERE \"id\" = '150'"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("one of the statements"), "{stderr}");
    assert!(!stderr.contains("Put a good copy"), "{stderr}");
    assert!(stderr.contains("HINT:  The file is intact"), "{stderr}");
    assert!(stderr.contains("then move it from quarantine back into the spool"), "{stderr}");
    let reason = std::fs::read_to_string(slave.inbound.join("quarantine").join(format!("{name}.reason"))).unwrap();
    assert!(reason.contains(&format!("line {line}:")) && !reason.contains("good copy"), "{reason}");
    assert_eq!(last_applied(&s.slave), "1");
    assert_eq!(s.slave.query_value("SELECT count(*)::text FROM item WHERE price IS NOT NULL"), "0", "rolled back");
}
