//! `recordchange()`: the capture trigger.
//!
//! Fired AFTER each row change (INSERT, UPDATE, DELETE) of a mirrored table, it records one
//! change per call:
//!
//! * insert: the new row;
//! * update: the columns that changed, plus the primary key, plus the old key if the key
//!   changed, and which columns did not change (the whole new row when a GENERATED ALWAYS
//!   identity column changed, which the slave can only set by inserting); an update that
//!   changes nothing is not recorded;
//! * delete: the old key.
//!
//! With the trigger argument `check_conflicts`, an update also records the old values of the
//! columns it changed and a delete the whole old row, which the slave checks before it applies
//! the change. TRUNCATE is captured by `dbmirror_before()` (see [`crate::order`], which also
//! says how changes are ordered).
//!
//! Before anything, the table's capture must be complete (see [`crate::check`]): a write that
//! dbmirror could not capture faithfully is refused here, not discovered later on the slave.
//! Of several triggers calling `recordchange()` on one table, only the first that fires records.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::pg_sys::{self, Datum};
use pgrx::prelude::*;

use sha2::{Digest, Sha256};

use crate::check::{self, CHECK_CONFLICTS_ARGUMENT};
use crate::image;
use crate::objects;
use crate::order;
use crate::pending::{self, Change};
use crate::relation;
use crate::shape::Shape;

pub const INSERT: u8 = b'i';
pub const UPDATE: u8 = b'u';
pub const DELETE: u8 = b'd';
pub const TRUNCATE: u8 = b't';
/// A schema change (see [`crate::ddl`]).
pub const DDL: u8 = b'x';

pub fn misuse(message: &str) -> ! {
    ErrorReport::new(PgSqlErrorCode::ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED, message.to_string(), "dbmirror")
        .set_hint("Create the triggers with SELECT dbmirror_mirror_table('table').")
        .report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}

/// The trigger data of a call, refusing a call that is not a trigger's.
///
/// # Safety
/// `fcinfo` must be the function call info PostgreSQL passed.
pub unsafe fn trigger_data<'a>(fcinfo: pg_sys::FunctionCallInfo, function: &str) -> &'a pg_sys::TriggerData {
    // SAFETY: a non-null context is a node; a TriggerData node lives for the call.
    unsafe {
        let context = (*fcinfo).context;
        if context.is_null() || (*context).type_ != pg_sys::NodeTag::T_TriggerData {
            misuse(&format!("{function}() must be called as a trigger"));
        }
        &*(context as *const pg_sys::TriggerData)
    }
}

pgrx::extension_sql!(
    r#"
CREATE FUNCTION recordchange() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'recordchange';
COMMENT ON FUNCTION recordchange() IS
    'dbmirror''s capture trigger: records each row change of a mirrored table in the pending tables';
"#,
    name = "recordchange",
    requires = ["master_setup"],
);

crate::pg_finfo_v1!(pg_finfo_recordchange);

