//! The exporter's exit codes; the error type is shared with the applier.

pub use dbmirror_apply::error::{Error, Kind};

/// The exit codes of `dbmirror-export`, as documented in `--help` and the README.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  failure that retrying may cure: connection lost, database or I/O error
  2  bad command line or configuration
  3  the master is not prepared: extension missing, or slave not in dbmirror_MirrorHost
  4  another exporter is running for this slave
  5  the outbox (or, in direct mode, the slave) holds a file that differs from what its number must contain,
     or in direct mode the slave refused a transaction
  6  verify: a mirrored table differs between master and slave, or capture is incomplete
  7  the master's state does not continue this stream: restored from a dump or an older copy";
