//! Statements that replay what the master did on any table it can have: identity columns,
//! inheritance, and the opt-in check that an UPDATE or DELETE finds the row as the master had
//! it before (`check_conflicts`).

use dbmirror_tests::describe;
use dbmirror_tests::mirror::Mirror;
use dbmirror_tests::tools::{apply, transfer};

/// Regression test: `UPDATE t SET id = DEFAULT` on a GENERATED ALWAYS identity column became
/// `SET "id" = '2'`, which the slave refuses ("can only be updated to DEFAULT").
#[test]
fn updates_of_always_identity_columns_replay() {
    let mut m = Mirror::start(
        "CREATE TABLE t (id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text, n integer GENERATED ALWAYS AS IDENTITY);
         CREATE TABLE c (id integer PRIMARY KEY, t integer REFERENCES t ON UPDATE CASCADE);",
        "SELECT dbmirror_mirror_table('t'); SELECT dbmirror_mirror_table('c');",
        &[],
    );
    m.master.execute("INSERT INTO t (v) VALUES ('a'), ('b'); INSERT INTO c VALUES (1, 1);");
    m.master.execute("UPDATE t SET id = DEFAULT WHERE v = 'a'");
    m.master.execute("UPDATE t SET n = DEFAULT, v = 'bb' WHERE v = 'b'");
    m.sync();
    assert_eq!(m.applied.query_value("SELECT string_agg(id || v || n, ',' ORDER BY id) FROM t"), "2bb3,3a1");
}

/// Regression test: with a parent and a child both mirrored and both holding key 1, `UPDATE
/// ONLY parent` became `UPDATE "public"."par" ... WHERE "id" = '1'`, which matched both rows.
#[test]
fn updates_and_deletes_touch_only_their_own_table_of_an_inheritance_tree() {
    let mut m = Mirror::start(
        "CREATE TABLE par (id integer PRIMARY KEY, v text);
         CREATE TABLE kid (extra text) INHERITS (par);
         ALTER TABLE kid ADD PRIMARY KEY (id);",
        "SELECT dbmirror_mirror_table('par'); SELECT dbmirror_mirror_table('kid');",
        &[],
    );
    m.master.execute("INSERT INTO par VALUES (1, 'parent'); INSERT INTO kid VALUES (1, 'child', 'x');");
    m.sync();
    m.master.execute("UPDATE ONLY par SET v = 'parent 2' WHERE id = 1");
    m.master.execute("UPDATE par SET v = v || '!'");
    m.master.execute("DELETE FROM ONLY par WHERE id = 1");
    m.sync();
    m.master.execute("DELETE FROM par");
    m.sync();
}

/// Regression test (found by the differential tester): `TRUNCATE ref CASCADE` truncates the
/// referencing parent but not its inheritance children; the file said `TRUNCATE ONLY "ref",
/// "par"`, where ONLY binds to the first name alone, and the slave emptied the children too.
#[test]
fn a_truncate_cascading_to_an_inheritance_parent_leaves_its_children_on_the_slave_too() {
    let mut m = Mirror::start(
        "CREATE TABLE ref (id integer PRIMARY KEY);
         CREATE TABLE par (id integer PRIMARY KEY, r integer REFERENCES ref);
         CREATE TABLE kid (extra text) INHERITS (par);
         ALTER TABLE kid ADD PRIMARY KEY (id);",
        "SELECT dbmirror_mirror_table('ref'); SELECT dbmirror_mirror_table('par'); SELECT dbmirror_mirror_table('kid');",
        &[],
    );
    m.master
        .execute("INSERT INTO ref VALUES (1); INSERT INTO par VALUES (1, 1); INSERT INTO kid VALUES (2, NULL, 'x');");
    m.sync();
    m.master.execute("TRUNCATE ref CASCADE");
    assert_eq!(m.master.query_value("SELECT count(*)::text FROM kid"), "1");
    m.sync();
}

/// Drift in columns other than the key is overwritten unless the table is mirrored with
/// check_conflicts; then an UPDATE or DELETE that does not find the row as the master had it
/// fails its file.
#[test]
fn check_conflicts_refuses_a_row_that_drifted_on_the_slave() {
    let mut m = Mirror::start(
        "CREATE TABLE plain (id integer PRIMARY KEY, v text, w text);
         CREATE TABLE checked (id integer PRIMARY KEY, v text, w text, big text, j jsonb, c char(4));",
        "SELECT dbmirror_mirror_table('plain'); SELECT dbmirror_mirror_table('checked', check_conflicts => true);",
        &[],
    );
    m.master.execute(
        "INSERT INTO plain VALUES (1, 'a', 'x');
         INSERT INTO checked VALUES (1, 'a', 'x', repeat('long ', 1000), '{\"k\": [1, 2]}', 'ab'), (2, NULL, 'y', NULL, NULL, NULL);",
    );
    m.sync();
    // Changes of rows as the master had them apply, NULLs and values of every kind included.
    m.master.execute(
        "UPDATE checked SET v = 'b', j = '{\"k\": 3}', c = 'cd' WHERE id = 1;
         UPDATE checked SET v = 'now set' WHERE id = 2;
         UPDATE checked SET id = 3 WHERE id = 2;",
    );
    m.sync();

    // Without the check, drift in a changed column is overwritten silently.
    m.on_slaves("UPDATE plain SET v = 'drift'");
    m.master.execute("UPDATE plain SET v = 'b'");
    m.sync();

    // With it, the file fails, and says which table.
    m.on_slaves("UPDATE checked SET v = 'drift' WHERE id = 1");
    m.master.execute("UPDATE checked SET v = 'c' WHERE id = 1");
    let export = m.export_once();
    assert!(export.status.success(), "{}", describe(&export));
    transfer(&m.outbox, &m.inbound);
    let output = apply(&m.apply, &["once"]);
    assert_eq!(output.status.code(), Some(5), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("update of \"public\".\"checked\" matched 0 rows on the slave instead of 1"), "{stderr}");
    // Repaired, the quarantined file applies.
    m.on_slaves("UPDATE checked SET v = 'b' WHERE id = 1");
    let file = dbmirror_tests::tools::transaction_files(&m.outbox).pop().unwrap();
    std::fs::rename(
        m.inbound.join("quarantine").join(file.file_name().unwrap()),
        m.inbound.join(file.file_name().unwrap()),
    )
    .unwrap();
    m.sync();
    // A delete checks the whole row, not only what changed.
    m.on_slaves("UPDATE checked SET w = 'drift' WHERE id = 3");
    m.master.execute("DELETE FROM checked WHERE id = 3");
    m.export_once();
    transfer(&m.outbox, &m.inbound);
    let output = apply(&m.apply, &["once"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("delete from \"public\".\"checked\" matched 0 rows on the slave instead of 1"), "{stderr}");
}
