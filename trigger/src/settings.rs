//! The canonical settings under which values become text, on the master and on the slave.

use std::ffi::{CStr, CString};

use pgrx::pg_sys;

/// The settings under which values are rendered, as (name, required value): the list that the
/// exporter sets and the transaction files set on the slave.
pub use dbmirror_sql::CANONICAL_SETTINGS;

/// The first canonical setting the session does not have: (name, wanted, current value).
pub fn first_difference() -> Option<(&'static str, &'static str, String)> {
    CANONICAL_SETTINGS.iter().find_map(|&(name, wanted)| {
        let cname = CString::new(name).expect("setting names contain no NUL byte");
        // SAFETY: GetConfigOption returns a pointer to the setting's current value, or errors.
        let value = unsafe { CStr::from_ptr(pg_sys::GetConfigOption(cname.as_ptr(), false, false)) };
        let value = value.to_string_lossy();
        let ok = match name {
            // Any positive value gives the shortest exact output (PostgreSQL 12 and later).
            "extra_float_digits" => value.parse::<i32>().is_ok_and(|v| v > 0),
            _ => value.eq_ignore_ascii_case(wanted),
        };
        (!ok).then(|| (name, wanted, value.into_owned()))
    })
}

/// Whether the session has every canonical setting.
pub fn is_canonical() -> bool {
    first_difference().is_none()
}

/// Runs `f` under the canonical settings, and restores the session's own afterwards (as a
/// function's SET clause does; an error in `f` restores them with the (sub)transaction abort).
pub fn with_canonical<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: a GUC nest level opened and closed around f, as fmgr does for SET clauses; every
    // canonical setting is a user-settable one with a valid value.
    unsafe {
        let level = pg_sys::NewGUCNestLevel();
        for (name, value) in CANONICAL_SETTINGS {
            let name = CString::new(*name).expect("setting names contain no NUL byte");
            let value = CString::new(*value).expect("setting values contain no NUL byte");
            pg_sys::set_config_option(
                name.as_ptr(),
                value.as_ptr(),
                pg_sys::GucContext::PGC_USERSET,
                pg_sys::GucSource::PGC_S_SESSION,
                pg_sys::GucAction::GUC_ACTION_SAVE,
                true,
                0,
                false,
            );
        }
        let result = f();
        pg_sys::AtEOXact_GUC(true, level);
        result
    }
}
