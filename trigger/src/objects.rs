//! The extension's own objects (tables, their indexes, the commit sequence and its trigger
//! functions), found by name in the extension's schema once per backend.
//!
//! Both trigger functions live in the extension's schema, so the schema of whichever one is
//! running says where everything else is. Found objects are cached until a relcache
//! invalidation says the tables changed (DROP EXTENSION and CREATE EXTENSION drop and create
//! all of them together).

use std::cell::{Cell, RefCell};
use std::ffi::CStr;
use std::rc::Rc;

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::pg_sys::{self, Oid};
use pgrx::prelude::*;

use crate::local::BackendLocal;
use crate::names;

/// The extension's objects in one schema.
pub struct Objects {
    pub schema: Oid,
    pub schema_name: String,
    /// `recordchange()`: the capture trigger function.
    pub recordchange: Oid,
    /// `dbmirror_before()`: the function of the ordering and TRUNCATE triggers.
    pub before: Oid,
    pub pending: Oid,
    pub pending_key: Oid,
    pub pending_data: [Oid; 2],
    pub pending_data_index: [Oid; 2],
    pub commit_seq: Oid,
    /// dbmirror_PendingData's row type (that of its partitions), copied into the cache memory
    /// context.
    pub pending_data_desc: pg_sys::TupleDesc,
}

/// Columns of dbmirror_PendingData, in the order `pending::record` fills them.
pub const PENDING_DATA_COLUMNS: i32 = 9;

static OBJECTS: BackendLocal<RefCell<Option<Rc<Objects>>>> = BackendLocal::new(RefCell::new(None));
static STALE: BackendLocal<Cell<bool>> = BackendLocal::new(Cell::new(false));

/// The objects of the extension whose function `function` (a trigger function or any other
/// function of the extension) is running.
pub fn of_function(function: Oid) -> Rc<Objects> {
    if STALE.get().replace(false) {
        OBJECTS.get().borrow_mut().take();
    }
    let cached = OBJECTS.get().borrow().clone();
    if let Some(objects) = cached.filter(|o| o.recordchange == function || o.before == function) {
        return objects;
    }
    // SAFETY: inside a transaction; the function is the one being called.
    of_schema(unsafe { pg_sys::get_func_namespace(function) })
}

/// The extension's objects if this backend has already found them (and no invalidation has
/// arrived since): a cheap look for the executor hook of [`crate::order`], which must not read
/// the catalogs for every statement.
pub fn cached() -> Option<Rc<Objects>> {
    if STALE.get().get() {
        return None;
    }
    OBJECTS.get().borrow().clone()
}

/// The objects of the extension installed in `schema`.
pub fn of_schema(schema: Oid) -> Rc<Objects> {
    if STALE.get().replace(false) {
        OBJECTS.get().borrow_mut().take();
    }
    let cached = OBJECTS.get().borrow().clone();
    if let Some(objects) = cached.filter(|o| o.schema == schema) {
        return objects;
    }
    let objects = Rc::new(find(schema));
    *OBJECTS.get().borrow_mut() = Some(objects.clone());
    objects
}

fn missing(what: &str) -> ! {
    ErrorReport::new(PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT, format!("dbmirror {what} is missing"), "dbmirror")
        .set_hint("Recreate the extension with DROP EXTENSION dbmirror; CREATE EXTENSION dbmirror.")
        .report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}

fn find(schema: Oid) -> Objects {
    // SAFETY: inside a transaction; schema is a namespace OID from the catalog.
    let schema_name = unsafe { CStr::from_ptr(pg_sys::get_namespace_name(schema)) }.to_string_lossy().into_owned();
    let relation = |name: &CStr| {
        // SAFETY: inside a transaction; name is a NUL-terminated relation name.
        let oid = unsafe { pg_sys::get_relname_relid(name.as_ptr(), schema) };
        if oid == pg_sys::InvalidOid {
            missing(&format!("table \"{}\"", name.to_string_lossy()));
        }
        oid
    };
    let function = |name: &CStr| {
        // SAFETY: a qualified name list of two palloc'd strings; missing_ok, so no error.
        let oid = unsafe {
            let mut list = std::ptr::null_mut();
            list =
                pg_sys::lappend(list, pg_sys::makeString(pg_sys::pstrdup(pg_sys::get_namespace_name(schema))).cast());
            list = pg_sys::lappend(list, pg_sys::makeString(pg_sys::pstrdup(name.as_ptr())).cast());
            pg_sys::LookupFuncName(list, 0, std::ptr::null(), true)
        };
        if oid == pg_sys::InvalidOid {
            missing(&format!("function \"{}()\"", name.to_string_lossy()));
        }
        oid
    };
    let pending_data = names::PENDING_DATA.map(relation);
    // SAFETY: the relation exists (looked up above); the copy lives as long as the backend.
    let pending_data_desc = unsafe {
        let rel = pg_sys::table_open(pending_data[0], pg_sys::AccessShareLock as _);
        let old = pg_sys::MemoryContextSwitchTo(pg_sys::CacheMemoryContext);
        let desc = pg_sys::CreateTupleDescCopy((*rel).rd_att);
        pg_sys::MemoryContextSwitchTo(old);
        pg_sys::table_close(rel, pg_sys::AccessShareLock as _);
        desc
    };
    // SAFETY: as above.
    if unsafe { (*pending_data_desc).natts } != PENDING_DATA_COLUMNS {
        tables_do_not_match();
    }
    Objects {
        schema,
        schema_name,
        recordchange: function(names::RECORDCHANGE),
        before: function(names::BEFORE),
        pending: relation(names::PENDING),
        pending_key: relation(names::PENDING_KEY),
        pending_data,
        pending_data_index: names::PENDING_DATA_INDEX.map(relation),
        commit_seq: relation(names::COMMIT_SEQ),
        pending_data_desc,
    }
}

/// Relcache invalidation: forget the objects if their tables (or everything) changed. The
/// partitions of dbmirror_PendingData are left out on purpose: dbmirror_purge's TRUNCATE
/// invalidates them often, and keeps their OIDs.
pub fn forget(relid: Oid) {
    let Ok(cached) = OBJECTS.get().try_borrow() else {
        STALE.get().set(true);
        return;
    };
    let hit = cached
        .as_ref()
        .is_some_and(|o| relid == pg_sys::InvalidOid || [o.pending, o.pending_key, o.commit_seq].contains(&relid));
    if hit {
        STALE.get().set(true);
    }
}

/// Raises the ERROR for pending tables of another version of the extension than this library.
pub fn tables_do_not_match() {
    ErrorReport::new(
        PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        "dbmirror pending tables do not match the installed library",
        "dbmirror",
    )
    .set_hint("Update the extension with ALTER EXTENSION dbmirror UPDATE, or recreate it.")
    .report(PgLogLevel::ERROR);
}
