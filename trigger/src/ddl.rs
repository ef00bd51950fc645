//! DDL in the stream: schema changes recorded as changes of their transaction, in their place
//! among the row changes, so that the slave runs them between exactly the right two statements.
//!
//! A DDL change carries the statement's text as the master ran it, the session's
//! `search_path`, and the tables it changes; the exporter writes it as
//! `SELECT dbmirror.ddl(statement, search_path, tables)`, which the slave runs (see
//! docs/capture.md, "Schema changes"). It comes two ways:
//!
//! * explicitly, `SELECT dbmirror_ddl('ALTER TABLE ...')`: any one DDL statement, run on the
//!   master and recorded;
//! * automatically, with `dbmirror.capture_ddl = on`: dbmirror's event triggers record every
//!   statement that changes a mirrored table (or a table created in the same transaction that
//!   becomes mirrored before it ends). What they cannot carry faithfully is refused where it
//!   happens; with the setting off, DDL on a mirrored table is warned about.
//!
//! The text of a statement is not in what event triggers are given: it is the part of the
//! running portal's source text that belongs to the statement whose parse tree fired the
//! trigger. A statement run inside a function, a DO block or a procedure is not the portal's
//! own, so its text is unknown: such DDL on a mirrored table is refused (with capture on), and
//! `dbmirror_ddl()` is the way to send it.
//!
//! A DDL change is a row of dbmirror_PendingData with op `x` and shape 0, ordered by the
//! command id current when the statement ended (after every change made before it, before
//! every change made after it): `data` holds the statement, `key` the search_path, `old` the
//! tables' quoted names, one per line, and `unchanged` their OIDs, 4 bytes each, little-endian.

use std::cell::RefCell;
use std::ffi::CStr;
use std::rc::Rc;

use dbmirror_sql::quote_identifier;
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::prelude::*;
use pgrx::PgList;

use crate::capture;
use crate::local::BackendLocal;
use crate::objects::{self, Objects};
use crate::pending::{self, Change};

/// `dbmirror.capture_ddl`: whether DDL on mirrored tables is recorded without `dbmirror_ddl()`.
pub static CAPTURE_DDL: GucSetting<bool> = GucSetting::<bool>::new(false);

pub fn define_settings() {
    GucRegistry::define_bool_guc(
        c"dbmirror.capture_ddl",
        c"Records DDL on mirrored tables in the stream, for the slaves to run.",
        c"With it off, DDL on a mirrored table is only warned about; dbmirror_ddl() records DDL either way.",
        &CAPTURE_DDL,
        GucContext::Userset,
        GucFlags::default(),
    );
}

/// Statements recorded with their tables: those that change the mirrored tables and the new
/// tables of the transaction. (`pg_class` tags of other statements never reach a mirrored table.)
const CAPTURED_TAGS: &[&str] = &[
    "ALTER TABLE",
    "CREATE TABLE",
    "DROP TABLE",
    "CREATE INDEX",
    "ALTER INDEX",
    "DROP INDEX",
    "ALTER TYPE",
    "ALTER DOMAIN",
    "CREATE SEQUENCE",
    "ALTER SEQUENCE",
];

/// Statements that concern only the master: they never change what the slave's rows hold, and a
/// slave keeps its own (triggers do not fire on a slave applying files, which runs them as a
/// replica; grants, comments and policies name the master's roles).
const MASTER_ONLY_TAGS: &[&str] = &[
    "CREATE TRIGGER",
    "ALTER TRIGGER",
    "DROP TRIGGER",
    "GRANT",
    "REVOKE",
    "COMMENT",
    "SECURITY LABEL",
    "CREATE POLICY",
    "ALTER POLICY",
    "DROP POLICY",
    "CREATE RULE",
    "DROP RULE",
    "CREATE STATISTICS",
    "ALTER STATISTICS",
    "DROP STATISTICS",
    "CREATE PUBLICATION",
    "ALTER PUBLICATION",
    "ALTER DEFAULT PRIVILEGES",
    "ALTER EXTENSION",
];

/// `ALTER TABLE` subcommands that concern only the master, for the same reasons.
fn master_only_subcommand(subtype: pg_sys::AlterTableType::Type) -> bool {
    use pg_sys::AlterTableType::*;
    #[allow(non_upper_case_globals)]
    let master_only = matches!(
        subtype,
        AT_EnableTrig
            | AT_EnableAlwaysTrig
            | AT_EnableReplicaTrig
            | AT_DisableTrig
            | AT_EnableTrigAll
            | AT_DisableTrigAll
            | AT_EnableTrigUser
            | AT_DisableTrigUser
            | AT_EnableRule
            | AT_EnableAlwaysRule
            | AT_EnableReplicaRule
            | AT_DisableRule
            | AT_EnableRowSecurity
            | AT_DisableRowSecurity
            | AT_ForceRowSecurity
            | AT_NoForceRowSecurity
            | AT_ChangeOwner
            | AT_ReplicaIdentity
            | AT_SetStatistics
            | AT_ClusterOn
            | AT_DropCluster
            | AT_SetRelOptions
            | AT_ResetRelOptions
            | AT_ReplaceRelOptions
    );
    master_only
}

