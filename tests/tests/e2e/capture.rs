//! The capture extension on a real cluster: what `recordchange()` records for each kind of
//! change. Every test checks the captured values, not only that something was captured.

use dbmirror_tests::{captured, Captured, Cluster};

fn master() -> Cluster {
    let master = Cluster::start("master");
    master.create_extension();
    master
}

fn v(values: &[Option<&str>]) -> Values {
    Some(values.iter().map(|v| v.map(str::to_string)).collect())
}

/// A captured change without its xid: (op, table, old key, new values, unchanged columns).
type Change = (char, String, Values, Values, Vec<String>);
type Values = Option<Vec<Option<String>>>;

fn change(op: char, table: &str, key: Values, values: Values, unchanged: &[&str]) -> Change {
    (op, table.to_string(), key, values, unchanged.iter().map(|s| s.to_string()).collect())
}

/// The captured changes without xids, for comparing with expectations.
fn changes(master: &Cluster) -> Vec<Change> {
    captured(master).into_iter().map(|c| (c.op, c.table, c.key, c.values, c.unchanged)).collect()
}

#[test]
fn seed_instructions_work_verbatim() {
    let master = master();
    master.execute(
        r#"INSERT INTO dbmirror_MirrorHost (SlaveName) VALUES ('backup_system');
           CREATE TABLE "T" (id integer PRIMARY KEY, name text);
           CREATE TRIGGER "T_Trig" AFTER INSERT OR DELETE OR UPDATE ON "T" FOR EACH ROW EXECUTE PROCEDURE "recordchange" ();
           INSERT INTO "T" VALUES (1, 'one');"#,
    );
    assert_eq!(master.query_value("SELECT slavename FROM dbmirror_mirrorhost"), "backup_system");
    assert_eq!(changes(&master), [change('i', "public.T", None, v(&[Some("1"), Some("one")]), &[])]);
}

#[test]
fn inserts_updates_deletes_and_truncates_are_captured_with_their_values() {
    let master = master();
    master.execute(
        "CREATE TABLE t (id integer PRIMARY KEY, name text, note text, n numeric);
         SELECT dbmirror_mirror_table('t');
         INSERT INTO t VALUES (1, 'a''b', NULL, 1.50), (2, 'x', 'keep', 'NaN');
         UPDATE t SET name = NULL WHERE id = 1;
         UPDATE t SET note = note WHERE id = 2;
         UPDATE t SET id = 3, n = 2 WHERE id = 2;
         DELETE FROM t WHERE id = 1;
         TRUNCATE t;",
    );
    assert_eq!(
        changes(&master),
        [
            change('i', "public.t", None, v(&[Some("1"), Some("a'b"), None, Some("1.50")]), &[]),
            change('i', "public.t", None, v(&[Some("2"), Some("x"), Some("keep"), Some("NaN")]), &[]),
            // Only the changed column and the key travel with an update.
            change('u', "public.t", None, v(&[Some("1"), None, None, None]), &["id", "note", "n"]),
            // The update that changed nothing was not captured; a key change carries the old key.
            change('u', "public.t", v(&[Some("2")]), v(&[Some("3"), None, None, Some("2")]), &["name", "note"]),
            change('d', "public.t", v(&[Some("1")]), None, &[]),
            change('t', "public.t", None, None, &[]),
        ]
    );
    // One row in dbmirror_Pending per transaction, counting its changes (the statements ran
    // as one implicit transaction).
    assert_eq!(
        master.query_value("SELECT string_agg(changes::text, ',' ORDER BY commit_seq) FROM dbmirror_pending"),
        "6"
    );
}

#[test]
fn large_values_are_captured_whole_not_as_toast_pointers() {
    let master = master();
    master.execute(
        "CREATE TABLE doc (id integer PRIMARY KEY, body text, other text);
         ALTER TABLE doc ALTER COLUMN body SET STORAGE EXTERNAL;
         SELECT dbmirror_mirror_table('doc');
         INSERT INTO doc SELECT 1, string_agg(md5(g::text), '') , 'x' FROM generate_series(1, 5000) g;
         UPDATE doc SET other = 'y';
         DELETE FROM doc;",
    );
    // The row is gone and its TOAST rows with it; the captured image must still hold the value.
    master.execute("VACUUM doc;");
    let expected: String = master.query_value("SELECT string_agg(md5(g::text), '') FROM generate_series(1, 5000) g");
    let captured = captured(&master);
    assert_eq!(captured[0].values.as_ref().unwrap()[1].as_deref(), Some(expected.as_str()));
    // The update left the large value out: it did not change (the key is kept, unchanged).
    assert_eq!(captured[1].unchanged, ["id", "body"]);
    assert_eq!(captured[1].values, v(&[Some("1"), None, Some("y")]));
}