/// # Safety
/// Called by PostgreSQL's function manager, as a trigger.
#[unsafe(no_mangle)]
#[pg_guard]
pub unsafe extern "C-unwind" fn recordchange(fcinfo: pg_sys::FunctionCallInfo) -> Datum {
    // SAFETY: PostgreSQL hands triggers valid trigger data for the duration of the call; the
    // trigger manager keeps the relation open and locked and the tuples valid.
    unsafe {
        let td = trigger_data(fcinfo, "recordchange");
        let rel = td.tg_relation;
        let trigger = &*td.tg_trigger;
        let objects = objects::of_function(trigger.tgfoid);
        let table = relation::of(rel, &objects);
        // A misfired trigger is one of the problems: a BEFORE, statement-level or partial one.
        table.require_complete();
        let event = td.tg_event;
        if event & pg_sys::TRIGGER_EVENT_TIMINGMASK != pg_sys::TRIGGER_EVENT_AFTER
            || event & pg_sys::TRIGGER_EVENT_ROW == 0
        {
            misuse("recordchange() must be fired AFTER INSERT OR UPDATE OR DELETE FOR EACH ROW");
        }
        if table.exam.recording_trigger() != Some(trigger.tgoid) {
            return Datum::from(0);
        }
        let shape = table.shape(rel, &objects);
        let check_conflicts = check::arguments(trigger).iter().any(|a| a == CHECK_CONFLICTS_ARGUMENT);
        let relid = (*rel).rd_id;
        let change =
            |op, cid, key, data, unchanged, old| Change { relid, cid, shape: shape.id, op, key, data, unchanged, old };
        let change = match event & pg_sys::TRIGGER_EVENT_OPMASK {
            pg_sys::TRIGGER_EVENT_INSERT => {
                let new = td.tg_trigtuple;
                let statement = pg_sys::HeapTupleHeaderGetCmin((*new).t_data);
                let cid = order::pinned_insert(rel, &shape, new, statement).unwrap_or(statement);
                let (mut values, nulls) = columns(&shape, rel, new);
                image::capture(&shape, &mut values, &nulls, |_| true);
                let mut nulls = nulls;
                change(INSERT, cid, None, Some(image::form(&shape.desc, &mut values, &mut nulls)), None, None)
            }
            pg_sys::TRIGGER_EVENT_UPDATE => {
                let (old, new) = (td.tg_trigtuple, td.tg_newtuple);
                let Some(images) = update_images(&shape, rel, old, new, check_conflicts) else {
                    return Datum::from(0);
                };
                let statement = pg_sys::HeapTupleHeaderGetCmin((*new).t_data);
                let cid = order::pinned_row(relid, old).unwrap_or(statement);
                change(UPDATE, cid, images.old_key, Some(images.data), images.unchanged, images.old)
            }
            pg_sys::TRIGGER_EVENT_DELETE => {
                let old = td.tg_trigtuple;
                let statement = pg_sys::HeapTupleHeaderGetCmax((*old).t_data);
                let cid = order::pinned_row(relid, old).unwrap_or(statement);
                let (mut values, mut nulls) = columns(&shape, rel, old);
                let key = key_image(&shape, &values, &nulls);
                let old_row = check_conflicts.then(|| {
                    image::capture(&shape, &mut values, &nulls, |_| true);
                    image::form(&shape.desc, &mut values, &mut nulls)
                });
                change(DELETE, cid, Some(key), None, None, old_row)
            }
            _ => misuse("recordchange() must be fired AFTER INSERT OR UPDATE OR DELETE FOR EACH ROW"),
        };
        pending::record(&objects, change);
        Datum::from(0)
    }
}

/// The captured columns of a table row, in shape order, as the table stores them.
unsafe fn columns(shape: &Shape, rel: pg_sys::Relation, tuple: pg_sys::HeapTuple) -> (Vec<Datum>, Vec<bool>) {
    // SAFETY: tuple is a row of rel, whose descriptor has natts attributes.
    unsafe {
        let desc = (*rel).rd_att;
        let natts = (*desc).natts as usize;
        let mut values = vec![Datum::from(0); natts];
        let mut nulls = vec![true; natts];
        pg_sys::heap_deform_tuple(tuple, desc, values.as_mut_ptr(), nulls.as_mut_ptr());
        shape
            .columns
            .iter()
            .map(|c| {
                let i = (c.attnum - 1) as usize;
                (values[i], nulls[i])
            })
            .unzip()
    }
}

/// The key image of a row, from its values in shape order (as the table stores them).
unsafe fn key_image(shape: &Shape, values: &[Datum], nulls: &[bool]) -> Datum {
    // SAFETY: key positions index the captured columns.
    unsafe {
        let mut values = values.to_vec();
        image::capture(shape, &mut values, nulls, |i| shape.key.contains(&i));
        let (mut key_values, mut key_nulls): (Vec<_>, Vec<_>) =
            shape.key.iter().map(|&k| (values[k], nulls[k])).unzip();
        image::form(&shape.key_desc, &mut key_values, &mut key_nulls)
    }
}