/// A table a statement changes.
#[derive(Debug, Clone)]
struct TableRef {
    relid: Oid,
    /// `"schema"."name"`, always quoted, as files name tables.
    name: String,
    mirrored: bool,
}

/// A DDL change, before it is recorded.
#[derive(Debug, Clone)]
struct Ddl {
    /// The statement's text, in the server encoding.
    statement: Vec<u8>,
    search_path: Vec<u8>,
    tables: Vec<TableRef>,
}

/// A DDL statement running now, from its start to its end.
struct Running {
    /// The statement's parse tree, which start, sql_drop and end of one statement share.
    parsetree: usize,
    /// Transaction nesting level that runs it.
    level: i32,
    /// Tables a DROP TABLE or DROP INDEX drops from, found before they are gone.
    dropping: Vec<TableRef>,
    /// Tables whose columns, constraints or defaults the statement dropped.
    dropped_from: Vec<Oid>,
}

/// A statement on a table created in this transaction that is not mirrored yet: recorded, in
/// its own place, if the table becomes mirrored before the transaction ends.
/// A statement, or why one cannot be carried (completing "changed by ...") and its tables.
type Readable = Result<Ddl, (String, Vec<TableRef>)>;

struct Remembered {
    ddl: Readable,
    cid: pg_sys::CommandId,
    seq: i64,
    /// Transaction nesting level that ran it, and that recorded it (if it was).
    level: i32,
    recorded: Option<i32>,
}

#[derive(Default)]
struct State {
    running: Vec<Running>,
    /// Tables created in this transaction, with the nesting level that created them.
    created: Vec<(Oid, i32)>,
    remembered: Vec<Remembered>,
    /// Inside `dbmirror_ddl()`: the tables its statement changes, gathered by the event
    /// triggers, which record nothing themselves.
    explicit: Option<Vec<TableRef>>,
}

static STATE: BackendLocal<RefCell<Option<State>>> = BackendLocal::new(RefCell::new(None));

fn with_state<R>(f: impl FnOnce(&mut State) -> R) -> R {
    f(STATE.get().borrow_mut().get_or_insert_with(State::default))
}

/// Forgets everything at the end of the transaction.
pub fn reset() {
    STATE.get().borrow_mut().take();
}

/// Forgets what a rolled-back subtransaction at `level` (and its children) did.
pub fn forget_level(level: i32) {
    if let Some(state) = STATE.get().borrow_mut().as_mut() {
        state.running.retain(|r| r.level < level);
        state.created.retain(|(_, l)| *l < level);
        state.remembered.retain(|r| r.level < level);
        for r in &mut state.remembered {
            if r.recorded.is_some_and(|l| l >= level) {
                r.recorded = None;
            }
        }
    }
}

fn error(code: PgSqlErrorCode, message: String, hint: String) -> ! {
    ErrorReport::new(code, message, "dbmirror").set_hint(hint).report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}

fn names(tables: &[TableRef]) -> String {
    tables.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ")
}

/// Records `ddl` as a change of the current transaction.
fn record(objects: &Rc<Objects>, ddl: &Ddl, cid: pg_sys::CommandId, seq: Option<i64>) {
    let bytea = |bytes: &[u8]| Datum::from(pgrx::rust_byte_slice_to_bytea(bytes).into_pg());
    let relids: Vec<u8> = ddl.tables.iter().flat_map(|t| t.relid.to_u32().to_le_bytes()).collect();
    let names: Vec<&str> = ddl.tables.iter().map(|t| t.name.as_str()).collect();
    let change = Change {
        relid: ddl.tables.first().map_or(pg_sys::InvalidOid, |t| t.relid),
        cid,
        shape: 0,
        op: capture::DDL,
        key: Some(bytea(&ddl.search_path)),
        data: Some(bytea(&ddl.statement)),
        unchanged: Some(bytea(&relids)),
        old: Some(bytea(names.join("\n").as_bytes())),
    };
    let relids: Vec<Oid> = ddl.tables.iter().map(|t| t.relid).collect();
    pending::record_at(objects, change, seq, &relids);
}

fn search_path() -> Vec<u8> {
    // SAFETY: returns the setting's current value; search_path always exists.
    unsafe { CStr::from_ptr(pg_sys::GetConfigOption(c"search_path".as_ptr(), false, false)) }.to_bytes().to_vec()
}

