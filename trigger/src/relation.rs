//! What capture knows about one table, cached per backend: its examination (see
//! [`crate::check`]), its qualified name for messages, and its shape.
//!
//! An entry lives until PostgreSQL's relcache invalidation says the table changed: any DDL on
//! it, its triggers or its indexes sends one. A renamed schema does not invalidate its tables'
//! relcache entries, so any change to a schema drops every entry; nor does a change of a type,
//! whose name shapes hold, so a change to a type drops the entries of the tables that use it.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

use pgrx::pg_sys::{self, Oid};
use pgrx::prelude::*;

use crate::check::{self, Context, Examination};
use crate::local::BackendLocal;
use crate::objects::{self, Objects};
use crate::shape::{self, Shape};

/// One table, as of its current relcache entry.
pub struct Table {
    pub exam: Examination,
    /// `schema.table`, as messages name it.
    pub name: String,
    shape: RefCell<Option<Rc<Shape>>>,
    valid: Cell<bool>,
}

impl Table {
    /// Refuses the write being captured unless the table's capture is complete.
    pub fn require_complete(&self) {
        if let Some(problem) = self.exam.problems.first() {
            problem.report(&self.name, PgLogLevel::ERROR);
        }
    }

    /// The table's shape, stored in dbmirror_Shape.
    ///
    /// # Safety
    /// `rel` must be the open relation this entry describes.
    pub unsafe fn shape(&self, rel: pg_sys::Relation, objects: &Objects) -> Rc<Shape> {
        let cached = self.shape.borrow().clone();
        let shape = match cached {
            Some(shape) => shape,
            None => {
                // Built with no borrow held: building reads the catalogs, which can deliver
                // invalidations.
                let shape = Rc::new(unsafe { shape::build(rel) });
                *self.shape.borrow_mut() = Some(shape.clone());
                shape
            }
        };
        shape::store(&shape, objects);
        shape
    }
}

static TABLES: BackendLocal<RefCell<BTreeMap<u32, Rc<Table>>>> = BackendLocal::new(RefCell::new(BTreeMap::new()));
/// Set by an invalidation that arrived while the cache was being changed.
static STALE_ALL: BackendLocal<Cell<bool>> = BackendLocal::new(Cell::new(false));

/// The entry of `rel`, examined now if it is not cached.
///
/// # Safety
/// `rel` must be an open relation.
pub unsafe fn of(rel: pg_sys::Relation, objects: &Objects) -> Rc<Table> {
    let relid = unsafe { (*rel).rd_id };
    if STALE_ALL.get().replace(false) {
        TABLES.get().borrow_mut().clear();
    }
    let cached = TABLES.get().borrow().get(&relid.to_u32()).cloned();
    match cached {
        Some(table) if table.valid.get() => table,
        _ => {
            // Examined with no borrow held: reading the catalogs can deliver invalidations.
            let table = Rc::new(Table {
                exam: unsafe { check::examine(rel, objects) },
                name: unsafe { check::qualified_name(rel) },
                shape: RefCell::new(None),
                valid: Cell::new(true),
            });
            TABLES.get().borrow_mut().insert(relid.to_u32(), table.clone());
            table
        }
    }
}

/// Examines `relid` afresh (for the SQL functions that report and repair), with the problems
/// treated as in `context` left to the caller.
pub fn examine_now(relid: Oid, objects: &Objects) -> (Examination, String) {
    // SAFETY: the relation is opened and closed here; the caller is inside a transaction.
    unsafe {
        let rel = pg_sys::relation_open(relid, pg_sys::AccessShareLock as _);
        let result = (check::examine(rel, objects), check::qualified_name(rel));
        pg_sys::relation_close(rel, pg_sys::AccessShareLock as _);
        result
    }
}

/// Raises the first problem that `context` refuses, and warns about those it only warns about.
pub fn enforce(exam: &Examination, name: &str, context: Context) {
    for problem in &exam.problems {
        match problem.treatment(context) {
            check::Treatment::Refuse => problem.report(name, PgLogLevel::ERROR),
            check::Treatment::Warn => problem.report(name, PgLogLevel::WARNING),
            check::Treatment::Repair => {}
        }
    }
}

pub fn register_callbacks() {
    // SAFETY: called once from _PG_init; the callbacks live as long as the backend.
    unsafe {
        pg_sys::CacheRegisterRelcacheCallback(Some(relcache_callback), pg_sys::Datum::from(0));
        pg_sys::CacheRegisterSyscacheCallback(
            pg_sys::SysCacheIdentifier::NAMESPACEOID as _,
            Some(namespace_callback),
            pg_sys::Datum::from(0),
        );
        // Shapes name their columns' types (see crate::shape::Column::definition): a renamed
        // or moved type changes them, though it does not invalidate the tables that use it.
        pg_sys::CacheRegisterSyscacheCallback(
            pg_sys::SysCacheIdentifier::TYPEOID as _,
            Some(type_callback),
            pg_sys::Datum::from(0),
        );
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn relcache_callback(_arg: pg_sys::Datum, relid: Oid) {
    invalidate(if relid == pg_sys::InvalidOid { None } else { Some(relid) });
    objects::forget(relid);
}

#[pg_guard]
unsafe extern "C-unwind" fn namespace_callback(_arg: pg_sys::Datum, _cacheid: i32, _hash: u32) {
    invalidate(None);
}

#[pg_guard]
unsafe extern "C-unwind" fn type_callback(_arg: pg_sys::Datum, cacheid: i32, hash: u32) {
    if hash == 0 {
        return invalidate(None);
    }
    let Ok(map) = TABLES.get().try_borrow() else {
        STALE_ALL.get().set(true);
        return;
    };
    for table in map.values() {
        let uses = table.shape.try_borrow().map_or(true, |shape| {
            shape.as_ref().is_some_and(|shape| {
                shape.columns.iter().any(|c| {
                    // SAFETY: hashes an OID key of the type cache, as the invalidation did.
                    let h = unsafe {
                        pg_sys::GetSysCacheHashValue(
                            cacheid,
                            pg_sys::Datum::from(c.table_type),
                            0.into(),
                            0.into(),
                            0.into(),
                        )
                    };
                    h == hash
                })
            })
        });
        if uses {
            table.valid.set(false);
        }
    }
}

/// Marks one cached entry (or all of them) as stale. Never changes the map itself, because an
/// invalidation can arrive while a lookup is building an entry.
fn invalidate(relid: Option<Oid>) {
    match TABLES.get().try_borrow() {
        Ok(map) => match relid {
            Some(relid) => {
                if let Some(table) = map.get(&relid.to_u32()) {
                    table.valid.set(false);
                }
            }
            None => map.values().for_each(|table| table.valid.set(false)),
        },
        Err(_) => STALE_ALL.get().set(true),
    }
}
