//! Order within a transaction, for every arrangement of triggers a master can have: the file
//! must replay the changes in the order they took effect on the master (invariant 3), whatever
//! wrote them (BEFORE and AFTER row triggers with names sorting before or after dbmirror's,
//! statement triggers, TRUNCATE triggers, foreign-key actions, deferred constraint triggers,
//! functions called by a statement). Each test runs a workload on the master and checks that a
//! slave fed by dbmirror-apply and one fed by psql -f both end up equal to it.
//!
//! Regression tests: before changes were pinned when they took effect, capture ordered them by
//! the command id of their statement, which put a row inserted after a nested DELETE of its
//! key before that DELETE (a duplicate key on the slave), and captured TRUNCATE after the
//! changes its own AFTER TRUNCATE triggers made (the slave lost them).

use dbmirror_tests::mirror::Mirror;

/// `kv`, mirrored, with an upsert emulation: a BEFORE INSERT trigger that deletes the row with
/// the new row's key first. Its name sorts before dbmirror's triggers.
const UPSERT: &str = "
    CREATE TABLE kv (k integer PRIMARY KEY, v text);
    CREATE FUNCTION kv_replace() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN DELETE FROM kv WHERE k = NEW.k; RETURN NEW; END $$;
    CREATE TRIGGER kv_before BEFORE INSERT ON kv FOR EACH ROW EXECUTE FUNCTION kv_replace();";

#[test]
fn a_before_insert_trigger_that_deletes_the_same_key_replays_in_order() {
    let mut m = Mirror::start(UPSERT, "SELECT dbmirror_mirror_table('kv')", &[]);
    m.master.execute(
        "INSERT INTO kv VALUES (1, 'a');
         INSERT INTO kv VALUES (1, 'b');
         INSERT INTO kv VALUES (2, 'a'), (2, 'b'), (3, 'c'), (2, 'd');
         BEGIN; INSERT INTO kv VALUES (3, 'x'); INSERT INTO kv SELECT 3, 'y' FROM generate_series(1, 3); COMMIT;",
    );
    m.sync();
    assert_eq!(m.master.query_value("SELECT string_agg(k || v, ',' ORDER BY k) FROM kv"), "1b,2d,3y");
}

#[test]
fn after_truncate_triggers_write_after_the_truncate() {
    let mut m = Mirror::start(
        "CREATE TABLE audit (id serial PRIMARY KEY, msg text);
         CREATE TABLE other (id serial PRIMARY KEY, msg text);
         CREATE FUNCTION note() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN INSERT INTO audit (msg) VALUES (TG_WHEN || ' ' || TG_OP); RETURN NULL; END $$;
         CREATE FUNCTION note_other() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN INSERT INTO other (msg) VALUES (TG_WHEN || ' ' || TG_OP); RETURN NULL; END $$;
         -- Names sort before and after dbmirror's own triggers.
         CREATE TRIGGER a_note AFTER TRUNCATE ON audit FOR EACH STATEMENT EXECUTE FUNCTION note();
         CREATE TRIGGER z_note AFTER TRUNCATE ON audit FOR EACH STATEMENT EXECUTE FUNCTION note();
         CREATE TRIGGER b_note BEFORE TRUNCATE ON audit FOR EACH STATEMENT EXECUTE FUNCTION note();
         CREATE TRIGGER b_other BEFORE TRUNCATE ON audit FOR EACH STATEMENT EXECUTE FUNCTION note_other();
         CREATE TRIGGER a_other AFTER TRUNCATE ON other FOR EACH STATEMENT EXECUTE FUNCTION note();",
        "SELECT dbmirror_mirror_table('audit'); SELECT dbmirror_mirror_table('other');",
        &[],
    );
    m.master.execute(
        "INSERT INTO audit (msg) VALUES ('x');
         TRUNCATE audit;
         BEGIN; INSERT INTO audit (msg) VALUES ('y'); TRUNCATE audit, other; INSERT INTO other (msg) VALUES ('z'); COMMIT;",
    );
    m.sync();
    // Per TRUNCATE, the two AFTER triggers' rows stay and the BEFORE trigger's is truncated
    // away; the second TRUNCATE also truncates other, whose AFTER trigger adds one more.
    assert_eq!(m.master.query_value("SELECT count(*)::text FROM audit"), "3");
}

