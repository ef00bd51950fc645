//! The slave's side of schema changes in the stream: `dbmirror.check_table()`, which fails a
//! file whose tables differ from the master's, and `dbmirror.ddl()`, which runs the master's DDL
//! as far as the slave's policy allows; and the applier, which quarantines a file the slave does
//! not take, with what to do.

use dbmirror_spool::{Checksum, Manifest, ManifestEntry, TransactionFileName};
use dbmirror_tests::tools::{apply, apply_config, export_once, file_names, transaction_files};
use dbmirror_tests::{describe, explain, Cluster};

use crate::export::setup;

/// Runs `changes` as a transaction file does: in one transaction, in the replica role, under
/// the DDL policy `ddl` (None: the setting left unset). Returns the error as
/// "SQLSTATE: message\nDETAIL...\nHINT...", or None when the transaction committed.
fn as_a_file(slave: &Cluster, ddl: Option<&str>, changes: &str) -> Option<String> {
    let policy = ddl.map(|p| format!("SET LOCAL dbmirror.ddl = '{p}';")).unwrap_or_default();
    let mut client = slave.client();
    let result = client
        .batch_execute(&format!("BEGIN; SET LOCAL session_replication_role = replica; {policy} {changes}; COMMIT;"));
    result.err().map(|e| explain(&e))
}

/// `changes` must commit.
fn applies(slave: &Cluster, ddl: Option<&str>, changes: &str) {
    if let Some(error) = as_a_file(slave, ddl, changes) {
        panic!("{changes}\nfailed: {error}");
    }
}

/// `changes` must fail with SQLSTATE and message starting `expected`, and a hint containing
/// `hint`; nothing of them remains.
fn fails(slave: &Cluster, ddl: Option<&str>, changes: &str, expected: &str, hint: &str) {
    let shape = columns(slave);
    let error = as_a_file(slave, ddl, changes).unwrap_or_else(|| panic!("{changes}\nshould fail with {expected}"));
    assert!(error.starts_with(expected), "{changes}\nfailed with {error}\nexpected {expected}");
    assert!(error.contains(hint), "{error}\nshould hint {hint}");
    assert_eq!(columns(slave), shape, "{changes} left something behind");
}

/// Every column of every table and view in schema public, and every index: what DDL changes.
fn columns(slave: &Cluster) -> String {
    slave.query_value(
        "SELECT coalesce(string_agg(c.relkind::text || ' ' || c.relname || coalesce('.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod), ''), ', '
                                    ORDER BY c.relname, a.attnum), '')
           FROM pg_class c LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
          WHERE c.relnamespace = 'public'::regnamespace",
    )
}

const ORDERS: &str = r#"'"public"."orders"'"#;
const ORDERS_SHAPE: &str =
    r#"ARRAY['"id" integer', '"mood" public.mood', '"note" text', '"qty" integer'], ARRAY['"id"']"#;

