//! When a change takes effect, and `dbmirror_before()`, the trigger that pins it.
//!
//! Captured changes are exported in the order `(cid, seq)`: `cid` is the command id current
//! when the change took effect on the master, `seq` the order in which capture recorded it.
//! Changes take effect during their statement's execution, but the capture trigger fires AFTER,
//! at the end of the statement, and later still when other AFTER triggers fire first. So:
//!
//! * A statement's changes carry its command id, read from the row (cmin, or cmax for a
//!   delete), and are recorded in the order the statement made them (AFTER row triggers fire in
//!   that order). Everything that runs after a statement ran with later command ids: its AFTER
//!   triggers (including foreign-key actions and triggers that sort before the capture trigger),
//!   deferred triggers, later statements. Sorting by `cid` first puts their changes after it,
//!   although they were recorded first.
//! * A statement nested *inside* another one's execution (in a BEFORE row or statement trigger,
//!   or in a function called by the outer statement's expressions) runs with a later command id
//!   but takes effect before the outer statement's later rows. For those rows the command id of
//!   their statement is too early. `dbmirror_before()`, fired BEFORE each row change as the last
//!   BEFORE trigger (its name sorts last), reads the command counter just before the row changes:
//!   that is after every nested statement so far, and becomes the row's `cid`. It is pinned to
//!   the row (by the old row's ctid for updates and deletes, by the new row's values for
//!   inserts) and picked up by the capture trigger.
//!
//! Pinning is needed only when a change was captured after the statement began, which a command
//! id above the statement's own snapshot's says: the common case pins nothing. An insert's pin
//! is found among those of its table and values made at or after its statement's command id,
//! the earliest first; two inserts of the same values into one table are the same change in the
//! file, whichever pin each takes; an insert whose key a row already holds for certain is not
//! pinned, because ON CONFLICT abandons it (see [`conflicts`]). Where `dbmirror_before()` is the
//! only BEFORE ROW trigger of a table, a statement does not even fire it until a change is
//! captured during its execution (see [`executor_start`]): the trigger's mere presence would
//! make every UPDATE and DELETE lock the old row first.
//!
//! TRUNCATE is captured BEFORE it happens, by the same function fired as the last BEFORE
//! TRUNCATE trigger: its command id and capture order come after every change made before it,
//! including by other BEFORE TRUNCATE triggers, and before every change its AFTER TRUNCATE
//! triggers make.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};

use pgrx::pg_sys::{self, CommandId, Datum};
use pgrx::prelude::*;

use crate::capture;
use crate::local::BackendLocal;
use crate::objects;
use crate::pending::{self, Change};
use crate::relation;
use crate::shape::Shape;

/// A pinned command id, with the transaction nesting level that pinned it.
type Pin = (CommandId, i32);

/// Pinned command ids of the current transaction, with the transaction nesting level that
/// pinned them (a rolled-back subtransaction takes its pins with it).
#[derive(Default)]
struct Pins {
    /// Inserts, by table, then by row fingerprint, in pin order.
    inserts: HashMap<u32, HashMap<[u8; 16], VecDeque<Pin>>>,
    /// Updates and deletes, by table and the old row's ctid.
    rows: HashMap<(u32, u32, u16), Pin>,
}

static PINS: BackendLocal<RefCell<Option<Pins>>> = BackendLocal::new(RefCell::new(None));

/// Forgets every pin (transaction end).
pub fn reset() {
    PINS.get().borrow_mut().take();
}

/// Forgets the pins of an aborted subtransaction at `level` and its children.
pub fn forget_level(level: i32) {
    if let Some(pins) = PINS.get().borrow_mut().as_mut() {
        pins.rows.retain(|_, (_, l)| *l < level);
        pins.inserts.retain(|_, table| {
            table.retain(|_, queue| {
                queue.retain(|(_, l)| *l < level);
                !queue.is_empty()
            });
            !table.is_empty()
        });
    }
}

fn ctid_key(relid: pg_sys::Oid, tuple: pg_sys::HeapTuple) -> (u32, u32, u16) {
    // SAFETY: a tuple handed to a trigger has a valid t_self.
    let tid = unsafe { (*tuple).t_self };
    let block = ((tid.ip_blkid.bi_hi as u32) << 16) | tid.ip_blkid.bi_lo as u32;
    (relid.to_u32(), block, tid.ip_posid)
}