#[test]
fn before_row_triggers_that_change_other_rows_replay_in_order() {
    let mut m = Mirror::start(
        "CREATE TABLE account (id integer PRIMARY KEY, owner text UNIQUE, balance integer);
         CREATE TABLE log (id integer PRIMARY KEY, account integer, what text);
         -- Renaming an owner first moves any other account of the new owner's name aside (a
         -- unique column, not the key), and logs both in another table, whose key is reused.
         CREATE FUNCTION account_before() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
             IF TG_OP = 'UPDATE' AND NEW.owner IS DISTINCT FROM OLD.owner THEN
                 UPDATE account SET owner = owner || ' (was ' || id || ')' WHERE owner = NEW.owner AND id <> NEW.id;
             END IF;
             IF TG_OP = 'DELETE' THEN
                 DELETE FROM log WHERE id = OLD.id;
                 INSERT INTO log VALUES (OLD.id, OLD.id, 'closed');
                 RETURN OLD;
             END IF;
             DELETE FROM log WHERE id = NEW.id;
             INSERT INTO log VALUES (NEW.id, NEW.id, TG_OP);
             RETURN NEW;
         END $$;
         CREATE TRIGGER account_before BEFORE INSERT OR UPDATE OR DELETE ON account
             FOR EACH ROW EXECUTE FUNCTION account_before();",
        "SELECT dbmirror_mirror_table('account'); SELECT dbmirror_mirror_table('log');",
        &[],
    );
    m.master.execute(
        "INSERT INTO account VALUES (1, 'ann', 10), (2, 'bob', 20), (3, 'cy', 30);
         UPDATE account SET owner = 'ann' WHERE id = 2;
         UPDATE account SET owner = 'cy', balance = balance + 1 WHERE id IN (1, 2);
         DELETE FROM account WHERE id = 3;
         INSERT INTO account VALUES (3, 'dee', 0);",
    );
    m.sync();
}

#[test]
fn after_row_triggers_before_and_after_dbmirrors_replay_in_order() {
    let mut m = Mirror::start(
        "CREATE TABLE node (id integer PRIMARY KEY, parent integer, name text UNIQUE);
         -- Inserting a node makes its summary node (id + 1000), replacing an older one; the
         -- names sort before and after dbmirror_capture.
         CREATE FUNCTION summarise() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
             IF NEW.id < 1000 THEN
                 DELETE FROM node WHERE id = NEW.id + 1000;
                 INSERT INTO node VALUES (NEW.id + 1000, NEW.id, NEW.name || ' summary ' || TG_NAME);
             END IF;
             RETURN NULL;
         END $$;
         CREATE FUNCTION rename_after() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
             IF NEW.id < 1000 THEN
                 UPDATE node SET name = NEW.name || ' summary' WHERE id = NEW.id + 1000;
             END IF;
             RETURN NULL;
         END $$;
         CREATE TRIGGER a_summarise AFTER INSERT ON node FOR EACH ROW EXECUTE FUNCTION summarise();
         CREATE TRIGGER z_summarise AFTER INSERT ON node FOR EACH ROW EXECUTE FUNCTION summarise();
         CREATE TRIGGER a_rename AFTER UPDATE OF name ON node FOR EACH ROW EXECUTE FUNCTION rename_after();",
        "SELECT dbmirror_mirror_table('node')",
        &[],
    );
    m.master.execute(
        "INSERT INTO node VALUES (1, NULL, 'one'), (2, 1, 'two');
         BEGIN; UPDATE node SET name = 'uno' WHERE id = 1; INSERT INTO node VALUES (3, 1, 'three'); COMMIT;
         DELETE FROM node WHERE id = 1002; INSERT INTO node VALUES (4, 2, 'four');",
    );
    m.sync();
}

