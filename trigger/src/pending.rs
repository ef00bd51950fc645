//! Writing the pending tables, and the per-transaction state of capture.
//!
//! Captured rows are inserted through the storage layer (`simple_heap_insert` and
//! `index_insert`, as PostgreSQL's own catalog code does), not through SQL: no parse, plan or
//! permission check per change, and users who change mirrored tables need no privilege on the
//! pending tables, so they cannot forge captured rows either.
//!
//! Each change becomes one row of dbmirror_PendingData. Just before the transaction commits
//! (or is prepared), one row goes to dbmirror_Pending with a number from dbmirror_commit_seq:
//! taken while the transaction still holds its row locks, so a transaction that had to wait
//! for another one's locks always gets a higher number than the one it waited for.
//! Subtransactions that roll back take their changes with them; the change count follows.

use std::cell::{Cell, RefCell};
use std::ffi::CStr;
use std::rc::Rc;

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::prelude::*;

use crate::names;

/// Backend-local state in a `static`. PostgreSQL backends are single-threaded, and pgrx only
/// lets the main thread call into PostgreSQL, so nothing here is ever shared between threads.
/// Statics are never dropped, so nothing runs at process exit after memory contexts are gone.
pub struct BackendLocal<T>(T);

// SAFETY: see the type's documentation: only the backend's one thread touches the value.
unsafe impl<T> Sync for BackendLocal<T> {}

impl<T> BackendLocal<T> {
    pub const fn new(value: T) -> Self {
        Self(value)
    }

    pub fn get(&self) -> &T {
        &self.0
    }
}

/// The extension's tables, found by name in the extension's schema.
pub struct Tables {
    pub schema: Oid,
    pub schema_name: String,
    pending: Oid,
    pending_key: Oid,
    pending_data: Oid,
    pending_data_key: Oid,
    commit_seq: Oid,
}

static TABLES: BackendLocal<RefCell<Option<Rc<Tables>>>> = BackendLocal::new(RefCell::new(None));
static TABLES_STALE: BackendLocal<Cell<bool>> = BackendLocal::new(Cell::new(false));

/// The tables of the extension whose schema is `schema`.
pub fn tables(schema: Oid) -> Rc<Tables> {
    if TABLES_STALE.get().replace(false) {
        TABLES.get().borrow_mut().take();
    }
    let cached = TABLES.get().borrow().clone();
    if let Some(tables) = cached.filter(|t| t.schema == schema) {
        return tables;
    }
    let lookup = |name: &CStr| {
        // SAFETY: inside a transaction; name is a NUL-terminated relation name.
        let oid = unsafe { pg_sys::get_relname_relid(name.as_ptr(), schema) };
        if oid == pg_sys::InvalidOid {
            ErrorReport::new(
                PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
                format!("dbmirror table \"{}\" is missing", name.to_string_lossy()),
                "recordchange",
            )
            .set_hint("Recreate the extension with DROP EXTENSION dbmirror; CREATE EXTENSION dbmirror.")
            .report(PgLogLevel::ERROR);
        }
        oid
    };
    // SAFETY: inside a transaction; schema is a namespace OID from the catalog.
    let schema_name = unsafe { CStr::from_ptr(pg_sys::get_namespace_name(schema)) }.to_string_lossy().into_owned();
    let tables = Rc::new(Tables {
        schema,
        schema_name,
        pending: lookup(names::PENDING),
        pending_key: lookup(names::PENDING_KEY),
        pending_data: lookup(names::PENDING_DATA),
        pending_data_key: lookup(names::PENDING_DATA_KEY),
        commit_seq: lookup(names::COMMIT_SEQ),
    });
    *TABLES.get().borrow_mut() = Some(tables.clone());
    tables
}

/// Relcache invalidation: forget the table OIDs if one of them (or everything) changed, for
/// instance after DROP EXTENSION and CREATE EXTENSION.
pub fn forget_tables(relid: Oid) {
    let Ok(cached) = TABLES.get().try_borrow() else {
        TABLES_STALE.get().set(true);
        return;
    };
    let hit = cached.as_ref().is_some_and(|t| {
        relid == pg_sys::InvalidOid
            || [t.pending, t.pending_key, t.pending_data, t.pending_data_key, t.commit_seq].contains(&relid)
    });
    if hit {
        TABLES_STALE.get().set(true);
    }
}

