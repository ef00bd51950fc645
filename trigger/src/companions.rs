//! Completing a mirrored table's capture: dbmirror's companion triggers, and the SQL functions
//! that check, repair and report (see [`crate::check`] for what complete means).
//!
//! The companions are *internal* triggers, as PostgreSQL's own foreign-key triggers are: they
//! are not dumped by pg_dump, and do not show in psql's `\d`. What is dumped is the capture
//! trigger that calls `recordchange()`; when it is created again (by a restore, by the seed's
//! own `CREATE TRIGGER`, or by `dbmirror_mirror_table()`), dbmirror's event trigger calls
//! [`dbmirror_check_table`], which adds the companions. So however a table came to be mirrored,
//! its capture is complete, TRUNCATE included.

use std::ffi::{CStr, CString};

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::pg_sys::{self, Oid};
use pgrx::prelude::*;
use pgrx::spi::Spi;

use crate::check::{Context, Problem, ORDER_TRIGGER, TRUNCATE_TRIGGER};
use crate::local::as_superuser;
use crate::objects::{self, Objects};
use crate::relation;

/// The extension's objects, found through the extension's schema.
fn objects_here() -> std::rc::Rc<Objects> {
    let schema = Spi::get_one::<Oid>("SELECT extnamespace FROM pg_catalog.pg_extension WHERE extname = 'dbmirror'")
        .ok()
        .flatten()
        .unwrap_or_else(|| error!("extension \"dbmirror\" is not installed"));
    objects::of_schema(schema)
}

/// Checks the capture of table `tbl` where `context` says ('mirror': `dbmirror_mirror_table()`,
/// 'new_capture_trigger': a trigger calling `recordchange()` was just created, 'ddl': other DDL
/// on a mirrored table): raises what that context refuses, warns about what it only warns
/// about, and repairs what it repairs (adds missing companions, makes every dbmirror trigger
/// of the table ENABLE ALWAYS). Returns whether it repaired anything.
#[pg_extern(sql = r#"
CREATE FUNCTION dbmirror_check_table(tbl regclass, context text) RETURNS boolean
    LANGUAGE c STRICT VOLATILE AS 'MODULE_PATHNAME', '@FUNCTION_NAME@';
COMMENT ON FUNCTION dbmirror_check_table(regclass, text) IS
    'checks that changes of a table can be captured completely, and completes dbmirror''s triggers on it';
"#, requires = ["master_setup"])]
fn dbmirror_check_table(tbl: Oid, context: &str) -> bool {
    let context = match context {
        "mirror" => Context::Mirror,
        "new_capture_trigger" => Context::NewCaptureTrigger,
        "ddl" => Context::Ddl,
        other => error!("unknown context \"{other}\" for dbmirror_check_table"),
    };
    let objects = objects_here();
    require_trigger_privilege(tbl);
    let (exam, name) = relation::examine_now(tbl, &objects);
    relation::enforce(&exam, &name, context);
    if !exam.mirrored {
        return false;
    }
    let repairs: Vec<&Problem> =
        exam.problems.iter().filter(|p| p.treatment(context) == crate::check::Treatment::Repair).collect();
    if repairs.is_empty() {
        return false;
    }
    complete(tbl, &objects);
    // SAFETY: makes the new triggers visible to the examination below.
    unsafe { pg_sys::CommandCounterIncrement() };
    // Completing removes every repairable problem; anything else was raised or warned above.
    let (exam, name) = relation::examine_now(tbl, &objects);
    if let Some(problem) = exam.problems.iter().find(|p| p.treatment(context) != crate::check::Treatment::Warn) {
        problem.report(&name, PgLogLevel::ERROR);
    }
    true
}

/// Every problem that keeps table `tbl` from being captured completely, with its hint.
#[pg_extern(sql = r#"
CREATE FUNCTION dbmirror_table_problems(tbl regclass) RETURNS TABLE (problem text, hint text)
    LANGUAGE c STRICT STABLE AS 'MODULE_PATHNAME', '@FUNCTION_NAME@';
COMMENT ON FUNCTION dbmirror_table_problems(regclass) IS
    'what keeps changes of a mirrored table from being captured completely';
"#, requires = ["master_setup"])]
fn dbmirror_table_problems(tbl: Oid) -> TableIterator<'static, (name!(problem, String), name!(hint, Option<String>))> {
    let objects = objects_here();
    let (exam, name) = relation::examine_now(tbl, &objects);
    let rows: Vec<(String, Option<String>)> = if exam.mirrored {
        exam.problems.iter().map(|p| (p.message(&name), p.hint(&name))).collect()
    } else {
        Vec::new()
    };
    TableIterator::new(rows)
}