#[test]
fn the_slave_checks_table_shapes_and_runs_ddl_by_its_policy() {
    let slave = Cluster::start("slave");
    slave.slave_setup();
    slave.slave_setup();
    slave.execute(
        "CREATE TYPE mood AS ENUM ('calm', 'cross');
         CREATE TABLE orders (id serial PRIMARY KEY, note text, mood mood, qty integer, twice integer GENERATED ALWAYS AS (id * 2) STORED);
         CREATE TABLE other (id integer PRIMARY KEY);
         CREATE INDEX other_id ON other (id);",
    );
    let differs = "A schema change reached one side only (DDL outside the stream, or the slave altered by hand)";

    // The same shape, columns in another order, generated columns left out: nothing to say.
    applies(&slave, None, &format!("SELECT dbmirror.check_table({ORDERS}, {ORDERS_SHAPE})"));
    // Every difference, each named.
    let checked =
        |columns: &str, key: &str| format!("SELECT dbmirror.check_table({ORDERS}, ARRAY[{columns}], ARRAY[{key}])");
    for (columns, key, expected) in [
        (
            r#"'"id" integer', '"mood" public.mood', '"note" text', '"qty" integer', '"extra" date'"#,
            r#"'"id"'"#,
            r#"DM008: table "public"."orders" differs from the master's: column "extra" date is missing here"#,
        ),
        (
            r#"'"id" integer', '"mood" public.mood', '"note" text', '"qty" bigint'"#,
            r#"'"id"'"#,
            r#"DM008: table "public"."orders" differs from the master's: column "qty" is integer here, bigint on the master"#,
        ),
        (
            r#"'"id" integer', '"mood" public.mood', '"qty" integer'"#,
            r#"'"id"'"#,
            r#"DM008: table "public"."orders" differs from the master's: column "note" is only here"#,
        ),
        (
            r#"'"id" integer', '"mood" public.mood', '"note" text', '"qty" integer'"#,
            r#"'"id"', '"qty"'"#,
            r#"DM008: table "public"."orders" differs from the master's: primary key ("id") here, ("id", "qty") on the master"#,
        ),
        (
            r#"'"id" integer', '"mood" text', '"Note" text', '"qty" integer'"#,
            r#"'"qty"'"#,
            "DM008: table \"public\".\"orders\" differs from the master's: column \"mood\" is public.mood here, text on \
             the master; column \"Note\" text is missing here; column \"note\" is only here; primary key (\"id\") here, \
             (\"qty\") on the master",
        ),
    ] {
        fails(&slave, None, &checked(columns, key), expected, differs);
    }
    fails(
        &slave,
        None,
        r#"SELECT dbmirror.check_table('"public"."gone"', ARRAY['"id" integer'], ARRAY['"id"'])"#,
        r#"DM008: table "public"."gone" does not exist here"#,
        differs,
    );

    // mirrored, the default: DDL on the tables the file names and what belongs to them.
    let ddl = |statement: &str, tables: &str| {
        format!("SELECT dbmirror.ddl('{}', '\"$user\", public', ARRAY[{tables}])", statement.replace('\'', "''"))
    };
    applies(
        &slave,
        None,
        &[
            ddl("ALTER TABLE orders ADD COLUMN due date", ORDERS),
            // The statement's search_path is its own: the file's next statements have the file's.
            "DO $$ BEGIN IF current_setting('search_path') <> '\"$user\", public' THEN RAISE 'search_path leaked'; END IF; END $$".into(),
            ddl("ALTER TABLE orders ALTER COLUMN qty TYPE bigint", ORDERS),
            ddl("ALTER TABLE orders RENAME COLUMN note TO remark", ORDERS),
            ddl("CREATE INDEX orders_due ON orders (due)", ORDERS),
            ddl("DROP INDEX orders_due", ORDERS),
            ddl("ALTER TABLE orders DROP COLUMN due", ORDERS),
            ddl("ALTER TYPE mood ADD VALUE 'sleepy'", ORDERS),
            ddl("ALTER TABLE orders ADD CONSTRAINT qty_positive CHECK (qty > 0), ALTER COLUMN qty SET DEFAULT 1", ORDERS),
            ddl(
                "CREATE TABLE \"Order Line\" (\"order\" integer REFERENCES orders, line integer GENERATED ALWAYS AS IDENTITY, PRIMARY KEY (\"order\", line))",
                &format!(r#"{ORDERS}, '"public"."Order Line"'"#),
            ),
            ddl("ALTER TABLE \"Order Line\" RENAME TO lines", r#"'"public"."lines"'"#),
            format!(
                "SELECT dbmirror.check_table({ORDERS}, ARRAY['\"id\" integer', '\"remark\" text', '\"mood\" public.mood', '\"qty\" bigint'], ARRAY['\"id\"'])"
            ),
            r#"SELECT dbmirror.check_table('"public"."lines"', ARRAY['"order" integer', '"line" integer'], ARRAY['"order"', '"line"'])"#.into(),
        ]
        .join("; "),
    );
    applies(&slave, None, &ddl("DROP TABLE lines", r#"'"public"."lines"'"#));

    // What does not belong to the tables named is refused, and nothing of the statement remains.
    let beyond = "The master's DDL reaches beyond the tables it names (dbmirror.ddl = mirrored)";
    let refused = |what: &str| {
        format!(
            "DM009: DDL refused: the statement {what}, which is none of the tables the file names (\"public\".\"orders\") and belongs to none of them"
        )
    };
    for (statement, what) in [
        ("DROP TABLE other", "DROP TABLE drops table public.other"),
        ("CREATE VIEW v AS SELECT id FROM orders", "CREATE VIEW changes view public.v"),
        (
            "CREATE FUNCTION f() RETURNS integer LANGUAGE sql AS 'SELECT 1'",
            "CREATE FUNCTION changes function public.f()",
        ),
        ("ALTER TABLE other ADD COLUMN x integer", "ALTER TABLE changes table public.other"),
        ("DROP INDEX other_id", "DROP INDEX drops index public.other_id"),
        ("CREATE TYPE unused AS ENUM ('x')", "CREATE TYPE changes type public.unused"),
        ("ALTER TABLE orders ADD COLUMN x integer; DROP TABLE other", "DROP TABLE drops table public.other"),
    ] {
        fails(&slave, None, &ddl(statement, ORDERS), &refused(what), beyond);
    }
    fails(
        &slave,
        None,
        &ddl("GRANT SELECT ON orders TO PUBLIC", ORDERS),
        "DM009: DDL refused: the statement GRANT changes privileges on table objects, which cannot be traced to the tables the file names",
        beyond,
    );
    fails(
        &slave,
        None,
        &ddl("ALTER ROLE postgres SET work_mem = '5MB'", ORDERS),
        "DM009: DDL refused: the statement is not DDL that this slave can hold to the tables it names (dbmirror.ddl = mirrored): ALTER ROLE",
        "set dbmirror.ddl to any",
    );
    fails(
        &slave,
        Some("mirrored"),
        "SELECT dbmirror.ddl('ALTER TABLE orders ADD COLUMN x integer', 'public')",
        "DM009: DDL refused: the statement ALTER TABLE changes table public.orders, which is none of the tables the file names (none)",
        beyond,
    );

    // refuse: none at all, quoting the statement's first line.
    fails(
        &slave,
        Some("refuse"),
        "SELECT dbmirror.ddl(E'ALTER TABLE orders\\n  ADD COLUMN x integer', 'public', ARRAY['\"public\".\"orders\"'])",
        "DM009: this slave refuses DDL (dbmirror.ddl = refuse), and the file carries: ALTER TABLE orders...",
        "SET dbmirror.ddl = 'any'",
    );
    // any: whatever it does.
    applies(
        &slave,
        Some("any"),
        &[
            ddl("CREATE VIEW v AS SELECT id FROM orders", ORDERS),
            "SELECT dbmirror.ddl('DROP TABLE other', 'public')".into(),
        ]
        .join("; "),
    );
    assert_eq!(slave.query_value("SELECT count(*)::text FROM pg_class WHERE relname IN ('v', 'other')"), "1");
    fails(
        &slave,
        Some("sometimes"),
        &ddl("DROP VIEW v", ORDERS),
        "22023: dbmirror.ddl must be refuse, mirrored or any, not \"sometimes\"",
        "leave it unset for mirrored",
    );
    // Outside dbmirror.ddl(), the event triggers leave DDL alone.
    slave.execute("DROP VIEW v; CREATE TABLE unmirrored (id integer); DROP TABLE unmirrored;");
}

/// Only a superuser can create event triggers: prepared by another role, the slave works, but
/// under mirrored refuses all DDL, saying how to mend that.
#[test]
fn a_slave_prepared_without_a_superuser_refuses_ddl_unless_it_runs_any() {
    let slave = Cluster::start("slave");
    slave.execute("CREATE ROLE owner LOGIN");
    slave.execute("CREATE DATABASE owned OWNER owner");
    let conninfo = slave.conninfo_for("owned").replace("user=postgres", "user=owner");
    let mut owner = postgres::Client::connect(&conninfo, postgres::NoTls).expect("the owner connects");
    for _ in 0..2 {
        owner.batch_execute(dbmirror_sql::SLAVE_SETUP_SQL).expect("the setup script runs without a superuser");
    }
    owner.batch_execute("CREATE TABLE t (id integer PRIMARY KEY)").unwrap();
    let ddl = "SELECT dbmirror.ddl('ALTER TABLE t ADD COLUMN x integer', 'public', ARRAY['\"public\".\"t\"'])";
    let error = owner.batch_execute(&format!("BEGIN; {ddl}; COMMIT;")).expect_err("mirrored without event triggers");
    let error = explain(&error);
    assert!(
        error.starts_with(
            "DM009: DDL refused: this slave cannot hold DDL to the tables the file names (dbmirror.ddl = mirrored), its event triggers"
        ),
        "{error}"
    );
    assert!(error.contains("HINT: Run sql/slave_setup.sql (or dbmirror-apply init) as a superuser"), "{error}");
    owner.batch_execute("ROLLBACK").unwrap();
    owner.batch_execute(&format!("BEGIN; SET LOCAL dbmirror.ddl = 'any'; {ddl}; COMMIT;")).unwrap();
    let row = owner
        .query_one("SELECT count(*) FROM pg_attribute WHERE attrelid = 't'::regclass AND attname = 'x'", &[])
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1);
}

/// Puts `text` into `spool` as the transaction file `name`, with a manifest of its own.
fn put(spool: &std::path::Path, name: &str, text: &str) {
    std::fs::write(spool.join(name), text).unwrap();
    let file = TransactionFileName::parse(name).expect("a transaction file name");
    let manifest = Manifest::new(vec![ManifestEntry { checksum: Checksum::of(text.as_bytes()), file }]).unwrap();
    std::fs::write(spool.join(manifest.name.file_name()), manifest.render()).unwrap();
}

/// `file` with `statements` right after its guard.
fn with_statements(file: &str, statements: &[&str]) -> String {
    let (head, tail) = file.split_once("SELECT dbmirror.guard(").expect("the file has a guard");
    let (guard, rest) = tail.split_once('\n').expect("the guard ends its line");
    format!("{head}SELECT dbmirror.guard({guard}\n{}\n{rest}", statements.join("\n"))
}

/// The applier gives the slave its policy and refuses DDL itself under refuse; a file the slave
/// does not take goes to quarantine with a reason and a hint that fit: DDL refused is the
/// setting's doing, a table that differs is the slave's to repair; neither is a foreign file.
#[test]
fn the_applier_quarantines_a_file_whose_ddl_or_table_shape_the_slave_does_not_take() {
    let s = setup("");
    s.master.execute("INSERT INTO item (name) VALUES ('one')");
    export_once(&s.config);
    let exported = transaction_files(&s.outbox);
    let name = exported[0].file_name().unwrap().to_string_lossy().into_owned();
    // The exported file without its own shape check, which the variants below replace.
    let genuine: String = std::fs::read_to_string(&exported[0])
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("SELECT dbmirror.check_table("))
        .map(|l| format!("{l}\n"))
        .collect();
    let inbound = s.work.dir("inbound");
    let quarantine = inbound.join("quarantine");
    let add_note = "SELECT dbmirror.ddl('ALTER TABLE item ADD COLUMN note text', '\"$user\", public', ARRAY['\"public\".\"item\"']);";
    let with_note = r#"SELECT dbmirror.check_table('"public"."item"', ARRAY['"id" integer', '"name" text', '"price" numeric(10,2)', '"tags" text[]', '"seen" timestamp with time zone', '"note" text'], ARRAY['"id"']);"#;
    let apply_under = |ddl: &str| {
        let config = apply_config(&s.work, &s.slave, "slave1", &inbound, &format!("ddl = \"{ddl}\""));
        apply(&config, &["once"])
    };
    let quarantined = |output: &std::process::Output, reason: &str, hint: &str| {
        assert_eq!(output.status.code(), Some(5), "{}", describe(output));
        let why = file_names(&quarantine)
            .into_iter()
            .filter(|n| n.ends_with(".reason"))
            .map(|n| std::fs::read_to_string(quarantine.join(n)).unwrap())
            .find(|text| text.contains(reason))
            .unwrap_or_else(|| panic!("no .reason says {reason:?}\n{}", describe(output)));
        assert!(why.contains(hint), "{why}\nshould hint {hint:?}");
        assert!(!why.contains("dbmirror-export never writes"), "{why}");
        assert!(String::from_utf8_lossy(&output.stderr).contains(hint), "{}", describe(output));
    };
    let has_note = || {
        s.slave.query_value(
            "SELECT count(*)::text FROM pg_attribute WHERE attrelid = 'item'::regclass AND attname = 'note'",
        )
    };

    // refuse: the grammar stops the file before it is sent.
    put(&inbound, &name, &with_statements(&genuine, &[add_note, with_note]));
    quarantined(
        &apply_under("refuse"),
        "statement refused: the file carries DDL (a schema change) and this slave refuses DDL (ddl = \"refuse\")",
        "set ddl = \"mirrored\"",
    );
    assert_eq!(has_note(), "0");

    // mirrored: the slave refuses DDL beyond the tables the file names.
    let drop_other = "SELECT dbmirror.ddl('DROP TABLE \"Order Line\"', 'public', ARRAY['\"public\".\"item\"']);";
    put(&inbound, &name, &with_statements(&genuine, &[drop_other]));
    quarantined(
        &apply_under("mirrored"),
        "DDL refused: the statement DROP TABLE drops table public.\"Order Line\"",
        "set ddl = \"any\"",
    );
    assert_eq!(s.slave.query_value("SELECT count(*)::text FROM pg_class WHERE relname = 'Order Line'"), "1");

    // A table that differs from the master's is the slave's to repair.
    put(&inbound, &name, &with_statements(&genuine, &[with_note]));
    quarantined(
        &apply_under("mirrored"),
        "table \"public\".\"item\" differs from the master's: column \"note\" text is missing here",
        "Bring the slave's table to the master's shape",
    );

    // The DDL the file carries makes the table the master's.
    put(&inbound, &name, &with_statements(&genuine, &[add_note, with_note]));
    let output = apply_under("mirrored");
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(has_note(), "1");
    assert_eq!(s.slave.query_value("SELECT string_agg(name, ',') FROM item"), "one");
}