/// Runs `f` as the bootstrap superuser, as a SECURITY DEFINER function would. An error inside
/// `f` aborts the (sub)transaction, which restores the user by itself.
pub fn as_superuser<R>(f: impl FnOnce() -> R) -> R {
    let mut user = pg_sys::InvalidOid;
    let mut context = 0;
    // SAFETY: plain reads and writes of the backend's current user.
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
        pg_sys::SetUserIdAndSecContext(
            Oid::from(pg_sys::BOOTSTRAP_SUPERUSERID),
            context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32,
        );
    }
    let result = f();
    // SAFETY: as above.
    unsafe { pg_sys::SetUserIdAndSecContext(user, context) };
    result
}

/// What the current top-level transaction has captured so far.
struct Xact {
    tables: Option<Rc<Tables>>,
    /// Captured changes that are still part of the transaction.
    changes: i64,
    /// Last capture-order number used; never reused within the transaction.
    seq: i64,
    /// Mirrored tables changed, in first-change order.
    relids: Vec<Oid>,
    /// (changes, relids.len()) at the start of each open subtransaction.
    saved: Vec<(i64, usize)>,
}

static XACT: BackendLocal<RefCell<Xact>> =
    BackendLocal::new(RefCell::new(Xact { tables: None, changes: 0, seq: 0, relids: Vec::new(), saved: Vec::new() }));

/// One captured change, ready to be written.
pub struct Change {
    pub relid: Oid,
    pub cid: pg_sys::CommandId,
    pub shape: i64,
    pub op: u8,
    pub key: Option<Datum>,
    pub data: Option<Datum>,
    pub unchanged: Option<Datum>,
}

/// Writes one change of the current transaction to dbmirror_PendingData.
pub fn record(tables: &Rc<Tables>, change: Change) {
    // SAFETY: called from the trigger, inside a transaction that is changing a table.
    let xid = unsafe { pg_sys::GetTopFullTransactionId() }.value as i64;
    let seq = {
        let mut xact = XACT.get().borrow_mut();
        xact.seq += 1;
        xact.changes += 1;
        if xact.relids.last() != Some(&change.relid) && !xact.relids.contains(&change.relid) {
            xact.relids.push(change.relid);
        }
        xact.tables.get_or_insert_with(|| tables.clone());
        xact.seq
    };
    let optional = |d: Option<Datum>| (d.unwrap_or(Datum::from(0)), d.is_none());
    let (key, key_null) = optional(change.key);
    let (data, data_null) = optional(change.data);
    let (unchanged, unchanged_null) = optional(change.unchanged);
    let mut values = [
        Datum::from(xid),
        Datum::from(change.cid as i64),
        Datum::from(seq),
        Datum::from(change.shape),
        Datum::from(change.op as i8),
        key,
        data,
        unchanged,
    ];
    let mut nulls = [false, false, false, false, false, key_null, data_null, unchanged_null];
    // SAFETY: the datums match dbmirror_PendingData's columns; its key is (xid, cid, seq).
    unsafe { insert(tables.pending_data, tables.pending_data_key, &mut values, &mut nulls, 3) };
}

/// Inserts one row into `table` and its unique index `index`, whose columns are the first
/// `key_columns` columns of the table.
unsafe fn insert(table: Oid, index: Oid, values: &mut [Datum], nulls: &mut [bool], key_columns: usize) {
    let lock = pg_sys::RowExclusiveLock as pg_sys::LOCKMODE;
    // SAFETY: the caller passes one datum per column of the table.
    unsafe {
        let heap = pg_sys::table_open(table, lock);
        if (*(*heap).rd_att).natts as usize != values.len() {
            ErrorReport::new(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                "dbmirror pending tables do not match the installed library",
                "recordchange",
            )
            .set_hint("Update the extension with ALTER EXTENSION dbmirror UPDATE.")
            .report(PgLogLevel::ERROR);
        }
        let tuple = pg_sys::heap_form_tuple((*heap).rd_att, values.as_mut_ptr(), nulls.as_mut_ptr());
        pg_sys::simple_heap_insert(heap, tuple);
        let index = pg_sys::index_open(index, lock);
        let info = pg_sys::BuildIndexInfo(index);
        debug_assert_eq!((*info).ii_NumIndexKeyAttrs as usize, key_columns);
        index_insert(index, &mut values[..key_columns], &mut nulls[..key_columns], tuple, heap, info);
        pg_sys::index_close(index, pg_sys::NoLock as _);
        pg_sys::table_close(heap, pg_sys::NoLock as _);
    }
}