pgrx::extension_sql!(
    r#"
CREATE FUNCTION dbmirror_ddl(statement text) RETURNS void
    LANGUAGE c STRICT VOLATILE AS 'MODULE_PATHNAME', 'dbmirror_ddl';
COMMENT ON FUNCTION dbmirror_ddl(text) IS
    'runs one DDL statement and records it in the stream, for the slaves to run in its place among the changes';
-- The slaves run what this records as their applying role: only the owner, and roles granted
-- EXECUTE, may send DDL.
REVOKE ALL ON FUNCTION dbmirror_ddl(text) FROM PUBLIC;

CREATE FUNCTION dbmirror_ddl_event() RETURNS event_trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'dbmirror_ddl_event';
COMMENT ON FUNCTION dbmirror_ddl_event() IS
    'dbmirror''s DDL capture: records DDL on mirrored tables (dbmirror.capture_ddl) or warns about it';
"#,
    name = "dbmirror_ddl",
    requires = ["master_setup"],
);

crate::pg_finfo_v1!(pg_finfo_dbmirror_ddl);

/// `dbmirror_ddl(statement)`: runs one DDL statement and records it.
///
/// # Safety
/// Called by PostgreSQL's function manager with a valid fcinfo for the SQL signature above.
#[unsafe(no_mangle)]
#[pg_guard]
pub unsafe extern "C-unwind" fn dbmirror_ddl(fcinfo: pg_sys::FunctionCallInfo) -> Datum {
    // SAFETY: STRICT, so the argument is present and not null; the parse trees and SPI calls
    // live in the function's memory context.
    unsafe {
        let text = (*fcinfo).args.as_slice(1)[0].value;
        let statement = pg_sys::text_to_cstring(text.cast_mut_ptr());
        let bytes = CStr::from_ptr(statement).to_bytes().to_vec();
        require_one_ddl_statement(statement);
        let objects = objects::of_function((*(*fcinfo).flinfo).fn_oid);
        let outer = with_state(|s| s.explicit.replace(Vec::new()));
        if outer.is_some() {
            error(
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                "dbmirror_ddl() cannot be called inside dbmirror_ddl()".into(),
                "Send each statement with its own call.".into(),
            );
        }
        PgTryBuilder::new(|| {
            pg_sys::SPI_connect();
            let rc = pg_sys::SPI_execute(statement, false, 0);
            if rc < 0 {
                error(
                    PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                    format!(
                        "dbmirror_ddl() could not run the statement ({})",
                        CStr::from_ptr(pg_sys::SPI_result_code_string(rc)).to_string_lossy()
                    ),
                    "Run it on its own to see why.".into(),
                );
            }
            pg_sys::SPI_finish();
        })
        .catch_others(|e| {
            with_state(|s| s.explicit.take());
            e.rethrow()
        })
        .execute();
        // The event triggers gathered the tables while the statement ran.
        let mut touched = with_state(|s| s.explicit.take()).unwrap_or_default();
        touched.sort_by_key(|t| t.relid.to_u32());
        touched.dedup_by_key(|t| t.relid);
        let created = with_state(|s| s.created.iter().map(|(relid, _)| *relid).collect::<Vec<_>>());
        let (tables, others): (Vec<TableRef>, Vec<TableRef>) =
            touched.into_iter().partition(|t| t.mirrored || created.contains(&t.relid));
        if !others.is_empty() {
            ErrorReport::new(
                PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION,
                format!(
                    "the statement changes {}, which {} not mirrored",
                    names(&others),
                    if others.len() == 1 { "is" } else { "are" }
                ),
                "dbmirror",
            )
            .set_hint("A slave with ddl = \"mirrored\" (the default) refuses it; its file waits in quarantine.")
            .report(PgLogLevel::NOTICE);
        }
        let ddl = Ddl { statement: bytes, search_path: search_path(), tables };
        record(&objects, &ddl, pg_sys::GetCurrentCommandId(false), None);
        Datum::from(0)
    }
}

/// Refuses anything but one DDL statement: data changes of mirrored tables are captured as
/// they happen, and a second copy would apply them twice; `CREATE TABLE ... AS` would fill the
/// slave's table from the slave's own rows.
unsafe fn require_one_ddl_statement(statement: *const std::ffi::c_char) {
    // SAFETY: statement is a NUL-terminated string; the parse trees live in the current context.
    unsafe {
        let parsed =
            PgList::<pg_sys::RawStmt>::from_pg(pg_sys::raw_parser(statement, pg_sys::RawParseMode::RAW_PARSE_DEFAULT));
        let hint = "Pass exactly one DDL statement (CREATE, ALTER, DROP...); data changes of mirrored tables are captured as they happen.";
        if parsed.len() != 1 {
            error(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("dbmirror_ddl() takes one statement, not {}", parsed.len()),
                hint.into(),
            );
        }
        let node = (*parsed.head().expect("one statement")).stmt;
        let tag = CStr::from_ptr(pg_sys::GetCommandTagName(pg_sys::CreateCommandTag(node))).to_string_lossy();
        if pg_sys::GetCommandLogLevel(node) != pg_sys::LogStmtLevel::LOGSTMT_DDL
            || pgrx::is_a(node, pg_sys::NodeTag::T_CreateTableAsStmt)
        {
            error(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("dbmirror_ddl() takes DDL, not {tag}"),
                hint.into(),
            );
        }
    }
}

