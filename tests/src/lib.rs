//! The test harness of dbmirror: throwaway PostgreSQL clusters and the real binaries.
//!
//! Every test starts its own clusters with [`Cluster::start`]: `initdb` into a fresh
//! directory (as the `postgres` user through `runuser` when the tests run as root, since
//! `initdb` refuses root), listening on a Unix socket in that directory only. A cluster is
//! stopped and deleted when dropped, unless the test is failing: then it is kept, and how to
//! connect to it is printed.
//!
//! Nothing is mocked: the capture extension must be installed into the PostgreSQL found
//! through `PG_BIN` (default `/usr/lib/postgresql/15/bin`), and the binaries built in the same
//! target directory as the tests (`scripts/test` does both), the exporter with its fault points
//! (`--features dbmirror-export/faults`) for the tests that inject crashes and a full disk. A
//! missing prerequisite fails the test with a hint, never skips it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

mod cluster;
mod data;
pub mod mirror;
pub mod pgbench;
pub mod samples;
pub mod scenario;
pub mod shrink;
pub mod tools;
pub mod trial;

pub use cluster::{explain, Cluster, Snapshot};
pub use data::{assert_tables_equal, captured, own_rows, render_settings, table_rows, Captured};

/// Directory of the PostgreSQL server binaries.
pub fn pg_bin() -> PathBuf {
    let dir = std::env::var_os("PG_BIN").map_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"), PathBuf::from);
    assert!(
        dir.join("initdb").is_file(),
        "PostgreSQL server binaries not found in {} (set PG_BIN, or install postgresql-15)",
        dir.display()
    );
    dir
}

/// Path of one of the project's binaries, built next to the test binary.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    // target/<profile>/deps/e2e-<hash> -> target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("test binaries live in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build it first with `cargo build --workspace --bins --features dbmirror-export/faults` \
         (scripts/test does)",
        path.display()
    );
    path
}

/// Whether the tests run as root, in which case PostgreSQL runs as the `postgres` user.
pub fn running_as_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        let out = Command::new("id").arg("-u").output().expect("`id -u` runs");
        String::from_utf8_lossy(&out.stdout).trim() == "0"
    })
}

/// Runs a command and returns its output, failing with everything it printed when it fails.
pub fn run_ok(command: &mut Command) -> Output {
    let output = command.output().unwrap_or_else(|e| panic!("could not run {command:?}: {e}"));
    assert!(output.status.success(), "{command:?} failed with {}\n{}", output.status, describe(&output));
    output
}

/// What a command printed, for failure messages.
pub fn describe(output: &Output) -> String {
    format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The repository's root directory (for sql/ and spool-example/).
pub fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the repository").to_owned()
}
