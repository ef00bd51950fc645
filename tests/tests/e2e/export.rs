//! The exporter and the spool format, end to end: master, export, transfer, `psql -f` on the
//! slave, compare.

use std::path::{Path, PathBuf};
use std::process::Command;

use dbmirror_tests::tools::{
    apply, apply_config, export_command, export_config, export_once, psql_file, replay_by_hand, transaction_files,
    transfer, Running, Workdir, EXPORT_CRASH_AT, EXPORT_FAULTS_HINT,
};
use dbmirror_tests::{assert_tables_equal, describe, table_rows, Cluster};

pub const SCHEMA: &str = r#"
    CREATE TABLE item (id serial PRIMARY KEY, name text, price numeric(10,2), tags text[], seen timestamptz);
    CREATE TABLE "Order Line" ("Order" integer, "Line" integer, item integer REFERENCES item, qty integer,
                               PRIMARY KEY ("Order", "Line"));
"#;
pub const TABLES: &[&str] = &["item", r#""Order Line""#];

pub struct Setup {
    pub master: Cluster,
    pub slave: Cluster,
    pub work: Workdir,
    pub outbox: PathBuf,
    pub config: PathBuf,
}

/// A master with the extension, the schema mirrored and slave `slave1` registered; a slave
/// with the schema, prepared by hand with sql/slave_setup.sql.
pub fn setup(extra_config: &str) -> Setup {
    let master = Cluster::start("master");
    master.create_extension();
    master.execute(SCHEMA);
    for table in TABLES {
        master.execute(&format!("SELECT dbmirror_mirror_table('{}')", table.replace('\'', "''")));
    }
    master.execute("INSERT INTO dbmirror_MirrorHost (SlaveName) VALUES ('slave1')");
    let slave = Cluster::start("slave");
    slave.execute(SCHEMA);
    slave.slave_setup();
    let work = Workdir::new("export");
    let outbox = work.dir("outbox");
    let config = export_config(&work, &master, "slave1", &outbox, extra_config);
    Setup { master, slave, work, outbox, config }
}

impl Setup {
    /// Exports everything pending, carries the outbox to a fresh inbound spool, applies it
    /// with `dbmirror-apply once`, and checks that the slave equals the master.
    pub fn export_and_apply_everything(&self) {
        export_once(&self.config);
        let inbound = self.work.dir("inbound");
        transfer(&self.outbox, &inbound);
        let output = apply(&apply_config(&self.work, &self.slave, "slave1", &inbound, ""), &["once"]);
        assert!(output.status.success(), "{}", describe(&output));
        assert_tables_equal(&self.master, &self.slave, TABLES);
    }
}

/// A few transactions touching every kind of change.
pub fn workload(master: &Cluster) {
    master.execute("INSERT INTO item (name, price, tags, seen) VALUES ('first', 1.5, '{a,b}', '2026-01-01 00:00+00')");
    master.execute(
        "BEGIN;
         INSERT INTO item (name, price) SELECT 'bulk ' || g, g FROM generate_series(1, 50) g;
         INSERT INTO \"Order Line\" VALUES (1, 1, 1, 3), (1, 2, 2, 1);
         COMMIT;",
    );
    master.execute(
        "BEGIN;
         UPDATE item SET price = price * 2, tags = NULL WHERE id <= 10;
         UPDATE \"Order Line\" SET \"Line\" = 3 WHERE \"Order\" = 1 AND \"Line\" = 2;
         DELETE FROM item WHERE id BETWEEN 40 AND 45;
         COMMIT;",
    );
    master.execute("UPDATE item SET name = E'tab\\there, quote '' and \\\\ backslash\\nnewline' WHERE id = 3");
    master.execute("BEGIN; TRUNCATE \"Order Line\"; INSERT INTO \"Order Line\" VALUES (2, 1, 3, 9); COMMIT;");
}

#[test]
fn exported_files_replayed_by_hand_give_an_equal_slave() {
    let s = setup("");
    workload(&s.master);
    export_once(&s.config);

    let files = transaction_files(&s.outbox);
    assert_eq!(files.len(), 5, "one file per master transaction");
    for (i, file) in files.iter().enumerate() {
        let name = file.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with(&format!("{:020}_", i + 1)), "{name}");
    }
    // Manifests are checked by standard tools, as they are.
    let check =
        Command::new("sh").arg("-c").arg("sha256sum -c --strict *.sha256").current_dir(&s.outbox).output().unwrap();
    assert!(check.status.success(), "sha256sum -c --strict failed:\n{}", describe(&check));

    assert_eq!(replay_by_hand(&s.slave, &s.outbox), 5);
    assert_tables_equal(&s.master, &s.slave, TABLES);
    // The slave's sequence is never behind the values used in replicated rows.
    assert_eq!(s.slave.query_value("SELECT last_value::text FROM item_id_seq"), "51");
    // Everything every slave has is purged from the master.
    assert_eq!(s.master.query_value("SELECT count(*)::text FROM dbmirror_pending"), "0");
    assert_eq!(s.master.query_value("SELECT count(*)::text FROM dbmirror_pendingdata"), "0");
}

