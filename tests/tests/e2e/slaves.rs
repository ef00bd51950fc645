//! Several slaves of one master exported by one process (`dbmirror-export --config a.toml
//! --config b.toml once`): each slave gets exactly the files a separate export would write for
//! it, a slave at another position or with a table of its own is served alone until it can
//! share, what cannot be served together is refused, and a crash anywhere loses nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dbmirror_tests::tools::{
    apply, apply_config, export_command, replay_by_hand, transaction_files, transfer, Workdir, EXPORT_CRASH_AT,
    EXPORT_FAULTS_HINT,
};
use dbmirror_tests::{assert_tables_equal, binary, describe, Cluster};

use crate::export::{workload, SCHEMA, TABLES};

const SLAVES: [&str; 3] = ["a", "b", "c"];

/// A master with the schema mirrored and `slaves` registered.
fn master_with(slaves: &[&str]) -> Cluster {
    let master = Cluster::start("master");
    master.create_extension();
    master.execute(SCHEMA);
    for table in TABLES {
        master.execute(&format!("SELECT dbmirror_mirror_table('{}')", table.replace('\'', "''")));
    }
    for slave in slaves {
        master.execute(&format!("INSERT INTO dbmirror_MirrorHost (SlaveName) VALUES ('{slave}')"));
    }
    master
}

/// One slave's exporter configuration, in a set of its own (`set` names its file and outbox).
struct Slave {
    name: &'static str,
    config: PathBuf,
    outbox: PathBuf,
}

/// A configuration and an outbox for each slave, in the set `set`; `extra(slave)` adds lines.
fn slaves(
    work: &Workdir,
    set: &str,
    conninfo: &str,
    names: &[&'static str],
    extra: impl Fn(&str) -> String,
) -> Vec<Slave> {
    names
        .iter()
        .map(|&name| {
            let outbox = work.dir(&format!("{set}-{name}"));
            let config = work.file(
                &format!("{set}-{name}.toml"),
                &format!(
                    "slave_name = \"{name}\"\nmaster = \"{conninfo}\"\ntransaction_file_directory = \"{}\"\n{}\n",
                    outbox.display(),
                    extra(name)
                ),
            );
            Slave { name, config, outbox }
        })
        .collect()
}

/// `dbmirror-export --config A --config B ... ARGS`.
fn export_all(slaves: &[Slave], args: &[&str]) -> Command {
    let mut command = Command::new(binary("dbmirror-export"));
    for slave in slaves {
        command.arg("--config").arg(&slave.config);
    }
    command.args(args);
    command
}

fn ok(output: Output, what: &str) -> Output {
    assert!(output.status.success(), "{what} failed ({}):\n{}", output.status, describe(&output));
    output
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Every file of a directory, dot-files (the outbox's state) included, with its bytes.
fn contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            (path.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&path).unwrap())
        })
        .collect();
    files.sort();
    files
}

/// Runs `sql` in database `dbname` of `cluster`, failing the test if it fails.
fn sql_in(cluster: &Cluster, dbname: &str, sql: &str) {
    ok(cluster.psql_in(dbname, &["-v", "ON_ERROR_STOP=1", "-c", sql]), sql);
}

/// A slave cluster with the schema (and `extra` SQL), fed by `dbmirror-apply` from what the
/// slave's outbox holds; checks that `tables` equal the master's.
fn apply_and_compare(master: &Cluster, slave: &Slave, work: &Workdir, extra: &str, tables: &[&str]) {
    let cluster = Cluster::start(slave.name);
    cluster.execute(SCHEMA);
    cluster.execute(extra);
    let inbound = work.dir(&format!("inbound-{}", slave.name));
    let config = apply_config(work, &cluster, slave.name, &inbound, "");
    ok(apply(&config, &["init"]), "dbmirror-apply init");
    transfer(&slave.outbox, &inbound);
    ok(apply(&config, &["once"]), "dbmirror-apply once");
    assert_tables_equal(master, &cluster, tables);
}