#[test]
fn foreign_key_actions_replay_in_order() {
    let mut m = Mirror::start(
        "CREATE TABLE parent (id integer PRIMARY KEY, code text UNIQUE);
         CREATE TABLE cascade_child (id integer PRIMARY KEY, code text REFERENCES parent (code) ON UPDATE CASCADE ON DELETE CASCADE);
         CREATE TABLE null_child (id integer PRIMARY KEY, parent integer REFERENCES parent ON DELETE SET NULL ON UPDATE SET NULL);
         CREATE TABLE default_child (id integer PRIMARY KEY, parent integer DEFAULT 0 REFERENCES parent ON DELETE SET DEFAULT);
         CREATE TABLE deferred_child (id integer PRIMARY KEY,
             parent integer REFERENCES parent ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED);",
        "SELECT dbmirror_mirror_table(t) FROM unnest(ARRAY['parent', 'cascade_child', 'null_child', 'default_child', 'deferred_child']::regclass[]) t",
        &[],
    );
    m.master.execute(
        "INSERT INTO parent VALUES (0, 'zero'), (1, 'a'), (2, 'b'), (3, 'c');
         INSERT INTO cascade_child VALUES (1, 'a'), (2, 'b');
         INSERT INTO null_child VALUES (1, 1), (2, 2);
         INSERT INTO default_child VALUES (1, 1), (2, 3);
         INSERT INTO deferred_child VALUES (1, 1), (2, 2);
         -- A cascaded delete, then the same keys inserted again in the same transaction.
         BEGIN; DELETE FROM parent WHERE id = 1; INSERT INTO parent VALUES (1, 'a');
                INSERT INTO cascade_child VALUES (1, 'a'); INSERT INTO null_child VALUES (3, 1); COMMIT;
         BEGIN; UPDATE parent SET code = 'bb', id = 20 WHERE id = 2; INSERT INTO parent VALUES (2, 'b'); COMMIT;
         -- The deferred cascade runs at commit, after the re-insert of its key.
         BEGIN; DELETE FROM parent WHERE id = 3; INSERT INTO parent VALUES (3, 'c2');
                DELETE FROM deferred_child WHERE id = 2; INSERT INTO deferred_child VALUES (2, 3); COMMIT;",
    );
    m.sync();
}

#[test]
fn statement_and_deferred_constraint_triggers_replay_in_order() {
    let mut m = Mirror::start(
        "CREATE TABLE snapshot (k integer PRIMARY KEY, v text);
         CREATE TABLE total (id integer PRIMARY KEY, n bigint);
         -- Each INSERT replaces the whole table: a BEFORE STATEMENT trigger empties it.
         CREATE FUNCTION empty_snapshot() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN DELETE FROM snapshot; RETURN NULL; END $$;
         CREATE TRIGGER empty_first BEFORE INSERT ON snapshot FOR EACH STATEMENT EXECUTE FUNCTION empty_snapshot();
         -- Totals are rewritten after each statement and once more at commit.
         CREATE FUNCTION count_snapshot() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
             DELETE FROM total WHERE id = 1;
             INSERT INTO total SELECT 1, count(*) FROM snapshot;
             RETURN NULL; END $$;
         CREATE TRIGGER recount AFTER INSERT OR DELETE ON snapshot FOR EACH STATEMENT EXECUTE FUNCTION count_snapshot();
         CREATE CONSTRAINT TRIGGER recount_at_commit AFTER INSERT ON snapshot DEFERRABLE INITIALLY DEFERRED
             FOR EACH ROW EXECUTE FUNCTION count_snapshot();",
        "SELECT dbmirror_mirror_table('snapshot'); SELECT dbmirror_mirror_table('total');",
        &[],
    );
    m.master.execute(
        "INSERT INTO snapshot VALUES (1, 'a'), (2, 'b');
         INSERT INTO snapshot VALUES (1, 'c'), (3, 'd');
         BEGIN; INSERT INTO snapshot VALUES (2, 'e'); INSERT INTO snapshot VALUES (2, 'f'), (4, 'g'); COMMIT;",
    );
    m.sync();
}

