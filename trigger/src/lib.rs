//! The `dbmirror` capture extension.
//!
//! `recordchange()` is an AFTER trigger that logs every change of a mirrored table into the
//! pending tables of the master (see `sql/master_setup.sql`): one row per change in
//! `dbmirror_PendingData`, and just before commit one row per transaction in `dbmirror_Pending`.
//! Rows are kept as binary images (flattened, without TOAST pointers) so capture does no text
//! conversion at all; `dbmirror_values()` renders them as text at export time, in a session the
//! exporter puts in canonical settings, which also makes the values independent of the
//! settings of the session that made the change.
//!
//! This crate does capture and decoding only. Choosing what to export, file formats and
//! applying changes belong to the exporter and applier.

use pgrx::prelude::*;

pgrx::pg_module_magic!(name, version);

/// Declares that the C function PostgreSQL finds by the name after `pg_finfo_` uses the
/// version-1 calling convention (the functions declared `LANGUAGE c` by hand in the SQL).
macro_rules! pg_finfo_v1 {
    ($finfo:ident) => {
        #[unsafe(no_mangle)]
        pub extern "C" fn $finfo() -> &'static pgrx::pg_sys::Pg_finfo_record {
            static V1: pgrx::pg_sys::Pg_finfo_record = pgrx::pg_sys::Pg_finfo_record { api_version: 1 };
            &V1
        }
    };
}
pub(crate) use pg_finfo_v1;

mod capture;
mod check;
mod companions;
mod ddl;
mod image;
mod local;
mod objects;
mod order;
mod pending;
mod relation;
mod render;
mod settings;
mod shape;

pgrx::extension_sql_file!("../../sql/master_setup.sql", name = "master_setup", bootstrap);
pgrx::extension_sql_file!("../../sql/master_events.sql", name = "master_events", finalize);

/// Names of the extension's objects, as created by `sql/master_setup.sql` (folded to lower case).
pub(crate) mod names {
    pub const RECORDCHANGE: &std::ffi::CStr = c"recordchange";
    pub const BEFORE: &std::ffi::CStr = c"dbmirror_before";
    pub const PENDING: &std::ffi::CStr = c"dbmirror_pending";
    pub const PENDING_KEY: &std::ffi::CStr = c"dbmirror_pending_pkey";
    /// The two partitions of dbmirror_PendingData, and their indexes.
    pub const PENDING_DATA: [&std::ffi::CStr; 2] = [c"dbmirror_pendingdata_0", c"dbmirror_pendingdata_1"];
    pub const PENDING_DATA_INDEX: [&std::ffi::CStr; 2] = [c"dbmirror_pendingdata_0_xid", c"dbmirror_pendingdata_1_xid"];
    pub const COMMIT_SEQ: &std::ffi::CStr = c"dbmirror_commit_seq";
    pub const SHAPE: &str = "dbmirror_shape";
}

/// Registers the transaction and cache callbacks once per backend, when the library is loaded
/// (the first call of any of its functions loads it).
#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // An error raised inside the library must read as PostgreSQL's own: no Rust backtrace in
    // its DETAIL, whatever RUST_BACKTRACE the server was started with. (pgrx captures one when
    // the standard library's backtrace capture is enabled; this variable disables it.)
    // SAFETY: _PG_init runs once, in the backend's only thread, before anything reads it.
    unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    ddl::define_settings();
    pending::register_callbacks();
    relation::register_callbacks();
    order::register_hooks();
}
