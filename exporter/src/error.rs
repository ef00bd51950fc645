//! The exporter's exit codes; the error type is shared with the applier (`dbmirror-cli`).

pub use dbmirror_cli::error::{Error, Exit, Kind};

/// The exit codes of `dbmirror-export`: `--help` shows them, and a test holds the README's
/// table to them.
pub const EXIT_CODES: &[Exit] = &[
    Exit::success("success"),
    Exit::failure(
        Kind::Runtime,
        "failure that retrying may cure: connection lost, database or I/O error (`run` retries these itself)",
    ),
    Exit::failure(Kind::Config, "bad command line or configuration"),
    Exit::failure(
        Kind::NotPrepared,
        "the master is not prepared: extension missing, slave not in dbmirror_MirrorHost, or its snapshot unfinished",
    ),
    Exit::failure(Kind::Busy, "another exporter is running for this slave"),
    Exit::failure(
        Kind::BadFile,
        "the outbox (or, in direct mode, the slave) holds a file that differs from what its number must contain, \
         or in direct mode the slave refused a transaction (its SQL failed: repair the slave)",
    ),
    Exit::failure(
        Kind::Differs,
        "`verify`: a mirrored table differs between master and slave, or capture is incomplete",
    ),
    Exit::failure(
        Kind::Diverged,
        "the master's state does not continue this stream: restored from a dump or an older copy",
    ),
];