crate::pg_finfo_v1!(pg_finfo_dbmirror_ddl_event);

/// The event trigger function of `dbmirror_ddl_start`, `dbmirror_ddl_drop` and
/// `dbmirror_ddl_end`.
///
/// # Safety
/// Called by PostgreSQL's function manager, as an event trigger.
#[unsafe(no_mangle)]
#[pg_guard]
pub unsafe extern "C-unwind" fn dbmirror_ddl_event(fcinfo: pg_sys::FunctionCallInfo) -> Datum {
    // SAFETY: an event trigger's context is its EventTriggerData, valid for the call.
    unsafe {
        let context = (*fcinfo).context;
        if context.is_null() || (*context).type_ != pg_sys::NodeTag::T_EventTriggerData {
            capture::misuse("dbmirror_ddl_event() must be called as an event trigger");
        }
        let data = &*(context as *const pg_sys::EventTriggerData);
        let function = (*(*fcinfo).flinfo).fn_oid;
        match CStr::from_ptr(data.event).to_bytes() {
            b"ddl_command_start" => start(data, function),
            b"sql_drop" => dropped(data),
            b"ddl_command_end" => end(data, function),
            _ => capture::misuse("dbmirror_ddl_event() fires on ddl_command_start, sql_drop and ddl_command_end"),
        }
        Datum::from(0)
    }
}

/// The recordchange() function of the extension whose event trigger is running.
fn recordchange(function: Oid) -> Oid {
    // SAFETY: inside a transaction; the function is the one being called.
    let schema = unsafe { pg_sys::get_func_namespace(function) };
    objects::of_schema(schema).recordchange
}

/// Start of a statement: DROP TABLE and DROP INDEX find the tables they drop from while they
/// still exist.
unsafe fn start(data: &pg_sys::EventTriggerData, function: Oid) {
    // SAFETY: plain read of the transaction state.
    let level = unsafe { pg_sys::GetCurrentTransactionNestLevel() };
    let mut running =
        Running { parsetree: data.parsetree as usize, level, dropping: Vec::new(), dropped_from: Vec::new() };
    // SAFETY: the parse tree is the running statement's; names are resolved without locking.
    unsafe {
        if pgrx::is_a(data.parsetree, pg_sys::NodeTag::T_DropStmt) {
            let drop = &*(data.parsetree as *const pg_sys::DropStmt);
            let index = drop.removeType == pg_sys::ObjectType::OBJECT_INDEX;
            if index || drop.removeType == pg_sys::ObjectType::OBJECT_TABLE {
                let mut relids = Vec::new();
                for names in PgList::<pg_sys::List>::from_pg(drop.objects).iter_ptr() {
                    let rv = pg_sys::makeRangeVarFromNameList(names);
                    let oid = pg_sys::RangeVarGetRelidExtended(
                        rv,
                        pg_sys::NoLock as _,
                        pg_sys::RVROption::RVR_MISSING_OK,
                        None,
                        std::ptr::null_mut(),
                    );
                    let table =
                        if index && oid != pg_sys::InvalidOid { pg_sys::IndexGetRelation(oid, true) } else { oid };
                    if table != pg_sys::InvalidOid {
                        relids.push(table);
                    }
                }
                if !relids.is_empty() {
                    running.dropping = describe(&relids, recordchange(function));
                }
            }
        }
    }
    with_state(|s| s.running.push(running));
}

/// Objects dropped by a statement: the tables whose columns, constraints or defaults went.
unsafe fn dropped(data: &pg_sys::EventTriggerData) {
    let query = "SELECT DISTINCT k.oid FROM pg_catalog.pg_event_trigger_dropped_objects() o \
                   JOIN pg_catalog.pg_namespace n ON n.nspname = o.address_names[1] \
                   JOIN pg_catalog.pg_class k ON k.relnamespace = n.oid AND k.relname = o.address_names[2] \
                  WHERE o.object_type IN ('table column', 'table constraint', 'default value')";
    let relids: Vec<Oid> = Spi::connect(|client| {
        client
            .select(query, None, &[])?
            .map(|row| row.get::<Oid>(1).map(|o| o.unwrap_or(pg_sys::InvalidOid)))
            .collect::<Result<Vec<_>, _>>()
    })
    .unwrap_or_else(|e| spi_failed(e));
    let parsetree = data.parsetree as usize;
    with_state(|s| {
        if let Some(running) = s.running.iter_mut().rev().find(|r| r.parsetree == parsetree) {
            running.dropped_from.extend(relids);
        }
    });
}

fn spi_failed(e: pgrx::spi::Error) -> ! {
    error(
        PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        format!("dbmirror could not read the catalog: {e}"),
        "This is a bug in dbmirror.".into(),
    )
}

