//! A throwaway PostgreSQL cluster.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use postgres::{Client, NoTls};

use crate::{describe, pg_bin, run_ok, running_as_root};

/// The cluster user, also used to run the servers when the tests run as root.
const SUPERUSER: &str = "postgres";

/// A running cluster in a temporary directory, reachable through its Unix socket (and on
/// 127.0.0.1 when started with [`start_tcp`](Cluster::start_tcp)).
pub struct Cluster {
    name: String,
    /// Holds the data directory and the socket.
    dir: PathBuf,
    /// The port of the socket, and of 127.0.0.1 when TCP is on.
    port: u16,
    keep: bool,
}

impl Cluster {
    /// initdb's and starts a new cluster, with the `dbmirror` extension available.
    pub fn start(name: &str) -> Cluster {
        Self::start_with(name, &[])
    }

    /// Like [`start`](Self::start), with extra lines for postgresql.conf (`name = value`).
    pub fn start_with(name: &str, settings: &[&str]) -> Cluster {
        Self::start_with_env(name, settings, &[])
    }

    /// Like [`start_with`](Self::start_with), with the server started with environment
    /// variables `env` set.
    pub fn start_with_env(name: &str, settings: &[&str], env: &[(&str, &str)]) -> Cluster {
        Self::start_on(name, settings, env, None)
    }

    /// Like [`start_with`](Self::start_with), listening on 127.0.0.1 too, on a free port: for
    /// what needs TCP (TLS, password authentication over the network).
    pub fn start_tcp(name: &str, settings: &[&str]) -> Cluster {
        // A port the kernel just handed out and took back is free unless another process
        // grabs it in between, which a failed start would then show.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port on 127.0.0.1")
            .port();
        Self::start_on(name, settings, &[], Some(port))
    }

