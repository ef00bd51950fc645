//! Complete capture (invariant 11): every committed change of a mirrored table reaches the
//! slave, whatever the writing session's `session_replication_role`, however the table came to
//! be mirrored and however many triggers call `recordchange()`, through two-phase commit and
//! DDL that follows the change; and what dbmirror cannot capture is refused or reported where
//! it happens, never discovered later on the slave.

use dbmirror_tests::mirror::Mirror;
use dbmirror_tests::tools::export_command;
use dbmirror_tests::{describe, Cluster};

fn error_of(master: &Cluster, sql: &str) -> (String, String) {
    let err = master.client().batch_execute(sql).expect_err(sql);
    let db = err.as_db_error().unwrap_or_else(|| panic!("{sql}: {err}"));
    (db.message().to_string(), db.hint().unwrap_or_default().to_string())
}

/// Regression test: writes made as a replica (logical replication workers, pg_restore
/// --disable-triggers, a session that sets the role) were not captured at all.
#[test]
fn writes_with_session_replication_role_replica_are_captured() {
    let mut m =
        Mirror::start("CREATE TABLE t (id integer PRIMARY KEY, v text);", "SELECT dbmirror_mirror_table('t')", &[]);
    m.master.execute(
        "SET session_replication_role = replica;
         INSERT INTO t VALUES (1, 'as a replica'), (2, 'too');
         UPDATE t SET v = 'changed' WHERE id = 2;
         TRUNCATE t;
         INSERT INTO t VALUES (3, 'after truncate');",
    );
    m.sync();
    assert_eq!(m.applied.query_value("SELECT string_agg(id || v, ',') FROM t"), "3after truncate");
}

/// Regression test: `ALTER TABLE ... DISABLE TRIGGER` (which pg_restore --disable-triggers also
/// runs) made every later write of the table go uncaptured, silently.
#[test]
fn disabling_capture_is_refused_and_a_disabled_capture_is_reported() {
    let m = Mirror::start("CREATE TABLE t (id integer PRIMARY KEY);", "SELECT dbmirror_mirror_table('t')", &[]);
    for sql in [
        "ALTER TABLE t DISABLE TRIGGER ALL",
        "ALTER TABLE t DISABLE TRIGGER USER",
        "ALTER TABLE t DISABLE TRIGGER dbmirror_capture",
        "ALTER TABLE t ENABLE REPLICA TRIGGER dbmirror_capture",
    ] {
        let (message, hint) = error_of(&m.master, sql);
        assert!(message.starts_with("capture on table public.t "), "{sql}: {message}");
        assert!(hint.contains("dbmirror_mirror_table('public.t')"), "{sql}: {hint}");
    }
    assert_eq!(m.master.query_value("SELECT count(*)::text FROM dbmirror_capture_problems()"), "0");

    // With dbmirror's event triggers out of the way, a disabled capture cannot be refused: then
    // it is reported by status and verify, and writes that still reach dbmirror's own triggers
    // are refused.
    m.master.execute(
        "ALTER EVENT TRIGGER dbmirror_ddl_command_end DISABLE;
         ALTER TABLE t DISABLE TRIGGER dbmirror_capture;",
    );
    let (message, _) = error_of(&m.master, "INSERT INTO t VALUES (1)");
    assert_eq!(message, "capture on table public.t is disabled: trigger \"dbmirror_capture\" is disabled");
    let status = export_command(&m.export, &["status"]).output().unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("CAPTURE PROBLEM:       capture on table public.t is disabled"), "{}", describe(&status));
    assert!(text.contains("event trigger dbmirror_ddl_command_end is missing or not ENABLE ALWAYS"), "{text}");
    let verify = export_command(&m.export, &["verify", "--slave", &m.applied.conninfo()]).output().unwrap();
    assert_eq!(verify.status.code(), Some(6), "{}", describe(&verify));
    assert!(String::from_utf8_lossy(&verify.stderr).contains("capture is incomplete"), "{}", describe(&verify));
    // The exporter says so on every run, and goes on exporting what was captured.
    let export = m.export_once();
    assert!(export.status.success(), "{}", describe(&export));
    assert!(String::from_utf8_lossy(&export.stderr).contains("capture is incomplete: capture on table public.t"));
    // dbmirror_mirror_table() repairs it.
    m.master.execute("SELECT dbmirror_mirror_table('t'); INSERT INTO t VALUES (1);");
}