/// The command id pinned for an update or delete of `old` (a row of `rel`), if any.
///
/// # Safety
/// `old` must be the old row handed to the trigger.
pub unsafe fn pinned_row(relid: pg_sys::Oid, old: pg_sys::HeapTuple) -> Option<CommandId> {
    let mut pins = PINS.get().borrow_mut();
    let pins = pins.as_mut()?;
    pins.rows.remove(&ctid_key(relid, old)).map(|(cid, _)| cid)
}

/// The command id pinned for the insert of `new` (a row of `rel` made by a statement with
/// command id `statement`), if any.
///
/// # Safety
/// `rel` must be open and `new` one of its rows.
pub unsafe fn pinned_insert(
    rel: pg_sys::Relation,
    shape: &Shape,
    new: pg_sys::HeapTuple,
    statement: CommandId,
) -> Option<CommandId> {
    // SAFETY: the caller's contract.
    let relid = unsafe { (*rel).rd_id }.to_u32();
    // Fingerprints are made only for tables with pinned inserts.
    if PINS.get().borrow().as_ref().is_none_or(|p| !p.inserts.contains_key(&relid)) {
        return None;
    }
    // SAFETY: the caller's contract.
    let fingerprint = unsafe { capture::fingerprint(rel, shape, new) };
    let mut pins = PINS.get().borrow_mut();
    let pins = pins.as_mut()?;
    let table = pins.inserts.get_mut(&relid)?;
    let queue = table.get_mut(&fingerprint)?;
    let position = queue.iter().position(|(cid, _)| *cid >= statement)?;
    let (cid, _) = queue.remove(position).expect("the position was just found");
    if queue.is_empty() {
        table.remove(&fingerprint);
        if table.is_empty() {
            pins.inserts.remove(&relid);
        }
    }
    Some(cid)
}

/// The command id of the statement whose execution the trigger runs in, or a lower one: that of
/// the active snapshot (a procedure's statements may share an older one, which only pins more
/// than needed).
fn statement_floor() -> CommandId {
    // SAFETY: plain reads of the snapshot stack.
    unsafe {
        if pg_sys::ActiveSnapshotSet() {
            (*pg_sys::GetActiveSnapshot()).curcid
        } else {
            0
        }
    }
}

pgrx::extension_sql!(
    r#"
CREATE FUNCTION dbmirror_before() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'dbmirror_before';
COMMENT ON FUNCTION dbmirror_before() IS
    'dbmirror''s own BEFORE triggers: pins when a row change takes effect, and captures TRUNCATE';
"#,
    name = "dbmirror_before",
    requires = ["master_setup"],
);

crate::pg_finfo_v1!(pg_finfo_dbmirror_before);

/// # Safety
/// Called by PostgreSQL's function manager, as a trigger.
#[unsafe(no_mangle)]
#[pg_guard]
pub unsafe extern "C-unwind" fn dbmirror_before(fcinfo: pg_sys::FunctionCallInfo) -> Datum {
    // SAFETY: PostgreSQL hands triggers valid trigger data for the duration of the call; the
    // relation stays open and locked, and the tuples valid.
    unsafe {
        let td = capture::trigger_data(fcinfo, "dbmirror_before");
        let event = td.tg_event;
        let rel = td.tg_relation;
        let objects = objects::of_function((*(*fcinfo).flinfo).fn_oid);
        let table = relation::of(rel, &objects);
        let row_level = event & pg_sys::TRIGGER_EVENT_ROW != 0;
        let op = event & pg_sys::TRIGGER_EVENT_OPMASK;
        let passed = match op {
            pg_sys::TRIGGER_EVENT_UPDATE => td.tg_newtuple,
            _ => td.tg_trigtuple,
        };
        if event & pg_sys::TRIGGER_EVENT_TIMINGMASK != pg_sys::TRIGGER_EVENT_BEFORE {
            capture::misuse("dbmirror_before() must be fired BEFORE the change");
        }
        if !table.exam.mirrored {
            // The companion of a table no longer mirrored: nothing to do.
            return Datum::from(passed);
        }
        table.require_complete();
        if !row_level {
            if op == pg_sys::TRIGGER_EVENT_TRUNCATE {
                let shape = table.shape(rel, &objects);
                pending::record(
                    &objects,
                    Change {
                        relid: (*rel).rd_id,
                        // Used, as a pinned row's (see below).
                        cid: pg_sys::GetCurrentCommandId(true),
                        shape: shape.id,
                        op: capture::TRUNCATE,
                        key: None,
                        data: None,
                        unchanged: None,
                        old: None,
                    },
                );
            }
            return Datum::from(0);
        }
        if pending::max_cid() <= statement_floor() {
            return Datum::from(passed);
        }
        // Marked as used, so that the next statement gets a later command id: the pinned row
        // takes effect before anything that runs after this point.
        let cid = pg_sys::GetCurrentCommandId(true);
        let level = pg_sys::GetCurrentTransactionNestLevel();
        let relid = (*rel).rd_id;
        if op == pg_sys::TRIGGER_EVENT_INSERT {
            // A row that cannot be inserted gets no pin: ON CONFLICT abandons it after this
            // trigger fired, and its pin would be taken by a row of the same values that the
            // statement inserts later, once a nested statement freed the key.
            if conflicts(rel, td.tg_trigtuple) {
                return Datum::from(passed);
            }
            let shape = table.shape(rel, &objects);
            let fingerprint = capture::fingerprint(rel, &shape, td.tg_trigtuple);
            let mut pins = PINS.get().borrow_mut();
            let table = pins.get_or_insert_with(Pins::default).inserts.entry(relid.to_u32()).or_default();
            table.entry(fingerprint).or_default().push_back((cid, level));
        } else {
            let mut pins = PINS.get().borrow_mut();
            pins.get_or_insert_with(Pins::default).rows.insert(ctid_key(relid, td.tg_trigtuple), (cid, level));
        }
        Datum::from(passed)
    }
}

