//! Row images: how captured values are kept between capture and export.
//!
//! An image is a heap tuple of a shape's descriptor (its captured columns, or its key
//! columns), stored in a `bytea` column. A heap tuple built by `heap_form_tuple` starts with a
//! varlena length word, so the tuple header itself is a valid `bytea` datum and is stored
//! without a copy. Values that were TOAST pointers are fetched first: the TOAST rows they point
//! to may be gone by the time the change is exported.
//!
//! Images are read back only by `dbmirror_values()`, which checks the header against the
//! shape before it trusts the layout.

use std::ffi::CString;

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::prelude::*;
use pgrx::varlena;
use pgrx::PgMemoryContexts;

use crate::settings;
use crate::shape::{Kind, Shape};

/// A tuple descriptor allocated in the cache memory context, freed when dropped.
pub struct Desc(pg_sys::TupleDesc);

impl Desc {
    /// A descriptor with one attribute per `(name, type, typmod)`.
    ///
    /// # Safety
    /// Must run inside a transaction (it reads pg_type).
    pub unsafe fn new(columns: &[(&str, Oid, i32)]) -> Desc {
        let mut cache = PgMemoryContexts::CacheMemoryContext;
        // SAFETY: inside a transaction (caller's contract); the names outlive the calls.
        unsafe {
            cache.switch_to(|_| {
                let desc = pg_sys::CreateTemplateTupleDesc(columns.len() as i32);
                for (i, (name, typid, typmod)) in columns.iter().enumerate() {
                    let name = CString::new(*name).expect("PostgreSQL names contain no NUL byte");
                    pg_sys::TupleDescInitEntry(desc, (i + 1) as pg_sys::AttrNumber, name.as_ptr(), *typid, *typmod, 0);
                }
                Desc(desc)
            })
        }
    }

    pub fn as_ptr(&self) -> pg_sys::TupleDesc {
        self.0
    }

    pub fn natts(&self) -> usize {
        // SAFETY: self.0 is a valid descriptor for as long as self lives.
        unsafe { (*self.0).natts as usize }
    }

    pub fn attributes(&self) -> &[pg_sys::FormData_pg_attribute] {
        // SAFETY: self.0 is a valid descriptor for as long as self lives.
        unsafe { attributes(self.0) }
    }
}

impl Drop for Desc {
    fn drop(&mut self) {
        // SAFETY: created by CreateTemplateTupleDesc, not reference-counted, dropped once.
        unsafe { pg_sys::FreeTupleDesc(self.0) }
    }
}

/// The attributes of a tuple descriptor.
///
/// # Safety
/// `desc` must be valid for `'a`.
pub unsafe fn attributes<'a>(desc: pg_sys::TupleDesc) -> &'a [pg_sys::FormData_pg_attribute] {
    unsafe { (*desc).attrs.as_slice((*desc).natts as usize) }
}

/// Forms an image of `desc` from one value per attribute, and returns it as a `bytea` datum
/// allocated in the current memory context.
///
/// # Safety
/// `values` must hold valid datums of the attribute types of `desc` where `nulls` is false.
pub unsafe fn form(desc: &Desc, values: &mut [Datum], nulls: &mut [bool]) -> Datum {
    debug_assert_eq!(values.len(), desc.natts());
    for ((value, null), attr) in values.iter_mut().zip(nulls.iter()).zip(desc.attributes()) {
        if !*null && attr.attlen == -1 {
            let ptr = value.cast_mut_ptr::<pg_sys::varlena>();
            // SAFETY: a non-null varlena attribute's datum points to a varlena.
            if unsafe { varlena::varatt_is_1b_e(ptr) } {
                *value = Datum::from(unsafe { pg_sys::detoast_external_attr(ptr) });
            }
        }
    }
    // SAFETY: arrays have desc.natts() elements; heap_form_tuple copies every value.
    unsafe {
        let tuple = pg_sys::heap_form_tuple(desc.as_ptr(), values.as_mut_ptr(), nulls.as_mut_ptr());
        Datum::from((*tuple).t_data)
    }
}