#[test]
fn changes_in_savepoints_and_exception_blocks_belong_to_the_top_level_transaction() {
    let master = master();
    master.execute(
        "CREATE TABLE t (id integer PRIMARY KEY);
         SELECT dbmirror_mirror_table('t');
         BEGIN;
         INSERT INTO t VALUES (1);
         SAVEPOINT a;
         INSERT INTO t VALUES (2);
         RELEASE a;
         SAVEPOINT b;
         INSERT INTO t VALUES (3);
         ROLLBACK TO b;
         DO $$ BEGIN
             INSERT INTO t VALUES (4);
             BEGIN
                 INSERT INTO t VALUES (5);
                 RAISE EXCEPTION 'undo 5';
             EXCEPTION WHEN raise_exception THEN NULL;
             END;
         END $$;
         COMMIT;",
    );
    let captured = captured(&master);
    let ids: Vec<_> = captured.iter().map(|c| c.values.as_ref().unwrap()[0].clone().unwrap()).collect();
    assert_eq!(ids, ["1", "2", "4"]);
    let top_xid: i64 = master.query_value("SELECT xid::text FROM dbmirror_pending").parse().unwrap();
    assert!(captured.iter().all(|c| c.xid == top_xid), "{captured:?} should all carry xid {top_xid}");
    assert_eq!(master.query_value("SELECT changes::text FROM dbmirror_pending"), "3");
}

#[test]
fn a_transaction_whose_changes_all_rolled_back_leaves_nothing() {
    let master = master();
    master.execute(
        "CREATE TABLE t (id integer PRIMARY KEY);
         SELECT dbmirror_mirror_table('t');
         BEGIN; SAVEPOINT a; INSERT INTO t VALUES (1); ROLLBACK TO a; COMMIT;
         BEGIN; INSERT INTO t VALUES (2); ROLLBACK;",
    );
    assert_eq!(master.query_value("SELECT count(*)::text FROM dbmirror_pending"), "0");
    assert_eq!(master.query_value("SELECT count(*)::text FROM dbmirror_pendingdata"), "0");
}

/// Regression guard for the seed's flaw "cascading AFTER triggers log out of order": a
/// trigger on `parent` inserts into `child`, and fires before the capture trigger does.
#[test]
fn cascading_triggers_are_captured_in_the_order_the_changes_happened() {
    let master = master();
    master.execute(
        "CREATE TABLE parent (id integer PRIMARY KEY);
         CREATE TABLE child (id integer PRIMARY KEY, parent integer REFERENCES parent);
         CREATE TABLE grandchild (id integer PRIMARY KEY, child integer REFERENCES child);
         CREATE FUNCTION add_child() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN INSERT INTO child VALUES (NEW.id * 10, NEW.id); RETURN NULL; END $$;
         CREATE FUNCTION add_grandchild() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN INSERT INTO grandchild VALUES (NEW.id * 10, NEW.id); RETURN NULL; END $$;
         -- Named to fire before dbmirror_capture (AFTER triggers fire in name order).
         CREATE TRIGGER a_add_child AFTER INSERT ON parent FOR EACH ROW EXECUTE FUNCTION add_child();
         CREATE TRIGGER a_add_grandchild AFTER INSERT ON child FOR EACH ROW EXECUTE FUNCTION add_grandchild();
         SELECT dbmirror_mirror_table('parent');
         SELECT dbmirror_mirror_table('child');
         SELECT dbmirror_mirror_table('grandchild');
         INSERT INTO parent VALUES (1), (2);
         DELETE FROM parent WHERE false;",
    );
    let order: Vec<String> = captured(&master)
        .iter()
        .map(|c| format!("{} {}", c.table, c.values.as_ref().unwrap()[0].as_deref().unwrap()))
        .collect();
    assert_eq!(
        order,
        [
            "public.parent 1",
            "public.parent 2",
            "public.child 10",
            "public.grandchild 100",
            "public.child 20",
            "public.grandchild 200",
        ]
    );
}

