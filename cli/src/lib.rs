//! What `dbmirror-export` and `dbmirror-apply` share as command-line tools: one error type whose
//! kind decides the exit code, and the exit-code tables their `--help` and the README show
//! ([`error`]); timestamped log lines ([`log`]); stopping on SIGTERM and SIGINT ([`signals`]);
//! reading and checking TOML configuration files ([`configuration`]); connecting to databases as
//! libpq does ([`conninfo`]); `status` as a monitoring check ([`health`]); and metrics for
//! node_exporter's textfile collector ([`metrics`]).
//!
//! What the tools share about the database is elsewhere: the SQL contract in `dbmirror-sql`,
//! replaying files on a slave in `dbmirror-replay`, the spool's files in `dbmirror-spool`.

pub mod configuration;
pub mod conninfo;
pub mod error;
pub mod health;
pub mod log;
pub mod metrics;
pub mod progress;
pub mod signals;

pub use error::{Error, Exit, Kind};