/// Whether `row`, about to be inserted into `rel`, has the key of a row that certainly exists
/// (committed, or this transaction's own) in one of the table's immediate unique indexes: such
/// an insert never happens, ON CONFLICT abandons it (or the unique check fails the statement).
/// Indexes on expressions, partial indexes, null keys and rows of transactions still running
/// leave the question open, and the answer is no: a pin too many is harmless unless an
/// insert is abandoned.
///
/// # Safety
/// `rel` must be open (and locked for the insert), `row` a row of its shape.
unsafe fn conflicts(rel: pg_sys::Relation, row: pg_sys::HeapTuple) -> bool {
    // SAFETY: the caller's contract; the indexes are opened with the lock the insert holds on
    // them, the scan keys point at the row's values, and everything made is released here.
    unsafe {
        let list = pg_sys::RelationGetIndexList(rel);
        let indexes: Vec<pg_sys::Oid> = match list.as_ref() {
            None => Vec::new(),
            Some(l) => (0..l.length as usize).map(|i| (*l.elements.add(i)).oid_value).collect(),
        };
        let lock = pg_sys::RowExclusiveLock as pg_sys::LOCKMODE;
        for oid in indexes {
            let index = pg_sys::index_open(oid, lock);
            let found = conflicts_in(rel, index, row);
            pg_sys::index_close(index, lock);
            if found {
                return true;
            }
        }
        false
    }
}

/// [`conflicts`] for one index.
///
/// # Safety
/// As [`conflicts`]; `index` an open index of `rel`.
unsafe fn conflicts_in(rel: pg_sys::Relation, index: pg_sys::Relation, row: pg_sys::HeapTuple) -> bool {
    // SAFETY: the caller's contract.
    unsafe {
        let form = &*(*index).rd_index;
        if !form.indisunique
            || !form.indimmediate
            || !form.indisvalid
            || (*(*index).rd_rel).relam != pg_sys::BTREE_AM_OID
            || !pg_sys::heap_attisnull((*index).rd_indextuple, pg_sys::Anum_pg_index_indpred as _, std::ptr::null_mut())
        {
            return false;
        }
        let nkeys = form.indnkeyatts as usize;
        let attnums = form.indkey.values.as_slice(nkeys);
        let mut keys: Vec<pg_sys::ScanKeyData> = Vec::with_capacity(nkeys);
        for (i, &attnum) in attnums.iter().enumerate() {
            if attnum <= 0 {
                return false;
            }
            let mut null = false;
            let value = pg_sys::heap_getattr(row, attnum as i32, (*rel).rd_att, &mut null);
            if null {
                return false;
            }
            let opfamily = *(*index).rd_opfamily.add(i);
            let intype = *(*index).rd_opcintype.add(i);
            let operator = pg_sys::get_opfamily_member(opfamily, intype, intype, pg_sys::BTEqualStrategyNumber as i16);
            if operator == pg_sys::InvalidOid {
                return false;
            }
            let mut key = std::mem::zeroed::<pg_sys::ScanKeyData>();
            pg_sys::ScanKeyEntryInitialize(
                &mut key,
                0,
                (i + 1) as pg_sys::AttrNumber,
                pg_sys::BTEqualStrategyNumber as pg_sys::StrategyNumber,
                pg_sys::InvalidOid,
                *(*index).rd_indcollation.add(i),
                pg_sys::get_opcode(operator),
                value,
            );
            keys.push(key);
        }
        // A dirty snapshot sees this transaction's rows whatever their command id (those of the
        // statements nested in this one), and says which rows other transactions are still
        // inserting or deleting.
        let mut snapshot = std::mem::zeroed::<pg_sys::SnapshotData>();
        snapshot.snapshot_type = pg_sys::SnapshotType::SNAPSHOT_DIRTY;
        let scan = pg_sys::index_beginscan(rel, index, &mut snapshot, nkeys as i32, 0);
        pg_sys::index_rescan(scan, keys.as_mut_ptr(), nkeys as i32, std::ptr::null_mut(), 0);
        let slot = pg_sys::table_slot_create(rel, std::ptr::null_mut());
        let mut certain = false;
        while pg_sys::index_getnext_slot(scan, pg_sys::ScanDirection::ForwardScanDirection, slot) {
            if snapshot.xmin == pg_sys::InvalidTransactionId && snapshot.xmax == pg_sys::InvalidTransactionId {
                certain = true;
                break;
            }
        }
        pg_sys::index_endscan(scan);
        pg_sys::ExecDropSingleTupleTableSlot(slot);
        certain
    }
}