#[test]
fn a_table_without_primary_key_is_refused_with_a_hint() {
    let master = master();
    master.execute("CREATE TABLE nokey (a integer);");
    let err = master.client().batch_execute("SELECT dbmirror_mirror_table('nokey')").unwrap_err();
    let db = err.as_db_error().expect("a database error");
    assert_eq!(db.message(), "table public.nokey has no primary key");
    assert!(db.hint().unwrap().contains("ADD PRIMARY KEY"), "{:?}", db.hint());

    // The seed's form is accepted with a warning (the key may come later); the first write is
    // refused with the same message.
    master.execute(
        r#"CREATE TRIGGER nokey_trig AFTER INSERT OR DELETE OR UPDATE ON nokey FOR EACH ROW EXECUTE PROCEDURE "recordchange" ();"#,
    );
    let err = master.client().batch_execute("INSERT INTO nokey VALUES (1)").unwrap_err();
    let db = err.as_db_error().expect("a database error");
    assert_eq!(db.message(), "table public.nokey has no primary key");
    assert!(db.hint().unwrap().contains("dbmirror_unmirror_table"), "{:?}", db.hint());
    assert_eq!(master.query_value("SELECT count(*)::text FROM nokey"), "0");
}

#[test]
fn dropping_the_primary_key_of_a_mirrored_table_stops_writes_with_a_clear_error() {
    let master = master();
    master.execute(
        "CREATE TABLE t (id integer CONSTRAINT t_pk PRIMARY KEY, v text);
         SELECT dbmirror_mirror_table('t');
         INSERT INTO t VALUES (1, 'a');
         ALTER TABLE t DROP CONSTRAINT t_pk;",
    );
    let err = master.client().batch_execute("UPDATE t SET v = 'b'").unwrap_err();
    assert_eq!(err.as_db_error().unwrap().message(), "table public.t has no primary key");
    assert_eq!(master.query_value("SELECT v FROM t"), "a");
}

#[test]
fn other_objects_and_trigger_misuse_are_refused() {
    let master = master();
    master.execute(
        "CREATE TABLE p (id integer PRIMARY KEY) PARTITION BY RANGE (id);
         CREATE VIEW w AS SELECT 1 AS x;
         CREATE TABLE t (id integer PRIMARY KEY);",
    );
    let message =
        |sql: &str| master.client().batch_execute(sql).unwrap_err().as_db_error().unwrap().message().to_string();
    assert_eq!(message("SELECT dbmirror_mirror_table('p')"), "cannot mirror partitioned table public.p");
    assert_eq!(message("SELECT dbmirror_mirror_table('w')"), "public.w is not a table");
    assert_eq!(
        message("SELECT dbmirror_mirror_table('dbmirror_pending')"),
        "cannot mirror dbmirror's own table public.dbmirror_pending"
    );
    assert_eq!(
        message("CREATE TRIGGER before_trig BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION recordchange()"),
        "trigger \"before_trig\" on table public.t calls recordchange() but does not fire AFTER the change"
    );
}

#[test]
fn mirroring_can_be_started_and_stopped_by_name() {
    let master = master();
    master.execute(
        "CREATE TABLE t (id integer PRIMARY KEY);
         SELECT dbmirror_mirror_table('t');
         SELECT dbmirror_mirror_table('t');",
    );
    // One visible capture trigger; the ordering and TRUNCATE triggers are internal, as foreign
    // keys' are, and ENABLE ALWAYS like it.
    assert_eq!(
        master.query_value(
            "SELECT string_agg(tgname || ':' || tgenabled::text, ',' ORDER BY tgname) FROM pg_trigger \
              WHERE tgrelid = 't'::regclass AND NOT tgisinternal"
        ),
        "dbmirror_capture:A"
    );
    assert_eq!(
        master.query_value(
            "SELECT string_agg(tgenabled::text, ',') FROM pg_trigger WHERE tgrelid = 't'::regclass AND tgisinternal"
        ),
        "A,A"
    );
    assert_eq!(master.query_value("SELECT string_agg(t::text, ',') FROM dbmirror_mirrored_tables() t"), "t");
    master.execute("SELECT dbmirror_unmirror_table('t'); INSERT INTO t VALUES (1);");
    assert_eq!(master.query_value("SELECT count(*)::text FROM pg_trigger WHERE tgrelid = 't'::regclass"), "0");
    assert_eq!(captured(&master), Vec::<Captured>::new());
}