/// Names and mirroring of `relids` (those that still exist).
fn describe(relids: &[Oid], recordchange: Oid) -> Vec<TableRef> {
    let query = "SELECT k.oid, n.nspname::text, k.relname::text, \
                        EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t WHERE t.tgrelid = k.oid AND t.tgfoid = $2) \
                   FROM pg_catalog.pg_class k JOIN pg_catalog.pg_namespace n ON n.oid = k.relnamespace \
                  WHERE k.oid = ANY ($1) AND k.relkind IN ('r', 'p') ORDER BY k.oid";
    Spi::connect(|client| {
        client
            .select(query, None, &[relids.to_vec().into(), recordchange.into()])?
            .map(|row| {
                let relid: Oid = row.get(1)?.unwrap_or(pg_sys::InvalidOid);
                let schema: String = row.get(2)?.unwrap_or_default();
                let table: String = row.get(3)?.unwrap_or_default();
                let mirrored: bool = row.get(4)?.unwrap_or(false);
                Ok(TableRef {
                    relid,
                    name: format!("{}.{}", quote_identifier(&schema), quote_identifier(&table)),
                    mirrored,
                })
            })
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })
    .unwrap_or_else(|e| spi_failed(e))
}

/// What the commands of a statement touched, from `pg_event_trigger_ddl_commands()`.
struct Commands {
    /// Tables changed: directly, or through their indexes, constraints, defaults and owned
    /// sequences.
    changed: Vec<Oid>,
    /// Tables with a column of a type the statement changed (an enum's new value, say).
    typed: Vec<Oid>,
    /// Tables the statement created.
    created: Vec<Oid>,
    /// Tables that got a trigger calling recordchange(): they became mirrored.
    now_mirrored: Vec<Oid>,
}

fn commands(recordchange: Oid) -> Commands {
    let query = "WITH c AS (SELECT classid, objid, command_tag FROM pg_catalog.pg_event_trigger_ddl_commands()) \
        SELECT 'changed', x.tbl FROM ( \
            SELECT CASE c.classid \
                WHEN 'pg_catalog.pg_class'::pg_catalog.regclass THEN ( \
                    SELECT CASE WHEN k.relkind IN ('i', 'I') THEN (SELECT i.indrelid FROM pg_catalog.pg_index i WHERE i.indexrelid = k.oid) \
                                WHEN k.relkind = 'S' THEN (SELECT d.refobjid FROM pg_catalog.pg_depend d \
                                     WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = k.oid \
                                       AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.deptype IN ('a', 'i') LIMIT 1) \
                                WHEN k.relkind IN ('r', 'p') THEN k.oid END \
                      FROM pg_catalog.pg_class k WHERE k.oid = c.objid) \
                WHEN 'pg_catalog.pg_constraint'::pg_catalog.regclass THEN \
                    (SELECT NULLIF(o.conrelid, 0) FROM pg_catalog.pg_constraint o WHERE o.oid = c.objid) \
                WHEN 'pg_catalog.pg_attrdef'::pg_catalog.regclass THEN \
                    (SELECT a.adrelid FROM pg_catalog.pg_attrdef a WHERE a.oid = c.objid) \
                END AS tbl FROM c \
        ) x WHERE x.tbl IS NOT NULL \
        UNION ALL \
        SELECT DISTINCT 'typed', a.attrelid FROM c \
          JOIN pg_catalog.pg_type y ON c.classid = 'pg_catalog.pg_type'::pg_catalog.regclass \
               AND (y.oid = c.objid OR y.typelem = c.objid OR y.typbasetype = c.objid) \
          JOIN pg_catalog.pg_attribute a ON a.atttypid = y.oid AND a.attnum > 0 AND NOT a.attisdropped \
          JOIN pg_catalog.pg_class k ON k.oid = a.attrelid AND k.relkind IN ('r', 'p') \
        UNION ALL \
        SELECT 'created', c.objid FROM c JOIN pg_catalog.pg_class k ON k.oid = c.objid AND k.relkind IN ('r', 'p') \
         WHERE c.classid = 'pg_catalog.pg_class'::pg_catalog.regclass \
           AND c.command_tag IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO') \
        UNION ALL \
        SELECT 'mirrored', t.tgrelid FROM c JOIN pg_catalog.pg_trigger t \
            ON c.classid = 'pg_catalog.pg_trigger'::pg_catalog.regclass AND t.oid = c.objid AND t.tgfoid = $1";
    let rows: Vec<(String, Oid)> = Spi::connect(|client| {
        client
            .select(query, None, &[recordchange.into()])?
            .map(|row| {
                Ok((row.get::<String>(1)?.unwrap_or_default(), row.get::<Oid>(2)?.unwrap_or(pg_sys::InvalidOid)))
            })
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })
    .unwrap_or_else(|e| spi_failed(e));
    let mut commands =
        Commands { changed: Vec::new(), typed: Vec::new(), created: Vec::new(), now_mirrored: Vec::new() };
    for (what, relid) in rows {
        let list = match what.as_str() {
            "changed" => &mut commands.changed,
            "typed" => &mut commands.typed,
            "created" => &mut commands.created,
            _ => &mut commands.now_mirrored,
        };
        if !list.contains(&relid) {
            list.push(relid);
        }
    }
    commands
}