/// The BEFORE ROW flags of a running statement's result relation that [`executor_start`]
/// turned off: `~dbmirror_order` was the only BEFORE ROW trigger of those events.
struct Skipped {
    /// The statement's executor state, whose query memory holds `desc`.
    estate: usize,
    /// The result relation's own copy of the trigger descriptor (each executor copies it).
    desc: *mut pg_sys::TriggerDesc,
    insert: bool,
    update: bool,
    delete: bool,
}

/// Result relations of running statements that do not fire `~dbmirror_order` for now.
static SKIPPED: BackendLocal<RefCell<Vec<Skipped>>> = BackendLocal::new(RefCell::new(Vec::new()));

static mut PREVIOUS_EXECUTOR_START: pg_sys::ExecutorStart_hook_type = None;

/// Installs the executor hook (once per backend, from `_PG_init`).
pub fn register_hooks() {
    // SAFETY: called once from _PG_init, in the backend's only thread.
    unsafe {
        PREVIOUS_EXECUTOR_START = pg_sys::ExecutorStart_hook;
        pg_sys::ExecutorStart_hook = Some(executor_start);
    }
}

/// Lets the statements that are running fire `~dbmirror_order` again: a change was just
/// captured, so a statement whose execution it happened in may need pins for its later rows.
/// Called for every captured change.
pub fn restore_skipped() {
    let Ok(mut skipped) = SKIPPED.get().try_borrow_mut() else { return };
    for s in skipped.drain(..) {
        // SAFETY: the descriptor lives in the statement's query memory, and the entry is
        // removed (by `forget_estate`) before that memory goes.
        unsafe {
            let desc = &mut *s.desc;
            desc.trig_insert_before_row |= s.insert;
            desc.trig_update_before_row |= s.update;
            desc.trig_delete_before_row |= s.delete;
        }
    }
}

/// The executor's start: after the standard one, turns off `~dbmirror_order` for the
/// statement's result relations where it is the only BEFORE ROW trigger.
///
/// The trigger only has work when a change was captured after the statement began (see the
/// module's documentation), which in the common case never happens; but its mere presence
/// costs every row: a BEFORE ROW UPDATE or DELETE trigger makes the executor lock the old row
/// first (one more WAL record per row), and each row pays a trigger call. So the statement
/// starts without it, and [`restore_skipped`] turns it back on the moment any change is
/// captured, which happens before the statement changes its next row: a nested statement's
/// changes are captured when that statement ends, inside the outer statement's execution.
/// Rows changed before that needed no pin.
#[pg_guard]
unsafe extern "C-unwind" fn executor_start(query: *mut pg_sys::QueryDesc, eflags: std::ffi::c_int) {
    // SAFETY: the hook's contract: chain to the previous hook or the standard start.
    unsafe {
        match PREVIOUS_EXECUTOR_START {
            Some(previous) => previous(query, eflags),
            None => pg_sys::standard_ExecutorStart(query, eflags),
        }
        skip_order_triggers((*query).estate);
    }
}

