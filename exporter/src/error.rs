//! The exporter's errors: the error type is shared with the applier (`dbmirror-cli`); the
//! exporter's exit-code table is part of its command line (`cli.rs`).

pub use dbmirror_cli::error::{Error, Kind};
