//! Starting, re-seeding and retiring slaves on a live master with `dbmirror-export snapshot`,
//! and one channel feeding several slave databases.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use dbmirror_tests::pgbench::{pgbench, pgbench_schema, pgbench_tables, TABLES};
use dbmirror_tests::tools::{
    apply, apply_config, export_command, export_config, psql_file, transaction_files, transfer, Running, Workdir,
};
use dbmirror_tests::{assert_tables_equal, describe, Cluster};

const SLAVE: &str = "seeded";

/// `dbmirror-export snapshot` with small files, so that a snapshot spans several.
fn snapshot(config: &Path) -> Output {
    export_command(config, &["snapshot", "--file-size", "200000"]).output().expect("dbmirror-export runs")
}

fn ok(output: Output, what: &str) -> Output {
    assert!(output.status.success(), "{what} failed ({}):\n{}", output.status, describe(&output));
    output
}

/// Replays by hand, in order, the files of `dir` numbered from `from` on.
fn replay_from(slave: &Cluster, dir: &Path, from: u64) {
    for file in transaction_files(dir) {
        let number: u64 = file.file_name().unwrap().to_str().unwrap()[..20].parse().unwrap();
        if number >= from {
            ok(psql_file(slave, &file), &format!("psql -f {}", file.display()));
        }
    }
}

/// A master with pgbench's tables mirrored and no slave registered yet; a slave with the
/// tables, empty.
fn master_and_slave(name: &str) -> (Cluster, Cluster) {
    let master = Cluster::start(&format!("{name}-master"));
    master.create_extension();
    pgbench_tables(&master);
    for table in TABLES {
        master.execute(&format!("SELECT dbmirror_mirror_table('{table}')"));
    }
    let slave = Cluster::start(&format!("{name}-slave"));
    pgbench_schema(&slave);
    (master, slave)
}

/// Starts a slave while pgbench writes: every transaction reaches the slave once, through
/// the snapshot or through the stream, never both and never neither; through the applier and
/// by hand with psql -f.
#[test]
fn a_slave_started_under_load_gets_every_transaction_once_through_snapshot_or_stream() {
    let (master, slave) = master_and_slave("live");
    let by_hand = Cluster::start("live-by-hand");
    pgbench_schema(&by_hand);
    by_hand.slave_setup();
    let work = Workdir::new("snapshot-live");
    let (outbox, inbound) = (work.dir("outbox"), work.dir("inbound"));
    let export = export_config(&work, &master, SLAVE, &outbox, "");
    let apply_conf = apply_config(&work, &slave, SLAVE, &inbound, "");
    ok(apply(&apply_conf, &["init"]), "dbmirror-apply init");

    let mut load = pgbench(&master);
    load.args(["-n", "-c", "2", "-T", "8", "-R", "300"]);
    let load = std::thread::spawn(move || load.output().expect("pgbench runs"));
    std::thread::sleep(Duration::from_secs(2));
    let taken = ok(snapshot(&export), "dbmirror-export snapshot");
    assert!(String::from_utf8_lossy(&taken.stderr).contains("snapshot for slave"), "{}", describe(&taken));
    let snapshot_files = transaction_files(&outbox);
    assert!(snapshot_files.len() > 1, "the snapshot spans several files: {snapshot_files:?}");
    let first = std::fs::read_to_string(&snapshot_files[0]).unwrap();
    assert!(first.contains("SELECT dbmirror.start_stream("), "{first}");
    // The stream goes on while pgbench writes, and after.
    ok(export_command(&export, &["once"]).output().unwrap(), "dbmirror-export once");
    let load = load.join().expect("pgbench ends");
    assert!(load.status.success(), "pgbench failed:\n{}", describe(&load));
    ok(export_command(&export, &["once"]).output().unwrap(), "dbmirror-export once");

    transfer(&outbox, &inbound);
    ok(apply(&apply_conf, &["once"]), "dbmirror-apply once");
    replay_from(&by_hand, &outbox, 1);
    assert_tables_equal(&master, &slave, TABLES);
    assert_tables_equal(&master, &by_hand, TABLES);
    // Everything the slave was sent, or holds through its snapshot, is purged.
    assert_eq!(master.query_value("SELECT count(*)::text FROM dbmirror_pending"), "0");
}