#[test]
fn functions_called_by_a_statement_replay_in_order() {
    let mut m = Mirror::start(
        "CREATE TABLE slot (k integer PRIMARY KEY, v text);
         -- Called for each row of an INSERT ... SELECT: frees the slot the row will take.
         CREATE FUNCTION take(k integer) RETURNS integer LANGUAGE plpgsql AS $$
             BEGIN DELETE FROM slot WHERE slot.k = take.k; RETURN k; END $$;",
        "SELECT dbmirror_mirror_table('slot')",
        &[],
    );
    m.master.execute(
        "INSERT INTO slot VALUES (1, 'old'), (2, 'old');
         INSERT INTO slot SELECT take(g), 'new' FROM generate_series(1, 3) g;
         UPDATE slot SET v = 'newer' || take(k + 1) WHERE k = 1;",
    );
    m.sync();
}

/// Regression test for the statement-level skip of `~dbmirror_order`: a statement starts without
/// it, and gets it back when a change is captured during its execution. Here the nested change
/// happens for a middle row only, in a table with no BEFORE trigger of its own: the rows before
/// it need no pin, the rows after it must be ordered after it (row 3 takes the key that the
/// nested statement freed while the UPDATE processed row 2; the INSERT's last row takes the
/// key freed while its fourth row was made).
#[test]
fn a_change_nested_in_the_middle_of_a_statement_orders_the_rows_after_it() {
    let mut m = Mirror::start(
        "CREATE TABLE slot (k integer PRIMARY KEY, v text);
         CREATE FUNCTION take(k integer) RETURNS text LANGUAGE plpgsql AS $$
             BEGIN DELETE FROM slot WHERE slot.k = take.k; RETURN 'took ' || k; END $$;",
        "SELECT dbmirror_mirror_table('slot')",
        &[],
    );
    m.master.execute(
        "INSERT INTO slot VALUES (1, 'a'), (2, 'b'), (3, 'c'), (12, 'd'), (25, 'e');
         UPDATE slot SET k = CASE WHEN k = 3 THEN 12 ELSE k END,
                         v = take(CASE WHEN k = 2 THEN 12 ELSE 0 END)
          WHERE k IN (1, 2, 3);
         INSERT INTO slot SELECT 20 + g, CASE WHEN g = 4 THEN take(25) ELSE 'new' END
           FROM generate_series(1, 5) g;",
    );
    m.sync();
    assert_eq!(
        m.master.query_value("SELECT string_agg(k || '=' || v, ',' ORDER BY k) FROM slot"),
        "1=took 0,2=took 12,12=took 0,21=new,22=new,23=new,24=took 25,25=new"
    );
}

/// An INSERT that ON CONFLICT abandons after its BEFORE triggers fired (DO NOTHING, or DO UPDATE
/// instead), followed in the same statement by an insert of the very same row once a nested
/// statement freed its key: the abandoned row's pin must not be taken by the row inserted.
#[test]
fn a_row_on_conflict_abandoned_leaves_no_pin_for_the_same_row_inserted_later() {
    let mut m = Mirror::start(
        "CREATE TABLE slot (k integer PRIMARY KEY, v text);
         CREATE TABLE note (id serial PRIMARY KEY, msg text);
         CREATE FUNCTION take(k integer) RETURNS text LANGUAGE plpgsql AS $$
             BEGIN DELETE FROM slot WHERE slot.k = take.k; RETURN 'x'; END $$;
         CREATE FUNCTION noted(m text) RETURNS text LANGUAGE plpgsql AS $$
             BEGIN INSERT INTO note (msg) VALUES (m); RETURN m; END $$;",
        "SELECT dbmirror_mirror_table('slot'); SELECT dbmirror_mirror_table('note');",
        &[],
    );
    m.master.execute(
        "INSERT INTO slot VALUES (1, 'old'), (2, 'old');
         INSERT INTO slot SELECT 1, CASE g WHEN 1 THEN noted('x') ELSE take(1) END
           FROM generate_series(1, 2) g ON CONFLICT DO NOTHING;
         INSERT INTO slot SELECT 2, CASE g WHEN 1 THEN noted('x') ELSE take(2) END
           FROM generate_series(1, 2) g ON CONFLICT (k) DO UPDATE SET v = 'upd';",
    );
    m.sync();
    assert_eq!(m.master.query_value("SELECT string_agg(k || '=' || v, ',' ORDER BY k) FROM slot"), "1=x,2=x");
}