/// Turns the values of columns captured as text (see [`crate::shape`]) into their text, for the
/// columns `wanted` selects; the other values are left as they are. Text that depends on
/// settings is made under the canonical settings, switched to for the call if the session does
/// not have them.
///
/// # Safety
/// `values` must hold the table's values in shape order (valid where `nulls` is false).
pub unsafe fn capture(shape: &Shape, values: &mut [Datum], nulls: &[bool], wanted: impl Fn(usize) -> bool) {
    if !shape.has_text() {
        return;
    }
    let todo: Vec<usize> = (0..values.len())
        .filter(|&i| !nulls[i] && wanted(i) && matches!(shape.columns[i].kind, Kind::Text { .. }))
        .collect();
    let sensitive = todo.iter().any(|&i| matches!(shape.columns[i].kind, Kind::Text { sensitive: true, .. }));
    let mut convert = || {
        for &i in &todo {
            if let Kind::Text { output, .. } = &shape.columns[i].kind {
                // SAFETY: the output function of the column's own type, on one of its values;
                // the text is palloc'd in the current memory context.
                values[i] = unsafe {
                    let text = pg_sys::OutputFunctionCall(output.get(), values[i]);
                    Datum::from(pg_sys::cstring_to_text(text))
                };
            }
        }
    };
    if sensitive && !settings::is_canonical() {
        settings::with_canonical(convert);
    } else {
        convert();
    }
}

/// Whether two non-null values of one attribute have the same binary representation. Equal
/// bytes always render to equal text; the converse need not hold, which only means a value is
/// sent that did not need to be.
///
/// # Safety
/// Both datums must be valid values of `attr`'s type.
pub unsafe fn same_value(a: Datum, b: Datum, attr: &pg_sys::FormData_pg_attribute) -> bool {
    if attr.attbyval {
        return a == b;
    }
    // SAFETY: by-reference datums point to values of the attribute's length kind.
    unsafe {
        match attr.attlen {
            len if len > 0 => {
                let (a, b) = (a.cast_mut_ptr::<u8>(), b.cast_mut_ptr::<u8>());
                std::slice::from_raw_parts(a, len as usize) == std::slice::from_raw_parts(b, len as usize)
            }
            -1 => {
                let (a, b) = (a.cast_mut_ptr::<pg_sys::varlena>(), b.cast_mut_ptr::<pg_sys::varlena>());
                let (la, lb) = (varlena::varsize_any(a), varlena::varsize_any(b));
                la == lb
                    && std::slice::from_raw_parts(a as *const u8, la) == std::slice::from_raw_parts(b as *const u8, lb)
            }
            _ => std::ffi::CStr::from_ptr(a.cast_mut_ptr()) == std::ffi::CStr::from_ptr(b.cast_mut_ptr()),
        }
    }
}

/// Reads an image back: one value per attribute of `desc`. `content` is the `bytea`'s content,
/// that is the tuple header without its varlena length word.
///
/// # Safety
/// Must run inside a transaction; the returned datums point into memory of the current
/// memory context.
pub unsafe fn deform(desc: &Desc, content: &[u8], what: &str) -> (Vec<Datum>, Vec<bool>) {
    const VARHDRSZ: usize = 4;
    let header = std::mem::offset_of!(pg_sys::HeapTupleHeaderData, t_bits) - VARHDRSZ;
    let corrupt = |why: &str| -> ! {
        ErrorReport::new(PgSqlErrorCode::ERRCODE_DATA_CORRUPTED, format!("corrupt {what}: {why}"), "dbmirror_values")
            .report(PgLogLevel::ERROR);
        unreachable!("ERROR does not return")
    };
    if content.len() < header {
        corrupt("shorter than a tuple header");
    }
    let len = content.len() + VARHDRSZ;
    // SAFETY: palloc returns MAXALIGNed memory of the requested size, which we fill entirely
    // before reading it as a tuple header.
    unsafe {
        let raw = pg_sys::palloc(len) as *mut u8;
        std::ptr::copy_nonoverlapping(content.as_ptr(), raw.add(VARHDRSZ), content.len());
        varlena::set_varsize_4b(raw as *mut pg_sys::varlena, len as i32);
        let data = raw as pg_sys::HeapTupleHeader;
        let natts = ((*data).t_infomask2 & pg_sys::HEAP_NATTS_MASK as u16) as usize;
        if natts != desc.natts() {
            corrupt(&format!("{natts} attributes where the shape has {}", desc.natts()));
        }
        if (*data).t_hoff as usize > len {
            corrupt("header longer than the image");
        }
        let mut tuple = pg_sys::HeapTupleData {
            t_len: len as u32,
            t_self: pg_sys::ItemPointerData::default(),
            t_tableOid: pg_sys::InvalidOid,
            t_data: data,
        };
        let mut values = vec![Datum::from(0); natts];
        let mut nulls = vec![true; natts];
        pg_sys::heap_deform_tuple(&mut tuple, desc.as_ptr(), values.as_mut_ptr(), nulls.as_mut_ptr());
        (values, nulls)
    }
}
