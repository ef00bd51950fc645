//! Injected faults, for the tests that prove crash safety and that a full disk loses nothing.
//!
//! They exist only in a binary built with the cargo feature `faults`
//! (`cargo build --features dbmirror-export/faults`), which `scripts/test` turns on for the
//! binaries the end-to-end tests run. Without it, [`point`] is an empty function and [`Budget`]
//! a plain pass-through, which the optimiser removes: a release binary reads no environment
//! variable here and cannot be made to abort.
//!
//! With the feature:
//!
//! * `DBMIRROR_EXPORT_CRASH_AT=POINT` aborts the process at that point, as abruptly as
//!   `kill -9`: no destructors, no flushing, no cleanup. Points are named after the step they
//!   follow or precede in [`crate::export`]: `after-assign`, `before-rename`, `after-rename`,
//!   `after-manifest`, `before-mark-written`; and in [`crate::snapshot`]:
//!   `snapshot-before-state`, `snapshot-before-publish`, `snapshot-before-commit`.
//!   `POINT#N` aborts the N-th time the point is reached (`after-assign#2`: in the second
//!   batch, while the first is still being made durable).
//! * `DBMIRROR_EXPORT_DISK_FULL_AFTER=BYTES` makes transaction-file writes fail as on a full
//!   disk ("No space left on device") once that many bytes have been written, for the disk-full
//!   test on machines where no small file system can be mounted.

/// Aborts the process if the crash point `name` was asked for (only with the feature `faults`).
#[cfg(feature = "faults")]
pub fn point(name: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    /// The environment variable naming the crash point.
    const CRASH_AT_VARIABLE: &str = "DBMIRROR_EXPORT_CRASH_AT";
    /// The point, and which time it is reached that crashes (the first unless `POINT#N`).
    static CRASH_AT: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static REACHED: AtomicU64 = AtomicU64::new(0);
    let crash_at = CRASH_AT.get_or_init(|| {
        let value = std::env::var(CRASH_AT_VARIABLE).ok()?;
        Some(match value.split_once('#') {
            Some((point, time)) => {
                (point.to_string(), time.parse().expect("DBMIRROR_EXPORT_CRASH_AT=POINT#N takes a number"))
            }
            None => (value, 1),
        })
    });
    if let Some((point, time)) = crash_at {
        if point == name && REACHED.fetch_add(1, Ordering::SeqCst) + 1 == *time {
            eprintln!("dbmirror-export: crashing at injected point {name}");
            std::process::abort();
        }
    }
}

/// Does nothing: this binary was built without the feature `faults`.
#[cfg(not(feature = "faults"))]
#[inline(always)]
pub fn point(_name: &str) {}

/// A writer that fails with "No space left on device" once the budget set by
/// `DBMIRROR_EXPORT_DISK_FULL_AFTER` is spent (only with the feature `faults`); otherwise a
/// plain pass-through.
pub struct Budget<W> {
    inner: W,
}

#[cfg(feature = "faults")]
static BUDGET: std::sync::OnceLock<Option<std::sync::atomic::AtomicU64>> = std::sync::OnceLock::new();

impl<W> Budget<W> {
    #[inline(always)]
    pub fn new(inner: W) -> Self {
        #[cfg(feature = "faults")]
        BUDGET.get_or_init(|| {
            /// The environment variable setting the bytes written before the disk is "full".
            const DISK_FULL_AFTER_VARIABLE: &str = "DBMIRROR_EXPORT_DISK_FULL_AFTER";
            std::env::var(DISK_FULL_AFTER_VARIABLE)
                .ok()
                .and_then(|v| v.parse().ok())
                .map(std::sync::atomic::AtomicU64::new)
        });
        Self { inner }
    }

    #[inline(always)]
    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: std::io::Write> std::io::Write for Budget<W> {
    #[inline(always)]
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        #[cfg(feature = "faults")]
        if let Some(Some(left)) = BUDGET.get() {
            use std::sync::atomic::Ordering::Relaxed;
            let spent = buf.len() as u64;
            if left.fetch_update(Relaxed, Relaxed, |l| l.checked_sub(spent)).is_err() {
                // ENOSPC, as the kernel reports it.
                return Err(std::io::Error::from_raw_os_error(28));
            }
        }
        self.inner.write(buf)
    }

    #[inline(always)]
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