/// # Safety
/// `estate` must be a started executor's state (or null).
unsafe fn skip_order_triggers(estate: *mut pg_sys::EState) {
    // Without the extension's objects found yet (the backend's first capture), nothing is
    // skipped: the trigger fires, and finds them.
    let Some(objects) = objects::cached() else { return };
    // SAFETY: the result relations a started executor opened stay open until it ends, and
    // their trigger descriptors are the executor's own copies, in its query memory.
    unsafe {
        if estate.is_null() {
            return;
        }
        let mut skipped = Vec::new();
        for info in result_relations(estate) {
            let desc = (*info).ri_TrigDesc;
            if desc.is_null() {
                continue;
            }
            let triggers = std::slice::from_raw_parts((*desc).triggers, (*desc).numtriggers as usize);
            if !triggers.iter().any(|t| t.tgfoid == objects.before) {
                continue;
            }
            // Only for a table whose capture is complete: otherwise `~dbmirror_order` is what
            // refuses the write before it happens (the capture trigger may be disabled).
            let rel = (*info).ri_RelationDesc;
            if !relation::of(rel, &objects).exam.problems.is_empty() {
                continue;
            }
            let only_ours = |event: u32| {
                triggers
                    .iter()
                    .filter(|t| {
                        let tgtype = t.tgtype as u32;
                        tgtype & pg_sys::TRIGGER_TYPE_ROW != 0
                            && tgtype & pg_sys::TRIGGER_TYPE_TIMING_MASK == pg_sys::TRIGGER_TYPE_BEFORE
                            && tgtype & event != 0
                    })
                    .all(|t| t.tgfoid == objects.before)
            };
            let d = &mut *desc;
            let insert = d.trig_insert_before_row && only_ours(pg_sys::TRIGGER_TYPE_INSERT);
            let update = d.trig_update_before_row && only_ours(pg_sys::TRIGGER_TYPE_UPDATE);
            let delete = d.trig_delete_before_row && only_ours(pg_sys::TRIGGER_TYPE_DELETE);
            if !(insert || update || delete) {
                continue;
            }
            d.trig_insert_before_row &= !insert;
            d.trig_update_before_row &= !update;
            d.trig_delete_before_row &= !delete;
            skipped.push(Skipped { estate: estate as usize, desc, insert, update, delete });
        }
        if skipped.is_empty() {
            return;
        }
        // Forgotten when the query memory goes, however the statement ends (an error too).
        let callback = pg_sys::MemoryContextAlloc((*estate).es_query_cxt, size_of::<pg_sys::MemoryContextCallback>())
            as *mut pg_sys::MemoryContextCallback;
        (*callback).func = Some(forget_estate);
        (*callback).arg = estate.cast();
        pg_sys::MemoryContextRegisterResetCallback((*estate).es_query_cxt, callback);
        SKIPPED.get().borrow_mut().extend(skipped);
    }
}

/// The result relations a started executor opened (the partitions that tuple routing opens
/// later are not among them, and keep the trigger).
///
/// # Safety
/// `estate` must be a started executor's state.
#[cfg(not(feature = "pg13"))]
unsafe fn result_relations(estate: *mut pg_sys::EState) -> Vec<*mut pg_sys::ResultRelInfo> {
    // SAFETY: the caller's contract; the list holds ResultRelInfo pointers.
    unsafe {
        let list = (*estate).es_opened_result_relations;
        if list.is_null() {
            return Vec::new();
        }
        std::slice::from_raw_parts((*list).elements, (*list).length as usize)
            .iter()
            .map(|c| c.ptr_value.cast())
            .collect()
    }
}

/// # Safety
/// `estate` must be a started executor's state.
#[cfg(feature = "pg13")]
unsafe fn result_relations(estate: *mut pg_sys::EState) -> Vec<*mut pg_sys::ResultRelInfo> {
    // SAFETY: the caller's contract; PostgreSQL 13 keeps the result relations in an array.
    unsafe {
        let first = (*estate).es_result_relations;
        (0..(*estate).es_num_result_relations.max(0) as usize).map(|i| first.add(i)).collect()
    }
}

/// Forgets the skipped triggers of an executor whose query memory is going.
unsafe extern "C-unwind" fn forget_estate(arg: *mut std::ffi::c_void) {
    if let Ok(mut skipped) = SKIPPED.get().try_borrow_mut() {
        skipped.retain(|s| s.estate != arg as usize);
    }
}
