//! Shapes: a mirrored table's name, captured columns and primary key, as capture records them.
//!
//! A shape's id is a hash of its content, so a shape never changes meaning: a change captured
//! before an `ALTER TABLE` keeps the shape it was captured with and still decodes after the
//! table has changed. Shapes are stored in `dbmirror_Shape` the first time a backend uses them.
//!
//! Every captured column is decodable without the catalog as it will be at export time. Values
//! of built-in types (and domains over them) are kept in binary: those types cannot be dropped
//! or changed. Values of other types (enums, composites, ranges over user types, extension
//! types, and domains and arrays of them) are captured as their text, because by export time the
//! type may be gone (`DROP TYPE`), changed (`ALTER TYPE ... RENAME VALUE`, a composite's new
//! attribute) or rendered differently: the shape records such a column as `text`, and capture
//! renders it with the type's output function under the canonical settings (see
//! [`crate::image::capture`]). Dropped and generated columns are not captured: the slave
//! computes generated columns itself.

use std::cell::{Cell, RefCell, UnsafeCell};
use std::ffi::CStr;
use std::rc::Rc;

use dbmirror_sql::quote_identifier;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::pg_sys::{self, Oid};
use pgrx::prelude::*;
use pgrx::spi::Spi;
use sha2::{Digest, Sha256};

use crate::image;
use crate::local::{as_superuser, BackendLocal};
use crate::objects::Objects;

/// How a column's values are kept in row images.
pub enum Kind {
    /// The value as the table stores it (detoasted).
    Binary,
    /// The value's text, made by the type's output function. `sensitive` when that text depends
    /// on the canonical settings (dates, floats, bytea... somewhere inside the type).
    Text { output: UnsafeCell<pg_sys::FmgrInfo>, sensitive: bool },
}

/// The shape id of DDL changes, which have no shape; no table's shape gets it.
pub const DDL_SHAPE: i64 = 0;

/// One captured column of a shape.
pub struct Column {
    pub name: String,
    /// `"name" type`, the column as the slave's `dbmirror.check_table()` describes it: the type
    /// as `format_type()` shows it with only `pg_catalog` on the search_path.
    pub definition: String,
    /// Attribute number in the table.
    pub attnum: i16,
    /// The column's type in the table.
    pub table_type: Oid,
    /// The type of its values in row images: `table_type`, or `text` for [`Kind::Text`].
    pub typid: Oid,
    pub typmod: i32,
    pub kind: Kind,
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
    /// Identity columns GENERATED ALWAYS, as positions in `columns`: a slave can set them only
    /// on INSERT (with OVERRIDING SYSTEM VALUE), so an update that changes one travels as a
    /// delete and an insert of the whole row.
    pub identity_always: Vec<usize>,
    /// Descriptor of the captured columns: row images are heap tuples of this descriptor.
    pub desc: image::Desc,
    /// Descriptor of the key columns: key images are heap tuples of this descriptor.
    pub key_desc: image::Desc,
    stored: Cell<bool>,
}

impl Shape {
    /// Whether any column is captured as text.
    pub fn has_text(&self) -> bool {
        self.columns.iter().any(|c| matches!(c.kind, Kind::Text { .. }))
    }
}

/// Shapes inserted into dbmirror_Shape by the current transaction: if it aborts (or is only
/// prepared), they may never become visible.
static STORED_THIS_XACT: BackendLocal<RefCell<Vec<Rc<Shape>>>> = BackendLocal::new(RefCell::new(Vec::new()));

/// Called at the end of every transaction and subtransaction: shapes inserted by work that
/// aborted, or by a transaction that was only prepared (it may still be rolled back with
/// ROLLBACK PREPARED), must be inserted again when next used. A prepared transaction that
/// commits later leaves a second, identical row, which readers tolerate.
pub fn forget_stored(durable: bool) {
    let stored = std::mem::take(&mut *STORED_THIS_XACT.get().borrow_mut());
    if !durable {
        stored.iter().for_each(|shape| shape.stored.set(false));
    }
}