#[test]
fn a_file_applied_twice_or_out_of_order_changes_nothing_and_says_why() {
    let s = setup("");
    for i in 1..=3 {
        s.master.execute(&format!("INSERT INTO item (name) VALUES ('row {i}')"));
    }
    export_once(&s.config);
    let files = transaction_files(&s.outbox);
    assert_eq!(files.len(), 3);

    assert!(psql_file(&s.slave, &files[0]).status.success());
    let before = table_rows(&s.slave, "item");
    for (file, message) in [
        (&files[0], "file 1 for slave \"slave1\" was already applied (last applied: 1)"),
        (&files[2], "file 3 for slave \"slave1\" is out of order: the next file is 2"),
    ] {
        let output = psql_file(&s.slave, file);
        assert!(!output.status.success(), "psql should fail for {}", file.display());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(message), "{stderr}");
        assert_eq!(table_rows(&s.slave, "item"), before, "the slave must not change");
    }
    assert!(psql_file(&s.slave, &files[1]).status.success());
    assert!(psql_file(&s.slave, &files[2]).status.success());
    assert_tables_equal(&s.master, &s.slave, TABLES);
}

#[test]
fn an_update_that_finds_no_row_on_the_slave_fails_the_file() {
    let s = setup("");
    s.master.execute("INSERT INTO item (name) VALUES ('a'), ('b')");
    s.master.execute("UPDATE item SET name = 'changed' WHERE id = 2; INSERT INTO item (name) VALUES ('c');");
    export_once(&s.config);
    let files = transaction_files(&s.outbox);
    assert!(psql_file(&s.slave, &files[0]).status.success());
    // Drift: someone removed the row on the slave.
    s.slave.execute("DELETE FROM item WHERE id = 2");
    let output = psql_file(&s.slave, &files[1]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("update of \"public\".\"item\" matched 0 rows on the slave instead of 1"), "{stderr}");
    // Nothing of the file stayed: not the insert, not the guard's record.
    assert_eq!(table_rows(&s.slave, "item"), ["(1,a,,,)"]);
    assert_eq!(s.slave.query_value("SELECT last_number::text FROM dbmirror.slave_state"), "1");
}

#[test]
fn each_slave_has_its_own_numbering_and_pending_rows_stay_until_all_have_them() {
    let s = setup("");
    s.master.execute("INSERT INTO dbmirror_MirrorHost (SlaveName) VALUES ('slave2')");
    let outbox2 = s.work.dir("outbox2");
    let config2 = export_config(&s.work, &s.master, "slave2", &outbox2, "");
    s.master.execute("INSERT INTO item (name) VALUES ('one')");
    export_once(&s.config);
    assert_eq!(s.master.query_value("SELECT count(*)::text FROM dbmirror_pending"), "1", "slave2 has not been sent it");
    s.master.execute("INSERT INTO item (name) VALUES ('two')");
    export_once(&s.config);
    export_once(&config2);
    assert_eq!(s.master.query_value("SELECT count(*)::text FROM dbmirror_pending"), "0");
    let names = |dir: &Path| -> Vec<String> {
        transaction_files(dir).iter().map(|f| f.file_name().unwrap().to_str().unwrap()[..20].to_string()).collect()
    };
    assert_eq!(names(&s.outbox), [format!("{:020}", 1), format!("{:020}", 2)]);
    assert_eq!(names(&outbox2), [format!("{:020}", 1), format!("{:020}", 2)]);

    let slave2 = Cluster::start("slave2");
    slave2.execute(SCHEMA);
    slave2.slave_setup();
    replay_by_hand(&slave2, &outbox2);
    assert_tables_equal(&s.master, &slave2, TABLES);
}

