//! The end-to-end tests: one binary, real clusters, real binaries.

mod apply;
mod capture;
mod completeness;
mod connections;
mod ddl;
mod ddl_slave;
mod differential;
mod docs;
mod export;
mod faults;
mod fidelity;
mod golden;
mod history;
mod hygiene;
mod monitoring;
mod order;
mod package;
mod slaves;
mod snapshot;
mod soak;
mod statements;