/// A snapshot never mixes its rows with rows a slave had: it refuses tables that are not
/// empty, and replaces their rows only when told to.
#[test]
fn a_snapshot_goes_only_into_empty_tables_unless_told_to_replace_them() {
    let (master, slave) = master_and_slave("empty");
    slave.execute("INSERT INTO pgbench_branches VALUES (99, 0, 'stray')");
    let by_hand = Cluster::start("empty-by-hand");
    pgbench_schema(&by_hand);
    by_hand.slave_setup();
    by_hand.execute("INSERT INTO pgbench_branches VALUES (99, 0, 'stray')");
    let work = Workdir::new("snapshot-empty");
    let (outbox, inbound) = (work.dir("outbox"), work.dir("inbound"));
    let export = export_config(&work, &master, SLAVE, &outbox, "");
    let apply_conf = apply_config(&work, &slave, SLAVE, &inbound, "");
    ok(apply(&apply_conf, &["init"]), "dbmirror-apply init");
    ok(snapshot(&export), "dbmirror-export snapshot");

    let files = transaction_files(&outbox);
    let refused = psql_file(&by_hand, &files[0]);
    assert!(!refused.status.success(), "psql -f took the snapshot into a table that is not empty");
    let text = describe(&refused);
    assert!(
        text.contains("\"public\".\"pgbench_branches\" is not empty") && text.contains("dbmirror.replace=on"),
        "{text}"
    );
    let mut replace =
        by_hand.psql_command("postgres", &["-v", "ON_ERROR_STOP=1", "-f", &files[0].display().to_string()]);
    let replaced = replace.env("PGOPTIONS", "-c dbmirror.replace=on").output().expect("psql runs");
    ok(replaced, "PGOPTIONS='-c dbmirror.replace=on' psql -f");
    replay_from(&by_hand, &outbox, 2);
    assert_tables_equal(&master, &by_hand, TABLES);

    transfer(&outbox, &inbound);
    let refused = apply(&apply_conf, &["once"]);
    assert_eq!(refused.status.code(), Some(5), "{}", describe(&refused));
    assert!(describe(&refused).contains("--replace"), "{}", describe(&refused));
    assert_eq!(slave.query_value("SELECT count(*)::text FROM pgbench_branches"), "1");
    // The refused file went to quarantine: put it back, and apply with --replace.
    let quarantine = inbound.join("quarantine");
    let name = files[0].file_name().unwrap();
    std::fs::rename(quarantine.join(name), inbound.join(name)).expect("the file is in quarantine");
    ok(apply(&apply_conf, &["once", "--replace"]), "dbmirror-apply once --replace");
    assert_tables_equal(&master, &slave, TABLES);
}