/// The heart of the feature: rendering once for several slaves changes no byte of any
/// slave's files. The master's state is the same for both exports by construction: every
/// slave's batch is assigned first (the files depend on the assignment alone), the database is
/// copied, one copy is exported slave by slave, and the other, under the same name, by one
/// process for all three. Each slave has settings of its own (compression, a signing key).
#[test]
fn one_process_writes_for_each_slave_the_very_files_a_separate_export_writes() {
    let master = master_with(&SLAVES);
    let work = Workdir::new("slaves-same-files");
    let key = work.path().join("signing");
    ok(Command::new(binary("dbmirror-export")).arg("keygen").arg(&key).output().unwrap(), "keygen");
    let extra = |slave: &str| match slave {
        "b" => "compression = \"zstd\"".to_string(),
        "c" => format!("signing_key = \"{}.key\"", key.display()),
        _ => String::new(),
    };
    workload(&master);
    let separate = slaves(&work, "separate", &master.conninfo(), &SLAVES, extra);
    for slave in &separate {
        let crashed = export_command(&slave.config, &["once"]).env(EXPORT_CRASH_AT, "after-assign").output().unwrap();
        assert!(stderr(&crashed).contains("crashing at injected point after-assign"), "{EXPORT_FAULTS_HINT}");
    }
    sql_in(&master, "template1", "CREATE DATABASE copy TEMPLATE postgres");
    for slave in &separate {
        ok(export_command(&slave.config, &["once"]).output().unwrap(), "dbmirror-export once");
    }
    sql_in(&master, "template1", "ALTER DATABASE postgres RENAME TO separate");
    sql_in(&master, "template1", "ALTER DATABASE copy RENAME TO postgres");

    let together = slaves(&work, "together", &master.conninfo(), &SLAVES, extra);
    let output = ok(export_all(&together, &["once"]).output().unwrap(), "dbmirror-export once for three slaves");
    assert!(
        stderr(&output).contains("rendering 5 transactions once for slaves \"a\", \"b\", \"c\""),
        "the three slaves were not served as one group:\n{}",
        describe(&output)
    );
    for (alone, grouped) in separate.iter().zip(&together) {
        let expected = contents(&alone.outbox);
        assert_eq!(expected.len(), 7, "slave {}: 5 files, a manifest and the outbox's state", alone.name);
        let written = contents(&grouped.outbox);
        assert_eq!(
            written.iter().map(|(name, _)| name).collect::<Vec<_>>(),
            expected.iter().map(|(name, _)| name).collect::<Vec<_>>(),
            "slave {}: the same file names",
            alone.name
        );
        for ((name, bytes), (_, expected)) in written.iter().zip(&expected) {
            assert!(bytes == expected, "slave {}: {name} differs from the separate export's", alone.name);
        }
    }
    for slave in &together {
        apply_and_compare(&master, slave, &work, "", TABLES);
    }
}