#[test]
fn any_identifier_is_captured_as_it_is() {
    let master = master();
    master.execute(
        r#"CREATE SCHEMA "Sch ""é"" ma";
           CREATE TABLE "Sch ""é"" ma"."Mixed ""Table"" ☃" ("Id Col" integer PRIMARY KEY, "sélect" text, "a""b" text);
           SELECT dbmirror_mirror_table('"Sch ""é"" ma"."Mixed ""Table"" ☃"');
           INSERT INTO "Sch ""é"" ma"."Mixed ""Table"" ☃" VALUES (1, 'ünïcode 😀', 'q"uote');"#,
    );
    assert_eq!(
        changes(&master),
        [change(
            'i',
            "Sch \"é\" ma.Mixed \"Table\" ☃",
            None,
            v(&[Some("1"), Some("ünïcode 😀"), Some("q\"uote")]),
            &[]
        )]
    );
    assert_eq!(master.query_value("SELECT array_to_string(columns, '|') FROM dbmirror_shape"), "Id Col|sélect|a\"b");
}

#[test]
fn values_do_not_depend_on_the_writers_session_settings() {
    let master = master();
    master.execute(
        "CREATE TABLE t (id integer PRIMARY KEY, d date, ts timestamptz, f float8, b bytea, i interval, m money);
         SELECT dbmirror_mirror_table('t');
         SET DateStyle = 'SQL, DMY'; SET TimeZone = 'Pacific/Chatham'; SET extra_float_digits = 0;
         SET bytea_output = 'escape'; SET IntervalStyle = 'sql_standard'; SET lc_monetary = 'C.UTF-8';
         INSERT INTO t VALUES (1, '2024-02-29', '2024-02-29 12:00:00+00', 0.1, '\\x00ff', '1 mon 2 days 00:00:01.5', 12.34);",
    );
    assert_eq!(
        captured(&master)[0].values,
        v(&[
            Some("1"),
            Some("2024-02-29"),
            Some("2024-02-29 12:00:00+00"),
            Some("0.1"),
            Some("\\x00ff"),
            Some("1 mon 2 days 00:00:01.5"),
            Some("$12.34"),
        ])
    );
}

/// Regression guard: the first change of a table in one open transaction must not make another
/// transaction's first change of the same table wait for it (a unique index on dbmirror_Shape
/// did, since both stored the table's shape).
#[test]
fn first_changes_of_a_table_in_concurrent_transactions_do_not_wait_for_each_other() {
    let master = master();
    master.execute("CREATE TABLE t (id integer PRIMARY KEY); SELECT dbmirror_mirror_table('t');");
    let mut first = master.client();
    first.batch_execute("BEGIN; INSERT INTO t VALUES (1)").unwrap();
    let mut second = master.client();
    second
        .batch_execute("SET statement_timeout = '10s'; INSERT INTO t VALUES (2)")
        .expect("the second writer must not wait for the first one's transaction");
    first.batch_execute("COMMIT").unwrap();
    let ids: Vec<_> = captured(&master).iter().map(|c| c.values.as_ref().unwrap()[0].clone().unwrap()).collect();
    assert_eq!(ids, ["2", "1"], "in commit order");
}

/// Regression test: errors raised inside the extension, its own and PostgreSQL's, showed a Rust
/// backtrace in their DETAIL when the server ran with RUST_BACKTRACE set.
#[test]
fn errors_never_show_a_rust_backtrace() {
    let master = Cluster::start_with_env("master", &[], &[("RUST_BACKTRACE", "1")]);
    master.create_extension();
    master.execute(
        r#"CREATE TABLE nokey (a integer);
           CREATE TRIGGER nokey_trig AFTER INSERT OR DELETE OR UPDATE ON nokey FOR EACH ROW EXECUTE PROCEDURE "recordchange" ();"#,
    );
    for sql in [
        // dbmirror's own error.
        "INSERT INTO nokey VALUES (1)",
        // PostgreSQL's errors, raised inside the extension's code.
        "SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; SET TimeZone = 'UTC'; \
         SET extra_float_digits = 3; SET bytea_output = 'hex'; SET lc_monetary = 'C'; \
         INSERT INTO dbmirror_shape (shape, relid, nspname, relname, columns, types, typmods, key) \
             VALUES (42, 0, 's', 'r', '{c}', '{4294967295}', '{-1}', '{0}'); \
         SELECT dbmirror_values(42, '\\x00'::bytea, false)",
        "SELECT dbmirror_values(1, '\\x00'::bytea, false)",
    ] {
        let err = master.client().batch_execute(sql).expect_err(sql);
        let db = err.as_db_error().unwrap_or_else(|| panic!("{sql}: {err}"));
        let detail = db.detail().unwrap_or_default();
        assert!(
            !detail.contains("backtrace") && !detail.contains("rust_begin_unwind") && !detail.contains(".rs:"),
            "{sql}: {detail}"
        );
    }
}
