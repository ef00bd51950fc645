//! The end-to-end tests: one binary, real clusters, real binaries.

mod apply;
mod capture;
mod export;
mod fidelity;
mod golden;