#[test]
fn clean_purges_what_a_removed_slave_held_back() {
    let s = setup("");
    s.master.execute("INSERT INTO dbmirror_MirrorHost (SlaveName) VALUES ('gone')");
    s.master.execute("INSERT INTO item (name) VALUES ('one')");
    export_once(&s.config);
    assert_eq!(s.master.query_value("SELECT count(*)::text FROM dbmirror_pending"), "1");
    let clean = || export_command(&s.config, &["clean"]).output().unwrap();
    assert!(clean().status.success());
    assert_eq!(s.master.query_value("SELECT count(*)::text FROM dbmirror_pending"), "1", "slave 'gone' still needs it");
    s.master.execute("DELETE FROM dbmirror_MirrorHost WHERE SlaveName = 'gone'");
    let output = clean();
    assert!(output.status.success(), "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("purged 1 transactions"), "{}", describe(&output));
    assert_eq!(s.master.query_value("SELECT count(*)::text FROM dbmirror_pending"), "0");
    assert_eq!(s.master.query_value("SELECT dbmirror_clean()::text"), "0");
}

#[test]
fn compressed_files_carry_the_same_sql() {
    let s = setup("compression = \"zstd\"");
    workload(&s.master);
    export_once(&s.config);
    let files = transaction_files(&s.outbox);
    assert!(files.iter().all(|f| f.to_str().unwrap().ends_with(".sql.zst")), "{files:?}");
    for file in &files {
        let plain = s.work.path().join("plain.sql");
        let unzstd =
            Command::new("zstd").args(["-q", "-d", "-f", "-o"]).arg(&plain).arg(file).output().expect("zstd runs");
        assert!(unzstd.status.success(), "{}", describe(&unzstd));
        assert!(psql_file(&s.slave, &plain).status.success());
    }
    assert_tables_equal(&s.master, &s.slave, TABLES);
}

#[test]
fn direct_mode_applies_each_transaction_once() {
    let s = setup("");
    let config = s.work.file(
        "direct.toml",
        &format!("slave_name = \"slave1\"\nmaster = \"{}\"\nslave = \"{}\"\n", s.master.conninfo(), s.slave.conninfo()),
    );
    workload(&s.master);
    export_once(&config);
    assert_tables_equal(&s.master, &s.slave, TABLES);
    s.master.execute("INSERT INTO item (name) VALUES ('later')");
    export_once(&config);
    assert_tables_equal(&s.master, &s.slave, TABLES);
    assert_eq!(s.slave.query_value("SELECT last_number::text FROM dbmirror.slave_state"), "6");
    assert_eq!(s.master.query_value("SELECT count(*)::text FROM dbmirror_pending"), "0");
}

/// Regression test: in direct mode a transaction the slave refused (it drifted) was taken for a
/// passing failure and retried forever, every later transaction waiting behind it.
#[test]
fn direct_mode_stops_at_a_transaction_the_slave_refuses() {
    let s = setup("");
    let config = s.work.file(
        "direct.toml",
        &format!("slave_name = \"slave1\"\nmaster = \"{}\"\nslave = \"{}\"\n", s.master.conninfo(), s.slave.conninfo()),
    );
    s.master.execute("INSERT INTO item (id, name) VALUES (1, 'a')");
    export_once(&config);
    s.slave.execute("DELETE FROM item");
    s.master.execute("UPDATE item SET name = 'b'");
    let output = export_command(&config, &["run"]).output().unwrap();
    assert_eq!(output.status.code(), Some(5), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("could not be applied to the slave"), "{stderr}");
    assert!(stderr.contains("matched 0 rows"), "{stderr}");
    assert!(stderr.contains("HINT:  Nothing of it was applied."), "{stderr}");
    assert!(!stderr.contains("retrying"), "{stderr}");
}

#[test]
fn the_exporter_refuses_an_unprepared_master_or_unknown_slave_with_a_hint() {
    let s = setup("");
    let unknown = export_config(&s.work, &s.master, "nobody", &s.outbox, "");
    let output = export_command(&unknown, &["once"]).output().unwrap();
    assert_eq!(output.status.code(), Some(3), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("slave \"nobody\" is not in dbmirror_MirrorHost"), "{stderr}");
    assert!(
        stderr.contains(
            "HINT:  Register it on the master: INSERT INTO dbmirror_MirrorHost (SlaveName) VALUES ('nobody');"
        ),
        "{stderr}"
    );

    let bare = Cluster::start("bare");
    let config = export_config(&s.work, &bare, "slave1", &s.outbox, "");
    let output = export_command(&config, &["once"]).output().unwrap();
    assert_eq!(output.status.code(), Some(3), "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("extension \"dbmirror\" is not installed"));

    let bad = s.work.file("bad.toml", "slave_name = 1\n");
    let output = export_command(&bad, &["once"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
}

/// Kills the exporter at each injected point of a batch, of the first batch and of the second
/// (which overlaps the first: it is assigned and written while the first is made durable),
/// restarts it, and checks that nothing is lost and that no file number ever had two different
/// contents, even when the files written before the crash were carried off before the restart.
#[test]
fn a_crash_at_any_point_loses_nothing_and_never_changes_a_written_file() {
    let points = ["after-assign", "before-rename", "after-rename", "after-manifest", "before-mark-written"];
    for point in points.iter().flat_map(|point| [point.to_string(), format!("{point}#2")]) {
        let point = point.as_str();
        let s = setup("batch_size = 3");
        workload(&s.master);
        let crashed = export_command(&s.config, &["once"]).env(EXPORT_CRASH_AT, point).output().unwrap();
        assert!(!crashed.status.success(), "{point}: the exporter did not crash. {EXPORT_FAULTS_HINT}");
        assert!(
            String::from_utf8_lossy(&crashed.stderr)
                .contains(&format!("crashing at injected point {}", point.split('#').next().unwrap())),
            "{point}: the exporter failed, but not at the injected point:\n{}",
            describe(&crashed)
        );
        // The transfer runs while the exporter is down, and empties the outbox.
        let inbound = s.work.dir("inbound");
        let carried: Vec<(PathBuf, Vec<u8>)> =
            transaction_files(&s.outbox).into_iter().map(|f| (f.clone(), std::fs::read(&f).unwrap())).collect();
        transfer(&s.outbox, &inbound);
        for (file, _) in &carried {
            std::fs::remove_file(file).unwrap();
        }
        export_once(&s.config);
        for (file, bytes) in &carried {
            if let Ok(again) = std::fs::read(file) {
                assert_eq!(&again, bytes, "{point}: {} was written twice with different content", file.display());
            }
        }
        transfer(&s.outbox, &inbound);
        let applied = replay_by_hand(&s.slave, &inbound);
        assert_eq!(applied, 5, "{point}: every transaction exactly once");
        assert_tables_equal(&s.master, &s.slave, TABLES);
        let tmp = std::fs::read_dir(&s.outbox)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().to_string_lossy().ends_with(".tmp"))
            .count();
        assert_eq!(tmp, 0, "{point}: no temporary file is left behind");
    }
}

/// Regression guard for the seed's ordering by transaction id: the transaction with the lower
/// xid commits last, after changing the same row, and must be applied last.
#[test]
fn conflicting_transactions_apply_in_commit_order_not_xid_order() {
    let s = setup("");
    s.master.execute("INSERT INTO item (name) VALUES ('start')");
    let mut older = s.master.client();
    older.batch_execute("BEGIN; INSERT INTO item (name) VALUES ('older takes its xid first')").unwrap();
    s.master.execute("UPDATE item SET name = 'younger' WHERE id = 1");
    older.batch_execute("UPDATE item SET name = 'older, committed last' WHERE id = 1; COMMIT").unwrap();
    export_once(&s.config);
    replay_by_hand(&s.slave, &s.outbox);
    assert_tables_equal(&s.master, &s.slave, TABLES);
    assert_eq!(s.slave.query_value("SELECT name FROM item WHERE id = 1"), "older, committed last");
}

/// Changes are read in the order they lie on disk where that is the file's order, and sorted
/// where it is not: here one transaction's rows lie on both sides of another's (its first
/// thousand were written while it ran, the rest at commit, after the other committed), and
/// within a transaction a change nested in a statement comes before rows the statement changed
/// earlier. Every file must still hold its transaction whole and in order.
#[test]
fn changes_lying_out_of_order_on_disk_are_exported_in_order() {
    let s = setup("");
    s.master.execute(
        "CREATE FUNCTION touch(i int) RETURNS int LANGUAGE sql AS \
         $$ UPDATE \"Order Line\" SET qty = qty + 1 WHERE \"Order\" = 1 AND \"Line\" = 1 RETURNING i $$",
    );
    s.master.execute("INSERT INTO \"Order Line\" VALUES (1, 1, NULL, 0)");
    let mut long = s.master.client();
    long.batch_execute("BEGIN; INSERT INTO item (id, name) SELECT g, 'long ' || g FROM generate_series(1, 1500) g")
        .unwrap();
    s.master.execute("INSERT INTO item (id, name) SELECT g, 'short ' || g FROM generate_series(2001, 2100) g");
    long.batch_execute(
        "UPDATE item SET price = touch(id) WHERE id <= 3; DELETE FROM item WHERE id BETWEEN 1001 AND 1499; COMMIT",
    )
    .unwrap();
    let output = export_command(&s.config, &["once"]).output().unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("lie out of change order on disk"),
        "the rows were expected out of order on disk, and read again sorted:\n{}",
        describe(&output)
    );
    replay_by_hand(&s.slave, &s.outbox);
    assert_tables_equal(&s.master, &s.slave, TABLES);
    assert_eq!(s.slave.query_value("SELECT qty::text FROM \"Order Line\""), "3");
}

