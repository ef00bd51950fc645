//! Injected crashes, for the tests that prove crash safety.
//!
//! When the environment variable `DBMIRROR_EXPORT_CRASH_AT` names a point, the process aborts
//! there, as abruptly as `kill -9`: no destructors, no flushing, no cleanup. Points are named
//! after the step they follow or precede in [`crate::export`].

use std::sync::OnceLock;

/// The environment variable naming the crash point.
pub const CRASH_AT_VARIABLE: &str = "DBMIRROR_EXPORT_CRASH_AT";

pub fn point(name: &str) {
    static CRASH_AT: OnceLock<Option<String>> = OnceLock::new();
    if CRASH_AT.get_or_init(|| std::env::var(CRASH_AT_VARIABLE).ok()).as_deref() == Some(name) {
        eprintln!("dbmirror-export: crashing at injected point {name}");
        std::process::abort();
    }
}