/// End of a statement: records it, remembers it, refuses it or warns about it.
unsafe fn end(data: &pg_sys::EventTriggerData, function: Oid) {
    let parsetree = data.parsetree as usize;
    let (running, alone) = with_state(|s| {
        let Some(at) = s.running.iter().rposition(|r| r.parsetree == parsetree) else {
            return (None, false);
        };
        // Entries above it belong to statements that failed inside this one.
        (s.running.drain(at..).next(), at == 0)
    });
    let recordchange = recordchange(function);
    let commands = commands(recordchange);
    // SAFETY: plain reads of the transaction state.
    let level = unsafe { pg_sys::GetCurrentTransactionNestLevel() };
    with_state(|s| s.created.extend(commands.created.iter().map(|&relid| (relid, level))));

    let mut relids = commands.changed.clone();
    if let Some(running) = &running {
        relids.extend(running.dropped_from.iter().copied());
    }
    relids.sort_by_key(|r| r.to_u32());
    relids.dedup();
    let mut tables = describe(&relids, recordchange);
    if let Some(running) = running {
        tables.extend(running.dropping.into_iter().filter(|t| !relids.contains(&t.relid)));
    }
    // A type's other users are not changed by the statement: only the mirrored ones count.
    let typed: Vec<Oid> = commands.typed.iter().copied().filter(|relid| !relids.contains(relid)).collect();
    tables.extend(describe(&typed, recordchange).into_iter().filter(|t| t.mirrored));

    let explicit = with_state(|s| s.explicit.is_some());
    if explicit {
        // Inside dbmirror_ddl(): it records the statement itself.
        with_state(|s| s.explicit.as_mut().expect("checked").extend(tables));
        return;
    }

    // SAFETY: the tag is the running statement's.
    let tag = unsafe { CStr::from_ptr(pg_sys::GetCommandTagName(data.tag)) }.to_string_lossy().into_owned();
    let capture = CAPTURE_DDL.get();
    if capture {
        for relid in &commands.now_mirrored {
            record_remembered(*relid, function);
        }
    }
    let created: Vec<Oid> = with_state(|s| s.created.iter().map(|(relid, _)| *relid).collect());
    let (mirrored, others): (Vec<TableRef>, Vec<TableRef>) = tables.into_iter().partition(|t| t.mirrored);
    let (new, others): (Vec<TableRef>, Vec<TableRef>) = others.into_iter().partition(|t| created.contains(&t.relid));
    if MASTER_ONLY_TAGS.contains(&tag.as_str()) || (mirrored.is_empty() && new.is_empty()) {
        return;
    }
    if mirrored.is_empty() && !CAPTURED_TAGS.contains(&tag.as_str()) {
        // A table made by CREATE TABLE AS or SELECT INTO: refused if it becomes mirrored in
        // this transaction, since the slave would fill it from its own tables.
        if capture {
            let why = format!("{tag}, which dbmirror does not carry to the slaves");
            remember(Err((why, new)), level);
        }
        return;
    }
    // SAFETY: the parse tree is the running statement's.
    if unsafe { master_only_alter(data.parsetree) } {
        return;
    }
    if mirrored.is_empty() {
        // Only tables of this transaction that are not mirrored (yet).
        if capture {
            // SAFETY: the parse tree is the running statement's.
            let ddl = match unsafe { statement_text(data.parsetree, alone) } {
                Some(statement) => Ok(Ddl { statement, search_path: search_path(), tables: new }),
                None => Err((
                    format!("{tag} inside a function, DO block or procedure, whose text dbmirror cannot read"),
                    new,
                )),
            };
            remember(ddl, level);
        }
        return;
    }
    if !capture {
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_WARNING,
            format!("{tag} of mirrored table {} is not in the stream: dbmirror.capture_ddl is off", names(&mirrored)),
            "dbmirror",
        )
        .set_hint(
            "Run the same statement on every slave between the same two transactions, or send it with SELECT dbmirror_ddl('...'), \
             or SET dbmirror.capture_ddl = on (docs/capture.md, \"Schema changes\").",
        )
        .report(PgLogLevel::WARNING);
        return;
    }
    let refused = |why: String, hint: &str| -> ! {
        error(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("{tag} of mirrored table {}: {why}", names(&mirrored)),
            hint.into(),
        )
    };
    if !CAPTURED_TAGS.contains(&tag.as_str()) {
        refused(
            format!("dbmirror does not carry {tag} to the slaves"),
            "Change the table with ALTER TABLE (or send the statement with dbmirror_ddl()) and run the rest on the slaves by hand; docs/capture.md lists what is captured.",
        );
    }
    if !others.is_empty() {
        refused(
            format!("the statement also changes {}, which is not mirrored", names(&others)),
            "Change mirrored and other tables in separate statements.",
        );
    }
    // SAFETY: the parse tree is the running statement's.
    if unsafe { concurrently(data.parsetree) } {
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_WARNING,
            format!("{tag} CONCURRENTLY of mirrored table {} is not in the stream", names(&mirrored)),
            "dbmirror",
        )
        .set_hint("A transaction file cannot run it. Indexes do not change the rows: build it on each slave, or send it without CONCURRENTLY with dbmirror_ddl().")
        .report(PgLogLevel::WARNING);
        return;
    }
    // SAFETY: the parse tree is the running statement's.
    if let Some(why) = unsafe { diverging_alter(data.parsetree) } {
        refused(why, "Add the column without a default (or with a constant one), then SET DEFAULT, and fill the existing rows with an UPDATE, which is mirrored as data.");
    }
    // SAFETY: as above.
    let Some(statement) = (unsafe { statement_text(data.parsetree, alone) }) else {
        refused(
            "dbmirror cannot read the statement's text, which ran inside a function, DO block or procedure".into(),
            "Run the statement on its own, or send it with SELECT dbmirror_ddl('...').",
        );
    };
    let mut tables = mirrored;
    tables.extend(new);
    let objects = objects::of_function(function);
    record(
        &objects,
        &Ddl { statement, search_path: search_path(), tables },
        unsafe { pg_sys::GetCurrentCommandId(false) },
        None,
    );
}