/// A slave that is behind the others, or that takes a table from a copy of its own, is served
/// by the same process with exactly its own files: alone while its batches differ or its copy
/// leaves changes out, in the group once it has caught up.
#[test]
fn a_slave_behind_or_with_a_copied_table_is_served_alone_then_joins_the_group() {
    let master = master_with(&SLAVES);
    let extra = "CREATE TABLE extra (id bigint PRIMARY KEY, v text)";
    master.execute(extra);
    master.execute("SELECT dbmirror_mirror_table('extra')");
    let work = Workdir::new("slaves-behind");
    let all = slaves(&work, "s", &master.conninfo(), &SLAVES, |slave| match slave {
        "a" => "batch_size = 2".to_string(),
        _ => String::new(),
    });
    workload(&master);
    master.execute("INSERT INTO extra SELECT g, 'v' || g FROM generate_series(1, 100) g");
    let output = ok(export_all(&all[..2], &["once"]).output().unwrap(), "dbmirror-export once for a and b");
    assert!(stderr(&output).contains("once for slaves \"a\", \"b\""), "{}", describe(&output));

    // c is behind, and takes the table extra from a copy of its own.
    ok(export_command(&all[2].config, &["snapshot", "--table", "extra"]).output().unwrap(), "snapshot --table extra");
    master.execute("UPDATE extra SET v = 'after' WHERE id <= 10");
    master.execute("INSERT INTO item (name) VALUES ('after the copy')");
    let output = ok(export_all(&all, &["once"]).output().unwrap(), "dbmirror-export once for three slaves");
    let text = stderr(&output);
    assert!(text.contains("once for slaves \"a\", \"b\" "), "a and b share:\n{text}");
    assert!(!text.contains("\"c\" (from"), "c is behind and served alone:\n{text}");
    assert!(text.contains("for slave \"c\""), "c has its own files:\n{text}");

    // Caught up: the next transactions are rendered once for all three.
    master.execute("UPDATE extra SET v = 'later' WHERE id BETWEEN 20 AND 30");
    master.execute("DELETE FROM item WHERE id = 7");
    let output = ok(export_all(&all, &["once"]).output().unwrap(), "dbmirror-export once for three slaves");
    assert!(
        stderr(&output).contains("rendering 2 transactions once for slaves \"a\", \"b\", \"c\""),
        "c joined the group:\n{}",
        describe(&output)
    );
    let tables: Vec<&str> = TABLES.iter().copied().chain(["extra"]).collect();
    for slave in &all {
        apply_and_compare(&master, slave, &work, extra, &tables);
    }
}

/// What one process cannot serve is refused before anything is exported, with exit code 2
/// and a message naming what is wrong: slaves of different masters, a slave in direct mode,
/// and several configurations for any command but once and run (and for the applier).
#[test]
fn several_configurations_that_cannot_be_served_together_are_refused() {
    let master = master_with(&["a", "b"]);
    sql_in(&master, "template1", "CREATE DATABASE other");
    sql_in(&master, "other", "CREATE EXTENSION dbmirror; INSERT INTO dbmirror_MirrorHost (SlaveName) VALUES ('b')");
    let work = Workdir::new("slaves-refused");
    let two = slaves(&work, "same", &master.conninfo(), &["a", "b"], |_| String::new());
    let refused = |output: Output, message: &str| {
        assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
        assert!(stderr(&output).contains(message), "expected \"{message}\":\n{}", describe(&output));
    };

    let mut other = slaves(&work, "other", &master.conninfo_for("other"), &["b"], |_| String::new());
    let mut mixed = slaves(&work, "mixed", &master.conninfo(), &["a"], |_| String::new());
    mixed.append(&mut other);
    refused(
        export_all(&mixed, &["once"]).output().unwrap(),
        "slave \"a\" is configured with master database \"postgres\"",
    );
    refused(export_all(&mixed, &["once"]).output().unwrap(), "but slave \"b\" with database \"other\"");

    let direct = work.file(
        "direct.toml",
        &format!("slave_name = \"b\"\nmaster = \"{}\"\nslave = \"{}\"\n", master.conninfo(), master.conninfo()),
    );
    let mut with_direct = Command::new(binary("dbmirror-export"));
    with_direct.arg("--config").arg(&two[0].config).arg("--config").arg(&direct).arg("once");
    refused(with_direct.output().unwrap(), "slave \"b\" is configured for direct mode");

    for args in [&["snapshot"][..], &["clean"], &["status"], &["verify", "--slave", "dbname=x"], &["keygen", "k"]] {
        refused(export_all(&two, args).output().unwrap(), "this command takes one configuration, not 2");
    }
    let mut applier = Command::new(binary("dbmirror-apply"));
    applier.arg("--config").arg(&two[0].config).arg("--config").arg(&two[1].config).arg("once");
    refused(applier.output().unwrap(), "this command takes one configuration, not 2");
    assert!(transaction_files(&two[0].outbox).is_empty() && transaction_files(&two[1].outbox).is_empty());
}

