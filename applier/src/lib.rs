//! The slave side of dbmirror, and what both tools share.
//!
//! [`replay`] runs one transaction file the way `psql -v ON_ERROR_STOP=1 -f` does; [`slave`]
//! knows the applied-state table that `sql/slave_setup.sql` creates. The exporter's direct mode
//! uses both, so a transaction means the same whether it reaches the slave as a file or
//! directly. [`error`], [`log`], [`configuration`] and [`signals`] are what both tools share.

pub mod configuration;
pub mod error;
pub mod grammar;
pub mod log;
pub mod replay;
pub mod signals;
pub mod slave;
