//! `dbmirror_values(shape, image, key)`: the values of a row image, as one row of `COPY` text.
//! (For a DDL change, shape 0, the text it holds: see [`crate::ddl`].)
//!
//! The exporter calls this for every captured change. Values are rendered by each type's
//! output function, in a session whose settings the function checks first, so the text is the
//! same whatever the settings of the session that made the change, and the slave's input
//! functions, run under the same settings (the file sets them), read back exactly the values
//! the master had. The row comes in `COPY`'s text format (tab-separated, `\N` for NULL,
//! backslash escapes), which a file's `COPY` block takes as it is; it is also one value to
//! send, where an array cost a send call per element (half the time of rendering).

use std::cell::{RefCell, UnsafeCell};
use std::collections::BTreeMap;
use std::ffi::CStr;
use std::rc::Rc;

use dbmirror_sql::{copy_text, quote_identifier};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::prelude::*;
use pgrx::spi::Spi;

use crate::image::{self, Desc};
use crate::local::BackendLocal;
use crate::settings::{self, CANONICAL_SETTINGS};
use crate::shape::DDL_SHAPE;

/// A shape as decoding needs it: descriptors and output functions.
struct Decoder {
    row: Desc,
    row_out: Vec<UnsafeCell<pg_sys::FmgrInfo>>,
    key: Desc,
    key_out: Vec<UnsafeCell<pg_sys::FmgrInfo>>,
}

static DECODERS: BackendLocal<RefCell<BTreeMap<i64, Rc<Decoder>>>> = BackendLocal::new(RefCell::new(BTreeMap::new()));

/// The row being rendered, reused from call to call.
static LINE: BackendLocal<RefCell<Vec<u8>>> = BackendLocal::new(RefCell::new(Vec::new()));

pgrx::extension_sql!(
    r#"
CREATE FUNCTION dbmirror_values(shape bigint, image bytea, key boolean) RETURNS text
    LANGUAGE c STRICT STABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'dbmirror_values';
COMMENT ON FUNCTION dbmirror_values(bigint, bytea, boolean) IS
    'the values of a captured row image (key image if key is true) as a row of COPY text, under canonical settings';
"#,
    name = "dbmirror_values",
    requires = ["master_setup"],
);

crate::pg_finfo_v1!(pg_finfo_dbmirror_values);

/// # Safety
/// Called by PostgreSQL's function manager with a valid fcinfo for the SQL signature above.
#[unsafe(no_mangle)]
#[pg_guard]
pub unsafe extern "C-unwind" fn dbmirror_values(fcinfo: pg_sys::FunctionCallInfo) -> Datum {
    // SAFETY: STRICT, so the three arguments are present and not null.
    unsafe {
        let flinfo = (*fcinfo).flinfo;
        // Settings cannot change during one call of a query, so checking them once per query
        // (per FmgrInfo) is enough.
        if (*flinfo).fn_extra.is_null() {
            check_settings();
            (*flinfo).fn_extra = pg_sys::MemoryContextAlloc((*flinfo).fn_mcxt, 1);
        }
        let args = (*fcinfo).args.as_slice(3);
        let shape = args[0].value.value() as i64;
        let raw = pg_sys::pg_detoast_datum_packed(args[1].value.cast_mut_ptr());
        let content = pgrx::varlena::varlena_to_byte_slice(raw);
        let key = args[2].value.value() != 0;
        if shape == DDL_SHAPE {
            // The parts of a DDL change are text already (see crate::ddl).
            return Datum::from(pg_sys::cstring_to_text_with_len(content.as_ptr().cast(), content.len() as i32));
        }
        let decoder = decoder(shape, pg_sys::get_func_namespace((*flinfo).fn_oid));
        let (desc, out) = if key { (&decoder.key, &decoder.key_out) } else { (&decoder.row, &decoder.row_out) };
        let what = if key { "key image" } else { "row image" };
        let (values, nulls) = image::deform(desc, content, what);
        let mut line = LINE.get().borrow_mut();
        line.clear();
        for (i, ((value, null), out)) in values.iter().zip(&nulls).zip(out).enumerate() {
            if i > 0 {
                line.push(b'\t');
            }
            if *null {
                line.extend_from_slice(b"\\N");
            } else {
                // Output functions return text in the server encoding, which is ASCII-safe:
                // escaping byte by byte cannot split a character.
                let text = CStr::from_ptr(pg_sys::OutputFunctionCall(out.get(), *value));
                copy_text::escape_into(&mut line, text.to_bytes());
            }
        }
        Datum::from(pg_sys::cstring_to_text_with_len(line.as_ptr().cast(), line.len() as i32))
    }
}