/// A statement starts without `~dbmirror_order` and gets it back on the first capture during
/// its execution, whatever runs it and whatever ran before it in the session: prepared
/// statements on a generic plan, a cursor's WHERE CURRENT OF, a capture rolled back by an
/// exception block, a statement that failed after a capture, a user BEFORE ROW trigger created
/// and dropped between statements, and a prepared transaction.
#[test]
fn the_order_trigger_comes_back_in_every_kind_of_statement() {
    let mut m = Mirror::start(
        "CREATE TABLE slot (k integer PRIMARY KEY, v text);
         CREATE TABLE note (id serial PRIMARY KEY, msg text);
         CREATE FUNCTION take(k integer) RETURNS text LANGUAGE plpgsql AS $$
             BEGIN DELETE FROM slot WHERE slot.k = take.k; RETURN 'took ' || k; END $$;
         -- Captures a change, then rolls it back.
         CREATE FUNCTION undone(k integer) RETURNS integer LANGUAGE plpgsql AS $$ BEGIN
             BEGIN INSERT INTO note (msg) VALUES ('undone ' || k); RAISE EXCEPTION 'no';
             EXCEPTION WHEN raise_exception THEN NULL; END;
             RETURN k; END $$;
         CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN NEW.v := NEW.v || '!'; RETURN NEW; END $$;",
        "SELECT dbmirror_mirror_table('slot'); SELECT dbmirror_mirror_table('note');",
        &["max_prepared_transactions = 2"],
    );
    let mut client = m.master.client();
    client
        .batch_execute(
            "INSERT INTO slot SELECT g, 'v' || g FROM generate_series(1, 40) g;
             SET plan_cache_mode = force_generic_plan;
             PREPARE move(integer, integer) AS
                 UPDATE slot SET k = CASE WHEN k = $1 THEN $2 ELSE k END,
                                 v = take(CASE WHEN k = $1 - 1 THEN $2 ELSE 0 END)
                  WHERE k IN ($1 - 2, $1 - 1, $1);
             EXECUTE move(3, 10); EXECUTE move(6, 11); EXECUTE move(9, 12);
             BEGIN;
             DECLARE c CURSOR FOR SELECT k FROM slot WHERE k BETWEEN 13 AND 16 ORDER BY k FOR UPDATE;
             FETCH c; UPDATE slot SET v = take(20) WHERE CURRENT OF c;
             FETCH c; UPDATE slot SET k = 20 WHERE CURRENT OF c;
             CLOSE c; COMMIT;
             -- A capture rolled back, then rows taking keys freed by a nested statement.
             INSERT INTO slot SELECT CASE WHEN g = 3 THEN 23 ELSE 40 + g END + undone(0),
                                     CASE WHEN g = 2 THEN take(23) ELSE 'x' END
               FROM generate_series(1, 3) g;
             BEGIN; SAVEPOINT s;",
        )
        .unwrap();
    // A statement that fails after a nested capture, then the same kind of statement again.
    let failed = client.batch_execute(
        "UPDATE slot SET v = take(CASE WHEN k = 25 THEN 0 ELSE 24 END), k = CASE WHEN k = 26 THEN 27 ELSE k END
          WHERE k IN (25, 26)",
    );
    assert!(failed.is_err(), "the key 27 is taken");
    client
        .batch_execute(
            "ROLLBACK TO s;
             UPDATE slot SET k = CASE WHEN k = 26 THEN 25 ELSE k END, v = take(CASE WHEN k = 24 THEN 25 ELSE 0 END)
              WHERE k IN (24, 26);
             COMMIT;
             CREATE TRIGGER a_touch BEFORE UPDATE ON slot FOR EACH ROW EXECUTE FUNCTION touch();
             UPDATE slot SET k = CASE WHEN k = 29 THEN 28 ELSE k END, v = take(CASE WHEN k = 27 THEN 28 ELSE 0 END)
              WHERE k IN (27, 29);
             DROP TRIGGER a_touch ON slot;
             UPDATE slot SET k = CASE WHEN k = 32 THEN 31 ELSE k END, v = take(CASE WHEN k = 30 THEN 31 ELSE 0 END)
              WHERE k IN (30, 32);
             BEGIN;
             UPDATE slot SET k = CASE WHEN k = 35 THEN 34 ELSE k END, v = take(CASE WHEN k = 33 THEN 34 ELSE 0 END)
              WHERE k IN (33, 35);
             PREPARE TRANSACTION 'p';",
        )
        .unwrap();
    client.batch_execute("COMMIT PREPARED 'p'").unwrap();
    m.sync();
    assert_eq!(
        m.master.query_value(
            "SELECT string_agg(k || '=' || v, ',' ORDER BY k) FROM slot WHERE k % 3 = 1 AND k BETWEEN 10 AND 34"
        ),
        "10=took 0,13=took 20,16=v16,19=v19,22=v22,25=took 0,28=took 0!,31=took 0,34=took 0"
    );
}