/// A transaction still running during an export is exported by a later one, never skipped,
/// even though a younger transaction was exported before it.
#[test]
fn a_transaction_running_during_an_export_is_not_skipped() {
    let s = setup("");
    let mut running = s.master.client();
    running.batch_execute("BEGIN; INSERT INTO item (name) VALUES ('slow')").unwrap();
    s.master.execute("INSERT INTO item (name) VALUES ('fast')");
    export_once(&s.config);
    assert_eq!(transaction_files(&s.outbox).len(), 1);
    running.batch_execute("COMMIT").unwrap();
    s.master.execute("INSERT INTO item (name) VALUES ('after')");
    export_once(&s.config);
    assert_eq!(transaction_files(&s.outbox).len(), 3);
    replay_by_hand(&s.slave, &s.outbox);
    assert_tables_equal(&s.master, &s.slave, TABLES);
}

/// Sizes of the two partitions of dbmirror_PendingData, in bytes.
fn partition_sizes(master: &Cluster) -> String {
    master.query_value(
        "SELECT pg_relation_size('dbmirror_pendingdata_0') || ' ' || pg_relation_size('dbmirror_pendingdata_1')",
    )
}

#[test]
fn sent_changes_are_emptied_by_partition_and_never_under_a_writer() {
    let s = setup("");
    // Changes in both partitions: transactions alternate every 16,384 xids.
    s.master.execute("INSERT INTO item (name) SELECT 'early ' || g FROM generate_series(1, 20) g");
    s.master.execute(
        "CREATE PROCEDURE burn_xids(n int) LANGUAGE plpgsql AS $$ \
         BEGIN FOR i IN 1..n LOOP PERFORM pg_current_xact_id(); COMMIT; END LOOP; END $$",
    );
    s.master.execute("CALL burn_xids(16384)");
    s.master.execute("INSERT INTO item (name) SELECT 'late ' || g FROM generate_series(1, 20) g");
    assert_eq!(
        s.master.query_value(
            "SELECT count(DISTINCT tableoid)::text || ' ' || \
                    count(*) FILTER (WHERE tableoid <> ('dbmirror_pendingdata_' || ((xid >> 14) & 1))::regclass) \
               FROM dbmirror_pendingdata"
        ),
        "2 0",
        "each transaction's changes are in the partition its xid selects"
    );

    // A transaction that has written into its partition (a released savepoint writes its
    // changes) keeps that partition from being emptied; one that has written nothing yet does not.
    let part = |xid: &str| s.master.query_value(&format!("SELECT (({xid}::bigint >> 14) & 1)::text"));
    let mut writing = s.master.client();
    writing.batch_execute("BEGIN; SAVEPOINT a; INSERT INTO item (name) VALUES ('writing'); RELEASE a").unwrap();
    let writing_xid: String = writing.query_one("SELECT pg_current_xact_id()::text", &[]).unwrap().get(0);
    let mut waiting = s.master.client();
    waiting.batch_execute("BEGIN; INSERT INTO item (name) VALUES ('not yet written')").unwrap();
    export_once(&s.config);
    assert_eq!(s.master.query_value("SELECT count(*)::text FROM dbmirror_pending"), "0");
    let sizes = partition_sizes(&s.master);
    let held = part(&writing_xid).parse::<usize>().unwrap();
    let sizes: Vec<&str> = sizes.split(' ').collect();
    assert_ne!(sizes[held], "0", "the partition a running transaction wrote into is kept");
    assert_eq!(sizes[1 - held], "0", "the other one is emptied");

    writing.batch_execute("COMMIT").unwrap();
    waiting.batch_execute("COMMIT").unwrap();
    // Changes of purged transactions stay until their partition is emptied; what waits is what
    // dbmirror_Pending lists.
    assert_eq!(
        s.master.query_value("SELECT count(*)::text FROM dbmirror_pendingdata JOIN dbmirror_pending USING (xid)"),
        "2"
    );
    export_once(&s.config);
    assert_eq!(partition_sizes(&s.master), "0 0");
    assert_eq!(transaction_files(&s.outbox).len(), 4);
    replay_by_hand(&s.slave, &s.outbox);
    assert_tables_equal(&s.master, &s.slave, TABLES);
}