/// A slave that was lost is seeded again with the same command; the files of the old stream
/// that it had not applied are not applied after the new snapshot.
#[test]
fn a_lost_slave_is_seeded_again_and_the_old_stream_is_not_applied() {
    let (master, slave) = master_and_slave("reseed");
    let work = Workdir::new("snapshot-reseed");
    let (outbox, inbound) = (work.dir("outbox"), work.dir("inbound"));
    let export = export_config(&work, &master, SLAVE, &outbox, "");
    let apply_conf = apply_config(&work, &slave, SLAVE, &inbound, "");
    ok(apply(&apply_conf, &["init"]), "dbmirror-apply init");
    ok(snapshot(&export), "dbmirror-export snapshot");
    master.execute("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= 10");
    ok(export_command(&export, &["once"]).output().unwrap(), "dbmirror-export once");
    transfer(&outbox, &inbound);
    ok(apply(&apply_conf, &["once"]), "dbmirror-apply once");
    assert_tables_equal(&master, &slave, TABLES);
    let before = transaction_files(&outbox).len();

    // More is exported; the slave is lost before it applies it.
    master.execute("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= 20");
    master.execute("INSERT INTO pgbench_history (tid, bid, aid, delta) VALUES (1, 1, 1, 1)");
    ok(export_command(&export, &["once"]).output().unwrap(), "dbmirror-export once");
    let old_stream = transaction_files(&outbox).len() - before;
    assert_eq!(old_stream, 2);
    drop(slave);

    // Seeded again, with the tables' DDL from the snapshot too.
    master.execute("UPDATE pgbench_tellers SET tbalance = 7");
    let schema = work.path().join("schema.sql");
    ok(
        export_command(&export, &["snapshot", "--file-size", "200000", "--schema-file", &schema.display().to_string()])
            .output()
            .unwrap(),
        "dbmirror-export snapshot --schema-file, again",
    );
    let ddl = std::fs::read_to_string(&schema).expect("the schema file is written");
    assert!(ddl.contains("CREATE TABLE public.pgbench_accounts"), "{ddl}");
    assert!(!ddl.lines().any(|l| l.starts_with("CREATE TRIGGER")), "capture triggers are left out:\n{ddl}");
    let slave = Cluster::start("reseed-new-slave");
    ok(slave.psql(&["-v", "ON_ERROR_STOP=1", "-f", &schema.display().to_string()]), "psql -f schema.sql");
    let inbound = work.dir("inbound-new");
    let apply_conf = apply_config(&work, &slave, SLAVE, &inbound, "");
    ok(apply(&apply_conf, &["init"]), "dbmirror-apply init");
    master.execute("UPDATE pgbench_branches SET bbalance = 8");
    ok(export_command(&export, &["once"]).output().unwrap(), "dbmirror-export once");
    // The whole outbox arrives, old stream included.
    transfer(&outbox, &inbound);
    let applied = ok(apply(&apply_conf, &["once"]), "dbmirror-apply once");
    assert!(describe(&applied).contains("starts a new stream"), "{}", describe(&applied));
    assert_tables_equal(&master, &slave, TABLES);
    let spool_left: Vec<_> = transaction_files(&inbound);
    assert!(spool_left.is_empty(), "files left in the spool: {spool_left:?}");
}

/// Retiring a slave releases the captured changes it alone held.
#[test]
fn a_retired_slave_releases_what_it_held() {
    let (master, _slave) = master_and_slave("retire");
    master.execute("INSERT INTO dbmirror_MirrorHost (SlaveName) VALUES ('kept'), ('retired')");
    master.execute("UPDATE pgbench_accounts SET abalance = 1 WHERE aid <= 3");
    let work = Workdir::new("snapshot-retire");
    let export = export_config(&work, &master, "kept", &work.dir("outbox"), "");
    ok(export_command(&export, &["once"]).output().unwrap(), "dbmirror-export once");
    assert_eq!(master.query_value("SELECT count(*)::text FROM dbmirror_pending"), "1", "the other slave holds it");
    assert_eq!(master.query_value("SELECT dbmirror_retire_slave('retired')::text"), "1");
    assert_eq!(master.query_value("SELECT count(*)::text FROM dbmirror_pending"), "0");
    assert_eq!(master.query_value("SELECT string_agg(SlaveName, ',') FROM dbmirror_MirrorHost"), "kept");
    let unknown = master.psql(&["-c", "SELECT dbmirror_retire_slave('nobody')"]);
    assert!(!unknown.status.success() && describe(&unknown).contains("is not in dbmirror_MirrorHost"));
}