    fn start_on(name: &str, settings: &[&str], env: &[(&str, &str)], tcp_port: Option<u16>) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix(&format!("dbmirror-test-{name}-"))
            .tempdir()
            .expect("a temporary directory can be created")
            .keep();
        if running_as_root() {
            run_ok(Command::new("chown").arg(format!("{SUPERUSER}:")).arg(&dir));
        }
        let port = tcp_port.unwrap_or(5432);
        let cluster = Cluster { name: name.to_string(), dir, port, keep: false };
        let mut initdb = cluster.as_server_user(&pg_bin().join("initdb"));
        initdb.args([
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--username",
            SUPERUSER,
            "--no-sync",
            "-D",
        ]);
        initdb.arg(cluster.data_dir());
        run_ok(&mut initdb);
        // Settings go into postgresql.conf, so that a restart after a crash keeps them. fsync is
        // off: tests crash servers, never the machine, and PostgreSQL survives that without it.
        // lock_timeout turns a lock wait that should not happen into a failure, not a hang.
        let listen = if tcp_port.is_some() { "127.0.0.1" } else { "" };
        let mut conf = format!(
            "\nlisten_addresses = '{listen}'\nport = {port}\nunix_socket_directories = '{}'\nfsync = off\n\
             full_page_writes = off\nmax_connections = 40\nlc_messages = 'C'\nlock_timeout = '60s'\n",
            cluster.dir.display()
        );
        for setting in settings {
            conf.push_str(setting);
            conf.push('\n');
        }
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(cluster.data_dir().join("postgresql.conf"))
            .expect("initdb wrote postgresql.conf");
        std::io::Write::write_all(&mut file, conf.as_bytes()).expect("postgresql.conf is writable");
        let mut start = cluster.as_server_user(&pg_bin().join("pg_ctl"));
        start.arg("start").arg("-w").arg("-D").arg(cluster.data_dir()).arg("-l").arg(cluster.log_file());
        start.envs(env.iter().copied());
        let output = start.output().expect("pg_ctl runs");
        assert!(
            output.status.success(),
            "could not start cluster {name}:\n{}\n--- server log ---\n{}",
            describe(&output),
            std::fs::read_to_string(cluster.log_file()).unwrap_or_default()
        );
        cluster
    }

    fn as_server_user(&self, program: &Path) -> Command {
        if running_as_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", SUPERUSER, "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// The directory holding the server's socket.
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// A libpq connection string for database `postgres`.
    pub fn conninfo(&self) -> String {
        self.conninfo_for("postgres")
    }

    /// A libpq connection string for database `dbname` (a plain name, not quoted).
    pub fn conninfo_for(&self, dbname: &str) -> String {
        format!("host={} port={} user={SUPERUSER} dbname={dbname}", self.dir.display(), self.port)
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.conninfo(), NoTls)
            .unwrap_or_else(|e| panic!("could not connect to cluster {}: {e}", self.name))
    }

    /// Runs SQL (any number of statements) and fails the test if it fails.
    pub fn execute(&self, sql: &str) {
        self.client()
            .batch_execute(sql)
            .unwrap_or_else(|e| panic!("on cluster {}: {}\nSQL: {sql}", self.name, explain(&e)));
    }

    /// One value of a query that returns one row and one text-compatible column.
    pub fn query_value(&self, sql: &str) -> String {
        let row = self
            .client()
            .query_one(sql, &[])
            .unwrap_or_else(|e| panic!("on cluster {}: {}\nSQL: {sql}", self.name, explain(&e)));
        row.get(0)
    }

    /// Runs psql against the cluster with `args`; returns its output whether it failed or not.
    pub fn psql(&self, args: &[&str]) -> Output {
        self.psql_in("postgres", args)
    }

    /// Runs psql against database `dbname` of the cluster with `args`; returns its output
    /// whether it failed or not.
    pub fn psql_in(&self, dbname: &str, args: &[&str]) -> Output {
        self.psql_command(dbname, args).output().expect("psql runs")
    }

    /// psql against database `dbname` of the cluster with `args`, to run as the caller likes
    /// (with an environment of its own, say).
    pub fn psql_command(&self, dbname: &str, args: &[&str]) -> Command {
        let mut command = Command::new(pg_bin().join("psql"));
        command.args(["-X", "-q", "-h"]).arg(&self.dir).arg("-p").arg(self.port.to_string());
        command.args(["-U", SUPERUSER, "-d", dbname]).args(args);
        command
    }

    /// Creates the capture extension, failing with a hint if it is not installed.
    pub fn create_extension(&self) {
        if let Err(e) = self.client().batch_execute("CREATE EXTENSION dbmirror") {
            panic!(
                "CREATE EXTENSION dbmirror failed on cluster {}: {e}\n\
                 HINT: install the extension into this PostgreSQL with scripts/install (cargo pgrx install)",
                self.name
            );
        }
    }

    /// Prepares the cluster as a slave by hand, as the README says: psql -f sql/slave_setup.sql.
    pub fn slave_setup(&self) {
        let file = crate::repository().join("sql/slave_setup.sql");
        let output = self.psql(&["-v", "ON_ERROR_STOP=1", "-f", &file.display().to_string()]);
        assert!(output.status.success(), "slave setup failed on cluster {}:\n{}", self.name, describe(&output));
    }

    /// Stops the server at once, as a crash would.
    pub fn crash(&self) {
        run_ok(
            self.as_server_user(&pg_bin().join("pg_ctl")).args(["stop", "-m", "immediate", "-D"]).arg(self.data_dir()),
        );
    }

    /// Starts the server again after [`crash`](Self::crash).
    pub fn restart(&self) {
        let mut start = self.as_server_user(&pg_bin().join("pg_ctl"));
        start.args(["start", "-w", "-D"]).arg(self.data_dir()).arg("-l").arg(self.log_file());
        run_ok(&mut start);
    }

    /// Stops the server cleanly, copies its data directory (a physical copy, as a file-level
    /// backup would be), and starts it again. [`restore`](Self::restore) brings the copy back.
    pub fn snapshot(&self) -> Snapshot {
        let path = self.dir.join(format!("snapshot-{}", std::process::id()));
        self.stop();
        run_ok(self.as_server_user(Path::new("cp")).arg("-a").arg(self.data_dir()).arg(&path));
        self.restart();
        Snapshot { path }
    }

    /// Replaces the data directory with `snapshot`, as restoring an older physical copy does,
    /// and starts the server on it.
    pub fn restore(&self, snapshot: &Snapshot) {
        self.stop();
        run_ok(self.as_server_user(Path::new("rm")).arg("-rf").arg(self.data_dir()));
        run_ok(self.as_server_user(Path::new("cp")).arg("-a").arg(&snapshot.path).arg(self.data_dir()));
        self.restart();
    }

    fn stop(&self) {
        run_ok(
            self.as_server_user(&pg_bin().join("pg_ctl")).args(["stop", "-m", "fast", "-w", "-D"]).arg(self.data_dir()),
        );
    }

    /// What the server wrote to its log so far.
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    /// Runs one of PostgreSQL's client programs (pg_dump, pg_restore...) against database
    /// `postgres` of this cluster, with `args`; fails the test if it fails.
    pub fn client_program(&self, program: &str, args: &[&str]) -> Output {
        let mut command = Command::new(pg_bin().join(program));
        command.arg("-h").arg(&self.dir).arg("-p").arg(self.port.to_string());
        command.args(["-U", SUPERUSER, "-d", "postgres"]).args(args);
        run_ok(&mut command)
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Replaces pg_hba.conf with `lines` after one that lets the superuser in through the
    /// socket (which the tests' own sessions use), and reloads the server.
    pub fn set_hba(&self, lines: &[&str]) {
        let text = format!("local all {SUPERUSER} trust\n{}\n", lines.join("\n"));
        std::fs::write(self.data_dir().join("pg_hba.conf"), text).expect("pg_hba.conf is writable");
        self.execute("SELECT pg_reload_conf()");
    }

    /// Writes `content` into a file of the cluster's directory that only the server's user
    /// can read (a server key must be so), and returns its path.
    pub fn private_file(&self, name: &str, content: &[u8]) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, content).expect("a file can be written in the cluster's directory");
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("permissions can be set");
        if running_as_root() {
            run_ok(Command::new("chown").arg(format!("{SUPERUSER}:")).arg(&path));
        }
        path
    }

    /// Keeps the cluster after the test, for inspection.
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

/// A copy of a cluster's data directory, taken by [`Cluster::snapshot`].
pub struct Snapshot {
    path: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.keep || std::thread::panicking() {
            eprintln!(
                "cluster {} kept for inspection: psql -h {} -U {SUPERUSER} postgres (log: {})",
                self.name,
                self.dir.display(),
                self.log_file().display()
            );
            return;
        }
        let _ = self
            .as_server_user(&pg_bin().join("pg_ctl"))
            .args(["stop", "-m", "immediate", "-D"])
            .arg(self.data_dir())
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A database error with its message, detail and hint (`Display` of postgres::Error only says
/// "db error").
pub fn explain(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "{}: {}{}{}",
            db.code().code(),
            db.message(),
            db.detail().map(|d| format!("\nDETAIL: {d}")).unwrap_or_default(),
            db.hint().map(|h| format!("\nHINT: {h}")).unwrap_or_default()
        ),
        None => e.to_string(),
    }
}