/// Rows that an UPDATE moves between partitions (each partition mirrored on its own), into a
/// key a nested statement freed while the UPDATE ran: the partition the row moves into is also
/// one of the UPDATE's own result relations, whose `~dbmirror_order` started off.
#[test]
fn rows_moved_between_partitions_after_a_nested_change_replay_in_order() {
    let mut m = Mirror::start(
        "CREATE TABLE p (k integer, part integer, v text, PRIMARY KEY (k, part)) PARTITION BY LIST (part);
         CREATE TABLE p1 PARTITION OF p FOR VALUES IN (1);
         CREATE TABLE p2 PARTITION OF p FOR VALUES IN (2);
         CREATE FUNCTION take2(k integer) RETURNS text LANGUAGE plpgsql AS $$
             BEGIN DELETE FROM p2 WHERE p2.k = take2.k; RETURN 'took ' || k; END $$;",
        "SELECT dbmirror_mirror_table('p1'); SELECT dbmirror_mirror_table('p2');",
        &[],
    );
    m.master.execute(
        "INSERT INTO p VALUES (1, 1, 'a'), (2, 1, 'b'), (3, 1, 'c'), (2, 2, 'y'), (3, 2, 'z');
         UPDATE p SET part = 2, v = take2(CASE k WHEN 1 THEN 2 WHEN 2 THEN 3 ELSE 0 END)
          WHERE v IN ('a', 'b', 'c') AND k < 3;",
    );
    m.sync();
    assert_eq!(
        m.master.query_value("SELECT string_agg(k || '/' || part || '=' || v, ',' ORDER BY part, k) FROM p"),
        "3/1=c,1/2=took 2,2/2=took 3"
    );
}