#[test]
fn partitions_are_emptied_only_under_read_committed() {
    let s = setup("");
    // The exporter purges under READ COMMITTED whatever the database's default.
    s.master.execute("ALTER DATABASE postgres SET default_transaction_isolation = 'repeatable read'");
    s.master.execute("INSERT INTO dbmirror_MirrorHost (SlaveName) VALUES ('gone')");
    s.master.execute("INSERT INTO item (name) VALUES ('one')");
    export_once(&s.config);
    assert_ne!(partition_sizes(&s.master), "0 0", "slave 'gone' still needs the change");
    s.master.execute("DELETE FROM dbmirror_MirrorHost WHERE SlaveName = 'gone'");
    // A purge whose snapshot may predate its lock (here: clean under REPEATABLE READ) purges
    // transactions but keeps their changes.
    assert_eq!(s.master.query_value("SELECT dbmirror_clean()::text"), "1");
    assert_ne!(partition_sizes(&s.master), "0 0");
    s.master.execute("ALTER DATABASE postgres RESET default_transaction_isolation");
    assert_eq!(s.master.query_value("SELECT dbmirror_clean()::text"), "0");
    assert_eq!(partition_sizes(&s.master), "0 0");
    s.master.execute("INSERT INTO item (name) VALUES ('two')");
    export_once(&s.config);
    assert_eq!(partition_sizes(&s.master), "0 0");
    replay_by_hand(&s.slave, &s.outbox);
    assert_tables_equal(&s.master, &s.slave, TABLES);
}