/// Builds the shape of `rel` as it is now. The table's key must be valid (see
/// [`crate::check`]).
///
/// # Safety
/// `rel` must be an open relation.
pub unsafe fn build(rel: pg_sys::Relation) -> Shape {
    // SAFETY (whole function): rel is open and locked by the trigger's caller, so its
    // descriptor, pg_class row and index list stay valid while we read them.
    let (relid, nspname, relname, tupdesc) = unsafe {
        let form = (*rel).rd_rel;
        let nspname = CStr::from_ptr(pg_sys::get_namespace_name((*form).relnamespace));
        let relname = CStr::from_ptr((*form).relname.data.as_ptr());
        ((*rel).rd_id, nspname.to_string_lossy().into_owned(), relname.to_string_lossy().into_owned(), (*rel).rd_att)
    };

    let mut columns = Vec::new();
    let mut identity_always = Vec::new();
    for attr in unsafe { image::attributes(tupdesc) } {
        if attr.attisdropped || attr.attgenerated != 0 {
            continue;
        }
        if attr.attidentity as u8 == pg_sys::ATTRIBUTE_IDENTITY_ALWAYS {
            identity_always.push(columns.len());
        }
        let kind = unsafe { kind_of(attr.atttypid) };
        let (typid, typmod) = match kind {
            Kind::Binary => unsafe { base_type(attr.atttypid, attr.atttypmod) },
            Kind::Text { .. } => (pg_sys::TEXTOID, -1),
        };
        let name = unsafe { CStr::from_ptr(attr.attname.data.as_ptr()) }.to_string_lossy().into_owned();
        columns.push(Column {
            definition: format!("{} {}", quote_identifier(&name), unsafe { type_text(attr.atttypid, attr.atttypmod) }),
            name,
            attnum: attr.attnum,
            table_type: attr.atttypid,
            typid,
            typmod,
            kind,
        });
    }

    // The key was checked by crate::check before the shape is built.
    let pk = unsafe { pg_sys::RelationGetPrimaryKeyIndex(rel) };
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
                    PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                    format!("primary key column {attnum} of table \"{nspname}.{relname}\" is not captured"),
                    "dbmirror",
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
        id: shape_id(&nspname, &relname, &columns, &key, &identity_always),
        relid,
        nspname,
        relname,
        columns,
        key,
        identity_always,
        desc,
        key_desc,
        stored: Cell::new(false),
    }
}

/// A column's type as `format_type(type, typmod)` shows it on a slave whose search_path holds
/// only `pg_catalog`: built-in types by their bare names, all others schema-qualified.
unsafe fn type_text(typid: Oid, typmod: i32) -> String {
    // SAFETY: formats an existing type; the result is palloc'd.
    let text = unsafe {
        CStr::from_ptr(pg_sys::format_type_extended(
            typid,
            typmod,
            (pg_sys::FORMAT_TYPE_TYPEMOD_GIVEN | pg_sys::FORMAT_TYPE_FORCE_QUALIFY) as _,
        ))
    }
    .to_string_lossy()
    .into_owned();
    match text.strip_prefix("pg_catalog.") {
        Some(bare) => bare.to_string(),
        None => text,
    }
}

/// A domain's base type and typmod; any other type as it is.
unsafe fn base_type(typid: Oid, typmod: i32) -> (Oid, i32) {
    let mut typmod = typmod;
    // SAFETY: looks the type up in the syscache.
    let base = unsafe { pg_sys::getBaseTypeAndTypmod(typid, &mut typmod) };
    (base, typmod)
}

/// How values of `typid` are captured: built-in types (below FirstNormalObjectId, which
/// initdb's own objects are) in binary, any other type as text.
unsafe fn kind_of(typid: Oid) -> Kind {
    // SAFETY: syscache lookups of an existing type.
    unsafe {
        let (base, _) = base_type(typid, -1);
        if base.to_u32() < pg_sys::FirstNormalObjectId {
            return Kind::Binary;
        }
        let mut function = pg_sys::InvalidOid;
        let mut varlena = false;
        pg_sys::getTypeOutputInfo(typid, &mut function, &mut varlena);
        let mut output: pg_sys::FmgrInfo = std::mem::zeroed();
        pg_sys::fmgr_info_cxt(function, &mut output, pg_sys::CacheMemoryContext);
        Kind::Text { output: UnsafeCell::new(output), sensitive: sensitive(typid, 0) }
    }
}

/// Built-in base types whose text does not depend on any of the canonical settings.
const INSENSITIVE: &[u32] = &[
    pg_sys::BOOLOID.to_u32(),
    pg_sys::INT2OID.to_u32(),
    pg_sys::INT4OID.to_u32(),
    pg_sys::INT8OID.to_u32(),
    pg_sys::OIDOID.to_u32(),
    pg_sys::NUMERICOID.to_u32(),
    pg_sys::TEXTOID.to_u32(),
    pg_sys::VARCHAROID.to_u32(),
    pg_sys::BPCHAROID.to_u32(),
    pg_sys::NAMEOID.to_u32(),
    pg_sys::CHAROID.to_u32(),
    pg_sys::UUIDOID.to_u32(),
    pg_sys::JSONOID.to_u32(),
    pg_sys::JSONBOID.to_u32(),
    pg_sys::INETOID.to_u32(),
    pg_sys::CIDROID.to_u32(),
    pg_sys::MACADDROID.to_u32(),
    pg_sys::MACADDR8OID.to_u32(),
    pg_sys::BITOID.to_u32(),
    pg_sys::VARBITOID.to_u32(),
    pg_sys::TSVECTOROID.to_u32(),
    pg_sys::TSQUERYOID.to_u32(),
];