#[cfg(feature = "pg13")]
unsafe fn index_insert(
    index: pg_sys::Relation,
    values: &mut [Datum],
    nulls: &mut [bool],
    tuple: pg_sys::HeapTuple,
    heap: pg_sys::Relation,
    info: *mut pg_sys::IndexInfo,
) {
    unsafe {
        pg_sys::index_insert(
            index,
            values.as_mut_ptr(),
            nulls.as_mut_ptr(),
            &mut (*tuple).t_self,
            heap,
            pg_sys::IndexUniqueCheck::UNIQUE_CHECK_YES,
            info,
        );
    }
}

#[cfg(not(feature = "pg13"))]
unsafe fn index_insert(
    index: pg_sys::Relation,
    values: &mut [Datum],
    nulls: &mut [bool],
    tuple: pg_sys::HeapTuple,
    heap: pg_sys::Relation,
    info: *mut pg_sys::IndexInfo,
) {
    unsafe {
        pg_sys::index_insert(
            index,
            values.as_mut_ptr(),
            nulls.as_mut_ptr(),
            &mut (*tuple).t_self,
            heap,
            pg_sys::IndexUniqueCheck::UNIQUE_CHECK_YES,
            false,
            info,
        );
    }
}

/// Writes the transaction's row of dbmirror_Pending, if it captured anything that is still
/// part of it.
fn finish_capture() {
    let (tables, changes, relids) = {
        let xact = XACT.get().borrow();
        match &xact.tables {
            Some(tables) if xact.changes > 0 => (tables.clone(), xact.changes, xact.relids.clone()),
            _ => return,
        }
    };
    // SAFETY: pre-commit runs inside the still-open transaction; nextval_oid takes a regclass
    // datum and returns an int8 datum; construct_array copies the OIDs.
    unsafe {
        let xid = pg_sys::GetTopFullTransactionId().value as i64;
        let commit_seq = as_superuser(|| {
            pg_sys::OidFunctionCall1Coll(
                Oid::from(pg_sys::F_NEXTVAL),
                pg_sys::InvalidOid,
                Datum::from(tables.commit_seq),
            )
        });
        let mut elems: Vec<Datum> = relids.iter().map(|oid| Datum::from(*oid)).collect();
        let relids = pg_sys::construct_array(
            elems.as_mut_ptr(),
            elems.len() as i32,
            pg_sys::OIDOID,
            4,
            true,
            pg_sys::TYPALIGN_INT as _,
        );
        let mut values = [Datum::from(xid), commit_seq, Datum::from(changes), Datum::from(relids)];
        let mut nulls = [false; 4];
        insert(tables.pending, tables.pending_key, &mut values, &mut nulls, 1);
    }
}

fn reset(aborted: bool) {
    let mut xact = XACT.get().borrow_mut();
    xact.tables = None;
    xact.changes = 0;
    xact.seq = 0;
    xact.relids.clear();
    xact.saved.clear();
    drop(xact);
    crate::shape::forget_stored(aborted);
}

pub fn register_callbacks() {
    // SAFETY: called once from _PG_init; the callbacks live as long as the backend.
    unsafe {
        pg_sys::RegisterXactCallback(Some(xact_callback), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(subxact_callback), std::ptr::null_mut());
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn xact_callback(event: pg_sys::XactEvent::Type, _arg: *mut std::ffi::c_void) {
    use pg_sys::XactEvent::*;
    match event {
        XACT_EVENT_PRE_COMMIT | XACT_EVENT_PRE_PREPARE => finish_capture(),
        XACT_EVENT_COMMIT | XACT_EVENT_PREPARE => reset(false),
        XACT_EVENT_ABORT => reset(true),
        _ => {}
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn subxact_callback(
    event: pg_sys::SubXactEvent::Type,
    _my: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    use pg_sys::SubXactEvent::*;
    let mut xact = XACT.get().borrow_mut();
    match event {
        SUBXACT_EVENT_START_SUB => {
            let mark = (xact.changes, xact.relids.len());
            xact.saved.push(mark);
        }
        SUBXACT_EVENT_COMMIT_SUB => {
            xact.saved.pop();
        }
        SUBXACT_EVENT_ABORT_SUB => {
            // An empty stack means the library was loaded inside this subtransaction, so
            // everything captured so far belonged to it.
            let (changes, relids) = xact.saved.pop().unwrap_or((0, 0));
            xact.changes = changes;
            xact.relids.truncate(relids);
            drop(xact);
            crate::shape::forget_stored(true);
        }
        _ => {}
    }
}
