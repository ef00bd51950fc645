//! Writing the pending tables, and the per-transaction state of capture.
//!
//! Captured rows are inserted through the storage layer (`heap_multi_insert` and
//! `index_insert`, as PostgreSQL's own COPY and catalog code do), not through SQL: no parse,
//! plan or permission check per change, and users who change mirrored tables need no privilege
//! on the pending tables, so they cannot forge captured rows either.
//!
//! Each change becomes one row of dbmirror_PendingData, in the partition its transaction's xid
//! selects (see [`partition`]). Rows are buffered per subtransaction
//! level and written in batches (one WAL record per page instead of one per row): when a buffer
//! fills, when its subtransaction commits, and just before the transaction commits. A buffer is
//! always written by the subtransaction that captured its rows, so rolling a subtransaction back
//! takes its rows with it, written or not; the change count follows.
//!
//! Just before the transaction commits (or is prepared), one row goes to dbmirror_Pending with
//! a number from dbmirror_commit_seq: taken while the transaction still holds its row locks, so
//! a transaction that had to wait for another one's locks always gets a higher number than the
//! one it waited for.

use std::cell::RefCell;
use std::rc::Rc;

use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::prelude::*;

use crate::local::{as_superuser, BackendLocal};
use crate::objects::{self, Objects};

/// Rows of dbmirror_PendingData captured at one subtransaction level and not yet written.
struct Buffer {
    /// Transaction nesting level that captured them (1 is the top level).
    level: i32,
    /// Holds the rows; a child of TopTransactionContext, reset after each write.
    context: pg_sys::MemoryContext,
    rows: Vec<pg_sys::HeapTuple>,
    bytes: usize,
}

/// A buffer is written once it holds this many rows, or this many bytes.
const BUFFER_ROWS: usize = 1000;
const BUFFER_BYTES: usize = 16 << 20;

/// What the current top-level transaction has captured so far.
struct Xact {
    objects: Option<Rc<Objects>>,
    /// Captured changes that are still part of the transaction.
    changes: i64,
    /// Last capture-order number used; never reused within the transaction.
    seq: i64,
    /// Mirrored tables changed, in first-change order.
    relids: Vec<Oid>,
    /// (changes, relids.len()) at the start of each open subtransaction.
    saved: Vec<(i64, usize)>,
    /// Unwritten rows, by level, innermost last.
    buffers: Vec<Buffer>,
    /// Highest command id of any change captured so far (see [`crate::order`]).
    max_cid: pg_sys::CommandId,
}

static XACT: BackendLocal<RefCell<Xact>> = BackendLocal::new(RefCell::new(Xact {
    objects: None,
    changes: 0,
    seq: 0,
    relids: Vec::new(),
    saved: Vec::new(),
    buffers: Vec::new(),
    max_cid: 0,
}));

/// One captured change, ready to be written.
pub struct Change {
    pub relid: Oid,
    /// When the change took effect (see [`crate::order`]).
    pub cid: pg_sys::CommandId,
    pub shape: i64,
    pub op: u8,
    pub key: Option<Datum>,
    pub data: Option<Datum>,
    pub unchanged: Option<Datum>,
    /// Old values the slave checks before it applies the change (tables mirrored with
    /// `check_conflicts`): the changed columns of an update, the whole row of a delete.
    pub old: Option<Datum>,
}

/// The highest command id of the changes captured so far in this transaction.
pub fn max_cid() -> pg_sys::CommandId {
    XACT.get().borrow().max_cid
}

/// Records one change of the current transaction: a row of dbmirror_PendingData, written with
/// others of its subtransaction.
pub fn record(objects: &Rc<Objects>, change: Change) {
    record_at(objects, change, None, &[]);
}

/// Takes the next capture-order number, for a change recorded later in its place (see
/// [`crate::ddl`]).
pub fn next_seq() -> i64 {
    let mut xact = XACT.get().borrow_mut();
    xact.seq += 1;
    xact.seq
}