/// A snapshot killed at any step, at an injected point or by SIGKILL at a random moment,
/// leaves nothing that looks like a complete snapshot unless it is one, refuses the stream
/// until it is run again, and the run again gives a slave equal to its master.
#[test]
fn a_snapshot_killed_at_any_step_starts_over_cleanly() {
    let points = ["snapshot-before-state", "snapshot-before-publish", "snapshot-before-commit"];
    for (round, point) in points.iter().map(Some).chain([None, None, None]).enumerate() {
        let (master, slave) = master_and_slave(&format!("killed-{round}"));
        let work = Workdir::new(&format!("snapshot-killed-{round}"));
        let (outbox, inbound) = (work.dir("outbox"), work.dir("inbound"));
        let export = export_config(&work, &master, SLAVE, &outbox, "");
        let apply_conf = apply_config(&work, &slave, SLAVE, &inbound, "");
        ok(apply(&apply_conf, &["init"]), "dbmirror-apply init");
        match point {
            Some(point) => {
                let crashed = export_command(&export, &["snapshot", "--file-size", "200000"])
                    .env("DBMIRROR_EXPORT_CRASH_AT", point)
                    .output()
                    .unwrap();
                assert!(
                    describe(&crashed).contains(&format!("crashing at injected point {point}")),
                    "the snapshot did not stop at {point}: build with --features dbmirror-export/faults (scripts/test does)\n{}",
                    describe(&crashed)
                );
            }
            None => {
                let running = Running::start(&mut export_command(&export, &["snapshot", "--file-size", "200000"]));
                std::thread::sleep(Duration::from_millis(100 + 150 * round as u64));
                running.kill();
            }
        }
        master.execute("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= 5");
        let refused = export_command(&export, &["once"]).output().unwrap();
        if !refused.status.success() {
            assert_eq!(refused.status.code(), Some(3), "{}", describe(&refused));
            assert!(describe(&refused).contains("awaits its snapshot"), "{}", describe(&refused));
        }
        ok(snapshot(&export), "dbmirror-export snapshot, again");
        let left: Vec<String> =
            dbmirror_tests::tools::file_names(&outbox).into_iter().filter(|n| n.ends_with(".tmp")).collect();
        assert!(left.is_empty(), "temporary files left in the outbox: {left:?}");
        master.execute("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= 5");
        ok(export_command(&export, &["once"]).output().unwrap(), "dbmirror-export once");
        transfer(&outbox, &inbound);
        ok(apply(&apply_conf, &["once"]), "dbmirror-apply once");
        assert_tables_equal(&master, &slave, TABLES);
    }
}

/// One channel, many slaves: every slave database that applies a channel's files has its own
/// applied state, so one export serves any number of identical slaves.
#[test]
fn one_channel_feeds_any_number_of_identical_slaves() {
    let (master, first) = master_and_slave("channel");
    let second = Cluster::start("channel-second");
    pgbench_schema(&second);
    let work = Workdir::new("snapshot-channel");
    let outbox = work.dir("outbox");
    let export = export_config(&work, &master, SLAVE, &outbox, "");
    ok(snapshot(&export), "dbmirror-export snapshot");
    let mut appliers = Vec::new();
    for (i, slave) in [&first, &second].into_iter().enumerate() {
        // Each slave's applier has a spool and a configuration of its own.
        let site = Workdir::new(&format!("snapshot-channel-site-{i}"));
        let inbound = site.dir("inbound");
        let conf = apply_config(&site, slave, SLAVE, &inbound, "");
        ok(apply(&conf, &["init"]), "dbmirror-apply init");
        appliers.push((site, inbound, conf, slave));
    }
    for round in 0..3 {
        master.execute(&format!("UPDATE pgbench_accounts SET abalance = abalance + {round} WHERE aid % 7 = {round}"));
        ok(export_command(&export, &["once"]).output().unwrap(), "dbmirror-export once");
        for (_site, inbound, conf, slave) in &appliers {
            transfer(&outbox, inbound);
            ok(apply(conf, &["once"]), "dbmirror-apply once");
            assert_tables_equal(&master, slave, TABLES);
        }
    }
    let status = ok(export_command(&export, &["status"]).output().unwrap(), "dbmirror-export status");
    assert!(String::from_utf8_lossy(&status.stdout).contains("channel"), "{}", describe(&status));
}