/// Whether the text of a value of `typid` can depend on the canonical settings. Unknown base
/// types (from extensions) are taken to depend on them.
unsafe fn sensitive(typid: Oid, depth: u32) -> bool {
    if depth > 32 {
        return true;
    }
    // SAFETY: syscache and typcache lookups of existing types.
    unsafe {
        let (typid, _) = base_type(typid, -1);
        let element = pg_sys::get_element_type(typid);
        if element != pg_sys::InvalidOid {
            return sensitive(element, depth + 1);
        }
        match pg_sys::get_typtype(typid) as u8 {
            pg_sys::TYPTYPE_ENUM => false,
            pg_sys::TYPTYPE_RANGE => sensitive(pg_sys::get_range_subtype(typid), depth + 1),
            pg_sys::TYPTYPE_MULTIRANGE => sensitive(pg_sys::get_multirange_range(typid), depth + 1),
            pg_sys::TYPTYPE_COMPOSITE => {
                let desc = pg_sys::lookup_rowtype_tupdesc(typid, -1);
                let types: Vec<Oid> =
                    image::attributes(desc).iter().filter(|a| !a.attisdropped).map(|a| a.atttypid).collect();
                pg_sys::DecrTupleDescRefCount(desc);
                types.into_iter().any(|t| sensitive(t, depth + 1))
            }
            pg_sys::TYPTYPE_BASE => !INSENSITIVE.contains(&typid.to_u32()),
            _ => true,
        }
    }
}

/// A stable hash of everything a shape says: the same table in the same state gets the same id
/// in every backend and every session.
fn shape_id(nspname: &str, relname: &str, columns: &[Column], key: &[usize], identity: &[usize]) -> i64 {
    let mut hash = Sha256::new();
    for part in [nspname, relname] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    for c in columns {
        hash.update(c.name.as_bytes());
        hash.update([0]);
        // The type's name too: a renamed type makes a new shape, which the slave checks anew.
        hash.update(c.definition.as_bytes());
        hash.update([0]);
        hash.update(c.table_type.to_u32().to_le_bytes());
        hash.update(c.typid.to_u32().to_le_bytes());
        hash.update(c.typmod.to_le_bytes());
    }
    for k in key {
        hash.update((*k as u32).to_le_bytes());
    }
    hash.update([0xff]);
    for i in identity {
        hash.update((*i as u32).to_le_bytes());
    }
    let digest = hash.finalize();
    match i64::from_le_bytes(digest[..8].try_into().expect("a sha256 digest has 32 bytes")) {
        DDL_SHAPE => 1,
        id => id,
    }
}

/// Inserts the shape into dbmirror_Shape unless this backend stored it already (in a
/// transaction that committed), as the bootstrap superuser: the users whose changes are
/// captured have no privileges on the extension's tables. (No unique index, so that
/// concurrent first writers never wait on each other; see sql/master_setup.sql.)
pub fn store(shape: &Rc<Shape>, objects: &Objects) {
    if shape.stored.get() {
        return;
    }
    let query = format!(
        "INSERT INTO {table} (shape, relid, nspname, relname, columns, types, typmods, key, identity_always, definitions) \
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 WHERE NOT EXISTS (SELECT 1 FROM {table} WHERE shape = $1)",
        table = format_args!("{}.{}", quote_identifier(&objects.schema_name), crate::names::SHAPE)
    );
    let names: Vec<String> = shape.columns.iter().map(|c| c.name.clone()).collect();
    let types: Vec<Oid> = shape.columns.iter().map(|c| c.typid).collect();
    let typmods: Vec<i32> = shape.columns.iter().map(|c| c.typmod).collect();
    let key: Vec<i16> = shape.key.iter().map(|&k| k as i16).collect();
    let identity: Vec<i16> = shape.identity_always.iter().map(|&k| k as i16).collect();
    let definitions: Vec<String> = shape.columns.iter().map(|c| c.definition.clone()).collect();
    as_superuser(|| {
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
                identity.into(),
                definitions.into(),
            ],
        )
        .unwrap_or_else(|e| {
            ErrorReport::new(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                format!("could not store the shape of table \"{}.{}\": {e}", shape.nspname, shape.relname),
                "dbmirror",
            )
            .report(PgLogLevel::ERROR)
        });
    });
    shape.stored.set(true);
    STORED_THIS_XACT.get().borrow_mut().push(shape.clone());
}
