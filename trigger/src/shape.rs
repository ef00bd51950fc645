//! Shapes: what capture needs to know about a mirrored table, cached per backend.
//!
//! A shape is the table's schema-qualified name, its captured columns (name, type, typmod) and
//! its primary key. Its id is a hash of that content, so a shape never changes meaning: a
//! change captured before an `ALTER TABLE` keeps the shape it was captured with and still
//! decodes after the table has changed. Shapes are stored in `dbmirror_Shape` the first time a
//! backend uses them.
//!
//! The per-relation cache is invalidated by PostgreSQL's relcache invalidation (any DDL on the
//! table, including a new or dropped primary key) and by any change to a schema (a renamed
//! schema does not invalidate its tables' relcache entries). Dropped and generated columns are
//! not captured: a generated column is computed again by the slave.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::ffi::CStr;
use std::rc::Rc;

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::pg_sys::{self, Oid};
use pgrx::prelude::*;
use pgrx::spi::Spi;
use sha2::{Digest, Sha256};

use crate::image;
use crate::pending::{self, BackendLocal, Tables};

/// One captured column of a shape.
pub struct Column {
    pub name: String,
    /// Attribute number in the table.
    pub attnum: i16,
    pub typid: Oid,
    pub typmod: i32,
}

/// A mirrored table as capture sees it.
pub struct Shape {
    pub id: i64,
    pub relid: Oid,
    pub nspname: String,
    pub relname: String,
    pub columns: Vec<Column>,
    /// Primary key columns, as positions in `columns`.
    pub key: Vec<usize>,
    /// Descriptor of the captured columns: row images are heap tuples of this descriptor.
    pub desc: image::Desc,
    /// Descriptor of the key columns: key images are heap tuples of this descriptor.
    pub key_desc: image::Desc,
    valid: Cell<bool>,
    stored: Cell<bool>,
}

static SHAPES: BackendLocal<RefCell<BTreeMap<u32, Rc<Shape>>>> = BackendLocal::new(RefCell::new(BTreeMap::new()));
/// Set by an invalidation that arrived while the cache was being changed.
static STALE_ALL: BackendLocal<Cell<bool>> = BackendLocal::new(Cell::new(false));
/// Shapes inserted into dbmirror_Shape by the current transaction: if it aborts, they are gone.
static STORED_THIS_XACT: BackendLocal<RefCell<Vec<Rc<Shape>>>> = BackendLocal::new(RefCell::new(Vec::new()));

pub fn register_callbacks() {
    // SAFETY: called once from _PG_init; the callbacks live as long as the backend.
    unsafe {
        pg_sys::CacheRegisterRelcacheCallback(Some(relcache_callback), pg_sys::Datum::from(0));
        pg_sys::CacheRegisterSyscacheCallback(
            pg_sys::SysCacheIdentifier::NAMESPACEOID as _,
            Some(namespace_callback),
            pg_sys::Datum::from(0),
        );
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn relcache_callback(_arg: pg_sys::Datum, relid: Oid) {
    invalidate(if relid == pg_sys::InvalidOid { None } else { Some(relid) });
    pending::forget_tables(relid);
}

#[pg_guard]
unsafe extern "C-unwind" fn namespace_callback(_arg: pg_sys::Datum, _cacheid: i32, _hash: u32) {
    invalidate(None);
}

/// Marks one cached shape (or all of them) as stale. Never changes the map itself, because an
/// invalidation can arrive while a lookup is building a shape.
fn invalidate(relid: Option<Oid>) {
    match SHAPES.get().try_borrow() {
        Ok(map) => match relid {
            Some(relid) => {
                if let Some(shape) = map.get(&relid.to_u32()) {
                    shape.valid.set(false);
                }
            }
            None => map.values().for_each(|shape| shape.valid.set(false)),
        },
        Err(_) => STALE_ALL.get().set(true),
    }
}

/// Called at the end of every transaction and subtransaction abort: shapes inserted by the
/// aborted work must be inserted again when next used.
pub fn forget_stored(aborted: bool) {
    let stored = std::mem::take(&mut *STORED_THIS_XACT.get().borrow_mut());
    if aborted {
        stored.iter().for_each(|shape| shape.stored.set(false));
    }
}

/// The shape of `rel` as it is now, stored in dbmirror_Shape.
///
/// # Safety
/// `rel` must be an open relation (the trigger's relation).
pub unsafe fn of_relation(rel: pg_sys::Relation, tables: &Tables) -> Rc<Shape> {
    let relid = unsafe { (*rel).rd_id };
    if STALE_ALL.get().replace(false) {
        SHAPES.get().borrow_mut().clear();
    }
    let cached = SHAPES.get().borrow().get(&relid.to_u32()).cloned();
    let shape = match cached {
        Some(shape) if shape.valid.get() => shape,
        _ => {
            // Built with no borrow held: building reads the catalogs, which can deliver
            // invalidations.
            let shape = Rc::new(unsafe { build(rel) });
            SHAPES.get().borrow_mut().insert(relid.to_u32(), shape.clone());
            shape
        }
    };
    if !shape.stored.get() {
        store(&shape, tables);
    }
    shape
}

unsafe fn build(rel: pg_sys::Relation) -> Shape {
    // SAFETY (whole function): rel is open and locked by the trigger's caller, so its
    // descriptor, pg_class row and index list stay valid while we read them.
    let (relid, nspname, relname, tupdesc) = unsafe {
        let form = (*rel).rd_rel;
        let nspname = CStr::from_ptr(pg_sys::get_namespace_name((*form).relnamespace));
        let relname = CStr::from_ptr((*form).relname.data.as_ptr());
        ((*rel).rd_id, nspname.to_string_lossy().into_owned(), relname.to_string_lossy().into_owned(), (*rel).rd_att)
    };
    let qualified = format!("{nspname}.{relname}");
    // SAFETY: as above.
    if unsafe { (*(*rel).rd_rel).relam } != pg_sys::HEAP_TABLE_AM_OID {
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("mirrored table \"{qualified}\" does not use the heap access method"),
            "recordchange",
        )
        .report(PgLogLevel::ERROR);
    }

    let mut columns = Vec::new();
    for attr in unsafe { image::attributes(tupdesc) } {
        if attr.attisdropped || attr.attgenerated != 0 {
            continue;
        }
        columns.push(Column {
            name: unsafe { CStr::from_ptr(attr.attname.data.as_ptr()) }.to_string_lossy().into_owned(),
            attnum: attr.attnum,
            typid: attr.atttypid,
            typmod: attr.atttypmod,
        });
    }

    let pk = unsafe { pg_sys::RelationGetPrimaryKeyIndex(rel) };
    if pk == pg_sys::InvalidOid {
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_INVALID_TABLE_DEFINITION,
            format!("mirrored table \"{qualified}\" has no primary key"),
            "recordchange",
        )
        .set_hint(format!(
            "dbmirror finds rows on the slave by primary key: add one with ALTER TABLE ... ADD PRIMARY KEY, or stop mirroring with SELECT dbmirror_unmirror_table('{}').",
            qualified.replace('\'', "''")
        ))
        .report(PgLogLevel::ERROR);
        unreachable!("ERROR does not return");
    }
    let key_attnums: Vec<i16> = unsafe {
        let index = pg_sys::index_open(pk, pg_sys::AccessShareLock as _);
        let form = (*index).rd_index;
        let nkeys = (*form).indnkeyatts as usize;
        let attnums = (*form).indkey.values.as_slice(nkeys).to_vec();
        pg_sys::index_close(index, pg_sys::AccessShareLock as _);
        attnums
    };
    let key = key_attnums
        .iter()
        .map(|attnum| {
            columns.iter().position(|c| c.attnum == *attnum).unwrap_or_else(|| {
                ErrorReport::new(
                    PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                    format!("primary key of mirrored table \"{qualified}\" uses an expression or a generated column"),
                    "recordchange",
                )
                .report(PgLogLevel::ERROR);
                unreachable!("ERROR does not return")
            })
        })
        .collect::<Vec<_>>();

    let spec = columns.iter().map(|c| (c.name.as_str(), c.typid, c.typmod)).collect::<Vec<_>>();
    let desc = unsafe { image::Desc::new(&spec) };
    let key_spec = key.iter().map(|&i| spec[i]).collect::<Vec<_>>();
    let key_desc = unsafe { image::Desc::new(&key_spec) };

    Shape {
        id: shape_id(&nspname, &relname, &columns, &key),
        relid,
        nspname,
        relname,
        columns,
        key,
        desc,
        key_desc,
        valid: Cell::new(true),
        stored: Cell::new(false),
    }
}