/// A table added to a running slave takes its rows from a copy of its own, which enters the
/// stream where its snapshot was taken, while the table and the others are written; another
/// slave of the master leaves the table out until it gets a copy of its own, and streams
/// everything else meanwhile.
#[test]
fn a_table_added_later_enters_the_stream_at_its_copy() {
    let (master, slave) = master_and_slave("added");
    let other = Cluster::start("added-other");
    pgbench_schema(&other);
    let by_hand = Cluster::start("added-by-hand");
    pgbench_schema(&by_hand);
    by_hand.slave_setup();
    let work = Workdir::new("snapshot-added");
    let (outbox, inbound) = (work.dir("outbox"), work.dir("inbound"));
    let export = export_config(&work, &master, SLAVE, &outbox, "");
    let apply_conf = apply_config(&work, &slave, SLAVE, &inbound, "");
    ok(apply(&apply_conf, &["init"]), "dbmirror-apply init");
    let other_work = Workdir::new("snapshot-added-other");
    let (other_outbox, other_inbound) = (other_work.dir("outbox"), other_work.dir("inbound"));
    let other_export = export_config(&other_work, &master, "other", &other_outbox, "");
    let other_apply = apply_config(&other_work, &other, "other", &other_inbound, "");
    ok(apply(&other_apply, &["init"]), "dbmirror-apply init");
    ok(snapshot(&export), "dbmirror-export snapshot");
    ok(snapshot(&other_export), "dbmirror-export snapshot");

    let extra = "CREATE TABLE extra (id bigint PRIMARY KEY, v text)";
    master.execute(&format!("{extra}; INSERT INTO extra SELECT g, 'v' || g FROM generate_series(1, 20000) g"));
    for cluster in [&slave, &other, &by_hand] {
        cluster.execute(extra);
    }
    // pgbench on its tables, and a writer on the new table, while the copy is taken.
    let mut load = pgbench(&master);
    load.args(["-n", "-c", "2", "-T", "6", "-R", "200"]);
    let load = std::thread::spawn(move || load.output().expect("pgbench runs"));
    let conninfo = master.conninfo();
    let writer = std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&conninfo, postgres::NoTls).expect("the master accepts");
        let started = std::time::Instant::now();
        let mut i = 0i64;
        while started.elapsed() < Duration::from_secs(5) {
            i += 1;
            client
                .batch_execute(&format!(
                    "BEGIN; UPDATE extra SET v = v || 'x' WHERE id = {}; INSERT INTO extra VALUES ({}, 'new'); \
                     DELETE FROM extra WHERE id = {}; COMMIT;",
                    i * 7 % 20000 + 1,
                    100000 + i,
                    i * 13 % 20000 + 1
                ))
                .expect("the writer's transaction commits");
            std::thread::sleep(Duration::from_millis(10));
        }
        i
    });
    std::thread::sleep(Duration::from_secs(1));
    ok(
        export_command(&export, &["snapshot", "--file-size", "100000", "--table", "public.extra"]).output().unwrap(),
        "dbmirror-export snapshot --table public.extra",
    );
    assert!(writer.join().expect("the writer ends") > 10);
    let load = load.join().expect("pgbench ends");
    assert!(load.status.success(), "pgbench failed:\n{}", describe(&load));
    ok(export_command(&export, &["once"]).output().unwrap(), "dbmirror-export once");
    ok(export_command(&other_export, &["once"]).output().unwrap(), "dbmirror-export once (the other slave)");

    transfer(&outbox, &inbound);
    ok(apply(&apply_conf, &["once"]), "dbmirror-apply once");
    replay_from(&by_hand, &outbox, 1);
    let all: Vec<&str> = TABLES.iter().copied().chain(["extra"]).collect();
    assert_tables_equal(&master, &slave, &all);
    assert_tables_equal(&master, &by_hand, &all);

    // The other slave has everything but the new table, which awaits its copy.
    transfer(&other_outbox, &other_inbound);
    ok(apply(&other_apply, &["once"]), "dbmirror-apply once (the other slave)");
    assert_tables_equal(&master, &other, TABLES);
    assert_eq!(other.query_value("SELECT count(*)::text FROM extra"), "0");
    let status = ok(export_command(&other_export, &["status"]).output().unwrap(), "dbmirror-export status");
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("awaiting a copy:       public.extra"),
        "{}",
        describe(&status)
    );
    ok(
        export_command(&other_export, &["snapshot", "--table", "extra"]).output().unwrap(),
        "dbmirror-export snapshot --table extra (the other slave)",
    );
    master.execute("UPDATE extra SET v = 'after' WHERE id <= 10");
    ok(export_command(&other_export, &["once"]).output().unwrap(), "dbmirror-export once (the other slave)");
    transfer(&other_outbox, &other_inbound);
    ok(apply(&other_apply, &["once"]), "dbmirror-apply once (the other slave)");
    assert_tables_equal(&master, &other, &all);
}

