//! One history per master (invariant 12): a master restored from a dump or from an older
//! physical copy never makes a slave skip, repeat or silently accept a file number with
//! different content, and a user's COMMIT never fails because of dbmirror's bookkeeping.

use dbmirror_tests::mirror::Mirror;
use dbmirror_tests::{describe, Cluster};

/// Regression test: a master restored from a file-level copy taken before files it had
/// exported wrote new, different files under the numbers the slave had applied already.
#[test]
fn a_master_restored_from_an_older_copy_is_refused_by_its_outbox() {
    let mut m =
        Mirror::start("CREATE TABLE t (id integer PRIMARY KEY, v text);", "SELECT dbmirror_mirror_table('t')", &[]);
    m.master.execute("INSERT INTO t VALUES (1, 'before the backup')");
    m.sync();
    let backup = m.master.snapshot();
    m.master.execute("INSERT INTO t VALUES (2, 'lost by the restore')");
    m.master.execute("INSERT INTO t VALUES (3, 'lost too')");
    m.sync();

    m.master.restore(&backup);
    m.master.execute("INSERT INTO t VALUES (4, 'after the restore')");
    let export = m.export_once();
    assert_eq!(export.status.code(), Some(7), "{}", describe(&export));
    let stderr = String::from_utf8_lossy(&export.stderr);
    assert!(stderr.contains("the master is behind its outbox"), "{stderr}");
    assert!(stderr.contains("restored from an older copy"), "{stderr}");
    assert_eq!(dbmirror_tests::tools::transaction_files(&m.outbox).len(), 3, "nothing was written");
}

/// Regression test: a master restored with pg_dump/pg_restore into a new cluster carried the
/// old cluster's pending changes and xid horizon: new changes were never exported, and once the
/// new cluster's xids reached an old pending one, user COMMITs failed on dbmirror's key.
#[test]
fn a_master_restored_from_a_dump_starts_clean_and_says_what_to_do() {
    let mut m =
        Mirror::start("CREATE TABLE t (id integer PRIMARY KEY, v text);", "SELECT dbmirror_mirror_table('t')", &[]);
    m.master.execute("INSERT INTO t VALUES (1, 'exported')");
    m.sync();
    // Pending, never exported, and dumped with the table's rows.
    m.master.execute("INSERT INTO t VALUES (2, 'pending at the dump')");
    let dump = m.work.path().join("master.dump");
    m.master.client_program("pg_dump", &["-Fc", "-f", dump.to_str().unwrap()]);

    let restored = Cluster::start("restored");
    restored.client_program("pg_restore", &["--exit-on-error", "-d", "postgres", dump.to_str().unwrap()]);
    // The slaves are kept, the capture state is not, and capture is complete again.
    assert_eq!(restored.query_value("SELECT string_agg(slavename, ',') FROM dbmirror_mirrorhost"), "slave1");
    assert_eq!(restored.query_value("SELECT count(*)::text FROM dbmirror_pending"), "0");
    assert_eq!(restored.query_value("SELECT count(*)::text FROM dbmirror_capture_problems()"), "0");
    // Many transactions: none of them may collide with anything of the old cluster's.
    for i in 3..60 {
        restored.execute(&format!("INSERT INTO t VALUES ({i}, 'in the restored master')"));
    }
    assert_eq!(restored.query_value("SELECT count(*)::text FROM dbmirror_pending"), "57");

    // Its exporter refuses to continue the old cluster's stream, and says what to do.
    let config = dbmirror_tests::tools::export_config(&m.work, &restored, "slave1", &m.work.dir("restored-outbox"), "");
    let export = dbmirror_tests::tools::export_command(&config, &["once"]).output().unwrap();
    assert_eq!(export.status.code(), Some(7), "{}", describe(&export));
    let stderr = String::from_utf8_lossy(&export.stderr);
    assert!(stderr.contains("was made by cluster"), "{stderr}");
    assert!(stderr.contains("SELECT dbmirror_reset()"), "{stderr}");
    // After a reset, a new stream starts, from a new master the old slaves refuse.
    restored.execute("SELECT dbmirror_reset()");
    let export = dbmirror_tests::tools::export_command(&config, &["once"]).output().unwrap();
    assert!(export.status.success(), "{}", describe(&export));
    let files = dbmirror_tests::tools::transaction_files(&m.work.dir("restored-outbox"));
    assert_eq!(files.len(), 57);
    let output = dbmirror_tests::tools::psql_file(&m.by_hand, &files[0]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("comes from master"), "{}", describe(&output));

    // One command seeds the slave again from the restored master; the files of the stream
    // before it are not applied.
    let snapshot = dbmirror_tests::tools::export_command(&config, &["snapshot"]).output().unwrap();
    assert!(snapshot.status.success(), "{}", describe(&snapshot));
    dbmirror_tests::tools::transfer(&m.work.dir("restored-outbox"), &m.inbound);
    let applied = dbmirror_tests::tools::apply(&m.apply, &["once", "--replace"]);
    assert!(applied.status.success(), "{}", describe(&applied));
    dbmirror_tests::assert_tables_equal(&restored, &m.applied, &["t"]);
}