/// Refuses unless the current user may create triggers on `tbl` (as CREATE TRIGGER would).
fn require_trigger_privilege(tbl: Oid) {
    // SAFETY: plain catalog checks.
    let allowed = unsafe {
        pg_sys::pg_class_aclcheck(tbl, pg_sys::GetUserId(), pg_sys::ACL_TRIGGER as pg_sys::AclMode)
            == pg_sys::AclResult::ACLCHECK_OK
    };
    if !allowed {
        // SAFETY: the relation exists (regclass argument).
        let name = unsafe { CStr::from_ptr(pg_sys::get_rel_name(tbl)) }.to_string_lossy().into_owned();
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("permission denied for table {name}"),
            "dbmirror",
        )
        .set_hint("Mirroring a table needs the TRIGGER privilege on it.")
        .report(PgLogLevel::ERROR);
    }
}

/// Adds the missing companions of `tbl` and makes all its dbmirror triggers ENABLE ALWAYS, as
/// the bootstrap superuser (the companions are internal triggers, which only a superuser may
/// enable or disable).
fn complete(tbl: Oid, objects: &Objects) {
    as_superuser(|| {
        // SAFETY: the relation is opened with the lock CREATE TRIGGER takes, and closed; the
        // trigger statement nodes are palloc'd in the current memory context.
        unsafe {
            let rel = pg_sys::table_open(tbl, pg_sys::ShareRowExclusiveLock as _);
            let triggers = match (*rel).trigdesc.as_ref() {
                Some(desc) => std::slice::from_raw_parts(desc.triggers, desc.numtriggers as usize),
                None => &[],
            };
            let has_order =
                triggers.iter().any(|t| t.tgfoid == objects.before && t.tgtype as u32 & pg_sys::TRIGGER_TYPE_ROW != 0);
            let has_truncate =
                triggers.iter().any(|t| t.tgfoid == objects.before && t.tgtype as u32 & pg_sys::TRIGGER_TYPE_ROW == 0);
            let not_always: Vec<CString> = triggers
                .iter()
                .filter(|t| t.tgfoid == objects.before || t.tgfoid == objects.recordchange)
                .filter(|t| t.tgenabled as u8 != pg_sys::TRIGGER_FIRES_ALWAYS)
                .map(|t| CStr::from_ptr(t.tgname).to_owned())
                .collect();
            for name in not_always {
                pg_sys::EnableDisableTrigger(
                    rel,
                    name.as_ptr(),
                    pg_sys::TRIGGER_FIRES_ALWAYS as _,
                    false,
                    pg_sys::ShareRowExclusiveLock as _,
                );
            }
            if !has_order {
                create_companion(
                    rel,
                    objects,
                    ORDER_TRIGGER,
                    true,
                    (pg_sys::TRIGGER_TYPE_INSERT | pg_sys::TRIGGER_TYPE_UPDATE | pg_sys::TRIGGER_TYPE_DELETE) as i16,
                );
            }
            if !has_truncate {
                create_companion(rel, objects, TRUNCATE_TRIGGER, false, pg_sys::TRIGGER_TYPE_TRUNCATE as i16);
            }
            pg_sys::table_close(rel, pg_sys::NoLock as _);
        }
    });
}

/// Creates one internal BEFORE trigger calling `dbmirror_before()` on `rel`, ENABLE ALWAYS.
///
/// # Safety
/// `rel` must be open with at least ShareRowExclusiveLock.
unsafe fn create_companion(rel: pg_sys::Relation, objects: &Objects, name: &CStr, row: bool, events: i16) {
    // SAFETY: a zeroed CreateTrigStmt node with the fields CreateTrigger reads set; the
    // function is given by OID, so its name list is only used in messages.
    unsafe {
        let stmt = pg_sys::palloc0(std::mem::size_of::<pg_sys::CreateTrigStmt>()) as *mut pg_sys::CreateTrigStmt;
        (*stmt).type_ = pg_sys::NodeTag::T_CreateTrigStmt;
        (*stmt).trigname = pg_sys::pstrdup(name.as_ptr());
        let form = (*rel).rd_rel;
        (*stmt).relation = pg_sys::makeRangeVar(
            pg_sys::get_namespace_name((*form).relnamespace),
            pg_sys::pstrdup((*form).relname.data.as_ptr()),
            -1,
        );
        let mut funcname = std::ptr::null_mut();
        funcname = pg_sys::lappend(
            funcname,
            pg_sys::makeString(pg_sys::pstrdup(pg_sys::get_namespace_name(objects.schema))).cast(),
        );
        funcname = pg_sys::lappend(funcname, pg_sys::makeString(pg_sys::pstrdup(crate::names::BEFORE.as_ptr())).cast());
        (*stmt).funcname = funcname;
        (*stmt).row = row;
        (*stmt).timing = pg_sys::TRIGGER_TYPE_BEFORE as i16;
        (*stmt).events = events;
        pg_sys::CreateTriggerFiringOn(
            stmt,
            c"".as_ptr(),
            (*rel).rd_id,
            pg_sys::InvalidOid,
            pg_sys::InvalidOid,
            pg_sys::InvalidOid,
            objects.before,
            pg_sys::InvalidOid,
            std::ptr::null_mut(),
            true,
            false,
            pg_sys::TRIGGER_FIRES_ALWAYS as _,
        );
    }
}