/// Remembers a statement on tables created in this transaction and not mirrored (yet), or why
/// it cannot be carried: recorded, or refused, if one of its tables becomes mirrored in this
/// transaction.
fn remember(ddl: Readable, level: i32) {
    // The statement's place among the changes is taken now; it is recorded later or never.
    let seq = pending::next_seq();
    // SAFETY: plain read of the command counter.
    let cid = unsafe { pg_sys::GetCurrentCommandId(false) };
    with_state(|s| s.remembered.push(Remembered { ddl, cid, seq, level, recorded: None }));
}

/// Records the remembered statements on `relid`, which just became mirrored.
fn record_remembered(relid: Oid, function: Oid) {
    // SAFETY: plain read of the transaction state.
    let level = unsafe { pg_sys::GetCurrentTransactionNestLevel() };
    let due: Vec<(Readable, pg_sys::CommandId, i64)> = with_state(|s| {
        s.remembered
            .iter_mut()
            .filter(|r| {
                let tables = match &r.ddl {
                    Ok(ddl) => &ddl.tables,
                    Err((_, tables)) => tables,
                };
                r.recorded.is_none() && tables.iter().any(|t| t.relid == relid)
            })
            .map(|r| {
                r.recorded = Some(level);
                (r.ddl.clone(), r.cid, r.seq)
            })
            .collect()
    });
    if due.is_empty() {
        return;
    }
    let objects = objects::of_function(function);
    for (ddl, cid, seq) in due {
        match ddl {
            Ok(ddl) => record(&objects, &ddl, cid, Some(seq)),
            Err((why, tables)) => error(
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                format!("table {} becomes mirrored, but it was changed in this transaction by {why}", names(&tables)),
                "Create the table with statements of their own (or send them with SELECT dbmirror_ddl('...')), then mirror it."
                    .into(),
            ),
        }
    }
}

/// The text of the statement whose parse tree is `parsetree`: its part of the running
/// portal's source text, if it is one of the portal's own statements. `alone` says that no
/// other DDL statement is running around it.
///
/// The portal holds the statement's tree itself (simple protocol), or one that a cached plan
/// copied before the statement ran (extended protocol), equal unless the statement's execution
/// changed its tree in place, as CREATE INDEX does. A portal of the extended protocol holds one
/// statement: when it is a utility statement of the same kind and no other DDL runs around this
/// one, it is this one.
unsafe fn statement_text(parsetree: *mut pg_sys::Node, alone: bool) -> Option<Vec<u8>> {
    // SAFETY: the active portal and its statements are valid while it runs.
    unsafe {
        let portal = pg_sys::ActivePortal;
        if portal.is_null() || (*portal).sourceText.is_null() {
            return None;
        }
        let source = CStr::from_ptr((*portal).sourceText).to_bytes();
        let stmts = PgList::<pg_sys::PlannedStmt>::from_pg((*portal).stmts);
        let only = stmts.len() == 1;
        for stmt in stmts.iter_ptr() {
            let utility = (*stmt).utilityStmt;
            if (*stmt).commandType != pg_sys::CmdType::CMD_UTILITY || utility.is_null() {
                continue;
            }
            let same = utility == parsetree
                || pg_sys::equal(utility.cast(), parsetree.cast())
                || (only && alone && (*utility).type_ == (*parsetree).type_ && !(*portal).cplan.is_null());
            if !same {
                continue;
            }
            let start = ((*stmt).stmt_location.max(0) as usize).min(source.len());
            let end = match (*stmt).stmt_len {
                0 => source.len(),
                len => (start + len as usize).min(source.len()),
            };
            let text = source[start..end].trim_ascii();
            let text = text.strip_suffix(b";").unwrap_or(text).trim_ascii_end();
            return Some(text.to_vec());
        }
        None
    }
}

