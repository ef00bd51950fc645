//! pgbench on a test cluster: its tables, each with a primary key so that they can be
//! mirrored, and the command that runs its workload.

use std::process::Command;

use crate::{pg_bin, run_ok, Cluster};

/// pgbench's tables.
pub const TABLES: &[&str] = &["pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history"];

/// `pgbench` against database `postgres` of `cluster`; arguments follow.
pub fn pgbench(cluster: &Cluster) -> Command {
    let path = pg_bin().join("pgbench");
    assert!(path.is_file(), "{} is missing: the tests need pgbench (package postgresql-15)", path.display());
    let mut command = Command::new(path);
    command.env("PGHOST", cluster.socket_dir()).env("PGUSER", "postgres").env("PGDATABASE", "postgres");
    command
}

/// pgbench's tables with a primary key each: pgbench -i makes those of accounts, branches and
/// tellers; history gets an identity column for one.
pub fn pgbench_tables(cluster: &Cluster) {
    run_ok(pgbench(cluster).args(["-i", "-q", "-s", "1"]));
    cluster.execute("ALTER TABLE pgbench_history ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY");
    let keyless = cluster.query_value(
        "SELECT count(*)::text FROM unnest(ARRAY['pgbench_accounts', 'pgbench_branches', 'pgbench_tellers', 'pgbench_history']) t \
          WHERE NOT EXISTS (SELECT 1 FROM pg_index WHERE indrelid = t::regclass AND indisprimary)",
    );
    assert_eq!(keyless, "0", "pgbench -i made tables without primary keys: its init steps must include p");
}

/// pgbench's tables as [`pgbench_tables`] makes them, empty: a slave's schema.
pub fn pgbench_schema(cluster: &Cluster) {
    run_ok(pgbench(cluster).args(["-i", "-q", "-I", "dtp", "-s", "1"]));
    cluster.execute("ALTER TABLE pgbench_history ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY");
}