/// Nested changes in the middle of statements of every other shape: a writable CTE that
/// changes the table its main query changes too, INSERT ... ON CONFLICT DO UPDATE whose SET
/// calls a function, MERGE, a DO ALSO rule, and a foreign key's cascade run by the nested
/// statement. Each later row takes a key a nested statement freed.
#[test]
fn nested_changes_in_ctes_upserts_merge_rules_and_cascades_replay_in_order() {
    let mut m = Mirror::start(
        "CREATE TABLE slot (k integer PRIMARY KEY, v text);
         CREATE TABLE child (id integer PRIMARY KEY, k integer REFERENCES slot ON DELETE CASCADE, w text);
         CREATE TABLE log (id integer PRIMARY KEY, what text);
         CREATE FUNCTION take(k integer) RETURNS text LANGUAGE plpgsql AS $$
             BEGIN DELETE FROM slot WHERE slot.k = take.k; RETURN 'took ' || k; END $$;
         CREATE FUNCTION free_log(id integer) RETURNS text LANGUAGE plpgsql AS $$
             BEGIN DELETE FROM log WHERE log.id = free_log.id; RETURN 'freed ' || id; END $$;
         CREATE RULE logged AS ON INSERT TO log WHERE NEW.id < 0 DO ALSO
             INSERT INTO slot VALUES (-NEW.id, 'ruled');",
        "SELECT dbmirror_mirror_table(t) FROM unnest(ARRAY['slot', 'child', 'log']::regclass[]) t",
        &[],
    );
    m.master.execute(
        "INSERT INTO slot SELECT g, 'v' || g FROM generate_series(1, 60) g;
         INSERT INTO child SELECT g, g, 'c' || g FROM generate_series(1, 60) g;
         INSERT INTO log SELECT g, 'l' || g FROM generate_series(1, 10) g;
         -- The CTE's rows, then the main query's, which take keys its function frees.
         WITH moved AS (UPDATE slot SET v = take(CASE WHEN k = 2 THEN 5 ELSE 0 END) WHERE k IN (1, 2, 3) RETURNING k)
         INSERT INTO slot SELECT k + 3, 'from ' || k FROM moved WHERE k = 2;
         -- Upserts: the second row's SET frees the key the third row inserts.
         INSERT INTO slot VALUES (10, 'a'), (11, 'b'), (13, 'c')
             ON CONFLICT (k) DO UPDATE SET v = take(CASE WHEN excluded.k = 11 THEN 13 ELSE 0 END);
         -- MERGE, its source rows in order: the matched row's update frees the key a later
         -- source row inserts.
         SET enable_hashjoin = off; SET enable_mergejoin = off;
         MERGE INTO slot USING (VALUES (20, 1), (72, 2), (21, 3)) s(k, n) ON slot.k = s.k
             WHEN MATCHED AND s.n = 1 THEN UPDATE SET v = take(22)
             WHEN MATCHED THEN DELETE
             WHEN NOT MATCHED THEN INSERT VALUES (s.k - 50, 'merged');
         RESET enable_hashjoin; RESET enable_mergejoin;
         -- A rule's rows into slot, one into a key a nested statement of the same INSERT freed
         -- (its child went by the cascade).
         INSERT INTO log SELECT g, CASE WHEN g = -141 THEN take(40) ELSE 'x' END FROM (VALUES (-141), (-40)) v(g);
         INSERT INTO log SELECT id, CASE WHEN id = 100 THEN free_log(3) ELSE 'again' END FROM (VALUES (100), (3)) v(id);",
    );
    m.sync();
}

/// The same with the conflict on a unique column that is not the key: the abandoned row's
/// column value is freed by a nested statement, and the row inserted after it takes it.
#[test]
fn a_row_on_conflict_abandoned_on_a_unique_column_leaves_no_pin() {
    let mut m = Mirror::start(
        "CREATE TABLE slot (k integer PRIMARY KEY, u text UNIQUE);
         CREATE TABLE note (id serial PRIMARY KEY, msg text);
         CREATE FUNCTION free_u(u text) RETURNS integer LANGUAGE plpgsql AS $$
             BEGIN DELETE FROM slot WHERE slot.u = free_u.u; RETURN 5; END $$;
         CREATE FUNCTION noted(m integer) RETURNS integer LANGUAGE plpgsql AS $$
             BEGIN INSERT INTO note (msg) VALUES (m); RETURN m; END $$;",
        "SELECT dbmirror_mirror_table('slot'); SELECT dbmirror_mirror_table('note');",
        &[],
    );
    m.master.execute(
        "INSERT INTO slot VALUES (7, 'z');
         INSERT INTO slot SELECT CASE g WHEN 1 THEN noted(5) ELSE free_u('z') END, 'z'
           FROM generate_series(1, 2) g ON CONFLICT DO NOTHING;",
    );
    m.sync();
    assert_eq!(m.master.query_value("SELECT string_agg(k || u, ',') FROM slot"), "5z");
}