/// Records one change with the capture-order number `seq` (taken with [`next_seq`]) or the
/// next one; `also` are further tables it changes besides `change.relid`.
pub fn record_at(objects: &Rc<Objects>, change: Change, seq: Option<i64>, also: &[Oid]) {
    crate::order::restore_skipped();
    // SAFETY: called inside a transaction that is changing a table.
    let (xid, level) =
        unsafe { (pg_sys::GetTopFullTransactionId().value as i64, pg_sys::GetCurrentTransactionNestLevel()) };
    let mut xact = XACT.get().borrow_mut();
    let seq = seq.unwrap_or_else(|| {
        xact.seq += 1;
        xact.seq
    });
    xact.changes += 1;
    for &relid in std::iter::once(&change.relid).chain(also) {
        if relid != pg_sys::InvalidOid && xact.relids.last() != Some(&relid) && !xact.relids.contains(&relid) {
            xact.relids.push(relid);
        }
    }
    xact.objects.get_or_insert_with(|| objects.clone());
    xact.max_cid = xact.max_cid.max(change.cid);
    if xact.buffers.last().is_none_or(|b| b.level != level) {
        // SAFETY: inside a transaction, so TopTransactionContext exists; the context dies with it.
        let context = unsafe {
            pg_sys::AllocSetContextCreateInternal(
                pg_sys::TopTransactionContext,
                c"dbmirror captured rows".as_ptr(),
                pg_sys::ALLOCSET_DEFAULT_MINSIZE as usize,
                pg_sys::ALLOCSET_DEFAULT_INITSIZE as usize,
                pg_sys::ALLOCSET_DEFAULT_MAXSIZE as usize,
            )
        };
        xact.buffers.push(Buffer { level, context, rows: Vec::new(), bytes: 0 });
    }
    let optional = |d: Option<Datum>| (d.unwrap_or(Datum::from(0)), d.is_none());
    let (key, key_null) = optional(change.key);
    let (data, data_null) = optional(change.data);
    let (unchanged, unchanged_null) = optional(change.unchanged);
    let (old, old_null) = optional(change.old);
    let mut values = [
        Datum::from(xid),
        Datum::from(change.cid as i64),
        Datum::from(seq),
        Datum::from(change.shape),
        Datum::from(change.op as i8),
        key,
        data,
        unchanged,
        old,
    ];
    let mut nulls = [false, false, false, false, false, key_null, data_null, unchanged_null, old_null];
    let buffer = xact.buffers.last_mut().expect("a buffer for this level was just made");
    // SAFETY: the datums match dbmirror_PendingData's columns (the descriptor is checked when
    // the tables are looked up); the row is copied into the buffer's context.
    let row = unsafe {
        let old = pg_sys::MemoryContextSwitchTo(buffer.context);
        let row = pg_sys::heap_form_tuple(objects.pending_data_desc, values.as_mut_ptr(), nulls.as_mut_ptr());
        pg_sys::MemoryContextSwitchTo(old);
        row
    };
    buffer.bytes += unsafe { (*row).t_len } as usize;
    buffer.rows.push(row);
    let full = buffer.rows.len() >= BUFFER_ROWS || buffer.bytes >= BUFFER_BYTES;
    drop(xact);
    if full {
        write_buffer(level);
    }
}