/// A stable hash of everything a shape says: the same table in the same state gets the same id
/// in every backend and every session.
fn shape_id(nspname: &str, relname: &str, columns: &[Column], key: &[usize]) -> i64 {
    let mut hash = Sha256::new();
    for part in [nspname, relname] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    for c in columns {
        hash.update(c.name.as_bytes());
        hash.update([0]);
        hash.update(c.typid.to_u32().to_le_bytes());
        hash.update(c.typmod.to_le_bytes());
    }
    for k in key {
        hash.update((*k as u32).to_le_bytes());
    }
    let digest = hash.finalize();
    i64::from_le_bytes(digest[..8].try_into().expect("a sha256 digest has 32 bytes"))
}

/// Inserts the shape into dbmirror_Shape unless this transaction can see it there already, as
/// the bootstrap superuser: the users whose changes are captured have no privileges on the
/// extension's tables. (No unique index, so that concurrent first writers never wait on each
/// other; see sql/master_setup.sql.)
fn store(shape: &Rc<Shape>, tables: &Tables) {
    let query = format!(
        "INSERT INTO {table} (shape, relid, nspname, relname, columns, types, typmods, key) \
         SELECT $1, $2, $3, $4, $5, $6, $7, $8 WHERE NOT EXISTS (SELECT 1 FROM {table} WHERE shape = $1)",
        table = format_args!("{}.{}", quote_identifier(&tables.schema_name), crate::names::SHAPE)
    );
    let names: Vec<String> = shape.columns.iter().map(|c| c.name.clone()).collect();
    let types: Vec<Oid> = shape.columns.iter().map(|c| c.typid).collect();
    let typmods: Vec<i32> = shape.columns.iter().map(|c| c.typmod).collect();
    let key: Vec<i16> = shape.key.iter().map(|&k| k as i16).collect();
    pending::as_superuser(|| {
        Spi::run_with_args(
            &query,
            &[
                shape.id.into(),
                shape.relid.into(),
                shape.nspname.clone().into(),
                shape.relname.clone().into(),
                names.into(),
                types.into(),
                typmods.into(),
                key.into(),
            ],
        )
        .unwrap_or_else(|e| {
            ErrorReport::new(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                format!("could not store the shape of table \"{}.{}\": {e}", shape.nspname, shape.relname),
                "recordchange",
            )
            .report(PgLogLevel::ERROR)
        });
    });
    shape.stored.set(true);
    STORED_THIS_XACT.get().borrow_mut().push(shape.clone());
}

/// `name` as a SQL identifier, quoted when needed.
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