/// A copy of a table for a running slave, killed at each step, refuses the stream until it is
/// run again, and the run again continues the stream without a gap.
#[test]
fn a_table_copy_killed_at_any_step_starts_over_cleanly() {
    let (master, slave) = master_and_slave("table-killed");
    let work = Workdir::new("snapshot-table-killed");
    let (outbox, inbound) = (work.dir("outbox"), work.dir("inbound"));
    let export = export_config(&work, &master, SLAVE, &outbox, "");
    let apply_conf = apply_config(&work, &slave, SLAVE, &inbound, "");
    ok(apply(&apply_conf, &["init"]), "dbmirror-apply init");
    ok(snapshot(&export), "dbmirror-export snapshot");
    let extra = "CREATE TABLE extra (id bigint PRIMARY KEY, v text)";
    master.execute(&format!("{extra}; INSERT INTO extra SELECT g, 'v' || g FROM generate_series(1, 3000) g"));
    slave.execute(extra);
    let all: Vec<&str> = TABLES.iter().copied().chain(["extra"]).collect();
    for point in ["snapshot-before-state", "snapshot-before-publish", "snapshot-before-commit"] {
        master.execute(
            "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= 3; UPDATE extra SET v = v || '+'",
        );
        let crashed = export_command(&export, &["snapshot", "--file-size", "20000", "--table", "extra"])
            .env("DBMIRROR_EXPORT_CRASH_AT", point)
            .output()
            .unwrap();
        assert!(
            describe(&crashed).contains(&format!("crashing at injected point {point}")),
            "the copy did not stop at {point}: build with --features dbmirror-export/faults (scripts/test does)\n{}",
            describe(&crashed)
        );
        let refused = export_command(&export, &["once"]).output().unwrap();
        assert_eq!(refused.status.code(), Some(3), "{}", describe(&refused));
        assert!(describe(&refused).contains("awaits a copy of tables"), "{}", describe(&refused));
        ok(
            export_command(&export, &["snapshot", "--file-size", "20000", "--table", "extra"]).output().unwrap(),
            "dbmirror-export snapshot --table extra, again",
        );
        master.execute("UPDATE extra SET v = 'after' WHERE id <= 3");
        ok(export_command(&export, &["once"]).output().unwrap(), "dbmirror-export once");
        transfer(&outbox, &inbound);
        // The slave may have taken the first copy already (killed after publishing).
        ok(apply(&apply_conf, &["once", "--replace"]), "dbmirror-apply once --replace");
        assert_tables_equal(&master, &slave, &all);
    }
}
