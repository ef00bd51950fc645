//! Stopping on SIGTERM and SIGINT between units of work, reloading the configuration on SIGHUP
//! between them, and sleeping so that a signal ends the sleep at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Kind};

/// A flag that SIGTERM and SIGINT set.
pub fn stop_flag() -> Result<Arc<AtomicBool>, Error> {
    flag(&[signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])
}

/// A flag that SIGHUP sets. Installing it also keeps SIGHUP from ending the process, as it
/// did by default: `run` and `watch` read their configuration file again when it is set (see
/// [`crate::configuration::Reload`]), and every other command finishes its work unchanged.
pub fn reload_flag() -> Result<Arc<AtomicBool>, Error> {
    flag(&[signal_hook::consts::SIGHUP])
}

fn flag(signals: &[std::ffi::c_int]) -> Result<Arc<AtomicBool>, Error> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in signals {
        signal_hook::flag::register(*signal, Arc::clone(&flag))
            .map_err(|e| Error::caused_by(Kind::Runtime, "could not install a signal handler", e))?;
    }
    Ok(flag)
}

/// Sleeps for `duration`, or less if `stop` is set meanwhile.
pub fn sleep(duration: Duration, stop: &AtomicBool) {
    sleep_unless(duration, &[stop]);
}

/// Sleeps for `duration`, or less if any of `flags` is set meanwhile (a stop, or a reload that
/// should not wait for the end of a pause).
pub fn sleep_unless(duration: Duration, flags: &[&AtomicBool]) {
    let until = Instant::now() + duration;
    while !flags.iter().any(|flag| flag.load(Ordering::Relaxed)) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}