/// Writes the buffered rows of `level` (which must be the current level) to
/// dbmirror_PendingData and its index.
fn write_buffer(level: i32) {
    let (objects, rows, context) = {
        let mut xact = XACT.get().borrow_mut();
        let Some(objects) = xact.objects.clone() else { return };
        let Some(buffer) = xact.buffers.iter_mut().find(|b| b.level == level) else { return };
        if buffer.rows.is_empty() {
            return;
        }
        buffer.bytes = 0;
        (objects, std::mem::take(&mut buffer.rows), buffer.context)
    };
    let lock = pg_sys::RowExclusiveLock as pg_sys::LOCKMODE;
    // SAFETY: inside a transaction that captured rows, so it has an xid.
    let xid = unsafe { pg_sys::GetTopFullTransactionId() }.value;
    let part = partition(xid);
    // SAFETY: the rows were formed with dbmirror_PendingData's descriptor in `context`, which
    // also holds the slots; both are released together by the reset at the end.
    unsafe {
        let old = pg_sys::MemoryContextSwitchTo(context);
        // The lock is held until the transaction ends: dbmirror_purge empties a partition only
        // when it can take a lock that conflicts with it.
        let heap = pg_sys::table_open(objects.pending_data[part], lock);
        let mut slots: Vec<*mut pg_sys::TupleTableSlot> = rows
            .iter()
            .map(|row| {
                // The cached copy is not reference-counted, so slots over it need no releasing: the
                // context reset frees them.
                let slot = pg_sys::MakeSingleTupleTableSlot(objects.pending_data_desc, &pg_sys::TTSOpsHeapTuple);
                pg_sys::ExecStoreHeapTuple(*row, slot, true);
                slot
            })
            .collect();
        // Never into free space further back (HEAP_INSERT_SKIP_FSM): on the page this backend
        // wrote last, or the last page, or a new one. A transaction's rows then lie together and
        // in capture order, after those written before them, and the exporter can read them in
        // physical order without a sort (see exporter/src/master.rs). The space given up is the
        // end of a page a row did not fit in and the rows of aborted transactions, until the
        // partition is emptied whole.
        pg_sys::heap_multi_insert(
            heap,
            slots.as_mut_ptr(),
            slots.len() as i32,
            pg_sys::GetCurrentCommandId(true),
            pg_sys::HEAP_INSERT_SKIP_FSM as i32,
            std::ptr::null_mut(),
        );
        let index = pg_sys::index_open(objects.pending_data_index[part], lock);
        let info = pg_sys::BuildIndexInfo(index);
        // The index is on xid, the first column, the same for every row of the transaction. A
        // BRIN entry summarises a range of pages, so one insert per page the rows went to covers
        // them all (rows fill pages in order: a page's rows are consecutive).
        let xid = Datum::from(xid as i64);
        let mut last_block = None;
        for slot in &slots {
            let tid = &mut (**slot).tts_tid;
            let block = ((tid.ip_blkid.bi_hi as u32) << 16) | tid.ip_blkid.bi_lo as u32;
            if last_block.replace(block) != Some(block) {
                index_insert(index, &mut [xid], &mut [false], tid, heap, false, info);
            }
        }
        pg_sys::index_close(index, pg_sys::NoLock as _);
        pg_sys::table_close(heap, pg_sys::NoLock as _);
        pg_sys::MemoryContextSwitchTo(old);
        pg_sys::MemoryContextReset(context);
    }
}

/// The partition of dbmirror_PendingData that the changes of transaction `xid` go to:
/// `(xid >> 14) & 1`, the partition key of sql/master_setup.sql. Transactions alternate between
/// the two every 16,384 xids, so one partition drains while the other fills.
fn partition(xid: u64) -> usize {
    ((xid >> 14) & 1) as usize
}

/// Inserts one row into `table` and its unique index `index`, whose columns are the first
/// `key_columns` columns of the table.
unsafe fn insert(table: Oid, index: Oid, values: &mut [Datum], nulls: &mut [bool], key_columns: usize) {
    let lock = pg_sys::RowExclusiveLock as pg_sys::LOCKMODE;
    // SAFETY: the caller passes one datum per column of the table.
    unsafe {
        let heap = pg_sys::table_open(table, lock);
        if (*(*heap).rd_att).natts as usize != values.len() {
            objects::tables_do_not_match();
        }
        let tuple = pg_sys::heap_form_tuple((*heap).rd_att, values.as_mut_ptr(), nulls.as_mut_ptr());
        pg_sys::simple_heap_insert(heap, tuple);
        let index = pg_sys::index_open(index, lock);
        let info = pg_sys::BuildIndexInfo(index);
        debug_assert_eq!((*info).ii_NumIndexKeyAttrs as usize, key_columns);
        index_insert(
            index,
            &mut values[..key_columns],
            &mut nulls[..key_columns],
            &mut (*tuple).t_self,
            heap,
            true,
            info,
        );
        pg_sys::index_close(index, pg_sys::NoLock as _);
        pg_sys::table_close(heap, pg_sys::NoLock as _);
    }
}

