//! Running transaction files on a slave, as both tools do: the applier with the files of its
//! spool, the exporter in direct mode with the files it has just rendered, so that a
//! transaction means the same whether it reaches the slave as a file or directly.
//!
//! [`grammar`] checks that every statement of a file is one the exporter writes; [`replay`]
//! runs a file the way `psql -v ON_ERROR_STOP=1 -f` does; [`slave`] knows the applied-state
//! tables that `sql/slave_setup.sql` creates. What is not here: the spool (which files to
//! apply, quarantine, archive) is the applier's own.

pub mod grammar;
pub mod replay;
pub mod slave;