/// A fingerprint of a row's captured values as the table stores them (detoasted): what
/// identifies an insert between `dbmirror_before()` and the capture trigger. Two inserts with
/// the same fingerprint write the same row, so which of their pins each takes does not change
/// what the slave replays.
///
/// # Safety
/// `rel` must be open and `tuple` one of its rows (or a row about to be inserted into it).
pub unsafe fn fingerprint(rel: pg_sys::Relation, shape: &Shape, tuple: pg_sys::HeapTuple) -> [u8; 16] {
    let mut hash = Sha256::new();
    // SAFETY: the captured attributes exist in rel's descriptor; varlena values are detoasted
    // into palloc'd copies when needed.
    unsafe {
        let desc = (*rel).rd_att;
        let attrs = image::attributes(desc);
        for column in &shape.columns {
            let attr = &attrs[(column.attnum - 1) as usize];
            let mut null = false;
            let value = pg_sys::heap_getattr(tuple, column.attnum as i32, desc, &mut null);
            if null {
                hash.update([0]);
                continue;
            }
            let content: &[u8] = if attr.attbyval {
                let raw = value.value().to_ne_bytes();
                hash.update([1]);
                hash.update(&raw[..attr.attlen as usize]);
                continue;
            } else if attr.attlen > 0 {
                std::slice::from_raw_parts(value.cast_mut_ptr::<u8>(), attr.attlen as usize)
            } else if attr.attlen == -1 {
                let plain = pg_sys::pg_detoast_datum_packed(value.cast_mut_ptr());
                pgrx::varlena::varlena_to_byte_slice(plain)
            } else {
                std::ffi::CStr::from_ptr(value.cast_mut_ptr()).to_bytes()
            };
            hash.update([1]);
            hash.update((content.len() as u64).to_le_bytes());
            hash.update(content);
        }
    }
    hash.finalize()[..16].try_into().expect("a sha256 digest has 32 bytes")
}

/// What an update records.
struct UpdateImages {
    /// The old key, if the key changed.
    old_key: Option<Datum>,
    /// The new row: changed and key columns (the whole row when an always-identity column changed).
    data: Datum,
    /// Bitmap of the columns that did not change (left out of `data` unless the whole row is kept).
    unchanged: Option<Datum>,
    /// Old values of the changed columns (`check_conflicts`).
    old: Option<Datum>,
}

/// The images of an update; None if nothing changed.
unsafe fn update_images(
    shape: &Shape,
    rel: pg_sys::Relation,
    old: pg_sys::HeapTuple,
    new: pg_sys::HeapTuple,
    check_conflicts: bool,
) -> Option<UpdateImages> {
    // SAFETY: both tuples are rows of rel; the table's attributes describe their values.
    unsafe {
        let (mut old_values, old_nulls) = columns(shape, rel, old);
        let (mut values, mut nulls) = columns(shape, rel, new);
        let attrs = image::attributes((*rel).rd_att);
        let changed: Vec<bool> = (0..values.len())
            .map(|i| match (old_nulls[i], nulls[i]) {
                (true, true) => false,
                (false, false) => {
                    let attr = &attrs[(shape.columns[i].attnum - 1) as usize];
                    !image::same_value(old_values[i], values[i], attr)
                }
                _ => true,
            })
            .collect();
        if !changed.contains(&true) {
            return None;
        }
        let key_changed = shape.key.iter().any(|&k| changed[k]);
        let old_key = key_changed.then(|| key_image(shape, &old_values, &old_nulls));
        let old = check_conflicts.then(|| {
            let mut old_nulls: Vec<bool> = old_nulls.iter().zip(&changed).map(|(&n, &c)| n || !c).collect();
            image::capture(shape, &mut old_values, &old_nulls, |i| changed[i]);
            image::form(&shape.desc, &mut old_values, &mut old_nulls)
        });
        // An always-identity column can only be set by an insert on the slave, which needs
        // the whole row: the unchanged columns are then kept, and still marked.
        let whole = shape.identity_always.iter().any(|&i| changed[i]);
        let mut bitmap = vec![0u8; changed.len().div_ceil(8)];
        for (i, &c) in changed.iter().enumerate() {
            if !c {
                bitmap[i / 8] |= 1 << (i % 8);
                if !whole && !shape.key.contains(&i) {
                    nulls[i] = true;
                }
            }
        }
        let unchanged = bitmap.iter().any(|&b| b != 0).then(|| bytea(&bitmap));
        image::capture(shape, &mut values, &nulls, |_| true);
        let data = image::form(&shape.desc, &mut values, &mut nulls);
        Some(UpdateImages { old_key, data, unchanged, old })
    }
}

/// A `bytea` datum holding `bytes`, in the current memory context.
fn bytea(bytes: &[u8]) -> Datum {
    // SAFETY: palloc'd varlena of exactly header + content size, filled before use.
    unsafe {
        let len = bytes.len() + pg_sys::VARHDRSZ;
        let ptr = pg_sys::palloc(len) as *mut u8;
        pgrx::varlena::set_varsize_4b(ptr as *mut pg_sys::varlena, len as i32);
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr.add(pg_sys::VARHDRSZ), bytes.len());
        Datum::from(ptr)
    }
}