/// Kills the exporter serving three slaves at each injected point of a batch, restarts it,
/// and checks for every slave that nothing is lost and that no file number ever had two
/// contents, even when the files written before the crash were carried off before the restart.
#[test]
fn a_crash_at_any_point_with_several_slaves_loses_nothing_and_never_changes_a_written_file() {
    for point in ["after-assign", "before-rename", "after-rename", "after-manifest", "before-mark-written"] {
        let master = master_with(&SLAVES);
        let work = Workdir::new("slaves-crash");
        let all = slaves(&work, "s", &master.conninfo(), &SLAVES, |slave| match slave {
            "a" => "batch_size = 3".to_string(),
            _ => String::new(),
        });
        workload(&master);
        let crashed = export_all(&all, &["once"]).env(EXPORT_CRASH_AT, point).output().unwrap();
        assert!(
            stderr(&crashed).contains(&format!("crashing at injected point {point}")),
            "{point}: the exporter did not crash there. {EXPORT_FAULTS_HINT}\n{}",
            describe(&crashed)
        );
        let mut carried = Vec::new();
        for slave in &all {
            let inbound = work.dir(&format!("inbound-{}", slave.name));
            for file in transaction_files(&slave.outbox) {
                carried.push((file.clone(), std::fs::read(&file).unwrap()));
            }
            transfer(&slave.outbox, &inbound);
            for file in transaction_files(&slave.outbox) {
                std::fs::remove_file(file).unwrap();
            }
        }
        ok(export_all(&all, &["once"]).output().unwrap(), "dbmirror-export once after the crash");
        for (file, bytes) in &carried {
            if let Ok(again) = std::fs::read(file) {
                assert!(&again == bytes, "{point}: {} was written twice with different content", file.display());
            }
        }
        for slave in &all {
            let inbound = work.dir(&format!("inbound-{}", slave.name));
            transfer(&slave.outbox, &inbound);
            let cluster = Cluster::start(slave.name);
            cluster.execute(SCHEMA);
            cluster.slave_setup();
            assert_eq!(replay_by_hand(&cluster, &inbound), 5, "{point}: slave {}: every transaction once", slave.name);
            assert_tables_equal(&master, &cluster, TABLES);
            let temporary = std::fs::read_dir(&slave.outbox)
                .unwrap()
                .filter(|e| e.as_ref().unwrap().path().to_string_lossy().ends_with(".tmp"))
                .count();
            assert_eq!(temporary, 0, "{point}: slave {}: no temporary file is left behind", slave.name);
        }
    }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// `run` for several slaves exports each change for all of them as it comes, and one SIGHUP
/// reloads every configuration: a valid change is taken, a change of what only a restart may
/// change (a slave's name) is refused for that configuration alone, and the process goes on.
#[test]
fn run_serves_several_slaves_and_sighup_reloads_each_configuration() {
    let master = master_with(&SLAVES);
    let work = Workdir::new("slaves-run");
    let all = slaves(&work, "s", &master.conninfo(), &SLAVES, |_| "sleep_interval = 0.2".to_string());
    let log = work.path().join("run.log");
    let mut exporter =
        dbmirror_tests::tools::Running::start(export_all(&all, &["run"]).stderr(std::fs::File::create(&log).unwrap()));
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for("the exporter to start", || read().matches("starting version").count() == 3);
    master.execute("INSERT INTO item (name) VALUES ('one')");
    wait_for("the export", || all.iter().all(|s| transaction_files(&s.outbox).len() == 1));
    assert!(read().contains("rendering 1 transactions once for slaves \"a\", \"b\", \"c\""), "{}", read());

    let edit = |path: &Path, from: &str, to: &str| {
        let text = std::fs::read_to_string(path).unwrap();
        std::fs::write(path, text.replacen(from, to, 1)).unwrap();
    };
    edit(&all[0].config, "sleep_interval = 0.2", "sleep_interval = 0.3\nbatch_size = 7");
    edit(&all[2].config, "slave_name = \"c\"", "slave_name = \"d\"");
    exporter.signal("HUP");
    wait_for("the reload", || read().contains("changed batch_size, sleep_interval"));
    wait_for("the refused change", || read().contains("slave_name cannot change while running"));
    master.execute("INSERT INTO item (name) VALUES ('two')");
    wait_for("the export", || all.iter().all(|s| transaction_files(&s.outbox).len() == 2));
    assert!(exporter.is_running(), "{}", read());
    let output = exporter.terminate();
    assert!(output.status.success(), "{}", read());
    edit(&all[2].config, "slave_name = \"d\"", "slave_name = \"c\"");
    for slave in &all {
        apply_and_compare(&master, slave, &work, "", TABLES);
    }
}

/// Pending rows out of order on disk, read physically for a group of slaves with batches far
/// smaller than the backlog: two large transactions whose buffers interleave, a savepoint whose
/// rows are written before the rows buffered earlier at the top level, the space of aborted
/// rows freed by VACUUM and written again. Wherever the physical order breaks, the rest is read
/// sorted; every slave ends equal to the master.
#[test]
fn pending_rows_interleaved_and_written_into_freed_space_export_in_order_for_a_group() {
    let master = master_with(&["a", "b"]);
    let work = Workdir::new("slaves-interleaved");
    let group = slaves(&work, "group", &master.conninfo(), &["a", "b"], |_| "batch_size = 2".to_string());
    let (mut one, mut two) = (master.client(), master.client());
    for round in 0..2 {
        let base = round * 100_000;
        one.batch_execute(&format!(
            "BEGIN; INSERT INTO item (id, name) SELECT {base} + g, 'one ' || g FROM generate_series(1, 1500) g"
        ))
        .unwrap();
        two.batch_execute(&format!(
            "BEGIN; INSERT INTO item (id, name) SELECT {base} + g, 'two ' || g FROM generate_series(5001, 6500) g"
        ))
        .unwrap();
        master.execute(&format!(
            "BEGIN; INSERT INTO item (id, name) SELECT {base} + g, 'gone' FROM generate_series(9001, 9400) g; ROLLBACK"
        ));
        master.execute(&format!("INSERT INTO item (id, name) VALUES ({base} + 9500, 'between')"));
        one.batch_execute(&format!(
            "SAVEPOINT s; UPDATE item SET price = 1 WHERE id BETWEEN {base} + 1 AND {base} + 10; RELEASE s;
             UPDATE item SET name = 'renamed' WHERE id = {base} + 1;
             DELETE FROM item WHERE id BETWEEN {base} + 700 AND {base} + 800; COMMIT"
        ))
        .unwrap();
        master.execute("VACUUM dbmirror_pendingdata_0, dbmirror_pendingdata_1");
        two.batch_execute(&format!(
            "SAVEPOINT s; INSERT INTO item (id, name) SELECT {base} + g, 'late' FROM generate_series(7001, 7010) g;
             ROLLBACK TO s; UPDATE item SET price = 2 WHERE id > {base} + 6000 AND id < {base} + 7000; COMMIT"
        ))
        .unwrap();
        master.execute(&format!(
            "INSERT INTO item (id, name) SELECT {base} + g, 'small ' || g FROM generate_series(10001, 10005) g;
             UPDATE item SET name = 'last' WHERE id = {base} + 9500"
        ));
        ok(export_all(&group, &["once"]).output().unwrap(), "dbmirror-export once for two slaves");
    }
    for slave in &group {
        apply_and_compare(&master, slave, &work, "", TABLES);
    }
}