#[test]
fn run_exports_as_changes_come_and_stops_on_sigterm() {
    let s = setup("sleep_interval = 0.2");
    let child = Running::start(export_command(&s.config, &["run"]).stderr(std::process::Stdio::piped()));
    for i in 1..=3 {
        s.master.execute(&format!("INSERT INTO item (name) VALUES ('run {i}')"));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while transaction_files(&s.outbox).len() < i {
            assert!(std::time::Instant::now() < deadline, "run did not export transaction {i}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    let output = child.terminate();
    assert!(output.status.success(), "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("stopping on signal"), "{}", describe(&output));
    replay_by_hand(&s.slave, &s.outbox);
    assert_tables_equal(&s.master, &s.slave, TABLES);
}

#[test]
fn alert_command_receives_each_error() {
    let s = setup("");
    let alerts = s.work.path().join("alerts.txt");
    let config = export_config(
        &s.work,
        &s.master,
        "nobody",
        &s.outbox,
        &format!("alert_command = \"cat >> {}\"", alerts.display()),
    );
    let output = export_command(&config, &["once"]).output().unwrap();
    assert_eq!(output.status.code(), Some(3));
    let text = std::fs::read_to_string(&alerts).unwrap();
    assert!(text.contains("slave \"nobody\" is not in dbmirror_MirrorHost"), "{text}");
}

#[test]
fn status_shows_what_waits_and_what_was_written() {
    let s = setup("");
    s.master.execute("INSERT INTO item (name) VALUES ('one'); INSERT INTO item (name) VALUES ('two');");
    s.master.execute("INSERT INTO item (name) VALUES ('three')");
    let status = |args: &[&str]| {
        let output = export_command(&s.config, args).output().unwrap();
        assert!(output.status.success(), "{}", describe(&output));
        String::from_utf8(output.stdout).unwrap()
    };
    let text = status(&["status"]);
    assert!(text.contains("waiting:               2 transactions, 3 changes"), "{text}");
    export_once(&s.config);
    let json = status(&["status", "--json"]);
    for expected in ["\"last_number\": 2", "\"waiting_transactions\": 0", "\"files\": 2", "\"manifests\": 1"] {
        assert!(json.contains(expected), "{expected} missing from {json}");
    }
}

/// The order of the exporter's system calls, as strace records them: what a power cut at any
/// moment could lose must never be recorded as written. Every file is synced under its temporary
/// name before it gets its final name, and every final name of a batch is made durable (the
/// directory fsynced) before the master records the batch as written. Batches overlap (the next
/// batch's files may be named while one is recorded), so each name is held to the record of its
/// own batch: the batches are recorded in the order of their manifests.
#[test]
fn every_file_is_durable_before_it_is_named_and_named_durably_before_the_batch_is_recorded() {
    for method in ["fsync", "syncfs"] {
        durable_before_named_and_recorded(method);
    }
}

fn durable_before_named_and_recorded(method: &str) {
    let s = setup(&format!("batch_size = 3\nsync_method = \"{method}\""));
    workload(&s.master);
    let trace = s.work.path().join("export.strace");
    let command = export_command(&s.config, &["once"]);
    let program = command.get_program().to_owned();
    let args: Vec<_> = command.get_args().map(|a| a.to_owned()).collect();
    let output = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-s",
            "256",
            "-e",
            "trace=openat,close,fsync,fdatasync,syncfs,rename,renameat,renameat2,write,writev,sendto,sendmsg",
            "-o",
        ])
        .arg(&trace)
        .arg(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run strace ({e}): install it (scripts/install does: apt-get install strace)")
        });
    assert!(output.status.success(), "{}", describe(&output));
    let trace = std::fs::read_to_string(&trace).unwrap();
    let outbox = s.outbox.to_str().unwrap().to_string();

    // Replay the trace: which path each descriptor names, and the events that matter.
    // Threads share the descriptor table: a descriptor names the same file in every thread.
    let mut fds: std::collections::HashMap<i32, String> = std::collections::HashMap::new();
    let mut synced_since_created: std::collections::HashMap<String, bool> = std::collections::HashMap::new();
    // Names not yet durable, with the file number they belong to (the last of a manifest's
    // range; 0 for the outbox's state file, which must be durable before any later record).
    let mut named_not_durable: Vec<(u64, String)> = Vec::new();
    // The last number of each batch, in the order their manifests were named.
    let mut manifests: Vec<u64> = Vec::new();
    let (mut renames, mut records) = (0, 0);
    let number_of = |path: &str| -> u64 {
        let name = path.rsplit('/').next().unwrap_or_default();
        let digits = name.split(['-', '_', '.']).rfind(|part| part.len() == 20);
        digits.and_then(|d| d.parse().ok()).unwrap_or(0)
    };
    let quoted = |line: &str, n: usize| line.split('"').nth(2 * n + 1).map(str::to_string);
    // A call that another thread interrupts is split in two lines ("<unfinished ...>", then
    // "<... resumed>"): joined, it counts where it returned.
    let mut unfinished: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    for line in trace.lines() {
        let (pid, call) = line.split_once(' ').unwrap_or(("", line));
        let call = call.trim_start();
        if let Some(start) = call.strip_suffix("<unfinished ...>") {
            unfinished.insert(pid.to_string(), start.to_string());
            continue;
        }
        let joined;
        let call = match (call.starts_with("<... "), call.split_once("resumed>")) {
            (true, Some((_, rest))) => {
                joined = format!("{}{rest}", unfinished.remove(pid).unwrap_or_default());
                joined.as_str()
            }
            _ => call,
        };
        let line = call;
        let result = line.rsplit_once("= ").and_then(|(_, r)| r.split_whitespace().next()).unwrap_or("");
        let fd_arg = || {
            call.split_once('(')
                .and_then(|(_, rest)| rest.split([',', ')']).next())
                .and_then(|f| f.trim().parse::<i32>().ok())
        };
        if call.starts_with("openat(") {
            if let (Some(path), Ok(fd)) = (quoted(call, 0), result.parse::<i32>()) {
                if call.contains("O_CREAT") {
                    synced_since_created.insert(path.clone(), false);
                }
                fds.insert(fd, path);
            }
        } else if call.starts_with("close(") {
            if let Some(fd) = fd_arg() {
                fds.remove(&fd);
            }
        } else if call.starts_with("syncfs(") {
            // Everything written to the file system, names included.
            assert_eq!(result, "0", "a failed sync: {line}");
            synced_since_created.values_mut().for_each(|synced| *synced = true);
            named_not_durable.clear();
        } else if call.starts_with("fsync(") || call.starts_with("fdatasync(") {
            assert_eq!(result, "0", "a failed sync: {line}");
            let path = fd_arg().and_then(|fd| fds.get(&fd).cloned()).unwrap_or_default();
            if path == outbox {
                named_not_durable.clear();
            } else {
                synced_since_created.insert(path, true);
            }
        } else if call.starts_with("rename") {
            let (from, to) = (quoted(call, 0).unwrap(), quoted(call, 1).unwrap());
            if to.starts_with(&outbox) && result == "0" {
                assert_eq!(
                    synced_since_created.get(&from),
                    Some(&true),
                    "{method}: {from} was renamed to {to} before its content was synced:\n{trace}"
                );
                let number = number_of(&to);
                if to.ends_with(".sha256") {
                    manifests.push(number);
                }
                named_not_durable.push((number, to));
                renames += 1;
            }
        } else if call.contains("SET sha256 = u.sha") {
            let Some(&last) = manifests.get(records) else {
                panic!(
                    "{method}: batch {} was recorded as written before its manifest was named:\n{trace}",
                    records + 1
                );
            };
            let lost: Vec<_> = named_not_durable.iter().filter(|(number, _)| *number <= last).collect();
            assert!(
                lost.is_empty(),
                "{method}: the batch up to file {last} was recorded as written while the outbox directory was not synced after {lost:?}:\n{trace}"
            );
            records += 1;
        }
    }
    assert!(
        renames >= 5 + 2,
        "every transaction file and manifest was renamed into place ({renames} renames):\n{trace}"
    );
    assert_eq!(records, 2, "two batches of at most three transactions were recorded as written:\n{trace}");
    assert!(named_not_durable.is_empty(), "names left without a directory fsync: {named_not_durable:?}");
}
