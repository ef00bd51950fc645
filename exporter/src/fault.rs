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

/// The environment variable that makes transaction-file writes fail as on a full disk once
/// this many bytes have been written, for the disk-full test on machines where no small file
/// system can be mounted.
pub const DISK_FULL_AFTER_VARIABLE: &str = "DBMIRROR_EXPORT_DISK_FULL_AFTER";

/// A writer that fails with "No space left on device" once the budget set by
/// `DBMIRROR_EXPORT_DISK_FULL_AFTER` is spent; without it, a plain pass-through.
pub struct Budget<W> {
    inner: W,
}

static BUDGET: OnceLock<Option<std::sync::atomic::AtomicU64>> = OnceLock::new();

impl<W> Budget<W> {
    pub fn new(inner: W) -> Self {
        BUDGET.get_or_init(|| {
            std::env::var(DISK_FULL_AFTER_VARIABLE)
                .ok()
                .and_then(|v| v.parse().ok())
                .map(std::sync::atomic::AtomicU64::new)
        });
        Self { inner }
    }

    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: std::io::Write> std::io::Write for Budget<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(Some(left)) = BUDGET.get() {
            let spent = buf.len() as u64;
            if left
                .fetch_update(std::sync::atomic::Ordering::Relaxed, std::sync::atomic::Ordering::Relaxed, |l| {
                    l.checked_sub(spent)
                })
                .is_err()
            {
                // ENOSPC, as the kernel reports it.
                return Err(std::io::Error::from_raw_os_error(28));
            }
        }
        self.inner.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