/// Inserts one index entry pointing at `tid`.
#[allow(clippy::too_many_arguments)]
unsafe fn index_insert(
    index: pg_sys::Relation,
    values: &mut [Datum],
    nulls: &mut [bool],
    tid: pg_sys::ItemPointer,
    heap: pg_sys::Relation,
    unique: bool,
    info: *mut pg_sys::IndexInfo,
) {
    let check =
        if unique { pg_sys::IndexUniqueCheck::UNIQUE_CHECK_YES } else { pg_sys::IndexUniqueCheck::UNIQUE_CHECK_NO };
    // SAFETY: the caller passes one datum per key column of the index, and a valid heap tid.
    unsafe {
        #[cfg(feature = "pg13")]
        pg_sys::index_insert(index, values.as_mut_ptr(), nulls.as_mut_ptr(), tid, heap, check, info);
        #[cfg(not(feature = "pg13"))]
        pg_sys::index_insert(index, values.as_mut_ptr(), nulls.as_mut_ptr(), tid, heap, check, false, info);
    }
}

/// Writes the transaction's row of dbmirror_Pending, if it captured anything that is still
/// part of it.
fn finish_capture() {
    // SAFETY: plain read of the transaction state.
    write_buffer(unsafe { pg_sys::GetCurrentTransactionNestLevel() });
    let (objects, changes, relids) = {
        let xact = XACT.get().borrow();
        match &xact.objects {
            Some(objects) if xact.changes > 0 => (objects.clone(), xact.changes, xact.relids.clone()),
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
                Datum::from(objects.commit_seq),
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
        // The time just before commit, as the master's commit time of the transaction: taken
        // once per transaction, and carried to the slave, which measures its lag from it.
        let committed_at = Datum::from(pg_sys::GetCurrentTimestamp());
        let mut values = [Datum::from(xid), commit_seq, Datum::from(changes), Datum::from(relids), committed_at];
        let mut nulls = [false; 5];
        insert(objects.pending, objects.pending_key, &mut values, &mut nulls, 1);
    }
}

/// Forgets the transaction's state. `durable` says whether what it wrote is committed: a
/// prepared transaction may still be rolled back with ROLLBACK PREPARED.
fn reset(durable: bool) {
    let mut xact = XACT.get().borrow_mut();
    xact.objects = None;
    xact.max_cid = 0;
    xact.changes = 0;
    xact.seq = 0;
    xact.relids.clear();
    xact.saved.clear();
    // The buffers' contexts are children of TopTransactionContext, which PostgreSQL frees.
    xact.buffers.clear();
    drop(xact);
    crate::shape::forget_stored(durable);
    crate::order::reset();
    crate::ddl::reset();
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
        XACT_EVENT_COMMIT => reset(true),
        XACT_EVENT_PREPARE | XACT_EVENT_ABORT => reset(false),
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
    // SAFETY: plain read of the transaction state; during the callbacks of a subtransaction's
    // end, it is still the current one.
    let level = unsafe { pg_sys::GetCurrentTransactionNestLevel() };
    if event == SUBXACT_EVENT_PRE_COMMIT_SUB {
        // Written while the subtransaction is still open, so the rows are its own.
        write_buffer(level);
        return;
    }
    let mut xact = XACT.get().borrow_mut();
    if matches!(event, SUBXACT_EVENT_COMMIT_SUB | SUBXACT_EVENT_ABORT_SUB) {
        while let Some(buffer) = xact.buffers.pop_if(|b| b.level >= level) {
            // Empty after a commit (written at pre-commit); the rolled-back rows after an abort.
            // SAFETY: the context was made for this buffer and nothing else points into it.
            unsafe { pg_sys::MemoryContextDelete(buffer.context) };
        }
    }
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
            crate::shape::forget_stored(false);
            crate::order::forget_level(level);
            crate::ddl::forget_level(level);
        }
        _ => {}
    }
}
