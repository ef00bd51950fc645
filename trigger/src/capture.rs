//! `recordchange()`: the capture trigger.
//!
//! Fired AFTER each row change (INSERT, UPDATE, DELETE) and after each TRUNCATE statement of a
//! mirrored table, it records one change per call:
//!
//! * insert: the new row;
//! * update: the columns that changed, plus the primary key, plus the old key if the key
//!   changed; an update that changes nothing is not recorded;
//! * delete: the old key;
//! * truncate: nothing but the table.
//!
//! Ordering: a change is ordered by the command id that made it, then by capture order.
//! AFTER triggers fire at the end of their statement, so when a trigger of one mirrored table
//! changes another, the inner change is captured before the outer one; but the inner change
//! ran in a later command, so (command id, capture order) is the order in which the changes
//! happened. The command id is read from the row itself (its cmin, or cmax for a delete).

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::pg_sys::{self, Datum};
use pgrx::prelude::*;

use crate::image;
use crate::pending::{self, Change};
use crate::shape::{self, Shape};

pub const INSERT: u8 = b'i';
pub const UPDATE: u8 = b'u';
pub const DELETE: u8 = b'd';
pub const TRUNCATE: u8 = b't';

#[pg_trigger]
fn recordchange<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, std::convert::Infallible> {
    // SAFETY: PostgreSQL hands us valid trigger data for the duration of the call.
    unsafe { capture(trigger.trigger_data()) };
    // The return value of an AFTER trigger is ignored.
    Ok(None)
}

fn misuse(message: &str) -> ! {
    ErrorReport::new(PgSqlErrorCode::ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED, message.to_string(), "recordchange")
        .set_hint("Create the triggers with SELECT dbmirror_mirror_table('table').")
        .report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}

unsafe fn capture(td: &pg_sys::TriggerData) {
    let event = td.tg_event;
    if event & pg_sys::TRIGGER_EVENT_TIMINGMASK != pg_sys::TRIGGER_EVENT_AFTER {
        misuse("recordchange() must be fired AFTER the change");
    }
    let row_level = event & pg_sys::TRIGGER_EVENT_ROW != 0;
    let op = match (event & pg_sys::TRIGGER_EVENT_OPMASK, row_level) {
        (pg_sys::TRIGGER_EVENT_INSERT, true) => INSERT,
        (pg_sys::TRIGGER_EVENT_UPDATE, true) => UPDATE,
        (pg_sys::TRIGGER_EVENT_DELETE, true) => DELETE,
        (pg_sys::TRIGGER_EVENT_TRUNCATE, false) => TRUNCATE,
        _ => misuse(
            "recordchange() must be fired FOR EACH ROW on INSERT, UPDATE or DELETE, or FOR EACH STATEMENT on TRUNCATE",
        ),
    };
    // SAFETY (rest of the function): the trigger manager keeps the relation open and locked
    // and the tuples valid for the duration of the call.
    unsafe {
        let rel = td.tg_relation;
        let tables = pending::tables((*td.tg_trigger).tgfoid);
        let shape = shape::of_relation(rel, &tables);
        let relid = (*rel).rd_id;
        let change = |cid, key, data, unchanged| Change { relid, cid, shape: shape.id, op, key, data, unchanged };
        let change = match op {
            INSERT => {
                let new = td.tg_trigtuple;
                let (mut values, mut nulls) = columns(&shape, rel, new);
                let data = image::form(&shape.desc, &mut values, &mut nulls);
                change(pg_sys::HeapTupleHeaderGetCmin((*new).t_data), None, Some(data), None)
            }
            UPDATE => {
                let (old, new) = (td.tg_trigtuple, td.tg_newtuple);
                let Some((key, data, unchanged)) = update_images(&shape, rel, old, new) else {
                    return;
                };
                change(pg_sys::HeapTupleHeaderGetCmin((*new).t_data), key, Some(data), unchanged)
            }
            DELETE => {
                let old = td.tg_trigtuple;
                let key = key_image(&shape, rel, old);
                change(pg_sys::HeapTupleHeaderGetCmax((*old).t_data), Some(key), None, None)
            }
            _ => change(pg_sys::GetCurrentCommandId(false), None, None, None),
        };
        pending::record(&tables, change);
    }
}

/// The captured columns of a table row, in shape order.
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

/// The key image of a row.
unsafe fn key_image(shape: &Shape, rel: pg_sys::Relation, tuple: pg_sys::HeapTuple) -> Datum {
    // SAFETY: as in columns(); key positions index the captured columns.
    unsafe {
        let (values, nulls) = columns(shape, rel, tuple);
        let (mut key_values, mut key_nulls): (Vec<_>, Vec<_>) =
            shape.key.iter().map(|&k| (values[k], nulls[k])).unzip();
        image::form(&shape.key_desc, &mut key_values, &mut key_nulls)
    }
}

/// The images of an update: the old key if the key changed, the new row with only changed and
/// key columns, and the bitmap of unchanged columns. None if nothing changed.
unsafe fn update_images(
    shape: &Shape,
    rel: pg_sys::Relation,
    old: pg_sys::HeapTuple,
    new: pg_sys::HeapTuple,
) -> Option<(Option<Datum>, Datum, Option<Datum>)> {
    // SAFETY: both tuples are rows of rel; the attributes describe their values.
    unsafe {
        let (old_values, old_nulls) = columns(shape, rel, old);
        let (mut values, mut nulls) = columns(shape, rel, new);
        let attrs = shape.desc.attributes();
        let changed: Vec<bool> = (0..values.len())
            .map(|i| match (old_nulls[i], nulls[i]) {
                (true, true) => false,
                (false, false) => !image::same_value(old_values[i], values[i], &attrs[i]),
                _ => true,
            })
            .collect();
        if !changed.contains(&true) {
            return None;
        }
        let key_changed = shape.key.iter().any(|&k| changed[k]);
        let key = key_changed.then(|| {
            let (mut kv, mut kn): (Vec<_>, Vec<_>) = shape.key.iter().map(|&k| (old_values[k], old_nulls[k])).unzip();
            image::form(&shape.key_desc, &mut kv, &mut kn)
        });
        let mut bitmap = vec![0u8; changed.len().div_ceil(8)];
        for (i, &c) in changed.iter().enumerate() {
            if !c {
                bitmap[i / 8] |= 1 << (i % 8);
                if !shape.key.contains(&i) {
                    nulls[i] = true;
                }
            }
        }
        let unchanged = bitmap.iter().any(|&b| b != 0).then(|| bytea(&bitmap));
        let data = image::form(&shape.desc, &mut values, &mut nulls);
        Some((key, data, unchanged))
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