/// Whether the statement is an ALTER TABLE whose every subcommand concerns only the master.
unsafe fn master_only_alter(parsetree: *mut pg_sys::Node) -> bool {
    // SAFETY: the caller passes the running statement's parse tree.
    unsafe {
        if !pgrx::is_a(parsetree, pg_sys::NodeTag::T_AlterTableStmt) {
            return false;
        }
        let stmt = &*(parsetree as *const pg_sys::AlterTableStmt);
        let commands = PgList::<pg_sys::AlterTableCmd>::from_pg(stmt.cmds);
        !commands.is_empty() && commands.iter_ptr().all(|cmd| master_only_subcommand((*cmd).subtype))
    }
}

/// Whether the statement is CREATE INDEX CONCURRENTLY or DROP INDEX CONCURRENTLY, which no
/// transaction can run.
unsafe fn concurrently(parsetree: *mut pg_sys::Node) -> bool {
    // SAFETY: the caller passes the running statement's parse tree.
    unsafe {
        (pgrx::is_a(parsetree, pg_sys::NodeTag::T_IndexStmt) && (*(parsetree as *const pg_sys::IndexStmt)).concurrent)
            || (pgrx::is_a(parsetree, pg_sys::NodeTag::T_DropStmt)
                && (*(parsetree as *const pg_sys::DropStmt)).concurrent)
    }
}

/// Why an ALTER TABLE would leave the slave's rows different from the master's, if it would:
/// a column added with a default that is not a constant (`now()`, `random()`, a sequence, an
/// identity) fills the existing rows with values the slave computes again, differently.
unsafe fn diverging_alter(parsetree: *mut pg_sys::Node) -> Option<String> {
    // SAFETY: the caller passes the running statement's parse tree.
    unsafe {
        if !pgrx::is_a(parsetree, pg_sys::NodeTag::T_AlterTableStmt) {
            return None;
        }
        let stmt = &*(parsetree as *const pg_sys::AlterTableStmt);
        for cmd in PgList::<pg_sys::AlterTableCmd>::from_pg(stmt.cmds).iter_ptr() {
            if (*cmd).subtype != pg_sys::AlterTableType::AT_AddColumn
                || !pgrx::is_a((*cmd).def, pg_sys::NodeTag::T_ColumnDef)
            {
                continue;
            }
            let column = &*((*cmd).def as *const pg_sys::ColumnDef);
            let name = CStr::from_ptr(column.colname).to_string_lossy();
            let refused = |what: &str| {
                Some(format!(
                    "column \"{name}\" is added with {what}, which the slaves would compute again, differently"
                ))
            };
            if !column.raw_default.is_null() && !constant(column.raw_default) {
                return refused("a default that is not a constant");
            }
            for constraint in PgList::<pg_sys::Constraint>::from_pg(column.constraints).iter_ptr() {
                match (*constraint).contype {
                    pg_sys::ConstrType::CONSTR_DEFAULT if !constant((*constraint).raw_expr) => {
                        return refused("a default that is not a constant")
                    }
                    pg_sys::ConstrType::CONSTR_IDENTITY => return refused("an identity"),
                    _ => {}
                }
            }
            if !column.typeName.is_null() {
                let names = PgList::<pg_sys::Node>::from_pg((*column.typeName).names);
                if let Some(last) = names.tail() {
                    let type_name =
                        CStr::from_ptr((*(last as *const pg_sys::String)).sval).to_string_lossy().to_ascii_lowercase();
                    if ["serial", "bigserial", "smallserial", "serial2", "serial4", "serial8"]
                        .contains(&type_name.as_str())
                    {
                        return refused(&format!("type {type_name}, whose default takes values from a sequence"));
                    }
                }
            }
        }
        None
    }
}

/// Whether a raw default expression is a constant: a literal, NULL, or a literal cast to a type.
unsafe fn constant(node: *mut pg_sys::Node) -> bool {
    // SAFETY: the caller passes a raw expression of the running statement's parse tree.
    unsafe {
        if node.is_null() || pgrx::is_a(node, pg_sys::NodeTag::T_A_Const) {
            return true;
        }
        pgrx::is_a(node, pg_sys::NodeTag::T_TypeCast) && constant((*(node as *const pg_sys::TypeCast)).arg)
    }
}