fn check_settings() {
    if let Some((name, wanted, value)) = settings::first_difference() {
        let all = CANONICAL_SETTINGS.iter().map(|(n, v)| format!("SET {n} = '{v}';")).collect::<Vec<_>>();
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("dbmirror_values() needs {name} = '{wanted}', not '{value}'"),
            "dbmirror_values",
        )
        .set_hint(format!("Rendered values must not depend on session settings: {}", all.join(" ")))
        .report(PgLogLevel::ERROR);
    }
}

fn decoder(shape: i64, schema: Oid) -> Rc<Decoder> {
    if let Some(decoder) = DECODERS.get().borrow().get(&shape) {
        return decoder.clone();
    }
    // SAFETY: inside a transaction; schema is the function's own namespace.
    let schema_name = unsafe { CStr::from_ptr(pg_sys::get_namespace_name(schema)) }.to_string_lossy().into_owned();
    let query = format!(
        "SELECT columns, types, typmods, key FROM {}.{} WHERE shape = $1 LIMIT 1",
        quote_identifier(&schema_name),
        crate::names::SHAPE
    );
    type Row = (Option<Vec<String>>, Option<Vec<Oid>>, Option<Vec<i32>>, Option<Vec<i16>>);
    let row: Option<Row> = Spi::connect(|client| {
        let table = client.select(&query, Some(1), &[shape.into()])?;
        if table.is_empty() {
            return Ok::<_, pgrx::spi::Error>(None);
        }
        let row = table.first();
        Ok(Some((row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?)))
    })
    .unwrap_or_else(|e| {
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("could not read shape {shape}: {e}"),
            "dbmirror_values",
        )
        .report(PgLogLevel::ERROR);
        unreachable!("ERROR does not return")
    });
    let Some((Some(columns), Some(types), Some(typmods), Some(key))) = row else {
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
            format!("shape {shape} of a captured change is missing from dbmirror_Shape"),
            "dbmirror_values",
        )
        .report(PgLogLevel::ERROR);
        unreachable!("ERROR does not return")
    };
    let spec: Vec<(&str, Oid, i32)> =
        columns.iter().zip(&types).zip(&typmods).map(|((n, t), m)| (n.as_str(), *t, *m)).collect();
    let key_spec: Vec<(&str, Oid, i32)> = key.iter().map(|&k| spec[k as usize]).collect();
    // SAFETY: inside a transaction; the types come from the catalog via dbmirror_Shape.
    let decoder = unsafe {
        Rc::new(Decoder {
            row: Desc::new(&spec),
            row_out: output_functions(&spec),
            key: Desc::new(&key_spec),
            key_out: output_functions(&key_spec),
        })
    };
    DECODERS.get().borrow_mut().insert(shape, decoder.clone());
    decoder
}

unsafe fn output_functions(spec: &[(&str, Oid, i32)]) -> Vec<UnsafeCell<pg_sys::FmgrInfo>> {
    spec.iter()
        .map(|(_, typid, _)| {
            // SAFETY: looks up the type's output function and fills a zeroed FmgrInfo, kept in
            // the cache memory context for the life of the backend.
            unsafe {
                let mut func = pg_sys::InvalidOid;
                let mut varlena = false;
                pg_sys::getTypeOutputInfo(*typid, &mut func, &mut varlena);
                let mut info: pg_sys::FmgrInfo = std::mem::zeroed();
                pg_sys::fmgr_info_cxt(func, &mut info, pg_sys::CacheMemoryContext);
                UnsafeCell::new(info)
            }
        })
        .collect()
}
