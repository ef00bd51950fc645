//! The slave side of dbmirror: replaying transaction files on a slave database.
//!
//! [`replay`] runs one file the way `psql -v ON_ERROR_STOP=1 -f` does; [`slave`] knows the
//! applied-state table that `sql/slave_setup.sql` creates. The exporter's direct mode uses both,
//! so a transaction means the same whether it reaches the slave as a file or directly.

pub mod replay;
pub mod slave;