/// Regression test: unlogged tables were accepted; a crash empties them without any trigger.
#[test]
fn unlogged_and_temporary_tables_are_refused_however_they_come() {
    let m = Mirror::start("CREATE TABLE t (id integer PRIMARY KEY);", "SELECT dbmirror_mirror_table('t')", &[]);
    m.master.execute("CREATE UNLOGGED TABLE u (id integer PRIMARY KEY);");
    let unlogged = "cannot mirror unlogged table public.u";
    assert_eq!(error_of(&m.master, "SELECT dbmirror_mirror_table('u')").0, unlogged);
    assert_eq!(
        error_of(&m.master, r#"CREATE TRIGGER "u_Trig" AFTER INSERT OR DELETE OR UPDATE ON u FOR EACH ROW EXECUTE PROCEDURE "recordchange" ()"#).0,
        unlogged
    );
    let mut session = m.master.client();
    session.batch_execute("CREATE TEMP TABLE tmp (id integer PRIMARY KEY)").unwrap();
    let err = session.batch_execute("SELECT dbmirror_mirror_table('tmp')").unwrap_err();
    assert!(err.as_db_error().unwrap().message().starts_with("cannot mirror temporary table"), "{err:?}");
    let (message, hint) = error_of(&m.master, "ALTER TABLE t SET UNLOGGED");
    assert_eq!(message, "cannot mirror unlogged table public.t");
    assert!(hint.contains("SET LOGGED"), "{hint}");
}

/// Regression test: a table mirrored with the seed's own CREATE TRIGGER had no TRUNCATE
/// capture, and dbmirror_mirror_table() said "already mirrored" and added none.
#[test]
fn tables_mirrored_in_the_seeds_form_capture_truncate() {
    let mut m = Mirror::start(
        "CREATE TABLE t (id integer PRIMARY KEY); CREATE TABLE s (id integer PRIMARY KEY);",
        r#"CREATE TRIGGER "t_Trig" AFTER INSERT OR DELETE OR UPDATE ON "t" FOR EACH ROW EXECUTE PROCEDURE "recordchange" ();
           CREATE TRIGGER "s_Trig" AFTER INSERT OR DELETE OR UPDATE ON "s" FOR EACH ROW EXECUTE PROCEDURE "recordchange" ();"#,
        &[],
    );
    m.master.execute("INSERT INTO t VALUES (1), (2), (3), (4), (5); INSERT INTO s VALUES (1);");
    m.sync();
    m.master.execute("DELETE FROM t WHERE id > 3; TRUNCATE t; INSERT INTO t VALUES (7);");
    m.sync();
    // Without dbmirror's event trigger (as on a master set up before it), the table's capture
    // is incomplete: it is reported, and writes are refused until dbmirror_mirror_table()
    // completes it.
    m.master.execute(
        r#"ALTER EVENT TRIGGER dbmirror_ddl_command_end DISABLE;
           SELECT dbmirror_unmirror_table('s');
           CREATE TRIGGER "s_Trig" AFTER INSERT OR DELETE OR UPDATE ON "s" FOR EACH ROW EXECUTE PROCEDURE "recordchange" ();"#,
    );
    assert_eq!(
        m.master
            .query_value("SELECT string_agg(problem, '; ') FROM dbmirror_capture_problems() WHERE tbl = 's'::regclass"),
        "table public.s is mirrored by trigger \"s_Trig\" but lacks dbmirror's ordering and TRUNCATE triggers; \
         capture on table public.s does not fire in every session: trigger \"s_Trig\" is not ENABLE ALWAYS"
    );
    let (message, hint) = error_of(&m.master, "INSERT INTO s VALUES (2)");
    assert!(message.contains("lacks dbmirror's ordering and TRUNCATE triggers"), "{message}");
    assert!(hint.contains("dbmirror_mirror_table('public.s')"), "{hint}");
    m.master.execute("SELECT dbmirror_mirror_table('s'); TRUNCATE s; INSERT INTO s VALUES (2);");
    m.master.execute("ALTER EVENT TRIGGER dbmirror_ddl_command_end ENABLE ALWAYS;");
    m.sync();
}

/// Regression test: a seed-form trigger added to a table already mirrored (as an upgrade
/// script that recreates its replication triggers does) captured every change twice.
#[test]
fn a_table_is_captured_once_however_many_triggers_call_recordchange() {
    let mut m = Mirror::start(
        "CREATE TABLE u (id integer PRIMARY KEY, v text);",
        r#"SELECT dbmirror_mirror_table('u');
           CREATE TRIGGER "u_Trig" AFTER INSERT OR DELETE OR UPDATE ON "u" FOR EACH ROW EXECUTE PROCEDURE "recordchange" ();"#,
        &[],
    );
    m.master.execute(
        "INSERT INTO u VALUES (1, 'a'), (2, 'b'); UPDATE u SET v = 'c' WHERE id = 1; DELETE FROM u WHERE id = 2;",
    );
    assert_eq!(m.master.query_value("SELECT changes::text FROM dbmirror_pending"), "4");
    m.sync();
    // A recordchange() trigger that would capture only part of the changes is refused.
    for (sql, why) in [
        (
            r#"CREATE TRIGGER part AFTER INSERT ON u FOR EACH ROW EXECUTE PROCEDURE "recordchange" ()"#,
            "does not fire on each of INSERT, UPDATE and DELETE",
        ),
        (
            r#"CREATE TRIGGER part AFTER INSERT OR UPDATE OF v OR DELETE ON u FOR EACH ROW EXECUTE PROCEDURE "recordchange" ()"#,
            "fires only for some columns",
        ),
        (
            r#"CREATE TRIGGER part AFTER INSERT OR UPDATE OR DELETE ON u FOR EACH ROW WHEN (true) EXECUTE PROCEDURE "recordchange" ()"#,
            "has a WHEN condition",
        ),
        (
            r#"CREATE TRIGGER part AFTER TRUNCATE ON u FOR EACH STATEMENT EXECUTE PROCEDURE "recordchange" ()"#,
            "fires FOR EACH STATEMENT",
        ),
    ] {
        let (message, _) = error_of(&m.master, sql);
        assert!(message.starts_with("trigger \"part\" on table public.u calls recordchange() but "), "{message}");
        assert!(message.contains(why), "{message}");
    }
}

/// Regression test: a deferrable primary key, or one over a generated column, was accepted by
/// dbmirror_mirror_table(), then every write failed with "has no primary key".
#[test]
fn keys_that_cannot_find_rows_on_the_slave_are_refused_with_the_real_reason() {
    let m = Mirror::start(
        "CREATE TABLE dk (id integer PRIMARY KEY DEFERRABLE);
         CREATE TABLE gk (a integer, g integer GENERATED ALWAYS AS (a * 2) STORED PRIMARY KEY);",
        "SELECT 1",
        &[],
    );
    let deferrable = "primary key of table public.dk is deferrable";
    let generated = "primary key of table public.gk uses generated column \"g\"";
    assert_eq!(error_of(&m.master, "SELECT dbmirror_mirror_table('dk')").0, deferrable);
    assert_eq!(error_of(&m.master, "SELECT dbmirror_mirror_table('gk')").0, generated);
    // The seed's form is accepted with a warning; the first write says why it cannot go on.
    m.master.execute(
        r#"CREATE TRIGGER "dk_Trig" AFTER INSERT OR DELETE OR UPDATE ON dk FOR EACH ROW EXECUTE PROCEDURE "recordchange" ();
           CREATE TRIGGER "gk_Trig" AFTER INSERT OR DELETE OR UPDATE ON gk FOR EACH ROW EXECUTE PROCEDURE "recordchange" ();"#,
    );
    assert_eq!(error_of(&m.master, "INSERT INTO dk VALUES (1)").0, deferrable);
    assert_eq!(error_of(&m.master, "INSERT INTO gk VALUES (1)").0, generated);
}

/// Regression test: the shape cache took PREPARE TRANSACTION for a commit, so after ROLLBACK
/// PREPARED the next change referred to a shape that was never stored, and the stream stalled.
#[test]
fn two_phase_commit_rolled_back_or_committed_is_exported() {
    let mut m = Mirror::start(
        "CREATE TABLE t (id integer PRIMARY KEY, v text);",
        "SELECT dbmirror_mirror_table('t')",
        &["max_prepared_transactions = 4"],
    );
    // In one session, as the shape cache is per session; exported before any other session
    // could store the same shape.
    let mut session = m.master.client();
    for sql in [
        "BEGIN",
        "INSERT INTO t VALUES (1, 'rolled back')",
        "PREPARE TRANSACTION 'p1'",
        "ROLLBACK PREPARED 'p1'",
        "INSERT INTO t VALUES (2, 'after')",
    ] {
        session.batch_execute(sql).unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }
    m.sync();
    for sql in ["BEGIN", "INSERT INTO t VALUES (3, 'prepared')", "PREPARE TRANSACTION 'p2'"] {
        session.batch_execute(sql).unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }
    m.master.execute("INSERT INTO t VALUES (4, 'while prepared')");
    m.sync();
    m.master.execute("COMMIT PREPARED 'p2'");
    m.sync();
    assert_eq!(m.applied.query_value("SELECT string_agg(id::text, ',' ORDER BY id) FROM t"), "2,3,4");
}

/// Regression test: a change captured before `DROP TYPE` (or an enum's `RENAME VALUE`) could not
/// be exported (`cache lookup failed for type`), or was exported with the new label.
#[test]
fn pending_changes_export_whatever_ddl_follows_them() {
    let mut m = Mirror::start(
        "CREATE TYPE color AS ENUM ('red', 'green');
         CREATE TYPE stamp AS (at timestamptz, f float8, c color);
         CREATE DOMAIN small AS integer CHECK (VALUE < 100);
         CREATE TABLE t (id integer PRIMARY KEY, c color, s stamp, cs color[], d small);",
        "SELECT dbmirror_mirror_table('t')",
        &[],
    );
    m.master.execute(
        "SET TimeZone = 'Pacific/Chatham'; SET DateStyle = 'SQL, DMY'; SET extra_float_digits = 0;
         INSERT INTO t VALUES (1, 'red', ROW('2024-02-29 12:00:00+00', 0.1, 'green'), '{red,green}', 7);",
    );
    m.sync();
    m.master.execute("UPDATE t SET c = 'green', s = ROW('2025-01-01 00:00:00+00', 1e-300, 'red'), d = 8");
    // The change was captured with the old label and types, and still exports after they are
    // gone; the slaves follow the DDL by hand once it is applied.
    let ddl = "ALTER TYPE color RENAME VALUE 'green' TO 'verde';
               ALTER TABLE t DROP COLUMN s; ALTER TABLE t DROP COLUMN cs; ALTER TABLE t DROP COLUMN c;
               DROP TYPE stamp; DROP TYPE color;";
    m.master.execute(ddl);
    m.apply_all();
    let file = dbmirror_tests::tools::transaction_files(&m.outbox).pop().unwrap();
    let text = std::fs::read_to_string(file).unwrap();
    assert!(text.contains("'green', \"s\" = '(\"2025-01-01 00:00:00+00\",1e-300,red)'"), "{text}");
    m.on_slaves(ddl);
    m.assert_equal();
}

/// A statement starts without `~dbmirror_order` only where capture is complete, and a session
/// sees the capture trigger disabled behind its back before its next statement starts: its
/// prepared statements (generic plans made while capture was complete) are refused, as are
/// COPY and a plain statement, and nothing goes uncaptured.
#[test]
fn capture_disabled_by_another_session_is_refused_to_prepared_statements() {
    let mut m =
        Mirror::start("CREATE TABLE t (id integer PRIMARY KEY, v text);", "SELECT dbmirror_mirror_table('t')", &[]);
    let mut session = m.master.client();
    session
        .batch_execute(
            "SET plan_cache_mode = force_generic_plan;
             PREPARE ins(integer) AS INSERT INTO t VALUES ($1, 'new');
             PREPARE upd(integer) AS UPDATE t SET v = 'updated' WHERE id = $1;
             PREPARE del(integer) AS DELETE FROM t WHERE id = $1;
             EXECUTE ins(1); EXECUTE ins(2); EXECUTE ins(3); EXECUTE upd(1); EXECUTE del(2);",
        )
        .unwrap();
    m.master.execute(
        "ALTER EVENT TRIGGER dbmirror_ddl_command_end DISABLE;
         ALTER TABLE t DISABLE TRIGGER dbmirror_capture;",
    );
    for sql in ["EXECUTE ins(4)", "EXECUTE upd(3)", "EXECUTE del(3)", "UPDATE t SET v = 'plain'"] {
        let err = session.batch_execute(sql).expect_err(sql);
        let message = err.as_db_error().map(|e| e.message().to_string()).unwrap_or_else(|| err.to_string());
        assert_eq!(message, "capture on table public.t is disabled: trigger \"dbmirror_capture\" is disabled", "{sql}");
    }
    let mut copy = session.copy_in("COPY t FROM STDIN").unwrap();
    std::io::Write::write_all(&mut copy, b"6\tcopied\n").unwrap();
    let err = copy.finish().expect_err("COPY into a table whose capture is disabled");
    let message = err.as_db_error().map(|e| e.message().to_string()).unwrap_or_else(|| err.to_string());
    assert!(message.starts_with("capture on table public.t is disabled"), "{message}");
    m.master.execute(
        "ALTER EVENT TRIGGER dbmirror_ddl_command_end ENABLE ALWAYS;
         SELECT dbmirror_mirror_table('t');",
    );
    session.batch_execute("EXECUTE ins(5); EXECUTE upd(3); EXECUTE del(1);").unwrap();
    m.sync();
    assert_eq!(m.applied.query_value("SELECT string_agg(id || v, ',' ORDER BY id) FROM t"), "3updated,5new");
}
